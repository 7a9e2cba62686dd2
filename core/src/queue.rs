//! The [`Queue`] client: enqueue normal and delayed jobs, and every
//! inspection and repair call that node-resque's `Queue` offers.

use crate::backend::{Backend, Cleaned, Orphan, QueuedJob, WorkerId, WorkingOn};
use crate::error::{Error, Result};
use crate::failed::{FailedId, FailedJob, Failure, FORCE_CLEAN_MARK, WORKER_TIMEOUT};
use crate::job::{args_of, encode_payload, encode_payload_rs_order, Decoded, Job};
use crate::plugin::EnqueueContext;
use crate::task::Tasks;
use crate::time::{bucket_of_ms, checked_after_ms, checked_timestamp_ms, delayed_bucket_of_ms, js_date_string, now_ms};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// One job for [`Queue::enqueue_batch`].
#[derive(Clone, Debug, PartialEq)]
pub struct NewJob {
    /// Destination queue.
    pub queue: String,
    /// The task name.
    pub class: String,
    /// The arguments array.
    pub args: Vec<Value>,
}

impl NewJob {
    /// A job from any serializable arguments (see [`crate::job::wrap_args`]).
    pub fn new(queue: impl Into<String>, class: impl Into<String>, args: impl Serialize) -> Result<Self> {
        Ok(NewJob {
            queue: queue.into(),
            class: class.into(),
            args: args_of(&args)?,
        })
    }
}

/// The jobs of one delayed bucket, from [`Queue::delayed_at`].
#[derive(Clone, Debug, PartialEq)]
pub struct DelayedAt {
    /// The jobs, in the order they were scheduled.
    pub tasks: Vec<Decoded>,
    /// The bucket, in Unix seconds.
    pub r_timestamp: i64,
}

/// A registered worker's state, from [`Queue::all_working_on`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerStatus {
    /// Registered and idle (node-resque's `"started"`).
    Started,
    /// Running a job.
    Working(WorkingOn),
}

/// Everything at a glance, from [`Queue::details`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Details {
    /// Every queue with its length.
    pub queues: BTreeMap<String, u64>,
    /// Every worker with its state, by worker name.
    pub workers: BTreeMap<String, WorkerStatus>,
    /// Every counter.
    pub stats: BTreeMap<String, i64>,
    /// The scheduler leader, if any.
    pub leader: Option<String>,
}

/// The client for producers and operators. Cheap to clone.
///
/// ```
/// # async fn demo(backend: std::sync::Arc<dyn resq_core::Backend>) -> resq_core::Result<()> {
/// use resq_core::Queue;
/// use std::time::Duration;
///
/// let queue = Queue::new(backend);
/// queue.enqueue("default", "sendWelcomeEmail", ("evan@example.com",)).await?;
/// queue.enqueue_in(Duration::from_secs(10), "default", "sayHello", ()).await?;
/// assert_eq!(queue.length("default").await?, 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Queue {
    backend: Arc<dyn Backend>,
    tasks: Option<Arc<Tasks>>,
    /// Shared by its clones: a subscriber sees what any clone did.
    events: tokio::sync::broadcast::Sender<crate::event::QueueEvent>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("backend", &self.backend.kind()).finish()
    }
}

/// The lock-key prefix of [`Queue::enqueue_once`]'s idempotency keys.
pub const ENQUEUE_ONCE_PREFIX: &str = "resq:enqueue-once:";

/// What [`Queue::enqueue_once`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnqueueOnce {
    /// This call queued the job and took the key.
    Enqueued,
    /// The key was already taken (an earlier call with it queued the job,
    /// possibly one whose reply was lost): nothing was queued.
    Duplicate,
    /// A plugin's `before_enqueue` vetoed the job: nothing was queued and
    /// the key was not taken.
    Vetoed,
}

/// Where `enqueue_with` puts the job.
#[derive(Clone, Copy)]
enum Push<'a> {
    Tail,
    Front,
    Once { key: &'a str, ttl: Duration },
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::InvalidArgument(format!("{what} must not be empty")));
    }
    Ok(())
}

