//! Scenario 4: bad input from foreign clients. On Redis raw bytes are
//! written over RESP, as another Resque client or a careless script could;
//! on PostgreSQL the same kinds of bad input are written with plain SQL into
//! resq's tables in the schema the processes use: undecodable and
//! malformed jobs in the queue, garbage in the delayed schedule, the worker
//! registry and the failed list. Good jobs run before and after. The
//! harness checks that no process exits or panics, that every good job
//! runs, that each bad job reaches the failed list with a reason, and that
//! every inspection call still answers. Non-UTF-8 bytes (4b) are Redis's
//! alone: a PostgreSQL `text` column cannot hold them.

use crate::ledger::Ledger;
use crate::procs::Procs;
use crate::scenarios::{Kind, Outcome, Size, Timing};
use crate::servers::{PgServer, RedisServer, Res};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// A RESP reply.
#[derive(Debug)]
enum Reply {
    Status,
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

/// One raw connection to the private server.
struct Raw {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Raw {
    fn connect(port: u16) -> Res<Raw> {
        let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("raw connect: {e}"))?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let writer = s.try_clone().map_err(|e| e.to_string())?;
        Ok(Raw {
            reader: BufReader::new(s),
            writer,
        })
    }

    /// Sends one command (binary-safe) and reads its reply.
    fn cmd(&mut self, args: &[&[u8]]) -> Res<Reply> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out).map_err(|e| format!("raw write: {e}"))?;
        self.read()
    }

    fn line(&mut self) -> Res<String> {
        let mut buf = Vec::new();
        self.reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("raw read: {e}"))?;
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    fn read(&mut self) -> Res<Reply> {
        let line = self.line()?;
        let (kind, rest) = line.split_at(line.len().min(1));
        let num = || rest.parse::<i64>().map_err(|_| format!("bad RESP line {line:?}"));
        Ok(match kind {
            "+" => Reply::Status,
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Int(num()?),
            "$" => {
                let n = num()?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut data = vec![0; n as usize + 2];
                    self.reader
                        .read_exact(&mut data)
                        .map_err(|e| format!("raw read: {e}"))?;
                    data.truncate(n as usize);
                    Reply::Bulk(Some(data))
                }
            }
            "*" => {
                let n = num()?;
                let mut items = Vec::new();
                for _ in 0..n.max(0) {
                    items.push(self.read()?);
                }
                Reply::Array(items)
            }
            _ => return Err(format!("bad RESP line {line:?}")),
        })
    }

    /// A command that must not fail.
    fn ok(&mut self, args: &[&[u8]]) -> Res<Reply> {
        match self.cmd(args)? {
            Reply::Error(e) => Err(format!(
                "{} failed: {e}",
                String::from_utf8_lossy(args.first().copied().unwrap_or(b""))
            )),
            r => Ok(r),
        }
    }
}

/// The bad queue items: (marker, raw bytes). Every one carries its marker
/// so that its failed entry can be found.
fn bad_jobs() -> Vec<(&'static str, Vec<u8>)> {
    let mut nested = b"{\"class\":\"work\",\"queue\":\"chaos\",\"marker\":\"bad-nesting\",\"args\":[".to_vec();
    nested.extend(std::iter::repeat_n(b'[', 100_000));
    nested.extend(std::iter::repeat_n(b']', 100_000));
    nested.extend_from_slice(b"]}");
    let mut big = b"{\"class\":\"work\",\"queue\":\"chaos\",\"marker\":\"bad-20mb\",\"args\":[1,2,\"".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20 * 1024 * 1024));
    big.extend_from_slice(b"\"]}");
    vec![
        ("bad-invalid-json", b"{not json bad-invalid-json".to_vec()),
        ("bad-array", b"[1,2,\"bad-array\"]".to_vec()),
        ("bad-string", b"\"bad-string\"".to_vec()),
        (
            "bad-no-class",
            b"{\"queue\":\"chaos\",\"marker\":\"bad-no-class\",\"args\":[1,2]}".to_vec(),
        ),
        (
            "bad-arg-types",
            b"{\"class\":\"work\",\"queue\":\"chaos\",\"args\":[\"bad-arg-types\",{\"y\":1}]}".to_vec(),
        ),
        (
            "bad-unknown-class",
            b"{\"class\":\"NoSuchTask\",\"queue\":\"chaos\",\"args\":[\"bad-unknown-class\"]}".to_vec(),
        ),
        ("bad-20mb", big),
        ("bad-nesting", nested),
        (
            "bad-non-utf8",
            b"{\"class\":\"work\",\"queue\":\"chaos\",\"args\":[\"bad-non-utf8 \xff\xfe\xfd\",1]}".to_vec(),
        ),
    ]
}

