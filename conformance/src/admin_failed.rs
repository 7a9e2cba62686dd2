//! `resq_admin::Admin`'s failed-list calls: filters by class, queue, error
//! text and time, paging over the matching entries, single and selected
//! retries and removals by stable id, and bulk actions by filter that walk
//! the list page by page.

use crate::fixtures::{job, sleep_ms};
use resq_admin::{Admin, BulkProgress, FailedFilter, FailedItem, Page, FAILED_PAGE};
use resq_core::backend::Backend;
use resq_core::failed::{encode_entry, Failure};
use resq_core::Error;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// 2026-11-28 21:36:02 UTC.
const T0: i64 = 1_795_901_762_000;
const HOUR: i64 = 3_600_000;

fn entry(queue: &str, class: &str, arg: i64, exception: &str, error: &str, at: i64) -> String {
    encode_entry("w", queue, &job(queue, class, arg), &Failure::new(exception, error), at)
}

fn with_failed_at(queue: &str, class: &str, arg: i64, failed_at: &str) -> String {
    format!(
        r#"{{"failed_at":"{failed_at}","payload":{},"exception":"Error","error":"x","backtrace":[],"worker":"w","queue":"{queue}"}}"#,
        job(queue, class, arg)
    )
}

/// The five entries the filter tests use, oldest first: JS, JS, JS, Ruby
/// and unparseable `failed_at`.
fn sample() -> Vec<String> {
    vec![
        entry("q1", "A", 0, "TypeError", "bad thing", T0),
        entry("q2", "B", 1, "Error", "Blue Smoke", T0 + HOUR),
        entry("q2", "A", 2, "Error", "timeout reached", T0 + 2 * HOUR),
        with_failed_at("q1", "C", 3, "2026/11/28 23:36:02 UTC"),
        with_failed_at("q1", "C", 4, "someday"),
    ]
}

async fn push_all(backend: &Arc<dyn Backend>, entries: &[String]) {
    for e in entries {
        backend.push_failed(e).await.unwrap();
    }
}

async fn matching(admin: &Admin, filter: FailedFilter) -> Vec<u64> {
    let page = admin.failed(&filter, Page::new(0, 100)).await.unwrap();
    assert_eq!(page.total, page.items.len() as u64);
    assert_eq!(admin.count_failed_matching(&filter).await.unwrap(), page.total);
    page.items.iter().map(|i| i.id.index()).collect()
}

fn args_of(item: &FailedItem) -> i64 {
    item.args.as_ref().and_then(|a| a[0].as_i64()).unwrap_or(-1)
}

/// Each filter field selects what it says; fields combine; an unparseable
/// time never matches a time bound but matches without one; each listed
/// item is decoded and carries an id that names it.
pub async fn failed_filters_by_class_queue_error_and_time(backend: Arc<dyn Backend>) {
    let admin = Admin::new(Arc::clone(&backend));
    push_all(&backend, &sample()).await;
    let f = |class: Option<&str>, queue: Option<&str>, error: Option<&str>, since: Option<i64>, until: Option<i64>| {
        FailedFilter {
            class: class.map(str::to_owned),
            queue: queue.map(str::to_owned),
            error: error.map(str::to_owned),
            since_ms: since,
            until_ms: until,
        }
    };
    assert_eq!(matching(&admin, FailedFilter::default()).await, [0, 1, 2, 3, 4]);
    assert_eq!(matching(&admin, f(Some("A"), None, None, None, None)).await, [0, 2]);
    assert_eq!(matching(&admin, f(None, Some("q2"), None, None, None)).await, [1, 2]);
    assert_eq!(matching(&admin, f(None, None, Some("SMOKE"), None, None)).await, [1]);
    assert_eq!(
        matching(&admin, f(None, None, Some("typeerror"), None, None)).await,
        [0]
    );
    assert_eq!(matching(&admin, f(Some("A"), Some("q2"), None, None, None)).await, [2]);
    assert_eq!(
        matching(&admin, f(None, None, None, Some(T0 + HOUR), None)).await,
        [1, 2, 3]
    );
    assert_eq!(matching(&admin, f(None, None, None, None, Some(T0 + HOUR))).await, [0]);
    assert_eq!(
        matching(&admin, f(None, None, None, Some(T0 + HOUR), Some(T0 + 2 * HOUR))).await,
        [1]
    );
    assert!(matching(&admin, f(Some("Nope"), None, None, None, None))
        .await
        .is_empty());
    let listed = admin.failed(&FailedFilter::default(), Page::new(0, 10)).await.unwrap();
    let first = &listed.items[0];
    assert_eq!(first.class.as_deref(), Some("A"));
    assert_eq!(first.queue.as_deref(), Some("q1"));
    assert_eq!(first.exception.as_deref(), Some("TypeError"));
    assert_eq!(first.failed_at_ms, Some(T0));
    assert_eq!(listed.items[3].failed_at_ms, Some(T0 + 2 * HOUR));
    assert_eq!(listed.items[4].failed_at_ms, None);
    for item in &listed.items {
        assert_eq!(&admin.failed_entry(&item.id).await.unwrap(), item);
    }
}

