//! The failed list: filtered listing by stable id, single and selected
//! actions, and bulk actions by filter that walk the list page by page from
//! the tail.

use crate::{Admin, BulkOutcome, BulkProgress, FailedFilter, FailedItem, Page, Paged};
use resq_core::backend::may_be_of_class;
use resq_core::failed::{FailedId, FailedJob};
use resq_core::queue::retry_target;
use resq_core::time::parse_date;
use resq_core::{Error, Result};
use std::task::Poll;

/// How many failed entries a filtered listing or a bulk action reads at a
/// time, unless [`Admin::with_page_size`] says otherwise.
pub const FAILED_PAGE: u64 = 500;

/// What a bulk action does to one entry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Retry,
    Remove,
}

/// The result of acting on one entry.
enum Acted {
    Done,
    Stale,
    Failed,
}

impl FailedFilter {
    /// A cheap test on an entry's stored bytes, before decoding it: `false`
    /// only when the entry cannot match [`FailedFilter::matches`], so the
    /// two together give exactly the entries `matches` accepts.
    ///
    /// Why it never rejects a match: JSON text holds every character of a
    /// string literally unless the encoder escapes it, and every escape
    /// starts with a backslash. So an entry without a backslash holds its
    /// class, queue and error text literally, and one that does is always
    /// decoded. The error text is matched without regard to case, which
    /// this test does for ASCII only: an entry with any non-ASCII
    /// character, or a search text with one, is always decoded. The time
    /// window reads only `failed_at` (anything unexpected there is decoded
    /// in full).
    pub fn may_match_raw(&self, raw: &str) -> bool {
        let escaped = raw.contains('\\');
        for text in [&self.class, &self.queue].into_iter().flatten() {
            if !escaped && !raw.contains(text.as_str()) {
                return false;
            }
        }
        if let Some(text) = &self.error {
            if !escaped && text.is_ascii() && raw.is_ascii() && !contains_ignore_ascii_case(raw, text) {
                return false;
            }
        }
        if self.since_ms.is_some() || self.until_ms.is_some() {
            let at = if escaped { None } else { lone_failed_at(raw) };
            let at = at
                .map(std::borrow::Cow::Borrowed)
                .or_else(|| serde_json::from_str::<FailedAt<'_>>(raw).ok().and_then(|f| f.failed_at));
            if let Some(at) = at {
                match parse_date(&at) {
                    Some(ms) => {
                        if self.since_ms.is_some_and(|s| ms < s) || self.until_ms.is_some_and(|u| ms >= u) {
                            return false;
                        }
                    }
                    None => return false,
                }
            }
        }
        true
    }

    /// Whether `entry` (stored bytes `raw`) matches every field set.
    pub fn matches(&self, entry: &FailedJob) -> bool {
        if let Some(class) = &self.class {
            let raw = entry.payload.as_deref().unwrap_or("");
            if !may_be_of_class(raw, class) || entry.job().map_or(true, |j| &j.class != class) {
                return false;
            }
        }
        if let Some(queue) = &self.queue {
            if entry_queue(entry).as_deref() != Some(queue.as_str()) {
                return false;
            }
        }
        if let Some(text) = &self.error {
            let needle = text.to_lowercase();
            let found = [&entry.exception, &entry.error]
                .into_iter()
                .flatten()
                .any(|s| s.to_lowercase().contains(&needle));
            if !found {
                return false;
            }
        }
        if self.since_ms.is_some() || self.until_ms.is_some() {
            let Some(at) = entry.failed_at.as_deref().and_then(parse_date) else {
                return false;
            };
            if self.since_ms.is_some_and(|s| at < s) || self.until_ms.is_some_and(|u| at >= u) {
                return false;
            }
        }
        true
    }
}

/// Only the `failed_at` of a failed entry, borrowed where it can be.
#[derive(serde::Deserialize)]
struct FailedAt<'a> {
    #[serde(borrow, default)]
    failed_at: Option<std::borrow::Cow<'a, str>>,
}

/// The `failed_at` string of an entry without escapes, found without
/// decoding it, when the key appears exactly once. That one appearance is
/// either the entry's own key, or a key inside its payload while the entry
/// has none (then the full test rejects the entry whatever this returns).
/// `None` when the key appears more than once or its value is not a
/// string: the caller then decodes.
fn lone_failed_at(raw: &str) -> Option<&str> {
    const KEY: &str = "\"failed_at\"";
    let mut found = memchr::memmem::find_iter(raw.as_bytes(), KEY);
    let at = found.next()?;
    if found.next().is_some() {
        return None;
    }
    let rest = raw[at + KEY.len()..].trim_start().strip_prefix(':')?.trim_start();
    let value = rest.strip_prefix('"')?;
    value.find('"').map(|end| &value[..end])
}

/// Whether `haystack` contains `needle`, ASCII letters compared without
/// regard to case: each place holding the needle's first byte, in either
/// case, found with `memchr2`, is compared with the rest.
fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    let Some(&first) = n.first() else {
        return true;
    };
    memchr::memchr2_iter(first.to_ascii_lowercase(), first.to_ascii_uppercase(), h)
        .any(|at| h.get(at..at + n.len()).is_some_and(|w| w.eq_ignore_ascii_case(n)))
}

