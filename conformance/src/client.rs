//! The [`Queue`] client: enqueueing and every inspection and repair call,
//! following node-resque's queue tests (spec §8.2) and §8.9's additions.

use resq_core::backend::{Backend, Orphan, Outcome, WorkerId};
use resq_core::failed::{encode_entry, Failure, FORCE_CLEAN_MARK, WORKER_TIMEOUT};
use resq_core::time::{bucket_due_ms, delayed_bucket_of_ms, last_due_bucket, now_ms};
use resq_core::{Error, NewJob, Queue, WorkerStatus};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

fn args(d: &resq_core::Decoded) -> Vec<Value> {
    d.job().expect("decodes").args.clone()
}

/// `enqueue` writes node-resque's exact payload bytes to the queue.
pub async fn enqueue_writes_node_resque_payload(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    assert!(q.enqueue("test_queue", "add", (1, 2)).await.unwrap());
    assert_eq!(
        backend.queue_range("test_queue", 0, -1).await.unwrap(),
        vec![r#"{"class":"add","queue":"test_queue","args":[1,2]}"#.to_owned()]
    );
    assert_eq!(q.queues().await.unwrap(), vec!["test_queue".to_owned()]);
}

/// A scalar argument is wrapped (`1` → `[1]`); `()` means no arguments.
pub async fn args_are_wrapped(backend: Arc<dyn Backend>) {
    let q = Queue::new(backend);
    q.enqueue("q", "one", 1).await.unwrap();
    q.enqueue("q", "none", ()).await.unwrap();
    q.enqueue("q", "obj", json!({"a": 1})).await.unwrap();
    let got = q.queued("q", 0, -1).await.unwrap();
    assert_eq!(args(&got[0]), vec![json!(1)]);
    assert_eq!(args(&got[1]), Vec::<Value>::new());
    assert_eq!(args(&got[2]), vec![json!({"a": 1})]);
}

/// Empty queue or class names are refused before anything is written.
pub async fn empty_names_are_rejected(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    assert!(matches!(q.enqueue("", "x", ()).await, Err(Error::InvalidArgument(_))));
    assert!(matches!(q.enqueue("q", " ", ()).await, Err(Error::InvalidArgument(_))));
    assert!(q.queues().await.unwrap().is_empty());
}

/// `length` counts queued jobs and `queued` returns them oldest first.
pub async fn length_and_queued_in_fifo_order(backend: Arc<dyn Backend>) {
    let q = Queue::new(backend);
    for i in 0..5 {
        q.enqueue("q", "record", (i,)).await.unwrap();
    }
    assert_eq!(q.length("q").await.unwrap(), 5);
    let all: Vec<Vec<Value>> = q.queued("q", 0, -1).await.unwrap().iter().map(args).collect();
    assert_eq!(all, (0..5).map(|i| vec![json!(i)]).collect::<Vec<_>>());
    let page: Vec<Vec<Value>> = q.queued("q", 1, 2).await.unwrap().iter().map(args).collect();
    assert_eq!(page, vec![vec![json!(1)], vec![json!(2)]]);
    assert_eq!(q.length("nothing").await.unwrap(), 0);
}

/// `queued` shows a payload that does not decode instead of failing or hiding it.
pub async fn queued_shows_undecodable_payloads(backend: Arc<dyn Backend>) {
    backend.push("q", "not json").await.unwrap();
    let q = Queue::new(backend);
    let got = q.queued("q", 0, -1).await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(got[0].job().is_none());
    assert_eq!(got[0].raw(), "not json");
}

/// `enqueue_batch` pushes every job in order.
pub async fn enqueue_batch_keeps_order(backend: Arc<dyn Backend>) {
    let q = Queue::new(backend);
    let jobs = (0..10).map(|i| NewJob::new(if i % 2 == 0 { "even" } else { "odd" }, "record", (i,)).unwrap());
    assert_eq!(q.enqueue_batch(jobs).await.unwrap(), 10);
    let even: Vec<Vec<Value>> = q.queued("even", 0, -1).await.unwrap().iter().map(args).collect();
    assert_eq!(
        even,
        vec![
            vec![json!(0)],
            vec![json!(2)],
            vec![json!(4)],
            vec![json!(6)],
            vec![json!(8)]
        ]
    );
    assert_eq!(q.length("odd").await.unwrap(), 5);
    assert_eq!(q.enqueue_batch(Vec::new()).await.unwrap(), 0);
}

/// `enqueue_at(10000)` lands in bucket 11 (`ceil((ms + 500) / 1000)`, the
/// first bucket no scheduler promotes before 10 s); the same job in the same
/// bucket is refused with node-resque's error and stored once; other args
/// are fine.
pub async fn enqueue_at_buckets_and_refuses_duplicates(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    q.enqueue_at(10_000, "q", "add", (1, 2)).await.unwrap();
    assert_eq!(backend.delayed_timestamps().await.unwrap(), vec![11]);
    let dup = q.enqueue_at(10_500, "q", "add", (1, 2)).await.unwrap_err();
    assert!(dup.is_already_scheduled(), "{dup}");
    assert!(dup
        .to_string()
        .contains("Job already enqueued at this time with same arguments"));
    assert_eq!(backend.delayed_at(11).await.unwrap().len(), 1);
    q.enqueue_at(9_501, "q", "add", (2, 2)).await.unwrap();
    assert_eq!(backend.delayed_at(11).await.unwrap().len(), 2);
    q.enqueue_at(9_500, "q", "add", (1, 2)).await.unwrap();
    assert_eq!(backend.delayed_timestamps().await.unwrap(), vec![10, 11]);
    assert_eq!(q.length("q").await.unwrap(), 0, "delayed jobs are not queued");
}

/// `enqueue_in` uses bucket `ceil((now + delay + 500) / 1000)`.
pub async fn enqueue_in_uses_rounded_bucket(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    let before = delayed_bucket_of_ms(now_ms() + 5_000);
    q.enqueue_in(Duration::from_secs(5), "q", "add", (1, 2)).await.unwrap();
    let after = delayed_bucket_of_ms(now_ms() + 5_000);
    let ts = backend.delayed_timestamps().await.unwrap();
    assert_eq!(ts.len(), 1);
    assert!(ts[0] >= before && ts[0] <= after, "{ts:?} not in [{before}, {after}]");
}

/// The bucket `enqueue_at(t)` picks is due (for resq's and node-resque's
/// schedulers, from `s·1000 − 500`; for Ruby's, from `s·1000`) no sooner
/// than `t` and less than a second after it, for every sub-second offset.
pub async fn enqueue_at_bucket_is_never_due_early(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    let base = 1_000_000_000_i64;
    for (i, offset) in [0_i64, 1, 499, 500, 501, 999].into_iter().enumerate() {
        let t = base + offset;
        q.enqueue_at(t, "q", "job", (i,)).await.unwrap();
        let buckets = q.scheduled_at("q", "job", (i,)).await.unwrap();
        assert_eq!(buckets.len(), 1, "{t}: {buckets:?}");
        let s = buckets[0];
        assert!(
            bucket_due_ms(s) >= t,
            "{t} in bucket {s} is due at {}",
            bucket_due_ms(s)
        );
        assert!(last_due_bucket(t - 1) < s, "{t} in bucket {s} is due before {t}");
        assert!(s * 1000 >= t, "{t} in bucket {s}: early for resque-scheduler");
        assert!(bucket_due_ms(s) < t + 1000, "{t} in bucket {s} is due a second late");
    }
}

/// `scheduled_at` and `del_delayed` match by queue, class and args.
pub async fn scheduled_at_and_del_delayed_match_args(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    q.enqueue_at(9_500, "q", "add", (1, 2)).await.unwrap();
    assert_eq!(q.scheduled_at("q", "add", (1, 2)).await.unwrap(), vec![10]);
    assert_eq!(q.scheduled_at("q", "add", (3, 4)).await.unwrap(), Vec::<i64>::new());
    assert_eq!(q.scheduled_at("other", "add", (1, 2)).await.unwrap(), Vec::<i64>::new());
    assert_eq!(q.del_delayed("q", "add", (3, 4)).await.unwrap(), Vec::<i64>::new());
    assert_eq!(q.del_delayed("q", "add", (1, 2)).await.unwrap(), vec![10]);
    assert!(q.all_delayed().await.unwrap().is_empty());
    assert!(q.timestamps().await.unwrap().is_empty());
}

/// Omitted args at four distinct seconds: four entries everywhere, each
/// with `args: []`, and `del_delayed` removes them all.
pub async fn omitted_args_delayed_at_four_seconds(backend: Arc<dyn Backend>) {
    let q = Queue::new(backend);
    let base = 1_000_000_000;
    for i in 0..4 {
        q.enqueue_at(base + i * 1000, "q", "noArgs", ()).await.unwrap();
    }
    assert_eq!(q.scheduled_at("q", "noArgs", ()).await.unwrap().len(), 4);
    let all = q.all_delayed().await.unwrap();
    assert_eq!(all.len(), 4);
    for jobs in all.values() {
        assert_eq!(jobs.len(), 1);
        assert_eq!(args(&jobs[0]), Vec::<Value>::new());
    }
    assert_eq!(q.del_delayed("q", "noArgs", ()).await.unwrap().len(), 4);
    assert!(q.all_delayed().await.unwrap().is_empty());
}

/// `timestamps` (ms, numeric order), `delayed_at` and `all_delayed` agree.
pub async fn timestamps_delayed_at_and_all_delayed(backend: Arc<dyn Backend>) {
    let q = Queue::new(backend);
    q.enqueue_at(19_500, "q", "add", (3, 3)).await.unwrap();
    q.enqueue_at(9_500, "q", "add", (1, 1)).await.unwrap();
    q.enqueue_at(8_501, "q", "add", (2, 2)).await.unwrap();
    q.enqueue_at(99_500, "q", "add", (4, 4)).await.unwrap();
    assert_eq!(q.timestamps().await.unwrap(), vec![10_000, 20_000, 100_000]);
    let at10 = q.delayed_at(10_000).await.unwrap();
    assert_eq!(at10.r_timestamp, 10);
    let got: Vec<Vec<Value>> = at10.tasks.iter().map(args).collect();
    assert_eq!(got, vec![vec![json!(1), json!(1)], vec![json!(2), json!(2)]]);
    assert_eq!(q.delayed_at(20_000).await.unwrap().tasks.len(), 1);
    let all = q.all_delayed().await.unwrap();
    assert_eq!(all.keys().copied().collect::<Vec<_>>(), vec![10_000, 20_000, 100_000]);
    assert_eq!(all[&10_000].len(), 2);
}

/// Delayed items in resque-scheduler's key order (`class, args, queue`)
/// are found by `scheduled_at` and removed by `del_delayed`.
pub async fn ruby_scheduled_items_are_found(backend: Arc<dyn Backend>) {
    let rs = r#"{"class":"add","args":[1,2],"queue":"q"}"#;
    assert!(backend.schedule(10, rs).await.unwrap());
    let q = Queue::new(Arc::clone(&backend));
    assert_eq!(q.scheduled_at("q", "add", (1, 2)).await.unwrap(), vec![10]);
    assert_eq!(q.del_delayed("q", "add", (1, 2)).await.unwrap(), vec![10]);
    assert!(backend.delayed_timestamps().await.unwrap().is_empty());
}

/// `del` removes by exact args, honouring `count`, and finds Ruby-format
/// (`{"class","args"}`) jobs too.
pub async fn del_matches_args_and_count(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    for _ in 0..3 {
        q.enqueue("q", "job", (1,)).await.unwrap();
    }
    q.enqueue("q", "job", (2,)).await.unwrap();
    backend.push("q", r#"{"class":"job","args":[1]}"#).await.unwrap();
    assert_eq!(q.del("q", "job", (1,), 1).await.unwrap(), 1);
    assert_eq!(q.length("q").await.unwrap(), 4);
    assert_eq!(
        q.del("q", "job", (1,), 0).await.unwrap(),
        3,
        "two node-resque copies and the Ruby one"
    );
    assert_eq!(q.del("q", "job", (1,), 0).await.unwrap(), 0);
    let left: Vec<Vec<Value>> = q.queued("q", 0, -1).await.unwrap().iter().map(args).collect();
    assert_eq!(left, vec![vec![json!(2)]]);
    q.enqueue("q", "none", ()).await.unwrap();
    q.enqueue("q", "none", ()).await.unwrap();
    assert_eq!(q.del("q", "none", (), 0).await.unwrap(), 2);
}

/// `del_by_class` removes every job of a class, whatever its args or encoding.
pub async fn del_by_class_removes_every_job_of_the_class(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    q.enqueue("q", "someJob1", (1,)).await.unwrap();
    q.enqueue("q", "someJob2", (1,)).await.unwrap();
    q.enqueue("q", "someJob1", (2,)).await.unwrap();
    backend.push("q", r#"{"args":[3],"class":"someJob1"}"#).await.unwrap();
    backend.push("q", "garbage").await.unwrap();
    assert_eq!(q.del_by_class("q", "someJob1").await.unwrap(), 3);
    let left: Vec<String> = q
        .queued("q", 0, -1)
        .await
        .unwrap()
        .iter()
        .map(|d| d.raw().to_owned())
        .collect();
    assert_eq!(
        left,
        vec![
            r#"{"class":"someJob2","queue":"q","args":[1]}"#.to_owned(),
            "garbage".to_owned()
        ]
    );
}

/// `del_queue` removes the queue and its jobs.
pub async fn del_queue_removes_everything(backend: Arc<dyn Backend>) {
    let q = Queue::new(backend);
    q.enqueue("q", "x", ()).await.unwrap();
    q.enqueue("keep", "x", ()).await.unwrap();
    assert!(q.del_queue("q").await.unwrap());
    assert_eq!(q.length("q").await.unwrap(), 0);
    assert_eq!(q.queues().await.unwrap(), vec!["keep".to_owned()]);
}

/// `stats` returns every counter; `leader` the lock holder.
pub async fn stats_and_leader_are_reported(backend: Arc<dyn Backend>) {
    backend.incr_stat("processed", 2).await.unwrap();
    backend.incr_stat("failed", 1).await.unwrap();
    let q = Queue::new(Arc::clone(&backend));
    let stats = q.stats().await.unwrap();
    assert_eq!(stats.get("processed"), Some(&2));
    assert_eq!(stats.get("failed"), Some(&1));
    assert_eq!(q.leader().await.unwrap(), None);
    assert!(backend
        .acquire_leader("sched-1", Duration::from_secs(30))
        .await
        .unwrap());
    assert_eq!(q.leader().await.unwrap().as_deref(), Some("sched-1"));
}

/// `locks` lists plugin locks with their values; `del_lock` deletes one.
pub async fn locks_and_del_lock(backend: Arc<dyn Backend>) {
    let ttl = Duration::from_secs(60);
    assert!(backend.acquire_lock("lock:job:q:[1]", "123", ttl).await.unwrap());
    assert!(backend.acquire_lock("workerslock:job:q:[1]", "456", ttl).await.unwrap());
    let q = Queue::new(Arc::clone(&backend));
    let locks = q.locks().await.unwrap();
    assert_eq!(locks.get("lock:job:q:[1]").map(String::as_str), Some("123"));
    assert_eq!(locks.get("workerslock:job:q:[1]").map(String::as_str), Some("456"));
    assert_eq!(q.del_lock("lock:job:q:[1]").await.unwrap(), 1);
    assert_eq!(q.del_lock("lock:job:q:[1]").await.unwrap(), 0);
    assert_eq!(q.locks().await.unwrap().len(), 1);
}

fn entry(n: i64) -> String {
    let payload = format!(r#"{{"class":"job","queue":"q","args":[{n}]}}"#);
    encode_entry(
        "host:1+1",
        "q",
        &payload,
        &Failure::new("Error", format!("boom {n}")),
        1_000,
    )
}

/// Failed-job management: count, range, removal by value, retry that
/// re-enqueues the original bytes and keeps the others in order, and a
/// retry of an entry that is not there.
pub async fn failed_count_range_remove_and_retry(backend: Arc<dyn Backend>) {
    for n in 1..=3 {
        backend.push_failed(&entry(n)).await.unwrap();
    }
    let q = Queue::new(Arc::clone(&backend));
    assert_eq!(q.failed_count().await.unwrap(), 3);
    let two = q.failed(1, 2).await.unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!(two[0].error.as_deref(), Some("boom 2"));
    assert_eq!(two[0].worker.as_deref(), Some("host:1+1"));
    assert_eq!(two[0].queue.as_deref(), Some("q"));
    assert_eq!(two[0].exception.as_deref(), Some("Error"));
    assert_eq!(two[0].job().unwrap().args, vec![json!(2)]);
    assert_eq!(q.remove_failed(&two[0]).await.unwrap(), 1);
    assert_eq!(q.failed_count().await.unwrap(), 2);

    let first = q.failed(0, 0).await.unwrap().remove(0);
    q.retry_and_remove_failed(&first).await.unwrap();
    assert_eq!(
        backend.queue_range("q", 0, -1).await.unwrap(),
        vec![r#"{"class":"job","queue":"q","args":[1]}"#.to_owned()]
    );
    let rest = q.failed(0, -1).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].error.as_deref(), Some("boom 3"));

    let mut modified = rest[0].clone();
    modified.raw = modified.raw.replace("boom 3", "boom 4");
    let err = q.retry_and_remove_failed(&modified).await.unwrap_err();
    assert!(matches!(err, Error::NotInFailedQueue), "{err}");
    assert_eq!(q.failed_count().await.unwrap(), 1);
    assert_eq!(q.length("q").await.unwrap(), 1);
}

/// A failed entry that is not JSON is listed with its bytes, not dropped.
pub async fn failed_lists_undecodable_entries(backend: Arc<dyn Backend>) {
    backend.push_failed("}{").await.unwrap();
    let q = Queue::new(backend);
    let got = q.failed(0, -1).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].raw, "}{");
    assert!(got[0].error.is_some());
    assert!(q.retry_and_remove_failed(&got[0]).await.is_err());
    assert_eq!(q.failed_count().await.unwrap(), 1);
}

/// `workers`, `working_on`, `all_working_on` (idle is `Started`, busy shows
/// the payload) and `details`.
pub async fn workers_working_on_and_details(backend: Arc<dyn Backend>) {
    let a = WorkerId::new("host:1+1", &["test_queue".to_owned()]);
    let b = WorkerId::new("host:1+2", &["test_queue".to_owned()]);
    backend.register_worker(&a, now_ms()).await.unwrap();
    backend.register_worker(&b, now_ms()).await.unwrap();
    let q = Queue::new(Arc::clone(&backend));
    let workers = q.workers().await.unwrap();
    assert_eq!(workers.get("host:1+1").map(String::as_str), Some("test_queue"));
    assert_eq!(workers.get("host:1+2").map(String::as_str), Some("test_queue"));
    let all = q.all_working_on().await.unwrap();
    assert_eq!(all.get("host:1+1"), Some(&WorkerStatus::Started));

    q.enqueue("test_queue", "add", (1, 2)).await.unwrap();
    backend
        .claim(&a, &["test_queue".to_owned()], "now")
        .await
        .unwrap()
        .unwrap();
    let wo = q.working_on("host:1+1", "test_queue").await.unwrap().unwrap();
    assert_eq!(wo.queue, "test_queue");
    assert_eq!(wo.worker, "host:1+1");
    match q.all_working_on().await.unwrap().get("host:1+1") {
        Some(WorkerStatus::Working(w)) => assert_eq!(w.payload, r#"{"class":"add","queue":"test_queue","args":[1,2]}"#),
        other => panic!("expected a busy worker, got {other:?}"),
    }
    let d = q.details().await.unwrap();
    assert_eq!(d.queues.get("test_queue"), Some(&0));
    assert_eq!(d.workers.len(), 2);
    assert_eq!(d.leader, None);
}

async fn busy_worker(backend: &Arc<dyn Backend>, name: &str, ping_ms: i64, payload: &str) -> WorkerId {
    let id = WorkerId::new(name, &["test_queue".to_owned()]);
    backend.register_worker(&id, ping_ms).await.unwrap();
    backend.push("test_queue", payload).await.unwrap();
    let c = backend
        .claim(&id, &["test_queue".to_owned()], "then")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.payload, payload);
    id
}

/// `clean_old_workers` removes a worker whose ping is old and fails its job
/// as `Worker Timeout (killed manually)`; a fresh busy worker is left alone.
pub async fn clean_old_workers_by_ping_age(backend: Arc<dyn Backend>) {
    let payload = r#"{"class":"add","queue":"test_queue","args":[1,2]}"#;
    busy_worker(&backend, "host:1+1", now_ms() - 60_000, payload).await;
    let fresh = busy_worker(&backend, "host:1+2", now_ms(), payload).await;
    let q = Queue::new(Arc::clone(&backend));
    let cleaned = q.clean_old_workers(Duration::from_secs(30)).await.unwrap();
    assert_eq!(cleaned.keys().cloned().collect::<Vec<_>>(), vec!["host:1+1".to_owned()]);
    let c = &cleaned["host:1+1"];
    assert_eq!(c.working_on.as_ref().unwrap().payload, payload);
    let failed = q.failed(0, -1).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].exception.as_deref(), Some(WORKER_TIMEOUT));
    assert_eq!(failed[0].error.as_deref(), Some(WORKER_TIMEOUT));
    assert_eq!(failed[0].worker.as_deref(), Some("host:1+1"));
    assert_eq!(failed[0].payload.as_deref(), Some(payload));
    let all = q.all_working_on().await.unwrap();
    assert!(!all.contains_key("host:1+1"));
    assert!(matches!(all.get("host:1+2"), Some(WorkerStatus::Working(_))));
    assert!(backend.working_on(&fresh).await.unwrap().is_some());
}

