//! Errors of the projection runtime. Each message says what went wrong and what to do.

use std::path::PathBuf;

use crm_eventstore::{Position, ReadError};

/// Why a projection could not be loaded, run, saved or rebuilt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// Reading the log failed.
    #[error("projection `{projection}` could not read the log at position {position}: {source}")]
    Read {
        projection: String,
        position: Position,
        source: ReadError,
    },
    /// A snapshot could not be written or read.
    #[error("projection `{projection}`: {action} {path} failed: {reason}; check the disk and the permissions of the data directory")]
    Io {
        projection: String,
        action: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The state could not be serialized (a bug in the projection's state type).
    #[error("projection `{projection}`: the state could not be serialized ({reason}); this is a bug in the projection, report it")]
    Serialize { projection: String, reason: String },
    /// The state's storage on disk (its tables' runs) failed, so the state is incomplete.
    #[error("projection `{projection}`: its state could not be read back from disk ({reason}); check the disk's space and health, then restart: the projection folds again from its last snapshot")]
    StateStorage { projection: String, reason: String },
    /// A report could not regroup the state's rows in its scratch space on disk.
    #[error("projection `{projection}`: the report could not read back the rows it regrouped on disk ({reason}); check the space and health of the disk under the data directory, then ask again")]
    ReportStorage { projection: String, reason: String },
    /// No projection of that name is registered.
    #[error("no projection named `{name}`; known projections: {known}")]
    Unknown { name: String, known: String },
    /// Two projections with one name.
    #[error(
        "a projection named `{name}` is registered already; give each projection its own name"
    )]
    Duplicate { name: String },
    /// The worker is already running in this runner.
    #[error("projection `{name}` is already running; stop it first or query it as it is")]
    AlreadyRunning { name: String },
    /// The worker kept failing.
    #[error("projection `{projection}` failed {restarts} times, last at position {position}: {reason}; fix the projection (or the event) and run it again")]
    Failed {
        projection: String,
        restarts: u32,
        position: Position,
        reason: String,
    },
    /// A runtime task was cancelled or the runtime is shutting down.
    #[error(
        "projection `{projection}`: its task ended unexpectedly ({reason}); restart the runner"
    )]
    Task { projection: String, reason: String },
}
