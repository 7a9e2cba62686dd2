//! Per-process metrics, from the events of this process's workers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use resq_core::WorkerEvent;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

/// The buckets of `resq_job_duration_seconds`, seconds: 5 ms to 5 min.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The buckets of `resq_job_queue_wait_seconds`, seconds: 10 ms to 1 h.
pub const QUEUE_WAIT_BUCKETS: [f64; 13] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// What became of a job, the `outcome` label of `resq_jobs_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobOutcome {
    /// The job ran to success.
    Success,
    /// The job failed (and went to the failed list).
    Failure,
    /// The job failed and the Retry plugin put it back to run again.
    Retried,
    /// A plugin's `before_perform` vetoed the job (a lock, say): dropped unrun.
    Skipped,
}

impl JobOutcome {
    /// The label value: `success`, `failure`, `retried` or `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Success => "success",
            JobOutcome::Failure => "failure",
            JobOutcome::Retried => "retried",
            JobOutcome::Skipped => "skipped",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    queue: String,
    class: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueClassLabels {
    queue: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn wait_histogram() -> Histogram {
    Histogram::new(QUEUE_WAIT_BUCKETS)
}

/// The metric handles of one (queue, class), made on first use so that
/// recording an event looks them up without allocating.
#[derive(Default)]
struct ClassHandles {
    outcomes: [Option<Counter>; 4],
    duration: Option<Histogram>,
}

/// What the recorder keeps between events: internal book-keeping, never a
/// label.
#[derive(Default)]
struct Book {
    /// Slot count of each started worker, by worker name.
    workers: HashMap<String, usize>,
    /// By slot name (a multi-slot worker's `<name>.<n>`): whether it runs a
    /// job (between its `job` event and the job's end), and whether the
    /// Retry plugin re-enqueued that job (its next `success` event is that
    /// retry's, not a success).
    slots: HashMap<String, SlotState>,
    /// How many slots are busy.
    busy: usize,
    /// Handles by queue, then class.
    handles: HashMap<String, HashMap<String, ClassHandles>>,
    /// Queue-wait histograms by queue.
    waits: HashMap<String, Histogram>,
}

#[derive(Clone, Copy, Default)]
struct SlotState {
    busy: bool,
    retried: bool,
}

impl Book {
    /// The state of slot `name`; allocates its key only the first time.
    fn slot(&mut self, name: &str) -> &mut SlotState {
        if !self.slots.contains_key(name) {
            self.slots.insert(name.to_owned(), SlotState::default());
        }
        // Safe: the key was inserted just above when it was absent, under
        // `&mut self`. (`entry` would allocate the key on every call.)
        self.slots.get_mut(name).expect("slot inserted above")
    }

    fn set_busy(&mut self, name: &str, busy: bool) {
        let slot = self.slot(name);
        let was = std::mem::replace(&mut slot.busy, busy);
        match (was, busy) {
            (false, true) => self.busy += 1,
            (true, false) => self.busy = self.busy.saturating_sub(1),
            _ => {}
        }
    }

