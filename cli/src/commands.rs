//! The commands: each connects, calls the admin API (or migrations, or the
//! Redis doctor), and prints a table or JSON.

use crate::args::{
    CancelArgs, Cli, Command, ConfirmArgs, FailedAction, FailedCommand, FilterArgs, LocksCommand, PageArgs,
    WorkersCommand,
};
use crate::output::{self, confirm, json, or_dash, short, table, time_ms};
use crate::{CliError, CliResult};
use resq::admin::{Admin, BulkOutcome, BulkProgress, FailedFilter, Page};
use resq::failed::FailedId;
use resq::Backend;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// How many items one page of a dry-run listing reads.
const SCAN_PAGE: u64 = 500;

/// The store's scheme family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Redis,
    Postgres,
    Other,
}

fn kind_of(url: &str) -> Kind {
    let scheme = url.split_once("://").map_or("", |(s, _)| s).to_ascii_lowercase();
    match scheme.as_str() {
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => Kind::Redis,
        "postgres" | "postgresql" => Kind::Postgres,
        _ => Kind::Other,
    }
}

/// How long a PostgreSQL call of the command line waits for a connection
/// unless the URL sets `acquire_timeout_ms` (the library's default, 30 s,
/// suits servers; a person at a terminal wants a down server reported sooner).
const PG_ACQUIRE_TIMEOUT_MS: &str = "10000";

/// `url` with the command line's defaults for parameters it does not set.
fn with_defaults(url: &str) -> String {
    if kind_of(url) != Kind::Postgres {
        return url.to_owned();
    }
    let Ok(mut parsed) = url::Url::parse(url) else {
        // Left for connect to report.
        return url.to_owned();
    };
    if !parsed.query_pairs().any(|(k, _)| k == "acquire_timeout_ms") {
        parsed
            .query_pairs_mut()
            .append_pair("acquire_timeout_ms", PG_ACQUIRE_TIMEOUT_MS);
    }
    parsed.into()
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> CliResult {
    let Some(url) = cli.url.as_deref().filter(|u| !u.trim().is_empty()) else {
        return Err(CliError::Usage("no store URL: pass --url URL or set RESQ_URL".into()));
    };
    if let Some(rest) = url.strip_prefix("memory://") {
        let path = rest.split('?').next().unwrap_or_default();
        if path.is_empty() || path == "/" {
            return Err(CliError::Usage(
                "memory:// without a snapshot file is a new, empty store in every process: use memory:///abs/path/snapshot.bin".into(),
            ));
        }
    }
    let url = with_defaults(url);
    match cli.command {
        Command::Migrate => migrate(&url, cli.json).await,
        Command::Doctor { fix, confirm } => doctor(&url, cli.json, fix, confirm).await,
        command => {
            let backend = resq::connect(&url).await?;
            let admin = Admin::new(backend.clone());
            let result = dispatch(&admin, command, cli.json).await;
            // Saves a memory snapshot; releases connections.
            let closed = backend.close().await;
            result?;
            closed.map_err(CliError::from)
        }
    }
}

async fn dispatch(admin: &Admin, command: Command, as_json: bool) -> CliResult {
    match command {
        Command::Status => status(admin, as_json).await,
        Command::Queues => queues(admin, as_json).await,
        Command::Queue { name, page } => queue(admin, &name, page, as_json).await,
        Command::Delayed { page } => delayed(admin, page, as_json).await,
        Command::Failed(FailedCommand::List { filter, page }) => failed_list(admin, &filter, page, as_json).await,
        Command::Failed(FailedCommand::Show { id }) => failed_show(admin, &id, as_json).await,
        Command::Failed(FailedCommand::Retry(action)) => failed_act(admin, Act::Retry, action, as_json).await,
        Command::Failed(FailedCommand::Remove(action)) => failed_act(admin, Act::Remove, action, as_json).await,
        Command::Workers { command: None } => workers(admin, as_json).await,
        Command::Workers {
            command:
                Some(WorkersCommand::Clean {
                    names,
                    stale_for,
                    confirm,
                }),
        } => workers_clean(admin, names, stale_for, confirm, as_json).await,
        Command::Locks { command: None } => locks(admin, as_json).await,
        Command::Locks {
            command: Some(LocksCommand::Rm { keys, confirm }),
        } => locks_rm(admin, keys, confirm, as_json).await,
        Command::Pause { queue } => pause(admin, &queue, true, as_json).await,
        Command::Resume { queue } => pause(admin, &queue, false, as_json).await,
        Command::Enqueue { queue, class, args } => enqueue(admin, &queue, &class, &args, as_json).await,
        Command::Cancel(args) => cancel(admin, args, as_json).await,
        Command::Metrics { listen } => metrics(admin, listen).await,
        Command::Web {
            listen,
            read_only,
            basic_auth,
            token,
        } => web(admin, listen, read_only, basic_auth, token).await,
        // Handled before connecting.
        Command::Migrate | Command::Doctor { .. } => Ok(()),
    }
}

/// `resq metrics --listen ADDR`: the cluster gauges on `/metrics` until
/// Ctrl-C or SIGTERM.
async fn metrics(admin: &Admin, listen: std::net::SocketAddr) -> CliResult {
    let stop = resq::CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        interrupted().await;
        on_signal.cancel();
    });
    eprintln!("serving metrics on http://{listen}/metrics (Ctrl-C to stop)");
    resq::metrics::serve(listen, admin.clone(), stop)
        .await
        .map_err(|e| CliError::Runtime(e.to_string()))
}

