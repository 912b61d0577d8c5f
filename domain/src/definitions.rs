//! Definitions: the events that record how the CRM measures itself, beside the aggregates'
//! events. The metric definitions of the stream category `metric` (`metric-<id>`, one stream
//! per metric): [`MetricDefined`] records one version of a metric's definition text,
//! [`MetricDefaultChanged`] the version served when none is named. The scorecards of the
//! category `scorecard` (`scorecard-<id>`, one stream per scorecard): [`ScorecardDefined`]
//! records one version of a scorecard (perspectives, objectives, measures, cascade). The
//! category `scorecard_status` (`scorecard_status-<id>`): [`ScorecardStatusChanged`]
//! records that a measure of one node changed status after new events (on track, at risk,
//! off track), so a service can tell its owner; kept apart so that the versions of a
//! scorecard stay a short stream however often its statuses move.
//!
//! They are not aggregates: no command decides them here. The metric engine validates a
//! definition (its text is the engine's TOML language, opaque to the domain) and appends it
//! with an exact expected stream version, so a version is never overwritten. Type names and
//! schema versions follow the rules of the aggregates' events: a name is stable forever, a
//! payload change bumps the schema version.

use serde::{Deserialize, Serialize};

use crate::codec::{CodecError, PAYLOAD_MAX_BYTES};
use crate::upcast::UpcastError;

/// Stream category of metric definitions: the stream of metric `id` is `metric-<id>`.
pub const METRIC_CATEGORY: &str = "metric";
/// Event type of a stored metric definition.
pub const METRIC_DEFINED: &str = "MetricDefined";
/// Current schema version of [`METRIC_DEFINED`].
pub const METRIC_DEFINED_VERSION: u16 = 1;
/// Event type of a change of a metric's default version.
pub const METRIC_DEFAULT_CHANGED: &str = "MetricDefaultChanged";
/// Current schema version of [`METRIC_DEFAULT_CHANGED`].
pub const METRIC_DEFAULT_CHANGED_VERSION: u16 = 1;

/// Stream category of scorecards: the stream of scorecard `id` is `scorecard-<id>`.
pub const SCORECARD_CATEGORY: &str = "scorecard";
/// Event type of a stored scorecard definition.
pub const SCORECARD_DEFINED: &str = "ScorecardDefined";
/// Current schema version of [`SCORECARD_DEFINED`].
pub const SCORECARD_DEFINED_VERSION: u16 = 1;
/// Stream category of scorecard status changes: `scorecard_status-<id>`.
pub const SCORECARD_STATUS_CATEGORY: &str = "scorecard_status";
/// Event type of a measure's status change.
pub const SCORECARD_STATUS_CHANGED: &str = "ScorecardStatusChanged";
/// Current schema version of [`SCORECARD_STATUS_CHANGED`].
pub const SCORECARD_STATUS_CHANGED_VERSION: u16 = 1;

/// Every definition event type by stream category, with its current schema version (the
/// counterpart of [`crate::EVENT_CATALOG`], which lists the aggregates' events).
pub const DEFINITION_EVENT_TYPES: &[(&str, &[(&str, u16)])] = &[
    (
        METRIC_CATEGORY,
        &[
            (METRIC_DEFINED, METRIC_DEFINED_VERSION),
            (METRIC_DEFAULT_CHANGED, METRIC_DEFAULT_CHANGED_VERSION),
        ],
    ),
    (
        SCORECARD_CATEGORY,
        &[(SCORECARD_DEFINED, SCORECARD_DEFINED_VERSION)],
    ),
    (
        SCORECARD_STATUS_CATEGORY,
        &[(SCORECARD_STATUS_CHANGED, SCORECARD_STATUS_CHANGED_VERSION)],
    ),
];

/// The stream of scorecard `id`'s versions: `scorecard-<id>`.
#[must_use]
pub fn scorecard_stream(id: &str) -> String {
    format!("{SCORECARD_CATEGORY}-{id}")
}

