//! A pass-through backend wrapper that records every call: the method
//! name, and the index window of each `queue_range` and `failed_range`. The
//! tests use it to show that whole-list reads are gone (a call reads at most
//! a page) and that a [`resq_core::TaskServer`] runs on a custom part; it is
//! also the shape of a wrapped [`Backend`], the extension pattern the
//! `TaskServer` docs describe.

use async_trait::async_trait;
use resq_core::backend::{
    Backend, CancelMark, CancelSignal, CancelStore, Claimed, Cleaned, DelayedStore, FailedStore, LeaderLock, LockEntry,
    LockStore, Orphan, Outcome, Promotion, QueueStat, QueueStore, QueuedJob, StatsStore, TaskFlowStore, WorkerId,
    WorkerRegistry, WorkingOn,
};
use resq_core::Result;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One recorded call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The trait method's name, e.g. `queue_range`.
    pub method: &'static str,
    /// The `(start, stop)` window of a `queue_range` or `failed_range`.
    pub range: Option<(i64, i64)>,
}

/// Wraps a backend and records every call made through it.
pub struct Counting {
    inner: Arc<dyn Backend>,
    calls: Mutex<Vec<Call>>,
    default_removals: bool,
    /// Set while a default by-class removal runs: its reads are recorded
    /// as `remove_by_class/<method>`.
    in_removal: std::sync::atomic::AtomicBool,
}

