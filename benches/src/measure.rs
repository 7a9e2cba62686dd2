//! The measurements behind the load harness. Each run is bounded in time
//! and every processing run checks that each job ran exactly once.

use resq_core::task::{JobContext, TaskError, Tasks};
use resq_core::{Backend, NewJob, Queue, Scheduler, SchedulerConfig, Worker, WorkerConfig};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// How long one throughput run may take before the harness gives up.
pub(crate) const RUN_LIMIT: Duration = Duration::from_secs(300);

/// Latency percentiles of a set of samples, in milliseconds.
#[derive(Clone, Debug)]
pub struct Latency {
    /// The median.
    pub median_ms: f64,
    /// The 99th percentile.
    pub p99_ms: f64,
    /// How many samples.
    pub samples: usize,
}

impl Latency {
    pub(crate) fn of(mut samples: Vec<Duration>) -> Latency {
        samples.sort();
        let pick = |q: f64| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
        };
        Latency {
            median_ms: pick(0.5),
            p99_ms: pick(0.99),
            samples: samples.len(),
        }
    }
}

/// Memory use while jobs sit queued.
#[derive(Clone, Debug)]
pub enum Footprint {
    /// In-process queues: bytes per queued job beyond the payload's own bytes.
    PerJob {
        /// Bytes per job, payload excluded.
        overhead_bytes: f64,
        /// The payload's length.
        payload_bytes: usize,
        /// Jobs queued.
        jobs: usize,
    },
    /// Remote queues: the worker process's RSS with few and with many jobs queued.
    Rss {
        /// RSS (KiB) with `small` jobs queued.
        small_kib: u64,
        /// RSS (KiB) with `large` jobs queued.
        large_kib: u64,
        /// Few jobs.
        small: usize,
        /// Many jobs.
        large: usize,
    },
}

/// Every figure for one backend.
#[derive(Clone, Debug)]
pub struct Table {
    /// The backend's URL.
    pub url: String,
    /// Enqueue jobs/s, one at a time.
    pub enqueue_sequential: f64,
    /// Enqueue jobs/s with 50 concurrent producers.
    pub enqueue_concurrent: f64,
    /// Enqueue jobs/s in batches of 1,000.
    pub enqueue_batch: f64,
    /// No-op jobs/s with one worker.
    pub process_one: f64,
    /// No-op jobs/s with the best pool tried, and its shape.
    pub process_pool: (String, f64),
    /// Enqueue-to-start delay into an idle queue.
    pub idle_pickup: Latency,
    /// Due-time-to-start delay of delayed jobs due at once.
    pub delayed_pickup: Latency,
    /// Memory use with jobs queued.
    pub footprint: Footprint,
    /// Sequential claim+complete/s with 1,000 and with `footprint_jobs` queued.
    pub claim_at_depth: (f64, f64, usize),
}

/// A fresh, isolated backend for one run (its own Redis namespace or
/// PostgreSQL schema), cleaned up by [`Fresh::done`].
pub(crate) struct Fresh {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) redis: Option<Arc<resq_redis::RedisBackend>>,
    pub(crate) postgres: Option<Arc<resq_postgres::PostgresBackend>>,
}

impl Fresh {
    /// `url` pointing at this run's own namespace or schema, for a child process.
    pub(crate) fn child_url(&self, url: &str) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        if let Some(r) = &self.redis {
            format!("{url}{sep}namespace={}", r.config().namespace)
        } else if let Some(p) = &self.postgres {
            format!("{url}{sep}schema={}", p.schema())
        } else {
            url.to_owned()
        }
    }

    /// Drops the backend and deletes the namespace or schema it used.
    pub(crate) async fn done(self) {
        drop(self.backend);
        if let Some(r) = self.redis {
            let _ = r.delete_namespace().await;
        }
        if let Some(p) = self.postgres {
            let _ = resq_postgres::testing::drop_test_schema(&p).await;
            let _ = resq_core::Backend::close(&*p).await;
        }
    }
}

