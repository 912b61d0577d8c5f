//! A read model's keyed collection (cases by id, subscriptions by id, ...) whose memory is
//! bounded by a budget, not by the history folded: the entries touched most recently are
//! held in memory, the rest in sorted files on disk.
//!
//! The part in memory has two generations. A fold reads and writes entries in `young`; an
//! entry found in `old` or on disk is moved into `young` first. When `young` reaches its
//! bound, `old` is written to disk as a run (a sorted file, [`run`]), `young` becomes `old`
//! and a new `young` starts. So an entry touched within the last bound's worth of distinct
//! entries stays in memory, and at most two generations are held. A removed entry leaves a
//! tombstone, which hides the key's older copies on disk until a merge drops them.
//!
//! Runs are merged as they accumulate ([`RUNS_PER_LEVEL`] runs of one level become one run
//! of the next), so a table of `n` entries on disk has about `RUNS_PER_LEVEL × log(n)`
//! runs, and a lookup asks each run's Bloom filter before it reads a block. In memory a run
//! keeps about 2.5 bytes per entry.
//!
//! The runs are scratch space, not state of record: they live in a temporary directory of
//! the table's own, removed when the table is dropped, and are never read by another table
//! or process. The snapshot file stays the projection's only durable form: a table
//! serializes as a map in key order. In JSON it is exactly the `BTreeMap` it replaced; in a
//! binary format (a snapshot) each value is a byte string of its encoding in a run, so the
//! values on disk are copied into the snapshot and back into a run as they are, never
//! decoded (snapshot format 3 held them inline: `with_inline_values` still reads it).
//! Loading a snapshot fills a new table's `young` with the first generation's worth of
//! entries and streams the rest, already in key order, into one run at the level that merging
//! runs of one generation would have reached, so a load writes each entry once and merges
//! nothing.
//!
//! A run that cannot be written or read back (a full or failing disk) makes the table
//! faulty: the failure is recorded ([`Table::fault`]), a lookup that could not complete
//! answers nothing, and the projection's worker, which checks the fault after every page it
//! folds, drops the state and folds again from its last snapshot; the runner refuses a
//! report made from a faulty table ([`crate::ProjectionHandle::read_checked`]), and saving
//! its snapshot fails, so a half-spilled state is never served or saved.

mod run;
mod sorted;

use std::borrow::Cow;
use std::cell::Cell;
#[cfg(test)]
use std::collections::BTreeMap;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::iter::Peekable;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, RwLock};

use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::shared::Text;
use run::{key_hash, Merged, Run};
pub use sorted::{Finished, FinishedIter, Grouped, Sorted, SortedError};

/// Default memory of one generation of one table, in bytes (estimated from the entry's
/// size; text and lists an entry owns on the heap are not counted). Measured over 10 M
/// events (README): 2 MiB generations catch up in 198–200 MiB, 4 MiB ones in 285–293 MiB,
/// in the same time within 2–4 %.
pub const GENERATION_BYTES_DEFAULT: usize = 2 * 1024 * 1024;

/// Fewest entries a generation holds, whatever the budget.
const GENERATION_ENTRIES_MIN: usize = 16;

/// Runs of one level merged into one run of the next.
pub const RUNS_PER_LEVEL: usize = 4;
/// Most entries the Bloom filter of a run written while loading a saved table is sized for.
const LOADED_RUN_ENTRIES_MAX: usize = 1 << 26;

/// Spill directories are named `crm-spill-<process id>-<random>`.
const SPILL_PREFIX: &str = "crm-spill-";

static GENERATION_BYTES: AtomicUsize = AtomicUsize::new(GENERATION_BYTES_DEFAULT);
static SPILL_DIR: RwLock<Option<PathBuf>> = RwLock::new(None);

/// Sets the memory of one generation of each table created from now on (a table holds at
/// most two), in bytes.
pub fn set_generation_bytes(bytes: usize) {
    GENERATION_BYTES.store(bytes.max(1), Ordering::Relaxed);
}

/// The memory of one generation of a table, in bytes.
#[must_use]
pub fn generation_bytes() -> usize {
    GENERATION_BYTES.load(Ordering::Relaxed)
}

/// Sets the directory spill directories are created in; the system's temporary directory
/// until set.
pub fn set_spill_dir(dir: PathBuf) {
    if let Ok(mut slot) = SPILL_DIR.write() {
        *slot = Some(dir);
    }
}

fn spill_dir() -> PathBuf {
    SPILL_DIR
        .read()
        .ok()
        .and_then(|d| d.clone())
        .unwrap_or_else(std::env::temp_dir)
}

