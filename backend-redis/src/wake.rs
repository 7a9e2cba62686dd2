//! Low-latency wake-ups for idle workers.
//!
//! resq producers publish the queue name on `<ns>:resq:wakeup` in the same
//! transaction or script that pushes a job. Each backend keeps one
//! subscriber on its own dedicated connection (never the shared
//! multiplexed one), opened when a worker first waits or listens for
//! cancels, and fans the names out to waiting workers. Jobs pushed
//! by other clients (node-resque, Ruby) publish nothing; workers still find
//! them at their next poll.
//!
//! The same subscriber connection also listens on `<ns>:resq:cancel`, where
//! [`resq_core::CancelStore::request_cancel`] publishes the member of the
//! worker whose job is to stop; those go to a second fan-out, read by
//! workers through [`resq_core::CancelStore::cancel_signals`].

use futures_util::StreamExt;
use resq_core::CancelSignal;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// The name sent to waiters after a reconnect: anything may have been missed.
pub(crate) const ANY: &str = "*";

/// The fan-out of wake-up messages to waiting workers.
///
/// The subscriber connection is opened on first use (the first waiting
/// worker or cancel listener), not at connect: a process that only
/// enqueues holds no subscription, so the `PUBLISH` of each of its pushes
/// is not sent back to itself.
pub(crate) struct Wakeups {
    tx: broadcast::Sender<Arc<str>>,
    cancels: broadcast::Sender<CancelSignal>,
    /// Whether the subscription is in place now.
    subscribed: watch::Sender<bool>,
    listener: Listener,
    task: OnceLock<JoinHandle<()>>,
}

/// Where and what the subscriber task listens to.
#[derive(Clone)]
struct Listener {
    clients: Vec<redis::Client>,
    channel: String,
    cancel_channel: String,
}

impl Wakeups {
    /// The fan-out for `channel` (wake-ups) and `cancel_channel`, read
    /// through the next of `clients` after each disconnect (the nodes of
    /// a cluster, where every node sees every message; one client for a
    /// single server). Nothing is opened until the first subscriber.
    pub(crate) fn new(clients: Vec<redis::Client>, channel: String, cancel_channel: String) -> Self {
        let (tx, _) = broadcast::channel(1024);
        let (cancels, _) = broadcast::channel(256);
        let (subscribed, _) = watch::channel(false);
        Wakeups {
            tx,
            cancels,
            subscribed,
            listener: Listener {
                clients,
                channel,
                cancel_channel,
            },
            task: OnceLock::new(),
        }
    }

    /// Starts the subscriber task unless it runs already. It reconnects
    /// with back-off for as long as the backend lives.
    fn ensure_started(&self) {
        self.task.get_or_init(|| {
            let listener = self.listener.clone();
            let sender = self.tx.clone();
            let cancel_sender = self.cancels.clone();
            let subscribed = self.subscribed.clone();
            tokio::spawn(async move {
                let mut delay = Duration::from_millis(50);
                let mut next = 0usize;
                loop {
                    let Some(client) = listener.clients.get(next % listener.clients.len().max(1)) else {
                        return;
                    };
                    next = next.wrapping_add(1);
                    match listen(client, &listener, &sender, &cancel_sender, &subscribed).await {
                        Ok(()) => delay = Duration::from_millis(50),
                        Err(e) => {
                            tracing::debug!(target: "resq::redis", error = %e, "wake-up subscriber disconnected");
                        }
                    }
                    subscribed.send_replace(false);
                    // Whatever was published while we were away is lost: wake everyone.
                    let _ = sender.send(Arc::from(ANY));
                    let _ = cancel_sender.send(None);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            })
        });
    }

    /// A receiver of cancel signals (worker members; `None` after a
    /// (re)subscription, when some may have been missed).
    pub(crate) fn subscribe_cancels(&self) -> broadcast::Receiver<CancelSignal> {
        let rx = self.cancels.subscribe();
        self.ensure_started();
        rx
    }

    /// A receiver of queue names.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        let rx = self.tx.subscribe();
        self.ensure_started();
        rx
    }

    /// Waits until the subscription is in place, for at most `within`;
    /// returns whether it is. A message published after this returned
    /// `true` reaches every receiver taken before.
    pub(crate) async fn subscribed(&self, within: Duration) -> bool {
        let mut state = self.subscribed.subscribe();
        if *state.borrow_and_update() {
            return true;
        }
        let reached = tokio::time::timeout(within, state.wait_for(|s| *s)).await;
        matches!(reached, Ok(Ok(_)))
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

async fn listen(
    client: &redis::Client,
    listener: &Listener,
    tx: &broadcast::Sender<Arc<str>>,
    cancels: &broadcast::Sender<CancelSignal>,
    subscribed: &watch::Sender<bool>,
) -> redis::RedisResult<()> {
    let (channel, cancel_channel) = (listener.channel.as_str(), listener.cancel_channel.as_str());
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(&[channel, cancel_channel]).await?;
    subscribed.send_replace(true);
    // Subscribed (again): marks set before (or while away) must be read.
    let _ = cancels.send(None);
    let mut messages = pubsub.on_message();
    while let Some(msg) = messages.next().await {
        let payload: String = msg.get_payload().unwrap_or_default();
        if msg.get_channel_name() == cancel_channel {
            let signal = if payload.is_empty() {
                None
            } else {
                Some(Arc::from(payload.as_str()))
            };
            let _ = cancels.send(signal);
        } else {
            let _ = tx.send(Arc::from(payload.as_str()));
        }
    }
    Ok(())
}
