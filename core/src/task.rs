//! Job code: the [`Task`] trait, closures as tasks, and the [`Tasks`]
//! registry that maps a job's class to the code that runs it.

use crate::error::{Error, Result};
use crate::job::Job;
use async_trait::async_trait;
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

/// What a running job knows about itself.
#[derive(Clone, Debug)]
pub struct JobContext {
    /// The name of the worker running it.
    pub worker: String,
    /// The queue it was claimed from.
    pub queue: String,
    /// The decoded job, with its raw payload bytes.
    pub job: Arc<Job>,
    /// Cancelled when the job is stopped: its timeout passed or a cancel
    /// request reached its worker (see [`JobContext::cancelled`]).
    pub(crate) cancel: Arc<crate::cancel::StopSignal>,
}

impl JobContext {
    /// A context for running a task outside a worker (tests, inline runs):
    /// nothing stops it.
    pub fn new(worker: impl Into<String>, queue: impl Into<String>, job: Arc<Job>) -> Self {
        JobContext {
            worker: worker.into(),
            queue: queue.into(),
            job,
            cancel: Arc::new(crate::cancel::StopSignal::default()),
        }
    }

    /// Resolves once the job is stopped: its timeout ([`TaskDef::timeout`]
    /// or the worker's [`crate::WorkerConfig::job_timeout`]) passed, or a
    /// cancel request ([`crate::Queue::cancel_running`]) reached its worker.
    ///
    /// By then the worker has already dropped the task's future, so code
    /// awaiting this inside the task itself never sees it resolve. It is
    /// for work the task handed elsewhere and that a dropped future does
    /// not stop: a `tokio::spawn`ed task or a `spawn_blocking` closure
    /// holding a clone of the context (or of
    /// [`JobContext::cancellation_token`]) should watch it, or poll
    /// [`JobContext::is_cancelled`] between steps, and give up.
    pub async fn cancelled(&self) {
        self.cancel.token().cancelled().await;
    }

    /// Whether the job was stopped (see [`JobContext::cancelled`]): the
    /// check for blocking code, between its steps.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_stopped()
    }

    /// The job's cancellation token, to hand to spawned or blocking work
    /// (see [`JobContext::cancelled`]).
    pub fn cancellation_token(&self) -> tokio_util::sync::CancellationToken {
        self.cancel.token()
    }
}

/// A task's error: what ends up in the failed entry's `exception`, `error`
/// and `backtrace` fields.
///
/// Any `std::error::Error` converts into it, so `?` works inside tasks. (It
/// deliberately does not implement `std::error::Error` itself, like `anyhow::Error`.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskError {
    /// The error's kind: by default the short type name of the source error, or `Error`.
    pub exception: String,
    /// The message.
    pub message: String,
    /// Optional backtrace or context lines.
    pub backtrace: Vec<String>,
}

impl TaskError {
    /// A plain error with exception `Error`.
    pub fn new(message: impl Into<String>) -> Self {
        TaskError {
            exception: "Error".into(),
            message: message.into(),
            backtrace: Vec::new(),
        }
    }

    /// Sets the exception name.
    pub fn with_exception(mut self, exception: impl Into<String>) -> Self {
        self.exception = exception.into();
        self
    }

    /// Adds context lines to the backtrace.
    pub fn with_backtrace(mut self, lines: Vec<String>) -> Self {
        self.backtrace = lines;
        self
    }

