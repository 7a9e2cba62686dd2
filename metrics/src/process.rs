//! Per-process metrics, from the events of this process's workers.

use parking_lot::{Mutex, RwLock};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use resq_core::{JobEnd, JobObserver, JobOutcome, WorkerEvent};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
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

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn wait_histogram() -> Histogram {
    Histogram::new(QUEUE_WAIT_BUCKETS)
}

/// FNV-1a: a fast hash for the short names the recorder looks up per job
/// (queue, class, worker); the keys are the application's own names.
#[derive(Clone, Copy, Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FastMap<V> = HashMap<String, V, std::hash::BuildHasherDefault<Fnv>>;

/// The metric handles of one (queue, class), made on first use so that a
/// job's end looks them up without allocating.
#[derive(Default)]
struct ClassHandles {
    outcomes: [Option<Counter>; 6],
    duration: Option<Histogram>,
}

/// The state of one slot, for the event feed only (events do not say
/// whether a job's start was seen, nor whether a success was a retry).
#[derive(Clone, Copy, Default)]
struct SlotState {
    busy: bool,
    retried: bool,
}

struct Inner {
    jobs: Family<JobLabels, Counter>,
    duration: HistogramFamily<QueueClassLabels>,
    wait: HistogramFamily<QueueLabels>,
    /// Jobs running: one atomic add at each start and end (the idle count
    /// is computed when scraped).
    busy: AtomicI64,
    /// Slots of the started workers.
    total: AtomicI64,
    dropped: Counter,
    /// Handles by queue, then class (read-locked per job; written once per
    /// new pair).
    handles: RwLock<FastMap<FastMap<ClassHandles>>>,
    /// Queue-wait histograms by queue.
    waits: RwLock<FastMap<Histogram>>,
    /// Started workers' slot counts, by name.
    workers: Mutex<FastMap<usize>>,
    /// Slots by name, for the event feed.
    event_slots: Mutex<FastMap<SlotState>>,
}

