//! A backend wrapper that makes a worker's claim and completion calls fail
//! on a fixed schedule, for the engine's error-handling tests. A call fails
//! in one of two ways: refused (an error before it reaches the backend, so
//! nothing is applied) or with its reply lost (the backend applies it, then
//! the caller gets an error, as when a connection drops between a commit
//! and its acknowledgement). Every other call passes straight through,
//! except that [`Faulty::panic_in`] can make `workers`,
//! `delayed_timestamps` or `remove_delayed_by_class` panic, for tests of
//! panics inside the engine, and [`Faulty::stall_stale_workers`] can make
//! `stale_workers` slow, for tests of a busy scheduler.

use async_trait::async_trait;
use resq_core::backend::{
    Backend, CancelMark, CancelSignal, CancelStore, Claimed, Cleaned, DelayedStore, FailedStore, LeaderLock, LockEntry,
    LockStore, Orphan, Outcome, Promotion, QueueStat, QueueStore, QueuedJob, StatsStore, TaskFlowStore, WorkerId,
    WorkerRegistry, WorkingOn,
};
use resq_core::{Error, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What happens to one faulted call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Pass,
    Refuse,
    LoseReply,
    /// `complete_and_claim_batch` records the completions, then its claim
    /// fails (`Ok(Err(_))`); other calls pass.
    ClaimFails,
}

/// Which calls fail: the faulted calls are counted together, and the n-th
/// loses its reply when n is a multiple of `lose_every`, else has its claim
/// fail when n is a multiple of `claim_fails_every`, else is refused when n
/// is a multiple of `refuse_every` (0 = never).
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultPlan {
    /// Applied, then reported as failed.
    pub lose_every: u64,
    /// `complete_and_claim_batch` only: completions recorded, claim failed.
    pub claim_fails_every: u64,
    /// Failed before reaching the backend.
    pub refuse_every: u64,
}

/// Wraps a backend. The faulted calls are `claim`, `complete`,
/// `claim_batch`, `complete_batch`, `complete_and_claim_batch`, and the
/// reads `working_on` and `working_on_many` (which, read-only, fail the same
/// whether refused or with a lost reply).
pub struct Faulty {
    inner: Arc<dyn Backend>,
    plan: FaultPlan,
    armed: AtomicBool,
    calls: AtomicU64,
    lost: AtomicU64,
    refused: AtomicU64,
    claim_failed: AtomicU64,
    panic_in: std::sync::Mutex<Option<&'static str>>,
    /// How long each `stale_workers` call waits before it runs.
    stall: std::sync::Mutex<Option<Duration>>,
    /// How many stalled calls have started.
    stalls: AtomicU64,
    /// The worker or queue whose data `bad_item` makes fail.
    bad_item: std::sync::Mutex<Option<String>>,
}

impl Faulty {
    /// Wraps `inner`, armed.
    pub fn new(inner: Arc<dyn Backend>, plan: FaultPlan) -> Arc<Self> {
        Arc::new(Faulty {
            inner,
            plan,
            armed: AtomicBool::new(true),
            calls: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            claim_failed: AtomicU64::new(0),
            panic_in: std::sync::Mutex::new(None),
            stall: std::sync::Mutex::new(None),
            stalls: AtomicU64::new(0),
            bad_item: std::sync::Mutex::new(None),
        })
    }

