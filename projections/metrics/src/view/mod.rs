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
//! `RecordMerged`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use chrono::{DateTime, Utc};
use crm_domain::{DomainEvent, UpcasterRegistry};
use crm_eventstore::limits::READ_PAGE_MAX;
use crm_eventstore::{ChainHash, EventStore, Position, ReadError, RecordedEvent};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::compile::Requirements;
use crate::error::MetricError;

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

/// One kept event.
#[derive(Debug, Clone)]
pub(crate) struct Ev {
    pub position: u64,
    pub stream: u32,
    pub version: u64,
    pub ty: u16,
    pub event_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub actor: String,
    pub payload: Value,
    pub meta: Value,
    /// Global exclusion code, if any.
    pub global: Option<&'static str>,
}

/// One stream's kept events.
#[derive(Debug, Clone)]
pub(crate) struct StreamInfo {
    pub name: String,
    pub category: String,
    /// The creation event (version 1), if kept.
    pub creation: Option<u32>,
    /// Kept events, in log order.
    pub events: Vec<u32>,
}

/// The loaded slice of the log.
pub struct LogView {
    pub(crate) events: Vec<Ev>,
    pub(crate) streams: Vec<StreamInfo>,
    stream_ix: HashMap<String, u32>,
    types: Vec<String>,
    /// Current schema version of each interned type (`None`: not a domain type).
    schema: Vec<Option<u16>>,
    type_ix: HashMap<String, u16>,
    pub(crate) by_type: Vec<Vec<u32>>,
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
    /// The bitemporal cut it was loaded under.
    as_of: Option<DateTime<Utc>>,
    known_at: Option<KnownAt>,
}

/// Most new records [`LogView::extended`] reads; a view further behind is loaded again.
pub const EXTEND_RECORDS_MAX: usize = 10_000;

/// What a replay keeps, derived from the requirements.
struct Selection<'a> {
    keep: Keep<'a>,
    wanted: BTreeSet<&'a str>,
    creation_categories: BTreeSet<&'a str>,
    req: &'a Requirements,
}

