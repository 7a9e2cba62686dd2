//! Per-process metrics from the events of real workers running real tasks
//! and plugins on the memory backend.

mod common;

use async_trait::async_trait;
use common::{parse, value, wait_for};
use resq_core::plugin::{PerformContext, Plugin};
use resq_core::plugins::Retry;
use resq_core::{
    Backend, CancellationToken, Job, JobContext, Queue, TaskDef, TaskError, Tasks, Worker, WorkerConfig, WorkerEvent,
};
use resq_metrics::{Exporter, JobOutcome, Metrics};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

const WAIT: Duration = Duration::from_secs(10);

/// Drops every job before it runs, as a lock plugin does for a held lock.
struct Veto;

#[async_trait]
impl Plugin for Veto {
    fn name(&self) -> &str {
        "Veto"
    }

    async fn before_perform(&self, _ctx: &mut PerformContext<'_>) -> resq_core::Result<bool> {
        Ok(false)
    }
}

fn tasks(gate: Arc<Semaphore>) -> Arc<Tasks> {
    let mut tasks = Tasks::new();
    tasks
        .define(TaskDef::from_fn("ok", |(_n,): (u32,), _ctx: JobContext| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, TaskError>(())
        }))
        .unwrap();
    tasks
        .define(TaskDef::from_fn("bad", |(_n,): (u32,), _ctx: JobContext| async move {
            Err::<(), _>(TaskError::new("always fails"))
        }))
        .unwrap();
    tasks
        .define(
            TaskDef::from_fn("flaky", |(_n,): (u32,), _ctx: JobContext| async move {
                Err::<(), _>(TaskError::new("fails, retried"))
            })
            .plugin(Retry::new().retry_limit(3).retry_delay(Duration::from_secs(3600))),
        )
        .unwrap();
    tasks
        .define(
            TaskDef::from_fn("vetoed", |(_n,): (u32,), _ctx: JobContext| async move {
                Ok::<_, TaskError>(())
            })
            .plugin(Veto),
        )
        .unwrap();
    tasks
        .define(
            TaskDef::from_fn("rated", |(_n,): (u32,), _ctx: JobContext| async move {
                Ok::<_, TaskError>(())
            })
            .rate_limit(1, Duration::from_secs(3600)),
        )
        .unwrap();
    tasks
        .define(TaskDef::from_fn("gated", move |(_n,): (u32,), _ctx: JobContext| {
            let gate = Arc::clone(&gate);
            async move {
                let _permit = gate.acquire().await.map_err(|e| TaskError::new(e.to_string()))?;
                Ok::<_, TaskError>(())
            }
        }))
        .unwrap();
    Arc::new(tasks)
}

struct Node {
    backend: Arc<dyn Backend>,
    client: Queue,
    stop: CancellationToken,
    run: tokio::task::JoinHandle<resq_core::Result<()>>,
}

impl Node {
    async fn shutdown(self) {
        self.stop.cancel();
        self.run.await.unwrap().unwrap();
    }
}

/// How the metrics hear of the worker's jobs.
#[derive(Clone, Copy, Debug)]
enum Feed {
    /// `Metrics::observe` on the worker's event channel.
    Events,
    /// `Metrics::observer` in the worker's config.
    Observer,
}

const FEEDS: [Feed; 2] = [Feed::Events, Feed::Observer];

/// A worker on `queue` with `concurrency` slots, observed by `metrics`.
fn start(metrics: &Metrics, feed: Feed, queue: &str, concurrency: usize, gate: Arc<Semaphore>) -> Node {
    let backend = Arc::new(resq_memory::MemoryBackend::new());
    start_on(backend, metrics, feed, queue, concurrency, gate)
}

