//! The business clock of duration metrics (`clock = "business"`, `biz_seconds(a, b)`):
//! working hours on working days, in UTC, from the definition's params
//! `business_hours = "09:00-17:00"` and `business_days = "mon-fri"` (the defaults).
//! Calendars published as events (`BusinessCalendarPublished`) are not in the domain yet.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveTime, Timelike, Utc};

use crate::definition::Param;
use crate::error::DefinitionError;

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Working hours and days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusinessCalendar {
    /// Start of the working day, seconds after midnight.
    pub start_s: u32,
    /// End of the working day, seconds after midnight (> start).
    pub end_s: u32,
    /// Working days, Monday first.
    pub days: [bool; 7],
}

impl Default for BusinessCalendar {
    fn default() -> Self {
        BusinessCalendar {
            start_s: 9 * 3_600,
            end_s: 17 * 3_600,
            days: [true, true, true, true, true, false, false],
        }
    }
}

fn text<'a>(
    params: &'a BTreeMap<String, Param>,
    key: &str,
) -> Result<Option<&'a str>, DefinitionError> {
    match params.get(key) {
        None => Ok(None),
        Some(Param::Text(s)) => Ok(Some(s)),
        Some(_) => Err(DefinitionError::invalid(
            format!("params.{key}"),
            "must be text",
        )),
    }
}

fn hhmm(key: &str, s: &str) -> Result<u32, DefinitionError> {
    let t = NaiveTime::parse_from_str(s.trim(), "%H:%M")
        .map_err(|_| DefinitionError::invalid(key, format!("{s:?} is not a time HH:MM")))?;
    Ok(t.num_seconds_from_midnight())
}

impl BusinessCalendar {
    /// Reads `business_hours` and `business_days` from params (defaults 09:00-17:00, mon-fri).
    pub(crate) fn from_params(params: &BTreeMap<String, Param>) -> Result<Self, DefinitionError> {
        let mut cal = BusinessCalendar::default();
        if let Some(h) = text(params, "business_hours")? {
            let key = "params.business_hours";
            let (a, b) = h.split_once('-').ok_or_else(|| {
                DefinitionError::invalid(key, "write a range such as \"09:00-17:00\"")
            })?;
            cal.start_s = hhmm(key, a)?;
            cal.end_s = hhmm(key, b)?;
            if cal.end_s <= cal.start_s {
                return Err(DefinitionError::invalid(
                    key,
                    "the end must be after the start",
                ));
            }
        }
        if let Some(d) = text(params, "business_days")? {
            let key = "params.business_days";
            let index = |name: &str| {
                DAY_NAMES
                    .iter()
                    .position(|n| *n == name.trim())
                    .ok_or_else(|| {
                        DefinitionError::invalid(
                            key,
                            format!("{name:?} is not a day; use mon, tue, ..., sun"),
                        )
                    })
            };
            let mut days = [false; 7];
            for part in d.split(',') {
                if let Some((a, b)) = part.split_once('-') {
                    let (a, b) = (index(a)?, index(b)?);
                    if b < a {
                        return Err(DefinitionError::invalid(
                            key,
                            "a day range runs forward, e.g. mon-fri",
                        ));
                    }
                    days.iter_mut().take(b + 1).skip(a).for_each(|x| *x = true);
                } else {
                    let i = index(part)?;
                    if let Some(x) = days.get_mut(i) {
                        *x = true;
                    }
                }
            }
            if !days.contains(&true) {
                return Err(DefinitionError::invalid(
                    key,
                    "name at least one working day",
                ));
            }
            cal.days = days;
        }
        Ok(cal)
    }

    fn working(&self, weekday0: u32) -> bool {
        usize::try_from(weekday0)
            .ok()
            .and_then(|i| self.days.get(i))
            .copied()
            .unwrap_or(false)
    }

    /// Working seconds of one day's `[from_s, to_s)` (seconds after midnight).
    fn day_overlap(&self, from_s: u32, to_s: u32) -> i64 {
        let a = from_s.max(self.start_s);
        let b = to_s.min(self.end_s);
        i64::from(b.saturating_sub(a))
    }

    /// Working days in `[a, b)` (days whose date is a working day).
    pub fn working_days(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> i64 {
        let (mut d, end) = (a.date_naive(), b.date_naive());
        let mut n = 0;
        while d < end {
            if self.working(d.weekday().num_days_from_monday()) {
                n += 1;
            }
            d += Duration::days(1);
        }
        n
    }

    /// Working seconds between `a` and `b` (negative when `b < a`).
    pub fn seconds_between(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> i64 {
        if b < a {
            return -self.seconds_between(b, a);
        }
        const DAY: u32 = 86_400;
        let (da, db) = (a.date_naive(), b.date_naive());
        let (sa, sb) = (a.num_seconds_from_midnight(), b.num_seconds_from_midnight());
        if da == db {
            return if self.working(da.weekday().num_days_from_monday()) {
                self.day_overlap(sa, sb)
            } else {
                0
            };
        }
        let mut total = if self.working(da.weekday().num_days_from_monday()) {
            self.day_overlap(sa, DAY)
        } else {
            0
        };
        let per_day = self.day_overlap(0, DAY);
        let per_week = per_day
            * i64::from(u8::try_from(self.days.iter().filter(|d| **d).count()).unwrap_or(7));
        let mut d = da + Duration::days(1);
        let whole_days = (db - d).num_days();
        if whole_days >= 7 {
            let weeks = whole_days / 7;
            total += weeks * per_week;
            d += Duration::weeks(weeks);
        }
        while d < db {
            if self.working(d.weekday().num_days_from_monday()) {
                total += per_day;
            }
            d += Duration::days(1);
        }
        if self.working(db.weekday().num_days_from_monday()) {
            total += self.day_overlap(0, sb);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn counts_working_hours_only() {
        let cal = BusinessCalendar::default();
        // Friday 16:00 → Monday 10:00: one hour Friday, one hour Monday.
        assert_eq!(
            cal.seconds_between(t("2024-03-01T16:00:00Z"), t("2024-03-04T10:00:00Z")),
            7_200
        );
        // Same day, before opening to after closing: eight hours.
        assert_eq!(
            cal.seconds_between(t("2024-03-04T06:00:00Z"), t("2024-03-04T20:00:00Z")),
            28_800
        );
        // Three whole weeks plus Monday 09:00 → 09:00: 15 working days.
        assert_eq!(
            cal.seconds_between(t("2024-03-04T09:00:00Z"), t("2024-03-25T09:00:00Z")),
            15 * 28_800
        );
        let mut p = BTreeMap::new();
        p.insert("business_days".to_owned(), Param::Text("sun".into()));
        assert!(BusinessCalendar::from_params(&p).unwrap().days[6]);
        p.insert(
            "business_hours".to_owned(),
            Param::Text("17:00-09:00".into()),
        );
        assert!(BusinessCalendar::from_params(&p).is_err());
    }
}
