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

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::compile::{CMeasure, Compiled, StockCalc};
use crate::derivation::{self, Computed, Frame, Num, Out, Reducer, Row};
use crate::error::MetricError;
use crate::expr::eval::Env;
use crate::expr::Expr;
use crate::view::LogView;

mod amounts;
mod entities;

use amounts::{Amounts, Spell, SpellValue};
use entities::Entities;

/// A spell as made: its entity's number and its place in the order of making, so that one
/// sort in place (no scratch copy of the list) groups the spells by entity and keeps each
/// entity's spells in the order they were made.
struct Made {
    entity: u32,
    seq: u32,
    spell: Spell,
}

/// When spells start: when their opening events occurred, read from the view (a spell
/// holds no start of its own, 12 bytes less for each of a million spells).
#[derive(Clone, Copy)]
struct Starts<'v>(&'v LogView);

impl Starts<'_> {
    /// The start of `s` (`None` only for an opening event the view does not have).
    fn of(self, s: &Spell) -> Option<DateTime<Utc>> {
        self.0.occurred_at_of(s.opener)
    }

    /// The start of `s` if it runs at `t` (its end, held by the spell, is tested first, so
    /// a spell that ended is passed without reading the view).
    fn running_since(self, s: &Spell, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !s.ends_after(t) {
            return None;
        }
        self.of(s).filter(|start| *start <= t)
    }

    /// Whether `s` runs at `t`.
    fn runs(self, s: &Spell, t: DateTime<Utc>) -> bool {
        self.running_since(s, t).is_some()
    }
}

/// One entity's spells, in the order they were made.
struct Entity<'s> {
    spells: &'s [Made],
    amounts: &'s Amounts,
    starts: Starts<'s>,
}

impl<'s> Entity<'s> {
    fn spells(&self) -> impl DoubleEndedIterator<Item = &'s Spell> {
        self.spells.iter().map(|m| &m.spell)
    }

    fn running(&self, t: DateTime<Utc>) -> Option<&'s Spell> {
        self.spells().rev().find(|s| self.starts.runs(s, t))
    }

    fn value(&self, t: DateTime<Utc>) -> Result<Num, MetricError> {
        self.spells()
            .try_fold(Num::ZERO, |acc, s| match self.starts.running_since(s, t) {
                Some(start) => acc.add(self.amounts.value(s, start, t)),
                None => Ok(acc),
            })
    }

    /// The continuous active interval containing `t` (overlapping spells merged).
    fn interval(&self, t: DateTime<Utc>) -> Option<(DateTime<Utc>, Option<DateTime<Utc>>)> {
        let mut spells: Vec<(DateTime<Utc>, &Spell)> = self
            .spells()
            .filter_map(|s| Some((self.starts.of(s)?, s)))
            .collect();
        spells.sort_by_key(|(start, _)| *start);
        let mut merged: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> = Vec::new();
        for (start, s) in spells {
            if let Some(last) = merged.last_mut() {
                if last.1.is_none_or(|e| start <= e) {
                    last.1 = match (last.1, s.end) {
                        (Some(x), Some(y)) => Some(x.max(y)),
                        _ => None,
                    };
                    continue;
                }
            }
            merged.push((start, s.end));
        }
        merged
            .into_iter()
            .find(|(a, e)| *a <= t && e.is_none_or(|e| t < e))
    }
}

/// Every entity's spells (with the entity's number), entity after entity
/// (`bounds[e]..bounds[e + 1]`), and the spells a rule left out with its code.
struct Spells<'v> {
    spells: Vec<Made>,
    bounds: Vec<usize>,
    /// With the code of the rule that left them out (borrowed from the definition, or a
    /// global code), not a text of their own.
    excluded: Vec<(Spell, &'v str)>,
    amounts: Amounts,
    starts: Starts<'v>,
}

impl Spells<'_> {
    /// Number of entities.
    fn entity_count(&self) -> usize {
        self.bounds.len().saturating_sub(1)
    }

    /// Entity `e`, read from the bounds when asked (a list of them would take 16 bytes an
    /// entity for the whole evaluation).
    fn entity(&self, e: usize) -> Option<Entity<'_>> {
        let (start, end) = (*self.bounds.get(e)?, *self.bounds.get(e + 1)?);
        Some(Entity {
            spells: self.spells.get(start..end)?,
            amounts: &self.amounts,
            starts: self.starts,
        })
    }
}

/// What an event of one type does in a stream walk.
#[derive(Debug, Clone, Copy)]
struct Role<'c> {
    opens: bool,
    closes: bool,
    /// Fixed length of the spell it opens, in seconds.
    lasts: Option<i64>,
    /// Its value expression.
    value: Option<&'c Expr>,
}

/// Each type's role, worked out the first time the walk meets the type.
#[derive(Debug, Default)]
struct Roles<'c> {
    by_type: Vec<Option<Role<'c>>>,
}

