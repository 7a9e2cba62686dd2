//! resq-redis is resq's Redis backend. It implements the engine's
//! [`Backend`] trait on Resque's own key layout and JSON formats, so resq
//! workers, schedulers and clients share one Redis with node-resque, Ruby
//! resque and resque-scheduler without corrupting either side: the same
//! queue lists and `queues` set, `delayed:<secs>` buckets with the
//! `delayed_queue_schedule` zset and `timestamps:<json>` sets, `stat:*`
//! counters, worker registry keys, the `failed` list and the
//! `resque_scheduler_leader_lock`. Every multi-step operation is one Lua
//! script or `MULTI` transaction, and payload bytes are never re-encoded.
//!
//! ```no_run
//! # async fn demo() -> resq_core::Result<()> {
//! let backend = resq_redis::connect("redis://127.0.0.1:6379/0?namespace=resque").await?;
//! let queue = resq_core::Queue::new(backend);
//! queue.enqueue("math", "add", (1, 2)).await?;
//! # Ok(()) }
//! ```
//!
//! # Compatibility notes
//!
//! * Writes node-resque's bytes (`{"class","queue","args"}`), reads any
//!   client's. Delayed-job lookups probe node-resque's and
//!   resque-scheduler's encodings.
//! * Working-on records keep the job's original bytes (node-resque's own
//!   script re-encodes them through `cjson`) and include `worker`.
//! * Pings are node-resque's `worker:ping:<name>` JSON with an extra
//!   `time_ms` field for millisecond precision.
//! * Idle workers wake at once for jobs that resq producers push (they
//!   publish on `<ns>:resq:wakeup`); jobs from other clients are found at
//!   the next poll.
//! * `locks()` lists node-resque's plugin lock keys, `lock:*` and
//!   `workerslock:*`.

#![warn(missing_docs)]

mod cancel;
mod config;
mod conn;
mod delayed;
pub mod doctor;
mod failed;
mod flow;
mod keys;
mod leader;
mod lock;
mod queue;
mod scripts;
pub mod shard;
mod stats;
pub mod testing;
mod wake;
mod worker;

pub use config::{hash_tag, shard_namespace, RedisConfig, DEFAULT_CLUSTER_NAMESPACE, DEFAULT_NAMESPACE, MAX_SHARDS};
pub use shard::{fnv1a_64, ShardedRedis};

use async_trait::async_trait;
use conn::Conn;
use keys::Keys;
use redis::aio::ConnectionManagerConfig;
use resq_core::{Backend, BackendErrorKind, Error, Result};
use std::sync::Arc;
use wake::Wakeups;

/// resq's Redis backend; see the [crate documentation](crate).
pub struct RedisBackend {
    conn: Conn,
    keys: Keys,
    wakeups: Wakeups,
    config: RedisConfig,
    /// Delete every key of the namespace when dropped (test namespaces only).
    cleanup_on_drop: bool,
    client: redis::Client,
    /// The cluster's client, on a Redis Cluster.
    cluster: Option<redis::cluster::ClusterClient>,
    /// The last probe for a refusal of new connections: when, and what the
    /// server said.
    last_refusal: tokio::sync::Mutex<Option<(std::time::Instant, Option<String>)>>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("namespace", &self.config.namespace)
            .finish()
    }
}

/// Connects to the Redis server a `redis://` or `rediss://` URL names, or
/// to the Redis Cluster a `redis+cluster://` or `rediss+cluster://` URL
/// names (see [`RedisConfig`] for resq's parameters, such as `namespace`).
/// A sharded URL (`shards=N`) is refused: use [`connect_backend`] or
/// [`ShardedRedis::connect`].
pub async fn connect(url: &str) -> Result<Arc<RedisBackend>> {
    RedisBackend::connect(RedisConfig::from_url(url)?).await.map(Arc::new)
}

