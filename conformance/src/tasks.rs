//! The task layer: task definitions, enqueue by task name with inputs,
//! periodic tasks with one instance per cluster, and the task server's
//! node shapes (wire spec §5.2, §8.8, and the repairs of §7.4 #27).

use crate::support::{count_events, quick_config, registry, spawn_worker, wait_until};
use resq_core::backend::Backend;
use resq_core::config::TaskServerConfig;
use resq_core::plugin::{PerformContext, Plugin};
use resq_core::task::{Input, JobContext, TaskDef, TaskError, Tasks};
use resq_core::time::now_ms;
use resq_core::{Queue, TaskServer, WorkerEvent};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(20);
const PERIODIC: &str = "periodicTask";

/// A periodic task (every 60 s, on queue `periodic`) that counts its runs
/// and takes `run_ms` to run.
fn periodic(count: &Arc<AtomicUsize>, run_ms: u64) -> TaskDef {
    let count = Arc::clone(count);
    TaskDef::from_fn(PERIODIC, move |(_inputs,): (Value,), _ctx: JobContext| {
        let count = Arc::clone(&count);
        async move {
            tokio::time::sleep(Duration::from_millis(run_ms)).await;
            count.fetch_add(1, Ordering::SeqCst);
            Ok::<_, TaskError>(())
        }
    })
    .queue("periodic")
    .frequency(Duration::from_secs(60))
}

/// A plain task on queue `default` that records its inputs.
fn regular(seen: &Arc<Mutex<Vec<Value>>>) -> TaskDef {
    let seen = Arc::clone(seen);
    TaskDef::from_fn("regularTask", move |(inputs,): (Value,), _ctx: JobContext| {
        let seen = Arc::clone(&seen);
        async move {
            seen.lock().expect("seen").push(inputs);
            Ok::<_, TaskError>(())
        }
    })
}

/// Definitions: a duplicate name is an error; defaults are ActionHero's;
/// a periodic task gets JobLock, DelayQueueLock and QueueLock; a task with
/// both a frequency and a cron schedule is refused.
pub async fn definitions_and_periodic_plugins(_backend: Arc<dyn Backend>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Tasks::new();
    tasks.define(periodic(&count, 0)).unwrap();
    tasks.define(regular(&seen)).unwrap();
    assert!(matches!(
        tasks.define(regular(&seen)),
        Err(resq_core::Error::DuplicateTask(_))
    ));
    let p = tasks.get(PERIODIC).unwrap();
    let names: Vec<&str> = p.plugins().iter().map(|x| x.name()).collect();
    assert_eq!(names, ["JobLock", "DelayQueueLock", "QueueLock"]);
    assert_eq!(p.options_for("JobLock"), &json!({"reEnqueue": false}));
    let r = tasks.get("regularTask").unwrap();
    assert_eq!(
        (r.default_queue(), r.description_text(), r.is_periodic()),
        ("default", "regularTask", false)
    );
    assert!(r.plugins().is_empty());
    let both = periodic(&count, 0).cron(resq_core::cron::CronSchedule::parse("* * * * * *").unwrap());
    assert!(Tasks::new().define(both).is_err());
}

/// A periodic task enqueued at boot gives queue length 1; a second enqueue
/// of it returns false; three concurrent boots still leave one and fail none.
pub async fn periodic_task_enqueued_once_at_boot(backend: Arc<dyn Backend>) {
    let count = Arc::new(AtomicUsize::new(0));
    let tasks = registry(vec![periodic(&count, 0)]);
    let q = Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
    let boots: Vec<_> = (0..3)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move { q.enqueue_all_recurrent_jobs().await })
        })
        .collect();
    let mut started = 0;
    for b in boots {
        started += b.await.unwrap().unwrap().len();
    }
    assert_eq!(started, 1);
    assert_eq!(q.length("periodic").await.unwrap(), 1);
    assert!(!q.enqueue_task(PERIODIC, json!({})).await.unwrap());
    assert!(q.enqueue_all_recurrent_jobs().await.unwrap().is_empty());
    assert_eq!(q.length("periodic").await.unwrap(), 1);
    let job = q.queued("periodic", 0, -1).await.unwrap()[0].job().cloned().unwrap();
    assert_eq!(job.args, vec![json!({})]);
}

