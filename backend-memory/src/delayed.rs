//! The delayed schedule: buckets of payloads keyed by Unix second, the
//! per-payload index of buckets, and the [`DelayedStore`] implementation.

use crate::MemoryBackend;
use async_trait::async_trait;
use resq_core::backend::delayed_is_of_class;
use resq_core::failed::promotion_failure_entry;
use resq_core::job::promotion_target;
use resq_core::{DelayedStore, Promotion, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// Resque's `delayed:<secs>` lists (with `delayed_queue_schedule`, which is
/// their key set here) and `timestamps:<payload>` sets.
///
/// Invariants: no bucket is empty; a payload is in bucket `s` exactly when
/// `s` is in its index entry, and at most once (scheduling refuses a
/// duplicate); no index entry is empty.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Schedule {
    buckets: BTreeMap<i64, VecDeque<String>>,
    index: HashMap<String, BTreeSet<i64>>,
}

impl Schedule {
    /// Adds `payload` to bucket `timestamp` unless it is already there.
    fn add(&mut self, timestamp: i64, payload: &str) -> bool {
        match self.index.get_mut(payload) {
            Some(stamps) => {
                if !stamps.insert(timestamp) {
                    return false;
                }
            }
            None => {
                self.index.insert(payload.to_owned(), BTreeSet::from([timestamp]));
            }
        }
        self.buckets.entry(timestamp).or_default().push_back(payload.to_owned());
        true
    }

    /// Removes every copy of `payload`; returns the buckets, ascending.
    fn remove(&mut self, payload: &str) -> Vec<i64> {
        let Some(stamps) = self.index.remove(payload) else {
            return Vec::new();
        };
        for stamp in &stamps {
            if let Some(bucket) = self.buckets.get_mut(stamp) {
                bucket.retain(|item| item != payload);
                if bucket.is_empty() {
                    self.buckets.remove(stamp);
                }
            }
        }
        stamps.into_iter().collect()
    }

    /// Removes every item that `matches`, from every bucket; returns how
    /// many items went.
    fn remove_where(&mut self, matches: impl Fn(&str) -> bool) -> u64 {
        let mut removed = 0u64;
        let index = &mut self.index;
        self.buckets.retain(|stamp, bucket| {
            bucket.retain(|item| {
                if !matches(item) {
                    return true;
                }
                removed += 1;
                if let Some(stamps) = index.get_mut(item.as_str()) {
                    stamps.remove(stamp);
                    if stamps.is_empty() {
                        index.remove(item.as_str());
                    }
                }
                false
            });
            !bucket.is_empty()
        });
        removed
    }

    /// Removes `payload` from bucket `timestamp` only; returns whether it
    /// was there.
    fn remove_at(&mut self, timestamp: i64, payload: &str) -> bool {
        let Some(bucket) = self.buckets.get_mut(&timestamp) else {
            return false;
        };
        let Some(pos) = bucket.iter().position(|item| item == payload) else {
            return false;
        };
        bucket.remove(pos);
        if bucket.is_empty() {
            self.buckets.remove(&timestamp);
        }
        if let Some(stamps) = self.index.get_mut(payload) {
            stamps.remove(&timestamp);
            if stamps.is_empty() {
                self.index.remove(payload);
            }
        }
        true
    }

    /// Takes the oldest item of the oldest bucket `<= up_to`.
    fn pop_due(&mut self, up_to: i64) -> Option<(i64, String)> {
        let mut entry = self.buckets.first_entry()?;
        let timestamp = *entry.key();
        if timestamp > up_to {
            return None;
        }
        let bucket = entry.get_mut();
        let payload = bucket.pop_front();
        if bucket.is_empty() {
            entry.remove();
        }
        let payload = payload?;
        if let Some(stamps) = self.index.get_mut(&payload) {
            stamps.remove(&timestamp);
            if stamps.is_empty() {
                self.index.remove(&payload);
            }
        }
        Some((timestamp, payload))
    }
}

