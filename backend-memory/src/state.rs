//! The data behind the single state lock, and the change counter that tells
//! the snapshot saver whether there is anything new to write.

use crate::delayed::Schedule;
use crate::stats::Stats;
use crate::worker::Registry;
use crate::working::WorkingTable;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// Everything that multi-structure operations touch together. It lives in
/// one `parking_lot::Mutex`, and each backend method is one critical section.
///
/// `queues` stands for both Resque's `queue:<q>` lists and its `queues` set:
/// a name is present from its first push until `delete_queue`, and a queue
/// emptied by pops keeps its (empty) list, as the set keeps its member.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct State {
    /// Queue lists by name; the key set is the `queues` set.
    pub(crate) queues: HashMap<String, VecDeque<String>>,
    /// Working-on records.
    pub(crate) working: WorkingTable,
    /// Registered workers, their start times and pings.
    pub(crate) registry: Registry,
    /// Counters.
    pub(crate) stats: Stats,
    /// The failed list.
    pub(crate) failed: VecDeque<String>,
    /// Delayed buckets and their per-payload index.
    pub(crate) schedule: Schedule,
    /// When each job was enqueued (epoch ms), by queue, aligned with the
    /// queue's tail: the `k` times of a queue belong to its last `k` jobs
    /// (`k` is the whole length unless jobs
    /// came from a version 1 snapshot, which kept no times; such jobs have
    /// unknown enqueue times). Saved beside the state (snapshot version 2).
    #[serde(skip)]
    pub(crate) enqueued: HashMap<String, VecDeque<i64>>,
    /// The paused queues' names. Saved beside the state (snapshot version 2).
    #[serde(skip)]
    pub(crate) paused: BTreeSet<String>,
    /// Flow-control limits by queue. Not saved in snapshots.
    #[serde(skip)]
    pub(crate) limits: BTreeMap<String, resq_core::QueueLimits>,
    /// Start instants of rate-limited queues within their window, oldest
    /// first (see `flow.rs`). Not saved.
    #[serde(skip)]
    pub(crate) starts: HashMap<String, VecDeque<tokio::time::Instant>>,
    /// Start instants of rate-limited task classes within their window,
    /// oldest first (see `flow.rs`). Not saved.
    #[serde(skip)]
    pub(crate) task_starts: HashMap<String, VecDeque<tokio::time::Instant>>,
    /// The task slots held by running jobs of capped task classes: worker
    /// slot to class. Not saved (a restarted store has no running jobs).
    #[serde(skip)]
    pub(crate) task_slots: HashMap<resq_core::WorkerId, String>,
    /// Bumped by every change; not saved.
    #[serde(skip)]
    changes: u64,
}

impl State {
    /// Notes a change, for the snapshot saver.
    pub(crate) fn touch(&mut self) {
        self.changes = self.changes.wrapping_add(1);
    }

    /// How many changes there have been since start-up.
    pub(crate) fn changes(&self) -> u64 {
        self.changes
    }

    /// `RPUSH queue:<queue> payload` plus `SADD queues <queue>`; records
    /// the enqueue time.
    pub(crate) fn push_tail(&mut self, queue: &str, payload: String) {
        let now = resq_core::time::now_ms();
        match self.queues.get_mut(queue) {
            Some(list) => list.push_back(payload),
            None => {
                self.queues.insert(queue.to_owned(), VecDeque::from([payload]));
            }
        }
        match self.enqueued.get_mut(queue) {
            Some(times) => times.push_back(now),
            None => {
                self.enqueued.insert(queue.to_owned(), VecDeque::from([now]));
            }
        }
    }

    /// `LPUSH queue:<queue> payload` plus `SADD queues <queue>`; records
    /// the enqueue time when every job of the queue has one.
    pub(crate) fn push_head(&mut self, queue: &str, payload: String) {
        let now = resq_core::time::now_ms();
        let len = match self.queues.get_mut(queue) {
            Some(list) => {
                list.push_front(payload);
                list.len()
            }
            None => {
                self.queues.insert(queue.to_owned(), VecDeque::from([payload]));
                1
            }
        };
        let times = self.enqueued.entry(queue.to_owned()).or_default();
        if times.len() + 1 == len {
            times.push_front(now);
        }
    }

    /// `LPOP queue:<queue>`: the head job and its enqueue time, if known.
    pub(crate) fn pop_head(&mut self, queue: &str) -> Option<(String, Option<i64>)> {
        let list = self.queues.get_mut(queue)?;
        let len = list.len();
        let payload = list.pop_front()?;
        let at = match self.enqueued.get_mut(queue) {
            Some(times) if times.len() == len => times.pop_front(),
            _ => None,
        };
        Some((payload, at))
    }

    /// The enqueue time of `queue`'s head job, if it has one and it is known.
    pub(crate) fn head_enqueued(&self, queue: &str) -> Option<i64> {
        let len = self.queues.get(queue)?.len();
        let times = self.enqueued.get(queue)?;
        if len > 0 && times.len() == len {
            times.front().copied()
        } else {
            None
        }
    }

    /// Keeps the jobs of `queue` for which `keep` (called once per job,
    /// head first) is true, and their enqueue times. Returns how many went.
    pub(crate) fn retain_jobs(&mut self, queue: &str, mut keep: impl FnMut(&str) -> bool) -> u64 {
        let Some(list) = self.queues.get_mut(queue) else {
            return 0;
        };
        let times = self.enqueued.entry(queue.to_owned()).or_default();
        // Jobs before `unknown` have no recorded time.
        let unknown = list.len().saturating_sub(times.len());
        let mut kept_jobs = VecDeque::with_capacity(list.len());
        let mut kept_times = VecDeque::with_capacity(times.len());
        let mut removed = 0u64;
        for (i, payload) in std::mem::take(list).into_iter().enumerate() {
            let at = if i >= unknown {
                times.get(i - unknown).copied()
            } else {
                None
            };
            if keep(&payload) {
                kept_jobs.push_back(payload);
                if let Some(at) = at {
                    kept_times.push_back(at);
                }
            } else {
                removed += 1;
            }
        }
        *list = kept_jobs;
        *times = kept_times;
        removed
    }

    /// Deletes `queue`'s list, name and enqueue times.
    pub(crate) fn delete_queue(&mut self, queue: &str) -> Option<VecDeque<String>> {
        self.enqueued.remove(queue);
        self.queues.remove(queue)
    }

    /// Whether any of `queues` holds a job; `*` stands for every queue.
    pub(crate) fn any_ready(&self, queues: &[String]) -> bool {
        queues.iter().any(|q| {
            if q == "*" {
                self.queues.values().any(|list| !list.is_empty())
            } else {
                self.queues.get(q.as_str()).is_some_and(|list| !list.is_empty())
            }
        })
    }
}
