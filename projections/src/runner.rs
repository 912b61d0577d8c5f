//! [`ProjectionRunner`]: registers projections over one store, runs each as its own worker
//! task, reports their status and lag, and rebuilds one beside its serving state.
//!
//! How the gateway uses it:
//! - `crm project run NAME`: [`ProjectionRunner::run_worker`] (one long-lived worker until a
//!   shutdown future resolves);
//! - a server: [`ProjectionRunner::start`] then query the handles, [`ProjectionRunner::stop`]
//!   on shutdown;
//! - a one-shot query verb: [`ProjectionRunner::run_until_head`], then query the handle;
//! - `crm project status`: [`ProjectionRunner::status`] (or [`crate::stored_status`] from
//!   another process: the log is locked by the process running the workers);
//! - `crm project rebuild NAME`: [`ProjectionRunner::rebuild`].

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use crm_eventstore::{record_at, EventStore, Position};
use serde::{Deserialize, Serialize};

use crate::control::AnyWorker;
use crate::error::ProjectionError;
use crate::feed::Feed;
use crate::projection::{Progress, Projection};
use crate::snapshot;
use crate::status::{Phase, WorkerStatus};
use crate::worker::{Limits, Worker};

/// Tuning of the workers. The defaults suit the embedded single-machine case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunnerOptions {
    /// While catching up, save a snapshot after this many events folded since the last one,
    /// or as many as the checkpoint's position, whichever is more (snapshots cost O(state),
    /// so their total work stays under twice the final state's); not while the head, where
    /// the worker saves anyway, is nearer than that. See [`crate::worker`].
    pub snapshot_every_events: u64,
    /// When caught up with unsaved events, save once the last save is this old (a save
    /// pauses the worker while its state is serialized).
    pub snapshot_idle_interval: Duration,
    /// First wait before restarting a failed worker; doubles per failure at one position.
    pub restart_backoff_initial: Duration,
    /// Longest wait between restarts.
    pub restart_backoff_max: Duration,
    /// Failures a bounded run (`run_until_head`, a rebuild) tolerates before it gives up.
    pub bounded_restarts_max: u32,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            // A crash then redoes at most about a million events, seconds of folding.
            snapshot_every_events: 1_000_000,
            snapshot_idle_interval: Duration::from_secs(30),
            restart_backoff_initial: Duration::from_millis(100),
            restart_backoff_max: Duration::from_secs(30),
            bounded_restarts_max: 3,
        }
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildReport {
    /// Projection name.
    pub name: String,
    /// Position the new state covered when it replaced the old one.
    pub switched_at: Position,
    /// Events the new state folded (applied or skipped).
    pub progress: Progress,
}

/// A typed handle on a registered projection: read its served state.
pub struct ProjectionHandle<P: Projection> {
    worker: Arc<Worker<P>>,
}

impl<P: Projection> Clone for ProjectionHandle<P> {
    fn clone(&self) -> Self {
        ProjectionHandle {
            worker: Arc::clone(&self.worker),
        }
    }
}

impl<P: Projection> ProjectionHandle<P> {
    /// Runs `f` on the served state (a read lock is held meanwhile: keep `f` short).
    pub fn read<R>(&self, f: impl FnOnce(&P::State, &Progress) -> R) -> R {
        let served = self.worker.serving.read();
        f(&served.state, &served.progress)
    }

    /// Runs `f` on the served state, as [`ProjectionHandle::read`], and refuses the answer
    /// when the state's storage failed meanwhile (a run on disk that could not be read back,
    /// so the state `f` saw was incomplete).
    ///
    /// # Errors
    /// [`ProjectionError::StateStorage`] with the failure.
    pub fn read_checked<R>(
        &self,
        f: impl FnOnce(&P::State, &Progress) -> R,
    ) -> Result<R, ProjectionError> {
        let served = self.worker.serving.read();
        let answer = f(&served.state, &served.progress);
        match self.worker.projection.fault(&served.state) {
            Some(reason) => Err(ProjectionError::StateStorage {
                projection: self.worker.projection.name().to_owned(),
                reason,
            }),
            None => Ok(answer),
        }
    }

    /// As [`ProjectionHandle::read_checked`], for an `f` that can fail itself (a report that
    /// regroups the state's rows on disk): a failed storage of the state comes first, then
    /// `f`'s own error.
    ///
    /// # Errors
    /// [`ProjectionError::StateStorage`], or the error of `f`.
    pub fn try_read_checked<R>(
        &self,
        f: impl FnOnce(&P::State, &Progress) -> Result<R, ProjectionError>,
    ) -> Result<R, ProjectionError> {
        self.read_checked(f).and_then(|answer| answer)
    }

    /// A copy of the served state and its progress.
    pub fn snapshot(&self) -> (P::State, Progress) {
        self.read(|s, p| (s.clone(), p.clone()))
    }

