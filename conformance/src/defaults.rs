//! Safe defaults and refused misconfigurations of the scheduler and the
//! task server: a dead worker's job runs again within about a minute, a
//! stuck-worker timeout that would take live workers for dead is refused,
//! and leadership fails over within a bounded time while a busy leader keeps
//! it.

use crate::faults::{FaultPlan, Faulty};
use crate::support::wait_until;
use resq_core::backend::{Backend, WorkerId};
use resq_core::config::TaskServerConfig;
use resq_core::scheduler::MIN_STUCK_TIMEOUT_PINGS;
use resq_core::task::Tasks;
use resq_core::time::now_ms;
use resq_core::{Error, PoolConfig, Scheduler, SchedulerConfig, TaskServer, WorkerConfig, WorkerPool};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A scheduler-only node with the task server's defaults otherwise.
fn scheduler_node() -> TaskServerConfig {
    TaskServerConfig {
        scheduler: true,
        ..TaskServerConfig::default()
    }
}

/// Runs `server` on a task of its own until `stop`.
fn spawn_server(server: &Arc<TaskServer>, stop: &CancellationToken) -> tokio::task::JoinHandle<resq_core::Result<()>> {
    let (server, stop) = (Arc::clone(server), stop.clone());
    tokio::spawn(async move { server.run_until(stop).await })
}

