//! [`QueueStore`] of a sharded namespace: queues route to their shard,
//! claims walk the caller's priority list shard run by shard run.

use super::{union_sorted, ShardedRedis};
use crate::wake::ANY;
use async_trait::async_trait;
use futures_util::future::{select_all, try_join_all};
use futures_util::FutureExt;
use resq_core::flow::QueueLimits;
use resq_core::{Claimed, LockStore, Outcome, QueueStat, QueueStore, QueuedJob, Result, WorkerId, WorkerRegistry};
use std::collections::BTreeMap;
use std::time::Duration;

/// `queues` cut into maximal runs of consecutive queues on one of
/// `shards` shards, in order, each with its shard.
fn runs_of(queues: &[String], shards: usize) -> Vec<(usize, &[String])> {
    let mut out: Vec<(usize, &[String])> = Vec::new();
    let mut start = 0;
    for i in 1..=queues.len() {
        let cut = match (queues.get(start), queues.get(i)) {
            (Some(a), Some(b)) => super::shard_index(a, shards) != super::shard_index(b, shards),
            _ => true,
        };
        if cut {
            if let (Some(first), Some(run)) = (queues.get(start), queues.get(start..i)) {
                out.push((super::shard_index(first, shards), run));
            }
            start = i;
        }
    }
    out
}

