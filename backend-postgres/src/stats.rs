//! Integer counters: the [`StatsStore`] implementation.
//!
//! One row of `stats` per counter that was ever written. `incr_stat` is an
//! upsert that returns the new value; like Redis `INCRBY`, an increment that
//! would overflow is refused and changes nothing. The counters that
//! `complete` and `clean_worker` bump saturate at `i64::MAX` instead, so a
//! counter can never fail a job.

use crate::error::{is_overflow, PgResult};
use crate::PostgresBackend;
use async_trait::async_trait;
use resq_core::{Error, Result, StatsStore};

/// `INCRBY $1 $2`, returning the new value.
pub(crate) const INCR_STAT: &str = concat!(
    "INSERT INTO {s}.stats AS st (key, value) VALUES ($1::text, $2::bigint) ",
    "ON CONFLICT (key) DO UPDATE SET value = st.value + EXCLUDED.value RETURNING value"
);

/// `GET $1`.
pub(crate) const STAT: &str = "SELECT value FROM {s}.stats WHERE key = $1";

/// Every counter in byte order of its key.
pub(crate) const STATS: &str = "SELECT key, value FROM {s}.stats ORDER BY key COLLATE \"C\"";

#[async_trait]
impl StatsStore for PostgresBackend {
    async fn incr_stat(&self, key: &str, by: i64) -> Result<i64> {
        let row: std::result::Result<(i64,), sqlx::Error> = sqlx::query_as(&self.sql.incr_stat)
            .bind(key)
            .bind(by)
            .fetch_one(&self.pool)
            .await;
        match row {
            Ok((value,)) => Ok(value),
            Err(e) if is_overflow(&e) => Err(Error::InvalidArgument(format!(
                "incrementing stat {key:?} by {by} would overflow"
            ))),
            Err(e) => Err(self.explainer.explain(e).await),
        }
    }

    async fn stat(&self, key: &str) -> Result<i64> {
        let row: Option<(i64,)> = sqlx::query_as(&self.sql.stat)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(row.map_or(0, |(v,)| v))
    }

    async fn stats(&self) -> Result<Vec<(String, i64)>> {
        sqlx::query_as(&self.sql.stats)
            .fetch_all(&self.pool)
            .await
            .pg(self)
            .await
    }
}
