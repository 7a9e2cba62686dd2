//! An audit of a Redis namespace that several Resque implementations share
//! (resq, node-resque, Ruby resque, resque-scheduler), behind `resq doctor`.
//!
//! [`audit`] reads the namespace (with `SCAN` and paged `LRANGE`, never
//! `KEYS`) and reports:
//!
//! * the leader-lock keys: node-resque's and resq's
//!   `<ns>:resque_scheduler_leader_lock`, and resque-scheduler's
//!   `resque_scheduler_master_lock` (under `<ns>:` and, as
//!   `redis-namespace` builds it, under `<ns>:<ns>:`). One held lock is
//!   information; locks held under both names mean two schedulers each
//!   believe they lead, and a lock without a TTL never frees itself;
//! * queued jobs whose `args` is an empty object `{}`, the damage Redis's
//!   Lua `cjson` does to an empty array (node-resque's working-on records,
//!   then its stuck-job retries);
//! * working-on keys (`<ns>:worker:<name>:<queues>`) whose worker is not in
//!   the `workers` set, which no clean-up ever finds;
//! * registered workers with neither a node-resque/resq ping key nor a Ruby
//!   heartbeat;
//! * payloads that do not parse as Resque jobs in queues, delayed buckets,
//!   working-on records and failed entries.
//!
//! [`fix`] repairs only what is safe to repair without knowing more than
//! the data says, each with a compare-and-set script so that nothing
//! another client changed in between is overwritten:
//!
//! * a queued job with `{}` args is replaced in place, at the same
//!   position, by the same job with `[]` args
//!   ([`resq_core::job::repair_cjson_empty_args`]);
//! * an orphaned working-on key is turned into a failed entry
//!   (`Worker Timeout (killed manually)`, as a worker clean-up writes), so
//!   its job can be retried or removed from the failed list, and the key is
//!   deleted.
//!
//! Everything else is reported only: a leader lock may be held by a live
//! scheduler, a worker without a ping may be alive (use `resq workers
//! clean` for those that are not), and an unparsable queued payload is
//! moved to the failed list by the worker that claims it.

use crate::{RedisBackend, RedisResult};
use redis::Script;
use resq_core::failed::{encode_entry, Failure, WORKER_TIMEOUT};
use resq_core::job::{repair_cjson_empty_args, Job};
use resq_core::{Result, WorkerId};
use serde::Serialize;
use std::collections::{BTreeSet, HashSet};
use std::sync::LazyLock;

/// How many list elements one `LRANGE` reads.
const PAGE: isize = 500;

/// What kind of thing a [`Finding`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A leader-lock key (node-resque/resq or resque-scheduler).
    LeaderLock,
    /// A queued (or delayed, or failed) job whose `args` is `{}`.
    EmptyObjectArgs,
    /// A working-on key whose worker is not registered.
    OrphanWorkingOn,
    /// A registered worker with no ping key and no Ruby heartbeat.
    WorkerWithoutPing,
    /// A value that does not parse as a Resque job (or failed entry).
    UnparsablePayload,
}

/// How much a [`Finding`] matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing, nothing wrong.
    Info,
    /// Something is inconsistent or damaged.
    Problem,
}

/// The safe repair of a finding that has one, with what it compares
/// against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Fix {
    /// Replace the list element at `index` of the finding's key, if it
    /// still is the finding's `value`, by `replacement`.
    ReplaceListItem {
        /// The element's position in the list.
        index: u64,
        /// The repaired bytes.
        replacement: String,
    },
    /// Push `entry` onto the failed list and delete the finding's key, if
    /// the key still holds the finding's `value`.
    MoveToFailed {
        /// The failed entry to push.
        entry: String,
    },
}

/// One thing [`audit`] found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What it is about.
    pub kind: FindingKind,
    /// Whether it is a problem or information.
    pub severity: Severity,
    /// The physical Redis key.
    pub key: String,
    /// A one-line description.
    pub detail: String,
    /// The value read (for a list, the element), as text (bytes that are
    /// not UTF-8 escaped, see [`resq_core::failed::escape_bytes`]).
    pub value: Option<String>,
    /// The safe fix [`fix`] applies, if there is one.
    pub fix: Option<Fix>,
}

impl Finding {
    /// A problem with no safe fix.
    fn problem(kind: FindingKind, key: String, detail: String, value: Option<String>) -> Finding {
        Finding {
            kind,
            severity: Severity::Problem,
            key,
            detail,
            value,
            fix: None,
        }
    }
}

/// Everything [`audit`] found in a namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The namespace audited.
    pub namespace: String,
    /// The findings, in the order they were found.
    pub findings: Vec<Finding>,
}

