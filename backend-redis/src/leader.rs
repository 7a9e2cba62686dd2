//! The scheduler's leader lock, `resque_scheduler_leader_lock`, shared with
//! node-resque's schedulers: the value is the leader's name.

use crate::lock::ttl_ms;
use crate::scripts::{ACQUIRE_LEADER, RELEASE_LOCK};
use crate::{text, RedisBackend, RedisResult};
use async_trait::async_trait;
use resq_core::{LeaderLock, Result};
use std::time::Duration;

#[async_trait]
impl LeaderLock for RedisBackend {
    async fn acquire_leader(&self, name: &str, ttl: Duration) -> Result<bool> {
        let n: i64 = ACQUIRE_LEADER
            .key(self.keys.leader())
            .arg(name)
            .arg(ttl_ms(ttl))
            .invoke_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.leader())
            .await?;
        Ok(n == 1)
    }

    async fn release_leader(&self, name: &str) -> Result<bool> {
        let n: i64 = RELEASE_LOCK
            .key(self.keys.leader())
            .arg(name)
            .invoke_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.leader())
            .await?;
        Ok(n == 1)
    }

    async fn leader(&self) -> Result<Option<String>> {
        let name: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.keys.leader())
            .query_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.leader())
            .await?;
        Ok(name.map(text))
    }
}
