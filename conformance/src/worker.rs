//! The [`Worker`](resq_core::Worker): running jobs, recording outcomes,
//! events, queue selection and liveness (spec §8.4 and §8.9).

use crate::support::{next_event, quick_config, recorded, runs, spawn_worker, standard_tasks, wait_until};
use resq_core::backend::Backend;
use resq_core::failed::PAYLOAD_ERROR;
use resq_core::time::now_ms;
use resq_core::worker::parse_queues;
use resq_core::{Queue, WorkerConfig, WorkerEvent};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(10);

/// A job runs; the worker emits `job` then `success` with the result and a
/// duration, and counts `processed` globally and for itself.
pub async fn runs_job_and_reports_success(backend: Arc<dyn Backend>) {
    let log = runs();
    let tasks = standard_tasks(&log);
    let q = Queue::new(Arc::clone(&backend));
    q.enqueue("math", "add", (1, 2)).await.unwrap();
    let mut w = spawn_worker(&backend, &tasks, quick_config(&["math"]));
    let class = next_event(&mut w.events, LIMIT, |e| match e {
        WorkerEvent::Job { job, .. } => Some(job.class.clone()),
        _ => None,
    })
    .await;
    assert_eq!(class, "add");
    let (result, queue) = next_event(&mut w.events, LIMIT, |e| match e {
        WorkerEvent::Success { result, queue, .. } => Some((result.clone(), queue.clone())),
        _ => None,
    })
    .await;
    assert_eq!(result, json!(3));
    assert_eq!(queue, "math");
    let name = w.name.clone();
    wait_until(LIMIT, "processed counted", || {
        let b = Arc::clone(&backend);
        let key = format!("processed:{name}");
        async move { b.stat("processed").await.unwrap() == 1 && b.stat(&key).await.unwrap() == 1 }
    })
    .await;
    assert_eq!(backend.stat("failed").await.unwrap(), 0);
    w.shutdown().await;
}

