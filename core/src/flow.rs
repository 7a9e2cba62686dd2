//! Flow control per queue and per task (issue #14): rate limits and
//! concurrency caps.
//!
//! Per task: see [`TaskLimits`] and
//! [`crate::backend::TaskFlowStore`]. A task declares its limits in code
//! ([`crate::TaskDef::rate_limit`], [`crate::TaskDef::concurrency`]); the
//! worker asks the backend for a start after it claimed a job of a limited
//! task and before the task runs, and a job over the limit goes back to the
//! delayed schedule, due when the limit frees (see [`crate::worker`]).
//!
//! Per queue:
//! A queue's [`QueueLimits`] are cluster-wide settings stored in the
//! backend ([`crate::backend::QueueStore::set_queue_limits`]), never
//! per-process configuration that two processes could disagree on. Every
//! backend enforces them inside its atomic claim (one Lua script on Redis,
//! the claim's transaction on PostgreSQL, the state lock in memory):
//!
//! - **Rate limit** ([`RateLimit`]): at most `max` claims ("starts") of the
//!   queue's jobs in any window of `period`, across every worker. The
//!   backend keeps a sliding log of the start times of the last `period`
//!   (a sorted set on Redis, an array in the limit's row on PostgreSQL), so
//!   the bound holds for *every* window, not only for aligned ones as a
//!   fixed-window counter would, and a token bucket's burst on top of its
//!   refill cannot happen.
//! - **Concurrency cap**: at most `k` of the queue's jobs running at once.
//!   A running job holds its slot from its claim until its completion, or
//!   until its worker is cleaned from the registry (a clean stop, a stop
//!   past its deadline, or the scheduler's stuck-worker sweep of a dead
//!   worker); so a crashed worker's slot comes back within the
//!   stuck-worker timeout.
//!
//! A queue that is at its limit is skipped by the claim, exactly as a
//! paused queue is: the worker takes a job from its next queue in priority
//! order, and the limited queue's jobs stay queued, in order: they wait,
//! they never fail and are never lost. Workers that find only limited
//! queues with jobs re-try every [`LIMITED_RECHECK`] rather than waiting
//! for a wake-up (the jobs are there; only time or a completion frees
//! them).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The largest [`RateLimit::max`]: the backends keep one entry per start in
/// the sliding window, so the window's size is bounded.
pub const MAX_RATE: u32 = 100_000;

/// The longest [`RateLimit::period`]: one day.
pub const MAX_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// How often an idle worker re-tries queues that have jobs but are at their
/// limit: 25 ms. Short enough that a rate-limited queue under backlog
/// reaches its limit's throughput (a freed start waits at most this long,
/// less with several workers), long enough that ten idle workers cost a
/// few hundred cheap claims per second.
pub const LIMITED_RECHECK: Duration = Duration::from_millis(25);

/// At most `max` job starts in any window of `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RateLimit {
    /// How many starts a window may hold (1 to [`MAX_RATE`]).
    pub max: u32,
    /// The window's length (1 ms to [`MAX_PERIOD`], whole milliseconds).
    pub period: Duration,
}

impl RateLimit {
    /// `max` starts per `period`.
    pub fn new(max: u32, period: Duration) -> Self {
        RateLimit { max, period }
    }

    /// The period in whole milliseconds (what the backends store).
    pub fn period_ms(&self) -> u64 {
        u64::try_from(self.period.as_millis()).unwrap_or(u64::MAX)
    }
}

/// A queue's flow-control settings; the default limits nothing.
///
/// ```
/// use resq_core::QueueLimits;
/// use std::time::Duration;
///
/// // At most 100 starts per second, and at most 5 jobs running at once.
/// let limits = QueueLimits::new().rate(100, Duration::from_secs(1)).concurrency(5);
/// assert!(limits.check().is_ok());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QueueLimits {
    /// At most this many starts per period, cluster-wide.
    pub rate: Option<RateLimit>,
    /// At most this many jobs running at once, cluster-wide (at least 1;
    /// to stop a queue altogether, pause it).
    pub concurrency: Option<u32>,
}

impl QueueLimits {
    /// No limits.
    pub fn new() -> Self {
        QueueLimits::default()
    }

    /// With a rate limit of `max` starts per `period`.
    #[must_use]
    pub fn rate(mut self, max: u32, period: Duration) -> Self {
        self.rate = Some(RateLimit::new(max, period));
        self
    }

    /// With a concurrency cap of `k` running jobs.
    #[must_use]
    pub fn concurrency(mut self, k: u32) -> Self {
        self.concurrency = Some(k);
        self
    }

    /// Whether it limits nothing (setting it removes a queue's limits).
    pub fn is_unlimited(&self) -> bool {
        self.rate.is_none() && self.concurrency.is_none()
    }

