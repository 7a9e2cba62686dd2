//! The [`Worker`]: claims jobs from its queues in priority order, runs the
//! registered task, records the outcome, and keeps its liveness ping fresh.

use crate::backend::{Backend, Claimed, Orphan, Outcome, WorkerId, WorkingOn};
use crate::cancel::{cancel_loop, CancelWatch};
use crate::error::{Error, Result};
use crate::event::{emit, emit_with, JobEnd, JobObserver, JobOutcome, WorkerEvent, EVENT_CAPACITY};
use crate::failed::{encode_entry, Failure, JOB_TIMEOUT, PAYLOAD_ERROR};
use crate::flow::LIMITED_RECHECK;
use crate::job::Job;
use crate::plugin::PerformContext;
use crate::queue::Queue;
use crate::shutdown::{run_with_shutdown, AbortOnDrop, Backoff};
use crate::task::{JobContext, TaskError, Tasks};
use crate::time::{js_date_shared_now, now_ms};
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How many slots of a multi-slot worker unregister at once when it stops.
const UNREGISTER_CONCURRENCY: usize = 8;

/// How long a stopping worker keeps trying to unregister. A backend that
/// cannot hand out a connection (an exhausted server, a pool timeout of
/// 30 s) must not hold a shutdown for minutes: after this the worker stops
/// anyway, and its registration is left to the stuck-worker clean-up,
/// which puts any job it still records back on its queue.
const UNREGISTER_BUDGET: Duration = Duration::from_secs(10);

/// Runs a backend call unless `shutdown` fires first (`None`). Used for
/// calls that are safe to abandon: reads, and claims, whose job (if the
/// abandoned claim was applied) is in the worker's working-on record, which
/// the unregistration that follows puts back on its queue.
///
/// A call that is ready at its first poll (the memory backend's, or a
/// paused copy that is still fresh) returns without waiting on `shutdown`:
/// registering a waiter with the token takes its lock, once per job.
async fn unless_shutdown<T>(shutdown: &CancellationToken, call: impl Future<Output = T>) -> Option<T> {
    if shutdown.is_cancelled() {
        return None;
    }
    let mut call = std::pin::pin!(call);
    if let std::task::Poll::Ready(r) = std::future::poll_fn(|cx| std::task::Poll::Ready(call.as_mut().poll(cx))).await {
        return Some(r);
    }
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        r = call => Some(r),
    }
}

static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// This host's name as resq records it (any `:` replaced, since `:`
/// separates fields in Resque's worker ids).
pub fn hostname() -> String {
    let h = gethostname::gethostname().to_string_lossy().replace(':', "-");
    if h.is_empty() {
        "localhost".to_owned()
    } else {
        h
    }
}

/// A fresh worker name, unique in this process: `host:pid+n`.
pub fn unique_name() -> String {
    let n = NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed);
    format!("{}:{}+{}", hostname(), std::process::id(), n)
}

/// Turns a queue setting into a list: a comma-separated string is split
/// (`"a,b"` is `a` then `b`), blanks are dropped.
pub fn parse_queues(spec: &str) -> Vec<String> {
    spec.split(',')
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The default [`WorkerConfig::ping_interval`]: 5 s.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(5);

/// A worker's settings.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The worker's name; `None` picks a unique `host:pid+n`. Two live
    /// workers must never share a name.
    pub name: Option<String>,
    /// Queues in priority order. `*` stands for every other known queue,
    /// in name order, re-read as queues appear: `["critical", "*"]` works
    /// `critical` first, then all the rest; `*` alone (or an empty list)
    /// means every queue in name order. The worker registers the list as
    /// given (`critical,*`; `*` alone or empty: `*`).
    pub queues: Vec<String>,
    /// How long an idle worker waits for a job before polling again. Backends
    /// that can wake a waiting worker (memory, Redis, Postgres) do so at once.
    pub poll_interval: Duration,
    /// How often the worker refreshes its liveness ping (default
    /// [`DEFAULT_PING_INTERVAL`]). The schedulers' stuck-worker timeout must
    /// be at least [`MIN_STUCK_TIMEOUT_PINGS`](crate::scheduler::MIN_STUCK_TIMEOUT_PINGS)
    /// times it (see [`SchedulerConfig::worker_ping_interval`](crate::SchedulerConfig::worker_ping_interval)).
    pub ping_interval: Duration,
    /// How long an in-flight job may run on after shutdown is requested.
    /// After that it is aborted and its job put back at the head of its queue.
    pub shutdown_timeout: Duration,
    /// How many jobs the worker runs at once. Above 1, the worker registers
    /// one slot per job (`<name>.1`, `<name>.2`, …, each with its own
    /// working-on record, as Resque expects) and runs each slot's job on a
    /// tokio task of its own, so jobs spread over the runtime's threads;
    /// with 1 it registers under its own name, as node-resque does, and
    /// runs its job on its own task. On Redis and PostgreSQL it records the
    /// outcomes of finished jobs and claims for all its idle slots in one
    /// round trip (with one slot: one round trip per job). Run CPU-heavy
    /// parts with `tokio::task::spawn_blocking`.
    pub concurrency: usize,
    /// A synchronous observer of this worker and its jobs (metrics), called
    /// inline with borrowed data: cheaper than a subscriber, which makes
    /// the worker build and queue an event per step. `None` by default.
    pub observer: Option<Arc<dyn JobObserver>>,
    /// How long a task's code may run when its [`TaskDef::timeout`](crate::TaskDef::timeout)
    /// sets no limit: the server-wide default (a task server's
    /// `job_timeout_ms`). `None` (the default): no limit.
    pub job_timeout: Option<Duration>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            name: None,
            queues: vec!["*".to_owned()],
            poll_interval: Duration::from_secs(5),
            ping_interval: DEFAULT_PING_INTERVAL,
            shutdown_timeout: Duration::from_secs(30),
            concurrency: 1,
            observer: None,
            job_timeout: None,
        }
    }
}

impl WorkerConfig {
    /// Settings for these queues, in priority order.
    pub fn for_queues<I, S>(queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        WorkerConfig {
            queues: queues.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    fn is_wildcard(&self) -> bool {
        self.queues.is_empty() || self.queues.iter().any(|q| q == "*")
    }

    /// The queues to poll, in priority order, given every known queue: the
    /// listed ones in their order, with `*` standing for all the others
    /// in name order.
    fn expand_queues(&self, mut known: Vec<String>) -> Vec<String> {
        if self.queues.iter().all(|q| q == "*") {
            known.sort_unstable();
            return known;
        }
        let listed: HashSet<&str> = self.queues.iter().map(String::as_str).filter(|q| *q != "*").collect();
        known.retain(|q| !listed.contains(q.as_str()));
        known.sort_unstable();
        let mut others = Some(known);
        let mut out = Vec::with_capacity(self.queues.len());
        for q in &self.queues {
            if q == "*" {
                // Only the first `*` stands for the others.
                out.extend(others.take().into_iter().flatten());
            } else if !out.contains(q) {
                out.push(q.clone());
            }
        }
        out
    }
}

/// How long a worker trusts its copy of the paused queues: half the 1 s
/// within which a pause or a resume reaches every worker.
const PAUSED_REFRESH: Duration = Duration::from_millis(500);

/// A worker's copy of the paused queues, and of the queues with
/// flow-control limits, re-read at most every [`PAUSED_REFRESH`].
#[derive(Default)]
struct PausedCopy {
    names: HashSet<String>,
    /// Queues with limits: the backend's claim enforces them; the worker
    /// only needs to know them to wait well (see [`PausedCopy::wait_cap`]).
    limited: HashSet<String>,
    read: Option<Instant>,
    /// Whether the last re-read failed: nothing is claimed until one
    /// succeeds, as the copy may be out of date.
    failed: bool,
}

impl PausedCopy {
    /// Whether the copy is missing or older than [`PAUSED_REFRESH`].
    fn stale(&self) -> bool {
        self.read.is_none_or(|t| t.elapsed() >= PAUSED_REFRESH)
    }

    /// Re-reads the paused queues if the copy is stale.
    async fn refresh(&mut self, backend: &dyn Backend) -> Result<()> {
        if self.stale() {
            self.failed = true;
            let names = backend.paused_queues().await?;
            let limited = backend.queue_limits().await?;
            self.names = names.into_iter().collect();
            self.limited = limited.into_iter().map(|(q, _)| q).collect();
            self.read = Some(Instant::now());
            self.failed = false;
        }
        Ok(())
    }

    /// `queues` without the paused ones, in the same order.
    fn active<'a>(&self, queues: &'a [String]) -> Cow<'a, [String]> {
        if self.names.is_empty() || !queues.iter().any(|q| self.names.contains(q)) {
            Cow::Borrowed(queues)
        } else {
            Cow::Owned(queues.iter().filter(|q| !self.names.contains(*q)).cloned().collect())
        }
    }

    /// The queues to claim from: `queues` without the paused ones, and
    /// none after a failed re-read.
    fn claimable<'a>(&self, queues: &'a [String]) -> Cow<'a, [String]> {
        if self.failed || self.read.is_none() {
            Cow::Owned(Vec::new())
        } else {
            self.active(queues)
        }
    }

    /// How long an idle worker may wait: with any queue paused, short
    /// enough to notice its resume within the 1 s bound (a wait on the
    /// unpaused queues is not woken by a resume); with any queue limited,
    /// [`LIMITED_RECHECK`]: a limited queue's jobs wake no one when time or
    /// a completion elsewhere frees them.
    fn wait_cap(&self, poll: Duration) -> Duration {
        if !self.limited.is_empty() {
            poll.min(LIMITED_RECHECK)
        } else if self.names.is_empty() {
            poll
        } else {
            poll.min(PAUSED_REFRESH)
        }
    }

    /// The queues an idle worker waits on for new jobs: `active` without
    /// the limited ones, whose queued jobs would end every wait at once
    /// (they are retried every [`LIMITED_RECHECK`] instead).
    fn waitable<'a>(&self, active: &'a [String]) -> Cow<'a, [String]> {
        if self.limited.is_empty() || !active.iter().any(|q| self.limited.contains(q)) {
            Cow::Borrowed(active)
        } else {
            Cow::Owned(active.iter().filter(|q| !self.limited.contains(*q)).cloned().collect())
        }
    }
}

