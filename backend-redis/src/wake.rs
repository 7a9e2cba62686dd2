//! Low-latency wake-ups for idle workers.
//!
//! resq producers publish the queue name on `<ns>:resq:wakeup` in the same
//! transaction or script that pushes a job. Each backend keeps one
//! subscriber on its own dedicated connection (never the shared
//! multiplexed one) and fans the names out to waiting workers. Jobs pushed
//! by other clients (node-resque, Ruby) publish nothing; workers still find
//! them at their next poll.

use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// The name sent to waiters after a reconnect: anything may have been missed.
pub(crate) const ANY: &str = "*";

/// The fan-out of wake-up messages to waiting workers.
pub(crate) struct Wakeups {
    tx: broadcast::Sender<Arc<str>>,
    task: JoinHandle<()>,
}

impl Wakeups {
    /// Starts the subscriber task. It reconnects with back-off for as long
    /// as the backend lives.
    pub(crate) fn start(client: redis::Client, channel: String) -> Self {
        let (tx, _) = broadcast::channel(1024);
        let sender = tx.clone();
        let task = tokio::spawn(async move {
            let mut delay = Duration::from_millis(50);
            loop {
                match listen(&client, &channel, &sender).await {
                    Ok(()) => delay = Duration::from_millis(50),
                    Err(e) => {
                        tracing::debug!(target: "resq::redis", error = %e, "wake-up subscriber disconnected");
                    }
                }
                // Whatever was published while we were away is lost: wake everyone.
                let _ = sender.send(Arc::from(ANY));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        });
        Wakeups { tx, task }
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

async fn listen(client: &redis::Client, channel: &str, tx: &broadcast::Sender<Arc<str>>) -> redis::RedisResult<()> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    let mut messages = pubsub.on_message();
    while let Some(msg) = messages.next().await {
        let queue: String = msg.get_payload().unwrap_or_default();
        let _ = tx.send(Arc::from(queue.as_str()));
    }
    Ok(())
}