impl Counting {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Backend>) -> Arc<Self> {
        Arc::new(Counting {
            inner,
            calls: Mutex::new(Vec::new()),
            default_removals: false,
            in_removal: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Wraps `inner`, but runs the trait's default by-class removals
    /// ([`resq_core::backend::remove_by_class_paged`],
    /// [`resq_core::backend::remove_delayed_by_class_per_bucket`]) through
    /// this wrapper instead of the backend's own, so their reads are recorded.
    pub fn with_default_removals(inner: Arc<dyn Backend>) -> Arc<Self> {
        Arc::new(Counting {
            inner,
            calls: Mutex::new(Vec::new()),
            default_removals: true,
            in_removal: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// How many calls of `method` there were.
    pub fn count(&self, method: &str) -> usize {
        self.calls().iter().filter(|c| c.method == method).count()
    }

    /// Forgets the calls recorded so far.
    pub fn reset(&self) {
        if let Ok(mut c) = self.calls.lock() {
            c.clear();
        }
    }

    /// The largest number of items any one `method` range call (`queue_range`
    /// or `failed_range`) could return; `None` when a call had an
    /// open-ended window (a negative `stop` with a non-negative `start`, as
    /// `0..=-1`, "everything").
    pub fn widest(&self, method: &str) -> Option<Option<u64>> {
        let mut widest: Option<Option<u64>> = None;
        for c in self.calls().iter().filter(|c| c.method == method) {
            let Some((start, stop)) = c.range else { continue };
            let width = if (start >= 0) == (stop >= 0) {
                Some(u64::try_from(stop.saturating_sub(start).saturating_add(1)).unwrap_or(0))
            } else {
                None
            };
            widest = Some(match (widest, width) {
                (None, w) => w,
                (Some(None), _) | (_, None) => None,
                (Some(Some(a)), Some(b)) => Some(a.max(b)),
            });
        }
        widest
    }

    fn note(&self, method: &'static str) {
        if let Ok(mut c) = self.calls.lock() {
            c.push(Call { method, range: None });
        }
    }

    fn note_range(&self, method: &'static str, start: i64, stop: i64) {
        let method = if self.in_removal.load(std::sync::atomic::Ordering::SeqCst) {
            match method {
                "queue_range" => "remove_by_class/queue_range",
                other => other,
            }
        } else {
            method
        };
        if let Ok(mut c) = self.calls.lock() {
            c.push(Call {
                method,
                range: Some((start, stop)),
            });
        }
    }
}

#[async_trait]
impl Backend for Counting {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn remote(&self) -> bool {
        self.inner.remote()
    }

    async fn close(&self) -> Result<()> {
        self.note("close");
        self.inner.close().await
    }
}

#[async_trait]
impl QueueStore for Counting {
    async fn push(&self, queue: &str, payload: &str) -> Result<()> {
        self.note("push");
        self.inner.push(queue, payload).await
    }
    async fn push_once(&self, queue: &str, payload: &str, key: &str, value: &str, ttl: Duration) -> Result<bool> {
        self.note("push_once");
        self.inner.push_once(queue, payload, key, value, ttl).await
    }
    async fn push_batch(&self, jobs: &[QueuedJob]) -> Result<()> {
        self.note("push_batch");
        self.inner.push_batch(jobs).await
    }
    async fn claim(&self, worker: &WorkerId, queues: &[String], run_at: &str) -> Result<Option<Claimed>> {
        self.note("claim");
        self.inner.claim(worker, queues, run_at).await
    }
    async fn complete(&self, worker: &WorkerId, outcome: Outcome) -> Result<()> {
        self.note("complete");
        self.inner.complete(worker, outcome).await
    }
    async fn claim_batch(
        &self,
        workers: &[WorkerId],
        queues: &[String],
        run_at: &str,
    ) -> Result<Vec<(usize, Claimed)>> {
        self.note("claim_batch");
        self.inner.claim_batch(workers, queues, run_at).await
    }
    async fn complete_batch(&self, done: &[(WorkerId, Outcome)]) -> Result<()> {
        self.note("complete_batch");
        self.inner.complete_batch(done).await
    }
    async fn complete_and_claim_batch(
        &self,
        done: &[(WorkerId, Outcome)],
        workers: &[WorkerId],
        queues: &[String],
        run_at: &str,
    ) -> Result<Result<Vec<(usize, Claimed)>>> {
        self.note("complete_and_claim_batch");
        self.inner.complete_and_claim_batch(done, workers, queues, run_at).await
    }

    async fn wait_for_jobs(&self, queues: &[String], timeout: Duration) -> Result<()> {
        self.note("wait_for_jobs");
        self.inner.wait_for_jobs(queues, timeout).await
    }
    async fn queue_len(&self, queue: &str) -> Result<u64> {
        self.note("queue_len");
        self.inner.queue_len(queue).await
    }
    async fn queue_range(&self, queue: &str, start: i64, stop: i64) -> Result<Vec<String>> {
        self.note_range("queue_range", start, stop);
        self.inner.queue_range(queue, start, stop).await
    }
    async fn remove_from_queue(&self, queue: &str, payload: &str, count: i64) -> Result<u64> {
        self.note("remove_from_queue");
        self.inner.remove_from_queue(queue, payload, count).await
    }
    async fn delete_queue(&self, queue: &str) -> Result<bool> {
        self.note("delete_queue");
        self.inner.delete_queue(queue).await
    }
    async fn queues(&self) -> Result<Vec<String>> {
        self.note("queues");
        self.inner.queues().await
    }
    async fn pause_queue(&self, queue: &str) -> Result<bool> {
        self.note("pause_queue");
        self.inner.pause_queue(queue).await
    }
    async fn resume_queue(&self, queue: &str) -> Result<bool> {
        self.note("resume_queue");
        self.inner.resume_queue(queue).await
    }
    async fn queue_stats(&self, queues: &[String]) -> Result<Vec<QueueStat>> {
        self.note("queue_stats");
        self.inner.queue_stats(queues).await
    }
    async fn paused_queues(&self) -> Result<Vec<String>> {
        self.note("paused_queues");
        self.inner.paused_queues().await
    }
    async fn set_queue_limits(&self, queue: &str, limits: resq_core::QueueLimits) -> Result<()> {
        self.note("set_queue_limits");
        self.inner.set_queue_limits(queue, limits).await
    }
    async fn queue_limits(&self) -> Result<Vec<(String, resq_core::QueueLimits)>> {
        self.note("queue_limits");
        self.inner.queue_limits().await
    }
    async fn push_front(&self, queue: &str, payload: &str) -> Result<()> {
        self.note("push_front");
        self.inner.push_front(queue, payload).await
    }
    async fn remove_by_class(&self, queue: &str, class: &str) -> Result<u64> {
        self.note("remove_by_class");
        if self.default_removals {
            self.in_removal.store(true, std::sync::atomic::Ordering::SeqCst);
            let done = resq_core::backend::remove_by_class_paged(self, queue, class).await;
            self.in_removal.store(false, std::sync::atomic::Ordering::SeqCst);
            return done;
        }
        self.inner.remove_by_class(queue, class).await
    }
}

#[async_trait]
impl DelayedStore for Counting {
    async fn schedule(&self, timestamp: i64, payload: &str) -> Result<bool> {
        self.note("schedule");
        self.inner.schedule(timestamp, payload).await
    }
    async fn due_timestamps(&self, up_to: i64, limit: usize) -> Result<Vec<i64>> {
        self.note("due_timestamps");
        self.inner.due_timestamps(up_to, limit).await
    }
    async fn delayed_timestamps(&self) -> Result<Vec<i64>> {
        self.note("delayed_timestamps");
        self.inner.delayed_timestamps().await
    }
    async fn delayed_at(&self, timestamp: i64) -> Result<Vec<String>> {
        self.note("delayed_at");
        self.inner.delayed_at(timestamp).await
    }
    async fn timestamps_of(&self, payload: &str) -> Result<Vec<i64>> {
        self.note("timestamps_of");
        self.inner.timestamps_of(payload).await
    }
    async fn remove_delayed(&self, payload: &str) -> Result<Vec<i64>> {
        self.note("remove_delayed");
        self.inner.remove_delayed(payload).await
    }
    async fn remove_delayed_by_class(&self, queue: &str, class: &str) -> Result<u64> {
        self.note("remove_delayed_by_class");
        if self.default_removals {
            return resq_core::backend::remove_delayed_by_class_per_bucket(self, queue, class).await;
        }
        self.inner.remove_delayed_by_class(queue, class).await
    }
    async fn promote_delayed(&self, timestamp: i64, payload: &str, queue: &str) -> Result<bool> {
        self.note("promote_delayed");
        self.inner.promote_delayed(timestamp, payload, queue).await
    }
    async fn remove_delayed_at(&self, timestamp: i64, payload: &str) -> Result<bool> {
        self.note("remove_delayed_at");
        self.inner.remove_delayed_at(timestamp, payload).await
    }
    async fn delayed_bucket_sizes(&self) -> Result<Vec<(i64, u64)>> {
        self.note("delayed_bucket_sizes");
        self.inner.delayed_bucket_sizes().await
    }
    async fn delayed_count(&self) -> Result<u64> {
        self.note("delayed_count");
        self.inner.delayed_count().await
    }
    async fn promote_due(&self, up_to: i64, limit: usize) -> Result<Vec<Promotion>> {
        self.note("promote_due");
        self.inner.promote_due(up_to, limit).await
    }
    fn delayed_precision(&self) -> Duration {
        self.inner.delayed_precision()
    }
    async fn schedule_ms(&self, due_ms: i64, payload: &str) -> Result<bool> {
        self.note("schedule_ms");
        self.inner.schedule_ms(due_ms, payload).await
    }
    async fn promote_due_ms(&self, now_ms: i64, limit: usize) -> Result<Vec<Promotion>> {
        self.note("promote_due_ms");
        self.inner.promote_due_ms(now_ms, limit).await
    }
    async fn next_due_ms(&self) -> Result<Option<i64>> {
        self.note("next_due_ms");
        self.inner.next_due_ms().await
    }
    async fn schedule_watch(&self) -> Result<Option<tokio::sync::watch::Receiver<u64>>> {
        self.note("schedule_watch");
        self.inner.schedule_watch().await
    }
}

#[async_trait]
impl LockStore for Counting {
    async fn acquire_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<bool> {
        self.note("acquire_lock");
        self.inner.acquire_lock(key, value, ttl).await
    }
    async fn renew_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<bool> {
        self.note("renew_lock");
        self.inner.renew_lock(key, value, ttl).await
    }
    async fn release_lock(&self, key: &str, value: &str) -> Result<bool> {
        self.note("release_lock");
        self.inner.release_lock(key, value).await
    }
    async fn locks(&self) -> Result<Vec<(String, String)>> {
        self.note("locks");
        self.inner.locks().await
    }
    async fn delete_lock(&self, key: &str) -> Result<u64> {
        self.note("delete_lock");
        self.inner.delete_lock(key).await
    }
    async fn get_lock(&self, key: &str) -> Result<Option<LockEntry>> {
        self.note("get_lock");
        self.inner.get_lock(key).await
    }
    async fn set_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        self.note("set_lock");
        self.inner.set_lock(key, value, ttl).await
    }
    async fn incr_lock(&self, key: &str, by: i64, ttl: Duration) -> Result<i64> {
        self.note("incr_lock");
        self.inner.incr_lock(key, by, ttl).await
    }
}

#[async_trait]
impl FailedStore for Counting {
    async fn push_failed(&self, entry: &str) -> Result<()> {
        self.note("push_failed");
        self.inner.push_failed(entry).await
    }
    async fn failed_count(&self) -> Result<u64> {
        self.note("failed_count");
        self.inner.failed_count().await
    }
    async fn failed_range(&self, start: i64, stop: i64) -> Result<Vec<String>> {
        self.note_range("failed_range", start, stop);
        self.inner.failed_range(start, stop).await
    }
    async fn remove_failed(&self, entry: &str) -> Result<u64> {
        self.note("remove_failed");
        self.inner.remove_failed(entry).await
    }
    async fn remove_failed_at(&self, index: u64, entry: &str) -> Result<bool> {
        self.note("remove_failed_at");
        self.inner.remove_failed_at(index, entry).await
    }
    async fn retry_failed_at(&self, index: u64, entry: &str, queue: &str, payload: &str) -> Result<bool> {
        self.note("retry_failed_at");
        self.inner.retry_failed_at(index, entry, queue, payload).await
    }
    async fn retry_failed(&self, entry: &str, queue: &str, payload: &str) -> Result<bool> {
        self.note("retry_failed");
        self.inner.retry_failed(entry, queue, payload).await
    }
}

#[async_trait]
impl WorkerRegistry for Counting {
    async fn register_worker(&self, worker: &WorkerId, now_ms: i64) -> Result<()> {
        self.note("register_worker");
        self.inner.register_worker(worker, now_ms).await
    }
    async fn ping_worker(&self, worker: &WorkerId, now_ms: i64) -> Result<()> {
        self.note("ping_worker");
        self.inner.ping_worker(worker, now_ms).await
    }
    async fn register_workers(&self, workers: &[WorkerId], now_ms: i64) -> Result<()> {
        self.note("register_workers");
        self.inner.register_workers(workers, now_ms).await
    }
    async fn ping_workers(&self, workers: &[WorkerId], now_ms: i64) -> Result<()> {
        self.note("ping_workers");
        self.inner.ping_workers(workers, now_ms).await
    }
    async fn workers(&self) -> Result<Vec<WorkerId>> {
        self.note("workers");
        self.inner.workers().await
    }
    async fn worker_started(&self, worker: &WorkerId) -> Result<Option<i64>> {
        self.note("worker_started");
        self.inner.worker_started(worker).await
    }
    async fn working_on(&self, worker: &WorkerId) -> Result<Option<WorkingOn>> {
        self.note("working_on");
        self.inner.working_on(worker).await
    }
    async fn working_on_many(&self, workers: &[WorkerId]) -> Result<Vec<Option<WorkingOn>>> {
        self.note("working_on_many");
        self.inner.working_on_many(workers).await
    }
    async fn worker_times(&self, workers: &[WorkerId]) -> Result<Vec<resq_core::backend::WorkerTimes>> {
        self.note("worker_times");
        self.inner.worker_times(workers).await
    }
    async fn stale_workers(&self, cutoff_ms: i64) -> Result<Vec<WorkerId>> {
        self.note("stale_workers");
        self.inner.stale_workers(cutoff_ms).await
    }
    async fn clean_worker(&self, worker: &WorkerId, orphan: Orphan) -> Result<Option<Cleaned>> {
        self.note("clean_worker");
        self.inner.clean_worker(worker, orphan).await
    }
}

#[async_trait]
impl StatsStore for Counting {
    async fn incr_stat(&self, key: &str, by: i64) -> Result<i64> {
        self.note("incr_stat");
        self.inner.incr_stat(key, by).await
    }
    async fn stat(&self, key: &str) -> Result<i64> {
        self.note("stat");
        self.inner.stat(key).await
    }
    async fn stats(&self) -> Result<Vec<(String, i64)>> {
        self.note("stats");
        self.inner.stats().await
    }
}

#[async_trait]
impl CancelStore for Counting {
    async fn request_cancel(&self, worker: &WorkerId, mark: &CancelMark) -> Result<()> {
        self.note("request_cancel");
        self.inner.request_cancel(worker, mark).await
    }
    async fn cancel_marks(&self, workers: &[WorkerId]) -> Result<Vec<Option<CancelMark>>> {
        self.note("cancel_marks");
        self.inner.cancel_marks(workers).await
    }
    async fn clear_cancel(&self, worker: &WorkerId, mark: &CancelMark) -> Result<bool> {
        self.note("clear_cancel");
        self.inner.clear_cancel(worker, mark).await
    }
    async fn cancel_signals(&self) -> Result<tokio::sync::broadcast::Receiver<CancelSignal>> {
        self.note("cancel_signals");
        self.inner.cancel_signals().await
    }
}

#[async_trait]
impl TaskFlowStore for Counting {
    async fn acquire_task_start(
        &self,
        class: &str,
        limits: &resq_core::TaskLimits,
        worker: &WorkerId,
    ) -> Result<resq_core::TaskAdmission> {
        self.note("acquire_task_start");
        self.inner.acquire_task_start(class, limits, worker).await
    }
    async fn release_task_slot(&self, worker: &WorkerId) -> Result<bool> {
        self.note("release_task_slot");
        self.inner.release_task_slot(worker).await
    }
    async fn task_slots_held(&self, class: &str) -> Result<u64> {
        self.note("task_slots_held");
        self.inner.task_slots_held(class).await
    }
}

#[async_trait]
impl LeaderLock for Counting {
    async fn acquire_leader(&self, name: &str, ttl: Duration) -> Result<bool> {
        self.note("acquire_leader");
        self.inner.acquire_leader(name, ttl).await
    }
    async fn release_leader(&self, name: &str) -> Result<bool> {
        self.note("release_leader");
        self.inner.release_leader(name).await
    }
    async fn leader(&self) -> Result<Option<String>> {
        self.note("leader");
        self.inner.leader().await
    }
}
