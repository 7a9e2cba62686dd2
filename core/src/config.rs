//! The task server's configuration, after ActionHero's `config/tasks.js`:
//! from code ([`TaskServerConfig::default`] and struct update syntax), or
//! from a TOML file with environment overrides ([`TaskServerConfig::load`]).
//!
//! ```toml
//! # resq.toml — every key is optional
//! backend = "redis://127.0.0.1:6379"
//! scheduler = true                 # this node runs the scheduler
//! queues = ["critical", "*"]       # worked in this order; "*" = every other queue
//! timeout_ms = 5000                # poll timeout of an idle worker
//! min_task_processors = 1
//! max_task_processors = 4          # 0: this node works no jobs (enqueue only)
//! check_timeout_ms = 500           # how often the pool decides to scale
//! max_event_loop_delay_ms = 5      # no new processor while the runtime lags more
//! stuck_worker_timeout_ms = 60000  # a worker silent this long is dead (>= 3 pings: 15000)
//! retry_stuck_jobs = true          # true: re-run a dead worker's job; false: fail it (node-resque)
//! leader_lock_timeout_ms = 6000    # leader lock TTL: a dead leader is replaced within 4/3 of it
//! job_timeout_ms = 0               # default limit on a task's run (TaskDef::timeout wins); 0: none
//!
//! log_args = false                # true: log jobs' arguments, results and payloads
//!
//! [log_levels]                     # per worker or scheduler event
//! success = "info"
//! failure = "error"
//! poll = "off"
//! ```
//!
//! Environment variables override the file: `RESQ_TASKS_<KEY>` in upper
//! case, for example `RESQ_TASKS_MAX_TASK_PROCESSORS=8`,
//! `RESQ_TASKS_SCHEDULER=false`, `RESQ_TASKS_QUEUES=critical,default`,
//! `RESQ_TASKS_BACKEND=postgres://…`, `RESQ_TASKS_LOG_LEVELS={failure="warn"}`,
//! `RESQ_TASKS_LOG_ARGS=true`.

use crate::error::{Error, Result};
use crate::scheduler::check_stuck_worker_timeout;
pub use crate::scheduler::MIN_STUCK_TIMEOUT_PINGS;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// How often a task server's workers ping: [`crate::WorkerConfig`]'s
/// default, [`crate::worker::DEFAULT_PING_INTERVAL`] (5 s).
pub const WORKER_PING_INTERVAL: Duration = crate::worker::DEFAULT_PING_INTERVAL;

/// The message of an [`Error::InvalidArgument`], else the error's text.
fn strip_invalid(e: Error) -> String {
    match e {
        Error::InvalidArgument(message) => message,
        other => other.to_string(),
    }
}

/// The prefix of environment overrides.
pub const ENV_PREFIX: &str = "RESQ_TASKS_";

/// A log level for one event, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Not logged.
    Off,
    /// `tracing::Level::TRACE`.
    Trace,
    /// `tracing::Level::DEBUG`.
    Debug,
    /// `tracing::Level::INFO`.
    Info,
    /// `tracing::Level::WARN`.
    Warn,
    /// `tracing::Level::ERROR`.
    Error,
}

