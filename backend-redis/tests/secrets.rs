//! A password in a Redis URL never shows in errors or `Debug` output.

use resq_redis::{RedisBackend, RedisConfig};
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

#[test]
fn invalid_urls_and_config_debug_hide_the_password() {
    for url in [
        format!("redis://:{SECRET}@[::1"),
        format!("redis://u:{SECRET}@h?response_timeout_ms=soon"),
        format!("http://u:{SECRET}@h"),
        format!("redis://:{SECRET}@"),
    ] {
        let e = RedisConfig::from_url(&url).unwrap_err();
        let text = all_text(&e);
        assert!(!text.contains(SECRET), "{text}");
    }
    let config = RedisConfig::from_url(&format!("redis://user:{SECRET}@127.0.0.1:6379/0?namespace=x")).unwrap();
    assert!(config.url.contains(SECRET), "the URL itself is kept for connecting");
    let shown = format!("{config:?}");
    assert!(!shown.contains(SECRET) && shown.contains("user:***@"), "{shown}");
}

#[tokio::test]
async fn connect_errors_hide_the_password() {
    for url in [
        format!("redis://:{SECRET}@127.0.0.1:1/0?connection_timeout_ms=500"),
        format!("redis://user:{SECRET}@127.0.0.1:1"),
    ] {
        let config = RedisConfig::from_url(&url).unwrap();
        let e = RedisBackend::connect(config).await.unwrap_err();
        let text = all_text(&e);
        assert!(!text.contains(SECRET), "{text}");
        let e = resq_redis::connect(&url).await.unwrap_err();
        assert!(!all_text(&e).contains(SECRET));
    }
}
