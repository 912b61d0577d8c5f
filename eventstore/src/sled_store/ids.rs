//! Event id → position, for the writer's idempotency check, kept without one sled
//! operation per event on either the commit path or the indexer.
//!
//! In sled (the `index` tree, integers big endian):
//! - `J` last position → the (id, position) pairs of part of one indexing step, in position
//!   order, at most [`CHUNK_PAIRS_MAX`] an entry: the ids not yet in a run.
//! - `R` run (its last position) first id → up to [`BLOCK_PAIRS_MAX`] pairs sorted by id,
//!   starting with that id: a run's blocks, so a run is searched with one range read.
//! - `Q` run → the run's number of pairs: the list of runs.
//!
//! When the chunks hold [`RUN_PAIRS`] or more pairs the indexer seals them into a run: one
//! sled batch writes the run's blocks and its `Q` entry and removes the chunks. An indexing
//! step costs one sled entry per [`CHUNK_PAIRS_MAX`] events instead of one per event.
//!
//! In memory, on the writer thread only ([`IdLookup`], built at the first append after an
//! open, so a process that only reads never holds it): Bloom filters of every id in the log
//! and every id the writer has been asked about since, which answer "new id" for almost
//! every append without touching sled, and a list of the ids not yet sealed. A filter hit is
//! confirmed in the group being staged, in that list, then in the runs from the newest, one
//! range read each. The filters are split block filters (every key's bits in one 32-byte
//! block: one cache line touched per key, where a classic filter touches one per hash
//! function), keyed with a random key per process, so ids chosen by a client cannot be
//! aimed at the filter's false positives. The list is kept in insertion order, sorted by id
//! within each stretch of [`SORTED_PAIRS`] pairs, so adding an id is a push and a lookup
//! (only after a filter hit) is one binary search per stretch.
//!
//! **Architecture Invariant:** the writer's filters and list hold every id at or below the
//! committed head: the lookup is built from sled before the first group of the instance is
//! staged (the open indexed the whole log), every id is put in the filters when the writer
//! first looks it up (before it can be staged), and every committed group's ids are added to
//! the list before the next group is staged. Sealing moves ids from chunks to a run in one
//! atomic batch, and the writer drops them from its list only after that batch is applied.

use std::hash::BuildHasher;

use sbbf_rs_safe::Filter as SplitBlockFilter;

use super::index::{u64_at, Index, IndexError};
use crate::error::{Corruption, ReadError};
use crate::types::{EventId, Position};

/// Most pairs one chunk entry holds (24 KiB: below the bound
/// [`super::index::SEGMENT_SIZE_BYTES`] sets on an entry).
pub(crate) const CHUNK_PAIRS_MAX: usize = 1_024;
/// Pairs in the chunks at which the indexer seals them into a run.
#[cfg(not(test))]
pub(crate) const RUN_PAIRS: usize = 1 << 18;
/// Small in unit tests, so that a few thousand appends cross several runs.
#[cfg(test)]
pub(crate) const RUN_PAIRS: usize = 1_000;
/// Most pairs one block of a run holds (24 KiB, as a chunk).
pub(crate) const BLOCK_PAIRS_MAX: usize = 1_024;
/// Bytes of one (id, position) pair.
const PAIR_BYTES: usize = 24;
/// Bits per id of each Bloom filter of the writer's lookup: about 0.1 % false positives for
/// a split block filter filled to its capacity (Apache Parquet's sizing table).
const FILTER_BITS_PER_ID: usize = 16;
/// Fewest ids the first filter is sized for.
const FILTER_CAPACITY_MIN: usize = 1 << 20;
/// Pairs of the unsealed list sorted together (196 KB: a stretch is sorted in cache).
#[cfg(not(test))]
const SORTED_PAIRS: usize = 8_192;
/// Small in unit tests, so that the store's tests cross several sorted stretches.
#[cfg(test)]
const SORTED_PAIRS: usize = 64;

const CHUNK_PREFIX: u8 = b'J';
const RUN_PREFIX: u8 = b'R';
const RUN_LIST_PREFIX: u8 = b'Q';

fn position_key(prefix: u8, p: Position) -> [u8; 9] {
    let mut k = [prefix; 9];
    k[1..].copy_from_slice(&p.0.to_be_bytes());
    k
}

fn block_key(run: Position, first: &EventId) -> [u8; 25] {
    let mut k = [RUN_PREFIX; 25];
    k[1..9].copy_from_slice(&run.0.to_be_bytes());
    k[9..].copy_from_slice(first.0.as_bytes());
    k
}

