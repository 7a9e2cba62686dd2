//! resq is a background-job engine for Rust with Resque's data model:
//! normal, delayed and periodic jobs on named queues worked in priority
//! order, failed-job management, worker registries, and a scheduler with
//! leader election. This facade crate re-exports the engine
//! ([`resq_core`]) and picks a storage backend from a URL with
//! [`connect`]; each backend is a Cargo feature (`memory`, the default,
//! `redis` and `postgres`).
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

/// Opens the backend a URL names:
///
/// | URL | backend | feature |
/// |---|---|---|
/// | `memory://` | in-process | `memory` (default) |
/// | `memory:///path/to/file` | in-process, persisted to a snapshot file | `memory` |
/// | `redis://…`, `rediss://…` | Redis | `redis` |
/// | `postgres://…`, `postgresql://…` | PostgreSQL | `postgres` |
///
/// A malformed URL, an unknown scheme, or a scheme whose feature is not
/// compiled in is an [`Error::InvalidUrl`] that says which.
pub async fn connect(url: &str) -> Result<Arc<dyn Backend>> {
    let invalid = |reason: String| Error::InvalidUrl {
        url: resq_core::error::redact_url(url),
        reason,
    };
    let parsed = ::url::Url::parse(url).map_err(|e| invalid(format!("not a valid URL: {e}")))?;
    match parsed.scheme() {
        "memory" => connect_memory(url).await,
        "redis" | "rediss" => connect_redis(url).await,
        "postgres" | "postgresql" => connect_postgres(url).await,
        other => Err(invalid(format!(
            "unknown scheme `{other}`: use memory://, redis://, rediss://, postgres:// or postgresql://"
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
    let backend: Arc<dyn Backend> = resq_redis::connect(url).await?;
    Ok(backend)
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
    }
}

/// The README's examples, compiled as doc tests so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
