//! The single writer thread of the sled backend: group commit.
//!
//! **Architecture Invariant:** the writer is the only thread that writes the
//! `log` tree. It takes every append request queued (up to the group limits),
//! validates them in arrival order against the committed log and what the
//! group staged before them, writes the group's chunks and index entries as
//! one atomic sled batch, flushes and `fdatasync`s once, and only then
//! publishes the new durable head and answers the requests.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use super::layout::{self, chunk_key, id_key, stream_entry, stream_key, CHUNK_SIZE_MAX_BYTES};
use super::Inner;
use crate::codec::{self, Placement};
use crate::error::{AppendError, Corruption, ReadError};
use crate::limits::{GROUP_COMMIT_EVENTS_MAX, GROUP_COMMIT_REQUESTS_MAX, STREAM_CACHE_ENTRIES_MAX};
use crate::store::idempotent_outcome;
use crate::types::{
    AppendResult, EventId, ExpectedVersion, Head, Position, ProposedEvent, RecordedAt,
    RecordedEvent, StreamAppend, StreamId, StreamVersion,
};

pub(super) type Reply = oneshot::Sender<Result<AppendResult, AppendError>>;
pub(super) type BatchReply =
    oneshot::Sender<Result<Vec<Result<AppendResult, AppendError>>, AppendError>>;

pub(super) enum Request {
    Append {
        stream: StreamId,
        expected: ExpectedVersion,
        events: Vec<ProposedEvent>,
        reply: Reply,
    },
    /// Several streams' appends, staged in order one after the other.
    Batch {
        parts: Vec<StreamAppend>,
        recorded_at: RecordedAt,
        reply: BatchReply,
    },
    Close {
        done: oneshot::Sender<()>,
    },
}

/// Where an append's results go.
enum Answer {
    One(Reply),
    Batch(BatchReply),
}

impl Answer {
    fn send(self, results: Vec<Result<AppendResult, AppendError>>) {
        match self {
            Answer::One(reply) => {
                let result = results
                    .into_iter()
                    .next()
                    .unwrap_or(Err(AppendError::Empty));
                let _ = reply.send(result);
            }
            Answer::Batch(reply) => {
                let _ = reply.send(Ok(results));
            }
        }
    }

