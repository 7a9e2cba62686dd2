//! resq-admin is resq's administration API: one typed, paged,
//! backend-neutral view and control of a resq (or Resque) installation,
//! built on [`resq_core::Backend`] and [`resq_core::Queue`] only. [`Admin`]
//! gives an [`Overview`] (queues with length and latency, delayed and failed
//! counts, busy and idle workers, the leader, the processed and failed
//! totals), the jobs of one queue page by page with removal by class and
//! arguments, the delayed schedule by time with "run now" and removal of
//! one item, the failed list with stable ids, filters and bulk retry or
//! removal done page by page, the workers with their current job and ping
//! age and their cleaning, the locks, pause/resume, and manual enqueue. The
//! `resq` CLI, the metrics exporter and the dashboard all use it, so none of
//! them talks to a backend directly.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> resq_core::Result<()> {
//! use resq_admin::{Admin, Page};
//! use std::sync::Arc;
//!
//! let admin = Admin::new(Arc::new(resq_memory::MemoryBackend::new()));
//! admin.enqueue("mail", "SendMail", serde_json::json!(["ada@example.com"])).await?;
//! let overview = admin.overview().await?;
//! assert_eq!(overview.queues[0].length, 1);
//! let detail = admin.queue("mail", Page::default()).await?;
//! assert_eq!(detail.jobs.items[0].class.as_deref(), Some("SendMail"));
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod failed;
mod types;

pub use types::{
    BulkOutcome, BulkProgress, DelayedJob, DelayedRef, FailedFilter, FailedItem, LockInfo, Overview, Page, Paged,
    QueueDetail, QueueSummary, QueuedJob, WorkerCounts, WorkerInfo, WorkingJob,
};

pub use failed::FAILED_PAGE;

/// How many lock reads [`Admin::locks`] has in flight at once.
const LOCK_READS: usize = 64;
pub use resq_core::failed::FailedId;
pub use resq_core::{CancelReport, Cleaned, JobId};

use resq_core::job::{promotion_target, Job};
use resq_core::time::now_ms;
use resq_core::{Backend, Error, Queue, QueueStat, Result, WorkerId};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// The administration API over one backend. Cheap to clone; every method is
/// a short sequence of backend calls, none holds a whole list in memory.
#[derive(Clone)]
pub struct Admin {
    backend: Arc<dyn Backend>,
    queue: Queue,
    /// Failed entries read at a time by filtered listings and bulk actions.
    page: u64,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("backend", &self.backend.kind())
            .field("page", &self.page)
            .finish()
    }
}

