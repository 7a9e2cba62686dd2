//! Redis Cluster, single-slot mode, beyond the conformance suite (which
//! runs whole on the cluster as `redis_cluster::…`): every key of a
//! namespace, lock keys whose text holds another hash tag included, lives
//! in the namespace's slot; and a primary killed under a busy worker and
//! scheduler is replaced by its replica with no stored job lost, in
//! single-slot mode and in sharded mode (the primary of the home shard).
//!
//! The cluster is `ops/redis-cluster.sh start`'s (or `RESQ_REDIS_CLUSTER_URL`).
//! Without it the tests print `SKIP …`, unless `RESQ_REQUIRE_BACKENDS=1`.

mod common;

use common::required;
use resq_core::task::{JobContext, TaskError, Tasks};
use resq_core::{LockStore, Queue, Worker, WorkerConfig};
use resq_redis::testing::{cluster_url, unique_cluster_namespace};
use resq_redis::{RedisBackend, RedisConfig};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The tests of this file take turns: one of them kills a primary.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A backend in a fresh tagged namespace with short timeouts, or `None`
/// (after printing why) when the cluster is unreachable.
async fn backend(test: &str) -> Option<Arc<RedisBackend>> {
    let url = cluster_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let mut config = RedisConfig::from_url(&format!(
        "{url}{sep}response_timeout_ms=2000&connection_timeout_ms=1000"
    ))
    .unwrap();
    config.namespace = unique_cluster_namespace();
    match RedisBackend::connect(config).await {
        Ok(b) => Some(Arc::new(b)),
        Err(e) => {
            assert!(!required(), "the Redis Cluster at {url} is unreachable: {e}");
            eprintln!("SKIP {test}: the Redis Cluster at {url} is unreachable: {e}");
            None
        }
    }
}

/// The cluster's nodes as `CLUSTER NODES` lists them, read from the first
/// reachable seed node.
async fn cluster_nodes() -> Vec<Node> {
    let config = RedisConfig::from_url(&cluster_url()).unwrap();
    for seed in &config.cluster_nodes {
        let Ok(client) = redis::Client::open(seed.as_str()) else {
            continue;
        };
        let Ok(mut c) = client.get_multiplexed_async_connection().await else {
            continue;
        };
        let Ok(text) = redis::cmd("CLUSTER").arg("NODES").query_async::<String>(&mut c).await else {
            continue;
        };
        return text.lines().filter_map(Node::parse).collect();
    }
    panic!("no seed node of the cluster answers CLUSTER NODES");
}

#[derive(Debug, Clone)]
struct Node {
    id: String,
    /// `host:port`.
    addr: String,
    primary: bool,
    failed: bool,
    /// The primary's id, for a replica.
    replica_of: Option<String>,
    slots: Vec<(u16, u16)>,
}

impl Node {
    fn parse(line: &str) -> Option<Node> {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            return None;
        }
        let addr = f[1].split('@').next()?.to_owned();
        let slots = f[8..]
            .iter()
            .filter(|s| !s.starts_with('['))
            .filter_map(|s| match s.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => s.parse().ok().map(|n| (n, n)),
            })
            .collect();
        Some(Node {
            id: f[0].to_owned(),
            addr,
            primary: f[2].contains("master"),
            failed: f[2].contains("fail") || f[7] != "connected",
            replica_of: (f[3] != "-").then(|| f[3].to_owned()),
            slots,
        })
    }

    fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
    }

    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://{}", self.addr))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

async fn keyslot(key: &[u8]) -> u16 {
    let nodes = cluster_nodes().await;
    let node = nodes.iter().find(|n| !n.failed).expect("a node is up");
    let mut c = node.conn().await;
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap()
}