/// `force_clean_worker` on a busy worker fails its job with node-resque's
/// marker backtrace and leaves nothing of the worker behind.
pub async fn force_clean_busy_worker(backend: Arc<dyn Backend>) {
    let payload = r#"{"class":"add","queue":"test_queue","args":[1,2]}"#;
    let id = busy_worker(&backend, "host:1+1", now_ms(), payload).await;
    let q = Queue::new(Arc::clone(&backend));
    let c = q.force_clean_worker("host:1+1").await.unwrap().expect("cleaned");
    let entry = c.failed_entry.expect("failed entry");
    assert_eq!(entry.queue.as_deref(), Some("test_queue"));
    assert_eq!(entry.worker.as_deref(), Some("host:1+1"));
    assert_eq!(entry.payload.as_deref(), Some(payload), "payload bytes kept");
    assert_eq!(entry.exception.as_deref(), Some(WORKER_TIMEOUT));
    assert_eq!(
        q.failed(0, 0).await.unwrap(),
        vec![*entry.clone()],
        "the type and value `failed` lists"
    );
    assert!(entry.backtrace[0].starts_with("killed by "), "{:?}", entry.backtrace);
    assert_eq!(entry.backtrace[1], FORCE_CLEAN_MARK);
    assert_eq!(entry.backtrace[2], "resq");
    assert!(entry.failed_at.is_some());
    assert!(
        backend.working_on(&id).await.unwrap().is_none(),
        "working-on key removed (spec §7.2 #7)"
    );
    assert!(backend.workers().await.unwrap().is_empty());
    assert_eq!(backend.worker_started(&id).await.unwrap(), None);
    assert_eq!(backend.stat("failed").await.unwrap(), 1);
}

