//! How workers and schedulers treat backend errors: a transient one (the
//! server unreachable, busy, restarting) is logged, backed off on and
//! retried; a permanent one (refused credentials, a missing schema) stops
//! them cleanly after one report, and `run` returns it. Errors are injected
//! with the [`Outage`] wrapper, so this holds for every backend.

use crate::outage::Outage;
use crate::support::{
    count_events, quick_config, quick_scheduler, recorded, runs, spawn_worker, standard_tasks, wait_until,
};
use resq_core::backend::Backend;
use resq_core::{BackendErrorKind, Queue, SchedulerEvent, WorkerEvent};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(20);

fn is_error(e: &WorkerEvent) -> bool {
    matches!(e, WorkerEvent::Error { .. })
}

/// Transient errors on every call (registration, claims, waits) are
/// retried: the worker keeps running and then works the job; this for one
/// slot and for several.
pub async fn worker_retries_transient_errors(backend: Arc<dyn Backend>) {
    for concurrency in [1, 3] {
        let outage = Outage::new(Arc::clone(&backend));
        outage.fail(BackendErrorKind::Transient, Some(8));
        let log = runs();
        let tasks = standard_tasks(&log);
        let queue = format!("transient{concurrency}");
        Queue::new(Arc::clone(&backend))
            .enqueue(&queue, "record", (concurrency,))
            .await
            .unwrap();
        let mut config = quick_config(&[&queue]);
        config.concurrency = concurrency;
        let faulty: Arc<dyn Backend> = outage.clone();
        let mut w = spawn_worker(&faulty, &tasks, config);
        let events = w.take_events();
        wait_until(LIMIT, "the job ran after the transient errors", || {
            let log = Arc::clone(&log);
            async move { !recorded(&log).is_empty() }
        })
        .await;
        assert_eq!(outage.failed_calls(), 8, "concurrency {concurrency}");
        assert!(
            !w.handle.is_finished(),
            "concurrency {concurrency}: the worker kept running"
        );
        assert!(
            count_events(&events, is_error) >= 1,
            "concurrency {concurrency}: errors reported"
        );
        w.shutdown().await;
    }
}

/// A permanent error stops the worker: `run` returns that error (after a
/// clean stop), reported by exactly one error event however often the
/// worker would have polled; the queued job is left alone. Both before the
/// worker registered and while it polls, for one slot and for several.
pub async fn worker_stops_on_a_permanent_error(backend: Arc<dyn Backend>) {
    for concurrency in [1, 3] {
        for registered_first in [false, true] {
            let case = format!("concurrency {concurrency}, registered first: {registered_first}");
            let outage = Outage::new(Arc::clone(&backend));
            let log = runs();
            let tasks = standard_tasks(&log);
            let mut config = quick_config(&["permanent"]);
            config.concurrency = concurrency;
            if !registered_first {
                outage.fail(BackendErrorKind::Permanent, None);
            }
            let faulty: Arc<dyn Backend> = outage.clone();
            let mut w = spawn_worker(&faulty, &tasks, config);
            let events = w.take_events();
            if registered_first {
                let inner = Arc::clone(&backend);
                wait_until(LIMIT, "the worker registered", || {
                    let inner = Arc::clone(&inner);
                    async move { !inner.workers().await.unwrap().is_empty() }
                })
                .await;
                outage.fail(BackendErrorKind::Permanent, None);
            }
            Queue::new(Arc::clone(&backend))
                .enqueue("permanent", "record", (1,))
                .await
                .unwrap();
            let result = tokio::time::timeout(LIMIT, &mut w.handle)
                .await
                .unwrap_or_else(|_| panic!("{case}: the worker did not stop"))
                .expect("the worker task did not panic");
            let err = result.expect_err(&case);
            assert_eq!(err.backend_kind(), Some(BackendErrorKind::Permanent), "{case}: {err}");
            assert!(err.to_string().contains("injected Permanent error"), "{case}: {err}");
            // Give a runaway worker time to report again; it must not.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(
                count_events(&events, is_error),
                1,
                "{case}: one report: {:?}",
                events
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|e| is_error(e))
                    .take(3)
                    .collect::<Vec<_>>()
            );
            assert!(recorded(&log).is_empty(), "{case}: no job ran");
            assert_eq!(
                backend.queue_len("permanent").await.unwrap(),
                1,
                "{case}: the job stays queued"
            );
            // Tidy up for the next case: what the stopped worker could not.
            outage.recover();
            for id in backend.workers().await.unwrap() {
                backend
                    .clean_worker(&id, resq_core::backend::Orphan::Requeue)
                    .await
                    .unwrap();
            }
            backend.delete_queue("permanent").await.unwrap();
        }
    }
}

