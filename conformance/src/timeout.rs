//! Job timeouts (issue #14): [`TaskDef::timeout`] and the worker's default
//! [`WorkerConfig::job_timeout`]. A job past its limit is stopped (its
//! future dropped), recorded as a Resque-shaped failure with exception
//! `Resq::JobTimeout` and the limit in its error text, retried by Retry
//! like any failure, and its slot takes the next job.
//!
//! The tests assert what happens, never how fast: the limits are short
//! (a few hundred ms) and every wait is a generous liveness bound. The
//! lateness of the timeout is measured by the load harness (see
//! BENCHMARKS.md), not here.

use crate::support::{
    quick_config, quick_scheduler, recorded, registry, runs, spawn_scheduler, spawn_worker, wait_until, Runs,
};
use resq_core::backend::Backend;
use resq_core::failed::JOB_TIMEOUT;
use resq_core::plugins::Retry;
use resq_core::task::{JobContext, TaskDef, TaskError};
use resq_core::{Queue, WorkerConfig};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Liveness bound for everything in this group.
const LIMIT: Duration = Duration::from_secs(10);

/// Sets its flag when dropped: proof that a task's future was dropped.
pub struct DropFlag(pub Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A task `name` that starts (counting in `started`), then hangs for a
/// minute holding a [`DropFlag`] on `dropped`.
pub(crate) fn hanging(name: &str, started: &Arc<AtomicUsize>, dropped: &Arc<AtomicBool>) -> TaskDef {
    let started = Arc::clone(started);
    let dropped = Arc::clone(dropped);
    TaskDef::from_fn(name, move |_args: Vec<Value>, _ctx: JobContext| {
        let guard = DropFlag(Arc::clone(&dropped));
        started.fetch_add(1, Ordering::SeqCst);
        async move {
            let _guard = guard;
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, TaskError>(())
        }
    })
}

/// The `record` task of the standard set, as a definition.
pub(crate) fn recording(runs: &Runs) -> TaskDef {
    let r = Arc::clone(runs);
    TaskDef::from_fn("record", move |args: Vec<Value>, ctx: JobContext| {
        let r = Arc::clone(&r);
        async move {
            r.lock().expect("runs lock").push((ctx.job.class.clone(), args));
            Ok::<_, TaskError>(())
        }
    })
}

async fn wait_failed(q: &Queue, n: u64, what: &str) {
    wait_until(LIMIT, what, || async { q.failed_count().await.unwrap() >= n }).await;
}

/// A task past its own limit is dropped and fails with `Resq::JobTimeout`,
/// the limit in the error text, in a normal Resque failed entry; the
/// worker takes its next job.
pub async fn a_job_past_its_timeout_is_stopped_and_fails(backend: Arc<dyn Backend>) {
    let started = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let log = runs();
    let tasks = registry(vec![
        hanging("hang", &started, &dropped).timeout(Duration::from_millis(200)),
        recording(&log),
    ]);
    let q = Queue::new(Arc::clone(&backend));
    let w = spawn_worker(&backend, &tasks, quick_config(&["t"]));
    q.enqueue("t", "hang", ("a",)).await.unwrap();
    q.enqueue("t", "record", ("after",)).await.unwrap();
    wait_failed(&q, 1, "the hanging job failed").await;
    assert!(dropped.load(Ordering::SeqCst), "the task's future was dropped");
    wait_until(LIMIT, "the next job ran", || {
        let log = Arc::clone(&log);
        async move { recorded(&log).len() == 1 }
    })
    .await;
    let failed = q.failed(0, -1).await.unwrap();
    assert_eq!(failed.len(), 1);
    let f = &failed[0];
    assert_eq!(f.exception.as_deref(), Some(JOB_TIMEOUT));
    let error = f.error.as_deref().unwrap_or_default();
    assert!(error.contains("200 ms"), "the limit is in the error text: {error}");
    assert_eq!(f.queue.as_deref(), Some("t"));
    assert_eq!(f.worker.as_deref(), Some(w.name.as_str()));
    let payload: Value = serde_json::from_str(f.payload.as_deref().unwrap_or("null")).unwrap();
    assert_eq!(payload["class"], "hang");
    assert_eq!(payload["args"], serde_json::json!(["a"]));
    assert_eq!(started.load(Ordering::SeqCst), 1, "it ran once");
    assert_eq!(backend.stat("failed").await.unwrap(), 1);
    // The next job's task has run; its success is counted when the worker
    // completes it, a moment later.
    wait_until(LIMIT, "the next job's success is counted", || {
        let backend = Arc::clone(&backend);
        async move { backend.stat("processed").await.unwrap() >= 1 }
    })
    .await;
    assert_eq!(
        backend.stat("processed").await.unwrap(),
        1,
        "only the next job succeeded"
    );
    w.shutdown().await;
}

/// Without a limit of its own a task gets the worker's `job_timeout`; a
/// task's own limit wins over it, in both directions.
pub async fn the_worker_default_applies_unless_the_task_sets_a_limit(backend: Arc<dyn Backend>) {
    let started = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let slow_done = Arc::new(AtomicUsize::new(0));
    let done = Arc::clone(&slow_done);
    let tasks = registry(vec![
        hanging("hang", &started, &dropped),
        // Longer than the default, shorter than its own limit: succeeds.
        TaskDef::from_fn("patient", move |_args: Vec<Value>, _ctx: JobContext| {
            let done = Arc::clone(&done);
            async move {
                tokio::time::sleep(Duration::from_millis(600)).await;
                done.fetch_add(1, Ordering::SeqCst);
                Ok::<_, TaskError>(())
            }
        })
        .timeout(Duration::from_secs(30)),
    ]);
    let q = Queue::new(Arc::clone(&backend));
    let config = WorkerConfig {
        job_timeout: Some(Duration::from_millis(250)),
        ..quick_config(&["t"])
    };
    let w = spawn_worker(&backend, &tasks, config);
    q.enqueue("t", "hang", ("x",)).await.unwrap();
    q.enqueue("t", "patient", ("y",)).await.unwrap();
    wait_until(LIMIT, "the patient job succeeded", || async {
        slow_done.load(Ordering::SeqCst) == 1 && backend.stat("processed").await.unwrap() == 1
    })
    .await;
    let failed = q.failed(0, -1).await.unwrap();
    assert_eq!(failed.len(), 1, "only the task without a limit timed out");
    assert_eq!(failed[0].exception.as_deref(), Some(JOB_TIMEOUT));
    assert!(failed[0].error.as_deref().unwrap_or_default().contains("250 ms"));
    assert!(dropped.load(Ordering::SeqCst));
    w.shutdown().await;
}

/// A timed-out job is a failure to the Retry plugin: it is retried, and
/// an attempt that finishes in time succeeds, leaving no failed entry.
pub async fn retry_retries_a_timed_out_job(backend: Arc<dyn Backend>) {
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = Arc::clone(&attempts);
    let tasks = registry(vec![TaskDef::from_fn(
        "flaky",
        move |_args: Vec<Value>, _ctx: JobContext| {
            let n = a.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    // The first attempt hangs past the limit.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                Ok::<_, TaskError>(n)
            }
        },
    )
    .timeout(Duration::from_millis(200))
    .plugin(Retry::new().retry_limit(3).retry_delay(Duration::from_millis(100)))]);
    let q = Queue::new(Arc::clone(&backend));
    let mut w = spawn_worker(&backend, &tasks, quick_config(&["t"]));
    let events = w.take_events();
    let s = spawn_scheduler(&backend, None, quick_scheduler());
    q.enqueue("t", "flaky", ("z",)).await.unwrap();
    wait_until(LIMIT, "the retry succeeded", || async {
        attempts.load(Ordering::SeqCst) >= 2 && backend.stat("processed").await.unwrap() >= 1
    })
    .await;
    assert_eq!(
        q.failed_count().await.unwrap(),
        0,
        "the retried job left no failed entry"
    );
    let re_enqueued = crate::support::count_events(
        &events,
        |e| matches!(e, resq_core::WorkerEvent::ReEnqueue { error, .. } if error.contains("timeout")),
    );
    assert_eq!(re_enqueued, 1, "Retry re-enqueued it once, for its timeout");
    s.shutdown().await;
    w.shutdown().await;
}

