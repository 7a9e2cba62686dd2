//! resq-core is the engine of resq, a background-job system with Resque's
//! data model: the job payload and failed-entry formats, the [`Backend`]
//! trait that every storage engine implements, and the parts built on it —
//! the [`Queue`] client for enqueuing and inspection, the [`Worker`] and
//! [`WorkerPool`] that run [`Task`]s, and the [`Scheduler`] that promotes
//! delayed jobs, elects one leader, fires cron tasks and recovers the jobs
//! of dead workers. On top sits the task layer: [`TaskDef`] definitions
//! with queues, frequencies, cron schedules and [`Plugin`]s (the built-ins
//! in [`plugins`]), periodic tasks ([`recurrent`]), and the [`TaskServer`]
//! that boots one node of a cluster from a [`TaskServerConfig`].
//! It knows no storage itself: backends live in their own crates.

#![warn(missing_docs)]

pub mod backend;
pub mod cancel;
pub mod config;
pub mod cron;
pub mod error;
pub mod event;
pub mod failed;
pub mod flow;
pub mod job;
pub mod json;
pub mod plugin;
pub mod plugins;
pub mod pool;
pub mod queue;
pub mod recurrent;
pub mod scheduler;
pub mod server;
mod shutdown;
pub mod task;
pub mod time;
pub mod worker;

pub use backend::{
    Backend, CancelMark, CancelSignal, CancelStore, Claimed, Cleaned, DelayedStore, FailedStore, LeaderLock, LockEntry,
    LockStore, Orphan, Outcome, Promotion, QueueStat, QueueStore, QueuedJob, StatsStore, TaskFlowStore, WorkerId,
    WorkerRegistry, WorkerTimes, WorkingOn, CANCEL_MARK_TTL,
};
pub use cancel::{CancelReport, JobId, JobPlace};
pub use config::TaskServerConfig;
pub use error::{BackendErrorKind, Error, Result};
pub use event::{JobEnd, JobObserver, JobOutcome, QueueEvent, QueueEvents, SchedulerEvent, WorkerEvent};
pub use failed::{FailedId, FailedJob, Failure};
pub use flow::{QueueLimits, RateLimit, TaskAdmission, TaskLimits};
pub use job::{Decoded, Job};
pub use plugin::Plugin;
pub use pool::{PoolConfig, WorkerPool};
pub use queue::{Details, EnqueueOnce, NewJob, Queue, WorkerStatus};
pub use scheduler::{PollReport, Scheduler, SchedulerConfig, StuckJobPolicy};
pub use server::{TaskServer, TaskServerBuilder};
pub use task::{Input, JobContext, Task, TaskDef, TaskError, TaskResult, Tasks};
pub use worker::{Worker, WorkerConfig};

/// The cancellation token that `run_until` methods take and that stops
/// [`Worker`], [`WorkerPool`], [`Scheduler`] and [`TaskServer`] gracefully;
/// re-exported so that callers need no `tokio-util` dependency of their own.
pub use tokio_util::sync::CancellationToken;

/// serde_json, whose `Value` task inputs and arguments are, re-exported so
/// that callers can write `json!` inputs without a dependency of their own.
pub use serde_json;

/// This crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
