//! resq is a background-job engine for Rust with Resque's data model:
//! normal, delayed and periodic jobs on named queues worked in priority
//! order, failed-job management, worker registries, and a scheduler with
//! leader election. This facade crate re-exports the engine
//! ([`resq_core`]) and picks a storage backend from a URL with
//! [`connect`]; each backend is a Cargo feature (`memory`, the default,
//! `redis` and `postgres`). The feature `admin` adds `resq::admin`, the
//! administration API (`resq-admin`) that CLIs, metrics and dashboards use.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> resq::Result<()> {
//! let backend = resq::connect("memory://").await?;
//! let queue = resq::Queue::new(backend);
//! queue.enqueue("default", "sayHello", ("world",)).await?;
//! assert_eq!(queue.length("default").await?, 1);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub use resq_core::*;

#[cfg(feature = "memory")]
pub use resq_memory as memory;

#[cfg(feature = "redis")]
pub use resq_redis as redis;

#[cfg(feature = "postgres")]
pub use resq_postgres as postgres;

#[cfg(feature = "admin")]
pub use resq_admin as admin;

/// Prometheus metrics: [`resq_metrics`], behind the feature `metrics`.
#[cfg(feature = "metrics")]
pub use resq_metrics as metrics;

/// The embedded web dashboard: [`resq_web`], behind the feature `web`.
#[cfg(feature = "web")]
pub use resq_web as web;

use std::sync::Arc;

/// Opens the backend a task server config names (`config.backend`) and
/// builds the node on it (see [`TaskServer`]).
///
/// ```
/// # async fn demo() -> resq::Result<()> {
/// use resq::{TaskServerConfig, Tasks};
/// use std::sync::Arc;
///
/// let config = TaskServerConfig::from_toml_str("backend = \"memory://\"\nscheduler = true")?;
/// let server = resq::task_server(config, Arc::new(Tasks::new())).await?;
/// assert!(server.scheduler().is_some() && server.pool().is_none());
/// # Ok(()) }
/// ```
pub async fn task_server(config: TaskServerConfig, tasks: Arc<Tasks>) -> Result<TaskServer> {
    let backend = connect(&config.backend).await?;
    TaskServer::new(backend, tasks, config)
}

/// The first pause of [`connect_until`] after a failed attempt; it doubles
/// up to [`CONNECT_RETRY_MAX`].
pub const CONNECT_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(200);

/// The longest pause of [`connect_until`] between attempts.
pub const CONNECT_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// [`connect`], retried while the backend cannot be reached, until `stop`
/// is cancelled: for processes that start while the server is down,
/// restarting, or out of connections (PostgreSQL's `max_connections`, a
/// role's `CONNECTION LIMIT`, Redis's `maxclients`).
///
/// A transient error (see [`Error::is_transient`]) is logged (the first at
/// ERROR with the server's reason, the following at WARN) and retried after
/// a pause that doubles from [`CONNECT_RETRY_FIRST`] to
/// [`CONNECT_RETRY_MAX`]. Any other error (a bad URL, refused credentials)
/// is returned at once. Returns `Ok(None)` as soon as `stop` is cancelled,
/// also in the middle of an attempt.
///
/// ```
/// # async fn demo() -> resq::Result<()> {
/// let stop = resq::CancellationToken::new();
/// let backend = resq::connect_until("memory://", &stop).await?.expect("not stopped");
/// # Ok(()) }
/// ```
pub async fn connect_until(url: &str, stop: &CancellationToken) -> Result<Option<Arc<dyn Backend>>> {
    let shown = resq_core::error::redact_url(url);
    let mut pause = CONNECT_RETRY_FIRST;
    let mut attempt = 0u32;
    loop {
        let result = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(None),
            r = connect(url) => r,
        };
        let e = match result {
            Ok(backend) => {
                if attempt > 0 {
                    tracing::info!(target: "resq::connect", url = %shown, attempts = attempt + 1, "connected");
                }
                return Ok(Some(backend));
            }
            Err(e) if e.is_transient() => e,
            Err(e) => return Err(e),
        };
        attempt += 1;
        if attempt == 1 {
            tracing::error!(target: "resq::connect", url = %shown, error = %e, retry_in = ?pause, "cannot connect to the backend; retrying with backoff until it answers or shutdown");
        } else {
            tracing::warn!(target: "resq::connect", url = %shown, error = %e, attempt, retry_in = ?pause, "still cannot connect to the backend");
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(CONNECT_RETRY_MAX);
    }
}

/// [`task_server`] with the connect retried as [`connect_until`] does:
/// `Ok(None)` when `stop` is cancelled before the backend answered. Pass
/// the same token (or one cancelled by the same signal) to
/// [`TaskServer::run_until`], so a shutdown during start-up and one
/// during the run both stop the process promptly.
pub async fn task_server_until(
    config: TaskServerConfig,
    tasks: Arc<Tasks>,
    stop: &CancellationToken,
) -> Result<Option<TaskServer>> {
    match connect_until(&config.backend, stop).await? {
        Some(backend) => TaskServer::new(backend, tasks, config).map(Some),
        None => Ok(None),
    }
}

