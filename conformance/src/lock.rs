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

/// `get_lock` reads a live lock's value and remaining TTL; a missing or
/// expired key reads as `None`.
pub async fn get_lock_reads_value_and_ttl(backend: Arc<dyn Backend>) {
    assert_eq!(backend.get_lock("lock:none").await.unwrap(), None);
    assert!(backend
        .acquire_lock("lock:a", "v1", Duration::from_secs(30))
        .await
        .unwrap());
    let got = backend.get_lock("lock:a").await.unwrap().expect("lock:a is held");
    assert_eq!(got.value, "v1");
    let ttl = got.ttl.expect("a lock set with a TTL reports one");
    assert!(
        ttl > Duration::from_secs(25) && ttl <= Duration::from_secs(30),
        "ttl {ttl:?}"
    );
    assert!(backend
        .acquire_lock("lock:short", "v", Duration::from_millis(150))
        .await
        .unwrap());
    sleep_ms(400).await;
    assert_eq!(backend.get_lock("lock:short").await.unwrap(), None);
}

/// `set_lock` overwrites whoever holds the key and resets its TTL.
pub async fn set_lock_overwrites_and_resets_ttl(backend: Arc<dyn Backend>) {
    assert!(backend.acquire_lock("lock:s", "old", LONG).await.unwrap());
    backend
        .set_lock("lock:s", "new", Duration::from_secs(10))
        .await
        .unwrap();
    let got = backend.get_lock("lock:s").await.unwrap().expect("set");
    assert_eq!(got.value, "new");
    assert!(got.ttl.is_some_and(|t| t <= Duration::from_secs(10)), "{got:?}");
    assert!(!backend.release_lock("lock:s", "old").await.unwrap());
    assert!(backend.release_lock("lock:s", "new").await.unwrap());
    backend
        .set_lock("lock:fresh", "1", Duration::from_millis(150))
        .await
        .unwrap();
    assert_eq!(
        backend.get_lock("lock:fresh").await.unwrap().map(|e| e.value),
        Some("1".into())
    );
    sleep_ms(400).await;
    assert_eq!(backend.get_lock("lock:fresh").await.unwrap(), None);
}

/// `incr_lock` is `INCRBY` + `PEXPIRE`: a missing or expired key counts as
/// 0, the TTL is reset on every call, and a non-integer value is an error
/// that leaves it unchanged.
pub async fn incr_lock_counts_and_sets_ttl(backend: Arc<dyn Backend>) {
    let key = "resque-retry:job:1-2";
    assert!(backend.acquire_lock(key, "-1", LONG).await.unwrap());
    assert_eq!(backend.incr_lock(key, 1, Duration::from_secs(20)).await.unwrap(), 0);
    assert_eq!(backend.incr_lock(key, 2, Duration::from_secs(20)).await.unwrap(), 2);
    let got = backend.get_lock(key).await.unwrap().expect("counter");
    assert_eq!(got.value, "2");
    assert!(
        got.ttl.is_some_and(|t| t <= Duration::from_secs(20)),
        "TTL not reset: {got:?}"
    );
    assert_eq!(backend.incr_lock("counter:new", -3, LONG).await.unwrap(), -3);
    backend
        .set_lock("counter:short", "40", Duration::from_millis(150))
        .await
        .unwrap();
    sleep_ms(400).await;
    assert_eq!(
        backend.incr_lock("counter:short", 1, LONG).await.unwrap(),
        1,
        "expired counts as 0"
    );
    assert!(backend.acquire_lock("lock:text", "abc", LONG).await.unwrap());
    assert!(backend.incr_lock("lock:text", 1, LONG).await.is_err());
    assert_eq!(
        backend.get_lock("lock:text").await.unwrap().map(|e| e.value),
        Some("abc".to_owned())
    );
}

/// Concurrent `incr_lock` calls never lose an increment.
pub async fn concurrent_incr_lock_adds_up(backend: Arc<dyn Backend>) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let b = Arc::clone(&backend);
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..10 {
                seen.push(b.incr_lock("counter:c", 1, LONG).await.unwrap());
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=80).collect::<Vec<i64>>(),
        "each increment returns a distinct value"
    );
}

/// `push_once` pushes only while its key is free and takes the key in the
/// same step: concurrent callers with one key push exactly once, and the
/// pushed job wakes waiters like any push.
pub async fn push_once_pushes_exactly_once_per_key(backend: Arc<dyn Backend>) {
    let payload = r#"{"class":"tick","queue":"cron","args":[{}]}"#;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let b = Arc::clone(&backend);
        tasks.push(tokio::spawn(async move {
            b.push_once("cron", payload, "resq:cron:tick:100", &format!("v{i}"), LONG)
                .await
                .unwrap()
        }));
    }
    let mut pushed = 0;
    for t in tasks {
        pushed += usize::from(t.await.unwrap());
    }
    assert_eq!(pushed, 1);
    assert_eq!(backend.queue_len("cron").await.unwrap(), 1);
    assert_eq!(backend.queues().await.unwrap(), vec!["cron".to_owned()]);
    assert_eq!(
        backend.queue_range("cron", 0, -1).await.unwrap(),
        vec![payload.to_owned()]
    );
    // A second key pushes again; an expired key can be taken again.
    assert!(backend
        .push_once("cron", payload, "resq:cron:tick:101", "v", Duration::from_millis(150))
        .await
        .unwrap());
    sleep_ms(400).await;
    assert!(backend
        .push_once("cron", payload, "resq:cron:tick:101", "v", LONG)
        .await
        .unwrap());
    assert_eq!(backend.queue_len("cron").await.unwrap(), 3);
    // A held plain lock blocks it too, and nothing is pushed.
    assert!(backend.acquire_lock("lock:held", "x", LONG).await.unwrap());
    assert!(!backend
        .push_once("other", payload, "lock:held", "y", LONG)
        .await
        .unwrap());
    assert_eq!(backend.queue_len("other").await.unwrap(), 0);
    // It wakes a waiter.
    let b = Arc::clone(&backend);
    let waiter = tokio::spawn(async move {
        let t = std::time::Instant::now();
        b.wait_for_jobs(&["wake".to_owned()], Duration::from_secs(10))
            .await
            .unwrap();
        t.elapsed()
    });
    sleep_ms(200).await;
    assert!(backend.push_once("wake", payload, "lock:w", "v", LONG).await.unwrap());
    let waited = waiter.await.unwrap();
    assert!(
        waited < Duration::from_secs(5),
        "push_once did not wake the waiter: {waited:?}"
    );
}
