//! Cancelling jobs (issue #14): a running job is stopped through the
//! backend's cancel mark and wake-up channel wherever its worker runs; a
//! queued or delayed one is removed. A cancelled running job is dropped,
//! recorded as neither a success nor a failure (no failed entry, not
//! retried), counted in `resq:cancelled`, evented, and its slot is freed.
//!
//! Every wait is a generous liveness bound; the cancel latency itself is
//! measured by the load harness (see BENCHMARKS.md).

use crate::outage::Outage;
use crate::support::{count_events, quick_config, recorded, registry, runs, spawn_worker, wait_until};
use crate::timeout::{hanging, recording};
use resq_core::backend::{Backend, CancelMark, WorkerId};
use resq_core::plugins::Retry;
use resq_core::worker::CANCELLED_STAT;
use resq_core::{
    BackendErrorKind, Error, JobId, JobPlace, Queue, QueueEvent as ResqQueueEvent, WorkerConfig, WorkerEvent,
};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Liveness bound for everything in this group.
const LIMIT: Duration = Duration::from_secs(10);

/// Waits until `n` working-on records show class `class`; returns them
/// as `(worker id, payload)`.
async fn running_jobs(backend: &Arc<dyn Backend>, class: &str, n: usize) -> Vec<(WorkerId, String)> {
    let found = Arc::new(std::sync::Mutex::new(Vec::new()));
    wait_until(LIMIT, "the jobs are running", || {
        let backend = Arc::clone(backend);
        let found = Arc::clone(&found);
        let class = class.to_owned();
        async move {
            let workers = backend.workers().await.unwrap();
            let records = backend.working_on_many(&workers).await.unwrap();
            let hits: Vec<(WorkerId, String)> = workers
                .into_iter()
                .zip(records)
                .filter_map(|(w, r)| r.filter(|r| r.payload.contains(&class)).map(|r| (w, r.payload)))
                .collect();
            let ok = hits.len() == n;
            *found.lock().unwrap() = hits;
            ok
        }
    })
    .await;
    let out = found.lock().unwrap().clone();
    out
}

/// Checks the cancelled outcome of `n` jobs: no failed entry, no
/// `processed`/`failed` counts, `n` in the cancelled counter and `n`
/// `cancelled` events.
async fn assert_cancelled(backend: &Arc<dyn Backend>, log: &crate::support::EventLog, n: usize) {
    let q = Queue::new(Arc::clone(backend));
    wait_until(LIMIT, "the cancelled events", || async {
        count_events(log, |e| matches!(e, WorkerEvent::Cancelled { .. })) == n
    })
    .await;
    wait_until(LIMIT, "the cancelled counter", || async {
        backend.stat(CANCELLED_STAT).await.unwrap() == i64::try_from(n).unwrap()
    })
    .await;
    assert_eq!(q.failed_count().await.unwrap(), 0, "a cancelled job is not a failure");
    assert_eq!(backend.stat("failed").await.unwrap(), 0);
    assert_eq!(backend.stat("processed").await.unwrap(), 0);
}

/// `Queue::cancel_running` stops a single-slot worker's job: its future
/// is dropped, its working-on record removed, and the worker takes its
/// next job.
pub async fn cancel_running_stops_the_job_and_frees_the_worker(backend: Arc<dyn Backend>) {
    let started = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let log = runs();
    let tasks = registry(vec![hanging("hang", &started, &dropped), recording(&log)]);
    let q = Queue::new(Arc::clone(&backend));
    let mut w = spawn_worker(&backend, &tasks, quick_config(&["c"]));
    let events = w.take_events();
    q.enqueue("c", "hang", ("a",)).await.unwrap();
    let jobs = running_jobs(&backend, "hang", 1).await;
    let (worker, payload) = &jobs[0];
    assert!(
        !q.cancel_running(worker, "{\"class\":\"other\",\"args\":[]}")
            .await
            .unwrap(),
        "another job: nothing"
    );
    assert!(q.cancel_running(worker, payload).await.unwrap());
    wait_until(LIMIT, "the job's future was dropped", || async {
        dropped.load(Ordering::SeqCst)
    })
    .await;
    wait_until(LIMIT, "its working-on record is gone", || async {
        backend.working_on(worker).await.unwrap().is_none()
    })
    .await;
    assert_cancelled(&backend, &events, 1).await;
    q.enqueue("c", "record", ("next",)).await.unwrap();
    wait_until(LIMIT, "the worker took its next job", || {
        let log = Arc::clone(&log);
        async move { recorded(&log).len() == 1 }
    })
    .await;
    assert_eq!(started.load(Ordering::SeqCst), 1, "the cancelled job did not run again");
    assert_eq!(q.length("c").await.unwrap(), 0);
    w.shutdown().await;
}

