//! Snapshot persistence: loading at start, saving on `close()`, and the
//! periodic saver task.
//!
//! Each save captures the data together with a generation (the sum of the
//! change counters, read before the data), and the file is only ever
//! replaced by a capture of a later generation. So a slow periodic save that
//! finishes after `close()` cannot put older data back, and an unchanged
//! store is not written again.

use crate::lock::Held;
use crate::snapshot::{self, Image, SavedLock};
use crate::MemoryBackend;
use parking_lot::Mutex;
use resq_core::time::now_ms;
use resq_core::{BackendErrorKind, Error, Result};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// Where and how a backend persists itself.
#[derive(Debug)]
pub(crate) struct Persist {
    path: PathBuf,
    /// The generation the file holds (`None` before the first write when no
    /// file existed). Its lock also serialises writes to the file.
    written: Arc<Mutex<Option<u64>>>,
    /// The periodic saver, if one runs.
    saver: Mutex<Option<AbortHandle>>,
}

impl Drop for Persist {
    fn drop(&mut self) {
        self.stop_saver();
    }
}

impl Persist {
    /// The snapshot file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the periodic saver, if one runs.
    pub(crate) fn stop_saver(&self) {
        if let Some(handle) = self.saver.lock().take() {
            handle.abort();
        }
    }
}

/// Checks that `path` can hold a snapshot: a file name in an existing
/// directory.
fn check_path(path: &Path) -> Result<()> {
    let invalid = |reason: &str| Error::InvalidArgument(format!("snapshot path {}: {reason}", path.display()));
    if path.file_name().is_none() {
        return Err(invalid("it does not name a file"));
    }
    if path.is_dir() {
        return Err(invalid("it is a directory"));
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(invalid("its directory does not exist"));
    }
    Ok(())
}

/// Converts a deadline to epoch ms for saving.
fn to_epoch_ms(expires: Instant, now: Instant, now_ms: i64) -> i64 {
    let left = expires.saturating_duration_since(now).as_millis();
    now_ms.saturating_add(i64::try_from(left).unwrap_or(i64::MAX))
}

/// Converts a saved deadline back to an `Instant`; `None` if it has passed.
fn from_epoch_ms(expires_at_ms: i64, now: Instant, now_ms: i64) -> Option<Instant> {
    let left = u64::try_from(expires_at_ms.saturating_sub(now_ms))
        .ok()
        .filter(|ms| *ms > 0)?;
    now.checked_add(Duration::from_millis(left))
}

impl MemoryBackend {
    /// A backend persisted to the snapshot file at `path`.
    ///
    /// The file is loaded if it exists (a missing file is an empty store; a
    /// file that cannot be read or decoded is an error, never silently
    /// dropped). The snapshot is written on [`close`](resq_core::Backend::close)
    /// and, with `save_interval` set and non-zero, every `save_interval` by a
    /// background task, which then needs a Tokio runtime (the call fails
    /// without one). The task holds only a weak reference, so it ends when
    /// the backend is dropped; dropping does not save, so call `close()`.
    /// Writes go to a temporary file that is then renamed, so a crash never
    /// leaves a half-written snapshot. One process per file.
    pub fn with_snapshot(path: impl Into<PathBuf>, save_interval: Option<Duration>) -> Result<Arc<Self>> {
        let path = path.into();
        check_path(&path)?;
        let image = snapshot::read(&path)?;
        // The file holds generation 0: restoring touches no change counter.
        let written = image.is_some().then_some(0);
        let backend = Arc::new(MemoryBackend::build(Some(Persist {
            path,
            written: Arc::new(Mutex::new(written)),
            saver: Mutex::new(None),
        })));
        if let Some(image) = image {
            backend.restore(image);
        }
        if let Some(interval) = save_interval.filter(|i| !i.is_zero()) {
            backend.spawn_saver(interval)?;
        }
        Ok(backend)
    }

