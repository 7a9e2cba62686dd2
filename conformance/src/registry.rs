//! [`resq_core::WorkerRegistry`]: registration, liveness pings, stale-worker
//! detection and atomic cleanup with orphan handling.
//!
//! Times are whole seconds in epoch ms, so a backend that stores
//! node-resque's second-resolution `started` and ping values still passes.

use crate::fixtures::*;

const T0: i64 = 1_700_000_000_000;

/// `register_worker` adds the worker to `workers` (sorted), sets its start
/// time and first ping; unregistered workers have no start time and no
/// working-on record.
pub async fn register_lists_and_pings(backend: Arc<dyn Backend>) {
    let w2 = worker("host:2", &["b"]);
    let w1 = worker("host:1", &["a", "b"]);
    let w3 = worker("host:1+1", &["*"]);
    backend.register_worker(&w2, T0 + 2_000).await.unwrap();
    backend.register_worker(&w1, T0).await.unwrap();
    backend.register_worker(&w3, T0 + 1_000).await.unwrap();
    let mut sorted = vec![w1.clone(), w2.clone(), w3.clone()];
    sorted.sort();
    assert_eq!(backend.workers().await.unwrap(), sorted);
    assert_eq!(backend.worker_started(&w1).await.unwrap(), Some(T0));
    assert_eq!(backend.worker_started(&w2).await.unwrap(), Some(T0 + 2_000));
    assert_eq!(backend.worker_started(&w3).await.unwrap(), Some(T0 + 1_000));
    assert_eq!(backend.worker_started(&worker("host:9", &["a"])).await.unwrap(), None);
    assert_eq!(backend.working_on(&w1).await.unwrap(), None);
    // The first ping is the registration time.
    assert_eq!(backend.stale_workers(T0).await.unwrap(), Vec::new());
    assert_eq!(backend.stale_workers(T0 + 1_000).await.unwrap(), vec![w1.clone()]);
    assert_eq!(backend.stale_workers(T0 + 10_000).await.unwrap(), sorted);
    // A ping moves the worker out of the stale set, without changing its start.
    backend.ping_worker(&w1, T0 + 5_000).await.unwrap();
    let mut expected = vec![w2.clone(), w3.clone()];
    expected.sort();
    assert_eq!(backend.stale_workers(T0 + 5_000).await.unwrap(), expected);
    assert_eq!(backend.worker_started(&w1).await.unwrap(), Some(T0));
    // Registration touches nothing else.
    assert_eq!(backend.queues().await.unwrap(), Vec::<String>::new());
    assert_eq!(all_stats(&*backend).await, Vec::new());
}

