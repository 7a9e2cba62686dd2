//! The processes under test: `chaos worker`, `chaos scheduler` and
//! `chaos producer`, each the harness's own binary re-executed with a role.
//! They use resq exactly as an application would, configured explicitly
//! (never by today's defaults), and record what they do in the ledger.

use crate::ledger::{now_ms, Writer};
use resq::cron::CronSchedule;
use resq::serde_json::Value;
use resq::{JobContext, NewJob, Queue, Scheduler, SchedulerConfig, TaskDef, TaskError, Tasks, Worker, WorkerConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The queue every job of the harness goes to.
pub const QUEUE: &str = "chaos";
/// The class of the harness's load jobs: args `[id, ms]`.
pub const WORK: &str = "work";
/// The cron task of the leader scenario (every second).
pub const CRON: &str = "cronTick";
/// The periodic task of the leader scenario (every second).
pub const PERIODIC: &str = "periodicTick";

/// How long job `id` sleeps: 1 to 20 ms, spread by a fixed hash.
pub fn job_ms(id: u64) -> u64 {
    1 + (id.wrapping_mul(2_654_435_761) >> 7) % 20
}

/// The task registry every role shares.
pub fn tasks(ledger: Arc<Writer>) -> Result<Tasks, resq::Error> {
    let mut tasks = Tasks::new();
    let l = Arc::clone(&ledger);
    tasks.define(
        TaskDef::from_fn(WORK, move |(id, ms): (u64, u64), _ctx: JobContext| {
            let l = Arc::clone(&l);
            async move {
                let pid = std::process::id();
                let start = now_ms();
                l.record(&format!("S {id} {pid} {start}"));
                tokio::time::sleep(Duration::from_millis(ms)).await;
                l.record(&format!("E {id} {pid} {start} {}", now_ms()));
                Ok::<_, TaskError>(())
            }
        })
        .queue(QUEUE),
    )?;
    let l = Arc::clone(&ledger);
    tasks.define(
        TaskDef::from_fn(CRON, move |(arg,): (Value,), _ctx: JobContext| {
            let l = Arc::clone(&l);
            async move {
                let at = arg.get("cron_at").and_then(Value::as_i64).unwrap_or(-1);
                l.record(&format!("C {at} {} {}", std::process::id(), now_ms()));
                Ok::<_, TaskError>(())
            }
        })
        .queue(QUEUE)
        .cron(CronSchedule::parse("* * * * * *")?),
    )?;
    let l = ledger;
    tasks.define(
        TaskDef::from_fn(PERIODIC, move |_args: Vec<Value>, _ctx: JobContext| {
            let l = Arc::clone(&l);
            async move {
                l.record(&format!("P {} {}", std::process::id(), now_ms()));
                Ok::<_, TaskError>(())
            }
        })
        .queue(QUEUE)
        .frequency(Duration::from_secs(1)),
    )?;
    Ok(tasks)
}

/// Connects, retrying for as long as the error is transient (a restarted
/// process may start during a server crash, or find every connection
/// slot taken), as a supervised application would.
async fn connect(url: &str) -> Result<Arc<dyn resq::Backend>, resq::Error> {
    loop {
        match resq::connect(url).await {
            Ok(b) => return Ok(b),
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "connect failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// `chaos worker`: one worker with `concurrency` slots on the harness queue.
pub async fn worker(
    url: &str,
    ledger: PathBuf,
    concurrency: usize,
    poll: Duration,
    ping: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let writer = Arc::new(Writer::open(&ledger, "worker")?);
    let backend = connect(url).await?;
    let config = WorkerConfig {
        queues: vec![QUEUE.to_owned()],
        poll_interval: poll,
        ping_interval: ping,
        shutdown_timeout: Duration::from_secs(5),
        concurrency,
        ..WorkerConfig::default()
    };
    let worker = Worker::new(backend, Arc::new(tasks(writer)?), config);
    // It runs until it is killed; `run` returning at all is an exit the
    // orchestrator counts.
    worker.run(std::future::pending::<()>()).await?;
    Err("the worker's run returned".into())
}

/// The scheduler's explicit settings.
pub struct SchedulerArgs {
    /// The leader lock's value.
    pub name: String,
    /// Poll interval.
    pub poll: Duration,
    /// Leader lock TTL.
    pub leader_ttl: Duration,
    /// Stuck-worker timeout (jobs are re-queued).
    pub stuck: Duration,
    /// The workers' ping interval (the stuck-worker timeout must be at
    /// least three of them).
    pub worker_ping: Duration,
    /// Fire the cron task and boot the periodic one.
    pub timed: bool,
}

/// `chaos scheduler`: one scheduler (leader candidate).
pub async fn scheduler(url: &str, ledger: PathBuf, args: SchedulerArgs) -> Result<(), Box<dyn std::error::Error>> {
    let writer = Arc::new(Writer::open(&ledger, "scheduler")?);
    let backend = connect(url).await?;
    let tasks = Arc::new(tasks(Arc::clone(&writer))?);
    let config = SchedulerConfig {
        name: Some(args.name),
        poll_interval: args.poll,
        leader_ttl: args.leader_ttl,
        stuck_worker_timeout: Some(args.stuck),
        worker_ping_interval: args.worker_ping,
        stuck_job_policy: resq::StuckJobPolicy::Requeue,
        ..SchedulerConfig::default()
    };
    let mut scheduler = Scheduler::new(Arc::clone(&backend), config)?;
    if args.timed {
        // What a TaskServer's scheduler node does at boot.
        let queue = Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
        let mut tries = 0;
        loop {
            match queue.enqueue_all_recurrent_jobs().await {
                Ok(started) => {
                    writer.record(&format!("B {} {} {}", std::process::id(), now_ms(), started.len()));
                    break;
                }
                Err(e) => {
                    tries += 1;
                    if tries > 60 {
                        return Err(e.into());
                    }
                    tracing::warn!(error = %e, "enqueue_all_recurrent_jobs failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        scheduler = scheduler.with_tasks(tasks);
    }
    scheduler.run(std::future::pending::<()>()).await?;
    Err("the scheduler's run returned".into())
}

/// `chaos producer`: enqueues jobs `from..from+count` in batches of
/// `batch`, at about `rate` jobs a second, retrying a failed call until it
/// returns `Ok` (so a job may be enqueued twice, never reported and lost).
pub async fn producer(
    url: &str,
    ledger: PathBuf,
    from: u64,
    count: u64,
    rate: f64,
    batch: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let writer = Writer::open(&ledger, "producer")?;
    let backend = connect(url).await?;
    let queue = Queue::new(backend);
    let started = std::time::Instant::now();
    let mut next = from;
    let end = from + count;
    while next < end {
        let n = (end - next).min(batch.max(1) as u64);
        let ids: Vec<u64> = (next..next + n).collect();
        loop {
            let result = if n == 1 {
                queue.enqueue(QUEUE, WORK, (ids[0], job_ms(ids[0]))).await.map(|_| 1)
            } else {
                let jobs = ids
                    .iter()
                    .map(|&id| NewJob::new(QUEUE, WORK, (id, job_ms(id))))
                    .collect::<Result<Vec<_>, _>>()?;
                queue.enqueue_batch(jobs).await
            };
            match result {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "enqueue failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let at = now_ms();
        for id in &ids {
            writer.record(&format!("Q {id} {at}"));
        }
        next += n;
        if rate > 0.0 {
            let due = Duration::from_secs_f64((next - from) as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    Ok(())
}
