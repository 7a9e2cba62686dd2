//! Connection settings reach the server: statement timeout, application
//! name, and TLS through `sslmode`.

mod common;

use resq_core::backend::Backend;
use resq_postgres::{testing, PostgresBackend};

/// A backend on the test server with extra URL parameters, on a new
/// unmigrated schema, or `None` after skipping.
async fn connect_with_params(
    test: &str,
    params: &[(&str, &str)],
) -> Option<Result<std::sync::Arc<PostgresBackend>, resq_core::Error>> {
    let Ok(mut url) = url::Url::parse(&testing::url()) else {
        common::skip(test, "RESQ_POSTGRES_URL is not a URL");
        return None;
    };
    url.query_pairs_mut()
        .append_pair("schema", &testing::unique_schema())
        .append_pair("max_connections", "1")
        .append_pair("acquire_timeout_ms", "5000");
    for (k, v) in params {
        url.query_pairs_mut().append_pair(k, v);
    }
    // Probe reachability with the plain test URL first, to skip cleanly.
    let probe = common::backend(test).await?;
    probe.close().await.unwrap();
    Some(resq_postgres::connect(url.as_str()).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_and_application_name_apply() {
    let test = "statement_timeout_and_application_name_apply";
    let Some(backend) = connect_with_params(test, &[("statement_timeout_ms", "150")]).await else {
        return;
    };
    let backend = backend.unwrap();
    let (timeout, app): (String, String) =
        sqlx::query_as("SELECT current_setting('statement_timeout'), current_setting('application_name')")
            .fetch_one(backend.pool())
            .await
            .unwrap();
    assert_eq!(timeout, "150ms");
    assert_eq!(app, "resq");
    let slow = sqlx::query("SELECT pg_sleep(2)").execute(backend.pool()).await;
    let err = slow.expect_err("a 2 s statement outlived a 150 ms timeout");
    assert!(err.to_string().contains("statement timeout"), "{err}");
    backend.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_encrypts() {
    let test = "sslmode_require_encrypts";
    let Some(probe) = common::backend(test).await else {
        return;
    };
    let (ssl_on,): (String,) = sqlx::query_as("SHOW ssl").fetch_one(probe.pool()).await.unwrap();
    probe.close().await.unwrap();
    let Some(backend) = connect_with_params(test, &[("sslmode", "require")]).await else {
        return;
    };
    if ssl_on != "on" {
        assert!(backend.is_err(), "sslmode=require connected to a server without TLS");
        return common::skip(test, "the server has ssl=off");
    }
    let backend = backend.unwrap();
    let (encrypted,): (bool,) = sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(backend.pool())
        .await
        .unwrap();
    assert!(encrypted, "sslmode=require gave a plain connection");
    backend.close().await.unwrap();
}
