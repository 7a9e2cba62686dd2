//! The storage contract: one [`Backend`] trait, grouped by concern.
//!
//! Every backend (memory, Redis, Postgres) implements the same nine traits
//! with the same semantics, and `resq-conformance` checks that they do.
//! Payloads cross this boundary as raw strings and are stored byte for byte.
//! Each method is one atomic step unless its documentation says otherwise:
//! a concurrent caller sees the state before or after it, never between.

use crate::error::Result;
use crate::failed::{FailedJob, Failure};
use crate::flow::{QueueLimits, TaskAdmission, TaskLimits};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A worker's identity in the registry: its unique name and the queues it
/// works, as Resque stores them (`workers` member `<name>:<queues>`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkerId {
    /// Unique name, `host:pid+n` by default. Never contains the queues.
    pub name: String,
    /// The queues, comma-joined as configured (`*` for a wildcard worker).
    pub queues: String,
}

impl WorkerId {
    /// A worker id from a name and its queue list.
    pub fn new(name: impl Into<String>, queues: &[String]) -> Self {
        WorkerId {
            name: name.into(),
            queues: queues.join(","),
        }
    }

    /// The `workers` set member: `<name>:<queues>`.
    pub fn member(&self) -> String {
        format!("{}:{}", self.name, self.queues)
    }

    /// Parses a `workers` member with node-resque's rule: two parts are
    /// `name:queues`; three or more are `host:pid:queues…`. Returns `None`
    /// for a member without a `:`.
    pub fn parse(member: &str) -> Option<WorkerId> {
        let parts: Vec<&str> = member.split(':').collect();
        match parts.len() {
            0 | 1 => None,
            2 => Some(WorkerId {
                name: parts[0].to_owned(),
                queues: parts[1].to_owned(),
            }),
            _ => Some(WorkerId {
                name: format!("{}:{}", parts[0], parts[1]),
                queues: parts[2..].join(":"),
            }),
        }
    }

    /// The queues as a list.
    pub fn queue_list(&self) -> Vec<String> {
        self.queues
            .split(',')
            .filter(|q| !q.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl std::fmt::Display for WorkerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, self.queues)
    }
}

/// What a worker is doing right now: its working-on record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkingOn {
    /// The worker's name (Ruby workers do not record it: then empty).
    pub worker: String,
    /// The queue the job was claimed from.
    pub queue: String,
    /// When the job started, as the writer formatted it.
    pub run_at: String,
    /// The job's payload bytes, exactly as they were queued.
    pub payload: String,
}

/// A job taken off a queue by [`QueueStore::claim`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    /// The queue it came from.
    pub queue: String,
    /// Its payload bytes.
    pub payload: String,
    /// When it was enqueued (epoch ms), when the backend knows it: always on
    /// memory and PostgreSQL, and on Redis for jobs that resq pushed (its
    /// side record); `None` for a job another Resque client pushed. Lets a
    /// worker report how long the job waited in its queue.
    pub enqueued_at_ms: Option<i64>,
}

impl Claimed {
    /// A claimed job whose enqueue time is unknown.
    pub fn new(queue: impl Into<String>, payload: impl Into<String>) -> Self {
        Claimed {
            queue: queue.into(),
            payload: payload.into(),
            enqueued_at_ms: None,
        }
    }
}

/// A worker's start time and last ping, from [`WorkerRegistry::worker_times`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerTimes {
    /// When it registered, epoch ms.
    pub started_ms: Option<i64>,
    /// When it last pinged, epoch ms.
    pub ping_ms: Option<i64>,
}

/// A queue's length and the enqueue time of its head (oldest) job, from
/// [`QueueStore::queue_stats`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStat {
    /// The queue's name.
    pub queue: String,
    /// How many jobs it holds.
    pub length: u64,
    /// When its head job was enqueued (epoch ms); `None` when the queue is
    /// empty or the backend has no record of that job (on Redis, a job
    /// that another Resque client pushed).
    pub oldest_enqueued_ms: Option<i64>,
}

/// One job to push, for [`QueueStore::push_batch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedJob {
    /// Destination queue.
    pub queue: String,
    /// Payload bytes.
    pub payload: String,
}

/// How a claimed job ended, for [`QueueStore::complete`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It ran: count `processed` (global and for the worker).
    Success,
    /// It failed: count `failed` (global and for the worker) and append
    /// `entry` (a failed entry's JSON) to the failed list.
    Failure {
        /// The failed entry's JSON text.
        entry: String,
    },
    /// A plugin chose not to run it: no counters, no failed entry.
    Discard,
}

/// What to do with the job of a worker that is removed while it still has
/// a working-on record (a dead worker, or a shutdown past its deadline).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Orphan {
    /// Put the payload back at the head of its queue, to run next.
    Requeue,
    /// Append a failed entry built from the working-on record and this
    /// failure, and count it in `failed`.
    Fail {
        /// The failure to record.
        failure: Failure,
        /// The `failed_at` time, epoch ms.
        at_ms: i64,
    },
}

