//! The [`TaskServer`]: one node of a resq cluster, booted from one
//! [`TaskServerConfig`], as ActionHero's task initializer boots
//! node-resque. Depending on its config a node
//!
//! * **enqueues only** (`max_task_processors = 0`, `scheduler = false`):
//!   it uses [`TaskServer::queue`] and runs nothing;
//! * **works** (`max_task_processors > 0`): a [`WorkerPool`] takes jobs from
//!   its `queues` in priority order;
//! * **schedules** (`scheduler = true`): a [`Scheduler`] competes for
//!   leadership; at boot the node enqueues the periodic tasks that have no
//!   instance yet ([`crate::recurrent`]), and while it leads it promotes
//!   delayed jobs, fires cron tasks and cleans up dead workers.
//!
//! Every worker and scheduler event is logged under target `resq::tasks`
//! at the level the config gives it. Job arguments can hold personal data,
//! so by default the log shows an event's worker, queue, class, timings and
//! errors, but no job arguments, results or payloads;
//! [`TaskServerConfig::log_args`] logs whole events.

use crate::backend::Backend;
use crate::config::{LogLevel, TaskServerConfig};
use crate::error::Result;
use crate::event::{SchedulerEvent, WorkerEvent};
use crate::pool::{PoolConfig, WorkerPool};
use crate::queue::Queue;
use crate::scheduler::{Scheduler, SchedulerConfig, StuckJobPolicy};
use crate::shutdown::{run_with_shutdown, AbortOnDrop, Backoff};
use crate::task::Tasks;
use crate::worker::WorkerConfig;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// One node of a resq cluster: its queue client, and the scheduler and
/// worker pool its config asks for.
///
/// ```
/// # async fn demo(backend: std::sync::Arc<dyn resq_core::Backend>) -> resq_core::Result<()> {
/// use resq_core::config::TaskServerConfig;
/// use resq_core::task::{JobContext, TaskDef, TaskError, Tasks};
/// use resq_core::TaskServer;
/// use std::{sync::Arc, time::Duration};
///
/// let mut tasks = Tasks::new();
/// tasks.define(
///     TaskDef::from_fn("heartbeat", |_: (serde_json::Value,), _ctx: JobContext| async {
///         Ok::<_, TaskError>(())
///     })
///     .frequency(Duration::from_secs(30)),
/// )?;
/// let config = TaskServerConfig {
///     scheduler: true,
///     max_task_processors: 2,
///     ..TaskServerConfig::default()
/// };
/// let server = TaskServer::new(backend, Arc::new(tasks), config)?;
/// server.queue().enqueue_task("heartbeat", serde_json::json!({})).await?;
/// server.run(tokio::time::sleep(Duration::from_millis(100))).await?;
/// # Ok(()) }
/// ```
pub struct TaskServer {
    config: TaskServerConfig,
    queue: Queue,
    scheduler: Option<Arc<Scheduler>>,
    pool: Option<Arc<WorkerPool>>,
}

impl std::fmt::Debug for TaskServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskServer").field("config", &self.config).finish()
    }
}

impl TaskServer {
    /// A node over `backend` running `tasks` as `config` says. (The
    /// config's `backend` URL is for whoever opens the backend, such as
    /// the `resq` facade's `TaskServer` helpers.)
    pub fn new(backend: Arc<dyn Backend>, tasks: Arc<Tasks>, config: TaskServerConfig) -> Result<Self> {
        config.validate()?;
        let queue = Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
        let scheduler = if config.scheduler {
            let sc = SchedulerConfig {
                poll_interval: config.timeout(),
                leader_ttl: config.leader_lock_timeout(),
                stuck_worker_timeout: Some(config.stuck_worker_timeout()),
                worker_ping_interval: crate::config::WORKER_PING_INTERVAL,
                stuck_job_policy: if config.retry_stuck_jobs {
                    StuckJobPolicy::Requeue
                } else {
                    StuckJobPolicy::Fail
                },
                ..SchedulerConfig::default()
            };
            Some(Arc::new(
                Scheduler::new(Arc::clone(&backend), sc)?.with_tasks(Arc::clone(&tasks)),
            ))
        } else {
            None
        };
        let pool = if config.works() {
            let pc = PoolConfig {
                min: config.min_workers(),
                max: config.max_task_processors,
                check_interval: config.check_timeout(),
                max_event_loop_delay: config.max_event_loop_delay(),
                worker: WorkerConfig {
                    queues: config.queues.clone(),
                    poll_interval: config.timeout(),
                    job_timeout: config.job_timeout(),
                    ..WorkerConfig::default()
                },
            };
            Some(Arc::new(WorkerPool::new(Arc::clone(&backend), tasks, pc)))
        } else {
            None
        };
        Ok(TaskServer {
            config,
            queue,
            scheduler,
            pool,
        })
    }

