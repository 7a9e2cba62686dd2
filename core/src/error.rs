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
    /// An action by [`crate::FailedId`] found the failed list changed: the
    /// entry at that position is gone or no longer has the named bytes
    /// (it moved, was removed or replaced). Nothing was changed.
    #[error("failed entry {id} is stale: the entry at that position moved or changed; list the failed jobs again")]
    StaleFailedEntry {
        /// The id's text form.
        id: String,
    },
    /// An action on one delayed item (run it now, delete it) found it no
    /// longer in its bucket: it was promoted, removed or never there.
    /// Nothing was changed.
    #[error("delayed item at {timestamp_ms} ms is stale: it is no longer in that bucket; list the delayed jobs again")]
    StaleDelayedEntry {
        /// The item's bucket, epoch ms.
        timestamp_ms: i64,
    },
    /// A failed-entry id's text form could not be parsed.
    #[error("malformed failed-entry id {text:?}: {reason}")]
    MalformedFailedId {
        /// The text given.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A cancel by [`crate::JobId`] found no job with those bytes in the
    /// place the id names: it finished, moved or was removed. Nothing was
    /// changed.
    #[error("job {id} is stale: no job with those bytes is there any more; list the jobs again")]
    StaleJob {
        /// The id's text form.
        id: String,
    },
    /// A [`crate::JobId`]'s text form could not be parsed.
    #[error("malformed job id {text:?}: {reason}")]
    MalformedJobId {
        /// The text given.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A caller passed an argument that cannot be used.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A connection URL could not be used.
    #[error("invalid backend URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given, its password replaced by `***` ([`redact_url`]).
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

/// `raw` with any password replaced by `***`, for errors, logs and `Debug`
/// output: the password of the user part (`redis://:secret@host`,
/// `postgres://user:secret@host`) and a `password` query parameter. A
/// string that does not parse as a URL is redacted by its shape (whatever
/// sits between `scheme://user:` and the last `@`), so that a malformed URL
/// in an error does not leak it either.
pub fn redact_url(raw: &str) -> String {
    // `user:pw@host` alone parses, as scheme `user`: redact such by shape too.
    let Some(mut url) = url::Url::parse(raw).ok().filter(|u| !u.cannot_be_a_base()) else {
        return redact_unparsed(raw);
    };
    if url.password().is_some() {
        // Only fails for URLs that cannot have a password, which this has.
        let _ = url.set_password(Some("***"));
    }
    if url.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    "***".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.set_query(None);
        url.query_pairs_mut().extend_pairs(pairs);
    }
    url.into()
}

/// [`redact_url`] for a string that is not a URL.
fn redact_unparsed(raw: &str) -> String {
    let (scheme, rest) = raw.split_once("://").unwrap_or(("", raw));
    let prefix = if scheme.is_empty() {
        String::new()
    } else {
        format!("{scheme}://")
    };
    let rest = match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => rest.to_owned(),
        },
        None => rest.to_owned(),
    };
    // A `password=` parameter: hide up to the next `&`.
    match rest.split_once("password=") {
        Some((before, after)) => {
            let tail = after.find('&').map_or("", |i| &after[i..]);
            format!("{prefix}{before}password=***{tail}")
        }
        None => format!("{prefix}{rest}"),
    }
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

    /// True for a [`BackendErrorKind::Transient`] backend error: retrying
    /// later may succeed.
    pub fn is_transient(&self) -> bool {
        self.backend_kind() == Some(BackendErrorKind::Transient)
    }

    /// True for a [`BackendErrorKind::Permanent`] backend error. Workers,
    /// pools and schedulers do not retry these: they log the first once at
    /// ERROR, stop cleanly and return it from `run`. Other errors of backend
    /// calls (transient ones, and values that do not decode) are logged at
    /// WARN and retried with backoff.
    pub fn is_permanent(&self) -> bool {
        self.backend_kind() == Some(BackendErrorKind::Permanent)
    }

    /// True for the duplicate-delayed-job error that `enqueue_at` returns.
    pub fn is_already_scheduled(&self) -> bool {
        matches!(self, Error::AlreadyScheduled { .. })
    }
}

/// The result type used across resq.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_every_password() {
        for (raw, shown) in [
            ("redis://:secret@h:6379/0", "redis://:***@h:6379/0"),
            ("redis://u:secret@h/0?namespace=a", "redis://u:***@h/0?namespace=a"),
            (
                "postgres://u@h/d?password=secret&schema=s",
                "postgres://u@h/d?password=***&schema=s",
            ),
            ("redis://h:6379", "redis://h:6379"),
            ("memory://", "memory://"),
            // Not URLs: redacted by shape.
            ("redis://u:sec ret@h:port", "redis://u:***@h:port"),
            ("redis://:se/cr@et@h:99999", "redis://:***@h:99999"),
            (
                "postgres://u@h/d?password=sec ret&x=1",
                "postgres://u@h/d?password=***&x=1",
            ),
        ] {
            let got = redact_url(raw);
            assert_eq!(got, shown, "{raw}");
            assert!(!got.contains("secret") && !got.contains("sec ret"), "{got}");
        }
    }

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
        assert!(!p.is_transient() && p.is_permanent());
        assert!(!e.is_permanent());
        let decode = Error::Decode {
            what: "x",
            reason: "y".into(),
        };
        assert!(!decode.is_transient() && !decode.is_permanent());
        assert!(!Error::InvalidArgument("x".into()).is_transient());
        assert!(Error::backend("anything").is_transient());
    }
}