    /// Stops injecting faults.
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::SeqCst);
    }

    /// Makes every later call of `call` (`"workers"` or
    /// `"delayed_timestamps"`) panic; `None` stops it.
    pub fn panic_in(&self, call: Option<&'static str>) {
        *self.panic_in.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = call;
    }

    /// Makes every later `stale_workers` call wait `stall` before it runs
    /// (as a slow backend or a huge registry would); `None` stops it.
    pub fn stall_stale_workers(&self, stall: Option<Duration>) {
        *self.stall.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = stall;
    }

    /// How many stalled `stale_workers` calls have started.
    pub fn stalls_started(&self) -> u64 {
        self.stalls.load(Ordering::SeqCst)
    }

    /// Makes `clean_worker` and `working_on` of the worker named `name`, and
    /// `queue_len` of the queue `name`, fail with a permanent error, as one
    /// item's bad data (another client's key of the wrong type) does; `None`
    /// stops it.
    pub fn bad_item(&self, name: Option<&str>) {
        *self.bad_item.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = name.map(str::to_owned);
    }

    fn check_item(&self, name: &str) -> Result<()> {
        let bad = self.bad_item.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if bad.as_deref() == Some(name) {
            return Err(Error::permanent(format!("injected: the data of {name} is bad")));
        }
        Ok(())
    }

    fn maybe_panic(&self, call: &'static str) {
        let armed = *self.panic_in.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if armed == Some(call) {
            panic!("injected panic in {call}");
        }
    }

    /// How many calls were applied with their replies lost.
    pub fn lost_replies(&self) -> u64 {
        self.lost.load(Ordering::SeqCst)
    }

    /// How many calls were refused.
    pub fn refused_calls(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    /// How many rounds recorded their completions and then failed to claim.
    pub fn failed_claims(&self) -> u64 {
        self.claim_failed.load(Ordering::SeqCst)
    }

    fn fate(&self) -> Fate {
        if !self.armed.load(Ordering::SeqCst) {
            return Fate::Pass;
        }
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let every = |k: u64| k > 0 && n.is_multiple_of(k);
        if every(self.plan.lose_every) {
            Fate::LoseReply
        } else if every(self.plan.claim_fails_every) {
            Fate::ClaimFails
        } else if every(self.plan.refuse_every) {
            Fate::Refuse
        } else {
            Fate::Pass
        }
    }

    /// The fate of a call other than `complete_and_claim_batch`, counted.
    fn plain_fate(&self) -> Fate {
        let fate = match self.fate() {
            Fate::ClaimFails => Fate::Pass,
            f => f,
        };
        self.tally(fate);
        fate
    }

    fn tally(&self, fate: Fate) {
        let counter = match fate {
            Fate::Pass => return,
            Fate::Refuse => &self.refused,
            Fate::LoseReply => &self.lost,
            Fate::ClaimFails => &self.claim_failed,
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }

    /// A write: refused (`f` never runs), applied with its reply lost, or passed.
    async fn write<T>(&self, call: &str, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        match self.plain_fate() {
            Fate::Refuse => Err(injected(call, Fate::Refuse)),
            Fate::LoseReply => {
                f.await?;
                Err(injected(call, Fate::LoseReply))
            }
            Fate::Pass | Fate::ClaimFails => f.await,
        }
    }

    /// A read: refused or not.
    async fn read<T>(&self, call: &str, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        match self.plain_fate() {
            Fate::Pass | Fate::ClaimFails => f.await,
            fate => Err(injected(call, fate)),
        }
    }
}

fn injected(call: &str, fate: Fate) -> Error {
    Error::transient(format!("injected fault in {call}: {fate:?}"))
}

#[async_trait]
impl Backend for Faulty {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn remote(&self) -> bool {
        self.inner.remote()
    }
}

#[async_trait]
impl QueueStore for Faulty {
    async fn push(&self, queue: &str, payload: &str) -> Result<()> {
        self.inner.push(queue, payload).await
    }
    async fn push_once(&self, queue: &str, payload: &str, key: &str, value: &str, ttl: Duration) -> Result<bool> {
        self.inner.push_once(queue, payload, key, value, ttl).await
    }
    async fn push_batch(&self, jobs: &[QueuedJob]) -> Result<()> {
        self.inner.push_batch(jobs).await
    }
    async fn claim(&self, worker: &WorkerId, queues: &[String], run_at: &str) -> Result<Option<Claimed>> {
        self.write("claim", self.inner.claim(worker, queues, run_at)).await
    }
    async fn complete(&self, worker: &WorkerId, outcome: Outcome) -> Result<()> {
        self.write("complete", self.inner.complete(worker, outcome)).await
    }
    async fn claim_batch(
        &self,
        workers: &[WorkerId],
        queues: &[String],
        run_at: &str,
    ) -> Result<Vec<(usize, Claimed)>> {
        self.write("claim_batch", self.inner.claim_batch(workers, queues, run_at))
            .await
    }
    async fn complete_batch(&self, done: &[(WorkerId, Outcome)]) -> Result<()> {
        self.write("complete_batch", self.inner.complete_batch(done)).await
    }
    async fn complete_and_claim_batch(
        &self,
        done: &[(WorkerId, Outcome)],
        workers: &[WorkerId],
        queues: &[String],
        run_at: &str,
    ) -> Result<Result<Vec<(usize, Claimed)>>> {
        let fate = self.fate();
        self.tally(fate);
        match fate {
            Fate::Pass => self.inner.complete_and_claim_batch(done, workers, queues, run_at).await,
            Fate::Refuse => Err(injected("complete_and_claim_batch", fate)),
            Fate::LoseReply => {
                // Applied either way (the claim's own result is lost too).
                let _claims = self
                    .inner
                    .complete_and_claim_batch(done, workers, queues, run_at)
                    .await?;
                Err(injected("complete_and_claim_batch", fate))
            }
            Fate::ClaimFails => {
                self.inner.complete_batch(done).await?;
                Ok(Err(injected("complete_and_claim_batch", fate)))
            }
        }
    }

    async fn wait_for_jobs(&self, queues: &[String], timeout: Duration) -> Result<()> {
        self.inner.wait_for_jobs(queues, timeout).await
    }
    async fn queue_len(&self, queue: &str) -> Result<u64> {
        self.check_item(queue)?;
        self.inner.queue_len(queue).await
    }
    async fn queue_range(&self, queue: &str, start: i64, stop: i64) -> Result<Vec<String>> {
        self.inner.queue_range(queue, start, stop).await
    }
    async fn remove_from_queue(&self, queue: &str, payload: &str, count: i64) -> Result<u64> {
        self.inner.remove_from_queue(queue, payload, count).await
    }
    async fn delete_queue(&self, queue: &str) -> Result<bool> {
        self.inner.delete_queue(queue).await
    }
    async fn queues(&self) -> Result<Vec<String>> {
        self.inner.queues().await
    }
    async fn pause_queue(&self, queue: &str) -> Result<bool> {
        self.inner.pause_queue(queue).await
    }
    async fn resume_queue(&self, queue: &str) -> Result<bool> {
        self.inner.resume_queue(queue).await
    }
    async fn queue_stats(&self, queues: &[String]) -> Result<Vec<QueueStat>> {
        self.inner.queue_stats(queues).await
    }
    async fn paused_queues(&self) -> Result<Vec<String>> {
        self.inner.paused_queues().await
    }
    async fn set_queue_limits(&self, queue: &str, limits: resq_core::QueueLimits) -> Result<()> {
        self.inner.set_queue_limits(queue, limits).await
    }
    async fn queue_limits(&self) -> Result<Vec<(String, resq_core::QueueLimits)>> {
        self.inner.queue_limits().await
    }
    async fn push_front(&self, queue: &str, payload: &str) -> Result<()> {
        self.inner.push_front(queue, payload).await
    }
    async fn remove_by_class(&self, queue: &str, class: &str) -> Result<u64> {
        self.inner.remove_by_class(queue, class).await
    }
}

#[async_trait]
impl DelayedStore for Faulty {
    async fn schedule(&self, timestamp: i64, payload: &str) -> Result<bool> {
        self.inner.schedule(timestamp, payload).await
    }
    async fn due_timestamps(&self, up_to: i64, limit: usize) -> Result<Vec<i64>> {
        self.inner.due_timestamps(up_to, limit).await
    }
    async fn delayed_timestamps(&self) -> Result<Vec<i64>> {
        self.maybe_panic("delayed_timestamps");
        self.inner.delayed_timestamps().await
    }
    async fn delayed_at(&self, timestamp: i64) -> Result<Vec<String>> {
        self.inner.delayed_at(timestamp).await
    }
    async fn timestamps_of(&self, payload: &str) -> Result<Vec<i64>> {
        self.inner.timestamps_of(payload).await
    }
    async fn remove_delayed(&self, payload: &str) -> Result<Vec<i64>> {
        self.inner.remove_delayed(payload).await
    }
    async fn remove_delayed_by_class(&self, queue: &str, class: &str) -> Result<u64> {
        self.maybe_panic("remove_delayed_by_class");
        self.inner.remove_delayed_by_class(queue, class).await
    }
    async fn promote_delayed(&self, timestamp: i64, payload: &str, queue: &str) -> Result<bool> {
        self.inner.promote_delayed(timestamp, payload, queue).await
    }
    async fn remove_delayed_at(&self, timestamp: i64, payload: &str) -> Result<bool> {
        self.inner.remove_delayed_at(timestamp, payload).await
    }
    async fn delayed_bucket_sizes(&self) -> Result<Vec<(i64, u64)>> {
        self.inner.delayed_bucket_sizes().await
    }
    async fn delayed_count(&self) -> Result<u64> {
        self.inner.delayed_count().await
    }
    async fn promote_due(&self, up_to: i64, limit: usize) -> Result<Vec<Promotion>> {
        self.inner.promote_due(up_to, limit).await
    }
    fn delayed_precision(&self) -> Duration {
        self.inner.delayed_precision()
    }
    async fn schedule_ms(&self, due_ms: i64, payload: &str) -> Result<bool> {
        self.inner.schedule_ms(due_ms, payload).await
    }
    async fn promote_due_ms(&self, now_ms: i64, limit: usize) -> Result<Vec<Promotion>> {
        self.inner.promote_due_ms(now_ms, limit).await
    }
    async fn next_due_ms(&self) -> Result<Option<i64>> {
        self.inner.next_due_ms().await
    }
    async fn schedule_watch(&self) -> Result<Option<tokio::sync::watch::Receiver<u64>>> {
        self.inner.schedule_watch().await
    }
}

#[async_trait]
impl LockStore for Faulty {
    async fn acquire_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<bool> {
        self.inner.acquire_lock(key, value, ttl).await
    }
    async fn renew_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<bool> {
        self.inner.renew_lock(key, value, ttl).await
    }
    async fn release_lock(&self, key: &str, value: &str) -> Result<bool> {
        self.inner.release_lock(key, value).await
    }
    async fn locks(&self) -> Result<Vec<(String, String)>> {
        self.inner.locks().await
    }
    async fn delete_lock(&self, key: &str) -> Result<u64> {
        self.inner.delete_lock(key).await
    }
    async fn get_lock(&self, key: &str) -> Result<Option<LockEntry>> {
        self.inner.get_lock(key).await
    }
    async fn set_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        self.inner.set_lock(key, value, ttl).await
    }
    async fn incr_lock(&self, key: &str, by: i64, ttl: Duration) -> Result<i64> {
        self.inner.incr_lock(key, by, ttl).await
    }
}

