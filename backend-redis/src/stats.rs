//! Counters: `stat:<name>` integer strings.

use crate::{text, RedisBackend, RedisResult};
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
            .rd_at(self, &self.keys.stat(key))
            .await
    }

    async fn stat(&self, key: &str) -> Result<i64> {
        let full = self.keys.stat(key);
        let raw: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&full)
            .query_async(&mut self.conn())
            .await
            .rd_at(self, &full)
            .await?;
        raw.map_or(Ok(0), |r| parse(&full, &text(r)))
    }

    async fn stats(&self) -> Result<Vec<(String, i64)>> {
        let found = self.scan_values(&self.keys.pattern("stat:")).await?;
        let prefix = self.keys.stat("");
        let mut out = Vec::with_capacity(found.len());
        for (k, v) in found {
            let (Some(name), Some(raw)) = (k.strip_prefix(&prefix), v) else {
                continue;
            };
            match parse(&k, &text(raw)) {
                Ok(n) => out.push((name.to_owned(), n)),
                // Another client's odd value is reported, not fatal.
                Err(e) => tracing::warn!(target: "resq::redis", error = %e, "skipping a counter"),
            }
        }
        out.sort();
        Ok(out)
    }
}
