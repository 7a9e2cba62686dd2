//! The schema and its migrations: creation on demand, idempotence, safety
//! under concurrent migrators, upgrades with jobs in flight, and the claims'
//! use of the queue index.

mod common;

use resq_core::backend::Backend;
use resq_core::{QueueStore, QueuedJob, StatsStore, WorkerId, WorkerRegistry};
use resq_postgres::{latest_version, testing, PostgresBackend};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_the_schema_once() {
    let Some(backend) = common::unmigrated("migrate_creates_the_schema_once").await else {
        return;
    };
    assert_eq!(backend.schema_version().await.unwrap(), None);
    assert!(backend.queues().await.is_err(), "tables exist before migrating");
    let all: Vec<i32> = resq_postgres::MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(backend.migrate().await.unwrap(), all);
    assert_eq!(backend.schema_version().await.unwrap(), Some(latest_version()));
    assert_eq!(backend.migrate().await.unwrap(), Vec::<i32>::new());
    assert_eq!(backend.migrate().await.unwrap(), Vec::<i32>::new());
    backend.push("q", "x").await.unwrap();
    assert_eq!(backend.queue_len("q").await.unwrap(), 1);
    testing::drop_test_schema(&backend).await.unwrap();
    backend.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_apply_once() {
    let Some(first) = common::unmigrated("concurrent_migrations_apply_once").await else {
        return;
    };
    // Four processes' worth: separate backends (pools) on one new schema.
    let config = testing::config(first.schema()).unwrap();
    let mut backends = vec![first];
    for _ in 0..3 {
        backends.push(PostgresBackend::connect_with(config.clone()).await.unwrap());
    }
    let runs: Vec<_> = backends
        .iter()
        .map(|b| {
            let b = b.clone();
            tokio::spawn(async move { b.migrate().await })
        })
        .collect();
    let mut applied = Vec::new();
    for run in runs {
        applied.push(run.await.unwrap().unwrap());
    }
    let all: Vec<i32> = resq_postgres::MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(applied.iter().filter(|a| **a == all).count(), 1, "{applied:?}");
    assert_eq!(applied.iter().filter(|a| a.is_empty()).count(), 3, "{applied:?}");
    for b in &backends {
        assert_eq!(b.schema_version().await.unwrap(), Some(latest_version()));
    }
    testing::drop_test_schema(&backends[0]).await.unwrap();
    for b in backends {
        b.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_on_connect_from_the_url() {
    let schema = testing::unique_schema();
    let Ok(mut url) = url::Url::parse(&testing::url()) else {
        return common::skip("migrate_on_connect_from_the_url", "bad RESQ_POSTGRES_URL");
    };
    url.query_pairs_mut()
        .append_pair("schema", &schema)
        .append_pair("max_connections", "2")
        .append_pair("migrate", "true");
    let backend = match resq_postgres::connect(url.as_str()).await {
        Ok(b) => b,
        Err(e) => return common::skip("migrate_on_connect_from_the_url", &e.to_string()),
    };
    assert_eq!(backend.schema(), schema);
    assert_eq!(backend.config().max_connections, 2);
    assert_eq!(backend.schema_version().await.unwrap(), Some(latest_version()));
    assert_eq!(backend.kind(), "postgres");
    testing::drop_test_schema(&backend).await.unwrap();
    backend.close().await.unwrap();
}

/// The claim probes `jobs (queue, id)` once per queue: the statement inside
/// `resq_claim`, planned generically as the function's cached plan is,
/// is an index scan with a limit, not a scan of the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_uses_the_queue_index() {
    let Some(backend) = common::backend("claim_uses_the_queue_index").await else {
        return;
    };
    let jobs: Vec<QueuedJob> = (0..20_000)
        .map(|i| QueuedJob {
            queue: if i % 4 == 0 { "rare".into() } else { "busy".into() },
            payload: format!(r#"{{"class":"c","queue":"q","args":[{i}]}}"#),
        })
        .collect();
    let (schema, mut conn) = queued_and_analyzed(&backend, &jobs).await;
    sqlx::query(&format!(
        "PREPARE head_of(text) AS DELETE FROM \"{schema}\".jobs AS j WHERE j.queue = $1 AND j.id = \
         (SELECT h.id FROM \"{schema}\".jobs AS h WHERE h.queue = $1 ORDER BY h.id LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING j.payload"
    ))
    .execute(&mut *conn)
    .await
    .unwrap();
    let plan: Vec<(String,)> = sqlx::query_as("EXPLAIN EXECUTE head_of('busy')")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let plan: Vec<String> = plan.into_iter().map(|(l,)| l).collect();
    let text = plan.join("\n");
    assert!(!text.contains("Seq Scan"), "the claim scans the table:\n{text}");
    assert!(
        text.contains("jobs_pkey"),
        "the claim does not use jobs (queue, id):\n{text}"
    );
    assert!(text.contains("Limit"), "{text}");
    sqlx::query("DEALLOCATE head_of").execute(&mut *conn).await.unwrap();
    drop(conn);

    let w = WorkerId::new("h:1", &["rare".to_owned(), "busy".to_owned()]);
    let first = backend
        .claim(&w, &["rare".to_owned(), "busy".to_owned()], "t")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.queue, "rare");
    assert_eq!(first.payload, r#"{"class":"c","queue":"q","args":[0]}"#);
    backend.close().await.unwrap();
}

/// The batch claim of migration 2 finds queue heads by one index scan and
/// deletes them by `ctid`, planned generically as the function's cached
/// plan is: no scan of the whole table, however long the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_claim_uses_the_queue_index() {
    let Some(backend) = common::backend("batch_claim_uses_the_queue_index").await else {
        return;
    };
    let jobs: Vec<QueuedJob> = (0..20_000)
        .map(|i| QueuedJob {
            queue: "busy".into(),
            payload: format!(r#"{{"class":"c","queue":"busy","args":[{i}]}}"#),
        })
        .collect();
    let (schema, mut conn) = queued_and_analyzed(&backend, &jobs).await;
    sqlx::query(&format!(
        "PREPARE heads_of(text, integer) AS DELETE FROM \"{schema}\".jobs AS j WHERE j.ctid = ANY (ARRAY(\
         SELECT h.ctid FROM \"{schema}\".jobs AS h WHERE h.queue = $1 ORDER BY h.id LIMIT $2 \
         FOR UPDATE SKIP LOCKED)) RETURNING j.id, j.payload"
    ))
    .execute(&mut *conn)
    .await
    .unwrap();
    let plan: Vec<(String,)> = sqlx::query_as("EXPLAIN EXECUTE heads_of('busy', 256)")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let text = plan.into_iter().map(|(l,)| l).collect::<Vec<_>>().join("\n");
    assert!(!text.contains("Seq Scan"), "the batch claim scans the table:\n{text}");
    assert!(text.contains("jobs_pkey"), "{text}");
    assert!(text.contains("Tid Scan"), "{text}");
    sqlx::query("DEALLOCATE heads_of").execute(&mut *conn).await.unwrap();
    drop(conn);

    let slots: Vec<WorkerId> = (1..=3)
        .map(|i| WorkerId::new(format!("h:1+1.{i}"), &["busy".to_owned()]))
        .collect();
    let got = backend.claim_batch(&slots, &["busy".to_owned()], "t").await.unwrap();
    let payloads: Vec<&str> = got.iter().map(|(_, c)| c.payload.as_str()).collect();
    assert_eq!(payloads, [0, 1, 2].map(|i| jobs[i].payload.as_str()));
    backend.close().await.unwrap();
}

/// A schema at version 1 with jobs queued and running upgrades to the
/// latest version in place: the running job's record is kept, and the
/// queued jobs are claimed and completed in one round afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_one_upgrades_with_jobs_in_flight() {
    // What `migrate` did before version 2 existed: version 1 only.
    let Some(backend) = at_version("version_one_upgrades_with_jobs_in_flight", 1).await else {
        return;
    };
    let schema = backend.schema().to_owned();

    let queues = vec!["q".to_owned()];
    let slots: Vec<WorkerId> = (1..=3).map(|i| WorkerId::new(format!("h:1+1.{i}"), &queues)).collect();
    for i in 0..4 {
        backend.push("q", &format!("job {i}")).await.unwrap();
    }
    // A claim as version 1's code made it (this build's statements read
    // columns that later versions add).
    let running: Vec<(i32, String, String)> = sqlx::query_as(&format!(
        "SELECT slot, claimed_queue, claimed_payload FROM \"{schema}\".resq_claim_batch($1::text[], $2::text[], $3::text[], 't')"
    ))
    .bind(&queues)
    .bind(vec![slots[0].name.clone()])
    .bind(vec![slots[0].queues.clone()])
    .fetch_all(backend.pool())
    .await
    .unwrap();
    assert_eq!(running.len(), 1);

    upgrade(&backend, 1).await;
    assert_eq!(backend.working_on(&slots[0]).await.unwrap().unwrap().payload, "job 0");
    let done = vec![(slots[0].clone(), resq_core::Outcome::Success)];
    let got = backend
        .complete_and_claim_batch(&done, &slots, &queues, "t")
        .await
        .unwrap()
        .unwrap();
    let payloads: Vec<&str> = got.iter().map(|(_, c)| c.payload.as_str()).collect();
    assert_eq!(payloads, ["job 1", "job 2", "job 3"]);
    // Jobs queued before migration 4 have no recorded enqueue time.
    assert!(got.iter().all(|(_, c)| c.enqueued_at_ms.is_none()), "{got:?}");
    assert_eq!(backend.stat("processed").await.unwrap(), 1);
    testing::drop_test_schema(&backend).await.unwrap();
    backend.close().await.unwrap();
}

/// Queues `jobs`, analyzes `jobs`, and returns the schema and a connection
/// that plans prepared statements generically (as PL/pgSQL's cached plans do).
async fn queued_and_analyzed(
    backend: &PostgresBackend,
    jobs: &[QueuedJob],
) -> (String, sqlx::pool::PoolConnection<sqlx::Postgres>) {
    for chunk in jobs.chunks(5_000) {
        backend.push_batch(chunk).await.unwrap();
    }
    let schema = backend.schema().to_owned();
    let mut conn = backend.pool().acquire().await.unwrap();
    sqlx::query(&format!("ANALYZE \"{schema}\".jobs"))
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    (schema, conn)
}

/// A backend on a new schema at `version`, as `migrate` left it before
/// later versions existed: migrations 1 to `version` applied and recorded
/// in one transaction. `None` after skipping.
async fn at_version(test: &str, version: i32) -> Option<Arc<PostgresBackend>> {
    let backend = common::unmigrated(test).await?;
    let schema = backend.schema().to_owned();
    let mut tx = backend.pool().begin().await.unwrap();
    for sql in [
        format!("CREATE SCHEMA \"{schema}\""),
        format!(
            "CREATE TABLE \"{schema}\".resq_migrations (version integer PRIMARY KEY, name text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now())"
        ),
        format!("SET LOCAL search_path TO \"{schema}\""),
    ] {
        sqlx::query(&sql).execute(&mut *tx).await.unwrap();
    }
    for m in resq_postgres::MIGRATIONS.iter().filter(|m| m.version <= version) {
        sqlx::Executor::execute(&mut *tx, m.sql).await.unwrap();
        sqlx::query(&format!(
            "INSERT INTO \"{schema}\".resq_migrations (version, name) VALUES ($1, $2)"
        ))
        .bind(m.version)
        .bind(m.name)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(backend.schema_version().await.unwrap(), Some(version));
    Some(backend)
}

/// Upgrades `backend` from schema version `from`: `migrate` applies every
/// later migration, in order, and leaves the latest version. Returns the
/// versions applied.
async fn upgrade(backend: &PostgresBackend, from: i32) -> Vec<i32> {
    let later: Vec<i32> = resq_postgres::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .filter(|v| *v > from)
        .collect();
    let applied = backend.migrate().await.unwrap();
    assert_eq!(applied, later);
    assert_eq!(backend.schema_version().await.unwrap(), Some(latest_version()));
    applied
}

/// Migration 7 gives every delayed item a due time in milliseconds: items
/// written before it (and items an older resq still writes without one,
/// during a rolling upgrade) fall due with their bucket, items scheduled
/// for a time fall due at that time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_four_upgrades_with_delayed_items() {
    use resq_core::time::{bucket_due_ms, delayed_bucket_of_ms};
    use resq_core::DelayedStore;
    // What `migrate` did before version 7 existed: versions 1 to 4.
    let Some(backend) = at_version("version_four_upgrades_with_delayed_items", 4).await else {
        return;
    };
    let schema = backend.schema().to_owned();
    // An item as version 4's code scheduled it: a bucket, no due time.
    let old_insert = format!(
        "INSERT INTO \"{schema}\".delayed (ts, payload, digest) \
         VALUES ($1, $2, sha256(convert_to($2, 'UTF8')))"
    );
    let bucket = 4_102_444_805_i64;
    sqlx::query(&old_insert)
        .bind(bucket)
        .bind(r#"{"class":"a","queue":"q","args":[1]}"#)
        .execute(backend.pool())
        .await
        .unwrap();

    // Every migration after 4 runs, 7 (the due times) among them.
    assert!(upgrade(&backend, 4).await.contains(&7));
    assert_eq!(backend.next_due_ms().await.unwrap(), Some(bucket_due_ms(bucket)));
    // An older process, still running, writes without a due time: the
    // trigger gives it its bucket's.
    sqlx::query(&old_insert)
        .bind(bucket - 2)
        .bind(r#"{"class":"a","queue":"q","args":[2]}"#)
        .execute(backend.pool())
        .await
        .unwrap();
    assert_eq!(backend.next_due_ms().await.unwrap(), Some(bucket_due_ms(bucket - 2)));
    // This build's items are due at their own time, in their bucket.
    let at = bucket_due_ms(bucket - 2) - 700;
    assert!(backend
        .schedule_ms(at, r#"{"class":"a","queue":"q","args":[3]}"#)
        .await
        .unwrap());
    assert_eq!(backend.next_due_ms().await.unwrap(), Some(at));
    // It shares bucket `bucket - 2` with the older item, due before it.
    assert_eq!(delayed_bucket_of_ms(at), bucket - 2);
    assert_eq!(backend.delayed_timestamps().await.unwrap(), vec![bucket - 2, bucket]);
    assert!(backend.promote_due_ms(at - 1, 10).await.unwrap().is_empty());
    assert_eq!(backend.promote_due_ms(at, 10).await.unwrap().len(), 1);
    assert!(backend
        .promote_due_ms(bucket_due_ms(bucket - 2) - 1, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        backend.promote_due_ms(bucket_due_ms(bucket), 10).await.unwrap().len(),
        2
    );
    let args: Vec<String> = backend.queue_range("q", 0, -1).await.unwrap();
    assert_eq!(
        args,
        [3, 2, 1].map(|i| format!(r#"{{"class":"a","queue":"q","args":[{i}]}}"#))
    );
    // The extremes of bigint saturate as `bucket_due_ms` does.
    for ts in [i64::MAX, i64::MIN] {
        sqlx::query(&old_insert)
            .bind(ts)
            .bind(format!("extreme {ts}"))
            .execute(backend.pool())
            .await
            .unwrap();
        let (due,): (i64,) = sqlx::query_as(&format!("SELECT due_ms FROM \"{schema}\".delayed WHERE ts = $1"))
            .bind(ts)
            .fetch_one(backend.pool())
            .await
            .unwrap();
        assert_eq!(due, bucket_due_ms(ts));
    }
    testing::drop_test_schema(&backend).await.unwrap();
    backend.close().await.unwrap();
}

/// A schema at version 7 (concurrency slots as `queue_slots` rows) with a
/// job running in a capped queue's slot: after the upgrade the running job
/// still holds its slot (`working.cap_slot`), so the cap stays full until
/// it completes; then the slot is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_seven_upgrade_keeps_held_slots() {
    let Some(backend) = at_version("version_seven_upgrade_keeps_held_slots", 7).await else {
        return;
    };
    backend
        .set_queue_limits("c", resq_core::QueueLimits::new().concurrency(1))
        .await
        .unwrap();
    backend.push("c", "first").await.unwrap();
    backend.push("c", "second").await.unwrap();
    let queues = vec!["c".to_owned()];
    let old = WorkerId::new("host:1+1", &queues);
    let other = WorkerId::new("host:1+2", &queues);
    // Claimed by version 7's function: it holds slot 1 of `queue_slots`.
    assert!(backend.claim(&old, &queues, "t").await.unwrap().is_some());

    upgrade(&backend, 7).await;
    assert_eq!(
        backend.claim(&other, &queues, "t").await.unwrap(),
        None,
        "the running job keeps its slot across the upgrade"
    );
    backend.complete(&old, resq_core::Outcome::Success).await.unwrap();
    let next = backend.claim(&other, &queues, "t").await.unwrap().unwrap();
    assert_eq!(next.payload, "second");
    testing::drop_test_schema(&backend).await.unwrap();
    backend.close().await.unwrap();
}

/// A schema at version 9 with a job claimed by version 9's batch round:
/// after the upgrade, the single-slot round (`resq_complete_and_claim_one`,
/// version 10) records that job's outcome and claims the next, and writes
/// what the batch round writes for every outcome, with and without
/// flow-control limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_nine_upgrade_then_single_slot_rounds() {
    let Some(backend) = at_version("version_nine_upgrade_then_single_slot_rounds", 9).await else {
        return;
    };
    let queues = vec!["a".to_owned(), "b".to_owned()];
    let me = WorkerId::new("host:1", &queues);
    let one = std::slice::from_ref(&me);
    for (q, p) in [("b", "b1"), ("a", "a1"), ("a", "a2"), ("b", "b2")] {
        backend.push(q, p).await.unwrap();
    }
    // Claimed by version 9's function.
    let first = backend.claim_batch(one, &queues, "t").await.unwrap();
    assert_eq!(first[0].1.payload, "a1");

    upgrade(&backend, 9).await;

    let round = |outcome: resq_core::Outcome| {
        let backend = backend.clone();
        let me = me.clone();
        let queues = queues.clone();
        async move {
            backend
                .complete_and_claim_batch(&[(me.clone(), outcome)], std::slice::from_ref(&me), &queues, "t2")
                .await
                .unwrap()
                .unwrap()
        }
    };
    // Success: the next job in priority order, the row updated in place.
    let got = round(resq_core::Outcome::Success).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].0, got[0].1.queue.as_str(), got[0].1.payload.as_str()),
        (0, "a", "a2")
    );
    assert!(got[0].1.enqueued_at_ms.is_some());
    let on = backend.working_on(&me).await.unwrap().unwrap();
    assert_eq!(
        (on.queue.as_str(), on.payload.as_str(), on.run_at.as_str()),
        ("a", "a2", "t2")
    );
    // Failure: the entry in the failed list, then the other queue's head.
    let got = round(resq_core::Outcome::Failure { entry: "E1".into() }).await;
    assert_eq!(got[0].1.payload, "b1");
    assert_eq!(
        resq_core::FailedStore::failed_range(&*backend, 0, -1).await.unwrap(),
        vec!["E1"]
    );
    // Discard: no counter moves.
    let got = round(resq_core::Outcome::Discard).await;
    assert_eq!(got[0].1.payload, "b2");
    // Nothing left: the working-on row goes.
    let got = round(resq_core::Outcome::Success).await;
    assert!(got.is_empty());
    assert_eq!(backend.working_on(&me).await.unwrap(), None);
    for (key, n) in [
        ("processed", 2),
        ("processed:host:1", 2),
        ("failed", 1),
        ("failed:host:1", 1),
    ] {
        assert_eq!(backend.stat(key).await.unwrap(), n, "{key}");
    }

    // A capped queue: the round is the batch round's, slot included.
    backend
        .set_queue_limits("a", resq_core::QueueLimits::new().concurrency(1))
        .await
        .unwrap();
    for p in ["c1", "c2", "c3"] {
        backend.push("a", p).await.unwrap();
    }
    let other = WorkerId::new("host:2", &queues);
    assert_eq!(backend.claim_batch(one, &queues, "t").await.unwrap()[0].1.payload, "c1");
    assert!(
        backend
            .claim_batch(std::slice::from_ref(&other), &queues, "t")
            .await
            .unwrap()
            .is_empty(),
        "the cap is full"
    );
    let got = round(resq_core::Outcome::Success).await;
    assert_eq!(got[0].1.payload, "c2", "the finished job's slot is the next one's");
    assert!(backend
        .claim_batch(std::slice::from_ref(&other), &queues, "t")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(backend.stat("processed").await.unwrap(), 3);
    testing::drop_test_schema(&backend).await.unwrap();
    backend.close().await.unwrap();
}
