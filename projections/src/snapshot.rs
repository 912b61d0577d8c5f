//! Snapshots: a projection's state and its checkpoint in one file, replaced atomically.
//!
//! File format (version [`SNAPSHOT_FORMAT`]): one line of JSON header ([`SnapshotHeader`]:
//! projection name, code version, configuration, [`Progress`] = the checkpoint, state length
//! and CRC-32; the line may end in spaces), a newline, then the state in bincode 2.0 (serde,
//! standard configuration: variable-length integers, little endian; instants as seconds and
//! nanoseconds since the epoch, see `crate::instants`). Each value of a read-model table is a
//! byte string holding the value's own encoding, the bytes a spilled run holds: a save copies
//! the values on disk and a load streams them back into a run, neither decoding them (see
//! `crate::table`). The checksum is checked before anything is decoded, so a flipped byte in
//! a value nobody decodes at load is still caught (the snapshot is stale: the projection is
//! rebuilt from the log). Format 3 (table values inline, no checksum) and format 1 (the state
//! as JSON after the same header line) are still loaded: an upgraded build resumes from the
//! snapshots of the one before and writes format 4 at its next save; the header stays JSON,
//! so [`read_header`] reads any of them. A save writes `<file>.tmp`, `fsync`s it, renames it over
//! `<file>` and `fsync`s the directory, so after a crash the file holds either the previous
//! or the new (state, checkpoint) pair, never a mix: a restarted worker resumes exactly
//! after the checkpoint, so no event is applied twice or skipped.
//!
//! Why bincode: at a million events the four states take about 200 MiB as JSON, and writing
//! them at the head of a catch-up took longer than the fold; the binary form is smaller and
//! several times cheaper to write. A state type must then not rely on `deserialize_any`
//! (internally tagged or untagged enums, `skip_serializing_if`); the read models' one tagged
//! enum keeps its JSON shape for human-readable formats and is externally tagged otherwise, and
//! its instants carry `#[serde(with = "crate::instants")]`, which keeps their JSON shape too.
//!
//! Why a file and not a sled tree: a state can be megabytes, and sled 0.34.7 puts large values
//! in blob files it never fsyncs (see ARCHITECTURE.md, Durability).

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ProjectionError;
use crate::projection::{Progress, Projection};

mod fast_text;

/// Format version of snapshot files written by this build (the state in bincode, instants
/// as seconds and nanoseconds, table values as byte strings, a checksum in the header).
/// Format 2, which wrote instants as text in bincode, lived for one commit: its snapshots are
/// stale (the projection rebuilds from position 0).
pub const SNAPSHOT_FORMAT: u32 = 4;

/// The earlier binary format, still loaded: as format 4, but each table value inline
/// rather than a byte string, and no checksum.
pub const SNAPSHOT_FORMAT_INLINE: u32 = 3;

/// The earlier format, still loaded: the state as JSON.
pub const SNAPSHOT_FORMAT_JSON: u32 = 1;

/// The bincode configuration of format 3.
fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Largest header line read, in bytes (the header is small; a bigger one is corrupt).
const HEADER_SIZE_MAX_BYTES: u64 = 1024 * 1024;

/// File name of the serving snapshot inside a projection's directory.
pub const SERVING_FILE: &str = "snapshot.json";
/// File name of the snapshot a rebuild writes beside the serving one.
pub const REBUILD_FILE: &str = "rebuild.json";

/// First line of a snapshot file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// [`SNAPSHOT_FORMAT`] of the writer.
    pub format: u32,
    /// Projection name.
    pub projection: String,
    /// Code version of the projection that wrote it.
    pub version: u32,
    /// Configuration the state was folded with.
    pub config: serde_json::Value,
    /// The checkpoint: the state covers exactly the events up to `progress.position`.
    pub progress: Progress,
    /// Length of the state after the header line, in bytes.
    pub state_size_bytes: u64,
    /// CRC-32 (IEEE) of the state's bytes, checked before they are decoded (format 4 on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_crc32: Option<u32>,
    /// Wall-clock time of the save (informational only).
    pub saved_at: DateTime<Utc>,
}

/// What loading a snapshot found.
#[derive(Debug)]
pub enum Loaded<S> {
    /// No snapshot: start from position 0.
    Fresh,
    /// A snapshot of this version and configuration.
    Resumed { state: S, progress: Progress },
    /// A snapshot that cannot be used (other version or configuration, or damaged): rebuild
    /// from position 0. The reason is shown in `status`.
    Stale { reason: String },
}

