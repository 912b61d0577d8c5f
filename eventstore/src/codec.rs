//! The on-disk frame of a recorded event, format version 1.
//!
//! ```text
//! offset  size  field
//! 0       1     format version (1)
//! 1       4     body length n (u32, little endian)
//! 5       n     body: bincode 2 (standard config: little endian, varint) of `BodyV1`
//! 5+n     32    prev_hash: chain hash of the previous record (zeros for position 1)
//! 37+n    32    hash: BLAKE3(prev_hash || format version || body)
//! 69+n    4     checksum: CRC-32 (IEEE) of bytes 0..69+n
//! ```
//!
//! **Architecture Invariant:** a frame is decoded only if its format version is
//! known, its lengths agree and its checksum matches; otherwise decoding fails
//! with the reason and the caller reports the record as corrupt at its
//! position. Decoding never guesses. The encoding of a given record is
//! deterministic, so `verify` can recompute every hash.

use bincode::{BorrowDecode, Decode, Encode};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::types::{
    ChainHash, EventId, Position, ProposedEvent, RecordView, RecordedEvent, StreamId,
    StreamIdError, StreamVersion,
};

/// The frame format this build writes, and the newest it reads.
pub const FORMAT_VERSION: u8 = 1;

const HEADER_LEN: usize = 5;
const HASH_LEN: usize = 32;
const CHECKSUM_LEN: usize = 4;
/// Bytes a frame adds around its body.
pub const FRAME_OVERHEAD_BYTES: usize = HEADER_LEN + 2 * HASH_LEN + CHECKSUM_LEN;

/// Largest body a decoder accepts (well above the event size limit, so a
/// corrupt length cannot make it allocate without bound).
const BODY_SIZE_MAX_BYTES: usize = 64 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<BODY_SIZE_MAX_BYTES>()
}

/// Instant as seconds and nanoseconds since the Unix epoch (lossless for chrono's range).
#[derive(Encode, Decode, Clone, Copy, Debug, PartialEq, Eq)]
struct Instant {
    secs: i64,
    nanos: u32,
}

impl Instant {
    fn from_chrono(t: &DateTime<Utc>) -> Instant {
        Instant {
            secs: t.timestamp(),
            nanos: t.timestamp_subsec_nanos(),
        }
    }

    fn to_chrono(self) -> Result<DateTime<Utc>, FrameError> {
        DateTime::from_timestamp(self.secs, self.nanos).ok_or(FrameError::TimestampOutOfRange {
            secs: self.secs,
            nanos: self.nanos,
        })
    }
}

/// The encoded fields of a record, format version 1. Field order is the format:
/// never reorder, rename-in-place is fine, additions need a new format version. The codec
/// reads and writes it through its borrowed twin [`BodyRefV1`]; this owned form is the
/// reference the tests hold the twin to.
#[cfg(test)]
#[derive(Encode, Decode, Debug, PartialEq, Eq)]
struct BodyV1 {
    position: u64,
    stream_id: String,
    stream_version: u64,
    event_id: [u8; 16],
    event_type: String,
    schema_version: u16,
    occurred_at: Instant,
    recorded_at: Instant,
    causation_id: Option<[u8; 16]>,
    correlation_id: Option<[u8; 16]>,
    actor: String,
    metadata: Vec<u8>,
    payload: Vec<u8>,
}

/// A checked frame's fields, borrowed from it.
struct FrameParts<'a> {
    body: BodyRefV1<'a>,
    view: RecordView<'a>,
    checksum: u32,
    prev_hash: ChainHash,
}

