//! [`FailedStore`] of a sharded namespace: the shards' failed lists read
//! as one list, shard 0's first, then shard 1's, and so on.

use super::{ShardedRedis, HOME};
use async_trait::async_trait;
use resq_core::{FailedStore, QueueStore, Result};

impl ShardedRedis {
    /// Each shard's failed-list length, in shard order.
    async fn failed_counts(&self) -> Result<Vec<u64>> {
        self.on_all(|s| s.failed_count()).await
    }

    /// The shard and local index of global position `index` under `counts`.
    fn locate(counts: &[u64], index: u64) -> Option<(usize, u64)> {
        let mut before = 0u64;
        for (s, n) in counts.iter().enumerate() {
            if index < before + n {
                return Some((s, index - before));
            }
            before += n;
        }
        None
    }

    /// Takes `entry` out of shard `from`'s failed list, known to hold it,
    /// (already done by the caller) and pushes `payload` on `queue`'s shard;
    /// a push that fails puts the entry back at the tail of `from`'s list.
    async fn requeue_taken(&self, from: usize, entry: &str, queue: &str, payload: &str) -> Result<()> {
        if let Err(e) = self.of_queue(queue).push(queue, payload).await {
            if let Err(back) = self.shard(from).push_failed(entry).await {
                tracing::error!(target: "resq::redis", error = %back, entry,
                    "a failed entry to retry could be neither requeued nor put back: it is lost");
            }
            return Err(e);
        }
        Ok(())
    }
}

#[async_trait]
impl FailedStore for ShardedRedis {
    /// Appends to the home shard's list, whatever the entry's queue, so
    /// that entries pushed this way keep their order among themselves (the
    /// listing reads the home shard's list first). Entries of jobs that
    /// fail in a worker are written by the completion on the job's shard.
    async fn push_failed(&self, entry: &str) -> Result<()> {
        self.shard(HOME).push_failed(entry).await
    }

    async fn failed_count(&self) -> Result<u64> {
        Ok(self.failed_counts().await?.into_iter().sum())
    }

    /// `LRANGE` semantics over the concatenated lists (negative indexes
    /// count from the global tail). The lengths and the ranges are read in
    /// two steps: an entry added or removed in between may shift the page.
    async fn failed_range(&self, start: i64, stop: i64) -> Result<Vec<String>> {
        let counts = self.failed_counts().await?;
        let total = i64::try_from(counts.iter().sum::<u64>()).unwrap_or(i64::MAX);
        let start = if start < 0 { (total + start).max(0) } else { start };
        let stop = if stop < 0 { total + stop } else { stop.min(total - 1) };
        if total == 0 || start > stop || start >= total {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut before = 0i64;
        for (s, n) in counts.iter().enumerate() {
            let n = i64::try_from(*n).unwrap_or(i64::MAX);
            let (from, to) = (start.max(before), stop.min(before + n - 1));
            if from <= to {
                out.extend(self.shard(s).failed_range(from - before, to - before).await?);
            }
            before += n;
        }
        Ok(out)
    }

    /// The first shard (in order) holding `entry` removes its first copy.
    async fn remove_failed(&self, entry: &str) -> Result<u64> {
        for s in 0..self.shards.len() {
            let n = self.shard(s).remove_failed(entry).await?;
            if n > 0 {
                return Ok(n);
            }
        }
        Ok(0)
    }

    /// Atomic when `queue`'s shard holds the entry (the usual case: the
    /// job failed on its queue's shard). Otherwise two steps: the entry is
    /// removed from the first shard holding it, then `payload` is pushed
    /// on `queue`'s shard; if the push fails the entry goes back to the
    /// tail of its list and the error is returned. A process that dies
    /// between the two steps loses the retry: the entry is gone and the
    /// job is on no queue. Nothing is lost when both steps complete or
    /// the push fails with this process still alive to put the entry back.
    async fn retry_failed(&self, entry: &str, queue: &str, payload: &str) -> Result<bool> {
        let target = self.shard_of(queue);
        if self.shard(target).retry_failed(entry, queue, payload).await? {
            return Ok(true);
        }
        for s in (0..self.shards.len()).filter(|s| *s != target) {
            if self.shard(s).remove_failed(entry).await? > 0 {
                self.requeue_taken(s, entry, queue, payload).await?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn remove_failed_at(&self, index: u64, entry: &str) -> Result<bool> {
        let counts = self.failed_counts().await?;
        match Self::locate(&counts, index) {
            Some((s, local)) => self.shard(s).remove_failed_at(local, entry).await,
            None => Ok(false),
        }
    }

    /// As [`ShardedRedis::retry_failed`]: atomic when the entry sits on
    /// `queue`'s shard, else removal (checked by position and bytes) then
    /// push, with the same window.
    async fn retry_failed_at(&self, index: u64, entry: &str, queue: &str, payload: &str) -> Result<bool> {
        let counts = self.failed_counts().await?;
        let Some((s, local)) = Self::locate(&counts, index) else {
            return Ok(false);
        };
        if s == self.shard_of(queue) {
            return self.shard(s).retry_failed_at(local, entry, queue, payload).await;
        }
        if !self.shard(s).remove_failed_at(local, entry).await? {
            return Ok(false);
        }
        self.requeue_taken(s, entry, queue, payload).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_global_positions() {
        let counts = [2, 0, 3];
        let got: Vec<Option<(usize, u64)>> = (0..6).map(|i| ShardedRedis::locate(&counts, i)).collect();
        assert_eq!(
            got,
            [
                Some((0, 0)),
                Some((0, 1)),
                Some((2, 0)),
                Some((2, 1)),
                Some((2, 2)),
                None
            ]
        );
    }
}