fn io_err(
    projection: &str,
    action: &'static str,
    path: &Path,
    e: impl ToString,
) -> ProjectionError {
    ProjectionError::Io {
        projection: projection.to_owned(),
        action,
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Directory of a projection's files under the data directory.
pub fn projection_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(name)
}

/// Reads only the header of a snapshot (for `status` from another process); `None` if absent.
///
/// # Errors
/// [`ProjectionError::Io`] when the file exists but cannot be read or parsed.
pub fn read_header(
    path: &Path,
    projection: &str,
) -> Result<Option<SnapshotHeader>, ProjectionError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(projection, "opening", path, e)),
    };
    let mut reader = BufReader::new(file).take(HEADER_SIZE_MAX_BYTES);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| io_err(projection, "reading", path, e))?;
    serde_json::from_str(line.trim_end())
        .map(Some)
        .map_err(|e| io_err(projection, "parsing the header of", path, e))
}

/// Loads the snapshot at `path` for `projection`.
///
/// # Errors
/// [`ProjectionError::Io`] when the file exists but cannot be read (a damaged or foreign
/// file is [`Loaded::Stale`], not an error: the projection is rebuilt from the log).
pub fn load<P: Projection>(
    projection: &P,
    path: &Path,
) -> Result<Loaded<P::State>, ProjectionError> {
    let name = projection.name();
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::Fresh),
        Err(e) => return Err(io_err(name, "reading", path, e)),
    };
    let Some(split) = bytes.iter().position(|b| *b == b'\n') else {
        return Ok(Loaded::Stale {
            reason: "snapshot has no header line (damaged)".into(),
        });
    };
    let (head, rest) = bytes.split_at(split);
    let body = rest.get(1..).unwrap_or_default();
    let header: SnapshotHeader = match serde_json::from_slice(head) {
        Ok(h) => h,
        Err(e) => {
            return Ok(Loaded::Stale {
                reason: format!("snapshot header is damaged: {e}"),
            })
        }
    };
    if ![
        SNAPSHOT_FORMAT,
        SNAPSHOT_FORMAT_INLINE,
        SNAPSHOT_FORMAT_JSON,
    ]
    .contains(&header.format)
    {
        return Ok(Loaded::Stale {
            reason: format!(
                "snapshot format {} (this build reads {SNAPSHOT_FORMAT_JSON}, {SNAPSHOT_FORMAT_INLINE} and {SNAPSHOT_FORMAT})",
                header.format
            ),
        });
    }
    if header.projection != name {
        return Ok(Loaded::Stale {
            reason: format!("snapshot belongs to projection `{}`", header.projection),
        });
    }
    if header.version != projection.version() {
        return Ok(Loaded::Stale {
            reason: format!(
                "code version changed from {} to {}",
                header.version,
                projection.version()
            ),
        });
    }
    if header.config != projection.config() {
        return Ok(Loaded::Stale {
            reason: "configuration changed".into(),
        });
    }
    if u64::try_from(body.len()).ok() != Some(header.state_size_bytes) {
        return Ok(Loaded::Stale {
            reason: format!(
                "state is {} bytes, the header says {} (damaged)",
                body.len(),
                header.state_size_bytes
            ),
        });
    }
    if header.format == SNAPSHOT_FORMAT {
        let crc = crc32fast::hash(body);
        if header.state_crc32 != Some(crc) {
            return Ok(Loaded::Stale {
                reason: format!(
                    "the state's checksum is {crc:08x}, the header says {} (damaged)",
                    header
                        .state_crc32
                        .map_or_else(|| "none".to_owned(), |c| format!("{c:08x}"))
                ),
            });
        }
    }
    match decode_state(header.format, body) {
        Ok(state) => Ok(Loaded::Resumed {
            state,
            progress: header.progress,
        }),
        Err(reason) => Ok(Loaded::Stale {
            reason: format!("state does not parse: {reason}"),
        }),
    }
}

/// Why a state body did not decode.
#[derive(Debug, thiserror::Error)]
enum DecodeError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Bincode(#[from] bincode::error::DecodeError),
    #[error("{unread} bytes after the state (damaged)")]
    Trailing { unread: usize },
}

