//! The embedded default backend: the log in one sled tree, written by one
//! writer thread that commits concurrent appends together (group commit).
//!
//! Start with [`layout`] (what lives under which key) and [`writer`] (the
//! group commit). The `meta` tree holds `format` → the frame format version
//! the log was created with.
//!
//! **Architecture Invariant:** readers never look past the durable head, so a
//! record that is applied but not yet flushed is never served. A failed write
//! or flush poisons the store: it refuses every later write until reopened
//! (after an fsync error the kernel may have dropped the dirty pages; retrying
//! could acknowledge lost data). An append answered with `StorageFailed` may or
//! may not be in the log after the reopen; check by reading.
//!
//! **Durability note on sled 0.34.7.** On Linux, `Db::flush` ends in
//! `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)`, which neither persists
//! the file's metadata (its size, when the log file grows) nor flushes the
//! device's write cache; and nodes past a quarter of a segment go to blob
//! files that sled never fsyncs. So after each group's `flush` the writer also
//! calls `fdatasync` on sled's log file (`<dir>/db`), and the store keeps every
//! tree node far below the blob threshold: events are capped at
//! [`crate::limits::EVENT_SIZE_MAX_BYTES`] (64 KiB), chunks at 128 KiB, and the
//! segment size is 16 MiB (blob threshold 4 MiB; a leaf holds at most 17
//! entries before it splits).

mod layout;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error};

use crate::codec::{self, FORMAT_VERSION};
use crate::error::{AppendError, Corruption, OpenError, ReadError};
use crate::limits::APPEND_QUEUE_DEPTH;
use crate::store::{check_append, check_batch, page_size, EventStore};
use crate::types::{
    AppendResult, ExpectedVersion, Head, Position, ProposedEvent, RecordedAt, RecordedEvent,
    StreamAppend, StreamId, StreamVersion,
};
use layout::storage;
use writer::{Request, Writer};

const FORMAT_KEY: &[u8] = b"format";
/// sled's segment size; fixed at creation (sled refuses to reopen with another).
const SEGMENT_SIZE_BYTES: usize = 16 * 1024 * 1024;
/// The file sled keeps its log in, inside the store directory.
const SLED_LOG_FILE: &str = "db";

/// The sled configuration every open of a store directory must use.
///
/// No background flusher: every group commit flushes and `fdatasync`s itself, and sled's
/// flusher thread would keep the directory's lock for up to its interval after the last
/// handle is dropped.
fn sled_config(path: &Path) -> sled::Config {
    sled::Config::new()
        .path(path)
        .mode(sled::Mode::HighThroughput)
        .segment_size(SEGMENT_SIZE_BYTES)
        .flush_every_ms(None)
}

/// How a store directory is opened, beyond what every open shares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SledOptions {
    /// Bytes of pages sled keeps in memory (`None`: sled's default, 1 GiB). A bulk import,
    /// which writes once and reads back only the streams it continues, runs in a bounded
    /// footprint with a small cache; a server keeps the default.
    pub cache_bytes: Option<u64>,
}

/// How long `open` waits for the directory's lock. sled releases it from its
/// own threads a moment after the last handle is dropped, so a close followed
/// at once by an open in the same process can find it still held.
const OPEN_LOCK_WAIT_MS: u64 = 5_000;

/// Whether sled refused to open because another handle holds the directory's
/// lock. sled 0.34 reports this as an `io::ErrorKind::Other` error whose
/// message carries the OS error (`WouldBlock`), so the message is what tells.
fn is_lock_contention(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock")
        }
        _ => false,
    }
}

/// Why [`open_db`] failed.
#[derive(Debug, thiserror::Error)]
enum OpenDbError {
    /// The lock was still held when the wait ran out.
    #[error("the directory's lock is held by another handle")]
    Locked,
    #[error(transparent)]
    Sled(sled::Error),
}