    /// The failed-entry form of this error.
    pub fn to_failure(&self) -> crate::failed::Failure {
        crate::failed::Failure::new(self.exception.clone(), self.message.clone()).with_backtrace(self.backtrace.clone())
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.exception, self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for TaskError {
    fn from(e: E) -> Self {
        let full = std::any::type_name::<E>();
        // "std::io::error::Error" -> "Error"; generics are cut before the last segment is taken.
        let base = full.split('<').next().unwrap_or(full);
        let short = base.rsplit("::").next().unwrap_or(base);
        let mut chain = Vec::new();
        let mut source = e.source();
        while let Some(s) = source {
            chain.push(format!("caused by: {s}"));
            source = s.source();
        }
        TaskError {
            exception: short.to_owned(),
            message: e.to_string(),
            backtrace: chain,
        }
    }
}

/// The result of a task run: a JSON result for the `success` event, or an error.
pub type TaskResult = std::result::Result<Value, TaskError>;

/// Job code with typed arguments.
///
/// `Args` is deserialized from the job's `args` array, so a tuple matches
/// positional arguments (`(i64, i64)` for `[1,2]`) and `(MyParams,)` matches
/// ActionHero's single-object form `[{…}]`.
///
/// ```
/// use resq_core::task::{JobContext, Task, TaskError, Tasks};
///
/// struct Add;
///
/// #[async_trait::async_trait]
/// impl Task for Add {
///     type Args = (i64, i64);
///     type Output = i64;
///     async fn perform(&self, (a, b): (i64, i64), _ctx: JobContext) -> Result<i64, TaskError> {
///         Ok(a + b)
///     }
/// }
///
/// let mut tasks = Tasks::new();
/// tasks.register("add", Add).unwrap();
/// assert!(tasks.contains("add"));
/// ```
#[async_trait]
pub trait Task: Send + Sync + 'static {
    /// The arguments, deserialized from the `args` array.
    type Args: DeserializeOwned + Send;
    /// The result, reported in the `success` event.
    type Output: Serialize + Send;
    /// Runs the job.
    async fn perform(&self, args: Self::Args, ctx: JobContext) -> std::result::Result<Self::Output, TaskError>;
}

/// A task with its argument types erased, as the worker calls it.
pub trait ErasedTask: Send + Sync {
    /// Decodes the arguments and runs the task.
    fn call(&self, ctx: JobContext) -> BoxFuture<'static, TaskResult>;
}

/// Decodes a job's args array into `A`. An empty array also decodes as
/// JSON `null`, so that `()` and `Option<T>` accept a job with no arguments.
fn decode_args<A: DeserializeOwned>(job: &Job) -> std::result::Result<A, TaskError> {
    // Deserialize straight from the decoded args, without copying them.
    let seq = serde::de::value::SeqDeserializer::<_, serde_json::Error>::new(job.args.iter());
    let decoded = match A::deserialize(seq) {
        Err(_) if job.args.is_empty() => serde_json::from_value::<A>(Value::Null),
        other => other,
    };
    decoded.map_err(|e| {
        TaskError::new(format!("cannot decode the arguments of {:?}: {e}", job.class)).with_exception("ArgumentError")
    })
}

fn to_result<O: Serialize>(r: std::result::Result<O, TaskError>) -> TaskResult {
    let out = r?;
    serde_json::to_value(out)
        .map_err(|e| TaskError::new(format!("cannot encode the task's result: {e}")).with_exception("ResultError"))
}

struct TypedTask<T>(Arc<T>);

impl<T: Task> ErasedTask for TypedTask<T> {
    fn call(&self, ctx: JobContext) -> BoxFuture<'static, TaskResult> {
        let task = Arc::clone(&self.0);
        Box::pin(async move {
            let args = decode_args::<T::Args>(&ctx.job)?;
            to_result(task.perform(args, ctx).await)
        })
    }
}

struct FnTask<F, A, O, Fut> {
    f: F,
    _types: std::marker::PhantomData<fn(A) -> (O, Fut)>,
}

