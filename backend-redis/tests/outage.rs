//! A Redis outage does not crash workers or schedulers, and loses no job
//! that was already stored: the test runs its own `redis-server` (with an
//! append-only file, so the data outlives the process), kills it while a
//! worker and a scheduler are busy, restarts it, and checks that every job
//! still runs.

mod common;

use common::required;
use resq_core::{Queue, WorkerEvent};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

struct Server {
    child: Child,
    dir: std::path::PathBuf,
}

impl Server {
    fn start(port: u16, dir: &std::path::Path) -> std::io::Result<Server> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Server {
            child,
            dir: dir.to_owned(),
        })
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_ready(port: u16) -> bool {
    for _ in 0..100 {
        if let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING").query_async::<String>(&mut c).await.is_ok() {
                    return true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(16_379)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_is_survived_without_losing_jobs() {
    let dir = std::env::temp_dir().join(format!("resq-outage-{}-{}", std::process::id(), free_port()));
    let _ = std::fs::create_dir_all(&dir);
    let port = free_port();
    let mut server = match Server::start(port, &dir) {
        Ok(s) => s,
        Err(e) => {
            let reason = format!("cannot start redis-server: {e}");
            assert!(!required(), "{reason}");
            eprintln!("SKIP outage_is_survived_without_losing_jobs: {reason}");
            return;
        }
    };
    assert!(wait_ready(port).await, "the test's redis-server did not start");
    let url = format!("redis://127.0.0.1:{port}?namespace=outage&response_timeout_ms=500&connection_timeout_ms=500");
    let backend: Arc<dyn resq_core::Backend> = resq_redis::connect(&url).await.expect("connect");
    let queue = Queue::new(Arc::clone(&backend));

    const JOBS: i64 = 40;
    for i in 0..JOBS / 2 {
        queue.enqueue("q", "work", (i,)).await.unwrap();
    }
    // The other half is delayed and due at once: the scheduler must promote it.
    for i in JOBS / 2..JOBS {
        queue.enqueue_at(0, "q", "work", (i,)).await.unwrap();
    }

    let (tasks, ran) = common::recording_work(Duration::from_millis(40));
    let worker = common::busy_worker(&backend, tasks, ["q"]);
    let mut events = worker.subscribe();
    let stop = CancellationToken::new();
    let (worker_task, scheduler_task) = common::run_with_scheduler(&backend, worker, &stop);

    // Let some work happen, then take Redis away for a while.
    common::wait_for_runs(
        &ran,
        5,
        Duration::from_secs(20),
        Duration::from_millis(10),
        "before the outage",
    )
    .await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!worker_task.is_finished(), "the worker died during the outage");
    assert!(!scheduler_task.is_finished(), "the scheduler died during the outage");
    let server_again = Server::start(port, &server.dir).expect("restart redis-server");
    assert!(wait_ready(port).await, "redis-server did not come back");

    common::wait_for_runs(
        &ran,
        JOBS as usize,
        Duration::from_secs(30),
        Duration::from_millis(20),
        "after the outage",
    )
    .await;
    let mut saw_error = false;
    loop {
        match events.try_recv() {
            Ok(ev) => saw_error |= matches!(ev, WorkerEvent::Error { .. }),
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => continue,
            Err(_) => break,
        }
    }
    assert!(saw_error, "the worker reported the outage as error events");
    stop.cancel();
    worker_task.await.unwrap().unwrap();
    scheduler_task.await.unwrap().unwrap();
    assert_eq!(queue.length("q").await.unwrap(), 0);
    assert!(queue.timestamps().await.unwrap().is_empty());
    drop(server_again);
    let _ = std::fs::remove_dir_all(&dir);
}
