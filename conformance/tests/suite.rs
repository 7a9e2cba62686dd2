//! The conformance suite run against every backend compiled in. The memory
//! backend always runs. Server backends are added the same way behind their
//! features, with a factory that returns `Err(reason)` when the server is
//! unreachable (the tests then print `SKIP …` and pass, unless
//! `RESQ_REQUIRE_BACKENDS=1`), for example:
//!
//! ```text
//! #[cfg(feature = "redis")]
//! resq_conformance::suite!(redis, || async {
//!     // A fresh, isolated store per call (e.g. a unique key namespace).
//!     my_redis_factory().await.map(|b| b as Arc<dyn resq_core::Backend>)
//! });
//! ```

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

resq_conformance::suite!(memory, || async {
    Ok::<_, String>(Arc::new(resq_memory::MemoryBackend::new()) as Arc<dyn resq_core::Backend>)
});

resq_conformance::suite!(redis, resq_redis::testing::fresh_backend);

// Redis Cluster, single-slot mode: each test's namespace is a hash tag
// (`ops/redis-cluster.sh start` runs the cluster; RESQ_REDIS_CLUSTER_URL).
resq_conformance::suite!(redis_cluster, resq_redis::testing::fresh_cluster_backend);

// Redis Cluster, sharded mode: each test's queues spread over three hash
// tags `{<ns>:0}` … `{<ns>:2}`, one composite backend over them.
resq_conformance::suite!(redis_sharded, resq_redis::testing::fresh_sharded_backend);

resq_conformance::suite!(postgres, resq_postgres::testing::fresh_backend);

/// Every test function in the crate's group modules is listed in `suite!`,
/// so none is silently never run.
#[test]
fn suite_lists_every_test() {
    let missing = resq_conformance::unlisted_tests(memory::TESTS);
    assert!(missing.is_empty(), "tests missing from suite!'s lists: {missing:?}");
    // The scan itself sees every listed test (it is not vacuously empty).
    assert_eq!(resq_conformance::unlisted_tests(&[]).len(), memory::TESTS.len());
}

/// An unreachable backend skips (the test body never runs), or fails when
/// `RESQ_REQUIRE_BACKENDS=1`; the model test follows the same rule.
#[test]
fn unreachable_backend_skips_unless_required() {
    let down = || async { Err::<Arc<dyn resq_core::Backend>, String>("connection refused".into()) };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        resq_conformance::run_backend_test("down::queue::fifo_within_queue", down, |_backend| async {
            panic!("the test body ran without a backend");
        });
    }));
    assert_eq!(outcome.is_err(), resq_conformance::backends_required());
    let model = catch_unwind(AssertUnwindSafe(|| {
        resq_conformance::model::ModelRun::default().check("down::model::state_machine", down)
    }));
    match model {
        Ok(verdict) => {
            assert!(!resq_conformance::backends_required());
            assert_eq!(verdict, resq_conformance::model::ModelVerdict::Skipped);
        }
        Err(_) => assert!(resq_conformance::backends_required()),
    }
}