/// `resq web --listen ADDR`: the dashboard on `/` until Ctrl-C or SIGTERM.
async fn web(
    admin: &Admin,
    listen: std::net::SocketAddr,
    read_only: bool,
    basic_auth: Option<String>,
    token: Option<String>,
) -> CliResult {
    let auth = match (basic_auth, token) {
        (Some(text), _) => resq::web::Auth::basic_from(&text)
            .ok_or_else(|| CliError::Usage("--basic-auth wants USER:PASS with a non-empty user".into()))?,
        (None, Some(token)) if token.is_empty() => return Err(CliError::Usage("--token is empty".into())),
        (None, Some(token)) => resq::web::Auth::Bearer(token),
        (None, None) => resq::web::Auth::None,
    };
    if matches!(auth, resq::web::Auth::None) && !listen.ip().is_loopback() {
        eprintln!("warning: the dashboard on {listen} asks for no credentials (see --basic-auth, --token)");
    }
    let config = resq::web::WebConfig {
        read_only,
        ..resq::web::WebConfig::default()
    };
    let stop = resq::CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        interrupted().await;
        on_signal.cancel();
    });
    eprintln!(
        "serving the dashboard on http://{listen}/{} (Ctrl-C to stop)",
        if read_only { " (read-only)" } else { "" }
    );
    resq::web::serve(listen, admin.clone(), config, auth, stop)
        .await
        .map_err(|e| CliError::Runtime(e.to_string()))
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM.
async fn interrupted() {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn latency(l: Option<f64>) -> String {
    l.map_or_else(|| "unknown".to_owned(), |s| format!("{s:.1}s"))
}

async fn status(admin: &Admin, as_json: bool) -> CliResult {
    let o = admin.overview().await?;
    if as_json {
        return json(&o);
    }
    println!(
        "{}",
        table(
            &["queue", "jobs", "latency", "paused"],
            o.queues.iter().map(|q| {
                vec![
                    q.name.clone(),
                    q.length.to_string(),
                    latency(q.latency_seconds),
                    if q.paused { "paused".into() } else { String::new() },
                ]
            })
        )
    );
    println!("delayed jobs:    {}", o.delayed);
    println!("failed jobs:     {}", o.failed);
    println!("workers:         {} busy, {} idle", o.workers.busy, o.workers.idle);
    println!("leader:          {}", or_dash(o.leader.as_deref()));
    println!("processed total: {}", o.processed_total);
    println!("failed total:    {}", o.failed_total);
    Ok(())
}

async fn queues(admin: &Admin, as_json: bool) -> CliResult {
    let qs = admin.queues().await?;
    if as_json {
        return json(&qs);
    }
    println!(
        "{}",
        table(
            &["queue", "jobs", "latency", "paused"],
            qs.iter().map(|q| {
                vec![
                    q.name.clone(),
                    q.length.to_string(),
                    latency(q.latency_seconds),
                    if q.paused { "paused".into() } else { String::new() },
                ]
            })
        )
    );
    Ok(())
}

fn page(p: PageArgs) -> Page {
    Page {
        offset: p.offset,
        limit: p.limit,
    }
}

fn args_text(args: Option<&serde_json::Value>) -> String {
    args.map_or_else(|| "-".to_owned(), |a| short(&a.to_string(), 60))
}

async fn queue(admin: &Admin, name: &str, p: PageArgs, as_json: bool) -> CliResult {
    let d = admin.queue(name, page(p)).await?;
    if as_json {
        return json(&d);
    }
    println!(
        "queue {}: {} jobs, latency {}{}",
        d.summary.name,
        d.summary.length,
        latency(d.summary.latency_seconds),
        if d.summary.paused { ", paused" } else { "" }
    );
    println!(
        "{}",
        table(
            &["#", "class", "args"],
            d.jobs.items.iter().map(|j| {
                vec![
                    j.position.to_string(),
                    j.class.clone().unwrap_or_else(|| "(undecodable)".into()),
                    match &j.error {
                        Some(e) => format!("{} ({})", short(&j.payload, 40), short(e, 40)),
                        None => args_text(j.args.as_ref()),
                    },
                ]
            })
        )
    );
    shown(d.jobs.offset, d.jobs.items.len(), d.jobs.total);
    Ok(())
}

/// The "showing a-b of n" line under a page.
fn shown(offset: u64, len: usize, total: u64) {
    if len == 0 {
        println!("showing 0 of {total}");
    } else {
        println!("showing {}-{} of {total}", offset + 1, offset + len as u64);
    }
}

async fn delayed(admin: &Admin, p: PageArgs, as_json: bool) -> CliResult {
    let d = admin.delayed(page(p)).await?;
    if as_json {
        return json(&d);
    }
    println!(
        "{}",
        table(
            &["at", "queue", "class", "args"],
            d.items.iter().map(|j| {
                vec![
                    time_ms(j.timestamp_ms),
                    or_dash(j.queue.as_deref()),
                    j.class.clone().unwrap_or_else(|| "(undecodable)".into()),
                    args_text(j.args.as_ref()),
                ]
            })
        )
    );
    shown(d.offset, d.items.len(), d.total);
    Ok(())
}

fn filter(f: &FilterArgs) -> FailedFilter {
    FailedFilter {
        class: f.class.clone(),
        queue: f.queue.clone(),
        error: f.error.clone(),
        since_ms: f.since,
        until_ms: f.until,
    }
}

async fn failed_list(admin: &Admin, f: &FilterArgs, p: PageArgs, as_json: bool) -> CliResult {
    let items = admin.failed(&filter(f), page(p)).await?;
    if as_json {
        return json(&items);
    }
    println!(
        "{}",
        table(
            &["id", "failed at", "queue", "class", "error"],
            items.items.iter().map(|i| {
                vec![
                    i.id.to_string(),
                    i.failed_at_ms.map_or_else(|| or_dash(i.failed_at.as_deref()), time_ms),
                    or_dash(i.queue.as_deref()),
                    or_dash(i.class.as_deref()),
                    short(
                        &format!(
                            "{}: {}",
                            i.exception.as_deref().unwrap_or("?"),
                            i.error.as_deref().unwrap_or("")
                        ),
                        60,
                    ),
                ]
            })
        )
    );
    shown(items.offset, items.items.len(), items.total);
    Ok(())
}

async fn failed_show(admin: &Admin, id: &FailedId, as_json: bool) -> CliResult {
    let i = admin.failed_entry(id).await?;
    if as_json {
        return json(&i);
    }
    println!("id:        {}", i.id);
    println!("queue:     {}", or_dash(i.queue.as_deref()));
    println!("class:     {}", or_dash(i.class.as_deref()));
    println!("args:      {}", or_dash(i.args.as_ref()));
    println!("exception: {}", or_dash(i.exception.as_deref()));
    println!("error:     {}", or_dash(i.error.as_deref()));
    println!("worker:    {}", or_dash(i.worker.as_deref()));
    println!("failed at: {}", or_dash(i.failed_at.as_deref()));
    if !i.backtrace.is_empty() {
        println!("backtrace:");
        for line in &i.backtrace {
            println!("  {line}");
        }
    }
    if let Some(p) = &i.payload {
        println!("payload:   {p}");
    }
    Ok(())
}

/// Retry or remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Retry,
    Remove,
}

