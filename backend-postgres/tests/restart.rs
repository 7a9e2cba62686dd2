//! A PostgreSQL restart does not crash workers or schedulers and loses no
//! job: the test runs a private PostgreSQL instance (initdb into a
//! temporary directory, pg_ctl on a free port, as the `postgres` system
//! user when the test runs as root, since initdb refuses root), restarts it
//! with `pg_ctl restart -m fast` (which terminates every connection) twice
//! while a multi-slot worker, a single-slot worker and a scheduler are
//! busy, and checks that every job, queued before, delayed across or
//! enqueued after the restarts, runs exactly once.
//!
//! Skipped, with the reason printed, when no PostgreSQL server binaries are
//! found (`RESQ_PG_BINDIR`, `pg_config --bindir`, or
//! `/usr/lib/postgresql/<version>/bin`) or the instance cannot be set up;
//! with `RESQ_REQUIRE_BACKENDS=1` that is a failure instead.

mod common;

use resq_core::task::{JobContext, TaskError, Tasks};
use resq_core::{Backend, Queue, Scheduler, SchedulerConfig, Worker, WorkerConfig};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TEST: &str = "restart_under_load_loses_and_repeats_no_job";

/// A private PostgreSQL instance, stopped and deleted on drop.
struct Instance {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// The system user to run the server binaries as (when running as root).
    run_as: Option<String>,
}

