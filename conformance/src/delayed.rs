//! [`resq_core::DelayedStore`]: buckets of delayed payloads keyed by Unix
//! second, duplicate suppression per bucket, the payload → buckets index,
//! and atomic promotion onto queues (or to the failed list).

use crate::fixtures::*;
use std::collections::BTreeSet;

/// `schedule` stores items per bucket: `delayed_timestamps` lists non-empty
/// buckets ascending, `delayed_at` a bucket's items in insertion order,
/// `timestamps_of` the buckets holding a payload. Delayed jobs are not on
/// any queue and do not register queue names.
pub async fn schedule_and_inspect(backend: Arc<dyn Backend>) {
    let (a, b, c) = (job("q", "A", 1), job("q", "B", 1), job("r", "C", 1));
    assert!(backend.schedule(200, &a).await.unwrap());
    assert!(backend.schedule(100, &b).await.unwrap());
    assert!(backend.schedule(200, &c).await.unwrap());
    assert!(backend.schedule(300, &a).await.unwrap());
    assert_eq!(backend.delayed_timestamps().await.unwrap(), vec![100, 200, 300]);
    assert_eq!(backend.delayed_at(200).await.unwrap(), vec![a.clone(), c.clone()]);
    assert_eq!(backend.delayed_at(100).await.unwrap(), vec![b.clone()]);
    assert_eq!(backend.delayed_at(300).await.unwrap(), vec![a.clone()]);
    assert_eq!(backend.delayed_at(999).await.unwrap(), Vec::<String>::new());
    assert_eq!(backend.timestamps_of(&a).await.unwrap(), vec![200, 300]);
    assert_eq!(backend.timestamps_of(&b).await.unwrap(), vec![100]);
    assert_eq!(
        backend.timestamps_of(&job("q", "A", 2)).await.unwrap(),
        Vec::<i64>::new()
    );
    assert_eq!(backend.queue_len("q").await.unwrap(), 0);
    assert_eq!(backend.queues().await.unwrap(), Vec::<String>::new());
}

/// Scheduling the identical bytes into the same bucket again returns false
/// and stores nothing; a byte-different payload for the same job is not a
/// duplicate.
pub async fn schedule_duplicate_same_bucket_rejected(backend: Arc<dyn Backend>) {
    let a = job("q", "A", 1);
    let a_other_bytes = r#"{"class":"A","args":[1],"queue":"q"}"#;
    assert!(backend.schedule(100, &a).await.unwrap());
    assert!(!backend.schedule(100, &a).await.unwrap());
    assert!(!backend.schedule(100, &a).await.unwrap());
    assert_eq!(backend.delayed_at(100).await.unwrap(), vec![a.clone()]);
    assert_eq!(backend.timestamps_of(&a).await.unwrap(), vec![100]);
    assert!(backend.schedule(100, a_other_bytes).await.unwrap());
    assert_eq!(
        backend.delayed_at(100).await.unwrap(),
        vec![a.clone(), a_other_bytes.to_owned()]
    );
    assert_eq!(backend.delayed_timestamps().await.unwrap(), vec![100]);
}

/// The same payload may sit in several buckets; each schedule succeeds.
pub async fn same_payload_different_buckets_allowed(backend: Arc<dyn Backend>) {
    let a = job("q", "A", 1);
    for t in [30, 10, 20] {
        assert!(backend.schedule(t, &a).await.unwrap(), "bucket {t}");
    }
    assert_eq!(backend.timestamps_of(&a).await.unwrap(), vec![10, 20, 30]);
    assert_eq!(backend.delayed_timestamps().await.unwrap(), vec![10, 20, 30]);
    for t in [10, 20, 30] {
        assert_eq!(backend.delayed_at(t).await.unwrap(), vec![a.clone()]);
    }
}

