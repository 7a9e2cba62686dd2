//! Failed-job entries: the JSON objects in Resque's `failed` list.
//!
//! resq writes node-resque's seven fields in its order (`worker`, `queue`,
//! `payload`, `exception`, `error`, `backtrace`, `failed_at`) with the job's
//! original payload bytes spliced in, and reads entries from any client,
//! Ruby's included (other key orders, `retried_at`).

use crate::error::{Error, Result};
use crate::json::write_js_str;
use serde::Deserialize;
use serde_json::value::RawValue;

/// Why a job failed: the error half of a failed entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The error's kind, e.g. `Error`, `PayloadError`, `Worker Timeout (killed manually)`.
    pub exception: String,
    /// The error message.
    pub error: String,
    /// Free-form backtrace lines.
    pub backtrace: Vec<String>,
}

impl Failure {
    /// A failure with the given kind and message and no backtrace.
    pub fn new(exception: impl Into<String>, error: impl Into<String>) -> Self {
        Failure {
            exception: exception.into(),
            error: error.into(),
            backtrace: Vec::new(),
        }
    }

    /// Adds backtrace lines.
    pub fn with_backtrace(mut self, lines: Vec<String>) -> Self {
        self.backtrace = lines;
        self
    }
}

/// The exception name resq records for a worker found dead by the scheduler
/// or cleaned by hand, as node-resque does.
pub const WORKER_TIMEOUT: &str = "Worker Timeout (killed manually)";

/// The second backtrace line that marks an entry written by
/// `force_clean_worker`; `retry_stuck_jobs` retries exactly those entries.
pub const FORCE_CLEAN_MARK: &str = "queue#forceCleanWorker";

/// Builds the JSON text of a failed entry. `payload_raw` is spliced in
/// unchanged when it is valid JSON, and stored as a JSON string otherwise,
/// so that an undecodable payload still reaches the failed list intact.
pub fn encode_entry(worker: &str, queue: &str, payload_raw: &str, failure: &Failure, failed_at_ms: i64) -> String {
    let mut out = String::with_capacity(160 + payload_raw.len());
    out.push_str("{\"worker\":");
    write_js_str(&mut out, worker);
    out.push_str(",\"queue\":");
    write_js_str(&mut out, queue);
    out.push_str(",\"payload\":");
    if serde_json::from_str::<serde::de::IgnoredAny>(payload_raw).is_ok() {
        out.push_str(payload_raw.trim());
    } else {
        write_js_str(&mut out, payload_raw);
    }
    out.push_str(",\"exception\":");
    write_js_str(&mut out, &failure.exception);
    out.push_str(",\"error\":");
    write_js_str(&mut out, &failure.error);
    out.push_str(",\"backtrace\":[");
    for (i, line) in failure.backtrace.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_js_str(&mut out, line);
    }
    out.push_str("],\"failed_at\":");
    write_js_str(&mut out, &crate::time::js_date_string(failed_at_ms));
    out.push('}');
    out
}

/// The worker name recorded on entries that the scheduler writes for
/// delayed items it cannot promote.
pub const SCHEDULER_WORKER: &str = "resq-scheduler";

/// The exception name for payloads that cannot be decoded.
pub const PAYLOAD_ERROR: &str = "PayloadError";

/// The `exception` of a job stopped at its timeout ([`crate::TaskDef::timeout`]):
/// a Ruby-style class name, so that Resque tools show it like any other.
pub const JOB_TIMEOUT: &str = "Resq::JobTimeout";

/// The failed entry for a delayed item that cannot be promoted (it does not
/// decode, or names no queue). Every backend writes exactly this.
pub fn promotion_failure_entry(payload_raw: &str, reason: &str, at_ms: i64) -> String {
    let failure = Failure::new(PAYLOAD_ERROR, format!("cannot promote delayed job: {reason}"));
    encode_entry(SCHEDULER_WORKER, "", payload_raw, &failure, at_ms)
}