impl Report {
    /// The findings that are problems.
    pub fn problems(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity == Severity::Problem)
    }

    /// The findings [`fix`] would act on.
    pub fn fixable(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.fix.is_some())
    }
}

/// What [`fix`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FixOutcome {
    /// Fixes applied.
    pub fixed: u64,
    /// Fixes skipped because the value changed since the audit.
    pub stale: u64,
}

/// KEYS: list. ARGV: index, expected element, replacement. Sets the element
/// only if it still is the expected one. Returns 1 when set, 0 when stale.
static REPLACE_LIST_ITEM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local cur = redis.call('LINDEX', KEYS[1], tonumber(ARGV[1]))
if cur ~= ARGV[2] then return 0 end
redis.call('LSET', KEYS[1], tonumber(ARGV[1]), ARGV[3])
return 1
"#,
    )
});

/// KEYS: key, failed list. ARGV: expected value, failed entry. Moves the
/// key's job to the failed list if the key still holds the expected value.
/// Returns 1 when moved, 0 when stale.
static MOVE_TO_FAILED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1])
return 1
"#,
    )
});

/// Audits `backend`'s namespace; see the [module documentation](self).
/// Read-only.
pub async fn audit(backend: &RedisBackend) -> Result<Report> {
    let mut report = Report {
        namespace: backend.config().namespace.clone(),
        findings: Vec::new(),
    };
    leader_locks(backend, &mut report).await?;
    queues(backend, &mut report).await?;
    delayed(backend, &mut report).await?;
    failed(backend, &mut report).await?;
    workers(backend, &mut report).await?;
    Ok(report)
}

/// Applies the safe fixes of `report` (see the [module documentation](self)),
/// each only if the value is still the one the audit read.
pub async fn fix(backend: &RedisBackend, report: &Report) -> Result<FixOutcome> {
    let mut outcome = FixOutcome::default();
    let mut conn = backend.conn();
    for finding in report.fixable() {
        let Some(value) = finding.value.as_deref() else {
            continue;
        };
        let done: i64 = match &finding.fix {
            Some(Fix::ReplaceListItem { index, replacement }) => {
                REPLACE_LIST_ITEM
                    .key(&finding.key)
                    .arg(*index)
                    .arg(value)
                    .arg(replacement)
                    .invoke_async(&mut conn)
                    .await
                    .rd_at(backend, &finding.key)
                    .await?
            }
            Some(Fix::MoveToFailed { entry }) => {
                MOVE_TO_FAILED
                    .key(&finding.key)
                    .key(backend.keys.failed())
                    .arg(value)
                    .arg(entry)
                    .invoke_async(&mut conn)
                    .await
                    .rd_at(backend, &finding.key)
                    .await?
            }
            None => continue,
        };
        if done == 1 {
            outcome.fixed += 1;
        } else {
            tracing::info!(target: "resq::redis::doctor", key = %finding.key, "value changed since the audit; not fixed");
            outcome.stale += 1;
        }
    }
    Ok(outcome)
}

/// Reports the leader-lock keys that exist.
async fn leader_locks(backend: &RedisBackend, report: &mut Report) -> Result<()> {
    let ns = backend.config().namespace.trim();
    let ours = backend.keys.leader();
    let mut rs = vec![backend.keys.key("resque_scheduler_master_lock")];
    if !ns.is_empty() {
        rs.push(backend.keys.key(&format!("{ns}:resque_scheduler_master_lock")));
    }
    let mut held = Vec::new();
    for key in std::iter::once(&ours).chain(rs.iter()) {
        let (value, ttl): (Option<Vec<u8>>, i64) = redis::pipe()
            .cmd("GET")
            .arg(key)
            .cmd("PTTL")
            .arg(key)
            .query_async(&mut backend.conn())
            .await
            .rd_at(backend, key)
            .await?;
        let Some(value) = value else { continue };
        let value = crate::text(value);
        let who = if *key == ours {
            "node-resque/resq leader lock"
        } else {
            "resque-scheduler master lock"
        };
        held.push(key.clone());
        if ttl < 0 {
            report.findings.push(Finding::problem(
                FindingKind::LeaderLock,
                key.clone(),
                format!("{who} held by {value:?} has no TTL: it never frees itself if its holder dies"),
                Some(value),
            ));
        } else {
            report.findings.push(Finding {
                kind: FindingKind::LeaderLock,
                severity: Severity::Info,
                key: key.clone(),
                detail: format!("{who} held by {value:?}, expires in {} ms", ttl),
                value: Some(value),
                fix: None,
            });
        }
    }
    if held.contains(&ours) && held.len() > 1 {
        report.findings.push(Finding::problem(FindingKind::LeaderLock, held.join(" "), "both a node-resque/resq scheduler and a resque-scheduler hold a leader lock: they do not exclude each other, so both promote delayed jobs and run schedules".into(), None));
    }
    Ok(())
}

