//! Queues: `queue:<q>` lists, the `queues` set, claims and completions.

use crate::scripts::{
    CLAIM, CLAIM_BATCH, DIVERT_CLAIMED, PUSH, PUSH_BATCH, PUSH_ONCE, QUEUE_STATS, REMOVE_BY_CLASS, REMOVE_FROM_QUEUE,
};
use crate::wake::ANY;
use crate::{text, utf8_members, RedisBackend, RedisResult};
use async_trait::async_trait;
use resq_core::backend::REMOVAL_PAGE;
use resq_core::failed::invalid_utf8_entry;
use resq_core::json::write_js_str;
use resq_core::time::now_ms;
use resq_core::{Claimed, Outcome, QueueLimits, QueueStat, QueueStore, QueuedJob, Result, WorkerId};
use std::time::Duration;

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    write_js_str(&mut out, s);
    out
}

/// The value of an enqueue-time record written now: the time in epoch ms,
/// as a decimal string (the scripts read at most 15 digits back).
pub(crate) fn enqueue_stamp() -> String {
    now_ms().clamp(0, 999_999_999_999_999).to_string()
}

/// An enqueue time as a claim script returns it (-1: no record).
fn enqueued_at(ms: i64) -> Option<i64> {
    (ms >= 0).then_some(ms)
}

/// At most this many claimed items that are not valid UTF-8 are moved to
/// the failed list by one `claim` call.
const MAX_DIVERTED: usize = 100;

/// A value no payload has, to mark list items for removal: a NUL byte
/// (never in JSON text) and a per-call nonce.
fn tombstone() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "\0resq-removed\0{}:{}:{}",
        std::process::id(),
        resq_core::time::now_ms(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The claim script's rows: slot, queue index, payload, enqueue time.
type ClaimRows = Vec<(usize, usize, Vec<u8>, i64)>;

impl RedisBackend {
    /// The claim script's invocation for `workers` (idle slots) on `queues`
    /// (see `scripts::CLAIM_BATCH` for its KEYS and ARGV).
    fn claim_batch_invocation(
        &self,
        workers: &[WorkerId],
        queues: &[String],
        run_at: &str,
    ) -> redis::ScriptInvocation<'static> {
        let mut inv = CLAIM_BATCH.prepare_invoke();
        for w in workers {
            inv.key(self.keys.working(w));
        }
        for q in queues {
            inv.key(self.keys.queue(q));
        }
        for q in queues {
            inv.key(self.keys.enqueued(q));
        }
        for q in queues {
            inv.key(self.keys.rate(q));
        }
        inv.key(self.keys.limits()).key(self.keys.slots());
        inv.arg(workers.len()).arg(json_str(run_at));
        for w in workers {
            inv.arg(json_str(&w.name));
        }
        for q in queues {
            inv.arg(json_str(q));
        }
        for q in queues {
            inv.arg(q);
        }
        for w in workers {
            inv.arg(w.member());
        }
        inv
    }

    /// The claims from the claim script's rows (slot, queue index, payload,
    /// enqueue time); a payload that is not UTF-8 goes to the failed list
    /// and its slot stays idle this round.
    async fn claimed_rows(
        &self,
        got: ClaimRows,
        workers: &[WorkerId],
        queues: &[String],
        run_at: &str,
    ) -> Result<Vec<(usize, Claimed)>> {
        let mut out = Vec::with_capacity(got.len());
        for (slot, q, payload, at) in got {
            let (Some(queue), Some(worker)) = (queues.get(q), workers.get(slot)) else {
                continue;
            };
            match String::from_utf8(payload) {
                Ok(payload) => out.push((
                    slot,
                    Claimed {
                        queue: queue.clone(),
                        payload,
                        enqueued_at_ms: enqueued_at(at),
                    },
                )),
                // The slot stays idle this round.
                Err(e) => self.divert_claimed(worker, queue, run_at, e.as_bytes()).await?,
            }
        }
        Ok(out)
    }

    /// Moves a claimed item that is not valid UTF-8 (another client's bytes,
    /// which a `String` cannot hold) from the worker's working-on record to
    /// the failed list, escaped and with its queue key named, and logs it.
    /// Until then the record holds it, so a crash in between loses nothing:
    /// cleaning the dead worker moves the whole record, escaped, to the
    /// failed list.
    async fn divert_claimed(&self, worker: &WorkerId, queue: &str, run_at: &str, item: &[u8]) -> Result<()> {
        let key = self.keys.queue(queue);
        let entry = invalid_utf8_entry(&worker.name, queue, item, &key, now_ms());
        let moved: i64 = DIVERT_CLAIMED
            .key(self.keys.working(worker))
            .key(self.keys.failed())
            .key(self.keys.stat("failed"))
            .key(self.keys.slots())
            .arg(json_str(run_at))
            .arg(json_str(queue))
            .arg(json_str(&worker.name))
            .arg(item)
            .arg(entry)
            .arg(worker.member())
            .invoke_async(&mut self.conn())
            .await
            .rd_at(self, &key)
            .await?;
        if moved == 1 {
            tracing::warn!(target: "resq::redis", key = %key, worker = %worker,
                "a queued job is not valid UTF-8: moved to the failed list with its bytes escaped");
        } else {
            tracing::warn!(target: "resq::redis", key = %key, worker = %worker,
                "a queued job is not valid UTF-8, and the working-on record holding it changed; left to the worker cleanup");
        }
        Ok(())
    }

    /// Queues one completion's commands: counters, failed entry, the
    /// removal of the working-on record and the release of the slot's
    /// concurrency-cap entry (unless `claims_next`: the claim script queued
    /// after it in the same transaction releases every claiming slot's
    /// entry first).
    fn add_completion(&self, pipe: &mut redis::Pipeline, worker: &WorkerId, outcome: &Outcome, claims_next: bool) {
        match outcome {
            Outcome::Success => {
                pipe.incr(self.keys.stat("processed"), 1)
                    .incr(self.keys.stat(&format!("processed:{}", worker.name)), 1);
            }
            Outcome::Failure { entry } => {
                pipe.incr(self.keys.stat("failed"), 1)
                    .incr(self.keys.stat(&format!("failed:{}", worker.name)), 1)
                    .rpush(self.keys.failed(), entry);
            }
            Outcome::Discard => {}
        }
        pipe.del(self.keys.working(worker));
        if !claims_next {
            pipe.hdel(self.keys.slots(), worker.member());
        }
    }
}

