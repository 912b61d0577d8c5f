//! Periods `P = [p0, p1)` at a grain (day, ISO week, month, quarter, year, or the whole
//! range), in UTC. Facts enter a period through their metric's `time` rule; stocks are read
//! at `p1` (and `p0` for stock pairs).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::error::MetricError;

/// Most periods one query may span.
pub const PERIODS_MAX: usize = 10_000;

/// Size of a period.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Grain {
    Day,
    /// ISO week, Monday first.
    Week,
    Month,
    Quarter,
    Year,
    /// One period: the whole queried range.
    #[default]
    All,
}

impl FromStr for Grain {
    type Err = MetricError;
    fn from_str(s: &str) -> Result<Self, MetricError> {
        Ok(match s {
            "day" => Grain::Day,
            "week" => Grain::Week,
            "month" => Grain::Month,
            "quarter" => Grain::Quarter,
            "year" => Grain::Year,
            "all" => Grain::All,
            other => {
                return Err(MetricError::Query(format!(
                    "period `{other}` is not one of day, week, month, quarter, year, all"
                )))
            }
        })
    }
}

impl fmt::Display for Grain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Grain::Day => "day",
            Grain::Week => "week",
            Grain::Month => "month",
            Grain::Quarter => "quarter",
            Grain::Year => "year",
            Grain::All => "all",
        })
    }
}

/// One period `[start, end)`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Period {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// `2017-03-01`, `2017-W09`, `2017-03`, `2017-Q1`, `2017`, or `start..end`.
    pub label: String,
}

impl Period {
    /// Whether `t` lies in `[start, end)`.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN))
}

/// Start of the period of `grain` containing `t` (`All` returns `t`).
pub fn floor(grain: Grain, t: DateTime<Utc>) -> DateTime<Utc> {
    let d = t.date_naive();
    let first = match grain {
        Grain::All => return t,
        Grain::Day => d,
        Grain::Week => d - Duration::days(i64::from(d.weekday().num_days_from_monday())),
        Grain::Month => d.with_day(1).unwrap_or(d),
        Grain::Quarter => {
            let m0 = (d.month0() / 3) * 3 + 1;
            NaiveDate::from_ymd_opt(d.year(), m0, 1).unwrap_or(d)
        }
        Grain::Year => NaiveDate::from_ymd_opt(d.year(), 1, 1).unwrap_or(d),
    };
    midnight(first)
}

/// `t` moved by `n` periods of `grain` (`All` is not a step; returns `None`).
pub fn step(grain: Grain, t: DateTime<Utc>, n: i64) -> Option<DateTime<Utc>> {
    let months = |k: i64| -> Option<DateTime<Utc>> {
        let k = k.checked_mul(n)?;
        let abs = Months::new(u32::try_from(k.unsigned_abs()).ok()?);
        if k >= 0 {
            t.checked_add_months(abs)
        } else {
            t.checked_sub_months(abs)
        }
    };
    match grain {
        Grain::Day => t.checked_add_signed(Duration::try_days(n)?),
        Grain::Week => t.checked_add_signed(Duration::try_weeks(n)?),
        Grain::Month => months(1),
        Grain::Quarter => months(3),
        Grain::Year => months(12),
        Grain::All => None,
    }
}

fn label(grain: Grain, start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    let d = start.date_naive();
    match grain {
        Grain::Day => d.format("%Y-%m-%d").to_string(),
        Grain::Week => {
            let w = d.iso_week();
            format!("{}-W{:02}", w.year(), w.week())
        }
        Grain::Month => d.format("%Y-%m").to_string(),
        Grain::Quarter => format!("{}-Q{}", d.year(), d.month0() / 3 + 1),
        Grain::Year => format!("{}", d.year()),
        Grain::All => format!("{}..{}", start.to_rfc3339(), end.to_rfc3339()),
    }
}

/// The periods of `grain` covering `[from, to)`: the first starts at `floor(from)`, the last
/// ends at or after `to`. `All` gives the one period `[from, to)`.
///
/// # Errors
/// An empty or reversed range, or more than [`PERIODS_MAX`] periods.
pub fn periods(
    grain: Grain,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Period>, MetricError> {
    if to <= from {
        return Err(MetricError::Query(format!(
            "the range {}..{} is empty; `to` must be after `from`",
            from.to_rfc3339(),
            to.to_rfc3339()
        )));
    }
    if grain == Grain::All {
        return Ok(vec![Period {
            start: from,
            end: to,
            label: label(grain, from, to),
        }]);
    }
    let mut out = Vec::new();
    let mut start = floor(grain, from);
    while start < to {
        if out.len() >= PERIODS_MAX {
            return Err(MetricError::Limit {
                what: "the number of periods",
                limit: PERIODS_MAX,
                hint: "use a coarser period or a shorter range",
            });
        }
        let end = step(grain, start, 1)
            .ok_or_else(|| MetricError::Query("period end out of the date range".into()))?;
        out.push(Period {
            start,
            end,
            label: label(grain, start, end),
        });
        start = end;
    }
    Ok(out)
}

/// The periods `offset` steps earlier (for derived inputs such as the previous period).
/// With `All` the range moves back by its own length.
pub fn shift(grain: Grain, periods: &[Period], offset: u32) -> Result<Vec<Period>, MetricError> {
    let n = -i64::from(offset);
    periods
        .iter()
        .map(|p| {
            let (start, end) = if grain == Grain::All {
                let len = p.end - p.start;
                let back = len
                    .checked_mul(i32::try_from(offset).unwrap_or(i32::MAX))
                    .ok_or_else(|| MetricError::Query("offset too large".into()))?;
                (p.start - back, p.end - back)
            } else {
                (
                    step(grain, p.start, n)
                        .ok_or_else(|| MetricError::Query("offset too large".into()))?,
                    step(grain, p.end, n)
                        .ok_or_else(|| MetricError::Query("offset too large".into()))?,
                )
            };
            Ok(Period {
                start,
                end,
                label: label(grain, start, end),
            })
        })
        .collect()
}

/// Index of the period containing `t` (periods sorted and contiguous).
pub fn index_of(periods: &[Period], t: DateTime<Utc>) -> Option<usize> {
    let i = periods.partition_point(|p| p.end <= t);
    periods.get(i).filter(|p| p.contains(t)).map(|_| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn grains_floor_and_label() {
        let x = t("2017-05-17T13:00:00Z");
        assert_eq!(floor(Grain::Week, x), t("2017-05-15T00:00:00Z"));
        assert_eq!(floor(Grain::Quarter, x), t("2017-04-01T00:00:00Z"));
        let ps = periods(
            Grain::Quarter,
            t("2017-01-01T00:00:00Z"),
            t("2018-01-01T00:00:00Z"),
        )
        .unwrap();
        let labels: Vec<_> = ps.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["2017-Q1", "2017-Q2", "2017-Q3", "2017-Q4"]);
        assert_eq!(index_of(&ps, x), Some(1));
        assert_eq!(index_of(&ps, t("2018-01-01T00:00:00Z")), None);
        let prev = shift(Grain::Quarter, &ps[..1], 4).unwrap();
        assert_eq!(prev[0].label, "2016-Q1");
    }
}
