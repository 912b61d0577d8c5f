//! Appends an import in batches: validate a batch, then append its streams' events in one
//! [`EventStore::append_batch`] per round (one durable write), in the order the source gives
//! them. [`run`] appends a whole [`Plan`]; an [`Appender`] takes batches as a streaming import
//! decides them.
//!
//! **Architecture Invariant:** an import is reproducible: the same files imported into an
//! empty log give the same records at the same positions, with the same chain hashes. The
//! order of appends is a function of the source alone (no task races another), event ids
//! and metadata come from the rows, and every record of one import is stamped with one
//! recording time, the import's start (or the time [`RunOptions::recorded_at`] states, to
//! repeat an earlier import byte for byte).

use std::collections::HashMap;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crm_eventstore::limits::{
    APPEND_EVENTS_MAX, APPEND_SIZE_MAX_BYTES, BATCH_EVENTS_MAX, BATCH_PARTS_MAX, READ_PAGE_MAX,
};
use crm_eventstore::{
    AppendError, AppendResult, EventId, EventStore, ExpectedVersion, ProposedEvent, RecordedAt,
    StreamAppend, StreamId, StreamVersion,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{
    Batch, Expect, ImportError, ImportSummary, OnError, Plan, Staged, Unit, BAD_ROWS_LISTED_MAX,
    BATCH_UNITS,
};

/// How to run an import.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// What to do with bad rows.
    pub on_error: OnError,
    /// Show a progress bar (only drawn on a terminal).
    pub progress: bool,
    /// The recording time of every event the import appends; `None` takes the time the
    /// import starts. An earlier import's time (the `recorded_at` of its records) repeats it
    /// byte for byte in an empty log. Never later than the store's clock; raised to the
    /// log's newest record when earlier.
    pub recorded_at: Option<DateTime<Utc>>,
}

/// One stream's share of a batch.
struct StreamJob {
    stream: StreamId,
    /// What the stream's first new event expects (`None` while it has only recorded ones).
    expect: Option<Expect>,
    /// The events in order, each with its position in the log if it is recorded already.
    events: Vec<(ProposedEvent, Option<u64>)>,
}

/// Appends `plan` to `store`.
///
/// # Errors
/// [`ImportError::Stopped`] at the first bad row with [`OnError::Stop`] (nothing of its batch
/// appended); [`ImportError::Append`] when the store refuses an append.
pub async fn run<S: EventStore>(
    store: &S,
    plan: Plan,
    options: RunOptions,
) -> Result<ImportSummary, ImportError> {
    let rows = plan.rows();
    let mut appender = Appender::new(store, plan.importer, plan.files, rows, options);
    appender.summary.notes = plan.notes;
    let mut initial_versions = Some(plan.initial_versions);
    let mut units = plan.units.into_iter().peekable();
    while units.peek().is_some() {
        let batch = Batch {
            units: units.by_ref().take(BATCH_UNITS).collect(),
            rows: 0,
            initial_versions: initial_versions.take().unwrap_or_default(),
        };
        appender.append(batch).await?;
    }
    let mut summary = appender.finish();
    summary.rows = rows;
    Ok(summary)
}

/// The appending side of an import: takes its batches in source order and keeps the summary,
/// the progress bar and the version each stream is at.
pub(crate) struct Appender<'s, S> {
    store: &'s S,
    options: RunOptions,
    /// The recording time of every event appended.
    recorded_at: RecordedAt,
    summary: ImportSummary,
    versions: HashMap<StreamId, u64>,
    bar: ProgressBar,
    started: Instant,
}

impl<'s, S: EventStore> Appender<'s, S> {
    /// An appender for an import of `files` by `importer`, of about `rows` source rows (the
    /// length of the progress bar).
    pub(crate) fn new(
        store: &'s S,
        importer: &str,
        files: Vec<String>,
        rows: u64,
        options: RunOptions,
    ) -> Self {
        let recorded_at = options.recorded_at.unwrap_or_else(Utc::now);
        Self {
            store,
            options,
            recorded_at: RecordedAt::Stated(recorded_at),
            summary: ImportSummary {
                importer: importer.to_owned(),
                files,
                recorded_at: Some(recorded_at),
                ..ImportSummary::default()
            },
            versions: HashMap::new(),
            bar: progress_bar(options.progress, rows),
            started: Instant::now(),
        }
    }

