//! Evaluation: `value(id@v, P, filter, T)` (metric, version, period, filter, what the log
//! knew), and `compare` of versions.
//!
//! Every [`Figure`] carries what an audit asks of a derivation: value, numerator and
//! denominator, counts included and excluded by reason; the [`Evaluation`] names the
//! definition (id, version, spec hash) and the log position and chain hash it read to.
//! Same metric, same query, same log position: the same bytes (maps are ordered, floats
//! print canonically).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use crm_domain::values::{Currency, Money};
use crm_eventstore::EventStore;
use serde::{Deserialize, Serialize};

use crate::compile::CMeasure;
use crate::definition::{Kind, MeasureType, Unit};
use crate::derivation::{CellVal, Computed, Frame, Num};
use crate::error::MetricError;
use crate::measures::{query_periods, Runner};
use crate::period::{Grain, Period};
use crate::registry::{RegisteredMetric, Registry};
use crate::view::{KnownAt, LogMark, LogView};

/// Most figures (cells) one evaluation returns.
pub const FIGURES_MAX: usize = 100_000;
/// Most versions one comparison shows side by side.
pub const COMPARE_VERSIONS_MAX: usize = 8;

/// What to compute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// Start of the range (inclusive); default: the earliest kept event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    /// End of the range (exclusive); default: just after the latest kept event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
    #[serde(default)]
    pub period: Grain,
    /// Breakdown by these dimensions: a name the metric's `dims` declares, or any expression
    /// of the definition language (`attr.job`, `payload.channel`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by: Vec<String>,
    /// Only facts whose dimension has this value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub filter: BTreeMap<String, String>,
    /// Only facts for which every one of these expressions holds
    /// (`attr.origin == 'API'`; at most [`crate::adhoc::CONDITIONS_MAX`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<String>,
    /// Count facts that occurred by this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<DateTime<Utc>>,
    /// Count only what the log had recorded by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_at: Option<KnownAt>,
}

/// One `where` clause of a query: `DIM=VALUE` (a declared dimension has this value) or an
/// expression of the definition language that every counted fact must meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhereClause {
    /// `region=East`: the dimension's value, compared as text.
    Dimension(String, String),
    /// `attr.origin == 'API'`, `payload.amount.minor_units > 100000`.
    Condition(String),
}

impl WhereClause {
    /// Reads a clause: a lower_snake_case name, one `=` (not `==`) and a value is a
    /// dimension's value; anything else is an expression.
    #[must_use]
    pub fn parse(text: &str) -> WhereClause {
        if let Some((name, value)) = text.split_once('=') {
            let name = name.trim();
            if crate::adhoc::is_dimension_name(name) && !value.starts_with('=') {
                return WhereClause::Dimension(name.to_owned(), value.trim().to_owned());
            }
        }
        WhereClause::Condition(text.trim().to_owned())
    }
}

impl Query {
    /// Adds a `where` clause ([`WhereClause::parse`]).
    pub fn add_where(&mut self, text: &str) {
        match WhereClause::parse(text) {
            WhereClause::Dimension(d, v) => {
                self.filter.insert(d, v);
            }
            WhereClause::Condition(c) => self.conditions.push(c),
        }
    }
}

/// Which definition a figure was computed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct MetricRef {
    pub id: String,
    pub version: u32,
    pub name: String,
    pub unit: Unit,
    pub kind: Kind,
    pub measure: MeasureType,
    pub spec_hash: String,
}

impl MetricRef {
    pub(crate) fn of(m: &RegisteredMetric) -> MetricRef {
        MetricRef {
            id: m.definition.id.clone(),
            version: m.definition.version,
            name: m.definition.name.clone(),
            unit: m.definition.unit,
            kind: m.definition.kind,
            measure: m.definition.measure.kind,
            spec_hash: m.spec_hash.clone(),
        }
    }
}

