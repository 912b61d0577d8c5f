//! A mapping import as a stream: the file is read row by row, each row (or group of rows
//! with one key, near each other) decided against the state its streams have, and the units handed on in
//! batches of [`BATCH_UNITS`] while the appending side writes the batches before them. Memory
//! holds the open groups (at most [`GROUP_GAP_ROWS`] rows past their last), a batch or two, and per record the file touches its aggregate's
//! state (and per group key its lines): it grows with the records, not with the rows.
//!
//! A source's identity is its file name and its content: the file is read once first, to
//! count its rows and hash its content (SHA-256, recorded as `source.content_sha256`). Events
//! an earlier import of the same name, or of the same content under another name, recorded
//! are left out of the state rows are decided against, and an event decided again with the
//! id such an import gave it is proposed with that record's id and provenance: the store finds
//! it already present (or refuses it, if the row now decides something else).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use crm_domain::registry::{AggregateKind, DecideError, ErasedState};
use crm_domain::{EncodedEvent, Registry};
use crm_eventstore::{EventId, EventStore, RecordedEvent};
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::super::source::{self, CsvReader, Header, Row, Scan};
use super::super::{
    stage_encoded, staged_event_id, Appender, Batch, Expect, ImportError, ImportSummary, RowError,
    RunOptions, SourceRow, Staged, Unit, BATCH_UNITS,
};
use super::{
    compile, convert, insert_path, merge_list, null_empty_objects, read_mapping, Compiled, Mapping,
    NAME,
};

/// Batches decided ahead of the one being appended, at most.
const BATCHES_AHEAD: usize = 2;

/// Reads the events of a stream from the log, for [`super::plan_with_log`] and
/// [`MappingImport::decide`].
pub type StreamLoader<'a> = dyn FnMut(&str) -> Result<Vec<RecordedEvent>, ImportError> + 'a;

/// A [`StreamLoader`] that can move to the thread that decides, for [`run`].
pub type SendStreamLoader = dyn FnMut(&str) -> Result<Vec<RecordedEvent>, ImportError> + Send;

/// A mapping import ready to decide: the mapping read and checked against the command
/// schemas and the file's header, the file read once (CSV throughout, its data rows counted,
/// its content hashed).
pub struct MappingImport {
    spec: Mapping,
    mapping_file: String,
    delimiter: u8,
    path: PathBuf,
    file: String,
    scan: Scan,
}

impl MappingImport {
    /// Reads and checks `mapping`, checks the columns it names against `path`'s header, then
    /// reads `path` once through.
    ///
    /// # Errors
    /// [`ImportError::Mapping`] for an invalid mapping; [`ImportError::Io`],
    /// [`ImportError::Csv`] and [`ImportError::MissingColumn`] for the file.
    pub fn open(path: &Path, mapping: &Path, registry: &Registry) -> Result<Self, ImportError> {
        let (spec, mapping_file, delimiter) = read_mapping(mapping, registry)?;
        let file = {
            let reader = CsvReader::open(path, delimiter)?;
            compile(&spec, registry, reader.header(), &mapping_file)?;
            reader.header().file.clone()
        };
        let scan = source::scan(path, delimiter)?;
        Ok(Self {
            spec,
            mapping_file,
            delimiter,
            path: path.to_owned(),
            file,
            scan,
        })
    }

    /// The file's name (no directory).
    #[must_use]
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The file's data rows.
    #[must_use]
    pub fn rows(&self) -> u64 {
        self.scan.rows
    }

    /// SHA-256 (hex) of the file's content (of a `.gz`, its CSV text).
    #[must_use]
    pub fn content_sha256(&self) -> &str {
        &self.scan.content_sha256
    }