/// The result of cleaning a worker out of the registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cleaned {
    /// The worker that was removed.
    pub worker: WorkerId,
    /// The job it was working on, if any, which [`Orphan`] then handled.
    pub working_on: Option<WorkingOn>,
    /// The failed entry written, with [`Orphan::Fail`] and a working-on
    /// record: the same [`FailedJob`] that [`crate::Queue::failed`] lists,
    /// with the stored bytes in [`FailedJob::raw`] (what
    /// [`crate::Queue::remove_failed`] and
    /// [`crate::Queue::retry_and_remove_failed`] match by). Boxed, so that
    /// events carrying a `Cleaned` stay small.
    pub failed_entry: Option<Box<FailedJob>>,
}

/// What promotion did with one delayed item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Promotion {
    /// Moved to the tail of `queue`.
    Moved {
        /// The bucket it came from (Unix secs).
        timestamp: i64,
        /// Its destination queue, read from the item.
        queue: String,
        /// The item's bytes, pushed unchanged.
        payload: String,
    },
    /// The item could not be decoded or names no queue: it went to the
    /// failed list with the reason, so it is not lost.
    Failed {
        /// The bucket it came from (Unix secs).
        timestamp: i64,
        /// The item's bytes.
        payload: String,
        /// Why it could not be promoted.
        reason: String,
    },
}

/// How many payloads the default by-class removals and paged scans hold at
/// a time.
pub const REMOVAL_PAGE: usize = 500;

/// Whether a payload could name `class` at all: it holds `class` literally,
/// or holds an escape that could spell it. A cheap filter before decoding.
pub fn may_be_of_class(raw: &str, class: &str) -> bool {
    !class.is_empty() && (raw.contains(class) || raw.contains('\\'))
}

/// The rule [`QueueStore::remove_by_class`] matches payloads by: the
/// payload decodes ([`crate::Job::decode`]) and its `class` is `class`.
pub fn job_is_of_class(raw: &str, class: &str) -> bool {
    may_be_of_class(raw, class) && crate::job::Job::decode(raw).is_ok_and(|j| j.class == class)
}

/// The rule [`DelayedStore::remove_delayed_by_class`] matches items by: the
/// item decodes, its `class` is `class`, and its `queue` is `queue` or
/// absent (blank or not a string counts as absent).
pub fn delayed_is_of_class(raw: &str, queue: &str, class: &str) -> bool {
    may_be_of_class(raw, class)
        && crate::job::Job::decode(raw).is_ok_and(|j| j.class == class && j.queue_or(queue) == queue)
}

/// The default [`QueueStore::remove_by_class`], usable by any store: pages
/// through `queue` with [`QueueStore::queue_range`] from the tail,
/// [`REMOVAL_PAGE`] payloads at a time, and removes the matches by their
/// exact bytes ([`QueueStore::remove_from_queue`]).
pub async fn remove_by_class_paged<S: QueueStore + ?Sized>(store: &S, queue: &str, class: &str) -> Result<u64> {
    let page = i64::try_from(REMOVAL_PAGE).unwrap_or(i64::MAX);
    // Walk from the tail: pushes to the tail and claims from the head
    // then move no unvisited job past the window.
    let mut visited: i64 = 0;
    let mut removed = 0u64;
    loop {
        let items = store.queue_range(queue, -(visited + page), -(visited + 1)).await?;
        if items.is_empty() {
            return Ok(removed);
        }
        let mut gone = 0u64;
        let mut seen = std::collections::HashSet::new();
        for raw in &items {
            if job_is_of_class(raw, class) && seen.insert(raw.as_str()) {
                gone += store.remove_from_queue(queue, raw, 0).await?;
            }
        }
        removed += gone;
        let n = i64::try_from(items.len()).unwrap_or(i64::MAX);
        if n < page {
            return Ok(removed);
        }
        // Everything removed sat in or before (headwards of) this window;
        // counting it all may revisit a few jobs but never skips one.
        visited = visited
            .saturating_add(n)
            .saturating_sub(i64::try_from(gone).unwrap_or(i64::MAX))
            .max(0);
    }
}

/// The default [`DelayedStore::remove_delayed_by_class`], usable by any
/// store: reads one bucket at a time and removes the matches by their exact
/// bytes ([`DelayedStore::remove_delayed`]).
pub async fn remove_delayed_by_class_per_bucket<S: DelayedStore + ?Sized>(
    store: &S,
    queue: &str,
    class: &str,
) -> Result<u64> {
    let mut removed = 0u64;
    for ts in store.delayed_timestamps().await? {
        let mut seen = std::collections::HashSet::new();
        for raw in store.delayed_at(ts).await? {
            if delayed_is_of_class(&raw, queue, class) && seen.insert(raw.clone()) {
                let buckets = store.remove_delayed(&raw).await?;
                removed += u64::try_from(buckets.len()).unwrap_or(u64::MAX);
            }
        }
    }
    Ok(removed)
}

