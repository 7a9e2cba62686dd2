//! The failed list: the [`FailedStore`] implementation.
//!
//! Entries are rows of `failed` in `id` order (the list's order), stored
//! byte for byte as `text`. Removal and retry find the first entry equal
//! to the given bytes through an index on `md5(entry)` (then compare the
//! bytes), lock it with `FOR UPDATE SKIP LOCKED` so that concurrent retries
//! of one entry requeue it once, and delete it; a retry pushes the payload
//! in the same statement.

use crate::error::{count, PgResult};
use crate::range::{from_tail_sql, window, Window};
use crate::PostgresBackend;
use async_trait::async_trait;
use resq_core::{FailedStore, Result};

/// The first entry equal to `$1`, locked.
macro_rules! first_entry {
    () => {
        concat!(
            "(SELECT f.id FROM {s}.failed AS f WHERE md5(f.entry) = md5($1::text) AND f.entry = $1::text ",
            "ORDER BY f.id LIMIT 1 FOR UPDATE SKIP LOCKED)"
        )
    };
}

/// `RPUSH failed $1`.
pub(crate) const PUSH_FAILED: &str = "INSERT INTO {s}.failed (entry) VALUES ($1)";

/// `LLEN failed`.
pub(crate) const FAILED_COUNT: &str = "SELECT count(*) FROM {s}.failed";

/// `LRANGE failed` from the head: `$1` offset, `$2` limit (NULL: all).
pub(crate) const FAILED_SLICE: &str = "SELECT entry FROM {s}.failed ORDER BY id OFFSET $1::bigint LIMIT $2::bigint";

/// `LRANGE failed` with tail-relative bounds: `$1` start, `$2` stop.
pub(crate) const FAILED_RANGE: &str = from_tail_sql!("entry", "{s}.failed", "$1", "$2");

/// `LREM failed 1 $1`.
pub(crate) const REMOVE_FAILED: &str = concat!("DELETE FROM {s}.failed WHERE id = ", first_entry!());

/// Removes entry `$1` and, if it was there, pushes payload `$3` to the tail
/// of queue `$2` (and wakes its workers). Returns 1 or 0.
pub(crate) const RETRY_FAILED: &str = concat!(
    "WITH f AS (DELETE FROM {s}.failed WHERE id = ",
    first_entry!(),
    " RETURNING id), ",
    "l AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared({ns}, hashtext($2::text)) FROM f), ",
    "n AS (INSERT INTO {s}.queues (name) SELECT $2::text FROM l ON CONFLICT DO NOTHING), ",
    "j AS (INSERT INTO {s}.jobs (queue, payload) SELECT $2::text, $3::text FROM l RETURNING 1) ",
    "SELECT count(*) FROM (SELECT pg_notify('{ch}', ",
    "CASE WHEN octet_length($2::text) <= 7000 THEN $2::text ELSE '' END) FROM j) AS woken"
);

/// The entry at offset `$1` in `id` order, locked, if its bytes equal
/// `$2`. One statement sees one snapshot, so the offset and the bytes are
/// checked together; a row deleted meanwhile by another session drops out
/// when locked, so nothing is found and nothing changes.
macro_rules! entry_at {
    () => {
        concat!(
            "(SELECT a.id FROM (SELECT f.id FROM {s}.failed AS f ORDER BY f.id OFFSET $1::bigint LIMIT 1) AS a ",
            "JOIN {s}.failed AS g ON g.id = a.id WHERE g.entry = $2::text FOR UPDATE OF g)"
        )
    };
}

/// Removes the entry at offset `$1` if it equals `$2`.
pub(crate) const REMOVE_FAILED_AT: &str = concat!(
    "DELETE FROM {s}.failed WHERE id = ",
    entry_at!(),
    " AND entry = $2::text"
);

/// Removes the entry at offset `$1` if it equals `$2` and, if it did,
/// pushes payload `$4` to the tail of queue `$3` (and wakes its workers).
/// Returns 1 or 0.
pub(crate) const RETRY_FAILED_AT: &str = concat!(
    "WITH f AS (DELETE FROM {s}.failed WHERE id = ",
    entry_at!(),
    " AND entry = $2::text RETURNING id), ",
    "l AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared({ns}, hashtext($3::text)) FROM f), ",
    "n AS (INSERT INTO {s}.queues (name) SELECT $3::text FROM l ON CONFLICT DO NOTHING), ",
    "j AS (INSERT INTO {s}.jobs (queue, payload) SELECT $3::text, $4::text FROM l RETURNING 1) ",
    "SELECT count(*) FROM (SELECT pg_notify('{ch}', ",
    "CASE WHEN octet_length($3::text) <= 7000 THEN $3::text ELSE '' END) FROM j) AS woken"
);

#[async_trait]
impl FailedStore for PostgresBackend {
    async fn push_failed(&self, entry: &str) -> Result<()> {
        sqlx::query(&self.sql.push_failed)
            .bind(entry)
            .execute(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(())
    }

    async fn failed_count(&self) -> Result<u64> {
        let (n,): (i64,) = sqlx::query_as(&self.sql.failed_count)
            .fetch_one(&self.pool)
            .await
            .pg(self)
            .await?;
        count(n)
    }

    async fn failed_range(&self, start: i64, stop: i64) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = match window(start, stop) {
            Window::Empty => return Ok(Vec::new()),
            Window::Slice { offset, limit } => {
                sqlx::query_as(&self.sql.failed_slice)
                    .bind(offset)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
            }
            Window::FromTail => {
                sqlx::query_as(&self.sql.failed_range)
                    .bind(start)
                    .bind(stop)
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .pg(self)
        .await?;
        Ok(rows.into_iter().map(|(e,)| e).collect())
    }

    async fn remove_failed(&self, entry: &str) -> Result<u64> {
        let done = sqlx::query(&self.sql.remove_failed)
            .bind(entry)
            .execute(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(done.rows_affected())
    }

    async fn retry_failed(&self, entry: &str, queue: &str, payload: &str) -> Result<bool> {
        let (n,): (i64,) = sqlx::query_as(&self.sql.retry_failed)
            .bind(entry)
            .bind(queue)
            .bind(payload)
            .fetch_one(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(n > 0)
    }

    async fn remove_failed_at(&self, index: u64, entry: &str) -> Result<bool> {
        // An offset past i64::MAX holds nothing.
        let Ok(index) = i64::try_from(index) else {
            return Ok(false);
        };
        let done = sqlx::query(&self.sql.remove_failed_at)
            .bind(index)
            .bind(entry)
            .execute(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn retry_failed_at(&self, index: u64, entry: &str, queue: &str, payload: &str) -> Result<bool> {
        let Ok(index) = i64::try_from(index) else {
            return Ok(false);
        };
        let (n,): (i64,) = sqlx::query_as(&self.sql.retry_failed_at)
            .bind(index)
            .bind(entry)
            .bind(queue)
            .bind(payload)
            .fetch_one(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(n > 0)
    }
}
