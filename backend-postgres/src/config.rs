//! Connection settings: [`PostgresConfig`] and the `postgres://` URL
//! parameters resq reads.
//!
//! A URL is a libpq-style PostgreSQL URL. resq takes its own parameters out
//! of the query string and hands the rest to `sqlx`:
//!
//! | parameter | meaning | default |
//! |---|---|---|
//! | `schema` | the schema holding resq's tables (lowercase letters, digits, `_`; not a system schema: `information_schema`, `pg_*`) | `resq` |
//! | `max_connections` | the pool's size | 10 |
//! | `statement_timeout_ms` | the server's `statement_timeout`; 0 for none | none |
//! | `acquire_timeout_ms` | how long a call waits for a pooled connection | 30000 |
//! | `migrate` | run migrations on connect (`true`/`false`) | `false` |
//!
//! Parameters `sqlx` understands are kept as they are: `sslmode`,
//! `sslrootcert`, `sslcert`, `sslkey`, `host`, `hostaddr`, `port`, `dbname`,
//! `user`, `password`, `application_name`, `options`, `options[…]` and
//! `statement-cache-capacity`. Any other parameter, a repeated resq
//! parameter, a bad value or a malformed URL is an [`Error::InvalidUrl`].

use crate::names::schema_problem;
use resq_core::{Error, Result};
use sqlx::postgres::PgConnectOptions;
use std::str::FromStr;
use std::time::Duration;

/// The schema used when none is configured.
pub const DEFAULT_SCHEMA: &str = "resq";

/// The pool size used when none is configured.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// How long a call waits for a pooled connection by default.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// The `application_name` resq reports to the server unless the URL sets one.
pub const APPLICATION_NAME: &str = "resq";

/// Query parameters that `sqlx` reads from a PostgreSQL URL.
const SQLX_PARAMS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

const SCHEMA: &str = "schema";
const MAX_CONNECTIONS: &str = "max_connections";
const STATEMENT_TIMEOUT_MS: &str = "statement_timeout_ms";
const ACQUIRE_TIMEOUT_MS: &str = "acquire_timeout_ms";
const MIGRATE: &str = "migrate";

/// How to reach PostgreSQL and where resq keeps its tables.
///
/// Build it with [`PostgresConfig::new`] (defaults for everything but the
/// URL) or [`PostgresConfig::from_url`] (resq's URL parameters read into
/// the fields), adjust fields or use the builder methods, then pass it to
/// [`crate::PostgresBackend::connect_with`]. resq parameters still present
/// in `url` when connecting take precedence over the fields.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// The PostgreSQL URL, e.g. `postgres://user:pw@host:5432/db?sslmode=require`.
    pub url: String,
    /// The schema holding resq's tables (created by the migrations).
    pub schema: String,
    /// The most connections the pool opens.
    pub max_connections: u32,
    /// The server-side `statement_timeout` for resq's connections; `None`
    /// keeps the server's setting.
    pub statement_timeout: Option<Duration>,
    /// How long a call waits for a free pooled connection before failing.
    pub acquire_timeout: Duration,
    /// Whether connecting also runs the migrations.
    pub migrate_on_connect: bool,
}

impl PostgresConfig {
    /// A configuration for `url` with the defaults: schema
    /// [`DEFAULT_SCHEMA`], [`DEFAULT_MAX_CONNECTIONS`] connections, no
    /// statement timeout, [`DEFAULT_ACQUIRE_TIMEOUT`], no migration on
    /// connect.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            schema: DEFAULT_SCHEMA.to_owned(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            statement_timeout: None,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            migrate_on_connect: false,
        }
    }

    /// Reads a URL: resq's parameters (see the [module docs](self)) go into
    /// the fields and are removed from `url`; everything else stays.
    pub fn from_url(url: &str) -> Result<Self> {
        let split = split_url(url)?;
        let mut config = PostgresConfig::new(split.sqlx_url.clone());
        split.params.apply(&mut config);
        Ok(config)
    }

    /// Sets the schema.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Sets the pool size.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// Sets the server-side statement timeout (`None` for the server's own).
    pub fn statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// Sets how long a call waits for a pooled connection.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Sets whether connecting runs the migrations.
    pub fn migrate_on_connect(mut self, migrate: bool) -> Self {
        self.migrate_on_connect = migrate;
        self
    }

    /// Checks the configuration and turns it into connect options: resq
    /// parameters in `url` override the fields, the rest of the URL is
    /// parsed by `sqlx`.
    pub(crate) fn resolve(&self) -> Result<Resolved> {
        let split = split_url(&self.url)?;
        let mut config = self.clone();
        split.params.apply(&mut config);
        if let Some(problem) = schema_problem(&config.schema) {
            return Err(Error::InvalidArgument(problem));
        }
        if config.max_connections == 0 {
            return Err(Error::InvalidArgument("max_connections must be at least 1".into()));
        }
        let mut options = PgConnectOptions::from_str(&split.sqlx_url).map_err(|e| Error::InvalidUrl {
            url: redact(&self.url),
            reason: e.to_string(),
        })?;
        if options.get_application_name().is_none() {
            options = options.application_name(APPLICATION_NAME);
        }
        if let Some(timeout) = config.statement_timeout.filter(|t| !t.is_zero()) {
            let ms = timeout.as_millis().max(1).to_string();
            options = options.options([("statement_timeout", ms.as_str())]);
        }
        Ok(Resolved { config, options })
    }
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact(&self.url))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("statement_timeout", &self.statement_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("migrate_on_connect", &self.migrate_on_connect)
            .finish()
    }
}

