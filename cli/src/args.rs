//! The command line, as clap parses it.

use clap::{Args, Parser, Subcommand};
use resq::failed::FailedId;
use std::time::Duration;

/// Inspect and operate a resq store (Redis, PostgreSQL or a memory snapshot).
#[derive(Debug, Parser)]
#[command(name = "resq", version, about, propagate_version = true)]
pub struct Cli {
    /// The store's URL: redis://…?namespace=…, postgres://…?schema=…, or
    /// memory:///abs/path/snapshot.
    #[arg(long, env = "RESQ_URL", global = true, hide_env_values = true)]
    pub url: Option<String>,
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// An overview: queues, delayed, failed, workers, leader, totals.
    Status,
    /// Every queue with its length, latency and pause state.
    Queues,
    /// One queue and a page of its jobs.
    Queue {
        /// The queue's name.
        name: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Delayed jobs, oldest first.
    Delayed {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Failed jobs: list, show, retry, remove.
    #[command(subcommand)]
    Failed(FailedCommand),
    /// Registered workers (and `workers clean`).
    Workers {
        #[command(subcommand)]
        command: Option<WorkersCommand>,
    },
    /// Locks (and `locks rm`).
    Locks {
        #[command(subcommand)]
        command: Option<LocksCommand>,
    },
    /// Pause a queue: workers stop claiming from it (cluster-wide).
    Pause {
        /// The queue's name.
        queue: String,
    },
    /// Resume a paused queue.
    Resume {
        /// The queue's name.
        queue: String,
    },
    /// Enqueue a job by hand.
    Enqueue {
        /// The queue.
        queue: String,
        /// The job's class (its task name).
        class: String,
        /// The arguments, as a JSON array (for example '[1, "two"]').
        args: String,
    },
    /// Cancel jobs: stop running ones (wherever their workers run), remove
    /// queued and delayed ones. By id (as `queue`, `delayed` and `workers
    /// --json` show them) or by --class (and --args).
    Cancel(CancelArgs),
    /// Run the PostgreSQL migrations (nothing to do on other stores).
    Migrate,
    /// Serve the store's cluster-wide Prometheus metrics on
    /// `http://ADDR/metrics` until interrupted (Ctrl-C or SIGTERM).
    Metrics {
        /// The address to listen on, for example 127.0.0.1:9464.
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
    /// Serve the web dashboard on `http://ADDR/` until interrupted (Ctrl-C
    /// or SIGTERM).
    Web {
        /// The address to listen on, for example 127.0.0.1:8080.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Refuse every action (403) and show no buttons.
        #[arg(long)]
        read_only: bool,
        /// Ask for HTTP basic authentication with these credentials
        /// (USER:PASS). Prefer the environment variable: arguments are
        /// visible to other local users.
        #[arg(long, env = "RESQ_WEB_BASIC_AUTH", hide_env_values = true, conflicts_with = "token")]
        basic_auth: Option<String>,
        /// Ask for `Authorization: Bearer TOKEN` (browsers: the token as the
        /// basic-auth password, any user name). Prefer the environment
        /// variable: arguments are visible to other local users.
        #[arg(long, env = "RESQ_WEB_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Audit a Redis namespace shared with other Resque clients; exits 3
    /// when it finds problems that it leaves in place.
    Doctor {
        /// Apply the safe fixes (see `resq doctor --help`).
        #[arg(long)]
        fix: bool,
        #[command(flatten)]
        confirm: ConfirmArgs,
    },
}

/// `resq failed …`.
#[derive(Debug, Subcommand)]
pub enum FailedCommand {
    /// A page of the failed jobs matching the filters.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        page: PageArgs,
    },
    /// One failed job in full.
    Show {
        /// Its id, as `failed list` shows it.
        #[arg(value_parser = parse_failed_id)]
        id: FailedId,
    },
    /// Put failed jobs back on their queues.
    Retry(FailedAction),
    /// Delete failed jobs.
    Remove(FailedAction),
}

/// The targets of `failed retry|remove`: ids, or `--all` with filters.
#[derive(Debug, Args)]
pub struct FailedAction {
    /// Ids as `failed list` shows them.
    #[arg(value_parser = parse_failed_id, required_unless_present = "all", conflicts_with = "all")]
    pub ids: Vec<FailedId>,
    /// Every failed job matching the filters (all of them without filters).
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub confirm: ConfirmArgs,
}

/// The targets of `cancel`: ids, or a class with optional arguments.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Job ids (`running-…`, `queued-…`, `delayed-…`).
    #[arg(value_parser = parse_job_id, required_unless_present = "class", conflicts_with = "class")]
    pub ids: Vec<resq::JobId>,
    /// Every running, queued and delayed job of this class.
    #[arg(long)]
    pub class: Option<String>,
    /// With --class: only jobs with exactly these arguments, a JSON array
    /// (for example '[1, "two"]').
    #[arg(long, requires = "class")]
    pub args: Option<String>,
    #[command(flatten)]
    pub confirm: ConfirmArgs,
}

/// Filters on failed jobs.
#[derive(Debug, Args, Default)]
pub struct FilterArgs {
    /// Only this job class.
    #[arg(long)]
    pub class: Option<String>,
    /// Only jobs from this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only errors containing this text (case-insensitive; exception or message).
    #[arg(long)]
    pub error: Option<String>,
    /// Only jobs that failed since then: a duration ago ("1h", "2d 3h") or an RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    pub since: Option<i64>,
    /// Only jobs that failed until then: a duration ago or an RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    pub until: Option<i64>,
}

impl FilterArgs {
    /// Whether any filter is set.
    pub fn is_set(&self) -> bool {
        self.class.is_some()
            || self.queue.is_some()
            || self.error.is_some()
            || self.since.is_some()
            || self.until.is_some()
    }
}

/// Paging of a listing.
#[derive(Debug, Args, Clone, Copy)]
pub struct PageArgs {
    /// Skip this many items.
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    /// Show at most this many items.
    #[arg(long, default_value_t = 50)]
    pub limit: u64,
}

/// The flags of every command that changes or removes something.
#[derive(Debug, Args, Clone, Copy)]
pub struct ConfirmArgs {
    /// Print exactly what would change, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `resq workers …`.
#[derive(Debug, Subcommand)]
pub enum WorkersCommand {
    /// Clean dead workers: the named ones, or every worker whose last ping is
    /// older than --stale-for. A job they were working on goes to the failed list.
    Clean {
        /// Workers to clean by name (as `resq workers` shows them).
        names: Vec<String>,
        /// Without names: how old a worker's last ping must be.
        #[arg(long, value_parser = parse_duration, default_value = "5m", conflicts_with = "names")]
        stale_for: Duration,
        #[command(flatten)]
        confirm: ConfirmArgs,
    },
}

/// `resq locks …`.
#[derive(Debug, Subcommand)]
pub enum LocksCommand {
    /// Delete locks by key.
    Rm {
        /// The keys, as `resq locks` shows them.
        #[arg(required = true)]
        keys: Vec<String>,
        #[command(flatten)]
        confirm: ConfirmArgs,
    },
}

/// A failed-entry id (`<pos>-<64 hex>`).
fn parse_failed_id(text: &str) -> Result<FailedId, String> {
    text.parse::<FailedId>().map_err(|e| e.to_string())
}

/// A job id (`running-…`, `queued-…`, `delayed-…`).
fn parse_job_id(text: &str) -> Result<resq::JobId, String> {
    text.parse::<resq::JobId>().map_err(|e| e.to_string())
}

/// A duration such as `5m`, `90s` or `1h 30m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (try 30s, 5m, 1h)"))
}

/// A time in Unix ms: a duration ago, or an RFC 3339 time.
fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(d) = humantime::parse_duration(text) {
        let ago = i64::try_from(d.as_millis()).map_err(|_| "duration too long".to_owned())?;
        return Ok(resq::time::now_ms().saturating_sub(ago));
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| "expected a duration ago (1h, 30m) or an RFC 3339 time (2026-01-02T03:04:05Z)".to_owned())
}
