//! resq-postgres is resq's PostgreSQL storage backend: it keeps Resque's
//! data model (FIFO queues and the queue set, delayed buckets, the failed
//! list, the worker registry, counters, plugin locks and the scheduler's
//! leader lock) in ordinary tables of one schema, with exactly the
//! semantics of resq's memory and Redis backends, and adds what a database
//! is good at: claims with `FOR UPDATE SKIP LOCKED` that stay one index
//! probe per queue however long the queues grow, `LISTEN`/`NOTIFY`
//! wake-ups for idle workers, and enqueuing inside the caller's own
//! transaction, so that a job exists only if the caller's writes commit.
//!
//! # Use
//!
//! ```no_run
//! # async fn example() -> resq_core::Result<()> {
//! // Connect, creating or upgrading the schema on the way.
//! let backend = resq_postgres::connect("postgres://app@db.internal/app?sslmode=require&migrate=true").await?;
//! let queue = resq_core::Queue::new(backend.clone());
//! queue.enqueue("mail", "welcome", (42,)).await?;
//! # Ok(()) }
//! ```
//!
//! * [`connect`] / [`PostgresBackend::connect`]: from a `postgres://` or
//!   `postgresql://` URL; resq's own parameters (`schema`,
//!   `max_connections`, `statement_timeout_ms`, `acquire_timeout_ms`,
//!   `idle_timeout_ms`, `migrate`) are read and removed, the rest (`sslmode`, `sslrootcert`,
//!   `application_name`, …) goes to `sqlx`. See [`config`].
//! * [`PostgresBackend::connect_with`]: from a [`PostgresConfig`].
//! * [`PostgresBackend::push_in`] / [`PostgresBackend::enqueue_in_tx`]:
//!   enqueue inside the caller's transaction (see [`transactional`]).
//!
//! # Migrations
//!
//! The tables live in one schema, `resq` by default. The SQL migrations in
//! this crate's `migrations/` folder are compiled in and applied in order;
//! `<schema>.resq_migrations` records which ran. Run them either way:
//!
//! * explicitly, e.g. from a deploy step: `backend.migrate().await?`
//!   (connect without `migrate=true`: the backend then only warns if the
//!   schema is missing or behind);
//! * on connect: `?migrate=true` in the URL, or
//!   [`PostgresConfig::migrate_on_connect`].
//!
//! Either is safe when many processes start at once: a migration run is one
//! transaction under an advisory lock keyed by the schema name, so runs
//! queue up, the first creates the schema and applies what is missing and
//! the others find nothing to do. See [`migrate`].
//!
//! # Design
//!
//! | table | holds |
//! |---|---|
//! | `jobs (queue, id, payload)` | queued jobs; FIFO is ascending `id`, primary key `(queue, id)` |
//! | `queues (name)` | the queue set: names stay until `delete_queue` |
//! | `working` | one working-on row per worker id, written by the claim |
//! | `delayed (ts, id, payload, digest, due_ms)` | delayed buckets; unique `(digest, ts)` refuses duplicates; each item's due time (ms), indexed, for promotion at that time |
//! | `failed (id, entry)` | the failed list in `id` order |
//! | `workers`, `pings` | registered workers with start times; pings by worker name |
//! | `stats (key, value)` | counters |
//! | `locks`, `leader` | expiring locks, on the database clock |
//!
//! Payloads and failed entries are `text`, stored byte for byte (PostgreSQL
//! text cannot hold a NUL character: such a payload is refused with an
//! error). Completed jobs leave nothing behind: a claim deletes the job's
//! row, a completion the working-on row. Claims run in PL/pgSQL functions,
//! `resq_claim` and `resq_complete_and_claim` (`resq_claim_batch` is the
//! latter without completions), which delete queue heads with
//! `FOR UPDATE SKIP LOCKED` (one probe of `jobs (queue, id)` per queue, in
//! priority order) and write the working-on rows in the same statement. A
//! multi-slot worker's round is one call of `resq_complete_and_claim` and
//! one commit: its finished slots' outcomes, then a claim for every idle
//! slot, with the working-on row of a slot that finishes and claims again
//! and its counters updated in place. A single-slot worker's round (one
//! slot that finishes and claims again) calls `resq_complete_and_claim_one`
//! instead (migration 10): the same writes in the statements one job needs,
//! handing over to the batch function when a queue has flow-control limits.
//! The calls of a worker's hot path (claims, completions, pings) and single
//! pushes run on connections the backend holds between calls, out of the
//! pool's idle list, so that `sqlx`'s test of every released connection (one
//! more round trip per call) is skipped; a connection whose call failed or
//! was abandoned goes back to the pool, which tests it (at most half of
//! `max_connections` are held, none for a pool under four, and `close`
//! gives them back). Every path that adds a job sends `NOTIFY` on the schema's
//! channel ([`PostgresBackend::channel`]) with the queue's name; one
//! listener connection per backend wakes the workers waiting in
//! `wait_for_jobs`. A waiter subscribes before it checks its queues, so a
//! job pushed between a worker's empty claim and its wait still wakes it;
//! after the listener reconnects, every waiter is woken once (notifications
//! may have been lost meanwhile). Scheduling a delayed item that falls due
//! before every other notifies a second channel, `<schema>.resq_delayed`,
//! on the same listener, which wakes a sleeping scheduler.
//!
//! Every statement is schema-qualified, each [`resq_core::Backend`] method
//! is one statement or one transaction, and database errors surface as
//! [`resq_core::Error::Backend`] with the `sqlx` error as their source,
//! classified by [`classify`]: connection problems are transient (the
//! engine backs off and retries), a missing schema, table or function or a
//! refused role is permanent (workers and schedulers stop with it); the
//! notification listener reconnects by itself.

