//! The delayed schedule: `delayed:<secs>` lists, the
//! `delayed_queue_schedule` zset and `timestamps:<item>` sets.

use crate::scripts::{
    BUCKETS, BUCKET_SIZES, PROMOTE, PROMOTE_ONE, REMOVE_DELAYED, REMOVE_DELAYED_AT, REMOVE_DELAYED_BY_CLASS, SCHEDULE,
};
use crate::{text, RedisBackend, RedisResult};
use async_trait::async_trait;
use resq_core::failed::{
    escape_bytes, invalid_utf8_entry, invalid_utf8_reason, promotion_failure_entry, SCHEDULER_WORKER,
};
use resq_core::job::promotion_target;
use resq_core::time::now_ms;
use resq_core::{DelayedStore, Promotion, Result};

/// How many buckets one call of the by-class removal script cleans.
const BUCKETS_PER_CALL: usize = 200;

/// More buckets than any schedule holds, for "all of them".
const ALL: usize = 1 << 30;

/// Bucket seconds from members read as bytes; members that are not whole
/// seconds are skipped with a log line naming `key`.
fn parse_secs(key: &str, members: Vec<Vec<u8>>) -> Vec<i64> {
    let mut out: Vec<i64> = Vec::with_capacity(members.len());
    for m in members {
        let m = text(m);
        match m.trim().parse() {
            Ok(secs) => out.push(secs),
            Err(_) => tracing::warn!(target: "resq::redis", key, member = %m,
                "skipping a member that is not a bucket's seconds"),
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

impl RedisBackend {
    async fn buckets(&self, up_to: Option<i64>, limit: usize) -> Result<Vec<i64>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let max = up_to.map_or_else(|| "+inf".to_owned(), |s| s.to_string());
        let schedule = self.keys.schedule();
        let (members, bad): (Vec<Vec<u8>>, Vec<Vec<u8>>) = BUCKETS
            .key(&schedule)
            .arg(self.keys.prefix())
            .arg(max)
            .arg(limit)
            .invoke_async(&mut self.conn())
            .await
            .rd_at(self, &schedule)
            .await?;
        for m in bad {
            tracing::warn!(target: "resq::redis", key = %schedule, member = %text(m),
                "skipping a schedule member that is not a bucket's whole seconds, or whose bucket is not a list (left in place)");
        }
        Ok(parse_secs(&schedule, members))
    }
}

#[async_trait]
impl DelayedStore for RedisBackend {
    async fn schedule(&self, timestamp: i64, payload: &str) -> Result<bool> {
        let added: i64 = SCHEDULE
            .key(self.keys.timestamps(payload))
            .key(self.keys.delayed(timestamp))
            .key(self.keys.schedule())
            .arg(format!("delayed:{timestamp}"))
            .arg(payload)
            .arg(timestamp)
            .invoke_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.timestamps(payload))
            .await?;
        Ok(added == 1)
    }

    async fn due_timestamps(&self, up_to: i64, limit: usize) -> Result<Vec<i64>> {
        self.buckets((up_to != i64::MAX).then_some(up_to), limit).await
    }

    async fn delayed_timestamps(&self) -> Result<Vec<i64>> {
        self.buckets(None, ALL).await
    }

    async fn promote_delayed(&self, timestamp: i64, payload: &str, queue: &str) -> Result<bool> {
        let stamp = crate::queue::enqueue_stamp();
        let bucket_key = self.keys.delayed(timestamp);
        let moved: i64 = PROMOTE_ONE
            .key(&bucket_key)
            .key(self.keys.schedule())
            .key(self.keys.queues())
            .key(self.keys.queue(queue))
            .key(self.keys.enqueued(queue))
            .key(self.keys.timestamps(payload))
            .arg(timestamp)
            .arg(payload)
            .arg(queue)
            .arg(self.keys.wakeup_channel())
            .arg(stamp)
            .invoke_async(&mut self.conn())
            .await
            .rd_at(self, &bucket_key)
            .await?;
        Ok(moved == 1)
    }

    async fn remove_delayed_at(&self, timestamp: i64, payload: &str) -> Result<bool> {
        let bucket_key = self.keys.delayed(timestamp);
        let removed: i64 = REMOVE_DELAYED_AT
            .key(&bucket_key)
            .key(self.keys.schedule())
            .key(self.keys.timestamps(payload))
            .arg(timestamp)
            .arg(payload)
            .invoke_async(&mut self.conn())
            .await
            .rd_at(self, &bucket_key)
            .await?;
        Ok(removed == 1)
    }

    /// One script call: the schedule's members in score order, each with
    /// its bucket's `LLEN`. Members that are not whole seconds are skipped
    /// with a log line.
    async fn delayed_bucket_sizes(&self) -> Result<Vec<(i64, u64)>> {
        let schedule = self.keys.schedule();
        let flat: Vec<redis::Value> = BUCKET_SIZES
            .key(&schedule)
            .arg(self.keys.prefix())
            .invoke_async(&mut self.conn())
            .await
            .rd_at(self, &schedule)
            .await?;
        let mut out: Vec<(i64, u64)> = Vec::with_capacity(flat.len() / 2);
        let mut it = flat.into_iter();
        while let (Some(member), Some(len)) = (it.next(), it.next()) {
            let member = redis::from_redis_value::<Vec<u8>>(member).map(text).unwrap_or_default();
            let len = redis::from_redis_value::<u64>(len).unwrap_or(0);
            match member.trim().parse::<i64>() {
                Ok(secs) if len > 0 => out.push((secs, len)),
                Ok(_) => {}
                Err(_) => tracing::warn!(target: "resq::redis", key = %schedule, member = %member,
                    "skipping a schedule member that is not a bucket's seconds"),
            }
        }
        out.sort_unstable_by_key(|(secs, _)| *secs);
        out.dedup_by_key(|(secs, _)| *secs);
        Ok(out)
    }

    async fn delayed_at(&self, timestamp: i64) -> Result<Vec<String>> {
        let items: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(self.keys.delayed(timestamp))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.delayed(timestamp))
            .await?;
        Ok(items.into_iter().map(text).collect())
    }

    async fn timestamps_of(&self, payload: &str) -> Result<Vec<i64>> {
        let key = self.keys.timestamps(payload);
        let members: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
            .arg(&key)
            .query_async(&mut self.conn())
            .await
            .rd_at(self, &key)
            .await?;
        Ok(parse_secs(
            &key,
            members
                .into_iter()
                .filter_map(|m| m.strip_prefix(b"delayed:").map(<[u8]>::to_vec))
                .collect(),
        ))
    }

    async fn remove_delayed(&self, payload: &str) -> Result<Vec<i64>> {
        let key = self.keys.timestamps(payload);
        let removed: Vec<Vec<u8>> = REMOVE_DELAYED
            .key(&key)
            .key(self.keys.schedule())
            .arg(self.keys.prefix())
            .arg(payload)
            .invoke_async(&mut self.conn())
            .await
            .rd_at(self, &key)
            .await?;
        Ok(parse_secs(&key, removed))
    }

    /// One script call per 200 buckets, in score order:
    /// each call cleans its buckets atomically inside Redis, and no item
    /// crosses the network.
    async fn remove_delayed_by_class(&self, queue: &str, class: &str) -> Result<u64> {
        if class.is_empty() {
            return Ok(0);
        }
        let mut from = "-inf".to_owned();
        let mut removed: u64 = 0;
        loop {
            let (gone, looked, last): (u64, u64, String) = REMOVE_DELAYED_BY_CLASS
                .key(self.keys.schedule())
                .arg(class)
                .arg(queue)
                .arg(self.keys.prefix())
                .arg(&from)
                .arg(BUCKETS_PER_CALL)
                .invoke_async(&mut self.conn())
                .await
                .rd_at(self, &self.keys.schedule())
                .await?;
            removed += gone;
            if looked < BUCKETS_PER_CALL as u64 || last.is_empty() {
                return Ok(removed);
            }
            from = format!("({last}");
        }
    }

    async fn promote_due(&self, up_to: i64, limit: usize) -> Result<Vec<Promotion>> {
        let mut done = Vec::new();
        while done.len() < limit {
            let Some(&bucket) = self.buckets(Some(up_to), 1).await?.first() else {
                break;
            };
            let want = limit - done.len();
            let stop = i64::try_from(want).unwrap_or(i64::MAX).saturating_sub(1);
            let bucket_key = self.keys.delayed(bucket);
            let items: Vec<Vec<u8>> = redis::cmd("LRANGE")
                .arg(&bucket_key)
                .arg(0)
                .arg(stop)
                .query_async(&mut self.conn())
                .await
                .rd_at(self, &bucket_key)
                .await?;
            let stamp = crate::queue::enqueue_stamp();
            let mut inv = PROMOTE.prepare_invoke();
            inv.key(&bucket_key)
                .key(self.keys.schedule())
                .key(self.keys.queues())
                .key(self.keys.failed())
                .arg(self.keys.prefix())
                .arg(bucket)
                .arg(self.keys.wakeup_channel())
                .arg(stamp);
            let now = now_ms();
            let mut planned = Vec::with_capacity(items.len());
            for item in &items {
                // The script matches the item by its exact bytes.
                inv.arg(item);
                match std::str::from_utf8(item) {
                    Ok(text) => match promotion_target(text) {
                        Ok(queue) => {
                            inv.arg("q").arg(&queue);
                            planned.push((text.to_owned(), Ok(queue)));
                        }
                        Err(reason) => {
                            let reason = format!("{reason} (read from {bucket_key})");
                            inv.arg("f").arg(promotion_failure_entry(text, &reason, now));
                            planned.push((text.to_owned(), Err(reason)));
                        }
                    },
                    Err(_) => {
                        let entry = invalid_utf8_entry(SCHEDULER_WORKER, "", item, &bucket_key, now);
                        inv.arg("f").arg(entry);
                        planned.push((escape_bytes(item), Err(invalid_utf8_reason(&bucket_key))));
                    }
                }
            }
            // With no items the script still drops the empty bucket.
            let flags: Vec<i64> = inv
                .invoke_async(&mut self.conn())
                .await
                .rd_at(self, &bucket_key)
                .await?;
            for ((item, plan), flag) in planned.into_iter().zip(flags) {
                if flag != 1 {
                    continue; // another scheduler moved it first
                }
                done.push(match plan {
                    Ok(queue) => Promotion::Moved {
                        timestamp: bucket,
                        queue,
                        payload: item,
                    },
                    Err(reason) => Promotion::Failed {
                        timestamp: bucket,
                        payload: item,
                        reason,
                    },
                });
            }
        }
        Ok(done)
    }
}
