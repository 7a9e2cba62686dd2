//! A password in a backend URL never shows in an error (its text, its
//! `Debug`, its sources) nor in the `Debug` of a configuration, whichever
//! backend the URL names and whatever goes wrong with it.

use resq::config::TaskServerConfig;
use std::error::Error as _;
use std::time::Duration;

const SECRET: &str = "s3cr3t-pw";

/// Every text an error shows: `Display` and `Debug` of it and its sources.
fn all_text(e: &resq::Error) -> String {
    let mut out = format!("{e}\n{e:?}");
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(&format!("\n{s}\n{s:?}"));
        source = s.source();
    }
    out
}

fn assert_hidden(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} shows the password: {text}");
}

async fn connect_error(url: &str) -> resq::Error {
    match tokio::time::timeout(Duration::from_secs(20), resq::connect(url)).await {
        Ok(Err(e)) => e,
        Ok(Ok(_)) => panic!("{url}: connected"),
        Err(_) => panic!("{url}: no answer within 20 s"),
    }
}

#[tokio::test]
async fn connect_errors_hide_the_password() {
    let urls = [
        // Malformed or unusable URLs.
        format!("redis://:{SECRET}@[::1"),
        format!("redis://user:{SECRET}@127.0.0.1:6379/0?response_timeout_ms=soon"),
        format!("redis://:{SECRET}@"),
        format!("postgres://u:{SECRET}@127.0.0.1/d?max_connections=lots"),
        format!("postgres://u@127.0.0.1/d?password={SECRET}&max_connections=lots"),
        format!("ftp://u:{SECRET}@example.com"),
        format!("memory://u:{SECRET}@/tmp/x?save_interval_ms=never"),
        format!("not a url u:{SECRET}@x"),
        // Well-formed, but nothing listens there.
        format!("redis://:{SECRET}@127.0.0.1:1/0?connection_timeout_ms=500"),
        format!("redis://user:{SECRET}@127.0.0.1:1"),
        format!("postgres://u:{SECRET}@127.0.0.1:1/d?acquire_timeout_ms=500"),
        format!("postgresql://u@127.0.0.1:1/d?password={SECRET}&acquire_timeout_ms=500"),
    ];
    for url in &urls {
        let e = connect_error(url).await;
        assert_hidden(url, &all_text(&e));
    }
}

#[tokio::test]
async fn config_debug_hides_the_password() {
    for backend in [
        format!("redis://:{SECRET}@127.0.0.1:6379"),
        format!("postgres://u:{SECRET}@h/d"),
        format!("postgres://u@h/d?password={SECRET}"),
    ] {
        let config = TaskServerConfig {
            backend: backend.clone(),
            ..TaskServerConfig::default()
        };
        let shown = format!("{config:?}");
        assert_hidden("TaskServerConfig's Debug", &shown);
        assert!(shown.contains("***"), "{shown}");
        let toml = format!("backend = \"{backend}\"");
        let loaded = TaskServerConfig::from_toml_str(&toml).unwrap();
        assert_hidden("a loaded TaskServerConfig's Debug", &format!("{loaded:?}"));
        assert_eq!(loaded.backend, backend, "the URL itself is kept whole");
    }
}

#[tokio::test]
async fn task_server_boot_errors_hide_the_password() {
    let config = TaskServerConfig {
        backend: format!("redis://:{SECRET}@127.0.0.1:1/0?connection_timeout_ms=500"),
        ..TaskServerConfig::default()
    };
    let tasks = std::sync::Arc::new(resq::Tasks::new());
    match resq::task_server(config, tasks).await {
        Err(e) => assert_hidden("task_server", &all_text(&e)),
        Ok(_) => panic!("booted on an unreachable server"),
    }
}
