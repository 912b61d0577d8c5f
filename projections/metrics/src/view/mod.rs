//! [`LogView`]: the slice of the log one evaluation reads, loaded by one replay.
//!
//! The loader walks `read_all` from position 1 to the head captured when it starts, and
//! keeps only what the metrics need (their event types, the creation events of those
//! streams, the streams named by `ref(..)`), with each payload cut down to the fields the
//! expressions read. Visibility:
//! - `known_at = T` stops at the first event recorded after `T` (`recorded_at` never
//!   decreases along the log), or after a position;
//! - `as_of = T` drops events that occurred after `T`.
//!
//! Global exclusions are resolved here, for every metric: `TEST` (creation event
//! with `is_test`, or a `RecordFlaggedTest` in the stream), `RETRACTED` (target of an
//! `EventRetracted{event_id}`), `DUPLICATE` (creation event of a stream with a
//! `RecordMerged`). They depend on events later in the log, which is why a view keeps its
//! events until the replay ends rather than folding them as they come.
//!
//! Memory: the kept events are columns (position, stream, type, ids, instants: about 40
//! bytes an event, positions in 4 bytes and instants in 8 (`narrow.rs`), `recorded_at` in
//! runs), their payloads compact binary JSON in one arena
//! (`payload.rs`), the streams' names in one text arena with each stream's events in one
//! index array (`streams.rs`). Metadata and actors are kept only when a metric reads them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use chrono::{DateTime, Utc};
use crm_domain::{DomainEvent, UpcasterRegistry};
use crm_eventstore::limits::READ_PAGE_MAX;
use crm_eventstore::{EventStore, Position, ReadError, RecordedEvent, Selector};
use serde::de::DeserializeSeed;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::compile::Requirements;
use crate::error::MetricError;

mod narrow;
mod payload;
mod streams;
mod tally;

use narrow::{Instants, Positions, Runs};
use payload::{Encode, Keys};
pub(crate) use payload::{Kind, Node};
pub(crate) use streams::StreamInfo;
use streams::Streams;
use tally::Tally;

/// Types of the correction events the global rules read (in any stream).
pub const CORRECTION_TYPES: &[&str] = &["RecordFlaggedTest", "EventRetracted", "RecordMerged"];

/// Pages read ahead of the payload decoding.
const PAGES_AHEAD: usize = 2;

/// Most events one view keeps in memory.
pub const VIEW_EVENTS_MAX: usize = 20_000_000;

/// What the log had recorded: a position, or an instant (`recorded_at ≤ T`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KnownAt {
    Time(DateTime<Utc>),
    Position(u64),
}

/// Where in the log a figure was computed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogMark {
    /// Last visible position (0 for an empty log).
    pub position: u64,
    /// Chain hash of that record (hex; zeros for an empty log).
    pub chain_hash: String,
    /// `recorded_at` of that record.
    pub recorded_at: Option<DateTime<Utc>>,
    /// Events read.
    pub events_scanned: u64,
    /// Events kept for the metric.
    pub events_kept: u64,
}

/// Reason codes of the global exclusions, by their stored number minus one.
const GLOBAL_CODES: [&str; 3] = ["TEST", "RETRACTED", "DUPLICATE"];

/// One kept event, as read from the view's columns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ev {
    pub position: u64,
    pub stream: u32,
    pub version: u64,
    pub ty: u16,
    pub event_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    /// Global exclusion code, if any.
    pub global: Option<&'static str>,
}

/// The kept events, one column per attribute: a few dozen bytes an event besides its
/// payload (the loader keeps millions of events for a metric over a long log).
#[derive(Debug, Clone, Default)]
struct Columns {
    position: Positions,
    stream: Vec<u32>,
    version: Vec<u32>,
    ty: Vec<u16>,
    /// 0, or 1 + the index of the global exclusion code in [`GLOBAL_CODES`].
    global: Vec<u8>,
    /// Each event's id, when the view keeps ids (see [`LogView::load`]).
    event_id: Vec<Uuid>,
    occurred_at: Instants,
    /// `recorded_at` in runs (it never decreases along the log).
    recorded_at: Runs<DateTime<Utc>>,
    /// Each event's payload: from its start in `payloads` (see [`payload`]).
    payload_start: Vec<u32>,
    payloads: Vec<u8>,
    /// Each event's metadata from its start in `metas`, when the metrics read metadata.
    meta_start: Vec<u32>,
    metas: Vec<u8>,
    /// Each event's actor (an index into `actors`), when the metrics read actors.
    actor: Vec<u32>,
    actors: Vec<Box<str>>,
    actor_ix: HashMap<Box<str>, u32>,
}

