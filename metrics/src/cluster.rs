//! Cluster-wide gauges, from one cached collection of the admin overview.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use resq_admin::{Admin, Overview};
use resq_core::{CancellationToken, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// How often a [`Collector`] refreshes by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// The cached values and how fresh they are.
#[derive(Debug, Default)]
struct Snapshot {
    /// The last overview read, kept when a later read fails.
    overview: Option<Overview>,
    /// When `overview` was read.
    collected_at: Option<Instant>,
    /// How long reading it took.
    took: Option<Duration>,
    /// When the last attempt, successful or not, ended.
    attempted_at: Option<Instant>,
    /// Whether the last attempt failed (the values are older).
    stale: bool,
}

struct Inner {
    admin: Admin,
    interval: Duration,
    snapshot: parking_lot::RwLock<Snapshot>,
    errors: AtomicU64,
    /// One collection at a time (single flight).
    flight: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("interval", &self.interval)
            .field("snapshot", &*self.snapshot.read())
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

/// Cluster-wide gauges from one cached read of [`Admin::overview`] (one
/// batched backend read for every queue), refreshed at most every
/// `interval` (default [`DEFAULT_INTERVAL`]) by [`spawn`](Collector::spawn)
/// or on demand by [`collect`](Collector::collect). A scrape only encodes
/// the cache: it never reads the backend, whatever the number of queues or
/// scrapers.
///
/// | metric | type | labels | meaning |
/// |---|---|---|---|
/// | `resq_queue_length` | gauge | `queue` | jobs waiting |
/// | `resq_queue_latency_seconds` | gauge | `queue` | age of the oldest waiting job; 0 when empty; **absent** when unknown (a job another Resque client pushed, without an enqueue time) |
/// | `resq_queue_paused` | gauge | `queue` | 1 while the queue is paused |
/// | `resq_delayed_jobs` | gauge | none | delayed jobs not yet due or not yet promoted |
/// | `resq_failed_jobs` | gauge | none | entries in the failed list |
/// | `resq_workers` | gauge | `state` (`busy`, `idle`) | registered workers (each slot of a multi-slot worker counts) |
/// | `resq_scheduler_leader` | gauge | none | 1 when a scheduler holds leadership, else 0 |
/// | `resq_stat_processed`, `resq_stat_failed` | gauge | none | Resque's cluster-wide `stat:processed` / `stat:failed` counters (resettable by admins, hence gauges) |
/// | `resq_metrics_collect_duration_seconds` | gauge | none | how long the last successful collection took |
/// | `resq_metrics_collect_age_seconds` | gauge | none | time since the values were read (staleness) |
/// | `resq_metrics_collect_stale` | gauge | none | 1 when the last collection failed and older values are shown |
/// | `resq_metrics_collect_errors_total` | counter | none | failed collections |
///
/// `resq_scheduler_leader` has no label with the leader's name: a name
/// per node and per restart would start a new series at every failover;
/// the name is in [`Admin::overview`] and the CLI. Before the first
/// successful collection only the `resq_metrics_collect_*` metrics show.
/// A failed collection keeps the last values, marks them stale, and counts
/// the error.
#[derive(Clone, Debug)]
pub struct Collector {
    inner: Arc<Inner>,
}

impl Collector {
    /// A collector over `admin`, refreshing every [`DEFAULT_INTERVAL`].
    pub fn new(admin: Admin) -> Self {
        Self::with_interval(admin, DEFAULT_INTERVAL)
    }

    /// A collector over `admin`, refreshing every `interval` (at least 10 ms).
    pub fn with_interval(admin: Admin, interval: Duration) -> Self {
        Collector {
            inner: Arc::new(Inner {
                admin,
                interval: interval.max(Duration::from_millis(10)),
                snapshot: parking_lot::RwLock::new(Snapshot::default()),
                errors: AtomicU64::new(0),
                flight: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The refresh interval.
    pub fn interval(&self) -> Duration {
        self.inner.interval
    }

    /// Reads the overview now and caches it. Calls made while another is
    /// under way wait for it and share its result rather than reading
    /// again. On an error the last values stay, marked stale, and the
    /// error is counted and returned.
    pub async fn collect(&self) -> Result<()> {
        let asked = Instant::now();
        let _flight = self.inner.flight.lock().await;
        {
            let snap = self.inner.snapshot.read();
            if snap.attempted_at.is_some_and(|at| at >= asked) {
                // Another call collected while this one waited.
                return if snap.stale {
                    Err(resq_core::Error::transient(
                        "the concurrent collection of the cluster metrics failed",
                    ))
                } else {
                    Ok(())
                };
            }
        }
        let started = Instant::now();
        let read = self.inner.admin.overview().await;
        let ended = Instant::now();
        let mut snap = self.inner.snapshot.write();
        snap.attempted_at = Some(ended);
        match read {
            Ok(overview) => {
                snap.overview = Some(overview);
                snap.collected_at = Some(ended);
                snap.took = Some(ended.duration_since(started));
                snap.stale = false;
                Ok(())
            }
            Err(e) => {
                snap.stale = true;
                self.inner.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "resq::metrics", error = %e, "collecting the cluster metrics failed; the last values stay");
                Err(e)
            }
        }
    }

    /// Collects now and then every interval until `shutdown` is cancelled,
    /// on a task of its own (errors are logged, counted, and retried at the
    /// next tick). Needs a Tokio runtime.
    pub fn spawn(&self, shutdown: CancellationToken) -> JoinHandle<()> {
        let collector = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(collector.inner.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = collector.collect() => {}
                        }
                    }
                }
            }
        })
    }

    /// The cached overview, if any collection succeeded yet.
    pub fn overview(&self) -> Option<Overview> {
        self.inner.snapshot.read().overview.clone()
    }

    /// How old the cached values are (`None` before the first success).
    pub fn age(&self) -> Option<Duration> {
        self.inner.snapshot.read().collected_at.map(|at| at.elapsed())
    }

    /// Whether the last collection failed (the cached values are older).
    pub fn is_stale(&self) -> bool {
        self.inner.snapshot.read().stale
    }

    /// Failed collections so far.
    pub fn errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }

    /// Adds the cluster gauges to `registry`: each scrape encodes the cache.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(Encoder(Arc::clone(&self.inner))));
    }
}