fn put_pair(out: &mut Vec<u8>, id: &EventId, p: Position) {
    out.extend_from_slice(id.0.as_bytes());
    out.extend_from_slice(&p.0.to_be_bytes());
}

fn pairs(value: &[u8]) -> Result<Vec<(EventId, Position)>, IndexError> {
    if !value.len().is_multiple_of(PAIR_BYTES) {
        return Err(IndexError::Malformed(
            "an event id entry of the wrong length",
        ));
    }
    let mut out = Vec::with_capacity(value.len() / PAIR_BYTES);
    for pair in value.chunks_exact(PAIR_BYTES) {
        let id = pair
            .get(..16)
            .and_then(|b| uuid::Uuid::from_slice(b).ok())
            .ok_or(IndexError::Malformed("a malformed event id entry"))?;
        let p = u64_at(pair, 16).ok_or(IndexError::Malformed("a malformed event id entry"))?;
        out.push((EventId(id), Position(p)));
    }
    Ok(out)
}

/// The chunk entries of one indexing step's ids (in position order).
pub(crate) fn chunk_entries(ids: &[(EventId, Position)]) -> Vec<([u8; 9], Vec<u8>)> {
    ids.chunks(CHUNK_PAIRS_MAX)
        .filter_map(|chunk| {
            let (_, last) = chunk.last()?;
            let mut value = Vec::with_capacity(chunk.len() * PAIR_BYTES);
            for (id, p) in chunk {
                put_pair(&mut value, id, *p);
            }
            Some((position_key(CHUNK_PREFIX, *last), value))
        })
        .collect()
}

/// Every pair in the chunks (the ids not yet in a run).
pub(crate) fn chunk_pairs(tree: &sled::Tree) -> Result<Vec<(EventId, Position)>, IndexError> {
    let mut out = Vec::new();
    for item in tree.scan_prefix([CHUNK_PREFIX]) {
        let (_, v) = super::index::guarded(|| item)?;
        out.extend(pairs(&v)?);
    }
    Ok(out)
}

/// Number of pairs in the chunks.
pub(crate) fn chunk_pair_count(tree: &sled::Tree) -> Result<usize, IndexError> {
    let mut count = 0usize;
    for item in tree.scan_prefix([CHUNK_PREFIX]) {
        let (_, v) = super::index::guarded(|| item)?;
        count = count.saturating_add(v.len() / PAIR_BYTES);
    }
    Ok(count)
}

/// The runs, oldest first: each one's last position and number of pairs (0 where the
/// count is unreadable: it only sizes the writer's filter).
pub(crate) fn runs(tree: &sled::Tree) -> Result<Vec<(Position, u64)>, IndexError> {
    let mut out = Vec::new();
    for item in tree.scan_prefix([RUN_LIST_PREFIX]) {
        let (k, v) = super::index::guarded(|| item)?;
        let p = u64_at(&k, 1).ok_or(IndexError::Malformed("a malformed run entry"))?;
        out.push((Position(p), u64_at(&v, 0).unwrap_or(0)));
    }
    Ok(out)
}

/// Seals every chunk into one run, in one atomic batch. Returns the run's last position,
/// or `None` when there were no chunks.
pub(crate) fn seal(tree: &sled::Tree) -> Result<Option<Position>, IndexError> {
    let mut chunk_keys = Vec::new();
    let mut all = Vec::new();
    for item in tree.scan_prefix([CHUNK_PREFIX]) {
        let (k, v) = super::index::guarded(|| item)?;
        all.extend(pairs(&v)?);
        chunk_keys.push(k);
    }
    let Some(run) = all.iter().map(|(_, p)| *p).max() else {
        return Ok(None);
    };
    all.sort_unstable_by_key(|(id, _)| id.0);
    let mut batch = sled::Batch::default();
    for block in all.chunks(BLOCK_PAIRS_MAX) {
        let Some((first, _)) = block.first() else {
            continue;
        };
        let mut value = Vec::with_capacity(block.len() * PAIR_BYTES);
        for (id, p) in block {
            put_pair(&mut value, id, *p);
        }
        batch.insert(&block_key(run, first), value);
    }
    let count = u64::try_from(all.len()).unwrap_or(u64::MAX);
    batch.insert(&position_key(RUN_LIST_PREFIX, run), &count.to_be_bytes());
    for k in chunk_keys {
        batch.remove(k);
    }
    super::index::guarded(|| tree.apply_batch(batch))?;
    Ok(Some(run))
}

