//! Job timeouts and cancellation (issue #14), timed in process on each backend:
//!
//! - **timeout lateness**: jobs whose task hangs past a timeout of
//!   `limit`; for each, the time from its deadline (the moment its task
//!   started, plus `limit`) to the moment the worker reports its failure
//!   (the [`JobObserver`] call made where the `failure` event is emitted).
//! - **cancel latency**: one running job at a time, cancelled through the
//!   backend ([`Queue::cancel_running`]: a cancel mark plus a signal on the
//!   wake-up channel, Redis pub/sub or PostgreSQL `NOTIFY`, received by
//!   the worker's own subscriber); the time from the cancel call returning
//!   to the job's future being dropped (a drop that lands before the call
//!   returns, the signal having overtaken the reply, counts as 0), and
//!   the time from the call's start (its working-on read and the request
//!   included).

use crate::measure::{fresh, Latency};
use resq_core::event::{JobEnd, JobObserver, JobOutcome};
use resq_core::task::{JobContext, TaskDef, TaskError, Tasks};
use resq_core::{Backend, Queue, QueuedJob, Worker, WorkerConfig, WorkerId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The queue the flow runs use.
const QUEUE: &str = "flow";
/// How long one step of a cancel sample may take before the harness
/// gives up (a lost cancel is still found within a ping interval, 5 s).
const PHASE_LIMIT: Duration = Duration::from_secs(20);
/// How long a whole run may take before the harness gives up.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// When each slot's current task started, and the lateness samples.
#[derive(Debug, Default)]
struct Lateness {
    started: Mutex<HashMap<String, Instant>>,
    samples: Mutex<Vec<Duration>>,
    limit: Duration,
    done: Notify,
}

impl JobObserver for Lateness {
    fn job_finished(&self, end: &JobEnd<'_>) {
        let now = Instant::now();
        if end.outcome != JobOutcome::Failure {
            return;
        }
        let started = self.started.lock().ok().and_then(|mut m| m.remove(end.worker));
        if let (Some(started), Ok(mut samples)) = (started, self.samples.lock()) {
            samples.push(now.saturating_duration_since(started + self.limit));
            self.done.notify_one();
        }
    }
}

/// Timeout lateness on `url`: `jobs` hanging jobs with a `limit` timeout,
/// worked by one worker with `slots` slots.
pub async fn timeout_lateness(url: &str, jobs: usize, limit: Duration, slots: usize) -> Result<Latency, String> {
    let f = fresh(url).await?;
    let result = tokio::time::timeout(RUN_LIMIT, lateness_run(&f.backend, jobs, limit, slots))
        .await
        .map_err(|_| format!("timeout lateness on {url} did not finish within {RUN_LIMIT:?}"))
        .and_then(|r| r);
    f.done().await;
    result
}

async fn lateness_run(
    backend: &Arc<dyn Backend>,
    jobs: usize,
    limit: Duration,
    slots: usize,
) -> Result<Latency, String> {
    let observer = Arc::new(Lateness {
        limit,
        ..Lateness::default()
    });
    let seen = Arc::clone(&observer);
    let mut tasks = Tasks::new();
    tasks
        .define(
            TaskDef::from_fn("hang", move |_: (usize,), ctx: JobContext| {
                if let Ok(mut m) = seen.started.lock() {
                    m.insert(ctx.worker.clone(), Instant::now());
                }
                async move {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok::<_, TaskError>(())
                }
            })
            .timeout(limit),
        )
        .map_err(|e| e.to_string())?;
    let batch: Vec<QueuedJob> = (0..jobs)
        .map(|i| QueuedJob {
            queue: QUEUE.to_owned(),
            payload: resq_core::job::encode_payload(QUEUE, "hang", &[serde_json::json!(i)]),
        })
        .collect();
    backend.push_batch(&batch).await.map_err(|e| e.to_string())?;
    let config = WorkerConfig {
        poll_interval: Duration::from_millis(100),
        concurrency: slots,
        observer: Some(observer.clone() as Arc<dyn JobObserver>),
        ..WorkerConfig::for_queues([QUEUE])
    };
    let worker = Worker::new(Arc::clone(backend), Arc::new(tasks), config);
    let stop = CancellationToken::new();
    let token = stop.clone();
    let running = tokio::spawn(async move { worker.run_until(token).await });
    loop {
        let n = observer.samples.lock().map(|s| s.len()).unwrap_or(0);
        if n >= jobs {
            break;
        }
        observer.done.notified().await;
    }
    stop.cancel();
    let _ = running.await;
    let samples = observer.samples.lock().map(|s| s.clone()).unwrap_or_default();
    Ok(Latency::of(samples))
}

/// The one running job of the cancel run: started, and when it was dropped.
#[derive(Debug, Default)]
struct Probe {
    started: Notify,
    dropped: Mutex<Option<Instant>>,
    dropped_now: Notify,
}

/// Records its drop time in the probe.
struct DropStamp(Arc<Probe>);

impl Drop for DropStamp {
    fn drop(&mut self) {
        if let Ok(mut d) = self.0.dropped.lock() {
            *d = Some(Instant::now());
        }
        self.0.dropped_now.notify_one();
    }
}

/// Cancel latency on `url`: `samples` running jobs cancelled one at a
/// time; from the call's return, and from its start.
pub async fn cancel_latency(url: &str, samples: usize) -> Result<(Latency, Latency), String> {
    let f = fresh(url).await?;
    let result = tokio::time::timeout(RUN_LIMIT, cancel_run(&f.backend, samples))
        .await
        .map_err(|_| format!("cancel latency on {url} did not finish within {RUN_LIMIT:?}"))
        .and_then(|r| r);
    f.done().await;
    result
}

async fn cancel_run(backend: &Arc<dyn Backend>, samples: usize) -> Result<(Latency, Latency), String> {
    let probe = Arc::new(Probe::default());
    let p = Arc::clone(&probe);
    let mut tasks = Tasks::new();
    tasks
        .register_fn("hang", move |_: (usize,), _ctx: JobContext| {
            let stamp = DropStamp(Arc::clone(&p));
            p.started.notify_one();
            async move {
                let _stamp = stamp;
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok::<_, TaskError>(())
            }
        })
        .map_err(|e| e.to_string())?;
    let config = WorkerConfig {
        poll_interval: Duration::from_millis(100),
        ..WorkerConfig::for_queues([QUEUE])
    };
    let worker = Worker::new(Arc::clone(backend), Arc::new(tasks), config);
    let id: WorkerId = worker.id().clone();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let running = tokio::spawn(async move { worker.run_until(token).await });
    let queue = Queue::new(Arc::clone(backend));
    let mut out = Vec::with_capacity(samples);
    let mut whole = Vec::with_capacity(samples);
    for i in 0..samples {
        if let Ok(mut d) = probe.dropped.lock() {
            *d = None;
        }
        let started = probe.started.notified();
        queue.enqueue(QUEUE, "hang", (i,)).await.map_err(|e| e.to_string())?;
        tokio::time::timeout(PHASE_LIMIT, started)
            .await
            .map_err(|_| format!("sample {i}: the job did not start within {PHASE_LIMIT:?}"))?;
        let record = backend
            .working_on(&id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the running job has no working-on record")?;
        let dropped = probe.dropped_now.notified();
        tokio::pin!(dropped);
        dropped.as_mut().enable();
        let called = Instant::now();
        if !queue
            .cancel_running(&id, &record.payload)
            .await
            .map_err(|e| e.to_string())?
        {
            return Err("the cancel found no running job".into());
        }
        let returned = Instant::now();
        let wait_drop = async {
            loop {
                if let Some(at) = probe.dropped.lock().ok().and_then(|d| *d) {
                    break at;
                }
                dropped.as_mut().await;
                dropped.set(probe.dropped_now.notified());
                dropped.as_mut().enable();
            }
        };
        let at = tokio::time::timeout(PHASE_LIMIT, wait_drop)
            .await
            .map_err(|_| format!("sample {i}: the cancelled job was not dropped within {PHASE_LIMIT:?}"))?;
        out.push(at.saturating_duration_since(returned));
        whole.push(at.saturating_duration_since(called));
        // The slot is free again before the next sample starts.
        let freed = Instant::now();
        while backend.working_on(&id).await.map_err(|e| e.to_string())?.is_some() {
            if freed.elapsed() > PHASE_LIMIT {
                return Err(format!("sample {i}: the slot was not freed within {PHASE_LIMIT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    stop.cancel();
    let _ = running.await;
    Ok((Latency::of(out), Latency::of(whole)))
}