/// The queue lists: the `queues` set's members and any `queue:*` key.
async fn queue_keys(backend: &RedisBackend) -> Result<BTreeSet<String>> {
    let members: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
        .arg(backend.keys.queues())
        .query_async(&mut backend.conn())
        .await
        .rd_at(backend, &backend.keys.queues())
        .await?;
    let mut keys: BTreeSet<String> = crate::utf8_members(&backend.keys.queues(), members)
        .iter()
        .map(|q| backend.keys.queue(q))
        .collect();
    keys.extend(backend.scan(&backend.keys.pattern("queue:")).await?);
    Ok(keys)
}

/// Calls `each(index, element)` for every element of the list `key`, a
/// page at a time. A key that is not a list is skipped.
async fn each_element(backend: &RedisBackend, key: &str, mut each: impl FnMut(u64, String)) -> Result<()> {
    let kind: String = redis::cmd("TYPE")
        .arg(key)
        .query_async(&mut backend.conn())
        .await
        .rd_at(backend, key)
        .await?;
    if kind != "list" {
        return Ok(());
    }
    let mut start: isize = 0;
    loop {
        let page: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(key)
            .arg(start)
            .arg(start + PAGE - 1)
            .query_async(&mut backend.conn())
            .await
            .rd_at(backend, key)
            .await?;
        let n = page.len();
        for (i, item) in page.into_iter().enumerate() {
            // `start` and `i` are non-negative.
            each((start as u64) + i as u64, crate::text(item));
        }
        if n < PAGE as usize {
            return Ok(());
        }
        start += PAGE;
    }
}

/// A short, one-line preview of a value for a finding's detail.
fn preview(value: &str) -> String {
    let mut out: String = value.chars().take(80).collect();
    if out.len() < value.len() {
        out.push('…');
    }
    out.replace(['\n', '\r'], " ")
}

/// `{}` args and unparsable payloads in the queue lists.
async fn queues(backend: &RedisBackend, report: &mut Report) -> Result<()> {
    for key in queue_keys(backend).await? {
        let mut found = Vec::new();
        each_element(backend, &key, |index, item| {
            if let Err(e) = Job::decode(&item) {
                found.push(Finding::problem(
                    FindingKind::UnparsablePayload,
                    key.clone(),
                    format!(
                        "job #{index} does not parse ({e}): {}; a worker moves it to the failed list when it claims it",
                        preview(&item)
                    ),
                    Some(item),
                ));
            } else if let Some(replacement) = repair_cjson_empty_args(&item) {
                found.push(Finding {
                    kind: FindingKind::EmptyObjectArgs,
                    severity: Severity::Problem,
                    key: key.clone(),
                    detail: format!("job #{index} has args {{}} (cjson's empty array): {}", preview(&item)),
                    value: Some(item),
                    fix: Some(Fix::ReplaceListItem { index, replacement }),
                });
            }
        })
        .await?;
        report.findings.extend(found);
    }
    Ok(())
}

/// Unparsable items and `{}` args in the delayed buckets (reported only:
/// a delayed item is also named by its `timestamps:` set).
async fn delayed(backend: &RedisBackend, report: &mut Report) -> Result<()> {
    let schedule = backend.keys.schedule();
    let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
        .arg(&schedule)
        .arg(0)
        .arg(-1)
        .query_async(&mut backend.conn())
        .await
        .rd_at(backend, &schedule)
        .await?;
    for member in crate::utf8_members(&schedule, members) {
        let Ok(secs) = member.parse::<i64>() else { continue };
        let key = backend.keys.delayed(secs);
        let mut found = Vec::new();
        each_element(backend, &key, |index, item| {
            if let Err(e) = Job::decode(&item) {
                found.push(Finding::problem(
                    FindingKind::UnparsablePayload,
                    key.clone(),
                    format!(
                        "delayed item #{index} does not parse ({e}): {}; promotion moves it to the failed list",
                        preview(&item)
                    ),
                    Some(item),
                ));
            } else if repair_cjson_empty_args(&item).is_some() {
                found.push(Finding::problem(
                    FindingKind::EmptyObjectArgs,
                    key.clone(),
                    format!(
                        "delayed item #{index} has args {{}} (cjson's empty array): {}",
                        preview(&item)
                    ),
                    Some(item),
                ));
            }
        })
        .await?;
        report.findings.extend(found);
    }
    Ok(())
}

