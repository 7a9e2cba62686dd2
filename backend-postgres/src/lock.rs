//! Expiring plugin locks: the [`LockStore`] implementation.
//!
//! A lock is a row of `locks` with its owner's value and an `expires_at`
//! from the database clock (`clock_timestamp()`), so every process agrees on
//! expiry whatever its own clock says. A row past its `expires_at` counts as
//! absent everywhere: acquiring takes it over in the same statement, and
//! renew, release and the listing ignore it. Expired rows are swept now and
//! then by `acquire_lock`.

use crate::error::PgResult;
use crate::PostgresBackend;
use async_trait::async_trait;
use resq_core::{LockEntry, LockStore, Result};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The longest TTL stored: about a century (longer ones are capped).
const MAX_TTL_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// How often (at most) `acquire_lock` sweeps expired rows, in ms.
const SWEEP_EVERY_MS: i64 = 60_000;

/// A TTL in whole milliseconds for SQL: at least 1 (Redis refuses a zero
/// expiry, and resq's other backends round up likewise), at most
/// [`MAX_TTL_MS`].
pub(crate) fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).clamp(1, MAX_TTL_MS)
}

/// `SET key value NX PX ttl`, taking over an expired holder: `$1` key,
/// `$2` value, `$3` TTL in ms.
pub(crate) const ACQUIRE_LOCK: &str = concat!(
    "INSERT INTO {s}.locks AS l (key, value, expires_at) ",
    "VALUES ($1::text, $2::text, clock_timestamp() + $3::bigint * interval '1 millisecond') ",
    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at ",
    "WHERE l.expires_at <= clock_timestamp() RETURNING 1"
);

/// Resets the TTL if `$1` still holds `$2`: `$3` TTL in ms.
pub(crate) const RENEW_LOCK: &str = concat!(
    "UPDATE {s}.locks SET expires_at = clock_timestamp() + $3::bigint * interval '1 millisecond' ",
    "WHERE key = $1 AND value = $2 AND expires_at > clock_timestamp()"
);

/// Deletes `$1` if it still holds `$2`.
pub(crate) const RELEASE_LOCK: &str =
    "DELETE FROM {s}.locks WHERE key = $1 AND value = $2 AND expires_at > clock_timestamp()";

/// Every live lock in byte order of its key.
pub(crate) const LOCKS: &str =
    "SELECT key, value FROM {s}.locks WHERE expires_at > clock_timestamp() ORDER BY key COLLATE \"C\"";

/// Deletes `$1` whatever it holds; says whether it was live.
pub(crate) const DELETE_LOCK: &str = "DELETE FROM {s}.locks WHERE key = $1 RETURNING expires_at > clock_timestamp()";

/// A live lock's value and its remaining TTL in ms (rounded up): `$1` key.
pub(crate) const GET_LOCK: &str = concat!(
    "SELECT value, ceil(extract(epoch FROM expires_at - clock_timestamp()) * 1000)::bigint ",
    "FROM {s}.locks WHERE key = $1 AND expires_at > clock_timestamp()"
);

/// `SET key value PX ttl`: `$1` key, `$2` value, `$3` TTL in ms.
pub(crate) const SET_LOCK: &str = concat!(
    "INSERT INTO {s}.locks (key, value, expires_at) ",
    "VALUES ($1::text, $2::text, clock_timestamp() + $3::bigint * interval '1 millisecond') ",
    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at"
);

/// `INCRBY` + `PEXPIRE`: `$1` key, `$2` increment, `$3` TTL in ms. An
/// expired row counts as 0; a value that is not an integer fails the cast,
/// which aborts the statement and leaves the row unchanged.
pub(crate) const INCR_LOCK: &str = concat!(
    "INSERT INTO {s}.locks AS l (key, value, expires_at) ",
    "VALUES ($1::text, $2::bigint::text, clock_timestamp() + $3::bigint * interval '1 millisecond') ",
    "ON CONFLICT (key) DO UPDATE SET ",
    "value = ((CASE WHEN l.expires_at > clock_timestamp() THEN l.value::bigint ELSE 0 END) + $2::bigint)::text, ",
    "expires_at = EXCLUDED.expires_at RETURNING value::bigint"
);