    /// The handles of (`queue`, `class`); allocates keys only the first time.
    fn class(&mut self, queue: &str, class: &str) -> &mut ClassHandles {
        if !self.handles.contains_key(queue) {
            self.handles.insert(queue.to_owned(), HashMap::new());
        }
        // Safe: inserted just above when absent, under `&mut self`.
        let classes = self.handles.get_mut(queue).expect("queue inserted above");
        if !classes.contains_key(class) {
            classes.insert(class.to_owned(), ClassHandles::default());
        }
        // Safe: likewise.
        classes.get_mut(class).expect("class inserted above")
    }
}

struct Inner {
    jobs: Family<JobLabels, Counter>,
    duration: HistogramFamily<QueueClassLabels>,
    wait: HistogramFamily<QueueLabels>,
    slots_gauge: Family<StateLabels, Gauge>,
    busy_gauge: Gauge,
    idle_gauge: Gauge,
    dropped: Counter,
    book: parking_lot::Mutex<Book>,
}

/// Per-process job metrics, updated from worker events.
///
/// Feed it the events of this process's workers, pools or task servers
/// with [`observe`](Metrics::observe) (a task that reads a broadcast
/// receiver) or call [`record`](Metrics::record) from your own event loop.
/// Updating touches only in-memory counters: no backend call, no await, so
/// the worker never waits for metrics (a subscriber that falls behind
/// loses events, counted in `resq_metrics_events_dropped_total`, rather
/// than slowing the worker).
///
/// | metric | type | labels |
/// |---|---|---|
/// | `resq_jobs_total` | counter | `queue`, `class`, `outcome` (`success`, `failure`, `retried`, `skipped`) |
/// | `resq_job_duration_seconds` | histogram ([`DURATION_BUCKETS`]) | `queue`, `class` |
/// | `resq_job_queue_wait_seconds` | histogram ([`QUEUE_WAIT_BUCKETS`]) | `queue` |
/// | `resq_worker_slots` | gauge | `state` (`busy`, `idle`) |
/// | `resq_metrics_events_dropped_total` | counter | none |
///
/// A retried attempt counts once as `retried` (not as `success`, although
/// the worker reports it as one). A failure whose payload does not decode
/// has `class=""`. The duration is the worker's own measure, from the
/// claim to the end of the job's last hook, for every job that ran or
/// failed (not for skipped ones). The queue wait (enqueue to start) is
/// observed only for jobs whose enqueue time the backend reports.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("events_dropped", &self.inner.dropped.get())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics; register them in a [`crate::Exporter`] to serve them.
    pub fn new() -> Self {
        let slots_gauge = Family::<StateLabels, Gauge>::default();
        // Both states show from the start, at 0.
        let busy_gauge = slots_gauge.get_or_create_owned(&StateLabels { state: "busy" });
        let idle_gauge = slots_gauge.get_or_create_owned(&StateLabels { state: "idle" });
        Metrics {
            inner: Arc::new(Inner {
                jobs: Family::default(),
                duration: Family::new_with_constructor(duration_histogram),
                wait: Family::new_with_constructor(wait_histogram),
                slots_gauge,
                busy_gauge,
                idle_gauge,
                dropped: Counter::default(),
                book: parking_lot::Mutex::new(Book::default()),
            }),
        }
    }

    /// Adds these metrics to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let i = &self.inner;
        registry.register(
            "resq_jobs",
            "Jobs this process finished, by queue, class and outcome (success, failure, retried, skipped)",
            i.jobs.clone(),
        );
        registry.register_with_unit(
            "resq_job_duration",
            "How long jobs ran in this process, from the claim to the end of the last hook",
            Unit::Seconds,
            i.duration.clone(),
        );
        registry.register_with_unit(
            "resq_job_queue_wait",
            "How long jobs waited in their queue, from enqueue to start (only jobs whose enqueue time is known)",
            Unit::Seconds,
            i.wait.clone(),
        );
        registry.register(
            "resq_worker_slots",
            "Job slots of this process's workers, by state (busy, idle)",
            i.slots_gauge.clone(),
        );
        registry.register(
            "resq_metrics_events_dropped",
            "Worker events the metrics missed because their subscriber fell behind",
            i.dropped.clone(),
        );
    }

