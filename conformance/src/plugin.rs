//! Plugins: the four hooks and the built-ins QueueLock, JobLock,
//! DelayQueueLock, Retry and Noop (wire spec §4, §8.7, and the fixes of
//! §7.1 #5 and §7.4).

use crate::support::{
    count_events, quick_config, quick_scheduler, registry, spawn_scheduler, spawn_worker, wait_until, EventLog,
};
use resq_core::backend::Backend;
use resq_core::plugin::{EnqueueContext, PerformContext, Plugin};
use resq_core::plugins::{DelayQueueLock, JobLock, Noop, QueueLock, Retry};
use resq_core::task::{JobContext, TaskDef, TaskError, Tasks};
use resq_core::time::now_ms;
use resq_core::{Queue, WorkerEvent};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

/// `(args, start ms, end ms)` of every run of the `sleeper` task.
type Spans = Arc<Mutex<Vec<(Vec<Value>, i64, i64)>>>;

/// A task that sleeps `ms` (its first argument) and records its span.
fn sleeper(name: &str, spans: &Spans) -> TaskDef {
    let spans = Arc::clone(spans);
    TaskDef::from_fn(name, move |args: Vec<Value>, _ctx: JobContext| {
        let spans = Arc::clone(&spans);
        async move {
            let start = now_ms();
            let ms = args.first().and_then(Value::as_u64).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            spans.lock().expect("spans").push((args, start, now_ms()));
            Ok::<_, TaskError>(())
        }
    })
}

/// A task that always fails with `Error: BUSTED`.
fn broken(name: &str) -> TaskDef {
    TaskDef::from_fn(name, |_args: Vec<Value>, _ctx: JobContext| async move {
        Err::<(), _>(TaskError::new("BUSTED"))
    })
}

fn overlaps(a: &(Vec<Value>, i64, i64), b: &(Vec<Value>, i64, i64)) -> bool {
    a.1 < b.2 && b.1 < a.2
}

/// A plugin that records its hook calls and vetoes when told to.
struct Probe {
    name: &'static str,
    veto_enqueue: bool,
    calls: Arc<Mutex<Vec<String>>>,
}

#[async_trait::async_trait]
impl Plugin for Probe {
    fn name(&self) -> &str {
        self.name
    }
    async fn before_enqueue(&self, ctx: &EnqueueContext<'_>) -> resq_core::Result<bool> {
        let tag = ctx.options.get("tag").and_then(Value::as_str).unwrap_or("-").to_owned();
        self.calls
            .lock()
            .expect("calls")
            .push(format!("{}:before_enqueue:{tag}", self.name));
        Ok(!self.veto_enqueue)
    }
    async fn after_enqueue(&self, _ctx: &EnqueueContext<'_>) -> resq_core::Result<()> {
        self.calls
            .lock()
            .expect("calls")
            .push(format!("{}:after_enqueue", self.name));
        Ok(())
    }
    async fn before_perform(&self, _ctx: &mut PerformContext<'_>) -> resq_core::Result<bool> {
        self.calls
            .lock()
            .expect("calls")
            .push(format!("{}:before_perform", self.name));
        Ok(true)
    }
    async fn after_perform(&self, ctx: &mut PerformContext<'_>) -> resq_core::Result<()> {
        let ok = ctx.error.is_none();
        self.calls
            .lock()
            .expect("calls")
            .push(format!("{}:after_perform:{ok}", self.name));
        Ok(())
    }
}