/// Takes lock `$3` (value `$4`, TTL `$5` ms) if it is free and, only then,
/// pushes payload `$2` to queue `$1` like `queue::PUSH`, in one statement.
/// Returns 1 when pushed, else 0.
pub(crate) const PUSH_ONCE: &str = concat!(
    "WITH k AS (INSERT INTO {s}.locks AS l (key, value, expires_at) ",
    "VALUES ($3::text, $4::text, clock_timestamp() + $5::bigint * interval '1 millisecond') ",
    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at ",
    "WHERE l.expires_at <= clock_timestamp() RETURNING 1), ",
    "q AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared({ns}, hashtext($1::text)) FROM k), ",
    "n AS (INSERT INTO {s}.queues (name) SELECT $1::text FROM q ON CONFLICT DO NOTHING), ",
    "j AS (INSERT INTO {s}.jobs (queue, payload) SELECT $1::text, $2::text FROM q), ",
    "w AS (SELECT pg_notify('{ch}', CASE WHEN octet_length($1::text) <= 7000 THEN $1::text ELSE '' END) FROM q) ",
    "SELECT count(*) FROM w"
);

/// Deletes every expired lock.
pub(crate) const SWEEP_LOCKS: &str = "DELETE FROM {s}.locks WHERE expires_at <= clock_timestamp()";

impl PostgresBackend {
    /// Sweeps expired locks if the last sweep is more than a minute old.
    async fn maybe_sweep_locks(&self) -> Result<()> {
        let now = resq_core::time::now_ms();
        let last = self.last_lock_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) < SWEEP_EVERY_MS {
            return Ok(());
        }
        if self
            .last_lock_sweep
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return Ok(()); // another call is sweeping
        }
        sqlx::query(&self.sql.sweep_locks)
            .execute(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl LockStore for PostgresBackend {
    async fn acquire_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<bool> {
        let taken: Option<(i32,)> = sqlx::query_as(&self.sql.acquire_lock)
            .bind(key)
            .bind(value)
            .bind(ttl_ms(ttl))
            .fetch_optional(&self.pool)
            .await
            .pg(self)
            .await?;
        if let Err(e) = self.maybe_sweep_locks().await {
            tracing::debug!(target: "resq::postgres", error = %e, "sweeping expired locks failed");
        }
        Ok(taken.is_some())
    }

    async fn renew_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<bool> {
        let done = sqlx::query(&self.sql.renew_lock)
            .bind(key)
            .bind(value)
            .bind(ttl_ms(ttl))
            .execute(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn release_lock(&self, key: &str, value: &str) -> Result<bool> {
        let done = sqlx::query(&self.sql.release_lock)
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn locks(&self) -> Result<Vec<(String, String)>> {
        sqlx::query_as(&self.sql.locks)
            .fetch_all(&self.pool)
            .await
            .pg(self)
            .await
    }

    async fn delete_lock(&self, key: &str) -> Result<u64> {
        let live: Option<(bool,)> = sqlx::query_as(&self.sql.delete_lock)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(u64::from(live.is_some_and(|(l,)| l)))
    }

    async fn get_lock(&self, key: &str) -> Result<Option<LockEntry>> {
        let row: Option<(String, i64)> = sqlx::query_as(&self.sql.get_lock)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(row.map(|(value, ms)| LockEntry {
            value,
            ttl: Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
        }))
    }

    async fn set_lock(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        sqlx::query(&self.sql.set_lock)
            .bind(key)
            .bind(value)
            .bind(ttl_ms(ttl))
            .execute(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(())
    }

    async fn incr_lock(&self, key: &str, by: i64, ttl: Duration) -> Result<i64> {
        let (value,): (i64,) = sqlx::query_as(&self.sql.incr_lock)
            .bind(key)
            .bind(by)
            .bind(ttl_ms(ttl))
            .fetch_one(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_bounds() {
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_micros(10)), 1);
        assert_eq!(ttl_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(ttl_ms(Duration::MAX), MAX_TTL_MS);
    }
}
