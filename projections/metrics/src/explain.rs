//! Explain and diff: the auditor's questions (which facts made this figure, and why did it
//! move between two report dates).
//!
//! [`explain`] lists the facts behind figures (position, stream, type, `occurred_at`,
//! decision, rule, contribution), paginated, with totals that add up: included + excluded by
//! reason = considered, and the included contributions sum to the numerator (and
//! denominator) of the figure. [`to_csv`] exports a page. [`diff`] explains why a figure
//! moved between two report dates (`known_at` T1 and T2): which facts changed and which
//! events recorded in between account for it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use crm_eventstore::EventStore;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::derivation::{Num, Row};
use crate::error::MetricError;
use crate::period::Period;
use crate::query::{display, load_view, load_view_for, run_in, Evaluation, MetricRef, Query};
use crate::registry::{RegisteredMetric, Registry};
use crate::view::{KnownAt, LogMark, LogView};

/// Most rows one explain page returns.
pub const EXPLAIN_PAGE_MAX: usize = 10_000;
/// Most changed facts one diff lists.
pub const DIFF_FACTS_MAX: usize = 10_000;

/// Which cell(s) and which page.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainSelect {
    /// Label of one period (`2017-Q2`); all periods when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// Values of the query's `by` dimensions: only that cell.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dims: BTreeMap<String, String>,
    /// Only `included` or `excluded` rows (totals still cover both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    #[serde(default)]
    pub offset: usize,
    /// Page size, at most [`EXPLAIN_PAGE_MAX`] (0 = the maximum).
    #[serde(default)]
    pub limit: usize,
}

/// One fact's part in a figure.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ExplainRow {
    pub position: u64,
    pub event_id: Uuid,
    pub stream: String,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub period: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub dims: BTreeMap<String, String>,
    /// Input of a ratio or derived metric (`numerator`, `denominator`, or the input's name).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub input: String,
    /// `included` or `excluded`.
    pub decision: &'static str,
    /// Reason code of the rule that excluded the fact.
    pub rule: Option<String>,
    /// Contribution to the numerator (or the value, for counts and sums).
    pub numerator: Option<Num>,
    pub denominator: Option<Num>,
    /// Sample value (min, max, median, percentile, durations).
    pub value: Option<f64>,
}

/// Totals of one input over the selected cells.
#[derive(Debug, Clone, PartialEq, Default, Serialize, schemars::JsonSchema)]
pub struct ExplainTotals {
    pub considered: u64,
    pub included: u64,
    pub excluded: BTreeMap<String, u64>,
    pub numerator: Option<Num>,
    pub denominator: Option<Num>,
}

/// A page of the derivation record.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Explanation {
    pub metric: MetricRef,
    pub query: Query,
    pub select: ExplainSelect,
    pub log: LogMark,
    /// The figures of the selected cells.
    pub figures: Vec<crate::query::Figure>,
    /// Per input (`""` for a single-input measure).
    pub totals: BTreeMap<String, ExplainTotals>,
    pub total_rows: usize,
    pub rows: Vec<ExplainRow>,
    pub next_offset: Option<usize>,
}

fn add(a: Option<Num>, b: Option<Num>) -> Result<Option<Num>, MetricError> {
    Ok(match (a, b) {
        (Some(x), Some(y)) => Some(x.add(y)?),
        (x, None) => x,
        (None, y) => y,
    })
}

fn explain_row(view: &LogView, periods: &[Period], by: &[String], r: &Row) -> Option<ExplainRow> {
    let e = view.ev(r.ev)?;
    Some(ExplainRow {
        position: e.position,
        event_id: e.event_id,
        stream: view.stream(e.stream).map(|s| s.name()).unwrap_or_default(),
        event_type: view.type_name(e.ty).to_owned(),
        occurred_at: e.occurred_at,
        recorded_at: e.recorded_at,
        period: periods
            .get(r.period)
            .map(|p| p.label.clone())
            .unwrap_or_default(),
        dims: by.iter().cloned().zip(r.dims.iter().cloned()).collect(),
        input: r.input.to_string(),
        decision: if r.excluded.is_some() {
            "excluded"
        } else {
            "included"
        },
        rule: r.excluded.clone(),
        numerator: r.num,
        denominator: r.den,
        value: r.sample,
    })
}

