//! Connection exhaustion: a server that refuses new connections ("too many
//! connections for role", the same SQLSTATE 53300 as "too many clients")
//! is reported in the server's own words and as transient, not as a bare
//! pool timeout. The shared server's `max_connections` is never exhausted:
//! each test creates its own role with a `CONNECTION LIMIT` and drops it.

mod common;

use resq_core::backend::QueueStore;
use resq_core::Backend as _;
use resq_core::BackendErrorKind;
use resq_postgres::testing;
use sqlx::{Connection, Executor, PgConnection};
use std::time::Duration;

/// A login role limited to `limit` connections, dropped on `drop_role`.
struct LimitedRole {
    admin: PgConnection,
    name: String,
}

impl LimitedRole {
    async fn create(test: &str, limit: u32) -> Option<LimitedRole> {
        let mut admin = match PgConnection::connect(&testing::url()).await {
            Ok(c) => c,
            Err(e) => {
                common::skip(test, &format!("PostgreSQL is unreachable: {e}"));
                return None;
            }
        };
        let name = format!("resq_exh_{}_{}", std::process::id(), rand_suffix());
        admin
            .execute(format!("CREATE ROLE \"{name}\" LOGIN CONNECTION LIMIT {limit}").as_str())
            .await
            .expect("create the test role");
        Some(LimitedRole { admin, name })
    }

    async fn drop_role(mut self) {
        // Close the role's sessions first, or DROP ROLE refuses.
        terminate_sessions(&self.name).await;
        // Revokes what a test granted it (it owns nothing).
        self.admin
            .execute(format!("DROP OWNED BY \"{}\"", self.name).as_str())
            .await
            .expect("revoke the test role's privileges");
        self.admin
            .execute(format!("DROP ROLE IF EXISTS \"{}\"", self.name).as_str())
            .await
            .expect("drop the test role");
    }
}

