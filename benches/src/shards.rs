//! Sharded namespaces on a Redis Cluster (issue #15): processing
//! throughput with the same queues on 1 shard and on N shards, interleaved
//! round by round, and how many commands each primary ran per job.
//!
//! A shard is a hash tag `{<base>:i}`, so it lives on whichever primary
//! owns that tag's slot, and a queue lives on shard `fnv1a(name) % N`. The
//! figure is meant to show the load spreading over the primaries, so the
//! run picks a base namespace whose N tags land on N different primaries
//! (when N does not exceed the primaries) and queue names that give every
//! shard the same number of queues; both choices are printed. Worker `i`
//! lists every queue with queue `i % queues` first, so all shards are
//! busy at once (one worker list in priority order would drain the first
//! shard's queues before touching the next).
//!
//! Commands are counted with `INFO commandstats` on every primary before
//! and after the processing (the fill is not counted), so the cluster
//! must not be serving anything else: use a private one, e.g.
//! `RESQ_CLUSTER_BASE_PORT=7100 RESQ_CLUSTER_DIR=/tmp/resq-bench-cluster
//! REPLICAS=0 ops/redis-cluster.sh start`.

use crate::measure::{check_exactly_once, ledger_tasks, quick_worker, rate, Ledger, RUN_LIMIT};
use crate::per_job::redis_commands;
use resq_core::{Backend, NewJob, Queue, Worker, WorkerConfig};
use resq_redis::{RedisConfig, ShardedRedis};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What one processing run measured.
#[derive(Clone, Debug)]
pub struct ShardRun {
    /// Shards of the namespace.
    pub shards: usize,
    /// Jobs per second, from the first claim round to the last job.
    pub rate: f64,
    /// Commands each primary ran per processed job, by primary address.
    pub commands_per_job: Vec<(String, f64)>,
}

/// The shape of a run.
#[derive(Clone, Debug)]
pub struct SpreadPlan {
    /// A cluster URL without a namespace (`redis+cluster://h:p,h:p`).
    pub cluster_url: String,
    /// Shard counts to compare, each measured once per round.
    pub shard_counts: Vec<usize>,
    /// Jobs per run.
    pub jobs: usize,
    /// Queues the jobs are spread over (round robin).
    pub queues: usize,
    /// Workers, each with `slots` slots.
    pub workers: usize,
    /// Slots per worker.
    pub slots: usize,
    /// Rounds: every shard count once per round, in order.
    pub rounds: usize,
}

/// A connection to the URL's first node, and the cluster's primaries:
/// `(redis://host:port, slot ranges)`.
async fn primaries(
    cluster_url: &str,
) -> Result<(redis::aio::MultiplexedConnection, Vec<(String, Vec<(u16, u16)>)>), String> {
    let config = RedisConfig::from_url(&format!("{cluster_url}/?namespace=%7Bprobe%7D")).map_err(|e| e.to_string())?;
    let seed = config.cluster_nodes.first().ok_or("the URL names no node")?;
    let client = redis::Client::open(seed.as_str()).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else {
            continue;
        };
        if !flags.contains("master") || flags.contains("fail") {
            continue;
        }
        let host_port = addr.split('@').next().unwrap_or(addr);
        let ranges = fields
            .iter()
            .skip(8)
            .filter_map(|r| {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                Some((a.parse().ok()?, b.parse().ok()?))
            })
            .collect();
        out.push((format!("redis://{host_port}"), ranges));
    }
    out.sort();
    Ok((conn, out))
}