/// `due_timestamps(up_to, limit)` returns at most `limit` non-empty buckets
/// with `timestamp <= up_to`, ascending.
pub async fn due_timestamps_respects_up_to_and_limit(backend: Arc<dyn Backend>) {
    for (i, t) in [40, 10, 30, 20].into_iter().enumerate() {
        assert!(backend.schedule(t, &job("q", "d", i as i64)).await.unwrap());
    }
    assert!(backend.schedule(20, &job("q", "d", 99)).await.unwrap());
    assert_eq!(backend.due_timestamps(25, 10).await.unwrap(), vec![10, 20]);
    assert_eq!(backend.due_timestamps(20, 10).await.unwrap(), vec![10, 20]);
    assert_eq!(backend.due_timestamps(40, 2).await.unwrap(), vec![10, 20]);
    assert_eq!(backend.due_timestamps(40, 3).await.unwrap(), vec![10, 20, 30]);
    assert_eq!(backend.due_timestamps(1000, 100).await.unwrap(), vec![10, 20, 30, 40]);
    assert_eq!(backend.due_timestamps(9, 10).await.unwrap(), Vec::<i64>::new());
    assert_eq!(backend.due_timestamps(10, 1).await.unwrap(), vec![10]);
}

/// `promote_due` moves only items in buckets `<= up_to`, oldest bucket
/// first and insertion order within a bucket, each to the tail of the queue
/// named in the item, bytes unchanged, registering the queue name.
pub async fn promote_due_moves_only_due_items_in_order(backend: Arc<dyn Backend>) {
    let x = job("dq", "X", 0);
    let a = r#"{"class":"A",  "queue":"dq", "args":[1.0, 12345678901234567890]}"#.to_owned();
    let b = r#"{"class":"B","args":[],"queue":"dq2"}"#.to_owned();
    let (c, d) = (job("dq", "C", 3), job("dq", "D", 4));
    backend.push("dq", &x).await.unwrap();
    assert!(backend.schedule(11, &c).await.unwrap());
    assert!(backend.schedule(10, &a).await.unwrap());
    assert!(backend.schedule(20, &d).await.unwrap());
    assert!(backend.schedule(10, &b).await.unwrap());
    let moved = backend.promote_due(15, 100).await.unwrap();
    let m = |timestamp: i64, queue: &str, payload: &str| Promotion::Moved {
        timestamp,
        queue: queue.into(),
        payload: payload.into(),
    };
    // Oldest bucket first; within a bucket in insertion order, shard by
    // shard where queues live on shards (see `Backend::queue_shard`).
    let mut want = vec![m(10, "dq", &a), m(10, "dq2", &b), m(11, "dq", &c)];
    want.sort_by_key(|p| match p {
        Promotion::Moved { timestamp, queue, .. } => (*timestamp, backend.queue_shard(queue)),
        Promotion::Failed { timestamp, .. } => (*timestamp, 0),
    });
    assert_eq!(moved, want);
    assert_eq!(all(&*backend, "dq").await, vec![x, a, c]);
    assert_eq!(all(&*backend, "dq2").await, vec![b]);
    assert_eq!(backend.queues().await.unwrap(), names(&["dq", "dq2"]));
    assert_eq!(backend.delayed_timestamps().await.unwrap(), vec![20]);
    assert_eq!(backend.delayed_at(20).await.unwrap(), vec![d]);
    assert_eq!(backend.promote_due(19, 100).await.unwrap(), Vec::new());
    assert_eq!(backend.failed_count().await.unwrap(), 0);
}