    /// A builder for a node whose queue client, scheduler or worker pool
    /// are the caller's own (ActionHero's `resque_overrides`); see
    /// [`TaskServerBuilder`].
    pub fn builder(backend: Arc<dyn Backend>, tasks: Arc<Tasks>, config: TaskServerConfig) -> TaskServerBuilder {
        TaskServerBuilder {
            backend,
            tasks,
            config,
            queue: None,
            scheduler: None,
            pool: None,
        }
    }

    /// The client for enqueuing tasks and inspecting queues, with the task
    /// definitions (so enqueue plugins run).
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// The scheduler, when this node runs one.
    pub fn scheduler(&self) -> Option<&Arc<Scheduler>> {
        self.scheduler.as_ref()
    }

    /// The worker pool, when this node works jobs.
    pub fn pool(&self) -> Option<&Arc<WorkerPool>> {
        self.pool.as_ref()
    }

    /// The config this node runs with.
    pub fn config(&self) -> &TaskServerConfig {
        &self.config
    }

    /// Runs until `shutdown` completes, then stops the pool and the
    /// scheduler gracefully.
    ///
    /// Like every run method (`Worker`, `WorkerPool`, `Scheduler`), it
    /// borrows, so [`TaskServer::queue`], [`TaskServer::pool`] and the
    /// subscriptions work while it runs. Dropping the future stops the
    /// node as well: the pool's workers are told to stop and finish on
    /// their own tasks (see [`WorkerPool::run`]); the scheduler simply
    /// stops polling (its leadership expires with its TTL).
    ///
    /// A permanent backend error (see [`crate::Error::is_permanent`]) that
    /// stops the scheduler, the pool, or the boot-time enqueue of periodic
    /// tasks stops the whole node the same graceful way, and `run` returns
    /// it: a node never keeps running with a part gone.
    pub async fn run<F>(&self, shutdown: F) -> Result<()>
    where
        F: Future<Output = ()> + Send,
    {
        run_with_shutdown(shutdown, |token| self.run_until(token)).await
    }

    /// Like [`TaskServer::run`], driven by a cancellation token.
    pub async fn run_until(&self, shutdown: CancellationToken) -> Result<()> {
        let _worker_log = self.pool.as_ref().map(|p| {
            AbortOnDrop(tokio::spawn(log_events(
                p.subscribe(),
                self.config.clone(),
                "worker",
                WorkerEvent::name,
                worker_detail,
            )))
        });
        let _scheduler_log = self.scheduler.as_ref().map(|s| {
            AbortOnDrop(tokio::spawn(log_events(
                s.subscribe(),
                self.config.clone(),
                "scheduler",
                SchedulerEvent::name,
                scheduler_detail,
            )))
        });
        // The node's own stop token: the shutdown, or a part that stopped
        // on an error (a permanent backend error), stops every part.
        let node = shutdown.child_token();
        let boot = async {
            if self.scheduler.is_some() {
                if let Err(e) = self.enqueue_periodic_tasks(&node).await {
                    node.cancel();
                    return Err(e);
                }
            }
            Ok(())
        };
        let scheduling = async {
            let ran = match &self.scheduler {
                Some(s) => s.run_until(node.clone()).await,
                None => Ok(()),
            };
            if ran.is_err() {
                node.cancel();
            }
            ran
        };
        let working = async {
            let ran = match &self.pool {
                Some(p) => p.run_until(node.clone()).await,
                None => {
                    node.cancelled().await;
                    Ok(())
                }
            };
            if ran.is_err() {
                node.cancel();
            }
            ran
        };
        let (booted, scheduled, worked) = tokio::join!(boot, scheduling, working);
        booted.and(scheduled).and(worked)
    }