/// Whether there was anything to compute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    Ok,
    /// None of the metric's fact events are in the (visible) log.
    NoData {
        needs: Vec<String>,
    },
    /// The definition names what the language cannot express yet.
    Unsupported {
        needs: String,
    },
}

/// One cell: a period and dimension values.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Figure {
    pub period: Period,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub dims: BTreeMap<String, String>,
    /// The figure (a share as a fraction, money in minor units, durations in seconds).
    pub value: Option<f64>,
    /// Human form: `63.15%`, `USD 10005534.00`, `51.78 d`, `no value`.
    pub display: String,
    pub numerator: Option<Num>,
    pub denominator: Option<Num>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Facts counted.
    pub included: u64,
    /// Facts considered and left out, by reason code.
    pub excluded: BTreeMap<String, u64>,
}

/// The answer to one query.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Evaluation {
    pub metric: MetricRef,
    pub query: Query,
    pub log: LogMark,
    #[serde(flatten)]
    pub status: Status,
    pub figures: Vec<Figure>,
}

/// Loads one view holding what all `metrics` (and their inputs) read, and what `query`'s
/// own expressions read, as of `query.as_of` / `query.known_at`.
///
/// # Errors
/// Unknown metric, a bad query expression, or a read error.
pub async fn load_view<S: EventStore>(
    store: &S,
    registry: &Registry,
    metrics: &[Arc<RegisteredMetric>],
    query: &Query,
) -> Result<LogView, MetricError> {
    let mut req = crate::compile::Requirements::default();
    for m in metrics {
        let r = registry.requirements(m)?;
        let adhoc = crate::adhoc::compile(query, &r.fact_types)?;
        req.merge(&r);
        req.merge(&adhoc.reads);
    }
    req.metrics.clear();
    LogView::load(store, &req, None, true, query.as_of, query.known_at).await
}

/// The view one question reads: as [`load_view`], but keeping only what `query` needs of
/// the definitions (their time, rules, facts and measures, and the dimensions `query`
/// breaks down or filters by), while the events the whole definitions read are counted as
/// kept and span the default range. The figures are those of [`load_view`]'s view; the
/// view answers only questions over the same dimensions, and keeps the events' ids only
/// with `ids` (an explanation lists them).
///
/// # Errors
/// As [`load_view`].
pub(crate) async fn load_view_for<S: EventStore>(
    store: &S,
    registry: &Registry,
    metrics: &[Arc<RegisteredMetric>],
    query: &Query,
    ids: bool,
) -> Result<LogView, MetricError> {
    let dims: BTreeSet<&str> = query
        .by
        .iter()
        .chain(query.filter.keys())
        .map(String::as_str)
        .collect();
    let mut full = crate::compile::Requirements::default();
    let mut narrow = crate::compile::Requirements::default();
    for m in metrics {
        let r = registry.requirements(m)?;
        let adhoc = crate::adhoc::compile(query, &r.fact_types)?;
        full.merge(&r);
        full.merge(&adhoc.reads);
        narrow.merge(&registry.requirements_for(m, &dims)?);
        narrow.merge(&adhoc.reads);
    }
    full.metrics.clear();
    narrow.metrics.clear();
    LogView::load(
        store,
        &narrow,
        Some(&full),
        ids,
        query.as_of,
        query.known_at,
    )
    .await
}

/// Evaluates `id` (default version unless `version`) over the log.
///
/// # Errors
/// Unknown metric, a bad query (unknown dimension, empty range), a limit, or a read error.
pub async fn evaluate<S: EventStore>(
    store: &S,
    registry: &Registry,
    id: &str,
    version: Option<u32>,
    query: &Query,
) -> Result<Evaluation, MetricError> {
    let m = registry.get(id, version)?;
    let view = load_view_for(store, registry, std::slice::from_ref(&m), query, false).await?;
    evaluate_in(&view, registry, &m, query)
}