impl<'c> Roles<'c> {
    fn of(&mut self, ty: u16, role: impl FnOnce() -> Role<'c>) -> Role<'c> {
        let at = usize::from(ty);
        if let Some(Some(known)) = self.by_type.get(at) {
            return *known;
        }
        let made = role();
        if self.by_type.len() <= at {
            self.by_type.resize(at + 1, None);
        }
        if let Some(slot) = self.by_type.get_mut(at) {
            *slot = Some(made);
        }
        made
    }
}

fn spells<'v>(env: &Env<'v>, c: &'v Compiled) -> Result<Spells<'v>, MetricError> {
    let starts = Starts(env.view);
    let none = Spells {
        spells: Vec::new(),
        bounds: vec![0],
        excluded: Vec::new(),
        amounts: Amounts::new(),
        starts,
    };
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
        return Ok(none);
    };
    let view = env.view;
    // An opening event's exclusion, as candidate selection decides it (global exclusion,
    // then the first rule that holds); decided where the stream walk meets it, so the
    // openers are not listed apart.
    let exclusion = |i: u32, global: bool| -> Option<&'v str> {
        let global = if global {
            view.ev(i).and_then(|e| e.global)
        } else {
            None
        };
        match global {
            Some(code) => Some(code),
            None => c
                .rules
                .iter()
                .find(|r| env.eval(Some(i), &r.when).truthy())
                .map(|r| r.code.as_str()),
        }
    };
    let open_types: Vec<Option<u16>> = opens.iter().map(|t| view.type_id(t)).collect();
    let mut roles = Roles::default();
    let mut streams: Vec<u32> = opens
        .iter()
        .flat_map(|t| view.of_type(t).iter())
        .filter_map(|i| view.stream_of(*i))
        .collect();
    streams.sort_unstable();
    streams.dedup();
    let value_of = |i: u32, role: &Role<'_>| -> Option<Num> {
        match role.value {
            Some(e) => Some(Num::of(&env.eval(Some(i), e)).unwrap_or(Num::ZERO)),
            None if value.is_empty() => Some(Num::ONE),
            None => None,
        }
    };
    // Each spell with its entity's number, in the order made; grouped by entity below. An
    // entity is the value of the measure's `entity` expression, numbered in the order first
    // met, or (without one) the stream, numbered as the view numbers it; the order of
    // entities does not matter, their rows are put in event order.
    // At most one spell per opening event: the list is sized once, never copied as it
    // grows (only the part written is resident). The entity table grows as entities are
    // met: sized for every opening event, its slots were resident (10.5 MB for 1.2 M
    // openers of 570,000 entities), where growing works each key out again about twice.
    let openers: usize = opens.iter().map(|t| view.of_type(t).len()).sum();
    let mut entities = Entities::default();
    let mut made: Vec<Made> = Vec::with_capacity(openers);
    let mut excluded = Vec::new();
    let mut amounts = Amounts::new();
    let mut finish = |s: Spell, code: Option<&'v str>| {
        if let Some(code) = code {
            excluded.push((s, code));
            return;
        }
        // A view holds fewer than `u32::MAX` events (`VIEW_EVENTS_MAX`), so fewer entities.
        let n = match entity {
            Some(e) => {
                let key_of = |opener: u32| env.eval(Some(opener), e).key();
                entities.number(&key_of(s.opener), s.opener, key_of)
            }
            None => view.stream_of(s.opener),
        }
        .unwrap_or(u32::MAX);
        let seq = u32::try_from(made.len()).unwrap_or(u32::MAX);
        made.push(Made {
            entity: n,
            seq,
            spell: s,
        });
    };
    for s in streams {
        let Some(info) = view.stream(s) else { continue };
        let mut active: Option<(Spell, Option<&'v str>)> = None;
        for &i in info.events {
            let (Some((ty, global)), Some(occurred_at)) =
                (view.ty_and_global(i), view.occurred_at_of(i))
            else {
                continue;
            };
            let role = roles.of(ty, || {
                let name = view.type_name(ty);
                Role {
                    opens: open_types.contains(&Some(ty)),
                    closes: closes.iter().any(|t| t == name),
                    lasts: lasts.get(name).copied(),
                    value: value.get(name),
                }
            });
            if role.opens {
                let code = exclusion(i, global);
                let v = SpellValue::of(value_of(i, &role).unwrap_or(Num::ZERO));
                let spell = |end, amounts: &mut Amounts| -> Result<Spell, MetricError> {
                    Ok(Spell {
                        end,
                        opener: i,
                        amount: amounts.add(v)?,
                    })
                };
                if let Some(len) = role.lasts {
                    let end = occurred_at
                        .checked_add_signed(Duration::try_seconds(len).unwrap_or(Duration::zero()));
                    finish(spell(end, &mut amounts)?, code);
                } else if active.is_none() {
                    active = Some((spell(None, &mut amounts)?, code));
                }
            } else if role.closes {
                if let Some((mut s, code)) = active.take() {
                    let at = close_at
                        .as_ref()
                        .and_then(|x| env.eval(Some(i), x).as_time())
                        .unwrap_or(occurred_at);
                    s.end = Some(starts.of(&s).map_or(at, |start| at.max(start)));
                    finish(s, code);
                }
            } else if let (Some((s, _)), Some(v)) = (active.as_mut(), value_of(i, &role)) {
                amounts.change(&mut s.amount, occurred_at, v)?;
            }
        }
        if let Some((s, code)) = active {
            finish(s, code);
        }
    }
    drop(entities);
    // Entity by entity, each one's spells in the order they were made.
    made.sort_unstable_by_key(|m| (m.entity, m.seq));
    made.shrink_to_fit();
    let mut bounds = vec![0];
    for (at, w) in made.windows(2).enumerate() {
        if let [a, b] = w {
            if a.entity != b.entity {
                bounds.push(at + 1);
            }
        }
    }
    if !made.is_empty() {
        bounds.push(made.len());
    }
    Ok(Spells {
        spells: made,
        bounds,
        excluded,
        amounts,
        starts,
    })
}

