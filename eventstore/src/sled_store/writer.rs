//! The single writer thread of the sled backend: group commit.
//!
//! **Architecture Invariant:** the writer is the only thread that writes segments. It
//! takes every append request queued (up to the group limits), validates them in arrival
//! order against the committed log and what the group staged before them, writes the
//! group's frames at the end of the current segment in one `write`, `fdatasync`s the
//! segment once, and only then puts the group's index entries in the tail, publishes the
//! new durable head and answers the requests. The index entries reach sled later, on the
//! indexer thread ([`super::index`]).
//!
//! When requests wait behind a written group, its `fdatasync` runs on the sync thread
//! ([`Syncer`]) while the writer validates and encodes the next group on top of it (the
//! group in flight, [`Flight`]: its ids, records and stream versions count as staged).
//! Requests that arrive during the sync join the next group. The writer then waits for the
//! sync's result, publishes and answers the group in flight (or fails it and everything
//! staged on it), and only then writes the next group: at most one group is in flight, and
//! the order of writes, syncs and acknowledgements is the one above.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use super::ids::IdLookup;
use super::index::{Index, StreamRun, Work};
use super::segment::{
    segment_header, segment_name, EntryStride, Offset, Segment, SEGMENT_HEADER_BYTES,
};
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
    #[error("could not start segment {path}: {source}")]
    NewSegment {
        path: String,
        source: std::io::Error,
    },
    #[error("writing {len} bytes at byte {at} of {path} failed: {source}")]
    Write {
        path: String,
        at: u64,
        len: usize,
        source: std::io::Error,
    },
    #[error("fdatasync of {path} failed: {source}")]
    Sync {
        path: String,
        source: std::io::Error,
    },
    #[error("the writer's sync thread stopped before it synced the last write")]
    SyncThread,
    #[error("no segment was open to sync")]
    NoTip,
}

/// `fdatasync` of `file`, or the failure a test injected.
fn sync_file(
    inject: &std::sync::atomic::AtomicBool,
    file: &File,
    path: &std::path::Path,
) -> Result<(), WriteError> {
    let result = if inject.swap(false, Ordering::AcqRel) {
        Err(std::io::Error::other("injected fsync failure"))
    } else {
        file.sync_data()
    };
    result.map_err(|source| WriteError::Sync {
        path: path.display().to_string(),
        source,
    })
}

/// The segment the writer appends to.
pub(super) struct Tip {
    pub(super) file: File,
    pub(super) first: Position,
    pub(super) path: PathBuf,
    /// Bytes in the file (all durable).
    pub(super) len: u64,
    /// Where the next entry of the offset map goes.
    pub(super) stride: EntryStride,
}

/// What a group has staged but not yet committed.
struct Group {
    /// The group's frames, concatenated.
    buf: Vec<u8>,
    /// One byte range of `buf` per staged position, in order from `first`.
    slots: Vec<std::ops::Range<usize>>,
    first: Position,
    head: Head,
    /// Index entries of the staged records (offsets are added at the write).
    work: Work,
    versions: HashMap<StreamId, StreamVersion>,
    /// The `recorded_at` of the newest record staged (or committed, before the first).
    recorded_at: Option<DateTime<Utc>>,
}

impl Group {
    /// The record this group staged with this id, if it staged one.
    fn record_of(&self, id: &EventId) -> Option<Result<RecordedEvent, ReadError>> {
        let &(_, position) = self.work.ids.iter().rev().find(|(i, _)| i == id)?;
        Some(self.staged(position))
    }

    fn staged(&self, position: Position) -> Result<RecordedEvent, ReadError> {
        let missing = || ReadError::Corrupt {
            position,
            reason: Corruption::StagedMissing,
        };
        let index = usize::try_from(position.0 - self.first.0).map_err(|_| missing())?;
        let range = self.slots.get(index).ok_or_else(missing)?;
        let bytes = self.buf.get(range.clone()).ok_or_else(missing)?;
        codec::decode(bytes, Some(position), false).map_err(|e| ReadError::Corrupt {
            position,
            reason: e.into(),
        })
    }
}

