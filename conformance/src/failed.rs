//! [`resq_core::FailedStore`]: the failed list, removal by exact bytes, and
//! atomic retry onto a queue.

use crate::fixtures::*;

fn entry(n: i64) -> String {
    let payload = job("q", "boom", n);
    resq_core::failed::encode_entry("h:1", "q", &payload, &Failure::new("Error", format!("e{n}")), AT_MS)
}

/// `push_failed` appends entries byte for byte, `failed_count` counts them,
/// and `failed_range` is `LRANGE` over them (inclusive, negative indexes).
pub async fn push_count_range(backend: Arc<dyn Backend>) {
    assert_eq!(backend.failed_count().await.unwrap(), 0);
    assert_eq!(all_failed(&*backend).await, Vec::<String>::new());
    let odd = "{ \"worker\" : \"w\", \"payload\": {\"args\":[1.0]}, \"x\":\"\\u00e9\" }".to_owned();
    let entries = vec![entry(1), entry(2), odd, entry(3)];
    for e in &entries {
        backend.push_failed(e).await.unwrap();
    }
    assert_eq!(backend.failed_count().await.unwrap(), 4);
    assert_eq!(all_failed(&*backend).await, entries);
    assert_eq!(backend.failed_range(1, 2).await.unwrap(), entries[1..=2].to_vec());
    assert_eq!(backend.failed_range(-2, -1).await.unwrap(), entries[2..].to_vec());
    assert_eq!(backend.failed_range(-100, 0).await.unwrap(), entries[..1].to_vec());
    assert_eq!(backend.failed_range(2, 100).await.unwrap(), entries[2..].to_vec());
    assert_eq!(backend.failed_range(4, 10).await.unwrap(), Vec::<String>::new());
    assert_eq!(backend.failed_range(2, 1).await.unwrap(), Vec::<String>::new());
    assert_eq!(backend.failed_range(i64::MIN, i64::MAX).await.unwrap(), entries);
    assert_eq!(
        backend.failed_range(i64::MAX, i64::MAX).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        backend.failed_range(i64::MIN, i64::MIN).await.unwrap(),
        Vec::<String>::new()
    );
}

/// `remove_failed` removes only the first entry equal byte for byte and
/// returns 1, or 0 when none matches; duplicates lose one copy per call.
pub async fn remove_failed_by_exact_bytes_first_only(backend: Arc<dyn Backend>) {
    let (a, b) = (entry(1), entry(2));
    let a_reformatted = a.replace(",\"queue\"", ", \"queue\"");
    assert_ne!(a, a_reformatted);
    for e in [&a, &b, &a] {
        backend.push_failed(e).await.unwrap();
    }
    assert_eq!(backend.remove_failed(&a_reformatted).await.unwrap(), 0);
    assert_eq!(backend.remove_failed(&entry(9)).await.unwrap(), 0);
    assert_eq!(backend.failed_count().await.unwrap(), 3);
    assert_eq!(backend.remove_failed(&a).await.unwrap(), 1);
    assert_eq!(all_failed(&*backend).await, vec![b.clone(), a.clone()]);
    assert_eq!(backend.remove_failed(&a).await.unwrap(), 1);
    assert_eq!(all_failed(&*backend).await, vec![b.clone()]);
    assert_eq!(backend.remove_failed(&a).await.unwrap(), 0);
    assert_eq!(backend.remove_failed(&b).await.unwrap(), 1);
    assert_eq!(backend.failed_count().await.unwrap(), 0);
}

/// `retry_failed` removes the first matching entry and pushes the payload to
/// the tail of the queue (registering the queue name) in one step; the other
/// entries keep their order.
pub async fn retry_failed_moves_payload_to_queue_atomically(backend: Arc<dyn Backend>) {
    let (a, b, c) = (entry(1), entry(2), entry(3));
    for e in [&a, &b, &c, &b] {
        backend.push_failed(e).await.unwrap();
    }
    let existing = job("retryq", "old", 0);
    backend.push("retryq", &existing).await.unwrap();
    let payload = r#"{"class":"boom", "queue":"retryq","args":[12345678901234567890]}"#;
    assert!(backend.retry_failed(&b, "retryq", payload).await.unwrap());
    assert_eq!(all_failed(&*backend).await, vec![a.clone(), c.clone(), b.clone()]);
    assert_eq!(all(&*backend, "retryq").await, vec![existing, payload.to_owned()]);
    // A queue that did not exist yet is created and listed.
    assert!(backend.retry_failed(&a, "fresh", payload).await.unwrap());
    assert_eq!(all(&*backend, "fresh").await, vec![payload.to_owned()]);
    assert_eq!(backend.queues().await.unwrap(), names(&["fresh", "retryq"]));
    assert_eq!(all_failed(&*backend).await, vec![c, b]);
    // Retrying does not count anything.
    assert_eq!(all_stats(&*backend).await, Vec::new());
}