impl Act {
    fn verb(self) -> &'static str {
        match self {
            Act::Retry => "retry",
            Act::Remove => "remove",
        }
    }
}

/// What a dry run of a failed-job action prints as JSON.
#[derive(Serialize)]
struct FailedPlan<'a> {
    action: &'a str,
    dry_run: bool,
    count: u64,
    ids: Vec<String>,
}

/// What a failed-job action prints as JSON.
#[derive(Serialize)]
struct FailedDone<'a> {
    action: &'a str,
    dry_run: bool,
    #[serde(flatten)]
    outcome: BulkOutcome,
}

/// Every matching failed entry's id, a page at a time.
async fn matching_ids(admin: &Admin, f: &FailedFilter) -> CliResult<Vec<FailedId>> {
    let mut ids = Vec::new();
    let mut offset = 0;
    loop {
        let page = admin
            .failed(
                f,
                Page {
                    offset,
                    limit: SCAN_PAGE,
                },
            )
            .await?;
        let n = page.items.len() as u64;
        ids.extend(page.items.into_iter().map(|i| i.id));
        offset += n;
        if n == 0 || offset >= page.total {
            return Ok(ids);
        }
    }
}

async fn failed_act(admin: &Admin, act: Act, a: FailedAction, as_json: bool) -> CliResult {
    if !a.all && a.filter.is_set() {
        return Err(CliError::Usage(
            "the filters --class/--queue/--error/--since/--until select entries only with --all".into(),
        ));
    }
    let f = filter(&a.filter);
    let verb = act.verb();
    // The plan: the ids that would be acted on.
    let plan: Vec<FailedId> = if a.all {
        if a.confirm.dry_run {
            matching_ids(admin, &f).await?
        } else {
            Vec::new()
        }
    } else {
        a.ids.clone()
    };
    if a.confirm.dry_run {
        if !a.all {
            // Check each id still names its entry, so the dry run says what would really happen.
            for id in &plan {
                admin.failed_entry(id).await?;
            }
        }
        if as_json {
            return json(&FailedPlan {
                action: verb,
                dry_run: true,
                count: plan.len() as u64,
                ids: plan.iter().map(ToString::to_string).collect(),
            });
        }
        for id in &plan {
            println!("would {verb} {id}");
        }
        println!("dry run: would {verb} {} failed jobs; nothing changed", plan.len());
        return Ok(());
    }
    let count = if a.all {
        admin.count_failed_matching(&f).await?
    } else {
        plan.len() as u64
    };
    if count == 0 {
        return report_outcome(
            act,
            BulkOutcome {
                done: 0,
                stale: 0,
                failed: 0,
            },
            as_json,
        );
    }
    let what = if a.all && a.filter.is_set() {
        format!("{verb} {count} failed jobs matching the filters?")
    } else if a.all {
        format!("{verb} all {count} failed jobs?")
    } else {
        format!("{verb} {count} failed jobs?")
    };
    if !confirm(a.confirm.yes, &what)? {
        return Err(CliError::Runtime("aborted; nothing changed".into()));
    }
    let outcome = if a.all {
        let bar = output::progress(count, as_json);
        let on_progress = |p: BulkProgress| {
            bar.set_length(p.total);
            bar.set_position(p.scanned);
            bar.set_message(format!("{} done", p.done));
        };
        let outcome = match act {
            Act::Retry => admin.retry_failed_matching(&f, &on_progress).await?,
            Act::Remove => admin.remove_failed_matching(&f, &on_progress).await?,
        };
        bar.finish_and_clear();
        outcome
    } else {
        match act {
            Act::Retry => admin.retry_failed_many(&plan).await?,
            Act::Remove => admin.remove_failed_many(&plan).await?,
        }
    };
    let stale = outcome.stale;
    let failed = outcome.failed;
    report_outcome(act, outcome, as_json)?;
    if !a.all && stale > 0 {
        return Err(CliError::Runtime(format!(
            "{stale} of the given failed entries moved or changed since they were listed; list the failed jobs again (resq failed list)"
        )));
    }
    if failed > 0 {
        return Err(CliError::Runtime(format!("{failed} failed jobs could not be {verb}d")));
    }
    Ok(())
}

