//! The delayed schedule: the [`DelayedStore`] implementation.
//!
//! Each item is a row of `delayed` (bucket `ts`, insertion `id`, payload,
//! the SHA-256 `digest` of the payload's bytes, and since migration 7 the
//! due time `due_ms`: the time asked for, or the bucket's due time for an
//! item scheduled by bucket). The unique index on
//! `(digest, ts)` makes `schedule` refuse a payload already in its bucket in
//! the same statement that inserts it (`ON CONFLICT DO NOTHING`), so
//! concurrent identical schedules store one item; it also finds a
//! payload's buckets. Lookups by payload compare the bytes as well.
//!
//! Promotion by time (`promote_due_ms`, what the scheduler uses) takes the
//! rows due at a given millisecond, earliest first, through the
//! `(due_ms, id)` index; promotion by bucket (`promote_due`) takes
//! up to `limit` due rows, oldest bucket first and in
//! insertion order within a bucket, with `FOR UPDATE SKIP LOCKED` (so
//! concurrent promoters never take the same item), deletes them and pushes
//! them onto their queues (or, when they cannot be promoted, appends their
//! failed entries) in one transaction.

use crate::error::{limit, PgResult};
use crate::PostgresBackend;
use async_trait::async_trait;
use resq_core::backend::MILLISECOND_PRECISION;
use resq_core::backend::{delayed_is_of_class, REMOVAL_PAGE};
use resq_core::failed::promotion_failure_entry;
use resq_core::job::promotion_target;
use resq_core::time::{bucket_due_ms, delayed_bucket_of_ms};
use resq_core::{DelayedStore, Promotion, QueuedJob, Result};

/// `$1` bucket, `$2` payload, `$3` due time (epoch ms), `$4` the notify
/// horizon (epoch ms, [`NOTIFY_HORIZON_MS`] from now); returns a row only when
/// the item was added. In the same statement it notifies the schema's
/// delayed channel, so that a sleeping scheduler wakes for the item (see
/// [`crate::notify`]), unless another item falls due at or before it and
/// after the horizon: the leader then already wakes for that one, and reads
/// the next due time after promoting it, which is far enough ahead for this
/// statement to have committed. Items due at or before an item within the
/// horizon notify even so: that item may be being promoted right now, with
/// the leader's next read of the due time possibly before this commit.
pub(crate) const SCHEDULE: &str = concat!(
    "WITH i AS (INSERT INTO {s}.delayed (ts, payload, digest, due_ms) ",
    "VALUES ($1::bigint, $2::text, sha256(convert_to($2::text, 'UTF8')), $3::bigint) ",
    "ON CONFLICT (digest, ts) DO NOTHING RETURNING id), ",
    "n AS MATERIALIZED (SELECT pg_notify('{dch}', '') FROM i WHERE NOT EXISTS ",
    "(SELECT 1 FROM {s}.delayed AS d WHERE d.due_ms <= $3::bigint AND d.due_ms > $4::bigint)) ",
    "SELECT i.id, (SELECT count(*) FROM n) FROM i"
);

/// How far ahead of now an earlier item must fall due for scheduling a
/// later one to send no notification (see [`SCHEDULE`]).
pub(crate) const NOTIFY_HORIZON_MS: i64 = 1_000;

/// When the earliest item falls due (epoch ms), NULL when there is none.
pub(crate) const NEXT_DUE: &str = "SELECT min(due_ms) FROM {s}.delayed";

/// Distinct non-empty buckets `<= $1`, ascending, at most `$2`: a loose
/// index scan that visits each bucket once however many items it holds.
pub(crate) const DUE_TIMESTAMPS: &str = concat!(
    "WITH RECURSIVE b (ts) AS (",
    "(SELECT d.ts FROM {s}.delayed AS d WHERE d.ts <= $1::bigint ORDER BY d.ts LIMIT 1) ",
    "UNION ALL ",
    "SELECT (SELECT d.ts FROM {s}.delayed AS d WHERE d.ts > b.ts AND d.ts <= $1::bigint ORDER BY d.ts LIMIT 1) ",
    "FROM b WHERE b.ts IS NOT NULL) ",
    "SELECT b.ts FROM b WHERE b.ts IS NOT NULL LIMIT $2::bigint"
);

/// The items of bucket `$1`, in insertion order.
pub(crate) const DELAYED_AT: &str = "SELECT payload FROM {s}.delayed WHERE ts = $1 ORDER BY id";

/// The buckets holding payload `$1`, ascending.
pub(crate) const TIMESTAMPS_OF: &str = concat!(
    "SELECT ts FROM {s}.delayed ",
    "WHERE digest = sha256(convert_to($1::text, 'UTF8')) AND payload = $1::text ORDER BY ts"
);

