//! resq and the real node-resque share one Redis without stepping on each
//! other.
//!
//! Each test runs resq (this crate's backend with resq-core's `Queue`,
//! `Worker` and `Scheduler`) and node-resque 9.7.1 (driven by
//! `interop/nr.js`, one `node` process per action) against the same Redis
//! namespace, and checks that what one side writes the other reads and
//! manages correctly:
//!
//! 1. node-resque's normal, `enqueueAt` and `enqueueIn` jobs run on a resq
//!    worker and scheduler with exactly their arguments, never early;
//! 2. resq's normal and delayed jobs run on a node-resque worker and
//!    scheduler with exactly their arguments;
//! 3. failed entries written by either side are listed, removed and retried
//!    by the other (node-resque's `removeFailed` re-stringifies the entry, so
//!    this also proves resq's entries match `JSON.stringify` byte for byte);
//! 4. both sides agree on every inspection call: queues, lengths, queued
//!    jobs, stats, timestamps, `allDelayed`, `scheduledAt`, workers and
//!    `allWorkingOn` (each side sees the other's busy and idle workers);
//! 5. a resq and a node-resque scheduler contend for
//!    `resque_scheduler_leader_lock`: one leads at a time, and the other
//!    takes over when the leader stops (released lock) or dies (expired lock),
//!    in both directions;
//! 6. `del` and `delDelayed` from one side remove the other side's jobs,
//!    and each side refuses to schedule a job the other already scheduled in
//!    the same second;
//! 7. a worker of either side that dies mid-job is cleaned up by the other
//!    side's scheduler, and its job comes back with its arguments.
//! 8. each side honours the other's QueueLock;
//! 9. edge cases between the two (issue #11): node-resque's `cjson` `{}`
//!    args are repaired on every path into resq; a node-resque `*` worker
//!    killed while idle (no ping key) is cleaned, a live one beside it is
//!    not; resq's delayed jobs are never early under a node-resque
//!    scheduler; and the working-on record node-resque's cleanup leaves
//!    behind is not run again by a resq worker restarted under that name.
//!
//! Along the way, the payload bytes each side stores are compared with the
//! other side's encoding of the same job, and the failed entries' field order
//! with node-resque's.
//!
//! Requirements: a Redis server (`RESQ_REDIS_URL`, default
//! `redis://127.0.0.1:6379`) and `node` and `npm` on `PATH`; `npm ci` runs in
//! `interop/` when its `node_modules` is missing. Without them each test
//! prints `SKIP <test>: <reason>` and passes, unless `RESQ_REQUIRE_BACKENDS=1`,
//! which makes it fail. Run with
//! `RESQ_REQUIRE_BACKENDS=1 cargo test -p resq-redis --test interop_node_resque`.

use resq_core::job::encode_payload;
use resq_core::task::{JobContext, TaskError, Tasks};
use resq_core::time::{bucket_due_ms, bucket_of_ms, delayed_bucket_of_ms, now_ms, parse_date};
use resq_core::{
    Backend, Error, Queue, Scheduler, SchedulerConfig, StatsStore, StuckJobPolicy, Worker, WorkerConfig, WorkerEvent,
    WorkerStatus,
};
use resq_redis::{testing, RedisBackend};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

// ---- environment: skip rule, node and npm --------------------------------

/// The pinned node-resque version; `interop/package.json` must agree.
const NODE_RESQUE_VERSION: &str = "9.7.1";

/// True when `RESQ_REQUIRE_BACKENDS=1`: a missing prerequisite fails the test.
/// `RESQ_INTEROP_CLUSTER=1`: run on the Redis Cluster
/// (`RESQ_REDIS_CLUSTER_URL`), node-resque through an ioredis Cluster client.
fn on_cluster() -> bool {
    std::env::var("RESQ_INTEROP_CLUSTER").is_ok_and(|v| v == "1")
}

fn required() -> bool {
    std::env::var("RESQ_REQUIRE_BACKENDS").is_ok_and(|v| v.trim() == "1")
}

/// Prints `SKIP <test>: <reason>`, or panics when prerequisites are required.
fn skip(test: &str, reason: &str) {
    assert!(
        !required(),
        "{test}: prerequisite missing and RESQ_REQUIRE_BACKENDS=1: {reason}"
    );
    eprintln!("SKIP {test}: {reason}");
}

/// `interop/` at the workspace root, where `nr.js` and its `node_modules` live.
fn interop_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../interop"))
}

/// Runs `program args…` and returns its trimmed stdout, or why it failed.
fn run_tool(program: &str, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(interop_dir())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("`{program}` cannot be run ({e}); is it on PATH?"))?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The node-resque version installed in `interop/node_modules`, if any.
fn installed_node_resque() -> Option<String> {
    let text = std::fs::read_to_string(interop_dir().join("node_modules/node-resque/package.json")).ok()?;
    let manifest: Value = serde_json::from_str(&text).ok()?;
    manifest["version"].as_str().map(str::to_owned)
}

/// Checks for `node` (18 or newer) and `npm`, and runs `npm ci` in
/// `interop/` when node-resque is not installed there (or is another
/// version). Blocking; called once per test binary through [`node_ready`].
fn prepare_node() -> Result<(), String> {
    let version = run_tool("node", &["--version"])?;
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("cannot read node's version from {version:?}"))?;
    if major < 18 {
        return Err(format!(
            "node {version} is too old; node-resque's script needs 18 or newer"
        ));
    }
    run_tool("npm", &["--version"])?;
    if installed_node_resque().as_deref() != Some(NODE_RESQUE_VERSION) {
        eprintln!("interop: running `npm ci` in {}", interop_dir().display());
        run_tool("npm", &["ci", "--no-audit", "--no-fund"]).map_err(|e| format!("npm ci failed: {e}"))?;
        let got = installed_node_resque();
        if got.as_deref() != Some(NODE_RESQUE_VERSION) {
            return Err(format!(
                "npm ci installed node-resque {got:?}, expected {NODE_RESQUE_VERSION}"
            ));
        }
    }
    Ok(())
}

/// [`prepare_node`], done once however many tests ask at the same time.
async fn node_ready() -> Result<(), String> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    tokio::task::spawn_blocking(|| READY.get_or_init(prepare_node).clone())
        .await
        .map_err(|e| format!("preparing node panicked: {e}"))?
}

// ---- waiting with deadlines ----------------------------------------------

/// A deadline for a polling loop: `tick` sleeps a little, or panics with
/// `what` once the limit has passed.
struct Deadline {
    end: tokio::time::Instant,
    limit: Duration,
    what: String,
}

impl Deadline {
    fn new(limit: Duration, what: impl Into<String>) -> Self {
        Deadline {
            end: tokio::time::Instant::now() + limit,
            limit,
            what: what.into(),
        }
    }

