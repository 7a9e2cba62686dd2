//! `resq_admin::Admin::queue` and `delete_jobs`: one queue's jobs page by
//! page, and removal by class or by class and arguments.

use crate::fixtures::{job, worker, RUN_AT};
use resq_admin::{Admin, Page};
use resq_core::backend::Backend;
use resq_core::Queue;
use serde_json::json;
use std::sync::Arc;

/// A page lists the jobs from its offset, head first, with positions,
/// decoded class and arguments and the stored bytes; `total` is the
/// queue's length; a payload that does not decode is listed with the
/// reason; a page past the end is empty.
pub async fn queue_detail_pages_jobs_head_first(backend: Arc<dyn Backend>) {
    let admin = Admin::new(Arc::clone(&backend));
    for i in 0..6 {
        backend.push("q", &job("q", "record", i)).await.unwrap();
    }
    backend.push("q", "not json").await.unwrap();
    let d = admin.queue("q", Page::new(2, 3)).await.unwrap();
    assert_eq!(d.summary.name, "q");
    assert_eq!(d.summary.length, 7);
    assert_eq!((d.jobs.offset, d.jobs.total), (2, 7));
    let got: Vec<(u64, Option<&str>, Option<serde_json::Value>)> = d
        .jobs
        .items
        .iter()
        .map(|j| (j.position, j.class.as_deref(), j.args.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (2, Some("record"), Some(json!([2]))),
            (3, Some("record"), Some(json!([3]))),
            (4, Some("record"), Some(json!([4])))
        ]
    );
    assert_eq!(d.jobs.items[0].payload, job("q", "record", 2));
    let tail = admin.queue("q", Page::new(5, 10)).await.unwrap();
    assert_eq!(tail.jobs.items.len(), 2);
    let bad = &tail.jobs.items[1];
    assert_eq!(
        (bad.position, bad.payload.as_str(), bad.class.as_deref()),
        (6, "not json", None)
    );
    assert!(bad.error.is_some());
    assert!(admin.queue("q", Page::new(7, 10)).await.unwrap().jobs.items.is_empty());
    let unknown = admin.queue("nowhere", Page::default()).await.unwrap();
    assert_eq!((unknown.summary.length, unknown.jobs.total), (0, 0));
    assert_eq!(unknown.summary.latency_seconds, Some(0.0));
}

/// With arguments, only the jobs of that class with exactly those
/// arguments go; without, every job of the class. Other jobs keep their
/// order, and the queue's latency stays known.
pub async fn delete_jobs_by_class_and_by_class_and_args(backend: Arc<dyn Backend>) {
    let admin = Admin::new(Arc::clone(&backend));
    let q = Queue::new(Arc::clone(&backend));
    q.enqueue("q", "A", (1,)).await.unwrap();
    q.enqueue("q", "A", (2,)).await.unwrap();
    q.enqueue("q", "B", (1,)).await.unwrap();
    q.enqueue("q", "A", (1,)).await.unwrap();
    q.enqueue("q", "B", (2,)).await.unwrap();
    assert_eq!(admin.delete_jobs("q", "A", Some(&json!([1]))).await.unwrap(), 2);
    let left = |d: resq_admin::QueueDetail| -> Vec<(String, serde_json::Value)> {
        d.jobs
            .items
            .into_iter()
            .map(|j| (j.class.unwrap_or_default(), j.args.unwrap_or_default()))
            .collect()
    };
    assert_eq!(
        left(admin.queue("q", Page::default()).await.unwrap()),
        [
            ("A".to_owned(), json!([2])),
            ("B".to_owned(), json!([1])),
            ("B".to_owned(), json!([2]))
        ]
    );
    assert_eq!(admin.delete_jobs("q", "A", Some(&json!([9]))).await.unwrap(), 0);
    assert_eq!(admin.delete_jobs("q", "A", None).await.unwrap(), 1);
    let d = admin.queue("q", Page::default()).await.unwrap();
    assert!(d.summary.latency_seconds.is_some(), "{:?}", d.summary);
    assert_eq!(left(d), [("B".to_owned(), json!([1])), ("B".to_owned(), json!([2]))]);
    // The remaining jobs still carry their enqueue times when claimed.
    let w = worker("h:1+1", &["q"]);
    for _ in 0..2 {
        let c = backend.claim(&w, &["q".to_owned()], RUN_AT).await.unwrap().unwrap();
        assert!(c.enqueued_at_ms.is_some(), "{c:?}");
    }
    assert!(admin.delete_jobs("", "A", None).await.is_err());
}
