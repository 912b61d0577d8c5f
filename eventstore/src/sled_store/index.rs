//! The log's index: which positions hold a stream's versions, which position holds an
//! event id, and where in the segments a position's frame starts. It lives in sled at
//! `<dir>/index` and is derived data: everything in it can be rebuilt from the segments.
//!
//! Keys of the `index` tree (integers big endian, so keys sort in log order):
//! - `S` stream id `0xFF` first version → first position (8 bytes) and count (4 bytes):
//!   one entry per append, whose events have consecutive positions. `0xFF` never occurs
//!   in UTF-8, so a stream's entries are exactly the keys with its prefix.
//! - `J`, `R`, `Q`: event id → position, in chunks and sorted runs ([`super::ids`]).
//! - `O` position → segment first position (8 bytes) and byte offset (8 bytes): the
//!   sparse offset map ([`super::segment::Offsets`]).
//! - `Mindexed` → the position through which every entry above is in the tree. Each
//!   indexing step writes its entries and this marker in one atomic sled batch.
//! - `Mformat` → the frame format version the log was created with.
//! - `Mids` → the layout of the event id entries ([`IDS_LAYOUT`]). An index without it
//!   holds one `I` entry per event (the earlier layout) and is rebuilt at open.
//!
//! **Architecture Invariant:** the index is never on the commit path. The writer makes a
//! group durable in the segment, then puts the group's entries in the in-memory tail
//! ([`Tail`]), then publishes the durable head; the indexer thread writes them to sled
//! later and only then drops them from the tail. A reader looks in the tail before sled,
//! so every durable record is findable, and an entry found in both is the same entry.
//! The tail is bounded ([`TAIL_EVENTS_MAX`]): a writer ahead of the indexer by more waits.
//! sled is flushed by the indexer from time to time, not per group: after a crash the store
//! indexes again, from the segments, whatever follows the marker.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Corruption, ReadError};
use crate::types::{EventId, Position, StreamId, StreamVersion};

use super::segment::Offset;

/// Most events the tail holds before the writer waits for the indexer.
pub(crate) const TAIL_EVENTS_MAX: usize = 400_000;
/// Longest time sled's index goes without a flush while the indexer is busy.
const INDEX_FLUSH_INTERVAL_MS: u64 = 1_000;
/// How long the indexer waits for work before it flushes what it wrote.
const INDEX_IDLE_MS: u64 = 50;

const STREAM_PREFIX: u8 = b'S';
/// The earlier layout's per-event id entries.
const OLD_ID_PREFIX: u8 = b'I';
const OFFSET_PREFIX: u8 = b'O';
const STREAM_SEPARATOR: u8 = 0xFF;
const INDEXED_KEY: &[u8] = b"Mindexed";
pub(crate) const FORMAT_KEY: &[u8] = b"Mformat";
const IDS_LAYOUT_KEY: &[u8] = b"Mids";
/// The layout of the id entries this version writes: chunks and sealed runs.
const IDS_LAYOUT: u8 = 2;

fn stream_prefix(s: &StreamId) -> Vec<u8> {
    let mut k = Vec::with_capacity(s.as_str().len() + 10);
    k.push(STREAM_PREFIX);
    k.extend_from_slice(s.as_str().as_bytes());
    k.push(STREAM_SEPARATOR);
    k
}

fn stream_key(s: &StreamId, first_version: StreamVersion) -> Vec<u8> {
    let mut k = stream_prefix(s);
    k.extend_from_slice(&first_version.0.to_be_bytes());
    k
}

fn offset_key(p: Position) -> [u8; 9] {
    let mut k = [OFFSET_PREFIX; 9];
    k[1..].copy_from_slice(&p.0.to_be_bytes());
    k
}

pub(crate) fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let raw: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_be_bytes(raw))
}

/// `count` events of one stream from `first_version` at positions from `first_position`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StreamRun {
    pub first_version: StreamVersion,
    pub first_position: Position,
    pub count: u64,
}

impl StreamRun {
    fn parse(key: &[u8], value: &[u8]) -> Option<StreamRun> {
        let first_version = StreamVersion(u64_at(key, key.len().checked_sub(8)?)?);
        let first_position = Position(u64_at(value, 0)?);
        let count = u64::from(u32::from_be_bytes(value.get(8..12)?.try_into().ok()?));
        (value.len() == 12 && count > 0).then_some(StreamRun {
            first_version,
            first_position,
            count,
        })
    }

