//! Values that are not valid UTF-8, and other malformed items that other
//! clients may leave in Redis, jam nothing and vanish nowhere: a bad queued
//! or delayed job moves to the failed list with its bytes kept escaped and
//! the key named, listings skip bad members or show them escaped, and the
//! scheduler goes on promoting and cleaning after meeting each of them,
//! with a log line that names the key. The bad values are written with raw
//! commands, as another client would.

mod common;

use resq_core::failed::INVALID_UTF8;
use resq_core::time::{last_due_bucket, now_ms};
use resq_core::{
    Backend, DelayedStore, FailedJob, FailedStore, LockStore, Queue, QueueStore, Scheduler, SchedulerConfig,
    StatsStore, WorkerId, WorkerRegistry,
};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Not UTF-8: a lone continuation byte inside an otherwise good payload.
const BAD: &[u8] = b"{\"class\":\"ok\",\"queue\":\"q\",\"args\":[\"\xff\"]}";

/// A fresh namespace on the shared server, its name, and a raw connection.
async fn setup(test: &str) -> Option<(Arc<resq_redis::RedisBackend>, String, redis::aio::MultiplexedConnection)> {
    let (backend, ns, raw) = common::fresh_with_raw(test).await?;
    Some((Arc::new(backend), ns, raw))
}

/// Runs one raw command with byte arguments.
async fn raw_cmd(conn: &mut redis::aio::MultiplexedConnection, args: &[&[u8]]) {
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.exec_async(conn).await.unwrap();
}

fn key(ns: &str, logical: &[u8]) -> Vec<u8> {
    let mut k = format!("{ns}:").into_bytes();
    k.extend_from_slice(logical);
    k
}

/// A `MakeWriter` appending into a shared buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

/// Everything this test binary logs. One global subscriber (per-test
/// scoped ones lose events when parallel tests come and go); each test
/// finds its own lines by its unique namespace.
fn logs() -> &'static Buffer {
    static LOGS: std::sync::OnceLock<Buffer> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(buffer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buffer
    })
}

