//! [`resq_core::QueueStore`]: FIFO queues, priority claims with working-on
//! records, completion accounting, `LRANGE`/`LREM` inspection and removal,
//! byte-exact payloads, and wake-ups.

use crate::fixtures::*;
use std::collections::BTreeSet;

/// Jobs pushed to one queue come out in push order (tail push, head pop),
/// and `queue_range` shows them in that order.
pub async fn fifo_within_queue(backend: Arc<dyn Backend>) {
    let w = worker("h:1", &["q"]);
    let jobs: Vec<String> = (0..5).map(|i| job("q", "fifo", i)).collect();
    for j in &jobs {
        backend.push("q", j).await.unwrap();
    }
    assert_eq!(all(&*backend, "q").await, jobs);
    let mut got = Vec::new();
    while let Some(c) = backend.claim(&w, &names(&["q"]), RUN_AT).await.unwrap() {
        assert_eq!(c.queue, "q");
        got.push(c.payload);
        backend.complete(&w, Outcome::Success).await.unwrap();
        assert!(got.len() <= jobs.len(), "claimed more jobs than were pushed: {got:?}");
    }
    assert_eq!(got, jobs);
    assert_eq!(backend.queue_len("q").await.unwrap(), 0);
}

/// `claim` takes the head of the first non-empty queue in the given order:
/// with `[high, low]` it drains `high` first, then falls through to `low`;
/// missing queues in the list are skipped.
pub async fn priority_order_across_queues(backend: Arc<dyn Backend>) {
    let w = worker("h:1", &["high", "low"]);
    let (l1, l2, h1, h2) = (
        job("low", "l", 1),
        job("low", "l", 2),
        job("high", "h", 1),
        job("high", "h", 2),
    );
    backend.push("low", &l1).await.unwrap();
    backend.push("low", &l2).await.unwrap();
    backend.push("high", &h1).await.unwrap();
    let order = names(&["nothing-here", "high", "low"]);
    let claim = || {
        let (backend, w, order) = (Arc::clone(&backend), w.clone(), order.clone());
        async move {
            let c = backend.claim(&w, &order, RUN_AT).await.unwrap();
            if c.is_some() {
                backend.complete(&w, Outcome::Success).await.unwrap();
            }
            c.map(|c| (c.queue, c.payload))
        }
    };
    assert_eq!(claim().await, Some(("high".to_owned(), h1.clone())));
    assert_eq!(claim().await, Some(("low".to_owned(), l1.clone())));
    // A job arriving on the high queue jumps ahead of the rest of low.
    backend.push("high", &h2).await.unwrap();
    assert_eq!(claim().await, Some(("high".to_owned(), h2.clone())));
    assert_eq!(claim().await, Some(("low".to_owned(), l2.clone())));
    assert_eq!(claim().await, None);
    // The opposite order prefers low.
    backend.push("high", &h1).await.unwrap();
    backend.push("low", &l1).await.unwrap();
    let c = backend.claim(&w, &names(&["low", "high"]), RUN_AT).await.unwrap();
    assert_eq!(c.map(|c| (c.queue, c.payload)), Some(("low".to_owned(), l1)));
}

/// A claim records the worker's working-on entry in the same step: worker
/// name, source queue, the given `run_at`, and the exact payload bytes; other
/// workers have none, and `complete` removes it.
pub async fn claim_records_working_on(backend: Arc<dyn Backend>) {
    let w = worker("host:42+1", &["a", "b"]);
    let other = worker("host:42+2", &["a", "b"]);
    let p = job("b", "rec", 7);
    backend.push("b", &p).await.unwrap();
    assert_eq!(backend.working_on(&w).await.unwrap(), None);
    let c = backend.claim(&w, &names(&["a", "b"]), RUN_AT).await.unwrap();
    assert_eq!(c.map(|c| (c.queue, c.payload)), Some(("b".to_owned(), p.clone())));
    assert_eq!(
        backend.working_on(&w).await.unwrap(),
        Some(WorkingOn {
            worker: "host:42+1".into(),
            queue: "b".into(),
            run_at: RUN_AT.into(),
            payload: p,
        })
    );
    assert_eq!(backend.working_on(&other).await.unwrap(), None);
    assert_eq!(backend.queue_len("b").await.unwrap(), 0);
    backend.complete(&w, Outcome::Success).await.unwrap();
    assert_eq!(backend.working_on(&w).await.unwrap(), None);
}

/// Claiming from empty, unknown or no queues returns `None` and writes
/// nothing: no working-on record, no queue names, no counters.
pub async fn claim_on_empty_queues_returns_none_and_records_nothing(backend: Arc<dyn Backend>) {
    let w = worker("h:1", &["a", "b"]);
    assert_eq!(backend.claim(&w, &names(&["a", "b"]), RUN_AT).await.unwrap(), None);
    assert_eq!(backend.claim(&w, &[], RUN_AT).await.unwrap(), None);
    assert_eq!(backend.working_on(&w).await.unwrap(), None);
    assert_eq!(backend.queues().await.unwrap(), Vec::<String>::new());
    assert_eq!(all_stats(&*backend).await, Vec::new());
    // A queue that existed but was drained behaves the same.
    backend.push("a", &job("a", "x", 1)).await.unwrap();
    assert!(backend.claim(&w, &names(&["a"]), RUN_AT).await.unwrap().is_some());
    backend.complete(&w, Outcome::Discard).await.unwrap();
    assert_eq!(backend.claim(&w, &names(&["a", "b"]), RUN_AT).await.unwrap(), None);
    assert_eq!(backend.working_on(&w).await.unwrap(), None);
    assert_eq!(backend.queues().await.unwrap(), names(&["a"]));
}

