//! Values gathered under a group (an account, say) and listed back group by group, in
//! group order and, within a group, in the order they were added: how a report regroups a
//! read model's rows by another key than their own without holding them all in memory.
//!
//! Values are held in memory up to a generation's worth (the same budget as a table's
//! generation); beyond it they are sorted and written as a run (see [`super::run`]) in a
//! temporary directory of their own, removed when the [`Sorted`] is dropped. Listing merges
//! the runs with what is still held. A key on disk is the group, a NUL byte (which no id
//! holds) and the value's sequence number in fixed-width hexadecimal, so keys are unique and
//! sort by group, then by arrival.
//!
//! Where a run cannot be written (a full disk), the values stay in memory: the listing is
//! still complete, only the bound is lost, and a warning says so. Where a run cannot be
//! read back, the listing ends with the error.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::run::Merged;
use super::{decode_value, entries_per_generation, refill, Disk, Encoded, SpillError};

/// Separates the group from the sequence number in a key on disk.
const GROUP_END: char = '\0';

/// Why a listing could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum SortedError {
    /// A run could not be read back.
    #[error("reading regrouped rows back from the spill directory failed: {0}")]
    Read(#[from] std::io::Error),
    /// A value read back could not be decoded.
    #[error("a regrouped row could not be decoded: {0}")]
    Decode(#[from] bincode::error::DecodeError),
}

/// Values by group, listed in group order (see the module documentation).
pub struct Sorted<V> {
    /// Values not on disk: key, value.
    held: Vec<(String, V)>,
    /// `held` is written to disk when it holds this many values.
    held_max: usize,
    disk: Option<Disk>,
    /// Values added so far (the next sequence number).
    added: u64,
    /// Set once a run could not be written: every later value stays in memory.
    spill_failed: bool,
    spill_base: Option<PathBuf>,
}

impl<V> Default for Sorted<V> {
    fn default() -> Self {
        Sorted {
            held: Vec::new(),
            held_max: entries_per_generation(std::mem::size_of::<(String, V)>() + 32),
            disk: None,
            added: 0,
            spill_failed: false,
            spill_base: None,
        }
    }
}

impl<V: Serialize + DeserializeOwned> Sorted<V> {
    /// An empty collection.
    #[must_use]
    pub fn new() -> Self {
        Sorted::default()
    }

    /// An empty collection holding at most `held_max` values in memory, spilling into
    /// `base` (tests).
    #[cfg(test)]
    fn with_bound(held_max: usize, base: PathBuf) -> Self {
        Sorted {
            held_max: held_max.max(1),
            spill_base: Some(base),
            ..Sorted::default()
        }
    }

    /// Adds `value` to `group` (after the values added to it before). A group holds no NUL
    /// character (ids never do: they hold no control character); one that does may be
    /// listed in pieces.
    pub fn push(&mut self, group: &str, value: V) {
        debug_assert!(!group.contains(GROUP_END), "a group with a NUL character");
        let key = sequenced_key(group, self.added);
        self.added = self.added.saturating_add(1);
        self.held.push((key, value));
        if self.held.len() >= self.held_max && !self.spill_failed {
            if let Err(e) = self.spill() {
                self.spill_failed = true;
                tracing::warn!(error = %e, held = self.held.len(), "rows being regrouped could not be written to the spill directory; they stay in memory");
            }
        }
    }

    /// Values on disk.
    #[must_use]
    pub fn spilled(&self) -> usize {
        self.disk.as_ref().map_or(0, Disk::entries)
    }

    fn spill(&mut self) -> Result<(), SpillError> {
        if self.disk.is_none() {
            self.disk = Some(Disk::open(self.spill_base.as_deref())?);
        }
        self.held.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut encoded = Encoded::with_capacity(self.held.len());
        for (key, value) in &self.held {
            encoded.push(key.as_str(), value)?;
        }
        let Some(disk) = self.disk.as_mut() else {
            return Ok(());
        };
        disk.push_run(&encoded)?;
        // The values are on disk now: never listed twice, even if the merge below fails
        // (a failed merge leaves the runs it read as they were).
        self.held.clear();
        disk.compact().map_err(SpillError::Merge)
    }

    /// Ends the gathering: the values can now be listed, as many times as needed.
    #[must_use]
    pub fn finish(mut self) -> Finished<V> {
        self.held.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Finished { sorted: self }
    }
}

/// A [`Sorted`] done gathering.
pub struct Finished<V> {
    sorted: Sorted<V>,
}

impl<V: Serialize + DeserializeOwned> Finished<V> {
    /// Every value with its group, in group order, each group's in the order added.
    ///
    /// # Errors
    /// The spill directory could not be read (at the start, or as an item).
    pub fn iter(&self) -> Result<FinishedIter<'_, V>, SortedError> {
        let disk = match &self.sorted.disk {
            Some(disk) => Some(Merged::new(disk.runs.iter().rev())?),
            None => None,
        };
        Ok(FinishedIter {
            held: self.sorted.held.iter().peekable(),
            disk,
            disk_head: None,
        })
    }

    /// Calls `each` with every group and its values (in the order added), group by group
    /// in group order: one group's values are held at a time.
    ///
    /// # Errors
    /// The spill directory could not be read; `each` has then seen only the groups before.
    pub fn for_each_group(&self, mut each: impl FnMut(&str, Vec<V>)) -> Result<(), SortedError>
    where
        V: Clone,
    {
        let mut current: Option<(String, Vec<V>)> = None;
        for item in self.iter()? {
            let (group, value) = item?;
            match current.as_mut() {
                Some((g, values)) if *g == group => values.push(value.into_owned()),
                _ => {
                    if let Some((g, values)) = current.take() {
                        each(&g, values);
                    }
                    current = Some((group, vec![value.into_owned()]));
                }
            }
        }
        if let Some((g, values)) = current {
            each(&g, values);
        }
        Ok(())
    }

    /// Values on disk.
    #[must_use]
    pub fn spilled(&self) -> usize {
        self.sorted.spilled()
    }
}