/// Escapes bytes losslessly into printable ASCII text: every byte from
/// `0x20` to `0x7e` stays as it is except the backslash, which becomes
/// `\\`; every other byte becomes `\xNN` (two lowercase hex digits).
/// [`unescape_bytes`] gives the bytes back. The Redis backend uses it for
/// stored values that are not valid UTF-8, which a `String` cannot hold:
/// listings show them escaped, and failed entries keep them so.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 8);
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// The bytes that [`escape_bytes`] escaped; `None` for text it cannot have
/// written (a lone backslash, a bad `\x` sequence, a byte outside printable ASCII).
pub fn unescape_bytes(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => match bytes.get(i + 1) {
                Some(b'\\') => {
                    out.push(b'\\');
                    i += 2;
                }
                Some(b'x') => {
                    let hex = text.get(i + 2..i + 4)?;
                    if !hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
                        return None;
                    }
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 4;
                }
                _ => return None,
            },
            b @ 0x20..=0x7e => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The start of the `error` of a failed entry whose payload was not valid
/// UTF-8; its `payload` is then a JSON string holding the bytes escaped with
/// [`escape_bytes`] (see [`FailedJob::payload_bytes`]).
pub const INVALID_UTF8: &str = "the payload is not valid UTF-8";

/// The `error` text for a payload that is not valid UTF-8, read from `key`.
pub fn invalid_utf8_reason(key: &str) -> String {
    format!("{INVALID_UTF8} (read from {key}); `payload` holds its bytes escaped: \\xNN per byte outside printable ASCII, \\\\ per backslash")
}

/// The failed entry for a stored payload that is not valid UTF-8, read from
/// `key`: the bytes escaped (a JSON string in `payload`) and the reason.
pub fn invalid_utf8_entry(worker: &str, queue: &str, bytes: &[u8], key: &str, at_ms: i64) -> String {
    let failure = Failure::new(PAYLOAD_ERROR, invalid_utf8_reason(key));
    let mut payload = String::new();
    write_js_str(&mut payload, &escape_bytes(bytes));
    encode_entry(worker, queue, &payload, &failure, at_ms)
}

/// A decoded failed entry plus its raw bytes, which identify it for
/// [`crate::Queue::remove_failed`] and [`crate::Queue::retry_and_remove_failed`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FailedJob {
    /// The worker that failed it (`host:pid`, or Ruby's `host:pid:queues`).
    pub worker: Option<String>,
    /// The queue the job came from.
    pub queue: Option<String>,
    /// The job payload's raw JSON text.
    pub payload: Option<String>,
    /// The error kind.
    pub exception: Option<String>,
    /// The error message.
    pub error: Option<String>,
    /// Backtrace lines.
    pub backtrace: Vec<String>,
    /// When it failed, as the writer formatted it.
    pub failed_at: Option<String>,
    /// When Ruby resque last re-queued it, if ever.
    pub retried_at: Option<String>,
    /// The entry exactly as stored.
    pub raw: String,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(default)]
    worker: Option<String>,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default, borrow)]
    payload: Option<&'a RawValue>,
    #[serde(default)]
    exception: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    backtrace: Option<Vec<Option<String>>>,
    #[serde(default)]
    failed_at: Option<String>,
    #[serde(default)]
    retried_at: Option<String>,
}

