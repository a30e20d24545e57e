//! Fixed windows aligned to UTC: seconds to days since the epoch, weeks
//! from Monday, calendar months and years.

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::Deserialize;

/// A limit's time unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Unit {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One UTC day.
    Day,
    /// One week, Monday to Sunday (UTC).
    Week,
    /// One calendar month (UTC).
    Month,
    /// One calendar year (UTC).
    Year,
}

/// The window a moment falls in: a number unique per unit, and when the
/// window ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) index: i64,
    pub(crate) ends: DateTime<Utc>,
}

impl Window {
    /// How long until the window ends (at least one second).
    pub(crate) fn remaining(&self, now: DateTime<Utc>) -> Duration {
        (self.ends - now)
            .to_std()
            .unwrap_or_default()
            .max(Duration::from_secs(1))
    }
}

impl Unit {
    pub(crate) fn letter(self) -> char {
        match self {
            Unit::Second => 's',
            Unit::Minute => 'm',
            Unit::Hour => 'h',
            Unit::Day => 'd',
            Unit::Week => 'w',
            Unit::Month => 'M',
            Unit::Year => 'y',
        }
    }

    pub(crate) fn window(self, now: DateTime<Utc>) -> Window {
        let fixed = |length: i64, offset: i64| {
            let seconds = now.timestamp() + offset;
            let index = seconds.div_euclid(length);
            let ends = Utc
                .timestamp_opt((index + 1) * length - offset, 0)
                .single()
                .unwrap_or(now);
            Window { index, ends }
        };
        match self {
            Unit::Second => fixed(1, 0),
            Unit::Minute => fixed(60, 0),
            Unit::Hour => fixed(3600, 0),
            Unit::Day => fixed(86_400, 0),
            // 1970-01-01 was a Thursday: shift so that weeks start on Monday.
            Unit::Week => fixed(7 * 86_400, 3 * 86_400),
            Unit::Month => {
                let (year, month) = (now.year(), now.month());
                let (next_year, next_month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                Window {
                    index: i64::from(year) * 12 + i64::from(month),
                    ends: start_of(next_year, next_month).unwrap_or(now),
                }
            }
            Unit::Year => Window {
                index: i64::from(now.year()),
                ends: start_of(now.year() + 1, 1).unwrap_or(now),
            },
        }
    }
}

fn start_of(year: i32, month: u32) -> Option<DateTime<Utc>> {
    NaiveDate::from_ymd_opt(year, month, 1)?
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn windows_end_where_the_calendar_says() {
        let now = at("2026-12-31T23:59:30Z");
        assert_eq!(Unit::Minute.window(now).ends, at("2027-01-01T00:00:00Z"));
        assert_eq!(Unit::Day.window(now).ends, at("2027-01-01T00:00:00Z"));
        assert_eq!(Unit::Month.window(now).ends, at("2027-01-01T00:00:00Z"));
        assert_eq!(Unit::Year.window(now).ends, at("2027-01-01T00:00:00Z"));
        // Thursday 31 December: the week ends on Monday 4 January.
        assert_eq!(Unit::Week.window(now).ends, at("2027-01-04T00:00:00Z"));
        assert_eq!(
            Unit::Month.window(at("2026-02-10T00:00:00Z")).ends,
            at("2026-03-01T00:00:00Z")
        );
        let second = Unit::Second.window(now);
        assert_eq!(second.remaining(now), Duration::from_secs(1));
        assert_ne!(
            Unit::Week.window(now).index,
            Unit::Week.window(at("2027-01-04T00:00:00Z")).index
        );
    }
}