/// The private server of one run, with the harness's own raw connection.
enum Store {
    /// The server (kept to be stopped on drop) and a raw RESP connection.
    Redis { _server: RedisServer, raw: Raw },
    /// The server (kept to be stopped on drop) and a pool for raw SQL.
    Postgres { _server: PgServer, pool: sqlx::PgPool },
}

/// The schema the processes under test use (`schema=chaos` in their URL).
const PG_SCHEMA: &str = "chaos";

impl Store {
    /// Starts the server in `dir`; returns it and the URL of the processes.
    async fn start(kind: Kind, dir: &Path) -> Res<(Store, String)> {
        match kind {
            Kind::Redis => {
                let server = RedisServer::start(&dir.join("redis"), &[])?;
                let raw = Raw::connect(server.port())?;
                let url = server.url();
                Ok((Store::Redis { _server: server, raw }, url))
            }
            Kind::Postgres => {
                let server = PgServer::start(&dir.join("pg"), &[])?;
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&server.admin_url())
                    .await
                    .map_err(|e| format!("raw connect: {e}"))?;
                let url = server.url(4);
                Ok((Store::Postgres { _server: server, pool }, url))
            }
            Kind::Memory => Err("scenario 4 needs a server".into()),
        }
    }

    /// Writes the bad input; returns the text of the `raw writes` figure.
    async fn write_bad(&mut self, bad: &[(&str, Vec<u8>)], non_utf8: bool) -> Res<String> {
        match self {
            Store::Redis { raw, .. } => redis_writes(raw, bad, non_utf8),
            Store::Postgres { pool, .. } => pg_writes(pool, bad).await,
        }
    }

    /// The failed list's entries, oldest first.
    async fn failed(&mut self) -> Res<Vec<Vec<u8>>> {
        match self {
            Store::Redis { raw, .. } => match raw.cmd(&[b"LRANGE", b"chaos:failed", b"0", b"-1"])? {
                Reply::Array(items) => Ok(items
                    .into_iter()
                    .filter_map(|i| match i {
                        Reply::Bulk(Some(b)) => Some(b),
                        _ => None,
                    })
                    .collect()),
                other => Err(format!("LRANGE failed: {other:?}")),
            },
            Store::Postgres { pool, .. } => {
                let rows: Vec<(String,)> = sqlx::query_as(&format!("SELECT entry FROM {PG_SCHEMA}.failed ORDER BY id"))
                    .fetch_all(&*pool)
                    .await
                    .map_err(|e| format!("reading the failed table: {e}"))?;
                Ok(rows.into_iter().map(|(e,)| e.into_bytes()).collect())
            }
        }
    }

    /// The jobs left in queue `chaos` (-1 if the count did not answer).
    async fn left(&mut self) -> i64 {
        match self {
            Store::Redis { raw, .. } => match raw.cmd(&[b"LLEN", b"chaos:queue:chaos"]) {
                Ok(Reply::Int(n)) => n,
                _ => -1,
            },
            Store::Postgres { pool, .. } => {
                sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {PG_SCHEMA}.jobs WHERE queue = 'chaos'"))
                    .fetch_one(&*pool)
                    .await
                    .unwrap_or(-1)
            }
        }
    }
}

