//! The dashboard over a Redis namespace that the real node-resque wrote.
//!
//! node-resque 9.7.1 (driven by `interop/nr.js`, the same script the Redis
//! backend's interop tests use) enqueues normal and delayed jobs, fails jobs
//! on its own worker (so the failed entries are node-resque's, byte for
//! byte) and keeps one of its workers busy on a job. Then every page of the
//! dashboard is loaded through the router, and each must show what
//! node-resque wrote: queue lengths, the queued jobs' classes and
//! arguments, the delayed job, the failed entries with node-resque's error
//! text and their detail page, and node-resque's busy worker with its job.
//!
//! Requirements: Redis (`RESQ_REDIS_URL`) and `node`/`npm` on `PATH`; `npm
//! ci` runs in `interop/` when node-resque is missing. Without them the test
//! prints `SKIP …` and passes, unless `RESQ_REQUIRE_BACKENDS=1`.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use resq_admin::{Admin, FailedFilter, Page};
use resq_core::Backend;
use resq_web::WebConfig;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tower::ServiceExt;

/// The node-resque version `interop/package.json` pins.
const NODE_RESQUE_VERSION: &str = "9.7.1";

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../interop")
}

/// Runs `program args` in `interop/`; its stdout, or why it failed.
fn tool(program: &str, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(interop_dir())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// node and npm are there, and `interop/` holds the pinned node-resque
/// (installed with `npm ci` when it does not).
fn prepare_node() -> Result<(), String> {
    tool("node", &["--version"])?;
    tool("npm", &["--version"])?;
    let installed = || -> Option<String> {
        let text = std::fs::read_to_string(interop_dir().join("node_modules/node-resque/package.json")).ok()?;
        serde_json::from_str::<Value>(&text).ok()?["version"]
            .as_str()
            .map(str::to_owned)
    };
    if installed().as_deref() != Some(NODE_RESQUE_VERSION) {
        tool("npm", &["ci", "--no-audit", "--no-fund"])?;
    }
    match installed() {
        Some(v) if v == NODE_RESQUE_VERSION => Ok(()),
        other => Err(format!(
            "interop/ holds node-resque {other:?}, expected {NODE_RESQUE_VERSION}"
        )),
    }
}

/// One namespace shared by resq (`backend`) and node-resque (`url`, `namespace`).
struct Shared {
    backend: Arc<resq_redis::RedisBackend>,
    url: String,
    namespace: String,
}

impl Shared {
    fn node(&self, action: &str, opts: &Value) -> Command {
        let mut cmd = Command::new("node");
        cmd.arg(interop_dir().join("nr.js"))
            .arg(action)
            .arg(opts.to_string())
            .current_dir(interop_dir())
            .env("REDIS_URL", &self.url)
            .env("NAMESPACE", &self.namespace)
            .kill_on_drop(true);
        cmd
    }

    /// One node-resque call (`enqueue`, `enqueueAt`, …) that must succeed.
    async fn nr(&self, action: &str, opts: Value) -> Value {
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            self.node(action, &opts).stdin(Stdio::null()).output(),
        )
        .await
        .unwrap_or_else(|_| panic!("node {action} took over 30 s"))
        .expect("run node");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let answer: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| {
            panic!(
                "node {action}: no JSON answer ({e}): {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(answer["ok"], json!(true), "node {action} {opts}: {answer}");
        answer["result"].clone()
    }
}

async fn get(app: &axum::Router, path: &str) -> String {
    let resp = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let body = String::from_utf8(bytes.to_vec()).unwrap();
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

/// `text` as the dashboard's HTML escaping shows it.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn assert_shows(page: &str, body: &str, what: &str) {
    assert!(
        body.contains(what) || body.contains(&escaped(what)),
        "{page} does not show {what:?}:\n{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_what_node_resque_wrote() {
    const TEST: &str = "web::interop::dashboard_shows_what_node_resque_wrote";
    let required = std::env::var("RESQ_REQUIRE_BACKENDS").is_ok_and(|v| v.trim() == "1");
    let backend = match resq_redis::testing::fresh_redis().await {
        Ok(b) => Arc::new(b),
        Err(reason) => {
            assert!(!required, "{TEST}: {reason}");
            eprintln!("SKIP {TEST}: {reason}");
            return;
        }
    };
    if let Err(reason) = tokio::task::spawn_blocking(prepare_node).await.unwrap() {
        assert!(!required, "{TEST}: {reason}");
        eprintln!("SKIP {TEST}: {reason}");
        return;
    }
    let shared = Shared {
        url: backend.config().url.clone(),
        namespace: backend.config().namespace.clone(),
        backend,
    };

    // node-resque writes: three jobs on two queues, one delayed job, two
    // jobs that its own worker fails, and a job its worker stays busy on.
    for (queue, class, args) in [
        ("nr_mail", "echo", json!(["ada@example.com", {"tries": 2}])),
        ("nr_mail", "echo", json!(["<b>bold</b>"])),
        ("nr_math", "add", json!([1, 2])),
        ("nr_fail", "boom", json!(["first"])),
        ("nr_fail", "boom", json!([{"n": 2}])),
    ] {
        shared
            .nr("enqueue", json!({"queue": queue, "class": class, "args": args}))
            .await;
    }
    let due_ms = resq_core::time::now_ms() + 3_600_000;
    shared
        .nr(
            "enqueueAt",
            json!({"queue": "nr_math", "class": "add", "args": [40, 2], "timestamp": due_ms}),
        )
        .await;
    shared
        .nr(
            "enqueue",
            json!({"queue": "nr_slow", "class": "slow", "args": ["held"]}),
        )
        .await;

    let worker_name = format!("nr-dash-{}", std::process::id());
    let mut worker = shared
        .node(
            "work",
            &json!({"queues": ["nr_fail", "nr_slow"], "name": worker_name, "stdin": true, "maxMs": 60000}),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start node-resque's worker");
    let mut stdin = worker.stdin.take().expect("piped stdin");
    let mut events = BufReader::new(worker.stdout.take().expect("piped stdout")).lines();
    let (mut failures, mut busy) = (0, false);
    tokio::time::timeout(Duration::from_secs(30), async {
        while failures < 2 || !busy {
            let line = events
                .next_line()
                .await
                .expect("read node")
                .expect("node-resque's worker ended early");
            let event: Value = serde_json::from_str(&line).unwrap_or(json!({"event": "raw", "line": line}));
            match event["event"].as_str() {
                Some("failure") => failures += 1,
                Some("job") if event["job"]["class"] == "slow" => busy = true,
                _ => {}
            }
        }
    })
    .await
    .expect("node-resque's worker failed two jobs and took the slow one within 30 s");

    let dynamic: Arc<dyn Backend> = shared.backend.clone();
    let admin = Admin::new(Arc::clone(&dynamic));
    let app = resq_web::router(admin.clone(), WebConfig::default());

    // Overview: every queue node-resque wrote, with its length; the worker.
    let overview = get(&app, "/").await;
    for queue in ["nr_mail", "nr_math"] {
        assert_shows("overview", &overview, &format!("/queues/{queue}"));
    }
    let stats: Value = serde_json::from_str(&get(&app, "/overview.json").await).unwrap();
    let lengths: Vec<(String, u64)> = stats["queues"]
        .as_array()
        .expect("overview.json lists queues")
        .iter()
        .map(|q| (q["name"].as_str().unwrap().to_owned(), q["length"].as_u64().unwrap()))
        .collect();
    for expected in [("nr_mail", 2), ("nr_math", 1), ("nr_fail", 0), ("nr_slow", 0)] {
        assert!(
            lengths.contains(&(expected.0.to_owned(), expected.1)),
            "overview.json lengths {lengths:?} lack {expected:?}"
        );
    }
    assert_eq!(stats["failed"], json!(2), "overview.json: {stats}");
    assert_eq!(stats["delayed"], json!(1), "overview.json: {stats}");

    // Queue pages: node-resque's jobs, class and arguments, HTML escaped.
    let mail = get(&app, "/queues/nr_mail").await;
    assert_shows("queue nr_mail", &mail, "ada@example.com");
    assert_shows("queue nr_mail", &mail, "<b>bold</b>");
    assert!(
        !mail.contains("<b>bold</b>"),
        "unescaped job arguments on the queue page"
    );
    let math = get(&app, "/queues/nr_math").await;
    assert_shows("queue nr_math", &math, "add");

    // Delayed: node-resque's enqueueAt job, at its second.
    let delayed = get(&app, "/delayed").await;
    assert_shows("delayed", &delayed, "[40,2]");
    let listed = admin.delayed(Page::new(0, 10)).await.unwrap();
    assert_eq!(listed.total, 1);
    let shown = listed.items[0].timestamp_ms;
    assert!(
        (shown - due_ms).abs() <= 1000,
        "delayed at {shown} ms, node-resque asked for {due_ms} ms"
    );

    // Failed: node-resque's entries, with its error text, and their details.
    let failed = get(&app, "/failed").await;
    assert_shows("failed", &failed, r#"boom ["first"]"#);
    assert_shows("failed", &failed, r#"boom [{"n":2}]"#);
    let items = admin.failed(&FailedFilter::default(), Page::new(0, 10)).await.unwrap();
    assert_eq!(items.total, 2);
    for item in &items.items {
        assert_eq!(item.class.as_deref(), Some("boom"));
        assert_eq!(item.worker.as_deref(), Some(worker_name.as_str()));
        let detail = get(&app, &format!("/failed/{}", item.id)).await;
        assert_shows("failed detail", &detail, "boom");
        assert_shows("failed detail", &detail, &worker_name);
        assert_shows("failed detail", &detail, item.error.as_deref().unwrap_or("(none)"));
    }
    let search = get(&app, "/failed?error=first").await;
    assert_shows("failed search", &search, r#"boom ["first"]"#);
    assert!(
        !search.contains("&quot;n&quot;:2"),
        "the search matched the other entry"
    );

    // Workers: node-resque's worker, busy on its slow job.
    let workers = get(&app, "/workers").await;
    assert_shows("workers", &workers, &worker_name);
    assert_shows("workers", &workers, "nr_slow");
    assert_shows("workers", &workers, "slow");
    let listed = admin.workers().await.unwrap();
    let ours = listed
        .iter()
        .find(|w| w.name.contains(&worker_name))
        .unwrap_or_else(|| panic!("no {worker_name} among {listed:?}"));
    assert!(ours.job.is_some(), "node-resque's worker shows no job: {ours:?}");

    stdin.write_all(b"release\nend\n").await.unwrap();
    stdin.flush().await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), worker.wait())
        .await
        .expect("node-resque's worker exits within 30 s")
        .unwrap();
    assert!(status.success(), "node-resque's worker exited with {status}");
    shared.backend.delete_namespace().await.unwrap();
}
