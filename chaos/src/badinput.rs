//! Scenario 4 (Redis): bad input from foreign clients. Raw bytes are
//! written over RESP, as another Resque client or a careless script could:
//! undecodable and malformed jobs in the queue, garbage in the delayed
//! schedule, the worker registry and the failed list. Good jobs run before
//! and after. The harness checks that no process exits or panics, that
//! every good job runs, that each bad job reaches the failed list with a
//! reason, and that every inspection call still answers.

use crate::ledger::Ledger;
use crate::procs::Procs;
use crate::scenarios::{Outcome, Size, Timing};
use crate::servers::{RedisServer, Res};
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

/// Runs scenario 4 on a private Redis in `dir`: the UTF-8 bad input, or
/// (`non_utf8`) only the items holding bytes that are not UTF-8.
pub async fn run(out: &mut Outcome, size: Size, dir: &Path, non_utf8: bool) -> Res<()> {
    let t = Timing::for_size(size);
    let server = RedisServer::start(&dir.join("redis"), &[])?;
    let url = server.url();
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
    let mut raw = Raw::connect(server.port())?;
    let bad: Vec<(&str, Vec<u8>)> = bad_jobs()
        .into_iter()
        .filter(|(m, _)| (*m == "bad-non-utf8") == non_utf8)
        .collect();
    for (_, bytes) in &bad {
        raw.ok(&[b"RPUSH", b"chaos:queue:chaos", bytes])?;
    }
    raw.ok(&[b"SADD", b"chaos:queues", b"chaos"])?;
    if non_utf8 {
        // The same places, with bytes that are not UTF-8.
        raw.ok(&[b"ZADD", b"chaos:delayed_queue_schedule", b"3", b"3"])?;
        raw.ok(&[b"RPUSH", b"chaos:delayed:3", b"\xff\xfe bad-delayed-bytes"])?;
        raw.ok(&[b"SADD", b"chaos:workers", b"\xff\xfe:2:chaos"])?;
        raw.ok(&[b"RPUSH", b"chaos:failed", b"\xff\xfe"])?;
    } else {
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
    }
    out.fig(
        "raw writes",
        if non_utf8 {
            "1 job, 1 delayed item, 1 worker name, 1 failed entry, each with bytes 0xFF 0xFE".to_owned()
        } else {
            format!(
                "{} bad jobs ({}); a garbage delayed item and a non-numeric schedule member; 4 registry entries (bad name, non-JSON working-on, start time and ping); 2 failed-list items",
                bad.len(),
                bad.iter().map(|b| b.0.trim_start_matches("bad-")).collect::<Vec<_>>().join(", ")
            )
        },
    );

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
    let failed = match raw.cmd(&[b"LRANGE", b"chaos:failed", b"0", b"-1"])? {
        Reply::Array(items) => items
            .into_iter()
            .filter_map(|i| match i {
                Reply::Bulk(Some(b)) => Some(b),
                _ => None,
            })
            .collect::<Vec<_>>(),
        other => return Err(format!("LRANGE failed: {other:?}")),
    };
    let left = match raw.cmd(&[b"LLEN", b"chaos:queue:chaos"])? {
        Reply::Int(n) => n,
        _ => -1,
    };
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
        .filter(|f| contains(f, b"bad-delayed") || contains(f, b"bad-delayed-bytes"))
        .count();
    out.fig("undecodable delayed items on the failed list", promo);
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
    drop(server);
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