/// `force_clean_worker` on an idle worker returns no job, writes no failure
/// and counts nothing (spec §7.2 #8).
pub async fn force_clean_idle_worker(backend: Arc<dyn Backend>) {
    let id = WorkerId::new("host:1+1", &["test_queue".to_owned()]);
    backend.register_worker(&id, now_ms()).await.unwrap();
    let q = Queue::new(Arc::clone(&backend));
    let c = q.force_clean_worker("host:1+1").await.unwrap().expect("cleaned");
    assert!(c.working_on.is_none());
    assert!(c.failed_entry.is_none());
    assert_eq!(q.failed_count().await.unwrap(), 0);
    assert_eq!(backend.stat("failed").await.unwrap(), 0);
    assert!(q.workers().await.unwrap().is_empty());
    assert!(q.force_clean_worker("host:1+1").await.unwrap().is_none());
}

/// A force-cleaned job with `args: []` and one with a big integer are
/// retried by `retry_stuck_jobs` with their original bytes (spec §8.9).
pub async fn retry_stuck_jobs_keeps_original_bytes(backend: Arc<dyn Backend>) {
    let empty = r#"{"class":"noArgs","queue":"test_queue","args":[]}"#;
    let big = r#"{"class":"big","queue":"test_queue","args":[12345678901234567890,1.0]}"#;
    busy_worker(&backend, "host:1+1", now_ms(), empty).await;
    busy_worker(&backend, "host:1+2", now_ms(), big).await;
    let q = Queue::new(Arc::clone(&backend));
    q.force_clean_worker("host:1+1").await.unwrap().unwrap();
    q.force_clean_worker("host:1+2").await.unwrap().unwrap();
    backend.push_failed(&entry(9)).await.unwrap();
    assert_eq!(q.failed_count().await.unwrap(), 3);
    assert_eq!(q.retry_stuck_jobs().await.unwrap(), 2);
    assert_eq!(q.failed_count().await.unwrap(), 1, "the ordinary failure stays");
    assert_eq!(
        backend.queue_range("test_queue", 0, -1).await.unwrap(),
        vec![empty.to_owned(), big.to_owned()]
    );
}

