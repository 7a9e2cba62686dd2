//! Connection settings, read from a `redis://` / `rediss://` URL, or a
//! `redis+cluster://` / `rediss+cluster://` URL for a Redis Cluster.
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
//! | `tls_ca_file` | `rediss://` only: a PEM file of the CA certificates to trust instead of the public web roots (a private CA) | the public roots |
//! | `tls_cert_file`, `tls_key_file` | `rediss://` only: a PEM client certificate and its key, for servers that require one (`tls-auth-clients yes`); both or neither | none |
//! | `shards` | cluster URLs only: spread the queues over this many hash tags `{<namespace>:0}` … `{<namespace>:N-1}` (1 to 1024; see [`crate::shard`]) | unset: one slot |

use resq_core::error::redact_url;
use resq_core::{Error, Result};
use std::time::Duration;

/// The default namespace, as in Resque and node-resque.
pub const DEFAULT_NAMESPACE: &str = "resque";

/// The default namespace on a Redis Cluster: Resque's, as a hash tag, so
/// every key of the namespace maps to one slot.
pub const DEFAULT_CLUSTER_NAMESPACE: &str = "{resque}";

/// The hash tag of a namespace: the text between its first `{` and the
/// first `}` after it, when that text is not empty. Redis Cluster hashes
/// only that text of a key, so every key `<namespace>:<anything>` maps to
/// the tag's slot, whatever `<anything>` holds (its braces come later).
/// `None` when the namespace has no such tag.
pub fn hash_tag(namespace: &str) -> Option<&str> {
    let open = namespace.find('{')?;
    let rest = &namespace[open + 1..];
    let close = rest.find('}')?;
    (close > 0).then(|| &rest[..close])
}

/// The largest `shards` a cluster URL may ask for.
pub const MAX_SHARDS: u32 = 1024;

/// The namespace of shard `index` of a sharded namespace `base`:
/// `{<base>:<index>}`, a hash tag of its own, so each shard's keys share
/// one slot and different shards usually land on different slots.
pub fn shard_namespace(base: &str, index: usize) -> String {
    format!("{{{base}:{index}}}")
}

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
    /// The seed nodes of a Redis Cluster, one URL each (user, password, TLS
    /// and redis-rs's parameters copied to every one); empty for a single
    /// server. With nodes, [`RedisConfig::url`] is the first of them.
    pub cluster_nodes: Vec<String>,
    /// Sharded mode on a Redis Cluster (the URL's `shards`): how many hash
    /// tags the queues are spread over, each shard `i` under the namespace
    /// [`shard_namespace`]`(namespace, i)`; [`RedisConfig::namespace`] is
    /// then the base, without braces. `None` for one slot (or a single
    /// server).
    pub shards: Option<u32>,
    /// TLS files named by the URL (`rediss://` and `rediss+cluster://`
    /// only); read when connecting.
    pub tls: TlsFiles,
}

/// Makes rustls's `ring` provider the process's default TLS crypto provider
/// when none is installed yet. redis-rs's TLS connections take the
/// process default, and rustls picks one by itself only when exactly one
/// provider is compiled in; with none (a build with only Redis) or two,
/// the first `rediss://` connection panicked in a runtime thread. A
/// provider the application installed first is kept.
pub(crate) fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Err: another thread installed one meanwhile; it is kept.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
    });
}

/// The TLS files a `rediss://` URL names: `tls_ca_file` (PEM certificates
/// of the CA to trust instead of the public web roots) and
/// `tls_cert_file` + `tls_key_file` (a PEM client certificate and key).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificates to trust.
    pub ca_file: Option<std::path::PathBuf>,
    /// The client certificate.
    pub cert_file: Option<std::path::PathBuf>,
    /// The client certificate's private key.
    pub key_file: Option<std::path::PathBuf>,
}

