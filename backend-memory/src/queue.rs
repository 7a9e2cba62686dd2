//! Queues: the [`QueueStore`] implementation (push, claim and complete,
//! inspection, and the wait for new jobs).

use crate::{list, MemoryBackend};
use async_trait::async_trait;
use resq_core::backend::job_is_of_class;
use resq_core::{Claimed, Outcome, QueueLimits, QueueStat, QueueStore, QueuedJob, Result, WorkerId};
use std::time::Duration;
use tokio::time::Instant;

#[async_trait]
impl QueueStore for MemoryBackend {
    async fn push(&self, queue: &str, payload: &str) -> Result<()> {
        let payload = payload.to_owned();
        {
            let mut st = self.state.lock();
            st.push_tail(queue, payload);
            st.touch();
        }
        self.wakeup.wake();
        Ok(())
    }

    async fn push_once(&self, queue: &str, payload: &str, key: &str, value: &str, ttl: Duration) -> Result<bool> {
        let payload = payload.to_owned();
        {
            // The state lock is held across the lock-table check, so no other
            // push_once interleaves; plain lock calls never take the state lock.
            let mut st = self.state.lock();
            if !self.locks.try_take(key, value, ttl, tokio::time::Instant::now()) {
                return Ok(false);
            }
            st.push_tail(queue, payload);
            st.touch();
        }
        self.wakeup.wake();
        Ok(true)
    }

    async fn push_batch(&self, jobs: &[QueuedJob]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        // Copy the payloads before taking the lock, to keep it short.
        let payloads: Vec<String> = jobs.iter().map(|j| j.payload.clone()).collect();
        {
            let mut st = self.state.lock();
            for (job, payload) in jobs.iter().zip(payloads) {
                st.push_tail(&job.queue, payload);
            }
            st.touch();
        }
        self.wakeup.wake();
        Ok(())
    }

    async fn claim(&self, worker: &WorkerId, queues: &[String], run_at: &str) -> Result<Option<Claimed>> {
        let (index, payload, replaced, enqueued_at_ms) = {
            let mut st = self.state.lock();
            let mut now = crate::flow::ClaimTime::default();
            let mut popped = None;
            for (i, q) in queues.iter().enumerate() {
                // A queue at its limits is skipped, as a paused one is.
                if st.flow_room(q, 1, std::slice::from_ref(worker), &mut now) == 0 {
                    continue;
                }
                if let Some((payload, at)) = st.pop_head(q.as_str()) {
                    st.flow_took(q, 1, &mut now);
                    popped = Some((i, payload, at));
                    break;
                }
            }
            let Some((index, payload, enqueued_at_ms)) = popped else {
                return Ok(None);
            };
            let copy = payload.clone();
            // `index` came from enumerating `queues`, so it is in bounds.
            let replaced = st.working.start(worker, &queues[index], run_at, payload);
            st.touch();
            (index, copy, replaced, enqueued_at_ms)
        };
        drop(replaced);
        Ok(Some(Claimed {
            queue: queues[index].clone(),
            payload,
            enqueued_at_ms,
        }))
    }

