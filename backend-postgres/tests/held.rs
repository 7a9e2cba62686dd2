//! Connections held out of the pool for the hot path (`resq_postgres`'s
//! `held` module): one whose call failed is never used again, the stash
//! leaves half of the pool to other callers, and `close()` does not wait
//! for held connections.

mod common;

use resq_core::backend::Backend;
use resq_core::{Outcome, QueueStore, WorkerId, WorkerRegistry};
use resq_postgres::PostgresBackend;
use std::time::{Duration, Instant};

/// Terminates the server processes, other than the caller's, whose last
/// statement contains `needle`, waiting until they are gone; returns how
/// many.
async fn kill_sessions(backend: &PostgresBackend, needle: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity \
         WHERE pid <> pg_backend_pid() AND datname = current_database() AND strpos(query, $1) > 0",
    )
    .bind(needle)
    .fetch_one(backend.pool())
    .await
    .unwrap();
    n
}

/// The text every push statement of `backend` holds, and no other
/// statement of any other schema.
fn push_needle(backend: &PostgresBackend) -> String {
    format!(
        "INSERT INTO \"{}\".jobs (queue, payload) SELECT $1::text",
        backend.schema()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_connection_whose_call_failed_is_not_reused() {
    let Some(backend) = common::backend("a_held_connection_whose_call_failed_is_not_reused").await else {
        return;
    };
    assert!(
        backend.held_cap() > 0,
        "the test pool is large enough to hold connections"
    );
    backend.push("q", "a").await.unwrap();
    assert_eq!(backend.held_connections(), 1, "a push holds its connection");

    // The held connection dies while idle: its next call fails...
    assert_eq!(kill_sessions(&backend, &push_needle(&backend)).await, 1);
    let failed = backend.push("q", "b").await;
    assert!(failed.is_err(), "a push on a killed connection cannot succeed");
    assert_eq!(
        backend.held_connections(),
        0,
        "a connection whose call failed is not held"
    );

    // ...and the one after it runs on another connection.
    backend.push("q", "c").await.unwrap();
    assert_eq!(backend.held_connections(), 1);
    assert_eq!(backend.queue_range("q", 0, -1).await.unwrap(), vec!["a", "c"]);

    // The same for a worker's round.
    let me = WorkerId::new("host:1", &["q".to_owned()]);
    let claimed = backend
        .claim_batch(std::slice::from_ref(&me), &["q".into()], "t")
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    // (One slot: `claim_batch` runs the plain claim.)
    let needle = format!("FROM \"{}\".resq_claim(", backend.schema());
    assert_eq!(kill_sessions(&backend, &needle).await, 1);
    let round = backend
        .complete_and_claim_batch(
            &[(me.clone(), Outcome::Success)],
            std::slice::from_ref(&me),
            &["q".into()],
            "t",
        )
        .await;
    assert!(round.is_err(), "a round on a killed connection cannot succeed");
    assert_eq!(backend.held_connections(), 0);
    let again = backend
        .complete_and_claim_batch(
            &[(me.clone(), Outcome::Success)],
            std::slice::from_ref(&me),
            &["q".into()],
            "t",
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.len(), 1, "the second job is claimed");
    assert_eq!(again[0].1.payload, "c");
    assert_eq!(resq_core::StatsStore::stat(&*backend, "processed").await.unwrap(), 1);
    backend.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_does_not_leave_its_connection_held() {
    let Some(backend) = common::backend("a_cancelled_call_does_not_leave_its_connection_held").await else {
        return;
    };
    backend.push("q", "a").await.unwrap();
    backend.push("q", "b").await.unwrap();
    let me = WorkerId::new("host:1", &["q".to_owned()]);
    backend
        .claim_batch(std::slice::from_ref(&me), &["q".into()], "t")
        .await
        .unwrap();
    // Another transaction holds the `processed` counter's row (creating it
    // first), so the round's completion waits for it.
    resq_core::StatsStore::incr_stat(&*backend, "processed", 0)
        .await
        .unwrap();
    let mut blocker = backend.pool().begin().await.unwrap();
    sqlx::query(&format!(
        "SELECT 1 FROM \"{}\".stats WHERE key = 'processed' FOR UPDATE",
        backend.schema()
    ))
    .execute(&mut *blocker)
    .await
    .unwrap();
    let round = tokio::time::timeout(
        Duration::from_millis(300),
        backend.complete_and_claim_batch(
            &[(me.clone(), Outcome::Success)],
            std::slice::from_ref(&me),
            &["q".into()],
            "t",
        ),
    )
    .await;
    assert!(round.is_err(), "the round waits for the counter's row");
    assert_eq!(
        backend.held_connections(),
        0,
        "a connection whose call was abandoned mid-statement is not held"
    );
    blocker.rollback().await.unwrap();
    // The abandoned statement still ran on the server; later calls do not
    // see its answer on their connection.
    let started = Instant::now();
    loop {
        let on = backend.working_on(&me).await.unwrap();
        if on.as_ref().is_some_and(|o| o.payload == "b") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the abandoned round never committed: {on:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(resq_core::StatsStore::stat(&*backend, "processed").await.unwrap(), 1);
    backend.push("q", "c").await.unwrap();
    assert_eq!(backend.queue_range("q", 0, -1).await.unwrap(), vec!["c"]);
    backend.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_connections_leave_half_of_the_pool_and_close_at_once() {
    let Some(backend) = common::backend("held_connections_leave_half_of_the_pool_and_close_at_once").await else {
        return;
    };
    let max = backend.config().max_connections as usize;
    assert_eq!(backend.held_cap(), max / 2);
    // As many pushes at once as the pool has connections, a few times.
    for round in 0..5 {
        let pushes: Vec<_> = (0..max)
            .map(|i| {
                let b = backend.clone();
                tokio::spawn(async move { b.push("q", &format!("{round}-{i}")).await })
            })
            .collect();
        for p in pushes {
            p.await.unwrap().unwrap();
        }
        assert!(backend.held_connections() <= backend.held_cap());
    }
    assert_eq!(backend.queue_len("q").await.unwrap(), (5 * max) as u64);
    assert!(backend.held_connections() > 0);
    // Everything the stash does not hold is still the pool's to lend.
    let mut others = Vec::new();
    for _ in 0..max - backend.held_connections() {
        others.push(
            tokio::time::timeout(Duration::from_secs(5), backend.pool().acquire())
                .await
                .expect("a pool connection within 5 s")
                .unwrap(),
        );
    }
    drop(others);
    let started = Instant::now();
    backend.close().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "close() waited {:?} for held connections",
        started.elapsed()
    );
    assert_eq!(backend.held_connections(), 0);
    assert!(backend.pool().is_closed());
    assert!(
        backend.push("q", "late").await.is_err(),
        "a closed backend refuses calls"
    );
    assert_eq!(backend.held_connections(), 0);
}
