//! The measure types: each turns the view into rows and cells (stocks are in [`stock`]).

pub(crate) mod stock;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::compile::{CAgg, CFacts, CInput, CMeasure, CRule, Compiled};
use crate::definition::InputRef;
use crate::derivation::{
    self, agg_contribution, env, place, reduce, select, Cand, CellKey, CellVal, Computed,
    Contribution, Frame, Num, Out, Reducer, Row,
};
use crate::error::MetricError;
use crate::expr::eval::{i_to_f, Env, Val};
use crate::expr::{BinOp, Expr};
use crate::period::{self, Grain, Period};
use crate::registry::{RegisteredMetric, Registry};
use crate::view::LogView;

/// Deepest chain of metrics built from metrics.
const NESTING_MAX: usize = 8;

/// Runs measures against one view.
pub(crate) struct Runner<'a> {
    pub view: &'a LogView,
    pub registry: &'a Registry,
    pub grain: Grain,
    pub stack: Vec<String>,
}

fn single() -> Arc<str> {
    Arc::from("")
}

impl Runner<'_> {
    /// Computes the rows and cells of `m` for the frame.
    pub(crate) fn run(
        &mut self,
        m: &RegisteredMetric,
        frame: &Frame<'_>,
    ) -> Result<Computed, MetricError> {
        let key = m.definition.key();
        if self.stack.contains(&key) || self.stack.len() >= NESTING_MAX {
            return Err(MetricError::Cycle {
                id: m.definition.id.clone(),
                path: format!("{} -> {key}", self.stack.join(" -> ")),
            });
        }
        self.stack.push(key);
        let out = self.run_inner(m, frame);
        self.stack.pop();
        out
    }

    fn run_inner(
        &mut self,
        m: &RegisteredMetric,
        frame: &Frame<'_>,
    ) -> Result<Computed, MetricError> {
        let c = &m.compiled;
        let env = env(self.view, c);
        match &c.measure {
            CMeasure::Simple { facts, agg } => simple(
                &env,
                c,
                frame,
                facts,
                agg,
                c.time.as_ref(),
                &[&c.rules],
                &single(),
            ),
            CMeasure::Cumulative {
                facts,
                agg,
                window_s,
                to_date,
            } => cumulative(&env, c, frame, facts, agg, *window_s, *to_date),
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
                    conv_filter: conv_filter.as_ref(),
                    conv_entity: conv_entity.as_ref(),
                    window_s: *window_s,
                    count: *count,
                };
                conversion_measure(&env, c, frame, facts, &spec)
            }
            CMeasure::Duration { facts, agg, .. } => duration(&env, c, frame, facts, agg),
            CMeasure::Stock { .. } => stock::run(&env, c, frame),
            CMeasure::Ratio { num, den } => {
                let n = self.input(c, frame, num, "numerator")?;
                let d = self.input(c, frame, den, "denominator")?;
                Ok(combine(
                    frame,
                    vec![("numerator".into(), n), ("denominator".into(), d)],
                    |_, vals| {
                        // An input without a cell had no facts there: zero.
                        let part = |name: &str| {
                            vals.get(name).map(|x| {
                                x.as_ref()
                                    .map_or((Some(0.0), Some(Num::ZERO)), |c| (c.value, c.num))
                            })
                        };
                        let (n, d) = (part("numerator"), part("denominator"));
                        let (nv, dv) = (n.and_then(|x| x.0), d.and_then(|x| x.0));
                        let value = match (nv, dv) {
                            (Some(a), Some(b)) if b != 0.0 => Some(a / b),
                            _ => None,
                        };
                        (value, exact(n), exact(d))
                    },
                ))
            }
            CMeasure::Derived { expr, inputs } => self.derived(c, frame, expr, inputs),
            CMeasure::Entities { facts, min_facts } => entities(&env, c, frame, facts, *min_facts),
            CMeasure::Rfm {
                facts,
                of,
                window_s,
            } => rfm(&env, c, frame, facts, of, *window_s),
            CMeasure::Unsupported { .. } => Ok(Computed::default()),
        }
    }

    fn input(
        &mut self,
        c: &Compiled,
        frame: &Frame<'_>,
        input: &CInput,
        name: &str,
    ) -> Result<Computed, MetricError> {
        match input {
            CInput::Inline(i) => {
                let env = env(self.view, c);
                let time = i.time.as_ref().or(c.time.as_ref());
                let rules: [&[CRule]; 2] = [&c.rules, &i.rules];
                simple(
                    &env,
                    c,
                    frame,
                    &i.facts,
                    &i.agg,
                    time,
                    &rules,
                    &Arc::from(name),
                )
            }
            CInput::Metric { id, version } => {
                let m = self.registry.get(id, *version)?;
                let mut out = self.run(&m, frame)?;
                let tag: Arc<str> = Arc::from(name);
                out.rows.iter_mut().for_each(|r| r.input = Arc::clone(&tag));
                Ok(out)
            }
        }
    }

    fn derived(
        &mut self,
        c: &Compiled,
        frame: &Frame<'_>,
        expr: &Expr,
        inputs: &BTreeMap<String, InputRef>,
    ) -> Result<Computed, MetricError> {
        let mut parts = Vec::new();
        for (name, input) in inputs {
            let m = self.registry.get(&input.metric, input.version)?;
            let shifted = if input.offset == 0 {
                frame.periods.to_vec()
            } else {
                period::shift(self.grain, frame.periods, input.offset)?
            };
            let sub = Frame {
                periods: &shifted,
                by: frame.by,
                filter: frame.filter,
                adhoc: frame.adhoc,
                rows: frame.rows,
            };
            let mut out = self.run(&m, &sub)?;
            let tag: Arc<str> = Arc::from(name.as_str());
            out.rows.iter_mut().for_each(|r| r.input = Arc::clone(&tag));
            parts.push((name.clone(), out));
        }
        let view = self.view;
        Ok(combine(frame, parts, |key, vals| {
            let mut vars: BTreeMap<String, Option<f64>> = vals
                .iter()
                .map(|(k, v)| (k.clone(), v.as_ref().and_then(|c| c.value)))
                .collect();
            if let Some(p) = frame.periods.get(key.0) {
                let secs = i128::from((p.end - p.start).num_seconds());
                vars.insert("period_days".into(), Some(i_to_f(secs) / 86_400.0));
                vars.insert(
                    "business_days".into(),
                    Some(i_to_f(i128::from(c.calendar.working_days(p.start, p.end)))),
                );
            }
            let env = Env::new(view, &c.params, &c.calendar, Some(&vars));
            let value = env.eval(None, expr).as_f64();
            let (num, den) = match expr {
                Expr::Bin(BinOp::Div, a, b) => (
                    env.eval(None, a).as_f64().map(Num::Float),
                    env.eval(None, b).as_f64().map(Num::Float),
                ),
                _ => (None, None),
            };
            (value, num, den)
        }))
    }
}