/// `Outcome::Success` counts `processed` and `processed:<worker name>` by
/// one, creates no other counter, and removes the working-on record.
pub async fn complete_success_counts_processed(backend: Arc<dyn Backend>) {
    let w1 = worker("h:1", &["q"]);
    let w2 = worker("h:2", &["q"]);
    for i in 0..3 {
        backend.push("q", &job("q", "ok", i)).await.unwrap();
    }
    for w in [&w1, &w2, &w1] {
        assert!(backend.claim(w, &names(&["q"]), RUN_AT).await.unwrap().is_some());
        backend.complete(w, Outcome::Success).await.unwrap();
        assert_eq!(backend.working_on(w).await.unwrap(), None);
    }
    assert_eq!(backend.stat("processed").await.unwrap(), 3);
    assert_eq!(backend.stat("processed:h:1").await.unwrap(), 2);
    assert_eq!(backend.stat("processed:h:2").await.unwrap(), 1);
    assert_eq!(backend.stat("failed").await.unwrap(), 0);
    assert_eq!(
        all_stats(&*backend).await,
        pairs(&[("processed", 3), ("processed:h:1", 2), ("processed:h:2", 1)])
    );
    assert_eq!(backend.failed_count().await.unwrap(), 0);
}

/// `Outcome::Failure` counts `failed` and `failed:<worker name>`, appends the
/// given entry byte for byte to the failed list, removes the working-on
/// record, and does not requeue the job or count it as processed.
pub async fn complete_failure_counts_and_appends_entry(backend: Arc<dyn Backend>) {
    let w = worker("h:9", &["q"]);
    let p = job("q", "boom", 1);
    backend.push("q", &p).await.unwrap();
    backend.push_failed("{\"earlier\":true}").await.unwrap();
    assert!(backend.claim(&w, &names(&["q"]), RUN_AT).await.unwrap().is_some());
    let failure = Failure::new("TypeError", "kaboom").with_backtrace(vec!["at x".into(), "at y".into()]);
    let entry = resq_core::failed::encode_entry(&w.name, "q", &p, &failure, AT_MS);
    backend
        .complete(&w, Outcome::Failure { entry: entry.clone() })
        .await
        .unwrap();
    assert_eq!(
        all_failed(&*backend).await,
        vec!["{\"earlier\":true}".to_owned(), entry]
    );
    assert_eq!(backend.failed_count().await.unwrap(), 2);
    assert_eq!(all_stats(&*backend).await, pairs(&[("failed", 1), ("failed:h:9", 1)]));
    assert_eq!(backend.working_on(&w).await.unwrap(), None);
    assert_eq!(backend.queue_len("q").await.unwrap(), 0);
}

/// `Outcome::Discard` only removes the working-on record: no counter is
/// created and no failed entry written.
pub async fn complete_discard_touches_no_counters(backend: Arc<dyn Backend>) {
    let w = worker("h:1", &["q"]);
    backend.push("q", &job("q", "skip", 1)).await.unwrap();
    assert!(backend.claim(&w, &names(&["q"]), RUN_AT).await.unwrap().is_some());
    backend.complete(&w, Outcome::Discard).await.unwrap();
    assert_eq!(backend.working_on(&w).await.unwrap(), None);
    assert_eq!(all_stats(&*backend).await, Vec::new());
    assert_eq!(backend.stat("processed").await.unwrap(), 0);
    assert_eq!(backend.failed_count().await.unwrap(), 0);
    assert_eq!(backend.queue_len("q").await.unwrap(), 0);
}

/// `push_batch` appends each job to the tail of its own queue in slice
/// order, after what is already there, and records every queue name; an
/// empty batch changes nothing.
pub async fn push_batch_keeps_order_across_queues(backend: Arc<dyn Backend>) {
    backend.push("a", "a0").await.unwrap();
    backend.push_batch(&[]).await.unwrap();
    assert_eq!(backend.queues().await.unwrap(), names(&["a"]));
    let batch = [
        queued("a", "a1"),
        queued("b", "b1"),
        queued("a", "a2"),
        queued("c", "c1"),
        queued("b", "b2"),
        queued("a", "a3"),
    ];
    backend.push_batch(&batch).await.unwrap();
    assert_eq!(all(&*backend, "a").await, names(&["a0", "a1", "a2", "a3"]));
    assert_eq!(all(&*backend, "b").await, names(&["b1", "b2"]));
    assert_eq!(all(&*backend, "c").await, names(&["c1"]));
    assert_eq!(backend.queues().await.unwrap(), names(&["a", "b", "c"]));
}

