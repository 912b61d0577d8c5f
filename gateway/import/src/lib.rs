//! `crm-import`: bringing CRM exports into the log. The import framework: importers turn
//! source rows into domain commands, the aggregates decide the events, and [`run`] appends
//! them in batches, idempotently. Built on `crm-app` (proposed events, ids); knows neither
//! HTTP nor the command line.
//!
//! An importer builds a [`Plan`]: the source rows grouped into [`Unit`]s (a row, or the rows
//! of one case), each either a list of [`Staged`] events or the [`RowError`] that rejects it.
//! Units never share a stream with a failed unit's uncommitted state: importers fold aggregate
//! state only for accepted units.
//!
//! **Invariant:** event ids are UUID v5 of (source, row key, event kind), and every field of a
//! proposed event (metadata, correlation id, actor) is a function of the source, so importing
//! the same file twice appends nothing the second time (the store answers `already_present`).
//!
//! **Invariant:** with [`OnError::Stop`] nothing of a batch that holds a bad unit is appended.

mod runner;
pub mod source;

pub mod helpdesk;
pub mod jsonl;
pub mod mapping;
pub mod maven;
pub mod telco;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use crm_domain::{DomainEvent, EncodedEvent};
use crm_eventstore::{AppendError, EventId, ProposedEvent, StreamId};

pub use crm_app::config::OnError;

use crm_app::ids;
use crm_app::propose::{proposed_event, Provenance};

pub(crate) use runner::Appender;
pub use runner::{run, RunOptions};

/// Rows (units) validated and appended together; a bad unit in stop mode holds back its batch.
pub const BATCH_UNITS: usize = 500;

/// Bad rows listed in a summary with `--on-error=skip`; the rest are only counted.
pub const BAD_ROWS_LISTED_MAX: usize = 20;

/// A column of a source file: 1-based index and header name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnRef {
    /// 1-based position in the row.
    pub index: usize,
    /// Header name.
    pub name: String,
}

/// Why one row (or unit) of a source was rejected: where, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}{}: {reason}", column.as_ref().map(|c| format!(": column {} `{}`", c.index, c.name)).unwrap_or_default())]
pub struct RowError {
    /// File name.
    pub file: String,
    /// 1-based line number (the header is line 1).
    pub line: u64,
    /// The column at fault, if one value is.
    pub column: Option<ColumnRef>,
    /// What is wrong and how to fix it.
    pub reason: String,
}

/// Why an import failed as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// A source file could not be read.
    #[error("could not read {path}: {source}; check the path and its permissions")]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not well-formed CSV.
    #[error(
        "{file}:{line}: not valid CSV: {reason}; check the delimiter, quoting and encoding (UTF-8)"
    )]
    Csv {
        /// File name.
        file: String,
        /// Line of the problem.
        line: u64,
        /// The parser's message.
        reason: String,
    },
    /// A required column is missing from the header.
    #[error("{file}:1: missing column `{column}`; the header has: {found}. Export the file with that column or fix the mapping")]
    MissingColumn {
        /// File name.
        file: String,
        /// The missing column.
        column: String,
        /// The columns the header has.
        found: String,
    },
    /// More rows than one import accepts.
    #[error("{file} has more than {limit} rows; split it into several files")]
    TooLarge {
        /// File name.
        file: String,
        /// The limit.
        limit: usize,
    },
    /// A mapping file is invalid.
    #[error("mapping {file}: {reason}")]
    Mapping {
        /// Mapping file name.
        file: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A bad row stopped the import (`--on-error=stop`).
    #[error("import stopped at {row}\nnothing from that row's batch was appended ({appended} events appended by earlier batches, {already_present} already present); fix the row and import again (already imported rows are skipped), or use --on-error=skip")]
    Stopped {
        /// The first bad row.
        row: RowError,
        /// Events appended before the failing batch.
        appended: u64,
        /// Events found already present before the failing batch.
        already_present: u64,
    },
    /// A row imported before decides another event now: the log keeps what it recorded.
    #[error("{file}: stream `{stream}`: the event this source's earlier import recorded at position {position} (`crm events --from {position} --limit 1` shows it and its row's line) differs from what its row decides now: the row changed since it was imported, and importing it again cannot change what the log holds. Record the change with a command (or as a new row with a key of its own), or restore the row")]
    Changed {
        /// The file imported.
        file: String,
        /// The stream.
        stream: String,
        /// Position of the recorded event.
        position: u64,
    },
    /// The store refused an append.
    #[error("appending to stream `{stream}` failed: {source}")]
    Append {
        /// The stream.
        stream: String,
        /// The store's error.
        source: AppendError,
    },
    /// A domain event could not be encoded (a bug).
    #[error("reading stream `{stream}` from the log failed: {reason}")]
    ReadLog {
        /// The stream.
        stream: String,
        /// Why.
        reason: String,
    },
    #[error("could not encode an event: {0}")]
    Encode(String),
    /// An append task failed to run (a bug or a shutdown).
    #[error("an append task failed: {0}")]
    Task(String),
}