    async fn tick(&self) {
        assert!(
            tokio::time::Instant::now() < self.end,
            "timed out after {:?} waiting for: {}",
            self.limit,
            self.what
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- one test's shared state ----------------------------------------------

/// One test's Redis namespace, seen from resq and from node-resque.
struct Env {
    test: &'static str,
    backend: Arc<RedisBackend>,
    queue: Queue,
    namespace: String,
    url: String,
}

impl Env {
    /// Connects in a fresh namespace and makes sure node-resque is installed.
    /// `None` (after printing `SKIP`) when Redis, node or npm is unavailable.
    async fn setup(test: &'static str) -> Option<Env> {
        let fresh = if on_cluster() {
            testing::fresh_cluster_redis().await
        } else {
            testing::fresh_redis().await
        };
        let backend = match fresh {
            Ok(b) => Arc::new(b),
            Err(reason) => {
                skip(test, &reason);
                return None;
            }
        };
        if let Err(reason) = node_ready().await {
            skip(test, &reason);
            return None;
        }
        let namespace = backend.config().namespace.clone();
        let url = backend.config().url.clone();
        let dynamic: Arc<dyn Backend> = backend.clone();
        Some(Env {
            test,
            queue: Queue::new(dynamic),
            backend,
            namespace,
            url,
        })
    }

    fn dyn_backend(&self) -> Arc<dyn Backend> {
        self.backend.clone()
    }

    fn node_command(&self, action: &str, opts: &Value) -> Command {
        let mut cmd = Command::new("node");
        cmd.arg(interop_dir().join("nr.js"))
            .arg(action)
            .arg(opts.to_string())
            .current_dir(interop_dir())
            .env("REDIS_URL", &self.url)
            .env("NAMESPACE", &self.namespace)
            .env(
                "REDIS_CLUSTER_NODES",
                testing::cluster_host_ports(self.backend.config()),
            )
            .kill_on_drop(true);
        cmd
    }

    /// Runs one node-resque action and returns its `result`, or its error.
    async fn nr_try(&self, action: &str, opts: Value) -> Result<Value, String> {
        let mut cmd = self.node_command(action, &opts);
        cmd.stdin(Stdio::null());
        let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
            .await
            .map_err(|_| format!("node {action} did not finish within 30 s"))?
            .map_err(|e| format!("cannot run node: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stdout.lines().last().unwrap_or("");
        let answer: Value = serde_json::from_str(last)
            .map_err(|e| format!("node {action} {opts}: no JSON answer ({e}); stdout {stdout:?}, stderr {stderr:?}"))?;
        if answer["ok"] == json!(true) && out.status.success() {
            Ok(answer["result"].clone())
        } else {
            Err(format!(
                "node {action} {opts} failed ({}): {}; stderr {stderr:?}",
                out.status, answer["error"]
            ))
        }
    }

    /// [`Env::nr_try`] that must succeed.
    async fn nr(&self, action: &str, opts: Value) -> Value {
        match self.nr_try(action, opts).await {
            Ok(v) => v,
            Err(e) => panic!("{}: {e}", self.test),
        }
    }

    /// node-resque's whole view, with these queues listed and these jobs
    /// (`{queue, class, args}`) looked up with `scheduledAt`.
    async fn inspect(&self, queues: &[&str], jobs: Value) -> Value {
        self.nr("inspect", json!({ "queues": queues, "jobs": jobs })).await
    }

    /// Starts a long-running node-resque action (`work`, `schedule`).
    fn spawn_node(&self, action: &str, mut opts: Value) -> NodeProc {
        opts["stdin"] = json!(true);
        let mut cmd = self.node_command(action, &opts);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node {action}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let event = serde_json::from_str(&line).unwrap_or_else(|_| json!({ "event": "raw", "line": line }));
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        tokio::spawn(async move {
            let mut buf = String::new();
            let _ = stderr_pipe.read_to_string(&mut buf).await;
            sink.lock().expect("stderr lock").push_str(&buf);
        });
        NodeProc {
            what: format!("{}: node {action} {opts}", self.test),
            stdin: child.stdin.take(),
            child,
            rx,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Deletes the namespace's keys (the backend would also do it on drop).
    async fn finish(self) {
        self.backend
            .delete_namespace()
            .await
            .unwrap_or_else(|e| panic!("{}: cannot delete the namespace: {e}", self.test));
    }
}

/// A running node-resque process and the JSON events it printed.
struct NodeProc {
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    rx: mpsc::UnboundedReceiver<Value>,
    /// Every event received so far, in order.
    seen: Vec<Value>,
    stderr: Arc<Mutex<String>>,
}

impl NodeProc {
    fn diagnostics(&self) -> String {
        format!(
            "{}\nevents: {:#?}\nstderr: {}",
            self.what,
            self.seen,
            self.stderr.lock().expect("stderr lock")
        )
    }

    /// Receives events until one satisfies `pick`; panics after `limit`.
    async fn wait_for(&mut self, limit: Duration, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(event)) => {
                    self.seen.push(event.clone());
                    if pick(&event) {
                        return event;
                    }
                }
                Ok(None) => panic!("node exited before {what}\n{}", self.diagnostics()),
                Err(_) => panic!("no {what} within {limit:?}\n{}", self.diagnostics()),
            }
        }
    }

    /// Waits for an event named `name`.
    async fn wait_event(&mut self, limit: Duration, name: &str) -> Value {
        self.wait_for(limit, &format!("event {name:?}"), |e| e["event"] == name)
            .await
    }

    /// Takes whatever events have arrived, without waiting.
    fn drain(&mut self) {
        while let Ok(event) = self.rx.try_recv() {
            self.seen.push(event);
        }
    }

    /// The events named `name` received so far.
    fn events(&self, name: &str) -> Vec<Value> {
        self.seen.iter().filter(|e| e["event"] == name).cloned().collect()
    }

    /// Sends a command line (`release`, `end`) to the process.
    async fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        let sent = match stdin.write_all(format!("{command}\n").as_bytes()).await {
            Ok(()) => stdin.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            panic!("cannot write to node: {e}\n{}", self.diagnostics());
        }
    }

    /// Asks the process to stop (unless it already ended by itself), waits
    /// for it to exit cleanly (30 s at most) and returns its `end` event.
    /// The events stay readable through [`NodeProc::events`].
    async fn finish(&mut self) -> Value {
        self.drain();
        if let Some(mut stdin) = self.stdin.take() {
            // It may already be gone (count reached); then the write fails harmlessly.
            let _ = stdin.write_all(b"end\n").await;
            let _ = stdin.flush().await;
        }
        let end = match self.events("end").into_iter().next() {
            Some(end) => end,
            None => self.wait_event(Duration::from_secs(30), "end").await,
        };
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("node did not exit\n{}", self.diagnostics()))
            .expect("wait for node");
        assert!(status.success(), "node exited with {status}\n{}", self.diagnostics());
        self.drain();
        end
    }

    /// Kills the process at once (a crash: nothing is cleaned up).
    async fn kill(mut self) {
        self.child.kill().await.expect("kill node");
    }
}

// ---- resq's side: tasks, workers, schedulers --------------------------------

/// One job run by a resq task: its class, its args, and when it started.
#[derive(Clone, Debug)]
struct Run {
    class: String,
    args: Vec<Value>,
    at_ms: i64,
}

type Runs = Arc<Mutex<Vec<Run>>>;

fn record(runs: &Runs, ctx: &JobContext, args: Vec<Value>) {
    runs.lock().expect("runs lock").push(Run {
        class: ctx.job.class.clone(),
        args,
        at_ms: now_ms(),
    });
}

fn recorded(runs: &Runs) -> Vec<Run> {
    runs.lock().expect("runs lock").clone()
}

/// The tasks both sides implement alike: `add(a, b)` returns `a + b`,
/// `echo(..)` returns its args, `boom(..)` fails with `boom <args JSON>`,
/// `slow(..)` waits for a permit from `gate` (20 s at most). Every run is
/// recorded with its exact args.
fn resq_tasks(runs: &Runs, gate: &Arc<Semaphore>) -> Arc<Tasks> {
    let mut tasks = Tasks::new();
    let r = Arc::clone(runs);
    tasks
        .register_fn("add", move |(a, b): (i64, i64), ctx: JobContext| {
            record(&r, &ctx, vec![json!(a), json!(b)]);
            async move { Ok::<_, TaskError>(a + b) }
        })
        .expect("register add");
    let r = Arc::clone(runs);
    tasks
        .register_fn("echo", move |args: Vec<Value>, ctx: JobContext| {
            record(&r, &ctx, args.clone());
            async move { Ok::<_, TaskError>(args) }
        })
        .expect("register echo");
    let r = Arc::clone(runs);
    tasks
        .register_fn("boom", move |args: Vec<Value>, ctx: JobContext| {
            record(&r, &ctx, args.clone());
            async move { Err::<(), _>(TaskError::new(format!("boom {}", Value::Array(args)))) }
        })
        .expect("register boom");
    let r = Arc::clone(runs);
    let gate = Arc::clone(gate);
    tasks
        .register_fn("slow", move |args: Vec<Value>, ctx: JobContext| {
            let r = Arc::clone(&r);
            let gate = Arc::clone(&gate);
            async move {
                if let Ok(Ok(permit)) = tokio::time::timeout(Duration::from_secs(20), gate.acquire()).await {
                    permit.forget();
                }
                record(&r, &ctx, args.clone());
                Ok::<_, TaskError>(args)
            }
        })
        .expect("register slow");
    Arc::new(tasks)
}

/// A resq worker running in the background.
struct ResqWorker {
    name: String,
    stop: CancellationToken,
    handle: JoinHandle<resq_core::Result<()>>,
    events: broadcast::Receiver<WorkerEvent>,
}

impl ResqWorker {
    fn spawn(env: &Env, tasks: &Arc<Tasks>, queues: &[&str]) -> Self {
        Self::spawn_named(env, tasks, queues, None)
    }

    /// [`ResqWorker::spawn`] with a fixed name (`None`: a unique one).
    fn spawn_named(env: &Env, tasks: &Arc<Tasks>, queues: &[&str], name: Option<&str>) -> Self {
        let config = WorkerConfig {
            name: name.map(str::to_owned),
            poll_interval: Duration::from_millis(100),
            ping_interval: Duration::from_millis(500),
            shutdown_timeout: Duration::from_secs(5),
            ..WorkerConfig::for_queues(queues.iter().copied())
        };
        let worker = Worker::new(env.dyn_backend(), Arc::clone(tasks), config);
        let events = worker.subscribe();
        let name = worker.name().to_owned();
        let stop = CancellationToken::new();
        let handle = tokio::spawn({
            let t = stop.clone();
            async move { worker.run_until(t).await }
        });
        ResqWorker {
            name,
            stop,
            handle,
            events,
        }
    }

    /// Waits until the worker took a job (its `job` event).
    async fn wait_job(&mut self, limit: Duration) -> Arc<resq_core::Job> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Ok(WorkerEvent::Job { job, .. })) => return job,
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) => panic!("worker {} ended", self.name),
                Err(_) => panic!("worker {} took no job within {limit:?}", self.name),
            }
        }
    }

    /// Waits until the worker started and then polled `n` times.
    async fn wait_polls(&mut self, n: usize, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let (mut started, mut polls) = (false, 0);
        while polls < n {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Ok(WorkerEvent::Start { .. })) => started = true,
                Ok(Ok(WorkerEvent::Poll { .. })) if started => polls += 1,
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) => panic!("worker {} ended", self.name),
                Err(_) => panic!("worker {} did not poll {n} times within {limit:?}", self.name),
            }
        }
    }

    /// Stops gracefully and checks that the worker ended cleanly.
    async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.handle)
            .await
            .expect("resq worker stops within 15 s")
            .expect("resq worker did not panic")
            .expect("resq worker ended cleanly");
    }

    /// Kills the worker at once, as a crash would: its registration, ping
    /// and working-on record stay behind.
    async fn crash(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

/// Scheduler settings for tests: a 100 ms poll, a 2 s leader lock and no
/// stuck-worker cleanup.
fn quick_scheduler(name: &str) -> SchedulerConfig {
    SchedulerConfig {
        name: Some(name.to_owned()),
        poll_interval: Duration::from_millis(100),
        leader_ttl: Duration::from_secs(2),
        stuck_worker_timeout: None,
        ..SchedulerConfig::default()
    }
}

/// A resq scheduler running in the background.
struct ResqScheduler {
    scheduler: Arc<Scheduler>,
    stop: CancellationToken,
    handle: JoinHandle<resq_core::Result<()>>,
}

impl ResqScheduler {
    /// Polls every 100 ms with a 2 s leader lock; no stuck-worker cleanup.
    fn spawn(env: &Env, name: &str) -> Self {
        Self::spawn_with(env, quick_scheduler(name))
    }

    fn spawn_with(env: &Env, config: SchedulerConfig) -> Self {
        let scheduler = Arc::new(Scheduler::new(env.dyn_backend(), config).expect("valid scheduler config"));
        let stop = CancellationToken::new();
        let running = Arc::clone(&scheduler);
        let token = stop.clone();
        let handle = tokio::spawn(async move { running.run_until(token).await });
        ResqScheduler {
            scheduler,
            stop,
            handle,
        }
    }

    fn is_leader(&self) -> bool {
        self.scheduler.is_leader()
    }

    /// Stops gracefully (releasing the lock) and checks it ended cleanly.
    async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.handle)
            .await
            .expect("resq scheduler stops within 15 s")
            .expect("resq scheduler did not panic")
            .expect("resq scheduler ended cleanly");
    }

    /// Kills the scheduler's task without letting it release the lock.
    async fn crash(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

// ---- shared fixtures ------------------------------------------------------

/// Arguments whose JSON text is easy to get wrong: floats in ECMAScript
/// form, escapes, non-ASCII, nested values and empty containers.
fn tricky_args() -> Value {
    json!([
        1,
        2.5,
        1e21,
        1e-7,
        -3,
        0.1,
        "é/\"\\\n\t\u{1}\u{2028} ok",
        {"z": 1, "a": [null, true, false]},
        [],
        {}
    ])
}

fn job(queue: &str, class: &str, args: Value) -> Value {
    json!({ "queue": queue, "class": class, "args": args })
}

fn args_vec(args: &Value) -> Vec<Value> {
    args.as_array().expect("args is an array").clone()
}

/// node-resque's encoding of a job, from node itself.
async fn node_encoding(env: &Env, queue: &str, class: &str, args: &Value) -> String {
    env.nr("encode", job(queue, class, args.clone()))
        .await
        .as_str()
        .expect("encode returns a string")
        .to_owned()
}

fn parse(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|e| panic!("not JSON ({e}): {raw}"))
}

