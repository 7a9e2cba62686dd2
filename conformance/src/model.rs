//! A proptest state machine: random sequences of backend operations are
//! applied both to the backend under test and to a small pure-Rust reference
//! model of Resque's Redis data (lists, sets, counters), and every return
//! value plus the final observable state must agree.
//!
//! Payloads, queues, workers and keys are drawn from small pools so that
//! duplicates, collisions and byte-different copies of the same job occur
//! often. Operations the engine never issues are kept out, because the
//! contract does not define them: a claim by an unregistered worker first
//! registers it at `T0` (as a worker does on start), and a claim by a busy
//! worker, a completion by an idle one, a second registration and a ping of
//! an unregistered worker are skipped (neither backend nor model sees them).
//! Each sequence draws from one profile of operation families (all mixed,
//! or a pair that interacts) so multi-step interactions are frequent.
//! Locks use long TTLs: expiry is tested in the `lock` and `leader` groups.

use crate::fixtures::*;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::{BoxedStrategy, Union};
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use resq_core::failed::{encode_entry, WORKER_TIMEOUT};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::future::Future;

/// Proptest cases per run (override with `PROPTEST_CASES`).
const DEFAULT_CASES: u32 = 256;
/// The longest generated operation sequence.
const MAX_OPS: usize = 40;

const QUEUES: [&str; 3] = ["q1", "q2", "q3"];
const CLAIM_ORDERS: [&[&str]; 4] = [&["q1"], &["q2", "q1"], &["q1", "q2", "q3"], &["q3", "q2"]];
const TIMESTAMPS: [i64; 4] = [100, 101, 102, 105];
const UP_TO: [i64; 6] = [99, 100, 101, 102, 104, 200];
const LIMITS: [usize; 4] = [1, 2, 3, 50];
const STAT_KEYS: [&str; 3] = ["processed", "failed", "custom:x"];
const LOCK_KEYS: [&str; 3] = ["lock:a", "lock:b", "workerslock:c"];
const LOCK_VALUES: [&str; 2] = ["v1", "v2"];
const LEADERS: [&str; 2] = ["sched-1", "sched-2"];
const T0: i64 = 1_700_000_000_000;
const LONG: Duration = Duration::from_secs(3600);

/// The workers the model uses, by index.
fn worker_ids() -> Vec<WorkerId> {
    vec![
        worker("h:1+1", &["q1", "q2"]),
        worker("h:1+2", &["q2", "q3"]),
        worker("h2:7", &["*"]),
    ]
}

