//! Every job runs inside a `tracing` span named `resq.job` with the fields
//! `queue`, `class`, `attempt` and `worker`. A subscriber sees one span per
//! job with no code in the tasks: an OpenTelemetry layer
//! (`tracing-opentelemetry`) exports each as a trace span; this example
//! installs a small layer of its own that prints each `resq.job` span when
//! it closes, with its fields and how long it was open.
//!
//! It runs five jobs on the memory backend: three that succeed, and one
//! task that fails under the Retry plugin, run twice (the second run is
//! attempt 2: the plugin records the attempt number of a failed attempt on
//! the span).
//!
//! Run it with `cargo run --example tracing_spans`.

use resq::plugins::Retry;
use resq::{JobContext, TaskDef, TaskError, Tasks, Worker, WorkerConfig, WorkerEvent};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The fields of one span and when it opened.
struct Open {
    fields: BTreeMap<String, String>,
    since: Instant,
}

/// Collects a span's fields as text.
struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// Prints every `resq.job` span when it closes.
struct PrintJobSpans;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for PrintJobSpans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "resq.job" {
            return;
        }
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Open {
                fields,
                since: Instant::now(),
            });
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(open) = span.extensions_mut().get_mut::<Open>() {
                values.record(&mut Fields(&mut open.fields));
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(open) = span.extensions_mut().remove::<Open>() else {
            return;
        };
        let fields: Vec<String> = open.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "span {} closed after {:?}: {}",
            span.name(),
            open.since.elapsed(),
            fields.join(" ")
        );
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(PrintJobSpans))?;

    let mut tasks = Tasks::new();
    tasks.define(TaskDef::from_fn(
        "resize",
        |(n,): (u32,), _ctx: JobContext| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<_, TaskError>(n * 2)
        },
    ))?;
    tasks.define(
        TaskDef::from_fn("charge", |(_id,): (u32,), _ctx: JobContext| async move {
            Err::<(), _>(TaskError::new("card declined"))
        })
        .plugin(Retry::new().retry_limit(3).retry_delay(Duration::from_secs(60))),
    )?;
    let backend = resq::connect("memory://").await?;
    let tasks = Arc::new(tasks);
    let queue = resq::Queue::with_tasks(Arc::clone(&backend), Arc::clone(&tasks));
    for n in 1..=3u32 {
        queue.enqueue("images", "resize", (n,)).await?;
    }
    // The same job twice: the second run is the Retry plugin's attempt 2
    // (its own retry waits a minute in the delayed set; this one is now).
    queue.enqueue("billing", "charge", (7u32,)).await?;
    queue.enqueue("billing", "charge", (7u32,)).await?;

    let worker = Worker::new(backend, tasks, WorkerConfig::for_queues(["images", "billing"]));
    let mut events = worker.subscribe();
    let stop = resq::CancellationToken::new();
    let run = {
        let stop = stop.clone();
        async move { worker.run_until(stop).await }
    };
    let wait = async {
        let mut ended = 0;
        while ended < 5 {
            match events.recv().await {
                Ok(WorkerEvent::Success { .. } | WorkerEvent::Failure { .. }) => ended += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        stop.cancel();
    };
    let (ran, ()) = tokio::join!(run, wait);
    ran?;
    Ok(())
}
