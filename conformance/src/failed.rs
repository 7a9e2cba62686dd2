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
