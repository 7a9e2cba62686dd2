//! Clock helpers and Resque's units: epoch milliseconds in the API, epoch
//! seconds in delayed buckets, and node-resque's date strings.

use chrono::{DateTime, TimeZone, Utc};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        // A clock before 1970 is a broken clock; treat it as the epoch.
        Err(_) => 0,
    }
}

/// The largest time a JavaScript `Date` can hold, in ms either side of the
/// epoch (±100 000 000 days, about the year 275 760): the range of times
/// that jobs can be scheduled for, so that every Resque client can read
/// them back.
pub const MAX_TIMESTAMP_MS: i64 = 8_640_000_000_000_000;

/// `timestamp_ms` if it lies within ±[`MAX_TIMESTAMP_MS`], else an
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) naming `what`.
pub fn checked_timestamp_ms(what: &str, timestamp_ms: i64) -> crate::Result<i64> {
    if (-MAX_TIMESTAMP_MS..=MAX_TIMESTAMP_MS).contains(&timestamp_ms) {
        Ok(timestamp_ms)
    } else {
        Err(crate::Error::InvalidArgument(format!(
            "{what} {timestamp_ms} ms is out of range (a time within ±{MAX_TIMESTAMP_MS} ms of the epoch)"
        )))
    }
}

/// `now_ms() + delay`, or an [`Error::InvalidArgument`](crate::Error::InvalidArgument)
/// when that lies beyond [`MAX_TIMESTAMP_MS`].
pub fn checked_after_ms(delay: std::time::Duration) -> crate::Result<i64> {
    let out_of_range = || crate::Error::InvalidArgument(format!("delay {delay:?} is out of range"));
    let delay_ms = i64::try_from(delay.as_millis()).map_err(|_| out_of_range())?;
    let at = now_ms().checked_add(delay_ms).ok_or_else(out_of_range)?;
    checked_timestamp_ms("the time after the delay", at).map_err(|_| out_of_range())
}

/// `Math.round(ms / 1000)`: node-resque's seconds for pings, started keys and
/// lock values, and the bucket node-resque itself files a delayed job under;
/// rounding halves up (towards +∞, as JavaScript does). Saturates at the
/// ends of `i64` (a time that far out is refused by
/// [`checked_timestamp_ms`] before anything is scheduled).
pub fn bucket_of_ms(ms: i64) -> i64 {
    ms.saturating_add(500).div_euclid(1000)
}

/// The delayed bucket resq files a job for `ms` under: the first second `s`
/// from which no scheduler promotes it early,
/// `s = ceil((ms + 500) / 1000)`.
///
/// Each scheduler promotes bucket `s` from its own instant: node-resque and
/// resq from `s·1000 − 500` ms (node-resque's `Math.round(now / 1000) >= s`,
/// see [`bucket_due_ms`]), Ruby's resque-scheduler from `s·1000`. The
/// earliest, `s·1000 − 500`, is never before `ms`, so a job resq schedules
/// never runs early whichever scheduler leads; it can run up to a second
/// late (`s·1000 − 500 − ms` is 0 to 999 ms). node-resque files the same
/// request under `Math.round(ms / 1000)` ([`bucket_of_ms`]), usually one
/// bucket earlier.
pub fn delayed_bucket_of_ms(ms: i64) -> i64 {
    ms.saturating_add(1499).div_euclid(1000)
}

/// The first instant (ms) at which resq's scheduler promotes bucket `secs`:
/// `secs·1000 − 500`, when node-resque's scheduler does too. Buckets that
/// resq writes ([`delayed_bucket_of_ms`]) are never due before their jobs'
/// times; buckets node-resque writes are promoted when node-resque would
/// promote them (up to half a second before the time asked for).
pub fn bucket_due_ms(secs: i64) -> i64 {
    secs.saturating_mul(1000).saturating_sub(500)
}

/// The newest bucket that is due at `now_ms` (see [`bucket_due_ms`]):
/// `Math.round(now_ms / 1000)`, node-resque's rule.
pub fn last_due_bucket(now_ms: i64) -> i64 {
    bucket_of_ms(now_ms)
}

fn utc(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// JavaScript's `Date#toString()` in UTC, the format node-resque writes in
/// `run_at` and `failed_at`: `Sat Nov 28 2026 21:36:02 GMT+0000 (Coordinated Universal Time)`.
pub fn js_date_string(ms: i64) -> String {
    utc(ms)
        .format("%a %b %d %Y %H:%M:%S GMT+0000 (Coordinated Universal Time)")
        .to_string()
}

/// [`js_date_string`] of the current second, formatted once per second
/// per thread: workers stamp every claim with it.
pub fn js_date_string_now() -> String {
    use std::cell::RefCell;
    thread_local! {
        static CACHE: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    let now = now_ms();
    let second = now.div_euclid(1000);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != second {
            *c = (second, js_date_string(now));
        }
        c.1.clone()
    })
}

