//! Sharded namespaces on a Redis Cluster (`redis+cluster://…/?shards=N`).
//!
//! In single-slot mode every key of a namespace carries one hash tag, so
//! the whole load sits on one primary. A [`ShardedRedis`] spreads it: it is
//! `N` [`RedisBackend`]s, shard `i` in the namespace `{<base>:i}` (its own
//! hash tag, so its keys share a slot and its scripts stay single-slot),
//! all over one shared cluster connection, and implements [`Backend`] by
//! routing each call to one shard or aggregating over all of them.
//!
//! # The stored layout
//!
//! * A queue lives on shard [`shard_index`]`(queue, N)`: FNV-1a (64 bits,
//!   [`fnv1a_64`]) of the queue name's UTF-8 bytes, modulo `N`. Its list,
//!   its enqueue records, its pause mark, its limits, its rate log and its
//!   cap slots are all there, so a claim stays one script on one slot.
//! * A delayed item lives on the shard of the queue its JSON names
//!   (`queue`); an item that names none (or is not JSON) on shard 0.
//! * A failed entry lives where it was written: a job that fails in a
//!   worker, a dead worker's job and an undecodable delayed item on the
//!   shard they were on (written atomically with the completion, the
//!   clean-up or the promotion); [`resq_core::FailedStore::push_failed`]
//!   on shard 0. The failed list reads as the shards' lists one after the
//!   other, shard 0's first: entries keep their order within a shard, not
//!   across shards.
//! * A lock key lives on shard [`shard_index`]`(key, N)`.
//! * Within one delayed bucket, items keep their order within a shard,
//!   not across shards: [`resq_core::DelayedStore::delayed_at`] lists a
//!   bucket shard after shard, and promotion moves the items of one bucket
//!   shard after shard.
//! * Shard 0, the home shard, holds the scheduler's leader lock, the cancel
//!   marks and signals, per-task flow control (task rate logs and slots),
//!   the counters that [`resq_core::StatsStore::incr_stat`] adds to, and
//!   `{<base>:0}:resq:shards`, the number of shards the namespace was
//!   created with.
//! * Workers register and ping on every shard (each shard's clean-up then
//!   sees them), and their working-on records live on the shard their
//!   current job came from.
//!
//! Each shard keeps its own wake-up subscriber (one pub/sub connection per
//! shard, on its own channel `{<base>:i}:resq:wakeup`); commands of all
//! shards share the one cluster connection.
//!
//! The mapping depends on `N`: another `N` puts most queues on other
//! shards, where their jobs are not. So the first connection records `N`
//! and a connection with another `N` is refused (see
//! [`ShardedRedis::connect`]). Changing `N` means draining every queue,
//! the schedule and the failed list, then deleting that key.
//!
//! # What is not atomic across shards
//!
//! Each call on one shard keeps its single-namespace guarantee. Calls that
//! span shards are several steps, documented on each: listing (a union of
//! the shards' answers, each read at its own moment), `push_once` with a
//! lock key on another shard than the queue, `retry_failed` of an entry on
//! another shard than its queue, and promoting a delayed item to a queue
//! on another shard.

mod delayed;
mod failed;
mod queue;
mod worker;

