//! `resq_admin::Admin`'s worker calls: busy and idle workers with their
//! current job and ping age, cleaning one worker, and cleaning the stale
//! ones (with a dry run).

use crate::fixtures::{job, worker, RUN_AT};
use crate::support::{quick_config, runs, spawn_worker, standard_tasks, wait_until};
use resq_admin::Admin;
use resq_core::backend::Backend;
use resq_core::time::now_ms;
use resq_core::Queue;
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(10);

/// A running worker with a job shows it (queue, class, payload, run time)
/// and counts as busy; an idle one shows none; both have a start time and
/// a recent ping.
pub async fn workers_show_busy_idle_current_job_and_ping_age(backend: Arc<dyn Backend>) {
    let admin = Admin::new(Arc::clone(&backend));
    let tasks = standard_tasks(&runs());
    Queue::new(Arc::clone(&backend))
        .enqueue("slowq", "slow", (1500,))
        .await
        .unwrap();
    let before = now_ms();
    let busy = spawn_worker(&backend, &tasks, quick_config(&["slowq"]));
    let idle = spawn_worker(&backend, &tasks, quick_config(&["idleq"]));
    wait_until(LIMIT, "both registered, one busy", || {
        let admin = admin.clone();
        async move {
            let w = admin.workers().await.unwrap();
            w.len() == 2 && w.iter().filter(|w| w.busy).count() == 1
        }
    })
    .await;
    let all = admin.workers().await.unwrap();
    let b = all.iter().find(|w| w.name == busy.name).expect("busy worker listed");
    let i = all.iter().find(|w| w.name == idle.name).expect("idle worker listed");
    assert_eq!(b.queues, "slowq");
    let j = b.job.as_ref().expect("busy worker has a job");
    assert_eq!((j.queue.as_str(), j.class.as_deref()), ("slowq", Some("slow")));
    assert_eq!(j.payload, r#"{"class":"slow","queue":"slowq","args":[1500]}"#);
    assert!(!j.run_at.is_empty());
    assert!(!i.busy && i.job.is_none());
    for w in [b, i] {
        let started = w.started_at_ms.expect("start time known");
        assert!(started >= before - 1000 && started <= now_ms() + 1000, "{w:?}");
        let age = w.ping_age_seconds.expect("ping known");
        assert!((0.0..5.0).contains(&age), "{w:?}");
    }
    busy.shutdown().await;
    idle.shutdown().await;
    assert!(admin.workers().await.unwrap().is_empty());
}

/// Cleaning one worker removes it, and its job goes to the failed list;
/// an unknown worker is `None`.
pub async fn clean_one_worker_fails_its_job(backend: Arc<dyn Backend>) {
    let admin = Admin::new(Arc::clone(&backend));
    let w = worker("host:7+1", &["q"]);
    backend.register_worker(&w, now_ms()).await.unwrap();
    let payload = job("q", "record", 1);
    backend.push("q", &payload).await.unwrap();
    backend.claim(&w, &["q".to_owned()], RUN_AT).await.unwrap().unwrap();
    let cleaned = admin.clean_worker("host:7+1").await.unwrap().expect("cleaned");
    assert_eq!(cleaned.worker.name, "host:7+1");
    assert_eq!(cleaned.working_on.map(|wo| wo.payload), Some(payload.clone()));
    assert!(admin.workers().await.unwrap().is_empty());
    let failed = admin
        .failed(&resq_admin::FailedFilter::default(), resq_admin::Page::default())
        .await
        .unwrap();
    assert_eq!(failed.total, 1);
    assert_eq!(failed.items[0].payload.as_deref(), Some(payload.as_str()));
    assert!(admin.clean_worker("nobody:1+1").await.unwrap().is_none());
}

/// The dry run lists exactly the workers whose ping is older than the
/// limit, and changes nothing; cleaning them leaves the fresh ones.
pub async fn stale_workers_dry_run_and_clean_leave_fresh_ones(backend: Arc<dyn Backend>) {
    let admin = Admin::new(Arc::clone(&backend));
    let old = worker("old:1+1", &["q"]);
    let fresh = worker("fresh:1+1", &["q"]);
    backend.register_worker(&old, now_ms() - 60_000).await.unwrap();
    backend.register_worker(&fresh, now_ms()).await.unwrap();
    let limit = Duration::from_secs(30);
    let stale = admin.stale_workers(limit).await.unwrap();
    let names: Vec<&str> = stale.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["old:1+1"]);
    let age = stale[0].ping_age_seconds.expect("ping known");
    assert!((59.0..120.0).contains(&age), "{age}");
    assert_eq!(admin.workers().await.unwrap().len(), 2);
    let cleaned = admin.clean_stale_workers(limit).await.unwrap();
    let names: Vec<&str> = cleaned.iter().map(|c| c.worker.name.as_str()).collect();
    assert_eq!(names, ["old:1+1"]);
    let left: Vec<String> = admin.workers().await.unwrap().into_iter().map(|w| w.name).collect();
    assert_eq!(left, ["fresh:1+1"]);
    assert!(admin.stale_workers(limit).await.unwrap().is_empty());
}
