//! Periodic ("recurrent") tasks: a task with a `frequency` runs again
//! `frequency` after each run, with at most one instance in the cluster.
//!
//! How the single instance is kept, ActionHero's scheme with its repairs
//! (wire spec §5.2 and §7.4 #27):
//!
//! * A periodic task gets JobLock (`reEnqueue: false`), DelayQueueLock and
//!   QueueLock, in that order ([`crate::task::Tasks::define`]).
//! * At boot, scheduler nodes call [`Queue::enqueue_all_recurrent_jobs`]:
//!   each periodic task is enqueued unless an instance is running (its
//!   JobLock is held), delayed (DelayQueueLock) or queued (QueueLock, taken
//!   atomically). A start lock per task, held for its frequency (at most a
//!   minute) and taken before the check, makes one of many nodes booting
//!   at once the one that checks and enqueues, even when the first copy is
//!   claimed and run before another node's check is done.
//! * A worker takes JobLock before QueueLock is released, so a boot never
//!   sees the task as absent while it is being taken; a second copy that
//!   reaches a worker while one runs is dropped unrun.
//! * After each run (and after a failure, unless the task opts out) the
//!   worker removes every other queued or delayed instance of the task **by
//!   class**, whatever its args (ActionHero deletes by args `[null]`, which
//!   never matches), then schedules the next one `frequency` later; a
//!   same-second duplicate of that schedule is not an error.
//!
//! So at most one instance runs at a time, concurrent boots enqueue one,
//! and any extra copy (a boot racing the end of a run, a retried failed
//! job) is removed by the next run.

use crate::error::{Error, Result};
use crate::plugins::{JobLock, QueueLock};
use crate::queue::Queue;
use crate::task::TaskDef;
use serde_json::{json, Value};
use std::sync::Arc;

/// The longest a start lock is held ([`Queue::start_recurrent_job`]):
/// long enough to cover a start racing a first run (its queue wait and
/// run), short enough that an instance lost some other way (a queue an
/// operator deleted) is started again by the next boot after it.
pub const START_LOCK_MAX_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// The lock a start of periodic task `name` takes: `resq-periodic-start:<name>`
/// (a lock key of resq's own; other Resque clients ignore it).
pub fn start_lock_key(name: &str) -> String {
    format!("resq-periodic-start:{name}")
}

/// The inputs a periodic task is enqueued with: `{}` (args `[{}]`).
fn periodic_args() -> Vec<Value> {
    vec![json!({})]
}

/// Whether an instance of `def` is running: its JobLock key is held.
async fn is_running(client: &Queue, def: &TaskDef) -> Result<bool> {
    let key = crate::plugins::default_key(
        "workerslock",
        &crate::plugins::LockKeyInput {
            class: &def.name,
            queue: &def.queue,
            args: &periodic_args(),
        },
    );
    let has_job_lock = def.plugins().iter().any(|p| p.name() == JobLock::NAME);
    let options = def.options_for(JobLock::NAME);
    let key = options
        .get("key")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or(key);
    Ok(has_job_lock && client.backend().get_lock(&key).await?.is_some())
}

/// Removes every queued and delayed instance of task `def` (by class, on
/// its queue). Returns how many it removed. Both removals run where the
/// jobs are ([`crate::QueueStore::remove_by_class`],
/// [`crate::DelayedStore::remove_delayed_by_class`]): a long queue or
/// schedule is never read into memory.
async fn remove_instances(client: &Queue, def: &TaskDef) -> Result<u64> {
    let queued = client.del_by_class(&def.queue, &def.name).await?;
    let delayed = client.backend().remove_delayed_by_class(&def.queue, &def.name).await?;
    Ok(queued.saturating_add(delayed))
}

