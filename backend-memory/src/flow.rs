//! Flow control (see [`resq_core::flow`]): the queues' limits and the
//! state they are enforced with, under the state lock like everything a
//! claim touches.
//!
//! A rate limit keeps a sliding log of start instants per queue; a
//! concurrency cap counts the working-on records of the queue's jobs, so a
//! slot is released by whatever ends a record (a completion, a clean of the
//! worker by its stop or by the stuck-worker sweep) and needs no
//! bookkeeping of its own.
//!
//! Per task class (`TaskFlowStore`): a sliding log of start instants per
//! class, and a map of worker slot to the class whose task slot it holds,
//! which a completion (`release_task_slot`), the slot's next acquire and a
//! clean of the worker empty.

use crate::state::State;
use crate::MemoryBackend;
use async_trait::async_trait;
use resq_core::flow::{rate_room, TaskAdmission, TaskLimits};
use resq_core::{Result, TaskFlowStore, WorkerId};
use tokio::time::Instant;

/// The time of one claim, read from the clock only when a rate limit
/// needs it: a claim on queues without limits reads no clock.
#[derive(Default)]
pub(crate) struct ClaimTime(Option<Instant>);

impl ClaimTime {
    /// The claim's instant, read on first use.
    fn get(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
}

impl State {
    /// How many of `want` jobs `queue` may start now: `want` without
    /// limits, else no more than its rate limit and its cap leave room for.
    /// The records of `claiming` (the slots about to be given new jobs,
    /// whose old records the claim replaces) do not count as running.
    pub(crate) fn flow_room(&mut self, queue: &str, want: usize, claiming: &[WorkerId], at: &mut ClaimTime) -> usize {
        // No limits anywhere (the usual case): no lookup either.
        if self.limits.is_empty() {
            return want;
        }
        let Some(limits) = self.limits.get(queue).copied() else {
            return want;
        };
        let mut room = want;
        if let Some(rate) = limits.rate {
            let now = at.get();
            let log = self.starts.entry(queue.to_owned()).or_default();
            let left = match now.checked_sub(rate.period) {
                Some(cutoff) => rate_room(log, rate.max, cutoff),
                // The window reaches back before this clock's start.
                None => rate.max.saturating_sub(u32::try_from(log.len()).unwrap_or(u32::MAX)),
            };
            room = room.min(usize::try_from(left).unwrap_or(usize::MAX));
        }
        if let Some(cap) = limits.concurrency {
            let running = self.working.running_in(queue, claiming);
            let left = usize::try_from(cap).unwrap_or(usize::MAX).saturating_sub(running);
            room = room.min(left);
        }
        room
    }

    /// `n` jobs of `queue` started at `now`: logged for its rate limit.
    pub(crate) fn flow_took(&mut self, queue: &str, n: usize, at: &mut ClaimTime) {
        if n == 0 || self.limits.is_empty() {
            return;
        }
        if self.limits.get(queue).is_some_and(|l| l.rate.is_some()) {
            let now = at.get();
            let log = self.starts.entry(queue.to_owned()).or_default();
            log.extend(std::iter::repeat_n(now, n));
        }
    }
}

impl State {
    /// [`TaskFlowStore::acquire_task_start`] under the state lock.
    pub(crate) fn task_admit(
        &mut self,
        class: &str,
        limits: &TaskLimits,
        worker: &WorkerId,
        now: Instant,
    ) -> TaskAdmission {
        self.task_slots.remove(worker);
        if let Some(rate) = limits.rate {
            let log = self.task_starts.entry(class.to_owned()).or_default();
            let left = match now.checked_sub(rate.period) {
                Some(cutoff) => rate_room(log, rate.max, cutoff),
                None => rate.max.saturating_sub(u32::try_from(log.len()).unwrap_or(u32::MAX)),
            };
            if left == 0 {
                // The oldest start in the window leaves it after this long.
                let wait = log.front().map_or(rate.period, |oldest| {
                    (*oldest + rate.period).saturating_duration_since(now)
                });
                return TaskAdmission::RateLimited(wait);
            }
        }
        if let Some(cap) = limits.concurrency {
            let running = self.task_slots.values().filter(|c| c.as_str() == class).count();
            if running >= usize::try_from(cap).unwrap_or(usize::MAX) {
                return TaskAdmission::AtCapacity;
            }
            self.task_slots.insert(worker.clone(), class.to_owned());
        }
        if limits.rate.is_some() {
            self.task_starts.entry(class.to_owned()).or_default().push_back(now);
        }
        TaskAdmission::Admitted
    }
}

#[async_trait]
impl TaskFlowStore for MemoryBackend {
    async fn acquire_task_start(&self, class: &str, limits: &TaskLimits, worker: &WorkerId) -> Result<TaskAdmission> {
        limits.check()?;
        if limits.is_unlimited() {
            return Ok(TaskAdmission::Admitted);
        }
        let mut st = self.state.lock();
        Ok(st.task_admit(class, limits, worker, Instant::now()))
    }

    async fn release_task_slot(&self, worker: &WorkerId) -> Result<bool> {
        Ok(self.state.lock().task_slots.remove(worker).is_some())
    }

    async fn task_slots_held(&self, class: &str) -> Result<u64> {
        let st = self.state.lock();
        let n = st.task_slots.values().filter(|c| c.as_str() == class).count();
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }
}
