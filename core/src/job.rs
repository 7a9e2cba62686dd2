//! The job payload: Resque's `{"class","queue","args"}` JSON.
//!
//! resq writes node-resque's bytes (key order `class`, `queue`, `args`, and
//! `JSON.stringify` formatting, see [`crate::json`]) and reads any key order,
//! extra keys, and Ruby's `{"class","args"}` form. A decoded [`Job`] keeps
//! the raw bytes it came from, so a payload is never re-encoded on its way
//! through working-on records, failed entries and retries.
//!
//! # The `[]` repair
//!
//! node-resque's worker records the job it took by decoding and re-encoding
//! it with Redis's `cjson`, which cannot tell an empty array from an empty
//! object and writes both as `{}` (redis/redis#856). Such a record reaches
//! resq when resq cleans a dead node-resque worker, and it reaches the failed
//! list when node-resque's own cleanup (`forceCleanWorker`) fails it. So
//! wherever resq takes a payload from one of those places, cleaning a worker
//! ([`crate::WorkerRegistry::clean_worker`]) and retrying a failed entry
//! ([`crate::Queue::retry_and_remove_failed`], [`crate::Queue::retry_stuck_jobs`]),
//! it applies [`repair_cjson_empty_args`]. The rule:
//!
//! * a top-level `"args":{}` is always turned back into `"args":[]`, whether
//!   the payload names its queue (node-resque) or not (Ruby): every Resque
//!   client writes `args` as an array, so `{}` there can only be `cjson`'s;
//! * an empty `{}` *inside* `args` is kept as it is: a real empty object
//!   (ActionHero enqueues `[{}]`) and a mangled empty array are then the same
//!   bytes, and nothing in the record tells them apart. For the same reason
//!   `[{}]`, which node-resque's own retry makes of `{}`, is kept;
//! * nothing else is changed (`cjson`'s key order, `\/` escapes and rounded
//!   big integers decode to the same job or cannot be undone).
//!
//! Payloads that resq itself recorded are never re-encoded, so the repair
//! never changes them.

use crate::error::{Error, Result};
use crate::json::{write_js, write_js_str};
use serde_json::Value;

/// Turns caller-supplied arguments into Resque's args array.
///
/// A JSON array is used as is, `null` (Rust's `()` or `None`) means no
/// arguments (`[]`), and any other value is wrapped: `7` becomes `[7]`. Tuples
/// serialize to arrays, so `(1, 2)` gives `[1,2]`.
pub fn wrap_args(args: Value) -> Vec<Value> {
    match args {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// Serializes any `Serialize` value into an args array (see [`wrap_args`]).
pub fn args_of<A: serde::Serialize + ?Sized>(args: &A) -> Result<Vec<Value>> {
    let value = serde_json::to_value(args).map_err(|e| Error::Encode {
        what: "job arguments",
        reason: e.to_string(),
    })?;
    Ok(wrap_args(value))
}

/// node-resque's payload bytes: `{"class":…,"queue":…,"args":[…]}`.
pub fn encode_payload(queue: &str, class: &str, args: &[Value]) -> String {
    let mut out = String::with_capacity(32 + class.len() + queue.len());
    out.push_str("{\"class\":");
    write_js_str(&mut out, class);
    out.push_str(",\"queue\":");
    write_js_str(&mut out, queue);
    out.push_str(",\"args\":");
    write_args(&mut out, args);
    out.push('}');
    out
}

/// resque-scheduler's delayed-item bytes: `{"class":…,"args":[…],"queue":…}`.
/// Used to find delayed jobs that Ruby wrote (`scheduled_at`, `del_delayed`).
pub fn encode_payload_rs_order(queue: &str, class: &str, args: &[Value]) -> String {
    let mut out = String::with_capacity(32 + class.len() + queue.len());
    out.push_str("{\"class\":");
    write_js_str(&mut out, class);
    out.push_str(",\"args\":");
    write_args(&mut out, args);
    out.push_str(",\"queue\":");
    write_js_str(&mut out, queue);
    out.push('}');
    out
}

fn write_args(out: &mut String, args: &[Value]) {
    out.push('[');
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_js(out, a);
    }
    out.push(']');
}

/// A decoded job payload together with the bytes it was decoded from.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// The job's class: the name of the task that runs it.
    pub class: String,
    /// The queue named inside the payload. Ruby payloads have none.
    pub queue: Option<String>,
    /// The arguments, always an array (a non-array `args` is wrapped).
    pub args: Vec<Value>,
    /// The exact bytes this job was decoded from.
    pub raw: String,
}

