//! The `EventStore` trait every backend implements, with the parts built on it:
//! catch-up subscriptions and chain verification.

use std::collections::VecDeque;
use std::future::Future;

use tokio::sync::watch;

use crate::codec;
use crate::error::{AppendError, Corruption, ReadError};
use crate::limits::{
    APPEND_EVENTS_MAX, APPEND_SIZE_MAX_BYTES, BATCH_EVENTS_MAX, BATCH_PARTS_MAX,
    EVENT_SIZE_MAX_BYTES, READ_PAGE_MAX,
};
use crate::types::{
    AppendResult, ChainHash, EventFieldError, ExpectedVersion, Head, Position, ProposedEvent,
    RecordView, RecordedAt, RecordedEvent, StreamAppend, StreamId, StreamVersion,
};

/// A durable, append-only log of opaque events, in streams and in one global order.
///
/// **Architecture Invariant:** an `Ok` from `append` means every event of the
/// append is durable (flushed to stable storage) and visible to reads; a
/// refused append wrote nothing. Reads only ever return durable records, in
/// dense position order, each checked against its checksum.
pub trait EventStore: Clone + Send + Sync + 'static {
    /// Appends `events` to `stream` atomically if the stream is at `expected`.
    ///
    /// Idempotent by event id: resending an append whose events are all in the
    /// log already (same ids, same content, same stream, in order) returns the
    /// original positions with `already_present = true` and writes nothing,
    /// whatever `expected` says. An id that is in the log with other content,
    /// or only some of the ids, is an [`AppendError::IdempotencyConflict`].
    fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<ProposedEvent>,
    ) -> impl Future<Output = Result<AppendResult, AppendError>> + Send;

    /// Appends several streams' events in one request, in the order given.
    ///
    /// Each part is taken exactly as [`EventStore::append`] takes it (atomic on its own,
    /// idempotent by event id, checked against its expected version) and gets its own
    /// result; a refused part writes nothing and does not stop the parts after it. The
    /// parts written lie in the log in the order given, so a writer that sends the same
    /// batches to an empty log gets the same positions. Every record's `recorded_at` is
    /// what `recorded_at` resolves to ([`RecordedAt::resolve`]). The sled and in-memory
    /// backends write a batch with nothing of other writers between its parts, in one
    /// durable write; JetStream keeps the order, but other processes' appends may come
    /// between parts.
    ///
    /// # Errors
    /// The whole batch is refused, nothing of it written, when it has more than
    /// [`BATCH_PARTS_MAX`] parts or [`BATCH_EVENTS_MAX`] events, or states a recording time
    /// after the store's clock ([`check_batch`]), or when the store is closed.
    fn append_batch(
        &self,
        parts: Vec<StreamAppend>,
        recorded_at: RecordedAt,
    ) -> impl Future<Output = Result<Vec<Result<AppendResult, AppendError>>, AppendError>> + Send;

    /// Up to `max` events of `stream` (capped at [`READ_PAGE_MAX`]), starting at
    /// stream version `from` (versions start at 1; 0 reads from the start).
    fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, ReadError>> + Send;

    /// Up to `max` events (capped at [`READ_PAGE_MAX`]) in global order,
    /// starting at position `from` (0 and 1 both read from the start).
    fn read_all(
        &self,
        from: Position,
        max: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, ReadError>> + Send;

    /// Reads what [`EventStore::read_all`] reads from `from` (the same records, checks and
    /// errors), shows each record's envelope to `select`, and returns only the records it
    /// chooses, with the selector back and the last position read. A reader that keeps few
    /// of the records it walks (a metric's replay) saves copying the others: the sled
    /// backend reads every frame in place and copies out only the chosen ones.
    fn read_all_selected<F: Selector>(
        &self,
        from: Position,
        max: usize,
        mut select: F,
    ) -> impl Future<Output = Result<SelectedPage<F>, ReadError>> + Send {
        async move {
            let page = self.read_all(from, max).await?;
            let last = page.last().map(|r| r.position);
            let records = page
                .into_iter()
                .filter(|r| select.select(&r.view()))
                .collect();
            Ok(SelectedPage {
                select,
                records,
                last,
            })
        }
    }

    /// The current stream version (0 if the stream has no events).
    fn stream_version(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = Result<StreamVersion, ReadError>> + Send;

    /// The newest durable record's position and chain hash.
    fn head(&self) -> Head;

    /// A receiver that sees every change of the durable head.
    fn watch_head(&self) -> watch::Receiver<Head>;

    /// A catch-up subscription: every event from `from` on, then live events
    /// as they become durable, in order, without gap or duplicate.
    fn subscribe(&self, from: Position) -> Subscription<Self> {
        Subscription {
            store: self.clone(),
            next: from.max(Position::FIRST),
            buffer: VecDeque::new(),
            head: self.watch_head(),
        }
    }

    /// Walks records `from..=to` (to the head if `to` is `None`): checks each
    /// checksum, recomputes each chain hash, checks that positions are dense
    /// and each record links to its predecessor, and that the last record of a
    /// full walk is the head. Stops at the first bad record.
    fn verify(
        &self,
        from: Position,
        to: Option<Position>,
    ) -> impl Future<Output = Result<VerifyReport, ReadError>> + Send {
        verify_with_progress(self, from, to, |_| {})
    }
}

/// What [`EventStore::read_all_selected`] asks of every record it reads: keep it or not. A
/// closure is a selector; a type of its own can count what it sees and be read afterwards
/// (it comes back in the [`SelectedPage`]).
pub trait Selector: Send + 'static {
    /// Whether to return this record.
    fn select(&mut self, record: &RecordView<'_>) -> bool;
}

impl<F: FnMut(&RecordView<'_>) -> bool + Send + 'static> Selector for F {
    fn select(&mut self, record: &RecordView<'_>) -> bool {
        self(record)
    }
}

/// One page of [`EventStore::read_all_selected`].
#[derive(Debug)]
pub struct SelectedPage<F> {
    /// The selector, back from the read (with whatever it counted).
    pub select: F,
    /// The records it chose, in log order.
    pub records: Vec<RecordedEvent>,
    /// The last position read, chosen or not; `None` when nothing was read (the page
    /// starts past the head).
    pub last: Option<Position>,
}

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records checked and found intact.
    pub checked: u64,
    /// The last intact record (position 0 if none).
    pub last_good: Head,
    /// The first bad record and why, if any.
    pub first_bad: Option<(Position, String)>,
}

impl VerifyReport {
    /// True when every record walked was intact.
    pub fn is_ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// The record at exactly `position`, or `None` when the log holds none there (it ends
/// before, or `position` is 0). Used to check that a log still holds what an earlier reader
/// saw at a position (an anchor, a snapshot's checkpoint).
///
/// # Errors
/// [`ReadError`] when the record cannot be read.
pub async fn record_at<S: EventStore>(
    store: &S,
    position: Position,
) -> Result<Option<RecordedEvent>, ReadError> {
    if position == Position::ZERO {
        return Ok(None);
    }
    let page = store.read_all(position, 1).await?;
    Ok(page.into_iter().next().filter(|r| r.position == position))
}

/// [`EventStore::verify`] with a callback after each page (for progress bars).
pub async fn verify_with_progress<S: EventStore>(
    store: &S,
    from: Position,
    to: Option<Position>,
    mut progress: impl FnMut(Position) + Send,
) -> Result<VerifyReport, ReadError> {
    let head = store.head();
    let from = from.max(Position::FIRST);
    let to = to.unwrap_or(head.position).min(head.position);
    let mut report = VerifyReport {
        checked: 0,
        last_good: Head::default(),
        first_bad: None,
    };
    // The predecessor hash the first walked record must link to.
    let mut expected_prev = if from == Position::FIRST {
        Some(ChainHash::GENESIS)
    } else {
        None
    };
    let mut next = from;
    while next <= to {
        let mut corrupt = None;
        let page = match store.read_all(next, READ_PAGE_MAX).await {
            Ok(page) => page,
            Err(ReadError::Corrupt { position, reason }) if position > next => {
                // Check the intact records before the corrupt one, then stop there.
                let before = usize::try_from(position.0 - next.0).unwrap_or(READ_PAGE_MAX);
                corrupt = Some((position, reason.to_string()));
                store.read_all(next, before).await?
            }
            Err(ReadError::Corrupt { position, reason }) => {
                report.first_bad = Some((position, reason.to_string()));
                return Ok(report);
            }
            Err(e) => return Err(e),
        };
        if page.is_empty() {
            report.first_bad = Some((next, Corruption::Missing.to_string()));
            return Ok(report);
        }
        for rec in page {
            if rec.position > to {
                break;
            }
            if let Some(reason) = check_record(&rec, next, expected_prev) {
                report.first_bad = Some((rec.position, reason.to_string()));
                return Ok(report);
            }
            expected_prev = Some(rec.hash);
            report.last_good = rec.as_head();
            report.checked += 1;
            next = match rec.position.next() {
                Some(p) => p,
                None => return Ok(report),
            };
        }
        progress(report.last_good.position);
        if corrupt.is_some() {
            report.first_bad = corrupt;
            return Ok(report);
        }
    }
    if to == head.position && report.checked > 0 && report.last_good != head {
        let reason = Corruption::HeadMismatch {
            head: head.hash,
            last: report.last_good.hash,
        };
        report.first_bad = Some((head.position, reason.to_string()));
    }
    Ok(report)
}

fn check_record(
    rec: &RecordedEvent,
    position: Position,
    prev: Option<ChainHash>,
) -> Option<Corruption> {
    if rec.position != position {
        return Some(Corruption::NotDense {
            expected: position,
            found: rec.position,
        });
    }
    if let Some(prev) = prev {
        if rec.prev_hash != prev {
            return Some(Corruption::ChainBroken {
                position: rec.position,
                links_to: rec.prev_hash,
                previous: prev,
            });
        }
    }
    match codec::recompute_hash(rec) {
        Ok(h) if h == rec.hash => None,
        Ok(h) => Some(Corruption::Altered {
            computed: h,
            stated: rec.hash,
        }),
        Err(e) => Some(e.into()),
    }
}

/// Catch-up subscription: reads history from a position, then follows the
/// log live. Created by [`EventStore::subscribe`].
pub struct Subscription<S: EventStore> {
    store: S,
    next: Position,
    buffer: VecDeque<RecordedEvent>,
    head: watch::Receiver<Head>,
}

impl<S: EventStore> Subscription<S> {
    /// The next event, waiting for one if the subscription is caught up.
    /// Returns `None` when the store is closed; an error leaves the
    /// subscription at the failing position so the caller may retry.
    pub async fn next(&mut self) -> Option<Result<RecordedEvent, ReadError>> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Some(Ok(event));
            }
            // Mark the current head as seen before reading, so an append that
            // lands after the read wakes the wait below.
            let head = self.head.borrow_and_update().position;
            if head >= self.next {
                match self.store.read_all(self.next, READ_PAGE_MAX).await {
                    Ok(page) => {
                        if let Some(last) = page.last() {
                            match last.position.next() {
                                Some(p) => self.next = p,
                                None => return None,
                            }
                        }
                        self.buffer.extend(page);
                        continue;
                    }
                    Err(e) => return Some(Err(e)),
                }
            }
            if self.head.changed().await.is_err() {
                return None;
            }
        }
    }

    /// The position of the next event this subscription will yield.
    pub fn position(&self) -> Position {
        self.buffer.front().map(|e| e.position).unwrap_or(self.next)
    }
}

