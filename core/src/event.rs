//! Observable events of workers, pools and schedulers.
//!
//! Every event is also logged through `tracing` (target `resq::worker` or
//! `resq::scheduler`). To consume them as a stream, subscribe to the
//! broadcast channel of a [`crate::Worker`], [`crate::WorkerPool`] or
//! [`crate::Scheduler`]; a slow subscriber skips events rather than slowing
//! the worker (`RecvError::Lagged`).

use crate::backend::{Cleaned, WorkerId};
use crate::job::Job;
use crate::pool::ScaleAction;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// What became of a job that a worker took, as a [`JobObserver`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobOutcome {
    /// The job ran to success.
    Success,
    /// The job failed (and went to the failed list).
    Failure,
    /// The job failed and a plugin (Retry) put it back to run again: the
    /// worker reports it as a `success` event after a `re_enqueue` one.
    Retried,
    /// A plugin's `before_perform` vetoed the job: dropped unrun.
    Skipped,
    /// A cancel request stopped the job while it ran: its future was
    /// dropped; not a failure, and not retried.
    Cancelled,
    /// The job's task was at its rate limit or concurrency cap
    /// ([`crate::TaskDef::rate_limit`], [`crate::TaskDef::concurrency`]):
    /// put back on the delayed schedule unrun, to try again when the limit
    /// frees. Not a failure, and not counted as processed.
    Throttled,
}

impl JobOutcome {
    /// Its name: `success`, `failure`, `retried`, `skipped`, `cancelled`
    /// or `throttled`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Success => "success",
            JobOutcome::Failure => "failure",
            JobOutcome::Retried => "retried",
            JobOutcome::Skipped => "skipped",
            JobOutcome::Cancelled => "cancelled",
            JobOutcome::Throttled => "throttled",
        }
    }
}

/// The end of one job, for [`JobObserver::job_finished`].
#[derive(Clone, Copy, Debug)]
pub struct JobEnd<'a> {
    /// The worker, or the slot (`<worker>.<n>`) of a multi-slot worker,
    /// that ran it.
    pub worker: &'a str,
    /// The queue it came from.
    pub queue: &'a str,
    /// Its class; empty when the payload does not decode.
    pub class: &'a str,
    /// What became of it.
    pub outcome: JobOutcome,
    /// How long it ran, from the claim to the end of its last hook.
    pub duration: Duration,
    /// Whether [`JobObserver::job_started`] was called for it (not for a
    /// payload that does not decode, nor for a class without a task).
    pub started: bool,
}

/// A synchronous observer of workers and their jobs, set in
/// [`WorkerConfig::observer`](crate::WorkerConfig::observer): the cheap
/// alternative to subscribing to events, for metrics.
///
/// The worker calls it inline, on the job's own task, with borrowed data:
/// no event is built, cloned or queued. Implementations must return at once
/// (update counters; never block, never await, never call a backend).
pub trait JobObserver: Send + Sync + std::fmt::Debug + 'static {
    /// A worker registered with `slots` job slots (its `concurrency`).
    fn worker_started(&self, _worker: &str, _slots: usize) {}

    /// A worker stopped and unregistered.
    fn worker_stopped(&self, _worker: &str, _slots: usize) {}

    /// `worker` (a multi-slot worker's slot, `<worker>.<n>`) starts a job
    /// of `queue` and `class` (as the `job` event); `enqueued_at_ms` is its
    /// enqueue time when the backend knows it.
    fn job_started(&self, _worker: &str, _queue: &str, _class: &str, _enqueued_at_ms: Option<i64>) {}

    /// A job ended.
    fn job_finished(&self, _end: &JobEnd<'_>) {}
}

/// The capacity of event channels.
pub(crate) const EVENT_CAPACITY: usize = 1024;

/// What a [`crate::Queue`] client did that others may want to observe,
/// from [`crate::Queue::subscribe`] (an admin's [`crate::Queue`] too).
#[derive(Clone, Debug)]
pub enum QueueEvent {
    /// A queued or delayed job was cancelled: removed unrun, and counted
    /// in [`crate::worker::CANCELLED_STAT`]. One event per job. (A running
    /// job's cancel is the worker's `cancelled` event.)
    Cancelled {
        /// The job's class.
        class: String,
        /// Where it was: [`crate::JobPlace::Queued`] with its queue, or
        /// [`crate::JobPlace::Delayed`] with its bucket (epoch ms).
        place: crate::cancel::JobPlace,
        /// Its id, when the removal knew its bytes (a cancel by id, and
        /// delayed jobs); `None` for queued jobs removed by class where
        /// they are stored ([`crate::QueueStore::remove_by_class`]), whose
        /// bytes never reach the client.
        id: Option<crate::cancel::JobId>,
    },
}

/// A receiver of a [`crate::Queue`]'s events ([`crate::Queue::subscribe`]).
pub type QueueEvents = broadcast::Receiver<QueueEvent>;

