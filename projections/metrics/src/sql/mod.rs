//! A metric definition compiled to standard SQL over the Parquet export (`crm export`), for
//! DuckDB, Spark SQL and Trino: the same figures as the engine's, cell by cell, from the
//! analysts' own engines. [`to_sql`] gives the query, or the construct that has no SQL form
//! ([`NoSqlForm`]).
//!
//! The query reads the export's event files (`events/event_type=<T>/month=<YYYY-MM>/*.parquet`,
//! one typed column per payload field, laid out by the caller's [`EventLayout`]) and follows
//! the engine step by step, each step one CTE:
//!
//! 1. `kept`: the events a replay would keep for the metric (`view.rs`): the types it reads,
//!    the correction types, every event of the categories `ref(..)` names, the creation events
//!    of the categories of its types; instants as microseconds since 1970 (UTC).
//! 2. `marked`: the global exclusions (`TEST`, `DUPLICATE`, `RETRACTED`).
//! 3. `bounds` and `periods`: the default range (earliest kept `occurred_at` to one second
//!    after the latest) cut into the query's periods, with the engine's labels; none when no
//!    fact event exists ("no data").
//! 4. `lkN`: per-stream lookups (`has`, `later`, `first(..).x`, ...), see `lower.rs`.
//! 5. per measure: the facts with their `where`, time, `pick` and exclusion rules (`_coded`),
//!    placed in periods with their contribution (`_rows`), reduced per period (`_cells`).
//!
//! The answer has one row per period: `period`, `period_start`, `period_end`, `value`,
//! `numerator`, `denominator`, `currency`, `included` and `excluded_<CODE>` per reason code.
//!
//! What has a SQL form: `simple` measures (every aggregation; median and percentile not in
//! Trino), `ratio`, `cumulative`, `entities`, `conversion`, `duration` on the calendar clock
//! without pauses, `stock` (`stock.rs`) and `derived` (`derived.rs`), with conditions made of
//! payload and envelope fields, `stream.x`, the stream lookups, `now`, arithmetic,
//! comparisons and the calendar functions. What has none, and why, is each [`NoSqlForm`]:
//! `rfm` measures, `attr.x`, `meta.x`, the business calendar, `sum_field(..)`,
//! JSON and date columns; `projections/metrics/SQL.md` lists every built-in definition.
//!
//! Pure: no I/O. Caveat of the export, not of the query: `now` is the latest `recorded_at`
//! of the exported events (the export withholds the access-token register's events).

mod derived;
mod dialect;
mod doc;
mod error;
mod facts;
mod layout;
mod lower;
mod measures;
mod query;
mod stock;

use std::collections::BTreeSet;
use std::fmt::Write as _;

pub use dialect::{Dialect, UnknownDialect, DIALECTS};
pub use doc::{document, SQL_DOC_REFRESH_COMMAND};
pub use error::{NoSqlForm, SqlError};
pub use layout::{ColumnKind, EventLayout, LayoutColumn, TypeLayout, UNTYPED_PAYLOAD_COLUMN};

use dialect::MICROS_PER_SECOND;
use lower::{truthy, Lower, Scope, Sql, Ty};
use measures::{ConversionSpec, DurationSpec};

use crate::compile::{CAgg, CFacts, CInput, CMeasure, CRule, Compiled};
use crate::definition::{Agg, Pick};
use crate::error::MetricError;
use crate::expr::Expr;
use crate::period::Grain;
use crate::registry::{RegisteredMetric, Registry};
use crate::view::CORRECTION_TYPES;

/// Deepest chain of metrics built from metrics the compiler follows.
const NESTING_MAX: usize = 8;
/// Glob of the event files under an export directory.
pub const EVENT_FILES_GLOB: &str = "events/**/*.parquet";

/// The question the SQL answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlOptions {
    /// The engine.
    pub dialect: Dialect,
    /// The period grain (`All` for one period over the whole range).
    pub grain: Grain,
    /// The export directory DuckDB reads (`crm export --out DIR`); Spark and Trino read a
    /// table `events` instead.
    pub export_dir: String,
}

/// Internal failure: no SQL form, or a registry error.
enum Fail {
    No(NoSqlForm),
    Metric(MetricError),
}

impl From<NoSqlForm> for Fail {
    fn from(e: NoSqlForm) -> Fail {
        Fail::No(e)
    }
}

impl From<MetricError> for Fail {
    fn from(e: MetricError) -> Fail {
        Fail::Metric(e)
    }
}

