//! The streams of a view: names in one text arena, looked up by a hash of the name; each
//! stream's category, creation event and kept events (in log order, one index array for
//! all streams, built when the view is complete).
//!
//! A name is held as its category's number and the text after the category (`-42` of
//! `opportunity-42`): the category is in each stream's name, and a view of 10,000,000
//! events holds about two million streams, so the arena keeps 7 to 12 bytes less a stream.

use hashbrown::HashTable;

use crate::hashing::fnv;

/// Past the last stream number a view can hold.
const STREAMS_END: u32 = u32::MAX;

/// One stream as a reader sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamInfo<'a> {
    pub category: &'a str,
    /// The name after the category (`-42` of `opportunity-42`; empty for a name that is a
    /// category alone).
    pub rest: &'a str,
    /// The creation event (version 1), if kept.
    pub creation: Option<u32>,
    /// Kept events, in log order.
    pub events: &'a [u32],
}

impl StreamInfo<'_> {
    /// The stream's name.
    pub(crate) fn name(&self) -> String {
        [self.category, self.rest].concat()
    }
}

/// Every stream a view keeps events of.
#[derive(Debug, Clone, Default)]
pub(crate) struct Streams {
    /// Names after their category, back to back; stream `s` is the category
    /// `categories[category[s]]` followed by `names[name_start[s]..name_start[s + 1]]`.
    names: String,
    name_start: Vec<u32>,
    category: Vec<u16>,
    categories: Vec<Box<str>>,
    /// One bit a stream: whether its creation event (version 1) is kept. That event comes
    /// first in the log, so it is the stream's first kept event (4 bytes a stream less than
    /// its index).
    created: Vec<u64>,
    /// Each stream's number, found by the hash of its name (the names stay in `names`: 4
    /// bytes a stream, where a map from hash to stream took 16 and a second map took the
    /// names whose hash another name had).
    by_name: HashTable<u32>,
    /// Whether `by_name` was let go (a view that looks no stream up by name).
    unindexed: bool,
    /// Kept events of stream `s`: `events[event_start[s]..event_start[s + 1]]`.
    events: Vec<u32>,
    event_start: Vec<u32>,
}

/// The name of stream `s` after its category: `names[starts[s]..starts[s + 1]]` (to the
/// end for the last).
fn rest_of<'a>(names: &'a str, starts: &[u32], s: u32) -> &'a str {
    let Ok(s) = usize::try_from(s) else { return "" };
    let start = starts.get(s).copied().unwrap_or(0);
    let end = starts
        .get(s + 1)
        .copied()
        .unwrap_or_else(|| u32::try_from(names.len()).unwrap_or(u32::MAX));
    let range = usize::try_from(start).unwrap_or(0)..usize::try_from(end).unwrap_or(0);
    names.get(range).unwrap_or("")
}

/// `stream` split into its category (the text before the first `-`) and the rest.
fn split(stream: &str) -> (&str, &str) {
    stream.split_at(stream.find('-').unwrap_or(stream.len()))
}

/// The parts of a stream's name, as the table compares and hashes them and a reader sees
/// them.
#[derive(Clone, Copy)]
struct Parts<'a> {
    names: &'a str,
    starts: &'a [u32],
    category: &'a [u16],
    categories: &'a [Box<str>],
}

impl<'a> Parts<'a> {
    fn category(self, s: u32) -> &'a str {
        usize::try_from(s)
            .ok()
            .and_then(|s| self.category.get(s))
            .and_then(|c| self.categories.get(usize::from(*c)))
            .map_or("", |c| c)
    }

    fn rest(self, s: u32) -> &'a str {
        rest_of(self.names, self.starts, s)
    }

    fn hash(self, s: u32) -> u64 {
        fnv(&[self.category(s), self.rest(s)])
    }

    fn is(self, s: u32, category: &str, rest: &str) -> bool {
        self.rest(s) == rest && self.category(s) == category
    }
}

impl Streams {
    pub(crate) fn len(&self) -> usize {
        self.category.len()
    }

