//! Low-latency wake-ups for idle workers.
//!
//! resq producers publish the queue name on `<ns>:resq:wakeup` in the same
//! transaction or script that pushes a job. Each backend keeps one
//! subscriber on its own dedicated connection (never the shared
//! multiplexed one) and fans the names out to waiting workers. Jobs pushed
//! by other clients (node-resque, Ruby) publish nothing; workers still find
//! them at their next poll.
//!
//! The same subscriber connection also listens on `<ns>:resq:cancel`, where
//! [`resq_core::CancelStore::request_cancel`] publishes the member of the
//! worker whose job is to stop; those go to a second fan-out, read by
//! workers through [`resq_core::CancelStore::cancel_signals`].

use futures_util::StreamExt;
use resq_core::CancelSignal;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// The name sent to waiters after a reconnect: anything may have been missed.
pub(crate) const ANY: &str = "*";

/// The fan-out of wake-up messages to waiting workers.
pub(crate) struct Wakeups {
    tx: broadcast::Sender<Arc<str>>,
    cancels: broadcast::Sender<CancelSignal>,
    task: JoinHandle<()>,
}

impl Wakeups {
    /// Starts the subscriber task. It reconnects with back-off for as long
    /// as the backend lives, to the next of `clients` each time (the nodes
    /// of a cluster, where every node sees every message; one client for a
    /// single server).
    pub(crate) fn start(clients: Vec<redis::Client>, channel: String, cancel_channel: String) -> Self {
        let (tx, _) = broadcast::channel(1024);
        let (cancels, _) = broadcast::channel(256);
        let sender = tx.clone();
        let cancel_sender = cancels.clone();
        let task = tokio::spawn(async move {
            let mut delay = Duration::from_millis(50);
            let mut next = 0usize;
            loop {
                let Some(client) = clients.get(next % clients.len().max(1)) else {
                    return;
                };
                next = next.wrapping_add(1);
                match listen(client, &channel, &cancel_channel, &sender, &cancel_sender).await {
                    Ok(()) => delay = Duration::from_millis(50),
                    Err(e) => {
                        tracing::debug!(target: "resq::redis", error = %e, "wake-up subscriber disconnected");
                    }
                }
                // Whatever was published while we were away is lost: wake everyone.
                let _ = sender.send(Arc::from(ANY));
                let _ = cancel_sender.send(None);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        });
        Wakeups { tx, cancels, task }
    }

    /// A receiver of cancel signals (worker members; `None` after a
    /// reconnect, when some may have been missed).
    pub(crate) fn subscribe_cancels(&self) -> broadcast::Receiver<CancelSignal> {
        self.cancels.subscribe()
    }

    /// A receiver of queue names.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.tx.subscribe()
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn listen(
    client: &redis::Client,
    channel: &str,
    cancel_channel: &str,
    tx: &broadcast::Sender<Arc<str>>,
    cancels: &broadcast::Sender<CancelSignal>,
) -> redis::RedisResult<()> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(&[channel, cancel_channel]).await?;
    // Subscribed again after a disconnect: marks set meanwhile must be read.
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