impl<F, A, O, Fut> ErasedTask for FnTask<F, A, O, Fut>
where
    F: Fn(A, JobContext) -> Fut + Send + Sync + 'static,
    A: DeserializeOwned + Send + 'static,
    O: Serialize + Send + 'static,
    Fut: Future<Output = std::result::Result<O, TaskError>> + Send + 'static,
{
    fn call(&self, ctx: JobContext) -> BoxFuture<'static, TaskResult> {
        match decode_args::<A>(&ctx.job) {
            Ok(args) => {
                let fut = (self.f)(args, ctx);
                Box::pin(async move { to_result(fut.await) })
            }
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}

/// How a task's jobs are defined: its name (the job's `class`), the code
/// that runs, and ActionHero's task fields — description, default queue,
/// frequency, plugins with per-task options — plus an optional cron
/// schedule.
///
/// ```
/// use resq_core::plugins::Retry;
/// use resq_core::task::{JobContext, TaskDef, TaskError, Tasks};
/// use std::time::Duration;
///
/// let mut tasks = Tasks::new();
/// tasks
///     .define(
///         TaskDef::from_fn("sendReport", |(_inputs,): (serde_json::Value,), _ctx: JobContext| async move {
///             Ok::<_, TaskError>(())
///         })
///         .description("mails the daily report")
///         .queue("reports")
///         .frequency(Duration::from_secs(60))
///         .plugin(Retry::new())
///         .plugin_options("Retry", serde_json::json!({"retryLimit": 3})),
///     )
///     .unwrap();
/// assert!(tasks.get("sendReport").unwrap().is_periodic());
/// ```
#[derive(Clone)]
pub struct TaskDef {
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) queue: String,
    pub(crate) frequency: std::time::Duration,
    pub(crate) cron: Option<crate::cron::CronSchedule>,
    pub(crate) plugins: Vec<Arc<dyn crate::plugin::Plugin>>,
    pub(crate) plugin_options: HashMap<String, Value>,
    pub(crate) reenqueue_periodic_on_error: bool,
    pub(crate) inputs: Vec<(String, Input)>,
    pub(crate) timeout: Option<std::time::Duration>,
    pub(crate) limits: crate::flow::TaskLimits,
    pub(crate) code: Arc<dyn ErasedTask>,
}

/// A validator of one input: `Err(reason)` refuses the value.
pub type Validator = Arc<dyn Fn(&Value) -> std::result::Result<(), String> + Send + Sync>;

/// One declared input of a task, checked when the task is enqueued through
/// [`crate::Queue::enqueue_task`] (ActionHero's task `inputs`).
#[derive(Clone, Default)]
pub struct Input {
    required: bool,
    default: Option<Value>,
    validator: Option<Validator>,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input")
            .field("required", &self.required)
            .field("default", &self.default)
            .field("validator", &self.validator.is_some())
            .finish()
    }
}

impl Input {
    /// An optional input with no default.
    pub fn optional() -> Self {
        Self::default()
    }

    /// An input that must be present (after its default is applied).
    pub fn required() -> Self {
        Input {
            required: true,
            ..Self::default()
        }
    }

    /// The value used when the input is missing or `null`.
    pub fn default_value(mut self, value: Value) -> Self {
        self.default = Some(value);
        self
    }

    /// A check the value must pass.
    pub fn validator(mut self, f: impl Fn(&Value) -> std::result::Result<(), String> + Send + Sync + 'static) -> Self {
        self.validator = Some(Arc::new(f));
        self
    }
}

impl TaskDef {
    /// A definition running the [`Task`] `task`, with ActionHero's defaults:
    /// queue `default`, frequency 0 (not periodic), no plugins.
    pub fn new<T: Task>(name: impl Into<String>, task: T) -> Self {
        Self::erased(name.into(), Arc::new(TypedTask(Arc::new(task))))
    }

    /// A definition running an async closure (see [`Tasks::register_fn`]).
    pub fn from_fn<F, A, O, Fut>(name: impl Into<String>, f: F) -> Self
    where
        F: Fn(A, JobContext) -> Fut + Send + Sync + 'static,
        A: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        Fut: Future<Output = std::result::Result<O, TaskError>> + Send + 'static,
    {
        Self::erased(
            name.into(),
            Arc::new(FnTask {
                f,
                _types: std::marker::PhantomData,
            }),
        )
    }

    fn erased(name: String, code: Arc<dyn ErasedTask>) -> Self {
        TaskDef {
            name,
            description: None,
            queue: "default".to_owned(),
            frequency: std::time::Duration::ZERO,
            cron: None,
            plugins: Vec::new(),
            plugin_options: HashMap::new(),
            reenqueue_periodic_on_error: true,
            inputs: Vec::new(),
            timeout: None,
            limits: crate::flow::TaskLimits::new(),
            code,
        }
    }

    /// Sets the description (by default the name).
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Sets the queue its jobs go to unless the caller names another.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Makes the task periodic: enqueued when a scheduler node boots and
    /// re-enqueued `frequency` after each run, with at most one instance in
    /// the cluster (see [`crate::recurrent`]). Zero means not periodic.
    pub fn frequency(mut self, frequency: std::time::Duration) -> Self {
        self.frequency = frequency;
        self
    }

    /// Fires the task on a cron schedule (see [`crate::cron::CronSchedule`]),
    /// from the scheduler leader only.
    pub fn cron(mut self, schedule: crate::cron::CronSchedule) -> Self {
        self.cron = Some(schedule);
        self
    }

