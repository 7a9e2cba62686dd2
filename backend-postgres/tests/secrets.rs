//! A password in a PostgreSQL URL never shows in errors or `Debug` output.

use resq_postgres::{PostgresBackend, PostgresConfig};
use std::error::Error as _;

const SECRET: &str = "s3cr3t-pw";

fn all_text(e: &resq_core::Error) -> String {
    let mut out = format!("{e}\n{e:?}");
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(&format!("\n{s}\n{s:?}"));
        source = s.source();
    }
    out
}

#[tokio::test]
async fn errors_and_config_debug_hide_the_password() {
    for url in [
        format!("postgres://u:{SECRET}@127.0.0.1/d?max_connections=lots"),
        format!("postgres://u@127.0.0.1/d?password={SECRET}&schema=bad\"name"),
        format!("postgres://u:{SECRET}@[::1/d"),
        format!("postgres://u:{SECRET}@127.0.0.1:1/d?acquire_timeout_ms=500"),
        format!("postgresql://u@127.0.0.1:1/d?password={SECRET}&acquire_timeout_ms=500"),
    ] {
        let e = resq_postgres::connect(&url).await.unwrap_err();
        let text = all_text(&e);
        assert!(!text.contains(SECRET), "{url}: {text}");
        if let Ok(config) = PostgresConfig::from_url(&url) {
            let shown = format!("{config:?}");
            assert!(!shown.contains(SECRET), "{shown}");
            if let Err(e) = PostgresBackend::connect_with(config).await {
                assert!(!all_text(&e).contains(SECRET), "{e:?}");
            }
        }
    }
}