#![warn(missing_docs)]

mod cancel;
pub mod config;
mod delayed;
mod error;
mod failed;
mod held;
mod leader;
mod lock;
pub mod migrate;
pub mod names;
mod notify;
mod queue;
mod range;
mod statements;
mod stats;
mod task_flow;
pub mod testing;
pub mod transactional;
mod worker;
pub use error::classify;

pub use config::{
    PostgresConfig, DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_SCHEMA,
};
pub use migrate::{latest_version, Migration, MIGRATIONS};

use async_trait::async_trait;
use error::PgResult;
use names::Names;
use notify::Notifier;
use resq_core::{Backend, Result};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use statements::Statements;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long `close()` waits for in-use connections to come back.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// resq's PostgreSQL backend; see the [crate documentation](crate).
///
/// Share it as `Arc<PostgresBackend>` (or `Arc<dyn Backend>`): it holds a
/// connection pool, and every clone of the `Arc` uses the same one.
pub struct PostgresBackend {
    pool: PgPool,
    names: Names,
    sql: Statements,
    notifier: Notifier,
    config: PostgresConfig,
    /// When expired locks were last swept (epoch ms).
    last_lock_sweep: AtomicI64,
    /// Explains pool timeouts with the server's own reason.
    explainer: error::TimeoutExplainer,
    /// Connections of the hot path held out of the pool (see [`held`]).
    held: held::Held,
    /// Set for the test suite's backends only: what to undo on close.
    test_guard: Mutex<Option<testing::TestGuard>>,
}

impl PostgresBackend {
    /// Connects to the database a `postgres://` or `postgresql://` URL names,
    /// reading resq's parameters from it (see [`config`]). The connection is
    /// checked (and, with `migrate=true`, the schema migrated) before this
    /// returns. A malformed URL is [`resq_core::Error::InvalidUrl`]; an
    /// unreachable server is a transient [`resq_core::Error::Backend`], a
    /// refused role a permanent one.
    pub async fn connect(url: &str) -> Result<Arc<Self>> {
        Self::connect_with(PostgresConfig::from_url(url)?).await
    }

    /// Connects with `config`; see [`PostgresBackend::connect`].
    pub async fn connect_with(config: PostgresConfig) -> Result<Arc<Self>> {
        let resolved = config.resolve()?;
        let config = resolved.config;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .min_connections(0)
            .acquire_timeout(config.acquire_timeout)
            // No ping before every call: a connection the server dropped
            // fails its next call (an `Err` the engine retries) and is
            // discarded when the pool's check on release fails.
            .test_before_acquire(false)
            // Unused connections go back to the server (checked about as
            // often as the timeout), so a burst does not keep them.
            .idle_timeout(config.idle_timeout)
            .connect_lazy_with(resolved.options.clone());
        let names = Names::new(&config.schema);
        let explainer =
            error::TimeoutExplainer::new(resolved.options.clone(), config.acquire_timeout, config.max_connections);
        let backend = Arc::new(PostgresBackend {
            explainer,
            held: held::Held::new(config.max_connections, config.idle_timeout),
            sql: Statements::render(&names),
            notifier: Notifier::new(
                resolved.options,
                names.channel.clone(),
                names.delayed_channel.clone(),
                names.cancel_channel.clone(),
            ),
            pool,
            names,
            config,
            last_lock_sweep: AtomicI64::new(0),
            test_guard: Mutex::new(None),
        });
        if backend.config.migrate_on_connect {
            backend.migrate().await?;
        } else {
            backend.check_schema().await?;
        }
        Ok(backend)
    }

