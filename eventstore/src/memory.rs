//! The in-memory model: the simplest correct implementation of [`EventStore`],
//! the reference other backends are compared with in property tests. It keeps
//! nothing across restarts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::codec::{self, Placement};
use crate::error::{AppendError, ReadError};
use crate::store::{check_append, check_batch, idempotent_outcome, page_size, EventStore};
use crate::types::{
    AppendResult, EventId, ExpectedVersion, Head, Position, ProposedEvent, RecordedAt,
    RecordedEvent, StreamAppend, StreamId, StreamVersion,
};

#[derive(Default)]
struct State {
    events: Vec<RecordedEvent>,
    streams: HashMap<StreamId, Vec<usize>>,
    ids: HashMap<EventId, usize>,
    last_recorded_at: Option<DateTime<Utc>>,
}

/// An [`EventStore`] held in memory.
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    head: Arc<watch::Sender<Head>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        let (tx, _rx) = watch::channel(Head::default());
        MemoryStore {
            state: Arc::new(Mutex::new(State::default())),
            head: Arc::new(tx),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-written:
        // appends build every record before pushing any.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn append_sync(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<ProposedEvent>,
    ) -> Result<AppendResult, AppendError> {
        let mut st = self.lock();
        let result = Self::append_locked(&mut st, stream, expected, events, RecordedAt::Now);
        // Publish while still holding the lock, so heads are published in order.
        self.publish(&st);
        drop(st);
        result
    }

    fn publish(&self, st: &State) {
        let head = st
            .events
            .last()
            .map_or(Head::default(), RecordedEvent::as_head);
        if *self.head.borrow() != head {
            self.head.send_replace(head);
        }
    }

    fn append_locked(
        st: &mut State,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<ProposedEvent>,
        recorded_at: RecordedAt,
    ) -> Result<AppendResult, AppendError> {
        check_append(&events)?;
        let existing: Vec<Option<RecordedEvent>> = events
            .iter()
            .map(|e| st.ids.get(&e.event_id).map(|&i| st.events[i].clone()))
            .collect();
        if existing.iter().any(Option::is_some) {
            return idempotent_outcome(stream, &events, &existing);
        }
        let actual = StreamVersion(
            u64::try_from(st.streams.get(stream).map_or(0, Vec::len)).unwrap_or(u64::MAX),
        );
        if !expected.admits(actual) {
            return Err(AppendError::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual,
            });
        }
        let recorded_at = recorded_at.resolve(st.last_recorded_at, Utc::now());
        let mut prev_hash = st.events.last().map(|e| e.hash).unwrap_or_default();
        let mut position = Position(u64::try_from(st.events.len()).unwrap_or(u64::MAX));
        let mut version = actual;
        let mut records = Vec::with_capacity(events.len());
        for e in &events {
            position = position.next().ok_or(AppendError::LogFull(position))?;
            version = StreamVersion(version.0 + 1);
            let place = Placement {
                position,
                stream_id: stream,
                stream_version: version,
                recorded_at,
                prev_hash,
            };
            let (_, rec) = codec::encode(e, &place)?;
            prev_hash = rec.hash;
            records.push(rec);
        }
        let first_position = records.first().map(|r| r.position).unwrap_or_default();
        for rec in records {
            let index = st.events.len();
            st.ids.insert(rec.event_id, index);
            st.streams.entry(stream.clone()).or_default().push(index);
            st.events.push(rec);
        }
        st.last_recorded_at = Some(recorded_at);
        Ok(AppendResult {
            first_position,
            last_position: position,
            stream_version: version,
            already_present: false,
        })
    }
}

impl EventStore for MemoryStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<ProposedEvent>,
    ) -> Result<AppendResult, AppendError> {
        self.append_sync(stream, expected, events)
    }

    async fn append_batch(
        &self,
        parts: Vec<StreamAppend>,
        recorded_at: RecordedAt,
    ) -> Result<Vec<Result<AppendResult, AppendError>>, AppendError> {
        check_batch(&parts, recorded_at, Utc::now())?;
        let mut st = self.lock();
        let results = parts
            .into_iter()
            .map(|p| Self::append_locked(&mut st, &p.stream, p.expected, p.events, recorded_at))
            .collect();
        self.publish(&st);
        drop(st);
        Ok(results)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let st = self.lock();
        let skip = usize::try_from(from.0.saturating_sub(1)).unwrap_or(usize::MAX);
        Ok(st
            .streams
            .get(stream)
            .map(|idx| {
                idx.iter()
                    .skip(skip)
                    .take(page_size(max))
                    .map(|&i| st.events[i].clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn read_all(&self, from: Position, max: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        let st = self.lock();
        let skip = usize::try_from(from.0.saturating_sub(1)).unwrap_or(usize::MAX);
        Ok(st
            .events
            .iter()
            .skip(skip)
            .take(page_size(max))
            .cloned()
            .collect())
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<StreamVersion, ReadError> {
        let st = self.lock();
        let n = st.streams.get(stream).map_or(0, Vec::len);
        Ok(StreamVersion(u64::try_from(n).unwrap_or(u64::MAX)))
    }

    fn head(&self) -> Head {
        *self.head.borrow()
    }

    fn watch_head(&self) -> watch::Receiver<Head> {
        self.head.subscribe()
    }
}
