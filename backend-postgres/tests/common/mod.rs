//! Shared by this crate's PostgreSQL tests: getting a backend, or skipping
//! (printing why) when the server is unreachable, unless
//! `RESQ_REQUIRE_BACKENDS=1`, which makes that a failure.

#![allow(dead_code)]

use resq_postgres::{testing, PostgresBackend};
use std::sync::Arc;

/// True when `RESQ_REQUIRE_BACKENDS=1`.
pub fn required() -> bool {
    std::env::var("RESQ_REQUIRE_BACKENDS").is_ok_and(|v| v.trim() == "1")
}

/// Skips (prints `SKIP`) or fails, as the conformance suite does.
pub fn skip(test: &str, reason: &str) {
    assert!(
        !required(),
        "{test}: PostgreSQL unavailable and RESQ_REQUIRE_BACKENDS=1: {reason}"
    );
    eprintln!("SKIP {test}: {reason}");
}

/// A fresh, migrated, empty backend, or `None` after skipping.
pub async fn backend(test: &str) -> Option<Arc<PostgresBackend>> {
    match testing::fresh_postgres().await {
        Ok(b) => Some(b),
        Err(reason) => {
            skip(test, &reason);
            None
        }
    }
}

/// A backend on a new, never-migrated schema (drop it with
/// `testing::drop_test_schema`), or `None` after skipping.
pub async fn unmigrated(test: &str) -> Option<Arc<PostgresBackend>> {
    let config = match testing::config(&testing::unique_schema()) {
        Ok(c) => c,
        Err(reason) => {
            skip(test, &reason);
            return None;
        }
    };
    match PostgresBackend::connect_with(config).await {
        Ok(b) => Some(b),
        Err(e) => {
            skip(test, &format!("PostgreSQL is unreachable: {e}"));
            None
        }
    }
}
