//! Checks the checker: a wrapper around the memory backend with one
//! deliberate bug at a time must be caught by the model and by the group
//! test that pins that behaviour.

use async_trait::async_trait;
use resq_conformance::fixtures::*;
use resq_conformance::model::{ModelRun, ModelVerdict};
use resq_core::{CancelMark, CancelSignal, CancelStore, LockEntry, Result, TaskFlowStore};
use std::panic::{catch_unwind, AssertUnwindSafe};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bug {
    ClaimReversePriority,
    SuccessNoWorkerCount,
    FailureNoEntry,
    RangeStopExclusive,
    LremNegativeFromHead,
    DeleteQueueKeepsName,
    ScheduleAllowsDuplicates,
    RemoveDelayedKeepsIndex,
    PromoteIgnoresLimit,
    PromoteToHead,
    RetryToHead,
    RemoveFailedLast,
    CleanRequeueToTail,
    CleanKeepsStats,
    IncrReturnsOld,
    LeaderStolen,
    ReleaseLockAnyValue,
    StaleInclusive,
    QueuesUnsorted,
    DueIgnoresLimit,
    StartedIsPing,
    CleanFailNoCount,
    PayloadReencoded,
    PromoteFailedLost,
    RenewAnyValue,
    RetryMissingPushes,
    WorkingOnNoRunAt,
    TimestampsOfUnsorted,
    DelayedAtReversed,
    LocksIncludeLeader,
    CleanIdleFailCounts,
    ClaimNotRecorded,
    DeleteLockAlwaysOne,
    ExpiredLockListed,
    RacyClaim,
    PushOnceIgnoresLock,
    IncrLockKeepsTtl,
    RegisterWorkersSkipsFirst,
    PingWorkersFirstOnly,
    WorkingOnManySorted,
}

struct Mutant {
    inner: resq_memory::MemoryBackend,
    bug: Bug,
}

fn factory(bug: Bug) -> impl Fn() -> std::future::Ready<std::result::Result<Arc<dyn Backend>, String>> {
    move || {
        std::future::ready(Ok(Arc::new(Mutant {
            inner: resq_memory::MemoryBackend::new(),
            bug,
        }) as Arc<dyn Backend>))
    }
}

