//! Whole-engine scenarios: many workers, crashes, graceful shutdown, the
//! pool, and a job's full path from `enqueue_in` to done.

use crate::support::{next_event, quick_config, recorded, runs, spawn_worker, standard_tasks, wait_until};
use resq_core::backend::Backend;
use resq_core::task::{JobContext, TaskError, Tasks};
use resq_core::{PoolConfig, Queue, Scheduler, SchedulerConfig, Worker, WorkerEvent, WorkerPool};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(20);

/// The backend names itself (for logs and skip messages).
pub async fn backend_kind_is_named(backend: Arc<dyn Backend>) {
    assert!(!backend.kind().is_empty());
}

/// N workers on M jobs, nothing crashing: every job runs exactly once and
/// `processed` counts M.
pub async fn concurrent_workers_run_each_job_once(backend: Arc<dyn Backend>) {
    const JOBS: i64 = 300;
    let log = runs();
    let tasks = standard_tasks(&log);
    let q = Queue::new(Arc::clone(&backend));
    let jobs = (0..JOBS).map(|i| resq_core::NewJob::new(if i % 3 == 0 { "a" } else { "b" }, "record", (i,)).unwrap());
    q.enqueue_batch(jobs).await.unwrap();
    let workers: Vec<_> = (0..4)
        .map(|_| spawn_worker(&backend, &tasks, quick_config(&["a", "b"])))
        .collect();
    wait_until(LIMIT, "every job ran", || {
        let log = Arc::clone(&log);
        async move { recorded(&log).len() as i64 >= JOBS }
    })
    .await;
    for w in workers {
        w.shutdown().await;
    }
    let mut counts: HashMap<i64, usize> = HashMap::new();
    for (_, args) in recorded(&log) {
        *counts.entry(args[0].as_i64().unwrap()).or_default() += 1;
    }
    assert_eq!(counts.len() as i64, JOBS, "every job ran");
    assert!(counts.values().all(|&n| n == 1), "a job ran twice");
    assert_eq!(backend.stat("processed").await.unwrap(), JOBS);
    assert_eq!(q.length("a").await.unwrap() + q.length("b").await.unwrap(), 0);
}

/// A worker that dies mid-job without any cleanup (its task is aborted, so
/// it stops pinging): the scheduler finds it, re-enqueues the job, and
/// another worker runs it to success.
pub async fn crashed_worker_job_is_recovered(backend: Arc<dyn Backend>) {
    let attempts = Arc::new(AtomicUsize::new(0));
    let mut tasks = Tasks::new();
    let a = Arc::clone(&attempts);
    tasks
        .register_fn("fragile", move |_: Vec<serde_json::Value>, _ctx: JobContext| {
            let n = a.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    // The first attempt hangs until its worker "crashes".
                    std::future::pending::<()>().await;
                }
                Ok::<_, TaskError>("done")
            }
        })
        .unwrap();
    let tasks = Arc::new(tasks);
    Queue::new(Arc::clone(&backend))
        .enqueue("q", "fragile", ())
        .await
        .unwrap();

    let mut doomed = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    next_event(&mut doomed.events, LIMIT, |e| {
        matches!(e, WorkerEvent::Job { .. }).then_some(())
    })
    .await;
    doomed.handle.abort(); // a crash: no unregistration, no completion
    let _ = doomed.handle.await;
    assert_eq!(
        backend.workers().await.unwrap().len(),
        1,
        "the dead worker is still registered"
    );

    let survivor = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    let scheduler = Scheduler::new(
        Arc::clone(&backend),
        SchedulerConfig {
            poll_interval: Duration::from_millis(100),
            leader_ttl: Duration::from_secs(5),
            stuck_worker_timeout: Some(Duration::from_millis(600)),
            // quick_config's workers ping every 100 ms.
            worker_ping_interval: Duration::from_millis(100),
            ..SchedulerConfig::default()
        },
    )
    .unwrap();
    wait_until(LIMIT, "the job is recovered and run", || {
        let (s, b) = (&scheduler, Arc::clone(&backend));
        async move {
            s.poll().await.unwrap();
            b.stat("processed").await.unwrap() == 1
        }
    })
    .await;
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert_eq!(backend.failed_count().await.unwrap(), 0);
    let names: Vec<String> = backend.workers().await.unwrap().into_iter().map(|w| w.name).collect();
    assert_eq!(names, vec![survivor.name.clone()], "the dead worker is gone");
    survivor.shutdown().await;
}

