//! What the dashboard's test files share: the three backends' factories and
//! a macro that defines one `#[test]` per backend.

use resq_core::Backend;
use std::future::Future;
use std::sync::Arc;

/// A backend being connected to; `Err(reason)` when its server is down.
pub type Connecting = std::pin::Pin<Box<dyn Future<Output = Result<Arc<dyn Backend>, String>> + Send>>;

/// Makes a fresh, isolated backend (its own namespace or schema).
pub type Factory = fn() -> Connecting;

fn memory() -> Connecting {
    Box::pin(async { Ok(Arc::new(resq_memory::MemoryBackend::new()) as Arc<dyn Backend>) })
}

fn redis() -> Connecting {
    Box::pin(resq_redis::testing::fresh_backend())
}

fn postgres() -> Connecting {
    Box::pin(resq_postgres::testing::fresh_backend())
}

/// A three-shard namespace on the Redis Cluster (`ops/redis-cluster.sh
/// start`): the dashboard reads the union of the shards.
fn redis_sharded() -> Connecting {
    Box::pin(resq_redis::testing::fresh_sharded_backend())
}

/// Every backend, by the index `per_backend!` passes to `run`.
pub const BACKENDS: [(&str, Factory); 4] = [
    ("memory", memory),
    ("redis", redis),
    ("postgres", postgres),
    ("redis_sharded", redis_sharded),
];

/// Defines one `#[test]` per backend: `<name>::memory`, `::redis`,
/// `::postgres`, `::redis_sharded`, each calling the test file's own
/// `run(index into BACKENDS, name, $body)`.
macro_rules! per_backend {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;
            #[test]
            fn memory() {
                run(0, stringify!($name), $body);
            }
            #[test]
            fn redis() {
                run(1, stringify!($name), $body);
            }
            #[test]
            fn postgres() {
                run(2, stringify!($name), $body);
            }
            #[test]
            fn redis_sharded() {
                run(3, stringify!($name), $body);
            }
        }
    };
}