impl TlsFiles {
    /// Whether no file is named.
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none()
    }

    /// The files' contents for redis-rs; `None` when no file is named. A
    /// file that cannot be read is an [`Error::InvalidUrl`] naming it. For
    /// a TLS `url`, first makes sure a crypto provider is installed.
    pub(crate) fn load(&self, url: &str) -> Result<Option<redis::TlsCertificates>> {
        if url.starts_with("rediss:") {
            install_crypto_provider();
        }
        if self.is_empty() {
            return Ok(None);
        }
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| Error::InvalidUrl {
                url: redact_url(url),
                reason: format!("cannot read the TLS file {}: {e}", path.display()),
            })
        };
        let root_cert = self.ca_file.as_deref().map(read).transpose()?;
        let client_tls = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read(cert)?,
                client_key: read(key)?,
            }),
            _ => None,
        };
        Ok(Some(redis::TlsCertificates { client_tls, root_cert }))
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("namespace", &self.namespace)
            .field("response_timeout", &self.response_timeout)
            .field("connection_timeout", &self.connection_timeout)
            .field(
                "cluster_nodes",
                &self.cluster_nodes.iter().map(|n| redact_url(n)).collect::<Vec<_>>(),
            )
            .field("shards", &self.shards)
            .field("tls", &self.tls)
            .finish()
    }
}

impl RedisConfig {
    /// Parses a `redis://` or `rediss://` URL with resq's optional
    /// parameters, or a cluster URL:
    /// `redis+cluster://[user:password@]host:port,host:port[,…]/?namespace={resque}`
    /// (`rediss+cluster://` for TLS). A cluster's namespace must hold a hash
    /// tag (see [`hash_tag`]); it defaults to [`DEFAULT_CLUSTER_NAMESPACE`].
    ///
    /// With `shards=N` (cluster URLs only, 1 to [`MAX_SHARDS`]) the
    /// namespace is a base without `{` or `}` (default [`DEFAULT_NAMESPACE`])
    /// and each shard gets its own tag (see [`shard_namespace`]).
    pub fn from_url(url: &str) -> Result<Self> {
        if let Some((scheme, rest)) = url.split_once("://") {
            if let Some(node_scheme) = scheme.strip_suffix("+cluster") {
                return Self::from_cluster_url(url, node_scheme, rest);
            }
        }
        let config = Self::from_single_url(url)?;
        if config.shards.is_some() {
            return Err(Error::InvalidUrl {
                url: redact_url(url),
                reason: "shards=N spreads queues over the slots of a Redis Cluster: it needs a redis+cluster:// or rediss+cluster:// URL".into(),
            });
        }
        Ok(config)
    }

    /// Whether this asks for sharded mode (`shards` set).
    pub fn is_sharded(&self) -> bool {
        self.shards.is_some()
    }

    /// The settings of each shard in sharded mode: this config with the
    /// shard's namespace and no `shards`; `None` in single-slot mode.
    pub fn shard_configs(&self) -> Option<Vec<RedisConfig>> {
        let n = self.shards?;
        Some(
            (0..n as usize)
                .map(|i| RedisConfig {
                    namespace: shard_namespace(&self.namespace, i),
                    shards: None,
                    ..self.clone()
                })
                .collect(),
        )
    }

