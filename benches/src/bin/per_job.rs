//! Per-job figures beside node-resque, BullMQ and graphile-worker, in
//! interleaved rounds (resq, then each peer, round after round), reported
//! as medians with their spread and judged against the per-job targets.
//!
//! `cargo run --release -p resq-benches --bin per_job -- --help`

use clap::Parser;
use resq_benches::per_job;
use std::process::ExitCode;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(about = "resq's per-job figures beside its peers, interleaved")]
struct Args {
    /// The Redis server shared with node-resque and BullMQ (`none` to skip).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// The PostgreSQL server shared with graphile-worker (`none` to skip).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    postgres: String,
    /// Jobs per figure (the best-pool figure uses five times as many).
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Interleaved rounds (at least 3 for a median worth the name).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Only count, through a counting proxy, the round trips (and
    /// PostgreSQL statements, Redis commands) of `--jobs` single enqueues
    /// and of processing `--jobs` jobs with 1 worker × 1 slot on `--redis`
    /// and `--postgres`, and exit. Redis commands come from the server's
    /// own counters: give a private server (`redis-server --port 6390`).
    #[arg(long)]
    count: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let pick = |url: &str| (url != "none").then(|| url.to_owned());
    let (redis, postgres) = (pick(&args.redis), pick(&args.postgres));
    if args.count {
        let urls: Vec<String> = redis.into_iter().chain(postgres).collect();
        return match per_job::count(&urls, args.jobs).await {
            Ok(counts) => {
                println!("{}", per_job::render_counts(&counts));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("per_job: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match per_job::run(redis.as_deref(), postgres.as_deref(), args.jobs, args.rounds.max(1)).await {
        Ok(samples) => {
            println!("{}", per_job::render(&samples, args.rounds.max(1)));
            println!("{}", per_job::render_floors(&samples, args.rounds.max(1)));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("per_job: {e}");
            ExitCode::FAILURE
        }
    }
}