#[async_trait]
impl QueueStore for Mutant {
    async fn push(&self, queue: &str, payload: &str) -> Result<()> {
        if self.bug == Bug::PayloadReencoded {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(payload) {
                return self.inner.push(queue, &v.to_string()).await;
            }
        }
        self.inner.push(queue, payload).await
    }
    async fn push_once(&self, queue: &str, payload: &str, key: &str, value: &str, ttl: Duration) -> Result<bool> {
        if self.bug == Bug::PushOnceIgnoresLock {
            self.inner.acquire_lock(key, value, ttl).await?;
            self.inner.push(queue, payload).await?;
            return Ok(true);
        }
        self.inner.push_once(queue, payload, key, value, ttl).await
    }
    async fn push_batch(&self, jobs: &[QueuedJob]) -> Result<()> {
        self.inner.push_batch(jobs).await
    }
    async fn claim(&self, worker: &WorkerId, queues: &[String], run_at: &str) -> Result<Option<Claimed>> {
        if self.bug == Bug::RacyClaim {
            // Reads the head, then pops in a second step: two workers can
            // both report the same job.
            for q in queues {
                let Some(seen) = self.inner.queue_range(q, 0, 0).await?.into_iter().next() else {
                    continue;
                };
                // A real pause between the read and the pop (not just a
                // yield), so other workers read the same head whatever the
                // runtime's flavour or the machine's load.
                tokio::time::sleep(Duration::from_millis(1)).await;
                let c = self.inner.claim(worker, std::slice::from_ref(q), run_at).await?;
                return Ok(c.map(|c| Claimed {
                    queue: c.queue,
                    payload: seen,
                    enqueued_at_ms: None,
                }));
            }
            return Ok(None);
        }
        if self.bug == Bug::ClaimReversePriority {
            let rev: Vec<String> = queues.iter().rev().cloned().collect();
            return self.inner.claim(worker, &rev, run_at).await;
        }
        let c = self.inner.claim(worker, queues, run_at).await?;
        if self.bug == Bug::ClaimNotRecorded && c.is_some() {
            self.inner.complete(worker, Outcome::Discard).await?;
        }
        Ok(c)
    }
    async fn complete(&self, worker: &WorkerId, outcome: Outcome) -> Result<()> {
        match (&outcome, self.bug) {
            (Outcome::Success, Bug::SuccessNoWorkerCount) => {
                self.inner.complete(worker, Outcome::Discard).await?;
                self.inner.incr_stat("processed", 1).await.map(|_| ())
            }
            (Outcome::Failure { .. }, Bug::FailureNoEntry) => {
                self.inner.complete(worker, Outcome::Discard).await?;
                self.inner.incr_stat("failed", 1).await?;
                self.inner
                    .incr_stat(&format!("failed:{}", worker.name), 1)
                    .await
                    .map(|_| ())
            }
            _ => self.inner.complete(worker, outcome).await,
        }
    }
    async fn wait_for_jobs(&self, queues: &[String], timeout: Duration) -> Result<()> {
        self.inner.wait_for_jobs(queues, timeout).await
    }
    async fn queue_len(&self, queue: &str) -> Result<u64> {
        self.inner.queue_len(queue).await
    }
    async fn queue_range(&self, queue: &str, start: i64, stop: i64) -> Result<Vec<String>> {
        let mut v = self.inner.queue_range(queue, start, stop).await?;
        if self.bug == Bug::RangeStopExclusive && stop != -1 && !v.is_empty() {
            v.pop();
        }
        Ok(v)
    }
    async fn remove_from_queue(&self, queue: &str, payload: &str, count: i64) -> Result<u64> {
        if self.bug == Bug::LremNegativeFromHead && count < 0 {
            return self.inner.remove_from_queue(queue, payload, -count).await;
        }
        self.inner.remove_from_queue(queue, payload, count).await
    }
    async fn delete_queue(&self, queue: &str) -> Result<bool> {
        if self.bug == Bug::DeleteQueueKeepsName {
            let had = self.inner.queue_len(queue).await? > 0;
            let all = self.inner.queue_range(queue, 0, -1).await?;
            for p in all {
                self.inner.remove_from_queue(queue, &p, 0).await?;
            }
            return Ok(had);
        }
        self.inner.delete_queue(queue).await
    }
    async fn push_front(&self, queue: &str, payload: &str) -> Result<()> {
        self.inner.push_front(queue, payload).await
    }
    async fn pause_queue(&self, queue: &str) -> Result<bool> {
        self.inner.pause_queue(queue).await
    }
    async fn resume_queue(&self, queue: &str) -> Result<bool> {
        self.inner.resume_queue(queue).await
    }
    async fn queue_stats(&self, queues: &[String]) -> Result<Vec<resq_core::QueueStat>> {
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
    async fn queues(&self) -> Result<Vec<String>> {
        let mut v = self.inner.queues().await?;
        if self.bug == Bug::QueuesUnsorted {
            v.reverse();
        }
        Ok(v)
    }
}

// The millisecond methods (`schedule_ms`, `promote_due_ms`, `next_due_ms`,
// `schedule_watch`, `delayed_precision`) are deliberately not forwarded: a
// mutant is a bucket store whose bugs sit in the bucket methods, and the
// trait's defaults route those calls through them, so the engine-level
// groups still meet each bug.
#[async_trait]
impl DelayedStore for Mutant {
    async fn schedule(&self, timestamp: i64, payload: &str) -> Result<bool> {
        if self.bug == Bug::ScheduleAllowsDuplicates
            && self.inner.delayed_at(timestamp).await?.iter().any(|p| p == payload)
        {
            return Ok(true);
        }
        self.inner.schedule(timestamp, payload).await
    }
    async fn due_timestamps(&self, up_to: i64, limit: usize) -> Result<Vec<i64>> {
        if self.bug == Bug::DueIgnoresLimit {
            return self.inner.due_timestamps(up_to, usize::MAX).await;
        }
        self.inner.due_timestamps(up_to, limit).await
    }
    async fn delayed_timestamps(&self) -> Result<Vec<i64>> {
        self.inner.delayed_timestamps().await
    }
    async fn delayed_at(&self, timestamp: i64) -> Result<Vec<String>> {
        let mut v = self.inner.delayed_at(timestamp).await?;
        if self.bug == Bug::DelayedAtReversed {
            v.reverse();
        }
        Ok(v)
    }
    async fn timestamps_of(&self, payload: &str) -> Result<Vec<i64>> {
        let mut v = self.inner.timestamps_of(payload).await?;
        if self.bug == Bug::TimestampsOfUnsorted {
            v.reverse();
        }
        Ok(v)
    }
    async fn remove_delayed(&self, payload: &str) -> Result<Vec<i64>> {
        let r = self.inner.remove_delayed(payload).await?;
        if self.bug == Bug::RemoveDelayedKeepsIndex && !r.is_empty() {
            // Pretend the index still has it: put one copy back.
            self.inner.schedule(r[0], payload).await?;
        }
        Ok(r)
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
        let limit = if self.bug == Bug::PromoteIgnoresLimit {
            limit + 1
        } else {
            limit
        };
        let moved = self.inner.promote_due(up_to, limit).await?;
        if self.bug == Bug::PromoteToHead {
            for m in &moved {
                if let Promotion::Moved { queue, payload, .. } = m {
                    let rest = self.inner.queue_range(queue, 0, -1).await?;
                    if rest.len() > 1 {
                        self.inner.delete_queue(queue).await?;
                        self.inner.push(queue, payload).await?;
                        for p in &rest[..rest.len() - 1] {
                            self.inner.push(queue, p).await?;
                        }
                    }
                }
            }
        }
        if self.bug == Bug::PromoteFailedLost {
            for m in &moved {
                if let Promotion::Failed { .. } = m {
                    let last = self.inner.failed_range(-1, -1).await?;
                    self.inner.remove_failed(&last[0]).await?;
                }
            }
        }
        Ok(moved)
    }
}

#[async_trait]
impl LockStore for Mutant {
    async fn acquire_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<bool> {
        self.inner.acquire_lock(key, value, ttl).await
    }
    async fn renew_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<bool> {
        if self.bug == Bug::RenewAnyValue {
            if let Some((_, holder)) = self.inner.locks().await?.into_iter().find(|(k, _)| k == key) {
                return self.inner.renew_lock(key, &holder, ttl).await;
            }
        }
        self.inner.renew_lock(key, value, ttl).await
    }
    async fn release_lock(&self, key: &str, value: &str) -> Result<bool> {
        if self.bug == Bug::ReleaseLockAnyValue {
            return Ok(self.inner.delete_lock(key).await? == 1);
        }
        self.inner.release_lock(key, value).await
    }
    async fn locks(&self) -> Result<Vec<(String, String)>> {
        let mut v = self.inner.locks().await?;
        if self.bug == Bug::LocksIncludeLeader {
            if let Some(l) = self.inner.leader().await? {
                v.push(("zz_leader".into(), l));
            }
        }
        if self.bug == Bug::ExpiredLockListed {
            v.push(("lock:expiring".into(), "4".into()));
            v.sort();
        }
        Ok(v)
    }
    async fn delete_lock(&self, key: &str) -> Result<u64> {
        let n = self.inner.delete_lock(key).await?;
        Ok(if self.bug == Bug::DeleteLockAlwaysOne { 1 } else { n })
    }
    async fn get_lock(&self, key: &str) -> Result<Option<LockEntry>> {
        self.inner.get_lock(key).await
    }
    async fn set_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        self.inner.set_lock(key, value, ttl).await
    }
    async fn incr_lock(&self, key: &str, by: i64, ttl: Duration) -> Result<i64> {
        if self.bug == Bug::IncrLockKeepsTtl {
            let n = self.inner.incr_lock(key, by, Duration::from_secs(3600)).await?;
            return Ok(n);
        }
        self.inner.incr_lock(key, by, ttl).await
    }
}

