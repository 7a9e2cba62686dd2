//! `memory://` URLs: what they may say and how they are read.
//!
//! * `memory://`: an in-process store, gone with the process.
//! * `memory:///abs/path/file`: the same, persisted to a snapshot file,
//!   saved every 5 s and on close. Percent-escapes in the path are decoded.
//! * `?save_interval_ms=N` (with a path): save every `N` ms instead; 0 saves
//!   on close only.
//!
//! The scheme is matched case-insensitively. Anything else (a host, a
//! relative path, a fragment, an unknown or repeated parameter, a bad
//! number) is an [`Error::InvalidUrl`] that says what is wrong.

use resq_core::{Error, Result};
use std::path::PathBuf;
use std::time::Duration;

/// The save interval when a URL gives a path but no `save_interval_ms`.
pub const DEFAULT_SAVE_INTERVAL: Duration = Duration::from_millis(5000);

const SAVE_INTERVAL_PARAM: &str = "save_interval_ms";

/// What a `memory://` URL asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Address {
    /// The snapshot file, if any.
    pub(crate) path: Option<PathBuf>,
    /// How often to save it; `None` for on close only.
    pub(crate) save_interval: Option<Duration>,
}

/// Reads a `memory://` URL.
pub(crate) fn parse(url: &str) -> Result<Address> {
    let invalid = |reason: String| Error::InvalidUrl {
        url: resq_core::error::redact_url(url),
        reason,
    };
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("memory") => rest,
        _ => {
            return Err(invalid(
                "expected memory:// (in-process) or memory:///absolute/path (with a snapshot file)".into(),
            ))
        }
    };
    if rest.contains('#') {
        return Err(invalid("a memory URL takes no #fragment".into()));
    }
    let (target, query) = match rest.split_once('?') {
        Some((target, query)) => (target, Some(query)),
        None => (rest, None),
    };
    let path = match target {
        "" => None,
        t if t.starts_with('/') => Some(decode_path(t).map_err(invalid)?),
        t => {
            let host = t.split('/').next().unwrap_or(t);
            // The "host" may be `user:password@`: show it without the password.
            let host = resq_core::error::redact_url(host);
            return Err(invalid(format!(
                "a memory URL has no host (found {host:?}); use memory:// for an in-process store or \
                 memory:///absolute/path for a snapshot file"
            )));
        }
    };
    let interval_ms = parse_query(query.unwrap_or("")).map_err(invalid)?;
    let save_interval = match (&path, interval_ms) {
        (None, Some(_)) => {
            return Err(invalid(format!(
                "{SAVE_INTERVAL_PARAM} needs a snapshot path (memory:///path?…)"
            )));
        }
        (None, None) => None,
        (Some(_), None) => Some(DEFAULT_SAVE_INTERVAL),
        (Some(_), Some(0)) => None,
        (Some(_), Some(ms)) => Some(Duration::from_millis(ms)),
    };
    Ok(Address { path, save_interval })
}

/// Reads the query string: only `save_interval_ms`, at most once.
fn parse_query(query: &str) -> Result<Option<u64>, String> {
    let mut interval = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != SAVE_INTERVAL_PARAM {
            return Err(format!(
                "unknown parameter {key:?} (only {SAVE_INTERVAL_PARAM} is known)"
            ));
        }
        if interval.is_some() {
            return Err(format!("{SAVE_INTERVAL_PARAM} is given twice"));
        }
        let ms = value
            .parse::<u64>()
            .map_err(|_| format!("{SAVE_INTERVAL_PARAM} must be a whole number of milliseconds, not {value:?}"))?;
        interval = Some(ms);
    }
    Ok(interval)
}

/// Decodes the path part of a URL into a file path.
fn decode_path(raw: &str) -> Result<PathBuf, String> {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut rest = raw.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = tail
                .get(..2)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "the path has a bad %-escape".to_owned())?;
            bytes.push(hex);
            // `tail.get(..2)` succeeded above, so `tail` has two bytes.
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    let path = String::from_utf8(bytes).map_err(|_| "the path is not UTF-8 once %-decoded".to_owned())?;
    if path.ends_with('/') {
        return Err(format!("the snapshot path {path:?} names a directory, not a file"));
    }
    // `memory:///C:/data/x` names `C:/data/x` on Windows (the slice drops
    // the ASCII '/' the pattern matched, so it is on a char boundary).
    #[cfg(windows)]
    let path = match path.as_bytes() {
        [b'/', drive, b':', ..] if drive.is_ascii_alphabetic() => path[1..].to_owned(),
        _ => path,
    };
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(url: &str) -> String {
        match parse(url) {
            Err(Error::InvalidUrl { url: u, reason }) => {
                assert_eq!(u, url);
                reason
            }
            other => panic!("{url}: expected InvalidUrl, got {other:?}"),
        }
    }

    #[test]
    fn in_process() {
        let expected = Address {
            path: None,
            save_interval: None,
        };
        assert_eq!(parse("memory://").unwrap(), expected);
        assert_eq!(parse("MEMORY://").unwrap(), expected);
        assert_eq!(parse("memory://?").unwrap(), expected);
    }

    #[test]
    fn with_path_and_interval() {
        let a = parse("memory:///var/lib/resq/state.snapshot").unwrap();
        assert_eq!(a.path, Some(PathBuf::from("/var/lib/resq/state.snapshot")));
        assert_eq!(a.save_interval, Some(DEFAULT_SAVE_INTERVAL));

        let a = parse("memory:///tmp/x?save_interval_ms=250").unwrap();
        assert_eq!(a.path, Some(PathBuf::from("/tmp/x")));
        assert_eq!(a.save_interval, Some(Duration::from_millis(250)));

        let a = parse("memory:///tmp/x?save_interval_ms=0").unwrap();
        assert_eq!(a.save_interval, None);

        let a = parse("memory:///tmp/my%20dir/a%2Bb").unwrap();
        assert_eq!(a.path, Some(PathBuf::from("/tmp/my dir/a+b")));
    }

    #[test]
    fn malformed() {
        assert!(reason("redis://localhost").contains("expected memory://"));
        assert!(reason("memory:").contains("expected memory://"));
        assert!(reason("memory:/tmp/x").contains("expected memory://"));
        assert!(reason("memory://host/x").contains("no host"));
        assert!(reason("memory://relative.snapshot").contains("no host"));
        assert!(reason("memory:///tmp/x?save_interval_ms=soon").contains("whole number"));
        assert!(reason("memory:///tmp/x?save_interval_ms=-5").contains("whole number"));
        assert!(reason("memory:///tmp/x?save_interval_ms=").contains("whole number"));
        assert!(reason("memory:///tmp/x?save_interval_ms=1&save_interval_ms=2").contains("twice"));
        assert!(reason("memory:///tmp/x?interval=5").contains("unknown parameter"));
        assert!(reason("memory://?save_interval_ms=5").contains("needs a snapshot path"));
        assert!(reason("memory:///tmp/dir/").contains("directory"));
        assert!(reason("memory:///").contains("directory"));
        assert!(reason("memory:///tmp/x%zz").contains("%-escape"));
        assert!(reason("memory:///tmp/x%2").contains("%-escape"));
        assert!(reason("memory:///tmp/x#frag").contains("fragment"));
    }
}
