//! Pausing a queue, cluster-wide (issue #12): `pause_queue`, `resume_queue`
//! and `paused_queues`, and workers that skip paused queues.
//!
//! The target is 1 s: within 1 s of a pause no worker claims from the
//! queue, and within 1 s of a resume workers claim from it again. The
//! tests leave room for a loaded machine: they check "not taken" over a
//! window that starts after the 1 s bound, and "taken" within a few
//! seconds of a resume. Their workers poll every 30 s, so an idle worker
//! notices a resume only by the shorter wait a paused queue imposes.

use crate::support::{quick_config, recorded, runs, spawn_worker, standard_tasks, wait_until, Runs};
use resq_core::backend::Backend;
use resq_core::{Queue, WorkerConfig};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// How long a pause or a resume may take to reach a worker.
const BOUND: Duration = Duration::from_secs(1);
/// How long paused jobs must then stay untouched.
const WINDOW: Duration = Duration::from_millis(1500);
/// How long a resumed queue's jobs may take to run on a loaded machine.
const RESUMED_WITHIN: Duration = Duration::from_secs(5);
/// Limit for everything else.
const LIMIT: Duration = Duration::from_secs(10);

/// The runs of `record` jobs whose first argument is `queue`.
fn ran(log: &Runs, queue: &str) -> usize {
    recorded(log)
        .iter()
        .filter(|(_, args)| args.first() == Some(&Value::from(queue)))
        .count()
}

/// Waits until `n` jobs tagged `queue` have run.
async fn wait_ran(log: &Runs, queue: &str, n: usize, limit: Duration, what: &str) {
    wait_until(limit, what, || {
        let log = Arc::clone(log);
        let queue = queue.to_owned();
        async move { ran(&log, &queue) >= n }
    })
    .await;
}

/// A worker config with a long poll interval: it sees new jobs only by
/// the backend's wake-ups, and a resume only by the paused-queue re-read.
fn slow_polling(queues: &[&str], concurrency: usize) -> WorkerConfig {
    WorkerConfig {
        poll_interval: Duration::from_secs(30),
        concurrency,
        ..quick_config(queues)
    }
}

/// The shared scenario: a running worker on `queues` (which include `a`
/// and `b`, directly or by `*`) takes jobs of both; after `a` is paused it
/// takes none of `a`'s (they stay queued, in order) but still takes `b`'s;
/// after `a` is resumed its jobs run within a few seconds.
async fn pause_and_resume_with(backend: Arc<dyn Backend>, config: WorkerConfig) {
    let log = runs();
    let tasks = standard_tasks(&log);
    let q = Queue::new(Arc::clone(&backend));
    let w = spawn_worker(&backend, &tasks, config);
    q.enqueue("a", "record", ("a", 0)).await.unwrap();
    q.enqueue("b", "record", ("b", 0)).await.unwrap();
    wait_ran(&log, "a", 1, LIMIT, "a job of a ran before the pause").await;
    wait_ran(&log, "b", 1, LIMIT, "a job of b ran before the pause").await;

    assert!(q.pause_queue("a").await.unwrap(), "a was not paused yet");
    tokio::time::sleep(BOUND).await;
    for i in 1..=3 {
        q.enqueue("a", "record", ("a", i)).await.unwrap();
    }
    let queued = q.queued("a", 0, -1).await.unwrap();
    q.enqueue("b", "record", ("b", 1)).await.unwrap();
    wait_ran(&log, "b", 2, LIMIT, "b still worked while a is paused").await;
    tokio::time::sleep(WINDOW).await;
    assert_eq!(ran(&log, "a"), 1, "a paused queue's job was taken");
    assert_eq!(q.length("a").await.unwrap(), 3, "the paused jobs stay queued");
    assert_eq!(q.queued("a", 0, -1).await.unwrap(), queued, "in their order");

    assert!(q.resume_queue("a").await.unwrap(), "a was paused");
    wait_ran(&log, "a", 4, RESUMED_WITHIN, "the resumed queue's jobs ran").await;
    assert_eq!(q.length("a").await.unwrap(), 0);
    w.shutdown().await;
}

