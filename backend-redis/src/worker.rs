//! The worker registry: the `workers` set, `worker:<id>` working-on
//! records, `worker:<id>:started` and `worker:ping:<name>`.

use crate::scripts::{CLEAN_WORKER, PROBE_PING};
use crate::{text, utf8_members, RedisBackend, RedisResult};
use async_trait::async_trait;
use resq_core::failed::{encode_entry, FailedJob, Failure, PAYLOAD_ERROR};
use resq_core::json::write_js_str;
use resq_core::{Cleaned, Error, Job, Orphan, Result, WorkerId, WorkerRegistry, WorkerTimes, WorkingOn};
use serde::Deserialize;
use serde_json::value::RawValue;

/// How often `clean_worker` re-reads a working-on record that changed under it.
const CLEAN_ATTEMPTS: usize = 8;

fn ping_json(worker: &WorkerId, now_ms: i64) -> String {
    let mut out = format!("{{\"time\":{},\"name\":", resq_core::time::bucket_of_ms(now_ms));
    write_js_str(&mut out, &worker.name);
    out.push_str(",\"queues\":");
    write_js_str(&mut out, &worker.queues);
    out.push_str(&format!(",\"time_ms\":{now_ms}}}"));
    out
}

#[derive(Deserialize)]
struct Ping {
    #[serde(default)]
    time: Option<f64>,
    #[serde(default)]
    time_ms: Option<i64>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    queues: Option<String>,
}

#[derive(Deserialize)]
struct Working<'a> {
    #[serde(default)]
    run_at: Option<String>,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    worker: Option<String>,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
}

/// Reads a working-on record written by resq, node-resque or Ruby. A record
/// that is not JSON is returned whole as the payload, so nothing is hidden.
fn parse_working(worker: &WorkerId, raw: &str) -> WorkingOn {
    match serde_json::from_str::<Working<'_>>(raw) {
        Ok(w) => {
            let payload = match w.payload.map(RawValue::get) {
                // A payload that was not JSON is stored as a JSON string.
                Some(p) if p.starts_with('"') => serde_json::from_str::<String>(p).unwrap_or_else(|_| p.to_owned()),
                Some(p) => p.to_owned(),
                None => String::new(),
            };
            WorkingOn {
                worker: w.worker.unwrap_or_default(),
                queue: w.queue.unwrap_or_default(),
                run_at: w.run_at.unwrap_or_default(),
                payload,
            }
        }
        Err(_) => WorkingOn {
            worker: worker.name.clone(),
            queue: String::new(),
            run_at: String::new(),
            payload: raw.to_owned(),
        },
    }
}

/// Parses node-resque's started value (seconds) or Ruby's `Time#to_s`.
fn parse_started(raw: &str) -> Option<i64> {
    let t = raw.trim();
    if let Ok(secs) = t.parse::<i64>() {
        return Some(secs.saturating_mul(1000));
    }
    if let Ok(secs) = t.parse::<f64>() {
        // Seconds with a fraction; the cast saturates for absurd values.
        return Some((secs * 1000.0) as i64);
    }
    resq_core::time::parse_date(t)
}

/// What cleaning does with a working-on record: (mode, value, queue).
/// A node-resque worker's record holds its job re-encoded by `cjson`, with
/// empty args turned into `{}`; that one change is undone first, whether
/// or not the payload names its queue (see [`resq_core::job`]).
fn plan(worker: &WorkerId, working: &WorkingOn, orphan: &Orphan) -> (&'static str, String, String) {
    let repaired;
    let working = match resq_core::job::repair_cjson_empty_args(&working.payload) {
        Some(payload) => {
            repaired = WorkingOn {
                payload,
                ..working.clone()
            };
            &repaired
        }
        None => working,
    };
    let queue = if working.queue.is_empty() {
        Job::decode(&working.payload)
            .ok()
            .and_then(|j| j.queue)
            .unwrap_or_default()
    } else {
        working.queue.clone()
    };
    let name = if working.worker.is_empty() {
        &worker.name
    } else {
        &working.worker
    };
    match orphan {
        Orphan::Requeue if !queue.is_empty() && Job::decode(&working.payload).is_ok() => {
            ("requeue", working.payload.clone(), queue)
        }
        Orphan::Requeue => {
            // It cannot go back on a queue: keep it on the failed list instead.
            let failure = Failure::new(
                PAYLOAD_ERROR,
                "the dead worker's job cannot be re-enqueued: no queue or bad payload",
            );
            let entry = encode_entry(name, &queue, &working.payload, &failure, resq_core::time::now_ms());
            ("fail", entry, queue)
        }
        Orphan::Fail { failure, at_ms } => (
            "fail",
            encode_entry(name, &queue, &working.payload, failure, *at_ms),
            queue,
        ),
    }
}

