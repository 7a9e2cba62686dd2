//! The failed list: the [`FailedStore`] implementation.

use crate::{list, MemoryBackend};
use async_trait::async_trait;
use resq_core::{FailedStore, Result};
use std::collections::VecDeque;

#[async_trait]
impl FailedStore for MemoryBackend {
    async fn push_failed(&self, entry: &str) -> Result<()> {
        let entry = entry.to_owned();
        let mut st = self.state.lock();
        st.failed.push_back(entry);
        st.touch();
        Ok(())
    }

    async fn failed_count(&self) -> Result<u64> {
        Ok(self.state.lock().failed.len() as u64)
    }

    async fn failed_range(&self, start: i64, stop: i64) -> Result<Vec<String>> {
        Ok(list::range(&self.state.lock().failed, start, stop))
    }

    async fn remove_failed(&self, entry: &str) -> Result<u64> {
        let mut st = self.state.lock();
        let removed = list::remove(&mut st.failed, entry, 1);
        if removed > 0 {
            st.touch();
        }
        Ok(removed)
    }

    async fn retry_failed(&self, entry: &str, queue: &str, payload: &str) -> Result<bool> {
        let payload = payload.to_owned();
        {
            let mut st = self.state.lock();
            if list::remove(&mut st.failed, entry, 1) == 0 {
                return Ok(false);
            }
            st.push_tail(queue, payload);
            st.touch();
        }
        self.wakeup.wake();
        Ok(true)
    }

    async fn remove_failed_at(&self, index: u64, entry: &str) -> Result<bool> {
        let mut st = self.state.lock();
        if !take_at(&mut st.failed, index, entry) {
            return Ok(false);
        }
        st.touch();
        Ok(true)
    }

    async fn retry_failed_at(&self, index: u64, entry: &str, queue: &str, payload: &str) -> Result<bool> {
        let payload = payload.to_owned();
        {
            let mut st = self.state.lock();
            if !take_at(&mut st.failed, index, entry) {
                return Ok(false);
            }
            st.push_tail(queue, payload);
            st.touch();
        }
        self.wakeup.wake();
        Ok(true)
    }
}

/// Removes the item at `index` if it equals `entry`; whether it did.
fn take_at(list: &mut VecDeque<String>, index: u64, entry: &str) -> bool {
    let Ok(i) = usize::try_from(index) else {
        return false;
    };
    if list.get(i).map(String::as_str) != Some(entry) {
        return false;
    }
    list.remove(i).is_some()
}
