//! The data behind the single state lock, and the change counter that tells
//! the snapshot saver whether there is anything new to write.

use crate::delayed::Schedule;
use crate::stats::Stats;
use crate::worker::Registry;
use crate::working::WorkingTable;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

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

    /// `RPUSH queue:<queue> payload` plus `SADD queues <queue>`.
    pub(crate) fn push_tail(&mut self, queue: &str, payload: String) {
        match self.queues.get_mut(queue) {
            Some(list) => list.push_back(payload),
            None => {
                self.queues.insert(queue.to_owned(), VecDeque::from([payload]));
            }
        }
    }

    /// `LPUSH queue:<queue> payload` plus `SADD queues <queue>`.
    pub(crate) fn push_head(&mut self, queue: &str, payload: String) {
        match self.queues.get_mut(queue) {
            Some(list) => list.push_front(payload),
            None => {
                self.queues.insert(queue.to_owned(), VecDeque::from([payload]));
            }
        }
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