/// Removes the spill directories in `dir` of processes that no longer run (a process killed
/// before it could remove its own). Where processes cannot be looked up (no `/proc`), none
/// is removed.
pub fn remove_abandoned_spills(dir: &Path) {
    let proc_dir = Path::new("/proc");
    if !proc_dir.join("self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SPILL_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .filter(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if !proc_dir.join(pid).exists() {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e, "could not remove an abandoned spill directory");
            }
        }
    }
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Why a generation could not be written to disk (recorded as the table's fault), or a value
/// encoded for a snapshot.
#[derive(Debug, thiserror::Error)]
enum SpillError {
    #[error("creating the spill directory {}: {source}", path.display())]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("creating a spill directory in {}: {source}", path.display())]
    TableDirectory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the entry `{key}` could not be encoded: {source}")]
    Encode {
        key: Text,
        source: bincode::error::EncodeError,
    },
    #[error("writing the run {}: {source}", path.display())]
    Run {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("merging runs: {0}")]
    Merge(std::io::Error),
}

/// The runs of a table and the temporary directory they are in.
struct Disk {
    dir: tempfile::TempDir,
    /// Oldest first.
    runs: Vec<Run>,
    next_file: u64,
}

impl Disk {
    fn open(base: Option<&Path>) -> Result<Disk, SpillError> {
        let base = base.map_or_else(spill_dir, Path::to_path_buf);
        if let Err(source) = std::fs::create_dir_all(&base) {
            return Err(SpillError::Directory { path: base, source });
        }
        let prefix = format!("{SPILL_PREFIX}{}-", std::process::id());
        let dir = match tempfile::Builder::new().prefix(&prefix).tempdir_in(&base) {
            Ok(dir) => dir,
            Err(source) => return Err(SpillError::TableDirectory { path: base, source }),
        };
        Ok(Disk {
            dir,
            runs: Vec::new(),
            next_file: 0,
        })
    }

    fn next_path(&mut self) -> PathBuf {
        self.next_file += 1;
        self.dir.path().join(format!("run-{}", self.next_file))
    }

    /// Entries and tombstones in the runs, counted per run.
    fn entries(&self) -> usize {
        self.runs.iter().map(|r| r.entries).sum()
    }

    /// Writes `encoded` (sorted: strictly ascending keys) as a new run of level 0, the
    /// newest; merging is left to [`Disk::compact`].
    fn push_run(&mut self, encoded: &Encoded<'_>) -> Result<(), SpillError> {
        let run = self.write_run(0, encoded.entries.len(), encoded.iter())?;
        self.runs.push(run);
        Ok(())
    }

    /// Writes a new run file of `level` (see [`Run::write`]); a failure names its path.
    fn write_run<K: AsRef<str>, B: AsRef<[u8]>>(
        &mut self,
        level: u32,
        count: usize,
        entries: impl Iterator<Item = (K, Option<B>)>,
    ) -> Result<Run, SpillError> {
        let path = self.next_path();
        Run::write(&path, level, count, entries).map_err(|source| SpillError::Run { path, source })
    }

    /// Writes `entries` (live, in strictly ascending key order, about `count` of them) as
    /// one run, the oldest, at the level merging runs of `generation_entries` would have
    /// given it: a saved table is loaded without the merges of one run per generation.
    /// Returns the entries written.
    fn push_loaded<K: AsRef<str>>(
        &mut self,
        generation_entries: usize,
        count: usize,
        entries: impl Iterator<Item = (K, Option<Vec<u8>>)>,
    ) -> Result<usize, SpillError> {
        let mut level = 0u32;
        let mut reach = generation_entries.max(1);
        while reach < count {
            reach = reach.saturating_mul(RUNS_PER_LEVEL);
            level = level.saturating_add(1);
        }
        let run = self.write_run(level, count, entries)?;
        let written = run.entries;
        self.runs.insert(0, run);
        Ok(written)
    }

    /// The newest entry of `key` on disk: `Some(Some(bytes))` live, `Some(None)` removed.
    fn get(&self, key: &str) -> std::io::Result<Option<Option<Vec<u8>>>> {
        let hash = key_hash(key);
        for run in self.runs.iter().rev() {
            if let Some(found) = run.get(key, hash)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Merges the newest runs while [`RUNS_PER_LEVEL`] of them share a level. Tombstones
    /// are dropped when the merge includes the oldest run (nothing older can hold the key).
    fn compact(&mut self) -> std::io::Result<()> {
        loop {
            let n = self.runs.len();
            let Some(level) = self.runs.last().map(|r| r.level) else {
                return Ok(());
            };
            let same = self
                .runs
                .iter()
                .rev()
                .take_while(|r| r.level == level)
                .count();
            if same < RUNS_PER_LEVEL {
                return Ok(());
            }
            let from = n - same;
            let includes_oldest = from == 0;
            let count: usize = self.runs.iter().skip(from).map(|r| r.entries).sum();
            let path = self.next_path();
            let merged = {
                let mut source = Merged::new(self.runs.iter().skip(from).rev())?;
                let mut failure = None;
                let entries = std::iter::from_fn(|| match source.next_entry() {
                    Ok(entry) => entry,
                    Err(e) => {
                        failure = Some(e);
                        None
                    }
                })
                .filter(|(_, v)| !(includes_oldest && v.is_none()));
                let run = Run::write(&path, level + 1, count, entries);
                if let Some(e) = failure {
                    return Err(e);
                }
                run?
            };
            self.runs.truncate(from);
            self.runs.push(merged);
        }
    }
}

/// Reads the next entry of `disk` into `head` when `head` is empty. `disk` becomes `None`
/// at its end, and on an error, which is returned.
fn refill(disk: &mut Option<Merged<'_>>, head: &mut Option<run::Entry>) -> std::io::Result<()> {
    if head.is_some() {
        return Ok(());
    }
    if let Some(merged) = disk.as_mut() {
        match merged.next_entry() {
            Ok(Some(entry)) => *head = Some(entry),
            Ok(None) => *disk = None,
            Err(e) => {
                *disk = None;
                return Err(e);
            }
        }
    }
    Ok(())
}

/// A run's worth of entries, their values encoded one after another into one buffer (an
/// allocation per run, not per value).
struct Encoded<'k> {
    bytes: Vec<u8>,
    /// Key and the range of `bytes` holding its value; `None` for a tombstone.
    entries: Vec<(&'k str, Option<std::ops::Range<usize>>)>,
}

impl<'k> Encoded<'k> {
    fn with_capacity(entries: usize) -> Self {
        Encoded {
            bytes: Vec::new(),
            entries: Vec::with_capacity(entries),
        }
    }

    /// Adds `value`, the entry of `key`, as a run holds it.
    fn push<V: Serialize>(&mut self, key: &'k str, value: &V) -> Result<(), SpillError> {
        let start = self.bytes.len();
        encode_value_into(key, value, &mut self.bytes)?;
        self.entries.push((key, Some(start..self.bytes.len())));
        Ok(())
    }

    fn push_tombstone(&mut self, key: &'k str) {
        self.entries.push((key, None));
    }

    fn sort(&mut self) {
        self.entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    }

    /// The entries with their values' bytes, in the order held.
    fn iter(&self) -> impl Iterator<Item = (&'k str, Option<&[u8]>)> + '_ {
        self.entries.iter().map(|(key, range)| {
            let value = range.clone().map(|r| self.bytes.get(r).unwrap_or_default());
            (*key, value)
        })
    }
}

/// Appends to `out` the bytes of `value`, the entry of `key`, as a run holds them.
fn encode_value_into<V: Serialize>(
    key: &str,
    value: &V,
    out: &mut Vec<u8>,
) -> Result<(), SpillError> {
    bincode::serde::encode_into_std_write(value, out, bincode_config())
        .map(|_| ())
        .map_err(|source| SpillError::Encode {
            key: key.into(),
            source,
        })
}

/// The value whose bytes a run holds (as [`encode_value_into`] wrote them).
fn decode_value<V: DeserializeOwned>(bytes: &[u8]) -> Result<V, bincode::error::DecodeError> {
    bincode::serde::decode_from_slice::<V, _>(bytes, bincode_config()).map(|(v, _)| v)
}

/// A generation in memory (hashed: its order is made when it is listed or spilled).
type Map<V> = HashMap<Text, V, foldhash::fast::RandomState>;
/// Tombstones of a generation.
type Set = HashSet<Text, foldhash::fast::RandomState>;

/// A map from text keys to `V`, in key order, with a bounded part in memory (see the module
/// documentation).
pub struct Table<V> {
    young: Map<V>,
    /// Tombstones of removed entries, as young as `young`.
    young_gone: Set,
    old: Map<V>,
    old_gone: Set,
    disk: Option<Disk>,
    /// Live entries in all parts.
    len: usize,
    /// `young` is rotated when it holds this many entries and tombstones.
    generation_entries: usize,
    /// The first spill failure; the table's content is not to be trusted after it.
    fault: OnceLock<String>,
    /// Where this table's spill directory goes instead of the process's (tests).
    spill_base: Option<PathBuf>,
}

/// Entries of `entry_bytes` each (estimated) that one generation holds.
fn entries_per_generation(entry_bytes: usize) -> usize {
    (generation_bytes() / entry_bytes.max(1)).max(GENERATION_ENTRIES_MIN)
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        let entry_bytes = std::mem::size_of::<(Text, V)>().saturating_add(16);
        Table {
            young: Map::default(),
            young_gone: Set::default(),
            old: Map::default(),
            old_gone: Set::default(),
            disk: None,
            len: 0,
            generation_entries: entries_per_generation(entry_bytes),
            fault: OnceLock::new(),
            spill_base: None,
        }
    }
}

impl<V: Serialize + DeserializeOwned + Clone> Table<V> {
    /// An empty table.
    #[must_use]
    pub fn new() -> Self {
        Table::default()
    }

    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries and tombstones held on disk, counted per run.
    #[must_use]
    pub fn spilled(&self) -> usize {
        self.disk.as_ref().map_or(0, Disk::entries)
    }

    /// The first spill failure, if any: the content is then incomplete.
    #[must_use]
    pub fn fault(&self) -> Option<&str> {
        self.fault.get().map(String::as_str)
    }

    fn record(&self, what: impl FnOnce() -> String) {
        let _ = self.fault.set(what());
    }

    fn decode(&self, key: &str, bytes: &[u8]) -> Option<V> {
        match decode_value(bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                self.record(|| format!("the spilled entry `{key}` could not be read back: {e}"));
                None
            }
        }
    }

    /// The newest entry of `key` on disk, decoded; `None` when absent or removed.
    fn on_disk(&self, key: &str) -> Option<V> {
        let disk = self.disk.as_ref()?;
        match disk.get(key) {
            Ok(Some(Some(bytes))) => self.decode(key, &bytes),
            Ok(_) => None,
            Err(e) => {
                self.record(|| format!("reading `{key}` from the spill directory failed: {e}"));
                None
            }
        }
    }

    /// The entry of `key`.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<Cow<'_, V>> {
        if let Some(v) = self.young.get(key) {
            return Some(Cow::Borrowed(v));
        }
        if self.young_gone.contains(key) {
            return None;
        }
        if let Some(v) = self.old.get(key) {
            return Some(Cow::Borrowed(v));
        }
        if self.old_gone.contains(key) {
            return None;
        }
        self.on_disk(key).map(Cow::Owned)
    }

    /// Whether `key` has an entry.
    #[must_use]
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Takes the live entry of `key` (not in `young`) out of `old` or the disk, to move it
    /// into `young`. Tombstones stay where they are (they hide older copies on disk).
    fn take_cold(&mut self, key: &str) -> Option<V> {
        if self.young_gone.contains(key) || self.old_gone.contains(key) {
            return None;
        }
        if let Some(v) = self.old.remove(key) {
            return Some(v);
        }
        self.on_disk(key)
    }

    /// Makes room in `young` for one more entry: when it is full, `old` is written to disk
    /// as a run and `young` becomes `old`. On a spill failure both stay in memory (over the
    /// bound) and the table is faulty.
    fn make_room(&mut self) {
        if self.young.len().saturating_add(self.young_gone.len()) < self.generation_entries {
            return;
        }
        if self.fault().is_some() {
            // Not tried again until the state is reloaded: every entry stays in memory.
            return;
        }
        if !(self.old.is_empty() && self.old_gone.is_empty()) {
            if let Err(e) = self.spill_old() {
                self.record(|| format!("writing to the spill directory failed: {e}"));
                return;
            }
        }
        // `old` is empty now: it becomes the new `young`, keeping its allocation.
        std::mem::swap(&mut self.old, &mut self.young);
        std::mem::swap(&mut self.old_gone, &mut self.young_gone);
        // A table that filled a generation fills the next: sized once (the first time, when
        // `old` had no allocation yet) instead of grown by doubling, rehashing and moving its
        // entries at every step; a generation's worth of entries is what growing reaches.
        self.young.reserve(self.generation_entries);
    }

    /// Writes `old` and its tombstones to disk as one run, then merges runs as due.
    fn spill_old(&mut self) -> Result<(), SpillError> {
        if self.disk.is_none() {
            self.disk = Some(Disk::open(self.spill_base.as_deref())?);
        }
        let count = self.old.len().saturating_add(self.old_gone.len());
        let mut encoded = Encoded::with_capacity(count);
        for (key, value) in &self.old {
            encoded.push(key.as_str(), value)?;
        }
        // A key both live and removed in one generation is live (put back after).
        for key in &self.old_gone {
            if !self.old.contains_key(key.as_str()) {
                encoded.push_tombstone(key.as_str());
            }
        }
        encoded.sort();
        let Some(disk) = self.disk.as_mut() else {
            return Ok(());
        };
        disk.push_run(&encoded)?;
        // On disk now: a failed merge below leaves the runs it read as they were.
        self.old.clear();
        self.old_gone.clear();
        disk.compact().map_err(SpillError::Merge)
    }

    /// The entry of `key`, to change in place.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        if !self.young.contains_key(key) {
            let value = self.take_cold(key)?;
            self.make_room();
            return Some(self.young.entry(Text::from(key)).or_insert(value));
        }
        self.young.get_mut(key)
    }

    /// The entry of `key`, made with `make` when there is none.
    pub fn get_or_insert_with(&mut self, key: &str, make: impl FnOnce() -> V) -> &mut V {
        if !self.young.contains_key(key) {
            let value = match self.take_cold(key) {
                Some(value) => value,
                None => {
                    self.len = self.len.saturating_add(1);
                    make()
                }
            };
            self.young_gone.remove(key);
            self.make_room();
            return self.young.entry(Text::from(key)).or_insert(value);
        }
        self.young.entry(Text::from(key)).or_insert_with(make)
    }

    /// The entry of `key`, the default value when there is none.
    pub fn get_or_default(&mut self, key: &str) -> &mut V
    where
        V: Default,
    {
        self.get_or_insert_with(key, V::default)
    }

    /// Sets the entry of `key`; returns the one it replaces.
    pub fn insert(&mut self, key: Text, value: V) -> Option<V> {
        if let Some(slot) = self.young.get_mut(key.as_str()) {
            // A key in `young` has no tombstone in `young_gone`.
            return Some(std::mem::replace(slot, value));
        }
        let previous = self.take_cold(&key);
        if previous.is_none() {
            self.len = self.len.saturating_add(1);
        }
        self.young_gone.remove(key.as_str());
        self.make_room();
        self.young.insert(key, value);
        previous
    }

    /// Removes the entry of `key`; returns it.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        let removed = match self.young.remove(key) {
            Some(v) => Some(v),
            None => self.take_cold(key),
        };
        if removed.is_some() {
            self.len = self.len.saturating_sub(1);
            if self.disk.is_some() {
                // An older copy may be on disk: hide it.
                self.make_room();
                self.young_gone.insert(Text::from(key));
            }
        }
        removed
    }

    /// Adds an entry known to be new (loading a serialized map, whose keys are unique).
    fn push_new(&mut self, key: Text, value: V) {
        self.make_room();
        if self.young.insert(key, value).is_none() {
            self.len = self.len.saturating_add(1);
        }
    }

    /// Every entry, in key order (entries on disk are read back as they are reached).
    pub fn iter(&self) -> Iter<'_, V> {
        Iter {
            entries: self.entries(),
        }
    }

    /// Every entry in key order, as held: a value in memory, or a value's bytes on disk.
    fn entries(&self) -> Entries<'_, V> {
        let disk = match self.disk.as_ref().map(|d| Merged::new(d.runs.iter().rev())) {
            Some(Ok(merged)) => Some(merged),
            Some(Err(e)) => {
                self.record(|| format!("reading the spill directory failed: {e}"));
                None
            }
            None => None,
        };
        Entries {
            table: self,
            young: sorted_entries(&self.young).into_iter().peekable(),
            young_gone: sorted_keys(&self.young_gone).into_iter().peekable(),
            old: sorted_entries(&self.old).into_iter().peekable(),
            old_gone: sorted_keys(&self.old_gone).into_iter().peekable(),
            disk,
            disk_head: None,
        }
    }

    /// Every value, in key order.
    pub fn values(&self) -> impl Iterator<Item = Cow<'_, V>> {
        self.iter().map(|(_, v)| v)
    }

    /// Lookups of keys asked in ascending order, answered by one pass over the entries
    /// (a merge join): each entry is read once, from memory or disk, however many are asked.
    #[must_use]
    pub fn ascending(&self) -> Ascending<'_, V> {
        Ascending {
            entries: self.iter().peekable(),
        }
    }
}