/// A scheduler retries transient errors (and then leads), and stops on a
/// permanent one: `run` returns it, reported by exactly one error event.
pub async fn scheduler_retries_transient_and_stops_on_permanent_errors(backend: Arc<dyn Backend>) {
    let outage = Outage::new(Arc::clone(&backend));
    outage.fail(BackendErrorKind::Transient, Some(3));
    let faulty: Arc<dyn Backend> = outage.clone();
    let scheduler = Arc::new(resq_core::Scheduler::new(Arc::clone(&faulty), quick_scheduler()).unwrap());
    let mut events = scheduler.subscribe();
    let stop = CancellationToken::new();
    let s = Arc::clone(&scheduler);
    let token = stop.clone();
    let mut handle = tokio::spawn(async move { s.run_until(token).await });
    let s = Arc::clone(&scheduler);
    wait_until(LIMIT, "the scheduler leads after transient errors", || {
        let s = Arc::clone(&s);
        async move { s.is_leader() }
    })
    .await;
    assert!(!handle.is_finished());
    assert_eq!(outage.failed_calls(), 3);

    outage.fail(BackendErrorKind::Permanent, None);
    let result = tokio::time::timeout(LIMIT, &mut handle)
        .await
        .expect("the scheduler stops")
        .expect("the scheduler task did not panic");
    let err = result.expect_err("a permanent error is returned");
    assert_eq!(err.backend_kind(), Some(BackendErrorKind::Permanent), "{err}");
    let mut errors = 0;
    loop {
        match events.try_recv() {
            Ok(SchedulerEvent::Error { .. }) => errors += 1,
            Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => break,
        }
    }
    // Three transient reports, then one permanent.
    assert_eq!(errors, 4);
    outage.recover();
    scheduler.release().await.unwrap();
    stop.cancel();
}

/// A pool whose worker stops on a permanent error stops too (instead of
/// starting a new worker, to fail the same way, at every check): `run`
/// returns the error.
// `..PoolConfig::default()` keeps this compiling when the config gains fields.
#[allow(clippy::needless_update)]
pub async fn pool_stops_on_a_permanent_error(backend: Arc<dyn Backend>) {
    let outage = Outage::new(Arc::clone(&backend));
    outage.fail(BackendErrorKind::Permanent, None);
    let log = runs();
    let faulty: Arc<dyn Backend> = outage.clone();
    let pool = resq_core::WorkerPool::new(
        faulty,
        standard_tasks(&log),
        resq_core::PoolConfig {
            min: 2,
            max: 2,
            check_interval: Duration::from_millis(20),
            worker: quick_config(&["q"]),
            ..resq_core::PoolConfig::default()
        },
    );
    let mut errors = pool.subscribe();
    let stop = CancellationToken::new();
    let result = tokio::time::timeout(LIMIT, pool.run_until(stop.clone()))
        .await
        .expect("the pool stops by itself");
    let err = result.expect_err("the permanent error is returned");
    assert_eq!(err.backend_kind(), Some(BackendErrorKind::Permanent), "{err}");
    let mut reports = 0;
    while let Ok(e) = errors.try_recv() {
        if is_error(&e) {
            reports += 1;
        }
    }
    // At most one report per worker started (two), not one per check.
    assert!((1..=2).contains(&reports), "{reports} reports");
    outage.recover();
    for id in backend.workers().await.unwrap() {
        backend
            .clean_worker(&id, resq_core::backend::Orphan::Requeue)
            .await
            .unwrap();
    }
}