    async fn claim_batch(
        &self,
        workers: &[WorkerId],
        queues: &[String],
        run_at: &str,
    ) -> Result<Vec<(usize, Claimed)>> {
        let mut out = Vec::with_capacity(workers.len());
        let mut replaced = Vec::new();
        {
            let mut st = self.state.lock();
            let mut now = crate::flow::ClaimTime::default();
            let mut slots = workers.iter().enumerate();
            'queues: for queue in queues {
                let want = workers.len() - out.len();
                if want == 0 {
                    break;
                }
                // As many as the queue's limits leave room for.
                let room = st.flow_room(queue, want, workers, &mut now);
                let mut took = 0;
                while took < room {
                    let Some((payload, enqueued_at_ms)) = st.pop_head(queue.as_str()) else {
                        break;
                    };
                    // `want > took` slots are left, so there is a next one.
                    let Some((slot, worker)) = slots.next() else {
                        st.push_head(queue, payload);
                        break 'queues;
                    };
                    took += 1;
                    let copy = payload.clone();
                    replaced.push(st.working.start(worker, queue, run_at, payload));
                    out.push((
                        slot,
                        Claimed {
                            queue: queue.clone(),
                            payload: copy,
                            enqueued_at_ms,
                        },
                    ));
                }
                st.flow_took(queue, took, &mut now);
            }
            if !out.is_empty() {
                st.touch();
            }
        }
        drop(replaced);
        Ok(out)
    }

    async fn complete_batch(&self, done: &[(WorkerId, Outcome)]) -> Result<()> {
        let mut finished = Vec::with_capacity(done.len());
        {
            let mut st = self.state.lock();
            for (worker, outcome) in done {
                finished.push(st.working.finish(worker));
                match outcome {
                    Outcome::Success => st.stats.count_processed(&worker.name),
                    Outcome::Failure { entry } => {
                        st.stats.count_failed(&worker.name);
                        st.failed.push_back(entry.clone());
                    }
                    Outcome::Discard => {}
                }
            }
            st.touch();
        }
        drop(finished);
        Ok(())
    }

    async fn complete(&self, worker: &WorkerId, outcome: Outcome) -> Result<()> {
        let finished = {
            let mut st = self.state.lock();
            let finished = st.working.finish(worker);
            match outcome {
                Outcome::Success => st.stats.count_processed(&worker.name),
                Outcome::Failure { entry } => {
                    st.stats.count_failed(&worker.name);
                    st.failed.push_back(entry);
                }
                Outcome::Discard => {}
            }
            st.touch();
            finished
        };
        drop(finished);
        Ok(())
    }

    async fn wait_for_jobs(&self, queues: &[String], timeout: Duration) -> Result<()> {
        // `None`: a timeout too large to represent, so wait for a signal only.
        let deadline = Instant::now().checked_add(timeout);
        let waiter = self.wakeup.register();
        loop {
            // Arm first, then look: a push after the look is signalled to
            // the armed future (see `Wakeup`).
            let notified = waiter.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.state.lock().any_ready(queues) {
                return Ok(());
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Ok(());
                    }
                }
                None => notified.await,
            }
            // Woken by a push, maybe to another queue: look again.
        }
    }

    async fn queue_len(&self, queue: &str) -> Result<u64> {
        let st = self.state.lock();
        Ok(st.queues.get(queue).map_or(0, |l| l.len() as u64))
    }

    async fn queue_range(&self, queue: &str, start: i64, stop: i64) -> Result<Vec<String>> {
        let st = self.state.lock();
        Ok(st
            .queues
            .get(queue)
            .map_or_else(Vec::new, |l| list::range(l, start, stop)))
    }

    async fn remove_from_queue(&self, queue: &str, payload: &str, count: i64) -> Result<u64> {
        let mut st = self.state.lock();
        let matches = st
            .queues
            .get(queue)
            .map_or(0, |l| l.iter().filter(|item| *item == payload).count());
        if matches == 0 {
            return Ok(0);
        }
        let removed = st.retain_jobs(queue, list::lrem_keep(matches, payload, count));
        if removed > 0 {
            st.touch();
        }
        Ok(removed)
    }

    async fn delete_queue(&self, queue: &str) -> Result<bool> {
        let removed = {
            let mut st = self.state.lock();
            let removed = st.delete_queue(queue);
            if removed.is_some() {
                st.touch();
            }
            removed
        };
        Ok(removed.is_some_and(|l| !l.is_empty()))
    }

    async fn push_front(&self, queue: &str, payload: &str) -> Result<()> {
        let payload = payload.to_owned();
        {
            let mut st = self.state.lock();
            st.push_head(queue, payload);
            st.touch();
        }
        self.wakeup.wake();
        Ok(())
    }

    /// In place, under the state lock: one pass, no copy of the queue.
    async fn remove_by_class(&self, queue: &str, class: &str) -> Result<u64> {
        let mut st = self.state.lock();
        let removed = st.retain_jobs(queue, |raw| !job_is_of_class(raw, class));
        if removed > 0 {
            st.touch();
        }
        Ok(removed)
    }

    async fn queues(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self.state.lock().queues.keys().cloned().collect();
        names.sort_unstable();
        Ok(names)
    }

    async fn pause_queue(&self, queue: &str) -> Result<bool> {
        let mut st = self.state.lock();
        let paused = st.paused.insert(queue.to_owned());
        if paused {
            st.touch();
        }
        Ok(paused)
    }

    async fn resume_queue(&self, queue: &str) -> Result<bool> {
        let mut st = self.state.lock();
        let resumed = st.paused.remove(queue);
        if resumed {
            st.touch();
        }
        Ok(resumed)
    }

    async fn paused_queues(&self) -> Result<Vec<String>> {
        Ok(self.state.lock().paused.iter().cloned().collect())
    }

    async fn set_queue_limits(&self, queue: &str, limits: QueueLimits) -> Result<()> {
        limits.check()?;
        let mut st = self.state.lock();
        if limits.is_unlimited() {
            st.limits.remove(queue);
            st.starts.remove(queue);
        } else {
            st.limits.insert(queue.to_owned(), limits);
        }
        st.touch();
        Ok(())
    }

    async fn queue_limits(&self) -> Result<Vec<(String, QueueLimits)>> {
        let st = self.state.lock();
        Ok(st.limits.iter().map(|(q, l)| (q.clone(), *l)).collect())
    }

    async fn queue_stats(&self, queues: &[String]) -> Result<Vec<QueueStat>> {
        let st = self.state.lock();
        Ok(queues
            .iter()
            .map(|q| QueueStat {
                queue: q.clone(),
                length: st.queues.get(q.as_str()).map_or(0, |l| l.len() as u64),
                oldest_enqueued_ms: st.head_enqueued(q),
            })
            .collect())
    }
}
