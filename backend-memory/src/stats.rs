//! Integer counters (`processed`, `failed`, `processed:<worker>`, …) and
//! the [`StatsStore`] implementation.
//!
//! The counters the worker hot path touches live in fixed slots, so that
//! counting a finished job neither allocates nor builds a key; any other key
//! is kept in a map. Together they behave as one set of Redis strings: a
//! counter that was never written is absent, one that went back to 0 is not.

use crate::MemoryBackend;
use async_trait::async_trait;
use resq_core::{Error, Result, StatsStore};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

const PROCESSED: &str = "processed";
const FAILED: &str = "failed";
const PROCESSED_PREFIX: &str = "processed:";
const FAILED_PREFIX: &str = "failed:";

/// A worker's own two counters.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct WorkerCounters {
    processed: Option<i64>,
    failed: Option<i64>,
}

/// Which counter a key names.
enum Key<'a> {
    Processed,
    Failed,
    WorkerProcessed(&'a str),
    WorkerFailed(&'a str),
    Other(&'a str),
}

impl<'a> Key<'a> {
    fn parse(key: &'a str) -> Key<'a> {
        if key == PROCESSED {
            Key::Processed
        } else if key == FAILED {
            Key::Failed
        } else if let Some(name) = key.strip_prefix(PROCESSED_PREFIX) {
            Key::WorkerProcessed(name)
        } else if let Some(name) = key.strip_prefix(FAILED_PREFIX) {
            Key::WorkerFailed(name)
        } else {
            Key::Other(key)
        }
    }
}

/// Every counter.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Stats {
    processed: Option<i64>,
    failed: Option<i64>,
    per_worker: HashMap<String, WorkerCounters>,
    other: BTreeMap<String, i64>,
}

/// Adds `by` to a counter, which starts at 0 when unset. `None` (and no
/// change) on overflow, as Redis refuses an `INCRBY` that would overflow.
fn add(slot: &mut Option<i64>, by: i64) -> Option<i64> {
    let next = slot.unwrap_or(0).checked_add(by)?;
    *slot = Some(next);
    Some(next)
}

impl Stats {
    /// Counts one processed job, globally and for worker `name`.
    pub(crate) fn count_processed(&mut self, name: &str) {
        // A counter at i64::MAX stays there rather than failing a job.
        let _ = add(&mut self.processed, 1);
        self.with_worker(name, |c| add(&mut c.processed, 1));
    }

    /// Counts one failed job, globally and for worker `name`.
    pub(crate) fn count_failed(&mut self, name: &str) {
        self.count_failed_globally();
        self.with_worker(name, |c| add(&mut c.failed, 1));
    }

    /// Counts one failed job in the global counter only.
    pub(crate) fn count_failed_globally(&mut self) {
        let _ = add(&mut self.failed, 1);
    }

    /// Deletes worker `name`'s own counters.
    pub(crate) fn forget_worker(&mut self, name: &str) {
        self.per_worker.remove(name);
    }

    /// Runs `f` on worker `name`'s counters, creating them if needed. The
    /// name is copied only the first time.
    fn with_worker<R>(&mut self, name: &str, f: impl FnOnce(&mut WorkerCounters) -> R) -> R {
        if let Some(counters) = self.per_worker.get_mut(name) {
            return f(counters);
        }
        f(self.per_worker.entry(name.to_owned()).or_default())
    }

    /// `INCRBY key by`.
    pub(crate) fn incr(&mut self, key: &str, by: i64) -> Result<i64> {
        let next = match Key::parse(key) {
            Key::Processed => add(&mut self.processed, by),
            Key::Failed => add(&mut self.failed, by),
            Key::WorkerProcessed(name) => self.with_worker(name, |c| add(&mut c.processed, by)),
            Key::WorkerFailed(name) => self.with_worker(name, |c| add(&mut c.failed, by)),
            Key::Other(key) => {
                let mut slot = self.other.get(key).copied();
                let next = add(&mut slot, by);
                if let Some(value) = next {
                    self.other.insert(key.to_owned(), value);
                }
                next
            }
        };
        next.ok_or_else(|| Error::InvalidArgument(format!("incrementing stat {key:?} by {by} would overflow")))
    }

    /// `GET key`, 0 when unset.
    pub(crate) fn get(&self, key: &str) -> i64 {
        let value = match Key::parse(key) {
            Key::Processed => self.processed,
            Key::Failed => self.failed,
            Key::WorkerProcessed(name) => self.per_worker.get(name).and_then(|c| c.processed),
            Key::WorkerFailed(name) => self.per_worker.get(name).and_then(|c| c.failed),
            Key::Other(key) => self.other.get(key).copied(),
        };
        value.unwrap_or(0)
    }

    /// Every set counter as `(key, value)`, sorted by key.
    pub(crate) fn all(&self) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = Vec::with_capacity(2 + 2 * self.per_worker.len() + self.other.len());
        out.extend(self.processed.map(|v| (PROCESSED.to_owned(), v)));
        out.extend(self.failed.map(|v| (FAILED.to_owned(), v)));
        for (name, c) in &self.per_worker {
            out.extend(c.processed.map(|v| (format!("{PROCESSED_PREFIX}{name}"), v)));
            out.extend(c.failed.map(|v| (format!("{FAILED_PREFIX}{name}"), v)));
        }
        out.extend(self.other.iter().map(|(k, v)| (k.clone(), *v)));
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[async_trait]
impl StatsStore for MemoryBackend {
    async fn incr_stat(&self, key: &str, by: i64) -> Result<i64> {
        let mut st = self.state.lock();
        let value = st.stats.incr(key, by)?;
        st.touch();
        Ok(value)
    }

    async fn stat(&self, key: &str) -> Result<i64> {
        Ok(self.state.lock().stats.get(key))
    }

    async fn stats(&self) -> Result<Vec<(String, i64)>> {
        Ok(self.state.lock().stats.all())
    }
}