/// The raw payloads of a queue, as resq reads them.
async fn raw_queue(env: &Env, queue: &str) -> Vec<String> {
    env.queue
        .queued(queue, 0, -1)
        .await
        .expect("queued")
        .iter()
        .map(|d| d.raw().to_owned())
        .collect()
}

// ---- 1. node-resque enqueues, resq runs ------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_jobs_run_on_resq_worker_and_scheduler() {
    let Some(env) = Env::setup("node_jobs_run_on_resq_worker_and_scheduler").await else {
        return;
    };
    let q = "from_node";
    let tricky = tricky_args();
    env.nr("enqueue", job(q, "add", json!([1, 2]))).await;
    env.nr("enqueue", job(q, "echo", tricky.clone())).await;
    // 1.5 s apart, so the two delayed jobs land in different buckets.
    let at = now_ms() + 1200;
    env.nr(
        "enqueueAt",
        json!({ "timestamp": at, "queue": q, "class": "echo", "args": ["at", at] }),
    )
    .await;
    let enqueued_in = env
        .nr(
            "enqueueIn",
            json!({ "delay": 2700, "queue": q, "class": "add", "args": [20, 22] }),
        )
        .await;
    let in_not_before = enqueued_in["before"].as_i64().expect("before") + 2700;

    // node-resque's bytes are exactly resq's encoding of the same jobs.
    assert_eq!(
        raw_queue(&env, q).await,
        vec![
            encode_payload(q, "add", &[json!(1), json!(2)]),
            encode_payload(q, "echo", &args_vec(&tricky)),
        ]
    );
    let at_bucket = env.queue.delayed_at(at).await.expect("delayed_at");
    assert_eq!(at_bucket.r_timestamp, bucket_of_ms(at));
    assert_eq!(
        at_bucket.tasks.iter().map(|d| d.raw().to_owned()).collect::<Vec<_>>(),
        vec![encode_payload(q, "echo", &[json!("at"), json!(at)])]
    );
    assert_eq!(env.queue.timestamps().await.expect("timestamps").len(), 2);

    let runs: Runs = Arc::default();
    let tasks = resq_tasks(&runs, &Arc::new(Semaphore::new(0)));
    let scheduler = ResqScheduler::spawn(&env, "resq-scheduler");
    let worker = ResqWorker::spawn(&env, &tasks, &[q]);
    let deadline = Deadline::new(Duration::from_secs(20), "four jobs run on resq");
    while recorded(&runs).len() < 4 {
        deadline.tick().await;
    }
    worker.shutdown().await;
    scheduler.shutdown().await;

    let got = recorded(&runs);
    assert_eq!(got.len(), 4, "{got:?}");
    let find = |class: &str, args: &[Value]| {
        got.iter()
            .find(|r| r.class == class && r.args == args)
            .unwrap_or_else(|| panic!("no run of {class} {args:?} in {got:?}"))
            .clone()
    };
    find("add", &[json!(1), json!(2)]);
    find("echo", &args_vec(&tricky));
    let at_run = find("echo", &[json!("at"), json!(at)]);
    let in_run = find("add", &[json!(20), json!(22)]);
    // resq promotes node-resque's buckets when node-resque would, never
    // sooner: bucket `round(t / 1000)` from its `s·1000 − 500` ms, which is
    // at most half a second before `t` (node-resque's own rounding).
    let not_before = |t: i64| bucket_due_ms(bucket_of_ms(t));
    assert!(
        at_run.at_ms >= not_before(at),
        "enqueueAt job ran {} ms before its bucket was due",
        not_before(at) - at_run.at_ms
    );
    assert!(
        in_run.at_ms >= not_before(in_not_before),
        "enqueueIn job ran {} ms before its bucket was due",
        not_before(in_not_before) - in_run.at_ms
    );

    // Both sides now see the same empty schedule and the same counters.
    assert_eq!(env.queue.failed_count().await.expect("failed_count"), 0);
    assert_eq!(env.queue.length(q).await.expect("length"), 0);
    assert!(env.queue.timestamps().await.expect("timestamps").is_empty());
    let node = env.inspect(&[q], json!([])).await;
    assert_eq!(node["stats"]["processed"], "4");
    assert_eq!(node["timestamps"], json!([]));
    assert_eq!(node["allDelayed"], json!({}));
    assert_eq!(node["length"][q], 0);
    assert_eq!(node["workers"], json!({}), "the resq worker unregistered");
    assert_eq!(node["leader"], Value::Null, "the resq scheduler released the lock");
    env.finish().await;
}

// ---- 2. resq enqueues, node-resque runs ------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resq_jobs_run_on_node_worker_and_scheduler() {
    let Some(env) = Env::setup("resq_jobs_run_on_node_worker_and_scheduler").await else {
        return;
    };
    let q = "from_resq";
    let tricky = tricky_args();
    env.queue.enqueue(q, "add", (1, 2)).await.expect("enqueue");
    env.queue.enqueue(q, "echo", &tricky).await.expect("enqueue");
    // 1.5 s apart, so the two delayed jobs land in different buckets.
    let at = now_ms() + 1200;
    env.queue
        .enqueue_at(at, q, "echo", ("at", at))
        .await
        .expect("enqueue_at");
    env.queue
        .enqueue_in(Duration::from_millis(2700), q, "add", (20, 22))
        .await
        .expect("enqueue_in");

    // resq's bytes are exactly node-resque's encoding of the same jobs.
    assert_eq!(
        raw_queue(&env, q).await,
        vec![
            node_encoding(&env, q, "add", &json!([1, 2])).await,
            node_encoding(&env, q, "echo", &tricky).await,
        ]
    );
    // resq filed it under the first bucket due no sooner than `at`.
    let at_bucket = env
        .queue
        .delayed_at(delayed_bucket_of_ms(at) * 1000)
        .await
        .expect("delayed_at");
    assert_eq!(
        at_bucket.tasks.iter().map(|d| d.raw().to_owned()).collect::<Vec<_>>(),
        vec![node_encoding(&env, q, "echo", &json!(["at", at])).await]
    );

    let mut scheduler = env.spawn_node(
        "schedule",
        json!({ "name": "node-scheduler", "timeout": 100, "leaderLockTimeout": 3, "maxMs": 30000 }),
    );
    let mut worker = env.spawn_node(
        "work",
        json!({ "queues": [q], "name": "node-host:4242", "count": 4, "timeout": 100, "maxMs": 30000 }),
    );
    let end = worker.wait_event(Duration::from_secs(25), "end").await;
    assert_eq!(end["why"], "count", "the node worker ran all four jobs");
    worker.finish().await;
    let scheduler_end = scheduler.finish().await;
    assert_eq!(scheduler_end["wasLeader"], true, "the node scheduler led");

    let successes = worker.events("success");
    assert_eq!(successes.len(), 4, "{successes:#?}");
    assert!(worker.events("failure").is_empty(), "{:#?}", worker.seen);
    let result_of = |class: &str, args: &Value| {
        let e = successes
            .iter()
            .find(|e| e["job"]["class"] == class && e["job"]["args"] == *args)
            .unwrap_or_else(|| panic!("no success of {class} {args} in {successes:#?}"));
        assert_eq!(e["queue"], q);
        assert_eq!(e["job"]["queue"], q);
        e["result"].clone()
    };
    assert_eq!(result_of("add", &json!([1, 2])), json!(3));
    assert_eq!(result_of("echo", &tricky), tricky);
    assert_eq!(result_of("echo", &json!(["at", at])), json!(["at", at]));
    assert_eq!(result_of("add", &json!([20, 22])), json!(42));
    let transferred = scheduler.events("transferredJob");
    assert_eq!(transferred.len(), 2, "{transferred:#?}");
    assert!(
        transferred
            .iter()
            .any(|e| e["timestamp"] == delayed_bucket_of_ms(at) && e["job"]["args"] == json!(["at", at])),
        "{transferred:#?}"
    );

    // resq sees node-resque's bookkeeping.
    let stats = env.queue.stats().await.expect("stats");
    assert_eq!(stats.get("processed"), Some(&4), "{stats:?}");
    assert_eq!(env.queue.length(q).await.expect("length"), 0);
    assert!(env.queue.timestamps().await.expect("timestamps").is_empty());
    assert!(env.queue.all_delayed().await.expect("all_delayed").is_empty());
    assert_eq!(env.queue.failed_count().await.expect("failed_count"), 0);
    assert_eq!(env.queue.leader().await.expect("leader"), None);
    assert!(env.queue.workers().await.expect("workers").is_empty());
    env.finish().await;
}