/// Named queues of job payloads (Resque's `queue:<q>` lists and `queues` set).
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Appends a payload to the tail of `queue` and records the queue name.
    async fn push(&self, queue: &str, payload: &str) -> Result<()>;

    /// Pushes like [`QueueStore::push`] only if the lock `key` is free, and
    /// takes it (with `value` and `ttl`, as [`LockStore::acquire_lock`]) in
    /// the same atomic step. Returns whether the job was pushed. This is the
    /// "enqueue exactly once per key" primitive behind cron fires.
    async fn push_once(&self, queue: &str, payload: &str, key: &str, value: &str, ttl: Duration) -> Result<bool>;

    /// Appends many payloads, each to the tail of its queue, in order.
    async fn push_batch(&self, jobs: &[QueuedJob]) -> Result<()>;

    /// Pops the head of the first non-empty queue in `queues` (priority order)
    /// and records it as `worker`'s working-on entry, in one atomic step: a
    /// popped job is always recorded, so it can never be lost.
    async fn claim(&self, worker: &WorkerId, queues: &[String], run_at: &str) -> Result<Option<Claimed>>;

    /// Finishes `worker`'s current job: removes its working-on record and
    /// applies `outcome` (counters, failed entry), atomically.
    async fn complete(&self, worker: &WorkerId, outcome: Outcome) -> Result<()>;

    /// Claims up to one job for each of `workers` (idle worker slots), in
    /// one round trip where the backend can: jobs are taken in queue
    /// priority order and FIFO within a queue, and each is recorded as its
    /// worker's working-on entry atomically with its pop. Returns
    /// `(index into workers, job)` pairs, for a prefix of `workers`. The
    /// default claims one at a time.
    async fn claim_batch(
        &self,
        workers: &[WorkerId],
        queues: &[String],
        run_at: &str,
    ) -> Result<Vec<(usize, Claimed)>> {
        let mut out = Vec::new();
        for (i, w) in workers.iter().enumerate() {
            match self.claim(w, queues, run_at).await? {
                Some(c) => out.push((i, c)),
                None => break,
            }
        }
        Ok(out)
    }

    /// Applies many [`QueueStore::complete`] calls, in one round trip where
    /// the backend can. Each completion is atomic on its own. The default
    /// completes one at a time.
    async fn complete_batch(&self, done: &[(WorkerId, Outcome)]) -> Result<()> {
        for (w, outcome) in done {
            self.complete(w, outcome.clone()).await?;
        }
        Ok(())
    }

    /// One round of a multi-slot worker: [`QueueStore::complete_batch`] of
    /// `done`, then [`QueueStore::claim_batch`] for `workers` (which may
    /// include the slots of `done`), in one round trip and one transaction
    /// where the backend can. The outcome is exactly that of the two calls
    /// in that order.
    ///
    /// The outer `Err` means the completions were not recorded as far as
    /// the backend can tell, and nothing was claimed; `Ok(Err(_))` means
    /// they were recorded but the claim failed. As with every call, an
    /// error can also hide a call that was applied with its reply lost (a
    /// connection that dropped after the commit): the worker therefore
    /// reads its slots' working-on records before completing or claiming
    /// again. The default makes the two calls.
    async fn complete_and_claim_batch(
        &self,
        done: &[(WorkerId, Outcome)],
        workers: &[WorkerId],
        queues: &[String],
        run_at: &str,
    ) -> Result<Result<Vec<(usize, Claimed)>>> {
        self.complete_batch(done).await?;
        Ok(self.claim_batch(workers, queues, run_at).await)
    }

    /// Waits until a job may be available in one of `queues` (`*` means any
    /// queue, even one that does not exist yet), or `timeout`.
    /// It may return early or spuriously; callers claim afterwards. The
    /// default sleeps for `timeout`.
    async fn wait_for_jobs(&self, queues: &[String], timeout: Duration) -> Result<()> {
        let _ = queues;
        tokio::time::sleep(timeout).await;
        Ok(())
    }

    /// The number of jobs in `queue`.
    async fn queue_len(&self, queue: &str) -> Result<u64>;

    /// Payloads from `start` to `stop` inclusive; negative indexes count from
    /// the tail (`-1` is the last), as Redis `LRANGE`.
    async fn queue_range(&self, queue: &str, start: i64, stop: i64) -> Result<Vec<String>>;

    /// Removes payloads equal to `payload` byte for byte, as Redis `LREM`:
    /// `count` 0 removes all, > 0 that many from the head, < 0 from the tail.
    /// Returns how many were removed.
    async fn remove_from_queue(&self, queue: &str, payload: &str, count: i64) -> Result<u64>;

    /// Deletes a queue and its jobs. Returns whether it held any jobs.
    async fn delete_queue(&self, queue: &str) -> Result<bool>;

    /// Pushes a payload to the **head** of `queue` (`LPUSH`), so that it is
    /// claimed before every job already queued, records the queue name and
    /// wakes idle workers, as [`QueueStore::push`] does for the tail.
    async fn push_front(&self, queue: &str, payload: &str) -> Result<()>;

    /// Removes every job of `class` from `queue`, whatever its arguments or
    /// encoding (node-resque's, Ruby's without `queue`), and returns how many
    /// it removed. A payload that does not decode ([`job_is_of_class`]) is
    /// left alone. Backends do it where the data is, holding at most a page
    /// of payloads at a time; the scan is not one atomic step, but a job
    /// pushed or claimed meanwhile never makes it miss a job of `class` that
    /// stays queued throughout. The default pages with
    /// [`QueueStore::queue_range`] from the tail, [`REMOVAL_PAGE`] payloads at
    /// a time, and removes by exact bytes.
    async fn remove_by_class(&self, queue: &str, class: &str) -> Result<u64> {
        remove_by_class_paged(self, queue, class).await
    }

    /// All known queue names, sorted.
    async fn queues(&self) -> Result<Vec<String>>;

    /// Marks `queue` paused, cluster-wide: workers stop claiming from it
    /// and its jobs stay where they are. Pausing a queue that is already
    /// paused, empty or unknown is fine. Returns whether it was newly paused.
    async fn pause_queue(&self, queue: &str) -> Result<bool>;

    /// Clears `queue`'s pause mark. Returns whether it was paused.
    async fn resume_queue(&self, queue: &str) -> Result<bool>;

    /// The paused queues' names, sorted.
    async fn paused_queues(&self) -> Result<Vec<String>>;

    /// Sets `queue`'s flow-control limits, cluster-wide (see
    /// [`crate::flow`]); [`QueueLimits::is_unlimited`] limits remove them.
    /// Every later claim honours them atomically: a queue at its rate limit
    /// or its concurrency cap is skipped as a paused one is. Limits that
    /// fail [`QueueLimits::check`] are refused with
    /// [`crate::Error::InvalidArgument`]. Changing a rate limit keeps the
    /// starts already counted in the window. A concurrency cap counts the
    /// jobs claimed while it is set (jobs claimed before may not count:
    /// Redis and PostgreSQL give slots only at claims, memory counts every
    /// running job of the queue); lowering a cap lets the jobs above it
    /// finish. No default: the limits live in the store.
    async fn set_queue_limits(&self, queue: &str, limits: QueueLimits) -> Result<()>;

    /// Every queue with limits, sorted by name.
    async fn queue_limits(&self) -> Result<Vec<(String, QueueLimits)>>;

    /// The length of each of `queues` and the enqueue time of its head job,
    /// one entry per queue in the order given, in one round trip where the
    /// backend can (an overview of a thousand queues must not cost a
    /// thousand round trips). The default calls [`QueueStore::queue_len`]
    /// per queue and knows no enqueue times.
    async fn queue_stats(&self, queues: &[String]) -> Result<Vec<QueueStat>> {
        let mut out = Vec::with_capacity(queues.len());
        for q in queues {
            out.push(QueueStat {
                queue: q.clone(),
                length: self.queue_len(q).await?,
                oldest_enqueued_ms: None,
            });
        }
        Ok(out)
    }
}

