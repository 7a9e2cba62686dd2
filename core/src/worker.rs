//! The [`Worker`]: claims jobs from its queues in priority order, runs the
//! registered task, records the outcome, and keeps its liveness ping fresh.

use crate::backend::{Backend, Claimed, Orphan, Outcome, WorkerId};
use crate::error::Result;
use crate::event::{emit, WorkerEvent, EVENT_CAPACITY};
use crate::failed::{encode_entry, Failure, PAYLOAD_ERROR};
use crate::job::Job;
use crate::shutdown::{run_with_shutdown, AbortOnDrop, Backoff};
use crate::task::{JobContext, Tasks};
use crate::time::{js_date_string, now_ms};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

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

/// A worker's settings.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The worker's name; `None` picks a unique `host:pid+n`. Two live
    /// workers must never share a name.
    pub name: Option<String>,
    /// Queues in priority order. `*` (or an empty list) means every known
    /// queue, re-read as queues appear, in name order.
    pub queues: Vec<String>,
    /// How long an idle worker waits for a job before polling again. Backends
    /// that can wake a waiting worker (memory, Redis, Postgres) do so at once.
    pub poll_interval: Duration,
    /// How often the worker refreshes its liveness ping.
    pub ping_interval: Duration,
    /// How long an in-flight job may run on after shutdown is requested.
    /// After that it is aborted and its job put back at the head of its queue.
    pub shutdown_timeout: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            name: None,
            queues: vec!["*".to_owned()],
            poll_interval: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(30),
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
/// let running = tokio::spawn(worker.run(stop.clone().cancelled_owned()));
/// // … later:
/// stop.cancel();
/// running.await.expect("worker task")?;
/// # Ok(()) }
/// ```
pub struct Worker {
    backend: Arc<dyn Backend>,
    tasks: Arc<Tasks>,
    config: WorkerConfig,
    id: WorkerId,
    events: broadcast::Sender<WorkerEvent>,
    busy: Arc<AtomicBool>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("id", &self.id).finish()
    }
}

enum JobEnd {
    Done(Outcome),
    /// Aborted at the shutdown deadline: the working-on record stays and the
    /// unregistration puts the job back.
    Abandoned,
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
        let registered_queues = if config.is_wildcard() {
            vec!["*".to_owned()]
        } else {
            config.queues.clone()
        };
        let id = WorkerId::new(name, &registered_queues);
        Worker {
            backend,
            tasks,
            config,
            id,
            events,
            busy: Arc::new(AtomicBool::new(false)),
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
    pub async fn run<F>(self, shutdown: F) -> Result<()>
    where
        F: Future<Output = ()> + Send,
    {
        run_with_shutdown(shutdown, |token| self.run_until(token)).await
    }

    /// Like [`Worker::run`], driven by a cancellation token.
    pub async fn run_until(self, shutdown: CancellationToken) -> Result<()> {
        if !self.start(&shutdown).await {
            return Ok(());
        }
        let _pinger = AbortOnDrop(tokio::spawn(ping_loop(
            Arc::clone(&self.backend),
            self.id.clone(),
            self.config.ping_interval,
            self.events.clone(),
        )));
        let mut backoff = Backoff::new(Duration::from_millis(50), self.config.poll_interval);
        let mut queues: Vec<String> = Vec::new();
        let mut queues_read: Option<Instant> = None;
        let wildcard = self.config.is_wildcard();
        let wildcard_queues = vec!["*".to_owned()];
        while !shutdown.is_cancelled() {
            if wildcard {
                let stale = queues_read.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
                if stale {
                    match self.backend.queues().await {
                        Ok(q) => {
                            queues = q;
                            queues_read = Some(Instant::now());
                        }
                        Err(e) => {
                            self.error(&e);
                            backoff.wait(&shutdown).await;
                            continue;
                        }
                    }
                }
            } else if queues.is_empty() {
                queues = self.config.queues.clone();
            }
            emit(
                &self.events,
                WorkerEvent::Poll {
                    worker: self.id.name.clone(),
                    queues: queues.clone(),
                },
            );
            let claimed = if queues.is_empty() {
                Ok(None)
            } else {
                self.backend.claim(&self.id, &queues, &js_date_string(now_ms())).await
            };
            match claimed {
                Ok(Some(job)) => {
                    backoff.reset();
                    self.busy.store(true, Ordering::Release);
                    self.perform(job, &shutdown).await;
                    self.busy.store(false, Ordering::Release);
                }
                Ok(None) => {
                    backoff.reset();
                    emit(
                        &self.events,
                        WorkerEvent::Pause {
                            worker: self.id.name.clone(),
                        },
                    );
                    tracing::trace!(target: "resq::worker", worker = %self.id.name, "pause");
                    // A wildcard worker re-reads the queue list after waiting.
                    queues_read = None;
                    let wait = if queues.is_empty() {
                        let poll = self.config.poll_interval;
                        Box::pin(async move {
                            tokio::time::sleep(poll).await;
                            Ok(())
                        }) as std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send>>
                    } else if wildcard {
                        // Any queue, including ones that do not exist yet.
                        self.backend.wait_for_jobs(&wildcard_queues, self.config.poll_interval)
                    } else {
                        self.backend.wait_for_jobs(&queues, self.config.poll_interval)
                    };
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        r = wait => if let Err(e) = r {
                            self.error(&e);
                            backoff.wait(&shutdown).await;
                        }
                    }
                }
                Err(e) => {
                    self.error(&e);
                    backoff.wait(&shutdown).await;
                }
            }
        }
        self.stop().await
    }