/// Each request's answer and results, in arrival order.
type Staged = (Answer, Vec<Result<AppendResult, AppendError>>);

/// A group written to the tip segment whose `fdatasync` runs on the sync thread while the
/// writer stages the next group on top of it.
pub(super) struct Flight {
    group: Group,
    answers: Vec<Staged>,
}

/// The requests taken for one group, and their count against the group limits.
#[derive(Default)]
struct Intake {
    appends: Vec<Append>,
    requests: usize,
    events: usize,
}

impl Intake {
    fn take(&mut self, req: Request, close: &mut Option<oneshot::Sender<()>>) {
        match req {
            Request::Append {
                stream,
                expected,
                events,
                reply,
            } => {
                self.events += events.len();
                self.appends.push(Append {
                    parts: vec![StreamAppend {
                        stream,
                        expected,
                        events,
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
                self.events += parts.iter().map(|p| p.events.len()).sum::<usize>();
                self.appends.push(Append {
                    parts,
                    recorded_at,
                    answer: Answer::Batch(reply),
                });
            }
            Request::Close { done } => {
                *close = Some(done);
                return;
            }
        }
        self.requests += 1;
    }

    /// Takes the requests already queued, within the group limits and up to a close.
    fn drain(&mut self, rx: &mut mpsc::Receiver<Request>, close: &mut Option<oneshot::Sender<()>>) {
        while close.is_none()
            && self.requests < GROUP_COMMIT_REQUESTS_MAX
            && self.events < GROUP_COMMIT_EVENTS_MAX
        {
            match rx.try_recv() {
                Ok(req) => self.take(req, close),
                Err(_) => break,
            }
        }
    }

    /// The requests taken since the last call (the counts stay, for the limits).
    fn take_appends(&mut self) -> Vec<Append> {
        std::mem::take(&mut self.appends)
    }
}

/// The thread that runs a group's `fdatasync` while the writer stages the next group.
struct Syncer {
    jobs: std::sync::mpsc::SyncSender<(File, PathBuf)>,
    results: std::sync::mpsc::Receiver<Result<(), WriteError>>,
    thread: std::thread::JoinHandle<()>,
}

impl Syncer {
    /// Starts the thread; `None` when it cannot be started (the writer then syncs itself).
    fn start(inner: Arc<Inner>) -> Option<Syncer> {
        let (jobs, job_rx) = std::sync::mpsc::sync_channel::<(File, PathBuf)>(1);
        let (result_tx, results) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("crm-sled-sync".into())
            .spawn(move || {
                while let Ok((file, path)) = job_rx.recv() {
                    let result = sync_file(&inner.inject_sync_failure, &file, &path);
                    if result_tx.send(result).is_err() {
                        break;
                    }
                }
            })
            .ok()?;
        Some(Syncer {
            jobs,
            results,
            thread,
        })
    }

    /// Ends the thread and waits for it, so that it holds nothing of the store afterwards.
    fn stop(self) {
        drop(self.jobs);
        let _ = self.thread.join();
    }

    /// Waits for the result of the sync handed last.
    fn result(&self) -> Result<(), WriteError> {
        self.results.recv().unwrap_or(Err(WriteError::SyncThread))
    }
}

/// Answers the requests of a group that did not become durable: only a retry of events
/// durable before it (at or below `committed`) is still true.
fn fail_answers(answers: Vec<Staged>, reason: &str, committed: Position) {
    for (answer, results) in answers {
        let results = results
            .into_iter()
            .map(|result| match result {
                Ok(r) if !r.already_present || r.last_position > committed => {
                    Err(AppendError::StorageFailed(reason.to_owned()))
                }
                other => other,
            })
            .collect();
        answer.send(results);
    }
}

/// The single writer: owns the committed head, the tip segment and a cache of stream
/// versions.
pub(super) struct Writer {
    pub(super) inner: Arc<Inner>,
    /// The stream index (the writer's own handle, dropped when it ends).
    pub(super) index: Arc<Index>,
    pub(super) head: Head,
    pub(super) last_recorded_at: Option<DateTime<Utc>>,
    pub(super) versions: HashMap<StreamId, StreamVersion>,
    /// Event id → position, for the idempotency check.
    pub(super) ids: IdLookup,
    pub(super) tip: Option<Tip>,
    pub(super) indexer: std::sync::mpsc::SyncSender<Work>,
    /// Size past which a group goes to a new segment.
    pub(super) segment_target_bytes: u64,
    /// The group written last, while its sync runs on the sync thread.
    pub(super) flight: Option<Flight>,
}

impl Writer {
    pub(super) fn run(
        mut self,
        mut rx: mpsc::Receiver<Request>,
        indexer: std::thread::JoinHandle<()>,
    ) {
        let syncer = Syncer::start(self.inner.clone());
        let mut close_ack = None;
        loop {
            // The next group's requests: wait for one, unless a group is in flight (its
            // sync is what the writer waits for then).
            let mut intake = Intake::default();
            if self.flight.is_none() {
                match rx.blocking_recv() {
                    Some(req) => intake.take(req, &mut close_ack),
                    None => break,
                }
            }
            intake.drain(&mut rx, &mut close_ack);
            let mut group = self.begin_group();
            let mut answers = self.stage_all(&mut group, intake.take_appends());
            if let Some(flight) = self.flight.take() {
                let result = match &syncer {
                    Some(s) => s.result(),
                    None => Err(WriteError::SyncThread),
                };
                self.land(flight.group, flight.answers, result);
                // What arrived during the sync joins the group.
                intake.drain(&mut rx, &mut close_ack);
                let more = self.stage_all(&mut group, intake.take_appends());
                answers.extend(more);
            }
            if let Some(reason) = self.inner.failure() {
                // The flight failed under the group: nothing of it is written.
                fail_answers(answers, &reason, self.head.position);
            } else if group.slots.is_empty() {
                for (answer, results) in answers {
                    answer.send(results);
                }
            } else if let Err(e) = self.write(&mut group) {
                self.land(group, answers, Err(e));
            } else {
                // Overlap the sync with the next group's staging when requests wait.
                let handed = match &syncer {
                    Some(s) if close_ack.is_none() && !rx.is_empty() => self.hand_sync(s),
                    _ => false,
                };
                if handed {
                    self.flight = Some(Flight { group, answers });
                } else {
                    let result = self.sync_tip();
                    self.land(group, answers, result);
                }
            }
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
        if let Some(syncer) = syncer {
            syncer.stop();
        }
        // Dropping the writer closes the indexer's queue: it writes what it holds and ends.
        drop(self);
        let _ = indexer.join();
        if let Some(done) = close_ack {
            let _ = done.send(());
        }
    }

    /// An empty group on top of the log as staged: the durable head, or the group in flight.
    fn begin_group(&self) -> Group {
        let (head, recorded_at) = match &self.flight {
            Some(f) => (f.group.head, f.group.recorded_at),
            None => (self.head, self.last_recorded_at),
        };
        Group {
            buf: Vec::new(),
            slots: Vec::new(),
            first: head.position.next().unwrap_or(head.position),
            head,
            work: Work::default(),
            versions: HashMap::new(),
            recorded_at,
        }
    }

    /// Validates and stages `appends` in arrival order; returns each one's answer and
    /// results. A failed store answers them with its failure.
    fn stage_all(&mut self, group: &mut Group, appends: Vec<Append>) -> Vec<Staged> {
        if appends.is_empty() {
            return Vec::new();
        }
        self.index.wait_for_room(|| self.inner.failure().is_some());
        if let Some(reason) = self.inner.failure() {
            let err = AppendError::StorageFailed(reason);
            for a in appends {
                a.answer.fail(&err);
            }
            return Vec::new();
        }
        let now = Utc::now();
        let mut answers = Vec::with_capacity(appends.len());
        for a in appends {
            let at = a.recorded_at.resolve(group.recorded_at, now);
            let staged_before = group.slots.len();
            let results: Vec<_> = a
                .parts
                .iter()
                .map(|p| self.stage(group, &p.stream, p.expected, &p.events, at))
                .collect();
            if group.slots.len() > staged_before {
                group.recorded_at = Some(at);
            }
            answers.push((a.answer, results));
        }
        answers
    }

    /// Hands the tip's `fdatasync` to the sync thread; `false` when it could not be.
    fn hand_sync(&self, syncer: &Syncer) -> bool {
        let Some(tip) = self.tip.as_ref() else {
            return false;
        };
        let handed = match tip.file.try_clone() {
            Ok(file) => syncer.jobs.send((file, tip.path.clone())).is_ok(),
            Err(_) => false,
        };
        if handed {
            self.inner.handed_syncs.fetch_add(1, Ordering::Relaxed);
        }
        handed
    }

    /// `fdatasync` of the tip, on this thread.
    fn sync_tip(&self) -> Result<(), WriteError> {
        match self.tip.as_ref() {
            Some(tip) => sync_file(&self.inner.inject_sync_failure, &tip.file, &tip.path),
            None => Err(WriteError::NoTip),
        }
    }

    /// Ends a written group: with its sync done, publishes it and answers its requests;
    /// with the write or sync failed, fails the store and the group's new appends.
    fn land(&mut self, mut group: Group, answers: Vec<Staged>, result: Result<(), WriteError>) {
        if let Err(e) = result {
            let reason = e.to_string();
            self.inner.fail(reason.clone());
            fail_answers(answers, &reason, self.head.position);
            return;
        }
        if self.versions.len() + group.versions.len() > STREAM_CACHE_ENTRIES_MAX {
            self.versions.clear();
        }
        self.versions.extend(std::mem::take(&mut group.versions));
        self.head = group.head;
        self.last_recorded_at = group.recorded_at;
        group.work.through = self.head.position;
        self.inner
            .offsets
            .add_entries(group.work.offsets.iter().copied());
        self.index.tail_add(&group.work);
        self.ids.add(&group.work.ids);
        self.inner
            .durable
            .store(self.head.position.0, Ordering::Release);
        self.inner.head.send_replace(self.head);
        if self.indexer.send(group.work).is_err() {
            self.inner
                .fail("the indexer thread stopped; reopen the store".to_owned());
        }
        for (answer, results) in answers {
            answer.send(results);
        }
    }

    /// Starts a new segment whose first record is at `first`: header written and synced,
    /// directory entry synced.
    fn start_segment(&mut self, first: Position) -> Result<(), WriteError> {
        let path = self.inner.segments_dir().join(segment_name(first));
        let failed = |source| WriteError::NewSegment {
            path: path.display().to_string(),
            source,
        };
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(failed)?;
        file.write_all_at(&segment_header(first), 0)
            .map_err(failed)?;
        sync_file(&self.inner.inject_sync_failure, &file, &path).map_err(|e| match e {
            WriteError::Sync { source, .. } => failed(source),
            other => other,
        })?;
        super::sync_dir(&self.inner.segments_dir()).map_err(failed)?;
        let reader = file.try_clone().map_err(failed)?;
        self.inner.offsets.add_segment(Segment {
            first,
            path: path.clone(),
            file: reader,
        });
        self.tip = Some(Tip {
            file,
            first,
            path,
            len: SEGMENT_HEADER_BYTES,
            stride: EntryStride::due(),
        });
        Ok(())
    }

    /// Writes the group's frames at the end of the tip segment (a new one when the tip is
    /// full) in one write, and records the offset entries. The caller syncs the tip.
    fn write(&mut self, group: &mut Group) -> Result<(), WriteError> {
        let full = self.tip.as_ref().is_none_or(|t| {
            t.len > SEGMENT_HEADER_BYTES
                && t.len
                    .saturating_add(u64::try_from(group.buf.len()).unwrap_or(u64::MAX))
                    > self.segment_target_bytes
        });
        if full {
            self.start_segment(group.first)?;
        }
        let Some(tip) = self.tip.as_mut() else {
            return Err(WriteError::NewSegment {
                path: self.inner.segments_dir().display().to_string(),
                source: std::io::Error::other("no segment to write to"),
            });
        };
        let base = tip.len;
        let mut position = group.first;
        for range in &group.slots {
            let at = base.saturating_add(u64::try_from(range.start).unwrap_or(u64::MAX));
            if tip.stride.frame(at, range.len()) {
                group.work.offsets.push((
                    position,
                    Offset {
                        segment: tip.first,
                        at,
                    },
                ));
            }
            position = Position(position.0 + 1);
        }
        tip.file
            .write_all_at(&group.buf, base)
            .map_err(|source| WriteError::Write {
                path: tip.path.display().to_string(),
                at: base,
                len: group.buf.len(),
                source,
            })?;
        tip.len = base.saturating_add(u64::try_from(group.buf.len()).unwrap_or(u64::MAX));
        Ok(())
    }

    /// The recorded event with this id, whether committed or staged in `group`.
    fn lookup(&mut self, group: &Group, id: &EventId) -> Result<Option<RecordedEvent>, ReadError> {
        if !self.ids.may_hold(&self.index, id)? {
            return Ok(None);
        }
        // The filters hold every id looked up: this group or the one in flight may have
        // staged it.
        let in_flight = self.flight.as_ref().map(|f| &f.group);
        for staged in std::iter::once(group).chain(in_flight) {
            if let Some(found) = staged.record_of(id) {
                return found.map(Some);
            }
        }
        match self.ids.position(&self.index, id)? {
            None => Ok(None),
            Some(position) => {
                let found = self
                    .inner
                    .offsets
                    .read_range(position, 1, self.head.position)?
                    .pop();
                match found {
                    Some(rec) if rec.event_id == *id => Ok(Some(rec)),
                    _ => Err(ReadError::Corrupt {
                        position,
                        reason: Corruption::DanglingIdEntry { event_id: *id },
                    }),
                }
            }
        }
    }

    fn version_of(&mut self, group: &Group, stream: &StreamId) -> Result<StreamVersion, ReadError> {
        let in_flight = self
            .flight
            .as_ref()
            .and_then(|f| f.group.versions.get(stream));
        if let Some(v) = group
            .versions
            .get(stream)
            .or(in_flight)
            .or_else(|| self.versions.get(stream))
        {
            return Ok(*v);
        }
        let v = self.index.stream_version(stream, self.head.position)?;
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
        // Encode everything first, so a failure stages nothing.
        let mark = group.buf.len();
        let mut slots = Vec::with_capacity(events.len());
        let mut head = group.head;
        let mut version = actual;
        for e in events {
            let position = match head.position.next() {
                Some(p) => p,
                None => {
                    group.buf.truncate(mark);
                    return Err(AppendError::LogFull(head.position));
                }
            };
            version = StreamVersion(version.0 + 1);
            let place = Placement {
                position,
                stream_id: stream,
                stream_version: version,
                recorded_at,
                prev_hash: head.hash,
            };
            let start = group.buf.len();
            match codec::encode_frame_into(e, &place, &mut group.buf) {
                Ok(hash) => head = Head { position, hash },
                Err(err) => {
                    group.buf.truncate(mark);
                    return Err(err.into());
                }
            }
            slots.push(start..group.buf.len());
        }
        let first_position = group.head.position.next().unwrap_or(head.position);
        let mut position = first_position;
        for (e, slot) in events.iter().zip(slots) {
            group.slots.push(slot);
            group.work.ids.push((e.event_id, position));
            position = Position(position.0 + 1);
        }
        let count = u64::try_from(events.len()).unwrap_or(u64::MAX);
        group.work.runs.push((
            stream.clone(),
            StreamRun {
                first_version: StreamVersion(actual.0 + 1),
                first_position,
                count,
            },
        ));
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