/// Shutdown while a job runs: no new job is claimed, the running one
/// finishes and is counted, then the worker unregisters.
pub async fn graceful_shutdown_finishes_in_flight_job(backend: Arc<dyn Backend>) {
    let log = runs();
    let tasks = standard_tasks(&log);
    let q = Queue::new(Arc::clone(&backend));
    q.enqueue("q", "slow", (400,)).await.unwrap();
    q.enqueue("q", "record", ("after",)).await.unwrap();
    let mut w = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    next_event(&mut w.events, LIMIT, |e| {
        matches!(e, WorkerEvent::Job { .. }).then_some(())
    })
    .await;
    w.stop.cancel();
    tokio::time::timeout(LIMIT, w.handle).await.unwrap().unwrap().unwrap();
    assert_eq!(recorded(&log).len(), 1, "the in-flight job finished");
    assert_eq!(backend.stat("processed").await.unwrap(), 1);
    assert_eq!(q.length("q").await.unwrap(), 1, "no new job was claimed");
    assert!(backend.workers().await.unwrap().is_empty());
    assert!(q.all_working_on().await.unwrap().is_empty());
}

/// A job still running at the shutdown deadline is aborted and put back at
/// the head of its queue, not lost and not failed.
pub async fn shutdown_deadline_requeues_unfinished_job(backend: Arc<dyn Backend>) {
    let tasks = standard_tasks(&runs());
    let q = Queue::new(Arc::clone(&backend));
    q.enqueue("q", "slow", (30_000,)).await.unwrap();
    q.enqueue("q", "record", ("next",)).await.unwrap();
    let mut config = quick_config(&["q"]);
    config.shutdown_timeout = Duration::from_millis(200);
    let mut w = spawn_worker(&backend, &tasks, config);
    next_event(&mut w.events, LIMIT, |e| {
        matches!(e, WorkerEvent::Job { .. }).then_some(())
    })
    .await;
    w.stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), w.handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        backend.queue_range("q", 0, -1).await.unwrap(),
        vec![
            r#"{"class":"slow","queue":"q","args":[30000]}"#.to_owned(),
            r#"{"class":"record","queue":"q","args":["next"]}"#.to_owned()
        ]
    );
    assert_eq!(backend.failed_count().await.unwrap(), 0);
    assert!(backend.workers().await.unwrap().is_empty());
}

/// `Worker::run` takes any future as its shutdown signal.
pub async fn run_stops_on_a_caller_future(backend: Arc<dyn Backend>) {
    let tasks = standard_tasks(&runs());
    let worker = Worker::new(Arc::clone(&backend), tasks, quick_config(&["q"]));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        worker
            .run(async move {
                let _ = rx.await;
            })
            .await
    });
    wait_until(LIMIT, "registered", || {
        let b = Arc::clone(&backend);
        async move { b.workers().await.unwrap().len() == 1 }
    })
    .await;
    tx.send(()).unwrap();
    tokio::time::timeout(LIMIT, handle).await.unwrap().unwrap().unwrap();
    assert!(backend.workers().await.unwrap().is_empty());
}

