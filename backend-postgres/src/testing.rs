//! Test support: fresh, isolated backends for the conformance suite and
//! this crate's tests.
//!
//! Each backend gets a schema of its own, named
//! `resq_test_<unix secs>_<host tag>_<pid>_<n>`. Creating and dropping a
//! schema costs a few hundred milliseconds of DDL, which the conformance
//! suite (with its 256-case model) would pay hundreds of times, so a
//! schema is recycled within the process: `close()` closes the backend's
//! pool (no call of it can write any more) and hands the schema on, and the
//! next [`fresh_backend`] empties its tables and uses it. A schema whose
//! backend is dropped without `close()` (a failed test) is not reused.
//!
//! Nothing is dropped that this code did not create: on the first call in
//! a process, schemas with the test prefix are dropped when they are older
//! than an hour, or when they were made on this host by a process that no
//! longer runs (Linux only). The server is `RESQ_POSTGRES_URL`, by default
//! [`DEFAULT_URL`].
//!
//! The pools are small (4 connections, plus 1 for a listener once a test
//! waits for jobs) and at most [`MAX_LIVE`] test backends are alive at once
//! in a process, so a test run stays well under PostgreSQL's default
//! `max_connections` of 100.

use crate::{PostgresBackend, PostgresConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{OnceCell, Semaphore, SemaphorePermit};

/// The variable naming the test server.
pub const URL_ENV: &str = "RESQ_POSTGRES_URL";

/// The test server when [`URL_ENV`] is unset.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The prefix of every test schema.
pub const SCHEMA_PREFIX: &str = "resq_test_";

/// The most test backends alive at once in one process.
pub const MAX_LIVE: usize = 12;

/// Pool size of a test backend.
const TEST_MAX_CONNECTIONS: u32 = 4;

/// Test schemas older than this are dropped as leftovers.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// Every table a reused schema is emptied of.
const TABLES: &[&str] = &[
    "jobs",
    "queues",
    "working",
    "delayed",
    "failed",
    "workers",
    "pings",
    "stats",
    "locks",
    "leader",
    "paused_queues",
    "queue_limits",
    "task_flow",
    "task_slots",
];

static LIVE: Semaphore = Semaphore::const_new(MAX_LIVE);
static SWEPT: OnceCell<()> = OnceCell::const_new();
/// Whether the server answered this process's first connection attempt.
static REACHABLE: OnceCell<Result<(), String>> = OnceCell::const_new();
static COUNTER: AtomicU64 = AtomicU64::new(0);
/// Migrated test schemas whose backends were closed, ready for reuse.
static IDLE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The test server's URL.
pub fn url() -> String {
    std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A unique, new schema name for a test.
pub fn unique_schema() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{SCHEMA_PREFIX}{}_{}_{}_{n}",
        unix_secs(),
        host_tag(),
        std::process::id()
    )
}

/// A test configuration for `schema` on the test server (not migrated on
/// connect, `synchronous_commit` off), or why the URL cannot be used.
pub fn config(schema: &str) -> Result<PostgresConfig, String> {
    let mut url = url::Url::parse(&url()).map_err(|e| format!("{URL_ENV} is not a valid URL: {e}"))?;
    // Test data need not survive a crash: do not wait for the WAL flush.
    url.query_pairs_mut().append_pair("options[synchronous_commit]", "off");
    let config = PostgresConfig::from_url(url.as_str()).map_err(|e| e.to_string())?;
    Ok(config
        .schema(schema)
        .max_connections(TEST_MAX_CONNECTIONS)
        .acquire_timeout(Duration::from_secs(20))
        .statement_timeout(Some(Duration::from_secs(30)))
        .migrate_on_connect(false))
}

/// A fresh, migrated, empty backend in a schema no other live backend
/// uses, or why PostgreSQL is unreachable. Close it with `close()` so its
/// schema can be reused.
pub async fn fresh_postgres() -> Result<Arc<PostgresBackend>, String> {
    let permit = LIVE.acquire().await.map_err(|e| format!("test backend limit: {e}"))?;
    let reused = lock_idle().pop();
    let schema = reused.clone().unwrap_or_else(unique_schema);
    let config = config(&schema)?;
    let shown = crate::config::redact(&config.url);
    REACHABLE
        .get_or_init(|| probe(&config))
        .await
        .clone()
        .map_err(|e| format!("PostgreSQL at {shown} is unreachable: {e}"))?;
    let backend = PostgresBackend::connect_with(config)
        .await
        .map_err(|e| format!("PostgreSQL at {shown} is unreachable: {e}"))?;
    SWEPT
        .get_or_init(|| async { drop_leftover_schemas(backend.pool()).await })
        .await;
    if reused.is_some() {
        empty_schema(&backend)
            .await
            .map_err(|e| format!("emptying test schema {schema} failed: {e}"))?;
    } else {
        backend
            .migrate()
            .await
            .map_err(|e| format!("migrating test schema {schema} failed: {e}"))?;
    }
    let guard = TestGuard {
        schema,
        _permit: permit,
    };
    match backend.test_guard.lock() {
        Ok(mut g) => *g = Some(guard),
        Err(poisoned) => *poisoned.into_inner() = Some(guard),
    }
    Ok(backend)
}

