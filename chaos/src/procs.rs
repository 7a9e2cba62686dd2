//! The orchestrator's handle on the processes under test: it starts the
//! harness binary again with a role, kills by PID (SIGKILL), restarts, and
//! notices any process that exited without being killed or that panicked.

use crate::servers::Res;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// One process under test (and its restarts).
struct Proc {
    label: String,
    args: Vec<String>,
    child: Option<Child>,
    generation: u32,
    /// Allowed to exit with success (a producer that finished).
    may_finish: bool,
}

/// The processes of one scenario. Dropping it kills them all.
pub struct Procs {
    exe: PathBuf,
    logs: PathBuf,
    procs: Vec<Proc>,
    /// Exits the orchestrator did not cause: `label: status`.
    pub unexpected_exits: Vec<String>,
    /// Processes started, restarts included.
    pub started: usize,
}

impl Procs {
    /// Processes whose output goes to `logs` (created).
    pub fn new(logs: &Path) -> Res<Procs> {
        std::fs::create_dir_all(logs).map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
        Ok(Procs {
            exe: crate::scenarios::child_exe()?,
            logs: logs.to_owned(),
            procs: Vec::new(),
            unexpected_exits: Vec::new(),
            started: 0,
        })
    }

    /// Starts `chaos <args…>`; `{gen}` in an argument becomes the restart
    /// count. Returns its index.
    pub fn spawn(&mut self, label: &str, args: &[String], may_finish: bool) -> Res<usize> {
        self.procs.push(Proc {
            label: label.to_owned(),
            args: args.to_vec(),
            child: None,
            generation: 0,
            may_finish,
        });
        let i = self.procs.len() - 1;
        self.start(i)?;
        Ok(i)
    }

    fn start(&mut self, i: usize) -> Res<()> {
        let p = &mut self.procs[i];
        let out = self.logs.join(format!("{}-{}.out", p.label, p.generation));
        let file = std::fs::File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        let err = file.try_clone().map_err(|e| format!("{}: {e}", out.display()))?;
        let args: Vec<String> = p
            .args
            .iter()
            .map(|a| a.replace("{gen}", &p.generation.to_string()))
            .collect();
        let child = Command::new(&self.exe)
            .args(&args)
            .env(
                "RUST_LOG",
                std::env::var("CHAOS_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", p.label))?;
        p.child = Some(child);
        self.started += 1;
        Ok(())
    }

    /// The current argument list of process `i` (with `{gen}` resolved).
    pub fn arg_value(&self, i: usize, flag: &str) -> Option<String> {
        let p = self.procs.get(i)?;
        let pos = p.args.iter().position(|a| a == flag)?;
        p.args
            .get(pos + 1)
            .map(|a| a.replace("{gen}", &p.generation.to_string()))
    }

    /// kill -9 process `i` and reap it. Returns its PID.
    pub fn kill(&mut self, i: usize) -> Option<u32> {
        self.poll_exits();
        let child = self.procs.get_mut(i)?.child.take()?;
        Some(kill_child(child))
    }

    /// Starts process `i` again (the next generation).
    pub fn restart(&mut self, i: usize) -> Res<()> {
        self.procs[i].generation += 1;
        self.start(i)
    }

    /// Records processes that exited on their own since the last call.
    pub fn poll_exits(&mut self) {
        for p in &mut self.procs {
            let Some(child) = p.child.as_mut() else { continue };
            if let Ok(Some(status)) = child.try_wait() {
                p.child = None;
                if !(p.may_finish && status.success()) {
                    self.unexpected_exits
                        .push(format!("{} (generation {}): {status}", p.label, p.generation));
                }
            }
        }
    }

    /// Whether process `i` still runs.
    pub fn running(&mut self, i: usize) -> bool {
        self.poll_exits();
        self.procs.get(i).is_some_and(|p| p.child.is_some())
    }

    /// Kills every process, then returns the panics found in their output.
    pub fn stop_all(&mut self) -> Vec<String> {
        self.poll_exits();
        for p in &mut self.procs {
            if let Some(c) = p.child.take() {
                kill_child(c);
            }
        }
        let mut panics = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.logs) {
            for e in entries.flatten() {
                let text = std::fs::read(e.path()).unwrap_or_default();
                let text = String::from_utf8_lossy(&text);
                for line in text.lines().filter(|l| l.contains("panicked")) {
                    panics.push(format!("{}: {line}", e.file_name().to_string_lossy()));
                }
            }
        }
        panics
    }
}

fn kill_child(mut child: Child) -> u32 {
    let pid = child.id();
    // Child::kill sends SIGKILL on Unix.
    let _ = child.kill();
    let _ = child.wait();
    pid
}

impl Drop for Procs {
    fn drop(&mut self) {
        for p in &mut self.procs {
            if let Some(c) = p.child.take() {
                kill_child(c);
            }
        }
    }
}
