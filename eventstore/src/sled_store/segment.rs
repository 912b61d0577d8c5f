//! Segment files: the log's records, frame after frame in position order, in
//! `<dir>/segments/<first position>.seg`.
//!
//! ```text
//! offset  size  field
//! 0       8     magic `CRMSEG` 0x00 0x01
//! 8       8     first position of the segment (u64, little endian)
//! 16      ...   frames (see [`crate::codec`]), each carrying its own length
//! ```
//!
//! A segment is written only at its end, by the writer thread, one group commit at a time
//! (one `write` and one `fdatasync`). The writer starts a new segment once the current one
//! passes [`SEGMENT_SIZE_TARGET_BYTES`]; a full segment is never written again.
//!
//! Readers find a record through the sparse offset map ([`Offsets`]): one entry per
//! segment start and about every [`OFFSET_STRIDE_BYTES`] after it, so a read walks at most
//! one stride of frames before the record it wants. Reads use positioned reads (`pread`)
//! on a shared handle and never look past the durable head they are given.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::codec;
use crate::error::{Corruption, ReadError};
use crate::types::{Position, RecordView, RecordedEvent};

/// First bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"CRMSEG\x00\x01";
/// Bytes before a segment's first frame.
pub(crate) const SEGMENT_HEADER_BYTES: u64 = 16;
/// A segment is closed once it passes this size (a group commit is never split).
pub(crate) const SEGMENT_SIZE_TARGET_BYTES: u64 = 256 * 1024 * 1024;
/// Bytes of frames between two entries of the offset map.
pub(crate) const OFFSET_STRIDE_BYTES: u64 = 64 * 1024;
/// Largest frame a walk accepts: the event size limit plus the envelope's own fields with
/// room to spare. A longer length field is damage, not a reason to read gigabytes.
const FRAME_SIZE_MAX_BYTES: usize = crate::limits::EVENT_SIZE_MAX_BYTES + 8 * 1024;
/// Bytes one positioned read of a reader asks for at least.
const READ_BUFFER_BYTES: usize = 256 * 1024;
/// Where the segments live inside the store directory.
pub(crate) const SEGMENTS_DIR: &str = "segments";
const SEGMENT_SUFFIX: &str = ".seg";

/// The file name of the segment whose first record is at `first`.
pub(crate) fn segment_name(first: Position) -> String {
    format!("{:020}{SEGMENT_SUFFIX}", first.0)
}

/// The first position a segment file name stands for, if it is one.
pub(crate) fn parse_segment_name(name: &str) -> Option<Position> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok().map(Position))
        .flatten()
}

/// The 16 bytes a segment starting at `first` begins with.
pub(crate) fn segment_header(first: Position) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..].copy_from_slice(&first.0.to_le_bytes());
    h
}

/// Where the offset map gets an entry: at a segment's first frame, and at the first frame
/// after every [`OFFSET_STRIDE_BYTES`] of frames. The writer and recovery follow the same
/// rule.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntryStride {
    /// Bytes of frames since the last entry.
    since: u64,
}

impl EntryStride {
    /// A stride whose next frame gets an entry.
    pub fn due() -> EntryStride {
        EntryStride {
            since: OFFSET_STRIDE_BYTES,
        }
    }

    /// Whether the frame of `len` bytes at byte `at` of its segment gets an entry; counts it.
    pub fn frame(&mut self, at: u64, len: usize) -> bool {
        let entry = at == SEGMENT_HEADER_BYTES || self.since >= OFFSET_STRIDE_BYTES;
        if entry {
            self.since = 0;
        }
        self.pass(len);
        entry
    }

    /// Counts a frame that gets no entry whatever the stride (one the index already holds).
    pub fn pass(&mut self, len: usize) {
        self.since = self
            .since
            .saturating_add(u64::try_from(len).unwrap_or(u64::MAX));
    }
}

