//! The projection contract: a named, versioned, pure fold over recorded events.
//!
//! **Architecture Invariant:** `apply` is deterministic: it reads only the state, the event
//! and its envelope, never the wall clock, randomness or I/O; it cannot fail. Events the
//! projection does not consume, of types unknown to this build, or whose payload cannot be
//! decoded are skipped and counted in [`Progress`], never applied.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use crm_domain::{CodecError, DomainEvent};
use crm_eventstore::{ChainHash, Position, RecordedEvent, StreamId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A read model built by folding the log.
///
/// Changing what `apply` does, or the shape of `State`, needs a new `version`: a projection
/// whose stored version (or configuration) differs is rebuilt from position 0 on start.
pub trait Projection: Send + Sync + 'static {
    /// The folded state; serialized with its checkpoint in one snapshot.
    type State: Default
        + Clone
        + PartialEq
        + fmt::Debug
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static;

    /// Stable name, used as the directory of its snapshots (`pipeline`, `sla`, ...).
    fn name(&self) -> &'static str;

    /// Code version of the fold; bump it whenever `apply` or `State` changes.
    fn version(&self) -> u32;

    /// The configuration the fold depends on; stored beside the state, a change rebuilds.
    fn config(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Whether the projection consumes events of this type (others are not decoded).
    fn wants(&self, event_type: &str) -> bool;

    /// Folds one decoded event into the state. Pure; cannot fail.
    fn apply(&self, state: &mut Self::State, ctx: &EventContext<'_>, event: &DomainEvent);
}

/// The envelope fields of the event being applied.
#[derive(Debug, Clone, Copy)]
pub struct EventContext<'a> {
    /// Global position.
    pub position: Position,
    /// Stream the event belongs to.
    pub stream_id: &'a StreamId,
    /// When the log accepted it.
    pub recorded_at: DateTime<Utc>,
    /// Business time from the envelope.
    pub occurred_at: DateTime<Utc>,
}

/// How far a projection got and what it skipped; stored with the state (the checkpoint).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Progress {
    /// Position of the last event folded (applied or skipped); 0 before the first.
    #[schemars(with = "u64")]
    pub position: Position,
    /// `recorded_at` of that event.
    pub last_recorded_at: Option<DateTime<Utc>>,
    /// Chain hash of that event. A worker resuming from a snapshot checks that the log still
    /// holds this hash at `position` (the log was not replaced, restored from an older
    /// backup, or truncated since), and rebuilds from position 0 when it does not.
    /// Absent in snapshots written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_hash")]
    #[schemars(with = "Option<String>")]
    pub chain_hash: Option<ChainHash>,
    /// Events applied.
    pub applied: u64,
    /// Events of types this projection does not consume.
    pub ignored: u64,
    /// Events of types this build does not know (written by a newer version).
    pub unknown_type: u64,
    /// Events of consumed types whose payload failed to decode or upcast.
    pub undecodable: u64,
    /// The latest skipped event and why, for `status`.
    pub last_skip: Option<SkipNote>,
}

/// One skipped event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SkipNote {
    /// Its position.
    #[schemars(with = "u64")]
    pub position: Position,
    /// Its type.
    pub event_type: String,
    /// Why it was skipped.
    pub reason: String,
}

/// Index of each event type of the domain catalog, so a recorded event's type is looked up
/// once (when it is read) and every projection then decides by index.
fn kinds() -> &'static HashMap<&'static str, u16> {
    static KINDS: OnceLock<HashMap<&'static str, u16>> = OnceLock::new();
    KINDS.get_or_init(|| {
        DomainEvent::catalog()
            .zip(0u16..)
            .map(|((_, event_type, _), kind)| (event_type, kind))
            .collect()
    })
}

/// Number of event types in the domain catalog (the range of a kind index).
pub(crate) fn kind_count() -> usize {
    kinds().len()
}

/// The catalog index of `event_type`, `None` for a type unknown to this build.
pub(crate) fn kind_of(event_type: &str) -> Option<u16> {
    kinds().get(event_type).copied()
}

/// A recorded event with its decoded form computed at most once, shared by every projection
/// that reads the same page.
#[derive(Debug)]
pub(crate) struct CachedEvent {
    pub(crate) record: RecordedEvent,
    /// Catalog index of the type; `None`: unknown to this build.
    kind: Option<u16>,
    decoded: OnceLock<Result<DomainEvent, CodecError>>,
}