impl FailedJob {
    /// Decodes an entry written by any Resque client.
    pub fn decode(raw: &str) -> Result<FailedJob> {
        let wire: Wire<'_> = serde_json::from_str(raw).map_err(|e| Error::Decode {
            what: "failed entry",
            reason: e.to_string(),
        })?;
        Ok(FailedJob {
            worker: wire.worker,
            queue: wire.queue,
            payload: wire.payload.map(|p| p.get().to_owned()).filter(|p| p != "null"),
            exception: wire.exception,
            error: wire.error,
            backtrace: wire.backtrace.unwrap_or_default().into_iter().flatten().collect(),
            failed_at: wire.failed_at,
            retried_at: wire.retried_at,
            raw: raw.to_owned(),
        })
    }

    /// Decodes an entry, or, when it is not a JSON object, returns one with
    /// only `raw` and an `error` saying why, so that listings show it.
    pub fn decode_lenient(raw: &str) -> FailedJob {
        FailedJob::decode(raw).unwrap_or_else(|e| FailedJob {
            worker: None,
            queue: None,
            payload: None,
            exception: Some(PAYLOAD_ERROR.into()),
            error: Some(e.to_string()),
            backtrace: Vec::new(),
            failed_at: None,
            retried_at: None,
            raw: raw.to_owned(),
        })
    }

    /// The failed job's payload, decoded.
    pub fn job(&self) -> Result<crate::job::Job> {
        match &self.payload {
            Some(p) => crate::job::Job::decode(p),
            None => Err(Error::Decode {
                what: "failed entry",
                reason: "it has no payload".into(),
            }),
        }
    }

    /// The payload's original bytes when the entry was written for a payload
    /// that is not valid UTF-8 (its `error` starts with [`INVALID_UTF8`] and its
    /// `payload` is the escaped text); `None` for any other entry.
    pub fn payload_bytes(&self) -> Option<Vec<u8>> {
        if !self.error.as_deref()?.starts_with(INVALID_UTF8) {
            return None;
        }
        let text: String = serde_json::from_str(self.payload.as_deref()?).ok()?;
        unescape_bytes(&text)
    }

    /// True when `force_clean_worker` (or the scheduler's stuck-worker
    /// cleanup in fail mode) wrote this entry.
    pub fn is_force_cleaned(&self) -> bool {
        self.backtrace.get(1).map(String::as_str) == Some(FORCE_CLEAN_MARK)
    }
}

/// A stable identity for one failed entry: its position in the failed list
/// (0 is the head) plus the SHA-256 digest of its exact stored bytes (as
/// listed, see [`FailedJob::raw`]). Actions by id
/// ([`crate::Queue::remove_failed_by_id`], [`crate::Queue::retry_failed_by_id`])
/// act only when the entry at that position still has those bytes, checked
/// atomically by the backend, and refuse with [`Error::StaleFailedEntry`]
/// otherwise. SHA-256 (not a 64-bit hash) makes two different entries at
/// one position practically never share an id, even entries crafted to.
///
/// Text form: `<position>-<64 lowercase hex digits>`, e.g.
/// `3-9f86d081…`; [`FromStr`](std::str::FromStr) parses exactly what
/// [`Display`](std::fmt::Display) writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FailedId {
    index: u64,
    digest: [u8; 32],
}

impl FailedId {
    /// The id of entry `raw` (its exact bytes) at position `index`.
    pub fn new(index: u64, raw: &str) -> FailedId {
        use sha2::{Digest, Sha256};
        FailedId {
            index,
            digest: Sha256::digest(raw.as_bytes()).into(),
        }
    }

    /// The position in the failed list (0 is the head).
    pub fn index(&self) -> u64 {
        self.index
    }

    /// True when `raw` has the digest this id names.
    pub fn matches(&self, raw: &str) -> bool {
        FailedId::new(self.index, raw).digest == self.digest
    }
}