/// Failed entries that node-resque's cleanup wrote hold the job as Redis's
/// `cjson` re-encoded it, with `args:[]` turned into `{}`. Both retry calls
/// put such a job back with `args:[]`, whether its payload names a queue
/// (node-resque's shape) or not (Ruby's); a `{}` nested in `args` is kept.
pub async fn retries_repair_cjson_empty_args(backend: Arc<dyn Backend>) {
    let stuck = Failure::new(WORKER_TIMEOUT, WORKER_TIMEOUT).with_backtrace(vec![
        "killed by test".into(),
        FORCE_CLEAN_MARK.into(),
        "node-resque".into(),
    ]);
    let mangled_nr = r#"{"class":"noArgs","args":{},"queue":"q"}"#;
    let mangled_ruby = r#"{"class":"Archive","args":{}}"#;
    let nested = r#"{"class":"nested","queue":"q","args":[{}]}"#;
    for payload in [mangled_nr, mangled_ruby, nested] {
        backend
            .push_failed(&encode_entry("node:1", "q", payload, &stuck, 1))
            .await
            .unwrap();
    }
    let q = Queue::new(Arc::clone(&backend));
    let ruby_entry = q.failed(1, 1).await.unwrap().remove(0);
    q.retry_and_remove_failed(&ruby_entry).await.unwrap();
    assert_eq!(q.retry_stuck_jobs().await.unwrap(), 2);
    assert_eq!(q.failed_count().await.unwrap(), 0);
    assert_eq!(
        backend.queue_range("q", 0, -1).await.unwrap(),
        vec![
            r#"{"class":"Archive","args":[]}"#.to_owned(),
            r#"{"class":"noArgs","queue":"q","args":[]}"#.to_owned(),
            nested.to_owned(),
        ]
    );
}

