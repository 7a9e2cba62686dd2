//! Flow control per queue (issue #14 part B): rate limits and concurrency
//! caps stored in the backend (`set_queue_limits`, `queue_limits`) and
//! enforced by its atomic claims, single and batched, and by the workers
//! that use them.
//!
//! No test asserts a duration or a throughput (those are measured by the
//! load harness, see BENCHMARKS.md). Rate-limit checks use periods long
//! enough that the test cannot cross a window by accident (an hour), or
//! count starts per window with a margin that a loaded machine's delays
//! between a claim and its job's start cannot fill; liveness bounds are
//! generous.

use crate::support::{count_events, quick_config, quick_scheduler, spawn_scheduler, spawn_worker, wait_until};
use resq_core::backend::{Backend, Orphan, Outcome, WorkerId};
use resq_core::task::{JobContext, TaskDef, TaskError, Tasks};
use resq_core::time::now_ms;
use resq_core::{Error, Queue, QueueLimits, SchedulerConfig, WorkerConfig};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A period no test run can cross: starts never leave the window.
const HOUR: Duration = Duration::from_secs(3600);
/// Liveness bound for everything a test waits for.
const LIMIT: Duration = Duration::from_secs(20);

fn qs(names: &[&str]) -> Vec<String> {
    names.iter().map(|q| (*q).to_owned()).collect()
}

fn worker(name: &str, queues: &[&str]) -> WorkerId {
    WorkerId::new(name, &qs(queues))
}

/// A node-resque payload of `class` with one argument `i`.
fn payload(queue: &str, i: usize) -> String {
    format!(r#"{{"class":"job","queue":"{queue}","args":[{i}]}}"#)
}

async fn push_n(backend: &Arc<dyn Backend>, queue: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        let p = payload(queue, i);
        backend.push(queue, &p).await.unwrap();
        out.push(p);
    }
    out
}

/// Limits are stored per queue, listed sorted by queue, replaced by a new
/// setting, and removed by unlimited limits; an unknown or empty queue may
/// be limited.
pub async fn limits_are_stored_listed_and_removed(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    assert!(q.queue_limits().await.unwrap().is_empty());
    let rate = QueueLimits::new().rate(7, Duration::from_millis(1500));
    let both = QueueLimits::new().rate(3, Duration::from_secs(2)).concurrency(4);
    let cap = QueueLimits::new().concurrency(2);
    q.set_queue_limits("zeta", rate).await.unwrap();
    q.set_queue_limits("alpha", both).await.unwrap();
    q.set_queue_limits("mid", cap).await.unwrap();
    assert_eq!(
        q.queue_limits().await.unwrap(),
        vec![
            ("alpha".to_owned(), both),
            ("mid".to_owned(), cap),
            ("zeta".to_owned(), rate)
        ]
    );
    q.set_queue_limits("zeta", cap).await.unwrap();
    q.set_queue_limits("alpha", QueueLimits::new()).await.unwrap();
    assert_eq!(
        q.queue_limits().await.unwrap(),
        vec![("mid".to_owned(), cap), ("zeta".to_owned(), cap)]
    );
    assert!(
        q.queues().await.unwrap().is_empty(),
        "limiting a queue does not create it"
    );
}

/// Limits out of bounds are refused by the backend itself (not only by
/// the client), and change nothing.
pub async fn invalid_limits_are_refused(backend: Arc<dyn Backend>) {
    let bad = [
        QueueLimits::new().rate(0, Duration::from_secs(1)),
        QueueLimits::new().rate(5, Duration::ZERO),
        QueueLimits::new().rate(5, Duration::from_micros(2500)),
        QueueLimits::new().concurrency(0),
    ];
    for limits in bad {
        let err = backend.set_queue_limits("q", limits).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{limits:?}: {err:?}");
    }
    assert!(backend.queue_limits().await.unwrap().is_empty());
}