fn exact(x: Option<(Option<f64>, Option<Num>)>) -> Option<Num> {
    match x {
        Some((_, Some(Num::Int(i)))) => Some(Num::Int(i)),
        Some((Some(v), _)) => Some(Num::Float(v)),
        _ => None,
    }
}

/// Joins the cells of several inputs: `f` gets each input's cell (if any) and returns
/// value, numerator and denominator. Counts add up over the inputs.
fn combine(
    frame: &Frame<'_>,
    parts: Vec<(String, Computed)>,
    f: impl Fn(&CellKey, &BTreeMap<String, Option<CellVal>>) -> (Option<f64>, Option<Num>, Option<Num>),
) -> Computed {
    let mut keys: Vec<CellKey> = parts
        .iter()
        .flat_map(|(_, p)| p.cells.keys().cloned())
        .collect();
    if frame.by.is_empty() {
        keys.extend((0..frame.periods.len()).map(|p| (p, Vec::new())));
    }
    keys.sort();
    keys.dedup();
    let mut cells = BTreeMap::new();
    for key in keys {
        let vals: BTreeMap<String, Option<CellVal>> = parts
            .iter()
            .map(|(n, p)| (n.clone(), p.cells.get(&key).cloned()))
            .collect();
        let (value, num, den) = f(&key, &vals);
        let mut cell = CellVal {
            value,
            num,
            den,
            ..CellVal::default()
        };
        for v in vals.values().flatten() {
            cell.included += v.included;
            for (code, n) in &v.excluded {
                *cell.excluded.entry(code.clone()).or_default() += n;
            }
        }
        cells.insert(key, cell);
    }
    let rows = parts.into_iter().flat_map(|(_, p)| p.rows).collect();
    Computed { rows, cells }
}

