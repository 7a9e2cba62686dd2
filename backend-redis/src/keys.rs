//! Resque's key layout under a namespace (spec §1.2).

use resq_core::WorkerId;

/// Builds physical keys: `<namespace>:<logical key>`, or the bare logical
/// key when the namespace is empty (node-resque drops empty segments).
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(namespace: &str) -> Self {
        let prefix = if namespace.trim().is_empty() {
            String::new()
        } else {
            format!("{namespace}:")
        };
        Keys { prefix }
    }

    /// The prefix including its `:` (empty without a namespace).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<ns>:<logical>`.
    pub(crate) fn key(&self, logical: &str) -> String {
        format!("{}{logical}", self.prefix)
    }

    /// `<ns>:<logical prefix><bytes>` as bytes, for key names built from
    /// bytes read from Redis (such as a schedule member or an item).
    pub(crate) fn raw(&self, logical_prefix: &str, bytes: &[u8]) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.prefix.len() + logical_prefix.len() + bytes.len());
        key.extend_from_slice(self.prefix.as_bytes());
        key.extend_from_slice(logical_prefix.as_bytes());
        key.extend_from_slice(bytes);
        key
    }

    /// The number of shards a sharded namespace was created with (on shard
    /// 0 only; see `crate::shard`).
    pub(crate) fn shard_count(&self) -> String {
        self.key("resq:shards")
    }

    pub(crate) fn queues(&self) -> String {
        self.key("queues")
    }

    /// resq's own set of paused queue names; other Resque clients ignore it.
    pub(crate) fn paused(&self) -> String {
        self.key("resq:paused")
    }

    /// resq's flow-control limits (a hash, field: queue name, value:
    /// `"<max> <period ms> <cap>"`, 0 for none); other Resque clients
    /// ignore it.
    pub(crate) fn limits(&self) -> String {
        self.key("resq:limits")
    }

    /// The concurrency slots held by running jobs of capped queues (a hash,
    /// field: the worker's `workers` member, value: the queue).
    pub(crate) fn slots(&self) -> String {
        self.key("resq:slots")
    }

    /// The task slots held by running jobs of capped task classes (a hash,
    /// field: the worker's `workers` member, value: the task class).
    pub(crate) fn task_slots(&self) -> String {
        self.key("resq:task_slots")
    }

    /// The start times of rate-limited task class `class` within its
    /// window (a sorted set scored by the server's time in µs).
    pub(crate) fn task_rate(&self, class: &str) -> String {
        format!("{}resq:task_rate:{class}", self.prefix)
    }

    /// The start times of rate-limited queue `q` within its window (a sorted
    /// set scored by the server's time in µs).
    pub(crate) fn rate(&self, q: &str) -> String {
        format!("{}resq:rate:{q}", self.prefix)
    }

    /// resq's enqueue-time records of queue `q` (a list aligned with the
    /// queue's, see `scripts::record_lua`); other Resque clients ignore it.
    pub(crate) fn enqueued(&self, q: &str) -> String {
        format!("{}resq:enqueued:{q}", self.prefix)
    }

    pub(crate) fn queue(&self, q: &str) -> String {
        format!("{}queue:{q}", self.prefix)
    }

    pub(crate) fn delayed(&self, secs: i64) -> String {
        format!("{}delayed:{secs}", self.prefix)
    }

    pub(crate) fn schedule(&self) -> String {
        self.key("delayed_queue_schedule")
    }

    pub(crate) fn timestamps(&self, item: &str) -> String {
        format!("{}timestamps:{item}", self.prefix)
    }

    pub(crate) fn stat(&self, name: &str) -> String {
        format!("{}stat:{name}", self.prefix)
    }

    pub(crate) fn workers(&self) -> String {
        self.key("workers")
    }

    pub(crate) fn working(&self, w: &WorkerId) -> String {
        format!("{}worker:{}", self.prefix, w.member())
    }

    pub(crate) fn started(&self, w: &WorkerId) -> String {
        format!("{}worker:{}:started", self.prefix, w.member())
    }

    /// Ruby resque's `workers:heartbeat` hash (field: worker id).
    pub(crate) fn heartbeats(&self) -> String {
        self.key("workers:heartbeat")
    }

    pub(crate) fn ping(&self, name: &str) -> String {
        format!("{}worker:ping:{name}", self.prefix)
    }

    pub(crate) fn failed(&self) -> String {
        self.key("failed")
    }

    pub(crate) fn leader(&self) -> String {
        self.key("resque_scheduler_leader_lock")
    }

    /// The pub/sub channel resq producers announce new jobs on.
    pub(crate) fn wakeup_channel(&self) -> String {
        format!("{}resq:wakeup", self.prefix)
    }

    /// The pub/sub channel cancel requests are announced on (the member
    /// of the worker whose job is to stop).
    pub(crate) fn cancel_channel(&self) -> String {
        format!("{}resq:cancel", self.prefix)
    }

    /// resq's cancel mark for a worker (`<ns>:resq:cancel:<member>`, a
    /// JSON string with a TTL); other Resque clients ignore it.
    pub(crate) fn cancel_mark(&self, w: &WorkerId) -> String {
        self.key(&format!("resq:cancel:{}", w.member()))
    }

    /// A `SCAN MATCH` pattern for `<ns>:<logical_prefix>*`, with the glob
    /// characters of the namespace escaped.
    pub(crate) fn pattern(&self, logical_prefix: &str) -> String {
        let mut out = String::with_capacity(self.prefix.len() + logical_prefix.len() + 1);
        for c in self.prefix.chars().chain(logical_prefix.chars()) {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('*');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_resque() {
        let k = Keys::new("resque");
        let w = WorkerId::new("host:1+2", &["math".to_owned(), "low".to_owned()]);
        assert_eq!(k.queue("math"), "resque:queue:math");
        assert_eq!(k.enqueued("math"), "resque:resq:enqueued:math");
        assert_eq!(k.rate("math"), "resque:resq:rate:math");
        assert_eq!(k.limits(), "resque:resq:limits");
        assert_eq!(k.slots(), "resque:resq:slots");
        assert_eq!(k.task_slots(), "resque:resq:task_slots");
        assert_eq!(k.task_rate("Mail"), "resque:resq:task_rate:Mail");
        assert_eq!(k.delayed(10), "resque:delayed:10");
        assert_eq!(k.timestamps("{}"), "resque:timestamps:{}");
        assert_eq!(k.working(&w), "resque:worker:host:1+2:math,low");
        assert_eq!(k.started(&w), "resque:worker:host:1+2:math,low:started");
        assert_eq!(k.ping("host:1+2"), "resque:worker:ping:host:1+2");
        assert_eq!(k.stat("processed:host:1+2"), "resque:stat:processed:host:1+2");
        assert_eq!(k.leader(), "resque:resque_scheduler_leader_lock");
        assert_eq!(Keys::new("").key("thing"), "thing");
        assert_eq!(Keys::new("a*b").pattern("stat:"), "a\\*b:stat:*");
    }
}
