//! Helpers shared by the engine-level groups: task sets, running workers in
//! the background, and waiting for a condition with a deadline.

use resq_core::backend::Backend;
use resq_core::task::{JobContext, TaskError, Tasks};
use resq_core::{Worker, WorkerConfig, WorkerEvent};
use serde_json::Value;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Everything the standard tasks record: `(class, args)` in run order.
pub type Runs = Arc<Mutex<Vec<(String, Vec<Value>)>>>;

/// A task set for tests:
/// - `add(a, b)` returns `a + b`;
/// - `record(..)` records its args and succeeds;
/// - `fail(..)` fails with `Blue Smoke`;
/// - `slow(ms)` sleeps `ms` then records;
/// - `panic()` panics.
pub fn standard_tasks(runs: &Runs) -> Arc<Tasks> {
    let mut tasks = Tasks::new();
    tasks
        .register_fn("add", |(a, b): (i64, i64), _ctx: JobContext| async move {
            Ok::<_, TaskError>(a + b)
        })
        .expect("register add");
    let r = Arc::clone(runs);
    tasks
        .register_fn("record", move |args: Vec<Value>, ctx: JobContext| {
            let r = Arc::clone(&r);
            async move {
                r.lock().expect("runs lock").push((ctx.job.class.clone(), args));
                Ok::<_, TaskError>(())
            }
        })
        .expect("register record");
    tasks
        .register_fn("fail", |_args: Vec<Value>, _ctx: JobContext| async move {
            Err::<(), _>(TaskError::new("Blue Smoke"))
        })
        .expect("register fail");
    let r = Arc::clone(runs);
    tasks
        .register_fn("slow", move |(ms,): (u64,), ctx: JobContext| {
            let r = Arc::clone(&r);
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                r.lock()
                    .expect("runs lock")
                    .push((ctx.job.class.clone(), vec![Value::from(ms)]));
                Ok::<_, TaskError>(ms)
            }
        })
        .expect("register slow");
    tasks
        .register_fn("panic", |_args: Vec<Value>, _ctx: JobContext| async move {
            if true {
                panic!("task exploded");
            }
            Ok::<(), TaskError>(())
        })
        .expect("register panic");
    Arc::new(tasks)
}

/// New empty run log.
pub fn runs() -> Runs {
    Arc::new(Mutex::new(Vec::new()))
}

/// Worker settings tuned for tests: short poll, ping and shutdown times.
pub fn quick_config(queues: &[&str]) -> WorkerConfig {
    WorkerConfig {
        name: None,
        queues: queues.iter().map(|q| (*q).to_owned()).collect(),
        poll_interval: Duration::from_millis(100),
        ping_interval: Duration::from_millis(100),
        shutdown_timeout: Duration::from_secs(5),
        concurrency: 1,
        observer: None,
        job_timeout: None,
    }
}

/// A worker running in the background.
pub struct Running {
    /// Cancels the worker (graceful stop).
    pub stop: CancellationToken,
    /// The worker's task.
    pub handle: JoinHandle<resq_core::Result<()>>,
    /// Its events, subscribed before it started.
    pub events: broadcast::Receiver<WorkerEvent>,
    /// Its name.
    pub name: String,
}

impl Running {
    /// Collects this worker's events, from its start, in the background.
    pub fn take_events(&mut self) -> EventLog {
        let fresh = self.events.resubscribe();
        let rx = std::mem::replace(&mut self.events, fresh);
        collect_events(rx)
    }

    /// Stops it gracefully and waits (at most 10 s) for it to end.
    pub async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("worker stops within 10s")
            .expect("worker task did not panic")
            .expect("worker ended cleanly");
    }
}

/// Starts a worker in the background.
pub fn spawn_worker(backend: &Arc<dyn Backend>, tasks: &Arc<Tasks>, config: WorkerConfig) -> Running {
    let worker = Worker::new(Arc::clone(backend), Arc::clone(tasks), config);
    let events = worker.subscribe();
    let name = worker.name().to_owned();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let handle = tokio::spawn(async move { worker.run_until(token).await });
    Running {
        stop,
        handle,
        events,
        name,
    }
}

