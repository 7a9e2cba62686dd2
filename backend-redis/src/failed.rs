//! The `failed` list.

use crate::scripts::RETRY_FAILED;
use crate::{text, RedisBackend, RedisResult};
use async_trait::async_trait;
use resq_core::failed::unescape_bytes;
use resq_core::{FailedStore, Result};

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
        let n: i64 = RETRY_FAILED
            .key(self.keys.failed())
            .key(self.keys.queue(queue))
            .key(self.keys.queues())
            .arg(entry)
            .arg(payload)
            .arg(queue)
            .arg(self.keys.wakeup_channel())
            .invoke_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.failed())
            .await?;
        Ok(n == 1)
    }
}