/// A task that ends as soon as it sees its cancellation (it awaits
/// `JobContext::cancelled` and returns `Ok`) is still recorded as
/// cancelled: the stop wins over the task's own return at the poll it
/// wakes, so it is neither a success nor counted as processed.
pub async fn a_task_ending_on_its_cancellation_is_cancelled_not_a_success(backend: Arc<dyn Backend>) {
    use resq_core::task::{JobContext, TaskDef, TaskError};
    let tasks = registry(vec![TaskDef::from_fn(
        "cooperative",
        |_args: Vec<serde_json::Value>, ctx: JobContext| async move {
            tokio::time::timeout(Duration::from_secs(60), ctx.cancelled())
                .await
                .ok();
            Ok::<_, TaskError>(())
        },
    )]);
    let q = Queue::new(Arc::clone(&backend));
    let mut w = spawn_worker(&backend, &tasks, quick_config(&["c"]));
    let events = w.take_events();
    q.enqueue("c", "cooperative", ("a",)).await.unwrap();
    let jobs = running_jobs(&backend, "cooperative", 1).await;
    let (worker, payload) = &jobs[0];
    assert!(q.cancel_running(worker, payload).await.unwrap());
    assert_cancelled(&backend, &events, 1).await;
    assert_eq!(
        count_events(&events, |e| matches!(e, WorkerEvent::Success { .. })),
        0,
        "not a success"
    );
    w.shutdown().await;
}

/// In a multi-slot worker, a cancel by [`JobId`] stops exactly that
/// slot's job; a cancel by class and arguments stops the matching one.
pub async fn cancel_by_id_and_by_args_in_a_multi_slot_worker(backend: Arc<dyn Backend>) {
    let started = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let tasks = registry(vec![hanging("hang", &started, &dropped)]);
    let q = Queue::new(Arc::clone(&backend));
    let config = WorkerConfig {
        concurrency: 3,
        ..quick_config(&["c"])
    };
    let mut w = spawn_worker(&backend, &tasks, config);
    let events = w.take_events();
    for tag in ["a", "b", "c"] {
        q.enqueue("c", "hang", (tag,)).await.unwrap();
    }
    let jobs = running_jobs(&backend, "hang", 3).await;
    let (slot, payload) = jobs.iter().find(|(_, p)| p.contains("\"a\"")).cloned().unwrap();
    let id = JobId::running(&slot.name, &payload);
    assert_eq!(id.place(), &JobPlace::Running(slot.name.clone()));
    assert_eq!(
        id.to_string().parse::<JobId>().unwrap(),
        id,
        "the text form round-trips"
    );
    assert_eq!(q.find_job(&id).await.unwrap().as_deref(), Some(payload.as_str()));
    let report = q.cancel(&id).await.unwrap();
    assert_eq!((report.running, report.queued, report.delayed), (1, 0, 0));
    wait_until(LIMIT, "slot a is free", || async {
        backend.working_on(&slot).await.unwrap().is_none()
    })
    .await;
    let left = running_jobs(&backend, "hang", 2).await;
    assert!(left.iter().all(|(_, p)| !p.contains("\"a\"")), "only a was stopped");

    let report = q.cancel_jobs("hang", Some(&[json!("b")])).await.unwrap();
    assert_eq!(report.running, 1);
    let left = running_jobs(&backend, "hang", 1).await;
    assert!(left[0].1.contains("\"c\""), "b was stopped, c runs on");
    assert_cancelled(&backend, &events, 2).await;
    // A stale id (the job is gone) changes nothing.
    let err = q.cancel(&id).await.unwrap_err();
    assert!(matches!(err, Error::StaleJob { .. }), "{err}");
    let report = q.cancel_jobs("hang", None).await.unwrap();
    assert_eq!(report.running, 1);
    assert_cancelled(&backend, &events, 3).await;
    w.shutdown().await;
}