/// `stale_workers(cutoff)` lists, sorted, exactly the registered workers
/// whose last ping is strictly older than `cutoff`.
pub async fn stale_workers_uses_ping_age(backend: Arc<dyn Backend>) {
    let a = worker("host:a", &["q"]);
    let b = worker("host:b", &["q"]);
    let c = worker("host:c", &["q"]);
    for w in [&a, &b, &c] {
        backend.register_worker(w, T0).await.unwrap();
    }
    backend.ping_worker(&b, T0 + 20_000).await.unwrap();
    backend.ping_worker(&c, T0 + 10_000).await.unwrap();
    backend.ping_worker(&c, T0 + 30_000).await.unwrap();
    assert_eq!(backend.stale_workers(T0).await.unwrap(), Vec::new());
    assert_eq!(backend.stale_workers(T0 + 15_000).await.unwrap(), vec![a.clone()]);
    assert_eq!(backend.stale_workers(T0 + 20_000).await.unwrap(), vec![a.clone()]);
    assert_eq!(
        backend.stale_workers(T0 + 21_000).await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    assert_eq!(backend.stale_workers(T0 + 31_000).await.unwrap(), vec![a, b, c]);
}

/// `register_workers` registers every worker given, in any order, exactly
/// as one `register_worker` call each would: all listed (sorted), each
/// started and first pinged at the time given; again, it moves the start
/// time; an empty list changes nothing.
pub async fn register_workers_registers_each(backend: Arc<dyn Backend>) {
    backend.register_workers(&[], T0).await.unwrap();
    assert_eq!(backend.workers().await.unwrap(), Vec::new());
    let w2 = worker("host:2", &["b"]);
    let w1 = worker("host:1", &["a", "b"]);
    let w3 = worker("host:1+1", &["*"]);
    backend
        .register_workers(&[w2.clone(), w1.clone(), w3.clone()], T0)
        .await
        .unwrap();
    let mut sorted = vec![w1.clone(), w2.clone(), w3.clone()];
    sorted.sort();
    assert_eq!(backend.workers().await.unwrap(), sorted);
    for w in &sorted {
        assert_eq!(backend.worker_started(w).await.unwrap(), Some(T0), "{w:?}");
        assert_eq!(backend.working_on(w).await.unwrap(), None);
    }
    assert_eq!(backend.stale_workers(T0).await.unwrap(), Vec::new());
    assert_eq!(backend.stale_workers(T0 + 1_000).await.unwrap(), sorted);
    // Registering some again restarts only those, and pings them.
    backend
        .register_workers(&[w3.clone(), w1.clone()], T0 + 5_000)
        .await
        .unwrap();
    assert_eq!(backend.workers().await.unwrap(), sorted);
    assert_eq!(backend.worker_started(&w1).await.unwrap(), Some(T0 + 5_000));
    assert_eq!(backend.worker_started(&w2).await.unwrap(), Some(T0));
    assert_eq!(backend.worker_started(&w3).await.unwrap(), Some(T0 + 5_000));
    assert_eq!(backend.stale_workers(T0 + 5_000).await.unwrap(), vec![w2]);
    assert_eq!(backend.queues().await.unwrap(), Vec::<String>::new());
    assert_eq!(all_stats(&*backend).await, Vec::new());
}

/// `ping_workers` pings exactly the workers given, as one `ping_worker`
/// call each would, without touching their start times; an empty list
/// pings nobody.
pub async fn ping_workers_pings_each(backend: Arc<dyn Backend>) {
    let a = worker("host:a", &["q"]);
    let b = worker("host:b", &["q"]);
    let c = worker("host:c", &["q"]);
    for w in [&a, &b, &c] {
        backend.register_worker(w, T0).await.unwrap();
    }
    backend.ping_workers(&[], T0 + 20_000).await.unwrap();
    assert_eq!(
        backend.stale_workers(T0 + 1_000).await.unwrap(),
        vec![a.clone(), b.clone(), c.clone()]
    );
    backend
        .ping_workers(&[c.clone(), a.clone()], T0 + 10_000)
        .await
        .unwrap();
    assert_eq!(backend.stale_workers(T0 + 5_000).await.unwrap(), vec![b.clone()]);
    assert_eq!(
        backend.stale_workers(T0 + 11_000).await.unwrap(),
        vec![a.clone(), b.clone(), c.clone()]
    );
    for w in [&a, &b, &c] {
        assert_eq!(backend.worker_started(w).await.unwrap(), Some(T0));
    }
}

/// `working_on_many` answers one entry per worker given, in the order
/// given (repeats included), each equal to that worker's `working_on`.
pub async fn working_on_many_answers_in_order(backend: Arc<dyn Backend>) {
    assert_eq!(backend.working_on_many(&[]).await.unwrap(), Vec::new());
    let w1 = worker("host:1", &["q"]);
    let w2 = worker("host:2", &["q"]);
    let w3 = worker("host:3", &["q"]);
    backend
        .register_workers(&[w1.clone(), w2.clone(), w3.clone()], T0)
        .await
        .unwrap();
    let p3 = job("q", "three", 3);
    let p1 = job("q", "one", 1);
    backend.push("q", &p3).await.unwrap();
    backend.push("q", &p1).await.unwrap();
    backend.claim(&w3, &names(&["q"]), RUN_AT).await.unwrap();
    backend.claim(&w1, &names(&["q"]), RUN_AT).await.unwrap();
    let on = |w: &WorkerId, p: &str| WorkingOn {
        worker: w.name.clone(),
        queue: "q".into(),
        run_at: RUN_AT.into(),
        payload: p.to_owned(),
    };
    let unknown = worker("host:9", &["q"]);
    let got = backend
        .working_on_many(&[w3.clone(), w2.clone(), unknown.clone(), w1.clone(), w3.clone()])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![Some(on(&w3, &p3)), None, None, Some(on(&w1, &p1)), Some(on(&w3, &p3))]
    );
    for w in [&w1, &w2, &w3, &unknown] {
        let one = backend.working_on(w).await.unwrap();
        assert_eq!(
            backend.working_on_many(std::slice::from_ref(w)).await.unwrap(),
            vec![one]
        );
    }
}