fn report_outcome(act: Act, outcome: BulkOutcome, as_json: bool) -> CliResult {
    if as_json {
        return json(&FailedDone {
            action: act.verb(),
            dry_run: false,
            outcome,
        });
    }
    let done = match act {
        Act::Retry => "retried",
        Act::Remove => "removed",
    };
    println!(
        "{done} {}; {} stale (moved since listed); {} could not be acted on",
        outcome.done, outcome.stale, outcome.failed
    );
    Ok(())
}

fn age(s: Option<f64>) -> String {
    s.map_or_else(|| "never".to_owned(), |s| format!("{s:.0}s ago"))
}

fn workers_table(ws: &[resq::admin::WorkerInfo]) -> comfy_table::Table {
    table(
        &["worker", "queues", "started", "last ping", "job"],
        ws.iter().map(|w| {
            vec![
                w.name.clone(),
                w.queues.clone(),
                w.started_at_ms.map_or_else(|| "-".to_owned(), time_ms),
                age(w.ping_age_seconds),
                match &w.job {
                    Some(j) => format!("{} on {}", or_dash(j.class.as_deref()), j.queue),
                    None => "idle".into(),
                },
            ]
        }),
    )
}

async fn workers(admin: &Admin, as_json: bool) -> CliResult {
    let ws = admin.workers().await?;
    if as_json {
        return json(&ws);
    }
    println!("{}", workers_table(&ws));
    Ok(())
}

