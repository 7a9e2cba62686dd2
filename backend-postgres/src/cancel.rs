//! Cancel requests: the `cancel_marks` table (migration 5) and the
//! `<schema>.resq_stop` notification channel, sent in the transaction that
//! writes the mark (so it is delivered exactly when the mark is visible).

use crate::error::PgResult;
use crate::PostgresBackend;
use async_trait::async_trait;
use resq_core::time::now_ms;
use resq_core::{CancelMark, CancelSignal, CancelStore, Result, WorkerId, CANCEL_MARK_TTL};
use tokio::sync::broadcast;

/// Upserts `$1`'s mark (`$2` run_at, `$3` payload, `$4` expiry ms), drops
/// other workers' expired marks (`$5` now ms), and notifies the member, in
/// one statement.
pub(crate) const REQUEST_CANCEL: &str = concat!(
    "WITH swept AS (DELETE FROM {s}.cancel_marks WHERE expires_ms <= $5::bigint AND worker <> $1::text), ",
    "m AS (INSERT INTO {s}.cancel_marks AS c (worker, run_at, payload, expires_ms) ",
    "VALUES ($1::text, $2::text, $3::text, $4::bigint) ",
    "ON CONFLICT (worker) DO UPDATE SET run_at = EXCLUDED.run_at, payload = EXCLUDED.payload, ",
    "expires_ms = EXCLUDED.expires_ms RETURNING worker) ",
    "SELECT pg_notify('{cancel_ch}', worker) FROM m"
);

/// The live marks of the members in `$1` (`$2` now ms).
pub(crate) const CANCEL_MARKS: &str = concat!(
    "SELECT worker, run_at, payload FROM {s}.cancel_marks ",
    "WHERE worker = ANY($1::text[]) AND expires_ms > $2::bigint"
);

/// Deletes `$1`'s mark if it is still the one with run_at `$3` and
/// payload `$4`; counts it if it was live (`$2` now ms).
pub(crate) const CLEAR_CANCEL: &str = concat!(
    "WITH d AS (DELETE FROM {s}.cancel_marks WHERE worker = $1::text AND run_at = $3::text ",
    "AND payload = $4::text RETURNING expires_ms) ",
    "SELECT count(*) FILTER (WHERE expires_ms > $2::bigint) FROM d"
);

#[async_trait]
impl CancelStore for PostgresBackend {
    async fn request_cancel(&self, worker: &WorkerId, mark: &CancelMark) -> Result<()> {
        let now = now_ms();
        let ttl = i64::try_from(CANCEL_MARK_TTL.as_millis()).unwrap_or(i64::MAX);
        sqlx::query(&self.sql.request_cancel)
            .bind(worker.member())
            .bind(&mark.run_at)
            .bind(&mark.payload)
            .bind(now.saturating_add(ttl))
            .bind(now)
            .execute(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(())
    }

    async fn cancel_marks(&self, workers: &[WorkerId]) -> Result<Vec<Option<CancelMark>>> {
        if workers.is_empty() {
            return Ok(Vec::new());
        }
        let members: Vec<String> = workers.iter().map(WorkerId::member).collect();
        let rows: Vec<(String, String, String)> = sqlx::query_as(&self.sql.cancel_marks)
            .bind(&members)
            .bind(now_ms())
            .fetch_all(&self.pool)
            .await
            .pg(self)
            .await?;
        let mut by_member: std::collections::HashMap<String, CancelMark> = rows
            .into_iter()
            .map(|(w, run_at, payload)| (w, CancelMark { run_at, payload }))
            .collect();
        Ok(members.iter().map(|m| by_member.remove(m)).collect())
    }

    async fn clear_cancel(&self, worker: &WorkerId, mark: &CancelMark) -> Result<bool> {
        let (n,): (i64,) = sqlx::query_as(&self.sql.clear_cancel)
            .bind(worker.member())
            .bind(now_ms())
            .bind(&mark.run_at)
            .bind(&mark.payload)
            .fetch_one(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(n > 0)
    }

    async fn cancel_signals(&self) -> Result<broadcast::Receiver<CancelSignal>> {
        Ok(self.notifier.subscribe_cancels())
    }
}
