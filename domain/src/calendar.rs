//! The business calendar (working hours on working days, weekends, holidays, one fixed
//! offset from UTC) and the business clock built on it: business seconds between two
//! instants, the instant a number of business seconds is reached, and clocks that stop while
//! a case is paused.
//!
//! One type serves every layer: the read models take it from their configuration (SLA due
//! instants, "closed the same day"); the metric engine builds it from a definition's
//! `business_hours` / `business_days` params (durations on the business clock,
//! `biz_seconds(a, b)`, working days of a period). Calendars published as events
//! (`BusinessCalendarPublished`) are not in the domain yet.
//!
//! Working hours are whole minutes of local time; business time is counted in whole seconds.
//! Counting skips whole weeks, so a span costs at most two weeks of day steps plus the
//! holidays it contains. Walks that search forward ([`BusinessCalendar::add_business_seconds`],
//! [`due`]) and the read models' elapsed time ([`BusinessCalendar::business_seconds`]) stop at
//! [`CALENDAR_DAYS_MAX`] days.

use std::collections::BTreeSet;

use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, SubsecRound, Utc, Weekday,
};
use serde::{Deserialize, Serialize};

/// Longest span of days a business-clock walk covers (about 30 years).
pub const CALENDAR_DAYS_MAX: u32 = 11_000;

/// Minutes in a day.
const DAY_MINUTES: u32 = 24 * 60;