#[allow(clippy::too_many_arguments)]
fn simple(
    env: &Env<'_>,
    c: &Compiled,
    frame: &Frame<'_>,
    facts: &CFacts,
    agg: &CAgg,
    time: Option<&Expr>,
    rules: &[&[CRule]],
    input: &Arc<str>,
) -> Result<Computed, MetricError> {
    let cands = select(env, facts, time, rules);
    let mut out = Out::new(Reducer::of(agg), frame);
    place(
        env,
        c,
        frame,
        input,
        &cands,
        |cand| agg_contribution(env, agg, cand, None),
        &mut out,
    )?;
    out.finish()
}

fn cumulative(
    env: &Env<'_>,
    c: &Compiled,
    frame: &Frame<'_>,
    facts: &CFacts,
    agg: &CAgg,
    window_s: Option<i64>,
    to_date: Option<Grain>,
) -> Result<Computed, MetricError> {
    let cands = derivation::timed(select(env, facts, c.time.as_ref(), &[&c.rules]));
    let input = single();
    let mut out = Out::new(Reducer::of(agg), frame);
    // Each period's window: the facts `lo..hi` it holds.
    let windows: Vec<(usize, usize)> = frame
        .periods
        .iter()
        .map(|per| {
            let start = match (window_s, to_date) {
                (Some(w), _) => per
                    .end
                    .checked_sub_signed(Duration::try_seconds(w).unwrap_or(Duration::zero()))
                    .unwrap_or(per.start),
                (None, Some(g)) => period::floor(g, per.end - Duration::nanoseconds(1)),
                (None, None) => per.start,
            };
            let lo = cands.partition_point(|k| k.time < Some(start));
            let hi = cands.partition_point(|k| k.time < Some(per.end));
            (lo, hi.max(lo))
        })
        .collect();
    let forward = windows
        .windows(2)
        .all(|w| matches!(w, [a, b] if a.0 <= b.0 && a.1 <= b.1));
    if forward && !frame.rows {
        // Folding: each fact is worked out once and added to every period whose window
        // holds it, then let go. Both ends of the windows only move forward, so those
        // periods are a run, `from..to`; a period's cell still meets its facts in order, so
        // it adds them up as a period-by-period walk would.
        let mut from = 0usize;
        for (n, cand) in cands.iter().enumerate() {
            while windows.get(from).is_some_and(|(_, hi)| *hi <= n) {
                from += 1;
            }
            let to = from
                + windows
                    .get(from..)
                    .map_or(0, |w| w.iter().take_while(|(lo, _)| *lo <= n).count());
            if from == to {
                continue;
            }
            let Some(dims) = derivation::dims_of(env, c, frame, cand.ev)? else {
                continue;
            };
            let k = agg_contribution(env, agg, cand, None);
            for p in from..to {
                out.push(Row::new(cand.ev, &input, p, dims.clone(), k.clone()))?;
            }
        }
        return out.finish();
    }
    // Rows kept (an explanation, whose rows are listed period by period), or windows that
    // do not only move forward: period by period. A fact counts in every period whose window
    // holds it: its dimensions and contribution are worked out once, and let go when the
    // windows have moved past it, so what is held is the facts of one window: facts
    // `first..first + len`, in order, in a ring (a B-tree, filled in ascending order, left
    // its nodes about half full). The ring is sized once for the largest window: grown by
    // doubling, it would come to hold up to twice that, and a ring touches all it holds as
    // it turns.
    let largest = windows.iter().map(|(lo, hi)| hi - lo).max().unwrap_or(0);
    let mut cache: VecDeque<Option<(Vec<String>, Contribution)>> = VecDeque::with_capacity(largest);
    let mut first = 0usize;
    for (p, &(lo, hi)) in windows.iter().enumerate() {
        // Let go of the facts before this window.
        let gone = lo.saturating_sub(first).min(cache.len());
        cache.drain(..gone);
        first = if cache.is_empty() { lo } else { first + gone };
        for (n, cand) in cands.iter().enumerate().take(hi).skip(lo) {
            let at = n.checked_sub(first);
            let cached = match at.and_then(|at| cache.get(at)) {
                Some(hit) => hit.clone(),
                None => {
                    let made = derivation::dims_of(env, c, frame, cand.ev)?
                        .map(|dims| (dims, agg_contribution(env, agg, cand, None)));
                    // Facts are met in order, so a new one is the next after the cached ones
                    // (were it not, it is worked out again when met again: never wrong).
                    if at == Some(cache.len()) {
                        cache.push_back(made.clone());
                    }
                    made
                }
            };
            let Some((dims, k)) = cached else { continue };
            out.push(Row::new(cand.ev, &input, p, dims, k))?;
        }
    }
    out.finish()
}

