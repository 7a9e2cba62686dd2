//! Redis Cluster, sharded mode (`shards=N`), beyond the conformance suite
//! (which runs whole on it as `redis_sharded::…`): each queue's keys live
//! only under its shard's tag, claims keep the priority order across
//! shards, the shards' slots can spread over every primary, and a
//! namespace refuses another number of shards than it was created with.
//!
//! The cluster is `ops/redis-cluster.sh start`'s (or `RESQ_REDIS_CLUSTER_URL`).
//! Without it the tests print `SKIP …`, unless `RESQ_REQUIRE_BACKENDS=1`.

mod common;

use common::required;
use resq_core::{Backend, Queue, QueueStore, StatsStore, WorkerId, WorkerRegistry};
use resq_redis::shard::shard_index;
use resq_redis::testing::{cluster_url, sharded_redis_in, unique_namespace};
use resq_redis::{shard_namespace, RedisConfig, ShardedRedis};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A sharded backend on `base` with `shards` shards, or `None` (after
/// printing why) when the cluster is unreachable.
async fn backend(test: &str, base: &str, shards: u32) -> Option<ShardedRedis> {
    match sharded_redis_in(base, shards).await {
        Ok(b) => Some(b),
        Err(e) => {
            assert!(!required(), "{test}: {e}");
            eprintln!("SKIP {test}: {e}");
            None
        }
    }
}

/// A connection to the first seed node that answers.
async fn seed() -> redis::aio::MultiplexedConnection {
    let config = RedisConfig::from_url(&cluster_url()).unwrap();
    for node in &config.cluster_nodes {
        if let Ok(client) = redis::Client::open(node.as_str()) {
            if let Ok(c) = client.get_multiplexed_async_connection().await {
                return c;
            }
        }
    }
    panic!("no seed node of the cluster answers");
}

/// The primaries as `(host:port, slot ranges)`, from `CLUSTER SLOTS`.
async fn primaries() -> Vec<(String, Vec<(u16, u16)>)> {
    let mut c = seed().await;
    let slots: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut c).await.unwrap();
    let mut by_node: BTreeMap<String, Vec<(u16, u16)>> = BTreeMap::new();
    for range in slots {
        let redis::Value::Array(fields) = range else { continue };
        let (Some(start), Some(end), Some(redis::Value::Array(primary))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            continue;
        };
        let start: u16 = redis::from_redis_value(start.clone()).unwrap();
        let end: u16 = redis::from_redis_value(end.clone()).unwrap();
        let host: String = redis::from_redis_value(primary[0].clone()).unwrap();
        let port: u16 = redis::from_redis_value(primary[1].clone()).unwrap();
        by_node.entry(format!("{host}:{port}")).or_default().push((start, end));
    }
    by_node.into_iter().collect()
}

/// The primary owning `slot`.
fn owner(primaries: &[(String, Vec<(u16, u16)>)], slot: u16) -> String {
    primaries
        .iter()
        .find(|(_, ranges)| ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
        .map(|(addr, _)| addr.clone())
        .unwrap_or_else(|| panic!("no primary owns slot {slot}"))
}

async fn keyslot(key: &str) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut seed().await)
        .await
        .unwrap()
}

