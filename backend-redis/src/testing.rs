//! Test support: fresh backends in unique namespaces for the conformance
//! suite and for interoperability tests.

use crate::conn::Conn;
use crate::keys::Keys;
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

/// The environment variable naming the test cluster.
pub const CLUSTER_URL_ENV: &str = "RESQ_REDIS_CLUSTER_URL";

/// The test cluster used when [`CLUSTER_URL_ENV`] is unset: the one
/// `ops/redis-cluster.sh start` runs.
pub const DEFAULT_CLUSTER_URL: &str = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002";

/// The test cluster's URL.
pub fn cluster_url() -> String {
    std::env::var(CLUSTER_URL_ENV).unwrap_or_else(|_| DEFAULT_CLUSTER_URL.to_owned())
}

/// A namespace no other test uses, as a hash tag (`{resq-test:…}`, see
/// [`unique_namespace`]): each test's keys share one slot, and the tests
/// spread over the cluster's primaries.
pub fn unique_cluster_namespace() -> String {
    format!("{{{}}}", unique_namespace())
}

/// Connects to the test cluster in a fresh hash-tagged namespace whose keys
/// are deleted when the backend is dropped. `Err` says why the cluster is
/// unreachable.
pub async fn fresh_cluster_redis() -> Result<RedisBackend, String> {
    let mut config = RedisConfig::from_url(&cluster_url()).map_err(|e| e.to_string())?;
    config.namespace = unique_cluster_namespace();
    config.connection_timeout = std::time::Duration::from_secs(2);
    let mut backend = RedisBackend::connect(config)
        .await
        .map_err(|e| format!("the Redis Cluster at {} is unreachable: {e}", cluster_url()))?;
    backend.cleanup_on_drop = true;
    Ok(backend)
}

/// [`fresh_cluster_redis`] as the conformance suite's factory.
pub async fn fresh_cluster_backend() -> Result<Arc<dyn Backend>, String> {
    Ok(Arc::new(fresh_cluster_redis().await?))
}

/// How many shards [`fresh_sharded_backend`] spreads its namespace over.
pub const TEST_SHARDS: u32 = 3;

/// Connects to the test cluster in a fresh sharded namespace
/// ([`TEST_SHARDS`] shards, base [`unique_namespace`]) whose shards' keys
/// are all deleted when it is dropped. `Err` says why the cluster is
/// unreachable.
pub async fn fresh_sharded_redis() -> Result<crate::ShardedRedis, String> {
    sharded_redis_in(&unique_namespace(), TEST_SHARDS).await
}

/// Connects to the test cluster in the sharded namespace `base` with
/// `shards` shards, deleting every shard's keys when dropped (test
/// namespaces only). `Err` says why it could not connect.
pub async fn sharded_redis_in(base: &str, shards: u32) -> Result<crate::ShardedRedis, String> {
    let mut config = RedisConfig::from_url(&cluster_url()).map_err(|e| e.to_string())?;
    config.namespace = base.to_owned();
    config.shards = Some(shards);
    config.connection_timeout = std::time::Duration::from_secs(2);
    crate::ShardedRedis::connect_with(config, true).await.map_err(|e| {
        format!(
            "the Redis Cluster at {} refused a sharded namespace: {e}",
            cluster_url()
        )
    })
}

/// [`fresh_sharded_redis`] as the conformance suite's factory.
pub async fn fresh_sharded_backend() -> Result<Arc<dyn Backend>, String> {
    Ok(Arc::new(fresh_sharded_redis().await?))
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

/// Deletes the keys matching `pattern` on a Redis Cluster over a blocking
/// connection: `SCAN` and `DEL` both go to the primary owning the slot of
/// `key` (the namespace's).
pub(crate) fn delete_cluster_keys_blocking(
    cluster: &redis::cluster::ClusterClient,
    key: &str,
    pattern: &str,
) -> redis::RedisResult<()> {
    use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
    let mut conn = cluster.get_connection()?;
    let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
        key,
        SlotAddr::Master,
    )));
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000);
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::from_redis_value(conn.route_command(&scan, route.clone())?)?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    for chunk in keys.chunks(500) {
        let mut del = redis::cmd("DEL");
        del.arg(chunk);
        conn.route_command(&del, route.clone())?;
    }
    Ok(())
}

/// A connection of its own for tests that read or write raw keys of a
/// namespace; on a cluster every command goes to the namespace's slot, as
/// the backend's own do.
pub struct RawConnection(Conn);

impl redis::aio::ConnectionLike for RawConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.0.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

/// Opens a [`RawConnection`] with `config`'s server or cluster and namespace.
pub async fn raw_connection(config: &RedisConfig) -> redis::RedisResult<RawConnection> {
    if config.is_cluster() {
        let cluster = redis::cluster::ClusterClientBuilder::new(config.cluster_nodes.iter().map(String::as_str))
            .connection_timeout(config.connection_timeout)
            .response_timeout(config.response_timeout)
            .build()?;
        let conn = cluster.get_async_connection().await?;
        Ok(RawConnection(Conn::cluster(
            conn,
            &Keys::new(&config.namespace).key(""),
        )))
    } else {
        let client = redis::Client::open(config.url.as_str())?;
        Ok(RawConnection(Conn::Single(client.get_connection_manager().await?)))
    }
}

/// The `host:port` of each seed node of a cluster URL's config, comma-separated
/// (what `interop/nr.js` reads from `REDIS_CLUSTER_NODES`).
pub fn cluster_host_ports(config: &RedisConfig) -> String {
    config
        .cluster_nodes
        .iter()
        .filter_map(|n| {
            let u = url::Url::parse(n).ok()?;
            Some(format!("{}:{}", u.host_str()?, u.port().unwrap_or(6379)))
        })
        .collect::<Vec<_>>()
        .join(",")
}
