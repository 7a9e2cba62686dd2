//! Cancel requests for running jobs: marks kept beside the state (not in
//! snapshots: a restarted process runs none of the jobs they aimed at) and
//! a broadcast channel for the signals.

use crate::MemoryBackend;
use async_trait::async_trait;
use parking_lot::Mutex;
use resq_core::{CancelMark, CancelSignal, CancelStore, Result, WorkerId, CANCEL_MARK_TTL};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::broadcast;

/// How many signals a slow receiver may fall behind before it is told to
/// read every mark again (`Lagged`).
const SIGNAL_CAPACITY: usize = 256;

/// The marks by worker member, with their expiry, and the signal channel.
pub(crate) struct Cancels {
    marks: Mutex<HashMap<String, (CancelMark, Instant)>>,
    signals: broadcast::Sender<CancelSignal>,
}

impl Default for Cancels {
    fn default() -> Self {
        let (signals, _) = broadcast::channel(SIGNAL_CAPACITY);
        Cancels {
            marks: Mutex::new(HashMap::new()),
            signals,
        }
    }
}

#[async_trait]
impl CancelStore for MemoryBackend {
    async fn request_cancel(&self, worker: &WorkerId, mark: &CancelMark) -> Result<()> {
        let member = worker.member();
        {
            let mut marks = self.cancels.marks.lock();
            let now = Instant::now();
            marks.retain(|_, (_, expires)| *expires > now);
            marks.insert(member.clone(), (mark.clone(), now + CANCEL_MARK_TTL));
        }
        // No receiver is fine: no worker of this store runs right now.
        let _ = self.cancels.signals.send(Some(Arc::from(member)));
        Ok(())
    }

    async fn cancel_marks(&self, workers: &[WorkerId]) -> Result<Vec<Option<CancelMark>>> {
        let marks = self.cancels.marks.lock();
        let now = Instant::now();
        Ok(workers
            .iter()
            .map(|w| {
                marks
                    .get(&w.member())
                    .filter(|(_, expires)| *expires > now)
                    .map(|(mark, _)| mark.clone())
            })
            .collect())
    }

    async fn clear_cancel(&self, worker: &WorkerId, mark: &CancelMark) -> Result<bool> {
        let mut marks = self.cancels.marks.lock();
        let member = worker.member();
        let now = Instant::now();
        let same = marks
            .get(&member)
            .is_some_and(|(m, expires)| m == mark && *expires > now);
        if same {
            marks.remove(&member);
        }
        Ok(same)
    }

    async fn cancel_signals(&self) -> Result<broadcast::Receiver<CancelSignal>> {
        Ok(self.cancels.signals.subscribe())
    }
}
