//! Connections kept out of the pool between the calls of a worker's hot
//! path, so that they skip `sqlx`'s test on release.
//!
//! `sqlx` 0.8 tests every connection that goes back to its pool: the
//! drop of a `PoolConnection` spawns a task that sends a `Sync` and waits
//! for `ReadyForQuery` before the connection is idle again (and closes it
//! when that fails). For a worker whose every job is one call, that is a
//! second round trip per job, a round of work for the server, and a
//! connection that is busy when the worker asks for one again.
//!
//! The calls of the hot path (a worker's claims and completions, its pings,
//! a single push) take a connection from a small stash of [`Held`] ones
//! first, and the pool only when the stash is empty. After a call that
//! succeeded, the connection goes back to the stash without a test: the
//! statement ran to its end (`ReadyForQuery` read), outside any explicit
//! transaction, so it is in the state a tested one would be. After an
//! error, or when the call's future is dropped half-way (a query may be in
//! flight, a transaction open), the connection is never stashed: it is
//! dropped, and the pool's own release (its test, and a close when that
//! fails) deals with it as it deals with every other connection.
//!
//! The stash is bounded so that the pool's other users cannot starve: it
//! holds at most half of `max_connections` (none when the pool has fewer
//! than four), and a connection stashed for longer than the pool's idle
//! timeout is closed when the stash is next used. [`Held::close`] (called by
//! the backend's `close`) empties it for good, before the pool closes.

use sqlx::pool::PoolConnection;
use sqlx::Postgres;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Pools smaller than this stash nothing.
const MIN_POOL_FOR_HOLDING: u32 = 4;

/// A stashed connection and when it was stashed.
type Stashed = (PoolConnection<Postgres>, Instant);

/// The stash's state.
#[derive(Default)]
struct Stash {
    conns: Vec<Stashed>,
    /// Set by [`Held::close`]: nothing is stashed any more.
    closed: bool,
}

/// The stash of connections held out of the pool; see the module docs.
pub(crate) struct Held {
    stash: Mutex<Stash>,
    /// The most connections stashed at once.
    cap: usize,
    /// Stashed connections older than this are closed, not reused
    /// (`None`: never, as the pool's idle timeout).
    idle_timeout: Option<Duration>,
}

impl Held {
    /// A stash for a pool of `max_connections` whose idle connections are
    /// closed after `idle_timeout` (`None`: never).
    pub(crate) fn new(max_connections: u32, idle_timeout: Option<Duration>) -> Self {
        let cap = if max_connections < MIN_POOL_FOR_HOLDING {
            0
        } else {
            usize::try_from(max_connections / 2).unwrap_or(0)
        };
        Held {
            stash: Mutex::new(Stash::default()),
            cap,
            idle_timeout,
        }
    }

    /// The most connections this stash holds at once.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// How many connections are stashed now.
    pub(crate) fn len(&self) -> usize {
        self.lock().conns.len()
    }

    fn lock(&self) -> MutexGuard<'_, Stash> {
        // The stash holds no invariant a panic could break halfway.
        self.stash.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The most recently stashed connection, if one is fresh enough.
    /// Connections stashed longer than the idle timeout are closed.
    pub(crate) fn take(&self) -> Option<PoolConnection<Postgres>> {
        let mut stale = Vec::new();
        let taken = {
            let mut stash = self.lock();
            let idle_timeout = self.idle_timeout;
            // Oldest first: the stale ones are a prefix.
            let keep_from = stash
                .conns
                .iter()
                .position(|(_, at)| idle_timeout.is_none_or(|t| at.elapsed() < t))
                .unwrap_or(stash.conns.len());
            stale.extend(stash.conns.drain(..keep_from));
            stash.conns.pop().map(|(conn, _)| conn)
        };
        // Closed outside the lock (each drop spawns its close).
        for (mut conn, _) in stale {
            conn.close_on_drop();
        }
        taken
    }

    /// Stashes `conn`, after a call on it succeeded; when the stash is full
    /// or closed, the connection goes back to the pool instead.
    fn put(&self, conn: PoolConnection<Postgres>) {
        let mut stash = self.lock();
        if stash.closed || stash.conns.len() >= self.cap {
            drop(stash);
            drop(conn);
            return;
        }
        stash.conns.push((conn, Instant::now()));
    }

    /// Empties the stash and stashes nothing any more: the connections go
    /// back to the pool, so that closing it does not wait for them.
    pub(crate) fn close(&self) {
        let conns = {
            let mut stash = self.lock();
            stash.closed = true;
            std::mem::take(&mut stash.conns)
        };
        drop(conns);
    }

    /// Wraps `conn` (taken from the stash or the pool) for one call.
    pub(crate) fn lend(&self, conn: PoolConnection<Postgres>) -> Lent<'_> {
        Lent {
            held: self,
            conn: Some(conn),
        }
    }
}

/// A connection lent to one call. [`Lent::succeeded`] stashes it again;
/// dropped without that (an error, or the call's future dropped), it goes
/// back to the pool, which tests it.
pub(crate) struct Lent<'a> {
    held: &'a Held,
    /// `None` only after `succeeded` took it.
    conn: Option<PoolConnection<Postgres>>,
}

impl Lent<'_> {
    /// The connection, to run the call on.
    pub(crate) fn conn(&mut self) -> &mut sqlx::PgConnection {
        match self.conn.as_mut() {
            Some(conn) => conn,
            // `succeeded` consumes the `Lent`, so the connection is always
            // here while it can be borrowed.
            None => unreachable!("a lent connection is present until it is returned"),
        }
    }

    /// The call ran to its end without an error: keep the connection for
    /// the next one.
    pub(crate) fn succeeded(mut self) {
        if let Some(conn) = self.conn.take() {
            self.held.put(conn);
        }
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            tracing::trace!(target: "resq::postgres", "a held connection goes back to the pool after an error or a cancelled call");
            drop(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_pools_hold_nothing_and_larger_ones_half() {
        let t = Some(Duration::from_secs(60));
        assert_eq!(Held::new(1, t).cap(), 0);
        assert_eq!(Held::new(3, t).cap(), 0);
        assert_eq!(Held::new(4, t).cap(), 2);
        assert_eq!(Held::new(10, t).cap(), 5);
        assert_eq!(Held::new(11, t).cap(), 5);
    }
}