/// Cleaning an idle worker removes its registry entry, start time, ping and
/// per-worker counters (not the global ones, nor other workers'), returns
/// `Cleaned` without a job or entry, and changes no queue or failed list; a
/// second clean finds nothing.
pub async fn clean_idle_worker_removes_everything(backend: Arc<dyn Backend>) {
    let w = worker("host:1", &["q"]);
    let other = worker("host:2", &["q"]);
    for wk in [&w, &other] {
        backend.register_worker(wk, T0).await.unwrap();
    }
    for i in 0..4 {
        backend.push("q", &job("q", "x", i)).await.unwrap();
    }
    let entry = "{\"failed\":1}".to_owned();
    for (wk, outcome) in [
        (&w, Outcome::Success),
        (&w, Outcome::Failure { entry: entry.clone() }),
        (&other, Outcome::Success),
        (&other, Outcome::Failure { entry: entry.clone() }),
    ] {
        assert!(backend.claim(wk, &names(&["q"]), RUN_AT).await.unwrap().is_some());
        backend.complete(wk, outcome).await.unwrap();
    }
    backend.push("q", &job("q", "left", 1)).await.unwrap();
    let cleaned = backend.clean_worker(&w, Orphan::Requeue).await.unwrap();
    assert_eq!(
        cleaned,
        Some(Cleaned {
            worker: w.clone(),
            working_on: None,
            failed_entry: None,
        })
    );
    assert_eq!(backend.workers().await.unwrap(), vec![other.clone()]);
    assert_eq!(backend.worker_started(&w).await.unwrap(), None);
    assert_eq!(backend.working_on(&w).await.unwrap(), None);
    assert_eq!(
        backend.stale_workers(T0 + 1_000_000).await.unwrap(),
        vec![other.clone()]
    );
    assert_eq!(
        all_stats(&*backend).await,
        pairs(&[
            ("failed", 2),
            ("failed:host:2", 1),
            ("processed", 2),
            ("processed:host:2", 1)
        ])
    );
    assert_eq!(all(&*backend, "q").await, vec![job("q", "left", 1)]);
    assert_eq!(backend.failed_count().await.unwrap(), 2);
    assert_eq!(backend.clean_worker(&w, Orphan::Requeue).await.unwrap(), None);
    assert_eq!(backend.worker_started(&other).await.unwrap(), Some(T0));
}

/// Cleaning a busy worker with `Orphan::Requeue` returns its working-on
/// record and puts the payload back at the head of its queue (to run next),
/// without a failed entry or counter; the worker is gone.
pub async fn clean_busy_worker_requeues_to_head(backend: Arc<dyn Backend>) {
    let w = worker("host:1", &["q"]);
    backend.register_worker(&w, T0).await.unwrap();
    let (j1, j2, j3) = (job("q", "x", 1), job("q", "x", 2), job("q", "x", 3));
    backend.push("q", &j1).await.unwrap();
    backend.push("q", &j2).await.unwrap();
    assert!(backend.claim(&w, &names(&["q"]), RUN_AT).await.unwrap().is_some());
    backend.push("q", &j3).await.unwrap();
    let record = WorkingOn {
        worker: "host:1".into(),
        queue: "q".into(),
        run_at: RUN_AT.into(),
        payload: j1.clone(),
    };
    let cleaned = backend.clean_worker(&w, Orphan::Requeue).await.unwrap();
    assert_eq!(
        cleaned,
        Some(Cleaned {
            worker: w.clone(),
            working_on: Some(record),
            failed_entry: None,
        })
    );
    assert_eq!(all(&*backend, "q").await, vec![j1, j2, j3]);
    assert_eq!(backend.working_on(&w).await.unwrap(), None);
    assert_eq!(backend.workers().await.unwrap(), Vec::new());
    assert_eq!(backend.failed_count().await.unwrap(), 0);
    assert_eq!(all_stats(&*backend).await, Vec::new());
    // The requeued job is claimable again, by anyone.
    let w2 = worker("host:2", &["q"]);
    let c = backend.claim(&w2, &names(&["q"]), RUN_AT).await.unwrap();
    assert_eq!(c.map(|c| c.payload), Some(job("q", "x", 1)));
}