/// Opens the backend a URL names:
///
/// | URL | backend | feature |
/// |---|---|---|
/// | `memory://` | in-process | `memory` (default) |
/// | `memory:///path/to/file` | in-process, persisted to a snapshot file | `memory` |
/// | `redis://…`, `rediss://…` | Redis | `redis` |
/// | `redis+cluster://host:port,host:port/?namespace={resque}`, `rediss+cluster://…` | Redis Cluster, one slot | `redis` |
/// | `redis+cluster://host:port,…/?namespace=resque&shards=N` | Redis Cluster, queues over `N` slots ([`resq_redis::ShardedRedis`]) | `redis` |
/// | `postgres://…`, `postgresql://…` | PostgreSQL | `postgres` |
///
/// A malformed URL, an unknown scheme, or a scheme whose feature is not
/// compiled in is an [`Error::InvalidUrl`] that says which.
pub async fn connect(url: &str) -> Result<Arc<dyn Backend>> {
    let invalid = |reason: String| Error::InvalidUrl {
        url: resq_core::error::redact_url(url),
        reason,
    };
    // A cluster URL lists several `host:port`s, which no URL parser takes.
    if matches!(url.split_once("://"), Some(("redis+cluster" | "rediss+cluster", _))) {
        return connect_redis(url).await;
    }
    let parsed = ::url::Url::parse(url).map_err(|e| invalid(format!("not a valid URL: {e}")))?;
    match parsed.scheme() {
        "memory" => connect_memory(url).await,
        "redis" | "rediss" => connect_redis(url).await,
        "postgres" | "postgresql" => connect_postgres(url).await,
        other => Err(invalid(format!(
            "unknown scheme `{other}`: use memory://, redis://, rediss://, redis+cluster://, rediss+cluster://, postgres:// or postgresql://"
        ))),
    }
}

#[cfg(feature = "memory")]
async fn connect_memory(url: &str) -> Result<Arc<dyn Backend>> {
    let backend: Arc<dyn Backend> = resq_memory::connect(url).await?;
    Ok(backend)
}

#[cfg(not(feature = "memory"))]
async fn connect_memory(url: &str) -> Result<Arc<dyn Backend>> {
    Err(Error::InvalidUrl {
        url: resq_core::error::redact_url(url),
        reason: "the memory backend is not compiled in: enable resq's `memory` feature".into(),
    })
}

#[cfg(feature = "redis")]
async fn connect_redis(url: &str) -> Result<Arc<dyn Backend>> {
    resq_redis::connect_backend(url).await
}

#[cfg(not(feature = "redis"))]
async fn connect_redis(url: &str) -> Result<Arc<dyn Backend>> {
    Err(Error::InvalidUrl {
        url: resq_core::error::redact_url(url),
        reason: unavailable("redis", "Redis"),
    })
}

#[cfg(feature = "postgres")]
async fn connect_postgres(url: &str) -> Result<Arc<dyn Backend>> {
    let backend: Arc<dyn Backend> = resq_postgres::connect(url).await?;
    Ok(backend)
}

#[cfg(not(feature = "postgres"))]
async fn connect_postgres(url: &str) -> Result<Arc<dyn Backend>> {
    Err(Error::InvalidUrl {
        url: resq_core::error::redact_url(url),
        reason: unavailable("postgres", "PostgreSQL"),
    })
}

/// Why a backend's scheme cannot be used: its feature is not compiled in.
#[cfg(not(all(feature = "redis", feature = "postgres")))]
fn unavailable(feature: &str, name: &str) -> String {
    format!("the {name} backend is not compiled in: enable resq's `{feature}` feature")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn err(url: &str) -> String {
        match connect(url).await {
            Ok(_) => panic!("{url} connected"),
            Err(e) => e.to_string(),
        }
    }

    /// The README's Rust examples need only `resq` and `tokio`: whatever
    /// else they use comes through `resq` (`resq::CancellationToken`,
    /// `resq::serde_json`), so no other crate must be added to use them.
    #[test]
    fn readme_examples_need_only_resq_and_tokio() {
        let readme = include_str!("../README.md");
        let mut in_rust = false;
        for line in readme.lines() {
            if line.starts_with("```") {
                in_rust = line.starts_with("```rust");
                continue;
            }
            if !in_rust {
                continue;
            }
            for other in ["tokio_util", "serde_json::", "serde::"] {
                let bare = line.contains(other) && !line.contains(&format!("resq::{other}"));
                assert!(!bare, "README example line needs another crate ({other}): {line}");
            }
        }
        // The re-exports are the ones the README uses.
        let _token: CancellationToken = CancellationToken::new();
        let _inputs: serde_json::Value = serde_json::json!({"to": "evan@example.com"});
    }

    #[tokio::test]
    async fn urls_pick_backends_or_explain() {
        assert!(connect("memory://").await.is_ok());
        assert!(err("not a url").await.contains("not a valid URL"));
        assert!(err("ftp://x").await.contains("unknown scheme `ftp`"));
        if cfg!(not(feature = "redis")) {
            let redis = err("redis://127.0.0.1:6379").await;
            assert!(redis.contains("`redis` feature"), "{redis}");
        }
        if cfg!(not(feature = "postgres")) {
            let pg = err("postgresql://postgres@127.0.0.1/test").await;
            assert!(pg.contains("`postgres` feature"), "{pg}");
        }
        // A cluster URL (several host:port, which no URL parser takes)
        // reaches the Redis backend, which checks its namespace first.
        let cluster = err("redis+cluster://127.0.0.1:1,127.0.0.1:2/?namespace=plain").await;
        if cfg!(feature = "redis") {
            assert!(cluster.contains("hash tag"), "{cluster}");
        } else {
            assert!(cluster.contains("`redis` feature"), "{cluster}");
        }
        // Sharded mode is a cluster's: refused on a single server's URL,
        // and its base namespace takes no braces.
        for (url, why) in [
            ("redis://127.0.0.1:1/?shards=3", "redis+cluster://"),
            ("redis+cluster://127.0.0.1:1/?shards=3&namespace={x}", "without { or }"),
        ] {
            let e = err(url).await;
            if cfg!(feature = "redis") {
                assert!(e.contains(why), "{url}: {e}");
            } else {
                assert!(e.contains("`redis` feature"), "{url}: {e}");
            }
        }
    }
}

/// The README's examples, compiled as doc tests so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
