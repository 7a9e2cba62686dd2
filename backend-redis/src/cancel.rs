//! Cancel requests: resq's own keys `<ns>:resq:cancel:<worker member>` (a
//! JSON `{"run_at":…,"payload":…}` string with a TTL, which Resque clients
//! ignore) and the pub/sub channel `<ns>:resq:cancel`.

use crate::scripts::RELEASE_LOCK;
use crate::{text, RedisBackend, RedisResult};
use async_trait::async_trait;
use resq_core::{CancelMark, CancelSignal, CancelStore, Result, WorkerId, CANCEL_MARK_TTL};
use tokio::sync::broadcast;

#[async_trait]
impl CancelStore for RedisBackend {
    /// `SET <mark> <json> PX <ttl>` and `PUBLISH <ns>:resq:cancel <member>`
    /// in one `MULTI`/`EXEC`: the mark is stored whenever the signal is sent.
    async fn request_cancel(&self, worker: &WorkerId, mark: &CancelMark) -> Result<()> {
        let key = self.keys.cancel_mark(worker);
        let value = serde_json::to_string(mark).map_err(|e| resq_core::Error::Encode {
            what: "cancel mark",
            reason: e.to_string(),
        })?;
        let ttl_ms = u64::try_from(CANCEL_MARK_TTL.as_millis()).unwrap_or(u64::MAX);
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&key)
            .arg(value)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .cmd("PUBLISH")
            .arg(self.keys.cancel_channel())
            .arg(worker.member())
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .rd_at(self, &key)
            .await
    }

    /// One `MGET`. A value that is not a mark (another client's doing) is
    /// skipped with a log line naming the key, never an error.
    async fn cancel_marks(&self, workers: &[WorkerId]) -> Result<Vec<Option<CancelMark>>> {
        if workers.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = workers.iter().map(|w| self.keys.cancel_mark(w)).collect();
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.conn())
            .await
            .rd(self)
            .await?;
        Ok(values
            .into_iter()
            .zip(&keys)
            .map(|(raw, key)| {
                let raw = text(raw?);
                match serde_json::from_str::<CancelMark>(&raw) {
                    Ok(mark) => Some(mark),
                    Err(e) => {
                        tracing::warn!(target: "resq::redis", key = %key, error = %e, "skipping a cancel mark that does not decode");
                        None
                    }
                }
            })
            .collect())
    }

    /// Compare-and-delete with the plugin locks' script (the key in KEYS):
    /// the mark's JSON, written by `request_cancel` with the same encoder,
    /// must still be the stored value.
    async fn clear_cancel(&self, worker: &WorkerId, mark: &CancelMark) -> Result<bool> {
        let key = self.keys.cancel_mark(worker);
        let value = serde_json::to_string(mark).map_err(|e| resq_core::Error::Encode {
            what: "cancel mark",
            reason: e.to_string(),
        })?;
        let removed: i64 = RELEASE_LOCK
            .key(&key)
            .arg(value)
            .invoke_async(&mut self.conn())
            .await
            .rd_at(self, &key)
            .await?;
        Ok(removed == 1)
    }

    async fn cancel_signals(&self) -> Result<broadcast::Receiver<CancelSignal>> {
        Ok(self.wakeups.subscribe_cancels())
    }
}