/// `retry_stuck_jobs` with more than 100 entries retries each exactly once.
pub async fn retry_stuck_jobs_handles_many_entries(backend: Arc<dyn Backend>) {
    let stuck = Failure::new(WORKER_TIMEOUT, WORKER_TIMEOUT).with_backtrace(vec![
        "killed by test".into(),
        FORCE_CLEAN_MARK.into(),
        "resq".into(),
    ]);
    for n in 0..150 {
        let payload = format!(r#"{{"class":"job","queue":"q","args":[{n}]}}"#);
        backend
            .push_failed(&encode_entry("w", "q", &payload, &stuck, 1))
            .await
            .unwrap();
        if n % 10 == 0 {
            backend.push_failed(&entry(n)).await.unwrap();
        }
    }
    let q = Queue::new(Arc::clone(&backend));
    assert_eq!(q.retry_stuck_jobs().await.unwrap(), 150);
    assert_eq!(q.failed_count().await.unwrap(), 15);
    let queued: Vec<String> = backend.queue_range("q", 0, -1).await.unwrap();
    assert_eq!(queued.len(), 150);
    let mut seen: Vec<i64> = queued
        .iter()
        .map(|raw| resq_core::Job::decode(raw).unwrap().args[0].as_i64().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..150).collect::<Vec<_>>());
}