/// One segment file, open for positioned reads.
#[derive(Debug)]
pub(crate) struct Segment {
    pub first: Position,
    pub path: PathBuf,
    pub file: File,
}

/// Where a record's frame starts: the first position of its segment and the byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Offset {
    pub segment: Position,
    pub at: u64,
}

/// The segments and the sparse map from positions to frame offsets, shared by the writer
/// (which adds to both after each durable group) and every reader.
#[derive(Debug, Default)]
pub(crate) struct Offsets {
    segments: RwLock<BTreeMap<Position, Arc<Segment>>>,
    entries: RwLock<BTreeMap<Position, Offset>>,
}

fn corrupt(position: Position, reason: Corruption) -> ReadError {
    ReadError::Corrupt { position, reason }
}

impl Offsets {
    pub fn add_segment(&self, segment: Segment) {
        let mut map = self.segments.write().unwrap_or_else(|p| p.into_inner());
        map.insert(segment.first, Arc::new(segment));
    }

    pub fn add_entries(&self, entries: impl IntoIterator<Item = (Position, Offset)>) {
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        map.extend(entries);
    }

    fn segment(&self, first: Position) -> Option<Arc<Segment>> {
        self.segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&first)
            .cloned()
    }

    /// The segment after the one starting at `first`.
    fn segment_after(&self, first: Position) -> Option<Arc<Segment>> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .range((Excluded(first), Unbounded))
            .next()
            .map(|(_, s)| s.clone())
    }

    /// Every segment, oldest first.
    pub fn all_segments(&self) -> Vec<Arc<Segment>> {
        self.segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn entry_at_or_before(&self, position: Position) -> Option<(Position, Offset)> {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .range(..=position)
            .next_back()
            .map(|(p, o)| (*p, *o))
    }

    /// Up to `max` records from position `from`, never past `limit` (the durable head),
    /// each checked against its checksum, its position and the density of positions.
    pub fn read_range(
        &self,
        from: Position,
        max: usize,
        limit: Position,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.read_range_selected(from, max, limit, &mut |_| true)
            .map(|(records, _)| records)
    }

    /// Reads what [`Offsets::read_range`] reads, with the same checks, and keeps the
    /// records `select` chooses; also returns the last position read (`None`: none).
    pub fn read_range_selected(
        &self,
        from: Position,
        max: usize,
        limit: Position,
        select: &mut dyn FnMut(&RecordView<'_>) -> bool,
    ) -> Result<(Vec<RecordedEvent>, Option<Position>), ReadError> {
        let from = from.max(Position::FIRST);
        if from > limit || max == 0 {
            return Ok((Vec::new(), None));
        }
        let Some((start, offset)) = self.entry_at_or_before(from) else {
            return Err(corrupt(from, Corruption::NoSegment));
        };
        let capacity = usize::try_from(limit.0 - from.0 + 1)
            .unwrap_or(max)
            .min(max);
        let mut out = Vec::with_capacity(capacity);
        let mut read = 0usize;
        let mut last = None;
        let mut walk = self.walk(start, offset).map_err(|e| self.span(e))?;
        while walk.position <= limit && read < max {
            let position = walk.position;
            let wanted = position >= from;
            let step = walk
                .next_frame(wanted.then_some(&mut *select))
                .map_err(|e| self.span(e))?;
            if wanted {
                read += 1;
                last = Some(position);
            }
            match step {
                Step::Record(rec) => out.push(rec),
                Step::Skipped => {}
                Step::End => {
                    return Err(corrupt(walk.position, Corruption::MissingBelowHead));
                }
            }
        }
        Ok((out, last))
    }

    /// Names the records a damaged frame makes unreadable: from its position up to the
    /// next entry of the offset map, where frames can be found again.
    fn span(&self, e: ReadError) -> ReadError {
        match e {
            e @ ReadError::Corrupt {
                reason: Corruption::Unreadable { .. },
                ..
            } => e,
            ReadError::Corrupt { position, reason } => {
                use std::ops::Bound::{Excluded, Unbounded};
                let next_readable = self
                    .entries
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .range((Excluded(position), Unbounded))
                    .next()
                    .map(|(p, _)| *p);
                ReadError::Corrupt {
                    position,
                    reason: Corruption::Unreadable {
                        next_readable,
                        cause: Box::new(reason),
                    },
                }
            }
            other => other,
        }
    }

    /// A cursor on the frame of `position`, which starts at `offset`.
    pub fn walk(&self, position: Position, offset: Offset) -> Result<Walk<'_>, ReadError> {
        let segment = self.segment(offset.segment).ok_or(corrupt(
            position,
            Corruption::SegmentMissing {
                segment: offset.segment,
            },
        ))?;
        Ok(Walk {
            offsets: self,
            cursor: Cursor::new(segment),
            at: offset.at,
            position,
        })
    }
}

