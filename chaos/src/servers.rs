//! Private servers for the harness: a `redis-server` and a PostgreSQL
//! cluster, each on a free port in a temporary directory, started and
//! stopped by PID (never the shared ones on 6379 / 5432). Both are stopped
//! when their guard drops, also when a scenario fails.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A string error: the harness reports, it does not recover.
pub type Res<T> = Result<T, String>;

/// A port nobody listens on now.
pub fn free_port() -> Res<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Whether a program can be found on `PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// A private `redis-server`, killed (SIGKILL, by its PID) on drop.
pub struct RedisServer {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    extra: Vec<String>,
}

impl RedisServer {
    /// Why the Redis scenarios cannot run here, if they cannot.
    pub fn unavailable() -> Option<String> {
        (!on_path("redis-server")).then(|| "redis-server is not on PATH".to_owned())
    }

    /// Starts a server in `dir` (created) with an append-only file written
    /// with `appendfsync always`, plus `extra` directives (`--maxclients 10`).
    pub fn start(dir: &Path, extra: &[&str]) -> Res<RedisServer> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut server = RedisServer {
            child: None,
            dir: dir.to_owned(),
            port: free_port()?,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Res<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))
            .map_err(|e| format!("redis log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("redis log: {e}"))?;
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(&self.dir)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(30))
    }

    /// Waits until the server answers PING (loading the AOF answers
    /// `-LOADING`, which is not ready).
    fn wait_ready(&self, limit: Duration) -> Res<()> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 64];
                if s.write_all(b"PING\r\n").is_ok() {
                    if let Ok(n) = s.read(&mut buf) {
                        if buf[..n].starts_with(b"+PONG") {
                            return Ok(());
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("redis-server on port {} did not answer PING", self.port))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL the processes under test use.
    pub fn url(&self) -> String {
        format!(
            "redis://127.0.0.1:{}?namespace=chaos&response_timeout_ms=2000&connection_timeout_ms=1000",
            self.port
        )
    }

    /// kill -9, then start again on the same AOF and port. Returns when
    /// the server answers again.
    pub fn crash_and_restart(&mut self) -> Res<()> {
        self.kill();
        self.spawn()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Child::kill is SIGKILL on Unix.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private PostgreSQL cluster (initdb + pg_ctl, as the `postgres` user
/// when running as root), stopped on drop.
pub struct PgServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    run_as: Option<String>,
}

impl PgServer {
    /// Where initdb and pg_ctl live, or why the PostgreSQL scenarios cannot run.
    fn bindir() -> Res<PathBuf> {
        let has = |d: &Path| d.join("initdb").exists() && d.join("pg_ctl").exists();
        if let Some(d) = std::env::var_os("RESQ_PG_BINDIR").map(PathBuf::from) {
            return if has(&d) {
                Ok(d)
            } else {
                Err(format!("RESQ_PG_BINDIR {} has no initdb/pg_ctl", d.display()))
            };
        }
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|_| "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb)".to_owned())?
            .filter_map(|e| {
                let e = e.ok()?;
                let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                Some((v, e.path().join("bin")))
            })
            .filter(|(_, d)| has(d))
            .collect();
        found.sort();
        found
            .pop()
            .map(|(_, d)| d)
            .ok_or_else(|| "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb)".to_owned())
    }

    /// Why the PostgreSQL scenarios cannot run here, if they cannot.
    pub fn unavailable() -> Option<String> {
        Self::bindir().err()
    }

    /// initdb into `dir` and start on a free port, with `extra` server
    /// settings (`-c max_connections=…`).
    pub fn start(dir: &Path, extra: &[&str]) -> Res<PgServer> {
        let bin = Self::bindir()?;
        let root = run("id", &["-u"]).is_some_and(|u| u == "0");
        let run_as = if root {
            if run("id", &["-u", "postgres"]).is_none() {
                return Err("running as root without a postgres system user".into());
            }
            Some("postgres".to_owned())
        } else {
            None
        };
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let server = PgServer {
            bin,
            dir: dir.to_owned(),
            port: free_port()?,
            run_as,
        };
        if let Some(user) = &server.run_as {
            check(Command::new("chown").arg(user).arg(dir).output(), "chown")?;
        }
        let data = server.data();
        check(
            server.tool(
                "initdb",
                &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
            ),
            "initdb",
        )?;
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on",
            server.port,
            server.dir.display()
        );
        for e in extra {
            options.push(' ');
            options.push_str(e);
        }
        let log = server.log();
        check(
            server.tool(
                "pg_ctl",
                &["-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start"],
            ),
            "pg_ctl start",
        )?;
        Ok(server)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn log(&self) -> String {
        self.dir.join("server.log").display().to_string()
    }

    /// The URL the processes under test use (`pool` connections each).
    pub fn url(&self, pool: u32) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?schema=chaos&migrate=true&max_connections={pool}&acquire_timeout_ms=3000",
            self.port
        )
    }

    /// A URL for the harness's own raw SQL (no resq options).
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl restart -m immediate`: every backend process is killed at
    /// once (no checkpoint), and the server recovers from its WAL.
    pub fn restart_immediate(&self) -> Res<()> {
        let data = self.data();
        let log = self.log();
        check(
            self.tool(
                "pg_ctl",
                &["-D", &data, "-l", &log, "-m", "immediate", "-w", "-t", "60", "restart"],
            ),
            "pg_ctl restart",
        )
    }

    /// The postmaster's PID, from `postmaster.pid`.
    fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.dir.join("data").join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Runs a server binary. pg_ctl's output goes to a file: the server it
    /// starts inherits it, and a pipe it held would never close.
    fn tool(&self, tool: &str, args: &[&str]) -> std::io::Result<Output> {
        let path = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        cmd.args(args).current_dir(&self.dir).stdin(Stdio::null());
        if tool != "pg_ctl" {
            return cmd.output();
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("pg_ctl.out"))?;
        let status = cmd.stdout(out.try_clone()?).stderr(out).status()?;
        Ok(Output {
            status,
            stdout: Vec::new(),
            stderr: std::fs::read(self.dir.join("pg_ctl.out")).unwrap_or_default(),
        })
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.tool("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "-t", "20", "stop"]);
        // If pg_ctl could not stop it, the postmaster goes by its PID.
        if let Some(pid) = self.postmaster_pid() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn check(out: std::io::Result<Output>, what: &str) -> Res<()> {
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "{what} failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => Err(format!("{what} could not run: {e}")),
    }
}
