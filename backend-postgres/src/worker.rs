//! The worker registry: the [`WorkerRegistry`] implementation.
//!
//! `workers` holds registered worker ids with their start times (Resque's
//! `workers` set and `worker:<id>:started`), `pings` the last liveness ping
//! by worker name (Resque's `worker:ping:<name>`, which carries the queues),
//! and `working` the working-on rows that claims write. Cleaning a worker
//! removes all of it, plus its `processed:<name>`/`failed:<name>` counters,
//! and hands its job to the [`Orphan`] policy, in one transaction.

use crate::error::PgResult;
use crate::PostgresBackend;
use async_trait::async_trait;
use resq_core::failed::{encode_entry, FailedJob};
use resq_core::{Cleaned, Error, Orphan, Result, WorkerId, WorkerRegistry, WorkerTimes, WorkingOn};

/// Registers `$1:$2` started at `$3` and records its first ping.
pub(crate) const REGISTER_WORKER: &str = concat!(
    "WITH w AS (INSERT INTO {s}.workers (name, queues, started_ms) VALUES ($1::text, $2::text, $3::bigint) ",
    "ON CONFLICT (name, queues) DO UPDATE SET started_ms = EXCLUDED.started_ms) ",
    "INSERT INTO {s}.pings (name, queues, ping_ms) VALUES ($1::text, $2::text, $3::bigint) ",
    "ON CONFLICT (name) DO UPDATE SET queues = EXCLUDED.queues, ping_ms = EXCLUDED.ping_ms"
);

/// Records a ping of worker `$1` (queues `$2`) at `$3`.
pub(crate) const PING_WORKER: &str = concat!(
    "INSERT INTO {s}.pings (name, queues, ping_ms) VALUES ($1::text, $2::text, $3::bigint) ",
    "ON CONFLICT (name) DO UPDATE SET queues = EXCLUDED.queues, ping_ms = EXCLUDED.ping_ms"
);

/// `$1`/`$2` (names, queues) as rows with their position; shared by the
/// statements that take many workers at once.
macro_rules! many_workers {
    () => {
        "WITH input AS (SELECT name, queues, ord FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(name, queues, ord)) "
    };
}

/// The ping upsert of many workers at `$3`. A name given twice keeps its
/// last queues (as calling `ping_worker` in order would); rows are written
/// in name order, so concurrent callers lock them in one order.
macro_rules! upsert_pings {
    () => {
        concat!(
            "INSERT INTO {s}.pings (name, queues, ping_ms) ",
            "SELECT DISTINCT ON (name) name, queues, $3::bigint FROM input ORDER BY name, ord DESC ",
            "ON CONFLICT (name) DO UPDATE SET queues = EXCLUDED.queues, ping_ms = EXCLUDED.ping_ms"
        )
    };
}

/// Registers every `$1[k]:$2[k]` started at `$3` and records their first
/// pings, in one statement.
pub(crate) const REGISTER_WORKERS: &str = concat!(
    many_workers!(),
    ", w AS (INSERT INTO {s}.workers (name, queues, started_ms) ",
    "SELECT DISTINCT ON (name, queues) name, queues, $3::bigint FROM input ORDER BY name, queues ",
    "ON CONFLICT (name, queues) DO UPDATE SET started_ms = EXCLUDED.started_ms) ",
    upsert_pings!()
);

/// Records a ping at `$3` of every worker `$1[k]` (queues `$2[k]`).
pub(crate) const PING_WORKERS: &str = concat!(many_workers!(), upsert_pings!());

/// The working-on rows of every `$1[k]:$2[k]`, one row per input in its
/// order, all NULL where there is none.
pub(crate) const WORKING_ON_MANY: &str = concat!(
    "SELECT o.worker, o.queue, o.run_at, o.payload ",
    "FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(name, queues, ord) ",
    "LEFT JOIN {s}.working o ON o.worker_name = t.name AND o.worker_queues = t.queues ",
    "ORDER BY t.ord"
);

/// Start time and last ping of each worker `$1:$2` (parallel arrays), in
/// that order.
pub(crate) const WORKER_TIMES: &str = concat!(
    "SELECT (SELECT w.started_ms FROM {s}.workers AS w WHERE w.name = t.name AND w.queues = t.queues), ",
    "(SELECT p.ping_ms FROM {s}.pings AS p WHERE p.name = t.name) ",
    "FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t (name, queues, ord) ORDER BY t.ord"
);

/// Registered workers, sorted as [`WorkerId`]s sort (bytes of name, then queues).
pub(crate) const WORKERS: &str =
    "SELECT name, queues FROM {s}.workers ORDER BY name COLLATE \"C\", queues COLLATE \"C\"";

/// The start time of `$1:$2`.
pub(crate) const WORKER_STARTED: &str = "SELECT started_ms FROM {s}.workers WHERE name = $1 AND queues = $2";

/// The working-on row of `$1:$2`.
pub(crate) const WORKING_ON: &str =
    "SELECT worker, queue, run_at, payload FROM {s}.working WHERE worker_name = $1 AND worker_queues = $2";

