//! The built-in plugins, with node-resque's names, options and Redis keys,
//! and the fixes listed in the wire spec (§7.4):
//!
//! | plugin | does | options (`plugin_options[name]`) |
//! |---|---|---|
//! | [`QueueLock`] | at most one identical job *queued*: `enqueue` is vetoed while the lock `lock:<class>:<queue>:<args>` is held; released when a worker takes the job | `lockTimeout` (s, 3600), `key` |
//! | [`JobLock`] | at most one identical job *running*: a copy that finds `workerslock:<class>:<queue>:<args>` held is re-enqueued (or dropped) | `lockTimeout` (s, 3600), `reEnqueue` (true), `enqueueTimeout` (ms, 1001), `key` |
//! | [`DelayQueueLock`] | vetoes `enqueue` while an identical job is delayed | — |
//! | [`Retry`] | re-enqueues a failed job after a delay, up to a limit | `retryLimit` (1), `retryDelay` (ms, 5000), `backoffStrategy` (ms list) |
//! | [`Noop`] | logs a failure and records the run as a success | — |
//!
//! Every built-in also takes its options from a builder, used when the
//! task's `plugin_options` do not set them. On Redis the keys are
//! node-resque's, so resq and node-resque honour each other's locks; on
//! the other backends they are rows of the same [`crate::LockStore`].

mod delay_queue_lock;
mod job_lock;
mod noop;
mod queue_lock;
mod retry;

pub use delay_queue_lock::DelayQueueLock;
pub use job_lock::JobLock;
pub use noop::Noop;
pub use queue_lock::QueueLock;
pub use retry::Retry;

use crate::json::to_js_string;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// What a custom lock-key function is given.
#[derive(Clone, Copy, Debug)]
pub struct LockKeyInput<'a> {
    /// The task name.
    pub class: &'a str,
    /// The queue.
    pub queue: &'a str,
    /// The job's arguments.
    pub args: &'a [Value],
}

/// A custom lock-key function (node-resque's `options.key` as a function).
pub type KeyFn = Arc<dyn Fn(&LockKeyInput<'_>) -> String + Send + Sync>;

/// node-resque's default lock key: `<prefix>:<class>:<queue>:<JSON args>`.
pub(crate) fn default_key(prefix: &str, input: &LockKeyInput<'_>) -> String {
    format!(
        "{prefix}:{}:{}:{}",
        input.class,
        input.queue,
        to_js_string(&Value::Array(input.args.to_vec()))
    )
}

/// The key a lock plugin uses: `options.key` if it is a string, else the
/// builder's key function, else the default.
pub(crate) fn lock_key(prefix: &str, options: &Value, key_fn: Option<&KeyFn>, input: &LockKeyInput<'_>) -> String {
    if let Some(key) = options.get("key").and_then(Value::as_str) {
        return key.to_owned();
    }
    match key_fn {
        Some(f) => f(input),
        None => default_key(prefix, input),
    }
}

/// A positive number option (node-resque treats 0 and absent alike: `x || default`).
pub(crate) fn positive(options: &Value, name: &str) -> Option<u64> {
    let v = options.get(name)?;
    let n = v
        .as_u64()
        .or_else(|| v.as_f64().filter(|f| *f >= 1.0).map(|f| f as u64))?;
    (n > 0).then_some(n)
}

/// node-resque's `Math.round(Date.now() / 1000)`.
pub(crate) fn now_secs() -> i64 {
    crate::time::bucket_of_ms(crate::time::now_ms())
}

/// A lock TTL of `secs` seconds.
pub(crate) fn secs(secs: u64) -> Duration {
    Duration::from_secs(secs)
}