/// A rate limit of N per period admits exactly N claims in the window
/// (whoever claims), then skips the queue: the other jobs stay queued in
/// order, and completing the started jobs frees nothing (a rate counts
/// starts, not running jobs).
pub async fn rate_limit_admits_max_starts_per_window(backend: Arc<dyn Backend>) {
    backend
        .set_queue_limits("r", QueueLimits::new().rate(3, HOUR))
        .await
        .unwrap();
    let jobs = push_n(&backend, "r", 5).await;
    let mut started = Vec::new();
    for i in 0..5 {
        let w = worker(&format!("host:1+{i}"), &["r"]);
        if let Some(c) = backend.claim(&w, &qs(&["r"]), "t").await.unwrap() {
            started.push((w, c.payload));
        }
    }
    assert_eq!(
        started.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
        jobs[..3].to_vec(),
        "the first three, in order"
    );
    assert_eq!(backend.queue_range("r", 0, -1).await.unwrap(), jobs[3..].to_vec());
    for (w, _) in &started {
        backend.complete(w, Outcome::Success).await.unwrap();
    }
    let late = worker("host:1+9", &["r"]);
    assert_eq!(backend.claim(&late, &qs(&["r"]), "t").await.unwrap(), None);
    assert_eq!(backend.queue_len("r").await.unwrap(), 2, "nothing is lost");
    assert_eq!(backend.failed_count().await.unwrap(), 0, "nothing failed");
}

/// The window slides: once a start is older than the period, the queue
/// admits another.
pub async fn rate_limit_window_slides(backend: Arc<dyn Backend>) {
    let period = Duration::from_millis(300);
    backend
        .set_queue_limits("r", QueueLimits::new().rate(2, period))
        .await
        .unwrap();
    push_n(&backend, "r", 4).await;
    let queues = qs(&["r"]);
    let first = Instant::now();
    for i in 0..2 {
        let w = worker(&format!("host:2+{i}"), &["r"]);
        assert!(backend.claim(&w, &queues, "t").await.unwrap().is_some());
    }
    let third = worker("host:2+3", &["r"]);
    let refused = backend.claim(&third, &queues, "t").await.unwrap();
    if first.elapsed() < period {
        assert_eq!(refused, None, "a third start within the period");
    }
    let mut later = None;
    let deadline = Instant::now() + LIMIT;
    while later.is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        later = backend.claim(&third, &queues, "t").await.unwrap();
    }
    assert!(later.is_some(), "the window slid within {LIMIT:?}");
    assert!(first.elapsed() >= period, "not before the period passed");
}

/// A concurrency cap of K admits K running jobs; any outcome (success,
/// failure, discard) gives the slot back.
pub async fn concurrency_cap_admits_k_running_jobs(backend: Arc<dyn Backend>) {
    backend
        .set_queue_limits("c", QueueLimits::new().concurrency(2))
        .await
        .unwrap();
    push_n(&backend, "c", 6).await;
    let queues = qs(&["c"]);
    let ids: Vec<WorkerId> = (0..6).map(|i| worker(&format!("host:3+{i}"), &["c"])).collect();
    assert!(backend.claim(&ids[0], &queues, "t").await.unwrap().is_some());
    assert!(backend.claim(&ids[1], &queues, "t").await.unwrap().is_some());
    assert_eq!(backend.claim(&ids[2], &queues, "t").await.unwrap(), None, "cap reached");
    let outcomes = [
        Outcome::Success,
        Outcome::Failure {
            entry: r#"{"error":"x"}"#.to_owned(),
        },
        Outcome::Discard,
    ];
    let mut running = vec![ids[0].clone(), ids[1].clone()];
    for (k, outcome) in outcomes.into_iter().enumerate() {
        let done = running.remove(0);
        backend.complete(&done, outcome).await.unwrap();
        let next = &ids[2 + k];
        assert!(
            backend.claim(next, &queues, "t").await.unwrap().is_some(),
            "a completion frees a slot ({k})"
        );
        running.push(next.clone());
        assert_eq!(
            backend.claim(&ids[5], &queues, "t").await.unwrap(),
            None,
            "cap still reached"
        );
    }
    assert_eq!(backend.queue_len("c").await.unwrap(), 1);
}

/// A queue at its limit is skipped for the worker's next queue in
/// priority order; the limited queue's jobs stay where they are, and
/// unlimited queues are not slowed by another queue's limit.
pub async fn a_limited_queue_is_skipped_for_the_next(backend: Arc<dyn Backend>) {
    backend
        .set_queue_limits("a", QueueLimits::new().concurrency(1))
        .await
        .unwrap();
    let a_jobs = push_n(&backend, "a", 3).await;
    let b_jobs = push_n(&backend, "b", 3).await;
    let queues = qs(&["a", "b"]);
    let first = backend
        .claim(&worker("host:4+0", &["a", "b"]), &queues, "t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.queue.as_str(), first.payload.as_str()),
        ("a", a_jobs[0].as_str())
    );
    for (i, job) in b_jobs.iter().enumerate() {
        let c = backend
            .claim(&worker(&format!("host:4+{}", i + 1), &["a", "b"]), &queues, "t")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((c.queue.as_str(), c.payload.as_str()), ("b", job.as_str()));
    }
    assert_eq!(backend.queue_range("a", 0, -1).await.unwrap(), a_jobs[1..].to_vec());
}