    /// Decides the file's rows in order against the state `load` reads from the log, and
    /// hands the units to `sink` in batches of [`BATCH_UNITS`]; returns the notes of the
    /// import's summary. With `group_by`, rows with the same value are one unit, decided in
    /// the order of their first rows; they may be interleaved with others, but a value that
    /// comes again after [`GROUP_GAP_ROWS`] rows without it refuses its rows (the file must
    /// be sorted by that column).
    ///
    /// # Errors
    /// The file cannot be read again (or changed: not CSV any more), or `sink` failed.
    pub fn decide(
        &self,
        registry: &Registry,
        load: &mut StreamLoader<'_>,
        sink: &mut dyn FnMut(Batch) -> Result<(), ImportError>,
    ) -> Result<Vec<String>, ImportError> {
        self.decide_with(registry, load, sink, None)
    }

    /// As [`MappingImport::decide`], for a `sink` that appends each batch before it takes the
    /// one [`BATCHES_AHEAD`] after it, to a log whose head was at position `since` when the
    /// import began. Then the state of a record no row touched for a while is let go once
    /// its events are durable, and read back from the log (with the events this import
    /// appended above `since`) if a later row touches it: memory holds at most
    /// [`STATES_KEPT_MAX`] records' states beyond the last few batches.
    ///
    /// # Errors
    /// As [`MappingImport::decide`].
    pub fn decide_appending(
        &self,
        registry: &Registry,
        load: &mut StreamLoader<'_>,
        sink: &mut dyn FnMut(Batch) -> Result<(), ImportError>,
        since: u64,
    ) -> Result<Vec<String>, ImportError> {
        self.decide_with(registry, load, sink, Some(since))
    }

