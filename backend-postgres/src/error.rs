//! Turning `sqlx` errors and odd database values into [`resq_core::Error`]s.

use resq_core::{BackendErrorKind, Error};

/// SQLSTATE `22003`: a numeric value out of range (a `bigint` overflow).
const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";

/// Maps a database error: values that do not decode are [`Error::Decode`];
/// everything else is an [`Error::Backend`] that keeps the `sqlx` error as
/// its source, transient or permanent as [`classify`] says.
pub(crate) fn db(e: sqlx::Error) -> Error {
    match e {
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::ColumnNotFound(_) => Error::Decode {
            what: "a PostgreSQL row",
            reason: e.to_string(),
        },
        other => db_with(format!("postgres: {other}"), other),
    }
}

/// [`db`] with a message of the caller's (which should include `e`'s text).
pub(crate) fn db_with(message: impl std::fmt::Display, e: sqlx::Error) -> Error {
    Error::backend_with(classify(&e), message, e)
}

/// SQLSTATEs that go away by themselves: `53300` too_many_connections,
/// `57P01`–`57P03` (admin shutdown, crash shutdown, cannot connect now),
/// `40001` serialization_failure, `40P01` deadlock_detected, `55P03`
/// lock_not_available, `57014` query_canceled (a statement timeout),
/// `53000`–`53200` out of resources.
const TRANSIENT_STATES: &[&str] = &[
    "53300", "57P01", "57P02", "57P03", "40001", "40P01", "55P03", "57014", "53000", "53100", "53200",
];

/// Whether a PostgreSQL error may go away by itself.
///
/// Transient: I/O errors, TLS and protocol errors, pool timeouts, a closed
/// pool or a crashed worker task of the driver, SQLSTATE class `08`
/// (connection exceptions), `53300` too_many_connections, `57P01`–`57P03`
/// (admin shutdown, crash shutdown, cannot connect now), `40001`
/// serialization_failure, `40P01` deadlock_detected, `55P03`
/// lock_not_available, `57014` query_canceled and `53000`–`53200` (out of
/// resources).
/// Permanent: every other server error, such as `3F000`
/// invalid_schema_name, `42P01` undefined_table, `42883`
/// undefined_function, class `28` (authentication) and `42501`
/// insufficient_privilege, plus configuration and type errors.
pub fn classify(e: &sqlx::Error) -> BackendErrorKind {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => BackendErrorKind::Transient,
        sqlx::Error::Database(d) => match d.code() {
            Some(code) if code.starts_with("08") || TRANSIENT_STATES.contains(&code.as_ref()) => {
                BackendErrorKind::Transient
            }
            _ => BackendErrorKind::Permanent,
        },
        _ => BackendErrorKind::Permanent,
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
