//! `resq_admin::Admin::pause` and `resume`.

use crate::fixtures::sleep_ms;
use crate::support::{quick_config, recorded, runs, spawn_worker, standard_tasks, wait_until};
use resq_admin::Admin;
use resq_core::backend::Backend;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// A paused queue is marked in the overview and its jobs wait; resuming
/// lets a running worker take them. Each call reports whether it changed
/// the mark.
pub async fn pause_and_resume_via_admin(backend: Arc<dyn Backend>) {
    let admin = Admin::new(Arc::clone(&backend));
    let log = runs();
    let tasks = standard_tasks(&log);
    assert!(admin.pause("q").await.unwrap());
    assert!(!admin.pause("q").await.unwrap());
    admin.enqueue("q", "record", json!([1])).await.unwrap();
    let summary = admin.queues().await.unwrap();
    assert!(
        summary.iter().any(|s| s.name == "q" && s.paused && s.length == 1),
        "{summary:?}"
    );
    let w = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    sleep_ms(800).await;
    assert!(recorded(&log).is_empty(), "a paused queue's job ran");
    assert_eq!(backend.queue_len("q").await.unwrap(), 1);
    assert!(admin.resume("q").await.unwrap());
    assert!(!admin.resume("q").await.unwrap());
    wait_until(Duration::from_secs(10), "the job runs after the resume", || {
        let log = Arc::clone(&log);
        async move { recorded(&log).len() == 1 }
    })
    .await;
    assert!(!admin.queues().await.unwrap().iter().any(|s| s.paused));
    w.shutdown().await;
}