impl Job {
    /// Builds a job in node-resque's format.
    pub fn new(queue: &str, class: &str, args: Vec<Value>) -> Self {
        let raw = encode_payload(queue, class, &args);
        Job {
            class: class.to_owned(),
            queue: Some(queue.to_owned()),
            args,
            raw,
        }
    }

    /// Decodes a payload written by any Resque client. Never panics: a value
    /// that is not a JSON object with a string `class` is an [`Error::Decode`].
    pub fn decode(raw: &str) -> Result<Job> {
        Self::decode_owned(raw.to_owned())
    }

    /// Like [`Job::decode`], taking ownership of the bytes (no copy).
    pub fn decode_owned(raw: String) -> Result<Job> {
        let err = |reason: String| Error::Decode {
            what: "job payload",
            reason,
        };
        // A struct also deserializes from a JSON array (positionally), so
        // `["x"]` would pass as class `x`: only an object is a job.
        if !raw.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('{') {
            return Err(err("the payload is not a JSON object".into()));
        }
        // Only the three fields resq reads are decoded; other keys are skipped.
        #[derive(serde::Deserialize)]
        struct Wire {
            #[serde(default)]
            class: Option<Value>,
            #[serde(default)]
            queue: Option<Value>,
            #[serde(default)]
            args: Option<Value>,
        }
        // Arrays are refused above, so a data error here is about the
        // object's keys (a duplicate `class`, say): report it as it is.
        let wire: Wire = match serde_json::from_str(&raw) {
            Ok(w) => w,
            Err(e) if e.classify() == serde_json::error::Category::Data => {
                return Err(err(format!("the payload object is invalid: {e}")))
            }
            Err(e) => return Err(err(e.to_string())),
        };
        let class = match wire.class {
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(Value::String(_)) => return Err(err("`class` is empty".into())),
            Some(_) => return Err(err("`class` is not a string".into())),
            None => return Err(err("`class` is missing".into())),
        };
        let queue = match wire.queue {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s),
            _ => None,
        };
        let args = match wire.args {
            None => Vec::new(),
            Some(v) => wrap_args_strict(v),
        };
        Ok(Job {
            class,
            queue,
            args,
            raw,
        })
    }

    /// The queue this job belongs to: the one in the payload, else `fallback`
    /// (the list it was popped from).
    pub fn queue_or<'a>(&'a self, fallback: &'a str) -> &'a str {
        self.queue.as_deref().unwrap_or(fallback)
    }
}

/// Undoes the one change node-resque's working-on records make to a job
/// that can be undone (see the module docs, "The `[]` repair"): its Lua
/// script re-encodes the payload through Redis's `cjson`, which writes an
/// empty `args` array as `{}`. For a payload whose top-level `args` is `{}`
/// this returns the payload with `"args":[]`: node-resque's bytes when it
/// names a queue, Ruby's `{"class":…,"args":[]}` when it does not. For any
/// other payload it returns `None` (use the bytes as they are).
pub fn repair_cjson_empty_args(raw: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Wire {
        class: String,
        #[serde(default)]
        queue: Option<Value>,
        args: Value,
    }
    let wire: Wire = serde_json::from_str(raw).ok()?;
    if wire.class.is_empty() || !matches!(&wire.args, Value::Object(m) if m.is_empty()) {
        return None;
    }
    match wire.queue {
        Some(Value::String(queue)) if !queue.trim().is_empty() => Some(encode_payload(&queue, &wire.class, &[])),
        _ => {
            let mut out = String::from("{\"class\":");
            write_js_str(&mut out, &wire.class);
            out.push_str(",\"args\":[]}");
            Some(out)
        }
    }
}

/// [`repair_cjson_empty_args`] applied: the repaired bytes, or `raw` as it is.
pub fn repaired_payload(raw: String) -> String {
    repair_cjson_empty_args(&raw).unwrap_or(raw)
}

