//! The embedded default backend: the log's records in append-only segment files, its
//! index in sled, written by one writer thread that commits concurrent appends together
//! (group commit).
//!
//! Start with [`segment`] (the files the records live in), [`writer`] (the group commit),
//! [`index`] (streams and offsets, in sled behind an in-memory tail), [`ids`] (event ids,
//! for the writer's idempotency check) and
//! [`recovery`] (what an open does with what a crash left).
//!
//! Directory layout: `<dir>/segments/<first position>.seg` (the records), `<dir>/index/`
//! (sled: the index, derived from the segments).
//!
//! **Durability.** A group commit writes its frames at the end of the tip segment in one
//! `write` and calls `fdatasync` on that file once; `fdatasync` persists the data and the
//! file size, and flushes the device's write cache. Only then does the writer publish the
//! new durable head and answer the appends: an acknowledged event is in a synced segment.
//! A new segment's header is synced, and its directory entry (`fsync` of `segments/`),
//! before any group is written to it. The index is not on this path: it is derived data,
//! written by the indexer thread and flushed from time to time; after a crash the open
//! scans the segments from the index's marker on and indexes again what follows it.
//! A crash during a group's write can leave an unfinished frame at the end of the tip
//! segment; that group was never acknowledged, and the open cuts it off (keeping the cut
//! bytes beside the segment, `.torn-<offset>`), unless the index already held those
//! positions, which only damage can explain: then the open fails and names them.
//!
//! **Architecture Invariant:** readers never look past the durable head, so a record that
//! is written but not yet synced is never served. A failed write or sync poisons the
//! store: it refuses every later write until reopened (after an fsync error the kernel may
//! have dropped the dirty pages; retrying could acknowledge lost data). An append answered
//! with `StorageFailed` may or may not be in the log after the reopen; check by reading.
//!
//! **Architecture Invariant:** damage is reported with the positions it affects, never
//! served and never a panic: frames carry checksums ([`crate::codec`]), segments are
//! walked position by position, and a panic of sled's on damaged index files is caught and
//! answered by rebuilding the index from the segments at open, or with
//! [`ReadError::IndexDamaged`] when it happens later.

mod ids;
mod index;
mod legacy;
mod recovery;
mod segment;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::codec::FORMAT_VERSION;
use crate::error::{AppendError, Corruption, OpenError, ReadError};
use crate::limits::APPEND_QUEUE_DEPTH;
use crate::store::{check_append, check_batch, page_size, EventStore, SelectedPage, Selector};
use crate::types::{
    AppendResult, ExpectedVersion, Head, Position, ProposedEvent, RecordView, RecordedAt,
    RecordedEvent, StreamAppend, StreamId, StreamVersion,
};
use index::{Index, IndexError, FORMAT_KEY};
use segment::{Offsets, SEGMENTS_DIR};
use writer::{Request, Writer};

/// Where the index lives inside the store directory.
const INDEX_DIR: &str = "index";
/// Indexing steps queued for the indexer before the writer waits.
const INDEX_QUEUE_DEPTH: usize = 64;

/// How a store directory is opened, beyond what every open shares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SledOptions {
    /// Bytes of index pages sled keeps in memory (`None`: sled's default, 1 GiB). A bulk
    /// import, which writes once and reads back only the streams it continues, runs in a
    /// bounded footprint with a small cache; a server keeps the default.
    pub cache_bytes: Option<u64>,
    /// Size past which the writer starts a new segment (`None`: 256 MiB). Tests use small
    /// segments to cross segment boundaries with few records.
    pub segment_target_bytes: Option<u64>,
}

/// How long `open` waits for the directory's lock. sled releases it from its
/// own threads a moment after the last handle is dropped, so a close followed
/// at once by an open in the same process can find it still held.
const OPEN_LOCK_WAIT_MS: u64 = 5_000;

struct Inner {
    /// The stream index; `None` once [`SledStore::release_index`] let it go.
    index: RwLock<Option<Arc<Index>>>,
    offsets: Offsets,
    path: PathBuf,
    /// Position of the newest durable record; readers never look past it.
    durable: AtomicU64,
    head: watch::Sender<Head>,
    /// Set when a write or sync failed; the store then refuses writes.
    failed: Mutex<Option<String>>,
    /// Makes the next `fdatasync` of a segment fail (tests of the failure path).
    inject_sync_failure: AtomicBool,
    /// Syncs the writer handed to its sync thread (for tests of that path).
    handed_syncs: AtomicU64,
}

impl Inner {
    fn durable(&self) -> Position {
        Position(self.durable.load(Ordering::Acquire))
    }

    fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn fail(&self, reason: String) {
        error!(path = %self.path.display(), %reason, "event store refuses writes from now on");
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if failed.is_none() {
            *failed = Some(reason);
        }
    }

    /// The stream index, or why this handle has none any more.
    fn index(&self) -> Result<Arc<Index>, ReadError> {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                ReadError::Storage(
                    "this handle released the log's stream index to replay the whole log in \
                     less memory; open the log again to read streams"
                        .into(),
                )
            })
    }

    fn segments_dir(&self) -> PathBuf {
        self.path.join(SEGMENTS_DIR)
    }
}

/// The sled-backed [`EventStore`]. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
    /// `None` for a store opened read-only.
    requests: Option<mpsc::Sender<Request>>,
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