impl std::fmt::Display for FailedId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-", self.index)?;
        for b in self.digest {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for FailedId {
    type Err = Error;

    fn from_str(text: &str) -> Result<FailedId> {
        let bad = |reason: &'static str| Error::MalformedFailedId {
            text: text.to_owned(),
            reason,
        };
        let (index, hex) = text
            .split_once('-')
            .ok_or_else(|| bad("expected <position>-<64 hex digits>"))?;
        if index.is_empty() || !index.bytes().all(|c| c.is_ascii_digit()) || (index.len() > 1 && index.starts_with('0'))
        {
            return Err(bad("the position is not a decimal number without leading zeros"));
        }
        let index: u64 = index.parse().map_err(|_| bad("the position is too large"))?;
        if hex.len() != 64 || !hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
            return Err(bad("the digest is not 64 lowercase hex digits"));
        }
        let mut digest = [0u8; 32];
        for (i, byte) in digest.iter_mut().enumerate() {
            let pair = hex
                .get(2 * i..2 * i + 2)
                .ok_or_else(|| bad("the digest is not 64 lowercase hex digits"))?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad("the digest is not 64 lowercase hex digits"))?;
        }
        Ok(FailedId { index, digest })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_id_round_trips_and_refuses_bad_text() {
        let id = FailedId::new(7, "{\"a\":1}");
        let text = id.to_string();
        assert!(text.starts_with("7-") && text.len() == 2 + 64);
        assert_eq!(text.parse::<FailedId>().unwrap(), id);
        assert!(id.matches("{\"a\":1}") && !id.matches("{\"a\":2}"));
        let hex = &text[2..];
        for bad in [
            String::new(),
            "7".into(),
            hex.to_owned(),
            format!("-{hex}"),
            format!("07-{hex}"),
            format!("+7-{hex}"),
            format!("99999999999999999999-{hex}"),
            format!("7-{}", &hex[1..]),
            format!("7-{hex}0"),
            format!("7-{}", hex.to_uppercase()),
            format!("7-{}g", &hex[1..]),
        ] {
            assert!(
                matches!(bad.parse::<FailedId>(), Err(Error::MalformedFailedId { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn entry_keeps_payload_bytes_and_field_order() {
        let payload = r#"{"class":"boom","queue":"math","args":[12345678901234567890,[]]}"#;
        let f = Failure::new("TypeError", "kaboom").with_backtrace(vec!["at x".into()]);
        let raw = encode_entry("host1:111", "math", payload, &f, 1_795_901_762_000);
        assert_eq!(
            raw,
            format!(
                r#"{{"worker":"host1:111","queue":"math","payload":{payload},"exception":"TypeError","error":"kaboom","backtrace":["at x"],"failed_at":"Sat Nov 28 2026 21:36:02 GMT+0000 (Coordinated Universal Time)"}}"#
            )
        );
        let back = FailedJob::decode(&raw).unwrap();
        assert_eq!(back.payload.as_deref(), Some(payload));
        assert_eq!(back.job().unwrap().raw, payload);
    }

    #[test]
    fn undecodable_payload_is_kept_as_a_string() {
        let raw = encode_entry("w", "q", "{not json", &Failure::new("PayloadError", "bad"), 0);
        let back = FailedJob::decode(&raw).unwrap();
        assert_eq!(back.payload.as_deref(), Some(r#""{not json""#));
        assert!(back.job().is_err());
    }

    #[test]
    fn escapes_bytes_losslessly() {
        let all: Vec<u8> = (0..=255).collect();
        let text = escape_bytes(&all);
        assert!(text.bytes().all(|b| (0x20..=0x7e).contains(&b)));
        assert_eq!(unescape_bytes(&text).unwrap(), all);
        assert_eq!(escape_bytes(b"a\\b\xff\n"), "a\\\\b\\xff\\x0a");
        for bad in ["\\", "\\x", "\\xf", "\\xFF", "\\q", "\u{e9}"] {
            assert_eq!(unescape_bytes(bad), None, "{bad}");
        }
        let bytes = b"{\"class\":\"a\xff\",\"queue\":\"q\"}";
        let entry = invalid_utf8_entry("w", "q", bytes, "ns:queue:q", 0);
        let back = FailedJob::decode(&entry).unwrap();
        assert_eq!(back.payload_bytes().unwrap(), bytes);
        assert!(back.error.unwrap().contains("ns:queue:q"));
        assert_eq!(FailedJob::decode_lenient("x").payload_bytes(), None);
    }

    #[test]
    fn reads_ruby_entries() {
        let raw = r#"{"failed_at":"2024/01/02 03:04:05 UTC","payload":{"class":"Archive","args":[1]},"exception":"RuntimeError","error":"x","backtrace":null,"worker":"h:1:q","queue":"q","retried_at":"2024/01/02 03:04:06 UTC"}"#;
        let f = FailedJob::decode(raw).unwrap();
        assert_eq!(f.job().unwrap().class, "Archive");
        assert!(f.backtrace.is_empty());
        assert!(f.retried_at.is_some());
        assert!(FailedJob::decode("[1]").is_err());
    }
}