impl Buffer {
    /// The lines logged so far that contain `needle`.
    fn lines_with(&self, needle: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

/// The failed entries that hold escaped non-UTF-8 payloads.
async fn escaped_failures(backend: &Arc<resq_redis::RedisBackend>) -> Vec<FailedJob> {
    backend
        .failed_range(0, -1)
        .await
        .unwrap()
        .iter()
        .map(|r| FailedJob::decode_lenient(r))
        .filter(|f| f.payload_bytes().is_some())
        .collect()
}

fn job(n: i64) -> String {
    resq_core::job::encode_payload("q", "ok", &[serde_json::json!(n)])
}

#[tokio::test]
async fn claim_moves_a_non_utf8_job_to_failed_and_goes_on() {
    let Some((backend, ns, mut raw)) = setup("claim_moves_a_non_utf8_job_to_failed_and_goes_on").await else {
        return;
    };
    let logs = logs();
    let qkey = key(&ns, b"queue:q");
    backend.push("q", &job(1)).await.unwrap();
    raw_cmd(&mut raw, &[b"RPUSH", &qkey, BAD]).await;
    backend.push("q", &job(2)).await.unwrap();
    let w = WorkerId::new("h:1+1", &["q".to_owned()]);
    let queues = vec!["q".to_owned()];
    let mut got = Vec::new();
    for _ in 0..3 {
        if let Some(c) = backend.claim(&w, &queues, "now").await.unwrap() {
            got.push(c.payload);
        }
    }
    assert_eq!(
        got,
        vec![job(1), job(2)],
        "the good jobs around the bad one are claimed"
    );
    let failed = escaped_failures(&backend).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].payload_bytes().unwrap(), BAD, "the bytes are kept");
    let error = failed[0].error.clone().unwrap();
    assert!(
        error.starts_with(INVALID_UTF8) && error.contains(&format!("{ns}:queue:q")),
        "{error}"
    );
    assert_eq!(failed[0].worker.as_deref(), Some("h:1+1"));
    assert_eq!(backend.stat("failed").await.unwrap(), 1);
    let lines = logs.lines_with(&format!("{ns}:queue:q"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("WARN") && l.contains("not valid UTF-8")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn claim_batch_moves_non_utf8_jobs_to_failed_and_goes_on() {
    let Some((backend, ns, mut raw)) = setup("claim_batch_moves_non_utf8_jobs_to_failed_and_goes_on").await else {
        return;
    };
    let qkey = key(&ns, b"queue:q");
    raw_cmd(&mut raw, &[b"RPUSH", &qkey, BAD]).await;
    backend.push("q", &job(1)).await.unwrap();
    raw_cmd(&mut raw, &[b"RPUSH", &qkey, b"\xc0\xaf"]).await;
    backend.push("q", &job(2)).await.unwrap();
    let workers: Vec<WorkerId> = (1..=3)
        .map(|i| WorkerId::new(format!("h:1+{i}"), &["q".to_owned()]))
        .collect();
    // A slot whose item was bad stays idle for the round; the next rounds
    // claim what follows.
    let mut payloads = Vec::new();
    for _ in 0..3 {
        let got = backend.claim_batch(&workers, &["q".to_owned()], "now").await.unwrap();
        payloads.extend(got.into_iter().map(|(_, c)| c.payload));
    }
    assert_eq!(payloads, vec![job(1), job(2)]);
    let mut bytes: Vec<Vec<u8>> = escaped_failures(&backend)
        .await
        .iter()
        .map(|f| f.payload_bytes().unwrap())
        .collect();
    bytes.sort();
    assert_eq!(bytes, vec![BAD.to_vec(), b"\xc0\xaf".to_vec()]);
    assert_eq!(backend.queue_len("q").await.unwrap(), 0);
}

/// The claim script's UTF-8 check agrees with Rust's on the edge cases.
#[tokio::test]
async fn claim_checks_utf8_as_rust_does() {
    let Some((backend, ns, mut raw)) = setup("claim_checks_utf8_as_rust_does").await else {
        return;
    };
    let cases: Vec<&[u8]> = vec![
        b"plain",
        "caf\u{e9} \u{20ac} \u{10348} \u{10ffff} \u{d7ff} \u{e000}".as_bytes(),
        b"\xc3",
        b"\xc1\xbf",
        b"\xe0\x9f\xbf",
        b"\xed\xa0\x80",
        b"\xf0\x8f\xbf\xbf",
        b"\xf4\x90\x80\x80",
        b"\xf5\x80\x80\x80",
        b"\xe2\x82",
        b"a\x80b",
        b"\xff",
    ];
    let mut cases: Vec<Vec<u8>> = cases.into_iter().map(<[u8]>::to_vec).collect();
    // Short strings of the bytes where the rules change, from a fixed LCG.
    let edges: &[u8] = &[
        0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xec, 0xed, 0xee, 0xef,
        0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xff,
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(seed >> 33).unwrap()
    };
    // Code points at the edges of each encoded length and of the surrogates.
    let chars: Vec<char> = [
        0x41, 0x7f, 0x80, 0x7ff, 0x800, 0xfff, 0x1000, 0xd7ff, 0xe000, 0xfffd, 0xffff, 0x10000, 0x3ffff, 0x40000,
        0xfffff, 0x100000, 0x10ffff,
    ]
    .into_iter()
    .filter_map(char::from_u32)
    .collect();
    for _ in 0..3000 {
        let mut case = Vec::new();
        for _ in 0..1 + next() % 4 {
            let mut buf = [0; 4];
            let encoded = chars[next() % chars.len()].encode_utf8(&mut buf).as_bytes();
            match next() % 5 {
                0 => case.push(edges[next() % edges.len()]),
                // A multi-byte character cut short.
                1 => case.extend_from_slice(&encoded[..encoded.len().saturating_sub(1).max(1)]),
                _ => case.extend_from_slice(encoded),
            }
        }
        cases.push(case);
    }
    let qkey = key(&ns, b"queue:u");
    let mut push: Vec<&[u8]> = vec![b"RPUSH", &qkey];
    push.extend(cases.iter().map(Vec::as_slice));
    raw_cmd(&mut raw, &push).await;
    let w = WorkerId::new("h:1+1", &["u".to_owned()]);
    let mut claimed = Vec::new();
    while let Some(c) = backend.claim(&w, &["u".to_owned()], "now").await.unwrap() {
        claimed.push(c.payload.into_bytes());
    }
    let want: Vec<Vec<u8>> = cases
        .iter()
        .filter(|c| std::str::from_utf8(c).is_ok())
        .cloned()
        .collect();
    assert!(
        want.len() > 100 && cases.len() - want.len() > 100,
        "{} of {}",
        want.len(),
        cases.len()
    );
    assert_eq!(claimed, want);
    assert_eq!(escaped_failures(&backend).await.len(), cases.len() - want.len());
}

fn scheduler(backend: &Arc<resq_redis::RedisBackend>, stuck_worker_timeout: Option<Duration>) -> Scheduler {
    Scheduler::new(
        backend.clone() as Arc<dyn Backend>,
        SchedulerConfig {
            poll_interval: Duration::from_millis(100),
            leader_ttl: Duration::from_secs(10),
            stuck_worker_timeout,
            ..SchedulerConfig::default()
        },
    )
    .unwrap()
}

/// A due bucket before the bad one and one after it, each with a good job.
async fn schedule_good_around(backend: &Arc<resq_redis::RedisBackend>, due: i64) {
    backend.schedule(due - 1, &job(1)).await.unwrap();
    backend.schedule(due + 1, &job(3)).await.unwrap();
}

#[tokio::test]
async fn scheduler_skips_a_non_numeric_schedule_member_and_promotes_the_rest() {
    let Some((backend, ns, mut raw)) =
        setup("scheduler_skips_a_non_numeric_schedule_member_and_promotes_the_rest").await
    else {
        return;
    };
    let logs = logs();
    let due = last_due_bucket(now_ms()) - 100;
    schedule_good_around(&backend, due).await;
    // A member that is not a bucket's seconds, with a list, scored first.
    raw_cmd(
        &mut raw,
        &[b"ZADD", &key(&ns, b"delayed_queue_schedule"), b"1", b"soon"],
    )
    .await;
    raw_cmd(&mut raw, &[b"RPUSH", &key(&ns, b"delayed:soon"), job(9).as_bytes()]).await;
    let scheduler = scheduler(&backend, None);
    let report = scheduler.poll().await.unwrap();
    assert!(report.leader);
    assert_eq!(report.promoted, 2, "{report:?}");
    assert_eq!(backend.queue_range("q", 0, -1).await.unwrap(), vec![job(1), job(3)]);
    let lines = logs.lines_with(&format!("{ns}:delayed_queue_schedule"));
    assert!(
        lines.iter().any(|l| l.contains("WARN") && l.contains("soon")),
        "{lines:?}"
    );
    // The member is left for its owner, and the next poll still answers.
    assert_eq!(scheduler.poll().await.unwrap().promoted, 0);
    assert_eq!(backend.delayed_timestamps().await.unwrap(), Vec::<i64>::new());
    let left: u64 = redis::cmd("LLEN")
        .arg(key(&ns, b"delayed:soon"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(left, 1, "the member's list is untouched");
}

#[tokio::test]
async fn scheduler_fails_a_non_utf8_delayed_item_and_promotes_the_rest() {
    let Some((backend, ns, mut raw)) = setup("scheduler_fails_a_non_utf8_delayed_item_and_promotes_the_rest").await
    else {
        return;
    };
    let logs = logs();
    let due = last_due_bucket(now_ms()) - 100;
    schedule_good_around(&backend, due).await;
    // A due bucket holding a good job, a non-UTF-8 one, and a good one.
    backend.schedule(due, &job(2)).await.unwrap();
    let bucket = key(&ns, format!("delayed:{due}").as_bytes());
    raw_cmd(&mut raw, &[b"RPUSH", &bucket, BAD]).await;
    backend.schedule(due, &job(4)).await.unwrap();
    backend.schedule(due, "not json").await.unwrap();
    let report = scheduler(&backend, None).poll().await.unwrap();
    assert_eq!(report.promoted, 4, "{report:?}");
    assert_eq!(report.promotion_failures, 2, "{report:?}");
    assert_eq!(
        backend.queue_range("q", 0, -1).await.unwrap(),
        vec![job(1), job(2), job(4), job(3)]
    );
    let failed = escaped_failures(&backend).await;
    assert_eq!(failed.len(), 1, "the bad delayed item is not lost");
    assert_eq!(failed[0].payload_bytes().unwrap(), BAD);
    let bucket_name = format!("{ns}:delayed:{due}");
    assert!(failed[0].error.as_deref().unwrap().contains(&bucket_name));
    // The other failure (valid UTF-8, not JSON) names the key too.
    let entries = backend.failed_range(0, -1).await.unwrap();
    let not_json = entries
        .iter()
        .map(|e| FailedJob::decode(e).unwrap())
        .find(|f| f.payload_bytes().is_none());
    assert!(not_json.unwrap().error.unwrap().contains(&bucket_name));
    assert_eq!(backend.delayed_timestamps().await.unwrap(), Vec::<i64>::new());
    let lines = logs.lines_with(&bucket_name);
    assert!(lines.iter().any(|l| l.contains("WARN")), "{lines:?}");
}

/// A registered dead worker holding a job, whose ping is ten minutes old.
async fn dead_worker(backend: &Arc<resq_redis::RedisBackend>) {
    let dead = WorkerId::new("h:9", &["q".to_owned()]);
    backend.register_worker(&dead, now_ms() - 600_000).await.unwrap();
    backend.push("q", &job(1)).await.unwrap();
    backend.claim(&dead, &["q".to_owned()], "then").await.unwrap().unwrap();
}

#[tokio::test]
async fn scheduler_cleans_dead_workers_past_a_non_utf8_ping_value() {
    let Some((backend, ns, mut raw)) = setup("scheduler_cleans_dead_workers_past_a_non_utf8_ping_value").await else {
        return;
    };
    let logs = logs();
    raw_cmd(&mut raw, &[b"SET", &key(&ns, b"worker:ping:h:7"), b"\xff\xfe"]).await;
    dead_worker(&backend).await;
    let report = scheduler(&backend, Some(Duration::from_secs(60))).poll().await.unwrap();
    assert_eq!(report.cleaned_workers, 1, "{report:?}");
    assert_eq!(backend.queue_range("q", 0, -1).await.unwrap(), vec![job(1)]);
    let lines = logs.lines_with(&format!("{ns}:worker:ping:h:7"));
    assert!(lines.iter().any(|l| l.contains("WARN")), "{lines:?}");
}

#[tokio::test]
async fn scheduler_cleans_dead_workers_past_a_non_utf8_ping_key() {
    let Some((backend, ns, mut raw)) = setup("scheduler_cleans_dead_workers_past_a_non_utf8_ping_key").await else {
        return;
    };
    let logs = logs();
    raw_cmd(
        &mut raw,
        &[
            b"SET",
            &key(&ns, b"worker:ping:h:\xff"),
            br#"{"time":1,"name":"h:8","queues":"q"}"#,
        ],
    )
    .await;
    dead_worker(&backend).await;
    let report = scheduler(&backend, Some(Duration::from_secs(60))).poll().await.unwrap();
    assert_eq!(report.cleaned_workers, 1, "{report:?}");
    assert_eq!(backend.queue_range("q", 0, -1).await.unwrap(), vec![job(1)]);
    let lines = logs.lines_with(&format!("{ns}:worker:ping:h:\\xff"));
    assert!(lines.iter().any(|l| l.contains("WARN")), "{lines:?}");
}

#[tokio::test]
async fn a_non_utf8_workers_member_is_skipped_by_every_listing() {
    let Some((backend, ns, mut raw)) = setup("a_non_utf8_workers_member_is_skipped_by_every_listing").await else {
        return;
    };
    let logs = logs();
    let queue = Queue::new(backend.clone() as Arc<dyn Backend>);
    raw_cmd(&mut raw, &[b"SADD", &key(&ns, b"workers"), b"h:2:\xff"]).await;
    let live = WorkerId::new("h:1+1", &["q".to_owned()]);
    backend.register_worker(&live, now_ms()).await.unwrap();
    assert!(
        backend.workers().await.unwrap().contains(&live),
        "a worker finds its registration"
    );
    let workers = queue.workers().await.unwrap();
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert_eq!(workers.get("h:1+1").map(String::as_str), Some("q"));
    assert!(queue.all_working_on().await.unwrap().contains_key("h:1+1"));
    assert!(queue.details().await.unwrap().workers.contains_key("h:1+1"));
    let lines = logs.lines_with(&format!("{ns}:workers"));
    assert!(
        lines.iter().any(|l| l.contains("WARN") && l.contains("h:2:\\xff")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_non_utf8_queues_member_is_skipped() {
    let Some((backend, ns, mut raw)) = setup("a_non_utf8_queues_member_is_skipped").await else {
        return;
    };
    let queue = Queue::new(backend.clone() as Arc<dyn Backend>);
    queue.enqueue("q", "ok", (1,)).await.unwrap();
    raw_cmd(&mut raw, &[b"SADD", &key(&ns, b"queues"), b"\xff"]).await;
    assert_eq!(queue.queues().await.unwrap(), vec!["q".to_owned()]);
    let details = queue.details().await.unwrap();
    assert_eq!(
        details.queues.into_iter().collect::<Vec<_>>(),
        vec![("q".to_owned(), 1)]
    );
}

#[tokio::test]
async fn non_utf8_locks_and_counters_are_shown_escaped_or_skipped() {
    let Some((backend, ns, mut raw)) = setup("non_utf8_locks_and_counters_are_shown_escaped_or_skipped").await else {
        return;
    };
    let logs = logs();
    let queue = Queue::new(backend.clone() as Arc<dyn Backend>);
    raw_cmd(&mut raw, &[b"SET", &key(&ns, b"lock:a"), b"v\xff"]).await;
    raw_cmd(&mut raw, &[b"SET", &key(&ns, b"lock:\xff"), b"v"]).await;
    raw_cmd(&mut raw, &[b"SET", &key(&ns, b"stat:odd"), b"\xff"]).await;
    backend.incr_stat("processed", 2).await.unwrap();
    let locks = queue.locks().await.unwrap();
    assert_eq!(
        locks.into_iter().collect::<Vec<_>>(),
        vec![("lock:a".to_owned(), "v\\xff".to_owned())]
    );
    assert_eq!(backend.get_lock("lock:a").await.unwrap().unwrap().value, "v\\xff");
    let stats = queue.stats().await.unwrap();
    assert_eq!(stats.into_iter().collect::<Vec<_>>(), vec![("processed".to_owned(), 2)]);
    assert!(queue.details().await.is_ok());
    let lines = logs.lines_with(&format!("{ns}:lock:\\xff"));
    assert!(lines.iter().any(|l| l.contains("WARN")), "{lines:?}");
    let lines = logs.lines_with(&format!("{ns}:stat:odd"));
    assert!(lines.iter().any(|l| l.contains("WARN")), "{lines:?}");
}

#[tokio::test]
async fn a_non_utf8_failed_entry_is_listed_escaped_and_removable() {
    let Some((backend, ns, mut raw)) = setup("a_non_utf8_failed_entry_is_listed_escaped_and_removable").await else {
        return;
    };
    let queue = Queue::new(backend.clone() as Arc<dyn Backend>);
    let good = resq_core::failed::encode_entry("w", "q", &job(1), &resq_core::Failure::new("E", "x"), 0);
    backend.push_failed(&good).await.unwrap();
    raw_cmd(&mut raw, &[b"RPUSH", &key(&ns, b"failed"), b"{\"error\":\"\xff\"}"]).await;
    let failed = queue.failed(0, -1).await.unwrap();
    assert_eq!(failed.len(), 2, "the bad entry is listed");
    assert_eq!(failed[0].raw, good);
    assert_eq!(failed[1].raw, "{\"error\":\"\\xff\"}");
    assert_eq!(queue.remove_failed(&failed[1]).await.unwrap(), 1, "and can be removed");
    assert_eq!(queue.failed_count().await.unwrap(), 1);
}

#[tokio::test]
async fn a_non_utf8_failed_entry_is_removable_by_id() {
    let Some((backend, ns, mut raw)) = setup("a_non_utf8_failed_entry_is_removable_by_id").await else {
        return;
    };
    let queue = Queue::new(backend.clone() as Arc<dyn Backend>);
    let good = resq_core::failed::encode_entry("w", "q", &job(1), &resq_core::Failure::new("E", "x"), 0);
    backend.push_failed(&good).await.unwrap();
    raw_cmd(&mut raw, &[b"RPUSH", &key(&ns, b"failed"), b"{\"error\":\"\xff\"}"]).await;
    backend.push_failed(&good).await.unwrap();
    let page = queue.failed_with_ids(0, 10).await.unwrap();
    assert_eq!(page[1].1.raw, "{\"error\":\"\\xff\"}");
    // The id of the good entry at 0 does not fit position 1.
    let moved: resq_core::FailedId = page[0].0.to_string().replacen('0', "1", 1).parse().unwrap();
    assert!(matches!(
        queue.remove_failed_by_id(&moved).await,
        Err(resq_core::Error::StaleFailedEntry { .. })
    ));
    queue.remove_failed_by_id(&page[1].0).await.unwrap();
    assert_eq!(backend.failed_range(0, -1).await.unwrap(), vec![good.clone(), good]);
}

#[tokio::test]
async fn a_non_utf8_queued_job_is_listed_escaped() {
    let Some((backend, ns, mut raw)) = setup("a_non_utf8_queued_job_is_listed_escaped").await else {
        return;
    };
    let queue = Queue::new(backend.clone() as Arc<dyn Backend>);
    queue.enqueue("q", "ok", (1,)).await.unwrap();
    raw_cmd(&mut raw, &[b"RPUSH", &key(&ns, b"queue:q"), b"\xfe"]).await;
    let listed = queue.queued("q", 0, -1).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed[0].job().is_some());
    assert_eq!(listed[1].raw(), "\\xfe");
    assert!(listed[1].job().is_none());
}

/// A `stat:failed` counter that another client broke does not stop a bad
/// item's move to the failed list, nor the claim behind it.
#[tokio::test]
async fn a_broken_failed_counter_does_not_stop_the_move() {
    let Some((backend, ns, mut raw)) = setup("a_broken_failed_counter_does_not_stop_the_move").await else {
        return;
    };
    raw_cmd(&mut raw, &[b"SET", &key(&ns, b"stat:failed"), b"many"]).await;
    raw_cmd(&mut raw, &[b"RPUSH", &key(&ns, b"queue:q"), BAD]).await;
    backend.push("q", &job(1)).await.unwrap();
    let w = WorkerId::new("h:1+1", &["q".to_owned()]);
    let got = backend.claim(&w, &["q".to_owned()], "now").await.unwrap();
    assert_eq!(got.map(|c| c.payload), Some(job(1)));
    assert_eq!(escaped_failures(&backend).await.len(), 1);
}

/// Runs a worker (`concurrency` slots) on queue `q` until `n` jobs of class
/// `ok` ran (at most 30 s); returns their arguments in order.
async fn work_until(backend: &Arc<resq_redis::RedisBackend>, concurrency: usize, n: usize) -> Vec<i64> {
    let ran: Arc<Mutex<Vec<i64>>> = Arc::default();
    let mut tasks = resq_core::Tasks::new();
    let log = Arc::clone(&ran);
    tasks
        .register_fn("ok", move |(n,): (i64,), _ctx: resq_core::JobContext| {
            let log = Arc::clone(&log);
            async move {
                log.lock().unwrap().push(n);
                Ok::<_, resq_core::TaskError>(())
            }
        })
        .unwrap();
    let config = resq_core::WorkerConfig {
        queues: vec!["q".to_owned()],
        poll_interval: Duration::from_millis(50),
        ping_interval: Duration::from_millis(100),
        shutdown_timeout: Duration::from_secs(5),
        concurrency,
        ..resq_core::WorkerConfig::default()
    };
    let worker = resq_core::Worker::new(backend.clone() as Arc<dyn Backend>, Arc::new(tasks), config);
    let stop = resq_core::CancellationToken::new();
    let token = stop.clone();
    let handle = tokio::spawn(async move { worker.run_until(token).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ran.lock().unwrap().len() < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("the worker stops")
        .unwrap()
        .expect("the worker ends cleanly");
    let ran = ran.lock().unwrap().clone();
    ran
}

/// Workers (one slot and several) run the good jobs around non-UTF-8 ones;
/// the bad ones end on the failed list with their bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_run_the_good_jobs_around_non_utf8_ones() {
    for concurrency in [1, 3] {
        let Some((backend, ns, mut raw)) = setup("workers_run_the_good_jobs_around_non_utf8_ones").await else {
            return;
        };
        let qkey = key(&ns, b"queue:q");
        // Each bad item before a good one: once the last good job ran, every
        // bad item was claimed (and moved) before it.
        for n in 1..=4 {
            raw_cmd(&mut raw, &[b"RPUSH", &qkey, BAD]).await;
            backend.push("q", &job(n)).await.unwrap();
        }
        let mut ran = work_until(&backend, concurrency, 4).await;
        ran.sort_unstable();
        assert_eq!(ran, vec![1, 2, 3, 4], "concurrency {concurrency}");
        let failed = escaped_failures(&backend).await;
        assert_eq!(failed.len(), 4, "concurrency {concurrency}");
        assert!(failed.iter().all(|f| f.payload_bytes().as_deref() == Some(BAD)));
        assert_eq!(backend.queue_len("q").await.unwrap(), 0);
    }
}

/// A dead worker whose working-on record is another client's key of the
/// wrong type is skipped with a log line naming the key; the other dead
/// workers are still cleaned, and the poll succeeds.
#[tokio::test]
async fn scheduler_cleans_the_other_dead_workers_past_one_it_cannot_clean() {
    let Some((backend, ns, mut raw)) = setup("scheduler_cleans_the_other_dead_workers_past_one_it_cannot_clean").await
    else {
        return;
    };
    let logs = logs();
    let broken = WorkerId::new("h:0", &["q".to_owned()]);
    backend.register_worker(&broken, now_ms() - 600_000).await.unwrap();
    raw_cmd(&mut raw, &[b"HSET", &key(&ns, b"worker:h:0:q"), b"f", b"v"]).await;
    dead_worker(&backend).await;
    let report = scheduler(&backend, Some(Duration::from_secs(60))).poll().await.unwrap();
    assert_eq!(report.cleaned_workers, 1, "{report:?}");
    assert_eq!(backend.queue_range("q", 0, -1).await.unwrap(), vec![job(1)]);
    let lines = logs.lines_with(&format!("{ns}:worker:h:0:q"));
    assert!(
        lines.iter().any(|l| l.contains("WARN") && l.contains("WRONGTYPE")),
        "{lines:?}"
    );
}

/// A due bucket whose key is not a list (another client's) is skipped with
/// a log line naming the schedule; the buckets after it are promoted.
#[tokio::test]
async fn scheduler_skips_a_bucket_that_is_not_a_list() {
    let Some((backend, ns, mut raw)) = setup("scheduler_skips_a_bucket_that_is_not_a_list").await else {
        return;
    };
    let logs = logs();
    let due = last_due_bucket(now_ms()) - 100;
    schedule_good_around(&backend, due).await;
    let member = due.to_string();
    raw_cmd(
        &mut raw,
        &[
            b"ZADD",
            &key(&ns, b"delayed_queue_schedule"),
            member.as_bytes(),
            member.as_bytes(),
        ],
    )
    .await;
    raw_cmd(
        &mut raw,
        &[b"SET", &key(&ns, format!("delayed:{due}").as_bytes()), b"x"],
    )
    .await;
    let report = scheduler(&backend, None).poll().await.unwrap();
    assert_eq!(report.promoted, 2, "{report:?}");
    assert_eq!(backend.queue_range("q", 0, -1).await.unwrap(), vec![job(1), job(3)]);
    let lines = logs.lines_with(&format!("{ns}:delayed_queue_schedule"));
    assert!(
        lines.iter().any(|l| l.contains("WARN") && l.contains(&member)),
        "{lines:?}"
    );
}

/// `details` and `all_working_on` answer past a queue and a working-on
/// record that are another client's keys of the wrong type, leaving them out.
#[tokio::test]
async fn details_answer_past_keys_of_the_wrong_type() {
    let Some((backend, ns, mut raw)) = setup("details_answer_past_keys_of_the_wrong_type").await else {
        return;
    };
    let logs = logs();
    let queue = Queue::new(backend.clone() as Arc<dyn Backend>);
    queue.enqueue("q", "ok", (1,)).await.unwrap();
    raw_cmd(&mut raw, &[b"SADD", &key(&ns, b"queues"), b"odd"]).await;
    raw_cmd(&mut raw, &[b"SET", &key(&ns, b"queue:odd"), b"x"]).await;
    let live = WorkerId::new("h:1+1", &["q".to_owned()]);
    let odd = WorkerId::new("h:2+1", &["q".to_owned()]);
    backend.register_worker(&live, now_ms()).await.unwrap();
    backend.register_worker(&odd, now_ms()).await.unwrap();
    raw_cmd(&mut raw, &[b"HSET", &key(&ns, b"worker:h:2+1:q"), b"f", b"v"]).await;
    let details = queue.details().await.unwrap();
    assert_eq!(
        details.queues.into_iter().collect::<Vec<_>>(),
        vec![("q".to_owned(), 1)]
    );
    assert_eq!(details.workers.keys().collect::<Vec<_>>(), vec!["h:1+1"]);
    assert!(queue.all_working_on().await.unwrap().contains_key("h:1+1"));
    let lines = logs.lines_with(&format!("{ns}:queue:odd"));
    assert!(lines.iter().any(|l| l.contains("WARN")), "{lines:?}");
    let lines = logs.lines_with(&format!("{ns}:worker:h:2+1:q"));
    assert!(lines.iter().any(|l| l.contains("WARN")), "{lines:?}");
}
