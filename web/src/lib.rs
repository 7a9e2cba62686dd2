//! resq-web is an embedded dashboard for resq: server-rendered HTML pages
//! over [`resq_admin::Admin`] (the overview with queue lengths, latencies,
//! a live chart of processed and failed jobs, the leader and the workers;
//! a queue's jobs page by page; the delayed schedule; the failed list with
//! filters, details and retry or removal of one entry, a selection or all
//! that match; the workers; the locks; pause and resume). The CSS and the
//! small script that refreshes pages every 2 s are compiled into the
//! binary: no CDN, no Node toolchain.
//!
//! [`router`] gives an axum [`Router`](axum::Router) that a host app nests
//! under any prefix (links are made from the prefix the request came
//! through; the overview is the prefix itself, `/admin/jobs`, as axum's
//! `nest` routes it); [`serve`] runs it standalone (`resq web --listen
//! ADDR`).
//!
//! # Safety
//!
//! * **Read-only mode** ([`WebConfig::read_only`]): every mutating route
//!   answers 403 on the server, and pages render no forms or buttons.
//! * **CSRF**: every form carries a token derived from a per-process random
//!   secret; a POST without it, or with another, answers 403. A POST whose
//!   `Sec-Fetch-Site` says `cross-site` or `same-site`, or whose `Origin`
//!   names another host than `Host`, answers 403 too (a proxy in front
//!   must pass the browser's `Host` through).
//! * **Stale pages**: actions name failed entries by their stable
//!   [`FailedId`](resq_admin::FailedId) and delayed items by their
//!   [`DelayedRef`](resq_admin::DelayedRef); when the entry moved since the
//!   page was rendered, the action answers 409 and changes nothing.
//! * **Authentication**: mounted in a host app, the host's own middleware
//!   guards the router; standalone, [`Auth`] asks for basic-auth
//!   credentials or a bearer token.
//!
//! ```no_run
//! # async fn demo(backend: std::sync::Arc<dyn resq_core::Backend>) {
//! use axum::middleware::{self, Next};
//! use axum::extract::Request;
//! use axum::http::StatusCode;
//! use axum::response::Response;
//!
//! // The host's own check (a session cookie, an SSO header, ...).
//! async fn only_admins(req: Request, next: Next) -> Result<Response, StatusCode> {
//!     if req.headers().contains_key("x-host-admin") {
//!         Ok(next.run(req).await)
//!     } else {
//!         Err(StatusCode::FORBIDDEN)
//!     }
//! }
//!
//! let admin = resq_admin::Admin::new(backend);
//! let dashboard = resq_web::router(admin, resq_web::WebConfig::default())
//!     .layer(middleware::from_fn(only_admins));
//! let app: axum::Router = axum::Router::new().nest("/admin/jobs", dashboard);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.expect("bind");
//! axum::serve(listener, app).await.expect("serve");
//! # }
//! ```

#![warn(missing_docs)]

mod auth;
mod guard;
mod handlers;
mod html;

pub use auth::Auth;
pub use html::escape;

use resq_admin::Admin;
use std::net::SocketAddr;
use std::sync::Arc;

/// How the dashboard behaves.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// When true, every mutating route answers 403 and pages show no
    /// buttons or forms.
    pub read_only: bool,
    /// The title shown in the page header and the browser tab.
    pub title: String,
    /// The path the browser sees the dashboard under, without a trailing
    /// slash (for example `/admin/jobs`). `None` (the default) works it out
    /// from the prefix axum's `nest` stripped, which is right unless a
    /// proxy in front rewrites paths.
    pub base_path: Option<String>,
    /// How long without a ping makes a worker stale for the "clean stale
    /// workers" action (default 5 minutes).
    pub stale_after: std::time::Duration,
    /// How many rows a listing page shows (default 50, at least 1).
    pub page_size: u64,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            read_only: false,
            title: "resq".to_owned(),
            base_path: None,
            stale_after: std::time::Duration::from_secs(300),
            page_size: 50,
        }
    }
}

impl WebConfig {
    /// The default configuration, read-only.
    pub fn read_only() -> Self {
        WebConfig {
            read_only: true,
            ..WebConfig::default()
        }
    }
}

/// What every handler shares.
pub(crate) struct State {
    pub(crate) admin: Admin,
    pub(crate) config: WebConfig,
    /// The token every form carries (hex).
    pub(crate) csrf: String,
}

/// Why [`serve`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("the dashboard server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// The system's random source failed, so no CSRF secret could be made.
    #[error("cannot make a CSRF secret: {0}")]
    Random(String),
}

/// The dashboard as an axum router, to nest under any prefix of the host's
/// app (or to serve at the root). Mutating routes are POSTs guarded by the
/// read-only switch, the same-origin check and the CSRF token; add the
/// host's authentication as a layer. Fails only when the system's random
/// source does.
pub fn try_router(admin: Admin, config: WebConfig) -> Result<axum::Router, ServeError> {
    let csrf = guard::new_token().map_err(ServeError::Random)?;
    Ok(handlers::routes(Arc::new(State { admin, config, csrf })))
}

/// The dashboard as an axum router; see [`try_router`], which this calls.
/// If the system's random source fails (it does not on supported systems),
/// the CSRF secret falls back to a hash of the time, the process id and
/// the hasher keys the standard library seeds per process, and a warning
/// is logged.
pub fn router(admin: Admin, config: WebConfig) -> axum::Router {
    let csrf = guard::new_token().unwrap_or_else(|e| {
        tracing::warn!(target: "resq::web", error = %e, "no system randomness; using a weaker CSRF secret");
        guard::fallback_token()
    });
    handlers::routes(Arc::new(State { admin, config, csrf }))
}

/// The standalone dashboard (`resq web --listen ADDR`): [`try_router`]
/// behind `auth` at the root of `http://ADDR/`, until `shutdown` is
/// cancelled (graceful: requests under way finish).
pub async fn serve(
    addr: SocketAddr,
    admin: Admin,
    config: WebConfig,
    auth: Auth,
    shutdown: resq_core::CancellationToken,
) -> Result<(), ServeError> {
    let app = auth.protect(try_router(admin, config)?);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    tracing::info!(target: "resq::web", %addr, "serving the dashboard");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(ServeError::Serve)
}