impl FrameParts<'_> {
    fn to_record(&self) -> RecordedEvent {
        let b = &self.body;
        RecordedEvent {
            position: self.view.position,
            // Checked while the frame was read (`StreamId::check` in `parts`).
            stream_id: StreamId::from_checked(b.stream_id),
            stream_version: self.view.stream_version,
            event_id: self.view.event_id,
            event_type: b.event_type.to_owned(),
            schema_version: b.schema_version,
            occurred_at: self.view.occurred_at,
            recorded_at: self.view.recorded_at,
            causation_id: b.causation_id.map(Uuid::from_bytes),
            correlation_id: b.correlation_id.map(Uuid::from_bytes),
            actor: b.actor.to_owned(),
            metadata: b.metadata.to_vec(),
            payload: b.payload.to_vec(),
            checksum: self.checksum,
            prev_hash: self.prev_hash,
            hash: self.view.hash,
        }
    }
}

/// The place and time the log gives a proposed event.
#[derive(Clone, Debug)]
pub struct Placement<'a> {
    pub position: Position,
    pub stream_id: &'a StreamId,
    pub stream_version: StreamVersion,
    pub recorded_at: DateTime<Utc>,
    pub prev_hash: ChainHash,
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame is {len} bytes, shorter than the {min}-byte minimum")]
    Truncated { len: usize, min: usize },
    #[error("unknown frame format version {0} (this build reads up to {FORMAT_VERSION})")]
    UnknownFormat(u8),
    #[error("frame length {actual} does not match its header ({expected})")]
    LengthMismatch { expected: usize, actual: usize },
    #[error("checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    Checksum { stored: u32, computed: u32 },
    /// The body is not a bincode `BodyV1` (the decoder's message).
    #[error("body does not decode: {0}")]
    Body(String),
    #[error("body does not decode: {count} trailing bytes after the body")]
    TrailingBytes { count: usize },
    #[error("body does not decode: {0}")]
    BadStreamId(StreamIdError),
    #[error("body does not decode: timestamp {secs}s {nanos}ns is out of range")]
    TimestampOutOfRange { secs: i64, nanos: u32 },
    #[error("frame holds position {found}, expected {expected}")]
    WrongPosition { expected: Position, found: Position },
    #[error("chain hash does not match the record's content")]
    HashMismatch,
}

/// Why a record could not be encoded into a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The body encoder refused the record (its message).
    #[error("encoding failed: {0}")]
    Body(String),
    #[error("record body of {size} bytes exceeds the frame format")]
    BodyTooLarge { size: usize },
}

/// Borrowed twin of [`BodyV1`], for encoding without copying payloads and for reading a
/// frame in place (bincode encodes `&str` and `&[u8]` exactly as `String` and `Vec<u8>`);
/// its fields and their order must stay identical (the codec tests check it).
#[derive(Encode, BorrowDecode)]
struct BodyRefV1<'a> {
    position: u64,
    stream_id: &'a str,
    stream_version: u64,
    event_id: [u8; 16],
    event_type: &'a str,
    schema_version: u16,
    occurred_at: Instant,
    recorded_at: Instant,
    causation_id: Option<[u8; 16]>,
    correlation_id: Option<[u8; 16]>,
    actor: &'a str,
    metadata: &'a [u8],
    payload: &'a [u8],
}

fn body_of<'a>(proposed: &'a ProposedEvent, place: &Placement<'a>) -> BodyRefV1<'a> {
    BodyRefV1 {
        position: place.position.0,
        stream_id: place.stream_id.as_str(),
        stream_version: place.stream_version.0,
        event_id: proposed.event_id.0.into_bytes(),
        event_type: &proposed.event_type,
        schema_version: proposed.schema_version,
        occurred_at: Instant::from_chrono(&proposed.occurred_at),
        recorded_at: Instant::from_chrono(&place.recorded_at),
        causation_id: proposed.causation_id.map(Uuid::into_bytes),
        correlation_id: proposed.correlation_id.map(Uuid::into_bytes),
        actor: &proposed.actor,
        metadata: &proposed.metadata,
        payload: &proposed.payload,
    }
}

