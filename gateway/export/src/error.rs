//! [`ExportError`]: why an export stopped, in words that say what to do.

use std::path::PathBuf;

use crm_eventstore::{Position, ReadError};

/// Why `crm export` stopped. Files written before the error stay under their final names
/// only if a complete file was renamed; the manifest is unchanged, so the previous export
/// stays valid and the next export removes the unlisted part files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The log could not be read.
    #[error("reading the log at position {position}: {source}")]
    Read {
        /// Where the read started.
        position: Position,
        /// The store's error.
        source: ReadError,
    },
    /// A file or folder could not be created, written, synced, renamed or listed.
    #[error("{action} {}: {source}; check the path, its permissions and the free space", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// Parquet could not write a file.
    #[error("writing the Parquet file {}: {source}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The writer's error.
        source: parquet::errors::ParquetError,
    },
    /// The columns gathered do not form a valid Arrow batch (a bug of this crate).
    #[error("building the columns of {}: {source}; please report this", path.display())]
    Arrow {
        /// The file the batch was for.
        path: PathBuf,
        /// Arrow's error.
        source: arrow_schema::ArrowError,
    },
    /// The manifest of the output directory cannot be read as this build's.
    #[error("{} is not an export manifest this build reads ({reason}); export into an empty directory, or remove the directory for a full export", path.display())]
    BadManifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The manifest was written by a newer build.
    #[error("{} was written with export format {found}, newer than this build's {supported}; use a newer `crm`, or export into another directory", path.display())]
    NewerManifest {
        /// The manifest file.
        path: PathBuf,
        /// Its format version.
        found: u32,
        /// This build's.
        supported: u32,
    },
    /// The log no longer holds the record the previous export ended at.
    #[error("the previous export ended at position {position} with chain hash {expected}, but the log now holds {}; the log was replaced or restored, so the exported files no longer describe it: export into a new directory (or remove this one) for a full export", found.as_ref().map_or_else(|| "no record there".to_owned(), |h| format!("chain hash {h} there")))]
    LogChanged {
        /// The manifest's last position.
        position: u64,
        /// The manifest's chain hash at that position.
        expected: String,
        /// The chain hash the log holds there, `None` when it ends before.
        found: Option<String>,
    },
    /// An event's payload could not be decoded by the domain.
    #[error("the event at position {position} ({event_type}) does not decode: {reason}; run `crm verify`, or upgrade `crm` if the log was written by a newer build")]
    Decode {
        /// The event's position.
        position: u64,
        /// Its type.
        event_type: String,
        /// The decoder's error.
        reason: String,
    },
    /// An event's payload holds a field its type's schema does not name.
    #[error("the event at position {position} ({event_type}) has the field `{field}`, which the schema of {event_type} does not name; it is not dropped silently: upgrade `crm` to the build that wrote it")]
    UnknownField {
        /// The event's position.
        position: u64,
        /// Its type.
        event_type: String,
        /// The field, as a dotted path.
        field: String,
    },
    /// A payload value does not fit the column its schema gives it.
    #[error("the event at position {position} ({event_type}) holds {found} in `{field}`, whose schema says {expected}; run `crm verify`, or upgrade `crm` if the log was written by a newer build")]
    BadValue {
        /// The event's position.
        position: u64,
        /// Its type.
        event_type: String,
        /// The field, as a dotted path.
        field: String,
        /// The column's type.
        expected: &'static str,
        /// The value found (cut).
        found: String,
    },
    /// The domain's schema of a type cannot be laid out as columns (a bug of this build).
    #[error(
        "the schema of {event_type} cannot be laid out as columns: {reason}; please report this"
    )]
    Plan {
        /// The type.
        event_type: String,
        /// What clashes.
        reason: String,
    },
    /// A read model could not be brought to the head or reported.
    #[error("read model: {0}")]
    Projection(#[from] crm_projections::ProjectionError),
    /// The metric registry could not be loaded, or the metric view replayed.
    #[error("metrics: {0}")]
    Metric(#[from] crm_metrics::MetricError),
    /// A value could not be rendered as JSON (a bug of this build).
    #[error("rendering {what} as JSON: {source}; please report this")]
    Json {
        /// What was rendered.
        what: &'static str,
        /// The serializer's error.
        source: serde_json::Error,
    },
}

impl ExportError {
    /// [`ExportError::Io`] for `path`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ExportError {
        let path = path.into();
        move |source| ExportError::Io {
            action,
            path,
            source,
        }
    }
}