impl Queue {
    /// A client over `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Queue {
            backend,
            tasks: None,
            events: tokio::sync::broadcast::channel(crate::event::EVENT_CAPACITY).0,
        }
    }

    /// A client that knows the task definitions, so that `enqueue` runs
    /// their plugins' enqueue hooks (a client without them runs none, as a
    /// node-resque queue without job definitions).
    pub fn with_tasks(backend: Arc<dyn Backend>, tasks: Arc<Tasks>) -> Self {
        Queue {
            backend,
            tasks: Some(tasks),
            events: tokio::sync::broadcast::channel(crate::event::EVENT_CAPACITY).0,
        }
    }

    /// A receiver of this client's events ([`crate::QueueEvent`]: jobs it
    /// cancelled), shared by its clones. Events are best-effort: a slow
    /// subscriber skips some (`RecvError::Lagged`), and none is built
    /// while nobody subscribes.
    pub fn subscribe(&self) -> crate::event::QueueEvents {
        self.events.subscribe()
    }

    /// Sends a queue event if anyone listens.
    pub(crate) fn emit(&self, make: impl FnOnce() -> crate::event::QueueEvent) {
        crate::event::emit_with(&self.events, make);
    }

    /// Whether anyone listens to this client's events.
    pub(crate) fn observed(&self) -> bool {
        self.events.receiver_count() > 0
    }

    /// The task definitions this client knows, if any.
    pub fn tasks(&self) -> Option<&Arc<Tasks>> {
        self.tasks.as_ref()
    }

    /// The backend this client uses.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    // ---- enqueue -------------------------------------------------------

    /// Enqueues a job to run as soon as a worker is free. Returns whether it
    /// was enqueued: `false` when a plugin's `before_enqueue` vetoed it
    /// (plugins run when this client knows the task, see [`Queue::with_tasks`]).
    pub async fn enqueue(&self, queue: &str, class: &str, args: impl Serialize) -> Result<bool> {
        let pushed = self.enqueue_with(queue, class, args, Push::Tail).await?;
        Ok(pushed == EnqueueOnce::Enqueued)
    }

    /// Enqueues a job at most once per idempotency `key`, so that a caller
    /// may safely retry an enqueue whose reply it did not get.
    ///
    /// A plain [`Queue::enqueue`] is at least once: when the connection
    /// drops after the backend committed the push but before the reply
    /// arrived (a PostgreSQL restart, a Redis failover), the call returns an
    /// error although the job is queued, and a caller who retries queues it
    /// twice. With `enqueue_once`, the push and the taking of `key` are one
    /// atomic step ([`crate::QueueStore::push_once`]): while the key is held
    /// (for `ttl` after the first successful push), every further call with
    /// it returns [`EnqueueOnce::Duplicate`] and queues nothing. So retry
    /// with the same key until a call returns `Ok`; pick `ttl` longer than
    /// your retries last. After `ttl` the key is free again.
    ///
    /// The key is stored as the lock `resq:enqueue-once:<key>` (listed by
    /// [`Queue::locks`]). Enqueue plugins run as for [`Queue::enqueue`].
    pub async fn enqueue_once(
        &self,
        queue: &str,
        class: &str,
        args: impl Serialize,
        key: &str,
        ttl: Duration,
    ) -> Result<EnqueueOnce> {
        check_name("idempotency key", key)?;
        if ttl.is_zero() {
            return Err(Error::InvalidArgument("enqueue_once needs a ttl above zero".into()));
        }
        self.enqueue_with(queue, class, args, Push::Once { key, ttl }).await
    }

    async fn enqueue_with(
        &self,
        queue: &str,
        class: &str,
        args: impl Serialize,
        push: Push<'_>,
    ) -> Result<EnqueueOnce> {
        check_name("queue", queue)?;
        check_name("class", class)?;
        let args = args_of(&args)?;
        let def = self
            .tasks
            .as_ref()
            .and_then(|t| t.get(class))
            .filter(|d| !d.plugins.is_empty());
        if let Some(def) = def {
            for plugin in &def.plugins {
                if !plugin
                    .before_enqueue(&self.hook_context(def, plugin.name(), queue, class, &args))
                    .await?
                {
                    tracing::debug!(target: "resq::plugin", plugin = plugin.name(), %queue, %class, "enqueue vetoed");
                    return Ok(EnqueueOnce::Vetoed);
                }
            }
        }
        let payload = encode_payload(queue, class, &args);
        match push {
            Push::Front => self.backend.push_front(queue, &payload).await?,
            Push::Tail => self.backend.push(queue, &payload).await?,
            Push::Once { key, ttl } => {
                let lock = format!("{ENQUEUE_ONCE_PREFIX}{key}");
                let value = now_ms().to_string();
                if !self.backend.push_once(queue, &payload, &lock, &value, ttl).await? {
                    tracing::debug!(target: "resq::queue", %queue, %class, "enqueue_once: key already used, nothing queued");
                    return Ok(EnqueueOnce::Duplicate);
                }
            }
        }
        if let Some(def) = def {
            for plugin in &def.plugins {
                plugin
                    .after_enqueue(&self.hook_context(def, plugin.name(), queue, class, &args))
                    .await?;
            }
        }
        Ok(EnqueueOnce::Enqueued)
    }

    /// Enqueues a job at the **head** of `queue`, so it runs before every
    /// job already waiting there (ActionHero's `enqueueFront` example of
    /// extending the queue client). Enqueue plugins run as for
    /// [`Queue::enqueue`]; `false` means one vetoed it.
    pub async fn enqueue_front(&self, queue: &str, class: &str, args: impl Serialize) -> Result<bool> {
        let pushed = self.enqueue_with(queue, class, args, Push::Front).await?;
        Ok(pushed == EnqueueOnce::Enqueued)
    }

    /// Enqueues many jobs in one backend call, in order.
    pub async fn enqueue_batch(&self, jobs: impl IntoIterator<Item = NewJob>) -> Result<usize> {
        let mut batch = Vec::new();
        for j in jobs {
            check_name("queue", &j.queue)?;
            check_name("class", &j.class)?;
            batch.push(QueuedJob {
                payload: encode_payload(&j.queue, &j.class, &j.args),
                queue: j.queue,
            });
        }
        if !batch.is_empty() {
            self.backend.push_batch(&batch).await?;
        }
        Ok(batch.len())
    }

    /// Schedules a job for `timestamp_ms` (Unix ms). It lands in the bucket
    /// `ceil((ms + 500) / 1000)` ([`crate::time::delayed_bucket_of_ms`]), the
    /// first from which no scheduler (resq's, node-resque's or Ruby's)
    /// promotes it before the time asked for. On Redis, which keeps
    /// Resque's buckets only, it runs up to a second late; the memory and
    /// PostgreSQL backends also keep the millisecond time
    /// ([`crate::DelayedStore::schedule_ms`]), and a running scheduler
    /// promotes it at that time (see
    /// [`crate::DelayedStore::delayed_precision`]). Never early.
    /// The identical job in the same bucket is an [`Error::AlreadyScheduled`];
    /// a time in the past is promoted on the next scheduler poll. A time
    /// whose bucket lies beyond a JavaScript `Date`'s range
    /// (±[`MAX_TIMESTAMP_MS`](crate::time::MAX_TIMESTAMP_MS), so the latest
    /// time accepted is `MAX_TIMESTAMP_MS - 500`) is an
    /// [`Error::InvalidArgument`] and schedules nothing: every Resque
    /// client can read back each bucket resq writes.
    pub async fn enqueue_at(&self, timestamp_ms: i64, queue: &str, class: &str, args: impl Serialize) -> Result<()> {
        check_name("queue", queue)?;
        check_name("class", class)?;
        checked_timestamp_ms("enqueue_at time", timestamp_ms)?;
        let args = args_of(&args)?;
        let bucket = delayed_bucket_of_ms(timestamp_ms);
        checked_timestamp_ms("enqueue_at time's bucket", bucket.saturating_mul(1000))?;
        if self
            .backend
            .schedule_ms(timestamp_ms, &encode_payload(queue, class, &args))
            .await?
        {
            Ok(())
        } else {
            Err(Error::AlreadyScheduled { timestamp: bucket })
        }
    }

    /// Schedules a job to run after `delay` (see [`Queue::enqueue_at`]). A
    /// delay that ends beyond the range of times `enqueue_at` accepts is an
    /// [`Error::InvalidArgument`].
    pub async fn enqueue_in(&self, delay: Duration, queue: &str, class: &str, args: impl Serialize) -> Result<()> {
        self.enqueue_at(checked_after_ms(delay)?, queue, class, args).await
    }

    fn hook_context<'a>(
        &'a self,
        def: &'a crate::task::TaskDef,
        plugin: &str,
        queue: &'a str,
        class: &'a str,
        args: &'a [Value],
    ) -> EnqueueContext<'a> {
        EnqueueContext {
            client: self,
            queue,
            class,
            args,
            options: def.options_for(plugin),
        }
    }

    // ---- tasks ---------------------------------------------------------

    fn task(&self, name: &str) -> Result<Arc<crate::task::TaskDef>> {
        self.tasks
            .as_ref()
            .and_then(|t| t.get(name))
            .cloned()
            .ok_or_else(|| Error::InvalidArgument(format!("no task named {name:?} is defined")))
    }

    /// Enqueues task `name` with `inputs` on the task's queue, ActionHero's
    /// way: the job's args are `[inputs]`, after the task's declared inputs
    /// are applied ([`crate::task::TaskDef::input`]: defaults, required
    /// inputs, validators; a violation is an error). Runs the task's enqueue plugins;
    /// `false` means one vetoed it. The task must be defined
    /// ([`Queue::with_tasks`]).
    pub async fn enqueue_task(&self, name: &str, inputs: impl Serialize) -> Result<bool> {
        let (def, inputs) = self.task_inputs(name, inputs)?;
        self.enqueue(&def.queue, name, (inputs,)).await
    }

    fn task_inputs(&self, name: &str, inputs: impl Serialize) -> Result<(Arc<crate::task::TaskDef>, Value)> {
        let def = self.task(name)?;
        let inputs = serde_json::to_value(inputs).map_err(|e| Error::Encode {
            what: "task inputs",
            reason: e.to_string(),
        })?;
        let inputs = def.check_inputs(inputs)?;
        Ok((def, inputs))
    }

    /// Schedules task `name` with `inputs` for `timestamp_ms` on its queue.
    pub async fn enqueue_task_at(&self, timestamp_ms: i64, name: &str, inputs: impl Serialize) -> Result<()> {
        let (def, inputs) = self.task_inputs(name, inputs)?;
        self.enqueue_at(timestamp_ms, &def.queue, name, (inputs,)).await
    }

    /// Schedules task `name` with `inputs` to run after `delay` on its queue.
    pub async fn enqueue_task_in(&self, delay: Duration, name: &str, inputs: impl Serialize) -> Result<()> {
        let (def, inputs) = self.task_inputs(name, inputs)?;
        self.enqueue_in(delay, &def.queue, name, (inputs,)).await
    }

    // ---- queues --------------------------------------------------------

    /// Every known queue, sorted.
    pub async fn queues(&self) -> Result<Vec<String>> {
        self.backend.queues().await
    }

    /// Pauses `queue` for every resq worker sharing this store: within 1 s
    /// no worker claims from it, and its jobs stay queued (enqueueing to it
    /// still works). Pausing an empty, unknown or already paused queue is
    /// fine. Returns whether the queue was newly paused.
    pub async fn pause_queue(&self, queue: &str) -> Result<bool> {
        self.backend.pause_queue(queue).await
    }

    /// Resumes a paused `queue`: within 1 s workers claim from it again.
    /// Returns whether it was paused.
    pub async fn resume_queue(&self, queue: &str) -> Result<bool> {
        self.backend.resume_queue(queue).await
    }

    /// The paused queues, sorted.
    pub async fn paused_queues(&self) -> Result<Vec<String>> {
        self.backend.paused_queues().await
    }

    /// Sets `queue`'s flow-control limits for the whole cluster (a rate
    /// limit and/or a concurrency cap, see [`crate::flow`]); unlimited
    /// [`QueueLimits`](crate::flow::QueueLimits) remove them. Limits out of bounds are refused with
    /// [`Error::InvalidArgument`] before the backend is called.
    ///
    /// ```
    /// # async fn demo(queue: resq_core::Queue) -> resq_core::Result<()> {
    /// use resq_core::QueueLimits;
    /// use std::time::Duration;
    /// queue.set_queue_limits("emails", QueueLimits::new().rate(10, Duration::from_secs(1))).await?;
    /// queue.set_queue_limits("reports", QueueLimits::new().concurrency(2)).await?;
    /// queue.set_queue_limits("emails", QueueLimits::new()).await?; // removed
    /// # Ok(()) }
    /// ```
    pub async fn set_queue_limits(&self, queue: &str, limits: crate::flow::QueueLimits) -> Result<()> {
        limits.check()?;
        self.backend.set_queue_limits(queue, limits).await
    }

    /// Every queue with flow-control limits, sorted by name.
    pub async fn queue_limits(&self) -> Result<Vec<(String, crate::flow::QueueLimits)>> {
        self.backend.queue_limits().await
    }

    /// The number of jobs waiting in `queue` (delayed jobs not included).
    pub async fn length(&self, queue: &str) -> Result<u64> {
        self.backend.queue_len(queue).await
    }

    /// Jobs in `queue` from `start` to `stop` inclusive (negative counts
    /// from the end), oldest first.
    pub async fn queued(&self, queue: &str, start: i64, stop: i64) -> Result<Vec<Decoded>> {
        let raw = self.backend.queue_range(queue, start, stop).await?;
        Ok(raw.into_iter().map(Decoded::from_raw).collect())
    }

    /// Deletes a queue and all its jobs.
    pub async fn del_queue(&self, queue: &str) -> Result<bool> {
        self.backend.delete_queue(queue).await
    }

    /// Removes jobs of `class` with exactly `args` from `queue`; `count`
    /// follows `LREM` (0 all, > 0 from the head, < 0 from the tail). Both the
    /// node-resque and the Ruby encoding of the job are matched.
    pub async fn del(&self, queue: &str, class: &str, args: impl Serialize, count: i64) -> Result<u64> {
        let args = args_of(&args)?;
        let mut removed = 0;
        for payload in [encode_payload(queue, class, &args), encode_ruby(class, &args)] {
            let left = if count == 0 {
                0
            } else {
                let done = i64::try_from(removed).unwrap_or(i64::MAX);
                let left = count.abs() - done;
                if left <= 0 {
                    break;
                }
                left * count.signum()
            };
            removed += self.backend.remove_from_queue(queue, &payload, left).await?;
        }
        Ok(removed)
    }

    /// Removes every job of `class` from `queue`, whatever its arguments or
    /// encoding. Returns how many were removed. The backend does it where the
    /// jobs are ([`crate::QueueStore::remove_by_class`]), so a long queue is
    /// never read into memory.
    pub async fn del_by_class(&self, queue: &str, class: &str) -> Result<u64> {
        self.backend.remove_by_class(queue, class).await
    }

    // ---- delayed -------------------------------------------------------

    /// The buckets (Unix secs) holding a delayed job of `class` with `args`
    /// for `queue`, in either node-resque's or resque-scheduler's encoding.
    pub async fn scheduled_at(&self, queue: &str, class: &str, args: impl Serialize) -> Result<Vec<i64>> {
        let args = args_of(&args)?;
        let mut out = Vec::new();
        for payload in delayed_encodings(queue, class, &args) {
            out.extend(self.backend.timestamps_of(&payload).await?);
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Removes every delayed copy of the job. Returns the buckets (Unix secs)
    /// it was removed from.
    pub async fn del_delayed(&self, queue: &str, class: &str, args: impl Serialize) -> Result<Vec<i64>> {
        let args = args_of(&args)?;
        let mut out = Vec::new();
        for payload in delayed_encodings(queue, class, &args) {
            out.extend(self.backend.remove_delayed(&payload).await?);
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Every bucket holding delayed jobs, as Unix **ms**, ascending.
    pub async fn timestamps(&self) -> Result<Vec<i64>> {
        let secs = self.backend.delayed_timestamps().await?;
        Ok(secs.into_iter().map(|s| s.saturating_mul(1000)).collect())
    }

    /// The delayed jobs of the bucket that `timestamp_ms` names, as in
    /// node-resque: `round(ms / 1000)`, so the times [`Queue::timestamps`]
    /// lists find their buckets. (A job resq scheduled for `t` sits in
    /// [`crate::time::delayed_bucket_of_ms`]`(t)`; [`Queue::scheduled_at`]
    /// finds it by its arguments.)
    pub async fn delayed_at(&self, timestamp_ms: i64) -> Result<DelayedAt> {
        let bucket = bucket_of_ms(timestamp_ms);
        let raw = self.backend.delayed_at(bucket).await?;
        Ok(DelayedAt {
            tasks: raw.into_iter().map(Decoded::from_raw).collect(),
            r_timestamp: bucket,
        })
    }

    /// Every delayed job, by bucket in Unix **ms**.
    pub async fn all_delayed(&self) -> Result<BTreeMap<i64, Vec<Decoded>>> {
        let mut out = BTreeMap::new();
        for secs in self.backend.delayed_timestamps().await? {
            let raw = self.backend.delayed_at(secs).await?;
            if !raw.is_empty() {
                out.insert(
                    secs.saturating_mul(1000),
                    raw.into_iter().map(Decoded::from_raw).collect(),
                );
            }
        }
        Ok(out)
    }

    // ---- stats, locks, leader -----------------------------------------

    /// Every counter: `processed`, `failed`, and `processed:<worker>`, …
    pub async fn stats(&self) -> Result<BTreeMap<String, i64>> {
        Ok(self.backend.stats().await?.into_iter().collect())
    }

    /// Every plugin lock with its value.
    pub async fn locks(&self) -> Result<BTreeMap<String, String>> {
        Ok(self.backend.locks().await?.into_iter().collect())
    }

    /// Deletes a lock. Returns how many were deleted (0 or 1).
    pub async fn del_lock(&self, key: &str) -> Result<u64> {
        self.backend.delete_lock(key).await
    }

    /// The name of the scheduler that leads, if any.
    pub async fn leader(&self) -> Result<Option<String>> {
        self.backend.leader().await
    }

    // ---- workers -------------------------------------------------------

    /// Every registered worker: name → queues (comma-joined).
    pub async fn workers(&self) -> Result<BTreeMap<String, String>> {
        Ok(self
            .backend
            .workers()
            .await?
            .into_iter()
            .map(|w| (w.name, w.queues))
            .collect())
    }

    /// What worker `name` working `queues` is doing, if anything.
    pub async fn working_on(&self, name: &str, queues: &str) -> Result<Option<WorkingOn>> {
        let id = WorkerId {
            name: name.to_owned(),
            queues: queues.to_owned(),
        };
        self.backend.working_on(&id).await
    }

    /// Every worker's state, by name. A worker whose record cannot be read
    /// for a reason other than a transient backend error (another client's
    /// key of the wrong type, say) is left out with a WARN log line.
    pub async fn all_working_on(&self) -> Result<BTreeMap<String, WorkerStatus>> {
        let mut out = BTreeMap::new();
        for w in self.backend.workers().await? {
            let status = match skip_bad(self.backend.working_on(&w).await, "working-on record", &w.to_string())? {
                Some(Some(wo)) => WorkerStatus::Working(wo),
                Some(None) => WorkerStatus::Started,
                None => continue,
            };
            out.insert(w.name, status);
        }
        Ok(out)
    }

    /// Queues with lengths, workers with their state, stats and the leader.
    /// A queue or worker that cannot be read for a reason other than a
    /// transient backend error is left out with a WARN log line.
    pub async fn details(&self) -> Result<Details> {
        let mut queues = BTreeMap::new();
        for q in self.backend.queues().await? {
            if let Some(len) = skip_bad(self.backend.queue_len(&q).await, "queue length", &q)? {
                queues.insert(q, len);
            }
        }
        Ok(Details {
            queues,
            workers: self.all_working_on().await?,
            stats: self.stats().await?,
            leader: self.leader().await?,
        })
    }

    /// Removes every worker whose last ping is older than `age`, busy or idle.
    /// A busy worker's job goes to the failed list as
    /// `Worker Timeout (killed manually)` (retry it with
    /// [`Queue::retry_stuck_jobs`]). Returns what was cleaned, by worker name.
    pub async fn clean_old_workers(&self, age: Duration) -> Result<BTreeMap<String, Cleaned>> {
        let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms().saturating_sub(age_ms);
        let mut out = BTreeMap::new();
        for w in self.backend.stale_workers(cutoff).await? {
            if let Some(c) = self.backend.clean_worker(&w, force_clean_orphan()).await? {
                out.insert(w.name, c);
            }
        }
        Ok(out)
    }

    /// Removes worker `name` now, whatever its state. Its job, if it had
    /// one, goes to the failed list (see [`Queue::clean_old_workers`]).
    pub async fn force_clean_worker(&self, name: &str) -> Result<Option<Cleaned>> {
        let ids: Vec<WorkerId> = self
            .backend
            .workers()
            .await?
            .into_iter()
            .filter(|w| w.name == name)
            .collect();
        let ids = if ids.is_empty() {
            // Not registered: its ping or working-on record may still linger.
            vec![WorkerId {
                name: name.to_owned(),
                queues: String::new(),
            }]
        } else {
            ids
        };
        let mut last = None;
        for id in ids {
            if let Some(c) = self.backend.clean_worker(&id, force_clean_orphan()).await? {
                last = Some(c);
            }
        }
        Ok(last)
    }

    // ---- failed --------------------------------------------------------

    /// The number of failed jobs.
    pub async fn failed_count(&self) -> Result<u64> {
        self.backend.failed_count().await
    }

    /// Failed entries from `start` to `stop` inclusive (negative counts from the end).
    pub async fn failed(&self, start: i64, stop: i64) -> Result<Vec<FailedJob>> {
        let raw = self.backend.failed_range(start, stop).await?;
        Ok(raw.iter().map(|r| FailedJob::decode_lenient(r)).collect())
    }

    /// Removes one failed entry, matched by its stored bytes. Returns 0 or 1.
    pub async fn remove_failed(&self, entry: &FailedJob) -> Result<u64> {
        self.backend.remove_failed(&entry.raw).await
    }

    /// Removes a failed entry and enqueues its job again, atomically, with
    /// the payload's original bytes (only a top-level `"args":{}`, node-resque's
    /// re-encoding of `[]`, is repaired; see [`crate::job`]). An entry that is no longer there is
    /// [`Error::NotInFailedQueue`] and changes nothing.
    pub async fn retry_and_remove_failed(&self, entry: &FailedJob) -> Result<()> {
        let (queue, payload) = retry_target(entry)?;
        if self.backend.retry_failed(&entry.raw, &queue, &payload).await? {
            Ok(())
        } else {
            Err(Error::NotInFailedQueue)
        }
    }

    /// A page of failed entries from position `start` (0 is the head), at
    /// most `count` of them, each with its stable [`FailedId`]: what a
    /// listing shows, so that an action taken from it later acts on exactly
    /// that entry or is refused.
    pub async fn failed_with_ids(&self, start: u64, count: u64) -> Result<Vec<(FailedId, FailedJob)>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let first =
            i64::try_from(start).map_err(|_| Error::InvalidArgument("failed page start is too large".into()))?;
        let last = first.saturating_add(i64::try_from(count).unwrap_or(i64::MAX) - 1);
        let raw = self.backend.failed_range(first, last).await?;
        Ok(raw
            .iter()
            .enumerate()
            .map(|(i, r)| (FailedId::new(start + i as u64, r), FailedJob::decode_lenient(r)))
            .collect())
    }

    /// The entry `id` names, read now; [`Error::StaleFailedEntry`] when the
    /// position is empty or holds other bytes.
    async fn failed_at(&self, id: &FailedId) -> Result<FailedJob> {
        let stale = || Error::StaleFailedEntry { id: id.to_string() };
        let index = i64::try_from(id.index()).map_err(|_| stale())?;
        let raw = self.backend.failed_range(index, index).await?;
        match raw.into_iter().next() {
            Some(r) if id.matches(&r) => Ok(FailedJob::decode_lenient(&r)),
            _ => Err(stale()),
        }
    }

    /// Removes the failed entry `id` names, only if it is still at that
    /// position with the same bytes (the backend re-checks atomically);
    /// otherwise [`Error::StaleFailedEntry`] and nothing changes. An
    /// identical entry elsewhere in the list is never removed instead.
    pub async fn remove_failed_by_id(&self, id: &FailedId) -> Result<()> {
        let entry = self.failed_at(id).await?;
        if self.backend.remove_failed_at(id.index(), &entry.raw).await? {
            Ok(())
        } else {
            Err(Error::StaleFailedEntry { id: id.to_string() })
        }
    }

    /// Removes the failed entry `id` names and enqueues its job again with
    /// the payload's original bytes (as [`Queue::retry_and_remove_failed`]),
    /// atomically, only if the entry is still at that position with the same
    /// bytes; otherwise [`Error::StaleFailedEntry`] and nothing changes.
    pub async fn retry_failed_by_id(&self, id: &FailedId) -> Result<()> {
        let entry = self.failed_at(id).await?;
        let (queue, payload) = retry_target(&entry)?;
        if self
            .backend
            .retry_failed_at(id.index(), &entry.raw, &queue, &payload)
            .await?
        {
            Ok(())
        } else {
            Err(Error::StaleFailedEntry { id: id.to_string() })
        }
    }

    /// Re-enqueues every failed job that a worker cleanup wrote (entries
    /// marked `queue#forceCleanWorker`), each exactly once. Returns how many.
    /// The failed list is read [`RETRY_PAGE`] entries at a time, so a long
    /// list is never held in memory.
    pub async fn retry_stuck_jobs(&self) -> Result<u64> {
        let page = i64::try_from(RETRY_PAGE).unwrap_or(i64::MAX);
        let mut offset: i64 = 0;
        let mut retried = 0;
        loop {
            let entries = self.backend.failed_range(offset, offset + page - 1).await?;
            let mut removed: i64 = 0;
            for raw in &entries {
                let entry = FailedJob::decode_lenient(raw);
                if !entry.is_force_cleaned() {
                    continue;
                }
                let Ok((queue, payload)) = retry_target(&entry) else {
                    continue;
                };
                // Retry by value (the first equal entry, at or before this
                // one), never by index: node-resque's skip (spec §7.2 #11).
                if self.backend.retry_failed(raw, &queue, &payload).await? {
                    retried += 1;
                    removed += 1;
                }
            }
            let n = i64::try_from(entries.len()).unwrap_or(i64::MAX);
            if n < page {
                return Ok(retried);
            }
            // Each removed entry sat at or before the end of this page, so
            // the next unread entry is `removed` places nearer the head.
            offset = offset.saturating_add(n - removed);
        }
    }
}

/// How many failed entries [`Queue::retry_stuck_jobs`] reads at a time.
pub const RETRY_PAGE: usize = 100;

/// Where and what to retry for a failed entry: its queue (the entry's, or
/// else the payload's) and its payload bytes (repaired if node-resque's
/// cleanup wrote them through cjson). An [`Error::Decode`] when the entry
/// has no payload, the payload does not decode or no queue is named.
pub fn retry_target(entry: &FailedJob) -> Result<(String, String)> {
    let payload = entry.payload.clone().ok_or_else(|| Error::Decode {
        what: "failed entry",
        reason: "it has no payload to retry".into(),
    })?;
    // node-resque's cleanup may have written the payload through cjson.
    let payload = crate::job::repaired_payload(payload);
    let job = Job::decode(&payload)?;
    let queue = entry
        .queue
        .clone()
        .filter(|q| !q.is_empty())
        .or(job.queue)
        .ok_or_else(|| Error::Decode {
            what: "failed entry",
            reason: "it names no queue to retry on".into(),
        })?;
    Ok((queue, payload))
}

fn encode_ruby(class: &str, args: &[Value]) -> String {
    let mut out = String::from("{\"class\":");
    crate::json::write_js_str(&mut out, class);
    out.push_str(",\"args\":");
    crate::json::write_js(&mut out, &Value::Array(args.to_vec()));
    out.push('}');
    out
}

fn delayed_encodings(queue: &str, class: &str, args: &[Value]) -> [String; 2] {
    [
        encode_payload(queue, class, args),
        encode_payload_rs_order(queue, class, args),
    ]
}

/// The orphan policy of manual cleanups: fail the job with node-resque's
/// force-clean backtrace, so `retry_stuck_jobs` can find it.
pub(crate) fn force_clean_orphan() -> Orphan {
    let now = now_ms();
    let host = crate::worker::hostname();
    Orphan::Fail {
        failure: Failure::new(WORKER_TIMEOUT, WORKER_TIMEOUT).with_backtrace(vec![
            format!("killed by {host} at {}", js_date_string(now)),
            FORCE_CLEAN_MARK.to_owned(),
            "resq".to_owned(),
        ]),
        at_ms: now,
    }
}

/// For inspection calls over many items: a transient error is returned (the
/// whole call may be retried); any other error (one item's bad data) is
/// logged with the item and the item is skipped (`Ok(None)`).
fn skip_bad<T>(read: Result<T>, what: &str, item: &str) -> Result<Option<T>> {
    match read {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_transient() => Err(e),
        Err(e) => {
            tracing::warn!(target: "resq::queue", item, error = %e, "skipping a {what} that cannot be read");
            Ok(None)
        }
    }
}
