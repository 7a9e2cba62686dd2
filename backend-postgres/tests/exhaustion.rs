//! Connection exhaustion: a server that refuses new connections ("too many
//! connections for role", the same SQLSTATE 53300 as "too many clients")
//! is reported in the server's own words and as transient, not as a bare
//! pool timeout. The shared server's `max_connections` is never exhausted:
//! each test creates its own role with a `CONNECTION LIMIT` and drops it.

mod common;

use resq_core::backend::QueueStore;
use resq_core::BackendErrorKind;
use resq_postgres::testing;
use sqlx::{Connection, Executor, PgConnection};
use std::time::Duration;

/// A login role limited to `limit` connections, dropped on `drop_role`.
struct LimitedRole {
    admin: PgConnection,
    name: String,
}

impl LimitedRole {
    async fn create(test: &str, limit: u32) -> Option<LimitedRole> {
        let mut admin = match PgConnection::connect(&testing::url()).await {
            Ok(c) => c,
            Err(e) => {
                common::skip(test, &format!("PostgreSQL is unreachable: {e}"));
                return None;
            }
        };
        let name = format!("resq_exh_{}_{}", std::process::id(), rand_suffix());
        admin
            .execute(format!("CREATE ROLE \"{name}\" LOGIN CONNECTION LIMIT {limit}").as_str())
            .await
            .expect("create the test role");
        Some(LimitedRole { admin, name })
    }

    async fn drop_role(mut self) {
        // Close the role's sessions first, or DROP ROLE refuses.
        terminate_sessions(&self.name).await;
        self.admin
            .execute(format!("DROP ROLE IF EXISTS \"{}\"", self.name).as_str())
            .await
            .expect("drop the test role");
    }
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

/// Runs `test` with a role limited to `limit` connections, and drops the
/// role afterwards even when `test` panics.
async fn with_role<F, Fut>(name: &str, limit: u32, test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Some(role) = LimitedRole::create(name, limit).await else {
        return;
    };
    let outcome = tokio::spawn(test(role.name.clone())).await;
    role.drop_role().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The test URL with `role` as the user, plus `params`.
fn role_url(role: &str, params: &str) -> String {
    let mut url = url::Url::parse(&testing::url()).unwrap();
    url.set_username(role).unwrap();
    let sep = if url.query().is_some() { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

/// Closes every session of `role` (from an admin connection).
async fn terminate_sessions(role: &str) {
    let mut admin = PgConnection::connect(&testing::url()).await.unwrap();
    admin
        .execute(
            format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'").as_str(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// With the role's only connection taken, connecting times out in the pool;
/// the error says what the server said and is transient. A backend that
/// was connected before reports the same on its calls.
#[tokio::test]
async fn exhaustion_reports_the_servers_reason() {
    with_role("exhaustion_reports_the_servers_reason", 1, |role| async move {
        let holder = PgConnection::connect(&role_url(&role, "")).await.expect("the one allowed connection");
        let started = std::time::Instant::now();
        let e = resq_postgres::connect(&role_url(&role, "acquire_timeout_ms=2000"))
            .await
            .expect_err("the role has no connection left");
        let text = e.to_string();
        assert_eq!(e.backend_kind(), Some(BackendErrorKind::Transient), "{text}");
        assert!(
            text.contains("too many connections for role"),
            "the server's reason is kept: {text}"
        );
        assert!(std::error::Error::source(&e).is_some(), "{text}");
        assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());

        // A backend connected before the exhaustion: its connection is
        // dropped, and another session takes the slot.
        holder.close().await.unwrap();
        let backend = resq_postgres::connect(&role_url(&role, "acquire_timeout_ms=2000&max_connections=1"))
            .await
            .expect("a connection is free again");
        let _ = backend.queue_len("q").await;
        terminate_sessions(&role).await;
        let _holder = PgConnection::connect(&role_url(&role, "")).await.expect("the slot again");
        let mut last = String::new();
        for _ in 0..3 {
            // The first call may still meet the dropped connection.
            let e = backend.queue_len("q").await.expect_err("no connection for the role");
            assert_eq!(e.backend_kind(), Some(BackendErrorKind::Transient), "{e}");
            last = e.to_string();
        }
        assert!(last.contains("too many connections for role"), "{last}");
    })
    .await;
}
