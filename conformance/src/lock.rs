//! [`resq_core::LockStore`]: plugin locks owned by a value, with TTLs.
//! Keys used here look like the plugins' (`lock:…`, `workerslock:…`).

use crate::fixtures::*;

const LONG: Duration = Duration::from_secs(3600);

/// `acquire_lock` is `SET NX`: it succeeds only while the key is free, even
/// for the holder's own value, and does not change the holder.
pub async fn acquire_is_exclusive(backend: Arc<dyn Backend>) {
    let key = "lock:job:q:[1]";
    assert!(backend.acquire_lock(key, "v1", LONG).await.unwrap());
    assert!(!backend.acquire_lock(key, "v2", LONG).await.unwrap());
    assert!(!backend.acquire_lock(key, "v1", LONG).await.unwrap());
    assert_eq!(backend.locks().await.unwrap(), vec![(key.to_owned(), "v1".to_owned())]);
    assert!(backend.acquire_lock("lock:job:q:[2]", "v2", LONG).await.unwrap());
    assert_eq!(backend.locks().await.unwrap().len(), 2);
}

/// A lock disappears once its TTL has passed: it is no longer listed and
/// anyone can take it.
pub async fn ttl_expiry_frees_lock(backend: Arc<dyn Backend>) {
    let key = "lock:short";
    assert!(backend
        .acquire_lock(key, "v1", Duration::from_millis(200))
        .await
        .unwrap());
    assert!(backend.acquire_lock("lock:long", "v1", LONG).await.unwrap());
    sleep_ms(450).await;
    assert_eq!(
        backend.locks().await.unwrap(),
        vec![("lock:long".to_owned(), "v1".to_owned())]
    );
    assert!(
        !backend.release_lock(key, "v1").await.unwrap(),
        "released an expired lock"
    );
    assert!(backend.acquire_lock(key, "v2", LONG).await.unwrap());
    assert_eq!(backend.locks().await.unwrap().len(), 2);
}

/// `renew_lock` resets the TTL only for the value that holds the key; a
/// renewal by anyone else, or of a missing key, returns false and changes
/// nothing.
pub async fn renew_only_by_owner(backend: Arc<dyn Backend>) {
    let key = "workerslock:job:q:[1]";
    assert!(
        !backend.renew_lock(key, "v1", LONG).await.unwrap(),
        "renewed a missing lock"
    );
    assert!(
        backend.locks().await.unwrap().is_empty(),
        "renewing a missing lock created it"
    );
    assert!(backend
        .acquire_lock(key, "v1", Duration::from_millis(600))
        .await
        .unwrap());
    sleep_ms(150).await;
    assert!(!backend.renew_lock(key, "v2", LONG).await.unwrap());
    assert!(backend.renew_lock(key, "v1", Duration::from_secs(2)).await.unwrap());
    sleep_ms(750).await;
    assert_eq!(backend.locks().await.unwrap(), vec![(key.to_owned(), "v1".to_owned())]);
    assert!(!backend.acquire_lock(key, "v2", LONG).await.unwrap());
    // A failed renewal by another value does not extend the holder's TTL.
    let other = "lock:other";
    assert!(backend
        .acquire_lock(other, "v1", Duration::from_millis(300))
        .await
        .unwrap());
    sleep_ms(150).await;
    assert!(!backend.renew_lock(other, "v2", LONG).await.unwrap());
    sleep_ms(400).await;
    assert!(
        backend.acquire_lock(other, "v2", LONG).await.unwrap(),
        "foreign renewal extended the lock"
    );
}

/// `release_lock` deletes the key only if it still holds the given value.
pub async fn release_only_by_owner(backend: Arc<dyn Backend>) {
    let key = "lock:job:q:[1]";
    assert!(!backend.release_lock(key, "v1").await.unwrap());
    assert!(backend.acquire_lock(key, "v1", LONG).await.unwrap());
    assert!(!backend.release_lock(key, "v2").await.unwrap());
    assert_eq!(backend.locks().await.unwrap(), vec![(key.to_owned(), "v1".to_owned())]);
    assert!(backend.release_lock(key, "v1").await.unwrap());
    assert_eq!(backend.locks().await.unwrap(), Vec::new());
    assert!(!backend.release_lock(key, "v1").await.unwrap());
    assert!(backend.acquire_lock(key, "v2", LONG).await.unwrap());
}

/// `locks` lists every live lock as `(key, value)` sorted by key, leaves out
/// expired ones, and never shows the scheduler's leader lock.
pub async fn locks_lists_live_locks_sorted_not_leader(backend: Arc<dyn Backend>) {
    assert!(backend.acquire_leader("scheduler-1", LONG).await.unwrap());
    assert_eq!(backend.locks().await.unwrap(), Vec::new());
    assert!(backend.acquire_lock("workerslock:b", "3", LONG).await.unwrap());
    assert!(backend.acquire_lock("lock:z", "1", LONG).await.unwrap());
    assert!(backend.acquire_lock("lock:a", "2", LONG).await.unwrap());
    assert!(backend
        .acquire_lock("lock:expiring", "4", Duration::from_millis(150))
        .await
        .unwrap());
    sleep_ms(400).await;
    let want = [("lock:a", "2"), ("lock:z", "1"), ("workerslock:b", "3")];
    let want: Vec<(String, String)> = want.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    assert_eq!(backend.locks().await.unwrap(), want);
    assert_eq!(backend.leader().await.unwrap().as_deref(), Some("scheduler-1"));
}

/// `delete_lock` removes a key whatever it holds and returns 1, or 0 when
/// there was nothing to remove; it does not touch other locks or the leader.
pub async fn delete_lock_counts(backend: Arc<dyn Backend>) {
    assert!(backend.acquire_leader("scheduler-1", LONG).await.unwrap());
    assert!(backend.acquire_lock("lock:a", "v1", LONG).await.unwrap());
    assert!(backend.acquire_lock("lock:b", "v1", LONG).await.unwrap());
    assert_eq!(backend.delete_lock("lock:a").await.unwrap(), 1);
    assert_eq!(backend.delete_lock("lock:a").await.unwrap(), 0);
    assert_eq!(backend.delete_lock("lock:missing").await.unwrap(), 0);
    assert_eq!(
        backend.locks().await.unwrap(),
        vec![("lock:b".to_owned(), "v1".to_owned())]
    );
    assert_eq!(backend.leader().await.unwrap().as_deref(), Some("scheduler-1"));
    assert!(backend.acquire_lock("lock:a", "v2", LONG).await.unwrap());
}

/// Sixteen concurrent `acquire_lock` calls on one key with different values
/// have exactly one winner, and the lock holds the winner's value.
pub async fn concurrent_acquire_has_one_winner(backend: Arc<dyn Backend>) {
    const TASKS: usize = 16;
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for n in 0..TASKS {
        let (backend, barrier) = (Arc::clone(&backend), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let value = format!("v{n}");
            let won = backend.acquire_lock("lock:race", &value, LONG).await.unwrap();
            (won, value)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (won, value) = t.await.unwrap();
        if won {
            winners.push(value);
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    assert_eq!(
        backend.locks().await.unwrap(),
        vec![("lock:race".to_owned(), winners[0].clone())]
    );
}
