//! Spells and their amounts: what a stock's spells are worth, held apart from the spells.

use chrono::{DateTime, Utc};

use crate::derivation::Num;
use crate::error::MetricError;

/// A spell's value: one, an integer, or any other amount (boxed: most spells count one).
#[derive(Debug, Clone)]
pub(super) enum SpellValue {
    One,
    Int(i64),
    Other(Box<Num>),
}

impl SpellValue {
    pub(super) fn of(n: Num) -> SpellValue {
        match n {
            Num::Int(1) => SpellValue::One,
            Num::Int(i) => i64::try_from(i).map_or(SpellValue::Other(Box::new(n)), SpellValue::Int),
            Num::Float(_) => SpellValue::Other(Box::new(n)),
        }
    }

    fn num(&self) -> Num {
        match self {
            SpellValue::One => Num::ONE,
            SpellValue::Int(i) => Num::Int(i128::from(*i)),
            SpellValue::Other(n) => **n,
        }
    }
}

/// A spell: 20 bytes, its amount held apart (a long log makes a million spells, and most
/// of a count's share the one amount) and its start read from the view: a spell starts when
/// its opening event occurred.
#[derive(Debug, Clone)]
pub(super) struct Spell {
    pub(super) end: Option<DateTime<Utc>>,
    pub(super) opener: u32,
    /// Its amount in [`Amounts`].
    pub(super) amount: u32,
}

/// A spell's value changes after its start: `(from, value)`, in log order.
type Changes = Vec<(DateTime<Utc>, Num)>;

impl Spell {
    /// Whether the spell has not ended by `t`.
    pub(super) fn ends_after(&self, t: DateTime<Utc>) -> bool {
        self.end.is_none_or(|e| t < e)
    }
}

/// A spell's value from its start on, and its later changes (most spells have none).
#[derive(Debug, Clone)]
struct Amount {
    value: SpellValue,
    changes: Option<Box<Changes>>,
}

/// The spells' amounts. The first is one without changes, shared by every spell whose
/// amount it is.
#[derive(Debug)]
pub(super) struct Amounts(Vec<Amount>);

impl Amounts {
    /// The shared amount: one, no changes.
    pub(super) const ONE: u32 = 0;

    pub(super) fn new() -> Amounts {
        Amounts(vec![Amount {
            value: SpellValue::One,
            changes: None,
        }])
    }

    /// The amount of a new spell worth `value`.
    pub(super) fn add(&mut self, value: SpellValue) -> Result<u32, MetricError> {
        match value {
            SpellValue::One => Ok(Self::ONE),
            value => self.push(Amount {
                value,
                changes: None,
            }),
        }
    }

    fn push(&mut self, amount: Amount) -> Result<u32, MetricError> {
        let at = u32::try_from(self.0.len()).map_err(|_| MetricError::Limit {
            what: "the spells of a stock",
            limit: usize::try_from(u32::MAX).unwrap_or(usize::MAX),
            hint: "narrow the range or the metric",
        })?;
        self.0.push(amount);
        Ok(at)
    }

    /// Records that the amount of a spell (`at`) is `value` from `from` on; a spell with
    /// the shared amount gets one of its own first.
    pub(super) fn change(
        &mut self,
        at: &mut u32,
        from: DateTime<Utc>,
        value: Num,
    ) -> Result<(), MetricError> {
        if *at == Self::ONE {
            *at = self.push(Amount {
                value: SpellValue::One,
                changes: None,
            })?;
        }
        if let Some(amount) = usize::try_from(*at).ok().and_then(|i| self.0.get_mut(i)) {
            amount
                .changes
                .get_or_insert_with(Box::default)
                .push((from, value));
        }
        Ok(())
    }

    /// The value at `t` of `spell`, which started at `start`.
    pub(super) fn value(&self, spell: &Spell, start: DateTime<Utc>, t: DateTime<Utc>) -> Num {
        let Some(amount) = usize::try_from(spell.amount)
            .ok()
            .and_then(|i| self.0.get(i))
        else {
            return Num::ZERO;
        };
        let later = amount
            .changes
            .as_deref()
            .and_then(|c| c.iter().rev().find(|(from, _)| *from <= t));
        match later {
            Some((_, v)) => *v,
            None if start <= t => amount.value.num(),
            None => Num::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Spells share the amount one; a change gives a spell an amount of its own, and values
    /// read at an instant follow the changes made by then.
    #[test]
    fn amounts_are_shared_until_a_spell_changes() {
        let t = |d: u32| DateTime::<Utc>::from_timestamp(i64::from(d) * 86_400, 0).unwrap();
        let mut amounts = Amounts::new();
        let spell = |amount| Spell {
            end: None,
            opener: 0,
            amount,
        };
        let one = spell(amounts.add(SpellValue::One).unwrap());
        let mut changed = spell(amounts.add(SpellValue::One).unwrap());
        assert_eq!((one.amount, changed.amount), (Amounts::ONE, Amounts::ONE));
        amounts
            .change(&mut changed.amount, t(20), Num::Int(5))
            .unwrap();
        amounts
            .change(&mut changed.amount, t(30), Num::Int(7))
            .unwrap();
        assert_ne!(changed.amount, Amounts::ONE);
        let worth = spell(amounts.add(SpellValue::Int(3)).unwrap());
        let at = |s: &Spell, d| amounts.value(s, t(10), t(d));
        assert_eq!(
            [at(&one, 5), at(&one, 25), at(&changed, 5), at(&changed, 15)],
            [Num::ZERO, Num::ONE, Num::ZERO, Num::ONE]
        );
        assert_eq!(
            [at(&changed, 25), at(&changed, 35), at(&worth, 35)],
            [Num::Int(5), Num::Int(7), Num::Int(3)]
        );
    }
}
