//! The registry of metric definitions: the built-in catalog plus every `MetricDefined` in
//! the log, and [`define`], which appends a definition to its metric's own stream.
//!
//! **Definitions are events.** The payloads, type names and schema versions are the
//! domain's ([`crm_domain::definitions`]). `define` appends `MetricDefined{id, version,
//! spec_hash, definition}` to the stream `metric-<id>` with an exact expected version, so a
//! version is never overwritten: the same text again is a no-op, the same spec with new
//! wording is recorded as a wording revision, another spec under an existing version is
//! refused, and versions are dense (the next is max + 1, built-ins included). `set_default`
//! appends `MetricDefaultChanged{id, version}` to the same stream.
//!
//! [`RegistryCache`] keeps a registry between requests and reads only the log records
//! appended since the position it covers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use crm_domain::definitions::{
    DefinitionEvent, MetricDefaultChanged, MetricDefined, METRIC_CATEGORY, METRIC_DEFINED,
    SCORECARD_CATEGORY,
};
use crm_eventstore::limits::READ_PAGE_MAX;
use crm_eventstore::{
    EventId, EventStore, ExpectedVersion, Position, ProposedEvent, RecordedEvent, StreamId,
    StreamVersion,
};
use serde::Serialize;
use uuid::Uuid;

use crate::catalog;
use crate::compile::{self, Compiled, Requirements};
use crate::definition::{parse_definition, Domain, Kind, MeasureType, MetricDefinition, Unit};
use crate::error::MetricError;

mod cache;

pub use cache::RegistryCache;

/// Most versions one stream read returns while defining.
const DEFINITIONS_MAX: usize = READ_PAGE_MAX;

/// Namespace of definition event ids (UUID v5), so a retried define appends nothing.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6d65_7472_6963_2d64_6566_696e_6564_0001);

/// Where a definition comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DefinitionSource {
    BuiltIn,
    Log {
        position: u64,
        recorded_at: DateTime<Utc>,
    },
}

/// A definition the engine can run.
#[derive(Debug, Clone)]
pub struct RegisteredMetric {
    pub definition: MetricDefinition,
    pub spec_hash: String,
    pub source: DefinitionSource,
    /// The TOML text (stored text, or the canonical rendering of a built-in).
    pub text: String,
    pub(crate) compiled: Compiled,
}

/// One line of `crm metrics list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct MetricSummary {
    pub id: String,
    pub version: u32,
    pub name: String,
    pub domain: Domain,
    pub unit: Unit,
    pub kind: Kind,
    pub measure: MeasureType,
    pub is_default: bool,
    pub spec_hash: String,
    pub source: DefinitionSource,
    /// Event types whose events are the metric's facts (any of them gives data).
    pub needs: Vec<String>,
    /// Other event types it reads (rules, dimensions, lookups).
    pub reads: Vec<String>,
    /// Other metrics it is built from (`id@version`, `@default` when unpinned).
    pub inputs: Vec<String>,
    /// For `unsupported` measures: what is missing.
    pub unsupported: Option<String>,
    /// The dimensions a query may break down or filter by (`--by`, `--where`), with the
    /// expression each reads.
    pub dimensions: BTreeMap<String, String>,
}

/// All definitions: built-ins and those in the log.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    metrics: BTreeMap<String, BTreeMap<u32, Arc<RegisteredMetric>>>,
    defaults: BTreeMap<String, u32>,
    /// Stored definitions this build could not read (position and reason); they are skipped.
    pub problems: Vec<String>,
    /// Scorecard versions of the log, by id and version.
    pub(crate) scorecards: BTreeMap<String, BTreeMap<u32, Arc<crate::scorecard::StoredScorecard>>>,
}

fn register(
    reg: &mut Registry,
    def: MetricDefinition,
    source: DefinitionSource,
    text: String,
) -> Result<(), MetricError> {
    let compiled = compile::compile(&def)?;
    let spec_hash = def.spec_hash();
    let entry = RegisteredMetric {
        definition: def,
        spec_hash,
        source,
        text,
        compiled,
    };
    reg.metrics
        .entry(entry.definition.id.clone())
        .or_default()
        .insert(entry.definition.version, Arc::new(entry));
    Ok(())
}