/// The position of `id` in run `run`, if the run holds it.
fn run_position(
    tree: &sled::Tree,
    run: Position,
    id: &EventId,
) -> Result<Option<Position>, IndexError> {
    let low = block_key(run, &EventId(uuid::Uuid::nil()));
    let high = block_key(run, id);
    let found = super::index::guarded(|| tree.range(low..=high).next_back().transpose())?;
    let Some((_, v)) = found else {
        return Ok(None);
    };
    let block = pairs(&v)?;
    Ok(block
        .binary_search_by_key(&id.0, |(i, _)| i.0)
        .ok()
        .and_then(|at| block.get(at))
        .map(|(_, p)| *p))
}

/// Calls `f` with every id of every run.
fn each_run_id(tree: &sled::Tree, mut f: impl FnMut(&EventId)) -> Result<(), IndexError> {
    for item in tree.scan_prefix([RUN_PREFIX]) {
        let (_, v) = super::index::guarded(|| item)?;
        for (id, _) in pairs(&v)? {
            f(&id);
        }
    }
    Ok(())
}

/// One Bloom filter of the writer's lookup and how full it is.
struct Filter {
    bloom: SplitBlockFilter,
    items: usize,
    capacity: usize,
}

impl Filter {
    fn new(capacity: usize) -> Filter {
        Filter {
            bloom: SplitBlockFilter::new(FILTER_BITS_PER_ID, capacity),
            items: 0,
            capacity,
        }
    }
}

/// The ids above the last sealed run, in insertion (position) order, each stretch of
/// [`SORTED_PAIRS`] sorted by id once full.
#[derive(Default)]
struct Unsealed {
    /// (id, position) pairs.
    pairs: Vec<(u128, u64)>,
    /// `pairs[..sorted]` is whole sorted stretches; the rest is in insertion order.
    sorted: usize,
}

impl Unsealed {
    fn push(&mut self, id: &EventId, p: Position) {
        self.pairs.push((id.0.as_u128(), p.0));
        if self.pairs.len() - self.sorted >= SORTED_PAIRS {
            if let Some(stretch) = self.pairs.get_mut(self.sorted..) {
                stretch.sort_unstable_by_key(|(id, _)| *id);
            }
            self.sorted = self.pairs.len();
        }
    }

    /// The position of `id`, newest ids first.
    fn get(&self, id: &EventId) -> Option<Position> {
        let key = id.0.as_u128();
        let (sorted, unsorted) = self.pairs.split_at(self.sorted);
        if let Some((_, p)) = unsorted.iter().rev().find(|(i, _)| *i == key) {
            return Some(Position(*p));
        }
        sorted.chunks(SORTED_PAIRS).rev().find_map(|stretch| {
            stretch
                .binary_search_by_key(&key, |(i, _)| *i)
                .ok()
                .and_then(|at| stretch.get(at))
                .map(|(_, p)| Position(*p))
        })
    }

    /// Drops the stretches wholly at or below `sealed` (their ids are in a run now). Pairs
    /// of a stretch that straddles it stay: they still name the right positions.
    fn drop_through(&mut self, sealed: Position) {
        let stretches = self
            .pairs
            .get(..self.sorted)
            .unwrap_or_default()
            .chunks(SORTED_PAIRS)
            .take_while(|stretch| stretch.iter().all(|(_, p)| *p <= sealed.0))
            .count();
        let dropped = stretches * SORTED_PAIRS;
        if dropped > 0 {
            self.pairs.drain(..dropped);
            self.sorted -= dropped;
        }
        if self.sorted == 0 && self.pairs.iter().all(|(_, p)| *p <= sealed.0) {
            self.pairs.clear();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.pairs.len()
    }
}

/// The writer's id lookup, once built.
struct Loaded {
    /// Filters of growing size (a new one, twice the last, when the last is full); an id
    /// is in the log only if one of them may hold it.
    filters: Vec<Filter>,
    /// The filters' key: random per process.
    keys: std::collections::hash_map::RandomState,
    /// The ids above `sealed_through`.
    unsealed: Unsealed,
    sealed_through: Position,
    /// The runs, oldest first.
    runs: Vec<Position>,
}

impl Loaded {
    fn new(capacity: usize, sealed_through: Position, runs: Vec<Position>) -> Loaded {
        Loaded {
            filters: vec![Filter::new(capacity)],
            keys: std::collections::hash_map::RandomState::new(),
            unsealed: Unsealed::default(),
            sealed_through,
            runs,
        }
    }

