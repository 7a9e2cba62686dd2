//! resq's demo on the in-process memory backend: one task server node that
//! schedules and works, running normal, delayed, periodic and cron tasks, a
//! retried failure, and an inspection summary. It mirrors the tasks of
//! ActionHero's documentation (sendWelcomeEmail, sayHello, sayGoodbye) and
//! ends by itself after a few seconds.
//!
//! Run it with `cargo run --example demo`.

use resq::config::TaskServerConfig;
use resq::cron::CronSchedule;
use resq::plugins::Retry;
use resq::CancellationToken;
use resq::{JobContext, SchedulerEvent, TaskDef, TaskError, Tasks, WorkerEvent};
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Deserialize)]
struct Email {
    to: String,
}

/// The demo's tasks: `sendWelcomeEmail` (retried once on failure),
/// `sayHello` and `sayGoodbye` (periodic, every 1 s and 2 s: ActionHero's
/// `frequency`), and `tick` (cron, every 2 s, fired by the scheduler leader).
fn tasks() -> resq::Result<Tasks> {
    let mut tasks = Tasks::new();
    tasks.define(
        TaskDef::from_fn("sendWelcomeEmail", |(email,): (Email,), _ctx: JobContext| async move {
            if !email.to.contains('@') {
                return Err(TaskError::new(format!(
                    "cannot send to {:?}: not an email address",
                    email.to
                )));
            }
            Ok(format!("welcome email sent to {}", email.to))
        })
        .description("sends a welcome email")
        .plugin(Retry::new().retry_limit(2).retry_delay(Duration::from_millis(300))),
    )?;
    for (name, every_ms, words) in [("sayHello", 1000_u64, "hello"), ("sayGoodbye", 2000, "goodbye")] {
        tasks.define(
            TaskDef::from_fn(name, move |_: (serde_json::Value,), _ctx: JobContext| async move {
                Ok::<_, TaskError>(words)
            })
            .frequency(Duration::from_millis(every_ms)),
        )?;
    }
    tasks.define(
        TaskDef::from_fn("tick", |(inputs,): (serde_json::Value,), _ctx: JobContext| async move {
            Ok::<_, TaskError>(format!("cron fire due at {}", inputs["cron_at"]))
        })
        .cron(CronSchedule::parse("*/2 * * * * *")?),
    )?;
    Ok(tasks)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error,resq::tasks=off")),
        )
        .init();
    let t0 = Instant::now();
    let stamp = move || format!("{:>5} ms", t0.elapsed().as_millis());

    let tasks = Arc::new(tasks()?);
    // One node that schedules and works: the shape of ActionHero's
    // config/tasks.js with `scheduler: true` and task processors.
    let config = TaskServerConfig {
        backend: "memory://".into(),
        scheduler: true,
        queues: vec!["default".into()],
        min_task_processors: 1,
        max_task_processors: 3,
        timeout_ms: 250,
        check_timeout_ms: 200,
        ..TaskServerConfig::default()
    };
    let server = resq::task_server(config, Arc::clone(&tasks)).await?;
    let queue = server.queue().clone();
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
    println!(
        "{} enqueued 2 normal jobs and 2 delayed ones; the periodic tasks start at boot",
        stamp()
    );

    let (Some(pool), Some(scheduler)) = (server.pool(), server.scheduler()) else {
        return Err("the demo node schedules and works".into());
    };
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
                    Ok(SchedulerEvent::CronFired { task, at_ms, .. }) =>
                        println!("{} scheduler fired cron task {task} (due at {at_ms} ms)", stamp()),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                },
                ev = worker_events.recv() => match ev {
                    Ok(WorkerEvent::Success { worker, job, result, duration, .. }) =>
                        println!("{} [{worker}] success {} {} → {result} ({duration:?})", stamp(), job.class, args_text(&job.args)),
                    Ok(WorkerEvent::Failure { worker, job, exception, error, .. }) => {
                        let class = job.as_ref().map_or("(undecodable)", |j| j.class.as_str());
                        println!("{} [{worker}] failure {class} {exception}: {error}", stamp())
                    }
                    Ok(WorkerEvent::ReEnqueue { worker, job, delay, remaining_attempts, error, .. }) =>
                        println!("{} [{worker}] {} failed ({error}); Retry runs it again in {delay:?}, {remaining_attempts} attempt(s) left", stamp(), job.class),
                    Ok(WorkerEvent::Start { worker, .. }) => println!("{} [{worker}] worker started", stamp()),
                    Ok(WorkerEvent::End { worker, .. }) => println!("{} [{worker}] worker stopped", stamp()),
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
        tokio::time::sleep(Duration::from_millis(4200)).await;
        let d = summary_queue.details().await;
        stopper.cancel();
        d
    });
    server.run_until(stop).await?;
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
