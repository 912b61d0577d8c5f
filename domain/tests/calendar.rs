//! Property tests of the business calendar against plain day-by-day walks: the read models'
//! clock (`business_seconds`, `add_business_seconds`: each day's share of `[from, to)` in whole
//! seconds, local dates, holidays) and the metric clock (`seconds_between`, `working_days`:
//! each instant at its whole second, signed, working hours and days in UTC). The calendar's
//! week-skipping count must give exactly the figures of the walks.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveTime, SubsecRound, Timelike, Utc, Weekday,
};
use crm_domain::calendar::BusinessCalendar;
use proptest::prelude::*;

const WEEK: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

/// The read models' walk: every local date from `from`'s to `to`'s, each day's overlap with
/// `[from, to)` truncated to whole seconds.
fn walk_business_seconds(cal: &BusinessCalendar, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    if to <= from {
        return 0;
    }
    let offset = Duration::minutes(i64::from(cal.utc_offset_minutes));
    let end_minute = cal.day_end_minute.min(1_440);
    let mut total = 0;
    let mut date = (from + offset).date_naive();
    let last = (to + offset).date_naive();
    loop {
        if cal.is_working_day(date) && cal.day_start_minute < end_minute {
            let midnight = date.and_time(NaiveTime::MIN).and_utc() - offset;
            let ws = midnight + Duration::minutes(i64::from(cal.day_start_minute));
            let we = midnight + Duration::minutes(i64::from(end_minute));
            let (a, b) = (ws.max(from), we.min(to));
            if b > a {
                total += (b - a).num_seconds();
            }
        }
        if date >= last {
            return total;
        }
        date = date.succ_opt().unwrap();
    }
}

/// The metric clock's walk: whole-second instants, working days by UTC date, signed.
fn walk_seconds_between(cal: &BusinessCalendar, a: DateTime<Utc>, b: DateTime<Utc>) -> i64 {
    if b < a {
        return -walk_seconds_between(cal, b, a);
    }
    let (start, end) = (cal.day_start_minute * 60, cal.day_end_minute * 60);
    let overlap =
        |from_s: u32, to_s: u32| i64::from(to_s.min(end).saturating_sub(from_s.max(start)));
    let working = |d: NaiveDate| !cal.weekend.contains(&d.weekday());
    let (da, db) = (a.date_naive(), b.date_naive());
    let (sa, sb) = (a.num_seconds_from_midnight(), b.num_seconds_from_midnight());
    if da == db {
        return if working(da) { overlap(sa, sb) } else { 0 };
    }
    let mut total = if working(da) { overlap(sa, 86_400) } else { 0 };
    let mut d = da.succ_opt().unwrap();
    while d < db {
        if working(d) {
            total += overlap(0, 86_400);
        }
        d = d.succ_opt().unwrap();
    }
    if working(db) {
        total += overlap(0, sb);
    }
    total
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    // 2023-01-01 .. about 2026-06, with sub-second parts on some instants.
    (
        0i64..110_000_000,
        prop_oneof![Just(0u32), 0u32..1_000_000_000],
    )
        .prop_map(|(s, ns)| DateTime::from_timestamp(1_672_531_200 + s, ns).unwrap())
}

fn weekend() -> impl Strategy<Value = Vec<Weekday>> {
    proptest::collection::vec(0usize..7, 0..4).prop_map(|days| {
        days.into_iter()
            .filter_map(|i| WEEK.get(i).copied())
            .collect()
    })
}

fn calendar() -> impl Strategy<Value = BusinessCalendar> {
    (
        -720i32..=840,
        0u32..1_440,
        1u32..=1_440,
        weekend(),
        proptest::collection::btree_set(0u64..1_300, 0..30),
    )
        .prop_map(|(offset, start, end, weekend, holidays)| {
            let base = NaiveDate::from_ymd_opt(2023, 1, 1).unwrap();
            BusinessCalendar {
                utc_offset_minutes: offset,
                day_start_minute: start,
                day_end_minute: end,
                weekend,
                holidays: holidays
                    .into_iter()
                    .map(|d| base.checked_add_days(chrono::Days::new(d)).unwrap())
                    .collect(),
            }
        })
}

/// A calendar as the metric engine builds it: UTC, no holidays, start before end.
fn metric_calendar() -> impl Strategy<Value = BusinessCalendar> {
    (0u32..1_439, 1u32..1_440, weekend()).prop_map(|(a, b, weekend)| {
        let (start, end) = if a < b { (a, b) } else { (b, a + 1) };
        BusinessCalendar {
            utc_offset_minutes: 0,
            day_start_minute: start,
            day_end_minute: end,
            weekend,
            holidays: BTreeSet::new(),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn business_seconds_equals_the_day_walk(cal in calendar(), a in instant(), b in instant()) {
        prop_assert_eq!(cal.business_seconds(a, b), walk_business_seconds(&cal, a, b));
    }

    #[test]
    fn adding_business_seconds_reaches_the_count(cal in calendar(), from in instant(), seconds in 0i64..3_000_000) {
        // Whole-second starts: from a fractional one, each day's share of the walk is truncated.
        let from = from.trunc_subsecs(0);
        if let Some(due) = cal.add_business_seconds(from, seconds) {
            prop_assert!(due >= from);
            prop_assert_eq!(walk_business_seconds(&cal, from, due), seconds);
        }
    }

    #[test]
    fn seconds_between_equals_the_metric_walk(cal in metric_calendar(), a in instant(), b in instant()) {
        prop_assert_eq!(cal.seconds_between(a, b), walk_seconds_between(&cal, a, b));
    }

    #[test]
    fn working_days_counts_each_date(cal in calendar(), a in instant(), b in instant()) {
        let (from, to) = (cal.local_date(a), cal.local_date(b));
        let mut n = 0;
        let mut d = from;
        while d < to {
            n += i64::from(cal.is_working_day(d));
            d = d.succ_opt().unwrap();
        }
        prop_assert_eq!(cal.working_days(a, b), n);
    }
}
