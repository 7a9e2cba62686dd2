//! Precise delayed jobs (issue #14): each backend declares how precisely
//! its schedule keeps due times ([`DelayedStore::delayed_precision`](resq_core::DelayedStore::delayed_precision): one
//! second for Resque's buckets on Redis, a millisecond on memory and
//! PostgreSQL), and on every backend an item is never due before the time
//! asked for and is due within the declared precision after it. The
//! second-bucket operations (what the admin API and other Resque clients
//! use) see items scheduled by time in their buckets, and items scheduled
//! by bucket fall due with their bucket. A running scheduler starts a job
//! never early and within the precision plus a liveness bound, wakes for
//! an earlier job scheduled while it sleeps where the backend signals
//! that ([`DelayedStore::schedule_watch`](resq_core::DelayedStore::schedule_watch)) and at its next poll where it
//! does not, and only the leader promotes.

use crate::support::{spawn_scheduler, spawn_worker, wait_until};
use resq_core::backend::{Backend, Promotion, BUCKET_PRECISION, MILLISECOND_PRECISION};
use resq_core::time::{bucket_due_ms, delayed_bucket_of_ms, now_ms};
use resq_core::{JobContext, Queue, SchedulerConfig, TaskError, Tasks, WorkerConfig};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A generous bound on how long a running scheduler and worker may take,
/// beyond the backend's declared precision, to start a due job on a loaded
/// machine. A liveness bound, not a timing target (those are measured by
/// the load harness, see BENCHMARKS.md).
const LIVENESS: Duration = Duration::from_secs(5);

/// A time far enough ahead that no scheduler would promote it during a test
/// (2100-01-01), and a whole second, so offsets below stay in known buckets.
const FAR: i64 = 4_102_444_800_000;

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn payload(queue: &str, i: i64) -> String {
    resq_core::job::encode_payload(queue, "stamp", &[serde_json::Value::from(i)])
}

/// The declared precision is one of the two kinds, and the next due time
/// of an item scheduled for `t` lies in `[t, t + precision)`: the time
/// itself on a millisecond store, its bucket's due time on a bucket store.
/// Every item sits in bucket `delayed_bucket_of_ms(t)` either way.
pub async fn next_due_ms_lies_within_the_declared_precision(backend: Arc<dyn Backend>) {
    let precision = backend.delayed_precision();
    assert!(
        precision == BUCKET_PRECISION || precision == MILLISECOND_PRECISION,
        "{} declares a delayed precision of {precision:?}",
        backend.kind()
    );
    assert_eq!(
        backend.next_due_ms().await.unwrap(),
        None,
        "an empty schedule has no due time"
    );
    for (i, offset) in [0_i64, 1, 499, 500, 501, 999, 1_250].into_iter().enumerate() {
        let t = FAR + offset;
        let p = payload("q", i64::try_from(i).unwrap());
        assert!(backend.schedule_ms(t, &p).await.unwrap());
        let due = backend.next_due_ms().await.unwrap().expect("a due time");
        assert!(due >= t, "{t} is due at {due}: early");
        assert!(due < t + ms(precision), "{t} is due at {due}: beyond {precision:?}");
        assert_eq!(backend.timestamps_of(&p).await.unwrap(), vec![delayed_bucket_of_ms(t)]);
        assert_eq!(backend.remove_delayed(&p).await.unwrap(), vec![delayed_bucket_of_ms(t)]);
    }
    assert_eq!(backend.next_due_ms().await.unwrap(), None);
}

