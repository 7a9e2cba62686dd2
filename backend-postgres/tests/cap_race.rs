//! A concurrency cap under racing claims: many handles (separate pools, as
//! separate processes would have) claim and complete jobs of one capped
//! queue at once, by one-slot claims and by batch rounds, while a watcher
//! counts the queue's running jobs (its `working` rows) as often as it
//! can. No committed state may ever show more than the cap, and every job
//! runs exactly once.

mod common;

use resq_core::backend::Backend;
use resq_core::{Outcome, QueueLimits, QueueStore, StatsStore, WorkerId};
use resq_postgres::{testing, PostgresBackend};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CAP: u32 = 3;
const JOBS: usize = 300;
const HANDLES: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_claims_never_exceed_the_cap() {
    let Some(backend) = common::backend("racing_claims_never_exceed_the_cap").await else {
        return;
    };
    backend
        .set_queue_limits("c", QueueLimits::new().concurrency(CAP))
        .await
        .unwrap();
    for i in 0..JOBS {
        backend.push("c", &format!("job {i}")).await.unwrap();
    }
    let config = testing::config(backend.schema()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let backend = backend.clone();
        let stop = Arc::clone(&stop);
        let sql = format!(
            "SELECT count(*) FROM \"{}\".working WHERE queue = 'c'",
            backend.schema()
        );
        tokio::spawn(async move {
            let mut most = 0i64;
            while !stop.load(Ordering::Acquire) {
                let (n,): (i64,) = sqlx::query_as(&sql).fetch_one(backend.pool()).await.unwrap();
                most = most.max(n);
            }
            most
        })
    };
    let mut tasks = Vec::new();
    for h in 0..HANDLES {
        let handle = PostgresBackend::connect_with(config.clone()).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let queues = vec!["c".to_owned()];
            let mut ran = Vec::new();
            let mut idle = 0;
            if h % 2 == 0 {
                // One-slot claims.
                let me = WorkerId::new(format!("host:{h}+1"), &queues);
                while idle < 40 {
                    match handle.claim(&me, &queues, "t").await.unwrap() {
                        Some(job) => {
                            idle = 0;
                            ran.push(job.payload);
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            handle.complete(&me, Outcome::Success).await.unwrap();
                        }
                        None => {
                            idle += 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
            } else {
                // Batch rounds of three slots: complete what ran, claim again.
                let slots: Vec<WorkerId> = (1..=3)
                    .map(|i| WorkerId::new(format!("host:{h}+0.{i}"), &queues))
                    .collect();
                let mut done: Vec<(WorkerId, Outcome)> = Vec::new();
                while idle < 40 {
                    let got = handle
                        .complete_and_claim_batch(&done, &slots, &queues, "t")
                        .await
                        .unwrap()
                        .unwrap();
                    done = got.iter().map(|(i, _)| (slots[*i].clone(), Outcome::Success)).collect();
                    if got.is_empty() {
                        idle += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    } else {
                        idle = 0;
                        ran.extend(got.into_iter().map(|(_, c)| c.payload));
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                handle.complete_batch(&done).await.unwrap();
            }
            handle.close().await.unwrap();
            ran
        }));
    }
    let mut ran = Vec::new();
    for t in tasks {
        ran.extend(t.await.unwrap());
    }
    stop.store(true, Ordering::Release);
    let most = watcher.await.unwrap();
    assert!(most <= i64::from(CAP), "{most} running at once, cap {CAP}");
    assert!(most >= 1, "the watcher saw no running job");
    ran.sort();
    let before = ran.len();
    ran.dedup();
    assert_eq!(before, ran.len(), "a job ran twice");
    assert_eq!(ran.len(), JOBS, "every job ran");
    assert_eq!(backend.queue_len("c").await.unwrap(), 0);
    assert_eq!(backend.stat("processed").await.unwrap(), JOBS as i64);
    backend.close().await.unwrap();
}