/// Removes payload `$1` from every bucket; returns the buckets.
pub(crate) const REMOVE_DELAYED: &str = concat!(
    "DELETE FROM {s}.delayed ",
    "WHERE digest = sha256(convert_to($1::text, 'UTF8')) AND payload = $1::text RETURNING ts"
);

/// The next page of delayed items that may be of class `$1` (holding it
/// literally, or an escape), after `($2, $3)` in `(ts, id)` order, at most `$4`.
pub(crate) const CLASS_CANDIDATES: &str = concat!(
    "SELECT ts, id, payload FROM {s}.delayed WHERE (ts, id) > ($2::bigint, $3::bigint) ",
    "AND (strpos(payload, $1::text) > 0 OR strpos(payload, '\\') > 0) ORDER BY ts, id LIMIT $4::bigint"
);

/// Deletes the delayed items `(ts, id)` given as parallel arrays `$1`, `$2`.
pub(crate) const REMOVE_ITEMS: &str = concat!(
    "DELETE FROM {s}.delayed AS d USING unnest($1::bigint[], $2::bigint[]) AS t (ts, id) ",
    "WHERE d.ts = t.ts AND d.id = t.id"
);

/// Takes up to `$2` items from buckets `<= $1`, oldest first, skipping
/// items another promoter (or a removal) holds.
pub(crate) const TAKE_DUE: &str = concat!(
    "WITH due AS (SELECT d.ts, d.id FROM {s}.delayed AS d WHERE d.ts <= $1::bigint ",
    "ORDER BY d.ts, d.id LIMIT $2::bigint FOR UPDATE SKIP LOCKED) ",
    "DELETE FROM {s}.delayed AS d USING due WHERE d.ts = due.ts AND d.id = due.id ",
    "RETURNING d.ts, d.id, d.payload, d.ts"
);

/// Takes up to `$2` items due at `$1` (epoch ms), earliest first, skipping
/// items another promoter (or a removal) holds.
pub(crate) const TAKE_DUE_MS: &str = concat!(
    "WITH due AS (SELECT d.ts, d.id FROM {s}.delayed AS d WHERE d.due_ms <= $1::bigint ",
    "ORDER BY d.due_ms, d.id LIMIT $2::bigint FOR UPDATE SKIP LOCKED) ",
    "DELETE FROM {s}.delayed AS d USING due WHERE d.ts = due.ts AND d.id = due.id ",
    "RETURNING d.ts, d.id, d.payload, d.due_ms"
);

/// Begins a promotion's transaction (in the same round trip): its commit
/// does not wait for the WAL flush (see `PostgresBackend::promote_taken`).
/// `SET LOCAL` only lowers it for this transaction; a server configured
/// with `synchronous_commit = off` already is unaffected.
pub(crate) const PROMOTION_BEGIN: &str = "BEGIN; SET LOCAL synchronous_commit TO off";

/// "Run now": moves payload `$2` from bucket `$1` to the tail of queue `$3`
/// (taking the queue's shared advisory lock, as every push does) and
/// notifies its workers. Returns one row when it moved, none otherwise.
pub(crate) const PROMOTE_ONE: &str = concat!(
    "WITH l AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared({ns}, hashtext($3::text))), ",
    "d AS (DELETE FROM {s}.delayed AS d WHERE d.ts = $1::bigint ",
    "AND d.digest = sha256(convert_to($2::text, 'UTF8')) AND d.payload = $2::text ",
    "AND (SELECT count(*) FROM l) > 0 RETURNING d.payload), ",
    "n AS (INSERT INTO {s}.queues (name) SELECT $3::text FROM d ON CONFLICT DO NOTHING), ",
    "j AS (INSERT INTO {s}.jobs (queue, payload) SELECT $3::text, d.payload FROM d), ",
    "w AS MATERIALIZED (SELECT pg_notify('{ch}', ",
    "CASE WHEN octet_length($3::text) <= 7000 THEN $3::text ELSE '' END) FROM d) ",
    "SELECT count(*) FROM w"
);

/// Removes payload `$2` from bucket `$1` only; a row when it was there.
pub(crate) const REMOVE_AT: &str = concat!(
    "DELETE FROM {s}.delayed WHERE ts = $1::bigint ",
    "AND digest = sha256(convert_to($2::text, 'UTF8')) AND payload = $2::text RETURNING id"
);

/// Every non-empty bucket with its number of items, ascending.
pub(crate) const BUCKET_SIZES: &str = "SELECT ts, count(*) FROM {s}.delayed GROUP BY ts ORDER BY ts";

