//! [`resq_core::StatsStore`]: integer counters with `INCRBY` semantics.
//! Keys carry no `stat:` prefix: `processed`, `failed`, `processed:<name>`.

use crate::fixtures::*;

/// `stat` is 0 for an unset counter; `incr_stat` adds (negative amounts
/// too) and returns the new value, which `stat` then reads.
pub async fn incr_and_read(backend: Arc<dyn Backend>) {
    assert_eq!(backend.stat("processed").await.unwrap(), 0);
    assert_eq!(backend.incr_stat("processed", 1).await.unwrap(), 1);
    assert_eq!(backend.incr_stat("processed", 5).await.unwrap(), 6);
    assert_eq!(backend.incr_stat("processed", -2).await.unwrap(), 4);
    assert_eq!(backend.stat("processed").await.unwrap(), 4);
    assert_eq!(backend.incr_stat("custom:thing", -3).await.unwrap(), -3);
    assert_eq!(backend.stat("custom:thing").await.unwrap(), -3);
    assert_eq!(backend.stat("failed").await.unwrap(), 0);
    let big = 1_i64 << 40;
    assert_eq!(backend.incr_stat("big", big).await.unwrap(), big);
    assert_eq!(backend.incr_stat("big", big).await.unwrap(), 2 * big);
}

/// `stats` lists every counter that was ever incremented, once, sorted by
/// key (byte order), with its value; a fresh backend has none.
pub async fn stats_sorted_listing(backend: Arc<dyn Backend>) {
    assert_eq!(all_stats(&*backend).await, Vec::new());
    for (key, by) in [
        ("processed:h:1", 2),
        ("zeta", 1),
        ("failed", 1),
        ("processed", 3),
        ("failed:h:1", 1),
        ("Alpha", 7),
        ("processed", 1),
    ] {
        backend.incr_stat(key, by).await.unwrap();
    }
    assert_eq!(
        all_stats(&*backend).await,
        pairs(&[
            ("Alpha", 7),
            ("failed", 1),
            ("failed:h:1", 1),
            ("processed", 4),
            ("processed:h:1", 2),
            ("zeta", 1),
        ])
    );
}

/// Cleaning a worker deletes its `processed:<name>` and `failed:<name>`
/// counters (set directly or by `complete`), keeps the global counters and
/// every other worker's, even one whose name extends the cleaned one's.
pub async fn per_worker_counters_removed_on_clean(backend: Arc<dyn Backend>) {
    let w = worker("h:1", &["q"]);
    let longer = worker("h:10", &["q"]);
    for wk in [&w, &longer] {
        backend.register_worker(wk, 1_700_000_000_000).await.unwrap();
        backend.push("q", &job("q", "x", 1)).await.unwrap();
        assert!(backend.claim(wk, &names(&["q"]), RUN_AT).await.unwrap().is_some());
        backend.complete(wk, Outcome::Success).await.unwrap();
    }
    backend.incr_stat("failed:h:1", 2).await.unwrap();
    backend.incr_stat("failed:h:10", 3).await.unwrap();
    backend.incr_stat("failed", 5).await.unwrap();
    assert!(backend.clean_worker(&w, Orphan::Requeue).await.unwrap().is_some());
    assert_eq!(backend.stat("processed:h:1").await.unwrap(), 0);
    assert_eq!(backend.stat("failed:h:1").await.unwrap(), 0);
    assert_eq!(
        all_stats(&*backend).await,
        pairs(&[
            ("failed", 5),
            ("failed:h:10", 3),
            ("processed", 2),
            ("processed:h:10", 1)
        ])
    );
}