/// Evaluates against a view loaded by [`load_view`] (several metrics can share one replay).
///
/// # Errors
/// As [`evaluate`].
pub fn evaluate_in(
    view: &LogView,
    registry: &Registry,
    m: &RegisteredMetric,
    query: &Query,
) -> Result<Evaluation, MetricError> {
    run_in(view, registry, m, query, false).map(|(e, _, _)| e)
}

/// [`evaluate_in`], also returning the periods and, when `rows`, the rows (for explain and
/// diff); without, each row is folded into its cell as it is made.
pub(crate) fn run_in(
    view: &LogView,
    registry: &Registry,
    m: &RegisteredMetric,
    query: &Query,
    rows: bool,
) -> Result<(Evaluation, Computed, Vec<Period>), MetricError> {
    let mut ev = Evaluation {
        metric: MetricRef::of(m),
        query: query.clone(),
        log: view.mark.clone(),
        status: Status::Ok,
        figures: Vec::new(),
    };
    if let CMeasure::Unsupported { needs } = &m.compiled.measure {
        ev.status = Status::Unsupported {
            needs: needs.clone(),
        };
        return Ok((ev, Computed::default(), Vec::new()));
    }
    let req = registry.requirements(m)?;
    if !req.fact_types.is_empty() && req.fact_types.iter().all(|t| view.count_of(t) == 0) {
        ev.status = Status::NoData {
            needs: req.fact_types.into_iter().collect(),
        };
        return Ok((ev, Computed::default(), Vec::new()));
    }
    let adhoc = crate::adhoc::compile(query, &req.fact_types)?;
    view.covers(&adhoc.reads)?;
    let periods = query_periods(view, query.period, query.from, query.to)?;
    let frame = Frame {
        periods: &periods,
        by: &query.by,
        filter: &query.filter,
        adhoc: &adhoc,
        rows,
    };
    let mut runner = Runner {
        view,
        registry,
        grain: query.period,
        stack: Vec::new(),
    };
    let computed = runner.run(m, &frame)?;
    if computed.cells.len() > FIGURES_MAX {
        return Err(MetricError::Limit {
            what: "the figures of one evaluation",
            limit: FIGURES_MAX,
            hint: "use a coarser period or fewer dimensions",
        });
    }
    for ((p, dims), cell) in &computed.cells {
        let Some(period) = periods.get(*p) else {
            continue;
        };
        ev.figures.push(figure(
            m.definition.unit,
            period.clone(),
            &query.by,
            dims,
            cell,
        ));
    }
    Ok((ev, computed, periods))
}

pub(crate) fn figure(
    unit: Unit,
    period: Period,
    by: &[String],
    dims: &[String],
    cell: &CellVal,
) -> Figure {
    Figure {
        period,
        dims: by.iter().cloned().zip(dims.iter().cloned()).collect(),
        value: cell.value,
        display: display(unit, cell.value, cell.currency.as_deref()),
        numerator: cell.num,
        denominator: cell.den,
        currency: cell.currency.clone(),
        included: cell.included,
        excluded: cell.excluded.clone(),
    }
}

/// Human form of a value in its unit.
pub fn display(unit: Unit, value: Option<f64>, currency: Option<&str>) -> String {
    let Some(v) = value else {
        return if currency == Some("MIXED") {
            "no value (mixed currencies)".into()
        } else {
            "no value".into()
        };
    };
    match unit {
        Unit::Count => {
            if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        }
        Unit::Percent => format!("{:.2}%", v * 100.0),
        Unit::Money => match currency.and_then(|c| Currency::new(c).ok()) {
            Some(c) if v.fract() == 0.0 && v.abs() < 9.0e15 => {
                // Whole minor units: exact through `Money`.
                format!("{:.0}", v)
                    .parse::<i64>()
                    .map_or_else(|_| format!("{v}"), |m| Money::new(m, c).to_string())
            }
            Some(c) => {
                let scale = 10f64.powi(i32::try_from(c.minor_unit_exponent()).unwrap_or(2));
                format!("{c} {:.2}", v / scale)
            }
            None => format!("{v:.2} (minor units)"),
        },
        Unit::Duration => {
            if v.abs() >= 86_400.0 {
                format!("{:.2} d", v / 86_400.0)
            } else {
                format!("{:.2} h", v / 3_600.0)
            }
        }
        Unit::Score => format!("{v:.2}"),
        Unit::Ratio => format!("{v:.2}×"),
    }
}