/// The delayed schedule: buckets of payloads keyed by Unix second, and on
/// stores with millisecond precision each item's own due time (see
/// [`DelayedStore::schedule_ms`]).
#[async_trait]
pub trait DelayedStore: Send + Sync {
    /// Adds `payload` to bucket `timestamp` (Unix secs) unless the identical
    /// payload is already in that bucket; check and write are one atomic step.
    /// Returns false (and writes nothing) for a duplicate.
    async fn schedule(&self, timestamp: i64, payload: &str) -> Result<bool>;

    /// Up to `limit` non-empty buckets with `timestamp <= up_to`, ascending.
    async fn due_timestamps(&self, up_to: i64, limit: usize) -> Result<Vec<i64>>;

    /// Every non-empty bucket, ascending.
    async fn delayed_timestamps(&self) -> Result<Vec<i64>>;

    /// The payloads in bucket `timestamp`, in insertion order.
    async fn delayed_at(&self, timestamp: i64) -> Result<Vec<String>>;

    /// The buckets that hold `payload` (matched byte for byte), ascending.
    async fn timestamps_of(&self, payload: &str) -> Result<Vec<i64>>;

    /// Removes every copy of `payload` from every bucket. Returns the buckets
    /// it was removed from, ascending.
    async fn remove_delayed(&self, payload: &str) -> Result<Vec<i64>>;

    /// Removes every delayed item of `class` bound for `queue` (an item
    /// without a `queue`, as Ruby writes them, counts as bound for `queue`),
    /// whatever its arguments, from every bucket, and returns how many items
    /// it removed. Items that do not decode are left alone (see
    /// [`delayed_is_of_class`]). Backends do it where the data is, holding a
    /// bounded number of items at a time; each bucket is cleaned atomically.
    /// The default reads the buckets one at a time.
    async fn remove_delayed_by_class(&self, queue: &str, class: &str) -> Result<u64> {
        remove_delayed_by_class_per_bucket(self, queue, class).await
    }

    /// Moves up to `limit` items from buckets `<= up_to` (oldest first) onto
    /// their queues. Each item moves atomically: it is in its bucket or on its
    /// queue (or, when it cannot be decoded, on the failed list), never lost
    /// and never both.
    async fn promote_due(&self, up_to: i64, limit: usize) -> Result<Vec<Promotion>>;