/// Per-process job metrics, updated from this process's workers.
///
/// Feed it either way (not both for the same worker, or jobs count twice):
///
/// * **[`observer`](Metrics::observer)** (preferred): set it as
///   [`WorkerConfig::observer`](resq_core::WorkerConfig::observer) (or in
///   `PoolConfig::worker`). The worker calls it inline with borrowed data:
///   a few counter updates under an uncontended lock per job, no event
///   built, cloned or queued. This is what `BENCHMARKS.md` measures.
/// * **[`observe`](Metrics::observe)**: a task reading the broadcast events
///   of a `Worker`, `WorkerPool` or a task server's pool, for workers whose
///   config you do not build. Costlier: a subscriber makes the worker build
///   and queue an event per step (a subscriber that falls behind loses
///   events, counted in `resq_metrics_events_dropped_total`, rather than
///   slowing the worker). [`record`](Metrics::record) takes one event.
///
/// Either way: no backend call, nothing that waits on the worker's path.
///
/// | metric | type | labels |
/// |---|---|---|
/// | `resq_jobs_total` | counter | `queue`, `class`, `outcome` (`success`, `failure`, `retried`, `skipped`, `cancelled`, `throttled`) |
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
        Metrics {
            inner: Arc::new(Inner {
                jobs: Family::default(),
                duration: Family::new_with_constructor(duration_histogram),
                wait: Family::new_with_constructor(wait_histogram),
                busy: AtomicI64::new(0),
                total: AtomicI64::new(0),
                dropped: Counter::default(),
                handles: RwLock::default(),
                waits: RwLock::default(),
                workers: Mutex::default(),
                event_slots: Mutex::default(),
            }),
        }
    }

    /// Adds these metrics to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let i = &self.inner;
        registry.register(
            "resq_jobs",
            "Jobs this process finished, by queue, class and outcome (success, failure, retried, skipped, cancelled, throttled)",
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
        registry.register_collector(Box::new(SlotsGauge(Arc::clone(i))));
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
        match event {
            WorkerEvent::Start { worker, slots } => self.worker_up(worker, *slots),
            WorkerEvent::End { worker, .. } => {
                let slot_prefix = format!("{worker}.");
                self.inner
                    .event_slots
                    .lock()
                    .retain(|name, _| name != worker && !name.starts_with(&slot_prefix));
                self.worker_down(worker);
            }
            WorkerEvent::Job {
                worker,
                queue,
                enqueued_at_ms,
                ..
            } => {
                let was_busy = {
                    let mut slots = self.inner.event_slots.lock();
                    let slot = slot_state(&mut slots, worker);
                    std::mem::replace(&mut slot.busy, true)
                };
                if !was_busy {
                    self.job_up(worker, queue, *enqueued_at_ms);
                }
            }
            WorkerEvent::Success {
                worker,
                queue,
                job,
                duration,
                ..
            } => {
                let (started, retried) = self.take_slot(worker);
                let outcome = if retried {
                    JobOutcome::Retried
                } else {
                    JobOutcome::Success
                };
                self.job_down(worker, queue, &job.class, outcome, *duration, started);
            }
            WorkerEvent::Failure {
                worker,
                queue,
                job,
                duration,
                ..
            } => {
                let (started, _) = self.take_slot(worker);
                let class = job.as_ref().map(|j| j.class.as_str()).unwrap_or("");
                self.job_down(worker, queue, class, JobOutcome::Failure, *duration, started);
            }
            // Counted with the `success` event that follows it.
            WorkerEvent::ReEnqueue { worker, .. } => {
                slot_state(&mut self.inner.event_slots.lock(), worker).retried = true;
            }
            WorkerEvent::Skipped { worker, queue, job, .. } => {
                let (started, _) = self.take_slot(worker);
                self.job_down(worker, queue, &job.class, JobOutcome::Skipped, Duration::ZERO, started);
            }
            WorkerEvent::Cancelled {
                worker,
                queue,
                job,
                duration,
            } => {
                let (started, _) = self.take_slot(worker);
                self.job_down(worker, queue, &job.class, JobOutcome::Cancelled, *duration, started);
            }
            // Before the job's start: its slot never turned busy.
            WorkerEvent::Throttled { queue, job, worker, .. } => {
                self.job_down(worker, queue, &job.class, JobOutcome::Throttled, Duration::ZERO, false);
            }
            _ => {}
        }
    }

    /// This recorder as a [`JobObserver`], to set in
    /// [`WorkerConfig::observer`](resq_core::WorkerConfig::observer) (also
    /// `PoolConfig::worker`): the cheapest way to feed it, with no event
    /// built or queued per job.
    pub fn observer(&self) -> Arc<dyn JobObserver> {
        Arc::new(self.clone())
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
        self.inner.slots()
    }

    /// Events missed so far because the subscriber fell behind.
    pub fn events_dropped(&self) -> u64 {
        self.inner.dropped.get()
    }

    /// The event feed's slot `worker` after its job ended: (whether the
    /// job's start was seen, whether it was re-enqueued).
    fn take_slot(&self, worker: &str) -> (bool, bool) {
        let mut slots = self.inner.event_slots.lock();
        let slot = slot_state(&mut slots, worker);
        let state = (slot.busy, slot.retried);
        *slot = SlotState::default();
        state
    }

    fn worker_up(&self, worker: &str, slots: usize) {
        let mut workers = self.inner.workers.lock();
        let replaced = workers.insert(worker.to_owned(), slots).unwrap_or(0);
        self.inner
            .total
            .fetch_add(as_i64(slots) - as_i64(replaced), Ordering::Relaxed);
    }

    fn worker_down(&self, worker: &str) {
        let mut workers = self.inner.workers.lock();
        if let Some(slots) = workers.remove(worker) {
            self.inner.total.fetch_sub(as_i64(slots), Ordering::Relaxed);
        }
        if workers.is_empty() {
            // Jobs cut off at a shutdown deadline never report their end.
            self.inner.busy.store(0, Ordering::Relaxed);
        }
    }

    fn job_up(&self, _worker: &str, queue: &str, enqueued_at_ms: Option<i64>) {
        if let Some(at) = enqueued_at_ms {
            let waited_ms = resq_core::time::now_ms().saturating_sub(at).max(0);
            // Milliseconds to seconds: exact enough for any real wait.
            let seconds = waited_ms as f64 / 1000.0;
            let seen = match self.inner.waits.read().get(queue) {
                Some(histogram) => {
                    histogram.observe(seconds);
                    true
                }
                None => false,
            };
            if !seen {
                let histogram = self.inner.wait.get_or_create_owned(&QueueLabels {
                    queue: queue.to_owned(),
                });
                histogram.observe(seconds);
                self.inner.waits.write().insert(queue.to_owned(), histogram);
            }
        }
        self.inner.busy.fetch_add(1, Ordering::Relaxed);
    }

    fn job_down(
        &self,
        _worker: &str,
        queue: &str,
        class: &str,
        outcome: JobOutcome,
        duration: Duration,
        started: bool,
    ) {
        if started {
            self.inner.busy.fetch_sub(1, Ordering::Relaxed);
        }
        let at = match outcome {
            JobOutcome::Success => 0,
            JobOutcome::Failure => 1,
            JobOutcome::Retried => 2,
            JobOutcome::Skipped => 3,
            JobOutcome::Cancelled => 4,
            JobOutcome::Throttled => 5,
        };
        let timed = !matches!(outcome, JobOutcome::Skipped | JobOutcome::Throttled);
        let seconds = duration.as_secs_f64();
        // The common case: the handles exist, under a shared lock.
        {
            let handles = self.inner.handles.read();
            if let Some(h) = handles.get(queue).and_then(|classes| classes.get(class)) {
                match (&h.outcomes[at], &h.duration, timed) {
                    (Some(counter), _, false) => {
                        counter.inc();
                        return;
                    }
                    (Some(counter), Some(histogram), true) => {
                        counter.inc();
                        histogram.observe(seconds);
                        return;
                    }
                    _ => {}
                }
            }
        }
        // A first for this queue, class and outcome: make what is missing.
        let mut handles = self.inner.handles.write();
        let h = handles
            .entry(queue.to_owned())
            .or_default()
            .entry(class.to_owned())
            .or_default();
        let counter = h.outcomes[at].get_or_insert_with(|| {
            self.inner.jobs.get_or_create_owned(&JobLabels {
                queue: queue.to_owned(),
                class: class.to_owned(),
                outcome: outcome.as_str(),
            })
        });
        counter.inc();
        if timed {
            let histogram = h.duration.get_or_insert_with(|| {
                self.inner.duration.get_or_create_owned(&QueueClassLabels {
                    queue: queue.to_owned(),
                    class: class.to_owned(),
                })
            });
            histogram.observe(seconds);
        }
    }
}