    fn parts(&self) -> Parts<'_> {
        Parts {
            names: &self.names,
            starts: &self.name_start,
            category: &self.category,
            categories: &self.categories,
        }
    }

    /// The stream named `name`, if the view has it.
    pub(crate) fn find(&self, name: &str) -> Option<u32> {
        let (category, rest) = split(name);
        let parts = self.parts();
        if self.unindexed {
            let s = (0..self.len()).find_map(|s| {
                u32::try_from(s)
                    .ok()
                    .filter(|s| parts.is(*s, category, rest))
            })?;
            return Some(s);
        }
        self.by_name
            .find(fnv(&[category, rest]), |s| parts.is(*s, category, rest))
            .copied()
    }

    /// The stream named `name`, added when new; `None` past `u32` streams or name bytes.
    pub(crate) fn find_or_add(&mut self, name: &str) -> Option<u32> {
        if self.unindexed {
            self.index_names();
        }
        if let Some(s) = self.find(name) {
            return Some(s);
        }
        let s = u32::try_from(self.len())
            .ok()
            .filter(|s| *s < STREAMS_END)?;
        let (cat, rest) = split(name);
        let start = u32::try_from(self.names.len()).ok()?;
        u32::try_from(self.names.len() + rest.len()).ok()?;
        self.names.push_str(rest);
        self.name_start.push(start);
        let c = match self.categories.iter().position(|c| &**c == cat) {
            Some(c) => c,
            None => {
                self.categories.push(cat.into());
                self.categories.len() - 1
            }
        };
        // Categories are a closed vocabulary; past u16 every new one shares the last slot.
        self.category.push(u16::try_from(c).unwrap_or(u16::MAX));
        if self.created.len() * 64 < self.len() {
            self.created.push(0);
        }
        // The table, taken out while it may rehash, reads the names it holds through `parts`.
        let mut by_name = std::mem::take(&mut self.by_name);
        let parts = self.parts();
        by_name.insert_unique(fnv(&[cat, rest]), s, |s| parts.hash(*s));
        self.by_name = by_name;
        Some(s)
    }

    /// Lets the lookup by name go (a view none of whose expressions names a stream keeps 5
    /// to 10 bytes a stream less, with the table's slack); a lookup then scans the names,
    /// and adding a stream builds it again.
    pub(crate) fn drop_name_index(&mut self) {
        self.by_name = HashTable::new();
        self.unindexed = true;
    }

    fn index_names(&mut self) {
        self.unindexed = false;
        let parts = self.parts();
        let mut by_name = HashTable::with_capacity(self.name_start.len());
        for s in 0..self.name_start.len() {
            let Ok(s) = u32::try_from(s) else { continue };
            by_name.insert_unique(parts.hash(s), s, |s| parts.hash(*s));
        }
        self.by_name = by_name;
    }

    /// Marks stream `s`'s creation event (version 1) as kept.
    pub(crate) fn set_creation(&mut self, s: u32) {
        if let Some(word) = usize::try_from(s / 64)
            .ok()
            .and_then(|w| self.created.get_mut(w))
        {
            *word |= 1 << (s % 64);
        }
    }

    fn has_creation(&self, s: u32) -> bool {
        usize::try_from(s / 64)
            .ok()
            .and_then(|w| self.created.get(w))
            .is_some_and(|word| word & (1 << (s % 64)) != 0)
    }

    /// Builds the per-stream event lists from each event's stream (`stream_of[i]` for event
    /// `i`, in log order).
    pub(crate) fn index_events(&mut self, stream_of: &[u32]) {
        let n = self.len();
        let mut start = vec![0u32; n + 1];
        for s in stream_of {
            if let Some(c) = usize::try_from(*s).ok().and_then(|s| start.get_mut(s + 1)) {
                *c += 1;
            }
        }
        for i in 1..start.len() {
            let prev = start.get(i - 1).copied().unwrap_or(0);
            if let Some(c) = start.get_mut(i) {
                *c += prev;
            }
        }
        let mut fill = start.clone();
        let mut events = vec![0u32; stream_of.len()];
        for (i, s) in stream_of.iter().enumerate() {
            let Some(slot) = usize::try_from(*s).ok().and_then(|s| fill.get_mut(s)) else {
                continue;
            };
            if let (Some(e), Ok(i)) = (
                usize::try_from(*slot)
                    .ok()
                    .and_then(|at| events.get_mut(at)),
                u32::try_from(i),
            ) {
                *e = i;
            }
            *slot += 1;
        }
        self.events = events;
        self.event_start = start;
    }

    /// Stream `s`.
    pub(crate) fn get(&self, s: u32) -> Option<StreamInfo<'_>> {
        let i = usize::try_from(s).ok().filter(|i| *i < self.len())?;
        let parts = self.parts();
        let events = match (self.event_start.get(i), self.event_start.get(i + 1)) {
            (Some(a), Some(b)) => self
                .events
                .get(usize::try_from(*a).ok()?..usize::try_from(*b).ok()?)
                .unwrap_or(&[]),
            _ => &[],
        };
        let creation = events.first().copied().filter(|_| self.has_creation(s));
        Some(StreamInfo {
            category: parts.category(s),
            rest: parts.rest(s),
            creation,
            events,
        })
    }

    /// Frees what the arrays hold beyond their length.
    pub(crate) fn shrink(&mut self) {
        self.names.shrink_to_fit();
        self.name_start.shrink_to_fit();
        self.category.shrink_to_fit();
        self.created.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_streams_and_lists_their_events_in_log_order() {
        let mut s = Streams::default();
        let a = s.find_or_add("opportunity-1").unwrap();
        let b = s.find_or_add("account-9").unwrap();
        assert_eq!(s.find_or_add("opportunity-1"), Some(a));
        s.set_creation(b);
        s.index_events(&[a, b, a, a]);
        let one = s.get(a).unwrap();
        assert_eq!((one.name(), one.rest), ("opportunity-1".to_owned(), "-1"));
        assert_eq!(one.category, "opportunity");
        assert_eq!(one.events, &[0, 2, 3]);
        assert_eq!(one.creation, None);
        let two = s.get(b).unwrap();
        assert_eq!(
            (two.name(), two.category, two.creation),
            ("account-9".to_owned(), "account", Some(1))
        );
        assert_eq!(two.events, &[1]);
        assert_eq!(s.find("lead-1"), None);
        assert!(s.get(7).is_none());
        s.drop_name_index();
        assert_eq!(s.find("account-9"), Some(b));
        let c = s.find_or_add("lead-1").unwrap();
        assert_eq!(
            (s.find("opportunity-1"), s.find("lead-1")),
            (Some(a), Some(c))
        );
    }

    /// A name is its category and the rest whatever its dashes: none (a category alone),
    /// one, several, or one that ends it; two names that differ only where the category
    /// ends are two streams.
    #[test]
    fn names_split_at_the_first_dash_and_read_back_whole() {
        let mut s = Streams::default();
        let names = [
            "lead", "lead-", "lead-1-2", "lead1-2", "-x", "leadx", "lea-d1",
        ];
        let ids: Vec<u32> = names.iter().map(|n| s.find_or_add(n).unwrap()).collect();
        for (n, id) in names.iter().zip(&ids) {
            let info = s.get(*id).unwrap();
            assert_eq!(&info.name(), n);
            assert_eq!(s.find(n), Some(*id));
        }
        assert_eq!(s.get(ids[2]).unwrap().category, "lead");
        assert_eq!(s.get(ids[2]).unwrap().rest, "-1-2");
        assert_eq!(s.get(ids[4]).unwrap().category, "");
        assert_eq!((s.find("lead-1"), s.find("lea")), (None, None));
        s.drop_name_index();
        assert!(names.iter().zip(&ids).all(|(n, id)| s.find(n) == Some(*id)));
        assert_eq!(s.find_or_add("lead-3"), Some(7));
        assert!(names.iter().zip(&ids).all(|(n, id)| s.find(n) == Some(*id)));
    }

    /// Every name is found as the index grows, after it is let go and built again, and a
    /// name the view does not have is not.
    #[test]
    fn thousands_of_streams_are_found_through_growth_and_rebuild() {
        let mut s = Streams::default();
        let names: Vec<String> = (0..5_000).map(|i| format!("case-{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            assert_eq!(s.find_or_add(name), Some(u32::try_from(i).unwrap()));
        }
        let found = |s: &Streams| {
            names
                .iter()
                .enumerate()
                .all(|(i, n)| s.find(n) == Some(u32::try_from(i).unwrap()))
        };
        assert!(found(&s));
        // Every third stream's creation kept, across the 64-stream words of the marks: its
        // first kept event; the others have none.
        for i in (0..5_000u32).step_by(3) {
            s.set_creation(i);
        }
        let of: Vec<u32> = (0..10_000u32).map(|e| e % 5_000).collect();
        s.index_events(&of);
        assert!((0..5_000u32).all(|i| {
            let info = s.get(i).unwrap();
            info.events == [i, i + 5_000] && info.creation == (i % 3 == 0).then_some(i)
        }));
        s.drop_name_index();
        assert_eq!(s.find_or_add("case-17"), Some(17));
        assert_eq!(s.find_or_add("case-5000"), Some(5_000));
        assert!(found(&s));
        assert_eq!((s.find("case-5001"), s.find("case-")), (None, None));
    }
}
