//! Stocks: state at an instant, from spells that events open and close.
//!
//! A spell runs from an open event (`opens`) to the next close (`closes`, effective at
//! `close_at`), or for a fixed time (`lasts`, e.g. a purchase keeps an account active for
//! 365 days). Spells roll up to entities (`entity`, e.g. `stream.account_id`): an entity is
//! active at `t` when one of its spells runs at `t`, and its value at `t` is the sum of its
//! running spells' values (`value`, e.g. MRR), which is semi-additive: read at an instant,
//! never summed over time. Calculations (`calc`) read the state at `p1` (count, sum, avg,
//! median_age), compare `p0` and `p1` (churned, churn_rate, retained, retention_rate and
//! the value retentions), or find first spells inside `P` (new).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use super::candidates;
use crate::compile::{CFacts, CMeasure, Compiled, StockCalc};
use crate::definition::Pick;
use crate::derivation::{self, Computed, Frame, Num, Out, Reducer, Row};
use crate::error::MetricError;
use crate::expr::eval::Env;

#[derive(Debug, Clone)]
struct Spell {
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
    opener: u32,
    /// The value from `start` on.
    value: Num,
    /// Later value changes `(from, value)`, in log order (most spells have none).
    changes: Vec<(DateTime<Utc>, Num)>,
    excluded: Option<String>,
}

impl Spell {
    fn runs(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && self.end.is_none_or(|e| t < e)
    }

    fn value(&self, t: DateTime<Utc>) -> Num {
        match self.changes.iter().rev().find(|(from, _)| *from <= t) {
            Some((_, v)) => *v,
            None if self.start <= t => self.value,
            None => Num::ZERO,
        }
    }
}

struct Entity {
    spells: Vec<Spell>,
}

impl Entity {
    fn running(&self, t: DateTime<Utc>) -> Option<&Spell> {
        self.spells.iter().rev().find(|s| s.runs(t))
    }

    fn value(&self, t: DateTime<Utc>) -> Result<Num, MetricError> {
        self.spells
            .iter()
            .filter(|s| s.runs(t))
            .try_fold(Num::ZERO, |acc, s| acc.add(s.value(t)))
    }

    /// The continuous active interval containing `t` (overlapping spells merged).
    fn interval(&self, t: DateTime<Utc>) -> Option<(DateTime<Utc>, Option<DateTime<Utc>>)> {
        let mut spells: Vec<&Spell> = self.spells.iter().collect();
        spells.sort_by_key(|s| s.start);
        let mut merged: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> = Vec::new();
        for s in spells {
            if let Some(last) = merged.last_mut() {
                if last.1.is_none_or(|e| s.start <= e) {
                    last.1 = match (last.1, s.end) {
                        (Some(x), Some(y)) => Some(x.max(y)),
                        _ => None,
                    };
                    continue;
                }
            }
            merged.push((s.start, s.end));
        }
        merged
            .into_iter()
            .find(|(a, e)| *a <= t && e.is_none_or(|e| t < e))
    }
}

/// An entity: the value of the measure's `entity` expression, or (without one) the stream.
/// The order of entities does not matter: their rows are put in event order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum EntityKey {
    Stream(u32),
    Text(String),
}

