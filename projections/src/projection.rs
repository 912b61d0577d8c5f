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
use crm_eventstore::{ChainHash, Position, RecordView, RecordedEvent};
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

    /// Why the state cannot be trusted, when its storage failed (a [`crate::table::Table`]
    /// whose runs on disk could not be written or read back). The worker checks it after
    /// every page it folds and folds again from the last snapshot; reports refuse a faulty
    /// state. `None` for a state held in memory only.
    fn fault(&self, state: &Self::State) -> Option<String> {
        let _ = state;
        None
    }
}

/// The envelope fields of the event being applied.
#[derive(Debug, Clone, Copy)]
pub struct EventContext<'a> {
    /// Global position.
    pub position: Position,
    /// Stream the event belongs to (a valid stream name, as the log holds it).
    pub stream_id: &'a str,
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

/// Each event type of the domain catalog by its index, and the index of each, so a recorded
/// event's type is looked up once (when it is read) and every projection then decides by index.
struct Kinds {
    /// A fixed hasher: the keys are the catalog's, and a lookup per event read is hot.
    by_name: HashMap<&'static str, u16, foldhash::fast::FixedState>,
    names: Vec<&'static str>,
}

fn kinds() -> &'static Kinds {
    static KINDS: OnceLock<Kinds> = OnceLock::new();
    KINDS.get_or_init(|| {
        let names: Vec<&'static str> = DomainEvent::catalog().map(|(_, t, _)| t).collect();
        Kinds {
            by_name: names.iter().copied().zip(0u16..).collect(),
            names,
        }
    })
}

/// Number of event types in the domain catalog (the range of a kind index).
pub(crate) fn kind_count() -> usize {
    kinds().names.len()
}

/// The type name of catalog index `kind` (empty for an index outside the catalog, which
/// [`kind_of`] never gives).
fn kind_name(kind: u16) -> &'static str {
    kinds().names.get(usize::from(kind)).copied().unwrap_or("")
}

/// The catalog index of `event_type`, `None` for a type unknown to this build.
pub(crate) fn kind_of(event_type: &str) -> Option<u16> {
    kinds().by_name.get(event_type).copied()
}

/// A recorded event as the workers read it: its envelope, and its decoded form computed at
/// most once, shared by every projection that reads the same page. The payload is kept
/// only until it is decoded: a page decodes the types its projections consume as it is read,
/// straight from the log's bytes (see `feed`), so those events never hold a copy of it.
///
/// Four workers walk every page, and a worker skips most events by their position and kind
/// alone, so those two lead the layout (`repr(C)` keeps the order): a skipped event costs one
/// cache line, not the two or three its fields would otherwise spread over.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct CachedEvent {
    pub(crate) position: Position,
    /// Catalog index of the type; `None`: unknown to this build.
    kind: Option<u16>,
    schema_version: u16,
    recorded_at: DateTime<Utc>,
    occurred_at: DateTime<Utc>,
    stream_id: Box<str>,
    hash: ChainHash,
    /// The type's name when the catalog does not know it (`kind` is `None`).
    unknown_type: Option<Box<str>>,
    /// The encoded payload, until it is decoded (empty after, and for an unknown type).
    payload: Vec<u8>,
    decoded: OnceLock<Result<DomainEvent, CodecError>>,
}

impl CachedEvent {
    /// The event of `view`, decoded when first applied. Its payload is copied for that, except
    /// for a type this build does not know (such an event is skipped, never decoded).
    pub(crate) fn from_view(view: &RecordView<'_>) -> CachedEvent {
        Self::undecoded(view, kind_of(view.event_type), false)
    }

    /// Appends the event of `view` to `page`, decoded now when `decode`, in its place in the
    /// page: a decoded event is a few hundred bytes, moved once fewer than when it is built
    /// and then pushed.
    pub(crate) fn push_view(
        page: &mut Vec<CachedEvent>,
        view: &RecordView<'_>,
        kind: Option<u16>,
        decode: bool,
    ) {
        page.push(Self::undecoded(view, kind, decode));
        if let (true, Some(event)) = (decode, page.last()) {
            event.decode_from(view.payload);
        }
    }

