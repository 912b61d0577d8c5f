//! Scorecards in the log: versions (`ScorecardDefined` in `scorecard-<id>`, read into the
//! [`Registry`] beside the metric definitions) and status changes (`ScorecardStatusChanged`
//! in `scorecard_status-<id>`).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use crm_domain::definitions::{
    scorecard_status_stream, scorecard_stream, DefinitionEvent, MeasureStatus, ScorecardDefined,
    ScorecardStatusChanged, SCORECARD_DEFINED,
};
use crm_eventstore::limits::READ_PAGE_MAX;
use crm_eventstore::{
    EventStore, ExpectedVersion, ProposedEvent, RecordedEvent, StreamId, StreamVersion,
};
use serde::Serialize;
use uuid::Uuid;

use super::definition::{parse_scorecard, ScorecardDefinition};
use super::error::ScorecardError;
use super::STATUS_CHANGES_SHOWN_MAX;
use crate::error::MetricError;
use crate::registry::Registry;

/// Namespace of scorecard event ids (UUID v5), so a retried write appends nothing.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x7363_6f72_6563_6172_642d_6576_656e_0001);

/// One version of a scorecard as the log holds it.
#[derive(Debug, Clone)]
pub struct StoredScorecard {
    pub definition: ScorecardDefinition,
    pub text: String,
    pub spec_hash: String,
    pub position: u64,
    pub recorded_at: DateTime<Utc>,
    pub actor: String,
}

/// One line of `crm scorecard list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ScorecardSummary {
    pub id: String,
    pub version: u32,
    pub name: String,
    pub is_default: bool,
    pub versions: Vec<u32>,
    pub spec_hash: String,
    pub position: u64,
    pub recorded_at: DateTime<Utc>,
    pub actor: String,
    pub measures: usize,
    pub objectives: usize,
}

impl Registry {
    /// Applies a `ScorecardDefined` record: parsed against the metrics known at that point
    /// of the log; one this build cannot read is noted in [`Registry::problems`].
    pub(crate) fn apply_scorecard(&mut self, rec: &RecordedEvent) {
        let position = rec.position.0;
        let result = match DefinitionEvent::from_payload(
            &rec.event_type,
            rec.schema_version,
            &rec.payload,
        ) {
            Ok(DefinitionEvent::ScorecardDefined(d)) => {
                parse_scorecard(&d.definition, self).map(|definition| {
                    let stored = StoredScorecard {
                        spec_hash: definition.spec_hash(),
                        definition,
                        text: d.definition,
                        position,
                        recorded_at: rec.recorded_at,
                        actor: rec.actor.clone(),
                    };
                    self.scorecards
                        .entry(d.id)
                        .or_default()
                        .insert(d.version, Arc::new(stored));
                })
            }
            Ok(_) => Ok(()),
            Err(source) => Err(ScorecardError::Metric(MetricError::BadStoredDefinition {
                position,
                source,
            })),
        };
        if let Err(e) = result {
            let reason = match e {
                ScorecardError::Metric(MetricError::BadStoredDefinition { source, .. }) => {
                    source.to_string()
                }
                other => other.to_string(),
            };
            self.problems.push(format!("position {position}: {reason}"));
        }
    }