/// Queued and delayed jobs are removed by id and by class (with or
/// without arguments), counted as cancelled, and never run.
pub async fn cancel_removes_queued_and_delayed_jobs(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    q.enqueue("q1", "job", (1,)).await.unwrap();
    q.enqueue("q1", "job", (2,)).await.unwrap();
    q.enqueue("q1", "other", (1,)).await.unwrap();
    q.enqueue("q2", "job", (1,)).await.unwrap();
    q.enqueue_in(Duration::from_secs(3600), "q1", "job", (3,))
        .await
        .unwrap();
    q.enqueue_in(Duration::from_secs(7200), "q1", "job", (1,))
        .await
        .unwrap();

    let queued = backend.queue_range("q1", 0, -1).await.unwrap();
    let id = JobId::queued("q1", &queued[1]);
    assert_eq!(q.cancel(&id).await.unwrap().queued, 1);
    assert_eq!(q.length("q1").await.unwrap(), 2);
    assert!(matches!(q.cancel(&id).await.unwrap_err(), Error::StaleJob { .. }));

    let ts = q.timestamps().await.unwrap();
    assert_eq!(ts.len(), 2);
    let raw = backend.delayed_at(ts[0] / 1000).await.unwrap().remove(0);
    let id = JobId::delayed(ts[0], &raw);
    let parsed: JobId = id.to_string().parse().unwrap();
    assert_eq!(parsed, id);
    assert_eq!(q.cancel(&parsed).await.unwrap().delayed, 1);
    assert_eq!(q.timestamps().await.unwrap().len(), 1);

    let dry = q.find_jobs("job", Some(&[json!(1)])).await.unwrap();
    assert_eq!(dry.len(), 3, "q1, q2 and the delayed one: {dry:?}");
    let report = q.cancel_jobs("job", Some(&[json!(1)])).await.unwrap();
    assert_eq!((report.running, report.queued, report.delayed), (0, 2, 1));
    assert_eq!(q.length("q1").await.unwrap(), 1, "other(1) stays");
    assert_eq!(q.length("q2").await.unwrap(), 0);
    assert_eq!(q.timestamps().await.unwrap().len(), 0);
    assert_eq!(backend.stat(CANCELLED_STAT).await.unwrap(), 5);
    let report = q.cancel_jobs("other", None).await.unwrap();
    assert_eq!(report.total(), 1);
    assert_eq!(backend.stat(CANCELLED_STAT).await.unwrap(), 6);
    assert_eq!(q.failed_count().await.unwrap(), 0);
}

