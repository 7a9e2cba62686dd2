//! Working-on records: what each worker is running right now.
//!
//! A worker claims and completes jobs in a tight loop, so its record's slot
//! is kept when the job completes and reused by the next claim: the strings
//! keep their buffers and the map keeps its key, and a claim allocates
//! only for the copy of the payload it hands back.

use resq_core::{WorkerId, WorkingOn};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashMap;

/// One worker's slot: its record, meaningful only while `active`.
#[derive(Clone, Debug)]
struct Slot {
    active: bool,
    record: WorkingOn,
}

/// Every worker's working-on record (Resque's `worker:<name>:<queues>` keys).
#[derive(Clone, Debug, Default)]
pub(crate) struct WorkingTable {
    slots: HashMap<WorkerId, Slot>,
}

impl WorkingTable {
    /// Records that `worker` runs `payload` from `queue` (`SET`: any
    /// earlier record is replaced). Returns the replaced payload, if any, so
    /// the caller can drop it outside the lock.
    pub(crate) fn start(&mut self, worker: &WorkerId, queue: &str, run_at: &str, payload: String) -> Option<String> {
        if let Some(slot) = self.slots.get_mut(worker) {
            let was_active = std::mem::replace(&mut slot.active, true);
            let record = &mut slot.record;
            if record.worker != worker.name {
                record.worker.clone_from(&worker.name);
            }
            if record.queue != queue {
                record.queue.clear();
                record.queue.push_str(queue);
            }
            record.run_at.clear();
            record.run_at.push_str(run_at);
            let old = std::mem::replace(&mut record.payload, payload);
            return was_active.then_some(old);
        }
        let record = WorkingOn {
            worker: worker.name.clone(),
            queue: queue.to_owned(),
            run_at: run_at.to_owned(),
            payload,
        };
        self.slots.insert(worker.clone(), Slot { active: true, record });
        None
    }

    /// Ends `worker`'s record, keeping its slot for the next claim. Returns
    /// the payload it held, to be dropped outside the lock.
    pub(crate) fn finish(&mut self, worker: &WorkerId) -> Option<String> {
        let slot = self.slots.get_mut(worker)?;
        if !std::mem::replace(&mut slot.active, false) {
            return None;
        }
        Some(std::mem::take(&mut slot.record.payload))
    }

    /// `worker`'s current record.
    pub(crate) fn get(&self, worker: &WorkerId) -> Option<&WorkingOn> {
        self.slots.get(worker).filter(|s| s.active).map(|s| &s.record)
    }

    /// How many active records hold a job of `queue`, not counting the
    /// records of `except`.
    pub(crate) fn running_in(&self, queue: &str, except: &[WorkerId]) -> usize {
        self.slots
            .iter()
            .filter(|(id, slot)| slot.active && slot.record.queue == queue && !except.contains(id))
            .count()
    }

    /// Removes `worker`'s slot and returns its record if it was active.
    pub(crate) fn remove(&mut self, worker: &WorkerId) -> Option<WorkingOn> {
        self.slots.remove(worker).filter(|s| s.active).map(|s| s.record)
    }
}

// Snapshots hold the active records only, as a list of pairs.

impl Serialize for WorkingTable {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let active: Vec<(&WorkerId, &WorkingOn)> = self
            .slots
            .iter()
            .filter(|(_, slot)| slot.active)
            .map(|(id, slot)| (id, &slot.record))
            .collect();
        active.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for WorkingTable {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let active: Vec<(WorkerId, WorkingOn)> = Vec::deserialize(deserializer)?;
        let slots = active
            .into_iter()
            .map(|(id, record)| (id, Slot { active: true, record }))
            .collect();
        Ok(WorkingTable { slots })
    }
}