fn body_of_recorded(r: &RecordedEvent) -> BodyRefV1<'_> {
    BodyRefV1 {
        position: r.position.0,
        stream_id: r.stream_id.as_str(),
        stream_version: r.stream_version.0,
        event_id: r.event_id.0.into_bytes(),
        event_type: &r.event_type,
        schema_version: r.schema_version,
        occurred_at: Instant::from_chrono(&r.occurred_at),
        recorded_at: Instant::from_chrono(&r.recorded_at),
        causation_id: r.causation_id.map(Uuid::into_bytes),
        correlation_id: r.correlation_id.map(Uuid::into_bytes),
        actor: &r.actor,
        metadata: &r.metadata,
        payload: &r.payload,
    }
}

fn encode_body(body: &BodyRefV1<'_>) -> Result<Vec<u8>, EncodeError> {
    bincode::encode_to_vec(body, config()).map_err(|e| EncodeError::Body(e.to_string()))
}

fn chain_hash(prev: &ChainHash, version: u8, body: &[u8]) -> ChainHash {
    let mut h = blake3::Hasher::new();
    h.update(&prev.0);
    h.update(&[version]);
    h.update(body);
    ChainHash(*h.finalize().as_bytes())
}

fn frame_from_body(
    body: &[u8],
    prev_hash: ChainHash,
) -> Result<(Vec<u8>, ChainHash, u32), EncodeError> {
    let body_len =
        u32::try_from(body.len()).map_err(|_| EncodeError::BodyTooLarge { size: body.len() })?;
    let hash = chain_hash(&prev_hash, FORMAT_VERSION, body);
    let mut frame = Vec::with_capacity(body.len() + FRAME_OVERHEAD_BYTES);
    frame.push(FORMAT_VERSION);
    frame.extend_from_slice(&body_len.to_le_bytes());
    frame.extend_from_slice(body);
    frame.extend_from_slice(&prev_hash.0);
    frame.extend_from_slice(&hash.0);
    let checksum = crc32fast::hash(&frame);
    frame.extend_from_slice(&checksum.to_le_bytes());
    Ok((frame, hash, checksum))
}

/// Encodes a proposed event at its placement: returns the frame and its chain hash.
pub fn encode_frame(
    proposed: &ProposedEvent,
    place: &Placement<'_>,
) -> Result<(Vec<u8>, ChainHash), EncodeError> {
    let body = encode_body(&body_of(proposed, place))?;
    frame_from_body(&body, place.prev_hash).map(|(frame, hash, _)| (frame, hash))
}

/// As [`encode_frame`], appending the frame to `out` (left as it was on error): returns
/// the chain hash.
pub fn encode_frame_into(
    proposed: &ProposedEvent,
    place: &Placement<'_>,
    out: &mut Vec<u8>,
) -> Result<ChainHash, EncodeError> {
    let start = out.len();
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&[0; 4]);
    let body_start = out.len();
    if let Err(e) = bincode::encode_into_std_write(body_of(proposed, place), out, config()) {
        out.truncate(start);
        return Err(EncodeError::Body(e.to_string()));
    }
    let size = out.len() - body_start;
    let Ok(body_len) = u32::try_from(size) else {
        out.truncate(start);
        return Err(EncodeError::BodyTooLarge { size });
    };
    out[start + 1..body_start].copy_from_slice(&body_len.to_le_bytes());
    let hash = chain_hash(&place.prev_hash, FORMAT_VERSION, &out[body_start..]);
    out.extend_from_slice(&place.prev_hash.0);
    out.extend_from_slice(&hash.0);
    let checksum = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&checksum.to_le_bytes());
    Ok(hash)
}

