//! Wake-ups for idle workers: a `Notify` that pushes signal, and a waiter
//! count so that pushes skip the signal when nobody waits.

use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;

/// Tells waiting workers that a job may have arrived.
///
/// A waiter registers (the count goes up) and arms a `Notified` *before* it
/// checks the queues under the state lock; a pusher reads the count *after*
/// it releases that lock. The lock orders the two, so either the waiter sees
/// the job or the pusher sees the waiter and signals it: no wake-up is lost.
#[derive(Debug, Default)]
pub(crate) struct Wakeup {
    notify: Notify,
    waiters: AtomicUsize,
}

impl Wakeup {
    /// Wakes every current waiter, if there is any. Call it after the state
    /// lock is released.
    pub(crate) fn wake(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// Registers a waiter until the returned guard is dropped.
    pub(crate) fn register(&self) -> Waiter<'_> {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        Waiter { wakeup: self }
    }
}

/// A registered waiter; see [`Wakeup::register`].
pub(crate) struct Waiter<'a> {
    wakeup: &'a Wakeup,
}

impl Waiter<'_> {
    /// The notification to arm before checking the queues.
    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.wakeup.notify.notified()
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.wakeup.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}