    fn value(&self) -> [u8; 12] {
        let mut v = [0; 12];
        v[..8].copy_from_slice(&self.first_position.0.to_be_bytes());
        let count = u32::try_from(self.count).unwrap_or(u32::MAX);
        v[8..].copy_from_slice(&count.to_be_bytes());
        v
    }

    pub fn last_version(&self) -> StreamVersion {
        StreamVersion(self.first_version.0 + self.count - 1)
    }
}

/// One indexing step: the entries of the durable records up to `through`.
#[derive(Debug, Default)]
pub(crate) struct Work {
    pub ids: Vec<(EventId, Position)>,
    pub runs: Vec<(StreamId, StreamRun)>,
    pub offsets: Vec<(Position, Offset)>,
    pub through: Position,
}

impl Work {
    pub fn events(&self) -> usize {
        self.ids.len()
    }
}

/// Entries durable in the segments but not yet in sled.
#[derive(Default)]
struct Tail {
    runs: HashMap<StreamId, Vec<StreamRun>>,
    events: usize,
}

/// Why sled's index could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IndexError {
    #[error("the directory's lock is held by another handle")]
    Locked,
    #[error("{0}")]
    Sled(sled::Error),
    /// sled panicked on what it read (a damaged or truncated file).
    #[error("the index files are damaged ({0})")]
    Panicked(String),
    /// sled read an entry of the index that is not in the index's format.
    #[error("the index holds {0}")]
    Malformed(&'static str),
}

impl IndexError {
    /// Whether the index's files are damaged (rather than unreadable for now).
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            IndexError::Panicked(_)
                | IndexError::Malformed(_)
                | IndexError::Sled(sled::Error::Corruption { .. })
        )
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "sled stopped on what it read".to_owned())
}

/// Runs a sled call, turning a panic of sled's on damaged files into an error.
pub(crate) fn guarded<T>(f: impl FnOnce() -> Result<T, sled::Error>) -> Result<T, IndexError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(IndexError::Sled),
        Err(p) => Err(IndexError::Panicked(panic_text(p.as_ref()))),
    }
}

/// The sled index and the in-memory tail in front of it.
pub(crate) struct Index {
    db: sled::Db,
    tree: sled::Tree,
    path: PathBuf,
    tail: Mutex<Tail>,
    tail_changed: Condvar,
    /// The last position of the newest run of event ids ([`super::ids`]) sealed by this
    /// instance's indexer (0 until it seals one).
    sealed_through: AtomicU64,
    /// Event ids in chunks, not yet sealed into a run; [`UNCOUNTED`] until the first seal
    /// check counts them.
    unsealed: AtomicUsize,
}

/// [`Index::unsealed`] before it is counted. An open does not count the ids in chunks: that
/// reads up to [`super::ids::RUN_PAIRS`] pairs (6 MiB) from sled, a quarter of the open of a
/// 1,000,000-event log, and a process that only reads never needs the count. The first
/// seal check, after the first indexing step, counts them instead.
const UNCOUNTED: usize = usize::MAX;

/// sled's segment size for a new index. sled fixes it at creation and refuses to reopen an
/// index with another, so an existing index keeps the size its `conf` file records
/// ([`segment_size_of`]; indexes made before this size was chosen have 16 MiB ones).
///
/// Part of every open of sled 0.34.7 follows the segment size: it reads its log from the
/// start of the segment holding its last snapshot's position and writes marker bytes over
/// the rest of the last segment, then syncs. With 16 MiB segments the open of a
/// 1,000,015-event log took 0.146 s, with 2 MiB ones 0.101 s (README, Benchmarks). It also
/// writes over every free segment, which follows the index's free space, not the size.
///
/// The bound on the other side: sled stores a page larger than a quarter of a segment as a
/// blob file, which it never syncs, and a leaf page holds up to 17 entries. So an entry of
/// the index stays below 1/(4 × 17) of a segment, about 30 KiB at 2 MiB: the largest are
/// the event id chunks and blocks, [`super::ids::CHUNK_PAIRS_MAX`] and
/// [`super::ids::BLOCK_PAIRS_MAX`] pairs of 24 bytes, 24 KiB each.
pub(crate) const SEGMENT_SIZE_BYTES: usize = 2 * 1024 * 1024;

