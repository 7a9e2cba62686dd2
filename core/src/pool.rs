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
//! And like node-resque's MultiWorker it adds no worker while the runtime
//! lags: when a timer of its own fired more than
//! [`PoolConfig::max_event_loop_delay`] late since its last check (a thread
//! held by blocking work), it holds instead of growing (`min` is still
//! kept).

use crate::backend::Backend;
use crate::error::Result;
use crate::event::{emit, emit_with, WorkerEvent, EVENT_CAPACITY};
use crate::shutdown::{run_with_shutdown, AbortOnDrop};
use crate::task::Tasks;
use crate::worker::{Worker, WorkerConfig};
use futures_util::FutureExt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// The runtime counts as lagging when a timer of the pool (its check,
    /// or a probe that sleeps a fifth of `check_interval`, at most 50 ms)
    /// fired later than this within the last two checks (node-resque's
    /// `maxEventLoopDelay`, ActionHero's default 5 ms); a lagging pool
    /// starts no worker beyond `min`.
    pub max_event_loop_delay: Duration,
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
            max_event_loop_delay: Duration::from_millis(5),
            worker: WorkerConfig::default(),
        }
    }
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
    name: String,
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

    /// The pool's settings (its workers' included).
    pub fn config(&self) -> &PoolConfig {
        &self.config
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
    ///
    /// Like every run method (`Worker`, `Scheduler`, `TaskServer`), it
    /// borrows, so [`WorkerPool::size`] and [`WorkerPool::subscribe`] work
    /// while it runs. Dropping the future stops the pool too: each worker
    /// is told to stop as at shutdown and does so gracefully on its own
    /// task (it gives its in-flight job `shutdown_timeout`, then
    /// unregisters), but nothing waits for them. The graceful path that
    /// waits is `shutdown`.
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
        // Every worker's stop token is a child of this one, cancelled when
        // this future ends or is dropped.
        let all = CancellationToken::new();
        let _stop_all_on_drop = all.clone().drop_guard();
        let mut members: Vec<Member> = Vec::new();
        // Workers told to stop by a shrink, finishing their last job.
        let mut retiring: Vec<Member> = Vec::new();
        let mut queues_of_interest = self.config.worker.queues.clone();
        let wildcard = queues_of_interest.is_empty() || queues_of_interest.iter().any(|q| q == "*");
        let mut tick = tokio::time::interval(self.config.check_interval.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // How late the check timer fired last time, and the probe's
        // latest lateness since the last check: the runtime's lag.
        let mut lag = Duration::ZERO;
        let mut lagged_at: Option<tokio::time::Instant> = None;
        let probe_lag = Arc::new(AtomicU64::new(0));
        let _probe = AbortOnDrop(tokio::spawn(probe(
            (self.config.check_interval / 5).clamp(Duration::from_millis(1), Duration::from_millis(50)),
            Arc::clone(&probe_lag),
        )));
        // A permanent backend error one worker stopped with stops the pool.
        let mut fatal = None;
        while !shutdown.is_cancelled() {
            // Reap workers that ended on their own (they only do on error).
            let ended_on = self.reap(&mut members, false);
            if let Some(e) = ended_on.or(self.reap(&mut retiring, true)) {
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
            let mut action = decide(members.len(), busy, backlog, self.config.min, self.config.max);
            lag = lag.max(Duration::from_micros(probe_lag.swap(0, Ordering::AcqRel)));
            // A lag counts for two check intervals: a check that happens to
            // fall between two stretches of blocking work still holds.
            if lag > self.config.max_event_loop_delay {
                lagged_at = Some(tokio::time::Instant::now());
            }
            let lagging = lagged_at.is_some_and(|t| t.elapsed() < self.config.check_interval * 2);
            if lagging && action == ScaleAction::Grow && members.len() >= self.config.min {
                action = ScaleAction::Hold;
                tracing::debug!(target: "resq::worker", workers = members.len(), busy, backlog,
                    ?lag, "pool holds: the runtime lags");
            }
            match action {
                ScaleAction::Grow => members.push(self.spawn_member(&all)),
                ScaleAction::Shrink => {
                    if let Some(m) = members.pop() {
                        // It finishes its job on its own; scaling does not wait for it.
                        m.stop.cancel();
                        retiring.push(m);
                    }
                }
                ScaleAction::Hold => {}
            }
            if action != ScaleAction::Hold || lagging {
                emit_with(&self.events, || WorkerEvent::PoolAction {
                    action,
                    workers: members.len(),
                    event_loop_delay: lag,
                    lagging,
                });
            }
            self.size.store(members.len(), Ordering::Release);
            tracing::trace!(target: "resq::worker", workers = members.len(), busy, backlog, ?lag, "pool check");
            let waiting_since = tokio::time::Instant::now();
            tokio::select! {
                _ = shutdown.cancelled() => {}
                due = tick.tick() => {
                    // A tick already due when the wait began measures the
                    // check's own time, not the runtime's lag.
                    lag = tokio::time::Instant::now().saturating_duration_since(due.max(waiting_since));
                }
            }
        }
        all.cancel();
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

    /// Drops the members whose tasks have ended, logging (and publishing
    /// as an `error` event) each that ended abnormally: with an error, a
    /// panic, or, unless it was `retiring`, at all. Returns the first
    /// permanent backend error a member ended with (not reported again: the
    /// worker reported it).
    fn reap(&self, members: &mut Vec<Member>, retiring: bool) -> Option<crate::Error> {
        let mut fatal = None;
        members.retain_mut(|m| {
            if !m.handle.is_finished() {
                return true;
            }
            let why = match (&mut m.handle).now_or_never() {
                Some(Ok(Ok(()))) if retiring => None,
                Some(Ok(Ok(()))) => Some("ended without being told to stop".to_owned()),
                // The worker reported its permanent error itself, once: the
                // pool stops on it without a second report.
                Some(Ok(Err(e))) if e.is_permanent() => {
                    fatal.get_or_insert(e);
                    None
                }
                Some(Ok(Err(e))) => Some(format!("ended abnormally with an error: {e}")),
                Some(Err(join)) => Some(format!("ended abnormally: {join}")),
                // `is_finished` said it had ended; keep it until it has.
                None => return true,
            };
            if let Some(why) = why {
                tracing::error!(target: "resq::worker", worker = %m.name, "pool worker {why}");
                emit(
                    &self.events,
                    WorkerEvent::Error {
                        worker: m.name.clone(),
                        error: format!("the worker's task {why}"),
                    },
                );
            }
            false
        });
        fatal
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

    fn spawn_member(&self, all: &CancellationToken) -> Member {
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
        let name = worker.name().to_owned();
        let stop = all.child_token();
        let token = stop.clone();
        let handle = tokio::spawn(async move { worker.run_until(token).await });
        Member {
            name,
            stop,
            busy,
            handle,
        }
    }
}

/// Sleeps `interval` again and again, keeping in `late` (µs) the most any
/// sleep overran since the pool last took it: how long the runtime could
/// not poll this task (node-resque's event-loop delay probe).
async fn probe(interval: Duration, late: Arc<AtomicU64>) {
    loop {
        let start = tokio::time::Instant::now();
        tokio::time::sleep(interval).await;
        let over = start.elapsed().saturating_sub(interval);
        late.fetch_max(u64::try_from(over.as_micros()).unwrap_or(u64::MAX), Ordering::AcqRel);
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