impl Columns {
    fn len(&self) -> usize {
        self.position.len()
    }

    fn shrink(&mut self) {
        self.position.shrink();
        self.stream.shrink_to_fit();
        self.version.shrink_to_fit();
        self.ty.shrink_to_fit();
        self.global.shrink_to_fit();
        self.event_id.shrink_to_fit();
        self.occurred_at.shrink();
        self.recorded_at.shrink();
        self.payload_start.shrink_to_fit();
        self.payloads.shrink_to_fit();
        self.meta_start.shrink_to_fit();
        self.metas.shrink_to_fit();
        self.actor.shrink_to_fit();
    }
}

/// The loaded slice of the log.
#[derive(Clone)]
pub struct LogView {
    cols: Columns,
    keys: Keys,
    streams: Streams,
    types: Vec<String>,
    /// Current schema version of each interned type (`None`: not a domain type).
    schema: Vec<Option<u16>>,
    type_ix: HashMap<String, u16>,
    pub(crate) by_type: Vec<Vec<u32>>,
    /// Earliest and latest `occurred_at` of the kept events.
    occurred: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Visible events per type (every type, kept or not).
    pub type_counts: BTreeMap<String, u64>,
    /// The log position the view ends at.
    pub mark: LogMark,
    /// "Now" for pending decisions: `as_of`, the `known_at` instant, or the last `recorded_at`.
    pub now: DateTime<Utc>,
    /// Payloads that could not be decoded (kept with a null payload).
    pub undecodable: u64,
    /// What the view was loaded to hold.
    loaded: Requirements,
    /// What the whole definitions read: the events `mark.events_kept` counts and whose
    /// `occurred_at` span the default range (`loaded` when the view holds all of it).
    counted: Option<Requirements>,
    /// The bitemporal cut it was loaded under.
    as_of: Option<DateTime<Utc>>,
    known_at: Option<KnownAt>,
    /// Whether the events' ids are kept.
    ids: bool,
}

/// Called each time a replay has loaded a view, before the view is evaluated; see
/// [`on_view_loaded`].
static LOADED_HOOK: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets a function called each time a replay has loaded a view, before it is evaluated (at
/// most once a process; later calls change nothing). A one-shot question's process returns
/// the memory its replay freed to the system there, so those pages, still held by the
/// allocator, are not part of the evaluation's peak; the engine itself knows no allocator.
pub fn on_view_loaded(hook: fn()) {
    let _ = LOADED_HOOK.set(hook);
}

/// Most new records [`LogView::extended`] reads; a view further behind is loaded again.
pub const EXTEND_RECORDS_MAX: usize = 10_000;

/// How a replay keeps the records its [`tally::Tally`] selects: the payload fields, and
/// whether metadata and actors are read.
struct Selection<'a> {
    keep: Keep<'a>,
    req: &'a Requirements,
}

impl<'a> Selection<'a> {
    fn new(req: &'a Requirements, fields: &'a BTreeSet<String>) -> Self {
        Selection {
            keep: Keep {
                all: fields.contains("*"),
                fields,
            },
            req,
        }
    }

    /// The payload fields a replay keeps for `req`.
    fn fields(req: &Requirements) -> BTreeSet<String> {
        let mut kept = req.fields.clone();
        kept.extend(["is_test", "event_id"].map(String::from));
        if req.attrs {
            kept.insert(crm_domain::attributes::ATTRIBUTES_FIELD.to_owned());
        }
        kept
    }
}

impl fmt::Debug for LogView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogView")
            .field("events", &self.cols.len())
            .field("streams", &self.streams.len())
            .field("mark", &self.mark)
            .finish()
    }
}

/// Which payload fields to keep.
struct Keep<'a> {
    all: bool,
    fields: &'a BTreeSet<String>,
}

fn prune(v: Value, keep: &Keep<'_>) -> Value {
    match v {
        Value::Object(map) if !keep.all => Value::Object(
            map.into_iter()
                .filter(|(k, _)| keep.fields.contains(k))
                .collect(),
        ),
        other => other,
    }
}