/// Opens a fresh, isolated backend for `url`.
pub(crate) async fn fresh(url: &str) -> Result<Fresh, String> {
    if url.starts_with("memory") {
        return Ok(Fresh {
            backend: Arc::new(resq_memory::MemoryBackend::new()),
            redis: None,
            postgres: None,
        });
    }
    if url.starts_with("postgres") {
        // Default durability (synchronous_commit on); a schema of its own, dropped afterwards.
        let config = resq_postgres::PostgresConfig::from_url(url)
            .map_err(|e| e.to_string())?
            .schema(resq_postgres::testing::unique_schema())
            .max_connections(32)
            .migrate_on_connect(true);
        let p = resq_postgres::PostgresBackend::connect_with(config)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(Fresh {
            backend: p.clone(),
            redis: None,
            postgres: Some(p),
        });
    }
    if url.starts_with("redis") {
        let sep = if url.contains('?') { '&' } else { '?' };
        let mut ns = resq_redis::testing::unique_namespace().replace("resq-test", "resq-bench");
        if url.contains("+cluster://") {
            // A cluster's namespace is a hash tag (URL-encoded braces).
            ns = format!("%7B{ns}%7D");
        }
        let r = resq_redis::connect(&format!("{url}{sep}namespace={ns}"))
            .await
            .map_err(|e| e.to_string())?;
        return Ok(Fresh {
            backend: r.clone(),
            redis: Some(r),
            postgres: None,
        });
    }
    Err(format!("the harness does not know the backend {url}"))
}

pub(crate) fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64().max(1e-9)
}

/// Measures every figure for the backend at `url`.
pub async fn backend(url: &str, jobs: usize, samples: usize, footprint_jobs: usize) -> Result<Table, String> {
    let enqueue_sequential = enqueue(url, jobs, 1).await?;
    eprintln!("   enqueue sequential {enqueue_sequential:.0}/s");
    let enqueue_concurrent = enqueue(url, jobs, 50).await?;
    eprintln!("   enqueue 50 producers {enqueue_concurrent:.0}/s");
    let enqueue_batch = enqueue_batched(url, jobs).await?;
    eprintln!("   enqueue batch {enqueue_batch:.0}/s");
    let process_one = process(url, jobs, 1, 1).await?;
    eprintln!("   process 1 worker {process_one:.0}/s");
    let process_pool = process_shapes(url, jobs, ("1 worker".to_owned(), process_one)).await?;
    let idle_pickup = idle_latency(url, samples).await?;
    eprintln!("   idle pickup median {:.2} ms", idle_pickup.median_ms);
    let delayed_pickup = delayed_latency(url, samples).await?;
    eprintln!("   delayed pickup median {:.2} ms", delayed_pickup.median_ms);
    let footprint = footprint(url, footprint_jobs).await?;
    let shallow = claim_speed(url, 1_000).await?;
    let deep = claim_speed(url, footprint_jobs).await?;
    eprintln!("   claim+complete/s at 1,000 queued {shallow:.0}, at {footprint_jobs} queued {deep:.0}");
    Ok(Table {
        claim_at_depth: (shallow, deep, footprint_jobs),
        url: url.to_owned(),
        enqueue_sequential,
        enqueue_concurrent,
        enqueue_batch,
        process_one,
        process_pool,
        idle_pickup,
        delayed_pickup,
        footprint,
    })
}

/// The pool shapes the harness tries: (workers, slots per worker).
const SHAPES: &[(usize, usize)] = &[
    (4, 1),
    (16, 1),
    (64, 1),
    (1, 16),
    (1, 64),
    (2, 64),
    (1, 256),
    (2, 256),
    (4, 256),
    (1, 512),
];

/// Processing throughput of every pool shape in `SHAPES`; returns the best
/// of them and `best` (a figure measured before, such as one worker's).
pub async fn process_shapes(url: &str, jobs: usize, best: (String, f64)) -> Result<(String, f64), String> {
    let mut best = best;
    for &(workers, slots) in SHAPES {
        let r = process(url, jobs, workers, slots).await?;
        let shape = format!("{workers} worker(s) × {slots} slot(s)");
        eprintln!("   process {shape}: {r:.0}/s");
        if r > best.1 {
            best = (shape, r);
        }
    }
    Ok(best)
}

/// Processing throughput of one pool shape: `workers` workers of `slots` slots.
pub async fn process_shape(url: &str, jobs: usize, workers: usize, slots: usize) -> Result<f64, String> {
    process(url, jobs, workers, slots).await
}

/// Enqueue throughput: `producers` tasks each calling `enqueue` one job
/// after another, `jobs` in all, on a fresh store.
pub async fn enqueue(url: &str, jobs: usize, producers: usize) -> Result<f64, String> {
    let f = fresh(url).await?;
    let queue = Queue::new(Arc::clone(&f.backend));
    let per = jobs / producers;
    let start = Instant::now();
    let mut handles = Vec::new();
    for p in 0..producers {
        let q = queue.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per {
                q.enqueue("bench", "noop", (p * per + i,)).await?;
            }
            Ok::<_, resq_core::Error>(())
        }));
    }
    for h in handles {
        h.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    }
    let took = start.elapsed();
    let len = queue.length("bench").await.map_err(|e| e.to_string())?;
    f.done().await;
    if len as usize != per * producers {
        return Err(format!("enqueued {} jobs but {len} are queued", per * producers));
    }
    Ok(rate(per * producers, took))
}

