//! Connection exhaustion: a Redis server at its `maxclients` answers a new
//! connection with `-ERR max number of clients reached` and closes it. resq
//! reports that reason (transient), not the broken pipe the next write
//! meets. Each test runs a private `redis-server` on a free port with a
//! small `--maxclients` and stops it by its PID; the shared server is never
//! reconfigured.

mod common;

use common::required;
use resq_core::BackendErrorKind;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A private redis-server, killed (by its own PID) on drop.
pub struct Server {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl Server {
    /// Starts one with `maxclients`, or `None` (skipped, printed) when
    /// redis-server cannot run here.
    pub async fn start(test: &str, maxclients: u32) -> Option<Server> {
        let port = free_port();
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--maxclients", &maxclients.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                assert!(!required(), "{test}: cannot start redis-server: {e}");
                eprintln!("SKIP {test}: cannot start redis-server: {e}");
                return None;
            }
        };
        let server = Server { child, port };
        for _ in 0..100 {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                if s.write_all(b"PING\r\n").is_ok() {
                    let mut buf = [0u8; 16];
                    if let Ok(n) = s.read(&mut buf) {
                        if buf[..n].starts_with(b"+PONG") {
                            return Some(server);
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{test}: the private redis-server did not start on port {port}");
    }

    /// Opens `n` plain client connections and keeps them open.
    pub fn occupy(&self, n: usize) -> Vec<TcpStream> {
        (0..n)
            .map(|_| {
                let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                s.write_all(b"PING\r\n").unwrap();
                let mut buf = [0u8; 64];
                let n = s.read(&mut buf).unwrap();
                assert!(
                    buf[..n].starts_with(b"+PONG"),
                    "{:?}",
                    String::from_utf8_lossy(&buf[..n])
                );
                s
            })
            .collect()
    }

    /// A resq URL for this server.
    pub fn url(&self, params: &str) -> String {
        format!("redis://127.0.0.1:{}/0?namespace=exh&{params}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(16_380)
}

/// Connecting to a full server fails with the server's own reason, as a
/// transient error.
#[tokio::test]
async fn a_full_server_is_reported_as_full() {
    let Some(server) = Server::start("a_full_server_is_reported_as_full", 2).await else {
        return;
    };
    let _held = server.occupy(2);
    let e = resq_redis::connect(&server.url("connection_timeout_ms=2000"))
        .await
        .expect_err("the server has no client slot left");
    let text = e.to_string();
    assert_eq!(e.backend_kind(), Some(BackendErrorKind::Transient), "{text}");
    assert!(
        text.contains("max number of clients reached"),
        "the server's reason: {text}"
    );
    assert!(std::error::Error::source(&e).is_some(), "{text}");
}

/// A backend whose connection drops while the server is full reports, on
/// its calls, why it cannot reconnect.
#[tokio::test]
async fn a_connected_backend_reports_a_full_server() {
    use resq_core::backend::QueueStore;
    let Some(server) = Server::start("a_connected_backend_reports_a_full_server", 4).await else {
        return;
    };
    let backend = resq_redis::connect(&server.url("connection_timeout_ms=2000&response_timeout_ms=2000"))
        .await
        .expect("room to connect");
    backend.queue_len("q").await.unwrap();
    // Drop the backend's connections and take every slot in their place.
    let mut admin = server.occupy(1).pop().unwrap();
    let mut held = Vec::new();
    for _ in 0..200 {
        admin.write_all(b"CLIENT KILL TYPE normal SKIPME yes\r\n").unwrap();
        admin.write_all(b"CLIENT KILL TYPE pubsub\r\n").unwrap();
        let mut buf = [0u8; 64];
        let _ = admin.read(&mut buf);
        let _ = admin.read(&mut buf);
        // The killed clients' slots: take them before the backend does.
        while held.len() < 3 {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", server.port)) else {
                break;
            };
            s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            s.write_all(b"PING\r\n").unwrap();
            let mut buf = [0u8; 64];
            match s.read(&mut buf) {
                Ok(n) if buf[..n].starts_with(b"+PONG") => held.push(s),
                _ => break,
            }
        }
        if held.len() == 3 {
            break;
        }
        held.clear();
    }
    assert_eq!(held.len(), 3, "could not fill the server");
    let mut last = String::new();
    for _ in 0..5 {
        match backend.queue_len("q").await {
            Ok(_) => panic!("a call succeeded on a full server"),
            Err(e) => {
                assert_eq!(e.backend_kind(), Some(BackendErrorKind::Transient), "{e}");
                last = e.to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(last.contains("max number of clients reached"), "{last}");
}