/// The entities with a counted fact in each (period, breakdown) cell, and the share of them
/// with at least `min_facts` counted facts there. An entity's first fact of the cell carries
/// it (denominator 1, numerator 1 when it reaches `min_facts`); its other facts are rows that
/// add nothing, so an explanation lists every fact an entity was counted with.
fn entities(
    env: &Env<'_>,
    c: &Compiled,
    frame: &Frame<'_>,
    facts: &CFacts,
    min_facts: u32,
) -> Result<Computed, MetricError> {
    let cands = select(env, facts, c.time.as_ref(), &[&c.rules]);
    let reducer = Reducer::Additive {
        ratio: true,
        count_value: false,
    };
    if !frame.rows {
        // Folded: each row counts as included or excluded; then each (cell, entity) adds
        // 1 to the denominator, and 1 to the numerator when it reached `min_facts`.
        let mut out = Out::new(reducer, frame);
        let mut groups: HashMap<(usize, Vec<String>, String), u32> = HashMap::new();
        let input = single();
        for cand in &cands {
            let Some(t) = cand.time else { continue };
            let Some(p) = period::index_of(frame.periods, t) else {
                continue;
            };
            let Some(dims) = derivation::dims_of(env, c, frame, cand.ev)? else {
                continue;
            };
            let row = Row::new(cand.ev, &input, p, dims, Contribution::empty(cand));
            if row.excluded.is_none() {
                let entity = entity_key(env, facts.entity.as_ref(), row.ev);
                *groups.entry((p, row.dims.clone(), entity)).or_default() += 1;
            }
            out.push(row)?;
        }
        for ((p, dims, _), n) in groups {
            let reached = n >= min_facts;
            let num = if reached { Num::ONE } else { Num::ZERO };
            out.credit((p, dims), num, Num::ONE)?;
        }
        return out.finish();
    }
    let mut rows = Vec::new();
    let mut out = Out::new(reducer, frame);
    place(
        env,
        c,
        frame,
        &single(),
        &cands,
        Contribution::empty,
        &mut out,
    )?;
    if let Some(kept) = out.rows_mut() {
        rows = std::mem::take(kept);
    }
    let mut groups: HashMap<(usize, Vec<String>, String), Vec<usize>> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        if row.excluded.is_none() {
            let entity = entity_key(env, facts.entity.as_ref(), row.ev);
            groups
                .entry((row.period, row.dims.clone(), entity))
                .or_default()
                .push(i);
        }
    }
    for members in groups.values() {
        let reached = u32::try_from(members.len()).map_or(true, |n| n >= min_facts);
        for (j, i) in members.iter().enumerate() {
            if let Some(row) = rows.get_mut(*i) {
                let (num, den) = match (j, reached) {
                    (0, true) => (Num::ONE, Num::ONE),
                    (0, false) => (Num::ZERO, Num::ONE),
                    _ => (Num::ZERO, Num::ZERO),
                };
                row.num = Some(num);
                row.den = Some(den);
            }
        }
    }
    let cells = reduce(&mut rows, reducer, frame)?;
    Ok(Computed { rows, cells })
}

