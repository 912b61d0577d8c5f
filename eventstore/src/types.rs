//! Identifiers, positions and the two shapes of an event: proposed (what a caller
//! asks to append) and recorded (what the log holds).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::limits::{ACTOR_SIZE_MAX_BYTES, EVENT_TYPE_SIZE_MAX_BYTES, STREAM_ID_SIZE_MAX_BYTES};

/// Global position of a record in the log. The first record is at position 1;
/// position 0 names the empty log ("before the first record").
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Position(pub u64);

impl Position {
    /// The position before the first record.
    pub const ZERO: Position = Position(0);
    /// The first position a record can have.
    pub const FIRST: Position = Position(1);

    /// The next position, or `None` on overflow (a log of 2^64 records).
    pub fn next(self) -> Option<Position> {
        self.0.checked_add(1).map(Position)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Version of a stream: the number of events it holds. A stream that does not
/// exist is at version 0; its first event has version 1.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct StreamVersion(pub u64);

impl StreamVersion {
    /// Version of a stream that has no events.
    pub const NONE: StreamVersion = StreamVersion(0);
}

impl fmt::Display for StreamVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What the caller believes the stream's version is before its append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check: append whatever the stream's version.
    Any,
    /// The stream must not exist yet (version 0).
    NoStream,
    /// The stream must be exactly at this version (`Exact(0)` equals `NoStream`).
    Exact(StreamVersion),
}

impl ExpectedVersion {
    /// Does a stream at `actual` satisfy this expectation?
    pub fn admits(self, actual: StreamVersion) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == StreamVersion::NONE,
            ExpectedVersion::Exact(v) => actual == v,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => write!(f, "any version"),
            ExpectedVersion::NoStream => write!(f, "no stream (version 0)"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// Name of a stream, e.g. `opportunity-42`. The part before the first `-` is the
/// stream's category (the aggregate kind).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(String);

/// Why a string is not a valid stream id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamIdError {
    #[error("stream id is empty; name the stream as `<category>-<id>`, e.g. `opportunity-42`")]
    Empty,
    #[error("stream id is {len} bytes, the limit is {max}; use a shorter id")]
    TooLong { len: usize, max: usize },
    #[error("stream id {id:?} contains a control or whitespace character; use printable characters only")]
    BadCharacter { id: String },
}

impl StreamId {
    /// Validate and wrap a stream name.
    pub fn new(id: impl Into<String>) -> Result<StreamId, StreamIdError> {
        let id = id.into();
        StreamId::check(&id)?;
        Ok(StreamId(id))
    }

    /// A stream name `check` accepted already.
    pub(crate) fn from_checked(id: &str) -> StreamId {
        StreamId(id.to_owned())
    }

    /// Checks a stream name as [`StreamId::new`] does, without taking it.
    ///
    /// # Errors
    /// Why `id` is not a valid stream name.
    pub fn check(id: &str) -> Result<(), StreamIdError> {
        if id.is_empty() {
            return Err(StreamIdError::Empty);
        }
        if id.len() > STREAM_ID_SIZE_MAX_BYTES {
            return Err(StreamIdError::TooLong {
                len: id.len(),
                max: STREAM_ID_SIZE_MAX_BYTES,
            });
        }
        if id.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(StreamIdError::BadCharacter { id: id.to_owned() });
        }
        Ok(())
    }

    /// The stream name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The category: the text before the first `-`, or the whole name if it has none.
    pub fn category(&self) -> &str {
        category_of(&self.0)
    }
}

/// The category of stream name `name`: the text before the first `-`, or the whole name.
fn category_of(name: &str) -> &str {
    name.split('-').next().unwrap_or(name)
}

impl TryFrom<String> for StreamId {
    type Error = StreamIdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        StreamId::new(value)
    }
}

