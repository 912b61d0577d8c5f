//! What one process knows of the JetStream log: the head, every event id and
//! every stream's positions, kept in memory and advanced record by record.
//!
//! **Architecture Invariant:** the index only ever advances by the record at
//! `head + 1` whose `prev_hash` is the head's hash and whose stream version is
//! the stream's next; a record that breaks the chain is refused, never indexed.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::error::Corruption;
use crate::types::{EventId, Head, Position, RecordedEvent, StreamId, StreamVersion};

/// The in-memory index of the log up to its head.
#[derive(Default)]
pub(super) struct Index {
    head: Head,
    last_recorded_at: Option<DateTime<Utc>>,
    ids: HashMap<EventId, Position>,
    streams: HashMap<StreamId, Vec<Position>>,
}

impl Index {
    pub(super) fn head(&self) -> Head {
        self.head
    }

    pub(super) fn last_recorded_at(&self) -> Option<DateTime<Utc>> {
        self.last_recorded_at
    }

    /// Adds `rec` if it is the record right after the head. Returns `Ok(false)`
    /// for a record at or before the head (already indexed), an error for a
    /// gap or a record that does not continue the chain.
    pub(super) fn apply(&mut self, rec: &RecordedEvent) -> Result<bool, Corruption> {
        if rec.position <= self.head.position {
            return Ok(false);
        }
        if self.head.position.next() != Some(rec.position) {
            return Err(Corruption::Gap {
                position: rec.position,
                head: self.head.position,
            });
        }
        if rec.prev_hash != self.head.hash {
            return Err(Corruption::ChainBroken {
                position: rec.position,
                links_to: rec.prev_hash,
                previous: self.head.hash,
            });
        }
        let count = self.streams.get(&rec.stream_id).map_or(0, Vec::len);
        let version = u64::try_from(count).unwrap_or(u64::MAX);
        if rec.stream_version != StreamVersion(version.saturating_add(1)) {
            return Err(Corruption::VersionOutOfOrder {
                position: rec.position,
                version: rec.stream_version,
                stream: rec.stream_id.clone(),
                stream_version: StreamVersion(version),
            });
        }
        if let Some(&first) = self.ids.get(&rec.event_id) {
            return Err(Corruption::RepeatedEventId {
                position: rec.position,
                event_id: rec.event_id,
                first,
            });
        }
        self.ids.insert(rec.event_id, rec.position);
        self.streams
            .entry(rec.stream_id.clone())
            .or_default()
            .push(rec.position);
        self.head = rec.as_head();
        self.last_recorded_at = Some(
            self.last_recorded_at
                .map_or(rec.recorded_at, |t| t.max(rec.recorded_at)),
        );
        Ok(true)
    }

    pub(super) fn position_of(&self, id: &EventId) -> Option<Position> {
        self.ids.get(id).copied()
    }

    pub(super) fn stream_version(&self, stream: &StreamId) -> StreamVersion {
        let count = self.streams.get(stream).map_or(0, Vec::len);
        StreamVersion(u64::try_from(count).unwrap_or(u64::MAX))
    }

    /// The position of the stream's newest event (0 for a stream without events).
    pub(super) fn stream_last_position(&self, stream: &StreamId) -> Position {
        self.streams
            .get(stream)
            .and_then(|p| p.last().copied())
            .unwrap_or(Position::ZERO)
    }

    /// Positions of up to `max` events of `stream` from version `from` (0 and 1: the start).
    pub(super) fn stream_positions(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max: usize,
    ) -> Vec<Position> {
        let skip = usize::try_from(from.0.saturating_sub(1)).unwrap_or(usize::MAX);
        self.streams
            .get(stream)
            .map(|p| p.iter().skip(skip).take(max).copied().collect())
            .unwrap_or_default()
    }
}