/// The stream of scorecard `id`'s status changes: `scorecard_status-<id>`.
#[must_use]
pub fn scorecard_status_stream(id: &str) -> String {
    format!("{SCORECARD_STATUS_CATEGORY}-{id}")
}

/// The stream of metric `id`: `metric-<id>`.
#[must_use]
pub fn metric_stream(id: &str) -> String {
    format!("{METRIC_CATEGORY}-{id}")
}

/// Payload of `MetricDefined`: one version of a metric's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricDefined {
    /// Metric id, e.g. `sales.win_rate`.
    pub id: String,
    /// Version of the definition (dense from 1; a version is never redefined).
    pub version: u32,
    /// Hash of what can change the metric's values, as the metric engine computes it.
    pub spec_hash: String,
    /// The definition text as submitted.
    pub definition: String,
}

/// Payload of `MetricDefaultChanged`: the version served when none is named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricDefaultChanged {
    /// Metric id.
    pub id: String,
    /// The version that becomes the default.
    pub version: u32,
}

/// Payload of `ScorecardDefined`: one version of a scorecard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScorecardDefined {
    /// Scorecard id, e.g. `cockpit`.
    pub id: String,
    /// Version (dense from 1; a version is never redefined).
    pub version: u32,
    /// Hash of what can change the scorecard's figures and statuses.
    pub spec_hash: String,
    /// The definition text as submitted (TOML).
    pub definition: String,
}

/// Where a measure stands against its target and thresholds.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MeasureStatus {
    /// At or beyond the on-track threshold.
    OnTrack,
    /// Between the at-risk and the on-track thresholds.
    AtRisk,
    /// Short of the at-risk threshold.
    OffTrack,
    /// No figure: none of the metric's facts in the measure's range.
    NoData,
}

impl MeasureStatus {
    /// Stable name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            MeasureStatus::OnTrack => "on_track",
            MeasureStatus::AtRisk => "at_risk",
            MeasureStatus::OffTrack => "off_track",
            MeasureStatus::NoData => "no_data",
        }
    }
}

/// Payload of `ScorecardStatusChanged`: a measure of one node changed status after new
/// events (`from` is `None` the first time the node's measure is assessed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScorecardStatusChanged {
    /// Scorecard id.
    pub scorecard: String,
    /// The scorecard version assessed.
    pub version: u32,
    /// The node of the cascade.
    pub node: String,
    /// The measure.
    pub measure: String,
    /// Who answers for the measure at this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The status before, `None` at the first assessment.
    pub from: Option<MeasureStatus>,
    /// The status now.
    pub to: MeasureStatus,
    /// The actual figure (engine units), when there is one.
    pub actual: Option<f64>,
    /// The actual figure as shown (`62.10%`).
    pub actual_display: String,
    /// The target (engine units).
    pub target: Option<f64>,
    /// The log position the assessment read to.
    pub log_position: u64,
}

/// Any definition event.
#[derive(Debug, Clone, PartialEq)]
pub enum DefinitionEvent {
    /// A version of a metric's definition.
    MetricDefined(MetricDefined),
    /// A metric's default version changed.
    MetricDefaultChanged(MetricDefaultChanged),
    /// A version of a scorecard.
    ScorecardDefined(ScorecardDefined),
    /// A scorecard measure's status changed.
    ScorecardStatusChanged(ScorecardStatusChanged),
}

