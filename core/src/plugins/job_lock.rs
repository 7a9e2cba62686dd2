//! JobLock: at most one identical job running.

use super::{lock_key, now_secs, positive, secs, KeyFn, LockKeyInput};
use crate::error::Result;
use crate::plugin::{PerformContext, Plugin};
use async_trait::async_trait;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where the token of a lock this job holds is kept between its hooks.
const NOTE: &str = "JobLock.token";

static TOKENS: AtomicU64 = AtomicU64::new(0);

/// Lets one identical job (same class, queue and args) run at a time. A
/// worker takes `workerslock:<class>:<queue>:<args>` before the job runs
/// (`SET NX EX`, `lockTimeout` s). A copy that finds it held is dropped
/// from this run and, unless `reEnqueue` is `false`, enqueued again after
/// `enqueueTimeout` ms. The lock's value is a token unique to the holder,
/// and only the copy that took it releases it, by compare-and-delete, after
/// the job, whether it succeeded or failed: a copy whose re-enqueue fails
/// can no longer delete the running holder's lock (node-resque's race, spec
/// §4.3). A re-enqueue that finds the identical job already delayed in that
/// second is not an error: that copy is the re-enqueue.
#[derive(Clone, Default)]
pub struct JobLock {
    lock_timeout_secs: Option<u64>,
    re_enqueue: Option<bool>,
    enqueue_timeout: Option<Duration>,
    key: Option<KeyFn>,
}

impl std::fmt::Debug for JobLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobLock")
            .field("lock_timeout_secs", &self.lock_timeout_secs)
            .field("re_enqueue", &self.re_enqueue)
            .field("enqueue_timeout", &self.enqueue_timeout)
            .field("custom_key", &self.key.is_some())
            .finish()
    }
}

impl JobLock {
    /// The name its options are found under: `JobLock`.
    pub const NAME: &'static str = "JobLock";

    /// A JobLock with node-resque's defaults: one hour, re-enqueue after 1,001 ms.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a lock lives at most, in seconds (`lockTimeout`).
    pub fn lock_timeout_secs(mut self, secs: u64) -> Self {
        self.lock_timeout_secs = Some(secs);
        self
    }

    /// Whether a blocked copy is enqueued again (`reEnqueue`, default true).
    pub fn re_enqueue(mut self, yes: bool) -> Self {
        self.re_enqueue = Some(yes);
        self
    }

    /// The delay of that re-enqueue (`enqueueTimeout`, default 1,001 ms).
    pub fn enqueue_timeout(mut self, delay: Duration) -> Self {
        self.enqueue_timeout = Some(delay);
        self
    }

    /// Computes the lock key from the job instead of the default.
    pub fn key_fn(mut self, f: impl Fn(&LockKeyInput<'_>) -> String + Send + Sync + 'static) -> Self {
        self.key = Some(Arc::new(f));
        self
    }

    /// The key for a job, as this plugin computes it with `options`.
    fn key(&self, options: &Value, ctx: &PerformContext<'_>) -> String {
        let input = LockKeyInput {
            class: &ctx.job.class,
            queue: ctx.queue,
            args: &ctx.job.args,
        };
        lock_key("workerslock", options, self.key.as_ref(), &input)
    }
}

#[async_trait]
impl Plugin for JobLock {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn before_perform(&self, ctx: &mut PerformContext<'_>) -> Result<bool> {
        let options = ctx.options;
        let key = self.key(options, ctx);
        let timeout = positive(options, "lockTimeout")
            .or(self.lock_timeout_secs)
            .unwrap_or(3600);
        let expiry = now_secs()
            .saturating_add(i64::try_from(timeout).unwrap_or(i64::MAX))
            .saturating_add(1);
        let token = format!(
            "{expiry}:{}:{}:{}",
            crate::worker::hostname(),
            std::process::id(),
            TOKENS.fetch_add(1, Ordering::Relaxed)
        );
        let backend = ctx.client.backend();
        if backend.acquire_lock(&key, &token, secs(timeout)).await? {
            ctx.set_note(NOTE, token);
            return Ok(true);
        }
        let re_enqueue = options
            .get("reEnqueue")
            .and_then(Value::as_bool)
            .or(self.re_enqueue)
            .unwrap_or(true);
        if re_enqueue {
            let delay = positive(options, "enqueueTimeout")
                .map(Duration::from_millis)
                .or(self.enqueue_timeout)
                .unwrap_or(Duration::from_millis(1001));
            match ctx
                .client
                .enqueue_in(delay, ctx.queue, &ctx.job.class, ctx.job.args.as_slice())
                .await
            {
                Ok(()) => {}
                Err(e) if e.is_already_scheduled() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    async fn after_perform(&self, ctx: &mut PerformContext<'_>) -> Result<()> {
        let Some(token) = ctx.take_note(NOTE) else {
            return Ok(()); // this copy never held the lock
        };
        let key = self.key(ctx.options, ctx);
        ctx.client.backend().release_lock(&key, &token).await?;
        Ok(())
    }
}
