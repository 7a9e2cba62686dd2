//! Typed errors for the engine and for backends.

use std::time::Duration;

/// Everything that can go wrong in resq, from a backend call to a bad argument.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend could not be reached or answered with an error.
    #[error("backend error: {0}")]
    Backend(String),
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
    /// Shorthand for a [`Error::Backend`] built from anything printable.
    pub fn backend(e: impl std::fmt::Display) -> Self {
        Error::Backend(e.to_string())
    }

    /// True for the duplicate-delayed-job error that `enqueue_at` returns.
    pub fn is_already_scheduled(&self) -> bool {
        matches!(self, Error::AlreadyScheduled { .. })
    }
}

/// The result type used across resq.
pub type Result<T, E = Error> = std::result::Result<T, E>;