/// One direct connection attempt, bounded to a few seconds: a pool would
/// retry until its acquire timeout, making every test wait that long
/// before it skips.
async fn probe(config: &PostgresConfig) -> Result<(), String> {
    use sqlx::Connection;
    let options = config.resolve().map_err(|e| e.to_string())?.options;
    match tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect_with(&options)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5 s".into()),
    }
}

/// [`fresh_postgres`] as the `Arc<dyn Backend>` the conformance suite takes.
pub async fn fresh_backend() -> Result<Arc<dyn resq_core::Backend>, String> {
    let backend = fresh_postgres().await?;
    Ok(backend)
}

/// Drops `backend`'s schema if it is a test schema (see [`SCHEMA_PREFIX`]);
/// for tests that made their own with [`unique_schema`] and [`config`].
pub async fn drop_test_schema(backend: &PostgresBackend) -> resq_core::Result<()> {
    let schema = backend.schema();
    if !schema.starts_with(SCHEMA_PREFIX) {
        return Err(resq_core::Error::InvalidArgument(format!(
            "{schema:?} is not a test schema"
        )));
    }
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(backend.pool())
        .await
        .map_err(crate::error::db)?;
    Ok(())
}

/// A test backend's schema and its slot among the [`MAX_LIVE`] (freed when
/// the guard is dropped, with or without `close()`).
pub(crate) struct TestGuard {
    schema: String,
    _permit: SemaphorePermit<'static>,
}

impl TestGuard {
    /// Called by `close()` once the pool is closed (`closed`: every
    /// connection came back, so nothing can write to the schema any more):
    /// the schema becomes reusable.
    pub(crate) fn release(self, closed: bool) {
        if closed {
            lock_idle().push(self.schema);
        }
    }
}

fn lock_idle() -> std::sync::MutexGuard<'static, Vec<String>> {
    match IDLE.lock() {
        Ok(idle) => idle,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Deletes every row of a reused schema's tables.
async fn empty_schema(backend: &PostgresBackend) -> resq_core::Result<()> {
    let quoted = &backend.names.quoted;
    let sql: String = TABLES.iter().map(|t| format!("DELETE FROM {quoted}.{t};")).collect();
    sqlx::Executor::execute(backend.pool(), sql.as_str())
        .await
        .map_err(crate::error::db)?;
    Ok(())
}

fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A short tag for this host, so that liveness checks by process id only
/// judge this host's schemas.
fn host_tag() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default();
    let mut hash: u32 = 0x811c_9dc5;
    for b in host.trim().bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{hash:08x}")
}

/// Whether process `pid` of this host is gone (`false` when unknown).
fn process_gone(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    } else {
        false
    }
}

/// Whether the test schema `name` is a leftover: older than
/// [`STALE_AFTER`], or made on this host by a process that has ended.
fn is_leftover(name: &str, now: u64, host: &str) -> bool {
    let Some(rest) = name.strip_prefix(SCHEMA_PREFIX) else {
        return false;
    };
    let mut parts = rest.split('_');
    let (Some(secs), Some(tag), Some(pid)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(secs) = secs.parse::<u64>() else {
        return false;
    };
    if now.saturating_sub(secs) >= STALE_AFTER.as_secs() {
        return true;
    }
    tag == host
        && pid
            .parse::<u32>()
            .is_ok_and(|p| p != std::process::id() && process_gone(p))
}

/// Drops leftover test schemas (see [`is_leftover`]); best effort.
async fn drop_leftover_schemas(pool: &sqlx::PgPool) {
    let listed: Result<Vec<(String,)>, _> =
        sqlx::query_as("SELECT nspname::text FROM pg_catalog.pg_namespace WHERE starts_with(nspname, $1)")
            .bind(SCHEMA_PREFIX)
            .fetch_all(pool)
            .await;
    let names = match listed {
        Ok(names) => names,
        Err(e) => {
            tracing::warn!(target: "resq::postgres", error = %e, "cannot list leftover test schemas");
            return;
        }
    };
    let (now, host) = (unix_secs(), host_tag());
    for (name,) in names {
        if !is_leftover(&name, now, &host) || crate::names::schema_problem(&name).is_some() {
            continue;
        }
        let sql = format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
        if let Err(e) = sqlx::query(&sql).execute(pool).await {
            tracing::warn!(target: "resq::postgres", schema = %name, error = %e, "cannot drop leftover test schema");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers() {
        let host = host_tag();
        let me = std::process::id();
        let now = unix_secs();
        let fresh_mine = format!("{SCHEMA_PREFIX}{now}_{host}_{me}_1");
        assert!(!is_leftover(&fresh_mine, now, &host));
        let old = format!("{SCHEMA_PREFIX}{}_{host}_{me}_1", now - 7200);
        assert!(is_leftover(&old, now, &host));
        let other_host = format!("{SCHEMA_PREFIX}{now}_ffffffff_999999999_1");
        assert!(!is_leftover(&other_host, now, "00000000"));
        assert!(!is_leftover("resq", now, &host));
        assert!(!is_leftover(&format!("{SCHEMA_PREFIX}x"), now, &host));
        assert!(unique_schema().len() <= crate::names::MAX_SCHEMA_LEN);
        assert_eq!(crate::names::schema_problem(&unique_schema()), None);
    }
}