/// Encodes the cached snapshot at each scrape.
#[derive(Debug)]
struct Encoder(Arc<Inner>);

fn gauge(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: f64) -> std::fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

fn as_f64(n: u64) -> f64 {
    // Counts far below 2^53: exact.
    n as f64
}

impl prometheus_client::collector::Collector for Encoder {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let snap = self.0.snapshot.read();
        if let Some(o) = &snap.overview {
            encode_overview(&mut encoder, o)?;
        }
        if let Some(took) = snap.took {
            gauge(
                &mut encoder,
                "resq_metrics_collect_duration_seconds",
                "How long the last successful collection of the cluster metrics took",
                took.as_secs_f64(),
            )?;
        }
        if let Some(at) = snap.collected_at {
            gauge(
                &mut encoder,
                "resq_metrics_collect_age_seconds",
                "Time since the cluster metrics were read",
                at.elapsed().as_secs_f64(),
            )?;
        }
        gauge(
            &mut encoder,
            "resq_metrics_collect_stale",
            "1 when the last collection failed and the cluster metrics shown are older",
            if snap.stale || snap.overview.is_none() {
                1.0
            } else {
                0.0
            },
        )?;
        let errors = ConstCounter::new(self.0.errors.load(Ordering::Relaxed));
        let metric = encoder.encode_descriptor(
            "resq_metrics_collect_errors",
            "Failed collections of the cluster metrics",
            None,
            MetricType::Counter,
        )?;
        errors.encode(metric)
    }
}

fn encode_overview(encoder: &mut DescriptorEncoder<'_>, o: &Overview) -> std::fmt::Result {
    {
        let mut family = encoder.encode_descriptor(
            "resq_queue_length",
            "Jobs waiting in each queue",
            None,
            MetricType::Gauge,
        )?;
        for q in &o.queues {
            let labels = [("queue", q.name.as_str())];
            ConstGauge::new(as_f64(q.length)).encode(family.encode_family(&labels)?)?;
        }
    }
    {
        let mut family = encoder.encode_descriptor(
            "resq_queue_latency_seconds",
            "Age of the oldest waiting job of each queue (0 when empty; absent when unknown)",
            None,
            MetricType::Gauge,
        )?;
        for q in &o.queues {
            if let Some(latency) = q.latency_seconds {
                let labels = [("queue", q.name.as_str())];
                ConstGauge::new(latency).encode(family.encode_family(&labels)?)?;
            }
        }
    }
    {
        let mut family = encoder.encode_descriptor(
            "resq_queue_paused",
            "1 while a queue is paused",
            None,
            MetricType::Gauge,
        )?;
        for q in &o.queues {
            let labels = [("queue", q.name.as_str())];
            ConstGauge::new(if q.paused { 1.0 } else { 0.0 }).encode(family.encode_family(&labels)?)?;
        }
    }
    gauge(
        encoder,
        "resq_delayed_jobs",
        "Delayed jobs in the store",
        as_f64(o.delayed),
    )?;
    gauge(
        encoder,
        "resq_failed_jobs",
        "Entries in the failed list",
        as_f64(o.failed),
    )?;
    {
        let mut family = encoder.encode_descriptor(
            "resq_workers",
            "Registered workers (every slot of a multi-slot worker), by state",
            None,
            MetricType::Gauge,
        )?;
        for (state, n) in [("busy", o.workers.busy), ("idle", o.workers.idle)] {
            let labels = [("state", state)];
            ConstGauge::new(as_f64(n)).encode(family.encode_family(&labels)?)?;
        }
    }
    gauge(
        encoder,
        "resq_scheduler_leader",
        "1 when a scheduler holds the leadership, else 0",
        if o.leader.is_some() { 1.0 } else { 0.0 },
    )?;
    gauge(
        encoder,
        "resq_stat_processed",
        "Resque's cluster-wide processed counter (stat:processed)",
        o.processed_total as f64,
    )?;
    gauge(
        encoder,
        "resq_stat_failed",
        "Resque's cluster-wide failed counter (stat:failed)",
        o.failed_total as f64,
    )
}