/// Decodes a state body of snapshot format `format` (one of the three this build reads).
fn decode_state<S: serde::de::DeserializeOwned>(
    format: u32,
    body: &[u8],
) -> Result<S, DecodeError> {
    if format == SNAPSHOT_FORMAT_JSON {
        return Ok(serde_json::from_slice(body)?);
    }
    let decode = || bincode::serde::decode_from_slice(body, bincode_config());
    let (state, read) = if format == SNAPSHOT_FORMAT_INLINE {
        crate::table::with_inline_values(decode)?
    } else {
        decode()?
    };
    match body.len().checked_sub(read) {
        Some(0) => Ok(state),
        unread => Err(DecodeError::Trailing {
            unread: unread.unwrap_or_default(),
        }),
    }
}

fn header_of<P: Projection>(
    projection: &P,
    progress: &Progress,
    size: u64,
    crc: u32,
    saved_at: DateTime<Utc>,
) -> SnapshotHeader {
    SnapshotHeader {
        format: SNAPSHOT_FORMAT,
        projection: projection.name().to_owned(),
        version: projection.version(),
        config: projection.config(),
        progress: progress.clone(),
        state_size_bytes: size,
        state_crc32: Some(crc),
        saved_at,
    }
}

fn serialize_error(projection: &str, e: &impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Serialize {
        projection: projection.to_owned(),
        reason: e.to_string(),
    }
}

/// Writes the state in format [`SNAPSHOT_FORMAT`] to `out` (text formatted on the
/// stack, see [`fast_text`]).
fn write_state<S: Serialize, W: Write>(
    state: &S,
    out: &mut W,
) -> Result<(), bincode::error::EncodeError> {
    bincode::serde::encode_into_std_write(fast_text::Wrap(state), out, bincode_config()).map(|_| ())
}

/// Serializes a snapshot to bytes (header line + state).
///
/// # Errors
/// [`ProjectionError::Serialize`] if the state cannot be serialized.
pub fn encode<P: Projection>(
    projection: &P,
    state: &P::State,
    progress: &Progress,
) -> Result<Vec<u8>, ProjectionError> {
    let ser = |e: serde_json::Error| serialize_error(projection.name(), &e);
    let mut body = Vec::new();
    write_state(state, &mut body).map_err(|e| serialize_error(projection.name(), &e))?;
    let size = u64::try_from(body.len()).unwrap_or(u64::MAX);
    let header = header_of(
        projection,
        progress,
        size,
        crc32fast::hash(&body),
        Utc::now(),
    );
    let mut out = serde_json::to_vec(&header).map_err(ser)?;
    out.push(b'\n');
    out.extend_from_slice(&body);
    Ok(out)
}

/// Bytes of spaces reserved after the header line's JSON: the header is written before the
/// state with a size of 0 and the widest checksum, then rewritten in place with the state's
/// size, whose digits take at most 19 bytes more (everything else in the header stays the
/// same).
const HEADER_SLACK_BYTES: usize = 32;

/// Buffer between the serializer and the snapshot file.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Hashes (CRC-32) the bytes written through it after the first `skip`: the snapshot file
/// below its buffer, so the state is hashed in the buffer's large blocks and the header
/// line is not.
struct Checksummed<W> {
    inner: W,
    skip: u64,
    hasher: crc32fast::Hasher,
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        let written = buf.get(..n).unwrap_or_default();
        let skipped = usize::try_from(self.skip).map_or(written.len(), |s| s.min(written.len()));
        self.hasher
            .update(written.get(skipped..).unwrap_or_default());
        self.skip = self
            .skip
            .saturating_sub(u64::try_from(skipped).unwrap_or(u64::MAX));
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Counts the bytes written through it.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += u64::try_from(n).unwrap_or(u64::MAX);
        Ok(n)
    }

    /// The serializer writes every field with `write_all`: one call into the buffer, not
    /// the default loop over `write`.
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(buf)?;
        self.written += u64::try_from(buf.len()).unwrap_or(u64::MAX);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Serializes the snapshot of `state` straight into `path`, atomically and durably: into
