//! resq's benchmarks. `benches/hot_paths.rs` holds the criterion
//! micro-benchmarks of payload encoding and the memory backend's enqueue,
//! claim and complete; the `load` binary (`src/bin/load.rs`) is the
//! end-to-end harness whose figures `BENCHMARKS.md` reports, measured with
//! [`measure`] and printed by [`report`]; the `rearm` binary times one
//! periodic-task re-arm with many jobs queued ([`rearm`]); the `dashboard`
//! binary times resq-web's pages over a large Redis namespace
//! ([`dashboard`]); the `per_job` binary compares the per-job figures with
//! node-resque, BullMQ and graphile-worker in interleaved rounds
//! ([`per_job`]), and with `--count` counts round trips, statements and
//! commands per job on the wire ([`round_trips`]); [`flow`] times rate limits and concurrency caps
//! (`load --flow-rate`, `--flow-cap`), [`timeouts`] job timeouts and
//! cancellation (`load --timeouts`).

pub mod dashboard;
pub mod flow;
pub mod measure;
pub mod metrics_cost;
pub mod per_job;
pub mod rearm;
pub mod report;
pub mod round_trips;
pub mod shards;
pub mod timeouts;

/// The crate version of the engine being benchmarked, so the harness can print it.
pub fn engine_version() -> &'static str {
    resq_core::VERSION
}