/// Where an imported event came from: recorded in its metadata for auditors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRow {
    /// Importer name (`"maven-crm"`).
    pub importer: &'static str,
    /// File name.
    pub file: String,
    /// 1-based line of the row.
    pub line: u64,
    /// The row's key in the source (`"1C1I7A6R"`, `"case 5 row 3"`).
    pub key: String,
    /// SHA-256 (hex) of the whole file's content, for the importers that identify a source by
    /// its content as well as its name (the mapping importer); recorded in the metadata.
    pub content_sha256: Option<String>,
}

/// Which stream version an append expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The version this import's fold reached (`Exact`).
    Fold,
    /// The stream must be at exactly this version before the event (`Exact`).
    Exact(u64),
    /// No check.
    Any,
    /// The event is in the log already, at this position: an earlier import of the same
    /// source recorded it (found while deciding), and it is proposed again with that record's
    /// id and provenance. It is appended on its own, so the store either confirms it unchanged
    /// (`already present`) or refuses it as changed; it does not move the version the
    /// stream's new events expect.
    Recorded(u64),
}

/// One event ready to append.
#[derive(Debug, Clone)]
pub struct Staged {
    /// Target stream.
    pub stream: StreamId,
    /// The event.
    pub event: ProposedEvent,
    /// Expected version for the append (only the first event of a stream in a batch counts).
    pub expect: Expect,
}

/// Rows that belong together (one CSV row, or the rows of one case) and their events.
#[derive(Debug, Clone, Default)]
pub struct Unit {
    /// Source rows covered.
    pub rows: u64,
    /// Events in order.
    pub events: Vec<Staged>,
}

/// Units decided together and handed to the appending side at once (a streaming import's
/// step; [`run`] cuts a [`Plan`] into these).
#[derive(Debug, Default)]
pub struct Batch {
    /// Units in source order.
    pub units: Vec<Result<Unit, RowError>>,
    /// Source rows the units cover (a refused group is one unit of several rows).
    pub rows: u64,
    /// Streams first read from the log for these units' decisions: their version there,
    /// where their first append expects them to be.
    pub initial_versions: std::collections::HashMap<String, u64>,
}

/// What an importer made of its sources, before anything is appended.
#[derive(Debug, Default)]
pub struct Plan {
    /// Importer name.
    pub importer: &'static str,
    /// Source file names.
    pub files: Vec<String>,
    /// Units in source order.
    pub units: Vec<Result<Unit, RowError>>,
    /// Data-cleansing notes and documented choices, shown in the summary.
    pub notes: Vec<String>,
    /// Streams the plan continues from the log (decided against their state there): their
    /// version in the log when planned, where their first append expects them to be.
    pub initial_versions: std::collections::HashMap<String, u64>,
    /// Source rows, when units group several rows (a refused group is one error).
    pub rows_total: Option<u64>,
}

