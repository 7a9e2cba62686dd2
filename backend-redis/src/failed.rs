//! The `failed` list.

use crate::scripts::{RETRY_FAILED, TAKE_FAILED_AT};
use crate::{text, RedisBackend, RedisResult};
use async_trait::async_trait;
use resq_core::failed::unescape_bytes;
use resq_core::{FailedStore, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[async_trait]
impl FailedStore for RedisBackend {
    async fn push_failed(&self, entry: &str) -> Result<()> {
        redis::cmd("RPUSH")
            .arg(self.keys.failed())
            .arg(entry)
            .exec_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.failed())
            .await
    }

    async fn failed_count(&self) -> Result<u64> {
        redis::cmd("LLEN")
            .arg(self.keys.failed())
            .query_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.failed())
            .await
    }

    /// Entries that are not UTF-8 are listed escaped (see `resq_core::failed::escape_bytes`).
    async fn failed_range(&self, start: i64, stop: i64) -> Result<Vec<String>> {
        let raw: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(self.keys.failed())
            .arg(start)
            .arg(stop)
            .query_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.failed())
            .await?;
        Ok(raw.into_iter().map(text).collect())
    }

    /// An entry that is not there as given but was listed escaped (its
    /// unescaped bytes are not UTF-8, so no `String` entry has them) is
    /// removed by its stored bytes.
    async fn remove_failed(&self, entry: &str) -> Result<u64> {
        let n: u64 = redis::cmd("LREM")
            .arg(self.keys.failed())
            .arg(1)
            .arg(entry)
            .query_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.failed())
            .await?;
        if n > 0 {
            return Ok(n);
        }
        match unescape_bytes(entry) {
            Some(bytes) if std::str::from_utf8(&bytes).is_err() => {
                redis::cmd("LREM")
                    .arg(self.keys.failed())
                    .arg(1)
                    .arg(bytes)
                    .query_async(&mut self.conn())
                    .await
                    .rd_at(self, &self.keys.failed())
                    .await
            }
            _ => Ok(0),
        }
    }

    async fn retry_failed(&self, entry: &str, queue: &str, payload: &str) -> Result<bool> {
        let stamp = crate::queue::enqueue_stamp();
        let n: i64 = RETRY_FAILED
            .key(self.keys.failed())
            .key(self.keys.queue(queue))
            .key(self.keys.queues())
            .key(self.keys.enqueued(queue))
            .arg(entry)
            .arg(payload)
            .arg(queue)
            .arg(self.keys.wakeup_channel())
            .arg(stamp)
            .invoke_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.failed())
            .await?;
        Ok(n == 1)
    }

    async fn remove_failed_at(&self, index: u64, entry: &str) -> Result<bool> {
        self.take_failed_at(index, entry, None).await
    }

    async fn retry_failed_at(&self, index: u64, entry: &str, queue: &str, payload: &str) -> Result<bool> {
        self.take_failed_at(index, entry, Some((queue, payload))).await
    }
}

/// Counts tombstones made by this process, so that each is unique.
static TOMBSTONES: AtomicU64 = AtomicU64::new(0);

impl RedisBackend {
    /// [`FailedStore::remove_failed_at`], and with `retry` (queue, payload)
    /// [`FailedStore::retry_failed_at`], in one script.
    async fn take_failed_at(&self, index: u64, entry: &str, retry: Option<(&str, &str)>) -> Result<bool> {
        // An index past i64::MAX holds nothing.
        let Ok(index) = i64::try_from(index) else {
            return Ok(false);
        };
        // An entry listed escaped is stored as its unescaped bytes.
        let stored = match unescape_bytes(entry) {
            Some(bytes) if std::str::from_utf8(&bytes).is_err() => bytes,
            _ => entry.as_bytes().to_vec(),
        };
        // NUL bytes (never in a JSON entry) plus this process, time and a
        // counter: no entry holds this value, so LREM removes exactly the
        // element the script overwrote.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = TOMBSTONES.fetch_add(1, Ordering::Relaxed);
        let tombstone = format!("\0resq:failed-tombstone:{}:{nanos}:{n}\0", std::process::id());
        let (queue, payload) = retry.unwrap_or(("", ""));
        let stamp = crate::queue::enqueue_stamp();
        let mut call = TAKE_FAILED_AT.key(self.keys.failed());
        call.key(self.keys.queue(queue))
            .key(self.keys.queues())
            .key(self.keys.enqueued(queue))
            .arg(index)
            .arg(entry)
            .arg(stored)
            .arg(tombstone)
            .arg(if retry.is_some() { "retry" } else { "remove" })
            .arg(payload)
            .arg(queue)
            .arg(self.keys.wakeup_channel())
            .arg(stamp);
        let n: i64 = call
            .invoke_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.failed())
            .await?;
        Ok(n == 1)
    }
}
