//! The `resq` binary, run as a real process against each backend: a
//! memory snapshot file, a private Redis namespace and a private
//! PostgreSQL schema. Each test seeds the store through the library, runs
//! the binary (whose standard input is not a terminal), and checks its
//! exit code, its `--json` output and the store's state afterwards.
//!
//! A test whose server cannot be reached prints `SKIP …` and passes,
//! unless `RESQ_REQUIRE_BACKENDS=1`, when it fails.

use assert_cmd::Command;
use resq::failed::{encode_entry, Failure};
use resq::{Backend, Queue, WorkerId};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

fn required() -> bool {
    std::env::var("RESQ_REQUIRE_BACKENDS").is_ok_and(|v| v == "1")
}

/// What keeps a test's private store alive, and cleans it up.
enum Guard {
    /// The snapshot's folder, deleted when dropped.
    Memory(#[allow(dead_code)] tempfile::TempDir),
    /// A backend in the test namespace, which deletes its keys when dropped.
    Redis(#[allow(dead_code)] Box<resq_redis::RedisBackend>),
    /// A sharded namespace on the test cluster, whose shards delete their
    /// keys when dropped.
    Sharded(#[allow(dead_code)] Box<resq_redis::ShardedRedis>),
    /// A backend on the test schema, handed back for reuse by `close()`.
    Postgres(Arc<resq_postgres::PostgresBackend>),
}

/// A private store and the URL the binary gets for it.
struct Store {
    kind: &'static str,
    url: String,
    guard: Guard,
}

impl Store {
    async fn memory() -> Option<Store> {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("memory://{}", dir.path().join("snapshot.bin").display());
        Some(Store {
            kind: "memory",
            url,
            guard: Guard::Memory(dir),
        })
    }

    async fn redis(test: &str) -> Option<Store> {
        match resq_redis::testing::fresh_redis().await {
            Ok(backend) => {
                let mut url = url::Url::parse(&resq_redis::testing::server_url()).expect("RESQ_REDIS_URL");
                url.query_pairs_mut()
                    .append_pair("namespace", &backend.config().namespace);
                Some(Store {
                    kind: "redis",
                    url: url.to_string(),
                    guard: Guard::Redis(Box::new(backend)),
                })
            }
            Err(reason) => skip(test, &reason),
        }
    }

    /// A sharded namespace (three shards) on the test Redis Cluster.
    async fn redis_sharded(test: &str) -> Option<Store> {
        match resq_redis::testing::fresh_sharded_redis().await {
            Ok(backend) => {
                let config = backend.config();
                let url = format!(
                    "redis+cluster://{}/?namespace={}&shards={}",
                    resq_redis::testing::cluster_host_ports(config),
                    config.namespace,
                    backend.shards().len()
                );
                Some(Store {
                    kind: "redis_sharded",
                    url,
                    guard: Guard::Sharded(Box::new(backend)),
                })
            }
            Err(reason) => skip(test, &reason),
        }
    }

    async fn postgres(test: &str) -> Option<Store> {
        match resq_postgres::testing::fresh_postgres().await {
            Ok(backend) => {
                let mut url = url::Url::parse(&resq_postgres::testing::url()).expect("RESQ_POSTGRES_URL");
                url.query_pairs_mut().append_pair("schema", backend.schema());
                Some(Store {
                    kind: "postgres",
                    url: url.to_string(),
                    guard: Guard::Postgres(backend),
                })
            }
            Err(reason) => skip(test, &reason),
        }
    }

    /// A new connection to the store (for a memory store: the snapshot
    /// loaded now). Close it before running the binary again.
    async fn open(&self) -> Arc<dyn Backend> {
        resq::connect(&self.url).await.expect("connect to the test store")
    }

    /// Runs `f` on a new connection, then closes it (saving a memory snapshot).
    async fn with<T, F, Fut>(&self, f: F) -> T
    where
        F: FnOnce(Arc<dyn Backend>) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let backend = self.open().await;
        let out = f(backend.clone()).await;
        backend.close().await.expect("close the test store");
        out
    }

    /// The binary with `--url` set to this store.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::cargo_bin("resq").expect("the resq binary");
        cmd.env_remove("RESQ_URL")
            .env_remove("RESQ_LOG")
            .arg("--url")
            .arg(&self.url)
            .args(args);
        cmd.timeout(Duration::from_secs(60));
        cmd
    }

    /// Runs the binary, asserts its exit code, and returns stdout and stderr.
    fn run(&self, args: &[&str], code: i32) -> (String, String) {
        let out = self.cmd(args).output().expect("run resq");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{} resq {args:?}\nstdout: {stdout}\nstderr: {stderr}",
            self.kind
        );
        (stdout, stderr)
    }

    /// Runs the binary with `--json`, expecting success, and parses stdout.
    fn json(&self, args: &[&str]) -> Value {
        self.json_exit(args, 0)
    }

    /// Runs the binary with `--json`, expecting exit `code`, and parses stdout.
    fn json_exit(&self, args: &[&str], code: i32) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (stdout, _) = self.run(&all, code);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("resq {args:?}: not JSON ({e}): {stdout}"))
    }

    async fn finish(self) {
        if let Guard::Postgres(backend) = &self.guard {
            backend.close().await.expect("close the test schema");
        }
    }
}

fn skip(test: &str, reason: &str) -> Option<Store> {
    assert!(!required(), "{test}: {reason}");
    eprintln!("SKIP {test}: {reason}");
    None
}

/// An error run: exit `code`, one line on stderr starting `resq: error:`.
fn assert_one_error_line(stderr: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one error line: {stderr:?}");
    assert!(lines[0].starts_with("resq: error: "), "{stderr:?}");
}

