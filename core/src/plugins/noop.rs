//! Noop: failures are logged and recorded as successes.

use crate::error::Result;
use crate::plugin::{PerformContext, Plugin};
use crate::task::TaskError;
use async_trait::async_trait;
use std::sync::Arc;

/// A function that is given each error Noop suppresses.
pub type ErrorLogger = Arc<dyn Fn(&TaskError) + Send + Sync>;

/// Turns a failed run into a success: the error is logged (through
/// `tracing` at warn level, or through a logger of your own) and cleared,
/// so `processed` goes up, no failed entry is written and `success` fires.
#[derive(Clone, Default)]
pub struct Noop {
    logger: Option<ErrorLogger>,
}

impl std::fmt::Debug for Noop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Noop")
            .field("custom_logger", &self.logger.is_some())
            .finish()
    }
}

impl Noop {
    /// The name its options are found under: `Noop`.
    pub const NAME: &'static str = "Noop";

    /// A Noop that logs through `tracing`.
    pub fn new() -> Self {
        Self::default()
    }

    /// A Noop that gives each suppressed error to `logger`.
    pub fn with_logger(logger: impl Fn(&TaskError) + Send + Sync + 'static) -> Self {
        Noop {
            logger: Some(Arc::new(logger)),
        }
    }
}

#[async_trait]
impl Plugin for Noop {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn after_perform(&self, ctx: &mut PerformContext<'_>) -> Result<()> {
        if let Some(error) = ctx.error.take() {
            match &self.logger {
                Some(log) => log(&error),
                None => tracing::warn!(target: "resq::plugin", worker = %ctx.worker, queue = %ctx.queue,
                    class = %ctx.job.class, %error, "Noop: failure suppressed"),
            }
        }
        Ok(())
    }
}