/// What `workers clean` prints as JSON.
#[derive(Serialize)]
struct WorkersDone<T: Serialize> {
    dry_run: bool,
    count: u64,
    workers: T,
}

async fn workers_clean(
    admin: &Admin,
    names: Vec<String>,
    stale_for: Duration,
    c: ConfirmArgs,
    as_json: bool,
) -> CliResult {
    let targets: Vec<resq::admin::WorkerInfo> = if names.is_empty() {
        admin.stale_workers(stale_for).await?
    } else {
        let all = admin.workers().await?;
        let missing: Vec<&String> = names.iter().filter(|n| !all.iter().any(|w| &w.name == *n)).collect();
        if !missing.is_empty() {
            let list: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            return Err(CliError::Runtime(format!(
                "no registered worker named {}",
                list.join(", ")
            )));
        }
        all.into_iter().filter(|w| names.contains(&w.name)).collect()
    };
    if c.dry_run || targets.is_empty() {
        if as_json {
            return json(&WorkersDone {
                dry_run: c.dry_run,
                count: if c.dry_run { targets.len() as u64 } else { 0 },
                workers: &targets,
            });
        }
        if targets.is_empty() {
            println!("no worker to clean");
        } else {
            println!("{}", workers_table(&targets));
            println!(
                "dry run: would clean {} workers (their jobs go to the failed list); nothing changed",
                targets.len()
            );
        }
        return Ok(());
    }
    if !confirm(c.yes, &format!("clean {} workers?", targets.len()))? {
        return Err(CliError::Runtime("aborted; nothing changed".into()));
    }
    let mut cleaned = Vec::new();
    if names.is_empty() {
        cleaned = admin.clean_stale_workers(stale_for).await?;
    } else {
        for w in &targets {
            if let Some(c) = admin.clean_worker(&w.name).await? {
                cleaned.push(c);
            }
        }
    }
    let cleaned: Vec<CleanedOut> = cleaned.into_iter().map(CleanedOut::from).collect();
    if as_json {
        return json(&WorkersDone {
            dry_run: false,
            count: cleaned.len() as u64,
            workers: &cleaned,
        });
    }
    for c in &cleaned {
        match &c.job {
            Some(job) => println!("cleaned {}; its job on {} went to the failed list", c.name, job.queue),
            None => println!("cleaned {} (idle)", c.name),
        }
    }
    println!("cleaned {} workers", cleaned.len());
    Ok(())
}

/// A cleaned worker, as `workers clean` prints it.
#[derive(Serialize)]
struct CleanedOut {
    name: String,
    queues: String,
    /// The job it was working on, now on the failed list.
    job: Option<resq::WorkingOn>,
    /// The failed entry written for that job, as stored.
    failed_entry: Option<String>,
}

impl From<resq::Cleaned> for CleanedOut {
    fn from(c: resq::Cleaned) -> Self {
        CleanedOut {
            name: c.worker.name,
            queues: c.worker.queues,
            job: c.working_on,
            failed_entry: c.failed_entry.map(|e| e.raw),
        }
    }
}