/// Failed entries that do not parse, or whose job has `{}` args.
async fn failed(backend: &RedisBackend, report: &mut Report) -> Result<()> {
    let key = backend.keys.failed();
    let mut found = Vec::new();
    each_element(backend, &key, |index, item| {
        let parsed: std::result::Result<serde_json::Map<String, serde_json::Value>, _> = serde_json::from_str(&item);
        match parsed {
            Err(e) => found.push(Finding::problem(FindingKind::UnparsablePayload, key.clone(), format!("failed entry #{index} is not a JSON object ({e}): {}", preview(&item)), Some(item))),
            Ok(map) => {
                let payload = map.get("payload").map(|p| p.to_string()).unwrap_or_default();
                if repair_cjson_empty_args(&payload).is_some() {
                    found.push(Finding::problem(FindingKind::EmptyObjectArgs, key.clone(), format!("failed entry #{index}'s job has args {{}} (cjson's empty array); retrying it runs it with args [{{}}] on node-resque"), Some(item)));
                }
            }
        }
    })
    .await?;
    report.findings.extend(found);
    Ok(())
}

/// Orphaned working-on keys, registered workers without a ping, and
/// working-on records that do not parse.
async fn workers(backend: &RedisBackend, report: &mut Report) -> Result<()> {
    let workers_key = backend.keys.workers();
    let members: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
        .arg(&workers_key)
        .query_async(&mut backend.conn())
        .await
        .rd_at(backend, &workers_key)
        .await?;
    let registered: HashSet<String> = crate::utf8_members(&workers_key, members).into_iter().collect();

    // Working-on keys: `worker:<member>`, less pings and `:started` keys.
    let ping_prefix = backend.keys.key("worker:ping:");
    let worker_prefix = backend.keys.key("worker:");
    let mut working: Vec<(String, Option<Vec<u8>>)> = backend.scan_values(&backend.keys.pattern("worker:")).await?;
    working.retain(|(k, _)| !k.starts_with(&ping_prefix) && !k.ends_with(":started"));
    let now_ms = resq_core::time::now_ms();
    for (key, value) in working {
        let Some(value) = value else { continue };
        let value = crate::text(value);
        let member = key.strip_prefix(&worker_prefix).unwrap_or(&key).to_owned();
        let record: Option<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(&value).ok();
        let Some(record) = record else {
            report.findings.push(Finding::problem(
                FindingKind::UnparsablePayload,
                key.clone(),
                format!("working-on record is not a JSON object: {}", preview(&value)),
                Some(value),
            ));
            continue;
        };
        if registered.contains(&member) {
            continue;
        }
        let queue = record.get("queue").and_then(|q| q.as_str()).unwrap_or("").to_owned();
        let payload = match record.get("payload") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(p) => p.to_string(),
            None => "{}".to_owned(),
        };
        let worker_name = WorkerId::parse(&member)
            .map(|w| w.name)
            .unwrap_or_else(|| member.clone());
        let failure = Failure::new(WORKER_TIMEOUT, WORKER_TIMEOUT).with_backtrace(vec![
            format!("found by resq doctor: working-on key {key} of an unregistered worker"),
            "resq doctor --fix".to_owned(),
        ]);
        let entry = encode_entry(&worker_name, &queue, &payload, &failure, now_ms);
        report.findings.push(Finding {
            kind: FindingKind::OrphanWorkingOn,
            severity: Severity::Problem,
            key: key.clone(),
            detail: format!(
                "working-on key of worker {member:?}, which is not registered: its job ({}) is in no queue",
                preview(&payload)
            ),
            value: Some(value),
            fix: Some(Fix::MoveToFailed { entry }),
        });
    }

    // Registered workers without a ping (node-resque, resq) or a heartbeat (Ruby).
    let heartbeats = backend.keys.heartbeats();
    let mut sorted: Vec<&String> = registered.iter().collect();
    sorted.sort();
    for member in sorted {
        let Some(id) = WorkerId::parse(member) else {
            report.findings.push(Finding::problem(
                FindingKind::WorkerWithoutPing,
                workers_key.clone(),
                format!("registered worker {member:?} is not of the form name:queues"),
                Some(member.clone()),
            ));
            continue;
        };
        let ping_key = backend.keys.ping(&id.name);
        let (ping, beat): (bool, bool) = redis::pipe()
            .cmd("EXISTS")
            .arg(&ping_key)
            .cmd("HEXISTS")
            .arg(&heartbeats)
            .arg(member)
            .query_async(&mut backend.conn())
            .await
            .rd_at(backend, &ping_key)
            .await?;
        if !ping && !beat {
            report.findings.push(Finding::problem(FindingKind::WorkerWithoutPing, workers_key.clone(), format!("registered worker {member:?} has no ping key ({ping_key}) and no heartbeat: it may be dead; `resq workers clean` cleans workers by ping age"), Some(member.clone())));
        }
    }
    Ok(())
}
