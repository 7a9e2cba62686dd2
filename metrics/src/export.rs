//! The scrape endpoint: text rendering, an axum router, a standalone server.

use crate::cluster::Collector;
use crate::process::Metrics;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use resq_admin::Admin;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// The content type of [`Exporter::render`]'s text: OpenMetrics 1.0, which
/// Prometheus negotiates and reads (it ends with `# EOF`).
pub const CONTENT_TYPE_OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
    #[error("the metrics server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// What a scrape shows: per-process [`Metrics`], cluster-wide gauges from
/// a [`Collector`], or both, in one registry.
///
/// ```
/// # async fn demo(backend: std::sync::Arc<dyn resq_core::Backend>) {
/// use resq_metrics::{Collector, Exporter, Metrics};
/// let metrics = Metrics::new();
/// let collector = Collector::new(resq_admin::Admin::new(backend));
/// let exporter = Exporter::builder().metrics(&metrics).collector(&collector).build();
/// // Mount it in the host's axum app, or render it yourself:
/// let app: axum::Router = exporter.router();
/// let text: String = exporter.render();
/// # }
/// ```
#[derive(Clone)]
pub struct Exporter {
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

/// Builds an [`Exporter`].
#[derive(Debug, Default)]
pub struct ExporterBuilder {
    registry: Registry,
}

impl ExporterBuilder {
    /// Adds the per-process metrics.
    pub fn metrics(mut self, metrics: &Metrics) -> Self {
        metrics.register(&mut self.registry);
        self
    }

    /// Adds the cluster-wide gauges (start the collector's refresh with
    /// [`Collector::spawn`]).
    pub fn collector(mut self, collector: &Collector) -> Self {
        collector.register(&mut self.registry);
        self
    }

    /// Lets the host add metrics of its own to the same registry.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The exporter.
    pub fn build(self) -> Exporter {
        Exporter {
            registry: Arc::new(self.registry),
        }
    }
}

impl Exporter {
    /// An empty builder.
    pub fn builder() -> ExporterBuilder {
        ExporterBuilder::default()
    }

    /// The scrape text (OpenMetrics, [`CONTENT_TYPE_OPENMETRICS`]). It only
    /// encodes in-memory values: no backend call.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing to a String fails only if an encoder reports an error.
            tracing::error!(target: "resq::metrics", error = %e, "encoding the metrics failed");
        }
        out
    }

    /// A router answering `GET /metrics` with [`render`](Self::render)'s
    /// text; merge or nest it in the host's app.
    pub fn router(&self) -> axum::Router {
        let exporter = self.clone();
        axum::Router::new().route(
            "/metrics",
            get(move || {
                let exporter = exporter.clone();
                async move { ([(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)], exporter.render()).into_response() }
            }),
        )
    }

    /// Serves [`router`](Self::router) on `listener` until `shutdown`
    /// completes (graceful: requests under way finish).
    pub async fn serve_on(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ServeError::Serve)
    }
}

/// The standalone metrics server (`resq metrics --listen ADDR`): cluster
/// gauges of `admin`'s backend, refreshed every
/// [`crate::DEFAULT_INTERVAL`], on `GET http://ADDR/metrics`, until
/// `shutdown` is cancelled. A process that runs no worker has no
/// per-process metrics; a worker process mounts an [`Exporter`] with its
/// [`Metrics`] instead.
pub async fn serve(addr: SocketAddr, admin: Admin, shutdown: resq_core::CancellationToken) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let collector = Collector::new(admin);
    let exporter = Exporter::builder().collector(&collector).build();
    let refresh = collector.spawn(shutdown.child_token());
    tracing::info!(target: "resq::metrics", %addr, "serving metrics on /metrics");
    let stop = shutdown.clone();
    let served = exporter.serve_on(listener, async move { stop.cancelled().await }).await;
    shutdown.cancel();
    refresh.abort();
    served
}