/// Every queued or delayed job a cancel removes emits one `cancelled`
/// queue event on the client's channel (shared by its clones), with its
/// class and place, and its id where the removal knew its bytes; an
/// admin's cancels go through the same channel.
pub async fn cancelling_queued_and_delayed_jobs_emits_events(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    let mut rx = q.clone().subscribe();
    q.enqueue("q1", "job", (1,)).await.unwrap();
    q.enqueue("q1", "job", (2,)).await.unwrap();
    q.enqueue("q2", "job", (3,)).await.unwrap();
    q.enqueue("q1", "other", (1,)).await.unwrap();
    q.enqueue_in(Duration::from_secs(3600), "q1", "job", (4,))
        .await
        .unwrap();
    q.enqueue_in(Duration::from_secs(7200), "q1", "other", (5,))
        .await
        .unwrap();

    let queued = backend.queue_range("q1", 0, -1).await.unwrap();
    let id = JobId::queued("q1", &queued[0]);
    q.cancel(&id).await.unwrap();
    let ts = q.timestamps().await.unwrap();
    let raw = backend.delayed_at(ts[1] / 1000).await.unwrap().remove(0);
    let delayed_id = JobId::delayed(ts[1], &raw);
    q.cancel(&delayed_id).await.unwrap();
    let report = q.cancel_jobs("job", None).await.unwrap();
    assert_eq!((report.queued, report.delayed), (2, 1));

    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    assert_eq!(events.len(), 5, "one per removed job: {events:?}");
    let ResqQueueEvent::Cancelled { class, place, id: got } = &events[0];
    assert_eq!(
        (class.as_str(), place, got.as_ref()),
        ("job", &JobPlace::Queued("q1".into()), Some(&id))
    );
    let ResqQueueEvent::Cancelled { class, place, id: got } = &events[1];
    assert_eq!(
        (class.as_str(), place, got.as_ref()),
        ("other", &JobPlace::Delayed(ts[1]), Some(&delayed_id))
    );
    let mut by_class: Vec<(String, JobPlace, bool)> = events[2..]
        .iter()
        .map(|ResqQueueEvent::Cancelled { class, place, id }| (class.clone(), place.clone(), id.is_some()))
        .collect();
    by_class.sort_by_key(|(_, p, _)| format!("{p:?}"));
    assert_eq!(
        by_class,
        vec![
            ("job".to_owned(), JobPlace::Delayed(ts[0]), true),
            ("job".to_owned(), JobPlace::Queued("q1".into()), false),
            ("job".to_owned(), JobPlace::Queued("q2".into()), false),
        ]
    );
    assert!(events.iter().all(|e| e.name() == "cancelled"));
    assert_eq!(backend.stat(CANCELLED_STAT).await.unwrap(), 5);
    let other = Queue::new(Arc::clone(&backend));
    assert!(other.subscribe().try_recv().is_err(), "another client's channel");
}

/// A cancelled job is not retried by the Retry plugin, which clears its
/// attempt count as after a success.
pub async fn retry_does_not_retry_a_cancelled_job(backend: Arc<dyn Backend>) {
    let started = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let tasks =
        registry(vec![hanging("hang", &started, &dropped)
            .plugin(Retry::new().retry_limit(3).retry_delay(Duration::from_millis(10)))]);
    let q = Queue::new(Arc::clone(&backend));
    let mut w = spawn_worker(&backend, &tasks, quick_config(&["c"]));
    let events = w.take_events();
    q.enqueue("c", "hang", ("r",)).await.unwrap();
    running_jobs(&backend, "hang", 1).await;
    let report = q.cancel_jobs("hang", None).await.unwrap();
    assert_eq!(report.running, 1);
    assert_cancelled(&backend, &events, 1).await;
    // Nothing was re-enqueued, now or delayed.
    assert_eq!(q.length("c").await.unwrap(), 0);
    assert_eq!(q.timestamps().await.unwrap().len(), 0);
    assert_eq!(count_events(&events, |e| matches!(e, WorkerEvent::ReEnqueue { .. })), 0);
    assert!(backend
        .locks()
        .await
        .unwrap()
        .iter()
        .all(|(k, _)| !k.starts_with("resque-retry")));
    assert_eq!(started.load(Ordering::SeqCst), 1);
    w.shutdown().await;
}