/// See [`Table::ascending`].
pub struct Ascending<'a, V: Serialize + DeserializeOwned + Clone> {
    entries: Peekable<Iter<'a, V>>,
}

impl<'a, V: Serialize + DeserializeOwned + Clone> Ascending<'a, V> {
    /// The entry of `key`, which must not be below a key asked before (entries passed over
    /// are not read again).
    pub fn get(&mut self, key: &str) -> Option<Cow<'a, V>> {
        while self.entries.next_if(|(k, _)| k.as_ref() < key).is_some() {}
        self.entries
            .next_if(|(k, _)| k.as_ref() == key)
            .map(|(_, value)| value)
    }
}

fn sorted_entries<V>(map: &Map<V>) -> Vec<(&str, &V)> {
    let mut entries: Vec<(&str, &V)> = map.iter().map(|(k, v)| (k.as_str(), v)).collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    entries
}

fn sorted_keys(set: &Set) -> Vec<&str> {
    let mut keys: Vec<&str> = set.iter().map(Text::as_str).collect();
    keys.sort_unstable();
    keys
}

/// The entries of a [`Table`] in key order: a merge of its generations, their tombstones
/// and its runs on disk, the youngest entry of each key winning.
struct Entries<'a, V> {
    table: &'a Table<V>,
    young: Peekable<std::vec::IntoIter<(&'a str, &'a V)>>,
    young_gone: Peekable<std::vec::IntoIter<&'a str>>,
    old: Peekable<std::vec::IntoIter<(&'a str, &'a V)>>,
    old_gone: Peekable<std::vec::IntoIter<&'a str>>,
    disk: Option<Merged<'a>>,
    /// The disk's next entry, read ahead.
    disk_head: Option<(String, Option<Vec<u8>>)>,
}

