//! Shared by this crate's integration tests: whether a missing server fails
//! a test, a fresh backend on the shared test server or a skip, and the busy
//! worker and scheduler of the outage and failover tests, with their wait.
//!
//! Items that not every test file uses are marked `#[allow(dead_code)]`.

use resq_core::task::{JobContext, TaskError, Tasks};
use resq_core::{Backend, Scheduler, SchedulerConfig, Worker, WorkerConfig};
use resq_redis::testing::{fresh_redis, server_url};
use resq_redis::RedisBackend;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// True when `RESQ_REQUIRE_BACKENDS=1`: a missing server or tool fails the
/// test instead of skipping it.
pub fn required() -> bool {
    std::env::var("RESQ_REQUIRE_BACKENDS").is_ok_and(|v| v == "1")
}

/// A fresh backend on the shared test server, or `None` after printing why
/// `test` is skipped (a failure when [`required`]).
#[allow(dead_code)]
pub async fn fresh(test: &str) -> Option<RedisBackend> {
    match fresh_redis().await {
        Ok(b) => Some(b),
        Err(reason) => {
            assert!(!required(), "{test}: {reason}");
            eprintln!("SKIP {test}: {reason}");
            None
        }
    }
}

/// [`fresh`], with its namespace and a raw connection to the same server.
#[allow(dead_code)]
pub async fn fresh_with_raw(test: &str) -> Option<(RedisBackend, String, redis::aio::MultiplexedConnection)> {
    let backend = fresh(test).await?;
    let ns = backend.config().namespace.clone();
    let client = redis::Client::open(server_url()).unwrap();
    let raw = client.get_multiplexed_async_connection().await.unwrap();
    Some((backend, ns, raw))
}

/// The arguments of the jobs that ran.
#[allow(dead_code)]
pub type Ran = Arc<Mutex<HashSet<i64>>>;

/// Tasks with one class, `work`, whose job sleeps `delay`, then records its
/// one argument in the returned set.
#[allow(dead_code)]
pub fn recording_work(delay: Duration) -> (Tasks, Ran) {
    let ran: Ran = Arc::new(Mutex::new(HashSet::new()));
    let mut tasks = Tasks::new();
    let seen = Arc::clone(&ran);
    tasks
        .register_fn("work", move |(i,): (i64,), _ctx: JobContext| {
            let seen = Arc::clone(&seen);
            async move {
                tokio::time::sleep(delay).await;
                seen.lock().expect("lock").insert(i);
                Ok::<_, TaskError>(())
            }
        })
        .unwrap();
    (tasks, ran)
}

/// A worker on `queues` running `tasks`, polling and pinging every 200 ms.
#[allow(dead_code)]
pub fn busy_worker<I, S>(backend: &Arc<dyn Backend>, tasks: Tasks, queues: I) -> Worker
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    Worker::new(
        Arc::clone(backend),
        Arc::new(tasks),
        WorkerConfig {
            poll_interval: Duration::from_millis(200),
            ping_interval: Duration::from_millis(200),
            ..WorkerConfig::for_queues(queues)
        },
    )
}

/// Runs `worker`, and a scheduler on `backend` that polls every 200 ms with
/// a 5 s leader lease, until `stop` is cancelled: the worker's task, then
/// the scheduler's.
#[allow(dead_code)]
pub fn run_with_scheduler(
    backend: &Arc<dyn Backend>,
    worker: Worker,
    stop: &CancellationToken,
) -> (JoinHandle<resq_core::Result<()>>, JoinHandle<resq_core::Result<()>>) {
    let scheduler = Arc::new(
        Scheduler::new(
            Arc::clone(backend),
            SchedulerConfig {
                poll_interval: Duration::from_millis(200),
                leader_ttl: Duration::from_secs(5),
                ..SchedulerConfig::default()
            },
        )
        .unwrap(),
    );
    let worker_task = tokio::spawn({
        let t = stop.clone();
        async move { worker.run_until(t).await }
    });
    let scheduler_task = tokio::spawn({
        let (s, t) = (Arc::clone(&scheduler), stop.clone());
        async move { s.run_until(t).await }
    });
    (worker_task, scheduler_task)
}

/// Waits until `ran` holds at least `n` jobs, looking every `every`; fails,
/// saying how many ran `when`, once `limit` has passed.
#[allow(dead_code)]
pub async fn wait_for_runs(ran: &Mutex<HashSet<i64>>, n: usize, limit: Duration, every: Duration, when: &str) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let count = ran.lock().unwrap().len();
        if count >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {count} of {n} jobs ran {when}"
        );
        tokio::time::sleep(every).await;
    }
}