/// The slots a claim round claims for, for a membership test: a scan of a
/// short list, a hash set of a long one.
enum Claiming<'a> {
    Few(&'a [WorkerId]),
    Many(std::collections::HashSet<&'a WorkerId>),
}

impl<'a> Claiming<'a> {
    fn new(workers: &'a [WorkerId]) -> Self {
        if workers.len() <= 16 {
            Claiming::Few(workers)
        } else {
            Claiming::Many(workers.iter().collect())
        }
    }

    fn contains(&self, worker: &WorkerId) -> bool {
        match self {
            Claiming::Few(list) => list.contains(worker),
            Claiming::Many(set) => set.contains(worker),
        }
    }
}

/// Which end of a queue's list a push goes to.
#[derive(Clone, Copy)]
enum End {
    /// `RPUSH`: the normal enqueue.
    Tail,
    /// `LPUSH`: the job is taken next.
    Head,
}

impl RedisBackend {
    /// The UTF-8 members of the set `key`, sorted (others are skipped with
    /// a log line naming the key, see [`utf8_members`]).
    async fn sorted_members(&self, key: &str) -> Result<Vec<String>> {
        let members: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
            .arg(key)
            .query_async(&mut self.conn())
            .await
            .rd_at(self, key)
            .await?;
        let mut names = utf8_members(key, members);
        names.sort();
        Ok(names)
    }

    /// Adds the queue to the `queues` set, pushes `payload` at `end` of its
    /// list with its enqueue-time record and announces it to idle workers,
    /// in one atomic script call.
    async fn push_end(&self, queue: &str, payload: &str, end: End) -> Result<()> {
        let stamp = enqueue_stamp();
        let _: i64 = PUSH
            .key(self.keys.queues())
            .key(self.keys.queue(queue))
            .key(self.keys.enqueued(queue))
            .arg(queue)
            .arg(payload)
            .arg(self.keys.wakeup_channel())
            .arg(match end {
                End::Tail => "tail",
                End::Head => "head",
            })
            .arg(stamp)
            .invoke_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.queue(queue))
            .await?;
        Ok(())
    }
}

#[async_trait]
impl QueueStore for RedisBackend {
    async fn push(&self, queue: &str, payload: &str) -> Result<()> {
        self.push_end(queue, payload, End::Tail).await
    }