impl Instance {
    /// initdb + start, or why not.
    fn start() -> Result<Instance, String> {
        let bin = server_bindir().ok_or("no PostgreSQL server binaries (initdb, pg_ctl) found")?;
        let run_as = if output("id", &["-u"]).is_some_and(|uid| uid == "0") {
            if output("id", &["-u", "postgres"]).is_none() {
                return Err("running as root and there is no postgres system user to run initdb as".into());
            }
            if !Path::new("/usr/sbin/runuser").exists() && output("which", &["runuser"]).is_none() {
                return Err("running as root and runuser is not available".into());
            }
            Some("postgres".to_owned())
        } else {
            None
        };
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("resq-pg-restart-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let instance = Instance { bin, dir, port, run_as };
        if let Some(user) = &instance.run_as {
            instance.check(Command::new("chown").arg(user).arg(&instance.dir).output(), "chown")?;
        }
        let data = instance.data();
        let initdb = instance.server_command(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
        );
        instance.check(initdb, "initdb")?;
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            instance.port,
            instance.dir.display()
        );
        let log = instance.dir.join("log").display().to_string();
        let start = instance.server_command(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start"],
        );
        instance.check(start, "pg_ctl start")?;
        Ok(instance)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?schema=resq_restart&migrate=true&max_connections=8&acquire_timeout_ms=2000",
            self.port
        )
    }

    /// Restarts the server: a fast shutdown terminates every session.
    fn restart(&self) -> Result<(), String> {
        let data = self.data();
        let log = self.dir.join("log").display().to_string();
        let out = self.server_command(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-m", "fast", "-w", "-t", "60", "restart"],
        );
        self.check(out, "pg_ctl restart")
    }

    /// Runs a server binary and waits for it. pg_ctl's output goes to a
    /// file: the server it starts inherits pg_ctl's stdout and stderr, and
    /// pipes held open by the server would never reach end-of-file.
    fn server_command(&self, tool: &str, args: &[&str]) -> std::io::Result<Output> {
        let path = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        cmd.args(args).current_dir(&self.dir).stdin(Stdio::null());
        if tool != "pg_ctl" {
            return cmd.output();
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("pg_ctl.out"))?;
        let status = cmd.stdout(out.try_clone()?).stderr(out).status()?;
        Ok(Output {
            status,
            stdout: Vec::new(),
            stderr: std::fs::read(self.dir.join("log")).unwrap_or_default(),
        })
    }

    fn check(&self, out: std::io::Result<Output>, what: &str) -> Result<(), String> {
        match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "{what} failed ({}): {}{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )),
            Err(e) => Err(format!("{what} could not run: {e}")),
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.server_command("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The trimmed stdout of a successful command.
fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Where initdb and pg_ctl live.
fn server_bindir() -> Option<PathBuf> {
    let has_tools = |d: &Path| d.join("initdb").exists() && d.join("pg_ctl").exists();
    if let Some(d) = std::env::var_os("RESQ_PG_BINDIR").map(PathBuf::from) {
        return has_tools(&d).then_some(d);
    }
    if let Some(d) = output("pg_config", &["--bindir"]).map(PathBuf::from) {
        if has_tools(&d) {
            return Some(d);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_tools(d))
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(15_432)
}

/// Retries an enqueue-side call while the pool replaces its dead connections.
async fn retry<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = resq_core::Result<T>>,
{
    let mut last = None;
    for _ in 0..100 {
        match call().await {
            Ok(v) => return v,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} kept failing after the restart: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_under_load_loses_and_repeats_no_job() {
    let server = match tokio::task::spawn_blocking(Instance::start).await {
        Ok(Ok(s)) => Arc::new(s),
        Ok(Err(reason)) => return common::skip(TEST, &reason),
        Err(e) => return common::skip(TEST, &format!("setup panicked: {e}")),
    };
    let backend = resq_postgres::connect(&server.url())
        .await
        .expect("connect to the private instance");
    let backend: Arc<dyn Backend> = backend;
    let queue = Queue::new(Arc::clone(&backend));

    // Queued before the restarts, delayed (due at once, and due while the
    // server restarts), and enqueued after them.
    const QUEUED: usize = 3_000;
    const DUE_NOW: usize = 200;
    const DUE_LATER: usize = 200;
    const AFTER: usize = 500;
    const TOTAL: usize = QUEUED + DUE_NOW + DUE_LATER + AFTER;
    let batch: Vec<resq_core::NewJob> = (0..QUEUED)
        .map(|i| resq_core::NewJob::new("q", "work", (i,)).unwrap())
        .collect();
    queue.enqueue_batch(batch).await.unwrap();
    for i in QUEUED..QUEUED + DUE_NOW {
        queue.enqueue_at(0, "q", "work", (i,)).await.unwrap();
    }
    for i in QUEUED + DUE_NOW..QUEUED + DUE_NOW + DUE_LATER {
        queue
            .enqueue_in(Duration::from_secs(2), "q", "work", (i,))
            .await
            .unwrap();
    }

    let runs: Arc<Vec<AtomicU8>> = Arc::new((0..TOTAL).map(|_| AtomicU8::new(0)).collect());
    let ran = Arc::new(AtomicUsize::new(0));
    let mut tasks = Tasks::new();
    let (r, n) = (Arc::clone(&runs), Arc::clone(&ran));
    tasks
        .register_fn("work", move |(i,): (usize,), _ctx: JobContext| {
            let (r, n) = (Arc::clone(&r), Arc::clone(&n));
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                if let Some(c) = r.get(i) {
                    c.fetch_add(1, Ordering::AcqRel);
                }
                n.fetch_add(1, Ordering::AcqRel);
                Ok::<_, TaskError>(())
            }
        })
        .unwrap();
    let tasks = Arc::new(tasks);
    let config = |concurrency: usize| WorkerConfig {
        poll_interval: Duration::from_millis(200),
        ping_interval: Duration::from_millis(200),
        concurrency,
        ..WorkerConfig::for_queues(["q"])
    };
    let slots = Worker::new(Arc::clone(&backend), Arc::clone(&tasks), config(16));
    let single = Worker::new(Arc::clone(&backend), Arc::clone(&tasks), config(1));
    let scheduler = Arc::new(
        Scheduler::new(
            Arc::clone(&backend),
            SchedulerConfig {
                poll_interval: Duration::from_millis(200),
                leader_ttl: Duration::from_secs(5),
                ..SchedulerConfig::default()
            },
        )
        .unwrap(),
    );
    let stop = CancellationToken::new();
    let slots_task = tokio::spawn({
        let t = stop.clone();
        async move { slots.run_until(t).await }
    });
    let single_task = tokio::spawn({
        let t = stop.clone();
        async move { single.run_until(t).await }
    });
    let scheduler_task = tokio::spawn({
        let (s, t) = (Arc::clone(&scheduler), stop.clone());
        async move { s.run_until(t).await }
    });

    for (restart, after) in [(1, 300), (2, 1_500)] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while ran.load(Ordering::Acquire) < after {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} jobs ran before restart {restart}",
                ran.load(Ordering::Acquire)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let s = Arc::clone(&server);
        let done = tokio::time::timeout(
            Duration::from_secs(90),
            tokio::task::spawn_blocking(move || s.restart()),
        )
        .await
        .unwrap_or_else(|_| panic!("restart {restart} did not finish within 90 s"))
        .unwrap();
        done.unwrap_or_else(|e| panic!("restart {restart}: {e}"));
        assert!(
            !slots_task.is_finished(),
            "the multi-slot worker died in restart {restart}"
        );
        assert!(
            !single_task.is_finished(),
            "the single worker died in restart {restart}"
        );
        assert!(!scheduler_task.is_finished(), "the scheduler died in restart {restart}");
    }

    for i in TOTAL - AFTER..TOTAL {
        retry("enqueue", || queue.enqueue("q", "work", (i,))).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while ran.load(Ordering::Acquire) < TOTAL {
        if tokio::time::Instant::now() >= deadline {
            let missing: Vec<usize> = (0..TOTAL).filter(|&i| runs[i].load(Ordering::Acquire) == 0).collect();
            let workers = backend.workers().await.unwrap_or_default();
            let mut stuck = Vec::new();
            for w in &workers {
                if let Ok(Some(on)) = backend.working_on(w).await {
                    stuck.push(on.payload);
                }
            }
            panic!(
                "{} of {TOTAL} jobs ran within 120 s of the restarts; never ran: {:?}…; queued: {:?}; \
                 working-on records: {stuck:?}",
                ran.load(Ordering::Acquire),
                &missing[..missing.len().min(20)],
                queue.length("q").await
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Anything run twice would have pushed the count past TOTAL by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let twice: Vec<usize> = (0..TOTAL).filter(|&i| runs[i].load(Ordering::Acquire) > 1).collect();
    let never: Vec<usize> = (0..TOTAL).filter(|&i| runs[i].load(Ordering::Acquire) == 0).collect();
    assert!(twice.is_empty(), "jobs run more than once: {twice:?}");
    assert!(never.is_empty(), "jobs never run: {never:?}");

    stop.cancel();
    slots_task.await.unwrap().unwrap();
    single_task.await.unwrap().unwrap();
    scheduler_task.await.unwrap().unwrap();
    assert_eq!(retry("queue length", || queue.length("q")).await, 0);
    assert!(retry("timestamps", || queue.timestamps()).await.is_empty());
    let _ = backend.close().await;
    drop(server);
}