/// The Redis client's own floor for one-at-a-time calls: `n` bare `PING`s
/// one after another from one task, through the connection type the
/// Redis backend uses (redis-rs's `ConnectionManager`), per second.
pub async fn ping_sequential(url: &str, n: usize) -> Result<f64, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = redis::aio::ConnectionManager::new(client)
        .await
        .map_err(|e| e.to_string())?;
    let task = tokio::spawn(async move {
        let start = Instant::now();
        for _ in 0..n {
            let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        }
        Ok::<_, redis::RedisError>(start.elapsed())
    });
    let took = task.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    Ok(rate(n, took))
}

/// [`enqueue`] with one producer on a current-thread tokio runtime of its
/// own (on a thread of its own): no hand-over between runtime threads per
/// call, like a single-threaded client's event loop.
pub fn enqueue_current_thread(url: &str, jobs: usize) -> Result<f64, String> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(enqueue(&url, jobs, 1))
    })
    .join()
    .map_err(|_| "the current-thread enqueue run panicked".to_owned())?
}

/// Batch enqueue throughput: `jobs` jobs through `enqueue_batch`, 1,000 a
/// call, on a fresh store.
pub async fn enqueue_batched(url: &str, jobs: usize) -> Result<f64, String> {
    let f = fresh(url).await?;
    let queue = Queue::new(Arc::clone(&f.backend));
    let batch: Vec<NewJob> = (0..jobs)
        .map(|i| NewJob::new("bench", "noop", (i,)).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    for chunk in batch.chunks(1000) {
        queue.enqueue_batch(chunk.to_vec()).await.map_err(|e| e.to_string())?;
    }
    let took = start.elapsed();
    let len = queue.length("bench").await.map_err(|e| e.to_string())?;
    f.done().await;
    if len as usize != jobs {
        return Err(format!("enqueued {jobs} jobs but {len} are queued"));
    }
    Ok(rate(jobs, took))
}

/// Queues `jobs` no-op jobs numbered 0.. on `bench`, in batches of 5,000.
pub(crate) async fn fill(queue: &Queue, jobs: usize) -> Result<(), String> {
    let mut n = 0;
    while n < jobs {
        let batch: Vec<NewJob> = (n..(n + 5000).min(jobs))
            .map(|i| NewJob::new("bench", "noop", (i,)).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        n += batch.len();
        queue.enqueue_batch(batch).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A no-op task that marks each job id it runs.
pub(crate) struct Ledger {
    pub(crate) runs: Vec<AtomicU8>,
    pub(crate) done: AtomicUsize,
    pub(crate) all_done: Notify,
}

pub(crate) fn ledger_tasks(ledger: &Arc<Ledger>) -> Result<Arc<Tasks>, String> {
    let mut tasks = Tasks::new();
    let l = Arc::clone(ledger);
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
    Ok(Arc::new(tasks))
}

pub(crate) fn quick_worker(queue: &str) -> WorkerConfig {
    WorkerConfig {
        poll_interval: Duration::from_millis(500),
        ping_interval: Duration::from_secs(5),
        shutdown_timeout: Duration::from_secs(10),
        ..WorkerConfig::for_queues([queue])
    }
}

async fn process(url: &str, jobs: usize, workers: usize, slots: usize) -> Result<f64, String> {
    process_observed(url, jobs, workers, slots, None, false).await
}

/// [`process`], with `metrics` (when given) as every worker's observer, or
/// reading every worker's events with `by_events`.
pub(crate) async fn process_observed(
    url: &str,
    jobs: usize,
    workers: usize,
    slots: usize,
    metrics: Option<&resq_metrics::Metrics>,
    by_events: bool,
) -> Result<f64, String> {
    process_inner(url, jobs, workers, slots, metrics, by_events, false)
        .await
        .map(|(rate, _)| rate)
}

/// What a Redis server spent on the processing alone (read with `INFO`
/// after the queue is filled and after the last job), per job.
#[derive(Clone, Copy, Debug)]
pub struct ServerCost {
    /// Server CPU (`used_cpu_user` + `used_cpu_sys`), microseconds per job.
    pub cpu_us_per_job: f64,
    /// Commands (`INFO commandstats` calls, scripts' inner commands
    /// included), per job.
    pub commands_per_job: f64,
}

/// A Redis server's CPU seconds and command count so far.
async fn server_counters(url: &str) -> Result<(f64, u64), String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let cpu: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let field = |name: &str| -> f64 {
        cpu.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let seconds = field("used_cpu_user") + field("used_cpu_sys");
    let commands = crate::per_job::redis_commands(url)
        .await
        .ok_or_else(|| format!("cannot read INFO commandstats on {url}"))?;
    Ok((seconds, commands))
}

/// Processing throughput of one pool shape on a single Redis server, and
/// what the server spent per job on the processing alone. The server's
/// counters see every client: use a private server.
pub async fn process_with_server_cost(
    url: &str,
    jobs: usize,
    workers: usize,
    slots: usize,
) -> Result<(f64, ServerCost), String> {
    let (rate, cost) = process_inner(url, jobs, workers, slots, None, false, true).await?;
    let cost = cost.ok_or_else(|| format!("{url} is not a single Redis server"))?;
    Ok((rate, cost))
}

async fn process_inner(
    url: &str,
    jobs: usize,
    workers: usize,
    slots: usize,
    metrics: Option<&resq_metrics::Metrics>,
    by_events: bool,
    server_cost: bool,
) -> Result<(f64, Option<ServerCost>), String> {
    let f = fresh(url).await?;
    let queue = Queue::new(Arc::clone(&f.backend));
    fill(&queue, jobs).await?;
    let counting = server_cost && url.starts_with("redis://");
    let before = match counting {
        true => Some(server_counters(url).await?),
        false => None,
    };
    let ledger = Arc::new(Ledger {
        runs: (0..jobs).map(|_| AtomicU8::new(0)).collect(),
        done: AtomicUsize::new(0),
        all_done: Notify::new(),
    });
    let tasks = ledger_tasks(&ledger)?;
    let stop = CancellationToken::new();
    let start = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let mut config = quick_worker("bench");
            config.concurrency = slots;
            if !by_events {
                config.observer = metrics.map(|m| m.observer());
            }
            let w = Worker::new(Arc::clone(&f.backend), Arc::clone(&tasks), config);
            if let (Some(m), true) = (metrics, by_events) {
                // Ends when the worker (its event sender) is dropped.
                m.observe(w.subscribe());
            }
            tokio::spawn({
                let t = stop.clone();
                async move { w.run_until(t).await }
            })
        })
        .collect();
    let finished = tokio::time::timeout(RUN_LIMIT, ledger.all_done.notified()).await;
    let took = start.elapsed();
    // Read before the workers stop (their unregistration is not processing).
    let after = match counting {
        true => Some(server_counters(url).await?),
        false => None,
    };
    stop.cancel();
    for h in handles {
        h.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    }
    f.done().await;
    if finished.is_err() {
        return Err(format!(
            "{workers} workers ran {} of {jobs} jobs within {RUN_LIMIT:?}",
            ledger.done.load(Ordering::Acquire)
        ));
    }
    check_exactly_once(&ledger)?;
    let cost = before.zip(after).map(|((cpu0, cmd0), (cpu1, cmd1))| ServerCost {
        cpu_us_per_job: (cpu1 - cpu0) * 1e6 / jobs as f64,
        commands_per_job: cmd1.saturating_sub(cmd0) as f64 / jobs as f64,
    });
    Ok((rate(jobs, took), cost))
}

pub(crate) fn check_exactly_once(ledger: &Ledger) -> Result<(), String> {
    let lost = ledger.runs.iter().filter(|r| r.load(Ordering::Acquire) == 0).count();
    let twice = ledger.runs.iter().filter(|r| r.load(Ordering::Acquire) > 1).count();
    if lost > 0 || twice > 0 {
        return Err(format!("{lost} jobs lost and {twice} run more than once"));
    }
    Ok(())
}

async fn stamp_worker(
    backend: &Arc<dyn Backend>,
    queue: &str,
) -> Result<
    (
        mpsc::UnboundedReceiver<(usize, Instant, i64)>,
        CancellationToken,
        tokio::task::JoinHandle<resq_core::Result<()>>,
    ),
    String,
> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut tasks = Tasks::new();
    tasks
        .register_fn("stamp", move |(i,): (usize,), _ctx: JobContext| {
            let at = Instant::now();
            let wall_us = epoch_us();
            let tx = tx.clone();
            async move {
                let _ = tx.send((i, at, wall_us));
                Ok::<_, TaskError>(())
            }
        })
        .map_err(|e| e.to_string())?;
    let stop = CancellationToken::new();
    let mut config = quick_worker(queue);
    config.poll_interval = Duration::from_secs(5);
    let w = Worker::new(Arc::clone(backend), Arc::new(tasks), config);
    let handle = tokio::spawn({
        let t = stop.clone();
        async move { w.run_until(t).await }
    });
    Ok((rx, stop, handle))
}

/// Enqueue-to-start delay of jobs pushed to an idle worker (the full run's
/// idle pickup), for comparison with [`delayed_pickup`] in the same run.
pub async fn idle_pickup(url: &str, samples: usize) -> Result<Latency, String> {
    idle_latency(url, samples).await
}

async fn idle_latency(url: &str, samples: usize) -> Result<Latency, String> {
    let f = fresh(url).await?;
    let queue = Queue::new(Arc::clone(&f.backend));
    let (mut rx, stop, handle) = stamp_worker(&f.backend, "idle").await?;
    // Let the worker register and go idle.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples {
        let t0 = Instant::now();
        queue.enqueue("idle", "stamp", (i,)).await.map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some((j, at, _))) if j == i => out.push(at.saturating_duration_since(t0)),
            other => return Err(format!("idle pickup sample {i}: unexpected {other:?}")),
        }
        // Let the worker go back to waiting before the next sample.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.cancel();
    handle.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    f.done().await;
    Ok(Latency::of(out))
}