async fn locks(admin: &Admin, as_json: bool) -> CliResult {
    let ls = admin.locks().await?;
    if as_json {
        return json(&ls);
    }
    println!(
        "{}",
        table(
            &["key", "value", "ttl"],
            ls.iter().map(|l| {
                vec![
                    l.key.clone(),
                    short(&l.value, 40),
                    l.ttl_ms
                        .map_or_else(|| "none".to_owned(), |t| format!("{:.1}s", t as f64 / 1000.0)),
                ]
            })
        )
    );
    Ok(())
}

/// What `locks rm` prints as JSON.
#[derive(Serialize)]
struct LocksDone {
    dry_run: bool,
    deleted: Vec<String>,
    missing: Vec<String>,
}

async fn locks_rm(admin: &Admin, keys: Vec<String>, c: ConfirmArgs, as_json: bool) -> CliResult {
    let existing = admin.locks().await?;
    let (present, missing): (Vec<String>, Vec<String>) =
        keys.into_iter().partition(|k| existing.iter().any(|l| &l.key == k));
    let mut done = LocksDone {
        dry_run: c.dry_run,
        deleted: Vec::new(),
        missing,
    };
    if c.dry_run {
        done.deleted = present;
    } else if !present.is_empty() {
        if !confirm(c.yes, &format!("delete {} locks?", present.len()))? {
            return Err(CliError::Runtime("aborted; nothing changed".into()));
        }
        for key in present {
            if admin.delete_lock(&key).await? {
                done.deleted.push(key);
            } else {
                done.missing.push(key);
            }
        }
    }
    if as_json {
        json(&done)?;
    } else {
        let verb = if c.dry_run { "would delete" } else { "deleted" };
        for k in &done.deleted {
            println!("{verb} {k}");
        }
        for k in &done.missing {
            println!("no lock {k}");
        }
        if c.dry_run {
            println!("dry run: would delete {} locks; nothing changed", done.deleted.len());
        }
    }
    if done.missing.is_empty() {
        Ok(())
    } else {
        Err(CliError::Runtime(format!("no lock named {}", done.missing.join(", "))))
    }
}

/// What `pause` and `resume` print as JSON.
#[derive(Serialize)]
struct PauseDone<'a> {
    queue: &'a str,
    paused: bool,
    changed: bool,
}

async fn pause(admin: &Admin, queue: &str, paused: bool, as_json: bool) -> CliResult {
    let changed = if paused {
        admin.pause(queue).await?
    } else {
        admin.resume(queue).await?
    };
    if as_json {
        return json(&PauseDone { queue, paused, changed });
    }
    match (paused, changed) {
        (true, true) => println!("paused {queue}"),
        (true, false) => println!("{queue} was already paused"),
        (false, true) => println!("resumed {queue}"),
        (false, false) => println!("{queue} was not paused"),
    }
    Ok(())
}

/// What `enqueue` prints as JSON.
#[derive(Serialize)]
struct Enqueued<'a> {
    queue: &'a str,
    class: &'a str,
    args: &'a serde_json::Value,
}

async fn enqueue(admin: &Admin, queue: &str, class: &str, args: &str, as_json: bool) -> CliResult {
    let value: serde_json::Value =
        serde_json::from_str(args).map_err(|e| CliError::Usage(format!("ARGS is not JSON: {e}")))?;
    if !value.is_array() {
        return Err(CliError::Usage(format!(
            "ARGS must be a JSON array of arguments, such as '[{}]'",
            short(args, 40)
        )));
    }
    admin.enqueue(queue, class, value.clone()).await?;
    if as_json {
        return json(&Enqueued {
            queue,
            class,
            args: &value,
        });
    }
    println!("enqueued {class} on {queue} with args {value}");
    Ok(())
}

/// What `migrate` prints as JSON.
#[derive(Serialize)]
struct Migrated {
    backend: &'static str,
    applied: Vec<i32>,
    version: Option<i32>,
}