    /// Loads a snapshot image into this (new, empty) backend.
    fn restore(&self, image: Image) {
        let Image {
            mut state,
            locks,
            leader,
            paused,
            enqueued,
        } = image;
        let (now, now_ms) = (Instant::now(), now_ms());
        state.paused = paused;
        state.enqueued = enqueued;
        *self.state.lock() = state;
        for lock in locks {
            if let Some(expires) = from_epoch_ms(lock.expires_at_ms, now, now_ms) {
                let held = Held {
                    value: lock.value,
                    expires,
                };
                self.locks.restore(lock.key, held);
            }
        }
        if let Some(lock) = leader {
            if let Some(expires) = from_epoch_ms(lock.expires_at_ms, now, now_ms) {
                let held = Held {
                    value: lock.value,
                    expires,
                };
                self.leader.restore(held);
            }
        }
    }

    /// The sum of every change counter; it only grows.
    fn generation(&self, state_changes: u64) -> u64 {
        state_changes
            .wrapping_add(self.locks.changes())
            .wrapping_add(self.leader.changes())
    }

    /// Encodes the whole store. Lock counters are read before the locks and
    /// the state counter under the state lock, so the generation never
    /// claims more than the bytes hold.
    fn capture(&self) -> Result<(u64, Vec<u8>)> {
        let lock_changes = self.generation(0);
        let (now, now_ms) = (Instant::now(), now_ms());
        let saved = |key: String, held: Held| SavedLock {
            key,
            value: held.value,
            expires_at_ms: to_epoch_ms(held.expires, now, now_ms),
        };
        let locks: Vec<SavedLock> = self.locks.live(now).into_iter().map(|(k, h)| saved(k, h)).collect();
        let leader = self.leader.current(now).map(|h| saved(String::new(), h));
        let st = self.state.lock();
        let generation = lock_changes.wrapping_add(st.changes());
        let bytes = snapshot::encode(&st, &locks, &leader)?;
        drop(st);
        Ok((generation, bytes))
    }

    /// Writes the snapshot now if the store changed since the last write
    /// (or no file was written yet). Does nothing for a backend without a
    /// snapshot path. The file is written on a blocking thread when a Tokio
    /// runtime is available.
    pub async fn save_snapshot(&self) -> Result<()> {
        let Some(persist) = &self.persist else {
            return Ok(());
        };
        let current = self.generation(self.state.lock().changes());
        // Never wait here for a write in progress (it holds `written`): the
        // writer below re-checks under that lock anyway.
        if persist
            .written
            .try_lock()
            .is_some_and(|on_disk| *on_disk == Some(current))
        {
            return Ok(());
        }
        let (generation, bytes) = self.capture()?;
        let path = persist.path.clone();
        let written = Arc::clone(&persist.written);
        let write = move || -> Result<()> {
            let mut on_disk = written.lock();
            if on_disk.is_some_and(|g| g >= generation) {
                return Ok(()); // a newer capture is already there
            }
            snapshot::write(&path, &bytes)?;
            *on_disk = Some(generation);
            tracing::debug!(path = %path.display(), bytes = bytes.len(), "memory snapshot saved");
            Ok(())
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => rt.spawn_blocking(write).await.map_err(|e| {
                Error::backend_with(
                    BackendErrorKind::Transient,
                    format!("memory snapshot writer failed: {e}"),
                    e,
                )
            })?,
            Err(_) => write(),
        }
    }

    /// Starts the periodic saver.
    fn spawn_saver(self: &Arc<Self>, interval: Duration) -> Result<()> {
        let Some(persist) = &self.persist else {
            return Ok(());
        };
        let rt = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::InvalidArgument(
                "a periodic memory snapshot needs a Tokio runtime: create the backend inside one, or pass no save interval"
                    .into(),
            )
        })?;
        let weak: Weak<MemoryBackend> = Arc::downgrade(self);
        let task = rt.spawn(async move {
            loop {
                // `sleep` copes with any duration, however long.
                tokio::time::sleep(interval).await;
                let Some(backend) = weak.upgrade() else {
                    break;
                };
                if let Err(e) = backend.save_snapshot().await {
                    tracing::warn!(error = %e, "periodic memory snapshot failed");
                }
            }
        });
        *persist.saver.lock() = Some(task.abort_handle());
        Ok(())
    }
}