#[async_trait]
impl DelayedStore for MemoryBackend {
    async fn schedule(&self, timestamp: i64, payload: &str) -> Result<bool> {
        let mut st = self.state.lock();
        let added = st.schedule.add(timestamp, payload);
        if added {
            st.touch();
        }
        Ok(added)
    }

    async fn due_timestamps(&self, up_to: i64, limit: usize) -> Result<Vec<i64>> {
        let st = self.state.lock();
        Ok(st
            .schedule
            .buckets
            .range(..=up_to)
            .map(|(t, _)| *t)
            .take(limit)
            .collect())
    }

    async fn delayed_timestamps(&self) -> Result<Vec<i64>> {
        Ok(self.state.lock().schedule.buckets.keys().copied().collect())
    }

    async fn delayed_at(&self, timestamp: i64) -> Result<Vec<String>> {
        let st = self.state.lock();
        Ok(st
            .schedule
            .buckets
            .get(&timestamp)
            .map_or_else(Vec::new, |b| b.iter().cloned().collect()))
    }

    async fn timestamps_of(&self, payload: &str) -> Result<Vec<i64>> {
        let st = self.state.lock();
        Ok(st
            .schedule
            .index
            .get(payload)
            .map_or_else(Vec::new, |s| s.iter().copied().collect()))
    }

    async fn remove_delayed(&self, payload: &str) -> Result<Vec<i64>> {
        let mut st = self.state.lock();
        let removed = st.schedule.remove(payload);
        if !removed.is_empty() {
            st.touch();
        }
        Ok(removed)
    }

    async fn remove_delayed_by_class(&self, queue: &str, class: &str) -> Result<u64> {
        let mut st = self.state.lock();
        let removed = st.schedule.remove_where(|item| delayed_is_of_class(item, queue, class));
        if removed > 0 {
            st.touch();
        }
        Ok(removed)
    }

    async fn promote_delayed(&self, timestamp: i64, payload: &str, queue: &str) -> Result<bool> {
        {
            let mut st = self.state.lock();
            if !st.schedule.remove_at(timestamp, payload) {
                return Ok(false);
            }
            st.push_tail(queue, payload.to_owned());
            st.touch();
        }
        self.wakeup.wake();
        Ok(true)
    }

    async fn remove_delayed_at(&self, timestamp: i64, payload: &str) -> Result<bool> {
        let mut st = self.state.lock();
        let removed = st.schedule.remove_at(timestamp, payload);
        if removed {
            st.touch();
        }
        Ok(removed)
    }

    async fn delayed_bucket_sizes(&self) -> Result<Vec<(i64, u64)>> {
        let st = self.state.lock();
        Ok(st.schedule.buckets.iter().map(|(t, b)| (*t, b.len() as u64)).collect())
    }

    async fn delayed_count(&self) -> Result<u64> {
        let st = self.state.lock();
        Ok(st.schedule.buckets.values().map(|b| b.len() as u64).sum())
    }

    async fn promote_due(&self, up_to: i64, limit: usize) -> Result<Vec<Promotion>> {
        let mut done = Vec::new();
        let mut moved_any = false;
        {
            let mut st = self.state.lock();
            while done.len() < limit {
                let Some((timestamp, payload)) = st.schedule.pop_due(up_to) else {
                    break;
                };
                match promotion_target(&payload) {
                    Ok(queue) => {
                        st.push_tail(&queue, payload.clone());
                        moved_any = true;
                        done.push(Promotion::Moved {
                            timestamp,
                            queue,
                            payload,
                        });
                    }
                    Err(reason) => {
                        let now = resq_core::time::now_ms();
                        st.failed.push_back(promotion_failure_entry(&payload, &reason, now));
                        done.push(Promotion::Failed {
                            timestamp,
                            payload,
                            reason,
                        });
                    }
                }
            }
            if !done.is_empty() {
                st.touch();
            }
        }
        if moved_any {
            self.wakeup.wake();
        }
        Ok(done)
    }
}