/// Defines each test once per backend: `memory::<name>`, `redis::<name>`, `postgres::<name>`.
macro_rules! per_backend {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(store) = super::Store::memory().await {
                        super::$name(&store).await;
                        store.finish().await;
                    }
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(store) = super::Store::redis(concat!("redis::", stringify!($name))).await {
                        super::$name(&store).await;
                        store.finish().await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(store) = super::Store::postgres(concat!("postgres::", stringify!($name))).await {
                        super::$name(&store).await;
                        store.finish().await;
                    }
                }
            )*
        }
    };
}

/// Defines each test on a sharded namespace of the test Redis Cluster:
/// `redis_sharded::<name>`.
macro_rules! on_sharded_redis {
    ($($name:ident),* $(,)?) => {
        mod redis_sharded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(store) = super::Store::redis_sharded(concat!("redis_sharded::", stringify!($name))).await {
                        super::$name(&store).await;
                        store.finish().await;
                    }
                }
            )*
        }
    };
}

// Every command over a sharded namespace, where what they show and change
// is the union of the shards: each per-backend test but
// `migrate_and_doctor` (it reads doctor's single-namespace JSON `report`;
// `doctor_audits_each_shard` covers doctor here).
on_sharded_redis!(
    status_queues_and_queue_show_the_real_state,
    enqueue_pause_and_resume,
    delayed_lists_scheduled_jobs,
    workers_and_workers_clean,
    locks_and_locks_rm,
    cancel_by_id_and_by_class,
    doctor_audits_each_shard,
    failed_list_show_and_filters,
    failed_retry_and_remove_by_id,
    failed_bulk_with_all_and_filters,
    usage_errors_exit_2,
    readme_operating_commands_work,
    metrics_serves_the_cluster_gauges,
    web_serves_the_dashboard,
);

/// `doctor` on a sharded namespace audits and fixes each shard, and
/// reports them one by one (`shards` in JSON, in shard order).
async fn doctor_audits_each_shard(s: &Store) {
    let damaged = r#"{"class":"noargs","queue":"math","args":{}}"#;
    s.with(|b| async move { b.push("math", damaged).await.unwrap() }).await;
    let report = s.json_exit(&["doctor"], 3);
    assert_eq!(
        (report["applicable"].clone(), report["fixable"].clone()),
        (Value::Bool(true), 1.into()),
        "{report}"
    );
    assert!(report.get("report").is_none(), "{report}");
    let shards = report["shards"].as_array().expect("one report per shard");
    assert_eq!(shards.len(), 3, "{report}");
    let at = resq_redis::shard::shard_index("math", 3);
    for (i, shard) in shards.iter().enumerate() {
        let findings = shard["findings"].as_array().expect("findings");
        let damage: Vec<&Value> = findings.iter().filter(|f| f["kind"] == "empty_object_args").collect();
        assert_eq!(damage.len(), usize::from(i == at), "shard {i}: {shard}");
        assert!(
            shard["namespace"].as_str().unwrap().ends_with(&format!(":{i}}}")),
            "{shard}"
        );
    }
    let (text, _) = s.run(&["doctor"], 3);
    assert_eq!(text.matches("namespace ").count(), 3, "{text}");
    let done = s.json(&["doctor", "--fix", "--yes"]);
    assert_eq!(done["fixed"]["fixed"], 1, "{done}");
    let jobs = s
        .with(|b| async move { b.queue_range("math", 0, -1).await.unwrap() })
        .await;
    assert_eq!(jobs, vec![r#"{"class":"noargs","queue":"math","args":[]}"#.to_owned()]);
    s.json(&["doctor"]);
}

per_backend!(
    status_queues_and_queue_show_the_real_state,
    enqueue_pause_and_resume,
    delayed_lists_scheduled_jobs,
    failed_list_show_and_filters,
    failed_retry_and_remove_by_id,
    failed_bulk_with_all_and_filters,
    workers_and_workers_clean,
    locks_and_locks_rm,
    cancel_by_id_and_by_class,
    migrate_and_doctor,
    usage_errors_exit_2,
    readme_operating_commands_work,
    metrics_serves_the_cluster_gauges,
    web_serves_the_dashboard,
);

async fn status_queues_and_queue_show_the_real_state(s: &Store) {
    s.with(|b| async move {
        let q = Queue::new(b);
        q.enqueue("math", "add", (1, 2)).await.unwrap();
        q.enqueue("math", "add", (3, 4)).await.unwrap();
        q.enqueue("low", "tidy", ()).await.unwrap();
    })
    .await;
    let status = s.json(&["status"]);
    let queues = status["queues"].as_array().expect("queues");
    let len = |name: &str| {
        queues
            .iter()
            .find(|q| q["name"] == name)
            .map(|q| q["length"].as_u64().unwrap())
    };
    assert_eq!(len("math"), Some(2), "{status}");
    assert_eq!(len("low"), Some(1), "{status}");
    assert_eq!(status["failed"], 0);
    assert_eq!(status["delayed"], 0);

    let list = s.json(&["queues"]);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");

    let detail = s.json(&["queue", "math"]);
    assert_eq!(detail["summary"]["length"], 2);
    let jobs = detail["jobs"]["items"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0]["class"], "add");
    assert_eq!(jobs[0]["args"], serde_json::json!([1, 2]));
    assert_eq!(jobs[1]["args"], serde_json::json!([3, 4]));
    let page = s.json(&["queue", "math", "--offset", "1", "--limit", "1"]);
    assert_eq!(page["jobs"]["items"][0]["args"], serde_json::json!([3, 4]));
    assert_eq!(page["jobs"]["total"], 2);

    // The table names what the JSON has.
    let (table, _) = s.run(&["status"], 0);
    assert!(table.contains("math") && table.contains("low"), "{table}");
    let (table, _) = s.run(&["queue", "math"], 0);
    assert!(table.contains("[3,4]"), "{table}");
}

async fn enqueue_pause_and_resume(s: &Store) {
    let out = s.json(&["enqueue", "math", "add", "[1, \"two\"]"]);
    assert_eq!(out["class"], "add");
    let jobs = s
        .with(|b| async move { b.queue_range("math", 0, -1).await.unwrap() })
        .await;
    assert_eq!(jobs.len(), 1);
    let job = resq::job::Job::decode(&jobs[0]).unwrap();
    assert_eq!(
        (job.class.as_str(), job.args.clone()),
        ("add", vec![serde_json::json!(1), serde_json::json!("two")])
    );

    // Not an array, not JSON: usage errors, nothing enqueued.
    let (_, err) = s.run(&["enqueue", "math", "add", "{\"a\":1}"], 2);
    assert_one_error_line(&err);
    let (_, err) = s.run(&["enqueue", "math", "add", "nope"], 2);
    assert_one_error_line(&err);
    assert_eq!(s.with(|b| async move { b.queue_len("math").await.unwrap() }).await, 1);

    let out = s.json(&["pause", "math"]);
    assert_eq!(
        (out["paused"].clone(), out["changed"].clone()),
        (Value::Bool(true), Value::Bool(true))
    );
    let paused = s.with(|b| async move { b.paused_queues().await.unwrap() }).await;
    assert_eq!(paused, vec!["math".to_owned()]);
    let queues = s.json(&["queues"]);
    assert_eq!(queues[0]["paused"], true, "{queues}");
    assert_eq!(s.json(&["pause", "math"])["changed"], false);
    let out = s.json(&["resume", "math"]);
    assert_eq!(out["changed"], true);
    assert!(s
        .with(|b| async move { b.paused_queues().await.unwrap() })
        .await
        .is_empty());
    let (text, _) = s.run(&["resume", "math"], 0);
    assert!(text.contains("was not paused"), "{text}");
}

async fn delayed_lists_scheduled_jobs(s: &Store) {
    s.with(|b| async move {
        let q = Queue::new(b);
        q.enqueue_in(Duration::from_secs(7200), "math", "later", (2,))
            .await
            .unwrap();
        q.enqueue_in(Duration::from_secs(3600), "math", "sooner", (1,))
            .await
            .unwrap();
    })
    .await;
    let d = s.json(&["delayed"]);
    assert_eq!(d["total"], 2, "{d}");
    let items = d["items"].as_array().unwrap();
    assert_eq!(items[0]["class"], "sooner", "oldest first: {d}");
    assert_eq!(items[1]["class"], "later");
    assert_eq!(items[0]["queue"], "math");
    assert!(items[0]["timestamp_ms"].as_i64().unwrap() < items[1]["timestamp_ms"].as_i64().unwrap());
    let (table, _) = s.run(&["delayed"], 0);
    assert!(table.contains("sooner") && table.contains("later"), "{table}");
}

/// Pushes failed entries: (class, queue, error) each.
async fn seed_failed(s: &Store, entries: &[(&str, &str, &str)]) {
    let entries: Vec<(String, String, String)> = entries
        .iter()
        .map(|(c, q, e)| ((*c).to_owned(), (*q).to_owned(), (*e).to_owned()))
        .collect();
    s.with(|b| async move {
        for (i, (class, queue, error)) in entries.iter().enumerate() {
            let payload = resq::job::encode_payload(queue, class, &[serde_json::json!(i)]);
            let entry = encode_entry(
                "host:1",
                queue,
                &payload,
                &Failure::new("Error", error.as_str()),
                resq::time::now_ms(),
            );
            b.push_failed(&entry).await.unwrap();
        }
    })
    .await;
}

fn ids(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_owned())
        .collect()
}

