//! Prometheus metrics for resq. [`Metrics`] counts this process's jobs
//! (outcomes, durations, queue waits, busy and idle slots) as its workers
//! report them, through a synchronous [`resq_core::JobObserver`] or their
//! events, without a backend call on the worker's path; a [`Collector`]
//! reads the cluster-wide state (queue lengths and latencies, delayed and
//! failed jobs, workers, the scheduler leader) through
//! [`resq_admin::Admin::overview`] at most every few seconds into a cache
//! that scrapes only encode; an [`Exporter`] renders both as OpenMetrics
//! text, as an axum [`Router`](axum::Router) to mount in the host's app,
//! and [`serve`] runs a standalone endpoint (`resq metrics --listen ADDR`).
//!
//! ```no_run
//! # async fn demo(backend: std::sync::Arc<dyn resq_core::Backend>, tasks: std::sync::Arc<resq_core::Tasks>)
//! # -> Result<(), resq_metrics::ServeError> {
//! use resq_metrics::{Collector, Exporter, Metrics};
//! let metrics = Metrics::new();
//! let mut config = resq_core::PoolConfig::default();
//! config.worker.observer = Some(metrics.observer());
//! let _pool = resq_core::WorkerPool::new(backend.clone(), tasks, config); // run it as usual
//! let collector = Collector::new(resq_admin::Admin::new(backend));
//! let stop = resq_core::CancellationToken::new();
//! collector.spawn(stop.clone());
//! let exporter = Exporter::builder().metrics(&metrics).collector(&collector).build();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9464").await.expect("bind");
//! exporter.serve_on(listener, async move { stop.cancelled().await }).await
//! # }
//! ```
//!
//! # Why `prometheus-client`
//!
//! It is the Prometheus project's own Rust client: typed metric families
//! keyed by label structs (a label the code does not declare cannot
//! appear), an explicit [`Registry`](prometheus_client::registry::Registry)
//! with no global state (a host can run two exporters, tests do not share
//! counters), OpenMetrics text as its native output, and a `Collector`
//! trait that encodes values computed elsewhere, which is exactly the
//! cached cluster snapshot. The `metrics` facade plus an exporter would
//! add a global recorder, a second crate to keep in step, and an exporter
//! that owns its HTTP listener.
//!
//! # Cardinality
//!
//! Labels are only `queue`, `class`, `outcome` and `state`: never a worker
//! name, a host, a job id or arguments. Queues and classes are the ones
//! the application defines.

#![warn(missing_docs)]

mod cluster;
mod export;
mod process;

pub use cluster::{Collector, DEFAULT_INTERVAL};
pub use export::{serve, Exporter, ExporterBuilder, ServeError, CONTENT_TYPE_OPENMETRICS};
pub use process::{Metrics, DURATION_BUCKETS, QUEUE_WAIT_BUCKETS};
pub use prometheus_client;
pub use resq_core::JobOutcome;