/// How one node of a resq cluster takes part: whether it schedules, which
/// queues it works and with how many processors, and where the backend is.
/// Its `Debug` output hides the backend URL's password.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskServerConfig {
    /// The backend URL (`memory://`, `redis://…`, `postgres://…`). It may
    /// hold a password; `Debug` shows it redacted.
    pub backend: String,
    /// Whether this node runs a scheduler (which also enqueues the periodic
    /// tasks at boot and fires cron tasks when it leads).
    pub scheduler: bool,
    /// The queues this node's workers take jobs from, in priority order;
    /// `*` stands for every other queue, in name order. A comma-separated
    /// string is accepted too.
    #[serde(deserialize_with = "queue_list")]
    pub queues: Vec<String>,
    /// How long an idle worker waits for a job before polling again, ms.
    pub timeout_ms: u64,
    /// The fewest workers the pool keeps (raised to 1 when `max > 0`).
    pub min_task_processors: usize,
    /// The most workers the pool grows to; 0 means this node works no jobs.
    pub max_task_processors: usize,
    /// How often the pool checks whether to grow or shrink, ms.
    pub check_timeout_ms: u64,
    /// The pool adds no processor beyond the minimum while its check timer
    /// fires more than this late (the runtime lags), ms; ActionHero's
    /// `maxEventLoopDelay`. Logged as the `multi_worker_action` event.
    pub max_event_loop_delay_ms: u64,
    /// A worker silent for this long is dead and is cleaned, ms. Default
    /// 60 000 (a minute). It must be at least
    /// [`MIN_STUCK_TIMEOUT_PINGS`] (3) times the workers' ping interval
    /// ([`WORKER_PING_INTERVAL`], 5 s), so at least 15 000: a shorter one
    /// would clean live workers as dead and run their jobs twice.
    pub stuck_worker_timeout_ms: u64,
    /// What happens to a dead worker's job: re-enqueued at the head of its
    /// queue to run again (`true`, the default: at least once, so a job can
    /// run twice after a crash), or moved to the failed list (`false`,
    /// node-resque's and ActionHero's behaviour: a crash loses the run and
    /// the job waits there for `retry_stuck_jobs`/`retry_and_remove_failed`).
    pub retry_stuck_jobs: bool,
    /// The scheduler's leader-lock TTL, ms (node-resque's
    /// `leaderLockTimeout`). Default 6 000. The leader renews the lock every
    /// third of it, independently of its polls, and the other schedulers try
    /// to take it as often, so a leader that dies without releasing is
    /// replaced within 4/3 of it (8 s by default). Shorter fails over faster
    /// but loses leadership sooner when the backend is unreachable from the
    /// leader.
    pub leader_lock_timeout_ms: u64,
    /// How long a job's task may run when its
    /// [`TaskDef::timeout`](crate::TaskDef::timeout) sets no limit, ms: the
    /// server-wide default ([`crate::WorkerConfig::job_timeout`]). A job
    /// past it is stopped and fails with `Resq::JobTimeout`. 0 (the
    /// default): no limit.
    pub job_timeout_ms: u64,
    /// The log level of each worker or scheduler event by its name
    /// (`start`, `end`, `poll`, `job`, `success`, `failure`, `skipped`, `cancelled`,
    /// `re_enqueue`, `error`, `pause`, `ping`, `cleaning_worker`,
    /// `multi_worker_action`, `leader`,
    /// `follower`, `transferred_job`, `promotion_failed`,
    /// `clean_stuck_worker`, `cron_fired`); unnamed events use the defaults
    /// of [`TaskServerConfig::log_level`].
    pub log_levels: BTreeMap<String, LogLevel>,
    /// Whether the event log shows jobs whole, arguments, results and
    /// payloads included. Off by default: arguments can hold personal data,
    /// so events are logged with their worker, queue, class, timings and
    /// errors only.
    pub log_args: bool,
}

impl std::fmt::Debug for TaskServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured so that a new field cannot be left out unnoticed.
        let TaskServerConfig {
            backend,
            scheduler,
            queues,
            timeout_ms,
            min_task_processors,
            max_task_processors,
            check_timeout_ms,
            max_event_loop_delay_ms,
            stuck_worker_timeout_ms,
            retry_stuck_jobs,
            leader_lock_timeout_ms,
            job_timeout_ms,
            log_levels,
            log_args,
        } = self;
        f.debug_struct("TaskServerConfig")
            .field("backend", &crate::error::redact_url(backend))
            .field("scheduler", scheduler)
            .field("queues", queues)
            .field("timeout_ms", timeout_ms)
            .field("min_task_processors", min_task_processors)
            .field("max_task_processors", max_task_processors)
            .field("check_timeout_ms", check_timeout_ms)
            .field("max_event_loop_delay_ms", max_event_loop_delay_ms)
            .field("stuck_worker_timeout_ms", stuck_worker_timeout_ms)
            .field("retry_stuck_jobs", retry_stuck_jobs)
            .field("leader_lock_timeout_ms", leader_lock_timeout_ms)
            .field("job_timeout_ms", job_timeout_ms)
            .field("log_levels", log_levels)
            .field("log_args", log_args)
            .finish()
    }
}