    fn fail(self, err: &AppendError) {
        match self {
            Answer::One(reply) => {
                let _ = reply.send(Err(err.clone()));
            }
            Answer::Batch(reply) => {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

/// One request's appends: a lone append is a batch of one part.
struct Append {
    parts: Vec<StreamAppend>,
    recorded_at: RecordedAt,
    answer: Answer,
}

/// Why a group could not be made durable; the store refuses writes after it.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("sled batch write failed: {0}")]
    Batch(sled::Error),
    #[error("sled flush failed: {0}")]
    Flush(sled::Error),
    #[error("fdatasync of sled's log file failed: {0}")]
    Sync(std::io::Error),
}

/// Where a staged frame sits: chunk index, byte range.
type Slot = (usize, std::ops::Range<usize>);

/// What a group has staged but not yet committed.
struct Group {
    batch: sled::Batch,
    /// Chunks of the group: first position and concatenated frames.
    chunks: Vec<(Position, Vec<u8>)>,
    /// One slot per staged position, in order from `first`.
    slots: Vec<Slot>,
    first: Position,
    head: Head,
    ids: HashMap<EventId, Position>,
    versions: HashMap<StreamId, StreamVersion>,
    /// The `recorded_at` of the newest record staged (or committed, before the first).
    recorded_at: Option<DateTime<Utc>>,
}

impl Group {
    fn push_frame(&mut self, position: Position, frame: &[u8]) {
        let fits = self
            .chunks
            .last()
            .is_some_and(|(_, c)| c.len() + frame.len() <= CHUNK_SIZE_MAX_BYTES);
        if !fits {
            self.chunks.push((
                position,
                Vec::with_capacity(CHUNK_SIZE_MAX_BYTES.min(frame.len() * 64)),
            ));
        }
        let index = self.chunks.len() - 1;
        let chunk = &mut self.chunks[index].1;
        let start = chunk.len();
        chunk.extend_from_slice(frame);
        self.slots.push((index, start..chunk.len()));
    }

    fn staged(&self, position: Position) -> Result<RecordedEvent, ReadError> {
        let missing = || ReadError::Corrupt {
            position,
            reason: Corruption::StagedMissing,
        };
        let index = usize::try_from(position.0 - self.first.0).map_err(|_| missing())?;
        let (chunk, range) = self.slots.get(index).ok_or_else(missing)?;
        let bytes = self
            .chunks
            .get(*chunk)
            .and_then(|(_, c)| c.get(range.clone()))
            .ok_or_else(missing)?;
        codec::decode(bytes, Some(position), false).map_err(|e| ReadError::Corrupt {
            position,
            reason: e.into(),
        })
    }
}

/// The single writer: owns the committed head and a cache of stream versions.
pub(super) struct Writer {
    pub(super) inner: Arc<Inner>,
    pub(super) head: Head,
    pub(super) last_recorded_at: Option<DateTime<Utc>>,
    pub(super) versions: HashMap<StreamId, StreamVersion>,
}

impl Writer {
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut close_ack = None;
        while let Some(first) = rx.blocking_recv() {
            let mut appends = Vec::new();
            let mut events = 0usize;
            let mut next = Some(first);
            while let Some(req) = next.take() {
                match req {
                    Request::Append {
                        stream,
                        expected,
                        events: evs,
                        reply,
                    } => {
                        events += evs.len();
                        appends.push(Append {
                            parts: vec![StreamAppend {
                                stream,
                                expected,
                                events: evs,
                            }],
                            recorded_at: RecordedAt::Now,
                            answer: Answer::One(reply),
                        });
                    }
                    Request::Batch {
                        parts,
                        recorded_at,
                        reply,
                    } => {
                        events += parts.iter().map(|p| p.events.len()).sum::<usize>();
                        appends.push(Append {
                            parts,
                            recorded_at,
                            answer: Answer::Batch(reply),
                        });
                    }
                    Request::Close { done } => {
                        close_ack = Some(done);
                        break;
                    }
                }
                if appends.len() < GROUP_COMMIT_REQUESTS_MAX && events < GROUP_COMMIT_EVENTS_MAX {
                    next = rx.try_recv().ok();
                }
            }
            self.commit_group(appends);
            if close_ack.is_some() {
                break;
            }
        }
        rx.close();
        // Answer whatever raced with the close.
        while let Ok(req) = rx.try_recv() {
            match req {
                Request::Append { reply, .. } => {
                    let _ = reply.send(Err(AppendError::Closed));
                }
                Request::Batch { reply, .. } => {
                    let _ = reply.send(Err(AppendError::Closed));
                }
                Request::Close { .. } => {}
            }
        }
        drop(self);
        if let Some(done) = close_ack {
            let _ = done.send(());
        }
    }

    fn commit_group(&mut self, appends: Vec<Append>) {
        if appends.is_empty() {
            return;
        }
        if let Some(reason) = self.inner.failure() {
            let err = AppendError::StorageFailed(reason);
            for a in appends {
                a.answer.fail(&err);
            }
            return;
        }
        let now = Utc::now();
        let mut group = Group {
            batch: sled::Batch::default(),
            chunks: Vec::new(),
            slots: Vec::new(),
            first: self.head.position.next().unwrap_or(self.head.position),
            head: self.head,
            ids: HashMap::new(),
            versions: HashMap::new(),
            recorded_at: self.last_recorded_at,
        };
        let mut answers = Vec::with_capacity(appends.len());
        for a in appends {
            let at = a.recorded_at.resolve(group.recorded_at, now);
            let staged_before = group.slots.len();
            let results: Vec<_> = a
                .parts
                .iter()
                .map(|p| self.stage(&mut group, &p.stream, p.expected, &p.events, at))
                .collect();
            if group.slots.len() > staged_before {
                group.recorded_at = Some(at);
            }
            answers.push((a.answer, results));
        }
        if !group.slots.is_empty() {
            let mut batch = std::mem::take(&mut group.batch);
            for (first, chunk) in &group.chunks {
                batch.insert(&chunk_key(*first), chunk.as_slice());
            }
            if let Err(e) = self.write_durably(batch) {
                let reason = e.to_string();
                self.inner.fail(reason.clone());
                let committed = self.head.position;
                for (answer, results) in answers {
                    // Only a retry of events committed before this group is
                    // still true; nothing staged in the group is known durable.
                    let results = results
                        .into_iter()
                        .map(|result| match result {
                            Ok(r) if !r.already_present || r.last_position > committed => {
                                Err(AppendError::StorageFailed(reason.clone()))
                            }
                            other => other,
                        })
                        .collect();
                    answer.send(results);
                }
                return;
            }
            if self.versions.len() + group.versions.len() > STREAM_CACHE_ENTRIES_MAX {
                self.versions.clear();
            }
            self.versions.extend(group.versions);
            self.head = group.head;
            self.last_recorded_at = group.recorded_at;
            self.inner
                .durable
                .store(self.head.position.0, Ordering::Release);
            self.inner.head.send_replace(self.head);
        }
        for (answer, results) in answers {
            answer.send(results);
        }
    }

    /// Applies the batch atomically, then makes it durable: sled's flush, then
    /// `fdatasync` of sled's log file (see the module notes on sled's flush).
    fn write_durably(&self, batch: sled::Batch) -> Result<(), WriteError> {
        self.inner
            .tree
            .apply_batch(batch)
            .map_err(WriteError::Batch)?;
        self.inner.db.flush().map_err(WriteError::Flush)?;
        self.inner.log_file.sync_data().map_err(WriteError::Sync)
    }

    /// The recorded event with this id, whether committed or staged in `group`.
    fn lookup(&self, group: &Group, id: &EventId) -> Result<Option<RecordedEvent>, ReadError> {
        if let Some(&position) = group.ids.get(id) {
            return group.staged(position).map(Some);
        }
        match layout::id_position(&self.inner.tree, id)? {
            None => Ok(None),
            Some(position) => layout::read_one(&self.inner.tree, position, self.head.position)?
                .map(Some)
                .ok_or(ReadError::Corrupt {
                    position,
                    reason: Corruption::DanglingIdEntry { event_id: *id },
                }),
        }
    }

    fn version_of(&mut self, group: &Group, stream: &StreamId) -> Result<StreamVersion, ReadError> {
        if let Some(v) = group
            .versions
            .get(stream)
            .or_else(|| self.versions.get(stream))
        {
            return Ok(*v);
        }
        let v = layout::stream_version(&self.inner.tree, stream, self.head.position)?;
        self.versions.insert(stream.clone(), v);
        Ok(v)
    }

    /// Validates one append against the committed log and what the group
    /// staged before it; on success stages its records. On error nothing of
    /// it is staged.
    fn stage(
        &mut self,
        group: &mut Group,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[ProposedEvent],
        recorded_at: DateTime<Utc>,
    ) -> Result<AppendResult, AppendError> {
        let mut existing = Vec::with_capacity(events.len());
        for e in events {
            existing.push(self.lookup(group, &e.event_id)?);
        }
        if existing.iter().any(Option::is_some) {
            return idempotent_outcome(stream, events, &existing);
        }
        let actual = self.version_of(group, stream)?;
        if !expected.admits(actual) {
            return Err(AppendError::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual,
            });
        }
        let count = u32::try_from(events.len()).map_err(|_| AppendError::TooManyEvents {
            count: events.len(),
            max: crate::limits::APPEND_EVENTS_MAX,
        })?;
        // Encode everything first, so a failure stages nothing.
        let mut frames = Vec::with_capacity(events.len());
        let mut head = group.head;
        let mut version = actual;
        for e in events {
            let position = head
                .position
                .next()
                .ok_or(AppendError::LogFull(head.position))?;
            version = StreamVersion(version.0 + 1);
            let place = Placement {
                position,
                stream_id: stream,
                stream_version: version,
                recorded_at,
                prev_hash: head.hash,
            };
            let (frame, hash) = codec::encode_frame(e, &place)?;
            frames.push(frame);
            head = Head { position, hash };
        }
        let first_position = group.head.position.next().unwrap_or(head.position);
        let mut position = first_position;
        for (e, frame) in events.iter().zip(&frames) {
            group.push_frame(position, frame);
            group
                .batch
                .insert(&id_key(&e.event_id), &position.0.to_be_bytes());
            group.ids.insert(e.event_id, position);
            position = Position(position.0 + 1);
        }
        let first_version = StreamVersion(actual.0 + 1);
        group.batch.insert(
            stream_key(stream, first_version),
            &stream_entry(first_position, count),
        );
        group.versions.insert(stream.clone(), version);
        group.head = head;
        Ok(AppendResult {
            first_position,
            last_position: head.position,
            stream_version: version,
            already_present: false,
        })
    }
}