    fn decide_with(
        &self,
        registry: &Registry,
        load: &mut StreamLoader<'_>,
        sink: &mut dyn FnMut(Batch) -> Result<(), ImportError>,
        since: Option<u64>,
    ) -> Result<Vec<String>, ImportError> {
        let handed = std::cell::Cell::new(0u64);
        let sink = &mut |batch: Batch| {
            handed.set(handed.get() + 1);
            sink(batch)
        };
        let mut reader = CsvReader::open(&self.path, self.delimiter)?;
        let header = reader.header().clone();
        let compiled = compile(&self.spec, registry, &header, &self.mapping_file)?;
        let mut decider = Decider {
            compiled: &compiled,
            header: &header,
            content_sha256: &self.scan.content_sha256,
            states: States::default(),
            occurrences: HashMap::new(),
            log: LogState {
                load,
                file: &self.file,
                content_sha256: &self.scan.content_sha256,
                since,
                fresh: HashMap::new(),
                continued: 0,
                aliases: BTreeSet::new(),
                recorded: HashMap::new(),
                pinned: BTreeSet::new(),
            },
            kept: since.map(|_| Kept {
                handed: &handed,
                last_touch: HashMap::new(),
                touches: std::collections::VecDeque::new(),
            }),
        };
        let mut batch = Batch::default();
        let mut open = OpenGroups::default();
        // Each group key that ended, with the lines of its group.
        let mut ended: HashMap<String, (u64, u64)> = HashMap::new();
        let mut number = 0u64;
        loop {
            let mut slot = Slot::default();
            let Some(line) = reader.read(&mut slot.record)? else {
                break;
            };
            number += 1;
            slot.line = line;
            slot.number = number;
            let Some(column) = compiled.group_column else {
                let unit = decider.unit(std::slice::from_ref(&slot));
                hand_on(&mut batch, unit, 1, &mut decider.log.fresh, sink)?;
                continue;
            };
            let key = slot
                .record
                .get(column)
                .unwrap_or_default()
                .trim()
                .to_owned();
            open.add(key, slot, &ended);
            while let Some(group) = open.closed(number) {
                let rows = group.slots.len();
                let unit = group.decide(&mut decider, column, &mut ended);
                hand_on(&mut batch, unit, rows, &mut decider.log.fresh, sink)?;
            }
        }
        if let Some(column) = compiled.group_column {
            while let Some(group) = open.pop() {
                let rows = group.slots.len();
                let unit = group.decide(&mut decider, column, &mut ended);
                hand_on(&mut batch, unit, rows, &mut decider.log.fresh, sink)?;
            }
        }
        if !batch.units.is_empty() {
            batch.initial_versions = std::mem::take(&mut decider.log.fresh);
            sink(batch)?;
        }
        let mut notes = vec![format!(
            "mapping {}; content sha256 {}",
            self.mapping_file, self.scan.content_sha256
        )];
        if decider.log.continued > 0 {
            notes.push(format!(
                "{} streams continued from the log (decided against their state there)",
                decider.log.continued
            ));
        }
        if !decider.log.aliases.is_empty() {
            notes.push(format!(
                "the same content was imported before as {}: its rows are not imported twice",
                decider
                    .log
                    .aliases
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(notes)
    }
}

/// Imports `import` into `store`: the rows are decided on a blocking thread (streams read with
/// `load`) while the batches decided before are appended, so neither the file nor its events
/// are ever held whole.
///
/// # Errors
/// As [`super::super::run`]; [`ImportError::Task`] if the deciding thread failed.
pub async fn run<S: EventStore>(
    store: &S,
    import: MappingImport,
    registry: Registry,
    load: Box<SendStreamLoader>,
    options: RunOptions,
) -> Result<ImportSummary, ImportError> {
    let mut appender = Appender::new(
        store,
        NAME,
        vec![import.file().to_owned()],
        import.rows(),
        options,
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(BATCHES_AHEAD);
    let since = store.head().position.0;
    let decider = tokio::task::spawn_blocking(move || {
        let mut load = load;
        import.decide_appending(
            &registry,
            &mut *load,
            &mut |batch| {
                tx.blocking_send(batch).map_err(|_| {
                    ImportError::Task(
                        "the appending side stopped before every row was decided".into(),
                    )
                })
            },
            since,
        )
    });
    let mut failed = None;
    while let Some(batch) = rx.recv().await {
        if let Err(e) = appender.append(batch).await {
            failed = Some(e);
            break;
        }
    }
    // The decider's next hand-on fails and it stops.
    drop(rx);
    let decided = decider
        .await
        .map_err(|e| ImportError::Task(e.to_string()))?;
    if let Some(e) = failed {
        return Err(e);
    }
    let notes = decided?;
    let mut summary = appender.finish();
    summary.notes = notes;
    Ok(summary)
}

/// Adds `unit` (of `rows` source rows) to `batch`, and hands the batch to `sink` once it is
/// full, with the streams read for it (`fresh`).
fn hand_on(
    batch: &mut Batch,
    unit: Result<Unit, RowError>,
    rows: usize,
    fresh: &mut HashMap<String, u64>,
    sink: &mut dyn FnMut(Batch) -> Result<(), ImportError>,
) -> Result<(), ImportError> {
    batch.units.push(unit);
    batch.rows += u64::try_from(rows).unwrap_or(u64::MAX);
    if batch.units.len() >= BATCH_UNITS {
        batch.initial_versions = std::mem::take(fresh);
        sink(std::mem::take(batch))?;
    }
    Ok(())
}

/// One data row kept while its group is read.
#[derive(Default)]
struct Slot {
    /// 1-based number of the data row.
    number: u64,
    line: u64,
    record: csv::StringRecord,
}

/// Rows of other groups that may come between two rows of one group: a group stays open
/// until this many rows passed without one of its own (an export that is grouped but not
/// strictly, such as an invoice whose lines a cancellation interrupts).
pub const GROUP_GAP_ROWS: u64 = 1_000;

/// Rows held in open groups at most: past it, the oldest open group is decided early (a
/// later row of its key is refused as coming again).
const GROUP_HELD_ROWS_MAX: usize = 100_000;

/// One group of rows with the same key.
struct Group {
    key: String,
    slots: Vec<Slot>,
    /// Number of its last data row.
    last: u64,
    /// The lines of this key's group, if one ended before: the rows are refused.
    earlier: Option<(u64, u64)>,
}

/// The groups being read, oldest first: each is decided, in the order of its first row, once
/// [`GROUP_GAP_ROWS`] rows passed without one of its own (or at the end of the file).
#[derive(Default)]
struct OpenGroups {
    groups: std::collections::VecDeque<Group>,
    /// Key → sequence number of its open group; the front group's is `first`.
    index: HashMap<String, u64>,
    first: u64,
    held: usize,
}

impl OpenGroups {
    /// Adds a row to its key's open group, or opens one.
    fn add(&mut self, key: String, slot: Slot, ended: &HashMap<String, (u64, u64)>) {
        self.held += 1;
        let number = slot.number;
        let open = self
            .index
            .get(&key)
            .and_then(|seq| seq.checked_sub(self.first))
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.groups.get_mut(i));
        if let Some(group) = open {
            group.slots.push(slot);
            group.last = number;
            return;
        }
        let seq = self.first + u64::try_from(self.groups.len()).unwrap_or(u64::MAX);
        self.index.insert(key.clone(), seq);
        self.groups.push_back(Group {
            earlier: ended.get(&key).copied(),
            key,
            slots: vec![slot],
            last: number,
        });
    }

    /// The oldest group, if no row of it came for [`GROUP_GAP_ROWS`] rows up to row `number`
    /// (or too many rows are held).
    fn closed(&mut self, number: u64) -> Option<Group> {
        let front = self.groups.front()?;
        let quiet = front.last.saturating_add(GROUP_GAP_ROWS) < number;
        if quiet || self.held > GROUP_HELD_ROWS_MAX {
            self.pop()
        } else {
            None
        }
    }

    /// The oldest group, whatever its state.
    fn pop(&mut self) -> Option<Group> {
        let group = self.groups.pop_front()?;
        self.first += 1;
        self.held = self.held.saturating_sub(group.slots.len());
        if self.index.get(&group.key) == Some(&(self.first - 1)) {
            self.index.remove(&group.key);
        }
        Some(group)
    }
}

impl Group {
    /// Decides the group (or refuses it, if its key came before) and notes that it ended.
    fn decide(
        self,
        decider: &mut Decider<'_, '_, '_>,
        column: usize,
        ended: &mut HashMap<String, (u64, u64)>,
    ) -> Result<Unit, RowError> {
        let rows = &self.slots[..];
        let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
            return Ok(Unit::default());
        };
        if let Some((from, to)) = self.earlier {
            let row = decider.header.row(first.line, &first.record);
            let name = decider
                .header
                .headers()
                .get(column)
                .cloned()
                .unwrap_or_default();
            let more = match rows.len() {
                1 => String::new(),
                n => format!(" (this row and the {} after it are refused)", n - 1),
            };
            return Err(row.error(
                column,
                format!(
                    "`{}` comes again after its group ended: its rows were lines {from}-{to}, and the rows of one group must follow each other, with at most {GROUP_GAP_ROWS} other rows between two of them{more}; sort the file by `{name}` (header first; a stable sort keeps each group's rows in order) and import it again",
                    self.key
                ),
            ));
        }
        ended.insert(self.key.clone(), (first.line, last.line));
        decider.unit(rows)
    }
}

/// Decides rows against the state of their streams: this import's decisions so far, on top
/// of what the log held when a stream was first touched.
struct Decider<'c, 'a, 'l> {
    compiled: &'c Compiled<'c>,
    header: &'c Header,
    content_sha256: &'c str,
    states: States,
    /// How often each key was seen: a key that repeats keys its later rows `KEY#2`, ...
    occurrences: HashMap<String, u32>,
    log: LogState<'a, 'l>,
    /// When the states of records are let go (appending imports only).
    kept: Option<Kept<'c>>,
}

/// Records' states beyond this many are let go once durable (appending imports).
pub const STATES_KEPT_MAX: usize = 10_000;

/// Batches handed on after the one a state was last touched in before that state is
/// durable: the appender takes a batch only when the one before it is appended, and at most
/// [`BATCHES_AHEAD`] wait between (so batch `b` is appended once batch `b + 4` is handed on).
const DURABLE_AFTER_BATCHES: u64 = BATCHES_AHEAD as u64 + 2;

/// Which records' states were touched when, for letting the oldest go.
struct Kept<'c> {
    /// Batches handed on so far.
    handed: &'c std::cell::Cell<u64>,
    /// Stream → the batch (count handed on) it was last touched in.
    last_touch: HashMap<String, u64>,
    /// Touches in order; an entry is stale once its stream was touched again.
    touches: std::collections::VecDeque<(String, u64)>,
}