/// Five copies of a periodic task reaching five workers at once give one
/// execution and exactly one delayed re-enqueue, `frequency` later.
pub async fn five_concurrent_runs_give_one_execution(backend: Arc<dyn Backend>) {
    let count = Arc::new(AtomicUsize::new(0));
    let tasks = registry(vec![periodic(&count, 400)]);
    let payload = resq_core::job::encode_payload("periodic", PERIODIC, &[json!({})]);
    for _ in 0..5 {
        backend.push("periodic", &payload).await.unwrap();
    }
    let before = now_ms();
    let mut cfg = quick_config(&["periodic"]);
    cfg.concurrency = 5;
    let mut w = spawn_worker(&backend, &tasks, cfg);
    let log = w.take_events();
    wait_until(LIMIT, "all five taken", || {
        let log = Arc::clone(&log);
        async move {
            count_events(&log, |e| matches!(e, WorkerEvent::Skipped { .. }))
                + count_events(&log, |e| matches!(e, WorkerEvent::Success { .. }))
                == 5
        }
    })
    .await;
    w.shutdown().await;
    assert_eq!(count.load(Ordering::SeqCst), 1);
    let q = Queue::new(Arc::clone(&backend));
    assert_eq!(q.length("periodic").await.unwrap(), 0);
    let at = q.scheduled_at("periodic", PERIODIC, (json!({}),)).await.unwrap();
    assert_eq!(at.len(), 1, "one delayed re-enqueue");
    let expected = (before + 60_000) / 1000;
    assert!(
        (at[0] - expected).abs() <= 2,
        "re-enqueued at {} s, expected about {expected}",
        at[0]
    );
    assert!(q.timestamps().await.unwrap().len() == 1);
}