impl<'a> Selection<'a> {
    fn new(req: &'a Requirements, fields: &'a BTreeSet<String>) -> Self {
        let mut wanted: BTreeSet<&str> = req.types.iter().map(String::as_str).collect();
        wanted.extend(CORRECTION_TYPES);
        if req.attrs {
            wanted.insert(crm_domain::attributes::ATTRIBUTES_SET);
        }
        Selection {
            keep: Keep {
                all: fields.contains("*"),
                fields,
            },
            wanted,
            creation_categories: req
                .types
                .iter()
                .filter_map(|t| DomainEvent::category_of(t))
                .collect(),
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
            .field("events", &self.events.len())
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

struct Pruned<'a>(&'a Keep<'a>);

impl<'de> DeserializeSeed<'de> for Pruned<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Pruned<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if self.0.fields.contains(key.as_ref()) {
                out.insert(key.into_owned(), map.next_value::<Value>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Value::Object(out))
    }
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

fn decode(rec: &RecordedEvent, current: Option<u16>, keep: &Keep<'_>) -> Option<Value> {
    if keep.all || current.is_some_and(|c| rec.schema_version < c) {
        let v: Value = serde_json::from_slice(&rec.payload).ok()?;
        let v = match current {
            Some(c) if rec.schema_version < c => UpcasterRegistry::standard()
                .upcast(&rec.event_type, rec.schema_version, v)
                .ok()?,
            _ => v,
        };
        return Some(prune(v, keep));
    }
    let mut de = serde_json::Deserializer::from_slice(&rec.payload);
    Pruned(keep).deserialize(&mut de).ok()
}

fn category(stream: &str) -> &str {
    stream.split('-').next().unwrap_or(stream)
}

impl LogView {
    /// Replays the log once and keeps what `req` names.
    ///
    /// # Errors
    /// A read error, or more than [`VIEW_EVENTS_MAX`] kept events.
    pub(crate) async fn load<S: EventStore>(
        store: &S,
        req: &Requirements,
        as_of: Option<DateTime<Utc>>,
        known_at: Option<KnownAt>,
    ) -> Result<LogView, MetricError> {
        let fields = Selection::fields(req);
        let selection = Selection::new(req, &fields);
        let head = store.head();
        let mut view = LogView {
            events: Vec::new(),
            streams: Vec::new(),
            stream_ix: HashMap::new(),
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
            as_of,
            known_at,
        };
        // Pages are read (and their frames decoded) on another task while this one decodes
        // payloads: two cores, one pass.
        let (tx, mut rx) = mpsc::channel::<Result<Vec<RecordedEvent>, ReadError>>(PAGES_AHEAD);
        let reader_store = store.clone();
        let reader = tokio::spawn(async move {
            let mut next = Position::FIRST;
            while next <= head.position {
                let page = reader_store.read_all(next, READ_PAGE_MAX).await;
                let next_page = match &page {
                    Ok(p) => p.last().and_then(|r| r.position.next()),
                    Err(_) => None,
                };
                if tx.send(page).await.is_err() {
                    return;
                }
                match next_page {
                    Some(n) => next = n,
                    None => return,
                }
            }
        });
        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut last: Option<(Position, ChainHash, DateTime<Utc>)> = None;
        'pages: while let Some(page) = rx.recv().await {
            let page = page?;
            if page.is_empty() {
                break;
            }
            for rec in page {
                if rec.position > head.position {
                    break 'pages;
                }
                match known_at {
                    Some(KnownAt::Time(t)) if rec.recorded_at > t => break 'pages,
                    Some(KnownAt::Position(p)) if rec.position.0 > p => break 'pages,
                    _ => {}
                }
                last = Some((rec.position, rec.hash, rec.recorded_at));
                view.consider(&rec, &selection, &mut counts)?;
            }
        }
        drop(rx);
        reader.abort();
        view.type_counts = counts.into_iter().collect();
        if let Some((position, hash, recorded_at)) = last {
            view.mark.position = position.0;
            view.mark.chain_hash = hash.to_hex();
            view.mark.recorded_at = Some(recorded_at);
        }
        view.mark.events_kept = u64::try_from(view.events.len()).unwrap_or(u64::MAX);
        view.now = match (as_of, known_at) {
            (Some(a), Some(KnownAt::Time(k))) => a.min(k),
            (Some(a), _) => a,
            (None, Some(KnownAt::Time(k))) => k,
            _ => view.mark.recorded_at.unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
        };
        view.apply_global_rules();
        Ok(view)
    }

    /// Counts one record and keeps it if the selection names it (`as_of` applied).
    fn consider(
        &mut self,
        rec: &RecordedEvent,
        selection: &Selection<'_>,
        counts: &mut HashMap<String, u64>,
    ) -> Result<(), MetricError> {
        self.mark.events_scanned += 1;
        if self.as_of.is_some_and(|t| rec.occurred_at > t) {
            return Ok(());
        }
        match counts.get_mut(rec.event_type.as_str()) {
            Some(n) => *n += 1,
            None => {
                counts.insert(rec.event_type.clone(), 1);
            }
        }
        let cat = category(rec.stream_id.as_str());
        let kept = selection.wanted.contains(rec.event_type.as_str())
            || selection.req.ref_categories.contains(cat)
            || (rec.stream_version.0 == 1 && selection.creation_categories.contains(cat));
        if kept {
            let who = if selection.req.actor {
                rec.actor.clone()
            } else {
                String::new()
            };
            self.push(rec, &selection.keep, selection.req.meta, who)?;
        }
        Ok(())
    }

    /// This view brought to the store's head by reading only the records after its mark:
    /// the view a full replay would load. `None` when that cannot be done: a view under
    /// `as_of` or `known_at`, more than [`EXTEND_RECORDS_MAX`] new records, or a log that no
    /// longer holds the view's last record (replaced or restored).
    ///
    /// # Errors
    /// A read error, or more than [`VIEW_EVENTS_MAX`] kept events.
    pub async fn extended<S: EventStore>(&self, store: &S) -> Result<Option<LogView>, MetricError> {
        if self.as_of.is_some() || self.known_at.is_some() {
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
        let mut view = self.clone_view();
        let loaded = view.loaded.clone();
        let fields = Selection::fields(&loaded);
        let selection = Selection::new(&loaded, &fields);
        let mut counts: HashMap<String, u64> = view.type_counts.clone().into_iter().collect();
        let mut last = None;
        for rec in records.iter().filter(|r| r.position <= head.position) {
            last = Some((rec.position, rec.hash, rec.recorded_at));
            view.consider(rec, &selection, &mut counts)?;
        }
        view.type_counts = counts.into_iter().collect();
        if let Some((position, hash, recorded_at)) = last {
            view.mark.position = position.0;
            view.mark.chain_hash = hash.to_hex();
            view.mark.recorded_at = Some(recorded_at);
        }
        view.mark.events_kept = u64::try_from(view.events.len()).unwrap_or(u64::MAX);
        view.now = view.mark.recorded_at.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        view.apply_global_rules();
        Ok(Some(view))
    }

    fn clone_view(&self) -> LogView {
        LogView {
            events: self.events.clone(),
            streams: self.streams.clone(),
            stream_ix: self.stream_ix.clone(),
            types: self.types.clone(),
            schema: self.schema.clone(),
            type_ix: self.type_ix.clone(),
            by_type: self.by_type.clone(),
            type_counts: self.type_counts.clone(),
            mark: self.mark.clone(),
            now: self.now,
            undecodable: self.undecodable,
            loaded: self.loaded.clone(),
            as_of: self.as_of,
            known_at: self.known_at,
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

    fn push(
        &mut self,
        rec: &RecordedEvent,
        keep: &Keep<'_>,
        meta: bool,
        actor: String,
    ) -> Result<(), MetricError> {
        if self.events.len() >= VIEW_EVENTS_MAX {
            return Err(MetricError::Limit {
                what: "the events one evaluation keeps",
                limit: VIEW_EVENTS_MAX,
                hint: "narrow the metric's event types or evaluate against a read model",
            });
        }
        let idx = u32::try_from(self.events.len()).map_err(|_| MetricError::Limit {
            what: "the events one evaluation keeps",
            limit: VIEW_EVENTS_MAX,
            hint: "narrow the metric's event types",
        })?;
        let stream = match self.stream_ix.get(rec.stream_id.as_str()) {
            Some(s) => *s,
            None => {
                let s = u32::try_from(self.streams.len()).unwrap_or(u32::MAX);
                self.streams.push(StreamInfo {
                    name: rec.stream_id.as_str().to_owned(),
                    category: category(rec.stream_id.as_str()).to_owned(),
                    creation: None,
                    events: Vec::new(),
                });
                self.stream_ix.insert(rec.stream_id.as_str().to_owned(), s);
                s
            }
        };
        let ty = self.intern(&rec.event_type);
        let current = self.schema.get(usize::from(ty)).copied().flatten();
        let payload = match decode(rec, current, keep) {
            Some(v) => v,
            None => {
                self.undecodable += 1;
                Value::Null
            }
        };
        let meta = if meta {
            serde_json::from_slice(&rec.metadata).unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        self.events.push(Ev {
            position: rec.position.0,
            stream,
            version: rec.stream_version.0,
            ty,
            event_id: rec.event_id.0,
            occurred_at: rec.occurred_at,
            recorded_at: rec.recorded_at,
            actor,
            payload,
            meta,
            global: None,
        });
        if let Some(info) = self
            .streams
            .get_mut(usize::try_from(stream).unwrap_or(usize::MAX))
        {
            if rec.stream_version.0 == 1 {
                info.creation = Some(idx);
            }
            info.events.push(idx);
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

    fn apply_global_rules(&mut self) {
        let mut marks: Vec<(u32, &'static str)> = Vec::new();
        for (s, info) in self.streams.iter().enumerate() {
            let s = u32::try_from(s).unwrap_or(u32::MAX);
            let test_by_creation = info
                .creation
                .and_then(|c| self.ev(c))
                .is_some_and(|e| e.payload.get("is_test") == Some(&Value::Bool(true)));
            let flagged = info
                .events
                .iter()
                .any(|i| self.type_name_of(*i) == Some("RecordFlaggedTest"));
            if test_by_creation || flagged {
                marks.extend(info.events.iter().map(|i| (*i, "TEST")));
                continue;
            }
            let merged = info
                .events
                .iter()
                .any(|i| self.type_name_of(*i) == Some("RecordMerged"));
            if let (true, Some(c)) = (merged, info.creation) {
                marks.push((c, "DUPLICATE"));
            }
            let _ = s;
        }
        let retracted: BTreeSet<Uuid> = self
            .of_type("EventRetracted")
            .iter()
            .filter_map(|i| self.ev(*i))
            .filter_map(|e| e.payload.get("event_id")?.as_str()?.parse().ok())
            .collect();
        if !retracted.is_empty() {
            for (i, e) in self.events.iter().enumerate() {
                if retracted.contains(&e.event_id) {
                    marks.push((u32::try_from(i).unwrap_or(u32::MAX), "RETRACTED"));
                }
            }
        }
        for (i, code) in marks {
            if let Some(e) = self
                .events
                .get_mut(usize::try_from(i).unwrap_or(usize::MAX))
            {
                e.global.get_or_insert(code);
            }
        }
    }

    pub(crate) fn ev(&self, i: u32) -> Option<&Ev> {
        self.events.get(usize::try_from(i).ok()?)
    }

    pub(crate) fn stream(&self, s: u32) -> Option<&StreamInfo> {
        self.streams.get(usize::try_from(s).ok()?)
    }

    pub(crate) fn stream_named(&self, name: &str) -> Option<u32> {
        self.stream_ix.get(name).copied()
    }

    pub(crate) fn type_name(&self, ty: u16) -> &str {
        self.types.get(usize::from(ty)).map_or("", String::as_str)
    }

    pub(crate) fn type_name_of(&self, i: u32) -> Option<&str> {
        self.ev(i).map(|e| self.type_name(e.ty))
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