/// Quintile scores 1..=5 of `values` (one per entity, in entity-key order): ranks by value,
/// ties in that order (pandas `rank(method="first")`), cut into five bins of equal count
/// (`qcut` of the ranks); `reverse` gives 5 to the lowest values (recency: fewest days).
fn quintiles<T: PartialOrd + Copy>(values: &[T], reverse: bool) -> Vec<u8> {
    let n = values.len();
    let mut order: Vec<usize> = (0..n).collect();
    // A stable sort keeps equal values in entity-key order: the rank `first` gives.
    order.sort_by(|a, b| {
        values[*a]
            .partial_cmp(&values[*b])
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut scores = vec![0u8; n];
    let span = i_to_f(i128::try_from(n.saturating_sub(1)).unwrap_or(0));
    for (rank0, i) in order.into_iter().enumerate() {
        // Rank r (1-based) falls in bin k when edge(k-1) < r <= edge(k), edge(k) = 1 + k/5 (n-1).
        let r = i_to_f(i128::try_from(rank0).unwrap_or(0)) + 1.0;
        let bin = (1u8..=5)
            .find(|k| r <= 1.0 + f64::from(*k) / 5.0 * span)
            .unwrap_or(5);
        if let Some(slot) = scores.get_mut(i) {
            *slot = if reverse { 6 - bin } else { bin };
        }
    }
    scores
}

/// One entity of an RFM scoring: its counted facts, last fact time, frequency, monetary.
type Scored<'a> = (Vec<&'a Cand<'a>>, DateTime<Utc>, u64, f64);

/// RFM: at each period's end, every entity with a counted fact before it gets recency (whole
/// days since its last fact), frequency (its facts) and monetary (Σ `of`) values, frequency
/// and monetary over the trailing window when one is given; each is cut into quintiles over
/// all those entities, and the cells count entities by their scores (`rfm`, `r`, `f`, `m`)
/// and the other breakdowns of their last fact. Every fact counted is a row; the entity's
/// last one carries it.
fn rfm(
    env: &Env<'_>,
    c: &Compiled,
    frame: &Frame<'_>,
    facts: &CFacts,
    of: &Expr,
    window_s: Option<i64>,
) -> Result<Computed, MetricError> {
    let cands = derivation::timed(select(env, facts, c.time.as_ref(), &[&c.rules]));
    let input = single();
    let reducer = Reducer::Additive {
        ratio: false,
        count_value: false,
    };
    let mut out = Out::new(reducer, frame);
    let day = Duration::days(1);
    let scored_only = frame.filter.keys().any(|d| derivation::measure_dim(c, d));
    for (p, per) in frame.periods.iter().enumerate() {
        let at = per.end;
        let hi = cands.partition_point(|k| k.time < Some(at));
        let window_start =
            window_s.and_then(|w| Duration::try_seconds(w).and_then(|w| at.checked_sub_signed(w)));
        let mut per_entity: BTreeMap<String, Scored<'_>> = BTreeMap::new();
        for cand in cands.get(..hi).unwrap_or_default() {
            let Some(t) = cand.time else { continue };
            let in_window = window_start.is_none_or(|s| t >= s);
            if cand.excluded.is_some() {
                // Left out by a rule: listed in the period it falls in, under "(not scored)",
                // unless the query asks for one score only.
                if scored_only {
                    continue;
                }
                if let Some(mut dims) = derivation::dims_of(env, c, frame, cand.ev)? {
                    for (slot, d) in dims.iter_mut().zip(frame.by) {
                        if derivation::measure_dim(c, d) {
                            "(not scored)".clone_into(slot);
                        }
                    }
                    if per.contains(t) {
                        let k = Contribution::empty(cand);
                        out.push(Row::new(cand.ev, &input, p, dims, k))?;
                    }
                }
                continue;
            }
            let value = Num::of(&env.eval(Some(cand.ev), of)).map(Num::to_f64);
            let entry = per_entity
                .entry(entity_key(env, facts.entity.as_ref(), cand.ev))
                .or_insert_with(|| (Vec::new(), t, 0, 0.0));
            entry.0.push(cand);
            entry.1 = entry.1.max(t);
            if in_window {
                entry.2 += 1;
                entry.3 += value.unwrap_or(0.0);
            }
        }
        per_entity.retain(|_, e| e.2 > 0);
        let entities: Vec<_> = per_entity.into_values().collect();
        let recency: Vec<i64> = entities
            .iter()
            .map(|e| (at - e.1).num_seconds().div_euclid(day.num_seconds()))
            .collect();
        let frequency: Vec<u64> = entities.iter().map(|e| e.2).collect();
        let monetary: Vec<f64> = entities.iter().map(|e| e.3).collect();
        let (r, f, m) = (
            quintiles(&recency, true),
            quintiles(&frequency, false),
            quintiles(&monetary, false),
        );
        for (i, (counted, ..)) in entities.iter().enumerate() {
            let scores = [
                ("rfm", format!("{}-{}-{}", r[i], f[i], m[i])),
                ("r", r[i].to_string()),
                ("f", f[i].to_string()),
                ("m", m[i].to_string()),
            ];
            let score_of = |d: &str| scores.iter().find(|(n, _)| *n == d).map(|(_, v)| v);
            if frame
                .filter
                .iter()
                .any(|(d, want)| score_of(d).is_some_and(|v| v != want))
            {
                continue;
            }
            let Some(last) = counted.last() else { continue };
            let Some(mut dims) = derivation::dims_of(env, c, frame, last.ev)? else {
                continue;
            };
            for (slot, d) in dims.iter_mut().zip(frame.by) {
                if let Some(v) = score_of(d) {
                    slot.clone_from(v);
                }
            }
            for cand in counted.iter() {
                let carries = cand.ev == last.ev;
                let mut k = Contribution::empty(cand);
                k.num = Some(if carries { Num::ONE } else { Num::ZERO });
                out.push(Row::new(cand.ev, &input, p, dims.clone(), k))?;
            }
        }
    }
    out.finish()
}

struct ConversionSpec<'a> {
    entity: Option<&'a Expr>,
    conversion: &'a [String],
    conv_filter: Option<&'a Expr>,
    conv_entity: Option<&'a Expr>,
    window_s: i64,
    count: bool,
}

fn entity_key(env: &Env<'_>, e: Option<&Expr>, ev: u32) -> String {
    match e {
        Some(e) => env.eval(Some(ev), e).key(),
        None => env
            .view
            .ev(ev)
            .and_then(|x| env.view.stream(x.stream))
            .map_or_else(String::new, |s| s.name()),
    }
}

fn conversion_measure(
    env: &Env<'_>,
    c: &Compiled,
    frame: &Frame<'_>,
    facts: &CFacts,
    spec: &ConversionSpec<'_>,
) -> Result<Computed, MetricError> {
    let view = env.view;
    let mut conv: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
    for t in spec.conversion {
        for &i in view.of_type(t) {
            let Some(e) = view.ev(i) else { continue };
            if e.global.is_some()
                || !spec
                    .conv_filter
                    .is_none_or(|f| env.eval(Some(i), f).truthy())
            {
                continue;
            }
            conv.entry(entity_key(env, spec.conv_entity.or(spec.entity), i))
                .or_default()
                .push(e.occurred_at);
        }
    }
    conv.values_mut().for_each(|v| v.sort_unstable());
    let window = Duration::try_seconds(spec.window_s).unwrap_or(Duration::zero());
    let cands = select(env, facts, c.time.as_ref(), &[&c.rules]);
    let reducer = Reducer::Additive {
        ratio: !spec.count,
        count_value: false,
    };
    let mut out = Out::new(reducer, frame);
    place(
        env,
        c,
        frame,
        &single(),
        &cands,
        |cand| {
            let mut k = Contribution::empty(cand);
            let (Some(base), None) = (cand.time, &k.excluded) else {
                return k;
            };
            let end = base.checked_add_signed(window).unwrap_or(base);
            let converted = conv
                .get(&entity_key(env, spec.entity, cand.ev))
                .is_some_and(|ts| {
                    let i = ts.partition_point(|t| *t < base);
                    ts.get(i).is_some_and(|t| *t <= end)
                });
            if !converted && end > view.now {
                k.excluded = Some("PENDING".into());
                return k;
            }
            k.num = Some(if converted { Num::ONE } else { Num::ZERO });
            if !spec.count {
                k.den = Some(Num::ONE);
            }
            k
        },
        &mut out,
    )?;
    out.finish()
}

fn duration(
    env: &Env<'_>,
    c: &Compiled,
    frame: &Frame<'_>,
    facts: &CFacts,
    agg: &CAgg,
) -> Result<Computed, MetricError> {
    let CMeasure::Duration {
        start,
        start_filter,
        start_last,
        business,
        pause,
        resume,
        ..
    } = &c.measure
    else {
        return Ok(Computed::default());
    };
    let view = env.view;
    let cands = select(env, facts, c.time.as_ref(), &[&c.rules]);
    let mut out = Out::new(Reducer::of(agg), frame);
    place(
        env,
        c,
        frame,
        &single(),
        &cands,
        |cand| {
            if cand.excluded.is_some() {
                return agg_contribution(env, agg, cand, None);
            }
            let Some(end) = view.ev(cand.ev) else {
                return agg_contribution(env, agg, cand, None);
            };
            let events = view.stream(end.stream).map_or(&[][..], |s| s.events);
            let is = |i: u32, types: &[String]| {
                view.ty_and_global(i).is_some_and(|(ty, global)| {
                    !global && types.iter().any(|t| t == view.type_name(ty))
                })
            };
            let mut starts = events.iter().copied().filter(|&i| {
                view.position_of(i) < end.position
                    && is(i, start)
                    && start_filter
                        .as_ref()
                        .is_none_or(|f| env.eval(Some(i), f).truthy())
            });
            let chosen = if *start_last {
                starts.next_back()
            } else {
                starts.next()
            };
            let Some(s) = chosen.and_then(|i| view.ev(i)) else {
                return Contribution {
                    excluded: Some("NO_START".into()),
                    num: None,
                    den: None,
                    sample: None,
                    key: None,
                    currency: None,
                };
            };
            let span = |a: DateTime<Utc>, b: DateTime<Utc>| {
                if *business {
                    c.calendar.seconds_between(a, b)
                } else {
                    (b - a).num_seconds()
                }
            };
            let mut secs = span(s.occurred_at, end.occurred_at);
            let mut paused: Option<DateTime<Utc>> = None;
            for &i in events {
                let (position, Some(occurred_at)) = (view.position_of(i), view.occurred_at_of(i))
                else {
                    continue;
                };
                if position <= s.position || position >= end.position {
                    continue;
                }
                if is(i, pause) && paused.is_none() {
                    paused = Some(occurred_at.max(s.occurred_at));
                } else if is(i, resume) {
                    if let Some(p) = paused.take() {
                        secs -= span(p, occurred_at.min(end.occurred_at).max(p));
                    }
                }
            }
            if let Some(p) = paused {
                secs -= span(p, end.occurred_at.max(p));
            }
            if secs < 0 {
                return Contribution {
                    excluded: Some("NEGATIVE_DURATION".into()),
                    num: None,
                    den: None,
                    sample: None,
                    key: None,
                    currency: None,
                };
            }
            agg_contribution(env, agg, cand, Some(Val::Int(secs)))
        },
        &mut out,
    )?;
    out.finish()
}

/// Periods of the query, derived from the view when `from`/`to` are absent: from the
/// earliest to the latest `occurred_at` of the kept events, widened to whole periods.
pub(crate) fn query_periods(
    view: &LogView,
    grain: Grain,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<Vec<Period>, MetricError> {
    let (first, last) = match view.occurred_range() {
        Some((first, last)) => (Some(first), Some(last)),
        None => (None, None),
    };
    let from = from.or(first.map(|t| {
        if grain == Grain::All {
            t
        } else {
            period::floor(grain, t)
        }
    }));
    let to = to.or(last.map(|t| t + Duration::seconds(1)));
    match (from, to) {
        (Some(f), Some(t)) => period::periods(grain, f, t),
        _ => Ok(Vec::new()),
    }
}
