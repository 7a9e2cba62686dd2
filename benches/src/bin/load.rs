//! The end-to-end load harness: enqueue and processing throughput, idle
//! pickup latency (normal and due-now delayed jobs), memory per queued job,
//! a bare tokio mpsc ceiling, Redis's own raw limit (redis-benchmark), and
//! node-resque measured the same way against the same Redis, with ratios.
//! Every processing run checks that each job ran exactly once and the binary
//! exits non-zero otherwise.
//!
//! `cargo run --release -p resq-benches --bin load -- --help`

use clap::Parser;
use resq_benches::{flow, measure, metrics_cost, report};
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
    /// Only measure flow control, and exit: on every backend, the lateness
    /// of job timeouts (`--flow-jobs` hanging jobs, timeout
    /// `--flow-timeout-ms`, one worker with `--flow-slots` slots) and the
    /// latency of cancelling a running job through the backend
    /// (`--flow-cancels` samples).
    #[arg(long)]
    flow: bool,
    /// Hanging jobs for the timeout-lateness figure of `--flow`.
    #[arg(long, default_value_t = 500)]
    flow_jobs: usize,
    /// Their timeout, ms.
    #[arg(long, default_value_t = 100)]
    flow_timeout_ms: u64,
    /// Slots of the worker that runs them.
    #[arg(long, default_value_t = 16)]
    flow_slots: usize,
    /// Running jobs cancelled for the cancel-latency figure of `--flow`.
    #[arg(long, default_value_t = 500)]
    flow_cancels: usize,
    /// Internal: measure the memory backend's footprint in this (fresh) process.
    #[arg(long, hide = true)]
    footprint_memory: Option<usize>,
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
    if args.flow {
        return flow(&args).await;
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

/// `--flow`: timeout lateness and cancel latency on every backend.
async fn flow(args: &Args) -> ExitCode {
    let limit = std::time::Duration::from_millis(args.flow_timeout_ms);
    for url in &args.backends {
        eprintln!("== flow control on {url}");
        match flow::timeout_lateness(url, args.flow_jobs, limit, args.flow_slots.max(1)).await {
            Ok(l) => println!(
                "{url} timeout lateness ({} ms limit, {} slots): p50 {:.2} ms, p99 {:.2} ms ({} jobs)",
                args.flow_timeout_ms, args.flow_slots, l.median_ms, l.p99_ms, l.samples
            ),
            Err(e) => {
                eprintln!("FAILED on {url}: {e}");
                return ExitCode::FAILURE;
            }
        }
        match flow::cancel_latency(url, args.flow_cancels).await {
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