async fn failed_count(s: &Store) -> u64 {
    s.with(|b| async move { b.failed_count().await.unwrap() }).await
}

async fn failed_list_show_and_filters(s: &Store) {
    seed_failed(
        s,
        &[("a", "q1", "boom"), ("a", "q2", "Kaboom here"), ("b", "q1", "fizz")],
    )
    .await;
    let all = s.json(&["failed", "list"]);
    assert_eq!(all["total"], 3, "{all}");
    let by_class = s.json(&["failed", "list", "--class", "a"]);
    assert_eq!(by_class["total"], 2);
    assert!(by_class["items"].as_array().unwrap().iter().all(|i| i["class"] == "a"));
    let by_queue = s.json(&["failed", "list", "--queue", "q1"]);
    assert_eq!(by_queue["total"], 2);
    let by_error = s.json(&["failed", "list", "--error", "KABOOM"]);
    assert_eq!(by_error["total"], 1, "case-insensitive: {by_error}");
    assert_eq!(by_error["items"][0]["error"], "Kaboom here");
    assert_eq!(s.json(&["failed", "list", "--since", "1h"])["total"], 3);
    assert_eq!(s.json(&["failed", "list", "--until", "1h"])["total"], 0);
    assert_eq!(
        s.json(&["failed", "list", "--since", "2000-01-01T00:00:00Z"])["total"],
        3
    );
    let paged = s.json(&["failed", "list", "--limit", "1", "--offset", "1"]);
    assert_eq!(ids(&paged).len(), 1);
    assert_eq!(paged["total"], 3);

    let id = ids(&all)[1].clone();
    let one = s.json(&["failed", "show", &id]);
    assert_eq!(one["id"], id.as_str());
    assert_eq!(one["class"], "a");
    assert_eq!(one["queue"], "q2");
    let (text, _) = s.run(&["failed", "show", &id], 0);
    assert!(text.contains("Kaboom here"), "{text}");
    let (table, _) = s.run(&["failed", "list"], 0);
    assert!(table.contains(&id), "{table}");

    // A malformed id and a bad --since are usage errors.
    let (_, err) = s.run(&["failed", "show", "nope"], 2);
    assert!(!err.is_empty());
    s.run(&["failed", "list", "--since", "yesterday-ish"], 2);
}

