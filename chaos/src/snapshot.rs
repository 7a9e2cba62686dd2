//! Scenario 5: corrupt memory snapshots. A good snapshot is written, then
//! damaged in several ways; for each, a separate `chaos probe` process
//! opens it (so an abort or an out-of-memory kill is seen as such, not as
//! the orchestrator's death), and the harness checks that `connect`
//! returned a clear error and that the file is byte for byte what it was.

use crate::scenarios::Outcome;
use crate::servers::Res;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `chaos probe <url>`: connect, enqueue one job, close (which saves).
/// Prints `OK` or `ERR <message>`; exit code 0 for either.
pub async fn probe(url: &str) -> i32 {
    match resq::connect(url).await {
        Ok(backend) => {
            let queue = resq::Queue::new(std::sync::Arc::clone(&backend));
            let _ = queue.enqueue("probe", "probe", (1,)).await;
            let saved = backend.close().await;
            println!("OK saved={}", saved.is_ok());
        }
        Err(e) => println!("ERR {e}"),
    }
    0
}

fn url(path: &Path) -> String {
    format!("memory://{}?save_interval_ms=0", path.display())
}

/// Runs scenario 5 in `dir`.
pub async fn run(out: &mut Outcome, dir: &Path) -> Res<()> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let good = dir.join("good.snap");
    {
        let backend = resq::connect(&url(&good)).await.map_err(|e| format!("connect: {e}"))?;
        let queue = resq::Queue::new(std::sync::Arc::clone(&backend));
        for i in 0..50 {
            queue
                .enqueue("q", "job", (i, "some payload text"))
                .await
                .map_err(|e| e.to_string())?;
        }
        backend.close().await.map_err(|e| format!("save: {e}"))?;
    }
    let bytes = std::fs::read(&good).map_err(|e| format!("read the good snapshot: {e}"))?;
    if bytes.len() < 16 {
        return Err(format!("the good snapshot is only {} bytes", bytes.len()));
    }
    out.fig("good snapshot", format!("{} bytes, 50 jobs", bytes.len()));
    let n = bytes.len();
    let mut flipped = bytes.clone();
    for b in &mut flipped[n / 3..2 * n / 3] {
        *b ^= 0xA5;
    }
    let cases: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("truncated to half", Some(bytes[..n / 2].to_vec())),
        ("truncated to 3 bytes", Some(bytes[..3].to_vec())),
        ("middle third bytes flipped", Some(flipped)),
        ("all zeros", Some(vec![0; n])),
        ("all 0xFF (huge lengths)", Some(vec![0xFF; n])),
        ("unreadable (mode 000)", Some(bytes.clone())),
        ("a directory", None),
    ];
    let exe = crate::scenarios::child_exe()?;
    for (i, (name, content)) in cases.into_iter().enumerate() {
        let path = dir.join(format!("case{i}.snap"));
        match &content {
            Some(c) => std::fs::write(&path, c).map_err(|e| e.to_string())?,
            None => std::fs::create_dir_all(&path).map_err(|e| e.to_string())?,
        }
        if name.starts_with("unreadable") {
            let _ = Command::new("chmod").arg("000").arg(&path).status();
        }
        let child = probe_run::run(&exe, &url(&path), Duration::from_secs(60)).await;
        let _ = Command::new("chmod").arg("600").arg(&path).status();
        let after = content.as_ref().map(|_| std::fs::read(&path).unwrap_or_default());
        let unchanged = match (&content, &after) {
            (Some(c), Some(a)) => c == a,
            _ => path.is_dir(),
        };
        let (pass, detail) = match &child {
            Ok((0, text)) if text.starts_with("ERR ") => (
                unchanged,
                format!(
                    "error: {}; file {}",
                    text.trim_start_matches("ERR ").trim(),
                    if unchanged { "unchanged" } else { "CHANGED" }
                ),
            ),
            Ok((0, text)) if name.starts_with("unreadable") && unchanged_root_read(text) => (
                true,
                "read anyway: running as root, mode 000 does not stop reads; the content was valid".to_owned(),
            ),
            Ok((code, text)) => (
                false,
                format!(
                    "no error (exit {code}): {}; file {}",
                    text.trim(),
                    if unchanged { "unchanged" } else { "OVERWRITTEN" }
                ),
            ),
            Err(e) => (false, e.clone()),
        };
        out.check(&format!("{name}: clear error, file kept"), pass, detail);
    }
    Ok(())
}

/// A probe of a valid file read as root opens and saves normally.
fn unchanged_root_read(text: &str) -> bool {
    text.starts_with("OK")
}

mod probe_run {
    //! Running the probe process with a time limit.
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    /// Runs `exe probe url`; returns (exit code, stdout), or why it failed
    /// (killed by a signal, timed out).
    pub async fn run(exe: &Path, url: &str, limit: Duration) -> Result<(i32, String), String> {
        let mut child = Command::new(exe)
            .args(["probe", url])
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the probe: {e}"))?;
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if start.elapsed() > limit => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("the probe hung for {} s", limit.as_secs()));
                }
                Ok(None) => ::tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => return Err(format!("wait: {e}")),
            }
        }
        let out = child.wait_with_output().map_err(|e| format!("wait: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        match out.status.code() {
            Some(code) => Ok((code, stdout)),
            None => Err(format!(
                "the probe process died ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
            )),
        }
    }
}