#[async_trait]
impl FailedStore for Faulty {
    async fn push_failed(&self, entry: &str) -> Result<()> {
        self.inner.push_failed(entry).await
    }
    async fn failed_count(&self) -> Result<u64> {
        self.inner.failed_count().await
    }
    async fn failed_range(&self, start: i64, stop: i64) -> Result<Vec<String>> {
        self.inner.failed_range(start, stop).await
    }
    async fn remove_failed(&self, entry: &str) -> Result<u64> {
        self.inner.remove_failed(entry).await
    }
    async fn remove_failed_at(&self, index: u64, entry: &str) -> Result<bool> {
        self.inner.remove_failed_at(index, entry).await
    }
    async fn retry_failed_at(&self, index: u64, entry: &str, queue: &str, payload: &str) -> Result<bool> {
        self.inner.retry_failed_at(index, entry, queue, payload).await
    }
    async fn retry_failed(&self, entry: &str, queue: &str, payload: &str) -> Result<bool> {
        self.inner.retry_failed(entry, queue, payload).await
    }
}

#[async_trait]
impl WorkerRegistry for Faulty {
    async fn register_worker(&self, worker: &WorkerId, now_ms: i64) -> Result<()> {
        self.inner.register_worker(worker, now_ms).await
    }
    async fn ping_worker(&self, worker: &WorkerId, now_ms: i64) -> Result<()> {
        self.inner.ping_worker(worker, now_ms).await
    }
    async fn register_workers(&self, workers: &[WorkerId], now_ms: i64) -> Result<()> {
        self.inner.register_workers(workers, now_ms).await
    }
    async fn ping_workers(&self, workers: &[WorkerId], now_ms: i64) -> Result<()> {
        self.inner.ping_workers(workers, now_ms).await
    }
    async fn workers(&self) -> Result<Vec<WorkerId>> {
        self.maybe_panic("workers");
        self.inner.workers().await
    }
    async fn worker_started(&self, worker: &WorkerId) -> Result<Option<i64>> {
        self.inner.worker_started(worker).await
    }
    async fn working_on(&self, worker: &WorkerId) -> Result<Option<WorkingOn>> {
        self.check_item(&worker.name)?;
        self.read("working_on", self.inner.working_on(worker)).await
    }
    async fn working_on_many(&self, workers: &[WorkerId]) -> Result<Vec<Option<WorkingOn>>> {
        self.read("working_on_many", self.inner.working_on_many(workers)).await
    }
    async fn worker_times(&self, workers: &[WorkerId]) -> Result<Vec<resq_core::backend::WorkerTimes>> {
        self.inner.worker_times(workers).await
    }
    async fn stale_workers(&self, cutoff_ms: i64) -> Result<Vec<WorkerId>> {
        let stall = *self.stall.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(stall) = stall {
            self.stalls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(stall).await;
        }
        self.inner.stale_workers(cutoff_ms).await
    }
    async fn clean_worker(&self, worker: &WorkerId, orphan: Orphan) -> Result<Option<Cleaned>> {
        self.check_item(&worker.name)?;
        self.inner.clean_worker(worker, orphan).await
    }
}

