//! resq-memory is resq's in-process storage backend and its embedded
//! default: a "fake Redis" that keeps Resque's data model (queue lists and
//! the queue set, delayed buckets with their per-payload index, the failed
//! list, the worker registry, counters and expiring locks) in memory, with
//! exactly the semantics of resq's Redis backend, so that code and tests
//! behave the same on either. It can persist itself to a snapshot file.
//!
//! # Use
//!
//! * [`MemoryBackend::new`]: a store that lives as long as the process.
//! * [`MemoryBackend::with_snapshot`]: the same, loaded from and saved to a
//!   file (on `close()` and periodically).
//! * [`connect`]: either, from a URL: `memory://` or
//!   `memory:///abs/path/to/file[?save_interval_ms=N]`.
//!
//! # Design
//!
//! Every [`Backend`] method is one atomic step. The structures that
//! operations touch together (queues, working-on records, the registry,
//! counters, the failed list, the delayed schedule) sit behind one
//! `parking_lot::Mutex`, held only for the synchronous body of a method and
//! never across an `.await`. Plugin locks live in a `DashMap` and the
//! leader lock in its own slot. Idle workers wait on a `Notify` that every
//! push signals, so they start a new job at once rather than at their next
//! poll. Delayed items keep their due time in milliseconds beside Resque's
//! second buckets, and a scheduler sleeps until the earliest one, woken
//! through a `watch` channel when an earlier one is scheduled.

#![warn(missing_docs)]

mod address;
mod cancel;
mod delayed;
mod failed;
mod flow;
mod leader;
mod list;
mod lock;
mod persist;
mod queue;
mod snapshot;
mod state;
mod stats;
mod wakeup;
mod worker;
mod working;

pub use address::DEFAULT_SAVE_INTERVAL;

use async_trait::async_trait;
use leader::LeaderSlot;
use lock::LockTable;
use parking_lot::Mutex;
use persist::Persist;
use resq_core::{Backend, Result};
use state::State;
use std::path::Path;
use std::sync::Arc;
use wakeup::Wakeup;

/// resq's in-process backend; see the [crate documentation](crate).
///
/// Share it as `Arc<MemoryBackend>` (or `Arc<dyn Backend>`): every clone of
/// the `Arc` sees the same store.
pub struct MemoryBackend {
    state: Mutex<State>,
    locks: LockTable,
    leader: LeaderSlot,
    wakeup: Wakeup,
    /// Bumped when an item is scheduled to fall due before every other,
    /// to wake a sleeping scheduler ([`resq_core::DelayedStore::schedule_watch`]).
    schedule_changes: tokio::sync::watch::Sender<u64>,
    cancels: cancel::Cancels,
    persist: Option<Persist>,
}

impl MemoryBackend {
    /// A new, empty store that lives only in this process.
    pub fn new() -> Self {
        MemoryBackend::build(None)
    }

    fn build(persist: Option<Persist>) -> Self {
        MemoryBackend {
            state: Mutex::new(State::default()),
            locks: LockTable::default(),
            leader: LeaderSlot::default(),
            wakeup: Wakeup::default(),
            schedule_changes: tokio::sync::watch::channel(0).0,
            cancels: cancel::Cancels::default(),
            persist,
        }
    }

    /// The snapshot file, for a persisted store.
    pub fn snapshot_path(&self) -> Option<&Path> {
        self.persist.as_ref().map(Persist::path)
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend::new()
    }
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("snapshot", &self.snapshot_path())
            .finish_non_exhaustive()
    }
}

/// Opens a memory backend from a URL.
///
/// * `memory://`: in-process only ([`MemoryBackend::new`]).
/// * `memory:///abs/path/to/file`: persisted to that snapshot file, saved
///   every [`DEFAULT_SAVE_INTERVAL`] and on close
///   ([`MemoryBackend::with_snapshot`]); percent-escapes in the path are
///   decoded.
/// * `memory:///abs/path/to/file?save_interval_ms=N`: saved every `N` ms
///   instead, or only on close when `N` is 0.
///
/// Anything else (another scheme, a host such as `memory://host/x`, a
/// relative path, an unknown parameter, a bad number) is
/// [`resq_core::Error::InvalidUrl`] with the reason.
pub async fn connect(url: &str) -> Result<Arc<MemoryBackend>> {
    let address = address::parse(url)?;
    match address.path {
        None => Ok(Arc::new(MemoryBackend::new())),
        Some(path) => MemoryBackend::with_snapshot(path, address.save_interval),
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn kind(&self) -> &'static str {
        "memory"
    }

    /// In the process: no call is a round trip.
    fn remote(&self) -> bool {
        false
    }

    /// Saves the snapshot, for a persisted store, and stops the periodic
    /// saver. The store stays usable; call `close()` again to save again.
    async fn close(&self) -> Result<()> {
        if let Some(persist) = &self.persist {
            persist.stop_saver();
            self.save_snapshot().await?;
        }
        Ok(())
    }
}