fn selected(ev: &Evaluation, periods: &[Period], sel: &ExplainSelect, r: &Row) -> bool {
    let period_ok = sel
        .period
        .as_ref()
        .is_none_or(|l| periods.get(r.period).is_some_and(|p| &p.label == l));
    let dims_ok = sel.dims.iter().all(|(k, v)| {
        ev.query
            .by
            .iter()
            .position(|b| b == k)
            .and_then(|i| r.dims.get(i))
            .is_some_and(|x| x == v)
    });
    period_ok && dims_ok
}

/// A selection may only name dimensions the query groups by.
fn check_select(query: &Query, sel: &ExplainSelect) -> Result<(), MetricError> {
    match sel.dims.keys().find(|d| !query.by.contains(d)) {
        Some(d) => Err(MetricError::Query(format!(
            "select dimension `{d}` is not in the query's `by`"
        ))),
        None => Ok(()),
    }
}

/// The facts behind the figures of `id` for `query`, one page.
///
/// # Errors
/// As [`crate::query::evaluate`], or a selection naming a dimension not in `query.by`.
pub async fn explain<S: EventStore>(
    store: &S,
    registry: &Registry,
    id: &str,
    version: Option<u32>,
    query: &Query,
    sel: &ExplainSelect,
) -> Result<Explanation, MetricError> {
    check_select(query, sel)?;
    let m = registry.get(id, version)?;
    let view = load_view_for(store, registry, std::slice::from_ref(&m), query, true).await?;
    explain_in(&view, registry, &m, query, sel)
}

/// [`explain`] against a view loaded by [`load_view`] for `m` (a view can be shared by
/// several questions at one log position).
///
/// # Errors
/// As [`explain`].
pub fn explain_in(
    view: &LogView,
    registry: &Registry,
    m: &RegisteredMetric,
    query: &Query,
    sel: &ExplainSelect,
) -> Result<Explanation, MetricError> {
    check_select(query, sel)?;
    let (ev, mut computed, periods) = run_in(view, registry, m, query, true)?;
    computed
        .rows
        .sort_by(|a, b| (a.period, &a.input, a.ev).cmp(&(b.period, &b.input, b.ev)));
    let mut totals: BTreeMap<String, ExplainTotals> = BTreeMap::new();
    let mut rows = Vec::new();
    for r in computed
        .rows
        .iter()
        .filter(|r| selected(&ev, &periods, sel, r))
    {
        let t = totals.entry(r.input.to_string()).or_default();
        t.considered += 1;
        match &r.excluded {
            Some(code) => *t.excluded.entry(code.clone()).or_default() += 1,
            None => {
                t.included += 1;
                t.numerator = add(t.numerator, r.num)?;
                t.denominator = add(t.denominator, r.den)?;
            }
        }
        let decision_ok = sel
            .decision
            .as_deref()
            .is_none_or(|d| (d == "excluded") == r.excluded.is_some());
        if decision_ok {
            rows.push(r);
        }
    }
    let limit = if sel.limit == 0 {
        EXPLAIN_PAGE_MAX
    } else {
        sel.limit.min(EXPLAIN_PAGE_MAX)
    };
    let total_rows = rows.len();
    let page: Vec<ExplainRow> = rows
        .iter()
        .skip(sel.offset)
        .take(limit)
        .filter_map(|r| explain_row(view, &periods, &query.by, r))
        .collect();
    let next = sel.offset.saturating_add(limit);
    let figures = ev
        .figures
        .iter()
        .filter(|f| {
            sel.period.as_ref().is_none_or(|l| &f.period.label == l)
                && sel.dims.iter().all(|(k, v)| f.dims.get(k) == Some(v))
        })
        .cloned()
        .collect();
    Ok(Explanation {
        metric: ev.metric,
        query: query.clone(),
        select: sel.clone(),
        log: ev.log,
        figures,
        totals,
        total_rows,
        rows: page,
        next_offset: (next < total_rows).then_some(next),
    })
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn num_text(n: Option<Num>) -> String {
    match n {
        Some(Num::Int(i)) => i.to_string(),
        Some(Num::Float(f)) => serde_json::to_string(&f).unwrap_or_default(),
        None => String::new(),
    }
}

/// The rows of a page as CSV (RFC 4180, `\n` line ends), header first. Deterministic.
pub fn to_csv(x: &Explanation) -> String {
    let dims: Vec<&String> = x.query.by.iter().collect();
    let mut out =
        String::from("position,event_id,stream,event_type,occurred_at,recorded_at,period,");
    for d in &dims {
        out.push_str(&csv_field(&format!("dim:{d}")));
        out.push(',');
    }
    out.push_str("input,decision,rule,numerator,denominator,value\n");
    for r in &x.rows {
        let mut fields = vec![
            r.position.to_string(),
            r.event_id.to_string(),
            csv_field(&r.stream),
            csv_field(&r.event_type),
            r.occurred_at.to_rfc3339(),
            r.recorded_at.to_rfc3339(),
            csv_field(&r.period),
        ];
        fields.extend(
            dims.iter()
                .map(|d| csv_field(r.dims.get(*d).map_or("", String::as_str))),
        );
        fields.push(csv_field(&r.input));
        fields.push(r.decision.to_owned());
        fields.push(csv_field(r.rule.as_deref().unwrap_or("")));
        fields.push(num_text(r.numerator));
        fields.push(num_text(r.denominator));
        fields.push(
            r.value
                .map(|v| serde_json::to_string(&v).unwrap_or_default())
                .unwrap_or_default(),
        );
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

/// A cell before and after.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct DiffCell {
    pub period: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub dims: BTreeMap<String, String>,
    pub before: Option<f64>,
    pub after: Option<f64>,
    pub before_display: String,
    pub after_display: String,
    pub delta: Option<f64>,
}

/// A fact whose part in a figure changed.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct FactChange {
    pub position: u64,
    pub stream: String,
    pub event_type: String,
    pub period: String,
    pub input: String,
    /// `included`, `excluded:<CODE>` or `absent`.
    pub before: String,
    pub after: String,
    pub numerator_before: Option<Num>,
    pub numerator_after: Option<Num>,
}

/// An event recorded between the two dates that accounts for a change.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct DiffEvent {
    pub position: u64,
    pub stream: String,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
}

