//! `resq`, the command line of the resq job engine: it inspects and
//! operates the queues, delayed jobs, failed jobs, workers, locks and
//! pauses of any resq store (Redis, shared with other Resque clients;
//! PostgreSQL; a memory snapshot file) through the `resq-admin` API,
//! cancels jobs, runs PostgreSQL migrations, and audits a shared Redis namespace (`doctor`).
//! Output is a human table by default and JSON with `--json`; commands
//! that change or remove something take `--dry-run` and need `--yes` when
//! standard input is not a terminal. Exit codes: 0 success, 1 runtime
//! error, 2 usage error; an error is one line on standard error, with any
//! URL password hidden.

mod args;
mod commands;
mod output;

use clap::error::ErrorKind;
use clap::Parser;
use std::process::ExitCode;

/// Why a command failed, which decides the exit code.
#[derive(Debug)]
pub enum CliError {
    /// The command line cannot be used (exit 2).
    Usage(String),
    /// The command ran and failed (exit 1).
    Runtime(String),
    /// An audit (`doctor`) ran and found this many problems it left in
    /// place (exit 3), so that a script or a cron job can tell "unhealthy"
    /// from "could not check".
    Findings(u64),
}

impl CliError {
    /// The exit code for this error.
    fn code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Runtime(_) => 1,
            CliError::Findings(_) => 3,
        }
    }

    /// The message, on one line.
    fn line(&self) -> String {
        match self {
            CliError::Usage(m) | CliError::Runtime(m) => m.split_whitespace().collect::<Vec<_>>().join(" "),
            CliError::Findings(n) => format!("{n} problems found and not fixed (see the report)"),
        }
    }
}

impl From<resq::Error> for CliError {
    fn from(e: resq::Error) -> Self {
        match e {
            // Arguments the admin API refuses are the caller's mistake.
            resq::Error::InvalidArgument(_)
            | resq::Error::MalformedFailedId { .. }
            | resq::Error::MalformedJobId { .. }
            | resq::Error::InvalidUrl { .. } => CliError::Usage(e.to_string()),
            other => CliError::Runtime(other.to_string()),
        }
    }
}

/// The result of a command.
pub type CliResult<T = ()> = std::result::Result<T, CliError>;

fn main() -> ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage(&e),
    };
    init_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("resq: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("resq: error: {}", e.line());
            ExitCode::from(e.code())
        }
    }
}

/// Prints a command-line error from clap as one line (`--help` and
/// `--version` as clap prints them) and returns its exit code: 2 for a
/// usage error, 0 for help and version.
fn usage(e: &clap::Error) -> ExitCode {
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::from(if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            2
        } else {
            0
        });
    }
    // clap's text: the error, then a blank line and usage or tips.
    let text = e.to_string();
    let first = text.split("\n\n").next().unwrap_or_default();
    let line = first.split_whitespace().collect::<Vec<_>>().join(" ");
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    eprintln!("resq: error: {line} (see resq --help)");
    ExitCode::from(2)
}

/// Logs go to standard error only when `RESQ_LOG` asks for them (an
/// `EnvFilter` directive such as `warn` or `resq=debug`), so that by
/// default an error is the one line `main` prints.
fn init_logging() {
    let Ok(directive) = std::env::var("RESQ_LOG") else {
        return;
    };
    let filter = match tracing_subscriber::EnvFilter::try_new(&directive) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("resq: warning: ignoring RESQ_LOG={directive:?}: {e}");
            return;
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