/// The pool grows past `min` under a backlog, never beyond `max`, runs every
/// job once, and shrinks back to `min` when idle.
pub async fn pool_scales_with_backlog(backend: Arc<dyn Backend>) {
    let log = runs();
    let tasks = standard_tasks(&log);
    let q = Queue::new(Arc::clone(&backend));
    let jobs = (0..24).map(|_| resq_core::NewJob::new("q", "slow", (150,)).unwrap());
    q.enqueue_batch(jobs).await.unwrap();
    let pool = Arc::new(WorkerPool::new(
        Arc::clone(&backend),
        tasks,
        PoolConfig {
            min: 1,
            max: 4,
            check_interval: Duration::from_millis(30),
            // Scaling on backlog alone: a test machine under load may lag.
            max_event_loop_delay: Duration::from_secs(1),
            worker: quick_config(&["q"]),
        },
    ));
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let (p, t) = (Arc::clone(&pool), stop.clone());
        async move { p.run_until(t).await }
    });
    let mut peak = 0;
    let deadline = tokio::time::Instant::now() + LIMIT;
    while recorded(&log).len() < 24 {
        peak = peak.max(pool.size());
        assert!(pool.size() <= 4, "pool exceeded max");
        assert!(tokio::time::Instant::now() < deadline, "jobs did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(peak >= 2, "the pool never grew (peak {peak})");
    wait_until(LIMIT, "pool shrinks to min", || async { pool.size() == 1 }).await;
    assert!(backend.workers().await.unwrap().len() <= 4);
    stop.cancel();
    running.await.unwrap().unwrap();
    assert_eq!(recorded(&log).len(), 24, "each job ran once");
    assert!(backend.workers().await.unwrap().is_empty());
}

/// The full path: `enqueue_in` → scheduler promotion → worker → success,
/// with the right arguments (spec §8.6).
pub async fn delayed_job_runs_end_to_end(backend: Arc<dyn Backend>) {
    let log = runs();
    let tasks = standard_tasks(&log);
    let q = Queue::new(Arc::clone(&backend));
    q.enqueue_in(Duration::from_millis(1), "math", "record", (1, "two"))
        .await
        .unwrap();
    assert_eq!(q.scheduled_at("math", "record", (1, "two")).await.unwrap().len(), 1);
    let scheduler = Scheduler::new(
        Arc::clone(&backend),
        SchedulerConfig {
            poll_interval: Duration::from_millis(100),
            ..SchedulerConfig::default()
        },
    )
    .unwrap();
    wait_until(LIMIT, "promoted", || {
        let (s, q) = (&scheduler, q.clone());
        async move {
            s.poll().await.unwrap();
            q.length("math").await.unwrap() == 1
        }
    })
    .await;
    assert!(q.scheduled_at("math", "record", (1, "two")).await.unwrap().is_empty());
    let w = spawn_worker(&backend, &tasks, quick_config(&["math"]));
    wait_until(LIMIT, "ran", || {
        let log = Arc::clone(&log);
        async move { recorded(&log).len() == 1 }
    })
    .await;
    assert_eq!(
        recorded(&log)[0].1,
        vec![serde_json::json!(1), serde_json::json!("two")]
    );
    w.shutdown().await;
}

/// A worker with 8 slots runs every job exactly once, registers each slot
/// while it runs, and unregisters them all when it stops.
pub async fn worker_slots_run_each_job_once(backend: Arc<dyn Backend>) {
    const JOBS: i64 = 300;
    let log = runs();
    let tasks = standard_tasks(&log);
    let q = Queue::new(Arc::clone(&backend));
    q.enqueue_batch((0..JOBS).map(|i| resq_core::NewJob::new("q", "record", (i,)).unwrap()))
        .await
        .unwrap();
    let mut config = quick_config(&["q"]);
    config.concurrency = 8;
    let w = spawn_worker(&backend, &tasks, config);
    wait_until(LIMIT, "every job ran", || {
        let log = Arc::clone(&log);
        async move { recorded(&log).len() as i64 >= JOBS }
    })
    .await;
    let slots = backend.workers().await.unwrap();
    assert_eq!(slots.len(), 8, "one registration per slot: {slots:?}");
    assert!(slots.iter().all(|s| s.name.starts_with(&format!("{}.", w.name))));
    w.shutdown().await;
    let mut counts: HashMap<i64, usize> = HashMap::new();
    for (_, args) in recorded(&log) {
        *counts.entry(args[0].as_i64().unwrap()).or_default() += 1;
    }
    assert_eq!(counts.len() as i64, JOBS);
    assert!(counts.values().all(|&n| n == 1), "a job ran twice");
    assert_eq!(backend.stat("processed").await.unwrap(), JOBS);
    assert!(backend.workers().await.unwrap().is_empty());
}

/// Slots still busy at the shutdown deadline put their jobs back at the
/// head of the queue; jobs that finished are counted.
pub async fn worker_slots_shutdown_requeues_unfinished(backend: Arc<dyn Backend>) {
    let log = runs();
    let tasks = standard_tasks(&log);
    let q = Queue::new(Arc::clone(&backend));
    q.enqueue("q", "slow", (30_000,)).await.unwrap();
    q.enqueue("q", "slow", (30_001,)).await.unwrap();
    q.enqueue("q", "record", ("quick",)).await.unwrap();
    let mut config = quick_config(&["q"]);
    config.concurrency = 4;
    config.shutdown_timeout = Duration::from_millis(300);
    let w = spawn_worker(&backend, &tasks, config);
    wait_until(LIMIT, "the quick job ran", || {
        let log = Arc::clone(&log);
        async move { recorded(&log).len() == 1 }
    })
    .await;
    wait_until(LIMIT, "processed counted", || {
        let b = Arc::clone(&backend);
        async move { b.stat("processed").await.unwrap() == 1 }
    })
    .await;
    w.stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), w.handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut left = backend.queue_range("q", 0, -1).await.unwrap();
    left.sort();
    assert_eq!(
        left,
        vec![
            r#"{"class":"slow","queue":"q","args":[30000]}"#.to_owned(),
            r#"{"class":"slow","queue":"q","args":[30001]}"#.to_owned()
        ]
    );
    assert_eq!(backend.failed_count().await.unwrap(), 0);
    assert!(backend.workers().await.unwrap().is_empty());
}