/// The raw RESP writes.
fn redis_writes(raw: &mut Raw, bad: &[(&str, Vec<u8>)], non_utf8: bool) -> Res<String> {
    for (_, bytes) in bad {
        raw.ok(&[b"RPUSH", b"chaos:queue:chaos", bytes])?;
    }
    raw.ok(&[b"SADD", b"chaos:queues", b"chaos"])?;
    if non_utf8 {
        // The same places, with bytes that are not UTF-8.
        raw.ok(&[b"ZADD", b"chaos:delayed_queue_schedule", b"3", b"3"])?;
        raw.ok(&[b"RPUSH", b"chaos:delayed:3", b"\xff\xfe bad-delayed-bytes"])?;
        raw.ok(&[b"SADD", b"chaos:workers", b"\xff\xfe:2:chaos"])?;
        raw.ok(&[b"RPUSH", b"chaos:failed", b"\xff\xfe"])?;
        return Ok("1 job, 1 delayed item, 1 worker name, 1 failed entry, each with bytes 0xFF 0xFE".to_owned());
    }
    // Delayed schedule: a due bucket holding garbage, a non-numeric member.
    raw.ok(&[b"ZADD", b"chaos:delayed_queue_schedule", b"1", b"1"])?;
    raw.ok(&[b"RPUSH", b"chaos:delayed:1", b"{garbage bad-delayed"])?;
    raw.ok(&[b"ZADD", b"chaos:delayed_queue_schedule", b"2", b"notanumber"])?;
    // Worker registry: a name without the `host:pid:queues` shape, a
    // worker whose working-on record, start time and ping are garbage.
    raw.ok(&[b"SADD", b"chaos:workers", b"garbage"])?;
    raw.ok(&[b"SADD", b"chaos:workers", b"ghost:1:chaos"])?;
    raw.ok(&[b"SET", b"chaos:worker:ghost:1:chaos", b"not json"])?;
    raw.ok(&[b"SET", b"chaos:worker:ghost:1:chaos:started", b"yesterday"])?;
    raw.ok(&[b"SET", b"chaos:worker:ping:ghost:1", b"{\"time\":\"soon\"}"])?;
    // Failed list: entries no client wrote.
    raw.ok(&[b"RPUSH", b"chaos:failed", b"garbage"])?;
    raw.ok(&[b"RPUSH", b"chaos:failed", b"{}"])?;
    Ok(format!(
        "{} bad jobs ({}); a garbage delayed item and a non-numeric schedule member; 4 registry entries (bad name, non-JSON working-on, start time and ping); 2 failed-list items",
        bad.len(),
        short_names(bad)
    ))
}

