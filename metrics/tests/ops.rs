//! The files in `ops/` parse, and every metric their expressions use is one
//! that the exporter really outputs (rendered here from real jobs and a
//! real collection on the memory backend).

mod common;

use common::series_names;
use resq_admin::Admin;
use resq_core::{Backend, CancellationToken, JobContext, Queue, TaskDef, TaskError, Tasks, Worker, WorkerConfig};
use resq_metrics::{Collector, Exporter, Metrics};
use serde_json::Value as Json;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

fn ops(path: &str) -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ops").join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The `resq_…` names an expression uses.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("resq_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The scrape text after real jobs (a success, a failure) ran on the
/// memory backend and the cluster state was collected, with one queue wait
/// recorded.
async fn rendered() -> String {
    let backend: Arc<dyn Backend> = Arc::new(resq_memory::MemoryBackend::new());
    let mut tasks = Tasks::new();
    tasks
        .define(TaskDef::from_fn("ok", |(_n,): (u32,), _ctx: JobContext| async move {
            Ok::<_, TaskError>(())
        }))
        .unwrap();
    tasks
        .define(TaskDef::from_fn("bad", |(_n,): (u32,), _ctx: JobContext| async move {
            Err::<(), _>(TaskError::new("no"))
        }))
        .unwrap();
    let tasks = Arc::new(tasks);
    let client = Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
    client.enqueue("ops", "ok", (1,)).await.unwrap();
    client.enqueue("ops", "bad", (1,)).await.unwrap();
    client.enqueue("waiting", "ok", (2,)).await.unwrap();
    let metrics = Metrics::new();
    let worker = Worker::new(Arc::clone(&backend), tasks, WorkerConfig::for_queues(["ops"]));
    metrics.observe(worker.subscribe());
    let stop = CancellationToken::new();
    let token = stop.clone();
    let run = tokio::spawn(async move { worker.run_until(token).await });
    common::wait_for(Duration::from_secs(10), "2 jobs", || {
        metrics.jobs("ops", "ok", resq_metrics::JobOutcome::Success) == 1
            && metrics.jobs("ops", "bad", resq_metrics::JobOutcome::Failure) == 1
    })
    .await;
    // A queue wait, as a backend that reports enqueue times gives it.
    metrics.record(&resq_core::WorkerEvent::Job {
        worker: "w".into(),
        queue: "ops".into(),
        job: Arc::new(resq_core::Job::new("ops", "ok", Vec::new())),
        enqueued_at_ms: Some(resq_core::time::now_ms() - 1500),
    });
    let collector = Collector::new(Admin::new(Arc::clone(&backend)));
    collector.collect().await.unwrap();
    let text = Exporter::builder()
        .metrics(&metrics)
        .collector(&collector)
        .build()
        .render();
    stop.cancel();
    run.await.unwrap().unwrap();
    text
}

fn dashboard_exprs(dashboard: &Json) -> Vec<String> {
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    exprs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_uses_only_exported_metrics() {
    let dashboard: Json = serde_json::from_str(&ops("grafana/resq-dashboard.json")).expect("valid JSON");
    assert_eq!(dashboard["uid"], "resq-overview");
    // A `$datasource` variable, used by every panel and target.
    let vars = dashboard["templating"]["list"].as_array().expect("variables");
    assert!(vars
        .iter()
        .any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"));
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels {
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}", panel["title"]);
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{}", panel["title"]);
        }
    }
    // Unique panel ids, and the panels the issue asks for.
    let ids: BTreeSet<i64> = panels.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len());
    let titles: Vec<&str> = panels.iter().map(|p| p["title"].as_str().unwrap()).collect();
    for wanted in [
        "Queue length",
        "Queue latency",
        "Job rate by outcome",
        "Job duration p50 / p95",
        "Queue wait",
        "Workers busy / idle",
        "Failed jobs",
        "Scheduler leader",
    ] {
        assert!(
            titles.iter().any(|t| t.starts_with(wanted)),
            "no panel {wanted:?}: {titles:?}"
        );
    }
    let exported = series_names(&rendered().await);
    let exprs = dashboard_exprs(&dashboard);
    let mut used = BTreeSet::new();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "an expression without a resq metric: {expr}");
        used.extend(names);
    }
    let unknown: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard uses metrics not exported: {unknown:?}\nexported: {exported:?}"
    );
    // Both histograms are charted as quantiles.
    assert!(exprs
        .iter()
        .any(|e| e.contains("histogram_quantile(0.95") && e.contains("resq_job_duration_seconds_bucket")));
    assert!(exprs.iter().any(|e| e.contains("resq_job_queue_wait_seconds_bucket")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_rules_use_only_exported_metrics() {
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&ops("prometheus/resq-alerts.yml")).expect("valid YAML");
    let groups = rules["groups"].as_sequence().expect("groups");
    let exported = series_names(&rendered().await);
    let mut alerts = BTreeSet::new();
    for group in groups {
        assert!(group["name"].as_str().is_some());
        for rule in group["rules"].as_sequence().expect("rules") {
            let alert = rule["alert"].as_str().expect("an alerting rule has a name");
            let expr = rule["expr"].as_str().expect("expr");
            assert!(rule["labels"]["severity"].as_str().is_some(), "{alert}: no severity");
            assert!(rule["annotations"]["summary"].as_str().is_some(), "{alert}: no summary");
            if let Some(wait) = rule.get("for") {
                let wait = wait.as_str().expect("for: a duration");
                assert!(wait.ends_with('m') || wait.ends_with('s'), "{alert}: for {wait}");
            }
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{alert}: no resq metric in {expr}");
            for name in names {
                assert!(exported.contains(&name), "{alert}: {name} is not exported");
            }
            assert!(alerts.insert(alert.to_owned()), "{alert} twice");
        }
    }
    for wanted in [
        "ResqQueueLatencyHigh",
        "ResqFailedJobsGrowing",
        "ResqNoSchedulerLeader",
        "ResqMetricsStale",
    ] {
        assert!(alerts.contains(wanted), "no alert {wanted}: {alerts:?}");
    }
}

#[test]
fn metric_names_are_found_in_promql() {
    assert_eq!(
        metric_names("max by (queue) (resq_queue_length{queue=~\"a\"}) / resq_x_total"),
        ["resq_queue_length", "resq_x_total"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    // A misspelt name is caught by the exported set.
    assert!(!series_names("# TYPE resq_a gauge\nresq_a 1\n").contains("resq_b"));
}