impl Kept<'_> {
    /// Notes that `stream` was touched in the batch being built.
    fn touch(&mut self, stream: &str) {
        let now = self.handed.get();
        self.last_touch.insert(stream.to_owned(), now);
        self.touches.push_back((stream.to_owned(), now));
        if self.touches.len() > 4 * STATES_KEPT_MAX.max(self.last_touch.len()) {
            // Drop the stale entries: one per stream, oldest touch first.
            let mut live: Vec<(u64, String)> = self
                .last_touch
                .iter()
                .map(|(s, at)| (*at, s.clone()))
                .collect();
            live.sort();
            self.touches = live.into_iter().map(|(at, s)| (s, at)).collect();
        }
    }

    /// Lets go of the oldest durable states while more than [`STATES_KEPT_MAX`] are held;
    /// `pinned` streams are kept.
    fn let_go(&mut self, states: &mut States, pinned: &BTreeSet<String>) {
        let handed = self.handed.get();
        while let Some((stream, at)) = self.touches.front() {
            if self.last_touch.get(stream) != Some(at) {
                self.touches.pop_front(); // touched again since
                continue;
            }
            if pinned.contains(stream) {
                let stream = stream.clone();
                self.touches.pop_front();
                self.last_touch.remove(&stream);
                continue;
            }
            if states.0.len() <= STATES_KEPT_MAX
                || at.saturating_add(DURABLE_AFTER_BATCHES) > handed
            {
                break;
            }
            if let Some((stream, _)) = self.touches.pop_front() {
                states.0.remove(&stream);
                self.last_touch.remove(&stream);
            }
        }
    }
}

