//! The [`WorkerPool`]: between `min` and `max` concurrent workers in one
//! process, scaled with the backlog (ActionHero's min/max TaskProcessors).
//!
//! # CPU-bound tasks
//!
//! Workers are tokio tasks. A task that computes for long stretches without
//! awaiting holds a runtime thread and delays everything else on it — other
//! jobs, pings, your server. Run such work with
//! [`tokio::task::spawn_blocking`] (or a rayon pool) inside the task and
//! await the result; keep `max` at or below the number of cores you want to
//! give to jobs. The pool scales on backlog and on how many workers are
//! busy, so blocking work cannot make it spawn without bound: `max` caps it.

use crate::backend::Backend;
use crate::error::Result;
use crate::event::{WorkerEvent, EVENT_CAPACITY};
use crate::shutdown::run_with_shutdown;
use crate::task::Tasks;
use crate::worker::{Worker, WorkerConfig};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A pool's settings.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// The fewest workers kept running (at least 1).
    pub min: usize,
    /// The most workers run at once.
    pub max: usize,
    /// How often the pool decides whether to scale (one step per check).
    pub check_interval: Duration,
    /// The settings every worker gets; `name` is used as a prefix, each
    /// worker's name is `<prefix>+<n>` (by default `host:pid+n`).
    pub worker: WorkerConfig,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            min: 1,
            max: 10,
            check_interval: Duration::from_millis(500),
            worker: WorkerConfig::default(),
        }
    }
}

/// Removes the members that have ended; returns the first permanent backend
/// error one of them ended with (a worker that ended otherwise is simply
/// replaced).
async fn reap(members: &mut Vec<Member>) -> Option<crate::Error> {
    let mut fatal = None;
    let mut i = 0;
    while i < members.len() {
        if !members[i].handle.is_finished() {
            i += 1;
            continue;
        }
        let m = members.remove(i);
        if let Ok(Err(e)) = m.handle.await {
            if e.is_permanent() && fatal.is_none() {
                fatal = Some(e);
            }
        }
    }
    fatal
}

/// A scaling decision, as node-resque's `multiWorkerAction` verbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleAction {
    /// Start one more worker.
    Grow,
    /// Stop the newest worker.
    Shrink,
    /// Do nothing.
    Hold,
}

/// The pool's scaling rule, one step per check: below `min` grow; with a
/// backlog and every worker busy grow up to `max`; with no backlog and
/// fewer than half the workers busy shrink towards `min`.
pub fn decide(workers: usize, busy: usize, backlog: u64, min: usize, max: usize) -> ScaleAction {
    let starved = backlog > 0 && busy >= workers && workers < max;
    if workers < min || starved {
        ScaleAction::Grow
    } else if backlog == 0 && workers > min && busy * 2 < workers {
        ScaleAction::Shrink
    } else {
        ScaleAction::Hold
    }
}

struct Member {
    stop: CancellationToken,
    busy: Arc<AtomicBool>,
    handle: JoinHandle<Result<()>>,
}

/// Runs between `min` and `max` workers, all publishing into one event channel.
pub struct WorkerPool {
    backend: Arc<dyn Backend>,
    tasks: Arc<Tasks>,
    config: PoolConfig,
    events: broadcast::Sender<WorkerEvent>,
    size: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool").field("config", &self.config).finish()
    }
}

impl WorkerPool {
    /// A pool over `backend` running `tasks`.
    pub fn new(backend: Arc<dyn Backend>, tasks: Arc<Tasks>, mut config: PoolConfig) -> Self {
        config.min = config.min.max(1);
        config.max = config.max.max(config.min);
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        WorkerPool {
            backend,
            tasks,
            config,
            events,
            size: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        }
    }

    /// A receiver of every worker's events (each names its worker).
    pub fn subscribe(&self) -> broadcast::Receiver<WorkerEvent> {
        self.events.subscribe()
    }

    /// The number of workers running now.
    pub fn size(&self) -> usize {
        self.size.load(Ordering::Acquire)
    }