/// `retry_failed` with an entry that is not in the list returns false and
/// changes nothing: no job queued, no queue name, no entry removed.
pub async fn retry_failed_on_missing_entry_changes_nothing(backend: Arc<dyn Backend>) {
    let a = entry(1);
    backend.push_failed(&a).await.unwrap();
    let modified = a.replace("e1", "e1-modified");
    assert!(!backend
        .retry_failed(&modified, "retryq", &job("retryq", "x", 1))
        .await
        .unwrap());
    assert_eq!(backend.queue_len("retryq").await.unwrap(), 0);
    assert_eq!(backend.queues().await.unwrap(), Vec::<String>::new());
    assert_eq!(all_failed(&*backend).await, vec![a]);
}

/// Eight concurrent retries of one entry (present once) requeue it exactly
/// once: one call returns true, the queue holds one copy.
pub async fn concurrent_retries_of_one_entry_requeue_once(backend: Arc<dyn Backend>) {
    const TASKS: usize = 8;
    let (a, keep) = (entry(1), entry(2));
    backend.push_failed(&a).await.unwrap();
    backend.push_failed(&keep).await.unwrap();
    let payload = job("retryq", "boom", 1);
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (backend, barrier, a, payload) = (Arc::clone(&backend), Arc::clone(&barrier), a.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            backend.retry_failed(&a, "retryq", &payload).await.unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
    assert_eq!(all(&*backend, "retryq").await, vec![payload]);
    assert_eq!(all_failed(&*backend).await, vec![keep]);
}

/// The stale-entry error for an action by `id`.
fn is_stale(result: resq_core::Result<()>) -> bool {
    matches!(result, Err(resq_core::Error::StaleFailedEntry { .. }))
}

/// `failed_with_ids` pages the list with a [`resq_core::FailedId`] per entry:
/// the same id for the same entry from any page, distinct ids for equal
/// bytes at different positions, and a text form that round-trips;
/// malformed text is refused with [`resq_core::Error::MalformedFailedId`].
pub async fn failed_ids_round_trip_through_text(backend: Arc<dyn Backend>) {
    let q = resq_core::Queue::new(Arc::clone(&backend));
    let (a, b) = (entry(1), entry(2));
    for e in [&a, &b, &a] {
        backend.push_failed(e).await.unwrap();
    }
    let page = q.failed_with_ids(0, 10).await.unwrap();
    assert_eq!(page.len(), 3);
    let raws: Vec<&str> = page.iter().map(|(_, f)| f.raw.as_str()).collect();
    assert_eq!(raws, vec![a.as_str(), b.as_str(), a.as_str()]);
    for (i, (id, f)) in page.iter().enumerate() {
        assert_eq!(id.index(), i as u64);
        assert!(id.matches(&f.raw));
        let text = id.to_string();
        assert_eq!(text.parse::<resq_core::FailedId>().unwrap(), *id, "{text}");
    }
    assert_ne!(page[0].0, page[2].0, "equal bytes at two positions have two ids");
    assert_ne!(page[0].0.to_string(), page[1].0.to_string());
    let middle = q.failed_with_ids(1, 1).await.unwrap();
    assert_eq!(middle, vec![page[1].clone()]);
    assert_eq!(q.failed_with_ids(3, 5).await.unwrap(), Vec::new());
    assert_eq!(q.failed_with_ids(0, 0).await.unwrap(), Vec::new());
    for bad in ["", "1", "x-00", "1-abc", &format!("{}x", page[0].0)] {
        assert!(
            matches!(
                bad.parse::<resq_core::FailedId>(),
                Err(resq_core::Error::MalformedFailedId { .. })
            ),
            "{bad}"
        );
    }
}

/// `remove_failed_by_id` removes exactly the entry named and no other; the
/// same id used again names whatever moved into that position, so it is
/// refused and nothing changes.
pub async fn remove_failed_by_id_removes_exactly_that_entry(backend: Arc<dyn Backend>) {
    let q = resq_core::Queue::new(Arc::clone(&backend));
    let (a, b, c) = (entry(1), entry(2), entry(3));
    for e in [&a, &b, &c] {
        backend.push_failed(e).await.unwrap();
    }
    let ids: Vec<_> = q
        .failed_with_ids(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    q.remove_failed_by_id(&ids[1]).await.unwrap();
    assert_eq!(all_failed(&*backend).await, vec![a.clone(), c.clone()]);
    assert!(is_stale(q.remove_failed_by_id(&ids[1]).await));
    assert!(is_stale(q.remove_failed_by_id(&ids[2]).await), "past the end");
    assert_eq!(all_failed(&*backend).await, vec![a.clone(), c.clone()]);
    // The backend call itself refuses other bytes or an empty position.
    assert!(!backend.remove_failed_at(0, &c).await.unwrap());
    assert!(!backend.remove_failed_at(2, &c).await.unwrap());
    assert!(!backend.remove_failed_at(u64::MAX, &c).await.unwrap());
    assert_eq!(all_failed(&*backend).await, vec![a.clone(), c.clone()]);
    q.remove_failed_by_id(&ids[0]).await.unwrap();
    assert_eq!(all_failed(&*backend).await, vec![c]);
}

/// After the list shifts (an entry before it removed) or the entry at that
/// position is replaced, removal and retry by the old id are refused with
/// [`resq_core::Error::StaleFailedEntry`] and change nothing: no entry
/// removed, no job queued, no queue name added.
pub async fn failed_id_actions_refused_when_the_entry_moved(backend: Arc<dyn Backend>) {
    let q = resq_core::Queue::new(Arc::clone(&backend));
    let (a, b, c) = (entry(1), entry(2), entry(3));
    for e in [&a, &b, &c] {
        backend.push_failed(e).await.unwrap();
    }
    let ids: Vec<_> = q
        .failed_with_ids(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    // Shift: the head goes, so b sits at 0 and c at 1.
    assert_eq!(backend.remove_failed(&a).await.unwrap(), 1);
    for id in &ids[1..] {
        assert!(is_stale(q.remove_failed_by_id(id).await));
        assert!(is_stale(q.retry_failed_by_id(id).await));
    }
    assert_eq!(all_failed(&*backend).await, vec![b.clone(), c.clone()]);
    // Replace: c's position (1) now holds a new entry d.
    let ids: Vec<_> = q
        .failed_with_ids(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let d = entry(4);
    assert_eq!(backend.remove_failed(&c).await.unwrap(), 1);
    backend.push_failed(&d).await.unwrap();
    assert!(is_stale(q.remove_failed_by_id(&ids[1]).await));
    assert!(is_stale(q.retry_failed_by_id(&ids[1]).await));
    // The backend's own re-check refuses the old bytes at that position.
    assert!(!backend.remove_failed_at(1, &c).await.unwrap());
    assert!(!backend.retry_failed_at(1, &c, "q", &job("q", "boom", 3)).await.unwrap());
    assert_eq!(all_failed(&*backend).await, vec![b, d]);
    assert_eq!(backend.queue_len("q").await.unwrap(), 0);
    assert_eq!(backend.queues().await.unwrap(), Vec::<String>::new());
}

/// Of two identical entries, removing one by id leaves exactly one, and
/// the one at the other position: the list keeps its order.
pub async fn remove_one_of_two_identical_entries_by_id(backend: Arc<dyn Backend>) {
    let q = resq_core::Queue::new(Arc::clone(&backend));
    let (a, b) = (entry(1), entry(2));
    for e in [&a, &b, &a] {
        backend.push_failed(e).await.unwrap();
    }
    let ids: Vec<_> = q
        .failed_with_ids(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    q.remove_failed_by_id(&ids[2]).await.unwrap();
    assert_eq!(all_failed(&*backend).await, vec![a.clone(), b.clone()]);
    assert!(is_stale(q.remove_failed_by_id(&ids[2]).await));
    for e in [&b, &a] {
        backend.push_failed(e).await.unwrap();
    }
    // [a, b, b, a]: the second b goes, by the backend call directly.
    assert!(backend.remove_failed_at(2, &b).await.unwrap());
    assert_eq!(all_failed(&*backend).await, vec![a.clone(), b, a]);
}

/// `retry_failed_by_id` puts the payload's original bytes on the entry's
/// queue and removes exactly that entry (of two identical ones, the named
/// one) in one step; the id then is stale and a second retry queues nothing.
pub async fn retry_failed_by_id_requeues_original_bytes_once(backend: Arc<dyn Backend>) {
    let q = resq_core::Queue::new(Arc::clone(&backend));
    let payload = r#"{"class":"boom", "queue":"retryq","args":[12345678901234567890,1.0,"\u00e9"]}"#;
    let e = resq_core::failed::encode_entry("h:1", "retryq", payload, &Failure::new("Error", "x"), AT_MS);
    let other = entry(1);
    for x in [&e, &other, &e] {
        backend.push_failed(x).await.unwrap();
    }
    let existing = job("retryq", "old", 0);
    backend.push("retryq", &existing).await.unwrap();
    let ids: Vec<_> = q
        .failed_with_ids(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    q.retry_failed_by_id(&ids[2]).await.unwrap();
    assert_eq!(
        all(&*backend, "retryq").await,
        vec![existing.clone(), payload.to_owned()]
    );
    assert_eq!(all_failed(&*backend).await, vec![e.clone(), other.clone()]);
    assert!(is_stale(q.retry_failed_by_id(&ids[2]).await));
    assert_eq!(all(&*backend, "retryq").await, vec![existing, payload.to_owned()]);
    q.retry_failed_by_id(&ids[0]).await.unwrap();
    assert_eq!(all_failed(&*backend).await, vec![other]);
    assert_eq!(backend.queue_len("retryq").await.unwrap(), 3);
    assert_eq!(backend.queues().await.unwrap(), names(&["retryq"]));
    assert_eq!(all_stats(&*backend).await, Vec::new());
}
