//! The [`Scheduler`]: elects one leader among many schedulers, and the
//! leader promotes due delayed jobs and recovers the jobs of dead workers.

use crate::backend::{Backend, Orphan, Promotion};
use crate::error::{Error, Result};
use crate::event::{emit, SchedulerEvent, EVENT_CAPACITY};
use crate::shutdown::{run_with_shutdown, Backoff};
use crate::task::Tasks;
use crate::time::{delayed_bucket_of_ms, now_ms};
use crate::worker::unique_name;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// How long a stopping scheduler tries to release leadership.
const RELEASE_BUDGET: Duration = Duration::from_secs(10);

/// How long the leader waits before trying again to promote an item that
/// is due but that its last promotion round did not move (another
/// promoter held it, say).
const STALLED_RETRY: Duration = Duration::from_millis(5);

/// The time from now until `at_ms` (Unix ms); zero when it has passed.
fn until_ms(at_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(at_ms.saturating_sub(now_ms())).unwrap_or(0))
}

/// The next change of `watch`; never ready without one.
async fn changed(watch: &mut Option<tokio::sync::watch::Receiver<u64>>) -> std::result::Result<(), ()> {
    match watch.as_mut() {
        Some(w) => w.changed().await.map_err(|_| ()),
        None => std::future::pending().await,
    }
}

/// What happens to the job of a worker that stopped pinging.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StuckJobPolicy {
    /// Put it back at the head of its queue, to run again (the default).
    #[default]
    Requeue,
    /// Move it to the failed list as `Worker Timeout (killed manually)`.
    Fail,
}

/// How many worker ping intervals a stuck-worker timeout must span at least.
/// A live worker's ping can be up to one interval old (more under load), so
/// a timeout below a few intervals cleans live workers as dead, and their
/// jobs run twice. [`Scheduler::new`], [`crate::TaskServer::new`] and
/// [`crate::config::TaskServerConfig::validate`] refuse such a timeout.
pub const MIN_STUCK_TIMEOUT_PINGS: u32 = 3;

/// The default stuck-worker timeout, of schedulers and task servers alike:
/// a minute, twelve times the default ping interval (5 s).
pub const DEFAULT_STUCK_WORKER_TIMEOUT: Duration = Duration::from_secs(60);

/// The default leader-lock TTL. The leader renews the lock every third of
/// it, whatever its polls are doing, and a follower tries to take it as
/// often, so a leader that dies without releasing is replaced within
/// 4/3 of it (8 s). A shorter TTL fails over faster, but a leader whose
/// renewals cannot reach the backend for a whole TTL loses the lock (two
/// schedulers may then both act as leader for a moment; promotions, cron
/// fires and worker clean-ups are each atomic, so nothing runs twice).
pub const DEFAULT_LEADER_TTL: Duration = Duration::from_secs(6);

/// Checks that `stuck` spans at least [`MIN_STUCK_TIMEOUT_PINGS`] worker
/// pings of `ping`; the error explains why it must.
pub(crate) fn check_stuck_worker_timeout(stuck: Duration, ping: Duration) -> Result<()> {
    let least = ping.saturating_mul(MIN_STUCK_TIMEOUT_PINGS);
    if stuck < least {
        return Err(Error::InvalidArgument(format!(
            "the stuck-worker timeout ({stuck:?}) must be at least {MIN_STUCK_TIMEOUT_PINGS} times the \
             workers' ping interval ({ping:?}), that is at least {least:?}: live workers ping only \
             every {ping:?}, so a shorter timeout would clean them as dead and run their jobs twice"
        )));
    }
    Ok(())
}