    /// The event of `view` with nothing decoded yet; its payload copied only when it is not
    /// to be decoded at once (`decode_now`), and never for a type this build does not know.
    fn undecoded(view: &RecordView<'_>, kind: Option<u16>, decode_now: bool) -> CachedEvent {
        let payload = match kind {
            Some(_) if !decode_now => view.payload.to_vec(),
            _ => Vec::new(),
        };
        CachedEvent {
            position: view.position,
            stream_id: view.stream_id.into(),
            unknown_type: kind.is_none().then(|| view.event_type.into()),
            schema_version: view.schema_version,
            recorded_at: view.recorded_at,
            occurred_at: view.occurred_at,
            hash: view.hash,
            kind,
            payload,
            decoded: OnceLock::new(),
        }
    }

    /// Decodes `payload`, this event's, into its decoded form (for a type this build knows).
    fn decode_from(&self, payload: &[u8]) {
        if self.kind.is_some() {
            self.decoded.get_or_init(|| {
                DomainEvent::from_payload(self.event_type(), self.schema_version, payload)
            });
        }
    }

    /// The event type's name.
    fn event_type(&self) -> &str {
        match (&self.unknown_type, self.kind) {
            (Some(name), _) => name,
            (None, Some(k)) => kind_name(k),
            (None, None) => "",
        }
    }

    /// Whether the payload was decoded already.
    #[cfg(test)]
    pub(crate) fn is_decoded(&self) -> bool {
        self.decoded.get().is_some()
    }

    fn decoded(&self) -> &Result<DomainEvent, CodecError> {
        self.decoded.get_or_init(|| {
            DomainEvent::from_payload(self.event_type(), self.schema_version, &self.payload)
        })
    }
}

/// Remembers `Projection::wants` per event kind (the catalog bounds its size).
#[derive(Debug, Default)]
pub(crate) struct WantsMemo(Vec<Option<bool>>);

impl WantsMemo {
    /// Whether `projection` consumes events of catalog index `kind` (asked once per kind;
    /// the event itself is not read for it).
    fn wants<P: Projection + ?Sized>(&mut self, projection: &P, kind: u16) -> bool {
        let i = usize::from(kind);
        if self.0.len() <= i {
            self.0.resize(kind_count().max(i + 1), None);
        }
        match self.0.get(i).copied().flatten() {
            Some(w) => w,
            None => {
                let w = projection.wants(kind_name(kind));
                if let Some(slot) = self.0.get_mut(i) {
                    *slot = Some(w);
                }
                w
            }
        }
    }
}

/// Folds one cached event: decodes it if wanted, applies it or counts why not; `progress`
/// then stands at it.
pub(crate) fn apply_cached<P: Projection + ?Sized>(
    projection: &P,
    state: &mut P::State,
    progress: &mut Progress,
    event: &CachedEvent,
    memo: &mut WantsMemo,
) {
    apply_unmarked(projection, state, progress, event, memo);
    progress.mark(event);
}