/// A value as listed: its group, and the value (borrowed where it was held in memory).
pub type Grouped<'a, V> = (String, std::borrow::Cow<'a, V>);

/// The listing of a [`Finished`].
pub struct FinishedIter<'a, V> {
    held: std::iter::Peekable<std::slice::Iter<'a, (String, V)>>,
    disk: Option<Merged<'a>>,
    disk_head: Option<(String, Option<Vec<u8>>)>,
}

/// `group`, [`GROUP_END`] and `seq` as 16 lowercase hex digits: sorted as text, keys come in
/// group order and, within a group, in sequence order. Built by hand: formatting it with
/// `format!` took about a tenth of a long report's time.
fn sequenced_key(group: &str, seq: u64) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut key = String::with_capacity(group.len() + 1 + 16);
    key.push_str(group);
    key.push(GROUP_END);
    for shift in (0..16).rev() {
        let nibble = (seq >> (shift * 4)) & 0xf;
        key.push(char::from(
            HEX[usize::from(u8::try_from(nibble).unwrap_or(0))],
        ));
    }
    key
}

fn group_of(key: &str) -> &str {
    key.split_once(GROUP_END).map_or(key, |(group, _)| group)
}

impl<'a, V: Clone + DeserializeOwned> Iterator for FinishedIter<'a, V> {
    type Item = Result<Grouped<'a, V>, SortedError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = refill(&mut self.disk, &mut self.disk_head) {
            return Some(Err(e.into()));
        }
        let take_held = match (self.held.peek(), &self.disk_head) {
            (Some((held, _)), Some((on_disk, _))) => held < on_disk,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        if take_held {
            let (key, value) = self.held.next()?;
            return Some(Ok((
                group_of(key).to_owned(),
                std::borrow::Cow::Borrowed(value),
            )));
        }
        let (mut key, bytes) = self.disk_head.take()?;
        let bytes = bytes.unwrap_or_default();
        // The key read back is owned already: cut it down to its group.
        key.truncate(group_of(&key).len());
        Some(
            decode_value::<V>(&bytes)
                .map(|value| (key, std::borrow::Cow::Owned(value)))
                .map_err(SortedError::from),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(f: &Finished<(u32, String)>) -> Vec<(String, (u32, String))> {
        f.iter()
            .unwrap()
            .map(|item| {
                let (group, value) = item.unwrap();
                (group, value.into_owned())
            })
            .collect()
    }

    #[test]
    fn a_sequenced_key_is_the_group_then_sixteen_hex_digits() {
        for seq in [0, 1, 0xab, 0x0123_4567_89ab_cdef, u64::MAX] {
            assert_eq!(
                sequenced_key("acc-1", seq),
                format!("acc-1{GROUP_END}{seq:016x}")
            );
            assert_eq!(group_of(&sequenced_key("acc-1", seq)), "acc-1");
        }
        assert_eq!(sequenced_key("", 2), format!("{GROUP_END}0000000000000002"));
    }

    #[test]
    fn values_come_back_by_group_in_the_order_added_on_disk_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let groups = ["b", "a", "ab", "a-1", "c", "aa"];
        let mut expected: Vec<(String, (u32, String))> = Vec::new();
        let mut spilled = Sorted::with_bound(7, dir.path().to_path_buf());
        let mut held = Sorted::with_bound(100_000, dir.path().to_path_buf());
        for i in 0..500u32 {
            let group = groups[usize::try_from(i * 7 % 6).unwrap()];
            let value = (i, format!("v{i}"));
            spilled.push(group, value.clone());
            held.push(group, value.clone());
            expected.push((group.to_owned(), value));
        }
        // By group in string order ("a" < "a-1" < "aa" < "ab" < "b" < "c"), stable within.
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        let (spilled, held) = (spilled.finish(), held.finish());
        assert!(spilled.spilled() > 400, "{}", spilled.spilled());
        assert_eq!(held.spilled(), 0);
        assert_eq!(listed(&spilled), expected);
        assert_eq!(listed(&held), expected);
        // A second listing gives the same.
        assert_eq!(listed(&spilled), expected);
        // Group by group.
        let mut grouped: Vec<(String, (u32, String))> = Vec::new();
        let mut seen = Vec::new();
        spilled
            .for_each_group(|group, values| {
                seen.push(group.to_owned());
                grouped.extend(values.into_iter().map(|v| (group.to_owned(), v)));
            })
            .unwrap();
        assert_eq!(grouped, expected);
        assert_eq!(seen, ["a", "a-1", "aa", "ab", "b", "c"]);
    }

    #[test]
    fn values_stay_in_memory_when_the_spill_directory_cannot_be_made() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("a-file");
        std::fs::write(&blocker, b"x").unwrap();
        let mut sorted = Sorted::with_bound(4, blocker.join("spill"));
        for i in 0..20u32 {
            sorted.push(if i % 2 == 0 { "even" } else { "odd" }, (i, String::new()));
        }
        let sorted = sorted.finish();
        assert_eq!(sorted.spilled(), 0);
        let groups: Vec<(String, u32)> = listed(&sorted)
            .into_iter()
            .map(|(g, (i, _))| (g, i))
            .collect();
        let mut expected: Vec<(String, u32)> = (0..20u32)
            .map(|i| ((if i % 2 == 0 { "even" } else { "odd" }).to_owned(), i))
            .collect();
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(groups, expected);
    }
}