/// Hooks run in order with their per-task options; a `before_enqueue`
/// veto makes `enqueue` return false, stores nothing and stops the chain.
/// A client without the definitions runs no plugins.
pub async fn custom_plugin_hooks_and_enqueue_veto(backend: Arc<dyn Backend>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let probe = |name, veto| Probe {
        name,
        veto_enqueue: veto,
        calls: Arc::clone(&calls),
    };
    let tasks = registry(vec![
        TaskDef::from_fn("ok", |_: Vec<Value>, _ctx: JobContext| async { Ok::<_, TaskError>(()) })
            .plugin(probe("A", false))
            .plugin(probe("B", false))
            .plugin_options("B", json!({"tag": "bee"})),
        TaskDef::from_fn("vetoed", |_: Vec<Value>, _ctx: JobContext| async {
            Ok::<_, TaskError>(())
        })
        .plugin(probe("V", true))
        .plugin(probe("never", false)),
    ]);
    let q = Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
    assert!(!q.enqueue("q", "vetoed", (1,)).await.unwrap());
    assert_eq!(q.length("q").await.unwrap(), 0);
    assert_eq!(*calls.lock().unwrap(), vec!["V:before_enqueue:-".to_owned()]);
    calls.lock().unwrap().clear();
    assert!(q.enqueue("q", "ok", (1,)).await.unwrap());
    assert_eq!(
        *calls.lock().unwrap(),
        vec![
            "A:before_enqueue:-",
            "B:before_enqueue:bee",
            "A:after_enqueue",
            "B:after_enqueue"
        ]
    );
    // No definitions: no plugins, the vetoing task's job is stored.
    assert!(Queue::new(Arc::clone(&backend))
        .enqueue("q", "vetoed", (2,))
        .await
        .unwrap());
    assert_eq!(q.length("q").await.unwrap(), 2);
    calls.lock().unwrap().clear();
    // Perform hooks run around the job, after_perform seeing the outcome.
    backend.delete_queue("q").await.unwrap();
    q.enqueue("q", "ok", (3,)).await.unwrap();
    let w = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    wait_until(LIMIT, "after_perform ran", || {
        let c = Arc::clone(&calls);
        async move { c.lock().unwrap().iter().filter(|s| s.contains("after_perform")).count() == 2 }
    })
    .await;
    w.shutdown().await;
    let got = calls.lock().unwrap().clone();
    assert_eq!(
        got[4..],
        [
            "A:before_perform",
            "B:before_perform",
            "A:after_perform:true",
            "B:after_perform:true"
        ]
    );
}

/// DelayQueueLock vetoes `enqueue` while the identical job is delayed, and
/// allows other args.
pub async fn delay_queue_lock_blocks_identical_delayed_job(backend: Arc<dyn Backend>) {
    let tasks = registry(vec![broken("job").plugin(DelayQueueLock)]);
    let q = Queue::with_tasks(Arc::clone(&backend), tasks);
    q.enqueue_in(Duration::from_secs(60), "q", "job", (1, 2)).await.unwrap();
    assert!(!q.enqueue("q", "job", (1, 2)).await.unwrap());
    assert_eq!(q.length("q").await.unwrap(), 0);
    assert_eq!(q.timestamps().await.unwrap().len(), 1);
    assert!(q.enqueue("q", "job", (3, 4)).await.unwrap());
    assert_eq!(q.length("q").await.unwrap(), 1);
}

/// Promotion runs no enqueue plugin, so a plugin that vetoes every
/// enqueue never drops a delayed job (spec §7.1 #5): it is promoted and runs.
pub async fn enqueue_veto_never_drops_a_delayed_job(backend: Arc<dyn Backend>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let spans: Spans = Arc::new(Mutex::new(Vec::new()));
    let tasks = registry(vec![sleeper("job", &spans)
        .plugin(Probe {
            name: "NoEnqueue",
            veto_enqueue: true,
            calls: Arc::clone(&calls),
        })
        .plugin(DelayQueueLock)
        .plugin(QueueLock::new())]);
    let q = Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
    q.enqueue_in(Duration::from_millis(10), "q", "job", (5,)).await.unwrap();
    assert!(!q.enqueue("q", "job", (5,)).await.unwrap(), "direct enqueue is vetoed");
    let s = spawn_scheduler(&backend, Some(&tasks), quick_scheduler());
    let w = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    wait_until(LIMIT, "the delayed job ran", || {
        let spans = Arc::clone(&spans);
        async move { spans.lock().unwrap().len() == 1 }
    })
    .await;
    w.shutdown().await;
    s.shutdown().await;
    assert!(q.timestamps().await.unwrap().is_empty());
    assert_eq!(backend.failed_count().await.unwrap(), 0);
}