impl Plan {
    /// Source rows covered by the plan (good and bad).
    #[must_use]
    pub fn rows(&self) -> u64 {
        if let Some(total) = self.rows_total {
            return total;
        }
        self.units
            .iter()
            .map(|u| match u {
                Ok(unit) => unit.rows,
                Err(_) => 1,
            })
            .sum()
    }
}

/// Turns domain events of one source row into staged events with deterministic ids and the
/// source recorded in metadata.
///
/// # Errors
/// [`ImportError::Encode`] if an event cannot be encoded (a bug).
pub fn stage(
    source: &SourceRow,
    events: Vec<DomainEvent>,
    cleansing: &[String],
) -> Result<Vec<Staged>, ImportError> {
    let encoded = events
        .iter()
        .map(DomainEvent::encode)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ImportError::Encode(e.to_string()))?;
    stage_encoded(source, encoded, cleansing)
}

/// As [`stage`], for events the aggregates already encoded (the registry's form).
///
/// # Errors
/// [`ImportError::Encode`] if the metadata cannot be encoded or a stream id is invalid.
pub fn stage_encoded(
    source: &SourceRow,
    events: Vec<EncodedEvent>,
    cleansing: &[String],
) -> Result<Vec<Staged>, ImportError> {
    let provenance = Provenance {
        actor: importing_principal().to_owned(),
        correlation_id: Some(ids::correlation_id(source.importer, &source.file)),
        causation_id: None,
        metadata: import_metadata(source, cleansing)?,
    };
    events
        .into_iter()
        .enumerate()
        .map(|(i, encoded)| {
            let stream = StreamId::new(encoded.stream_id.clone())
                .map_err(|e| ImportError::Encode(e.to_string()))?;
            let id = staged_event_id(source, i, encoded.event_type);
            Ok(Staged {
                stream,
                event: proposed_event(encoded, id, &provenance),
                expect: Expect::Fold,
            })
        })
        .collect()
}

/// The metadata of an imported event, `{"source": {"importer", "file", "line", "key"[,
/// "content_sha256"]}[, "cleansing": [...]]}`, in exactly this key order.
///
/// The bytes must not depend on how the program was built: the store compares a re-imported
/// event with the recorded one byte for byte. A `serde_json::Value` does not promise that: its
/// objects keep insertion order when any crate of the build enables serde_json's
/// `preserve_order` feature (a dev-dependency does, in builds with tests) and sort their keys
/// otherwise, so two builds of `crm` wrote the same import's metadata in two orders, and a
/// re-import with the other build was refused as an idempotency conflict. Serialising these
/// structs writes their fields in declaration order, whatever the features.
fn import_metadata(source: &SourceRow, cleansing: &[String]) -> Result<Vec<u8>, ImportError> {
    #[derive(serde::Serialize)]
    struct Metadata<'a> {
        source: Source<'a>,
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        cleansing: &'a [String],
    }
    #[derive(serde::Serialize)]
    struct Source<'a> {
        importer: &'a str,
        file: &'a str,
        line: u64,
        key: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        content_sha256: Option<&'a str>,
    }
    let meta = Metadata {
        source: Source {
            importer: source.importer,
            file: &source.file,
            line: source.line,
            key: &source.key,
            content_sha256: source.content_sha256.as_deref(),
        },
        cleansing,
    };
    serde_json::to_vec(&meta).map_err(|e| ImportError::Encode(e.to_string()))
}

/// The id of the `index`-th event (of type `event_type`) made from `source`'s row: UUID v5
/// of the importer and file name, the row's key and the event's kind.
#[must_use]
pub fn staged_event_id(source: &SourceRow, index: usize, event_type: &str) -> EventId {
    EventId(ids::event_id(
        &format!("{}/{}", source.importer, source.file),
        &source.key,
        &format!("{event_type}#{index}"),
    ))
}

