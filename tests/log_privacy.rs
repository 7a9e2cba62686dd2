//! The task server's event log leaves job arguments (and results and
//! payloads, which carry them) out by default, and shows them with
//! `log_args = true`. Logs are captured by a test-local subscriber.

use resq::config::TaskServerConfig;
use resq::{JobContext, TaskError, Tasks};
use serde_json::Value;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "jane.doe@example.com";

/// A `MakeWriter` appending into a shared buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

/// Runs a node that works one succeeding and one failing job, both with
/// the secret as argument (the first also returns it), and one delayed job
/// that the scheduler promotes; returns everything logged meanwhile.
async fn run_and_capture(log_args: bool) -> String {
    let buffer = Buffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(buffer.clone())
        .finish();
    // Current-thread test runtime: every task of the node logs through it.
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut tasks = Tasks::new();
    tasks
        .register_fn("greet", |(to,): (Value,), _ctx: JobContext| async move {
            Ok::<_, TaskError>(format!("sent to {to}"))
        })
        .unwrap();
    tasks
        .register_fn("explode", |_: (Value,), _ctx: JobContext| async move {
            Err::<(), _>(TaskError::new("mail server said no"))
        })
        .unwrap();
    let config = TaskServerConfig {
        scheduler: true,
        max_task_processors: 1,
        timeout_ms: 50,
        check_timeout_ms: 50,
        log_args,
        ..TaskServerConfig::default()
    };
    let server = resq::task_server(config, Arc::new(tasks)).await.unwrap();
    let queue = server.queue().clone();
    queue.enqueue("mail", "greet", (SECRET,)).await.unwrap();
    queue.enqueue("mail", "explode", (SECRET,)).await.unwrap();
    queue
        .enqueue_in(Duration::ZERO, "mail", "greet", (SECRET,))
        .await
        .unwrap();
    let watcher = queue.clone();
    server
        .run(async move {
            for _ in 0..200 {
                let stats = watcher.stats().await.unwrap();
                let done = stats.get("processed").copied().unwrap_or(0) + stats.get("failed").copied().unwrap_or(0);
                if done >= 3 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the jobs did not run");
        })
        .await
        .unwrap();
    let bytes = buffer.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn args_are_not_logged_by_default() {
    let logged = run_and_capture(false).await;
    for expected in [
        "success",
        "failure",
        "transferred_job",
        "class=greet",
        "class=explode",
        "queue=mail",
        "mail server said no",
    ] {
        assert!(
            logged.contains(expected),
            "{expected:?} missing from the log:\n{logged}"
        );
    }
    assert!(!logged.contains(SECRET), "an argument was logged:\n{logged}");
}

#[tokio::test]
async fn log_args_logs_them() {
    let logged = run_and_capture(true).await;
    assert!(
        logged.contains(SECRET),
        "log_args = true shows the arguments:\n{logged}"
    );
}

#[test]
fn log_args_is_read_from_toml() {
    assert!(!TaskServerConfig::default().log_args);
    assert!(TaskServerConfig::from_toml_str("log_args = true").unwrap().log_args);
}