/// `promote_due` moves at most `limit` items per call, continuing where the
/// previous call stopped, and returns nothing once no item is due.
pub async fn promote_due_respects_limit(backend: Arc<dyn Backend>) {
    let p: Vec<String> = (0..5).map(|i| job("q", "L", i)).collect();
    for (t, item) in [(10, &p[0]), (10, &p[1]), (10, &p[2]), (11, &p[3]), (12, &p[4])] {
        assert!(backend.schedule(t, item).await.unwrap());
    }
    let moved = |items: Vec<Promotion>| -> Vec<(i64, String)> {
        items
            .into_iter()
            .map(|m| match m {
                Promotion::Moved { timestamp, payload, .. } => (timestamp, payload),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    };
    assert_eq!(
        moved(backend.promote_due(100, 2).await.unwrap()),
        vec![(10, p[0].clone()), (10, p[1].clone())]
    );
    assert_eq!(backend.delayed_at(10).await.unwrap(), vec![p[2].clone()]);
    assert_eq!(backend.delayed_timestamps().await.unwrap(), vec![10, 11, 12]);
    assert_eq!(
        moved(backend.promote_due(100, 2).await.unwrap()),
        vec![(10, p[2].clone()), (11, p[3].clone())]
    );
    assert_eq!(backend.delayed_timestamps().await.unwrap(), vec![12]);
    assert_eq!(
        moved(backend.promote_due(100, 2).await.unwrap()),
        vec![(12, p[4].clone())]
    );
    assert_eq!(backend.promote_due(100, 2).await.unwrap(), Vec::new());
    assert_eq!(all(&*backend, "q").await, p);
}

/// Promotion also removes the item from its `timestamps_of` index and drops
/// emptied buckets (from `delayed_timestamps` and `due_timestamps`), so the
/// same payload can be scheduled into that bucket again; a partly promoted
/// bucket keeps its remaining items and their index.
pub async fn promote_removes_index_and_empty_buckets(backend: Arc<dyn Backend>) {
    let (a, b) = (job("q", "A", 1), job("q", "B", 1));
    assert!(backend.schedule(10, &a).await.unwrap());
    assert!(backend.schedule(10, &b).await.unwrap());
    assert!(backend.schedule(12, &a).await.unwrap());
    assert_eq!(backend.promote_due(10, 1).await.unwrap().len(), 1);
    assert_eq!(backend.timestamps_of(&a).await.unwrap(), vec![12]);
    assert_eq!(backend.timestamps_of(&b).await.unwrap(), vec![10]);
    assert_eq!(backend.delayed_at(10).await.unwrap(), vec![b.clone()]);
    assert!(
        backend.schedule(10, &a).await.unwrap(),
        "index entry not removed on promotion"
    );
    assert_eq!(backend.delayed_at(10).await.unwrap(), vec![b.clone(), a.clone()]);
    let moved = backend.promote_due(11, 100).await.unwrap();
    assert_eq!(moved.len(), 2);
    assert_eq!(backend.delayed_timestamps().await.unwrap(), vec![12]);
    assert_eq!(backend.due_timestamps(11, 10).await.unwrap(), Vec::<i64>::new());
    assert_eq!(backend.due_timestamps(12, 10).await.unwrap(), vec![12]);
    assert_eq!(backend.delayed_at(10).await.unwrap(), Vec::<String>::new());
    assert_eq!(backend.timestamps_of(&b).await.unwrap(), Vec::<i64>::new());
    assert_eq!(backend.timestamps_of(&a).await.unwrap(), vec![12]);
    assert_eq!(all(&*backend, "q").await, vec![a.clone(), b, a]);
}

/// `remove_delayed` removes every copy of the exact bytes from every bucket,
/// returns those buckets ascending, cleans the index and empty buckets, and
/// leaves other items alone.
pub async fn remove_delayed_returns_buckets_and_cleans(backend: Arc<dyn Backend>) {
    let (a, b) = (job("q", "A", 1), job("q", "B", 1));
    let a_other_bytes = r#"{"class":"A","args":[1],"queue":"q"}"#;
    for t in [30, 10, 20] {
        assert!(backend.schedule(t, &a).await.unwrap());
    }
    assert!(backend.schedule(10, &b).await.unwrap());
    assert!(backend.schedule(20, a_other_bytes).await.unwrap());
    assert_eq!(backend.remove_delayed(&a).await.unwrap(), vec![10, 20, 30]);
    assert_eq!(backend.timestamps_of(&a).await.unwrap(), Vec::<i64>::new());
    assert_eq!(backend.delayed_timestamps().await.unwrap(), vec![10, 20]);
    assert_eq!(backend.delayed_at(10).await.unwrap(), vec![b.clone()]);
    assert_eq!(backend.delayed_at(20).await.unwrap(), vec![a_other_bytes.to_owned()]);
    assert_eq!(backend.delayed_at(30).await.unwrap(), Vec::<String>::new());
    assert_eq!(backend.due_timestamps(100, 10).await.unwrap(), vec![10, 20]);
    assert_eq!(backend.remove_delayed(&a).await.unwrap(), Vec::<i64>::new());
    assert_eq!(
        backend.remove_delayed(&job("q", "none", 0)).await.unwrap(),
        Vec::<i64>::new()
    );
    assert!(backend.schedule(30, &a).await.unwrap());
    assert_eq!(backend.timestamps_of(&a).await.unwrap(), vec![30]);
    assert_eq!(backend.queue_len("q").await.unwrap(), 0);
}

/// Items that do not decode as a job (not JSON, not an object, no `class`)
/// or name no queue (missing or blank `queue`) are not lost: `promote_due`
/// returns `Promotion::Failed` with a reason, appends exactly
/// `promotion_failure_entry(payload, reason, now)` to the failed list
/// (payload bytes kept, reason in the error), and still promotes the rest.
pub async fn undecodable_delayed_item_goes_to_failed_with_reason(backend: Arc<dyn Backend>) {
    let bad = [
        "not json",
        r#"{"class":"X","args":[]}"#,
        r#"{"queue":"good","args":[]}"#,
        r#"{"class":"X","queue":"  ","args":[]}"#,
        "[1,2]",
    ];
    let good = job("good", "G", 1);
    assert!(backend.schedule(10, bad[0]).await.unwrap());
    assert!(backend.schedule(10, bad[1]).await.unwrap());
    assert!(backend.schedule(10, &good).await.unwrap());
    for b in &bad[2..] {
        assert!(backend.schedule(11, b).await.unwrap());
    }
    let before_ms = resq_core::time::now_ms();
    let result = backend.promote_due(11, 100).await.unwrap();
    assert_eq!(result.len(), 6, "{result:?}");
    let mut reasons = Vec::new();
    let mut expected_order = [
        (10, bad[0]),
        (10, bad[1]),
        (10, good.as_str()),
        (11, bad[2]),
        (11, bad[3]),
        (11, bad[4]),
    ];
    // Within a bucket, shard by shard (see `Backend::queue_shard`).
    expected_order.sort_by_key(|(ts, item)| (*ts, crate::support::item_shard(&*backend, item)));
    for (got, (ts, payload)) in result.iter().zip(expected_order) {
        match got {
            Promotion::Failed {
                timestamp,
                payload: p,
                reason,
            } => {
                assert_ne!(payload, good, "the good item failed: {reason}");
                assert_eq!((*timestamp, p.as_str()), (ts, payload));
                assert!(!reason.trim().is_empty(), "empty reason for {payload}");
                reasons.push((payload, reason.clone()));
            }
            Promotion::Moved {
                timestamp,
                queue,
                payload: p,
            } => {
                assert_eq!(payload, good, "an undecodable item was moved to {queue:?}");
                assert_eq!((*timestamp, queue.as_str(), p.as_str()), (10, "good", good.as_str()));
            }
        }
    }
    let entries = all_failed(&*backend).await;
    assert_eq!(entries.len(), bad.len());
    // The failed list goes shard by shard too.
    reasons.sort_by_key(|(payload, _)| crate::support::item_shard(&*backend, payload));
    for (entry, (payload, reason)) in entries.iter().zip(&reasons) {
        assert_promotion_failure_entry(entry, payload, reason);
        let decoded = FailedJob::decode(entry).unwrap();
        let at = resq_core::time::parse_date(decoded.failed_at.as_deref().unwrap_or_default()).unwrap();
        let day = 86_400_000;
        assert!(
            (before_ms - day..before_ms + day).contains(&at),
            "failed_at {at} is not now"
        );
    }
    let not_json = FailedJob::decode(&entries[0]).unwrap();
    assert_eq!(not_json.payload.as_deref(), Some(r#""not json""#));
    let no_queue = FailedJob::decode(&entries[1]).unwrap();
    assert_eq!(no_queue.payload.as_deref(), Some(bad[1]));
    assert_eq!(all(&*backend, "good").await, vec![good]);
    assert_eq!(backend.delayed_timestamps().await.unwrap(), Vec::<i64>::new());
    for b in bad {
        assert_eq!(backend.timestamps_of(b).await.unwrap(), Vec::<i64>::new(), "{b}");
    }
    assert_eq!(backend.queues().await.unwrap(), names(&["good"]));
}

/// Sixteen concurrent `schedule` calls of the same payload into the same
/// second store exactly one item, and exactly one call returns true.
pub async fn concurrent_schedule_same_job_same_second_stores_one(backend: Arc<dyn Backend>) {
    const TASKS: usize = 16;
    let payload = job("q", "Once", 1);
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (backend, barrier, payload) = (Arc::clone(&backend), Arc::clone(&barrier), payload.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            backend.schedule(1_000, &payload).await.unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        if t.await.unwrap() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1, "{wins} concurrent schedules reported success");
    assert_eq!(backend.delayed_at(1_000).await.unwrap(), vec![payload.clone()]);
    assert_eq!(backend.timestamps_of(&payload).await.unwrap(), vec![1_000]);
}

/// Four schedulers promoting the same 200 items concurrently move each item
/// exactly once: every item ends on its queue once, none stays delayed.
pub async fn concurrent_promoters_move_each_item_exactly_once(backend: Arc<dyn Backend>) {
    const ITEMS: i64 = 200;
    const PROMOTERS: usize = 4;
    let items: Vec<String> = (0..ITEMS).map(|i| job("promoted", "P", i)).collect();
    for (i, item) in items.iter().enumerate() {
        assert!(backend.schedule(1_000 + (i as i64 % 10), item).await.unwrap());
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(PROMOTERS));
    let mut tasks = Vec::new();
    for _ in 0..PROMOTERS {
        let (backend, barrier) = (Arc::clone(&backend), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut moved = Vec::new();
            loop {
                let batch = backend.promote_due(5_000, 7).await.unwrap();
                if batch.is_empty() {
                    break moved;
                }
                assert!(batch.len() <= 7, "promote_due exceeded its limit: {}", batch.len());
                moved.extend(batch);
            }
        }));
    }
    let mut moved = Vec::new();
    for t in tasks {
        moved.extend(t.await.unwrap());
    }
    // Anything a racing call left behind is still due: promote it now.
    moved.extend(backend.promote_due(5_000, 1_000).await.unwrap());
    let mut seen = BTreeSet::new();
    for m in &moved {
        match m {
            Promotion::Moved { payload, queue, .. } => {
                assert_eq!(queue, "promoted");
                assert!(seen.insert(payload.clone()), "promoted twice: {payload}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(moved.len(), ITEMS as usize);
    let on_queue = all(&*backend, "promoted").await;
    assert_eq!(on_queue.len(), ITEMS as usize, "queue holds {} items", on_queue.len());
    let on_queue: BTreeSet<String> = on_queue.into_iter().collect();
    assert_eq!(on_queue, items.into_iter().collect::<BTreeSet<_>>());
    assert_eq!(backend.delayed_timestamps().await.unwrap(), Vec::<i64>::new());
    assert_eq!(backend.failed_count().await.unwrap(), 0);
}

/// `remove_delayed` racing `promote_due` over the same 100 items: each item
/// ends up either promoted (and on its queue) or removed, never both and
/// never neither.
pub async fn concurrent_remove_and_promote_never_both(backend: Arc<dyn Backend>) {
    const ITEMS: i64 = 100;
    let items: Vec<String> = (0..ITEMS).map(|i| job("raced", "R", i)).collect();
    for (i, item) in items.iter().enumerate() {
        assert!(backend.schedule(2_000 + (i as i64 % 5), item).await.unwrap());
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let promoter = {
        let (backend, barrier) = (Arc::clone(&backend), Arc::clone(&barrier));
        tokio::spawn(async move {
            barrier.wait().await;
            let mut moved = BTreeSet::new();
            loop {
                let batch = backend.promote_due(3_000, 3).await.unwrap();
                if batch.is_empty() {
                    break moved;
                }
                for m in batch {
                    match m {
                        Promotion::Moved { payload, .. } => assert!(moved.insert(payload), "promoted twice"),
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
        })
    };
    let remover = {
        let (backend, barrier, items) = (Arc::clone(&backend), Arc::clone(&barrier), items.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            let mut removed = BTreeSet::new();
            // Remove from the newest buckets down, to meet the promoter.
            for item in items.iter().rev() {
                let buckets = backend.remove_delayed(item).await.unwrap();
                assert!(buckets.len() <= 1, "{item} removed from {buckets:?}");
                if !buckets.is_empty() {
                    removed.insert(item.clone());
                }
            }
            removed
        })
    };
    let moved = promoter.await.unwrap();
    let removed = remover.await.unwrap();
    let both: Vec<&String> = moved.intersection(&removed).collect();
    assert!(both.is_empty(), "promoted and also removed: {both:?}");
    let on_queue: BTreeSet<String> = all(&*backend, "raced").await.into_iter().collect();
    assert_eq!(on_queue, moved, "the queue does not hold exactly the promoted items");
    let accounted: BTreeSet<String> = moved.union(&removed).cloned().collect();
    assert_eq!(accounted, items.into_iter().collect::<BTreeSet<_>>(), "items lost");
    assert_eq!(backend.delayed_timestamps().await.unwrap(), Vec::<i64>::new());
}

/// `remove_delayed_by_class` removes the class's items bound for the queue
/// (or naming none, as Ruby's), from every bucket, keeps the index and the
/// bucket list in step, and leaves other classes, other queues and
/// undecodable items.
pub async fn remove_delayed_by_class_removes_that_class_on_that_queue(backend: Arc<dyn Backend>) {
    let ours = [
        (10, job("q", "target", 1)),
        (10, r#"{"class":"target","args":[2]}"#.to_owned()),
        (11, r#"{"class":"target","args":[3],"queue":"q"}"#.to_owned()),
        (12, r#"{"class":"t\u0061rget","queue":"q","args":[]}"#.to_owned()),
        (13, job("q", "target", 1)),
    ];
    let theirs = [
        (10, job("q", "other", 1)),
        (11, job("q2", "target", 1)),
        (12, "target: not json".to_owned()),
        (14, r#"{"class":"other","queue":"q","args":["target"]}"#.to_owned()),
    ];
    for (ts, p) in ours.iter().chain(theirs.iter()) {
        assert!(backend.schedule(*ts, p).await.unwrap());
    }
    assert_eq!(backend.remove_delayed_by_class("q", "target").await.unwrap(), 5);
    assert_eq!(backend.delayed_timestamps().await.unwrap(), vec![10, 11, 12, 14]);
    assert_eq!(backend.delayed_at(10).await.unwrap(), vec![job("q", "other", 1)]);
    assert_eq!(backend.delayed_at(11).await.unwrap(), vec![job("q2", "target", 1)]);
    assert_eq!(
        backend.delayed_at(12).await.unwrap(),
        vec!["target: not json".to_owned()]
    );
    for (_, p) in &ours {
        assert!(backend.timestamps_of(p).await.unwrap().is_empty(), "{p} still indexed");
    }
    assert_eq!(backend.timestamps_of(&job("q2", "target", 1)).await.unwrap(), vec![11]);
    assert_eq!(backend.remove_delayed_by_class("q", "target").await.unwrap(), 0);
    assert_eq!(backend.remove_delayed_by_class("q", "").await.unwrap(), 0);
    // What stays is promoted as usual.
    let moved = backend.promote_due(20, 100).await.unwrap();
    assert_eq!(moved.len(), 4);
}

/// `remove_delayed_by_class` over more buckets and items than one page or
/// script call removes all of them.
pub async fn remove_delayed_by_class_pages_through_many_buckets(backend: Arc<dyn Backend>) {
    let n = i64::try_from(resq_core::backend::REMOVAL_PAGE).unwrap() + 150;
    for ts in 0..n {
        assert!(backend.schedule(1_000 + ts, &job("q", "gone", ts)).await.unwrap());
        assert!(backend.schedule(1_000 + ts, &job("q", "kept", ts)).await.unwrap());
    }
    let removed = backend.remove_delayed_by_class("q", "gone").await.unwrap();
    assert_eq!(removed, u64::try_from(n).unwrap());
    let stamps = backend.delayed_timestamps().await.unwrap();
    assert_eq!(stamps.len(), usize::try_from(n).unwrap());
    assert_eq!(backend.delayed_at(1_000).await.unwrap(), vec![job("q", "kept", 0)]);
    assert_eq!(
        backend.delayed_at(1_000 + n - 1).await.unwrap(),
        vec![job("q", "kept", n - 1)]
    );
}
