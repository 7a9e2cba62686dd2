//! Cancelling jobs: [`JobId`], the stable identity of a running, queued or
//! delayed job that [`crate::Queue::cancel`] acts on, and [`CancelReport`].
//!
//! Resque payloads carry no id, so a job is named by where it is and the
//! SHA-256 of its exact bytes, as [`crate::FailedId`] names failed entries:
//! a running job by its worker (the working-on record's payload), a queued
//! one by its queue, a delayed one by its bucket. An action by id re-reads
//! that place and acts only on a job with those bytes there
//! ([`crate::Error::StaleJob`] otherwise); identical bytes are the same
//! job, so which copy goes does not matter.
//!
//! Within the crate, the worker's side lives here too: which job each of
//! its slots runs, with the token that stops it, and the loop that turns
//! signals and marks from the [`CancelStore`](crate::backend::CancelStore)
//! into cancelled tokens.

use crate::backend::{Backend, CancelMark, CancelSignal, Claimed, WorkerId};
use crate::error::{Error, Result};
use serde::Serialize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Where a [`JobId`] points.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum JobPlace {
    /// Running on the worker with this name (a multi-slot worker's slot,
    /// `<name>.<n>`).
    Running(String),
    /// Waiting in this queue.
    Queued(String),
    /// In the delayed bucket of this time, epoch ms (a whole second).
    Delayed(i64),
}

/// A job's stable identity: its place and the SHA-256 of its exact bytes.
///
/// Text form: `running-<64 hex>-<worker name>`, `queued-<64 hex>-<queue>`
/// or `delayed-<64 hex>-<epoch ms>`; [`FromStr`](std::str::FromStr)
/// parses exactly what [`Display`](std::fmt::Display) writes (the digest
/// has a fixed length, so names may hold `-` and `:`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobId {
    place: JobPlace,
    digest: [u8; 32],
}

fn digest_of(raw: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(raw.as_bytes()).into()
}

impl JobId {
    /// The id of the job `payload` (its working-on record's bytes) that
    /// worker `worker` runs.
    pub fn running(worker: &str, payload: &str) -> JobId {
        JobId {
            place: JobPlace::Running(worker.to_owned()),
            digest: digest_of(payload),
        }
    }

    /// The id of the job `payload` waiting in `queue`.
    pub fn queued(queue: &str, payload: &str) -> JobId {
        JobId {
            place: JobPlace::Queued(queue.to_owned()),
            digest: digest_of(payload),
        }
    }

    /// The id of the delayed item `payload` in the bucket of `timestamp_ms`.
    pub fn delayed(timestamp_ms: i64, payload: &str) -> JobId {
        JobId {
            place: JobPlace::Delayed(timestamp_ms),
            digest: digest_of(payload),
        }
    }

    /// Where the job is.
    pub fn place(&self) -> &JobPlace {
        &self.place
    }

    /// True when `raw` has the digest this id names.
    pub fn matches(&self, raw: &str) -> bool {
        digest_of(raw) == self.digest
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.place {
            JobPlace::Running(_) => "running",
            JobPlace::Queued(_) => "queued",
            JobPlace::Delayed(_) => "delayed",
        };
        write!(f, "{kind}-")?;
        for b in self.digest {
            write!(f, "{b:02x}")?;
        }
        match &self.place {
            JobPlace::Running(name) | JobPlace::Queued(name) => write!(f, "-{name}"),
            JobPlace::Delayed(ms) => write!(f, "-{ms}"),
        }
    }
}

impl std::str::FromStr for JobId {
    type Err = Error;

