//! The delayed schedule: buckets of payloads keyed by Unix second, the
//! per-payload index of buckets, each item's due time in milliseconds, and
//! the [`DelayedStore`] implementation.

use crate::MemoryBackend;
use async_trait::async_trait;
use resq_core::backend::delayed_is_of_class;
use resq_core::backend::MILLISECOND_PRECISION;
use resq_core::failed::promotion_failure_entry;
use resq_core::job::promotion_target;
use resq_core::time::{bucket_due_ms, delayed_bucket_of_ms};
use resq_core::{DelayedStore, Promotion, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Resque's `delayed:<secs>` lists (with `delayed_queue_schedule`, which is
/// their key set here) and `timestamps:<payload>` sets, plus each item's due
/// time in milliseconds and an index of the items by due time.
///
/// Invariants: no bucket is empty; a payload is in bucket `s` exactly when
/// `s` is in its index entry, and at most once (scheduling refuses a
/// duplicate); no index entry is empty; `by_due` holds exactly one entry
/// `(due_ms, seq, s)` per item. An item's `seq` orders it within its bucket
/// (insertion order) and is below `next_seq`.
///
/// Only the buckets and the payload index are saved with the state, in the
/// shape of snapshot versions 1 and 2; the due times are saved beside them
/// (see [`Schedule::due_times`] and [`Schedule::rebuild`]).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Schedule {
    buckets: BTreeMap<i64, Bucket>,
    index: HashMap<String, BTreeSet<i64>>,
    #[serde(skip)]
    by_due: BTreeSet<(i64, u64, i64)>,
    #[serde(skip)]
    next_seq: u64,
}

/// One delayed item.
#[derive(Clone, Debug)]
struct Item {
    payload: String,
    /// When it falls due, epoch ms.
    due_ms: i64,
}

/// One bucket's items by insertion sequence number. Saved as the list of
/// its payloads, exactly as a `VecDeque<String>` is.
#[derive(Clone, Debug, Default)]
struct Bucket {
    items: BTreeMap<u64, Item>,
}

impl Serialize for Bucket {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_seq(self.items.values().map(|i| i.payload.as_str()))
    }
}

impl<'de> Deserialize<'de> for Bucket {
    /// The payloads, with provisional sequence numbers and due times that
    /// [`Schedule::rebuild`] replaces.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let payloads = Vec::<String>::deserialize(deserializer)?;
        let items = (0u64..)
            .zip(payloads)
            .map(|(seq, payload)| (seq, Item { payload, due_ms: 0 }))
            .collect();
        Ok(Bucket { items })
    }
}

impl Schedule {
    /// Adds `payload` to bucket `timestamp`, due at `due_ms`, unless it is
    /// already in that bucket. Returns whether it was added and, if so,
    /// whether it falls due before every other item.
    fn add(&mut self, timestamp: i64, due_ms: i64, payload: &str) -> (bool, bool) {
        match self.index.get_mut(payload) {
            Some(stamps) => {
                if !stamps.insert(timestamp) {
                    return (false, false);
                }
            }
            None => {
                self.index.insert(payload.to_owned(), BTreeSet::from([timestamp]));
            }
        }
        let earliest = self.by_due.first().is_none_or(|(first, _, _)| due_ms < *first);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.buckets.entry(timestamp).or_default().items.insert(
            seq,
            Item {
                payload: payload.to_owned(),
                due_ms,
            },
        );
        self.by_due.insert((due_ms, seq, timestamp));
        (true, earliest)
    }

    /// Drops `timestamp` from `payload`'s index entry.
    fn unindex(&mut self, timestamp: i64, payload: &str) {
        if let Some(stamps) = self.index.get_mut(payload) {
            stamps.remove(&timestamp);
            if stamps.is_empty() {
                self.index.remove(payload);
            }
        }
    }

