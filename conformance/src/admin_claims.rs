//! Claimed jobs carry their enqueue time (`Claimed::enqueued_at_ms`), on
//! every path that queues a job and every claim.

use crate::fixtures::{job, queued, sleep_ms, worker, RUN_AT};
use resq_core::backend::{Backend, Outcome};
use resq_core::failed::{encode_entry, Failure};
use resq_core::time::now_ms;
use std::sync::Arc;

/// Tolerance for the server's clock (PostgreSQL stamps rows itself).
const SKEW_MS: i64 = 1000;

fn within(at: Option<i64>, from: i64, to: i64) {
    let at = at.expect("the backend knows when resq queued the job");
    assert!(at >= from - SKEW_MS && at <= to + SKEW_MS, "{at} not in {from}..{to}");
}

/// Jobs queued by push, batch push, push to the head, enqueue-once, failed
/// retry, delayed "run now" and delayed promotion are all claimed with an
/// enqueue time taken when they were queued.
pub async fn claims_carry_the_enqueue_time_of_every_push_path(backend: Arc<dyn Backend>) {
    let w = worker("h:1+1", &["q"]);
    let qs = vec!["q".to_owned()];
    let claim = || {
        let (backend, w, qs) = (Arc::clone(&backend), w.clone(), qs.clone());
        async move { backend.claim(&w, &qs, RUN_AT).await.unwrap().expect("a job") }
    };
    let from = now_ms();
    backend.push("q", &job("q", "a", 1)).await.unwrap();
    backend.push_batch(&[queued("q", &job("q", "a", 2))]).await.unwrap();
    backend.push_front("q", &job("q", "a", 0)).await.unwrap();
    backend
        .push_once("q", &job("q", "a", 3), "once", "v", std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let entry = encode_entry("w", "q", &job("q", "a", 4), &Failure::new("E", "e"), from);
    backend.push_failed(&entry).await.unwrap();
    assert!(backend
        .retry_failed_at(0, &entry, "q", &job("q", "a", 4))
        .await
        .unwrap());
    backend.schedule(1, &job("q", "a", 5)).await.unwrap();
    assert!(backend.promote_delayed(1, &job("q", "a", 5), "q").await.unwrap());
    backend.schedule(2, &job("q", "a", 6)).await.unwrap();
    assert_eq!(backend.promote_due(2, 10).await.unwrap().len(), 1);
    let to = now_ms();
    for arg in 0..=6 {
        let c = claim().await;
        assert_eq!(c.payload, job("q", "a", arg));
        within(c.enqueued_at_ms, from, to);
    }
}

/// Batch claims and batch rounds carry the enqueue time too, and identical
/// payloads queued at different times each keep their own.
pub async fn batch_claims_and_identical_jobs_keep_their_own_times(backend: Arc<dyn Backend>) {
    let same = job("q", "same", 1);
    let mut times = Vec::new();
    for _ in 0..3 {
        times.push(now_ms());
        backend.push("q", &same).await.unwrap();
        sleep_ms(150).await;
    }
    let slots: Vec<_> = (1..=2).map(|i| worker(&format!("h:1+1.{i}"), &["q"])).collect();
    let qs = vec!["q".to_owned()];
    let got = backend.claim_batch(&slots, &qs, RUN_AT).await.unwrap();
    assert_eq!(got.len(), 2);
    let done = vec![(slots[0].clone(), Outcome::Success)];
    let more = backend
        .complete_and_claim_batch(&done, &slots[..1], &qs, RUN_AT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(more.len(), 1);
    let claimed: Vec<i64> = got
        .iter()
        .chain(more.iter())
        .map(|(_, c)| c.enqueued_at_ms.expect("known"))
        .collect();
    for (at, pushed) in claimed.iter().zip(&times) {
        assert!((at - pushed).abs() <= SKEW_MS, "{claimed:?} vs {times:?}");
    }
    assert!(
        claimed[0] + 100 <= claimed[1] && claimed[1] + 100 <= claimed[2],
        "{claimed:?}"
    );
}
