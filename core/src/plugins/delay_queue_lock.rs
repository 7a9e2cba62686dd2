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

    /// The plugin, as the other built-ins are made (it has no options).
    pub fn new() -> Self {
        DelayQueueLock
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_like_the_other_plugins() {
        let plugin = DelayQueueLock::new();
        assert_eq!(plugin.name(), DelayQueueLock::NAME);
        let def = crate::task::TaskDef::from_fn("t", |_: (serde_json::Value,), _ctx: crate::task::JobContext| async {
            Ok::<_, crate::task::TaskError>(())
        })
        .plugin(DelayQueueLock::new());
        assert_eq!(def.plugins().len(), 1);
    }
}
