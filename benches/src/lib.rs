//! Benchmarks for resq. For now this crate only builds: the criterion
//! micro-benchmarks and the end-to-end load harness come with their own issue,
//! and `BENCHMARKS.md` will hold their figures and the commands that give them.

/// The crate version of the engine being benchmarked, so the harness can print it.
pub fn engine_version() -> &'static str {
    resq_core::VERSION
}