/// A scheduler's settings.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// The scheduler's name, stored as the leader lock's value; `None`
    /// picks a unique `host:pid+n`.
    pub name: Option<String>,
    /// How often the leader polls for dead workers, cron occurrences and
    /// due jobs. Between polls it wakes for the earliest due time it knows
    /// of, and on backends that signal new earliest items (memory,
    /// PostgreSQL) when one is scheduled; on Redis a job scheduled after a
    /// poll is seen at the next poll.
    pub poll_interval: Duration,
    /// The leader lock's TTL (default [`DEFAULT_LEADER_TTL`], 6 s). While
    /// [`Scheduler::run`] runs, the lock is renewed every third of the TTL
    /// beside the polls (a long poll does not delay it), and a follower
    /// tries to take it as often: a leader that dies without releasing is
    /// replaced within about 4/3 of the TTL. At least 30 ms.
    pub leader_ttl: Duration,
    /// A worker whose last ping is older than this is dead; `None` disables
    /// the check. It must be at least [`MIN_STUCK_TIMEOUT_PINGS`] times
    /// `worker_ping_interval`. Default [`DEFAULT_STUCK_WORKER_TIMEOUT`] (60 s).
    pub stuck_worker_timeout: Option<Duration>,
    /// How often the workers this scheduler watches refresh their pings
    /// (their [`WorkerConfig::ping_interval`](crate::WorkerConfig::ping_interval),
    /// 5 s by default), used to refuse a `stuck_worker_timeout` that would
    /// take live workers for dead.
    pub worker_ping_interval: Duration,
    /// What to do with a dead worker's job.
    pub stuck_job_policy: StuckJobPolicy,
    /// How many delayed items one backend call promotes.
    pub promote_batch: usize,
    /// How far back a new leader looks for cron occurrences that came due
    /// while no leader was firing. Occurrences older than this are skipped;
    /// it must exceed the longest gap after a leader dies (about 4/3 of
    /// `leader_ttl`, see [`Scheduler::failover_bound`]) for a leader change
    /// never to skip a fire.
    pub cron_catch_up: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            name: None,
            poll_interval: Duration::from_secs(5),
            leader_ttl: DEFAULT_LEADER_TTL,
            stuck_worker_timeout: Some(DEFAULT_STUCK_WORKER_TIMEOUT),
            worker_ping_interval: crate::worker::DEFAULT_PING_INTERVAL,
            stuck_job_policy: StuckJobPolicy::Requeue,
            promote_batch: 100,
            cron_catch_up: Duration::from_secs(300),
        }
    }
}

/// The shortest leader TTL accepted (its renewal period is a third of it).
const MIN_LEADER_TTL: Duration = Duration::from_millis(30);

/// What one [`Scheduler::poll`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Whether this scheduler led during the poll.
    pub leader: bool,
    /// Delayed jobs moved to their queues.
    pub promoted: usize,
    /// Delayed items that could not be promoted and went to the failed list.
    pub promotion_failures: usize,
    /// Dead workers cleaned.
    pub cleaned_workers: usize,
    /// The bucket (Unix secs) of the earliest delayed item still
    /// scheduled, if any.
    pub next_due: Option<i64>,
    /// When the earliest delayed item still scheduled falls due (Unix ms,
    /// [`DelayedStore::next_due_ms`](crate::DelayedStore::next_due_ms)), if any.
    pub next_due_ms: Option<i64>,
    /// Cron occurrences this poll enqueued.
    pub cron_fired: usize,
    /// The next cron occurrence of any task (Unix ms), if any.
    pub next_cron_ms: Option<i64>,
}

/// Promotes delayed jobs and cleans up after dead workers, as the leader of
/// all the schedulers sharing a backend.
///
/// ```
/// # async fn demo(backend: std::sync::Arc<dyn resq_core::Backend>) -> resq_core::Result<()> {
/// use resq_core::{Scheduler, SchedulerConfig};
///
/// let scheduler = Scheduler::new(backend, SchedulerConfig::default())?;
/// let report = scheduler.poll().await?; // one round, as `run` does every poll_interval
/// assert!(report.leader); // alone, it leads
/// # Ok(()) }
/// ```
pub struct Scheduler {
    backend: Arc<dyn Backend>,
    tasks: Option<Arc<Tasks>>,
    config: SchedulerConfig,
    name: String,
    leading: AtomicBool,
    events: broadcast::Sender<SchedulerEvent>,
    /// When a poll of this scheduler last failed with a transient backend
    /// error (the store unreachable, as far as it can tell): no stuck-worker
    /// check runs until a whole `stuck_worker_timeout` has passed since.
    last_store_failure: std::sync::Mutex<Option<std::time::Instant>>,
    /// When this scheduler last took or renewed the leader lock (the start
    /// of that call), while it holds it.
    confirmed: std::sync::Mutex<Option<std::time::Instant>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").field("name", &self.name).finish()
    }
}

