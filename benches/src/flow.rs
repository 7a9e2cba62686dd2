//! Flow control under load (issue #14 part B), for `load --flow-rate`,
//! `load --task-flow-rate` (the same limit declared on the task instead of
//! the queue) and `load --flow-cap`.
//!
//! Every run uses `workers` separate [`Worker`]s, each with its own backend
//! handle (its own Redis connection or PostgreSQL pool on the same
//! namespace or schema), as separate processes would; the memory backend
//! lives in one process, so its workers share the one store.

use crate::measure::{fill, fresh, Fresh};
use crate::metrics_cost::Spread;
use resq_core::task::{JobContext, TaskDef, TaskError, Tasks};
use resq_core::{Backend, JobEnd, JobObserver, JobOutcome, Queue, QueueLimits, Worker, WorkerConfig};
use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long one run may take before the harness gives up.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// A backend handle of its own on `f`'s namespace or schema.
async fn own_handle(f: &Fresh, url: &str) -> Result<Arc<dyn Backend>, String> {
    let child = f.child_url(url);
    if f.redis.is_some() {
        let r = resq_redis::connect(&child).await.map_err(|e| e.to_string())?;
        return Ok(r);
    }
    if f.postgres.is_some() {
        let config = resq_postgres::PostgresConfig::from_url(&child)
            .map_err(|e| e.to_string())?
            .max_connections(4);
        let p = resq_postgres::PostgresBackend::connect_with(config)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(p);
    }
    Ok(Arc::clone(&f.backend))
}

/// What the `noop(i)` task saw: how often each job ran and when each
/// started.
struct Ledger {
    runs: Vec<AtomicU8>,
    done: AtomicUsize,
    starts: Mutex<Vec<Instant>>,
}

impl Ledger {
    fn new(jobs: usize) -> Arc<Ledger> {
        Arc::new(Ledger {
            runs: (0..jobs).map(|_| AtomicU8::new(0)).collect(),
            done: AtomicUsize::new(0),
            starts: Mutex::new(Vec::with_capacity(jobs)),
        })
    }

    fn tasks(self: &Arc<Self>, stamp: bool) -> Result<Arc<Tasks>, String> {
        self.limited_tasks(stamp, None)
    }

    /// The `noop` task, with `rate` (starts per period) declared on it.
    fn limited_tasks(self: &Arc<Self>, stamp: bool, rate: Option<(u32, Duration)>) -> Result<Arc<Tasks>, String> {
        let mut tasks = Tasks::new();
        let l = Arc::clone(self);
        let def = TaskDef::from_fn("noop", move |(i,): (usize,), _ctx: JobContext| {
            let at = Instant::now();
            let l = Arc::clone(&l);
            async move {
                if stamp {
                    if let Ok(mut s) = l.starts.lock() {
                        s.push(at);
                    }
                }
                if let Some(slot) = l.runs.get(i) {
                    slot.fetch_add(1, Ordering::Relaxed);
                }
                l.done.fetch_add(1, Ordering::AcqRel);
                Ok::<_, TaskError>(())
            }
        });
        let def = match rate {
            Some((max, period)) => def.rate_limit(max, period),
            None => def,
        };
        tasks.define(def).map_err(|e| e.to_string())?;
        Ok(Arc::new(tasks))
    }

    fn ran_twice(&self) -> usize {
        self.runs.iter().filter(|r| r.load(Ordering::Acquire) > 1).count()
    }

    fn ran(&self) -> usize {
        self.runs.iter().filter(|r| r.load(Ordering::Acquire) > 0).count()
    }
}

/// Starts `workers` workers of `slots` slots on handles of their own.
async fn start_workers(
    f: &Fresh,
    url: &str,
    tasks: &Arc<Tasks>,
    workers: usize,
    slots: usize,
    stop: &CancellationToken,
    observer: Option<Arc<dyn JobObserver>>,
) -> Result<
    (
        Vec<Arc<dyn Backend>>,
        Vec<tokio::task::JoinHandle<resq_core::Result<()>>>,
    ),
    String,
