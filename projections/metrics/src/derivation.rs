//! The derivation record and how it becomes figures.
//!
//! Every measure produces [`Row`]s: one per fact considered for a cell (period × dimension
//! values), each included with its contribution to numerator and denominator (or its sample
//! value), or excluded with the reason code of the first rule that matched. A cell's figure
//! is a reduction of its rows, so "why is event X in or out" and "which events make up this
//! cell" are answered by the same rows that made the number.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::compile::{CAgg, CFacts, CRule, Compiled};
use crate::definition::{Agg, Pick};
use crate::error::MetricError;
use crate::expr::eval::{i_to_f, Env, Val};
use crate::expr::Expr;
use crate::period::{self, Period};
use crate::view::LogView;

/// Most rows (facts considered) one evaluation may produce.
pub const ROWS_MAX: usize = 20_000_000;

/// An exact or fractional quantity: counts and money stay integers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    pub(crate) fn add(self, other: Num) -> Result<Num, MetricError> {
        Ok(match (self, other) {
            (Num::Int(a), Num::Int(b)) => {
                Num::Int(a.checked_add(b).ok_or(MetricError::Overflow("a sum"))?)
            }
            (a, b) => Num::Float(a.to_f64() + b.to_f64()),
        })
    }

    /// The value as a float (exact up to 2^53).
    pub fn to_f64(self) -> f64 {
        match self {
            Num::Int(i) => i_to_f(i),
            Num::Float(f) => f,
        }
    }

    pub(crate) fn of(v: &Val<'_>) -> Option<Num> {
        match v {
            Val::Int(i) => Some(Num::Int(i128::from(*i))),
            Val::Float(f) if f.is_finite() => Some(Num::Float(*f)),
            Val::Bool(b) => Some(Num::Int(i128::from(*b))),
            _ => None,
        }
    }

    pub(crate) const ZERO: Num = Num::Int(0);
    pub(crate) const ONE: Num = Num::Int(1);
}

/// One fact considered for one cell.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub ev: u32,
    /// Input it belongs to (empty for a single-input measure).
    pub input: Arc<str>,
    pub period: usize,
    pub dims: Vec<String>,
    pub excluded: Option<String>,
    pub num: Option<Num>,
    pub den: Option<Num>,
    pub sample: Option<f64>,
    /// Distinct key (count_distinct, mean_per).
    pub key: Option<String>,
    pub currency: Option<String>,
}

/// How a cell's rows reduce to a figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Reducer {
    /// Σ num (value), with Σ den when `ratio` (value = num ÷ den; or num if `count_value`).
    Additive {
        ratio: bool,
        count_value: bool,
    },
    /// Distinct keys: the first row of a key contributes 1 (`distinct_den`: to the denominator).
    Distinct {
        distinct_den: bool,
    },
    Min,
    Max,
    /// Percentile by linear interpolation (median = 0.5).
    Quantile(f64),
}

impl Reducer {
    pub(crate) fn of(agg: &CAgg) -> Reducer {
        match agg.agg {
            Agg::Count | Agg::Sum => Reducer::Additive {
                ratio: false,
                count_value: false,
            },
            Agg::Avg | Agg::RatioOfSums => Reducer::Additive {
                ratio: true,
                count_value: false,
            },
            Agg::Share => Reducer::Additive {
                ratio: true,
                count_value: agg.value_is_count,
            },
            Agg::CountDistinct => Reducer::Distinct {
                distinct_den: false,
            },
            Agg::MeanPer => Reducer::Distinct { distinct_den: true },
            Agg::Min => Reducer::Min,
            Agg::Max => Reducer::Max,
            Agg::Median | Agg::Percentile => Reducer::Quantile(agg.p),
        }
    }
}

/// A reduced cell.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct CellVal {
    pub value: Option<f64>,
    pub num: Option<Num>,
    pub den: Option<Num>,
    pub currency: Option<String>,
    pub included: u64,
    pub excluded: BTreeMap<String, u64>,
}

pub(crate) type CellKey = (usize, Vec<String>);

/// Rows and their cells.
#[derive(Debug, Clone, Default)]
pub(crate) struct Computed {
    pub rows: Vec<Row>,
    pub cells: BTreeMap<CellKey, CellVal>,
}

