//! Plugins: code that runs around a task's enqueue and perform, with
//! node-resque's four hooks and semantics.
//!
//! A task lists its plugins in order (see [`crate::task::TaskDef::plugin`]).
//! They run one after another; the first `before_*` hook that returns
//! `false` stops the chain:
//!
//! * `before_enqueue` → `false`: [`crate::Queue::enqueue`] returns `Ok(false)`
//!   and nothing is stored. Hooks run for `enqueue` (and the task-level
//!   `enqueue_task`), not for `enqueue_at`/`enqueue_in`, not for a failed
//!   job moved back by `retry_and_remove_failed` (one atomic step), and
//!   never when the scheduler promotes a delayed job or fires a cron task,
//!   so a veto can never drop a delayed job (node-resque issue #145):
//!   promotion moves it as it is.
//! * `before_perform` → `false`: the job is dropped without running, with no
//!   counters, no failed entry and no `after_perform`.
//! * `after_perform` runs after success and after failure. It sees the
//!   error in [`PerformContext::error`] and may clear it, which turns the
//!   failure into a success.
//!
//! When the enqueuing or working process has no definition for a job's
//! class, no plugins run. Each plugin reads its per-task options, the
//! task's `plugin_options` entry under the plugin's [`Plugin::name`]
//! (node-resque's `pluginOptions`), through the context's `options`.
//! The built-in plugins live in [`crate::plugins`].

use crate::error::Result;
use crate::event::WorkerEvent;
use crate::job::Job;
use crate::queue::Queue;
use crate::task::TaskError;
use async_trait::async_trait;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::broadcast;

/// The empty options object given to a plugin its task configures nothing for.
pub(crate) static NO_OPTIONS: std::sync::LazyLock<Value> =
    std::sync::LazyLock::new(|| Value::Object(serde_json::Map::new()));

/// What an enqueue hook sees.
#[derive(Debug)]
pub struct EnqueueContext<'a> {
    /// The client doing the enqueue (for inspection or other enqueues).
    pub client: &'a Queue,
    /// The destination queue.
    pub queue: &'a str,
    /// The task name (the job's `class`).
    pub class: &'a str,
    /// The job's arguments.
    pub args: &'a [Value],
    /// This plugin's options for the task (`{}` when none are set).
    pub options: &'a Value,
}

/// What a perform hook sees, and what `after_perform` may change.
#[derive(Debug)]
pub struct PerformContext<'a> {
    /// A client on the worker's backend (for re-enqueues and locks).
    pub client: &'a Queue,
    /// The name of the worker running the job.
    pub worker: &'a str,
    /// The queue the job was claimed from.
    pub queue: &'a str,
    /// The job. A `before_perform` hook may replace it (to change the
    /// arguments the task sees, as ActionHero's `preProcessor` middleware does).
    pub job: Arc<Job>,
    /// This plugin's options for the task (`{}` when none are set).
    pub options: &'a Value,
    /// In `after_perform`: the task's error, if it failed. Set it to `None`
    /// to record the run as a success.
    pub error: Option<TaskError>,
    /// In `after_perform`: the task's result, if it succeeded.
    pub result: Option<Value>,
    /// In `after_perform`: true when a cancel request stopped the task
    /// (then `error` and `result` are `None`). The job's outcome is
    /// `cancelled` whatever the hooks do: it is neither a success nor a
    /// failure, and the Retry plugin, seeing no error, does not retry it
    /// (it clears its attempt count as after a success). Locks that
    /// plugins took in `before_perform` are released as usual.
    pub cancelled: bool,
    pub(crate) counted: bool,
    /// Counts this context's plugins added to the worker's own counters.
    pub(crate) plugin_counts: i64,
    pub(crate) notes: HashMap<String, String>,
    pub(crate) events: Option<&'a broadcast::Sender<WorkerEvent>>,
    /// Set when a plugin emitted `re_enqueue` for this job (it will run again).
    pub(crate) re_enqueued: std::sync::atomic::AtomicBool,
}