impl SledStore {
    /// Opens (or creates) the log in directory `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SledStore, OpenError> {
        Self::open_with(path, SledOptions::default())
    }

    /// As [`SledStore::open`], with `options`.
    ///
    /// # Errors
    /// As [`SledStore::open`].
    pub fn open_with(path: impl AsRef<Path>, options: SledOptions) -> Result<SledStore, OpenError> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let io_err = |what: &str, e: std::io::Error| OpenError::Storage {
            path: shown.clone(),
            reason: format!("{what}: {e}"),
        };
        std::fs::create_dir_all(&path).map_err(|e| io_err("could not create the directory", e))?;
        legacy::migrate_if_needed(&path)?;
        let segments = path.join(SEGMENTS_DIR);
        if !segments.is_dir() {
            std::fs::create_dir_all(&segments)
                .and_then(|()| sync_dir(&path))
                .map_err(|e| io_err("could not create the segments directory", e))?;
        }
        let index = open_index(&path, options.cache_bytes)?;
        let format = index
            .get_meta(FORMAT_KEY)
            .map_err(|e| index_open_error(&shown, &e))?;
        if let Some(v) = format {
            let found = v.first().copied().unwrap_or(0);
            if found > FORMAT_VERSION {
                return Err(OpenError::NewerFormat {
                    path: shown,
                    found,
                    supported: FORMAT_VERSION,
                });
            }
        } else {
            index
                .set_meta(FORMAT_KEY, &[FORMAT_VERSION])
                .map_err(|e| index_open_error(&shown, &e))?;
        }
        if index
            .ensure_ids_layout()
            .map_err(|e| index_open_error(&shown, &e))?
        {
            info!(path = %shown, "the index is in an earlier layout; indexing the log again");
        }
        let offsets = Offsets::default();
        let recovered = recovery::recover(&path, &index, &offsets, true)?;
        let head = recovered.head;
        debug!(path = %shown, head = head.position.0, "opened sled event store");
        let (head_tx, _) = watch::channel(head);
        let index = Arc::new(index);
        let inner = Arc::new(Inner {
            index: RwLock::new(Some(index.clone())),
            offsets,
            path,
            durable: AtomicU64::new(head.position.0),
            head: head_tx,
            failed: Mutex::new(None),
            inject_sync_failure: AtomicBool::new(false),
            handed_syncs: AtomicU64::new(0),
        });
        let (index_tx, index_rx) = std::sync::mpsc::sync_channel(INDEX_QUEUE_DEPTH);
        let indexer_inner = inner.clone();
        let indexer_index = index.clone();
        let indexer = std::thread::Builder::new()
            .name("crm-sled-indexer".into())
            .spawn(move || {
                let inner = indexer_inner;
                indexer_index.run_indexer(index_rx, |reason| inner.fail(reason));
            })
            .map_err(|e| io_err("could not start the indexer thread", e))?;
        let (tx, rx) = mpsc::channel(APPEND_QUEUE_DEPTH);
        let writer = Writer {
            inner: inner.clone(),
            index,
            head,
            last_recorded_at: recovered.last_recorded_at,
            versions: std::collections::HashMap::new(),
            ids: ids::IdLookup::default(),
            tip: recovered.tip,
            indexer: index_tx,
            segment_target_bytes: options
                .segment_target_bytes
                .unwrap_or(segment::SEGMENT_SIZE_TARGET_BYTES),
            flight: None,
        };
        std::thread::Builder::new()
            .name("crm-sled-writer".into())
            .spawn(move || writer.run(rx, indexer))
            .map_err(|e| io_err("could not start the writer thread", e))?;
        Ok(SledStore {
            inner,
            requests: Some(tx),
        })
    }

    /// Opens the log in `path` for reading only: nothing in the directory is written or
    /// locked, so a read-only copy (a backup, a mounted snapshot) can be read and verified.
    /// The open walks every segment to find the records and builds the stream index in
    /// memory; appends are refused.
    ///
    /// # Errors
    /// As [`SledStore::open`]; a directory without segments is not a log.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<SledStore, OpenError> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        if !path.join(SEGMENTS_DIR).is_dir() {
            return Err(OpenError::Storage {
                path: shown,
                reason: "no segments directory: not a log of this format (a log written by an \
                         older version is converted by a writable open)"
                    .into(),
            });
        }
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|e| OpenError::Storage {
                path: shown.clone(),
                reason: format!("could not create the in-memory index: {e}"),
            })?;
        let index = Index::open(db, path.join(INDEX_DIR)).map_err(|e| OpenError::Storage {
            path: shown.clone(),
            reason: format!("could not create the in-memory index: {e}"),
        })?;
        let offsets = Offsets::default();
        let recovered = recovery::recover(&path, &index, &offsets, false)?;
        let head = recovered.head;
        let (head_tx, _) = watch::channel(head);
        Ok(SledStore {
            inner: Arc::new(Inner {
                index: RwLock::new(Some(Arc::new(index))),
                offsets,
                path,
                durable: AtomicU64::new(head.position.0),
                head: head_tx,
                failed: Mutex::new(Some("the log was opened read-only".into())),
                inject_sync_failure: AtomicBool::new(false),
                handed_syncs: AtomicU64::new(0),
            }),
            requests: None,
        })
    }

    /// Stops the writer after the appends already queued, and waits for it and for the
    /// indexer to write what it holds. Appends sent after this fail with
    /// [`AppendError::Closed`]. The files are released when the last clone of this store
    /// is dropped.
    pub async fn close(self) {
        self.stop_writer().await;
    }

    /// Asks the writer to stop after the appends already queued, and waits until it and the
    /// indexer have ended (at once if it has, or if the store is read-only).
    async fn stop_writer(&self) {
        let Some(requests) = &self.requests else {
            return;
        };
        let (done, wait) = oneshot::channel();
        if requests.send(Request::Close { done }).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Lets go of the stream index, for a handle that from now on only replays the whole
    /// log (`read_all`, `read_all_selected`, `head`), which the segment files and the
    /// in-memory offset map serve alone. The index's pages and sled's state of its files,
    /// which grow with the number of appends (about 175 MiB over 10,000,000 events), are
    /// freed.
    ///
    /// The writer stops first, as [`SledStore::close`] stops it: appends through any clone
    /// of this store are refused from then on ([`AppendError::Closed`]), and stream reads
    /// and stream versions answer that the index was released. Open the log again to
    /// write or to read streams. Calling it again does nothing.
    pub async fn release_index(&self) {
        self.stop_writer().await;
        // The writer and the indexer dropped their handles when they ended; a read that
        // holds one still lets go when it ends.
        let released = self
            .inner
            .index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if released.is_some() {
            debug!(path = %self.inner.path.display(), "released the stream index");
        }
    }

    /// Bytes the store occupies on disk: segments and index.
    pub fn size_on_disk_bytes(&self) -> Result<u64, ReadError> {
        let mut total = self.inner.index()?.size_on_disk_bytes()?;
        for segment in self.inner.offsets.all_segments() {
            let len = segment
                .file
                .metadata()
                .map_err(|e| {
                    ReadError::Storage(format!("reading {}: {e}", segment.path.display()))
                })?
                .len();
            total = total.saturating_add(len);
        }
        Ok(total)
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs a read on the blocking pool, off the async executor's threads.
    async fn off_executor<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Inner) -> Result<T, ReadError> + Send + 'static,
    ) -> Result<T, ReadError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || read(&inner))
            .await
            .map_err(|e| ReadError::Storage(format!("the read task stopped: {e}")))?
    }
}

