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
//! Trino), `ratio` (inline or metric inputs that have one), `cumulative`, `entities`,
//! `conversion`, and `duration` on the calendar clock without pauses, with conditions made
//! of payload and envelope fields, `stream.x`, the stream lookups, `now`, arithmetic,
//! comparisons and the calendar functions. What has none, and why, is each [`NoSqlForm`]:
//! `stock`, `derived` and `rfm` measures, `ref(..)`, `attr.x`, `meta.x`, `biz_seconds(..)`,
//! `sum_field(..)`, JSON and date columns.
//!
//! Pure: no I/O. Caveat of the export, not of the query: `now` is the latest `recorded_at`
//! of the exported events (the export withholds the access-token register's events).

mod dialect;
mod doc;
mod error;
mod layout;
mod lower;

use std::collections::BTreeSet;
use std::fmt::Write as _;

pub use dialect::{Dialect, UnknownDialect, DIALECTS};
pub use doc::{document, SQL_DOC_REFRESH_COMMAND};
pub use error::{NoSqlForm, SqlError};
pub use layout::{ColumnKind, EventLayout, LayoutColumn, TypeLayout, UNTYPED_PAYLOAD_COLUMN};

use dialect::MICROS_PER_SECOND;
use lower::{truthy, Lower, Scope, Sql, Ty};

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
        },
        registry,
        ctes: Vec::new(),
        next: 0,
        stack: Vec::new(),
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