/// Under the task server's defaults, the job of a worker that died (its
/// last ping two minutes old, as after a SIGKILL) goes back to the head of
/// its queue to run again, instead of waiting an hour for the failed list.
pub async fn task_server_defaults_rerun_a_dead_workers_job(backend: Arc<dyn Backend>) {
    let defaults = TaskServerConfig::default();
    assert!(defaults.retry_stuck_jobs, "a dead worker's job runs again by default");
    assert!(
        defaults.stuck_worker_timeout() <= Duration::from_secs(60),
        "a dead worker is found within a minute: {:?}",
        defaults.stuck_worker_timeout()
    );

    let payload = r#"{"class":"add","queue":"q","args":[7]}"#;
    let dead = WorkerId::new("host:9+1", &["q".to_owned()]);
    backend.register_worker(&dead, now_ms() - 120_000).await.unwrap();
    backend.push("q", payload).await.unwrap();
    backend
        .push("q", r#"{"class":"other","queue":"q","args":[]}"#)
        .await
        .unwrap();
    backend.claim(&dead, &["q".to_owned()], "t").await.unwrap().unwrap();

    let server = Arc::new(TaskServer::new(Arc::clone(&backend), Arc::new(Tasks::new()), scheduler_node()).unwrap());
    let stop = CancellationToken::new();
    let handle = spawn_server(&server, &stop);
    wait_until(Duration::from_secs(10), "the dead worker is cleaned", || async {
        backend.workers().await.unwrap().is_empty()
    })
    .await;
    stop.cancel();
    handle.await.unwrap().unwrap();
    assert_eq!(
        backend.queue_range("q", 0, 0).await.unwrap(),
        vec![payload.to_owned()],
        "the job is back at the head of its queue"
    );
    assert_eq!(backend.queue_len("q").await.unwrap(), 2);
    assert_eq!(backend.failed_count().await.unwrap(), 0, "not failed");
}

/// A stuck-worker timeout under three ping intervals would clean live
/// workers as dead and run their jobs twice: `Scheduler::new`,
/// `TaskServer::new` and the builder refuse it with an error that says so.
pub async fn stuck_timeout_below_three_pings_is_refused(backend: Arc<dyn Backend>) {
    fn assert_clear(result: Result<(), Error>, what: &str) {
        match result {
            Err(Error::InvalidArgument(message)) => {
                assert!(
                    message.contains("ping interval") && message.contains("twice"),
                    "{what}: {message}"
                );
            }
            other => panic!("{what}: expected InvalidArgument, got {other:?}"),
        }
    }
    let ping = Duration::from_secs(5);
    let scheduler = |stuck: Option<Duration>| {
        Scheduler::new(
            Arc::clone(&backend),
            SchedulerConfig {
                stuck_worker_timeout: stuck,
                worker_ping_interval: ping,
                ..SchedulerConfig::default()
            },
        )
        .map(|_| ())
    };
    assert_clear(scheduler(Some(Duration::from_secs(3))), "Scheduler, 3 s");
    assert_clear(
        scheduler(Some(ping * MIN_STUCK_TIMEOUT_PINGS - Duration::from_millis(1))),
        "Scheduler, just under",
    );
    scheduler(Some(ping * MIN_STUCK_TIMEOUT_PINGS)).unwrap();
    scheduler(None).unwrap();
    assert_clear(
        Scheduler::new(
            Arc::clone(&backend),
            SchedulerConfig {
                stuck_worker_timeout: Some(Duration::from_millis(600)),
                worker_ping_interval: Duration::from_millis(250),
                ..SchedulerConfig::default()
            },
        )
        .map(|_| ()),
        "Scheduler, fast pings",
    );

    let tasks = Arc::new(Tasks::new());
    for config in [
        TaskServerConfig {
            stuck_worker_timeout_ms: 3_000,
            ..scheduler_node()
        },
        TaskServerConfig {
            stuck_worker_timeout_ms: 14_999,
            max_task_processors: 2,
            ..TaskServerConfig::default()
        },
    ] {
        let what = format!("TaskServer, {} ms", config.stuck_worker_timeout_ms);
        assert_clear(
            TaskServer::new(Arc::clone(&backend), Arc::clone(&tasks), config.clone()).map(|_| ()),
            &what,
        );
        assert_clear(
            TaskServer::builder(Arc::clone(&backend), Arc::clone(&tasks), config)
                .build()
                .map(|_| ()),
            &format!("{what} (builder)"),
        );
    }
    TaskServer::new(
        Arc::clone(&backend),
        Arc::clone(&tasks),
        TaskServerConfig {
            stuck_worker_timeout_ms: 15_000,
            ..scheduler_node()
        },
    )
    .unwrap();

    // A custom pool whose workers ping every 30 s under the node's own
    // scheduler (60 s timeout: two pings) is refused by the builder too.
    let working_node = TaskServerConfig {
        max_task_processors: 1,
        ..scheduler_node()
    };
    let slow_pings = |ping: Duration| {
        WorkerPool::new(
            Arc::clone(&backend),
            Arc::clone(&tasks),
            PoolConfig {
                worker: WorkerConfig {
                    ping_interval: ping,
                    ..WorkerConfig::default()
                },
                ..PoolConfig::default()
            },
        )
    };
    assert_clear(
        TaskServer::builder(Arc::clone(&backend), Arc::clone(&tasks), working_node.clone())
            .pool(slow_pings(Duration::from_secs(30)))
            .build()
            .map(|_| ()),
        "builder, custom pool pinging every 30 s",
    );
    TaskServer::builder(Arc::clone(&backend), Arc::clone(&tasks), working_node)
        .pool(slow_pings(Duration::from_secs(20)))
        .build()
        .unwrap();
}

/// Under the task server's defaults, a scheduler leader that is dropped
/// without releasing its lock (as a killed process) is replaced within the
/// bound its config gives ([`Scheduler::failover_bound`], at most 10 s).
pub async fn task_server_defaults_fail_over_within_bound(backend: Arc<dyn Backend>) {
    let tasks = Arc::new(Tasks::new());
    let a = Arc::new(TaskServer::new(Arc::clone(&backend), Arc::clone(&tasks), scheduler_node()).unwrap());
    let b = Arc::new(TaskServer::new(Arc::clone(&backend), tasks, scheduler_node()).unwrap());
    let (sa, sb) = (Arc::clone(a.scheduler().unwrap()), Arc::clone(b.scheduler().unwrap()));
    let bound = sb.failover_bound();
    assert!(
        bound <= Duration::from_secs(10),
        "the defaults fail over within {bound:?}"
    );

    let stop_a = CancellationToken::new();
    let run_a = spawn_server(&a, &stop_a);
    wait_until(Duration::from_secs(10), "a leads", || async { sa.is_leader() }).await;
    let stop_b = CancellationToken::new();
    let run_b = spawn_server(&b, &stop_b);
    // b competes for a while (several renewal periods) and stays a follower.
    tokio::time::sleep(sb.renew_interval() * 2).await;
    assert!(!sb.is_leader(), "b took the lock from a live leader");

    run_a.abort(); // dropped mid-run: the lock is not released
    let _ = run_a.await;
    assert_eq!(
        backend.leader().await.unwrap().as_deref(),
        Some(sa.name()),
        "a still holds the lock"
    );
    let dropped = Instant::now();
    // Generous: the bound plus slack for a loaded machine.
    let limit = bound + Duration::from_secs(5);
    wait_until(limit, "b takes over", || async { sb.is_leader() }).await;
    let took = dropped.elapsed();
    println!("failover after the leader was dropped: {took:?} (bound {bound:?})");
    assert_eq!(backend.leader().await.unwrap().as_deref(), Some(sb.name()));
    stop_b.cancel();
    run_b.await.unwrap().unwrap();
    drop(stop_a);
}

/// A leader whose poll takes several lock TTLs (here a `stale_workers`
/// call that stalls) keeps its lock: it is renewed beside the poll, so no
/// other scheduler takes over while the leader is busy but alive.
pub async fn busy_leader_keeps_its_lock(backend: Arc<dyn Backend>) {
    // Renewed every 500 ms: a loaded machine may delay one renewal, not three.
    let ttl = Duration::from_millis(1500);
    let config = |name: &str| SchedulerConfig {
        name: Some(name.to_owned()),
        poll_interval: Duration::from_millis(100),
        leader_ttl: ttl,
        stuck_worker_timeout: Some(Duration::from_secs(1)),
        worker_ping_interval: Duration::from_millis(100),
        ..SchedulerConfig::default()
    };
    let slow = Faulty::new(Arc::clone(&backend), FaultPlan::default());
    let slow_backend: Arc<dyn Backend> = Arc::clone(&slow) as Arc<dyn Backend>;
    let a = Arc::new(Scheduler::new(slow_backend, config("busy-a")).unwrap());
    let stop_a = CancellationToken::new();
    let run_a = tokio::spawn({
        let (a, stop) = (Arc::clone(&a), stop_a.clone());
        async move { a.run_until(stop).await }
    });
    wait_until(Duration::from_secs(5), "a leads", || async { a.is_leader() }).await;
    let stall = ttl * 3;
    slow.stall_stale_workers(Some(stall));
    wait_until(Duration::from_secs(5), "a's poll stalls", || async {
        slow.stalls_started() > 0
    })
    .await;

    let b = Arc::new(Scheduler::new(Arc::clone(&backend), config("busy-b")).unwrap());
    let stop_b = CancellationToken::new();
    let run_b = tokio::spawn({
        let (b, stop) = (Arc::clone(&b), stop_b.clone());
        async move { b.run_until(stop).await }
    });
    // Through the whole stall (three TTLs) b never leads and a keeps the lock.
    let until = Instant::now() + stall;
    while Instant::now() < until {
        assert!(!b.is_leader(), "b took over while a was busy");
        assert_eq!(backend.leader().await.unwrap().as_deref(), Some("busy-a"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    slow.stall_stale_workers(None);
    stop_b.cancel();
    run_b.await.unwrap().unwrap();
    stop_a.cancel();
    run_a.await.unwrap().unwrap();
}