/// The queue an entry failed on: its own `queue`, else its payload's.
fn entry_queue(entry: &FailedJob) -> Option<String> {
    entry
        .queue
        .clone()
        .filter(|q| !q.is_empty())
        .or_else(|| entry.job().ok().and_then(|j| j.queue).filter(|q| !q.is_empty()))
}

/// A listed entry from its id and decoded form.
fn item(id: FailedId, entry: FailedJob) -> FailedItem {
    let job = entry.job().ok();
    FailedItem {
        id,
        queue: entry_queue(&entry),
        class: job.as_ref().map(|j| j.class.clone()),
        args: job.map(|j| serde_json::Value::Array(j.args)),
        failed_at_ms: entry.failed_at.as_deref().and_then(parse_date),
        exception: entry.exception,
        error: entry.error,
        backtrace: entry.backtrace,
        worker: entry.worker,
        failed_at: entry.failed_at,
        payload: entry.payload,
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Admin {
    /// The same admin, reading the failed list `page` entries at a time in
    /// filtered listings and bulk actions (default [`FAILED_PAGE`]; at
    /// least 1).
    pub fn with_page_size(mut self, page: u64) -> Admin {
        self.page = page.max(1);
        self
    }

    /// One page of the failed entries that match `filter`, head (oldest)
    /// first, each with its stable id; `total` counts the matching entries.
    /// Without a filter this reads only the page; with one it reads the
    /// list in pages, holding one page at a time.
    pub async fn failed(&self, filter: &FailedFilter, page: Page) -> Result<Paged<FailedItem>> {
        if filter.is_empty() {
            let total = self.backend.failed_count().await?;
            let items = self
                .queue
                .failed_with_ids(page.offset, page.limit)
                .await?
                .into_iter()
                .map(|(id, entry)| item(id, entry))
                .collect();
            return Ok(Paged {
                items,
                offset: page.offset,
                total,
            });
        }
        let end = page.offset.saturating_add(page.limit);
        let mut items = Vec::new();
        let mut matched = 0u64;
        self.scan_matching(filter, |index, raw, entry| {
            if matched >= page.offset && matched < end {
                items.push(item(FailedId::new(index, raw), entry));
            }
            matched += 1;
        })
        .await?;
        Ok(Paged {
            items,
            offset: page.offset,
            total: matched,
        })
    }

    /// Walks the whole failed list head to tail, a page at a time, and calls
    /// `visit(position, bytes, entry)` for each entry that matches `filter`.
    /// Each entry is first tested on its bytes ([`FailedFilter::may_match_raw`])
    /// and decoded only when it may match, and the next page is requested
    /// before the current one is tested, so Redis or PostgreSQL prepares it
    /// meanwhile.
    async fn scan_matching(&self, filter: &FailedFilter, mut visit: impl FnMut(u64, &str, FailedJob)) -> Result<()> {
        let fetch = |start: u64| {
            self.backend
                .failed_range(to_i64(start), to_i64(start.saturating_add(self.page - 1)))
        };
        let mut test = |start: u64, raws: &[String]| {
            for (i, raw) in raws.iter().enumerate() {
                if !filter.may_match_raw(raw) {
                    continue;
                }
                let entry = FailedJob::decode_lenient(raw);
                if filter.matches(&entry) {
                    visit(start + i as u64, raw, entry);
                }
            }
        };
        let mut start = 0u64;
        let mut raws = fetch(0).await?;
        loop {
            let n = raws.len() as u64;
            if n < self.page {
                test(start, &raws);
                return Ok(());
            }
            // Poll the next page's request once, which sends it, then test
            // this page while the server prepares the next one.
            let mut next = fetch(start + n);
            let mut early = None;
            std::future::poll_fn(|cx| {
                if let Poll::Ready(fetched) = next.as_mut().poll(cx) {
                    early = Some(fetched);
                }
                Poll::Ready(())
            })
            .await;
            test(start, &raws);
            start += n;
            raws = match early {
                Some(fetched) => fetched?,
                None => next.await?,
            };
        }
    }

    /// The failed entry `id` names, read now; [`Error::StaleFailedEntry`]
    /// when that position is empty or holds other bytes.
    pub async fn failed_entry(&self, id: &FailedId) -> Result<FailedItem> {
        let stale = || Error::StaleFailedEntry { id: id.to_string() };
        let index = i64::try_from(id.index()).map_err(|_| stale())?;
        match self.backend.failed_range(index, index).await?.into_iter().next() {
            Some(raw) if id.matches(&raw) => Ok(item(*id, FailedJob::decode_lenient(&raw))),
            _ => Err(stale()),
        }
    }

    /// Enqueues the job of failed entry `id` again (original payload bytes)
    /// and removes the entry, atomically; [`Error::StaleFailedEntry`] when
    /// the entry moved or changed, and nothing changes.
    pub async fn retry_failed(&self, id: &FailedId) -> Result<()> {
        self.queue.retry_failed_by_id(id).await
    }

    /// Removes failed entry `id`; [`Error::StaleFailedEntry`] when it moved
    /// or changed, and nothing changes.
    pub async fn remove_failed(&self, id: &FailedId) -> Result<()> {
        self.queue.remove_failed_by_id(id).await
    }

    /// Retries each of `ids` (highest position first, so that acting on one
    /// never moves another); an id whose entry moved counts as `stale`, one
    /// whose payload cannot be retried as `failed`.
    pub async fn retry_failed_many(&self, ids: &[FailedId]) -> Result<BulkOutcome> {
        self.act_on_ids(ids, Action::Retry).await
    }

    /// Removes each of `ids` (highest position first); an id whose entry
    /// moved counts as `stale`.
    pub async fn remove_failed_many(&self, ids: &[FailedId]) -> Result<BulkOutcome> {
        self.act_on_ids(ids, Action::Remove).await
    }

    /// How many failed entries match `filter` (the list is read in pages).
    pub async fn count_failed_matching(&self, filter: &FailedFilter) -> Result<u64> {
        if filter.is_empty() {
            return self.backend.failed_count().await;
        }
        let mut matched = 0u64;
        self.scan_matching(filter, |_, _, _| matched += 1).await?;
        Ok(matched)
    }

    /// Retries every failed entry that matches `filter`; see
    /// [`Admin::remove_failed_matching`] for how the list is walked.
    pub async fn retry_failed_matching(
        &self,
        filter: &FailedFilter,
        progress: &(dyn Fn(BulkProgress) + Send + Sync),
    ) -> Result<BulkOutcome> {
        self.act_on_matching(filter, Action::Retry, progress).await
    }

    /// Removes every failed entry that matches `filter`. The list is walked
    /// from the tail towards the head one page at a time (never held whole
    /// in memory), so removing an entry never shifts a position still to
    /// visit; each removal is the atomic position-and-bytes-checked
    /// [`resq_core::FailedStore::remove_failed_at`]. Entries that another
    /// client moved meanwhile count as `stale`; entries appended after the
    /// walk began are not visited. `progress` is called after each page.
    pub async fn remove_failed_matching(
        &self,
        filter: &FailedFilter,
        progress: &(dyn Fn(BulkProgress) + Send + Sync),
    ) -> Result<BulkOutcome> {
        self.act_on_matching(filter, Action::Remove, progress).await
    }

    async fn act_on_ids(&self, ids: &[FailedId], action: Action) -> Result<BulkOutcome> {
        let mut ids = ids.to_vec();
        ids.sort_by_key(|id| std::cmp::Reverse(id.index()));
        ids.dedup();
        let mut out = BulkOutcome::default();
        for id in &ids {
            let r = match action {
                Action::Retry => self.queue.retry_failed_by_id(id).await,
                Action::Remove => self.queue.remove_failed_by_id(id).await,
            };
            match r {
                Ok(()) => out.done += 1,
                Err(Error::StaleFailedEntry { .. }) => out.stale += 1,
                Err(Error::Decode { .. }) => out.failed += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn act_on_matching(
        &self,
        filter: &FailedFilter,
        action: Action,
        progress: &(dyn Fn(BulkProgress) + Send + Sync),
    ) -> Result<BulkOutcome> {
        let total = self.backend.failed_count().await?;
        let mut out = BulkOutcome::default();
        let mut report = BulkProgress {
            scanned: 0,
            total,
            done: 0,
        };
        let mut end = total;
        while end > 0 {
            let start = end.saturating_sub(self.page);
            let raws = self.backend.failed_range(to_i64(start), to_i64(end - 1)).await?;
            for (i, raw) in raws.iter().enumerate().rev() {
                let entry = FailedJob::decode_lenient(raw);
                if !filter.matches(&entry) {
                    continue;
                }
                match self.act_at(start + i as u64, raw, &entry, action).await? {
                    Acted::Done => out.done += 1,
                    Acted::Stale => out.stale += 1,
                    Acted::Failed => out.failed += 1,
                }
            }
            report.scanned += end - start;
            report.done = out.done;
            progress(report);
            end = start;
        }
        if total == 0 {
            progress(report);
        }
        tracing::info!(
            target: "resq::admin",
            done = out.done,
            stale = out.stale,
            failed = out.failed,
            retry = action == Action::Retry,
            "bulk action on failed entries finished"
        );
        Ok(out)
    }

    async fn act_at(&self, index: u64, raw: &str, entry: &FailedJob, action: Action) -> Result<Acted> {
        let acted = match action {
            Action::Remove => self.backend.remove_failed_at(index, raw).await?,
            Action::Retry => {
                let Ok((queue, payload)) = retry_target(entry) else {
                    return Ok(Acted::Failed);
                };
                self.backend.retry_failed_at(index, raw, &queue, &payload).await?
            }
        };
        Ok(if acted { Acted::Done } else { Acted::Stale })
    }
}