/// JobLock lets jobs with different args run at the same time, and calls
/// a custom key function once to acquire and once to release.
pub async fn job_lock_runs_different_args_concurrently(backend: Arc<dyn Backend>) {
    let spans: Spans = Arc::new(Mutex::new(Vec::new()));
    let keys = Arc::new(AtomicUsize::new(0));
    let k = Arc::clone(&keys);
    let tasks = registry(vec![sleeper("job", &spans).plugin(JobLock::new().key_fn(move |i| {
        k.fetch_add(1, Ordering::SeqCst);
        format!(
            "workerslock:custom:{}",
            resq_core::json::to_js_string(&Value::Array(i.args.to_vec()))
        )
    }))]);
    let q = Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
    q.enqueue("q", "job", (600, "a")).await.unwrap();
    q.enqueue("q", "job", (600, "b")).await.unwrap();
    let w1 = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    let w2 = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    wait_until(LIMIT, "both ran", || {
        let spans = Arc::clone(&spans);
        async move { spans.lock().unwrap().len() == 2 }
    })
    .await;
    w1.shutdown().await;
    w2.shutdown().await;
    let s = spans.lock().unwrap().clone();
    assert!(overlaps(&s[0], &s[1]), "different args did not run concurrently: {s:?}");
    assert_eq!(keys.load(Ordering::SeqCst), 4, "key fn: acquire + release per job");
    assert!(backend
        .locks()
        .await
        .unwrap()
        .iter()
        .all(|(k, _)| !k.starts_with("workerslock:")));
}

