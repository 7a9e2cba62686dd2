//! The worker registry (registration, start times, liveness pings) and the
//! [`WorkerRegistry`] implementation, including the atomic clean-up of a
//! dead or stopped worker.

use crate::MemoryBackend;
use async_trait::async_trait;
use resq_core::failed::{encode_entry, FailedJob};
use resq_core::{Cleaned, Orphan, Result, WorkerId, WorkerRegistry, WorkerTimes, WorkingOn};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// A worker's last liveness ping (Resque's `worker:ping:<name>`, which is
/// keyed by name and carries the queues).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Ping {
    at_ms: i64,
    queues: String,
}

/// Registered workers with their start times (Resque's `workers` set and
/// `worker:<id>:started` keys, always written and deleted together), and
/// pings by worker name.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Registry {
    started: BTreeMap<WorkerId, i64>,
    pings: HashMap<String, Ping>,
}

impl Registry {
    /// `SET worker:ping:<name>`: records a ping whether or not the worker is
    /// registered.
    fn ping(&mut self, worker: &WorkerId, now_ms: i64) {
        match self.pings.get_mut(worker.name.as_str()) {
            Some(ping) => {
                ping.at_ms = now_ms;
                if ping.queues != worker.queues {
                    ping.queues.clone_from(&worker.queues);
                }
            }
            None => {
                let ping = Ping {
                    at_ms: now_ms,
                    queues: worker.queues.clone(),
                };
                self.pings.insert(worker.name.clone(), ping);
            }
        }
    }
}

#[async_trait]
impl WorkerRegistry for MemoryBackend {
    async fn register_worker(&self, worker: &WorkerId, now_ms: i64) -> Result<()> {
        let mut st = self.state.lock();
        st.registry.started.insert(worker.clone(), now_ms);
        st.registry.ping(worker, now_ms);
        st.touch();
        Ok(())
    }

    async fn ping_worker(&self, worker: &WorkerId, now_ms: i64) -> Result<()> {
        // Not a change for the snapshot saver: a ping alone does not make an
        // idle store worth rewriting. Pings are saved with the next change.
        self.state.lock().registry.ping(worker, now_ms);
        Ok(())
    }

    async fn register_workers(&self, workers: &[WorkerId], now_ms: i64) -> Result<()> {
        let mut st = self.state.lock();
        for w in workers {
            st.registry.started.insert(w.clone(), now_ms);
            st.registry.ping(w, now_ms);
        }
        st.touch();
        Ok(())
    }

    async fn ping_workers(&self, workers: &[WorkerId], now_ms: i64) -> Result<()> {
        let mut st = self.state.lock();
        for w in workers {
            st.registry.ping(w, now_ms);
        }
        Ok(())
    }

    async fn working_on_many(&self, workers: &[WorkerId]) -> Result<Vec<Option<WorkingOn>>> {
        let st = self.state.lock();
        Ok(workers.iter().map(|w| st.working.get(w).cloned()).collect())
    }

    async fn workers(&self) -> Result<Vec<WorkerId>> {
        Ok(self.state.lock().registry.started.keys().cloned().collect())
    }

    async fn worker_started(&self, worker: &WorkerId) -> Result<Option<i64>> {
        Ok(self.state.lock().registry.started.get(worker).copied())
    }

    async fn working_on(&self, worker: &WorkerId) -> Result<Option<WorkingOn>> {
        Ok(self.state.lock().working.get(worker).cloned())
    }

    async fn worker_times(&self, workers: &[WorkerId]) -> Result<Vec<WorkerTimes>> {
        let st = self.state.lock();
        Ok(workers
            .iter()
            .map(|w| WorkerTimes {
                started_ms: st.registry.started.get(w).copied(),
                ping_ms: st.registry.pings.get(w.name.as_str()).map(|p| p.at_ms),
            })
            .collect())
    }

    async fn stale_workers(&self, cutoff_ms: i64) -> Result<Vec<WorkerId>> {
        let st = self.state.lock();
        let mut stale: Vec<WorkerId> = st
            .registry
            .pings
            .iter()
            .filter(|(_, ping)| ping.at_ms < cutoff_ms)
            .map(|(name, ping)| WorkerId {
                name: name.clone(),
                queues: ping.queues.clone(),
            })
            .collect();
        drop(st);
        stale.sort_unstable();
        Ok(stale)
    }

    async fn clean_worker(&self, worker: &WorkerId, orphan: Orphan) -> Result<Option<Cleaned>> {
        let (working_on, failed_entry, requeued) = {
            let mut st = self.state.lock();
            let registered = st.registry.started.remove(worker).is_some();
            let pinged = st.registry.pings.remove(worker.name.as_str()).is_some();
            let working_on = st.working.remove(worker);
            st.task_slots.remove(worker);
            st.stats.forget_worker(&worker.name);
            st.touch();
            if !registered && !pinged && working_on.is_none() {
                return Ok(None);
            }
            let mut failed_entry = None;
            let mut requeued = false;
            if let Some(wo) = &working_on {
                match orphan {
                    Orphan::Requeue => {
                        st.push_head(&wo.queue, wo.payload.clone());
                        requeued = true;
                    }
                    Orphan::Fail { failure, at_ms } => {
                        // Ruby workers leave the name out of the record.
                        let name = if wo.worker.is_empty() { &worker.name } else { &wo.worker };
                        let entry = encode_entry(name, &wo.queue, &wo.payload, &failure, at_ms);
                        st.failed.push_back(entry.clone());
                        st.stats.count_failed_globally();
                        failed_entry = Some(Box::new(FailedJob::decode_lenient(&entry)));
                    }
                }
            }
            (working_on, failed_entry, requeued)
        };
        if requeued {
            self.wakeup.wake();
        }
        Ok(Some(Cleaned {
            worker: worker.clone(),
            working_on,
            failed_entry,
        }))
    }
}