/// Batch claims (a multi-slot worker's) take no more from a queue than its
/// limits leave, and fill the other slots from the next queues.
pub async fn claim_batch_respects_limits(backend: Arc<dyn Backend>) {
    backend
        .set_queue_limits("capped", QueueLimits::new().concurrency(2))
        .await
        .unwrap();
    backend
        .set_queue_limits("rated", QueueLimits::new().rate(1, HOUR))
        .await
        .unwrap();
    push_n(&backend, "capped", 5).await;
    push_n(&backend, "rated", 5).await;
    push_n(&backend, "free", 2).await;
    let queues = qs(&["capped", "rated", "free"]);
    let slots: Vec<WorkerId> = (1..=6)
        .map(|i| worker(&format!("host:5+0.{i}"), &["capped", "rated", "free"]))
        .collect();
    let got = backend.claim_batch(&slots, &queues, "t").await.unwrap();
    let from: Vec<&str> = got.iter().map(|(_, c)| c.queue.as_str()).collect();
    assert_eq!(from, ["capped", "capped", "rated", "free", "free"]);
    assert_eq!(
        got.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4],
        "a prefix of the slots"
    );
    let more = backend.claim_batch(&slots[5..], &queues, "t").await.unwrap();
    assert!(more.is_empty(), "every queue is at its limit or empty");
    assert_eq!(backend.queue_len("capped").await.unwrap(), 3);
    assert_eq!(backend.queue_len("rated").await.unwrap(), 4);
}

