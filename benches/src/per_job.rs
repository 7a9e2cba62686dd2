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
    /// The client's floor: bare `PING`s one at a time (resq: redis-rs's
    /// `ConnectionManager` on the harness's multi-thread runtime;
    /// node-resque: its ioredis connection), per second.
    PingOne,
    /// resq's single enqueue on a current-thread runtime.
    EnqueueOneCurrentThread,
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
        ("ping_sequential", Figure::PingOne),
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
            let ping = measure::ping_sequential(url, jobs).await?;
            push(&mut out, Figure::PingOne, ping);
            let one_ct = measure::enqueue_current_thread(url, jobs)?;
            push(&mut out, Figure::EnqueueOneCurrentThread, one_ct);
            let bulk = measure::enqueue_batched(url, jobs).await?;
            push(&mut out, Figure::EnqueueBulk, bulk);
            let single = measure::process_shape(url, jobs, 1, 1).await?;
            push(&mut out, Figure::ProcessOne, single);
            let pool = measure::process_shape(url, jobs * 5, 4, 256).await?;
            push(&mut out, Figure::ProcessPool, pool);
            eprintln!(
                "   resq redis: enqueue {one:.0}/s (PING floor {ping:.0}/s, current-thread runtime {one_ct:.0}/s), bulk {bulk:.0}/s, 1×1 {single:.0}/s, 4×256 {pool:.0}/s"
            );
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

/// Single enqueue beside each client's own floor (bare `PING`s one at a
/// time, same run): how close each enqueue is to the fastest one-at-a-time
/// call its client can make, and resq's enqueue on a current-thread
/// runtime beside node-resque's (both then hand nothing between threads).
/// Empty when node-resque was not measured.
pub fn render_floors(samples: &[Sample], rounds: usize) -> String {
    let get = |subject, figure| summary(samples, subject, figure);
    let (Some(resq), Some(resq_ping), Some(node), Some(node_ping)) = (
        get(Subject::ResqRedis, Figure::EnqueueOne),
        get(Subject::ResqRedis, Figure::PingOne),
        get(Subject::NodeResque, Figure::EnqueueOne),
        get(Subject::NodeResque, Figure::PingOne),
    ) else {
        return String::new();
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| one at a time (per second, median of {rounds} rounds, min–max) | enqueue | bare PING, same client | enqueue ÷ PING |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|");
    let _ = writeln!(
        s,
        "| resq (redis-rs `ConnectionManager`, multi-thread runtime) | {} | {} | {:.2} |",
        cell(Some(resq)),
        cell(Some(resq_ping)),
        resq.0 / resq_ping.0
    );
    let _ = writeln!(
        s,
        "| node-resque (ioredis) | {} | {} | {:.2} |",
        cell(Some(node)),
        cell(Some(node_ping)),
        node.0 / node_ping.0
    );
    if let Some(ct) = get(Subject::ResqRedis, Figure::EnqueueOneCurrentThread) {
        let _ = writeln!(
            s,
            "\nresq single enqueue on a current-thread runtime: {} enqueues/s, {:.2}× node-resque's.",
            cell(Some(ct)),
            ct.0 / node.0
        );
    }
    s
}

/// Round trips, statements (PostgreSQL) and commands (Redis) per job.
#[derive(Clone, Debug)]
pub struct PerJobCount {
    /// The backend URL as given.
    pub url: String,
    /// What was counted: `enqueue, one at a time` or `process, 1 worker × 1 slot`.
    pub what: &'static str,
    /// Jobs in the run.
    pub jobs: usize,
    /// What the proxy counted over the whole run.
    pub wire: crate::round_trips::Counts,
    /// Redis commands the server ran (`INFO commandstats`, summed, scripts'
    /// inner commands included), when the server could be asked.
    pub commands: Option<u64>,
}

/// `url` with its `host:port` replaced by `addr`, and that `host:port`.
fn through(url: &str, addr: std::net::SocketAddr) -> Result<(String, String), String> {
    let scheme_end = url.find("://").ok_or_else(|| format!("not a URL: {url}"))? + 3;
    let rest = url.get(scheme_end..).unwrap_or_default();
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = rest.get(..authority_end).unwrap_or_default();
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let host = authority.get(host_start..).unwrap_or_default().to_owned();
    let proxied = format!(
        "{}{}{}{}",
        url.get(..scheme_end).unwrap_or_default(),
        authority.get(..host_start).unwrap_or_default(),
        addr,
        rest.get(authority_end..).unwrap_or_default()
    );
    Ok((proxied, host))
}

/// The sum of every command's `calls=` in a Redis server's `INFO
/// commandstats`.
pub(crate) async fn redis_commands(url: &str) -> Option<u64> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .ok()?;
    Some(
        info.lines()
            .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
            .sum(),
    )
}

/// Counts, through a [`crate::round_trips::Proxy`], the round trips (and
/// statements or commands) of `jobs` single enqueues and of processing
/// `jobs` jobs with one worker of one slot, on each backend URL. Each run
/// includes its set-up (a fresh namespace or schema, the batch enqueue of
/// the jobs to process, the checks): a few round trips over the run, under
/// 0.01 per job at 20,000 jobs. Redis commands come from the server's
/// counters, which other clients of a shared server add to: count on a
/// private server.
pub async fn count(urls: &[String], jobs: usize) -> Result<Vec<PerJobCount>, String> {
    use crate::round_trips::{Protocol, Proxy};
    let mut out = Vec::new();
    for url in urls {
        let protocol = if url.starts_with("postgres") {
            Protocol::Postgres
        } else {
            Protocol::Redis
        };
        let placeholder: std::net::SocketAddr = ([127, 0, 0, 1], 1).into();
        let (_, host) = through(url, placeholder)?;
        let upstream = tokio::net::lookup_host(&host)
            .await
            .map_err(|e| format!("{host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host}: no address"))?;
        let proxy = Proxy::start(upstream, protocol).await.map_err(|e| e.to_string())?;
        let (proxied, _) = through(url, proxy.addr)?;
        let commands = || async {
            match protocol {
                Protocol::Redis => redis_commands(url).await,
                Protocol::Postgres => None,
            }
        };
        for what in ["enqueue, one at a time", "process, 1 worker × 1 slot"] {
            let before = commands().await;
            proxy.take();
            if what.starts_with("enqueue") {
                measure::enqueue(&proxied, jobs, 1).await?;
            } else {
                measure::process_shape(&proxied, jobs, 1, 1).await?;
            }
            let wire = proxy.take();
            let after = commands().await;
            out.push(PerJobCount {
                url: url.clone(),
                what,
                jobs,
                wire,
                // Less the INFO call itself.
                commands: before.zip(after).map(|(b, a)| a.saturating_sub(b).saturating_sub(1)),
            });
        }
    }
    Ok(out)
}

/// The Markdown table of [`count`]'s results.
pub fn render_counts(counts: &[PerJobCount]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| backend | what | jobs | round trips per job | statements per job | commands per job |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|");
    for c in counts {
        let per = |n: u64| n as f64 / c.jobs.max(1) as f64;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.3} | {} | {} |",
            c.url,
            c.what,
            c.jobs,
            per(c.wire.round_trips),
            if c.url.starts_with("postgres") {
                format!("{:.3}", per(c.wire.statements))
            } else {
                "—".to_owned()
            },
            c.commands.map_or_else(|| "—".to_owned(), |n| format!("{:.2}", per(n)))
        );
    }
    s
}