    /// A scorecard version; `None` gives the latest.
    ///
    /// # Errors
    /// Unknown id or version.
    pub fn scorecard(
        &self,
        id: &str,
        version: Option<u32>,
    ) -> Result<Arc<StoredScorecard>, ScorecardError> {
        let versions = self
            .scorecards
            .get(id)
            .ok_or_else(|| ScorecardError::UnknownScorecard {
                id: id.to_owned(),
                nearest: crm_domain::registry::nearest_name(
                    id,
                    self.scorecards.keys().map(String::as_str),
                ),
            })?;
        let found = match version {
            Some(v) => versions.get(&v),
            None => versions.values().next_back(),
        };
        found
            .cloned()
            .ok_or_else(|| ScorecardError::UnknownVersion {
                id: id.to_owned(),
                version: version.unwrap_or(0),
                known: versions
                    .keys()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Every scorecard, latest version first per id.
    #[must_use]
    pub fn scorecards(&self) -> Vec<ScorecardSummary> {
        let mut out = Vec::new();
        for (id, versions) in &self.scorecards {
            let latest = versions.keys().next_back().copied();
            for (v, s) in versions.iter().rev() {
                out.push(ScorecardSummary {
                    id: id.clone(),
                    version: *v,
                    name: s.definition.name.clone(),
                    is_default: Some(*v) == latest,
                    versions: versions.keys().copied().collect(),
                    spec_hash: s.spec_hash.clone(),
                    position: s.position,
                    recorded_at: s.recorded_at,
                    actor: s.actor.clone(),
                    measures: s.definition.measures.len(),
                    objectives: s.definition.objectives.len(),
                });
            }
        }
        out
    }
}

/// What [`define_scorecard_as`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ScorecardDefineOutcome {
    pub id: String,
    pub version: u32,
    pub spec_hash: String,
    pub stream: String,
    /// `appended` or `already_defined` (the same text, nothing written).
    pub outcome: &'static str,
    pub position: Option<u64>,
}

fn proposed(
    event: &DefinitionEvent,
    key: &str,
    at: DateTime<Utc>,
    actor: &str,
) -> Result<ProposedEvent, MetricError> {
    crate::registry::proposed_in(&ID_NAMESPACE, event, key, at, actor)
}

fn expected(current: StreamVersion) -> ExpectedVersion {
    if current == StreamVersion::NONE {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(current)
    }
}

/// Checks `text` against the metrics of `registry` and appends it as `ScorecardDefined` to
/// `scorecard-<id>` with an exact expected version: the same text again appends nothing,
/// other content under an existing version is refused, and versions are dense from 1.
/// `actor` is the authenticated principal, `at` the business time (the caller's clock).
///
/// # Errors
/// An invalid scorecard, a version conflict or gap, a concurrent define, or a store error.
pub async fn define_scorecard_as<S: EventStore>(
    store: &S,
    registry: &Registry,
    text: &str,
    at: DateTime<Utc>,
    actor: &str,
) -> Result<ScorecardDefineOutcome, ScorecardError> {
    let def = parse_scorecard(text, registry)?;
    let hash = def.spec_hash();
    let stream = StreamId::new(scorecard_stream(&def.id)).map_err(MetricError::from)?;
    let events = store
        .read_stream(&stream, StreamVersion(1), READ_PAGE_MAX)
        .await?;
    let current = StreamVersion(u64::try_from(events.len()).unwrap_or(u64::MAX));
    let mut known: BTreeMap<u32, (String, u64)> = BTreeMap::new();
    for rec in events.iter().filter(|r| r.event_type == SCORECARD_DEFINED) {
        let stored =
            DefinitionEvent::from_payload(&rec.event_type, rec.schema_version, &rec.payload)
                .map_err(|source| MetricError::BadStoredDefinition {
                    position: rec.position.0,
                    source,
                })?;
        if let DefinitionEvent::ScorecardDefined(d) = stored {
            known.insert(d.version, (d.definition, rec.position.0));
        }
    }
    let next = known.keys().next_back().map_or(1, |v| v + 1);
    match known.get(&def.version) {
        Some((t, position)) if t == text => {
            return Ok(ScorecardDefineOutcome {
                id: def.id.clone(),
                version: def.version,
                spec_hash: hash,
                stream: stream.to_string(),
                outcome: "already_defined",
                position: Some(*position),
            })
        }
        Some(_) => {
            return Err(ScorecardError::VersionConflict {
                id: def.id.clone(),
                version: def.version,
                next,
            })
        }
        None if def.version != next => {
            return Err(ScorecardError::VersionOutOfSequence {
                id: def.id.clone(),
                version: def.version,
                next,
            })
        }
        None => {}
    }
    let event = DefinitionEvent::ScorecardDefined(ScorecardDefined {
        id: def.id.clone(),
        version: def.version,
        spec_hash: hash.clone(),
        definition: text.to_owned(),
    });
    let key = format!(
        "{SCORECARD_DEFINED}/{}/{}/{}",
        def.id,
        def.version,
        blake3::hash(text.as_bytes()).to_hex()
    );
    let result = store
        .append(
            &stream,
            expected(current),
            vec![proposed(&event, &key, at, actor)?],
        )
        .await
        .map_err(|e| match e {
            crm_eventstore::AppendError::WrongExpectedVersion { .. } => {
                ScorecardError::Concurrent { id: def.id.clone() }
            }
            other => ScorecardError::Metric(MetricError::Append(other)),
        })?;
    Ok(ScorecardDefineOutcome {
        id: def.id.clone(),
        version: def.version,
        spec_hash: hash,
        stream: stream.to_string(),
        outcome: "appended",
        position: Some(result.first_position.0),
    })
}

/// The last recorded status of each (node, measure) of a scorecard, and the stream version
/// it was folded to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusBoard {
    pub statuses: BTreeMap<(String, String), MeasureStatus>,
    pub version: StreamVersion,
}

/// A status change as shown beside the scorecard.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct StatusChangeLine {
    pub position: u64,
    pub recorded_at: DateTime<Utc>,
    pub node: String,
    pub measure: String,
    pub owner: Option<String>,
    pub from: Option<MeasureStatus>,
    pub to: MeasureStatus,
    pub actual_display: String,
}