/// The query side of a run: periods, breakdown and filter.
pub(crate) struct Frame<'a> {
    pub periods: &'a [Period],
    pub by: &'a [String],
    pub filter: &'a BTreeMap<String, String>,
    /// The query's own breakdown expressions and conditions.
    pub adhoc: &'a crate::adhoc::Adhoc,
    /// Whether the rows are kept (explain, diff) or only folded into their cells (figures).
    pub rows: bool,
}

/// A candidate fact after selection, pick and rules.
#[derive(Debug, Clone)]
pub(crate) struct Cand<'c> {
    pub ev: u32,
    pub time: Option<DateTime<Utc>>,
    /// The exclusion's code, borrowed from the definition (or a global code): 32 bytes a
    /// candidate, and no text of its own for each of a million excluded ones.
    pub excluded: Option<&'c str>,
}

pub(crate) fn env<'a>(view: &'a LogView, c: &'a Compiled) -> Env<'a> {
    Env::new(view, &c.params, &c.calendar, None)
}

/// Selects the candidate facts of `facts`: the events of its types that pass `where`,
/// timed by `time`, with global exclusions, `pick` and the rules applied in that order.
pub(crate) fn select<'c>(
    env: &Env<'_>,
    facts: &'c CFacts,
    time: Option<&Expr>,
    rules: &[&'c [CRule]],
) -> Vec<Cand<'c>> {
    let view = env.view;
    let mut idx: Vec<u32> =
        Vec::with_capacity(facts.events.iter().map(|t| view.of_type(t).len()).sum());
    for t in &facts.events {
        idx.extend_from_slice(view.of_type(t));
    }
    idx.sort_unstable();
    idx.dedup();
    // Filtered in place first, so that the candidates are made into a list of their exact
    // size: collected through a filter, the list grew by doubling (to 64 MiB for 1.2 M
    // candidates of 32 bytes over a 10 M-event log) and kept its slack until shrunk.
    if let Some(f) = facts.filter.as_ref() {
        idx.retain(|i| env.eval(Some(*i), f).truthy());
    }
    let mut out: Vec<Cand<'c>> = idx
        .into_iter()
        .map(|i| {
            let occurred = view.occurred_at_of(i);
            let t = match time {
                Some(t) => env.eval(Some(i), t).as_time(),
                None => occurred,
            };
            // Only an event marked globally excluded is read whole, for its code.
            let global = view.ty_and_global(i).is_some_and(|(_, g)| g);
            Cand {
                ev: i,
                time: t,
                excluded: if global {
                    view.ev(i).and_then(|e| e.global)
                } else {
                    None
                },
            }
        })
        .collect();
    out.shrink_to_fit();
    if facts.pick != Pick::All {
        // Per entity, the first or last fact by time (then log position).
        let mut order: Vec<usize> = (0..out.len()).collect();
        order.sort_by_key(|n| out.get(*n).map(|c| (c.time, c.ev)));
        let mut chosen: HashMap<String, usize> = HashMap::new();
        for n in order {
            let Some(c) = out.get(n) else { continue };
            if c.excluded.is_some() {
                continue;
            }
            let key = match &facts.entity {
                Some(e) => env.eval(Some(c.ev), e).key(),
                None => view
                    .ev(c.ev)
                    .and_then(|e| view.stream(e.stream))
                    .map_or_else(String::new, |s| s.name()),
            };
            match (facts.pick, chosen.get(&key)) {
                (Pick::First, Some(_)) => {}
                _ => {
                    chosen.insert(key, n);
                }
            }
        }
        let keep: BTreeSet<usize> = chosen.into_values().collect();
        for (n, c) in out.iter_mut().enumerate() {
            if c.excluded.is_none() && !keep.contains(&n) {
                c.excluded = Some(facts.pick_code.as_str());
            }
        }
    }
    for c in out.iter_mut().filter(|c| c.excluded.is_none()) {
        c.excluded = rules
            .iter()
            .flat_map(|r| r.iter())
            .find(|r| env.eval(Some(c.ev), &r.when).truthy())
            .map(|r| r.code.as_str());
    }
    out
}