    /// Registers the worker, cleaning an earlier registration under the same
    /// id first. Retries while the backend is down. False if shut down first.
    async fn start(&self, shutdown: &CancellationToken) -> bool {
        let mut backoff = Backoff::new(Duration::from_millis(50), self.config.poll_interval);
        loop {
            if shutdown.is_cancelled() {
                return false;
            }
            match self.register().await {
                Ok(()) => break,
                Err(e) => {
                    self.error(&e);
                    backoff.wait(shutdown).await;
                }
            }
        }
        tracing::info!(target: "resq::worker", worker = %self.id.name, queues = %self.id.queues, "start");
        emit(
            &self.events,
            WorkerEvent::Start {
                worker: self.id.name.clone(),
            },
        );
        true
    }

    async fn register(&self) -> Result<()> {
        let known = self.backend.workers().await?.contains(&self.id);
        if known || self.backend.working_on(&self.id).await?.is_some() {
            if let Some(cleaned) = self.backend.clean_worker(&self.id, Orphan::Requeue).await? {
                tracing::warn!(target: "resq::worker", worker = %self.id.name, "cleaned an earlier registration under this name");
                emit(
                    &self.events,
                    WorkerEvent::CleaningWorker {
                        worker: self.id.name.clone(),
                        cleaned,
                    },
                );
            }
        }
        self.backend.register_worker(&self.id, now_ms()).await
    }