/// The number of delayed items.
pub(crate) const DELAYED_COUNT: &str = "SELECT count(*) FROM {s}.delayed";

/// Appends failed entries `$1` in order.
pub(crate) const PUSH_FAILED_BATCH: &str = concat!(
    "INSERT INTO {s}.failed (entry) ",
    "SELECT t.e FROM unnest($1::text[]) WITH ORDINALITY AS t (e, o) ORDER BY t.o"
);

#[async_trait]
impl DelayedStore for PostgresBackend {
    async fn schedule(&self, timestamp: i64, payload: &str) -> Result<bool> {
        self.schedule_item(timestamp, bucket_due_ms(timestamp), payload).await
    }

    fn delayed_precision(&self) -> std::time::Duration {
        MILLISECOND_PRECISION
    }

    async fn schedule_ms(&self, due_ms: i64, payload: &str) -> Result<bool> {
        self.schedule_item(delayed_bucket_of_ms(due_ms), due_ms, payload).await
    }

    async fn next_due_ms(&self) -> Result<Option<i64>> {
        let (due,): (Option<i64>,) = sqlx::query_as(&self.sql.next_due)
            .fetch_one(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(due)
    }

    async fn schedule_watch(&self) -> Result<Option<tokio::sync::watch::Receiver<u64>>> {
        Ok(Some(self.notifier.schedule_changes()))
    }

    async fn promote_due_ms(&self, now_ms: i64, max: usize) -> Result<Vec<Promotion>> {
        self.promote_taken(&self.sql.take_due_ms, now_ms, max).await
    }

    async fn due_timestamps(&self, up_to: i64, max: usize) -> Result<Vec<i64>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let rows: Vec<(i64,)> = sqlx::query_as(&self.sql.due_timestamps)
            .bind(up_to)
            .bind(limit(max))
            .fetch_all(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(rows.into_iter().map(|(t,)| t).collect())
    }

    async fn promote_delayed(&self, timestamp: i64, payload: &str, queue: &str) -> Result<bool> {
        let (moved,): (i64,) = sqlx::query_as(&self.sql.promote_one)
            .bind(timestamp)
            .bind(payload)
            .bind(queue)
            .fetch_one(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(moved > 0)
    }

    async fn remove_delayed_at(&self, timestamp: i64, payload: &str) -> Result<bool> {
        let row: Option<(i64,)> = sqlx::query_as(&self.sql.remove_delayed_at)
            .bind(timestamp)
            .bind(payload)
            .fetch_optional(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(row.is_some())
    }

    async fn delayed_bucket_sizes(&self) -> Result<Vec<(i64, u64)>> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(&self.sql.delayed_bucket_sizes)
            .fetch_all(&self.pool)
            .await
            .pg(self)
            .await?;
        rows.into_iter()
            .map(|(t, n)| Ok((t, crate::error::count(n)?)))
            .collect()
    }

    async fn delayed_count(&self) -> Result<u64> {
        let (n,): (i64,) = sqlx::query_as(&self.sql.delayed_count)
            .fetch_one(&self.pool)
            .await
            .pg(self)
            .await?;
        crate::error::count(n)
    }

    async fn delayed_timestamps(&self) -> Result<Vec<i64>> {
        self.due_timestamps(i64::MAX, usize::MAX).await
    }

    async fn delayed_at(&self, timestamp: i64) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(&self.sql.delayed_at)
            .bind(timestamp)
            .fetch_all(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(rows.into_iter().map(|(p,)| p).collect())
    }

    async fn timestamps_of(&self, payload: &str) -> Result<Vec<i64>> {
        let rows: Vec<(i64,)> = sqlx::query_as(&self.sql.timestamps_of)
            .bind(payload)
            .fetch_all(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(rows.into_iter().map(|(t,)| t).collect())
    }

    async fn remove_delayed(&self, payload: &str) -> Result<Vec<i64>> {
        let rows: Vec<(i64,)> = sqlx::query_as(&self.sql.remove_delayed)
            .bind(payload)
            .fetch_all(&self.pool)
            .await
            .pg(self)
            .await?;
        let mut buckets: Vec<i64> = rows.into_iter().map(|(t,)| t).collect();
        buckets.sort_unstable();
        buckets.dedup();
        Ok(buckets)
    }

    /// Pages through the schedule by `(ts, id)`, as
    /// [`QueueStore::remove_by_class`](resq_core::QueueStore::remove_by_class)
    /// pages through a queue, deciding with [`delayed_is_of_class`].
    async fn remove_delayed_by_class(&self, queue: &str, class: &str) -> Result<u64> {
        if class.is_empty() {
            return Ok(0);
        }
        let page = limit(REMOVAL_PAGE);
        let mut after = (i64::MIN, i64::MIN);
        let mut removed = 0u64;
        loop {
            let rows: Vec<(i64, i64, String)> = sqlx::query_as(&self.sql.delayed_class_candidates)
                .bind(class)
                .bind(after.0)
                .bind(after.1)
                .bind(page)
                .fetch_all(&self.pool)
                .await
                .pg(self)
                .await?;
            let Some(&(last_ts, last_id, _)) = rows.last() else {
                return Ok(removed);
            };
            let (stamps, ids): (Vec<i64>, Vec<i64>) = rows
                .iter()
                .filter(|(_, _, raw)| delayed_is_of_class(raw, queue, class))
                .map(|(ts, id, _)| (*ts, *id))
                .unzip();
            if !ids.is_empty() {
                let done = sqlx::query(&self.sql.remove_delayed_items)
                    .bind(&stamps)
                    .bind(&ids)
                    .execute(&self.pool)
                    .await
                    .pg(self)
                    .await?;
                removed += done.rows_affected();
            }
            if rows.len() < REMOVAL_PAGE {
                return Ok(removed);
            }
            after = (last_ts, last_id);
        }
    }

    async fn promote_due(&self, up_to: i64, max: usize) -> Result<Vec<Promotion>> {
        self.promote_taken(&self.sql.take_due, up_to, max).await
    }
}

impl PostgresBackend {
    /// Inserts one item (see [`SCHEDULE`]); returns whether it was added.
    async fn schedule_item(&self, timestamp: i64, due_ms: i64, payload: &str) -> Result<bool> {
        let added: Option<(i64, i64)> = sqlx::query_as(&self.sql.schedule)
            .bind(timestamp)
            .bind(payload)
            .bind(due_ms)
            .bind(resq_core::time::now_ms().saturating_add(NOTIFY_HORIZON_MS))
            .fetch_optional(&self.pool)
            .await
            .pg(self)
            .await?;
        Ok(added.is_some())
    }

    /// Promotes what `take` (one of [`TAKE_DUE`] and [`TAKE_DUE_MS`], with
    /// its bound `up_to`) deletes, in one transaction: items in the order
    /// of the fourth column returned (bucket or due time), then insertion.
    ///
    /// The transaction commits without waiting for its WAL to be flushed
    /// ([`PROMOTION_BEGIN`]): a delayed job then starts a flush earlier
    /// (under load a flush was most of a promotion's time, and its stalls
    /// the tail of the delayed pickup). Nothing can be lost or run twice:
    /// a server crash before the flush undoes the whole promotion (the
    /// items are still scheduled and are promoted again), and no claim of a
    /// promoted job can have been confirmed before it, since a claim's own
    /// commit flushes the WAL up to itself, the promotion included.
    async fn promote_taken(&self, take: &str, up_to: i64, max: usize) -> Result<Vec<Promotion>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin_with(PROMOTION_BEGIN).await.pg(self).await?;
        let mut taken: Vec<(i64, i64, String, i64)> = sqlx::query_as(take)
            .bind(up_to)
            .bind(limit(max))
            .fetch_all(&mut *tx)
            .await
            .pg(self)
            .await?;
        if taken.is_empty() {
            tx.rollback().await.pg(self).await?;
            return Ok(Vec::new());
        }
        taken.sort_unstable_by_key(|(_, id, _, order)| (*order, *id));
        let now = resq_core::time::now_ms();
        let mut jobs = Vec::new();
        let mut entries = Vec::new();
        let mut done = Vec::with_capacity(taken.len());
        for (timestamp, _, payload, _) in taken {
            match promotion_target(&payload) {
                Ok(queue) => {
                    jobs.push(QueuedJob {
                        queue: queue.clone(),
                        payload: payload.clone(),
                    });
                    done.push(Promotion::Moved {
                        timestamp,
                        queue,
                        payload,
                    });
                }
                Err(reason) => {
                    entries.push(promotion_failure_entry(&payload, &reason, now));
                    done.push(Promotion::Failed {
                        timestamp,
                        payload,
                        reason,
                    });
                }
            }
        }
        self.push_batch_on(&mut tx, &jobs).await?;
        if !entries.is_empty() {
            sqlx::query(&self.sql.push_failed_batch)
                .bind(&entries)
                .execute(&mut *tx)
                .await
                .pg(self)
                .await?;
        }
        tx.commit().await.pg(self).await?;
        Ok(done)
    }
}