/// [`js_date_string_now`] as a shared string, which within one second
/// costs a reference count rather than an allocation: the worker loops
/// keep it for the cancel watch, beside stamping the claim with it.
pub(crate) fn js_date_shared_now() -> std::sync::Arc<str> {
    use std::cell::RefCell;
    use std::sync::Arc;
    thread_local! {
        static SHARED: RefCell<(i64, Option<Arc<str>>)> = const { RefCell::new((i64::MIN, None)) };
    }
    let now = now_ms();
    let second = now.div_euclid(1000);
    SHARED.with(|c| {
        let mut c = c.borrow_mut();
        match &c.1 {
            Some(text) if c.0 == second => Arc::clone(text),
            _ => {
                let text: Arc<str> = Arc::from(js_date_string(now));
                *c = (second, Some(Arc::clone(&text)));
                text
            }
        }
    })
}

/// ISO 8601 in UTC with second precision, the format Ruby resque writes.
pub fn iso8601(ms: i64) -> String {
    utc(ms).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Parses the date strings other Resque clients write (`run_at`,
/// `failed_at`): JavaScript `Date#toString()`, ISO 8601 / RFC 3339, and
/// Ruby's `YYYY/MM/DD HH:MM:SS ZZZ`. Returns epoch milliseconds.
pub fn parse_date(s: &str) -> Option<i64> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.timestamp_millis());
    }
    // "Sat Nov 28 2026 21:36:02 GMT+0000 (Coordinated Universal Time)"
    let js = s.split(" (").next().unwrap_or(s);
    if let Ok(d) = DateTime::parse_from_str(js, "%a %b %d %Y %H:%M:%S GMT%z") {
        return Some(d.timestamp_millis());
    }
    // "2024-01-02 03:04:05 +0000" (Ruby's Time#to_s).
    if let Ok(d) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S %z") {
        return Some(d.timestamp_millis());
    }
    // "2024/01/02 03:04:05 UTC" (Ruby); only UTC is understood as a zone name.
    let ruby = s.trim_end_matches(" UTC");
    if let Ok(d) = chrono::NaiveDateTime::parse_from_str(ruby, "%Y/%m/%d %H:%M:%S") {
        return Some(d.and_utc().timestamp_millis());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_matches_math_round() {
        assert_eq!(bucket_of_ms(10_000), 10);
        assert_eq!(bucket_of_ms(10_499), 10);
        assert_eq!(bucket_of_ms(10_500), 11);
        assert_eq!(bucket_of_ms(0), 0);
    }

    #[test]
    fn never_due_before_requested_time() {
        for ms in (-3_000_i64..3_000).chain(9_000..12_000) {
            let s = delayed_bucket_of_ms(ms);
            // resq's and node-resque's schedulers: due from s·1000 − 500.
            assert!(bucket_due_ms(s) >= ms, "{ms} in bucket {s}");
            assert!(last_due_bucket(ms) <= s);
            assert!(last_due_bucket(bucket_due_ms(s)) >= s);
            assert!(last_due_bucket(bucket_due_ms(s) - 1) < s);
            // Ruby's resque-scheduler: due from s·1000.
            assert!(s * 1000 >= ms);
            // Never more than a second late.
            assert!(bucket_due_ms(s) - ms < 1000, "{ms} in bucket {s}");
        }
        assert_eq!(delayed_bucket_of_ms(9_499), 10);
        assert_eq!(delayed_bucket_of_ms(9_500), 10);
        assert_eq!(delayed_bucket_of_ms(9_501), 11);
        assert_eq!(delayed_bucket_of_ms(10_000), 11);
        assert_eq!(delayed_bucket_of_ms(10_499), 11);
        assert_eq!(delayed_bucket_of_ms(10_500), 11);
        assert_eq!(last_due_bucket(10_499), 10);
        assert_eq!(last_due_bucket(10_500), 11);
        assert_eq!(bucket_due_ms(11), 10_500);
    }

    #[test]
    fn extreme_times_neither_panic_nor_pass_the_range_check() {
        assert_eq!(bucket_of_ms(i64::MAX), i64::MAX / 1000);
        assert_eq!(last_due_bucket(i64::MIN), i64::MIN.div_euclid(1000));
        assert!(checked_timestamp_ms("t", i64::MAX).is_err());
        assert!(checked_timestamp_ms("t", i64::MIN).is_err());
        assert!(checked_timestamp_ms("t", MAX_TIMESTAMP_MS).is_ok());
        assert!(checked_timestamp_ms("t", -MAX_TIMESTAMP_MS).is_ok());
        assert!(checked_after_ms(std::time::Duration::MAX).is_err());
        assert!(checked_after_ms(std::time::Duration::from_secs(3600)).is_ok());
    }

    #[test]
    fn js_dates_round_trip() {
        let ms = 1_795_901_762_000;
        let s = js_date_string(ms);
        assert_eq!(s, "Sat Nov 28 2026 21:36:02 GMT+0000 (Coordinated Universal Time)");
        assert_eq!(parse_date(&s), Some(ms));
        assert_eq!(parse_date(&iso8601(ms)), Some(ms));
        assert_eq!(parse_date("2026/11/28 21:36:02 UTC"), Some(ms));
        assert_eq!(parse_date("2026-11-28 21:36:02 +0000"), Some(ms));
        assert_eq!(parse_date("not a date"), None);
    }
}