/// A checked configuration and the `sqlx` options it gives.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    /// The configuration, URL parameters applied.
    pub(crate) config: PostgresConfig,
    /// How to open a connection.
    pub(crate) options: PgConnectOptions,
}

/// resq's parameters as found in a URL (each at most once).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Params {
    schema: Option<String>,
    max_connections: Option<u32>,
    statement_timeout: Option<Option<Duration>>,
    acquire_timeout: Option<Duration>,
    migrate: Option<bool>,
}

impl Params {
    fn apply(self, config: &mut PostgresConfig) {
        if let Some(schema) = self.schema {
            config.schema = schema;
        }
        if let Some(n) = self.max_connections {
            config.max_connections = n;
        }
        if let Some(t) = self.statement_timeout {
            config.statement_timeout = t;
        }
        if let Some(t) = self.acquire_timeout {
            config.acquire_timeout = t;
        }
        if let Some(m) = self.migrate {
            config.migrate_on_connect = m;
        }
    }
}

/// A URL split into what `sqlx` reads and what resq reads.
#[derive(Debug)]
struct Split {
    sqlx_url: String,
    params: Params,
}

/// Takes resq's parameters out of a PostgreSQL URL.
fn split_url(raw: &str) -> Result<Split> {
    let invalid = |reason: String| Error::InvalidUrl {
        url: redact(raw),
        reason,
    };
    let mut url = url::Url::parse(raw).map_err(|e| invalid(format!("not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(invalid(format!(
            "expected a postgres:// or postgresql:// URL, not {}://",
            url.scheme()
        )));
    }
    if url.fragment().is_some() {
        return Err(invalid("a PostgreSQL URL takes no #fragment".into()));
    }
    let mut params = Params::default();
    let mut kept: Vec<(String, String)> = Vec::new();
    for (key, value) in url.query_pairs() {
        let key = key.into_owned();
        let value = value.into_owned();
        read_param(&mut params, &key, &value).map_err(invalid)?;
        let resq_param = matches!(
            key.as_str(),
            SCHEMA | MAX_CONNECTIONS | STATEMENT_TIMEOUT_MS | ACQUIRE_TIMEOUT_MS | MIGRATE
        );
        if resq_param {
            continue;
        }
        if SQLX_PARAMS.contains(&key.as_str()) || (key.starts_with("options[") && key.ends_with(']')) {
            kept.push((key, value));
        } else {
            return Err(invalid(format!(
                "unknown parameter {key:?}; resq reads {SCHEMA}, {MAX_CONNECTIONS}, {STATEMENT_TIMEOUT_MS}, \
                 {ACQUIRE_TIMEOUT_MS} and {MIGRATE}, and passes on {}",
                SQLX_PARAMS.join(", ")
            )));
        }
    }
    url.set_query(None);
    if !kept.is_empty() {
        url.query_pairs_mut().extend_pairs(kept);
    }
    Ok(Split {
        sqlx_url: url.into(),
        params,
    })
}

/// Reads one query parameter into `params` if it is one of resq's.
fn read_param(params: &mut Params, key: &str, value: &str) -> std::result::Result<(), String> {
    fn once<T>(slot: &mut Option<T>, key: &str, value: T) -> std::result::Result<(), String> {
        if slot.is_some() {
            return Err(format!("{key} is given twice"));
        }
        *slot = Some(value);
        Ok(())
    }
    fn millis(key: &str, value: &str) -> std::result::Result<u64, String> {
        value
            .parse::<u64>()
            .map_err(|_| format!("{key} must be a whole number of milliseconds, not {value:?}"))
    }
    match key {
        SCHEMA => {
            if let Some(problem) = schema_problem(value) {
                return Err(problem);
            }
            once(&mut params.schema, key, value.to_owned())
        }
        MAX_CONNECTIONS => {
            let n = value
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{key} must be a whole number of at least 1, not {value:?}"))?;
            once(&mut params.max_connections, key, n)
        }
        STATEMENT_TIMEOUT_MS => {
            let ms = millis(key, value)?;
            let timeout = (ms > 0).then(|| Duration::from_millis(ms));
            once(&mut params.statement_timeout, key, timeout)
        }
        ACQUIRE_TIMEOUT_MS => {
            let ms = millis(key, value)?;
            if ms == 0 {
                return Err(format!("{key} must be at least 1"));
            }
            once(&mut params.acquire_timeout, key, Duration::from_millis(ms))
        }
        MIGRATE => {
            let on = match value.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => return Err(format!("{key} must be true or false, not {value:?}")),
            };
            once(&mut params.migrate, key, on)
        }
        _ => Ok(()),
    }
}

/// The URL with its password (in the user part or a `password` parameter)
/// replaced by `***`, for errors and logs (resq's one helper for this).
pub(crate) fn redact(raw: &str) -> String {
    resq_core::error::redact_url(raw)
}