/// `queue_len` counts jobs (0 for an unknown queue) and `queue_range` is
/// Redis `LRANGE`: inclusive bounds, negative indexes from the tail, bounds
/// clamped (down to `i64::MIN`, up to `i64::MAX`), empty when start is past
/// the end or after stop.
pub async fn queue_len_and_range_lrange_semantics(backend: Arc<dyn Backend>) {
    let items = names(&["j0", "j1", "j2", "j3", "j4"]);
    for j in &items {
        backend.push("q", j).await.unwrap();
    }
    assert_eq!(backend.queue_len("q").await.unwrap(), 5);
    assert_eq!(backend.queue_len("unknown").await.unwrap(), 0);
    let cases: &[(i64, i64, &[&str])] = &[
        (0, -1, &["j0", "j1", "j2", "j3", "j4"]),
        (0, 0, &["j0"]),
        (1, 3, &["j1", "j2", "j3"]),
        (-2, -1, &["j3", "j4"]),
        (-1, -1, &["j4"]),
        (-100, 1, &["j0", "j1"]),
        (3, 100, &["j3", "j4"]),
        (-100, 100, &["j0", "j1", "j2", "j3", "j4"]),
        (2, -2, &["j2", "j3"]),
        (5, 10, &[]),
        (3, 1, &[]),
        (-1, -2, &[]),
        (0, -6, &[]),
        (-3, 1, &[]),
        (i64::MIN, i64::MAX, &["j0", "j1", "j2", "j3", "j4"]),
        (i64::MIN, i64::MIN, &[]),
        (i64::MAX, i64::MAX, &[]),
        (i64::MAX, i64::MIN, &[]),
        (3, i64::MAX, &["j3", "j4"]),
    ];
    for (start, stop, want) in cases {
        assert_eq!(
            backend.queue_range("q", *start, *stop).await.unwrap(),
            names(want),
            "queue_range(q, {start}, {stop})"
        );
    }
    assert_eq!(
        backend.queue_range("unknown", 0, -1).await.unwrap(),
        Vec::<String>::new()
    );
}

/// `remove_from_queue` is Redis `LREM` on exact bytes: count 0 removes all
/// copies, +n the first n from the head, -n the last n from the tail (any
/// i64, extremes included); it returns how many it removed and never
/// touches byte-different payloads.
pub async fn remove_from_queue_lrem_count_semantics(backend: Arc<dyn Backend>) {
    let a = r#"{"class":"A","queue":"q","args":[]}"#;
    let a_spaced = r#"{"class":"A", "queue":"q", "args":[]}"#;
    let (b, c) = (job("q", "B", 1), job("q", "C", 1));
    for p in [a, b.as_str(), a, c.as_str(), a, a] {
        backend.push("q", p).await.unwrap();
    }
    let q = |items: &[&str]| names(items);
    assert_eq!(backend.remove_from_queue("q", a, 1).await.unwrap(), 1);
    assert_eq!(all(&*backend, "q").await, q(&[&b, a, &c, a, a]));
    assert_eq!(backend.remove_from_queue("q", a, -2).await.unwrap(), 2);
    assert_eq!(all(&*backend, "q").await, q(&[&b, a, &c]));
    backend.push("q", a).await.unwrap();
    backend.push("q", a_spaced).await.unwrap();
    backend.push("q", a).await.unwrap();
    assert_eq!(backend.remove_from_queue("q", a, 0).await.unwrap(), 3);
    assert_eq!(all(&*backend, "q").await, q(&[&b, &c, a_spaced]));
    assert_eq!(backend.remove_from_queue("q", a, 0).await.unwrap(), 0);
    assert_eq!(backend.remove_from_queue("q", &b, 5).await.unwrap(), 1);
    assert_eq!(backend.remove_from_queue("q", &c, -5).await.unwrap(), 1);
    assert_eq!(all(&*backend, "q").await, q(&[a_spaced]));
    assert_eq!(backend.remove_from_queue("unknown", a, 0).await.unwrap(), 0);
    // Extreme counts behave as "all, from that end".
    for _ in 0..3 {
        backend.push("q", a).await.unwrap();
    }
    assert_eq!(backend.remove_from_queue("q", a, i64::MIN).await.unwrap(), 3);
    backend.push("q", a).await.unwrap();
    assert_eq!(backend.remove_from_queue("q", a, i64::MAX).await.unwrap(), 1);
    assert_eq!(all(&*backend, "q").await, q(&[a_spaced]));
}

/// `delete_queue` removes the jobs and the name, returning whether the queue
/// held jobs; a known-but-empty queue returns false and loses its name too.
pub async fn delete_queue_removes_jobs_and_name(backend: Arc<dyn Backend>) {
    backend.push("doomed", &job("doomed", "x", 1)).await.unwrap();
    backend.push("doomed", &job("doomed", "x", 2)).await.unwrap();
    backend.push("kept", &job("kept", "x", 1)).await.unwrap();
    assert!(backend.delete_queue("doomed").await.unwrap());
    assert_eq!(backend.queue_len("doomed").await.unwrap(), 0);
    assert_eq!(all(&*backend, "doomed").await, Vec::<String>::new());
    assert_eq!(backend.queues().await.unwrap(), names(&["kept"]));
    assert!(!backend.delete_queue("doomed").await.unwrap());
    assert!(!backend.delete_queue("never-existed").await.unwrap());
    // The queue can be used again afterwards.
    backend.push("doomed", &job("doomed", "x", 3)).await.unwrap();
    assert_eq!(all(&*backend, "doomed").await, vec![job("doomed", "x", 3)]);
    // Drained but known: no jobs, but the name goes.
    let w = worker("h:1", &["kept"]);
    assert!(backend.claim(&w, &names(&["kept"]), RUN_AT).await.unwrap().is_some());
    backend.complete(&w, Outcome::Success).await.unwrap();
    assert_eq!(backend.queues().await.unwrap(), names(&["doomed", "kept"]));
    assert!(!backend.delete_queue("kept").await.unwrap());
    assert_eq!(backend.queues().await.unwrap(), names(&["doomed"]));
    assert_eq!(all(&*backend, "kept").await, Vec::<String>::new());
}