/// The days of a week, Monday first.
const WEEK: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

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

    /// Local wall time of an instant (UTC at the very ends of chrono's range).
    fn local(&self, at: DateTime<Utc>) -> NaiveDateTime {
        let utc = at.naive_utc();
        utc.checked_add_signed(self.offset()).unwrap_or(utc)
    }

    /// The instant of a local wall time.
    fn instant(&self, local: NaiveDateTime) -> DateTime<Utc> {
        local
            .checked_sub_signed(self.offset())
            .unwrap_or(local)
            .and_utc()
    }

    /// The local calendar date of an instant.
    #[must_use]
    pub fn local_date(&self, at: DateTime<Utc>) -> NaiveDate {
        self.local(at).date()
    }

    /// Whether `date` has working hours.
    #[must_use]
    pub fn is_working_day(&self, date: NaiveDate) -> bool {
        !self.is_weekend(date.weekday()) && !self.holidays.contains(&date)
    }

    fn is_weekend(&self, day: Weekday) -> bool {
        self.weekend.contains(&day)
    }

    /// Start and end of the working day in minutes after local midnight, `None` when the
    /// calendar has no working hours.
    fn hours(&self) -> Option<(i64, i64)> {
        let end = self.day_end_minute.min(DAY_MINUTES);
        (self.day_start_minute < end).then(|| (i64::from(self.day_start_minute), i64::from(end)))
    }

    /// The working hours of local `date` in local wall time, `None` on a closed day.
    fn window(&self, date: NaiveDate) -> Option<(NaiveDateTime, NaiveDateTime)> {
        let (start, end) = self.hours()?;
        if !self.is_working_day(date) {
            return None;
        }
        let midnight = date.and_time(NaiveTime::MIN);
        Some((
            midnight.checked_add_signed(Duration::minutes(start))?,
            midnight.checked_add_signed(Duration::minutes(end))?,
        ))
    }

    /// Whole business seconds of local `date` within `[from, to)` (local wall times).
    fn day_seconds(&self, date: NaiveDate, from: NaiveDateTime, to: NaiveDateTime) -> i64 {
        match self.window(date) {
            Some((start, end)) => {
                let (a, b) = (start.max(from), end.min(to));
                if b > a {
                    (b - a).num_seconds()
                } else {
                    0
                }
            }
            None => 0,
        }
    }

    /// Working days among the local dates `[from, to)`.
    fn working_days_in(&self, from: NaiveDate, to: NaiveDate) -> i64 {
        if to <= from {
            return 0;
        }
        let weeks = (to - from).num_days() / 7;
        let per_week = WEEK
            .iter()
            .filter(|d| !self.is_weekend(**d))
            .fold(0, |n, _| n + 1);
        let mut count = weeks * per_week;
        let mut date = from
            .checked_add_signed(Duration::weeks(weeks))
            .unwrap_or(to);
        while date < to {
            if !self.is_weekend(date.weekday()) {
                count += 1;
            }
            match date.succ_opt() {
                Some(next) => date = next,
                None => break,
            }
        }
        let closed = self
            .holidays
            .range(from..to)
            .filter(|h| !self.is_weekend(h.weekday()))
            .count();
        count - i64::try_from(closed).unwrap_or(count)
    }

    /// Business seconds in `[from, to)` for `from < to`, each day's share counted in whole
    /// seconds; no bound on the span.
    fn span_seconds(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        let (a, b) = (self.local(from), self.local(to));
        let (first, last) = (a.date(), b.date());
        if first >= last {
            return self.day_seconds(first, a, b);
        }
        let Some((start, end)) = self.hours() else {
            return 0;
        };
        let whole_days = first
            .succ_opt()
            .map_or(0, |next| self.working_days_in(next, last));
        self.day_seconds(first, a, b)
            + whole_days * (end - start) * 60
            + self.day_seconds(last, a, b)
    }

    /// Working days among the local dates from `a`'s up to, not including, `b`'s (0 when
    /// `b` is not after `a`).
    #[must_use]
    pub fn working_days(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> i64 {
        self.working_days_in(self.local_date(a), self.local_date(b))
    }

    /// Business seconds in `[from, to)` (0 when `to <= from`), each day's share in whole
    /// seconds, capped at [`CALENDAR_DAYS_MAX`] days after `from`'s date: the clock of the
    /// read models.
    #[must_use]
    pub fn business_seconds(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
        if to <= from {
            return 0;
        }
        let bound = self
            .local_date(from)
            .checked_add_days(chrono::Days::new(u64::from(CALENDAR_DAYS_MAX)))
            .map(|d| self.instant(d.and_time(NaiveTime::MIN)));
        let to = match bound {
            Some(bound) if bound < to => bound,
            _ => to,
        };
        self.span_seconds(from, to)
    }

    /// Business seconds from `a` to `b`, each instant taken at its whole second: negative
    /// when `b` is before `a`, no bound on the span. The clock of duration metrics and
    /// `biz_seconds(a, b)`.
    #[must_use]
    pub fn seconds_between(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> i64 {
        let (a, b) = (a.trunc_subsecs(0), b.trunc_subsecs(0));
        if b < a {
            -self.span_seconds(b, a)
        } else if a < b {
            self.span_seconds(a, b)
        } else {
            0
        }
    }

    /// The instant at which `seconds` business seconds have passed after `from`; `None` if
    /// that lies beyond [`CALENDAR_DAYS_MAX`] days (or the calendar has no working time).
    #[must_use]
    pub fn add_business_seconds(&self, from: DateTime<Utc>, seconds: i64) -> Option<DateTime<Utc>> {
        let mut remaining = seconds.max(0);
        let from = self.local(from);
        let mut date = from.date();
        for _ in 0..CALENDAR_DAYS_MAX {
            if let Some((start, end)) = self.window(date) {
                let start = start.max(from);
                if start < end {
                    let available = (end - start).num_seconds();
                    if remaining <= available {
                        let at = start.checked_add_signed(Duration::seconds(remaining))?;
                        return Some(self.instant(at));
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

    #[test]
    fn counts_working_hours_only_and_signs_the_direction() {
        let cal = BusinessCalendar::default();
        // Friday 16:00 → Monday 10:00: one hour Friday, one hour Monday.
        assert_eq!(
            cal.seconds_between(at(2024, 3, 1, 16, 0), at(2024, 3, 4, 10, 0)),
            7_200
        );
        assert_eq!(
            cal.seconds_between(at(2024, 3, 4, 10, 0), at(2024, 3, 1, 16, 0)),
            -7_200
        );
        // Same day, before opening to after closing: eight hours.
        assert_eq!(
            cal.seconds_between(at(2024, 3, 4, 6, 0), at(2024, 3, 4, 20, 0)),
            28_800
        );
        // Three whole weeks plus Monday 09:00 → 09:00: 15 working days.
        assert_eq!(
            cal.seconds_between(at(2024, 3, 4, 9, 0), at(2024, 3, 25, 9, 0)),
            15 * 28_800
        );
        assert_eq!(
            cal.working_days(at(2024, 3, 4, 9, 0), at(2024, 3, 25, 9, 0)),
            15
        );
    }

    #[test]
    fn the_read_models_clock_stops_at_the_bound() {
        let cal = BusinessCalendar::always_open();
        let from = at(2000, 1, 1, 12, 0);
        let far = at(2100, 1, 1, 0, 0);
        let bound_days = i64::from(CALENDAR_DAYS_MAX);
        // Capped at the end of the last day walked; the metric clock is not capped.
        assert_eq!(
            cal.business_seconds(from, far),
            bound_days * 86_400 - 12 * 3_600
        );
        assert_eq!(cal.seconds_between(from, far), (far - from).num_seconds());
    }
}
