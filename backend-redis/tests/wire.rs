//! The Redis backend's wire format: the exact keys and bytes Resque,
//! node-resque and resque-scheduler read and write (spec §1, §2, §8.9).
//! Behaviour shared by every backend lives in the conformance suite; this
//! file checks what only Redis has: key names and stored bytes.

mod common;

use redis::AsyncCommands;
use resq_core::task::{JobContext, TaskError, Tasks};
use resq_core::{
    DelayedStore, FailedStore, Queue, QueueStore, Scheduler, SchedulerConfig, Worker, WorkerConfig, WorkerRegistry,
    WorkerStatus,
};
use resq_redis::RedisBackend;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A fresh backend plus a raw connection and the namespace prefix, or a skip.
async fn setup(test: &str) -> Option<(Arc<RedisBackend>, redis::aio::MultiplexedConnection, String)> {
    let (b, ns, conn) = common::fresh_with_raw(test).await?;
    Some((Arc::new(b), conn, format!("{ns}:")))
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn recording_tasks(log: &Arc<Mutex<Vec<Vec<Value>>>>) -> Arc<Tasks> {
    let mut tasks = Tasks::new();
    for class in ["Archive", "add"] {
        let log = Arc::clone(log);
        tasks
            .register_fn(class, move |args: Vec<Value>, _ctx: JobContext| {
                let log = Arc::clone(&log);
                async move {
                    log.lock().expect("log").push(args);
                    Ok::<_, TaskError>(())
                }
            })
            .unwrap();
    }
    Arc::new(tasks)
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_writes_resque_keys_and_bytes() {
    let Some((backend, mut raw, ns)) = setup("enqueue_writes_resque_keys_and_bytes").await else {
        return;
    };
    let q = Queue::new(backend.clone());
    q.enqueue("math", "add", (1, 2.0)).await.unwrap();
    let items: Vec<String> = raw.lrange(format!("{ns}queue:math"), 0, -1).await.unwrap();
    assert_eq!(items, vec![r#"{"class":"add","queue":"math","args":[1,2]}"#.to_owned()]);
    let queues: Vec<String> = raw.smembers(format!("{ns}queues")).await.unwrap();
    assert_eq!(queues, vec!["math".to_owned()]);

    q.enqueue_at(9_500, "math", "add", (3, 4)).await.unwrap();
    let payload = r#"{"class":"add","queue":"math","args":[3,4]}"#;
    let score: Option<f64> = raw.zscore(format!("{ns}delayed_queue_schedule"), "10").await.unwrap();
    assert_eq!(score, Some(10.0));
    let bucket: Vec<String> = raw.lrange(format!("{ns}delayed:10"), 0, -1).await.unwrap();
    assert_eq!(bucket, vec![payload.to_owned()]);
    let stamps: Vec<String> = raw.smembers(format!("{ns}timestamps:{payload}")).await.unwrap();
    assert_eq!(stamps, vec!["delayed:10".to_owned()]);
    backend.delete_namespace().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_keys_match_node_resque() {
    let Some((backend, mut raw, ns)) = setup("worker_keys_match_node_resque").await else {
        return;
    };
    let q = Queue::new(backend.clone());
    q.enqueue("q", "slow", ()).await.unwrap();
    let mut tasks = Tasks::new();
    let release = Arc::new(tokio::sync::Notify::new());
    let r = Arc::clone(&release);
    tasks
        .register_fn("slow", move |_: (), _ctx: JobContext| {
            let r = Arc::clone(&r);
            async move {
                r.notified().await;
                Ok::<_, TaskError>(())
            }
        })
        .unwrap();
    let mut config = WorkerConfig::for_queues(["q"]);
    config.name = Some("host:7+1".into());
    config.poll_interval = Duration::from_millis(100);
    let worker = Worker::new(backend.clone(), Arc::new(tasks), config);
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let t = stop.clone();
        async move { worker.run_until(t).await }
    });

    let working_key = format!("{ns}worker:host:7+1:q");
    let mut working: Option<String> = None;
    for _ in 0..250 {
        working = raw.get(&working_key).await.unwrap();
        if working.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let working = working.expect("working-on record written");
    // The job's bytes are spliced in unchanged: `args:[]` stays `[]` (cjson would write `{}`).
    assert!(
        working.contains(r#""payload":{"class":"slow","queue":"q","args":[]}"#),
        "{working}"
    );
    let parsed: Value = serde_json::from_str(&working).unwrap();
    assert_eq!(parsed["worker"], "host:7+1");
    assert_eq!(parsed["queue"], "q");
    assert!(resq_core::time::parse_date(parsed["run_at"].as_str().unwrap()).is_some());

    let members: Vec<String> = raw.smembers(format!("{ns}workers")).await.unwrap();
    assert_eq!(members, vec!["host:7+1:q".to_owned()]);
    let started: String = raw.get(format!("{ns}worker:host:7+1:q:started")).await.unwrap();
    assert!(started.parse::<i64>().is_ok(), "started is seconds: {started}");
    let ping: String = raw.get(format!("{ns}worker:ping:host:7+1")).await.unwrap();
    let ping: Value = serde_json::from_str(&ping).unwrap();
    assert!(ping["time"].is_i64());
    assert_eq!(ping["name"], "host:7+1");
    assert_eq!(ping["queues"], "q");

    release.notify_one();
    let mut processed: Option<String> = None;
    for _ in 0..250 {
        processed = raw.get(format!("{ns}stat:processed")).await.unwrap();
        if processed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(processed.as_deref(), Some("1"), "stat:processed is a decimal string");
    stop.cancel();
    running.await.unwrap().unwrap();
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{ns}worker*"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(left.is_empty(), "unregistering removes every worker key: {left:?}");
    backend.delete_namespace().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ruby_shaped_data_is_read_and_worked() {
    let Some((backend, mut raw, ns)) = setup("ruby_shaped_data_is_read_and_worked").await else {
        return;
    };
    // A Ruby job (no `queue` key), a resque-scheduler delayed item (class,
    // args, queue order) that is due, and resque-scheduler's
    // `delayed:last_enqueued_at` hash, which matches `delayed:*`.
    let ruby_job = r#"{"class":"Archive","args":[35,"tar"]}"#;
    let rs_item = r#"{"class":"add","args":[1,2],"queue":"files"}"#;
    let _: () = raw.rpush(format!("{ns}queue:files"), ruby_job).await.unwrap();
    let _: () = raw.sadd(format!("{ns}queues"), "files").await.unwrap();
    let _: () = raw.rpush(format!("{ns}delayed:100"), rs_item).await.unwrap();
    let _: () = raw
        .sadd(format!("{ns}timestamps:{rs_item}"), "delayed:100")
        .await
        .unwrap();
    let _: () = raw
        .zadd(format!("{ns}delayed_queue_schedule"), "100", 100)
        .await
        .unwrap();
    let _: () = raw
        .hset(
            format!("{ns}delayed:last_enqueued_at"),
            "nightly",
            "2024-01-02 03:04:05 +0000",
        )
        .await
        .unwrap();

    let q = Queue::new(backend.clone());
    assert_eq!(q.timestamps().await.unwrap(), vec![100_000], "the hash is not a bucket");
    assert_eq!(q.scheduled_at("files", "add", (1, 2)).await.unwrap(), vec![100]);
    let report = Scheduler::new(backend.clone(), SchedulerConfig::default())
        .unwrap()
        .poll()
        .await
        .unwrap();
    assert_eq!(report.promoted, 1);
    let queued: Vec<String> = raw.lrange(format!("{ns}queue:files"), 0, -1).await.unwrap();
    assert_eq!(
        queued,
        vec![ruby_job.to_owned(), rs_item.to_owned()],
        "promoted bytes unchanged"
    );

    let log = Arc::new(Mutex::new(Vec::new()));
    let worker = Worker::new(
        backend.clone(),
        recording_tasks(&log),
        WorkerConfig::for_queues(["files"]),
    );
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let t = stop.clone();
        async move { worker.run_until(t).await }
    });
    wait_for("both Ruby-shaped jobs ran", || log.lock().unwrap().len() == 2).await;
    stop.cancel();
    running.await.unwrap().unwrap();
    let got = log.lock().unwrap().clone();
    assert_eq!(got[0], vec![Value::from(35), Value::from("tar")]);
    assert_eq!(got[1], vec![Value::from(1), Value::from(2)]);
    backend.delete_namespace().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ruby_workers_and_failures_are_understood() {
    let Some((backend, mut raw, ns)) = setup("ruby_workers_and_failures_are_understood").await else {
        return;
    };
    // A Ruby worker: id host:pid:queues, a working-on record without `worker`.
    let _: () = raw
        .sadd(format!("{ns}workers"), "rubyhost:42:files,mail")
        .await
        .unwrap();
    let ruby_working = r#"{"queue":"files","run_at":"2024-01-02T03:04:05Z","payload":{"class":"Archive","args":[1]}}"#;
    let _: () = raw
        .set(format!("{ns}worker:rubyhost:42:files,mail"), ruby_working)
        .await
        .unwrap();
    let q = Queue::new(backend.clone());
    let workers = q.workers().await.unwrap();
    assert_eq!(workers.get("rubyhost:42").map(String::as_str), Some("files,mail"));
    match q.all_working_on().await.unwrap().get("rubyhost:42") {
        Some(WorkerStatus::Working(w)) => {
            assert_eq!(w.queue, "files");
            assert_eq!(w.payload, r#"{"class":"Archive","args":[1]}"#);
        }
        other => panic!("expected the Ruby worker busy, got {other:?}"),
    }
    // A Ruby failure entry, already retried once (`retried_at`), is listed and retried.
    let ruby_failure = r#"{"failed_at":"2024/01/02 03:04:05 UTC","payload":{"class":"Archive","args":[1]},"exception":"RuntimeError","error":"disk full","backtrace":["x.rb:1"],"worker":"rubyhost:42:files","queue":"files","retried_at":"2024/01/02 03:05:00 UTC"}"#;
    let _: () = raw.rpush(format!("{ns}failed"), ruby_failure).await.unwrap();
    let failed = q.failed(0, -1).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].exception.as_deref(), Some("RuntimeError"));
    assert!(failed[0].retried_at.is_some());
    q.retry_and_remove_failed(&failed[0]).await.unwrap();
    let queued: Vec<String> = raw.lrange(format!("{ns}queue:files"), 0, -1).await.unwrap();
    assert_eq!(queued, vec![r#"{"class":"Archive","args":[1]}"#.to_owned()]);
    assert_eq!(q.failed_count().await.unwrap(), 0);
    backend.delete_namespace().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_lock_is_node_resques_key() {
    let Some((backend, mut raw, ns)) = setup("leader_lock_is_node_resques_key").await else {
        return;
    };
    let s = Scheduler::new(
        backend.clone(),
        SchedulerConfig {
            name: Some("sched-1".into()),
            ..SchedulerConfig::default()
        },
    )
    .unwrap();
    assert!(s.poll().await.unwrap().leader);
    let key = format!("{ns}resque_scheduler_leader_lock");
    let holder: String = raw.get(&key).await.unwrap();
    assert_eq!(holder, "sched-1");
    let ttl: i64 = raw.pttl(&key).await.unwrap();
    assert!(ttl > 0, "the leader lock always has a TTL");
    // A node-resque scheduler holding the key is respected.
    assert!(s.release().await.unwrap());
    let _: () = raw.set_ex(&key, "node-host:99", 30).await.unwrap();
    assert!(!s.poll().await.unwrap().leader);
    let still: String = raw.get(&key).await.unwrap();
    assert_eq!(
        still, "node-host:99",
        "resq neither renews nor deletes another scheduler's lock"
    );
    assert!(!s.release().await.unwrap());
    backend.delete_namespace().await.unwrap();
}

/// Plugin keys are node-resque's: QueueLock `lock:<class>:<queue>:<args>`
/// holding `now + lockTimeout + 1` with a TTL; a node-resque-style lock
/// written without a TTL is honoured while its time has not passed and
/// taken over (with a TTL) once it has; JobLock honours a held
/// `workerslock:` key; Retry writes `resque-retry:` and
/// `failure-resque-retry:` with node-resque's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_keys_match_node_resque() {
    use resq_core::plugins::{JobLock, QueueLock, Retry};
    use resq_core::task::TaskDef;
    let Some((backend, mut raw, ns)) = setup("plugin_keys_match_node_resque").await else {
        return;
    };
    let dynb: Arc<dyn resq_core::Backend> = backend.clone();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let r = Arc::clone(&ran);
    let mut tasks = Tasks::new();
    tasks
        .define(
            TaskDef::from_fn("job", |_: Vec<Value>, _ctx: JobContext| async {
                Ok::<_, TaskError>(())
            })
            .plugin(QueueLock::new())
            .plugin_options("QueueLock", serde_json::json!({"lockTimeout": 100})),
        )
        .unwrap();
    tasks
        .define(
            TaskDef::from_fn("held", move |args: Vec<Value>, _ctx: JobContext| {
                let r = Arc::clone(&r);
                async move {
                    r.lock().unwrap().push(args);
                    Ok::<_, TaskError>(())
                }
            })
            .plugin(JobLock::new())
            .plugin_options("JobLock", serde_json::json!({"reEnqueue": false})),
        )
        .unwrap();
    tasks
        .define(
            TaskDef::from_fn("brokenJob", |_: Vec<Value>, _ctx: JobContext| async {
                Err::<(), _>(TaskError::new("BUSTED"))
            })
            .plugin(Retry::new().retry_limit(3).retry_delay(Duration::from_secs(60))),
        )
        .unwrap();
    let tasks = Arc::new(tasks);
    let q = Queue::with_tasks(Arc::clone(&dynb), Arc::clone(&tasks));
    let now_s = (resq_core::time::now_ms() + 500) / 1000;

    // QueueLock: key, value and TTL.
    assert!(q.enqueue("q", "job", (1, 2)).await.unwrap());
    let key = format!("{ns}lock:job:q:[1,2]");
    let value: i64 = raw.get::<_, String>(&key).await.unwrap().parse().unwrap();
    assert!((value - (now_s + 101)).abs() <= 1, "value {value}");
    let ttl: i64 = raw.ttl(&key).await.unwrap();
    assert!(ttl > 95 && ttl <= 100, "ttl {ttl}");
    // A lock node-resque set without a TTL (issue #287): honoured while in
    // force, taken over once its time has passed.
    let _: () = raw.set(format!("{ns}lock:job:q:[3]"), now_s + 50).await.unwrap();
    assert!(!q.enqueue("q", "job", (3,)).await.unwrap());
    let _: () = raw.set(format!("{ns}lock:job:q:[4]"), now_s - 5).await.unwrap();
    assert!(q.enqueue("q", "job", (4,)).await.unwrap());
    let ttl: i64 = raw.ttl(format!("{ns}lock:job:q:[4]")).await.unwrap();
    assert!(ttl > 0, "the taken-over lock has no TTL");
    let listed: Vec<String> = q.locks().await.unwrap().into_keys().collect();
    assert!(listed.contains(&"lock:job:q:[1,2]".to_owned()), "{listed:?}");

    // JobLock: a workerslock key held by someone else (node-resque) keeps
    // resq from running the identical job.
    let _: () = raw
        .set_ex(format!("{ns}workerslock:held:w:[7]"), now_s + 3601, 3600)
        .await
        .unwrap();
    q.enqueue("w", "held", (7,)).await.unwrap();
    q.enqueue("w", "held", (8,)).await.unwrap();
    // Retry's keys after one failed attempt.
    q.enqueue("w", "brokenJob", (1, 2)).await.unwrap();
    let worker = Worker::new(Arc::clone(&dynb), Arc::clone(&tasks), WorkerConfig::for_queues(["w"]));
    let stop = CancellationToken::new();
    let handle = tokio::spawn({
        let t = stop.clone();
        async move { worker.run_until(t).await }
    });
    let q2 = q.clone();
    let mut retried = false;
    for _ in 0..250 {
        retried = q2.scheduled_at("w", "brokenJob", (1, 2)).await.unwrap().len() == 1;
        if retried && ran.lock().unwrap().len() == 1 && q2.length("w").await.unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    handle.await.unwrap().unwrap();
    assert!(retried);
    assert_eq!(
        *ran.lock().unwrap(),
        vec![vec![serde_json::json!(8)]],
        "ran the locked job"
    );
    let still: Option<String> = raw.get(format!("{ns}workerslock:held:w:[7]")).await.unwrap();
    assert!(still.is_some(), "resq released a lock it did not hold");
    let count: String = raw.get(format!("{ns}resque-retry:brokenJob:1-2")).await.unwrap();
    assert_eq!(count, "0");
    let record: String = raw
        .get(format!("{ns}failure-resque-retry:brokenJob:1-2"))
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&record).unwrap();
    assert_eq!(v["payload"], serde_json::json!([1, 2]));
    assert_eq!(v["exception"], "Error: BUSTED");
    assert_eq!(v["worker"], "brokenJob");
    assert_eq!(v["queue"], "w");
    let ttl: i64 = raw.ttl(format!("{ns}resque-retry:brokenJob:1-2")).await.unwrap();
    assert!(ttl > 3600, "attempt key TTL {ttl}");
}

/// A registered worker without a ping key gets a ping probe from
/// `stale_workers` (stamped now, so not stale yet) and, if nothing renews
/// it, is reported once the probe is older than the cutoff. A Ruby worker
/// (with a `workers:heartbeat` entry and never a ping) is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpinged_workers_get_a_probe_but_ruby_workers_do_not() {
    use resq_core::WorkerRegistry;
    let Some((backend, mut raw, ns)) = setup("unpinged_workers_get_a_probe_but_ruby_workers_do_not").await else {
        return;
    };
    let (node, ruby) = ("node-idle:7:*", "rubyhost:42:*");
    let _: () = raw.sadd(format!("{ns}workers"), &[node, ruby]).await.unwrap();
    let _: () = raw
        .hset(format!("{ns}workers:heartbeat"), ruby, "2026-11-28T21:36:02+00:00")
        .await
        .unwrap();
    let before = resq_core::time::now_ms();
    assert!(backend.stale_workers(before - 60_000).await.unwrap().is_empty());
    let probe: Option<String> = raw.get(format!("{ns}worker:ping:node-idle:7")).await.unwrap();
    let probe: Value = serde_json::from_str(&probe.expect("a probe ping")).unwrap();
    assert_eq!(probe["name"], "node-idle:7");
    assert_eq!(probe["queues"], "*");
    assert!(probe["time_ms"].as_i64().unwrap() >= before);
    assert!(!raw
        .exists::<_, bool>(format!("{ns}worker:ping:rubyhost:42"))
        .await
        .unwrap());
    // Nothing renewed the probe: once older than the cutoff, the worker is stale.
    let later = resq_core::time::now_ms() + 60_000;
    let stale = backend.stale_workers(later).await.unwrap();
    assert_eq!(
        stale,
        vec![resq_core::WorkerId {
            name: "node-idle:7".into(),
            queues: "*".into()
        }]
    );
    backend.delete_namespace().await.unwrap();
}

/// Every key under the test's namespace, without the prefix, sorted.
async fn keys_of(raw: &mut redis::aio::MultiplexedConnection, ns: &str) -> Vec<String> {
    let mut keys: Vec<String> = raw.keys(format!("{ns}*")).await.unwrap();
    for k in &mut keys {
        *k = k.trim_start_matches(ns).to_owned();
    }
    keys.sort();
    keys
}

/// Checks that each queue's enqueue-time record is in step (one time per
/// queued job), each time a plausible epoch ms (not in the future).
async fn records_match_queues(raw: &mut redis::aio::MultiplexedConnection, ns: &str, queues: &[&str], when: &str) {
    for q in queues {
        let len: u64 = raw.llen(format!("{ns}queue:{q}")).await.unwrap();
        let records: Vec<String> = raw.lrange(format!("{ns}resq:enqueued:{q}"), 0, -1).await.unwrap();
        assert_eq!(
            records.len() as u64,
            len,
            "{when}: queue {q} has {len} jobs and {} enqueue records",
            records.len()
        );
        let now = resq_core::time::now_ms();
        for r in &records {
            let ms: i64 = r.parse().unwrap_or_else(|_| panic!("{when}: record {r:?}"));
            assert!(ms > 1_600_000_000_000 && ms <= now, "{when}: record {ms}");
        }
    }
}

/// resq's enqueue time lives in its own list beside the queue,
/// `<ns>:resq:enqueued:<queue>`, one epoch-ms decimal string per queued
/// job, position by position; the queue list keeps Resque's exact bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_times_live_beside_the_queue() {
    let Some((backend, mut raw, ns)) = setup("enqueue_times_live_beside_the_queue").await else {
        return;
    };
    let before = resq_core::time::now_ms();
    Queue::new(backend.clone())
        .enqueue("math", "add", (1, 2))
        .await
        .unwrap();
    let after = resq_core::time::now_ms();
    let items: Vec<String> = raw.lrange(format!("{ns}queue:math"), 0, -1).await.unwrap();
    assert_eq!(items, [r#"{"class":"add","queue":"math","args":[1,2]}"#]);
    assert_eq!(
        keys_of(&mut raw, &ns).await,
        ["queue:math", "queues", "resq:enqueued:math"]
    );
    let times: Vec<String> = raw.lrange(format!("{ns}resq:enqueued:math"), 0, -1).await.unwrap();
    assert_eq!(times.len(), 1);
    assert!(times[0].chars().all(|c| c.is_ascii_digit()), "{times:?}");
    let ms: i64 = times[0].parse().unwrap();
    assert!(ms >= before && ms <= after, "{ms} not in {before}..{after}");
    // A second job goes to the tail of both lists, a front push to both heads.
    Queue::new(backend.clone())
        .enqueue("math", "add", (3, 4))
        .await
        .unwrap();
    backend
        .push_front("math", r#"{"class":"add","queue":"math","args":[0]}"#)
        .await
        .unwrap();
    let times: Vec<i64> = raw.lrange(format!("{ns}resq:enqueued:math"), 0, -1).await.unwrap();
    assert_eq!(times.len(), 3);
    assert_eq!(times[1], ms);
    assert!(times[0] >= times[2] && times[2] >= ms, "{times:?}");
    backend.delete_namespace().await.unwrap();
}

/// A job that another Resque client pushed (a raw `RPUSH`) puts the queue
/// out of step with its record: the queue's latency and the claimed jobs'
/// enqueue times are unknown until the queue drains, then known again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_head_job_has_unknown_latency() {
    let Some((backend, mut raw, ns)) = setup("a_foreign_head_job_has_unknown_latency").await else {
        return;
    };
    let admin = resq_admin::Admin::new(backend.clone());
    let foreign = r#"{"class":"add","queue":"q","args":[1,2]}"#;
    let _: () = raw.sadd(format!("{ns}queues"), "q").await.unwrap();
    let _: () = raw.rpush(format!("{ns}queue:q"), foreign).await.unwrap();
    let summary = admin.queues().await.unwrap();
    assert_eq!((summary[0].length, summary[0].latency_seconds), (1, None));
    Queue::new(backend.clone()).enqueue("q", "add", (3, 4)).await.unwrap();
    assert_eq!(admin.queues().await.unwrap()[0].latency_seconds, None);
    let w = resq_core::WorkerId::new("h:1+1", &["q".to_owned()]);
    let got = backend.claim(&w, &["q".to_owned()], "t").await.unwrap().unwrap();
    assert_eq!((got.payload.as_str(), got.enqueued_at_ms), (foreign, None));
    assert_eq!(admin.queues().await.unwrap()[0].latency_seconds, None);
    let got = backend.claim(&w, &["q".to_owned()], "t").await.unwrap().unwrap();
    assert_eq!(got.enqueued_at_ms, None);
    // Drained: in step again.
    Queue::new(backend.clone()).enqueue("q", "add", (5, 6)).await.unwrap();
    assert!(admin.queues().await.unwrap()[0].latency_seconds.is_some());
    let got = backend.claim(&w, &["q".to_owned()], "t").await.unwrap().unwrap();
    assert!(got.enqueued_at_ms.is_some());
    backend.delete_namespace().await.unwrap();
}

/// Every resq path that queues or removes jobs keeps exactly one record per
/// queued job, and a drained or deleted queue leaves no record key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resq_only_use_leaves_no_enqueue_records() {
    let Some((backend, mut raw, ns)) = setup("resq_only_use_leaves_no_enqueue_records").await else {
        return;
    };
    let q = Queue::new(backend.clone());
    let qs = ["a", "b"];
    let job = |class: &str, n: i64| format!(r#"{{"class":"{class}","queue":"a","args":[{n}]}}"#);
    for n in 0..4 {
        backend.push("a", &job("X", n % 2)).await.unwrap();
    }
    backend
        .push_batch(&[
            resq_core::QueuedJob {
                queue: "a".into(),
                payload: job("Y", 1),
            },
            resq_core::QueuedJob {
                queue: "b".into(),
                payload: job("Y", 2),
            },
        ])
        .await
        .unwrap();
    backend.push_front("a", &job("Z", 0)).await.unwrap();
    records_match_queues(&mut raw, &ns, &qs, "after pushes").await;
    assert_eq!(backend.remove_from_queue("a", &job("X", 0), 1).await.unwrap(), 1);
    assert_eq!(backend.remove_from_queue("a", &job("X", 1), -1).await.unwrap(), 1);
    records_match_queues(&mut raw, &ns, &qs, "after LREM").await;
    assert_eq!(backend.remove_by_class("a", "Y").await.unwrap(), 1);
    records_match_queues(&mut raw, &ns, &qs, "after remove_by_class").await;
    let w = resq_core::WorkerId::new("h:1+1", &["a".to_owned()]);
    backend.register_worker(&w, resq_core::time::now_ms()).await.unwrap();
    backend.claim(&w, &["a".to_owned()], "t").await.unwrap().unwrap();
    records_match_queues(&mut raw, &ns, &qs, "after a claim").await;
    backend.clean_worker(&w, resq_core::Orphan::Requeue).await.unwrap();
    records_match_queues(&mut raw, &ns, &qs, "after a requeue").await;
    let slots: Vec<resq_core::WorkerId> = (1..=5)
        .map(|i| resq_core::WorkerId::new(format!("h:1+1.{i}"), &["a".to_owned()]))
        .collect();
    let got = backend.claim_batch(&slots, &["a".to_owned()], "t").await.unwrap();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|(_, c)| c.enqueued_at_ms.is_some()));
    // The failed list and the schedule put jobs back on queues.
    let entry = resq_core::failed::encode_entry(
        "w",
        "a",
        &job("F", 1),
        &resq_core::Failure::new("E", "e"),
        resq_core::time::now_ms(),
    );
    backend.push_failed(&entry).await.unwrap();
    assert!(backend.retry_failed_at(0, &entry, "a", &job("F", 1)).await.unwrap());
    backend.schedule(5, &job("D", 1)).await.unwrap();
    backend.schedule(6, &job("D", 2)).await.unwrap();
    assert!(backend.promote_delayed(5, &job("D", 1), "a").await.unwrap());
    assert_eq!(backend.promote_due(6, 10).await.unwrap().len(), 1);
    records_match_queues(&mut raw, &ns, &qs, "after retries and promotions").await;
    assert_eq!(backend.queue_len("a").await.unwrap(), 3);
    for _ in 0..3 {
        backend.claim(&w, &["a".to_owned()], "t").await.unwrap().unwrap();
    }
    q.del_queue("b").await.unwrap();
    let left: Vec<String> = keys_of(&mut raw, &ns)
        .await
        .into_iter()
        .filter(|k| k.starts_with("resq:enqueued:"))
        .collect();
    assert!(left.is_empty(), "records left behind: {left:?}");
    backend.delete_namespace().await.unwrap();
}

/// A foreign client that pops a resq job puts the queue out of step: the
/// next resq claim reports an unknown time and drops the record, and the
/// queue is in step again once it drains; an empty queue's leftover record
/// goes when the overview reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_pop_makes_times_unknown_until_the_queue_drains() {
    let Some((backend, mut raw, ns)) = setup("a_foreign_pop_makes_times_unknown_until_the_queue_drains").await else {
        return;
    };
    let q = Queue::new(backend.clone());
    let records = format!("{ns}resq:enqueued:q");
    q.enqueue("q", "add", (1,)).await.unwrap();
    q.enqueue("q", "add", (2,)).await.unwrap();
    let _: Option<String> = raw.lpop(format!("{ns}queue:q"), None).await.unwrap();
    let n: u64 = raw.llen(&records).await.unwrap();
    assert_eq!(n, 2, "the popped job's record stays for now");
    let admin = resq_admin::Admin::new(backend.clone());
    assert_eq!(admin.queues().await.unwrap()[0].latency_seconds, None);
    let w = resq_core::WorkerId::new("h:1+1", &["q".to_owned()]);
    let got = backend.claim(&w, &["q".to_owned()], "t").await.unwrap().unwrap();
    assert_eq!(got.enqueued_at_ms, None, "out of step: unknown");
    let exists: bool = raw.exists(&records).await.unwrap();
    assert!(!exists, "a resq claim out of step drops the record");
    q.enqueue("q", "add", (3,)).await.unwrap();
    let _: Option<String> = raw.lpop(format!("{ns}queue:q"), None).await.unwrap();
    let exists: bool = raw.exists(&records).await.unwrap();
    assert!(exists);
    assert_eq!(admin.queues().await.unwrap()[0].latency_seconds, Some(0.0));
    let exists: bool = raw.exists(&records).await.unwrap();
    assert!(!exists, "the overview drops an empty queue's records");
    q.enqueue("q", "add", (4,)).await.unwrap();
    let got = backend.claim(&w, &["q".to_owned()], "t").await.unwrap().unwrap();
    assert!(got.enqueued_at_ms.is_some(), "in step again");
    backend.delete_namespace().await.unwrap();
}

/// Removing jobs from the middle of a queue removes the enqueue times at
/// the same positions, so the others keep theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removals_keep_the_other_jobs_times() {
    let Some((backend, mut raw, ns)) = setup("removals_keep_the_other_jobs_times").await else {
        return;
    };
    let rkey = format!("{ns}resq:enqueued:q");
    let job = |class: &str| format!(r#"{{"class":"{class}","queue":"q","args":[]}}"#);
    for class in ["X", "Y", "X", "Z", "X", "Y"] {
        backend.push("q", &job(class)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let t: Vec<String> = raw.lrange(&rkey, 0, -1).await.unwrap();
    assert_eq!(t.len(), 6);
    assert_eq!(backend.remove_from_queue("q", &job("X"), -1).await.unwrap(), 1);
    let now: Vec<String> = raw.lrange(&rkey, 0, -1).await.unwrap();
    assert_eq!(
        now,
        [
            t[0].as_str(),
            t[1].as_str(),
            t[2].as_str(),
            t[3].as_str(),
            t[5].as_str()
        ]
    );
    assert_eq!(backend.remove_from_queue("q", &job("X"), 1).await.unwrap(), 1);
    let now: Vec<String> = raw.lrange(&rkey, 0, -1).await.unwrap();
    assert_eq!(now, [t[1].as_str(), t[2].as_str(), t[3].as_str(), t[5].as_str()]);
    assert_eq!(backend.remove_by_class("q", "Y").await.unwrap(), 2);
    let now: Vec<String> = raw.lrange(&rkey, 0, -1).await.unwrap();
    assert_eq!(now, [t[2].as_str(), t[3].as_str()]);
    assert_eq!(backend.remove_from_queue("q", &job("X"), 0).await.unwrap(), 1);
    let now: Vec<String> = raw.lrange(&rkey, 0, -1).await.unwrap();
    assert_eq!(now, [t[3].as_str()]);
    // Counts beyond the length mean "all, from that end".
    backend.push("q", &job("X")).await.unwrap();
    backend.push("q", &job("X")).await.unwrap();
    assert_eq!(backend.remove_from_queue("q", &job("X"), i64::MIN).await.unwrap(), 2);
    backend.push("q", &job("X")).await.unwrap();
    assert_eq!(backend.remove_from_queue("q", &job("X"), i64::MAX).await.unwrap(), 1);
    let now: Vec<String> = raw.lrange(&rkey, 0, -1).await.unwrap();
    assert_eq!(now, [t[3].as_str()]);
    assert_eq!(backend.remove_by_class("q", "Z").await.unwrap(), 1);
    let exists: bool = raw.exists(&rkey).await.unwrap();
    assert!(!exists);
    // Out of step (a foreign push), a removal drops the record.
    backend.push("q", &job("X")).await.unwrap();
    let _: () = raw.rpush(format!("{ns}queue:q"), job("F")).await.unwrap();
    assert_eq!(backend.remove_from_queue("q", &job("F"), 0).await.unwrap(), 1);
    let exists: bool = raw.exists(&rkey).await.unwrap();
    assert!(!exists, "out of step: dropped");
    backend.delete_namespace().await.unwrap();
}

/// Foreign pushes (raw `RPUSH`) and pops (raw `LPOP`) mixed with resq's
/// pushes and claims: resq never reports an enqueue time younger than the
/// claimed job's real one (unknown is the honest answer), and once the
/// queue drains its times are known again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_pushes_and_pops_never_give_too_young_times() {
    let Some((backend, mut raw, ns)) = setup("foreign_pushes_and_pops_never_give_too_young_times").await else {
        return;
    };
    let qkey = format!("{ns}queue:q");
    let _: () = raw.sadd(format!("{ns}queues"), "q").await.unwrap();
    let w = resq_core::WorkerId::new("h:1+1", &["q".to_owned()]);
    let qs = ["q".to_owned()];
    // The case of the design note: a foreign job ahead of a resq job.
    let foreign = r#"{"class":"F","queue":"q","args":[0]}"#;
    let _: () = raw.rpush(&qkey, foreign).await.unwrap();
    backend
        .push("q", r#"{"class":"R","queue":"q","args":[0]}"#)
        .await
        .unwrap();
    let got = backend.claim(&w, &qs, "t").await.unwrap().unwrap();
    assert_eq!((got.payload.as_str(), got.enqueued_at_ms), (foreign, None));
    let got = backend.claim(&w, &qs, "t").await.unwrap().unwrap();
    assert_eq!(got.enqueued_at_ms, None);
    // A model of the queue: each job's payload and the time just after it
    // was pushed (no real enqueue time is later).
    let mut model: std::collections::VecDeque<(String, i64)> = Default::default();
    let mut seed: u64 = 12345;
    let mut known = 0;
    for n in 0..300 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let payload = format!(r#"{{"class":"M","queue":"q","args":[{n}]}}"#);
        match (seed >> 33) % 6 {
            0 => {
                let _: () = raw.rpush(&qkey, &payload).await.unwrap();
                model.push_back((payload, resq_core::time::now_ms()));
            }
            1 | 2 => {
                backend.push("q", &payload).await.unwrap();
                model.push_back((payload, resq_core::time::now_ms()));
            }
            3 => {
                let popped: Option<String> = raw.lpop(&qkey, None).await.unwrap();
                assert_eq!(popped, model.pop_front().map(|(p, _)| p));
            }
            _ => {
                let got = backend.claim(&w, &qs, "t").await.unwrap();
                let want = model.pop_front();
                assert_eq!(
                    got.as_ref().map(|c| c.payload.clone()),
                    want.as_ref().map(|(p, _)| p.clone())
                );
                if let (Some(c), Some((_, latest))) = (got, want) {
                    if let Some(at) = c.enqueued_at_ms {
                        known += 1;
                        assert!(at <= latest, "step {n}: reported {at}, pushed by {latest}");
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(known > 0, "some times were known");
    while backend.claim(&w, &qs, "t").await.unwrap().is_some() {}
    backend
        .push("q", r#"{"class":"R","queue":"q","args":[1]}"#)
        .await
        .unwrap();
    let admin = resq_admin::Admin::new(backend.clone());
    assert!(admin.queues().await.unwrap()[0].latency_seconds.is_some());
    let got = backend.claim(&w, &qs, "t").await.unwrap().unwrap();
    assert!(got.enqueued_at_ms.is_some(), "drained: in step again");
    backend.delete_namespace().await.unwrap();
}

/// Worker ping ages come from node-resque's `worker:ping:<name>` JSON
/// (`time` in seconds) and, for a Ruby worker without one, from its
/// `workers:heartbeat` entry; start times from `worker:<id>:started`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_ages_read_node_resque_and_ruby_records() {
    let Some((backend, mut raw, ns)) = setup("ping_ages_read_node_resque_and_ruby_records").await else {
        return;
    };
    let now_s = resq_core::time::now_ms() / 1000;
    let node = "nodehost:11";
    let ruby = "rubyhost:22:q";
    let _: () = raw.sadd(format!("{ns}workers"), format!("{node}:q")).await.unwrap();
    let _: () = raw.sadd(format!("{ns}workers"), ruby).await.unwrap();
    let ping = format!(r#"{{"time":{},"name":"{node}","queues":"q"}}"#, now_s - 40);
    let _: () = raw.set(format!("{ns}worker:ping:{node}"), ping).await.unwrap();
    let _: () = raw
        .set(format!("{ns}worker:{node}:q:started"), now_s - 100)
        .await
        .unwrap();
    let beat = resq_core::time::iso8601((now_s - 70) * 1000);
    let _: () = raw.hset(format!("{ns}workers:heartbeat"), ruby, beat).await.unwrap();
    let workers = resq_admin::Admin::new(backend.clone()).workers().await.unwrap();
    let by_name = |n: &str| {
        workers
            .iter()
            .find(|w| w.name == n)
            .unwrap_or_else(|| panic!("{n}: {workers:?}"))
    };
    let node_age = by_name(node).ping_age_seconds.expect("node-resque ping read");
    assert!((39.0..45.0).contains(&node_age), "{node_age}");
    assert_eq!(by_name(node).started_at_ms, Some((now_s - 100) * 1000));
    let ruby_age = by_name("rubyhost:22").ping_age_seconds.expect("Ruby heartbeat read");
    assert!((69.0..75.0).contains(&ruby_age), "{ruby_age}");
    backend.delete_namespace().await.unwrap();
}

/// A batch push sends each run of jobs for one queue as one `RPUSH` per
/// 1,000 jobs, keeps every queue's order across runs and chunks, and
/// writes one enqueue record per job when the queue is in step; a queue
/// out of step (a foreign job in it) gets none, and its stale record goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_pushes_keep_order_and_records_across_runs_and_chunks() {
    let Some((backend, mut raw, ns)) = setup("batch_pushes_keep_order_and_records_across_runs_and_chunks").await else {
        return;
    };
    let payload = |q: &str, i: usize| format!(r#"{{"class":"c","queue":"{q}","args":[{i}]}}"#);
    // Queue c is out of step: a foreign job and no record for it.
    let _: i64 = raw.rpush(format!("{ns}queue:c"), payload("c", 9999)).await.unwrap();
    let mut jobs = Vec::new();
    let mut expected_a = Vec::new();
    for i in 0..1500 {
        jobs.push(resq_core::QueuedJob {
            queue: "a".into(),
            payload: payload("a", i),
        });
        expected_a.push(payload("a", i));
    }
    for i in 0..10 {
        jobs.push(resq_core::QueuedJob {
            queue: "b".into(),
            payload: payload("b", i),
        });
        jobs.push(resq_core::QueuedJob {
            queue: "c".into(),
            payload: payload("c", i),
        });
    }
    for i in 1500..2490 {
        jobs.push(resq_core::QueuedJob {
            queue: "a".into(),
            payload: payload("a", i),
        });
        expected_a.push(payload("a", i));
    }
    backend.push_batch(&jobs).await.unwrap();
    let a: Vec<String> = raw.lrange(format!("{ns}queue:a"), 0, -1).await.unwrap();
    assert_eq!(a, expected_a, "queue a keeps the batch's order across runs and chunks");
    let b: Vec<String> = raw.lrange(format!("{ns}queue:b"), 0, -1).await.unwrap();
    assert_eq!(b, (0..10).map(|i| payload("b", i)).collect::<Vec<_>>());
    records_match_queues(&mut raw, &ns, &["a", "b"], "after the batch").await;
    assert_eq!(backend.queue_len("c").await.unwrap(), 11);
    let c_records: u64 = raw.llen(format!("{ns}resq:enqueued:c")).await.unwrap();
    assert_eq!(c_records, 0, "an out-of-step queue gets no records");
    let stats = backend.queue_stats(&["a".to_owned(), "c".to_owned()]).await.unwrap();
    assert!(stats[0].oldest_enqueued_ms.is_some());
    assert_eq!(stats[1].oldest_enqueued_ms, None, "c's head is a foreign job");
}

/// Subscribers on `channel`, as the server counts them.
async fn subscribers(raw: &mut redis::aio::MultiplexedConnection, channel: &str) -> i64 {
    let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(raw)
        .await
        .expect("PUBSUB NUMSUB");
    counts.first().map(|c| c.1).expect("one count per channel")
}

/// A backend that only enqueues opens no subscriber connection, so the
/// wake-up `PUBLISH` of each push is not sent back to it; the first
/// worker that waits opens it, and a push then wakes that worker at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wakeup_subscription_opens_when_a_worker_first_waits() {
    let Some((b, mut raw, ns)) = setup("the_wakeup_subscription_opens_when_a_worker_first_waits").await else {
        return;
    };
    let channel = format!("{ns}resq:wakeup");
    let queue = Queue::new(Arc::clone(&b) as Arc<dyn resq_core::Backend>);
    for i in 0..3 {
        queue.enqueue("produced", "add", (i,)).await.unwrap();
    }
    assert_eq!(
        subscribers(&mut raw, &channel).await,
        0,
        "a producer holds no subscription"
    );

    let waiter = Arc::clone(&b);
    let started = std::time::Instant::now();
    let wait = tokio::spawn(async move {
        waiter
            .wait_for_jobs(&["idle".to_owned()], Duration::from_secs(20))
            .await
            .unwrap();
        started.elapsed()
    });
    let mut subscribed = false;
    for _ in 0..250 {
        if subscribers(&mut raw, &channel).await == 1 {
            subscribed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(subscribed, "a waiting worker opens the subscription");
    // Let the waiter finish its look at the empty queue, then push.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!wait.is_finished(), "nothing was pushed on `idle` yet");
    queue.enqueue("idle", "add", (9,)).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("the push wakes the waiter before its 20 s timeout")
        .unwrap();
    assert!(
        waited < Duration::from_secs(10),
        "woken by the push, not the timeout: {waited:?}"
    );
}