use crate::config::RedisConfig;
use crate::{cluster_client, explain_connect_error, RedisBackend, RedisResult};
use async_trait::async_trait;
use dashmap::DashMap;
use futures_util::future::try_join_all;
use resq_core::flow::{TaskAdmission, TaskLimits};
use resq_core::{
    Backend, CancelMark, CancelSignal, CancelStore, Error, LeaderLock, LockEntry, LockStore, Result, StatsStore,
    TaskFlowStore, WorkerId,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// FNV-1a, 64 bits, of `bytes`: offset basis `0xcbf29ce484222325`, prime
/// `0x100000001b3`. Part of the stored layout of a sharded namespace (see
/// the [module documentation](self)): it must never change.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The shard of a queue name (or lock key) among `shards`:
/// [`fnv1a_64`] of its UTF-8 bytes modulo `shards` (0 when `shards` is 0).
pub fn shard_index(name: &str, shards: usize) -> usize {
    match u64::try_from(shards) {
        // The remainder is below `shards`, so it fits a usize.
        Ok(n) if n > 0 => usize::try_from(fnv1a_64(name.as_bytes()) % n).unwrap_or(0),
        _ => 0,
    }
}

/// The `queue` field of a JSON object (a job payload, a delayed item, a
/// failed entry), when it is a non-blank string; `None` for anything else.
pub(crate) fn queue_field(json: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct QueueOnly {
        #[serde(default)]
        queue: Option<serde_json::Value>,
    }
    match serde_json::from_str::<QueueOnly>(json).ok()?.queue? {
        serde_json::Value::String(q) if !q.trim().is_empty() => Some(q),
        _ => None,
    }
}

/// The shard index that holds the home shard's data.
const HOME: usize = 0;

/// A sharded namespace on a Redis Cluster; see the [module
/// documentation](self).
pub struct ShardedRedis {
    shards: Vec<Arc<RedisBackend>>,
    config: RedisConfig,
    /// The shard each worker slot's current job was claimed on, so that
    /// its completion goes there without a look-up (a slot this process
    /// did not claim for is found through its working-on record).
    claimed_on: DashMap<WorkerId, usize>,
}

impl std::fmt::Debug for ShardedRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedRedis")
            .field("namespace", &self.config.namespace)
            .field("shards", &self.shards.len())
            .finish()
    }
}

impl ShardedRedis {
    /// Connects to the sharded namespace `config` names (a cluster config
    /// with [`RedisConfig::shards`] set): one cluster connection shared by
    /// every shard. The first connection to a namespace records its number
    /// of shards in `{<base>:0}:resq:shards`; a connection that asks for
    /// another number is refused with [`Error::InvalidUrl`], since queues
    /// would then be looked for on other shards than theirs.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        Self::connect_with(config, false).await
    }

    /// [`ShardedRedis::connect`], with each shard's keys deleted when it is
    /// dropped when `cleanup_on_drop` (test namespaces only).
    pub(crate) async fn connect_with(config: RedisConfig, cleanup_on_drop: bool) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: resq_core::error::redact_url(&config.url),
            reason,
        };
        let Some(configs) = config.shard_configs() else {
            return Err(invalid("not a sharded namespace: the URL sets no shards=N".into()));
        };
        if !config.is_cluster() {
            return Err(invalid("shards=N needs a Redis Cluster URL (redis+cluster://)".into()));
        }
        let cluster = cluster_client(&config)?;
        let conn = match cluster.get_async_connection().await {
            Ok(conn) => conn,
            Err(e) => return Err(explain_connect_error(&config, e).await),
        };
        let mut shards = Vec::with_capacity(configs.len());
        for shard_config in configs {
            let mut shard = RedisBackend::on_cluster(shard_config, cluster.clone(), conn.clone())?;
            shard.cleanup_on_drop = cleanup_on_drop;
            shards.push(Arc::new(shard));
        }
        let backend = ShardedRedis {
            shards,
            config,
            claimed_on: DashMap::new(),
        };
        backend.check_shard_count().await?;
        Ok(backend)
    }

    /// Records the number of shards on shard 0 if no number is recorded
    /// yet, and refuses another number than the one recorded.
    async fn check_shard_count(&self) -> Result<()> {
        let home = self.home();
        let key = home.keys.shard_count();
        let n = self.shards.len();
        let recorded: Option<Vec<u8>> = redis::pipe()
            .cmd("SET")
            .arg(&key)
            .arg(n)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&key)
            .query_async::<(Option<Vec<u8>>,)>(&mut home.conn())
            .await
            .map(|(recorded,)| recorded)
            .rd_at(home, &key)
            .await?;
        let recorded = recorded.map(crate::text);
        if recorded.as_deref() == Some(n.to_string().as_str()) {
            return Ok(());
        }
        Err(Error::InvalidUrl {
            url: resq_core::error::redact_url(&self.config.url),
            reason: format!(
                "the sharded namespace {namespace:?} was created with shards={was} (recorded in {key}), this URL says shards={n}; \
                 another number of shards would look for queues on other shards than theirs. Connect with shards={was}, \
                 or drain every queue, the schedule and the failed list and delete {key} first",
                namespace = self.config.namespace,
                was = recorded.as_deref().unwrap_or("?"),
            ),
        })
    }

    /// The shards, shard `i` at index `i` (what `resq doctor` audits one
    /// by one).
    pub fn shards(&self) -> &[Arc<RedisBackend>] {
        &self.shards
    }

    /// The settings in use (the base namespace, with `shards` set).
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// The shard index of `queue` (see [`shard_index`]).
    pub fn shard_of(&self, queue: &str) -> usize {
        shard_index(queue, self.shards.len())
    }

    /// The home shard (leader lock, cancel marks, task flow control).
    fn home(&self) -> &RedisBackend {
        self.shard(HOME)
    }

    /// Shard `i`; indexes come from [`shard_index`] or enumerate the shards,
    /// so they are in range. There is always at least one shard.
    fn shard(&self, i: usize) -> &RedisBackend {
        match self.shards.get(i) {
            Some(s) => s,
            None => &self.shards[HOME],
        }
    }

    /// The shard of `queue`.
    fn of_queue(&self, queue: &str) -> &RedisBackend {
        self.shard(self.shard_of(queue))
    }

    /// The shard of lock `key`.
    fn of_lock(&self, key: &str) -> &RedisBackend {
        self.shard(shard_index(key, self.shards.len()))
    }

    /// The shard a JSON payload, item or entry belongs to by its `queue`
    /// field; `None` when it names no queue.
    fn shard_of_json(&self, json: &str) -> Option<usize> {
        queue_field(json).map(|q| self.shard_of(&q))
    }

    /// Runs `f` on every shard concurrently; the answers in shard order.
    async fn on_all<'a, T, F, Fut>(&'a self, f: F) -> Result<Vec<T>>
    where
        F: FnMut(&'a RedisBackend) -> Fut,
        Fut: Future<Output = Result<T>> + 'a,
    {
        try_join_all(self.shards.iter().map(|s| &**s).map(f)).await
    }
}