    fn from_str(text: &str) -> Result<JobId> {
        let bad = |reason: &'static str| Error::MalformedJobId {
            text: text.to_owned(),
            reason,
        };
        let (kind, rest) = text
            .split_once('-')
            .ok_or_else(|| bad("expected running-, queued- or delayed-<64 hex digits>-<place>"))?;
        let hex = rest
            .get(..64)
            .ok_or_else(|| bad("the digest is not 64 lowercase hex digits"))?;
        if !hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
            return Err(bad("the digest is not 64 lowercase hex digits"));
        }
        let name = rest
            .get(64..)
            .and_then(|t| t.strip_prefix('-'))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("the place is missing after the digest"))?;
        let mut digest = [0u8; 32];
        for (i, byte) in digest.iter_mut().enumerate() {
            let pair = hex
                .get(2 * i..2 * i + 2)
                .ok_or_else(|| bad("the digest is not 64 lowercase hex digits"))?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad("the digest is not 64 lowercase hex digits"))?;
        }
        let place = match kind {
            "running" => JobPlace::Running(name.to_owned()),
            "queued" => JobPlace::Queued(name.to_owned()),
            "delayed" => JobPlace::Delayed(name.parse().map_err(|_| bad("the bucket time is not a number"))?),
            _ => return Err(bad("the kind is not running, queued or delayed")),
        };
        Ok(JobId { place, digest })
    }
}

impl Serialize for JobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What a cancel did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CancelReport {
    /// Running jobs asked to stop (each stops on its worker, which counts
    /// it in [`crate::worker::CANCELLED_STAT`] and emits a `cancelled`
    /// event; a job that finished first is not stopped).
    pub running: u64,
    /// Queued jobs removed (counted in [`crate::worker::CANCELLED_STAT`]).
    pub queued: u64,
    /// Delayed items removed (counted in [`crate::worker::CANCELLED_STAT`]).
    pub delayed: u64,
}

impl CancelReport {
    /// How many jobs in all.
    pub fn total(&self) -> u64 {
        self.running + self.queued + self.delayed
    }
}

/// What stops one job: a flag, the waker of the worker's wait on it, and a
/// [`CancellationToken`] made only when the job's code asks for one
/// ([`crate::JobContext::cancellation_token`] or `cancelled()`). A job
/// that nobody cancels costs one allocation and no registration.
#[derive(Debug, Default)]
pub(crate) struct StopSignal {
    stopped: std::sync::atomic::AtomicBool,
    waker: futures_util::task::AtomicWaker,
    token: std::sync::OnceLock<CancellationToken>,
}

impl StopSignal {
    /// Stops the job: sets the flag, wakes the worker's wait and cancels
    /// the token if one was made.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
        self.waker.wake();
        if let Some(token) = self.token.get() {
            token.cancel();
        }
    }

    /// Whether the job was stopped.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves once the job is stopped (for the worker's one wait).
    pub(crate) fn stopped(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.is_stopped() {
                return std::task::Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.is_stopped() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
    }

    /// The job's token, made on first use; cancelled if the job was
    /// stopped already.
    pub(crate) fn token(&self) -> CancellationToken {
        let token = self.token.get_or_init(CancellationToken::new).clone();
        if self.is_stopped() {
            token.cancel();
        }
        token
    }
}

/// One running job of a slot: the working-on record its claim wrote and
/// the token that stops it.
struct Running {
    /// The claimed job (its payload is the record's), shared with its task.
    job: Arc<Claimed>,
    run_at: Arc<str>,
    token: Arc<StopSignal>,
    /// Tells this registration from a later one of the same slot.
    serial: u64,
}

/// One slot of a worker: its id, its member (what signals carry),
/// computed once, and its running job.
struct Slot {
    id: WorkerId,
    member: String,
    running: Mutex<Option<Running>>,
}

/// The jobs a worker's slots run, one entry per slot, set up once when the
/// worker starts: registering a job costs one uncontended lock and no
/// lookup.
pub(crate) struct CancelWatch {
    slots: Vec<Slot>,
    next_serial: std::sync::atomic::AtomicU64,
}