async fn delayed_latency(url: &str, samples: usize) -> Result<Latency, String> {
    Ok(delayed_pickup(url, samples, Duration::ZERO, DELAYED_POLL)
        .await?
        .latency)
}

/// The scheduler's poll interval in the delayed pickup figures unless
/// told otherwise: what the full run has always used.
pub const DELAYED_POLL: Duration = Duration::from_millis(250);

/// The wall clock, microseconds since the Unix epoch.
fn epoch_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// What [`delayed_pickup`] measured.
#[derive(Clone, Debug)]
pub struct DelayedPickup {
    /// From each job's due time to its start.
    pub latency: Latency,
    /// The latest start after the due time, ms.
    pub max_ms: f64,
    /// From each job's due time to the scheduler's `TransferredJob` event
    /// for it (the promotion's commit, as the scheduler saw it), for the
    /// jobs whose event arrived (events are dropped when the receiver lags).
    pub promoted: Latency,
    /// From that event to the job's start.
    pub after_promotion: Latency,
    /// How many jobs started within each bound of [`DISTRIBUTION_MS`] after
    /// their due time (cumulative), and how many later than the last bound.
    pub distribution: Vec<usize>,
}

/// The bounds, ms after the due time, of [`DelayedPickup::distribution`].
pub const DISTRIBUTION_MS: &[u64] = &[1, 2, 5, 10, 20, 50, 100];

