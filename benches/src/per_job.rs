//! Per-job figures side by side with the peers, interleaved: each round
//! measures resq, then node-resque, then BullMQ on the same Redis, then
//! resq and graphile-worker on the same PostgreSQL, so a noisy stretch of
//! the machine hits every subject of that round alike. [`render`] reports
//! each figure's median over the rounds with its spread (min–max), the
//! ratio of the medians, and whether it meets the target of the per-job
//! cost issue.

use crate::measure::{self, NodeFigures};
use std::fmt::Write;

/// Who a figure belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    /// resq on Redis.
    ResqRedis,
    /// node-resque on the same Redis.
    NodeResque,
    /// BullMQ on the same Redis.
    BullMq,
    /// resq on PostgreSQL.
    ResqPostgres,
    /// graphile-worker on the same PostgreSQL.
    Graphile,
}

/// The figures compared (jobs/s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Figure {
    /// `enqueue` one job after another, one producer.
    EnqueueOne,
    /// Bulk enqueue (resq `enqueue_batch`, BullMQ `addBulk`), 1,000 a call.
    EnqueueBulk,
    /// Processing no-op jobs with one worker of one slot.
    ProcessOne,
    /// Processing with the best pool (resq: 4 workers × 256 slots; the
    /// peers: the best of the sizes their scripts try).
    ProcessPool,
}

/// One measurement.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Round number, from 0.
    pub round: usize,
    /// Whose figure.
    pub subject: Subject,
    /// Which figure.
    pub figure: Figure,
    /// Jobs per second.
    pub rate: f64,
}

fn from_script(round: usize, subject: Subject, figures: &NodeFigures, out: &mut Vec<Sample>) {
    for (key, figure) in [
        ("enqueue_sequential", Figure::EnqueueOne),
        ("enqueue_bulk", Figure::EnqueueBulk),
        ("process_one", Figure::ProcessOne),
        ("process_pool", Figure::ProcessPool),
    ] {
        if let Some((_, rate)) = figures.rows.iter().find(|(k, _)| k == key) {
            out.push(Sample {
                round,
                subject,
                figure,
                rate: *rate,
            });
        }
    }
}

/// Runs `rounds` interleaved rounds of `jobs` jobs per figure. A peer whose
/// script cannot run (no node, npm or network) is left out of the report;
/// resq's own failures are errors.
pub async fn run(
    redis: Option<&str>,
    postgres: Option<&str>,
    jobs: usize,
    rounds: usize,
) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for round in 0..rounds {
        eprintln!("== round {} of {rounds}", round + 1);
        if let Some(url) = redis {
            let push = |out: &mut Vec<Sample>, figure, rate| {
                out.push(Sample {
                    round,
                    subject: Subject::ResqRedis,
                    figure,
                    rate,
                })
            };
            let one = measure::enqueue(url, jobs, 1).await?;
            push(&mut out, Figure::EnqueueOne, one);
            let bulk = measure::enqueue_batched(url, jobs).await?;
            push(&mut out, Figure::EnqueueBulk, bulk);
            let single = measure::process_shape(url, jobs, 1, 1).await?;
            push(&mut out, Figure::ProcessOne, single);
            let pool = measure::process_shape(url, jobs * 5, 4, 256).await?;
            push(&mut out, Figure::ProcessPool, pool);
            eprintln!("   resq redis: enqueue {one:.0}/s, bulk {bulk:.0}/s, 1×1 {single:.0}/s, 4×256 {pool:.0}/s");
            match measure::node_resque(url, jobs) {
                Some(f) => from_script(round, Subject::NodeResque, &f, &mut out),
                None => eprintln!("   node-resque: not measured"),
            }
            match measure::bullmq(url, jobs) {
                Some(f) => from_script(round, Subject::BullMq, &f, &mut out),
                None => eprintln!("   BullMQ: not measured"),
            }
        }
        if let Some(url) = postgres {
            let single = measure::process_shape(url, jobs, 1, 1).await?;
            out.push(Sample {
                round,
                subject: Subject::ResqPostgres,
                figure: Figure::ProcessOne,
                rate: single,
            });
            eprintln!("   resq postgres: 1×1 {single:.0}/s");
            match measure::graphile_worker(url, jobs) {
                Some(f) => from_script(round, Subject::Graphile, &f, &mut out),
                None => eprintln!("   graphile-worker: not measured"),
            }
        }
    }
    Ok(out)
}

