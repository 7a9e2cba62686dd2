//! [`DelayedStore`] of a sharded namespace: an item lives on the shard of
//! the queue its JSON names (shard 0 when it names none); promotion runs
//! on every shard, earliest bucket first across them.

use super::{union_sorted, ShardedRedis, HOME};
use async_trait::async_trait;
use resq_core::{DelayedStore, Promotion, QueueStore, Result};
use std::collections::BTreeMap;

impl ShardedRedis {
    /// The shard an item is filed on when scheduled.
    fn item_shard(&self, payload: &str) -> usize {
        self.shard_of_json(payload).unwrap_or(HOME)
    }

    /// The shards to look for an item on: its own, or every shard for an
    /// item that names no queue (filed on shard 0 by resq, but any writer
    /// may have put it anywhere).
    fn item_shards(&self, payload: &str) -> Vec<usize> {
        match self.shard_of_json(payload) {
            Some(s) => vec![s],
            None => (0..self.shards.len()).collect(),
        }
    }
}

#[async_trait]
impl DelayedStore for ShardedRedis {
    async fn schedule(&self, timestamp: i64, payload: &str) -> Result<bool> {
        self.shard(self.item_shard(payload)).schedule(timestamp, payload).await
    }

    /// Each shard's first `limit` due buckets, merged.
    async fn due_timestamps(&self, up_to: i64, limit: usize) -> Result<Vec<i64>> {
        let mut all = union_sorted(self.on_all(|s| s.due_timestamps(up_to, limit)).await?);
        all.truncate(limit);
        Ok(all)
    }

    async fn delayed_timestamps(&self) -> Result<Vec<i64>> {
        Ok(union_sorted(self.on_all(|s| s.delayed_timestamps()).await?))
    }

    /// The bucket's items on every shard, shard after shard (insertion
    /// order holds within a shard, not across shards).
    async fn delayed_at(&self, timestamp: i64) -> Result<Vec<String>> {
        Ok(self
            .on_all(|s| s.delayed_at(timestamp))
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    async fn timestamps_of(&self, payload: &str) -> Result<Vec<i64>> {
        let mut found = Vec::new();
        for s in self.item_shards(payload) {
            found.push(self.shard(s).timestamps_of(payload).await?);
        }
        Ok(union_sorted(found))
    }

    async fn remove_delayed(&self, payload: &str) -> Result<Vec<i64>> {
        let mut found = Vec::new();
        for s in self.item_shards(payload) {
            found.push(self.shard(s).remove_delayed(payload).await?);
        }
        Ok(union_sorted(found))
    }

    /// On the queue's shard, and on shard 0 for items that name no queue
    /// (they count as bound for every queue).
    async fn remove_delayed_by_class(&self, queue: &str, class: &str) -> Result<u64> {
        let own = self.shard_of(queue);
        let mut removed = self.shard(own).remove_delayed_by_class(queue, class).await?;
        if own != HOME {
            removed += self.shard(HOME).remove_delayed_by_class(queue, class).await?;
        }
        Ok(removed)
    }

    /// Promotes in bucket order across the shards: the shards' due buckets
    /// are merged, and each stretch of consecutive buckets on one shard is
    /// one promotion call there, until `limit` items moved. Each item
    /// moves atomically, as on one shard.
    async fn promote_due(&self, up_to: i64, limit: usize) -> Result<Vec<Promotion>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let due = self.on_all(|s| s.due_timestamps(up_to, limit)).await?;
        let mut merged: Vec<(i64, usize)> = due
            .into_iter()
            .enumerate()
            .flat_map(|(s, ts)| ts.into_iter().map(move |t| (t, s)))
            .collect();
        merged.sort_unstable();
        merged.truncate(limit);
        let mut done: Vec<Promotion> = Vec::new();
        let mut i = 0;
        while i < merged.len() && done.len() < limit {
            let Some(&(_, shard)) = merged.get(i) else { break };
            let mut last = i;
            while merged.get(last + 1).is_some_and(|(_, s)| *s == shard) {
                last += 1;
            }
            let Some(&(through, _)) = merged.get(last) else { break };
            let moved = self.shard(shard).promote_due(through, limit - done.len()).await?;
            done.extend(moved);
            i = last + 1;
        }
        Ok(done)
    }

    /// Atomic when the item sits on `queue`'s shard (the usual case: it
    /// names that queue). Otherwise the item is taken out of its bucket,
    /// then pushed on `queue`'s shard; a push that fails files the item
    /// back in its bucket and returns the error (if the process dies
    /// between the two steps the item is lost).
    async fn promote_delayed(&self, timestamp: i64, payload: &str, queue: &str) -> Result<bool> {
        let target = self.shard_of(queue);
        for s in self.item_shards(payload) {
            if s == target {
                if self.shard(s).promote_delayed(timestamp, payload, queue).await? {
                    return Ok(true);
                }
                continue;
            }
            if !self.shard(s).remove_delayed_at(timestamp, payload).await? {
                continue;
            }
            if let Err(e) = self.shard(target).push(queue, payload).await {
                if let Err(back) = self.shard(s).schedule(timestamp, payload).await {
                    tracing::error!(target: "resq::redis", error = %back, timestamp, payload,
                        "a delayed item to run now could be neither pushed nor put back: it is lost");
                }
                return Err(e);
            }
            return Ok(true);
        }
        Ok(false)
    }

    async fn remove_delayed_at(&self, timestamp: i64, payload: &str) -> Result<bool> {
        for s in self.item_shards(payload) {
            if self.shard(s).remove_delayed_at(timestamp, payload).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn delayed_bucket_sizes(&self) -> Result<Vec<(i64, u64)>> {
        let mut sums: BTreeMap<i64, u64> = BTreeMap::new();
        for sizes in self.on_all(|s| s.delayed_bucket_sizes()).await? {
            for (ts, n) in sizes {
                *sums.entry(ts).or_insert(0) += n;
            }
        }
        Ok(sums.into_iter().collect())
    }

    async fn delayed_count(&self) -> Result<u64> {
        Ok(self.on_all(|s| s.delayed_count()).await?.into_iter().sum())
    }
}