/// Stepping the promotion time through a schedule of items inserted out
/// of time order: no item moves before its time, and every item has moved
/// once the time is past it by the declared precision.
pub async fn promote_due_ms_is_never_early_and_within_precision(backend: Arc<dyn Backend>) {
    let precision = ms(backend.delayed_precision());
    let base = FAR;
    let offsets = [730_i64, 20, 510, 999, 1_000, 1_499, 1_500, 2_400, 21];
    let mut waiting: BTreeMap<String, i64> = BTreeMap::new();
    for (i, offset) in offsets.into_iter().enumerate() {
        let p = payload("q", i64::try_from(i).unwrap());
        assert!(backend.schedule_ms(base + offset, &p).await.unwrap());
        waiting.insert(p, base + offset);
    }
    let mut moved = Vec::new();
    // Past the last item's time by the precision, the last step.
    let end = base + 2_400 + precision - 1;
    let mut up_to = base - 1;
    loop {
        for promotion in backend.promote_due_ms(up_to, 100).await.unwrap() {
            let Promotion::Moved { payload, queue, .. } = promotion else {
                panic!("a valid item failed to promote: {promotion:?}");
            };
            assert_eq!(queue, "q");
            let due = waiting
                .remove(&payload)
                .expect("an item moved twice, or one never scheduled");
            assert!(due <= up_to, "an item due at {due} moved at {up_to}: early");
            moved.push(payload);
        }
        for (p, due) in &waiting {
            assert!(
                up_to < due + precision - 1,
                "{p} due at {due} still waits at {up_to} (precision {precision} ms)"
            );
        }
        if up_to >= end {
            break;
        }
        up_to = (up_to + 13).min(end);
    }
    assert!(waiting.is_empty(), "never promoted: {waiting:?}");
    assert_eq!(
        backend.queue_range("q", 0, -1).await.unwrap(),
        moved,
        "promoted in order onto the queue"
    );
    assert_eq!(backend.delayed_count().await.unwrap(), 0);
}

