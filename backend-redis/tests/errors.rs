//! Redis errors are classified: what may pass by itself (a refused
//! connection, a full connection table, a loading or busy server) is
//! transient; what needs someone to fix the setup (a wrong password, a
//! missing ACL permission, a key of the wrong type) is permanent. Real
//! errors from real servers: the shared test server, a private
//! `redis-server` with `maxclients 1`, and a stub that answers every command
//! with one fixed error line.

mod common;

use common::required;
use resq_core::backend::QueueStore;
use resq_core::{BackendErrorKind, Error};
use resq_redis::testing::{server_url, unique_namespace};
use resq_redis::{RedisBackend, RedisConfig};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn kind(e: &Error) -> Option<BackendErrorKind> {
    e.backend_kind()
}

async fn connect(url: &str) -> resq_core::Result<RedisBackend> {
    let mut config = RedisConfig::from_url(url)?;
    config.namespace = unique_namespace();
    config.connection_timeout = Duration::from_secs(2);
    config.response_timeout = Duration::from_secs(2);
    RedisBackend::connect(config).await
}

#[tokio::test]
async fn a_key_of_the_wrong_type_is_permanent() {
    let Some(backend) = common::fresh("a_key_of_the_wrong_type_is_permanent").await else {
        return;
    };
    // Another client wrote a string where the queue's list belongs.
    let client = redis::Client::open(server_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}:queue:q", backend.config().namespace);
    redis::cmd("SET")
        .arg(&key)
        .arg("not a list")
        .exec_async(&mut conn)
        .await
        .unwrap();
    let e = backend.push("q", "job").await.expect_err("WRONGTYPE");
    assert_eq!(kind(&e), Some(BackendErrorKind::Permanent), "{e}");
    assert!(e.to_string().contains("WRONGTYPE"), "the server's words are kept: {e}");
    assert!(std::error::Error::source(&e).is_some(), "the redis error is the source");
    let e = backend.queue_len("q").await.expect_err("WRONGTYPE");
    assert_eq!(kind(&e), Some(BackendErrorKind::Permanent), "{e}");
    redis::cmd("DEL").arg(&key).exec_async(&mut conn).await.unwrap();
}

/// Deletes the ACL user when dropped, whatever the test's outcome.
struct AclUser {
    name: String,
}

impl Drop for AclUser {
    fn drop(&mut self) {
        if let Ok(client) = redis::Client::open(server_url()) {
            if let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) {
                let _ = redis::cmd("ACL").arg("DELUSER").arg(&self.name).exec(&mut conn);
            }
        }
    }
}

#[tokio::test]
async fn missing_permissions_and_wrong_passwords_are_permanent() {
    if common::fresh("missing_permissions_and_wrong_passwords_are_permanent")
        .await
        .is_none()
    {
        return;
    }
    // A user of our own (unique name, deleted afterwards) that may do
    // everything but LLEN.
    let name = format!("resq-test-{}", std::process::id());
    let user = AclUser { name: name.clone() };
    let client = redis::Client::open(server_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user.name)
        .arg("reset")
        .arg("on")
        .arg(">right-password")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg("-llen")
        .exec_async(&mut conn)
        .await
        .unwrap();
    let mut url = url::Url::parse(&server_url()).unwrap();
    url.set_username(&name).unwrap();
    url.set_password(Some("right-password")).unwrap();
    let backend = connect(url.as_str()).await.unwrap();
    let e = backend.queue_len("q").await.expect_err("NOPERM");
    assert_eq!(kind(&e), Some(BackendErrorKind::Permanent), "{e}");
    assert!(
        e.to_string().contains("NOPERM") || e.to_string().contains("permission"),
        "{e}"
    );

    url.set_password(Some("wrong-password")).unwrap();
    let e = connect(url.as_str()).await.expect_err("WRONGPASS");
    assert_eq!(kind(&e), Some(BackendErrorKind::Permanent), "{e}");
    drop(user);
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    // Port 1 on the loopback: nothing listens there.
    let e = connect("redis://127.0.0.1:1").await.expect_err("nothing listens");
    assert_eq!(kind(&e), Some(BackendErrorKind::Transient), "{e}");
}

/// A private server with room for one client.
struct Private {
    child: Child,
}

impl Drop for Private {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test]
async fn a_full_connection_table_is_transient() {
    let port = free_port();
    let child = match Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--maxclients", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            assert!(!required(), "redis-server cannot start: {e}");
            eprintln!("SKIP a_full_connection_table_is_transient: redis-server cannot start: {e}");
            return;
        }
    };
    let _server = Private { child };
    let url = format!("redis://127.0.0.1:{port}");
    // The one client the server takes.
    let mut first = None;
    for _ in 0..100 {
        if let Ok(b) = connect(&url).await {
            if b.queue_len("q").await.is_ok() {
                first = Some(b);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = first.expect("the private server is up");
    // The server says "max number of clients reached" and closes; the
    // client may see that reply or only the closed connection.
    let e = connect(&url).await.expect_err("no room for a second client");
    let text = e.to_string();
    assert!(
        text.contains("max number of clients reached") || text.contains("reset") || text.contains("closed"),
        "{e}"
    );
    assert_eq!(kind(&e), Some(BackendErrorKind::Transient), "{e}");
    drop(first);
}

/// Answers every read on every connection with `line`.
async fn stub(line: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    // One error line per command: each starts a line with `*<count>`.
                    let data = &buf[..n];
                    let commands = (0..n)
                        .filter(|&i| {
                            data[i] == b'*'
                                && (i == 0 || data[i - 1] == b'\n')
                                && data.get(i + 1).is_some_and(u8::is_ascii_digit)
                        })
                        .count();
                    for _ in 0..commands.max(1) {
                        if socket.write_all(line.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn loading_and_busy_servers_are_transient_and_other_errors_permanent() {
    for (line, expected) in [
        (
            "-LOADING Redis is loading the dataset in memory\r\n",
            BackendErrorKind::Transient,
        ),
        ("-BUSY Redis is busy running a script.\r\n", BackendErrorKind::Transient),
        (
            "-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
            BackendErrorKind::Transient,
        ),
        ("-ERR max number of clients reached\r\n", BackendErrorKind::Transient),
        ("-NOAUTH Authentication required.\r\n", BackendErrorKind::Permanent),
        (
            "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
            BackendErrorKind::Permanent,
        ),
        (
            "-ERR Error running script (call to f_x): bad\r\n",
            BackendErrorKind::Permanent,
        ),
    ] {
        let port = stub(line).await;
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        let err = match client.get_multiplexed_async_connection().await {
            Err(e) => e,
            Ok(mut conn) => redis::cmd("LLEN")
                .arg("q")
                .query_async::<i64>(&mut conn)
                .await
                .expect_err("the stub answers with an error"),
        };
        assert!(
            !err.is_timeout() && !err.is_io_error(),
            "{line:?}: the stub's error, not {err}"
        );
        assert_eq!(resq_redis::classify(&err), expected, "{line:?}: {err}");
    }
}