    /// Unregisters; a job still recorded (aborted at the deadline) goes back
    /// to the head of its queue.
    async fn stop(&self) -> Result<()> {
        let mut last_err = None;
        for attempt in 0..5u32 {
            match self.backend.clean_worker(&self.id, Orphan::Requeue).await {
                Ok(_) => {
                    last_err = None;
                    break;
                }
                Err(e) => {
                    self.error(&e);
                    last_err = Some(e);
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt + 1))).await;
                }
            }
        }
        tracing::info!(target: "resq::worker", worker = %self.id.name, "end");
        emit(
            &self.events,
            WorkerEvent::End {
                worker: self.id.name.clone(),
            },
        );
        match last_err {
            Some(e) => Err(e),
            None => Ok(()),
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

    async fn perform(&self, claimed: Claimed, shutdown: &CancellationToken) {
        let started = Instant::now();
        let job = match Job::decode(&claimed.payload) {
            Ok(job) => Arc::new(job),
            Err(e) => {
                let failure = Failure::new(PAYLOAD_ERROR, e.to_string());
                self.fail(&claimed, failure, started).await;
                return;
            }
        };
        let Some(task) = self.tasks.get(&job.class) else {
            let failure = Failure::new("Error", format!("No job defined for class \"{}\"", job.class));
            self.fail(&claimed, failure, started).await;
            return;
        };
        tracing::debug!(target: "resq::worker", worker = %self.id.name, queue = %claimed.queue, class = %job.class, "job");
        emit(
            &self.events,
            WorkerEvent::Job {
                worker: self.id.name.clone(),
                queue: claimed.queue.clone(),
                job: Arc::clone(&job),
            },
        );
        let ctx = JobContext {
            worker: self.id.name.clone(),
            queue: claimed.queue.clone(),
            job: Arc::clone(&job),
        };
        let mut handle = tokio::spawn(task.call(ctx));
        let grace = self.config.shutdown_timeout;
        let deadline = async move {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        let end = tokio::select! {
            r = &mut handle => match r {
                Ok(Ok(result)) => {
                    let duration = started.elapsed();
                    tracing::info!(target: "resq::worker", worker = %self.id.name, queue = %claimed.queue, class = %job.class, ?duration, "success");
                    emit(&self.events, WorkerEvent::Success {
                        worker: self.id.name.clone(),
                        queue: claimed.queue.clone(),
                        job: Arc::clone(&job),
                        result,
                        duration,
                    });
                    JobEnd::Done(Outcome::Success)
                }
                Ok(Err(task_error)) => {
                    let failure = task_error.to_failure();
                    JobEnd::Done(self.failure_outcome(&claimed, failure, started))
                }
                Err(join) => {
                    let message = if join.is_panic() {
                        let p = join.into_panic();
                        p.downcast_ref::<&str>().map(|s| (*s).to_owned())
                            .or_else(|| p.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "the task panicked".to_owned())
                    } else {
                        "the task was cancelled".to_owned()
                    };
                    JobEnd::Done(self.failure_outcome(&claimed, Failure::new("Panic", message), started))
                }
            },
            _ = deadline => {
                handle.abort();
                self.error(&format!(
                    "job {} did not finish within the shutdown timeout of {grace:?}: aborted and put back on {}",
                    job.class, claimed.queue
                ));
                JobEnd::Abandoned
            }
        };
        if let JobEnd::Done(outcome) = end {
            self.complete(outcome).await;
        }
    }

    async fn fail(&self, claimed: &Claimed, failure: Failure, started: Instant) {
        let outcome = self.failure_outcome(claimed, failure, started);
        self.complete(outcome).await;
    }

    fn failure_outcome(&self, claimed: &Claimed, failure: Failure, started: Instant) -> Outcome {
        let duration = started.elapsed();
        tracing::warn!(target: "resq::worker", worker = %self.id.name, queue = %claimed.queue,
            exception = %failure.exception, error = %failure.error, "failure");
        let entry = encode_entry(&self.id.name, &claimed.queue, &claimed.payload, &failure, now_ms());
        emit(
            &self.events,
            WorkerEvent::Failure {
                worker: self.id.name.clone(),
                queue: claimed.queue.clone(),
                payload: claimed.payload.clone(),
                exception: failure.exception,
                error: failure.error,
                duration,
            },
        );
        Outcome::Failure { entry }
    }

    /// Records the outcome, retrying through backend errors. If it never
    /// gets through, the working-on record stays, and the job is recovered
    /// as a stuck worker's: it is never silently lost.
    async fn complete(&self, outcome: Outcome) {
        for attempt in 0..10u32 {
            match self.backend.complete(&self.id, outcome.clone()).await {
                Ok(()) => return,
                Err(e) => {
                    self.error(&e);
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt + 1))).await;
                }
            }
        }
    }
}

async fn ping_loop(
    backend: Arc<dyn Backend>,
    id: WorkerId,
    interval: Duration,
    events: broadcast::Sender<WorkerEvent>,
) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick fires at once; registration already pinged.
    tick.tick().await;
    loop {
        tick.tick().await;
        let at_ms = now_ms();
        match backend.ping_worker(&id, at_ms).await {
            Ok(()) => emit(
                &events,
                WorkerEvent::Ping {
                    worker: id.name.clone(),
                    at_ms,
                },
            ),
            Err(e) => {
                tracing::warn!(target: "resq::worker", worker = %id.name, error = %e, "ping failed");
                emit(
                    &events,
                    WorkerEvent::Error {
                        worker: id.name.clone(),
                        error: format!("ping failed: {e}"),
                    },
                );
            }
        }
    }
}