    /// Takes item `seq` out of bucket `timestamp` (and `by_due`), dropping
    /// the bucket when it empties. The caller keeps the payload index.
    fn take(&mut self, timestamp: i64, seq: u64) -> Option<Item> {
        let bucket = self.buckets.get_mut(&timestamp)?;
        let item = bucket.items.remove(&seq)?;
        if bucket.items.is_empty() {
            self.buckets.remove(&timestamp);
        }
        self.by_due.remove(&(item.due_ms, seq, timestamp));
        Some(item)
    }

    /// Removes every copy of `payload`; returns the buckets, ascending.
    fn remove(&mut self, payload: &str) -> Vec<i64> {
        let Some(stamps) = self.index.remove(payload) else {
            return Vec::new();
        };
        for stamp in &stamps {
            let seqs: Vec<u64> = self.buckets.get(stamp).map_or_else(Vec::new, |b| {
                b.items
                    .iter()
                    .filter(|(_, item)| item.payload == payload)
                    .map(|(seq, _)| *seq)
                    .collect()
            });
            for seq in seqs {
                self.take(*stamp, seq);
            }
        }
        stamps.into_iter().collect()
    }

    /// Removes every item that `matches`, from every bucket; returns how
    /// many items went.
    fn remove_where(&mut self, matches: impl Fn(&str) -> bool) -> u64 {
        let doomed: Vec<(i64, u64)> = self
            .buckets
            .iter()
            .flat_map(|(stamp, bucket)| {
                bucket
                    .items
                    .iter()
                    .filter(|(_, item)| matches(&item.payload))
                    .map(|(seq, _)| (*stamp, *seq))
            })
            .collect();
        let mut removed = 0u64;
        for (stamp, seq) in doomed {
            if let Some(item) = self.take(stamp, seq) {
                self.unindex(stamp, &item.payload);
                removed += 1;
            }
        }
        removed
    }

    /// Removes `payload` from bucket `timestamp` only; returns whether it
    /// was there.
    fn remove_at(&mut self, timestamp: i64, payload: &str) -> bool {
        let seq = self.buckets.get(&timestamp).and_then(|b| {
            b.items
                .iter()
                .find(|(_, item)| item.payload == payload)
                .map(|(seq, _)| *seq)
        });
        let Some(item) = seq.and_then(|seq| self.take(timestamp, seq)) else {
            return false;
        };
        self.unindex(timestamp, &item.payload);
        true
    }

    /// Takes the oldest item of the oldest bucket `<= up_to`.
    fn pop_due(&mut self, up_to: i64) -> Option<(i64, String)> {
        let (timestamp, bucket) = self.buckets.first_key_value()?;
        if *timestamp > up_to {
            return None;
        }
        let timestamp = *timestamp;
        let seq = *bucket.items.keys().next()?;
        let item = self.take(timestamp, seq)?;
        self.unindex(timestamp, &item.payload);
        Some((timestamp, item.payload))
    }

    /// Takes the item that falls due first, if it is due at `now_ms`.
    fn pop_due_ms(&mut self, now_ms: i64) -> Option<(i64, String)> {
        let &(due_ms, seq, timestamp) = self.by_due.first()?;
        if due_ms > now_ms {
            return None;
        }
        let item = self.take(timestamp, seq)?;
        self.unindex(timestamp, &item.payload);
        Some((timestamp, item.payload))
    }

    /// [`Schedule::add`], for the snapshot's tests.
    #[cfg(test)]
    pub(crate) fn add_for_test(&mut self, timestamp: i64, due_ms: i64, payload: &str) {
        self.add(timestamp, due_ms, payload);
    }

    /// When the earliest item falls due.
    fn next_due_ms(&self) -> Option<i64> {
        self.by_due.first().map(|(due_ms, _, _)| *due_ms)
    }

    /// Every item's due time, bucket by bucket in ascending order and in
    /// insertion order within a bucket: the order in which the saved state
    /// lists the items.
    pub(crate) fn due_times(&self) -> Vec<i64> {
        self.buckets
            .values()
            .flat_map(|b| b.items.values().map(|i| i.due_ms))
            .collect()
    }

    /// The number of items, counted in the buckets (right even before
    /// [`Schedule::rebuild`]).
    pub(crate) fn item_count(&self) -> usize {
        self.buckets.values().map(|b| b.items.len()).sum()
    }