/// Merges sorted lists into one sorted list without duplicates.
fn union_sorted<T: Ord>(lists: Vec<Vec<T>>) -> Vec<T> {
    let mut out: Vec<T> = lists.into_iter().flatten().collect();
    out.sort();
    out.dedup();
    out
}

#[async_trait]
impl Backend for ShardedRedis {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn remote(&self) -> bool {
        true
    }

    fn queue_shard(&self, queue: &str) -> usize {
        self.shard_of(queue)
    }

    async fn close(&self) -> Result<()> {
        self.on_all(|s| s.close()).await.map(|_| ())
    }
}

#[async_trait]
impl LockStore for ShardedRedis {
    async fn acquire_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<bool> {
        self.of_lock(key).acquire_lock(key, value, ttl).await
    }

    async fn renew_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<bool> {
        self.of_lock(key).renew_lock(key, value, ttl).await
    }

    async fn release_lock(&self, key: &str, value: &str) -> Result<bool> {
        self.of_lock(key).release_lock(key, value).await
    }

    async fn locks(&self) -> Result<Vec<(String, String)>> {
        Ok(union_sorted(self.on_all(|s| s.locks()).await?))
    }

    async fn delete_lock(&self, key: &str) -> Result<u64> {
        self.of_lock(key).delete_lock(key).await
    }

    async fn get_lock(&self, key: &str) -> Result<Option<LockEntry>> {
        self.of_lock(key).get_lock(key).await
    }

    async fn set_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        self.of_lock(key).set_lock(key, value, ttl).await
    }

    async fn incr_lock(&self, key: &str, by: i64, ttl: Duration) -> Result<i64> {
        self.of_lock(key).incr_lock(key, by, ttl).await
    }
}