impl Decider<'_, '_, '_> {
    /// The unit of `rows` (one row, or a group): the events its commands decide, staged.
    fn unit(&mut self, rows: &[Slot]) -> Result<Unit, RowError> {
        let group: Vec<(u64, Row<'_>)> = rows
            .iter()
            .map(|s| (s.number, self.header.row(s.line, &s.record)))
            .collect();
        let Some(&(number, row)) = group.first() else {
            return Ok(Unit::default());
        };
        let key = self
            .compiled
            .key_column
            .map_or_else(|| row.line.to_string(), |c| row.raw(c).trim().to_owned());
        // A key that repeats (several rows of one aggregate) gets its occurrence number, so
        // every row's events have ids of their own, the same on every import (counted before
        // the row is decided, so fixing a refused row renumbers nothing).
        let seen = self.occurrences.entry(key.clone()).or_insert(0u32);
        *seen += 1;
        let key = if *seen == 1 {
            key
        } else {
            format!("{key}#{seen}")
        };
        for (_, r) in &group {
            r.check_width()?;
        }
        let mut overlay = States::default();
        let mut events: Vec<EncodedEvent> = Vec::new();
        for (command, kind, fields, guard, elements) in &self.compiled.commands {
            if let Some(guard) = guard {
                if !guard.admits(&row)? {
                    continue;
                }
            }
            let mut members = Vec::with_capacity(group.len());
            for (num, r) in &group {
                if elements.as_ref().map_or(Ok(true), |e| e.admits(r))? {
                    members.push((*num, *r));
                }
            }
            if members.is_empty() {
                continue;
            }
            let mut body = Map::new();
            let mut id = String::new();
            for (n, field) in fields.iter().enumerate() {
                // `lines[].product`: one list element per row of the group.
                if let Some((list, sub)) = field.name.split_once("[].") {
                    let mut items = Vec::with_capacity(members.len());
                    for (num, r) in &members {
                        let mut element = Map::new();
                        insert_path(&mut element, sub, convert(r, *num, field)?);
                        items.push(element);
                    }
                    merge_list(&mut body, list, items);
                    continue;
                }
                let value = convert(&row, number, field)?;
                if n == 0 {
                    id = value.as_str().unwrap_or_default().to_owned();
                }
                insert_path(&mut body, &field.name, value);
            }
            null_empty_objects(&mut body);
            let made = self
                .states
                .execute(
                    &mut overlay,
                    &mut self.log,
                    *kind,
                    &id,
                    &command.command,
                    body,
                )
                .map_err(|e| row.row_error(format!("{} {}: {e}", command.command, id)))?;
            events.extend(made);
        }
        let source = SourceRow {
            importer: NAME,
            file: row.file().to_owned(),
            line: row.line,
            key,
            content_sha256: Some(self.content_sha256.to_owned()),
        };
        let mut staged =
            stage_encoded(&source, events, &[]).map_err(|e| row.row_error(e.to_string()))?;
        self.log.adopt(&source, &mut staged);
        if let Some(kept) = self.kept.as_mut() {
            overlay.0.keys().for_each(|stream| kept.touch(stream));
        }
        self.states.commit(overlay);
        if let Some(kept) = self.kept.as_mut() {
            kept.let_go(&mut self.states, &self.log.pinned);
        }
        Ok(Unit {
            rows: u64::try_from(group.len()).unwrap_or(u64::MAX),
            events: staged,
        })
    }
}