    /// Completes a schedule read from a snapshot: numbers the items in
    /// order and gives them the due times `due` lists (in
    /// [`Schedule::due_times`]'s order), or, for a snapshot older than the
    /// due times (`None`), each its bucket's due time. Returns false,
    /// changing nothing, when `due` does not hold one time per item.
    pub(crate) fn rebuild(&mut self, due: Option<&[i64]>) -> bool {
        let count = self.item_count();
        if due.is_some_and(|d| d.len() != count) {
            return false;
        }
        let mut times = due.map(|d| d.iter().copied());
        let mut seq = 0u64;
        let mut by_due = BTreeSet::new();
        for (stamp, bucket) in &mut self.buckets {
            let items = std::mem::take(&mut bucket.items);
            for item in items.into_values() {
                let due_ms = match times.as_mut() {
                    Some(t) => t.next().unwrap_or_else(|| bucket_due_ms(*stamp)),
                    None => bucket_due_ms(*stamp),
                };
                by_due.insert((due_ms, seq, *stamp));
                bucket.items.insert(
                    seq,
                    Item {
                        payload: item.payload,
                        due_ms,
                    },
                );
                seq += 1;
            }
        }
        self.by_due = by_due;
        self.next_seq = seq;
        true
    }
}

#[async_trait]
impl DelayedStore for MemoryBackend {
    async fn schedule(&self, timestamp: i64, payload: &str) -> Result<bool> {
        self.schedule_item(timestamp, bucket_due_ms(timestamp), payload)
    }

    fn delayed_precision(&self) -> std::time::Duration {
        MILLISECOND_PRECISION
    }

    async fn schedule_ms(&self, due_ms: i64, payload: &str) -> Result<bool> {
        self.schedule_item(delayed_bucket_of_ms(due_ms), due_ms, payload)
    }

    async fn next_due_ms(&self) -> Result<Option<i64>> {
        Ok(self.state.lock().schedule.next_due_ms())
    }

    async fn schedule_watch(&self) -> Result<Option<tokio::sync::watch::Receiver<u64>>> {
        Ok(Some(self.schedule_changes.subscribe()))
    }

    async fn promote_due_ms(&self, now_ms: i64, limit: usize) -> Result<Vec<Promotion>> {
        self.promote_with(limit, |schedule| schedule.pop_due_ms(now_ms))
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
            .map_or_else(Vec::new, |b| b.items.values().map(|i| i.payload.clone()).collect()))
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
        Ok(st
            .schedule
            .buckets
            .iter()
            .map(|(t, b)| (*t, b.items.len() as u64))
            .collect())
    }

    async fn delayed_count(&self) -> Result<u64> {
        Ok(self.state.lock().schedule.by_due.len() as u64)
    }

    async fn promote_due(&self, up_to: i64, limit: usize) -> Result<Vec<Promotion>> {
        self.promote_with(limit, |schedule| schedule.pop_due(up_to))
    }
}

impl MemoryBackend {
    /// Files `payload` in bucket `timestamp`, due at `due_ms`, and wakes a
    /// sleeping scheduler when it falls due before everything else.
    fn schedule_item(&self, timestamp: i64, due_ms: i64, payload: &str) -> Result<bool> {
        let (added, earliest) = {
            let mut st = self.state.lock();
            let (added, earliest) = st.schedule.add(timestamp, due_ms, payload);
            if added {
                st.touch();
            }
            (added, earliest)
        };
        if earliest {
            self.schedule_changes.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(added)
    }

    /// Promotes up to `limit` items, each taken by `next`, in one critical
    /// section.
    fn promote_with(
        &self,
        limit: usize,
        mut next: impl FnMut(&mut Schedule) -> Option<(i64, String)>,
    ) -> Result<Vec<Promotion>> {
        let mut done = Vec::new();
        let mut moved_any = false;
        {
            let mut st = self.state.lock();
            while done.len() < limit {
                let Some((timestamp, payload)) = next(&mut st.schedule) else {
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
