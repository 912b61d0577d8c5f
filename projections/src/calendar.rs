//! The business calendar (working hours, weekends, holidays, one fixed UTC offset) and the
//! business clock built on it: elapsed business time and due instants, minus paused
//! intervals (METRICS.md §1.4 `biz_clock`, `sla_due`).
//!
//! Every walk over days is bounded by [`CALENDAR_DAYS_MAX`]; a due instant beyond it is
//! reported as `None` (never due), an elapsed time is capped there.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Utc, Weekday};
use serde::{Deserialize, Serialize};

/// Longest span of days a business-clock computation walks (about 30 years).
pub const CALENDAR_DAYS_MAX: u32 = 11_000;

/// Minutes in a day.
const DAY_MINUTES: u32 = 24 * 60;

/// Working hours, weekends and holidays, in one fixed offset from UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusinessCalendar {
    /// Local time = UTC + this many minutes (e.g. 60 for CET without summer time).
    pub utc_offset_minutes: i32,
    /// Start of the working day, minutes after local midnight.
    pub day_start_minute: u32,
    /// End of the working day, minutes after local midnight (at most 1440).
    pub day_end_minute: u32,
    /// Days without working hours every week.
    pub weekend: Vec<Weekday>,
    /// Local dates without working hours.
    pub holidays: BTreeSet<NaiveDate>,
}

impl Default for BusinessCalendar {
    /// Monday to Friday, 09:00–17:00 UTC, no holidays.
    fn default() -> Self {
        BusinessCalendar {
            utc_offset_minutes: 0,
            day_start_minute: 9 * 60,
            day_end_minute: 17 * 60,
            weekend: vec![Weekday::Sat, Weekday::Sun],
            holidays: BTreeSet::new(),
        }
    }
}

impl BusinessCalendar {
    /// Open around the clock, every day (the clock equals wall time).
    #[must_use]
    pub fn always_open() -> Self {
        BusinessCalendar {
            utc_offset_minutes: 0,
            day_start_minute: 0,
            day_end_minute: DAY_MINUTES,
            weekend: Vec::new(),
            holidays: BTreeSet::new(),
        }
    }

    fn offset(&self) -> Duration {
        Duration::minutes(i64::from(self.utc_offset_minutes))
    }

    /// The local calendar date of an instant.
    #[must_use]
    pub fn local_date(&self, at: DateTime<Utc>) -> NaiveDate {
        (at + self.offset()).date_naive()
    }

    /// Whether `date` has working hours.
    #[must_use]
    pub fn is_working_day(&self, date: NaiveDate) -> bool {
        !self.weekend.contains(&date.weekday()) && !self.holidays.contains(&date)
    }

    /// The working hours of local `date` as UTC instants, `None` on a closed day.
    fn window(&self, date: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let end_minute = self.day_end_minute.min(DAY_MINUTES);
        if !self.is_working_day(date) || self.day_start_minute >= end_minute {
            return None;
        }
        let midnight = date.and_time(NaiveTime::MIN).and_utc() - self.offset();
        Some((
            midnight + Duration::minutes(i64::from(self.day_start_minute)),
            midnight + Duration::minutes(i64::from(end_minute)),
        ))
    }

    /// Business seconds in `[from, to)` (0 when `to <= from`), capped at
    /// [`CALENDAR_DAYS_MAX`] days of walking.
    #[must_use]
    pub fn business_seconds(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        if to <= from {
            return 0;
        }
        let mut total = 0i64;
        let mut date = self.local_date(from);
        let last = self.local_date(to);
        for _ in 0..CALENDAR_DAYS_MAX {
            if let Some((ws, we)) = self.window(date) {
                let a = ws.max(from);
                let b = we.min(to);
                if b > a {
                    total += (b - a).num_seconds();
                }
            }
            if date >= last {
                break;
            }
            match date.succ_opt() {
                Some(d) => date = d,
                None => break,
            }
        }
        total
    }

