//! `FailedFilter::may_match_raw`, the test on a failed entry's bytes that
//! lets a filtered listing skip decoding, never rejects an entry that
//! `FailedFilter::matches` accepts, however the entry was encoded
//! (escaped or literal non-ASCII, escaped slashes, quotes, case folding
//! that leaves ASCII), and does reject plain entries that cannot match.

use proptest::prelude::*;
use resq_admin::FailedFilter;
use resq_core::failed::FailedJob;
use serde_json::{json, Value};

/// Pieces the generated strings are built from: ASCII letters in both
/// cases, characters JSON encoders escape, and non-ASCII letters whose
/// lower case is ASCII or longer (KELVIN SIGN, DOTTED CAPITAL I).
const PIECES: &[&str] = &[
    "a", "B", "k", "K", "i", "I", "\u{212A}", "\u{130}", "é", "\"", "\\", "/", " ", ":", "<", "Job", "job", "err",
];

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..6).prop_map(|p| p.concat())
}

/// How an entry is written to the store: serde_json's own escaping, every
/// non-ASCII character as `\u` escapes, or slashes escaped too (`\/`, as
/// Lua's cjson does).
#[derive(Clone, Copy, Debug)]
enum Encoding {
    Plain,
    AsciiOnly,
    SlashEscaped,
}

fn encode(value: &Value, encoding: Encoding, reversed: bool) -> String {
    // The top-level keys in sorted order, or reversed (`payload` before
    // `failed_at`), as different clients write them.
    let mut fields: Vec<String> = value
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{}:{v}", Value::from(k.as_str())))
        .collect();
    if reversed {
        fields.reverse();
    }
    let plain = format!("{{{}}}", fields.join(","));
    match encoding {
        Encoding::Plain => plain,
        Encoding::AsciiOnly => {
            let mut out = String::new();
            for c in plain.chars() {
                if c.is_ascii() {
                    out.push(c);
                } else {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
            }
            out
        }
        Encoding::SlashEscaped => plain.replace('/', "\\/"),
    }
}

/// A search text related to `source`: a slice of it with its case changed.
fn search_from(source: &str, from: usize, len: usize, upper: bool) -> String {
    let chars: Vec<char> = source.chars().collect();
    let start = from.min(chars.len());
    let end = (start + len).min(chars.len());
    let slice: String = chars[start..end].iter().collect();
    if upper {
        slice.to_uppercase()
    } else {
        slice.to_lowercase()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_rejects_a_match(
        class in text(),
        queue in text(),
        error in text(),
        exception in text(),
        encoding in prop::sample::select(vec![Encoding::Plain, Encoding::AsciiOnly, Encoding::SlashEscaped]),
        use_class in any::<bool>(),
        use_queue in any::<bool>(),
        error_search in prop::option::of((0usize..6, 0usize..4, any::<bool>())),
        window in prop::option::of((-2i64..2, -2i64..2)),
        top_level_time in any::<bool>(),
        nested_time in prop::option::of(-3i64..3),
        reversed in any::<bool>(),
    ) {
        let failed_at_ms = 1_700_000_000_000i64;
        // A `failed_at` inside the job's arguments too, sometimes without
        // one at the top level: the bytes test must not be fooled by it.
        let nested = nested_time.map(|s| json!({"failed_at": resq_core::time::iso8601(failed_at_ms + s * 1000)}));
        let mut entry = json!({
            "failed_at": resq_core::time::js_date_string(failed_at_ms),
            "payload": {"class": class, "queue": queue, "args": [error, nested]},
            "exception": exception,
            "error": error,
            "backtrace": [],
            "worker": "w",
            "queue": queue,
        });
        if !top_level_time {
            entry.as_object_mut().unwrap().remove("failed_at");
        }
        let raw = encode(&entry, encoding, reversed);
        let filter = FailedFilter {
            class: use_class.then(|| class.clone()),
            queue: use_queue.then(|| queue.clone()),
            error: error_search.map(|(from, len, upper)| search_from(&error, from, len, upper)),
            since_ms: window.map(|(s, _)| failed_at_ms + s * 1000),
            until_ms: window.map(|(_, u)| failed_at_ms + 1000 + u * 1000),
        };
        let decoded = FailedJob::decode_lenient(&raw);
        if filter.matches(&decoded) {
            prop_assert!(filter.may_match_raw(&raw), "{filter:?} matches {raw} but may_match_raw rejected it");
        }
    }
}

fn entry(class: &str, queue: &str, error: &str, failed_at: &str) -> String {
    json!({
        "failed_at": failed_at,
        "payload": {"class": class, "queue": queue, "args": [1]},
        "exception": "RuntimeError",
        "error": error,
        "backtrace": ["at line 1"],
        "worker": "host:1:q",
        "queue": queue,
    })
    .to_string()
}

#[test]
fn rejects_plain_entries_that_cannot_match() {
    let raw = entry(
        "SendEmail",
        "mail",
        "Net::ReadTimeout after 5 s",
        "2024-01-01T00:00:00Z",
    );
    let by = |filter: FailedFilter| filter.may_match_raw(&raw);
    // Each field that cannot match rejects the entry on its bytes alone.
    assert!(!by(FailedFilter {
        class: Some("ChargeCard".into()),
        ..FailedFilter::default()
    }));
    assert!(!by(FailedFilter {
        queue: Some("billing".into()),
        ..FailedFilter::default()
    }));
    assert!(!by(FailedFilter {
        error: Some("deadlock".into()),
        ..FailedFilter::default()
    }));
    let jan_2 = resq_core::time::parse_date("2024-01-02T00:00:00Z").unwrap();
    assert!(!by(FailedFilter {
        since_ms: Some(jan_2),
        ..FailedFilter::default()
    }));
    // And each that can match lets it through, the error text in any case.
    assert!(by(FailedFilter {
        class: Some("SendEmail".into()),
        queue: Some("mail".into()),
        error: Some("READTIMEOUT".into()),
        until_ms: Some(jan_2),
        ..FailedFilter::default()
    }));
}

#[test]
fn escaped_or_non_ascii_entries_are_always_decoded() {
    // An escape anywhere: the class could be spelled with one.
    let escaped = entry("Send\u{45}mail", "mail", "say \"hi\"", "2024-01-01T00:00:00Z");
    assert!(escaped.contains('\\'));
    assert!(FailedFilter {
        class: Some("Other".into()),
        ..FailedFilter::default()
    }
    .may_match_raw(&escaped));
    // Non-ASCII: KELVIN SIGN lowercases to an ASCII k.
    let kelvin = entry("Job", "q", "\u{212A}ilo", "2024-01-01T00:00:00Z");
    assert!(FailedFilter {
        error: Some("kilo".into()),
        ..FailedFilter::default()
    }
    .may_match_raw(&kelvin));
}
