//! Transactional enqueue: jobs pushed inside the caller's own transaction.
//!
//! A job pushed with [`PostgresBackend::push_in`] or
//! [`PostgresBackend::enqueue_in_tx`] on a transaction becomes visible (and
//! wakes workers: `NOTIFY` is delivered at commit) only if that transaction
//! commits, together with the caller's other writes; a rollback leaves no
//! trace. The statements are schema-qualified, so the caller's connection
//! needs no `search_path`; it must be to the database that holds resq's
//! schema. Until the transaction ends it holds a shared lock on each queue
//! it pushed to, which only `delete_queue` of that queue waits for.

use crate::PostgresBackend;
use resq_core::job::{args_of, encode_payload};
use resq_core::{Error, QueuedJob, Result};
use serde::Serialize;
use sqlx::PgConnection;

impl PostgresBackend {
    /// Pushes `payload` to the tail of `queue` on `conn`, typically the
    /// caller's open transaction (`&mut tx` coerces to it). See the
    /// [module docs](self).
    ///
    /// ```no_run
    /// # async fn example(backend: &resq_postgres::PostgresBackend) -> resq_core::Result<()> {
    /// let mut tx = backend.pool().begin().await.map_err(resq_core::Error::backend)?;
    /// // … the caller's own writes on `tx` …
    /// backend
    ///     .push_in(&mut tx, "mail", r#"{"class":"welcome","queue":"mail","args":[42]}"#)
    ///     .await?;
    /// tx.commit().await.map_err(resq_core::Error::backend)?;
    /// # Ok(()) }
    /// ```
    pub async fn push_in(&self, conn: &mut PgConnection, queue: &str, payload: &str) -> Result<()> {
        sqlx::query(&self.sql.push)
            .bind(queue)
            .bind(payload)
            .execute(conn)
            .await
            .map_err(crate::error::db)?;
        Ok(())
    }

    /// Pushes many payloads, each to the tail of its queue, in order, on
    /// `conn` (see [`PostgresBackend::push_in`]).
    pub async fn push_batch_in(&self, conn: &mut PgConnection, jobs: &[QueuedJob]) -> Result<()> {
        self.push_batch_on(conn, jobs).await
    }

    /// Enqueues a job as `resq_core::Queue::enqueue` does (node-resque's
    /// payload bytes, `args` wrapped into an array), but on `conn`, the
    /// caller's transaction: it runs only if that transaction commits.
    /// Empty queue or class names are [`Error::InvalidArgument`].
    pub async fn enqueue_in_tx(
        &self,
        conn: &mut PgConnection,
        queue: &str,
        class: &str,
        args: impl Serialize,
    ) -> Result<()> {
        for (what, name) in [("queue", queue), ("class", class)] {
            if name.trim().is_empty() {
                return Err(Error::InvalidArgument(format!("{what} must not be empty")));
            }
        }
        let args = args_of(&args)?;
        self.push_in(conn, queue, &encode_payload(queue, class, &args)).await
    }
}