/// Slot jobs that call the backend themselves (locks, enqueues) all finish,
/// however small the backend's connection pool: a job waiting on the
/// backend never holds up the worker's own completions and claims, nor the
/// other way round.
pub async fn worker_slots_jobs_using_the_backend_finish(backend: Arc<dyn Backend>) {
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = resq_core::Tasks::new();
    let b = Arc::clone(&backend);
    let d = Arc::clone(&done);
    tasks
        .register_fn("busy", move |(n,): (u64,), _ctx: resq_core::JobContext| {
            let (b, d) = (Arc::clone(&b), Arc::clone(&d));
            async move {
                for i in 0..5 {
                    let key = format!("lock:busy:{n}:{i}");
                    b.acquire_lock(&key, "v", Duration::from_secs(60)).await?;
                    b.incr_stat("busy_calls", 1).await?;
                    b.release_lock(&key, "v").await?;
                }
                d.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, resq_core::TaskError>(())
            }
        })
        .unwrap();
    let tasks = Arc::new(tasks);
    let q = Queue::new(Arc::clone(&backend));
    for n in 0..40u64 {
        q.enqueue("busy", "busy", (n,)).await.unwrap();
    }
    let mut cfg = quick_config(&["busy"]);
    cfg.concurrency = 16;
    let w = spawn_worker(&backend, &tasks, cfg);
    wait_until(Duration::from_secs(30), "every busy job finished", || {
        let d = Arc::clone(&done);
        async move { d.load(std::sync::atomic::Ordering::SeqCst) == 40 }
    })
    .await;
    w.shutdown().await;
    assert_eq!(backend.stat("busy_calls").await.unwrap(), 200);
    assert_eq!(backend.stat("processed").await.unwrap(), 40);
}

/// Claims and completions that fail, some refused before reaching the
/// backend and some applied with their replies lost (a connection dropped
/// between a commit and its acknowledgement), rounds whose completions were
/// recorded but whose claim failed, and working-on reads that fail, lose no
/// job and record none twice: a single worker and a worker with 4 slots
/// each run every job exactly once, count each exactly once, fail none,
/// and leave no queued job or working-on record behind; so does the 4-slot
/// worker when every job has the same payload bytes (Resque payloads carry
/// no id, so a slot's new job can look exactly like its last one).
pub async fn failed_claims_and_completions_lose_no_job(backend: Arc<dyn Backend>) {
    const JOBS: i64 = 40;
    let plan = crate::faults::FaultPlan {
        lose_every: 3,
        claim_fails_every: 7,
        refuse_every: 5,
    };
    for (concurrency, queue, same_payload) in [
        (1usize, "faults1", false),
        (4, "faults4", false),
        (4, "faults4same", true),
    ] {
        let faulty = crate::faults::Faulty::new(Arc::clone(&backend), plan);
        let wrapped: Arc<dyn Backend> = faulty.clone();
        let log = runs();
        let tasks = standard_tasks(&log);
        let q = Queue::new(Arc::clone(&backend));
        let arg = |i: i64| if same_payload { 7 } else { i };
        q.enqueue_batch((0..JOBS).map(|i| resq_core::NewJob::new(queue, "record", (arg(i),)).unwrap()))
            .await
            .unwrap();
        let before = backend.stat("processed").await.unwrap();
        let mut config = quick_config(&[queue]);
        config.concurrency = concurrency;
        let w = spawn_worker(&wrapped, &tasks, config);
        wait_until(LIMIT, "every outcome recorded", || {
            let b = Arc::clone(&backend);
            async move { b.stat("processed").await.unwrap() >= before + JOBS }
        })
        .await;
        faulty.disarm();
        w.shutdown().await;
        let case = format!("concurrency {concurrency}, same payloads {same_payload}");
        let ran = recorded(&log);
        assert_eq!(ran.len() as i64, JOBS, "{case}: jobs lost or run twice");
        if !same_payload {
            let mut counts: HashMap<i64, usize> = HashMap::new();
            for (_, args) in ran {
                *counts.entry(args[0].as_i64().unwrap()).or_default() += 1;
            }
            assert_eq!(counts.len() as i64, JOBS, "{case}: jobs lost");
            assert!(counts.values().all(|&n| n == 1), "{case}: a job ran twice: {counts:?}");
        }
        assert_eq!(
            backend.stat("processed").await.unwrap(),
            before + JOBS,
            "{case}: an outcome was counted twice"
        );
        assert_eq!(backend.failed_count().await.unwrap(), 0, "{case}");
        assert_eq!(backend.queue_len(queue).await.unwrap(), 0, "{case}");
        assert!(backend.workers().await.unwrap().is_empty(), "{case}");
        assert!(
            faulty.lost_replies() >= 5 && faulty.refused_calls() >= 2,
            "{case}: too few faults injected: {} lost, {} refused",
            faulty.lost_replies(),
            faulty.refused_calls()
        );
        if concurrency > 1 {
            assert!(faulty.failed_claims() >= 1, "{case}: no round had its claim fail");
        }
    }
}