/// The markers of `bad` without their `bad-` prefix, for a figure.
fn short_names(bad: &[(&str, Vec<u8>)]) -> String {
    bad.iter()
        .map(|b| b.0.trim_start_matches("bad-"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The raw SQL writes into resq's tables, in the processes' schema.
async fn pg_writes(pool: &sqlx::PgPool, bad: &[(&str, Vec<u8>)]) -> Res<String> {
    let s = PG_SCHEMA;
    // The processes create the tables (`migrate=true`); wait for them.
    let start = Instant::now();
    loop {
        let ready: Option<bool> = sqlx::query_scalar(&format!("SELECT to_regclass('{s}.jobs') IS NOT NULL"))
            .fetch_one(pool)
            .await
            .map_err(|e| format!("raw SQL: {e}"))?;
        if ready == Some(true) {
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!("the processes did not create {s}.jobs in 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exec = |sql: String, binds: Vec<String>| async move {
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = q.bind(b);
        }
        q.execute(pool).await.map_err(|e| format!("{sql}: {e}"))?;
        Ok::<(), String>(())
    };
    for (marker, bytes) in bad {
        // Every marker here is UTF-8 (4b, the non-UTF-8 one, is Redis's).
        let text = String::from_utf8(bytes.clone()).map_err(|_| format!("{marker} is not UTF-8"))?;
        exec(
            format!("INSERT INTO {s}.jobs (queue, payload) VALUES ('chaos', $1)"),
            vec![text],
        )
        .await?;
    }
    exec(
        format!("INSERT INTO {s}.queues (name) VALUES ('chaos') ON CONFLICT DO NOTHING"),
        vec![],
    )
    .await?;
    // Delayed schedule: a due bucket holding garbage, with the digest the
    // backend computes (SHA-256 of the payload's UTF-8 bytes), and a job in
    // the earliest bucket a bigint holds.
    let digest = "sha256(convert_to($1::text, 'UTF8'))";
    exec(
        format!("INSERT INTO {s}.delayed (ts, payload, digest) VALUES (1, $1, {digest})"),
        vec!["{garbage bad-delayed".into()],
    )
    .await?;
    exec(
        format!(
            "INSERT INTO {s}.delayed (ts, payload, digest) VALUES ({}, $1, {digest})",
            i64::MIN
        ),
        vec!["{\"class\":\"work\",\"queue\":\"chaos\",\"args\":[\"bad-delayed-min\",1]}".into()],
    )
    .await?;
    // Worker registry and pings: a name without the `host:pid` shape with
    // a non-JSON queues field, the earliest start time and the latest ping;
    // a ghost with the earliest ping and a non-JSON working-on row.
    exec(
        format!(
            "INSERT INTO {s}.workers (name, queues, started_ms) VALUES ('garbage', '{{not json', {})",
            i64::MIN
        ),
        vec![],
    )
    .await?;
    exec(
        format!(
            "INSERT INTO {s}.pings (name, queues, ping_ms) VALUES ('garbage', '{{not json', {})",
            i64::MAX
        ),
        vec![],
    )
    .await?;
    exec(
        format!("INSERT INTO {s}.workers (name, queues, started_ms) VALUES ('ghost:1', 'chaos', -1)"),
        vec![],
    )
    .await?;
    exec(
        format!(
            "INSERT INTO {s}.pings (name, queues, ping_ms) VALUES ('ghost:1', 'chaos', {})",
            i64::MIN
        ),
        vec![],
    )
    .await?;
    exec(
        format!(
            "INSERT INTO {s}.working (worker_name, worker_queues, worker, queue, run_at, payload) \
             VALUES ('ghost:1', 'chaos', 'ghost:1:chaos', 'chaos', 'yesterday', 'not json bad-working')"
        ),
        vec![],
    )
    .await?;
    // Failed list: entries no client wrote.
    for entry in ["garbage", "{}"] {
        exec(
            format!("INSERT INTO {s}.failed (entry) VALUES ($1)"),
            vec![entry.into()],
        )
        .await?;
    }
    Ok(format!(
        "{} bad jobs ({}); a garbage delayed item (due bucket, the backend's digest) and a job in bucket i64::MIN; 2 workers (bad name with a non-JSON queues field, start i64::MIN, ping i64::MAX; a ghost with ping i64::MIN, start -1 and a non-JSON working-on row); 2 failed-table entries",
        bad.len(),
        short_names(bad)
    ))
}

/// Runs scenario 4 on a private server of `kind` in `dir`: the UTF-8 bad
/// input, or (`non_utf8`, Redis only) only the items holding bytes that
/// are not UTF-8.
pub async fn run(out: &mut Outcome, kind: Kind, size: Size, dir: &Path, non_utf8: bool) -> Res<()> {
    let t = Timing::for_size(size);
    let (mut store, url) = Store::start(kind, dir).await?;
    let ledger_dir = dir.join("ledger");
    std::fs::create_dir_all(&ledger_dir).map_err(|e| e.to_string())?;
    let mut procs = Procs::new(&dir.join("logs"))?;
    let args = |role: &str, extra: &[String]| {
        let mut a = vec![
            role.to_owned(),
            "--url".to_owned(),
            url.clone(),
            "--ledger".to_owned(),
            ledger_dir.display().to_string(),
        ];
        a.extend_from_slice(extra);
        a
    };
    let ms = |d: Duration| d.as_millis().to_string();
    procs.spawn(
        "scheduler",
        &args(
            "scheduler",
            &[
                "--name".into(),
                "sched-{gen}".into(),
                "--poll-ms".into(),
                ms(t.sched_poll),
                "--stuck-ms".into(),
                ms(t.stuck),
            ],
        ),
        false,
    )?;
    for (n, slots) in [1usize, 4].into_iter().enumerate() {
        procs.spawn(
            &format!("worker{n}"),
            &args("worker", &["--concurrency".into(), slots.to_string()]),
            false,
        )?;
    }
    let good = 300u64;
    let producer_a = procs.spawn(
        "producer-before",
        &args(
            "producer",
            &["--count".into(), good.to_string(), "--rate".into(), "300".into()],
        ),
        true,
    )?;
    tokio::time::sleep(Duration::from_millis(800)).await;

    // The raw writes, in the middle of the good jobs.
    let bad: Vec<(&str, Vec<u8>)> = bad_jobs()
        .into_iter()
        .filter(|(m, _)| (*m == "bad-non-utf8") == non_utf8)
        .collect();
    let figure = store.write_bad(&bad, non_utf8).await?;
    out.fig("raw writes", figure);

    let producer_b = procs.spawn(
        "producer-after",
        &args(
            "producer",
            &[
                "--from".into(),
                "100000".into(),
                "--count".into(),
                good.to_string(),
                "--rate".into(),
                "300".into(),
            ],
        ),
        true,
    )?;
    // Every good job, then a few seconds for the bad ones.
    let start = Instant::now();
    let limit = Duration::from_secs(if size.short { 20 } else { 60 });
    let ledger = loop {
        let ledger = Ledger::read(&ledger_dir).map_err(|e| format!("cannot read the ledger: {e}"))?;
        let done = !procs.running(producer_a)
            && !procs.running(producer_b)
            && ledger.enqueued.keys().all(|id| ledger.ends.contains_key(id));
        if done || start.elapsed() > limit {
            break ledger;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    tokio::time::sleep(t.sched_poll * 4 + Duration::from_secs(2)).await;

    // Inspection, through the library, each call with a time limit.
    let backend = resq::connect(&url).await.map_err(|e| format!("connect: {e}"))?;
    let queue = resq::Queue::new(backend);
    let mut answers = Vec::new();
    macro_rules! inspect {
        ($name:expr, $call:expr) => {
            let r = tokio::time::timeout(Duration::from_secs(15), $call).await;
            answers.push((
                $name,
                match r {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("error: {e}")),
                    Err(_) => Err("no answer in 15 s".to_owned()),
                },
            ));
        };
    }
    inspect!("queues", queue.queues());
    inspect!("length", queue.length("chaos"));
    inspect!("queued", queue.queued("chaos", 0, -1));
    inspect!("failed_count", queue.failed_count());
    inspect!("failed", queue.failed(0, -1));
    inspect!("workers", queue.workers());
    inspect!("all_working_on", queue.all_working_on());
    inspect!("details", queue.details());
    inspect!("timestamps", queue.timestamps());
    inspect!("all_delayed", queue.all_delayed());
    inspect!("stats", queue.stats());
    inspect!("locks", queue.locks());
    inspect!("leader", queue.leader());
    let panics = procs.stop_all();

    let lost: Vec<u64> = ledger
        .enqueued
        .keys()
        .filter(|id| !ledger.ends.contains_key(id))
        .copied()
        .collect();
    out.fig("good jobs acknowledged", ledger.enqueued.len());
    out.check(
        "the good jobs around the bad ones all run",
        lost.is_empty() && ledger.enqueued.len() as u64 == 2 * good,
        format!("{} of {} not run", lost.len(), ledger.enqueued.len()),
    );
    // Each bad job: its failed entry, found by its marker, and the reason.
    let failed = store.failed().await?;
    let left = store.left().await;
    out.fig("failed entries", failed.len());
    out.fig("jobs left in the queue", left);
    for (marker, _) in &bad {
        let entry = failed.iter().find(|f| contains(f, marker.as_bytes()));
        let (pass, detail) = match entry {
            Some(e) => {
                let reason = reason(e);
                (
                    !reason.is_empty(),
                    if reason.is_empty() {
                        "no reason".to_owned()
                    } else {
                        reason
                    },
                )
            }
            None => (false, "not on the failed list".to_owned()),
        };
        out.check(&format!("{marker}: on the failed list with a reason"), pass, detail);
    }
    let promo = failed
        .iter()
        .filter(|f| contains(f, b"bad-delayed") && !contains(f, b"bad-delayed-min"))
        .count();
    out.fig("undecodable delayed items on the failed list", promo);
    if kind == Kind::Postgres {
        for (marker, what) in [
            ("bad-delayed-min", "the job of bucket i64::MIN"),
            ("bad-working", "the ghost's non-JSON working-on row"),
        ] {
            let n = failed.iter().filter(|f| contains(f, marker.as_bytes())).count();
            out.fig(&format!("{what} on the failed list"), n);
        }
    }
    let bad_answers: Vec<String> = answers
        .iter()
        .filter_map(|(n, r)| r.as_ref().err().map(|e| format!("{n}: {e}")))
        .collect();
    out.check(
        "every inspection call still answers",
        bad_answers.is_empty(),
        if bad_answers.is_empty() {
            format!("{} calls answered", answers.len())
        } else {
            bad_answers.join("; ")
        },
    );
    crate::scenarios::process_checks_pub(out, &mut procs, panics);
    drop(store);
    Ok(())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The `exception: error` of a failed entry (shortened). The fields are
/// found in the text, not by parsing the whole entry, whose payload may be
/// nested deeper than any parser allows.
fn reason(entry: &[u8]) -> String {
    let field = |k: &str| -> String {
        let key = format!("\"{k}\":");
        let Some(at) = entry.windows(key.len()).position(|w| w == key.as_bytes()) else {
            return String::new();
        };
        let rest = &entry[at + key.len()..];
        let mut values = resq::serde_json::Deserializer::from_slice(rest).into_iter::<String>();
        match values.next() {
            Some(Ok(s)) => s,
            _ => String::new(),
        }
    };
    let (exc, err) = (field("exception"), field("error"));
    if err.is_empty() {
        return String::new();
    }
    let text = format!("{exc}: {err}");
    text.chars().take(120).collect()
}
