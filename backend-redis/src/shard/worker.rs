//! [`WorkerRegistry`] of a sharded namespace: workers register, ping and
//! are cleaned on every shard; a working-on record lives on the shard its
//! job came from (a worker works on at most one job at a time).

use super::{union_sorted, ShardedRedis};
use async_trait::async_trait;
use resq_core::{Cleaned, Orphan, Result, WorkerId, WorkerRegistry, WorkerTimes, WorkingOn};
use std::collections::BTreeSet;

/// The first record of each worker over the shards' answers (one list per
/// shard, one entry per worker).
fn first_records(per_shard: Vec<Vec<Option<WorkingOn>>>, n: usize) -> Vec<Option<WorkingOn>> {
    let mut out: Vec<Option<WorkingOn>> = vec![None; n];
    for records in per_shard {
        for (slot, record) in out.iter_mut().zip(records) {
            if slot.is_none() {
                *slot = record;
            }
        }
    }
    out
}

#[async_trait]
impl WorkerRegistry for ShardedRedis {
    async fn register_worker(&self, worker: &WorkerId, now_ms: i64) -> Result<()> {
        self.on_all(|s| s.register_worker(worker, now_ms)).await.map(|_| ())
    }

    async fn ping_worker(&self, worker: &WorkerId, now_ms: i64) -> Result<()> {
        self.on_all(|s| s.ping_worker(worker, now_ms)).await.map(|_| ())
    }

    async fn register_workers(&self, workers: &[WorkerId], now_ms: i64) -> Result<()> {
        self.on_all(|s| s.register_workers(workers, now_ms)).await.map(|_| ())
    }

    async fn ping_workers(&self, workers: &[WorkerId], now_ms: i64) -> Result<()> {
        self.on_all(|s| s.ping_workers(workers, now_ms)).await.map(|_| ())
    }

    async fn workers(&self) -> Result<Vec<WorkerId>> {
        Ok(union_sorted(self.on_all(|s| s.workers()).await?))
    }

    async fn worker_started(&self, worker: &WorkerId) -> Result<Option<i64>> {
        Ok(self
            .on_all(|s| s.worker_started(worker))
            .await?
            .into_iter()
            .flatten()
            .next())
    }

    async fn working_on(&self, worker: &WorkerId) -> Result<Option<WorkingOn>> {
        Ok(self
            .on_all(|s| s.working_on(worker))
            .await?
            .into_iter()
            .flatten()
            .next())
    }

    async fn working_on_many(&self, workers: &[WorkerId]) -> Result<Vec<Option<WorkingOn>>> {
        let per_shard = self.on_all(|s| s.working_on_many(workers)).await?;
        Ok(first_records(per_shard, workers.len()))
    }

    /// The first shard's start time that is known, and the latest ping.
    async fn worker_times(&self, workers: &[WorkerId]) -> Result<Vec<WorkerTimes>> {
        let mut out = vec![WorkerTimes::default(); workers.len()];
        for times in self.on_all(|s| s.worker_times(workers)).await? {
            for (slot, t) in out.iter_mut().zip(times) {
                slot.started_ms = slot.started_ms.or(t.started_ms);
                slot.ping_ms = match (slot.ping_ms, t.ping_ms) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        Ok(out)
    }

    /// Workers stale on some shard and fresh on none (a ping that reached
    /// only some shards keeps the worker alive).
    async fn stale_workers(&self, cutoff_ms: i64) -> Result<Vec<WorkerId>> {
        let per_shard = self
            .on_all(|s| async move { Ok((s.workers().await?, s.stale_workers(cutoff_ms).await?)) })
            .await?;
        let mut stale: BTreeSet<WorkerId> = BTreeSet::new();
        let mut fresh: BTreeSet<WorkerId> = BTreeSet::new();
        for (all, old) in per_shard {
            let old_here: BTreeSet<WorkerId> = old.into_iter().collect();
            fresh.extend(all.into_iter().filter(|w| !old_here.contains(w)));
            stale.extend(old_here);
        }
        Ok(stale.into_iter().filter(|w| !fresh.contains(w)).collect())
    }

    /// Cleans the worker on every shard concurrently; its job, if any, is
    /// handed to `orphan` on the shard that held it.
    async fn clean_worker(&self, worker: &WorkerId, orphan: Orphan) -> Result<Option<Cleaned>> {
        let cleaned = self.on_all(|s| s.clean_worker(worker, orphan.clone())).await?;
        self.claimed_on.remove(worker);
        let mut merged: Option<Cleaned> = None;
        for c in cleaned.into_iter().flatten() {
            match merged.as_mut() {
                None => merged = Some(c),
                Some(m) => {
                    if m.working_on.is_none() {
                        m.working_on = c.working_on;
                    }
                    if m.failed_entry.is_none() {
                        m.failed_entry = c.failed_entry;
                    }
                }
            }
        }
        Ok(merged)
    }
}