> {
    let mut handles = Vec::with_capacity(workers);
    let mut running = Vec::with_capacity(workers);
    for _ in 0..workers {
        let backend = own_handle(f, url).await?;
        let config = WorkerConfig {
            poll_interval: Duration::from_millis(500),
            shutdown_timeout: Duration::from_secs(10),
            concurrency: slots,
            observer: observer.clone(),
            ..WorkerConfig::for_queues(["bench"])
        };
        let w = Worker::new(Arc::clone(&backend), Arc::clone(tasks), config);
        let t = stop.clone();
        running.push(tokio::spawn(async move { w.run_until(t).await }));
        handles.push(backend);
    }
    Ok((handles, running))
}

async fn stop_workers(
    stop: CancellationToken,
    handles: Vec<Arc<dyn Backend>>,
    running: Vec<tokio::task::JoinHandle<resq_core::Result<()>>>,
    f: &Fresh,
) -> Result<(), String> {
    stop.cancel();
    for r in running {
        r.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    }
    for h in handles {
        if !Arc::ptr_eq(&h, &f.backend) {
            let _ = h.close().await;
        }
    }
    Ok(())
}

/// The most starts in any window of `window` (sorted `starts`).
pub fn most_in_window(starts: &[Instant], window: Duration) -> usize {
    let mut most = 0;
    let mut lo = 0;
    for hi in 0..starts.len() {
        while starts[hi].duration_since(starts[lo]) >= window {
            lo += 1;
        }
        most = most.max(hi - lo + 1);
    }
    most
}

/// Reads a rate-limited queue's start log where the backend keeps it, on
/// the clock it enforces the limit with (the server's): the Redis sorted
/// set `<ns>:resq:rate:bench` (µs) or the PostgreSQL row's `starts` array
/// (ms). Each start stays in the log for at least one period, so reading
/// it every quarter period sees every start.
enum ServerLog {
    Redis(redis::aio::MultiplexedConnection, String),
    Postgres(sqlx::PgPool, String),
}

impl ServerLog {
    async fn open(f: &Fresh, url: &str, scope: RateScope) -> Result<Option<ServerLog>, String> {
        if let Some(r) = &f.redis {
            let client = redis::Client::open(url).map_err(|e| e.to_string())?;
            let conn = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            let key = match scope {
                RateScope::Queue => format!("{}:resq:rate:bench", r.config().namespace),
                RateScope::Task => format!("{}:resq:task_rate:noop", r.config().namespace),
            };
            return Ok(Some(ServerLog::Redis(conn, key)));
        }
        if let Some(p) = &f.postgres {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await
                .map_err(|e| e.to_string())?;
            let schema = p.schema().replace('"', "\"\"");
            let sql = match scope {
                RateScope::Queue => format!("SELECT starts FROM \"{schema}\".queue_limits WHERE queue = 'bench'"),
                RateScope::Task => format!("SELECT starts FROM \"{schema}\".task_flow WHERE class = 'noop'"),
            };
            return Ok(Some(ServerLog::Postgres(pool, sql)));
        }
        Ok(None)
    }

    /// Adds what the log holds now to `seen` (start time in µs → how many
    /// starts at that time).
    async fn read(&mut self, seen: &mut std::collections::HashMap<i64, usize>) -> Result<(), String> {
        match self {
            ServerLog::Redis(conn, key) => {
                let members: Vec<String> = redis::cmd("ZRANGE")
                    .arg(&*key)
                    .arg(0)
                    .arg(-1)
                    .query_async(conn)
                    .await
                    .map_err(|e| e.to_string())?;
                // Members are unique ("<µs> <worker member>"): count each once.
                let mut now: std::collections::HashMap<i64, std::collections::HashSet<String>> =
                    std::collections::HashMap::new();
                for m in members {
                    if let Some(us) = m.split(' ').next().and_then(|t| t.parse::<i64>().ok()) {
                        now.entry(us).or_default().insert(m);
                    }
                }
                for (us, ms) in now {
                    let n = seen.entry(us).or_insert(0);
                    *n = (*n).max(ms.len());
                }
            }
            ServerLog::Postgres(pool, sql) => {
                let row: Option<(Vec<i64>,)> = sqlx::query_as(&*sql)
                    .fetch_optional(&*pool)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut now: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
                for ms in row.map(|(v,)| v).unwrap_or_default() {
                    *now.entry(ms * 1000).or_insert(0) += 1;
                }
                for (us, n) in now {
                    let seen_n = seen.entry(us).or_insert(0);
                    *seen_n = (*seen_n).max(n);
                }
            }
        }
        Ok(())
    }
}