impl Inner {
    /// (busy, idle) slots, busy clamped to the slots there are.
    fn slots(&self) -> (u64, u64) {
        let total = self.total.load(Ordering::Relaxed).max(0);
        let busy = self.busy.load(Ordering::Relaxed).clamp(0, total);
        let as_u64 = |n: i64| u64::try_from(n).unwrap_or(0);
        (as_u64(busy), as_u64(total - busy))
    }
}

/// Encodes `resq_worker_slots` from the two atomics at each scrape.
struct SlotsGauge(Arc<Inner>);

impl std::fmt::Debug for SlotsGauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SlotsGauge").field(&self.0.slots()).finish()
    }
}

impl prometheus_client::collector::Collector for SlotsGauge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let (busy, idle) = self.0.slots();
        let mut family = encoder.encode_descriptor(
            "resq_worker_slots",
            "Job slots of this process's workers, by state (busy, idle)",
            None,
            MetricType::Gauge,
        )?;
        for (state, n) in [("busy", busy), ("idle", idle)] {
            let labels = [("state", state)];
            ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX)).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The state of slot `name`; allocates its key only the first time.
fn slot_state<'a>(slots: &'a mut FastMap<SlotState>, name: &str) -> &'a mut SlotState {
    if !slots.contains_key(name) {
        slots.insert(name.to_owned(), SlotState::default());
    }
    // Safe: the key was inserted just above when it was absent, under the
    // same `&mut` borrow. (`entry` would allocate the key on every call.)
    slots.get_mut(name).expect("slot inserted above")
}

fn as_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl JobObserver for Metrics {
    fn worker_started(&self, worker: &str, slots: usize) {
        self.worker_up(worker, slots);
    }

    fn worker_stopped(&self, worker: &str, _slots: usize) {
        self.worker_down(worker);
    }

    fn job_started(&self, worker: &str, queue: &str, _class: &str, enqueued_at_ms: Option<i64>) {
        self.job_up(worker, queue, enqueued_at_ms);
    }

    fn job_finished(&self, end: &JobEnd<'_>) {
        self.job_down(end.worker, end.queue, end.class, end.outcome, end.duration, end.started);
    }
}