    /// Appends a plugin; plugins run in the order they are added.
    pub fn plugin(mut self, plugin: impl crate::plugin::Plugin) -> Self {
        self.plugins.push(Arc::new(plugin));
        self
    }

    /// Appends a shared plugin instance.
    pub fn plugin_arc(mut self, plugin: Arc<dyn crate::plugin::Plugin>) -> Self {
        self.plugins.push(plugin);
        self
    }

    /// Sets the options the plugin named `plugin` sees for this task
    /// (node-resque's `pluginOptions[plugin]`).
    pub fn plugin_options(mut self, plugin: impl Into<String>, options: Value) -> Self {
        self.plugin_options.insert(plugin.into(), options);
        self
    }

    /// Whether a periodic task that fails is re-enqueued all the same
    /// (ActionHero's `reEnqueuePeriodicTaskIfException`, default true).
    pub fn reenqueue_periodic_on_error(mut self, yes: bool) -> Self {
        self.reenqueue_periodic_on_error = yes;
        self
    }

    /// How long the task's code may run. A job still running at the limit
    /// is stopped: the worker drops the task's future (so it stops at its
    /// next `.await`), cancels [`JobContext::cancelled`], and records a
    /// failure with exception [`crate::failed::JOB_TIMEOUT`] and the limit
    /// in its error text, which the `after_perform` hooks see like any
    /// error (the Retry plugin retries it). The limit covers the task's
    /// code only, not its plugins' hooks. Without it the worker's
    /// [`crate::WorkerConfig::job_timeout`] applies (a task server's
    /// `job_timeout_ms`); with neither, a job may run for ever.
    ///
    /// Dropping a future cannot stop a thread: work inside
    /// `tokio::task::spawn_blocking` (or any thread) runs on after the
    /// timeout, unseen by the worker, whose slot takes its next job at
    /// once. Such work should check [`JobContext::is_cancelled`] between
    /// steps and return early.
    pub fn timeout(mut self, limit: std::time::Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Limits this task's starts to `max` in any window of `period`,
    /// across every worker of the cluster that declares the same limit
    /// (counted per task class in the backend, see
    /// [`crate::backend::TaskFlowStore`]). A job over the limit is not
    /// failed: its worker puts it back on the delayed schedule, due when
    /// the next start frees, and emits a `throttled` event. Bounds as for
    /// queues ([`crate::QueueLimits::check`]): 1 to
    /// [`crate::flow::MAX_RATE`] starts per 1 ms to
    /// [`crate::flow::MAX_PERIOD`] in whole milliseconds, checked when the
    /// task is defined ([`Tasks::define`]).
    ///
    /// ```
    /// use resq_core::task::{JobContext, TaskDef, TaskError, Tasks};
    /// use std::time::Duration;
    ///
    /// let mut tasks = Tasks::new();
    /// tasks
    ///     .define(
    ///         TaskDef::from_fn("callPartnerApi", |(_id,): (u64,), _ctx: JobContext| async move {
    ///             Ok::<_, TaskError>(())
    ///         })
    ///         // At most 100 calls per second cluster-wide, 5 at once.
    ///         .rate_limit(100, Duration::from_secs(1))
    ///         .concurrency(5),
    ///     )
    ///     .unwrap();
    /// let limits = tasks.get("callPartnerApi").unwrap().task_limits().unwrap();
    /// assert_eq!(limits.concurrency, Some(5));
    ///
    /// // Out of bounds: refused when defined, with the task named.
    /// let bad = TaskDef::from_fn("zero", |(): (), _ctx: JobContext| async move { Ok::<_, TaskError>(()) })
    ///     .rate_limit(0, Duration::from_secs(1));
    /// assert!(Tasks::new().define(bad).is_err());
    /// ```
    pub fn rate_limit(mut self, max: u32, period: std::time::Duration) -> Self {
        self.limits.rate = Some(crate::flow::RateLimit::new(max, period));
        self
    }

    /// Caps this task's running jobs at `k` at once, across every worker
    /// of the cluster that declares the same cap (global, not per
    /// process). A job over the cap waits on the delayed schedule for
    /// [`crate::flow::CAP_RETRY`] and tries again; a crashed worker's slot
    /// is returned when the worker is cleaned (within the scheduler's
    /// stuck-worker timeout). At least 1, checked when the task is defined.
    ///
    /// ```
    /// use resq_core::task::{JobContext, TaskDef, TaskError};
    ///
    /// let def = TaskDef::from_fn("resizeVideo", |(_path,): (String,), _ctx: JobContext| async move {
    ///     Ok::<_, TaskError>(())
    /// })
    /// .concurrency(2);
    /// assert_eq!(def.task_limits().unwrap().concurrency, Some(2));
    /// assert_eq!(def.task_limits().unwrap().rate, None);
    /// ```
    pub fn concurrency(mut self, k: u32) -> Self {
        self.limits.concurrency = Some(k);
        self
    }

    /// Sets both limits at once (see [`TaskDef::rate_limit`] and
    /// [`TaskDef::concurrency`]); [`crate::flow::TaskLimits::new`] removes
    /// them.
    pub fn limits(mut self, limits: crate::flow::TaskLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The task's limits, or `None` for a task without any (whose jobs
    /// cost no flow-control work at all).
    pub fn task_limits(&self) -> Option<&crate::flow::TaskLimits> {
        (!self.limits.is_unlimited()).then_some(&self.limits)
    }

    /// The limit set by [`TaskDef::timeout`], if any.
    pub fn timeout_limit(&self) -> Option<std::time::Duration> {
        self.timeout
    }

    /// Declares an input: defaults are filled in, required inputs and
    /// validators checked when the task is enqueued by name.
    pub fn input(mut self, name: impl Into<String>, input: Input) -> Self {
        self.inputs.push((name.into(), input));
        self
    }

    /// Applies the declared inputs to `inputs` (an object, or null for
    /// none): fills defaults, then checks required inputs and validators.
    pub fn check_inputs(&self, inputs: Value) -> Result<Value> {
        let mut map = match inputs {
            Value::Object(m) => m,
            Value::Null => serde_json::Map::new(),
            other if self.inputs.is_empty() => return Ok(other),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "the inputs of task {:?} must be an object, not {other}",
                    self.name
                )))
            }
        };
        for (name, input) in &self.inputs {
            let missing = map.get(name).is_none_or(Value::is_null);
            if missing {
                if let Some(d) = &input.default {
                    map.insert(name.clone(), d.clone());
                }
            }
            match map.get(name).filter(|v| !v.is_null()) {
                None if input.required => {
                    return Err(Error::InvalidArgument(format!(
                        "task {:?}: input {name:?} is required",
                        self.name
                    )))
                }
                None => {}
                Some(v) => {
                    if let Some(check) = &input.validator {
                        check(v).map_err(|why| {
                            Error::InvalidArgument(format!("task {:?}: input {name:?} is invalid: {why}", self.name))
                        })?;
                    }
                }
            }
        }
        Ok(Value::Object(map))
    }

    /// The task's name, its jobs' `class`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The description, or the name when none was given.
    pub fn description_text(&self) -> &str {
        self.description.as_deref().unwrap_or(&self.name)
    }

    /// The default queue.
    pub fn default_queue(&self) -> &str {
        &self.queue
    }

    /// The frequency (zero when not periodic).
    pub fn period(&self) -> std::time::Duration {
        self.frequency
    }

    /// Whether the task is periodic (`frequency > 0`).
    pub fn is_periodic(&self) -> bool {
        !self.frequency.is_zero()
    }

    /// The cron schedule, if any.
    pub fn cron_schedule(&self) -> Option<&crate::cron::CronSchedule> {
        self.cron.as_ref()
    }

    /// The plugins, in the order they run.
    pub fn plugins(&self) -> &[Arc<dyn crate::plugin::Plugin>] {
        &self.plugins
    }

    /// The options for the plugin named `plugin` (`{}` when none are set).
    pub fn options_for(&self, plugin: &str) -> &Value {
        self.plugin_options.get(plugin).unwrap_or(&crate::plugin::NO_OPTIONS)
    }

    /// The code, as the worker calls it.
    pub fn code(&self) -> &Arc<dyn ErasedTask> {
        &self.code
    }

    /// Adds what a periodic task needs, as ActionHero does, unless the task
    /// lists them already: JobLock (with `reEnqueue: false`, so a second
    /// copy never runs beside the first), then DelayQueueLock and QueueLock,
    /// in that order, so that JobLock is held before QueueLock is released
    /// when a worker takes the job.
    fn with_periodic_plugins(mut self) -> Self {
        use crate::plugins::{DelayQueueLock, JobLock, QueueLock};
        if !self.is_periodic() {
            return self;
        }
        let has = |d: &TaskDef, n: &str| d.plugins.iter().any(|p| p.name() == n);
        if !has(&self, JobLock::NAME) {
            self.plugins.push(Arc::new(JobLock::new()));
            self.plugin_options
                .insert(JobLock::NAME.to_owned(), serde_json::json!({"reEnqueue": false}));
        }
        if !has(&self, DelayQueueLock::NAME) {
            self.plugins.push(Arc::new(DelayQueueLock::new()));
        }
        if !has(&self, QueueLock::NAME) {
            self.plugins.push(Arc::new(QueueLock::new()));
        }
        self
    }
}