/// A value as a table holds it: in memory, or encoded on disk (read back).
enum Held<'a, V> {
    Memory(&'a V),
    Disk(Vec<u8>),
}

impl<'a, V: Serialize + DeserializeOwned + Clone> Iterator for Entries<'a, V> {
    type Item = (Cow<'a, str>, Held<'a, V>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Err(e) = refill(&mut self.disk, &mut self.disk_head) {
                let e = e.to_string();
                self.table
                    .record(|| format!("reading the spill directory failed: {e}"));
            }
            // The smallest key of the five heads (ties go to the youngest source), and
            // which heads hold it.
            let (rank, advance) = {
                let heads: [Option<&str>; 5] = [
                    self.young.peek().map(|(k, _)| *k),
                    self.young_gone.peek().copied(),
                    self.old.peek().map(|(k, _)| *k),
                    self.old_gone.peek().copied(),
                    self.disk_head.as_ref().map(|(k, _)| k.as_str()),
                ];
                // One comparison per head: a smaller key starts the set of heads to
                // advance over, an equal one joins it.
                let mut best: Option<(usize, &str)> = None;
                let mut advance = [false; 5];
                for (rank, head) in heads.iter().enumerate() {
                    let Some(key) = head else { continue };
                    match best.map(|(_, b)| key.cmp(&b)) {
                        None | Some(std::cmp::Ordering::Less) => {
                            best = Some((rank, key));
                            advance = [false; 5];
                            advance[rank] = true;
                        }
                        Some(std::cmp::Ordering::Equal) => advance[rank] = true,
                        Some(std::cmp::Ordering::Greater) => {}
                    }
                }
                let (rank, _) = best?;
                (rank, advance)
            };
            let mut item: Option<Self::Item> = None;
            if advance[0] {
                if let Some((k, v)) = self.young.next() {
                    if rank == 0 {
                        item = Some((Cow::Borrowed(k), Held::Memory(v)));
                    }
                }
            }
            if advance[1] {
                self.young_gone.next();
            }
            if advance[2] {
                if let Some((k, v)) = self.old.next() {
                    if rank == 2 {
                        item = Some((Cow::Borrowed(k), Held::Memory(v)));
                    }
                }
            }
            if advance[3] {
                self.old_gone.next();
            }
            if advance[4] {
                if let Some((k, bytes)) = self.disk_head.take() {
                    if rank == 4 {
                        if let Some(bytes) = bytes {
                            item = Some((Cow::Owned(k), Held::Disk(bytes)));
                        }
                    }
                }
            }
            if let Some(item) = item {
                return Some(item);
            }
            // The youngest entry of this key is a tombstone: go on.
        }
    }
}