/// Checks an append request against the limits and field rules; shared by all
/// backends so they refuse the same requests with the same errors.
pub fn check_append(events: &[ProposedEvent]) -> Result<(), AppendError> {
    if events.is_empty() {
        return Err(AppendError::Empty);
    }
    if events.len() > APPEND_EVENTS_MAX {
        return Err(AppendError::TooManyEvents {
            count: events.len(),
            max: APPEND_EVENTS_MAX,
        });
    }
    let mut total = 0usize;
    for (index, e) in events.iter().enumerate() {
        let size = e.size_bytes();
        if size > EVENT_SIZE_MAX_BYTES {
            return Err(AppendError::EventTooLarge {
                index,
                event_id: e.event_id,
                size,
                max: EVENT_SIZE_MAX_BYTES,
            });
        }
        total = total.saturating_add(size);
        e.check_fields()
            .map_err(|reason| AppendError::InvalidEvent {
                index,
                event_id: e.event_id,
                reason,
            })?;
        if events[..index].iter().any(|o| o.event_id == e.event_id) {
            return Err(AppendError::InvalidEvent {
                index,
                event_id: e.event_id,
                reason: EventFieldError::RepeatedEventId,
            });
        }
    }
    if total > APPEND_SIZE_MAX_BYTES {
        return Err(AppendError::AppendTooLarge {
            size: total,
            max: APPEND_SIZE_MAX_BYTES,
        });
    }
    Ok(())
}

