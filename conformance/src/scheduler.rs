//! The [`Scheduler`]: leader election, promotion of due delayed jobs, and
//! the cleanup of workers that stopped pinging (spec §8.3).

use crate::support::wait_until;
use resq_core::backend::{Backend, WorkerId};
use resq_core::failed::WORKER_TIMEOUT;
use resq_core::time::now_ms;
use resq_core::{Queue, Scheduler, SchedulerConfig, SchedulerEvent, StuckJobPolicy};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn config(name: &str) -> SchedulerConfig {
    SchedulerConfig {
        name: Some(name.to_owned()),
        poll_interval: Duration::from_millis(100),
        leader_ttl: Duration::from_secs(30),
        stuck_worker_timeout: None,
        ..SchedulerConfig::default()
    }
}

/// Due jobs move to their queue on `poll`, with their bytes unchanged;
/// future jobs stay delayed; `leader()` names the scheduler.
pub async fn poll_promotes_due_jobs_only(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    q.enqueue_at(10_000, "q", "add", (1, 2)).await.unwrap();
    q.enqueue_in(Duration::from_secs(60), "q", "add", (3, 4)).await.unwrap();
    let s = Scheduler::new(Arc::clone(&backend), config("sched-1")).unwrap();
    let report = s.poll().await.unwrap();
    assert!(report.leader);
    assert_eq!(report.promoted, 1);
    assert_eq!(
        backend.queue_range("q", 0, -1).await.unwrap(),
        vec![r#"{"class":"add","queue":"q","args":[1,2]}"#.to_owned()]
    );
    assert_eq!(q.scheduled_at("q", "add", (3, 4)).await.unwrap().len(), 1);
    assert_eq!(q.scheduled_at("q", "add", (1, 2)).await.unwrap().len(), 0);
    assert_eq!(q.leader().await.unwrap().as_deref(), Some("sched-1"));
    assert!(report.next_due.is_some());
}

/// A delayed job is never promoted before the time it asked for, and is
/// promoted soon after it.
pub async fn never_promotes_before_due_time(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    let s = Scheduler::new(Arc::clone(&backend), config("sched-1")).unwrap();
    for delay in [700_i64, 1_200] {
        let due = now_ms() + delay;
        q.enqueue_at(due, "q", "add", (delay, 0)).await.unwrap();
        let start = now_ms();
        loop {
            s.poll().await.unwrap();
            let moved = q.length("q").await.unwrap() > 0;
            let now = now_ms();
            if moved {
                assert!(now >= due, "promoted {} ms early", due - now);
                break;
            }
            assert!(now - start < 5_000, "not promoted within 5 s of its due time");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        q.del_queue("q").await.unwrap();
    }
}

/// Of two schedulers exactly one leads; only the leader promotes; when it
/// stops (releases), the other takes over.
pub async fn one_leader_and_failover_on_release(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    let a = Scheduler::new(Arc::clone(&backend), config("sched-a")).unwrap();
    let b = Scheduler::new(Arc::clone(&backend), config("sched-b")).unwrap();
    assert!(a.poll().await.unwrap().leader);
    q.enqueue_at(10_000, "q", "add", (1, 2)).await.unwrap();
    let follower = b.poll().await.unwrap();
    assert!(!follower.leader);
    assert_eq!(follower.promoted, 0);
    assert_eq!(q.length("q").await.unwrap(), 0, "a follower promotes nothing");
    assert!(a.is_leader() && !b.is_leader());
    assert!(a.release().await.unwrap());
    assert!(!a.is_leader());
    let report = b.poll().await.unwrap();
    assert!(report.leader);
    assert_eq!(report.promoted, 1);
    assert!(!a.poll().await.unwrap().leader, "the old leader is now a follower");
    assert_eq!(q.leader().await.unwrap().as_deref(), Some("sched-b"));
}

/// A leader that dies without releasing is replaced once its lock expires.
pub async fn failover_after_leader_lock_expires(backend: Arc<dyn Backend>) {
    let short = SchedulerConfig {
        leader_ttl: Duration::from_millis(600),
        ..config("sched-a")
    };
    let a = Scheduler::new(Arc::clone(&backend), short).unwrap();
    let b = Scheduler::new(
        Arc::clone(&backend),
        SchedulerConfig {
            leader_ttl: Duration::from_millis(600),
            ..config("sched-b")
        },
    )
    .unwrap();
    assert!(a.poll().await.unwrap().leader);
    drop(a); // dies without releasing
    assert!(!b.poll().await.unwrap().leader);
    wait_until(Duration::from_secs(5), "b takes over", || async {
        b.poll().await.unwrap().leader
    })
    .await;
    assert_eq!(
        Queue::new(Arc::clone(&backend)).leader().await.unwrap().as_deref(),
        Some("sched-b")
    );
}

/// Running schedulers: one leads, the `run` loop promotes soon after the
/// due time, stopping releases the lock, and the survivor takes over.
pub async fn running_schedulers_promote_and_hand_over(backend: Arc<dyn Backend>) {
    let q = Queue::new(Arc::clone(&backend));
    let a = Arc::new(Scheduler::new(Arc::clone(&backend), config("sched-a")).unwrap());
    let b = Arc::new(Scheduler::new(Arc::clone(&backend), config("sched-b")).unwrap());
    let mut a_events = a.subscribe();
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let ra = tokio::spawn({
        let (a, t) = (Arc::clone(&a), stop_a.clone());
        async move { a.run_until(t).await }
    });
    wait_until(Duration::from_secs(5), "a leads", || async { a.is_leader() }).await;
    let rb = tokio::spawn({
        let (b, t) = (Arc::clone(&b), stop_b.clone());
        async move { b.run_until(t).await }
    });
    q.enqueue_in(Duration::from_millis(300), "q", "add", (1, 2))
        .await
        .unwrap();
    wait_until(Duration::from_secs(5), "job promoted by the run loop", || {
        let q = q.clone();
        async move { q.length("q").await.unwrap() == 1 }
    })
    .await;
    // The promoted job shows in the queue a moment before the leader has
    // the backend's reply and emits its event; a stop in between abandons
    // the round (the job stays promoted, unreported), so the event is
    // awaited before the stop.
    let saw_transfer = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match a_events.recv().await {
                Ok(SchedulerEvent::TransferredJob { .. }) => return true,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return false,
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(saw_transfer, "the leader reported the transferred job");
    assert!(!b.is_leader());
    stop_a.cancel();
    ra.await.unwrap().unwrap();
    wait_until(Duration::from_secs(5), "b takes over", || async { b.is_leader() }).await;
    stop_b.cancel();
    rb.await.unwrap().unwrap();
    assert_eq!(q.leader().await.unwrap(), None, "stopping releases the lock");
}

async fn dead_busy_worker(backend: &Arc<dyn Backend>, payload: &str) -> WorkerId {
    let id = WorkerId::new("host:9+1", &["q".to_owned()]);
    backend.register_worker(&id, now_ms() - 10_000).await.unwrap();
    backend.push("q", payload).await.unwrap();
    backend
        .push("q", r#"{"class":"other","queue":"q","args":[]}"#)
        .await
        .unwrap();
    backend.claim(&id, &["q".to_owned()], "t").await.unwrap().unwrap();
    id
}

/// A worker whose ping is older than `stuck_worker_timeout` is removed and
/// its job goes back to the head of its queue (the default policy).
pub async fn stuck_worker_job_is_requeued(backend: Arc<dyn Backend>) {
    let payload = r#"{"class":"add","queue":"q","args":[]}"#;
    let id = dead_busy_worker(&backend, payload).await;
    let live = WorkerId::new("host:9+2", &["q".to_owned()]);
    backend.register_worker(&live, now_ms()).await.unwrap();
    let s = Scheduler::new(
        Arc::clone(&backend),
        SchedulerConfig {
            stuck_worker_timeout: Some(Duration::from_secs(1)),
            worker_ping_interval: Duration::from_millis(100),
            ..config("sched-1")
        },
    )
    .unwrap();
    let mut events = s.subscribe();
    let report = s.poll().await.unwrap();
    assert_eq!(report.cleaned_workers, 1);
    assert_eq!(
        backend.queue_range("q", 0, 0).await.unwrap(),
        vec![payload.to_owned()],
        "back at the head"
    );
    assert_eq!(backend.queue_len("q").await.unwrap(), 2);
    assert_eq!(backend.workers().await.unwrap(), vec![live], "the live worker stays");
    assert!(backend.working_on(&id).await.unwrap().is_none());
    assert_eq!(backend.failed_count().await.unwrap(), 0);
    let mut cleaned = None;
    while let Ok(ev) = events.try_recv() {
        if let SchedulerEvent::CleanStuckWorker { worker, .. } = ev {
            cleaned = Some(worker);
        }
    }
    assert_eq!(cleaned, Some(id));
}

/// A stuck worker that cannot be cleaned for a reason other than a
/// transient error (one item's bad data, injected here as a permanent
/// error) is skipped: the poll succeeds and the other stuck workers are
/// cleaned. Inspection calls leave out a queue or worker that cannot be
/// read that way, and answer for the rest.
pub async fn one_bad_item_stops_no_cleaning_or_inspection(backend: Arc<dyn Backend>) {
    let faulty = crate::faults::Faulty::new(Arc::clone(&backend), crate::faults::FaultPlan::default());
    faulty.disarm();
    let wrapped: Arc<dyn Backend> = faulty.clone();
    let payload = r#"{"class":"add","queue":"q","args":[]}"#;
    let id = dead_busy_worker(&backend, payload).await;
    let bad = WorkerId::new("host:0+1", &["q".to_owned()]);
    backend.register_worker(&bad, now_ms() - 10_000).await.unwrap();
    backend
        .push("odd", r#"{"class":"add","queue":"odd","args":[]}"#)
        .await
        .unwrap();
    faulty.bad_item(Some("host:0+1"));
    let s = Scheduler::new(
        Arc::clone(&wrapped),
        SchedulerConfig {
            stuck_worker_timeout: Some(Duration::from_secs(1)),
            worker_ping_interval: Duration::from_millis(300),
            ..config("sched-1")
        },
    )
    .unwrap();
    let report = s.poll().await.unwrap();
    assert_eq!(report.cleaned_workers, 1, "{report:?}");
    assert!(backend.working_on(&id).await.unwrap().is_none());
    assert_eq!(backend.queue_range("q", 0, 0).await.unwrap(), vec![payload.to_owned()]);
    assert_eq!(
        backend.workers().await.unwrap(),
        vec![bad.clone()],
        "the bad one is left"
    );
    let q = Queue::new(Arc::clone(&wrapped));
    let working = q.all_working_on().await.unwrap();
    assert!(!working.contains_key("host:0+1"), "{working:?}");
    faulty.bad_item(Some("odd"));
    let details = q.details().await.unwrap();
    assert_eq!(details.queues.keys().collect::<Vec<_>>(), vec!["q"]);
    assert!(details.workers.contains_key("host:0+1"));
}

/// With the `Fail` policy a stuck worker's job goes to the failed list as
/// `Worker Timeout (killed manually)`.
pub async fn stuck_worker_job_can_be_failed(backend: Arc<dyn Backend>) {
    let payload = r#"{"class":"add","queue":"q","args":[1]}"#;
    dead_busy_worker(&backend, payload).await;
    let s = Scheduler::new(
        Arc::clone(&backend),
        SchedulerConfig {
            stuck_worker_timeout: Some(Duration::from_secs(1)),
            worker_ping_interval: Duration::from_millis(100),
            stuck_job_policy: StuckJobPolicy::Fail,
            ..config("sched-1")
        },
    )
    .unwrap();
    assert_eq!(s.poll().await.unwrap().cleaned_workers, 1);
    let q = Queue::new(Arc::clone(&backend));
    let f = q.failed(0, -1).await.unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].exception.as_deref(), Some(WORKER_TIMEOUT));
    assert_eq!(f[0].payload.as_deref(), Some(payload));
    assert!(q.all_working_on().await.unwrap().is_empty());
    assert_eq!(q.length("q").await.unwrap(), 1, "only the other job is queued");
}

/// A delayed item that cannot be promoted is reported and moved to the
/// failed list; the good ones are promoted.
pub async fn unpromotable_items_are_reported(backend: Arc<dyn Backend>) {
    backend.schedule(10, "not json").await.unwrap();
    backend
        .schedule(10, r#"{"class":"add","queue":"q","args":[]}"#)
        .await
        .unwrap();
    let s = Scheduler::new(Arc::clone(&backend), config("sched-1")).unwrap();
    let report = s.poll().await.unwrap();
    assert_eq!(report.promoted, 1);
    assert_eq!(report.promotion_failures, 1);
    assert_eq!(backend.failed_count().await.unwrap(), 1);
    assert!(backend.delayed_timestamps().await.unwrap().is_empty());
}

/// A scheduler refuses a leader TTL too short to renew and an empty
/// promotion batch. (A leader TTL under the poll interval is fine: the lock
/// is renewed beside the polls.)
pub async fn config_is_validated(backend: Arc<dyn Backend>) {
    let ok = SchedulerConfig {
        poll_interval: Duration::from_secs(10),
        leader_ttl: Duration::from_secs(5),
        ..SchedulerConfig::default()
    };
    assert!(Scheduler::new(Arc::clone(&backend), ok).is_ok());
    let bad = SchedulerConfig {
        leader_ttl: Duration::from_millis(10),
        ..SchedulerConfig::default()
    };
    assert!(Scheduler::new(Arc::clone(&backend), bad).is_err());
    let bad = SchedulerConfig {
        promote_batch: 0,
        ..SchedulerConfig::default()
    };
    assert!(Scheduler::new(backend, bad).is_err());
}

/// The stuck-worker check does not judge pings that went missing while the
/// checker itself could not reach the store (then the workers could not
/// either): after its own failed poll, a scheduler cleans no worker until
/// it has reached the store again for a whole `stuck_worker_timeout`, so a
/// live worker that resumes pinging in that time is kept; one that stays
/// silent is cleaned after it.
pub async fn no_worker_is_judged_on_pings_lost_in_an_outage(backend: Arc<dyn Backend>) {
    use resq_core::BackendErrorKind;
    let outage = crate::outage::Outage::new(Arc::clone(&backend));
    let live = WorkerId::new("host:7+1", &["q".to_owned()]);
    let dead = WorkerId::new("host:7+2", &["q".to_owned()]);
    // Both last pinged before the outage, longer ago than the timeout.
    backend.register_worker(&live, now_ms() - 10_000).await.unwrap();
    backend.register_worker(&dead, now_ms() - 10_000).await.unwrap();
    let timeout = Duration::from_millis(1500);
    let s = Scheduler::new(
        Arc::clone(&outage) as Arc<dyn Backend>,
        SchedulerConfig {
            stuck_worker_timeout: Some(timeout),
            worker_ping_interval: Duration::from_millis(500),
            ..config("sched-1")
        },
    )
    .unwrap();
    outage.fail(BackendErrorKind::Transient, None);
    assert!(s.poll().await.is_err(), "the store is unreachable");
    outage.recover();
    // Back, but the pings are stale only because of the outage.
    let report = s.poll().await.unwrap();
    assert!(report.leader);
    assert_eq!(report.cleaned_workers, 0, "nobody is judged right after the outage");
    // The live worker pings again; the dead one never does.
    backend.ping_worker(&live, now_ms()).await.unwrap();
    assert_eq!(s.poll().await.unwrap().cleaned_workers, 0);
    tokio::time::sleep(timeout + Duration::from_millis(300)).await;
    backend.ping_worker(&live, now_ms()).await.unwrap();
    assert_eq!(
        s.poll().await.unwrap().cleaned_workers,
        1,
        "the silent worker is cleaned"
    );
    assert_eq!(backend.workers().await.unwrap(), vec![live], "the live worker is kept");
}