fn decode_change(rec: &RecordedEvent) -> Option<ScorecardStatusChanged> {
    match DefinitionEvent::from_payload(&rec.event_type, rec.schema_version, &rec.payload) {
        Ok(DefinitionEvent::ScorecardStatusChanged(c)) => Some(c),
        _ => None,
    }
}

/// Folds `scorecard_status-<id>` from `board.version` on, page by page.
///
/// # Errors
/// A read error.
pub async fn read_statuses<S: EventStore>(
    store: &S,
    id: &str,
    board: &mut StatusBoard,
) -> Result<(), ScorecardError> {
    let stream = StreamId::new(scorecard_status_stream(id)).map_err(MetricError::from)?;
    loop {
        let from = StreamVersion(board.version.0 + 1);
        let page = store.read_stream(&stream, from, READ_PAGE_MAX).await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        board.version = last.stream_version;
        for rec in &page {
            if let Some(c) = decode_change(rec) {
                board.statuses.insert((c.node, c.measure), c.to);
            }
        }
        if page.len() < READ_PAGE_MAX {
            return Ok(());
        }
    }
}

/// Status changes read back to find the recent ones of a node.
const STATUS_CHANGES_READ_MAX: u64 = 1_000;

/// The last (at most [`STATUS_CHANGES_SHOWN_MAX`]) status changes of a scorecard, newest
/// first, for which `keep` holds.
///
/// # Errors
/// A read error.
pub async fn recent_changes<S: EventStore>(
    store: &S,
    id: &str,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<StatusChangeLine>, ScorecardError> {
    let stream = StreamId::new(scorecard_status_stream(id)).map_err(MetricError::from)?;
    let version = store.stream_version(&stream).await?;
    let from = version.0.saturating_sub(STATUS_CHANGES_READ_MAX - 1).max(1);
    let page = store
        .read_stream(&stream, StreamVersion(from), READ_PAGE_MAX)
        .await?;
    let mut out: Vec<StatusChangeLine> = page
        .iter()
        .rev()
        .filter_map(|rec| {
            decode_change(rec).map(|c| StatusChangeLine {
                position: rec.position.0,
                recorded_at: rec.recorded_at,
                node: c.node,
                measure: c.measure,
                owner: c.owner,
                from: c.from,
                to: c.to,
                actual_display: c.actual_display,
            })
        })
        .filter(|c| keep(&c.node))
        .collect();
    out.truncate(STATUS_CHANGES_SHOWN_MAX);
    Ok(out)
}

/// Appends `changes` to `scorecard_status-<id>` after `board.version` and records them in
/// `board`. Event ids derive from (scorecard, node, measure, log position, status), so a
/// retried assessment appends nothing twice.
///
/// # Errors
/// A concurrent writer ([`ScorecardError::Concurrent`]: fold again and retry) or a store
/// error.
pub async fn append_changes<S: EventStore>(
    store: &S,
    board: &mut StatusBoard,
    changes: Vec<ScorecardStatusChanged>,
    at: DateTime<Utc>,
    actor: &str,
) -> Result<Option<u64>, ScorecardError> {
    let Some(first) = changes.first() else {
        return Ok(None);
    };
    let id = first.scorecard.clone();
    let stream = StreamId::new(scorecard_status_stream(&id)).map_err(MetricError::from)?;
    let mut events = Vec::new();
    for c in &changes {
        let key = format!(
            "{}/{}/{}/{}/{}",
            c.scorecard,
            c.node,
            c.measure,
            c.log_position,
            c.to.name()
        );
        events.push(proposed(
            &DefinitionEvent::ScorecardStatusChanged(c.clone()),
            &key,
            at,
            actor,
        )?);
    }
    let mut last = None;
    for chunk in events.chunks(crm_eventstore::limits::APPEND_EVENTS_MAX) {
        let r = store
            .append(&stream, expected(board.version), chunk.to_vec())
            .await
            .map_err(|e| match e {
                crm_eventstore::AppendError::WrongExpectedVersion { .. } => {
                    ScorecardError::Concurrent { id: id.clone() }
                }
                other => ScorecardError::Metric(MetricError::Append(other)),
            })?;
        board.version = r.stream_version;
        last = Some(r.last_position.0);
    }
    for c in changes {
        board.statuses.insert((c.node, c.measure), c.to);
    }
    Ok(last)
}