/// The entries of a [`Table`] in key order, values on disk decoded as they are reached.
pub struct Iter<'a, V> {
    entries: Entries<'a, V>,
}

impl<'a, V: Serialize + DeserializeOwned + Clone> Iterator for Iter<'a, V> {
    type Item = (Cow<'a, str>, Cow<'a, V>);

    fn next(&mut self) -> Option<Self::Item> {
        let (key, held) = self.entries.next()?;
        let value = match held {
            Held::Memory(v) => Cow::Borrowed(v),
            // An entry that cannot be read back ends the listing; the table records why.
            Held::Disk(bytes) => Cow::Owned(self.entries.table.decode(&key, &bytes)?),
        };
        Some((key, value))
    }
}

impl<'a, V: Serialize + DeserializeOwned + Clone> IntoIterator for &'a Table<V> {
    type Item = (Cow<'a, str>, Cow<'a, V>);
    type IntoIter = Iter<'a, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<V: Serialize + DeserializeOwned + Clone> FromIterator<(Text, V)> for Table<V> {
    fn from_iter<I: IntoIterator<Item = (Text, V)>>(entries: I) -> Self {
        let mut table = Table::new();
        for (key, value) in entries {
            table.insert(key, value);
        }
        table
    }
}

impl<V: Serialize + DeserializeOwned + Clone> Clone for Table<V> {
    fn clone(&self) -> Self {
        let mut copy = Table::new();
        for (key, value) in self.iter() {
            copy.push_new(Text::from(key.as_ref()), value.into_owned());
        }
        if let Some(fault) = self.fault() {
            copy.record(|| fault.to_owned());
        }
        copy
    }
}

impl<V: Serialize + DeserializeOwned + Clone + PartialEq> PartialEq for Table<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && self
                .iter()
                .zip(other.iter())
                .all(|((ka, va), (kb, vb))| ka == kb && va == vb)
            && self.fault().is_none()
            && other.fault().is_none()
    }
}

impl<V: Serialize + DeserializeOwned + Clone + Eq> Eq for Table<V> {}

impl<V: Serialize + DeserializeOwned + Clone + fmt::Debug> fmt::Debug for Table<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