impl DefinitionEvent {
    /// Stable stored type name.
    #[must_use]
    pub fn event_type(&self) -> &'static str {
        match self {
            DefinitionEvent::MetricDefined(_) => METRIC_DEFINED,
            DefinitionEvent::MetricDefaultChanged(_) => METRIC_DEFAULT_CHANGED,
            DefinitionEvent::ScorecardDefined(_) => SCORECARD_DEFINED,
            DefinitionEvent::ScorecardStatusChanged(_) => SCORECARD_STATUS_CHANGED,
        }
    }

    /// Current schema version of this event's type.
    #[must_use]
    pub fn schema_version(&self) -> u16 {
        match self {
            DefinitionEvent::MetricDefined(_) => METRIC_DEFINED_VERSION,
            DefinitionEvent::MetricDefaultChanged(_) => METRIC_DEFAULT_CHANGED_VERSION,
            DefinitionEvent::ScorecardDefined(_) => SCORECARD_DEFINED_VERSION,
            DefinitionEvent::ScorecardStatusChanged(_) => SCORECARD_STATUS_CHANGED_VERSION,
        }
    }

    /// The stream the event belongs to (`metric-<id>`, `scorecard-<id>`,
    /// `scorecard_status-<id>`).
    #[must_use]
    pub fn stream_id(&self) -> String {
        match self {
            DefinitionEvent::MetricDefined(e) => metric_stream(&e.id),
            DefinitionEvent::MetricDefaultChanged(e) => metric_stream(&e.id),
            DefinitionEvent::ScorecardDefined(e) => scorecard_stream(&e.id),
            DefinitionEvent::ScorecardStatusChanged(e) => scorecard_status_stream(&e.scorecard),
        }
    }

    /// Current schema version of `event_type`, `None` if it is not a definition event.
    #[must_use]
    pub fn current_schema_version(event_type: &str) -> Option<u16> {
        DEFINITION_EVENT_TYPES
            .iter()
            .flat_map(|(_, types)| types.iter())
            .find(|(t, _)| *t == event_type)
            .map(|(_, v)| *v)
    }

    /// JSON bytes of the payload only; type and version travel in the envelope.
    ///
    /// # Errors
    /// [`CodecError::Encode`] if serialization fails.
    pub fn to_payload(&self) -> Result<Vec<u8>, CodecError> {
        let json = match self {
            DefinitionEvent::MetricDefined(e) => serde_json::to_vec(e),
            DefinitionEvent::MetricDefaultChanged(e) => serde_json::to_vec(e),
            DefinitionEvent::ScorecardDefined(e) => serde_json::to_vec(e),
            DefinitionEvent::ScorecardStatusChanged(e) => serde_json::to_vec(e),
        };
        json.map_err(|source| CodecError::Encode {
            event_type: self.event_type(),
            source,
        })
    }

    /// Decodes a stored payload of a definition event.
    ///
    /// # Errors
    /// An unknown type, a schema version this build does not know (definition events have
    /// no older versions to upcast yet), an oversized payload, or a payload that does not
    /// match the event's struct: see [`CodecError`].
    pub fn from_payload(
        event_type: &str,
        schema_version: u16,
        payload: &[u8],
    ) -> Result<DefinitionEvent, CodecError> {
        let Some(current) = Self::current_schema_version(event_type) else {
            return Err(UpcastError::UnknownEventType {
                event_type: event_type.to_owned(),
            }
            .into());
        };
        check_stored(event_type, schema_version, current, payload.len())?;
        let decoded = match event_type {
            METRIC_DEFINED => serde_json::from_slice(payload).map(DefinitionEvent::MetricDefined),
            SCORECARD_DEFINED => {
                serde_json::from_slice(payload).map(DefinitionEvent::ScorecardDefined)
            }
            SCORECARD_STATUS_CHANGED => {
                serde_json::from_slice(payload).map(DefinitionEvent::ScorecardStatusChanged)
            }
            _ => serde_json::from_slice(payload).map(DefinitionEvent::MetricDefaultChanged),
        };
        decoded.map_err(|source| payload_error(event_type, schema_version, source))
    }
}

