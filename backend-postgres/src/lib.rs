//! resq-postgres: resq's PostgreSQL backend (in progress, issue #5).

#![warn(missing_docs)]

/// Test support: fresh, isolated backends for the conformance suite.
pub mod testing {
    use std::sync::Arc;

    /// A fresh backend in a unique schema, or why PostgreSQL is unreachable.
    pub async fn fresh_backend() -> Result<Arc<dyn resq_core::Backend>, String> {
        Err("the PostgreSQL backend is not built yet".to_owned())
    }
}