async fn migrate(url: &str, as_json: bool) -> CliResult {
    let done = if kind_of(url) == Kind::Postgres {
        let backend = resq::postgres::PostgresBackend::connect(url).await?;
        let applied = backend.migrate().await;
        let version = match &applied {
            Ok(_) => backend.schema_version().await,
            Err(_) => Ok(None),
        };
        let closed = backend.close().await;
        let applied = applied?;
        let version = version?;
        closed?;
        Migrated {
            backend: "postgres",
            applied,
            version,
        }
    } else {
        let backend = resq::connect(url).await?;
        let kind = backend.kind();
        backend.close().await?;
        Migrated {
            backend: kind,
            applied: Vec::new(),
            version: None,
        }
    };
    if as_json {
        return json(&done);
    }
    match (done.backend, done.applied.is_empty()) {
        ("postgres", true) => println!("schema is up to date (version {})", or_dash(done.version)),
        ("postgres", false) => println!(
            "applied migrations {:?}; schema version {}",
            done.applied,
            or_dash(done.version)
        ),
        (kind, _) => println!("nothing to migrate on the {kind} backend"),
    }
    Ok(())
}

/// What `doctor` prints as JSON.
#[derive(Serialize)]
struct DoctorOut {
    backend: &'static str,
    applicable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<resq::redis::doctor::Report>,
    /// A sharded namespace's reports, one per shard in shard order (then
    /// `report` is absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    shards: Option<Vec<resq::redis::doctor::Report>>,
    problems: u64,
    fixable: u64,
    dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    fixed: Option<resq::redis::doctor::FixOutcome>,
}

async fn doctor(url: &str, as_json: bool, fix: bool, c: ConfirmArgs) -> CliResult {
    use resq::redis::doctor;
    if kind_of(url) != Kind::Redis {
        // Connect anyway, so a bad URL is reported as such.
        let backend: Arc<dyn Backend> = resq::connect(url).await?;
        let kind = backend.kind();
        backend.close().await?;
        if as_json {
            return json(&DoctorOut {
                backend: kind,
                applicable: false,
                report: None,
                shards: None,
                problems: 0,
                fixable: 0,
                dry_run: c.dry_run,
                fixed: None,
            });
        }
        println!(
            "doctor audits Redis namespaces shared with other Resque clients; nothing to check on the {kind} backend"
        );
        return Ok(());
    }
    // A sharded namespace is audited (and fixed) shard by shard: each
    // shard is a namespace of its own, `{<base>:i}`.
    let config = resq::redis::RedisConfig::from_url(url)?;
    let sharded = config.is_sharded();
    let backends: Vec<Arc<resq::redis::RedisBackend>> = if sharded {
        resq::redis::ShardedRedis::connect(config).await?.shards().to_vec()
    } else {
        vec![resq::redis::connect(url).await?]
    };
    let mut reports = Vec::with_capacity(backends.len());
    for backend in &backends {
        reports.push(doctor::audit(backend).await?);
    }
    let problems: u64 = reports.iter().map(|r| r.problems().count() as u64).sum();
    let fixable: u64 = reports.iter().map(|r| r.fixable().count() as u64).sum();
    let mut fixed = None;
    if fix && !c.dry_run && fixable > 0 {
        if !as_json {
            reports.iter().for_each(print_report);
        }
        if !confirm(c.yes, &format!("apply {fixable} fixes?"))? {
            return Err(CliError::Runtime("aborted; nothing changed".into()));
        }
        let mut total = doctor::FixOutcome::default();
        for (backend, report) in backends.iter().zip(&reports) {
            let done = doctor::fix(backend, report).await?;
            total.fixed += done.fixed;
            total.stale += done.stale;
        }
        fixed = Some(total);
    } else if !as_json {
        reports.iter().for_each(print_report);
    }
    for backend in &backends {
        backend.close().await?;
    }
    // Problems left in place: all of them, less those a fix just repaired.
    let left = problems.saturating_sub(fixed.as_ref().map_or(0, |f| f.fixed));
    let verdict = if left > 0 {
        Err(CliError::Findings(left))
    } else {
        Ok(())
    };
    let (report, shards) = if sharded {
        (None, Some(reports))
    } else {
        (reports.into_iter().next(), None)
    };
    if as_json {
        json(&DoctorOut {
            backend: "redis",
            applicable: true,
            report,
            shards,
            problems,
            fixable,
            dry_run: c.dry_run,
            fixed,
        })?;
        return verdict;
    }
    println!("{problems} problems, {fixable} with a safe fix");
    match fixed {
        Some(f) => println!(
            "fixed {}; {} changed since the audit and were left alone",
            f.fixed, f.stale
        ),
        None if fix && c.dry_run && fixable > 0 => println!("dry run: would apply {fixable} fixes; nothing changed"),
        None if fixable > 0 => println!("run `resq doctor --fix` to apply them"),
        None => {}
    }
    verdict
}