/// Polls `cond` every 20 ms until it is true; panics with `what` after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Receives events until `pick` returns `Some`, or panics after `limit`.
pub async fn next_event<T>(
    rx: &mut broadcast::Receiver<WorkerEvent>,
    limit: Duration,
    mut pick: impl FnMut(&WorkerEvent) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Ok(ev)) => {
                if let Some(t) = pick(&ev) {
                    return t;
                }
            }
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(broadcast::error::RecvError::Closed)) => panic!("event channel closed"),
            Err(_) => panic!("no matching event within {limit:?}"),
        }
    }
}

/// The runs recorded so far.
pub fn recorded(runs: &Runs) -> Vec<(String, Vec<Value>)> {
    runs.lock().expect("runs lock").clone()
}

/// A scheduler running in the background.
pub struct RunningScheduler {
    /// Cancels it (graceful stop: it releases leadership).
    pub stop: CancellationToken,
    /// Its task.
    pub handle: JoinHandle<resq_core::Result<()>>,
    /// The scheduler.
    pub scheduler: Arc<resq_core::Scheduler>,
}

impl RunningScheduler {
    /// Stops it gracefully and waits (at most 10 s).
    pub async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("scheduler stops within 10s")
            .expect("scheduler task did not panic")
            .expect("scheduler ended cleanly");
    }
}

/// Starts a scheduler that polls every 100 ms, with `tasks` (for cron) if given.
pub fn spawn_scheduler(
    backend: &Arc<dyn Backend>,
    tasks: Option<&Arc<Tasks>>,
    config: resq_core::SchedulerConfig,
) -> RunningScheduler {
    let mut s = resq_core::Scheduler::new(Arc::clone(backend), config).expect("scheduler config");
    if let Some(t) = tasks {
        s = s.with_tasks(Arc::clone(t));
    }
    let scheduler = Arc::new(s);
    let stop = CancellationToken::new();
    let s2 = Arc::clone(&scheduler);
    let token = stop.clone();
    let handle = tokio::spawn(async move { s2.run_until(token).await });
    RunningScheduler {
        stop,
        handle,
        scheduler,
    }
}

/// Scheduler settings tuned for tests: 100 ms polls, 5 s leader TTL.
pub fn quick_scheduler() -> resq_core::SchedulerConfig {
    resq_core::SchedulerConfig {
        poll_interval: Duration::from_millis(100),
        leader_ttl: Duration::from_secs(5),
        ..resq_core::SchedulerConfig::default()
    }
}

/// Every event a receiver gets from now on, collected in the background.
pub type EventLog = Arc<Mutex<Vec<WorkerEvent>>>;

/// Collects `rx`'s events into a shared log until the sender closes.
pub fn collect_events(mut rx: broadcast::Receiver<WorkerEvent>) -> EventLog {
    let log: EventLog = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&log);
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(e) => sink.lock().expect("event log").push(e),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    log
}

/// How many logged events `pick` accepts.
pub fn count_events(log: &EventLog, pick: impl Fn(&WorkerEvent) -> bool) -> usize {
    log.lock().expect("event log").iter().filter(|e| pick(e)).count()
}

/// A registry of these task definitions (each must define cleanly).
pub fn registry(defs: Vec<resq_core::TaskDef>) -> Arc<Tasks> {
    let mut tasks = Tasks::new();
    for d in defs {
        tasks.define(d).expect("define");
    }
    Arc::new(tasks)
}

/// The shard (see [`Backend::queue_shard`]) that holds a delayed item or a
/// failed entry: that of the queue its JSON `queue` field names; 0 when it
/// names none (or is not JSON).
pub fn item_shard(backend: &dyn Backend, json: &str) -> usize {
    match serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.get("queue").cloned())
    {
        Some(serde_json::Value::String(q)) if !q.trim().is_empty() => backend.queue_shard(&q),
        _ => 0,
    }
}