async fn failed_retry_and_remove_by_id(s: &Store) {
    seed_failed(s, &[("a", "q1", "boom"), ("b", "q2", "bang")]).await;
    let list = s.json(&["failed", "list"]);
    let ids = ids(&list);
    let first = ids[0].clone();

    // Without --yes and without a terminal: refused, nothing changed.
    let (_, err) = s.run(&["failed", "retry", &first], 2);
    assert_one_error_line(&err);
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(failed_count(s).await, 2);

    // A dry run names exactly what would change, and changes nothing.
    let plan = s.json(&["failed", "retry", &first, "--dry-run"]);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["count"], 1);
    assert_eq!(plan["ids"], serde_json::json!([first]));
    assert_eq!(failed_count(s).await, 2);
    assert_eq!(s.with(|b| async move { b.queue_len("q1").await.unwrap() }).await, 0);

    let done = s.json(&["failed", "retry", &first, "--yes"]);
    assert_eq!(
        (done["done"].as_u64(), done["stale"].as_u64()),
        (Some(1), Some(0)),
        "{done}"
    );
    assert_eq!(failed_count(s).await, 1);
    let queued = s
        .with(|b| async move { b.queue_range("q1", 0, -1).await.unwrap() })
        .await;
    assert_eq!(queued.len(), 1);
    assert_eq!(resq::job::Job::decode(&queued[0]).unwrap().class, "a");

    // The same id again: stale, exit 1, one line telling to list again.
    let (_, err) = s.run(&["failed", "retry", &first, "--yes"], 1);
    assert_one_error_line(&err);
    assert!(err.contains("list the failed jobs again"), "{err}");
    assert_eq!(failed_count(s).await, 1);

    let fresh = ids_of(s).await;
    let (_, err) = s.run(&["failed", "remove", &fresh[0]], 2);
    assert_one_error_line(&err);
    assert_eq!(failed_count(s).await, 1);
    let done = s.json(&["failed", "remove", &fresh[0], "--yes"]);
    assert_eq!(done["done"], 1);
    assert_eq!(failed_count(s).await, 0);
    assert_eq!(
        s.with(|b| async move { b.queue_len("q2").await.unwrap() }).await,
        0,
        "removed, not retried"
    );
}

async fn ids_of(s: &Store) -> Vec<String> {
    ids(&s.json(&["failed", "list"]))
}

async fn failed_bulk_with_all_and_filters(s: &Store) {
    seed_failed(
        s,
        &[
            ("a", "q1", "boom"),
            ("a", "q1", "boom"),
            ("b", "q1", "bang"),
            ("c", "q2", "boom"),
        ],
    )
    .await;
    // Filters without --all: a usage error.
    s.run(&["failed", "remove", "--class", "a", "--yes"], 2);
    let plan = s.json(&["failed", "remove", "--all", "--error", "boom", "--dry-run"]);
    assert_eq!(plan["count"], 3, "{plan}");
    assert_eq!(plan["ids"].as_array().unwrap().len(), 3);
    assert_eq!(failed_count(s).await, 4);
    s.run(&["failed", "remove", "--all", "--error", "boom"], 2);
    assert_eq!(failed_count(s).await, 4);

    let done = s.json(&["failed", "retry", "--all", "--class", "a", "--yes"]);
    assert_eq!(done["done"], 2, "{done}");
    assert_eq!(s.with(|b| async move { b.queue_len("q1").await.unwrap() }).await, 2);
    let left = s.json(&["failed", "list"]);
    assert_eq!(left["total"], 2);
    assert!(left["items"].as_array().unwrap().iter().all(|i| i["class"] != "a"));

    let (text, _) = s.run(&["failed", "remove", "--all", "--yes"], 0);
    assert!(text.contains("removed 2"), "{text}");
    assert_eq!(failed_count(s).await, 0);
}

async fn workers_and_workers_clean(s: &Store) {
    let now = resq::time::now_ms();
    s.with(|b| async move {
        let dead = WorkerId::new("dead-host:1", &["math".to_owned()]);
        let alive = WorkerId::new("live-host:2", &["math".to_owned()]);
        b.register_worker(&dead, now - 600_000).await.unwrap();
        b.ping_worker(&dead, now - 600_000).await.unwrap();
        // The dead worker holds a job: cleaning it puts the job on the failed list.
        Queue::new(b.clone()).enqueue("math", "held", (7,)).await.unwrap();
        let claimed = b.claim(&dead, &["math".to_owned()], "then").await.unwrap();
        assert!(claimed.is_some());
        b.register_worker(&alive, now).await.unwrap();
        b.ping_worker(&alive, now).await.unwrap();
    })
    .await;
    let ws = s.json(&["workers"]);
    let names: Vec<&str> = ws
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"dead-host:1") && names.contains(&"live-host:2"), "{ws}");

    let plan = s.json(&["workers", "clean", "--stale-for", "1m", "--dry-run"]);
    assert_eq!(plan["count"], 1, "{plan}");
    assert_eq!(plan["workers"][0]["name"], "dead-host:1");
    s.run(&["workers", "clean", "--stale-for", "1m"], 2);
    assert_eq!(s.with(|b| async move { b.workers().await.unwrap().len() }).await, 2);

    assert_eq!(failed_count(s).await, 0);
    let done = s.json(&["workers", "clean", "--stale-for", "1m", "--yes"]);
    assert_eq!(done["count"], 1, "{done}");
    assert_eq!(done["workers"][0]["name"], "dead-host:1");
    let failed = s.json(&["failed", "list"]);
    assert_eq!(failed["total"], 1, "the held job went to the failed list: {failed}");
    assert_eq!(failed["items"][0]["class"], "held");
    let left = s.with(|b| async move { b.workers().await.unwrap() }).await;
    assert_eq!(
        left.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(),
        vec!["live-host:2"]
    );

    // By name; an unknown name is a runtime error.
    let (_, err) = s.run(&["workers", "clean", "nobody:9", "--yes"], 1);
    assert_one_error_line(&err);
    let done = s.json(&["workers", "clean", "live-host:2", "--yes"]);
    assert_eq!(done["count"], 1);
    assert!(s.with(|b| async move { b.workers().await.unwrap() }).await.is_empty());
}

