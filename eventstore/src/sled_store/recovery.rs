//! What an open does with the segments and the index a previous run (or a crash) left:
//! finds the head, cuts off a group that was never finished, and indexes the records that
//! follow the index's marker.
//!
//! **Architecture Invariant:** recovery never drops a record the index already held, and
//! never serves or indexes a frame that fails its checks. An unfinished frame at the very
//! end of the tip segment, past the index's marker, is the remains of a group whose write
//! was cut (it was never acknowledged): a writable open sets its bytes aside in
//! `<segment>.torn-<offset>` and truncates the segment there. Any other bad frame is
//! damage, and the open fails naming its position.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use tracing::warn;

use crate::codec;
use crate::error::{OpenError, ReadError};
use crate::types::{Head, Position, RecordedEvent, StreamId};

use super::index::{Index, IndexError, StreamRun, Work};
use super::segment::{
    open_segments, segment_name, EntryStride, FrameRead, Offset, Offsets, SegmentFileError,
    SEGMENTS_DIR, SEGMENT_HEADER_BYTES,
};
use super::writer::Tip;

/// Events recovery indexes in one sled batch.
const RECOVERY_STEP_EVENTS: usize = 50_000;

/// What recovery found.
pub(super) struct Recovered {
    pub head: Head,
    pub last_recorded_at: Option<DateTime<Utc>>,
    /// The segment to append to, for a writable open of a log with segments.
    pub tip: Option<Tip>,
}

struct Recovery<'a> {
    dir: &'a Path,
    index: &'a Index,
    writable: bool,
    work: Work,
    /// The stream run being extended by consecutive records of one stream.
    run: Option<(StreamId, StreamRun)>,
}

fn damaged(dir: &Path, reason: impl Into<String>) -> OpenError {
    OpenError::Damaged {
        path: dir.display().to_string(),
        reason: reason.into(),
    }
}

fn index_error(dir: &Path, e: &IndexError) -> OpenError {
    OpenError::Storage {
        path: dir.display().to_string(),
        reason: format!("the index: {e}"),
    }
}

impl Recovery<'_> {
    fn close_run(&mut self) {
        if let Some(run) = self.run.take() {
            self.work.runs.push(run);
        }
    }

    /// Takes a record past the index's marker into the index's work.
    fn take(&mut self, rec: &RecordedEvent) {
        if self.writable {
            self.work.ids.push((rec.event_id, rec.position));
        }
        let extends = self.run.as_ref().is_some_and(|(stream, run)| {
            *stream == rec.stream_id
                && run.last_version().0 + 1 == rec.stream_version.0
                && run.first_position.0 + run.count == rec.position.0
                && run.count < u64::from(u32::MAX)
        });
        if extends {
            if let Some((_, run)) = self.run.as_mut() {
                run.count += 1;
            }
        } else {
            self.close_run();
            self.run = Some((
                rec.stream_id.clone(),
                StreamRun {
                    first_version: rec.stream_version,
                    first_position: rec.position,
                    count: 1,
                },
            ));
        }
        self.work.through = rec.position;
    }

    /// Hands the work gathered so far to the index: written to sled for a writable open,
    /// kept in memory for a read-only one.
    fn flush(&mut self) -> Result<(), OpenError> {
        self.close_run();
        if self.work.through == Position::ZERO {
            return Ok(());
        }
        let work = std::mem::take(&mut self.work);
        if self.writable {
            self.index
                .apply(&work)
                .and_then(|()| self.index.seal_if_due(work.ids.len()))
                .map_err(|e| index_error(self.dir, &e))?;
        } else {
            self.index.tail_add(&work);
        }
        Ok(())
    }
}

