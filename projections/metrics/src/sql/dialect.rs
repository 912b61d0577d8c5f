//! The spellings that differ between the SQL engines a definition compiles for: identifiers,
//! text literals, time arithmetic on microseconds since 1970 (UTC), period boundaries and
//! labels, and the few functions without a standard name.
//!
//! Every instant is carried as a `BIGINT` of microseconds since 1970 (UTC), so comparisons and
//! differences never depend on a session time zone; only the calendar (period floors and
//! labels, `date`, `hour`, `weekday`) goes through the engine's timestamp functions, on
//! timestamps made from those microseconds.

use std::fmt;
use std::str::FromStr;

use crate::period::Grain;

/// Microseconds in one second.
pub(crate) const MICROS_PER_SECOND: i64 = 1_000_000;

/// The SQL engine a definition is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// DuckDB (1.x, 2.x): reads the export's files itself (`read_parquet`).
    #[default]
    DuckDb,
    /// Spark SQL (3.4+): reads a table `events` the caller registers over the event files,
    /// with `spark.sql.session.timeZone` set to `UTC`.
    Spark,
    /// Trino (or Athena v3): reads a table `events` over the event files.
    Trino,
}

/// Every dialect, for listings.
pub const DIALECTS: [Dialect; 3] = [Dialect::DuckDb, Dialect::Spark, Dialect::Trino];

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A dialect name that is none of `duckdb`, `spark`, `trino`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dialect `{0}` is not one of duckdb, spark, trino")]
pub struct UnknownDialect(pub String);

impl FromStr for Dialect {
    type Err = UnknownDialect;
    fn from_str(s: &str) -> Result<Self, UnknownDialect> {
        match s {
            "duckdb" => Ok(Dialect::DuckDb),
            "spark" => Ok(Dialect::Spark),
            "trino" => Ok(Dialect::Trino),
            other => Err(UnknownDialect(other.to_owned())),
        }
    }
}

