//! `resq_redis::doctor`: an audit of a namespace with crafted keys, written
//! with raw commands as other Resque clients would, finds each kind of
//! damage, reports a clean namespace as clean, and `fix` repairs exactly the
//! safe ones (compare-and-set: a value changed since the audit is left).

mod common;

use resq_core::{FailedJob, FailedStore, Queue, QueueStore, WorkerId, WorkerRegistry};
use resq_redis::doctor::{audit, fix, FindingKind, Fix, Severity};

#[tokio::test]
async fn a_healthy_namespace_has_no_problems() {
    let Some((backend, _ns, _raw)) = common::fresh_with_raw("a_healthy_namespace_has_no_problems").await else {
        return;
    };
    let backend = std::sync::Arc::new(backend);
    let queue = Queue::new(backend.clone());
    queue.enqueue("math", "add", (1, 2)).await.unwrap();
    queue.enqueue("math", "noargs", ()).await.unwrap();
    let w = WorkerId::new("host:1", &["math".to_owned()]);
    let now = resq_core::time::now_ms();
    backend.register_worker(&w, now).await.unwrap();
    backend.ping_worker(&w, now).await.unwrap();
    let report = audit(&backend).await.unwrap();
    assert_eq!(report.problems().count(), 0, "{report:#?}");
    assert_eq!(report.fixable().count(), 0);
}

#[tokio::test]
async fn finds_each_kind_of_damage_and_fixes_only_the_safe_ones() {
    let Some((backend, ns, mut raw)) = common::fresh_with_raw("finds_each_kind_of_damage").await else {
        return;
    };
    let k = |logical: &str| format!("{ns}:{logical}");
    let good = r#"{"class":"add","queue":"math","args":[1,2]}"#;
    let damaged = r#"{"class":"noargs","queue":"math","args":{}}"#;
    let garbage = "not json at all";
    let _: () = redis::cmd("SADD")
        .arg(k("queues"))
        .arg("math")
        .query_async(&mut raw)
        .await
        .unwrap();
    let _: () = redis::cmd("RPUSH")
        .arg(k("queue:math"))
        .arg(good)
        .arg(damaged)
        .arg(garbage)
        .query_async(&mut raw)
        .await
        .unwrap();
    // Both leader locks: node-resque/resq's and resque-scheduler's (double prefix).
    let _: () = redis::cmd("SET")
        .arg(k("resque_scheduler_leader_lock"))
        .arg("nr-sched")
        .arg("EX")
        .arg(180)
        .query_async(&mut raw)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(k(&format!("{ns}:resque_scheduler_master_lock")))
        .arg("rb:42")
        .query_async(&mut raw)
        .await
        .unwrap();
    // A working-on key of a worker that is not registered.
    let orphan_key = k("worker:ghost:7:math");
    let orphan_value = format!(r#"{{"run_at":"x","queue":"math","worker":"ghost:7","payload":{good}}}"#);
    let _: () = redis::cmd("SET")
        .arg(&orphan_key)
        .arg(&orphan_value)
        .query_async(&mut raw)
        .await
        .unwrap();
    // A registered worker with no ping and no heartbeat.
    let _: () = redis::cmd("SADD")
        .arg(k("workers"))
        .arg("silent:9:math")
        .query_async(&mut raw)
        .await
        .unwrap();

    let report = audit(&backend).await.unwrap();
    let kinds = |kind: FindingKind| report.findings.iter().filter(|f| f.kind == kind).collect::<Vec<_>>();

    let empty = kinds(FindingKind::EmptyObjectArgs);
    assert_eq!(empty.len(), 1, "{report:#?}");
    assert_eq!(empty[0].value.as_deref(), Some(damaged));
    assert_eq!(
        empty[0].fix,
        Some(Fix::ReplaceListItem {
            index: 1,
            replacement: r#"{"class":"noargs","queue":"math","args":[]}"#.to_owned()
        })
    );
    let bad = kinds(FindingKind::UnparsablePayload);
    assert_eq!(bad.len(), 1, "{report:#?}");
    assert_eq!(bad[0].value.as_deref(), Some(garbage));
    assert!(bad[0].fix.is_none());
    let leaders = kinds(FindingKind::LeaderLock);
    assert_eq!(
        leaders.iter().filter(|f| f.severity == Severity::Problem).count(),
        2,
        "no TTL + both held: {leaders:#?}"
    );
    assert_eq!(leaders.len(), 3, "{leaders:#?}");
    let orphans = kinds(FindingKind::OrphanWorkingOn);
    assert_eq!(orphans.len(), 1);
    assert_eq!(orphans[0].key, orphan_key);
    let silent = kinds(FindingKind::WorkerWithoutPing);
    assert_eq!(silent.len(), 1);
    assert_eq!(silent[0].value.as_deref(), Some("silent:9:math"));

    let outcome = fix(&backend, &report).await.unwrap();
    assert_eq!((outcome.fixed, outcome.stale), (2, 0));
    let items: Vec<String> = redis::cmd("LRANGE")
        .arg(k("queue:math"))
        .arg(0)
        .arg(-1)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(
        items,
        vec![
            good.to_owned(),
            r#"{"class":"noargs","queue":"math","args":[]}"#.to_owned(),
            garbage.to_owned()
        ]
    );
    let exists: bool = redis::cmd("EXISTS")
        .arg(&orphan_key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(!exists, "the orphaned working-on key is gone");
    let failed = backend.failed_range(0, -1).await.unwrap();
    assert_eq!(failed.len(), 1);
    let entry = FailedJob::decode(&failed[0]).unwrap();
    assert_eq!(entry.queue.as_deref(), Some("math"));
    assert_eq!(entry.job().unwrap().raw, good, "the job's bytes are kept");
    // What is not safe to fix is still there.
    let locks: bool = redis::cmd("EXISTS")
        .arg(k("resque_scheduler_leader_lock"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(locks);
    assert_eq!(backend.queue_len("math").await.unwrap(), 3);

    // A second audit finds only what fix leaves alone.
    let again = audit(&backend).await.unwrap();
    assert_eq!(again.fixable().count(), 0, "{again:#?}");
    assert_eq!(
        again
            .findings
            .iter()
            .filter(|f| f.kind == FindingKind::UnparsablePayload)
            .count(),
        1
    );
}

#[tokio::test]
async fn fix_leaves_a_value_changed_since_the_audit() {
    let Some((backend, ns, mut raw)) = common::fresh_with_raw("fix_leaves_a_value_changed_since_the_audit").await
    else {
        return;
    };
    let key = format!("{ns}:queue:q");
    let damaged = r#"{"class":"c","queue":"q","args":{}}"#;
    let _: () = redis::cmd("RPUSH")
        .arg(&key)
        .arg(damaged)
        .query_async(&mut raw)
        .await
        .unwrap();
    let report = audit(&backend).await.unwrap();
    assert_eq!(report.fixable().count(), 1);
    // Another client pops it and pushes something else in its place.
    let _: () = redis::cmd("LSET")
        .arg(&key)
        .arg(0)
        .arg(r#"{"class":"other","args":[]}"#)
        .query_async(&mut raw)
        .await
        .unwrap();
    let outcome = fix(&backend, &report).await.unwrap();
    assert_eq!((outcome.fixed, outcome.stale), (0, 1));
    let items: Vec<String> = redis::cmd("LRANGE")
        .arg(&key)
        .arg(0)
        .arg(-1)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(items, vec![r#"{"class":"other","args":[]}"#.to_owned()]);
}