/// Finds the head of the log in `dir`, fills `offsets`, and indexes what follows the
/// index's marker (in sled when `writable`, in the index's memory otherwise).
pub(super) fn recover(
    dir: &Path,
    index: &Index,
    offsets: &Offsets,
    writable: bool,
) -> Result<Recovered, OpenError> {
    let segments_dir = dir.join(SEGMENTS_DIR);
    drop_unstarted_segment(&segments_dir, writable)?;
    let segments = open_segments(&segments_dir).map_err(|e| match e {
        SegmentFileError::Io { .. } => OpenError::Storage {
            path: dir.display().to_string(),
            reason: e.to_string(),
        },
        e => damaged(
            dir,
            format!("{e}; the records of that segment cannot be found"),
        ),
    })?;
    let (indexed, stored) = if writable {
        let indexed = index.indexed().map_err(|e| index_error(dir, &e))?;
        let stored = index.offsets().map_err(|e| index_error(dir, &e))?;
        (indexed, stored)
    } else {
        (Position::ZERO, Vec::new())
    };
    let Some(last_first) = segments.last().map(|s| s.first) else {
        if indexed > Position::ZERO {
            return Err(damaged(
                dir,
                format!(
                    "the index reaches position {indexed} but there are no segment files: \
                     records 1 to {indexed} are missing"
                ),
            ));
        }
        return Ok(Recovered {
            head: Head::default(),
            last_recorded_at: None,
            tip: None,
        });
    };
    let first_segment = segments.first().map_or(last_first, |s| s.first);
    for s in segments {
        offsets.add_segment(s);
    }
    offsets.add_entries(stored);
    let resume = Position(indexed.0.saturating_add(1));
    let (start, offset) = offsets.entry_at_or_before(resume).unwrap_or((
        first_segment,
        Offset {
            segment: first_segment,
            at: SEGMENT_HEADER_BYTES,
        },
    ));
    let mut rec_state = Recovery {
        dir,
        index,
        writable,
        work: Work::default(),
        run: None,
    };
    let mut walk = offsets
        .walk(start, offset)
        .map_err(|e| damaged(dir, e.to_string()))?;
    let mut last: Option<(Head, DateTime<Utc>)> = None;
    let mut stride = EntryStride::due();
    let mut new_entries = Vec::new();
    loop {
        let position = walk.position;
        let bad = |reason: String| Bad { position, reason };
        let outcome = match walk.frame() {
            // Records the index holds, before the last, are only walked past.
            Ok(FrameRead::Frame(len)) if position < indexed => {
                stride.pass(len);
                walk.advance(len);
                continue;
            }
            Ok(FrameRead::Frame(len)) => match walk.frame_bytes(len) {
                Ok(bytes) => match codec::decode(bytes, Some(position), false) {
                    Ok(rec) => Ok(Some((rec, len))),
                    Err(e) => Err(bad(e.to_string())),
                },
                Err(e) => return Err(read_failure(dir, e)),
            },
            Ok(FrameRead::End) => match walk.enter_next_segment() {
                Ok(true) => {
                    stride = EntryStride::due();
                    continue;
                }
                Ok(false) => Ok(None),
                Err(e) => return Err(damaged(dir, e.to_string())),
            },
            Ok(FrameRead::Cut { available }) => Err(bad(format!(
                "the segment ends {available} bytes into its frame"
            ))),
            Err(ReadError::Corrupt { reason, .. }) => Err(bad(reason.to_string())),
            Err(e) => return Err(read_failure(dir, e)),
        };
        match outcome {
            Ok(Some((rec, len))) => {
                if position > indexed {
                    if stride.frame(walk.at, len) {
                        new_entries.push((
                            position,
                            Offset {
                                segment: walk.segment_first(),
                                at: walk.at,
                            },
                        ));
                    }
                    rec_state.take(&rec);
                } else {
                    stride.pass(len);
                }
                last = Some((rec.as_head(), rec.recorded_at));
                walk.advance(len);
                if rec_state.work.ids.len() + rec_state.work.runs.len() >= RECOVERY_STEP_EVENTS {
                    rec_state.work.offsets = std::mem::take(&mut new_entries);
                    offsets.add_entries(rec_state.work.offsets.iter().copied());
                    rec_state.flush()?;
                }
            }
            Ok(None) => break,
            Err(Bad { position, reason }) => {
                let in_tip = walk.segment_first() == last_first;
                if !in_tip || position <= indexed {
                    return Err(damaged(
                        dir,
                        format!(
                            "the record at position {position} (segment {}, byte {}) is \
                             damaged ({reason}); records from position {position} on cannot \
                             be read",
                            segment_name(walk.segment_first()),
                            walk.at
                        ),
                    ));
                }
                if let Some(later) = later_frame(&segments_dir, last_first, walk.at) {
                    return Err(damaged(
                        dir,
                        format!(
                            "the record at position {position} (segment {}, byte {}) is \
                             damaged ({reason}), and the record at position {later} follows \
                             it, so it is not an unfinished write; records from position \
                             {position} on cannot be read",
                            segment_name(walk.segment_first()),
                            walk.at
                        ),
                    ));
                }
                set_aside_torn_tail(&segments_dir, last_first, walk.at, position, writable)?;
                break;
            }
        }
    }
    rec_state.work.offsets = new_entries;
    offsets.add_entries(rec_state.work.offsets.iter().copied());
    rec_state.flush()?;
    if writable {
        index.flush().map_err(|e| index_error(dir, &e))?;
    }
    let last = match last {
        Some(last) => Some(last),
        // The walk started at an empty segment: the last record is before it.
        None if start > Position::FIRST => {
            let before = Position(start.0 - 1);
            let rec = offsets
                .read_range(before, 1, before)
                .map_err(|e| damaged(dir, e.to_string()))?
                .pop()
                .ok_or_else(|| {
                    damaged(dir, format!("the record at position {before} is missing"))
                })?;
            Some((rec.as_head(), rec.recorded_at))
        }
        None => None,
    };
    let head = last.map(|(h, _)| h).unwrap_or_default();
    if head.position < indexed {
        return Err(damaged(
            dir,
            format!(
                "the index reaches position {indexed} but the segments end at position {}: \
                 records {} to {indexed} are missing",
                head.position,
                head.position.0 + 1
            ),
        ));
    }
    let tip = if writable {
        Some(
            open_tip(&segments_dir, last_first).map_err(|e| OpenError::Storage {
                path: dir.display().to_string(),
                reason: e.to_string(),
            })?,
        )
    } else {
        None
    };
    Ok(Recovered {
        head,
        last_recorded_at: last.map(|(_, t)| t),
        tip,
    })
}