impl CancelWatch {
    /// A watch over these slots (a single-slot worker: its own id).
    pub(crate) fn new(ids: &[WorkerId]) -> Arc<CancelWatch> {
        Arc::new(CancelWatch {
            slots: ids
                .iter()
                .map(|id| Slot {
                    member: id.member(),
                    id: id.clone(),
                    running: Mutex::new(None),
                })
                .collect(),
            next_serial: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn entry(&self, slot: usize) -> Option<std::sync::MutexGuard<'_, Option<Running>>> {
        self.slots
            .get(slot)
            .map(|s| s.running.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Registers slot `slot`'s job, claimed with `run_at`, until the
    /// returned guard is dropped; the guard holds the job's token. The
    /// job is shared with the slot's task, not copied.
    pub(crate) fn begin(self: &Arc<Self>, slot: usize, job: &Arc<Claimed>, run_at: Arc<str>) -> WatchGuard {
        let token = Arc::new(StopSignal::default());
        let serial = self.next_serial.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(mut entry) = self.entry(slot) {
            *entry = Some(Running {
                job: Arc::clone(job),
                run_at,
                token: Arc::clone(&token),
                serial,
            });
        }
        WatchGuard {
            watch: Arc::clone(self),
            slot,
            serial,
            token,
        }
    }

    /// The slots running a job now (only the one whose member is `only`,
    /// when given), as indexes.
    fn running_slots(&self, only: Option<&str>) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| {
                let named = only.is_none_or(|m| self.slots.get(i).is_some_and(|s| s.member == m));
                named && self.entry(i).is_some_and(|e| e.is_some())
            })
            .collect()
    }

    /// Cancels slot `slot`'s job if `mark` aims at it (the same `run_at`
    /// and payload as its claim's working-on record). Returns whether it
    /// did. A mark aimed at another job is left alone: it may be for a job
    /// the slot has claimed but not registered yet, and expires by itself.
    fn apply(&self, slot: usize, mark: &CancelMark) -> bool {
        let Some(entry) = self.entry(slot) else {
            return false;
        };
        match entry.as_ref() {
            Some(r) if *r.run_at == *mark.run_at && same_payload(&r.job.payload, &mark.payload) => {
                r.token.stop();
                true
            }
            _ => false,
        }
    }
}

/// Whether two payloads are the same job's: equal bytes, or equal JSON (a
/// backend may hand back a working-on record's payload normalised).
pub(crate) fn same_payload(mine: &str, theirs: &str) -> bool {
    if mine == theirs {
        return true;
    }
    match (
        serde_json::from_str::<serde_json::Value>(mine),
        serde_json::from_str::<serde_json::Value>(theirs),
    ) {
        (Ok(serde_json::Value::String(inner)), _) => inner == theirs,
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// A job's registration in a [`CancelWatch`]; dropping it (the job ended
/// or was dropped) removes it.
pub(crate) struct WatchGuard {
    watch: Arc<CancelWatch>,
    slot: usize,
    serial: u64,
    token: Arc<StopSignal>,
}

impl WatchGuard {
    /// The job's stop signal: set when a cancel request reaches it.
    pub(crate) fn token(&self) -> Arc<StopSignal> {
        Arc::clone(&self.token)
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if let Some(mut entry) = self.watch.entry(self.slot) {
            if entry.as_ref().is_some_and(|r| r.serial == self.serial) {
                *entry = None;
            }
        }
    }
}

/// Watches the backend's cancel signals for the slots of one worker and
/// reads their marks: on a signal naming a slot that runs a job, on a
/// signal that some may have been lost (`None`, a lagging receiver), and
/// every `interval` (the ping interval) while any slot runs a job, so a
/// request whose signal was missed still stops its job. Runs until dropped.
pub(crate) async fn cancel_loop(backend: Arc<dyn Backend>, watch: Arc<CancelWatch>, interval: Duration) {
    let mut signals: Option<broadcast::Receiver<CancelSignal>> = None;
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if signals.is_none() {
            match backend.cancel_signals().await {
                Ok(rx) => signals = Some(rx),
                Err(e) => tracing::warn!(target: "resq::worker", error = %e,
                    "cannot subscribe to cancel signals; reading cancel marks every ping instead"),
            }
        }
        // `Some(member)`: that slot's mark; `None`: every running slot's.
        let which: Option<Arc<str>> = match signals.as_mut() {
            Some(rx) => tokio::select! {
                signal = rx.recv() => match signal {
                    Ok(named) => named,
                    Err(broadcast::error::RecvError::Lagged(_)) => None,
                    Err(broadcast::error::RecvError::Closed) => {
                        signals = None;
                        None
                    }
                },
                _ = tick.tick() => None,
            },
            None => {
                tick.tick().await;
                None
            }
        };
        let slots = watch.running_slots(which.as_deref());
        if slots.is_empty() {
            continue;
        }
        let ids: Vec<WorkerId> = slots
            .iter()
            .filter_map(|&i| watch.slots.get(i).map(|s| s.id.clone()))
            .collect();
        let marks = match backend.cancel_marks(&ids).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(target: "resq::worker", error = %e, "reading cancel marks failed");
                continue;
            }
        };
        for ((&slot, id), mark) in slots.iter().zip(&ids).zip(marks) {
            let Some(mark) = mark else { continue };
            if watch.apply(slot, &mark) {
                tracing::info!(target: "resq::worker", worker = %id.name, "cancel request received");
                if let Err(e) = backend.clear_cancel(id, &mark).await {
                    tracing::warn!(target: "resq::worker", worker = %id.name, error = %e,
                        "clearing a cancel mark failed (it expires by itself)");
                }
            }
        }
    }
}

/// How many payloads a scan of a queue reads at a time.
const SCAN_PAGE: i64 = 500;

/// Whether the decoded `job` is of `class` with `args` (any arguments
/// when `None`).
fn job_matches(job: &crate::job::Job, class: &str, args: Option<&[serde_json::Value]>) -> bool {
    job.class == class && args.is_none_or(|a| job.args.as_slice() == a)
}

impl crate::Queue {
    /// Asks worker `worker` to stop the job it runs, if that job is
    /// `payload` (its working-on record's bytes, as [`crate::Queue::working_on`]
    /// shows them): stores a cancel mark aimed at that record and signals
    /// the worker through the backend's wake-up channel
    /// ([`crate::CancelStore::request_cancel`]), wherever in the cluster it
    /// runs. Returns false, changing nothing, when the worker runs no job
    /// or another one.
    ///
    /// The worker drops the job's future and records its outcome as
    /// `cancelled`: no failed entry, no retry by the Retry plugin, a
    /// `cancelled` event, and the [`crate::worker::CANCELLED_STAT`]
    /// counter. The request and the job's end may race: a job that
    /// finishes first simply succeeds or fails, and the mark expires.
    pub async fn cancel_running(&self, worker: &WorkerId, payload: &str) -> Result<bool> {
        let backend = self.backend();
        let Some(record) = backend.working_on(worker).await? else {
            return Ok(false);
        };
        if !same_payload(&record.payload, payload) {
            return Ok(false);
        }
        backend
            .request_cancel(
                worker,
                &CancelMark {
                    run_at: record.run_at,
                    payload: record.payload,
                },
            )
            .await?;
        Ok(true)
    }

