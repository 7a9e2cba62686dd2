//! `resq_admin::Admin::cancel` and `cancel_jobs` (issue #14): the ids the
//! listings show (a worker's job, a queued job, a delayed item) cancel
//! exactly that job; by class and arguments, every matching one. Each
//! queued or delayed job removed is a `cancelled` queue event on
//! `Admin::subscribe`.

use crate::support::{count_events, quick_config, registry, spawn_worker, wait_until};
use crate::timeout::hanging;
use resq_admin::{Admin, Page};
use resq_core::backend::Backend;
use resq_core::worker::CANCELLED_STAT;
use resq_core::{Error, WorkerEvent};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Liveness bound.
const LIMIT: Duration = Duration::from_secs(10);

/// Each listing's id cancels its job: the worker's running job stops (and
/// the worker shows idle), the queued and delayed ones are removed; a
/// dry run finds what a cancel by class and arguments would take.
pub async fn listing_ids_cancel_running_queued_and_delayed_jobs(backend: Arc<dyn Backend>) {
    let admin = Admin::new(Arc::clone(&backend));
    let started = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let tasks = registry(vec![hanging("hang", &started, &dropped)]);
    let mut w = spawn_worker(&backend, &tasks, quick_config(&["run"]));
    let events = w.take_events();
    let mut removals = admin.subscribe();
    admin.enqueue("run", "hang", json!([1])).await.unwrap();
    admin.enqueue("wait", "hang", json!([2])).await.unwrap();
    admin.enqueue("wait", "hang", json!([3])).await.unwrap();
    let queue = resq_core::Queue::new(Arc::clone(&backend));
    queue
        .enqueue_in(Duration::from_secs(3600), "wait", "hang", (4,))
        .await
        .unwrap();

    wait_until(LIMIT, "the worker runs the job", || async {
        admin.workers().await.unwrap().iter().any(|w| w.busy)
    })
    .await;
    let workers = admin.workers().await.unwrap();
    let running = workers.iter().find_map(|w| w.job.clone()).unwrap();
    assert_eq!(
        admin.find_job(&running.id).await.unwrap().as_deref(),
        Some(running.payload.as_str())
    );
    assert_eq!(admin.cancel(&running.id).await.unwrap().running, 1);
    wait_until(LIMIT, "the worker is idle again", || async {
        admin.workers().await.unwrap().iter().all(|w| !w.busy)
    })
    .await;
    wait_until(LIMIT, "the cancelled event", || async {
        count_events(&events, |e| matches!(e, WorkerEvent::Cancelled { .. })) == 1
    })
    .await;
    assert!(dropped.load(Ordering::SeqCst));

    let detail = admin.queue("wait", Page::default()).await.unwrap();
    let second = detail.jobs.items[0].id.clone();
    assert_eq!(admin.cancel(&second).await.unwrap().queued, 1);
    assert!(matches!(
        admin.cancel(&second).await.unwrap_err(),
        Error::StaleJob { .. }
    ));
    let delayed = admin.delayed(Page::default()).await.unwrap();
    assert_eq!(admin.cancel(&delayed.items[0].id).await.unwrap().delayed, 1);
    assert_eq!(admin.delayed(Page::default()).await.unwrap().total, 0);

    assert!(matches!(
        admin
            .cancel_jobs("hang", Some(&json!({"not": "an array"})))
            .await
            .unwrap_err(),
        Error::InvalidArgument(_)
    ));
    let dry = admin.find_jobs("hang", Some(&json!([3]))).await.unwrap();
    assert_eq!(dry.len(), 1);
    assert_eq!(backend.queue_len("wait").await.unwrap(), 1, "a dry run changes nothing");
    let report = admin.cancel_jobs("hang", Some(&json!([3]))).await.unwrap();
    assert_eq!((report.running, report.queued, report.delayed), (0, 1, 0));
    assert_eq!(backend.queue_len("wait").await.unwrap(), 0);
    wait_until(LIMIT, "every cancel was counted", || async {
        backend.stat(CANCELLED_STAT).await.unwrap() == 4
    })
    .await;
    assert_eq!(admin.overview().await.unwrap().failed, 0);
    // One queue event per removed job (the running one is the worker's).
    let mut places = Vec::new();
    while let Ok(resq_core::QueueEvent::Cancelled { class, place, .. }) = removals.try_recv() {
        assert_eq!(class, "hang");
        places.push(place);
    }
    assert_eq!(places.len(), 3, "{places:?}");
    assert!(matches!(places[1], resq_core::JobPlace::Delayed(_)), "{places:?}");
    w.shutdown().await;
}
