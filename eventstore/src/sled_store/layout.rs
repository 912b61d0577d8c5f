//! Where things live in the sled `log` tree, and the reads built on that layout.
//!
//! Keys (integers big endian, so keys sort in log order):
//! - `C` first position → chunk: the frames of consecutive positions, concatenated
//!   (each frame carries its own length, see [`crate::codec`]). A chunk holds
//!   the records of one group commit, split at [`CHUNK_SIZE_MAX_BYTES`].
//! - `S` stream id `0xFF` first version → first position (8 bytes) and count
//!   (4 bytes): one entry per append, whose events have consecutive positions.
//!   `0xFF` never occurs in UTF-8, so a stream's entries are exactly the keys
//!   with its prefix.
//! - `I` event id (16 bytes) → position.
//!
//! Chunks and per-append stream entries keep sled's per-insert cost off the
//! per-event path: a batch of 100 events costs about 101 inserts, not 300.

use crate::codec;
use crate::error::{Corruption, ReadError};
use crate::types::{EventId, Position, RecordedEvent, StreamId, StreamVersion};

/// Largest chunk. With 16 MiB segments sled moves any node over ~4 MiB to a
/// blob file it never fsyncs; a leaf splits past 16 entries, so 17 chunks of
/// 128 KiB (2.2 MiB) stay well below that.
pub(crate) const CHUNK_SIZE_MAX_BYTES: usize = 128 * 1024;

const CHUNK_PREFIX: u8 = b'C';
const STREAM_PREFIX: u8 = b'S';
const ID_PREFIX: u8 = b'I';
const STREAM_SEPARATOR: u8 = 0xFF;

pub(crate) fn chunk_key(p: Position) -> [u8; 9] {
    let mut k = [CHUNK_PREFIX; 9];
    k[1..].copy_from_slice(&p.0.to_be_bytes());
    k
}

pub(crate) fn stream_prefix(s: &StreamId) -> Vec<u8> {
    let mut k = Vec::with_capacity(s.as_str().len() + 10);
    k.push(STREAM_PREFIX);
    k.extend_from_slice(s.as_str().as_bytes());
    k.push(STREAM_SEPARATOR);
    k
}

pub(crate) fn stream_key(s: &StreamId, first_version: StreamVersion) -> Vec<u8> {
    let mut k = stream_prefix(s);
    k.extend_from_slice(&first_version.0.to_be_bytes());
    k
}

pub(crate) fn id_key(id: &EventId) -> [u8; 17] {
    let mut k = [ID_PREFIX; 17];
    k[1..].copy_from_slice(id.0.as_bytes());
    k
}

/// Value of a stream index entry.
pub(crate) fn stream_entry(first_position: Position, count: u32) -> [u8; 12] {
    let mut v = [0; 12];
    v[..8].copy_from_slice(&first_position.0.to_be_bytes());
    v[8..].copy_from_slice(&count.to_be_bytes());
    v
}

/// A decoded stream index entry: `count` events from `first_version` at
/// positions from `first_position`.
#[derive(Clone, Copy, Debug)]
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

    pub fn last_version(&self) -> StreamVersion {
        StreamVersion(self.first_version.0 + self.count - 1)
    }
}

pub(crate) fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let raw: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_be_bytes(raw))
}

pub(crate) fn storage(e: sled::Error) -> ReadError {
    ReadError::Storage(e.to_string())
}

fn corrupt(position: Position, reason: impl Into<Corruption>) -> ReadError {
    ReadError::Corrupt {
        position,
        reason: reason.into(),
    }
}

/// Walks the frames of one chunk: yields `(position, byte range)` per frame,
/// or an error at the first frame whose header does not fit the chunk.
pub(crate) fn frames(
    chunk: &[u8],
    first: Position,
) -> impl Iterator<Item = Result<(Position, std::ops::Range<usize>), ReadError>> + '_ {
    let mut offset = 0usize;
    let mut position = first;
    let mut broken = false;
    std::iter::from_fn(move || {
        if broken || offset >= chunk.len() {
            return None;
        }
        let here = position;
        let len = codec::frame_len(&chunk[offset..]);
        match len
            .and_then(|l| offset.checked_add(l))
            .filter(|&end| end <= chunk.len())
        {
            Some(end) => {
                let range = offset..end;
                offset = end;
                position = Position(position.0.saturating_add(1));
                Some(Ok((here, range)))
            }
            None => {
                broken = true;
                Some(Err(corrupt(here, Corruption::FrameOverrunsChunk)))
            }
        }
    })
}

