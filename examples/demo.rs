//! resq's demo on the in-process memory backend: normal, delayed and
//! periodic-style tasks, a failure, and an inspection summary. It mirrors the
//! tasks of ActionHero's documentation (sendWelcomeEmail, sayHello,
//! sayGoodbye) and ends by itself after a few seconds.
//!
//! Run it with `cargo run --example demo`.

use resq::{
    JobContext, PoolConfig, Queue, Scheduler, SchedulerConfig, SchedulerEvent, TaskError, Tasks, WorkerConfig,
    WorkerEvent, WorkerPool,
};
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Deserialize)]
struct Email {
    to: String,
}

/// Registers the demo's tasks. `sayHello` and `sayGoodbye` re-enqueue
/// themselves after each run, every 500 ms and 1000 ms: the periodic pattern
/// of ActionHero's `frequency`. Delayed jobs have Resque's one-second
/// granularity, so the 500 ms one runs about once a second.
fn tasks(queue: &Queue) -> resq::Result<Tasks> {
    let mut tasks = Tasks::new();
    tasks.register_fn("sendWelcomeEmail", |(email,): (Email,), _ctx: JobContext| async move {
        if !email.to.contains('@') {
            return Err(TaskError::new(format!(
                "cannot send to {:?}: not an email address",
                email.to
            )));
        }
        Ok(format!("welcome email sent to {}", email.to))
    })?;
    for (name, every_ms, words) in [("sayHello", 500_u64, "hello"), ("sayGoodbye", 1000, "goodbye")] {
        let q = queue.clone();
        tasks.register_fn(name, move |_: (), ctx: JobContext| {
            let q = q.clone();
            async move {
                q.enqueue_in(Duration::from_millis(every_ms), &ctx.queue, &ctx.job.class, ())
                    .await
                    .or_else(|e| if e.is_already_scheduled() { Ok(()) } else { Err(e) })?;
                Ok::<_, TaskError>(words)
            }
        })?;
    }
    Ok(tasks)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .init();
    let t0 = Instant::now();
    let stamp = move || format!("{:>5} ms", t0.elapsed().as_millis());

    let backend = resq::connect("memory://").await?;
    let queue = Queue::new(Arc::clone(&backend));
    let tasks = Arc::new(tasks(&queue)?);
    println!("resq demo — memory backend, tasks: {}", tasks.names().join(", "));

    // normal, delayed (in and at), periodic-style, and one that fails
    queue
        .enqueue(
            "default",
            "sendWelcomeEmail",
            (serde_json::json!({"to": "evan@example.com"}),),
        )
        .await?;
    queue
        .enqueue(
            "default",
            "sendWelcomeEmail",
            (serde_json::json!({"to": "not-an-email"}),),
        )
        .await?;
    queue
        .enqueue_in(
            Duration::from_millis(1200),
            "default",
            "sendWelcomeEmail",
            (serde_json::json!({"to": "later@example.com"}),),
        )
        .await?;
    let at = resq::time::now_ms() + 2000;
    queue
        .enqueue_at(
            at,
            "default",
            "sendWelcomeEmail",
            (serde_json::json!({"to": "at@example.com"}),),
        )
        .await?;
    queue.enqueue("default", "sayHello", ()).await?;
    queue.enqueue("default", "sayGoodbye", ()).await?;
    println!("{} enqueued 4 normal jobs and 2 delayed ones", stamp());

    let pool = WorkerPool::new(
        Arc::clone(&backend),
        Arc::clone(&tasks),
        PoolConfig {
            min: 1,
            max: 3,
            check_interval: Duration::from_millis(200),
            worker: WorkerConfig {
                queues: vec!["default".into()],
                poll_interval: Duration::from_millis(500),
                ..WorkerConfig::default()
            },
        },
    );
    let scheduler = Scheduler::new(
        Arc::clone(&backend),
        SchedulerConfig {
            poll_interval: Duration::from_millis(250),
            ..SchedulerConfig::default()
        },
    )?;

    let mut worker_events = pool.subscribe();
    let mut scheduler_events = scheduler.subscribe();
    let printer = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                ev = scheduler_events.recv() => match ev {
                    Ok(SchedulerEvent::Leader { scheduler }) => println!("{} [{scheduler}] scheduler leads", stamp()),
                    Ok(SchedulerEvent::TransferredJob { timestamp, queue, payload, .. }) =>
                        println!("{} scheduler promoted a job due at {timestamp} s to {queue}: {payload}", stamp()),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                },
                ev = worker_events.recv() => match ev {
                    Ok(WorkerEvent::Success { worker, job, result, duration, .. }) =>
                        println!("{} [{worker}] success {} {} → {result} ({duration:?})", stamp(), job.class, args_text(&job.args)),
                    Ok(WorkerEvent::Failure { worker, exception, error, .. }) =>
                        println!("{} [{worker}] failure {exception}: {error}", stamp()),
                    Ok(WorkerEvent::Start { worker }) => println!("{} [{worker}] worker started", stamp()),
                    Ok(WorkerEvent::End { worker }) => println!("{} [{worker}] worker stopped", stamp()),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                },
            }
        }
    });

    let stop = CancellationToken::new();
    let stopper = stop.clone();
    let summary_queue = queue.clone();
    let summary = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(3200)).await;
        let d = summary_queue.details().await;
        stopper.cancel();
        d
    });
    let (pool_result, scheduler_result) = tokio::join!(
        pool.run(stop.clone().cancelled_owned()),
        scheduler.run(stop.cancelled_owned())
    );
    pool_result?;
    scheduler_result?;
    let details = summary.await??;
    printer.abort();

    println!("\n== inspection summary (taken just before shutdown) ==");
    println!("queues:  {:?}", details.queues);
    println!("workers: {}", details.workers.len());
    println!("leader:  {}", details.leader.as_deref().unwrap_or("none"));
    println!(
        "stats:   {:?}",
        details
            .stats
            .iter()
            .filter(|(k, _)| !k.contains(':'))
            .collect::<Vec<_>>()
    );
    println!(
        "delayed: {:?} (ms) — the periodic tasks' next runs",
        queue.timestamps().await?
    );
    println!("failed:  {} entry", queue.failed_count().await?);
    for f in queue.failed(0, -1).await? {
        println!(
            "  - {} on {}: {} ({})",
            f.exception.as_deref().unwrap_or("?"),
            f.queue.as_deref().unwrap_or("?"),
            f.error.as_deref().unwrap_or("?"),
            f.payload.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

fn args_text(args: &[serde_json::Value]) -> String {
    serde_json::Value::Array(args.to_vec()).to_string()
}
