//! Flow control's stored form on Redis (see `scripts::flow_lua` for how
//! the claims enforce it): the hash `<ns>:resq:limits`, one field per
//! limited queue, value `"<max> <period ms> <cap>"` with 0 for "none".
//!
//! Per task class (`TaskFlowStore`): one script (`ACQUIRE_TASK_START`)
//! over the class's rate log `<ns>:resq:task_rate:<class>` and the hash
//! `<ns>:resq:task_slots` (worker member -> class), which `clean_worker`
//! also releases the worker's field of.

use crate::scripts::ACQUIRE_TASK_START;
use crate::{RedisBackend, RedisResult};
use async_trait::async_trait;
use resq_core::flow::{TaskAdmission, TaskLimits};
use resq_core::{Error, QueueLimits, RateLimit, Result, TaskFlowStore, WorkerId};
use std::time::Duration;

/// A queue's limits as the limits hash stores them.
pub(crate) fn encode(limits: &QueueLimits) -> String {
    let (max, period) = limits.rate.map_or((0, 0), |r| (r.max, r.period_ms()));
    format!("{max} {period} {}", limits.concurrency.unwrap_or(0))
}

/// Reads one stored value back; `None` for a value resq did not write
/// (the claims treat it as "no limits" too).
pub(crate) fn decode(value: &str) -> Option<QueueLimits> {
    let mut parts = value.split(' ');
    let max: u32 = parts.next()?.parse().ok()?;
    let period: u64 = parts.next()?.parse().ok()?;
    let cap: u32 = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    let limits = QueueLimits {
        rate: (max > 0 && period > 0).then(|| RateLimit::new(max, Duration::from_millis(period))),
        concurrency: (cap > 0).then_some(cap),
    };
    (!limits.is_unlimited()).then_some(limits)
}

/// Every readable field of the limits hash `key`, sorted by queue; other
/// fields are skipped with a log line naming the key.
pub(crate) fn decode_all(key: &str, fields: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(String, QueueLimits)> {
    let mut out: Vec<(String, QueueLimits)> = fields
        .into_iter()
        .filter_map(|(queue, value)| {
            let limits = std::str::from_utf8(&value).ok().and_then(decode);
            match (String::from_utf8(queue), limits) {
                (Ok(queue), Some(limits)) => Some((queue, limits)),
                (queue, _) => {
                    let field = queue.unwrap_or_else(|e| resq_core::failed::escape_bytes(e.as_bytes()));
                    tracing::warn!(target: "resq::redis", key, field = %field,
                        "skipping a queue-limits field resq did not write");
                    None
                }
            }
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[async_trait]
impl TaskFlowStore for RedisBackend {
    async fn acquire_task_start(&self, class: &str, limits: &TaskLimits, worker: &WorkerId) -> Result<TaskAdmission> {
        limits.check()?;
        if limits.is_unlimited() {
            return Ok(TaskAdmission::Admitted);
        }
        let (max, period) = limits.rate.map_or((0, 0), |r| (r.max, r.period_ms()));
        let rkey = self.keys.task_rate(class);
        let reply: Vec<i64> = ACQUIRE_TASK_START
            .key(&rkey)
            .key(self.keys.task_slots())
            .arg(class)
            .arg(worker.member())
            .arg(max)
            .arg(period)
            .arg(limits.concurrency.unwrap_or(0))
            .invoke_async(&mut self.conn())
            .await
            .rd_at(self, &rkey)
            .await?;
        match reply.as_slice() {
            [0, _] => Ok(TaskAdmission::Admitted),
            [1, ms] => Ok(TaskAdmission::RateLimited(Duration::from_millis(
                u64::try_from(*ms).unwrap_or(0),
            ))),
            [2, _] => Ok(TaskAdmission::AtCapacity),
            other => Err(Error::Decode {
                what: "a task-start admission",
                reason: format!("unexpected reply {other:?}"),
            }),
        }
    }

    async fn release_task_slot(&self, worker: &WorkerId) -> Result<bool> {
        let key = self.keys.task_slots();
        let n: i64 = redis::cmd("HDEL")
            .arg(&key)
            .arg(worker.member())
            .query_async(&mut self.conn())
            .await
            .rd_at(self, &key)
            .await?;
        Ok(n > 0)
    }

    async fn task_slots_held(&self, class: &str) -> Result<u64> {
        let key = self.keys.task_slots();
        let values: Vec<Vec<u8>> = redis::cmd("HVALS")
            .arg(&key)
            .query_async(&mut self.conn())
            .await
            .rd_at(self, &key)
            .await?;
        let n = values.iter().filter(|v| v.as_slice() == class.as_bytes()).count();
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_others() {
        let both = QueueLimits::new().rate(5, Duration::from_millis(1500)).concurrency(3);
        assert_eq!(encode(&both), "5 1500 3");
        assert_eq!(decode(&encode(&both)), Some(both));
        let cap = QueueLimits::new().concurrency(2);
        assert_eq!(decode(&encode(&cap)), Some(cap));
        assert_eq!(decode("0 0 0"), None);
        assert_eq!(decode("x 1 2"), None);
        assert_eq!(decode("1 2 3 4"), None);
        let all = decode_all(
            "k",
            vec![(b"b".to_vec(), b"1 1 0".to_vec()), (b"a".to_vec(), b"junk".to_vec())],
        );
        assert_eq!(all.len(), 1);
    }
}
