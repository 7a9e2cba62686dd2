//! Connection loss: killed pool connections make calls fail (never panic)
//! and then recover; a killed listener reconnects and wakes waiters again.

mod common;

use resq_core::backend::Backend;
use resq_core::QueueStore;
use resq_postgres::PostgresBackend;
use std::time::{Duration, Instant};

/// Terminates the server processes whose current or last statement
/// mentions `needle`, except the caller's own; returns how many.
async fn kill_sessions(backend: &PostgresBackend, needle: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE pid <> pg_backend_pid() AND datname = current_database() AND strpos(query, $1) > 0",
    )
    .bind(needle)
    .fetch_one(backend.pool())
    .await
    .unwrap();
    n
}

/// The server process ids of listeners on `channel` (`LISTEN "<channel>"`,
/// with a `;` after a reconnection).
async fn listener_pids(backend: &PostgresBackend, channel: &str) -> Vec<i32> {
    let rows: Vec<(i32,)> =
        sqlx::query_as("SELECT pid FROM pg_stat_activity WHERE starts_with(query, $1) ORDER BY pid")
            .bind(format!("LISTEN \"{channel}\""))
            .fetch_all(backend.pool())
            .await
            .unwrap();
    rows.into_iter().map(|(p,)| p).collect()
}

/// Polls `cond` for up to `limit`.
async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_pool_connections_fail_calls_then_recover() {
    let Some(backend) = common::backend("killed_pool_connections_fail_calls_then_recover").await else {
        return;
    };
    let q = ["q".to_owned()];
    backend.push("q", "before").await.unwrap();
    let schema = format!("\"{}\"", backend.schema());
    // The pool's connections last ran statements naming the schema.
    assert!(kill_sessions(&backend, &schema).await >= 1);
    let mut pushed = 1;
    let mut failures = 0;
    for i in 0..20 {
        match backend.push("q", &format!("after-{i}")).await {
            Ok(()) => pushed += 1,
            Err(e) => {
                // A killed session (57P01) or a dropped connection is transient.
                assert!(e.is_transient(), "{e}");
                failures += 1;
            }
        }
    }
    assert!(failures <= 4, "{failures} of 20 calls failed after the kill");
    assert_eq!(backend.queue_len("q").await.unwrap(), pushed);
    assert!(backend.wait_for_jobs(&q, Duration::from_millis(50)).await.is_ok());
    backend.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_listener_reconnects_and_wakes_again() {
    let Some(backend) = common::backend("killed_listener_reconnects_and_wakes_again").await else {
        return;
    };
    let channel = backend.channel().to_owned();
    let q = vec!["wake".to_owned()];
    // The first wait starts the listener.
    backend.wait_for_jobs(&q, Duration::from_millis(100)).await.unwrap();
    let started = eventually(Duration::from_secs(10), || {
        let (b, c) = (backend.clone(), channel.clone());
        async move { listener_pids(&b, &c).await.len() == 1 }
    })
    .await;
    assert!(started, "no listener on {channel}");
    let old = listener_pids(&backend, &channel).await;
    assert_eq!(kill_sessions(&backend, &format!("LISTEN \"{channel}\"")).await, 1);
    let back = eventually(Duration::from_secs(15), || {
        let (b, c, old) = (backend.clone(), channel.clone(), old.clone());
        async move {
            let now = listener_pids(&b, &c).await;
            now.len() == 1 && now != old
        }
    })
    .await;
    assert!(back, "the listener did not reconnect");

    let waiter = {
        let (backend, q) = (backend.clone(), q.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            backend.wait_for_jobs(&q, Duration::from_secs(10)).await.unwrap();
            start.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    backend.push("wake", "x").await.unwrap();
    let waited = waiter.await.unwrap();
    assert!(
        waited < Duration::from_secs(5),
        "not woken after the reconnect: {waited:?}"
    );
    backend.close().await.unwrap();
}