async fn locks_and_locks_rm(s: &Store) {
    s.with(|b| async move {
        assert!(b
            .acquire_lock("lock:cli:a", "x", Duration::from_secs(600))
            .await
            .unwrap());
        assert!(b
            .acquire_lock("lock:cli:b", "y", Duration::from_secs(600))
            .await
            .unwrap());
    })
    .await;
    let ls = s.json(&["locks"]);
    let keys: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec!["lock:cli:a", "lock:cli:b"], "{ls}");
    assert!(ls[0]["ttl_ms"].as_u64().unwrap() > 500_000);

    let plan = s.json(&["locks", "rm", "lock:cli:a", "--dry-run"]);
    assert_eq!(plan["deleted"], serde_json::json!(["lock:cli:a"]));
    s.run(&["locks", "rm", "lock:cli:a"], 2);
    assert_eq!(s.with(|b| async move { b.locks().await.unwrap().len() }).await, 2);

    let done = s.json(&["locks", "rm", "lock:cli:a", "--yes"]);
    assert_eq!(done["deleted"], serde_json::json!(["lock:cli:a"]));
    let left = s.with(|b| async move { b.locks().await.unwrap() }).await;
    assert_eq!(left, vec![("lock:cli:b".to_owned(), "y".to_owned())]);
    let (_, err) = s.run(&["locks", "rm", "lock:cli:a", "--yes"], 1);
    assert_one_error_line(&err);
}