/// Connects to what `url` names, as [`connect`] does, and also to a
/// sharded namespace on a Redis Cluster (`redis+cluster://…/?shards=N`,
/// a [`ShardedRedis`]): the backend the engine holds, either way.
pub async fn connect_backend(url: &str) -> Result<Arc<dyn Backend>> {
    let config = RedisConfig::from_url(url)?;
    if config.is_sharded() {
        Ok(Arc::new(ShardedRedis::connect(config).await?))
    } else {
        Ok(Arc::new(RedisBackend::connect(config).await?))
    }
}

/// Maps a redis-rs error to [`Error::Backend`], keeping it as the source and
/// the server's message in the text, classified by [`classify`].
pub(crate) fn be(e: redis::RedisError) -> Error {
    Error::backend_with(classify(&e), format!("redis: {e}"), e)
}

/// The text of bytes read from Redis: themselves when they are UTF-8, else
/// their lossless escape ([`resq_core::failed::escape_bytes`]), which no
/// JSON decoder accepts, so a bad payload shows as undecodable, never as
/// another job.
pub(crate) fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| resq_core::failed::escape_bytes(e.as_bytes()))
}

/// The members of the set `key` that are UTF-8; the others (another
/// client's) are skipped with a log line naming the key and the member escaped.
pub(crate) fn utf8_members(key: &str, members: Vec<Vec<u8>>) -> Vec<String> {
    members
        .into_iter()
        .filter_map(|m| match String::from_utf8(m) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(target: "resq::redis", key, member = %resq_core::failed::escape_bytes(e.as_bytes()),
                    "skipping a set member that is not valid UTF-8");
                None
            }
        })
        .collect()
}

/// Like [`be`], naming the key the command was about, so that an error
/// about stored data (a key of the wrong type, a value that is not a
/// number) says where it is.
pub(crate) fn be_at(key: &str) -> impl FnOnce(redis::RedisError) -> Error + '_ {
    move |e| Error::backend_with(classify(&e), format!("redis: {e} (key {key})"), e)
}

/// Server error codes that go away by themselves: a busy, loading,
/// failing-over or out-of-memory server, a script to load again.
const TRANSIENT_CODES: &[&str] = &[
    "TRYAGAIN",
    "LOADING",
    "BUSY",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "READONLY",
    "MISCONF",
    "OOM",
    "NOSCRIPT",
    "NOREPLICAS",
    // A cluster's redirects, as the server sends them and as redis-rs
    // names them inside an aborted transaction: the slot is moving (a
    // failover, a resharding); the next try goes to its new owner.
    "MOVED",
    "ASK",
    "Moved",
    "Ask",
    "TryAgain",
    "ClusterDown",
];

/// Whether a Redis error may go away by itself.
///
/// Transient: I/O errors (connection refused, reset, broken pipe, EOF),
/// timeouts, protocol parse errors (the connection is replaced), the
/// server codes `TRYAGAIN`, `LOADING`, `BUSY`, `MASTERDOWN`, `CLUSTERDOWN`,
/// `READONLY`, `MISCONF`, `OOM`, `NOSCRIPT`, `NOREPLICAS`, a cluster's
/// `MOVED` and `ASK` redirects (also inside an aborted transaction), and
/// `ERR max number of clients reached`. Permanent: everything else the server refuses (`NOAUTH`,
/// `WRONGPASS`, `NOPERM`, `WRONGTYPE`, script errors, other `ERR`s), a
/// failed authentication, and replies of an unexpected type.
pub fn classify(e: &redis::RedisError) -> BackendErrorKind {
    use redis::ErrorKind as K;
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return BackendErrorKind::Transient;
    }
    if e.is_cluster_error() || matches!(e.kind(), K::Io | K::Parse | K::ClusterConnectionNotFound) {
        return BackendErrorKind::Transient;
    }
    let text = e.to_string();
    let code = e.code().unwrap_or("");
    let transient_code = TRANSIENT_CODES.iter().any(|c| {
        *c == code || text.starts_with(c) || text.contains(&format!("{c}:")) || text.contains(&format!("- {c} "))
    });
    if transient_code || text.contains("max number of clients reached") {
        BackendErrorKind::Transient
    } else {
        BackendErrorKind::Permanent
    }
}