impl ShardedRedis {
    /// The caller's queue list cut into maximal runs of consecutive queues
    /// on one shard, in order: trying the runs in turn keeps the priority
    /// order, each run being one claim script on one slot.
    pub(crate) fn runs<'q>(&self, queues: &'q [String]) -> Vec<(usize, &'q [String])> {
        runs_of(queues, self.shards.len())
    }

    /// The shard `worker`'s current job was claimed on: the one this
    /// process remembers, else the one holding its working-on record;
    /// `None` when no shard holds one.
    pub(crate) async fn shard_of_worker(&self, worker: &WorkerId) -> Result<Option<usize>> {
        if let Some(s) = self.claimed_on.get(worker) {
            return Ok(Some(*s));
        }
        let records = self.on_all(|s| s.working_on(worker)).await?;
        Ok(records.iter().position(Option::is_some))
    }

    /// Where a completion goes: the shard of the worker's claim; without a
    /// working-on record anywhere (nothing to remove), the shard of the
    /// failed entry's queue for a failure (home without one), home else.
    async fn completion_shard(&self, worker: &WorkerId, outcome: &Outcome) -> Result<usize> {
        if let Some(s) = self.shard_of_worker(worker).await? {
            return Ok(s);
        }
        Ok(match outcome {
            Outcome::Failure { entry } => self.shard_of_json(entry).unwrap_or(super::HOME),
            _ => super::HOME,
        })
    }

    /// Completions grouped by shard, each group in the caller's order.
    async fn group_completions(
        &self,
        done: &[(WorkerId, Outcome)],
    ) -> Result<BTreeMap<usize, Vec<(WorkerId, Outcome)>>> {
        let mut groups: BTreeMap<usize, Vec<(WorkerId, Outcome)>> = BTreeMap::new();
        for (w, outcome) in done {
            let s = self.completion_shard(w, outcome).await?;
            groups.entry(s).or_default().push((w.clone(), outcome.clone()));
        }
        Ok(groups)
    }

    /// Forgets the claims of completed workers.
    fn forget(&self, done: &[(WorkerId, Outcome)]) {
        for (w, _) in done {
            self.claimed_on.remove(w);
        }
    }

    /// Forgets where idle slots about to claim had their last job: a claim
    /// whose reply is lost may still have given them one, on any shard, so
    /// until a claim answers, their completions look their shard up.
    fn forget_idle(&self, workers: &[WorkerId]) {
        for w in workers {
            self.claimed_on.remove(w);
        }
    }

    /// The claim runs from `from_run` on, for `workers[next..]`, appended to
    /// `out` with indexes into `workers`. An error after some claims went
    /// through is logged and ends the round with what was claimed (the
    /// slots left idle claim again next round); before any, it is returned.
    async fn claim_runs(
        &self,
        runs: &[(usize, &[String])],
        workers: &[WorkerId],
        mut next: usize,
        run_at: &str,
        mut out: Vec<(usize, Claimed)>,
    ) -> Result<Vec<(usize, Claimed)>> {
        for (s, run) in runs {
            let Some(rest) = workers.get(next..).filter(|r| !r.is_empty()) else {
                break;
            };
            let got = match self.shard(*s).claim_batch(rest, run, run_at).await {
                Ok(got) => got,
                Err(e) if !out.is_empty() => {
                    tracing::warn!(target: "resq::redis", shard = s, error = %e,
                        "claiming on a shard failed after claims on others: the idle slots claim next round");
                    return Ok(out);
                }
                Err(e) => return Err(e),
            };
            let mut last = None;
            for (i, c) in got {
                let index = next + i;
                if let Some(w) = workers.get(index) {
                    self.claimed_on.insert(w.clone(), *s);
                }
                last = Some(last.map_or(index, |l: usize| l.max(index)));
                out.push((index, c));
            }
            if let Some(last) = last {
                next = last + 1;
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl QueueStore for ShardedRedis {
    async fn push(&self, queue: &str, payload: &str) -> Result<()> {
        self.of_queue(queue).push(queue, payload).await
    }

    /// One atomic step when the lock `key` lives on the queue's shard.
    /// Otherwise two: the lock is taken on its shard, then the job pushed
    /// on the queue's; a push that fails releases the lock again (if the
    /// process dies between the two, the lock stays until its TTL and the
    /// job is not pushed: "at most once", never twice).
    async fn push_once(&self, queue: &str, payload: &str, key: &str, value: &str, ttl: Duration) -> Result<bool> {
        let queue_shard = self.shard_of(queue);
        let lock_shard = super::shard_index(key, self.shards.len());
        if queue_shard == lock_shard {
            return self.shard(queue_shard).push_once(queue, payload, key, value, ttl).await;
        }
        if !self.shard(lock_shard).acquire_lock(key, value, ttl).await? {
            return Ok(false);
        }
        match self.shard(queue_shard).push(queue, payload).await {
            Ok(()) => Ok(true),
            Err(e) => {
                if let Err(release) = self.shard(lock_shard).release_lock(key, value).await {
                    tracing::warn!(target: "resq::redis", key, error = %release,
                        "could not release an enqueue-once lock after a failed push: it expires with its TTL");
                }
                Err(e)
            }
        }
    }

    /// Groups the jobs by shard (each queue's jobs keep their order) and
    /// pushes the groups concurrently, each one step on its shard.
    async fn push_batch(&self, jobs: &[QueuedJob]) -> Result<()> {
        let mut groups: BTreeMap<usize, Vec<QueuedJob>> = BTreeMap::new();
        for job in jobs {
            groups.entry(self.shard_of(&job.queue)).or_default().push(job.clone());
        }
        try_join_all(groups.iter().map(|(s, group)| self.shard(*s).push_batch(group))).await?;
        Ok(())
    }

    async fn claim(&self, worker: &WorkerId, queues: &[String], run_at: &str) -> Result<Option<Claimed>> {
        self.forget_idle(std::slice::from_ref(worker));
        for (s, run) in self.runs(queues) {
            if let Some(c) = self.shard(s).claim(worker, run, run_at).await? {
                self.claimed_on.insert(worker.clone(), s);
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    async fn complete(&self, worker: &WorkerId, outcome: Outcome) -> Result<()> {
        let s = self.completion_shard(worker, &outcome).await?;
        self.shard(s).complete(worker, outcome).await?;
        self.claimed_on.remove(worker);
        Ok(())
    }

    async fn claim_batch(
        &self,
        workers: &[WorkerId],
        queues: &[String],
        run_at: &str,
    ) -> Result<Vec<(usize, Claimed)>> {
        let runs = self.runs(queues);
        self.forget_idle(workers);
        self.claim_runs(&runs, workers, 0, run_at, Vec::new()).await
    }

    /// The completions grouped by shard, concurrently (each group one
    /// transaction on its shard).
    async fn complete_batch(&self, done: &[(WorkerId, Outcome)]) -> Result<()> {
        let groups = self.group_completions(done).await?;
        try_join_all(groups.iter().map(|(s, group)| self.shard(*s).complete_batch(group))).await?;
        self.forget(done);
        Ok(())
    }

    /// When every completion and the first claim run are on one shard, that
    /// shard's one-round-trip round, then the other runs; else the
    /// completions (grouped by shard, concurrently), then the claims.
    async fn complete_and_claim_batch(
        &self,
        done: &[(WorkerId, Outcome)],
        workers: &[WorkerId],
        queues: &[String],
        run_at: &str,
    ) -> Result<Result<Vec<(usize, Claimed)>>> {
        let runs = self.runs(queues);
        let groups = self.group_completions(done).await?;
        let one_shard = match (groups.len(), runs.first()) {
            (1, Some((first, _))) => groups.keys().next().filter(|s| *s == first).copied(),
            _ => None,
        };
        let (Some(s), Some((_, first_run))) = (one_shard, runs.first()) else {
            try_join_all(groups.iter().map(|(s, group)| self.shard(*s).complete_batch(group))).await?;
            self.forget(done);
            self.forget_idle(workers);
            return Ok(self.claim_runs(&runs, workers, 0, run_at, Vec::new()).await);
        };
        // The round may claim for `workers` even when its reply is lost.
        self.forget_idle(workers);
        let round = self
            .shard(s)
            .complete_and_claim_batch(done, workers, first_run, run_at)
            .await?;
        self.forget(done);
        let got = match round {
            Ok(got) => got,
            Err(e) => return Ok(Err(e)),
        };
        let mut out = Vec::with_capacity(got.len());
        let mut next = 0;
        for (i, c) in got {
            if let Some(w) = workers.get(i) {
                self.claimed_on.insert(w.clone(), s);
            }
            next = next.max(i + 1);
            out.push((i, c));
        }
        Ok(self
            .claim_runs(runs.get(1..).unwrap_or(&[]), workers, next, run_at, out)
            .await)
    }

    /// Waits on the shards of `queues` (every shard for `*`) concurrently
    /// and returns when the first returns.
    async fn wait_for_jobs(&self, queues: &[String], timeout: Duration) -> Result<()> {
        let mut per_shard: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        if queues.iter().any(|q| q == ANY) {
            for s in 0..self.shards.len() {
                per_shard.insert(s, vec![ANY.to_owned()]);
            }
        } else {
            for q in queues {
                per_shard.entry(self.shard_of(q)).or_default().push(q.clone());
            }
        }
        if per_shard.is_empty() {
            tokio::time::sleep(timeout).await;
            return Ok(());
        }
        let waits = per_shard
            .iter()
            .map(|(s, qs)| self.shard(*s).wait_for_jobs(qs, timeout).boxed());
        let (first, _, _) = select_all(waits).await;
        first
    }

    async fn queue_len(&self, queue: &str) -> Result<u64> {
        self.of_queue(queue).queue_len(queue).await
    }

    async fn queue_range(&self, queue: &str, start: i64, stop: i64) -> Result<Vec<String>> {
        self.of_queue(queue).queue_range(queue, start, stop).await
    }

    async fn remove_from_queue(&self, queue: &str, payload: &str, count: i64) -> Result<u64> {
        self.of_queue(queue).remove_from_queue(queue, payload, count).await
    }

    async fn delete_queue(&self, queue: &str) -> Result<bool> {
        self.of_queue(queue).delete_queue(queue).await
    }

    async fn push_front(&self, queue: &str, payload: &str) -> Result<()> {
        self.of_queue(queue).push_front(queue, payload).await
    }

    async fn remove_by_class(&self, queue: &str, class: &str) -> Result<u64> {
        self.of_queue(queue).remove_by_class(queue, class).await
    }

    async fn queues(&self) -> Result<Vec<String>> {
        Ok(union_sorted(self.on_all(|s| s.queues()).await?))
    }

    async fn pause_queue(&self, queue: &str) -> Result<bool> {
        self.of_queue(queue).pause_queue(queue).await
    }

    async fn resume_queue(&self, queue: &str) -> Result<bool> {
        self.of_queue(queue).resume_queue(queue).await
    }

    async fn paused_queues(&self) -> Result<Vec<String>> {
        Ok(union_sorted(self.on_all(|s| s.paused_queues()).await?))
    }

    async fn set_queue_limits(&self, queue: &str, limits: QueueLimits) -> Result<()> {
        self.of_queue(queue).set_queue_limits(queue, limits).await
    }

    async fn queue_limits(&self) -> Result<Vec<(String, QueueLimits)>> {
        let mut all: Vec<(String, QueueLimits)> =
            self.on_all(|s| s.queue_limits()).await?.into_iter().flatten().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }

    /// Each shard's queues in one call per shard, concurrently, answered in
    /// the caller's order.
    async fn queue_stats(&self, queues: &[String]) -> Result<Vec<QueueStat>> {
        let mut per_shard: BTreeMap<usize, (Vec<usize>, Vec<String>)> = BTreeMap::new();
        for (i, q) in queues.iter().enumerate() {
            let entry = per_shard.entry(self.shard_of(q)).or_default();
            entry.0.push(i);
            entry.1.push(q.clone());
        }
        let answers = try_join_all(per_shard.iter().map(|(s, (_, qs))| self.shard(*s).queue_stats(qs))).await?;
        let mut out: Vec<Option<QueueStat>> = vec![None; queues.len()];
        for ((_, (positions, _)), stats) in per_shard.iter().zip(answers) {
            for (i, stat) in positions.iter().zip(stats) {
                if let Some(slot) = out.get_mut(*i) {
                    *slot = Some(stat);
                }
            }
        }
        Ok(queues
            .iter()
            .zip(out)
            .map(|(q, stat)| {
                stat.unwrap_or_else(|| QueueStat {
                    queue: q.clone(),
                    length: 0,
                    oldest_enqueued_ms: None,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_cut_the_priority_list_where_the_shard_changes() {
        // On 3 shards: default and low on 0, emails on 1, critical and math on 2.
        let q = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<String>>();
        let queues = q(&["critical", "math", "default", "emails", "low", "default"]);
        let got: Vec<(usize, Vec<String>)> = runs_of(&queues, 3).into_iter().map(|(s, r)| (s, r.to_vec())).collect();
        assert_eq!(
            got,
            [
                (2, q(&["critical", "math"])),
                (0, q(&["default"])),
                (1, q(&["emails"])),
                (0, q(&["low", "default"])),
            ]
        );
        assert!(runs_of(&[], 3).is_empty());
        assert_eq!(runs_of(&queues, 1).len(), 1);
    }
}