/// Why a figure moved between two report dates.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Diff {
    pub metric: MetricRef,
    pub before: LogMark,
    pub after: LogMark,
    pub cells: Vec<DiffCell>,
    pub changed_facts: Vec<FactChange>,
    /// The events recorded in (T1, T2] behind the changed facts, by position.
    pub accounted_by: Vec<DiffEvent>,
}

type RowKey = (usize, Vec<String>, String, Uuid);

fn state(r: Option<&Row>) -> String {
    match r {
        None => "absent".into(),
        Some(r) => r
            .excluded
            .as_ref()
            .map_or_else(|| "included".into(), |c| format!("excluded:{c}")),
    }
}

/// Compares the figures of `id` as known at `t1` and at `t2` (`query.known_at` is ignored).
///
/// # Errors
/// As [`crate::query::evaluate`], or `t2` before `t1`.
pub async fn diff<S: EventStore>(
    store: &S,
    registry: &Registry,
    id: &str,
    version: Option<u32>,
    query: &Query,
    t1: KnownAt,
    t2: KnownAt,
) -> Result<Diff, MetricError> {
    let m = registry.get(id, version)?;
    let one = std::slice::from_ref(&m);
    let at = |t: KnownAt| Query {
        known_at: Some(t),
        ..query.clone()
    };
    // Whole views: the events that account for a change are any the definition reads.
    let v1 = load_view(store, registry, one, &at(t1)).await?;
    let v2 = load_view(store, registry, one, &at(t2)).await?;
    if v2.mark.position < v1.mark.position {
        return Err(MetricError::Query(
            "the second `known_at` must not be before the first".into(),
        ));
    }
    // Both sides over the same periods: those of the later view unless the query fixes them.
    let mut q = query.clone();
    q.known_at = None;
    let periods = crate::measures::query_periods(&v2, q.period, q.from, q.to)?;
    if let (Some(first), Some(last)) = (periods.first(), periods.last()) {
        q.from = Some(first.start);
        q.to = Some(last.end);
    }
    let (e1, c1, _) = run_in(&v1, registry, &m, &q, true)?;
    let (e2, c2, periods) = run_in(&v2, registry, &m, &q, true)?;
    let key = |v: &LogView, r: &Row| -> Option<RowKey> {
        Some((
            r.period,
            r.dims.clone(),
            r.input.to_string(),
            v.ev(r.ev)?.event_id,
        ))
    };
    let before: BTreeMap<RowKey, &Row> = c1
        .rows
        .iter()
        .filter_map(|r| Some((key(&v1, r)?, r)))
        .collect();
    let after: BTreeMap<RowKey, &Row> = c2
        .rows
        .iter()
        .filter_map(|r| Some((key(&v2, r)?, r)))
        .collect();
    let keys: BTreeSet<&RowKey> = before.keys().chain(after.keys()).collect();
    let mut changed = Vec::new();
    let mut streams: BTreeSet<String> = BTreeSet::new();
    let mut targets: BTreeSet<Uuid> = BTreeSet::new();
    for k in keys {
        let (b, a) = (before.get(k).copied(), after.get(k).copied());
        let same = match (b, a) {
            (Some(x), Some(y)) => {
                x.excluded == y.excluded && x.num == y.num && x.den == y.den && x.sample == y.sample
            }
            _ => false,
        };
        if same {
            continue;
        }
        let (view, row) = match (a, b) {
            (Some(r), _) => (&v2, r),
            (None, Some(r)) => (&v1, r),
            (None, None) => continue,
        };
        let Some(e) = view.ev(row.ev) else { continue };
        let stream = view.stream(e.stream).map(|s| s.name()).unwrap_or_default();
        streams.insert(stream.clone());
        targets.insert(e.event_id);
        if changed.len() < DIFF_FACTS_MAX {
            changed.push(FactChange {
                position: e.position,
                stream,
                event_type: view.type_name(e.ty).to_owned(),
                period: periods
                    .get(k.0)
                    .map(|p| p.label.clone())
                    .unwrap_or_default(),
                input: k.2.clone(),
                before: state(b),
                after: state(a),
                numerator_before: b.and_then(|r| r.num),
                numerator_after: a.and_then(|r| r.num),
            });
        }
    }
    let mut accounted = Vec::new();
    for (i, e) in v2.events().filter(|(_, e)| e.position > v1.mark.position) {
        let stream = v2.stream(e.stream).map(|s| s.name()).unwrap_or_default();
        let retracts = v2
            .payload(i)
            .get("event_id")
            .and_then(|x| x.as_str())
            .and_then(|s| s.parse::<Uuid>().ok())
            .is_some_and(|t| targets.contains(&t));
        if streams.contains(&stream) || retracts {
            accounted.push(DiffEvent {
                position: e.position,
                stream,
                event_type: v2.type_name(e.ty).to_owned(),
                occurred_at: e.occurred_at,
                recorded_at: e.recorded_at,
            });
        }
    }
    let unit = m.definition.unit;
    let mut cells = Vec::new();
    let f1: BTreeMap<(String, BTreeMap<String, String>), _> = e1
        .figures
        .iter()
        .map(|f| ((f.period.label.clone(), f.dims.clone()), f))
        .collect();
    let f2: BTreeMap<(String, BTreeMap<String, String>), _> = e2
        .figures
        .iter()
        .map(|f| ((f.period.label.clone(), f.dims.clone()), f))
        .collect();
    let cell_keys: BTreeSet<_> = f1.keys().chain(f2.keys()).cloned().collect();
    for k in cell_keys {
        let (b, a) = (
            f1.get(&k).and_then(|f| f.value),
            f2.get(&k).and_then(|f| f.value),
        );
        if b == a {
            continue;
        }
        cells.push(DiffCell {
            period: k.0.clone(),
            dims: k.1.clone(),
            before: b,
            after: a,
            before_display: display(unit, b, f1.get(&k).and_then(|f| f.currency.as_deref())),
            after_display: display(unit, a, f2.get(&k).and_then(|f| f.currency.as_deref())),
            delta: b.zip(a).map(|(x, y)| y - x),
        });
    }
    Ok(Diff {
        metric: e2.metric,
        before: v1.mark,
        after: v2.mark,
        cells,
        changed_facts: changed,
        accounted_by: accounted,
    })
}