/// The segment size sled records in the `conf` file of the index at `path` (a line
/// `segment_size: N`), or [`SEGMENT_SIZE_BYTES`] for a new index. A `conf` that cannot be
/// read or holds no such line gives the new size too: sled then names the mismatch itself.
fn segment_size_of(path: &Path) -> usize {
    std::fs::read(path.join("conf"))
        .ok()
        .and_then(|bytes| {
            bytes.split(|b| *b == b'\n').find_map(|line| {
                let value = line.strip_prefix(b"segment_size: ")?;
                std::str::from_utf8(value)
                    .ok()?
                    .trim()
                    .parse::<usize>()
                    .ok()
            })
        })
        .unwrap_or(SEGMENT_SIZE_BYTES)
}

fn sled_config(path: &Path, cache_bytes: Option<u64>) -> sled::Config {
    let config = sled::Config::new()
        .path(path)
        .mode(sled::Mode::HighThroughput)
        .segment_size(segment_size_of(path))
        .flush_every_ms(None);
    match cache_bytes {
        Some(bytes) => config.cache_capacity(bytes),
        None => config,
    }
}

/// Whether sled refused to open because another handle holds the directory's lock. sled
/// 0.34 reports this as an `io::ErrorKind::Other` error whose message carries the OS error.
fn is_lock_contention(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock")
        }
        _ => false,
    }
}

