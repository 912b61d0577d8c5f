//! Errors per operation. Each message says what went wrong: where (path,
//! position), what was found, and what it means for the caller (nothing was
//! written, the record is not served, the store refuses writes). Where the
//! store's own API offers a way out (retry, resend unchanged, reopen) the
//! message says so. It names no command or configuration file of a program
//! built on the store: that program knows its users' verbs and adds them
//! where it shows the error.

use crate::codec::{EncodeError, FrameError};
use crate::types::{
    ChainHash, EventFieldError, EventId, ExpectedVersion, Position, StreamId, StreamVersion,
};

/// Why an append was refused. A refused append wrote nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    #[error("stream `{stream}` is at version {actual}, the append expected {expected}; reload the stream and retry")]
    WrongExpectedVersion {
        stream: StreamId,
        expected: ExpectedVersion,
        actual: StreamVersion,
    },
    #[error("event {event_id} is already in the log {detail}; an id names one event: give a new event a new id, or resend the original append unchanged")]
    IdempotencyConflict { event_id: EventId, detail: String },
    #[error("an append must carry at least one event")]
    Empty,
    #[error("append carries {count} events, the limit is {max}; split it into several appends")]
    TooManyEvents { count: usize, max: usize },
    #[error("event #{index} ({event_id}) is {size} bytes, the limit is {max}; store large content elsewhere and reference it")]
    EventTooLarge {
        index: usize,
        event_id: EventId,
        size: usize,
        max: usize,
    },
    #[error("append is {size} bytes, the limit is {max}; split it into several appends")]
    AppendTooLarge { size: usize, max: usize },
    #[error("event #{index} ({event_id}) is invalid: {reason}")]
    InvalidEvent {
        index: usize,
        event_id: EventId,
        reason: EventFieldError,
    },
    #[error("the log is full: no position after {0}")]
    LogFull(Position),
    #[error("storage failed while making the append durable ({0}); the store refuses writes until it is reopened; check the disk, then reopen the store and check the log's hash chain")]
    StorageFailed(String),
    #[error("the store is closed; reopen it")]
    Closed,
    #[error("the log's storage service did not take the append ({0}); the append may or may not be in the log: resend it unchanged once the service is reachable (appends are idempotent by event id)")]
    Unavailable(String),
    #[error(
        "a batch of {parts} appends is over the limit of {max}; split it into several batches"
    )]
    TooManyParts { parts: usize, max: usize },
    #[error("the batch states it was recorded at {stated}, after the store's clock ({now}); state an instant that has passed, or let the store record the time")]
    RecordedInFuture {
        stated: chrono::DateTime<chrono::Utc>,
        now: chrono::DateTime<chrono::Utc>,
    },
    #[error(
        "the log was opened read-only (a copy or backup being read); open it writable to append"
    )]
    ReadOnly,
    /// The sealer given to [`crate::AnyStore`] refused the append or its follow-up.
    #[error("{0}")]
    Sealing(SealRefusal),
}

/// Why a [`crate::any::Sealer`] refused: its message says what and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SealRefusal {
    /// What went wrong and what to do, in the words of the program that set the sealer.
    pub message: String,
    /// Whether resending may succeed once the cause is fixed (a key store that could not be
    /// written) rather than never (the event cannot be written as it is).
    pub retryable: bool,
}

impl SealRefusal {
    /// A refusal that resending the same events will meet again.
    #[must_use]
    pub fn refused(message: impl Into<String>) -> SealRefusal {
        SealRefusal {
            message: message.into(),
            retryable: false,
        }
    }