/// A multi-slot worker's round (completions, then claims, in one call)
/// counts the slots it completes as free: a capped queue refills exactly
/// the finished slots, never more.
pub async fn complete_and_claim_batch_refills_only_freed_slots(backend: Arc<dyn Backend>) {
    backend
        .set_queue_limits("c", QueueLimits::new().concurrency(2))
        .await
        .unwrap();
    push_n(&backend, "c", 6).await;
    let queues = qs(&["c"]);
    let slots: Vec<WorkerId> = (1..=3).map(|i| worker(&format!("host:6+0.{i}"), &["c"])).collect();
    let got = backend.claim_batch(&slots, &queues, "t").await.unwrap();
    assert_eq!(got.len(), 2);
    let done = vec![(slots[0].clone(), Outcome::Success)];
    let round = backend
        .complete_and_claim_batch(&done, &[slots[0].clone(), slots[2].clone()], &queues, "t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(round.len(), 1, "one slot was freed: {round:?}");
    let both = vec![
        (slots[1].clone(), Outcome::Success),
        (slots[0].clone(), Outcome::Success),
    ];
    let round = backend
        .complete_and_claim_batch(
            &both,
            &[slots[1].clone(), slots[0].clone(), slots[2].clone()],
            &queues,
            "t",
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(round.len(), 2, "two slots were freed: {round:?}");
    assert_eq!(backend.queue_len("c").await.unwrap(), 1, "2 + 1 + 2 of 6 claimed");
}

/// Cleaning a worker (its stop, or the clean-up of a dead one) gives its
/// slot back, and its job goes back to the head of the queue.
pub async fn cleaning_a_worker_returns_its_slot(backend: Arc<dyn Backend>) {
    backend
        .set_queue_limits("c", QueueLimits::new().concurrency(1))
        .await
        .unwrap();
    let jobs = push_n(&backend, "c", 2).await;
    let queues = qs(&["c"]);
    let dead = worker("host:7+1", &["c"]);
    let other = worker("host:7+2", &["c"]);
    backend.register_worker(&dead, now_ms()).await.unwrap();
    assert!(backend.claim(&dead, &queues, "t").await.unwrap().is_some());
    assert_eq!(backend.claim(&other, &queues, "t").await.unwrap(), None);
    backend.clean_worker(&dead, Orphan::Requeue).await.unwrap().unwrap();
    let c = backend.claim(&other, &queues, "t").await.unwrap().unwrap();
    assert_eq!(c.payload, jobs[0], "the requeued job, first");
}

/// The scheduler's stuck-worker sweep returns a dead worker's slot: a
/// worker that stopped pinging with a capped queue's job holds the only
/// slot until the sweep cleans it; then the queue is worked again.
pub async fn stuck_worker_sweep_returns_the_slot(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    q.set_queue_limits("c", QueueLimits::new().concurrency(1))
        .await
        .unwrap();
    let dead = worker("host:8+1", &["c"]);
    backend.register_worker(&dead, now_ms() - 60_000).await.unwrap();
    backend.push("c", &payload("c", 0)).await.unwrap();
    assert!(backend.claim(&dead, &qs(&["c"]), "t").await.unwrap().is_some());
    let ran = Arc::new(AtomicUsize::new(0));
    let tasks = counting_tasks(&ran, Duration::ZERO);
    for i in 1..=3 {
        q.enqueue("c", "job", (i,)).await.unwrap();
    }
    let w = spawn_worker(&backend, &tasks, quick_config(&["c"]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ran.load(Ordering::SeqCst), 0, "the dead worker holds the only slot");
    let s = spawn_scheduler(
        &backend,
        None,
        SchedulerConfig {
            stuck_worker_timeout: Some(Duration::from_secs(1)),
            worker_ping_interval: Duration::from_millis(100),
            ..quick_scheduler()
        },
    );
    wait_until(LIMIT, "the sweep freed the slot and all four jobs ran", || {
        let ran = Arc::clone(&ran);
        async move { ran.load(Ordering::SeqCst) == 4 }
    })
    .await;
    assert_eq!(backend.failed_count().await.unwrap(), 0);
    s.shutdown().await;
    w.shutdown().await;
}

/// Tasks for the engine tests: `job(..)` counts its run, tracks how many
/// run at once (the peak goes into `peak`), records its start and its
/// first argument, and sleeps `hold`.
pub(crate) struct Probe {
    pub(crate) ran: Arc<AtomicUsize>,
    pub(crate) now: AtomicUsize,
    pub(crate) peak: AtomicUsize,
    pub(crate) starts: Mutex<Vec<Instant>>,
    /// The first argument of every run, in start order.
    pub(crate) seen: Mutex<Vec<Value>>,
}

pub(crate) fn probe() -> Arc<Probe> {
    Arc::new(Probe {
        ran: Arc::new(AtomicUsize::new(0)),
        now: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
        starts: Mutex::new(Vec::new()),
        seen: Mutex::new(Vec::new()),
    })
}

/// The probe's task under `name`, holding each run for `hold`.
pub(crate) fn probe_def(p: &Arc<Probe>, name: &str, hold: Duration) -> TaskDef {
    let p = Arc::clone(p);
    TaskDef::from_fn(name, move |args: Vec<Value>, _ctx: JobContext| {
        let p = Arc::clone(&p);
        async move {
            p.starts.lock().expect("starts").push(Instant::now());
            p.seen
                .lock()
                .expect("seen")
                .push(args.first().cloned().unwrap_or(Value::Null));
            let now = p.now.fetch_add(1, Ordering::SeqCst) + 1;
            p.peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(hold).await;
            p.now.fetch_sub(1, Ordering::SeqCst);
            p.ran.fetch_add(1, Ordering::SeqCst);
            Ok::<_, TaskError>(())
        }
    })
}

fn probe_tasks(p: &Arc<Probe>, hold: Duration) -> Arc<Tasks> {
    let mut tasks = Tasks::new();
    tasks.define(probe_def(p, "job", hold)).expect("define job");
    Arc::new(tasks)
}

/// Runs `singles` one-slot workers and one worker of `slots` slots on
/// `queues` (and, with `scheduler`, a scheduler that promotes delayed
/// jobs) until `p` counts `jobs` runs, then stops them all. Returns how
/// many `throttled` events the workers emitted. The shared multi-worker
/// setup of the flow-control tests.
pub(crate) async fn run_until_all_ran(
    backend: &Arc<dyn Backend>,
    tasks: &Arc<Tasks>,
    queues: &[&str],
    (singles, slots): (usize, usize),
    scheduler: bool,
    p: &Arc<Probe>,
    jobs: usize,
) -> usize {
    let mut workers = Vec::new();
    for _ in 0..singles {
        workers.push(spawn_worker(backend, tasks, quick_config(queues)));
    }
    workers.push(spawn_worker(
        backend,
        tasks,
        WorkerConfig {
            concurrency: slots,
            ..quick_config(queues)
        },
    ));
    let logs: Vec<_> = workers.iter_mut().map(|w| w.take_events()).collect();
    let s = scheduler.then(|| spawn_scheduler(backend, None, quick_scheduler()));
    wait_until(Duration::from_secs(40), "every job ran", || {
        let p = Arc::clone(p);
        async move { p.ran.load(Ordering::SeqCst) >= jobs }
    })
    .await;
    for w in workers {
        w.shutdown().await;
    }
    if let Some(s) = s {
        s.shutdown().await;
    }
    logs.iter()
        .map(|log| count_events(log, |e| matches!(e, resq_core::WorkerEvent::Throttled { .. })))
        .sum()
}

fn counting_tasks(ran: &Arc<AtomicUsize>, hold: Duration) -> Arc<Tasks> {
    let p = Arc::new(Probe {
        ran: Arc::clone(ran),
        now: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
        starts: Mutex::new(Vec::new()),
        seen: Mutex::new(Vec::new()),
    });
    probe_tasks(&p, hold)
}

/// The most starts in any window of `window` among `starts`.
pub(crate) fn most_in_window(starts: &[Instant], window: Duration) -> usize {
    let mut sorted = starts.to_vec();
    sorted.sort_unstable();
    let mut most = 0;
    let mut lo = 0;
    for hi in 0..sorted.len() {
        while sorted[hi].duration_since(sorted[lo]) >= window {
            lo += 1;
        }
        most = most.max(hi - lo + 1);
    }
    most
}

/// Several workers (single- and multi-slot) on a capped queue never run
/// more than the cap at once, and every job runs, none failed.
pub async fn workers_never_exceed_the_cap(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    q.set_queue_limits("c", QueueLimits::new().concurrency(2))
        .await
        .unwrap();
    let p = probe();
    let tasks = probe_tasks(&p, Duration::from_millis(40));
    let jobs = 24;
    for i in 0..jobs {
        q.enqueue("c", "job", (i,)).await.unwrap();
    }
    run_until_all_ran(&backend, &tasks, &["c"], (3, 4), false, &p, jobs).await;
    let peak = p.peak.load(Ordering::SeqCst);
    assert!((1..=2).contains(&peak), "at most 2 at once, saw {peak}");
    assert_eq!(backend.failed_count().await.unwrap(), 0);
    assert_eq!(backend.queue_len("c").await.unwrap(), 0);
}

/// Workers on a rate-limited queue under backlog start no more jobs per
/// window than the limit (counted with a 250 ms margin: a job's start
/// trails its claim by a variable delay), every job runs eventually, and
/// none fails: the jobs over the limit only wait.
pub async fn workers_respect_the_rate_limit(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    let (max, period) = (4, Duration::from_secs(1));
    q.set_queue_limits("r", QueueLimits::new().rate(max, period))
        .await
        .unwrap();
    let p = probe();
    let tasks = probe_tasks(&p, Duration::ZERO);
    let jobs = 10;
    for i in 0..jobs {
        q.enqueue("r", "job", (i,)).await.unwrap();
    }
    run_until_all_ran(&backend, &tasks, &["r"], (2, 3), false, &p, jobs).await;
    let starts = p.starts.lock().expect("starts").clone();
    assert_eq!(starts.len(), jobs);
    let most = most_in_window(&starts, period - Duration::from_millis(250));
    assert!(most <= max as usize, "{most} starts in one window, limit {max}");
    assert_eq!(backend.failed_count().await.unwrap(), 0);
}

/// A worker on a limited queue and an unlimited one works the unlimited
/// one fully while the limited one waits; the limited queue's extra jobs
/// stay queued.
pub async fn limits_on_one_queue_leave_others_alone(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    q.set_queue_limits("slow", QueueLimits::new().rate(1, HOUR))
        .await
        .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let tasks = counting_tasks(&ran, Duration::ZERO);
    for i in 0..3 {
        q.enqueue("slow", "job", (i,)).await.unwrap();
    }
    for i in 0..5 {
        q.enqueue("fast", "job", (i,)).await.unwrap();
    }
    let w = spawn_worker(&backend, &tasks, quick_config(&["slow", "fast"]));
    wait_until(LIMIT, "one slow and every fast job ran", || {
        let ran = Arc::clone(&ran);
        async move { ran.load(Ordering::SeqCst) == 6 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.shutdown().await;
    assert_eq!(ran.load(Ordering::SeqCst), 6);
    assert_eq!(q.length("slow").await.unwrap(), 2);
    assert_eq!(q.length("fast").await.unwrap(), 0);
}