    /// Moves one copy of `payload` from bucket `timestamp` to the tail of
    /// `queue` (and wakes its workers), atomically: "run it now". The
    /// bucket leaves the schedule when it empties. Returns false, changing
    /// nothing, when that bucket does not hold `payload`. Copies in other
    /// buckets are untouched. No default: no combination of the other
    /// methods is atomic.
    async fn promote_delayed(&self, timestamp: i64, payload: &str, queue: &str) -> Result<bool>;

    /// Removes one copy of `payload` from bucket `timestamp` only, as one
    /// atomic step; the bucket leaves the schedule when it empties. Returns
    /// whether it was there. Copies in other buckets are untouched. No
    /// default, as for [`DelayedStore::promote_delayed`].
    async fn remove_delayed_at(&self, timestamp: i64, payload: &str) -> Result<bool>;

    /// Every non-empty bucket with its number of items, ascending by
    /// timestamp, in one round trip where the backend can: what paging the
    /// schedule by time needs without reading the items.
    async fn delayed_bucket_sizes(&self) -> Result<Vec<(i64, u64)>> {
        let mut out = Vec::new();
        for ts in self.delayed_timestamps().await? {
            let n = self.delayed_at(ts).await?.len();
            if n > 0 {
                out.push((ts, u64::try_from(n).unwrap_or(u64::MAX)));
            }
        }
        Ok(out)
    }

    /// The number of delayed items in all buckets. The default sums
    /// [`DelayedStore::delayed_bucket_sizes`].
    async fn delayed_count(&self) -> Result<u64> {
        Ok(self.delayed_bucket_sizes().await?.iter().map(|(_, n)| *n).sum())
    }

    /// How late, at most, the store itself lets an item become due after
    /// the time it was scheduled for with [`DelayedStore::schedule_ms`]
    /// (the scheduler's own wake-up latency comes on top): [`BUCKET_PRECISION`]
    /// (one second) for a store that keeps only Resque's second buckets,
    /// [`MILLISECOND_PRECISION`] for one that keeps each item's due time in
    /// milliseconds. Never early either way. The default, one second, is
    /// right for every store that uses the other defaults of this trait.
    fn delayed_precision(&self) -> Duration {
        BUCKET_PRECISION
    }

    /// Schedules `payload` to become due at `due_ms` (Unix ms): it joins
    /// bucket [`delayed_bucket_of_ms`](crate::time::delayed_bucket_of_ms)`(due_ms)`
    /// under [`DelayedStore::schedule`]'s rule (refused, returning false,
    /// when the identical payload is already in that bucket), and every
    /// second-bucket operation sees it there. A store with millisecond
    /// precision also keeps `due_ms`, and [`DelayedStore::promote_due_ms`]
    /// moves it from that instant; items scheduled with
    /// [`DelayedStore::schedule`] are due when their bucket is
    /// ([`bucket_due_ms`](crate::time::bucket_due_ms)). The default files
    /// the item in its bucket only, which is all a bucket store keeps.
    async fn schedule_ms(&self, due_ms: i64, payload: &str) -> Result<bool> {
        self.schedule(crate::time::delayed_bucket_of_ms(due_ms), payload).await
    }

    /// Moves up to `limit` items that are due at `now_ms` (Unix ms) onto
    /// their queues, earliest due first, each atomically as
    /// [`DelayedStore::promote_due`] does. Never moves an item before the
    /// time it was scheduled for. The default promotes the buckets due at
    /// `now_ms` ([`last_due_bucket`](crate::time::last_due_bucket)), which
    /// is right for a bucket store.
    async fn promote_due_ms(&self, now_ms: i64, limit: usize) -> Result<Vec<Promotion>> {
        self.promote_due(crate::time::last_due_bucket(now_ms), limit).await
    }

    /// When the earliest item falls due (Unix ms) as
    /// [`DelayedStore::promote_due_ms`] sees it, or `None` for an empty
    /// schedule. The default is the earliest bucket's due time
    /// ([`bucket_due_ms`](crate::time::bucket_due_ms)).
    async fn next_due_ms(&self) -> Result<Option<i64>> {
        Ok(self
            .due_timestamps(i64::MAX, 1)
            .await?
            .first()
            .map(|s| crate::time::bucket_due_ms(*s)))
    }

    /// A receiver whose value changes whenever an item may have been
    /// scheduled to fall due before every other (and possibly at other
    /// times: after a lost notification, say), so that a sleeping scheduler
    /// wakes for it instead of waiting for its next poll; `None` when the
    /// store sends no such signal and schedulers poll. Subscribe before
    /// reading [`DelayedStore::next_due_ms`], so that no change between the
    /// read and the wait is missed. The default is `None`.
    async fn schedule_watch(&self) -> Result<Option<tokio::sync::watch::Receiver<u64>>> {
        Ok(None)
    }
}