/// Paging applies to the matching entries: offset and limit count matches
/// only, and `total` is their number, whether the list is read in one
/// page or many.
pub async fn failed_pages_over_matching_entries(backend: Arc<dyn Backend>) {
    let entries: Vec<String> = (0..12)
        .map(|i| entry("q", if i % 2 == 0 { "A" } else { "B" }, i, "E", "e", T0 + i))
        .collect();
    push_all(&backend, &entries).await;
    for admin in [
        Admin::new(Arc::clone(&backend)),
        Admin::new(Arc::clone(&backend)).with_page_size(4),
    ] {
        let filter = FailedFilter {
            class: Some("A".into()),
            ..FailedFilter::default()
        };
        let page = admin.failed(&filter, Page::new(2, 3)).await.unwrap();
        assert_eq!((page.offset, page.total), (2, 6));
        let args: Vec<i64> = page.items.iter().map(args_of).collect();
        assert_eq!(args, [4, 6, 8]);
        let idx: Vec<u64> = page.items.iter().map(|i| i.id.index()).collect();
        assert_eq!(idx, [4, 6, 8]);
        let all = admin.failed(&FailedFilter::default(), Page::new(10, 5)).await.unwrap();
        assert_eq!((all.total, all.items.len()), (12, 2));
    }
}

/// One entry is retried (its job queued again with the original bytes, the
/// entry gone) or removed by id; an id whose entry moved is refused as
/// stale and changes nothing.
pub async fn retry_and_remove_one_by_id(backend: Arc<dyn Backend>) {
    let admin = Admin::new(Arc::clone(&backend));
    push_all(&backend, &sample()).await;
    let listed = admin
        .failed(&FailedFilter::default(), Page::default())
        .await
        .unwrap()
        .items;
    admin.retry_failed(&listed[1].id).await.unwrap();
    assert_eq!(backend.queue_range("q2", 0, -1).await.unwrap(), [job("q2", "B", 1)]);
    assert_eq!(backend.failed_count().await.unwrap(), 4);
    // Entries after it moved up: their old ids are stale.
    let stale = admin.retry_failed(&listed[2].id).await;
    assert!(matches!(stale, Err(Error::StaleFailedEntry { .. })), "{stale:?}");
    let stale = admin.remove_failed(&listed[3].id).await;
    assert!(matches!(stale, Err(Error::StaleFailedEntry { .. })), "{stale:?}");
    assert!(admin.failed_entry(&listed[3].id).await.is_err());
    admin.remove_failed(&listed[0].id).await.unwrap();
    assert_eq!(backend.failed_count().await.unwrap(), 3);
    assert_eq!(backend.queue_len("q2").await.unwrap(), 1);
}

