//! Wake-ups for idle workers: `LISTEN`/`NOTIFY`.
//!
//! Every path that puts a job on a queue runs `pg_notify(<channel>, <queue>)`
//! in its own transaction, so the notification is delivered exactly when
//! the job becomes visible (and never for a rolled-back push). One listener
//! task per backend holds a dedicated connection that `LISTEN`s on the
//! schema's channel and fans notifications out to waiters through a
//! broadcast channel; it is started by the first [`Notifier::wait`].
//!
//! No wake-up is lost between a worker's empty claim and its wait: a waiter
//! subscribes to the broadcast first, then checks whether its queues hold a
//! job (a push committed before that check is seen by it; one committed
//! after it is notified to the already subscribed waiter). The check is
//! made once the listener is listening: a waiter that arrives before the
//! first `LISTEN` is in force makes it when the listener announces itself.
//! If the listener's connection drops, notifications sent meanwhile are
//! lost, so once it is listening again it wakes every waiter; until then
//! waiters fall back to their timeout (the worker's poll interval).
//!
//! The same connection also listens on the schema's delayed channel, which
//! the schedule statement notifies when it adds an item that falls due
//! before every other: each such notification (and each (re)start of
//! listening, when some may have been lost) bumps a `watch` value that a
//! leading scheduler waits on ([`Notifier::schedule_changes`]).
//! The same connection `LISTEN`s on `<schema>.resq_stop` too, where cancel
//! requests name the worker whose job is to stop; those go to a second
//! fan-out ([`Notifier::subscribe_cancels`]), and after a reconnection it
//! sends `None` there as well: marks written meanwhile must be read.

use crate::PostgresBackend;
use resq_core::{CancelSignal, Result};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How many wake-ups a slow waiter may fall behind before it is simply
/// woken (a lagging waiter returns, which is always allowed).
const CAPACITY: usize = 256;

/// The first and the longest pause between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One wake-up: a queue that got a job, or `None` for "any queue" (after a
/// reconnection, or for a queue name too long for a notification).
type Wake = Option<Arc<str>>;

