//! Retry: a failed job runs again after a delay, up to a limit.

use crate::error::Result;
use crate::event::WorkerEvent;
use crate::json::to_js_string;
use crate::plugin::{PerformContext, Plugin};
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// Re-enqueues a failed job after a delay, node-resque's port of
/// resque-retry, with its keys and their bytes kept:
///
/// * **`retry_limit` is the total number of attempts** (node-resque's
///   meaning, not resque-retry's number of retries): the default 1 means no
///   retry at all, 3 means the first run and two retries.
/// * The delay is `backoffStrategy[min(attempt, len-1)]` when a strategy is
///   set, else `retryDelay` (ms, default 5,000); the retry is a delayed job.
/// * `resque-retry:<class>[:<argsKey>]` counts failed attempts from 0 and
///   `failure-resque-retry:<class>:<argsKey>` holds the last error as
///   node-resque writes it; both are deleted after a success or the last
///   attempt. Their TTL is the longest delay plus one hour (node-resque
///   uses the delay's milliseconds as seconds, spec §7.4 #25).
/// * A retried attempt counts as one failure and no success, writes no
///   failed entry, and fires `success` and `re_enqueue` events, as in
///   node-resque. The last attempt fails normally.
#[derive(Clone, Debug, Default)]
pub struct Retry {
    retry_limit: Option<u64>,
    retry_delay: Option<Duration>,
    backoff: Option<Vec<Duration>>,
}

impl Retry {
    /// The name its options are found under: `Retry`.
    pub const NAME: &'static str = "Retry";

    /// A Retry with node-resque's defaults: 1 attempt (no retry), 5 s delay.
    pub fn new() -> Self {
        Self::default()
    }

    /// The total number of attempts (`retryLimit`).
    pub fn retry_limit(mut self, attempts: u64) -> Self {
        self.retry_limit = Some(attempts);
        self
    }

    /// The delay before each retry (`retryDelay`).
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = Some(delay);
        self
    }

    /// Delays per attempt (`backoffStrategy`); the last one repeats.
    pub fn backoff_strategy(mut self, delays: Vec<Duration>) -> Self {
        self.backoff = Some(delays);
        self
    }
}

/// The settings in force for one job: options first, then the builder.
struct Settings {
    limit: i64,
    delay_ms: u64,
    backoff_ms: Vec<u64>,
}

impl Settings {
    fn of(retry: &Retry, options: &Value) -> Settings {
        let limit = super::positive(options, "retryLimit")
            .or(retry.retry_limit.filter(|n| *n > 0))
            .unwrap_or(1);
        let delay_ms = super::positive(options, "retryDelay")
            .or(retry
                .retry_delay
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .filter(|n| *n > 0))
            .unwrap_or(5000);
        let backoff_ms = match options.get("backoffStrategy").and_then(Value::as_array) {
            Some(list) => list.iter().filter_map(Value::as_u64).collect(),
            None => retry
                .backoff
                .iter()
                .flatten()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .collect(),
        };
        Settings {
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
            delay_ms,
            backoff_ms,
        }
    }

    /// How long the attempt keys live: the longest delay plus an hour.
    fn ttl(&self) -> Duration {
        let longest = self.backoff_ms.iter().copied().fold(self.delay_ms.max(1), u64::max);
        Duration::from_millis(longest) + Duration::from_secs(3600)
    }

    /// The delay before the retry that follows failed attempt `count` (0-based).
    fn delay_after(&self, count: i64) -> Duration {
        if self.backoff_ms.is_empty() {
            return Duration::from_millis(self.delay_ms);
        }
        let at = usize::try_from(count.max(0))
            .unwrap_or(usize::MAX)
            .min(self.backoff_ms.len() - 1);
        Duration::from_millis(self.backoff_ms[at])
    }
}

