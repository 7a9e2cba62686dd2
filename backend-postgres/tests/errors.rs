//! PostgreSQL errors are classified: what may pass by itself (a refused or
//! dropped connection) is transient, what needs someone to fix the setup
//! (a missing schema, table or function, an unknown role) is permanent.
//! Real errors from the test server, not constructed ones.

mod common;

use resq_core::backend::{QueueStore, WorkerId};
use resq_core::{BackendErrorKind, Error};
use resq_postgres::{testing, PostgresBackend, PostgresConfig};
use std::time::Duration;

fn kind(e: &Error) -> Option<BackendErrorKind> {
    e.backend_kind()
}

#[tokio::test]
async fn a_dropped_schema_is_permanent() {
    let Some(backend) = common::unmigrated("a_dropped_schema_is_permanent").await else {
        return;
    };
    // Never created: 3F000 invalid_schema_name (or 42P01 for a table).
    let e = backend.queue_len("q").await.expect_err("no schema yet");
    assert_eq!(kind(&e), Some(BackendErrorKind::Permanent), "{e}");
    assert!(
        e.to_string().contains("does not exist"),
        "the server's words are kept: {e}"
    );
    assert!(std::error::Error::source(&e).is_some(), "the sqlx error is the source");

    // Migrated, then its tables and functions dropped behind its back.
    backend.migrate().await.unwrap();
    backend.push("q", "job").await.unwrap();
    let schema = backend.schema().to_owned();
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(backend.pool())
        .await
        .unwrap();
    sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
        .execute(backend.pool())
        .await
        .unwrap();
    let table = backend.queue_len("q").await.expect_err("the table is gone");
    assert_eq!(kind(&table), Some(BackendErrorKind::Permanent), "{table}");
    let worker = WorkerId::new("w".to_owned(), &["q".to_owned()]);
    let function = backend
        .claim(&worker, &["q".to_owned()], "now")
        .await
        .expect_err("the claim function is gone");
    assert_eq!(kind(&function), Some(BackendErrorKind::Permanent), "{function}");
    testing::drop_test_schema(&backend).await.unwrap();
}

#[tokio::test]
async fn an_unknown_role_is_permanent() {
    if common::backend("an_unknown_role_is_permanent").await.is_none() {
        return;
    }
    // 28000 invalid_authorization_specification: the role does not exist.
    let mut url = url::Url::parse(&testing::url()).unwrap();
    url.set_username("resq_no_such_role_for_tests").unwrap();
    let config = PostgresConfig::from_url(url.as_str())
        .unwrap()
        .acquire_timeout(Duration::from_secs(5));
    let e = PostgresBackend::connect_with(config).await.expect_err("no such role");
    assert_eq!(kind(&e), Some(BackendErrorKind::Permanent), "{e}");
    assert!(e.to_string().contains("resq_no_such_role_for_tests"), "{e}");
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    // Port 1 on the loopback: nothing listens there.
    let e = resq_postgres::connect("postgres://u@127.0.0.1:1/d?acquire_timeout_ms=2000")
        .await
        .expect_err("nothing listens");
    assert_eq!(kind(&e), Some(BackendErrorKind::Transient), "{e}");
    assert!(std::error::Error::source(&e).is_some(), "the sqlx error is the source");
}
