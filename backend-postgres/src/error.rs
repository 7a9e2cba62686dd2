//! Turning `sqlx` errors and odd database values into [`resq_core::Error`]s.

use resq_core::Error;

/// SQLSTATE `22003`: a numeric value out of range (a `bigint` overflow).
const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";

/// Maps a database error: values that do not decode are [`Error::Decode`];
/// everything else (connection lost, pool closed or timed out, a server
/// error) is [`Error::Backend`], which the engine backs off on and retries.
pub(crate) fn db(e: sqlx::Error) -> Error {
    match e {
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::ColumnNotFound(_) => Error::Decode {
            what: "a PostgreSQL row",
            reason: e.to_string(),
        },
        other => Error::Backend(format!("postgres: {other}")),
    }
}

/// True when `e` is the server refusing a `bigint` overflow.
pub(crate) fn is_overflow(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d.code().as_deref() == Some(NUMERIC_VALUE_OUT_OF_RANGE),
        _ => false,
    }
}

/// A `count(*)` as a `u64`. A negative count cannot happen; if it does, the
/// row is reported as undecodable rather than wrapped.
pub(crate) fn count(n: i64) -> resq_core::Result<u64> {
    u64::try_from(n).map_err(|_| Error::Decode {
        what: "a PostgreSQL row count",
        reason: format!("negative count {n}"),
    })
}

/// A caller's `usize` limit as a SQL `bigint` (saturating).
pub(crate) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