/// Queue payloads: node-resque bytes plus a byte-different copy of one job
/// and one with odd spacing and a big integer.
fn queue_payloads() -> Vec<String> {
    let mut v = Vec::new();
    for class in ["c1", "c2"] {
        for q in ["q1", "q2"] {
            for a in 0..2 {
                v.push(format!(r#"{{"class":"{class}","queue":"{q}","args":[{a}]}}"#));
            }
        }
    }
    v.push(r#"{"args":[0],"queue":"q1","class":"c1"}"#.to_owned());
    v.push(r#"{"class":"c1", "queue":"q3", "args":[12345678901234567890]}"#.to_owned());
    v
}

/// Delayed items that cannot be promoted (not JSON; no queue).
fn bad_delayed() -> Vec<String> {
    vec!["not json".to_owned(), r#"{"class":"X","args":[]}"#.to_owned()]
}

/// Failed entries used by `push_failed` and `Outcome::Failure`.
fn entries() -> Vec<String> {
    (0..3)
        .map(|i| {
            let payload = format!(r#"{{"class":"c1","queue":"q1","args":[{i}]}}"#);
            encode_entry("h:1+1", "q1", &payload, &Failure::new("Error", format!("e{i}")), AT_MS)
        })
        .collect()
}

/// Which failed entry an operation names.
#[derive(Clone, Debug)]
enum EntryRef {
    /// One of the pool's entries (maybe not in the list).
    Pool(String),
    /// The entry at this index (modulo the length) of the model's list, so
    /// entries written by the backend itself can be targeted too.
    Existing(usize),
}

/// How a `clean_worker` op handles an orphaned job.
#[derive(Clone, Copy, Debug)]
enum OrphanKind {
    /// `Orphan::Requeue`.
    Requeue,
    /// `Orphan::Fail` with a worker-timeout failure.
    Fail,
}

/// One backend operation, with worker ids given as indexes into the model's
/// worker pool.
#[derive(Clone, Debug)]
enum Op {
    Push {
        queue: String,
        payload: String,
    },
    PushBatch(Vec<(String, String)>),
    Claim {
        worker: usize,
        queues: Vec<String>,
    },
    Complete {
        worker: usize,
        outcome: Outcome,
    },
    QueueLen(String),
    QueueRange {
        queue: String,
        start: i64,
        stop: i64,
    },
    RemoveFromQueue {
        queue: String,
        payload: String,
        count: i64,
    },
    DeleteQueue(String),
    Queues,
    Schedule {
        timestamp: i64,
        payload: String,
    },
    RemoveDelayed(String),
    PromoteDue {
        up_to: i64,
        limit: usize,
    },
    DueTimestamps {
        up_to: i64,
        limit: usize,
    },
    DelayedTimestamps,
    DelayedAt(i64),
    TimestampsOf(String),
    PushFailed(String),
    FailedCount,
    FailedRange {
        start: i64,
        stop: i64,
    },
    RemoveFailed(EntryRef),
    RetryFailed {
        entry: EntryRef,
        queue: String,
        payload: String,
    },
    IncrStat {
        key: String,
        by: i64,
    },
    Stat(String),
    Stats,
    AcquireLock {
        key: String,
        value: String,
    },
    RenewLock {
        key: String,
        value: String,
    },
    ReleaseLock {
        key: String,
        value: String,
    },
    DeleteLock(String),
    Locks,
    AcquireLeader(String),
    ReleaseLeader(String),
    Leader,
    Register {
        worker: usize,
        now_ms: i64,
    },
    Ping {
        worker: usize,
        now_ms: i64,
    },
    StaleWorkers(i64),
    Workers,
    WorkingOn(usize),
    WorkerStarted(usize),
    CleanWorker {
        worker: usize,
        orphan: OrphanKind,
    },
}

impl fmt::Display for EntryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryRef::Pool(e) => write!(f, "{e}"),
            EntryRef::Existing(i) => write!(f, "<failed entry #{i} mod len>"),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = |i: &usize| worker_ids()[*i].member();
        match self {
            Op::Push { queue, payload } => write!(f, "push({queue}, {payload})"),
            Op::PushBatch(jobs) => {
                write!(f, "push_batch[")?;
                for (i, (q, p)) in jobs.iter().enumerate() {
                    write!(f, "{}{q}: {p}", if i > 0 { ", " } else { "" })?;
                }
                write!(f, "]")
            }
            Op::Claim { worker, queues } => write!(f, "claim({}, {queues:?})", w(worker)),
            Op::Complete { worker, outcome } => match outcome {
                Outcome::Success => write!(f, "complete({}, Success)", w(worker)),
                Outcome::Discard => write!(f, "complete({}, Discard)", w(worker)),
                Outcome::Failure { entry } => write!(f, "complete({}, Failure {entry})", w(worker)),
            },
            Op::QueueLen(q) => write!(f, "queue_len({q})"),
            Op::QueueRange { queue, start, stop } => write!(f, "queue_range({queue}, {start}, {stop})"),
            Op::RemoveFromQueue { queue, payload, count } => {
                write!(f, "remove_from_queue({queue}, {payload}, {count})")
            }
            Op::DeleteQueue(q) => write!(f, "delete_queue({q})"),
            Op::Queues => write!(f, "queues()"),
            Op::Schedule { timestamp, payload } => write!(f, "schedule({timestamp}, {payload})"),
            Op::RemoveDelayed(p) => write!(f, "remove_delayed({p})"),
            Op::PromoteDue { up_to, limit } => write!(f, "promote_due({up_to}, {limit})"),
            Op::DueTimestamps { up_to, limit } => write!(f, "due_timestamps({up_to}, {limit})"),
            Op::DelayedTimestamps => write!(f, "delayed_timestamps()"),
            Op::DelayedAt(t) => write!(f, "delayed_at({t})"),
            Op::TimestampsOf(p) => write!(f, "timestamps_of({p})"),
            Op::PushFailed(e) => write!(f, "push_failed({e})"),
            Op::FailedCount => write!(f, "failed_count()"),
            Op::FailedRange { start, stop } => write!(f, "failed_range({start}, {stop})"),
            Op::RemoveFailed(e) => write!(f, "remove_failed({e})"),
            Op::RetryFailed { entry, queue, payload } => write!(f, "retry_failed({entry}, {queue}, {payload})"),
            Op::IncrStat { key, by } => write!(f, "incr_stat({key}, {by})"),
            Op::Stat(k) => write!(f, "stat({k})"),
            Op::Stats => write!(f, "stats()"),
            Op::AcquireLock { key, value } => write!(f, "acquire_lock({key}, {value}, 1h)"),
            Op::RenewLock { key, value } => write!(f, "renew_lock({key}, {value}, 1h)"),
            Op::ReleaseLock { key, value } => write!(f, "release_lock({key}, {value})"),
            Op::DeleteLock(k) => write!(f, "delete_lock({k})"),
            Op::Locks => write!(f, "locks()"),
            Op::AcquireLeader(n) => write!(f, "acquire_leader({n}, 1h)"),
            Op::ReleaseLeader(n) => write!(f, "release_leader({n})"),
            Op::Leader => write!(f, "leader()"),
            Op::Register { worker, now_ms } => write!(f, "register_worker({}, T0+{})", w(worker), now_ms - T0),
            Op::Ping { worker, now_ms } => write!(f, "ping_worker({}, T0+{})", w(worker), now_ms - T0),
            Op::StaleWorkers(c) => write!(f, "stale_workers(T0+{})", c - T0),
            Op::Workers => write!(f, "workers()"),
            Op::WorkingOn(i) => write!(f, "working_on({})", w(i)),
            Op::WorkerStarted(i) => write!(f, "worker_started({})", w(i)),
            Op::CleanWorker { worker, orphan } => write!(f, "clean_worker({}, {orphan:?})", w(worker)),
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The part of the contract an operation belongs to, for focused profiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Queue,
    Delayed,
    Failed,
    Stats,
    Locks,
    Workers,
}

/// The families each generated sequence draws from: everything mixed, and
/// pairs that interact (claims and cleanups, failures and retries,
/// promotion onto queues and the failed list), so that multi-step
/// interactions are dense enough to be hit in a few hundred cases.
const PROFILES: &[&[Family]] = &[
    &[Family::Queue],
    &[
        Family::Queue,
        Family::Delayed,
        Family::Failed,
        Family::Stats,
        Family::Locks,
        Family::Workers,
    ],
    &[Family::Queue, Family::Workers, Family::Stats],
    &[Family::Queue, Family::Failed, Family::Workers],
    &[Family::Queue, Family::Delayed],
    &[Family::Delayed, Family::Failed],
    &[Family::Failed],
    &[Family::Workers],
    &[Family::Locks],
];

/// A pool value, with the first `hot` items drawn three times as often as
/// the rest so that duplicates are common.
fn skewed(items: Vec<String>, hot: usize) -> BoxedStrategy<String> {
    let cold = items.clone();
    let hot: Vec<String> = items.into_iter().take(hot).collect();
    prop_oneof![3 => select(hot), 1 => select(cold)].boxed()
}

/// The strategy for one operation of the given families, weighted towards writes.
fn op_strategy(families: &[Family]) -> BoxedStrategy<Op> {
    use Family::*;
    let queue = || skewed(strings(&QUEUES), 2);
    let payload = || skewed(queue_payloads(), 3);
    let delayed_payload = || prop_oneof![8 => skewed(queue_payloads(), 3), 2 => select(bad_delayed())];
    let entry = || skewed(entries(), 2);
    let wk = || 0..worker_ids().len();
    let entry_ref = || {
        prop_oneof![
            entry().prop_map(EntryRef::Pool),
            (0..8usize).prop_map(EntryRef::Existing),
        ]
    };
    let lock = || (select(strings(&LOCK_KEYS)), select(strings(&LOCK_VALUES)));
    let time = || (0..6i64).prop_map(|k| T0 + k * 1_000);
    let orders: Vec<Vec<String>> = CLAIM_ORDERS.iter().map(|o| strings(o)).collect();
    let outcome = prop_oneof![
        Just(Outcome::Success),
        Just(Outcome::Discard),
        entry().prop_map(|entry| Outcome::Failure { entry }),
    ];
    let all: Vec<(Family, u32, BoxedStrategy<Op>)> = vec![
        (
            Queue,
            8,
            (queue(), payload())
                .prop_map(|(queue, payload)| Op::Push { queue, payload })
                .boxed(),
        ),
        (
            Queue,
            3,
            proptest::collection::vec((queue(), payload()), 1..4)
                .prop_map(Op::PushBatch)
                .boxed(),
        ),
        (
            Queue,
            8,
            (wk(), select(orders))
                .prop_map(|(worker, queues)| Op::Claim { worker, queues })
                .boxed(),
        ),
        (
            Queue,
            6,
            (wk(), outcome)
                .prop_map(|(worker, outcome)| Op::Complete { worker, outcome })
                .boxed(),
        ),
        (Queue, 2, queue().prop_map(Op::QueueLen).boxed()),
        (
            Queue,
            3,
            (queue(), -4..4i64, -4..4i64)
                .prop_map(|(queue, start, stop)| Op::QueueRange { queue, start, stop })
                .boxed(),
        ),
        (
            Queue,
            4,
            (
                queue(),
                payload(),
                prop_oneof![2 => select(vec![-1i64, 1]), 1 => -3..=3i64],
            )
                .prop_map(|(queue, payload, count)| Op::RemoveFromQueue { queue, payload, count })
                .boxed(),
        ),
        (Queue, 2, queue().prop_map(Op::DeleteQueue).boxed()),
        (Queue, 1, Just(Op::Queues).boxed()),
        (
            Delayed,
            8,
            (select(TIMESTAMPS.to_vec()), delayed_payload())
                .prop_map(|(timestamp, payload)| Op::Schedule { timestamp, payload })
                .boxed(),
        ),
        (Delayed, 2, delayed_payload().prop_map(Op::RemoveDelayed).boxed()),
        (
            Delayed,
            4,
            (select(UP_TO.to_vec()), select(LIMITS.to_vec()))
                .prop_map(|(up_to, limit)| Op::PromoteDue { up_to, limit })
                .boxed(),
        ),
        (
            Delayed,
            2,
            (select(UP_TO.to_vec()), select(LIMITS.to_vec()))
                .prop_map(|(up_to, limit)| Op::DueTimestamps { up_to, limit })
                .boxed(),
        ),
        (Delayed, 1, Just(Op::DelayedTimestamps).boxed()),
        (Delayed, 2, select(TIMESTAMPS.to_vec()).prop_map(Op::DelayedAt).boxed()),
        (Delayed, 2, delayed_payload().prop_map(Op::TimestampsOf).boxed()),
        (Failed, 5, entry().prop_map(Op::PushFailed).boxed()),
        (Failed, 1, Just(Op::FailedCount).boxed()),
        (
            Failed,
            2,
            (-3..3i64, -3..3i64)
                .prop_map(|(start, stop)| Op::FailedRange { start, stop })
                .boxed(),
        ),
        (Failed, 3, entry_ref().prop_map(Op::RemoveFailed).boxed()),
        (
            Failed,
            3,
            (entry_ref(), queue(), payload())
                .prop_map(|(entry, queue, payload)| Op::RetryFailed { entry, queue, payload })
                .boxed(),
        ),
        (
            Stats,
            2,
            (select(strings(&STAT_KEYS)), 1..4i64)
                .prop_map(|(key, by)| Op::IncrStat { key, by })
                .boxed(),
        ),
        (Stats, 1, select(stat_keys_to_read()).prop_map(Op::Stat).boxed()),
        (Stats, 1, Just(Op::Stats).boxed()),
        (
            Locks,
            4,
            lock().prop_map(|(key, value)| Op::AcquireLock { key, value }).boxed(),
        ),
        (
            Locks,
            2,
            lock().prop_map(|(key, value)| Op::RenewLock { key, value }).boxed(),
        ),
        (
            Locks,
            3,
            lock().prop_map(|(key, value)| Op::ReleaseLock { key, value }).boxed(),
        ),
        (Locks, 1, select(strings(&LOCK_KEYS)).prop_map(Op::DeleteLock).boxed()),
        (Locks, 1, Just(Op::Locks).boxed()),
        (Locks, 3, select(strings(&LEADERS)).prop_map(Op::AcquireLeader).boxed()),
        (Locks, 2, select(strings(&LEADERS)).prop_map(Op::ReleaseLeader).boxed()),
        (Locks, 1, Just(Op::Leader).boxed()),
        (
            Workers,
            3,
            (wk(), time())
                .prop_map(|(worker, now_ms)| Op::Register { worker, now_ms })
                .boxed(),
        ),
        (
            Workers,
            2,
            (wk(), time())
                .prop_map(|(worker, now_ms)| Op::Ping { worker, now_ms })
                .boxed(),
        ),
        (
            Workers,
            2,
            (0..8i64).prop_map(|k| Op::StaleWorkers(T0 + k * 1_000)).boxed(),
        ),
        (Workers, 1, Just(Op::Workers).boxed()),
        (Workers, 1, wk().prop_map(Op::WorkingOn).boxed()),
        (Workers, 1, wk().prop_map(Op::WorkerStarted).boxed()),
        (
            Workers,
            3,
            (wk(), prop_oneof![Just(OrphanKind::Requeue), Just(OrphanKind::Fail)])
                .prop_map(|(worker, orphan)| Op::CleanWorker { worker, orphan })
                .boxed(),
        ),
    ];
    let weighted: Vec<(u32, BoxedStrategy<Op>)> = all
        .into_iter()
        .filter(|(family, _, _)| families.contains(family))
        .map(|(_, weight, strategy)| (weight, strategy))
        .collect();
    Union::new_weighted(weighted).boxed()
}

/// Sequences of up to `max_ops` operations, each drawn from one profile.
fn sequence_strategy(max_ops: usize) -> BoxedStrategy<Vec<Op>> {
    let profiles: Vec<BoxedStrategy<Vec<Op>>> = PROFILES
        .iter()
        .map(|families| proptest::collection::vec(op_strategy(families), 1..=max_ops).boxed())
        .collect();
    Union::new(profiles).boxed()
}

/// Counter keys worth reading: the incremented ones and the per-worker ones.
fn stat_keys_to_read() -> Vec<String> {
    let mut keys = strings(&STAT_KEYS);
    for w in worker_ids() {
        keys.push(format!("processed:{}", w.name));
        keys.push(format!("failed:{}", w.name));
    }
    keys
}

/// A registered worker in the model.
#[derive(Clone, Debug)]
struct Registered {
    started: i64,
    ping: i64,
    working_on: Option<WorkingOn>,
}

/// The reference model: Resque's Redis keys as plain collections.
#[derive(Default, Debug)]
struct Model {
    /// `queue:<q>` lists (possibly empty).
    lists: BTreeMap<String, VecDeque<String>>,
    /// The `queues` set.
    names: BTreeSet<String>,
    /// Non-empty `delayed:<s>` buckets.
    delayed: BTreeMap<i64, Vec<String>>,
    failed: Vec<String>,
    /// The shard of each failed entry, in step with `failed`.
    failed_shards: Vec<usize>,
    stats: BTreeMap<String, i64>,
    locks: BTreeMap<String, String>,
    leader: Option<String>,
    /// By index into [`worker_ids`].
    workers: BTreeMap<usize, Registered>,
}

impl Model {
    /// Appends a failed entry written on `shard`: the failed list is listed
    /// shard by shard (see [`Backend::queue_shard`]), so it goes after the
    /// last entry of a shard up to its own.
    fn push_failed_on(&mut self, e: String, shard: usize) {
        let at = self
            .failed_shards
            .iter()
            .rposition(|t| *t <= shard)
            .map_or(0, |i| i + 1);
        self.failed.insert(at, e);
        self.failed_shards.insert(at, shard);
    }

    fn remove_failed_at(&mut self, i: usize) {
        self.failed.remove(i);
        self.failed_shards.remove(i);
    }
}

/// Redis `LRANGE` on a slice.
fn lrange<T: Clone>(items: &[T], start: i64, stop: i64) -> Vec<T> {
    let len = items.len() as i64;
    let s = if start < 0 { (len + start).max(0) } else { start };
    let e = if stop < 0 { len + stop } else { stop.min(len - 1) };
    if s > e || s >= len {
        return Vec::new();
    }
    items[s as usize..=e as usize].to_vec()
}

/// Redis `LREM` on a list; returns how many were removed.
fn lrem(list: &mut VecDeque<String>, value: &str, count: i64) -> u64 {
    let matches: Vec<usize> = (0..list.len()).filter(|&i| list[i] == value).collect();
    let chosen: Vec<usize> = match count {
        0 => matches,
        c if c > 0 => matches.into_iter().take(c as usize).collect(),
        c => matches.into_iter().rev().take(c.unsigned_abs() as usize).collect(),
    };
    let mut sorted = chosen;
    sorted.sort_unstable();
    for i in sorted.iter().rev() {
        list.remove(*i);
    }
    sorted.len() as u64
}

/// Compares a backend result with the model's.
fn same<T: PartialEq + fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: backend returned {got:?}, model expects {want:?}"))
    }
}

/// Awaits a backend call, turning its error into a failure message.
macro_rules! call {
    ($e:expr) => {
        $e.await.map_err(|e| format!("backend error: {e}"))?
    };
}

impl Model {
    fn push(&mut self, queue: &str, payload: &str) {
        self.lists
            .entry(queue.to_owned())
            .or_default()
            .push_back(payload.to_owned());
        self.names.insert(queue.to_owned());
    }

    fn list(&self, queue: &str) -> Vec<String> {
        self.lists
            .get(queue)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn bump(&mut self, key: &str, by: i64) -> i64 {
        let v = self.stats.entry(key.to_owned()).or_insert(0);
        *v += by;
        *v
    }

    fn resolve(&self, entry: &EntryRef) -> String {
        match entry {
            EntryRef::Pool(e) => e.clone(),
            EntryRef::Existing(i) if !self.failed.is_empty() => self.failed[i % self.failed.len()].clone(),
            EntryRef::Existing(_) => entries()[0].clone(),
        }
    }

    fn stale(&self, ids: &[WorkerId], cutoff: i64) -> Vec<WorkerId> {
        let mut v: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, r)| r.ping < cutoff)
            .map(|(i, _)| ids[*i].clone())
            .collect();
        v.sort();
        v
    }

    fn registered(&self, ids: &[WorkerId]) -> Vec<WorkerId> {
        let mut v: Vec<WorkerId> = self.workers.keys().map(|i| ids[*i].clone()).collect();
        v.sort();
        v
    }

    /// Applies `op` (number `step`) to the backend and the model and
    /// compares the results.
    async fn apply(&mut self, b: &dyn Backend, ids: &[WorkerId], op: &Op, step: usize) -> Result<(), String> {
        match op {
            Op::Push { queue, payload } => {
                call!(b.push(queue, payload));
                self.push(queue, payload);
            }
            Op::PushBatch(jobs) => {
                let batch: Vec<QueuedJob> = jobs.iter().map(|(q, p)| queued(q, p)).collect();
                call!(b.push_batch(&batch));
                for (q, p) in jobs {
                    self.push(q, p);
                }
            }
            Op::Claim { worker, queues } => {
                if !self.workers.contains_key(worker) {
                    // Workers register before they claim.
                    call!(b.register_worker(&ids[*worker], T0));
                    self.workers.insert(
                        *worker,
                        Registered {
                            started: T0,
                            ping: T0,
                            working_on: None,
                        },
                    );
                }
                if self.workers.get(worker).is_some_and(|r| r.working_on.is_some()) {
                    return Ok(());
                }
                let run_at = format!("run-{step}");
                let got = call!(b.claim(&ids[*worker], queues, &run_at));
                let mut want = None;
                for q in queues {
                    if let Some(p) = self.lists.get_mut(q).and_then(VecDeque::pop_front) {
                        want = Some(Claimed {
                            queue: q.clone(),
                            payload: p,
                            enqueued_at_ms: None,
                        });
                        break;
                    }
                }
                // The enqueue time is the backend's clock: compare the rest.
                let got = got.map(|c| Claimed {
                    enqueued_at_ms: None,
                    ..c
                });
                same("claim", got, want.clone())?;
                if let (Some(c), Some(r)) = (want, self.workers.get_mut(worker)) {
                    r.working_on = Some(WorkingOn {
                        worker: ids[*worker].name.clone(),
                        queue: c.queue,
                        run_at,
                        payload: c.payload,
                    });
                }
            }
            Op::Complete { worker, outcome } => {
                let busy = self.workers.get(worker).is_some_and(|r| r.working_on.is_some());
                if !busy {
                    return Ok(());
                }
                let done_queue = self
                    .workers
                    .get(worker)
                    .and_then(|r| r.working_on.as_ref())
                    .map(|w| w.queue.clone())
                    .unwrap_or_default();
                call!(b.complete(&ids[*worker], outcome.clone()));
                let name = ids[*worker].name.clone();
                let name = &name;
                match outcome {
                    Outcome::Success => {
                        self.bump("processed", 1);
                        self.bump(&format!("processed:{name}"), 1);
                    }
                    Outcome::Failure { entry } => {
                        self.bump("failed", 1);
                        self.bump(&format!("failed:{name}"), 1);
                        self.push_failed_on(entry.clone(), b.queue_shard(&done_queue));
                    }
                    Outcome::Discard => {}
                }
                if let Some(r) = self.workers.get_mut(worker) {
                    r.working_on = None;
                }
            }
            Op::QueueLen(q) => same("queue_len", call!(b.queue_len(q)), self.list(q).len() as u64)?,
            Op::QueueRange { queue, start, stop } => same(
                "queue_range",
                call!(b.queue_range(queue, *start, *stop)),
                lrange(&self.list(queue), *start, *stop),
            )?,
            Op::RemoveFromQueue { queue, payload, count } => {
                let got = call!(b.remove_from_queue(queue, payload, *count));
                let want = self.lists.get_mut(queue).map_or(0, |l| lrem(l, payload, *count));
                same("remove_from_queue", got, want)?;
            }
            Op::DeleteQueue(q) => {
                let got = call!(b.delete_queue(q));
                let want = self.lists.remove(q).is_some_and(|l| !l.is_empty());
                self.names.remove(q);
                same("delete_queue", got, want)?;
            }
            Op::Queues => same("queues", call!(b.queues()), self.names.iter().cloned().collect())?,
            Op::Schedule { timestamp, payload } => {
                let got = call!(b.schedule(*timestamp, payload));
                let bucket = self.delayed.entry(*timestamp).or_default();
                let want = !bucket.contains(payload);
                if want {
                    let sh = crate::support::item_shard(b, payload);
                    let at = bucket
                        .iter()
                        .rposition(|x| crate::support::item_shard(b, x) <= sh)
                        .map_or(0, |i| i + 1);
                    bucket.insert(at, payload.clone());
                }
                same("schedule", got, want)?;
            }
            Op::RemoveDelayed(p) => {
                let got = call!(b.remove_delayed(p));
                let mut want = Vec::new();
                for (t, items) in self.delayed.iter_mut() {
                    if items.contains(p) {
                        items.retain(|i| i != p);
                        want.push(*t);
                    }
                }
                self.delayed.retain(|_, items| !items.is_empty());
                same("remove_delayed", got, want)?;
            }
            Op::PromoteDue { up_to, limit } => self.promote(b, *up_to, *limit).await?,
            Op::DueTimestamps { up_to, limit } => {
                let want: Vec<i64> = self.delayed.range(..=*up_to).map(|(t, _)| *t).take(*limit).collect();
                same("due_timestamps", call!(b.due_timestamps(*up_to, *limit)), want)?;
            }
            Op::DelayedTimestamps => same(
                "delayed_timestamps",
                call!(b.delayed_timestamps()),
                self.delayed.keys().copied().collect(),
            )?,
            Op::DelayedAt(t) => same(
                "delayed_at",
                call!(b.delayed_at(*t)),
                self.delayed.get(t).cloned().unwrap_or_default(),
            )?,
            Op::TimestampsOf(p) => {
                let want: Vec<i64> = self
                    .delayed
                    .iter()
                    .filter(|(_, v)| v.contains(p))
                    .map(|(t, _)| *t)
                    .collect();
                same("timestamps_of", call!(b.timestamps_of(p)), want)?;
            }
            Op::PushFailed(e) => {
                call!(b.push_failed(e));
                self.push_failed_on(e.clone(), 0);
            }
            Op::FailedCount => same("failed_count", call!(b.failed_count()), self.failed.len() as u64)?,
            Op::FailedRange { start, stop } => same(
                "failed_range",
                call!(b.failed_range(*start, *stop)),
                lrange(&self.failed, *start, *stop),
            )?,
            Op::RemoveFailed(entry) => {
                let e = self.resolve(entry);
                let got = call!(b.remove_failed(&e));
                let want = match self.failed.iter().position(|x| *x == e) {
                    Some(i) => {
                        self.remove_failed_at(i);
                        1
                    }
                    None => 0,
                };
                same("remove_failed", got, want)?;
            }
            Op::RetryFailed { entry, queue, payload } => {
                let e = self.resolve(entry);
                let got = call!(b.retry_failed(&e, queue, payload));
                let target = b.queue_shard(queue);
                let pos = (0..self.failed.len())
                    .find(|i| self.failed[*i] == e && self.failed_shards[*i] == target)
                    .or_else(|| self.failed.iter().position(|x| *x == e));
                let want = match pos {
                    Some(i) => {
                        self.remove_failed_at(i);
                        self.push(queue, payload);
                        true
                    }
                    None => false,
                };
                same("retry_failed", got, want)?;
            }
            Op::IncrStat { key, by } => {
                let got = call!(b.incr_stat(key, *by));
                let want = self.bump(key, *by);
                same("incr_stat", got, want)?;
            }
            Op::Stat(k) => same("stat", call!(b.stat(k)), self.stats.get(k).copied().unwrap_or(0))?,
            Op::Stats => same("stats", call!(b.stats()), self.stats_list())?,
            Op::AcquireLock { key, value } => {
                let got = call!(b.acquire_lock(key, value, LONG));
                let want = !self.locks.contains_key(key);
                if want {
                    self.locks.insert(key.clone(), value.clone());
                }
                same("acquire_lock", got, want)?;
            }
            Op::RenewLock { key, value } => {
                let want = self.locks.get(key) == Some(value);
                same("renew_lock", call!(b.renew_lock(key, value, LONG)), want)?;
            }
            Op::ReleaseLock { key, value } => {
                let got = call!(b.release_lock(key, value));
                let want = self.locks.get(key) == Some(value);
                if want {
                    self.locks.remove(key);
                }
                same("release_lock", got, want)?;
            }
            Op::DeleteLock(key) => {
                let got = call!(b.delete_lock(key));
                let want = u64::from(self.locks.remove(key).is_some());
                same("delete_lock", got, want)?;
            }
            Op::Locks => same("locks", call!(b.locks()), self.locks_list())?,
            Op::AcquireLeader(name) => {
                let got = call!(b.acquire_leader(name, LONG));
                let want = self.leader.as_ref().is_none_or(|l| l == name);
                if want {
                    self.leader = Some(name.clone());
                }
                same("acquire_leader", got, want)?;
            }
            Op::ReleaseLeader(name) => {
                let got = call!(b.release_leader(name));
                let want = self.leader.as_ref() == Some(name);
                if want {
                    self.leader = None;
                }
                same("release_leader", got, want)?;
            }
            Op::Leader => same("leader", call!(b.leader()), self.leader.clone())?,
            Op::Register { worker, now_ms } => {
                if self.workers.contains_key(worker) {
                    return Ok(());
                }
                call!(b.register_worker(&ids[*worker], *now_ms));
                self.workers.insert(
                    *worker,
                    Registered {
                        started: *now_ms,
                        ping: *now_ms,
                        working_on: None,
                    },
                );
            }
            Op::Ping { worker, now_ms } => {
                let Some(r) = self.workers.get_mut(worker) else {
                    return Ok(());
                };
                call!(b.ping_worker(&ids[*worker], *now_ms));
                r.ping = *now_ms;
            }
            Op::StaleWorkers(cutoff) => {
                same(
                    "stale_workers",
                    call!(b.stale_workers(*cutoff)),
                    self.stale(ids, *cutoff),
                )?;
            }
            Op::Workers => same("workers", call!(b.workers()), self.registered(ids))?,
            Op::WorkingOn(i) => same(
                "working_on",
                call!(b.working_on(&ids[*i])),
                self.workers.get(i).and_then(|r| r.working_on.clone()),
            )?,
            Op::WorkerStarted(i) => same(
                "worker_started",
                call!(b.worker_started(&ids[*i])),
                self.workers.get(i).map(|r| r.started),
            )?,
            Op::CleanWorker { worker, orphan } => self.clean(b, ids, *worker, *orphan).await?,
        }
        Ok(())
    }

    fn stats_list(&self) -> Vec<(String, i64)> {
        self.stats.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    fn locks_list(&self) -> Vec<(String, String)> {
        self.locks.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    async fn promote(&mut self, b: &dyn Backend, up_to: i64, limit: usize) -> Result<(), String> {
        let got = call!(b.promote_due(up_to, limit));
        // The model's expectation: oldest bucket first, insertion order.
        let mut want = Vec::new();
        let due: Vec<i64> = self.delayed.range(..=up_to).map(|(t, _)| *t).collect();
        for t in due {
            if want.len() >= limit {
                break;
            }
            if let Some(items) = self.delayed.get_mut(&t) {
                while want.len() < limit && !items.is_empty() {
                    want.push((t, items.remove(0)));
                }
                if items.is_empty() {
                    self.delayed.remove(&t);
                }
            }
        }
        if got.len() != want.len() {
            return Err(format!(
                "promote_due({up_to}, {limit}) moved {} items, model expects {}: backend {got:?}, model {want:?}",
                got.len(),
                want.len()
            ));
        }
        let mut failed = Vec::new();
        for (g, (t, item)) in got.iter().zip(&want) {
            match resq_core::Job::decode(item).ok().and_then(|j| j.queue) {
                Some(queue) => {
                    let expected = Promotion::Moved {
                        timestamp: *t,
                        queue: queue.clone(),
                        payload: item.clone(),
                    };
                    same("promote_due item", g, &expected)?;
                    self.push(&queue, item);
                }
                None => match g {
                    Promotion::Failed {
                        timestamp,
                        payload,
                        reason,
                    } if *timestamp == *t && payload == item && !reason.trim().is_empty() => {
                        failed.push((item.clone(), reason.clone()));
                    }
                    other => {
                        return Err(format!(
                            "promote_due item: backend returned {other:?}, model expects Failed {{ timestamp: {t}, payload: {item:?}, reason: <non-empty> }}"
                        ))
                    }
                },
            }
        }
        if !failed.is_empty() {
            // The entries carry the backend's clock: read them back, check
            // them, and adopt their exact bytes.
            let all = call!(b.failed_range(0, -1));
            for (payload, reason) in &failed {
                let sh = crate::support::item_shard(b, payload);
                let at = self.failed_shards.iter().rposition(|t| *t <= sh).map_or(0, |i| i + 1);
                let Some(entry) = all.get(at) else {
                    return Err(format!("promote_due: no failed entry at {at}: {all:?}"));
                };
                if let Some(problem) = promotion_entry_problem(entry, payload, reason) {
                    return Err(format!("promote_due: {problem}"));
                }
                self.push_failed_on(entry.clone(), sh);
            }
        }
        Ok(())
    }

    async fn clean(&mut self, b: &dyn Backend, ids: &[WorkerId], w: usize, kind: OrphanKind) -> Result<(), String> {
        let failure = Failure::new(WORKER_TIMEOUT, WORKER_TIMEOUT).with_backtrace(vec!["killed by model".into()]);
        let orphan = match kind {
            OrphanKind::Requeue => Orphan::Requeue,
            OrphanKind::Fail => Orphan::Fail {
                failure: failure.clone(),
                at_ms: AT_MS,
            },
        };
        let got = call!(b.clean_worker(&ids[w], orphan));
        let Some(reg) = self.workers.remove(&w) else {
            return same("clean_worker of an unregistered worker", got, None);
        };
        let name = &ids[w].name;
        self.stats.remove(&format!("processed:{name}"));
        self.stats.remove(&format!("failed:{name}"));
        let Some(got) = got else {
            return Err("clean_worker returned None for a registered worker".into());
        };
        same("clean_worker worker", &got.worker, &ids[w])?;
        same("clean_worker working_on", &got.working_on, &reg.working_on)?;
        match (reg.working_on, kind) {
            (None, _) => same("clean_worker failed_entry (idle worker)", &got.failed_entry, &None)?,
            (Some(on), OrphanKind::Requeue) => {
                same("clean_worker failed_entry (requeue)", &got.failed_entry, &None)?;
                self.lists.entry(on.queue.clone()).or_default().push_front(on.payload);
                self.names.insert(on.queue);
            }
            (Some(on), OrphanKind::Fail) => {
                let Some(entry) = got.failed_entry else {
                    return Err("clean_worker with Orphan::Fail of a busy worker returned no failed entry".into());
                };
                let wanted = encode_entry(name, &on.queue, &on.payload, &failure, AT_MS);
                check_clean_entry(&entry.raw, &wanted)?;
                self.push_failed_on(entry.raw, b.queue_shard(&on.queue));
                self.bump("failed", 1);
            }
        }
        Ok(())
    }

    /// Compares everything observable with the model.
    async fn check_state(&self, b: &dyn Backend, ids: &[WorkerId]) -> Result<(), String> {
        same(
            "final queues()",
            call!(b.queues()),
            self.names.iter().cloned().collect(),
        )?;
        for q in QUEUES {
            same(
                &format!("final queue {q}"),
                call!(b.queue_range(q, 0, -1)),
                self.list(q),
            )?;
            same(
                &format!("final queue_len({q})"),
                call!(b.queue_len(q)),
                self.list(q).len() as u64,
            )?;
        }
        same(
            "final delayed_timestamps()",
            call!(b.delayed_timestamps()),
            self.delayed.keys().copied().collect(),
        )?;
        for t in TIMESTAMPS {
            same(
                &format!("final delayed_at({t})"),
                call!(b.delayed_at(t)),
                self.delayed.get(&t).cloned().unwrap_or_default(),
            )?;
        }
        for p in queue_payloads().into_iter().chain(bad_delayed()) {
            let want: Vec<i64> = self
                .delayed
                .iter()
                .filter(|(_, v)| v.contains(&p))
                .map(|(t, _)| *t)
                .collect();
            same(&format!("final timestamps_of({p})"), call!(b.timestamps_of(&p)), want)?;
        }
        same("final failed list", call!(b.failed_range(0, -1)), self.failed.clone())?;
        same(
            "final failed_count()",
            call!(b.failed_count()),
            self.failed.len() as u64,
        )?;
        same("final stats()", call!(b.stats()), self.stats_list())?;
        same("final workers()", call!(b.workers()), self.registered(ids))?;
        same(
            "final stale_workers(all)",
            call!(b.stale_workers(T0 + 1_000_000)),
            self.registered(ids),
        )?;
        for (i, id) in ids.iter().enumerate() {
            let reg = self.workers.get(&i);
            same(
                &format!("final worker_started({id})"),
                call!(b.worker_started(id)),
                reg.map(|r| r.started),
            )?;
            same(
                &format!("final working_on({id})"),
                call!(b.working_on(id)),
                reg.and_then(|r| r.working_on.clone()),
            )?;
        }
        same("final locks()", call!(b.locks()), self.locks_list())?;
        same("final leader()", call!(b.leader()), self.leader.clone())?;
        Ok(())
    }
}

/// Checks a failed entry written by `clean_worker(.., Orphan::Fail)` against
/// the one `encode_entry` builds, field by field (key order may differ).
fn check_clean_entry(got: &str, wanted: &str) -> Result<(), String> {
    let g = FailedJob::decode(got).map_err(|e| format!("clean_worker failed entry does not decode: {e}: {got}"))?;
    let w = FailedJob::decode(wanted).map_err(|e| e.to_string())?;
    let fields = |j: &FailedJob| {
        (
            j.worker.clone(),
            j.queue.clone(),
            j.payload.clone(),
            j.exception.clone(),
            j.error.clone(),
            j.backtrace.clone(),
            j.failed_at.clone(),
        )
    };
    same(&format!("clean_worker failed entry {got}"), fields(&g), fields(&w))
}

/// Runs one generated case on a fresh backend.
async fn run_case<F, Fut>(factory: &F, ops: &[Op]) -> Result<(), String>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Arc<dyn Backend>, String>>,
{
    let backend = factory().await.map_err(|e| format!("factory failed mid-run: {e}"))?;
    let ids = worker_ids();
    let mut model = Model::default();
    for (step, op) in ops.iter().enumerate() {
        model
            .apply(&*backend, &ids, op, step)
            .await
            .map_err(|e| format!("step {step} `{op}`: {e}"))?;
    }
    model
        .check_state(&*backend, &ids)
        .await
        .map_err(|e| format!("after {} steps: {e}", ops.len()))?;
    backend.close().await.map_err(|e| format!("close() failed: {e}"))?;
    Ok(())
}

/// The number of proptest cases: `PROPTEST_CASES` if set, else 256.
fn default_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// How to run the model: the number of cases and the random seed.
#[derive(Clone, Debug)]
pub struct ModelRun {
    /// Proptest cases (random operation sequences).
    pub cases: u32,
    /// A fixed seed for a reproducible run; `None` draws a fresh one.
    pub seed: Option<[u8; 32]>,
    /// The longest sequence generated.
    pub max_ops: usize,
}

impl Default for ModelRun {
    fn default() -> Self {
        ModelRun {
            cases: default_cases(),
            seed: None,
            max_ops: MAX_OPS,
        }
    }
}

/// What a model run found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelVerdict {
    /// Every case agreed with the model.
    Passed,
    /// The factory reported the backend unreachable (the skip rule applied).
    Skipped,
    /// A case disagreed: the reason and the shrunk operation sequence.
    Failed(String),
}

impl ModelRun {
    /// Runs the model against backends from `factory` and reports the
    /// verdict instead of panicking (the skip rule still applies).
    pub fn check<F, Fut>(&self, path: &str, factory: F) -> ModelVerdict
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Arc<dyn Backend>, String>>,
    {
        let rt = crate::test_runtime();
        let Some(probe) = rt.block_on(crate::connect(path, &factory)) else {
            return ModelVerdict::Skipped;
        };
        if let Err(e) = rt.block_on(probe.close()) {
            return ModelVerdict::Failed(format!("close() of the probe backend failed: {e}"));
        }
        drop(probe);

        let config = Config {
            cases: self.cases,
            failure_persistence: None,
            max_shrink_iters: 10_000,
            ..Config::default()
        };
        let mut runner = match self.seed {
            Some(seed) => TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed)),
            None => TestRunner::new(config),
        };
        let strategy = sequence_strategy(self.max_ops);
        let started = Instant::now();
        let result = runner.run(&strategy, |ops| {
            rt.block_on(run_case(&factory, &ops)).map_err(TestCaseError::fail)
        });
        match result {
            Ok(()) => {
                eprintln!("{path}: {} cases passed in {:.1?}", self.cases, started.elapsed());
                ModelVerdict::Passed
            }
            Err(TestError::Fail(reason, ops)) => {
                let listing: String = ops
                    .iter()
                    .enumerate()
                    .map(|(i, op)| format!("  {i:>2}: {op}\n"))
                    .collect();
                ModelVerdict::Failed(format!(
                    "{path}: the backend disagrees with the reference model.\n{reason}\n\
                     minimal failing sequence ({} ops, on a fresh backend; a claim by an unregistered \
                     worker registers it at T0={T0} first, and ops the engine never issues are skipped, \
                     see the model module docs):\n{listing}",
                    ops.len()
                ))
            }
            Err(TestError::Abort(reason)) => ModelVerdict::Failed(format!("{path}: proptest aborted: {reason}")),
        }
    }
}

/// The backend agrees with the reference model on every return value and on
/// the final observable state (queues, names, delayed buckets and index,
/// failed list, stats, workers, working-on records, locks, leader) for 256
/// random sequences of up to 40 operations covering every `Backend` method
/// except `wait_for_jobs` and lock expiry. Each case uses a fresh backend
/// from `factory`; a failure shows the shrunk operation sequence.
pub fn state_machine<F, Fut>(path: &str, factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Arc<dyn Backend>, String>>,
{
    if let ModelVerdict::Failed(report) = ModelRun::default().check(path, factory) {
        panic!("{report}");
    }
}