fn spells(
    env: &Env<'_>,
    c: &Compiled,
) -> Result<(BTreeMap<EntityKey, Entity>, Vec<Spell>), MetricError> {
    let CMeasure::Stock {
        entity,
        opens,
        closes,
        close_at,
        lasts,
        value,
        ..
    } = &c.measure
    else {
        return Ok((BTreeMap::new(), Vec::new()));
    };
    let view = env.view;
    let facts = CFacts {
        events: opens.clone(),
        filter: None,
        pick: Pick::All,
        pick_code: String::new(),
        entity: None,
    };
    let openers: BTreeMap<u32, Option<String>> = candidates(env, &facts, &[&c.rules])
        .into_iter()
        .map(|k| (k.ev, k.excluded))
        .collect();
    let mut streams: Vec<u32> = openers
        .keys()
        .filter_map(|i| view.ev(*i).map(|e| e.stream))
        .collect();
    streams.sort_unstable();
    streams.dedup();
    let value_of = |i: u32, ty: &str| -> Option<Num> {
        match value.get(ty) {
            Some(e) => Some(Num::of(&env.eval(Some(i), e)).unwrap_or(Num::ZERO)),
            None if value.is_empty() => Some(Num::ONE),
            None => None,
        }
    };
    let mut entities: BTreeMap<EntityKey, Entity> = BTreeMap::new();
    let mut excluded = Vec::new();
    let mut finish = |s: Spell, entities: &mut BTreeMap<EntityKey, Entity>| {
        if s.excluded.is_some() {
            excluded.push(s);
            return;
        }
        let key = match entity {
            Some(e) => EntityKey::Text(env.eval(Some(s.opener), e).key()),
            None => EntityKey::Stream(view.stream_of(s.opener).unwrap_or(u32::MAX)),
        };
        entities
            .entry(key)
            .or_insert_with(|| Entity {
                spells: Vec::with_capacity(1),
            })
            .spells
            .push(s);
    };
    for s in streams {
        let Some(info) = view.stream(s) else { continue };
        let mut active: Option<Spell> = None;
        for &i in info.events {
            let Some(e) = view.ev(i) else { continue };
            let ty = view.type_name(e.ty);
            if let Some(code) = openers.get(&i) {
                let v = value_of(i, ty).unwrap_or(Num::ZERO);
                if let Some(len) = lasts.get(ty) {
                    let end = e.occurred_at.checked_add_signed(
                        Duration::try_seconds(*len).unwrap_or(Duration::zero()),
                    );
                    finish(
                        Spell {
                            start: e.occurred_at,
                            end,
                            opener: i,
                            value: v,
                            changes: Vec::new(),
                            excluded: code.clone(),
                        },
                        &mut entities,
                    );
                } else if active.is_none() {
                    active = Some(Spell {
                        start: e.occurred_at,
                        end: None,
                        opener: i,
                        value: v,
                        changes: Vec::new(),
                        excluded: code.clone(),
                    });
                }
            } else if closes.iter().any(|t| t == ty) {
                if let Some(mut s) = active.take() {
                    let at = close_at
                        .as_ref()
                        .and_then(|x| env.eval(Some(i), x).as_time())
                        .unwrap_or(e.occurred_at);
                    s.end = Some(at.max(s.start));
                    finish(s, &mut entities);
                }
            } else if let (Some(s), Some(v)) = (active.as_mut(), value_of(i, ty)) {
                s.changes.push((e.occurred_at, v));
            }
        }
        if let Some(s) = active {
            finish(s, &mut entities);
        }
    }
    Ok((entities, excluded))
}

/// Rows and cells of a stock measure.
/// What one entity or excluded spell contributes to a period's cell: the opening event it
/// is listed under, and its amounts.
struct Share<'s> {
    ev: u32,
    excluded: Option<&'s String>,
    num: Option<Num>,
    den: Option<Num>,
    sample: Option<f64>,
}

/// Where a period's share comes from: an excluded spell or an entity (by index).
#[derive(Clone, Copy)]
enum Source {
    Excluded(usize),
    Entity(usize),
}