/// The most starts in any window of `window_us` among start times (µs, sorted).
fn most_in_window_us(starts: &[i64], window_us: i64) -> usize {
    let mut most = 0;
    let mut lo = 0;
    for hi in 0..starts.len() {
        while starts[hi] - starts[lo] >= window_us {
            lo += 1;
        }
        most = most.max(hi - lo + 1);
    }
    most
}

/// Where a rate limit is declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateScope {
    /// On the queue (`set_queue_limits`): the claims skip it at its limit.
    Queue,
    /// On the task (`TaskDef::rate_limit`): the workers throttle jobs over
    /// it back to the delayed schedule, and a scheduler promotes them.
    Task,
}

/// Counts the jobs the workers throttled.
#[derive(Debug, Default)]
struct Throttles(AtomicUsize);

impl JobObserver for Throttles {
    fn job_finished(&self, end: &JobEnd<'_>) {
        if end.outcome == JobOutcome::Throttled {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One rate-limit run under backlog.
#[derive(Clone, Debug)]
pub struct RateRun {
    /// The backend URL.
    pub url: String,
    /// Where the limit was declared.
    pub scope: RateScope,
    /// Jobs throttled back to the delayed schedule (per-task limits only),
    /// and jobs still there at the end.
    pub throttled: (usize, u64),
    /// The limit: starts per period.
    pub max: u32,
    /// The limit's period.
    pub period: Duration,
    /// Workers × slots.
    pub shape: (usize, usize),
    /// Periods measured, from the first start.
    pub periods: u32,
    /// Starts within the measured periods.
    pub measured_starts: usize,
    /// The most starts seen in any window of one period (all starts), by
    /// the workers' clocks when each job started: this includes the
    /// varying delay between a claim and its job's start.
    pub most_in_window: usize,
    /// The same by the clock the backend enforces the limit with (the
    /// server's, from its start log), with how many starts that log held;
    /// `None` on memory (its log is in the workers' process).
    pub server_most: Option<(usize, usize)>,
    /// Jobs run (each at most once) and jobs still queued at the end.
    pub ran: usize,
    /// Jobs left queued when the workers stopped.
    pub queued: u64,
    /// Jobs queued at the start.
    pub jobs: usize,
}

impl RateRun {
    /// Throughput as a share of the limit, percent.
    pub fn achieved_percent(&self) -> f64 {
        self.measured_starts as f64 / (f64::from(self.max) * f64::from(self.periods)) * 100.0
    }
}

impl fmt::Display for RateRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} rate limit {}/{:?}, {} workers × {} slots, backlog {}: most starts in any {:?} window {} \
             (limit {}, {}); at job start (workers' clocks) {}; {} starts in {} periods = {:.1}% of the limit; \
             ran {} jobs once each, {} still queued{}, none lost",
            self.url,
            match self.scope {
                RateScope::Queue => "per-queue",
                RateScope::Task => "per-task",
            },
            self.max,
            self.period,
            self.shape.0,
            self.shape.1,
            self.jobs,
            self.period,
            self.server_most.map_or(self.most_in_window, |(m, _)| m),
            self.max,
            match self.server_most {
                Some((m, n)) => format!(
                    "{} by the server's clock over {n} logged starts",
                    if m <= self.max as usize {
                        "never exceeded"
                    } else {
                        "EXCEEDED"
                    }
                ),
                None => format!(
                    "{} by the workers' clock",
                    if self.most_in_window <= self.max as usize {
                        "never exceeded"
                    } else {
                        "EXCEEDED"
                    }
                ),
            },
            self.most_in_window,
            self.measured_starts,
            self.periods,
            self.achieved_percent(),
            self.ran,
            self.queued,
            match self.scope {
                RateScope::Queue => String::new(),
                RateScope::Task => format!(
                    ", {} delayed; {} throttles (jobs put back on the schedule)",
                    self.throttled.1, self.throttled.0
                ),
            },
        )
    }
}

