//! Cluster-wide gauges from the cached collector, against every backend
//! (memory always; Redis and PostgreSQL skip with a printed reason when
//! unreachable, or fail with `RESQ_REQUIRE_BACKENDS=1`, as the conformance
//! suite does; each test has its own namespace or schema).

mod common;

use common::value;
use resq_admin::Admin;
use resq_conformance::counting::Counting;
use resq_conformance::fixtures;
use resq_conformance::outage::Outage;
use resq_core::{Backend, BackendErrorKind, CancellationToken, Queue};
use resq_metrics::{Collector, Exporter};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A fresh, isolated backend, or why there is none.
type Connecting = std::pin::Pin<Box<dyn Future<Output = Result<Arc<dyn Backend>, String>> + Send>>;
type Factory = fn() -> Connecting;

fn memory() -> Connecting {
    Box::pin(async { Ok(Arc::new(resq_memory::MemoryBackend::new()) as Arc<dyn Backend>) })
}

fn redis() -> Connecting {
    Box::pin(resq_redis::testing::fresh_backend())
}

fn postgres() -> Connecting {
    Box::pin(resq_postgres::testing::fresh_backend())
}

const BACKENDS: [(&str, Factory); 3] = [("memory", memory), ("redis", redis), ("postgres", postgres)];