/// Opens sled, waiting up to `wait` for its file lock.
fn open_db(
    path: &Path,
    wait: std::time::Duration,
    options: SledOptions,
) -> Result<sled::Db, OpenDbError> {
    let deadline = std::time::Instant::now() + wait;
    let config = || match options.cache_bytes {
        Some(bytes) => sled_config(path).cache_capacity(bytes),
        None => sled_config(path),
    };
    loop {
        match config().open() {
            Ok(db) => return Ok(db),
            Err(e) if is_lock_contention(&e) => {
                if std::time::Instant::now() >= deadline {
                    return Err(OpenDbError::Locked);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(OpenDbError::Sled(e)),
        }
    }
}

struct Inner {
    db: sled::Db,
    /// sled's log file, opened only to `fdatasync` it after each flush.
    log_file: std::fs::File,
    tree: sled::Tree,
    path: PathBuf,
    /// Position of the newest durable record; readers never look past it.
    durable: AtomicU64,
    head: watch::Sender<Head>,
    /// Set when a write or flush failed; the store then refuses writes.
    failed: Mutex<Option<String>>,
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
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }
}

/// The sled-backed [`EventStore`]. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
    requests: mpsc::Sender<Request>,
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
        let storage_err = |e: sled::Error| OpenError::Storage {
            path: shown.clone(),
            reason: e.to_string(),
        };
        let wait = std::time::Duration::from_millis(OPEN_LOCK_WAIT_MS);
        let db = open_db(&path, wait, options).map_err(|e| match e {
            OpenDbError::Locked => OpenError::Locked {
                path: shown.clone(),
            },
            OpenDbError::Sled(e) => storage_err(e),
        })?;
        let io_err = |what: &str, e: std::io::Error| OpenError::Storage {
            path: shown.clone(),
            reason: format!("{what}: {e}"),
        };
        let log_file = std::fs::File::open(path.join(SLED_LOG_FILE))
            .map_err(|e| io_err("could not open sled's log file", e))?;
        // Make the directory entries sled created durable too.
        std::fs::File::open(&path)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io_err("could not fsync the store directory", e))?;
        let meta = db.open_tree("meta").map_err(storage_err)?;
        let tree = db.open_tree("log").map_err(storage_err)?;
        match meta.get(FORMAT_KEY).map_err(storage_err)? {
            Some(v) => {
                let found = v.first().copied().unwrap_or(0);
                if found > FORMAT_VERSION {
                    return Err(OpenError::NewerFormat {
                        path: shown,
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
                if found == 0 {
                    return Err(OpenError::Damaged {
                        path: shown,
                        reason: "the format marker is empty".into(),
                    });
                }
            }
            None => {
                if !tree.is_empty() {
                    return Err(OpenError::Damaged {
                        path: shown,
                        reason: "records exist but the format marker is missing".into(),
                    });
                }
                meta.insert(FORMAT_KEY, &[FORMAT_VERSION])
                    .map_err(storage_err)?;
                db.flush().map_err(storage_err)?;
                log_file
                    .sync_data()
                    .map_err(|e| io_err("could not fsync sled's log file", e))?;
            }
        }
        let (head, last_recorded_at) = Self::recover_head(&tree, &shown)?;
        debug!(path = %shown, head = head.position.0, "opened sled event store");
        let (head_tx, _) = watch::channel(head);
        let inner = Arc::new(Inner {
            db,
            log_file,
            tree,
            path,
            durable: AtomicU64::new(head.position.0),
            head: head_tx,
            failed: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel(APPEND_QUEUE_DEPTH);
        let writer = Writer {
            inner: inner.clone(),
            head,
            last_recorded_at,
            versions: HashMap::new(),
        };
        std::thread::Builder::new()
            .name("crm-sled-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| OpenError::Storage {
                path: shown,
                reason: format!("could not start the writer thread: {e}"),
            })?;
        Ok(SledStore {
            inner,
            requests: tx,
        })
    }

    fn recover_head(
        tree: &sled::Tree,
        shown: &str,
    ) -> Result<(Head, Option<DateTime<Utc>>), OpenError> {
        let damaged = |reason: String| OpenError::Damaged {
            path: shown.to_owned(),
            reason,
        };
        let Some((first, chunk)) = layout::last_chunk(tree).map_err(|e| damaged(e.to_string()))?
        else {
            return Ok((Head::default(), None));
        };
        let mut last = None;
        for frame in layout::frames(&chunk, first) {
            last = Some(frame.map_err(|e| damaged(e.to_string()))?);
        }
        let Some((position, range)) = last else {
            return Err(damaged(format!(
                "the newest chunk, at position {first}, is empty"
            )));
        };
        let rec = codec::decode(&chunk[range], Some(position), true).map_err(|e| {
            damaged(format!(
                "the newest record, at position {position}, is corrupt: {e}"
            ))
        })?;
        let indexed =
            layout::id_position(tree, &rec.event_id).map_err(|e| damaged(e.to_string()))?;
        if indexed != Some(position) {
            return Err(damaged(format!(
                "the newest record, at position {position}, is missing from the event id index"
            )));
        }
        let version = layout::stream_version(tree, &rec.stream_id, position)
            .map_err(|e| damaged(e.to_string()))?;
        if version != rec.stream_version {
            return Err(damaged(format!(
                "the newest record is version {} of `{}` but the stream index says {version}",
                rec.stream_version, rec.stream_id
            )));
        }
        Ok((rec.as_head(), Some(rec.recorded_at)))
    }

    /// Stops the writer after the appends already queued, and waits for it.
    /// Appends sent after this fail with [`AppendError::Closed`]. The files
    /// are released when the last clone of this store is dropped.
    pub async fn close(self) {
        let (done, wait) = oneshot::channel();
        if self.requests.send(Request::Close { done }).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk_bytes(&self) -> Result<u64, ReadError> {
        self.inner.db.size_on_disk().map_err(storage)
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
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
        self.requests
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
            self.requests
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
        let durable = self.inner.durable();
        let from = StreamVersion(from.0.max(1));
        let max = page_size(max);
        let mut out = Vec::new();
        let mut expected = from;
        for run in layout::stream_runs(&self.inner.tree, stream, from, durable) {
            let run = run?;
            if run.last_version() < from {
                continue;
            }
            let skip = expected.0.saturating_sub(run.first_version.0);
            let want = usize::try_from(run.count - skip)
                .unwrap_or(usize::MAX)
                .min(max - out.len());
            let records = layout::read_range(
                &self.inner.tree,
                Position(run.first_position.0 + skip),
                want,
                durable,
            )?;
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

    async fn read_all(&self, from: Position, max: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        layout::read_range(&self.inner.tree, from, page_size(max), self.inner.durable())
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<StreamVersion, ReadError> {
        layout::stream_version(&self.inner.tree, stream, self.inner.durable())
    }

    fn head(&self) -> Head {
        *self.inner.head.borrow()
    }

    fn watch_head(&self) -> watch::Receiver<Head> {
        self.inner.head.subscribe()
    }
}

/// Tools for tests of code built on the store (the gateway's `verify`, crash
/// tests): not part of the stable API.
#[doc(hidden)]
pub mod testing {
    use super::{layout, OpenDbError};
    use crate::error::ReadError;
    use crate::types::Position;
    use std::path::Path;

    /// Why [`flip_byte`] could not damage the record.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum FlipError {
        #[error("the directory's lock is held by another handle")]
        Locked,
        #[error(transparent)]
        Storage(sled::Error),
        #[error("no record at position {0}")]
        NoRecord(Position),
        #[error(transparent)]
        Read(ReadError),
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
        let wait = std::time::Duration::from_millis(super::OPEN_LOCK_WAIT_MS);
        let db = super::open_db(dir, wait, super::SledOptions::default()).map_err(|e| match e {
            OpenDbError::Locked => FlipError::Locked,
            OpenDbError::Sled(e) => FlipError::Storage(e),
        })?;
        let tree = db.open_tree("log").map_err(FlipError::Storage)?;
        let (first, chunk) = layout::chunk_holding(&tree, position)
            .map_err(FlipError::Read)?
            .ok_or(FlipError::NoRecord(position))?;
        let range = layout::frames(&chunk, first)
            .find_map(|f| match f {
                Ok((p, range)) if p == position => Some(Ok(range)),
                Ok(_) => None,
                Err(e) => Some(Err(FlipError::Read(e))),
            })
            .ok_or(FlipError::NoRecord(position))??;
        let mut bytes = chunk.to_vec();
        alter(&mut bytes[range]);
        tree.insert(layout::chunk_key(first), bytes)
            .map_err(FlipError::Storage)?;
        db.flush().map_err(FlipError::Storage)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EventId;
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

    /// A second open of a directory whose lock is held waits for the lock
    /// and succeeds once the holder is gone.
    #[test]
    fn open_waits_for_a_lock_released_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let first = sled_config(dir.path()).open().unwrap();
        let path = dir.path().to_path_buf();
        let second = std::thread::spawn(move || {
            open_db(
                &path,
                std::time::Duration::from_secs(20),
                SledOptions::default(),
            )
            .map(|_| ())
        });
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
        let _held = sled_config(dir.path()).open().unwrap();
        let err = open_db(
            dir.path(),
            std::time::Duration::from_millis(100),
            SledOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, OpenDbError::Locked));
        let shown = OpenError::Locked {
            path: dir.path().display().to_string(),
        }
        .to_string();
        assert!(shown.contains("in use by another process"), "{shown}");
    }

    #[tokio::test]
    async fn a_corrupted_record_is_reported_with_its_position_and_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let s = StreamId::new("case-1").unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            for n in 1..=3 {
                store
                    .append(&s, ExpectedVersion::Any, vec![event(n)])
                    .await
                    .unwrap();
            }
            store.close().await;
        }
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
        {
            let db = sled_config(dir.path()).open().unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert(FORMAT_KEY, &[FORMAT_VERSION + 1])
                .unwrap();
            db.flush().unwrap();
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
}