/// Checks what [`EventStore::append_batch`] refuses whole: more than [`BATCH_PARTS_MAX`]
/// parts or [`BATCH_EVENTS_MAX`] events, or a stated recording time after `now`. Each part
/// is checked on its own later, as an append.
///
/// # Errors
/// [`AppendError::TooManyParts`], [`AppendError::TooManyEvents`] or
/// [`AppendError::RecordedInFuture`].
pub fn check_batch(
    parts: &[StreamAppend],
    recorded_at: RecordedAt,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), AppendError> {
    if parts.len() > BATCH_PARTS_MAX {
        return Err(AppendError::TooManyParts {
            parts: parts.len(),
            max: BATCH_PARTS_MAX,
        });
    }
    let events: usize = parts.iter().map(|p| p.events.len()).sum();
    if events > BATCH_EVENTS_MAX {
        return Err(AppendError::TooManyEvents {
            count: events,
            max: BATCH_EVENTS_MAX,
        });
    }
    match recorded_at {
        RecordedAt::Stated(stated) if stated > now => {
            Err(AppendError::RecordedInFuture { stated, now })
        }
        RecordedAt::Stated(_) | RecordedAt::Now => Ok(()),
    }
}

/// Decides an append whose first event id is already in the log: either an
/// exact retry (returns the original result) or a conflict. `existing` holds
/// the recorded event for each proposed id, `None` where the id is absent.
pub fn idempotent_outcome(
    stream: &StreamId,
    events: &[ProposedEvent],
    existing: &[Option<RecordedEvent>],
) -> Result<AppendResult, AppendError> {
    let mut first: Option<&RecordedEvent> = None;
    let mut prev: Option<&RecordedEvent> = None;
    for (proposed, found) in events.iter().zip(existing) {
        let Some(rec) = found else {
            return Err(AppendError::IdempotencyConflict {
                event_id: proposed.event_id,
                detail: "only in part: this append mixes events already recorded with new ones"
                    .into(),
            });
        };
        if &rec.stream_id != stream {
            return Err(AppendError::IdempotencyConflict {
                event_id: proposed.event_id,
                detail: format!("in stream `{}`, not `{stream}`", rec.stream_id),
            });
        }
        if !proposed.same_content(rec) {
            return Err(AppendError::IdempotencyConflict {
                event_id: proposed.event_id,
                detail: format!("at position {} with different content", rec.position),
            });
        }
        if let Some(p) = prev {
            if p.position.next() != Some(rec.position) {
                return Err(AppendError::IdempotencyConflict {
                    event_id: proposed.event_id,
                    detail: format!(
                        "at position {}, not right after {} as in this append",
                        rec.position, p.event_id
                    ),
                });
            }
        }
        first = first.or(Some(rec));
        prev = Some(rec);
    }
    match (first, prev) {
        (Some(f), Some(l)) => Ok(AppendResult {
            first_position: f.position,
            last_position: l.position,
            stream_version: l.stream_version,
            already_present: true,
        }),
        _ => Err(AppendError::Empty),
    }
}

/// Caps a requested page size to [`READ_PAGE_MAX`].
pub fn page_size(max: usize) -> usize {
    max.min(READ_PAGE_MAX)
}