/// `queues` lists each known queue once, sorted by byte order (so `Mid`
/// sorts before `alpha` and `ünï` after `zeta`, whatever a database's
/// collation would say); names with spaces, glob characters and non-ASCII
/// letters are kept as given, and each works as a queue.
pub async fn queues_lists_sorted_names(backend: Arc<dyn Backend>) {
    assert_eq!(backend.queues().await.unwrap(), Vec::<String>::new());
    let pushed = [
        "zeta",
        "alpha",
        "Mid",
        "beta:x",
        "alpha",
        "_low",
        "10",
        "9",
        "glob*[x]?",
        "with space",
        "ünï",
        "Zürich",
    ];
    for q in pushed {
        backend.push(q, &job(q, "x", 1)).await.unwrap();
    }
    let sorted = [
        "10",
        "9",
        "Mid",
        "Zürich",
        "_low",
        "alpha",
        "beta:x",
        "glob*[x]?",
        "with space",
        "zeta",
        "ünï",
    ];
    assert_eq!(backend.queues().await.unwrap(), names(&sorted));
    for q in sorted {
        let n = if q == "alpha" { 2 } else { 1 };
        assert_eq!(backend.queue_len(q).await.unwrap(), n, "queue {q:?}");
    }
    // A glob pattern is a name, not a pattern.
    assert_eq!(backend.queue_len("glob*").await.unwrap(), 0);
    assert_eq!(backend.queue_len("*").await.unwrap(), 0);
}

/// Payload bytes survive push → queue_range → claim → working_on unchanged:
/// key order, whitespace and newlines, unicode and escapes, big integers,
/// `1.0` floats, extra keys. (A JSON column type would break all of these.)
pub async fn payload_bytes_are_preserved(backend: Arc<dyn Backend>) {
    let payloads = odd_payloads();
    let (single, batched) = payloads.split_at(payloads.len() / 2);
    for p in single {
        backend.push("odd", p).await.unwrap();
    }
    let batch: Vec<QueuedJob> = batched.iter().map(|p| queued("odd", p)).collect();
    backend.push_batch(&batch).await.unwrap();
    assert_eq!(all(&*backend, "odd").await, payloads);
    let w = worker("h:1", &["odd"]);
    for p in &payloads {
        let c = backend.claim(&w, &names(&["odd"]), RUN_AT).await.unwrap();
        assert_eq!(c.as_ref().map(|c| c.payload.as_str()), Some(p.as_str()));
        let on = backend.working_on(&w).await.unwrap().expect("working-on record");
        assert_eq!(&on.payload, p);
        backend.complete(&w, Outcome::Discard).await.unwrap();
    }
}