/// Encodes a proposed event at its placement: returns the frame and the record
/// as it will be read back.
pub fn encode(
    proposed: &ProposedEvent,
    place: &Placement<'_>,
) -> Result<(Vec<u8>, RecordedEvent), EncodeError> {
    let body = encode_body(&body_of(proposed, place))?;
    let (frame, hash, checksum) = frame_from_body(&body, place.prev_hash)?;
    let record = RecordedEvent {
        position: place.position,
        stream_id: place.stream_id.clone(),
        stream_version: place.stream_version,
        event_id: proposed.event_id,
        event_type: proposed.event_type.clone(),
        schema_version: proposed.schema_version,
        occurred_at: proposed.occurred_at,
        recorded_at: place.recorded_at,
        causation_id: proposed.causation_id,
        correlation_id: proposed.correlation_id,
        actor: proposed.actor.clone(),
        metadata: proposed.metadata.clone(),
        payload: proposed.payload.clone(),
        checksum,
        prev_hash: place.prev_hash,
        hash,
    };
    Ok((frame, record))
}

/// Re-encodes a recorded event into its frame (deterministic: equal to the stored bytes).
pub fn encode_recorded(record: &RecordedEvent) -> Result<Vec<u8>, EncodeError> {
    let body = encode_body(&body_of_recorded(record))?;
    frame_from_body(&body, record.prev_hash).map(|(frame, _, _)| frame)
}

/// Recomputes a record's chain hash from its content and `prev_hash`.
pub fn recompute_hash(record: &RecordedEvent) -> Result<ChainHash, EncodeError> {
    let body = encode_body(&body_of_recorded(record))?;
    Ok(chain_hash(&record.prev_hash, FORMAT_VERSION, &body))
}

fn read_array<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Length of the frame that starts at the beginning of `bytes`, read from its
/// header (for walking concatenated frames). `None` if the header is cut off.
/// The length is not trusted: [`decode`] checks it against the checksum.
pub fn frame_len(bytes: &[u8]) -> Option<usize> {
    let body_len = read_array::<4>(bytes, 1).map(u32::from_le_bytes)?;
    usize::try_from(body_len)
        .ok()?
        .checked_add(FRAME_OVERHEAD_BYTES)
}

/// Checks a frame's format version, lengths and checksum, without decoding its body.
///
/// # Errors
/// The first check that fails.
pub fn check_frame(frame: &[u8]) -> Result<(), FrameError> {
    checked(frame).map(|_| ())
}

/// The checks of [`check_frame`]; returns the format version, body length and checksum.
fn checked(frame: &[u8]) -> Result<(u8, usize, u32), FrameError> {
    let min = HEADER_LEN + HASH_LEN * 2 + CHECKSUM_LEN;
    if frame.len() < min {
        return Err(FrameError::Truncated {
            len: frame.len(),
            min,
        });
    }
    let version = frame[0];
    if version != FORMAT_VERSION {
        return Err(FrameError::UnknownFormat(version));
    }
    let body_len = read_array::<4>(frame, 1)
        .map(u32::from_le_bytes)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or(FrameError::Truncated {
            len: frame.len(),
            min,
        })?;
    let expected_len =
        body_len
            .checked_add(FRAME_OVERHEAD_BYTES)
            .ok_or(FrameError::LengthMismatch {
                expected: usize::MAX,
                actual: frame.len(),
            })?;
    if frame.len() != expected_len {
        return Err(FrameError::LengthMismatch {
            expected: expected_len,
            actual: frame.len(),
        });
    }
    let crc_at = frame.len() - CHECKSUM_LEN;
    let stored = read_array::<4>(frame, crc_at)
        .map(u32::from_le_bytes)
        .ok_or(FrameError::Truncated {
            len: frame.len(),
            min,
        })?;
    let computed = crc32fast::hash(&frame[..crc_at]);
    if stored != computed {
        return Err(FrameError::Checksum { stored, computed });
    }
    Ok((version, body_len, stored))
}

/// Decodes a frame, checking format version, lengths and checksum. When
/// `expected` is given, the frame must hold that position. With `check_hash`
/// the chain hash is recomputed too (done by `verify`; reads rely on the checksum).
pub fn decode(
    frame: &[u8],
    expected: Option<Position>,
    check_hash: bool,
) -> Result<RecordedEvent, FrameError> {
    parts(frame, expected, check_hash).map(|p| p.to_record())
}