/// Compiles metric `m` to one SQL query over the export for `options`.
///
/// # Errors
/// [`SqlError::NoSqlForm`] naming the construct without a SQL form; [`SqlError::Metric`]
/// when an input metric is unknown.
pub fn to_sql(
    registry: &Registry,
    m: &RegisteredMetric,
    layout: &EventLayout,
    options: &SqlOptions,
) -> Result<String, SqlError> {
    let mut b = Builder {
        lower: Lower {
            dialect: options.dialect,
            layout,
            lookups: Vec::new(),
            columns: std::collections::BTreeMap::new(),
            uses_now: false,
            vars: std::collections::BTreeMap::new(),
        },
        registry,
        ctes: Vec::new(),
        next: 0,
        stack: Vec::new(),
        grain: options.grain,
        periods: "periods".to_owned(),
    };
    let top = match b.measure(m) {
        Ok(cells) => cells,
        Err(Fail::No(reason)) => {
            return Err(SqlError::NoSqlForm {
                id: m.definition.id.clone(),
                version: m.definition.version,
                reason,
            })
        }
        Err(Fail::Metric(e)) => return Err(SqlError::Metric(e)),
    };
    b.finish(m, &top, options)
}

/// The figures of one measure per period: a CTE with `key_us` (its period's start), `value`, `num`, `den`,
/// `cur`, `included` and one column `x<i>` per reason code.
struct Cells {
    name: String,
    codes: Vec<String>,
    /// Whether `num` is an integer (the engine's exact numerator), else `value` stands in.
    num_int: bool,
}

/// What a fact row carries into placement besides its code and time.
enum Value<'e> {
    /// A value, as the engine evaluates it.
    Expr(&'static str, String, &'e Expr),
    /// A condition, true or false.
    Truthy(&'static str, String, &'e Expr),
    /// A key's text (the expression's, or the stream's name when absent).
    Key(&'static str, String, Option<&'e Expr>),
}

/// Facts after selection, `pick` and rules: a CTE with `position`, `stream_id`,
/// `occurred_us`, `t`, `code` and the values asked for.
struct Coded {
    name: String,
    codes: Vec<String>,
    types: Vec<(String, Ty)>,
}

impl Coded {
    fn ty(&self, name: &str) -> Ty {
        self.types
            .iter()
            .find(|(n, _)| n == name)
            .map_or(Ty::Null, |(_, t)| *t)
    }
}

struct Builder<'a> {
    lower: Lower<'a>,
    registry: &'a Registry,
    ctes: Vec<(String, String)>,
    next: usize,
    stack: Vec<String>,
    /// The query's grain.
    grain: Grain,
    /// The periods the measure being built is placed in (`periods`, or a derived input's
    /// shifted copy): `key_us`, `start_us`, `end_us`.
    periods: String,
}

fn push_code(codes: &mut Vec<String>, code: &str) {
    if !codes.iter().any(|c| c == code) {
        codes.push(code.to_owned());
    }
}

fn global_codes() -> Vec<String> {
    ["TEST", "DUPLICATE", "RETRACTED"]
        .iter()
        .map(|c| (*c).to_owned())
        .collect()
}