/// A rate limit of `max` per `period` on a backlog, worked by `workers` ×
/// `slots` for `periods` periods from the first start: starts per window
/// (the most in any window, against the limit) and throughput as a share
/// of the limit. Fails if a job ran twice, was lost or failed.
#[allow(clippy::too_many_arguments)]
pub async fn rate(
    url: &str,
    scope: RateScope,
    max: u32,
    period: Duration,
    periods: u32,
    workers: usize,
    slots: usize,
    scheduler_poll: Duration,
) -> Result<RateRun, String> {
    let f = fresh(url).await?;
    let queue = Queue::new(Arc::clone(&f.backend));
    if scope == RateScope::Queue {
        queue
            .set_queue_limits("bench", QueueLimits::new().rate(max, period))
            .await
            .map_err(|e| e.to_string())?;
    }
    let jobs = max as usize * (periods as usize + 2);
    fill(&queue, jobs).await?;
    let ledger = Ledger::new(jobs);
    let tasks = match scope {
        RateScope::Queue => ledger.tasks(true)?,
        RateScope::Task => ledger.limited_tasks(true, Some((max, period)))?,
    };
    let throttles = Arc::new(Throttles::default());
    let stop = CancellationToken::new();
    // Throttled jobs wait on the delayed schedule: a scheduler promotes them.
    let scheduler = match scope {
        RateScope::Queue => None,
        RateScope::Task => {
            let config = resq_core::SchedulerConfig {
                poll_interval: scheduler_poll,
                ..resq_core::SchedulerConfig::default()
            };
            let s = resq_core::Scheduler::new(Arc::clone(&f.backend), config).map_err(|e| e.to_string())?;
            let t = stop.clone();
            Some(tokio::spawn(async move { s.run_until(t).await }))
        }
    };
    let sampler = match ServerLog::open(&f, url, scope).await? {
        Some(mut log) => {
            let stop = stop.clone();
            let every = period / 4;
            Some(tokio::spawn(async move {
                let mut seen = std::collections::HashMap::new();
                loop {
                    log.read(&mut seen).await?;
                    if stop.is_cancelled() {
                        return Ok::<_, String>(seen);
                    }
                    tokio::time::sleep(every).await;
                }
            }))
        }
        None => None,
    };
    let observer: Arc<dyn JobObserver> = throttles.clone();
    let (handles, running) = start_workers(&f, url, &tasks, workers, slots, &stop, Some(observer)).await?;
    let waited = Instant::now();
    while ledger.done.load(Ordering::Acquire) == 0 {
        if waited.elapsed() > RUN_LIMIT {
            return Err("no job started".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first = ledger
        .starts
        .lock()
        .map_err(|e| e.to_string())?
        .iter()
        .min()
        .copied()
        .ok_or("no start recorded")?;
    let end = first + period * periods;
    tokio::time::sleep_until(tokio::time::Instant::from_std(end) + period / 4).await;
    stop_workers(stop, handles, running, &f).await?;
    if let Some(s) = scheduler {
        s.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    }
    let server_most = match sampler {
        Some(s) => {
            let seen = s.await.map_err(|e| e.to_string())??;
            let mut times: Vec<i64> = seen
                .into_iter()
                .flat_map(|(us, n)| std::iter::repeat_n(us, n))
                .collect();
            times.sort_unstable();
            let window = i64::try_from(period.as_micros()).unwrap_or(i64::MAX);
            Some((most_in_window_us(&times, window), times.len()))
        }
        None => None,
    };
    let mut starts = ledger.starts.lock().map_err(|e| e.to_string())?.clone();
    starts.sort_unstable();
    let measured_starts = starts.iter().filter(|t| **t < end).count();
    let most = most_in_window(&starts, period);
    let queued = queue.length("bench").await.map_err(|e| e.to_string())?;
    let delayed = f.backend.delayed_count().await.map_err(|e| e.to_string())?;
    let failed = queue.failed_count().await.map_err(|e| e.to_string())?;
    f.done().await;
    let ran = ledger.ran();
    let twice = ledger.ran_twice();
    let left = usize::try_from(queued + delayed).unwrap_or(usize::MAX);
    if twice > 0 || failed > 0 || ran + left != jobs {
        return Err(format!(
            "{twice} jobs ran twice, {failed} failed, {ran} ran + {queued} queued + {delayed} delayed of {jobs}"
        ));
    }
    Ok(RateRun {
        url: url.to_owned(),
        scope,
        throttled: (throttles.0.load(Ordering::Relaxed), delayed),
        max,
        period,
        shape: (workers, slots),
        periods,
        measured_starts,
        most_in_window: most,
        server_most,
        ran,
        queued,
        jobs,
    })
}

/// Throughput with a concurrency cap that does not bind and without one,
/// interleaved.
#[derive(Clone, Debug)]
pub struct CapCost {
    /// The backend URL.
    pub url: String,
    /// Workers × slots.
    pub shape: (usize, usize),
    /// The cap (above the total number of slots, so it never binds).
    pub cap: u32,
    /// Jobs per run.
    pub jobs: usize,
    /// Jobs/s of each run with the cap.
    pub with: Spread,
    /// Jobs/s of each run without.
    pub without: Spread,
}

impl CapCost {
    /// The cost, percent of the throughput without the cap (medians).
    pub fn cost_percent(&self) -> f64 {
        (1.0 - self.with.median() / self.without.median()) * 100.0
    }
}

impl fmt::Display for CapCost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (wl, wh) = self.with.range();
        let (ol, oh) = self.without.range();
        write!(
            f,
            "{} {} workers × {} slots, {} jobs, {} rounds: no cap median {:.0} jobs/s ({:.0}–{:.0}); \
             cap {} (not binding) median {:.0} jobs/s ({:.0}–{:.0}); cost {:.1}%",
            self.url,
            self.shape.0,
            self.shape.1,
            self.jobs,
            self.with.all.len(),
            self.without.median(),
            ol,
            oh,
            self.cap,
            self.with.median(),
            wl,
            wh,
            self.cost_percent()
        )
    }
}

/// One processing run of `jobs` jobs, with `cap` set on the queue if given.
async fn process(url: &str, jobs: usize, workers: usize, slots: usize, cap: Option<u32>) -> Result<f64, String> {
    let f = fresh(url).await?;
    let queue = Queue::new(Arc::clone(&f.backend));
    if let Some(cap) = cap {
        queue
            .set_queue_limits("bench", QueueLimits::new().concurrency(cap))
            .await
            .map_err(|e| e.to_string())?;
    }
    fill(&queue, jobs).await?;
    let ledger = Ledger::new(jobs);
    let tasks = ledger.tasks(false)?;
    let stop = CancellationToken::new();
    let start = Instant::now();
    let (handles, running) = start_workers(&f, url, &tasks, workers, slots, &stop, None).await?;
    while ledger.done.load(Ordering::Acquire) < jobs {
        if start.elapsed() > RUN_LIMIT {
            return Err(format!("ran {} of {jobs} jobs", ledger.done.load(Ordering::Acquire)));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = start.elapsed();
    stop_workers(stop, handles, running, &f).await?;
    f.done().await;
    if ledger.ran() != jobs || ledger.ran_twice() > 0 {
        return Err(format!("{} of {jobs} ran, {} twice", ledger.ran(), ledger.ran_twice()));
    }
    Ok(jobs as f64 / took.as_secs_f64().max(1e-9))
}

/// `rounds` rounds of one run without a cap and one with a cap of `cap`
/// (alternating which goes first), `workers` × `slots` on handles of their
/// own: the throughput cost of a cap that does not bind.
pub async fn cap_cost(
    url: &str,
    jobs: usize,
    workers: usize,
    slots: usize,
    cap: u32,
    rounds: usize,
) -> Result<CapCost, String> {
    let mut with = Vec::with_capacity(rounds);
    let mut without = Vec::with_capacity(rounds);
    for round in 0..rounds {
        for capped in [round % 2 == 1, round % 2 == 0] {
            let r = process(url, jobs, workers, slots, capped.then_some(cap)).await?;
            eprintln!(
                "   round {round} {}: {r:.0} jobs/s",
                if capped { "cap" } else { "no cap" }
            );
            if capped {
                with.push(r);
            } else {
                without.push(r);
            }
        }
    }
    Ok(CapCost {
        url: url.to_owned(),
        shape: (workers, slots),
        cap,
        jobs,
        with: Spread { all: with },
        without: Spread { all: without },
    })
}

/// How long a crashed worker's concurrency slot took to come back.
#[derive(Clone, Debug)]
pub struct CrashReturn {
    /// The backend URL.
    pub url: String,
    /// The scheduler's stuck-worker timeout.
    pub stuck_timeout: Duration,
    /// The workers' ping interval.
    pub ping_interval: Duration,
    /// The scheduler's poll interval (how often it sweeps).
    pub sweep_every: Duration,
    /// From each crash to the start of the next job of the capped queue.
    pub returned_after: Vec<Duration>,
    /// The same from the crashed worker's last ping: the sweep can judge a
    /// worker dead only `stuck_timeout` after it, and looks every
    /// `sweep_every`.
    pub after_last_ping: Vec<Duration>,
}

impl fmt::Display for CrashReturn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all: Vec<String> = self
            .returned_after
            .iter()
            .map(|d| format!("{:.2} s", d.as_secs_f64()))
            .collect();
        let since_ping: Vec<String> = self
            .after_last_ping
            .iter()
            .map(|d| format!("{:.2} s", d.as_secs_f64()))
            .collect();
        let worst = self.after_last_ping.iter().max().copied().unwrap_or_default();
        let excess = worst.as_secs_f64() - self.stuck_timeout.as_secs_f64();
        write!(
            f,
            "{} cap 1, stuck-worker timeout {:?}, pings every {:?}, sweeps every {:?}: slot back {} after the crash, \
             {} after the last recorded ping (worst {:.2} s: {:+.0} ms against the timeout; the sweep looks every \
             {:?} and the waiting worker re-tries every {:?})",
            self.url,
            self.stuck_timeout,
            self.ping_interval,
            self.sweep_every,
            all.join(", "),
            since_ping.join(", "),
            worst.as_secs_f64(),
            excess * 1000.0,
            self.sweep_every,
            resq_core::flow::LIMITED_RECHECK,
        )
    }
}

/// `rounds` times: a worker (own handle) takes the only slot of a queue
/// capped at 1 with a job that never ends, and crashes (its run future is
/// dropped: no unregistration, no more pings); a second worker waits on
/// the queue and a scheduler (own handle) sweeps stuck workers with
/// `stuck_timeout`. Measures the time from the crash to the next start of
/// a job of that queue (the dead worker's, which the sweep puts back at
/// the head of the queue) on the second worker.
pub async fn crash_return(url: &str, stuck_timeout: Duration, rounds: usize) -> Result<CrashReturn, String> {
    let ping = stuck_timeout / 3;
    let sweep_every = Duration::from_millis(100);
    let mut returned_after = Vec::with_capacity(rounds);
    let mut after_last_ping = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let f = fresh(url).await?;
        let queue = Queue::new(Arc::clone(&f.backend));
        queue
            .set_queue_limits("capped", QueueLimits::new().concurrency(1))
            .await
            .map_err(|e| e.to_string())?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
        let mut tasks = Tasks::new();
        tasks
            .register_fn("hold", move |(who,): (String,), _ctx: JobContext| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((who.clone(), Instant::now()));
                    if who == "first" {
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, TaskError>(())
                }
            })
            .map_err(|e| e.to_string())?;
        let tasks = Arc::new(tasks);
        let config = WorkerConfig {
            poll_interval: Duration::from_millis(500),
            ping_interval: ping,
            shutdown_timeout: Duration::from_secs(1),
            ..WorkerConfig::for_queues(["capped"])
        };
        let sched_backend = own_handle(&f, url).await?;
        let scheduler = resq_core::Scheduler::new(
            Arc::clone(&sched_backend),
            resq_core::SchedulerConfig {
                poll_interval: sweep_every,
                stuck_worker_timeout: Some(stuck_timeout),
                worker_ping_interval: ping,
                ..resq_core::SchedulerConfig::default()
            },
        )
        .map_err(|e| e.to_string())?;
        let stop = CancellationToken::new();
        let s_stop = stop.clone();
        let sched = tokio::spawn(async move { scheduler.run_until(s_stop).await });
        queue
            .enqueue("capped", "hold", ("first",))
            .await
            .map_err(|e| e.to_string())?;
        let a_backend = own_handle(&f, url).await?;
        let a = Worker::new(Arc::clone(&a_backend), Arc::clone(&tasks), config.clone());
        let a_id = a.id().clone();
        let a_stop = stop.clone();
        let crashing = tokio::spawn(async move { a.run_until(a_stop).await });
        match tokio::time::timeout(RUN_LIMIT, rx.recv()).await {
            Ok(Some((who, _))) if who == "first" => {}
            _ => return Err("the first job did not start".to_owned()),
        }
        let b_backend = own_handle(&f, url).await?;
        let b = Worker::new(Arc::clone(&b_backend), Arc::clone(&tasks), config.clone());
        let b_stop = stop.clone();
        let waiting = tokio::spawn(async move { b.run_until(b_stop).await });
        queue
            .enqueue("capped", "hold", ("second",))
            .await
            .map_err(|e| e.to_string())?;
        // The second job must wait behind the cap; then the first worker
        // dies, half-way between two of its pings.
        tokio::time::sleep(ping + ping / 2).await;
        let crashed = Instant::now();
        let crashed_ms = resq_core::time::now_ms();
        crashing.abort();
        // The dead worker's last ping as the store recorded it (read before
        // the sweep removes it, after any ping that was on its way).
        tokio::time::sleep(ping / 4).await;
        let times = f.backend.worker_times(&[a_id]).await.map_err(|e| e.to_string())?;
        let ping_ms = times.first().and_then(|t| t.ping_ms).ok_or("no ping recorded")?;
        let got = tokio::time::timeout(RUN_LIMIT, rx.recv()).await;
        // The sweep puts the dead worker's job back at the head of the
        // queue, so the next start is that job's, on the second worker.
        let started = match got {
            Ok(Some((_, at))) => at,
            _ => return Err("the slot never came back".to_owned()),
        };
        let back = started.saturating_duration_since(crashed);
        returned_after.push(back);
        let before = u64::try_from(crashed_ms.saturating_sub(ping_ms)).unwrap_or(0);
        after_last_ping.push(back + Duration::from_millis(before));
        stop.cancel();
        let _ = waiting.await;
        let _ = sched.await;
        for h in [sched_backend, a_backend, b_backend] {
            if !Arc::ptr_eq(&h, &f.backend) {
                let _ = h.close().await;
            }
        }
        f.done().await;
    }
    Ok(CrashReturn {
        url: url.to_owned(),
        stuck_timeout,
        ping_interval: ping,
        sweep_every,
        returned_after,
        after_last_ping,
    })
}
