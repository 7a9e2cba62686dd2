//! The ledger: what the processes under test did, kept outside the system
//! under test. Each process appends to a file of its own (`<role>-<pid>.log`
//! in the run's ledger directory), opened with `O_APPEND`; each record is
//! one line written with a single `write` call, so a kill -9 loses at most
//! the record being written, never one already written (the page cache
//! outlives the process). The orchestrator reads every file at the end.
//!
//! Records (times are Unix milliseconds):
//!
//! | line | meaning |
//! |---|---|
//! | `Q <id> <ms>` | a producer's enqueue of job `id` returned `Ok` |
//! | `S <id> <pid> <ms>` | a worker started job `id` |
//! | `E <id> <pid> <start> <end>` | a worker finished job `id` |
//! | `C <cron_at> <pid> <ms>` | the cron task ran for occurrence `cron_at` |
//! | `P <pid> <ms>` | the periodic task ran |
//! | `B <pid> <ms> <n>` | a scheduler's boot enqueued `n` periodic tasks |

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One process's append-only ledger file.
pub struct Writer {
    file: Mutex<File>,
}

impl Writer {
    /// Opens (creates) `<dir>/<role>-<pid>.log` for appending.
    pub fn open(dir: &Path, role: &str) -> std::io::Result<Writer> {
        let path = dir.join(format!("{role}-{}.log", std::process::id()));
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Writer { file: Mutex::new(file) })
    }

    /// Appends one record (a newline is added) in one write.
    pub fn record(&self, line: &str) {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        // A poisoned lock only means another thread panicked mid-write; the
        // file itself is still fine to append to.
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = file.write_all(&bytes) {
            tracing::error!(error = %e, "cannot write the ledger");
        }
    }
}

/// A start or finish of one job.
#[derive(Clone, Copy, Debug)]
pub struct Exec {
    /// The worker process.
    pub pid: u32,
    /// When (ms).
    pub at: i64,
}

/// Everything the ledger files of a run say.
#[derive(Default, Debug)]
pub struct Ledger {
    /// Acknowledged enqueues: id → time.
    pub enqueued: HashMap<u64, i64>,
    /// Starts per job id.
    pub starts: HashMap<u64, Vec<Exec>>,
    /// Finishes per job id.
    pub ends: HashMap<u64, Vec<Exec>>,
    /// Cron runs: occurrence ms → run times.
    pub cron: HashMap<i64, Vec<i64>>,
    /// Periodic runs (ms).
    pub periodic: Vec<i64>,
    /// Scheduler boots: (ms, periodic tasks enqueued).
    pub boots: Vec<(i64, i64)>,
}

impl Ledger {
    /// Reads every `*.log` file of `dir`. A torn last line (a process
    /// killed mid-write) is skipped.
    pub fn read(dir: &Path) -> std::io::Result<Ledger> {
        let mut ledger = Ledger::default();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("log") {
                continue;
            }
            let text = std::fs::read(&path)?;
            for line in String::from_utf8_lossy(&text).lines() {
                ledger.add(line);
            }
        }
        Ok(ledger)
    }

    fn add(&mut self, line: &str) {
        let f: Vec<&str> = line.split(' ').collect();
        let num = |i: usize| f.get(i).and_then(|s| s.parse::<i64>().ok());
        match (f.first().copied(), f.len()) {
            (Some("Q"), 3) => {
                if let (Some(id), Some(at)) = (num(1), num(2)) {
                    self.enqueued.entry(id as u64).or_insert(at);
                }
            }
            (Some("S"), 4) => {
                if let (Some(id), Some(pid), Some(at)) = (num(1), num(2), num(3)) {
                    self.starts
                        .entry(id as u64)
                        .or_default()
                        .push(Exec { pid: pid as u32, at });
                }
            }
            (Some("E"), 5) => {
                if let (Some(id), Some(pid), Some(at)) = (num(1), num(2), num(4)) {
                    self.ends
                        .entry(id as u64)
                        .or_default()
                        .push(Exec { pid: pid as u32, at });
                }
            }
            (Some("C"), 4) => {
                if let (Some(occ), Some(at)) = (num(1), num(3)) {
                    self.cron.entry(occ).or_default().push(at);
                }
            }
            (Some("B"), 4) => {
                if let (Some(at), Some(n)) = (num(2), num(3)) {
                    self.boots.push((at, n));
                }
            }
            (Some("P"), 3) => {
                if let Some(at) = num(2) {
                    self.periodic.push(at);
                }
            }
            _ => {}
        }
    }

    /// How many jobs have finished at least once.
    pub fn finished(&self) -> usize {
        self.ends.len()
    }
}