/// Refuses a stored event this build cannot read as it is: schema version 0, from a newer
/// build, older than the current one (definition and access events have no upcasters yet),
/// or a payload above [`PAYLOAD_MAX_BYTES`].
pub(crate) fn check_stored(
    event_type: &str,
    schema_version: u16,
    current: u16,
    size_bytes: usize,
) -> Result<(), CodecError> {
    if schema_version == 0 {
        return Err(UpcastError::VersionZero {
            event_type: event_type.to_owned(),
        }
        .into());
    }
    if schema_version > current {
        return Err(UpcastError::FromTheFuture {
            event_type: event_type.to_owned(),
            schema_version,
            current,
        }
        .into());
    }
    if schema_version < current {
        return Err(UpcastError::MissingStep {
            event_type: event_type.to_owned(),
            from_version: schema_version,
            to_version: schema_version.saturating_add(1),
        }
        .into());
    }
    if size_bytes > PAYLOAD_MAX_BYTES {
        return Err(CodecError::TooLarge {
            event_type: event_type.to_owned(),
            size_bytes,
        });
    }
    Ok(())
}

/// The codec error for a stored payload serde could not read: bad JSON, or JSON that does
/// not match the event's struct.
pub(crate) fn payload_error(
    event_type: &str,
    schema_version: u16,
    source: serde_json::Error,
) -> CodecError {
    if source.is_syntax() || source.is_eof() {
        CodecError::InvalidJson {
            event_type: event_type.to_owned(),
            schema_version,
            source,
        }
    } else {
        CodecError::InvalidPayload {
            event_type: event_type.to_owned(),
            schema_version,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DomainEvent;

    #[test]
    fn round_trips_and_refuses_what_it_does_not_know() {
        let defined = DefinitionEvent::MetricDefined(MetricDefined {
            id: "sales.win_rate".into(),
            version: 2,
            spec_hash: "abc".into(),
            definition: "id = \"sales.win_rate\"".into(),
        });
        let bytes = defined.to_payload().unwrap();
        assert_eq!(
            DefinitionEvent::from_payload(METRIC_DEFINED, 1, &bytes).unwrap(),
            defined
        );
        assert_eq!(defined.stream_id(), "metric-sales.win_rate");
        assert!(matches!(
            DefinitionEvent::from_payload(METRIC_DEFINED, 2, &bytes),
            Err(CodecError::Upcast(UpcastError::FromTheFuture { .. }))
        ));
        assert!(matches!(
            DefinitionEvent::from_payload(METRIC_DEFAULT_CHANGED, 1, &bytes),
            Err(CodecError::InvalidPayload { .. })
        ));
        let changed = DefinitionEvent::ScorecardStatusChanged(ScorecardStatusChanged {
            scorecard: "cockpit".into(),
            version: 1,
            node: "east".into(),
            measure: "win_rate".into(),
            owner: Some("Cara Losch".into()),
            from: Some(MeasureStatus::OnTrack),
            to: MeasureStatus::AtRisk,
            actual: Some(0.621),
            actual_display: "62.10%".into(),
            target: Some(0.65),
            log_position: 42,
        });
        let bytes_changed = changed.to_payload().unwrap();
        assert_eq!(
            DefinitionEvent::from_payload(SCORECARD_STATUS_CHANGED, 1, &bytes_changed).unwrap(),
            changed
        );
        assert_eq!(changed.stream_id(), "scorecard_status-cockpit");
        assert!(matches!(
            DefinitionEvent::from_payload(SCORECARD_DEFINED, 1, &bytes_changed),
            Err(CodecError::InvalidPayload { .. })
        ));
        assert!(matches!(
            DefinitionEvent::from_payload("OpportunityWon", 1, &bytes),
            Err(CodecError::Upcast(UpcastError::UnknownEventType { .. }))
        ));
    }

    #[test]
    fn definition_types_are_not_aggregate_events() {
        let access = [(
            crate::access::ACCESS_CATEGORY,
            crate::access::ACCESS_EVENT_TYPES,
        )];
        for (category, types) in DEFINITION_EVENT_TYPES.iter().chain(access.iter()) {
            assert!(DomainEvent::catalog().all(|(c, _, _)| c != *category));
            for (event_type, _) in *types {
                assert_eq!(DomainEvent::current_schema_version(event_type), None);
            }
        }
    }
}
