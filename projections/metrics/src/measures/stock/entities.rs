//! Entity numbers of a stock's spells, found by the entity's key without holding the keys.
//!
//! A stock over 10,000,000 events makes about a million spells of half a million entities
//! (accounts). A map from each key to its number held the key inline (32 bytes) beside the
//! number: about 26 MB while the spells were made. Here a table holds each entity's number
//! (4 bytes) and the list [`Entities::firsts`] the opening event of its first spell (4
//! bytes): a key is compared with an entity's by working out that event's key again (as is
//! each entity's hash when the table grows).

use hashbrown::HashTable;

use crate::hashing::fnv;

/// Entities numbered in the order their first spell is met.
#[derive(Debug, Default)]
pub(super) struct Entities {
    table: HashTable<u32>,
    /// Each entity's first opening event: its key is that event's key.
    firsts: Vec<u32>,
}

impl Entities {
    /// The number of the entity whose key is `key` (that of opening event `opener`), a new
    /// one when no entity has that key yet; `key_of` gives the key of an opening event.
    /// `None` past `u32` entities.
    pub(super) fn number(
        &mut self,
        key: &str,
        opener: u32,
        key_of: impl Fn(u32) -> String,
    ) -> Option<u32> {
        let h = fnv(&[key]);
        let firsts = &self.firsts;
        let first = |n: u32| usize::try_from(n).ok().and_then(|n| firsts.get(n)).copied();
        if let Some(n) = self
            .table
            .find(h, |n| first(*n).is_some_and(|e| key_of(e) == key))
        {
            return Some(*n);
        }
        let n = u32::try_from(self.firsts.len()).ok()?;
        self.firsts.push(opener);
        let firsts = &self.firsts;
        self.table.insert_unique(h, n, |n| {
            let e = usize::try_from(*n)
                .ok()
                .and_then(|n| firsts.get(n))
                .copied();
            e.map_or(0, |e| fnv(&[&key_of(e)]))
        });
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys get numbers in the order first met, the same key the same number, through the
    /// table's growth; a key is worked out again only from the first opening event of its
    /// entity.
    #[test]
    fn numbers_entities_by_key_through_growth() {
        // Opening event `e` has key `acc{e % 1000}`: events 0..999 open the entities.
        let key_of = |e: u32| format!("acc{}", e % 1000);
        let mut entities = Entities::default();
        for e in 0..5_000u32 {
            let n = entities.number(&key_of(e), e, key_of).unwrap();
            assert_eq!(n, e % 1000, "event {e}");
        }
        assert_eq!(entities.firsts.len(), 1000);
        assert!(entities
            .firsts
            .iter()
            .enumerate()
            .all(|(n, e)| usize::try_from(*e).unwrap() == n));
        // Short keys, the empty one among them, each get their own number.
        let mut one = Entities::default();
        let texts = ["a", "b", "", "ab", "ba"];
        let of = |e: u32| texts[usize::try_from(e).unwrap()].to_owned();
        for (e, t) in texts.iter().enumerate() {
            let e = u32::try_from(e).unwrap();
            assert_eq!(one.number(t, e, of), Some(e));
        }
        assert_eq!(one.number("ab", 9, of), Some(3));
    }
}
