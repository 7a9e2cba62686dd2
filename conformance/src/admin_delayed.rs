//! `resq_admin::Admin::delayed`, `run_delayed_now` and `delete_delayed`:
//! the schedule paged by time, "run now" for one item, and removal of one
//! item from one bucket.

use crate::fixtures::job;
use resq_admin::{Admin, DelayedRef, Page};
use resq_core::backend::Backend;
use resq_core::time::now_ms;
use resq_core::Error;
use serde_json::json;
use std::sync::Arc;

/// A bucket far enough in the future never to be promoted during a test.
fn future_secs() -> i64 {
    now_ms() / 1000 + 3600
}

/// Pages walk the schedule oldest bucket first, in insertion order within
/// a bucket; `total` counts every item, and each item is decoded.
pub async fn delayed_pages_by_time(backend: Arc<dyn Backend>) {
    let admin = Admin::new(Arc::clone(&backend));
    let t = future_secs();
    let items = [
        (t + 100, job("q", "A", 1)),
        (t + 100, job("q", "A", 2)),
        (t + 50, job("r", "B", 3)),
        (t + 200, job("q", "C", 4)),
        (t + 200, job("q", "C", 5)),
    ];
    for (ts, payload) in &items {
        assert!(backend.schedule(*ts, payload).await.unwrap());
    }
    let page = |offset, limit| {
        let admin = admin.clone();
        async move { admin.delayed(Page::new(offset, limit)).await.unwrap() }
    };
    let first = page(0, 2).await;
    assert_eq!((first.offset, first.total), (0, 5));
    let seen: Vec<(i64, String)> = first
        .items
        .iter()
        .map(|d| (d.timestamp_ms, d.payload.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            ((t + 50) * 1000, items[2].1.clone()),
            ((t + 100) * 1000, items[0].1.clone())
        ]
    );
    let d = &first.items[0];
    assert_eq!((d.queue.as_deref(), d.class.as_deref()), (Some("r"), Some("B")));
    assert_eq!(d.args, Some(json!([3])));
    let second: Vec<String> = page(2, 2).await.items.into_iter().map(|d| d.payload).collect();
    assert_eq!(second, [items[1].1.clone(), items[3].1.clone()]);
    let last = page(4, 10).await;
    assert_eq!(last.items.len(), 1);
    assert_eq!(last.items[0].payload, items[4].1);
    assert!(page(5, 10).await.items.is_empty());
}

/// "Run now" moves that one item to the tail of its queue at once; the
/// identical item in another bucket stays scheduled; a second "run now"
/// with the same reference is refused as stale and changes nothing.
pub async fn run_now_moves_one_item_to_its_queue_tail(backend: Arc<dyn Backend>) {
    let admin = Admin::new(Arc::clone(&backend));
    let t = future_secs();
    let queued = job("q", "A", 0);
    let item = job("q", "A", 1);
    backend.push("q", &queued).await.unwrap();
    backend.schedule(t, &item).await.unwrap();
    backend.schedule(t + 10, &item).await.unwrap();
    let listed = admin.delayed(Page::default()).await.unwrap();
    let reference = listed.items[0].reference();
    assert_eq!(reference.timestamp_ms, t * 1000);
    admin.run_delayed_now(&reference).await.unwrap();
    assert_eq!(
        backend.queue_range("q", 0, -1).await.unwrap(),
        [queued.clone(), item.clone()]
    );
    assert_eq!(backend.delayed_timestamps().await.unwrap(), [t + 10]);
    assert_eq!(backend.timestamps_of(&item).await.unwrap(), [t + 10]);
    let again = admin.run_delayed_now(&reference).await;
    assert!(matches!(again, Err(Error::StaleDelayedEntry { .. })), "{again:?}");
    assert_eq!(backend.queue_len("q").await.unwrap(), 2);
    // The moved job is queued like any other: it has an enqueue time.
    let o = admin.queues().await.unwrap();
    assert!(o.iter().all(|s| s.latency_seconds.is_some()), "{o:?}");
    // An item that names no queue cannot run now, and stays.
    let ruby = r#"{"class":"R","args":[]}"#;
    backend.schedule(t + 20, ruby).await.unwrap();
    let r = admin
        .run_delayed_now(&DelayedRef {
            timestamp_ms: (t + 20) * 1000,
            payload: ruby.to_owned(),
        })
        .await;
    assert!(r.is_err());
    assert_eq!(backend.delayed_at(t + 20).await.unwrap(), [ruby]);
}

/// Deleting one item removes it from that bucket only; the identical item
/// in another bucket and the other items of the bucket stay; a second
/// delete is refused as stale.
pub async fn delete_one_delayed_item_leaves_other_buckets(backend: Arc<dyn Backend>) {
    let admin = Admin::new(Arc::clone(&backend));
    let t = future_secs();
    let d = job("q", "D", 1);
    let e = job("q", "E", 2);
    backend.schedule(t, &d).await.unwrap();
    backend.schedule(t, &e).await.unwrap();
    backend.schedule(t + 5, &d).await.unwrap();
    let reference = DelayedRef {
        timestamp_ms: t * 1000,
        payload: d.clone(),
    };
    admin.delete_delayed(&reference).await.unwrap();
    assert_eq!(backend.delayed_at(t).await.unwrap(), std::slice::from_ref(&e));
    assert_eq!(backend.delayed_at(t + 5).await.unwrap(), std::slice::from_ref(&d));
    assert_eq!(backend.timestamps_of(&d).await.unwrap(), [t + 5]);
    let again = admin.delete_delayed(&reference).await;
    assert!(matches!(again, Err(Error::StaleDelayedEntry { .. })), "{again:?}");
    // Emptying a bucket removes it from the schedule.
    admin
        .delete_delayed(&DelayedRef {
            timestamp_ms: t * 1000,
            payload: e,
        })
        .await
        .unwrap();
    assert_eq!(backend.delayed_timestamps().await.unwrap(), [t + 5]);
    let o = admin.overview().await.unwrap();
    assert_eq!(o.delayed, 1);
}
