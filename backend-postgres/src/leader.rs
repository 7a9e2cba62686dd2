//! The scheduler's leader lock: the [`LeaderLock`] implementation.
//!
//! It is the single row of `leader`, apart from the plugin locks (so
//! `locks()` never lists it), with an `expires_at` from the database clock.
//! Taking, renewing and taking over an expired lock are one upsert.

use crate::error::PgResult;
use crate::lock::ttl_ms;
use crate::PostgresBackend;
use async_trait::async_trait;
use resq_core::{LeaderLock, Result};
use std::time::Duration;

/// Takes the lock for `$1` if it is free or expired, or renews it if `$1`
/// holds it: `$2` TTL in ms. Returns a row when `$1` is the leader.
pub(crate) const ACQUIRE_LEADER: &str = concat!(
    "INSERT INTO {s}.leader AS l (slot, holder, expires_at) ",
    "VALUES (1, $1::text, clock_timestamp() + $2::bigint * interval '1 millisecond') ",
    "ON CONFLICT (slot) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at ",
    "WHERE l.holder = EXCLUDED.holder OR l.expires_at <= clock_timestamp() RETURNING 1"
);

/// Releases the lock if `$1` holds it.
pub(crate) const RELEASE_LEADER: &str = "DELETE FROM {s}.leader WHERE holder = $1 AND expires_at > clock_timestamp()";

/// The live holder, if any.
pub(crate) const LEADER: &str = "SELECT holder FROM {s}.leader WHERE expires_at > clock_timestamp()";

#[async_trait]
impl LeaderLock for PostgresBackend {
    async fn acquire_leader(&self, name: &str, ttl: Duration) -> Result<bool> {
        let won: Option<(i32,)> = sqlx::query_as(&self.sql.acquire_leader)
            .bind(name)
            .bind(ttl_ms(ttl))
            .fetch_optional(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(won.is_some())
    }

    async fn release_leader(&self, name: &str) -> Result<bool> {
        let done = sqlx::query(&self.sql.release_leader)
            .bind(name)
            .execute(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn leader(&self) -> Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as(&self.sql.leader)
            .fetch_optional(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(row.map(|(h,)| h))
    }
}