/// An item scheduled by bucket (as node-resque, Ruby and the bucket
/// operations write them) falls due with its bucket, on every backend:
/// not a millisecond before `bucket_due_ms`, and at it.
pub async fn bucket_scheduled_items_fall_due_with_their_bucket(backend: Arc<dyn Backend>) {
    let secs = FAR / 1000 + 7;
    let p = payload("q", 1);
    assert!(backend.schedule(secs, &p).await.unwrap());
    assert_eq!(backend.next_due_ms().await.unwrap(), Some(bucket_due_ms(secs)));
    assert!(backend
        .promote_due_ms(bucket_due_ms(secs) - 1, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(backend.delayed_at(secs).await.unwrap(), vec![p.clone()]);
    let moved = backend.promote_due_ms(bucket_due_ms(secs), 10).await.unwrap();
    assert_eq!(
        moved,
        vec![Promotion::Moved {
            timestamp: secs,
            queue: "q".into(),
            payload: p.clone()
        }]
    );
    assert_eq!(backend.queue_range("q", 0, -1).await.unwrap(), vec![p]);
    assert_eq!(backend.next_due_ms().await.unwrap(), None);
}

/// Items scheduled by time are seen by every second-bucket operation in
/// their bucket: listing, sizes, counting, the duplicate rule (per
/// bucket, whatever the milliseconds), "run now" and removal of one item
/// (after which the next due time moves on), and promotion by bucket.
pub async fn second_bucket_views_see_items_scheduled_by_time(backend: Arc<dyn Backend>) {
    let precision = ms(backend.delayed_precision());
    // Three items in one bucket (due at FAR-499 ms … FAR+500 ms sit in
    // bucket FAR/1000 + 1) and one in the next.
    let s = delayed_bucket_of_ms(FAR);
    let times = [FAR + 400, FAR - 300, FAR + 100, FAR + 900];
    let items: Vec<String> = (0..4).map(|i| payload("q", i)).collect();
    for (t, p) in times.iter().zip(&items) {
        assert!(backend.schedule_ms(*t, p).await.unwrap());
    }
    assert_eq!(delayed_bucket_of_ms(FAR - 300), s);
    assert_eq!(delayed_bucket_of_ms(FAR + 400), s);
    assert_eq!(delayed_bucket_of_ms(FAR + 900), s + 1);
    // The identical payload in the same bucket is refused, at another ms too.
    assert!(!backend.schedule_ms(FAR + 401, &items[0]).await.unwrap());
    assert!(!backend.schedule(s, &items[0]).await.unwrap());
    assert_eq!(backend.delayed_timestamps().await.unwrap(), vec![s, s + 1]);
    assert_eq!(
        backend.delayed_at(s).await.unwrap(),
        items[..3].to_vec(),
        "insertion order"
    );
    assert_eq!(backend.delayed_bucket_sizes().await.unwrap(), vec![(s, 3), (s + 1, 1)]);
    assert_eq!(backend.delayed_count().await.unwrap(), 4);
    let next = backend.next_due_ms().await.unwrap().expect("a due time");
    assert!((FAR - 300..FAR - 300 + precision).contains(&next), "next due {next}");
    // Run the earliest now: it is on its queue, and the next due time moves on.
    assert!(backend.promote_delayed(s, &items[1], "q").await.unwrap());
    assert_eq!(backend.queue_range("q", 0, -1).await.unwrap(), vec![items[1].clone()]);
    let next = backend.next_due_ms().await.unwrap().expect("a due time");
    assert!((FAR + 100..FAR + 100 + precision).contains(&next), "next due {next}");
    // Remove the next earliest from its bucket.
    assert!(backend.remove_delayed_at(s, &items[2]).await.unwrap());
    let next = backend.next_due_ms().await.unwrap().expect("a due time");
    assert!((FAR + 400..FAR + 400 + precision).contains(&next), "next due {next}");
    // Promotion by bucket moves what is left of bucket `s`, not `s + 1`.
    let moved = backend.promote_due(s, 10).await.unwrap();
    assert_eq!(
        moved,
        vec![Promotion::Moved {
            timestamp: s,
            queue: "q".into(),
            payload: items[0].clone()
        }]
    );
    assert_eq!(backend.delayed_timestamps().await.unwrap(), vec![s + 1]);
    let next = backend.next_due_ms().await.unwrap().expect("a due time");
    assert!((FAR + 900..FAR + 900 + precision).contains(&next), "next due {next}");
    assert_eq!(backend.remove_delayed(&items[3]).await.unwrap(), vec![s + 1]);
    assert_eq!(backend.next_due_ms().await.unwrap(), None);
}

/// Start times (epoch ms) of `stamp` jobs, by argument.
type Starts = Arc<Mutex<BTreeMap<i64, i64>>>;

/// Tasks with one task, `stamp`, that records when it starts.
fn stamp_tasks() -> (Arc<Tasks>, Starts) {
    let starts: Starts = Arc::new(Mutex::new(BTreeMap::new()));
    let sink = Arc::clone(&starts);
    let mut tasks = Tasks::new();
    tasks
        .register_fn("stamp", move |(i,): (i64,), _ctx: JobContext| {
            let at = now_ms();
            let sink = Arc::clone(&sink);
            async move {
                sink.lock().unwrap().insert(i, at);
                Ok::<_, TaskError>(())
            }
        })
        .unwrap();
    (Arc::new(tasks), starts)
}

/// A worker on `queue` that waits for wake-ups (never a short poll).
fn idle_worker(queue: &str) -> WorkerConfig {
    WorkerConfig {
        poll_interval: Duration::from_secs(5),
        ..crate::support::quick_config(&[queue])
    }
}

fn scheduler_config(name: &str, poll_interval: Duration) -> SchedulerConfig {
    SchedulerConfig {
        name: Some(name.to_owned()),
        poll_interval,
        leader_ttl: Duration::from_secs(30),
        stuck_worker_timeout: None,
        ..SchedulerConfig::default()
    }
}

/// Checks each job's start against its due time: never before it, and no
/// later than the precision plus `slack` plus [`LIVENESS`] after it.
fn check_starts(backend: &dyn Backend, dues: &BTreeMap<i64, i64>, starts: &Starts, slack: Duration) {
    let bound = ms(backend.delayed_precision() + slack + LIVENESS);
    let starts = starts.lock().unwrap().clone();
    for (i, due) in dues {
        let start = starts[i];
        assert!(start >= *due, "job {i} due at {due} started {} ms early", due - start);
        assert!(
            start - due <= bound,
            "job {i} started {} ms after its time (bound {bound} ms)",
            start - due
        );
    }
}

/// A running scheduler (whose poll interval is far longer than the delays)
/// and an idle worker start each job at its time: never before it, and
/// within the declared precision plus the liveness bound.
pub async fn a_running_scheduler_starts_jobs_never_early_and_within_precision(backend: Arc<dyn Backend>) {
    let (tasks, starts) = stamp_tasks();
    let q = Queue::new(Arc::clone(&backend));
    let base = now_ms();
    let mut dues = BTreeMap::new();
    for (i, delay) in [(0_i64, 0_i64), (1, 1_100), (2, 150), (3, 420), (4, 600)] {
        let due = base + delay;
        q.enqueue_at(due, "precise", "stamp", (i,)).await.unwrap();
        dues.insert(i, due);
    }
    let worker = spawn_worker(&backend, &tasks, idle_worker("precise"));
    let scheduler = spawn_scheduler(&backend, None, scheduler_config("precise", Duration::from_secs(30)));
    let limit = backend.delayed_precision() + LIVENESS + Duration::from_millis(1_100);
    wait_until(limit, "every job started", || {
        let starts = Arc::clone(&starts);
        async move { starts.lock().unwrap().len() == 5 }
    })
    .await;
    check_starts(&*backend, &dues, &starts, Duration::ZERO);
    scheduler.shutdown().await;
    worker.shutdown().await;
}

/// A job scheduled while the leader sleeps (its poll interval far away,
/// with a later job already scheduled) starts at its time: at once where
/// the backend signals new earliest items ([`DelayedStore::schedule_watch`](resq_core::DelayedStore::schedule_watch)),
/// at the next poll where it does not (the scheduler then polls every
/// second). Never early either way.
pub async fn an_earlier_job_wakes_a_sleeping_scheduler(backend: Arc<dyn Backend>) {
    let signals = backend.schedule_watch().await.unwrap().is_some();
    let poll = if signals {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(1)
    };
    let (tasks, starts) = stamp_tasks();
    let q = Queue::new(Arc::clone(&backend));
    q.enqueue_in(Duration::from_secs(3_600), "precise", "stamp", (99,))
        .await
        .unwrap();
    let worker = spawn_worker(&backend, &tasks, idle_worker("precise"));
    let scheduler = spawn_scheduler(&backend, None, scheduler_config("sleeper", poll));
    wait_until(LIVENESS, "the scheduler leads", || {
        let s = Arc::clone(&scheduler.scheduler);
        async move { s.is_leader() }
    })
    .await;
    // Let its first poll finish, so that it sleeps.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut dues = BTreeMap::new();
    for (i, delay) in [(0_i64, 250_i64), (1, 0)] {
        let due = now_ms() + delay;
        q.enqueue_at(due, "precise", "stamp", (i,)).await.unwrap();
        dues.insert(i, due);
    }
    let slack = if signals { Duration::ZERO } else { poll };
    wait_until(
        backend.delayed_precision() + slack + LIVENESS,
        "both jobs started",
        || {
            let starts = Arc::clone(&starts);
            async move { starts.lock().unwrap().len() == 2 }
        },
    )
    .await;
    check_starts(&*backend, &dues, &starts, slack);
    assert_eq!(q.scheduled_at("precise", "stamp", (99,)).await.unwrap().len(), 1);
    scheduler.shutdown().await;
    worker.shutdown().await;
}

/// Between polls only the leader promotes: a running follower whose
/// schedule is full of due jobs leaves them delayed while another
/// scheduler holds the lock, and the leader's poll moves them.
pub async fn only_the_leader_promotes_between_polls(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    let leader = resq_core::Scheduler::new(
        Arc::clone(&backend),
        scheduler_config("holder", Duration::from_secs(30)),
    )
    .unwrap();
    assert!(leader.poll().await.unwrap().leader);
    let follower = spawn_scheduler(&backend, None, scheduler_config("follower", Duration::from_millis(50)));
    for i in 0..3 {
        q.enqueue_at(now_ms() + i * 100, "precise", "stamp", (i,))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!follower.scheduler.is_leader());
    assert_eq!(q.length("precise").await.unwrap(), 0, "a follower promoted");
    assert_eq!(backend.delayed_count().await.unwrap(), 3);
    let report = leader.poll().await.unwrap();
    assert!(report.leader);
    assert_eq!(report.promoted, 3);
    assert_eq!(report.next_due_ms, None);
    assert_eq!(q.length("precise").await.unwrap(), 3);
    follower.shutdown().await;
    assert!(leader.release().await.unwrap());
}