/// Whether no registered worker has a working-on record.
async fn nothing_running(q: &Queue) -> bool {
    q.all_working_on()
        .await
        .unwrap()
        .values()
        .all(|s| *s == resq_core::queue::WorkerStatus::Started)
}

/// A plugin whose `before_perform` or `after_perform` panics.
struct PanicHook {
    before: bool,
}

#[async_trait::async_trait]
impl resq_core::plugin::Plugin for PanicHook {
    fn name(&self) -> &str {
        "PanicHook"
    }
    async fn before_perform(&self, _ctx: &mut resq_core::plugin::PerformContext<'_>) -> resq_core::Result<bool> {
        if self.before {
            panic!("boom");
        }
        Ok(true)
    }
    async fn after_perform(&self, _ctx: &mut resq_core::plugin::PerformContext<'_>) -> resq_core::Result<()> {
        if !self.before {
            panic!("boom");
        }
        Ok(())
    }
}

/// A panic anywhere in a job's life (a `before_perform` hook, the task, the
/// periodic re-arm, an `after_perform` hook) fails that job alone, with a
/// single slot and with several: each lands on the failed list as `Panic`
/// with a reason naming where it panicked, `processed`/`failed` count
/// right, the worker goes on to the next job, and no working-on record is
/// left behind.
pub async fn panics_anywhere_fail_only_their_job(backend: Arc<dyn Backend>) {
    use resq_core::TaskDef;
    for concurrency in [1usize, 3] {
        let queue = format!("panics{concurrency}");
        let log = runs();
        let r = Arc::clone(&log);
        let record = move |args: Vec<serde_json::Value>, ctx: JobContext| {
            let r = Arc::clone(&r);
            async move {
                r.lock().unwrap().push((ctx.job.class.clone(), args));
                Ok::<_, TaskError>(())
            }
        };
        let tasks = crate::support::registry(vec![
            TaskDef::from_fn("ok", record.clone()).queue(queue.as_str()),
            TaskDef::from_fn("before_panics", record.clone())
                .queue(queue.as_str())
                .plugin(PanicHook { before: true }),
            TaskDef::from_fn("after_panics", record.clone())
                .queue(queue.as_str())
                .plugin(PanicHook { before: false }),
            TaskDef::from_fn(
                "task_panics",
                |_: Vec<serde_json::Value>, _ctx: JobContext| async move {
                    if true {
                        panic!("task boom");
                    }
                    Ok::<(), TaskError>(())
                },
            )
            .queue(queue.as_str()),
            TaskDef::from_fn("rearm_panics", record.clone())
                .queue(queue.as_str())
                .frequency(Duration::from_secs(3600)),
        ]);
        let faulty = crate::faults::Faulty::new(Arc::clone(&backend), crate::faults::FaultPlan::default());
        // Only the re-arm of the periodic task removes delayed jobs by class.
        faulty.panic_in(Some("remove_delayed_by_class"));
        let wrapped: Arc<dyn Backend> = faulty.clone();
        let q = Queue::new(Arc::clone(&backend));
        let (processed, failed) = (
            backend.stat("processed").await.unwrap(),
            backend.stat("failed").await.unwrap(),
        );
        for (i, class) in ["before_panics", "task_panics", "rearm_panics", "after_panics"]
            .into_iter()
            .enumerate()
        {
            q.enqueue(&queue, class, (i,)).await.unwrap();
            q.enqueue(&queue, "ok", (i,)).await.unwrap();
        }
        let mut config = quick_config(&[&queue]);
        config.concurrency = concurrency;
        let w = spawn_worker(&wrapped, &tasks, config);
        let case = format!("concurrency {concurrency}");
        wait_until(LIMIT, "every outcome recorded", || {
            let b = Arc::clone(&backend);
            async move {
                b.stat("processed").await.unwrap() == processed + 4 && b.stat("failed").await.unwrap() == failed + 4
            }
        })
        .await;
        // It goes on: one more job runs after all the panics.
        q.enqueue(&queue, "ok", ("last",)).await.unwrap();
        wait_until(LIMIT, "the worker goes on", || {
            let b = Arc::clone(&backend);
            async move { b.stat("processed").await.unwrap() == processed + 5 }
        })
        .await;
        assert!(!w.handle.is_finished(), "{case}: the worker died");
        assert!(nothing_running(&q).await, "{case}: working-on left");
        assert_eq!(backend.stat("failed").await.unwrap(), failed + 4, "{case}");
        let oks = recorded(&log).iter().filter(|(c, _)| c == "ok").count();
        assert_eq!(oks, 5, "{case}: the ok jobs ran once each");
        let entries = q.failed(0, -1).await.unwrap();
        let mut reasons: Vec<(String, String)> = entries
            .iter()
            .filter(|f| f.queue.as_deref() == Some(queue.as_str()))
            .map(|f| {
                let class = resq_core::Job::decode(f.payload.as_deref().unwrap()).unwrap().class;
                assert_eq!(f.exception.as_deref(), Some("Panic"), "{case}: {f:?}");
                (class, f.error.clone().unwrap_or_default())
            })
            .collect();
        reasons.sort();
        assert_eq!(reasons.len(), 4, "{case}: {reasons:?}");
        let expect = [
            ("after_panics", "PanicHook after_perform panicked: boom"),
            ("before_panics", "PanicHook before_perform panicked: boom"),
            ("rearm_panics", "re-enqueueing the periodic task panicked"),
            ("task_panics", "task boom"),
        ];
        for ((class, error), (want_class, want)) in reasons.iter().zip(expect) {
            assert_eq!(class, want_class, "{case}");
            assert!(
                error.contains(want),
                "{case}: {class} failed with {error:?}, not {want:?}"
            );
        }
        faulty.panic_in(None);
        w.shutdown().await;
        assert!(backend.workers().await.unwrap().is_empty(), "{case}");
    }
}