#[async_trait]
impl FailedStore for Mutant {
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
        if self.bug == Bug::RemoveFailedLast {
            let all = self.inner.failed_range(0, -1).await?;
            let n = all.iter().filter(|e| *e == entry).count();
            if n > 1 {
                // Remove the last copy: rebuild the list without it.
                let last = all.iter().rposition(|e| e == entry).unwrap_or(0);
                while self.inner.failed_count().await? > 0 {
                    let first = self.inner.failed_range(0, 0).await?;
                    self.inner.remove_failed(&first[0]).await?;
                }
                for (i, e) in all.iter().enumerate() {
                    if i != last {
                        self.inner.push_failed(e).await?;
                    }
                }
                return Ok(1);
            }
        }
        self.inner.remove_failed(entry).await
    }
    async fn remove_failed_at(&self, index: u64, entry: &str) -> Result<bool> {
        self.inner.remove_failed_at(index, entry).await
    }
    async fn retry_failed_at(&self, index: u64, entry: &str, queue: &str, payload: &str) -> Result<bool> {
        self.inner.retry_failed_at(index, entry, queue, payload).await
    }
    async fn retry_failed(&self, entry: &str, queue: &str, payload: &str) -> Result<bool> {
        let ok = self.inner.retry_failed(entry, queue, payload).await?;
        if !ok && self.bug == Bug::RetryMissingPushes {
            self.inner.push(queue, payload).await?;
        }
        if ok && self.bug == Bug::RetryToHead {
            let all = self.inner.queue_range(queue, 0, -1).await?;
            if all.len() > 1 {
                self.inner.delete_queue(queue).await?;
                self.inner.push(queue, payload).await?;
                for p in &all[..all.len() - 1] {
                    self.inner.push(queue, p).await?;
                }
            }
        }
        Ok(ok)
    }
}