/// The store's side: a request leaves a mark aimed at a working-on record
/// and a signal naming the worker; marks are read per worker, cleared
/// once, and replaced by a newer request.
pub async fn request_cancel_stores_a_mark_and_signals(backend: Arc<dyn Backend>) {
    let w1 = WorkerId::new("cancel-host:1+1", &["c".to_owned()]);
    let w2 = WorkerId::new("cancel-host:1+2", &["c".to_owned()]);
    let mut signals = backend.cancel_signals().await.unwrap();
    let mark = CancelMark {
        run_at: "Fri Dec 04 2026 18:00:00 GMT+0000".to_owned(),
        payload: "{\"class\":\"hang\",\"args\":[1]}".to_owned(),
    };
    let member = w1.member();
    // A subscription may take a moment to be in force, and a signal sent
    // before that is lost (signals are hints; the mark is what lasts), so
    // the request is repeated until one signal arrives.
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut signalled = false;
    while !signalled && tokio::time::Instant::now() < deadline {
        backend.request_cancel(&w1, &mark).await.unwrap();
        let wait = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                match signals.recv().await {
                    Ok(Some(m)) if *m == *member => return true,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return false,
                }
            }
        });
        signalled = wait.await.unwrap_or(false);
    }
    assert!(signalled, "a signal named the worker");
    let marks = backend.cancel_marks(&[w1.clone(), w2.clone()]).await.unwrap();
    assert_eq!(marks, vec![Some(mark.clone()), None]);
    assert_eq!(
        backend.cancel_marks(&[]).await.unwrap(),
        Vec::<Option<CancelMark>>::new()
    );
    let newer = CancelMark {
        run_at: "Fri Dec 04 2026 18:00:01 GMT+0000".to_owned(),
        payload: mark.payload.clone(),
    };
    backend.request_cancel(&w1, &newer).await.unwrap();
    assert_eq!(
        backend.cancel_marks(std::slice::from_ref(&w1)).await.unwrap(),
        vec![Some(newer.clone())]
    );
    // Clearing an older mark leaves the newer request in place.
    assert!(!backend.clear_cancel(&w1, &mark).await.unwrap());
    assert_eq!(
        backend.cancel_marks(std::slice::from_ref(&w1)).await.unwrap(),
        vec![Some(newer.clone())]
    );
    assert!(backend.clear_cancel(&w1, &newer).await.unwrap());
    assert!(!backend.clear_cancel(&w1, &newer).await.unwrap());
    assert!(!backend.clear_cancel(&w2, &newer).await.unwrap());
    assert_eq!(backend.cancel_marks(&[w1]).await.unwrap(), vec![None]);
}

/// With no signal at all (the subscription fails), the worker still finds
/// the durable mark when it reads its marks every ping interval.
pub async fn a_cancel_without_its_signal_is_found_by_the_mark(backend: Arc<dyn Backend>) {
    let outage = Outage::new(Arc::clone(&backend));
    outage.fail_only(BackendErrorKind::Transient, &["cancel_signals"]);
    let wrapped: Arc<dyn Backend> = outage.clone();
    let started = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let tasks = registry(vec![hanging("hang", &started, &dropped)]);
    let q = Queue::new(Arc::clone(&backend));
    let mut w = spawn_worker(&wrapped, &tasks, quick_config(&["c"]));
    let events = w.take_events();
    q.enqueue("c", "hang", ("m",)).await.unwrap();
    let jobs = running_jobs(&backend, "hang", 1).await;
    assert!(q.cancel_running(&jobs[0].0, &jobs[0].1).await.unwrap());
    wait_until(LIMIT, "the job was stopped", || async {
        dropped.load(Ordering::SeqCst)
    })
    .await;
    assert_cancelled(&backend, &events, 1).await;
    assert!(outage.failed_calls() > 0, "the worker had no signals");
    let slot = jobs[0].0.clone();
    wait_until(LIMIT, "the worker cleared the mark it acted on", || async {
        backend.cancel_marks(std::slice::from_ref(&slot)).await.unwrap() == vec![None]
    })
    .await;
    w.shutdown().await;
}