/// Workers whose last ping is older than `$1`, sorted.
pub(crate) const STALE_WORKERS: &str = concat!(
    "SELECT name, queues FROM {s}.pings WHERE ping_ms < $1::bigint ",
    "ORDER BY name COLLATE \"C\", queues COLLATE \"C\""
);

/// Removes `$1:$2` from the registry, its ping, its working-on row and its
/// task slot;
/// returns whether it was registered or pinged, and the working-on row if
/// it had one.
pub(crate) const CLEAN_WORKER: &str = concat!(
    "WITH w AS (DELETE FROM {s}.workers WHERE name = $1 AND queues = $2 RETURNING 1), ",
    "p AS (DELETE FROM {s}.pings WHERE name = $1 RETURNING 1), ",
    "o AS (DELETE FROM {s}.working WHERE worker_name = $1 AND worker_queues = $2 ",
    "RETURNING worker, queue, run_at, payload), ",
    "t AS (DELETE FROM {s}.task_slots WHERE worker_name = $1 AND worker_queues = $2) ",
    "SELECT EXISTS (SELECT 1 FROM w) OR EXISTS (SELECT 1 FROM p) AS known, ",
    "o.worker, o.queue, o.run_at, o.payload FROM (SELECT 1) AS one LEFT JOIN o ON true"
);

/// Waits for worker `$1`'s one-slot claim in flight, if any, and keeps
/// the next one out until the transaction ends.
pub(crate) const CLAIM_GUARD: &str = "SELECT {s}.resq_claim_guard($1)";

/// Deletes worker `$1`'s own counters. `clean_worker` runs it last, so
/// that it takes counter locks in the order completions do (`failed`
/// before `failed:<name>`).
pub(crate) const FORGET_WORKER_STATS: &str =
    "DELETE FROM {s}.stats WHERE key IN ('processed:' || $1::text, 'failed:' || $1::text)";

/// Appends an orphan's failed entry `$1` and counts it in `failed`.
pub(crate) const FAIL_ORPHAN: &str = concat!(
    "WITH f AS (INSERT INTO {s}.failed (entry) VALUES ($1::text)) ",
    "INSERT INTO {s}.stats AS st (key, value) VALUES ('failed', 1) ",
    "ON CONFLICT (key) DO UPDATE SET value = LEAST(st.value, 9223372036854775806) + 1"
);

impl PostgresBackend {
    /// Runs `sql`, one of the statements over many workers (`$1` names,
    /// `$2` queues, `$3` a time in epoch ms); nothing for no workers.
    async fn for_workers(&self, sql: &str, workers: &[WorkerId], now_ms: i64) -> Result<()> {
        if workers.is_empty() {
            return Ok(());
        }
        let (names, queues) = columns(workers);
        let mut lent = self.hot().await?;
        sqlx::query(sql)
            .bind(names)
            .bind(queues)
            .bind(now_ms)
            .execute(lent.conn())
            .await
            .pg(self)
            .await?;
        lent.succeeded();
        Ok(())
    }
}

/// A `working_on_many` row: all NULL for a worker without a record.
type WorkingRow = (Option<String>, Option<String>, Option<String>, Option<String>);

/// The names and queues of `workers` as two parallel arrays.
pub(crate) fn columns(workers: &[WorkerId]) -> (Vec<&str>, Vec<&str>) {
    workers.iter().map(|w| (w.name.as_str(), w.queues.as_str())).unzip()
}

/// A `clean_worker` result row.
type CleanRow = (bool, Option<String>, Option<String>, Option<String>, Option<String>);

#[async_trait]
impl WorkerRegistry for PostgresBackend {
    async fn register_worker(&self, worker: &WorkerId, now_ms: i64) -> Result<()> {
        sqlx::query(&self.sql.register_worker)
            .bind(&worker.name)
            .bind(&worker.queues)
            .bind(now_ms)
            .execute(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(())
    }

    async fn ping_worker(&self, worker: &WorkerId, now_ms: i64) -> Result<()> {
        let mut lent = self.hot().await?;
        sqlx::query(&self.sql.ping_worker)
            .bind(&worker.name)
            .bind(&worker.queues)
            .bind(now_ms)
            .execute(lent.conn())
            .await
            .pg(self)
            .await?;
        lent.succeeded();
        Ok(())
    }

    async fn register_workers(&self, workers: &[WorkerId], now_ms: i64) -> Result<()> {
        self.for_workers(&self.sql.register_workers, workers, now_ms).await
    }

    async fn ping_workers(&self, workers: &[WorkerId], now_ms: i64) -> Result<()> {
        self.for_workers(&self.sql.ping_workers, workers, now_ms).await
    }

    async fn worker_times(&self, workers: &[WorkerId]) -> Result<Vec<WorkerTimes>> {
        if workers.is_empty() {
            return Ok(Vec::new());
        }
        let (names, queues) = columns(workers);
        let rows: Vec<(Option<i64>, Option<i64>)> = sqlx::query_as(&self.sql.worker_times)
            .bind(names)
            .bind(queues)
            .fetch_all(&self.pool)
            .await
            .pg(self)
            .await?;
        if rows.len() != workers.len() {
            return Err(Error::transient(format!(
                "worker_times: {} rows for {} workers",
                rows.len(),
                workers.len()
            )));
        }
        Ok(rows
            .into_iter()
            .map(|(started_ms, ping_ms)| WorkerTimes { started_ms, ping_ms })
            .collect())
    }

    async fn working_on_many(&self, workers: &[WorkerId]) -> Result<Vec<Option<WorkingOn>>> {
        if workers.is_empty() {
            return Ok(Vec::new());
        }
        let (names, queues) = columns(workers);
        let mut lent = self.hot().await?;
        let rows: Vec<WorkingRow> = sqlx::query_as(&self.sql.working_on_many)
            .bind(names)
            .bind(queues)
            .fetch_all(lent.conn())
            .await
            .pg(self)
            .await?;
        lent.succeeded();
        if rows.len() != workers.len() {
            return Err(Error::transient(format!(
                "working_on_many: {} rows for {} workers",
                rows.len(),
                workers.len()
            )));
        }
        Ok(rows
            .into_iter()
            .map(|(worker, queue, run_at, payload)| {
                Some(WorkingOn {
                    worker: worker?,
                    queue: queue.unwrap_or_default(),
                    run_at: run_at.unwrap_or_default(),
                    payload: payload.unwrap_or_default(),
                })
            })
            .collect())
    }

    async fn workers(&self) -> Result<Vec<WorkerId>> {
        let rows: Vec<(String, String)> = sqlx::query_as(&self.sql.workers)
            .fetch_all(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(name, queues)| WorkerId { name, queues })
            .collect())
    }