/// A frame recovery could not take.
struct Bad {
    position: Position,
    reason: String,
}

fn read_failure(dir: &Path, e: ReadError) -> OpenError {
    OpenError::Storage {
        path: dir.display().to_string(),
        reason: e.to_string(),
    }
}

/// The tip segment, open for appending at its end.
fn open_tip(segments_dir: &Path, first: Position) -> std::io::Result<Tip> {
    let path = segments_dir.join(segment_name(first));
    let file = File::options().read(true).write(true).open(&path)?;
    let len = file.metadata()?.len();
    Ok(Tip {
        file,
        first,
        path,
        len,
        // The next group starts an offset entry.
        stride: EntryStride::due(),
    })
}

/// A segment file shorter than its header is one whose creation a crash cut short: no
/// group was written to it. A writable open removes it.
fn drop_unstarted_segment(segments_dir: &Path, writable: bool) -> Result<(), OpenError> {
    let Ok(entries) = std::fs::read_dir(segments_dir) else {
        return Ok(());
    };
    let mut last: Option<(Position, PathBuf)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if let Some(first) = name.to_str().and_then(super::segment::parse_segment_name) {
            if last.as_ref().is_none_or(|(p, _)| first > *p) {
                last = Some((first, entry.path()));
            }
        }
    }
    let Some((_, path)) = last else {
        return Ok(());
    };
    let short = std::fs::metadata(&path).is_ok_and(|m| m.len() < SEGMENT_HEADER_BYTES);
    if short && writable {
        warn!(path = %path.display(), "removing a segment whose creation was cut short (it holds no record)");
        std::fs::remove_file(&path)
            .and_then(|()| super::sync_dir(segments_dir))
            .map_err(|e| OpenError::Storage {
                path: path.display().to_string(),
                reason: format!("could not remove the unfinished segment: {e}"),
            })?;
    }
    Ok(())
}

/// Bytes after a bad frame that [`later_frame`] searches for an intact frame.
const LATER_FRAME_SEARCH_BYTES: u64 = 64 * 1024 * 1024;

/// The position of an intact frame after byte `at` of the tip segment, if any: a bad
/// frame followed by intact ones is damage, not the end of a write that was cut.
fn later_frame(segments_dir: &Path, tip_first: Position, at: u64) -> Option<Position> {
    let file = File::open(segments_dir.join(segment_name(tip_first))).ok()?;
    let len = file.metadata().ok()?.len();
    let end = len.min(at.saturating_add(LATER_FRAME_SEARCH_BYTES));
    let size = usize::try_from(end.saturating_sub(at)).ok()?;
    let mut bytes = vec![0u8; size];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, at).ok()?;
    (1..bytes.len()).find_map(|o| {
        let rest = &bytes[o..];
        if rest.first() != Some(&codec::FORMAT_VERSION) {
            return None;
        }
        let frame_len = codec::frame_len(rest).filter(|&l| l <= rest.len())?;
        codec::decode(&rest[..frame_len], None, false)
            .ok()
            .map(|rec| rec.position)
    })
}

/// Sets the unfinished end of the tip segment aside and cuts the segment there.
fn set_aside_torn_tail(
    segments_dir: &Path,
    tip_first: Position,
    at: u64,
    position: Position,
    writable: bool,
) -> Result<(), OpenError> {
    let path = segments_dir.join(segment_name(tip_first));
    if !writable {
        warn!(path = %path.display(), byte = at, position = position.0,
            "the log ends with an unfinished write; read-only, so it is left in place and the log is read up to the record before it");
        return Ok(());
    }
    let failed = |e: std::io::Error| OpenError::Storage {
        path: path.display().to_string(),
        reason: format!("could not set aside the unfinished write at byte {at}: {e}"),
    };
    let aside = segments_dir.join(format!("{}.torn-{at}", segment_name(tip_first)));
    let mut file = File::options()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(failed)?;
    let len = file.metadata().map_err(failed)?.len();
    let mut kept = File::create(&aside).map_err(failed)?;
    file.seek(SeekFrom::Start(at)).map_err(failed)?;
    let copied =
        std::io::copy(&mut (&mut file).take(len.saturating_sub(at)), &mut kept).map_err(failed)?;
    kept.flush()
        .and_then(|()| kept.sync_all())
        .map_err(failed)?;
    file.set_len(at).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    super::sync_dir(segments_dir).map_err(failed)?;
    warn!(path = %path.display(), byte = at, position = position.0, bytes = copied, aside = %aside.display(),
        "the log ended with an unfinished write (a group whose write was cut, never acknowledged); its bytes were set aside and the segment cut there");
    Ok(())
}