impl Dialect {
    /// The dialect's name as the command line spells it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Dialect::DuckDb => "duckdb",
            Dialect::Spark => "spark",
            Dialect::Trino => "trino",
        }
    }

    /// A quoted identifier.
    pub(crate) fn ident(self, name: &str) -> String {
        match self {
            Dialect::Spark => format!("`{}`", name.replace('`', "``")),
            Dialect::DuckDb | Dialect::Trino => format!("\"{}\"", name.replace('"', "\"\"")),
        }
    }

    /// A text literal.
    pub(crate) fn text(self, s: &str) -> String {
        let quoted = s.replace('\'', "''");
        match self {
            // Spark reads backslashes in literals as escapes.
            Dialect::Spark => format!("'{}'", quoted.replace('\\', "\\\\")),
            Dialect::DuckDb | Dialect::Trino => format!("'{quoted}'"),
        }
    }

    /// The name of the text type in casts.
    pub(crate) fn text_type(self) -> &'static str {
        match self {
            Dialect::Spark => "STRING",
            Dialect::DuckDb | Dialect::Trino => "VARCHAR",
        }
    }

    /// `a` equals `b`, with two nulls equal and a null never equal to a value.
    pub(crate) fn null_safe_eq(self, a: &str, b: &str) -> String {
        match self {
            Dialect::Spark => format!("({a} <=> {b})"),
            Dialect::DuckDb | Dialect::Trino => format!("({a} IS NOT DISTINCT FROM {b})"),
        }
    }

    /// Integer division of two `BIGINT`s, truncated toward zero.
    pub(crate) fn int_div(self, a: &str, b: &str) -> String {
        match self {
            Dialect::DuckDb => format!("({a} // {b})"),
            Dialect::Spark => format!("({a} DIV {b})"),
            Dialect::Trino => format!("({a} / {b})"),
        }
    }

    /// Microseconds since 1970 of a timestamp column as the export writes it (UTC).
    pub(crate) fn epoch_us(self, ts: &str) -> String {
        match self {
            Dialect::DuckDb => format!("epoch_us({ts})"),
            Dialect::Spark => format!("unix_micros({ts})"),
            Dialect::Trino => format!("CAST(round(to_unixtime({ts}) * 1e6) AS BIGINT)"),
        }
    }

    /// A timestamp (UTC wall clock) from microseconds since 1970.
    pub(crate) fn ts(self, us: &str) -> String {
        match self {
            Dialect::DuckDb => format!("make_timestamp({us})"),
            Dialect::Spark => format!("timestamp_micros({us})"),
            Dialect::Trino => {
                format!("CAST(from_unixtime_nanos(CAST({us} AS BIGINT) * 1000) AS timestamp(6))")
            }
        }
    }

    /// Microseconds since 1970 of a timestamp made by [`Dialect::ts`] or a calendar function.
    pub(crate) fn ts_us(self, ts: &str) -> String {
        match self {
            Dialect::DuckDb => format!("epoch_us({ts})"),
            Dialect::Spark => format!("unix_micros({ts})"),
            Dialect::Trino => {
                format!("(date_diff('millisecond', TIMESTAMP '1970-01-01 00:00:00', {ts}) * 1000)")
            }
        }
    }

    /// The unit name of a grain in `date_trunc` and intervals, with the step of one period.
    fn unit(grain: Grain) -> Option<(&'static str, &'static str)> {
        match grain {
            Grain::Day => Some(("day", "'1' DAY")),
            Grain::Week => Some(("week", "'7' DAY")),
            Grain::Month => Some(("month", "'1' MONTH")),
            Grain::Quarter => Some(("quarter", "'3' MONTH")),
            Grain::Year => Some(("year", "'1' YEAR")),
            Grain::All => None,
        }
    }

    /// The start of the period of `grain` holding timestamp `ts` (ISO weeks start on Monday).
    pub(crate) fn trunc(self, grain: Grain, ts: &str) -> String {
        let Some((unit, _)) = Dialect::unit(grain) else {
            return ts.to_owned();
        };
        match self {
            Dialect::Spark => format!("date_trunc('{}', {ts})", unit.to_uppercase()),
            Dialect::DuckDb | Dialect::Trino => format!("date_trunc('{unit}', {ts})"),
        }
    }

    /// Timestamp `ts` moved one period of `grain` on.
    pub(crate) fn next(self, grain: Grain, ts: &str) -> String {
        match Dialect::unit(grain) {
            Some((_, step)) => format!("({ts} + INTERVAL {step})"),
            None => ts.to_owned(),
        }
    }

    /// Timestamp `ts` moved `n` periods of `grain` back (`All` is no step: `ts` itself).
    pub(crate) fn back(self, grain: Grain, ts: &str, n: u32) -> String {
        let step = match grain {
            Grain::Day => format!("'{n}' DAY"),
            Grain::Week => format!("'{}' DAY", u64::from(n) * 7),
            Grain::Month => format!("'{n}' MONTH"),
            Grain::Quarter => format!("'{}' MONTH", u64::from(n) * 3),
            Grain::Year => format!("'{n}' YEAR"),
            Grain::All => return ts.to_owned(),
        };
        format!("({ts} - INTERVAL {step})")
    }

    /// A calendar field of timestamp `ts` formatted with a pattern (`date_format` style).
    fn format(self, ts: &str, strftime: &str, java: &str) -> String {
        match self {
            Dialect::DuckDb => format!("strftime({ts}, '{strftime}')"),
            Dialect::Spark => format!("date_format({ts}, '{java}')"),
            Dialect::Trino => format!("format_datetime({ts}, '{java}')"),
        }
    }

    /// The engine's label of the period of `grain` starting at timestamp `ts`
    /// (`2017-03-01`, `2017-W09`, `2017-03`, `2017-Q1`, `2017`).
    pub(crate) fn label(self, grain: Grain, ts: &str) -> String {
        let text = self.text_type();
        match grain {
            Grain::Day => self.format(ts, "%Y-%m-%d", "yyyy-MM-dd"),
            Grain::Month => self.format(ts, "%Y-%m", "yyyy-MM"),
            Grain::Year => self.format(ts, "%Y", "yyyy"),
            Grain::Quarter => format!(
                "({} || '-Q' || CAST(quarter({ts}) AS {text}))",
                self.format(ts, "%Y", "yyyy")
            ),
            Grain::Week => match self {
                Dialect::DuckDb => format!("strftime({ts}, '%G-W%V')"),
                Dialect::Spark => format!(
                    "(CAST(extract(YEAROFWEEK FROM {ts}) AS STRING) || '-W' || lpad(CAST(weekofyear({ts}) AS STRING), 2, '0'))"
                ),
                Dialect::Trino => format!(
                    "(CAST(year_of_week({ts}) AS VARCHAR) || '-W' || lpad(CAST(week_of_year({ts}) AS VARCHAR), 2, '0'))"
                ),
            },
            Grain::All => self.format(ts, "%Y-%m-%dT%H:%M:%S", "yyyy-MM-dd'T'HH:mm:ss"),
        }
    }

    /// RFC 3339 text of an instant given in microseconds, as the engine prints it
    /// (`2017-03-01T00:00:00+00:00`, with `.sss` or `.ssssss` only when the instant has them).
    pub(crate) fn rfc3339(self, us: &str) -> String {
        let text = self.text_type();
        let base = self.label(Grain::All, &self.ts(us));
        let frac = format!("((({us}) % 1000000 + 1000000) % 1000000)");
        let millis = self.int_div(&frac, "1000");
        format!(
            "({base} || CASE WHEN {frac} = 0 THEN '' \
             WHEN {frac} % 1000 = 0 THEN '.' || lpad(CAST({millis} AS {text}), 3, '0') \
             ELSE '.' || lpad(CAST({frac} AS {text}), 6, '0') END || '+00:00')"
        )
    }

    /// The UTC calendar date of an instant (microseconds) as `YYYY-MM-DD` text.
    pub(crate) fn date_text(self, us: &str) -> String {
        self.label(Grain::Day, &self.ts(us))
    }

    /// The UTC hour of an instant (microseconds), 0..=23.
    pub(crate) fn hour(self, us: &str) -> String {
        format!("CAST(hour({}) AS BIGINT)", self.ts(us))
    }

    /// The ISO weekday of an instant (microseconds), 1 = Monday.
    pub(crate) fn weekday(self, us: &str) -> String {
        let ts = self.ts(us);
        match self {
            Dialect::DuckDb => format!("CAST(isodow({ts}) AS BIGINT)"),
            Dialect::Spark => format!("CAST(((dayofweek({ts}) + 5) % 7) + 1 AS BIGINT)"),
            Dialect::Trino => format!("CAST(day_of_week({ts}) AS BIGINT)"),
        }
    }

    /// The text at top-level field `field` of a JSON text column, null when absent.
    pub(crate) fn json_text(self, column: &str, field: &str) -> String {
        match self {
            Dialect::DuckDb => format!("json_extract_string({column}, '$.{field}')"),
            Dialect::Spark => format!("get_json_object({column}, '$.{field}')"),
            Dialect::Trino => format!("json_extract_scalar({column}, '$.{field}')"),
        }
    }

    /// The number of characters of a text.
    pub(crate) fn char_length(self, x: &str) -> String {
        match self {
            Dialect::Spark => format!("CAST(char_length({x}) AS BIGINT)"),
            Dialect::DuckDb | Dialect::Trino => format!("CAST(length({x}) AS BIGINT)"),
        }
    }

    /// The exact `p` quantile by linear interpolation between closest ranks (the engine's
    /// median and percentile), if the engine has one.
    pub(crate) fn quantile(self, x: &str, p: f64) -> Option<String> {
        match self {
            Dialect::DuckDb => Some(format!("quantile_cont({x}, {})", float_literal(p))),
            Dialect::Spark => Some(format!("percentile({x}, {})", float_literal(p))),
            Dialect::Trino => None,
        }
    }

    /// The periods of `grain` covering `[lo, hi)` (microseconds), as a `SELECT` of
    /// `period`, `key_us` (the start: the key of its cells), `start_us`, `end_us` from the relation `bounds` (columns `lo`, `hi`, `facts_n`).
    pub(crate) fn periods(self, grain: Grain) -> String {
        if grain == Grain::All {
            return format!(
                "SELECT {} || '..' || {} AS period, lo AS key_us, lo AS start_us, hi AS end_us FROM bounds WHERE facts_n > 0",
                self.rfc3339("lo"),
                self.rfc3339("hi")
            );
        }
        let (_, step) = Dialect::unit(grain).unwrap_or(("day", "'1' DAY"));
        let first = self.trunc(grain, &self.ts("lo"));
        let stop = self.ts("hi");
        let columns = format!(
            "{} AS period, {} AS key_us, {} AS start_us, {} AS end_us",
            self.label(grain, "s"),
            self.ts_us("s"),
            self.ts_us("s"),
            self.ts_us(&self.next(grain, "s"))
        );
        match self {
            Dialect::DuckDb => format!(
                "SELECT {columns} FROM (SELECT unnest(range({first}, {stop}, INTERVAL {step})) AS s FROM bounds WHERE facts_n > 0) g"
            ),
            Dialect::Spark => format!(
                "SELECT {columns} FROM (SELECT explode(sequence({first}, {stop}, INTERVAL {step})) AS s, hi FROM bounds WHERE facts_n > 0) g WHERE s < {stop}"
            ),
            Dialect::Trino => format!(
                "SELECT {columns} FROM bounds CROSS JOIN UNNEST(sequence({first}, {stop}, INTERVAL {step})) AS g(s) WHERE facts_n > 0 AND s < {stop}"
            ),
        }
    }
}

/// A float as a SQL `DOUBLE` (never a `DECIMAL`, which some engines make of `0.5`).
pub(crate) fn float_literal(x: f64) -> String {
    format!("CAST({x:?} AS DOUBLE)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_literals_are_escaped() {
        for d in DIALECTS {
            assert_eq!(d.name().parse::<Dialect>(), Ok(d));
        }
        assert!("postgres".parse::<Dialect>().is_err());
        assert_eq!(Dialect::DuckDb.text("it's"), "'it''s'");
        assert_eq!(Dialect::Spark.text("a\\b'"), "'a\\\\b'''");
        assert_eq!(Dialect::DuckDb.ident("order"), "\"order\"");
        assert_eq!(Dialect::Spark.ident("order"), "`order`");
        assert_eq!(float_literal(0.5), "CAST(0.5 AS DOUBLE)");
        assert_eq!(float_literal(1e-7), "CAST(1e-7 AS DOUBLE)");
    }
}
