//! Builders for events and helpers that read and check whole logs, shared by
//! the conformance suite, the property tests and the golden-file tests.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use crm_eventstore::limits::READ_PAGE_MAX;
use crm_eventstore::{
    ChainHash, EventId, EventStore, Head, Position, ProposedEvent, RecordedEvent, StreamId,
    StreamVersion,
};
use uuid::Uuid;

/// How long a test waits for something that should happen promptly (a
/// subscription catching up, concurrent appenders finishing) before it fails
/// instead of hanging. Not a performance bound: only a hang turns into a failure.
pub const HANG_GUARD: Duration = Duration::from_secs(120);

/// Base of the deterministic event ids (a UUID v7 shape), so `event_id(0)` is not nil.
const ID_BASE: u128 = 0x0190_0000_0000_7000_8000_0000_0000_0000;

/// A valid stream id.
pub fn stream(name: &str) -> StreamId {
    StreamId::new(name).expect("valid stream id")
}

/// A deterministic, non-nil event id.
pub fn event_id(n: u128) -> EventId {
    EventId(Uuid::from_u128(ID_BASE + n))
}

/// A small valid event whose id and payload are derived from `n`.
pub fn event(n: u128) -> ProposedEvent {
    ProposedEvent {
        event_id: event_id(n),
        event_type: "CaseOpened".into(),
        schema_version: 1,
        occurred_at: DateTime::from_timestamp(1_700_000_000, 0).expect("valid timestamp"),
        causation_id: None,
        correlation_id: None,
        actor: "conformance".into(),
        metadata: Vec::new(),
        payload: format!("{{\"n\":{n}}}").into_bytes(),
    }
}

/// Events `event(n)` for every `n` in `range`.
pub fn events(range: std::ops::Range<u128>) -> Vec<ProposedEvent> {
    range.map(event).collect()
}

/// Awaits `f`, failing the test if it does not finish within [`HANG_GUARD`].
pub async fn no_hang<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(HANG_GUARD, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what} did not finish within {HANG_GUARD:?}: it hangs"),
    }
}

/// Every record of the log, in position order, read page by page.
pub async fn read_everything<S: EventStore>(store: &S) -> Vec<RecordedEvent> {
    let mut out: Vec<RecordedEvent> = Vec::new();
    loop {
        let from = Position(out.len() as u64 + 1);
        let page = store.read_all(from, READ_PAGE_MAX).await.expect("read_all");
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// Every record of one stream, in version order, read page by page.
pub async fn read_whole_stream<S: EventStore>(store: &S, s: &StreamId) -> Vec<RecordedEvent> {
    let mut out: Vec<RecordedEvent> = Vec::new();
    loop {
        let from = StreamVersion(out.len() as u64 + 1);
        let page = store
            .read_stream(s, from, READ_PAGE_MAX)
            .await
            .expect("read_stream");
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// Everything observable about a store, to show that a refused append wrote nothing.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub head: Head,
    pub log: Vec<RecordedEvent>,
    pub versions: Vec<(StreamId, StreamVersion, Vec<RecordedEvent>)>,
}

/// The head, the whole log and the given streams (version and content).
pub async fn snapshot<S: EventStore>(store: &S, streams: &[&StreamId]) -> Snapshot {
    let mut versions = Vec::new();
    for s in streams {
        let v = store.stream_version(s).await.expect("stream_version");
        versions.push(((*s).clone(), v, read_whole_stream(store, s).await));
    }
    Snapshot {
        head: store.head(),
        log: read_everything(store).await,
        versions,
    }
}

/// A recorded event without the fields that depend on when it was recorded
/// (`recorded_at`, and through it `checksum`, `prev_hash` and `hash`): what two
/// backends given the same appends must agree on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub position: Position,
    pub stream_id: StreamId,
    pub stream_version: StreamVersion,
    pub event: ProposedEvent,
}

impl From<&RecordedEvent> for Entry {
    fn from(r: &RecordedEvent) -> Self {
        Entry {
            position: r.position,
            stream_id: r.stream_id.clone(),
            stream_version: r.stream_version,
            event: proposal_of(r),
        }
    }
}

/// The proposal a recorded event was made from.
pub fn proposal_of(r: &RecordedEvent) -> ProposedEvent {
    ProposedEvent {
        event_id: r.event_id,
        event_type: r.event_type.clone(),
        schema_version: r.schema_version,
        occurred_at: r.occurred_at,
        causation_id: r.causation_id,
        correlation_id: r.correlation_id,
        actor: r.actor.clone(),
        metadata: r.metadata.clone(),
        payload: r.payload.clone(),
    }
}

/// Asserts that `recorded` holds exactly the caller-supplied fields of `proposed`.
pub fn assert_same_event(recorded: &RecordedEvent, proposed: &ProposedEvent) {
    assert_eq!(
        &proposal_of(recorded),
        proposed,
        "record at position {} does not hold the proposed event",
        recorded.position
    );
    assert!(proposed.same_content(recorded));
}

/// Checks the invariants of a whole log read from a store whose head is
/// `head`: dense positions from 1, hash chain from genesis, `recorded_at`
/// never decreasing, per-stream versions 1..n without gap, unique event ids,
/// and the head naming the last record.
pub fn assert_log_invariants(log: &[RecordedEvent], head: Head) {
    let mut prev_hash = ChainHash::GENESIS;
    let mut prev_recorded_at: Option<DateTime<Utc>> = None;
    let mut versions: HashMap<&StreamId, u64> = HashMap::new();
    let mut ids: HashMap<EventId, Position> = HashMap::new();
    for (i, rec) in log.iter().enumerate() {
        assert_eq!(
            rec.position,
            Position(i as u64 + 1),
            "positions are not dense"
        );
        assert_eq!(
            rec.prev_hash, prev_hash,
            "record {} does not link to its predecessor",
            rec.position
        );
        assert_eq!(
            crm_eventstore::codec::recompute_hash(rec).expect("recompute hash"),
            rec.hash,
            "record {} hash does not match its content",
            rec.position
        );
        prev_hash = rec.hash;
        if let Some(p) = prev_recorded_at {
            assert!(
                rec.recorded_at >= p,
                "recorded_at decreases at position {}",
                rec.position
            );
        }
        prev_recorded_at = Some(rec.recorded_at);
        let v = versions.entry(&rec.stream_id).or_insert(0);
        *v += 1;
        assert_eq!(
            rec.stream_version,
            StreamVersion(*v),
            "stream `{}` versions are not contiguous at position {}",
            rec.stream_id,
            rec.position
        );
        if let Some(other) = ids.insert(rec.event_id, rec.position) {
            panic!(
                "event id {} is recorded twice, at {other} and {}",
                rec.event_id, rec.position
            );
        }
    }
    let expected_head = log.last().map(RecordedEvent::as_head).unwrap_or_default();
    assert_eq!(
        head, expected_head,
        "the head does not name the last record"
    );
}