/// JobLock never runs identical jobs at once: the blocked copy is
/// re-enqueued as a delayed job with the same args, then runs after the
/// first one.
pub async fn job_lock_serializes_identical_jobs(backend: Arc<dyn Backend>) {
    let spans: Spans = Arc::new(Mutex::new(Vec::new()));
    let tasks = registry(vec![sleeper("job", &spans).plugin(JobLock::new())]);
    let q = Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
    q.enqueue("q", "job", (700,)).await.unwrap();
    q.enqueue("q", "job", (700,)).await.unwrap();
    let mut w1 = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    let mut w2 = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    let log = w2.take_events();
    let log1 = w1.take_events();
    wait_until(LIMIT, "one copy re-enqueued", || {
        let q = q.clone();
        async move { q.scheduled_at("q", "job", (700,)).await.unwrap().len() == 1 }
    })
    .await;
    let skipped = |l: &EventLog| {
        count_events(
            l,
            |e| matches!(e, WorkerEvent::Skipped { plugin, .. } if plugin == "JobLock"),
        )
    };
    // The workers' events are collected in the background: the skip may
    // be logged a moment after the copy shows in the schedule.
    let deadline = std::time::Instant::now() + LIMIT;
    while skipped(&log) + skipped(&log1) == 0 {
        assert!(std::time::Instant::now() < deadline, "no JobLock skip was evented");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(skipped(&log) + skipped(&log1), 1);
    let s = spawn_scheduler(&backend, None, quick_scheduler());
    wait_until(LIMIT, "both copies ran", || {
        let spans = Arc::clone(&spans);
        async move { spans.lock().unwrap().len() == 2 }
    })
    .await;
    w1.shutdown().await;
    w2.shutdown().await;
    s.shutdown().await;
    let sp = spans.lock().unwrap().clone();
    assert!(!overlaps(&sp[0], &sp[1]), "identical jobs overlapped: {sp:?}");
    assert_eq!(sp[0].0, sp[1].0);
    assert_eq!(skipped(&log) + skipped(&log1), 1, "only the one copy was skipped");
}

/// With `reEnqueue: false` a blocked copy is dropped: nothing is delayed.
pub async fn job_lock_without_reenqueue_drops_duplicate(backend: Arc<dyn Backend>) {
    let spans: Spans = Arc::new(Mutex::new(Vec::new()));
    let tasks = registry(vec![sleeper("job", &spans)
        .plugin(JobLock::new())
        .plugin_options("JobLock", json!({"reEnqueue": false}))]);
    let q = Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
    q.enqueue("q", "job", (500,)).await.unwrap();
    q.enqueue("q", "job", (500,)).await.unwrap();
    let mut w1 = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    let mut w2 = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    let (l1, l2) = (w1.take_events(), w2.take_events());
    wait_until(LIMIT, "one ran, one dropped", || {
        let (spans, l1, l2) = (Arc::clone(&spans), Arc::clone(&l1), Arc::clone(&l2));
        async move {
            let dropped = count_events(&l1, |e| matches!(e, WorkerEvent::Skipped { .. }))
                + count_events(&l2, |e| matches!(e, WorkerEvent::Skipped { .. }));
            spans.lock().unwrap().len() == 1 && dropped == 1
        }
    })
    .await;
    w1.shutdown().await;
    w2.shutdown().await;
    assert!(q.timestamps().await.unwrap().is_empty());
    assert_eq!(q.length("q").await.unwrap(), 0);
    assert_eq!(
        backend.stat("processed").await.unwrap(),
        1,
        "a dropped copy is not counted"
    );
    assert_eq!(backend.failed_count().await.unwrap(), 0);
}

/// Blocked copies whose re-enqueues collide in one second neither fail
/// nor release the running holder's lock (spec §4.3's race, §8.9).
pub async fn job_lock_holder_keeps_lock_when_reenqueue_collides(backend: Arc<dyn Backend>) {
    let spans: Spans = Arc::new(Mutex::new(Vec::new()));
    let tasks = registry(vec![sleeper("job", &spans).plugin(JobLock::new())]);
    let q = Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
    for _ in 0..3 {
        q.enqueue("q", "job", (2000,)).await.unwrap();
    }
    let mut cfg = quick_config(&["q"]);
    cfg.concurrency = 3;
    let mut w = spawn_worker(&backend, &tasks, cfg);
    let log = w.take_events();
    wait_until(LIMIT, "two copies dropped", || {
        let log = Arc::clone(&log);
        async move { count_events(&log, |e| matches!(e, WorkerEvent::Skipped { .. })) == 2 }
    })
    .await;
    let key = "workerslock:job:q:[2000]";
    assert!(spans.lock().unwrap().is_empty(), "the holder is still running");
    assert!(
        backend.get_lock(key).await.unwrap().is_some(),
        "the running holder lost its lock"
    );
    assert_eq!(
        backend.failed_count().await.unwrap(),
        0,
        "a collision was recorded as a failure"
    );
    wait_until(LIMIT, "holder finished", || {
        let spans = Arc::clone(&spans);
        async move { spans.lock().unwrap().len() == 1 }
    })
    .await;
    w.shutdown().await;
    assert_eq!(backend.get_lock(key).await.unwrap(), None, "released after the run");
    assert!(!q.scheduled_at("q", "job", (2000,)).await.unwrap().is_empty());
}

/// Noop: a success logs nothing; a failure is logged once, writes no failed
/// entry, counts as processed and fires `success`.
pub async fn noop_turns_failure_into_logged_success(backend: Arc<dyn Backend>) {
    let logged = Arc::new(Mutex::new(Vec::new()));
    let l = Arc::clone(&logged);
    let noop = Noop::with_logger(move |e| l.lock().unwrap().push(e.to_string()));
    let spans: Spans = Arc::new(Mutex::new(Vec::new()));
    let tasks = registry(vec![
        broken("broken").plugin(noop.clone()),
        sleeper("fine", &spans).plugin(noop),
    ]);
    let q = Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
    q.enqueue("q", "fine", (1,)).await.unwrap();
    q.enqueue("q", "broken", ()).await.unwrap();
    let mut w = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    let log = w.take_events();
    wait_until(LIMIT, "both done", || {
        let log = Arc::clone(&log);
        async move { count_events(&log, |e| matches!(e, WorkerEvent::Success { .. })) == 2 }
    })
    .await;
    w.shutdown().await;
    assert_eq!(*logged.lock().unwrap(), vec!["Error: BUSTED".to_owned()]);
    assert_eq!(backend.failed_count().await.unwrap(), 0);
    assert_eq!(count_events(&log, |e| matches!(e, WorkerEvent::Failure { .. })), 0);
    assert_eq!(backend.stat("processed").await.unwrap(), 2);
    assert_eq!(backend.stat("failed").await.unwrap(), 0);
}

/// QueueLock: an identical enqueue is vetoed while the first is queued;
/// other args are allowed; the lock has the configured TTL and node-resque's
/// value (`now + lockTimeout + 1`).
pub async fn queue_lock_blocks_identical_jobs(backend: Arc<dyn Backend>) {
    let tasks = registry(vec![broken("job")
        .plugin(QueueLock::new())
        .plugin_options("QueueLock", json!({"lockTimeout": 100}))]);
    let q = Queue::with_tasks(Arc::clone(&backend), tasks);
    assert!(q.enqueue("q", "job", (1, 2)).await.unwrap());
    assert!(!q.enqueue("q", "job", (1, 2)).await.unwrap());
    assert_eq!(q.length("q").await.unwrap(), 1);
    assert!(q.enqueue("q", "job", (2, 1)).await.unwrap());
    assert_eq!(q.length("q").await.unwrap(), 2);
    let lock = backend.get_lock("lock:job:q:[1,2]").await.unwrap().expect("queue lock");
    let ttl = lock.ttl.expect("the lock always has a TTL");
    assert!(
        ttl <= Duration::from_secs(100) && ttl > Duration::from_secs(95),
        "{ttl:?}"
    );
    let value: i64 = lock.value.parse().expect("numeric value");
    let expect = resq_core::time::bucket_of_ms(now_ms()) + 101;
    assert!((value - expect).abs() <= 1, "value {value}, expected about {expect}");
}

/// Once the lock's TTL has passed, an identical enqueue succeeds again and
/// resets the lock; a lock whose stored time has passed (a client that set
/// no TTL) is taken over.
pub async fn queue_lock_expires_and_stale_lock_is_taken_over(backend: Arc<dyn Backend>) {
    let tasks = registry(vec![broken("job")
        .plugin(QueueLock::new())
        .plugin_options("QueueLock", json!({"lockTimeout": 1}))]);
    let q = Queue::with_tasks(Arc::clone(&backend), tasks);
    assert!(q.enqueue("q", "job", (1,)).await.unwrap());
    assert!(!q.enqueue("q", "job", (1,)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(q.enqueue("q", "job", (1,)).await.unwrap());
    assert_eq!(q.length("q").await.unwrap(), 2);
    let locks: Vec<String> = backend
        .locks()
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("lock:"))
        .collect();
    assert_eq!(locks, vec!["lock:job:q:[1]".to_owned()]);
    // A stale holder: its stored expiry is in the past.
    let stale = (resq_core::time::bucket_of_ms(now_ms()) - 10).to_string();
    backend
        .set_lock("lock:job:q:[9]", &stale, Duration::from_secs(600))
        .await
        .unwrap();
    assert!(q.enqueue("q", "job", (9,)).await.unwrap(), "stale lock not taken over");
    let now_value = backend.get_lock("lock:job:q:[9]").await.unwrap().expect("lock").value;
    assert_ne!(now_value, stale);
}

/// The queue lock is released when a worker takes the job, even when a
/// later plugin's `before_perform` vetoes the run.
pub async fn queue_lock_released_when_job_is_taken(backend: Arc<dyn Backend>) {
    struct NoRun;
    #[async_trait::async_trait]
    impl Plugin for NoRun {
        fn name(&self) -> &str {
            "NoRun"
        }
        async fn before_perform(&self, _ctx: &mut PerformContext<'_>) -> resq_core::Result<bool> {
            Ok(false)
        }
    }
    let spans: Spans = Arc::new(Mutex::new(Vec::new()));
    let tasks = registry(vec![
        sleeper("job", &spans).plugin(QueueLock::new()),
        sleeper("vetoed", &spans).plugin(QueueLock::new()).plugin(NoRun),
    ]);
    let q = Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
    q.enqueue("q", "job", (1,)).await.unwrap();
    q.enqueue("q", "vetoed", (1,)).await.unwrap();
    assert_eq!(backend.locks().await.unwrap().len(), 2);
    let mut w = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    let log = w.take_events();
    wait_until(LIMIT, "job ran and vetoed one skipped", || {
        let (spans, log) = (Arc::clone(&spans), Arc::clone(&log));
        async move {
            spans.lock().unwrap().len() == 1 && count_events(&log, |e| matches!(e, WorkerEvent::Skipped { .. })) == 1
        }
    })
    .await;
    w.shutdown().await;
    assert!(
        backend.locks().await.unwrap().is_empty(),
        "{:?}",
        backend.locks().await.unwrap()
    );
    assert_eq!(spans.lock().unwrap()[0].0, vec![json!(1)]);
    assert!(q.enqueue("q", "job", (1,)).await.unwrap());
}

/// Retry after a success deletes its keys and leaves the failed list empty.
pub async fn retry_success_leaves_nothing(backend: Arc<dyn Backend>) {
    let spans: Spans = Arc::new(Mutex::new(Vec::new()));
    let tasks = registry(vec![sleeper("job", &spans).plugin(Retry::new().retry_limit(3))]);
    let q = Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
    backend
        .set_lock("resque-retry:job:1", "1", Duration::from_secs(60))
        .await
        .unwrap();
    q.enqueue("q", "job", (1,)).await.unwrap();
    let w = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    wait_until(LIMIT, "ran", || {
        let spans = Arc::clone(&spans);
        async move { spans.lock().unwrap().len() == 1 }
    })
    .await;
    w.shutdown().await;
    assert_eq!(backend.failed_count().await.unwrap(), 0);
    assert_eq!(backend.get_lock("resque-retry:job:1").await.unwrap(), None);
    assert!(q.timestamps().await.unwrap().is_empty());
}

async fn run_until_failed(backend: &Arc<dyn Backend>, tasks: &Arc<Tasks>) -> EventLog {
    let s = spawn_scheduler(backend, None, quick_scheduler());
    let mut w = spawn_worker(backend, tasks, quick_config(&["q"]));
    let log = w.take_events();
    wait_until(Duration::from_secs(40), "the last attempt failed", || {
        let log = Arc::clone(&log);
        async move { count_events(&log, |e| matches!(e, WorkerEvent::Failure { .. })) == 1 }
    })
    .await;
    w.shutdown().await;
    s.shutdown().await;
    log
}

/// `retryLimit` is the total number of attempts: 3 gives two retried
/// attempts (`success` and `re_enqueue` events, no failed entry) and one
/// final failure; the attempt keys are gone afterwards.
pub async fn retry_limit_counts_attempts(backend: Arc<dyn Backend>) {
    let tasks = registry(vec![broken("brokenJob")
        .plugin(Retry::new())
        .plugin_options("Retry", json!({"retryLimit": 3, "retryDelay": 100}))]);
    let q = Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
    q.enqueue("q", "brokenJob", (1, 2)).await.unwrap();
    let log = run_until_failed(&backend, &tasks).await;
    assert_eq!(count_events(&log, |e| matches!(e, WorkerEvent::Success { .. })), 2);
    assert_eq!(count_events(&log, |e| matches!(e, WorkerEvent::ReEnqueue { .. })), 2);
    assert_eq!(backend.failed_count().await.unwrap(), 1);
    assert_eq!(backend.stat("failed").await.unwrap(), 3);
    assert_eq!(backend.stat("processed").await.unwrap(), 0);
    assert_eq!(backend.get_lock("resque-retry:brokenJob:1-2").await.unwrap(), None);
    assert_eq!(
        backend.get_lock("failure-resque-retry:brokenJob:1-2").await.unwrap(),
        None
    );
}

/// A backoff strategy sets each retry's delay (the last value repeats):
/// `retryLimit 5` gives four retries, then one failure.
pub async fn retry_backoff_strategy_sets_delays(backend: Arc<dyn Backend>) {
    let tasks = registry(vec![broken("brokenJob").plugin(
        Retry::new()
            .retry_limit(5)
            .backoff_strategy(vec![Duration::from_millis(100), Duration::from_millis(200)]),
    )]);
    let q = Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
    q.enqueue("q", "brokenJob", ()).await.unwrap();
    let log = run_until_failed(&backend, &tasks).await;
    let delays: Vec<(u128, i64)> = log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            WorkerEvent::ReEnqueue {
                delay,
                remaining_attempts,
                ..
            } => Some((delay.as_millis(), *remaining_attempts)),
            _ => None,
        })
        .collect();
    assert_eq!(delays, vec![(100, 4), (200, 3), (200, 2), (200, 1)]);
    assert_eq!(backend.failed_count().await.unwrap(), 1);
}