    async fn push_once(&self, queue: &str, payload: &str, key: &str, value: &str, ttl: Duration) -> Result<bool> {
        let stamp = enqueue_stamp();
        let pushed: i64 = PUSH_ONCE
            .key(self.keys.key(key))
            .key(self.keys.queues())
            .key(self.keys.queue(queue))
            .key(self.keys.enqueued(queue))
            .arg(value)
            .arg(crate::lock::ttl_ms(ttl))
            .arg(queue)
            .arg(payload)
            .arg(self.keys.wakeup_channel())
            .arg(stamp)
            .invoke_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.key(key))
            .await?;
        Ok(pushed == 1)
    }

    async fn push_batch(&self, jobs: &[QueuedJob]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let stamp = enqueue_stamp();
        // Every key the script touches is declared: each distinct queue's
        // list and record key, in order of first appearance.
        let mut distinct: Vec<&str> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for job in jobs {
            if seen.insert(job.queue.as_str()) {
                distinct.push(&job.queue);
            }
        }
        let mut inv = PUSH_BATCH.prepare_invoke();
        inv.key(self.keys.queues());
        for q in &distinct {
            inv.key(self.keys.queue(q)).key(self.keys.enqueued(q));
        }
        inv.arg(self.keys.wakeup_channel()).arg(stamp).arg(distinct.len());
        for q in &distinct {
            inv.arg(*q);
        }
        for job in jobs {
            inv.arg(&job.queue).arg(&job.payload);
        }
        let _: i64 = inv.invoke_async(&mut self.conn()).await.rd(self).await?;
        Ok(())
    }

    async fn claim(&self, worker: &WorkerId, queues: &[String], run_at: &str) -> Result<Option<Claimed>> {
        if queues.is_empty() {
            return Ok(None);
        }
        for _ in 0..MAX_DIVERTED {
            let mut inv = CLAIM.prepare_invoke();
            inv.key(self.keys.working(worker));
            for q in queues {
                inv.key(self.keys.queue(q));
            }
            for q in queues {
                inv.key(self.keys.enqueued(q));
            }
            for q in queues {
                inv.key(self.keys.rate(q));
            }
            inv.key(self.keys.limits()).key(self.keys.slots());
            inv.arg(json_str(run_at)).arg(json_str(&worker.name));
            for q in queues {
                inv.arg(json_str(q));
            }
            for q in queues {
                inv.arg(q);
            }
            inv.arg(worker.member());
            let got: Option<(usize, Vec<u8>, i64)> = inv.invoke_async(&mut self.conn()).await.rd(self).await?;
            let Some((index, payload, at)) = got else {
                return Ok(None);
            };
            let Some(queue) = queues.get(index.wrapping_sub(1)) else {
                return Ok(None);
            };
            match String::from_utf8(payload) {
                Ok(payload) => {
                    return Ok(Some(Claimed {
                        queue: queue.clone(),
                        payload,
                        enqueued_at_ms: enqueued_at(at),
                    }))
                }
                Err(e) => self.divert_claimed(worker, queue, run_at, e.as_bytes()).await?,
            }
        }
        // Only bad items so far: the worker polls again.
        Ok(None)
    }

    async fn claim_batch(
        &self,
        workers: &[WorkerId],
        queues: &[String],
        run_at: &str,
    ) -> Result<Vec<(usize, Claimed)>> {
        if workers.is_empty() || queues.is_empty() {
            return Ok(Vec::new());
        }
        let inv = self.claim_batch_invocation(workers, queues, run_at);
        let got: ClaimRows = inv.invoke_async(&mut self.conn()).await.rd(self).await?;
        self.claimed_rows(got, workers, queues, run_at).await
    }

    async fn complete_and_claim_batch(
        &self,
        done: &[(WorkerId, Outcome)],
        workers: &[WorkerId],
        queues: &[String],
        run_at: &str,
    ) -> Result<Result<Vec<(usize, Claimed)>>> {
        if done.is_empty() || workers.is_empty() || queues.is_empty() {
            self.complete_batch(done).await?;
            return Ok(self.claim_batch(workers, queues, run_at).await);
        }
        // One round trip: MULTI, the completions, the claim script, EXEC.
        // EXEC runs every queued command whatever one of them answers, so
        // a server error (the script not cached yet, or a command refused)
        // still leaves the completions recorded.
        let inv = self.claim_batch_invocation(workers, queues, run_at);
        let mut pipe = redis::pipe();
        pipe.atomic();
        // A finished slot that claims again in this round has its cap entry
        // released by the claim script (it starts by deleting every
        // claiming slot's entry), in the same transaction: its own `HDEL`
        // would be a second, useless command per job. If the script does
        // not run (not cached: `EXEC` still applies the completions), the
        // claim retried on its own releases it, and a slot that never
        // claims again is released by its worker's clean-up.
        let claiming = Claiming::new(workers);
        for (worker, outcome) in done {
            self.add_completion(&mut pipe, worker, outcome, claiming.contains(worker));
        }
        pipe.invoke_script(&inv);
        // The completions' replies are read and dropped here: marking them
        // `ignore`d costs a SipHash set insert per command and a lookup per
        // reply (about 1,200 instructions per job at 256 slots).
        let replied: std::result::Result<Vec<redis::Value>, redis::RedisError> =
            pipe.query_async(&mut self.conn()).await;
        let replied = replied.and_then(|mut replies| match replies.pop() {
            Some(rows) => redis::from_redis_value::<ClaimRows>(rows).map_err(redis::RedisError::from),
            None => Err(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "no reply to the claim script",
            ))),
        });
        match replied {
            Ok(got) => Ok(self.claimed_rows(got, workers, queues, run_at).await),
            // The first round after the server lost its script cache:
            // invoking the script on its own loads it.
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                Ok(self.claim_batch(workers, queues, run_at).await)
            }
            // Unknown whether anything was applied, or nothing was.
            Err(e)
                if crate::is_connection_error(&e)
                    || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ExecAbort) =>
            {
                Err(self.explain(e).await)
            }
            Err(e) => Ok(Err(self.explain(e).await)),
        }
    }

    async fn complete_batch(&self, done: &[(WorkerId, Outcome)]) -> Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (worker, outcome) in done {
            self.add_completion(&mut pipe, worker, outcome, false);
        }
        pipe.exec_async(&mut self.conn()).await.rd(self).await
    }

    async fn complete(&self, worker: &WorkerId, outcome: Outcome) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        self.add_completion(&mut pipe, worker, &outcome, false);
        pipe.exec_async(&mut self.conn()).await.rd(self).await
    }

    async fn wait_for_jobs(&self, queues: &[String], timeout: Duration) -> Result<()> {
        // Subscribe first, then look: a push that lands after the look is
        // announced to us; one that landed before it is seen by it.
        let started = tokio::time::Instant::now();
        let mut rx = self.wakeups.subscribe();
        // The subscription opens on first use: look only once it is in
        // place (or after `timeout`, when it cannot be: the look then
        // ends the wait as a plain poll would).
        self.wakeups.subscribed(timeout).await;
        let wildcard = queues.iter().any(|q| q == ANY);
        let look: Vec<String> = if wildcard {
            self.queues().await?
        } else {
            queues.to_vec()
        };
        if !look.is_empty() {
            let mut pipe = redis::pipe();
            for q in &look {
                pipe.llen(self.keys.queue(q));
            }
            let lens: Vec<u64> = pipe.query_async(&mut self.conn()).await.rd(self).await?;
            if lens.iter().any(|n| *n > 0) {
                return Ok(());
            }
        }
        let wait = async {
            loop {
                match rx.recv().await {
                    Ok(q) => {
                        if wildcard || &*q == ANY || queues.iter().any(|mine| mine.as_str() == &*q) {
                            return;
                        }
                    }
                    // Missed messages may have been ours.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        let _ = tokio::time::timeout_at(started + timeout, wait).await;
        Ok(())
    }

    async fn queue_len(&self, queue: &str) -> Result<u64> {
        redis::cmd("LLEN")
            .arg(self.keys.queue(queue))
            .query_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.queue(queue))
            .await
    }

    /// Items that are not UTF-8 are listed escaped (see `resq_core::failed::escape_bytes`).
    async fn queue_range(&self, queue: &str, start: i64, stop: i64) -> Result<Vec<String>> {
        let items: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(self.keys.queue(queue))
            .arg(start)
            .arg(stop)
            .query_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.queue(queue))
            .await?;
        Ok(items.into_iter().map(text).collect())
    }

    async fn remove_from_queue(&self, queue: &str, payload: &str, count: i64) -> Result<u64> {
        REMOVE_FROM_QUEUE
            .key(self.keys.queue(queue))
            .key(self.keys.enqueued(queue))
            .arg(count)
            .arg(payload)
            .invoke_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.queue(queue))
            .await
    }

    async fn delete_queue(&self, queue: &str) -> Result<bool> {
        let (deleted, _, _): (u64, u64, u64) = redis::pipe()
            .atomic()
            .del(self.keys.queue(queue))
            .srem(self.keys.queues(), queue)
            .del(self.keys.enqueued(queue))
            .query_async(&mut self.conn())
            .await
            .rd(self)
            .await?;
        Ok(deleted > 0)
    }

    async fn push_front(&self, queue: &str, payload: &str) -> Result<()> {
        self.push_end(queue, payload, End::Head).await
    }

    /// One script call per page of [`REMOVAL_PAGE`] payloads, walking from
    /// the tail: each page is scanned and cleaned atomically inside Redis,
    /// and no payload crosses the network.
    async fn remove_by_class(&self, queue: &str, class: &str) -> Result<u64> {
        if class.is_empty() {
            return Ok(0);
        }
        let tomb = tombstone();
        let key = self.keys.queue(queue);
        let mut visited: u64 = 0;
        let mut removed: u64 = 0;
        loop {
            let (gone, looked): (u64, u64) = REMOVE_BY_CLASS
                .key(&key)
                .key(self.keys.enqueued(queue))
                .arg(class)
                .arg(visited)
                .arg(REMOVAL_PAGE)
                .arg(&tomb)
                .invoke_async(&mut self.conn())
                .await
                .rd_at(self, &key)
                .await?;
            removed += gone;
            if looked < REMOVAL_PAGE as u64 {
                return Ok(removed);
            }
            visited += looked - gone;
        }
    }

    async fn queues(&self) -> Result<Vec<String>> {
        self.sorted_members(&self.keys.queues()).await
    }

    async fn pause_queue(&self, queue: &str) -> Result<bool> {
        let key = self.keys.paused();
        let added: i64 = redis::cmd("SADD")
            .arg(&key)
            .arg(queue)
            .query_async(&mut self.conn())
            .await
            .rd_at(self, &key)
            .await?;
        Ok(added > 0)
    }

    async fn resume_queue(&self, queue: &str) -> Result<bool> {
        let key = self.keys.paused();
        let removed: i64 = redis::cmd("SREM")
            .arg(&key)
            .arg(queue)
            .query_async(&mut self.conn())
            .await
            .rd_at(self, &key)
            .await?;
        Ok(removed > 0)
    }

    async fn paused_queues(&self) -> Result<Vec<String>> {
        self.sorted_members(&self.keys.paused()).await
    }

    async fn set_queue_limits(&self, queue: &str, limits: QueueLimits) -> Result<()> {
        limits.check()?;
        let key = self.keys.limits();
        let mut pipe = redis::pipe();
        pipe.atomic();
        if limits.is_unlimited() {
            pipe.hdel(&key, queue).ignore().del(self.keys.rate(queue)).ignore();
        } else {
            pipe.hset(&key, queue, crate::flow::encode(&limits)).ignore();
        }
        pipe.exec_async(&mut self.conn()).await.rd_at(self, &key).await
    }

    async fn queue_limits(&self) -> Result<Vec<(String, QueueLimits)>> {
        let key = self.keys.limits();
        let all: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut self.conn())
            .await
            .rd_at(self, &key)
            .await?;
        Ok(crate::flow::decode_all(&key, all))
    }

    /// One script call for all queues: each queue's `LLEN`, and its head
    /// job's enqueue time (`LINDEX 0` of the record list) when the record is
    /// in step with the queue. After another Resque client pushed or popped,
    /// it is not, and the time is unknown until the queue drains.
    async fn queue_stats(&self, queues: &[String]) -> Result<Vec<QueueStat>> {
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = QUEUE_STATS.prepare_invoke();
        for q in queues {
            inv.key(self.keys.queue(q));
        }
        for q in queues {
            inv.key(self.keys.enqueued(q));
        }
        let got: Vec<(u64, i64)> = inv.invoke_async(&mut self.conn()).await.rd(self).await?;
        if got.len() != queues.len() {
            return Err(resq_core::Error::transient(format!(
                "queue_stats: {} answers for {} queues",
                got.len(),
                queues.len()
            )));
        }
        Ok(queues
            .iter()
            .zip(got)
            .map(|(q, (length, at))| QueueStat {
                queue: q.clone(),
                length,
                oldest_enqueued_ms: enqueued_at(at),
            })
            .collect())
    }
}