/// The slot of `key`, as the cluster computes it (`CLUSTER KEYSLOT`).
async fn keyslot(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Result<u16, String> {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(conn)
        .await
        .map_err(|e| e.to_string())
}

/// The index in `primaries` of the primary owning `slot`.
fn owner(primaries: &[(String, Vec<(u16, u16)>)], slot: u16) -> Option<usize> {
    primaries
        .iter()
        .position(|(_, ranges)| ranges.iter().any(|&(a, b)| (a..=b).contains(&slot)))
}

/// A fresh base namespace whose `shards` tags land on as many different
/// primaries as there can be.
async fn pick_namespace(
    conn: &mut redis::aio::MultiplexedConnection,
    primaries: &[(String, Vec<(u16, u16)>)],
    shards: usize,
) -> Result<String, String> {
    let want = shards.min(primaries.len());
    let base = resq_redis::testing::unique_namespace().replace("resq-test", "resq-shard-bench");
    let mut best = (0, format!("{base}-0"));
    for attempt in 0..200 {
        let ns = format!("{base}-{attempt}");
        let mut owners = Vec::with_capacity(shards);
        for i in 0..shards {
            let slot = keyslot(conn, &resq_redis::shard_namespace(&ns, i)).await?;
            owners.extend(owner(primaries, slot));
        }
        owners.sort_unstable();
        owners.dedup();
        if owners.len() >= want {
            return Ok(ns);
        }
        if owners.len() > best.0 {
            best = (owners.len(), ns);
        }
    }
    Ok(best.1)
}

/// `queues` queue names that give each of `shards` shards the same number
/// of queues (as near as `queues / shards` allows).
fn balanced_queues(queues: usize, shards: usize) -> Vec<String> {
    let per = queues.div_ceil(shards.max(1));
    let mut taken = vec![0usize; shards.max(1)];
    let mut out = Vec::with_capacity(queues);
    let mut i = 0usize;
    while out.len() < queues {
        let name = format!("q{i}");
        let s = resq_redis::shard::shard_index(&name, shards.max(1));
        if taken[s] < per {
            taken[s] += 1;
            out.push(name);
        }
        i += 1;
    }
    out
}

/// The sum of `INFO commandstats` calls on each primary.
async fn counts(primaries: &[(String, Vec<(u16, u16)>)]) -> Result<Vec<u64>, String> {
    let mut out = Vec::with_capacity(primaries.len());
    for (url, _) in primaries {
        out.push(
            redis_commands(url)
                .await
                .ok_or_else(|| format!("cannot read INFO commandstats on {url}"))?,
        );
    }
    Ok(out)
}

/// One processing run on a fresh namespace of `shards` shards.
async fn run_once(
    plan: &SpreadPlan,
    shards: usize,
    conn: &mut redis::aio::MultiplexedConnection,
    primaries: &[(String, Vec<(u16, u16)>)],
    queue_names: &[String],
) -> Result<ShardRun, String> {
    let ns = pick_namespace(conn, primaries, shards).await?;
    let url = format!("{}/?namespace={ns}&shards={shards}", plan.cluster_url);
    let config = RedisConfig::from_url(&url).map_err(|e| e.to_string())?;
    let sharded = Arc::new(ShardedRedis::connect(config).await.map_err(|e| e.to_string())?);
    let backend: Arc<dyn Backend> = sharded.clone();
    let outcome = measure(plan, &backend, primaries, queue_names).await;
    drop(backend);
    for shard in sharded.shards() {
        let _ = shard.delete_namespace().await;
    }
    let (rate, commands_per_job) = outcome?;
    Ok(ShardRun {
        shards,
        rate,
        commands_per_job,
    })
}

async fn measure(
    plan: &SpreadPlan,
    backend: &Arc<dyn Backend>,
    primaries: &[(String, Vec<(u16, u16)>)],
    queue_names: &[String],
) -> Result<(f64, Vec<(String, f64)>), String> {
    let queue = Queue::new(Arc::clone(backend));
    let mut n = 0;
    while n < plan.jobs {
        let batch: Vec<NewJob> = (n..(n + 5000).min(plan.jobs))
            .map(|i| NewJob::new(&queue_names[i % queue_names.len()], "noop", (i,)).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        n += batch.len();
        queue.enqueue_batch(batch).await.map_err(|e| e.to_string())?;
    }
    let ledger = Arc::new(Ledger {
        runs: (0..plan.jobs).map(|_| AtomicU8::new(0)).collect(),
        done: AtomicUsize::new(0),
        all_done: Notify::new(),
    });
    let tasks = ledger_tasks(&ledger)?;
    let before = counts(primaries).await?;
    let stop = CancellationToken::new();
    let start = Instant::now();
    let handles: Vec<_> = (0..plan.workers)
        .map(|w| {
            let mut order: Vec<String> = queue_names.to_vec();
            order.rotate_left(w % queue_names.len());
            let config = WorkerConfig {
                queues: order,
                concurrency: plan.slots,
                ..quick_worker("unused")
            };
            let worker = Worker::new(Arc::clone(backend), Arc::clone(&tasks), config);
            let t = stop.clone();
            tokio::spawn(async move { worker.run_until(t).await })
        })
        .collect();
    let finished = tokio::time::timeout(RUN_LIMIT, ledger.all_done.notified()).await;
    let took = start.elapsed();
    stop.cancel();
    for h in handles {
        h.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    }
    let after = counts(primaries).await?;
    if finished.is_err() {
        return Err(format!(
            "ran {} of {} jobs within {RUN_LIMIT:?}",
            ledger.done.load(Ordering::Acquire),
            plan.jobs
        ));
    }
    check_exactly_once(&ledger)?;
    let per_job = primaries
        .iter()
        .zip(before.iter().zip(&after))
        .map(|((url, _), (b, a))| (url.clone(), a.saturating_sub(*b) as f64 / plan.jobs as f64))
        .collect();
    Ok((rate(plan.jobs, took), per_job))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Runs `plan` and renders the result as Markdown: every run, then the
/// medians per shard count with the spread and the ratio to the first
/// shard count's median.
pub async fn spread(plan: &SpreadPlan) -> Result<String, String> {
    let (mut conn, primaries) = primaries(&plan.cluster_url).await?;
    if primaries.is_empty() {
        return Err("the cluster reports no primary".into());
    }
    let most = plan.shard_counts.iter().copied().max().unwrap_or(1);
    // The same queue names for every shard count: balanced for the largest.
    let queue_names = balanced_queues(plan.queues.max(1), most);
    eprintln!(
        "   queues {queue_names:?}; primaries {:?}",
        primaries.iter().map(|p| &p.0).collect::<Vec<_>>()
    );
    let mut runs: Vec<ShardRun> = Vec::new();
    for round in 0..plan.rounds.max(1) {
        for &shards in &plan.shard_counts {
            let r = run_once(plan, shards, &mut conn, &primaries, &queue_names).await?;
            eprintln!(
                "   round {round}: {shards} shard(s) {:.0} jobs/s, commands per job by primary {:?}",
                r.rate, r.commands_per_job
            );
            runs.push(r);
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| shards | jobs/s median (min–max) | ratio to {} shard(s) | commands per job on each primary, busiest first (medians) | total |",
        plan.shard_counts.first().copied().unwrap_or(1)
    );
    let _ = writeln!(out, "|---:|---:|---:|---|---:|");
    let mut baseline = None;
    for &shards in &plan.shard_counts {
        let mine: Vec<&ShardRun> = runs.iter().filter(|r| r.shards == shards).collect();
        let rates: Vec<f64> = mine.iter().map(|r| r.rate).collect();
        let (lo, hi) = rates
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        let med = median(rates);
        let base = *baseline.get_or_insert(med);
        // Each run's primaries busiest first (a 1-shard namespace lands on
        // a different primary from run to run), then the median per rank.
        let ranked: Vec<Vec<f64>> = mine
            .iter()
            .map(|r| {
                let mut c: Vec<f64> = r.commands_per_job.iter().map(|c| c.1).collect();
                c.sort_by(|a, b| b.total_cmp(a));
                c
            })
            .collect();
        let per_primary: Vec<f64> = (0..primaries.len())
            .map(|p| median(ranked.iter().filter_map(|c| c.get(p).copied()).collect()))
            .collect();
        let cells: Vec<String> = per_primary.iter().map(|c| format!("{c:.2}")).collect();
        let _ = writeln!(
            out,
            "| {shards} | {med:.0} ({lo:.0}–{hi:.0}) | {:.2}× | {} | {:.2} |",
            med / base.max(1e-9),
            cells.join(" / "),
            per_primary.iter().sum::<f64>()
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_queue_names_fill_every_shard_equally() {
        let names = balanced_queues(6, 3);
        assert_eq!(names.len(), 6);
        let mut per = [0; 3];
        for n in &names {
            per[resq_redis::shard::shard_index(n, 3)] += 1;
        }
        assert_eq!(per, [2, 2, 2]);
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
