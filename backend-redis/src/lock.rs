//! Plugin locks: `SET NX PX`, with compare-and-expire and compare-and-delete scripts.

use crate::scripts::{INCR_LOCK, RELEASE_LOCK, RENEW_LOCK};
use crate::{text, RedisBackend, RedisResult};
use async_trait::async_trait;
use resq_core::{LockEntry, LockStore, Result};
use std::time::Duration;

/// The longest TTL set: about a century (longer ones are capped; Redis
/// refuses an expiry that overflows its clock, and the other backends cap
/// likewise).
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Redis refuses a zero expiry; a TTL under a millisecond counts as one.
pub(crate) fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).clamp(1, MAX_TTL_MS)
}

#[async_trait]
impl LockStore for RedisBackend {
    async fn acquire_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<bool> {
        let set: Option<String> = redis::cmd("SET")
            .arg(self.keys.key(key))
            .arg(value)
            .arg("PX")
            .arg(ttl_ms(ttl))
            .arg("NX")
            .query_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.key(key))
            .await?;
        Ok(set.is_some())
    }

    async fn renew_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<bool> {
        let n: i64 = RENEW_LOCK
            .key(self.keys.key(key))
            .arg(value)
            .arg(ttl_ms(ttl))
            .invoke_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.key(key))
            .await?;
        Ok(n == 1)
    }

    async fn release_lock(&self, key: &str, value: &str) -> Result<bool> {
        let n: i64 = RELEASE_LOCK
            .key(self.keys.key(key))
            .arg(value)
            .invoke_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.key(key))
            .await?;
        Ok(n == 1)
    }

    async fn locks(&self) -> Result<Vec<(String, String)>> {
        let mut found = self.scan_values(&self.keys.pattern("lock:")).await?;
        found.extend(self.scan_values(&self.keys.pattern("workerslock:")).await?);
        let prefix = self.keys.prefix();
        let mut out: Vec<(String, String)> = found
            .into_iter()
            // A value that is not UTF-8 is shown escaped.
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_owned(), text(v?))))
            .collect();
        out.sort();
        Ok(out)
    }

    async fn delete_lock(&self, key: &str) -> Result<u64> {
        redis::cmd("DEL")
            .arg(self.keys.key(key))
            .query_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.key(key))
            .await
    }

    async fn get_lock(&self, key: &str) -> Result<Option<LockEntry>> {
        let key = self.keys.key(key);
        // Read the value and its TTL in one atomic step.
        let (value, pttl): (Option<Vec<u8>>, i64) = redis::pipe()
            .atomic()
            .get(&key)
            .cmd("PTTL")
            .arg(&key)
            .query_async(&mut self.conn())
            .await
            .rd_at(self, &key)
            .await?;
        Ok(value.map(|value| LockEntry {
            value: text(value),
            // -1: no expiry; -2 cannot happen once GET found the key.
            ttl: u64::try_from(pttl).ok().map(Duration::from_millis),
        }))
    }

    async fn set_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        redis::cmd("SET")
            .arg(self.keys.key(key))
            .arg(value)
            .arg("PX")
            .arg(ttl_ms(ttl))
            .query_async::<()>(&mut self.conn())
            .await
            .rd_at(self, &self.keys.key(key))
            .await
    }

    async fn incr_lock(&self, key: &str, by: i64, ttl: Duration) -> Result<i64> {
        INCR_LOCK
            .key(self.keys.key(key))
            .arg(by)
            .arg(ttl_ms(ttl))
            .invoke_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.key(key))
            .await
    }
}