fn queue_list<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Queues {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Queues::deserialize(d)? {
        Queues::One(s) => crate::worker::parse_queues(&s),
        Queues::Many(v) => v,
    })
}

impl Default for TaskServerConfig {
    fn default() -> Self {
        TaskServerConfig {
            backend: "memory://".to_owned(),
            scheduler: false,
            queues: vec!["*".to_owned()],
            timeout_ms: 5000,
            min_task_processors: 0,
            max_task_processors: 0,
            check_timeout_ms: 500,
            max_event_loop_delay_ms: 5,
            stuck_worker_timeout_ms: 60_000,
            retry_stuck_jobs: true,
            leader_lock_timeout_ms: 6_000,
            job_timeout_ms: 0,
            log_levels: BTreeMap::new(),
            log_args: false,
        }
    }
}

impl TaskServerConfig {
    /// Reads `path` (TOML) over the defaults, then `RESQ_TASKS_*` variables
    /// over the file. A missing file is an error; use
    /// [`TaskServerConfig::from_env`] for variables alone.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::InvalidArgument(format!(
                "task server config file {} does not exist",
                path.display()
            )));
        }
        Self::extract(Figment::from(Serialized::defaults(Self::default())).merge(Toml::file(path)))
    }

    /// Reads TOML text over the defaults, then `RESQ_TASKS_*` variables.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        Self::extract(Figment::from(Serialized::defaults(Self::default())).merge(Toml::string(text)))
    }

    /// The defaults with `RESQ_TASKS_*` variables over them.
    pub fn from_env() -> Result<Self> {
        Self::extract(Figment::from(Serialized::defaults(Self::default())))
    }

    fn extract(figment: Figment) -> Result<Self> {
        let config: TaskServerConfig = figment
            .merge(Env::prefixed(ENV_PREFIX))
            .extract()
            .map_err(|e| Error::InvalidArgument(format!("task server config: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the settings make sense together.
    pub fn validate(&self) -> Result<()> {
        if self.max_task_processors > 0 && self.queues.is_empty() {
            return Err(Error::InvalidArgument(
                "queues must name at least one queue (or \"*\") when max_task_processors > 0".into(),
            ));
        }
        if self.min_task_processors > self.max_task_processors && self.max_task_processors > 0 {
            return Err(Error::InvalidArgument(format!(
                "min_task_processors ({}) exceeds max_task_processors ({})",
                self.min_task_processors, self.max_task_processors
            )));
        }
        if self.timeout_ms == 0 || self.check_timeout_ms == 0 {
            return Err(Error::InvalidArgument(
                "timeout_ms and check_timeout_ms must be positive".into(),
            ));
        }
        check_stuck_worker_timeout(self.stuck_worker_timeout(), WORKER_PING_INTERVAL)
            .map_err(|e| Error::InvalidArgument(format!("stuck_worker_timeout_ms: {}", strip_invalid(e))))?;
        if self.leader_lock_timeout_ms < 100 {
            return Err(Error::InvalidArgument(format!(
                "leader_lock_timeout_ms ({}) must be at least 100",
                self.leader_lock_timeout_ms
            )));
        }
        Ok(())
    }

    /// Whether this node runs workers.
    pub fn works(&self) -> bool {
        self.max_task_processors > 0
    }

    /// The pool's minimum: `min_task_processors`, at least 1 when the node works.
    pub fn min_workers(&self) -> usize {
        if self.works() {
            self.min_task_processors.max(1)
        } else {
            0
        }
    }

    /// The idle poll timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The default job timeout (`job_timeout_ms`), `None` for 0.
    pub fn job_timeout(&self) -> Option<Duration> {
        (self.job_timeout_ms > 0).then(|| Duration::from_millis(self.job_timeout_ms))
    }

    /// The pool's scaling interval.
    pub fn check_timeout(&self) -> Duration {
        Duration::from_millis(self.check_timeout_ms)
    }

    /// The pool's lag limit (`max_event_loop_delay_ms`).
    pub fn max_event_loop_delay(&self) -> Duration {
        Duration::from_millis(self.max_event_loop_delay_ms)
    }

    /// The stuck-worker timeout.
    pub fn stuck_worker_timeout(&self) -> Duration {
        Duration::from_millis(self.stuck_worker_timeout_ms)
    }

    /// The scheduler's leader-lock TTL.
    pub fn leader_lock_timeout(&self) -> Duration {
        Duration::from_millis(self.leader_lock_timeout_ms)
    }

    /// The level `event` is logged at: the configured one, else ActionHero's
    /// defaults (failures and errors loud, the per-poll chatter quiet).
    pub fn log_level(&self, event: &str) -> LogLevel {
        if let Some(level) = self.log_levels.get(event) {
            return *level;
        }
        match event {
            "failure" | "error" | "clean_stuck_worker" | "promotion_failed" => LogLevel::Error,
            "start" | "end" | "success" | "leader" | "follower" | "cron_fired" | "cleaning_worker" | "re_enqueue"
            | "cancelled" => LogLevel::Info,
            _ => LogLevel::Debug,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_over_defaults() {
        let c = TaskServerConfig::from_toml_str(
            "scheduler = true\nqueues = \"high,low\"\nmax_task_processors = 3\n[log_levels]\npoll = \"off\"\n",
        )
        .unwrap();
        assert!(c.scheduler);
        assert_eq!(c.queues, vec!["high".to_owned(), "low".to_owned()]);
        assert_eq!((c.min_workers(), c.max_task_processors), (1, 3));
        assert_eq!(c.log_level("poll"), LogLevel::Off);
        assert_eq!(c.log_level("failure"), LogLevel::Error);
        assert_eq!(c.timeout_ms, 5000);
    }

    #[test]
    fn bad_settings_are_errors() {
        assert!(TaskServerConfig::from_toml_str("max_task_processors = 1\nmin_task_processors = 5").is_err());
        assert!(TaskServerConfig::from_toml_str("no_such_key = 1").is_err());
        assert!(TaskServerConfig::from_toml_str("timeout_ms = \"soon\"").is_err());
        assert!(TaskServerConfig::load("/nonexistent/resq.toml").is_err());
    }

    /// A stuck-worker timeout under three ping intervals (15 s) would clean
    /// live workers and run their jobs twice: the loader refuses it, from
    /// TOML text and from a file, with an error naming the key and the reason.
    #[test]
    fn stuck_worker_timeout_must_span_three_pings() {
        let check = |err: Error| {
            let text = err.to_string();
            assert!(
                text.contains("stuck_worker_timeout_ms") && text.contains("ping interval") && text.contains("twice"),
                "{text}"
            );
        };
        check(TaskServerConfig::from_toml_str("stuck_worker_timeout_ms = 3000").unwrap_err());
        check(TaskServerConfig::from_toml_str("stuck_worker_timeout_ms = 14999").unwrap_err());
        check(TaskServerConfig::from_toml_str("stuck_worker_timeout_ms = 0").unwrap_err());
        let path = std::env::temp_dir().join(format!("resq-config-stuck-{}.toml", std::process::id()));
        std::fs::write(&path, "scheduler = true\nstuck_worker_timeout_ms = 3000\n").unwrap();
        let loaded = TaskServerConfig::load(&path);
        std::fs::remove_file(&path).ok();
        check(loaded.unwrap_err());
        let ok = TaskServerConfig::from_toml_str("stuck_worker_timeout_ms = 15000").unwrap();
        assert_eq!(
            ok.stuck_worker_timeout(),
            WORKER_PING_INTERVAL * MIN_STUCK_TIMEOUT_PINGS
        );
    }

    /// The defaults re-run a dead worker's job within a minute and fail
    /// the scheduler over within 8 s; they pass their own validation.
    #[test]
    fn safe_defaults() {
        let d = TaskServerConfig::default();
        d.validate().unwrap();
        assert!(d.retry_stuck_jobs);
        assert_eq!(d.stuck_worker_timeout(), Duration::from_secs(60));
        assert_eq!(d.leader_lock_timeout(), Duration::from_secs(6));
        assert!(TaskServerConfig::from_toml_str("leader_lock_timeout_ms = 50").is_err());
    }
}