/// The listener task and its fan-out.
pub(crate) struct Notifier {
    /// Connect options for the listener's own connection.
    options: PgConnectOptions,
    /// The channel to `LISTEN` on.
    channel: String,
    /// The delayed channel, also listened on.
    delayed_channel: String,
    /// Wake-ups to waiters.
    wakes: broadcast::Sender<Wake>,
    /// Bumped for every notification on the delayed channel.
    schedule_changes: watch::Sender<u64>,
    /// The channel cancel requests are notified on.
    cancel_channel: String,
    /// Cancel signals to workers.
    cancels: broadcast::Sender<CancelSignal>,
    /// True while the listener's `LISTEN` is in force.
    live: Arc<AtomicBool>,
    /// The listener task, once started.
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Notifier {
    /// A notifier for `channel`; nothing runs until the first wait.
    pub(crate) fn new(
        options: PgConnectOptions,
        channel: String,
        delayed_channel: String,
        cancel_channel: String,
    ) -> Self {
        let (wakes, _) = broadcast::channel(CAPACITY);
        let (cancels, _) = broadcast::channel(CAPACITY);
        Notifier {
            options,
            channel,
            delayed_channel,
            wakes,
            schedule_changes: watch::channel(0).0,
            cancel_channel,
            cancels,
            live: Arc::new(AtomicBool::new(false)),
            task: Mutex::new(None),
        }
    }

    /// Starts the listener task unless it runs already.
    fn ensure_started(&self) {
        let mut task = match self.task.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        // A listener that died with its runtime left `live` as it was.
        self.live.store(false, Ordering::SeqCst);
        let options = self.options.clone().application_name("resq-listener");
        let listener = listen(
            options,
            Channels {
                jobs: self.channel.clone(),
                delayed: self.delayed_channel.clone(),
                cancel: self.cancel_channel.clone(),
            },
            self.wakes.clone(),
            self.schedule_changes.clone(),
            self.cancels.clone(),
            Arc::clone(&self.live),
        );
        *task = Some(tokio::spawn(listener));
    }

    /// Stops the listener task.
    pub(crate) fn stop(&self) {
        let task = match self.task.lock() {
            Ok(mut t) => t.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(task) = task {
            task.abort();
        }
        self.live.store(false, Ordering::SeqCst);
    }

    /// A receiver of the delayed channel's notifications (see the
    /// [module docs](self)); starts the listener unless it runs.
    pub(crate) fn schedule_changes(&self) -> watch::Receiver<u64> {
        let changes = self.schedule_changes.subscribe();
        self.ensure_started();
        changes
    }

    /// A receiver of cancel signals, starting the listener if needed. The
    /// listener sends `None` once it listens, so a caller that subscribed
    /// before then reads the marks it may have missed.
    pub(crate) fn subscribe_cancels(&self) -> broadcast::Receiver<CancelSignal> {
        let rx = self.cancels.subscribe();
        self.ensure_started();
        rx
    }

    /// Waits until a job may be available in `queues` (`*`: any queue), or
    /// `timeout`; see the [module docs](self).
    pub(crate) async fn wait(&self, backend: &PostgresBackend, queues: &[String], timeout: Duration) -> Result<()> {
        // `None`: a timeout too large to represent, so wait for a wake-up only.
        let deadline = Instant::now().checked_add(timeout);
        if queues.is_empty() {
            sleep_until(deadline).await;
            return Ok(());
        }
        self.ensure_started();
        let mut wakes = self.wakes.subscribe();
        // Look only once the listener is listening: a job pushed after the
        // look is then notified to this (already subscribed) waiter.
        let mut looked = false;
        if self.live.load(Ordering::SeqCst) {
            if backend.any_ready(queues).await? {
                return Ok(());
            }
            looked = true;
        }
        let any = queues.iter().any(|q| q == "*");
        loop {
            let next = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, wakes.recv()).await {
                    Ok(next) => next,
                    Err(_) => return Ok(()),
                },
                None => wakes.recv().await,
            };
            match next {
                Ok(None) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    if looked || !self.live.load(Ordering::SeqCst) {
                        // Wake-ups may have been lost: let the caller look.
                        return Ok(());
                    }
                    // The listener has just started listening: look now.
                    if backend.any_ready(queues).await? {
                        return Ok(());
                    }
                    looked = true;
                }
                Ok(Some(queue)) => {
                    if any || queues.iter().any(|q| **q == *queue) {
                        return Ok(());
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {
                    sleep_until(deadline).await;
                    return Ok(());
                }
            }
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sleeps until `deadline`, or forever for `None`.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending::<()>().await,
    }
}

/// The three channels the listener listens on.
struct Channels {
    /// Jobs pushed: the payload is the queue's name.
    jobs: String,
    /// Delayed items scheduled to fall due before every other.
    delayed: String,
    /// Cancel requests: the payload names the worker.
    cancel: String,
}

/// Bumps the schedule-change value (waking a waiting scheduler).
fn bump(changes: &watch::Sender<u64>) {
    changes.send_modify(|n| *n = n.wrapping_add(1));
}

/// The listener task: keeps a `LISTEN` connection up and forwards every
/// notification, reconnecting with backoff when the connection fails.
async fn listen(
    options: PgConnectOptions,
    channels: Channels,
    wakes: broadcast::Sender<Wake>,
    changes: watch::Sender<u64>,
    cancels: broadcast::Sender<CancelSignal>,
    live: Arc<AtomicBool>,
) {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options);
    let mut backoff = BACKOFF_MIN;
    loop {
        match listen_once(&pool, &channels, &wakes, &changes, &cancels, &live, &mut backoff).await {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(
                    target: "resq::postgres",
                    channel = %channels.jobs,
                    error = %e,
                    "the job-notification listener lost its connection; reconnecting in {backoff:?}"
                );
            }
        }
        live.store(false, Ordering::SeqCst);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection's worth of listening; returns when it fails.
async fn listen_once(
    pool: &sqlx::PgPool,
    channels: &Channels,
    wakes: &broadcast::Sender<Wake>,
    changes: &watch::Sender<u64>,
    cancels: &broadcast::Sender<CancelSignal>,
    live: &AtomicBool,
    backoff: &mut Duration,
) -> std::result::Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener
        .listen_all([
            channels.jobs.as_str(),
            channels.delayed.as_str(),
            channels.cancel.as_str(),
        ])
        .await?;
    live.store(true, Ordering::SeqCst);
    *backoff = BACKOFF_MIN;
    // Anything sent while nobody listened is lost: wake every waiter, and
    // have every worker read its cancel marks.
    let _ = wakes.send(None);
    bump(changes);
    let _ = cancels.send(None);
    loop {
        match listener.try_recv().await? {
            Some(notification) if notification.channel() == channels.delayed => bump(changes),
            Some(notification) => {
                let text = notification.payload();
                let named = if text.is_empty() { None } else { Some(Arc::from(text)) };
                // No receiver is fine: nobody waits right now.
                if notification.channel() == channels.cancel {
                    let _ = cancels.send(named);
                } else {
                    let _ = wakes.send(named);
                }
            }
            None => {
                // The connection dropped and `try_recv` reconnected (and
                // listens again); notifications in between are lost.
                let _ = wakes.send(None);
                bump(changes);
                let _ = cancels.send(None);
            }
        }
    }
}