/// How long [`server_refusal`] waits for the server's greeting.
const REFUSAL_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Maps a failed connect like [`be`], with the server's own reason when it
/// refused the connection. A server at its `maxclients` (or in protected
/// mode) writes an error reply as soon as it accepts a connection, then
/// closes it; redis-rs then reports only the reset or broken pipe its
/// first command meets. So after an I/O error this opens one plain TCP
/// connection and reads what the server says unasked.
pub(crate) async fn explain_connect_error(config: &RedisConfig, e: redis::RedisError) -> Error {
    if !is_connection_error(&e) {
        return be(e);
    }
    let refusal = server_refusal(&config.url, config.connection_timeout).await;
    refused(refusal, e)
}

/// An error of the connection rather than of the command.
fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// `e` mapped like [`be`], with the server's `refusal` of new connections
/// in the message when there is one.
fn refused(refusal: Option<String>, e: redis::RedisError) -> Error {
    match refusal {
        Some(reason) => {
            // A full server clears by itself; anything else it refuses
            // every client with (protected mode) needs someone to act.
            let kind = if reason.contains("max number of clients reached") {
                BackendErrorKind::Transient
            } else {
                BackendErrorKind::Permanent
            };
            Error::backend_with(
                kind,
                format!("redis: {e}; the server refuses new connections: {reason}"),
                e,
            )
        }
        None => be(e),
    }
}

/// How long one probe of [`server_refusal`] answers for the connection
/// errors that follow, so a failing connection does not flood the server
/// with probes.
const REFUSAL_REUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// `redis` results mapped to resq errors, with the server's refusal of new
/// connections explained (see [`explain_connect_error`]).
pub(crate) trait RedisResult<T> {
    /// Maps the error as [`be`] does; after a connection error (the shared
    /// connection is reconnecting), says why the server refuses it, if it
    /// does.
    fn rd(self, backend: &RedisBackend) -> impl std::future::Future<Output = Result<T>> + Send;

    /// Like [`RedisResult::rd`], naming `key` in an error that is not the
    /// connection's (as [`be_at`] does).
    fn rd_at(self, backend: &RedisBackend, key: &str) -> impl std::future::Future<Output = Result<T>> + Send;
}

impl<T: Send> RedisResult<T> for std::result::Result<T, redis::RedisError> {
    async fn rd(self, backend: &RedisBackend) -> Result<T> {
        match self {
            Ok(v) => Ok(v),
            Err(e) => Err(backend.explain(e).await),
        }
    }

    async fn rd_at(self, backend: &RedisBackend, key: &str) -> Result<T> {
        match self {
            Ok(v) => Ok(v),
            Err(e) if is_connection_error(&e) => Err(backend.explain(e).await),
            Err(e) => Err(be_at(key)(e)),
        }
    }
}

/// The error reply a Redis server sends unasked on a new connection, if
/// any (plain `redis://` TCP URLs only; TLS and Unix sockets are not
/// probed).
async fn server_refusal(url: &str, connect_timeout: std::time::Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let parsed = url::Url::parse(url).ok()?;
    if parsed.scheme() != "redis" {
        return None;
    }
    let host = parsed
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed.port().unwrap_or(6379);
    let mut stream = tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect((host.as_str(), port)))
        .await
        .ok()?
        .ok()?;
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(REFUSAL_READ_TIMEOUT, stream.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let reply = String::from_utf8_lossy(&buf[..n]);
    let line = reply.lines().next()?.strip_prefix('-')?.trim();
    (!line.is_empty()).then(|| line.to_owned())
}

/// The URL error of a URL that redis-rs refuses.
fn invalid_url(config: &RedisConfig, e: redis::RedisError) -> Error {
    Error::InvalidUrl {
        url: resq_core::error::redact_url(&config.url),
        reason: e.to_string(),
    }
}