// ---- 3. failed entries ------------------------------------------------------

/// node-resque's `stats()` (string values) as numbers, to compare with resq's.
fn node_stats(node: &Value) -> BTreeMap<String, i64> {
    node["stats"]
        .as_object()
        .expect("stats is an object")
        .iter()
        .map(|(k, v)| {
            let n = v.as_str().and_then(|s| s.parse().ok());
            (k.clone(), n.unwrap_or_else(|| panic!("stat {k} is {v}")))
        })
        .collect()
}

/// The top-level keys of a JSON object, in the order they are written.
fn field_order(raw: &str) -> Vec<String> {
    parse(raw).as_object().expect("an object").keys().cloned().collect()
}

/// Asserts that a date (epoch ms) is within a minute of now.
fn assert_recent(what: &str, ms: Option<i64>) {
    let ms = ms.unwrap_or_else(|| panic!("{what} does not parse"));
    assert!((now_ms() - ms).abs() < 60_000, "{what} is {ms}, not about now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_entries_are_managed_across_sides() {
    let Some(env) = Env::setup("failed_entries_are_managed_across_sides").await else {
        return;
    };

    // resq writes three failures; node-resque lists, removes and retries them.
    let q = "fails_in_resq";
    for i in 1..=3 {
        env.queue.enqueue(q, "boom", (i,)).await.expect("enqueue");
    }
    let runs: Runs = Arc::default();
    let tasks = resq_tasks(&runs, &Arc::new(Semaphore::new(0)));
    let worker = ResqWorker::spawn(&env, &tasks, &[q]);
    let resq_worker = worker.name.clone();
    let deadline = Deadline::new(Duration::from_secs(15), "three failures from resq");
    while env.queue.failed_count().await.expect("failed_count") < 3 {
        deadline.tick().await;
    }
    worker.shutdown().await;

    let node = env.inspect(&[q], json!([])).await;
    assert_eq!(node["failedCount"], 3);
    let listed = node["failed"].as_array().expect("failed list");
    assert_eq!(listed.len(), 3);
    for (k, f) in listed.iter().enumerate() {
        let i = k + 1;
        assert_eq!(f["worker"], resq_worker.as_str());
        assert_eq!(f["queue"], q);
        assert_eq!(f["payload"], json!({ "class": "boom", "queue": q, "args": [i] }));
        assert_eq!(f["exception"], "Error");
        assert_eq!(f["error"], format!("boom [{i}]"));
        assert!(f["backtrace"].is_array(), "{f}");
        assert_recent("failed_at as node-resque reads it", node["failedAtParsed"][k].as_i64());
    }
    let resq_written = env.queue.failed(0, 0).await.expect("failed").remove(0).raw;
    // removeFailed matches by JSON.stringify(parsed entry): resq's bytes must be exactly that.
    assert_eq!(env.nr("removeFailed", json!({ "index": 0 })).await, json!(1));
    let left = env.queue.failed(0, -1).await.expect("failed");
    assert_eq!(
        left.iter().map(|f| f.job().expect("job").args).collect::<Vec<_>>(),
        vec![vec![json!(2)], vec![json!(3)]]
    );
    assert_eq!(env.nr("retryAndRemoveFailed", json!({ "index": 0 })).await, json!(true));
    assert_eq!(env.queue.failed_count().await.expect("failed_count"), 1);
    assert_eq!(raw_queue(&env, q).await, vec![encode_payload(q, "boom", &[json!(2)])]);
    assert_eq!(env.nr("removeFailed", json!({ "index": 0 })).await, json!(1));
    assert_eq!(env.queue.failed_count().await.expect("failed_count"), 0);

    // node-resque writes three failures; resq lists, removes and retries them.
    let q2 = "fails_in_node";
    for i in 4..=6 {
        env.nr("enqueue", job(q2, "boom", json!([i]))).await;
    }
    let node_worker = "node-host:777";
    let mut nw = env.spawn_node(
        "work",
        json!({ "queues": [q2], "name": node_worker, "count": 3, "timeout": 100, "maxMs": 30000 }),
    );
    nw.wait_event(Duration::from_secs(25), "end").await;
    nw.finish().await;
    assert_eq!(nw.events("failure").len(), 3, "{:#?}", nw.seen);

    let entries = env.queue.failed(0, -1).await.expect("failed");
    assert_eq!(entries.len(), 3);
    // Both sides write the entry's fields in the same order.
    assert_eq!(field_order(&resq_written), field_order(&entries[0].raw));
    assert_eq!(
        field_order(&resq_written),
        [
            "worker",
            "queue",
            "payload",
            "exception",
            "error",
            "backtrace",
            "failed_at"
        ]
    );
    for (k, e) in entries.iter().enumerate() {
        let i = k + 4;
        assert_eq!(e.worker.as_deref(), Some(node_worker));
        assert_eq!(e.queue.as_deref(), Some(q2));
        assert_eq!(e.exception.as_deref(), Some("Error"));
        assert_eq!(e.error.as_deref(), Some(format!("boom [{i}]").as_str()));
        assert!(!e.backtrace.is_empty(), "node-resque records the stack: {e:?}");
        assert_eq!(
            e.payload.as_deref(),
            Some(node_encoding(&env, q2, "boom", &json!([i])).await.as_str())
        );
        let j = e.job().expect("payload decodes");
        assert_eq!(
            (j.class.as_str(), j.queue.as_deref(), j.args.clone()),
            ("boom", Some(q2), vec![json!(i)])
        );
        assert_recent(
            "failed_at as resq reads it",
            e.failed_at.as_deref().and_then(parse_date),
        );
    }
    assert_eq!(env.queue.remove_failed(&entries[0]).await.expect("remove_failed"), 1);
    assert_eq!(env.queue.remove_failed(&entries[0]).await.expect("remove_failed"), 0);
    env.queue
        .retry_and_remove_failed(&entries[1])
        .await
        .expect("retry_and_remove_failed");
    assert!(
        matches!(
            env.queue.retry_and_remove_failed(&entries[1]).await,
            Err(Error::NotInFailedQueue)
        ),
        "a retried entry is gone"
    );
    assert_eq!(
        raw_queue(&env, q2).await,
        vec![entries[1].payload.clone().expect("payload")]
    );

    let node = env.inspect(&[q2], json!([])).await;
    assert_eq!(node["failedCount"], 1);
    assert_eq!(node["failed"][0]["payload"]["args"], json!([6]));
    assert_eq!(
        node["queued"][q2],
        json!([{ "class": "boom", "queue": q2, "args": [5] }])
    );
    // Three failures counted by each side, per-worker counters removed by each side.
    let stats = env.queue.stats().await.expect("stats");
    assert_eq!(stats.get("failed"), Some(&6), "{stats:?}");
    assert_eq!(node_stats(&node), stats);
    env.finish().await;
}

// ---- 4. inspection ----------------------------------------------------------

/// resq's `all_delayed` in node-resque's shape: `{ "<ms>": [job, …] }`.
async fn resq_all_delayed_as_json(env: &Env) -> Value {
    let all = env.queue.all_delayed().await.expect("all_delayed");
    let mut out = serde_json::Map::new();
    for (ms, jobs) in all {
        out.insert(ms.to_string(), jobs.iter().map(|d| parse(d.raw())).collect());
    }
    Value::Object(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspection_agrees_on_both_sides() {
    let Some(env) = Env::setup("inspection_agrees_on_both_sides").await else {
        return;
    };
    let (qa, qb) = ("inspect_a", "inspect_b");
    env.queue.enqueue(qa, "add", (1, 2)).await.expect("enqueue");
    env.queue.enqueue(qa, "echo", tricky_args()).await.expect("enqueue");
    env.nr("enqueue", job(qb, "add", json!([3, 4]))).await;
    // Times at x.500 s, where node-resque's bucket (`round(t / 1000)`) and
    // resq's (`ceil((t + 500) / 1000)`) are the same one.
    let now = now_ms().div_euclid(1000) * 1000 + 500;
    let (t1, t2) = (now + 3_600_000, now + 7_200_000);
    let (b1, b2) = (bucket_of_ms(t1), bucket_of_ms(t2));
    assert_eq!((b1, b2), (delayed_bucket_of_ms(t1), delayed_bucket_of_ms(t2)));
    env.queue.enqueue_at(t1, qa, "echo", ("r1",)).await.expect("enqueue_at");
    env.queue.enqueue_at(t2, qa, "echo", ("r2",)).await.expect("enqueue_at");
    env.nr(
        "enqueueAt",
        json!({ "timestamp": t2, "queue": qb, "class": "add", "args": [5, 6] }),
    )
    .await;
    env.backend.incr_stat("processed", 7).await.expect("incr_stat");
    env.backend.incr_stat("failed", 2).await.expect("incr_stat");

    let lookups = [
        (qa, "echo", json!(["r1"])),
        (qa, "echo", json!(["r2"])),
        (qb, "add", json!([5, 6])),
        (qa, "add", json!([1, 2])),
    ];
    let node = env
        .inspect(
            &[qa, qb],
            lookups.iter().map(|(q, c, a)| job(q, c, a.clone())).collect(),
        )
        .await;

    assert_eq!(env.queue.queues().await.expect("queues"), vec![qa, qb]);
    assert_eq!(node["queues"], json!([qa, qb]));
    for q in [qa, qb] {
        assert_eq!(node["length"][q], env.queue.length(q).await.expect("length"));
        let resq_queued: Vec<Value> = raw_queue(&env, q).await.iter().map(|r| parse(r)).collect();
        assert_eq!(node["queued"][q], Value::Array(resq_queued), "queue {q}");
    }
    assert_eq!(node["length"][qa], 2);
    // timestamps: ms on both sides.
    assert_eq!(
        env.queue.timestamps().await.expect("timestamps"),
        vec![b1 * 1000, b2 * 1000]
    );
    assert_eq!(node["timestamps"], json!([b1 * 1000, b2 * 1000]));
    // allDelayed: keyed by ms (strings in node-resque).
    let all = resq_all_delayed_as_json(&env).await;
    assert_eq!(node["allDelayed"], all);
    assert_eq!(
        node["allDelayed"][(b2 * 1000).to_string()],
        json!([
            { "class": "echo", "queue": qa, "args": ["r2"] },
            { "class": "add", "queue": qb, "args": [5, 6] }
        ])
    );
    // scheduledAt: seconds on both sides.
    let expected = [vec![b1], vec![b2], vec![b2], vec![]];
    for (k, (q, class, args)) in lookups.iter().enumerate() {
        let resq_at = env.queue.scheduled_at(q, class, args).await.expect("scheduled_at");
        assert_eq!(resq_at, expected[k], "resq scheduled_at {q} {class} {args}");
        assert_eq!(
            node["scheduledAt"][k],
            json!(expected[k]),
            "node scheduledAt {q} {class} {args}"
        );
    }
    let stats = env.queue.stats().await.expect("stats");
    assert_eq!(node_stats(&node), stats);
    assert_eq!(stats.get("processed"), Some(&7));
    assert_eq!(node["leader"], Value::Null);

    // Workers: a busy and an idle resq worker, a busy node-resque worker.
    let runs: Runs = Arc::default();
    let gate = Arc::new(Semaphore::new(0));
    let tasks = resq_tasks(&runs, &gate);
    let mut busy = ResqWorker::spawn(&env, &tasks, &["slow_resq"]);
    let idle = ResqWorker::spawn(&env, &tasks, &["idle_resq"]);
    env.queue.enqueue("slow_resq", "slow", ("r",)).await.expect("enqueue");
    busy.wait_job(Duration::from_secs(15)).await;
    let node_worker = "node-host:5150";
    let mut nw = env.spawn_node(
        "work",
        json!({ "queues": ["slow_node"], "name": node_worker, "timeout": 100, "maxMs": 40000 }),
    );
    nw.wait_event(Duration::from_secs(15), "start").await;
    env.nr("enqueue", job("slow_node", "slow", json!(["n"]))).await;
    nw.wait_event(Duration::from_secs(15), "job").await;
    let deadline = Deadline::new(Duration::from_secs(15), "the idle resq worker registers");
    while !env.queue.workers().await.expect("workers").contains_key(&idle.name) {
        deadline.tick().await;
    }

    // node-resque's view of resq's workers.
    let node = env.inspect(&[], json!([])).await;
    assert_eq!(node["workers"][&busy.name], "slow_resq", "{}", node["workers"]);
    assert_eq!(node["workers"][&idle.name], "idle_resq");
    assert_eq!(node["workers"][node_worker], "slow_node");
    assert_eq!(node["workers"].as_object().map(|w| w.len()), Some(3));
    let w = &node["allWorkingOn"][&busy.name];
    assert_eq!(w["worker"], busy.name.as_str(), "{w}");
    assert_eq!(w["queue"], "slow_resq");
    assert_eq!(
        w["payload"],
        json!({ "class": "slow", "queue": "slow_resq", "args": ["r"] })
    );
    assert_recent(
        "run_at as node-resque reads it",
        node["runAtParsed"][&busy.name].as_i64(),
    );
    assert_eq!(node["allWorkingOn"][&idle.name], "started");
    assert_eq!(node["allWorkingOn"][node_worker]["payload"]["args"], json!(["n"]));

    // resq's view of node-resque's worker (and of its own).
    let workers = env.queue.workers().await.expect("workers");
    assert_eq!(workers.get(node_worker).map(String::as_str), Some("slow_node"));
    assert_eq!(workers.get(&busy.name).map(String::as_str), Some("slow_resq"));
    let all = env.queue.all_working_on().await.expect("all_working_on");
    assert_eq!(all.len(), 3, "{all:?}");
    let WorkerStatus::Working(wo) = &all[node_worker] else {
        panic!("the node worker is busy: {all:?}")
    };
    assert_eq!(wo.worker, node_worker);
    assert_eq!(wo.queue, "slow_node");
    // node-resque's claim script re-encodes the payload through cjson (key
    // order changes), so compare it decoded.
    assert_eq!(
        parse(&wo.payload),
        json!({ "class": "slow", "queue": "slow_node", "args": ["n"] })
    );
    assert_recent("run_at as resq reads it", parse_date(&wo.run_at));
    let WorkerStatus::Working(mine) = &all[&busy.name] else {
        panic!("the resq worker is busy: {all:?}")
    };
    assert_eq!(mine.payload, encode_payload("slow_resq", "slow", &[json!("r")]));
    assert_eq!(all[&idle.name], WorkerStatus::Started);
    assert!(env
        .queue
        .working_on(node_worker, "slow_node")
        .await
        .expect("working_on")
        .is_some());

    // Both jobs finish; then each side sees the other's worker idle.
    nw.send("release").await;
    gate.add_permits(1);
    let done = nw.wait_event(Duration::from_secs(15), "success").await;
    assert_eq!(done["result"], json!(["n"]));
    let deadline = Deadline::new(Duration::from_secs(15), "both busy workers go idle");
    loop {
        let all = env.queue.all_working_on().await.expect("all_working_on");
        if all.get(node_worker) == Some(&WorkerStatus::Started)
            && all.get(&busy.name) == Some(&WorkerStatus::Started)
            && recorded(&runs).iter().any(|r| r.class == "slow")
        {
            break;
        }
        deadline.tick().await;
    }
    let node = env.inspect(&[], json!([])).await;
    assert_eq!(node["allWorkingOn"][node_worker], "started");
    assert_eq!(node["allWorkingOn"][&busy.name], "started");
    // Global and per-worker counters agree, whoever wrote them.
    let stats = env.queue.stats().await.expect("stats");
    assert_eq!(node_stats(&node), stats);
    assert_eq!(stats.get("processed"), Some(&9), "{stats:?}");
    assert_eq!(stats.get(&format!("processed:{node_worker}")), Some(&1));
    assert_eq!(stats.get(&format!("processed:{}", busy.name)), Some(&1));

    nw.finish().await;
    busy.shutdown().await;
    idle.shutdown().await;
    assert!(env.queue.workers().await.expect("workers").is_empty());
    assert_eq!(env.inspect(&[], json!([])).await["workers"], json!({}));
    env.finish().await;
}

// ---- 5. leader election -----------------------------------------------------

/// The leader lock's remaining time in ms (`PTTL`).
async fn leader_pttl(env: &Env) -> i64 {
    let mut conn = testing::raw_connection(env.backend.config())
        .await
        .expect("redis connection");
    redis::cmd("PTTL")
        .arg(format!("{}:resque_scheduler_leader_lock", env.namespace))
        .query_async(&mut conn)
        .await
        .expect("PTTL")
}

async fn leader(env: &Env) -> Option<String> {
    env.queue.leader().await.expect("leader")
}

/// Watches a node-resque scheduler until it made `tries` more attempts at
/// the lock, checking on the way that the lock always names `holder`.
/// Returns the new attempts' outcomes.
async fn watch_tries(env: &Env, node: &mut NodeProc, tries: usize, holder: &str) -> Vec<bool> {
    node.drain();
    let before = node.events("try").len();
    let deadline = Deadline::new(
        Duration::from_secs(15),
        format!("{tries} leader attempts by node-resque"),
    );
    loop {
        assert_eq!(leader(env).await.as_deref(), Some(holder), "the lock changed hands");
        node.drain();
        let all = node.events("try");
        if all.len() >= before + tries {
            return all[before..].iter().map(|t| t["won"] == true).collect();
        }
        deadline.tick().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedulers_share_the_leader_lock() {
    let Some(env) = Env::setup("schedulers_share_the_leader_lock").await else {
        return;
    };
    let node_opts = |name: &str| json!({ "name": name, "timeout": 200, "leaderLockTimeout": 2, "maxMs": 45000 });

    // A resq scheduler leads; a node-resque scheduler keeps losing.
    let a = ResqScheduler::spawn(&env, "resq-A");
    let deadline = Deadline::new(Duration::from_secs(10), "resq-A leads");
    while !(a.is_leader() && leader(&env).await.as_deref() == Some("resq-A")) {
        deadline.tick().await;
    }
    let ttl = leader_pttl(&env).await;
    assert!(ttl > 0 && ttl <= 2000, "resq's lock TTL is {ttl} ms");
    let mut node = env.spawn_node("schedule", node_opts("node-S"));
    node.wait_event(Duration::from_secs(15), "start").await;
    let tries = watch_tries(&env, &mut node, 5, "resq-A").await;
    assert!(
        tries.iter().all(|won| !won),
        "node-resque won the lock from resq: {tries:?}"
    );
    assert!(a.is_leader());
    assert!(node.events("leader").is_empty());

    // resq-A stops and releases the lock: node-resque takes over.
    a.shutdown().await;
    node.wait_event(Duration::from_secs(10), "leader").await;
    assert_eq!(leader(&env).await.as_deref(), Some("node-S"));
    let ttl = leader_pttl(&env).await;
    assert!(ttl > 0 && ttl <= 2000, "node-resque's lock TTL is {ttl} ms");

    // A resq scheduler follows while node-resque leads and renews.
    let b = ResqScheduler::spawn(&env, "resq-B");
    let tries = watch_tries(&env, &mut node, 5, "node-S").await;
    assert!(tries.iter().all(|won| *won), "node-resque lost its own lock: {tries:?}");
    assert!(!b.is_leader());

    // node-resque ends and releases the lock: resq takes over.
    let end = node.finish().await;
    assert_eq!(end["wasLeader"], true);
    assert_ne!(
        leader(&env).await.as_deref(),
        Some("node-S"),
        "node-resque released the lock when it ended"
    );
    let deadline = Deadline::new(Duration::from_secs(10), "resq-B takes over");
    while !(b.is_leader() && leader(&env).await.as_deref() == Some("resq-B")) {
        deadline.tick().await;
    }

    // resq-B dies without releasing: node-resque takes over once the lock expires.
    let mut node2 = env.spawn_node("schedule", node_opts("node-T"));
    node2.wait_event(Duration::from_secs(15), "start").await;
    let tries = watch_tries(&env, &mut node2, 3, "resq-B").await;
    assert!(
        tries.iter().all(|won| !won),
        "node-resque won the lock from resq: {tries:?}"
    );
    b.crash().await;
    assert_eq!(
        leader(&env).await.as_deref(),
        Some("resq-B"),
        "a crash releases nothing"
    );
    node2.wait_event(Duration::from_secs(10), "leader").await;
    assert_eq!(leader(&env).await.as_deref(), Some("node-T"));

    // node-resque dies without releasing: resq takes over once the lock expires.
    let c = ResqScheduler::spawn(&env, "resq-C");
    let tries = watch_tries(&env, &mut node2, 3, "node-T").await;
    assert!(tries.iter().all(|won| *won), "{tries:?}");
    assert!(!c.is_leader());
    node2.kill().await;
    assert_eq!(
        leader(&env).await.as_deref(),
        Some("node-T"),
        "a crash releases nothing"
    );
    let deadline = Deadline::new(Duration::from_secs(10), "resq-C takes over");
    while !(c.is_leader() && leader(&env).await.as_deref() == Some("resq-C")) {
        deadline.tick().await;
    }
    c.shutdown().await;
    assert_eq!(leader(&env).await, None);
    env.finish().await;
}

// ---- 6. del and delDelayed --------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn del_and_del_delayed_work_across_sides() {
    let Some(env) = Env::setup("del_and_del_delayed_work_across_sides").await else {
        return;
    };
    let q = "deletions";
    let tricky = tricky_args();

    // node-resque enqueues; resq deletes.
    for args in [json!([1, 2]), json!([1, 2]), json!([3, 4])] {
        env.nr("enqueue", job(q, "add", args)).await;
    }
    env.nr("enqueue", job(q, "echo", tricky.clone())).await;
    assert_eq!(env.queue.del(q, "add", (1, 2), 0).await.expect("del"), 2);
    assert_eq!(env.queue.del(q, "echo", &tricky, 0).await.expect("del"), 1);
    assert_eq!(env.queue.del(q, "add", (1, 2), 0).await.expect("del"), 0);
    let node = env.inspect(&[q], json!([])).await;
    assert_eq!(
        node["queued"][q],
        json!([{ "class": "add", "queue": q, "args": [3, 4] }])
    );

    // resq enqueues; node-resque deletes (with a count).
    env.queue.enqueue(q, "add", (5, 6)).await.expect("enqueue");
    env.queue.enqueue(q, "echo", &tricky).await.expect("enqueue");
    env.queue.enqueue(q, "add", (5, 6)).await.expect("enqueue");
    env.queue.enqueue(q, "add", (7, 8)).await.expect("enqueue");
    let one = json!({ "queue": q, "class": "add", "args": [5, 6], "count": 1 });
    assert_eq!(env.nr("del", one).await, json!(1));
    assert_eq!(env.nr("del", job(q, "echo", tricky.clone())).await, json!(1));
    let left: Vec<Vec<Value>> = env
        .queue
        .queued(q, 0, -1)
        .await
        .expect("queued")
        .iter()
        .map(|d| d.job().expect("job").args.clone())
        .collect();
    assert_eq!(
        left,
        vec![
            vec![json!(3), json!(4)],
            vec![json!(5), json!(6)],
            vec![json!(7), json!(8)]
        ]
    );

    // Times at x.500 s, where node-resque's bucket (`round(t / 1000)`) and
    // resq's (`ceil((t + 500) / 1000)`) are the same one.
    let now = now_ms().div_euclid(1000) * 1000 + 500;
    let (t1, t2) = (now + 3_600_000, now + 7_200_000);
    let (b1, b2) = (bucket_of_ms(t1), bucket_of_ms(t2));
    assert_eq!((b1, b2), (delayed_bucket_of_ms(t1), delayed_bucket_of_ms(t2)));

    // node-resque schedules one job twice; resq finds and deletes both.
    for t in [t1, t2] {
        env.nr(
            "enqueueAt",
            json!({ "timestamp": t, "queue": q, "class": "echo", "args": tricky }),
        )
        .await;
    }
    assert_eq!(
        env.queue.scheduled_at(q, "echo", &tricky).await.expect("scheduled_at"),
        vec![b1, b2]
    );
    assert_eq!(
        env.queue.del_delayed(q, "echo", &tricky).await.expect("del_delayed"),
        vec![b1, b2]
    );
    assert!(env
        .queue
        .scheduled_at(q, "echo", &tricky)
        .await
        .expect("scheduled_at")
        .is_empty());
    let node = env.inspect(&[], json!([job(q, "echo", tricky.clone())])).await;
    assert_eq!(node["scheduledAt"], json!([[]]));
    assert_eq!(node["timestamps"], json!([]));
    assert!(env.queue.timestamps().await.expect("timestamps").is_empty());

    // resq schedules one job twice (and another beside it); node-resque deletes both copies.
    env.queue.enqueue_at(t1, q, "add", (9, 10)).await.expect("enqueue_at");
    env.queue.enqueue_at(t2, q, "add", (9, 10)).await.expect("enqueue_at");
    env.queue.enqueue_at(t1, q, "add", (11, 12)).await.expect("enqueue_at");
    // Either side refuses a job the other already scheduled in the same bucket.
    let dup = json!({ "timestamp": t1, "queue": q, "class": "add", "args": [9, 10] });
    let refused = env
        .nr_try("enqueueAt", dup)
        .await
        .expect_err("node-resque refuses the duplicate");
    assert!(refused.contains("already enqueued"), "{refused}");
    env.nr(
        "enqueueAt",
        json!({ "timestamp": t2, "queue": q, "class": "add", "args": [13, 14] }),
    )
    .await;
    assert!(matches!(
        env.queue.enqueue_at(t2, q, "add", (13, 14)).await,
        Err(Error::AlreadyScheduled { timestamp }) if timestamp == b2
    ));
    let node = env.inspect(&[], json!([job(q, "add", json!([9, 10]))])).await;
    let mut node_at: Vec<i64> = serde_json::from_value(node["scheduledAt"][0].clone()).expect("secs");
    node_at.sort_unstable();
    assert_eq!(node_at, vec![b1, b2]);
    let mut deleted: Vec<i64> =
        serde_json::from_value(env.nr("delDelayed", job(q, "add", json!([9, 10]))).await).expect("secs");
    deleted.sort_unstable();
    assert_eq!(deleted, vec![b1, b2]);
    assert!(env
        .queue
        .scheduled_at(q, "add", (9, 10))
        .await
        .expect("scheduled_at")
        .is_empty());
    assert_eq!(
        env.queue.timestamps().await.expect("timestamps"),
        vec![b1 * 1000, b2 * 1000]
    );
    let node = env.inspect(&[], json!([])).await;
    assert_eq!(node["timestamps"], json!([b1 * 1000, b2 * 1000]));
    assert_eq!(
        node["allDelayed"],
        json!({
            (b1 * 1000).to_string(): [{ "class": "add", "queue": q, "args": [11, 12] }],
            (b2 * 1000).to_string(): [{ "class": "add", "queue": q, "args": [13, 14] }],
        })
    );
    assert_eq!(node["allDelayed"], resq_all_delayed_as_json(&env).await);
    env.finish().await;
}

// ---- 7. dead workers ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_workers_are_cleaned_across_sides() {
    let Some(env) = Env::setup("dead_workers_are_cleaned_across_sides").await else {
        return;
    };

    // A resq worker dies mid-job. node-resque's scheduler finds its stale
    // ping and fails the job; resq's retry_stuck_jobs puts it back, unchanged.
    let q = "dies_in_resq";
    let runs: Runs = Arc::default();
    let tasks = resq_tasks(&runs, &Arc::new(Semaphore::new(0)));
    let mut worker = ResqWorker::spawn(&env, &tasks, &[q]);
    env.queue.enqueue(q, "slow", ("r", 1)).await.expect("enqueue");
    worker.wait_job(Duration::from_secs(15)).await;
    let dead = worker.name.clone();
    worker.crash().await;
    let original = encode_payload(q, "slow", &[json!("r"), json!(1)]);
    let mut janitor = env.spawn_node(
        "schedule",
        json!({ "name": "node-janitor", "timeout": 200, "leaderLockTimeout": 3, "stuckWorkerTimeout": 1000, "maxMs": 30000 }),
    );
    let cleaned = janitor.wait_event(Duration::from_secs(20), "cleanStuckWorker").await;
    janitor.finish().await;
    assert_eq!(cleaned["worker"], dead.as_str(), "{cleaned}");
    assert_eq!(
        cleaned["errorPayload"]["payload"],
        json!({ "class": "slow", "queue": q, "args": ["r", 1] })
    );
    assert!(!env.queue.workers().await.expect("workers").contains_key(&dead));
    let entries = env.queue.failed(0, -1).await.expect("failed");
    assert_eq!(entries.len(), 1, "{entries:?}");
    let e = &entries[0];
    assert_eq!(e.worker.as_deref(), Some(dead.as_str()));
    assert_eq!(e.queue.as_deref(), Some(q));
    assert_eq!(e.exception.as_deref(), Some("Worker Timeout (killed manually)"));
    assert!(e.is_force_cleaned(), "{e:?}");
    assert_eq!(
        e.payload.as_deref(),
        Some(original.as_str()),
        "the payload survives byte for byte"
    );
    assert_eq!(env.queue.retry_stuck_jobs().await.expect("retry_stuck_jobs"), 1);
    assert_eq!(raw_queue(&env, q).await, vec![original]);
    assert_eq!(env.queue.failed_count().await.expect("failed_count"), 0);

    // A node-resque worker dies mid-job. resq's scheduler finds its stale
    // ping and puts the job back on its queue, and a resq worker runs it.
    let q2 = "dies_in_node";
    let node_worker = "node-host:999";
    let mut nw = env.spawn_node(
        "work",
        json!({ "queues": [q2], "name": node_worker, "timeout": 100, "maxMs": 30000 }),
    );
    nw.wait_event(Duration::from_secs(15), "start").await;
    env.nr("enqueue", job(q2, "slow", json!(["n", 2]))).await;
    nw.wait_event(Duration::from_secs(15), "job").await;
    nw.kill().await;
    assert!(
        env.queue
            .working_on(node_worker, q2)
            .await
            .expect("working_on")
            .is_some(),
        "the dead node worker left its job recorded"
    );
    let config = SchedulerConfig {
        stuck_worker_timeout: Some(Duration::from_secs(1)),
        // The node-resque workers here ping at every poll (`timeout`: 100 ms).
        worker_ping_interval: Duration::from_millis(100),
        stuck_job_policy: StuckJobPolicy::Requeue,
        ..quick_scheduler("resq-janitor")
    };
    let scheduler = ResqScheduler::spawn_with(&env, config);
    let runs2: Runs = Arc::default();
    let tasks2 = resq_tasks(&runs2, &Arc::new(Semaphore::new(1)));
    let w2 = ResqWorker::spawn(&env, &tasks2, &[q2]);
    let deadline = Deadline::new(Duration::from_secs(20), "resq reruns the dead node worker's job");
    while !recorded(&runs2).iter().any(|r| r.class == "slow") {
        deadline.tick().await;
    }
    w2.shutdown().await;
    scheduler.shutdown().await;
    let rerun = recorded(&runs2);
    assert_eq!(rerun.len(), 1, "{rerun:?}");
    assert_eq!(rerun[0].args, vec![json!("n"), json!(2)]);
    assert!(!env.queue.workers().await.expect("workers").contains_key(node_worker));
    assert!(env
        .queue
        .working_on(node_worker, q2)
        .await
        .expect("working_on")
        .is_none());
    let node = env.inspect(&[q2], json!([])).await;
    assert_eq!(node["workers"], json!({}));
    assert_eq!(node["allWorkingOn"], json!({}));
    assert_eq!(node["length"][q2], 0);
    env.finish().await;
}

// ---- 8. plugin locks are shared ---------------------------------------------

/// QueueLock's key and value are node-resque's, so each side honours the
/// other's lock: node-resque's lock vetoes resq's identical enqueue, and
/// resq's lock vetoes node-resque's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_locks_are_honoured_both_ways() {
    let Some(env) = Env::setup("queue_locks_are_honoured_both_ways").await else {
        return;
    };
    let mut tasks = Tasks::new();
    tasks
        .define(
            resq_core::task::TaskDef::from_fn("locked", |_: Vec<Value>, _ctx: JobContext| async {
                Ok::<_, TaskError>(())
            })
            .plugin(resq_core::plugins::QueueLock::new()),
        )
        .expect("define");
    let resq = Queue::with_tasks(env.dyn_backend(), Arc::new(tasks));
    let nr_enqueue =
        |args: Value| json!({ "queue": "locks", "class": "locked", "args": args, "plugins": ["QueueLock"] });
    // node-resque first.
    assert_eq!(env.nr("enqueueWithPlugins", nr_enqueue(json!([1]))).await, json!(true));
    assert!(
        !resq.enqueue("locks", "locked", (1,)).await.expect("enqueue"),
        "resq ignored node-resque's lock"
    );
    // resq first.
    assert!(resq.enqueue("locks", "locked", (2,)).await.expect("enqueue"));
    assert_eq!(
        env.nr("enqueueWithPlugins", nr_enqueue(json!([2]))).await,
        json!(false),
        "node-resque ignored resq's lock"
    );
    assert_eq!(env.queue.length("locks").await.expect("length"), 2);
    // resq's lock as node-resque reads it: a number of seconds, with a TTL.
    let info = env.nr("lockInfo", json!({ "key": "lock:locked:locks:[2]" })).await;
    let value: i64 = info["value"].as_str().expect("value").parse().expect("numeric");
    let now_s = (now_ms() + 500) / 1000;
    assert!((value - (now_s + 3601)).abs() <= 2, "value {value}");
    let ttl = info["ttl"].as_i64().expect("ttl");
    assert!(ttl > 3590 && ttl <= 3600, "ttl {ttl}");
    env.finish().await;
}

// ---- 9. edge cases between the two implementations (issue #11) -------------

/// Starts a node-resque worker on `queues` named `name`, waits until it took
/// a job (the next one queued) and kills it: it dies holding that job, with
/// its working-on record written by node-resque's `cjson` Lua script.
async fn node_worker_dies_holding_a_job(env: &Env, name: &str, queues: &[&str]) {
    let mut nw = env.spawn_node(
        "work",
        json!({ "queues": queues, "name": name, "timeout": 100, "maxMs": 30000 }),
    );
    nw.wait_event(Duration::from_secs(15), "start").await;
    nw.wait_event(Duration::from_secs(15), "job").await;
    nw.kill().await;
}

/// The `{}`→`[]` repair runs on every path a node-resque re-encoded payload
/// takes into resq: a dead node-resque worker's record holding a Ruby-shaped
/// job (no `queue`) that resq's scheduler fails, retried with
/// `retry_and_remove_failed`; and failed entries that node-resque's own
/// cleanup wrote (both payload shapes), retried with `retry_stuck_jobs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cjson_empty_args_are_repaired_on_every_path() {
    if on_cluster() {
        // node-resque's worker does not claim with its Lua script on an
        // ioredis Cluster (it uses LPOP then SET), so nothing passes
        // through cjson and there is nothing mangled to repair.
        println!("SKIP cjson_empty_args_are_repaired_on_every_path: node-resque runs no cjson script on a cluster");
        return;
    }
    let Some(env) = Env::setup("cjson_empty_args_are_repaired_on_every_path").await else {
        return;
    };
    use resq_core::QueueStore;
    let q = "mangled";
    let ruby = r#"{"class":"slow","args":[]}"#;
    let nr_shaped = encode_payload(q, "slow", &[]);

    // 1. Two node-resque workers die holding a job each; node-resque's
    // scheduler cleans them and writes the cjson-mangled payloads.
    env.backend.push(q, ruby).await.expect("push ruby payload");
    node_worker_dies_holding_a_job(&env, "node-ruby:1", &[q]).await;
    env.nr("enqueue", job(q, "slow", json!([]))).await;
    node_worker_dies_holding_a_job(&env, "node-nr:2", &[q]).await;
    let working = env
        .queue
        .working_on("node-ruby:1", q)
        .await
        .expect("working_on")
        .expect("record");
    assert_eq!(
        parse(&working.payload)["args"],
        json!({}),
        "cjson wrote [] as {{}}: {working:?}"
    );
    let mut janitor = env.spawn_node(
        "schedule",
        json!({ "name": "node-janitor", "timeout": 200, "leaderLockTimeout": 3, "stuckWorkerTimeout": 1000, "maxMs": 30000 }),
    );
    for _ in 0..2 {
        janitor.wait_event(Duration::from_secs(20), "cleanStuckWorker").await;
    }
    janitor.finish().await;
    let entries = env.queue.failed(0, -1).await.expect("failed");
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries.iter().all(|e| e.is_force_cleaned()), "{entries:?}");
    assert!(
        entries
            .iter()
            .all(|e| parse(e.payload.as_deref().unwrap_or("null"))["args"] == json!({})),
        "node-resque's entries carry the mangled args: {entries:?}"
    );
    assert_eq!(env.queue.retry_stuck_jobs().await.expect("retry_stuck_jobs"), 2);
    let mut queued = raw_queue(&env, q).await;
    queued.sort();
    let mut expected = vec![ruby.to_owned(), nr_shaped.clone()];
    expected.sort();
    assert_eq!(queued, expected, "both retried with `args:[]`");
    env.queue.del_queue(q).await.expect("del_queue");

    // 2. A node-resque worker dies holding the Ruby-shaped job; resq's
    // scheduler fails it, and resq retries the failed entry.
    env.backend.push(q, ruby).await.expect("push ruby payload");
    node_worker_dies_holding_a_job(&env, "node-ruby:3", &[q]).await;
    let config = SchedulerConfig {
        stuck_worker_timeout: Some(Duration::from_secs(1)),
        // The node-resque workers here ping at every poll (`timeout`: 100 ms).
        worker_ping_interval: Duration::from_millis(100),
        stuck_job_policy: StuckJobPolicy::Fail,
        ..quick_scheduler("resq-janitor")
    };
    let scheduler = ResqScheduler::spawn_with(&env, config);
    let deadline = Deadline::new(Duration::from_secs(20), "resq fails the dead node worker's job");
    while env.queue.failed_count().await.expect("failed_count") == 0 {
        deadline.tick().await;
    }
    scheduler.shutdown().await;
    let entries = env.queue.failed(0, -1).await.expect("failed");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(
        entries[0].payload.as_deref(),
        Some(ruby),
        "the failed entry holds `args:[]`"
    );
    env.queue
        .retry_and_remove_failed(&entries[0])
        .await
        .expect("retry_and_remove_failed");
    assert_eq!(raw_queue(&env, q).await, vec![ruby.to_owned()]);

    // The retried job runs with no arguments on a resq worker.
    let runs: Runs = Arc::default();
    let tasks = resq_tasks(&runs, &Arc::new(Semaphore::new(1)));
    let worker = ResqWorker::spawn(&env, &tasks, &[q]);
    let deadline = Deadline::new(Duration::from_secs(15), "resq runs the retried job");
    while recorded(&runs).is_empty() {
        deadline.tick().await;
    }
    worker.shutdown().await;
    assert_eq!(recorded(&runs)[0].args, Vec::<Value>::new());
    env.finish().await;
}

