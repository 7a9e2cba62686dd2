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

/// node-resque's bucket for a millisecond timestamp: `Math.round(ms / 1000)`,
/// rounding halves up (towards +∞, as JavaScript does). Saturates at the
/// ends of `i64` (a time that far out is refused by
/// [`checked_timestamp_ms`] before anything is scheduled).
pub fn bucket_of_ms(ms: i64) -> i64 {
    ms.saturating_add(500).div_euclid(1000)
}

/// The first instant (ms) at which every job in bucket `secs` is due.
///
/// A bucket holds the requests for `[secs·1000 − 500, secs·1000 + 500)` ms,
/// so resq promotes it only from `secs·1000 + 500` on: a job is never
/// started before the time it asked for (node-resque may start it up to half
/// a second early).
pub fn bucket_due_ms(secs: i64) -> i64 {
    secs.saturating_mul(1000).saturating_add(500)
}

/// The newest bucket that is fully due at `now_ms`.
pub fn last_due_bucket(now_ms: i64) -> i64 {
    now_ms.saturating_sub(500).div_euclid(1000)
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
        for ms in [9_500_i64, 9_999, 10_000, 10_499] {
            assert!(bucket_due_ms(bucket_of_ms(ms)) >= ms);
            assert!(last_due_bucket(ms) < bucket_of_ms(ms) || bucket_due_ms(bucket_of_ms(ms)) <= ms);
        }
        assert_eq!(last_due_bucket(10_500), 10);
        assert_eq!(last_due_bucket(10_499), 9);
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