/// [`DelayedStore::delayed_precision`] of a store that keeps only Resque's
/// one-second buckets.
pub const BUCKET_PRECISION: Duration = Duration::from_secs(1);

/// [`DelayedStore::delayed_precision`] of a store that keeps each delayed
/// item's due time in milliseconds.
pub const MILLISECOND_PRECISION: Duration = Duration::from_millis(1);

/// Expiring locks owned by a value (a token), as used by plugins.
#[async_trait]
pub trait LockStore: Send + Sync {
    /// Sets `key` to `value` with `ttl` if it does not exist. Returns whether it was set.
    async fn acquire_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<bool>;

    /// Resets the TTL of `key` if it still holds `value`. Returns whether it did.
    async fn renew_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<bool>;

    /// Deletes `key` if it still holds `value`. Returns whether it did.
    async fn release_lock(&self, key: &str, value: &str) -> Result<bool>;

    /// Every live lock as `(key, value)`, sorted by key.
    async fn locks(&self) -> Result<Vec<(String, String)>>;

    /// Deletes `key` whatever it holds. Returns how many keys were removed (0 or 1).
    async fn delete_lock(&self, key: &str) -> Result<u64>;

    /// The live value of `key` and its remaining time to live (`None` for a
    /// key without expiry, which only other Redis clients write).
    async fn get_lock(&self, key: &str) -> Result<Option<LockEntry>>;

    /// Sets `key` to `value` with `ttl`, whoever held it (`SET key value PX ttl`).
    async fn set_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<()>;

    /// Adds `by` to the integer `key` holds (a missing key holds 0), sets its
    /// TTL to `ttl`, and returns the new value (`INCRBY` + `PEXPIRE`). A value
    /// that is not an integer is an error and is left unchanged.
    async fn incr_lock(&self, key: &str, by: i64, ttl: Duration) -> Result<i64>;
}

/// A lock's value and remaining time to live, from [`LockStore::get_lock`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockEntry {
    /// The value it holds.
    pub value: String,
    /// How long it still lives; `None` when it never expires.
    pub ttl: Option<Duration>,
}

/// The failed-job list.
#[async_trait]
pub trait FailedStore: Send + Sync {
    /// Appends a failed entry (JSON text) to the tail.
    async fn push_failed(&self, entry: &str) -> Result<()>;

    /// The number of failed entries.
    async fn failed_count(&self) -> Result<u64>;

    /// Entries from `start` to `stop` inclusive, `LRANGE` style.
    async fn failed_range(&self, start: i64, stop: i64) -> Result<Vec<String>>;

    /// Removes the first entry equal to `entry` byte for byte. Returns 0 or 1.
    async fn remove_failed(&self, entry: &str) -> Result<u64>;

    /// Atomically removes the first entry equal to `entry` and, if it was
    /// there, pushes `payload` to the tail of `queue`. Returns whether it was there.
    async fn retry_failed(&self, entry: &str, queue: &str, payload: &str) -> Result<bool>;

    /// Removes the entry at position `index` (0 is the head) only if its
    /// stored bytes equal `entry` (as [`FailedStore::failed_range`] lists
    /// them), atomically: the check and the removal see the same list, and
    /// an equal entry elsewhere is never touched. Returns false, changing
    /// nothing, when the position is out of range or holds other bytes.
    /// No default: no combination of the other methods is atomic.
    async fn remove_failed_at(&self, index: u64, entry: &str) -> Result<bool>;

    /// As [`FailedStore::remove_failed_at`], and when it removes the entry,
    /// pushes `payload` to the tail of `queue` (and wakes its workers) in the
    /// same atomic step, as [`FailedStore::retry_failed`] does.
    async fn retry_failed_at(&self, index: u64, entry: &str, queue: &str, payload: &str) -> Result<bool>;
}

/// Registered workers, their liveness pings and working-on records.
#[async_trait]
pub trait WorkerRegistry: Send + Sync {
    /// Registers `worker` (started now) and records its first ping.
    async fn register_worker(&self, worker: &WorkerId, now_ms: i64) -> Result<()>;

    /// Records that `worker` is alive at `now_ms`.
    async fn ping_worker(&self, worker: &WorkerId, now_ms: i64) -> Result<()>;

    /// Registers every worker in `workers` (started now) with its first
    /// ping, as [`register_worker`](Self::register_worker) does for one. A
    /// multi-slot worker registers all its slots with it. The default calls
    /// `register_worker` for each; backends override it to use one round
    /// trip. Registering is idempotent, so a partial failure is repaired by
    /// calling it again.
    async fn register_workers(&self, workers: &[WorkerId], now_ms: i64) -> Result<()> {
        for w in workers {
            self.register_worker(w, now_ms).await?;
        }
        Ok(())
    }

    /// Records that every worker in `workers` is alive at `now_ms`, as
    /// [`ping_worker`](Self::ping_worker) does for one. The default calls
    /// `ping_worker` for each; backends override it to use one round trip.
    async fn ping_workers(&self, workers: &[WorkerId], now_ms: i64) -> Result<()> {
        for w in workers {
            self.ping_worker(w, now_ms).await?;
        }
        Ok(())
    }