/// Up to `max` records from position `from`, never past `limit`, checked
/// against their checksums and for density.
pub(crate) fn read_range(
    tree: &sled::Tree,
    from: Position,
    max: usize,
    limit: Position,
) -> Result<Vec<RecordedEvent>, ReadError> {
    let from = from.max(Position::FIRST);
    if from > limit || max == 0 {
        return Ok(Vec::new());
    }
    let Some((start, _)) = chunk_holding(tree, from)? else {
        return Err(corrupt(from, Corruption::NoChunk));
    };
    let capacity = usize::try_from(limit.0 - from.0 + 1)
        .unwrap_or(max)
        .min(max);
    let mut out = Vec::with_capacity(capacity);
    let mut next_chunk: Option<Position> = None;
    for item in tree.range(chunk_key(start)..=chunk_key(limit)) {
        let (key, chunk) = item.map_err(storage)?;
        let first =
            Position(u64_at(&key, 1).ok_or_else(|| corrupt(from, Corruption::MalformedChunkKey))?);
        if let Some(expected) = next_chunk {
            if first != expected {
                return Err(corrupt(
                    expected,
                    Corruption::MissingBeforeChunk { next_chunk: first },
                ));
            }
        }
        let mut after = first;
        for frame in frames(&chunk, first) {
            let (position, bytes) = frame?;
            after = Position(position.0.saturating_add(1));
            if position < from {
                continue;
            }
            if position > limit {
                return Ok(out);
            }
            let rec = codec::decode(&chunk[bytes], Some(position), false)
                .map_err(|e| corrupt(position, e))?;
            out.push(rec);
            if out.len() == max {
                return Ok(out);
            }
        }
        next_chunk = Some(after);
    }
    let reached = next_chunk.unwrap_or(from);
    if reached <= limit {
        return Err(corrupt(reached, Corruption::MissingBelowHead));
    }
    Ok(out)
}

/// The record at `position` (at or below `limit`), if the log reaches it.
pub(crate) fn read_one(
    tree: &sled::Tree,
    position: Position,
    limit: Position,
) -> Result<Option<RecordedEvent>, ReadError> {
    Ok(read_range(tree, position, 1, limit)?.pop())
}

/// The stream's runs from the one holding `from` on, up to `limit`.
pub(crate) fn stream_runs(
    tree: &sled::Tree,
    stream: &StreamId,
    from: StreamVersion,
    limit: Position,
) -> impl Iterator<Item = Result<StreamRun, ReadError>> {
    let prefix = stream_prefix(stream);
    let start = tree
        .range(stream_key(stream, StreamVersion::NONE)..=stream_key(stream, from))
        .next_back()
        .and_then(Result::ok)
        .map(|(k, _)| k.to_vec())
        .unwrap_or_else(|| stream_key(stream, from));
    let shown = stream.clone();
    tree.range(start..)
        .take_while(move |item| match item {
            Ok((k, _)) => k.starts_with(&prefix),
            Err(_) => true,
        })
        .map(move |item| {
            let (k, v) = item.map_err(storage)?;
            StreamRun::parse(&k, &v).ok_or_else(|| {
                corrupt(
                    limit,
                    Corruption::MalformedStreamEntry {
                        stream: shown.clone(),
                    },
                )
            })
        })
        .take_while(move |run| match run {
            Ok(r) => r.first_position <= limit,
            Err(_) => true,
        })
}

/// The stream's version counting only events at or below `limit`.
pub(crate) fn stream_version(
    tree: &sled::Tree,
    stream: &StreamId,
    limit: Position,
) -> Result<StreamVersion, ReadError> {
    for item in tree.scan_prefix(stream_prefix(stream)).rev() {
        let (k, v) = item.map_err(storage)?;
        let run = StreamRun::parse(&k, &v).ok_or_else(|| {
            corrupt(
                limit,
                Corruption::MalformedStreamEntry {
                    stream: stream.clone(),
                },
            )
        })?;
        // A run is one append of one group: durable as a whole or not at all.
        if run.first_position <= limit {
            return Ok(run.last_version());
        }
    }
    Ok(StreamVersion::NONE)
}

/// Position of the event with this id, if indexed.
pub(crate) fn id_position(tree: &sled::Tree, id: &EventId) -> Result<Option<Position>, ReadError> {
    match tree.get(id_key(id)).map_err(storage)? {
        None => Ok(None),
        Some(v) => u64_at(&v, 0).map(|p| Some(Position(p))).ok_or_else(|| {
            corrupt(
                Position::ZERO,
                Corruption::MalformedIdEntry { event_id: *id },
            )
        }),
    }
}

/// The newest chunk's first position and bytes.
pub(crate) fn last_chunk(tree: &sled::Tree) -> Result<Option<(Position, sled::IVec)>, ReadError> {
    match tree.scan_prefix([CHUNK_PREFIX]).next_back() {
        None => Ok(None),
        Some(item) => {
            let (k, v) = item.map_err(storage)?;
            let first = u64_at(&k, 1)
                .ok_or_else(|| corrupt(Position::ZERO, Corruption::MalformedChunkKey))?;
            Ok(Some((Position(first), v)))
        }
    }
}

/// The chunk holding `position`: its first position and bytes.
pub(crate) fn chunk_holding(
    tree: &sled::Tree,
    position: Position,
) -> Result<Option<(Position, sled::IVec)>, ReadError> {
    match tree
        .range(chunk_key(Position::ZERO)..=chunk_key(position))
        .next_back()
    {
        None => Ok(None),
        Some(item) => {
            let (k, v) = item.map_err(storage)?;
            let first =
                u64_at(&k, 1).ok_or_else(|| corrupt(position, Corruption::MalformedChunkKey))?;
            Ok(Some((Position(first), v)))
        }
    }
}