/// Work the task handed elsewhere sees the stop: a spawned task awaiting
/// [`JobContext::cancelled`] and a `spawn_blocking` loop polling
/// [`JobContext::is_cancelled`] both end after the timeout.
pub async fn job_context_tells_handed_off_work_to_stop(backend: Arc<dyn Backend>) {
    let async_saw = Arc::new(AtomicBool::new(false));
    let blocking_saw = Arc::new(AtomicBool::new(false));
    let (a, b) = (Arc::clone(&async_saw), Arc::clone(&blocking_saw));
    let tasks = registry(vec![TaskDef::from_fn(
        "handoff",
        move |_args: Vec<Value>, ctx: JobContext| {
            let (a, b) = (Arc::clone(&a), Arc::clone(&b));
            async move {
                let watcher = ctx.clone();
                tokio::spawn(async move {
                    watcher.cancelled().await;
                    a.store(true, Ordering::SeqCst);
                });
                let token = ctx.cancellation_token();
                let blocking = tokio::task::spawn_blocking(move || {
                    // Bounded, so a broken stop cannot hold a thread for ever.
                    for _ in 0..3000 {
                        if token.is_cancelled() {
                            b.store(true, Ordering::SeqCst);
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                });
                let _ = blocking.await;
                Ok::<_, TaskError>(())
            }
        },
    )
    .timeout(Duration::from_millis(200))]);
    let q = Queue::new(Arc::clone(&backend));
    let w = spawn_worker(&backend, &tasks, quick_config(&["t"]));
    q.enqueue("t", "handoff", ("h",)).await.unwrap();
    wait_until(LIMIT, "both handed-off parts saw the stop", || async {
        async_saw.load(Ordering::SeqCst) && blocking_saw.load(Ordering::SeqCst)
    })
    .await;
    wait_failed(&q, 1, "the job failed with its timeout").await;
    assert_eq!(q.failed(0, 0).await.unwrap()[0].exception.as_deref(), Some(JOB_TIMEOUT));
    w.shutdown().await;
}

/// In a multi-slot worker a timed-out slot frees itself while the other
/// slots go on working.
pub async fn a_multi_slot_worker_times_out_one_slot_only(backend: Arc<dyn Backend>) {
    let started = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let log = runs();
    let tasks = registry(vec![
        hanging("hang", &started, &dropped).timeout(Duration::from_millis(300)),
        recording(&log),
    ]);
    let q = Queue::new(Arc::clone(&backend));
    let config = WorkerConfig {
        concurrency: 2,
        ..quick_config(&["t"])
    };
    let w = spawn_worker(&backend, &tasks, config);
    q.enqueue("t", "hang", ("a",)).await.unwrap();
    q.enqueue("t", "hang", ("b",)).await.unwrap();
    wait_failed(&q, 2, "both hanging jobs timed out").await;
    for i in 0..5 {
        q.enqueue("t", "record", (i,)).await.unwrap();
    }
    wait_until(LIMIT, "the freed slots took the next jobs", || {
        let log = Arc::clone(&log);
        async move { recorded(&log).len() == 5 }
    })
    .await;
    let failed = q.failed(0, -1).await.unwrap();
    assert!(failed.iter().all(|f| f.exception.as_deref() == Some(JOB_TIMEOUT)));
    assert_eq!(started.load(Ordering::SeqCst), 2);
    w.shutdown().await;
}