#[async_trait]
impl WorkerRegistry for Mutant {
    async fn register_worker(&self, worker: &WorkerId, now_ms: i64) -> Result<()> {
        self.inner.register_worker(worker, now_ms).await
    }
    async fn ping_worker(&self, worker: &WorkerId, now_ms: i64) -> Result<()> {
        self.inner.ping_worker(worker, now_ms).await?;
        if self.bug == Bug::StartedIsPing {
            // Re-register to move the start time along with the ping.
            self.inner.register_worker(worker, now_ms).await?;
        }
        Ok(())
    }
    async fn register_workers(&self, workers: &[WorkerId], now_ms: i64) -> Result<()> {
        let given = if self.bug == Bug::RegisterWorkersSkipsFirst && !workers.is_empty() {
            &workers[1..]
        } else {
            workers
        };
        self.inner.register_workers(given, now_ms).await
    }
    async fn ping_workers(&self, workers: &[WorkerId], now_ms: i64) -> Result<()> {
        let given = if self.bug == Bug::PingWorkersFirstOnly {
            &workers[..workers.len().min(1)]
        } else {
            workers
        };
        self.inner.ping_workers(given, now_ms).await
    }
    async fn working_on_many(&self, workers: &[WorkerId]) -> Result<Vec<Option<WorkingOn>>> {
        let mut given = workers.to_vec();
        if self.bug == Bug::WorkingOnManySorted {
            given.sort();
        }
        self.inner.working_on_many(&given).await
    }
    async fn workers(&self) -> Result<Vec<WorkerId>> {
        self.inner.workers().await
    }
    async fn worker_started(&self, worker: &WorkerId) -> Result<Option<i64>> {
        self.inner.worker_started(worker).await
    }
    async fn working_on(&self, worker: &WorkerId) -> Result<Option<WorkingOn>> {
        let mut w = self.inner.working_on(worker).await?;
        if self.bug == Bug::WorkingOnNoRunAt {
            if let Some(w) = w.as_mut() {
                w.run_at = String::new();
            }
        }
        Ok(w)
    }
    async fn worker_times(&self, workers: &[WorkerId]) -> Result<Vec<resq_core::backend::WorkerTimes>> {
        self.inner.worker_times(workers).await
    }
    async fn stale_workers(&self, cutoff_ms: i64) -> Result<Vec<WorkerId>> {
        let c = if self.bug == Bug::StaleInclusive {
            cutoff_ms + 1
        } else {
            cutoff_ms
        };
        self.inner.stale_workers(c).await
    }
    async fn clean_worker(&self, worker: &WorkerId, orphan: Orphan) -> Result<Option<Cleaned>> {
        let keep: Vec<(String, i64)> = if self.bug == Bug::CleanKeepsStats {
            let mut v = Vec::new();
            for k in [format!("processed:{}", worker.name), format!("failed:{}", worker.name)] {
                let n = self.inner.stat(&k).await?;
                if n != 0 {
                    v.push((k, n));
                }
            }
            v
        } else {
            Vec::new()
        };
        let requeue_tail = self.bug == Bug::CleanRequeueToTail && orphan == Orphan::Requeue;
        let fail = matches!(orphan, Orphan::Fail { .. });
        let r = self.inner.clean_worker(worker, orphan).await?;
        for (k, n) in keep {
            self.inner.incr_stat(&k, n).await?;
        }
        if let Some(Some(on)) = r.as_ref().map(|c| c.working_on.as_ref()) {
            if requeue_tail {
                self.inner.remove_from_queue(&on.queue, &on.payload, 1).await?;
                self.inner.push(&on.queue, &on.payload).await?;
            }
            if fail && self.bug == Bug::CleanFailNoCount {
                self.inner.incr_stat("failed", -1).await?;
            }
        } else if r.is_some() && fail && self.bug == Bug::CleanIdleFailCounts {
            self.inner.incr_stat("failed", 1).await?;
        }
        Ok(r)
    }
}

