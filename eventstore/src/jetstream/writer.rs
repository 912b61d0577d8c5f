//! The single writer of a [`super::JetStreamStore`]: group commit over JetStream.
//!
//! **Architecture Invariant:** one task per process publishes. It takes every
//! queued append (up to one atomic batch: [`BATCH_MESSAGES_MAX`] messages,
//! [`GROUP_BYTES_MAX`] bytes), validates them in arrival order against the
//! index and what the group staged before them, encodes their frames at the
//! positions after the head, and publishes the group as one atomic batch
//! whose first message carries `Nats-Expected-Last-Sequence: <head>`. Only
//! after JetStream acknowledged the batch (stored, and with
//! `sync_interval: always` synced, on a quorum of replicas) does it advance
//! the index and the head and answer the callers. If another process
//! appended first, JetStream refuses the batch (nothing of it is stored); the
//! writer then catches the index up, pauses a random moment (so two
//! processes do not retry in lockstep) and stages the group again, until
//! `append_timeout`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::Utc;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, Instant};
use tracing::{debug, warn};

use super::nats::{OutMessage, PubError};
use super::Shared;
use crate::codec::{self, Placement};
use crate::error::AppendError;
use crate::store::idempotent_outcome;
use crate::types::{
    AppendResult, EventId, ExpectedVersion, Head, Position, ProposedEvent, RecordedAt,
    RecordedEvent, StreamId, StreamVersion,
};

/// Most messages in one atomic batch (the server's limit, ADR-50).
pub const BATCH_MESSAGES_MAX: usize = 1_000;
/// Most frame bytes one group publishes (an append alone may reach its own limit).
pub const GROUP_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Most append requests in one group.
pub const GROUP_REQUESTS_MAX: usize = 1_000;
/// Longest random pause, in ms, after another writer got in first (doubles per try up to it).
const FENCE_PAUSE_MAX_MS: u64 = 64;
/// Pause between tries while JetStream is unavailable (grows to 10x).
const UNAVAILABLE_PAUSE_MS: u64 = 50;

pub(super) type Reply = oneshot::Sender<Result<AppendResult, AppendError>>;

pub(super) struct Request {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<ProposedEvent>,
    pub recorded_at: RecordedAt,
    pub reply: Reply,
}

impl Request {
    fn size_bytes(&self) -> usize {
        self.events
            .iter()
            .map(|e| e.size_bytes() + codec::FRAME_OVERHEAD_BYTES)
            .sum()
    }
}

/// A group validated and encoded against one head.
struct Staged {
    base: Head,
    results: Vec<Result<AppendResult, AppendError>>,
    messages: Vec<OutMessage>,
    records: Vec<RecordedEvent>,
}

pub(super) async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Request>) {
    let mut carry: Option<Request> = None;
    loop {
        let first = match carry.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        let mut events = first.events.len();
        let mut bytes = first.size_bytes();
        let mut group = vec![first];
        while group.len() < GROUP_REQUESTS_MAX {
            let Ok(next) = rx.try_recv() else { break };
            let (n, b) = (next.events.len(), next.size_bytes());
            if events + n > BATCH_MESSAGES_MAX || bytes + b > GROUP_BYTES_MAX {
                carry = Some(next);
                break;
            }
            events += n;
            bytes += b;
            group.push(next);
        }
        commit(&shared, group).await;
    }
}

/// A random pause in `0..min(2^tries, FENCE_PAUSE_MAX_MS)` ms.
fn jitter(tries: u32) -> Duration {
    let ceiling = 1u64
        .checked_shl(tries.min(16))
        .unwrap_or(FENCE_PAUSE_MAX_MS)
        .min(FENCE_PAUSE_MAX_MS);
    // UUID v7 ends in 62 random bits.
    let random = uuid::Uuid::now_v7().as_u128() % u128::from(ceiling * 1000);
    Duration::from_micros(u64::try_from(random).unwrap_or(0))
}

fn answer_all(group: Vec<Request>, err: &AppendError) {
    for r in group {
        let _ = r.reply.send(Err(err.clone()));
    }
}