/// The error an open reports for an index it could not use.
fn index_open_error(shown: &str, e: &IndexError) -> OpenError {
    match e {
        IndexError::Locked => OpenError::Locked {
            path: shown.to_owned(),
        },
        e => OpenError::Storage {
            path: shown.to_owned(),
            reason: format!("the index: {e}"),
        },
    }
}

/// Opens the index; a damaged one (sled reports corruption or stops on its files) is set
/// aside as `index.damaged-<seconds>` and an empty one takes its place, which the open's
/// recovery fills again from the segments.
fn open_index(path: &Path, cache_bytes: Option<u64>) -> Result<Index, OpenError> {
    let shown = path.display().to_string();
    let dir = path.join(INDEX_DIR);
    let wait = std::time::Duration::from_millis(OPEN_LOCK_WAIT_MS);
    let opened = index::open_db(&dir, wait, cache_bytes)
        .and_then(|db| Index::open(db, dir.clone()))
        .and_then(|index| index.indexed().map(|_| index));
    match opened {
        Ok(index) => Ok(index),
        // Anything but another holder of the lock: the index is derived, rebuild it.
        Err(e) if !matches!(e, IndexError::Locked) => {
            let seconds = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let aside = path.join(format!("{INDEX_DIR}.damaged-{seconds}"));
            warn!(path = %shown, reason = %e, aside = %aside.display(),
                "the log's index is damaged; it is set aside and rebuilt from the segments");
            std::fs::rename(&dir, &aside)
                .and_then(|()| sync_dir(path))
                .map_err(|io| OpenError::Storage {
                    path: shown.clone(),
                    reason: format!(
                        "the index is damaged ({e}) and could not be set aside ({io}); move \
                         {} away and open again to rebuild it from the segments",
                        dir.display()
                    ),
                })?;
            index::open_db(&dir, wait, cache_bytes)
                .and_then(|db| Index::open(db, dir.clone()))
                .map_err(|e| index_open_error(&shown, &e))
        }
        Err(e) => Err(index_open_error(&shown, &e)),
    }
}

impl EventStore for SledStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<ProposedEvent>,
    ) -> Result<AppendResult, AppendError> {
        check_append(&events)?;
        let Some(requests) = &self.requests else {
            return Err(AppendError::ReadOnly);
        };
        if let Some(reason) = self.inner.failure() {
            return Err(AppendError::StorageFailed(reason));
        }
        let (reply, answer) = oneshot::channel();
        let request = Request::Append {
            stream: stream.clone(),
            expected,
            events,
            reply,
        };
        requests
            .send(request)
            .await
            .map_err(|_| AppendError::Closed)?;
        answer.await.map_err(|_| {
            AppendError::StorageFailed("the writer stopped before answering; reopen the store and check whether the append landed".into())
        })?
    }

    async fn append_batch(
        &self,
        parts: Vec<StreamAppend>,
        recorded_at: RecordedAt,
    ) -> Result<Vec<Result<AppendResult, AppendError>>, AppendError> {
        check_batch(&parts, recorded_at, chrono::Utc::now())?;
        let Some(requests) = &self.requests else {
            return Err(AppendError::ReadOnly);
        };
        if let Some(reason) = self.inner.failure() {
            return Err(AppendError::StorageFailed(reason));
        }
        // Parts the writer would refuse on their own are answered here, off its thread.
        let checks: Vec<Result<(), AppendError>> =
            parts.iter().map(|p| check_append(&p.events)).collect();
        let valid: Vec<StreamAppend> = parts
            .into_iter()
            .zip(&checks)
            .filter_map(|(p, check)| check.is_ok().then_some(p))
            .collect();
        let mut written = if valid.is_empty() {
            Vec::new()
        } else {
            let (reply, answer) = oneshot::channel();
            let request = Request::Batch {
                parts: valid,
                recorded_at,
                reply,
            };
            requests
                .send(request)
                .await
                .map_err(|_| AppendError::Closed)?;
            answer.await.map_err(|_| {
                AppendError::StorageFailed("the writer stopped before answering; reopen the store and check whether the batch landed".into())
            })??
        }
        .into_iter();
        Ok(checks
            .into_iter()
            .map(|check| match check {
                Ok(()) => written.next().unwrap_or(Err(AppendError::Closed)),
                Err(e) => Err(e),
            })
            .collect())
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let stream = stream.clone();
        self.off_executor(move |inner| read_stream(inner, &stream, from, max))
            .await
    }

    async fn read_all(&self, from: Position, max: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        let max = page_size(max);
        self.off_executor(move |inner| inner.offsets.read_range(from, max, inner.durable()))
            .await
    }

    async fn read_all_selected<F: Selector>(
        &self,
        from: Position,
        max: usize,
        mut select: F,
    ) -> Result<SelectedPage<F>, ReadError> {
        let max = page_size(max);
        self.off_executor(move |inner| {
            let (records, last) = inner.offsets.read_range_selected(
                from,
                max,
                inner.durable(),
                &mut |v: &RecordView<'_>| select.select(v),
            )?;
            Ok(SelectedPage {
                select,
                records,
                last,
            })
        })
        .await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<StreamVersion, ReadError> {
        let stream = stream.clone();
        self.off_executor(move |inner| inner.index()?.stream_version(&stream, inner.durable()))
            .await
    }

    fn head(&self) -> Head {
        *self.inner.head.borrow()
    }

    fn watch_head(&self) -> watch::Receiver<Head> {
        self.inner.head.subscribe()
    }
}