/// A working-on record and a failed entry keep a large integer argument
/// byte for byte (spec §8.9).
pub async fn big_integers_survive_working_on_and_failure(backend: Arc<dyn Backend>) {
    let payload = r#"{"class":"big","queue":"q","args":[12345678901234567890]}"#;
    let id = WorkerId::new("host:1+1", &["q".to_owned()]);
    backend.register_worker(&id, now_ms()).await.unwrap();
    backend.push("q", payload).await.unwrap();
    backend.claim(&id, &["q".to_owned()], "t").await.unwrap().unwrap();
    assert_eq!(backend.working_on(&id).await.unwrap().unwrap().payload, payload);
    let entry = encode_entry("host:1+1", "q", payload, &Failure::new("Error", "x"), 0);
    backend.complete(&id, Outcome::Failure { entry }).await.unwrap();
    let q = Queue::new(Arc::clone(&backend));
    let f = q.failed(0, 0).await.unwrap().remove(0);
    assert_eq!(f.payload.as_deref(), Some(payload));
    q.retry_and_remove_failed(&f).await.unwrap();
    assert_eq!(backend.queue_range("q", 0, -1).await.unwrap(), vec![payload.to_owned()]);
    // Cleaning with requeue also keeps the bytes.
    backend.claim(&id, &["q".to_owned()], "t").await.unwrap().unwrap();
    backend.clean_worker(&id, Orphan::Requeue).await.unwrap().unwrap();
    assert_eq!(backend.queue_range("q", 0, -1).await.unwrap(), vec![payload.to_owned()]);
}

