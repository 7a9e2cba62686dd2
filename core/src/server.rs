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
//! at the level the config gives it.

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
                leader_ttl: (config.timeout() * 3).max(Duration::from_secs(60)),
                stuck_worker_timeout: Some(config.stuck_worker_timeout()),
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
            )))
        });
        let _scheduler_log = self.scheduler.as_ref().map(|s| {
            AbortOnDrop(tokio::spawn(log_events(
                s.subscribe(),
                self.config.clone(),
                "scheduler",
                SchedulerEvent::name,
            )))
        });
        let boot = async {
            if self.scheduler.is_some() {
                self.enqueue_periodic_tasks(&shutdown).await;
            }
        };
        let scheduling = async {
            match &self.scheduler {
                Some(s) => s.run_until(shutdown.clone()).await,
                None => Ok(()),
            }
        };
        let working = async {
            match &self.pool {
                Some(p) => p.run_until(shutdown.clone()).await,
                None => {
                    shutdown.cancelled().await;
                    Ok(())
                }
            }
        };
        let ((), scheduled, worked) = tokio::join!(boot, scheduling, working);
        scheduled.and(worked)
    }

    /// Enqueues the periodic tasks that have no instance, retrying through
    /// backend errors until it succeeds or the node shuts down.
    async fn enqueue_periodic_tasks(&self, shutdown: &CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        while !shutdown.is_cancelled() {
            match self.queue.enqueue_all_recurrent_jobs().await {
                Ok(names) => {
                    tracing::info!(target: "resq::tasks", enqueued = ?names, "periodic tasks enqueued at boot");
                    return;
                }
                Err(e) => {
                    tracing::warn!(target: "resq::tasks", error = %e, "enqueuing periodic tasks failed; retrying");
                    backoff.wait(shutdown).await;
                }
            }
        }
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
/// channel closes.
async fn log_events<E: Clone + std::fmt::Debug>(
    mut rx: broadcast::Receiver<E>,
    config: TaskServerConfig,
    source: &'static str,
    name: fn(&E) -> &'static str,
) {
    loop {
        match rx.recv().await {
            Ok(e) => log_at(config.log_level(name(&e)), source, name(&e), &e),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::debug!(target: "resq::tasks", source, skipped = n, "event log lagged");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
