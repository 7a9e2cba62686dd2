//! QueueLock: at most one identical job queued.

use super::{lock_key, now_secs, positive, secs, KeyFn, LockKeyInput};
use crate::error::Result;
use crate::plugin::{EnqueueContext, PerformContext, Plugin};
use async_trait::async_trait;
use std::sync::Arc;

/// Vetoes `enqueue` while an identical job (same class, queue and args) is
/// queued. The lock is taken with one atomic `SET NX EX` (node-resque sets
/// the TTL in a second command, which a crash can skip, issue #287) and
/// holds `now + lockTimeout + 1` (Unix s), node-resque's value, so a lock
/// left without a TTL by another client is still taken over once that time
/// has passed. It is released when a worker takes the job, before the job
/// runs and before any later plugin can veto the run.
#[derive(Clone, Default)]
pub struct QueueLock {
    lock_timeout_secs: Option<u64>,
    key: Option<KeyFn>,
}

impl std::fmt::Debug for QueueLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueLock")
            .field("lock_timeout_secs", &self.lock_timeout_secs)
            .field("custom_key", &self.key.is_some())
            .finish()
    }
}

impl QueueLock {
    /// The name its options are found under: `QueueLock`.
    pub const NAME: &'static str = "QueueLock";

    /// A QueueLock with node-resque's defaults (one hour).
    pub fn new() -> Self {
        Self::default()
    }

    /// How long a lock lives at most, in seconds (`lockTimeout`).
    pub fn lock_timeout_secs(mut self, secs: u64) -> Self {
        self.lock_timeout_secs = Some(secs);
        self
    }

    /// Computes the lock key from the job instead of the default.
    pub fn key_fn(mut self, f: impl Fn(&LockKeyInput<'_>) -> String + Send + Sync + 'static) -> Self {
        self.key = Some(Arc::new(f));
        self
    }

    fn timeout(&self, options: &serde_json::Value) -> u64 {
        positive(options, "lockTimeout")
            .or(self.lock_timeout_secs)
            .unwrap_or(3600)
    }

    fn key(&self, options: &serde_json::Value, input: &LockKeyInput<'_>) -> String {
        lock_key("lock", options, self.key.as_ref(), input)
    }
}

#[async_trait]
impl Plugin for QueueLock {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn before_enqueue(&self, ctx: &EnqueueContext<'_>) -> Result<bool> {
        let input = LockKeyInput {
            class: ctx.class,
            queue: ctx.queue,
            args: ctx.args,
        };
        let key = self.key(ctx.options, &input);
        let timeout = self.timeout(ctx.options);
        let now = now_secs();
        let value = now
            .saturating_add(i64::try_from(timeout).unwrap_or(i64::MAX))
            .saturating_add(1)
            .to_string();
        let backend = ctx.client.backend();
        if backend.acquire_lock(&key, &value, secs(timeout)).await? {
            return Ok(true);
        }
        let Some(held) = backend.get_lock(&key).await? else {
            // Expired between the two calls: try once more.
            return backend.acquire_lock(&key, &value, secs(timeout)).await;
        };
        // node-resque: a value that is not a number counts as stale.
        let stored = held.value.trim().parse::<i64>().unwrap_or(0);
        if now <= stored {
            return Ok(false);
        }
        // Stale (a lock some client left without a TTL): take it over, but
        // only if nobody else did meanwhile.
        if backend.release_lock(&key, &held.value).await? {
            return backend.acquire_lock(&key, &value, secs(timeout)).await;
        }
        Ok(false)
    }

    async fn before_perform(&self, ctx: &mut PerformContext<'_>) -> Result<bool> {
        let input = LockKeyInput {
            class: &ctx.job.class,
            queue: ctx.queue,
            args: &ctx.job.args,
        };
        let key = self.key(ctx.options, &input);
        ctx.client.backend().delete_lock(&key).await?;
        Ok(true)
    }
}