/// Dropping a running `WorkerPool::run` or `TaskServer::run` future stops
/// its workers: they finish, unregister, and take no more jobs. Dropping a
/// bare `Worker::run` future stops the worker at once (its registration is
/// left for the stuck-worker clean-up, as after a crash); it takes no more
/// jobs either.
pub async fn dropping_run_stops_workers(backend: Arc<dyn Backend>) {
    let tasks = standard_tasks(&runs());
    let q = Queue::new(Arc::clone(&backend));
    let registered = |n: usize| {
        let b = Arc::clone(&backend);
        async move {
            wait_until(LIMIT, "workers registered", || {
                let b = Arc::clone(&b);
                async move { b.workers().await.unwrap().len() >= n }
            })
            .await;
        }
    };
    let unregistered = || {
        let b = Arc::clone(&backend);
        async move {
            wait_until(LIMIT, "every worker stops and unregisters", || {
                let b = Arc::clone(&b);
                async move { b.workers().await.unwrap().is_empty() }
            })
            .await;
        }
    };
    // A job enqueued now stays queued: nothing takes it any more.
    let stays = |queue: &str| {
        let (q, queue) = (q.clone(), queue.to_owned());
        async move {
            let before = q.length(&queue).await.unwrap();
            q.enqueue(&queue, "record", ("after the drop",)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(
                q.length(&queue).await.unwrap(),
                before + 1,
                "a dropped worker took a job"
            );
        }
    };
    for concurrency in [1usize, 3] {
        let queue = format!("dropped{concurrency}");
        let mut worker = quick_config(&[&queue]);
        worker.concurrency = concurrency;
        let pool = WorkerPool::new(
            Arc::clone(&backend),
            Arc::clone(&tasks),
            PoolConfig {
                min: 2,
                max: 2,
                check_interval: Duration::from_millis(20),
                worker: worker.clone(),
                ..PoolConfig::default()
            },
        );
        tokio::select! {
            r = pool.run(std::future::pending()) => panic!("the pool ended: {r:?}"),
            () = registered(2 * concurrency) => {}
        }
        unregistered().await;
        stays(&queue).await;

        let server = resq_core::TaskServer::new(
            Arc::clone(&backend),
            Arc::clone(&tasks),
            resq_core::config::TaskServerConfig {
                queues: vec![queue.clone()],
                timeout_ms: 100,
                check_timeout_ms: 20,
                min_task_processors: 2,
                max_task_processors: 2,
                ..resq_core::config::TaskServerConfig::default()
            },
        )
        .unwrap();
        // The server's workers have one slot each.
        tokio::select! {
            r = server.run(std::future::pending()) => panic!("the server ended: {r:?}"),
            () = registered(2) => {}
        }
        unregistered().await;
        stays(&queue).await;

        let single = Worker::new(Arc::clone(&backend), Arc::clone(&tasks), worker);
        tokio::select! {
            r = single.run(std::future::pending()) => panic!("the worker ended: {r:?}"),
            () = registered(concurrency) => {}
        }
        stays(&queue).await;
        for id in backend.workers().await.unwrap() {
            backend
                .clean_worker(&id, resq_core::backend::Orphan::Requeue)
                .await
                .unwrap();
        }
    }
}

/// Retry (3 attempts) with lost replies and refused calls: a multi-slot
/// worker's lost-reply recovery reads the per-slot counters that Retry
/// also bumps, and must still run each attempt exactly once. Every even job
/// fails its first attempt and succeeds on its retry; every odd job
/// succeeds at once. No job is lost, none runs more often than that, and
/// each outcome is counted once.
pub async fn retry_under_faults_runs_each_attempt_once(backend: Arc<dyn Backend>) {
    use resq_core::plugins::Retry;
    use resq_core::TaskDef;
    const JOBS: i64 = 30;
    let plan = crate::faults::FaultPlan {
        lose_every: 3,
        claim_fails_every: 7,
        refuse_every: 5,
    };
    let scheduler = crate::support::spawn_scheduler(&backend, None, crate::support::quick_scheduler());
    for concurrency in [1usize, 4] {
        let queue = format!("retried{concurrency}");
        let attempts: Arc<std::sync::Mutex<HashMap<i64, usize>>> = Arc::default();
        let a = Arc::clone(&attempts);
        let tasks = crate::support::registry(vec![TaskDef::from_fn(
            "flaky",
            move |(n,): (i64,), _ctx: JobContext| {
                let a = Arc::clone(&a);
                async move {
                    let attempt = {
                        let mut m = a.lock().unwrap();
                        let c = m.entry(n).or_default();
                        *c += 1;
                        *c
                    };
                    if n % 2 == 0 && attempt == 1 {
                        return Err(TaskError::new("first attempt fails"));
                    }
                    Ok(())
                }
            },
        )
        .queue(queue.as_str())
        .plugin(Retry::new())
        .plugin_options("Retry", serde_json::json!({"retryLimit": 3, "retryDelay": 100}))]);
        let faulty = crate::faults::Faulty::new(Arc::clone(&backend), plan);
        let wrapped: Arc<dyn Backend> = faulty.clone();
        let q = Queue::new(Arc::clone(&backend));
        q.enqueue_batch((0..JOBS).map(|i| resq_core::NewJob::new(queue.as_str(), "flaky", (i,)).unwrap()))
            .await
            .unwrap();
        let (processed, failed) = (
            backend.stat("processed").await.unwrap(),
            backend.stat("failed").await.unwrap(),
        );
        let mut config = quick_config(&[&queue]);
        config.concurrency = concurrency;
        let w = spawn_worker(&wrapped, &tasks, config);
        wait_until(LIMIT, "every job succeeded", || {
            let b = Arc::clone(&backend);
            async move { b.stat("processed").await.unwrap() >= processed + JOBS }
        })
        .await;
        // Let any extra copy (a retry of an attempt run twice) come due and run.
        wait_until(LIMIT, "nothing left delayed, queued or running", || {
            let (b, q) = (Arc::clone(&backend), q.clone());
            let queue = queue.clone();
            async move {
                b.delayed_timestamps().await.unwrap().is_empty()
                    && b.queue_len(&queue).await.unwrap() == 0
                    && nothing_running(&q).await
            }
        })
        .await;
        faulty.disarm();
        w.shutdown().await;
        let case = format!("concurrency {concurrency}");
        let attempts = attempts.lock().unwrap().clone();
        assert_eq!(attempts.len() as i64, JOBS, "{case}: jobs lost");
        for (n, runs) in &attempts {
            let want = if n % 2 == 0 { 2 } else { 1 };
            assert_eq!(*runs, want, "{case}: job {n} ran {runs} times: {attempts:?}");
        }
        assert_eq!(backend.stat("processed").await.unwrap(), processed + JOBS, "{case}");
        assert_eq!(backend.stat("failed").await.unwrap(), failed + JOBS / 2, "{case}");
        assert_eq!(backend.failed_count().await.unwrap(), 0, "{case}");
        assert!(
            faulty.lost_replies() >= 3 && faulty.refused_calls() >= 2,
            "{case}: too few faults injected: {} lost, {} refused",
            faulty.lost_replies(),
            faulty.refused_calls()
        );
    }
    scheduler.shutdown().await;
}

/// A pool worker whose task ends abnormally (here: it panics while
/// registering) is reported: the pool logs it and publishes an `error`
/// event naming the worker, then replaces it.
pub async fn pool_reports_a_worker_that_ends_abnormally(backend: Arc<dyn Backend>) {
    let faulty = crate::faults::Faulty::new(Arc::clone(&backend), crate::faults::FaultPlan::default());
    faulty.panic_in(Some("workers"));
    let wrapped: Arc<dyn Backend> = faulty.clone();
    let pool = WorkerPool::new(
        wrapped,
        standard_tasks(&runs()),
        PoolConfig {
            min: 1,
            max: 1,
            check_interval: Duration::from_millis(20),
            worker: quick_config(&["crashing"]),
            ..PoolConfig::default()
        },
    );
    let mut events = pool.subscribe();
    let stop = CancellationToken::new();
    let reported = async {
        let error = next_event(&mut events, LIMIT, |e| match e {
            WorkerEvent::Error { error, .. } if error.contains("ended abnormally") => Some(error.clone()),
            _ => None,
        })
        .await;
        faulty.panic_in(None);
        wait_until(LIMIT, "a replacement worker registers", || {
            let b = Arc::clone(&backend);
            async move { b.workers().await.unwrap().len() == 1 }
        })
        .await;
        stop.cancel();
        error
    };
    let (ran, error) = tokio::join!(pool.run_until(stop.clone()), reported);
    ran.unwrap();
    assert!(error.contains("injected panic in workers"), "{error}");
    assert!(backend.workers().await.unwrap().is_empty());
}

/// The pool adds no worker while the runtime lags (node-resque's
/// `maxEventLoopDelay`), and does once it no longer lags. On a runtime
/// with one thread, jobs that hold the thread in busy loops (60 ms, a
/// yield, 60 ms more) make the pool's timers fire late: with a
/// backlog and its one worker busy it holds at one worker, reporting
/// `multi_worker_action` holds with `lagging`; jobs that only await let
/// it grow.
pub async fn pool_holds_while_the_runtime_lags(backend: Arc<dyn Backend>) {
    tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        runtime.block_on(lagging_pool(backend));
    })
    .await
    .unwrap();
}