/// A single-slot worker on `a,b` skips `a` while it is paused and takes
/// its jobs again after the resume.
pub async fn pausing_stops_a_worker_and_resuming_restarts_it(backend: Arc<dyn Backend>) {
    pause_and_resume_with(backend, slow_polling(&["a", "b"], 1)).await;
}

/// A wildcard worker leaves a paused queue out of `*`.
pub async fn wildcard_worker_skips_a_paused_queue(backend: Arc<dyn Backend>) {
    pause_and_resume_with(backend, slow_polling(&["*"], 1)).await;
}

/// A multi-slot worker skips a paused queue as well.
pub async fn multi_slot_worker_skips_a_paused_queue(backend: Arc<dyn Backend>) {
    pause_and_resume_with(backend, slow_polling(&["a", "b"], 4)).await;
}

/// A multi-slot wildcard worker leaves a paused queue out of `*`.
pub async fn multi_slot_wildcard_worker_skips_a_paused_queue(backend: Arc<dyn Backend>) {
    pause_and_resume_with(backend, slow_polling(&["b", "*"], 4)).await;
}

/// A queue paused before any worker starts is never taken from, and the
/// worker works its other queues; pausing every queue of a worker leaves
/// it idle until one is resumed.
pub async fn a_worker_started_on_paused_queues_waits_for_the_resume(backend: Arc<dyn Backend>) {
    let log = runs();
    let tasks = standard_tasks(&log);
    let q = Queue::new(Arc::clone(&backend));
    q.pause_queue("a").await.unwrap();
    q.pause_queue("b").await.unwrap();
    q.enqueue("a", "record", ("a", 1)).await.unwrap();
    q.enqueue("b", "record", ("b", 1)).await.unwrap();
    let w = spawn_worker(&backend, &tasks, slow_polling(&["a", "b"], 1));
    tokio::time::sleep(BOUND + WINDOW).await;
    assert!(recorded(&log).is_empty(), "a job of a paused queue ran");
    assert_eq!(q.length("a").await.unwrap(), 1);
    assert_eq!(q.length("b").await.unwrap(), 1);
    q.resume_queue("b").await.unwrap();
    wait_ran(&log, "b", 1, RESUMED_WITHIN, "the resumed queue's job ran").await;
    tokio::time::sleep(WINDOW).await;
    assert_eq!(ran(&log, "a"), 0, "the still paused queue's job ran");
    assert_eq!(q.length("a").await.unwrap(), 1);
    w.shutdown().await;
}

/// `paused_queues` lists paused queues sorted and unlists resumed ones;
/// pausing twice, resuming what is not paused, and pausing an empty or
/// unknown queue are all fine; a pause neither creates the queue nor
/// stops enqueueing to it.
pub async fn paused_queues_lists_and_unlists(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    assert!(q.paused_queues().await.unwrap().is_empty());
    assert!(q.pause_queue("zeta").await.unwrap());
    assert!(q.pause_queue("alpha").await.unwrap());
    assert!(!q.pause_queue("zeta").await.unwrap(), "already paused");
    assert_eq!(q.paused_queues().await.unwrap(), vec!["alpha", "zeta"]);
    assert!(q.queues().await.unwrap().is_empty(), "a pause creates no queue");

    q.enqueue("alpha", "record", (1,)).await.unwrap();
    assert_eq!(q.length("alpha").await.unwrap(), 1, "a paused queue still takes jobs");

    assert!(q.resume_queue("zeta").await.unwrap());
    assert!(!q.resume_queue("zeta").await.unwrap(), "not paused any more");
    assert!(!q.resume_queue("never-paused").await.unwrap());
    assert_eq!(q.paused_queues().await.unwrap(), vec!["alpha"]);
    assert!(q.resume_queue("alpha").await.unwrap());
    assert!(q.paused_queues().await.unwrap().is_empty());
    assert_eq!(q.length("alpha").await.unwrap(), 1);
}