/// While an instance runs, a boot does not enqueue another; after the run
/// exactly one instance (the delayed re-enqueue) exists.
pub async fn boot_during_a_run_adds_no_instance(backend: Arc<dyn Backend>) {
    let count = Arc::new(AtomicUsize::new(0));
    let tasks = registry(vec![periodic(&count, 800)]);
    let q = Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
    assert_eq!(q.enqueue_all_recurrent_jobs().await.unwrap(), vec![PERIODIC.to_owned()]);
    let mut w = spawn_worker(&backend, &tasks, quick_config(&["periodic"]));
    crate::support::next_event(&mut w.events, LIMIT, |e| {
        matches!(e, WorkerEvent::Job { .. }).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        q.enqueue_all_recurrent_jobs().await.unwrap().is_empty(),
        "booted a second instance"
    );
    assert_eq!(q.length("periodic").await.unwrap(), 0);
    wait_until(LIMIT, "ran", || {
        let c = Arc::clone(&count);
        async move { c.load(Ordering::SeqCst) == 1 }
    })
    .await;
    wait_until(LIMIT, "re-enqueued", || {
        let q = q.clone();
        async move { q.timestamps().await.unwrap().len() == 1 }
    })
    .await;
    w.shutdown().await;
    assert_eq!(q.length("periodic").await.unwrap(), 0);
    assert!(
        q.enqueue_all_recurrent_jobs().await.unwrap().is_empty(),
        "delayed instance not seen"
    );
}

/// Re-arming removes instances by class whatever their args (ActionHero
/// deletes by `[null]` and misses `[{}]`); stopping removes one queued and
/// one delayed copy, returns 2, and frees the task to start again.
pub async fn recurrent_rearm_and_stop_work_by_class(backend: Arc<dyn Backend>) {
    let count = Arc::new(AtomicUsize::new(0));
    let tasks = registry(vec![periodic(&count, 0)]);
    let q = Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
    assert_eq!(q.enqueue_all_recurrent_jobs().await.unwrap().len(), 1);
    q.enqueue("periodic", PERIODIC, (json!({"odd": true}),)).await.unwrap();
    q.enqueue_recurrent_job(PERIODIC).await.unwrap();
    assert_eq!(
        q.length("periodic").await.unwrap(),
        0,
        "queued copies not removed by class"
    );
    assert_eq!(q.timestamps().await.unwrap().len(), 1);
    q.enqueue("periodic", PERIODIC, (json!({}),)).await.ok();
    backend
        .push(
            "periodic",
            &resq_core::job::encode_payload("periodic", PERIODIC, &[json!({})]),
        )
        .await
        .unwrap();
    assert_eq!(q.stop_recurrent_job(PERIODIC).await.unwrap(), 2);
    assert_eq!(q.length("periodic").await.unwrap(), 0);
    assert!(q.timestamps().await.unwrap().is_empty());
    assert!(q.enqueue_all_recurrent_jobs().await.unwrap() == vec![PERIODIC.to_owned()]);
    assert!(q.enqueue_recurrent_job("nope").await.is_err());
}

/// Enqueue by task name: args are `[inputs]` on the task's queue; the
/// delayed variants bucket as node-resque does; `del`, `del_by_class`,
/// `del_delayed` and `scheduled_at` agree.
pub async fn task_enqueue_and_inspection(backend: Arc<dyn Backend>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let tasks = registry(vec![regular(&seen)]);
    let q = Queue::with_tasks(Arc::clone(&backend), tasks);
    assert!(q.enqueue_task("regularTask", json!({"word": "first"})).await.unwrap());
    assert!(q.enqueue_task("regularTask", json!({"word": "second"})).await.unwrap());
    assert_eq!(q.length("default").await.unwrap(), 2);
    assert_eq!(
        q.del("default", "regularTask", (json!({"word": "first"}),), 0)
            .await
            .unwrap(),
        1
    );
    assert_eq!(q.del_by_class("default", "regularTask").await.unwrap(), 1);
    assert_eq!(q.length("default").await.unwrap(), 0);
    let at = now_ms() + 10_000;
    q.enqueue_task_at(at, "regularTask", json!({"word": "later"}))
        .await
        .unwrap();
    let ts = q.timestamps().await.unwrap();
    assert_eq!(ts.len(), 1);
    let floor = at.div_euclid(1000);
    let secs = ts[0] / 1000;
    assert!(secs > floor && secs <= floor + 2, "{secs} not in ({floor}, {floor}+2]");
    assert_eq!(ts[0], resq_core::time::delayed_bucket_of_ms(at) * 1000);
    let bucket = q.delayed_at(ts[0]).await.unwrap();
    assert_eq!(bucket.tasks.len(), 1);
    assert_eq!(q.all_delayed().await.unwrap().keys().copied().collect::<Vec<_>>(), ts);
    let args = (json!({"word": "later"}),);
    let scheduled = q.scheduled_at("default", "regularTask", args.clone()).await.unwrap();
    assert_eq!(
        q.del_delayed("default", "regularTask", args.clone()).await.unwrap(),
        scheduled
    );
    assert!(q.del_delayed("default", "regularTask", args).await.unwrap().is_empty());
    assert!(q.enqueue_task("missing", json!({})).await.is_err());
}

/// Declared inputs: defaults fill missing values, required inputs and
/// validators refuse bad calls before anything is stored.
pub async fn task_inputs_are_checked_on_enqueue(backend: Arc<dyn Backend>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let tasks = registry(vec![regular(&seen)
        .input("name", Input::required())
        .input("times", Input::optional().default_value(json!(1)))
        .input(
            "mood",
            Input::optional().validator(|v| match v.as_str() {
                Some("happy" | "sad") => Ok(()),
                _ => Err("must be happy or sad".into()),
            }),
        )]);
    let q = Queue::with_tasks(Arc::clone(&backend), tasks);
    assert!(q.enqueue_task("regularTask", json!({"times": 2})).await.is_err());
    assert!(q
        .enqueue_task("regularTask", json!({"name": "x", "mood": "angry"}))
        .await
        .is_err());
    assert_eq!(q.length("default").await.unwrap(), 0);
    assert!(q
        .enqueue_task("regularTask", json!({"name": "x", "mood": "happy"}))
        .await
        .unwrap());
    let job = q.queued("default", 0, -1).await.unwrap()[0].job().cloned().unwrap();
    assert_eq!(job.args, vec![json!({"name": "x", "mood": "happy", "times": 1})]);
}

/// A `before_perform` plugin (ActionHero's `preProcessor` middleware) can
/// change the arguments the task sees, or veto the run.
pub async fn before_perform_can_change_arguments_or_veto(backend: Arc<dyn Backend>) {
    struct Stamp;
    #[async_trait::async_trait]
    impl Plugin for Stamp {
        fn name(&self) -> &str {
            "Stamp"
        }
        async fn before_perform(&self, ctx: &mut PerformContext<'_>) -> resq_core::Result<bool> {
            let mut inputs = ctx.job.args.first().cloned().unwrap_or(json!({}));
            if inputs.get("veto").is_some() {
                return Ok(false);
            }
            inputs["stamped"] = json!(true);
            let mut job = (*ctx.job).clone();
            job.args = vec![inputs];
            ctx.job = Arc::new(job);
            Ok(true)
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let tasks = registry(vec![regular(&seen).plugin(Stamp)]);
    let q = Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
    q.enqueue_task("regularTask", json!({"veto": 1})).await.unwrap();
    q.enqueue_task("regularTask", json!({"a": 1})).await.unwrap();
    let w = spawn_worker(&backend, &tasks, quick_config(&["default"]));
    wait_until(LIMIT, "ran", || {
        let s = Arc::clone(&seen);
        async move { s.lock().unwrap().len() == 1 }
    })
    .await;
    w.shutdown().await;
    assert_eq!(*seen.lock().unwrap(), vec![json!({"a": 1, "stamped": true})]);
    assert_eq!(backend.stat("processed").await.unwrap(), 1);
}

async fn run_server(server: Arc<TaskServer>) -> (CancellationToken, tokio::task::JoinHandle<resq_core::Result<()>>) {
    let stop = CancellationToken::new();
    let token = stop.clone();
    let handle = tokio::spawn(async move { server.run_until(token).await });
    (stop, handle)
}

fn node(scheduler: bool, max: usize, queues: &[&str]) -> TaskServerConfig {
    TaskServerConfig {
        scheduler,
        max_task_processors: max,
        min_task_processors: usize::from(max > 0),
        queues: queues.iter().map(|s| (*s).to_owned()).collect(),
        timeout_ms: 100,
        check_timeout_ms: 100,
        ..TaskServerConfig::default()
    }
}

/// Node shapes: an enqueue-only node runs no worker and no scheduler; a
/// worker node works its queues but does not enqueue periodic tasks; a
/// scheduler node enqueues them at boot, leads, and its workers run them.
pub async fn task_server_node_shapes(backend: Arc<dyn Backend>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let tasks = registry(vec![periodic(&count, 0), regular(&seen)]);
    // Enqueue only.
    let producer = Arc::new(TaskServer::new(Arc::clone(&backend), Arc::clone(&tasks), node(false, 0, &["*"])).unwrap());
    assert!(producer.pool().is_none() && producer.scheduler().is_none());
    let (stop, h) = run_server(Arc::clone(&producer)).await;
    producer
        .queue()
        .enqueue_task("regularTask", json!({"n": 1}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(backend.workers().await.unwrap().is_empty());
    assert_eq!(backend.leader().await.unwrap(), None);
    assert_eq!(producer.queue().length("default").await.unwrap(), 1);
    assert_eq!(producer.queue().length("periodic").await.unwrap(), 0);
    stop.cancel();
    h.await.unwrap().unwrap();
    // Works, does not schedule.
    let worker =
        Arc::new(TaskServer::new(Arc::clone(&backend), Arc::clone(&tasks), node(false, 2, &["default"])).unwrap());
    let (stop, h) = run_server(Arc::clone(&worker)).await;
    wait_until(LIMIT, "worker node ran the job", || {
        let s = Arc::clone(&seen);
        async move { s.lock().unwrap().len() == 1 }
    })
    .await;
    assert_eq!(backend.leader().await.unwrap(), None);
    assert_eq!(worker.queue().length("periodic").await.unwrap(), 0);
    stop.cancel();
    h.await.unwrap().unwrap();
    // Schedules and works.
    let full = Arc::new(
        TaskServer::new(
            Arc::clone(&backend),
            Arc::clone(&tasks),
            node(true, 1, &["periodic", "default"]),
        )
        .unwrap(),
    );
    let (stop, h) = run_server(Arc::clone(&full)).await;
    wait_until(LIMIT, "periodic task ran and was re-armed", || {
        let (c, q) = (Arc::clone(&count), full.queue().clone());
        async move { c.load(Ordering::SeqCst) == 1 && q.timestamps().await.unwrap().len() == 1 }
    })
    .await;
    assert!(backend.leader().await.unwrap().is_some());
    stop.cancel();
    h.await.unwrap().unwrap();
    assert!(
        backend.workers().await.unwrap().is_empty(),
        "workers unregistered at shutdown"
    );
    assert_eq!(backend.leader().await.unwrap(), None, "leadership released at shutdown");
}

/// Five scheduler nodes booting at once enqueue the periodic task once.
pub async fn five_booting_nodes_enqueue_one_instance(backend: Arc<dyn Backend>) {
    let count = Arc::new(AtomicUsize::new(0));
    let tasks = registry(vec![periodic(&count, 0)]);
    let mut nodes = Vec::new();
    for _ in 0..5 {
        let s = Arc::new(TaskServer::new(Arc::clone(&backend), Arc::clone(&tasks), node(true, 0, &["*"])).unwrap());
        nodes.push(run_server(s).await);
    }
    let q = Queue::new(Arc::clone(&backend));
    wait_until(LIMIT, "one instance queued", || {
        let q = q.clone();
        async move { q.length("periodic").await.unwrap() == 1 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(q.length("periodic").await.unwrap(), 1);
    assert!(q.timestamps().await.unwrap().is_empty());
    for (stop, h) in nodes {
        stop.cancel();
        h.await.unwrap().unwrap();
    }
}

/// Re-arming a periodic task removes its stray copies without reading the
/// whole queue or schedule into memory: no `queue_range` asks for more than
/// a page, and no bucket is read one round trip at a time; copies in every
/// dialect go, other jobs stay in order.
pub async fn rearm_never_reads_a_whole_queue_or_schedule(backend: Arc<dyn Backend>) {
    let count = Arc::new(AtomicUsize::new(0));
    let tasks = registry(vec![periodic(&count, 0)]);
    let others: Vec<resq_core::QueuedJob> = (0..1_200)
        .map(|i| resq_core::QueuedJob {
            queue: "periodic".into(),
            payload: resq_core::job::encode_payload("periodic", "otherTask", &[json!(i)]),
        })
        .collect();
    backend.push_batch(&others).await.unwrap();
    let copies = [
        resq_core::job::encode_payload("periodic", PERIODIC, &[json!({})]),
        resq_core::job::encode_payload("periodic", PERIODIC, &[json!({"odd": true})]),
        format!(r#"{{"class":"{PERIODIC}","args":[{{}}]}}"#),
    ];
    for c in &copies {
        backend.push("periodic", c).await.unwrap();
    }
    let later = now_ms() / 1000 + 3_600;
    for (i, c) in copies.iter().enumerate() {
        assert!(backend.schedule(later + i64::try_from(i).unwrap(), c).await.unwrap());
    }
    let other_delayed = resq_core::job::encode_payload("periodic", "otherTask", &[json!("d")]);
    assert!(backend.schedule(later, &other_delayed).await.unwrap());

    let counting = crate::counting::Counting::new(Arc::clone(&backend));
    let q = Queue::with_tasks(Arc::clone(&counting) as Arc<dyn Backend>, Arc::clone(&tasks));
    q.enqueue_recurrent_job(PERIODIC).await.unwrap();

    let widest = counting.widest("queue_range");
    let page = resq_core::backend::REMOVAL_PAGE as u64;
    assert!(
        matches!(widest, None | Some(Some(_))) && widest.flatten().is_none_or(|w| w <= page),
        "re-arm read up to {widest:?} queued jobs at once"
    );
    assert_eq!(
        counting.count("delayed_at"),
        0,
        "re-arm read delayed buckets one by one"
    );
    assert_eq!(counting.count("delayed_timestamps"), 0, "re-arm listed every bucket");
    let left: Vec<String> = backend.queue_range("periodic", 0, -1).await.unwrap();
    assert_eq!(left, others.iter().map(|j| j.payload.clone()).collect::<Vec<_>>());
    assert_eq!(backend.delayed_at(later).await.unwrap(), vec![other_delayed]);
    let delayed = q.all_delayed().await.unwrap();
    let instances: usize = delayed
        .values()
        .flatten()
        .filter(|d| d.job().is_some_and(|j| j.class == PERIODIC))
        .count();
    assert_eq!(instances, 1, "exactly the new instance is delayed: {delayed:?}");
}

/// ActionHero's `resque_overrides`: a task server built with its own queue
/// client and worker pool (here over a wrapped backend that records every
/// call) uses them: `enqueue_front` through the custom client pushes to
/// the head, and the custom pool claims and runs the jobs. A custom part
/// the config does not run is refused.
pub async fn task_server_runs_on_custom_parts(backend: Arc<dyn Backend>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let tasks = registry(vec![regular(&seen)]);
    let wrapped = crate::counting::Counting::new(Arc::clone(&backend));
    let custom: Arc<dyn Backend> = Arc::clone(&wrapped) as Arc<dyn Backend>;
    let pool = resq_core::WorkerPool::new(
        Arc::clone(&custom),
        Arc::clone(&tasks),
        resq_core::PoolConfig {
            min: 1,
            max: 1,
            check_interval: Duration::from_millis(100),
            worker: quick_config(&["default"]),
            ..resq_core::PoolConfig::default()
        },
    );
    let server = TaskServer::builder(Arc::clone(&backend), Arc::clone(&tasks), node(false, 1, &["default"]))
        .queue(Queue::with_tasks(Arc::clone(&custom), Arc::clone(&tasks)))
        .pool(pool)
        .build()
        .unwrap();
    server
        .queue()
        .enqueue_task("regularTask", json!({"n": 2}))
        .await
        .unwrap();
    assert!(server
        .queue()
        .enqueue_front("default", "regularTask", (json!({"n": 1}),))
        .await
        .unwrap());
    assert_eq!(
        wrapped.count("push_front"),
        1,
        "enqueue_front went through the custom client"
    );
    let server = Arc::new(server);
    let (stop, h) = run_server(Arc::clone(&server)).await;
    wait_until(LIMIT, "the custom pool ran both jobs", || {
        let s = Arc::clone(&seen);
        async move { s.lock().unwrap().len() == 2 }
    })
    .await;
    stop.cancel();
    h.await.unwrap().unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![json!({"n": 1}), json!({"n": 2})],
        "the front job ran first"
    );
    let claims = wrapped.count("claim") + wrapped.count("claim_batch") + wrapped.count("complete_and_claim_batch");
    assert!(claims > 0, "the custom pool claimed through the wrapped backend");
    let refused = TaskServer::builder(Arc::clone(&backend), Arc::clone(&tasks), node(false, 0, &["default"]))
        .scheduler(resq_core::Scheduler::new(Arc::clone(&backend), resq_core::SchedulerConfig::default()).unwrap())
        .build();
    assert!(matches!(refused, Err(resq_core::Error::InvalidArgument(_))));
}

/// A node whose start of a periodic task comes after another node's copy
/// was already claimed (its QueueLock released) and has run does not
/// enqueue a second copy: the first start holds the task's start lock
/// (for its frequency, at most a minute). Stopping the task frees it.
pub async fn a_late_start_after_a_claimed_first_copy_adds_no_instance(backend: Arc<dyn Backend>) {
    let count = Arc::new(AtomicUsize::new(0));
    let tasks = registry(vec![periodic(&count, 0)]);
    let first = Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
    let second = Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
    assert!(first.start_recurrent_job(PERIODIC).await.unwrap());
    // A worker claimed the copy: it left the queue and its QueueLock was
    // released; its run ended (no JobLock held) before the re-arm.
    assert_eq!(first.del_by_class("periodic", PERIODIC).await.unwrap(), 1);
    let queue_lock = backend
        .locks()
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .find(|k| k.starts_with("lock:"))
        .expect("the first copy's QueueLock");
    assert_eq!(backend.delete_lock(&queue_lock).await.unwrap(), 1);
    assert!(
        !second.start_recurrent_job(PERIODIC).await.unwrap(),
        "a second node enqueued another copy"
    );
    assert!(second.enqueue_all_recurrent_jobs().await.unwrap().is_empty());
    assert_eq!(second.length("periodic").await.unwrap(), 0);
    // Stopping the task frees it to start again at once.
    first.stop_recurrent_job(PERIODIC).await.unwrap();
    assert!(second.start_recurrent_job(PERIODIC).await.unwrap());
    assert_eq!(second.length("periodic").await.unwrap(), 1);
}