    /// The instant at which `seconds` business seconds have passed after `from`; `None` if
    /// that lies beyond [`CALENDAR_DAYS_MAX`] days (or the calendar has no working time).
    #[must_use]
    pub fn add_business_seconds(&self, from: DateTime<Utc>, seconds: i64) -> Option<DateTime<Utc>> {
        let mut remaining = seconds.max(0);
        let mut date = self.local_date(from);
        for _ in 0..CALENDAR_DAYS_MAX {
            if let Some((ws, we)) = self.window(date) {
                let start = ws.max(from);
                if start < we {
                    let available = (we - start).num_seconds();
                    if remaining <= available {
                        return Some(start + Duration::seconds(remaining));
                    }
                    remaining -= available;
                }
            }
            date = date.succ_opt()?;
        }
        None
    }
}

/// An interval during which a clock does not run; `end = None` means it still stands.
pub type Stop = (DateTime<Utc>, Option<DateTime<Utc>>);

/// Business seconds between `start` and `end` on `calendar`, minus the `stops`.
#[must_use]
pub fn elapsed(
    calendar: &BusinessCalendar,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    stops: &[Stop],
) -> i64 {
    let mut total = calendar.business_seconds(start, end);
    let mut covered_to = start;
    for (s, e) in sorted(stops) {
        let s = s.max(covered_to);
        let e = e.unwrap_or(end).min(end);
        if e > s {
            total -= calendar.business_seconds(s, e);
            covered_to = e;
        }
    }
    total.max(0)
}

/// The instant at which the clock started at `start` reaches `target_seconds` business
/// seconds, not counting `stops`. `None` when a stop still stands before the target is
/// reached (the clock is stopped: nothing is due), or when it lies beyond the calendar bound.
#[must_use]
pub fn due(
    calendar: &BusinessCalendar,
    start: DateTime<Utc>,
    target_seconds: i64,
    stops: &[Stop],
) -> Option<DateTime<Utc>> {
    let mut cursor = start;
    let mut remaining = target_seconds.max(0);
    for (s, e) in sorted(stops) {
        if e.is_some_and(|e| e <= cursor) {
            continue;
        }
        if s > cursor {
            let available = calendar.business_seconds(cursor, s);
            if remaining <= available {
                return calendar.add_business_seconds(cursor, remaining);
            }
            remaining -= available;
        }
        cursor = e?.max(cursor);
    }
    calendar.add_business_seconds(cursor, remaining)
}

fn sorted(stops: &[Stop]) -> Vec<Stop> {
    let mut v = stops.to_vec();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    #[test]
    fn friday_afternoon_plus_four_hours_lands_on_monday() {
        let cal = BusinessCalendar::default();
        // Friday 2024-03-01 15:00 + 4 business hours: 2 on Friday, 2 on Monday.
        let due = cal
            .add_business_seconds(at(2024, 3, 1, 15, 0), 4 * 3600)
            .unwrap();
        assert_eq!(due, at(2024, 3, 4, 11, 0));
        assert_eq!(cal.business_seconds(at(2024, 3, 1, 15, 0), due), 4 * 3600);
    }

    #[test]
    fn holidays_and_offset_are_respected() {
        let mut cal = BusinessCalendar {
            utc_offset_minutes: 60,
            ..BusinessCalendar::default()
        };
        cal.holidays
            .insert(NaiveDate::from_ymd_opt(2024, 3, 4).unwrap());
        // Local 09:00 is 08:00 UTC; Monday is a holiday, so Tuesday 08:00 UTC + 1 h.
        let due = cal
            .add_business_seconds(at(2024, 3, 2, 12, 0), 3600)
            .unwrap();
        assert_eq!(due, at(2024, 3, 5, 9, 0));
    }

    #[test]
    fn stops_push_the_due_instant_and_an_open_stop_stops_it() {
        let cal = BusinessCalendar::always_open();
        let start = at(2024, 1, 1, 0, 0);
        let stops = [(at(2024, 1, 1, 1, 0), Some(at(2024, 1, 1, 3, 0)))];
        assert_eq!(
            due(&cal, start, 2 * 3600, &stops),
            Some(at(2024, 1, 1, 4, 0))
        );
        assert_eq!(elapsed(&cal, start, at(2024, 1, 1, 4, 0), &stops), 2 * 3600);
        let open = [(at(2024, 1, 1, 1, 0), None)];
        assert_eq!(due(&cal, start, 2 * 3600, &open), None);
        assert_eq!(due(&cal, start, 1800, &open), Some(at(2024, 1, 1, 0, 30)));
    }
}