/// Runs jobs. Build it, [`subscribe`](Worker::subscribe) to its events if you
/// like, then [`run`](Worker::run) it until your shutdown signal fires.
///
/// ```
/// # async fn demo(backend: std::sync::Arc<dyn resq_core::Backend>) -> resq_core::Result<()> {
/// use resq_core::{task::{JobContext, TaskError, Tasks}, Worker, WorkerConfig};
/// use std::sync::Arc;
///
/// let mut tasks = Tasks::new();
/// tasks.register_fn("add", |(a, b): (i64, i64), _ctx: JobContext| async move { Ok::<_, TaskError>(a + b) })?;
/// let worker = Worker::new(backend, Arc::new(tasks), WorkerConfig::for_queues(["math"]));
/// let stop = tokio_util::sync::CancellationToken::new();
/// let shutdown = stop.clone().cancelled_owned();
/// let running = tokio::spawn(async move { worker.run(shutdown).await });
/// // … later:
/// stop.cancel();
/// running.await.expect("worker task")?;
/// # Ok(()) }
/// ```
pub struct Worker {
    backend: Arc<dyn Backend>,
    client: Queue,
    config: WorkerConfig,
    id: WorkerId,
    /// `id`, shared with each job the single-slot loop runs (not copied).
    shared_id: Arc<WorkerId>,
    events: broadcast::Sender<WorkerEvent>,
    busy: Arc<AtomicBool>,
    /// The running loop's stop token, a child of the caller's shutdown
    /// token: cancelled by it or by a permanent backend error.
    halt: std::sync::Mutex<CancellationToken>,
    /// The permanent backend error that stopped the worker.
    fatal: std::sync::Mutex<Option<Error>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("id", &self.id).finish()
    }
}

impl Worker {
    /// A worker over `backend` that runs `tasks`.
    pub fn new(backend: Arc<dyn Backend>, tasks: Arc<Tasks>, config: WorkerConfig) -> Self {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Self::with_events(backend, tasks, config, events)
    }

    /// Like [`Worker::new`], publishing into an existing event channel (a pool's).
    pub fn with_events(
        backend: Arc<dyn Backend>,
        tasks: Arc<Tasks>,
        config: WorkerConfig,
        events: broadcast::Sender<WorkerEvent>,
    ) -> Self {
        let name = config.name.clone().unwrap_or_else(unique_name);
        let registered_queues = if config.queues.iter().all(|q| q == "*") {
            vec!["*".to_owned()]
        } else {
            config.queues.clone()
        };
        let id = WorkerId::new(name, &registered_queues);
        Worker {
            client: Queue::with_tasks(Arc::clone(&backend), tasks),
            backend,
            config,
            shared_id: Arc::new(id.clone()),
            id,
            events,
            busy: Arc::new(AtomicBool::new(false)),
            halt: std::sync::Mutex::new(CancellationToken::new()),
            fatal: std::sync::Mutex::new(None),
        }
    }

    /// The worker's unique name.
    pub fn name(&self) -> &str {
        &self.id.name
    }

    /// The worker's registry id (`name` and `queues`).
    pub fn id(&self) -> &WorkerId {
        &self.id
    }

    /// A receiver of this worker's events.
    pub fn subscribe(&self) -> broadcast::Receiver<WorkerEvent> {
        self.events.subscribe()
    }