    /// The payload of the job `id` names, if it is still there.
    pub async fn find_job(&self, id: &JobId) -> Result<Option<String>> {
        Ok(match id.place() {
            JobPlace::Running(name) => self.find_running(id, name).await?.map(|(_, mark)| mark.payload),
            JobPlace::Queued(queue) => self.find_queued(id, queue).await?,
            JobPlace::Delayed(ms) => {
                let ts = ms.div_euclid(1000);
                self.backend()
                    .delayed_at(ts)
                    .await?
                    .into_iter()
                    .find(|raw| id.matches(raw))
            }
        })
    }

    /// Cancels the job `id` names: a running job is asked to stop (as
    /// [`Queue::cancel_running`](crate::Queue::cancel_running) does), a
    /// queued one is removed from its queue, a delayed one from its bucket
    /// (only that bucket). Queued and delayed jobs are counted in
    /// [`crate::worker::CANCELLED_STAT`] here, and each emits a
    /// [`crate::QueueEvent::Cancelled`] on this client's channel
    /// ([`Queue::subscribe`](crate::Queue::subscribe)). [`Error::StaleJob`] when no
    /// job with those bytes is there any more.
    pub async fn cancel(&self, id: &JobId) -> Result<CancelReport> {
        let backend = self.backend();
        let stale = || Error::StaleJob { id: id.to_string() };
        let report = match id.place() {
            JobPlace::Running(name) => {
                let (worker, mark) = self.find_running(id, name).await?.ok_or_else(stale)?;
                backend.request_cancel(&worker, &mark).await?;
                CancelReport {
                    running: 1,
                    ..CancelReport::default()
                }
            }
            JobPlace::Queued(queue) => {
                let raw = self.find_queued(id, queue).await?.ok_or_else(stale)?;
                let queued = backend.remove_from_queue(queue, &raw, 1).await?;
                if queued == 0 {
                    return Err(stale());
                }
                self.emit_cancelled(&raw, JobPlace::Queued(queue.clone()), Some(id.clone()));
                CancelReport {
                    queued,
                    ..CancelReport::default()
                }
            }
            JobPlace::Delayed(ms) => {
                let ts = ms.div_euclid(1000);
                let raw = backend
                    .delayed_at(ts)
                    .await?
                    .into_iter()
                    .find(|raw| id.matches(raw))
                    .ok_or_else(stale)?;
                if !backend.remove_delayed_at(ts, &raw).await? {
                    return Err(stale());
                }
                self.emit_cancelled(&raw, JobPlace::Delayed(*ms), Some(id.clone()));
                CancelReport {
                    delayed: 1,
                    ..CancelReport::default()
                }
            }
        };
        self.count_cancelled(&report).await?;
        Ok(report)
    }

