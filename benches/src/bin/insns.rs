//! A processing run small and plain enough to count its CPU instructions
//! under `valgrind --tool=callgrind` (hardware counters are not available
//! on every machine): queue `--jobs` no-op jobs, then work them with
//! `--workers` workers of `--slots` slots each, on one runtime, and exit.
//! With `--fill-only` it stops after queueing, so that two runs (with and
//! without it, at two job counts) give the instructions of processing one
//! job by difference, free of set-up. See BENCHMARKS.md, "Throughput
//! against 88d549f, by instruction count".
//!
//! It uses only the API that commit 88d549f already had, so the same file
//! builds there for comparison.
//!
//! `valgrind --tool=callgrind target/release/insns --backend memory:// --slots 256 --jobs 20000`

use clap::Parser;
use resq_core::task::{JobContext, TaskError, Tasks};
use resq_core::{Backend, NewJob, Queue, Worker, WorkerConfig};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(about = "one processing run, for instruction counts")]
struct Args {
    /// The backend: memory:// or redis://HOST:PORT (a namespace of its own, deleted afterwards).
    #[arg(long, default_value = "memory://")]
    backend: String,
    /// Workers.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Slots per worker.
    #[arg(long, default_value_t = 256)]
    slots: usize,
    /// Jobs to queue and process.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Queue the jobs, then stop without processing them.
    #[arg(long)]
    fill_only: bool,
    /// Runtime threads (1: a current-thread runtime).
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

/// Which job ids ran, and how often.
struct Ledger {
    runs: Vec<AtomicU8>,
    done: AtomicUsize,
    all_done: Notify,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("insns: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn open(url: &str) -> Result<(Arc<dyn Backend>, Option<Arc<resq_redis::RedisBackend>>), String> {
    if url.starts_with("memory") {
        return Ok((Arc::new(resq_memory::MemoryBackend::new()), None));
    }
    if url.starts_with("redis") {
        let sep = if url.contains('?') { '&' } else { '?' };
        let ns = resq_redis::testing::unique_namespace().replace("resq-test", "resq-insns");
        let r = resq_redis::connect(&format!("{url}{sep}namespace={ns}"))
            .await
            .map_err(|e| e.to_string())?;
        return Ok((r.clone(), Some(r)));
    }
    Err(format!("unknown backend {url}"))
}

async fn run(args: &Args) -> Result<String, String> {
    let (backend, redis) = open(&args.backend).await?;
    let outcome = work(args, &backend).await;
    drop(backend);
    if let Some(r) = redis {
        let _ = r.delete_namespace().await;
    }
    outcome
}

async fn work(args: &Args, backend: &Arc<dyn Backend>) -> Result<String, String> {
    let queue = Queue::new(Arc::clone(backend));
    let mut n = 0;
    while n < args.jobs {
        let batch: Vec<NewJob> = (n..(n + 5000).min(args.jobs))
            .map(|i| NewJob::new("bench", "noop", (i,)).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        n += batch.len();
        queue.enqueue_batch(batch).await.map_err(|e| e.to_string())?;
    }
    if args.fill_only {
        return Ok(format!("queued {} jobs", args.jobs));
    }
    let ledger = Arc::new(Ledger {
        runs: (0..args.jobs).map(|_| AtomicU8::new(0)).collect(),
        done: AtomicUsize::new(0),
        all_done: Notify::new(),
    });
    let mut tasks = Tasks::new();
    let l = Arc::clone(&ledger);
    tasks
        .register_fn("noop", move |(i,): (usize,), _ctx: JobContext| {
            let l = Arc::clone(&l);
            async move {
                if let Some(slot) = l.runs.get(i) {
                    slot.fetch_add(1, Ordering::Relaxed);
                }
                if l.done.fetch_add(1, Ordering::AcqRel) + 1 == l.runs.len() {
                    l.all_done.notify_one();
                }
                Ok::<_, TaskError>(())
            }
        })
        .map_err(|e| e.to_string())?;
    let tasks = Arc::new(tasks);
    let stop = CancellationToken::new();
    let start = Instant::now();
    let handles: Vec<_> = (0..args.workers)
        .map(|_| {
            let config = WorkerConfig {
                poll_interval: Duration::from_millis(500),
                ping_interval: Duration::from_secs(5),
                shutdown_timeout: Duration::from_secs(10),
                concurrency: args.slots,
                ..WorkerConfig::for_queues(["bench"])
            };
            let w = Worker::new(Arc::clone(backend), Arc::clone(&tasks), config);
            let t = stop.clone();
            tokio::spawn(async move { w.run_until(t).await })
        })
        .collect();
    let finished = tokio::time::timeout(Duration::from_secs(600), ledger.all_done.notified()).await;
    let took = start.elapsed();
    stop.cancel();
    for h in handles {
        h.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    }
    if finished.is_err() {
        return Err(format!(
            "ran {} of {} jobs",
            ledger.done.load(Ordering::Acquire),
            args.jobs
        ));
    }
    let lost = ledger.runs.iter().filter(|r| r.load(Ordering::Acquire) == 0).count();
    let twice = ledger.runs.iter().filter(|r| r.load(Ordering::Acquire) > 1).count();
    if lost > 0 || twice > 0 {
        return Err(format!("{lost} jobs lost and {twice} run more than once"));
    }
    Ok(format!(
        "processed {} jobs in {:.3} s: {:.0} jobs/s",
        args.jobs,
        took.as_secs_f64(),
        args.jobs as f64 / took.as_secs_f64().max(1e-9)
    ))
}
