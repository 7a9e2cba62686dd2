//! Helpers shared by the backend-level groups: the imports every group
//! needs, small builders for payloads and worker ids, and whole-list readers.

pub use resq_core::backend::{
    Backend, Claimed, Cleaned, DelayedStore, FailedStore, LeaderLock, LockStore, Orphan, Outcome, Promotion,
    QueueStore, QueuedJob, StatsStore, WorkerId, WorkerRegistry, WorkingOn,
};
pub use resq_core::failed::{FailedJob, Failure};
pub use std::sync::Arc;
pub use std::time::{Duration, Instant};

/// A node-resque style `run_at` value, as a worker would pass it to `claim`.
pub const RUN_AT: &str = "Sat Nov 28 2026 21:36:02 GMT+0000 (Coordinated Universal Time)";

/// A fixed `failed_at` instant (epoch ms) for entries built by tests.
pub const AT_MS: i64 = 1_795_901_762_000;

/// Owned queue names from string slices.
pub fn names(queues: &[&str]) -> Vec<String> {
    queues.iter().map(|q| (*q).to_owned()).collect()
}

/// node-resque payload bytes for `class` on `queue` with one integer argument.
pub fn job(queue: &str, class: &str, arg: i64) -> String {
    resq_core::job::encode_payload(queue, class, &[serde_json::Value::from(arg)])
}

/// A worker id from a name and its queues.
pub fn worker(name: &str, queues: &[&str]) -> WorkerId {
    WorkerId::new(name, &names(queues))
}

/// A job to push with `push_batch`.
pub fn queued(queue: &str, payload: &str) -> QueuedJob {
    QueuedJob {
        queue: queue.to_owned(),
        payload: payload.to_owned(),
    }
}

/// Every payload in `queue`, head first.
pub async fn all(backend: &dyn Backend, queue: &str) -> Vec<String> {
    backend.queue_range(queue, 0, -1).await.unwrap()
}

/// Every failed entry, oldest first.
pub async fn all_failed(backend: &dyn Backend) -> Vec<String> {
    backend.failed_range(0, -1).await.unwrap()
}

/// Every stat counter, sorted by key.
pub async fn all_stats(backend: &dyn Backend) -> Vec<(String, i64)> {
    backend.stats().await.unwrap()
}

/// `(key, value)` pairs with owned keys, for comparing with `stats()`.
pub fn pairs(items: &[(&str, i64)]) -> Vec<(String, i64)> {
    items.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// Sleeps for `ms` milliseconds.
pub async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Checks that `entry` is exactly the failed entry the scheduler writes for
/// the unpromotable delayed item `payload` with `reason`
/// ([`resq_core::failed::promotion_failure_entry`]), whatever its time.
pub fn assert_promotion_failure_entry(entry: &str, payload: &str, reason: &str) {
    if let Some(problem) = promotion_entry_problem(entry, payload, reason) {
        panic!("{problem}");
    }
}

/// What is wrong with `entry` as the promotion failure entry for `payload`
/// and `reason`, or `None` if it is right (see [`assert_promotion_failure_entry`]).
pub fn promotion_entry_problem(entry: &str, payload: &str, reason: &str) -> Option<String> {
    let decoded = match FailedJob::decode(entry) {
        Ok(d) => d,
        Err(e) => return Some(format!("promotion failure entry {entry:?} does not decode: {e}")),
    };
    let error = decoded.error.clone().unwrap_or_default();
    if !error.contains(reason) {
        return Some(format!(
            "failed entry error {error:?} does not mention the reason {reason:?}"
        ));
    }
    let failed_at = decoded.failed_at.clone().unwrap_or_default();
    let Some(at_ms) = resq_core::time::parse_date(&failed_at) else {
        return Some(format!("failed_at {failed_at:?} of {entry:?} is not a date"));
    };
    let expected = resq_core::failed::promotion_failure_entry(payload, reason, at_ms);
    (entry != expected).then(|| {
        format!("promotion failure entry differs from promotion_failure_entry():\n  got  {entry}\n  want {expected}")
    })
}