    /// Puts `id` in the filters; returns whether they may have held it before.
    fn admit(&mut self, id: &EventId) -> bool {
        let full = self.filters.last().is_none_or(|f| f.items >= f.capacity);
        if full {
            let capacity = self
                .filters
                .last()
                .map_or(FILTER_CAPACITY_MIN, |f| f.capacity.saturating_mul(2));
            self.filters.push(Filter::new(capacity));
        }
        let hash = self.keys.hash_one(id.0.as_u128());
        let Some((last, earlier)) = self.filters.split_last_mut() else {
            return true;
        };
        let before = earlier.iter().any(|f| f.bloom.contains_hash(hash));
        let in_last = last.bloom.insert_hash(hash);
        if !in_last {
            last.items += 1;
        }
        before || in_last
    }
}

/// The writer's lookup of event ids: see the module's documentation.
#[derive(Default)]
pub(crate) struct IdLookup {
    loaded: Option<Loaded>,
}

impl IdLookup {
    fn load(index: &Index) -> Result<Loaded, IndexError> {
        let tree = index.tree();
        let listed = runs(tree)?;
        let sealed = listed.iter().fold(0u64, |n, (_, c)| n.saturating_add(*c));
        let runs: Vec<Position> = listed.into_iter().map(|(p, _)| p).collect();
        let sealed_through = runs.last().copied().unwrap_or(Position::ZERO);
        let unsealed_pairs = chunk_pairs(tree)?;
        let total = usize::try_from(sealed)
            .unwrap_or(usize::MAX)
            .saturating_add(unsealed_pairs.len());
        let mut loaded = Loaded::new(
            total.saturating_mul(2).max(FILTER_CAPACITY_MIN),
            sealed_through,
            runs,
        );
        each_run_id(tree, |id| {
            loaded.admit(id);
        })?;
        for (id, p) in unsealed_pairs {
            if p > sealed_through {
                loaded.admit(&id);
                loaded.unsealed.push(&id, p);
            }
        }
        Ok(loaded)
    }

    /// The lookup, built on first use.
    fn loaded(&mut self, index: &Index) -> Result<&mut Loaded, ReadError> {
        let loaded = match self.loaded.take() {
            Some(l) => l,
            None => Self::load(index).map_err(|e| index.read_error(e))?,
        };
        Ok(self.loaded.insert(loaded))
    }

    /// Whether the log may hold an event with this id: `false` for almost every new id
    /// (then it surely does not). The id is remembered either way, so a later lookup of it
    /// (a retry, or the same id staged in this group) answers `true`.
    pub(crate) fn may_hold(&mut self, index: &Index, id: &EventId) -> Result<bool, ReadError> {
        Ok(self.loaded(index)?.admit(id))
    }