/// Appends the payload of `rec` to `out`, cut to the fields `keep` names (upcast first when
/// its schema is older than the current one); `false` (and `null` appended) when it cannot
/// be decoded.
fn decode_into(
    rec: &RecordedEvent,
    current: Option<u16>,
    keep: &Keep<'_>,
    keys: &mut Keys,
    out: &mut Vec<u8>,
) -> bool {
    let start = out.len();
    let decoded = if keep.all || current.is_some_and(|c| rec.schema_version < c) {
        let mut whole = || -> Option<()> {
            let v: Value = serde_json::from_slice(&rec.payload).ok()?;
            let v = match current {
                Some(c) if rec.schema_version < c => UpcasterRegistry::standard()
                    .upcast(&rec.event_type, rec.schema_version, v)
                    .ok()?,
                _ => v,
            };
            payload::encode_value(&prune(v, keep), keys, out)
        };
        whole().is_some()
    } else {
        let mut de = serde_json::Deserializer::from_slice(&rec.payload);
        let kept = |k: &str| keep.fields.contains(k);
        Encode {
            keys,
            out,
            keep: Some(&kept),
        }
        .deserialize(&mut de)
        .is_ok()
    };
    if !decoded {
        out.truncate(start);
        out.extend_from_slice(&payload::NULL_NODE);
    }
    decoded
}