    /// A failure that resending may get past once its cause is fixed.
    #[must_use]
    pub fn unavailable(message: impl Into<String>) -> SealRefusal {
        SealRefusal {
            message: message.into(),
            retryable: true,
        }
    }
}

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error("record at position {position} is corrupt ({reason}); it is not served, and the log needs restoring from a replica or backup")]
    Corrupt {
        position: Position,
        reason: Corruption,
    },
    #[error("storage read failed ({0}); check the disk and retry")]
    Storage(String),
    /// The embedded log's index (derived from the records) cannot be read; the records
    /// themselves are not affected.
    #[error("the log's index at {path} is damaged ({reason}); the records are intact: stop every process using the log, move that directory away and open the log again to rebuild the index from the records")]
    IndexDamaged { path: String, reason: String },
    #[error("the log's storage service did not answer the read ({0}); retry once it is reachable")]
    Unavailable(String),
    #[error("the store is closed; reopen it")]
    Closed,
}

/// What is wrong with a record the log does not serve: the reason of
/// [`ReadError::Corrupt`], and of a failed `verify`. The message names what
/// was found; the position is the error's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// The frame fails its own checks (format version, lengths, checksum, body).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The record's content cannot be encoded again to recompute its hash.
    #[error(transparent)]
    Unencodable(#[from] EncodeError),
    /// A damaged record of the embedded log, and how far the damage reaches: the records
    /// from it up to `next_readable` (exclusive; the end of the log when `None`) cannot be
    /// read, because the frames between cannot be told apart.
    #[error("{cause}; the records from here {}", match next_readable { Some(p) => format!("up to position {p} (exclusive) cannot be read", p = p), None => "to the end of the log cannot be read".to_owned() })]
    Unreadable {
        next_readable: Option<Position>,
        cause: Box<Corruption>,
    },
    #[error("the frame's length field is damaged")]
    FrameOverrunsSegment,
    #[error("no segment holds this position")]
    NoSegment,
    #[error("segment {segment} is missing")]
    SegmentMissing { segment: Position },
    /// The segment file ends inside the record's frame (the file was truncated).
    #[error("the segment starting at position {segment} ends {available} bytes into this record (the file was cut short)")]
    SegmentCut { segment: Position, available: usize },
    /// The segment ends before this position and the next one starts later.
    #[error("record is missing: the segment starting at {segment} ends before it and the next segment starts at {next_segment}")]
    SegmentGap {
        segment: Position,
        next_segment: Position,
    },
    #[error("record is missing below the durable head")]
    MissingBelowHead,
    /// `verify` found no record where the walk expected one.
    #[error("record is missing (gap in positions)")]
    Missing,
    #[error("a stream index entry of `{stream}` is malformed")]
    MalformedStreamEntry { stream: StreamId },
    #[error("the id index entry of {event_id} is malformed")]
    MalformedIdEntry { event_id: EventId },
    #[error("the event id index points at a missing record for {event_id}")]
    DanglingIdEntry { event_id: EventId },
    /// The embedded log's stream index and the record disagree.
    #[error("the stream index says `{stream}` version {version}, the record says `{found_stream}` version {found_version}")]
    StreamIndexMismatch {
        stream: StreamId,
        version: StreamVersion,
        found_stream: StreamId,
        found_version: StreamVersion,
    },
    /// A JetStream store's in-memory index and the record disagree.
    #[error("the index says `{stream}` version {version} is at {indexed_at}, the record says `{found_stream}` version {found_version}")]
    IndexMismatch {
        stream: StreamId,
        version: StreamVersion,
        indexed_at: Position,
        found_stream: StreamId,
        found_version: StreamVersion,
    },
    #[error("staged record is missing from its group")]
    StagedMissing,
    #[error("record {position} does not follow the head {head}: a gap in the log")]
    Gap { position: Position, head: Position },
    #[error("expected position {expected}, found {found}: positions are not dense")]
    NotDense { expected: Position, found: Position },
    #[error("record {position} links to {links_to} but the previous record hashes to {previous}: the chain is broken")]
    ChainBroken {
        position: Position,
        links_to: ChainHash,
        previous: ChainHash,
    },
    #[error("content hashes to {computed} but the record says {stated}: the record was altered")]
    Altered {
        computed: ChainHash,
        stated: ChainHash,
    },
    #[error("the head names hash {head} but the last record hashes to {last}")]
    HeadMismatch { head: ChainHash, last: ChainHash },
    #[error("record {position} is version {version} of `{stream}`, which is at version {stream_version}")]
    VersionOutOfOrder {
        position: Position,
        version: StreamVersion,
        stream: StreamId,
        stream_version: StreamVersion,
    },
    #[error("record {position} repeats event id {event_id} of record {first}")]
    RepeatedEventId {
        position: Position,
        event_id: EventId,
        first: Position,
    },
}