async fn commit(shared: &Shared, group: Vec<Request>) {
    let deadline = Instant::now() + shared.config.append_timeout;
    let mut fenced = 0u32;
    let mut pauses = 0u64;
    let mut tried: HashMap<EventId, Position> = HashMap::new();
    loop {
        if let Some(reason) = shared.failure() {
            answer_all(group, &AppendError::StorageFailed(reason));
            return;
        }
        let staged = match stage(shared, &group, &tried).await {
            Ok(s) => s,
            Err(e) => {
                answer_all(group, &e);
                return;
            }
        };
        let Some(last) = staged.records.last().map(|r| r.position) else {
            for (r, result) in group.into_iter().zip(staged.results) {
                let _ = r.reply.send(result);
            }
            return;
        };
        tried = staged
            .records
            .iter()
            .map(|r| (r.event_id, r.position))
            .collect();
        shared.in_flight.store(last.0, Ordering::Release);
        let published = shared.nats.publish(staged.messages).await;
        shared.in_flight.store(0, Ordering::Release);
        let failure = match published {
            Ok(seq) if seq == last.0 => {
                if let Err(reason) = shared.apply(&staged.records) {
                    shared.fail(reason.to_string());
                }
                for (r, result) in group.into_iter().zip(staged.results) {
                    let _ = r.reply.send(result);
                }
                return;
            }
            Ok(seq) => {
                let reason = format!(
                    "JetStream stored an append at sequence {seq}, the writer expected {last}: the stream is not fenced as it should be; check that nothing else publishes to its subjects"
                );
                shared.fail(reason.clone());
                AppendError::StorageFailed(reason)
            }
            Err(PubError::Fenced(why)) => {
                fenced += 1;
                debug!(%why, fenced, "another writer appended first; catching up");
                if Instant::now() < deadline {
                    if let Err(e) = shared.catch_up(None).await {
                        warn!(error = %e, "catching up after a fenced append failed");
                    }
                    // Random backoff, so two processes that keep fencing
                    // each other do not retry in lockstep.
                    sleep(jitter(fenced)).await;
                    continue;
                }
                AppendError::Unavailable(format!(
                    "other writers appended before each of {fenced} tries within {:?} ({why})",
                    shared.config.append_timeout
                ))
            }
            Err(PubError::Unavailable(why)) => {
                if Instant::now() < deadline {
                    pauses += 1;
                    sleep(Duration::from_millis(UNAVAILABLE_PAUSE_MS * pauses.min(10))).await;
                    if let Err(e) = shared.catch_up(None).await {
                        debug!(error = %e, "JetStream still unavailable");
                    }
                    continue;
                }
                // Best effort: the tail left the in-flight positions to us.
                if let Err(e) = shared.catch_up(None).await {
                    debug!(error = %e, "JetStream still unavailable");
                }
                AppendError::Unavailable(format!(
                    "JetStream did not confirm the append within {:?}: {why}",
                    shared.config.append_timeout
                ))
            }
            Err(PubError::Refused(why)) => {
                // The tail left the in-flight positions to us: catch up in
                // case another process's records sit there.
                if let Err(e) = shared.catch_up(None).await {
                    debug!(error = %e, "catching up after a refused append failed");
                }
                AppendError::Unavailable(why)
            }
        };
        // The group failed: only retries of records committed before it stay true.
        for (r, result) in group.into_iter().zip(staged.results) {
            let result = match result {
                Ok(a) if a.already_present && a.last_position <= staged.base.position => Ok(a),
                Ok(_) => Err(failure.clone()),
                Err(e) => Err(e),
            };
            let _ = r.reply.send(result);
        }
        return;
    }
}