/// Every key under `{<base>:…}` on every primary, as `(primary, key)`.
async fn keys_of(base: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (addr, _) in primaries().await {
        let mut c = redis::Client::open(format!("redis://{addr}"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let pattern = format!("\\{{{base}:*");
        let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut c).await.unwrap();
        out.extend(keys.into_iter().map(|k| (addr.clone(), k)));
    }
    out
}

/// `n` queue names, one on each of `n` shards (searched in `q0`, `q1`, …).
fn one_queue_per_shard(n: usize) -> Vec<String> {
    let mut found: BTreeMap<usize, String> = BTreeMap::new();
    for i in 0..1000 {
        let q = format!("q{i}");
        found.entry(shard_index(&q, n)).or_insert(q);
        if found.len() == n {
            break;
        }
    }
    assert_eq!(found.len(), n, "no queue name for some shard");
    found.into_values().collect()
}

#[tokio::test]
async fn a_queues_keys_live_only_under_its_shards_tag() {
    let base = unique_namespace();
    let Some(backend) = backend("a_queues_keys_live_only_under_its_shards_tag", &base, 3).await else {
        return;
    };
    let backend = Arc::new(backend);
    let queue = Queue::new(backend.clone() as Arc<dyn Backend>);
    let names: Vec<String> = (0..9).map(|i| format!("mail-{i}")).collect();
    for q in &names {
        queue.enqueue(q, "send", (q.as_str(),)).await.unwrap();
        queue.enqueue_at(1_000, q, "later", (1,)).await.unwrap();
        backend.pause_queue(q).await.unwrap();
    }
    let keys = keys_of(&base).await;
    let shards_used: BTreeSet<usize> = names.iter().map(|q| backend.shard_of(q)).collect();
    assert!(shards_used.len() > 1, "nine queues all on one shard: {shards_used:?}");
    for q in &names {
        let own = shard_namespace(&base, backend.shard_of(q));
        let holding: Vec<&String> = keys
            .iter()
            .map(|(_, k)| k)
            .filter(|k| k.ends_with(&format!(":queue:{q}")))
            .collect();
        assert_eq!(holding, [&format!("{own}:queue:{q}")], "{q}");
        let delayed: Vec<&String> = keys
            .iter()
            .map(|(_, k)| k)
            .filter(|k| k.contains(":timestamps:") && k.contains(&format!("\"queue\":\"{q}\"")))
            .collect();
        assert!(
            !delayed.is_empty() && delayed.iter().all(|k| k.starts_with(&format!("{own}:"))),
            "{q}: {delayed:?}"
        );
    }
    // Every key sits in its own shard's slot, on that slot's primary.
    let primaries = primaries().await;
    for (addr, key) in &keys {
        let tag_end = key.find('}').unwrap();
        let slot = keyslot(&key[..=tag_end]).await;
        assert_eq!(keyslot(key).await, slot, "{key}");
        assert_eq!(&owner(&primaries, slot), addr, "{key}");
    }
    assert_eq!(backend.queues().await.unwrap().len(), names.len());
    assert_eq!(backend.paused_queues().await.unwrap().len(), names.len());
}

#[tokio::test]
async fn claims_keep_the_priority_order_across_shards() {
    let base = unique_namespace();
    let Some(backend) = backend("claims_keep_the_priority_order_across_shards", &base, 3).await else {
        return;
    };
    let queues = one_queue_per_shard(3);
    let shards: BTreeSet<usize> = queues.iter().map(|q| backend.shard_of(q)).collect();
    assert_eq!(shards.len(), 3, "{queues:?}");
    // Pushed lowest priority first.
    for q in queues.iter().rev() {
        backend
            .push(q, &format!(r#"{{"class":"C","queue":"{q}","args":[]}}"#))
            .await
            .unwrap();
        backend
            .push(q, &format!(r#"{{"class":"C","queue":"{q}","args":[2]}}"#))
            .await
            .unwrap();
    }
    let w = WorkerId::new("host:1+1", &queues);
    let mut order = Vec::new();
    while let Some(c) = backend.claim(&w, &queues, "now").await.unwrap() {
        order.push(c.queue.clone());
        backend.complete(&w, resq_core::Outcome::Success).await.unwrap();
    }
    let want: Vec<String> = queues.iter().flat_map(|q| [q.clone(), q.clone()]).collect();
    assert_eq!(order, want);
    assert_eq!(backend.stat("processed").await.unwrap(), 6);

    // A batch of four slots over the same three shards: a prefix of the
    // slots, in priority order, across two shards' runs.
    for q in queues.iter().rev() {
        backend
            .push(q, &format!(r#"{{"class":"C","queue":"{q}","args":[]}}"#))
            .await
            .unwrap();
    }
    backend.push(&queues[1], r#"{"class":"C","args":[9]}"#).await.unwrap();
    let slots: Vec<WorkerId> = (0..4).map(|i| WorkerId::new(format!("host:1+{i}"), &queues)).collect();
    let got = backend.claim_batch(&slots, &queues, "now").await.unwrap();
    let got: Vec<(usize, String)> = got.into_iter().map(|(i, c)| (i, c.queue)).collect();
    assert_eq!(
        got,
        [
            (0, queues[0].clone()),
            (1, queues[1].clone()),
            (2, queues[1].clone()),
            (3, queues[2].clone())
        ]
    );
    // Each slot's completion finds its shard.
    let done: Vec<(WorkerId, resq_core::Outcome)> =
        slots.iter().map(|w| (w.clone(), resq_core::Outcome::Success)).collect();
    backend.complete_batch(&done).await.unwrap();
    assert_eq!(backend.working_on_many(&slots).await.unwrap(), vec![None; 4]);
    assert_eq!(backend.stat("processed").await.unwrap(), 10);
}

#[tokio::test]
async fn the_shards_can_spread_over_every_primary() {
    // Probe for a base namespace whose three tags hash to slots of three
    // different primaries.
    let primaries = primaries().await;
    assert!(
        primaries.len() >= 3,
        "the test cluster has {} primaries",
        primaries.len()
    );
    let mut chosen = None;
    for k in 0..200 {
        let base = format!("{}-spread{k}", unique_namespace());
        let mut owners = Vec::new();
        for i in 0..3 {
            owners.push(owner(&primaries, keyslot(&shard_namespace(&base, i)).await));
        }
        if owners.iter().collect::<BTreeSet<_>>().len() == 3 {
            chosen = Some((base, owners));
            break;
        }
    }
    let (base, owners) = chosen.expect("no base namespace in 200 spreads its tags over three primaries");
    eprintln!("base {base}: shard 0, 1, 2 on primaries {owners:?}");
    let Some(backend) = backend("the_shards_can_spread_over_every_primary", &base, 3).await else {
        return;
    };
    let queue = Queue::new(Arc::new(backend) as Arc<dyn Backend>);
    for q in one_queue_per_shard(3) {
        queue.enqueue(&q, "send", (1,)).await.unwrap();
    }
    let keys = keys_of(&base).await;
    let used: BTreeSet<&String> = keys
        .iter()
        .filter(|(_, k)| k.contains(":queue:"))
        .map(|(a, _)| a)
        .collect();
    assert_eq!(used.len(), 3, "queue keys on {used:?}: {keys:?}");
}

#[tokio::test]
async fn another_number_of_shards_is_refused() {
    let base = unique_namespace();
    let Some(first) = backend("another_number_of_shards_is_refused", &base, 3).await else {
        return;
    };
    let again = sharded_redis_in(&base, 3).await;
    assert!(again.is_ok(), "{:?}", again.err());
    let e = sharded_redis_in(&base, 4)
        .await
        .expect_err("shards=4 on a 3-shard namespace");
    assert!(
        e.contains("created with shards=3") && e.contains("this URL says shards=4"),
        "{e}"
    );
    assert!(e.contains(&format!("{}:resq:shards", shard_namespace(&base, 0))), "{e}");
    drop(again);
    drop(first);
}