impl QueueEvent {
    /// The event's name: `cancelled`.
    pub fn name(&self) -> &'static str {
        match self {
            QueueEvent::Cancelled { .. } => "cancelled",
        }
    }
}

/// What a worker does, as node-resque's worker events.
#[derive(Clone, Debug)]
pub enum WorkerEvent {
    /// The worker registered and begins polling.
    Start {
        /// Worker name.
        worker: String,
        /// How many jobs it runs at once: its `concurrency` (each slot's
        /// job events carry the slot's name, `<worker>.<n>`, when above 1).
        slots: usize,
    },
    /// The worker stopped and unregistered.
    End {
        /// Worker name.
        worker: String,
        /// How many jobs it could run at once, as in `Start`.
        slots: usize,
    },
    /// The worker looks for a job in these queues (priority order).
    Poll {
        /// Worker name.
        worker: String,
        /// The queues polled.
        queues: Vec<String>,
    },
    /// The worker took a job and is about to run it.
    Job {
        /// Worker name.
        worker: String,
        /// The queue it came from.
        queue: String,
        /// The job.
        job: Arc<Job>,
        /// When the job was put on its queue, epoch ms, when the backend
        /// knows it (`None` otherwise, e.g. a job another Resque client
        /// pushed): with the time of this event it gives the job's wait.
        enqueued_at_ms: Option<i64>,
    },
    /// A job ran to success.
    Success {
        /// Worker name.
        worker: String,
        /// The queue it came from.
        queue: String,
        /// The job.
        job: Arc<Job>,
        /// The task's result.
        result: Value,
        /// How long it ran.
        duration: Duration,
    },
    /// A job failed and went to the failed list.
    Failure {
        /// Worker name.
        worker: String,
        /// The queue it came from.
        queue: String,
        /// The job, as in `job` and `success`; `None` when the payload
        /// does not decode (then `exception` is `PayloadError`).
        job: Option<Arc<Job>>,
        /// The raw payload, exactly as stored.
        payload: String,
        /// The error kind (`Error`, `PayloadError`, `Panic`, …).
        exception: String,
        /// The error message.
        error: String,
        /// How long it ran.
        duration: Duration,
    },
    /// A plugin (Retry) put a failed job back to run again later.
    ReEnqueue {
        /// Worker name.
        worker: String,
        /// The queue it came from.
        queue: String,
        /// The job.
        job: Arc<Job>,
        /// When it runs again.
        delay: Duration,
        /// Attempts left after that one.
        remaining_attempts: i64,
        /// The error of the attempt that failed.
        error: String,
    },
    /// A plugin's `before_perform` vetoed a job: it was dropped unrun.
    Skipped {
        /// Worker name.
        worker: String,
        /// The queue it came from.
        queue: String,
        /// The job.
        job: Arc<Job>,
        /// The plugin that vetoed it.
        plugin: String,
    },
    /// The job's task was at its rate limit or its concurrency cap (see
    /// [`crate::TaskDef::rate_limit`]): the job did not start; it went back
    /// to the delayed schedule, due after `retry_after`, and its claim was
    /// completed without counting it as processed or failed.
    Throttled {
        /// Worker name.
        worker: String,
        /// The queue it came from.
        queue: String,
        /// The job.
        job: Arc<Job>,
        /// The limit that refused it: `rate` or `concurrency`.
        limit: &'static str,
        /// How long after now it is due again.
        retry_after: Duration,
    },
    /// A cancel request stopped the running job: its future was dropped,
    /// its working-on record removed without a failed entry, and the
    /// `resq:cancelled` counter bumped. A job stopped at its timeout is a
    /// `failure` event instead (exception [`crate::failed::JOB_TIMEOUT`]).
    Cancelled {
        /// Worker name.
        worker: String,
        /// The queue it came from.
        queue: String,
        /// The job.
        job: Arc<Job>,
        /// How long it ran before it was stopped.
        duration: Duration,
    },
    /// Something went wrong outside a job (a backend error, say). The worker
    /// backs off and carries on.
    Error {
        /// Worker name.
        worker: String,
        /// What went wrong.
        error: String,
    },
    /// No job was found; the worker waits up to its poll interval.
    Pause {
        /// Worker name.
        worker: String,
    },
    /// The worker refreshed its liveness ping.
    Ping {
        /// Worker name.
        worker: String,
        /// The ping time, epoch ms.
        at_ms: i64,
    },
    /// A pool's scaling check (node-resque's `multiWorkerAction`),
    /// published when it starts or stops a worker, and when it holds
    /// because the runtime lags. Its name for `log_levels` is
    /// `multi_worker_action`.
    PoolAction {
        /// What the pool did.
        action: ScaleAction,
        /// How many workers it runs after that.
        workers: usize,
        /// How late its check timer fired: the runtime's scheduling delay.
        event_loop_delay: Duration,
        /// Whether that is above the pool's `max_event_loop_delay`, so it
        /// starts no worker beyond `min`.
        lagging: bool,
    },
    /// At start-up the worker found an earlier registration under its own
    /// name (a previous crash) and cleaned it, re-enqueueing its job.
    CleaningWorker {
        /// Worker name.
        worker: String,
        /// What was cleaned.
        cleaned: Cleaned,
    },
}