    /// Whether this names a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        !self.cluster_nodes.is_empty()
    }

    /// A cluster URL: each seed node becomes a `<node_scheme>://` URL with
    /// the same user, password, path and parameters, parsed like a single
    /// server's.
    fn from_cluster_url(url: &str, node_scheme: &str, rest: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: redact_url(url),
            reason,
        };
        if !matches!(node_scheme, "redis" | "rediss") {
            return Err(invalid(format!(
                "expected redis+cluster:// or rediss+cluster://, got {node_scheme}+cluster://"
            )));
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let (userinfo, hosts) = match authority.rfind('@') {
            Some(at) => (&authority[..=at], &authority[at + 1..]),
            None => ("", authority),
        };
        let hosts: Vec<&str> = hosts.split(',').map(str::trim).filter(|h| !h.is_empty()).collect();
        if hosts.is_empty() {
            return Err(invalid("the URL names no cluster node".into()));
        }
        let mut nodes = Vec::with_capacity(hosts.len());
        let mut config: Option<RedisConfig> = None;
        for host in hosts {
            let node = Self::from_single_url(&format!("{node_scheme}://{userinfo}{host}{tail}"))
                .map_err(|e| invalid(format!("cluster node {host}: {e}")))?;
            nodes.push(node.url.clone());
            config.get_or_insert(node);
        }
        // Not empty: `hosts` had at least one node.
        let Some(mut config) = config else {
            return Err(invalid("the URL names no cluster node".into()));
        };
        let explicit_namespace = url::form_urlencoded::parse(tail.split_once('?').map_or("", |(_, q)| q).as_bytes())
            .any(|(k, _)| k == "namespace");
        if config.shards.is_some() {
            if config.namespace.contains(['{', '}']) {
                return Err(invalid(format!(
                    "with shards=N the namespace is a base name without {{ or }} (each shard gets its own hash tag {{<namespace>:<i>}}); got {:?}",
                    config.namespace
                )));
            }
            if config.namespace.is_empty() {
                return Err(invalid("with shards=N the namespace must not be empty".into()));
            }
        } else if !explicit_namespace {
            config.namespace = DEFAULT_CLUSTER_NAMESPACE.to_owned();
        }
        if config.shards.is_none() && hash_tag(&config.namespace).is_none() {
            return Err(invalid(format!(
                "on a Redis Cluster the namespace must hold a hash tag, such as {{{}}}, so that all its keys share one slot; got {:?}",
                if config.namespace.is_empty() { "resque" } else { config.namespace.as_str() },
                config.namespace
            )));
        }
        config.cluster_nodes = nodes;
        Ok(config)
    }

    fn from_single_url(url: &str) -> Result<Self> {
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
            cluster_nodes: Vec::new(),
            shards: None,
            tls: TlsFiles::default(),
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
                "shards" => {
                    let n = v
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_SHARDS).contains(n))
                        .ok_or_else(|| {
                            invalid(format!(
                                "shards must be a whole number from 1 to {MAX_SHARDS}, got {v:?}"
                            ))
                        })?;
                    config.shards = Some(n);
                }
                "tls_ca_file" => config.tls.ca_file = Some(v.as_ref().into()),
                "tls_cert_file" => config.tls.cert_file = Some(v.as_ref().into()),
                "tls_key_file" => config.tls.key_file = Some(v.as_ref().into()),
                _ => kept.push((k.into_owned(), v.into_owned())),
            }
        }
        if !config.tls.is_empty() && parsed.scheme() != "rediss" {
            return Err(invalid(
                "tls_ca_file, tls_cert_file and tls_key_file need a TLS URL (rediss:// or rediss+cluster://)".into(),
            ));
        }
        if config.tls.cert_file.is_some() != config.tls.key_file.is_some() {
            return Err(invalid(
                "tls_cert_file and tls_key_file go together: a client certificate needs its key".into(),
            ));
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
    fn reads_cluster_urls() {
        let c = RedisConfig::from_url(
            "rediss+cluster://u:p@10.0.0.1:7000,10.0.0.2:7001/?namespace=%7Bapp%7D&connection_timeout_ms=300&insecure=true",
        )
        .unwrap();
        assert!(c.is_cluster());
        assert_eq!(c.namespace, "{app}");
        assert_eq!(c.connection_timeout, Duration::from_millis(300));
        assert_eq!(
            c.cluster_nodes,
            [
                "rediss://u:p@10.0.0.1:7000/?insecure=true",
                "rediss://u:p@10.0.0.2:7001/?insecure=true"
            ]
        );
        assert_eq!(c.url, c.cluster_nodes[0]);
        assert!(!format!("{c:?}").contains(":p@"));
        let d = RedisConfig::from_url("redis+cluster://127.0.0.1:7000").unwrap();
        assert_eq!(d.namespace, DEFAULT_CLUSTER_NAMESPACE);
        assert!(!RedisConfig::from_url("redis://127.0.0.1").unwrap().is_cluster());
    }

    #[test]
    fn reads_tls_files() {
        let c = RedisConfig::from_url(
            "rediss+cluster://h:1,h:2/?tls_ca_file=%2Fetc%2Fca.pem&tls_cert_file=c.pem&tls_key_file=k.pem&namespace=%7Bq%7D",
        )
        .unwrap();
        assert_eq!(c.tls.ca_file.as_deref(), Some(std::path::Path::new("/etc/ca.pem")));
        assert_eq!(c.tls.cert_file.as_deref(), Some(std::path::Path::new("c.pem")));
        assert_eq!(c.tls.key_file.as_deref(), Some(std::path::Path::new("k.pem")));
        assert!(
            !c.url.contains("tls_"),
            "resq's parameters are not passed on: {}",
            c.url
        );
        assert!(c.cluster_nodes.iter().all(|n| !n.contains("tls_")));
        let plain = RedisConfig::from_url("redis://h/?tls_ca_file=ca.pem")
            .unwrap_err()
            .to_string();
        assert!(plain.contains("rediss://"), "{plain}");
        let half = RedisConfig::from_url("rediss://h/?tls_cert_file=c.pem")
            .unwrap_err()
            .to_string();
        assert!(half.contains("go together"), "{half}");
        let missing = c.tls.load(&c.url).unwrap_err().to_string();
        assert!(missing.contains("/etc/ca.pem"), "{missing}");
        assert!(RedisConfig::from_url("rediss://h/")
            .unwrap()
            .tls
            .load("rediss://h/")
            .unwrap()
            .is_none());
    }

    #[test]
    fn cluster_namespaces_need_a_hash_tag() {
        for bad in ["resque", "{}x", "a{b", ""] {
            let url = format!("redis+cluster://127.0.0.1:7000/?namespace={bad}");
            let e = RedisConfig::from_url(&url).unwrap_err().to_string();
            assert!(e.contains("hash tag"), "{bad}: {e}");
        }
        for (ns, tag) in [
            ("{resque}", "resque"),
            ("app:{q}", "q"),
            ("{a}{b}", "a"),
            ("a{b}c", "b"),
        ] {
            assert_eq!(hash_tag(ns), Some(tag), "{ns}");
        }
        let e = RedisConfig::from_url("http+cluster://h:1").unwrap_err().to_string();
        assert!(e.contains("redis+cluster://"), "{e}");
        let e = RedisConfig::from_url("redis+cluster:///?namespace={a}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no cluster node"), "{e}");
    }

    #[test]
    fn reads_sharded_cluster_urls() {
        let c = RedisConfig::from_url("redis+cluster://127.0.0.1:7000,127.0.0.1:7001/?namespace=app&shards=3").unwrap();
        assert_eq!(c.shards, Some(3));
        assert!(c.is_sharded() && c.is_cluster());
        assert_eq!(c.namespace, "app");
        assert_eq!(c.cluster_nodes, ["redis://127.0.0.1:7000/", "redis://127.0.0.1:7001/"]);
        let shards = c.shard_configs().unwrap();
        let names: Vec<&str> = shards.iter().map(|s| s.namespace.as_str()).collect();
        assert_eq!(names, ["{app:0}", "{app:1}", "{app:2}"]);
        assert!(shards
            .iter()
            .all(|s| s.shards.is_none() && s.cluster_nodes == c.cluster_nodes));
        assert_eq!(hash_tag(&shards[2].namespace), Some("app:2"));
        // The default base is Resque's namespace, without braces.
        let d = RedisConfig::from_url("rediss+cluster://h:1/?shards=1").unwrap();
        assert_eq!((d.namespace.as_str(), d.shards), ("resque", Some(1)));
        assert_eq!(d.shard_configs().unwrap()[0].namespace, "{resque:0}");
        assert!(RedisConfig::from_url("redis+cluster://h:1/?namespace={x}")
            .unwrap()
            .shard_configs()
            .is_none());
        assert!(format!("{c:?}").contains("shards: Some(3)"));
    }

    #[test]
    fn rejects_bad_shards_with_a_reason() {
        for (url, why) in [
            ("redis://127.0.0.1/?shards=3", "needs a redis+cluster://"),
            ("rediss://127.0.0.1/?shards=3", "needs a redis+cluster://"),
            ("redis+cluster://h:1/?shards=0", "from 1 to 1024"),
            ("redis+cluster://h:1/?shards=1025", "from 1 to 1024"),
            ("redis+cluster://h:1/?shards=two", "from 1 to 1024"),
            ("redis+cluster://h:1/?shards=-1", "from 1 to 1024"),
            ("redis+cluster://h:1/?shards=3&namespace={app}", "without { or }"),
            ("redis+cluster://h:1/?shards=3&namespace=a}b", "without { or }"),
            ("redis+cluster://h:1/?shards=3&namespace=", "must not be empty"),
        ] {
            let e = RedisConfig::from_url(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
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