    /// Creates the schema if it is missing and applies every migration it
    /// lacks; safe to run from many processes at once (see [`migrate`]).
    /// Returns the versions this call applied, ascending: empty when the
    /// schema was already up to date.
    pub async fn migrate(&self) -> Result<Vec<i32>> {
        match migrate::run(&self.pool, &self.names).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.explainer.explain_mapped(e).await),
        }
    }

    /// The schema's migration version, `None` if it was never migrated.
    /// [`latest_version`] is what [`PostgresBackend::migrate`] brings it to.
    pub async fn schema_version(&self) -> Result<Option<i32>> {
        match migrate::current_version(&self.pool, &self.names).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.explainer.explain_mapped(e).await),
        }
    }

    /// Checks that the server answers, and warns when the schema is not
    /// migrated to the latest version.
    async fn check_schema(&self) -> Result<()> {
        match self.schema_version().await? {
            Some(v) if v >= latest_version() => {}
            found => tracing::warn!(
                target: "resq::postgres",
                schema = %self.names.schema,
                ?found,
                latest = latest_version(),
                "the resq schema is not migrated: call migrate() or connect with migrate=true"
            ),
        }
        Ok(())
    }

    /// The connection pool, for the caller's own queries and transactions
    /// (for example one to [`PostgresBackend::push_in`] on).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema holding resq's tables.
    pub fn schema(&self) -> &str {
        &self.names.schema
    }

    /// The `NOTIFY` channel that wakes this schema's workers; the payload of
    /// each notification is the name of the queue that got a job.
    pub fn channel(&self) -> &str {
        &self.names.channel
    }

    /// The configuration in force (URL parameters applied).
    pub fn config(&self) -> &PostgresConfig {
        &self.config
    }

    /// How many pool connections the backend holds idle for its hot path
    /// (a worker's claims, completions and pings, single pushes) instead
    /// of returning them to the pool after each call; at most
    /// [`PostgresBackend::held_cap`]. They count towards `max_connections`.
    pub fn held_connections(&self) -> usize {
        self.held.len()
    }

    /// The most connections the backend holds idle for its hot path: half
    /// of `max_connections`, none for a pool of fewer than four.
    pub fn held_cap(&self) -> usize {
        self.held.cap()
    }

    /// A connection for one call of the hot path: a held one when there
    /// is one, else one from the pool. Call [`held::Lent::succeeded`]
    /// after the call succeeded to hold it again.
    pub(crate) async fn hot(&self) -> Result<held::Lent<'_>> {
        let conn = match self.held.take() {
            Some(conn) => conn,
            None => self.pool.acquire().await.pg(self).await?,
        };
        Ok(self.held.lend(conn))
    }
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("schema", &self.names.schema)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Opens a PostgreSQL backend from a `postgres://` or `postgresql://` URL;
/// see [`PostgresBackend::connect`].
pub async fn connect(url: &str) -> Result<Arc<PostgresBackend>> {
    PostgresBackend::connect(url).await
}

#[async_trait]
impl Backend for PostgresBackend {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    /// Stops the notification listener and closes the pool (waiting a few
    /// seconds at most for connections in use). Calls made afterwards fail.
    async fn close(&self) -> Result<()> {
        self.notifier.stop();
        // Held connections are idle: give them back first, so that the
        // pool's close does not wait for them.
        self.held.close();
        let closed = tokio::time::timeout(CLOSE_TIMEOUT, self.pool.close()).await.is_ok();
        if !closed {
            tracing::warn!(
                target: "resq::postgres",
                "closing the pool timed out after {CLOSE_TIMEOUT:?}: connections still in use"
            );
        }
        let guard = match self.test_guard.lock() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(guard) = guard {
            guard.release(closed);
        }
        Ok(())
    }
}