impl CachedEvent {
    pub(crate) fn new(record: RecordedEvent) -> CachedEvent {
        let kind = kind_of(&record.event_type);
        CachedEvent {
            record,
            kind,
            decoded: OnceLock::new(),
        }
    }

    /// Catalog index of the type, `None` if unknown to this build.
    pub(crate) fn kind(&self) -> Option<u16> {
        self.kind
    }

    /// Decodes the payload now (if not yet), e.g. ahead of the projections that will read it.
    pub(crate) fn decode_now(&self) {
        let _ = self.decoded();
    }

    /// Whether the payload was decoded already.
    #[cfg(test)]
    pub(crate) fn is_decoded(&self) -> bool {
        self.decoded.get().is_some()
    }

    fn decoded(&self) -> &Result<DomainEvent, CodecError> {
        self.decoded.get_or_init(|| {
            DomainEvent::from_payload(
                &self.record.event_type,
                self.record.schema_version,
                &self.record.payload,
            )
        })
    }
}

/// Remembers `Projection::wants` per event kind (the catalog bounds its size).
#[derive(Debug, Default)]
pub(crate) struct WantsMemo(Vec<Option<bool>>);

impl WantsMemo {
    fn wants<P: Projection + ?Sized>(
        &mut self,
        projection: &P,
        kind: u16,
        event_type: &str,
    ) -> bool {
        let i = usize::from(kind);
        if self.0.len() <= i {
            self.0.resize(kind_count().max(i + 1), None);
        }
        match self.0.get(i).copied().flatten() {
            Some(w) => w,
            None => {
                let w = projection.wants(event_type);
                if let Some(slot) = self.0.get_mut(i) {
                    *slot = Some(w);
                }
                w
            }
        }
    }
}

/// Folds one cached event: decodes it if wanted, applies it or counts why not.
pub(crate) fn apply_cached<P: Projection + ?Sized>(
    projection: &P,
    state: &mut P::State,
    progress: &mut Progress,
    event: &CachedEvent,
    memo: &mut WantsMemo,
) {
    let rec = &event.record;
    progress.position = rec.position;
    progress.last_recorded_at = Some(rec.recorded_at);
    progress.chain_hash = Some(rec.hash);
    let Some(kind) = event.kind else {
        progress.unknown_type += 1;
        progress.last_skip = Some(SkipNote {
            position: rec.position,
            event_type: rec.event_type.clone(),
            reason: "event type unknown to this build (written by a newer version?)".into(),
        });
        return;
    };
    if !memo.wants(projection, kind, &rec.event_type) {
        progress.ignored += 1;
        return;
    }
    match event.decoded() {
        Ok(domain) => {
            let ctx = EventContext {
                position: rec.position,
                stream_id: &rec.stream_id,
                recorded_at: rec.recorded_at,
                occurred_at: rec.occurred_at,
            };
            projection.apply(state, &ctx, domain);
            progress.applied += 1;
        }
        Err(reason) => {
            progress.undecodable += 1;
            progress.last_skip = Some(SkipNote {
                position: rec.position,
                event_type: rec.event_type.clone(),
                reason: reason.to_string(),
            });
        }
    }
}

/// Folds one recorded event into `state` exactly as a worker does. Use it to compute a
/// projection in memory, e.g. to compare with a worker's result.
pub fn fold_recorded<P: Projection + ?Sized>(
    projection: &P,
    state: &mut P::State,
    progress: &mut Progress,
    record: &RecordedEvent,
) {
    apply_cached(
        projection,
        state,
        progress,
        &CachedEvent::new(record.clone()),
        &mut WantsMemo::default(),
    );
}

/// Folds a whole sequence of events from the default state.
pub fn fold_all<'a, P: Projection + ?Sized>(
    projection: &P,
    records: impl IntoIterator<Item = &'a RecordedEvent>,
) -> (P::State, Progress) {
    let mut state = P::State::default();
    let mut progress = Progress::default();
    for record in records {
        fold_recorded(projection, &mut state, &mut progress, record);
    }
    (state, progress)
}

/// `Option<ChainHash>` as lower-case hex in snapshot headers.
mod hex_hash {
    use crm_eventstore::ChainHash;
    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)]
    pub(super) fn serialize<S: Serializer>(
        hash: &Option<ChainHash>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match hash {
            Some(h) => serializer.serialize_some(&h.to_hex()),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<ChainHash>, D::Error> {
        let Some(text) = Option::<String>::deserialize(deserializer)? else {
            return Ok(None);
        };
        ChainHash::from_hex(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}