/// `retry_stuck_jobs` reads the failed list a page at a time (no read asks
/// for more than [`resq_core::queue::RETRY_PAGE`] entries, none for "all"),
/// and with several pages of entries, stuck ones interleaved with ordinary
/// failures, still retries each stuck job exactly once.
pub async fn retry_stuck_jobs_reads_the_failed_list_in_pages(backend: Arc<dyn Backend>) {
    let page = resq_core::queue::RETRY_PAGE;
    let stuck = Failure::new(WORKER_TIMEOUT, WORKER_TIMEOUT).with_backtrace(vec![
        "killed by test".into(),
        FORCE_CLEAN_MARK.into(),
        "resq".into(),
    ]);
    let total = i64::try_from(page * 3 + 17).unwrap();
    let mut stuck_count = 0;
    for n in 0..total {
        if n % 4 == 3 {
            backend.push_failed(&entry(n)).await.unwrap();
        } else {
            let payload = format!(r#"{{"class":"job","queue":"q","args":[{n}]}}"#);
            backend
                .push_failed(&encode_entry("w", "q", &payload, &stuck, 1))
                .await
                .unwrap();
            stuck_count += 1;
        }
    }
    let counting = crate::counting::Counting::new(Arc::clone(&backend));
    let q = Queue::new(Arc::clone(&counting) as Arc<dyn Backend>);
    assert_eq!(q.retry_stuck_jobs().await.unwrap(), stuck_count);
    let widest = counting.widest("failed_range");
    assert!(
        matches!(widest, Some(Some(w)) if w <= page as u64),
        "retry_stuck_jobs read up to {widest:?} failed entries at once (page {page})"
    );
    assert_eq!(
        q.failed_count().await.unwrap(),
        u64::try_from(total).unwrap() - stuck_count
    );
    let mut seen: Vec<i64> = backend
        .queue_range("q", 0, -1)
        .await
        .unwrap()
        .iter()
        .map(|raw| resq_core::Job::decode(raw).unwrap().args[0].as_i64().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..total).filter(|n| n % 4 != 3).collect::<Vec<_>>());
}