async fn lagging_pool(backend: Arc<dyn Backend>) {
    const CPU_JOBS: usize = 8;
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Tasks::new();
    let d = Arc::clone(&done);
    tasks
        .register_fn("spin", move |(ms,): (u64,), _ctx: JobContext| {
            let d = Arc::clone(&d);
            async move {
                let spin = |ms: u64| {
                    let start = std::time::Instant::now();
                    while start.elapsed() < Duration::from_millis(ms) {
                        std::hint::spin_loop();
                    }
                };
                spin(ms);
                tokio::task::yield_now().await;
                spin(ms);
                d.fetch_add(1, Ordering::SeqCst);
                Ok::<_, TaskError>(())
            }
        })
        .unwrap();
    tasks
        .register_fn("nap", |(ms,): (u64,), _ctx: JobContext| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, TaskError>(())
        })
        .unwrap();
    let q = Queue::new(Arc::clone(&backend));
    q.enqueue_batch((0..CPU_JOBS).map(|_| resq_core::NewJob::new("cpu", "spin", (60,)).unwrap()))
        .await
        .unwrap();
    let pool = WorkerPool::new(
        Arc::clone(&backend),
        Arc::new(tasks),
        PoolConfig {
            min: 1,
            max: 4,
            check_interval: Duration::from_millis(50),
            max_event_loop_delay: Duration::from_millis(5),
            worker: quick_config(&["cpu", "io"]),
        },
    );
    let events = crate::support::collect_events(pool.subscribe());
    let stop = CancellationToken::new();
    let watch = async {
        let mut peak = 0;
        wait_until(LIMIT, "the busy-looping jobs ran", || {
            peak = peak.max(pool.size());
            let d = Arc::clone(&done);
            async move { d.load(Ordering::SeqCst) == CPU_JOBS }
        })
        .await;
        let lagging_holds = crate::support::count_events(&events, |e| {
            matches!(
                e,
                WorkerEvent::PoolAction {
                    action: resq_core::pool::ScaleAction::Hold,
                    lagging: true,
                    ..
                }
            )
        });
        q.enqueue_batch((0..12).map(|_| resq_core::NewJob::new("io", "nap", (300,)).unwrap()))
            .await
            .unwrap();
        wait_until(LIMIT, "the pool grows without lag", || async { pool.size() >= 2 }).await;
        stop.cancel();
        (peak, lagging_holds)
    };
    let (ran, (peak, lagging_holds)) = tokio::join!(pool.run_until(stop.clone()), watch);
    ran.unwrap();
    assert_eq!(peak, 1, "the pool grew while the runtime lagged");
    assert!(lagging_holds >= 1, "no lagging hold was reported");
}