/// The actor of imported events: the local user running the import (`local:<user>`); the
/// importer is recorded in each event's metadata (`source.importer`).
fn importing_principal() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| crm_app::access::local_principal().name)
}

/// A domain rule refused a command of an import: the aggregate's own error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(Box<dyn std::error::Error + Send + Sync>);

/// Runs one domain command on `state` and collects its events.
///
/// # Errors
/// [`Refused`] with the aggregate's reason; `state` and `out` are unchanged then.
pub fn execute<A>(
    state: &mut A,
    command: A::Command,
    out: &mut Vec<DomainEvent>,
) -> Result<(), Refused>
where
    A: crm_domain::Aggregate,
    A::Event: Into<DomainEvent>,
    A::Error: Send + Sync + 'static,
{
    let events = state.execute(&command).map_err(|e| Refused(Box::new(e)))?;
    out.extend(events.into_iter().map(Into::into));
    Ok(())
}

/// What an import did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImportSummary {
    /// Importer name.
    pub importer: String,
    /// Source files.
    pub files: Vec<String>,
    /// Source rows read.
    pub rows: u64,
    /// Events newly appended.
    pub appended: u64,
    /// Events that were already in the log (an earlier import of the same rows).
    pub already_present: u64,
    /// Events (appended or present) per event type.
    pub events_by_type: BTreeMap<String, u64>,
    /// Bad rows skipped (`--on-error=skip`).
    pub skipped_rows: u64,
    /// The first bad rows, as `file:line: column: reason`.
    pub bad_rows: Vec<String>,
    /// Data-cleansing notes and documented choices.
    pub notes: Vec<String>,
    /// Wall time of the import.
    #[serde(serialize_with = "seconds")]
    pub elapsed: Duration,
    /// First business time seen.
    pub occurred_from: Option<DateTime<Utc>>,
    /// Last business time seen.
    pub occurred_to: Option<DateTime<Utc>>,
    /// The recording time stated for every appended event (`crm import --recorded-at` with
    /// it repeats the import byte for byte in an empty log).
    pub recorded_at: Option<DateTime<Utc>>,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl ImportSummary {
    /// Events appended or already present.
    #[must_use]
    pub fn events(&self) -> u64 {
        self.appended + self.already_present
    }

    /// Rows per second over the wall time.
    #[must_use]
    pub fn rows_per_second(&self) -> f64 {
        per_second(self.rows, self.elapsed)
    }

    /// Events (appended or present) per second over the wall time.
    #[must_use]
    pub fn events_per_second(&self) -> f64 {
        per_second(self.events(), self.elapsed)
    }
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    // Counts stay far below 2^52; the conversion is exact in practice.
    #[allow(clippy::cast_precision_loss)]
    let count = count as f64;
    count / secs
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "import {} from {}", self.importer, self.files.join(", "))?;
        writeln!(
            f,
            "  {} rows -> {} events: {} appended, {} already present",
            self.rows,
            self.events(),
            self.appended,
            self.already_present
        )?;
        writeln!(
            f,
            "  {:.3} s, {:.0} rows/s, {:.0} events/s",
            self.elapsed.as_secs_f64(),
            self.rows_per_second(),
            self.events_per_second()
        )?;
        if let (Some(from), Some(to)) = (self.occurred_from, self.occurred_to) {
            writeln!(f, "  business time {from} .. {to}")?;
        }
        if let (Some(at), true) = (self.recorded_at, self.appended > 0) {
            writeln!(
                f,
                "  recorded at {} (repeat it in an empty log with --recorded-at {})",
                at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            )?;
        }
        for (event_type, count) in &self.events_by_type {
            writeln!(f, "  {event_type:<28} {count:>7}")?;
        }
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        if self.skipped_rows > 0 {
            writeln!(f, "  {} bad rows skipped; the first:", self.skipped_rows)?;
            for row in &self.bad_rows {
                writeln!(f, "    {row}")?;
            }
        }
        Ok(())
    }
}
