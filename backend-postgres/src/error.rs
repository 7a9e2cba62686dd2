//! Turning `sqlx` errors and odd database values into [`resq_core::Error`]s.

use resq_core::{BackendErrorKind, Error};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;
use std::time::{Duration, Instant};

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

/// How long a diagnosis of a pool timeout may try to connect.
const DIAGNOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one diagnosis answers for every pool timeout that follows.
const DIAGNOSIS_REUSE: Duration = Duration::from_secs(1);

/// Why the pool could not hand out a connection, found by connecting once
/// outside it.
#[derive(Clone, Debug)]
struct Diagnosis {
    at: Instant,
    kind: BackendErrorKind,
    /// The server's refusal, or `None` when a connection could be opened
    /// (every pooled connection was busy).
    refusal: Option<String>,
}

/// Explains pool timeouts. `sqlx`'s pool retries a connect that the server
/// refuses as "too many clients" (`53300`) or "starting up" (`57P03`) until
/// the acquire timeout, then reports only "pool timed out"; the server's
/// reason is lost. On such a timeout this opens one connection of its own
/// (with the pool's options) and reports what the server says, so that an
/// exhausted server reads as exhausted. Concurrent timeouts share one
/// diagnosis, reused for a second, so an exhausted server is not flooded
/// with extra attempts.
pub(crate) struct TimeoutExplainer {
    options: PgConnectOptions,
    acquire_timeout: Duration,
    max_connections: u32,
    last: tokio::sync::Mutex<Option<Diagnosis>>,
}

impl TimeoutExplainer {
    pub(crate) fn new(options: PgConnectOptions, acquire_timeout: Duration, max_connections: u32) -> Self {
        TimeoutExplainer {
            options,
            acquire_timeout,
            max_connections,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Maps `e` as [`db`] does, explaining a pool timeout.
    pub(crate) async fn explain(&self, e: sqlx::Error) -> Error {
        if !matches!(e, sqlx::Error::PoolTimedOut) {
            return db(e);
        }
        let mut last = self.last.lock().await;
        let fresh = match last.as_ref() {
            Some(d) if d.at.elapsed() < DIAGNOSIS_REUSE => None,
            _ => Some(self.diagnose().await),
        };
        let (diagnosis, source) = match fresh {
            Some((d, source)) => {
                *last = Some(d.clone());
                (d, source)
            }
            // Only reached when `last` holds a recent diagnosis.
            None => match last.clone() {
                Some(d) => (d, e),
                None => return db(e),
            },
        };
        drop(last);
        let message = match &diagnosis.refusal {
            Some(reason) => format!(
                "postgres: no connection within {:?}: the server refuses new connections: {reason}",
                self.acquire_timeout
            ),
            None => format!(
                "postgres: pool timed out after {:?}: all {} pooled connections stayed busy",
                self.acquire_timeout, self.max_connections
            ),
        };
        Error::backend_with(diagnosis.kind, message, source)
    }

    /// [`TimeoutExplainer::explain`] for an error already mapped (by [`db`]):
    /// one whose source is a pool timeout is explained, others pass.
    pub(crate) async fn explain_mapped(&self, e: Error) -> Error {
        let timed_out = matches!(
            &e,
            Error::Backend { source: Some(s), .. }
                if matches!(s.downcast_ref::<sqlx::Error>(), Some(sqlx::Error::PoolTimedOut))
        );
        if timed_out {
            self.explain(sqlx::Error::PoolTimedOut).await
        } else {
            e
        }
    }

    /// Connects once outside the pool; returns the diagnosis and the error
    /// to keep as the source.
    async fn diagnose(&self) -> (Diagnosis, sqlx::Error) {
        let attempt = tokio::time::timeout(DIAGNOSE_TIMEOUT, PgConnection::connect_with(&self.options)).await;
        let at = Instant::now();
        match attempt {
            Ok(Ok(conn)) => {
                // Give the slot back at once; a failed goodbye changes nothing.
                let _ = conn.close().await;
                let d = Diagnosis {
                    at,
                    kind: BackendErrorKind::Transient,
                    refusal: None,
                };
                (d, sqlx::Error::PoolTimedOut)
            }
            Ok(Err(refused)) => {
                let d = Diagnosis {
                    at,
                    kind: classify(&refused),
                    refusal: Some(refused.to_string()),
                };
                (d, refused)
            }
            Err(_) => {
                let d = Diagnosis {
                    at,
                    kind: BackendErrorKind::Transient,
                    refusal: Some(format!("no answer to a new connection within {DIAGNOSE_TIMEOUT:?}")),
                };
                (d, sqlx::Error::PoolTimedOut)
            }
        }
    }
}

/// `sqlx` results mapped to resq errors with pool timeouts explained.
pub(crate) trait PgResult<T> {
    /// Maps the error as [`db`] does, explaining a pool timeout (see
    /// [`TimeoutExplainer`]).
    fn pg(self, backend: &crate::PostgresBackend) -> impl std::future::Future<Output = resq_core::Result<T>> + Send;
}

impl<T: Send> PgResult<T> for std::result::Result<T, sqlx::Error> {
    async fn pg(self, backend: &crate::PostgresBackend) -> resq_core::Result<T> {
        match self {
            Ok(v) => Ok(v),
            Err(e) => Err(backend.explainer.explain(e).await),
        }
    }
}