    /// Checks the bounds: a rate of 1 to [`MAX_RATE`] per 1 ms to
    /// [`MAX_PERIOD`] in whole milliseconds, a cap of at least 1.
    pub fn check(&self) -> Result<()> {
        if let Some(r) = self.rate {
            if r.max == 0 || r.max > MAX_RATE {
                return Err(Error::InvalidArgument(format!(
                    "a rate limit allows 1 to {MAX_RATE} starts per period, not {}",
                    r.max
                )));
            }
            if r.period < Duration::from_millis(1) || r.period > MAX_PERIOD || r.period.subsec_nanos() % 1_000_000 != 0
            {
                return Err(Error::InvalidArgument(format!(
                    "a rate limit's period is whole milliseconds from 1 ms to {MAX_PERIOD:?}, not {:?}",
                    r.period
                )));
            }
        }
        if self.concurrency == Some(0) {
            return Err(Error::InvalidArgument(
                "a concurrency cap is at least 1 (pause the queue to stop it)".to_owned(),
            ));
        }
        Ok(())
    }
}

/// A task's flow-control settings, declared in code on its
/// [`crate::TaskDef`] ([`crate::TaskDef::rate_limit`],
/// [`crate::TaskDef::concurrency`], [`crate::TaskDef::limits`]): the same
/// shape and bounds as a queue's, counted per task class across the
/// cluster (see [`crate::backend::TaskFlowStore`]).
pub type TaskLimits = QueueLimits;

/// How long a job of a task at its concurrency cap waits before its next
/// try: 250 ms. A cap frees at a completion, which no clock predicts; short
/// enough that a freed slot is taken again quickly, long enough that a
/// backlog of capped jobs costs a few round trips per second each. On a
/// store whose delayed schedule has one-second buckets the wait is
/// rounded up to the next bucket.
pub const CAP_RETRY: Duration = Duration::from_millis(250);

/// What [`crate::backend::TaskFlowStore::acquire_task_start`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskAdmission {
    /// The job may start: its start is counted (rate limit) and its slot
    /// held (concurrency cap) until released.
    Admitted,
    /// The task's rate limit is full: its next start frees after this long
    /// (the oldest start in the window leaves it then). Nothing was counted.
    RateLimited(Duration),
    /// The task's concurrency cap is full. Nothing was counted.
    AtCapacity,
}

impl TaskAdmission {
    /// How long a refused job should wait before its next try: the time
    /// the next start frees for a rate limit (at least 1 ms), [`CAP_RETRY`]
    /// for a cap; `None` when admitted.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TaskAdmission::Admitted => None,
            TaskAdmission::RateLimited(d) => Some((*d).max(Duration::from_millis(1))),
            TaskAdmission::AtCapacity => Some(CAP_RETRY),
        }
    }

    /// The limit that refused: `rate` or `concurrency`; `None` when admitted.
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            TaskAdmission::Admitted => None,
            TaskAdmission::RateLimited(_) => Some("rate"),
            TaskAdmission::AtCapacity => Some("concurrency"),
        }
    }
}

/// One start (claim) at `at`, counted against a sliding-window rate limit:
/// drops the starts in `log` (ascending) that left the window `(at -
/// period, at]`, and returns how many more fit. Used by backends that keep
/// the log in process (memory).
pub fn rate_room<T: Copy + PartialOrd>(log: &mut std::collections::VecDeque<T>, max: u32, cutoff: T) -> u32 {
    while log.front().is_some_and(|t| *t <= cutoff) {
        log.pop_front();
    }
    max.saturating_sub(u32::try_from(log.len()).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        assert!(QueueLimits::new().check().is_ok());
        assert!(QueueLimits::new().is_unlimited());
        assert!(QueueLimits::new().rate(1, Duration::from_millis(1)).check().is_ok());
        assert!(QueueLimits::new().rate(0, Duration::from_secs(1)).check().is_err());
        assert!(QueueLimits::new()
            .rate(MAX_RATE + 1, Duration::from_secs(1))
            .check()
            .is_err());
        assert!(QueueLimits::new().rate(1, Duration::ZERO).check().is_err());
        assert!(QueueLimits::new().rate(1, Duration::from_micros(1500)).check().is_err());
        assert!(QueueLimits::new().rate(1, MAX_PERIOD * 2).check().is_err());
        assert!(QueueLimits::new().concurrency(0).check().is_err());
        assert!(!QueueLimits::new().concurrency(1).is_unlimited());
    }

    #[test]
    fn admissions_say_how_long_to_wait() {
        assert_eq!(TaskAdmission::Admitted.retry_after(), None);
        assert_eq!(
            TaskAdmission::RateLimited(Duration::ZERO).retry_after(),
            Some(Duration::from_millis(1))
        );
        assert_eq!(TaskAdmission::AtCapacity.retry_after(), Some(CAP_RETRY));
        assert_eq!(TaskAdmission::AtCapacity.limit(), Some("concurrency"));
    }

    #[test]
    fn rate_room_slides() {
        let mut log = std::collections::VecDeque::from([1, 2, 3]);
        assert_eq!(rate_room(&mut log, 3, 0), 0);
        assert_eq!(rate_room(&mut log, 3, 1), 1);
        assert_eq!(log, [2, 3]);
        assert_eq!(rate_room(&mut log, 1, 5), 1);
        assert!(log.is_empty());
    }
}