/// A task server whose scheduler stops on a permanent error stops as a
/// whole: its healthy pool stops gracefully too, and `run` returns the
/// error. So does one whose boot-time enqueue of periodic tasks meets a
/// permanent error (before any worker could pick the tasks up).
pub async fn task_server_stops_on_a_permanent_error(backend: Arc<dyn Backend>) {
    use resq_core::config::TaskServerConfig;
    use resq_core::task::{TaskDef, Tasks};
    use resq_core::TaskServer;
    let config = TaskServerConfig {
        scheduler: true,
        max_task_processors: 1,
        min_task_processors: 1,
        queues: vec!["q".to_owned()],
        timeout_ms: 50,
        check_timeout_ms: 50,
        ..TaskServerConfig::default()
    };
    // The scheduler's backend fails permanently; the pool's is healthy.
    let outage = Outage::new(Arc::clone(&backend));
    outage.fail(BackendErrorKind::Permanent, None);
    let faulty: Arc<dyn Backend> = outage.clone();
    let log = runs();
    let tasks = standard_tasks(&log);
    let scheduler = resq_core::Scheduler::new(Arc::clone(&faulty), quick_scheduler()).unwrap();
    let server = TaskServer::builder(Arc::clone(&backend), Arc::clone(&tasks), config.clone())
        .scheduler(scheduler)
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let ran = tokio::time::timeout(LIMIT, server.run_until(stop.clone()))
        .await
        .expect("the node stops by itself when its scheduler stops");
    let err = ran.expect_err("the scheduler's permanent error is returned");
    assert_eq!(err.backend_kind(), Some(BackendErrorKind::Permanent), "{err}");
    assert!(!stop.is_cancelled(), "nobody asked the node to stop");
    // The healthy pool stopped gracefully: no worker is left registered.
    assert!(backend.workers().await.unwrap().is_empty());

    // Periodic tasks enqueued at boot through a queue client whose backend
    // fails permanently: the node stops instead of retrying for ever.
    let mut periodic = Tasks::new();
    periodic
        .define(
            TaskDef::from_fn(
                "tick",
                |(_inputs,): (serde_json::Value,), _ctx: resq_core::task::JobContext| async {
                    Ok::<_, resq_core::task::TaskError>(())
                },
            )
            .queue("q")
            .frequency(Duration::from_secs(60)),
        )
        .unwrap();
    let periodic = Arc::new(periodic);
    let server = TaskServer::builder(Arc::clone(&backend), Arc::clone(&periodic), config)
        .queue(Queue::with_tasks(Arc::clone(&faulty), Arc::clone(&periodic)))
        .build()
        .unwrap();
    let ran = tokio::time::timeout(LIMIT, server.run_until(stop.clone()))
        .await
        .expect("the node stops by itself when its boot enqueue fails permanently");
    let err = ran.expect_err("the boot enqueue's permanent error is returned");
    assert_eq!(err.backend_kind(), Some(BackendErrorKind::Permanent), "{err}");
    assert!(backend.workers().await.unwrap().is_empty());
    outage.recover();
}

/// A live worker that was cleaned as dead while it could not reach the
/// store (the scheduler could) registers again when its pings get through
/// once more: it is kept in the registry instead of pinging as a ghost.
pub async fn a_worker_cleaned_while_cut_off_registers_again(backend: Arc<dyn Backend>) {
    use resq_core::backend::Orphan;
    for concurrency in [1, 3] {
        let outage = Outage::new(Arc::clone(&backend));
        let log = runs();
        let tasks = standard_tasks(&log);
        let mut config = quick_config(&["cutoff"]);
        config.concurrency = concurrency;
        let faulty: Arc<dyn Backend> = outage.clone();
        let w = spawn_worker(&faulty, &tasks, config);
        wait_until(LIMIT, "the worker registered", || {
            let b = Arc::clone(&backend);
            async move { b.workers().await.unwrap().len() == concurrency }
        })
        .await;
        let registered = backend.workers().await.unwrap();
        // Cut off from the store, and cleaned as dead by someone who is not.
        outage.fail(BackendErrorKind::Transient, None);
        for id in &registered {
            backend.clean_worker(id, Orphan::Requeue).await.unwrap();
        }
        assert!(backend.workers().await.unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(300)).await;
        outage.recover();
        wait_until(LIMIT, "the worker registered again", || {
            let (b, registered) = (Arc::clone(&backend), registered.clone());
            async move { b.workers().await.unwrap() == registered }
        })
        .await;
        w.shutdown().await;
        assert!(
            backend.workers().await.unwrap().is_empty(),
            "it unregisters on shutdown"
        );
    }
}
