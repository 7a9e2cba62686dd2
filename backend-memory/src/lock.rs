//! Expiring plugin locks: the lock table and the [`LockStore`]
//! implementation.
//!
//! Locks live in a `DashMap` apart from the state lock: they are touched
//! alone, never together with queues or workers. An expired lock behaves as
//! absent everywhere; expired entries are dropped when met, and swept from
//! the whole table at most once a second.

use crate::MemoryBackend;
use async_trait::async_trait;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use parking_lot::Mutex;
use resq_core::{Error, LockEntry, LockStore, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// How often acquisitions sweep expired locks out of the table.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The deadline of a lock taken now for `ttl`. A TTL below a millisecond
/// counts as one millisecond (Redis refuses a zero expiry; resq's Redis
/// backend rounds up likewise), and one too far out to represent is capped
/// at about a century.
pub(crate) fn deadline(now: Instant, ttl: Duration) -> Instant {
    let ttl = ttl.max(Duration::from_millis(1));
    now.checked_add(ttl)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// A lock's owner token and deadline.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    /// The owner's token.
    pub(crate) value: String,
    /// When the lock lapses.
    pub(crate) expires: Instant,
}

impl Held {
    /// Whether the lock is still in force at `now`.
    pub(crate) fn live(&self, now: Instant) -> bool {
        self.expires > now
    }
}

/// Every plugin lock by key.
#[derive(Debug)]
pub(crate) struct LockTable {
    map: DashMap<String, Held>,
    last_sweep: Mutex<Instant>,
    changes: AtomicU64,
}

impl Default for LockTable {
    fn default() -> Self {
        LockTable {
            map: DashMap::new(),
            last_sweep: Mutex::new(Instant::now()),
            changes: AtomicU64::new(0),
        }
    }
}

impl LockTable {
    /// How many changes there have been since start-up.
    pub(crate) fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    /// Inserts a lock as loaded from a snapshot.
    pub(crate) fn restore(&self, key: String, held: Held) {
        self.map.insert(key, held);
    }

    /// Every live lock, unsorted.
    pub(crate) fn live(&self, now: Instant) -> Vec<(String, Held)> {
        self.map
            .iter()
            .filter(|e| e.value().live(now))
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect()
    }

    /// Takes `key` for `value` until `ttl` from `now` if it is free (absent
    /// or expired). Returns whether it was taken.
    pub(crate) fn try_take(&self, key: &str, value: &str, ttl: Duration, now: Instant) -> bool {
        let fresh = Held {
            value: value.to_owned(),
            expires: deadline(now, ttl),
        };
        let taken = match self.map.entry(key.to_owned()) {
            Entry::Occupied(mut held) => {
                if held.get().live(now) {
                    false
                } else {
                    held.insert(fresh);
                    true
                }
            }
            Entry::Vacant(slot) => {
                slot.insert(fresh);
                true
            }
        };
        if taken {
            self.touch();
        }
        self.maybe_sweep(now);
        taken
    }

    /// Drops expired locks, at most once per [`SWEEP_EVERY`].
    fn maybe_sweep(&self, now: Instant) {
        {
            let Some(mut last) = self.last_sweep.try_lock() else {
                return; // another caller is sweeping
            };
            if now.saturating_duration_since(*last) < SWEEP_EVERY {
                return;
            }
            *last = now;
        }
        self.map.retain(|_, held| held.live(now));
    }
}

#[async_trait]
impl LockStore for MemoryBackend {
    async fn acquire_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<bool> {
        Ok(self.locks.try_take(key, value, ttl, Instant::now()))
    }

    async fn renew_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<bool> {
        let now = Instant::now();
        let renewed = match self.locks.map.get_mut(key) {
            Some(mut held) if held.live(now) && held.value == value => {
                held.expires = deadline(now, ttl);
                true
            }
            _ => false,
        };
        if renewed {
            self.locks.touch();
        }
        Ok(renewed)
    }

    async fn release_lock(&self, key: &str, value: &str) -> Result<bool> {
        let now = Instant::now();
        let released = self
            .locks
            .map
            .remove_if(key, |_, held| held.live(now) && held.value == value)
            .is_some();
        if released {
            self.locks.touch();
        }
        Ok(released)
    }

    async fn locks(&self) -> Result<Vec<(String, String)>> {
        let mut all: Vec<(String, String)> = self
            .locks
            .live(Instant::now())
            .into_iter()
            .map(|(key, held)| (key, held.value))
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }

    async fn delete_lock(&self, key: &str) -> Result<u64> {
        let now = Instant::now();
        match self.locks.map.remove(key) {
            Some((_, held)) => {
                self.locks.touch();
                Ok(u64::from(held.live(now)))
            }
            None => Ok(0),
        }
    }

    async fn get_lock(&self, key: &str) -> Result<Option<LockEntry>> {
        let now = Instant::now();
        Ok(self
            .locks
            .map
            .get(key)
            .filter(|held| held.live(now))
            .map(|held| LockEntry {
                value: held.value.clone(),
                ttl: Some(held.expires.saturating_duration_since(now)),
            }))
    }

    async fn set_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        let now = Instant::now();
        self.locks.map.insert(
            key.to_owned(),
            Held {
                value: value.to_owned(),
                expires: deadline(now, ttl),
            },
        );
        self.locks.touch();
        Ok(())
    }

    async fn incr_lock(&self, key: &str, by: i64, ttl: Duration) -> Result<i64> {
        let now = Instant::now();
        let mut held = self.locks.map.entry(key.to_owned()).or_insert_with(|| Held {
            value: "0".to_owned(),
            expires: now,
        });
        let current = if held.live(now) {
            held.value.parse::<i64>().map_err(|_| {
                Error::InvalidArgument(format!("the value of {key:?} is not an integer: {:?}", held.value))
            })?
        } else {
            0
        };
        let next = current
            .checked_add(by)
            .ok_or_else(|| Error::InvalidArgument(format!("incrementing {key:?} by {by} overflows")))?;
        held.value = next.to_string();
        held.expires = deadline(now, ttl);
        drop(held);
        self.locks.touch();
        Ok(next)
    }
}