/// Runs `test` once per backend, with the backend's kind.
fn each_backend<T, Fut>(name: &str, test: T)
where
    T: Fn(&'static str, Arc<dyn Backend>) -> Fut,
    Fut: Future<Output = ()>,
{
    for (kind, factory) in BACKENDS {
        resq_conformance::run_backend_test(&format!("{kind}::metrics::{name}"), factory, |backend| {
            test(kind, backend)
        });
    }
}

/// 3 jobs on `alpha`, 1 on `beta`, 1 delayed, 1 failed entry, 1 idle
/// worker, a leader, `beta` paused.
async fn fill(backend: &Arc<dyn Backend>) {
    let queue = Queue::new(Arc::clone(backend));
    for n in 0..3 {
        queue.enqueue("alpha", "ok", (n,)).await.unwrap();
    }
    queue.enqueue("beta", "ok", (9,)).await.unwrap();
    queue
        .enqueue_in(Duration::from_secs(3600), "alpha", "later", (1,))
        .await
        .unwrap();
    queue.pause_queue("beta").await.unwrap();
    backend
        .push_failed(r#"{"failed_at":"2024-01-01T00:00:00Z","payload":{"class":"x","queue":"alpha","args":[]},"exception":"Error","error":"boom","backtrace":[],"worker":"w","queue":"alpha"}"#)
        .await
        .unwrap();
    backend
        .register_worker(
            &fixtures::worker("metrics-test-worker", &["alpha"]),
            resq_core::time::now_ms(),
        )
        .await
        .unwrap();
    assert!(backend
        .acquire_leader("metrics-test-scheduler", Duration::from_secs(60))
        .await
        .unwrap());
}

#[test]
fn gauges_show_the_cluster_state() {
    each_backend("gauges_show_the_cluster_state", |_kind, backend| async move {
        fill(&backend).await;
        let collector = Collector::new(Admin::new(Arc::clone(&backend)));
        let exporter = Exporter::builder().collector(&collector).build();
        // Nothing collected yet: only the collection's own metrics.
        let before = exporter.render();
        assert_eq!(value(&before, "resq_queue_length", &[("queue", "alpha")]), None);
        assert_eq!(value(&before, "resq_metrics_collect_stale", &[]), Some(1.0));
        collector.collect().await.unwrap();
        let text = exporter.render();
        assert_eq!(
            value(&text, "resq_queue_length", &[("queue", "alpha")]),
            Some(3.0),
            "{text}"
        );
        assert_eq!(value(&text, "resq_queue_length", &[("queue", "beta")]), Some(1.0));
        assert_eq!(value(&text, "resq_queue_paused", &[("queue", "beta")]), Some(1.0));
        assert_eq!(value(&text, "resq_queue_paused", &[("queue", "alpha")]), Some(0.0));
        assert_eq!(value(&text, "resq_delayed_jobs", &[]), Some(1.0));
        assert_eq!(value(&text, "resq_failed_jobs", &[]), Some(1.0));
        assert_eq!(value(&text, "resq_workers", &[("state", "idle")]), Some(1.0));
        assert_eq!(value(&text, "resq_workers", &[("state", "busy")]), Some(0.0));
        assert_eq!(value(&text, "resq_scheduler_leader", &[]), Some(1.0));
        assert_eq!(value(&text, "resq_metrics_collect_stale", &[]), Some(0.0));
        assert_eq!(value(&text, "resq_metrics_collect_errors_total", &[]), Some(0.0));
        assert!(value(&text, "resq_metrics_collect_duration_seconds", &[]).is_some_and(|d| d > 0.0));
        assert!(value(&text, "resq_metrics_collect_age_seconds", &[]).is_some_and(|a| a >= 0.0));
        // resq records the enqueue time of the jobs it queues on every
        // backend: the oldest job's age is known.
        let alpha = value(&text, "resq_queue_latency_seconds", &[("queue", "alpha")]);
        assert!(alpha.is_some_and(|l| l >= 0.0), "{alpha:?}");
        // Latency: the age of the oldest job where known, never negative.
        let overview = collector.overview().unwrap();
        for q in &overview.queues {
            let shown = value(&text, "resq_queue_latency_seconds", &[("queue", q.name.as_str())]);
            match q.latency_seconds {
                Some(l) => assert_eq!(shown, Some(l)),
                None => assert_eq!(shown, None, "an unknown latency is omitted"),
            }
            assert!(shown.is_none_or(|l| l >= 0.0));
        }
        // The leader goes: the gauge follows at the next collection.
        backend.release_leader("metrics-test-scheduler").await.unwrap();
        collector.collect().await.unwrap();
        assert_eq!(value(&exporter.render(), "resq_scheduler_leader", &[]), Some(0.0));
    });
}

#[test]
fn a_scrape_never_reads_the_backend() {
    each_backend("a_scrape_never_reads_the_backend", |_kind, backend| async move {
        fill(&backend).await;
        let counting = Counting::new(Arc::clone(&backend));
        let collector = Collector::new(Admin::new(Arc::clone(&counting) as Arc<dyn Backend>));
        let exporter = Exporter::builder().collector(&collector).build();
        collector.collect().await.unwrap();
        let after_collect = counting.calls().len();
        assert!(after_collect > 0);
        for _ in 0..20 {
            assert!(exporter.render().contains("resq_queue_length"));
        }
        assert_eq!(counting.calls().len(), after_collect, "a scrape made backend calls");
        // One collection is one overview read, whatever the number of scrapes.
        counting.reset();
        collector.collect().await.unwrap();
        assert_eq!(counting.calls().len(), after_collect);
    });
}

#[test]
fn a_backend_error_keeps_the_last_values_and_marks_them_stale() {
    each_backend("a_backend_error_keeps_the_last_values", |_kind, backend| async move {
        fill(&backend).await;
        let outage = Outage::new(Arc::clone(&backend));
        let collector = Collector::new(Admin::new(Arc::clone(&outage) as Arc<dyn Backend>));
        let exporter = Exporter::builder().collector(&collector).build();
        collector.collect().await.unwrap();
        // The store changes, then goes down.
        Queue::new(Arc::clone(&backend))
            .enqueue("alpha", "ok", (7,))
            .await
            .unwrap();
        outage.fail(BackendErrorKind::Transient, None);
        assert!(collector.collect().await.is_err());
        let text = exporter.render();
        assert_eq!(
            value(&text, "resq_queue_length", &[("queue", "alpha")]),
            Some(3.0),
            "the last values stay"
        );
        assert_eq!(value(&text, "resq_scheduler_leader", &[]), Some(1.0));
        assert_eq!(value(&text, "resq_metrics_collect_stale", &[]), Some(1.0));
        assert_eq!(value(&text, "resq_metrics_collect_errors_total", &[]), Some(1.0));
        assert!(collector.is_stale());
        assert_eq!(collector.errors(), 1);
        outage.recover();
        collector.collect().await.unwrap();
        let text = exporter.render();
        assert_eq!(value(&text, "resq_queue_length", &[("queue", "alpha")]), Some(4.0));
        assert_eq!(value(&text, "resq_metrics_collect_stale", &[]), Some(0.0));
        assert_eq!(value(&text, "resq_metrics_collect_errors_total", &[]), Some(1.0));
    });
}

#[test]
fn the_background_refresh_follows_the_store() {
    each_backend(
        "the_background_refresh_follows_the_store",
        |_kind, backend| async move {
            let collector = Collector::with_interval(Admin::new(Arc::clone(&backend)), Duration::from_millis(50));
            let exporter = Exporter::builder().collector(&collector).build();
            let stop = CancellationToken::new();
            let task = collector.spawn(stop.clone());
            Queue::new(Arc::clone(&backend))
                .enqueue("gamma", "ok", (1,))
                .await
                .unwrap();
            let start = std::time::Instant::now();
            while value(&exporter.render(), "resq_queue_length", &[("queue", "gamma")]) != Some(1.0) {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "the refresh did not see the job"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            stop.cancel();
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .unwrap()
                .unwrap();
        },
    );
}

#[test]
fn queue_wait_is_observed_for_real_jobs() {
    each_backend("queue_wait_is_observed_for_real_jobs", |_kind, backend| async move {
        let mut tasks = resq_core::Tasks::new();
        tasks
            .define(resq_core::TaskDef::from_fn(
                "ok",
                |(_n,): (u32,), _ctx: resq_core::JobContext| async move { Ok::<_, resq_core::TaskError>(()) },
            ))
            .unwrap();
        let tasks = Arc::new(tasks);
        let client = Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
        for n in 0..3 {
            client.enqueue("waits", "ok", (n,)).await.unwrap();
        }
        // Every job waits at least this long before a worker exists.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let metrics = resq_metrics::Metrics::new();
        let mut config = resq_core::WorkerConfig::for_queues(["waits"]);
        config.observer = Some(metrics.observer());
        let worker = resq_core::Worker::new(Arc::clone(&backend), tasks, config);
        let stop = CancellationToken::new();
        let token = stop.clone();
        let run = tokio::spawn(async move { worker.run_until(token).await });
        let start = std::time::Instant::now();
        while metrics.jobs("waits", "ok", resq_metrics::JobOutcome::Success) < 3 {
            assert!(start.elapsed() < Duration::from_secs(10), "the jobs did not run");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        run.await.unwrap().unwrap();
        let text = Exporter::builder().metrics(&metrics).build().render();
        assert_eq!(
            value(&text, "resq_job_queue_wait_seconds_count", &[("queue", "waits")]),
            Some(3.0),
            "{text}"
        );
        let sum = value(&text, "resq_job_queue_wait_seconds_sum", &[("queue", "waits")]).unwrap();
        assert!((0.6..60.0).contains(&sum), "3 waits of at least 200 ms: {sum}");
    });
}