    /// Runs until `shutdown` completes, then stops every worker gracefully.
    pub async fn run<F>(&self, shutdown: F) -> Result<()>
    where
        F: Future<Output = ()> + Send,
    {
        run_with_shutdown(shutdown, |token| self.run_until(token)).await
    }

    /// Like [`WorkerPool::run`], driven by a cancellation token.
    ///
    /// A worker that stops on a permanent backend error (see
    /// [`crate::Error::is_permanent`]) stops the pool: the other workers stop
    /// gracefully and this returns that error.
    pub async fn run_until(&self, shutdown: CancellationToken) -> Result<()> {
        let mut members: Vec<Member> = Vec::new();
        // Workers told to stop by a shrink, finishing their last job.
        let mut retiring: Vec<Member> = Vec::new();
        let mut queues_of_interest = self.config.worker.queues.clone();
        let wildcard = queues_of_interest.is_empty() || queues_of_interest.iter().any(|q| q == "*");
        let mut tick = tokio::time::interval(self.config.check_interval.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A permanent backend error one worker stopped with stops the pool.
        let mut fatal = None;
        while !shutdown.is_cancelled() {
            // Reap workers that ended on their own (they only do on error).
            if let Some(e) = reap(&mut members).await.or(reap(&mut retiring).await) {
                fatal = Some(e);
                break;
            }
            let busy = members.iter().filter(|m| m.busy.load(Ordering::Acquire)).count();
            if wildcard {
                if let Ok(q) = self.backend.queues().await {
                    queues_of_interest = q;
                }
            }
            let backlog = self.backlog(&queues_of_interest).await;
            match decide(members.len(), busy, backlog, self.config.min, self.config.max) {
                ScaleAction::Grow => members.push(self.spawn_member()),
                ScaleAction::Shrink => {
                    if let Some(m) = members.pop() {
                        // It finishes its job on its own; scaling does not wait for it.
                        m.stop.cancel();
                        retiring.push(m);
                    }
                }
                ScaleAction::Hold => {}
            }
            self.size.store(members.len(), Ordering::Release);
            tracing::trace!(target: "resq::worker", workers = members.len(), busy, backlog, "pool check");
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tick.tick() => {}
            }
        }
        for m in &members {
            m.stop.cancel();
        }
        let mut first_err = None;
        for m in members.into_iter().chain(retiring) {
            match m.handle.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(join) => {
                    first_err.get_or_insert(crate::Error::transient(format!("a pool worker crashed: {join}")));
                }
            }
        }
        self.size.store(0, Ordering::Release);
        match fatal.or(first_err) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn backlog(&self, queues: &[String]) -> u64 {
        let mut total = 0u64;
        for q in queues {
            if let Ok(n) = self.backend.queue_len(q).await {
                total = total.saturating_add(n);
            }
        }
        total
    }

    fn spawn_member(&self) -> Member {
        let mut config = self.config.worker.clone();
        config.name = Some(match &self.config.worker.name {
            Some(prefix) => format!(
                "{prefix}+{}",
                crate::worker::unique_name().rsplit('+').next().unwrap_or("0")
            ),
            None => crate::worker::unique_name(),
        });
        let worker = Worker::with_events(
            Arc::clone(&self.backend),
            Arc::clone(&self.tasks),
            config,
            self.events.clone(),
        );
        let busy = worker.busy_flag();
        let stop = CancellationToken::new();
        let handle = tokio::spawn(worker.run_until(stop.clone()));
        Member { stop, busy, handle }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_rule() {
        assert_eq!(decide(0, 0, 0, 1, 5), ScaleAction::Grow);
        assert_eq!(decide(1, 1, 10, 1, 5), ScaleAction::Grow);
        assert_eq!(decide(5, 5, 10, 1, 5), ScaleAction::Hold);
        assert_eq!(decide(2, 1, 10, 1, 5), ScaleAction::Hold);
        assert_eq!(decide(3, 0, 0, 1, 5), ScaleAction::Shrink);
        assert_eq!(decide(1, 0, 0, 1, 5), ScaleAction::Hold);
    }
}