/// Opens sled at `path`, waiting up to `wait` for its file lock.
pub(crate) fn open_db(
    path: &Path,
    wait: Duration,
    cache_bytes: Option<u64>,
) -> Result<sled::Db, IndexError> {
    let deadline = Instant::now() + wait;
    loop {
        match guarded(|| sled_config(path, cache_bytes).open()) {
            Ok(db) => return Ok(db),
            Err(IndexError::Sled(e)) if is_lock_contention(&e) => {
                if Instant::now() >= deadline {
                    return Err(IndexError::Locked);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

impl Index {
    pub fn open(db: sled::Db, path: PathBuf) -> Result<Index, IndexError> {
        let tree = guarded(|| db.open_tree("index"))?;
        Ok(Index {
            db,
            tree,
            path,
            tail: Mutex::new(Tail::default()),
            tail_changed: Condvar::new(),
            sealed_through: AtomicU64::new(0),
            unsealed: AtomicUsize::new(UNCOUNTED),
        })
    }

    pub(crate) fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// See the field's documentation.
    pub(crate) fn sealed_through(&self) -> Position {
        Position(self.sealed_through.load(Ordering::Acquire))
    }

    /// Counts `added` ids written to chunks, and seals the chunks into a run when they
    /// hold [`super::ids::RUN_PAIRS`] or more. Called after the chunks of `added` are written,
    /// by one caller at a time (recovery, then the indexer thread); the first call after the
    /// open counts the chunks in sled, those just written included.
    pub fn seal_if_due(&self, added: usize) -> Result<(), IndexError> {
        let before = self.unsealed.load(Ordering::Acquire);
        let now = if before == UNCOUNTED {
            super::ids::chunk_pair_count(&self.tree)?
        } else {
            before.saturating_add(added)
        };
        if now < super::ids::RUN_PAIRS {
            self.unsealed.store(now, Ordering::Release);
            return Ok(());
        }
        if let Some(run) = super::ids::seal(&self.tree)? {
            self.sealed_through.store(run.0, Ordering::Release);
        }
        self.unsealed.store(0, Ordering::Release);
        Ok(())
    }

    /// Makes sure the id entries are in this version's layout: an index of the earlier
    /// layout (one entry per event id) is emptied, so the open indexes the log again from
    /// its segments. Returns whether it was.
    pub fn ensure_ids_layout(&self) -> Result<bool, IndexError> {
        if self.get_meta(IDS_LAYOUT_KEY)?.is_some() {
            return Ok(false);
        }
        let earlier = guarded(|| self.tree.scan_prefix([OLD_ID_PREFIX]).next().transpose())?
            .is_some()
            || self.indexed()? > Position::ZERO;
        if earlier {
            let format = self.get_meta(FORMAT_KEY)?;
            guarded(|| self.tree.clear())?;
            if let Some(format) = format {
                self.set_meta(FORMAT_KEY, &format)?;
            }
            // The emptied index reaches the disk before the new layout's marker does.
            self.flush()?;
        }
        self.set_meta(IDS_LAYOUT_KEY, &[IDS_LAYOUT])?;
        Ok(earlier)
    }

    pub(crate) fn damaged(&self, reason: impl std::fmt::Display) -> ReadError {
        ReadError::IndexDamaged {
            path: self.path.display().to_string(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn read_error(&self, e: IndexError) -> ReadError {
        match e {
            e if e.is_damage() => self.damaged(e),
            e => ReadError::Storage(format!("reading the index at {}: {e}", self.path.display())),
        }
    }

    pub fn get_meta(&self, key: &[u8]) -> Result<Option<sled::IVec>, IndexError> {
        guarded(|| self.tree.get(key))
    }

    pub fn set_meta(&self, key: &[u8], value: &[u8]) -> Result<(), IndexError> {
        guarded(|| self.tree.insert(key, value)).map(|_| ())
    }

    pub fn flush(&self) -> Result<(), IndexError> {
        guarded(|| self.db.flush()).map(|_| ())
    }

    pub fn size_on_disk_bytes(&self) -> Result<u64, ReadError> {
        guarded(|| self.db.size_on_disk()).map_err(|e| self.read_error(e))
    }

    /// The position through which sled holds every entry.
    pub fn indexed(&self) -> Result<Position, IndexError> {
        let v = self.get_meta(INDEXED_KEY)?;
        Ok(Position(v.and_then(|v| u64_at(&v, 0)).unwrap_or(0)))
    }

    /// Every entry of the offset map sled holds.
    pub fn offsets(&self) -> Result<Vec<(Position, Offset)>, IndexError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix([OFFSET_PREFIX]) {
            let (k, v) = guarded(|| item)?;
            let parsed = u64_at(&k, 1).zip(u64_at(&v, 0)).zip(u64_at(&v, 8));
            let Some(((p, segment), at)) = parsed else {
                return Err(IndexError::Malformed("a malformed offset entry"));
            };
            out.push((
                Position(p),
                Offset {
                    segment: Position(segment),
                    at,
                },
            ));
        }
        Ok(out)
    }

    /// Writes one step's entries and the marker to sled, atomically.
    pub fn apply(&self, work: &Work) -> Result<(), IndexError> {
        let mut batch = sled::Batch::default();
        for (k, v) in super::ids::chunk_entries(&work.ids) {
            batch.insert(&k, v);
        }
        for (stream, run) in &work.runs {
            batch.insert(stream_key(stream, run.first_version), &run.value());
        }
        for (p, o) in &work.offsets {
            let mut v = [0u8; 16];
            v[..8].copy_from_slice(&o.segment.0.to_be_bytes());
            v[8..].copy_from_slice(&o.at.to_be_bytes());
            batch.insert(&offset_key(*p), &v);
        }
        batch.insert(INDEXED_KEY, &work.through.0.to_be_bytes());
        guarded(|| self.tree.apply_batch(batch))
    }

    /// Puts a durable group's entries in the tail (before its head is published).
    pub fn tail_add(&self, work: &Work) {
        let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        for (stream, run) in &work.runs {
            tail.runs.entry(stream.clone()).or_default().push(*run);
        }
        tail.events += work.events();
    }

    /// Drops a step's entries from the tail once sled holds them.
    fn tail_remove(&self, work: &Work) {
        let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        for (stream, run) in &work.runs {
            if let Some(runs) = tail.runs.get_mut(stream) {
                runs.retain(|r| r != run);
                if runs.is_empty() {
                    tail.runs.remove(stream);
                }
            }
        }
        tail.events = tail.events.saturating_sub(work.events());
        drop(tail);
        self.tail_changed.notify_all();
    }

    /// Waits while the tail is full, unless `stop` says the indexer is gone.
    pub fn wait_for_room(&self, stop: impl Fn() -> bool) {
        let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        while tail.events > TAIL_EVENTS_MAX && !stop() {
            tail = self
                .tail_changed
                .wait_timeout(tail, Duration::from_millis(100))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn tail_runs(&self, stream: &StreamId) -> Vec<StreamRun> {
        self.tail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .runs
            .get(stream)
            .cloned()
            .unwrap_or_default()
    }

    fn malformed(&self, stream: &StreamId) -> ReadError {
        self.damaged(Corruption::MalformedStreamEntry {
            stream: stream.clone(),
        })
    }

    /// The stream's runs from the one holding `from` on, at or below `limit`, covering at
    /// least `want` events from `from` where the stream has them.
    pub fn stream_runs(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        limit: Position,
        want: usize,
    ) -> Result<Vec<StreamRun>, ReadError> {
        // The tail first: an entry moves from the tail to sled, never back.
        let tail = self.tail_runs(stream);
        let mut runs = std::collections::BTreeMap::new();
        let prefix = stream_prefix(stream);
        let start = guarded(|| {
            self.tree
                .range(stream_key(stream, StreamVersion::NONE)..=stream_key(stream, from))
                .next_back()
                .transpose()
        })
        .map_err(|e| self.read_error(e))?
        .map(|(k, _)| k.to_vec())
        .unwrap_or_else(|| stream_key(stream, from));
        let want = u64::try_from(want).unwrap_or(u64::MAX);
        let mut covered = 0u64;
        let mut iter = self.tree.range(start..);
        loop {
            let Some(item) = guarded(|| iter.next().transpose()).map_err(|e| self.read_error(e))?
            else {
                break;
            };
            let (k, v) = item;
            if !k.starts_with(&prefix) {
                break;
            }
            let run = StreamRun::parse(&k, &v).ok_or_else(|| self.malformed(stream))?;
            if run.first_position > limit {
                break;
            }
            if run.last_version() >= from {
                covered = covered.saturating_add(run.count);
            }
            runs.insert(run.first_version, run);
            if covered >= want {
                break;
            }
        }
        for run in tail {
            if run.first_position <= limit && run.last_version() >= from {
                runs.insert(run.first_version, run);
            }
        }
        Ok(runs.into_values().collect())
    }

    /// The stream's version counting only events at or below `limit`.
    pub fn stream_version(
        &self,
        stream: &StreamId,
        limit: Position,
    ) -> Result<StreamVersion, ReadError> {
        let tail = self.tail_runs(stream);
        if let Some(v) = tail
            .iter()
            .filter(|r| r.first_position <= limit)
            .map(StreamRun::last_version)
            .max()
        {
            return Ok(v);
        }
        let mut iter = self.tree.scan_prefix(stream_prefix(stream)).rev();
        loop {
            let Some((k, v)) =
                guarded(|| iter.next().transpose()).map_err(|e| self.read_error(e))?
            else {
                return Ok(StreamVersion::NONE);
            };
            let run = StreamRun::parse(&k, &v).ok_or_else(|| self.malformed(stream))?;
            // A run is one append of one group: durable as a whole or not at all.
            if run.first_position <= limit {
                return Ok(run.last_version());
            }
        }
    }

    /// The indexer: writes each step to sled, then drops it from the tail; flushes sled
    /// when idle for [`INDEX_IDLE_MS`] or every [`INDEX_FLUSH_INTERVAL_MS`], and once more at the end. On a sled
    /// failure it calls `fail` and stops (the store then refuses writes).
    pub fn run_indexer(&self, rx: std::sync::mpsc::Receiver<Work>, fail: impl Fn(String)) {
        let interval = Duration::from_millis(INDEX_FLUSH_INTERVAL_MS);
        let idle = Duration::from_millis(INDEX_IDLE_MS);
        let mut last_flush = Instant::now();
        let mut dirty = false;
        loop {
            let flush = match rx.recv_timeout(idle) {
                Ok(work) => {
                    if let Err(e) = self.apply(&work) {
                        fail(format!("writing the index at {}: {e}", self.path.display()));
                        return;
                    }
                    self.tail_remove(&work);
                    if let Err(e) = self.seal_if_due(work.ids.len()) {
                        fail(format!(
                            "sealing event ids in the index at {}: {e}",
                            self.path.display()
                        ));
                        return;
                    }
                    dirty = true;
                    last_flush.elapsed() >= interval
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => dirty,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            };
            if flush {
                if let Err(e) = self.flush() {
                    fail(format!(
                        "flushing the index at {}: {e}",
                        self.path.display()
                    ));
                    return;
                }
                last_flush = Instant::now();
                dirty = false;
            }
        }
        if dirty {
            if let Err(e) = self.flush() {
                fail(format!(
                    "flushing the index at {}: {e}",
                    self.path.display()
                ));
            }
        }
    }
}
