//! The `failed` list.

use crate::scripts::RETRY_FAILED;
use crate::{RedisBackend, RedisResult};
use async_trait::async_trait;
use resq_core::{FailedStore, Result};

#[async_trait]
impl FailedStore for RedisBackend {
    async fn push_failed(&self, entry: &str) -> Result<()> {
        redis::cmd("RPUSH")
            .arg(self.keys.failed())
            .arg(entry)
            .exec_async(&mut self.conn())
            .await
            .rd(self)
            .await
    }

    async fn failed_count(&self) -> Result<u64> {
        redis::cmd("LLEN")
            .arg(self.keys.failed())
            .query_async(&mut self.conn())
            .await
            .rd(self)
            .await
    }

    async fn failed_range(&self, start: i64, stop: i64) -> Result<Vec<String>> {
        redis::cmd("LRANGE")
            .arg(self.keys.failed())
            .arg(start)
            .arg(stop)
            .query_async(&mut self.conn())
            .await
            .rd(self)
            .await
    }

    async fn remove_failed(&self, entry: &str) -> Result<u64> {
        redis::cmd("LREM")
            .arg(self.keys.failed())
            .arg(1)
            .arg(entry)
            .query_async(&mut self.conn())
            .await
            .rd(self)
            .await
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
            .rd(self)
            .await?;
        Ok(n == 1)
    }
}