/// How many failed entries one `LRANGE` reads while looking for a job that
/// node-resque's cleanup already failed.
const FAILED_PAGE: i64 = 500;

/// Whether the failed entry `raw` is node-resque's (or resq's) force-clean
/// entry for this worker's recorded job: written for this worker name, from
/// the record's queue, with the same job (compared as JSON values, since
/// node-resque re-encodes the payload through `cjson`).
fn is_force_clean_entry_of(raw: &str, worker: &WorkerId, working: &WorkingOn, job: &serde_json::Value) -> bool {
    let Ok(entry) = resq_core::FailedJob::decode(raw) else {
        return false;
    };
    if !entry.is_force_cleaned() || entry.worker.as_deref() != Some(worker.name.as_str()) {
        return false;
    }
    if !working.queue.is_empty() && entry.queue.as_deref().is_some_and(|q| q != working.queue) {
        return false;
    }
    let Some(payload) = entry.payload else { return false };
    let payload = resq_core::job::repaired_payload(payload);
    serde_json::from_str::<serde_json::Value>(&payload).is_ok_and(|v| v == *job)
}

impl RedisBackend {
    /// Whether a working-on record is a leftover of node-resque's
    /// `forceCleanWorker`: that call fails the dead worker's job (a failed
    /// entry marked `queue#forceCleanWorker`) and unregisters the worker,
    /// but deletes the key `worker:<name>` instead of the record's
    /// `worker:<name>:<queues>`, which so stays behind. Re-queueing or
    /// failing it again would run or list the job twice, so cleaning drops
    /// such a record. The rule: the worker is no longer registered, and the
    /// failed list holds a force-clean entry for this worker name with the
    /// same job. Anything else (the entry is not found, say because someone
    /// removed or retried it) is cleaned as usual.
    async fn leaked_after_force_clean(&self, worker: &WorkerId, working: &WorkingOn) -> Result<bool> {
        let registered: bool = redis::cmd("SISMEMBER")
            .arg(self.keys.workers())
            .arg(worker.member())
            .query_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.workers())
            .await?;
        if registered {
            return Ok(false);
        }
        let payload = resq_core::job::repaired_payload(working.payload.clone());
        let Ok(job) = serde_json::from_str::<serde_json::Value>(&payload) else {
            return Ok(false);
        };
        // Newest entries first: a cleanup's entry is usually recent.
        let mut end = -1_i64;
        loop {
            let page: Vec<Vec<u8>> = redis::cmd("LRANGE")
                .arg(self.keys.failed())
                .arg(end - FAILED_PAGE + 1)
                .arg(end)
                .query_async(&mut self.conn())
                .await
                .rd_at(self, &self.keys.failed())
                .await?;
            if page.iter().any(|raw| {
                std::str::from_utf8(raw).is_ok_and(|raw| is_force_clean_entry_of(raw, worker, working, &job))
            }) {
                return Ok(true);
            }
            if i64::try_from(page.len()).unwrap_or(0) < FAILED_PAGE {
                return Ok(false);
            }
            end -= FAILED_PAGE;
        }
    }

    /// The liveness probe for registered workers without a ping key.
    ///
    /// An idle node-resque worker on `*` deletes its own ping key (and its
    /// started key) on every idle pass and writes the ping again on its next
    /// timer tick, so one killed between the two leaves its registration
    /// with no ping at all, which no ping scan would ever find. The rule:
    /// for each member of `workers` whose name has no ping key, write one
    /// stamped with the current time, atomically and only if the member is
    /// still registered, the key still absent, and the member has no Ruby
    /// `workers:heartbeat` entry (Ruby workers never ping; Ruby prunes them
    /// by heartbeat). A live node-resque worker deletes or overwrites that
    /// ping within its `timeout`, so it never ages; a dead worker leaves it
    /// to age and is cleaned once it is older than the stuck-worker timeout,
    /// like any other stale ping (node-resque's scheduler then finds it too).
    /// So a dead worker without a ping is cleaned one stuck-worker timeout
    /// after the first scheduler pass that sees it. (A Ruby worker that
    /// writes no heartbeat looks the same and would be cleaned too.)
    async fn probe_unpinged(&self, prefix: &str, pings: &[(String, Option<Vec<u8>>)]) -> Result<()> {
        let pinged: std::collections::HashSet<&str> = pings
            .iter()
            .filter(|(_, v)| v.is_some())
            .filter_map(|(k, _)| k.strip_prefix(prefix))
            .collect();
        let key = self.keys.workers();
        let members: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
            .arg(&key)
            .query_async(&mut self.conn())
            .await
            .rd_at(self, &key)
            .await?;
        let members = utf8_members(&key, members);
        let now = resq_core::time::now_ms();
        for member in &members {
            let Some(worker) = WorkerId::parse(member) else {
                continue;
            };
            if pinged.contains(worker.name.as_str()) {
                continue;
            }
            let wrote: i64 = PROBE_PING
                .key(self.keys.workers())
                .key(self.keys.ping(&worker.name))
                .key(self.keys.heartbeats())
                .arg(member)
                .arg(ping_json(&worker, now))
                .invoke_async(&mut self.conn())
                .await
                .rd_at(self, &self.keys.ping(&worker.name))
                .await?;
            if wrote == 1 {
                tracing::info!(target: "resq::redis", worker = %worker, "registered worker had no ping; probing it");
            }
        }
        Ok(())
    }
}