/// What a scheduler does.
#[derive(Clone, Debug)]
pub enum SchedulerEvent {
    /// The scheduler starts.
    Start {
        /// Scheduler name.
        scheduler: String,
    },
    /// The scheduler stopped and released leadership.
    End {
        /// Scheduler name.
        scheduler: String,
    },
    /// A poll round begins (only the leader polls).
    Poll {
        /// Scheduler name.
        scheduler: String,
    },
    /// This scheduler became the leader.
    Leader {
        /// Scheduler name.
        scheduler: String,
    },
    /// This scheduler lost or gave up leadership.
    Follower {
        /// Scheduler name.
        scheduler: String,
    },
    /// A delayed job was moved to its queue.
    TransferredJob {
        /// Scheduler name.
        scheduler: String,
        /// The bucket it came from (Unix secs).
        timestamp: i64,
        /// Its queue.
        queue: String,
        /// Its payload bytes.
        payload: String,
    },
    /// A delayed item could not be promoted and went to the failed list.
    PromotionFailed {
        /// Scheduler name.
        scheduler: String,
        /// The bucket it came from (Unix secs).
        timestamp: i64,
        /// Its payload bytes.
        payload: String,
        /// Why.
        reason: String,
    },
    /// A worker stopped pinging and was cleaned; its job was re-enqueued or failed.
    CleanStuckWorker {
        /// Scheduler name.
        scheduler: String,
        /// The dead worker.
        worker: WorkerId,
        /// What was cleaned.
        cleaned: Cleaned,
    },
    /// The leader enqueued one occurrence of a cron task.
    CronFired {
        /// Scheduler name.
        scheduler: String,
        /// The task.
        task: String,
        /// The occurrence, Unix ms.
        at_ms: i64,
    },
    /// A backend error; the scheduler backs off and carries on.
    Error {
        /// Scheduler name.
        scheduler: String,
        /// What went wrong.
        error: String,
    },
}

impl WorkerEvent {
    /// The event's name, as the task server's `log_levels` use it.
    pub fn name(&self) -> &'static str {
        match self {
            WorkerEvent::Start { .. } => "start",
            WorkerEvent::End { .. } => "end",
            WorkerEvent::Poll { .. } => "poll",
            WorkerEvent::Job { .. } => "job",
            WorkerEvent::Success { .. } => "success",
            WorkerEvent::Failure { .. } => "failure",
            WorkerEvent::ReEnqueue { .. } => "re_enqueue",
            WorkerEvent::Skipped { .. } => "skipped",
            WorkerEvent::Throttled { .. } => "throttled",
            WorkerEvent::Cancelled { .. } => "cancelled",
            WorkerEvent::Error { .. } => "error",
            WorkerEvent::Pause { .. } => "pause",
            WorkerEvent::Ping { .. } => "ping",
            WorkerEvent::CleaningWorker { .. } => "cleaning_worker",
            WorkerEvent::PoolAction { .. } => "multi_worker_action",
        }
    }
}

impl SchedulerEvent {
    /// The event's name, as the task server's `log_levels` use it.
    pub fn name(&self) -> &'static str {
        match self {
            SchedulerEvent::Start { .. } => "start",
            SchedulerEvent::End { .. } => "end",
            SchedulerEvent::Poll { .. } => "poll",
            SchedulerEvent::Leader { .. } => "leader",
            SchedulerEvent::Follower { .. } => "follower",
            SchedulerEvent::TransferredJob { .. } => "transferred_job",
            SchedulerEvent::PromotionFailed { .. } => "promotion_failed",
            SchedulerEvent::CleanStuckWorker { .. } => "clean_stuck_worker",
            SchedulerEvent::CronFired { .. } => "cron_fired",
            SchedulerEvent::Error { .. } => "error",
        }
    }
}

/// Builds and sends an event only if anyone listens, so the hot path pays
/// nothing for events nobody reads.
pub(crate) fn emit_with<T: Clone>(tx: &broadcast::Sender<T>, make: impl FnOnce() -> T) {
    if tx.receiver_count() > 0 {
        let _ = tx.send(make());
    }
}

/// Sends an event if anyone listens; events are best-effort.
pub(crate) fn emit<T: Clone>(tx: &broadcast::Sender<T>, event: T) {
    if tx.receiver_count() > 0 {
        let _ = tx.send(event);
    }
}