/// Checks and reads a frame as [`decode`] does (no chain hash recomputed), shows its envelope
/// to `select`, and copies the record out only when `select` chooses it.
///
/// # Errors
/// As [`decode`]: the frame is damaged, or does not hold `expected`.
pub fn decode_selected(
    frame: &[u8],
    expected: Option<Position>,
    select: &mut dyn FnMut(&RecordView<'_>) -> bool,
) -> Result<Option<RecordedEvent>, FrameError> {
    let parts = parts(frame, expected, false)?;
    Ok(select(&parts.view).then(|| parts.to_record()))
}

/// The checks and the borrowed fields of [`decode`].
fn parts(
    frame: &[u8],
    expected: Option<Position>,
    check_hash: bool,
) -> Result<FrameParts<'_>, FrameError> {
    let (version, body_len, stored) = checked(frame)?;
    let min = FRAME_OVERHEAD_BYTES;
    let body = &frame[HEADER_LEN..HEADER_LEN + body_len];
    let prev_hash = read_array::<32>(frame, HEADER_LEN + body_len)
        .map(ChainHash)
        .ok_or(FrameError::Truncated {
            len: frame.len(),
            min,
        })?;
    let hash = read_array::<32>(frame, HEADER_LEN + body_len + HASH_LEN)
        .map(ChainHash)
        .ok_or(FrameError::Truncated {
            len: frame.len(),
            min,
        })?;
    if check_hash && chain_hash(&prev_hash, version, body) != hash {
        return Err(FrameError::HashMismatch);
    }
    let (b, used): (BodyRefV1<'_>, usize) = bincode::borrow_decode_from_slice(body, config())
        .map_err(|e| FrameError::Body(e.to_string()))?;
    if used != body.len() {
        return Err(FrameError::TrailingBytes {
            count: body.len() - used,
        });
    }
    if let Some(expected) = expected {
        if b.position != expected.0 {
            return Err(FrameError::WrongPosition {
                expected,
                found: Position(b.position),
            });
        }
    }
    StreamId::check(b.stream_id).map_err(FrameError::BadStreamId)?;
    let view = RecordView {
        position: Position(b.position),
        stream_id: b.stream_id,
        stream_version: StreamVersion(b.stream_version),
        event_id: EventId(Uuid::from_bytes(b.event_id)),
        event_type: b.event_type,
        schema_version: b.schema_version,
        occurred_at: b.occurred_at.to_chrono()?,
        recorded_at: b.recorded_at.to_chrono()?,
        payload: b.payload,
        hash,
    };
    Ok(FrameParts {
        body: b,
        view,
        checksum: stored,
        prev_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (ProposedEvent, StreamId) {
        let p = ProposedEvent {
            event_id: EventId(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001)),
            event_type: "OpportunityWon".into(),
            schema_version: 2,
            occurred_at: DateTime::from_timestamp(1_700_000_000, 5).unwrap(),
            causation_id: None,
            correlation_id: Some(Uuid::from_u128(7)),
            actor: "importer".into(),
            metadata: b"{}".to_vec(),
            payload: br#"{"amount":1}"#.to_vec(),
        };
        (p, StreamId::new("opportunity-1").unwrap())
    }

    /// The sample's place: position 3, the first of its stream.
    fn third(s: &StreamId) -> Placement<'_> {
        Placement {
            position: Position(3),
            stream_id: s,
            stream_version: StreamVersion(1),
            recorded_at: DateTime::from_timestamp(1_700_000_100, 0).unwrap(),
            prev_hash: ChainHash([9; 32]),
        }
    }

    #[test]
    fn the_borrowed_body_encodes_and_decodes_exactly_as_the_owned_format() {
        let (p, s) = sample();
        let place = third(&s);
        let borrowed = body_of(&p, &place);
        let bytes = encode_body(&borrowed).unwrap();
        let (owned, used): (BodyV1, usize) = bincode::decode_from_slice(&bytes, config()).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(owned.stream_id, "opportunity-1");
        assert_eq!(owned.payload, br#"{"amount":1}"#);
        assert_eq!(owned.correlation_id, Some(Uuid::from_u128(7).into_bytes()));
        assert_eq!(bincode::encode_to_vec(&owned, config()).unwrap(), bytes);
        let (back, used): (BodyRefV1<'_>, usize) =
            bincode::borrow_decode_from_slice(&bytes, config()).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(encode_body(&back).unwrap(), bytes);
    }

    #[test]
    fn a_selected_decode_shows_the_envelope_and_copies_only_chosen_records() {
        let (p, s) = sample();
        let place = third(&s);
        let (frame, rec) = encode(&p, &place).unwrap();
        let mut seen = Vec::new();
        let mut refuse = |v: &RecordView<'_>| {
            seen.push((v.position, v.stream_id.to_owned(), v.event_type.to_owned()));
            false
        };
        assert_eq!(
            decode_selected(&frame, Some(Position(3)), &mut refuse).unwrap(),
            None
        );
        assert_eq!(
            seen,
            [(
                Position(3),
                "opportunity-1".to_owned(),
                "OpportunityWon".to_owned()
            )]
        );
        let mut view = None;
        let mut choose = |v: &RecordView<'_>| {
            view = Some(*v == rec.view());
            true
        };
        assert_eq!(
            decode_selected(&frame, Some(Position(3)), &mut choose).unwrap(),
            Some(rec)
        );
        assert_eq!(view, Some(true));
        // The same checks as `decode`: a wrong position and a flipped byte are errors.
        assert!(matches!(
            decode_selected(&frame, Some(Position(4)), &mut |_| true),
            Err(FrameError::WrongPosition { .. })
        ));
        let mut bad = frame.clone();
        bad[10] ^= 1;
        assert!(decode_selected(&bad, None, &mut |_| true).is_err());
    }

    #[test]
    fn encode_then_decode_round_trips_and_detects_every_flipped_byte() {
        let (p, s) = sample();
        let place = third(&s);
        let (frame, rec) = encode(&p, &place).unwrap();
        assert_eq!(decode(&frame, Some(Position(3)), true).unwrap(), rec);
        assert_eq!(encode_recorded(&rec).unwrap(), frame);
        assert_eq!(recompute_hash(&rec).unwrap(), rec.hash);
        assert!(matches!(
            decode(&frame, Some(Position(4)), false),
            Err(FrameError::WrongPosition { .. })
        ));
        for i in 0..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x40;
            assert!(
                decode(&bad, Some(Position(3)), true).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
        assert!(decode(&frame[..frame.len() - 1], None, false).is_err());
    }

    #[test]
    fn encoding_into_a_buffer_writes_the_same_frame() {
        let (e, s) = sample();
        let place = Placement {
            position: Position(7),
            stream_id: &s,
            stream_version: StreamVersion(3),
            recorded_at: e.occurred_at,
            prev_hash: ChainHash([9; 32]),
        };
        let (frame, hash) = encode_frame(&e, &place).unwrap();
        let mut buf = vec![1, 2, 3];
        assert_eq!(encode_frame_into(&e, &place, &mut buf).unwrap(), hash);
        assert_eq!(&buf[..3], &[1, 2, 3]);
        assert_eq!(&buf[3..], frame.as_slice());
    }

    #[test]
    fn unknown_format_version_is_refused() {
        let (p, s) = sample();
        let place = Placement {
            position: Position(1),
            stream_id: &s,
            stream_version: StreamVersion(1),
            recorded_at: DateTime::from_timestamp(0, 0).unwrap(),
            prev_hash: ChainHash::GENESIS,
        };
        let (mut frame, _) = encode(&p, &place).unwrap();
        frame[0] = 2;
        assert_eq!(
            decode(&frame, None, false),
            Err(FrameError::UnknownFormat(2))
        );
    }
}