impl Admin {
    /// An admin over `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Admin {
        let queue = Queue::new(backend.clone());
        Admin {
            backend,
            queue,
            page: FAILED_PAGE,
        }
    }

    /// The backend it works on.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    // ---- overview ------------------------------------------------------

    /// Everything at a glance: queues with length, latency and pause state,
    /// the delayed and failed counts, busy and idle workers, the leader and
    /// the global counters. The queues are read with one batched
    /// [`resq_core::QueueStore::queue_stats`] call, whatever their number.
    pub async fn overview(&self) -> Result<Overview> {
        let queues = self.queues().await?;
        let delayed = self.backend.delayed_count().await?;
        let failed = self.backend.failed_count().await?;
        let ids = self.backend.workers().await?;
        let working = self.backend.working_on_many(&ids).await?;
        let busy = u64::try_from(working.iter().filter(|w| w.is_some()).count()).unwrap_or(u64::MAX);
        let total = u64::try_from(ids.len()).unwrap_or(u64::MAX);
        let leader = self.backend.leader().await?;
        let processed_total = self.backend.stat("processed").await?;
        let failed_total = self.backend.stat("failed").await?;
        Ok(Overview {
            queues,
            delayed,
            failed,
            workers: WorkerCounts {
                busy,
                idle: total.saturating_sub(busy),
            },
            leader,
            processed_total,
            failed_total,
        })
    }

    /// Every known queue with its length, latency and pause state, sorted by
    /// name (one batched read for all queues).
    pub async fn queues(&self) -> Result<Vec<QueueSummary>> {
        let names = self.backend.queues().await?;
        let paused: HashSet<String> = self.backend.paused_queues().await?.into_iter().collect();
        let stats = self.backend.queue_stats(&names).await?;
        let now = now_ms();
        Ok(stats.into_iter().map(|s| summary(s, &paused, now)).collect())
    }

    // ---- queue detail --------------------------------------------------

    /// Queue `name`'s summary and one page of its jobs, head first. An
    /// unknown queue is an empty one.
    pub async fn queue(&self, name: &str, page: Page) -> Result<QueueDetail> {
        check_name("queue", name)?;
        let stats = self.backend.queue_stats(&[name.to_owned()]).await?;
        let paused: HashSet<String> = self.backend.paused_queues().await?.into_iter().collect();
        let stat = stats.into_iter().next().unwrap_or(QueueStat {
            queue: name.to_owned(),
            length: 0,
            oldest_enqueued_ms: None,
        });
        let summary = summary(stat, &paused, now_ms());
        let items = if page.limit == 0 {
            Vec::new()
        } else {
            let (start, stop) = window(page)?;
            self.backend.queue_range(name, start, stop).await?
        };
        let jobs = items
            .into_iter()
            .enumerate()
            .map(|(i, payload)| queued_job(name, page.offset + i as u64, payload))
            .collect();
        Ok(QueueDetail {
            jobs: Paged {
                items: jobs,
                offset: page.offset,
                total: summary.length,
            },
            summary,
        })
    }

    /// Removes jobs of `class` from `queue` and returns how many: with
    /// `args` (the arguments array), only the jobs with exactly those
    /// arguments (node-resque's and Ruby's encodings); with `None`, every
    /// job of the class whatever its arguments, done where the jobs are
    /// ([`resq_core::QueueStore::remove_by_class`]).
    pub async fn delete_jobs(&self, queue: &str, class: &str, args: Option<&serde_json::Value>) -> Result<u64> {
        check_name("queue", queue)?;
        check_name("class", class)?;
        match args {
            None => self.backend.remove_by_class(queue, class).await,
            Some(args) => self.queue.del(queue, class, args, 0).await,
        }
    }

    // ---- delayed -------------------------------------------------------

    /// One page of the delayed schedule, oldest bucket first and in
    /// insertion order within a bucket. Only the buckets that the page
    /// overlaps are read; `total` counts every item.
    pub async fn delayed(&self, page: Page) -> Result<Paged<DelayedJob>> {
        let sizes = self.backend.delayed_bucket_sizes().await?;
        let total: u64 = sizes.iter().map(|(_, n)| *n).sum();
        let mut items = Vec::new();
        let mut position = 0u64;
        let end = page.offset.saturating_add(page.limit);
        for (ts, n) in sizes {
            if position >= end {
                break;
            }
            let next = position.saturating_add(n);
            if next > page.offset {
                for (i, raw) in self.backend.delayed_at(ts).await?.into_iter().enumerate() {
                    let at = position + i as u64;
                    if at >= page.offset && at < end {
                        items.push(delayed_job(ts, raw));
                    }
                }
            }
            position = next;
        }
        Ok(Paged {
            items,
            offset: page.offset,
            total,
        })
    }

    /// Moves the delayed item `job` names to the tail of its queue now, in
    /// one atomic step ([`resq_core::DelayedStore::promote_delayed`]);
    /// [`Error::StaleDelayedEntry`] when it is no longer in that bucket. An
    /// item that names no queue cannot be run: [`Error::Decode`].
    pub async fn run_delayed_now(&self, job: &DelayedRef) -> Result<()> {
        let queue = promotion_target(&job.payload).map_err(|reason| Error::Decode {
            what: "delayed item",
            reason,
        })?;
        let ts = job.timestamp_ms.div_euclid(1000);
        if self.backend.promote_delayed(ts, &job.payload, &queue).await? {
            Ok(())
        } else {
            Err(Error::StaleDelayedEntry {
                timestamp_ms: job.timestamp_ms,
            })
        }
    }

    /// Removes the delayed item `job` names from its bucket only (an
    /// identical item in another bucket stays);
    /// [`Error::StaleDelayedEntry`] when it is no longer there.
    pub async fn delete_delayed(&self, job: &DelayedRef) -> Result<()> {
        let ts = job.timestamp_ms.div_euclid(1000);
        if self.backend.remove_delayed_at(ts, &job.payload).await? {
            Ok(())
        } else {
            Err(Error::StaleDelayedEntry {
                timestamp_ms: job.timestamp_ms,
            })
        }
    }

    // ---- cancelling ----------------------------------------------------

    /// Cancels the job `id` names (from a listing: [`WorkingJob::id`],
    /// [`QueuedJob::id`], [`DelayedJob::id`]): a running job is stopped
    /// through the backend's cancel mark and wake-up channel wherever its
    /// worker runs, a queued or delayed one is removed; see
    /// [`Queue::cancel`]. [`Error::StaleJob`] when the job is no longer
    /// there.
    pub async fn cancel(&self, id: &JobId) -> Result<CancelReport> {
        self.queue.cancel(id).await
    }

    /// A receiver of this admin's queue events: a
    /// [`resq_core::QueueEvent::Cancelled`] for each queued or delayed job
    /// that [`Admin::cancel`] or [`Admin::cancel_jobs`] removes.
    pub fn subscribe(&self) -> resq_core::QueueEvents {
        self.queue.subscribe()
    }

    /// The payload of the job `id` names, if it is still there (what a
    /// dry run of [`Admin::cancel`] shows).
    pub async fn find_job(&self, id: &JobId) -> Result<Option<String>> {
        self.queue.find_job(id).await
    }

    /// Cancels every running, queued and delayed job of `class`, with
    /// exactly `args` (a JSON array) when given; see [`Queue::cancel_jobs`].
    pub async fn cancel_jobs(&self, class: &str, args: Option<&serde_json::Value>) -> Result<CancelReport> {
        check_name("class", class)?;
        let args = args_array(args)?;
        self.queue.cancel_jobs(class, args).await
    }

    /// The ids of the jobs [`Admin::cancel_jobs`] would cancel now (a dry
    /// run; it reads every queue a page at a time).
    pub async fn find_jobs(&self, class: &str, args: Option<&serde_json::Value>) -> Result<Vec<JobId>> {
        check_name("class", class)?;
        let args = args_array(args)?;
        self.queue.find_jobs(class, args).await
    }

    // ---- workers -------------------------------------------------------

    /// Every registered worker with its start time, ping age and current
    /// job, sorted by name (three batched reads).
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let ids = self.backend.workers().await?;
        self.worker_infos(ids).await
    }

    /// The workers whose last ping is older than `stale_for`: exactly those
    /// [`Admin::clean_stale_workers`] would clean now (a dry run: nothing is
    /// removed; on Redis, a registered worker without any ping key gets
    /// the liveness probe that every stale-worker check gives it, see
    /// [`resq_core::WorkerRegistry::stale_workers`]).
    pub async fn stale_workers(&self, stale_for: Duration) -> Result<Vec<WorkerInfo>> {
        let ids = self.backend.stale_workers(cutoff(stale_for)).await?;
        self.worker_infos(ids).await
    }

    /// Removes worker `name` now, whatever its state; its job, if it had
    /// one, goes to the failed list (`Worker Timeout (killed manually)`).
    /// `None` when nothing of that worker was found.
    pub async fn clean_worker(&self, name: &str) -> Result<Option<Cleaned>> {
        check_name("worker", name)?;
        self.queue.force_clean_worker(name).await
    }

    /// Removes every worker whose last ping is older than `stale_for`, busy
    /// or idle; each job in hand goes to the failed list. Fresh workers are
    /// left alone.
    pub async fn clean_stale_workers(&self, stale_for: Duration) -> Result<Vec<Cleaned>> {
        Ok(self.queue.clean_old_workers(stale_for).await?.into_values().collect())
    }

    async fn worker_infos(&self, mut ids: Vec<WorkerId>) -> Result<Vec<WorkerInfo>> {
        ids.sort();
        let working = self.backend.working_on_many(&ids).await?;
        let times = self.backend.worker_times(&ids).await?;
        let now = now_ms();
        Ok(ids
            .into_iter()
            .zip(working)
            .enumerate()
            .map(|(i, (id, wo))| {
                let t = times.get(i).copied().unwrap_or_default();
                let job = wo.map(|w| WorkingJob {
                    id: JobId::running(&id.name, &w.payload),
                    class: Job::decode(&w.payload).ok().map(|j| j.class),
                    queue: w.queue,
                    run_at: w.run_at,
                    payload: w.payload,
                });
                WorkerInfo {
                    name: id.name,
                    queues: id.queues,
                    started_at_ms: t.started_ms,
                    ping_age_seconds: t.ping_ms.map(|p| age_seconds(p, now)),
                    busy: job.is_some(),
                    job,
                }
            })
            .collect())
    }

    // ---- locks ---------------------------------------------------------

    /// Every live lock with its value and remaining time to live, sorted by
    /// key: what [`resq_core::LockStore::locks`] lists (on Redis, Resque's
    /// `lock:` and `workerslock:` keys; the scheduler's leader lock is not
    /// listed, see [`Overview::leader`]). One read per lock for its time to
    /// live, up to 64 in flight at once; a lock that expires meanwhile is
    /// left out.
    pub async fn locks(&self) -> Result<Vec<LockInfo>> {
        let keys: Vec<String> = self.backend.locks().await?.into_iter().map(|(key, _)| key).collect();
        let mut out = Vec::with_capacity(keys.len());
        // The value and TTL reads go out together, a chunk at a time (one
        // pipelined burst on Redis, parallel pooled queries on PostgreSQL).
        for chunk in keys.chunks(LOCK_READS) {
            let entries =
                futures_util::future::try_join_all(chunk.iter().map(|key| self.backend.get_lock(key))).await?;
            for (key, entry) in chunk.iter().zip(entries) {
                // A lock released since it was listed is left out.
                if let Some(entry) = entry {
                    out.push(LockInfo {
                        key: key.clone(),
                        value: entry.value,
                        ttl_ms: entry.ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Deletes lock `key`, whoever holds it. Returns whether it existed.
    pub async fn delete_lock(&self, key: &str) -> Result<bool> {
        check_name("lock key", key)?;
        Ok(self.backend.delete_lock(key).await? > 0)
    }

    // ---- pause ---------------------------------------------------------

    /// Pauses `queue`, cluster-wide. Returns whether it was newly paused.
    pub async fn pause(&self, queue: &str) -> Result<bool> {
        self.queue.pause_queue(queue).await
    }

    /// Resumes `queue`. Returns whether it was paused.
    pub async fn resume(&self, queue: &str) -> Result<bool> {
        self.queue.resume_queue(queue).await
    }

    // ---- enqueue -------------------------------------------------------

    /// Enqueues a job of `class` on `queue` with `args`, which must be the
    /// JSON arguments array ([`Error::InvalidArgument`] otherwise), in
    /// node-resque's format, as [`Queue::enqueue`] does.
    pub async fn enqueue(&self, queue: &str, class: &str, args: serde_json::Value) -> Result<()> {
        if !args.is_array() {
            return Err(Error::InvalidArgument(format!(
                "job arguments must be a JSON array, not {}",
                json_kind(&args)
            )));
        }
        self.queue.enqueue(queue, class, args).await?;
        Ok(())
    }
}

/// A queue's summary from its stat: latency is the head job's age.
fn summary(stat: QueueStat, paused: &HashSet<String>, now: i64) -> QueueSummary {
    let latency_seconds = if stat.length == 0 {
        Some(0.0)
    } else {
        stat.oldest_enqueued_ms.map(|at| age_seconds(at, now))
    };
    QueueSummary {
        paused: paused.contains(&stat.queue),
        name: stat.queue,
        length: stat.length,
        latency_seconds,
    }
}

/// Seconds from `at` to `now` (epoch ms), never negative (clocks of
/// different hosts may disagree a little).
fn age_seconds(at: i64, now: i64) -> f64 {
    // i64 ms to f64 is exact below 2^53 ms (285,000 years).
    (now.saturating_sub(at).max(0) as f64) / 1000.0
}

/// The cutoff (epoch ms) for "no ping for `stale_for`".
fn cutoff(stale_for: Duration) -> i64 {
    now_ms().saturating_sub(i64::try_from(stale_for.as_millis()).unwrap_or(i64::MAX))
}

/// The `LRANGE` bounds of a non-empty page.
fn window(page: Page) -> Result<(i64, i64)> {
    let start = i64::try_from(page.offset).map_err(|_| Error::InvalidArgument("page offset is too large".into()))?;
    let stop = start.saturating_add(i64::try_from(page.limit).unwrap_or(i64::MAX).saturating_sub(1));
    Ok((start, stop))
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidArgument(format!("the {what} name is empty")));
    }
    Ok(())
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// `args` as the arguments array a cancel matches; anything but an array
/// is refused.
fn args_array(args: Option<&serde_json::Value>) -> Result<Option<&[serde_json::Value]>> {
    match args {
        None => Ok(None),
        Some(serde_json::Value::Array(a)) => Ok(Some(a.as_slice())),
        Some(other) => Err(Error::InvalidArgument(format!(
            "args must be a JSON array, not {other}"
        ))),
    }
}

fn queued_job(queue: &str, position: u64, payload: String) -> QueuedJob {
    let id = JobId::queued(queue, &payload);
    match Job::decode(&payload) {
        Ok(job) => QueuedJob {
            position,
            id,
            class: Some(job.class),
            args: Some(serde_json::Value::Array(job.args)),
            payload,
            error: None,
        },
        Err(e) => QueuedJob {
            position,
            id,
            class: None,
            args: None,
            payload,
            error: Some(e.to_string()),
        },
    }
}

fn delayed_job(ts: i64, payload: String) -> DelayedJob {
    let job = Job::decode(&payload).ok();
    DelayedJob {
        id: JobId::delayed(ts.saturating_mul(1000), &payload),
        timestamp_ms: ts.saturating_mul(1000),
        queue: job.as_ref().and_then(|j| j.queue.clone()).filter(|q| !q.is_empty()),
        class: job.as_ref().map(|j| j.class.clone()),
        args: job.map(|j| serde_json::Value::Array(j.args)),
        payload,
    }
}
