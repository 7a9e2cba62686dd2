//! The end-to-end load harness: enqueue and processing throughput, idle
//! pickup latency (normal jobs, and delayed jobs from their due time; only
//! those with `--delayed-only`), memory per queued job,
//! a bare tokio mpsc ceiling, Redis's own raw limit (redis-benchmark), and
//! node-resque measured the same way against the same Redis, with ratios;
//! and flow control (`--flow-rate`, `--task-flow-rate`, `--flow-cap`: rate
//! limits per queue and per task under backlog
//! and what a concurrency cap costs when it does not bind; `--timeouts`:
//! job-timeout lateness and cancel latency; `--shard-spread`: a sharded
//! namespace on a Redis Cluster, 1 vs N shards).
//! Every processing run checks that each job ran exactly once and the binary
//! exits non-zero otherwise.
//!
//! `cargo run --release -p resq-benches --bin load -- --help`

use clap::Parser;
use resq_benches::{flow, measure, metrics_cost, report, timeouts};
use std::process::ExitCode;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(about = "resq end-to-end load harness")]
struct Args {
    /// Backends to measure (repeatable): memory://, redis://HOST:PORT
    #[arg(long = "backend", default_values_t = ["memory://".to_string(), "redis://127.0.0.1:6379".to_string()])]
    backends: Vec<String>,
    /// Jobs per throughput run.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Samples for each latency figure.
    #[arg(long, default_value_t = 1_000)]
    samples: usize,
    /// Jobs queued for the memory-footprint figures.
    #[arg(long, default_value_t = 1_000_000)]
    footprint_jobs: usize,
    /// Skip the node-resque comparison.
    #[arg(long)]
    no_node: bool,
    /// Skip the graphile-worker comparison.
    #[arg(long)]
    no_graphile: bool,
    /// Skip redis-benchmark.
    #[arg(long)]
    no_redis_benchmark: bool,
    /// Only measure processing throughput, for these pool shapes
    /// (`WORKERSxSLOTS`, repeatable; e.g. `--shape 1x256`), and exit.
    #[arg(long = "shape")]
    shapes: Vec<String>,
    /// Only measure what the Prometheus metrics cost, and exit: on every
    /// backend, the first `--shape` (default 4x256) with and without
    /// metrics as the workers' observer, interleaved for `--rounds` rounds, and
    /// the collect and render times with `--scrape-queues` queues.
    #[arg(long)]
    metrics_overhead: bool,
    /// With `--metrics-overhead`: feed the metrics the workers' events
    /// (`Metrics::observe`) instead of making them the workers' observer.
    #[arg(long)]
    metrics_by_events: bool,
    /// Rounds (one run with metrics, one without) of `--metrics-overhead`.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Queues for the scrape-time figure of `--metrics-overhead`.
    #[arg(long, default_value_t = 1_000)]
    scrape_queues: usize,
    /// Collections and renders timed for the scrape-time figure.
    #[arg(long, default_value_t = 50)]
    scrapes: usize,
    /// Only measure the delayed pickup on every backend, and exit: delayed
    /// jobs due at once (`--samples` of them, one every 10 ms) and, with
    /// `--delay-ms N`, due N ms after they are scheduled, from each job's
    /// due time to its start; median, p99 and maximum; beside the pickup of
    /// jobs pushed to an idle worker, measured in the same run.
    #[arg(long)]
    delayed_only: bool,
    /// With `--delayed-only`: also measure jobs due this many ms after they
    /// are scheduled (the scheduler then wakes for their time).
    #[arg(long)]
    delay_ms: Option<u64>,
    /// With `--delayed-only` and `--task-flow-rate`: the scheduler's poll
    /// interval, ms (the full run uses 250).
    #[arg(long, default_value_t = 250)]
    scheduler_poll_ms: u64,
    /// Only measure rate limiting, and exit: on every backend, a backlog on
    /// one queue limited to `--rate-max` starts per `--rate-period-ms`,
    /// worked by `--flow-workers` workers of `--flow-slots` slots, each
    /// with its own backend handle, for `--rate-periods` periods: the most
    /// starts in any window of one period, and throughput as % of the limit.
    #[arg(long)]
    flow_rate: bool,
    /// As `--flow-rate`, with the limit declared on the task
    /// (`TaskDef::rate_limit`) instead of the queue: jobs over it are
    /// throttled back to the delayed schedule, which a scheduler (polling
    /// every `--scheduler-poll-ms`) promotes.
    #[arg(long)]
    task_flow_rate: bool,
    /// Starts per period for `--flow-rate`.
    #[arg(long, default_value_t = 200)]
    rate_max: u32,
    /// The period of `--flow-rate`, ms.
    #[arg(long, default_value_t = 1_000)]
    rate_period_ms: u64,
    /// Periods measured by `--flow-rate`.
    #[arg(long, default_value_t = 10)]
    rate_periods: u32,
    /// Only measure what a concurrency cap that does not bind costs, and
    /// exit: on every backend, `--jobs` jobs worked by `--flow-workers` ×
    /// `--flow-slots` (own handles) with a cap of `--cap` and without one,
    /// interleaved for `--rounds` rounds; medians.
    #[arg(long)]
    flow_cap: bool,
    /// The cap of `--flow-cap` (above workers × slots, so it never binds).
    #[arg(long, default_value_t = 1_000)]
    cap: u32,
    /// Only measure how long a crashed worker's concurrency slot takes to
    /// come back, and exit: on every backend, `--rounds` crashes of a
    /// worker holding the only slot of a capped queue, with a scheduler
    /// sweeping stuck workers after `--stuck-timeout-ms`.
    #[arg(long)]
    flow_crash: bool,
    /// The stuck-worker timeout of `--flow-crash`, ms (pings every third of it).
    #[arg(long, default_value_t = 3_000)]
    stuck_timeout_ms: u64,
    /// Workers for `--flow-rate` and `--flow-cap`.
    #[arg(long, default_value_t = 10)]
    flow_workers: usize,
    /// Slots per worker for `--flow-rate` and `--flow-cap`.
    #[arg(long, default_value_t = 1)]
    flow_slots: usize,
    /// Only measure job timeouts and cancellation, and exit: on every
    /// backend, the lateness of job timeouts (`--timeout-jobs` hanging jobs,
    /// timeout `--timeout-ms`, one worker with `--timeout-slots` slots) and
    /// the latency of cancelling a running job through the backend
    /// (`--cancels` samples).
    #[arg(long)]
    timeouts: bool,
    /// Hanging jobs for the timeout-lateness figure of `--timeouts`.
    #[arg(long, default_value_t = 500)]
    timeout_jobs: usize,
    /// Their timeout, ms.
    #[arg(long, default_value_t = 100)]
    timeout_ms: u64,
    /// Slots of the worker that runs them.
    #[arg(long, default_value_t = 16)]
    timeout_slots: usize,
    /// Running jobs cancelled for the cancel-latency figure of `--timeouts`.
    #[arg(long, default_value_t = 500)]
    cancels: usize,
    /// Internal: measure the memory backend's footprint in this (fresh) process.
    #[arg(long, hide = true)]
    footprint_memory: Option<usize>,
    /// With `--shape` on a single Redis server: also read the server's CPU
    /// time and command count around the processing alone (`INFO`), per
    /// job. Use a private server: its counters see every client.
    #[arg(long)]
    server_cost: bool,
    /// Only measure sharded namespaces on the Redis Cluster this URL names
    /// (`redis+cluster://h:p,h:p`, no namespace), and exit: processing
    /// throughput with `--queues` queues on each of `--shard-counts`
    /// shards, interleaved for `--rounds` rounds, with the first `--shape`
    /// (default 6x64), and the commands each primary ran per job. Counts
    /// need a cluster that serves nothing else (see `resq_benches::shards`).
    #[arg(long)]
    shard_spread: Option<String>,
    /// Shard counts for `--shard-spread`.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 3])]
    shard_counts: Vec<usize>,
    /// Queues for `--shard-spread`.
    #[arg(long, default_value_t = 6)]
    queues: usize,
    /// Internal: run a worker on this URL for two seconds and print its peak RSS.
    #[arg(long, hide = true)]
    rss_worker: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(jobs) = args.footprint_memory {
        return print_or_fail(measure::footprint_memory_child(jobs).await);
    }
    if let Some(url) = &args.rss_worker {
        return print_or_fail(measure::rss_worker_child(url).await);
    }
    if args.metrics_overhead {
        return metrics_overhead(&args).await;
    }
    if let Some(cluster) = &args.shard_spread {
        return shard_spread(&args, cluster).await;
    }
    if args.delayed_only {
        return delayed_only(&args).await;
    }
    if args.flow_rate || args.task_flow_rate || args.flow_cap || args.flow_crash {
        return flow(&args).await;
    }
    if args.timeouts {
        return timeouts(&args).await;
    }
    if !args.shapes.is_empty() {
        return process_only(&args).await;
    }
    let mut tables = Vec::new();
    for url in &args.backends {
        eprintln!("== measuring {url}");
        match measure::backend(url, args.jobs, args.samples, args.footprint_jobs).await {
            Ok(t) => tables.push(t),
            Err(e) => {
                eprintln!("FAILED on {url}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let ceiling = measure::mpsc_ceiling(args.jobs.max(100_000)).await;
    let redis_url = args.backends.iter().find(|u| u.starts_with("redis")).cloned();
    let raw = match (&redis_url, args.no_redis_benchmark) {
        (Some(url), false) => measure::redis_benchmark(url),
        _ => None,
    };
    let node = match (&redis_url, args.no_node) {
        (Some(url), false) => measure::node_resque(url, args.jobs.min(20_000)),
        _ => None,
    };
    let pg_url = args.backends.iter().find(|u| u.starts_with("postgres")).cloned();
    let graphile = match (&pg_url, args.no_graphile) {
        (Some(url), false) => measure::graphile_worker(url, args.jobs.min(20_000)),
        _ => None,
    };
    println!(
        "{}",
        report::render(&tables, ceiling, raw.as_ref(), node.as_ref(), graphile.as_ref())
    );
    ExitCode::SUCCESS
}

fn print_or_fail<T: std::fmt::Display>(r: Result<T, String>) -> ExitCode {
    match r {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `--metrics-overhead`: what the metrics cost on every backend.
async fn metrics_overhead(args: &Args) -> ExitCode {
    let shape = args.shapes.first().map(String::as_str).unwrap_or("4x256");
    let Some((workers, slots)) = parse_shape(shape) else {
        eprintln!("--shape {shape}: expected WORKERSxSLOTS, e.g. 4x256");
        return ExitCode::FAILURE;
    };
    for url in &args.backends {
        eprintln!("== metrics overhead on {url}");
        match metrics_cost::overhead(
            url,
            args.jobs,
            workers,
            slots,
            args.rounds.max(1),
            args.metrics_by_events,
        )
        .await
        {
            Ok(o) => println!("{o}\n"),
            Err(e) => {
                eprintln!("FAILED on {url}: {e}");
                return ExitCode::FAILURE;
            }
        }
        eprintln!("== scrape time on {url}");
        match metrics_cost::scrape_times(url, args.scrape_queues, args.scrapes.max(1)).await {
            Ok(t) => println!("{t}\n"),
            Err(e) => {
                eprintln!("FAILED on {url}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// `--shard-spread`: 1 vs N shards on a Redis Cluster.
async fn shard_spread(args: &Args, cluster: &str) -> ExitCode {
    let shape = args.shapes.first().map(String::as_str).unwrap_or("6x64");
    let Some((workers, slots)) = parse_shape(shape) else {
        eprintln!("--shape {shape}: expected WORKERSxSLOTS, e.g. 6x64");
        return ExitCode::FAILURE;
    };
    let plan = resq_benches::shards::SpreadPlan {
        cluster_url: cluster.trim_end_matches('/').to_owned(),
        shard_counts: args.shard_counts.clone(),
        jobs: args.jobs,
        queues: args.queues,
        workers,
        slots,
        rounds: args.rounds,
    };
    eprintln!("== sharded namespaces on {cluster}: {plan:?}");
    print_or_fail(resq_benches::shards::spread(&plan).await)
}

/// `--delayed-only`: the delayed pickup on every backend.
async fn delayed_only(args: &Args) -> ExitCode {
    let mut delays = vec![0];
    delays.extend(args.delay_ms);
    println!("| backend | delayed jobs due | median ms | p99 ms | max ms | samples |");
    println!("|---|---|---:|---:|---:|---:|");
    for url in &args.backends {
        eprintln!("== idle pickup on {url}, for comparison");
        match measure::idle_pickup(url, args.samples).await {
            Ok(l) => println!(
                "| {url} | (a job pushed to an idle worker, from its push) | {:.2} | {:.2} | — | {} |",
                l.median_ms, l.p99_ms, l.samples
            ),
            Err(e) => {
                eprintln!("FAILED on {url}: {e}");
                return ExitCode::FAILURE;
            }
        }
        for &delay in &delays {
            eprintln!("== delayed pickup on {url}, due {delay} ms after scheduling");
            let (delay_d, poll) = (
                std::time::Duration::from_millis(delay),
                std::time::Duration::from_millis(args.scheduler_poll_ms),
            );
            match measure::delayed_pickup(url, args.samples, delay_d, poll).await {
                Ok(d) => {
                    let due = if delay == 0 {
                        "at once".to_owned()
                    } else {
                        format!("in {delay} ms")
                    };
                    println!(
                        "| {url} | {due} | {:.2} | {:.2} | {:.2} | {} |",
                        d.latency.median_ms, d.latency.p99_ms, d.max_ms, d.latency.samples
                    );
                    eprintln!(
                        "   due -> promoted (scheduler's event): median {:.2} ms, p99 {:.2} ms ({} jobs); \
                         promoted -> started: median {:.2} ms, p99 {:.2} ms",
                        d.promoted.median_ms,
                        d.promoted.p99_ms,
                        d.promoted.samples,
                        d.after_promotion.median_ms,
                        d.after_promotion.p99_ms
                    );
                    let bounds: Vec<String> = measure::DISTRIBUTION_MS
                        .iter()
                        .zip(&d.distribution)
                        .map(|(ms, n)| format!("<= {ms} ms: {n}"))
                        .chain(d.distribution.last().map(|n| format!("later: {n}")))
                        .collect();
                    eprintln!("   started after the due time: {}", bounds.join(", "));
                }
                Err(e) => {
                    eprintln!("FAILED on {url}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    ExitCode::SUCCESS
}

/// `--flow-rate`, `--task-flow-rate`, `--flow-cap` and `--flow-crash`:
/// flow control under load
/// on every backend.
async fn flow(args: &Args) -> ExitCode {
    for url in &args.backends {
        let scopes = [
            (args.flow_rate, flow::RateScope::Queue, "rate limit"),
            (args.task_flow_rate, flow::RateScope::Task, "per-task rate limit"),
        ];
        for (_, scope, what) in scopes.into_iter().filter(|(on, _, _)| *on) {
            eprintln!("== {what} on {url}");
            let period = std::time::Duration::from_millis(args.rate_period_ms.max(1));
            match flow::rate(
                url,
                scope,
                args.rate_max,
                period,
                args.rate_periods.max(1),
                args.flow_workers.max(1),
                args.flow_slots.max(1),
                std::time::Duration::from_millis(args.scheduler_poll_ms.max(1)),
            )
            .await
            {
                Ok(r) => println!("{r}\n"),
                Err(e) => {
                    eprintln!("FAILED on {url}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        if args.flow_crash {
            eprintln!("== crashed worker's slot on {url}");
            let timeout = std::time::Duration::from_millis(args.stuck_timeout_ms.max(30));
            match flow::crash_return(url, timeout, args.rounds.max(1)).await {
                Ok(c) => println!("{c}\n"),
                Err(e) => {
                    eprintln!("FAILED on {url}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        if args.flow_cap {
            eprintln!("== concurrency cap cost on {url}");
            match flow::cap_cost(
                url,
                args.jobs,
                args.flow_workers.max(1),
                args.flow_slots.max(1),
                args.cap.max(1),
                args.rounds.max(1),
            )
            .await
            {
                Ok(c) => println!("{c}\n"),
                Err(e) => {
                    eprintln!("FAILED on {url}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    ExitCode::SUCCESS
}

fn parse_shape(shape: &str) -> Option<(usize, usize)> {
    shape
        .split_once('x')
        .and_then(|(w, s)| Some((w.parse::<usize>().ok()?, s.parse::<usize>().ok()?)))
}

/// `--shape`: processing throughput of the given shapes on every backend.
async fn process_only(args: &Args) -> ExitCode {
    for url in &args.backends {
        eprintln!("== processing on {url}");
        for shape in &args.shapes {
            let parsed = shape
                .split_once('x')
                .and_then(|(w, s)| Some((w.parse::<usize>().ok()?, s.parse::<usize>().ok()?)));
            let Some((workers, slots)) = parsed else {
                eprintln!("--shape {shape}: expected WORKERSxSLOTS, e.g. 1x256");
                return ExitCode::FAILURE;
            };
            if args.server_cost {
                match measure::process_with_server_cost(url, args.jobs, workers, slots).await {
                    Ok((r, c)) => println!(
                        "{url} {workers} worker(s) × {slots} slot(s): {r:.0} jobs/s; server CPU {:.2} µs/job, {:.2} commands/job",
                        c.cpu_us_per_job, c.commands_per_job
                    ),
                    Err(e) => {
                        eprintln!("FAILED on {url}: {e}");
                        return ExitCode::FAILURE;
                    }
                }
                continue;
            }
            match measure::process_shape(url, args.jobs, workers, slots).await {
                Ok(r) => println!("{url} {workers} worker(s) × {slots} slot(s): {r:.0} jobs/s"),
                Err(e) => {
                    eprintln!("FAILED on {url}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    ExitCode::SUCCESS
}

/// `--timeouts`: timeout lateness and cancel latency on every backend.
async fn timeouts(args: &Args) -> ExitCode {
    let limit = std::time::Duration::from_millis(args.timeout_ms);
    for url in &args.backends {
        eprintln!("== timeouts and cancellation on {url}");
        match timeouts::timeout_lateness(url, args.timeout_jobs, limit, args.timeout_slots.max(1)).await {
            Ok(l) => println!(
                "{url} timeout lateness ({} ms limit, {} slots): p50 {:.2} ms, p99 {:.2} ms ({} jobs)",
                args.timeout_ms, args.timeout_slots, l.median_ms, l.p99_ms, l.samples
            ),
            Err(e) => {
                eprintln!("FAILED on {url}: {e}");
                return ExitCode::FAILURE;
            }
        }
        match timeouts::cancel_latency(url, args.cancels).await {
            Ok((l, whole)) => println!(
                "{url} cancel latency (running job, through the backend): after the call returns p50 {:.2} ms, p99 {:.2} ms; from the call's start p50 {:.2} ms, p99 {:.2} ms ({} cancels)",
                l.median_ms, l.p99_ms, whole.median_ms, whole.p99_ms, l.samples
            ),
            Err(e) => {
                eprintln!("FAILED on {url}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