/// The figures of one measure per period: a CTE with `start_us`, `value`, `num`, `den`,
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
            CMeasure::Stock { .. } => Err(NoSqlForm::Measure {
                measure: "stock".into(),
                why: "spells opened and closed per entity, read at each period's end, are not translated yet".into(),
            }
            .into()),
            CMeasure::Derived { .. } => Err(NoSqlForm::Measure {
                measure: "derived".into(),
                why: "formulas over other metrics at period offsets are not translated yet".into(),
            }
            .into()),
            CMeasure::Rfm { .. } => Err(NoSqlForm::Measure {
                measure: "rfm".into(),
                why: "quintile scores per entity at each period's end are not translated yet".into(),
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

    /// The facts of `facts`, with their time, `where`, `pick`, rules and `values`.
    fn coded(
        &mut self,
        c: &Compiled,
        facts: &CFacts,
        time: Option<&Expr>,
        rules: &[&[CRule]],
        values: &[Value<'_>],
    ) -> Result<Coded, NoSqlForm> {
        let p = self.prefix();
        let d = self.lower.dialect;
        let types: BTreeSet<String> = facts.events.iter().cloned().collect();
        let mut scope = Scope::new("f", types, &c.params, true);
        let mut select = vec![
            "f.position".to_owned(),
            "f.stream_id".to_owned(),
            "f.global_code".to_owned(),
            "f.occurred_us".to_owned(),
        ];
        let t = match time {
            None => "f.occurred_us".to_owned(),
            Some(e) => {
                let s = self.lower.expr(&mut scope, "time", e)?;
                match s.ty {
                    Ty::Time => s.text,
                    Ty::Stamp => d.epoch_us(&s.text),
                    Ty::Null => "CAST(NULL AS BIGINT)".to_owned(),
                    other => {
                        return Err(NoSqlForm::construct_at(
                            "time",
                            format!("a time that is {other:?}"),
                            "the engine reads an instant (or parses a text)",
                        ))
                    }
                }
            }
        };
        select.push(format!("{t} AS t"));
        let w = match &facts.filter {
            Some(e) => truthy(&self.lower.expr(&mut scope, "facts.where", e)?),
            None => "TRUE".to_owned(),
        };
        select.push(format!("{w} AS w"));
        let mut codes = global_codes();
        let pick = if facts.pick == Pick::All {
            None
        } else {
            let key = match &facts.entity {
                Some(e) => {
                    let s = self.lower.expr(&mut scope, "facts.entity", e)?;
                    self.key_text("facts.entity", &s)?
                }
                None => "f.stream_id".to_owned(),
            };
            select.push(format!("{key} AS pick_key"));
            push_code(&mut codes, &facts.pick_code);
            Some(facts.pick)
        };
        let mut whens = Vec::new();
        for (i, rule) in rules.iter().flat_map(|r| r.iter()).enumerate() {
            let key = format!("exclude[{i}].when");
            let s = self.lower.expr(&mut scope, &key, &rule.when)?;
            select.push(format!("{} AS r{i}", truthy(&s)));
            whens.push(format!("WHEN r{i} THEN {}", self.text(&rule.code)));
            push_code(&mut codes, &rule.code);
        }
        let mut out_types = Vec::new();
        for v in values {
            let (name, text, ty) = match v {
                Value::Expr(name, key, e) => {
                    let s = self.lower.expr(&mut scope, key, e)?;
                    (*name, s.text, s.ty)
                }
                Value::Truthy(name, key, e) => {
                    let s = self.lower.expr(&mut scope, key, e)?;
                    (*name, truthy(&s), Ty::Bool)
                }
                Value::Key(name, key, e) => {
                    let text = match e {
                        Some(e) => {
                            let s = self.lower.expr(&mut scope, key, e)?;
                            self.key_text(key, &s)?
                        }
                        None => "f.stream_id".to_owned(),
                    };
                    (*name, text, Ty::Text)
                }
            };
            select.push(format!("{text} AS {name}"));
            out_types.push((name.to_owned(), ty));
        }
        let facts_cte = format!(
            "SELECT {}\n  FROM marked f{}\n  WHERE {}",
            select.join(",\n    "),
            scope.joins(),
            self.is_in("f.event_type", &facts.events)
        );
        self.ctes.push((format!("{p}_facts"), facts_cte));
        let pick_when = match pick {
            None => String::new(),
            Some(Pick::Last) => format!(
                " WHEN ROW_NUMBER() OVER (PARTITION BY CASE WHEN global_code IS NULL THEN 0 ELSE 1 END, pick_key ORDER BY t DESC NULLS LAST, position DESC) > 1 THEN {}",
                self.text(&facts.pick_code)
            ),
            Some(_) => format!(
                " WHEN ROW_NUMBER() OVER (PARTITION BY CASE WHEN global_code IS NULL THEN 0 ELSE 1 END, pick_key ORDER BY t ASC NULLS FIRST, position ASC) > 1 THEN {}",
                self.text(&facts.pick_code)
            ),
        };
        let carried: Vec<&str> = out_types.iter().map(|(n, _)| n.as_str()).collect();
        let mut columns = vec!["position", "stream_id", "occurred_us", "t"];
        columns.extend(carried);
        let coded = format!(
            "SELECT {},\n    CASE WHEN global_code IS NOT NULL THEN global_code{pick_when}{} END AS code\n  FROM {p}_facts WHERE w",
            columns.join(", "),
            if whens.is_empty() {
                String::new()
            } else {
                format!(" {}", whens.join(" "))
            }
        );
        let name = format!("{p}_coded");
        self.ctes.push((name.clone(), coded));
        Ok(Coded {
            name,
            codes,
            types: out_types,
        })
    }

    /// Rows of coded facts placed in the periods (`start_us` of each, the fact's columns).
    fn place(&self, coded: &str, placement: Placement) -> String {
        let d = self.lower.dialect;
        let lo = match placement {
            Placement::Period => "p.start_us".to_owned(),
            Placement::Window(w) => format!(
                "p.end_us - {}",
                i128::from(w) * i128::from(MICROS_PER_SECOND)
            ),
            Placement::ToDate(g) => d.ts_us(&d.trunc(g, &d.ts("p.end_us - 1"))),
        };
        format!("periods p JOIN {coded} c ON c.t >= {lo} AND c.t < p.end_us")
    }

    #[allow(clippy::too_many_arguments)]
    fn simple(
        &mut self,
        c: &Compiled,
        facts: &CFacts,
        agg: &CAgg,
        time: Option<&Expr>,
        rules: &[&[CRule]],
        placement: Placement,
    ) -> Result<Cells, NoSqlForm> {
        let mut values = Vec::new();
        if let Some(of) = &agg.of {
            values.push(Value::Expr("v", "measure.of".into(), of));
        }
        if let Some(when) = &agg.when {
            values.push(Value::Truthy("hit", "measure.when".into(), when));
        }
        if let Some(per) = &agg.per {
            values.push(Value::Expr("per", "measure.per".into(), per));
        }
        if let Some(cur) = &agg.currency {
            values.push(Value::Expr("cur", "measure.currency".into(), cur));
        }
        let coded = self.coded(c, facts, time, rules, &values)?;
        let from = self.place(&coded.name, placement);
        let value = ValueColumn {
            text: if agg.of.is_some() { "c.v" } else { "NULL" }.into(),
            ty: coded.ty("v"),
        };
        self.reduce_simple(&coded, &from, agg, &value)
    }

    /// The contribution of each placed fact for `agg` and its reduction per period.
    fn reduce_simple(
        &mut self,
        coded: &Coded,
        from: &str,
        agg: &CAgg,
        value: &ValueColumn,
    ) -> Result<Cells, NoSqlForm> {
        let p = self.prefix();
        let mut codes = coded.codes.clone();
        let needs_value = !matches!(agg.agg, Agg::Count | Agg::Share);
        let v = match value.ty {
            // A distinct count reads the value's key, never the value as a number.
            _ if agg.agg == Agg::CountDistinct => "NULL".to_owned(),
            Ty::Int | Ty::Float | Ty::Null => value.text.clone(),
            Ty::Bool => format!("CAST({} AS INTEGER)", value.text),
            other if needs_value => {
                return Err(NoSqlForm::construct_at(
                    "measure.of",
                    format!("a value that is {other:?}"),
                    "the engine aggregates numbers",
                ))
            }
            _ => "NULL".to_owned(),
        };
        let per_ty = coded.ty("per");
        let mut missing = Vec::new();
        if needs_value && agg.agg != Agg::CountDistinct {
            missing.push(format!("{v} IS NULL"));
        }
        if agg.agg == Agg::RatioOfSums {
            missing.push("c.per IS NULL".to_owned());
        }
        let code = if missing.is_empty() {
            "c.code".to_owned()
        } else {
            push_code(&mut codes, &agg.missing_code);
            format!(
                "CASE WHEN c.code IS NOT NULL THEN c.code WHEN {} THEN {} END",
                missing.join(" OR "),
                self.text(&agg.missing_code)
            )
        };
        let mut row = vec!["p.start_us".to_owned(), format!("{code} AS code")];
        row.push(format!("{v} AS v"));
        if agg.when.is_some() {
            row.push("CASE WHEN c.hit THEN 1 ELSE 0 END AS hit".to_owned());
        }
        match (agg.agg, agg.per.as_ref()) {
            (Agg::RatioOfSums, Some(_)) => {
                let per = match per_ty {
                    Ty::Int | Ty::Float | Ty::Null => "c.per".to_owned(),
                    Ty::Bool => "CAST(c.per AS INTEGER)".to_owned(),
                    other => {
                        return Err(NoSqlForm::construct_at(
                            "measure.per",
                            format!("a denominator that is {other:?}"),
                            "the engine sums numbers",
                        ))
                    }
                };
                row.push(format!("{per} AS per"));
            }
            (Agg::MeanPer, Some(_)) => {
                let s = Sql {
                    text: "c.per".into(),
                    ty: per_ty,
                };
                row.push(format!("{} AS k", self.key_text("measure.per", &s)?));
            }
            _ => {}
        }
        if agg.agg == Agg::CountDistinct {
            let s = Sql {
                text: "c.v".into(),
                ty: coded.ty("v"),
            };
            row.push(format!("{} AS k", self.key_text("measure.of", &s)?));
        }
        let currency = agg.currency.is_some();
        if currency {
            let s = Sql {
                text: "c.cur".into(),
                ty: coded.ty("cur"),
            };
            row.push(format!("{} AS cur", self.key_text("measure.currency", &s)?));
        }
        self.ctes.push((
            format!("{p}_rows"),
            format!("SELECT {}\n  FROM {from}", row.join(", ")),
        ));
        let inc = |x: &str| format!("CASE WHEN code IS NULL THEN {x} END");
        let mut aggs = Vec::new();
        let (num, den, val);
        let ratio =
            |n: &str, d: &str| format!("CASE WHEN {d} <> 0 THEN CAST({n} AS DOUBLE) / {d} END");
        let any = "a.included > 0";
        match agg.agg {
            Agg::Count => {
                num = "COALESCE(a.included, 0)".to_owned();
                den = "NULL".to_owned();
                val = format!("CAST({num} AS DOUBLE)");
            }
            Agg::Sum => {
                aggs.push(format!("SUM({}) AS s", inc("v")));
                num = "COALESCE(a.s, 0)".to_owned();
                den = "NULL".to_owned();
                val = format!("CAST({num} AS DOUBLE)");
            }
            Agg::Avg => {
                aggs.push(format!("SUM({}) AS s", inc("v")));
                num = "a.s".to_owned();
                den = format!("CASE WHEN {any} THEN a.included END");
                val = ratio("a.s", "a.included");
            }
            Agg::Share if agg.value_is_count => {
                aggs.push(format!("SUM({}) AS s", inc("hit")));
                num = "COALESCE(a.s, 0)".to_owned();
                den = "COALESCE(a.included, 0)".to_owned();
                val = format!("CAST({num} AS DOUBLE)");
            }
            Agg::Share => {
                aggs.push(format!("SUM({}) AS s", inc("hit")));
                num = "a.s".to_owned();
                den = format!("CASE WHEN {any} THEN a.included END");
                val = ratio("a.s", "a.included");
            }
            Agg::RatioOfSums => {
                aggs.push(format!("SUM({}) AS s", inc("v")));
                aggs.push(format!("SUM({}) AS s2", inc("per")));
                num = "a.s".to_owned();
                den = "a.s2".to_owned();
                val = ratio("a.s", "a.s2");
            }
            Agg::CountDistinct => {
                aggs.push(format!("COUNT(DISTINCT {}) AS s", inc("k")));
                num = "COALESCE(a.s, 0)".to_owned();
                den = "NULL".to_owned();
                val = format!("CAST({num} AS DOUBLE)");
            }
            Agg::MeanPer => {
                aggs.push(format!("SUM({}) AS s", inc("v")));
                aggs.push(format!("COUNT(DISTINCT {}) AS s2", inc("k")));
                num = "a.s".to_owned();
                den = format!("CASE WHEN {any} THEN a.s2 END");
                val = ratio("a.s", "a.s2");
            }
            Agg::Min | Agg::Max => {
                let f = if agg.agg == Agg::Min { "MIN" } else { "MAX" };
                aggs.push(format!("{f}({}) AS s", inc("CAST(v AS DOUBLE)")));
                num = "NULL".to_owned();
                den = "NULL".to_owned();
                val = "a.s".to_owned();
            }
            Agg::Median | Agg::Percentile => {
                let q = self
                    .lower
                    .dialect
                    .quantile(&inc("CAST(v AS DOUBLE)"), agg.p)
                    .ok_or_else(|| NoSqlForm::Dialect {
                        key: "measure.agg".into(),
                        construct: "an exact median or percentile".into(),
                        dialect: self.lower.dialect.name(),
                    })?;
                aggs.push(format!("{q} AS s"));
                num = "NULL".to_owned();
                den = "NULL".to_owned();
                val = "a.s".to_owned();
            }
        }
        if currency {
            aggs.push(format!("MIN({}) AS cur_lo", inc("cur")));
            aggs.push(format!("MAX({}) AS cur_hi", inc("cur")));
        }
        let (val, cur) = if currency {
            (
                format!("CASE WHEN a.cur_lo <> a.cur_hi THEN NULL ELSE {val} END"),
                "CASE WHEN a.cur_lo IS NULL THEN NULL WHEN a.cur_lo <> a.cur_hi THEN 'MIXED' ELSE a.cur_lo END".to_owned(),
            )
        } else {
            (
                val,
                format!("CAST(NULL AS {})", self.lower.dialect.text_type()),
            )
        };
        let num_int = match agg.agg {
            Agg::Count | Agg::CountDistinct | Agg::Share => true,
            Agg::Min | Agg::Max | Agg::Median | Agg::Percentile => false,
            Agg::Sum | Agg::Avg | Agg::RatioOfSums | Agg::MeanPer => value.ty != Ty::Float,
        };
        let outputs = [("num", num), ("den", den), ("value", val), ("cur", cur)];
        Ok(self.cells(&p, &codes, &aggs, "", &outputs, num_int))
    }

    /// The per-period cells of rows `<p>_rows` (`start_us`, `code`, ...): counts by code and
    /// `aggs`, then `outputs` over them (`a.` columns), every period present.
    fn cells(
        &mut self,
        p: &str,
        codes: &[String],
        aggs: &[String],
        join: &str,
        outputs: &[(&str, String)],
        num_int: bool,
    ) -> Cells {
        let mut select = vec![
            "start_us".to_owned(),
            "SUM(CASE WHEN code IS NULL THEN 1 ELSE 0 END) AS included".to_owned(),
        ];
        for (i, code) in codes.iter().enumerate() {
            select.push(format!(
                "SUM(CASE WHEN code = {} THEN 1 ELSE 0 END) AS x{i}",
                self.text(code)
            ));
        }
        select.extend(aggs.iter().cloned());
        self.ctes.push((
            format!("{p}_agg"),
            format!(
                "SELECT {}\n  FROM {p}_rows GROUP BY start_us",
                select.join(", ")
            ),
        ));
        let mut out = vec![
            "p.start_us".to_owned(),
            "COALESCE(a.included, 0) AS included".to_owned(),
        ];
        for i in 0..codes.len() {
            out.push(format!("COALESCE(a.x{i}, 0) AS x{i}"));
        }
        for (name, text) in outputs {
            out.push(format!("{text} AS {name}"));
        }
        let name = format!("{p}_cells");
        self.ctes.push((
            name.clone(),
            format!(
                "SELECT {}\n  FROM periods p LEFT JOIN {p}_agg a ON a.start_us = p.start_us{join}",
                out.join(",\n    ")
            ),
        ));
        Cells {
            name,
            codes: codes.to_vec(),
            num_int,
        }
    }

    /// A ratio of two inputs' cells: value n ÷ d, numerator and denominator the inputs'
    /// exact counts or values, counts added up.
    fn ratio(&mut self, n: &Cells, d: &Cells) -> Cells {
        let p = self.prefix();
        let mut codes = n.codes.clone();
        for code in &d.codes {
            push_code(&mut codes, code);
        }
        let side = |cells: &Cells, alias: &str, code: &str| {
            cells
                .codes
                .iter()
                .position(|c| c == code)
                .map_or_else(|| "0".to_owned(), |i| format!("{alias}.x{i}"))
        };
        let mut select = vec![
            "n.start_us".to_owned(),
            "n.included + d.included AS included".to_owned(),
        ];
        for (i, code) in codes.iter().enumerate() {
            select.push(format!(
                "{} + {} AS x{i}",
                side(n, "n", code),
                side(d, "d", code)
            ));
        }
        select.push("CASE WHEN d.value <> 0 THEN n.value / d.value END AS value".to_owned());
        // The engine's numerator and denominator: an input's exact count or sum, else its value.
        let exact = |cells: &Cells, alias: &str| {
            if cells.num_int {
                format!("{alias}.num")
            } else {
                format!("{alias}.value")
            }
        };
        select.push(format!("{} AS num", exact(n, "n")));
        select.push(format!("{} AS den", exact(d, "d")));
        select.push(format!(
            "CAST(NULL AS {}) AS cur",
            self.lower.dialect.text_type()
        ));
        let name = format!("{p}_cells");
        self.ctes.push((
            name.clone(),
            format!(
                "SELECT {}\n  FROM {} n JOIN {} d ON d.start_us = n.start_us",
                select.join(",\n    "),
                n.name,
                d.name
            ),
        ));
        Cells {
            name,
            codes,
            num_int: n.num_int,
        }
    }

    fn entities(
        &mut self,
        c: &Compiled,
        facts: &CFacts,
        min_facts: u32,
    ) -> Result<Cells, NoSqlForm> {
        let values = [Value::Key(
            "ek",
            "facts.entity".into(),
            facts.entity.as_ref(),
        )];
        let coded = self.coded(c, facts, c.time.as_ref(), &[&c.rules], &values)?;
        let p = self.prefix();
        let from = self.place(&coded.name, Placement::Period);
        self.ctes.push((
            format!("{p}_rows"),
            format!("SELECT p.start_us, c.code, c.ek\n  FROM {from}"),
        ));
        self.ctes.push((
            format!("{p}_groups"),
            format!("SELECT start_us, ek, COUNT(*) AS n FROM {p}_rows WHERE code IS NULL GROUP BY start_us, ek"),
        ));
        self.ctes.push((
            format!("{p}_entities"),
            format!("SELECT start_us, SUM(CASE WHEN n >= {min_facts} THEN 1 ELSE 0 END) AS num, COUNT(*) AS den FROM {p}_groups GROUP BY start_us"),
        ));
        let text = self.lower.dialect.text_type();
        let outputs = [
            ("num", "e.num".to_owned()),
            ("den", "e.den".to_owned()),
            (
                "value",
                "CASE WHEN e.den <> 0 THEN CAST(e.num AS DOUBLE) / e.den END".to_owned(),
            ),
            ("cur", format!("CAST(NULL AS {text})")),
        ];
        let join = format!(" LEFT JOIN {p}_entities e ON e.start_us = p.start_us");
        Ok(self.cells(&p, &coded.codes, &[], &join, &outputs, true))
    }

    fn duration(
        &mut self,
        c: &Compiled,
        facts: &CFacts,
        agg: &CAgg,
        spec: &DurationSpec<'_>,
    ) -> Result<Cells, NoSqlForm> {
        let mut values = Vec::new();
        if let Some(when) = &agg.when {
            values.push(Value::Truthy("hit", "measure.when".into(), when));
        }
        if let Some(cur) = &agg.currency {
            values.push(Value::Expr("cur", "measure.currency".into(), cur));
        }
        if agg.per.is_some() {
            return Err(NoSqlForm::construct_at(
                "measure.per",
                "a duration with `per`",
                "not translated",
            ));
        }
        let coded = self.coded(c, facts, c.time.as_ref(), &[&c.rules], &values)?;
        let p = self.prefix();
        let mut scope = Scope::new("s", spec.start.iter().cloned().collect(), &c.params, true);
        let filter = match spec.filter {
            Some(e) => truthy(&self.lower.expr(&mut scope, "measure.start_where", e)?),
            None => "TRUE".to_owned(),
        };
        self.ctes.push((
            format!("{p}_starts"),
            format!(
                "SELECT s.stream_id, s.position FROM marked s{}\n  WHERE s.event_type IN ({}) AND s.global_code IS NULL AND {filter}",
                scope.joins(),
                self.list(spec.start)
            ),
        ));
        let pick = if spec.last { "MAX" } else { "MIN" };
        self.ctes.push((
            format!("{p}_match"),
            format!(
                "SELECT c.position, {pick}(s.position) AS start_pos FROM {} c JOIN {p}_starts s ON s.stream_id = c.stream_id AND s.position < c.position GROUP BY c.position",
                coded.name
            ),
        ));
        let d = self.lower.dialect;
        let secs = d.int_div(
            "(c.occurred_us - st.occurred_us)",
            &MICROS_PER_SECOND.to_string(),
        );
        let mut codes = coded.codes.clone();
        push_code(&mut codes, "NO_START");
        push_code(&mut codes, "NEGATIVE_DURATION");
        let mut carried = vec![
            "c.t".to_owned(),
            format!(
                "CASE WHEN c.code IS NOT NULL THEN c.code WHEN st.position IS NULL THEN 'NO_START' WHEN {secs} < 0 THEN 'NEGATIVE_DURATION' END AS code"
            ),
            format!("CASE WHEN st.position IS NULL THEN NULL ELSE {secs} END AS v"),
        ];
        for (name, _) in &coded.types {
            carried.push(format!("c.{name}"));
        }
        self.ctes.push((
            format!("{p}_timed"),
            format!(
                "SELECT {}\n  FROM {} c LEFT JOIN {p}_match m ON m.position = c.position LEFT JOIN marked st ON st.position = m.start_pos",
                carried.join(", "),
                coded.name
            ),
        ));
        let timed = Coded {
            name: format!("{p}_timed"),
            codes,
            types: coded.types.clone(),
        };
        let from = self.place(&timed.name, Placement::Period);
        self.reduce_simple(
            &timed,
            &from,
            agg,
            &ValueColumn {
                text: "c.v".into(),
                ty: Ty::Int,
            },
        )
    }

    fn conversion(
        &mut self,
        c: &Compiled,
        facts: &CFacts,
        spec: &ConversionSpec<'_>,
    ) -> Result<Cells, NoSqlForm> {
        let values = [Value::Key("ek", "measure.entity".into(), spec.entity)];
        let coded = self.coded(c, facts, c.time.as_ref(), &[&c.rules], &values)?;
        let p = self.prefix();
        let mut scope = Scope::new(
            "e",
            spec.conversion.iter().cloned().collect(),
            &c.params,
            true,
        );
        let key = match spec.conv_entity {
            Some(e) => {
                let s = self
                    .lower
                    .expr(&mut scope, "measure.conversion_entity", e)?;
                self.key_text("measure.conversion_entity", &s)?
            }
            None => "e.stream_id".to_owned(),
        };
        let filter = match spec.filter {
            Some(e) => truthy(&self.lower.expr(&mut scope, "measure.conversion_where", e)?),
            None => "TRUE".to_owned(),
        };
        self.ctes.push((
            format!("{p}_conv"),
            format!(
                "SELECT {key} AS ek, e.occurred_us AS ts FROM marked e{}\n  WHERE e.event_type IN ({}) AND e.global_code IS NULL AND {filter}",
                scope.joins(),
                self.list(spec.conversion)
            ),
        ));
        let window = i128::from(spec.window_s) * i128::from(MICROS_PER_SECOND);
        self.ctes.push((
            format!("{p}_hit"),
            format!(
                "SELECT c.position, MAX(CASE WHEN v.ts IS NULL THEN 0 ELSE 1 END) AS converted FROM {} c LEFT JOIN {p}_conv v ON v.ek = c.ek AND v.ts >= c.t AND v.ts <= c.t + {window} WHERE c.code IS NULL AND c.t IS NOT NULL GROUP BY c.position",
                coded.name
            ),
        ));
        self.lower.uses_now = true;
        let mut codes = coded.codes.clone();
        push_code(&mut codes, "PENDING");
        let from = self.place(&coded.name, Placement::Period);
        self.ctes.push((
            format!("{p}_rows"),
            format!(
                "SELECT p.start_us, CASE WHEN c.code IS NOT NULL THEN c.code WHEN COALESCE(h.converted, 0) = 0 AND c.t + {window} > (SELECT now_us FROM head) THEN 'PENDING' END AS code, COALESCE(h.converted, 0) AS hit\n  FROM {from} LEFT JOIN {p}_hit h ON h.position = c.position"
            ),
        ));
        let text = self.lower.dialect.text_type();
        let cur = format!("CAST(NULL AS {text})");
        let aggs = ["SUM(CASE WHEN code IS NULL THEN hit END) AS s".to_owned()];
        let outputs = if spec.count {
            [
                ("num", "COALESCE(a.s, 0)".to_owned()),
                ("den", "NULL".to_owned()),
                ("value", "CAST(COALESCE(a.s, 0) AS DOUBLE)".to_owned()),
                ("cur", cur),
            ]
        } else {
            [
                ("num", "a.s".to_owned()),
                (
                    "den",
                    "CASE WHEN a.included > 0 THEN a.included END".to_owned(),
                ),
                (
                    "value",
                    "CASE WHEN a.included <> 0 THEN CAST(a.s AS DOUBLE) / a.included END"
                        .to_owned(),
                ),
                ("cur", cur),
            ]
        };
        Ok(self.cells(&p, &codes, &aggs, "", &outputs, true))
    }

    /// The whole query: the events, the kept events and their global exclusions, the
    /// periods, the lookups, the measure's CTEs and the answer.
    fn finish(
        &mut self,
        m: &RegisteredMetric,
        top: &Cells,
        options: &SqlOptions,
    ) -> Result<String, SqlError> {
        let d = options.dialect;
        let req = self.registry.requirements(m)?;
        let layout = self.lower.layout;
        let mut kept_types: Vec<String> = req.types.iter().cloned().collect();
        for t in CORRECTION_TYPES {
            if !kept_types.iter().any(|k| k == t) {
                kept_types.push((*t).to_owned());
            }
        }
        if req.attrs {
            kept_types.push(crm_domain::attributes::ATTRIBUTES_SET.to_owned());
        }
        let creation: BTreeSet<String> = req
            .types
            .iter()
            .filter_map(|t| crm_domain::DomainEvent::category_of(t))
            .map(str::to_owned)
            .collect();
        let facts: Vec<String> = req.fact_types.iter().cloned().collect();
        let is_test = layout.column_of(None, "is_test");
        let retracted = layout.column_of(Some("EventRetracted"), "event_id");
        let mut columns = self.lower.columns.clone();
        for (name, kind) in is_test.iter().chain(retracted.iter()) {
            columns.insert(name.clone(), *kind);
        }
        // A retraction names the retracted event's id; without a typed column it is in the
        // untyped payload's JSON (the engine parses it as a UUID: compared in lower case).
        let retracted_id = match &retracted {
            Some((name, _)) => format!("lower({})", d.ident(name)),
            None => {
                columns.insert(UNTYPED_PAYLOAD_COLUMN.to_owned(), ColumnKind::Json);
                format!(
                    "CASE WHEN event_type = 'EventRetracted' THEN lower({}) END",
                    d.json_text(&d.ident(UNTYPED_PAYLOAD_COLUMN), "event_id")
                )
            }
        };

        let mut sql = String::new();
        let _ = writeln!(
            sql,
            "-- {} v{}: {} (spec hash {})",
            m.definition.id, m.definition.version, m.definition.name, m.spec_hash
        );
        let _ = writeln!(
            sql,
            "-- `crm metric sql {} --version {} --period {} --dialect {}`: the figures of `crm metric {} --version {} --period {}`",
            m.definition.id,
            m.definition.version,
            options.grain,
            d,
            m.definition.id,
            m.definition.version,
            options.grain
        );
        let _ = writeln!(
            sql,
            "-- over the Parquet export (`crm export --out DIR`), at the export's last position, one row per period:"
        );
        let _ = writeln!(
            sql,
            "-- period, period_start, period_end (UTC), value, numerator, denominator, currency, included, excluded_<CODE>."
        );
        match d {
            Dialect::DuckDb => {}
            Dialect::Spark => {
                let _ = writeln!(sql, "-- Spark SQL: register the event files as the table `events` and use UTC, e.g.");
                let _ = writeln!(
                    sql,
                    "--   spark.conf.set(\"spark.sql.session.timeZone\", \"UTC\")"
                );
                let _ = writeln!(sql, "--   spark.read.option(\"mergeSchema\", \"true\").parquet(\"DIR/events\").createOrReplaceTempView(\"events\")");
            }
            Dialect::Trino => {
                let _ = writeln!(sql, "-- Trino: a table `events` over DIR/events (Parquet, partitioned by event_type and month).");
            }
        }
        if !columns.is_empty() {
            let names: Vec<&str> = columns.keys().map(String::as_str).collect();
            let _ = writeln!(sql, "-- Payload columns read: {}.", names.join(", "));
        }
        sql.push_str("WITH\n");
        let mut ctes: Vec<(String, String)> = Vec::new();
        if d == Dialect::DuckDb {
            let dir = options.export_dir.trim_end_matches('/');
            let mut source = format!(
                "SELECT * FROM read_parquet({}, hive_partitioning = true, union_by_name = true)",
                d.text(&format!("{dir}/{EVENT_FILES_GLOB}"))
            );
            if !columns.is_empty() {
                // Columns no exported event has yet are still there (null), so the query runs
                // on an export of any part of the log.
                let typed: Vec<String> = columns
                    .iter()
                    .map(|(name, kind)| {
                        format!("CAST(NULL AS {}) AS {}", kind.duckdb(), d.ident(name))
                    })
                    .collect();
                source.push_str(&format!(
                    "\n  UNION ALL BY NAME SELECT {} WHERE FALSE",
                    typed.join(", ")
                ));
            }
            ctes.push(("events".into(), source));
        }
        let mut kept = vec![
            "position".to_owned(),
            "stream_id".to_owned(),
            "stream_category".to_owned(),
            "stream_version".to_owned(),
            "event_id".to_owned(),
            "event_type".to_owned(),
            "actor".to_owned(),
            format!("{} AS occurred_us", d.epoch_us("occurred_at")),
            format!("{} AS recorded_us", d.epoch_us("recorded_at")),
            match &is_test {
                Some((name, _)) => format!("{} AS is_test_flag", d.ident(name)),
                None => "CAST(NULL AS BOOLEAN) AS is_test_flag".to_owned(),
            },
            format!("{retracted_id} AS retracted_id"),
        ];
        kept.extend(self.lower.columns.keys().map(|n| d.ident(n)));
        let mut keep = vec![format!("event_type IN ({})", self.list(&kept_types))];
        if !req.ref_categories.is_empty() {
            let cats: Vec<String> = req.ref_categories.iter().cloned().collect();
            keep.push(format!("stream_category IN ({})", self.list(&cats)));
        }
        if !creation.is_empty() {
            let cats: Vec<String> = creation.into_iter().collect();
            keep.push(format!(
                "(stream_version = 1 AND stream_category IN ({}))",
                self.list(&cats)
            ));
        }
        ctes.push((
            "kept".into(),
            format!(
                "SELECT {}\n  FROM events\n  WHERE {}",
                kept.join(", "),
                keep.join("\n     OR ")
            ),
        ));
        ctes.push((
            "test_streams".into(),
            "SELECT DISTINCT stream_id FROM kept WHERE (stream_version = 1 AND COALESCE(is_test_flag, FALSE)) OR event_type = 'RecordFlaggedTest'".into(),
        ));
        ctes.push((
            "merged_streams".into(),
            "SELECT DISTINCT stream_id FROM kept WHERE event_type = 'RecordMerged'".into(),
        ));
        ctes.push((
            "retracted".into(),
            "SELECT DISTINCT retracted_id AS event_id FROM kept WHERE event_type = 'EventRetracted' AND retracted_id IS NOT NULL".into(),
        ));
        ctes.push((
            "marked".into(),
            "SELECT k.*, CASE WHEN t.stream_id IS NOT NULL THEN 'TEST' WHEN m.stream_id IS NOT NULL AND k.stream_version = 1 THEN 'DUPLICATE' WHEN r.event_id IS NOT NULL THEN 'RETRACTED' END AS global_code\n  FROM kept k\n  LEFT JOIN test_streams t ON t.stream_id = k.stream_id\n  LEFT JOIN merged_streams m ON m.stream_id = k.stream_id\n  LEFT JOIN retracted r ON r.event_id = k.event_id".into(),
        ));
        if self.lower.uses_now {
            ctes.push((
                "head".into(),
                format!(
                    "SELECT MAX({}) AS now_us FROM events",
                    d.epoch_us("recorded_at")
                ),
            ));
        }
        ctes.push((
            "bounds".into(),
            format!(
                "SELECT MIN(occurred_us) AS lo, MAX(occurred_us) + {MICROS_PER_SECOND} AS hi, SUM(CASE WHEN {} THEN 1 ELSE 0 END) AS facts_n FROM kept",
                self.is_in("event_type", &facts)
            ),
        ));
        ctes.push(("periods".into(), d.periods(options.grain)));
        for (i, l) in self.lower.lookups.iter().enumerate() {
            let mut select = vec![
                "e.stream_id".to_owned(),
                "MIN(e.position) AS first_pos".to_owned(),
                "MAX(e.position) AS last_pos".to_owned(),
                "COUNT(*) AS n".to_owned(),
            ];
            for (j, s) in l.sums.iter().enumerate() {
                select.push(format!(
                    "CASE WHEN COUNT(*) = COUNT({v}) THEN SUM({v}) END AS sum{j}",
                    v = s.text
                ));
            }
            let cond = l
                .cond
                .as_ref()
                .map_or_else(String::new, |c| format!(" AND {c}"));
            ctes.push((
                format!("lk{i}"),
                format!(
                    "SELECT {}\n  FROM marked e WHERE e.event_type = {} AND e.global_code IS NULL{cond}\n  GROUP BY e.stream_id",
                    select.join(", "),
                    d.text(&l.ty)
                ),
            ));
        }
        ctes.append(&mut self.ctes);
        let body: Vec<String> = ctes
            .iter()
            .map(|(name, text)| format!("{name} AS (\n  {text}\n)"))
            .collect();
        sql.push_str(&body.join(",\n"));
        let mut answer = vec![
            "p.period".to_owned(),
            format!("{} AS period_start", d.ts("p.start_us")),
            format!("{} AS period_end", d.ts("p.end_us")),
            "c.value".to_owned(),
            "c.num AS numerator".to_owned(),
            "c.den AS denominator".to_owned(),
            "c.cur AS currency".to_owned(),
            "c.included".to_owned(),
        ];
        for (i, code) in top.codes.iter().enumerate() {
            answer.push(format!(
                "c.x{i} AS {}",
                d.ident(&format!("excluded_{code}"))
            ));
        }
        let _ = write!(
            sql,
            "\nSELECT {}\nFROM periods p JOIN {} c ON c.start_us = p.start_us\nORDER BY p.start_us\n",
            answer.join(",\n  "),
            top.name
        );
        Ok(sql)
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

struct DurationSpec<'a> {
    start: &'a [String],
    filter: Option<&'a Expr>,
    last: bool,
}

struct ConversionSpec<'a> {
    entity: Option<&'a Expr>,
    conversion: &'a [String],
    filter: Option<&'a Expr>,
    conv_entity: Option<&'a Expr>,
    window_s: i64,
    count: bool,
}