/// `enqueue_front` writes node-resque's bytes at the head of the queue, so
/// the job runs before those already waiting.
pub async fn enqueue_front_puts_the_job_at_the_head(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    q.enqueue("q", "later", (1,)).await.unwrap();
    q.enqueue("q", "later", (2,)).await.unwrap();
    assert!(q.enqueue_front("q", "first", (0,)).await.unwrap());
    let raw: Vec<String> = q
        .queued("q", 0, -1)
        .await
        .unwrap()
        .iter()
        .map(|d| d.raw().to_owned())
        .collect();
    assert_eq!(
        raw,
        vec![
            r#"{"class":"first","queue":"q","args":[0]}"#.to_owned(),
            r#"{"class":"later","queue":"q","args":[1]}"#.to_owned(),
            r#"{"class":"later","queue":"q","args":[2]}"#.to_owned(),
        ]
    );
    assert!(matches!(
        q.enqueue_front("", "x", ()).await,
        Err(Error::InvalidArgument(_))
    ));
}

/// Times beyond a JavaScript `Date`'s range (and delays that end there) are
/// refused with [`Error::InvalidArgument`] before anything is stored, with
/// no overflow; the furthest valid time is scheduled and read back.
pub async fn out_of_range_times_are_refused(backend: Arc<dyn Backend>) {
    use resq_core::time::MAX_TIMESTAMP_MS;
    let q = Queue::new(Arc::clone(&backend));
    let refused = [
        (
            "enqueue_in(Duration::MAX)",
            q.enqueue_in(Duration::MAX, "q", "far", ()).await,
        ),
        (
            "enqueue_in(u64::MAX ms)",
            q.enqueue_in(Duration::from_millis(u64::MAX), "q", "far", ()).await,
        ),
        ("enqueue_at(i64::MAX)", q.enqueue_at(i64::MAX, "q", "far", ()).await),
        ("enqueue_at(i64::MIN)", q.enqueue_at(i64::MIN, "q", "far", ()).await),
        (
            "enqueue_at(max + 1)",
            q.enqueue_at(MAX_TIMESTAMP_MS + 1, "q", "far", ()).await,
        ),
        // Its bucket (a second later) would lie beyond a Date's range.
        (
            "enqueue_at(max - 499)",
            q.enqueue_at(MAX_TIMESTAMP_MS - 499, "q", "far", ()).await,
        ),
        (
            "enqueue_at(-max - 1)",
            q.enqueue_at(-MAX_TIMESTAMP_MS - 1, "q", "far", ()).await,
        ),
    ];
    for (what, got) in refused {
        match got {
            Err(Error::InvalidArgument(reason)) => assert!(reason.contains("out of range"), "{what}: {reason}"),
            other => panic!("{what}: expected InvalidArgument, got {other:?}"),
        }
    }
    assert!(q.timestamps().await.unwrap().is_empty());
    assert!(q.queues().await.unwrap().is_empty());
    // Reads at extreme times neither overflow nor find anything.
    assert!(q.delayed_at(i64::MAX).await.unwrap().tasks.is_empty());
    assert!(q.delayed_at(i64::MIN).await.unwrap().tasks.is_empty());

    // The edge of the range is valid, far in the future, and round-trips:
    // its bucket is the last second a Date can hold.
    let edge = MAX_TIMESTAMP_MS - 500;
    q.enqueue_at(edge, "q", "far", ()).await.unwrap();
    let bucket = delayed_bucket_of_ms(edge);
    assert_eq!(q.timestamps().await.unwrap(), vec![MAX_TIMESTAMP_MS]);
    assert_eq!(q.delayed_at(MAX_TIMESTAMP_MS).await.unwrap().tasks.len(), 1);
    assert_eq!(q.scheduled_at("q", "far", ()).await.unwrap(), vec![bucket]);
}

/// A lock TTL too long for the store (`Duration::MAX`) is capped, not an
/// error or an overflow: the lock is taken and expires far in the future.
pub async fn huge_lock_ttls_are_capped(backend: Arc<dyn Backend>) {
    assert!(backend.acquire_lock("lock:far", "v", Duration::MAX).await.unwrap());
    backend.set_lock("lock:set", "v", Duration::MAX).await.unwrap();
    assert_eq!(backend.incr_lock("lock:n", 1, Duration::MAX).await.unwrap(), 1);
    for key in ["lock:far", "lock:set", "lock:n"] {
        let entry = backend.get_lock(key).await.unwrap().expect("the lock is held");
        let ttl = entry.ttl.expect("the lock expires");
        assert!(ttl > Duration::from_secs(50 * 365 * 24 * 3600), "{key}: {ttl:?}");
    }
}
