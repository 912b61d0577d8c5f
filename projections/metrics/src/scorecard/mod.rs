//! Scorecards: the CRM cockpit's strategy map, measures and cascade, as versioned
//! definitions in the log.
//!
//! A scorecard ([`definition`]) names perspectives, objectives with their cause-and-effect
//! links, and measures: a catalog metric at a version, a filter, a period grain, a baseline,
//! a target with a date, thresholds, a direction and an owner. Its root node is the
//! enterprise; written nodes and nodes generated from the data (one per region, team or
//! agent) each read the parent's measures restricted by their dimension values.
//!
//! [`store`] appends versions (`ScorecardDefined`, never overwritten) and status changes
//! (`ScorecardStatusChanged`); [`assess`] computes a version over one view of the log: every
//! node's figures are evaluations of the same events, restricted; [`report`] shapes a node
//! for a reader and finds the status changes to record.
//!
//! **Architecture Invariant:** a scorecard figure is a metric evaluation of the log, never a
//! stored or copied number; a child's figure and its parent's come from the same view.

pub mod assess;
pub mod definition;
pub mod error;
pub mod report;
pub mod store;

pub use assess::{Assessment, MeasureReading, Node, Rollup};
pub use definition::{parse_scorecard, ScorecardDefinition};
pub use error::ScorecardError;
pub use report::{changes, node_of, report, ScorecardReport};
pub use store::{
    append_changes, define_scorecard_as, read_statuses, recent_changes, ScorecardDefineOutcome,
    ScorecardSummary, StatusBoard, StatusChangeLine, StoredScorecard,
};

/// Largest scorecard text, in bytes.
pub const DEFINITION_SIZE_MAX_BYTES: usize = 64 * 1024;
/// Perspectives of one scorecard at most.
pub const PERSPECTIVES_MAX: usize = 12;
/// Objectives of one scorecard at most.
pub const OBJECTIVES_MAX: usize = 64;
/// Measures of one scorecard at most.
pub const MEASURES_MAX: usize = 64;
/// Written nodes of one scorecard at most (the root included).
pub const NODES_MAX: usize = 256;
/// Nodes of the cascade at most, generated ones included.
pub const EXPANDED_NODES_MAX: usize = 2_000;
/// Viewers named on one node at most.
pub const VIEWERS_MAX: usize = 64;
/// Periods of a trend at most (the latest are kept).
pub const TREND_POINTS_MAX: usize = 60;
/// Status changes shown beside a node at most.
pub const STATUS_CHANGES_SHOWN_MAX: usize = 50;

/// Assesses scorecard `id` (latest version unless `version`) over one view of the log
/// holding what its measures read, as of `as_of` / `known_at`.
///
/// # Errors
/// Unknown scorecard or version, a metric no longer known, a read error, or a cascade over
/// its limit.
pub async fn assess<S: crm_eventstore::EventStore>(
    store: &S,
    registry: std::sync::Arc<crate::Registry>,
    id: &str,
    version: Option<u32>,
    as_of: Option<chrono::DateTime<chrono::Utc>>,
    known_at: Option<crate::KnownAt>,
) -> Result<Assessment, ScorecardError> {
    let stored = registry.scorecard(id, version)?;
    let metrics = Assessment::metrics_of(&stored.definition, &registry)?;
    let query = crate::Query {
        as_of,
        known_at,
        ..crate::Query::default()
    };
    let view = crate::query::load_view(store, &registry, &metrics, &query).await?;
    Assessment::new(stored, std::sync::Arc::new(view), registry, as_of, known_at)
}

/// `previous` brought to the store's head: its view extended by the records after it
/// ([`crate::LogView::extended`]) and the cascade assessed again, for the same scorecard
/// version. `None` when a full [`assess`] is needed (another version is the latest, a
/// bitemporal cut, too many new records, or a log that no longer holds the view's end).
///
/// # Errors
/// A read error, or an evaluation that fails.
pub async fn reassess<S: crm_eventstore::EventStore>(
    previous: &Assessment,
    store: &S,
    registry: std::sync::Arc<crate::Registry>,
    version: Option<u32>,
) -> Result<Option<Assessment>, ScorecardError> {
    let stored = registry.scorecard(&previous.def().id, version)?;
    if stored.spec_hash != previous.stored().spec_hash {
        return Ok(None);
    }
    let Some(view) = previous.view().extended(store).await? else {
        return Ok(None);
    };
    Assessment::new(
        stored,
        std::sync::Arc::new(view),
        registry,
        previous.as_of(),
        previous.known_at(),
    )
    .map(Some)
}