thread_local! {
    /// Set while a table is read or written in the form of snapshot format 3, each value
    /// inline (see [`with_inline_values`]).
    static INLINE_VALUES: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the tables it reads or writes in a binary format holding each value inline,
/// as snapshot format 3 did, instead of as a byte string of its own encoding.
pub(crate) fn with_inline_values<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            INLINE_VALUES.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(INLINE_VALUES.with(|c| c.replace(true)));
    f()
}

/// Whether a table's values go as byte strings (their encoding in a run): in a binary
/// format, unless [`with_inline_values`] asks for them inline. A human-readable format
/// (JSON) always holds them inline.
fn values_as_bytes(human_readable: bool) -> bool {
    !human_readable && !INLINE_VALUES.with(Cell::get)
}

/// A value's encoding, written as a byte string.
struct AsBytes<'a>(&'a [u8]);

impl Serialize for AsBytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// A value's encoding read back from a byte string, borrowed from the input when it can be.
struct FromBytes<'de>(Cow<'de, [u8]>);

impl<'de> Deserialize<'de> for FromBytes<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;

        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = FromBytes<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the bytes of an encoded value")
            }

            fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Self::Value, E> {
                Ok(FromBytes(Cow::Borrowed(v)))
            }

            fn visit_bytes<E>(self, v: &[u8]) -> Result<Self::Value, E> {
                Ok(FromBytes(Cow::Owned(v.to_vec())))
            }

            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Self::Value, E> {
                Ok(FromBytes(Cow::Owned(v)))
            }
        }

        deserializer.deserialize_bytes(BytesVisitor)
    }
}

impl<V: Serialize + DeserializeOwned + Clone> Serialize for Table<V> {
    /// As a map in key order. In a human-readable format (and in snapshot format 3) the
    /// same bytes as a `BTreeMap` of the entries; in a binary one each value is a byte
    /// string of its encoding in a run, so a value on disk is copied, never decoded and
    /// encoded again. Fails when the table is faulty or an entry on disk cannot be read
    /// back, so an incomplete table is never written.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        if let Some(fault) = self.fault() {
            return Err(S::Error::custom(fault));
        }
        let as_bytes = values_as_bytes(serializer.is_human_readable());
        let mut map = serializer.serialize_map(Some(self.len))?;
        let mut written = 0usize;
        if as_bytes {
            let mut encoded = Vec::new();
            for (key, held) in self.entries() {
                match held {
                    Held::Memory(value) => {
                        encoded.clear();
                        encode_value_into(&key, value, &mut encoded).map_err(S::Error::custom)?;
                        map.serialize_entry(key.as_ref(), &AsBytes(&encoded))?;
                    }
                    Held::Disk(bytes) => map.serialize_entry(key.as_ref(), &AsBytes(&bytes))?,
                }
                written = written.saturating_add(1);
            }
        } else {
            for (key, value) in self.iter() {
                map.serialize_entry(key.as_ref(), value.as_ref())?;
                written = written.saturating_add(1);
            }
        }
        if let Some(fault) = self.fault() {
            return Err(S::Error::custom(fault));
        }
        if written != self.len {
            return Err(S::Error::custom(format!(
                "the table counts {} entries but {written} were read",
                self.len
            )));
        }
        map.end()
    }
}

/// An entry's value as a saved table holds it: inline, or the bytes of its encoding.
enum Saved<'de, V> {
    Value(V),
    Bytes(Cow<'de, [u8]>),
}

impl<V: Serialize + DeserializeOwned> Saved<'_, V> {
    /// The value of `key`, decoded from its bytes if need be.
    fn into_value<E: serde::de::Error>(self, key: &str) -> Result<V, E> {
        match self {
            Saved::Value(v) => Ok(v),
            Saved::Bytes(bytes) => decode_value(&bytes)
                .map_err(|e| E::custom(format!("the value of `{key}` does not decode: {e}"))),
        }
    }

    /// The bytes of the value of `key` as a run holds them, encoded if need be.
    fn into_bytes(self, key: &str) -> Result<Vec<u8>, SpillError> {
        match self {
            Saved::Value(v) => {
                let mut bytes = Vec::new();
                encode_value_into(key, &v, &mut bytes)?;
                Ok(bytes)
            }
            Saved::Bytes(bytes) => Ok(bytes.into_owned()),
        }
    }
}