/// As [`apply_cached`], leaving `progress`'s position, instant and chain hash where they
/// were: a worker folding a run of events marks the last one it folded, once (see
/// [`Progress::mark`]).
pub(crate) fn apply_unmarked<P: Projection + ?Sized>(
    projection: &P,
    state: &mut P::State,
    progress: &mut Progress,
    event: &CachedEvent,
    memo: &mut WantsMemo,
) {
    let Some(kind) = event.kind else {
        progress.unknown_type += 1;
        progress.last_skip = Some(SkipNote {
            position: event.position,
            event_type: event.event_type().to_owned(),
            reason: "event type unknown to this build (written by a newer version?)".into(),
        });
        return;
    };
    if !memo.wants(projection, kind) {
        progress.ignored += 1;
        return;
    }
    match event.decoded() {
        Ok(domain) => {
            let ctx = EventContext {
                position: event.position,
                stream_id: &event.stream_id,
                recorded_at: event.recorded_at,
                occurred_at: event.occurred_at,
            };
            projection.apply(state, &ctx, domain);
            progress.applied += 1;
        }
        Err(reason) => {
            progress.undecodable += 1;
            progress.last_skip = Some(SkipNote {
                position: event.position,
                event_type: event.event_type().to_owned(),
                reason: reason.to_string(),
            });
        }
    }
}

impl Progress {
    /// Stands at `event`: the last event folded (applied or skipped).
    pub(crate) fn mark(&mut self, event: &CachedEvent) {
        self.position = event.position;
        self.last_recorded_at = Some(event.recorded_at);
        self.chain_hash = Some(event.hash);
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
        &CachedEvent::from_view(&record.view()),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Mutex;

    use crm_domain::aggregates::lead::LeadQualified;
    use crm_domain::aggregates::LeadEvent;
    use crm_domain::values::LeadId;
    use crm_eventstore::{EventStore, MemoryStore};

    use super::*;
    use crate::test_events::{append_each, case_opened};

    /// Counts the `LeadQualified` events it folds and remembers every type name it was asked
    /// about.
    #[derive(Default)]
    struct QualifiedLeads {
        asked: Mutex<Vec<String>>,
    }

    impl Projection for QualifiedLeads {
        type State = u64;

        fn name(&self) -> &'static str {
            "qualified-leads"
        }

        fn version(&self) -> u32 {
            1
        }

        fn wants(&self, event_type: &str) -> bool {
            self.asked.lock().unwrap().push(event_type.to_owned());
            event_type == "LeadQualified"
        }

        fn apply(&self, state: &mut u64, _ctx: &EventContext<'_>, event: &DomainEvent) {
            if let DomainEvent::Lead(LeadEvent::LeadQualified(_)) = event {
                *state += 1;
            }
        }
    }

    fn lead_qualified(i: u64) -> DomainEvent {
        LeadEvent::from(LeadQualified {
            lead_id: LeadId::new(format!("l{i}")).unwrap(),
            budget: true,
            authority: true,
            need: true,
            timeline: false,
            score: None,
            occurred_at: chrono::DateTime::UNIX_EPOCH,
        })
        .into()
    }

    async fn recorded(events: Vec<DomainEvent>) -> Vec<RecordedEvent> {
        let store = MemoryStore::new();
        append_each(&store, events).await;
        store.read_all(Position::FIRST, 100).await.unwrap()
    }

    /// A worker's memo asks the projection once per kind, by the kind's type name, and the
    /// fold then applies exactly the wanted events and counts the others as ignored.
    #[tokio::test]
    async fn a_worker_asks_once_per_kind_by_name_and_folds_only_what_it_wants() {
        let events: Vec<DomainEvent> = (0..6)
            .map(|i| {
                if i % 3 == 0 {
                    lead_qualified(i)
                } else {
                    case_opened(i)
                }
            })
            .collect();
        let records = recorded(events).await;
        assert_eq!(records.len(), 6);
        let projection = QualifiedLeads::default();
        let mut state = 0;
        let mut progress = Progress::default();
        let mut memo = WantsMemo::default();
        for record in &records {
            let cached = CachedEvent::from_view(&record.view());
            apply_cached(&projection, &mut state, &mut progress, &cached, &mut memo);
        }
        assert_eq!(state, 2);
        assert_eq!((progress.applied, progress.ignored), (2, 4));
        assert_eq!(progress.position, Position(6));
        assert_eq!(
            *projection.asked.lock().unwrap(),
            ["LeadQualified", "CaseOpened"]
        );
    }
}