/// One row of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ComparisonRow {
    pub period: Period,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub dims: BTreeMap<String, String>,
    /// One figure per version, in the order asked (absent when that version has no cell).
    pub figures: Vec<Option<Figure>>,
    /// Last version's value minus the first's.
    pub difference: Option<f64>,
}

/// A cell of a comparison: period and dimension values.
type CellId = (Period, Vec<(String, String)>);

/// Versions side by side over the same periods and log position.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Comparison {
    pub metrics: Vec<MetricRef>,
    pub statuses: Vec<Status>,
    pub query: Query,
    pub log: LogMark,
    pub rows: Vec<ComparisonRow>,
}

/// Evaluates several versions of `id` on one view and lines the figures up.
///
/// # Errors
/// As [`evaluate`], or more than [`COMPARE_VERSIONS_MAX`] versions.
pub async fn compare<S: EventStore>(
    store: &S,
    registry: &Registry,
    id: &str,
    versions: &[u32],
    query: &Query,
) -> Result<Comparison, MetricError> {
    if versions.is_empty() || versions.len() > COMPARE_VERSIONS_MAX {
        return Err(MetricError::Query(format!(
            "compare takes 1..={COMPARE_VERSIONS_MAX} versions"
        )));
    }
    let metrics = versions
        .iter()
        .map(|v| registry.get(id, Some(*v)))
        .collect::<Result<Vec<_>, _>>()?;
    let view = load_view_for(store, registry, &metrics, query, false).await?;
    compare_in(&view, registry, &metrics, query)
}

/// [`compare`] against a view loaded by [`load_view`] for `metrics` (versions of one metric).
///
/// # Errors
/// As [`compare`].
pub fn compare_in(
    view: &LogView,
    registry: &Registry,
    metrics: &[Arc<RegisteredMetric>],
    query: &Query,
) -> Result<Comparison, MetricError> {
    if metrics.is_empty() || metrics.len() > COMPARE_VERSIONS_MAX {
        return Err(MetricError::Query(format!(
            "compare takes 1..={COMPARE_VERSIONS_MAX} versions"
        )));
    }
    let mut out = Comparison {
        metrics: Vec::new(),
        statuses: Vec::new(),
        query: query.clone(),
        log: view.mark.clone(),
        rows: Vec::new(),
    };
    let mut cells: BTreeMap<CellId, Vec<Option<Figure>>> = BTreeMap::new();
    let n = metrics.len();
    for (i, m) in metrics.iter().enumerate() {
        let ev = evaluate_in(view, registry, m, query)?;
        out.metrics.push(ev.metric);
        out.statuses.push(ev.status);
        for f in ev.figures {
            let key = (f.period.clone(), f.dims.clone().into_iter().collect());
            let slot = cells.entry(key).or_insert_with(|| vec![None; n]);
            if let Some(s) = slot.get_mut(i) {
                *s = Some(f);
            }
        }
    }
    for ((period, dims), figures) in cells {
        let first = figures
            .first()
            .and_then(|f| f.as_ref())
            .and_then(|f| f.value);
        let last = figures
            .last()
            .and_then(|f| f.as_ref())
            .and_then(|f| f.value);
        out.rows.push(ComparisonRow {
            period,
            dims: dims.into_iter().collect(),
            difference: first.zip(last).map(|(a, b)| b - a),
            figures,
        });
    }
    Ok(out)
}
