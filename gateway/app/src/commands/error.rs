//! Why a command was not carried out, in the words of the command service. The HTTP API maps
//! each variant to a status and problem type; the CLI prints the message.

use crm_domain::registry::{CommandParseError, DecideError, FoldError};
use crm_eventstore::{AppendError, ReadError};

use super::{COMMAND_ATTEMPTS_MAX, IDEMPOTENCY_KEY_SIZE_MAX_BYTES, STREAM_LOAD_EVENTS_MAX};

/// Why a command was refused or failed. A refused command appended nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// No aggregate has this stream category.
    #[error("there is no aggregate `{category}`; the aggregates are: {known}")]
    UnknownAggregate {
        /// The category asked for.
        category: String,
        /// The categories there are.
        known: String,
    },
    /// The body names no command.
    #[error(
        "the body has no `type`; name the command of aggregate `{category}`, one of: {commands}"
    )]
    MissingType {
        /// The aggregate.
        category: &'static str,
        /// Its command names.
        commands: String,
    },
    /// `type` is not text.
    #[error("field `type` must be a string naming the command, e.g. \"OpenAccount\"")]
    TypeNotText,
    /// The fields do not make the named command.
    #[error(transparent)]
    InvalidCommand(#[from] CommandParseError),
    /// The aggregate id cannot name a stream.
    #[error("invalid aggregate id: {0}")]
    InvalidAggregateId(String),
    /// The idempotency key is empty, too long or not visible ASCII.
    #[error("Idempotency-Key must be 1..={IDEMPOTENCY_KEY_SIZE_MAX_BYTES} visible ASCII characters, e.g. a UUID")]
    InvalidIdempotencyKey,
    /// The stream is not at the version the client expected.
    #[error("stream `{stream}` is at version {current}, If-Match expected {expected}; reload the stream and retry with If-Match: {current}")]
    VersionConflict {
        /// The stream.
        stream: String,
        /// Its version now.
        current: u64,
        /// The version the client expected.
        expected: u64,
    },
    /// A business rule refused the command (the domain's message).
    #[error("{0}")]
    Rejected(DecideError),
    /// The key was used before for another request.
    #[error("Idempotency-Key `{key}` was used for a different request to stream `{stream}`; send a new key for a new request")]
    IdempotencyKeyReused {
        /// The key.
        key: String,
        /// The stream.
        stream: String,
    },
    /// The stream is longer than a command may load.
    #[error("stream `{stream}` has more than {STREAM_LOAD_EVENTS_MAX} events; commands on it are refused")]
    StreamTooLong {
        /// The stream.
        stream: String,
    },
    /// Concurrent writers kept moving the stream.
    #[error("stream `{stream}` changed under {COMMAND_ATTEMPTS_MAX} tries of this command; retry")]
    Contended {
        /// The stream.
        stream: String,
    },
    /// A stored event of the stream cannot be folded.
    #[error("stream `{stream}` event {version} cannot be decoded: {source}")]
    Undecodable {
        /// The stream.
        stream: String,
        /// The event's stream version.
        version: u64,
        /// Why.
        source: FoldError,
    },
    /// The request metadata could not be encoded.
    #[error("could not encode the request metadata: {0}")]
    Metadata(serde_json::Error),
    /// The stream could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The log refused or failed the append.
    #[error(transparent)]
    Append(#[from] AppendError),
}

impl From<DecideError> for CommandError {
    fn from(e: DecideError) -> Self {
        CommandError::Rejected(e)
    }
}

impl CommandError {
    /// True when the request itself is malformed (the client must change it).
    #[must_use]
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            CommandError::MissingType { .. }
                | CommandError::TypeNotText
                | CommandError::InvalidCommand(_)
                | CommandError::InvalidAggregateId(_)
                | CommandError::InvalidIdempotencyKey
        )
    }
}