/// resq files a delayed job under the first bucket that no scheduler
/// promotes before the job's time, so with a node-resque scheduler leading
/// (it promotes bucket `s` from `s·1000 − 500` ms) a job resq scheduled is
/// never transferred nor run early, whatever its sub-second part, and is
/// not more than about a second late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resq_delayed_jobs_are_never_early_under_a_node_scheduler() {
    let Some(env) = Env::setup("resq_delayed_jobs_are_never_early_under_a_node_scheduler").await else {
        return;
    };
    let q = "on_time";
    let mut scheduler = env.spawn_node(
        "schedule",
        json!({ "name": "node-scheduler", "timeout": 50, "leaderLockTimeout": 3, "maxMs": 30000 }),
    );
    scheduler.wait_event(Duration::from_secs(15), "leader").await;
    let base = now_ms().div_euclid(1000) * 1000 + 2_000;
    let offsets = [499_i64, 501, 0, 999, 500, 1];
    let mut times = Vec::new();
    for (i, offset) in offsets.into_iter().enumerate() {
        let t = base + i as i64 * 1000 + offset;
        env.queue
            .enqueue_at(t, q, "echo", ("due", t))
            .await
            .expect("enqueue_at");
        times.push(t);
    }
    let runs: Runs = Arc::default();
    let tasks = resq_tasks(&runs, &Arc::new(Semaphore::new(0)));
    let worker = ResqWorker::spawn(&env, &tasks, &[q]);
    let deadline = Deadline::new(Duration::from_secs(20), "every delayed job runs");
    while recorded(&runs).len() < times.len() {
        deadline.tick().await;
    }
    worker.shutdown().await;
    scheduler.finish().await;
    let transferred = scheduler.events("transferredJob");
    assert_eq!(transferred.len(), times.len(), "{transferred:#?}");
    for e in &transferred {
        let t = e["job"]["args"][1].as_i64().expect("the job's time");
        let at = e["at"].as_i64().expect("transfer time");
        assert!(
            at >= t,
            "node-resque transferred the job for {t} {} ms early: {e}",
            t - at
        );
        assert_eq!(e["timestamp"], delayed_bucket_of_ms(t), "{e}");
    }
    for run in recorded(&runs) {
        let t = run.args[1].as_i64().expect("the job's time");
        assert!(run.at_ms >= t, "the job for {t} ran {} ms early", t - run.at_ms);
    }
    env.finish().await;
}