    /// Cancels every job of `class` (with exactly `args` when given):
    /// running ones are asked to stop, queued ones are removed from every
    /// queue (where the jobs are: [`crate::QueueStore::remove_by_class`],
    /// or by the exact bytes of node-resque's and Ruby's encodings with
    /// `args`), delayed ones from every bucket; each queued or delayed job
    /// removed emits a [`crate::QueueEvent::Cancelled`] (see
    /// [`Queue::cancel`](crate::Queue::cancel)). Not one atomic step: a job
    /// enqueued meanwhile may be missed, and one claimed meanwhile is
    /// either stopped or runs.
    pub async fn cancel_jobs(&self, class: &str, args: Option<&[serde_json::Value]>) -> Result<CancelReport> {
        let backend = self.backend();
        let mut report = CancelReport::default();
        for (worker, mark) in self.running_of_class(class, args).await? {
            backend.request_cancel(&worker, &mark).await?;
            report.running += 1;
        }
        for queue in backend.queues().await? {
            let removed = match args {
                None => backend.remove_by_class(&queue, class).await?,
                Some(a) => self.del(&queue, class, a, 0).await?,
            };
            report.queued += removed;
            if self.observed() {
                // The store removed them where they are: their bytes are unknown.
                for _ in 0..removed {
                    self.emit(|| crate::event::QueueEvent::Cancelled {
                        class: class.to_owned(),
                        place: JobPlace::Queued(queue.clone()),
                        id: None,
                    });
                }
            }
        }
        for ts in backend.delayed_timestamps().await? {
            for raw in backend.delayed_at(ts).await? {
                let hit = crate::job::Job::decode(&raw).is_ok_and(|j| job_matches(&j, class, args));
                if hit && backend.remove_delayed_at(ts, &raw).await? {
                    report.delayed += 1;
                    let ms = ts.saturating_mul(1000);
                    self.emit_cancelled(&raw, JobPlace::Delayed(ms), Some(JobId::delayed(ms, &raw)));
                }
            }
        }
        self.count_cancelled(&report).await?;
        Ok(report)
    }