/// Why one command of a row made no events.
#[derive(Debug, thiserror::Error)]
enum StepError {
    /// The row's values do not deserialize into the command.
    #[error(
        "the row's values do not make this command ({0}); check the mapping's fields and types"
    )]
    Parse(crm_domain::registry::CommandFault),
    /// The aggregate refused the command.
    #[error(transparent)]
    Decide(#[from] DecideError),
    /// The stream's state could not be read from the log.
    #[error("the stream's state in the log could not be read: {0}")]
    Load(String),
}

/// An event an earlier import of this source recorded: where, and its provenance.
struct Recorded {
    position: u64,
    metadata: Vec<u8>,
    correlation_id: Option<Uuid>,
    causation_id: Option<Uuid>,
    actor: String,
}

/// The log's side of deciding: reads a stream the first time a row touches it, keeps its
/// version there and the events this source recorded in it before.
struct LogState<'a, 'l> {
    load: &'a mut StreamLoader<'l>,
    /// This file's name.
    file: &'a str,
    /// This file's content hash.
    content_sha256: &'a str,
    /// The log's head when this import began, if it appends as it decides: this source's
    /// events above it are this import's own, part of the state a record is read back with.
    since: Option<u64>,
    /// Streams read since the last batch was handed on, with their version in the log.
    fresh: HashMap<String, u64>,
    /// Streams read that the log held events of.
    continued: usize,
    /// Other names this content was imported under.
    aliases: BTreeSet<String>,
    /// Events of streams read that this source recorded before, not yet decided again.
    recorded: HashMap<EventId, Recorded>,
    /// Streams that held events this source recorded before: their states are kept for the
    /// whole import (read back, those events would be left out again, though decided anew).
    pinned: BTreeSet<String>,
}

impl LogState<'_, '_> {
    /// The state of `stream` in the log, without the events this source imported before.
    fn state(
        &mut self,
        kind: &dyn AggregateKind,
        stream: &str,
    ) -> Result<Box<dyn ErasedState>, StepError> {
        let events = (self.load)(stream).map_err(|e| StepError::Load(e.to_string()))?;
        let mut state = kind.new_state();
        let mut version = 0u64;
        for event in events {
            version = event.stream_version.0;
            let own = self.since.is_some_and(|since| event.position.0 > since);
            if let Some(file) = self
                .imported_by_this_source(&event.metadata)
                .filter(|_| !own)
            {
                if self.since.is_some() {
                    self.pinned.insert(stream.to_owned());
                }
                if file != self.file {
                    self.aliases.insert(file);
                }
                self.recorded.insert(
                    event.event_id,
                    Recorded {
                        position: event.position.0,
                        metadata: event.metadata,
                        correlation_id: event.correlation_id,
                        causation_id: event.causation_id,
                        actor: event.actor,
                    },
                );
                continue;
            }
            state
                .fold(&event.event_type, event.schema_version, &event.payload)
                .map_err(|e| {
                    StepError::Load(format!("event at position {}: {e}", event.position))
                })?;
        }
        self.fresh.insert(stream.to_owned(), version);
        if version > 0 {
            self.continued += 1;
        }
        Ok(state)
    }

