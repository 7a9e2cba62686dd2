//! Start-up under connection exhaustion: `resq::connect_until` (and
//! `task_server_until`) retry a server that refuses new connections, with
//! backoff, until it answers or the process is told to stop; a stop during
//! start-up ends it at once. Runs a private `redis-server` on a free port
//! with `--maxclients 2`, stopped by its own PID; the shared server is
//! never reconfigured.
#![cfg(feature = "redis")]

use resq::config::TaskServerConfig;
use resq::{CancellationToken, Tasks};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn required() -> bool {
    std::env::var("RESQ_REQUIRE_BACKENDS").is_ok_and(|v| v == "1")
}

/// A private redis-server, killed by its PID on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ping(port: u16) -> Option<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"PING\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    buf[..n].starts_with(b"+PONG").then_some(s)
}

async fn start(test: &str, maxclients: u32) -> Option<Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(16_381);
    let child = match Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "no", "--maxclients", &maxclients.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            assert!(!required(), "{test}: cannot start redis-server: {e}");
            eprintln!("SKIP {test}: cannot start redis-server: {e}");
            return None;
        }
    };
    let server = Server { child, port };
    for _ in 0..100 {
        if ping(port).is_some() {
            return Some(server);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{test}: the private redis-server did not start");
}

#[tokio::test]
async fn start_up_waits_for_a_full_server_and_stops_on_shutdown() {
    let Some(server) = start("start_up_waits_for_a_full_server_and_stops_on_shutdown", 2).await else {
        return;
    };
    let url = format!(
        "redis://127.0.0.1:{}/0?namespace=retry&connection_timeout_ms=2000",
        server.port
    );
    // Full: both client slots taken.
    let held: Vec<TcpStream> = (0..2).map(|_| ping(server.port).expect("a free slot")).collect();
    assert!(ping(server.port).is_none(), "the server is full");

    // A plain connect fails at once, saying why.
    let e = match resq::connect(&url).await {
        Err(e) => e,
        Ok(_) => panic!("connected to a full server"),
    };
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("max number of clients reached"), "{e}");

    // Retrying: stopped while the server is still full, it returns None promptly.
    let stop = CancellationToken::new();
    let retrying = tokio::spawn({
        let (url, stop) = (url.clone(), stop.clone());
        async move { resq::connect_until(&url, &stop).await.map(|b| b.is_some()) }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!retrying.is_finished(), "connect_until gave up on a transient error");
    let t = Instant::now();
    stop.cancel();
    let got = tokio::time::timeout(Duration::from_secs(10), retrying)
        .await
        .expect("connect_until stops on shutdown")
        .unwrap();
    assert!(matches!(got, Ok(false)), "{got:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // Retrying: once slots free up, the task server starts.
    let stop = CancellationToken::new();
    let config = TaskServerConfig {
        backend: url.clone(),
        scheduler: false,
        max_task_processors: 0,
        ..TaskServerConfig::default()
    };
    let starting = tokio::spawn({
        let stop = stop.clone();
        async move { resq::task_server_until(config, Arc::new(Tasks::new()), &stop).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !starting.is_finished(),
        "task_server_until gave up on a transient error"
    );
    drop(held);
    let server_started = tokio::time::timeout(Duration::from_secs(30), starting)
        .await
        .expect("it connects once the server has room")
        .unwrap();
    assert!(matches!(server_started, Ok(Some(_))), "{:?}", server_started.err());
}