/// The cluster client of a cluster config (not connected yet).
pub(crate) fn cluster_client(config: &RedisConfig) -> Result<redis::cluster::ClusterClient> {
    let mut builder = redis::cluster::ClusterClientBuilder::new(config.cluster_nodes.iter().map(String::as_str))
        .connection_timeout(config.connection_timeout)
        .response_timeout(config.response_timeout)
        .retries(4)
        .max_retry_wait(1000);
    if let Some(certs) = config.tls.load(&config.url)? {
        builder = builder.certs(certs);
    }
    builder.build().map_err(|e| invalid_url(config, e))
}

/// A client of the server at `url` (the config's own URL, or one of its
/// cluster nodes), with the config's TLS files when it names any.
pub(crate) fn open_client(config: &RedisConfig, url: &str) -> Result<redis::Client> {
    match config.tls.load(url)? {
        Some(certs) => redis::Client::build_with_tls(url, certs),
        None => redis::Client::open(url),
    }
    .map_err(|e| invalid_url(config, e))
}

impl RedisBackend {
    /// Connects with explicit settings. The connection reconnects by itself
    /// after a failure; commands issued while Redis is down return errors,
    /// which workers and schedulers log before backing off and retrying.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        if config.is_sharded() {
            return Err(Error::InvalidArgument(
                "a sharded namespace (shards=N) is several backends: connect it with resq_redis::connect_backend or ShardedRedis::connect".into(),
            ));
        }
        let client = open_client(&config, &config.url)?;
        let keys = Keys::new(&config.namespace);
        if config.is_cluster() {
            let cluster = cluster_client(&config)?;
            let conn = match cluster.get_async_connection().await {
                Ok(conn) => conn,
                Err(e) => return Err(explain_connect_error(&config, e).await),
            };
            return Self::on_cluster(config, cluster, conn);
        }
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(config.response_timeout))
            .set_connection_timeout(Some(config.connection_timeout))
            .set_number_of_retries(2)
            .set_max_delay(std::time::Duration::from_secs(2));
        let conn = match client.get_connection_manager_with_config(manager_config).await {
            Ok(conn) => conn,
            Err(e) => return Err(explain_connect_error(&config, e).await),
        };
        let wakeups = Wakeups::new(vec![client.clone()], keys.wakeup_channel(), keys.cancel_channel());
        Ok(RedisBackend {
            conn: Conn::Single(conn),
            keys,
            wakeups,
            config,
            cleanup_on_drop: false,
            client,
            cluster: None,
            last_refusal: tokio::sync::Mutex::new(None),
        })
    }

    /// A backend on a Redis Cluster over an existing cluster connection
    /// (`conn`, of `cluster`), in `config`'s hash-tagged namespace: what
    /// [`RedisBackend::connect`] builds after connecting, and what each
    /// shard of a [`ShardedRedis`] is (the shards share one connection).
    pub(crate) fn on_cluster(
        config: RedisConfig,
        cluster: redis::cluster::ClusterClient,
        conn: redis::cluster_async::ClusterConnection,
    ) -> Result<Self> {
        if config::hash_tag(&config.namespace).is_none() {
            return Err(Error::InvalidArgument(format!(
                "on a Redis Cluster the namespace must hold a hash tag (such as {{resque}}); got {:?}",
                config.namespace
            )));
        }
        let client = open_client(&config, &config.url)?;
        let keys = Keys::new(&config.namespace);
        // Pub/sub messages reach every node of a cluster: the subscriber
        // may listen on any of them, the next one after a disconnect.
        let subscribers = config
            .cluster_nodes
            .iter()
            .map(|n| open_client(&config, n))
            .collect::<Result<Vec<_>>>()?;
        let wakeups = Wakeups::new(subscribers, keys.wakeup_channel(), keys.cancel_channel());
        Ok(RedisBackend {
            conn: Conn::cluster(conn, &keys.key("")),
            keys,
            wakeups,
            config,
            cleanup_on_drop: false,
            client,
            cluster: Some(cluster),
            last_refusal: tokio::sync::Mutex::new(None),
        })
    }

    /// Maps `e` as [`be`] does; a connection error is explained with the
    /// server's refusal of new connections, probed at most once a second.
    pub(crate) async fn explain(&self, e: redis::RedisError) -> Error {
        if !is_connection_error(&e) {
            return be(e);
        }
        let mut last = self.last_refusal.lock().await;
        let refusal = match last.as_ref() {
            Some((at, refusal)) if at.elapsed() < REFUSAL_REUSE => refusal.clone(),
            _ => {
                let refusal = server_refusal(&self.config.url, self.config.connection_timeout).await;
                *last = Some((std::time::Instant::now(), refusal.clone()));
                refusal
            }
        };
        drop(last);
        refused(refusal, e)
    }

    /// The settings in use.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Whether this backend is connected to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// A handle on the shared, self-reconnecting connection (on a cluster,
    /// one that sends every command to the namespace's slot).
    pub(crate) fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// Collects every key matching `pattern` with `SCAN`, as bytes.
    async fn scan_raw(&self, pattern: &str) -> Result<Vec<Vec<u8>>> {
        let mut conn = self.conn();
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .rd(self)
                .await?;
            out.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Collects every key matching `pattern` with `SCAN`. A key that is not
    /// UTF-8 (another client's) is skipped with a log line naming it escaped.
    pub(crate) async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        Ok(self
            .scan_raw(pattern)
            .await?
            .into_iter()
            .filter_map(|k| match String::from_utf8(k) {
                Ok(k) => Some(k),
                Err(e) => {
                    tracing::warn!(target: "resq::redis", key = %resq_core::failed::escape_bytes(e.as_bytes()),
                        "skipping a key that is not valid UTF-8");
                    None
                }
            })
            .collect())
    }

    /// Every key matching `pattern` with its string value as bytes (`None`
    /// for a key that vanished or is not a string), by `SCAN` then one
    /// `MGET`. Keys that are not UTF-8 are skipped as in [`Self::scan`].
    pub(crate) async fn scan_values(&self, pattern: &str) -> Result<Vec<(String, Option<Vec<u8>>)>> {
        let keys = self.scan(pattern).await?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.conn())
            .await
            .rd(self)
            .await?;
        Ok(keys.into_iter().zip(values).collect())
    }

    /// Deletes every key of this backend's namespace. Refuses the empty
    /// namespace, which would mean the whole database.
    pub async fn delete_namespace(&self) -> Result<u64> {
        if self.keys.prefix().is_empty() {
            return Err(Error::InvalidArgument(
                "refusing to delete keys without a namespace".into(),
            ));
        }
        // Every key, whatever its bytes.
        let keys = self.scan_raw(&self.keys.pattern("")).await?;
        let mut conn = self.conn();
        let mut deleted = 0;
        for chunk in keys.chunks(500) {
            let n: u64 = redis::cmd("DEL")
                .arg(chunk)
                .query_async(&mut conn)
                .await
                .rd(self)
                .await?;
            deleted += n;
        }
        Ok(deleted)
    }
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        if !self.cleanup_on_drop || self.keys.prefix().is_empty() {
            return;
        }
        // Test namespaces only: a short blocking clean-up on a connection of its own.
        let deleted = match &self.cluster {
            Some(cluster) => testing::delete_cluster_keys_blocking(cluster, &self.keys.key(""), &self.keys.pattern("")),
            None => testing::delete_keys_blocking(&self.client, &self.keys.pattern("")),
        };
        if let Err(e) = deleted {
            tracing::warn!(target: "resq::redis", error = %e, "could not delete a test namespace");
        }
    }
}

#[async_trait]
impl Backend for RedisBackend {
    fn kind(&self) -> &'static str {
        "redis"
    }
}
