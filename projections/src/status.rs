//! What a worker reports: its phase, positions, lag, counters and last error.

use chrono::{DateTime, Utc};
use crm_eventstore::Position;
use serde::{Deserialize, Serialize};

use crate::projection::Progress;

/// Lifecycle phase of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Registered, not running.
    Stopped,
    /// Reading history towards the head.
    CatchingUp,
    /// At the head, following the log live.
    Live,
    /// Failed; waiting for its backoff before the next restart.
    Restarting,
    /// Gave up (only in bounded runs such as `run_until_head`).
    Failed,
}

/// A rebuild running beside the serving state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RebuildStatus {
    /// How far the new state got.
    #[schemars(with = "u64")]
    pub position: Position,
    /// Why the rebuild runs.
    pub reason: String,
}

/// The last failure of a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkerError {
    /// Position of the event being applied (or read) when it failed.
    #[schemars(with = "u64")]
    pub position: Position,
    /// The panic message or error.
    pub message: String,
    /// When it happened (wall clock).
    pub at: DateTime<Utc>,
}

/// Status of one projection worker, as `crm project status` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkerStatus {
    /// Projection name.
    pub name: String,
    /// Code version.
    pub version: u32,
    /// Phase.
    pub phase: Phase,
    /// Position of the last event in the served state (what queries see).
    #[schemars(with = "u64")]
    pub applied_position: Position,
    /// Position covered by the last durable snapshot (where a restart resumes).
    #[schemars(with = "u64")]
    pub checkpoint_position: Position,
    /// The log's durable head when the status was taken.
    #[schemars(with = "u64")]
    pub head_position: Position,
    /// `head − applied`.
    pub lag_events: u64,
    /// `recorded_at(head) − recorded_at(applied)` in seconds; `None` when unknown.
    pub lag_seconds: Option<f64>,
    /// Applied / skipped counters of the served state.
    pub progress: Progress,
    /// Restarts after failures since the runner started.
    pub restarts: u32,
    /// The last failure, if any.
    pub last_error: Option<WorkerError>,
    /// Why the state was rebuilt from position 0 when the worker was loaded, if it was.
    pub rebuilt_because: Option<String>,
    /// A rebuild in progress.
    pub rebuild: Option<RebuildStatus>,
}