impl From<StreamId> for String {
    fn from(value: StreamId) -> Self {
        value.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Unique id of an event. Clients should use UUID v7 (time-ordered); importers
/// derive UUID v5 ids from the source row so that re-imports are idempotent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventId(pub Uuid);

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A BLAKE3 hash linking a record to its predecessor in the global order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct ChainHash(pub [u8; 32]);

impl ChainHash {
    /// The predecessor hash of the first record.
    pub const GENESIS: ChainHash = ChainHash([0; 32]);

    /// Lower-case hex form.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// Parses the 64-digit hex form (either case).
    ///
    /// # Errors
    /// [`ChainHashError`] naming what is wrong with `text`.
    pub fn from_hex(text: &str) -> Result<ChainHash, ChainHashError> {
        blake3::Hash::from_hex(text)
            .map(|h| ChainHash(*h.as_bytes()))
            .map_err(|e| ChainHashError::NotHex {
                text: text.to_owned(),
                reason: e.to_string(),
            })
    }
}

/// Why a text is not a chain hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainHashError {
    /// Not 64 hex digits; `reason` is the parser's account of the first fault.
    #[error("{text:?} is not a 64-digit hex chain hash: {reason}")]
    NotHex { text: String, reason: String },
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({})", self.to_hex())
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The newest durable record: its position and chain hash. The empty log has
/// position 0 and the genesis hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Head {
    pub position: Position,
    pub hash: ChainHash,
}

/// An event a caller asks the log to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposedEvent {
    pub event_id: EventId,
    /// Event type name, e.g. `OpportunityWon`.
    pub event_type: String,
    /// Version of the payload's schema for this type.
    pub schema_version: u16,
    /// Business time, supplied by the caller (may be in the past).
    pub occurred_at: DateTime<Utc>,
    /// The event (or command id) that caused this one.
    pub causation_id: Option<Uuid>,
    /// Groups everything that followed from one request.
    pub correlation_id: Option<Uuid>,
    /// Who or what caused the event (user, service, importer).
    pub actor: String,
    /// Opaque metadata (JSON by convention), e.g. the source row of an import.
    pub metadata: Vec<u8>,
    /// Opaque payload; the log never interprets it.
    pub payload: Vec<u8>,
}

impl ProposedEvent {
    /// Size counted against [`crate::limits::EVENT_SIZE_MAX_BYTES`].
    pub fn size_bytes(&self) -> usize {
        self.payload.len() + self.metadata.len() + self.event_type.len() + self.actor.len()
    }

    /// Checks the fields the log itself constrains.
    pub(crate) fn check_fields(&self) -> Result<(), EventFieldError> {
        if self.event_id.0.is_nil() {
            return Err(EventFieldError::NilEventId);
        }
        if self.event_type.is_empty() || self.event_type.len() > EVENT_TYPE_SIZE_MAX_BYTES {
            return Err(EventFieldError::EventTypeLength {
                len: self.event_type.len(),
                max: EVENT_TYPE_SIZE_MAX_BYTES,
            });
        }
        if self
            .event_type
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(EventFieldError::EventTypeCharacters {
                event_type: self.event_type.clone(),
            });
        }
        if self.actor.len() > ACTOR_SIZE_MAX_BYTES {
            return Err(EventFieldError::ActorTooLong {
                len: self.actor.len(),
                max: ACTOR_SIZE_MAX_BYTES,
            });
        }
        Ok(())
    }

    /// Whether `recorded` holds exactly this proposal (used for idempotent retries).
    pub fn same_content(&self, recorded: &RecordedEvent) -> bool {
        self.event_id == recorded.event_id
            && self.event_type == recorded.event_type
            && self.schema_version == recorded.schema_version
            && self.occurred_at == recorded.occurred_at
            && self.causation_id == recorded.causation_id
            && self.correlation_id == recorded.correlation_id
            && self.actor == recorded.actor
            && self.metadata == recorded.metadata
            && self.payload == recorded.payload
    }
}