    async fn worker_started(&self, worker: &WorkerId) -> Result<Option<i64>> {
        let row: Option<(i64,)> = sqlx::query_as(&self.sql.worker_started)
            .bind(&worker.name)
            .bind(&worker.queues)
            .fetch_optional(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(row.map(|(t,)| t))
    }

    async fn working_on(&self, worker: &WorkerId) -> Result<Option<WorkingOn>> {
        let row: Option<(String, String, String, String)> = sqlx::query_as(&self.sql.working_on)
            .bind(&worker.name)
            .bind(&worker.queues)
            .fetch_optional(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(row.map(|(worker, queue, run_at, payload)| WorkingOn {
            worker,
            queue,
            run_at,
            payload,
        }))
    }

    async fn stale_workers(&self, cutoff_ms: i64) -> Result<Vec<WorkerId>> {
        let rows: Vec<(String, String)> = sqlx::query_as(&self.sql.stale_workers)
            .bind(cutoff_ms)
            .fetch_all(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(name, queues)| WorkerId { name, queues })
            .collect())
    }

    async fn clean_worker(&self, worker: &WorkerId, orphan: Orphan) -> Result<Option<Cleaned>> {
        let mut tx = self.pool.begin().await.pg(self).await?;
        // Waits for a claim of this worker still in flight (see
        // `resq_claim_guard`, migration 6).
        sqlx::query(&self.sql.claim_guard)
            .bind(&worker.name)
            .execute(&mut *tx)
            .await
            .pg(self)
            .await?;
        let (known, on_worker, on_queue, on_run_at, on_payload): CleanRow = sqlx::query_as(&self.sql.clean_worker)
            .bind(&worker.name)
            .bind(&worker.queues)
            .fetch_one(&mut *tx)
            .await
            .pg(self)
            .await?;
        let working_on = match (on_worker, on_queue, on_run_at, on_payload) {
            (Some(worker), Some(queue), Some(run_at), Some(payload)) => Some(WorkingOn {
                worker,
                queue,
                run_at,
                payload,
            }),
            (None, None, None, None) => None,
            _ => {
                return Err(Error::Decode {
                    what: "a working-on row",
                    reason: "it has NULL columns".into(),
                })
            }
        };
        let mut failed_entry = None;
        if let Some(on) = &working_on {
            match orphan {
                Orphan::Requeue => {
                    sqlx::query(&self.sql.push_head)
                        .bind(&on.queue)
                        .bind(&on.payload)
                        .execute(&mut *tx)
                        .await
                        .pg(self)
                        .await?;
                }
                Orphan::Fail { failure, at_ms } => {
                    // Ruby workers leave the name out of the record.
                    let name = if on.worker.is_empty() { &worker.name } else { &on.worker };
                    let entry = encode_entry(name, &on.queue, &on.payload, &failure, at_ms);
                    sqlx::query(&self.sql.fail_orphan)
                        .bind(&entry)
                        .execute(&mut *tx)
                        .await
                        .pg(self)
                        .await?;
                    failed_entry = Some(Box::new(FailedJob::decode_lenient(&entry)));
                }
            }
        }
        // The per-worker counters go even when nothing else of the worker
        // was found, as in Redis.
        sqlx::query(&self.sql.forget_worker_stats)
            .bind(&worker.name)
            .execute(&mut *tx)
            .await
            .pg(self)
            .await?;
        tx.commit().await.pg(self).await?;
        if !known && working_on.is_none() {
            return Ok(None);
        }
        Ok(Some(Cleaned {
            worker: worker.clone(),
            working_on,
            failed_entry,
        }))
    }
}
