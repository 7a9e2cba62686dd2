//! Every job runs in one `resq.job` span with its queue, class and attempt:
//! a layer that records the spans it sees counts one per job, in single-
//! and multi-slot workers.

use resq::plugins::Retry;
use resq::{JobContext, TaskDef, TaskError, Tasks, Worker, WorkerConfig, WorkerEvent};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

type Fields = BTreeMap<String, String>;

/// The closed `resq.job` spans, each as its fields.
fn closed() -> &'static Mutex<Vec<Fields>> {
    static CLOSED: OnceLock<Mutex<Vec<Fields>>> = OnceLock::new();
    CLOSED.get_or_init(|| Mutex::new(Vec::new()))
}

struct Open(Fields);

struct Text<'a>(&'a mut Fields);

impl Visit for Text<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// Records every `resq.job` span's fields when it closes.
struct JobSpans;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for JobSpans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "resq.job" {
            return;
        }
        let mut fields = Fields::new();
        attrs.record(&mut Text(&mut fields));
        ctx.span(id).expect("new span").extensions_mut().insert(Open(fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("recorded span");
        let mut extensions = span.extensions_mut();
        if let Some(open) = extensions.get_mut::<Open>() {
            values.record(&mut Text(&mut open.0));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let span = ctx.span(&id).expect("closed span");
        let open = span.extensions_mut().remove::<Open>();
        if let Some(open) = open {
            closed().lock().unwrap().push(open.0);
        }
    }
}

fn install() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(JobSpans))
            .expect("the only global subscriber of this test binary");
    });
}

/// The spans closed for jobs of `queue`.
fn spans_of(queue: &str) -> Vec<Fields> {
    closed()
        .lock()
        .unwrap()
        .iter()
        .filter(|f| f.get("queue").map(String::as_str) == Some(queue))
        .cloned()
        .collect()
}

fn tasks() -> Arc<Tasks> {
    let mut tasks = Tasks::new();
    tasks
        .define(TaskDef::from_fn(
            "double",
            |(n,): (u32,), _ctx: JobContext| async move { Ok::<_, TaskError>(n * 2) },
        ))
        .unwrap();
    tasks
        .define(
            TaskDef::from_fn("charge", |(_id,): (u32,), _ctx: JobContext| async move {
                Err::<(), _>(TaskError::new("card declined"))
            })
            .plugin(Retry::new().retry_limit(5).retry_delay(Duration::from_secs(600))),
        )
        .unwrap();
    Arc::new(tasks)
}

/// Runs a worker on `queue` until `jobs` jobs ended (success or failure).
async fn work(queue: &str, concurrency: usize, jobs: usize, enqueue: &[(&str, u32)]) {
    let backend = resq::connect("memory://").await.unwrap();
    let tasks = tasks();
    let client = resq::Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
    for (class, arg) in enqueue {
        client.enqueue(queue, class, (*arg,)).await.unwrap();
    }
    let mut config = WorkerConfig::for_queues([queue]);
    config.concurrency = concurrency;
    let worker = Worker::new(backend, tasks, config);
    let mut events = worker.subscribe();
    let stop = resq::CancellationToken::new();
    let run = {
        let stop = stop.clone();
        async move { worker.run_until(stop).await }
    };
    let wait = async {
        let mut ended = 0;
        while ended < jobs {
            match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                Ok(Ok(WorkerEvent::Success { .. } | WorkerEvent::Failure { .. })) => ended += 1,
                Ok(Ok(_)) => {}
                other => panic!("waiting for {jobs} jobs, {ended} ended: {other:?}"),
            }
        }
        stop.cancel();
    };
    let (ran, ()) = tokio::join!(run, wait);
    ran.unwrap();
}

fn field<'a>(fields: &'a Fields, name: &str) -> &'a str {
    fields.get(name).map(String::as_str).unwrap_or("<missing>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_span_per_job_with_queue_class_and_attempt() {
    install();
    let queue = "spans-single";
    // 3 successes, then the same failing job twice: attempts 1 and 2.
    work(
        queue,
        1,
        5,
        &[
            ("double", 1),
            ("double", 2),
            ("double", 3),
            ("charge", 9),
            ("charge", 9),
        ],
    )
    .await;
    let spans = spans_of(queue);
    assert_eq!(spans.len(), 5, "one span per job: {spans:?}");
    let doubles: Vec<&Fields> = spans.iter().filter(|f| field(f, "class") == "double").collect();
    assert_eq!(doubles.len(), 3, "{spans:?}");
    assert!(doubles.iter().all(|f| field(f, "attempt") == "1"), "{doubles:?}");
    let mut attempts: Vec<&str> = spans
        .iter()
        .filter(|f| field(f, "class") == "charge")
        .map(|f| field(f, "attempt"))
        .collect();
    attempts.sort();
    assert_eq!(attempts, ["1", "2"], "{spans:?}");
    assert!(spans.iter().all(|f| field(f, "worker") != "<missing>"), "{spans:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_slot_workers_open_one_span_per_job() {
    install();
    let queue = "spans-multi";
    let jobs: Vec<(&str, u32)> = (0..12).map(|n| ("double", n)).collect();
    work(queue, 4, jobs.len(), &jobs).await;
    let spans = spans_of(queue);
    assert_eq!(spans.len(), jobs.len(), "one span per job: {spans:?}");
    assert!(spans
        .iter()
        .all(|f| field(f, "class") == "double" && field(f, "attempt") == "1"));
    // Slot names `<worker>.<n>`: at least one slot ran a job.
    assert!(spans.iter().all(|f| field(f, "worker").contains('.')), "{spans:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_payload_still_has_one_span() {
    install();
    let queue = "spans-bad";
    let backend = resq::connect("memory://").await.unwrap();
    backend.push(queue, "{not json").await.unwrap();
    let worker = Worker::new(Arc::clone(&backend), tasks(), WorkerConfig::for_queues([queue]));
    let mut events = worker.subscribe();
    let stop = resq::CancellationToken::new();
    let run = {
        let stop = stop.clone();
        async move { worker.run_until(stop).await }
    };
    let wait = async {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                Ok(Ok(WorkerEvent::Failure { .. })) => break,
                Ok(Ok(_)) => {}
                other => panic!("no failure: {other:?}"),
            }
        }
        stop.cancel();
    };
    let (ran, ()) = tokio::join!(run, wait);
    ran.unwrap();
    let spans = spans_of(queue);
    assert_eq!(spans.len(), 1, "{spans:?}");
    // The class is unknown: the field stays empty.
    assert_eq!(field(&spans[0], "class"), "<missing>");
    assert_eq!(field(&spans[0], "attempt"), "1");
}