impl Registry {
    /// The built-in catalog alone.
    ///
    /// # Errors
    /// A catalog file that does not validate (a build defect).
    pub fn builtin() -> Result<Registry, MetricError> {
        let mut reg = Registry::default();
        for def in catalog::definitions()? {
            let text = def.to_toml();
            register(&mut reg, def, DefinitionSource::BuiltIn, text)?;
        }
        Ok(reg)
    }

    /// The built-in catalog plus every definition and default change in the log.
    ///
    /// # Errors
    /// A read error.
    pub async fn load<S: EventStore>(store: &S) -> Result<Registry, MetricError> {
        let mut reg = Registry::builtin()?;
        reg.read_log(store, Position::FIRST, store.head().position)
            .await?;
        Ok(reg)
    }

    /// The built-in catalog plus the definitions and default changes of the metrics `ids`
    /// and of the metrics they are built from, each read from its own stream `metric-<id>`
    /// (where [`define`] and [`set_default`] append them) up to the head as of the call: for
    /// these ids, [`Registry::get`] and what an evaluation reads are those of
    /// [`Registry::load`], without replaying the whole log. Other metrics and the
    /// scorecards are the built-ins' only.
    ///
    /// # Errors
    /// A read error, or a built-in catalog that does not validate.
    pub async fn load_for<S: EventStore>(store: &S, ids: &[&str]) -> Result<Registry, MetricError> {
        let mut reg = Registry::builtin()?;
        let head = store.head().position;
        let mut todo: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
        let mut done: Vec<String> = Vec::new();
        while let Some(id) = todo.pop() {
            if done.contains(&id) {
                continue;
            }
            done.push(id.clone());
            // An id that cannot name a stream has no definitions in the log.
            if let Ok(stream) = StreamId::new(crm_domain::definitions::metric_stream(&id)) {
                let mut from = StreamVersion(1);
                loop {
                    let page = store.read_stream(&stream, from, DEFINITIONS_MAX).await?;
                    let Some(last) = page.last() else { break };
                    let next = StreamVersion(last.stream_version.0.saturating_add(1));
                    for rec in page.iter().filter(|r| r.position <= head) {
                        reg.apply(rec);
                    }
                    if page.len() < DEFINITIONS_MAX || next == from {
                        break;
                    }
                    from = next;
                }
            }
            if let Some(versions) = reg.metrics.get(&id) {
                for m in versions.values() {
                    todo.extend(m.compiled.reads.metrics.iter().map(|(i, _)| i.clone()));
                }
            }
        }
        Ok(reg)
    }

    /// Applies the definition events of the records `from..=to` of the log, page by page.
    pub(crate) async fn read_log<S: EventStore>(
        &mut self,
        store: &S,
        from: Position,
        to: Position,
    ) -> Result<(), MetricError> {
        let mut next = from.max(Position::FIRST);
        while next <= to {
            let page = store.read_all(next, READ_PAGE_MAX).await?;
            let Some(last) = page.last() else { break };
            for rec in page.iter().filter(|r| r.position <= to) {
                self.apply(rec);
            }
            match last.position.next() {
                Some(after) if last.position < to => next = after,
                _ => break,
            }
        }
        Ok(())
    }

    /// Applies one record if it is a definition event; a stored definition this build cannot
    /// read is noted in [`Registry::problems`] and skipped.
    fn apply(&mut self, rec: &RecordedEvent) {
        if rec.stream_id.category() == SCORECARD_CATEGORY {
            self.apply_scorecard(rec);
            return;
        }
        if rec.stream_id.category() != METRIC_CATEGORY
            || DefinitionEvent::current_schema_version(&rec.event_type).is_none()
        {
            return;
        }
        let position = rec.position.0;
        let result = match DefinitionEvent::from_payload(
            &rec.event_type,
            rec.schema_version,
            &rec.payload,
        ) {
            Ok(DefinitionEvent::MetricDefined(d)) => parse_definition(&d.definition)
                .map_err(MetricError::from)
                .and_then(|def| {
                    let source = DefinitionSource::Log {
                        position,
                        recorded_at: rec.recorded_at,
                    };
                    register(self, def, source, d.definition)
                }),
            Ok(DefinitionEvent::MetricDefaultChanged(d)) => {
                self.defaults.insert(d.id, d.version);
                Ok(())
            }
            // Scorecard events live in their own category, filtered out above.
            Ok(_) => Ok(()),
            Err(e) => Err(MetricError::BadStoredDefinition {
                position,
                source: e,
            }),
        };
        if let Err(e) = result {
            self.problems.push(match e {
                MetricError::BadStoredDefinition { source, .. } => {
                    format!("position {position}: {source}")
                }
                other => format!("position {position}: {other}"),
            });
        }
    }

