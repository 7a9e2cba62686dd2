//! Typed errors for the engine and for backends.

use std::time::Duration;

/// Whether a backend error may go away by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// The server is unreachable, busy, restarting, or the call timed out or
    /// lost a race (a dropped connection, a full connection table, a
    /// serialization failure): retrying later may succeed. Workers and
    /// schedulers log it, back off and retry.
    Transient,
    /// Retrying cannot help until someone fixes the setup: the credentials
    /// are refused, a permission, schema, table or function is missing, a
    /// key holds the wrong type, a script fails. Workers and schedulers stop
    /// with it (see [`Error::is_transient`]).
    Permanent,
}

/// The boxed source of a backend error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in resq, from a backend call to a bad argument.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend could not be reached or answered with an error. The
    /// message keeps the server's own words; `source` is the driver's error.
    #[error("backend error: {message}")]
    Backend {
        /// Transient (retried) or permanent (stops workers and schedulers).
        kind: BackendErrorKind,
        /// What failed, with the server's message.
        message: String,
        /// The driver's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// A value read from storage could not be decoded. Other clients write to
    /// shared storage too, so this is never a panic.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded (a job payload, a failed entry, …).
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A value given by the caller could not be encoded.
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// `enqueue_at` found the identical job already scheduled in the same second
    /// (node-resque: "Job already enqueued at this time with same arguments").
    #[error("Job already enqueued at this time with same arguments (at {timestamp} s)")]
    AlreadyScheduled {
        /// The bucket, in Unix seconds.
        timestamp: i64,
    },
    /// `retry_and_remove_failed` was given an entry that is not in the failed list.
    #[error("This job is not in failed queue")]
    NotInFailedQueue,
    /// A caller passed an argument that cannot be used.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A connection URL could not be used.
    #[error("invalid backend URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A task with this name is already registered.
    #[error("a task named {0:?} is already registered")]
    DuplicateTask(String),
    /// Graceful shutdown did not finish within its deadline.
    #[error("shutdown did not finish within {0:?}")]
    ShutdownTimeout(Duration),
    /// Reading or writing a local file (for example a memory snapshot) failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A [`BackendErrorKind::Transient`] [`Error::Backend`] built from anything
    /// printable, without a source (the kind every backend error had before
    /// errors were classified).
    pub fn backend(e: impl std::fmt::Display) -> Self {
        Error::transient(e)
    }

    /// A transient [`Error::Backend`] with `message` and no source.
    pub fn transient(message: impl std::fmt::Display) -> Self {
        Error::Backend {
            kind: BackendErrorKind::Transient,
            message: message.to_string(),
            source: None,
        }
    }

    /// A permanent [`Error::Backend`] with `message` and no source.
    pub fn permanent(message: impl std::fmt::Display) -> Self {
        Error::Backend {
            kind: BackendErrorKind::Permanent,
            message: message.to_string(),
            source: None,
        }
    }

    /// An [`Error::Backend`] of `kind` that keeps `source`.
    pub fn backend_with(kind: BackendErrorKind, message: impl std::fmt::Display, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            kind,
            message: message.to_string(),
            source: Some(source.into()),
        }
    }

    /// The kind of a backend error; `None` for every other error.
    pub fn backend_kind(&self) -> Option<BackendErrorKind> {
        match self {
            Error::Backend { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// True for a [`BackendErrorKind::Transient`] backend error, the only
    /// errors that workers and schedulers back off on and retry. Every other
    /// error, a permanent backend error included, is not retried by them:
    /// they log it once at ERROR, stop cleanly and return it.
    pub fn is_transient(&self) -> bool {
        self.backend_kind() == Some(BackendErrorKind::Transient)
    }

    /// True for the duplicate-delayed-job error that `enqueue_at` returns.
    pub fn is_already_scheduled(&self) -> bool {
        matches!(self, Error::AlreadyScheduled { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_errors_keep_kind_message_and_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::backend_with(BackendErrorKind::Transient, "redis: connection refused", io);
        assert!(e.is_transient());
        assert_eq!(e.to_string(), "backend error: redis: connection refused");
        let source = std::error::Error::source(&e).expect("the source is kept");
        assert_eq!(source.to_string(), "refused");
        let p = Error::permanent("postgres: schema \"gone\" does not exist");
        assert_eq!(p.backend_kind(), Some(BackendErrorKind::Permanent));
        assert!(!p.is_transient());
        assert!(!Error::InvalidArgument("x".into()).is_transient());
        assert!(Error::backend("anything").is_transient());
    }
}

/// The result type used across resq.
pub type Result<T, E = Error> = std::result::Result<T, E>;
