//! Flow control per task (issue #14): rate limits and concurrency caps
//! declared on a task ([`resq_core::TaskDef::rate_limit`],
//! [`resq_core::TaskDef::concurrency`]),
//! counted per task class in the backend (`TaskFlowStore`), and enforced
//! by the workers, which put a job over its task's limit back on the
//! delayed schedule instead of running it.
//!
//! As in `flow`, no test asserts a duration or a throughput (the load
//! harness measures those, see BENCHMARKS.md); rate checks use periods no
//! run can cross or count starts per window with a margin. Throttled jobs
//! wait on the delayed schedule, whose buckets are one second wide on
//! Redis, so the engine tests keep their job counts small.

use crate::counting::Counting;
use crate::flow::{most_in_window, probe, probe_def, run_until_all_ran};
use crate::support::{quick_config, quick_scheduler, registry, spawn_scheduler, spawn_worker, wait_until};
use resq_core::backend::{Backend, Orphan, WorkerId};
use resq_core::time::now_ms;
use resq_core::{Error, Queue, SchedulerConfig, TaskAdmission, TaskLimits, Tasks};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A period no test run can cross: starts never leave the window.
const HOUR: Duration = Duration::from_secs(3600);
/// Liveness bound for everything a test waits for.
const LIMIT: Duration = Duration::from_secs(30);

fn slot(name: &str) -> WorkerId {
    WorkerId::new(name, &["q".to_owned()])
}

/// Every argument in `seen` counted: each of `0..n` exactly once.
fn each_ran_once(seen: &[Value], n: usize) {
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for v in seen {
        *counts.entry(v.as_i64().expect("an integer argument")).or_default() += 1;
    }
    let expected: BTreeMap<i64, usize> = (0..i64::try_from(n).expect("n")).map(|i| (i, 1)).collect();
    assert_eq!(counts, expected, "every job ran exactly once");
}

