//! resq-web at scale: fills a fresh Redis namespace with a million failed
//! entries and a million queued jobs (by default), serves the dashboard on
//! a loopback port, and prints the p50/p95/max response time of every page
//! and of failed-job searches, as a Markdown table. The namespace is
//! deleted at the end unless `--keep` is given.
//!
//! `cargo run --release -p resq-benches --bin dashboard -- --help`

use clap::Parser;
use resq_admin::Admin;
use resq_benches::dashboard::{self, Scale, Timing};
use resq_core::Backend;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(about = "resq-web response times over a large Redis namespace")]
struct Args {
    /// The Redis server (`RESQ_REDIS_URL`, else redis://127.0.0.1:6379).
    #[arg(long)]
    redis: Option<String>,
    /// Failed entries to write.
    #[arg(long, default_value_t = 1_000_000)]
    failed: u64,
    /// Queued jobs to write.
    #[arg(long, default_value_t = 1_000_000)]
    queued: u64,
    /// Delayed jobs to write.
    #[arg(long, default_value_t = 10_000)]
    delayed: u64,
    /// Workers to register (every other one busy).
    #[arg(long, default_value_t = 50)]
    workers: u64,
    /// Timed requests per page (after 3 untimed ones).
    #[arg(long, default_value_t = 40)]
    samples: usize,
    /// Timed requests per search (after 1 untimed one).
    #[arg(long, default_value_t = 5)]
    search_runs: usize,
    /// Entries the admin API reads a page at a time in searches and bulk
    /// actions (its default: `resq_admin::FAILED_PAGE`).
    #[arg(long, default_value_t = resq_admin::FAILED_PAGE)]
    scan_page: u64,
    /// Only the searches, not the pages.
    #[arg(long)]
    searches_only: bool,
    /// Keep the namespace (its name is printed) instead of deleting it.
    #[arg(long)]
    keep: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("dashboard bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn ms(d: std::time::Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn row(t: &Timing, limit_ms: f64, judged: &str) -> (String, bool) {
    let ok = t.p95.as_secs_f64() * 1000.0 < limit_ms;
    (
        format!(
            "| `{}` | {} | {} | {} | {} | {} B | {} |",
            t.path,
            t.n,
            ms(t.p50),
            ms(t.p95),
            ms(t.max),
            t.body.len(),
            if ok {
                format!("yes ({judged} < {limit_ms} ms)")
            } else {
                format!("**no** ({judged} ≥ {limit_ms} ms)")
            }
        ),
        ok,
    )
}

async fn run(args: Args) -> Result<bool, String> {
    let base = args
        .redis
        .clone()
        .or_else(|| std::env::var("RESQ_REDIS_URL").ok())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let namespace = format!(
        "resq-dashboard-bench-{}-{}",
        std::process::id(),
        resq_core::time::now_ms()
    );
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}namespace={namespace}");
    let backend = resq_redis::connect(&url).await.map_err(|e| e.to_string())?;
    let scale = Scale {
        failed: args.failed,
        queued: args.queued,
        delayed: args.delayed,
        workers: args.workers,
    };
    eprintln!("filling namespace {namespace}: {scale:?}");
    let started = Instant::now();
    let filled = dashboard::fill(&backend, scale, |step| {
        eprintln!("  {step} ({:.0} s)", started.elapsed().as_secs_f64())
    })
    .await;
    let outcome = match filled {
        Ok(()) => measure(&backend, scale, &args).await,
        Err(e) => Err(e),
    };
    if args.keep {
        eprintln!("kept namespace {namespace}");
    } else {
        backend.delete_namespace().await.map_err(|e| e.to_string())?;
    }
    outcome
}

async fn measure(backend: &Arc<resq_redis::RedisBackend>, scale: Scale, args: &Args) -> Result<bool, String> {
    let dynamic: Arc<dyn Backend> = backend.clone();
    let admin = Admin::new(dynamic).with_page_size(args.scan_page);
    let app = resq_web::router(admin.clone(), resq_web::WebConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut all_ok = true;
    println!(
        "resq-web over Redis: {} failed entries, {} queued jobs, {} delayed jobs, {} workers",
        scale.failed, scale.queued, scale.delayed, scale.workers
    );
    println!();
    println!("| page | requests | p50 ms | p95 ms | max ms | body | under 250 ms at p95 |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    let pages = if args.searches_only {
        Vec::new()
    } else {
        dashboard::pages(&admin, scale).await?
    };
    for path in pages {
        let t = dashboard::time_path(addr, &path, 3, args.samples).await?;
        let (line, ok) = row(&t, 250.0, "p95");
        all_ok &= ok;
        println!("{line}");
    }
    println!();
    println!("| failed-job search | runs | p50 ms | p95 ms | max ms | body | under 2 s |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    for path in dashboard::searches() {
        let t = dashboard::time_path(addr, &path, 1, args.search_runs).await?;
        // With a handful of runs, p95 is the slowest run: judged on that.
        let (line, ok) = row(&t, 2000.0, "slowest");
        all_ok &= ok;
        println!("{line}");
        if path.starts_with("/failed/bulk") {
            let expected = dashboard::rare_entries(scale.failed);
            let shown = dashboard::confirmed_count(&t.body);
            if shown != Some(expected) {
                return Err(format!("{path} shows {shown:?} matches, the fill wrote {expected}"));
            }
        }
    }
    Ok(all_ok)
}
