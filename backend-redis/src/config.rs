//! Connection settings, read from a `redis://` / `rediss://` URL.
//!
//! Everything redis-rs understands (host, port, user, password, db number,
//! TLS for `rediss://`) is passed through. resq reads its own query
//! parameters and removes them before connecting:
//!
//! | parameter | meaning | default |
//! |---|---|---|
//! | `namespace` | the key prefix shared with Resque clients | `resque` |
//! | `response_timeout_ms` | how long a command may take before it fails | `10000` |
//! | `connection_timeout_ms` | how long connecting may take | `5000` |

use resq_core::error::redact_url;
use resq_core::{Error, Result};
use std::time::Duration;

/// The default namespace, as in Resque and node-resque.
pub const DEFAULT_NAMESPACE: &str = "resque";

/// Settings for a [`crate::RedisBackend`]. Its `Debug` output hides the
/// URL's password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// The URL handed to redis-rs (resq's own parameters removed). It may
    /// hold a password: show it with [`redact_url`], as `Debug` does.
    pub url: String,
    /// The key namespace, without the trailing `:`. Empty means no prefix.
    pub namespace: String,
    /// The per-command response timeout.
    pub response_timeout: Duration,
    /// The connect timeout.
    pub connection_timeout: Duration,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("namespace", &self.namespace)
            .field("response_timeout", &self.response_timeout)
            .field("connection_timeout", &self.connection_timeout)
            .finish()
    }
}

impl RedisConfig {
    /// Parses a `redis://` or `rediss://` URL with resq's optional parameters.
    pub fn from_url(url: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: redact_url(url),
            reason,
        };
        let mut parsed = url::Url::parse(url).map_err(|e| invalid(format!("not a valid URL: {e}")))?;
        if !matches!(parsed.scheme(), "redis" | "rediss") {
            return Err(invalid(format!(
                "expected redis:// or rediss://, got {}://",
                parsed.scheme()
            )));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(invalid("the URL names no host".into()));
        }
        let mut config = RedisConfig {
            url: String::new(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            response_timeout: Duration::from_secs(10),
            connection_timeout: Duration::from_secs(5),
        };
        let mut kept = Vec::new();
        for (k, v) in parsed.query_pairs() {
            let ms = || {
                v.parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(Duration::from_millis)
                    .ok_or_else(|| invalid(format!("{k} must be a positive number of milliseconds, got {v:?}")))
            };
            match k.as_ref() {
                "namespace" => config.namespace = v.trim_end_matches(':').to_owned(),
                "response_timeout_ms" => config.response_timeout = ms()?,
                "connection_timeout_ms" => config.connection_timeout = ms()?,
                _ => kept.push((k.into_owned(), v.into_owned())),
            }
        }
        if kept.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(kept);
        }
        config.url = parsed.to_string();
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_resq_parameters_and_keeps_the_rest() {
        let c =
            RedisConfig::from_url("redis://u:p@127.0.0.1:6380/3?namespace=app:&response_timeout_ms=250&protocol=resp2")
                .unwrap();
        assert_eq!(c.namespace, "app");
        assert_eq!(c.response_timeout, Duration::from_millis(250));
        assert_eq!(c.url, "redis://u:p@127.0.0.1:6380/3?protocol=resp2");
        let d = RedisConfig::from_url("rediss://cache.example:6379").unwrap();
        assert_eq!(d.namespace, "resque");
        assert_eq!(d.url, "rediss://cache.example:6379");
    }

    #[test]
    fn rejects_bad_urls_with_a_reason() {
        for (url, why) in [
            ("redis//nope", "not a valid URL"),
            ("http://x", "expected redis://"),
            ("redis://h?response_timeout_ms=soon", "positive number"),
        ] {
            let e = RedisConfig::from_url(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
    }
}