/// A suffix no other role of this process gets: a counter (two tests made
/// the same name from the clock alone once, in the same nanosecond as far
/// as the clock could tell) and the clock (against a leftover role of an
/// earlier process with the same id).
fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}_{nanos}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Runs `test` with a role limited to `limit` connections, and drops the
/// role afterwards even when `test` panics.
async fn with_role<F, Fut>(name: &str, limit: u32, test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Some(role) = LimitedRole::create(name, limit).await else {
        return;
    };
    let outcome = tokio::spawn(test(role.name.clone())).await;
    role.drop_role().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The test URL with `role` as the user, plus `params`.
fn role_url(role: &str, params: &str) -> String {
    let mut url = url::Url::parse(&testing::url()).unwrap();
    url.set_username(role).unwrap();
    let sep = if url.query().is_some() { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

/// Closes every session of `role` (from an admin connection).
async fn terminate_sessions(role: &str) {
    let mut admin = PgConnection::connect(&testing::url()).await.unwrap();
    admin
        .execute(format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'").as_str())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// With the role's only connection taken, connecting times out in the pool;
/// the error says what the server said and is transient. A backend that
/// was connected before reports the same on its calls.
#[tokio::test]
async fn exhaustion_reports_the_servers_reason() {
    with_role("exhaustion_reports_the_servers_reason", 1, |role| async move {
        let holder = PgConnection::connect(&role_url(&role, ""))
            .await
            .expect("the one allowed connection");
        let started = std::time::Instant::now();
        let e = resq_postgres::connect(&role_url(&role, "acquire_timeout_ms=2000"))
            .await
            .expect_err("the role has no connection left");
        let text = e.to_string();
        assert_eq!(e.backend_kind(), Some(BackendErrorKind::Transient), "{text}");
        assert!(
            text.contains("too many connections for role"),
            "the server's reason is kept: {text}"
        );
        assert!(std::error::Error::source(&e).is_some(), "{text}");
        assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());

        // A backend connected before the exhaustion: its connection is
        // dropped, and another session takes the slot.
        holder.close().await.unwrap();
        let backend = resq_postgres::connect(&role_url(&role, "acquire_timeout_ms=2000&max_connections=1"))
            .await
            .expect("a connection is free again");
        let _ = backend.queue_len("q").await;
        terminate_sessions(&role).await;
        let _holder = PgConnection::connect(&role_url(&role, ""))
            .await
            .expect("the slot again");
        let mut last = String::new();
        for _ in 0..3 {
            // The first call may still meet the dropped connection.
            let e = backend.queue_len("q").await.expect_err("no connection for the role");
            assert_eq!(e.backend_kind(), Some(BackendErrorKind::Transient), "{e}");
            last = e.to_string();
        }
        assert!(last.contains("too many connections for role"), "{last}");
    })
    .await;
}

/// Takes all `limit` connections of `role` away from everyone else: closes
/// the other sessions of the role and connects in their place, until it
/// holds them all (others, such as a pool, may reconnect in between).
async fn take_all(role: &str, limit: usize) -> Vec<PgConnection> {
    let mut admin = PgConnection::connect(&testing::url()).await.unwrap();
    let mut held: Vec<PgConnection> = Vec::new();
    let mut pids: Vec<i32> = Vec::new();
    for _ in 0..200 {
        if held.len() == limit {
            return held;
        }
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND NOT (pid = ANY($2))",
        )
        .bind(role)
        .bind(&pids)
        .execute(&mut admin)
        .await
        .unwrap();
        if let Ok(mut c) = PgConnection::connect(&role_url(role, "")).await {
            let (pid,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
                .fetch_one(&mut c)
                .await
                .unwrap();
            pids.push(pid);
            held.push(c);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("could not take the role's {limit} connections");
}

/// A worker whose backend cannot get a connection still stops promptly on
/// shutdown: at start-up (registering) and while running (claiming,
/// unregistering), no call holds the shutdown for the pool's 30 s acquire
/// timeout (or five of them). A scheduler stops as promptly.
#[tokio::test]
async fn exhausted_workers_stop_promptly() {
    with_role("exhausted_workers_stop_promptly", 2, |role| async move {
        use resq_core::{task::Tasks, Worker, WorkerConfig};
        use std::sync::Arc;
        use tokio_util::sync::CancellationToken;
        let schema = testing::unique_schema();
        let admin = resq_postgres::connect(&format!("{}?schema={schema}&migrate=true", testing::url()))
            .await
            .unwrap();
        for what in [
            "USAGE ON SCHEMA",
            "ALL ON ALL TABLES IN SCHEMA",
            "ALL ON ALL SEQUENCES IN SCHEMA",
            "EXECUTE ON ALL FUNCTIONS IN SCHEMA",
        ] {
            sqlx::query(&format!("GRANT {what} \"{schema}\" TO \"{role}\""))
                .execute(admin.pool())
                .await
                .unwrap();
        }
        let url = role_url(
            &role,
            &format!("schema={schema}&max_connections=1&acquire_timeout_ms=30000"),
        );
        let mut config = WorkerConfig::for_queues(["q"]);
        config.poll_interval = Duration::from_millis(500);

        // Running, then the server refuses the role's connections.
        let backend = resq_postgres::connect(&url).await.unwrap();
        let worker = Worker::new(
            backend.clone() as Arc<dyn resq_core::Backend>,
            Arc::new(Tasks::new()),
            config.clone(),
        );
        let stop = CancellationToken::new();
        let run = tokio::spawn({
            let stop = stop.clone();
            async move { worker.run_until(stop).await }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        let held = take_all(&role, 2).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let t = std::time::Instant::now();
        stop.cancel();
        let ran = tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .expect("the worker stops");
        let running_stop = t.elapsed();
        eprintln!("running worker: {ran:?} after {running_stop:?}");
        assert!(matches!(ran, Ok(Ok(_)) | Ok(Err(_))), "{ran:?}");

        // Starting while the server refuses them.
        let worker = Worker::new(
            backend.clone() as Arc<dyn resq_core::Backend>,
            Arc::new(Tasks::new()),
            config,
        );
        let stop = CancellationToken::new();
        let run = tokio::spawn({
            let stop = stop.clone();
            async move { worker.run_until(stop).await }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        let t = std::time::Instant::now();
        stop.cancel();
        let ran = tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .expect("the worker stops");
        let starting_stop = t.elapsed();
        eprintln!("starting worker: {ran:?} after {starting_stop:?}");
        // A scheduler too.
        let scheduler = resq_core::Scheduler::new(
            backend.clone() as Arc<dyn resq_core::Backend>,
            resq_core::SchedulerConfig::default(),
        )
        .unwrap();
        let stop = CancellationToken::new();
        let run = tokio::spawn({
            let stop = stop.clone();
            async move { scheduler.run_until(stop).await }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        let t = std::time::Instant::now();
        stop.cancel();
        let ran = tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .expect("the scheduler stops");
        let scheduler_stop = t.elapsed();
        eprintln!("scheduler: {ran:?} after {scheduler_stop:?}");
        drop(held);
        backend.close().await.unwrap();
        testing::drop_test_schema(&admin).await.unwrap();
        // The unregistration gives up after 10 s; the pool's timeout is 30 s.
        assert!(
            running_stop < Duration::from_secs(20),
            "a running worker took {running_stop:?} to stop"
        );
        assert!(
            starting_stop < Duration::from_secs(20),
            "a starting worker took {starting_stop:?} to stop"
        );
        assert!(
            scheduler_stop < Duration::from_secs(20),
            "a scheduler took {scheduler_stop:?} to stop"
        );
    })
    .await;
}

/// Pooled connections left unused for `idle_timeout_ms` go back to the
/// server; `idle_timeout_ms=0` keeps them; the default is one minute.
#[tokio::test]
async fn idle_connections_are_released() {
    let Some(probe) = common::backend("idle_connections_are_released").await else {
        return;
    };
    probe.close().await.unwrap();
    use resq_postgres::{PostgresConfig, DEFAULT_IDLE_TIMEOUT};
    assert_eq!(
        PostgresConfig::from_url("postgres://h/d").unwrap().idle_timeout,
        Some(DEFAULT_IDLE_TIMEOUT)
    );
    assert_eq!(
        PostgresConfig::from_url("postgres://h/d?idle_timeout_ms=0")
            .unwrap()
            .idle_timeout,
        None
    );
    assert!(PostgresConfig::from_url("postgres://h/d?idle_timeout_ms=soon").is_err());
    let busy = |backend: std::sync::Arc<resq_postgres::PostgresBackend>| async move {
        // Four calls at once open four connections.
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let b = backend.clone();
                tokio::spawn(async move {
                    sqlx::query("SELECT pg_sleep(0.3)").execute(b.pool()).await.unwrap();
                })
            })
            .collect();
        for c in calls {
            c.await.unwrap();
        }
        assert!(backend.pool().size() >= 2, "{}", backend.pool().size());
    };
    let url = |params: &str| format!("{}?max_connections=4&{params}", testing::url());
    let released = resq_postgres::connect(&url("idle_timeout_ms=500")).await.unwrap();
    let kept = resq_postgres::connect(&url("idle_timeout_ms=0")).await.unwrap();
    busy(released.clone()).await;
    busy(kept.clone()).await;
    let mut size = released.pool().size();
    for _ in 0..50 {
        if size == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        size = released.pool().size();
    }
    assert_eq!(size, 0, "idle connections are closed after idle_timeout_ms");
    assert!(kept.pool().size() >= 2, "without an idle timeout they stay");
    released.close().await.unwrap();
    kept.close().await.unwrap();
}