    /// Enqueues the periodic tasks that have no instance, retrying through
    /// transient backend errors until it succeeds or the node shuts down. A
    /// permanent one is logged once and returned: the node stops.
    async fn enqueue_periodic_tasks(&self, shutdown: &CancellationToken) -> Result<()> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        while !shutdown.is_cancelled() {
            match self.queue.enqueue_all_recurrent_jobs().await {
                Ok(names) => {
                    tracing::info!(target: "resq::tasks", enqueued = ?names, "periodic tasks enqueued at boot");
                    return Ok(());
                }
                Err(e) if e.is_permanent() => {
                    tracing::error!(target: "resq::tasks", error = %e,
                        "enqueuing periodic tasks failed with a permanent backend error: the node stops");
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!(target: "resq::tasks", error = %e, "enqueuing periodic tasks failed; retrying");
                    backoff.wait(shutdown).await;
                }
            }
        }
        Ok(())
    }
}

fn log_at(level: LogLevel, source: &str, event: &str, detail: &dyn std::fmt::Debug) {
    match level {
        LogLevel::Off => {}
        LogLevel::Trace => tracing::trace!(target: "resq::tasks", source, event, detail = ?detail),
        LogLevel::Debug => tracing::debug!(target: "resq::tasks", source, event, detail = ?detail),
        LogLevel::Info => tracing::info!(target: "resq::tasks", source, event, detail = ?detail),
        LogLevel::Warn => tracing::warn!(target: "resq::tasks", source, event, detail = ?detail),
        LogLevel::Error => tracing::error!(target: "resq::tasks", source, event, detail = ?detail),
    }
}

