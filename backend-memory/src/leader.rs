//! The scheduler's leader lock: the [`LeaderLock`] implementation. It is
//! kept apart from the plugin locks, so `locks()` never lists it.

use crate::lock::{deadline, Held};
use crate::MemoryBackend;
use async_trait::async_trait;
use parking_lot::Mutex;
use resq_core::{LeaderLock, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// The leader lock's holder, if any (possibly expired).
#[derive(Debug, Default)]
pub(crate) struct LeaderSlot {
    held: Mutex<Option<Held>>,
    changes: AtomicU64,
}

impl LeaderSlot {
    /// How many changes there have been since start-up.
    pub(crate) fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    /// The live holder at `now`.
    pub(crate) fn current(&self, now: Instant) -> Option<Held> {
        self.held.lock().as_ref().filter(|h| h.live(now)).cloned()
    }

    /// Sets the holder as loaded from a snapshot.
    pub(crate) fn restore(&self, held: Held) {
        *self.held.lock() = Some(held);
    }
}

#[async_trait]
impl LeaderLock for MemoryBackend {
    async fn acquire_leader(&self, name: &str, ttl: Duration) -> Result<bool> {
        let now = Instant::now();
        let mut held = self.leader.held.lock();
        match held.as_mut() {
            Some(h) if h.live(now) && h.value != name => Ok(false),
            Some(h) if h.live(now) => {
                // A renewal is not a change for the snapshot saver: the
                // scheduler renews often, and a saved deadline that is a
                // little early only lets the lock lapse sooner after a restart.
                h.expires = deadline(now, ttl);
                Ok(true)
            }
            _ => {
                *held = Some(Held {
                    value: name.to_owned(),
                    expires: deadline(now, ttl),
                });
                drop(held);
                self.leader.touch();
                Ok(true)
            }
        }
    }

    async fn release_leader(&self, name: &str) -> Result<bool> {
        let now = Instant::now();
        let mut held = self.leader.held.lock();
        let released = held.as_ref().is_some_and(|h| h.live(now) && h.value == name);
        if released {
            *held = None;
            drop(held);
            self.leader.touch();
        }
        Ok(released)
    }

    async fn leader(&self) -> Result<Option<String>> {
        Ok(self.leader.current(Instant::now()).map(|h| h.value))
    }
}
