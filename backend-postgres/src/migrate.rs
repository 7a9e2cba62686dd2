//! The schema and its migrations.
//!
//! resq's tables live in one schema (`resq` unless configured). The SQL
//! files in the crate's `migrations/` folder are embedded in the binary and
//! applied in version order by [`crate::PostgresBackend::migrate`], which records each applied version
//! in `<schema>.resq_migrations`.
//!
//! A run is one transaction that first takes a transaction-scoped advisory
//! lock keyed by the schema name, so any number of processes may migrate
//! the same schema at once: they queue on the lock, the first creates the
//! schema and applies what is missing, the others find nothing left to do.
//! DDL is transactional in PostgreSQL, so a failed migration leaves nothing
//! half-applied.

use crate::error::{db, db_with};
use crate::names::Names;
use resq_core::Result;
use sqlx::PgPool;

/// One embedded migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migration {
    /// Its version; migrations apply in ascending order.
    pub version: i32,
    /// A short name, from the file name.
    pub name: &'static str,
    /// The SQL, run with `search_path` set to the schema.
    pub sql: &'static str,
}

/// Every migration this version of resq knows, ascending.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "batch_rounds",
        sql: include_str!("../migrations/0002_batch_rounds.sql"),
    },
    Migration {
        version: 3,
        name: "paused_queues",
        sql: include_str!("../migrations/0003_paused_queues.sql"),
    },
    Migration {
        version: 4,
        name: "enqueue_times",
        sql: include_str!("../migrations/0004_enqueue_times.sql"),
    },
    Migration {
        version: 5,
        name: "cancel_marks",
        sql: include_str!("../migrations/0005_cancel_marks.sql"),
    },
    Migration {
        version: 6,
        name: "flow_control",
        sql: include_str!("../migrations/0006_flow_control.sql"),
    },
    Migration {
        version: 7,
        name: "delayed_due_ms",
        sql: include_str!("../migrations/0007_delayed_due_ms.sql"),
    },
    Migration {
        version: 8,
        name: "task_flow",
        sql: include_str!("../migrations/0008_task_flow.sql"),
    },
    Migration {
        version: 9,
        name: "cap_slots_in_working",
        sql: include_str!("../migrations/0009_cap_slots_in_working.sql"),
    },
    Migration {
        version: 10,
        name: "single_slot_round",
        sql: include_str!("../migrations/0010_single_slot_round.sql"),
    },
];

/// The version a fully migrated schema is at.
pub fn latest_version() -> i32 {
    MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The table that records applied migrations.
const MIGRATIONS_TABLE: &str = "resq_migrations";

/// Creates the schema if needed and applies the missing migrations.
/// Returns the versions applied by this call, ascending (empty when the
/// schema was already up to date).
pub(crate) async fn run(pool: &PgPool, names: &Names) -> Result<Vec<i32>> {
    let mut tx = pool.begin().await.map_err(db)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("resq:migrate:{}", names.schema))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    // Read after the lock: this statement's snapshot sees every earlier
    // migrator's commit.
    let (has_schema, has_table): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1), \
                to_regclass($2) IS NOT NULL",
    )
    .bind(&names.schema)
    .bind(format!("{}.{MIGRATIONS_TABLE}", names.quoted))
    .fetch_one(&mut *tx)
    .await
    .map_err(db)?;
    if !has_schema {
        sqlx::query(&format!("CREATE SCHEMA {}", names.quoted))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    if !has_table {
        sqlx::query(&format!(
            "CREATE TABLE {}.{MIGRATIONS_TABLE} (\
                 version integer PRIMARY KEY, \
                 name text NOT NULL, \
                 applied_at timestamptz NOT NULL DEFAULT now())",
            names.quoted
        ))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    let done: Vec<(i32,)> = sqlx::query_as(&format!(
        "SELECT version FROM {}.{MIGRATIONS_TABLE} ORDER BY version",
        names.quoted
    ))
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    let done: Vec<i32> = done.into_iter().map(|(v,)| v).collect();
    if let Some(newer) = done.iter().copied().filter(|v| *v > latest_version()).max() {
        tracing::warn!(
            target: "resq::postgres",
            schema = %names.schema,
            "the schema is at migration {newer}, newer than this resq knows ({}); continuing",
            latest_version()
        );
    }
    let pending: Vec<&Migration> = MIGRATIONS.iter().filter(|m| !done.contains(&m.version)).collect();
    if !pending.is_empty() {
        sqlx::query(&format!("SET LOCAL search_path TO {}", names.quoted))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    let mut applied = Vec::with_capacity(pending.len());
    for m in pending {
        // A `&str` runs as a simple query: several statements, one round trip.
        sqlx::Executor::execute(&mut *tx, m.sql).await.map_err(|e| {
            db_with(
                format!(
                    "postgres: migration {} ({}) failed in schema {}: {e}",
                    m.version, m.name, names.schema
                ),
                e,
            )
        })?;
        sqlx::query(&format!(
            "INSERT INTO {}.{MIGRATIONS_TABLE} (version, name) VALUES ($1, $2)",
            names.quoted
        ))
        .bind(m.version)
        .bind(m.name)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        applied.push(m.version);
    }
    tx.commit().await.map_err(db)?;
    if !applied.is_empty() {
        tracing::info!(target: "resq::postgres", schema = %names.schema, ?applied, "applied migrations");
    }
    Ok(applied)
}

/// The schema's migration version: `None` when it has never been migrated.
pub(crate) async fn current_version(pool: &PgPool, names: &Names) -> Result<Option<i32>> {
    let exists: (bool,) = sqlx::query_as("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{}.{MIGRATIONS_TABLE}", names.quoted))
        .fetch_one(pool)
        .await
        .map_err(db)?;
    if !exists.0 {
        return Ok(None);
    }
    let version: (Option<i32>,) =
        sqlx::query_as(&format!("SELECT max(version) FROM {}.{MIGRATIONS_TABLE}", names.quoted))
            .fetch_one(pool)
            .await
            .map_err(db)?;
    Ok(version.0)
}