/// A selection is acted on highest position first, so that acting on one
/// entry never makes another id stale; ids that moved count as stale, and
/// a retry of an entry whose payload does not decode counts as failed.
pub async fn selection_actions_count_done_stale_and_failed(backend: Arc<dyn Backend>) {
    let admin = Admin::new(Arc::clone(&backend));
    let mut entries = sample();
    entries.push(encode_entry("w", "q1", "not json", &Failure::new("E", "e"), T0));
    push_all(&backend, &entries).await;
    let ids: Vec<_> = admin
        .failed(&FailedFilter::default(), Page::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|i| i.id)
        .collect();
    // Someone else removes entry 1: the ids of 2.. are stale now.
    admin.remove_failed(&ids[1]).await.unwrap();
    let out = admin.retry_failed_many(&[ids[0], ids[3]]).await.unwrap();
    assert_eq!((out.done, out.stale, out.failed), (1, 1, 0));
    assert_eq!(backend.queue_range("q1", 0, -1).await.unwrap(), [job("q1", "A", 0)]);
    let fresh: Vec<_> = admin
        .failed(&FailedFilter::default(), Page::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(fresh.len(), 4);
    // Lowest first in the call: still all acted on.
    let out = admin.retry_failed_many(&[fresh[0], fresh[3]]).await.unwrap();
    assert_eq!((out.done, out.stale, out.failed), (1, 0, 1));
    let third: Vec<_> = admin
        .failed(&FailedFilter::default(), Page::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(third.len(), 3);
    // fresh[1] named the entry now at position 0: stale.
    let out = admin.remove_failed_many(&[third[0], fresh[1], third[2]]).await.unwrap();
    assert_eq!((out.done, out.stale, out.failed), (2, 1, 0));
    let left: Vec<String> = backend.failed_range(0, -1).await.unwrap();
    assert_eq!(left, [entries[4].clone()]);
}

/// A bulk removal by filter walks the list from the tail in pages: every
/// matching entry goes, the others stay in order, and progress is
/// reported after each page up to the whole list.
pub async fn bulk_remove_by_filter_walks_pages_from_the_tail(backend: Arc<dyn Backend>) {
    let admin = Admin::new(Arc::clone(&backend)).with_page_size(4);
    let entries: Vec<String> = (0..25)
        .map(|i| entry("q", if i % 2 == 0 { "A" } else { "B" }, i, "E", "e", T0))
        .collect();
    push_all(&backend, &entries).await;
    let reports = Mutex::new(Vec::<BulkProgress>::new());
    let filter = FailedFilter {
        class: Some("A".into()),
        ..FailedFilter::default()
    };
    let out = admin
        .remove_failed_matching(&filter, &|p| reports.lock().unwrap().push(p))
        .await
        .unwrap();
    assert_eq!((out.done, out.stale, out.failed), (13, 0, 0));
    let kept: Vec<String> = entries.iter().skip(1).step_by(2).cloned().collect();
    assert_eq!(backend.failed_range(0, -1).await.unwrap(), kept);
    let reports = reports.into_inner().unwrap();
    assert_eq!(reports.len(), 7, "one report per page of 4: {reports:?}");
    assert!(reports.windows(2).all(|w| w[0].scanned < w[1].scanned));
    let last = reports.last().unwrap();
    assert_eq!((last.scanned, last.total, last.done), (25, 25, 13));
}

/// A bulk retry by filter queues each matching job again and removes its
/// entry; a matching entry whose payload does not decode is counted as
/// failed and stays.
pub async fn bulk_retry_by_filter_requeues_and_counts_undecodable(backend: Arc<dyn Backend>) {
    let admin = Admin::new(Arc::clone(&backend)).with_page_size(2);
    let mut entries = sample();
    entries.push(encode_entry("w", "q1", "not json", &Failure::new("E", "e"), T0));
    push_all(&backend, &entries).await;
    let filter = FailedFilter {
        queue: Some("q1".into()),
        ..FailedFilter::default()
    };
    let out = admin.retry_failed_matching(&filter, &|_| {}).await.unwrap();
    assert_eq!((out.done, out.stale, out.failed), (3, 0, 1));
    // Walked from the tail: the jobs are queued newest entry first.
    assert_eq!(
        backend.queue_range("q1", 0, -1).await.unwrap(),
        [job("q1", "C", 4), job("q1", "C", 3), job("q1", "A", 0)]
    );
    assert_eq!(admin.count_failed_matching(&filter).await.unwrap(), 1);
    assert_eq!(backend.failed_count().await.unwrap(), 3);
}

/// Entries appended while a bulk action runs never make it skip an entry
/// that was there when it started, and are themselves left alone.
pub async fn bulk_by_filter_with_concurrent_tail_appends(backend: Arc<dyn Backend>) {
    let admin = Admin::new(Arc::clone(&backend)).with_page_size(5);
    let entries: Vec<String> = (0..30).map(|i| entry("q", "A", i, "E", "e", T0)).collect();
    push_all(&backend, &entries).await;
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(0));
    let writer = {
        let (backend, stop, appended) = (Arc::clone(&backend), Arc::clone(&stop), Arc::clone(&appended));
        tokio::spawn(async move {
            let mut i = 1000;
            while !stop.load(Ordering::SeqCst) {
                backend.push_failed(&entry("q", "A", i, "E", "late", T0)).await.unwrap();
                appended.fetch_add(1, Ordering::SeqCst);
                i += 1;
                sleep_ms(2).await;
            }
        })
    };
    // Let the writer start before the walk.
    while appended.load(Ordering::SeqCst) == 0 {
        sleep_ms(1).await;
    }
    let filter = FailedFilter {
        error: Some("E".into()),
        ..FailedFilter::default()
    };
    let out = admin.remove_failed_matching(&filter, &|_| {}).await.unwrap();
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let left = backend.failed_range(0, -1).await.unwrap();
    assert!(
        left.iter().all(|e| !entries.contains(e)),
        "an entry present at the start was skipped"
    );
    // The walk covers what was there when it started: the 30 and any
    // entries the writer had appended by then.
    assert_eq!((out.stale, out.failed), (0, 0));
    assert!(out.done >= 30, "{out:?}");
    assert_eq!(out.done + left.len() as u64, 30 + appended.load(Ordering::SeqCst));
}

/// A list longer than the default page is walked whole.
pub async fn bulk_by_filter_covers_a_list_longer_than_a_page(backend: Arc<dyn Backend>) {
    let admin = Admin::new(Arc::clone(&backend));
    let n = FAILED_PAGE + 20;
    for i in 0..n {
        let class = if i % 3 == 0 { "A" } else { "B" };
        backend
            .push_failed(&entry("q", class, i as i64, "E", "e", T0))
            .await
            .unwrap();
    }
    let filter = FailedFilter {
        class: Some("A".into()),
        ..FailedFilter::default()
    };
    let want = n.div_ceil(3);
    assert_eq!(admin.count_failed_matching(&filter).await.unwrap(), want);
    let pages = AtomicU64::new(0);
    let out = admin
        .remove_failed_matching(&filter, &|_| {
            pages.fetch_add(1, Ordering::SeqCst);
        })
        .await
        .unwrap();
    assert_eq!(out.done, want);
    assert_eq!(pages.load(Ordering::SeqCst), 2);
    assert_eq!(backend.failed_count().await.unwrap(), n - want);
    assert_eq!(admin.count_failed_matching(&filter).await.unwrap(), 0);
}
