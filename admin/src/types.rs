//! The values the administration API returns and takes: pages, summaries,
//! listed jobs, filters and bulk outcomes. Everything serializes to JSON so
//! that a CLI can print it and a dashboard can send it as is.

use resq_core::failed::FailedId;
use serde::{Deserialize, Serialize, Serializer};

/// Which slice of a listing to return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Page {
    /// How many items to skip from the start.
    pub offset: u64,
    /// The most items to return.
    pub limit: u64,
}

impl Default for Page {
    fn default() -> Self {
        Page { offset: 0, limit: 50 }
    }
}

impl Page {
    /// The page starting at `offset` with at most `limit` items.
    pub fn new(offset: u64, limit: u64) -> Self {
        Page { offset, limit }
    }
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Paged<T> {
    /// The items on this page, in listing order.
    pub items: Vec<T>,
    /// The position of the first item in the whole listing.
    pub offset: u64,
    /// How many items the whole listing holds (for filtered listings: how
    /// many match).
    pub total: u64,
}

/// The whole system at a glance.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Overview {
    /// Every known queue, sorted by name.
    pub queues: Vec<QueueSummary>,
    /// How many jobs wait in the delayed schedule.
    pub delayed: u64,
    /// How many entries the failed list holds.
    pub failed: u64,
    /// Registered workers, busy and idle.
    pub workers: WorkerCounts,
    /// The scheduler leader's name, if one holds the lock.
    pub leader: Option<String>,
    /// The global `processed` counter.
    pub processed_total: i64,
    /// The global `failed` counter (failures ever, not the list's length).
    pub failed_total: i64,
}

/// Registered workers by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WorkerCounts {
    /// Workers with a job in hand.
    pub busy: u64,
    /// Workers without one.
    pub idle: u64,
}

/// A queue's length, latency and pause state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueueSummary {
    /// The queue's name.
    pub name: String,
    /// How many jobs wait in it.
    pub length: u64,
    /// The age of its oldest (head) job in seconds: `Some(0.0)` when the
    /// queue is empty, `None` when the backend does not know when that job
    /// was enqueued (on Redis, a job another Resque client pushed).
    pub latency_seconds: Option<f64>,
    /// Whether workers are told not to take jobs from it.
    pub paused: bool,
}

/// A queue and one page of its jobs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueueDetail {
    /// Its summary, as the overview shows it.
    pub summary: QueueSummary,
    /// The page of jobs asked for, head first.
    pub jobs: Paged<QueuedJob>,
}

/// One job waiting in a queue.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueuedJob {
    /// Its position in the queue (0 is the head, the next to run).
    pub position: u64,
    /// Its stable id, for [`crate::Admin::cancel`].
    pub id: resq_core::JobId,
    /// Its class, when the payload decodes.
    pub class: Option<String>,
    /// Its arguments (an array), when the payload decodes.
    pub args: Option<serde_json::Value>,
    /// The payload's bytes, as stored.
    pub payload: String,
    /// Why the payload does not decode, when it does not.
    pub error: Option<String>,
}

/// What names one delayed item: its bucket and its exact bytes. Taken from
/// a listing ([`DelayedJob::reference`]) and handed back to act on it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DelayedRef {
    /// The bucket's time, epoch ms (a whole second).
    pub timestamp_ms: i64,
    /// The item's bytes.
    pub payload: String,
}

/// One item of the delayed schedule.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DelayedJob {
    /// When it is due: its bucket's time, epoch ms (a whole second).
    pub timestamp_ms: i64,
    /// Its stable id, for [`crate::Admin::cancel`].
    pub id: resq_core::JobId,
    /// The queue it goes to, when the payload names one.
    pub queue: Option<String>,
    /// Its class, when the payload decodes.
    pub class: Option<String>,
    /// Its arguments (an array), when the payload decodes.
    pub args: Option<serde_json::Value>,
    /// The item's bytes, as stored.
    pub payload: String,
}

