//! Graceful-shutdown plumbing shared by workers, pools and schedulers.

use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Runs `body` with a token that is cancelled when `shutdown` completes, and
/// returns `body`'s result once it has finished its own graceful stop.
pub(crate) async fn run_with_shutdown<F, B, Fut, T>(shutdown: F, body: B) -> T
where
    F: Future<Output = ()> + Send,
    B: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = T>,
{
    let token = CancellationToken::new();
    let main = body(token.clone());
    tokio::pin!(main);
    tokio::pin!(shutdown);
    let mut fired = false;
    loop {
        tokio::select! {
            out = &mut main => return out,
            _ = &mut shutdown, if !fired => {
                fired = true;
                token.cancel();
            }
        }
    }
}

/// Aborts a spawned task when dropped, so helpers (pingers) never outlive
/// their owner, even when the owner's own task is aborted.
pub(crate) struct AbortOnDrop<T>(pub(crate) JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Exponential back-off between retries of a failing backend call.
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(first: Duration, max: Duration) -> Self {
        let max = max.max(first);
        Backoff {
            first,
            max,
            next: first,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }

    /// Sleeps for the current delay (or until shutdown), then doubles it.
    pub(crate) async fn wait(&mut self, shutdown: &CancellationToken) {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(d) => {}
        }
    }
}