/// The median and the range of `subject`'s `figure` over the rounds.
pub fn summary(samples: &[Sample], subject: Subject, figure: Figure) -> Option<(f64, f64, f64)> {
    let mut rates: Vec<f64> = samples
        .iter()
        .filter(|s| s.subject == subject && s.figure == figure)
        .map(|s| s.rate)
        .collect();
    if rates.is_empty() {
        return None;
    }
    rates.sort_by(f64::total_cmp);
    let n = rates.len();
    let median = if n % 2 == 1 {
        rates[n / 2]
    } else {
        (rates[n / 2 - 1] + rates[n / 2]) / 2.0
    };
    Some((median, rates[0], rates[n - 1]))
}

/// One side of a comparison: whose figure, and which.
pub type Side = (Subject, Figure);

/// The comparisons the per-job cost issue sets, with their targets:
/// (label, resq's side, the peer's side, target ratio).
pub const TARGETS: &[(&str, Side, Side, f64)] = &[
    (
        "Redis single enqueue vs node-resque",
        (Subject::ResqRedis, Figure::EnqueueOne),
        (Subject::NodeResque, Figure::EnqueueOne),
        1.5,
    ),
    (
        "Redis single enqueue vs BullMQ `add`",
        (Subject::ResqRedis, Figure::EnqueueOne),
        (Subject::BullMq, Figure::EnqueueOne),
        1.5,
    ),
    (
        "Redis bulk enqueue vs BullMQ `addBulk`",
        (Subject::ResqRedis, Figure::EnqueueBulk),
        (Subject::BullMq, Figure::EnqueueBulk),
        1.0,
    ),
    (
        "Redis 1 worker × 1 slot vs node-resque",
        (Subject::ResqRedis, Figure::ProcessOne),
        (Subject::NodeResque, Figure::ProcessOne),
        2.0,
    ),
    (
        "Redis 1 worker × 1 slot vs BullMQ concurrency 1",
        (Subject::ResqRedis, Figure::ProcessOne),
        (Subject::BullMq, Figure::ProcessOne),
        1.0,
    ),
    (
        "Redis best pool vs BullMQ's best",
        (Subject::ResqRedis, Figure::ProcessPool),
        (Subject::BullMq, Figure::ProcessPool),
        10.0,
    ),
    (
        "PostgreSQL 1 worker vs graphile-worker",
        (Subject::ResqPostgres, Figure::ProcessOne),
        (Subject::Graphile, Figure::ProcessOne),
        1.2,
    ),
];

fn cell(v: Option<(f64, f64, f64)>) -> String {
    v.map_or_else(|| "—".to_owned(), |(m, lo, hi)| format!("{m:.0} ({lo:.0}–{hi:.0})"))
}

/// The Markdown table of every target: medians with their range, the
/// ratio of the medians, and whether it meets the target.
pub fn render(samples: &[Sample], rounds: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| comparison (jobs/s, median of {rounds} interleaved rounds, min–max) | resq | peer | ratio | target | met |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---|");
    for (label, ours, theirs, target) in TARGETS {
        let a = summary(samples, ours.0, ours.1);
        let b = summary(samples, theirs.0, theirs.1);
        let ratio = match (a, b) {
            (Some((x, _, _)), Some((y, _, _))) if y > 0.0 => Some(x / y),
            _ => None,
        };
        let _ = writeln!(
            s,
            "| {label} | {} | {} | {} | ≥ {target}× | {} |",
            cell(a),
            cell(b),
            ratio.map_or_else(|| "—".to_owned(), |r| format!("{r:.2}×")),
            match ratio {
                Some(r) if r >= *target => "yes",
                Some(_) => "**no**",
                None => "not measured",
            }
        );
    }
    s
}