/// Why a store could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("the log at {path} was written in format version {found}, this build of the store reads up to {supported}")]
    NewerFormat {
        path: String,
        found: u8,
        supported: u8,
    },
    #[error("could not open the log at {path}: {reason}; check the path and its permissions, and that no other process has it open")]
    Storage { path: String, reason: String },
    /// Another process (or another open handle in this one) holds the
    /// directory's lock, and did not release it within the open's wait.
    #[error("the log at {path} is in use by another process (or another open handle in this one), which holds its directory lock")]
    Locked { path: String },
    #[error("the log at {path} is damaged: {reason}; restore it from a replica or backup")]
    Damaged { path: String, reason: String },
    /// A remote backend (NATS JetStream) could not be reached or set up; the
    /// reason says what to check.
    #[error("could not open the log at {path}: {reason}")]
    Unreachable { path: String, reason: String },
}

impl From<EncodeError> for AppendError {
    fn from(e: EncodeError) -> Self {
        AppendError::StorageFailed(e.to_string())
    }
}

impl From<ReadError> for AppendError {
    fn from(e: ReadError) -> Self {
        AppendError::StorageFailed(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages a user may see through a program built on the store.
    fn samples() -> Vec<String> {
        let stream = StreamId::new("case-1").unwrap();
        vec![
            ReadError::Corrupt {
                position: Position(7),
                reason: Corruption::Frame(FrameError::Checksum {
                    stored: 1,
                    computed: 2,
                }),
            }
            .to_string(),
            ReadError::Corrupt {
                position: Position(9),
                reason: Corruption::ChainBroken {
                    position: Position(9),
                    links_to: ChainHash([1; 32]),
                    previous: ChainHash([2; 32]),
                },
            }
            .to_string(),
            ReadError::Storage("io".into()).to_string(),
            AppendError::StorageFailed("flush".into()).to_string(),
            AppendError::WrongExpectedVersion {
                stream,
                expected: ExpectedVersion::NoStream,
                actual: StreamVersion(3),
            }
            .to_string(),
            OpenError::Locked { path: "/d".into() }.to_string(),
            OpenError::NewerFormat {
                path: "/d".into(),
                found: 2,
                supported: 1,
            }
            .to_string(),
            OpenError::Damaged {
                path: "/d".into(),
                reason: "r".into(),
            }
            .to_string(),
        ]
    }

    #[test]
    fn a_corrupt_record_names_its_position_what_was_found_and_that_it_is_not_served() {
        let shown = &samples()[0];
        assert!(shown.contains("position 7"), "{shown}");
        assert!(
            shown.contains("checksum mismatch: stored 00000001, computed 00000002"),
            "{shown}"
        );
        assert!(shown.contains("not served"), "{shown}");
        let chain = &samples()[1];
        assert!(
            chain.contains("record 9 links to") && chain.contains("the chain is broken"),
            "{chain}"
        );
    }

    #[test]
    fn messages_name_no_command_of_a_program_built_on_the_store() {
        for shown in samples() {
            assert!(!shown.contains("`crm"), "{shown}");
            assert!(!shown.contains("crm "), "{shown}");
        }
        let locked = OpenError::Locked { path: "/d".into() }.to_string();
        assert!(locked.contains("in use by another process"), "{locked}");
    }
}