impl<'a> PerformContext<'a> {
    /// A context for running `job` outside a worker (tests, inline runs).
    pub fn new(client: &'a Queue, worker: &'a str, queue: &'a str, job: Arc<Job>) -> Self {
        PerformContext {
            client,
            worker,
            queue,
            job,
            options: &NO_OPTIONS,
            error: None,
            result: None,
            cancelled: false,
            counted: true,
            plugin_counts: 0,
            notes: HashMap::new(),
            events: None,
            re_enqueued: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Keeps a value for this job's later hooks (for example a lock token
    /// taken in `before_perform` and released in `after_perform`).
    pub fn set_note(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.notes.insert(key.into(), value.into());
    }

    /// A value kept by [`PerformContext::set_note`] for this job.
    pub fn note(&self, key: &str) -> Option<&str> {
        self.notes.get(key).map(String::as_str)
    }

    /// Takes a value kept by [`PerformContext::set_note`] out.
    pub fn take_note(&mut self, key: &str) -> Option<String> {
        self.notes.remove(key)
    }

    /// Stops the worker from counting this run in `processed`/`failed`: the
    /// plugin did its own accounting. A plugin that counts the run on the
    /// worker's own counters should use [`PerformContext::count_failed`]
    /// instead, which a multi-slot worker's lost-reply recovery relies on.
    pub fn skip_counters(&mut self) {
        self.counted = false;
    }

    /// Counts this run as one failure, globally and for this worker
    /// (`failed` and `failed:<worker>`), without a failed-list entry, and
    /// stops the worker from counting it again: what Retry does for an
    /// attempt it re-enqueues.
    pub async fn count_failed(&mut self) -> Result<()> {
        let backend = self.client.backend();
        backend.incr_stat("failed", 1).await?;
        backend.incr_stat(&format!("failed:{}", self.worker), 1).await?;
        self.plugin_counts += 1;
        self.counted = false;
        Ok(())
    }

    /// Whether the worker will count this run.
    pub fn counted(&self) -> bool {
        self.counted
    }

    /// Publishes a worker event (a no-op outside a worker).
    pub fn emit(&self, event: WorkerEvent) {
        if matches!(event, WorkerEvent::ReEnqueue { .. }) {
            self.re_enqueued.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(events) = self.events {
            crate::event::emit(events, event);
        }
    }
}

/// Code that runs around a task's enqueue and perform. Every hook has a
/// default that allows and does nothing, so a plugin implements only the
/// hooks it needs.
///
/// ```
/// use resq_core::plugin::{EnqueueContext, Plugin};
///
/// /// Refuses jobs whose first argument is `"spam"`.
/// struct NoSpam;
///
/// #[async_trait::async_trait]
/// impl Plugin for NoSpam {
///     fn name(&self) -> &str {
///         "NoSpam"
///     }
///     async fn before_enqueue(&self, ctx: &EnqueueContext<'_>) -> resq_core::Result<bool> {
///         Ok(ctx.args.first().and_then(|a| a.as_str()) != Some("spam"))
///     }
/// }
/// ```
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// The name its options are found under in a task's `plugin_options`.
    fn name(&self) -> &str;

    /// Before a job is stored by `enqueue`. `Ok(false)` vetoes it.
    async fn before_enqueue(&self, _ctx: &EnqueueContext<'_>) -> Result<bool> {
        Ok(true)
    }

    /// After a job was stored by `enqueue`.
    async fn after_enqueue(&self, _ctx: &EnqueueContext<'_>) -> Result<()> {
        Ok(())
    }

    /// Before a worker runs a job. `Ok(false)` drops the job unrun; an
    /// error fails it.
    async fn before_perform(&self, _ctx: &mut PerformContext<'_>) -> Result<bool> {
        Ok(true)
    }

    /// After a worker ran a job, successful or not (see
    /// [`PerformContext::error`]). An error fails the job.
    async fn after_perform(&self, _ctx: &mut PerformContext<'_>) -> Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for dyn Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Plugin({})", self.name())
    }
}