    /// Spawns a task that records every event of `events` (from
    /// `Worker::subscribe`, `WorkerPool::subscribe` or a task server's
    /// pool) until the channel closes. Events missed because the task fell
    /// behind are counted, never fatal. Abort the handle to stop earlier.
    ///
    /// Subscribe before the workers start, or their `start` events (which
    /// give the slot counts) are missed. Needs a Tokio runtime.
    pub fn observe(&self, mut events: broadcast::Receiver<WorkerEvent>) -> JoinHandle<()> {
        let metrics = self.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) => metrics.record(&event),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(target: "resq::metrics", missed, "metrics fell behind the worker events");
                        metrics.inner.dropped.inc_by(missed);
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        })
    }

    /// Records one event. Cheap and synchronous: for hosts that read the
    /// events themselves.
    pub fn record(&self, event: &WorkerEvent) {
        let mut book = self.inner.book.lock();
        self.record_in(&mut book, event);
    }

    fn record_in(&self, book: &mut Book, event: &WorkerEvent) {
        match event {
            WorkerEvent::Start { worker, slots } => {
                book.workers.insert(worker.clone(), *slots);
            }
            WorkerEvent::End { worker, .. } => {
                book.workers.remove(worker);
                // Its slots' jobs, if any were cut off at the deadline.
                let slot_prefix = format!("{worker}.");
                book.slots
                    .retain(|name, _| name != worker && !name.starts_with(&slot_prefix));
                book.busy = book.slots.values().filter(|s| s.busy).count();
            }
            WorkerEvent::Job {
                worker,
                queue,
                enqueued_at_ms,
                ..
            } => {
                if let Some(at) = enqueued_at_ms {
                    let waited_ms = resq_core::time::now_ms().saturating_sub(*at).max(0);
                    if !book.waits.contains_key(queue.as_str()) {
                        let histogram = self
                            .inner
                            .wait
                            .get_or_create_owned(&QueueLabels { queue: queue.clone() });
                        book.waits.insert(queue.clone(), histogram);
                    }
                    if let Some(histogram) = book.waits.get(queue.as_str()) {
                        // Milliseconds to seconds: exact enough for any real wait.
                        histogram.observe(waited_ms as f64 / 1000.0);
                    }
                }
                book.set_busy(worker, true);
            }
            WorkerEvent::Success {
                worker,
                queue,
                job,
                duration,
                ..
            } => {
                book.set_busy(worker, false);
                let retried = std::mem::take(&mut book.slot(worker).retried);
                self.observe_duration(book, queue, &job.class, duration.as_secs_f64());
                if !retried {
                    self.count(book, queue, &job.class, JobOutcome::Success);
                }
            }
            WorkerEvent::Failure {
                worker,
                queue,
                job,
                duration,
                ..
            } => {
                book.set_busy(worker, false);
                book.slot(worker).retried = false;
                let class = job.as_ref().map(|j| j.class.as_str()).unwrap_or("");
                self.observe_duration(book, queue, class, duration.as_secs_f64());
                self.count(book, queue, class, JobOutcome::Failure);
            }
            WorkerEvent::ReEnqueue { worker, queue, job, .. } => {
                book.slot(worker).retried = true;
                self.count(book, queue, &job.class, JobOutcome::Retried);
            }
            WorkerEvent::Skipped { worker, queue, job, .. } => {
                book.set_busy(worker, false);
                self.count(book, queue, &job.class, JobOutcome::Skipped);
            }
            _ => return,
        }
        self.publish_slots(book);
    }

    /// Jobs counted for `queue`, `class` and `outcome` so far.
    pub fn jobs(&self, queue: &str, class: &str, outcome: JobOutcome) -> u64 {
        let labels = JobLabels {
            queue: queue.to_owned(),
            class: class.to_owned(),
            outcome: outcome.as_str(),
        };
        self.inner.jobs.get(&labels).map(|c| c.get()).unwrap_or(0)
    }

    /// The worker slots now (busy, idle), as `resq_worker_slots` shows them.
    pub fn slots(&self) -> (u64, u64) {
        Self::slot_counts(&self.inner.book.lock())
    }

    /// Events missed so far because the subscriber fell behind.
    pub fn events_dropped(&self) -> u64 {
        self.inner.dropped.get()
    }

    fn count(&self, book: &mut Book, queue: &str, class: &str, outcome: JobOutcome) {
        let handles = book.class(queue, class);
        let at = outcome as usize;
        if handles.outcomes[at].is_none() {
            let labels = JobLabels {
                queue: queue.to_owned(),
                class: class.to_owned(),
                outcome: outcome.as_str(),
            };
            handles.outcomes[at] = Some(self.inner.jobs.get_or_create_owned(&labels));
        }
        if let Some(counter) = &handles.outcomes[at] {
            counter.inc();
        }
    }

    fn observe_duration(&self, book: &mut Book, queue: &str, class: &str, seconds: f64) {
        let handles = book.class(queue, class);
        if handles.duration.is_none() {
            let labels = QueueClassLabels {
                queue: queue.to_owned(),
                class: class.to_owned(),
            };
            handles.duration = Some(self.inner.duration.get_or_create_owned(&labels));
        }
        if let Some(histogram) = &handles.duration {
            histogram.observe(seconds);
        }
    }

    fn slot_counts(book: &Book) -> (u64, u64) {
        let total: usize = book.workers.values().sum();
        let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        (as_u64(book.busy), as_u64(total.saturating_sub(book.busy)))
    }

    fn publish_slots(&self, book: &Book) {
        let (busy, idle) = Self::slot_counts(book);
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.inner.busy_gauge.set(as_i64(busy));
        self.inner.idle_gauge.set(as_i64(idle));
    }
}
