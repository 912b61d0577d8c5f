//! Errors of the metric engine, one enum per operation family: [`DefinitionError`] for a
//! definition that does not parse or validate (always naming the offending key), and
//! [`MetricError`] for everything that reads the log or evaluates.

use crm_domain::CodecError;
use crm_eventstore::{AppendError, ReadError, StreamIdError};

use crate::expr::ExprError;

/// Why a metric definition (TOML) was refused. Every variant names the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DefinitionError {
    /// The text is not TOML, or a key has the wrong type or is unknown.
    #[error("definition is not valid: {message}")]
    Syntax {
        /// The TOML parser's message (it names line, column and key).
        message: String,
    },
    /// A key holds a value the engine does not accept.
    #[error("`{key}`: {reason}")]
    Invalid {
        /// Dotted path of the key, e.g. `measure.numerator.agg` or `exclude[2].when`.
        key: String,
        /// Why, and what to write instead.
        reason: String,
    },
    /// An expression does not parse.
    #[error("`{key}`: cannot parse expression {text:?}: {reason}")]
    Expression {
        /// Key holding the expression.
        key: String,
        /// The expression text.
        text: String,
        /// What is wrong, at which character.
        reason: ExprError,
    },
}

impl DefinitionError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        DefinitionError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Why a metric operation (define, evaluate, explain, diff) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricError {
    /// The definition was refused.
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    /// No metric has this id.
    #[error("no metric `{id}` in the catalog or the log")]
    UnknownMetric {
        /// The id asked for.
        id: String,
    },
    /// The metric exists but not in this version.
    #[error("metric `{id}` has no version {version}; it has versions {known}")]
    UnknownVersion {
        /// The id.
        id: String,
        /// The version asked for.
        version: u32,
        /// The versions that exist, comma-separated.
        known: String,
    },
    /// Re-defining an existing version with another specification.
    #[error("metric `{id}` version {version} already exists with spec hash {existing}; the new text hashes to {proposed}. A published version is frozen: define version {next} instead")]
    VersionConflict {
        /// The id.
        id: String,
        /// The version.
        version: u32,
        /// Hash of the stored specification.
        existing: String,
        /// Hash of the refused one.
        proposed: String,
        /// The next free version.
        next: u32,
    },
    /// A version number that skips ahead or goes back.
    #[error("metric `{id}`: version {version} cannot be defined, the next free version is {next}")]
    VersionOutOfSequence {
        /// The id.
        id: String,
        /// The version asked for.
        version: u32,
        /// The next free version.
        next: u32,
    },
    /// Another writer defined a version of this metric at the same time.
    #[error("metric `{id}` was defined concurrently by another writer; reload and retry")]
    Concurrent {
        /// The id.
        id: String,
    },
    /// The query is not acceptable.
    #[error("query: {0}")]
    Query(String),
    /// A bound of the engine was reached.
    #[error("{what} exceeds the limit of {limit}; {hint}")]
    Limit {
        /// What grew too large.
        what: &'static str,
        /// The limit.
        limit: usize,
        /// What to do instead.
        hint: &'static str,
    },
    /// A derived metric refers to itself, directly or through others.
    #[error("metric `{id}` refers to itself through its inputs ({path}); break the cycle")]
    Cycle {
        /// The metric at which the cycle closed.
        id: String,
        /// The chain of references.
        path: String,
    },
    /// A sum overflowed.
    #[error("{0} overflows 128-bit integer arithmetic; check the definition's `of` expression")]
    Overflow(&'static str),
    /// A definition event in the log could not be read.
    #[error("the definition event at position {position} is unreadable: {source}; the log holds a definition this build cannot read")]
    BadStoredDefinition {
        /// Its position.
        position: u64,
        /// Why: the domain's decoding error.
        source: CodecError,
    },
    /// A definition event could not be encoded.
    #[error("the definition event cannot be encoded: {0}")]
    Encode(#[source] CodecError),
    /// The metric stream name is not a valid stream id.
    #[error("metric id cannot name a stream: {0}")]
    StreamName(#[from] StreamIdError),
    /// Reading the log failed.
    #[error("reading the log failed: {0}")]
    Read(#[from] ReadError),
    /// Appending a definition failed.
    #[error("appending the definition failed: {0}")]
    Append(#[from] AppendError),
    /// Writing CSV or JSON output failed.
    #[error("writing output failed: {0}")]
    Output(String),
}