    /// A flag that is true while the worker runs a job (the pool reads it).
    pub fn busy_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.busy)
    }

    /// Runs until `shutdown` completes, then stops gracefully: no new
    /// claims, the in-flight job gets `shutdown_timeout` to finish, and the
    /// worker unregisters.
    ///
    /// Like every run method (`WorkerPool`, `Scheduler`, `TaskServer`), it
    /// borrows, so the worker can be inspected and subscribed to while it
    /// runs; move it into the task that runs it (`async move { w.run(..).await }`).
    /// Do not run one worker twice at once: both would use its one name.
    /// Dropping the future stops the worker at once, as a crash would: its
    /// registration and any in-flight job stay for the stuck-worker
    /// clean-up (nothing it spawned outlives the future).
    pub async fn run<F>(&self, shutdown: F) -> Result<()>
    where
        F: Future<Output = ()> + Send,
    {
        run_with_shutdown(shutdown, |token| self.run_until(token)).await
    }

    /// Like [`Worker::run`], driven by a cancellation token.
    ///
    /// Transient backend errors are logged at WARN and retried with backoff.
    /// A permanent one (see [`Error::is_permanent`]), such as refused
    /// credentials or a missing schema, is logged once at ERROR and stops the
    /// worker as a shutdown would; `run` then returns that error.
    pub async fn run_until(&self, shutdown: CancellationToken) -> Result<()> {
        // A permanent backend error cancels this token too.
        let shutdown = shutdown.child_token();
        *self.halt.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = shutdown.clone();
        if self.config.concurrency > 1 || self.backend.remote() {
            return self.run_slots(shutdown).await;
        }
        if !self.start(&shutdown).await {
            return self.finish(Ok(()));
        }
        let pinger = AbortOnDrop(tokio::spawn(ping_loop(
            Arc::clone(&self.backend),
            vec![self.id.clone()],
            self.config.ping_interval,
            self.events.clone(),
        )));
        let watch = CancelWatch::new(std::slice::from_ref(&self.id));
        let canceller = self.spawn_cancel_loop(&watch);
        let mut backoff = Backoff::new(Duration::from_millis(50), self.config.poll_interval);
        let mut queues: Vec<String> = Vec::new();
        let mut queues_read: Option<Instant> = None;
        let mut paused = PausedCopy::default();
        let wildcard = self.config.is_wildcard();
        let wildcard_queues = vec!["*".to_owned()];
        // A claim failed: it may have been applied with only its reply lost.
        let mut uncertain = false;
        while !shutdown.is_cancelled() {
            if uncertain {
                // A record means the lost reply gave this worker that job.
                let Some(read) = unless_shutdown(&shutdown, self.backend.working_on(&self.id)).await else {
                    break;
                };
                match read {
                    Ok(record) => {
                        uncertain = false;
                        if let Some(r) = record {
                            tracing::warn!(target: "resq::worker", worker = %self.id.name, "recovered a claim whose reply was lost");
                            let job = Claimed {
                                queue: r.queue,
                                payload: r.payload,
                                enqueued_at_ms: None,
                            };
                            self.busy.store(true, Ordering::Release);
                            self.perform(job, Arc::from(r.run_at.as_str()), &watch, &shutdown).await;
                            self.busy.store(false, Ordering::Release);
                            continue;
                        }
                    }
                    Err(e) => {
                        self.backend_error(e);
                        backoff.wait(&shutdown).await;
                        continue;
                    }
                }
            }
            if wildcard {
                let stale = queues_read.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
                if stale {
                    let Some(read) = unless_shutdown(&shutdown, self.backend.queues()).await else {
                        break;
                    };
                    match read {
                        Ok(q) => {
                            queues = self.config.expand_queues(q);
                            queues_read = Some(Instant::now());
                        }
                        Err(e) => {
                            self.backend_error(e);
                            backoff.wait(&shutdown).await;
                            continue;
                        }
                    }
                }
            } else if queues.is_empty() {
                queues = self.config.queues.clone();
            }
            let Some(read) = unless_shutdown(&shutdown, paused.refresh(self.backend.as_ref())).await else {
                break;
            };
            if let Err(e) = read {
                self.backend_error(e);
                backoff.wait(&shutdown).await;
                continue;
            }
            let active = paused.active(&queues);
            emit_with(&self.events, || WorkerEvent::Poll {
                worker: self.id.name.clone(),
                queues: active.to_vec(),
            });
            let run_at = js_date_shared_now();
            let claimed = if active.is_empty() {
                Ok(None)
            } else {
                match unless_shutdown(&shutdown, self.backend.claim(&self.id, &active, &run_at)).await {
                    Some(r) => r,
                    // An abandoned claim's job, if it was applied, is in
                    // the working-on record: the unregistration below
                    // puts it back at the head of its queue.
                    None => break,
                }
            };
            match claimed {
                Ok(Some(job)) => {
                    backoff.reset();
                    self.busy.store(true, Ordering::Release);
                    self.perform(job, run_at, &watch, &shutdown).await;
                    self.busy.store(false, Ordering::Release);
                }
                Ok(None) => {
                    backoff.reset();
                    emit_with(&self.events, || WorkerEvent::Pause {
                        worker: self.id.name.clone(),
                    });
                    tracing::trace!(target: "resq::worker", worker = %self.id.name, "pause");
                    // A wildcard worker re-reads the queue list after waiting.
                    queues_read = None;
                    let wait = self.idle_wait(wildcard, &wildcard_queues, &active, &paused);
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        r = wait => if let Err(e) = r {
                            self.backend_error(e);
                            backoff.wait(&shutdown).await;
                        }
                    }
                }
                Err(e) => {
                    self.backend_error(e);
                    uncertain = true;
                    backoff.wait(&shutdown).await;
                }
            }
        }
        // No ping may land after the worker is cleaned: it would leave a ghost.
        drop(pinger);
        drop(canceller);
        let stopped = self.stop().await;
        self.finish(stopped)
    }

    /// A claim round on `active` is about to start: the `poll` event.
    fn polling(&self, active: &[String]) {
        emit_with(&self.events, || WorkerEvent::Poll {
            worker: self.id.name.clone(),
            queues: active.to_vec(),
        });
        tracing::trace!(target: "resq::worker", worker = %self.id.name, "poll");
    }

    /// An idle worker's wait for new jobs on `active` (its unpaused
    /// queues). A wildcard worker with nothing paused waits on any queue,
    /// including ones that do not exist yet; with a queue paused it waits
    /// on the others only (a paused queue's jobs would end the wait at once),
    /// and no longer than the paused copy's [`PausedCopy::wait_cap`].
    fn idle_wait<'a>(
        &'a self,
        wildcard: bool,
        wildcard_queues: &'a [String],
        active: &'a [String],
        paused: &PausedCopy,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
        let timeout = paused.wait_cap(self.config.poll_interval);
        if wildcard && paused.names.is_empty() && paused.limited.is_empty() {
            // Before `active`: with no queue yet, `active` is empty, and a
            // queue that appears must end the wait like any job.
            return self.backend.wait_for_jobs(wildcard_queues, timeout);
        }
        match paused.waitable(active) {
            Cow::Borrowed(queues) if !queues.is_empty() => self.backend.wait_for_jobs(queues, timeout),
            Cow::Owned(queues) if !queues.is_empty() => {
                let backend = Arc::clone(&self.backend);
                Box::pin(async move { backend.wait_for_jobs(&queues, timeout).await })
            }
            _ => Box::pin(async move {
                tokio::time::sleep(timeout).await;
                Ok(())
            }),
        }
    }

    /// The multi-slot loop: one round trip records the outcomes of the
    /// slots whose jobs finished and claims for every idle slot. A
    /// single-slot worker on a remote backend ([`Backend::remote`]) runs it
    /// too, with one slot under the worker's own name, so it pays one round
    /// trip per job (a completion and the next claim in one script or
    /// transaction), not two; on memory it runs the plain loop above.
    async fn run_slots(&self, shutdown: CancellationToken) -> Result<()> {
        let slots: Vec<WorkerId> = if self.config.concurrency > 1 {
            (1..=self.config.concurrency)
                .map(|i| WorkerId {
                    name: format!("{}.{i}", self.id.name),
                    queues: self.id.queues.clone(),
                })
                .collect()
        } else {
            vec![self.id.clone()]
        };
        if !self.start_ids(&slots, &shutdown).await {
            return self.finish(Ok(()));
        }
        let pinger = AbortOnDrop(tokio::spawn(ping_loop(
            Arc::clone(&self.backend),
            slots.clone(),
            self.config.ping_interval,
            self.events.clone(),
        )));
        let watch = CancelWatch::new(&slots);
        let canceller = self.spawn_cancel_loop(&watch);
        let wildcard = self.config.is_wildcard();
        let wildcard_queues = vec!["*".to_owned()];
        let mut queues: Vec<String> = if wildcard {
            Vec::new()
        } else {
            self.config.queues.clone()
        };
        let mut queues_read: Option<Instant> = None;
        let mut paused = PausedCopy::default();
        let mut book = SlotBook::new(slots);
        // Each slot's job runs on a task of its own (see `spawn_slot_job`).
        let mut running: FuturesUnordered<SlotJob> = FuturesUnordered::new();
        // A round failed: it may have been applied with only its reply lost,
        // so nothing is completed or claimed again until `settle` has read
        // the stored working-on records.
        let mut uncertain = false;
        let mut stop_attempts = 0u32;
        // `round_at` before a round sets it; no allocation per loop.
        let no_round: Arc<str> = Arc::from("");
        let mut backoff = Backoff::new(Duration::from_millis(50), self.config.poll_interval);
        let grace = self.config.shutdown_timeout;
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::pin!(deadline);
        loop {
            let stopping = shutdown.is_cancelled();
            let mut failed = false;
            // At a stop with no outcome to record, a claim that may have
            // been applied needs no settling: the unregistration puts any
            // job recorded for a slot back at the head of its queue (and on
            // a backend out of connections, settling could hold the stop
            // for an acquire timeout per try).
            if uncertain && !(stopping && book.done.is_empty()) {
                // With no outcome pending, settling only reads (its one
                // wait comes before it changes the book), so a stop may
                // abandon it, as it abandons a claim; with outcomes pending
                // it runs to the end.
                let settled = if book.done.is_empty() {
                    unless_shutdown(&shutdown, self.settle(&mut book)).await
                } else {
                    Some(self.settle(&mut book).await)
                };
                match settled {
                    None => continue,
                    Some(Ok(recovered)) => {
                        uncertain = false;
                        for (slot, job) in recovered {
                            running.push(self.slot_job(&book, slot, job, &watch));
                        }
                    }
                    Some(Err(e)) => {
                        self.backend_error(e);
                        failed = true;
                    }
                }
            }
            if !stopping {
                // A shutdown gives up this read and the claims (safe to
                // abandon: see below); the next pass sees it.
                match unless_shutdown(&shutdown, paused.refresh(self.backend.as_ref())).await {
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        self.backend_error(e);
                        failed = true;
                    }
                    None => continue,
                }
            }
            let active = paused.claimable(&queues);
            // Finished slots: record their outcomes and, while the queue list
            // is current, claim for every idle slot in the same round trip.
            let mut round = None;
            let mut round_at = Arc::clone(&no_round);
            if !uncertain && !book.done.is_empty() {
                let current = !wildcard || queues_read.is_some_and(|t| t.elapsed() < Duration::from_secs(1));
                if current && !active.is_empty() && !stopping {
                    // A slot whose job was discarded claims in the next
                    // round: a discard moves no counter, so after a lost
                    // reply only the absence of a new claim tells whether
                    // it was recorded (see `settle`).
                    let ids = book.ids(book.idle.iter().chain(book.reclaiming()));
                    self.polling(&active);
                    round_at = js_date_shared_now();
                    match self
                        .backend
                        .complete_and_claim_batch(&book.done, &ids, &active, &round_at)
                        .await
                    {
                        Ok(claims) => {
                            book.recorded();
                            // The same order as `ids`: claims index into `idle`.
                            round = Some(claims);
                        }
                        Err(e) => {
                            self.backend_error(e);
                            uncertain = true;
                            failed = true;
                        }
                    }
                }
                if !uncertain && !book.done.is_empty() {
                    match self.backend.complete_batch(&book.done).await {
                        Ok(()) => book.recorded(),
                        Err(e) => {
                            self.backend_error(e);
                            uncertain = true;
                            failed = true;
                        }
                    }
                }
            }
            if stopping && running.is_empty() && round.is_none() {
                // After a permanent error, retrying cannot help: the
                // unregistration puts unrecorded jobs back if it can.
                if book.done.is_empty() || self.stopped_by_error() {
                    break;
                }
                // Outcomes still unrecorded at shutdown: a few more tries,
                // then the unregistration puts those jobs back on their
                // queues (they may run again, but are not lost).
                stop_attempts += 1;
                if stop_attempts >= STOP_ATTEMPTS {
                    self.error(&format!(
                        "could not record {} outcomes before stopping: their jobs go back to their queues",
                        book.done.len()
                    ));
                    book.done.clear();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100 * u64::from(stop_attempts))).await;
                continue;
            }
            if failed && !stopping {
                backoff.wait(&shutdown).await;
                continue;
            }
            if round.is_none() && !stopping && !uncertain && !book.idle.is_empty() {
                if wildcard && queues_read.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    match unless_shutdown(&shutdown, self.backend.queues()).await {
                        Some(Ok(q)) => {
                            queues = self.config.expand_queues(q);
                            queues_read = Some(Instant::now());
                        }
                        Some(Err(e)) => self.backend_error(e),
                        None => continue,
                    }
                }
                let active = paused.claimable(&queues);
                if !active.is_empty() {
                    let ids = book.ids(book.idle.iter());
                    self.polling(&active);
                    round_at = js_date_shared_now();
                    // A claim that only claims is abandoned at a shutdown
                    // (a backend without a free connection can hold it for
                    // its whole acquire timeout): if it was applied, its
                    // jobs are in the slots' working-on records, and the
                    // unregistration below puts them back at the heads of
                    // their queues. A round that also records outcomes is
                    // not: abandoning it could run those jobs twice.
                    match unless_shutdown(&shutdown, self.backend.claim_batch(&ids, &active, &round_at)).await {
                        Some(r) => round = Some(r),
                        None => continue,
                    }
                }
            }
            if let Some(result) = round {
                match result {
                    Ok(got) => {
                        backoff.reset();
                        let mut taken = Vec::with_capacity(got.len());
                        for (k, job) in got {
                            let Some(&slot) = book.idle.get(k) else { continue };
                            taken.push(k);
                            // One copy of the job, shared by the book, the
                            // cancel watch and the slot's task.
                            let job = Arc::new(job);
                            book.set_held(
                                slot,
                                Some(Held {
                                    job: Arc::clone(&job),
                                    run_at: Arc::clone(&round_at),
                                }),
                            );
                            running.push(self.slot_job(&book, slot, job, &watch));
                        }
                        taken.sort_unstable();
                        for k in taken.into_iter().rev() {
                            book.idle.remove(k);
                        }
                    }
                    Err(e) => {
                        self.backend_error(e);
                        uncertain = true;
                        backoff.wait(&shutdown).await;
                        continue;
                    }
                }
            }
            self.busy.store(!running.is_empty(), Ordering::Release);
            if running.is_empty() {
                if stopping {
                    continue;
                }
                emit_with(&self.events, || WorkerEvent::Pause {
                    worker: self.id.name.clone(),
                });
                queues_read = None;
                let active = paused.claimable(&queues);
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    r = self.idle_wait(wildcard, &wildcard_queues, &active, &paused) => if let Err(e) = r {
                        self.backend_error(e);
                        backoff.wait(&shutdown).await;
                    }
                }
                continue;
            }
            // Some idle slots: wake for new jobs too. Also after a round
            // that claimed some (it left the queues empty): otherwise a long
            // job would keep the idle slots from new work until it ends.
            let want_more = !stopping && !book.idle.is_empty();
            let active = paused.claimable(&queues);
            tokio::select! {
                Some(finished) = running.next() => {
                    book.finished(finished);
                    // Gather what else has finished, yielding between passes
                    // for as long as each pass finds more: slots whose jobs
                    // end together then share one round instead of settling
                    // into two half-size rounds that alternate (measured on
                    // PostgreSQL: 256 slots, ~128 jobs per round → ~250,
                    // +25% jobs/s). Each pass must find a job, so this ends.
                    loop {
                        let before = book.done.len();
                        while let Some(Some(finished)) = running.next().now_or_never() {
                            book.finished(finished);
                        }
                        if running.is_empty() || (book.done.len() == before && before > 0) {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                }
                r = self.idle_wait(wildcard, &wildcard_queues, &active, &paused), if want_more => {
                    if let Err(e) = r {
                        // While the backend is down: wait, but keep collecting.
                        self.backend_error(e);
                        tokio::select! {
                            _ = backoff.wait(&shutdown) => {}
                            Some(finished) = running.next() => book.finished(finished),
                        }
                    }
                }
                _ = &mut deadline => {
                    self.error(&format!(
                        "{} jobs did not finish within the shutdown timeout of {grace:?}: aborted and put back on their queues",
                        running.len()
                    ));
                    running.clear();
                    break;
                }
            }
        }
        if !book.done.is_empty() && !uncertain {
            // Jobs that finished before the deadline; if this fails, the
            // unregistration puts them back on their queues.
            if let Err(e) = self.backend.complete_batch(&book.done).await {
                self.backend_error(e);
            }
        }
        self.busy.store(false, Ordering::Release);
        // No ping may land after a slot is cleaned: it would leave a ghost.
        drop(pinger);
        drop(canceller);
        // Slots unregister a few at a time: each is its own atomic clean,
        // and a few in flight keep a small connection pool usable by others.
        let mut result = Ok(());
        let this = self;
        let deadline = Instant::now() + UNREGISTER_BUDGET;
        let mut unregistering = futures_util::stream::iter(book.slots.iter().cloned())
            .map(move |id| async move { this.unregister(&id, deadline).await })
            .buffer_unordered(UNREGISTER_CONCURRENCY);
        while let Some(r) = unregistering.next().await {
            if let Err(e) = r {
                result = Err(e);
            }
        }
        tracing::info!(target: "resq::worker", worker = %self.id.name, "end");
        emit(
            &self.events,
            WorkerEvent::End {
                worker: self.id.name.clone(),
                slots: self.config.concurrency.max(1),
            },
        );
        if let Some(observer) = &self.config.observer {
            observer.worker_stopped(&self.id.name, self.config.concurrency.max(1));
        }
        self.finish(result)
    }

    /// Starts `job` on slot `slot`'s own task, watched for cancel
    /// requests under the working-on record its claim wrote (`held`).
    fn slot_job(&self, book: &SlotBook, slot: usize, job: Arc<Claimed>, watch: &Arc<CancelWatch>) -> SlotJob {
        let slot_id = book.shared.get(slot).cloned().unwrap_or_else(|| {
            Arc::new(WorkerId {
                name: String::new(),
                queues: self.id.queues.clone(),
            })
        });
        let run_at = book
            .held
            .get(slot)
            .and_then(Option::as_ref)
            .map_or_else(|| Arc::from(""), |h| Arc::clone(&h.run_at));
        let guard = watch.begin(slot, &job, run_at);
        let stop = JobStop {
            token: guard.token(),
            default_timeout: self.config.job_timeout,
        };
        let (client, events, observer) = (self.client.clone(), self.events.clone(), self.config.observer.clone());
        if book.slots.len() == 1 {
            // One slot: the job runs on the worker's own task, polled by its
            // loop (no spawn, no wake-up across threads per job). `execute`
            // catches panics; dropping it at the shutdown deadline cancels it.
            return Box::pin(async move {
                let _guard = guard;
                let ran = execute(&client, &events, observer.as_deref(), &slot_id, &job, &stop).await;
                (slot, ran)
            });
        }
        let fut = spawn_slot_job(client, events, observer, slot_id, job, stop);
        Box::pin(async move {
            // Registered for as long as the job runs (or until dropped).
            let _guard = guard;
            (slot, fut.await)
        })
    }

    /// Starts the loop that delivers cancel requests to this worker's jobs
    /// (see [`cancel_loop`]); it stops when the handle is dropped.
    fn spawn_cancel_loop(&self, watch: &Arc<CancelWatch>) -> AbortOnDrop<()> {
        AbortOnDrop(tokio::spawn(cancel_loop(
            Arc::clone(&self.backend),
            Arc::clone(watch),
            self.config.ping_interval,
        )))
    }

    /// After a failed round, which may have been applied with only its
    /// reply lost: reads the working-on record of every slot that runs no
    /// job and settles each from what is stored.
    ///
    /// - An idle slot with no record claimed nothing; one with a record was
    ///   given that job by the lost reply, and runs it now.
    /// - A slot whose finished job's outcome is pending: without a record,
    ///   the outcome was recorded (or the slot was cleaned by someone else,
    ///   who put the job back); with a record other than the one its claim
    ///   wrote, the outcome was recorded and the slot claimed that job, which
    ///   runs now.
    /// - A pending slot still showing the record its claim wrote (payload
    ///   and `run_at`) is either unchanged or recorded and given a job with
    ///   the same bytes in the same second (Resque payloads carry no id).
    ///   The slot's own counters tell: `counted` holds how many successes
    ///   and failures this worker has recorded for each slot (including
    ///   what plugins counted there themselves, such as Retry's re-enqueued
    ///   attempts), and a stored count above it means the lost round
    ///   recorded this one too. A discarded outcome counts nothing, but its
    ///   slot claims nothing in the same round, so its claim's record still
    ///   there means the discard is still to be recorded.
    async fn settle(&self, book: &mut SlotBook) -> Result<Vec<(usize, Arc<Claimed>)>> {
        let order: Vec<usize> = book.idle.iter().chain(book.done_slots.iter()).copied().collect();
        let ids: Vec<WorkerId> = order.iter().filter_map(|&i| book.slots.get(i).cloned()).collect();
        let records = self.backend.working_on_many(&ids).await?;
        let first_pending = book.idle.len();
        let mut stored: Option<HashMap<String, i64>> = None;
        let mut still_pending = vec![false; book.done.len()];
        let mut now_idle = Vec::new();
        let mut recovered = Vec::new();
        for (k, (slot, record)) in order.into_iter().zip(records).enumerate() {
            let outcome = k
                .checked_sub(first_pending)
                .and_then(|j| book.done.get(j))
                .map(|(_, o)| o.clone());
            let Some(r) = record else {
                // Nothing claimed; a pending outcome was recorded.
                if let Some(o) = &outcome {
                    book.count(slot, o);
                }
                book.set_held(slot, None);
                now_idle.push(slot);
                continue;
            };
            let unchanged = book
                .held
                .get(slot)
                .and_then(Option::as_ref)
                .is_some_and(|h| h.wrote(&r));
            let recorded = match &outcome {
                None => false,
                Some(o) if !unchanged => {
                    book.count(slot, o);
                    true
                }
                // A discarding slot claimed nothing in that round
                // (`reclaiming`): its claim's record still there means the
                // discard was not recorded.
                Some(Outcome::Discard) => false,
                Some(o) => {
                    if stored.is_none() {
                        stored = Some(self.backend.stats().await?.into_iter().collect());
                    }
                    let name = book.slots.get(slot).map(|id| id.name.as_str()).unwrap_or_default();
                    let now = stored.as_ref().map_or(0, |m| {
                        m.get(&format!("processed:{name}")).copied().unwrap_or(0)
                            + m.get(&format!("failed:{name}")).copied().unwrap_or(0)
                    });
                    let was = book.counted.get(slot).copied().unwrap_or(0);
                    if now > was {
                        book.count(slot, o);
                        true
                    } else {
                        false
                    }
                }
            };
            if outcome.is_some() && !recorded {
                if let Some(p) = still_pending.get_mut(k - first_pending) {
                    *p = true;
                }
                continue;
            }
            let run_at = Arc::from(r.run_at.as_str());
            let job = Arc::new(Claimed {
                queue: r.queue,
                payload: r.payload,
                enqueued_at_ms: None,
            });
            book.set_held(
                slot,
                Some(Held {
                    job: Arc::clone(&job),
                    run_at,
                }),
            );
            recovered.push((slot, job));
        }
        let mut keep = still_pending.into_iter();
        let mut kept_slots = Vec::new();
        let entries = std::mem::take(&mut book.done);
        for (entry, slot) in entries.into_iter().zip(book.done_slots.drain(..)) {
            if keep.next().unwrap_or(false) {
                book.done.push(entry);
                kept_slots.push(slot);
            }
        }
        book.done_slots = kept_slots;
        book.idle = now_idle;
        if !recovered.is_empty() {
            tracing::warn!(target: "resq::worker", worker = %self.id.name, jobs = recovered.len(), "recovered claims whose replies were lost");
        }
        Ok(recovered)
    }

    /// Registers the worker, cleaning an earlier registration under the same
    /// id first. Retries while the backend is down. False if shut down first.
    async fn start(&self, shutdown: &CancellationToken) -> bool {
        self.start_ids(std::slice::from_ref(&self.id), shutdown).await
    }

    /// Registers `ids` (the worker's slots), cleaning an earlier
    /// registration under the same ids first. Retries while the backend is
    /// down. False if shut down first.
    async fn start_ids(&self, ids: &[WorkerId], shutdown: &CancellationToken) -> bool {
        let mut backoff = Backoff::new(Duration::from_millis(50), self.config.poll_interval);
        loop {
            if shutdown.is_cancelled() {
                return false;
            }
            // A shutdown while registering (which can wait long on a
            // backend without a free connection) stops at once; the
            // registration may have been applied, so it is undone.
            match unless_shutdown(shutdown, self.register(ids)).await {
                Some(Ok(())) => break,
                Some(Err(e)) => {
                    self.backend_error(e);
                    backoff.wait(shutdown).await;
                }
                None => {
                    let deadline = Instant::now() + UNREGISTER_BUDGET;
                    for id in ids {
                        let _ = self.unregister(id, deadline).await;
                    }
                    return false;
                }
            }
        }
        tracing::info!(target: "resq::worker", worker = %self.id.name, queues = %self.id.queues, "start");
        emit(
            &self.events,
            WorkerEvent::Start {
                worker: self.id.name.clone(),
                slots: self.config.concurrency.max(1),
            },
        );
        if let Some(observer) = &self.config.observer {
            observer.worker_started(&self.id.name, self.config.concurrency.max(1));
        }
        true
    }

    /// Registers `ids` (a multi-slot worker has many) in a few round trips
    /// whatever their number: one listing of the registry, one read of their
    /// working-on records, one registration. An id that is already listed,
    /// or still has a working-on record, is cleaned first (its job requeued).
    /// Idempotent, so the caller simply retries after an error.
    async fn register(&self, ids: &[WorkerId]) -> Result<()> {
        let listed: HashSet<WorkerId> = self.backend.workers().await?.into_iter().collect();
        let records = self.backend.working_on_many(ids).await?;
        for (id, record) in ids.iter().zip(records) {
            if !listed.contains(id) && record.is_none() {
                continue;
            }
            if let Some(cleaned) = self.backend.clean_worker(id, Orphan::Requeue).await? {
                tracing::warn!(target: "resq::worker", worker = %id.name, "cleaned an earlier registration under this name");
                emit(
                    &self.events,
                    WorkerEvent::CleaningWorker {
                        worker: id.name.clone(),
                        cleaned,
                    },
                );
            }
        }
        self.backend.register_workers(ids, now_ms()).await
    }

    /// Unregisters; a job still recorded (aborted at the deadline) goes back
    /// to the head of its queue.
    async fn stop(&self) -> Result<()> {
        let result = self.unregister(&self.id, Instant::now() + UNREGISTER_BUDGET).await;
        tracing::info!(target: "resq::worker", worker = %self.id.name, "end");
        emit(
            &self.events,
            WorkerEvent::End {
                worker: self.id.name.clone(),
                slots: self.config.concurrency.max(1),
            },
        );
        if let Some(observer) = &self.config.observer {
            observer.worker_stopped(&self.id.name, self.config.concurrency.max(1));
        }
        self.finish(result)
    }

    /// Unregisters `id` (its recorded job, if any, back to the head of its
    /// queue), retrying transient errors a few times, and giving up at
    /// `deadline` (see [`UNREGISTER_BUDGET`]).
    async fn unregister(&self, id: &WorkerId, deadline: Instant) -> Result<()> {
        let mut last_err = None;
        for attempt in 0..5u32 {
            let left = deadline.saturating_duration_since(Instant::now());
            let cleaned = match tokio::time::timeout(left, self.backend.clean_worker(id, Orphan::Requeue)).await {
                Ok(r) => r,
                Err(_) => {
                    let e = Error::transient(format!(
                        "could not unregister worker {} within {UNREGISTER_BUDGET:?}: it is left to the stuck-worker clean-up, which puts its job (if any) back on its queue",
                        id.name
                    ));
                    self.error(&e);
                    return Err(e);
                }
            };
            match cleaned {
                Ok(_) => {
                    last_err = None;
                    break;
                }
                // A permanent error is kept for `run` to return; no retries.
                Err(e) if e.is_permanent() => {
                    self.backend_error(e);
                    return Ok(());
                }
                Err(e) => {
                    self.error(&e);
                    last_err = Some(e);
                    let pause = Duration::from_millis(100 * u64::from(attempt + 1));
                    if Instant::now() + pause >= deadline {
                        break;
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
        match last_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Reports a failed backend call. A transient (or undecodable) one is
    /// logged at WARN (the caller backs off and retries). The first permanent one is logged
    /// once at ERROR, kept for `run` to return, and stops the worker as a
    /// shutdown would; later ones (while it stops) are logged at DEBUG only.
    fn backend_error(&self, e: Error) {
        if !e.is_permanent() {
            self.error(&e);
            return;
        }
        let mut fatal = self.fatal.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if fatal.is_some() {
            tracing::debug!(target: "resq::worker", worker = %self.id.name, error = %e, "another permanent backend error while stopping");
            return;
        }
        tracing::error!(target: "resq::worker", worker = %self.id.name, error = %e, "permanent backend error: the worker stops");
        emit(
            &self.events,
            WorkerEvent::Error {
                worker: self.id.name.clone(),
                error: e.to_string(),
            },
        );
        *fatal = Some(e);
        self.halt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .cancel();
    }

    /// True once a permanent backend error has stopped the worker.
    fn stopped_by_error(&self) -> bool {
        self.fatal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }

    /// What `run` returns after the worker stopped: the permanent backend
    /// error that stopped it, if any, else `stopped`.
    fn finish(&self, stopped: Result<()>) -> Result<()> {
        let fatal = self
            .fatal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match fatal {
            Some(e) => Err(e),
            None => stopped,
        }
    }

    fn error(&self, e: &dyn std::fmt::Display) {
        tracing::warn!(target: "resq::worker", worker = %self.id.name, error = %e, "error");
        emit(
            &self.events,
            WorkerEvent::Error {
                worker: self.id.name.clone(),
                error: e.to_string(),
            },
        );
    }

    async fn perform(
        &self,
        claimed: Claimed,
        run_at: Arc<str>,
        watch: &Arc<CancelWatch>,
        shutdown: &CancellationToken,
    ) {
        // Watched for cancel requests until this returns.
        let claimed = Arc::new(claimed);
        let guard = watch.begin(0, &claimed, run_at);
        let stop = JobStop {
            token: guard.token(),
            default_timeout: self.config.job_timeout,
        };
        let job = execute(
            &self.client,
            &self.events,
            self.config.observer.as_deref(),
            &self.shared_id,
            &claimed,
            &stop,
        );
        // The job runs on this worker's own task (no spawn per job): `execute`
        // catches panics, and dropping it at the deadline cancels it.
        tokio::pin!(job);
        let grace = self.config.shutdown_timeout;
        let deadline = async move {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        // The job first: one that finishes on its first poll never
        // registers a wait on the shutdown token.
        tokio::select! {
            biased;
            ran = &mut job => self.complete(&self.id, ran.outcome, shutdown).await,
            _ = deadline => {
                self.error(&format!(
                    "a job did not finish within the shutdown timeout of {grace:?}: aborted and put back on its queue"
                ));
            }
        }
    }

    /// Records the outcome, retrying through backend errors for as long as
    /// the worker runs; the worker claims nothing meanwhile, so its
    /// working-on record is never overwritten. At shutdown it gives up after
    /// ten tries and the unregistration puts the job back on its queue.
    /// A retry first checks the working-on record: gone means the failed
    /// call was applied and only its reply was lost (or someone cleaned
    /// this worker and put the job back), so it is not recorded twice.
    async fn complete(&self, id: &WorkerId, outcome: Outcome, shutdown: &CancellationToken) {
        let mut attempt: u32 = 0;
        loop {
            // Only a record known to be still there is completed again.
            let call = if attempt == 0 {
                self.backend.complete(id, outcome.clone()).await
            } else {
                match self.backend.working_on(id).await {
                    Ok(None) => return,
                    Ok(Some(_)) => self.backend.complete(id, outcome.clone()).await,
                    Err(e) => Err(e),
                }
            };
            match call {
                Ok(()) => return,
                // Retrying cannot help: the worker stops, and unregistering
                // puts the job back on its queue if the backend still can.
                Err(e) if e.is_permanent() => {
                    self.backend_error(e);
                    return;
                }
                Err(e) => {
                    self.error(&e);
                    attempt += 1;
                    if attempt >= 10 && shutdown.is_cancelled() {
                        // Unregistering puts the job back: it may run again, but is not lost.
                        return;
                    }
                    let wait = Duration::from_millis(50 * u64::from(attempt.min(40)));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// A slot's running job: resolves to the slot and the job's outcome.
type SlotJob = Pin<Box<dyn Future<Output = (usize, Ran)> + Send>>;

/// A multi-slot worker's bookkeeping: which slots are idle, which have
/// finished jobs whose outcomes are not recorded yet, what each slot's last
/// claim recorded, and how many outcomes it has had counted.
struct SlotBook {
    slots: Vec<WorkerId>,
    /// `slots`, shared with the jobs they run (not copied per job).
    shared: Vec<Arc<WorkerId>>,
    /// Slots without a job, in the order their next claims fill them.
    idle: Vec<usize>,
    /// Finished jobs' outcomes to record, with their slots (`done_slots`,
    /// the same order).
    done: Vec<(WorkerId, Outcome)>,
    done_slots: Vec<usize>,
    /// Per slot: the working-on record its last claim wrote, until its
    /// outcome is recorded.
    held: Vec<Option<Held>>,
    /// Per slot: successes and failures recorded for it (its
    /// `processed:`/`failed:` counters, as far as this worker knows).
    counted: Vec<i64>,
}

impl SlotBook {
    fn new(slots: Vec<WorkerId>) -> Self {
        let n = slots.len();
        SlotBook {
            shared: slots.iter().cloned().map(Arc::new).collect(),
            slots,
            idle: (0..n).rev().collect(),
            done: Vec::new(),
            done_slots: Vec::new(),
            held: vec![None; n],
            counted: vec![0; n],
        }
    }

    fn ids<'a>(&self, which: impl Iterator<Item = &'a usize>) -> Vec<WorkerId> {
        which.filter_map(|&i| self.slots.get(i).cloned()).collect()
    }

    /// A slot's job finished with this outcome. What its plugins counted
    /// on the slot's own counters is stored already, so it counts now.
    fn finished(&mut self, (slot, ran): (usize, Ran)) {
        if let Some(c) = self.counted.get_mut(slot) {
            *c += ran.plugin_counts;
        }
        if let Some(id) = self.slots.get(slot) {
            self.done.push((id.clone(), ran.outcome));
            self.done_slots.push(slot);
        }
    }

    /// The slots that claim in the same round as their outcome is
    /// recorded: all but those whose job was discarded (see `recorded`).
    fn reclaiming(&self) -> impl Iterator<Item = &usize> {
        self.done_slots
            .iter()
            .zip(&self.done)
            .filter(|(_, (_, outcome))| !matches!(outcome, Outcome::Discard))
            .map(|(slot, _)| slot)
    }

    fn set_held(&mut self, slot: usize, held: Option<Held>) {
        if let Some(h) = self.held.get_mut(slot) {
            *h = held;
        }
    }

    /// `outcome` was recorded for `slot`.
    fn count(&mut self, slot: usize, outcome: &Outcome) {
        if matches!(outcome, Outcome::Success | Outcome::Failure { .. }) {
            if let Some(c) = self.counted.get_mut(slot) {
                *c += 1;
            }
        }
    }

    /// Every outcome in `done` was recorded: their slots are idle again,
    /// the `reclaiming` ones first, in order (a round's claims index into
    /// `idle`), then those whose job was discarded.
    fn recorded(&mut self) {
        let done = std::mem::take(&mut self.done);
        let slots = std::mem::take(&mut self.done_slots);
        let mut discarded = Vec::new();
        for ((_, outcome), &slot) in done.iter().zip(&slots) {
            self.count(slot, outcome);
            self.set_held(slot, None);
            if matches!(outcome, Outcome::Discard) {
                discarded.push(slot);
            } else {
                self.idle.push(slot);
            }
        }
        self.idle.extend(discarded);
        // Keep the allocations for the next round.
        self.done = done;
        self.done.clear();
    }
}

/// The working-on record a slot's claim wrote, kept until the job's outcome
/// is recorded, to tell after a lost reply whether the record is still it.
#[derive(Clone)]
struct Held {
    /// The claimed job, whose payload the record holds.
    job: Arc<Claimed>,
    run_at: Arc<str>,
}

impl Held {
    /// Whether `record` is the one this claim wrote. A backend may hand the
    /// payload back normalised (Redis reads it out of a JSON record:
    /// surrounding whitespace trimmed, a JSON string unquoted), so equal
    /// JSON values count as the same payload.
    fn wrote(&self, record: &WorkingOn) -> bool {
        if *self.run_at != *record.run_at {
            return false;
        }
        let payload = &self.job.payload;
        if *payload == record.payload {
            return true;
        }
        match serde_json::from_str::<serde_json::Value>(payload) {
            Ok(serde_json::Value::String(inner)) => inner == record.payload,
            Ok(mine) => serde_json::from_str::<serde_json::Value>(&record.payload).is_ok_and(|theirs| theirs == mine),
            Err(_) => false,
        }
    }
}

/// How many times a stopping multi-slot worker retries recording its last
/// outcomes before leaving their jobs to the unregistration.
const STOP_ATTEMPTS: u32 = 10;

/// A job's outcome, and how many `processed`/`failed` counts its plugins
/// added to the worker's own counters themselves (Retry's re-enqueued
/// attempts, through [`PerformContext::count_failed`]).
struct Ran {
    outcome: Outcome,
    plugin_counts: i64,
}

impl Ran {
    fn of(outcome: Outcome) -> Self {
        Ran {
            outcome,
            plugin_counts: 0,
        }
    }
}

/// Runs a slot's job on a task of its own and resolves to its outcome.
///
/// Slot jobs must not run on the worker's task: while that task awaits a
/// backend call (a completion or a claim), jobs polled only by it would
/// stall, and a job stalled mid-call holds its pooled connection, so with a
/// small pool (PostgreSQL) the worker's own call would wait for a
/// connection that only the stalled job can give back. Dropping the
/// returned future (at the shutdown deadline) aborts the job's task. The
/// job runs through [`execute`], the one path both worker modes share.
fn spawn_slot_job(
    client: Queue,
    events: broadcast::Sender<WorkerEvent>,
    observer: Option<Arc<dyn JobObserver>>,
    worker: Arc<WorkerId>,
    claimed: Arc<Claimed>,
    stop: JobStop,
) -> impl Future<Output = Ran> + Send {
    let payload = Arc::clone(&claimed);
    let slot = Arc::clone(&worker);
    let task_events = events.clone();
    let task_observer = observer.clone();
    // Boxed: the task then holds a pointer, not the job's whole state
    // machine (kilobytes: every stage, plugin hooks, the periodic re-arm),
    // which the runtime would copy each time it moves the task's stage
    // (spawning, finishing, reading the output: about 1,300 instructions
    // of `memcpy` per job on memory with 256 slots, measured by callgrind).
    let job = Box::pin(async move {
        execute(
            &client,
            &task_events,
            task_observer.as_deref(),
            &worker,
            &claimed,
            &stop,
        )
        .await
    });
    let handle = AbortOnDrop(tokio::spawn(async move {
        let mut job = job;
        let ran = job.as_mut().await;
        // The finished box goes back with the outcome, so the worker's task,
        // which allocated it, frees it too. Freed on the thread that ran
        // the job, it went back into the allocating thread's malloc arena
        // under that arena's lock, which the worker's task takes for its
        // next job's allocations at the same moment: with glibc's malloc,
        // memory 1 x 256 ran at 0.73x of this (BENCHMARKS.md).
        (ran, job)
    }));
    async move {
        let mut handle = handle;
        match (&mut handle.0).await {
            Ok((ran, job)) => {
                drop(job);
                ran
            }
            // `execute` catches panics; this is a task cancelled by the runtime.
            Err(e) => {
                let failure = Failure::new("Panic", format!("the job's task ended abnormally: {e}"));
                let report = Report::new(&events, observer.as_deref());
                Ran::of(failure_outcome(
                    report,
                    &slot.name,
                    &payload,
                    None,
                    failure,
                    Instant::now(),
                ))
            }
        }
    }
}

/// The text of a caught panic.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Polls `f` to its end, catching a panic as its message.
async fn guarded<F: Future>(f: F) -> std::result::Result<F::Output, String> {
    std::panic::AssertUnwindSafe(f)
        .catch_unwind()
        .await
        .map_err(|panic| panic_message(&*panic))
}

/// Runs one claimed job to its outcome: the one job-execution path of both
/// worker modes. A panic anywhere in the job's life (a plugin hook, the
/// task, the periodic re-arm) fails that job, with the place it panicked
/// as the reason; it never reaches the worker.
///
/// The job runs inside a `tracing` span named `resq.job` (level INFO,
/// target `resq::job`) with the fields `queue`, `class` (recorded once the
/// payload decodes; empty for an undecodable one), `attempt` and `worker`,
/// so a subscriber (an OpenTelemetry layer, say) sees one span per job
/// without code of its own; with no subscriber interested it costs one
/// callsite check. `attempt` is 1 unless the Retry plugin counts a failed
/// attempt of the job, which records that attempt's number (1-based) on the
/// span: the attempt count lives in the store, and the span reads nothing
/// from it, so a retry that succeeds shows 1.
///
/// Everything is borrowed: the single-slot loop runs it in place with the
/// worker's own handles (no per-job clones of the client, the event sender
/// or the ids), and a slot's task owns the copies it borrows from.
async fn execute(
    client: &Queue,
    events: &broadcast::Sender<WorkerEvent>,
    observer: Option<&dyn JobObserver>,
    slot: &WorkerId,
    claimed: &Claimed,
    stop: &JobStop,
) -> Ran {
    let worker = slot.name.as_str();
    let span = tracing::info_span!(target: "resq::job", "resq.job",
        queue = %claimed.queue,
        class = tracing::field::Empty,
        attempt = 1u64,
        worker = %worker,
    );
    // The job's one clock read before it ends (a task with limits reads
    // another after its admission).
    let started = Instant::now();
    let run = async {
        let report = Report::new(events, observer);
        match guarded(run_job(client, report, slot, claimed, stop, started)).await {
            Ok(ran) => ran,
            // Every stage is guarded on its own; this catches the rest.
            Err(message) => {
                let failure = Failure::new("Panic", format!("the job panicked: {message}"));
                Ran::of(failure_outcome(report, worker, claimed, None, failure, started))
            }
        }
    };
    run.instrument(span).await
}

/// Decodes the job, finds its task, runs its plugins' `before_perform`
/// hooks, the task, the periodic re-enqueue, and the `after_perform` hooks,
/// each with its panics caught, and reports `job`, `success` or `failure`.
/// An undecodable payload or an unknown class is a failure, never a panic.
async fn run_job(
    client: &Queue,
    report: Report<'_>,
    slot: &WorkerId,
    claimed: &Claimed,
    stop: &JobStop,
    started: Instant,
) -> Ran {
    let worker = slot.name.as_str();
    let job = match Job::decode(&claimed.payload) {
        Ok(job) => {
            tracing::Span::current().record("class", job.class.as_str());
            Arc::new(job)
        }
        Err(e) => {
            let failure = Failure::new(PAYLOAD_ERROR, e.to_string());
            return Ran::of(failure_outcome(report, worker, claimed, None, failure, started));
        }
    };
    let Some(def) = client.tasks().and_then(|t| t.get(&job.class)).cloned() else {
        let failure = Failure::new("Error", format!("No job defined for class \"{}\"", job.class));
        return Ran::of(failure_outcome(report, worker, claimed, Some(&job), failure, started));
    };
    // Tasks without limits pay nothing here: the definition says so locally.
    let Some(limits) = def.task_limits().copied() else {
        return run_started(client, report, worker, claimed, stop, job, def, started).await;
    };
    match admit(client, slot, &job, &limits).await {
        Ok(crate::flow::TaskAdmission::Admitted) => {}
        Ok(refused) => return Ran::of(throttle(client, report, worker, claimed, &job, refused).await),
        Err(e) if e.is_permanent() => {
            let failure = Failure::new(
                "FlowControlError",
                format!("the task's limits could not be checked: {e}"),
            );
            return Ran::of(failure_outcome(report, worker, claimed, Some(&job), failure, started));
        }
        Err(e) => {
            // The limit is unknown: the job waits as at a full cap rather
            // than risk exceeding it.
            tracing::warn!(target: "resq::worker", %worker, class = %job.class, error = %e,
                "the task's limits could not be checked; the job waits and tries again");
            let refused = crate::flow::TaskAdmission::AtCapacity;
            return Ran::of(throttle(client, report, worker, claimed, &job, refused).await);
        }
    }
    let ran = run_started(client, report, worker, claimed, stop, job, def, Instant::now()).await;
    if limits.concurrency.is_some() {
        release_slot(client, slot).await;
    }
    ran
}

/// Asks the backend for a start of `job`'s limited task on `slot`,
/// retrying a transient error a few times.
async fn admit(
    client: &Queue,
    slot: &WorkerId,
    job: &Job,
    limits: &crate::flow::TaskLimits,
) -> Result<crate::flow::TaskAdmission> {
    let backend = client.backend();
    let mut attempt = 0u32;
    loop {
        match backend.acquire_task_start(&job.class, limits, slot).await {
            Err(e) if !e.is_permanent() && attempt < 3 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
            other => return other,
        }
    }
}

/// Gives back `slot`'s task slot after its job, retrying a transient error
/// a few times. A slot still held after that is released by the slot's
/// next limited job (acquiring releases the slot's earlier one) or when
/// the worker is cleaned.
async fn release_slot(client: &Queue, slot: &WorkerId) {
    let backend = client.backend();
    for attempt in 0u64..4 {
        match backend.release_task_slot(slot).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(target: "resq::worker", worker = %slot.name, error = %e, "releasing a task slot failed");
                if e.is_permanent() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
            }
        }
    }
}

/// How many later one-second buckets a throttled job tries when its due
/// bucket already holds an identical payload (the delayed schedule keeps
/// one copy per bucket) before it goes back to its queue's tail instead.
const THROTTLE_BUCKET_TRIES: i64 = 60;

/// Puts a job its task's limits refused back on the delayed schedule, due
/// when the limit frees: the schedule is written first, and only then is
/// the claim completed (as a discard: no counters), so the job is never
/// lost. A crash between the two leaves the job both scheduled and in the
/// worker's working-on record, which the stuck-worker clean-up requeues
/// (or fails, by policy): the job may then run twice, as any job whose
/// worker crashed at its end may. The payload keeps its bytes when it names
/// its queue; a payload without one (Ruby's) is re-encoded naming the
/// queue it came from, which promotion needs.
async fn throttle(
    client: &Queue,
    report: Report<'_>,
    worker: &str,
    claimed: &Claimed,
    job: &Arc<Job>,
    refused: crate::flow::TaskAdmission,
) -> Outcome {
    let retry_after = refused.retry_after().unwrap_or(crate::flow::CAP_RETRY);
    let limit = refused.limit().unwrap_or("concurrency");
    let payload = if job.queue.is_some() {
        claimed.payload.clone()
    } else {
        crate::job::encode_payload(&claimed.queue, &job.class, &job.args)
    };
    let backend = client.backend();
    // A store of one-second buckets promotes a job up to a second after the
    // time asked for, never before. Asking half its precision earlier makes
    // the job due on time on average instead of always late (a job promoted
    // before its limit frees is only refused again: the admission, not the
    // schedule, enforces the limit), which a rate-limited backlog needs to
    // keep its throughput near the limit.
    let precision = backend.delayed_precision();
    let ahead = if precision > Duration::from_millis(1) {
        precision / 2
    } else {
        Duration::ZERO
    };
    let wait_ms = i64::try_from(retry_after.saturating_sub(ahead).as_millis()).unwrap_or(i64::MAX);
    let due = now_ms().saturating_add(wait_ms);
    let mut attempt = 0u32;
    let mut tries = 0i64;
    loop {
        let placed = if tries < THROTTLE_BUCKET_TRIES {
            backend
                .schedule_ms(due.saturating_add(tries.saturating_mul(1000)), &payload)
                .await
        } else {
            backend.push(&claimed.queue, &payload).await.map(|()| true)
        };
        match placed {
            Ok(true) => break,
            // The bucket holds an identical payload: the next one.
            Ok(false) => tries += 1,
            Err(e) => {
                attempt += 1;
                tracing::warn!(target: "resq::worker", %worker, class = %job.class, error = %e,
                    "putting a throttled job back on the schedule failed");
                if e.is_permanent() || attempt >= 10 {
                    let failure = Failure::new(
                        "FlowControlError",
                        format!("the job was over its task's {limit} limit and could not be put back: {e}"),
                    );
                    return failure_outcome(report, worker, claimed, Some(job), failure, Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
        }
    }
    tracing::debug!(target: "resq::worker", %worker, queue = %claimed.queue, class = %job.class,
        limit, ?retry_after, "throttled");
    emit_with(report.events, || WorkerEvent::Throttled {
        worker: worker.to_owned(),
        queue: claimed.queue.clone(),
        job: Arc::clone(job),
        limit,
        retry_after,
    });
    report.finished(
        worker,
        &claimed.queue,
        &job.class,
        JobOutcome::Throttled,
        Duration::ZERO,
    );
    Outcome::Discard
}

/// Runs a decoded job of a known task that may start: its plugins'
/// `before_perform` hooks, the task, the periodic re-enqueue and the
/// `after_perform` hooks.
// Eight: the job's parts as decoded so far, each borrowed; a struct to
// carry them would be built once per job only to be taken apart here.
#[allow(clippy::too_many_arguments)]
async fn run_started(
    client: &Queue,
    report: Report<'_>,
    worker: &str,
    claimed: &Claimed,
    stop: &JobStop,
    job: Arc<Job>,
    def: Arc<crate::task::TaskDef>,
    started: Instant,
) -> Ran {
    let events = report.events;
    tracing::debug!(target: "resq::worker", %worker, queue = %claimed.queue, class = %job.class, "job");
    emit_with(events, || WorkerEvent::Job {
        worker: worker.to_owned(),
        queue: claimed.queue.clone(),
        job: Arc::clone(&job),
        enqueued_at_ms: claimed.enqueued_at_ms,
    });
    if let Some(observer) = report.observer {
        observer.job_started(worker, &claimed.queue, &job.class, claimed.enqueued_at_ms);
    }
    let report = Report {
        job_started: true,
        ..report
    };
    let mut hooks = PerformContext::new(client, worker, &claimed.queue, Arc::clone(&job));
    hooks.events = Some(events);
    for plugin in def.plugins() {
        hooks.options = def.options_for(plugin.name());
        let failure = match guarded(plugin.before_perform(&mut hooks)).await {
            Ok(Ok(true)) => continue,
            Ok(Ok(false)) => {
                tracing::debug!(target: "resq::worker", %worker, queue = %claimed.queue, class = %job.class,
                    plugin = plugin.name(), "skipped by plugin");
                emit_with(events, || WorkerEvent::Skipped {
                    worker: worker.to_owned(),
                    queue: claimed.queue.clone(),
                    job: Arc::clone(&job),
                    plugin: plugin.name().to_owned(),
                });
                report.finished(
                    worker,
                    &claimed.queue,
                    &job.class,
                    JobOutcome::Skipped,
                    started.elapsed(),
                );
                return Ran {
                    outcome: Outcome::Discard,
                    plugin_counts: hooks.plugin_counts,
                };
            }
            Ok(Err(e)) => Failure::new("PluginError", format!("{} before_perform: {e}", plugin.name())),
            Err(panic) => Failure::new("Panic", format!("{} before_perform panicked: {panic}", plugin.name())),
        };
        let job = Arc::clone(&hooks.job);
        let outcome = failure_outcome(report, worker, claimed, Some(&job), failure, started);
        return Ran {
            outcome,
            plugin_counts: hooks.plugin_counts,
        };
    }
    let job = Arc::clone(&hooks.job);
    let ctx = JobContext {
        worker: worker.to_owned(),
        queue: claimed.queue.clone(),
        job: Arc::clone(&job),
        cancel: Arc::clone(&stop.token),
    };
    let limit = def.timeout_limit().or(stop.default_timeout);
    let ended = if stop.token.is_stopped() {
        // Cancelled while its before_perform hooks ran: the task never starts.
        Ended::Cancelled
    } else {
        // Dropping the task's future (when the select ends) is what stops
        // it. A stop wins at every poll: the first branch reads the flag
        // (registering nothing) before the task is polled, so a task woken
        // by its cancellation is dropped, not polled to a success. The
        // stop signal's wait is registered only after the task's poll, so
        // a task done on its first poll registers no wait on it or a timer.
        let stopped_now = std::future::poll_fn(|_| {
            if stop.token.is_stopped() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        });
        tokio::select! {
            biased;
            _ = stopped_now => Ended::Cancelled,
            ran = guarded(def.code().call(ctx)) => Ended::Ran(ran),
            _ = stop.token.stopped() => Ended::Cancelled,
            _ = sleep_for(limit) => Ended::TimedOut,
        }
    };
    match ended {
        Ended::Ran(Ok(Ok(result))) => hooks.result = Some(result),
        Ended::Ran(Ok(Err(task_error))) => hooks.error = Some(task_error),
        Ended::Ran(Err(message)) => hooks.error = Some(TaskError::new(message).with_exception("Panic")),
        Ended::TimedOut => {
            // For work the task handed elsewhere (see `JobContext::cancelled`).
            stop.token.stop();
            let ms = limit.map_or(0, |l| l.as_millis());
            tracing::warn!(target: "resq::worker", %worker, queue = %claimed.queue, class = %job.class,
                limit_ms = %ms, "job timed out");
            hooks.error = Some(
                TaskError::new(format!("the job ran past its timeout of {ms} ms and was stopped"))
                    .with_exception(JOB_TIMEOUT),
            );
        }
        Ended::Cancelled => hooks.cancelled = true,
    }
    if def.is_periodic() && (hooks.error.is_none() || def.reenqueue_periodic_on_error) {
        let error = match guarded(crate::recurrent::reenqueue_after_run(client, &def)).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(
                TaskError::new(format!("re-enqueueing the periodic task failed: {e}")).with_exception("PeriodicError"),
            ),
            Err(panic) => Some(
                TaskError::new(format!("re-enqueueing the periodic task panicked: {panic}")).with_exception("Panic"),
            ),
        };
        if let Some(error) = error {
            tracing::warn!(target: "resq::worker", %worker, class = %job.class, error = %error, "periodic re-enqueue failed");
            hooks.error.get_or_insert(error);
        }
    }
    for plugin in def.plugins() {
        hooks.options = def.options_for(plugin.name());
        let error = match guarded(plugin.after_perform(&mut hooks)).await {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => TaskError::new(format!("{} after_perform: {e}", plugin.name())).with_exception("PluginError"),
            Err(panic) => {
                TaskError::new(format!("{} after_perform panicked: {panic}", plugin.name())).with_exception("Panic")
            }
        };
        tracing::warn!(target: "resq::worker", %worker, plugin = plugin.name(), error = %error, "after_perform failed");
        hooks.error.get_or_insert(error);
    }
    let plugin_counts = hooks.plugin_counts;
    if hooks.cancelled {
        let outcome = cancelled_outcome(client, report, worker, claimed, &job, started).await;
        return Ran { outcome, plugin_counts };
    }
    let outcome = match hooks.error.take() {
        None => {
            let duration = started.elapsed();
            tracing::info!(target: "resq::worker", %worker, queue = %claimed.queue, class = %job.class, ?duration, "success");
            let result = hooks.result.take().unwrap_or(serde_json::Value::Null);
            emit_with(events, || WorkerEvent::Success {
                worker: worker.to_owned(),
                queue: claimed.queue.clone(),
                job: Arc::clone(&job),
                result,
                duration,
            });
            let outcome = if hooks.re_enqueued.load(Ordering::Relaxed) {
                JobOutcome::Retried
            } else {
                JobOutcome::Success
            };
            report.finished(worker, &claimed.queue, &job.class, outcome, duration);
            if hooks.counted() {
                Outcome::Success
            } else {
                Outcome::Discard
            }
        }
        Some(task_error) => failure_outcome(report, worker, claimed, Some(&job), task_error.to_failure(), started),
    };
    Ran { outcome, plugin_counts }
}

/// What stops a running job: its token (a cancel request, or the timeout
/// for work the task handed elsewhere) and the worker's default timeout.
struct JobStop {
    /// Set by a cancel request; behind the job's [`JobContext::cancelled`].
    token: Arc<crate::cancel::StopSignal>,
    /// [`WorkerConfig::job_timeout`], for tasks that set no limit.
    default_timeout: Option<Duration>,
}

/// How a task's code ended.
enum Ended {
    /// It returned (or panicked, as the message).
    Ran(std::result::Result<std::result::Result<serde_json::Value, TaskError>, String>),
    /// Its timeout passed first: dropped.
    TimedOut,
    /// A cancel request came first: dropped (or never started).
    Cancelled,
}

/// Sleeps for `limit`, or for ever without one.
async fn sleep_for(limit: Option<Duration>) {
    match limit {
        Some(l) => tokio::time::sleep(l).await,
        None => std::future::pending::<()>().await,
    }
}

/// The name of the counter of cancelled running jobs: `stat:resq:cancelled`
/// on Redis (under resq's sub-prefix, which Resque tools list as just
/// another stat), a `stats` row elsewhere.
pub const CANCELLED_STAT: &str = "resq:cancelled";

/// A job stopped by a cancel request: reported (`cancelled` event and
/// observer outcome), counted in [`CANCELLED_STAT`], and completed as a
/// discard (its working-on record goes, no failed entry, no `processed` or
/// `failed` count). The counter is a call of its own before the
/// completion: a failure to count is logged and does not keep the job.
async fn cancelled_outcome(
    client: &Queue,
    report: Report<'_>,
    worker: &str,
    claimed: &Claimed,
    job: &Arc<Job>,
    started: Instant,
) -> Outcome {
    let duration = started.elapsed();
    tracing::info!(target: "resq::worker", %worker, queue = %claimed.queue, class = %job.class, ?duration, "cancelled");
    emit_with(report.events, || WorkerEvent::Cancelled {
        worker: worker.to_owned(),
        queue: claimed.queue.clone(),
        job: Arc::clone(job),
        duration,
    });
    report.finished(worker, &claimed.queue, &job.class, JobOutcome::Cancelled, duration);
    if let Err(e) = client.backend().incr_stat(CANCELLED_STAT, 1).await {
        tracing::warn!(target: "resq::worker", %worker, error = %e, "counting a cancelled job failed");
    }
    Outcome::Discard
}

/// Where a job's outcome is reported: the event channel, and the observer
/// if one is set.
#[derive(Clone, Copy)]
struct Report<'a> {
    events: &'a broadcast::Sender<WorkerEvent>,
    observer: Option<&'a dyn JobObserver>,
    /// Whether the observer was told the job started.
    job_started: bool,
}

impl<'a> Report<'a> {
    fn new(events: &'a broadcast::Sender<WorkerEvent>, observer: Option<&'a dyn JobObserver>) -> Self {
        Report {
            events,
            observer,
            job_started: false,
        }
    }

    fn finished(&self, worker: &str, queue: &str, class: &str, outcome: JobOutcome, duration: Duration) {
        if let Some(observer) = self.observer {
            observer.job_finished(&JobEnd {
                worker,
                queue,
                class,
                outcome,
                duration,
                started: self.job_started,
            });
        }
    }
}

fn failure_outcome(
    report: Report<'_>,
    worker: &str,
    claimed: &Claimed,
    job: Option<&Arc<Job>>,
    failure: Failure,
    started: Instant,
) -> Outcome {
    let duration = started.elapsed();
    let events = report.events;
    report.finished(
        worker,
        &claimed.queue,
        job.map(|j| j.class.as_str()).unwrap_or(""),
        JobOutcome::Failure,
        duration,
    );
    tracing::warn!(target: "resq::worker", %worker, queue = %claimed.queue,
        exception = %failure.exception, error = %failure.error, "failure");
    let entry = encode_entry(worker, &claimed.queue, &claimed.payload, &failure, now_ms());
    emit_with(events, || WorkerEvent::Failure {
        worker: worker.to_owned(),
        queue: claimed.queue.clone(),
        job: job.cloned(),
        payload: claimed.payload.clone(),
        exception: failure.exception.clone(),
        error: failure.error.clone(),
        duration,
    });
    Outcome::Failure { entry }
}

async fn ping_loop(
    backend: Arc<dyn Backend>,
    ids: Vec<WorkerId>,
    interval: Duration,
    events: broadcast::Sender<WorkerEvent>,
) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick fires at once; registration already pinged.
    tick.tick().await;
    // A ping failed: the first one that gets through checks the registration.
    let mut cut_off = false;
    loop {
        tick.tick().await;
        let pinged = ping_all(&backend, &ids, &events).await;
        if !pinged {
            cut_off = true;
        } else if cut_off && reregister(&backend, &ids).await {
            cut_off = false;
        }
    }
}

/// After pings failed: registers again the ids that are no longer listed
/// (the stuck-worker check cleaned them as dead while they could not reach
/// the store), so a live worker is not left pinging as a ghost. Returns
/// whether the check was made.
async fn reregister(backend: &Arc<dyn Backend>, ids: &[WorkerId]) -> bool {
    let listed: HashSet<WorkerId> = match backend.workers().await {
        Ok(w) => w.into_iter().collect(),
        Err(_) => return false,
    };
    let missing: Vec<WorkerId> = ids.iter().filter(|id| !listed.contains(id)).cloned().collect();
    if missing.is_empty() {
        return true;
    }
    match backend.register_workers(&missing, now_ms()).await {
        Ok(()) => {
            for id in &missing {
                tracing::warn!(target: "resq::worker", worker = %id.name,
                    "registered again: it was cleaned as dead while it could not reach the store (its job, if any, went back to its queue)");
            }
            true
        }
        Err(_) => false,
    }
}

/// Pings every id; returns whether the ping was recorded.
async fn ping_all(backend: &Arc<dyn Backend>, ids: &[WorkerId], events: &broadcast::Sender<WorkerEvent>) -> bool {
    let at_ms = now_ms();
    match backend.ping_workers(ids, at_ms).await {
        Ok(()) => {
            for id in ids {
                emit_with(events, || WorkerEvent::Ping {
                    worker: id.name.clone(),
                    at_ms,
                });
            }
            true
        }
        Err(e) => {
            for id in ids {
                tracing::warn!(target: "resq::worker", worker = %id.name, error = %e, "ping failed");
                emit(
                    events,
                    WorkerEvent::Error {
                        worker: id.name.clone(),
                        error: format!("ping failed: {e}"),
                    },
                );
            }
            false
        }
    }
}
