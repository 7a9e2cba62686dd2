//! resq's benchmarks. `benches/hot_paths.rs` holds the criterion
//! micro-benchmarks of payload encoding and the memory backend's enqueue,
//! claim and complete; the `load` binary (`src/bin/load.rs`) is the
//! end-to-end harness whose figures `BENCHMARKS.md` reports, measured with
//! [`measure`] and printed by [`report`]; the `rearm` binary times one
//! periodic-task re-arm with many jobs queued ([`rearm`]); [`flow`] holds
//! the flow-control timings (`load --flow`).

pub mod flow;
pub mod measure;
pub mod metrics_cost;
pub mod rearm;
pub mod report;

/// The crate version of the engine being benchmarked, so the harness can print it.
pub fn engine_version() -> &'static str {
    resq_core::VERSION
}