#[async_trait]
impl WorkerRegistry for RedisBackend {
    async fn register_worker(&self, worker: &WorkerId, now_ms: i64) -> Result<()> {
        redis::pipe()
            .atomic()
            .sadd(self.keys.workers(), worker.member())
            .ignore()
            .set(self.keys.started(worker), resq_core::time::bucket_of_ms(now_ms))
            .ignore()
            .set(self.keys.ping(&worker.name), ping_json(worker, now_ms))
            .ignore()
            .exec_async(&mut self.conn())
            .await
            .rd(self)
            .await
    }

    async fn ping_worker(&self, worker: &WorkerId, now_ms: i64) -> Result<()> {
        redis::cmd("SET")
            .arg(self.keys.ping(&worker.name))
            .arg(ping_json(worker, now_ms))
            .exec_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.ping(&worker.name))
            .await
    }

    async fn register_workers(&self, workers: &[WorkerId], now_ms: i64) -> Result<()> {
        if workers.is_empty() {
            return Ok(());
        }
        let members: Vec<String> = workers.iter().map(WorkerId::member).collect();
        let started = resq_core::time::bucket_of_ms(now_ms);
        let mut values: Vec<(String, String)> = Vec::with_capacity(workers.len() * 2);
        for w in workers {
            values.push((self.keys.started(w), started.to_string()));
        }
        // Later pings of the same name win, as with one call per worker.
        for w in workers {
            values.push((self.keys.ping(&w.name), ping_json(w, now_ms)));
        }
        redis::pipe()
            .atomic()
            .sadd(self.keys.workers(), members)
            .ignore()
            .mset(&values)
            .ignore()
            .exec_async(&mut self.conn())
            .await
            .rd(self)
            .await
    }

    async fn ping_workers(&self, workers: &[WorkerId], now_ms: i64) -> Result<()> {
        if workers.is_empty() {
            return Ok(());
        }
        let values: Vec<(String, String)> = workers
            .iter()
            .map(|w| (self.keys.ping(&w.name), ping_json(w, now_ms)))
            .collect();
        redis::cmd("MSET")
            .arg(&values)
            .exec_async(&mut self.conn())
            .await
            .rd(self)
            .await
    }

    async fn working_on_many(&self, workers: &[WorkerId]) -> Result<Vec<Option<WorkingOn>>> {
        if workers.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = workers.iter().map(|w| self.keys.working(w)).collect();
        let raw: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.conn())
            .await
            .rd(self)
            .await?;
        if raw.len() != workers.len() {
            return Err(Error::transient(format!(
                "MGET returned {} values for {} keys",
                raw.len(),
                workers.len()
            )));
        }
        Ok(workers
            .iter()
            .zip(raw)
            .map(|(w, r)| r.map(|r| parse_working(w, &text(r))))
            .collect())
    }

    async fn workers(&self) -> Result<Vec<WorkerId>> {
        let key = self.keys.workers();
        let members: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
            .arg(&key)
            .query_async(&mut self.conn())
            .await
            .rd_at(self, &key)
            .await?;
        let mut out: Vec<WorkerId> = utf8_members(&key, members)
            .iter()
            .filter_map(|m| WorkerId::parse(m))
            .collect();
        out.sort();
        Ok(out)
    }

    async fn worker_started(&self, worker: &WorkerId) -> Result<Option<i64>> {
        let raw: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.keys.started(worker))
            .query_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.started(worker))
            .await?;
        Ok(raw.map(text).as_deref().and_then(parse_started))
    }

    /// One pipeline: each worker's `started` and ping keys, and Ruby's
    /// `workers:heartbeat` entries. The ping is node-resque's
    /// `worker:ping:<name>` JSON (`time` in seconds, or resq's `time_ms`);
    /// a Ruby worker's heartbeat stands in when it has no ping.
    async fn worker_times(&self, workers: &[WorkerId]) -> Result<Vec<WorkerTimes>> {
        if workers.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for w in workers {
            pipe.get(self.keys.started(w)).get(self.keys.ping(&w.name));
        }
        let members: Vec<String> = workers.iter().map(WorkerId::member).collect();
        pipe.cmd("HMGET").arg(self.keys.heartbeats()).arg(&members);
        let (times, beats): (Vec<Option<Vec<u8>>>, Vec<Option<Vec<u8>>>) = {
            let mut all: Vec<redis::Value> = pipe.query_async(&mut self.conn()).await.rd(self).await?;
            let beats = all.pop().unwrap_or(redis::Value::Nil);
            let times = all
                .into_iter()
                .map(|v| redis::from_redis_value::<Option<Vec<u8>>>(v).ok().flatten())
                .collect();
            let beats = redis::from_redis_value::<Vec<Option<Vec<u8>>>>(beats).unwrap_or_default();
            (times, beats)
        };
        Ok(workers
            .iter()
            .enumerate()
            .map(|(i, _)| {
                let started_ms = times
                    .get(2 * i)
                    .cloned()
                    .flatten()
                    .map(text)
                    .as_deref()
                    .and_then(parse_started);
                let ping_ms = times
                    .get(2 * i + 1)
                    .cloned()
                    .flatten()
                    .and_then(|raw| serde_json::from_slice::<Ping>(&raw).ok())
                    .and_then(|p| p.time_ms.or(p.time.map(|t| (t * 1000.0) as i64)))
                    .or_else(|| {
                        beats
                            .get(i)
                            .cloned()
                            .flatten()
                            .map(text)
                            .as_deref()
                            .and_then(resq_core::time::parse_date)
                    });
                WorkerTimes { started_ms, ping_ms }
            })
            .collect())
    }

    async fn working_on(&self, worker: &WorkerId) -> Result<Option<WorkingOn>> {
        let raw: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.keys.working(worker))
            .query_async(&mut self.conn())
            .await
            .rd_at(self, &self.keys.working(worker))
            .await?;
        Ok(raw.map(|r| parse_working(worker, &text(r))))
    }

    /// Workers whose ping is older than `cutoff_ms`, after giving a ping to
    /// every registered worker that has none (the liveness probe of
    /// `probe_unpinged`).
    async fn stale_workers(&self, cutoff_ms: i64) -> Result<Vec<WorkerId>> {
        let prefix = self.keys.ping("");
        let found = self.scan_values(&self.keys.pattern("worker:ping:")).await?;
        self.probe_unpinged(&prefix, &found).await?;
        let mut out = Vec::new();
        for (key, value) in &found {
            let Some(raw) = value else { continue };
            let Ok(ping) = serde_json::from_slice::<Ping>(raw) else {
                tracing::warn!(target: "resq::redis", key = %key, "skipping a ping that is not JSON (or not UTF-8)");
                continue;
            };
            // The cast saturates; node-resque writes whole seconds.
            let at = ping.time_ms.or(ping.time.map(|t| (t * 1000.0) as i64));
            let Some(at) = at else { continue };
            if at >= cutoff_ms {
                continue;
            }
            let name = ping
                .name
                .filter(|n| !n.is_empty())
                .or_else(|| key.strip_prefix(&prefix).map(str::to_owned));
            if let Some(name) = name {
                out.push(WorkerId {
                    name,
                    queues: ping.queues.unwrap_or_default(),
                });
            }
        }
        out.sort();
        Ok(out)
    }

    async fn clean_worker(&self, worker: &WorkerId, orphan: Orphan) -> Result<Option<Cleaned>> {
        for _ in 0..CLEAN_ATTEMPTS {
            // Read as bytes: a record that is not UTF-8 is cleaned escaped,
            // and matched by its stored bytes.
            let raw: Option<Vec<u8>> = redis::cmd("GET")
                .arg(self.keys.working(worker))
                .query_async(&mut self.conn())
                .await
                .rd_at(self, &self.keys.working(worker))
                .await?;
            let working = raw.clone().map(|r| parse_working(worker, &text(r)));
            let (mode, value, queue) = match &working {
                Some(w) if self.leaked_after_force_clean(worker, w).await? => ("drop", String::new(), String::new()),
                Some(w) => plan(worker, w, &orphan),
                None => ("none", String::new(), String::new()),
            };
            let target = if mode == "requeue" {
                self.keys.queue(&queue)
            } else {
                self.keys.failed()
            };
            let stamp = crate::queue::enqueue_stamp();
            let found: i64 = CLEAN_WORKER
                .key(self.keys.workers())
                .key(self.keys.ping(&worker.name))
                .key(self.keys.started(worker))
                .key(self.keys.working(worker))
                .key(self.keys.stat(&format!("processed:{}", worker.name)))
                .key(self.keys.stat(&format!("failed:{}", worker.name)))
                .key(target)
                .key(self.keys.queues())
                .key(self.keys.stat("failed"))
                .key(self.keys.enqueued(&queue))
                .key(self.keys.slots())
                .key(self.keys.task_slots())
                .arg(worker.member())
                .arg(raw.as_deref().unwrap_or(b""))
                .arg(mode)
                .arg(&value)
                .arg(&queue)
                .arg(self.keys.wakeup_channel())
                .arg(stamp)
                .invoke_async(&mut self.conn())
                .await
                .rd_at(self, &self.keys.working(worker))
                .await?;
            if found < 0 {
                continue; // the worker finished or took a job meanwhile: read again
            }
            if found == 0 && working.is_none() {
                return Ok(None);
            }
            if mode == "drop" {
                tracing::warn!(target: "resq::redis", worker = %worker,
                    "dropped a working-on record node-resque's cleanup left behind: its job is on the failed list already");
            }
            return Ok(Some(Cleaned {
                worker: worker.clone(),
                failed_entry: (mode == "fail").then(|| Box::new(FailedJob::decode_lenient(&value))),
                working_on: working,
            }));
        }
        Err(Error::transient(format!(
            "the working-on record of {worker} kept changing while it was being cleaned"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_dialect_of_working_on() {
        let w = WorkerId::new("h:1+1", &["q".to_owned()]);
        let ours = r#"{"run_at":"x","queue":"q","worker":"h:1+1","payload":{"class":"a","queue":"q","args":[]}}"#;
        assert_eq!(
            parse_working(&w, ours).payload,
            r#"{"class":"a","queue":"q","args":[]}"#
        );
        let ruby = r#"{"queue":"q","run_at":"2024-01-02T03:04:05Z","payload":{"class":"A","args":[1]}}"#;
        let r = parse_working(&w, ruby);
        assert_eq!(r.worker, "");
        assert_eq!(r.payload, r#"{"class":"A","args":[1]}"#);
        let bad = r#"{"run_at":"x","queue":"q","worker":"h","payload":"not json {"}"#;
        assert_eq!(parse_working(&w, bad).payload, "not json {");
        assert_eq!(parse_working(&w, "garbage").payload, "garbage");
    }

    #[test]
    fn ping_is_node_resque_json_plus_ms() {
        let w = WorkerId::new("h:1+1", &["a".to_owned(), "b".to_owned()]);
        assert_eq!(
            ping_json(&w, 1_795_901_762_400),
            r#"{"time":1795901762,"name":"h:1+1","queues":"a,b","time_ms":1795901762400}"#
        );
        assert_eq!(parse_started("1795901762"), Some(1_795_901_762_000));
        assert_eq!(parse_started("soon"), None);
    }
}