/// Where promotion sends a delayed item: its queue, or why it cannot be
/// promoted (it does not decode, or names no queue). Every backend uses
/// this, so all of them write the same failed entries.
pub fn promotion_target(raw: &str) -> std::result::Result<String, String> {
    match Job::decode(raw) {
        Ok(Job { queue: Some(q), .. }) => Ok(q),
        Ok(_) => Err("the delayed job names no queue".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// Like [`wrap_args`], but as a reader: a stored `null` is node-resque's
/// `[null]`, not "no arguments".
fn wrap_args_strict(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        other => vec![other],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_node_resque_bytes() {
        assert_eq!(
            encode_payload("math", "add", &[json!(1), json!(2)]),
            r#"{"class":"add","queue":"math","args":[1,2]}"#
        );
        assert_eq!(
            encode_payload_rs_order("math", "add", &[json!(1.0)]),
            r#"{"class":"add","args":[1],"queue":"math"}"#
        );
    }

    #[test]
    fn wraps_args_like_node_resque() {
        assert_eq!(wrap_args(json!(1)), vec![json!(1)]);
        assert_eq!(wrap_args(json!({"a": 1})), vec![json!({"a": 1})]);
        assert_eq!(wrap_args(json!(null)), Vec::<Value>::new());
        assert_eq!(args_of(&(1, "x")).unwrap(), vec![json!(1), json!("x")]);
    }

    #[test]
    fn decodes_every_dialect() {
        let ruby = Job::decode(r#"{"class":"Archive","args":[35,"tar"]}"#).unwrap();
        assert_eq!(ruby.queue, None);
        assert_eq!(ruby.queue_or("files"), "files");
        let rs = Job::decode(r#"{"class":"X","args":{"a":1},"queue":"q","extra":true}"#).unwrap();
        assert_eq!(rs.args, vec![json!({"a": 1})]);
        assert_eq!(rs.queue.as_deref(), Some("q"));
        let big = r#"{"class":"X","queue":"q","args":[12345678901234567890]}"#;
        assert_eq!(Job::decode(big).unwrap().raw, big);
    }

    #[test]
    fn repairs_cjson_mangled_empty_args() {
        assert_eq!(
            repair_cjson_empty_args(r#"{"class":"slow","args":{},"queue":"q"}"#).as_deref(),
            Some(r#"{"class":"slow","queue":"q","args":[]}"#)
        );
        assert_eq!(
            repair_cjson_empty_args(r#"{"class":"a","queue":"q","args":[{}]}"#),
            None
        );
        assert_eq!(
            repair_cjson_empty_args(r#"{"class":"a","queue":"q","args":{"x":1}}"#),
            None
        );
        assert_eq!(repair_cjson_empty_args(r#"{"class":"a","queue":"q","args":[]}"#), None);
    }

    #[test]
    fn repairs_ruby_shaped_payloads_without_a_queue() {
        assert_eq!(
            repair_cjson_empty_args(r#"{"class":"Archive","args":{}}"#).as_deref(),
            Some(r#"{"class":"Archive","args":[]}"#)
        );
        assert_eq!(
            repair_cjson_empty_args(r#"{"args":{},"class":"A\/B","queue":null}"#).as_deref(),
            Some(r#"{"class":"A/B","args":[]}"#)
        );
        assert_eq!(
            repaired_payload(r#"{"class":"a","args":[{}]}"#.to_owned()),
            r#"{"class":"a","args":[{}]}"#
        );
        assert_eq!(repair_cjson_empty_args(r#"{"class":"","args":{}}"#), None);
    }

    #[test]
    fn duplicate_class_is_reported_as_such() {
        let e = Job::decode(r#"{"class":"a","class":"b","args":[]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("duplicate field `class`"), "{e}");
        assert!(!e.contains("not a JSON object"), "{e}");
        let e = Job::decode(r#"["add","q",[1]]"#).unwrap_err().to_string();
        assert!(e.contains("not a JSON object"), "{e}");
    }

    #[test]
    fn rejects_bad_payloads_without_panicking() {
        for raw in [
            "",
            "[]",
            "{",
            r#"{"args":[]}"#,
            r#"{"class":5}"#,
            r#"{"class":""}"#,
            r#"["add","q",[1]]"#,
        ] {
            assert!(Job::decode(raw).is_err(), "{raw}");
        }
    }
}

/// A stored payload as inspection calls return it: a decoded job, or the
/// raw bytes and the reason they do not decode. Nothing is hidden or dropped.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    /// A payload that decodes.
    Job(Job),
    /// A payload that does not.
    Invalid {
        /// The bytes as stored.
        raw: String,
        /// Why they do not decode.
        reason: String,
    },
}

impl Decoded {
    /// Decodes `raw`, keeping undecodable bytes.
    pub fn from_raw(raw: String) -> Self {
        match Job::decode(&raw) {
            Ok(job) => Decoded::Job(job),
            Err(e) => Decoded::Invalid {
                raw,
                reason: e.to_string(),
            },
        }
    }

    /// The job, if the payload decodes.
    pub fn job(&self) -> Option<&Job> {
        match self {
            Decoded::Job(j) => Some(j),
            Decoded::Invalid { .. } => None,
        }
    }

    /// The bytes as stored.
    pub fn raw(&self) -> &str {
        match self {
            Decoded::Job(j) => &j.raw,
            Decoded::Invalid { raw, .. } => raw,
        }
    }
}
