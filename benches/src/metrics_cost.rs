//! What the Prometheus metrics cost: processing throughput of one pool
//! shape with and without [`resq_metrics::Metrics`] as the workers'
//! observer, interleaved in one run, and the time to collect and to render
//! the cluster gauges of a store with many queues.

use crate::measure::{fresh, process_observed};
use resq_admin::Admin;
use resq_core::{NewJob, Queue};
use resq_metrics::{Collector, Exporter, Metrics};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The median and the range of a set of figures.
#[derive(Clone, Debug)]
pub struct Spread {
    /// Every figure, in the order measured.
    pub all: Vec<f64>,
}

impl Spread {
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.all.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The median (mean of the middle two for an even count).
    pub fn median(&self) -> f64 {
        let v = self.sorted();
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    /// The `p`-th percentile (nearest rank), `p` in 0..=100.
    pub fn percentile(&self, p: f64) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    /// The smallest and largest figures.
    pub fn range(&self) -> (f64, f64) {
        let v = self.sorted();
        (
            v.first().copied().unwrap_or(f64::NAN),
            v.last().copied().unwrap_or(f64::NAN),
        )
    }
}

/// Throughput with and without metrics, interleaved.
#[derive(Clone, Debug)]
pub struct Overhead {
    /// The backend URL.
    pub url: String,
    /// Workers × slots.
    pub shape: (usize, usize),
    /// Jobs per run.
    pub jobs: usize,
    /// Jobs/s of each run with metrics observing.
    pub with: Spread,
    /// Jobs/s of each run without.
    pub without: Spread,
    /// Events the metrics missed in all runs (0 with an observer: nothing is queued).
    pub dropped: u64,
    /// Whether the metrics read events (else they were the observer).
    pub by_events: bool,
}

impl Overhead {
    /// The cost, percent of the throughput without metrics (medians).
    pub fn cost_percent(&self) -> f64 {
        (1.0 - self.with.median() / self.without.median()) * 100.0
    }
}

impl fmt::Display for Overhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (w, s) = self.shape;
        let row = |name: &str, sp: &Spread| {
            let (lo, hi) = sp.range();
            let all: Vec<String> = sp.all.iter().map(|r| format!("{r:.0}")).collect();
            format!(
                "| {name} | {:.0} | {lo:.0} – {hi:.0} | {} |",
                sp.median(),
                all.join(", ")
            )
        };
        writeln!(
            f,
            "{} {w} worker(s) × {s} slot(s), {} jobs per run, metrics fed by {}, runs interleaved (with first):",
            self.url,
            self.jobs,
            if self.by_events {
                "events (Metrics::observe)"
            } else {
                "the observer (Metrics::observer)"
            }
        )?;
        writeln!(f)?;
        writeln!(f, "| no-op jobs/s | median | range | every run |")?;
        writeln!(f, "|---|---:|---:|---|")?;
        writeln!(f, "{}", row("without metrics", &self.without))?;
        writeln!(f, "{}", row("with metrics", &self.with))?;
        writeln!(f)?;
        write!(
            f,
            "cost of metrics: {:.1}% of the median throughput; events the metrics missed: {}",
            self.cost_percent(),
            self.dropped
        )
    }
}

/// Runs `rounds` pairs (with, then without) of processing runs; with
/// `by_events` the metrics read the workers' events instead of being their
/// observer.
pub async fn overhead(
    url: &str,
    jobs: usize,
    workers: usize,
    slots: usize,
    rounds: usize,
    by_events: bool,
) -> Result<Overhead, String> {
    let mut with = Vec::new();
    let mut without = Vec::new();
    let mut dropped = 0;
    for round in 0..rounds {
        let metrics = Metrics::new();
        let r = process_observed(url, jobs, workers, slots, Some(&metrics), by_events).await?;
        dropped += metrics.events_dropped();
        eprintln!("   round {round}: with metrics {r:.0}/s");
        with.push(r);
        let r = process_observed(url, jobs, workers, slots, None, false).await?;
        eprintln!("   round {round}: without metrics {r:.0}/s");
        without.push(r);
    }
    Ok(Overhead {
        url: url.to_owned(),
        shape: (workers, slots),
        jobs,
        with: Spread { all: with },
        without: Spread { all: without },
        dropped,
        by_events,
    })
}

/// Collection and scrape times with many queues.
#[derive(Clone, Debug)]
pub struct ScrapeTimes {
    /// The backend URL.
    pub url: String,
    /// Queues in the store (one job each).
    pub queues: usize,
    /// `Collector::collect` (the backend read), ms.
    pub collect_ms: Spread,
    /// `Exporter::render` (what a scrape runs), ms.
    pub render_ms: Spread,
    /// The size of the scrape text, bytes.
    pub bytes: usize,
}

impl fmt::Display for ScrapeTimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |name: &str, sp: &Spread| {
            format!(
                "| {name} | {:.2} | {:.2} | {:.2} | {} |",
                sp.percentile(50.0),
                sp.percentile(95.0),
                sp.range().1,
                sp.all.len()
            )
        };
        writeln!(
            f,
            "{} with {} queues (one job each); the scrape text is {} bytes:",
            self.url, self.queues, self.bytes
        )?;
        writeln!(f)?;
        writeln!(f, "| ms | p50 | p95 | max | n |")?;
        writeln!(f, "|---|---:|---:|---:|---:|")?;
        writeln!(f, "{}", row("collect (backend read, every 5 s)", &self.collect_ms))?;
        write!(f, "{}", row("render (a scrape)", &self.render_ms))
    }
}

/// Fills a fresh store with `queues` queues of one job each, then times
/// `samples` collections and `samples` renders.
pub async fn scrape_times(url: &str, queues: usize, samples: usize) -> Result<ScrapeTimes, String> {
    let f = fresh(url).await?;
    let client = Queue::new(Arc::clone(&f.backend));
    let jobs: Vec<NewJob> = (0..queues)
        .map(|i| NewJob::new(format!("q{i:04}"), "noop", (i,)).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    for chunk in jobs.chunks(1000) {
        client.enqueue_batch(chunk.to_vec()).await.map_err(|e| e.to_string())?;
    }
    let metrics = Metrics::new();
    let collector = Collector::new(Admin::new(Arc::clone(&f.backend)));
    let exporter = Exporter::builder().metrics(&metrics).collector(&collector).build();
    let mut collect_ms = Vec::new();
    let mut render_ms = Vec::new();
    let mut bytes = 0;
    let result = async {
        for _ in 0..samples {
            let start = Instant::now();
            collector.collect().await.map_err(|e| e.to_string())?;
            collect_ms.push(ms(start.elapsed()));
        }
        let shown = collector.overview().map(|o| o.queues.len()).unwrap_or(0);
        if shown != queues {
            return Err(format!("{queues} queues made, the overview shows {shown}"));
        }
        for _ in 0..samples {
            let start = Instant::now();
            let text = exporter.render();
            render_ms.push(ms(start.elapsed()));
            bytes = text.len();
        }
        Ok(())
    }
    .await;
    f.done().await;
    result?;
    Ok(ScrapeTimes {
        url: url.to_owned(),
        queues,
        collect_ms: Spread { all: collect_ms },
        render_ms: Spread { all: render_ms },
        bytes,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