impl DelayedJob {
    /// The reference that names this item for
    /// [`Admin::run_delayed_now`](crate::Admin::run_delayed_now) and
    /// [`Admin::delete_delayed`](crate::Admin::delete_delayed).
    pub fn reference(&self) -> DelayedRef {
        DelayedRef {
            timestamp_ms: self.timestamp_ms,
            payload: self.payload.clone(),
        }
    }
}

/// Which failed entries to list or act on. Every field that is set must
/// match; the default matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FailedFilter {
    /// The job's class, read from the entry's payload (exact).
    pub class: Option<String>,
    /// The queue the job failed on (exact): the entry's `queue`, or the
    /// payload's when the entry names none.
    pub queue: Option<String>,
    /// Text found in the entry's `exception` or `error`, ignoring case.
    pub error: Option<String>,
    /// Failed at or after this time, epoch ms. An entry whose `failed_at`
    /// cannot be parsed never matches a time bound.
    pub since_ms: Option<i64>,
    /// Failed strictly before this time, epoch ms.
    pub until_ms: Option<i64>,
}

impl FailedFilter {
    /// True when the filter sets no field, so every entry matches.
    pub fn is_empty(&self) -> bool {
        self == &FailedFilter::default()
    }
}

/// One entry of the failed list, decoded as far as it goes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FailedItem {
    /// Its stable id (position and SHA-256 of its bytes), serialized as its
    /// text `<pos>-<64 hex>`.
    #[serde(serialize_with = "id_as_text")]
    pub id: FailedId,
    /// The queue it failed on.
    pub queue: Option<String>,
    /// The job's class, when the payload decodes.
    pub class: Option<String>,
    /// The job's arguments, when the payload decodes.
    pub args: Option<serde_json::Value>,
    /// The exception's name.
    pub exception: Option<String>,
    /// The error message.
    pub error: Option<String>,
    /// The backtrace lines.
    pub backtrace: Vec<String>,
    /// The worker it failed on.
    pub worker: Option<String>,
    /// When it failed, as the writer formatted it.
    pub failed_at: Option<String>,
    /// `failed_at` parsed to epoch ms, when it parses.
    pub failed_at_ms: Option<i64>,
    /// The job's payload bytes, as the entry holds them.
    pub payload: Option<String>,
}

fn id_as_text<S: Serializer>(id: &FailedId, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(id)
}

/// What a bulk action did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BulkOutcome {
    /// Entries acted on.
    pub done: u64,
    /// Entries that had moved or changed since they were listed: left alone.
    pub stale: u64,
    /// Entries that could not be acted on (a retry of a payload that does
    /// not decode or names no queue): left in place.
    pub failed: u64,
}

/// How far a bulk action by filter has come; reported after each page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BulkProgress {
    /// Entries examined so far.
    pub scanned: u64,
    /// Entries in the list when the action started.
    pub total: u64,
    /// Entries acted on so far.
    pub done: u64,
}

/// A registered worker.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkerInfo {
    /// Its unique name.
    pub name: String,
    /// The queues it works, comma-joined (`*` for all).
    pub queues: String,
    /// When it started, epoch ms.
    pub started_at_ms: Option<i64>,
    /// Seconds since its last ping, when the backend has a readable ping.
    pub ping_age_seconds: Option<f64>,
    /// Whether it has a job in hand.
    pub busy: bool,
    /// The job in hand.
    pub job: Option<WorkingJob>,
}

/// The job a worker is running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkingJob {
    /// Its stable id, for [`crate::Admin::cancel`] (which stops it).
    pub id: resq_core::JobId,
    /// The queue it came from.
    pub queue: String,
    /// Its class, when the payload decodes.
    pub class: Option<String>,
    /// When it started, as the worker formatted it.
    pub run_at: String,
    /// Its payload bytes.
    pub payload: String,
}

/// A live lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LockInfo {
    /// Its key.
    pub key: String,
    /// The value (owner token) it holds.
    pub value: String,
    /// Its remaining time to live in ms; `None` when it never expires (only
    /// other Redis clients write such keys).
    pub ttl_ms: Option<u64>,
}