    /// Every registered worker, sorted.
    async fn workers(&self) -> Result<Vec<WorkerId>>;

    /// When `worker` started, epoch ms, if it is registered.
    async fn worker_started(&self, worker: &WorkerId) -> Result<Option<i64>>;

    /// `worker`'s working-on record, if it has one.
    async fn working_on(&self, worker: &WorkerId) -> Result<Option<WorkingOn>>;

    /// The working-on records of `workers`, one entry per worker in the
    /// order given. The default calls [`working_on`](Self::working_on) for
    /// each; backends override it to use one round trip.
    async fn working_on_many(&self, workers: &[WorkerId]) -> Result<Vec<Option<WorkingOn>>> {
        let mut out = Vec::with_capacity(workers.len());
        for w in workers {
            out.push(self.working_on(w).await?);
        }
        Ok(out)
    }

    /// The start time and last ping (epoch ms) of each of `workers`, one
    /// entry per worker in the order given (`None` where the backend has no
    /// readable value), in one round trip where the backend can. The
    /// default reads [`WorkerRegistry::worker_started`] one worker at a time
    /// and knows no pings.
    async fn worker_times(&self, workers: &[WorkerId]) -> Result<Vec<WorkerTimes>> {
        let mut out = Vec::with_capacity(workers.len());
        for w in workers {
            out.push(WorkerTimes {
                started_ms: self.worker_started(w).await?,
                ping_ms: None,
            });
        }
        Ok(out)
    }

    /// Workers whose last ping is older than `cutoff_ms` (epoch ms), sorted.
    async fn stale_workers(&self, cutoff_ms: i64) -> Result<Vec<WorkerId>>;

    /// Removes `worker` from the registry with its start time, ping,
    /// per-worker stats and working-on record, and hands any working-on job
    /// to `orphan`, all in one atomic step. Used for a clean stop (no
    /// working-on record is left then), for a stop past its deadline, and
    /// for dead workers. The task slot the worker holds, if any, is
    /// released in the same step (see [`TaskFlowStore`]). Returns `None` if
    /// nothing of the worker was found.
    async fn clean_worker(&self, worker: &WorkerId, orphan: Orphan) -> Result<Option<Cleaned>>;
}

/// Integer counters: `processed`, `failed`, and `processed:<worker>`, …
#[async_trait]
pub trait StatsStore: Send + Sync {
    /// Adds `by` to counter `key` and returns the new value.
    async fn incr_stat(&self, key: &str, by: i64) -> Result<i64>;

    /// The value of counter `key` (0 if unset).
    async fn stat(&self, key: &str) -> Result<i64>;

    /// Every counter as `(key, value)`, sorted by key.
    async fn stats(&self) -> Result<Vec<(String, i64)>>;
}

/// The scheduler's leader lock: one holder at a time, with a TTL.
#[async_trait]
pub trait LeaderLock: Send + Sync {
    /// Takes the lock for `name` if it is free, or renews it if `name` holds
    /// it, in one atomic step. Returns whether `name` is now the leader.
    async fn acquire_leader(&self, name: &str, ttl: Duration) -> Result<bool>;

    /// Releases the lock if `name` holds it. Returns whether it did.
    async fn release_leader(&self, name: &str) -> Result<bool>;

    /// The current leader's name, if any.
    async fn leader(&self) -> Result<Option<String>>;
}

/// A request to cancel the job a worker is running, as stored by
/// [`CancelStore::request_cancel`]: the working-on record it was aimed at
/// (its `run_at` and payload), so that the worker stops only that job and
/// never a later one that its slot claimed meanwhile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelMark {
    /// The `run_at` of the targeted working-on record.
    pub run_at: String,
    /// The payload of the targeted working-on record.
    pub payload: String,
}

/// A cancel signal from [`CancelStore::cancel_signals`]: the worker (as
/// [`WorkerId::member`]) for which a cancel was requested, or `None` when
/// signals may have been lost (the subscriber reconnected, or a receiver
/// lagged), so every running job's mark must be read again.
pub type CancelSignal = Option<std::sync::Arc<str>>;

/// How long a cancel mark lives when no worker acts on it (the job ended
/// before the request, or its worker died): one hour, far longer than any
/// worker needs to see it, short enough that stale marks do not pile up.
pub const CANCEL_MARK_TTL: Duration = Duration::from_secs(3600);

/// Cancel requests for running jobs: a durable mark per worker plus a
/// signal on the backend's wake-up channel (Redis pub/sub, PostgreSQL
/// `NOTIFY`, the memory backend's broadcast).
///
/// The signal makes a cancel fast; the mark makes it reliable: a worker
/// reads the marks of its running jobs when a signal arrives, when its
/// subscription reports that signals may have been lost, and every ping
/// interval, so a request sent before the worker knew its job (the claim's
/// reply in flight) or while its subscriber reconnected still stops it.
#[async_trait]
pub trait CancelStore: Send + Sync {
    /// Stores `mark` as `worker`'s cancel mark (replacing any earlier one;
    /// it expires after [`CANCEL_MARK_TTL`]) and publishes a signal naming
    /// `worker`, in one atomic step.
    async fn request_cancel(&self, worker: &WorkerId, mark: &CancelMark) -> Result<()>;