/// One failed attempt goes to the delayed schedule, not the failed list;
/// it counts processed 0 and failed 1 globally and for the worker, and
/// writes node-resque's attempt and failure keys.
pub async fn retry_attempt_is_delayed_with_node_resque_keys(backend: Arc<dyn Backend>) {
    let tasks = registry(vec![broken("brokenJob")
        .plugin(Retry::new())
        .plugin_options("Retry", json!({"retryLimit": 3, "retryDelay": 60000}))]);
    let q = Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
    q.enqueue("test_queue", "brokenJob", (1, 2)).await.unwrap();
    let w = spawn_worker(&backend, &tasks, quick_config(&["test_queue"]));
    let name = w.name.clone();
    wait_until(LIMIT, "re-enqueued", || {
        let q = q.clone();
        async move { q.scheduled_at("test_queue", "brokenJob", (1, 2)).await.unwrap().len() == 1 }
    })
    .await;
    // Per-worker counters go when the worker unregisters: read them first.
    wait_until(LIMIT, "counted failed for the worker", || {
        let (b, key) = (Arc::clone(&backend), format!("failed:{name}"));
        async move { b.stat(&key).await.unwrap() == 1 }
    })
    .await;
    assert_eq!(backend.stat(&format!("processed:{name}")).await.unwrap(), 0);
    w.shutdown().await;
    assert_eq!(backend.failed_count().await.unwrap(), 0);
    assert_eq!(backend.stat("processed").await.unwrap(), 0);
    assert_eq!(backend.stat("failed").await.unwrap(), 1);
    let counter = backend
        .get_lock("resque-retry:brokenJob:1-2")
        .await
        .unwrap()
        .expect("attempt counter");
    assert_eq!(counter.value, "0");
    let record = backend
        .get_lock("failure-resque-retry:brokenJob:1-2")
        .await
        .unwrap()
        .expect("failure record");
    let v: Value = serde_json::from_str(&record.value).unwrap();
    assert_eq!(v["payload"], json!([1, 2]));
    assert_eq!(v["exception"], "Error: BUSTED");
    assert_eq!(v["error"], "Error: BUSTED");
    assert_eq!(v["worker"], "brokenJob");
    assert_eq!(v["queue"], "test_queue");
    assert!(v["failed_at"].as_str().is_some_and(|s| s.len() == 19), "{v}");
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "failed_at",
            "payload",
            "exception",
            "error",
            "backtrace",
            "worker",
            "queue"
        ]
    );
}