fn read_stream(
    inner: &Inner,
    stream: &StreamId,
    from: StreamVersion,
    max: usize,
) -> Result<Vec<RecordedEvent>, ReadError> {
    let durable = inner.durable();
    let from = StreamVersion(from.0.max(1));
    let max = page_size(max);
    let mut out = Vec::new();
    let mut expected = from;
    for run in inner.index()?.stream_runs(stream, from, durable, max)? {
        if run.last_version() < expected {
            continue;
        }
        if run.first_version > expected {
            return Err(ReadError::IndexDamaged {
                path: inner.path.join(INDEX_DIR).display().to_string(),
                reason: format!(
                    "the index of `{stream}` has no entry for version {expected}, the next \
                     starts at version {}",
                    run.first_version
                ),
            });
        }
        let skip = expected.0 - run.first_version.0;
        let want = usize::try_from(run.count - skip)
            .unwrap_or(usize::MAX)
            .min(max - out.len());
        let records =
            inner
                .offsets
                .read_range(Position(run.first_position.0 + skip), want, durable)?;
        for rec in records {
            if &rec.stream_id != stream || rec.stream_version != expected {
                return Err(ReadError::Corrupt {
                    position: rec.position,
                    reason: Corruption::StreamIndexMismatch {
                        stream: stream.clone(),
                        version: expected,
                        found_stream: rec.stream_id,
                        found_version: rec.stream_version,
                    },
                });
            }
            expected = StreamVersion(expected.0 + 1);
            out.push(rec);
        }
        if out.len() >= max {
            break;
        }
    }
    Ok(out)
}

/// Tools for tests of code built on the store (the gateway's `verify`, crash and damage
/// tests): not part of the stable API.
#[doc(hidden)]
pub mod testing {
    use super::segment::{open_segments, Offsets, Step, SEGMENTS_DIR, SEGMENT_HEADER_BYTES};
    use super::SledStore;
    use crate::error::ReadError;
    use crate::types::Position;
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::Ordering;

    /// Why [`flip_byte`] could not damage the record.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum FlipError {
        #[error("{0}")]
        Io(#[from] std::io::Error),
        #[error("the segments could not be opened: {0}")]
        Segments(String),
        #[error("no record at position {0}")]
        NoRecord(Position),
        #[error(transparent)]
        Read(ReadError),
    }

    /// Where the frame of the record at `position` is, in the closed store at `dir`: its
    /// segment file, byte offset and length.
    pub fn frame_location(
        dir: &Path,
        position: Position,
    ) -> Result<(PathBuf, u64, usize), FlipError> {
        let segments = open_segments(&dir.join(SEGMENTS_DIR))
            .map_err(|e| FlipError::Segments(e.to_string()))?;
        let offsets = Offsets::default();
        let Some(start) = segments
            .iter()
            .filter(|s| s.first <= position)
            .map(|s| s.first)
            .next_back()
        else {
            return Err(FlipError::NoRecord(position));
        };
        for s in segments {
            offsets.add_segment(s);
        }
        let mut walk = offsets
            .walk(
                start,
                super::segment::Offset {
                    segment: start,
                    at: SEGMENT_HEADER_BYTES,
                },
            )
            .map_err(FlipError::Read)?;
        while walk.position < position {
            match walk.next_frame(None).map_err(FlipError::Read)? {
                Step::End => return Err(FlipError::NoRecord(position)),
                Step::Skipped | Step::Record(_) => {}
            }
        }
        let segment = walk.segment_first();
        match walk.frame().map_err(FlipError::Read)? {
            super::segment::FrameRead::Frame(len) => Ok((
                dir.join(SEGMENTS_DIR)
                    .join(super::segment::segment_name(segment)),
                walk.at,
                len,
            )),
            _ => Err(FlipError::NoRecord(position)),
        }
    }

    /// Flips one bit in the middle of the frame of the record at `position`,
    /// in the closed store at `dir`, and makes the damage durable.
    pub fn flip_byte(dir: &Path, position: Position) -> Result<(), FlipError> {
        alter_frame(dir, position, |frame| {
            let middle = frame.len() / 2;
            frame[middle] ^= 0x01;
        })
    }

    /// Lets `alter` change the bytes of the frame of the record at `position` (e.g. one
    /// character of a field), in the closed store at `dir`, and makes the damage durable.
    pub fn alter_frame(
        dir: &Path,
        position: Position,
        alter: impl FnOnce(&mut [u8]),
    ) -> Result<(), FlipError> {
        let (path, at, len) = frame_location(dir, position)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        let mut bytes = vec![0u8; len];
        file.read_exact_at(&mut bytes, at)?;
        alter(&mut bytes);
        file.write_all_at(&bytes, at)?;
        file.sync_data()?;
        Ok(())
    }

    /// Makes the store's next `fdatasync` of a segment fail, as a failing disk would.
    pub fn fail_next_sync(store: &SledStore) {
        store
            .inner
            .inject_sync_failure
            .store(true, Ordering::Release);
    }

    /// How many syncs the writer has handed to its sync thread so far (it does when
    /// requests wait while a group is written).
    pub fn handed_syncs(store: &SledStore) -> u64 {
        store.inner.handed_syncs.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode_frame, Placement};
    use crate::types::{ChainHash, EventId};
    use chrono::DateTime;
    use uuid::Uuid;

    fn event(n: u128) -> ProposedEvent {
        ProposedEvent {
            event_id: EventId(Uuid::from_u128(n)),
            event_type: "CaseOpened".into(),
            schema_version: 1,
            occurred_at: DateTime::from_timestamp(1_600_000_000, 0).unwrap(),
            causation_id: None,
            correlation_id: None,
            actor: "test".into(),
            metadata: Vec::new(),
            payload: vec![7; 100],
        }
    }

    async fn store_with(dir: &Path, events: u128) -> SledStore {
        let store = SledStore::open(dir).unwrap();
        let s = StreamId::new("case-1").unwrap();
        for n in 1..=events {
            store
                .append(&s, ExpectedVersion::Any, vec![event(n)])
                .await
                .unwrap();
        }
        store
    }

    fn tip_segment(dir: &Path) -> PathBuf {
        let mut names: Vec<_> = std::fs::read_dir(dir.join(SEGMENTS_DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        names.sort();
        names.pop().unwrap()
    }

    /// A second open of a directory whose lock is held waits for the lock
    /// and succeeds once the holder is gone.
    #[test]
    fn open_waits_for_a_lock_released_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let first = SledStore::open(dir.path()).unwrap();
        let path = dir.path().to_path_buf();
        let second = std::thread::spawn(move || SledStore::open(&path).map(|_| ()));
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!second.is_finished(), "the second open did not wait");
        drop(first);
        assert!(second.join().unwrap().is_ok());
    }