/// What one entity or excluded spell contributes to a period's cell: the opening event it
/// is listed under, and its amounts.
struct Share<'s> {
    ev: u32,
    excluded: Option<&'s str>,
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
    let all = spells(env, c)?;
    let excluded = &all.excluded;
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
    // (period, event) order. A period's shares are listed in source order as (event, place
    // in source order), sorted by event (sources keep their order within an event), then
    // worked out again one by one and settled into rows: a share is a few dozen bytes, and
    // a period of a long log lists one for each of a million entities.
    let source_at = |order: usize| match order.checked_sub(excluded.len()) {
        None => Source::Excluded(order),
        Some(e) => Source::Entity(e),
    };
    let mut listed: Vec<(u32, u32)> = Vec::new();
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
                    let Some((s, code)) = excluded.get(i) else {
                        return Ok(None);
                    };
                    let relevant = match calc {
                        StockCalc::New => all.starts.of(s).is_some_and(|start| per.contains(start)),
                        _ if pair => all.starts.runs(s, p0),
                        _ => all.starts.runs(s, p1),
                    };
                    return Ok(relevant.then_some(Share {
                        ev: s.opener,
                        excluded: Some(code),
                        num: None,
                        den: None,
                        sample: None,
                    }));
                }
                Source::Entity(i) => match all.entity(i) {
                    Some(ent) => ent,
                    None => return Ok(None),
                },
            };
            if calc == StockCalc::New {
                return Ok(ent
                    .spells()
                    .filter_map(|s| Some((all.starts.of(s)?, s.opener)))
                    .min()
                    .filter(|(start, _)| per.contains(*start))
                    .map(|(_, opener)| plain(opener, Num::ONE, None)));
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
                    let Some(start) = ent.interval(p1).map(|(a, _)| a).or(all.starts.of(at1))
                    else {
                        return Ok(None);
                    };
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
        let sources = excluded.len().saturating_add(all.entity_count());
        for order in 0..sources {
            if let Some(s) = share(source_at(order))? {
                let order = u32::try_from(order).map_err(|_| MetricError::Limit {
                    what: "the spells and entities of a stock",
                    limit: usize::try_from(u32::MAX).unwrap_or(usize::MAX),
                    hint: "narrow the range or the metric",
                })?;
                listed.push((s.ev, order));
            }
        }
        // In place (a stable sort would take a scratch copy of the listing): the place in
        // source order breaks the ties as a stable sort would.
        listed.sort_unstable();
        for (_, order) in listed.drain(..) {
            // The same share as listed: `share` reads only the spells and the period.
            let Some(s) = share(source_at(usize::try_from(order).unwrap_or(usize::MAX)))? else {
                continue;
            };
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
                excluded: s.excluded.map(str::to_owned),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn role(opens: bool) -> Role<'static> {
        Role {
            opens,
            closes: !opens,
            lasts: None,
            value: None,
        }
    }

    /// A spell, as made, stays within 28 bytes (its start is read from the view): a long
    /// log makes a million of them.
    #[test]
    fn a_made_spell_takes_twenty_eight_bytes() {
        assert!(
            std::mem::size_of::<Made>() <= 28,
            "{}",
            std::mem::size_of::<Made>()
        );
    }

    /// A type's role is worked out once, whatever the order the types come in.
    #[test]
    fn roles_are_worked_out_once_per_type() {
        let mut roles = Roles::default();
        let mut made = 0;
        let mut of = |roles: &mut Roles<'static>, ty: u16, opens: bool| {
            roles.of(ty, || {
                made += 1;
                role(opens)
            })
        };
        assert!(of(&mut roles, 5, true).opens);
        assert!(of(&mut roles, 2, false).closes);
        // Asked again with another answer: the first one stands.
        assert!(of(&mut roles, 5, false).opens);
        assert!(!of(&mut roles, 2, true).opens);
        assert!(of(&mut roles, 0, true).opens);
        assert_eq!(made, 3);
    }
}
