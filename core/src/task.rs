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

/// The registry of tasks by name (the job's `class`). Build it at start-up,
/// then share it with workers as `Arc<Tasks>`.
#[derive(Clone, Default)]
pub struct Tasks {
    by_name: HashMap<String, Arc<dyn ErasedTask>>,
}

impl Tasks {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a [`Task`] under `name`. A duplicate name is an error.
    pub fn register<T: Task>(&mut self, name: impl Into<String>, task: T) -> Result<&mut Self> {
        self.insert(name.into(), Arc::new(TypedTask(Arc::new(task))))
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
        self.insert(
            name.into(),
            Arc::new(FnTask {
                f,
                _types: std::marker::PhantomData,
            }),
        )
    }

    fn insert(&mut self, name: String, task: Arc<dyn ErasedTask>) -> Result<&mut Self> {
        if self.by_name.contains_key(&name) {
            return Err(Error::DuplicateTask(name));
        }
        self.by_name.insert(name, task);
        Ok(self)
    }

    /// The task registered under `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn ErasedTask>> {
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
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks").field("names", &self.names()).finish()
    }
}
