//! `resq_admin::Admin::enqueue`: a job by class, queue and JSON arguments.

use crate::support::{quick_config, recorded, runs, spawn_worker, standard_tasks, wait_until};
use resq_admin::{Admin, Page};
use resq_core::backend::Backend;
use resq_core::Error;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// The job is queued in node-resque's format and a worker runs it with
/// those arguments.
pub async fn manual_enqueue_runs_on_a_worker(backend: Arc<dyn Backend>) {
    let admin = Admin::new(Arc::clone(&backend));
    admin
        .enqueue("q", "record", json!([1, "x", {"k": true}]))
        .await
        .unwrap();
    let d = admin.queue("q", Page::default()).await.unwrap();
    assert_eq!(
        d.jobs.items[0].payload,
        r#"{"class":"record","queue":"q","args":[1,"x",{"k":true}]}"#
    );
    let log = runs();
    let w = spawn_worker(&backend, &standard_tasks(&log), quick_config(&["q"]));
    wait_until(Duration::from_secs(10), "the job runs", || {
        let log = Arc::clone(&log);
        async move { recorded(&log).len() == 1 }
    })
    .await;
    assert_eq!(
        recorded(&log),
        [("record".to_owned(), vec![json!(1), json!("x"), json!({"k": true})])]
    );
    w.shutdown().await;
}

/// Arguments that are not a JSON array, and empty names, are refused and
/// queue nothing.
pub async fn manual_enqueue_refuses_non_array_args(backend: Arc<dyn Backend>) {
    let admin = Admin::new(Arc::clone(&backend));
    for args in [json!({"a": 1}), json!(5), json!("x"), json!(null)] {
        let r = admin.enqueue("q", "record", args.clone()).await;
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{args}: {r:?}");
    }
    assert!(admin.enqueue("", "record", json!([])).await.is_err());
    assert!(admin.enqueue("q", "", json!([])).await.is_err());
    assert_eq!(backend.queue_len("q").await.unwrap(), 0);
    assert!(backend.queues().await.unwrap().is_empty());
}
