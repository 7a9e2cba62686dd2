//! The backend's shared connection: one self-reconnecting connection to a
//! single server, or a Redis Cluster connection.
//!
//! On a cluster (single-slot mode) every key of a namespace holds the
//! namespace's hash tag, so all of them live in one slot. Every command and
//! pipeline, keyless ones included (`SCAN`, `PUBLISH`, scripts, `MULTI`),
//! is sent to the primary that owns that slot; redis-rs follows `MOVED`
//! and `ASK` redirects and refreshes its slot map after a failover.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// A handle on the backend's connection; cheap to clone.
#[derive(Clone)]
pub(crate) enum Conn {
    /// A single server.
    Single(ConnectionManager),
    /// A Redis Cluster, with the slot every command is routed to.
    Cluster {
        /// The cluster connection (it keeps one connection per node).
        conn: ClusterConnection,
        /// The primary of the slot of the namespace's hash tag.
        route: Route,
    },
}

impl Conn {
    /// A cluster connection whose commands go to the primary owning the
    /// slot of `key` (any key of the namespace: they share one slot).
    pub(crate) fn cluster(conn: ClusterConnection, key: &str) -> Self {
        Conn::Cluster {
            conn,
            route: Route::with_key(key, SlotAddr::Master),
        }
    }
}

/// How many times a transaction refused because its slot moved is sent
/// again (after 100, 200, … 800 ms: a failover takes a few seconds; longer
/// waits are left to the caller's own retries).
const REDIRECT_RETRIES: u32 = 4;

/// Whether `e` is a `MULTI`/`EXEC` transaction the server discarded because
/// its commands were redirected (`MOVED`, `ASK`) or the cluster was down:
/// none of its commands ran. redis-rs follows redirects of single commands
/// and of plain pipelines itself, not of transactions.
fn is_redirected_transaction(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    if e.kind() != ErrorKind::Server(ServerErrorKind::ExecAbort) {
        return false;
    }
    let text = e.to_string();
    [
        "Moved",
        "Ask",
        "TryAgain",
        "ClusterDown",
        "MOVED",
        "ASK",
        "TRYAGAIN",
        "CLUSTERDOWN",
    ]
    .iter()
    .any(|c| text.contains(c))
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster { conn, route } => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(*route));
                Box::pin(conn.route_command(cmd.clone(), routing))
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster { conn, route } => Box::pin(async move {
                let mut attempt = 0u32;
                loop {
                    let routing = SingleNodeRoutingInfo::SpecificNode(*route);
                    match conn.route_pipeline(pipeline.clone(), offset, count, routing).await {
                        Err(e) if attempt < REDIRECT_RETRIES && is_redirected_transaction(&e) => {
                            // Nothing of the transaction ran: it may be
                            // sent again, once redis-rs has learnt where
                            // the slot went.
                            attempt += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                        }
                        other => return other,
                    }
                }
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster { .. } => 0,
        }
    }
}