/// node-resque's `argsKey`: each argument as `JSON.stringify` for objects,
/// arrays and null, `String()` otherwise, joined with `-`.
fn args_key(args: &[Value]) -> String {
    args.iter()
        .map(|a| match a {
            Value::String(s) => s.clone(),
            other => to_js_string(other),
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Removes the first whitespace character, as node-resque's non-global `/\s/` does.
fn without_first_space(key: String) -> String {
    match key.char_indices().find(|(_, c)| c.is_whitespace()) {
        Some((at, c)) => {
            let mut out = key;
            out.replace_range(at..at + c.len_utf8(), "");
            out
        }
        None => key,
    }
}

/// The attempt counter's key.
pub(crate) fn retry_key(class: &str, args: &[Value]) -> String {
    let ak = args_key(args);
    if ak.is_empty() {
        without_first_space(format!("resque-retry:{class}"))
    } else {
        without_first_space(format!("resque-retry:{class}:{ak}"))
    }
}

/// The last failure's key (with a trailing `:` when there are no args).
pub(crate) fn failure_key(class: &str, args: &[Value]) -> String {
    without_first_space(format!("failure-resque-retry:{class}:{}", args_key(args)))
}

/// The failure record node-resque writes, field for field.
fn failure_record(ctx: &PerformContext<'_>, error: &crate::task::TaskError) -> String {
    let text = error.to_string();
    let mut backtrace = vec![Value::String(text.clone())];
    backtrace.extend(error.backtrace.iter().cloned().map(Value::String));
    let mut m = Map::new();
    m.insert(
        "failed_at".into(),
        Value::String(chrono::Local::now().format("%Y/%m/%d %H:%M:%S").to_string()),
    );
    m.insert("payload".into(), Value::Array(ctx.job.args.clone()));
    m.insert("exception".into(), Value::String(text.clone()));
    m.insert("error".into(), Value::String(text));
    m.insert("backtrace".into(), Value::Array(backtrace));
    m.insert("worker".into(), Value::String(ctx.job.class.clone()));
    m.insert("queue".into(), Value::String(ctx.queue.to_owned()));
    to_js_string(&Value::Object(m))
}

#[async_trait]
impl Plugin for Retry {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn after_perform(&self, ctx: &mut PerformContext<'_>) -> Result<()> {
        let backend = Arc::clone(ctx.client.backend());
        let rkey = retry_key(&ctx.job.class, &ctx.job.args);
        let fkey = failure_key(&ctx.job.class, &ctx.job.args);
        let Some(error) = ctx.error.clone() else {
            backend.delete_lock(&rkey).await?;
            backend.delete_lock(&fkey).await?;
            return Ok(());
        };
        let settings = Settings::of(self, ctx.options);
        let ttl = settings.ttl();
        // SETNX -1, INCR, EXPIRE: the first failed attempt counts 0.
        backend.acquire_lock(&rkey, "-1", ttl).await?;
        let count = backend.incr_lock(&rkey, 1, ttl).await?;
        // The failed attempt's number, 1-based, on the job's span (see the
        // worker's `execute`): known here without another read.
        tracing::Span::current().record("attempt", count.saturating_add(1).max(1));
        let remaining = settings.limit - count - 1;
        backend.set_lock(&fkey, &failure_record(ctx, &error), ttl).await?;
        if remaining <= 0 {
            backend.delete_lock(&rkey).await?;
            backend.delete_lock(&fkey).await?;
            return Ok(()); // the error stands: a normal failure
        }
        let delay = settings.delay_after(count);
        match ctx
            .client
            .enqueue_in(delay, ctx.queue, &ctx.job.class, ctx.job.args.as_slice())
            .await
        {
            Ok(()) => {}
            // The identical job is already delayed for that second: it is the retry.
            Err(e) if e.is_already_scheduled() => {}
            Err(e) => return Err(e),
        }
        ctx.count_failed().await?;
        tracing::info!(target: "resq::plugin", worker = %ctx.worker, queue = %ctx.queue, class = %ctx.job.class,
            ?delay, remaining, %error, "Retry: re-enqueued");
        ctx.emit(WorkerEvent::ReEnqueue {
            worker: ctx.worker.to_owned(),
            queue: ctx.queue.to_owned(),
            job: Arc::clone(&ctx.job),
            delay,
            remaining_attempts: remaining,
            error: error.to_string(),
        });
        ctx.error = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_match_node_resque() {
        assert_eq!(
            retry_key("brokenJob", &[json!(1), json!(2)]),
            "resque-retry:brokenJob:1-2"
        );
        assert_eq!(
            failure_key("brokenJob", &[json!(1), json!(2)]),
            "failure-resque-retry:brokenJob:1-2"
        );
        assert_eq!(retry_key("job", &[]), "resque-retry:job");
        assert_eq!(failure_key("job", &[]), "failure-resque-retry:job:");
        assert_eq!(
            retry_key("job", &[json!({"a": 1}), json!(null), json!("x y z")]),
            r#"resque-retry:job:{"a":1}-null-xy z"#
        );
    }

    #[test]
    fn settings_follow_options_then_builder() {
        let r = Retry::new().retry_limit(4).retry_delay(Duration::from_millis(100));
        let s = Settings::of(&r, &json!({}));
        assert_eq!((s.limit, s.delay_ms), (4, 100));
        let s = Settings::of(
            &r,
            &json!({"retryLimit": 2, "retryDelay": 0, "backoffStrategy": [10, 20]}),
        );
        assert_eq!((s.limit, s.delay_ms), (2, 100));
        assert_eq!(s.delay_after(0), Duration::from_millis(10));
        assert_eq!(s.delay_after(7), Duration::from_millis(20));
        let d = Settings::of(&Retry::new(), &json!({}));
        assert_eq!((d.limit, d.delay_ms), (1, 5000));
        assert_eq!(d.ttl(), Duration::from_millis(5000) + Duration::from_secs(3600));
    }
}
