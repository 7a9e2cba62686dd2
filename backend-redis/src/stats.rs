//! Counters: `stat:<name>` integer strings.

use crate::{RedisBackend, RedisResult};
use async_trait::async_trait;
use resq_core::{Error, Result, StatsStore};

fn parse(key: &str, raw: &str) -> Result<i64> {
    raw.trim().parse().map_err(|_| Error::Decode {
        what: "stat counter",
        reason: format!("{key} holds {raw:?}, not an integer"),
    })
}

#[async_trait]
impl StatsStore for RedisBackend {
    async fn incr_stat(&self, key: &str, by: i64) -> Result<i64> {
        redis::cmd("INCRBY")
            .arg(self.keys.stat(key))
            .arg(by)
            .query_async(&mut self.conn())
            .await
            .rd(self)
            .await
    }

    async fn stat(&self, key: &str) -> Result<i64> {
        let raw: Option<String> = redis::cmd("GET")
            .arg(self.keys.stat(key))
            .query_async(&mut self.conn())
            .await
            .rd(self)
            .await?;
        raw.map_or(Ok(0), |r| parse(key, &r))
    }

    async fn stats(&self) -> Result<Vec<(String, i64)>> {
        let found = self.scan_values(&self.keys.pattern("stat:")).await?;
        let prefix = self.keys.stat("");
        let mut out = Vec::with_capacity(found.len());
        for (k, v) in found {
            let (Some(name), Some(raw)) = (k.strip_prefix(&prefix), v) else {
                continue;
            };
            match parse(name, &raw) {
                Ok(n) => out.push((name.to_owned(), n)),
                // Another client's odd value is reported, not fatal.
                Err(e) => tracing::warn!(target: "resq::redis", error = %e, "skipping a counter"),
            }
        }
        out.sort();
        Ok(out)
    }
}
