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
//! open, so a process that only reads never holds it): a Bloom filter of every id in the
//! log, which answers "new id" for almost every append without touching sled, and a map of
//! the ids not yet sealed. A filter hit is confirmed in that map, then in the runs from the
//! newest, one range read each.
//!
//! **Architecture Invariant:** the writer's filter and map hold every id at or below the
//! committed head: the lookup is built from sled before the first group of the instance is
//! staged (the open indexed the whole log), and every committed group's ids are added before
//! the next group is staged. Sealing moves ids from chunks to a run in one atomic batch, and
//! the writer drops them from its map only after that batch is applied.

use std::collections::HashMap;

use fastbloom::BloomFilter;

use super::index::{u64_at, Index, IndexError};
use crate::error::{Corruption, ReadError};
use crate::types::{EventId, Position};

/// Most pairs one chunk entry holds.
pub(crate) const CHUNK_PAIRS_MAX: usize = 8_192;
/// Pairs in the chunks at which the indexer seals them into a run.
#[cfg(not(test))]
pub(crate) const RUN_PAIRS: usize = 1 << 18;
/// Small in unit tests, so that a few thousand appends cross several runs.
#[cfg(test)]
pub(crate) const RUN_PAIRS: usize = 1_000;
/// Most pairs one block of a run holds.
const BLOCK_PAIRS_MAX: usize = 2_048;
/// Bytes of one (id, position) pair.
const PAIR_BYTES: usize = 24;
/// False positive rate of each Bloom filter of the writer's lookup.
const FILTER_FALSE_POSITIVE_RATE: f64 = 0.001;
/// Fewest ids the first filter is sized for.
const FILTER_CAPACITY_MIN: usize = 1 << 20;
/// The filters' hash seed (fixed: a filter never leaves the process, but runs are repeatable).
const FILTER_SEED: u128 = 0x6372_6d2d_6964_732d_6669_6c74_6572_2d31;

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
    bloom: BloomFilter,
    items: usize,
    capacity: usize,
}

impl Filter {
    fn new(capacity: usize) -> Filter {
        Filter {
            bloom: BloomFilter::with_false_pos(FILTER_FALSE_POSITIVE_RATE)
                .seed(&FILTER_SEED)
                .expected_items(capacity),
            items: 0,
            capacity,
        }
    }
}

/// The writer's id lookup, once built.
struct Loaded {
    /// Filters of growing size (a new one, twice the last, when the last is full); an id
    /// is in the log only if one of them may hold it.
    filters: Vec<Filter>,
    /// The ids above `sealed_through`.
    unsealed: HashMap<EventId, Position>,
    sealed_through: Position,
    /// The runs, oldest first.
    runs: Vec<Position>,
}

impl Loaded {
    fn may_hold(&self, id: &EventId) -> bool {
        self.filters.iter().any(|f| f.bloom.contains(&id.0))
    }

    fn insert(&mut self, id: &EventId) {
        let full = self.filters.last().is_none_or(|f| f.items >= f.capacity);
        if full {
            let capacity = self
                .filters
                .last()
                .map_or(FILTER_CAPACITY_MIN, |f| f.capacity.saturating_mul(2));
            self.filters.push(Filter::new(capacity));
        }
        if let Some(f) = self.filters.last_mut() {
            f.bloom.insert(&id.0);
            f.items += 1;
        }
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
        let mut loaded = Loaded {
            filters: vec![Filter::new(
                total.saturating_mul(2).max(FILTER_CAPACITY_MIN),
            )],
            unsealed: HashMap::with_capacity(unsealed_pairs.len()),
            sealed_through,
            runs,
        };
        each_run_id(tree, |id| loaded.insert(id))?;
        for (id, p) in unsealed_pairs {
            if p > sealed_through {
                loaded.insert(&id);
                loaded.unsealed.insert(id, p);
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

    /// The position of the event with this id, if the log holds it.
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
            loaded.unsealed.retain(|_, p| *p > sealed);
            loaded.sealed_through = sealed;
        }
        if !loaded.may_hold(id) {
            return Ok(None);
        }
        if let Some(p) = loaded.unsealed.get(id) {
            return Ok(Some(*p));
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

    /// Adds a committed group's ids. The lookup is built before the first group is
    /// staged, so it is never asked to add to a lookup not yet built.
    pub(crate) fn add(&mut self, ids: &[(EventId, Position)]) {
        if let Some(loaded) = self.loaded.as_mut() {
            for (id, p) in ids {
                loaded.insert(id);
                loaded.unsealed.insert(*id, *p);
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

    #[test]
    fn filters_grow_and_keep_every_id() {
        let mut loaded = Loaded {
            filters: vec![Filter::new(1_000)],
            unsealed: HashMap::new(),
            sealed_through: Position::ZERO,
            runs: Vec::new(),
        };
        for n in 0..5_000 {
            loaded.insert(&id(n));
        }
        assert!(loaded.filters.len() >= 3);
        assert!((0..5_000).all(|n| loaded.may_hold(&id(n))));
        let false_hits = (10_000..110_000)
            .filter(|n| loaded.may_hold(&id(*n)))
            .count();
        assert!(false_hits < 1_000, "{false_hits} false hits in 100,000");
    }
}