/// The argument `i` of a `stamp(i)` payload.
fn stamp_arg(payload: &str) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    usize::try_from(v.get("args")?.get(0)?.as_u64()?).ok()
}

/// Delayed jobs due `delay` after they are scheduled (one scheduled every
/// 10 ms, so that there is no backlog) with a running scheduler polling
/// every `poll` and an idle worker: the time from each job's
/// due time (the epoch ms passed to `enqueue_at`) to the start of its task,
/// both on the wall clock. A job that starts before its due time fails the
/// run.
pub async fn delayed_pickup(
    url: &str,
    samples: usize,
    delay: Duration,
    poll: Duration,
) -> Result<DelayedPickup, String> {
    let f = fresh(url).await?;
    let queue = Queue::new(Arc::clone(&f.backend));
    let (mut rx, stop, handle) = stamp_worker(&f.backend, "delayed").await?;
    let config = SchedulerConfig {
        poll_interval: poll,
        ..SchedulerConfig::default()
    };
    let scheduler = Arc::new(Scheduler::new(Arc::clone(&f.backend), config).map_err(|e| e.to_string())?);
    // The wall clock when the scheduler reported each job promoted.
    let promoted_at = Arc::new(std::sync::Mutex::new(vec![None::<i64>; samples]));
    let events = tokio::spawn({
        let mut rx = scheduler.subscribe();
        let at = Arc::clone(&promoted_at);
        async move {
            loop {
                match rx.recv().await {
                    Ok(resq_core::SchedulerEvent::TransferredJob { payload, .. }) => {
                        let now = epoch_us();
                        if let (Some(i), Ok(mut at)) = (stamp_arg(&payload), at.lock()) {
                            if let Some(slot) = at.get_mut(i) {
                                *slot = Some(now);
                            }
                        }
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    });
    let s_task = tokio::spawn({
        let (s, t) = (Arc::clone(&scheduler), stop.clone());
        async move { s.run_until(t).await }
    });
    // Let the worker register and the scheduler take the lead.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let delay_ms = i64::try_from(delay.as_millis()).map_err(|e| e.to_string())?;
    let mut dues = Vec::with_capacity(samples);
    for i in 0..samples {
        let due = resq_core::time::now_ms() + delay_ms;
        dues.push(due);
        queue
            .enqueue_at(due, "delayed", "stamp", (i,))
            .await
            .map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut out = vec![Duration::ZERO; samples];
    let mut started = vec![0i64; samples];
    let mut early = Vec::new();
    for _ in 0..samples {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some((i, _, wall_us))) if i < samples => {
                started[i] = wall_us;
                let late_us = wall_us - dues[i] * 1000;
                match u64::try_from(late_us) {
                    Ok(us) => out[i] = Duration::from_micros(us),
                    Err(_) => early.push((i, -late_us)),
                }
            }
            other => return Err(format!("delayed pickup: unexpected {other:?}")),
        }
    }
    stop.cancel();
    handle.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    s_task.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    drop(scheduler);
    events.abort();
    let promoted_at = promoted_at.lock().map_err(|e| e.to_string())?.clone();
    let (mut promoted, mut after) = (Vec::new(), Vec::new());
    for (i, at) in promoted_at.iter().enumerate() {
        if let Some(at) = *at {
            let us = |d: i64| Duration::from_micros(u64::try_from(d).unwrap_or(0));
            promoted.push(us(at - dues[i] * 1000));
            after.push(us(started[i] - at));
        }
    }
    let distribution = DISTRIBUTION_MS
        .iter()
        .map(|ms| out.iter().filter(|d| **d <= Duration::from_millis(*ms)).count())
        .chain(std::iter::once(
            out.iter()
                .filter(|d| **d > Duration::from_millis(DISTRIBUTION_MS.last().copied().unwrap_or(0)))
                .count(),
        ))
        .collect();
    f.done().await;
    if !early.is_empty() {
        return Err(format!(
            "{} delayed jobs started early (job, µs early): {early:?}",
            early.len()
        ));
    }
    let max_ms = out.iter().max().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    Ok(DelayedPickup {
        latency: Latency::of(out),
        max_ms,
        promoted: Latency::of(promoted),
        after_promotion: Latency::of(after),
        distribution,
    })
}

/// Queues `queued` jobs, then times 1,000 sequential claim+complete pairs.
async fn claim_speed(url: &str, queued: usize) -> Result<f64, String> {
    let f = fresh(url).await?;
    let queue = Queue::new(Arc::clone(&f.backend));
    fill(&queue, queued).await?;
    let worker = resq_core::WorkerId::new("bench:claim", &["bench".to_owned()]);
    let queues = vec!["bench".to_owned()];
    let rounds = 1_000.min(queued);
    let start = Instant::now();
    for _ in 0..rounds {
        let got = f
            .backend
            .claim(&worker, &queues, "now")
            .await
            .map_err(|e| e.to_string())?;
        if got.is_none() {
            return Err("a queued job could not be claimed".into());
        }
        f.backend
            .complete(&worker, resq_core::Outcome::Success)
            .await
            .map_err(|e| e.to_string())?;
    }
    let took = start.elapsed();
    f.done().await;
    Ok(rate(rounds, took))
}

/// This process's resident set size, KiB (Linux).
pub fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// A KiB figure from `/proc/self/status` (Linux), 0 where there is none.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn footprint(url: &str, jobs: usize) -> Result<Footprint, String> {
    if url.starts_with("memory") {
        // In a fresh process, so the figure is not blurred by this one's heap.
        let out = child(&["--footprint-memory", &jobs.to_string()])?;
        let overhead_bytes: f64 = out
            .trim()
            .parse()
            .map_err(|_| format!("footprint child said {out:?}"))?;
        let payload = resq_core::job::encode_payload("bench", "noop", &[serde_json::json!(0)]);
        return Ok(Footprint::PerJob {
            overhead_bytes,
            payload_bytes: payload.len(),
            jobs,
        });
    }
    let small = 1_000;
    let small_kib = rss_while_working(url, small).await?;
    let large_kib = rss_while_working(url, jobs).await?;
    Ok(Footprint::Rss {
        small_kib,
        large_kib,
        small,
        large: jobs,
    })
}

/// Runs this binary again with `args` and returns what it prints.
fn child(args: &[&str]) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The child side of the memory footprint: bytes per queued no-op job
/// beyond its payload, from the RSS growth of a fresh process.
pub async fn footprint_memory_child(jobs: usize) -> Result<f64, String> {
    let payload = resq_core::job::encode_payload("bench", "noop", &[serde_json::json!(0)]);
    let backend: Arc<dyn Backend> = Arc::new(resq_memory::MemoryBackend::new());
    let queue = Queue::new(Arc::clone(&backend));
    // Warm the allocator and the queue's structures with one small batch.
    queue
        .enqueue_batch(vec![NewJob::new("bench", "noop", (0,)).map_err(|e| e.to_string())?])
        .await
        .map_err(|e| e.to_string())?;
    let before = rss_kib();
    let batch_size = 1000;
    let mut n = 0;
    while n < jobs {
        let batch: Vec<resq_core::QueuedJob> = (n..(n + batch_size).min(jobs))
            .map(|_| resq_core::QueuedJob {
                queue: "bench".to_owned(),
                payload: payload.clone(),
            })
            .collect();
        n += batch.len();
        backend.push_batch(&batch).await.map_err(|e| e.to_string())?;
    }
    let after = rss_kib();
    let len = backend.queue_len("bench").await.map_err(|e| e.to_string())? as usize;
    if len != jobs + 1 {
        return Err(format!("{len} jobs queued, expected {}", jobs + 1));
    }
    Ok((after.saturating_sub(before) * 1024) as f64 / jobs as f64 - payload.len() as f64)
}

/// The child side of the remote footprint: a worker that works the queue at
/// `url` (namespace or schema included) for two seconds, then its peak RSS (KiB).
pub async fn rss_worker_child(url: &str) -> Result<u64, String> {
    let backend: Arc<dyn Backend> = if url.starts_with("postgres") {
        resq_postgres::connect(url).await.map_err(|e| e.to_string())?
    } else {
        resq_redis::connect(url).await.map_err(|e| e.to_string())?
    };
    let mut tasks = Tasks::new();
    tasks
        .register_fn(
            "noop",
            |_: (usize,), _ctx: JobContext| async move { Ok::<_, TaskError>(()) },
        )
        .map_err(|e| e.to_string())?;
    let stop = CancellationToken::new();
    let w = Worker::new(Arc::clone(&backend), Arc::new(tasks), quick_worker("bench"));
    let handle = tokio::spawn({
        let t = stop.clone();
        async move { w.run_until(t).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    handle.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    Ok(status_kib("VmHWM:"))
}

/// Peak RSS (KiB) of a separate worker process working a queue that holds `queued` jobs.
async fn rss_while_working(url: &str, queued: usize) -> Result<u64, String> {
    let f = fresh(url).await?;
    let queue = Queue::new(Arc::clone(&f.backend));
    fill(&queue, queued).await?;
    let child_url = f.child_url(url);
    let out = child(&["--rss-worker", &child_url]);
    f.done().await;
    let out = out?;
    out.trim().parse().map_err(|_| format!("rss child said {out:?}"))
}

/// A bare tokio mpsc producer/consumer loop: the ceiling for any in-process queue.
pub async fn mpsc_ceiling(messages: usize) -> f64 {
    let (tx, mut rx) = mpsc::channel::<usize>(1024);
    let start = Instant::now();
    let producer = tokio::spawn(async move {
        for i in 0..messages {
            if tx.send(i).await.is_err() {
                break;
            }
        }
    });
    let mut got = 0;
    while rx.recv().await.is_some() {
        got += 1;
    }
    let _ = producer.await;
    rate(got, start.elapsed())
}

/// Redis's own limits for list pushes and pops, from `redis-benchmark`.
#[derive(Clone, Debug)]
pub struct RawLimits {
    /// (label, requests/s) rows.
    pub rows: Vec<(String, f64)>,
}

fn host_port(url: &str) -> (String, String) {
    let rest = url.split("://").nth(1).unwrap_or("127.0.0.1:6379");
    let hostport = rest.split(['/', '?']).next().unwrap_or("127.0.0.1:6379");
    let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
    match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.to_owned()),
        None => (hostport.to_owned(), "6379".to_owned()),
    }
}

/// Runs `redis-benchmark` on a key of the harness's own (deleted afterwards).
pub fn redis_benchmark(url: &str) -> Option<RawLimits> {
    let (host, port) = host_port(url);
    let key = format!("resq-bench:{}:raw", std::process::id());
    let mut rows = Vec::new();
    let runs: [(&str, &str, &[&str]); 5] = [
        ("LPUSH, 1 client", "LPUSH", &["-c", "1"]),
        ("LPUSH, 50 clients", "LPUSH", &["-c", "50"]),
        ("LPUSH, 50 clients, pipeline 100", "LPUSH", &["-c", "50", "-P", "100"]),
        ("LPOP, 1 client", "LPOP", &["-c", "1"]),
        ("LPOP, 50 clients", "LPOP", &["-c", "50"]),
    ];
    for (label, cmd, extra) in runs {
        let n = if extra.contains(&"-P") { "1000000" } else { "100000" };
        let mut c = std::process::Command::new("redis-benchmark");
        c.args(["-h", &host, "-p", &port, "-n", n, "-q"])
            .args(extra)
            .arg(cmd)
            .arg(&key);
        if cmd == "LPUSH" {
            c.arg("x");
        }
        let out = c.output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "LPUSH resq-bench:1:raw x: 12345.68 requests per second, p50=…"
        let rps = text
            .split("requests per second")
            .next()
            .and_then(|s| s.rsplit(':').next())
            .and_then(|s| s.trim().parse::<f64>().ok())?;
        rows.push((label.to_owned(), rps));
    }
    let _ = std::process::Command::new("redis-cli")
        .args(["-h", &host, "-p", &port, "DEL", &key])
        .output();
    Some(RawLimits { rows })
}

/// graphile-worker's figures, measured by `interop/graphile-bench.js` against
/// the same PostgreSQL server (in a database of its own, dropped afterwards).
pub fn graphile_worker(url: &str, jobs: usize) -> Option<NodeFigures> {
    let rest = url.split("://").nth(1).unwrap_or("");
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (u.split(':').next().unwrap_or("postgres").to_owned(), h.to_owned()),
        None => ("postgres".to_owned(), authority.to_owned()),
    };
    let (host, port) = hostport
        .rsplit_once(':')
        .map_or((hostport.clone(), "5432".to_owned()), |(h, p)| {
            (h.to_owned(), p.to_owned())
        });
    run_node_script(
        "graphile-bench.js",
        &[
            ("PGHOST", host),
            ("PGPORT", port),
            ("PGUSER", user),
            ("JOBS", jobs.to_string()),
        ],
    )
}

/// Runs a script of `interop/` (installing its pinned packages first if
/// needed) and reads the JSON object of figures it prints.
fn run_node_script(name: &str, env: &[(&str, String)]) -> Option<NodeFigures> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../interop");
    let script = dir.join(name);
    if !script.exists() {
        eprintln!("   {name}: {} is missing", script.display());
        return None;
    }
    let installed = ["node-resque", "graphile-worker", "bullmq"]
        .iter()
        .all(|p| dir.join("node_modules").join(p).exists());
    if !installed {
        let ok = std::process::Command::new("npm")
            .arg("ci")
            .current_dir(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("   {name}: npm ci failed");
            return None;
        }
    }
    let mut cmd = std::process::Command::new("node");
    cmd.arg(&script);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().ok()?;
    if !out.status.success() {
        eprintln!("   {name} failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let rows = v
        .as_object()?
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
        .collect();
    Some(NodeFigures { rows })
}

/// node-resque's figures, measured by `interop/bench.js` the same way.
#[derive(Clone, Debug)]
pub struct NodeFigures {
    /// (label, jobs/s) rows, keyed like resq's rows.
    pub rows: Vec<(String, f64)>,
}

/// Runs the pinned node-resque benchmark script against the same Redis.
pub fn node_resque(url: &str, jobs: usize) -> Option<NodeFigures> {
    let (host, port) = host_port(url);
    run_node_script(
        "bench.js",
        &[
            ("REDIS_HOST", host),
            ("REDIS_PORT", port),
            ("NAMESPACE", format!("resq-bench:{}:node", std::process::id())),
            ("JOBS", jobs.to_string()),
        ],
    )
}

/// BullMQ's figures, measured by `interop/bullmq-bench.js` the same way,
/// against the same Redis (under a key prefix of its own).
pub fn bullmq(url: &str, jobs: usize) -> Option<NodeFigures> {
    let (host, port) = host_port(url);
    run_node_script(
        "bullmq-bench.js",
        &[
            ("REDIS_HOST", host),
            ("REDIS_PORT", port),
            ("PREFIX", format!("resq-bench-{}-bullmq", std::process::id())),
            ("JOBS", jobs.to_string()),
        ],
    )
}