/// Every key of the namespace, from every primary.
async fn keys_everywhere(namespace: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for node in cluster_nodes().await.into_iter().filter(|n| n.primary && !n.failed) {
        let mut c = node.conn().await;
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
            .arg(format!("{namespace}:*").replace('{', "\\{").replace('}', "\\}"))
            .query_async(&mut c)
            .await
            .unwrap();
        out.extend(keys.into_iter().map(|k| (node.addr.clone(), k)));
    }
    out
}

#[tokio::test]
async fn every_key_of_a_namespace_lives_in_its_slot() {
    let _turn = TURN.lock().await;
    let Some(backend) = backend("every_key_of_a_namespace_lives_in_its_slot").await else {
        return;
    };
    let ns = backend.config().namespace.clone();
    let queue = Queue::new(backend.clone() as Arc<dyn resq_core::Backend>);
    queue.enqueue("math", "add", (1, 2)).await.unwrap();
    queue.enqueue_at(1_000, "later", "add", (3,)).await.unwrap();
    // A batch over two queues (the script that once built key names from
    // the prefix inside Lua).
    let batch = (0..5).map(|i| resq_core::NewJob::new(format!("b{}", i % 2), "add", (i,)).unwrap());
    assert_eq!(queue.enqueue_batch(batch).await.unwrap(), 5);
    // A user's lock key holding another hash tag stays in the namespace.
    assert!(backend
        .acquire_lock("lock:{elsewhere}:user", "v", Duration::from_secs(60))
        .await
        .unwrap());
    let slot = keyslot(ns.as_bytes()).await;
    let keys = keys_everywhere(&ns).await;
    assert!(keys.len() >= 6, "{keys:?}");
    let owners: HashSet<&str> = keys.iter().map(|(addr, _)| addr.as_str()).collect();
    assert_eq!(
        owners.len(),
        1,
        "the namespace's keys are on several primaries: {keys:?}"
    );
    for (_, key) in &keys {
        assert_eq!(keyslot(key).await, slot, "{}", String::from_utf8_lossy(key));
    }
    assert!(keys.iter().any(|(_, k)| k.ends_with(b"lock:{elsewhere}:user")));
    // SCAN goes to the slot's primary: the lock is listed.
    let locks = backend.locks().await.unwrap();
    assert!(locks.iter().any(|(k, _)| k == "lock:{elsewhere}:user"), "{locks:?}");
    assert!(backend.delete_namespace().await.unwrap() >= 6);
    assert!(keys_everywhere(&ns).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_fails_over_without_losing_jobs() {
    let _turn = TURN.lock().await;
    let test = "a_killed_primary_fails_over_without_losing_jobs";
    let Some(backend) = backend(test).await else {
        return;
    };
    let ns = backend.config().namespace.clone();
    let slot = keyslot(ns.as_bytes()).await;
    let dyn_backend = backend.clone() as Arc<dyn resq_core::Backend>;
    fail_over_under_load(test, &dyn_backend, &["q".to_owned()], slot).await;
    backend.delete_namespace().await.unwrap();
}

/// The same in sharded mode (3 shards): three queues on three shards, and
/// the primary of shard 0 (the home shard: the scheduler's leader lock
/// and one of the queues) is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_fails_over_without_losing_jobs_sharded() {
    let _turn = TURN.lock().await;
    let test = "a_killed_primary_fails_over_without_losing_jobs_sharded";
    let url = cluster_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let base = resq_redis::testing::unique_namespace();
    let config = RedisConfig::from_url(&format!(
        "{url}{sep}response_timeout_ms=2000&connection_timeout_ms=1000&namespace={base}&shards=3"
    ))
    .unwrap();
    let sharded = match resq_redis::ShardedRedis::connect(config).await {
        Ok(b) => Arc::new(b),
        Err(e) => {
            assert!(!required(), "the Redis Cluster at {url} is unreachable: {e}");
            eprintln!("SKIP {test}: the Redis Cluster at {url} is unreachable: {e}");
            return;
        }
    };
    // One queue on each shard.
    let mut queues: Vec<String> = Vec::new();
    for i in 0.. {
        let q = format!("q{i}");
        if !queues.iter().any(|o| sharded.shard_of(o) == sharded.shard_of(&q)) {
            queues.push(q);
        }
        if queues.len() == 3 {
            break;
        }
    }
    let home = resq_redis::shard_namespace(&base, 0);
    let slot = keyslot(home.as_bytes()).await;
    let dyn_backend = sharded.clone() as Arc<dyn resq_core::Backend>;
    fail_over_under_load(test, &dyn_backend, &queues, slot).await;
    for shard in sharded.shards() {
        shard.delete_namespace().await.unwrap();
    }
}

/// Enqueues 60 jobs over `queues` (half due at once, half delayed by up to
/// 3 s), waits until the replica of `slot`'s primary holds everything
/// (Redis replicates asynchronously: "acknowledged" means replicated),
/// runs a worker and a scheduler, kills that primary's process once 5 jobs
/// ran, and checks that every job runs, that the replica took the slot
/// over and that the queues end empty. The killed node is restarted when
/// this returns (or panics).
async fn fail_over_under_load(test: &str, dyn_backend: &Arc<dyn resq_core::Backend>, queues: &[String], slot: u16) {
    let nodes = cluster_nodes().await;
    let primary = nodes
        .iter()
        .find(|n| n.primary && !n.failed && n.owns(slot))
        .expect("a primary owns the namespace's slot")
        .clone();
    let Some(replica) = nodes
        .iter()
        .find(|n| n.replica_of.as_deref() == Some(&primary.id) && !n.failed)
        .cloned()
    else {
        let reason = format!(
            "the primary {} has no replica (run the cluster with replicas)",
            primary.addr
        );
        assert!(!required(), "{reason}");
        eprintln!("SKIP {test}: {reason}");
        return;
    };

    let queue = Queue::new(Arc::clone(dyn_backend));
    const JOBS: i64 = 60;
    let on = |i: i64| queues[i as usize % queues.len()].clone();
    for i in 0..JOBS / 2 {
        queue.enqueue(&on(i), "work", (i,)).await.unwrap();
    }
    // Due at once and later: the scheduler promotes them around the failover.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for i in JOBS / 2..JOBS {
        queue.enqueue_at(now + (i % 4), &on(i), "work", (i,)).await.unwrap();
    }
    // Redis replicates asynchronously: "acknowledged" here means stored on
    // the replica too. Wait until it has everything the primary has.
    let mut p = primary.conn().await;
    let mut r = replica.conn().await;
    let offset = |info: String, field: &str| -> i64 {
        info.lines()
            .find_map(|l| l.strip_prefix(field).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(-1)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pi: String = redis::cmd("INFO").arg("replication").query_async(&mut p).await.unwrap();
        let ri: String = redis::cmd("INFO").arg("replication").query_async(&mut r).await.unwrap();
        if offset(pi, "master_repl_offset:") <= offset(ri, "slave_repl_offset:") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the replica did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut p).await.unwrap();
    let pid = offset(info, "process_id:");
    assert!(pid > 0, "no process id for {}", primary.addr);

    let (tasks, ran) = common::recording_work(Duration::from_millis(50));
    let worker = common::busy_worker(dyn_backend, tasks, queues.iter().map(String::as_str));
    let stop = CancellationToken::new();
    let (worker_task, scheduler_task) = common::run_with_scheduler(dyn_backend, worker, &stop);

    common::wait_for_runs(
        &ran,
        5,
        Duration::from_secs(20),
        Duration::from_millis(10),
        "before the failover",
    )
    .await;
    // The real thing: the primary's process dies. Whatever happens next,
    // the node is started again when the test ends.
    let _restore = Restore;
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(
        killed.success(),
        "could not kill the primary {} (pid {pid})",
        primary.addr
    );
    let killed_at = tokio::time::Instant::now();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while (ran.lock().unwrap().len() as i64) < JOBS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {JOBS} jobs ran after the failover",
            ran.lock().unwrap().len()
        );
        if worker_task.is_finished() {
            panic!("the worker died during the failover: {:?}", worker_task.await);
        }
        if scheduler_task.is_finished() {
            panic!("the scheduler died during the failover: {:?}", scheduler_task.await);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "{test}: all {JOBS} jobs ran, the last {:.1} s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
    // The replica is the slot's primary now.
    let now_primary = cluster_nodes()
        .await
        .into_iter()
        .find(|n| n.primary && !n.failed && n.owns(slot))
        .expect("a primary owns the slot after the failover");
    assert_eq!(now_primary.addr, replica.addr);

    stop.cancel();
    worker_task.await.unwrap().unwrap();
    scheduler_task.await.unwrap().unwrap();
    for q in queues {
        assert_eq!(queue.length(q).await.unwrap(), 0, "{q}");
    }
}

/// Leaves a healthy cluster when dropped: `ops/redis-cluster.sh start`
/// restarts the killed node, which rejoins as a replica of its former
/// replica.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/redis-cluster.sh");
        let restarted = std::process::Command::new("bash").arg(script).arg("start").status();
        if !restarted.as_ref().is_ok_and(|s| s.success()) && !std::thread::panicking() {
            panic!("ops/redis-cluster.sh start did not restore the cluster: {restarted:?}");
        }
    }
}