/// Dimension values of a fact for the breakdown, or `None` when the filter rejects it.
pub(crate) fn dims_of(
    env: &Env<'_>,
    c: &Compiled,
    frame: &Frame<'_>,
    ev: u32,
) -> Result<Option<Vec<String>>, MetricError> {
    if frame.filter.is_empty() && frame.adhoc.conditions.is_empty() && frame.by.is_empty() {
        // No breakdown and nothing to filter on: every fact is in, with no dimensions.
        return Ok(Some(Vec::new()));
    }
    let dim = |d: &String| {
        c.dims
            .get(d)
            .or_else(|| frame.adhoc.by.get(d))
            .ok_or_else(|| unknown_dim(d, c))
    };
    for (d, want) in frame.filter {
        if measure_dim(c, d) {
            continue; // filled and filtered by the measure
        }
        if dim_text(&env.eval(Some(ev), dim(d)?)) != *want {
            return Ok(None);
        }
    }
    if !frame
        .adhoc
        .conditions
        .iter()
        .all(|e| env.eval(Some(ev), e).truthy())
    {
        return Ok(None);
    }
    frame
        .by
        .iter()
        .map(|d| Ok(dim_text(&env.eval(Some(ev), dim(d)?))))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Whether the measure fills dimension `d` itself (an `rfm` measure's scores).
pub(crate) fn measure_dim(c: &Compiled, d: &str) -> bool {
    matches!(c.measure, crate::compile::CMeasure::Rfm { .. })
        && crate::definition::RFM_DIMENSIONS
            .iter()
            .any(|(n, _)| *n == d)
}

fn dim_text(v: &Val<'_>) -> String {
    match v {
        Val::Null => "(none)".into(),
        Val::Str(s) if s.is_empty() => "(blank)".into(),
        other => other.key(),
    }
}

fn unknown_dim(dim: &str, c: &Compiled) -> MetricError {
    let known: Vec<&str> = c.dims.keys().map(String::as_str).collect();
    MetricError::Query(format!(
        "dimension `{dim}` is not declared by this metric (or give an expression such as `attr.{dim}`); it has: {}",
        if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        }
    ))
}

/// Row for a candidate with a value decided by the measure.
#[derive(Debug, Clone)]
pub(crate) struct Contribution {
    pub excluded: Option<String>,
    pub num: Option<Num>,
    pub den: Option<Num>,
    pub sample: Option<f64>,
    pub key: Option<String>,
    pub currency: Option<String>,
}

impl Row {
    /// The row of fact `ev` in period `period` and breakdown `dims`, with its contribution.
    pub(crate) fn new(
        ev: u32,
        input: &Arc<str>,
        period: usize,
        dims: Vec<String>,
        k: Contribution,
    ) -> Row {
        Row {
            ev,
            input: Arc::clone(input),
            period,
            dims,
            excluded: k.excluded,
            num: k.num,
            den: k.den,
            sample: k.sample,
            key: k.key,
            currency: k.currency,
        }
    }
}

impl Contribution {
    /// Nothing yet: the candidate's exclusion, if any, and no amounts.
    pub(crate) fn empty(cand: &Cand<'_>) -> Contribution {
        Contribution {
            excluded: cand.excluded.map(str::to_owned),
            num: None,
            den: None,
            sample: None,
            key: None,
            currency: None,
        }
    }
}

/// Candidates with a time, in time order (then log order).
pub(crate) fn timed(mut cands: Vec<Cand<'_>>) -> Vec<Cand<'_>> {
    cands.retain(|k| k.time.is_some());
    // No two candidates are of the same event, so no two keys are equal and an unstable
    // sort gives the one order there is.
    cands.sort_unstable_by_key(|k| (k.time, k.ev));
    cands
}

/// Places candidates in the periods by their time and computes their dimensions: rows.
pub(crate) fn place(
    env: &Env<'_>,
    c: &Compiled,
    frame: &Frame<'_>,
    input: &Arc<str>,
    cands: &[Cand<'_>],
    mut contribution: impl FnMut(&Cand<'_>) -> Contribution,
    out: &mut Out,
) -> Result<(), MetricError> {
    for cand in cands {
        let Some(t) = cand.time else { continue };
        let Some(p) = period::index_of(frame.periods, t) else {
            continue;
        };
        let Some(dims) = dims_of(env, c, frame, cand.ev)? else {
            continue;
        };
        out.push(Row::new(cand.ev, input, p, dims, contribution(cand)))?;
    }
    Ok(())
}

/// Where a measure's rows go: kept in order and reduced at the end (explain and diff read
/// them), or folded into their cells as they come, so a figure holds its cells, not one
/// row per fact. Both give the same cells: the fold sees the rows in the order the reduction
/// would.
pub(crate) struct Out {
    rows: Option<Vec<Row>>,
    fold: Fold,
}

impl Out {
    pub(crate) fn new(reducer: Reducer, frame: &Frame<'_>) -> Out {
        Out {
            rows: frame.rows.then(Vec::new),
            fold: Fold::new(reducer, frame),
        }
    }

    /// Adds a row: kept (at most [`ROWS_MAX`]), or folded into its cell.
    pub(crate) fn push(&mut self, mut row: Row) -> Result<(), MetricError> {
        match &mut self.rows {
            Some(rows) => {
                if rows.len() >= ROWS_MAX {
                    return Err(MetricError::Limit {
                        what: "the facts one evaluation considers",
                        limit: ROWS_MAX,
                        hint: "narrow the range or the metric",
                    });
                }
                rows.push(row);
                Ok(())
            }
            None => {
                let key = (row.period, std::mem::take(&mut row.dims));
                self.fold.add(key, &mut row)
            }
        }
    }

    /// The kept rows, for a measure that settles them after they are all known.
    pub(crate) fn rows_mut(&mut self) -> Option<&mut Vec<Row>> {
        self.rows.as_mut()
    }

    /// Adds `num` and `den` to a cell without a row (folding only): a measure's share of a
    /// cell settled after its rows (an entity's first fact).
    pub(crate) fn credit(&mut self, key: CellKey, num: Num, den: Num) -> Result<(), MetricError> {
        let cell = self.fold.cell(key);
        cell.num = Some(cell.num.unwrap_or(Num::ZERO).add(num)?);
        cell.den = Some(cell.den.unwrap_or(Num::ZERO).add(den)?);
        Ok(())
    }

    /// The rows (when kept) and cells.
    pub(crate) fn finish(self) -> Result<Computed, MetricError> {
        match self.rows {
            Some(mut rows) => {
                let mut fold = self.fold;
                for row in &mut rows {
                    fold.add((row.period, row.dims.clone()), row)?;
                }
                Ok(Computed {
                    rows,
                    cells: fold.finish(),
                })
            }
            None => Ok(Computed {
                rows: Vec::new(),
                cells: self.fold.finish(),
            }),
        }
    }
}

/// The standard contribution of an aggregation for one included fact.
pub(crate) fn agg_contribution(
    env: &Env<'_>,
    agg: &CAgg,
    cand: &Cand<'_>,
    value: Option<Val<'_>>,
) -> Contribution {
    let mut k = Contribution::empty(cand);
    if k.excluded.is_some() {
        return k;
    }
    let value = value.or_else(|| agg.of.as_ref().map(|e| env.eval(Some(cand.ev), e)));
    let needs_value = !matches!(agg.agg, Agg::Count | Agg::Share);
    let num_value = value.as_ref().and_then(Num::of);
    if needs_value && agg.agg != Agg::CountDistinct && num_value.is_none() {
        k.excluded = Some(agg.missing_code.clone());
        return k;
    }
    k.currency = agg
        .currency
        .as_ref()
        .map(|e| env.eval(Some(cand.ev), e).key());
    match agg.agg {
        Agg::Count => k.num = Some(Num::ONE),
        Agg::Share => {
            let hit = agg
                .when
                .as_ref()
                .is_some_and(|w| env.eval(Some(cand.ev), w).truthy());
            k.num = Some(if hit { Num::ONE } else { Num::ZERO });
            k.den = Some(Num::ONE);
        }
        Agg::CountDistinct => {
            k.key = value.map(|v| v.key());
            k.num = Some(Num::ONE);
        }
        Agg::Sum => k.num = num_value,
        Agg::Avg => {
            k.num = num_value;
            k.den = Some(Num::ONE);
        }
        Agg::RatioOfSums => {
            k.num = num_value;
            k.den = agg
                .per
                .as_ref()
                .and_then(|e| Num::of(&env.eval(Some(cand.ev), e)));
            if k.den.is_none() {
                k.excluded = Some(agg.missing_code.clone());
                k.num = None;
            }
        }
        Agg::MeanPer => {
            k.num = num_value;
            k.key = agg.per.as_ref().map(|e| env.eval(Some(cand.ev), e).key());
        }
        Agg::Min | Agg::Max | Agg::Median | Agg::Percentile => {
            k.sample = num_value.map(Num::to_f64)
        }
    }
    k
}

fn quantile(sorted: &[f64], p: f64) -> Option<f64> {
    let n = sorted.len();
    let last = n.checked_sub(1)?;
    let pos = p * i_to_f(i128::try_from(last).unwrap_or(0));
    let lo_f = pos.floor();
    let lo = (0..=last)
        .find(|i| i_to_f(i128::try_from(*i).unwrap_or(0)) >= lo_f)
        .unwrap_or(last);
    let hi = (lo + 1).min(last);
    let (a, b) = (sorted.get(lo)?, sorted.get(hi)?);
    Some(a + (b - a) * (pos - lo_f))
}

/// Reduces rows into cells, fixing distinct contributions on the way. Every period gets a
/// cell when there is no breakdown, so an empty period shows 0 (or no value for a ratio).
pub(crate) fn reduce(
    rows: &mut [Row],
    reducer: Reducer,
    frame: &Frame<'_>,
) -> Result<BTreeMap<CellKey, CellVal>, MetricError> {
    let mut fold = Fold::new(reducer, frame);
    for row in rows.iter_mut() {
        fold.add((row.period, row.dims.clone()), row)?;
    }
    Ok(fold.finish())
}

/// Cells being reduced, one row at a time.
struct Fold {
    reducer: Reducer,
    /// Without a breakdown, the cell of each period (key `(p, [])`), by period: most folds
    /// are of this kind, and a row finds its cell without a search. Moved into `cells` at
    /// the end.
    plain: Vec<CellVal>,
    /// The other cells.
    cells: BTreeMap<CellKey, CellVal>,
    samples: BTreeMap<CellKey, Vec<f64>>,
    seen: BTreeSet<(CellKey, String)>,
}

impl Fold {
    fn new(reducer: Reducer, frame: &Frame<'_>) -> Fold {
        let plain = if frame.by.is_empty() {
            vec![CellVal::default(); frame.periods.len()]
        } else {
            Vec::new()
        };
        Fold {
            reducer,
            plain,
            cells: BTreeMap::new(),
            samples: BTreeMap::new(),
            seen: BTreeSet::new(),
        }
    }

    /// The cell of `key`, made empty when new.
    fn cell(&mut self, key: CellKey) -> &mut CellVal {
        if key.1.is_empty() {
            if let Some(cell) = self.plain.get_mut(key.0) {
                return cell;
            }
        }
        self.cells.entry(key).or_default()
    }

    /// Adds the row of cell `key`; a distinct key's first row gets its 1 here.
    fn add(&mut self, key: CellKey, row: &mut Row) -> Result<(), MetricError> {
        let reducer = self.reducer;
        if let Reducer::Distinct { distinct_den } = reducer {
            if row.excluded.is_none() {
                let first = row
                    .key
                    .as_ref()
                    .is_some_and(|k| self.seen.insert((key.clone(), k.clone())));
                let unit = if first { Num::ONE } else { Num::ZERO };
                if distinct_den {
                    row.den = Some(unit);
                } else {
                    row.num = Some(unit);
                }
            }
        }
        let sample = row.sample.filter(|_| row.excluded.is_none());
        if let Some(s) = sample {
            self.samples.entry(key.clone()).or_default().push(s);
        }
        let cell = self.cell(key);
        if let Some(code) = &row.excluded {
            match cell.excluded.get_mut(code) {
                Some(n) => *n += 1,
                None => {
                    cell.excluded.insert(code.clone(), 1);
                }
            }
            return Ok(());
        }
        cell.included += 1;
        if let Some(cur) = &row.currency {
            match &cell.currency {
                None => cell.currency = Some(cur.clone()),
                Some(c) if c != cur => cell.currency = Some("MIXED".into()),
                Some(_) => {}
            }
        }
        if let Some(n) = row.num {
            cell.num = Some(cell.num.unwrap_or(Num::ZERO).add(n)?);
        }
        if let Some(d) = row.den {
            cell.den = Some(cell.den.unwrap_or(Num::ZERO).add(d)?);
        }
        Ok(())
    }

    fn finish(mut self) -> BTreeMap<CellKey, CellVal> {
        let reducer = self.reducer;
        for (p, cell) in std::mem::take(&mut self.plain).into_iter().enumerate() {
            self.cells.insert((p, Vec::new()), cell);
        }
        for (key, cell) in self.cells.iter_mut() {
            let ratio_like = matches!(
                reducer,
                Reducer::Additive { ratio: true, .. } | Reducer::Distinct { distinct_den: true }
            );
            match reducer {
                Reducer::Additive {
                    count_value: true, ..
                } => {
                    cell.num.get_or_insert(Num::ZERO);
                    cell.den.get_or_insert(Num::ZERO);
                    cell.value = cell.num.map(Num::to_f64);
                }
                _ if ratio_like => {
                    cell.value = match (cell.num, cell.den) {
                        (Some(n), Some(d)) if d.to_f64() != 0.0 => Some(n.to_f64() / d.to_f64()),
                        _ => None,
                    };
                }
                Reducer::Additive { .. } | Reducer::Distinct { .. } => {
                    let n = *cell.num.get_or_insert(Num::ZERO);
                    cell.value = Some(n.to_f64());
                }
                Reducer::Min | Reducer::Max | Reducer::Quantile(_) => {
                    let mut s = self.samples.remove(key).unwrap_or_default();
                    s.sort_by(f64::total_cmp);
                    cell.value = match reducer {
                        Reducer::Min => s.first().copied(),
                        Reducer::Max => s.last().copied(),
                        Reducer::Quantile(p) => quantile(&s, p),
                        _ => None,
                    };
                }
            }
            if cell.currency.as_deref() == Some("MIXED") {
                cell.value = None;
            }
        }
        self.cells
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    /// A candidate fact stays within 32 bytes: a question over a long log selects millions.
    #[test]
    fn a_candidate_takes_thirty_two_bytes() {
        assert!(
            std::mem::size_of::<Cand<'_>>() <= 32,
            "{}",
            std::mem::size_of::<Cand<'_>>()
        );
    }

    fn row(period: usize, excluded: Option<&str>) -> Row {
        Row {
            ev: 0,
            input: Arc::from(""),
            period,
            dims: Vec::new(),
            excluded: excluded.map(str::to_owned),
            num: Some(Num::ONE),
            den: None,
            sample: None,
            key: None,
            currency: None,
        }
    }

    /// Without a breakdown every period has its cell, rows land in their period's, and a
    /// period past the frame's still gets a cell of its own, in key order.
    #[test]
    fn fold_without_breakdown_keeps_every_period_and_strays() {
        let at = |m| Utc.with_ymd_and_hms(2024, m, 1, 0, 0, 0).unwrap();
        let periods: Vec<Period> = (1..=3)
            .map(|m| Period {
                start: at(m),
                end: at(m + 1),
                label: format!("2024-0{m}"),
            })
            .collect();
        let adhoc = crate::adhoc::Adhoc::default();
        let filter = BTreeMap::new();
        let frame = Frame {
            periods: &periods,
            by: &[],
            filter: &filter,
            adhoc: &adhoc,
            rows: false,
        };
        let reducer = Reducer::Additive {
            ratio: false,
            count_value: false,
        };
        let mut fold = Fold::new(reducer, &frame);
        for (p, excluded) in [(0, None), (2, None), (0, Some("X")), (0, None), (7, None)] {
            let mut r = row(p, excluded);
            fold.add((p, Vec::new()), &mut r).unwrap();
        }
        let cells = fold.finish();
        let keys: Vec<usize> = cells.keys().map(|(p, _)| *p).collect();
        assert_eq!(keys, vec![0, 1, 2, 7]);
        let cell = |p: usize| cells.get(&(p, Vec::new())).unwrap();
        assert_eq!(cell(0).included, 2);
        assert_eq!(cell(0).value, Some(2.0));
        assert_eq!(cell(0).excluded.get("X"), Some(&1));
        assert_eq!(cell(1).included, 0);
        assert_eq!(cell(1).value, Some(0.0));
        assert_eq!(cell(2).value, Some(1.0));
        assert_eq!(cell(7).value, Some(1.0));
    }
}
