//! `crm export`: the log's events, the read models and the metric answers as Apache Parquet
//! files that analysts' engines (DuckDB, Spark, pandas, Polars) read directly, written
//! incrementally: a second export into the same directory adds only the events recorded since
//! the first.
//!
//! Layout under the output directory (stable; a change bumps [`FORMAT_VERSION`]):
//!
//! ```text
//! OUT/_export.json                                   the manifest (manifest.rs), written last
//! OUT/events/event_type=<Type>/month=<YYYY-MM>/part-<first position>-<last position>.parquet
//! OUT/read_models/<name>.parquet                      pipeline, churn, lifetime-value, sla
//! OUT/metrics/<metric id>/v<version>.parquet          the default version of every metric
//! ```
//!
//! Positions in part names have 20 digits, so names sort in log order. `month` is the UTC
//! month of `occurred_at` (business time). An event file has the envelope's columns
//! ([`events::COMMON_COLUMNS`]), then one typed column per payload field of its type,
//! planned from the domain's JSON Schema of the type (`columns.rs`): nested objects are
//! flattened with `_` (a `Money` field `amount` becomes `amount_minor_units` and
//! `amount_currency`), lists and free-form maps are JSON text. Payloads are decoded through
//! the domain, so an old schema version is upcast and the columns are always those of the
//! current version (`schema_version` says how the event was stored).
//!
//! **Invariants.** Personal data never leaves: the fields the schema marks personal
//! (`TypeSchema::personal_fields`) have no column, since an export file cannot be erased;
//! the access-token register's events are withheld too (they hold secret hashes), counted in
//! the manifest, and so is every event's metadata (an import's source file and row). A payload field the schema does not name is an error naming the position,
//! never a dropped value. Every file is written under a temporary name, synced and renamed,
//! and the manifest is replaced last, so an interrupted export leaves the previous manifest
//! and its files valid (the next export removes the part files no manifest lists). A second
//! export first checks that the log still holds the manifest's last position with the same
//! chain hash, and refuses otherwise. Memory is bounded: the log is read page by page and a
//! partition's rows go to a file once they reach [`PARTITION_ROWS_MAX`] (or all buffered rows
//! reach [`BUFFERED_ROWS_MAX`]); read models and metric answers are rewritten whole each
//! time.
//!
//! Start reading at [`export`]; `events.rs` streams the log, `columns.rs` maps schemas to
//! columns, `tables.rs` writes the read models and metric answers, `manifest.rs` is the
//! manifest and the atomic file writes.

mod columns;
mod error;
mod events;
mod manifest;
mod parquet_file;
mod tables;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crm_eventstore::{AnyStore, EventStore, Position};
use crm_projections::ReadModelConfig;
use serde::Serialize;

pub use columns::{plan_catalog, ColumnType, PayloadColumn, TypePlan};
pub use error::ExportError;
pub use events::COMMON_COLUMNS;
pub use manifest::{FileEntry, Manifest, TableEntry, MANIFEST_FILE};

/// Version of the layout and of the manifest this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Rows of one partition (event type and month) buffered before they are written as a part
/// file.
pub const PARTITION_ROWS_MAX: usize = 64 * 1024;
/// Rows buffered over all partitions; past it the largest partition is written out (a row
/// takes about 1 KiB while buffered, so the buffers stay near 128 MiB at most).
pub const BUFFERED_ROWS_MAX: usize = 128 * 1024;
/// Rows of one Parquet row group.
pub const ROW_GROUP_ROWS_MAX: usize = 64 * 1024;
/// Folder of the event files.
pub const EVENTS_DIR: &str = "events";
/// Folder of the read models' files.
pub const READ_MODELS_DIR: &str = "read_models";
/// Folder of the metric answers' files.
pub const METRICS_DIR: &str = "metrics";

/// What to export and where.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The output directory (created if missing).
    pub out: PathBuf,
    /// Where the read models keep their snapshots (the configuration's projections folder).
    pub projections_dir: PathBuf,
    /// The read models' configuration.
    pub read_models: ReadModelConfig,
    /// "Now" for the read models' reports.
    pub as_of: DateTime<Utc>,
    /// Whether to write the read models and metric answers (the events always).
    pub tables: bool,
}

/// Where an export stands, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Events exported up to `position`, of `head`.
    Events {
        /// Last position read.
        position: u64,
        /// The head the export runs to.
        head: u64,
    },
    /// Writing the read models.
    ReadModels,
    /// Evaluating and writing the metric answers: `done` of `total`.
    Metrics {
        /// Metrics written.
        done: usize,
        /// Metrics to write.
        total: usize,
    },
}

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// The output directory.
    pub out: PathBuf,
    /// Whether an earlier export was continued.
    pub incremental: bool,
    /// Positions exported by this run: `first..=last` (none when the log had nothing new).
    pub first_position: Option<u64>,
    /// The last position exported (the manifest's).
    pub last_position: u64,
    /// Events written by this run.
    pub events: u64,
    /// Events of the access-token register withheld by this run.
    pub withheld: u64,
    /// Event part files written by this run.
    pub event_files: usize,
    /// Bytes of those files.
    pub event_bytes: u64,
    /// Read model and metric files written by this run.
    pub table_files: usize,
    /// Bytes of those files.
    pub table_bytes: u64,
    /// Metrics without a file, with the reason (no data, not computable, a query error).
    pub metrics_skipped: Vec<(String, String)>,
    /// Part files of an interrupted export removed before writing.
    pub orphans_removed: usize,
    /// Bytes of all event files the manifest lists (every export so far).
    pub total_event_bytes: u64,
    /// Time spent on the events.
    #[serde(with = "duration_ms")]
    pub events_elapsed: Duration,
    /// Time spent bringing the read models to the head and writing them.
    #[serde(with = "duration_ms")]
    pub read_models_elapsed: Duration,
    /// Time spent evaluating and writing the metric answers.
    #[serde(with = "duration_ms")]
    pub metrics_elapsed: Duration,
    /// Time of the whole run.
    #[serde(with = "duration_ms")]
    pub elapsed: Duration,
}

