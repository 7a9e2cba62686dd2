//! URL and configuration parsing. No server is needed: every URL here is
//! rejected, or read, before anything connects.

use resq_core::Error;
use resq_postgres::{PostgresBackend, PostgresConfig, DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_MAX_CONNECTIONS};
use std::time::Duration;

fn invalid(url: &str) -> String {
    match PostgresConfig::from_url(url) {
        Err(Error::InvalidUrl { url: shown, reason }) => {
            assert!(!shown.contains("s3cret"), "the password leaked: {shown}");
            reason
        }
        other => panic!("{url}: expected InvalidUrl, got {other:?}"),
    }
}

#[test]
fn defaults() {
    let c = PostgresConfig::from_url("postgres://u@localhost/db").unwrap();
    assert_eq!(c.url, "postgres://u@localhost/db");
    assert_eq!(c.schema, "resq");
    assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
    assert_eq!(c.statement_timeout, None);
    assert_eq!(c.acquire_timeout, DEFAULT_ACQUIRE_TIMEOUT);
    assert!(!c.migrate_on_connect);
    assert_eq!(PostgresConfig::new("postgres://u@localhost/db"), c);
    assert!(PostgresConfig::from_url("postgresql://localhost").is_ok());
}

#[test]
fn resq_parameters_are_read_and_removed() {
    let c = PostgresConfig::from_url(
        "postgres://u:pw@db:6543/app?sslmode=require&schema=jobs_1&max_connections=3&statement_timeout_ms=5000\
         &acquire_timeout_ms=250&migrate=true&application_name=shop&options[lock_timeout]=1s",
    )
    .unwrap();
    assert_eq!(c.schema, "jobs_1");
    assert_eq!(c.max_connections, 3);
    assert_eq!(c.statement_timeout, Some(Duration::from_millis(5000)));
    assert_eq!(c.acquire_timeout, Duration::from_millis(250));
    assert!(c.migrate_on_connect);
    let kept = url::Url::parse(&c.url).unwrap();
    let pairs: Vec<(String, String)> = kept.query_pairs().map(|(k, v)| (k.into(), v.into())).collect();
    assert_eq!(
        pairs,
        vec![
            ("sslmode".to_owned(), "require".to_owned()),
            ("application_name".to_owned(), "shop".to_owned()),
            ("options[lock_timeout]".to_owned(), "1s".to_owned()),
        ]
    );
    assert_eq!(
        (kept.host_str(), kept.port(), kept.path()),
        (Some("db"), Some(6543), "/app")
    );
    assert_eq!((kept.username(), kept.password()), ("u", Some("pw")));

    for (v, on) in [
        ("false", false),
        ("0", false),
        ("TRUE", true),
        ("yes", true),
        ("off", false),
    ] {
        let c = PostgresConfig::from_url(&format!("postgres://h/d?migrate={v}")).unwrap();
        assert_eq!(c.migrate_on_connect, on, "migrate={v}");
    }
    let c = PostgresConfig::from_url("postgres://h/d?statement_timeout_ms=0").unwrap();
    assert_eq!(c.statement_timeout, None);
}

#[test]
fn builder_and_debug() {
    let c = PostgresConfig::new("postgres://u:s3cret@h/d")
        .schema("other")
        .max_connections(2)
        .statement_timeout(Some(Duration::from_secs(1)))
        .acquire_timeout(Duration::from_secs(2))
        .migrate_on_connect(true);
    assert_eq!(
        (c.schema.as_str(), c.max_connections, c.migrate_on_connect),
        ("other", 2, true)
    );
    let shown = format!("{c:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("***"), "{shown}");
}

#[test]
fn malformed_urls() {
    assert!(invalid("not a url").contains("not a valid URL"));
    assert!(invalid("redis://localhost").contains("postgres://"));
    assert!(invalid("postgres://h/d#frag").contains("fragment"));
    assert!(invalid("postgres://u:s3cret@h/d?schem=x").contains("unknown parameter \"schem\""));
    assert!(invalid("postgres://h/d?schema=a&schema=b").contains("twice"));
    assert!(invalid("postgres://h/d?schema=Bad-Name").contains("lowercase"));
    assert!(invalid("postgres://h/d?schema=pg_x").contains("pg_"));
    assert!(invalid("postgres://h/d?max_connections=0").contains("at least 1"));
    assert!(invalid("postgres://h/d?max_connections=many").contains("whole number"));
    assert!(invalid("postgres://h/d?statement_timeout_ms=-1").contains("milliseconds"));
    assert!(invalid("postgres://h/d?acquire_timeout_ms=0").contains("at least 1"));
    assert!(invalid("postgres://h/d?migrate=maybe").contains("true or false"));
    assert!(invalid("postgres://u:s3cret@h/d?password=s3cret&bogus=1").contains("bogus"));
}

#[tokio::test]
async fn connect_rejects_bad_settings_before_connecting() {
    match PostgresBackend::connect("postgres://u:s3cret@h/d?sslmode=sometimes").await {
        Err(Error::InvalidUrl { url, reason }) => {
            assert!(!url.contains("s3cret"), "{url}");
            assert!(!reason.is_empty());
        }
        other => panic!("expected InvalidUrl, got {other:?}"),
    }
    let bad_schema = PostgresConfig::new("postgres://h/d").schema("no spaces");
    assert!(matches!(
        PostgresBackend::connect_with(bad_schema).await,
        Err(Error::InvalidArgument(_))
    ));
    let no_pool = PostgresConfig::new("postgres://h/d").max_connections(0);
    assert!(matches!(
        PostgresBackend::connect_with(no_pool).await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn unreachable_server_is_a_backend_error() {
    // Port 1 on the loopback: nothing listens there.
    let started = std::time::Instant::now();
    match resq_postgres::connect("postgres://u@127.0.0.1:1/d?acquire_timeout_ms=3000").await {
        Err(e @ Error::Backend { .. }) => {
            assert!(e.to_string().contains("postgres"), "{e}");
            assert!(e.is_transient(), "a refused connection is transient: {e}");
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// PostgreSQL's system schemas are refused, in the URL and in the builder,
/// before anything connects: resq would otherwise create its tables inside
/// them (`information_schema` was accepted). The error is typed, names the
/// schema and says why, and is not transient (nothing retries it).
#[tokio::test]
async fn system_schemas_are_refused() {
    for schema in [
        "information_schema",
        "pg_catalog",
        "pg_toast",
        "pg_toast_temp_1",
        "pg_temp",
        "pg_temp_3",
    ] {
        let reason = invalid(&format!("postgres://u:s3cret@h/d?schema={schema}"));
        assert!(
            reason.contains(schema) && reason.contains("system schema"),
            "{schema}: {reason}"
        );
        match PostgresBackend::connect_with(PostgresConfig::new("postgres://h/d").schema(schema)).await {
            Err(e @ Error::InvalidArgument(_)) => {
                let text = e.to_string();
                assert!(text.contains(schema) && text.contains("system schema"), "{text}");
                assert!(!e.is_transient(), "{schema}: a misconfiguration is not transient");
            }
            other => panic!("{schema}: expected InvalidArgument, got {other:?}"),
        }
    }
    // Ordinary names that merely contain those words stay valid.
    for ok in ["information", "my_information_schema", "pgx", "app_pg_catalog"] {
        let c = PostgresConfig::from_url(&format!("postgres://h/d?schema={ok}")).unwrap();
        assert_eq!(c.schema, ok);
    }
}
