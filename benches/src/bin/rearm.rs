//! Times one periodic-task re-arm with 1,000 and with 1,000,000 jobs
//! queued, on each backend given, side by side, and prints a Markdown table.
//! The 1,000,000 run fills real servers and takes minutes: it is not part
//! of CI (which only builds this binary).
//!
//! `cargo run --release -p resq-benches --bin rearm -- --help`

use clap::Parser;
use std::process::ExitCode;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(about = "time one periodic-task re-arm with many jobs queued")]
struct Args {
    /// Backends to measure (repeatable): memory://, redis://HOST:PORT, postgres://…
    #[arg(long = "backend", default_values_t = [
        "memory://".to_string(),
        "redis://127.0.0.1:6379".to_string(),
        "postgres://postgres@127.0.0.1:5432/test".to_string(),
    ])]
    backends: Vec<String>,
    /// Jobs queued on the task's queue (repeatable).
    #[arg(long = "queued", default_values_t = [1_000usize, 1_000_000])]
    queued: Vec<usize>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut figures = Vec::new();
    for url in &args.backends {
        for &queued in &args.queued {
            eprintln!("== {url}: {queued} queued");
            match resq_benches::rearm::measure(url, queued).await {
                Ok(f) => {
                    eprintln!("   filled in {:?}, one re-arm {:?}", f.fill, f.median);
                    figures.push(f);
                }
                Err(e) => {
                    eprintln!("FAILED on {url} with {queued} queued: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    println!("{}", resq_benches::rearm::table(&figures));
    ExitCode::SUCCESS
}