    /// Appends `batch`: all of it, its bad units left out and counted with
    /// [`OnError::Skip`], nothing of it at its first bad unit with [`OnError::Stop`].
    ///
    /// # Errors
    /// [`ImportError::Stopped`] at the first bad unit with [`OnError::Stop`];
    /// [`ImportError::Append`] when the store refuses an append.
    pub(crate) async fn append(&mut self, batch: Batch) -> Result<(), ImportError> {
        for (stream, version) in batch.initial_versions {
            if let Ok(stream) = StreamId::new(stream) {
                self.versions.entry(stream).or_insert(version);
            }
        }
        let mut good: Vec<Unit> = Vec::with_capacity(batch.units.len());
        for unit in batch.units {
            match unit {
                Ok(unit) => good.push(unit),
                Err(row) if self.options.on_error == OnError::Stop => {
                    self.bar.finish_and_clear();
                    return Err(ImportError::Stopped {
                        row,
                        appended: self.summary.appended,
                        already_present: self.summary.already_present,
                    });
                }
                Err(row) => {
                    self.summary.skipped_rows += 1;
                    if self.summary.bad_rows.len() < BAD_ROWS_LISTED_MAX {
                        self.summary.bad_rows.push(row.to_string());
                    }
                    self.bar.inc(1);
                }
            }
        }
        self.summary.rows += batch.rows;
        let rows: u64 = good.iter().map(|u| u.rows).sum();
        let jobs = group_by_stream(good, &mut self.summary);
        let skip = self.options.on_error == OnError::Skip;
        if let Err(e) = append_jobs(
            self.store,
            jobs,
            &mut self.versions,
            &mut self.summary,
            skip,
            self.recorded_at,
        )
        .await
        {
            self.bar.finish_and_clear();
            return Err(e);
        }
        self.bar.inc(rows);
        Ok(())
    }

    /// The summary of what was appended.
    pub(crate) fn finish(mut self) -> ImportSummary {
        self.bar.finish_and_clear();
        self.summary.elapsed = self.started.elapsed();
        self.summary
    }
}