    /// The position of the event with this id, if the log holds it up to the committed head
    /// (asked after [`IdLookup::may_hold`] answered `true`).
    pub(crate) fn position(
        &mut self,
        index: &Index,
        id: &EventId,
    ) -> Result<Option<Position>, ReadError> {
        let loaded = self.loaded(index)?;
        let sealed = index.sealed_through();
        if sealed > loaded.sealed_through {
            // The indexer sealed a run: its ids are in sled now.
            loaded.runs = runs(index.tree())
                .map_err(|e| index.read_error(e))?
                .into_iter()
                .map(|(p, _)| p)
                .collect();
            loaded.unsealed.drop_through(sealed);
            loaded.sealed_through = sealed;
        }
        if let Some(p) = loaded.unsealed.get(id) {
            return Ok(Some(p));
        }
        for run in loaded.runs.iter().rev() {
            let found = run_position(index.tree(), *run, id).map_err(|e| match e {
                IndexError::Malformed(_) => {
                    index.damaged(Corruption::MalformedIdEntry { event_id: *id })
                }
                e => index.read_error(e),
            })?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Adds a committed group's ids (the filters hold them already: every staged id was
    /// looked up first). The lookup is built before the first group is staged, so it is
    /// never asked to add to a lookup not yet built.
    pub(crate) fn add(&mut self, ids: &[(EventId, Position)]) {
        if let Some(loaded) = self.loaded.as_mut() {
            for (id, p) in ids {
                loaded.unsealed.push(id, *p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> EventId {
        EventId(uuid::Uuid::from_u128(
            n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835),
        ))
    }

    fn temp_tree() -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.open_tree("index").unwrap()
    }

    #[test]
    fn sealed_runs_find_every_id_and_only_those() {
        let tree = temp_tree();
        let mut next = 1u64;
        let mut runs_made = Vec::new();
        for _ in 0..3 {
            let ids: Vec<_> = (0..5_000u64)
                .map(|i| (id(u128::from(next + i)), Position(next + i)))
                .collect();
            next += 5_000;
            for (k, v) in chunk_entries(&ids) {
                tree.insert(k, v).unwrap();
            }
            assert_eq!(chunk_pair_count(&tree).unwrap(), 5_000);
            runs_made.push(seal(&tree).unwrap().unwrap());
            assert_eq!(chunk_pair_count(&tree).unwrap(), 0);
        }
        let listed = runs(&tree).unwrap();
        assert_eq!(
            listed.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            runs_made
        );
        assert!(listed.iter().all(|(_, count)| *count == 5_000));
        for n in 1..next {
            let want = Some(Position(n));
            let run = runs_made[usize::try_from((n - 1) / 5_000).unwrap()];
            assert_eq!(run_position(&tree, run, &id(u128::from(n))).unwrap(), want);
        }
        for run in &runs_made {
            assert_eq!(run_position(&tree, *run, &id(0)).unwrap(), None);
            assert_eq!(run_position(&tree, *run, &id(99_999)).unwrap(), None);
        }
        let mut seen = 0;
        each_run_id(&tree, |_| seen += 1).unwrap();
        assert_eq!(seen, 15_000);
        assert_eq!(seal(&tree).unwrap(), None);
    }

    #[test]
    fn a_malformed_entry_is_reported_not_misread() {
        let tree = temp_tree();
        tree.insert(position_key(CHUNK_PREFIX, Position(3)), vec![0u8; 23])
            .unwrap();
        assert!(matches!(chunk_pairs(&tree), Err(IndexError::Malformed(_))));
        assert!(matches!(seal(&tree), Err(IndexError::Malformed(_))));
    }

    impl Loaded {
        /// Whether the filters may hold `id`, without adding it.
        fn holds(&self, id: &EventId) -> bool {
            let hash = self.keys.hash_one(id.0.as_u128());
            self.filters.iter().any(|f| f.bloom.contains_hash(hash))
        }
    }

    #[test]
    fn filters_grow_and_keep_every_id() {
        let mut loaded = Loaded::new(1_000, Position::ZERO, Vec::new());
        let mut admitted_as_known = 0;
        for n in 0..5_000 {
            if loaded.admit(&id(n)) {
                admitted_as_known += 1;
            }
        }
        assert!(
            admitted_as_known < 50,
            "{admitted_as_known} of 5,000 new ids"
        );
        assert!(loaded.filters.len() >= 3);
        assert!((0..5_000).all(|n| loaded.holds(&id(n))));
        assert!(
            (0..5_000).all(|n| loaded.admit(&id(n))),
            "a second look finds every id"
        );
        let false_hits = (10_000..110_000).filter(|n| loaded.holds(&id(*n))).count();
        assert!(false_hits < 1_000, "{false_hits} false hits in 100,000");
    }

    #[test]
    fn the_unsealed_list_finds_every_id_and_drops_sealed_stretches() {
        let mut list = Unsealed::default();
        let count = SORTED_PAIRS * 3 + SORTED_PAIRS / 2;
        for n in 1..=count {
            let n = u64::try_from(n).unwrap();
            list.push(&id(u128::from(n)), Position(n));
        }
        assert_eq!(list.sorted, SORTED_PAIRS * 3);
        for n in 1..=count {
            let n = u64::try_from(n).unwrap();
            assert_eq!(list.get(&id(u128::from(n))), Some(Position(n)));
        }
        assert_eq!(list.get(&id(0)), None);
        assert_eq!(list.get(&id(u128::MAX)), None);
        // Sealed through the middle of the second stretch: the first is dropped, the
        // second stays whole, and every id above the seal is still found.
        let sealed = u64::try_from(SORTED_PAIRS + 10).unwrap();
        list.drop_through(Position(sealed));
        assert_eq!(list.len(), count - SORTED_PAIRS);
        for n in sealed + 1..=u64::try_from(count).unwrap() {
            assert_eq!(list.get(&id(u128::from(n))), Some(Position(n)));
        }
        assert_eq!(list.get(&id(1)), None);
        // Sealed through everything.
        list.drop_through(Position(u64::MAX));
        assert_eq!(list.len(), 0);
        list.push(&id(7), Position(u64::MAX));
        assert_eq!(list.get(&id(7)), Some(Position(u64::MAX)));
    }
}