/// An idle node-resque worker on `*` deletes its own ping key on every idle
/// pass (node-resque's `checkQueues` runs `untrack`) and writes it again on
/// its next ping tick, so one killed in between is registered with no ping
/// key. resq's scheduler gives such a worker a ping probe; a dead worker
/// lets it age and is cleaned after the stuck-worker timeout, while a live
/// idle `*` worker beside it deletes or refreshes the probe and is never
/// cleaned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_idle_wildcard_node_workers_are_cleaned() {
    let Some(env) = Env::setup("dead_idle_wildcard_node_workers_are_cleaned").await else {
        return;
    };
    use redis::AsyncCommands;
    let mut raw = testing::raw_connection(env.backend.config()).await.expect("redis");
    let ns = format!("{}:", env.namespace);
    let (dead, live) = ("node-dead:1", "node-live:2");

    // The dead one: a `*` worker with a 3 s ping period. Its first idle pass
    // deletes the ping key that `init` wrote; it is killed before its ping
    // timer writes it again, so it stays registered with no ping key.
    let mut dw = env.spawn_node(
        "work",
        json!({ "queues": ["*"], "name": dead, "timeout": 3000, "maxMs": 30000 }),
    );
    dw.wait_event(Duration::from_secs(15), "start").await;
    let ping_key = format!("{ns}worker:ping:{dead}");
    let dead_member = format!("{dead}:*");
    let workers_key = format!("{ns}workers");
    // (`untrack` also removes the member; `track` adds it back right after.)
    let deadline = Deadline::new(Duration::from_secs(2), "the idle * worker deletes its ping key");
    while raw.exists::<_, bool>(&ping_key).await.expect("exists")
        || !raw
            .sismember::<_, _, bool>(&workers_key, &dead_member)
            .await
            .expect("sismember")
    {
        deadline.tick().await;
    }
    dw.kill().await;
    assert!(
        !raw.exists::<_, bool>(&ping_key).await.expect("exists"),
        "killed with no ping key"
    );
    let members: Vec<String> = raw.smembers(&workers_key).await.expect("smembers");
    assert!(members.contains(&dead_member), "{members:?}");

    // The live one: an idle `*` worker polling (and deleting its ping) every 100 ms.
    let mut lw = env.spawn_node(
        "work",
        json!({ "queues": ["*"], "name": live, "timeout": 100, "maxMs": 30000 }),
    );
    lw.wait_event(Duration::from_secs(15), "start").await;

    let config = SchedulerConfig {
        stuck_worker_timeout: Some(Duration::from_secs(1)),
        // The node-resque workers here ping at every poll (`timeout`: 100 ms).
        worker_ping_interval: Duration::from_millis(100),
        stuck_job_policy: StuckJobPolicy::Requeue,
        ..quick_scheduler("resq-janitor")
    };
    let scheduler = ResqScheduler::spawn_with(&env, config);
    let cleaned: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut events = scheduler.scheduler.subscribe();
    let sink = Arc::clone(&cleaned);
    let collector = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(resq_core::SchedulerEvent::CleanStuckWorker { worker, .. }) => {
                    sink.lock().expect("cleaned lock").push(worker.name)
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    let deadline = Deadline::new(Duration::from_secs(15), "resq cleans the dead idle * worker");
    loop {
        let members: Vec<String> = raw.smembers(&workers_key).await.expect("smembers");
        if !members.contains(&dead_member) {
            break;
        }
        deadline.tick().await;
    }
    // Three more stuck-worker timeouts: the live worker is never cleaned.
    tokio::time::sleep(Duration::from_secs(3)).await;
    scheduler.shutdown().await;
    tokio::time::timeout(Duration::from_secs(5), collector)
        .await
        .expect("the scheduler's event channel closes")
        .expect("collector");
    assert_eq!(*cleaned.lock().expect("cleaned lock"), vec![dead.to_owned()]);
    assert!(!raw.exists::<_, bool>(&ping_key).await.expect("exists"));
    lw.drain();
    assert!(lw.events("error").is_empty(), "{:?}", lw.events("error"));
    lw.finish().await;
    let node = env.inspect(&[], json!([])).await;
    assert_eq!(node["workers"], json!({}), "{node}");
    env.finish().await;
}

