//! Flow control per task class (`TaskFlowStore`): the `task_flow` and
//! `task_slots` tables and `resq_acquire_task_start` (migration 8), one
//! statement per call.

use crate::error::PgResult;
use crate::PostgresBackend;
use async_trait::async_trait;
use resq_core::flow::{TaskAdmission, TaskLimits};
use resq_core::{Result, TaskFlowStore, WorkerId};
use std::time::Duration;

/// Admits a start of class `$1` on worker `$2:$3` under a rate limit of
/// `$4` per `$5` ms and a cap of `$6` (NULL: none); see the migration.
pub(crate) const ACQUIRE_TASK_START: &str =
    "SELECT {s}.resq_acquire_task_start($1::text, $2::text, $3::text, $4::integer, $5::bigint, $6::integer)";

/// Deletes worker `$1:$2`'s task slot.
pub(crate) const RELEASE_TASK_SLOT: &str =
    "DELETE FROM {s}.task_slots WHERE worker_name = $1::text AND worker_queues = $2::text";

/// How many task slots class `$1` holds.
pub(crate) const TASK_SLOTS_HELD: &str = "SELECT count(*) FROM {s}.task_slots WHERE class = $1::text";

#[async_trait]
impl TaskFlowStore for PostgresBackend {
    async fn acquire_task_start(&self, class: &str, limits: &TaskLimits, worker: &WorkerId) -> Result<TaskAdmission> {
        limits.check()?;
        if limits.is_unlimited() {
            return Ok(TaskAdmission::Admitted);
        }
        let max = limits.rate.map(|r| i32::try_from(r.max).unwrap_or(i32::MAX));
        let period = limits.rate.map(|r| i64::try_from(r.period_ms()).unwrap_or(i64::MAX));
        let cap = limits.concurrency.map(|k| i32::try_from(k).unwrap_or(i32::MAX));
        let verdict: i64 = sqlx::query_scalar(&self.sql.acquire_task_start)
            .bind(class)
            .bind(&worker.name)
            .bind(&worker.queues)
            .bind(max)
            .bind(period)
            .bind(cap)
            .fetch_one(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(match verdict {
            -1 => TaskAdmission::Admitted,
            -2 => TaskAdmission::AtCapacity,
            ms => TaskAdmission::RateLimited(Duration::from_millis(u64::try_from(ms).unwrap_or(1))),
        })
    }

    async fn release_task_slot(&self, worker: &WorkerId) -> Result<bool> {
        let done = sqlx::query(&self.sql.release_task_slot)
            .bind(&worker.name)
            .bind(&worker.queues)
            .execute(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn task_slots_held(&self, class: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(&self.sql.task_slots_held)
            .bind(class)
            .fetch_one(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