impl<'de, V: Serialize + DeserializeOwned + Clone> Deserialize<'de> for Table<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TableVisitor<V> {
            as_bytes: bool,
            value: PhantomData<V>,
        }

        impl<'de, V: Serialize + DeserializeOwned + Clone> Visitor<'de> for TableVisitor<V> {
            type Value = Table<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            /// The first generation's worth of entries stays in memory; the rest, already in
            /// key order, is streamed into one run on disk when the format tells how many
            /// entries follow (bincode), which sizes the run's Bloom filter. Values saved as
            /// byte strings go into that run as they are, never decoded.
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Table<V>, A::Error> {
                use serde::de::Error;
                let mut table = Table::new();
                let mut last: Option<Text> = None;
                let as_bytes = self.as_bytes;
                // The next entry; a saved table lists its keys in order, each once.
                let mut next = |access: &mut A| -> Result<Option<(Text, Saved<'de, V>)>, A::Error> {
                    let entry = if as_bytes {
                        access
                            .next_entry::<Text, FromBytes<'de>>()?
                            .map(|(k, v)| (k, Saved::Bytes(v.0)))
                    } else {
                        access
                            .next_entry::<Text, V>()?
                            .map(|(k, v)| (k, Saved::Value(v)))
                    };
                    let Some((key, value)) = entry else {
                        return Ok(None);
                    };
                    if last.as_ref().is_some_and(|l| key <= *l) {
                        return Err(A::Error::custom(format!(
                            "the key `{key}` is out of order or appears twice"
                        )));
                    }
                    last = Some(key.clone());
                    Ok(Some((key, value)))
                };
                while table.young.len() < table.generation_entries {
                    let Some((key, value)) = next(&mut access)? else {
                        return Ok(table);
                    };
                    let value = value.into_value(&key)?;
                    table.push_new(key, value);
                }
                let Some((key, value)) = next(&mut access)? else {
                    return Ok(table);
                };
                let Some(remaining) = access.size_hint() else {
                    // A format that does not tell the map's length (JSON): one run per
                    // generation, merged as they come.
                    let value = value.into_value(&key)?;
                    table.push_new(key, value);
                    while let Some((key, value)) = next(&mut access)? {
                        let value = value.into_value(&key)?;
                        table.push_new(key, value);
                    }
                    return match table.fault() {
                        Some(fault) => Err(A::Error::custom(fault)),
                        None => Ok(table),
                    };
                };
                let spill_failed = |e: SpillError| {
                    A::Error::custom(format!("writing to the spill directory failed: {e}"))
                };
                let mut disk = Disk::open(table.spill_base.as_deref()).map_err(spill_failed)?;
                // The length is the file's word: a damaged one must not size a huge filter
                // (past the cap the filter only answers "maybe" more often).
                let count = remaining.saturating_add(1).min(LOADED_RUN_ENTRIES_MAX);
                let mut failure: Option<A::Error> = None;
                let mut first = Some((key, value));
                let entries = std::iter::from_fn(|| {
                    let (key, value) = match first.take() {
                        Some(entry) => entry,
                        None => match next(&mut access) {
                            Ok(Some(entry)) => entry,
                            Ok(None) => return None,
                            Err(e) => {
                                failure = Some(e);
                                return None;
                            }
                        },
                    };
                    match value.into_bytes(&key) {
                        Ok(bytes) => Some((key, Some(bytes))),
                        Err(e) => {
                            failure = Some(spill_failed(e));
                            None
                        }
                    }
                });
                let written = disk.push_loaded(table.generation_entries, count, entries);
                if let Some(e) = failure {
                    return Err(e);
                }
                let written = written.map_err(spill_failed)?;
                table.len = table.len.saturating_add(written);
                table.disk = Some(disk);
                Ok(table)
            }
        }

        let as_bytes = values_as_bytes(deserializer.is_human_readable());
        deserializer.deserialize_map(TableVisitor {
            as_bytes,
            value: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of at most `n` entries per generation.
    fn small<V: Serialize + DeserializeOwned + Clone>(n: usize) -> Table<V> {
        Table {
            generation_entries: n,
            ..Table::default()
        }
    }

    #[test]
    fn a_table_spills_beyond_two_generations_and_answers_like_a_map() {
        let mut table: Table<(u64, String)> = small(4);
        let mut model: BTreeMap<Text, (u64, String)> = BTreeMap::new();
        for i in 0..2_000u64 {
            // Keys out of order, some written twice, changed in place, removed, put back.
            let key = Text::from(format!("k{:03}", (i * 37) % 211));
            let value = (i, format!("v{i}"));
            assert_eq!(
                table.insert(key.clone(), value.clone()),
                model.insert(key.clone(), value)
            );
            if i % 7 == 0 {
                let k = format!("k{:03}", (i * 11) % 211);
                assert_eq!(table.remove(&k), model.remove(k.as_str()), "{i} {k}");
            }
            if i % 5 == 0 {
                let k = format!("k{:03}", (i * 13) % 211);
                let t = table.get_or_insert_with(&k, || (0, "new".into()));
                t.0 += 1000;
                let m = model
                    .entry(Text::from(k))
                    .or_insert_with(|| (0, "new".into()));
                m.0 += 1000;
            }
            if i % 3 == 0 {
                let k = format!("k{:03}", (i * 17) % 211);
                if let Some(t) = table.get_mut(&k) {
                    t.1.push('!');
                }
                if let Some(m) = model.get_mut(k.as_str()) {
                    m.1.push('!');
                }
            }
            assert_eq!(table.len(), model.len(), "{i}");
            assert!(table.young.len() + table.young_gone.len() <= 5);
        }
        assert!(table.spilled() > 20, "spilled {}", table.spilled());
        let runs = table.disk.as_ref().map_or(0, |d| d.runs.len());
        assert!(runs < 20, "runs {runs}");
        for k in 0..230u64 {
            let k = format!("k{k:03}");
            assert_eq!(
                table.get(&k).map(Cow::into_owned),
                model.get(k.as_str()).cloned()
            );
            assert_eq!(table.contains_key(&k), model.contains_key(k.as_str()));
        }
        let listed: Vec<(String, (u64, String))> = table
            .iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let expected: Vec<(String, (u64, String))> = model
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        assert_eq!(listed, expected);
        assert!(table.fault().is_none());
    }

    #[test]
    fn a_spilled_table_serializes_to_the_bytes_of_the_map_it_replaces() {
        /// A value's bincode bytes, serialized as a byte string.
        struct Encoding(Vec<u8>);
        impl Serialize for Encoding {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(&self.0)
            }
        }
        let mut table: Table<Vec<u32>> = small(3);
        let mut model: BTreeMap<Text, Vec<u32>> = BTreeMap::new();
        for i in 0..50u32 {
            let key = Text::from(format!("id-{}", (i * 7) % 50));
            table.insert(key.clone(), vec![i, i * 2]);
            model.insert(key, vec![i, i * 2]);
        }
        assert!(table.spilled() > 0);
        let config = bincode::config::standard();
        // In a binary format, the map of each value's encoding as a byte string.
        let ours = bincode::serde::encode_to_vec(&table, config).unwrap();
        let encodings: BTreeMap<&Text, Encoding> = model
            .iter()
            .map(|(k, v)| {
                (
                    k,
                    Encoding(bincode::serde::encode_to_vec(v, config).unwrap()),
                )
            })
            .collect();
        assert_eq!(
            ours,
            bincode::serde::encode_to_vec(&encodings, config).unwrap()
        );
        // Inline, as snapshot format 3 held it, and in JSON: the map itself.
        let inline = with_inline_values(|| bincode::serde::encode_to_vec(&table, config)).unwrap();
        assert_eq!(
            inline,
            bincode::serde::encode_to_vec(&model, config).unwrap()
        );
        assert_eq!(
            serde_json::to_string(&table).unwrap(),
            serde_json::to_string(&model).unwrap()
        );
        let (back, _): (Table<Vec<u32>>, _) =
            bincode::serde::decode_from_slice(&ours, config).unwrap();
        assert_eq!(back, table);
        assert_eq!(back.clone(), table);
        let (back, _): (Table<Vec<u32>>, _) =
            with_inline_values(|| bincode::serde::decode_from_slice(&inline, config)).unwrap();
        assert_eq!(back, table);
        // Read in the other form, the bytes do not pass for a table.
        assert!(bincode::serde::decode_from_slice::<Table<Vec<u32>>, _>(&inline, config).is_err());
        let changed: Table<Vec<u32>> = model
            .iter()
            .map(|(k, v)| (k.clone(), if k == "id-7" { vec![0] } else { v.clone() }))
            .collect();
        assert_ne!(changed, table);
    }

    /// Keys asked in ascending order, some absent, find what `get` finds, on disk or not.
    #[test]
    fn ascending_lookups_answer_as_get_does() {
        let mut table: Table<u64> = small(4);
        for i in (0..100u64).step_by(3) {
            table.insert(Text::from(format!("k{i:03}")), i);
        }
        assert!(table.spilled() > 0);
        let mut ascending = table.ascending();
        for i in 0..100u64 {
            let key = format!("k{i:03}");
            assert_eq!(ascending.get(&key), table.get(&key), "{key}");
        }
        assert!(ascending.get("k999").is_none());
    }

    /// A saved table of three generations' worth loads with its first generation in memory
    /// and the rest in one run; a length the bytes do not hold fails the load.
    #[test]
    fn a_saved_table_loads_with_its_tail_in_one_run_and_a_damaged_length_fails() {
        let n = Table::<u64>::new().generation_entries * 3;
        let saved: Table<u64> = (0..n)
            .map(|i| (Text::from(format!("k{i:08}")), u64::try_from(i).unwrap()))
            .collect();
        let bytes = bincode::serde::encode_to_vec(&saved, bincode_config()).unwrap();
        let (loaded, read): (Table<u64>, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode_config()).unwrap();
        assert_eq!(read, bytes.len());
        assert_eq!(loaded.len(), n);
        assert_eq!(loaded.young.len(), loaded.generation_entries);
        assert_eq!(loaded.disk.as_ref().map(|d| d.runs.len()), Some(1));
        assert_eq!(loaded.spilled(), n - loaded.generation_entries);
        assert!(loaded == saved);
        for i in [0, n / 2, n - 1] {
            let key = format!("k{i:08}");
            assert_eq!(
                loaded.get(&key).as_deref(),
                Some(&u64::try_from(i).unwrap())
            );
        }
        assert!(loaded.get("k").is_none());
        // Loaded, it goes on like any table.
        let mut loaded = loaded;
        loaded.insert(Text::from("k00000001"), 7);
        loaded.remove("k00000002");
        assert_eq!(loaded.len(), n - 1);
        assert_eq!(loaded.get("k00000001").as_deref(), Some(&7));
        assert!(loaded.get("k00000002").is_none());
        let again = bincode::serde::encode_to_vec(&loaded, bincode_config()).unwrap();
        let (reloaded, _): (Table<u64>, usize) =
            bincode::serde::decode_from_slice(&again, bincode_config()).unwrap();
        assert!(reloaded == loaded);
        // The map's length (a varint: a marker byte, then 2, 4 or 8 bytes) raised beyond
        // the entries.
        let prefix = match bytes[0] {
            251 => 3,
            252 => 5,
            253 => 9,
            other => panic!("a length of {other} entries"),
        };
        let mut damaged = vec![253];
        damaged.extend_from_slice(&(u64::try_from(n).unwrap() + 1_000_000).to_le_bytes());
        damaged.extend_from_slice(&bytes[prefix..]);
        assert!(
            bincode::serde::decode_from_slice::<Table<u64>, _>(&damaged, bincode_config()).is_err()
        );
    }

    #[test]
    fn a_table_that_cannot_spill_is_faulty_keeps_its_entries_and_refuses_to_be_saved() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"not a directory").unwrap();
        let mut table: Table<u32> = Table {
            spill_base: Some(file.join("spill")),
            ..small(4)
        };
        for i in 0..20u32 {
            table.insert(Text::from(format!("k{i:02}")), i);
        }
        let fault = table.fault().unwrap().to_owned();
        assert!(fault.contains("creating the spill directory"), "{fault}");
        assert!(fault.contains("a-file"), "{fault}");
        // Nothing was lost: what could not be written stayed in memory.
        assert_eq!(table.len(), 20);
        assert_eq!(table.get("k00").as_deref(), Some(&0));
        let err = serde_json::to_string(&table).unwrap_err();
        assert!(
            err.to_string().contains("creating the spill directory"),
            "{err}"
        );
    }

    #[test]
    fn a_map_with_a_key_twice_is_refused() {
        let json = r#"{"a": 1, "a": 2}"#;
        let err = serde_json::from_str::<Table<u32>>(json).unwrap_err();
        assert!(
            err.to_string()
                .contains("the key `a` is out of order or appears twice"),
            "{err}"
        );
    }
}