/// Cleaning a busy worker with `Orphan::Fail` appends a failed entry built
/// from the working-on record and the failure (worker name, queue, exact
/// payload bytes, exception, error, backtrace, `failed_at` from `at_ms`),
/// returns that entry, counts global `failed` once, and does not requeue.
pub async fn clean_busy_worker_fail_writes_entry_and_counts_failed(backend: Arc<dyn Backend>) {
    let w = worker("host:7+2", &["q"]);
    backend.register_worker(&w, T0).await.unwrap();
    let payload = r#"{"class":"big","queue":"q","args":[12345678901234567890,[],1.0]}"#;
    backend.push("q", payload).await.unwrap();
    assert!(backend.claim(&w, &names(&["q"]), RUN_AT).await.unwrap().is_some());
    let failure =
        Failure::new(resq_core::failed::WORKER_TIMEOUT, resq_core::failed::WORKER_TIMEOUT).with_backtrace(vec![
            "killed by test at now".into(),
            resq_core::failed::FORCE_CLEAN_MARK.into(),
            "resq".into(),
        ]);
    let cleaned = backend
        .clean_worker(
            &w,
            Orphan::Fail {
                failure: failure.clone(),
                at_ms: AT_MS,
            },
        )
        .await
        .unwrap()
        .expect("the busy worker was not found");
    assert_eq!(cleaned.worker, w);
    assert_eq!(
        cleaned.working_on,
        Some(WorkingOn {
            worker: "host:7+2".into(),
            queue: "q".into(),
            run_at: RUN_AT.into(),
            payload: payload.into(),
        })
    );
    let decoded = cleaned.failed_entry.expect("no failed entry returned");
    assert_eq!(all_failed(&*backend).await, vec![decoded.raw.clone()]);
    assert_eq!(
        *decoded,
        FailedJob::decode(&decoded.raw).unwrap(),
        "the entry as `failed` lists it"
    );
    assert_eq!(decoded.worker.as_deref(), Some("host:7+2"));
    assert_eq!(decoded.queue.as_deref(), Some("q"));
    assert_eq!(decoded.payload.as_deref(), Some(payload), "payload bytes changed");
    assert_eq!(decoded.exception.as_deref(), Some(failure.exception.as_str()));
    assert_eq!(decoded.error.as_deref(), Some(failure.error.as_str()));
    assert_eq!(decoded.backtrace, failure.backtrace);
    assert!(decoded.is_force_cleaned());
    let failed_at = decoded.failed_at.as_deref().unwrap_or_default();
    assert_eq!(
        resq_core::time::parse_date(failed_at),
        Some(AT_MS),
        "failed_at {failed_at:?}"
    );
    assert_eq!(backend.stat("failed").await.unwrap(), 1);
    assert_eq!(all_stats(&*backend).await, pairs(&[("failed", 1)]));
    assert_eq!(backend.queue_len("q").await.unwrap(), 0);
    assert_eq!(backend.working_on(&w).await.unwrap(), None);
    assert_eq!(backend.workers().await.unwrap(), Vec::new());
}

/// Cleaning a worker that was never registered returns `None` and changes
/// nothing; an idle registered worker cleaned with `Orphan::Fail` writes no
/// entry and counts nothing.
pub async fn clean_unknown_worker_returns_none(backend: Arc<dyn Backend>) {
    let ghost = worker("host:404", &["q"]);
    let fail = Orphan::Fail {
        failure: Failure::new("E", "e"),
        at_ms: AT_MS,
    };
    assert_eq!(backend.clean_worker(&ghost, Orphan::Requeue).await.unwrap(), None);
    assert_eq!(backend.clean_worker(&ghost, fail.clone()).await.unwrap(), None);
    assert_eq!(backend.failed_count().await.unwrap(), 0);
    assert_eq!(all_stats(&*backend).await, Vec::new());
    let idle = worker("host:1", &["q"]);
    backend.register_worker(&idle, T0).await.unwrap();
    let cleaned = backend.clean_worker(&idle, fail).await.unwrap();
    assert_eq!(
        cleaned,
        Some(Cleaned {
            worker: idle,
            working_on: None,
            failed_entry: None,
        })
    );
    assert_eq!(backend.failed_count().await.unwrap(), 0);
    assert_eq!(all_stats(&*backend).await, Vec::new());
}

/// A worker id survives the registry unchanged (`host:pid+1` names with a
/// `:`, comma-joined queues, wildcard `*`), and its `workers` member parses
/// back with `WorkerId::parse`.
pub async fn worker_id_member_roundtrip(backend: Arc<dyn Backend>) {
    let ids = [
        worker("host:pid+1", &["a", "b"]),
        worker("solo", &["only"]),
        worker("box.example:77", &["*"]),
    ];
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(WorkerId::parse(&id.member()).as_ref(), Some(id));
        backend.register_worker(id, T0 + i as i64 * 1_000).await.unwrap();
    }
    assert_eq!(ids[0].member(), "host:pid+1:a,b");
    assert_eq!(ids[0].queue_list(), names(&["a", "b"]));
    let mut sorted = ids.to_vec();
    sorted.sort();
    let listed = backend.workers().await.unwrap();
    assert_eq!(listed, sorted);
    for id in &listed {
        assert_eq!(WorkerId::parse(&id.member()).as_ref(), Some(id));
        assert!(backend.worker_started(id).await.unwrap().is_some());
    }
}