/// node-resque's `forceCleanWorker` fails a dead worker's job and
/// unregisters it, but deletes `worker:<name>` instead of the working-on key
/// `worker:<name>:<queues>`, which stays behind. A resq worker restarted
/// under the same name finds that record at start-up: it must not run the
/// job again, and the job stays on the failed list exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaked_working_on_record_is_not_rerun() {
    let Some(env) = Env::setup("leaked_working_on_record_is_not_rerun").await else {
        return;
    };
    let q = "leaks";
    let name = "resq-host:4242";
    let runs: Runs = Arc::default();
    let tasks = resq_tasks(&runs, &Arc::new(Semaphore::new(0)));
    let mut worker = ResqWorker::spawn_named(&env, &tasks, &[q], Some(name));
    env.queue.enqueue(q, "slow", ("leak", 1)).await.expect("enqueue");
    worker.wait_job(Duration::from_secs(15)).await;
    worker.crash().await;
    let original = encode_payload(q, "slow", &[json!("leak"), json!(1)]);

    // node-resque's scheduler cleans the dead worker: a failed entry, and
    // the working-on record left behind.
    let mut janitor = env.spawn_node(
        "schedule",
        json!({ "name": "node-janitor", "timeout": 200, "leaderLockTimeout": 3, "stuckWorkerTimeout": 1000, "maxMs": 30000 }),
    );
    let cleaned = janitor.wait_event(Duration::from_secs(20), "cleanStuckWorker").await;
    janitor.finish().await;
    assert_eq!(cleaned["worker"], name, "{cleaned}");
    assert!(!env.queue.workers().await.expect("workers").contains_key(name));
    let leaked = env.queue.working_on(name, q).await.expect("working_on");
    assert_eq!(
        leaked.map(|w| w.payload),
        Some(original.clone()),
        "node-resque leaves the working-on record behind"
    );
    assert_eq!(env.queue.failed_count().await.expect("failed_count"), 1);

    // A resq worker restarts under the same name.
    let runs2: Runs = Arc::default();
    let tasks2 = resq_tasks(&runs2, &Arc::new(Semaphore::new(5)));
    let mut again = ResqWorker::spawn_named(&env, &tasks2, &[q], Some(name));
    again.wait_polls(3, Duration::from_secs(15)).await;
    again.shutdown().await;
    assert_eq!(
        recorded(&runs2).len(),
        0,
        "the failed job ran again: {:?}",
        recorded(&runs2)
    );
    assert_eq!(env.queue.length(q).await.expect("length"), 0);
    assert!(env.queue.working_on(name, q).await.expect("working_on").is_none());
    let entries = env.queue.failed(0, -1).await.expect("failed");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].is_force_cleaned());
    assert_eq!(entries[0].job().expect("decodes").raw, original);
    env.finish().await;
}