#[async_trait]
impl StatsStore for ShardedRedis {
    /// Adds to the counter on the home shard and returns the sum over all
    /// shards (each shard's completions count its own jobs). The sum is
    /// read after the increment, not in the same step: a concurrent
    /// completion on another shard may be counted in it.
    async fn incr_stat(&self, key: &str, by: i64) -> Result<i64> {
        let mine = self.home().incr_stat(key, by).await?;
        let mut total = mine;
        for (i, s) in self.shards.iter().enumerate() {
            if i != HOME {
                total = total.saturating_add(s.stat(key).await?);
            }
        }
        Ok(total)
    }

    async fn stat(&self, key: &str) -> Result<i64> {
        Ok(self
            .on_all(|s| s.stat(key))
            .await?
            .into_iter()
            .fold(0i64, i64::saturating_add))
    }

    async fn stats(&self) -> Result<Vec<(String, i64)>> {
        let mut sums: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
        for list in self.on_all(|s| s.stats()).await? {
            for (k, v) in list {
                let sum = sums.entry(k).or_insert(0);
                *sum = sum.saturating_add(v);
            }
        }
        Ok(sums.into_iter().collect())
    }
}

#[async_trait]
impl LeaderLock for ShardedRedis {
    async fn acquire_leader(&self, name: &str, ttl: Duration) -> Result<bool> {
        self.home().acquire_leader(name, ttl).await
    }

    async fn release_leader(&self, name: &str) -> Result<bool> {
        self.home().release_leader(name).await
    }

    async fn leader(&self) -> Result<Option<String>> {
        self.home().leader().await
    }
}

#[async_trait]
impl CancelStore for ShardedRedis {
    async fn request_cancel(&self, worker: &WorkerId, mark: &CancelMark) -> Result<()> {
        self.home().request_cancel(worker, mark).await
    }

    async fn cancel_marks(&self, workers: &[WorkerId]) -> Result<Vec<Option<CancelMark>>> {
        self.home().cancel_marks(workers).await
    }

    async fn clear_cancel(&self, worker: &WorkerId, mark: &CancelMark) -> Result<bool> {
        self.home().clear_cancel(worker, mark).await
    }

    async fn cancel_signals(&self) -> Result<tokio::sync::broadcast::Receiver<CancelSignal>> {
        self.home().cancel_signals().await
    }
}

#[async_trait]
impl TaskFlowStore for ShardedRedis {
    async fn acquire_task_start(&self, class: &str, limits: &TaskLimits, worker: &WorkerId) -> Result<TaskAdmission> {
        self.home().acquire_task_start(class, limits, worker).await
    }

    async fn release_task_slot(&self, worker: &WorkerId) -> Result<bool> {
        self.home().release_task_slot(worker).await
    }

    async fn task_slots_held(&self, class: &str) -> Result<u64> {
        self.home().task_slots_held(class).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_64_matches_the_reference_values() {
        // The published FNV-1a 64 test vectors.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn the_queue_to_shard_mapping_never_changes() {
        // Part of the stored layout: a change here strands queued jobs.
        let expected: [(&str, usize, usize); 8] = [
            ("default", 3, 0),
            ("emails", 3, 1),
            ("critical", 3, 2),
            ("low", 3, 0),
            ("math", 3, 2),
            ("emails", 16, 12),
            ("resque:workerslock:x", 5, 4),
            ("", 7, 2),
        ];
        let got: Vec<(&str, usize, usize)> = expected.iter().map(|(q, n, _)| (*q, *n, shard_index(q, *n))).collect();
        assert_eq!(got, expected);
        assert_eq!(shard_index("anything", 1), 0);
        assert_eq!(shard_index("anything", 0), 0);
    }

    #[test]
    fn reads_the_queue_field() {
        assert_eq!(
            queue_field(r#"{"class":"A","queue":"q","args":[]}"#).as_deref(),
            Some("q")
        );
        assert_eq!(queue_field(r#"{"class":"A","args":[]}"#), None);
        assert_eq!(queue_field(r#"{"queue":" "}"#), None);
        assert_eq!(queue_field(r#"{"queue":3}"#), None);
        assert_eq!(queue_field("not json"), None);
        assert_eq!(queue_field("[1]"), None);
    }
}