/// `<file>.tmp`, then `fsync`, rename over `<file>`, `fsync` of the directory. The state is
/// streamed to the file (no copy of it in memory); the header line, written first with room
/// to spare, is then rewritten in place with the state's size (it may end in spaces).
///
/// # Errors
/// [`ProjectionError::Serialize`] if the state cannot be serialized, [`ProjectionError::Io`]
/// naming the step that failed.
pub fn save<P: Projection>(
    projection: &P,
    state: &P::State,
    progress: &Progress,
    path: &Path,
) -> Result<(), ProjectionError> {
    let name = projection.name();
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| io_err(name, "creating", dir, e))?;
    let tmp = path.with_extension("tmp");
    let saved_at = Utc::now();
    let header_json = |size: u64, crc: u32| {
        serde_json::to_vec(&header_of(projection, progress, size, crc, saved_at))
            .map_err(|e| serialize_error(name, &e))
    };
    // The header line padded with spaces to `width` bytes, then the newline.
    let header_line = |size: u64, crc: u32, width: usize| -> Result<Vec<u8>, ProjectionError> {
        let mut line = header_json(size, crc)?;
        if line.len() > width {
            return Err(ProjectionError::Serialize {
                projection: name.to_owned(),
                reason: format!(
                    "the snapshot header grew from {width} to {} bytes while the state was written",
                    line.len()
                ),
            });
        }
        line.resize(width, b' ');
        line.push(b'\n');
        Ok(line)
    };
    let width = header_json(0, u32::MAX)?
        .len()
        .saturating_add(HEADER_SLACK_BYTES);
    let file = File::create(&tmp).map_err(|e| io_err(name, "creating", &tmp, e))?;
    let first_line = header_line(0, u32::MAX, width)?;
    let checksummed = Checksummed {
        inner: file,
        skip: u64::try_from(first_line.len()).unwrap_or(u64::MAX),
        hasher: crc32fast::Hasher::new(),
    };
    let mut out = Counting {
        inner: std::io::BufWriter::with_capacity(WRITE_BUFFER_BYTES, checksummed),
        written: 0,
    };
    out.write_all(&first_line)
        .map_err(|e| io_err(name, "writing", &tmp, e))?;
    let header_bytes = out.written;
    write_state(state, &mut out).map_err(|e| match (e, projection.fault(state)) {
        (_, Some(reason)) => ProjectionError::StateStorage {
            projection: name.to_owned(),
            reason,
        },
        (bincode::error::EncodeError::Io { inner, .. }, None) => {
            io_err(name, "writing", &tmp, inner)
        }
        (other, None) => serialize_error(name, &other),
    })?;
    let size = out.written.saturating_sub(header_bytes);
    let checksummed = out
        .inner
        .into_inner()
        .map_err(|e| io_err(name, "writing", &tmp, e.error()))?;
    let crc = checksummed.hasher.finalize();
    let mut file = checksummed.inner;
    let header = header_line(size, crc, width)?;
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(&header))
        .map_err(|e| io_err(name, "writing", &tmp, e))?;
    file.sync_all()
        .map_err(|e| io_err(name, "fsyncing", &tmp, e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| io_err(name, "renaming into", path, e))?;
    sync_dir(name, dir)
}

/// Writes `bytes` to `path` atomically and durably (tmp file, fsync, rename, fsync dir).
///
/// # Errors
/// [`ProjectionError::Io`] naming the step that failed.
pub fn write_atomic(projection: &str, path: &Path, bytes: &[u8]) -> Result<(), ProjectionError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| io_err(projection, "creating", dir, e))?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).map_err(|e| io_err(projection, "creating", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| io_err(projection, "writing", &tmp, e))?;
        f.sync_all()
            .map_err(|e| io_err(projection, "fsyncing", &tmp, e))?;
    }
    fs::rename(&tmp, path).map_err(|e| io_err(projection, "renaming into", path, e))?;
    sync_dir(projection, dir)
}

/// Renames `from` over `to` and makes the rename durable.
///
/// # Errors
/// [`ProjectionError::Io`].
pub fn replace(projection: &str, from: &Path, to: &Path) -> Result<(), ProjectionError> {
    fs::rename(from, to).map_err(|e| io_err(projection, "renaming into", to, e))?;
    sync_dir(projection, to.parent().unwrap_or(Path::new(".")))
}

/// Removes a file if it exists.
///
/// # Errors
/// [`ProjectionError::Io`] for any error but "not found".
pub fn remove(projection: &str, path: &Path) -> Result<(), ProjectionError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(projection, "removing", path, e)),
    }
}