impl ExportReport {
    /// Events written per second of the event phase.
    #[must_use]
    pub fn events_per_second(&self) -> f64 {
        let seconds = self.events_elapsed.as_secs_f64();
        if seconds > 0.0 {
            // Event counts stay far below 2^52: exact in f64.
            #[allow(clippy::cast_precision_loss)]
            let events = self.events as f64;
            events / seconds
        } else {
            0.0
        }
    }
}

mod duration_ms {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u128(d.as_millis())
    }
}

/// Exports `store` into `options.out`: the events after the last exported position (all of
/// them the first time), then, when `options.tables`, the read models and the default
/// version of every metric, then the manifest.
///
/// # Errors
/// [`ExportError`]: the log no longer holds what the manifest says was exported, an event
/// that does not decode or has a field its schema does not name, a read or write failure.
pub async fn export(
    store: &AnyStore,
    options: &ExportOptions,
    mut progress: impl FnMut(Progress) + Send,
) -> Result<ExportReport, ExportError> {
    let started = Instant::now();
    manifest::create_dir(&options.out)?;
    let previous = Manifest::read(&options.out)?;
    let after = match &previous {
        Some(m) => check_continuation(store, m).await?,
        None => Position::ZERO,
    };
    let orphans_removed = manifest::remove_orphans(&options.out, previous.as_ref())?;
    let mut next = previous.clone().unwrap_or_else(Manifest::empty);

    let plans = plan_catalog()?;
    let head = store.head();
    let events_started = Instant::now();
    let written =
        events::export_events(store, &options.out, &plans, after, head, &mut progress).await?;
    let events_elapsed = events_started.elapsed();
    next.add_events(&written, head);

    let mut table_files = 0;
    let mut table_bytes = 0;
    let mut metrics_skipped = Vec::new();
    let (mut read_models_elapsed, mut metrics_elapsed) = (Duration::ZERO, Duration::ZERO);
    if options.tables {
        progress(Progress::ReadModels);
        let phase = Instant::now();
        let models = tables::write_read_models(store.clone(), options).await?;
        read_models_elapsed = phase.elapsed();
        let phase = Instant::now();
        let metrics = tables::write_metrics(store, &options.out, &mut progress).await?;
        metrics_elapsed = phase.elapsed();
        for entry in models.iter().chain(metrics.written.iter()) {
            table_files += 1;
            table_bytes += entry.bytes;
        }
        next.read_models = models;
        next.metrics = metrics.written;
        next.metrics_skipped.clone_from(&metrics.skipped);
        metrics_skipped = metrics.skipped;
    }
    next.exported_at = Utc::now();
    next.write(&options.out)?;
    // Files the new manifest no longer lists (a metric whose default version changed).
    manifest::remove_orphans(&options.out, Some(&next))?;

    Ok(ExportReport {
        out: options.out.clone(),
        incremental: previous.is_some(),
        first_position: written.first_position,
        last_position: next.last_position,
        events: written.events,
        withheld: written.withheld_total(),
        event_files: written.files.len(),
        event_bytes: written.files.iter().map(|f| f.entry.bytes).sum(),
        table_files,
        table_bytes,
        metrics_skipped,
        orphans_removed,
        total_event_bytes: next.event_bytes(),
        events_elapsed,
        read_models_elapsed,
        metrics_elapsed,
        elapsed: started.elapsed(),
    })
}

/// The position after which this export continues: the manifest's last position, once the
/// log is found to hold the record the manifest names there.
async fn check_continuation<S: EventStore>(
    store: &S,
    manifest: &Manifest,
) -> Result<Position, ExportError> {
    let position = Position(manifest.last_position);
    if position == Position::ZERO {
        return Ok(position);
    }
    let record = crm_eventstore::store::record_at(store, position)
        .await
        .map_err(|source| ExportError::Read { position, source })?;
    let found = record.map(|r| r.hash.to_hex());
    if found.as_deref() == Some(manifest.last_hash.as_str()) {
        Ok(position)
    } else {
        Err(ExportError::LogChanged {
            position: manifest.last_position,
            expected: manifest.last_hash.clone(),
            found,
        })
    }
}

/// The bytes of the files under `dir`, recursively (0 when it does not exist).
///
/// # Errors
/// [`ExportError::Io`] when a folder cannot be listed.
pub fn size_on_disk(dir: &Path) -> Result<u64, ExportError> {
    manifest::size_on_disk(dir)
}