#[async_trait]
impl StatsStore for Mutant {
    async fn incr_stat(&self, key: &str, by: i64) -> Result<i64> {
        let v = self.inner.incr_stat(key, by).await?;
        Ok(if self.bug == Bug::IncrReturnsOld { v - by } else { v })
    }
    async fn stat(&self, key: &str) -> Result<i64> {
        self.inner.stat(key).await
    }
    async fn stats(&self) -> Result<Vec<(String, i64)>> {
        self.inner.stats().await
    }
}

#[async_trait]
impl CancelStore for Mutant {
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
impl TaskFlowStore for Mutant {
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
impl LeaderLock for Mutant {
    async fn acquire_leader(&self, name: &str, ttl: Duration) -> Result<bool> {
        if self.bug == Bug::LeaderStolen {
            if let Some(holder) = self.inner.leader().await? {
                self.inner.release_leader(&holder).await?;
            }
        }
        self.inner.acquire_leader(name, ttl).await
    }
    async fn release_leader(&self, name: &str) -> Result<bool> {
        self.inner.release_leader(name).await
    }
    async fn leader(&self) -> Result<Option<String>> {
        self.inner.leader().await
    }
}

#[async_trait]
impl Backend for Mutant {
    fn kind(&self) -> &'static str {
        "mutant"
    }
}

fn panics(f: impl FnOnce()) -> bool {
    catch_unwind(AssertUnwindSafe(f)).is_err()
}

/// A fixed-seed model run, so that whether it catches a mutant is reproducible.
fn model_catches(bug: Bug) -> bool {
    let run = ModelRun {
        cases: 1024,
        seed: Some([7; 32]),
        ..ModelRun::default()
    };
    matches!(run.check("mutant::model", factory(bug)), ModelVerdict::Failed(_))
}

/// `mutant!(name, Bug, group::test)`: the bug must fail that group test and
/// the model; `mutant!(concurrent …)`: a race, which only the group test sees.
macro_rules! mutant {
    ($name:ident, $bug:ident, $group:ident :: $test:ident) => {
        #[test]
        fn $name() {
            let bug = Bug::$bug;
            let by_test =
                panics(|| resq_conformance::run_backend_test("mutant", factory(bug), resq_conformance::$group::$test));
            assert!(
                by_test,
                "{bug:?} not caught by {}::{}",
                stringify!($group),
                stringify!($test)
            );
            assert!(model_catches(bug), "{bug:?} not caught by the model");
        }
    };
    (concurrent $name:ident, $bug:ident, $group:ident :: $test:ident) => {
        #[test]
        fn $name() {
            let bug = Bug::$bug;
            let by_test =
                panics(|| resq_conformance::run_backend_test("mutant", factory(bug), resq_conformance::$group::$test));
            assert!(
                by_test,
                "{bug:?} not caught by {}::{}",
                stringify!($group),
                stringify!($test)
            );
        }
    };
}

mutant!(m01, ClaimReversePriority, queue::priority_order_across_queues);
mutant!(m02, SuccessNoWorkerCount, queue::complete_success_counts_processed);
mutant!(m03, FailureNoEntry, queue::complete_failure_counts_and_appends_entry);
mutant!(m04, RangeStopExclusive, queue::queue_len_and_range_lrange_semantics);
mutant!(m05, LremNegativeFromHead, queue::remove_from_queue_lrem_count_semantics);
mutant!(m06, DeleteQueueKeepsName, queue::delete_queue_removes_jobs_and_name);
mutant!(
    m07,
    ScheduleAllowsDuplicates,
    delayed::schedule_duplicate_same_bucket_rejected
);
mutant!(
    m08,
    RemoveDelayedKeepsIndex,
    delayed::remove_delayed_returns_buckets_and_cleans
);
mutant!(m09, PromoteIgnoresLimit, delayed::promote_due_respects_limit);
mutant!(m10, PromoteToHead, delayed::promote_due_moves_only_due_items_in_order);
mutant!(m11, RetryToHead, failed::retry_failed_moves_payload_to_queue_atomically);
mutant!(m12, RemoveFailedLast, failed::remove_failed_by_exact_bytes_first_only);
mutant!(m13, CleanRequeueToTail, registry::clean_busy_worker_requeues_to_head);
mutant!(m14, CleanKeepsStats, stats::per_worker_counters_removed_on_clean);
mutant!(m15, IncrReturnsOld, stats::incr_and_read);
mutant!(m16, LeaderStolen, leader::one_of_two_becomes_leader);
mutant!(m17, ReleaseLockAnyValue, lock::release_only_by_owner);
mutant!(m18, StaleInclusive, registry::stale_workers_uses_ping_age);
mutant!(m19, QueuesUnsorted, queue::queues_lists_sorted_names);
mutant!(m20, DueIgnoresLimit, delayed::due_timestamps_respects_up_to_and_limit);
mutant!(m21, StartedIsPing, registry::register_lists_and_pings);
mutant!(
    m22,
    CleanFailNoCount,
    registry::clean_busy_worker_fail_writes_entry_and_counts_failed
);
mutant!(m23, PayloadReencoded, queue::payload_bytes_are_preserved);
mutant!(
    m24,
    PromoteFailedLost,
    delayed::undecodable_delayed_item_goes_to_failed_with_reason
);
mutant!(m25, RenewAnyValue, lock::renew_only_by_owner);
mutant!(
    m26,
    RetryMissingPushes,
    failed::retry_failed_on_missing_entry_changes_nothing
);
mutant!(m27, WorkingOnNoRunAt, queue::claim_records_working_on);
mutant!(
    m28,
    TimestampsOfUnsorted,
    delayed::same_payload_different_buckets_allowed
);
mutant!(m29, DelayedAtReversed, delayed::schedule_and_inspect);
mutant!(m30, LocksIncludeLeader, lock::locks_lists_live_locks_sorted_not_leader);
mutant!(m31, CleanIdleFailCounts, registry::clean_unknown_worker_returns_none);
mutant!(m32, ClaimNotRecorded, queue::claim_records_working_on);
mutant!(m33, DeleteLockAlwaysOne, lock::delete_lock_counts);
mutant!(m34, ExpiredLockListed, lock::locks_lists_live_locks_sorted_not_leader);
mutant!(concurrent m35, RacyClaim, queue::concurrent_claims_never_duplicate);
// The model does not cover push_once and incr_lock: only their tests must catch these.
mutant!(concurrent m36, PushOnceIgnoresLock, lock::push_once_pushes_exactly_once_per_key);
mutant!(concurrent m37, IncrLockKeepsTtl, lock::incr_lock_counts_and_sets_ttl);
// The model does not cover the many-worker registry calls either.
mutant!(concurrent m38, RegisterWorkersSkipsFirst, registry::register_workers_registers_each);
mutant!(concurrent m39, PingWorkersFirstOnly, registry::ping_workers_pings_each);
mutant!(concurrent m40, WorkingOnManySorted, registry::working_on_many_answers_in_order);