/// Rows and cells of a stock measure.
pub(crate) fn run(env: &Env<'_>, c: &Compiled, frame: &Frame<'_>) -> Result<Computed, MetricError> {
    let CMeasure::Stock { calc, currency, .. } = &c.measure else {
        return Ok(Computed::default());
    };
    let calc = *calc;
    let value_rows = matches!(calc, StockCalc::Sum | StockCalc::Avg);
    let (entities, excluded) = spells(env, c)?;
    let entities: Vec<Entity> = entities.into_values().collect();
    let input: Arc<str> = Arc::from("");
    let pair = matches!(
        calc,
        StockCalc::Churned
            | StockCalc::ChurnRate
            | StockCalc::Retained
            | StockCalc::RetentionRate
            | StockCalc::GrossValueRetention
            | StockCalc::NetValueRetention
            | StockCalc::ValueChurnRate
    );
    let reducer = match calc {
        StockCalc::Count
        | StockCalc::Sum
        | StockCalc::New
        | StockCalc::Churned
        | StockCalc::Retained => Reducer::Additive {
            ratio: false,
            count_value: false,
        },
        StockCalc::MedianAge => Reducer::Quantile(0.5),
        _ => Reducer::Additive {
            ratio: true,
            count_value: false,
        },
    };
    let mut out = Out::new(reducer, frame);
    // Each period's rows join the others in event order: the rows of all periods in
    // (period, event) order. A period's shares are listed (event, source), sorted, then
    // settled into rows one by one.
    let mut listed: Vec<(u32, Source)> = Vec::new();
    for (p, per) in frame.periods.iter().enumerate() {
        let (p0, p1) = (per.start, per.end);
        let share = |source: Source| -> Result<Option<Share<'_>>, MetricError> {
            let plain = |ev: u32, num: Num, den: Option<Num>| Share {
                ev,
                excluded: None,
                num: Some(num),
                den,
                sample: None,
            };
            let ent = match source {
                Source::Excluded(i) => {
                    let Some(s) = excluded.get(i) else {
                        return Ok(None);
                    };
                    let relevant = match calc {
                        StockCalc::New => per.contains(s.start),
                        _ if pair => s.runs(p0),
                        _ => s.runs(p1),
                    };
                    return Ok(relevant.then_some(Share {
                        ev: s.opener,
                        excluded: s.excluded.as_ref(),
                        num: None,
                        den: None,
                        sample: None,
                    }));
                }
                Source::Entity(i) => match entities.get(i) {
                    Some(ent) => ent,
                    None => return Ok(None),
                },
            };
            if calc == StockCalc::New {
                return Ok(ent
                    .spells
                    .iter()
                    .min_by_key(|s| (s.start, s.opener))
                    .filter(|first| per.contains(first.start))
                    .map(|first| plain(first.opener, Num::ONE, None)));
            }
            if pair {
                let Some(at0) = ent.running(p0) else {
                    return Ok(None);
                };
                let active1 = ent.running(p1).is_some();
                let churned = ent
                    .interval(p0)
                    .and_then(|(_, e)| e)
                    .is_some_and(|e| e <= p1);
                let (v0, v1) = (ent.value(p0)?, ent.value(p1)?);
                let (num, den) = match calc {
                    StockCalc::Churned => (Num::Int(i128::from(churned)), None),
                    StockCalc::ChurnRate => (Num::Int(i128::from(churned)), Some(Num::ONE)),
                    StockCalc::Retained => (Num::Int(i128::from(active1)), None),
                    StockCalc::RetentionRate => (Num::Int(i128::from(active1)), Some(Num::ONE)),
                    StockCalc::GrossValueRetention => {
                        (if v1.to_f64() < v0.to_f64() { v1 } else { v0 }, Some(v0))
                    }
                    StockCalc::NetValueRetention => (v1, Some(v0)),
                    _ => {
                        let lost = v0.to_f64() - v1.to_f64();
                        (
                            if lost > 0.0 {
                                v0.add(negate(v1))?
                            } else {
                                Num::ZERO
                            },
                            Some(v0),
                        )
                    }
                };
                return Ok(Some(plain(at0.opener, num, den)));
            }
            let Some(at1) = ent.running(p1) else {
                return Ok(None);
            };
            Ok(Some(match calc {
                StockCalc::Count => plain(at1.opener, Num::ONE, None),
                StockCalc::Sum => plain(at1.opener, ent.value(p1)?, None),
                StockCalc::Avg => plain(at1.opener, ent.value(p1)?, Some(Num::ONE)),
                _ => {
                    let start = ent.interval(p1).map_or(at1.start, |(a, _)| a);
                    let age = i128::from((p1 - start).num_seconds());
                    Share {
                        ev: at1.opener,
                        excluded: None,
                        num: None,
                        den: None,
                        sample: Some(derivation::Num::Int(age).to_f64()),
                    }
                }
            }))
        };
        let sources = (0..excluded.len())
            .map(Source::Excluded)
            .chain((0..entities.len()).map(Source::Entity));
        for source in sources {
            if let Some(s) = share(source)? {
                listed.push((s.ev, source));
            }
        }
        listed.sort_by_key(|(ev, _)| *ev);
        for (_, source) in listed.drain(..) {
            let Some(s) = share(source)? else { continue };
            let Some(dims) = derivation::dims_of(env, c, frame, s.ev)? else {
                continue;
            };
            let value_cur = if value_rows && s.excluded.is_none() {
                currency.as_ref().map(|e| env.eval(Some(s.ev), e).key())
            } else {
                None
            };
            out.push(Row {
                ev: s.ev,
                input: Arc::clone(&input),
                period: p,
                dims,
                excluded: s.excluded.cloned(),
                num: s.num,
                den: s.den,
                sample: s.sample,
                key: None,
                currency: value_cur,
            })?;
        }
    }
    out.finish()
}

fn negate(n: Num) -> Num {
    match n {
        Num::Int(i) => Num::Int(i.saturating_neg()),
        Num::Float(f) => Num::Float(-f),
    }
}
