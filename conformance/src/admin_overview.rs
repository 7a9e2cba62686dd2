//! `resq_admin::Admin::overview` and `queues`: lengths, latency (the head
//! job's age), pause marks, delayed and failed counts, busy and idle
//! workers, the leader and the global counters, read in batched calls.

use crate::counting::Counting;
use crate::fixtures::{job, sleep_ms, worker, RUN_AT};
use crate::support::{quick_config, runs, spawn_worker, standard_tasks, wait_until};
use resq_admin::{Admin, QueueSummary};
use resq_core::backend::Backend;
use resq_core::failed::{encode_entry, Failure};
use resq_core::time::now_ms;
use resq_core::Queue;
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(10);

fn find<'a>(queues: &'a [QueueSummary], name: &str) -> &'a QueueSummary {
    queues
        .iter()
        .find(|q| q.name == name)
        .unwrap_or_else(|| panic!("queue {name} missing from {queues:?}"))
}

/// Every count of the overview reflects what is stored: queue lengths and
/// pause marks (sorted by name), delayed items, failed entries, the global
/// counters and the leader; no workers are registered.
pub async fn overview_counts_queues_delayed_failed_and_totals(backend: Arc<dyn Backend>) {
    let admin = Admin::new(Arc::clone(&backend));
    let q = Queue::new(Arc::clone(&backend));
    q.enqueue("b", "record", (1,)).await.unwrap();
    q.enqueue("a", "record", (1,)).await.unwrap();
    q.enqueue("a", "record", (2,)).await.unwrap();
    let later = now_ms() + 3_600_000;
    q.enqueue_at(later, "a", "record", (3,)).await.unwrap();
    q.enqueue_at(later + 5_000, "b", "record", (4,)).await.unwrap();
    q.enqueue_at(later + 5_000, "b", "record", (5,)).await.unwrap();
    for i in 0..3 {
        let entry = encode_entry("w", "a", &job("a", "x", i), &Failure::new("Error", "boom"), now_ms());
        backend.push_failed(&entry).await.unwrap();
    }
    backend.incr_stat("processed", 5).await.unwrap();
    backend.incr_stat("failed", 2).await.unwrap();
    assert!(backend.acquire_leader("boss", Duration::from_secs(30)).await.unwrap());
    admin.pause("b").await.unwrap();

    let o = admin.overview().await.unwrap();
    let names: Vec<&str> = o.queues.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!((find(&o.queues, "a").length, find(&o.queues, "a").paused), (2, false));
    assert_eq!((find(&o.queues, "b").length, find(&o.queues, "b").paused), (1, true));
    assert_eq!(o.delayed, 3);
    assert_eq!(o.failed, 3);
    assert_eq!(o.processed_total, 5);
    assert_eq!(o.failed_total, 2);
    assert_eq!(o.leader.as_deref(), Some("boss"));
    assert_eq!((o.workers.busy, o.workers.idle), (0, 0));
    let again: Vec<(String, u64, bool)> = admin
        .queues()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.length, s.paused))
        .collect();
    assert_eq!(again, [("a".to_owned(), 2, false), ("b".to_owned(), 1, true)]);
}

/// Latency is the age of the head job: it grows while the job waits, it
/// follows the head when the head is taken, and it is 0 for an empty queue.
pub async fn latency_is_the_head_jobs_age_and_zero_when_empty(backend: Arc<dyn Backend>) {
    let admin = Admin::new(Arc::clone(&backend));
    let first = job("q", "record", 1);
    let second = job("q", "record", 2);
    backend.push("q", &first).await.unwrap();
    sleep_ms(600).await;
    backend.push("q", &second).await.unwrap();
    sleep_ms(200).await;
    let lat = |o: &[QueueSummary]| {
        find(o, "q")
            .latency_seconds
            .expect("resq knows when it queued its jobs")
    };
    let a = lat(&admin.queues().await.unwrap());
    assert!(a >= 0.7, "head queued ~0.8 s ago, latency {a}");
    sleep_ms(300).await;
    let b = lat(&admin.queues().await.unwrap());
    assert!(b >= a + 0.25, "latency grows while the head waits: {a} then {b}");
    // Taking the head makes the younger job the head.
    let w = worker("h:1+1", &["q"]);
    let got = backend.claim(&w, &["q".to_owned()], RUN_AT).await.unwrap().unwrap();
    assert_eq!(got.payload, first);
    let c = lat(&admin.queues().await.unwrap());
    assert!(c < b - 0.4, "the new head is ~0.6 s younger: {b} then {c}");
    assert!(c >= 0.45, "the new head queued ~0.5 s ago: {c}");
    backend.claim(&w, &["q".to_owned()], RUN_AT).await.unwrap().unwrap();
    let empty = admin.queues().await.unwrap();
    assert_eq!(find(&empty, "q").length, 0);
    assert_eq!(find(&empty, "q").latency_seconds, Some(0.0));
}

/// A running worker that holds a job counts as busy, one waiting for work
/// as idle.
pub async fn overview_counts_busy_and_idle_workers(backend: Arc<dyn Backend>) {
    let admin = Admin::new(Arc::clone(&backend));
    let tasks = standard_tasks(&runs());
    Queue::new(Arc::clone(&backend))
        .enqueue("slowq", "slow", (1500,))
        .await
        .unwrap();
    let busy = spawn_worker(&backend, &tasks, quick_config(&["slowq"]));
    let idle = spawn_worker(&backend, &tasks, quick_config(&["idleq"]));
    wait_until(LIMIT, "one busy and one idle worker", || {
        let admin = admin.clone();
        async move {
            let o = admin.overview().await.unwrap();
            o.workers.busy == 1 && o.workers.idle == 1
        }
    })
    .await;
    busy.shutdown().await;
    idle.shutdown().await;
    let o = admin.overview().await.unwrap();
    assert_eq!((o.workers.busy, o.workers.idle), (0, 0));
}

/// The overview reads all queues with one `queue_stats` call, never one
/// call per queue.
pub async fn overview_reads_all_queues_in_one_call(backend: Arc<dyn Backend>) {
    let counting = Counting::new(Arc::clone(&backend));
    let n = 40;
    for i in 0..n {
        backend.push(&format!("q{i:02}"), &job("q", "record", i)).await.unwrap();
    }
    let admin = Admin::new(counting.clone() as Arc<dyn Backend>);
    let o = admin.overview().await.unwrap();
    assert_eq!(o.queues.len(), n as usize);
    assert!(o.queues.iter().all(|q| q.length == 1));
    assert_eq!(counting.count("queue_stats"), 1);
    assert_eq!(counting.count("queue_len"), 0);
    assert_eq!(counting.count("queue_range"), 0);
}