    /// The file name an event of this source was imported from (this file's, or another
    /// name of the same content), or `None` for any other event.
    fn imported_by_this_source(&self, metadata: &[u8]) -> Option<String> {
        #[derive(Deserialize)]
        struct Meta {
            source: Option<Src>,
        }
        #[derive(Deserialize)]
        struct Src {
            importer: Option<String>,
            file: Option<String>,
            content_sha256: Option<String>,
        }
        let source = serde_json::from_slice::<Meta>(metadata).ok()?.source?;
        if source.importer.as_deref() != Some(NAME) {
            return None;
        }
        let file = source.file?;
        (file == self.file || source.content_sha256.as_deref() == Some(self.content_sha256))
            .then_some(file)
    }

    /// Gives the events of `staged` that this source recorded before (by the id this file's
    /// name, or another name of its content, gives them) that record's id and provenance, so
    /// the store finds them present instead of appending them again.
    fn adopt(&mut self, source: &SourceRow, staged: &mut [Staged]) {
        if self.recorded.is_empty() {
            return;
        }
        for (i, s) in staged.iter_mut().enumerate() {
            let mut found = self
                .recorded
                .remove(&s.event.event_id)
                .map(|r| (s.event.event_id, r));
            for alias in &self.aliases {
                if found.is_some() {
                    break;
                }
                let named = SourceRow {
                    importer: source.importer,
                    file: alias.clone(),
                    line: source.line,
                    key: source.key.clone(),
                    content_sha256: None,
                };
                let id = staged_event_id(&named, i, &s.event.event_type);
                found = self.recorded.remove(&id).map(|r| (id, r));
            }
            if let Some((id, recorded)) = found {
                s.event.event_id = id;
                s.event.metadata = recorded.metadata;
                s.event.correlation_id = recorded.correlation_id;
                s.event.causation_id = recorded.causation_id;
                s.event.actor = recorded.actor;
                s.expect = Expect::Recorded(recorded.position);
            }
        }
    }
}

/// Aggregate state per stream id, folded from this file's accepted rows.
#[derive(Default)]
struct States(HashMap<String, Box<dyn ErasedState>>);

impl States {
    /// Runs command `name` on aggregate `id` of `kind`, on the row's `overlay` (copied from
    /// the committed state on first touch).
    fn execute(
        &self,
        overlay: &mut States,
        log: &mut LogState<'_, '_>,
        kind: &dyn AggregateKind,
        id: &str,
        name: &str,
        fields: Map<String, Value>,
    ) -> Result<Vec<EncodedEvent>, StepError> {
        let command = kind
            .parse_command(name, fields)
            .map_err(|e| StepError::Parse(e.fault))?;
        let stream = crm_domain::stream_id(kind.category(), id);
        if !overlay.0.contains_key(&stream) {
            let state = match self.0.get(&stream) {
                Some(state) => state.clone_state(),
                None => log.state(kind, &stream)?,
            };
            overlay.0.insert(stream.clone(), state);
        }
        let state = overlay
            .0
            .get_mut(&stream)
            .ok_or_else(|| StepError::Load(format!("no state for `{stream}`")))?;
        Ok(state.execute(command.as_ref())?)
    }

    /// Keeps the states of an accepted row.
    fn commit(&mut self, overlay: States) {
        self.0.extend(overlay.0);
    }
}