    /// Versions of `id`, ascending.
    pub fn versions(&self, id: &str) -> Vec<u32> {
        self.metrics
            .get(id)
            .map(|v| v.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The default version: the latest `MetricDefaultChanged`, else the highest version
    /// marked `default = true`, else the lowest version.
    pub fn default_version(&self, id: &str) -> Option<u32> {
        let versions = self.metrics.get(id)?;
        self.defaults
            .get(id)
            .copied()
            .filter(|v| versions.contains_key(v))
            .or_else(|| {
                versions
                    .values()
                    .rev()
                    .find(|m| m.definition.default)
                    .map(|m| m.definition.version)
            })
            .or_else(|| versions.keys().next().copied())
    }

    /// A definition; `version = None` gives the default.
    ///
    /// # Errors
    /// Unknown id or version.
    pub fn get(
        &self,
        id: &str,
        version: Option<u32>,
    ) -> Result<Arc<RegisteredMetric>, MetricError> {
        let versions = self
            .metrics
            .get(id)
            .ok_or_else(|| MetricError::UnknownMetric { id: id.to_owned() })?;
        let v = version.or_else(|| self.default_version(id)).unwrap_or(1);
        versions
            .get(&v)
            .cloned()
            .ok_or_else(|| MetricError::UnknownVersion {
                id: id.to_owned(),
                version: v,
                known: versions
                    .keys()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Every definition, by id then version.
    pub fn list(&self) -> Vec<MetricSummary> {
        let mut out = Vec::new();
        for (id, versions) in &self.metrics {
            let default = self.default_version(id);
            for m in versions.values() {
                let own = &m.compiled.reads;
                // Derived and ratio metrics need what their inputs need.
                let r = self.requirements(m).unwrap_or_else(|_| own.clone());
                let mut reads: Vec<String> = r
                    .types
                    .iter()
                    .filter(|t| !r.fact_types.contains(*t))
                    .cloned()
                    .collect();
                reads.extend(r.ref_categories.iter().map(|c| format!("{c} streams")));
                out.push(MetricSummary {
                    id: id.clone(),
                    version: m.definition.version,
                    name: m.definition.name.clone(),
                    domain: m.definition.domain,
                    unit: m.definition.unit,
                    kind: m.definition.kind,
                    measure: m.definition.measure.kind,
                    is_default: default == Some(m.definition.version),
                    spec_hash: m.spec_hash.clone(),
                    source: m.source.clone(),
                    needs: r.fact_types.iter().cloned().collect(),
                    reads,
                    inputs: own
                        .metrics
                        .iter()
                        .map(|(i, v)| {
                            format!("{i}@{}", v.map_or("default".into(), |v| v.to_string()))
                        })
                        .collect(),
                    unsupported: m.definition.measure.needs.clone(),
                    dimensions: m.definition.dimensions(),
                });
            }
        }
        out
    }

    /// Everything `id@version` and its inputs read, merged.
    pub(crate) fn requirements(&self, m: &RegisteredMetric) -> Result<Requirements, MetricError> {
        self.requirements_with(m, None)
    }

    /// What `m` and its inputs read for a question that breaks down or filters by `dims`
    /// only: their time, rules, facts and measures, and those dimensions' expressions.
    pub(crate) fn requirements_for(
        &self,
        m: &RegisteredMetric,
        dims: &BTreeSet<&str>,
    ) -> Result<Requirements, MetricError> {
        self.requirements_with(m, Some(dims))
    }

    fn requirements_with(
        &self,
        m: &RegisteredMetric,
        dims: Option<&BTreeSet<&str>>,
    ) -> Result<Requirements, MetricError> {
        let mut out = Requirements::default();
        let mut todo = vec![(m.definition.id.clone(), Some(m.definition.version))];
        let mut seen = Vec::new();
        while let Some((id, v)) = todo.pop() {
            let m = self.get(&id, v)?;
            let key = m.definition.key();
            if seen.contains(&key) {
                continue;
            }
            if seen.len() > 64 {
                return Err(MetricError::Cycle {
                    id,
                    path: seen.join(" -> "),
                });
            }
            seen.push(key);
            let r = &m.compiled.reads;
            let mut own = match dims {
                None => r.clone(),
                Some(dims) => {
                    let mut own = m.compiled.core_reads.clone();
                    for (name, reads) in &m.compiled.dim_reads {
                        if dims.contains(name.as_str()) {
                            own.merge(reads);
                        }
                    }
                    own
                }
            };
            own.metrics.clear();
            out.merge(&own);
            todo.extend(r.metrics.iter().cloned());
        }
        Ok(out)
    }
}

/// What `define` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DefineOutcome {
    pub id: String,
    pub version: u32,
    pub spec_hash: String,
    pub stream: String,
    /// `appended`, `already_defined` (same text, nothing written) or `wording_revised`.
    pub outcome: &'static str,
    /// Position of the `MetricDefined` event (the existing one when nothing was written).
    pub position: Option<u64>,
}

fn stream_of(id: &str) -> Result<StreamId, MetricError> {
    Ok(StreamId::new(crm_domain::definitions::metric_stream(id))?)
}

/// The event to append for `event`; `key` names it for its UUID v5 id.
fn proposed(
    event: &DefinitionEvent,
    key: &str,
    at: DateTime<Utc>,
    actor: &str,
) -> Result<ProposedEvent, MetricError> {
    proposed_in(&ID_NAMESPACE, event, key, at, actor)
}

/// The definition event to append for `event`, its id the UUID v5 of `key` in `namespace`
/// (a retried write appends nothing), with `at` as its business time and `actor` as its
/// actor.
pub(crate) fn proposed_in(
    namespace: &Uuid,
    event: &DefinitionEvent,
    key: &str,
    at: DateTime<Utc>,
    actor: &str,
) -> Result<ProposedEvent, MetricError> {
    Ok(ProposedEvent {
        event_id: EventId(Uuid::new_v5(namespace, key.as_bytes())),
        event_type: event.event_type().to_owned(),
        schema_version: event.schema_version(),
        occurred_at: at,
        causation_id: None,
        correlation_id: None,
        actor: actor.to_owned(),
        metadata: Vec::new(),
        payload: event.to_payload().map_err(MetricError::Encode)?,
    })
}

/// Validates `text` and appends it as `MetricDefined` to `metric-<id>`.
///
/// `at` is the business time of the definition (the caller's clock; the library reads none).
///
/// # Errors
/// An invalid definition, a version conflict or gap, a concurrent define, or a store error.
pub async fn define<S: EventStore>(
    store: &S,
    text: &str,
    at: DateTime<Utc>,
) -> Result<DefineOutcome, MetricError> {
    define_as(store, text, at, LIBRARY_ACTOR).await
}

/// The actor of definitions appended through [`define`] and [`set_default`], which name
/// none (tests, tools); the edges use [`define_as`] and [`set_default_as`] with the
/// authenticated principal.
pub const LIBRARY_ACTOR: &str = "crm-metrics";

/// As [`define`], recording `actor` (the authenticated principal) as the event's actor.
///
/// # Errors
/// As [`define`].
pub async fn define_as<S: EventStore>(
    store: &S,
    text: &str,
    at: DateTime<Utc>,
    actor: &str,
) -> Result<DefineOutcome, MetricError> {
    let def = parse_definition(text)?;
    let hash = def.spec_hash();
    let stream = stream_of(&def.id)?;
    let events = store
        .read_stream(&stream, StreamVersion(1), DEFINITIONS_MAX)
        .await?;
    let current = StreamVersion(u64::try_from(events.len()).unwrap_or(u64::MAX));
    let builtin = Registry::builtin()?;
    // Every existing (version → (hash, text, position)), built-ins first, the log's last revision wins.
    let mut known: BTreeMap<u32, (String, String, Option<u64>)> = BTreeMap::new();
    for v in builtin.versions(&def.id) {
        let m = builtin.get(&def.id, Some(v))?;
        known.insert(v, (m.spec_hash.clone(), m.text.clone(), None));
    }
    // Where this exact text of this version was first published, if it was.
    let mut published_at: Option<u64> = None;
    for rec in events.iter().filter(|r| r.event_type == METRIC_DEFINED) {
        let stored =
            DefinitionEvent::from_payload(&rec.event_type, rec.schema_version, &rec.payload)
                .map_err(|source| MetricError::BadStoredDefinition {
                    position: rec.position.0,
                    source,
                })?;
        if let DefinitionEvent::MetricDefined(d) = stored {
            if d.version == def.version && d.definition == text {
                published_at.get_or_insert(rec.position.0);
            }
            known.insert(d.version, (d.spec_hash, d.definition, Some(rec.position.0)));
        }
    }
    // The same text published before, whatever came in between: nothing to append.
    if let Some(position) = published_at {
        if known.get(&def.version).is_some_and(|(h, _, _)| *h == hash) {
            return Ok(DefineOutcome {
                id: def.id.clone(),
                version: def.version,
                spec_hash: hash,
                stream: stream.to_string(),
                outcome: "already_defined",
                position: Some(position),
            });
        }
    }
    let next = known.keys().next_back().map_or(1, |v| v + 1);
    let outcome = match known.get(&def.version) {
        Some((h, _, _)) if *h != hash => {
            return Err(MetricError::VersionConflict {
                id: def.id.clone(),
                version: def.version,
                existing: h.clone(),
                proposed: hash,
                next,
            });
        }
        Some((_, t, pos))
            if t == text
                || pos.is_none()
                    && def.to_toml() == builtin.get(&def.id, Some(def.version))?.text =>
        {
            return Ok(DefineOutcome {
                id: def.id.clone(),
                version: def.version,
                spec_hash: hash,
                stream: stream.to_string(),
                outcome: "already_defined",
                position: *pos,
            });
        }
        Some(_) => "wording_revised",
        None if def.version != next => {
            return Err(MetricError::VersionOutOfSequence {
                id: def.id.clone(),
                version: def.version,
                next,
            });
        }
        None => "appended",
    };
    let event = DefinitionEvent::MetricDefined(MetricDefined {
        id: def.id.clone(),
        version: def.version,
        spec_hash: hash.clone(),
        definition: text.to_owned(),
    });
    let key = format!(
        "{METRIC_DEFINED}/{}/{}/{}",
        def.id,
        def.version,
        blake3::hash(text.as_bytes()).to_hex()
    );
    let expected = if current == StreamVersion::NONE {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(current)
    };
    let result = store
        .append(&stream, expected, vec![proposed(&event, &key, at, actor)?])
        .await
        .map_err(|e| match e {
            crm_eventstore::AppendError::WrongExpectedVersion { .. } => {
                MetricError::Concurrent { id: def.id.clone() }
            }
            other => MetricError::Append(other),
        })?;
    Ok(DefineOutcome {
        id: def.id.clone(),
        version: def.version,
        spec_hash: hash,
        stream: stream.to_string(),
        outcome,
        position: Some(result.first_position.0),
    })
}

/// Appends `MetricDefaultChanged{id, version}`; the version must exist.
///
/// # Errors
/// Unknown id or version, a concurrent write, or a store error.
pub async fn set_default<S: EventStore>(
    store: &S,
    id: &str,
    version: u32,
    at: DateTime<Utc>,
) -> Result<u64, MetricError> {
    set_default_as(store, id, version, at, LIBRARY_ACTOR).await
}

/// As [`set_default`], recording `actor` as the event's actor.
///
/// # Errors
/// As [`set_default`].
pub async fn set_default_as<S: EventStore>(
    store: &S,
    id: &str,
    version: u32,
    at: DateTime<Utc>,
    actor: &str,
) -> Result<u64, MetricError> {
    let registry = Registry::load(store).await?;
    registry.get(id, Some(version))?;
    let stream = stream_of(id)?;
    let current = store.stream_version(&stream).await?;
    let event = DefinitionEvent::MetricDefaultChanged(MetricDefaultChanged {
        id: id.to_owned(),
        version,
    });
    let key = format!("{}/{id}/{version}/{}", event.event_type(), current.0);
    let expected = if current == StreamVersion::NONE {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(current)
    };
    let r = store
        .append(&stream, expected, vec![proposed(&event, &key, at, actor)?])
        .await
        .map_err(|e| match e {
            crm_eventstore::AppendError::WrongExpectedVersion { .. } => {
                MetricError::Concurrent { id: id.to_owned() }
            }
            other => MetricError::Append(other),
        })?;
    Ok(r.first_position.0)
}