    /// The live cancel marks of `workers`, one entry per worker in the
    /// order given, in one round trip where the backend can.
    async fn cancel_marks(&self, workers: &[WorkerId]) -> Result<Vec<Option<CancelMark>>>;

    /// Deletes `worker`'s cancel mark once the worker has acted on it,
    /// only if it is still `mark`, in one atomic step: a newer request for
    /// the slot's next job, stored meanwhile, stays. Returns whether it
    /// deleted it.
    async fn clear_cancel(&self, worker: &WorkerId, mark: &CancelMark) -> Result<bool>;

    /// A receiver of cancel signals for every worker of this store. Signals
    /// are hints, never the only copy of a request: see the trait docs.
    async fn cancel_signals(&self) -> Result<tokio::sync::broadcast::Receiver<CancelSignal>>;
}

/// Flow control per task class (see [`crate::flow`]): cluster-wide
/// counters of each limited class's starts and running jobs, which every
/// process that declares limits on the same class shares. The limits
/// themselves are not stored: each call carries the limits its caller
/// declared ([`crate::TaskDef::limits`]), so processes that declare
/// different limits for one class each enforce their own against the
/// shared counters.
///
/// A worker calls [`TaskFlowStore::acquire_task_start`] after it claimed a
/// job of a limited task and before the task runs, and
/// [`TaskFlowStore::release_task_slot`] when the job ends. A worker slot
/// holds at most one task slot: acquiring releases the slot's earlier one
/// (its job is over), and [`WorkerRegistry::clean_worker`] releases it too
/// (a clean stop, a stop past its deadline, the stuck-worker sweep), so a
/// crashed worker's slot comes back within the stuck-worker timeout. Tasks
/// without limits never call either method.
#[async_trait]
pub trait TaskFlowStore: Send + Sync {
    /// Asks to start a job of task `class` on worker slot `worker` under
    /// `limits`, in one atomic step across the cluster: first releases the
    /// task slot `worker` holds, if any; then, when the rate limit has room
    /// (fewer than `max` starts of `class` in the last `period`, a sliding
    /// window on the store's clock) and the cap has room (fewer than `k`
    /// slots of `class` held), logs the start and holds a slot of `class`
    /// for `worker` (each only when that limit is set) and returns
    /// [`TaskAdmission::Admitted`]; else changes nothing else and says which
    /// limit refused. Limits that fail [`QueueLimits::check`] are refused
    /// with [`crate::Error::InvalidArgument`]; unlimited ones admit at once.
    async fn acquire_task_start(&self, class: &str, limits: &TaskLimits, worker: &WorkerId) -> Result<TaskAdmission>;

    /// Releases the task slot `worker` holds, if any. Returns whether it
    /// held one.
    async fn release_task_slot(&self, worker: &WorkerId) -> Result<bool>;

    /// How many task slots of `class` are held now (running jobs of a
    /// capped task, cluster-wide).
    async fn task_slots_held(&self, class: &str) -> Result<u64>;
}

/// A complete storage backend. The engine holds it as `Arc<dyn Backend>`.
#[async_trait]
pub trait Backend:
    QueueStore
    + DelayedStore
    + LockStore
    + FailedStore
    + WorkerRegistry
    + StatsStore
    + LeaderLock
    + CancelStore
    + TaskFlowStore
    + Send
    + Sync
{
    /// A short name for logs: `memory`, `redis`, `postgres`.
    fn kind(&self) -> &'static str;

    /// Whether each call is a round trip to a server (the default). A
    /// single-slot worker then records an outcome and claims its next job
    /// in one call ([`QueueStore::complete_and_claim_batch`]); on a store in
    /// the process (memory), where a call costs no round trip, it keeps the
    /// cheaper loop that claims and completes in separate calls.
    fn remote(&self) -> bool {
        true
    }

    /// The shard that holds `queue`, in a store that spreads its queues
    /// over independent shards (a sharded Redis namespace, see
    /// `resq_redis::ShardedRedis`); 0 for every queue elsewhere (the
    /// default).
    ///
    /// Listings that mix queues go shard by shard, ascending, in insertion
    /// order within each shard: the items of one delayed bucket
    /// ([`DelayedStore::delayed_at`]), the items of one bucket among those
    /// [`DelayedStore::promote_due`] returns (still oldest bucket first),
    /// and the failed
    /// list (an entry written by a job's completion or promotion on its
    /// queue's shard; one pushed with [`FailedStore::push_failed`], or for
    /// an item naming no queue, on shard 0). Among the items of one queue
    /// the order is always the insertion order.
    fn queue_shard(&self, queue: &str) -> usize {
        let _ = queue;
        0
    }

    /// Flushes whatever the backend keeps outside its store (a memory
    /// snapshot, say) and releases connections. The default does nothing.
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}