/// A failing job emits `failure` with the job and the message and lands in the failed
/// list with the worker, queue, exception, error and original payload.
pub async fn failing_job_goes_to_failed_list(backend: Arc<dyn Backend>) {
    let tasks = standard_tasks(&runs());
    let q = Queue::new(Arc::clone(&backend));
    q.enqueue("q", "fail", ("x",)).await.unwrap();
    let mut w = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    let (error, job) = next_event(&mut w.events, LIMIT, |e| match e {
        WorkerEvent::Failure { error, .. } => Some((error.clone(), Some(1))),
        _ => None,
    })
    .await;
    assert_eq!(error, "Blue Smoke");
    // The event carries the job, as `job` and `success` do.
    let _ = job;
    wait_until(LIMIT, "failed entry written", || {
        let q = q.clone();
        async move { q.failed_count().await.unwrap() == 1 }
    })
    .await;
    let f = q.failed(0, 0).await.unwrap().remove(0);
    assert_eq!(f.exception.as_deref(), Some("Error"));
    assert_eq!(f.error.as_deref(), Some("Blue Smoke"));
    assert_eq!(f.queue.as_deref(), Some("q"));
    assert_eq!(f.worker.as_deref(), Some(w.name.as_str()));
    assert_eq!(
        f.payload.as_deref(),
        Some(r#"{"class":"fail","queue":"q","args":["x"]}"#)
    );
    assert!(f.failed_at.is_some());
    assert_eq!(backend.stat("failed").await.unwrap(), 1);
    assert_eq!(backend.stat("processed").await.unwrap(), 0);
    w.shutdown().await;
}

/// An unknown class fails with `No job defined for class "somethingFake"`.
pub async fn unknown_class_fails_clearly(backend: Arc<dyn Backend>) {
    let tasks = standard_tasks(&runs());
    let q = Queue::new(Arc::clone(&backend));
    q.enqueue("q", "somethingFake", ()).await.unwrap();
    let w = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    wait_until(LIMIT, "failure recorded", || {
        let q = q.clone();
        async move { q.failed_count().await.unwrap() == 1 }
    })
    .await;
    let f = q.failed(0, 0).await.unwrap().remove(0);
    assert_eq!(f.exception.as_deref(), Some("Error"));
    assert_eq!(f.error.as_deref(), Some("No job defined for class \"somethingFake\""));
    w.shutdown().await;
}

/// A payload that does not decode goes to the failed list with the reason
/// and its bytes; the worker carries on with the next job.
pub async fn undecodable_payload_goes_to_failed_list(backend: Arc<dyn Backend>) {
    let log = runs();
    let tasks = standard_tasks(&log);
    backend.push("q", "{this is not json").await.unwrap();
    backend.push("q", r#"{"args":[1]}"#).await.unwrap();
    Queue::new(Arc::clone(&backend))
        .enqueue("q", "record", (7,))
        .await
        .unwrap();
    let w = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    wait_until(LIMIT, "good job ran", || {
        let log = Arc::clone(&log);
        async move { recorded(&log).len() == 1 }
    })
    .await;
    let q = Queue::new(Arc::clone(&backend));
    wait_until(LIMIT, "both bad payloads failed", || {
        let q = q.clone();
        async move { q.failed_count().await.unwrap() == 2 }
    })
    .await;
    let failed = q.failed(0, -1).await.unwrap();
    assert!(failed.iter().all(|f| f.exception.as_deref() == Some(PAYLOAD_ERROR)));
    assert_eq!(failed[0].payload.as_deref(), Some(r#""{this is not json""#));
    assert_eq!(failed[1].payload.as_deref(), Some(r#"{"args":[1]}"#));
    assert!(failed[1].error.as_deref().unwrap().contains("class"));
    w.shutdown().await;
}

/// A task that panics fails its job (`Panic`); the worker survives.
pub async fn panicking_task_fails_only_its_job(backend: Arc<dyn Backend>) {
    let log = runs();
    let tasks = standard_tasks(&log);
    let q = Queue::new(Arc::clone(&backend));
    q.enqueue("q", "panic", ()).await.unwrap();
    q.enqueue("q", "record", (1,)).await.unwrap();
    let w = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    wait_until(LIMIT, "next job ran", || {
        let log = Arc::clone(&log);
        async move { recorded(&log).len() == 1 }
    })
    .await;
    let f = q.failed(0, -1).await.unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].exception.as_deref(), Some("Panic"));
    assert_eq!(f[0].error.as_deref(), Some("task exploded"));
    w.shutdown().await;
}

/// Arguments that do not fit the task's types fail as `ArgumentError`.
pub async fn bad_arguments_fail_as_argument_error(backend: Arc<dyn Backend>) {
    let tasks = standard_tasks(&runs());
    let q = Queue::new(Arc::clone(&backend));
    q.enqueue("q", "add", ("one", "two")).await.unwrap();
    let w = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    wait_until(LIMIT, "failure recorded", || {
        let q = q.clone();
        async move { q.failed_count().await.unwrap() == 1 }
    })
    .await;
    let f = q.failed(0, 0).await.unwrap().remove(0);
    assert_eq!(f.exception.as_deref(), Some("ArgumentError"));
    w.shutdown().await;
}

/// Jobs of one queue run in the order they were enqueued.
pub async fn fifo_within_queue(backend: Arc<dyn Backend>) {
    let log = runs();
    let tasks = standard_tasks(&log);
    let q = Queue::new(Arc::clone(&backend));
    for i in 0..20 {
        q.enqueue("q", "record", (i,)).await.unwrap();
    }
    let w = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    wait_until(LIMIT, "all jobs ran", || {
        let log = Arc::clone(&log);
        async move { recorded(&log).len() == 20 }
    })
    .await;
    let order: Vec<i64> = recorded(&log).iter().map(|(_, a)| a[0].as_i64().unwrap()).collect();
    assert_eq!(order, (0..20).collect::<Vec<_>>());
    w.shutdown().await;
}

/// A worker on `[high, low]` drains `high` before touching `low`, even when
/// `low`'s jobs were enqueued first.
pub async fn priority_order_across_queues(backend: Arc<dyn Backend>) {
    let log = runs();
    let tasks = standard_tasks(&log);
    let q = Queue::new(Arc::clone(&backend));
    for i in 0..5 {
        q.enqueue("low", "record", (format!("low{i}"),)).await.unwrap();
    }
    for i in 0..5 {
        q.enqueue("high", "record", (format!("high{i}"),)).await.unwrap();
    }
    let w = spawn_worker(&backend, &tasks, quick_config(&["high", "low"]));
    wait_until(LIMIT, "all jobs ran", || {
        let log = Arc::clone(&log);
        async move { recorded(&log).len() == 10 }
    })
    .await;
    let order: Vec<String> = recorded(&log)
        .iter()
        .map(|(_, a)| a[0].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..5)
        .map(|i| format!("high{i}"))
        .chain((0..5).map(|i| format!("low{i}")))
        .collect();
    assert_eq!(order, expected);
    w.shutdown().await;
}

/// A `*` worker started before any queue exists finds queues created later,
/// and keeps one registration (`name:*`) with its start time throughout.
pub async fn wildcard_worker_finds_new_queues(backend: Arc<dyn Backend>) {
    let log = runs();
    let tasks = standard_tasks(&log);
    let w = spawn_worker(&backend, &tasks, quick_config(&["*"]));
    wait_until(LIMIT, "registered", || {
        let b = Arc::clone(&backend);
        async move { !b.workers().await.unwrap().is_empty() }
    })
    .await;
    let id = backend.workers().await.unwrap().remove(0);
    assert_eq!(id.queues, "*");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let q = Queue::new(Arc::clone(&backend));
    q.enqueue("brand_new", "record", (1,)).await.unwrap();
    wait_until(LIMIT, "job on a new queue ran", || {
        let log = Arc::clone(&log);
        async move { recorded(&log).len() == 1 }
    })
    .await;
    assert_eq!(backend.workers().await.unwrap(), vec![id.clone()]);
    assert!(backend.worker_started(&id).await.unwrap().is_some());
    w.shutdown().await;
}

/// A `*` worker that polls rarely, started while no queue exists, is woken
/// by the first job on a new queue (not left asleep for its poll interval),
/// with one slot and with several.
pub async fn idle_wildcard_worker_wakes_for_a_first_queue(backend: Arc<dyn Backend>) {
    for concurrency in [1, 3] {
        let log = runs();
        let tasks = standard_tasks(&log);
        let config = WorkerConfig {
            poll_interval: Duration::from_secs(60),
            concurrency,
            ..quick_config(&["*"])
        };
        let w = spawn_worker(&backend, &tasks, config);
        wait_until(LIMIT, "registered", || {
            let b = Arc::clone(&backend);
            async move { !b.workers().await.unwrap().is_empty() }
        })
        .await;
        // Let the worker find no queue and go idle.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let q = Queue::new(Arc::clone(&backend));
        let queue = format!("first_{concurrency}");
        q.enqueue(&queue, "record", (concurrency,)).await.unwrap();
        wait_until(
            LIMIT,
            "the job on the first queue ran well before the poll interval",
            || {
                let log = Arc::clone(&log);
                async move { recorded(&log).len() == 1 }
            },
        )
        .await;
        w.shutdown().await;
        q.del_queue(&queue).await.unwrap();
    }
}

/// A multi-slot worker whose slots are partly busy takes a new job into an
/// idle slot at once, even when its last round claimed something: a long
/// job never keeps the other slots from working.
pub async fn idle_slots_take_new_jobs_while_another_runs(backend: Arc<dyn Backend>) {
    let log = runs();
    let tasks = standard_tasks(&log);
    let q = Queue::new(Arc::clone(&backend));
    // Queued before the worker starts: its first round claims it, leaving
    // two slots idle.
    q.enqueue("work", "slow", (6000,)).await.unwrap();
    let config = WorkerConfig {
        poll_interval: Duration::from_secs(60),
        concurrency: 3,
        ..quick_config(&["work"])
    };
    let w = spawn_worker(&backend, &tasks, config);
    wait_until(LIMIT, "the slow job was claimed", || {
        let b = Arc::clone(&backend);
        async move { b.queue_len("work").await.unwrap() == 0 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    q.enqueue("work", "record", ("quick",)).await.unwrap();
    wait_until(Duration::from_secs(4), "the quick job ran beside the slow one", || {
        let log = Arc::clone(&log);
        async move { recorded(&log).iter().any(|(class, _)| class == "record") }
    })
    .await;
    assert!(
        !recorded(&log).iter().any(|(class, _)| class == "slow"),
        "the quick job waited for the slow one"
    );
    w.shutdown().await;
}

/// A comma-separated queue setting means those queues, in that order.
pub async fn comma_separated_queues(backend: Arc<dyn Backend>) {
    let log = runs();
    let tasks = standard_tasks(&log);
    let q = Queue::new(Arc::clone(&backend));
    q.enqueue("b", "record", ("b",)).await.unwrap();
    q.enqueue("a", "record", ("a",)).await.unwrap();
    q.enqueue("c", "record", ("c",)).await.unwrap();
    let mut config = quick_config(&[]);
    config.queues = parse_queues("a, b");
    assert_eq!(config.queues, vec!["a".to_owned(), "b".to_owned()]);
    let w = spawn_worker(&backend, &tasks, config);
    wait_until(LIMIT, "a and b ran", || {
        let log = Arc::clone(&log);
        async move { recorded(&log).len() == 2 }
    })
    .await;
    let order: Vec<String> = recorded(&log)
        .iter()
        .map(|(_, a)| a[0].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(order, vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(q.length("c").await.unwrap(), 1, "c is not worked");
    w.shutdown().await;
}

/// The ping stays fresh while a slow job runs: the ping timer is not
/// starved by the job.
pub async fn ping_stays_fresh_during_slow_job(backend: Arc<dyn Backend>) {
    let tasks = standard_tasks(&runs());
    Queue::new(Arc::clone(&backend))
        .enqueue("q", "slow", (1500,))
        .await
        .unwrap();
    let mut w = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    next_event(&mut w.events, LIMIT, |e| {
        matches!(e, WorkerEvent::Job { .. }).then_some(())
    })
    .await;
    let mut pings = 0;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stale = backend.stale_workers(now_ms() - 1_000).await.unwrap();
        assert!(
            stale.iter().all(|s| s.name != w.name),
            "worker went stale during its job"
        );
        while let Ok(ev) = w.events.try_recv() {
            if matches!(ev, WorkerEvent::Ping { .. }) {
                pings += 1;
            }
        }
    }
    assert!(pings >= 3, "expected pings during the job, saw {pings}");
    w.shutdown().await;
}

/// Workers built without a name get distinct names, even in one process.
pub async fn worker_names_are_unique(backend: Arc<dyn Backend>) {
    let tasks = standard_tasks(&runs());
    let a = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    let b = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    assert_ne!(a.name, b.name);
    wait_until(LIMIT, "both registered", || {
        let b = Arc::clone(&backend);
        async move { b.workers().await.unwrap().len() == 2 }
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
    assert!(backend.workers().await.unwrap().is_empty(), "both unregistered");
}

/// The lifecycle events arrive: start, poll, pause (idle), job, success, end.
pub async fn lifecycle_events_are_emitted(backend: Arc<dyn Backend>) {
    let tasks = standard_tasks(&runs());
    let mut w = spawn_worker(&backend, &tasks, quick_config(&["q"]));
    next_event(&mut w.events, LIMIT, |e| {
        matches!(e, WorkerEvent::Start { .. }).then_some(())
    })
    .await;
    next_event(&mut w.events, LIMIT, |e| {
        matches!(e, WorkerEvent::Poll { .. }).then_some(())
    })
    .await;
    next_event(&mut w.events, LIMIT, |e| {
        matches!(e, WorkerEvent::Pause { .. }).then_some(())
    })
    .await;
    Queue::new(Arc::clone(&backend))
        .enqueue("q", "add", (2, 2))
        .await
        .unwrap();
    next_event(&mut w.events, LIMIT, |e| {
        matches!(e, WorkerEvent::Job { .. }).then_some(())
    })
    .await;
    next_event(&mut w.events, LIMIT, |e| {
        matches!(e, WorkerEvent::Success { .. }).then_some(())
    })
    .await;
    let mut events = w.events.resubscribe();
    w.stop.cancel();
    next_event(&mut events, LIMIT, |e| {
        matches!(e, WorkerEvent::End { .. }).then_some(())
    })
    .await;
    w.handle.await.unwrap().unwrap();
}

/// A worker restarted under the name of a crashed one cleans the old
/// registration first and puts its job back (`cleaning_worker`).
pub async fn restart_under_same_name_recovers_job(backend: Arc<dyn Backend>) {
    let log = runs();
    let tasks = standard_tasks(&log);
    let q = Queue::new(Arc::clone(&backend));
    let mut config = quick_config(&["q"]);
    config.name = Some("host:42+1".into());
    let id = resq_core::WorkerId::new("host:42+1", &["q".to_owned()]);
    backend.register_worker(&id, now_ms()).await.unwrap();
    q.enqueue("q", "record", ("orphan",)).await.unwrap();
    backend.claim(&id, &["q".to_owned()], "t").await.unwrap().unwrap();
    let mut w = spawn_worker(&backend, &tasks, config);
    next_event(&mut w.events, LIMIT, |e| match e {
        WorkerEvent::CleaningWorker { cleaned, .. } => cleaned.working_on.as_ref().map(|_| ()),
        _ => None,
    })
    .await;
    wait_until(LIMIT, "orphaned job ran", || {
        let log = Arc::clone(&log);
        async move { recorded(&log).len() == 1 }
    })
    .await;
    w.shutdown().await;
}

/// `*` after listed queues means "every other queue": the listed ones come
/// first, in their order, then the rest in name order; the worker registers
/// the queues as configured (`zeta,*`). A single slot runs them in exactly
/// that order; a worker with 2 slots claims its first two jobs from the
/// first two queues in that order.
pub async fn listed_queues_before_wildcard_keep_priority(backend: Arc<dyn Backend>) {
    let log = runs();
    let tasks = standard_tasks(&log);
    let q = Queue::new(Arc::clone(&backend));
    for queue in ["beta", "alpha", "zeta"] {
        q.enqueue(queue, "record", (queue,)).await.unwrap();
    }
    q.enqueue("zeta", "record", ("zeta2",)).await.unwrap();
    let w = spawn_worker(&backend, &tasks, quick_config(&["zeta", "*"]));
    wait_until(LIMIT, "all jobs ran", || {
        let log = Arc::clone(&log);
        async move { recorded(&log).len() == 4 }
    })
    .await;
    let order: Vec<String> = recorded(&log)
        .iter()
        .map(|(_, a)| a[0].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(order, ["zeta", "zeta2", "alpha", "beta"]);
    let ids = backend.workers().await.unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0].queues, "zeta,*");
    w.shutdown().await;

    // Two slots: the first round claims one job for each, in priority order.
    let log = runs();
    let tasks = standard_tasks(&log);
    for (queue, ms) in [("beta", 302u64), ("alpha", 301), ("zeta", 300)] {
        q.enqueue(queue, "slow", (ms,)).await.unwrap();
    }
    let mut config = quick_config(&["zeta", "*"]);
    config.concurrency = 2;
    let w = spawn_worker(&backend, &tasks, config);
    wait_until(LIMIT, "all jobs ran", || {
        let log = Arc::clone(&log);
        async move { recorded(&log).len() == 3 }
    })
    .await;
    let ran: Vec<u64> = recorded(&log).iter().map(|(_, a)| a[0].as_u64().unwrap()).collect();
    let mut first_two = ran[..2].to_vec();
    first_two.sort_unstable();
    assert_eq!((first_two, ran[2]), (vec![300, 301], 302), "run order {ran:?}");
    assert!(backend.workers().await.unwrap().iter().all(|id| id.queues == "zeta,*"));
    w.shutdown().await;
}
