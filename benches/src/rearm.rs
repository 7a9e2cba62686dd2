//! The re-arm measurement: how long one periodic-task re-arm
//! ([`resq_core::Queue::enqueue_recurrent_job`]: remove every queued and
//! delayed instance by class, schedule the next) takes with many other jobs
//! waiting on the task's queue. The re-arm works where the jobs are, so its
//! memory does not grow with the queue; this shows what it costs in time.

use crate::measure::fresh;
use resq_core::task::{JobContext, TaskDef, TaskError, Tasks};
use resq_core::{Backend, Queue, QueuedJob};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The periodic task re-armed.
const TASK: &str = "rearmBench";
/// Its queue, which also holds the other jobs.
const QUEUE: &str = "periodic";
/// Jobs per `push_batch` while filling the queue.
const FILL_BATCH: usize = 10_000;
/// Re-arms timed per figure (the median is reported).
const RUNS: usize = 3;

/// One figure: a backend, how many jobs were queued, one re-arm's time.
#[derive(Clone, Debug)]
pub struct Rearm {
    /// The backend's URL.
    pub url: String,
    /// Other jobs queued on the task's queue.
    pub queued: usize,
    /// The median time of one re-arm.
    pub median: Duration,
    /// How long filling the queue took (context, not a figure).
    pub fill: Duration,
}

fn tasks() -> Result<Arc<Tasks>, String> {
    let mut tasks = Tasks::new();
    tasks
        .define(
            TaskDef::from_fn(TASK, |_: (serde_json::Value,), _ctx: JobContext| async {
                Ok::<_, TaskError>(())
            })
            .queue(QUEUE)
            .frequency(Duration::from_secs(3_600)),
        )
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(tasks))
}

async fn fill(backend: &Arc<dyn Backend>, queued: usize) -> Result<(), String> {
    let mut done = 0;
    while done < queued {
        let n = FILL_BATCH.min(queued - done);
        let batch: Vec<QueuedJob> = (done..done + n)
            .map(|i| QueuedJob {
                queue: QUEUE.to_owned(),
                payload: resq_core::job::encode_payload(QUEUE, "otherTask", &[serde_json::json!(i)]),
            })
            .collect();
        backend.push_batch(&batch).await.map_err(|e| e.to_string())?;
        done += n;
    }
    Ok(())
}

/// Times one re-arm of a periodic task on `url` with `queued` other jobs
/// on its queue (plus one stray copy of the task queued and one delayed
/// per run), checking that the other jobs stay and one instance is delayed.
pub async fn measure(url: &str, queued: usize) -> Result<Rearm, String> {
    let f = fresh(url).await?;
    let result = run(&f.backend, url, queued).await;
    f.done().await;
    result
}

async fn run(backend: &Arc<dyn Backend>, url: &str, queued: usize) -> Result<Rearm, String> {
    let start = Instant::now();
    fill(backend, queued).await?;
    let fill_time = start.elapsed();
    let queue = Queue::with_tasks(Arc::clone(backend), tasks()?);
    let stray = resq_core::job::encode_payload(QUEUE, TASK, &[serde_json::json!({"stray": true})]);
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        backend.push(QUEUE, &stray).await.map_err(|e| e.to_string())?;
        let t = Instant::now();
        queue.enqueue_recurrent_job(TASK).await.map_err(|e| e.to_string())?;
        times.push(t.elapsed());
        let len = backend.queue_len(QUEUE).await.map_err(|e| e.to_string())?;
        if len != queued as u64 {
            return Err(format!("after a re-arm {len} jobs are queued, expected {queued}"));
        }
    }
    let instances = queue
        .all_delayed()
        .await
        .map_err(|e| e.to_string())?
        .values()
        .flatten()
        .filter(|d| d.job().is_some_and(|j| j.class == TASK))
        .count();
    if instances != 1 {
        return Err(format!("{instances} delayed instances after the re-arms, expected 1"));
    }
    times.sort();
    let median = times.get(RUNS / 2).copied().ok_or("no re-arm was timed")?;
    Ok(Rearm {
        url: url.to_owned(),
        queued,
        median,
        fill: fill_time,
    })
}

/// The figures as a Markdown table: one row per backend, one column per
/// queue size.
pub fn table(figures: &[Rearm]) -> String {
    let mut sizes: Vec<usize> = figures.iter().map(|f| f.queued).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut urls: Vec<&str> = Vec::new();
    for f in figures {
        if !urls.contains(&f.url.as_str()) {
            urls.push(&f.url);
        }
    }
    let mut out = String::from("| backend |");
    for s in &sizes {
        out.push_str(&format!(" one re-arm, {} queued |", group(*s)));
    }
    out.push_str("\n|---|");
    for _ in &sizes {
        out.push_str("---:|");
    }
    for url in urls {
        out.push_str(&format!("\n| `{url}` |"));
        for s in &sizes {
            match figures.iter().find(|f| f.url == url && f.queued == *s) {
                Some(f) => out.push_str(&format!(" {} |", ms(f.median))),
                None => out.push_str(" — |"),
            }
        }
    }
    out.push('\n');
    out
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// `1000000` as `1,000,000`.
fn group(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
