//! What can go wrong with a scorecard.

use crate::error::MetricError;

/// A scorecard refused, not found, or not computable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScorecardError {
    /// The text is not TOML, or a key is unknown or of the wrong type.
    #[error("scorecard is not valid: {message}")]
    Syntax {
        /// The TOML parser's message (line, column, key), with the nearest known key.
        message: String,
    },
    /// A key holds a value the scorecard language does not accept.
    #[error("scorecard key `{key}`: {reason}")]
    Invalid {
        /// Dotted path of the key, e.g. `measure[2].target`.
        key: String,
        /// Why, and what to write instead.
        reason: String,
    },
    /// No scorecard has this id.
    #[error("no scorecard `{id}` in the log{}", .nearest.as_ref().map(|n| format!(" (did you mean `{n}`?)")).unwrap_or_default())]
    UnknownScorecard {
        /// What was asked.
        id: String,
        /// The closest id.
        nearest: Option<String>,
    },
    /// The scorecard has no such version.
    #[error("scorecard `{id}` has no version {version}; it has {known}")]
    UnknownVersion {
        /// Scorecard id.
        id: String,
        /// Asked version.
        version: u32,
        /// Versions it has.
        known: String,
    },
    /// The scorecard has no such node (or the caller may not see it).
    #[error("scorecard `{id}` has no node `{node}` you may see{}", .nearest.as_ref().map(|n| format!(" (did you mean `{n}`?)")).unwrap_or_default())]
    UnknownNode {
        /// Scorecard id.
        id: String,
        /// Asked node.
        node: String,
        /// The closest visible node.
        nearest: Option<String>,
    },
    /// The node has no such measure.
    #[error("node `{node}` has no measure `{measure}`{}", .nearest.as_ref().map(|n| format!(" (did you mean `{n}`?)")).unwrap_or_default())]
    UnknownMeasure {
        /// Node id.
        node: String,
        /// Asked measure.
        measure: String,
        /// The closest measure of the node.
        nearest: Option<String>,
    },
    /// The caller is named a viewer of no node of this scorecard.
    #[error("{principal} is named a viewer of no node of scorecard `{id}`")]
    NothingVisible {
        /// Scorecard id.
        id: String,
        /// The caller.
        principal: String,
    },
    /// Another version under an existing number.
    #[error("scorecard `{id}` version {version} is already defined with other content; publish it as version {next}")]
    VersionConflict {
        /// Scorecard id.
        id: String,
        /// The version given.
        version: u32,
        /// The next free version.
        next: u32,
    },
    /// A version that skips numbers.
    #[error("scorecard `{id}`: the next version is {next}, not {version}")]
    VersionOutOfSequence {
        /// Scorecard id.
        id: String,
        /// The version given.
        version: u32,
        /// The next free version.
        next: u32,
    },
    /// A concurrent write to the scorecard's stream.
    #[error("scorecard `{id}` was written concurrently; retry")]
    Concurrent {
        /// Scorecard id.
        id: String,
    },
    /// The cascade grew past its limit.
    #[error("scorecard `{id}`: the cascade has more than {limit} nodes; expand by fewer dimensions or restrict the nodes")]
    TooManyNodes {
        /// Scorecard id.
        id: String,
        /// The limit.
        limit: usize,
    },
    /// The metric engine failed (a read, a stored record, a limit).
    #[error(transparent)]
    Metric(#[from] MetricError),
}

impl From<crm_eventstore::ReadError> for ScorecardError {
    fn from(e: crm_eventstore::ReadError) -> Self {
        ScorecardError::Metric(MetricError::from(e))
    }
}
