//! Test support: fresh backends in unique namespaces for the conformance
//! suite and for interoperability tests.

use crate::{RedisBackend, RedisConfig};
use resq_core::Backend;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The environment variable naming the test server.
pub const URL_ENV: &str = "RESQ_REDIS_URL";

/// The test server used when [`URL_ENV`] is unset.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

static NEXT: AtomicU64 = AtomicU64::new(0);

/// The test server's URL.
pub fn server_url() -> String {
    std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A namespace no other test uses: `resq-test:<pid>:<n>:<nanos>`.
pub fn unique_namespace() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "resq-test:{}:{}:{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Connects to the test server in a fresh namespace whose keys are deleted
/// when the backend is dropped. `Err` says why the server is unreachable.
pub async fn fresh_redis() -> Result<RedisBackend, String> {
    let mut config = RedisConfig::from_url(&server_url()).map_err(|e| e.to_string())?;
    config.namespace = unique_namespace();
    config.connection_timeout = std::time::Duration::from_secs(2);
    let mut backend = RedisBackend::connect(config)
        .await
        .map_err(|e| format!("Redis at {} is unreachable: {e}", server_url()))?;
    backend.cleanup_on_drop = true;
    Ok(backend)
}

/// [`fresh_redis`] as the conformance suite's factory.
pub async fn fresh_backend() -> Result<Arc<dyn Backend>, String> {
    Ok(Arc::new(fresh_redis().await?))
}

/// Deletes the keys matching `pattern` over a blocking connection.
pub(crate) fn delete_keys_blocking(client: &redis::Client, pattern: &str) -> redis::RedisResult<()> {
    let mut conn = client.get_connection_with_timeout(std::time::Duration::from_secs(2))?;
    // Keys as bytes (tests write keys that are not UTF-8 too), by an
    // explicit SCAN loop.
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut conn)?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    for chunk in keys.chunks(500) {
        redis::cmd("DEL").arg(chunk).exec(&mut conn)?;
    }
    Ok(())
}