    /// The projection (for its configuration).
    pub fn projection(&self) -> &P {
        &self.worker.projection
    }

    /// Position of the last event in the served state.
    pub fn applied_position(&self) -> Position {
        self.worker.serving.applied()
    }

    /// Waits until the served state covers `position` (no timeout: wrap it in one).
    pub async fn wait_for(&self, position: Position) {
        let mut rx = self.worker.serving.applied.subscribe();
        while *rx.borrow_and_update() < position {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// The directory, under a runner's data directory, of its states' spilled tables.
pub const SPILL_DIR: &str = ".spill";

/// Runs projections over one event store, each as its own worker with its own checkpoint.
pub struct ProjectionRunner<S: EventStore> {
    feed: Arc<Feed<S>>,
    data_dir: PathBuf,
    options: RunnerOptions,
    workers: Vec<Arc<dyn AnyWorker<S>>>,
}

impl<S: EventStore> ProjectionRunner<S> {
    /// A runner keeping its snapshots under `data_dir/<projection name>/`, and the spill
    /// files of its states under `data_dir/.spill/` (scratch, removed as each state is
    /// dropped; what a killed process left there is removed here).
    pub fn new(
        store: S,
        data_dir: impl AsRef<Path>,
        options: RunnerOptions,
    ) -> ProjectionRunner<S> {
        let spill = data_dir.as_ref().join(SPILL_DIR);
        crate::table::remove_abandoned_spills(&spill);
        crate::table::set_spill_dir(spill);
        ProjectionRunner {
            feed: Arc::new(Feed::new(store)),
            data_dir: data_dir.as_ref().to_path_buf(),
            options,
            workers: Vec::new(),
        }
    }

    /// The store the workers read.
    pub fn store(&self) -> &S {
        self.feed.store()
    }

    /// Registers a projection and loads its snapshot. A snapshot of another code version or
    /// configuration is discarded: the projection rebuilds from position 0 when it runs.
    ///
    /// # Errors
    /// [`ProjectionError::Duplicate`] for a name in use; [`ProjectionError::Io`] when the
    /// snapshot exists but cannot be read.
    pub fn register<P: Projection>(
        &mut self,
        projection: P,
    ) -> Result<ProjectionHandle<P>, ProjectionError> {
        let name = projection.name();
        if self.workers.iter().any(|w| w.name() == name) {
            return Err(ProjectionError::Duplicate {
                name: name.to_owned(),
            });
        }
        let worker = Arc::new(Worker::load(projection, &self.data_dir)?);
        self.feed
            .decode_for(|event_type| worker.projection.wants(event_type));
        self.workers
            .push(Arc::clone(&worker) as Arc<dyn AnyWorker<S>>);
        Ok(ProjectionHandle { worker })
    }

    /// Names of the registered projections, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.workers.iter().map(|w| w.name()).collect()
    }

    fn find(&self, name: &str) -> Result<&Arc<dyn AnyWorker<S>>, ProjectionError> {
        self.workers
            .iter()
            .find(|w| w.name() == name)
            .ok_or_else(|| ProjectionError::Unknown {
                name: name.to_owned(),
                known: self.names().join(", "),
            })
    }

    /// Starts every registered projection as its own tokio task (call inside a runtime).
    ///
    /// # Errors
    /// [`ProjectionError::AlreadyRunning`] if one is running already.
    pub fn start(&self) -> Result<(), ProjectionError> {
        for w in &self.workers {
            Arc::clone(w).start(Arc::clone(&self.feed), self.options.clone())?;
        }
        Ok(())
    }

    /// Starts one projection's worker.
    ///
    /// # Errors
    /// [`ProjectionError::Unknown`] or [`ProjectionError::AlreadyRunning`].
    pub fn start_one(&self, name: &str) -> Result<(), ProjectionError> {
        Arc::clone(self.find(name)?).start(Arc::clone(&self.feed), self.options.clone())
    }

    /// Stops every running worker; each saves a snapshot first.
    ///
    /// # Errors
    /// The first worker error (all are stopped regardless).
    pub async fn stop(&self) -> Result<(), ProjectionError> {
        let mut first = Ok(());
        for w in &self.workers {
            if let Err(e) = Arc::clone(w).stop().await {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Runs one projection as a long-lived worker until `shutdown` resolves, then stops it
    /// with a final snapshot (`crm project run NAME`).
    ///
    /// # Errors
    /// [`ProjectionError::Unknown`], or the worker's error.
    pub async fn run_worker(
        &self,
        name: &str,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ProjectionError> {
        let worker = Arc::clone(self.find(name)?);
        Arc::clone(&worker).start(Arc::clone(&self.feed), self.options.clone())?;
        shutdown.await;
        worker.stop().await.map(|_| ())
    }

    /// Brings every projection up to the log's head as of the call and snapshots it.
    /// Stopped projections are folded here (concurrently); running ones are waited for.
    /// Returns the head reached.
    ///
    /// # Errors
    /// [`ProjectionError::Failed`] when a projection keeps failing.
    pub async fn run_until_head(&self) -> Result<Position, ProjectionError> {
        let head = self.store().head().position;
        self.run_until(head, true).await?;
        Ok(head)
    }

    /// Brings every projection to `target` (capped at the head). With `persist = false` the
    /// last folded events are not snapshotted, as if the process died there (for tests).
    ///
    /// # Errors
    /// As [`ProjectionRunner::run_until_head`].
    pub async fn run_until(&self, target: Position, persist: bool) -> Result<(), ProjectionError> {
        let target = target.min(self.store().head().position);
        let limits = Limits {
            until: Some(target),
            persist_on_exit: persist,
        };
        let mut tasks = Vec::new();
        for w in &self.workers {
            let w = Arc::clone(w);
            let feed = Arc::clone(&self.feed);
            let opts = self.options.clone();
            tasks.push(tokio::spawn(async move {
                if w.is_running() {
                    wait_running(w.as_ref(), target, &opts).await
                } else {
                    w.run_bounded(feed, limits, opts).await
                }
            }));
        }
        let mut first = Ok(());
        for t in tasks {
            let r = t.await.map_err(|e| ProjectionError::Task {
                projection: "runner".into(),
                reason: e.to_string(),
            });
            if let Err(e) = r.and_then(|r| r) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Status of every projection, with lag against the current head.
    pub async fn status(&self) -> Vec<WorkerStatus> {
        let head = self.store().head().position;
        let head_recorded_at = self.recorded_at(head).await;
        self.workers
            .iter()
            .map(|w| {
                let mut s = w.local_status();
                s.head_position = head;
                s.lag_events = head.0.saturating_sub(s.applied_position.0);
                s.lag_seconds = match (head_recorded_at, s.progress.last_recorded_at) {
                    _ if s.lag_events == 0 => Some(0.0),
                    (Some(h), Some(a)) => Some(seconds_between(a, h)),
                    _ => None,
                };
                s
            })
            .collect()
    }

    async fn recorded_at(&self, position: Position) -> Option<DateTime<Utc>> {
        let record = record_at(self.store(), position).await.ok()??;
        Some(record.recorded_at)
    }

    /// Rebuilds one projection from position 0 beside its serving state, then switches to
    /// the new state once it has caught up; queries are served throughout.
    ///
    /// # Errors
    /// [`ProjectionError::Unknown`], or the rebuild's failure (the serving state stays).
    pub async fn rebuild(&self, name: &str) -> Result<RebuildReport, ProjectionError> {
        Arc::clone(self.find(name)?)
            .rebuild(Arc::clone(&self.feed), self.options.clone())
            .await
    }
}

async fn wait_running<S: EventStore>(
    w: &dyn AnyWorker<S>,
    target: Position,
    opts: &RunnerOptions,
) -> Result<(), ProjectionError> {
    let start_restarts = w.local_status().restarts;
    loop {
        if w.applied() >= target {
            return Ok(());
        }
        let s = w.local_status();
        if s.restarts.saturating_sub(start_restarts) > opts.bounded_restarts_max || !w.is_running()
        {
            let e = s.last_error.unwrap_or(crate::status::WorkerError {
                position: s.applied_position,
                message: "the worker stopped".into(),
                at: Utc::now(),
            });
            return Err(ProjectionError::Failed {
                projection: s.name,
                restarts: s.restarts,
                position: e.position,
                reason: e.message,
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    let d = to.signed_duration_since(from);
    let micros = d.num_microseconds().unwrap_or(i64::MAX);
    // i64 → f64: micro-second lags stay far below 2^53, so this is exact in practice.
    #[allow(clippy::cast_precision_loss)]
    let s = micros as f64 / 1e6;
    s.max(0.0)
}

/// The status a projection's last snapshot records, read from its file without opening the
/// log (for `crm project status` while another process runs the worker). `None` if the
/// projection has no snapshot yet.
///
/// # Errors
/// [`ProjectionError::Io`] when the file exists but cannot be read.
pub fn stored_status(
    data_dir: &Path,
    name: &str,
) -> Result<Option<snapshot::SnapshotHeader>, ProjectionError> {
    let path = snapshot::projection_dir(data_dir, name).join(snapshot::SERVING_FILE);
    snapshot::read_header(&path, name)
}

impl Phase {
    /// True while the worker follows the log (caught up or catching up).
    pub fn is_running(self) -> bool {
        matches!(self, Phase::CatchingUp | Phase::Live | Phase::Restarting)
    }
}
