//! Cron schedules for tasks: parsing (with the `cron` crate), time zones
//! (with `chrono-tz`), and the occurrences that fall in a time window.
//!
//! An expression has six fields, `sec min hour day-of-month month
//! day-of-week`, and an optional seventh, the year. The classic five-field
//! form (`min hour dom month dow`) is accepted too and fires at second 0.
//! Occurrences are computed in the schedule's time zone, so `0 0 9 * * Mon-Fri`
//! in `Europe/Paris` fires at 09:00 Paris time across daylight-saving changes.
//! Only the scheduler leader fires cron tasks; see [`crate::scheduler`] for
//! how each occurrence is enqueued exactly once across leader changes.

use crate::error::{Error, Result};
use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use std::str::FromStr;

/// A parsed cron expression and the time zone it is read in.
#[derive(Clone)]
pub struct CronSchedule {
    expression: String,
    zone: Tz,
    schedule: cron::Schedule,
}

impl std::fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CronSchedule({:?} in {})", self.expression, self.zone.name())
    }
}

impl CronSchedule {
    /// Parses `expression` in UTC.
    ///
    /// ```
    /// use resq_core::cron::CronSchedule;
    ///
    /// let every_ten_seconds = CronSchedule::parse("*/10 * * * * *").unwrap();
    /// let at = every_ten_seconds.occurrences(1_700_000_000_000, 1_700_000_030_000, 10);
    /// assert_eq!(at, vec![1_700_000_010_000, 1_700_000_020_000, 1_700_000_030_000]);
    /// assert!(CronSchedule::parse("not cron").is_err());
    /// ```
    pub fn parse(expression: &str) -> Result<Self> {
        Self::parse_in(expression, "UTC")
    }

    /// Parses `expression` in the IANA time zone `zone` (`Europe/Paris`).
    pub fn parse_in(expression: &str, zone: &str) -> Result<Self> {
        let zone: Tz = zone
            .parse()
            .map_err(|_| Error::InvalidArgument(format!("unknown time zone {zone:?}")))?;
        let fields = expression.split_whitespace().count();
        let full = match fields {
            5 => format!("0 {expression}"),
            6 | 7 => expression.to_owned(),
            n => {
                return Err(Error::InvalidArgument(format!(
                    "cron expression {expression:?} has {n} fields; expected 5, 6 (with seconds) or 7 (with year)"
                )))
            }
        };
        let schedule = cron::Schedule::from_str(&full)
            .map_err(|e| Error::InvalidArgument(format!("invalid cron expression {expression:?}: {e}")))?;
        Ok(CronSchedule {
            expression: expression.to_owned(),
            zone,
            schedule,
        })
    }

    /// The expression as given.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone's IANA name.
    pub fn zone(&self) -> &str {
        self.zone.name()
    }

    /// The occurrences after `after_ms` and at or before `up_to_ms` (Unix
    /// ms), oldest first, at most `limit` of them.
    pub fn occurrences(&self, after_ms: i64, up_to_ms: i64, limit: usize) -> Vec<i64> {
        let Some(start) = Utc.timestamp_millis_opt(after_ms).single() else {
            return Vec::new();
        };
        let start = start.with_timezone(&self.zone);
        self.schedule
            .after(&start)
            .map(|t| t.timestamp_millis())
            .take_while(|&ms| ms <= up_to_ms)
            .take(limit)
            .collect()
    }

    /// The first occurrence after `after_ms`, if the schedule has one.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let start = Utc.timestamp_millis_opt(after_ms).single()?.with_timezone(&self.zone);
        self.schedule.after(&start).next().map(|t| t.timestamp_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_fields_fire_at_second_zero() {
        let s = CronSchedule::parse("*/15 * * * *").unwrap();
        // 2023-11-14T22:13:20Z -> next quarter hour 22:15:00Z.
        assert_eq!(s.next_after(1_700_000_000_000), Some(1_700_000_100_000));
    }

    #[test]
    fn time_zone_shifts_occurrences() {
        let utc = CronSchedule::parse("0 0 9 * * *").unwrap();
        let paris = CronSchedule::parse_in("0 0 9 * * *", "Europe/Paris").unwrap();
        let a = utc.next_after(1_700_000_000_000).unwrap();
        let b = paris.next_after(1_700_000_000_000).unwrap();
        // In November Paris is UTC+1: 09:00 Paris is 08:00 UTC.
        assert_eq!((a - b).rem_euclid(86_400_000), 3_600_000);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(CronSchedule::parse("* * *").is_err());
        assert!(CronSchedule::parse("99 * * * * *").is_err());
        assert!(CronSchedule::parse_in("* * * * * *", "Mars/Olympus").is_err());
    }

    #[test]
    fn occurrences_are_bounded() {
        let s = CronSchedule::parse("* * * * * *").unwrap();
        assert_eq!(s.occurrences(0, 10_000, 3), vec![1_000, 2_000, 3_000]);
        assert_eq!(s.occurrences(0, 2_500, 10), vec![1_000, 2_000]);
        assert!(s.occurrences(5_000, 5_000, 10).is_empty());
    }
}
