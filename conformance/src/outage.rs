//! A backend wrapper that fails every call with a backend error of a
//! chosen kind while it is "down", for the tests of how workers and
//! schedulers treat transient and permanent errors.

use async_trait::async_trait;
use resq_core::backend::{
    Backend, CancelMark, CancelSignal, CancelStore, Claimed, Cleaned, DelayedStore, FailedStore, LeaderLock, LockEntry,
    LockStore, Orphan, Outcome, Promotion, QueueStat, QueueStore, QueuedJob, StatsStore, TaskFlowStore, WorkerId,
    WorkerRegistry, WorkingOn,
};
use resq_core::{BackendErrorKind, Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Wraps a backend. While down, every call fails before reaching the inner
/// backend with an [`Error::Backend`] of the chosen kind.
pub struct Outage {
    inner: Arc<dyn Backend>,
    /// `Some((kind, left))`: calls fail with `kind`; `left` more calls fail
    /// (`None` = until [`Outage::recover`]).
    down: Mutex<Option<(BackendErrorKind, Option<u64>)>>,
    /// `Some(calls)`: only these calls fail while down.
    only: Mutex<Option<Vec<&'static str>>>,
    failed: AtomicU64,
}

impl Outage {
    /// Wraps `inner`, up.
    pub fn new(inner: Arc<dyn Backend>) -> Arc<Self> {
        Arc::new(Outage {
            inner,
            down: Mutex::new(None),
            only: Mutex::new(None),
            failed: AtomicU64::new(0),
        })
    }

    /// Fails the next `calls` calls (every call when `None`) with `kind`.
    pub fn fail(&self, kind: BackendErrorKind, calls: Option<u64>) {
        *self.down.lock().unwrap_or_else(PoisonError::into_inner) = Some((kind, calls));
    }

    /// Fails every call named in `calls` (method names, such as
    /// `cancel_signals`) with `kind` until [`Outage::recover`]; the others
    /// go through.
    pub fn fail_only(&self, kind: BackendErrorKind, calls: &[&'static str]) {
        *self.only.lock().unwrap_or_else(PoisonError::into_inner) = Some(calls.to_vec());
        self.fail(kind, None);
    }

    /// Lets every call through again.
    pub fn recover(&self) {
        *self.only.lock().unwrap_or_else(PoisonError::into_inner) = None;
        *self.down.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// How many calls failed.
    pub fn failed_calls(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    fn gate(&self, call: &str) -> Result<()> {
        if let Some(only) = &*self.only.lock().unwrap_or_else(PoisonError::into_inner) {
            if !only.contains(&call) {
                return Ok(());
            }
        }
        let mut down = self.down.lock().unwrap_or_else(PoisonError::into_inner);
        let Some((kind, left)) = down.as_mut() else {
            return Ok(());
        };
        let kind = *kind;
        if let Some(n) = left {
            *n = n.saturating_sub(1);
            if *n == 0 {
                *down = None;
            }
        }
        self.failed.fetch_add(1, Ordering::SeqCst);
        let message = format!("injected {kind:?} error in {call}");
        Err(match kind {
            BackendErrorKind::Permanent => Error::permanent(message),
            _ => Error::transient(message),
        })
    }
}

#[async_trait]
impl Backend for Outage {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn remote(&self) -> bool {
        self.inner.remote()
    }
}

#[async_trait]
impl QueueStore for Outage {
    async fn push(&self, queue: &str, payload: &str) -> Result<()> {
        self.gate("push")?;
        self.inner.push(queue, payload).await
    }
    async fn push_once(&self, queue: &str, payload: &str, key: &str, value: &str, ttl: Duration) -> Result<bool> {
        self.gate("push_once")?;
        self.inner.push_once(queue, payload, key, value, ttl).await
    }
    async fn push_batch(&self, jobs: &[QueuedJob]) -> Result<()> {
        self.gate("push_batch")?;
        self.inner.push_batch(jobs).await
    }
    async fn claim(&self, worker: &WorkerId, queues: &[String], run_at: &str) -> Result<Option<Claimed>> {
        self.gate("claim")?;
        self.inner.claim(worker, queues, run_at).await
    }
    async fn complete(&self, worker: &WorkerId, outcome: Outcome) -> Result<()> {
        self.gate("complete")?;
        self.inner.complete(worker, outcome).await
    }
    async fn claim_batch(
        &self,
        workers: &[WorkerId],
        queues: &[String],
        run_at: &str,
    ) -> Result<Vec<(usize, Claimed)>> {
        self.gate("claim_batch")?;
        self.inner.claim_batch(workers, queues, run_at).await
    }
    async fn complete_batch(&self, done: &[(WorkerId, Outcome)]) -> Result<()> {
        self.gate("complete_batch")?;
        self.inner.complete_batch(done).await
    }
    async fn complete_and_claim_batch(
        &self,
        done: &[(WorkerId, Outcome)],
        workers: &[WorkerId],
        queues: &[String],
        run_at: &str,
    ) -> Result<Result<Vec<(usize, Claimed)>>> {
        self.gate("complete_and_claim_batch")?;
        self.inner.complete_and_claim_batch(done, workers, queues, run_at).await
    }
    async fn wait_for_jobs(&self, queues: &[String], timeout: Duration) -> Result<()> {
        self.gate("wait_for_jobs")?;
        self.inner.wait_for_jobs(queues, timeout).await
    }
    async fn queue_len(&self, queue: &str) -> Result<u64> {
        self.gate("queue_len")?;
        self.inner.queue_len(queue).await
    }
    async fn queue_range(&self, queue: &str, start: i64, stop: i64) -> Result<Vec<String>> {
        self.gate("queue_range")?;
        self.inner.queue_range(queue, start, stop).await
    }
    async fn remove_from_queue(&self, queue: &str, payload: &str, count: i64) -> Result<u64> {
        self.gate("remove_from_queue")?;
        self.inner.remove_from_queue(queue, payload, count).await
    }
    async fn delete_queue(&self, queue: &str) -> Result<bool> {
        self.gate("delete_queue")?;
        self.inner.delete_queue(queue).await
    }
    async fn queues(&self) -> Result<Vec<String>> {
        self.gate("queues")?;
        self.inner.queues().await
    }
    async fn pause_queue(&self, queue: &str) -> Result<bool> {
        self.gate("pause_queue")?;
        self.inner.pause_queue(queue).await
    }
    async fn resume_queue(&self, queue: &str) -> Result<bool> {
        self.gate("resume_queue")?;
        self.inner.resume_queue(queue).await
    }
    async fn queue_stats(&self, queues: &[String]) -> Result<Vec<QueueStat>> {
        self.gate("queue_stats")?;
        self.inner.queue_stats(queues).await
    }
    async fn paused_queues(&self) -> Result<Vec<String>> {
        self.gate("paused_queues")?;
        self.inner.paused_queues().await
    }
    async fn set_queue_limits(&self, queue: &str, limits: resq_core::QueueLimits) -> Result<()> {
        self.gate("set_queue_limits")?;
        self.inner.set_queue_limits(queue, limits).await
    }
    async fn queue_limits(&self) -> Result<Vec<(String, resq_core::QueueLimits)>> {
        self.gate("queue_limits")?;
        self.inner.queue_limits().await
    }
    async fn push_front(&self, queue: &str, payload: &str) -> Result<()> {
        self.gate("push_front")?;
        self.inner.push_front(queue, payload).await
    }
    async fn remove_by_class(&self, queue: &str, class: &str) -> Result<u64> {
        self.gate("remove_by_class")?;
        self.inner.remove_by_class(queue, class).await
    }
}

#[async_trait]
impl DelayedStore for Outage {
    async fn schedule(&self, timestamp: i64, payload: &str) -> Result<bool> {
        self.gate("schedule")?;
        self.inner.schedule(timestamp, payload).await
    }
    async fn due_timestamps(&self, up_to: i64, limit: usize) -> Result<Vec<i64>> {
        self.gate("due_timestamps")?;
        self.inner.due_timestamps(up_to, limit).await
    }
    async fn delayed_timestamps(&self) -> Result<Vec<i64>> {
        self.gate("delayed_timestamps")?;
        self.inner.delayed_timestamps().await
    }
    async fn delayed_at(&self, timestamp: i64) -> Result<Vec<String>> {
        self.gate("delayed_at")?;
        self.inner.delayed_at(timestamp).await
    }
    async fn timestamps_of(&self, payload: &str) -> Result<Vec<i64>> {
        self.gate("timestamps_of")?;
        self.inner.timestamps_of(payload).await
    }
    async fn remove_delayed(&self, payload: &str) -> Result<Vec<i64>> {
        self.gate("remove_delayed")?;
        self.inner.remove_delayed(payload).await
    }
    async fn promote_delayed(&self, timestamp: i64, payload: &str, queue: &str) -> Result<bool> {
        self.gate("promote_delayed")?;
        self.inner.promote_delayed(timestamp, payload, queue).await
    }
    async fn remove_delayed_at(&self, timestamp: i64, payload: &str) -> Result<bool> {
        self.gate("remove_delayed_at")?;
        self.inner.remove_delayed_at(timestamp, payload).await
    }
    async fn delayed_bucket_sizes(&self) -> Result<Vec<(i64, u64)>> {
        self.gate("delayed_bucket_sizes")?;
        self.inner.delayed_bucket_sizes().await
    }
    async fn delayed_count(&self) -> Result<u64> {
        self.gate("delayed_count")?;
        self.inner.delayed_count().await
    }
    async fn promote_due(&self, up_to: i64, limit: usize) -> Result<Vec<Promotion>> {
        self.gate("promote_due")?;
        self.inner.promote_due(up_to, limit).await
    }
    async fn remove_delayed_by_class(&self, queue: &str, class: &str) -> Result<u64> {
        self.gate("remove_delayed_by_class")?;
        self.inner.remove_delayed_by_class(queue, class).await
    }
    fn delayed_precision(&self) -> Duration {
        self.inner.delayed_precision()
    }
    async fn schedule_ms(&self, due_ms: i64, payload: &str) -> Result<bool> {
        self.gate("schedule_ms")?;
        self.inner.schedule_ms(due_ms, payload).await
    }
    async fn promote_due_ms(&self, now_ms: i64, limit: usize) -> Result<Vec<Promotion>> {
        self.gate("promote_due_ms")?;
        self.inner.promote_due_ms(now_ms, limit).await
    }
    async fn next_due_ms(&self) -> Result<Option<i64>> {
        self.gate("next_due_ms")?;
        self.inner.next_due_ms().await
    }
    async fn schedule_watch(&self) -> Result<Option<tokio::sync::watch::Receiver<u64>>> {
        self.gate("schedule_watch")?;
        self.inner.schedule_watch().await
    }
}

#[async_trait]
impl LockStore for Outage {
    async fn acquire_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<bool> {
        self.gate("acquire_lock")?;
        self.inner.acquire_lock(key, value, ttl).await
    }
    async fn renew_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<bool> {
        self.gate("renew_lock")?;
        self.inner.renew_lock(key, value, ttl).await
    }
    async fn release_lock(&self, key: &str, value: &str) -> Result<bool> {
        self.gate("release_lock")?;
        self.inner.release_lock(key, value).await
    }
    async fn locks(&self) -> Result<Vec<(String, String)>> {
        self.gate("locks")?;
        self.inner.locks().await
    }
    async fn delete_lock(&self, key: &str) -> Result<u64> {
        self.gate("delete_lock")?;
        self.inner.delete_lock(key).await
    }
    async fn get_lock(&self, key: &str) -> Result<Option<LockEntry>> {
        self.gate("get_lock")?;
        self.inner.get_lock(key).await
    }
    async fn set_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        self.gate("set_lock")?;
        self.inner.set_lock(key, value, ttl).await
    }
    async fn incr_lock(&self, key: &str, by: i64, ttl: Duration) -> Result<i64> {
        self.gate("incr_lock")?;
        self.inner.incr_lock(key, by, ttl).await
    }
}

#[async_trait]
impl FailedStore for Outage {
    async fn push_failed(&self, entry: &str) -> Result<()> {
        self.gate("push_failed")?;
        self.inner.push_failed(entry).await
    }
    async fn failed_count(&self) -> Result<u64> {
        self.gate("failed_count")?;
        self.inner.failed_count().await
    }
    async fn failed_range(&self, start: i64, stop: i64) -> Result<Vec<String>> {
        self.gate("failed_range")?;
        self.inner.failed_range(start, stop).await
    }
    async fn remove_failed(&self, entry: &str) -> Result<u64> {
        self.gate("remove_failed")?;
        self.inner.remove_failed(entry).await
    }
    async fn remove_failed_at(&self, index: u64, entry: &str) -> Result<bool> {
        self.gate("remove_failed_at")?;
        self.inner.remove_failed_at(index, entry).await
    }
    async fn retry_failed_at(&self, index: u64, entry: &str, queue: &str, payload: &str) -> Result<bool> {
        self.gate("retry_failed_at")?;
        self.inner.retry_failed_at(index, entry, queue, payload).await
    }
    async fn retry_failed(&self, entry: &str, queue: &str, payload: &str) -> Result<bool> {
        self.gate("retry_failed")?;
        self.inner.retry_failed(entry, queue, payload).await
    }
}

#[async_trait]
impl WorkerRegistry for Outage {
    async fn register_worker(&self, worker: &WorkerId, now_ms: i64) -> Result<()> {
        self.gate("register_worker")?;
        self.inner.register_worker(worker, now_ms).await
    }
    async fn ping_worker(&self, worker: &WorkerId, now_ms: i64) -> Result<()> {
        self.gate("ping_worker")?;
        self.inner.ping_worker(worker, now_ms).await
    }
    async fn register_workers(&self, workers: &[WorkerId], now_ms: i64) -> Result<()> {
        self.gate("register_workers")?;
        self.inner.register_workers(workers, now_ms).await
    }
    async fn ping_workers(&self, workers: &[WorkerId], now_ms: i64) -> Result<()> {
        self.gate("ping_workers")?;
        self.inner.ping_workers(workers, now_ms).await
    }
    async fn workers(&self) -> Result<Vec<WorkerId>> {
        self.gate("workers")?;
        self.inner.workers().await
    }
    async fn worker_started(&self, worker: &WorkerId) -> Result<Option<i64>> {
        self.gate("worker_started")?;
        self.inner.worker_started(worker).await
    }
    async fn working_on(&self, worker: &WorkerId) -> Result<Option<WorkingOn>> {
        self.gate("working_on")?;
        self.inner.working_on(worker).await
    }
    async fn working_on_many(&self, workers: &[WorkerId]) -> Result<Vec<Option<WorkingOn>>> {
        self.gate("working_on_many")?;
        self.inner.working_on_many(workers).await
    }
    async fn worker_times(&self, workers: &[WorkerId]) -> Result<Vec<resq_core::backend::WorkerTimes>> {
        self.gate("worker_times")?;
        self.inner.worker_times(workers).await
    }
    async fn stale_workers(&self, cutoff_ms: i64) -> Result<Vec<WorkerId>> {
        self.gate("stale_workers")?;
        self.inner.stale_workers(cutoff_ms).await
    }
    async fn clean_worker(&self, worker: &WorkerId, orphan: Orphan) -> Result<Option<Cleaned>> {
        self.gate("clean_worker")?;
        self.inner.clean_worker(worker, orphan).await
    }
}

#[async_trait]
impl StatsStore for Outage {
    async fn incr_stat(&self, key: &str, by: i64) -> Result<i64> {
        self.gate("incr_stat")?;
        self.inner.incr_stat(key, by).await
    }
    async fn stat(&self, key: &str) -> Result<i64> {
        self.gate("stat")?;
        self.inner.stat(key).await
    }
    async fn stats(&self) -> Result<Vec<(String, i64)>> {
        self.gate("stats")?;
        self.inner.stats().await
    }
}

#[async_trait]
impl CancelStore for Outage {
    async fn request_cancel(&self, worker: &WorkerId, mark: &CancelMark) -> Result<()> {
        self.gate("request_cancel")?;
        self.inner.request_cancel(worker, mark).await
    }
    async fn cancel_marks(&self, workers: &[WorkerId]) -> Result<Vec<Option<CancelMark>>> {
        self.gate("cancel_marks")?;
        self.inner.cancel_marks(workers).await
    }
    async fn clear_cancel(&self, worker: &WorkerId, mark: &CancelMark) -> Result<bool> {
        self.gate("clear_cancel")?;
        self.inner.clear_cancel(worker, mark).await
    }
    async fn cancel_signals(&self) -> Result<tokio::sync::broadcast::Receiver<CancelSignal>> {
        self.gate("cancel_signals")?;
        self.inner.cancel_signals().await
    }
}

#[async_trait]
impl TaskFlowStore for Outage {
    async fn acquire_task_start(
        &self,
        class: &str,
        limits: &resq_core::TaskLimits,
        worker: &WorkerId,
    ) -> Result<resq_core::TaskAdmission> {
        self.gate("acquire_task_start")?;
        self.inner.acquire_task_start(class, limits, worker).await
    }
    async fn release_task_slot(&self, worker: &WorkerId) -> Result<bool> {
        self.gate("release_task_slot")?;
        self.inner.release_task_slot(worker).await
    }
    async fn task_slots_held(&self, class: &str) -> Result<u64> {
        self.gate("task_slots_held")?;
        self.inner.task_slots_held(class).await
    }
}

#[async_trait]
impl LeaderLock for Outage {
    async fn acquire_leader(&self, name: &str, ttl: Duration) -> Result<bool> {
        self.gate("acquire_leader")?;
        self.inner.acquire_leader(name, ttl).await
    }
    async fn release_leader(&self, name: &str) -> Result<bool> {
        self.gate("release_leader")?;
        self.inner.release_leader(name).await
    }
    async fn leader(&self) -> Result<Option<String>> {
        self.gate("leader")?;
        self.inner.leader().await
    }
}