/// An ACL user and password in the URL apply to every node: a user that
/// exists only for this test (created on every node, then deleted) works
/// the whole cluster; a wrong password is refused at connect.
#[tokio::test]
async fn acl_user_and_password_apply_to_every_node() {
    let _turn = TURN.lock().await;
    let test = "acl_user_and_password_apply_to_every_node";
    let Some(probe) = backend(test).await else {
        return;
    };
    drop(probe);
    let user = format!("resq-acl-{}", std::process::id());
    let nodes = cluster_nodes().await;
    for node in nodes.iter().filter(|n| !n.failed) {
        let mut c = node.conn().await;
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(&user)
            .arg("on")
            .arg(">s3cret")
            .arg("~*")
            .arg("&*")
            .arg("+@all")
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let seeds = RedisConfig::from_url(&cluster_url())
        .unwrap()
        .cluster_nodes
        .iter()
        .map(|n| n.trim_start_matches("redis://").trim_end_matches('/').to_owned())
        .collect::<Vec<_>>()
        .join(",");
    let ns = unique_cluster_namespace();
    let good = format!(
        "redis+cluster://{user}:s3cret@{seeds}/?namespace={}",
        ns.replace('{', "%7B").replace('}', "%7D")
    );
    let outcome: resq_core::Result<u64> = async {
        let backend = resq_redis::connect(&good).await?;
        let queue = Queue::new(backend.clone() as Arc<dyn resq_core::Backend>);
        queue.enqueue("acl", "add", (1,)).await?;
        let length = queue.length("acl").await?;
        backend.delete_namespace().await?;
        Ok(length)
    }
    .await;
    let bad = good.replace(":s3cret@", ":wrong@");
    let refused = resq_redis::connect(&bad).await.map(|_| ());
    for node in nodes.iter().filter(|n| !n.failed) {
        let mut c = node.conn().await;
        let _: i64 = redis::cmd("ACL")
            .arg("DELUSER")
            .arg(&user)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    assert_eq!(outcome.unwrap(), 1);
    let e = refused.unwrap_err().to_string();
    assert!(e.contains("WRONGPASS") || e.to_lowercase().contains("auth"), "{e}");
    assert!(!e.contains("wrong@"), "the password shows in the error: {e}");
}

/// The TLS cluster (`TLS=1 RESQ_CLUSTER_BASE_PORT=7200
/// RESQ_CLUSTER_DIR=/tmp/resq-tls-cluster REPLICAS=0 ops/redis-cluster.sh
/// start`, which `.ci/run` starts), or `RESQ_REDIS_TLS_CLUSTER_URL`: a
/// `rediss+cluster://` URL trusting the cluster's own CA.
fn tls_cluster_url() -> String {
    std::env::var("RESQ_REDIS_TLS_CLUSTER_URL").unwrap_or_else(|_| {
        "rediss+cluster://127.0.0.1:7200,127.0.0.1:7201/?tls_ca_file=/tmp/resq-tls-cluster/tls/ca.crt".to_owned()
    })
}

/// Over TLS with a private CA (`tls_ca_file`), both modes work a job end to
/// end on every node (single-slot, and sharded over 3 tags); without the CA
/// the certificate is refused at connect, so the check is real.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_in_both_modes() {
    let test = "tls_with_a_private_ca_in_both_modes";
    let url = tls_cluster_url();
    let ca_file = RedisConfig::from_url(&url)
        .expect("a valid TLS cluster URL")
        .tls
        .ca_file
        .clone();
    if let Some(ca) = &ca_file {
        if !ca.exists() {
            let reason = format!(
                "no TLS cluster: {} is missing (see ops/redis-cluster.sh TLS=1)",
                ca.display()
            );
            assert!(!required(), "{reason}");
            eprintln!("SKIP {test}: {reason}");
            return;
        }
    }
    let ns = resq_redis::testing::unique_namespace();
    let single = format!("{url}&namespace=%7B{ns}%7D&connection_timeout_ms=2000");
    let sharded = format!("{url}&namespace={ns}-s&shards=3&connection_timeout_ms=2000");
    for mode in [&single, &sharded] {
        let backend = match resq_redis::connect_backend(mode).await {
            Ok(b) => b,
            Err(e) => {
                assert!(!required(), "the TLS cluster at {url} is unreachable: {e}");
                eprintln!("SKIP {test}: the TLS cluster at {url} is unreachable: {e}");
                return;
            }
        };
        let queue = Queue::new(Arc::clone(&backend));
        let queues = ["tls-a", "tls-b", "tls-c", "tls-d"];
        for (i, q) in queues.iter().enumerate() {
            queue.enqueue(q, "add", (i,)).await.unwrap();
        }
        let ran = Arc::new(Mutex::new(HashSet::new()));
        let mut tasks = Tasks::new();
        let seen = Arc::clone(&ran);
        tasks
            .register_fn("add", move |(i,): (i64,), _ctx: JobContext| {
                let seen = Arc::clone(&seen);
                async move {
                    seen.lock().expect("lock").insert(i);
                    Ok::<_, TaskError>(())
                }
            })
            .unwrap();
        let worker = Worker::new(
            Arc::clone(&backend),
            Arc::new(tasks),
            WorkerConfig {
                poll_interval: Duration::from_millis(100),
                ..WorkerConfig::for_queues(queues)
            },
        );
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let t = stop.clone();
            async move { worker.run_until(t).await }
        });
        common::wait_for_runs(
            &ran,
            queues.len(),
            Duration::from_secs(20),
            Duration::from_millis(20),
            &format!("in {mode}"),
        )
        .await;
        stop.cancel();
        task.await.unwrap().unwrap();
        assert_eq!(backend.stat("processed").await.unwrap(), queues.len() as i64, "{mode}");
        let admin_queues = backend.queues().await.unwrap();
        for q in queues {
            assert!(admin_queues.iter().any(|a| a == q), "{mode}: {admin_queues:?}");
            backend.delete_queue(q).await.unwrap();
        }
    }
    // The public web roots do not hold the cluster's CA: refused.
    let untrusted = single.replace("tls_ca_file=", "ignored_ca=");
    let refused = resq_redis::connect_backend(&untrusted).await;
    assert!(refused.is_err(), "a certificate from an unknown CA was accepted");
}