impl Scheduler {
    /// A scheduler over `backend`. Fails with [`Error::InvalidArgument`]
    /// if `leader_ttl` is under 30 ms, if `stuck_worker_timeout` is under
    /// [`MIN_STUCK_TIMEOUT_PINGS`] times `worker_ping_interval`, or if
    /// `promote_batch` or `cron_catch_up` is zero.
    pub fn new(backend: Arc<dyn Backend>, config: SchedulerConfig) -> Result<Self> {
        if config.leader_ttl < MIN_LEADER_TTL {
            return Err(Error::InvalidArgument(format!(
                "leader_ttl ({:?}) must be at least {MIN_LEADER_TTL:?}",
                config.leader_ttl
            )));
        }
        if let Some(stuck) = config.stuck_worker_timeout {
            check_stuck_worker_timeout(stuck, config.worker_ping_interval)?;
        }
        if config.promote_batch == 0 {
            return Err(Error::InvalidArgument("promote_batch must be at least 1".into()));
        }
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let name = config.name.clone().unwrap_or_else(unique_name);
        if config.cron_catch_up.is_zero() {
            return Err(Error::InvalidArgument("cron_catch_up must be positive".into()));
        }
        Ok(Scheduler {
            backend,
            tasks: None,
            config,
            name,
            leading: AtomicBool::new(false),
            last_store_failure: std::sync::Mutex::new(None),
            confirmed: std::sync::Mutex::new(None),
            events,
        })
    }

    /// Gives the scheduler the task definitions, so that as leader it fires
    /// their cron schedules (see [`crate::cron`]).
    pub fn with_tasks(mut self, tasks: Arc<Tasks>) -> Self {
        self.tasks = Some(tasks);
        self
    }

    /// The scheduler's settings.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The scheduler's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this scheduler led at its last poll.
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    /// A receiver of this scheduler's events.
    pub fn subscribe(&self) -> broadcast::Receiver<SchedulerEvent> {
        self.events.subscribe()
    }

    /// Polls until `shutdown` completes, then releases leadership. Beside
    /// the polls it takes or renews the leader lock every
    /// [`Scheduler::renew_interval`] (a third of `leader_ttl`), so a long
    /// poll never lets the lock lapse and a follower takes a lapsed lock
    /// within [`Scheduler::failover_bound`].
    pub async fn run<F>(&self, shutdown: F) -> Result<()>
    where
        F: Future<Output = ()> + Send,
    {
        run_with_shutdown(shutdown, |token| self.run_until(token)).await
    }

    /// Like [`Scheduler::run`], driven by a cancellation token.
    ///
    /// A poll that fails with a transient backend error (or a value that
    /// does not decode) is logged at WARN and retried with backoff. A
    /// permanent backend error, such as refused credentials or a missing
    /// schema (see [`Error::is_permanent`]), is logged once at ERROR and
    /// stops the scheduler, which releases leadership if it can and returns
    /// the error.
    pub async fn run_until(&self, shutdown: CancellationToken) -> Result<()> {
        tracing::info!(target: "resq::scheduler", scheduler = %self.name, "start");
        emit(
            &self.events,
            SchedulerEvent::Start {
                scheduler: self.name.clone(),
            },
        );
        // Leadership is kept beside the polls: a poll that takes long (a
        // backlog to promote, many dead workers, a slow backend) does not
        // delay the renewal, and a follower does not wait a whole poll
        // interval to take a lock that lapsed.
        let stop_keeping = CancellationToken::new();
        let became_leader = tokio::sync::Notify::new();
        let polling = async {
            let fatal = self.poll_loop(&shutdown, &became_leader).await;
            stop_keeping.cancel();
            fatal
        };
        let keeping = self.keep_leadership(&stop_keeping, &became_leader);
        let (fatal, kept_cleanly) = tokio::join!(polling, keeping);
        // The keeper has stopped, so no renewal can follow the release.
        // Bounded as a worker's unregistration is: the lock expires by itself.
        let released = if !kept_cleanly {
            Err(Error::transient(format!(
                "a leader-lock renewal was still waiting for the backend {RELEASE_BUDGET:?} after the stop: leadership passes on when the leader lock expires"
            )))
        } else {
            match tokio::time::timeout(RELEASE_BUDGET, self.release()).await {
                Ok(r) => r,
                Err(_) => Err(Error::transient(format!(
                    "could not release leadership within {RELEASE_BUDGET:?}: it passes on when the leader lock expires"
                ))),
            }
        };
        tracing::info!(target: "resq::scheduler", scheduler = %self.name, "end");
        emit(
            &self.events,
            SchedulerEvent::End {
                scheduler: self.name.clone(),
            },
        );
        match fatal {
            Some(e) => Err(e),
            None => released.map(|_| ()),
        }
    }