#[async_trait]
impl StatsStore for Faulty {
    async fn incr_stat(&self, key: &str, by: i64) -> Result<i64> {
        self.inner.incr_stat(key, by).await
    }
    async fn stat(&self, key: &str) -> Result<i64> {
        self.inner.stat(key).await
    }
    async fn stats(&self) -> Result<Vec<(String, i64)>> {
        self.inner.stats().await
    }
}

#[async_trait]
impl CancelStore for Faulty {
    async fn request_cancel(&self, worker: &WorkerId, mark: &CancelMark) -> Result<()> {
        self.inner.request_cancel(worker, mark).await
    }
    async fn cancel_marks(&self, workers: &[WorkerId]) -> Result<Vec<Option<CancelMark>>> {
        self.inner.cancel_marks(workers).await
    }
    async fn clear_cancel(&self, worker: &WorkerId, mark: &CancelMark) -> Result<bool> {
        self.inner.clear_cancel(worker, mark).await
    }
    async fn cancel_signals(&self) -> Result<tokio::sync::broadcast::Receiver<CancelSignal>> {
        self.inner.cancel_signals().await
    }
}

#[async_trait]
impl TaskFlowStore for Faulty {
    async fn acquire_task_start(
        &self,
        class: &str,
        limits: &resq_core::TaskLimits,
        worker: &WorkerId,
    ) -> Result<resq_core::TaskAdmission> {
        self.inner.acquire_task_start(class, limits, worker).await
    }
    async fn release_task_slot(&self, worker: &WorkerId) -> Result<bool> {
        self.inner.release_task_slot(worker).await
    }
    async fn task_slots_held(&self, class: &str) -> Result<u64> {
        self.inner.task_slots_held(class).await
    }
}

#[async_trait]
impl LeaderLock for Faulty {
    async fn acquire_leader(&self, name: &str, ttl: Duration) -> Result<bool> {
        self.inner.acquire_leader(name, ttl).await
    }
    async fn release_leader(&self, name: &str) -> Result<bool> {
        self.inner.release_leader(name).await
    }
    async fn leader(&self) -> Result<Option<String>> {
        self.inner.leader().await
    }
}