fn progress_bar(enabled: bool, rows: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    // `stderr()` draws nothing when stderr is not a terminal.
    let bar = ProgressBar::with_draw_target(Some(rows), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} rows ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Groups a batch's events by stream, keeping each stream's order and first-seen order.
fn group_by_stream(units: Vec<Unit>, summary: &mut ImportSummary) -> Vec<StreamJob> {
    let mut index: HashMap<StreamId, usize> = HashMap::new();
    let mut jobs: Vec<StreamJob> = Vec::new();
    for Staged {
        stream,
        event,
        expect,
    } in units.into_iter().flat_map(|u| u.events)
    {
        *summary
            .events_by_type
            .entry(event.event_type.clone())
            .or_default() += 1;
        let at = event.occurred_at;
        summary.occurred_from = Some(summary.occurred_from.map_or(at, |t| t.min(at)));
        summary.occurred_to = Some(summary.occurred_to.map_or(at, |t| t.max(at)));
        let recorded = match expect {
            Expect::Recorded(position) => Some(position),
            Expect::Fold | Expect::Exact(_) | Expect::Any => None,
        };
        let i = match index.get(&stream) {
            Some(&i) => i,
            None => {
                index.insert(stream.clone(), jobs.len());
                jobs.push(StreamJob {
                    stream,
                    expect: None,
                    events: Vec::new(),
                });
                jobs.len() - 1
            }
        };
        let job = &mut jobs[i];
        if recorded.is_none() && job.expect.is_none() {
            job.expect = Some(expect);
        }
        job.events.push((event, recorded));
    }
    jobs
}

/// One append of a stream's job: events within the store's limits, either all new or all
/// recorded already (at consecutive positions, as one earlier append wrote them).
struct Chunk {
    events: Vec<ProposedEvent>,
    /// For recorded events, the position of the first.
    recorded: Option<u64>,
}

/// Splits one stream's events into appends within the store's limits, new events apart from
/// recorded ones.
fn chunks(events: Vec<(ProposedEvent, Option<u64>)>) -> Vec<Chunk> {
    let mut out: Vec<Chunk> = Vec::new();
    let mut size = 0usize;
    let mut last_position: Option<u64> = None;
    for (event, recorded) in events {
        let event_size = event.size_bytes();
        let fits = out.last().is_some_and(|last| {
            last.events.len() < APPEND_EVENTS_MAX
                && size + event_size <= APPEND_SIZE_MAX_BYTES
                && last.recorded.is_some() == recorded.is_some()
                && match (last_position, recorded) {
                    (Some(prev), Some(at)) => prev.checked_add(1) == Some(at),
                    _ => true,
                }
        });
        last_position = recorded;
        if fits {
            size += event_size;
            if let Some(last) = out.last_mut() {
                last.events.push(event);
            }
        } else {
            size = event_size;
            out.push(Chunk {
                events: vec![event],
                recorded,
            });
        }
    }
    out
}

/// A stream's job while its appends are sent.
struct Going {
    stream: StreamId,
    /// The version the next append expects (`None`: any).
    version: Option<u64>,
    chunks: std::vec::IntoIter<Chunk>,
    appended: u64,
    present: u64,
    /// Set once the job met an error: its later appends are not sent.
    stopped: bool,
}

/// Appends the streams' jobs in rounds: round k sends the k-th append of every job still
/// going, in the jobs' order, as [`EventStore::append_batch`]es within the batch limits. The
/// order of the records is thus the source's, whatever the timing. With `skip`, a stream
/// whose recorded event its row no longer decides ([`ImportError::Changed`]) keeps what it
/// holds: the rest of its job is left out and the conflict counted and listed as a skipped
/// row.
async fn append_jobs<S: EventStore>(
    store: &S,
    jobs: Vec<StreamJob>,
    versions: &mut HashMap<StreamId, u64>,
    summary: &mut ImportSummary,
    skip: bool,
    recorded_at: RecordedAt,
) -> Result<(), ImportError> {
    let file = summary.files.join(", ");
    let mut going: Vec<Going> = jobs
        .into_iter()
        .map(|job| {
            let version = match job.expect.unwrap_or(Expect::Fold) {
                Expect::Fold | Expect::Recorded(_) => {
                    Some(versions.get(&job.stream).copied().unwrap_or(0))
                }
                Expect::Exact(v) => Some(v),
                Expect::Any => None,
            };
            Going {
                stream: job.stream,
                version,
                chunks: chunks(job.events).into_iter(),
                appended: 0,
                present: 0,
                stopped: false,
            }
        })
        .collect();
    let mut first_error: Option<ImportError> = None;
    loop {
        let round: Vec<(usize, Chunk)> = going
            .iter_mut()
            .enumerate()
            .filter(|(_, g)| !g.stopped)
            .filter_map(|(i, g)| g.chunks.next().map(|c| (i, c)))
            .collect();
        if round.is_empty() {
            break;
        }
        for slice in within_batch_limits(round) {
            let parts: Vec<StreamAppend> = slice
                .iter()
                .map(|(i, chunk)| StreamAppend {
                    stream: going[*i].stream.clone(),
                    expected: going[*i].version.map_or(ExpectedVersion::Any, |v| {
                        ExpectedVersion::Exact(StreamVersion(v))
                    }),
                    events: chunk.events.clone(),
                })
                .collect();
            let results = store
                .append_batch(parts, recorded_at)
                .await
                .map_err(|source| ImportError::Append {
                    stream: slice
                        .first()
                        .map(|(i, _)| going[*i].stream.to_string())
                        .unwrap_or_default(),
                    source,
                })?;
            for ((i, chunk), result) in slice.into_iter().zip(results) {
                let g = &mut going[i];
                let count = u64::try_from(chunk.events.len()).unwrap_or(u64::MAX);
                let expected = g.version.map_or(ExpectedVersion::Any, |v| {
                    ExpectedVersion::Exact(StreamVersion(v))
                });
                let result = match result {
                    Err(refused @ AppendError::IdempotencyConflict { .. })
                        if chunk.recorded.is_none() =>
                    {
                        resend_with_recorded_metadata(store, &g.stream, expected, chunk.events)
                            .await
                            .unwrap_or(Err(refused))
                    }
                    other => other,
                };
                match result {
                    Ok(r) => {
                        if r.already_present {
                            g.present += count;
                        } else {
                            g.appended += count;
                        }
                        // Events found recorded leave the stream where it is; the new ones
                        // were decided against its state in the log.
                        if !(chunk.recorded.is_some() && r.already_present) {
                            g.version = Some(r.stream_version.0);
                        }
                    }
                    Err(AppendError::IdempotencyConflict { .. }) if chunk.recorded.is_some() => {
                        // What was appended before stays counted, with the stream's version.
                        g.stopped = true;
                        let changed = ImportError::Changed {
                            file: file.clone(),
                            stream: g.stream.to_string(),
                            position: chunk.recorded.unwrap_or_default(),
                        };
                        if skip {
                            summary.skipped_rows += 1;
                            if summary.bad_rows.len() < BAD_ROWS_LISTED_MAX {
                                summary.bad_rows.push(changed.to_string());
                            }
                        } else {
                            first_error.get_or_insert(changed);
                        }
                    }
                    Err(source) => {
                        g.stopped = true;
                        first_error.get_or_insert(ImportError::Append {
                            stream: g.stream.to_string(),
                            source,
                        });
                    }
                }
            }
        }
    }
    for g in going {
        summary.appended += g.appended;
        summary.already_present += g.present;
        if let Some(v) = g.version {
            versions.insert(g.stream, v);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Splits a round into slices of at most [`BATCH_PARTS_MAX`] appends and
/// [`BATCH_EVENTS_MAX`] events, keeping their order.
fn within_batch_limits(round: Vec<(usize, Chunk)>) -> Vec<Vec<(usize, Chunk)>> {
    let mut slices: Vec<Vec<(usize, Chunk)>> = Vec::new();
    let mut events = 0usize;
    for item in round {
        let n = item.1.events.len();
        match slices.last_mut() {
            Some(last) if last.len() < BATCH_PARTS_MAX && events + n <= BATCH_EVENTS_MAX => {
                events += n;
                last.push(item);
            }
            _ => {
                events = n;
                slices.push(vec![item]);
            }
        }
    }
    slices
}

/// A chunk of events decided as new that the store refused as an idempotency conflict,
/// sent again with the recorded metadata bytes when the recorded events differ from these
/// only in how their metadata's JSON is written (the same object, its keys in another
/// order), so the store confirms the events as already present. `None` when they differ in
/// more than that: the conflict stands.
///
/// Such logs exist: builds of `crm` before the importers wrote their metadata from a fixed
/// struct encoded it through a `serde_json::Value`, whose key order depended on the build's
/// serde_json features (sorted, or in insertion order), so a re-import with another build
/// proposed the same metadata in other bytes.
async fn resend_with_recorded_metadata<S: EventStore>(
    store: &S,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<ProposedEvent>,
) -> Option<Result<AppendResult, AppendError>> {
    let events = with_recorded_metadata(store, stream, events).await?;
    Some(store.append(stream, expected, events).await)
}

/// `events` with the metadata bytes of their records in `stream`, where some are written
/// differently but parse to the same JSON; `None` when an event is not recorded in `stream`,
/// a metadata differs in content, none differs at all, or the stream cannot be read.
async fn with_recorded_metadata<S: EventStore>(
    store: &S,
    stream: &StreamId,
    mut events: Vec<ProposedEvent>,
) -> Option<Vec<ProposedEvent>> {
    let mut wanted: HashMap<EventId, Option<Vec<u8>>> =
        events.iter().map(|e| (e.event_id, None)).collect();
    let mut missing = wanted.len();
    let mut from = StreamVersion(1);
    while missing > 0 {
        let page = store.read_stream(stream, from, READ_PAGE_MAX).await.ok()?;
        let last = page.last()?.stream_version;
        for record in page {
            if let Some(slot @ None) = wanted.get_mut(&record.event_id) {
                *slot = Some(record.metadata);
                missing -= 1;
            }
        }
        from = StreamVersion(last.0.checked_add(1)?);
    }
    let mut adopted = false;
    for event in &mut events {
        let recorded = wanted.get_mut(&event.event_id)?.take()?;
        if recorded == event.metadata {
            continue;
        }
        let same = match (
            serde_json::from_slice::<serde_json::Value>(&recorded),
            serde_json::from_slice::<serde_json::Value>(&event.metadata),
        ) {
            (Ok(a), Ok(b)) => same_json(&a, &b),
            _ => false,
        };
        if !same {
            return None;
        }
        event.metadata = recorded;
        adopted = true;
    }
    adopted.then_some(events)
}

/// Whether two JSON values are equal, objects compared as sets of members (whatever order
/// the `Map` of this build keeps).
fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| same_json(v, w)))
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(v, w)| same_json(v, w))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u128) -> ProposedEvent {
        ProposedEvent {
            event_id: EventId(uuid::Uuid::from_u128(n)),
            event_type: "Noted".into(),
            schema_version: 1,
            occurred_at: chrono::DateTime::UNIX_EPOCH,
            causation_id: None,
            correlation_id: None,
            actor: "test".into(),
            metadata: Vec::new(),
            payload: b"{}".to_vec(),
        }
    }

    #[test]
    fn recorded_events_are_appended_apart_from_new_ones_and_by_runs_of_positions() {
        let events = vec![
            (event(1), Some(10)),
            (event(2), Some(11)),
            (event(3), None),
            (event(4), None),
            (event(5), Some(12)),
            (event(6), Some(20)),
        ];
        let shape: Vec<(usize, Option<u64>)> = chunks(events)
            .iter()
            .map(|c| (c.events.len(), c.recorded))
            .collect();
        assert_eq!(
            shape,
            [(2, Some(10)), (2, None), (1, Some(12)), (1, Some(20))]
        );
    }

    #[test]
    fn json_objects_are_the_same_whatever_the_order_of_their_members() {
        let parse = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap();
        let a =
            parse(r#"{"source":{"importer":"m","file":"f","line":2,"key":"k"},"cleansing":["x"]}"#);
        let b =
            parse(r#"{"cleansing":["x"],"source":{"file":"f","importer":"m","key":"k","line":2}}"#);
        assert!(same_json(&a, &b));
        let c =
            parse(r#"{"cleansing":["x"],"source":{"file":"f","importer":"m","key":"k","line":3}}"#);
        assert!(!same_json(&a, &c));
        let d = parse(r#"{"source":{"importer":"m","file":"f","line":2,"key":"k"}}"#);
        assert!(!same_json(&a, &d));
        assert!(!same_json(&parse("[1,2]"), &parse("[2,1]")));
    }

    #[tokio::test]
    async fn a_recorded_event_whose_metadata_is_written_in_another_key_order_is_present() {
        let store = crm_eventstore::MemoryStore::new();
        let stream = StreamId::new("note-1").unwrap();
        let mut recorded = event(1);
        recorded.metadata = br#"{"b":1,"a":{"d":2,"c":3}}"#.to_vec();
        store
            .append(&stream, ExpectedVersion::NoStream, vec![recorded])
            .await
            .unwrap();
        let mut proposed = event(1);
        proposed.metadata = br#"{"a":{"c":3,"d":2},"b":1}"#.to_vec();
        let expected = ExpectedVersion::Exact(StreamVersion(0));
        let result =
            resend_with_recorded_metadata(&store, &stream, expected, vec![proposed.clone()])
                .await
                .unwrap()
                .unwrap();
        assert!(result.already_present);
        // Other content stays a conflict.
        proposed.metadata = br#"{"a":{"c":3,"d":2},"b":2}"#.to_vec();
        let refused =
            resend_with_recorded_metadata(&store, &stream, expected, vec![proposed]).await;
        assert!(refused.is_none());
        let mut changed = event(1);
        changed.metadata = br#"{"a":{"c":3,"d":2},"b":1}"#.to_vec();
        changed.payload = br#"{"x":1}"#.to_vec();
        // Its metadata is adopted, and the store refuses the other payload.
        let refused = resend_with_recorded_metadata(&store, &stream, expected, vec![changed]).await;
        assert!(matches!(
            refused,
            Some(Err(AppendError::IdempotencyConflict { .. }))
        ));
    }
}