/// Logs every event of one source at its configured level until the
/// channel closes: the whole event with `log_args`, else its `private`
/// description (no job arguments, results or payloads).
async fn log_events<E: Clone + std::fmt::Debug>(
    mut rx: broadcast::Receiver<E>,
    config: TaskServerConfig,
    source: &'static str,
    name: fn(&E) -> &'static str,
    private: fn(&E) -> String,
) {
    loop {
        match rx.recv().await {
            Ok(e) if config.log_args => log_at(config.log_level(name(&e)), source, name(&e), &e),
            Ok(e) => log_at(config.log_level(name(&e)), source, name(&e), &Shown(private(&e))),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::debug!(target: "resq::tasks", source, skipped = n, "event log lagged");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Builds a [`TaskServer`] with custom parts in place of the ones its
/// config would make, as ActionHero's `resque_overrides` replace the queue,
/// scheduler or multi-worker of its task server. A part is any
/// [`Queue`], [`Scheduler`] or [`WorkerPool`] built by the caller: over a
/// wrapped [`Backend`] (one that adds metrics, tracing, or a method of its
/// own and forwards the rest), with other settings, or both. The node runs
/// it exactly as it runs its own: the queue client enqueues the periodic
/// tasks at boot and is [`TaskServer::queue`]; the scheduler and the pool
/// run in [`TaskServer::run`]. The config still decides which parts the
/// node runs: a custom scheduler needs `scheduler = true` and a custom pool
/// `max_task_processors > 0`, else [`TaskServerBuilder::build`] refuses them.
///
/// ```
/// # async fn demo(backend: std::sync::Arc<dyn resq_core::Backend>) -> resq_core::Result<()> {
/// use resq_core::config::TaskServerConfig;
/// use resq_core::task::{JobContext, TaskDef, TaskError, Tasks};
/// use resq_core::{PoolConfig, Queue, TaskServer, WorkerConfig, WorkerPool};
/// use std::{sync::Arc, time::Duration};
///
/// let mut tasks = Tasks::new();
/// tasks.define(TaskDef::from_fn("urgent", |_: (serde_json::Value,), _ctx: JobContext| async {
///     Ok::<_, TaskError>(())
/// }))?;
/// let tasks = Arc::new(tasks);
/// let config = TaskServerConfig { max_task_processors: 2, ..TaskServerConfig::default() };
/// // Own parts: here a pool with a shorter poll interval, and the queue
/// // client, which could sit on a wrapped backend instead.
/// let pool = WorkerPool::new(
///     Arc::clone(&backend),
///     Arc::clone(&tasks),
///     PoolConfig {
///         min: 1,
///         max: 2,
///         worker: WorkerConfig { poll_interval: Duration::from_millis(50), ..WorkerConfig::default() },
///         ..PoolConfig::default()
///     },
/// );
/// let server = TaskServer::builder(Arc::clone(&backend), Arc::clone(&tasks), config)
///     .queue(Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks)))
///     .pool(pool)
///     .build()?;
/// // `enqueue_front`, the seed's example of a queue extension, is built in.
/// server.queue().enqueue_front("default", "urgent", (serde_json::json!({}),)).await?;
/// # Ok(()) }
/// ```
pub struct TaskServerBuilder {
    backend: Arc<dyn Backend>,
    tasks: Arc<Tasks>,
    config: TaskServerConfig,
    queue: Option<Queue>,
    scheduler: Option<Scheduler>,
    pool: Option<WorkerPool>,
}

impl std::fmt::Debug for TaskServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskServerBuilder")
            .field("config", &self.config)
            .field("custom_queue", &self.queue.is_some())
            .field("custom_scheduler", &self.scheduler.is_some())
            .field("custom_pool", &self.pool.is_some())
            .finish()
    }
}

impl TaskServerBuilder {
    /// Uses `queue` as the node's queue client (it should know the task
    /// definitions, [`Queue::with_tasks`], for enqueue plugins to run).
    pub fn queue(mut self, queue: Queue) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Runs `scheduler` instead of the one the config would make.
    pub fn scheduler(mut self, scheduler: Scheduler) -> Self {
        self.scheduler = Some(scheduler);
        self
    }

    /// Runs `pool` instead of the one the config would make.
    pub fn pool(mut self, pool: WorkerPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// The node. An invalid config, a custom part the config does not run
    /// (see [`TaskServerBuilder`]), or a scheduler whose stuck-worker
    /// timeout is under [`MIN_STUCK_TIMEOUT_PINGS`](crate::scheduler::MIN_STUCK_TIMEOUT_PINGS)
    /// times the ping interval of the node's workers (custom parts
    /// included), is an [`Error::InvalidArgument`](crate::Error::InvalidArgument).
    pub fn build(self) -> Result<TaskServer> {
        if self.scheduler.is_some() && !self.config.scheduler {
            return Err(crate::Error::InvalidArgument(
                "a custom scheduler was given but the config has scheduler = false".into(),
            ));
        }
        if self.pool.is_some() && !self.config.works() {
            return Err(crate::Error::InvalidArgument(
                "a custom worker pool was given but the config has max_task_processors = 0".into(),
            ));
        }
        let mut server = TaskServer::new(self.backend, self.tasks, self.config)?;
        if let Some(queue) = self.queue {
            server.queue = queue;
        }
        if let Some(scheduler) = self.scheduler {
            server.scheduler = Some(Arc::new(scheduler));
        }
        if let Some(pool) = self.pool {
            server.pool = Some(Arc::new(pool));
        }
        // This node's scheduler must not take this node's workers for dead.
        if let (Some(scheduler), Some(pool)) = (&server.scheduler, &server.pool) {
            if let Some(stuck) = scheduler.config().stuck_worker_timeout {
                crate::scheduler::check_stuck_worker_timeout(stuck, pool.config().worker.ping_interval)?;
            }
        }
        Ok(server)
    }
}

/// A description logged as is (its `Debug` is the text, unquoted).
struct Shown(String);

impl std::fmt::Debug for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The class named in a payload, without its arguments.
fn class_of(payload: &str) -> String {
    crate::job::Job::decode(payload).map_or_else(|_| "<undecodable>".to_owned(), |j| j.class)
}

/// What a clean-up removed: the worker and its job's queue and class.
fn cleaned_detail(cleaned: &crate::backend::Cleaned) -> String {
    match &cleaned.working_on {
        Some(w) => format!(
            "cleaned={} job_queue={} job_class={}",
            cleaned.worker.name,
            w.queue,
            class_of(&w.payload)
        ),
        None => format!("cleaned={}", cleaned.worker.name),
    }
}

/// A worker event without job arguments, results or payloads.
fn worker_detail(e: &WorkerEvent) -> String {
    match e {
        WorkerEvent::Start { worker, .. } | WorkerEvent::End { worker, .. } | WorkerEvent::Pause { worker, .. } => {
            format!("worker={worker}")
        }
        WorkerEvent::Poll { worker, queues, .. } => format!("worker={worker} queues={queues:?}"),
        WorkerEvent::Job { worker, queue, job, .. } => format!("worker={worker} queue={queue} class={}", job.class),
        WorkerEvent::Success {
            worker,
            queue,
            job,
            duration,
            ..
        } => format!("worker={worker} queue={queue} class={} duration={duration:?}", job.class),
        WorkerEvent::Failure {
            worker,
            queue,
            payload,
            exception,
            error,
            duration,
            ..
        } => format!(
            "worker={worker} queue={queue} class={} exception={exception} error={error:?} duration={duration:?}",
            class_of(payload)
        ),
        WorkerEvent::ReEnqueue {
            worker,
            queue,
            job,
            delay,
            remaining_attempts,
            error,
            ..
        } => format!(
            "worker={worker} queue={queue} class={} delay={delay:?} remaining_attempts={remaining_attempts} error={error:?}",
            job.class
        ),
        WorkerEvent::Skipped {
            worker,
            queue,
            job,
            plugin,
            ..
        } => format!("worker={worker} queue={queue} class={} plugin={plugin}", job.class),
        WorkerEvent::Cancelled {
            worker,
            queue,
            job,
            duration,
        } => format!("worker={worker} queue={queue} class={} duration={duration:?}", job.class),
        WorkerEvent::Throttled {
            worker,
            queue,
            job,
            limit,
            retry_after,
        } => format!(
            "worker={worker} queue={queue} class={} limit={limit} retry_after={retry_after:?}",
            job.class
        ),
        WorkerEvent::Error { worker, error, .. } => format!("worker={worker} error={error:?}"),
        WorkerEvent::Ping { worker, at_ms, .. } => format!("worker={worker} at_ms={at_ms}"),
        WorkerEvent::CleaningWorker { worker, cleaned, .. } => format!("worker={worker} {}", cleaned_detail(cleaned)),
        WorkerEvent::PoolAction {
            action,
            workers,
            event_loop_delay,
            lagging,
        } => format!("action={action:?} workers={workers} event_loop_delay={event_loop_delay:?} lagging={lagging}"),
    }
}

/// A scheduler event without job arguments or payloads.
fn scheduler_detail(e: &SchedulerEvent) -> String {
    match e {
        SchedulerEvent::Start { scheduler, .. }
        | SchedulerEvent::End { scheduler, .. }
        | SchedulerEvent::Poll { scheduler, .. }
        | SchedulerEvent::Leader { scheduler, .. }
        | SchedulerEvent::Follower { scheduler, .. } => format!("scheduler={scheduler}"),
        SchedulerEvent::TransferredJob {
            scheduler,
            timestamp,
            queue,
            payload,
            ..
        } => format!(
            "scheduler={scheduler} timestamp={timestamp} queue={queue} class={}",
            class_of(payload)
        ),
        SchedulerEvent::PromotionFailed {
            scheduler,
            timestamp,
            reason,
            ..
        } => format!("scheduler={scheduler} timestamp={timestamp} reason={reason:?}"),
        SchedulerEvent::CleanStuckWorker { scheduler, cleaned, .. } => {
            format!("scheduler={scheduler} {}", cleaned_detail(cleaned))
        }
        SchedulerEvent::CronFired {
            scheduler, task, at_ms, ..
        } => format!("scheduler={scheduler} task={task} at_ms={at_ms}"),
        SchedulerEvent::Error { scheduler, error, .. } => format!("scheduler={scheduler} error={error:?}"),
    }
}
