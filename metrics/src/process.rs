//! Per-process metrics, from the events of this process's workers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use resq_core::WorkerEvent;
use std::collections::{HashMap, HashSet};
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

/// Which worker slots run a job, from the events: internal book-keeping,
/// never a label.
#[derive(Debug, Default)]
struct Slots {
    /// Slot count of each started worker, by worker name.
    workers: HashMap<String, usize>,
    /// The names of the slots (a multi-slot worker's `<name>.<n>`) between
    /// their `job` event and the job's end.
    busy: HashSet<String>,
    /// Slots whose running job the Retry plugin re-enqueued: its next
    /// `success` event is that retry's, not a success.
    retried: HashSet<String>,
}

struct Inner {
    jobs: Family<JobLabels, Counter>,
    duration: HistogramFamily<QueueClassLabels>,
    wait: HistogramFamily<QueueLabels>,
    slots_gauge: Family<StateLabels, Gauge>,
    dropped: Counter,
    slots: parking_lot::Mutex<Slots>,
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
        for state in ["busy", "idle"] {
            slots_gauge.get_or_create(&StateLabels { state }).set(0);
        }
        Metrics {
            inner: Arc::new(Inner {
                jobs: Family::default(),
                duration: Family::new_with_constructor(duration_histogram),
                wait: Family::new_with_constructor(wait_histogram),
                slots_gauge,
                dropped: Counter::default(),
                slots: parking_lot::Mutex::new(Slots::default()),
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
        let i = &self.inner;
        match event {
            WorkerEvent::Start { worker, slots } => {
                let mut book = i.slots.lock();
                book.workers.insert(worker.clone(), *slots);
                self.publish_slots(&book);
            }
            WorkerEvent::End { worker, .. } => {
                let mut book = i.slots.lock();
                book.workers.remove(worker);
                // Its slots' jobs, if any were cut off at the deadline.
                let slot_prefix = format!("{worker}.");
                let of_worker = |name: &String| name == worker || name.starts_with(&slot_prefix);
                book.busy.retain(|name| !of_worker(name));
                book.retried.retain(|name| !of_worker(name));
                self.publish_slots(&book);
            }
            WorkerEvent::Job {
                worker,
                queue,
                enqueued_at_ms,
                ..
            } => {
                if let Some(at) = enqueued_at_ms {
                    let waited_ms = resq_core::time::now_ms().saturating_sub(*at).max(0);
                    // Milliseconds to seconds; f64 holds any realistic wait exactly enough.
                    i.wait
                        .get_or_create(&QueueLabels { queue: queue.clone() })
                        .observe(waited_ms as f64 / 1000.0);
                }
                let mut book = i.slots.lock();
                book.busy.insert(worker.clone());
                self.publish_slots(&book);
            }
            WorkerEvent::Success {
                worker,
                queue,
                job,
                duration,
                ..
            } => {
                let retried = {
                    let mut book = i.slots.lock();
                    book.busy.remove(worker);
                    let retried = book.retried.remove(worker);
                    self.publish_slots(&book);
                    retried
                };
                self.observe_duration(queue, &job.class, duration.as_secs_f64());
                if !retried {
                    self.count(queue, &job.class, JobOutcome::Success);
                }
            }
            WorkerEvent::Failure {
                worker,
                queue,
                job,
                duration,
                ..
            } => {
                {
                    let mut book = i.slots.lock();
                    book.busy.remove(worker);
                    book.retried.remove(worker);
                    self.publish_slots(&book);
                }
                let class = job.as_ref().map(|j| j.class.as_str()).unwrap_or("");
                self.observe_duration(queue, class, duration.as_secs_f64());
                self.count(queue, class, JobOutcome::Failure);
            }
            WorkerEvent::ReEnqueue { worker, queue, job, .. } => {
                i.slots.lock().retried.insert(worker.clone());
                self.count(queue, &job.class, JobOutcome::Retried);
            }
            WorkerEvent::Skipped { worker, queue, job, .. } => {
                {
                    let mut book = i.slots.lock();
                    book.busy.remove(worker);
                    self.publish_slots(&book);
                }
                self.count(queue, &job.class, JobOutcome::Skipped);
            }
            _ => {}
        }
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
        let book = self.inner.slots.lock();
        Self::slot_counts(&book)
    }

    /// Events missed so far because the subscriber fell behind.
    pub fn events_dropped(&self) -> u64 {
        self.inner.dropped.get()
    }

    fn count(&self, queue: &str, class: &str, outcome: JobOutcome) {
        let labels = JobLabels {
            queue: queue.to_owned(),
            class: class.to_owned(),
            outcome: outcome.as_str(),
        };
        self.inner.jobs.get_or_create(&labels).inc();
    }

    fn observe_duration(&self, queue: &str, class: &str, seconds: f64) {
        let labels = QueueClassLabels {
            queue: queue.to_owned(),
            class: class.to_owned(),
        };
        self.inner.duration.get_or_create(&labels).observe(seconds);
    }

    fn slot_counts(book: &Slots) -> (u64, u64) {
        let total: usize = book.workers.values().sum();
        let busy = book.busy.len();
        let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        (as_u64(busy), as_u64(total.saturating_sub(busy)))
    }

    fn publish_slots(&self, book: &Slots) {
        let (busy, idle) = Self::slot_counts(book);
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let gauge = &self.inner.slots_gauge;
        gauge.get_or_create(&StateLabels { state: "busy" }).set(as_i64(busy));
        gauge.get_or_create(&StateLabels { state: "idle" }).set(as_i64(idle));
    }
}