impl std::fmt::Debug for TaskDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskDef")
            .field("name", &self.name)
            .field("queue", &self.queue)
            .field("frequency", &self.frequency)
            .field("cron", &self.cron)
            .field("plugins", &self.plugins)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// The registry of task definitions by name (the job's `class`). Build it
/// at start-up, then share it with workers, queues and schedulers as
/// `Arc<Tasks>`.
#[derive(Clone, Default)]
pub struct Tasks {
    by_name: HashMap<String, Arc<TaskDef>>,
}

impl Tasks {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a full definition. A duplicate name is an error; a
    /// periodic task gets its locking plugins (see [`TaskDef::frequency`]).
    pub fn define(&mut self, def: TaskDef) -> Result<&mut Self> {
        if def.name.trim().is_empty() {
            return Err(Error::InvalidArgument("a task name must not be empty".into()));
        }
        if def.is_periodic() && def.cron.is_some() {
            return Err(Error::InvalidArgument(format!(
                "task {:?} has both a frequency and a cron schedule; choose one",
                def.name
            )));
        }
        if let Err(e) = def.limits.check() {
            let reason = match e {
                Error::InvalidArgument(reason) => reason,
                other => other.to_string(),
            };
            return Err(Error::InvalidArgument(format!("task {:?}: {reason}", def.name)));
        }
        if self.by_name.contains_key(&def.name) {
            return Err(Error::DuplicateTask(def.name));
        }
        let def = def.with_periodic_plugins();
        self.by_name.insert(def.name.clone(), Arc::new(def));
        Ok(self)
    }