/// The periodic step after a run: remove other instances, then schedule
/// the next run `frequency` from now.
pub(crate) async fn reenqueue_after_run(client: &Queue, def: &Arc<TaskDef>) -> Result<()> {
    remove_instances(client, def).await?;
    match client
        .enqueue_in(def.period(), &def.queue, &def.name, periodic_args())
        .await
    {
        Err(e) if e.is_already_scheduled() => Ok(()),
        other => other,
    }
}

impl Queue {
    fn periodic(&self, name: &str) -> Result<Arc<TaskDef>> {
        let def = self
            .tasks()
            .and_then(|t| t.get(name))
            .cloned()
            .ok_or_else(|| Error::InvalidArgument(format!("no task named {name:?} is defined")))?;
        if !def.is_periodic() {
            return Err(Error::InvalidArgument(format!(
                "task {name:?} is not periodic (frequency 0)"
            )));
        }
        Ok(def)
    }

    /// Starts periodic task `name` now unless an instance already exists:
    /// running, delayed or queued. Returns whether it was enqueued. This is
    /// what a scheduler node does for each periodic task at boot.
    ///
    /// Of many nodes starting the task at about the same time, one does:
    /// the start takes a start lock ([`start_lock_key`], held for the
    /// task's frequency, at most [`START_LOCK_MAX_TTL`]) before it looks
    /// for instances. Without it, a node that found no instance could
    /// enqueue after another node's copy was claimed (its QueueLock
    /// released) and had run, and the task ran twice within moments.
    pub async fn start_recurrent_job(&self, name: &str) -> Result<bool> {
        let def = self.periodic(name)?;
        let key = start_lock_key(&def.name);
        let ttl = def.period().min(START_LOCK_MAX_TTL);
        let value = crate::time::now_ms().to_string();
        if !self.backend().acquire_lock(&key, &value, ttl).await? {
            return Ok(false);
        }
        let started = async {
            if is_running(self, &def).await? {
                return Ok(false);
            }
            self.enqueue(&def.queue, &def.name, periodic_args()).await
        }
        .await;
        if started.is_err() {
            // Nothing was started: let the next try (a retried boot) start it.
            self.backend().release_lock(&key, &value).await.ok();
        }
        started
    }

    /// Enqueues every periodic task that has no instance yet (see
    /// [`Queue::start_recurrent_job`]). Returns the names enqueued, sorted.
    pub async fn enqueue_all_recurrent_jobs(&self) -> Result<Vec<String>> {
        let mut started = Vec::new();
        let defs = self.tasks().map(|t| t.definitions()).unwrap_or_default();
        for def in defs.iter().filter(|d| d.is_periodic()) {
            if self.start_recurrent_job(&def.name).await? {
                started.push(def.name.clone());
            }
        }
        Ok(started)
    }

    /// Re-arms periodic task `name` (ActionHero's `enqueueRecurrentTask`):
    /// removes its queued and delayed instances, whatever their args, and
    /// schedules the next run `frequency` from now. Workers do this after
    /// each run.
    pub async fn enqueue_recurrent_job(&self, name: &str) -> Result<()> {
        let def = self.periodic(name)?;
        reenqueue_after_run(self, &def).await
    }

    /// Stops periodic task `name`: removes every queued and delayed
    /// instance (by class), its queue lock and its start lock, so it can be
    /// started again.
    /// Returns how many instances it removed. An instance running right now
    /// finishes and re-arms the task; call this again after it ends, or
    /// stop the workers first, to stop it for good.
    pub async fn stop_recurrent_job(&self, name: &str) -> Result<u64> {
        let def = self.periodic(name)?;
        let removed = remove_instances(self, &def).await?;
        let input = crate::plugins::LockKeyInput {
            class: &def.name,
            queue: &def.queue,
            args: &periodic_args(),
        };
        let options = def.options_for(QueueLock::NAME);
        let key = options
            .get("key")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| crate::plugins::default_key("lock", &input));
        self.backend().delete_lock(&key).await?;
        self.backend().delete_lock(&start_lock_key(&def.name)).await?;
        Ok(removed)
    }
}