    /// A lock that stays held ends in `OpenError::Locked`, which says that
    /// another process holds it.
    #[test]
    fn open_of_a_held_directory_says_it_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let _held =
            index::open_db(&dir.path().join(INDEX_DIR), std::time::Duration::ZERO, None).unwrap();
        let err = open_index(dir.path(), None).err().unwrap();
        assert!(matches!(err, OpenError::Locked { .. }), "{err}");
        assert!(
            err.to_string().contains("in use by another process"),
            "{err}"
        );
    }

    /// The segment size sled's `conf` file records for the index in `dir`.
    fn recorded_segment_size(dir: &Path) -> String {
        let conf = std::fs::read(dir.join(INDEX_DIR).join("conf")).unwrap();
        String::from_utf8_lossy(&conf)
            .lines()
            .find_map(|l| l.strip_prefix("segment_size: ").map(str::to_owned))
            .unwrap()
    }

    /// A new index gets the current segment size; an index made with the earlier 16 MiB
    /// segments (which sled refuses to reopen with another size) keeps them, and its log
    /// reads and appends as before.
    #[tokio::test]
    async fn an_index_keeps_the_segment_size_it_was_made_with() {
        let fresh = tempfile::tempdir().unwrap();
        store_with(fresh.path(), 3).await.close().await;
        assert_eq!(
            recorded_segment_size(fresh.path()),
            index::SEGMENT_SIZE_BYTES.to_string()
        );

        let earlier = tempfile::tempdir().unwrap();
        let sixteen = 16 * 1024 * 1024;
        drop(
            sled::Config::new()
                .path(earlier.path().join(INDEX_DIR))
                .segment_size(sixteen)
                .open()
                .unwrap(),
        );
        let store = store_with(earlier.path(), 3).await;
        store.close().await;
        let store = SledStore::open(earlier.path()).unwrap();
        assert_eq!(recorded_segment_size(earlier.path()), sixteen.to_string());
        let s = StreamId::new("case-1").unwrap();
        let r = store
            .append(&s, ExpectedVersion::Exact(StreamVersion(3)), vec![event(4)])
            .await
            .unwrap();
        assert_eq!(r.last_position, Position(4));
        let read = store.read_stream(&s, StreamVersion(1), 10).await.unwrap();
        assert_eq!(read.len(), 4);
        store.close().await;
    }

    #[tokio::test]
    async fn a_corrupted_record_is_reported_with_its_position_and_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let s = StreamId::new("case-1").unwrap();
        store_with(dir.path(), 3).await.close().await;
        testing::flip_byte(dir.path(), Position(2)).unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let err = store.read_all(Position(1), 10).await.unwrap_err();
        assert!(
            matches!(
                err,
                ReadError::Corrupt {
                    position: Position(2),
                    ..
                }
            ),
            "{err}"
        );
        let err = store
            .read_stream(&s, StreamVersion(2), 1)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ReadError::Corrupt {
                    position: Position(2),
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(store.read_all(Position(1), 1).await.unwrap().len(), 1);
        assert_eq!(
            store.read_all(Position(3), 1).await.unwrap()[0].position,
            Position(3)
        );
        let report = store.verify(Position(1), None).await.unwrap();
        assert_eq!(report.first_bad.as_ref().map(|b| b.0), Some(Position(2)));
        assert_eq!(report.checked, 1);
    }

    #[tokio::test]
    async fn a_log_written_by_a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        store_with(dir.path(), 1).await.close().await;
        {
            let db = index::open_db(
                &dir.path().join(INDEX_DIR),
                std::time::Duration::from_secs(5),
                None,
            )
            .unwrap();
            let index = Index::open(db, dir.path().join(INDEX_DIR)).unwrap();
            index.set_meta(FORMAT_KEY, &[FORMAT_VERSION + 1]).unwrap();
            index.flush().unwrap();
        }
        match SledStore::open(dir.path()) {
            Err(OpenError::NewerFormat {
                found, supported, ..
            }) => {
                assert_eq!((found, supported), (FORMAT_VERSION + 1, FORMAT_VERSION));
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a newer format was opened"),
        }
    }

    /// After a failed fsync nothing more is acknowledged, by this instance; a reopen
    /// works, and the log is whole.
    #[tokio::test]
    async fn a_failed_sync_is_final_for_the_instance() {
        let dir = tempfile::tempdir().unwrap();
        let s = StreamId::new("case-1").unwrap();
        let store = store_with(dir.path(), 2).await;
        testing::fail_next_sync(&store);
        let err = store
            .append(&s, ExpectedVersion::Any, vec![event(3)])
            .await
            .unwrap_err();
        assert!(matches!(err, AppendError::StorageFailed(_)), "{err}");
        assert!(err.to_string().contains("injected fsync failure"), "{err}");
        let err = store
            .append(&s, ExpectedVersion::Any, vec![event(4)])
            .await
            .unwrap_err();
        assert!(matches!(err, AppendError::StorageFailed(_)), "{err}");
        assert_eq!(store.head().position, Position(2));
        assert_eq!(store.read_all(Position(1), 10).await.unwrap().len(), 2);
        store.close().await;
        let store = SledStore::open(dir.path()).unwrap();
        // The unsynced group may or may not have reached the disk; either way the log is whole.
        let head = store.head().position;
        assert!(head == Position(2) || head == Position(3), "{head}");
        assert!(store.verify(Position(1), None).await.unwrap().is_ok());
        let r = store
            .append(&s, ExpectedVersion::Any, vec![event(5)])
            .await
            .unwrap();
        assert_eq!(r.last_position, Position(head.0 + 1));
    }

    /// With many writers the writer stages the next group while the sync thread syncs the
    /// last one; a sync failing there acknowledges nothing that is not durable, and the
    /// failure is final for the instance.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failed_handed_sync_acknowledges_nothing_unsynced() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let failing = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..16u128 {
            let store = store.clone();
            let failing = failing.clone();
            tasks.push(tokio::spawn(async move {
                let s = StreamId::new(format!("case-{w}")).unwrap();
                let mut acknowledged = Vec::new();
                for n in 0..2_000u128 {
                    let id = (w + 1) * 1_000_000 + n * 10;
                    let events = (id..id + 10).map(event).collect::<Vec<_>>();
                    match store.append(&s, ExpectedVersion::Any, events).await {
                        Ok(r) => acknowledged.push((id, r)),
                        Err(e) => {
                            assert!(matches!(e, AppendError::StorageFailed(_)), "{e}");
                            assert!(
                                failing.load(Ordering::Acquire),
                                "failed before the fault: {e}"
                            );
                            return acknowledged;
                        }
                    }
                    if n == 100 && w == 0 {
                        // Wait until the sync thread has been used, then fail a sync.
                        for _ in 0..500 {
                            if testing::handed_syncs(&store) >= 5 {
                                break;
                            }
                            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                        }
                        failing.store(true, Ordering::Release);
                        testing::fail_next_sync(&store);
                    }
                }
                acknowledged
            }));
        }
        let mut acknowledged = Vec::new();
        for t in tasks {
            acknowledged.extend(t.await.unwrap());
        }
        assert!(
            testing::handed_syncs(&store) >= 5,
            "the sync thread was not used"
        );
        assert!(failing.load(Ordering::Acquire));
        let head = store.head().position;
        assert!(acknowledged.iter().all(|(_, r)| r.last_position <= head));
        let err = store
            .append(
                &StreamId::new("case-x").unwrap(),
                ExpectedVersion::Any,
                vec![event(7)],
            )
            .await
            .unwrap_err();
        assert!(matches!(err, AppendError::StorageFailed(_)), "{err}");
        store.close().await;
        let store = SledStore::open(dir.path()).unwrap();
        assert!(store.head().position >= head);
        assert!(store.verify(Position(1), None).await.unwrap().is_ok());
        for (id, r) in &acknowledged {
            let page = store.read_all(r.first_position, 10).await.unwrap();
            assert_eq!(page.len(), 10);
            assert_eq!(
                page[0].event_id,
                EventId(uuid::Uuid::from_u128(*id)),
                "{r:?}"
            );
        }
        store.close().await;
    }

    /// The end of an unfinished write (never acknowledged) is set aside at the open, and
    /// the log goes on from the last whole record.
    #[tokio::test]
    async fn an_unfinished_write_at_the_end_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), 3).await;
        let head = store.head();
        store.close().await;
        // The index lost its last steps too, as after a power loss.
        std::fs::remove_dir_all(dir.path().join(INDEX_DIR)).unwrap();
        let tip = tip_segment(dir.path());
        let len = std::fs::metadata(&tip).unwrap().len();
        let s = StreamId::new("case-1").unwrap();
        let place = Placement {
            position: Position(4),
            stream_id: &s,
            stream_version: StreamVersion(4),
            recorded_at: DateTime::from_timestamp(1_600_000_000, 0).unwrap(),
            prev_hash: head.hash,
        };
        let (frame, _) = encode_frame(&event(4), &place).unwrap();
        let file = std::fs::OpenOptions::new().append(true).open(&tip).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, &frame[..frame.len() / 2], len).unwrap();
        drop(file);
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.head(), head);
        assert_eq!(std::fs::metadata(&tip).unwrap().len(), len);
        let aside = tip.with_file_name(format!(
            "{}.torn-{len}",
            tip.file_name().unwrap().to_str().unwrap()
        ));
        assert_eq!(
            std::fs::metadata(aside).unwrap().len(),
            u64::try_from(frame.len() / 2).unwrap()
        );
        let r = store
            .append(&s, ExpectedVersion::Exact(StreamVersion(3)), vec![event(4)])
            .await
            .unwrap();
        assert_eq!(r.last_position, Position(4));
        assert!(store.verify(Position(1), None).await.unwrap().is_ok());
    }

    /// A damaged record followed by intact ones is damage, not an unfinished write: the
    /// open names its position and cuts nothing.
    #[tokio::test]
    async fn damage_before_intact_records_is_not_taken_for_an_unfinished_write() {
        let dir = tempfile::tempdir().unwrap();
        store_with(dir.path(), 5).await.close().await;
        std::fs::remove_dir_all(dir.path().join(INDEX_DIR)).unwrap();
        testing::flip_byte(dir.path(), Position(3)).unwrap();
        let tip = tip_segment(dir.path());
        let len = std::fs::metadata(&tip).unwrap().len();
        let err = SledStore::open(dir.path()).err().unwrap();
        assert!(matches!(err, OpenError::Damaged { .. }), "{err}");
        let shown = err.to_string();
        assert!(shown.contains("position 3"), "{shown}");
        assert!(
            shown.contains("restore it from a replica or backup"),
            "{shown}"
        );
        assert_eq!(std::fs::metadata(&tip).unwrap().len(), len);
    }

    /// A damaged index is set aside and rebuilt from the segments.
    #[tokio::test]
    async fn a_damaged_index_is_rebuilt_from_the_segments() {
        let dir = tempfile::tempdir().unwrap();
        let head = {
            let store = store_with(dir.path(), 20).await;
            let head = store.head();
            store.close().await;
            head
        };
        let db = dir.path().join(INDEX_DIR).join("db");
        let len = std::fs::metadata(&db).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&db)
            .unwrap()
            .set_len(len / 3)
            .unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.head(), head);
        let s = StreamId::new("case-1").unwrap();
        assert_eq!(store.stream_version(&s).await.unwrap(), StreamVersion(20));
        assert_eq!(
            store
                .read_stream(&s, StreamVersion(1), 100)
                .await
                .unwrap()
                .len(),
            20
        );
        // Idempotency still knows every id.
        let r = store
            .append(&s, ExpectedVersion::Any, vec![event(7)])
            .await
            .unwrap();
        assert!(r.already_present);
    }

    /// A handle that released its index replays the whole log as before, refuses appends
    /// and stream reads with the reason, and no longer holds the index's files: another
    /// open of the directory gets sled's lock and sees every record. sled's own background
    /// threads may hold its lock file for a few milliseconds after the last handle is
    /// dropped, so the open waits for it as every open does; the store itself is still
    /// alive then, so a handle it kept would hold the lock past the wait.
    #[tokio::test]
    async fn a_released_index_leaves_the_replay_and_frees_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), 30).await;
        let s = StreamId::new("case-1").unwrap();
        let before = store.read_all(Position::FIRST, 100).await.unwrap();
        let head = store.head();
        let clone = store.clone();
        store.release_index().await;
        store.release_index().await;
        assert_eq!(store.read_all(Position::FIRST, 100).await.unwrap(), before);
        let page = store
            .read_all_selected(Position::FIRST, 100, |v: &RecordView<'_>| {
                v.stream_version.0.is_multiple_of(2)
            })
            .await
            .unwrap();
        assert_eq!(page.records.len(), 15);
        assert_eq!(page.last, Some(head.position));
        assert_eq!(store.head(), head);
        let err = store
            .read_stream(&s, StreamVersion(1), 10)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("open the log again"), "{err}");
        assert!(store.stream_version(&s).await.is_err());
        assert!(matches!(
            clone
                .append(&s, ExpectedVersion::Any, vec![event(99)])
                .await,
            Err(AppendError::Closed)
        ));
        let index_dir = dir.path().join(INDEX_DIR);
        let again = index::open_db(&index_dir, std::time::Duration::from_secs(5), None);
        assert!(again.is_ok(), "the index is still held");
        drop(again);
        drop((store, clone));
        let reopened = SledStore::open(dir.path()).unwrap();
        assert_eq!(reopened.head(), head);
        assert_eq!(
            reopened.stream_version(&s).await.unwrap(),
            StreamVersion(30)
        );
    }

    /// A read-only open reads and verifies a log without writing to its directory.
    #[tokio::test]
    async fn a_read_only_open_reads_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let head = {
            let store = store_with(dir.path(), 10).await;
            let head = store.head();
            store.close().await;
            head
        };
        let listing = |d: &Path| {
            let mut all = Vec::new();
            for e in walk_files(d) {
                let m = std::fs::metadata(&e).unwrap();
                all.push((e, m.len(), m.modified().unwrap()));
            }
            all.sort();
            all
        };
        let before = listing(dir.path());
        let store = SledStore::open_read_only(dir.path()).unwrap();
        assert_eq!(store.head(), head);
        assert!(store.verify(Position(1), None).await.unwrap().is_ok());
        let s = StreamId::new("case-1").unwrap();
        assert_eq!(
            store
                .read_stream(&s, StreamVersion(4), 3)
                .await
                .unwrap()
                .len(),
            3
        );
        assert_eq!(store.stream_version(&s).await.unwrap(), StreamVersion(10));
        let err = store
            .append(&s, ExpectedVersion::Any, vec![event(99)])
            .await
            .unwrap_err();
        assert_eq!(err, AppendError::ReadOnly);
        drop(store);
        assert_eq!(listing(dir.path()), before);
    }

    fn walk_files(d: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk_files(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    /// A read that touches the disk leaves the executor's thread free: on a current-thread
    /// runtime, another task runs while a 10,000-event page is read (a read run on the
    /// executor's thread would let no other task run until it returned).
    #[test]
    fn reads_run_off_the_executor_thread() {
        let dir = tempfile::tempdir().unwrap();
        let build = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = build.block_on(async {
            let store = SledStore::open(dir.path()).unwrap();
            let s = StreamId::new("case-1").unwrap();
            for chunk in 0..10u128 {
                let events = (1..=1_000).map(|n| event(chunk * 1_000 + n)).collect();
                store
                    .append(&s, ExpectedVersion::Any, events)
                    .await
                    .unwrap();
            }
            store
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let turns = Arc::new(AtomicU64::new(0));
            let done = Arc::new(AtomicBool::new(false));
            let counter = {
                let (turns, done) = (turns.clone(), done.clone());
                tokio::spawn(async move {
                    while !done.load(Ordering::Acquire) {
                        turns.fetch_add(1, Ordering::AcqRel);
                        tokio::task::yield_now().await;
                    }
                })
            };
            tokio::task::yield_now().await;
            let s = StreamId::new("case-1").unwrap();
            for read in 0..2 {
                let before = turns.load(Ordering::Acquire);
                let n = if read == 0 {
                    store.read_all(Position(1), 10_000).await.unwrap().len()
                } else {
                    store
                        .read_stream(&s, StreamVersion(1), 10_000)
                        .await
                        .unwrap()
                        .len()
                };
                assert_eq!(n, 10_000);
                let after = turns.load(Ordering::Acquire);
                assert!(
                    after > before,
                    "read {read}: no other task ran while it read"
                );
            }
            done.store(true, Ordering::Release);
            counter.await.unwrap();
        });
        drop(build);
    }

    /// A log in the earlier layout (records in sled chunks) is converted at its first open,
    /// frame for frame.
    #[tokio::test]
    async fn a_log_in_the_earlier_layout_is_converted() {
        let dir = tempfile::tempdir().unwrap();
        let s = StreamId::new("case-1").unwrap();
        let mut hash = ChainHash::GENESIS;
        {
            let db = index::open_db(dir.path(), std::time::Duration::from_secs(5), None).unwrap();
            let tree = db.open_tree("log").unwrap();
            let mut chunk = Vec::new();
            for n in 1..=5u64 {
                let place = Placement {
                    position: Position(n),
                    stream_id: &s,
                    stream_version: StreamVersion(n),
                    recorded_at: DateTime::from_timestamp(1_600_000_000, 0).unwrap(),
                    prev_hash: hash,
                };
                let (frame, h) = encode_frame(&event(u128::from(n)), &place).unwrap();
                hash = h;
                chunk.extend_from_slice(&frame);
                if n == 3 || n == 5 {
                    let first = if n == 3 { 1u64 } else { 4 };
                    let mut key = vec![b'C'];
                    key.extend_from_slice(&first.to_be_bytes());
                    tree.insert(key, chunk.clone()).unwrap();
                    chunk.clear();
                }
            }
            db.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.head().position, Position(5));
        assert_eq!(store.head().hash, hash);
        assert!(store.verify(Position(1), None).await.unwrap().is_ok());
        assert_eq!(store.stream_version(&s).await.unwrap(), StreamVersion(5));
        assert!(dir.path().join("sled-before-segments").join("db").is_file());
        assert!(!dir.path().join("db").exists());
    }

    /// Retries are recognised by event id wherever the id is: in the group, in the ids not
    /// yet sealed, in any sealed run, before and after a reopen; new ids are appended.
    #[tokio::test]
    async fn ids_of_a_refused_append_can_be_appended_later() {
        let dir = tempfile::tempdir().unwrap();
        let s = StreamId::new("case-1").unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let events = (1..=20u128).map(event).collect::<Vec<_>>();
        let err = store
            .append(&s, ExpectedVersion::Exact(StreamVersion(3)), events.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(err, AppendError::WrongExpectedVersion { .. }),
            "{err}"
        );
        // The writer's filters saw these ids; the log does not hold them.
        let r = store
            .append(&s, ExpectedVersion::NoStream, events.clone())
            .await
            .unwrap();
        assert!(!r.already_present);
        assert_eq!(r.first_position, Position(1));
        assert_eq!(r.last_position, Position(20));
        let again = store
            .append(&s, ExpectedVersion::NoStream, events)
            .await
            .unwrap();
        assert!(again.already_present);
        assert_eq!(again.first_position, Position(1));
        assert_eq!(store.head().position, Position(20));
        store.close().await;
    }

    /// The ids in chunks are not counted at the open but at the first seal check after it:
    /// chunks left by an earlier instance count toward the next run all the same.
    #[tokio::test]
    async fn ids_left_in_chunks_by_an_earlier_open_count_toward_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let s = StreamId::new("case-1").unwrap();
        let batch = |from: u128| (from..from + 50).map(event).collect::<Vec<_>>();
        let runs = |store: &SledStore| ids::runs(store.inner.index().unwrap().tree()).unwrap();
        let chunked =
            |store: &SledStore| ids::chunk_pair_count(store.inner.index().unwrap().tree()).unwrap();
        // Appends events `from..=to` in batches of 50, then closes the store.
        let append_through = |store: SledStore, from: u128, to: u128| {
            let s = s.clone();
            async move {
                for first in (from..=to).step_by(50) {
                    store
                        .append(&s, ExpectedVersion::Any, batch(first))
                        .await
                        .unwrap();
                }
                store.close().await;
            }
        };
        // Below a run's worth (`ids::RUN_PAIRS` is 1,000 in tests): nothing sealed.
        append_through(SledStore::open(dir.path()).unwrap(), 1, 700).await;
        let store = SledStore::open(dir.path()).unwrap();
        assert!(runs(&store).is_empty());
        assert_eq!(chunked(&store), 700);
        // 400 more in the next instance: 1,100 in chunks, so the indexer seals them.
        append_through(store, 701, 1_100).await;
        let store = SledStore::open(dir.path()).unwrap();
        let sealed = runs(&store);
        assert_eq!(sealed.len(), 1, "{sealed:?}");
        let (last, pairs) = sealed[0];
        assert!(pairs >= 1_000 && last.0 >= 1_000, "{sealed:?}");
        assert_eq!(chunked(&store), 1_100 - usize::try_from(pairs).unwrap());
        // Every id is still found: a retry of the first and of the last batch.
        for first in [1u128, 1_051] {
            let r = store
                .append(&s, ExpectedVersion::Any, batch(first))
                .await
                .unwrap();
            assert!(r.already_present, "retry of {first}");
        }
        assert_eq!(store.head().position, Position(1_100));
        store.close().await;
    }

    #[tokio::test]
    async fn retries_are_found_in_every_run_of_ids() {
        let dir = tempfile::tempdir().unwrap();
        let s = StreamId::new("case-1").unwrap();
        let batch = |from: u128| (from..from + 50).map(event).collect::<Vec<_>>();
        let events = 3_500u64;
        let store = SledStore::open(dir.path()).unwrap();
        for first in (1..=u128::from(events)).step_by(50) {
            store
                .append(&s, ExpectedVersion::Any, batch(first))
                .await
                .unwrap();
        }
        // Let the indexer catch up and seal what is due.
        for _ in 0..200 {
            if ids::runs(store.inner.index().unwrap().tree())
                .unwrap()
                .len()
                >= 3
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let retry = |store: SledStore, first: u128| {
            let s = s.clone();
            async move {
                store
                    .append(&s, ExpectedVersion::Any, batch(first))
                    .await
                    .unwrap()
            }
        };
        for first in [1u128, 1_001, 2_001, 3_451] {
            let r = retry(store.clone(), first).await;
            assert!(r.already_present, "retry of {first}");
            assert_eq!(r.first_position, Position(u64::try_from(first).unwrap()));
        }
        assert_eq!(store.head().position, Position(events));
        store.close().await;
        let store = SledStore::open(dir.path()).unwrap();
        assert!(
            ids::runs(store.inner.index().unwrap().tree())
                .unwrap()
                .len()
                >= 3
        );
        for first in [51u128, 1_501, 3_001, 3_451] {
            let r = retry(store.clone(), first).await;
            assert!(r.already_present, "retry of {first} after a reopen");
            assert_eq!(r.first_position, Position(u64::try_from(first).unwrap()));
        }
        // A batch mixing a recorded id and new ones is refused, and a new one appended.
        let mut mixed = batch(10_000);
        mixed[3] = event(77);
        let err = store
            .append(&s, ExpectedVersion::Any, mixed)
            .await
            .unwrap_err();
        assert!(
            matches!(err, AppendError::IdempotencyConflict { .. }),
            "{err}"
        );
        let r = retry(store.clone(), 10_000).await;
        assert!(!r.already_present);
        assert_eq!(r.first_position, Position(events + 1));
    }

    /// An index in the earlier layout (one entry per event id) is indexed again at open.
    #[tokio::test]
    async fn an_index_of_the_earlier_id_layout_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let s = StreamId::new("case-1").unwrap();
        let store = store_with(dir.path(), 20).await;
        store.close().await;
        {
            let index = open_index(dir.path(), None).unwrap();
            index.tree().remove(b"Mids").unwrap();
            let mut old = vec![b'I'];
            old.extend_from_slice(&[9; 16]);
            index.tree().insert(old, &5u64.to_be_bytes()).unwrap();
            index.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.head().position, Position(20));
        assert!(store
            .inner
            .index()
            .unwrap()
            .tree()
            .scan_prefix([b'I'])
            .next()
            .is_none());
        let r = store
            .append(&s, ExpectedVersion::Any, vec![event(7)])
            .await
            .unwrap();
        assert!(r.already_present);
        assert_eq!(r.first_position, Position(7));
        assert_eq!(store.stream_version(&s).await.unwrap(), StreamVersion(20));
        assert!(store.verify(Position(1), None).await.unwrap().is_ok());
    }
}