impl Builder<'_> {
    fn prefix(&mut self) -> String {
        self.next += 1;
        format!("m{}", self.next)
    }

    fn text(&self, s: &str) -> String {
        self.lower.dialect.text(s)
    }

    fn list(&self, items: &[String]) -> String {
        let quoted: Vec<String> = items.iter().map(|t| self.text(t)).collect();
        quoted.join(", ")
    }

    /// `column IN (items)`, false for no items.
    fn is_in(&self, column: &str, items: &[String]) -> String {
        if items.is_empty() {
            "FALSE".to_owned()
        } else {
            format!("{column} IN ({})", self.list(items))
        }
    }

    fn measure(&mut self, m: &RegisteredMetric) -> Result<Cells, Fail> {
        let key = m.definition.key();
        if self.stack.contains(&key) || self.stack.len() >= NESTING_MAX {
            return Err(Fail::Metric(MetricError::Cycle {
                id: m.definition.id.clone(),
                path: format!("{} -> {key}", self.stack.join(" -> ")),
            }));
        }
        self.stack.push(key);
        let out = self.measure_inner(&m.compiled);
        self.stack.pop();
        out
    }

    fn measure_inner(&mut self, c: &Compiled) -> Result<Cells, Fail> {
        let rules: [&[CRule]; 1] = [&c.rules];
        match &c.measure {
            CMeasure::Simple { facts, agg } => {
                Ok(self.simple(c, facts, agg, c.time.as_ref(), &rules, Placement::Period)?)
            }
            CMeasure::Cumulative {
                facts,
                agg,
                window_s,
                to_date,
            } => {
                let placement = match (window_s, to_date) {
                    (Some(w), _) => Placement::Window(*w),
                    (None, Some(g)) => Placement::ToDate(*g),
                    (None, None) => Placement::Period,
                };
                Ok(self.simple(c, facts, agg, c.time.as_ref(), &rules, placement)?)
            }
            CMeasure::Ratio { num, den } => {
                let n = self.input(c, num, "numerator")?;
                let d = self.input(c, den, "denominator")?;
                Ok(self.ratio(&n, &d))
            }
            CMeasure::Entities { facts, min_facts } => Ok(self.entities(c, facts, *min_facts)?),
            CMeasure::Duration {
                facts,
                start,
                start_filter,
                start_last,
                business,
                pause,
                agg,
                ..
            } => {
                if *business {
                    return Err(NoSqlForm::construct_at(
                        "measure.clock",
                        "a duration on the business clock",
                        "business seconds (working hours, weekends, holidays) need the calendar's walk",
                    )
                    .into());
                }
                if !pause.is_empty() {
                    return Err(NoSqlForm::construct_at(
                        "measure.pause",
                        "a duration with pauses",
                        "pauses and resumptions are paired in stream order, a sequential walk",
                    )
                    .into());
                }
                let spec = DurationSpec {
                    start,
                    filter: start_filter.as_ref(),
                    last: *start_last,
                };
                Ok(self.duration(c, facts, agg, &spec)?)
            }
            CMeasure::Conversion {
                facts,
                entity,
                conversion,
                conv_filter,
                conv_entity,
                window_s,
                count,
            } => {
                let spec = ConversionSpec {
                    entity: entity.as_ref(),
                    conversion,
                    filter: conv_filter.as_ref(),
                    conv_entity: conv_entity.as_ref().or(entity.as_ref()),
                    window_s: *window_s,
                    count: *count,
                };
                Ok(self.conversion(c, facts, &spec)?)
            }
            CMeasure::Stock { .. } => Ok(self.stock(c)?),
            CMeasure::Derived { expr, inputs } => self.derived(c, expr, inputs),
            CMeasure::Rfm { .. } => Err(NoSqlForm::Measure {
                measure: "rfm".into(),
                why: "quintile scores per entity at each period's end are not translated yet"
                    .into(),
            }
            .into()),
            CMeasure::Unsupported { needs } => Err(NoSqlForm::Unsupported {
                needs: needs.clone(),
            }
            .into()),
        }
    }

    fn input(&mut self, c: &Compiled, input: &CInput, name: &str) -> Result<Cells, Fail> {
        match input {
            CInput::Inline(i) => {
                let rules: [&[CRule]; 2] = [&c.rules, &i.rules];
                let time = i.time.as_ref().or(c.time.as_ref());
                Ok(self.simple(c, &i.facts, &i.agg, time, &rules, Placement::Period)?)
            }
            CInput::Metric { id, version } => {
                let m = self.registry.get(id, *version)?;
                self.measure(&m).map_err(|e| match e {
                    Fail::No(reason) => Fail::No(NoSqlForm::Input {
                        input: name.to_owned(),
                        metric: m.definition.key(),
                        source: Box::new(reason),
                    }),
                    other => other,
                })
            }
        }
    }

    /// The engine's key text of a value (`Val::key`: `null` for null), for picks, distinct
    /// counts, entities and currencies.
    fn key_text(&self, key: &str, s: &Sql) -> Result<String, NoSqlForm> {
        let text = self.lower.dialect.text_type();
        Ok(match s.ty {
            Ty::Null => "'null'".to_owned(),
            Ty::Text => format!("COALESCE({}, 'null')", s.text),
            Ty::Int | Ty::Bool => format!("COALESCE(CAST({} AS {text}), 'null')", s.text),
            Ty::Float | Ty::Time | Ty::Stamp => {
                return Err(NoSqlForm::construct_at(
                    key,
                    "a key that is a number or an instant",
                    "the engine prints those its own way",
                ))
            }
        })
    }
}

/// How facts are placed in the periods.
#[derive(Debug, Clone, Copy)]
enum Placement {
    /// In the period their time falls in.
    Period,
    /// In every period whose end is at most this many seconds after their time.
    Window(i64),
    /// In every period from the start of the grain's period holding the period's end.
    ToDate(Grain),
}

/// A value column of placed rows.
struct ValueColumn {
    text: String,
    ty: Ty,
}

#[cfg(test)]
mod tests;
