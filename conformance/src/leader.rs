//! [`resq_core::LeaderLock`]: one scheduler leader at a time, with a TTL,
//! renewed and released only by its holder (spec §8.9).

use crate::fixtures::*;

const LONG: Duration = Duration::from_secs(3600);

/// Of two candidates the first to ask becomes leader; the second is refused
/// and the leader stays the first.
pub async fn one_of_two_becomes_leader(backend: Arc<dyn Backend>) {
    assert_eq!(backend.leader().await.unwrap(), None);
    assert!(backend.acquire_leader("sched-a", LONG).await.unwrap());
    assert!(!backend.acquire_leader("sched-b", LONG).await.unwrap());
    assert_eq!(backend.leader().await.unwrap().as_deref(), Some("sched-a"));
    assert!(
        backend.acquire_leader("sched-a", LONG).await.unwrap(),
        "the holder must keep winning"
    );
    assert_eq!(backend.leader().await.unwrap().as_deref(), Some("sched-a"));
    assert!(
        backend.locks().await.unwrap().is_empty(),
        "the leader lock is listed as a plugin lock"
    );
}

/// `acquire_leader` by the holder renews the TTL: a lock taken for 600 ms
/// and renewed for 2 s at ~150 ms is still held at ~900 ms.
pub async fn renew_by_holder_keeps_it(backend: Arc<dyn Backend>) {
    assert!(backend
        .acquire_leader("sched-a", Duration::from_millis(600))
        .await
        .unwrap());
    sleep_ms(150).await;
    assert!(backend.acquire_leader("sched-a", Duration::from_secs(2)).await.unwrap());
    sleep_ms(750).await;
    assert_eq!(backend.leader().await.unwrap().as_deref(), Some("sched-a"));
    assert!(!backend.acquire_leader("sched-b", LONG).await.unwrap());
}

/// A non-holder can neither renew (its `acquire_leader` fails and does not
/// extend the holder's TTL) nor release (returns false, lock stays).
pub async fn other_cannot_renew_or_release(backend: Arc<dyn Backend>) {
    assert!(backend
        .acquire_leader("sched-a", Duration::from_millis(600))
        .await
        .unwrap());
    for _ in 0..2 {
        assert!(!backend.acquire_leader("sched-b", LONG).await.unwrap());
        assert!(!backend.release_leader("sched-b").await.unwrap());
        assert_eq!(backend.leader().await.unwrap().as_deref(), Some("sched-a"));
        sleep_ms(75).await;
    }
    // ~900 ms in: the holder's 600 ms must not have been extended by b.
    sleep_ms(750).await;
    assert_eq!(
        backend.leader().await.unwrap(),
        None,
        "a foreign acquire extended the leader's TTL"
    );
    assert!(backend.acquire_leader("sched-b", LONG).await.unwrap());
    assert_eq!(backend.leader().await.unwrap().as_deref(), Some("sched-b"));
}

/// Once the holder's TTL runs out there is no leader and another candidate
/// takes over; the old holder is then refused.
pub async fn expiry_allows_takeover(backend: Arc<dyn Backend>) {
    assert!(backend
        .acquire_leader("sched-a", Duration::from_millis(200))
        .await
        .unwrap());
    sleep_ms(450).await;
    assert_eq!(backend.leader().await.unwrap(), None);
    assert!(backend.acquire_leader("sched-b", LONG).await.unwrap());
    assert!(!backend.acquire_leader("sched-a", LONG).await.unwrap());
    assert!(!backend.release_leader("sched-a").await.unwrap());
    assert_eq!(backend.leader().await.unwrap().as_deref(), Some("sched-b"));
}

/// `release_leader` by the holder frees the lock at once (true); a second
/// release returns false; another candidate can then take it.
pub async fn release_frees_it(backend: Arc<dyn Backend>) {
    assert!(!backend.release_leader("sched-a").await.unwrap());
    assert!(backend.acquire_leader("sched-a", LONG).await.unwrap());
    assert!(backend.release_leader("sched-a").await.unwrap());
    assert_eq!(backend.leader().await.unwrap(), None);
    assert!(!backend.release_leader("sched-a").await.unwrap());
    assert!(backend.acquire_leader("sched-b", LONG).await.unwrap());
    assert_eq!(backend.leader().await.unwrap().as_deref(), Some("sched-b"));
}

/// Eight candidates racing for a free leader lock elect exactly one, and
/// `leader()` names it.
pub async fn concurrent_candidates_elect_one(backend: Arc<dyn Backend>) {
    const TASKS: usize = 8;
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for n in 0..TASKS {
        let (backend, barrier) = (Arc::clone(&backend), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            let name = format!("sched-{n}");
            barrier.wait().await;
            let won = backend.acquire_leader(&name, LONG).await.unwrap();
            (won, name)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (won, name) = t.await.unwrap();
        if won {
            winners.push(name);
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    assert_eq!(backend.leader().await.unwrap(), Some(winners[0].clone()));
}