/// Why a proposed event is refused before anything is written (the reason of
/// [`crate::AppendError::InvalidEvent`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventFieldError {
    #[error("event id is the nil UUID; give every event a unique UUID (v7)")]
    NilEventId,
    #[error("event type must be 1..={max} bytes, got {len}")]
    EventTypeLength { len: usize, max: usize },
    #[error("event type {event_type:?} contains whitespace or control characters")]
    EventTypeCharacters { event_type: String },
    #[error("actor is {len} bytes, the limit is {max}")]
    ActorTooLong { len: usize, max: usize },
    #[error("the same event id appears twice in one append")]
    RepeatedEventId,
}

/// An event as the log holds it, with its place in the global order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    pub position: Position,
    pub stream_id: StreamId,
    pub stream_version: StreamVersion,
    pub event_id: EventId,
    pub event_type: String,
    pub schema_version: u16,
    pub occurred_at: DateTime<Utc>,
    /// When the log accepted the event; set by the store, never by the client.
    /// Never decreases along the global order.
    pub recorded_at: DateTime<Utc>,
    pub causation_id: Option<Uuid>,
    pub correlation_id: Option<Uuid>,
    pub actor: String,
    pub metadata: Vec<u8>,
    pub payload: Vec<u8>,
    /// CRC-32 of the encoded frame (everything before the checksum).
    pub checksum: u32,
    /// Chain hash of the previous record (genesis for position 1).
    pub prev_hash: ChainHash,
    /// BLAKE3 of `prev_hash` and this record's encoded body.
    pub hash: ChainHash,
}

/// A recorded event's envelope and payload read in place, before anything of it is copied:
/// what [`crate::EventStore::read_all_selected`] shows its selector for every record it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub position: Position,
    /// A valid stream name (checked as [`StreamId::new`] checks it).
    pub stream_id: &'a str,
    pub stream_version: StreamVersion,
    pub event_id: EventId,
    pub event_type: &'a str,
    pub schema_version: u16,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub payload: &'a [u8],
    pub hash: ChainHash,
}

impl RecordView<'_> {
    /// The stream's category: the text before the first `-` (see [`StreamId::category`]).
    pub fn category(&self) -> &str {
        category_of(self.stream_id)
    }
}

impl RecordedEvent {
    /// This record's envelope as a [`RecordView`].
    pub fn view(&self) -> RecordView<'_> {
        RecordView {
            position: self.position,
            stream_id: self.stream_id.as_str(),
            stream_version: self.stream_version,
            event_id: self.event_id,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            occurred_at: self.occurred_at,
            recorded_at: self.recorded_at,
            payload: &self.payload,
            hash: self.hash,
        }
    }

    /// The head this record makes when it is the newest.
    pub fn as_head(&self) -> Head {
        Head {
            position: self.position,
            hash: self.hash,
        }
    }
}

/// One stream's share of an [`crate::EventStore::append_batch`]: what one
/// [`crate::EventStore::append`] would take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamAppend {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<ProposedEvent>,
}

/// The `recorded_at` an append's records get.
///
/// The store's clock by default. A batch may state an instant instead (an import that pins
/// its recording time so that importing the same files into an empty log again gives the
/// same records, byte for byte and hash for hash). Either way a record's `recorded_at` is
/// never earlier than its predecessor's: the store takes the later of the two, and a stated
/// instant after the store's clock is refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecordedAt {
    /// The store's clock when it takes the append.
    #[default]
    Now,
    /// This instant (not after the store's clock).
    Stated(DateTime<Utc>),
}

impl RecordedAt {
    /// The instant a record appended after one recorded at `last` gets, the store's clock
    /// reading `now`.
    pub fn resolve(self, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
        let wanted = match self {
            RecordedAt::Now => now,
            RecordedAt::Stated(t) => t,
        };
        last.map_or(wanted, |last| last.max(wanted))
    }
}

/// What a successful append returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    /// Position of the first event of the append.
    pub first_position: Position,
    /// Position of the last event of the append.
    pub last_position: Position,
    /// The stream's version after the append (the version of its last event).
    pub stream_version: StreamVersion,
    /// True when every event was already in the log (an idempotent retry): nothing was written.
    pub already_present: bool,
}
