//! DelayQueueLock: no enqueue while an identical job is delayed.

use crate::error::Result;
use crate::plugin::{EnqueueContext, Plugin};
use async_trait::async_trait;

/// Vetoes `enqueue` while an identical job (same class, queue and args, in
/// node-resque's or Ruby's encoding) waits in the delayed schedule. It has
/// no other hook. As with every enqueue hook it does not run for
/// `enqueue_at`/`enqueue_in` or at promotion, so it can never keep a
/// delayed job from being promoted (node-resque issue #145).
#[derive(Clone, Copy, Debug, Default)]
pub struct DelayQueueLock;

impl DelayQueueLock {
    /// The name its options are found under: `DelayQueueLock`.
    pub const NAME: &'static str = "DelayQueueLock";
}

#[async_trait]
impl Plugin for DelayQueueLock {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn before_enqueue(&self, ctx: &EnqueueContext<'_>) -> Result<bool> {
        let at = ctx.client.scheduled_at(ctx.queue, ctx.class, ctx.args).await?;
        Ok(at.is_empty())
    }
}