/// `resq cancel`: ids from the listings (a queued job, a delayed one, a
/// worker's running job, which gets a cancel request), then `--class`
/// with `--args`; `--dry-run` changes nothing, and without `--yes` on a
/// pipe it refuses (exit 2); a stale id fails (exit 1).
async fn cancel_by_id_and_by_class(s: &Store) {
    let worker = WorkerId::new("cli-host:1+1", &["busy".to_owned()]);
    let w = worker.clone();
    s.with(|b| async move {
        let q = Queue::new(Arc::clone(&b));
        q.enqueue("math", "add", (1, 2)).await.unwrap();
        q.enqueue("math", "add", (3, 4)).await.unwrap();
        q.enqueue("math", "tidy", ()).await.unwrap();
        q.enqueue_in(Duration::from_secs(3600), "math", "add", (5, 6))
            .await
            .unwrap();
        q.enqueue("busy", "add", (7, 8)).await.unwrap();
        b.register_worker(&w, resq::time::now_ms()).await.unwrap();
        assert!(b
            .claim(&w, &["busy".to_owned()], "Fri Dec 04 2026 18:00:00 GMT+0000")
            .await
            .unwrap()
            .is_some());
    })
    .await;
    let detail = s.json(&["queue", "math"]);
    let queued_id = detail["jobs"]["items"][0]["id"].as_str().unwrap().to_owned();
    assert!(queued_id.starts_with("queued-"), "{detail}");
    let delayed = s.json(&["delayed"]);
    let delayed_id = delayed["items"][0]["id"].as_str().unwrap().to_owned();
    let workers = s.json(&["workers"]);
    let running_id = workers[0]["job"]["id"].as_str().unwrap().to_owned();
    assert!(running_id.starts_with("running-"), "{workers}");

    let plan = s.json(&["cancel", &queued_id, &delayed_id, &running_id, "--dry-run"]);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(
        (
            plan["running"].as_u64(),
            plan["queued"].as_u64(),
            plan["delayed"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    s.run(&["cancel", &queued_id], 2);
    assert_eq!(s.with(|b| async move { b.queue_len("math").await.unwrap() }).await, 3);

    let done = s.json(&["cancel", &queued_id, &delayed_id, &running_id, "--yes"]);
    assert_eq!(done["jobs"].as_array().unwrap().len(), 3, "{done}");
    assert_eq!(done["running"], 1);
    let (left, delayed_left, cancelled) = s
        .with(|b| async move {
            (
                b.queue_len("math").await.unwrap(),
                b.delayed_count().await.unwrap(),
                b.stat(resq::worker::CANCELLED_STAT).await.unwrap(),
            )
        })
        .await;
    assert_eq!((left, delayed_left), (2, 0), "{}", s.kind);
    assert_eq!(
        cancelled, 2,
        "{}: the queued and the delayed job are counted here",
        s.kind
    );
    let (_, err) = s.run(&["cancel", &queued_id, "--yes"], 1);
    assert_one_error_line(&err);

    let plan = s.json(&["cancel", "--class", "add", "--args", "[3, 4]", "--dry-run"]);
    assert_eq!(plan["jobs"].as_array().unwrap().len(), 1, "{plan}");
    let done = s.json(&["cancel", "--class", "add", "--args", "[3, 4]", "--yes"]);
    assert_eq!(done["queued"], 1, "{done}");
    let tidy = s.json(&["queue", "math"]);
    assert_eq!(tidy["jobs"]["items"].as_array().unwrap().len(), 1);
    assert_eq!(tidy["jobs"]["items"][0]["class"], "tidy");
    s.run(&["cancel", "--args", "[1]"], 2);
    s.run(&["cancel", "not-an-id"], 2);
}

async fn migrate_and_doctor(s: &Store) {
    let m = s.json(&["migrate"]);
    assert_eq!(m["backend"], s.kind);
    if s.kind == "postgres" {
        assert_eq!(
            m["version"].as_i64(),
            Some(i64::from(resq_postgres::latest_version())),
            "{m}"
        );
    } else {
        assert_eq!(m["applied"], serde_json::json!([]));
    }

    // A job with cjson's `{}` args, as node-resque's Lua leaves it.
    let damaged = r#"{"class":"noargs","queue":"math","args":{}}"#;
    s.with(|b| async move { b.push("math", damaged).await.unwrap() }).await;
    if s.kind != "redis" {
        let report = s.json(&["doctor"]);
        assert_eq!(report["applicable"], false, "{report}");
        let (text, _) = s.run(&["doctor"], 0);
        assert!(text.contains("Redis"), "{text}");
        return;
    }
    // On Redis it finds the damage: exit 3 (problems left), in JSON too.
    let report = s.json_exit(&["doctor"], 3);
    assert_eq!(report["applicable"], true);
    assert_eq!(report["fixable"], 1, "{report}");
    assert_eq!(report["report"]["findings"][0]["kind"], "empty_object_args");
    let (_, stderr) = s.run(&["doctor"], 3);
    assert_one_error_line(&stderr);
    assert!(stderr.contains("1 problems found"), "{stderr}");
    s.run(&["doctor", "--fix"], 2);
    let (text, _) = s.run(&["doctor", "--fix", "--dry-run"], 3);
    assert!(text.contains("would apply 1"), "{text}");
    let raw = || s.with(|b| async move { b.queue_range("math", 0, -1).await.unwrap() });
    assert_eq!(raw().await, vec![damaged.to_owned()]);
    let done = s.json(&["doctor", "--fix", "--yes"]);
    assert_eq!(done["fixed"]["fixed"], 1, "{done}");
    assert_eq!(
        raw().await,
        vec![r#"{"class":"noargs","queue":"math","args":[]}"#.to_owned()]
    );
    assert_eq!(s.json(&["doctor"])["fixable"], 0);

    // A working-on key of a worker that is not registered: --fix moves its
    // job to the failed list and deletes the key.
    let ns = match &s.guard {
        Guard::Redis(b) => b.config().namespace.clone(),
        _ => unreachable!("redis only"),
    };
    let client = ::redis::Client::open(resq_redis::testing::server_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{ns}:worker:ghost:1:math");
    let job = r#"{"class":"lost","queue":"math","args":[1]}"#;
    let record = format!(r#"{{"run_at":"then","queue":"math","worker":"ghost:1","payload":{job}}}"#);
    let _: () = ::redis::cmd("SET")
        .arg(&key)
        .arg(&record)
        .query_async(&mut conn)
        .await
        .unwrap();
    let report = s.json_exit(&["doctor"], 3);
    assert_eq!(report["fixable"], 1, "{report}");
    let plan = s.json_exit(&["doctor", "--fix", "--dry-run"], 3);
    assert_eq!(plan["fixed"], Value::Null, "a dry run fixes nothing: {plan}");
    assert_eq!(failed_count(s).await, 0);
    let done = s.json(&["doctor", "--fix", "--yes"]);
    assert_eq!(done["fixed"]["fixed"], 1, "{done}");
    let exists: bool = ::redis::cmd("EXISTS").arg(&key).query_async(&mut conn).await.unwrap();
    assert!(!exists);
    let failed = s.json(&["failed", "list"]);
    assert_eq!(failed["items"][0]["class"], "lost", "{failed}");
}

async fn usage_errors_exit_2(s: &Store) {
    // No URL at all.
    let mut cmd = Command::cargo_bin("resq").unwrap();
    let out = cmd.env_remove("RESQ_URL").arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_one_error_line(&String::from_utf8_lossy(&out.stderr));
    // A memory store without a snapshot file would be empty in this process.
    let mut cmd = Command::cargo_bin("resq").unwrap();
    let out = cmd
        .env_remove("RESQ_URL")
        .args(["--url", "memory://", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_one_error_line(&String::from_utf8_lossy(&out.stderr));
    // The URL from the environment works.
    let mut cmd = Command::cargo_bin("resq").unwrap();
    let out = cmd.env("RESQ_URL", &s.url).args(["--json", "queues"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // Unknown subcommands and flags.
    for args in [
        &["frobnicate"][..],
        &["status", "--bogus"],
        &["failed", "retry"],
        &["failed", "retry", "--all", "0-00"],
        &["workers", "clean", "--stale-for", "soon"],
        &["failed", "show", "12-nothex"],
    ] {
        let (stdout, err) = s.run(args, 2);
        assert_one_error_line(&err);
        assert!(stdout.is_empty(), "{stdout}");
    }
    let (help, _) = s.run(&["failed", "--help"], 0);
    assert!(help.contains("retry"), "{help}");
}

/// An unreachable server: exit 1, one line, and the password never shown.
#[test]
fn unreachable_servers_fail_with_one_line_and_no_password() {
    for url in ["redis://:secret@127.0.0.1:1/", "postgres://user:secret@127.0.0.1:1/db"] {
        let out = Command::cargo_bin("resq")
            .unwrap()
            .env_remove("RESQ_URL")
            .env_remove("RESQ_LOG")
            .args(["--url", url, "status"])
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{url}: {stderr}");
        assert_one_error_line(&stderr);
        assert!(!stderr.contains("secret"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
    // A URL the store does not know: a usage error, password hidden.
    let out = Command::cargo_bin("resq")
        .unwrap()
        .env_remove("RESQ_URL")
        .args(["--url", "nosuch://u:secret@h/", "status"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");
}

/// On a terminal (a pseudo-terminal from util-linux `script`): a
/// destructive command asks y/N, "n" changes nothing (exit 1), "y" goes
/// ahead, and a bulk operation draws a progress bar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_it_asks_and_shows_progress() {
    let script_ok = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !script_ok {
        assert!(!required(), "util-linux `script` is needed for the terminal test");
        eprintln!("SKIP on_a_terminal_it_asks_and_shows_progress: no util-linux `script` for a pseudo-terminal");
        return;
    }
    let s = Store::memory().await.unwrap();
    seed_failed(&s, &[("a", "q1", "x"), ("b", "q1", "y"), ("c", "q1", "z")]).await;
    let bin = assert_cmd::cargo::cargo_bin("resq");
    let on_tty = |answer: &str| {
        let line = format!("'{}' --url '{}' failed retry --all", bin.display(), s.url);
        let out = std::process::Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env_remove("RESQ_URL")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().expect("stdin").write_all(answer.as_bytes())?;
                child.wait_with_output()
            })
            .expect("run script");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, text) = on_tty("n\n");
    assert!(text.contains("retry all 3 failed jobs? [y/N]"), "{text}");
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(failed_count(&s).await, 3);
    let (code, text) = on_tty("y\n");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("3/3 scanned"), "progress bar: {text}");
    assert!(text.contains("retried 3"), "{text}");
    assert_eq!(failed_count(&s).await, 0);
    assert_eq!(s.with(|b| async move { b.queue_len("q1").await.unwrap() }).await, 3);
}

/// The `sh` blocks of the README's "Operating resq" section, as lines.
fn readme_operating_lines() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("\n## Operating resq")
        .expect("README has an Operating resq section");
    let section = &readme[start + 1..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    let section = &section[..end];
    let mut lines = Vec::new();
    let mut in_sh = false;
    for line in section.lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if in_sh {
            lines.push(line.to_owned());
        }
    }
    lines
}

/// Splits a README command line into words: spaces separate, single
/// quotes group, a `#` outside quotes starts a comment.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                word.get_or_insert_with(String::new);
            }
            '#' if !quoted && word.is_none() => break,
            c if c.is_whitespace() && !quoted => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    assert!(!quoted, "unbalanced quote in README line: {line}");
    words.extend(word);
    words
}

/// Every command in the README's "Operating resq" section runs and
/// succeeds against a store seeded with what the commands name (a `math`
/// queue, failed `add` jobs, one failing with a timeout, the
/// `lock:add:math` lock), with `RESQ_URL` set to the store. `<id>` stands
/// for an id that `resq failed list` prints at that point. `cargo install`
/// and `export RESQ_URL=…` are the set-up the test does itself.
async fn readme_operating_commands_work(s: &Store) {
    seed_failed(
        s,
        &[
            ("add", "math", "boom"),
            ("add", "math", "timeout after 5s"),
            ("add", "math", "boom again"),
        ],
    )
    .await;
    s.with(|b| async move {
        let q = Queue::new(Arc::clone(&b));
        q.enqueue("math", "add", (1, 2)).await.unwrap();
        q.enqueue_in(Duration::from_secs(3600), "math", "add", (3, 4))
            .await
            .unwrap();
        assert!(b
            .acquire_lock("lock:add:math", "x", Duration::from_secs(600))
            .await
            .unwrap());
    })
    .await;
    let lines = readme_operating_lines();
    let mut ran = 0;
    for line in &lines {
        for command in line.split(';') {
            let words = shell_words(command);
            let Some(first) = words.first() else { continue };
            match first.as_str() {
                "cargo" => {
                    assert_eq!(words, ["cargo", "install", "--path", "cli"], "README: {line}");
                    continue;
                }
                "export" => {
                    assert!(words[1].starts_with("RESQ_URL="), "README: {line}");
                    continue;
                }
                "resq" => {}
                other => panic!("README Operating resq runs {other}, which this test does not know: {line}"),
            }
            let mut args: Vec<String> = words[1..].to_vec();
            if args.iter().any(|a| a == "<id>") {
                let listed = s.json(&["failed", "list"]);
                let id = ids(&listed)
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| panic!("no failed entry left for: {line}"));
                for a in &mut args {
                    if a == "<id>" {
                        a.clone_from(&id);
                    }
                }
            }
            if args.first().map(String::as_str) == Some("web") {
                let pages = serve_web_and_get(&s.url, &args, None, &[("/", None)]);
                assert!(pages[0].0.starts_with("HTTP/1.1 200"), "{}: {}", s.kind, pages[0].0);
                assert!(pages[0].1.contains("math"), "{}: {}", s.kind, pages[0].1);
                ran += 1;
                continue;
            }
            if args.first().map(String::as_str) == Some("metrics") {
                let body = serve_metrics_and_scrape(&s.url, &args);
                assert!(body.contains("resq_queue_length{queue=\"math\"}"), "{}: {body}", s.kind);
                ran += 1;
                continue;
            }
            let removes_a_lock =
                args.first().map(String::as_str) == Some("locks") && args.get(1).map(String::as_str) == Some("rm");
            let mut cmd = Command::cargo_bin("resq").expect("the resq binary");
            cmd.env_remove("RESQ_LOG")
                .env("RESQ_URL", &s.url)
                .args(&args)
                .timeout(Duration::from_secs(60));
            let out = cmd.output().expect("run resq");
            assert!(
                out.status.success(),
                "{}: README line `{line}` failed ({:?})\nstdout: {}\nstderr: {}",
                s.kind,
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if removes_a_lock {
                let locks = s.json(&["locks"]);
                assert!(
                    !locks.to_string().contains("lock:add:math"),
                    "{}: lock still there: {locks}",
                    s.kind
                );
            }
            ran += 1;
        }
    }
    assert!(ran >= 15, "only {ran} README commands ran");
    // What the README's commands did, checked on the store itself.
    let (failed, queued, paused) = s
        .with(|b| async move {
            (
                b.failed_count().await.unwrap(),
                b.queue_len("math").await.unwrap(),
                b.paused_queues().await.unwrap(),
            )
        })
        .await;
    assert_eq!(
        failed, 1,
        "{}: one timeout retried, one entry removed, one left",
        s.kind
    );
    assert_eq!(
        queued, 3,
        "{}: the seeded job, the retried one and the enqueued one",
        s.kind
    );
    assert!(paused.is_empty(), "{}: paused then resumed", s.kind);
}

/// A free local port (bound, read, released).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// One `GET /metrics` over plain HTTP/1.1: (status line, body).
fn http_get_metrics(port: u16) -> std::io::Result<(String, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Ok((head.to_owned(), body.to_owned()))
}

/// Runs `resq <args>` (a `metrics --listen ADDR` command; ADDR is replaced
/// by a free local port) against `url`, scrapes it once it answers, stops
/// it with SIGTERM, checks that it exited with 0, and returns the body.
fn serve_metrics_and_scrape(url: &str, args: &[String]) -> String {
    let port = free_port();
    let mut args = args.to_vec();
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .expect("metrics --listen ADDR");
    args[listen + 1] = format!("127.0.0.1:{port}");
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("resq"))
        .env_remove("RESQ_LOG")
        .env("RESQ_URL", url)
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start resq metrics");
    let started = std::time::Instant::now();
    let scraped = loop {
        match http_get_metrics(port) {
            Ok((head, body)) if body.contains("resq_queue_length") => break Ok((head, body)),
            Ok(_) | Err(_) if started.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(100));
            }
            other => break other,
        }
    };
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let out = child.wait_with_output().expect("resq metrics exits");
    let (head, body) =
        scraped.unwrap_or_else(|e| panic!("no metrics: {e}; stderr: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("application/openmetrics-text"),
        "{head}"
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stopped by SIGTERM: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    body
}

/// `resq metrics --listen ADDR` serves the store's cluster gauges on
/// `/metrics` in OpenMetrics text, and stops cleanly on SIGTERM.
async fn metrics_serves_the_cluster_gauges(s: &Store) {
    s.with(|b| async move {
        let q = Queue::new(Arc::clone(&b));
        q.enqueue("math", "add", (1, 2)).await.unwrap();
        q.enqueue("math", "add", (3, 4)).await.unwrap();
        q.enqueue("mail", "send", ("x",)).await.unwrap();
        q.enqueue_in(Duration::from_secs(3600), "math", "add", (5, 6))
            .await
            .unwrap();
    })
    .await;
    seed_failed(s, &[("add", "math", "boom")]).await;
    let args: Vec<String> = ["metrics", "--listen", "ADDR"]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
    let body = serve_metrics_and_scrape(&s.url, &args);
    let value = |series: &str| -> f64 {
        body.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().split(' ').next()?.parse().ok())
            })
            .unwrap_or_else(|| panic!("{}: no {series} in {body}", s.kind))
    };
    assert_eq!(value("resq_queue_length{queue=\"math\"}"), 2.0);
    assert_eq!(value("resq_queue_length{queue=\"mail\"}"), 1.0);
    assert_eq!(value("resq_delayed_jobs"), 1.0);
    assert_eq!(value("resq_failed_jobs"), 1.0);
    assert_eq!(value("resq_scheduler_leader"), 0.0);
}

/// One `GET path` over plain HTTP/1.1 with an optional `Authorization`
/// header: (head, body).
fn http_get(port: u16, path: &str, authorization: Option<&str>) -> std::io::Result<(String, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Ok((head.to_owned(), body.to_owned()))
}

/// Runs `resq <args>` (a `web --listen ADDR …` command; ADDR is replaced by
/// a free local port) against `url`, with `RESQ_WEB_TOKEN` set to `token`
/// if given, waits until it answers, GETs each `(path, authorization)`,
/// stops it with SIGTERM, checks that it exited with 0, and returns each
/// (head, body).
fn serve_web_and_get(
    url: &str,
    args: &[String],
    token: Option<&str>,
    requests: &[(&str, Option<&str>)],
) -> Vec<(String, String)> {
    let port = free_port();
    let mut args = args.to_vec();
    let listen = args.iter().position(|a| a == "--listen").expect("web --listen ADDR");
    args[listen + 1] = format!("127.0.0.1:{port}");
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("resq"));
    cmd.env_remove("RESQ_LOG")
        .env_remove("RESQ_WEB_TOKEN")
        .env_remove("RESQ_WEB_BASIC_AUTH")
        .env("RESQ_URL", url)
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(token) = token {
        cmd.env("RESQ_WEB_TOKEN", token);
    }
    let child = cmd.spawn().expect("start resq web");
    let started = std::time::Instant::now();
    while http_get(port, "/assets/style.css", None).is_err() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let answers: Vec<std::io::Result<(String, String)>> = requests
        .iter()
        .map(|(path, auth)| http_get(port, path, *auth))
        .collect();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let out = child.wait_with_output().expect("resq web exits");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "stopped by SIGTERM: {stderr}");
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|e| panic!("no answer: {e}; stderr: {stderr}")))
        .collect()
}