    /// The ids of the jobs [`Queue::cancel_jobs`](crate::Queue::cancel_jobs)
    /// would cancel now (a dry run). It reads every queue a page at a time.
    pub async fn find_jobs(&self, class: &str, args: Option<&[serde_json::Value]>) -> Result<Vec<JobId>> {
        let backend = self.backend();
        let mut out = Vec::new();
        for (worker, mark) in self.running_of_class(class, args).await? {
            out.push(JobId::running(&worker.name, &mark.payload));
        }
        for queue in backend.queues().await? {
            let mut start = 0i64;
            loop {
                let page = backend.queue_range(&queue, start, start + SCAN_PAGE - 1).await?;
                for raw in &page {
                    if crate::job::Job::decode(raw).is_ok_and(|j| job_matches(&j, class, args)) {
                        out.push(JobId::queued(&queue, raw));
                    }
                }
                if i64::try_from(page.len()).unwrap_or(i64::MAX) < SCAN_PAGE {
                    break;
                }
                start += SCAN_PAGE;
            }
        }
        for ts in backend.delayed_timestamps().await? {
            for raw in backend.delayed_at(ts).await? {
                if crate::job::Job::decode(&raw).is_ok_and(|j| job_matches(&j, class, args)) {
                    out.push(JobId::delayed(ts.saturating_mul(1000), &raw));
                }
            }
        }
        Ok(out)
    }

    /// Counts the queued and delayed jobs a cancel removed.
    /// A `cancelled` queue event for the removed job `raw`.
    fn emit_cancelled(&self, raw: &str, place: JobPlace, id: Option<JobId>) {
        self.emit(|| crate::event::QueueEvent::Cancelled {
            class: crate::job::Job::decode(raw).map(|j| j.class).unwrap_or_default(),
            place,
            id,
        });
    }

    async fn count_cancelled(&self, report: &CancelReport) -> Result<()> {
        let removed = report.queued + report.delayed;
        if removed > 0 {
            let by = i64::try_from(removed).unwrap_or(i64::MAX);
            self.backend().incr_stat(crate::worker::CANCELLED_STAT, by).await?;
        }
        Ok(())
    }

    /// The running jobs of `class` (and `args`), with the marks that aim at them.
    async fn running_of_class(
        &self,
        class: &str,
        args: Option<&[serde_json::Value]>,
    ) -> Result<Vec<(WorkerId, CancelMark)>> {
        let backend = self.backend();
        let workers = backend.workers().await?;
        let records = backend.working_on_many(&workers).await?;
        Ok(workers
            .into_iter()
            .zip(records)
            .filter_map(|(w, r)| {
                let r = r?;
                let hit = crate::job::Job::decode(&r.payload).is_ok_and(|j| job_matches(&j, class, args));
                hit.then_some((
                    w,
                    CancelMark {
                        run_at: r.run_at,
                        payload: r.payload,
                    },
                ))
            })
            .collect())
    }

    /// The worker named `name` running the job `id` names, with a mark
    /// aimed at its record.
    async fn find_running(&self, id: &JobId, name: &str) -> Result<Option<(WorkerId, CancelMark)>> {
        let backend = self.backend();
        let workers: Vec<WorkerId> = backend
            .workers()
            .await?
            .into_iter()
            .filter(|w| w.name == name)
            .collect();
        let records = backend.working_on_many(&workers).await?;
        Ok(workers.into_iter().zip(records).find_map(|(w, r)| {
            let r = r?;
            let hit = id.matches(&r.payload);
            hit.then_some((
                w,
                CancelMark {
                    run_at: r.run_at,
                    payload: r.payload,
                },
            ))
        }))
    }

    /// A payload of `queue` that `id` matches, scanned from the tail a page
    /// at a time (pushes and claims meanwhile move no unvisited job past
    /// the window).
    async fn find_queued(&self, id: &JobId, queue: &str) -> Result<Option<String>> {
        let backend = self.backend();
        let mut visited = 0i64;
        loop {
            let page = backend
                .queue_range(queue, -(visited + SCAN_PAGE), -(visited + 1))
                .await?;
            if let Some(raw) = page.iter().find(|raw| id.matches(raw)) {
                return Ok(Some(raw.clone()));
            }
            let n = i64::try_from(page.len()).unwrap_or(i64::MAX);
            if n < SCAN_PAGE {
                return Ok(None);
            }
            visited = visited.saturating_add(n);
        }
    }
}