/// Validates and encodes every append of the group against the index.
/// `tried` holds the positions a previous, unconfirmed publish of this group
/// gave its events: finding them there means that publish landed.
async fn stage(
    shared: &Shared,
    group: &[Request],
    tried: &HashMap<EventId, Position>,
) -> Result<Staged, AppendError> {
    // One consistent snapshot of the index for the whole group.
    let (base, last_recorded_at, found, streams) = {
        let ix = shared.index();
        let mut found = HashMap::new();
        let mut streams = HashMap::new();
        for r in group {
            for e in &r.events {
                if let Some(p) = ix.position_of(&e.event_id) {
                    found.insert(e.event_id, p);
                }
            }
            streams.entry(r.stream.clone()).or_insert_with(|| {
                (
                    ix.stream_version(&r.stream),
                    ix.stream_last_position(&r.stream),
                )
            });
        }
        (ix.head(), ix.last_recorded_at(), found, streams)
    };
    let mut committed: HashMap<EventId, RecordedEvent> = HashMap::new();
    for (id, position) in &found {
        let rec = shared
            .record_at(*position)
            .await
            .map_err(|e| AppendError::Unavailable(e.to_string()))?;
        committed.insert(*id, rec);
    }
    let now = Utc::now();
    let mut last_recorded_at = last_recorded_at;
    let mut staged = Staged {
        base,
        results: Vec::with_capacity(group.len()),
        messages: Vec::new(),
        records: Vec::new(),
    };
    let mut head = base;
    let mut staged_ids: HashMap<EventId, usize> = HashMap::new();
    let mut versions: HashMap<&StreamId, StreamVersion> = HashMap::new();
    let mut subjects_used: HashSet<&StreamId> = HashSet::new();
    for r in group {
        let existing: Vec<Option<RecordedEvent>> = r
            .events
            .iter()
            .map(|e| {
                staged_ids
                    .get(&e.event_id)
                    .and_then(|&i| staged.records.get(i).cloned())
                    .or_else(|| committed.get(&e.event_id).cloned())
            })
            .collect();
        if existing.iter().any(Option::is_some) {
            let mut outcome = idempotent_outcome(&r.stream, &r.events, &existing);
            if let Ok(a) = &mut outcome {
                // Written by this group's own earlier, unconfirmed publish.
                let ours = existing
                    .iter()
                    .flatten()
                    .all(|rec| tried.get(&rec.event_id) == Some(&rec.position));
                if ours && a.last_position <= base.position {
                    a.already_present = false;
                }
            }
            staged.results.push(outcome);
            continue;
        }
        let (committed_version, stream_last) = streams
            .get(&r.stream)
            .copied()
            .unwrap_or((StreamVersion::NONE, Position::ZERO));
        let actual = versions
            .get(&r.stream)
            .copied()
            .unwrap_or(committed_version);
        if !r.expected.admits(actual) {
            staged.results.push(Err(AppendError::WrongExpectedVersion {
                stream: r.stream.clone(),
                expected: r.expected,
                actual,
            }));
            continue;
        }
        let recorded_at = r.recorded_at.resolve(last_recorded_at, now);
        last_recorded_at = Some(recorded_at);
        let subject = shared.subject(&r.stream);
        let mut version = actual;
        let mut records = Vec::with_capacity(r.events.len());
        let mut messages = Vec::with_capacity(r.events.len());
        let mut at = head;
        for (i, e) in r.events.iter().enumerate() {
            let position = at
                .position
                .next()
                .ok_or(AppendError::LogFull(at.position))?;
            version = StreamVersion(version.0 + 1);
            let place = Placement {
                position,
                stream_id: &r.stream,
                stream_version: version,
                recorded_at,
                prev_hash: at.hash,
            };
            let (frame, rec) = codec::encode(e, &place)?;
            let mut headers = HeaderMap::new();
            if i == 0 && !subjects_used.contains(&r.stream) {
                headers.insert(
                    "Nats-Expected-Last-Subject-Sequence",
                    stream_last.0.to_string().as_str(),
                );
            }
            at = rec.as_head();
            records.push(rec);
            messages.push(OutMessage {
                subject: subject.clone(),
                headers,
                payload: Bytes::from(frame),
            });
        }
        let first_position = head.position.next().unwrap_or(at.position);
        for rec in records {
            staged_ids.insert(rec.event_id, staged.records.len());
            staged.records.push(rec);
        }
        staged.messages.extend(messages);
        subjects_used.insert(&r.stream);
        versions.insert(&r.stream, version);
        head = at;
        staged.results.push(Ok(AppendResult {
            first_position,
            last_position: at.position,
            stream_version: version,
            already_present: false,
        }));
    }
    // A lone message also carries `Nats-Msg-Id` (the server de-duplicates it
    // within the duplicate window). Atomic batches go without it: servers
    // 2.12-2.14 refuse it there (ADR-50, error 10177; 2.15 accepts it), and
    // idempotency rests on the index and the sequence fence anyway.
    if let ([m], [rec]) = (staged.messages.as_mut_slice(), staged.records.as_slice()) {
        m.headers
            .insert("Nats-Msg-Id", rec.event_id.to_string().as_str());
    }
    if let Some(first) = staged.messages.first_mut() {
        first.headers.insert(
            "Nats-Expected-Last-Sequence",
            base.position.0.to_string().as_str(),
        );
    }
    Ok(staged)
}