    /// Polls until `shutdown` or a permanent error, which it returns.
    ///
    /// Between two polls the leader also wakes for the earliest delayed
    /// item's due time ([`DelayedStore::next_due_ms`](crate::DelayedStore::next_due_ms))
    /// and, on a backend that signals it ([`DelayedStore::schedule_watch`](crate::DelayedStore::schedule_watch)),
    /// when an item is scheduled to fall due earlier than it knew of; it then
    /// promotes what is due without the rest of a poll (cron, clean-up).
    async fn poll_loop(&self, shutdown: &CancellationToken, became_leader: &tokio::sync::Notify) -> Option<Error> {
        let mut backoff = Backoff::new(Duration::from_millis(100), self.config.poll_interval);
        let mut watch = match self.backend.schedule_watch().await {
            Ok(w) => w,
            Err(e) if e.is_permanent() => {
                tracing::error!(target: "resq::scheduler", scheduler = %self.name, error = %e, "permanent error: the scheduler stops");
                self.emit_error(&e);
                return Some(e);
            }
            Err(e) => {
                // Polling still promotes everything, only less promptly.
                self.error(&e);
                None
            }
        };
        'polls: while !shutdown.is_cancelled() {
            // Seen before the poll reads the schedule: a change after the
            // read wakes the wait below.
            if let Some(w) = watch.as_mut() {
                w.borrow_and_update();
            }
            // A shutdown does not wait for a poll stuck on a backend without
            // a free connection: every step of a poll is atomic on its own
            // (a promotion, a cron fire with its marker, a clean-up), so one
            // abandoned half-way leaves nothing half-done.
            let polled = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                r = self.poll() => r,
            };
            let report = match polled {
                Ok(report) => {
                    backoff.reset();
                    report
                }
                Err(e) if e.is_permanent() => {
                    // Retrying cannot help: stop as a shutdown would, and return it.
                    tracing::error!(target: "resq::scheduler", scheduler = %self.name, error = %e, "permanent error: the scheduler stops");
                    self.emit_error(&e);
                    return Some(e);
                }
                Err(e) => {
                    self.error(&e);
                    backoff.wait(shutdown).await;
                    continue;
                }
            };
            let next_poll = tokio::time::Instant::now() + self.next_wait(&report);
            let leader = report.leader;
            let mut next_due = report.next_due_ms;
            // Whether the last promotion round left a due item behind (one
            // that another promoter holds, say): then wait a little before
            // trying again rather than spin.
            let mut stalled = false;
            loop {
                let mut wait = next_poll.saturating_duration_since(tokio::time::Instant::now());
                if leader {
                    if let Some(due) = next_due {
                        let until = until_ms(due);
                        wait = wait.min(if stalled { until.max(STALLED_RETRY) } else { until });
                    }
                }
                let watching = leader && watch.is_some();
                tokio::select! {
                    _ = shutdown.cancelled() => break 'polls,
                    _ = tokio::time::sleep(wait) => {}
                    // A follower that just took the lock works at once.
                    _ = became_leader.notified() => continue 'polls,
                    changed = changed(&mut watch), if watching => {
                        if changed.is_err() {
                            // The backend dropped its signal: poll as before.
                            watch = None;
                        }
                    }
                }
                if tokio::time::Instant::now() >= next_poll {
                    continue 'polls;
                }
                if let Some(w) = watch.as_mut() {
                    w.borrow_and_update();
                }
                // Like a poll, a promotion round does not hold up a
                // shutdown: each item moves atomically on its own.
                let promoted = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break 'polls,
                    r = self.promote_round(next_due) => r,
                };
                match promoted {
                    Ok(Some((due, moved))) => {
                        next_due = due;
                        stalled = moved == 0 && due.is_some_and(|d| d <= now_ms());
                    }
                    // No longer the leader: the next poll tells.
                    Ok(None) => continue 'polls,
                    Err(e) if e.is_permanent() => {
                        tracing::error!(target: "resq::scheduler", scheduler = %self.name, error = %e, "permanent error: the scheduler stops");
                        self.emit_error(&e);
                        return Some(e);
                    }
                    Err(e) => {
                        self.error(&e);
                        backoff.wait(shutdown).await;
                        continue 'polls;
                    }
                }
            }
        }
        None
    }

    /// Between polls: reads the next due time unless `known` is already
    /// due, and when something is due, makes sure this scheduler still
    /// leads and promotes it. Returns the next due time and how many items
    /// it moved, or `None` when this scheduler no longer leads.
    async fn promote_round(&self, known: Option<i64>) -> Result<Option<(Option<i64>, usize)>> {
        let due_now = |d: Option<i64>| d.is_some_and(|d| d <= now_ms());
        let mut next = known;
        if !due_now(next) {
            next = self.backend.next_due_ms().await?;
            if !due_now(next) {
                return Ok(Some((next, 0)));
            }
        }
        // The lock is renewed every third of its TTL beside the polls; ask
        // again only when that renewal is not recent.
        if !self.surely_leads() {
            let leads = self.acquire().await?;
            self.set_leading(leads);
            if !leads {
                return Ok(None);
            }
        }
        let mut report = PollReport {
            leader: true,
            ..PollReport::default()
        };
        self.promote(&mut report).await?;
        if !report.leader {
            return Ok(None);
        }
        let moved = report.promoted + report.promotion_failures;
        Ok(Some((self.backend.next_due_ms().await?, moved)))
    }

    /// How often leadership is renewed (or, by a follower, tried): a third
    /// of the leader TTL, so two renewals in a row may fail before the lock
    /// lapses.
    pub fn renew_interval(&self) -> Duration {
        self.config.leader_ttl / 3
    }

    /// The longest a leader that died without releasing stays unreplaced
    /// while this scheduler runs: its lock's TTL plus one renewal interval,
    /// plus the time the take-over call itself takes.
    pub fn failover_bound(&self) -> Duration {
        self.config.leader_ttl + self.renew_interval()
    }

    /// Takes or renews the leader lock every [`Scheduler::renew_interval`]
    /// until `stop`. A call in flight at the stop is given `RELEASE_BUDGET`
    /// to finish, so that no renewal lands after the release that follows;
    /// one still waiting then (on a backend without a free connection, say)
    /// is dropped, and `false` is returned: the caller must then not
    /// release (the dropped renewal could still reach the server after the
    /// release), and leadership passes on when the lock expires. Errors are
    /// left to the polls, which see them too and report them.
    async fn keep_leadership(&self, stop: &CancellationToken, became_leader: &tokio::sync::Notify) -> bool {
        let every = self.renew_interval();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return true,
                _ = tokio::time::sleep(every) => {}
            }
            let renewal = self.acquire();
            tokio::pin!(renewal);
            let renewed = tokio::select! {
                r = &mut renewal => r,
                _ = stop.cancelled() => match tokio::time::timeout(RELEASE_BUDGET, &mut renewal).await {
                    Ok(r) => r,
                    Err(_) => return false,
                },
            };
            match renewed {
                Ok(leads) => {
                    let was = self.is_leader();
                    self.set_leading(leads);
                    if leads && !was {
                        became_leader.notify_one();
                    }
                }
                Err(e) => {
                    tracing::debug!(target: "resq::scheduler", scheduler = %self.name, error = %e, "leader lock renewal failed");
                }
            }
        }
    }

    /// How long until the next poll: the poll interval, or less when the
    /// leader knows of a cron occurrence that falls due sooner. (Delayed
    /// items are promoted between polls, at their due times.)
    fn next_wait(&self, report: &PollReport) -> Duration {
        let poll = self.config.poll_interval;
        if !report.leader {
            return poll;
        }
        match report.next_cron_ms {
            Some(at) => poll.min(until_ms(at)),
            None => poll,
        }
    }

    /// Gives up leadership, if held. Returns whether it was held.
    pub async fn release(&self) -> Result<bool> {
        let was = self.backend.release_leader(&self.name).await?;
        self.set_leading(false);
        Ok(was)
    }

    /// Takes or renews the leader lock, noting when it was confirmed.
    async fn acquire(&self) -> Result<bool> {
        let asked = std::time::Instant::now();
        let leads = self.backend.acquire_leader(&self.name, self.config.leader_ttl).await?;
        *self.confirmed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = leads.then_some(asked);
        Ok(leads)
    }

    /// Whether this scheduler certainly still holds the leader lock: it took
    /// or renewed it less than a third of its TTL ago (measured from before
    /// the call), so nobody else can have taken it since.
    fn surely_leads(&self) -> bool {
        let confirmed = *self.confirmed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.is_leader() && confirmed.is_some_and(|at| at.elapsed() < self.renew_interval())
    }

    fn set_leading(&self, now: bool) {
        let before = self.leading.swap(now, Ordering::AcqRel);
        if now && !before {
            tracing::info!(target: "resq::scheduler", scheduler = %self.name, "leader");
            emit(
                &self.events,
                SchedulerEvent::Leader {
                    scheduler: self.name.clone(),
                },
            );
        } else if !now && before {
            tracing::info!(target: "resq::scheduler", scheduler = %self.name, "follower");
            emit(
                &self.events,
                SchedulerEvent::Follower {
                    scheduler: self.name.clone(),
                },
            );
        }
    }

    fn error(&self, e: &Error) {
        tracing::warn!(target: "resq::scheduler", scheduler = %self.name, error = %e, "error");
        self.emit_error(e);
    }

    fn emit_error(&self, e: &Error) {
        emit(
            &self.events,
            SchedulerEvent::Error {
                scheduler: self.name.clone(),
                error: e.to_string(),
            },
        );
    }

    /// One round: take or renew leadership; as leader, promote every due
    /// delayed job and clean up dead workers. A follower does nothing else.
    pub async fn poll(&self) -> Result<PollReport> {
        let polled = self.poll_once().await;
        if let Err(e) = &polled {
            if e.is_transient() {
                *self
                    .last_store_failure
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(std::time::Instant::now());
            }
        }
        polled
    }

    async fn poll_once(&self) -> Result<PollReport> {
        let leader = self.acquire().await?;
        self.set_leading(leader);
        let mut report = PollReport {
            leader,
            ..PollReport::default()
        };
        if !leader {
            return Ok(report);
        }
        emit(
            &self.events,
            SchedulerEvent::Poll {
                scheduler: self.name.clone(),
            },
        );
        self.promote(&mut report).await?;
        self.fire_cron(&mut report).await?;
        self.clean_stuck_workers(&mut report).await?;
        report.next_due_ms = self.backend.next_due_ms().await?;
        report.next_due = report.next_due_ms.map(delayed_bucket_of_ms);
        Ok(report)
    }

    /// Fires every cron occurrence that is due and not yet fired. Each
    /// occurrence is pushed with [`crate::QueueStore::push_once`] under the
    /// marker `resq:cron:<task>:<ms>`, so it is enqueued exactly once however
    /// many leaders (an old one that has not noticed it lost the lock, and
    /// the new one) try. The cursor `resq:cron:<task>` keeps the last
    /// occurrence handled, so that a new leader resumes from it and fires
    /// what came due in between (up to `cron_catch_up` back). A task seen for
    /// the first time starts from now: nothing before its first deployment fires.
    async fn fire_cron(&self, report: &mut PollReport) -> Result<()> {
        let Some(tasks) = &self.tasks else { return Ok(()) };
        let catch_up = i64::try_from(self.config.cron_catch_up.as_millis()).unwrap_or(i64::MAX);
        let marker_ttl = self.config.cron_catch_up + Duration::from_secs(3600);
        let cursor_ttl = Duration::from_secs(30 * 24 * 3600);
        for def in tasks.definitions() {
            let Some(cron) = def.cron_schedule() else { continue };
            let now = now_ms();
            let cursor_key = format!("resq:cron:{}", def.name());
            let cursor = self
                .backend
                .get_lock(&cursor_key)
                .await?
                .and_then(|e| e.value.trim().parse::<i64>().ok());
            if let Some(from) = cursor {
                let from = from.max(now.saturating_sub(catch_up));
                for at in cron.occurrences(from, now, 10_000) {
                    let payload = crate::job::encode_payload(
                        def.default_queue(),
                        def.name(),
                        &[serde_json::json!({ "cron_at": at })],
                    );
                    let marker = format!("resq:cron:{}:{at}", def.name());
                    if self
                        .backend
                        .push_once(def.default_queue(), &payload, &marker, &self.name, marker_ttl)
                        .await?
                    {
                        report.cron_fired += 1;
                        tracing::info!(target: "resq::scheduler", scheduler = %self.name, task = def.name(), at_ms = at, "cron fired");
                        emit(
                            &self.events,
                            SchedulerEvent::CronFired {
                                scheduler: self.name.clone(),
                                task: def.name().to_owned(),
                                at_ms: at,
                            },
                        );
                    }
                }
            }
            // Everything up to `now` is handled: fired here or by another leader.
            self.backend.set_lock(&cursor_key, &now.to_string(), cursor_ttl).await?;
            if let Some(next) = cron.next_after(now) {
                report.next_cron_ms = Some(report.next_cron_ms.map_or(next, |n| n.min(next)));
            }
        }
        Ok(())
    }

    async fn promote(&self, report: &mut PollReport) -> Result<()> {
        loop {
            let moved = self.backend.promote_due_ms(now_ms(), self.config.promote_batch).await?;
            let n = moved.len();
            for p in moved {
                match p {
                    Promotion::Moved {
                        timestamp,
                        queue,
                        payload,
                    } => {
                        report.promoted += 1;
                        tracing::debug!(target: "resq::scheduler", scheduler = %self.name, timestamp, %queue, "transferred job");
                        emit(
                            &self.events,
                            SchedulerEvent::TransferredJob {
                                scheduler: self.name.clone(),
                                timestamp,
                                queue,
                                payload,
                            },
                        );
                    }
                    Promotion::Failed {
                        timestamp,
                        payload,
                        reason,
                    } => {
                        report.promotion_failures += 1;
                        tracing::warn!(target: "resq::scheduler", scheduler = %self.name, timestamp, %reason, "delayed job cannot be promoted; moved to the failed list");
                        emit(
                            &self.events,
                            SchedulerEvent::PromotionFailed {
                                scheduler: self.name.clone(),
                                timestamp,
                                payload,
                                reason,
                            },
                        );
                    }
                }
            }
            if n < self.config.promote_batch {
                return Ok(());
            }
            // A long backlog: make sure we still lead before the next batch.
            let still = self.acquire().await?;
            self.set_leading(still);
            if !still {
                report.leader = false;
                return Ok(());
            }
        }
    }

    /// Cleans every worker whose ping is older than the stuck-worker
    /// timeout. A worker that cannot be cleaned for a reason other than a
    /// transient backend error is logged (WARN) and skipped; the others are
    /// still cleaned.
    async fn clean_stuck_workers(&self, report: &mut PollReport) -> Result<()> {
        let Some(timeout) = self.config.stuck_worker_timeout else {
            return Ok(());
        };
        // Pings that went missing while this scheduler could not reach the
        // store prove nothing: the workers most likely could not reach it
        // either. Only judge once the store has been reachable for a whole
        // timeout, so that every live worker has had one to ping again.
        let failed_at = *self
            .last_store_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(at) = failed_at {
            if at.elapsed() < timeout {
                tracing::debug!(target: "resq::scheduler", scheduler = %self.name, since = ?at.elapsed(),
                    "stuck-worker check held: this scheduler could not reach the store within the last stuck_worker_timeout");
                return Ok(());
            }
        }
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let now = now_ms();
        for worker in self.backend.stale_workers(now.saturating_sub(timeout_ms)).await? {
            let orphan = match self.config.stuck_job_policy {
                StuckJobPolicy::Requeue => Orphan::Requeue,
                StuckJobPolicy::Fail => crate::queue::force_clean_orphan(),
            };
            let cleaned = match self.backend.clean_worker(&worker, orphan).await {
                Ok(cleaned) => cleaned,
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    // One worker's bad data (another client's record of the
                    // wrong type, say) must not keep the others uncleaned.
                    tracing::warn!(target: "resq::scheduler", scheduler = %self.name, worker = %worker, error = %e,
                        "cannot clean this stuck worker; skipping it");
                    self.emit_error(&e);
                    continue;
                }
            };
            if let Some(cleaned) = cleaned {
                report.cleaned_workers += 1;
                tracing::warn!(target: "resq::scheduler", scheduler = %self.name, worker = %worker,
                    had_job = cleaned.working_on.is_some(), policy = ?self.config.stuck_job_policy, "cleaned stuck worker");
                emit(
                    &self.events,
                    SchedulerEvent::CleanStuckWorker {
                        scheduler: self.name.clone(),
                        worker,
                        cleaned,
                    },
                );
            }
        }
        Ok(())
    }
}