    /// Registers a [`Task`] under `name` with default settings. A duplicate
    /// name is an error.
    pub fn register<T: Task>(&mut self, name: impl Into<String>, task: T) -> Result<&mut Self> {
        self.define(TaskDef::new(name, task))
    }

    /// Registers an async closure under `name`. A duplicate name is an error.
    ///
    /// ```
    /// use resq_core::task::{JobContext, TaskError, Tasks};
    ///
    /// let mut tasks = Tasks::new();
    /// tasks
    ///     .register_fn("sayHello", |(name,): (String,), _ctx: JobContext| async move {
    ///         Ok::<_, TaskError>(format!("hello {name}"))
    ///     })
    ///     .unwrap();
    /// ```
    pub fn register_fn<F, A, O, Fut>(&mut self, name: impl Into<String>, f: F) -> Result<&mut Self>
    where
        F: Fn(A, JobContext) -> Fut + Send + Sync + 'static,
        A: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        Fut: Future<Output = std::result::Result<O, TaskError>> + Send + 'static,
    {
        self.define(TaskDef::from_fn(name, f))
    }

    /// The definition registered under `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<TaskDef>> {
        self.by_name.get(name)
    }

    /// Whether a task is registered under `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_name.keys().cloned().collect();
        names.sort();
        names
    }

    /// Every definition, sorted by name.
    pub fn definitions(&self) -> Vec<Arc<TaskDef>> {
        let mut defs: Vec<Arc<TaskDef>> = self.by_name.values().cloned().collect();
        defs.sort_by(|a, b| a.name.cmp(&b.name));
        defs
    }
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks").field("names", &self.names()).finish()
    }
}