fn print_report(report: &resq::redis::doctor::Report) {
    use resq::redis::doctor::{Fix, Severity};
    println!("namespace {:?}", report.namespace);
    for f in &report.findings {
        let level = match f.severity {
            Severity::Info => "info",
            Severity::Problem => "PROBLEM",
        };
        println!("{level:7} {} {}", f.key, f.detail);
        match &f.fix {
            Some(Fix::ReplaceListItem { index, replacement }) => {
                println!("        fix: set element {index} to {}", short(replacement, 80));
            }
            Some(Fix::MoveToFailed { .. }) => {
                println!("        fix: move its job to the failed list and delete the key");
            }
            None => {}
        }
    }
}

/// What `cancel` prints as JSON.
#[derive(Serialize)]
struct CancelDone {
    dry_run: bool,
    /// The jobs cancelled (or, in a dry run, that would be).
    jobs: Vec<String>,
    /// Of those: running jobs asked to stop, queued and delayed ones removed.
    running: u64,
    queued: u64,
    delayed: u64,
    /// Ids given that name no job any more.
    missing: Vec<String>,
}

/// `resq cancel`: by ids, or by --class and --args.
async fn cancel(admin: &Admin, a: CancelArgs, as_json: bool) -> CliResult {
    let args = match &a.args {
        None => None,
        Some(text) => {
            let value: serde_json::Value =
                serde_json::from_str(text).map_err(|e| CliError::Usage(format!("--args is not JSON: {e}")))?;
            if !value.is_array() {
                return Err(CliError::Usage("--args must be a JSON array".into()));
            }
            Some(value)
        }
    };
    let mut done = CancelDone {
        dry_run: a.confirm.dry_run,
        jobs: Vec::new(),
        running: 0,
        queued: 0,
        delayed: 0,
        missing: Vec::new(),
    };
    let count = |done: &mut CancelDone, id: &resq::JobId| match id.place() {
        resq::JobPlace::Running(_) => done.running += 1,
        resq::JobPlace::Queued(_) => done.queued += 1,
        resq::JobPlace::Delayed(_) => done.delayed += 1,
    };
    // What the command would take now.
    let mut targets = Vec::new();
    match &a.class {
        Some(class) => {
            for id in admin.find_jobs(class, args.as_ref()).await? {
                targets.push(id);
            }
        }
        None => {
            for id in &a.ids {
                if admin.find_job(id).await?.is_some() {
                    targets.push(id.clone());
                } else {
                    done.missing.push(id.to_string());
                }
            }
        }
    }
    if a.confirm.dry_run || targets.is_empty() {
        for id in &targets {
            count(&mut done, id);
        }
        done.jobs = targets.iter().map(ToString::to_string).collect();
    } else {
        if !confirm(a.confirm.yes, &format!("cancel {} jobs?", targets.len()))? {
            return Err(CliError::Runtime("aborted; nothing changed".into()));
        }
        match &a.class {
            Some(class) => {
                let report = admin.cancel_jobs(class, args.as_ref()).await?;
                done.running = report.running;
                done.queued = report.queued;
                done.delayed = report.delayed;
                done.jobs = targets.iter().map(ToString::to_string).collect();
            }
            None => {
                for id in targets {
                    match admin.cancel(&id).await {
                        Ok(_) => {
                            count(&mut done, &id);
                            done.jobs.push(id.to_string());
                        }
                        Err(resq::Error::StaleJob { .. }) => done.missing.push(id.to_string()),
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }
    if as_json {
        json(&done)?;
    } else {
        let verb = if done.dry_run { "would cancel" } else { "cancelled" };
        for id in &done.jobs {
            println!("{verb} {id}");
        }
        for id in &done.missing {
            println!("no job {id}");
        }
        println!(
            "{}{verb} {} running (asked to stop), {} queued, {} delayed{}",
            if done.dry_run { "dry run: " } else { "" },
            done.running,
            done.queued,
            done.delayed,
            if done.dry_run { "; nothing changed" } else { "" }
        );
    }
    if done.missing.is_empty() {
        Ok(())
    } else {
        Err(CliError::Runtime(format!("no job {}", done.missing.join(", "))))
    }
}
