//! The delayed schedule: `delayed:<secs>` lists, the
//! `delayed_queue_schedule` zset and `timestamps:<item>` sets.

use crate::scripts::{
    BUCKET_LENGTHS, BUCKET_TYPES, PROMOTE, PROMOTE_ONE, REMOVE_BUCKET_BY_CLASS, REMOVE_DELAYED, REMOVE_DELAYED_AT,
    SCHEDULE,
};
use crate::{text, RedisBackend, RedisResult};
use async_trait::async_trait;
use resq_core::failed::{
    escape_bytes, invalid_utf8_entry, invalid_utf8_reason, promotion_failure_entry, SCHEDULER_WORKER,
};
use resq_core::job::promotion_target;
use resq_core::time::now_ms;
use resq_core::{DelayedStore, Promotion, Result};

/// How many buckets the by-class removal reads from the schedule at a time.
const BUCKETS_PER_CALL: usize = 200;

/// How many keys one script call that checks buckets declares at most.
const KEYS_PER_CALL: usize = 1000;

/// How many times a step that declares keys read just before (a bucket's
/// items, an index's members) is tried again when they changed meanwhile.
const STALE_RETRIES: usize = 20;

/// Whether a schedule member is a bucket's whole seconds as resq and
/// Resque write them: digits, at most 15 of them, an optional `-`, no
/// leading zero.
fn whole_seconds(m: &[u8]) -> bool {
    let digits = m.strip_prefix(b"-").unwrap_or(m);
    m.len() <= 16 && !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) && (m == b"0" || digits[0] != b'0')
}

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
    /// Up to `limit` bucket seconds of the schedule with a score up to
    /// `up_to`, ascending, whose `delayed:` list exists. Members whose key
    /// is gone are removed from the schedule (checked and removed in one
    /// script call, which declares every key it reads); members that are
    /// not whole seconds, or whose key is not a list, are left in place
    /// for their owner with a log line.
    async fn buckets(&self, up_to: Option<i64>, limit: usize) -> Result<Vec<i64>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let max = up_to.map_or_else(|| "+inf".to_owned(), |s| s.to_string());
        let schedule = self.keys.schedule();
        let page = limit.min(KEYS_PER_CALL);
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut bad: Vec<Vec<u8>> = Vec::new();
        let mut offset = 0usize;
        while out.len() < limit {
            let batch: Vec<Vec<u8>> = redis::cmd("ZRANGEBYSCORE")
                .arg(&schedule)
                .arg("-inf")
                .arg(&max)
                .arg("LIMIT")
                .arg(offset)
                .arg(page)
                .query_async(&mut self.conn())
                .await
                .rd_at(self, &schedule)
                .await?;
            if batch.is_empty() {
                break;
            }
            let mut inv = BUCKET_TYPES.prepare_invoke();
            inv.key(&schedule);
            for m in &batch {
                inv.key(self.keys.raw("delayed:", m)).arg(m);
            }
            let kinds: Vec<String> = inv.invoke_async(&mut self.conn()).await.rd_at(self, &schedule).await?;
            for (m, kind) in batch.iter().zip(&kinds) {
                if kind == "none" {
                    continue; // removed from the schedule
                }
                offset += 1;
                if kind != "list" || !whole_seconds(m) {
                    if bad.len() < 100 {
                        bad.push(m.clone());
                    }
                } else if out.len() < limit {
                    out.push(m.clone());
                }
            }
            if batch.len() < page {
                break;
            }
        }
        for m in bad {
            tracing::warn!(target: "resq::redis", key = %schedule, member = %text(m),
                "skipping a schedule member that is not a bucket's whole seconds, or whose bucket is not a list (left in place)");
        }
        Ok(parse_secs(&schedule, out))
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

    /// The schedule's members in score order, then each bucket's `LLEN`
    /// (one script call per 1,000 buckets, with their keys declared).
    /// Members that are not whole seconds are skipped with a log line.
    async fn delayed_bucket_sizes(&self) -> Result<Vec<(i64, u64)>> {
        let schedule = self.keys.schedule();
        let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
            .arg(&schedule)
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn())
            .await
            .rd_at(self, &schedule)
            .await?;
        let mut out: Vec<(i64, u64)> = Vec::with_capacity(members.len());
        for chunk in members.chunks(KEYS_PER_CALL) {
            let mut inv = BUCKET_LENGTHS.prepare_invoke();
            for m in chunk {
                inv.key(self.keys.raw("delayed:", m));
            }
            let lens: Vec<u64> = inv.invoke_async(&mut self.conn()).await.rd_at(self, &schedule).await?;
            for (member, len) in chunk.iter().zip(lens) {
                let member = text(member.clone());
                match member.trim().parse::<i64>() {
                    Ok(secs) if len > 0 => out.push((secs, len)),
                    Ok(_) => {}
                    Err(_) => tracing::warn!(target: "resq::redis", key = %schedule, member = %member,
                        "skipping a schedule member that is not a bucket's seconds"),
                }
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

    /// Reads the item's index (`timestamps:<item>`), then removes the item
    /// from those buckets in one script call that declares their keys;
    /// again while the index still names buckets (added meanwhile).
    async fn remove_delayed(&self, payload: &str) -> Result<Vec<i64>> {
        let key = self.keys.timestamps(payload);
        let mut removed: Vec<Vec<u8>> = Vec::new();
        for _ in 0..STALE_RETRIES {
            let members: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
                .arg(&key)
                .query_async(&mut self.conn())
                .await
                .rd_at(self, &key)
                .await?;
            if members.is_empty() {
                return Ok(parse_secs(&key, removed));
            }
            let mut inv = REMOVE_DELAYED.prepare_invoke();
            inv.key(&key).key(self.keys.schedule()).arg(payload);
            for m in &members {
                inv.key(self.keys.raw("", m)).arg(m);
            }
            let gone: Vec<Vec<u8>> = inv.invoke_async(&mut self.conn()).await.rd_at(self, &key).await?;
            removed.extend(gone);
        }
        Err(resq_core::Error::transient(format!(
            "redis: the index {key} kept changing while its item was being removed; try again"
        )))
    }

    /// Reads the schedule 200 buckets at a time, in score order; each
    /// bucket is cleaned atomically by one script call that declares the
    /// bucket's and its items' index keys (read just before; read again
    /// if the bucket changed meanwhile).
    async fn remove_delayed_by_class(&self, queue: &str, class: &str) -> Result<u64> {
        if class.is_empty() {
            return Ok(0);
        }
        let schedule = self.keys.schedule();
        let mut from = "-inf".to_owned();
        let mut removed: u64 = 0;
        loop {
            let found: Vec<(Vec<u8>, String)> = redis::cmd("ZRANGEBYSCORE")
                .arg(&schedule)
                .arg(&from)
                .arg("+inf")
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(BUCKETS_PER_CALL)
                .query_async(&mut self.conn())
                .await
                .rd_at(self, &schedule)
                .await?;
            for (m, _) in &found {
                removed += self.remove_bucket_by_class(queue, class, m).await?;
            }
            match found.last() {
                Some((_, last)) if found.len() == BUCKETS_PER_CALL => from = format!("({last}"),
                _ => return Ok(removed),
            }
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
                .arg(bucket)
                .arg(self.keys.wakeup_channel())
                .arg(stamp);
            let now = now_ms();
            let mut planned = Vec::with_capacity(items.len());
            for item in &items {
                // The script matches the item by its exact bytes.
                inv.arg(item).key(self.keys.raw("timestamps:", item));
                match std::str::from_utf8(item) {
                    Ok(text) => match promotion_target(text) {
                        Ok(queue) => {
                            inv.key(self.keys.queue(&queue)).key(self.keys.enqueued(&queue));
                            inv.arg("q").arg(&queue);
                            planned.push((text.to_owned(), Ok(queue)));
                        }
                        Err(reason) => {
                            let reason = format!("{reason} (read from {bucket_key})");
                            // Declared, not touched.
                            inv.key(self.keys.failed()).key(self.keys.failed());
                            inv.arg("f").arg(promotion_failure_entry(text, &reason, now));
                            planned.push((text.to_owned(), Err(reason)));
                        }
                    },
                    Err(_) => {
                        let entry = invalid_utf8_entry(SCHEDULER_WORKER, "", item, &bucket_key, now);
                        inv.key(self.keys.failed()).key(self.keys.failed());
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

impl RedisBackend {
    /// Removes from bucket `m` every item of `class` bound for `queue` (or
    /// naming no queue): reads the bucket's items, then cleans it with one
    /// script call that declares their index keys, again if the bucket
    /// changed in between. Returns how many were removed.
    async fn remove_bucket_by_class(&self, queue: &str, class: &str, m: &[u8]) -> Result<u64> {
        let schedule = self.keys.schedule();
        let list = self.keys.raw("delayed:", m);
        for _ in 0..STALE_RETRIES {
            let items: Vec<Vec<u8>> = redis::cmd("LRANGE")
                .arg(&list)
                .arg(0)
                .arg(-1)
                .query_async(&mut self.conn())
                .await
                .rd_at(self, &schedule)
                .await?;
            let mut distinct: Vec<&Vec<u8>> = Vec::with_capacity(items.len());
            let mut seen = std::collections::HashSet::new();
            for item in &items {
                if seen.insert(item) {
                    distinct.push(item);
                }
            }
            let mut inv = REMOVE_BUCKET_BY_CLASS.prepare_invoke();
            inv.key(&schedule).key(&list).arg(class).arg(queue).arg(m);
            for item in distinct {
                inv.key(self.keys.raw("timestamps:", item)).arg(item);
            }
            let n: i64 = inv.invoke_async(&mut self.conn()).await.rd_at(self, &schedule).await?;
            if let Ok(n) = u64::try_from(n) {
                return Ok(n);
            }
        }
        Err(resq_core::Error::transient(format!(
            "redis: the bucket {} kept changing while jobs of class {class} were being removed; try again",
            text(list)
        )))
    }
}
