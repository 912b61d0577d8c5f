//! The business calendar of a definition, read from its params `business_hours =
//! "09:00-17:00"` and `business_days = "mon-fri"` (the defaults): working hours on working
//! days, in UTC, without holidays. The calendar itself and its clock (`biz_seconds(a, b)`,
//! durations with `clock = "business"`, working days of a period) are the domain's
//! [`BusinessCalendar`].

use std::collections::BTreeMap;

use chrono::{NaiveTime, Timelike, Weekday};
use crm_domain::calendar::BusinessCalendar;

use crate::definition::Param;
use crate::error::DefinitionError;

/// Day names of `business_days`, Monday first.
const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Mon),
    ("tue", Weekday::Tue),
    ("wed", Weekday::Wed),
    ("thu", Weekday::Thu),
    ("fri", Weekday::Fri),
    ("sat", Weekday::Sat),
    ("sun", Weekday::Sun),
];

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

/// Minutes after midnight of `HH:MM`.
fn hhmm(key: &str, s: &str) -> Result<u32, DefinitionError> {
    let t = NaiveTime::parse_from_str(s.trim(), "%H:%M")
        .map_err(|_| DefinitionError::invalid(key, format!("{s:?} is not a time HH:MM")))?;
    Ok(t.num_seconds_from_midnight() / 60)
}

/// Reads `business_hours` and `business_days` from params (defaults 09:00-17:00, mon-fri).
pub(crate) fn business_calendar(
    params: &BTreeMap<String, Param>,
) -> Result<BusinessCalendar, DefinitionError> {
    let mut cal = BusinessCalendar::default();
    if let Some(h) = text(params, "business_hours")? {
        let key = "params.business_hours";
        let (a, b) = h.split_once('-').ok_or_else(|| {
            DefinitionError::invalid(key, "write a range such as \"09:00-17:00\"")
        })?;
        cal.day_start_minute = hhmm(key, a)?;
        cal.day_end_minute = hhmm(key, b)?;
        if cal.day_end_minute <= cal.day_start_minute {
            return Err(DefinitionError::invalid(
                key,
                "the end must be after the start",
            ));
        }
    }
    if let Some(d) = text(params, "business_days")? {
        let key = "params.business_days";
        let index = |name: &str| {
            DAYS.iter()
                .position(|(n, _)| *n == name.trim())
                .ok_or_else(|| {
                    DefinitionError::invalid(
                        key,
                        format!("{name:?} is not a day; use mon, tue, ..., sun"),
                    )
                })
        };
        let mut working = [false; 7];
        for part in d.split(',') {
            if let Some((a, b)) = part.split_once('-') {
                let (a, b) = (index(a)?, index(b)?);
                if b < a {
                    return Err(DefinitionError::invalid(
                        key,
                        "a day range runs forward, e.g. mon-fri",
                    ));
                }
                working
                    .iter_mut()
                    .take(b + 1)
                    .skip(a)
                    .for_each(|x| *x = true);
            } else {
                let i = index(part)?;
                if let Some(x) = working.get_mut(i) {
                    *x = true;
                }
            }
        }
        if !working.contains(&true) {
            return Err(DefinitionError::invalid(
                key,
                "name at least one working day",
            ));
        }
        cal.weekend = DAYS
            .iter()
            .zip(working)
            .filter(|(_, open)| !open)
            .map(|((_, day), _)| *day)
            .collect();
    }
    Ok(cal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, Param> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Param::Text((*v).to_owned())))
            .collect()
    }

    #[test]
    fn reads_hours_and_days() {
        assert_eq!(
            business_calendar(&BTreeMap::new()).unwrap(),
            BusinessCalendar::default()
        );
        let cal = business_calendar(&params(&[
            ("business_hours", "08:30-18:00"),
            ("business_days", "mon-wed,sat"),
        ]))
        .unwrap();
        assert_eq!((cal.day_start_minute, cal.day_end_minute), (510, 1_080));
        assert_eq!(cal.weekend, vec![Weekday::Thu, Weekday::Fri, Weekday::Sun]);
        let sunday = business_calendar(&params(&[("business_days", "sun")])).unwrap();
        assert!(!sunday.weekend.contains(&Weekday::Sun));
        assert!(business_calendar(&params(&[("business_hours", "17:00-09:00")])).is_err());
        assert!(business_calendar(&params(&[("business_days", "fri-mon")])).is_err());
        assert!(business_calendar(&params(&[("business_days", "someday")])).is_err());
    }
}