/// Limits out of bounds are refused: by [`Tasks::define`] with the task
/// named, and by the backend itself (not only by the client), which then
/// counts nothing.
pub async fn invalid_task_limits_are_refused(backend: Arc<dyn Backend>) {
    let p = probe();
    let bad = [
        TaskLimits::new().rate(0, Duration::from_secs(1)),
        TaskLimits::new().rate(5, Duration::ZERO),
        TaskLimits::new().rate(5, Duration::from_micros(2500)),
        TaskLimits::new().concurrency(0),
    ];
    for limits in bad {
        let err = Tasks::new()
            .define(probe_def(&p, "limited", Duration::ZERO).limits(limits))
            .unwrap_err();
        match &err {
            Error::InvalidArgument(reason) => assert!(reason.contains("\"limited\""), "{reason}"),
            other => panic!("{limits:?}: {other:?}"),
        }
        let err = backend
            .acquire_task_start("limited", &limits, &slot("host:1+1"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{limits:?}: {err:?}");
    }
    assert_eq!(backend.task_slots_held("limited").await.unwrap(), 0);
    let ok = TaskLimits::new().rate(1, HOUR);
    assert_eq!(
        backend
            .acquire_task_start("limited", &ok, &slot("host:1+1"))
            .await
            .unwrap(),
        TaskAdmission::Admitted,
        "the refused calls counted no start"
    );
}

/// A task rate limit of N per period admits N starts in the window,
/// whichever worker slots ask, then refuses with the time until the
/// oldest start leaves the window; another class is counted apart, and
/// unlimited limits always admit.
pub async fn task_rate_limit_admits_max_starts_per_window(backend: Arc<dyn Backend>) {
    let limits = TaskLimits::new().rate(3, HOUR);
    for i in 0..3 {
        let got = backend
            .acquire_task_start("Mail", &limits, &slot(&format!("host:2+{i}")))
            .await
            .unwrap();
        assert_eq!(got, TaskAdmission::Admitted, "start {i}");
    }
    match backend
        .acquire_task_start("Mail", &limits, &slot("host:2+9"))
        .await
        .unwrap()
    {
        TaskAdmission::RateLimited(wait) => {
            assert!(wait > HOUR - Duration::from_secs(60) && wait <= HOUR, "{wait:?}")
        }
        other => panic!("a fourth start in the hour: {other:?}"),
    }
    assert_eq!(
        backend
            .acquire_task_start("Sms", &limits, &slot("host:2+9"))
            .await
            .unwrap(),
        TaskAdmission::Admitted,
        "another class has its own window"
    );
    assert_eq!(
        backend
            .acquire_task_start("Mail", &TaskLimits::new(), &slot("host:2+9"))
            .await
            .unwrap(),
        TaskAdmission::Admitted
    );
    assert_eq!(
        backend.task_slots_held("Mail").await.unwrap(),
        0,
        "a rate holds no slot"
    );
}

/// The window slides: a refused start is told how long to wait, and once
/// the oldest start is older than the period another is admitted.
pub async fn task_rate_limit_window_slides(backend: Arc<dyn Backend>) {
    let period = Duration::from_millis(300);
    let limits = TaskLimits::new().rate(2, period);
    let first = Instant::now();
    for i in 0..2 {
        let got = backend
            .acquire_task_start("job", &limits, &slot(&format!("host:3+{i}")))
            .await
            .unwrap();
        assert_eq!(got, TaskAdmission::Admitted);
    }
    let third = slot("host:3+3");
    let refused = backend.acquire_task_start("job", &limits, &third).await.unwrap();
    if first.elapsed() < period {
        match refused {
            TaskAdmission::RateLimited(wait) => assert!(wait <= period, "{wait:?}"),
            other => panic!("a third start within the period: {other:?}"),
        }
    }
    let deadline = Instant::now() + LIMIT;
    loop {
        let got = backend.acquire_task_start("job", &limits, &third).await.unwrap();
        if got == TaskAdmission::Admitted {
            break;
        }
        let wait = got.retry_after().unwrap();
        assert!(Instant::now() < deadline, "the window slid within {LIMIT:?}");
        tokio::time::sleep(wait).await;
    }
    assert!(first.elapsed() >= period, "not before the period passed");
}

/// A task cap of K admits K slots of the class; releasing one frees it,
/// and a slot that asks again gives up its own earlier slot first (its
/// job is over), so it never counts against itself.
pub async fn task_cap_admits_k_and_release_frees(backend: Arc<dyn Backend>) {
    let limits = TaskLimits::new().concurrency(2);
    let ids: Vec<WorkerId> = (0..3).map(|i| slot(&format!("host:4+{i}"))).collect();
    for id in &ids[..2] {
        assert_eq!(
            backend.acquire_task_start("Resize", &limits, id).await.unwrap(),
            TaskAdmission::Admitted
        );
    }
    assert_eq!(
        backend.acquire_task_start("Resize", &limits, &ids[2]).await.unwrap(),
        TaskAdmission::AtCapacity
    );
    assert_eq!(backend.task_slots_held("Resize").await.unwrap(), 2);
    assert_eq!(
        backend
            .acquire_task_start("Other", &limits, &slot("host:4+7"))
            .await
            .unwrap(),
        TaskAdmission::Admitted,
        "another class has its own slots"
    );
    assert!(backend.release_task_slot(&ids[0]).await.unwrap());
    assert!(!backend.release_task_slot(&ids[0]).await.unwrap(), "released once");
    assert_eq!(
        backend.acquire_task_start("Resize", &limits, &ids[2]).await.unwrap(),
        TaskAdmission::Admitted,
        "the released slot is free"
    );
    assert_eq!(
        backend.acquire_task_start("Resize", &limits, &ids[1]).await.unwrap(),
        TaskAdmission::Admitted,
        "a slot asking again replaces its own"
    );
    assert_eq!(backend.task_slots_held("Resize").await.unwrap(), 2);
}

/// Cleaning a worker (its stop, a stop past its deadline, or the clean-up
/// of a dead one) gives its task slot back.
pub async fn cleaning_a_worker_returns_its_task_slot(backend: Arc<dyn Backend>) {
    let limits = TaskLimits::new().concurrency(1);
    let dead = slot("host:5+1");
    let other = slot("host:5+2");
    backend.register_worker(&dead, now_ms()).await.unwrap();
    assert_eq!(
        backend.acquire_task_start("job", &limits, &dead).await.unwrap(),
        TaskAdmission::Admitted
    );
    assert_eq!(
        backend.acquire_task_start("job", &limits, &other).await.unwrap(),
        TaskAdmission::AtCapacity
    );
    backend.clean_worker(&dead, Orphan::Requeue).await.unwrap();
    assert_eq!(backend.task_slots_held("job").await.unwrap(), 0);
    assert_eq!(
        backend.acquire_task_start("job", &limits, &other).await.unwrap(),
        TaskAdmission::Admitted
    );
}

/// The scheduler's stuck-worker sweep returns a dead worker's task slot: a
/// worker that stopped pinging while holding the only slot of a capped
/// task blocks its jobs (they wait on the schedule, none fails) until the
/// sweep cleans it; then every job runs.
pub async fn stuck_worker_sweep_returns_the_task_slot(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    let p = probe();
    let tasks = registry(vec![probe_def(&p, "job", Duration::ZERO).concurrency(1)]);
    let dead = WorkerId::new("host:6+1", &["c".to_owned()]);
    backend.register_worker(&dead, now_ms() - 60_000).await.unwrap();
    let cap = TaskLimits::new().concurrency(1);
    assert_eq!(
        backend.acquire_task_start("job", &cap, &dead).await.unwrap(),
        TaskAdmission::Admitted
    );
    for i in 0..3 {
        q.enqueue("c", "job", (i,)).await.unwrap();
    }
    let w = spawn_worker(&backend, &tasks, quick_config(&["c"]));
    let promoter = spawn_scheduler(
        &backend,
        None,
        SchedulerConfig {
            stuck_worker_timeout: None,
            ..quick_scheduler()
        },
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(p.ran.load(Ordering::SeqCst), 0, "the dead worker holds the only slot");
    promoter.shutdown().await;
    let s = spawn_scheduler(
        &backend,
        None,
        SchedulerConfig {
            stuck_worker_timeout: Some(Duration::from_secs(1)),
            worker_ping_interval: Duration::from_millis(100),
            ..quick_scheduler()
        },
    );
    wait_until(LIMIT, "the sweep freed the slot and all three jobs ran", || {
        let p = Arc::clone(&p);
        async move { p.ran.load(Ordering::SeqCst) == 3 }
    })
    .await;
    s.shutdown().await;
    w.shutdown().await;
    each_ran_once(&p.seen.lock().unwrap(), 3);
    assert_eq!(backend.failed_count().await.unwrap(), 0);
    assert_eq!(
        backend.task_slots_held("job").await.unwrap(),
        0,
        "released at completion"
    );
}

/// Several workers (single- and multi-slot) on a task with a rate limit
/// start no more of its jobs per window than the limit (counted with a
/// 250 ms margin: a start trails its admission by a variable delay); the
/// jobs over the limit are throttled back to the schedule, and every job
/// runs exactly once, none failed, none counted twice.
pub async fn workers_respect_the_task_rate_limit(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    let (max, period) = (3, Duration::from_secs(1));
    let p = probe();
    let tasks = registry(vec![probe_def(&p, "job", Duration::ZERO).rate_limit(max, period)]);
    let jobs = 8;
    for i in 0..jobs {
        q.enqueue("r", "job", (i,)).await.unwrap();
    }
    let throttled = run_until_all_ran(&backend, &tasks, &["r"], (2, 3), true, &p, jobs).await;
    let starts = p.starts.lock().unwrap().clone();
    assert_eq!(starts.len(), jobs);
    let most = most_in_window(&starts, period - Duration::from_millis(250));
    assert!(most <= max as usize, "{most} starts in one window, limit {max}");
    assert!(throttled > 0, "jobs over the limit were throttled");
    each_ran_once(&p.seen.lock().unwrap(), jobs);
    assert_eq!(backend.failed_count().await.unwrap(), 0);
    assert_eq!(backend.stat("processed").await.unwrap(), i64::try_from(jobs).unwrap());
    assert_eq!(backend.queue_len("r").await.unwrap(), 0);
    assert_eq!(backend.delayed_count().await.unwrap(), 0);
}

/// Several workers on a task with a concurrency cap never run more than
/// the cap at once; every job runs exactly once, none failed, and every
/// slot is released at the end.
pub async fn workers_never_exceed_the_task_cap(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    let p = probe();
    let tasks = registry(vec![probe_def(&p, "job", Duration::from_millis(50)).concurrency(2)]);
    let jobs = 8;
    for i in 0..jobs {
        q.enqueue("c", "job", (i,)).await.unwrap();
    }
    run_until_all_ran(&backend, &tasks, &["c"], (2, 3), true, &p, jobs).await;
    let peak = p.peak.load(Ordering::SeqCst);
    assert!((1..=2).contains(&peak), "at most 2 at once, saw {peak}");
    each_ran_once(&p.seen.lock().unwrap(), jobs);
    assert_eq!(backend.failed_count().await.unwrap(), 0);
    assert_eq!(backend.task_slots_held("job").await.unwrap(), 0, "every slot released");
}

/// A task without limits costs no flow-control call at all, and runs at
/// full speed beside a limited task of the same queue whose extra jobs
/// wait on the schedule (not lost, not failed).
pub async fn tasks_without_limits_are_unaffected(backend: Arc<dyn Backend>) {
    let counting = Counting::new(Arc::clone(&backend));
    let backend: Arc<dyn Backend> = counting.clone();
    let q = Queue::new(Arc::clone(&backend));
    let free = probe();
    let slow = probe();
    let tasks = registry(vec![
        probe_def(&free, "free", Duration::ZERO),
        probe_def(&slow, "slow", Duration::ZERO).rate_limit(1, HOUR),
    ]);
    for i in 0..6 {
        q.enqueue("q", "free", (i,)).await.unwrap();
    }
    let w = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    wait_until(LIMIT, "every unlimited job ran", || {
        let free = Arc::clone(&free);
        async move { free.ran.load(Ordering::SeqCst) == 6 }
    })
    .await;
    assert_eq!(
        counting.count("acquire_task_start"),
        0,
        "no admission for an unlimited task"
    );
    assert_eq!(counting.count("release_task_slot"), 0);
    for i in 0..3 {
        q.enqueue("q", "slow", (i,)).await.unwrap();
    }
    for i in 6..9 {
        q.enqueue("q", "free", (i,)).await.unwrap();
    }
    wait_until(LIMIT, "one limited and every unlimited job ran", || {
        let (free, slow) = (Arc::clone(&free), Arc::clone(&slow));
        async move { free.ran.load(Ordering::SeqCst) == 9 && slow.ran.load(Ordering::SeqCst) == 1 }
    })
    .await;
    wait_until(LIMIT, "the other two limited jobs wait on the schedule", || {
        let backend = Arc::clone(&backend);
        async move { backend.delayed_count().await.unwrap() == 2 && backend.queue_len("q").await.unwrap() == 0 }
    })
    .await;
    w.shutdown().await;
    assert_eq!(counting.count("acquire_task_start"), 3, "one admission per limited job");
    each_ran_once(&free.seen.lock().unwrap(), 9);
    assert_eq!(backend.failed_count().await.unwrap(), 0);
}

/// Two limited tasks in one queue are counted apart: one at its rate limit
/// does not hold up the other, capped one, whose jobs all run.
pub async fn two_limited_tasks_in_one_queue_do_not_block_each_other(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    let rated = probe();
    let capped = probe();
    let tasks = registry(vec![
        probe_def(&rated, "rated", Duration::ZERO).rate_limit(1, HOUR),
        probe_def(&capped, "capped", Duration::from_millis(20)).concurrency(1),
    ]);
    for i in 0..3 {
        q.enqueue("q", "rated", (i,)).await.unwrap();
        q.enqueue("q", "capped", (i,)).await.unwrap();
    }
    run_until_all_ran(&backend, &tasks, &["q"], (1, 2), true, &capped, 3).await;
    assert_eq!(rated.ran.load(Ordering::SeqCst), 1, "one start per hour");
    assert!(capped.peak.load(Ordering::SeqCst) <= 1);
    each_ran_once(&capped.seen.lock().unwrap(), 3);
    assert_eq!(
        backend.delayed_count().await.unwrap() + backend.queue_len("q").await.unwrap(),
        2,
        "the other two rated jobs wait, not lost"
    );
    assert_eq!(backend.failed_count().await.unwrap(), 0);
}