fn sync_dir(projection: &str, dir: &Path) -> Result<(), ProjectionError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(projection, "fsyncing directory", dir, e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::projection::EventContext;
    use crm_domain::DomainEvent;

    struct P(u32);
    impl Projection for P {
        type State = Vec<u64>;
        fn name(&self) -> &'static str {
            "p"
        }
        fn version(&self) -> u32 {
            self.0
        }
        fn wants(&self, _: &str) -> bool {
            true
        }
        fn apply(&self, _: &mut Vec<u64>, _: &EventContext<'_>, _: &DomainEvent) {}
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "status", rename_all = "snake_case")]
    enum Tagged {
        Open,
        Won { at: DateTime<Utc>, amount: i64 },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Plain {
        Unit,
        Newtype(DateTime<Utc>),
        Tuple(u8, Option<DateTime<Utc>>),
        Struct { at: DateTime<Utc> },
    }

    /// Text longer than the inline buffer, written through `collect_str` in many pieces.
    struct Long;
    impl Serialize for Long {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            struct Pieces;
            impl std::fmt::Display for Pieces {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    for i in 0..40 {
                        writeln!(f, "piece {i} \"quoted\" é")?;
                    }
                    Ok(())
                }
            }
            s.collect_str(&Pieces)
        }
    }

    #[derive(Serialize)]
    struct Sample {
        at: DateTime<Utc>,
        maybe: Option<DateTime<Utc>>,
        none: Option<DateTime<Utc>>,
        pairs: Vec<(DateTime<Utc>, i64)>,
        by_key: std::collections::BTreeMap<String, DateTime<Utc>>,
        tagged: Vec<Tagged>,
        plain: Vec<Plain>,
        long: Long,
        text: String,
    }

    /// Loads the snapshot at `path` for `P(1)` and checks that it resumes with `state` at
    /// `position`.
    fn assert_resumes(path: &Path, state: &[u64], position: u64) {
        match load(&P(1), path).unwrap() {
            Loaded::Resumed {
                state: loaded,
                progress,
            } => {
                assert_eq!(loaded, state);
                assert_eq!(progress.position.0, position);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn snapshot_json_is_byte_for_byte_serde_json() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let sample = Sample {
            at: t("2024-03-01T10:00:00Z"),
            maybe: Some(t("2024-03-01T10:00:00.123456789Z")),
            none: None,
            pairs: vec![
                (t("1999-12-31T23:59:59.5Z"), -3),
                (t("2030-01-01T00:00:00Z"), 7),
            ],
            by_key: [("b\"x".to_owned(), t("2024-02-29T12:00:00Z"))].into(),
            tagged: vec![
                Tagged::Open,
                Tagged::Won {
                    at: t("2024-03-01T10:00:00.001Z"),
                    amount: 5,
                },
            ],
            plain: vec![
                Plain::Unit,
                Plain::Newtype(t("2024-03-01T10:00:00Z")),
                Plain::Tuple(1, None),
                Plain::Struct {
                    at: t("2024-03-01T10:00:00Z"),
                },
            ],
            long: Long,
            text: "tab\t and \u{1} control".into(),
        };
        let mut fast = Vec::new();
        fast_text::serialize(&sample, &mut serde_json::Serializer::new(&mut fast)).unwrap();
        assert_eq!(
            String::from_utf8(fast).unwrap(),
            serde_json::to_string(&sample).unwrap()
        );
    }

    #[test]
    fn roundtrip_and_every_unusable_file_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p").join(SERVING_FILE);
        assert!(matches!(load(&P(1), &path).unwrap(), Loaded::Fresh));
        let progress = Progress {
            position: crm_eventstore::Position(7),
            ..Progress::default()
        };
        let bytes = encode(&P(1), &vec![1, 2, 3], &progress).unwrap();
        write_atomic("p", &path, &bytes).unwrap();
        assert_resumes(&path, &[1, 2, 3], 7);
        assert_eq!(
            read_header(&path, "p")
                .unwrap()
                .unwrap()
                .progress
                .position
                .0,
            7
        );
        assert!(matches!(load(&P(2), &path).unwrap(), Loaded::Stale { .. }));
        // A torn or altered state is never loaded.
        write_atomic("p", &path, &bytes[..bytes.len() - 2]).unwrap();
        assert!(matches!(load(&P(1), &path).unwrap(), Loaded::Stale { .. }));
        write_atomic("p", &path, b"garbage").unwrap();
        assert!(matches!(load(&P(1), &path).unwrap(), Loaded::Stale { .. }));
    }

    #[test]
    fn a_streamed_snapshot_loads_like_an_encoded_one_and_a_torn_one_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p").join(SERVING_FILE);
        let progress = Progress {
            position: crm_eventstore::Position(9),
            ..Progress::default()
        };
        let state: Vec<u64> = (0..100_000).collect();
        save(&P(1), &state, &progress, &path).unwrap();
        assert_resumes(&path, &state, 9);
        let header = read_header(&path, "p").unwrap().unwrap();
        assert_eq!(header.progress.position.0, 9);
        // The same state bytes as the in-memory encoding, after a header line of its own.
        let bytes = fs::read(&path).unwrap();
        let encoded = encode(&P(1), &state, &progress).unwrap();
        let body = |b: &[u8]| b[b.iter().position(|c| *c == b'\n').unwrap() + 1..].to_vec();
        assert_eq!(body(&bytes), body(&encoded));
        assert_eq!(header.state_size_bytes, body(&bytes).len() as u64);
        // Torn (a crash while writing the temporary file is never renamed in, but a damaged
        // file must still be refused).
        write_atomic("p", &path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(matches!(load(&P(1), &path).unwrap(), Loaded::Stale { .. }));
    }

    #[test]
    fn a_format_1_json_snapshot_still_loads_and_the_next_save_writes_the_current_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p").join(SERVING_FILE);
        let progress = Progress {
            position: crm_eventstore::Position(11),
            ..Progress::default()
        };
        let state: Vec<u64> = vec![4, 5, 6];
        // Written as the builds before format 2 wrote it: JSON header line, JSON state.
        let body = serde_json::to_vec(&state).unwrap();
        let mut header = header_of(&P(1), &progress, body.len() as u64, 0, Utc::now());
        header.format = SNAPSHOT_FORMAT_JSON;
        header.state_crc32 = None;
        let mut bytes = serde_json::to_vec(&header).unwrap();
        bytes.push(b'\n');
        bytes.extend_from_slice(&body);
        write_atomic("p", &path, &bytes).unwrap();
        assert_resumes(&path, &state, 11);
        save(&P(1), &state, &progress, &path).unwrap();
        let header = read_header(&path, "p").unwrap().unwrap();
        assert_eq!(header.format, SNAPSHOT_FORMAT);
        assert!(matches!(
            load(&P(1), &path).unwrap(),
            Loaded::Resumed { .. }
        ));
        // A format this build does not know is stale, never guessed at.
        let unknown =
            String::from_utf8(bytes.clone())
                .unwrap()
                .replacen("\"format\":1", "\"format\":9", 1);
        write_atomic("p", &path, unknown.as_bytes()).unwrap();
        assert!(matches!(load(&P(1), &path).unwrap(), Loaded::Stale { .. }));
    }

    #[test]
    fn the_pipeline_state_round_trips_in_both_formats_and_its_json_shape_is_unchanged() {
        use crate::read_models::pipeline::{OppStatus, PipelineProjection, PipelineState};
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let won = OppStatus::Won {
            at: t("2024-03-01T10:00:00Z"),
            amount_minor: 500,
            currency: "USD".into(),
        };
        assert_eq!(
            serde_json::to_value(&won).unwrap(),
            serde_json::json!({"status": "won", "at": "2024-03-01T10:00:00Z", "amount_minor": 500, "currency": "USD"})
        );
        let statuses = [
            OppStatus::Open,
            won,
            OppStatus::Lost {
                at: t("2024-03-02T10:00:00Z"),
                reason: "price".into(),
            },
            OppStatus::Voided {
                at: t("2024-03-03T10:00:00Z"),
            },
        ];
        let json = serde_json::to_string(&statuses).unwrap();
        assert_eq!(
            serde_json::from_str::<Vec<OppStatus>>(&json).unwrap(),
            statuses
        );
        let binary = bincode::serde::encode_to_vec(statuses.as_slice(), bincode_config()).unwrap();
        let (decoded, _): (Vec<OppStatus>, usize) =
            bincode::serde::decode_from_slice(&binary, bincode_config()).unwrap();
        assert_eq!(decoded, statuses);
        // And a whole state through a save and a load.
        let mut state = PipelineState::default();
        for (i, status) in statuses.into_iter().enumerate() {
            let opened = r#"{"account":"a","owner":"o","product":"p","amount_minor":1,"currency":"USD","expected_close":"2024-04-01","kind":"new","stage":"s","probability":10,"opened_at":"2024-01-01T00:00:00Z","is_test":false,"status":{"status":"open"},"visits":[],"closed_by":null}"#;
            let mut opp: crate::read_models::pipeline::Opp = serde_json::from_str(opened).unwrap();
            opp.status = status;
            state.opportunities.insert(format!("o{i}").into(), opp);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SERVING_FILE);
        let projection = PipelineProjection::default();
        save(&projection, &state, &Progress::default(), &path).unwrap();
        match load(&projection, &path).unwrap() {
            Loaded::Resumed { state: loaded, .. } => assert_eq!(loaded, state),
            other => panic!("{other:?}"),
        }
    }

    /// A pipeline state of `n` opportunities, some spilled to disk when `n` passes a
    /// generation.
    fn pipeline_state(n: usize) -> crate::read_models::pipeline::PipelineState {
        let mut state = crate::read_models::pipeline::PipelineState::default();
        for i in 0..n {
            let opened = format!(
                r#"{{"account":"a{i}","owner":"o","product":"p","amount_minor":{i},"currency":"USD","expected_close":"2024-04-01","kind":"new","stage":"s","probability":10,"opened_at":"2024-01-01T00:00:00Z","is_test":false,"status":{{"status":"open"}},"visits":[],"closed_by":null}}"#
            );
            let opp: crate::read_models::pipeline::Opp = serde_json::from_str(&opened).unwrap();
            state
                .opportunities
                .insert(format!("opp-{i:06}").into(), opp);
        }
        state
    }

    #[test]
    fn a_format_3_snapshot_with_inline_table_values_still_loads() {
        use crate::read_models::pipeline::PipelineProjection;
        let state = pipeline_state(30_000);
        let projection = PipelineProjection::default();
        let progress = Progress {
            position: crm_eventstore::Position(30_000),
            ..Progress::default()
        };
        // Written as format 3 wrote it: each table value inline, no checksum.
        let mut body = Vec::new();
        crate::table::with_inline_values(|| write_state(&state, &mut body)).unwrap();
        let mut current = Vec::new();
        write_state(&state, &mut current).unwrap();
        assert_ne!(body, current, "format 4 holds table values as byte strings");
        let mut header = header_of(&projection, &progress, body.len() as u64, 0, Utc::now());
        header.format = SNAPSHOT_FORMAT_INLINE;
        header.state_crc32 = None;
        let mut bytes = serde_json::to_vec(&header).unwrap();
        bytes.push(b'\n');
        bytes.extend_from_slice(&body);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SERVING_FILE);
        write_atomic("pipeline", &path, &bytes).unwrap();
        match load(&projection, &path).unwrap() {
            Loaded::Resumed {
                state: loaded,
                progress: p,
            } => {
                assert_eq!(loaded, state);
                assert_eq!(p.position.0, 30_000);
            }
            other => panic!("{other:?}"),
        }
        // The next save writes format 4, which loads to the same state.
        save(&projection, &state, &progress, &path).unwrap();
        assert_eq!(
            read_header(&path, "pipeline").unwrap().unwrap().format,
            SNAPSHOT_FORMAT
        );
        match load(&projection, &path).unwrap() {
            Loaded::Resumed { state: loaded, .. } => assert_eq!(loaded, state),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_flipped_byte_in_a_format_4_state_fails_its_checksum_and_is_stale() {
        use crate::read_models::pipeline::PipelineProjection;
        let state = pipeline_state(2_000);
        let projection = PipelineProjection::default();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SERVING_FILE);
        save(&projection, &state, &Progress::default(), &path).unwrap();
        let header = read_header(&path, "pipeline").unwrap().unwrap();
        let bytes = fs::read(&path).unwrap();
        let body_start = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
        assert_eq!(
            header.state_crc32,
            Some(crc32fast::hash(&bytes[body_start..]))
        );
        // The same body as the in-memory encoding, checksum included.
        let encoded = encode(&projection, &state, &Progress::default()).unwrap();
        assert_eq!(
            &encoded[encoded.iter().position(|b| *b == b'\n').unwrap() + 1..],
            &bytes[body_start..]
        );
        // A byte inside a table value (the body's middle) flipped: it would still decode.
        let mut damaged = bytes.clone();
        let middle = body_start + (bytes.len() - body_start) / 2;
        damaged[middle] ^= 0x01;
        write_atomic("pipeline", &path, &damaged).unwrap();
        match load(&projection, &path).unwrap() {
            Loaded::Stale { reason } => assert!(reason.contains("checksum"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
