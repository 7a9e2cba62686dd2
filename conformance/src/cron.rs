//! Cron tasks: fired by the scheduler leader only, each occurrence exactly
//! once across leader changes, none skipped, none before a task was first
//! seen.

use crate::support::{quick_scheduler, spawn_scheduler};
use resq_core::backend::Backend;
use resq_core::cron::CronSchedule;
use resq_core::task::{JobContext, TaskDef, TaskError, Tasks};
use resq_core::time::now_ms;
use resq_core::{Scheduler, SchedulerConfig};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

fn every_second() -> Arc<Tasks> {
    let mut tasks = Tasks::new();
    tasks
        .define(
            TaskDef::from_fn("tick", |_: (Value,), _ctx: JobContext| async { Ok::<_, TaskError>(()) })
                .queue("cron")
                .cron(CronSchedule::parse("* * * * * *").expect("cron")),
        )
        .expect("define");
    Arc::new(tasks)
}

/// The occurrence times (ms) of the fired jobs in queue `cron`, in order.
async fn fired(backend: &Arc<dyn Backend>) -> Vec<i64> {
    backend
        .queue_range("cron", 0, -1)
        .await
        .unwrap()
        .iter()
        .map(|raw| {
            let job = resq_core::Job::decode(raw).expect("cron job decodes");
            assert_eq!(job.class, "tick");
            job.args[0]["cron_at"].as_i64().expect("cron_at")
        })
        .collect()
}

/// Asserts `at` is every whole second from its first to its last element,
/// each exactly once.
fn assert_every_second_once(at: &[i64]) {
    assert!(!at.is_empty(), "nothing fired");
    let mut sorted = at.to_vec();
    sorted.sort_unstable();
    let expected: Vec<i64> = (0..).map(|i| sorted[0] + i * 1000).take(sorted.len()).collect();
    assert_eq!(sorted, expected, "fires are not each second exactly once: {at:?}");
    assert!(sorted.iter().all(|ms| ms % 1000 == 0));
}

/// Two schedulers run side by side; the leader is stopped (a graceful
/// change), then the new leader's process dies without releasing (a forced
/// change: the first must wait for the lock to expire). Every occurrence
/// between the first fire and the last is enqueued exactly once, including
/// those that came due while nobody led.
pub async fn leader_changes_neither_double_nor_skip_fires(backend: Arc<dyn Backend>) {
    let tasks = every_second();
    let config = |name: &str| SchedulerConfig {
        name: Some(name.to_owned()),
        leader_ttl: Duration::from_millis(1500),
        poll_interval: Duration::from_millis(100),
        ..SchedulerConfig::default()
    };
    let a = spawn_scheduler(&backend, Some(&tasks), config("cron-a"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = spawn_scheduler(&backend, Some(&tasks), config("cron-b"));
    let c = spawn_scheduler(&backend, Some(&tasks), config("cron-c"));
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let first_leader = backend.leader().await.unwrap().expect("a leader");
    // Graceful change: stop whoever leads.
    let mut rest = Vec::new();
    for s in [a, b, c] {
        if s.scheduler.name() == first_leader {
            s.shutdown().await;
        } else {
            rest.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let second_leader = backend.leader().await.unwrap().expect("a new leader");
    assert_ne!(second_leader, first_leader);
    // Forced change: the new leader dies without releasing its lock.
    let mut survivor = None;
    for s in rest {
        if s.scheduler.name() == second_leader {
            s.handle.abort();
        } else {
            survivor = Some(s);
        }
    }
    let survivor = survivor.expect("a third scheduler");
    tokio::time::sleep(Duration::from_millis(4000)).await;
    assert_eq!(
        backend.leader().await.unwrap().as_deref(),
        Some(survivor.scheduler.name())
    );
    survivor.shutdown().await;
    let at = fired(&backend).await;
    assert_every_second_once(&at);
    assert!(at.len() >= 8, "too few fires over ~9 s: {at:?}");
}

/// Only the leader fires: a follower's poll enqueues nothing.
pub async fn followers_never_fire(backend: Arc<dyn Backend>) {
    let tasks = every_second();
    let leader = Scheduler::new(Arc::clone(&backend), quick_scheduler())
        .unwrap()
        .with_tasks(Arc::clone(&tasks));
    let follower = Scheduler::new(Arc::clone(&backend), quick_scheduler())
        .unwrap()
        .with_tasks(Arc::clone(&tasks));
    assert!(leader.poll().await.unwrap().leader);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let report = follower.poll().await.unwrap();
    assert!(!report.leader);
    assert_eq!(report.cron_fired, 0);
    assert!(fired(&backend).await.is_empty());
    let report = leader.poll().await.unwrap();
    assert!(report.cron_fired >= 1, "{report:?}");
    assert!(report.next_cron_ms.is_some());
}

/// A cron task seen for the first time starts from now: no occurrence
/// before the first poll is fired, however far back the catch-up window.
pub async fn first_poll_fires_nothing_from_the_past(backend: Arc<dyn Backend>) {
    let tasks = every_second();
    let started = now_ms();
    let s = Scheduler::new(
        Arc::clone(&backend),
        SchedulerConfig {
            cron_catch_up: Duration::from_secs(3600),
            ..quick_scheduler()
        },
    )
    .unwrap()
    .with_tasks(tasks);
    assert_eq!(s.poll().await.unwrap().cron_fired, 0);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(s.poll().await.unwrap().cron_fired >= 1);
    let at = fired(&backend).await;
    assert!(at.iter().all(|&ms| ms > started - 1000), "{at:?} before {started}");
    assert_every_second_once(&at);
}

/// A running scheduler with cron tasks wakes for the next occurrence, so
/// fires land close to their time even with a long poll interval.
pub async fn fires_are_timely_with_a_long_poll_interval(backend: Arc<dyn Backend>) {
    let tasks = every_second();
    let s = spawn_scheduler(
        &backend,
        Some(&tasks),
        SchedulerConfig {
            poll_interval: Duration::from_secs(30),
            leader_ttl: Duration::from_secs(60),
            ..SchedulerConfig::default()
        },
    );
    tokio::time::sleep(Duration::from_millis(3300)).await;
    s.shutdown().await;
    let at = fired(&backend).await;
    assert!(at.len() >= 2, "fired {at:?} in 3.3 s with a 30 s poll interval");
    assert_every_second_once(&at);
}