/// A buffered positioned reader over one segment.
struct Cursor {
    segment: Arc<Segment>,
    /// Read buffer: `buf[..filled]` holds the file's bytes from `buf_at`; the rest is stale.
    /// It keeps its length between refills, so a refill does not zero it again.
    buf: Vec<u8>,
    filled: usize,
    /// File offset of `buf[0]`.
    buf_at: u64,
}

thread_local! {
    /// A reader thread's read buffer between walks: zeroed once when first made, not again
    /// for every page read.
    static SPARE_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The largest read buffer a thread keeps between walks (one grown for a large frame is let
/// go).
const SPARE_BUFFER_BYTES_MAX: usize = 4 * READ_BUFFER_BYTES;

impl Cursor {
    fn new(segment: Arc<Segment>) -> Cursor {
        let buf = SPARE_BUFFER.with(|spare| {
            spare
                .try_borrow_mut()
                .map(|mut spare| std::mem::take(&mut *spare))
                .unwrap_or_default()
        });
        Cursor {
            segment,
            buf,
            filled: 0,
            buf_at: 0,
        }
    }

    /// The `len` bytes at `at`, or fewer when the file ends before.
    fn bytes(&mut self, at: u64, len: usize) -> std::io::Result<&[u8]> {
        let have_from = at
            .checked_sub(self.buf_at)
            .and_then(|d| usize::try_from(d).ok());
        let covered = have_from
            .and_then(|start| start.checked_add(len).map(|end| (start, end)))
            .filter(|&(_, end)| end <= self.filled);
        if let Some((start, end)) = covered {
            return Ok(&self.buf[start..end]);
        }
        let want = len.max(READ_BUFFER_BYTES);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        self.filled = 0;
        let mut filled = 0usize;
        while filled < want {
            let pos = at.saturating_add(u64::try_from(filled).unwrap_or(u64::MAX));
            let Some(room) = self.buf.get_mut(filled..want) else {
                break;
            };
            match self.segment.file.read_at(room, pos) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.filled = filled;
        self.buf_at = at;
        Ok(&self.buf[..len.min(filled)])
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if buf.len() <= SPARE_BUFFER_BYTES_MAX {
            SPARE_BUFFER.with(|spare| {
                if let Ok(mut spare) = spare.try_borrow_mut() {
                    if spare.len() < buf.len() {
                        *spare = buf;
                    }
                }
            });
        }
    }
}

/// Walks frames from one position on, across segment boundaries.
pub(crate) struct Walk<'a> {
    offsets: &'a Offsets,
    cursor: Cursor,
    /// Offset of the frame of `position`.
    pub at: u64,
    pub position: Position,
}

/// What [`Walk::next_frame`] did.
#[allow(clippy::large_enum_variant)] // one per frame walked, never stored
pub(crate) enum Step {
    /// Decoded the record.
    Record(RecordedEvent),
    /// Moved past a frame without decoding it.
    Skipped,
    /// The walk is at the end of the last segment.
    End,
}

/// How a frame read from a segment ended.
pub(crate) enum FrameRead {
    /// A whole frame: its bytes are in the walk's buffer.
    Frame(usize),
    /// The segment ends exactly here.
    End,
    /// The segment ends inside the frame (`available` bytes of it are there).
    Cut { available: usize },
}

impl Walk<'_> {
    fn storage(&self, e: &std::io::Error) -> ReadError {
        ReadError::Storage(format!(
            "reading {} at byte {}: {e}",
            self.cursor.segment.path.display(),
            self.at
        ))
    }

    /// Reads the frame at the cursor, without moving on.
    pub fn frame(&mut self) -> Result<FrameRead, ReadError> {
        let at = self.at;
        let len = match self.cursor.bytes(at, 5) {
            Ok([]) => return Ok(FrameRead::End),
            Ok(h) if h.len() < 5 => return Ok(FrameRead::Cut { available: h.len() }),
            Ok(h) => codec::frame_len(h),
            Err(e) => return Err(self.storage(&e)),
        };
        let Some(len) = len.filter(|&l| l <= FRAME_SIZE_MAX_BYTES) else {
            return Err(corrupt(self.position, Corruption::FrameOverrunsSegment));
        };
        let got = match self.cursor.bytes(at, len) {
            Ok(b) => b.len(),
            Err(e) => return Err(self.storage(&e)),
        };
        if got < len {
            return Ok(FrameRead::Cut { available: got });
        }
        Ok(FrameRead::Frame(len))
    }

    /// The bytes of the frame just read by [`Walk::frame`].
    pub fn frame_bytes(&mut self, len: usize) -> Result<&[u8], ReadError> {
        let at = self.at;
        // The path is shown only on an error: formatting it for every frame cost a replay
        // about an eighth of its time.
        let segment = Arc::clone(&self.cursor.segment);
        self.cursor.bytes(at, len).map_err(|e| {
            ReadError::Storage(format!(
                "reading {} at byte {at}: {e}",
                segment.path.display()
            ))
        })
    }

    /// Moves past a frame of `len` bytes.
    pub fn advance(&mut self, len: usize) {
        self.at = self
            .at
            .saturating_add(u64::try_from(len).unwrap_or(u64::MAX));
        self.position = Position(self.position.0.saturating_add(1));
    }

    /// Whether the frame after the current one (of `len` bytes) is the next record, whole.
    fn next_record_follows(&mut self, len: usize) -> bool {
        let at = self
            .at
            .saturating_add(u64::try_from(len).unwrap_or(u64::MAX));
        let next = Position(self.position.0.saturating_add(1));
        let Ok(header) = self.cursor.bytes(at, 5) else {
            return false;
        };
        let Some(next_len) = codec::frame_len(header).filter(|&l| l <= FRAME_SIZE_MAX_BYTES) else {
            return false;
        };
        match self.cursor.bytes(at, next_len) {
            Ok(bytes) if bytes.len() == next_len => codec::decode(bytes, Some(next), false).is_ok(),
            _ => false,
        }
    }

    /// The first position of the segment the walk is in.
    pub fn segment_first(&self) -> Position {
        self.cursor.segment.first
    }

    /// At the end of a segment: moves to the next one, which must start at the walk's
    /// position. `false` when there is none.
    pub fn enter_next_segment(&mut self) -> Result<bool, ReadError> {
        let here = self.cursor.segment.first;
        let Some(next) = self.offsets.segment_after(here) else {
            return Ok(false);
        };
        if next.first != self.position {
            return Err(corrupt(
                self.position,
                Corruption::SegmentGap {
                    segment: here,
                    next_segment: next.first,
                },
            ));
        }
        self.cursor = Cursor::new(next);
        self.at = SEGMENT_HEADER_BYTES;
        Ok(true)
    }

    /// The next record, moving on to the next segment where the current one ends: with
    /// `select`, decoded, shown to it and returned when it chooses it; without, only
    /// checked (its checksum) and passed.
    pub fn next_frame(
        &mut self,
        select: Option<&mut dyn FnMut(&RecordView<'_>) -> bool>,
    ) -> Result<Step, ReadError> {
        let decode = select.is_some();
        let mut select = select;
        loop {
            match self.frame()? {
                FrameRead::Frame(len) => {
                    let position = self.position;
                    let bytes = self.frame_bytes(len)?;
                    let checked = match select.as_deref_mut() {
                        Some(select) => codec::decode_selected(bytes, Some(position), select)
                            .map(|rec| rec.map_or(Step::Skipped, Step::Record)),
                        None => codec::check_frame(bytes).map(|()| Step::Skipped),
                    };
                    match checked {
                        Ok(step) => {
                            self.advance(len);
                            return Ok(step);
                        }
                        Err(e) => {
                            // A damaged frame whose length is intact is followed by the next
                            // record: only this one is unreadable. Otherwise nothing can be
                            // told apart up to the next offset entry.
                            let follows = self.next_record_follows(len);
                            if follows && !decode {
                                self.advance(len);
                                return Ok(Step::Skipped);
                            }
                            let reason: Corruption = e.into();
                            return Err(corrupt(
                                position,
                                if follows {
                                    Corruption::Unreadable {
                                        next_readable: Some(Position(position.0 + 1)),
                                        cause: Box::new(reason),
                                    }
                                } else {
                                    reason
                                },
                            ));
                        }
                    }
                }
                FrameRead::Cut { available } => {
                    return Err(corrupt(
                        self.position,
                        Corruption::SegmentCut {
                            segment: self.cursor.segment.first,
                            available,
                        },
                    ));
                }
                FrameRead::End => {
                    if !self.enter_next_segment()? {
                        return Ok(Step::End);
                    }
                }
            }
        }
    }
}

/// Why a segment file could not be taken into the log.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SegmentFileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} does not start with a segment header (damaged or not a segment)")]
    BadHeader { path: String },
    #[error("{path} says it starts at position {stated}, its name says {named}")]
    WrongFirst {
        path: String,
        stated: u64,
        named: u64,
    },
}

/// Opens every segment of `dir` for reading, oldest first.
pub(crate) fn open_segments(dir: &Path) -> Result<Vec<Segment>, SegmentFileError> {
    let io = |path: &Path, source| SegmentFileError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io(dir, e))?;
        let name = entry.file_name();
        let Some(first) = name.to_str().and_then(parse_segment_name) else {
            continue;
        };
        found.push((first, entry.path()));
    }
    found.sort();
    let mut out = Vec::with_capacity(found.len());
    for (first, path) in found {
        let file = File::open(&path).map_err(|e| io(&path, e))?;
        let mut header = [0u8; 16];
        let shown = path.display().to_string();
        match file.read_exact_at(&mut header, 0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(SegmentFileError::BadHeader { path: shown });
            }
            Err(e) => return Err(io(&path, e)),
        }
        if header[..8] != SEGMENT_MAGIC {
            return Err(SegmentFileError::BadHeader { path: shown });
        }
        let mut stated = [0u8; 8];
        stated.copy_from_slice(&header[8..]);
        let stated = u64::from_le_bytes(stated);
        if stated != first.0 {
            return Err(SegmentFileError::WrongFirst {
                path: shown,
                stated,
                named: first.0,
            });
        }
        out.push(Segment { first, path, file });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_in_log_order_and_parse_back() {
        let a = segment_name(Position(9));
        let b = segment_name(Position(10));
        assert!(a < b);
        assert_eq!(parse_segment_name(&a), Some(Position(9)));
        assert_eq!(parse_segment_name("00000000000000000009.seg.torn"), None);
        assert_eq!(parse_segment_name("9.seg"), None);
    }
}