/// Appends the metadata of `rec` to `out` (`null` when it is not JSON).
fn decode_meta(rec: &RecordedEvent, keys: &mut Keys, out: &mut Vec<u8>) {
    let start = out.len();
    let mut de = serde_json::Deserializer::from_slice(&rec.metadata);
    let decoded = Encode {
        keys,
        out: &mut *out,
        keep: None,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if decoded.is_err() {
        out.truncate(start);
        out.extend_from_slice(&payload::NULL_NODE);
    }
}

impl LogView {
    /// Replays the log once and keeps what `req` names. With `counted` (what the whole
    /// definitions read, of which `req` is a part: one question's dimensions only), the
    /// events `counted` names are counted as kept and span the default range as if they had
    /// been kept, so the figures are those of a view holding them all. With `ids` (or when
    /// `req` reads `event.id`) the events' ids are kept (explanations list them); without,
    /// a log holding retractions is read a second time for the positions of the retracted
    /// events.
    ///
    /// # Errors
    /// A read error, or more than [`VIEW_EVENTS_MAX`] kept events.
    pub(crate) async fn load<S: EventStore>(
        store: &S,
        req: &Requirements,
        counted: Option<&Requirements>,
        ids: bool,
        as_of: Option<DateTime<Utc>>,
        known_at: Option<KnownAt>,
    ) -> Result<LogView, MetricError> {
        let fields = Selection::fields(req);
        let selection = Selection::new(req, &fields);
        let head = store.head();
        let mut view = LogView {
            cols: Columns::default(),
            keys: Keys::default(),
            streams: Streams::default(),
            occurred: None,
            types: Vec::new(),
            schema: Vec::new(),
            type_ix: HashMap::new(),
            by_type: Vec::new(),
            type_counts: BTreeMap::new(),
            mark: LogMark {
                position: 0,
                chain_hash: crm_eventstore::ChainHash::GENESIS.to_hex(),
                recorded_at: None,
                events_scanned: 0,
                events_kept: 0,
            },
            now: DateTime::<Utc>::UNIX_EPOCH,
            undecodable: 0,
            loaded: req.clone(),
            counted: counted.cloned(),
            as_of,
            known_at,
            ids: ids || req.event_ids,
        };
        // The store's reader walks the log and the tally (its selector) counts every record
        // there, copying out only the kept ones; this task decodes their payloads meanwhile:
        // two cores, one pass.
        let tally = Tally::new(req, counted, head.position, as_of, known_at);
        let (tx, mut rx) = mpsc::channel::<Result<Vec<RecordedEvent>, ReadError>>(PAGES_AHEAD);
        let reader_store = store.clone();
        let reader = tokio::spawn(async move {
            let mut tally = tally;
            let mut next = Position::FIRST;
            while next <= head.position && !tally.done() {
                let page = match reader_store
                    .read_all_selected(next, READ_PAGE_MAX, tally)
                    .await
                {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return None;
                    }
                };
                tally = page.select;
                if !page.records.is_empty() && tx.send(Ok(page.records)).await.is_err() {
                    return None;
                }
                match page.last.and_then(|p| p.next()) {
                    Some(n) => next = n,
                    None => break,
                }
            }
            Some(tally)
        });
        let loaded = async {
            while let Some(page) = rx.recv().await {
                for rec in page? {
                    view.push(&rec, &selection)?;
                }
            }
            Ok::<(), MetricError>(())
        }
        .await;
        if let Err(e) = loaded {
            reader.abort();
            return Err(e);
        }
        let tally = reader
            .await
            .map_err(|e| ReadError::Storage(format!("the log reader stopped: {e}")))?
            .ok_or_else(|| ReadError::Storage("the log reader stopped early".into()))?;
        view.absorb(tally);
        view.now = match (as_of, known_at) {
            (Some(a), Some(KnownAt::Time(k))) => a.min(k),
            (Some(a), _) => a,
            (None, Some(KnownAt::Time(k))) => k,
            _ => view.mark.recorded_at.unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
        };
        let retracted = view.retracted_positions(store).await?;
        view.finish(&retracted);
        if let Some(hook) = LOADED_HOOK.get() {
            hook();
        }
        Ok(view)
    }

    /// The ids the kept `EventRetracted` events name.
    fn retracted_ids(&self) -> BTreeSet<Uuid> {
        self.of_type("EventRetracted")
            .iter()
            .filter_map(|i| self.payload(*i).get("event_id")?.as_str()?.parse().ok())
            .collect()
    }

    /// Positions of the retracted events up to the view's end: from the kept ids, or (a
    /// view without ids) by reading the log again, only when something was retracted.
    async fn retracted_positions<S: EventStore>(
        &self,
        store: &S,
    ) -> Result<BTreeSet<u64>, MetricError> {
        let retracted = self.retracted_ids();
        if retracted.is_empty() {
            return Ok(BTreeSet::new());
        }
        if self.ids {
            return Ok(self
                .cols
                .event_id
                .iter()
                .zip(self.cols.position.iter())
                .filter(|(id, _)| retracted.contains(*id))
                .map(|(_, p)| p)
                .collect());
        }
        let mut out = BTreeSet::new();
        let mut next = Position::FIRST;
        while next.0 <= self.mark.position {
            let page = store.read_all(next, READ_PAGE_MAX).await?;
            let Some(last) = page.last() else { break };
            out.extend(
                page.iter()
                    .filter(|r| r.position.0 <= self.mark.position)
                    .filter(|r| retracted.contains(&r.event_id.0))
                    .map(|r| r.position.0),
            );
            match last.position.next() {
                Some(n) => next = n,
                None => break,
            }
        }
        Ok(out)
    }

    /// Takes a finished replay's counts: events scanned and counted as kept, their span,
    /// the visible events per type, and the last visible record as the view's mark.
    fn absorb(&mut self, tally: Tally) {
        self.mark.events_scanned = tally.scanned;
        self.mark.events_kept = tally.kept_count;
        self.occurred = tally.occurred;
        self.type_counts = tally.type_counts();
        if let Some((position, hash, recorded_at)) = tally.last {
            self.mark.position = position.0;
            self.mark.chain_hash = hash.to_hex();
            self.mark.recorded_at = Some(recorded_at);
        }
    }

    /// This view brought to the store's head by reading only the records after its mark:
    /// the view a full replay would load. `None` when that cannot be done: a view under
    /// `as_of` or `known_at`, more than [`EXTEND_RECORDS_MAX`] new records, or a log that no
    /// longer holds the view's last record (replaced or restored).
    ///
    /// # Errors
    /// A read error, or more than [`VIEW_EVENTS_MAX`] kept events.
    pub async fn extended<S: EventStore>(&self, store: &S) -> Result<Option<LogView>, MetricError> {
        if self.as_of.is_some() || self.known_at.is_some() || !self.ids {
            return Ok(None);
        }
        let head = store.head();
        let Some(from) = Position(self.mark.position).next() else {
            return Ok(None);
        };
        if head.position.0 <= self.mark.position {
            return Ok(None);
        }
        let behind = head.position.0 - self.mark.position;
        if behind > u64::try_from(EXTEND_RECORDS_MAX).unwrap_or(u64::MAX) {
            return Ok(None);
        }
        if self.mark.position > 0 {
            let holds = crm_eventstore::record_at(store, Position(self.mark.position))
                .await?
                .is_some_and(|r| r.hash.to_hex() == self.mark.chain_hash);
            if !holds {
                return Ok(None);
            }
        }
        let records = store.read_all(from, EXTEND_RECORDS_MAX).await?;
        let mut view = self.clone();
        let loaded = view.loaded.clone();
        let fields = Selection::fields(&loaded);
        let selection = Selection::new(&loaded, &fields);
        let mut tally = Tally::new(&loaded, view.counted.as_ref(), head.position, None, None)
            .resume(
                view.mark.events_scanned,
                view.mark.events_kept,
                view.occurred,
                &view.type_counts,
            );
        for rec in &records {
            if tally.select(&rec.view()) {
                view.push(rec, &selection)?;
            }
        }
        view.absorb(tally);
        view.now = view.mark.recorded_at.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        let retracted = view.retracted_positions(store).await?;
        view.finish(&retracted);
        Ok(Some(view))
    }

    /// Completes a loaded (or extended) view: the per-stream event lists, the global
    /// exclusions (`retracted`: the positions of retracted events), and the arrays trimmed
    /// to their length.
    fn finish(&mut self, retracted: &BTreeSet<u64>) {
        self.streams.index_events(&self.cols.stream);
        if self.counted.is_some() && self.loaded.ref_categories.is_empty() {
            // One question's view, which looks no stream up by name (`ref(..)` names none).
            self.streams.drop_name_index();
        }
        self.apply_global_rules(retracted);
        self.cols.shrink();
        self.streams.shrink();
        for list in &mut self.by_type {
            list.shrink_to_fit();
        }
    }

    /// Checks that the view holds what `req` reads (a view loaded for other questions would
    /// answer with missing values, never an error, so it is refused here).
    ///
    /// # Errors
    /// [`MetricError::Query`] naming what the view lacks.
    pub(crate) fn covers(&self, req: &Requirements) -> Result<(), MetricError> {
        let l = &self.loaded;
        let lacks = if req.attrs && !l.attrs {
            Some("custom attributes".to_owned())
        } else if req.meta && !l.meta {
            Some("event metadata".to_owned())
        } else if req.actor && !l.actor {
            Some("event actors".to_owned())
        } else if req.event_ids && !self.ids {
            Some("event ids".to_owned())
        } else if let Some(t) = req.types.iter().find(|t| !l.types.contains(*t)) {
            Some(format!("`{t}` events"))
        } else if let Some(c) = req
            .ref_categories
            .iter()
            .find(|c| !l.ref_categories.contains(*c))
        {
            Some(format!("`{c}` streams"))
        } else if l.fields.contains("*") {
            None
        } else {
            req.fields
                .iter()
                .find(|f| !l.fields.contains(*f))
                .map(|f| format!("payload field `{f}`"))
        };
        match lacks {
            Some(what) => Err(MetricError::Query(format!(
                "this view was loaded without {what}, which the query reads; load it for the query (load_view with the same query)"
            ))),
            None => Ok(()),
        }
    }

    fn push(&mut self, rec: &RecordedEvent, selection: &Selection<'_>) -> Result<(), MetricError> {
        let too_many = || MetricError::Limit {
            what: "the events one evaluation keeps",
            limit: VIEW_EVENTS_MAX,
            hint: "narrow the metric's event types or evaluate against a read model",
        };
        if self.cols.len() >= VIEW_EVENTS_MAX {
            return Err(too_many());
        }
        let idx = u32::try_from(self.cols.len()).map_err(|_| too_many())?;
        let stream = self
            .streams
            .find_or_add(rec.stream_id.as_str())
            .ok_or_else(too_many)?;
        let version = u32::try_from(rec.stream_version.0).map_err(|_| MetricError::Limit {
            what: "the stream versions one evaluation reads",
            limit: usize::try_from(u32::MAX).unwrap_or(usize::MAX),
            hint: "evaluate against a read model",
        })?;
        let arena_full = || MetricError::Limit {
            what: "the payload bytes one evaluation keeps",
            limit: usize::try_from(u32::MAX).unwrap_or(usize::MAX),
            hint: "narrow the metric's event types or the payload fields it reads",
        };
        let ty = self.intern(&rec.event_type);
        let current = self.schema.get(usize::from(ty)).copied().flatten();
        let start = u32::try_from(self.cols.payloads.len()).map_err(|_| arena_full())?;
        if !decode_into(
            rec,
            current,
            &selection.keep,
            &mut self.keys,
            &mut self.cols.payloads,
        ) {
            self.undecodable += 1;
        }
        u32::try_from(self.cols.payloads.len()).map_err(|_| arena_full())?;
        if selection.req.meta {
            let meta = u32::try_from(self.cols.metas.len()).map_err(|_| arena_full())?;
            decode_meta(rec, &mut self.keys, &mut self.cols.metas);
            u32::try_from(self.cols.metas.len()).map_err(|_| arena_full())?;
            self.cols.meta_start.push(meta);
        }
        if selection.req.actor {
            let actor = match self.cols.actor_ix.get(rec.actor.as_str()) {
                Some(a) => *a,
                None => {
                    let a = u32::try_from(self.cols.actors.len()).map_err(|_| too_many())?;
                    self.cols.actors.push(rec.actor.as_str().into());
                    self.cols.actor_ix.insert(rec.actor.as_str().into(), a);
                    a
                }
            };
            self.cols.actor.push(actor);
        }
        let c = &mut self.cols;
        c.position.push(idx, rec.position.0);
        c.stream.push(stream);
        c.version.push(version);
        c.ty.push(ty);
        c.global.push(0);
        if self.ids {
            c.event_id.push(rec.event_id.0);
        }
        c.occurred_at.push(idx, rec.occurred_at);
        c.recorded_at.push(idx, rec.recorded_at);
        c.payload_start.push(start);
        if rec.stream_version.0 == 1 {
            self.streams.set_creation(stream);
        }
        if let Some(list) = self.by_type.get_mut(usize::from(ty)) {
            list.push(idx);
        }
        Ok(())
    }

    fn intern(&mut self, ty: &str) -> u16 {
        if let Some(i) = self.type_ix.get(ty) {
            return *i;
        }
        // Event type names are a closed vocabulary; past u16 every new name shares the last slot.
        let i = u16::try_from(self.types.len()).unwrap_or(u16::MAX);
        self.types.push(ty.to_owned());
        self.schema.push(DomainEvent::current_schema_version(ty));
        self.by_type.push(Vec::new());
        self.type_ix.insert(ty.to_owned(), i);
        i
    }

    fn apply_global_rules(&mut self, retracted: &BTreeSet<u64>) {
        let mut marks: Vec<(u32, &'static str)> = Vec::new();
        let flag = self.type_id("RecordFlaggedTest");
        let merge = self.type_id("RecordMerged");
        let is = |i: u32, ty: Option<u16>| ty.is_some() && self.ty_and_global(i).map(|t| t.0) == ty;
        for s in 0..self.streams.len() {
            let Some(info) = u32::try_from(s).ok().and_then(|s| self.streams.get(s)) else {
                continue;
            };
            let test_by_creation = info
                .creation
                .is_some_and(|c| self.payload(c).get("is_test").is_some_and(|v| v.is_true()));
            let flagged = info.events.iter().any(|i| is(*i, flag));
            if test_by_creation || flagged {
                marks.extend(info.events.iter().map(|i| (*i, "TEST")));
                continue;
            }
            let merged = info.events.iter().any(|i| is(*i, merge));
            if let (true, Some(c)) = (merged, info.creation) {
                marks.push((c, "DUPLICATE"));
            }
        }
        if !retracted.is_empty() {
            for (i, p) in self.cols.position.iter().enumerate() {
                if retracted.contains(&p) {
                    marks.push((u32::try_from(i).unwrap_or(u32::MAX), "RETRACTED"));
                }
            }
        }
        for (i, code) in marks {
            let number = GLOBAL_CODES
                .iter()
                .position(|c| *c == code)
                .and_then(|n| u8::try_from(n + 1).ok())
                .unwrap_or(0);
            if let Some(g) = usize::try_from(i)
                .ok()
                .and_then(|i| self.cols.global.get_mut(i))
            {
                if *g == 0 {
                    *g = number;
                }
            }
        }
    }

    /// Kept event `i`.
    pub(crate) fn ev(&self, i: u32) -> Option<Ev> {
        let i = usize::try_from(i).ok()?;
        let c = &self.cols;
        let recorded_at = c.recorded_at.get(i)?;
        Some(Ev {
            position: c.position.get(i)?,
            stream: *c.stream.get(i)?,
            version: u64::from(*c.version.get(i)?),
            ty: *c.ty.get(i)?,
            // The nil id in a view loaded without ids, which nothing reads there.
            event_id: c.event_id.get(i).copied().unwrap_or_default(),
            occurred_at: c.occurred_at.get(i)?,
            recorded_at,
            global: c
                .global
                .get(i)
                .and_then(|g| usize::from(*g).checked_sub(1))
                .and_then(|g| GLOBAL_CODES.get(g).copied()),
        })
    }

    /// The kept events with their indices, in log order.
    pub(crate) fn events(&self) -> impl Iterator<Item = (u32, Ev)> + '_ {
        (0..self.cols.len()).filter_map(|i| {
            let i = u32::try_from(i).ok()?;
            Some((i, self.ev(i)?))
        })
    }

    /// Position of kept event `i` (0 when out of range).
    pub(crate) fn position_of(&self, i: u32) -> u64 {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.cols.position.get(i))
            .unwrap_or(0)
    }

    /// The stream of kept event `i`.
    pub(crate) fn stream_of(&self, i: u32) -> Option<u32> {
        self.cols.stream.get(usize::try_from(i).ok()?).copied()
    }

    /// `occurred_at` of kept event `i`.
    pub(crate) fn occurred_at_of(&self, i: u32) -> Option<DateTime<Utc>> {
        self.cols.occurred_at.get(usize::try_from(i).ok()?)
    }

    /// Type and global exclusion of kept event `i`: what stream scans test most.
    pub(crate) fn ty_and_global(&self, i: u32) -> Option<(u16, bool)> {
        let i = usize::try_from(i).ok()?;
        Some((*self.cols.ty.get(i)?, *self.cols.global.get(i)? != 0))
    }

    /// Earliest and latest `occurred_at` of the kept events.
    pub(crate) fn occurred_range(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        self.occurred
    }

    /// The payload of kept event `i` (`null` when it could not be decoded or `i` is out of
    /// range).
    pub(crate) fn payload(&self, i: u32) -> Node<'_> {
        Self::node_at(&self.cols.payload_start, &self.cols.payloads, &self.keys, i)
    }

    /// The metadata of kept event `i` (`null` unless the view was loaded with metadata).
    pub(crate) fn meta(&self, i: u32) -> Node<'_> {
        Self::node_at(&self.cols.meta_start, &self.cols.metas, &self.keys, i)
    }

    fn node_at<'a>(starts: &[u32], arena: &'a [u8], keys: &'a Keys, i: u32) -> Node<'a> {
        let bytes = usize::try_from(i)
            .ok()
            .and_then(|i| starts.get(i))
            .and_then(|s| arena.get(usize::try_from(*s).ok()?..))
            .unwrap_or(&payload::NULL_NODE);
        Node::new(bytes, keys)
    }

    /// The actor of kept event `i` (empty unless the view was loaded with actors).
    pub(crate) fn actor(&self, i: u32) -> &str {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.cols.actor.get(i))
            .and_then(|a| self.cols.actors.get(usize::try_from(*a).ok()?))
            .map_or("", |a| a)
    }

    pub(crate) fn stream(&self, s: u32) -> Option<StreamInfo<'_>> {
        self.streams.get(s)
    }

    pub(crate) fn stream_named(&self, name: &str) -> Option<u32> {
        self.streams.find(name)
    }

    pub(crate) fn type_name(&self, ty: u16) -> &str {
        self.types.get(usize::from(ty)).map_or("", String::as_str)
    }

    pub(crate) fn type_id(&self, name: &str) -> Option<u16> {
        self.type_ix.get(name).copied()
    }

    /// Kept events of a type, in log order.
    pub(crate) fn of_type(&self, name: &str) -> &[u32] {
        self.type_id(name)
            .and_then(|t| self.by_type.get(usize::from(t)))
            .map_or(&[], Vec::as_slice)
    }

    /// Number of visible events of `ty`.
    pub fn count_of(&self, ty: &str) -> u64 {
        self.type_counts.get(ty).copied().unwrap_or(0)
    }
}