/// Valid but unusually written job JSON whose bytes must be kept exactly.
pub(crate) fn odd_payloads() -> Vec<String> {
    [
        r#"{"queue":"odd","class":"KeyOrder","args":[]}"#,
        r#"{ "class" : "Spaces" , "queue":"odd", "args":[ 1 , 2 ] }"#,
        "{\n  \"class\": \"Pretty\",\n  \"queue\": \"odd\",\n  \"args\": []\n}",
        r#"{"class":"Unicode","queue":"odd","args":["héllo ✓ 日本 😀","\u00e9\n\t\"q\"","a\/b"]}"#,
        r#"{"class":"Numbers","queue":"odd","args":[12345678901234567890,1.0,1e3,-0,0.1,-12345678901234567890123]}"#,
        r#"{"class":"Nested","queue":"odd","args":[{"b":1,"a":[{}],"c":null}],"extra":{"z":true}}"#,
        r#"{"class":"Ruby","args":[35,"tar"]}"#,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Eight workers racing `claim` over 500 jobs on two queues take every job
/// exactly once: none duplicated, none lost, and `processed` counts 500.
pub async fn concurrent_claims_never_duplicate(backend: Arc<dyn Backend>) {
    const JOBS: i64 = 500;
    const WORKERS: usize = 8;
    let batch: Vec<QueuedJob> = (0..JOBS)
        .map(|i| {
            let q = if i % 3 == 0 { "second" } else { "first" };
            queued(q, &job(q, "race", i))
        })
        .collect();
    backend.push_batch(&batch).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..WORKERS {
        let backend = Arc::clone(&backend);
        tasks.push(tokio::spawn(async move {
            let w = worker(&format!("h:1+{n}"), &["first", "second"]);
            let order = names(&["first", "second"]);
            let mut got = Vec::new();
            while let Some(c) = backend.claim(&w, &order, RUN_AT).await.unwrap() {
                got.push(c.payload);
                backend.complete(&w, Outcome::Success).await.unwrap();
                assert!(got.len() <= JOBS as usize, "one worker claimed more jobs than exist");
            }
            got
        }));
    }
    let mut seen = BTreeSet::new();
    let mut total = 0;
    for t in tasks {
        for p in t.await.unwrap() {
            total += 1;
            assert!(seen.insert(p.clone()), "job claimed twice: {p}");
        }
    }
    let expected: BTreeSet<String> = batch.into_iter().map(|j| j.payload).collect();
    assert_eq!(total, JOBS as usize);
    assert_eq!(seen, expected);
    assert_eq!(backend.queue_len("first").await.unwrap(), 0);
    assert_eq!(backend.queue_len("second").await.unwrap(), 0);
    assert_eq!(backend.stat("processed").await.unwrap(), JOBS);
    let mut per_worker = 0;
    for n in 0..WORKERS {
        per_worker += backend.stat(&format!("processed:h:1+{n}")).await.unwrap();
    }
    assert_eq!(per_worker, JOBS);
}

/// `wait_for_jobs` with a long timeout returns soon after a job is pushed to
/// one of its queues (well before the timeout), so workers do not poll.
pub async fn wait_for_jobs_wakes_on_push(backend: Arc<dyn Backend>) {
    woken_by(&backend, "wake", "push", || async {
        backend.push("wake", &job("wake", "x", 1)).await.unwrap();
    })
    .await;
}

/// A job reaching a queue by any path wakes `wait_for_jobs` on that queue:
/// `push_batch`, `promote_due`, `retry_failed`, and the requeue of a
/// cleaned worker's job.
pub async fn wait_for_jobs_wakes_on_every_enqueue_path(backend: Arc<dyn Backend>) {
    woken_by(&backend, "batch", "push_batch", || async {
        let batch = [queued("elsewhere", "e"), queued("batch", &job("batch", "x", 1))];
        backend.push_batch(&batch).await.unwrap();
    })
    .await;
    let delayed = job("promoted", "x", 1);
    assert!(backend.schedule(10, &delayed).await.unwrap());
    woken_by(&backend, "promoted", "promote_due", || async {
        assert_eq!(backend.promote_due(10, 10).await.unwrap().len(), 1);
    })
    .await;
    let entry = "{\"retry\":1}";
    backend.push_failed(entry).await.unwrap();
    woken_by(&backend, "retried", "retry_failed", || async {
        assert!(backend
            .retry_failed(entry, "retried", &job("retried", "x", 1))
            .await
            .unwrap());
    })
    .await;
    let w = worker("h:1", &["requeued"]);
    backend.register_worker(&w, 1_700_000_000_000).await.unwrap();
    backend.push("requeued", &job("requeued", "x", 1)).await.unwrap();
    assert!(backend
        .claim(&w, &names(&["requeued"]), RUN_AT)
        .await
        .unwrap()
        .is_some());
    woken_by(&backend, "requeued", "clean_worker(Requeue)", || async {
        assert!(backend.clean_worker(&w, Orphan::Requeue).await.unwrap().is_some());
    })
    .await;
}

/// Starts `wait_for_jobs([other, queue], 10 s)`, runs `trigger` after
/// 150 ms, and asserts the wait ended well before its timeout.
async fn woken_by<F, Fut>(backend: &Arc<dyn Backend>, queue: &str, what: &str, trigger: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let timeout = Duration::from_secs(10);
    let waiter = {
        let backend = Arc::clone(backend);
        let queues = names(&["other", queue]);
        tokio::spawn(async move {
            let start = Instant::now();
            backend.wait_for_jobs(&queues, timeout).await.unwrap();
            start.elapsed()
        })
    };
    sleep_ms(150).await;
    trigger().await;
    let elapsed = tokio::time::timeout(timeout * 2, waiter)
        .await
        .expect("wait_for_jobs did not return even after twice its timeout")
        .unwrap();
    assert!(
        elapsed < timeout / 2,
        "wait_for_jobs on {queue:?} took {elapsed:?} (timeout {timeout:?}): it does not wake on {what}"
    );
}

/// `wait_for_jobs` with nothing pushed returns by about its timeout (it may
/// return earlier) instead of blocking forever.
pub async fn wait_for_jobs_returns_by_timeout(backend: Arc<dyn Backend>) {
    let start = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        backend.wait_for_jobs(&names(&["silent"]), Duration::from_millis(300)),
    )
    .await;
    assert!(r.is_ok(), "wait_for_jobs(300ms) still waiting after 5 s");
    r.unwrap().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(backend.queue_len("silent").await.unwrap(), 0);
}

/// `claim_batch` gives one job to each idle slot, in queue priority order
/// and FIFO within a queue, and records each slot's working-on entry.
pub async fn claim_batch_fills_slots_in_priority_order(backend: Arc<dyn Backend>) {
    let payload = |q: &str, n: i64| format!(r#"{{"class":"c","queue":"{q}","args":[{n}]}}"#);
    for n in 0..2 {
        backend.push("high", &payload("high", n)).await.unwrap();
    }
    for n in 0..3 {
        backend.push("low", &payload("low", n)).await.unwrap();
    }
    let slots: Vec<WorkerId> = (1..=4)
        .map(|i| WorkerId::new(format!("h:1+1.{i}"), &["high".to_owned(), "low".to_owned()]))
        .collect();
    let queues = vec!["high".to_owned(), "low".to_owned()];
    let got = backend.claim_batch(&slots, &queues, "t").await.unwrap();
    assert_eq!(
        claims_seen(&got),
        vec![
            (0, "high".to_owned(), payload("high", 0)),
            (1, "high".to_owned(), payload("high", 1)),
            (2, "low".to_owned(), payload("low", 0)),
            (3, "low".to_owned(), payload("low", 1)),
        ]
    );
    assert_claims_recorded(&backend, &slots, &got, None).await;
    assert_eq!(
        backend.queue_range("low", 0, -1).await.unwrap(),
        vec![payload("low", 2)]
    );
    assert!(backend.claim_batch(&slots[..0], &queues, "t").await.unwrap().is_empty());
}

/// `claim_batch` on empty queues claims nothing and records nothing.
pub async fn claim_batch_on_empty_queues_claims_nothing(backend: Arc<dyn Backend>) {
    let slots: Vec<WorkerId> = (1..=3)
        .map(|i| WorkerId::new(format!("h:1+1.{i}"), &["q".to_owned()]))
        .collect();
    assert!(backend
        .claim_batch(&slots, &["q".to_owned()], "t")
        .await
        .unwrap()
        .is_empty());
    for s in &slots {
        assert!(backend.working_on(s).await.unwrap().is_none());
    }
}

/// `complete_batch` applies each outcome as `complete` would.
pub async fn complete_batch_applies_each_outcome(backend: Arc<dyn Backend>) {
    let slots: Vec<WorkerId> = (1..=3)
        .map(|i| WorkerId::new(format!("h:1+1.{i}"), &["q".to_owned()]))
        .collect();
    for n in 0..3 {
        backend
            .push("q", &format!(r#"{{"class":"c","queue":"q","args":[{n}]}}"#))
            .await
            .unwrap();
    }
    assert_eq!(
        backend.claim_batch(&slots, &["q".to_owned()], "t").await.unwrap().len(),
        3
    );
    let done = one_of_each_outcome(&slots);
    backend.complete_batch(&done).await.unwrap();
    assert_eq!(backend.stat("processed").await.unwrap(), 1);
    assert_eq!(backend.stat("failed").await.unwrap(), 1);
    assert_eq!(backend.stat(&format!("processed:{}", slots[0].name)).await.unwrap(), 1);
    assert_eq!(backend.stat(&format!("failed:{}", slots[1].name)).await.unwrap(), 1);
    assert_eq!(
        backend.failed_range(0, -1).await.unwrap(),
        vec![r#"{"error":"x"}"#.to_owned()]
    );
    for s in &slots {
        assert!(backend.working_on(s).await.unwrap().is_none());
    }
    backend.complete_batch(&[]).await.unwrap();
}

/// `complete_and_claim_batch` records the finished slots' outcomes
/// (counters, failed entry, working-on records) and claims for the given
/// slots in queue priority order, exactly as `complete_batch` followed by
/// `claim_batch` would: a finished slot that gets a new job has the new job
/// as its working-on record, one that gets none has no record.
pub async fn complete_and_claim_batch_completes_then_claims(backend: Arc<dyn Backend>) {
    let payload = |q: &str, n: i64| format!(r#"{{"class":"c","queue":"{q}","args":[{n}]}}"#);
    let queues = vec!["high".to_owned(), "low".to_owned()];
    let slots: Vec<WorkerId> = (1..=4).map(|i| WorkerId::new(format!("h:1+1.{i}"), &queues)).collect();
    for n in 0..2 {
        backend.push("high", &payload("high", n)).await.unwrap();
    }
    for n in 0..3 {
        backend.push("low", &payload("low", n)).await.unwrap();
    }
    // Slots 0..3 run high 0, high 1 and low 0; slot 3 stays idle.
    let first = backend.claim_batch(&slots[..3], &queues, "t1").await.unwrap();
    assert_eq!(first.len(), 3);
    backend.push("high", &payload("high", 2)).await.unwrap();
    let done = one_of_each_outcome(&slots);
    // Idle slot first, then the finished ones, as a worker lists them.
    let ids = vec![slots[3].clone(), slots[0].clone(), slots[1].clone(), slots[2].clone()];
    let got = backend
        .complete_and_claim_batch(&done, &ids, &queues, "t2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        claims_seen(&got),
        vec![
            (0, "high".to_owned(), payload("high", 2)),
            (1, "low".to_owned(), payload("low", 1)),
            (2, "low".to_owned(), payload("low", 2)),
        ]
    );
    assert_claims_recorded(&backend, &ids, &got, Some("t2")).await;
    assert!(backend.working_on(&slots[2]).await.unwrap().is_none());
    assert_eq!(backend.stat("processed").await.unwrap(), 1);
    assert_eq!(backend.stat("failed").await.unwrap(), 1);
    assert_eq!(backend.stat(&format!("processed:{}", slots[0].name)).await.unwrap(), 1);
    assert_eq!(backend.stat(&format!("failed:{}", slots[1].name)).await.unwrap(), 1);
    assert_eq!(backend.stat(&format!("processed:{}", slots[2].name)).await.unwrap(), 0);
    assert_eq!(
        backend.failed_range(0, -1).await.unwrap(),
        vec![r#"{"error":"x"}"#.to_owned()]
    );
    assert_eq!(backend.queue_len("high").await.unwrap(), 0);
    assert_eq!(backend.queue_len("low").await.unwrap(), 0);

    // A second round: counters add up, and with the queues empty every
    // finished slot loses its record and nothing is claimed.
    let done: Vec<(WorkerId, Outcome)> = got.iter().map(|(i, _)| (ids[*i].clone(), Outcome::Success)).collect();
    let again = backend
        .complete_and_claim_batch(&done, &ids, &queues, "t3")
        .await
        .unwrap()
        .unwrap();
    assert!(again.is_empty());
    for s in &slots {
        assert!(backend.working_on(s).await.unwrap().is_none());
    }
    assert_eq!(backend.stat("processed").await.unwrap(), 4);
    assert_eq!(backend.stat(&format!("processed:{}", slots[0].name)).await.unwrap(), 2);
    assert_eq!(backend.stat(&format!("processed:{}", slots[1].name)).await.unwrap(), 1);
    assert_eq!(backend.stat(&format!("processed:{}", slots[3].name)).await.unwrap(), 1);
    assert_eq!(backend.stat("failed").await.unwrap(), 1);
}

/// `complete_and_claim_batch` with nothing finished is `claim_batch`, and
/// with no slots to claim for (or no queues) it only completes.
pub async fn complete_and_claim_batch_degenerate_rounds(backend: Arc<dyn Backend>) {
    let queues = vec!["q".to_owned()];
    let slots: Vec<WorkerId> = (1..=2).map(|i| WorkerId::new(format!("h:1+1.{i}"), &queues)).collect();
    for n in 0..3 {
        backend
            .push("q", &format!(r#"{{"class":"c","queue":"q","args":[{n}]}}"#))
            .await
            .unwrap();
    }
    let got = backend
        .complete_and_claim_batch(&[], &slots, &queues, "t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0, 1]);
    let done = vec![(slots[0].clone(), Outcome::Success)];
    assert!(backend
        .complete_and_claim_batch(&done, &[], &queues, "t")
        .await
        .unwrap()
        .unwrap()
        .is_empty());
    assert!(backend.working_on(&slots[0]).await.unwrap().is_none());
    assert!(backend.working_on(&slots[1]).await.unwrap().is_some());
    let done = vec![(slots[1].clone(), Outcome::Success)];
    assert!(backend
        .complete_and_claim_batch(&done, &slots, &[], "t")
        .await
        .unwrap()
        .unwrap()
        .is_empty());
    assert!(backend.working_on(&slots[1]).await.unwrap().is_none());
    assert_eq!(backend.stat("processed").await.unwrap(), 2);
    assert_eq!(backend.queue_len("q").await.unwrap(), 1);
    assert!(backend
        .complete_and_claim_batch(&[], &[], &queues, "t")
        .await
        .unwrap()
        .unwrap()
        .is_empty());

    // Every slot claimed for gets a job, but the finished slot is not one
    // of them: its record still goes.
    backend
        .push("q", r#"{"class":"c","queue":"q","args":[3]}"#)
        .await
        .unwrap();
    assert_eq!(backend.claim_batch(&slots[..1], &queues, "t").await.unwrap().len(), 1);
    let done = vec![(slots[0].clone(), Outcome::Success)];
    let got = backend
        .complete_and_claim_batch(&done, &slots[1..], &queues, "t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0]);
    assert!(backend.working_on(&slots[0]).await.unwrap().is_none());
    assert!(backend.working_on(&slots[1]).await.unwrap().is_some());
    assert_eq!(backend.stat("processed").await.unwrap(), 3);
}

/// A batch claim's result as `(slot, queue, payload)`.
/// Slot 0 succeeded, slot 1 failed with entry `{"error":"x"}`, slot 2 was
/// discarded.
fn one_of_each_outcome(slots: &[WorkerId]) -> Vec<(WorkerId, Outcome)> {
    vec![
        (slots[0].clone(), Outcome::Success),
        (
            slots[1].clone(),
            Outcome::Failure {
                entry: r#"{"error":"x"}"#.to_owned(),
            },
        ),
        (slots[2].clone(), Outcome::Discard),
    ]
}

fn claims_seen(got: &[(usize, Claimed)]) -> Vec<(usize, String, String)> {
    got.iter()
        .map(|(i, c)| (*i, c.queue.clone(), c.payload.clone()))
        .collect()
}

/// Asserts each claimed job is its slot's working-on record (and, if
/// given, with that `run_at`).
async fn assert_claims_recorded(
    backend: &Arc<dyn Backend>,
    ids: &[WorkerId],
    got: &[(usize, Claimed)],
    run_at: Option<&str>,
) {
    for (i, c) in got {
        let wo = backend
            .working_on(&ids[*i])
            .await
            .unwrap()
            .expect("working-on recorded");
        assert_eq!(wo.payload, c.payload);
        assert_eq!(wo.queue, c.queue);
        assert_eq!(wo.worker, ids[*i].name);
        if let Some(run_at) = run_at {
            assert_eq!(wo.run_at, run_at);
        }
    }
}

/// `push_front` puts a job at the head of its queue: it is claimed before
/// the jobs already there, the queue is registered, and its bytes are kept.
pub async fn push_front_puts_the_job_first(backend: Arc<dyn Backend>) {
    let first = r#"{"class":"urgent","queue":"q","args":[12345678901234567890,"é",1.0]}"#;
    backend.push("q", &job("q", "a", 1)).await.unwrap();
    backend.push("q", &job("q", "a", 2)).await.unwrap();
    backend.push_front("q", first).await.unwrap();
    assert_eq!(
        all(&*backend, "q").await,
        vec![first.to_owned(), job("q", "a", 1), job("q", "a", 2)]
    );
    let w = worker("h:1", &["q"]);
    let claimed = backend.claim(&w, &names(&["q"]), RUN_AT).await.unwrap().unwrap();
    assert_eq!(claimed.payload, first, "the front job is claimed first, byte for byte");
    backend.push_front("fresh", &job("fresh", "b", 1)).await.unwrap();
    assert!(backend.queues().await.unwrap().contains(&"fresh".to_owned()));
    assert_eq!(all(&*backend, "fresh").await, vec![job("fresh", "b", 1)]);
}

/// `push_front` wakes a worker waiting on the queue.
pub async fn push_front_wakes_an_idle_worker(backend: Arc<dyn Backend>) {
    woken_by(&backend, "front", "push_front", || async {
        backend.push_front("front", &job("front", "x", 1)).await.unwrap();
    })
    .await;
}

/// `remove_by_class` removes every job of the class whatever its args or
/// dialect (node-resque's, Ruby's without `queue`, escapes in the class),
/// and leaves other classes (even one naming the class in its args),
/// undecodable payloads, and the order of what stays.
pub async fn remove_by_class_removes_only_that_class(backend: Arc<dyn Backend>) {
    let ours = [
        job("q", "target", 1),
        r#"{"class":"target","args":[2]}"#.to_owned(),
        r#"{"args":[3],"class":"t\u0061rget","extra":true}"#.to_owned(),
        job("q", "target", 1),
    ];
    let theirs = [
        job("q", "other", 1),
        r#"{"class":"other","queue":"q","args":["target"]}"#.to_owned(),
        "target: not json".to_owned(),
        r#"{"class":["target"],"args":[]}"#.to_owned(),
        r#"["target"]"#.to_owned(),
        r#"{"class":"targetX","args":[]}"#.to_owned(),
    ];
    let mut expected_left = Vec::new();
    for (i, t) in theirs.iter().enumerate() {
        backend.push("q", t).await.unwrap();
        expected_left.push(t.clone());
        if let Some(o) = ours.get(i) {
            backend.push("q", o).await.unwrap();
        }
    }
    backend.push("elsewhere", &job("elsewhere", "target", 9)).await.unwrap();
    assert_eq!(backend.remove_by_class("q", "target").await.unwrap(), 4);
    assert_eq!(all(&*backend, "q").await, expected_left);
    assert_eq!(
        backend.queue_len("elsewhere").await.unwrap(),
        1,
        "other queues untouched"
    );
    assert_eq!(backend.remove_by_class("q", "target").await.unwrap(), 0);
    assert_eq!(backend.remove_by_class("missing", "target").await.unwrap(), 0);
    assert_eq!(backend.remove_by_class("q", "").await.unwrap(), 0);
}

/// `remove_by_class` on a queue longer than several pages removes every
/// job of the class and keeps the others in order.
pub async fn remove_by_class_pages_through_long_queues(backend: Arc<dyn Backend>) {
    let n = resq_core::backend::REMOVAL_PAGE * 3 + 7;
    let mut batch = Vec::with_capacity(n);
    let mut kept = Vec::new();
    for i in 0..n {
        let i = i64::try_from(i).unwrap();
        // Runs of removed jobs across page boundaries, and lone ones.
        let payload = if i % 3 == 0 || (400..700).contains(&i) {
            job("long", "gone", i)
        } else {
            let p = job("long", "kept", i);
            kept.push(p.clone());
            p
        };
        batch.push(queued("long", &payload));
    }
    backend.push_batch(&batch).await.unwrap();
    let removed = backend.remove_by_class("long", "gone").await.unwrap();
    assert_eq!(removed, u64::try_from(n - kept.len()).unwrap());
    assert_eq!(all(&*backend, "long").await, kept);
}

/// The trait's default by-class removals, for stores without their own,
/// behave as the backends' own (the same group tests pass through them)
/// and read the queue a page at a time.
pub async fn default_by_class_removals_match_and_page(backend: Arc<dyn Backend>) {
    let wrapped = crate::counting::Counting::with_default_removals(Arc::clone(&backend));
    let via: Arc<dyn Backend> = Arc::clone(&wrapped) as Arc<dyn Backend>;
    remove_by_class_removes_only_that_class(Arc::clone(&via)).await;
    remove_by_class_pages_through_long_queues(Arc::clone(&via)).await;
    crate::delayed::remove_delayed_by_class_removes_that_class_on_that_queue(Arc::clone(&via)).await;
    crate::delayed::remove_delayed_by_class_pages_through_many_buckets(Arc::clone(&via)).await;
    let widest = wrapped.widest("remove_by_class/queue_range");
    let page = resq_core::backend::REMOVAL_PAGE as u64;
    assert!(
        matches!(widest, Some(Some(w)) if w <= page),
        "the default remove_by_class read up to {widest:?} jobs at once (page {page})"
    );
}