/// `resq web --listen ADDR` with `RESQ_WEB_TOKEN` serves the dashboard only
/// to requests with the token, read-only when asked, and stops cleanly on
/// SIGTERM.
async fn web_serves_the_dashboard(s: &Store) {
    s.with(|b| async move {
        let q = Queue::new(b);
        q.enqueue("math", "add", (1, 2)).await.unwrap();
    })
    .await;
    let args: Vec<String> = ["web", "--listen", "ADDR", "--read-only"]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
    let pages = serve_web_and_get(
        &s.url,
        &args,
        Some("t0ken"),
        &[
            ("/", None),
            ("/", Some("Bearer wrong")),
            ("/", Some("Bearer t0ken")),
            ("/queues/math", Some("Bearer t0ken")),
        ],
    );
    assert!(pages[0].0.starts_with("HTTP/1.1 401"), "{}: {}", s.kind, pages[0].0);
    assert!(pages[1].0.starts_with("HTTP/1.1 401"), "{}: {}", s.kind, pages[1].0);
    for (head, body) in &pages[2..] {
        assert!(head.starts_with("HTTP/1.1 200"), "{}: {head}", s.kind);
        assert!(
            body.contains("math") && body.contains("read-only"),
            "{}: {body}",
            s.kind
        );
        assert!(!body.contains("<form method=\"post\""), "{}: {body}", s.kind);
    }
}