/// [`start`] on `backend`.
fn start_on(
    backend: Arc<dyn Backend>,
    metrics: &Metrics,
    feed: Feed,
    queue: &str,
    concurrency: usize,
    gate: Arc<Semaphore>,
) -> Node {
    let tasks = tasks(gate);
    let client = Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
    let mut config = WorkerConfig::for_queues([queue]);
    config.concurrency = concurrency;
    config.poll_interval = Duration::from_millis(20);
    if let Feed::Observer = feed {
        config.observer = Some(metrics.observer());
    }
    let worker = Worker::new(Arc::clone(&backend), tasks, config);
    if let Feed::Events = feed {
        metrics.observe(worker.subscribe());
    }
    let stop = CancellationToken::new();
    let token = stop.clone();
    let run = tokio::spawn(async move { worker.run_until(token).await });
    Node {
        backend,
        client,
        stop,
        run,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_each_outcome_from_real_jobs() {
    for feed in FEEDS {
        counts_each_outcome(feed).await;
    }
}

async fn counts_each_outcome(feed: Feed) {
    let metrics = Metrics::new();
    let node = start(&metrics, feed, "work", 1, Arc::new(Semaphore::new(100)));
    for n in 0..3 {
        node.client.enqueue("work", "ok", (n,)).await.unwrap();
    }
    node.client.enqueue("work", "bad", (1,)).await.unwrap();
    node.client.enqueue("work", "bad", (2,)).await.unwrap();
    node.client.enqueue("work", "flaky", (1,)).await.unwrap();
    node.client.enqueue("work", "vetoed", (1,)).await.unwrap();
    node.client.enqueue("work", "rated", (1,)).await.unwrap();
    node.client.enqueue("work", "rated", (2,)).await.unwrap();
    wait_for(WAIT, &format!("every outcome ({feed:?})"), || {
        metrics.jobs("work", "ok", JobOutcome::Success) == 3
            && metrics.jobs("work", "bad", JobOutcome::Failure) == 2
            && metrics.jobs("work", "flaky", JobOutcome::Retried) == 1
            && metrics.jobs("work", "vetoed", JobOutcome::Skipped) == 1
            && metrics.jobs("work", "rated", JobOutcome::Success) == 1
            && metrics.jobs("work", "rated", JobOutcome::Throttled) == 1
    })
    .await;
    // A retried attempt is not also a success, nor a failure.
    assert_eq!(metrics.jobs("work", "flaky", JobOutcome::Success), 0);
    assert_eq!(metrics.jobs("work", "flaky", JobOutcome::Failure), 0);
    assert_eq!(metrics.jobs("work", "vetoed", JobOutcome::Success), 0);
    // The store agrees: two failed entries, the retry waits as a delayed job.
    assert_eq!(node.backend.failed_count().await.unwrap(), 2);

    let text = Exporter::builder().metrics(&metrics).build().render();
    let jobs = |class: &str, outcome: &str| {
        value(
            &text,
            "resq_jobs_total",
            &[("queue", "work"), ("class", class), ("outcome", outcome)],
        )
    };
    assert_eq!(jobs("ok", "success"), Some(3.0));
    assert_eq!(jobs("bad", "failure"), Some(2.0));
    assert_eq!(jobs("flaky", "retried"), Some(1.0));
    assert_eq!(jobs("vetoed", "skipped"), Some(1.0));
    // The second `rated` start in the hour was throttled back to the schedule.
    assert_eq!(jobs("rated", "throttled"), Some(1.0));
    assert_eq!(jobs("rated", "success"), Some(1.0));
    // Durations: every job that ran (not the skipped one); `ok` sleeps 20 ms.
    let count = |class: &str| {
        value(
            &text,
            "resq_job_duration_seconds_count",
            &[("queue", "work"), ("class", class)],
        )
    };
    assert_eq!(count("ok"), Some(3.0));
    assert_eq!(count("bad"), Some(2.0));
    assert_eq!(count("flaky"), Some(1.0));
    assert_eq!(count("vetoed"), None);
    assert_eq!(count("rated"), Some(1.0), "a throttled job is not timed");
    let ok_sum = value(
        &text,
        "resq_job_duration_seconds_sum",
        &[("queue", "work"), ("class", "ok")],
    )
    .unwrap();
    assert!(ok_sum >= 0.06, "3 jobs of at least 20 ms: {ok_sum}");
    let under_5ms = value(
        &text,
        "resq_job_duration_seconds_bucket",
        &[("queue", "work"), ("class", "ok"), ("le", "0.005")],
    );
    assert_eq!(under_5ms, Some(0.0), "no 20 ms job is under 5 ms");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_slots_follow_busy_and_idle_slots() {
    for feed in FEEDS {
        worker_slots_follow(feed).await;
    }
}

async fn worker_slots_follow(feed: Feed) {
    let metrics = Metrics::new();
    assert_eq!(metrics.slots(), (0, 0));
    let gate = Arc::new(Semaphore::new(0));
    // Both jobs are queued before the worker starts, so its first claim
    // takes both (a multi-slot worker that claimed some jobs waits for one
    // to finish before it claims again).
    let backend: Arc<dyn Backend> = Arc::new(resq_memory::MemoryBackend::new());
    let client = Queue::new(Arc::clone(&backend));
    client.enqueue("slots", "gated", (1,)).await.unwrap();
    client.enqueue("slots", "gated", (2,)).await.unwrap();
    let node = start_on(backend, &metrics, feed, "slots", 3, Arc::clone(&gate));
    wait_for(WAIT, "2 busy slots", || metrics.slots() == (2, 1)).await;
    let text = Exporter::builder().metrics(&metrics).build().render();
    assert_eq!(value(&text, "resq_worker_slots", &[("state", "busy")]), Some(2.0));
    assert_eq!(value(&text, "resq_worker_slots", &[("state", "idle")]), Some(1.0));
    gate.add_permits(2);
    wait_for(WAIT, "the slots idle again", || metrics.slots() == (0, 3)).await;
    node.shutdown().await;
    wait_for(WAIT, "no slot after the worker ended", || metrics.slots() == (0, 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_wait_is_observed_only_when_the_enqueue_time_is_known() {
    let metrics = Metrics::new();
    let job = Arc::new(Job::new("q", "c", Vec::new()));
    let now = resq_core::time::now_ms();
    for (n, enqueued_at_ms) in [Some(now - 2_000), None, Some(now - 20_000)].into_iter().enumerate() {
        metrics.record(&WorkerEvent::Job {
            worker: format!("w{n}"),
            queue: "q".into(),
            job: Arc::clone(&job),
            enqueued_at_ms,
        });
    }
    let text = Exporter::builder().metrics(&metrics).build().render();
    assert_eq!(
        value(&text, "resq_job_queue_wait_seconds_count", &[("queue", "q")]),
        Some(2.0)
    );
    let sum = value(&text, "resq_job_queue_wait_seconds_sum", &[("queue", "q")]).unwrap();
    assert!((22.0..23.0).contains(&sum), "2 s + 20 s: {sum}");
    let within_10s = value(
        &text,
        "resq_job_queue_wait_seconds_bucket",
        &[("queue", "q"), ("le", "10.0")],
    );
    assert_eq!(within_10s, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_subscriber_counts_the_events_it_missed() {
    let metrics = Metrics::new();
    let (tx, rx) = tokio::sync::broadcast::channel(4);
    let job = Arc::new(Job::new("q", "c", Vec::new()));
    // 10 successes into a channel of 4, before the metrics read any: 6 are lost.
    for _ in 0..10 {
        tx.send(WorkerEvent::Success {
            worker: "w".into(),
            queue: "q".into(),
            job: Arc::clone(&job),
            result: serde_json::Value::Null,
            duration: Duration::from_millis(1),
        })
        .unwrap();
    }
    let task = metrics.observe(rx);
    drop(tx);
    task.await.unwrap();
    assert_eq!(metrics.events_dropped(), 6);
    assert_eq!(metrics.jobs("q", "c", JobOutcome::Success), 4);
    let text = Exporter::builder().metrics(&metrics).build().render();
    assert_eq!(value(&text, "resq_metrics_events_dropped_total", &[]), Some(6.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_label_carries_a_worker_name_or_job_arguments() {
    let metrics = Metrics::new();
    let node = start(&metrics, Feed::Events, "card", 2, Arc::new(Semaphore::new(100)));
    node.client.enqueue("card", "ok", (424242,)).await.unwrap();
    node.client.enqueue("card", "bad", (515151,)).await.unwrap();
    node.client.enqueue("card", "flaky", (616161,)).await.unwrap();
    wait_for(WAIT, "3 jobs", || {
        metrics.jobs("card", "ok", JobOutcome::Success) == 1
            && metrics.jobs("card", "bad", JobOutcome::Failure) == 1
            && metrics.jobs("card", "flaky", JobOutcome::Retried) == 1
    })
    .await;
    let text = Exporter::builder().metrics(&metrics).build().render();
    // Worker names are `host:pid+n`.
    let worker_name = format!("{}:{}", resq_core::worker::hostname(), std::process::id());
    let samples = parse(&text);
    assert!(!samples.is_empty());
    for sample in &samples {
        for (key, v) in &sample.labels {
            assert!(
                ["queue", "class", "outcome", "state", "le"].contains(&key.as_str()),
                "unexpected label {key} in {sample:?}"
            );
            for arg in ["424242", "515151", "616161"] {
                assert!(!v.contains(arg), "a job argument in a label: {sample:?}");
            }
            assert!(!v.contains(&worker_name), "a worker name in a label: {sample:?}");
        }
    }
    node.shutdown().await;
}
