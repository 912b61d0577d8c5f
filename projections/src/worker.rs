//! One projection's worker: its served state, its snapshots, the fold loop (catch up from the
//! checkpoint, then follow the log live) and the supervision that restarts it with backoff.
//!
//! **Architecture Invariant:** the served state and its [`Progress`] change together, under one
//! write lock, one page at a time; a snapshot copies both under one read lock. A panic inside
//! `apply` discards the in-memory state and reloads the last snapshot, so a half-applied
//! event is never served nor saved.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use chrono::Utc;
use crm_eventstore::{record_at, EventStore, Position};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::error::ProjectionError;
use crate::feed::{Feed, PAGE_EVENTS};
use crate::projection::{apply_unmarked, Progress, Projection, WantsMemo};
use crate::runner::RunnerOptions;
use crate::snapshot::{self, Loaded};
use crate::status::{Phase, RebuildStatus, WorkerError};

/// A state with the checkpoint it covers.
#[derive(Debug, Clone, Default)]
pub struct Served<S> {
    /// The folded state.
    pub state: S,
    /// How far it got.
    pub progress: Progress,
}

/// A state being folded and the file it is saved to (the serving one, or a rebuild's).
pub(crate) struct Slot<S> {
    pub(crate) served: Arc<RwLock<Served<S>>>,
    pub(crate) path: PathBuf,
    pub(crate) applied: Arc<watch::Sender<Position>>,
    pub(crate) checkpoint: Arc<AtomicU64>,
}

impl<S> Clone for Slot<S> {
    fn clone(&self) -> Self {
        Slot {
            served: Arc::clone(&self.served),
            path: self.path.clone(),
            applied: Arc::clone(&self.applied),
            checkpoint: Arc::clone(&self.checkpoint),
        }
    }
}

impl<S> Slot<S> {
    pub(crate) fn new(served: Served<S>, path: PathBuf, checkpoint: Position) -> Slot<S> {
        let (applied, _) = watch::channel(served.progress.position);
        Slot {
            served: Arc::new(RwLock::new(served)),
            path,
            applied: Arc::new(applied),
            checkpoint: Arc::new(AtomicU64::new(checkpoint.0)),
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Served<S>> {
        self.served.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Served<S>> {
        self.served.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn applied(&self) -> Position {
        *self.applied.borrow()
    }

    pub(crate) fn checkpoint(&self) -> Position {
        Position(self.checkpoint.load(Ordering::Acquire))
    }
}

/// Whether a fold loop serves queries or builds a replacement beside the serving state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Serving,
    Rebuild,
}

/// Where a fold loop stops.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Stop once this position is applied (`None`: follow the log until stopped).
    pub(crate) until: Option<Position>,
    /// Save a snapshot when stopping (false simulates a crash).
    pub(crate) persist_on_exit: bool,
}

/// Mutable bookkeeping shown in `status`.
#[derive(Debug, Clone)]
pub(crate) struct Runtime {
    pub(crate) phase: Phase,
    pub(crate) restarts: u32,
    pub(crate) last_error: Option<WorkerError>,
    pub(crate) rebuilt_because: Option<String>,
    pub(crate) rebuild: Option<RebuildStatus>,
}

/// A running worker task.
pub(crate) struct Task {
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) handle: tokio::task::JoinHandle<Result<(), ProjectionError>>,
}

/// A registered projection with its serving state.
pub(crate) struct Worker<P: Projection> {
    pub(crate) projection: P,
    pub(crate) dir: PathBuf,
    pub(crate) serving: Slot<P::State>,
    pub(crate) runtime: Mutex<Runtime>,
    pub(crate) task: Mutex<Option<Task>>,
}

/// Why one fold attempt ended early.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) position: Position,
    pub(crate) message: String,
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_owned()
    }
}

impl<P: Projection> Worker<P> {
    /// Loads the serving snapshot (or starts fresh / rebuilds when it is stale).
    pub(crate) fn load(
        projection: P,
        data_dir: &std::path::Path,
    ) -> Result<Worker<P>, ProjectionError> {
        let dir = snapshot::projection_dir(data_dir, projection.name());
        let path = dir.join(snapshot::SERVING_FILE);
        let (served, rebuilt_because) = match snapshot::load(&projection, &path)? {
            Loaded::Fresh => (Served::default(), None),
            Loaded::Resumed { state, progress } => (Served { state, progress }, None),
            Loaded::Stale { reason } => {
                warn!(projection = projection.name(), %reason, "snapshot unusable; rebuilding from position 0");
                (Served::default(), Some(reason))
            }
        };
        let checkpoint = served.progress.position;
        Ok(Worker {
            serving: Slot::new(served, path, checkpoint),
            projection,
            dir,
            runtime: Mutex::new(Runtime {
                phase: Phase::Stopped,
                restarts: 0,
                last_error: None,
                rebuilt_because,
                rebuild: None,
            }),
            task: Mutex::new(None),
        })
    }

    pub(crate) fn runtime(&self) -> std::sync::MutexGuard<'_, Runtime> {
        self.runtime.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_phase(&self, role: Role, phase: Phase) {
        if role == Role::Serving {
            self.runtime().phase = phase;
        }
    }

    /// Reloads a slot from its file after a failure (the in-memory state may be half-applied).
    fn reload(&self, slot: &Slot<P::State>) {
        let served = match snapshot::load(&self.projection, &slot.path) {
            Ok(Loaded::Resumed { state, progress }) => Served { state, progress },
            _ => Served::default(),
        };
        let position = served.progress.position;
        *slot.write() = served;
        slot.applied.send_replace(position);
        slot.checkpoint.store(position.0, Ordering::Release);
    }

    /// Saves the slot's state and checkpoint atomically.
    async fn save(self: &Arc<Self>, slot: &Slot<P::State>) -> Result<(), ProjectionError> {
        let worker = Arc::clone(self);
        let slot = slot.clone();
        let name = self.projection.name();
        tokio::task::spawn_blocking(move || {
            let position = {
                let served = slot.read();
                snapshot::save(
                    &worker.projection,
                    &served.state,
                    &served.progress,
                    &slot.path,
                )?;
                served.progress.position
            };
            slot.checkpoint.store(position.0, Ordering::Release);
            Ok(())
        })
        .await
        .map_err(|e| ProjectionError::Task {
            projection: name.to_owned(),
            reason: e.to_string(),
        })?
    }

    /// Applies the events of `chunk` up to `head`; on a panic reloads the slot.
    fn apply_chunk(
        &self,
        slot: &Slot<P::State>,
        events: &[crate::projection::CachedEvent],
        next: Position,
        head: Position,
        memo: &mut WantsMemo,
    ) -> Result<u64, Failure> {
        let mut expected = next;
        let mut count = 0u64;
        let mut gap = None;
        let outcome = {
            let mut guard = slot.write();
            let served = &mut *guard;
            catch_unwind(AssertUnwindSafe(|| {
                let mut last = None;
                for event in events {
                    let position = event.position;
                    if position > head {
                        break;
                    }
                    if position != expected {
                        gap = Some(position);
                        break;
                    }
                    apply_unmarked(
                        &self.projection,
                        &mut served.state,
                        &mut served.progress,
                        event,
                        memo,
                    );
                    last = Some(event);
                    count += 1;
                    expected = position.next().unwrap_or(position);
                }
                // The state is served only after the chunk: its progress is marked once.
                if let Some(event) = last {
                    served.progress.mark(event);
                }
            }))
        };
        let fault = {
            let served = slot.read();
            self.projection.fault(&served.state)
        };
        if let (Ok(()), Some(fault)) = (&outcome, fault) {
            self.reload(slot);
            return Err(Failure {
                position: expected,
                message: format!("the state's spill storage failed: {fault}"),
            });
        }
        match outcome {
            Ok(()) => {
                if count > 0 {
                    slot.applied.send_replace(slot.read().progress.position);
                }
                match gap {
                    Some(found) => Err(Failure {
                        position: expected,
                        message: format!("the log returned position {found} where {expected} was expected: a gap in the log"),
                    }),
                    None => Ok(count),
                }
            }
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                self.reload(slot);
                Err(Failure {
                    position: expected,
                    message: format!("apply panicked: {message}"),
                })
            }
        }
    }

    /// Checks that the log still holds the event the slot's checkpoint names: the same chain
    /// hash at the checkpoint's position. When it does not (the log was replaced, restored
    /// from an older backup, or truncated), the state was folded from another history: the
    /// slot is reset to position 0, so the fold rebuilds it from this log, and the reason is
    /// shown in `status`.
    async fn check_anchor<S: EventStore>(
        &self,
        slot: &Slot<P::State>,
        feed: &Feed<S>,
    ) -> Result<(), Failure> {
        let (position, expected) = {
            let served = slot.read();
            (served.progress.position, served.progress.chain_hash)
        };
        if position == Position::ZERO {
            return Ok(());
        }
        let found = record_at(feed.store(), position)
            .await
            .map_err(|e| Failure {
                position,
                message: format!("reading the log at the checkpoint failed: {e}"),
            })?;
        let reason = match (found, expected) {
            (None, _) => Some(format!(
                "the log ends before the snapshot's checkpoint {position}, or has no event there (restored from an older backup, or replaced?)"
            )),
            (Some(rec), Some(hash)) if rec.hash != hash => Some(format!(
                "the log's event at the snapshot's checkpoint {position} has chain hash {}, the snapshot was folded up to {} (the log was replaced or restored?)",
                rec.hash.to_hex(),
                hash.to_hex()
            )),
            _ => None,
        };
        if let Some(reason) = reason {
            warn!(projection = self.projection.name(), %reason, "snapshot does not match the log; rebuilding from position 0");
            *slot.write() = Served::default();
            slot.applied.send_replace(Position::ZERO);
            slot.checkpoint.store(0, Ordering::Release);
            self.runtime().rebuilt_because = Some(reason);
        }
        Ok(())
    }

    /// One fold attempt: catch up from the slot's position, then follow the log until
    /// `limits` or `stop` end it.
    pub(crate) async fn fold_loop<S: EventStore>(
        self: Arc<Self>,
        slot: Slot<P::State>,
        role: Role,
        feed: Arc<Feed<S>>,
        mut stop: watch::Receiver<bool>,
        limits: Limits,
        opts: RunnerOptions,
    ) -> Result<(), Failure> {
        let mut head_rx = feed.store().watch_head();
        let mut unsaved = 0u64;
        let mut last_save = Instant::now();
        let mut memo = WantsMemo::default();
        let cursor = feed.cursor();
        let save_failure = |e: ProjectionError, position: Position| Failure {
            position,
            message: e.to_string(),
        };
        if role == Role::Serving {
            self.check_anchor(&slot, &feed).await?;
        }
        loop {
            let applied = slot.applied();
            let next = applied.next().unwrap_or(applied);
            // A dropped stop sender counts as a stop.
            let done = limits.until.is_some_and(|u| applied >= u)
                || *stop.borrow()
                || stop.has_changed().is_err();
            if done {
                if limits.persist_on_exit && (unsaved > 0 || slot.checkpoint() != applied) {
                    self.save(&slot).await.map_err(|e| save_failure(e, next))?;
                }
                return Ok(());
            }
            let durable = head_rx.borrow_and_update().position;
            let head = limits.until.map_or(durable, |u| durable.min(u));
            if next > head {
                self.set_phase(role, Phase::Live);
                let idle_save_in = opts
                    .snapshot_idle_interval
                    .saturating_sub(last_save.elapsed());
                if unsaved > 0 && idle_save_in.is_zero() {
                    self.save(&slot).await.map_err(|e| save_failure(e, next))?;
                    unsaved = 0;
                    last_save = Instant::now();
                    continue;
                }
                let wait = if unsaved > 0 {
                    idle_save_in
                } else {
                    Duration::from_secs(3600)
                };
                tokio::select! {
                    changed = head_rx.changed() => {
                        if changed.is_err() {
                            // The store closed: save what we have and end.
                            if unsaved > 0 {
                                self.save(&slot).await.map_err(|e| save_failure(e, next))?;
                            }
                            return Ok(());
                        }
                    }
                    _ = stop.changed() => {}
                    () = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            if head.0 - applied.0 > PAGE_EVENTS {
                self.set_phase(role, Phase::CatchingUp);
            }
            let chunk = feed
                .chunk_at(next, head, &cursor)
                .await
                .map_err(|e| Failure {
                    position: next,
                    message: format!("reading the log failed: {e}"),
                })?;
            let count = self.apply_chunk(&slot, chunk.events(), next, head, &mut memo)?;
            if count == 0 {
                return Err(Failure {
                    position: next,
                    message: format!("the log returned no event at position {next}, below its head {head}: a gap in the log"),
                });
            }
            if role == Role::Rebuild {
                if let Some(r) = self.runtime().rebuild.as_mut() {
                    r.position = slot.applied();
                }
            }
            unsaved += count;
            if snapshot_due(
                &opts,
                unsaved,
                slot.checkpoint(),
                slot.applied(),
                head,
                last_save.elapsed(),
            ) {
                self.save(&slot).await.map_err(|e| save_failure(e, next))?;
                unsaved = 0;
                last_save = Instant::now();
            }
            tokio::task::yield_now().await;
        }
    }

    /// Runs fold attempts until one ends normally; restarts failed ones with backoff.
    /// A bounded run (`limits.until`) gives up after `opts.bounded_restarts_max` failures.
    pub(crate) async fn supervise<S: EventStore>(
        self: Arc<Self>,
        slot: Slot<P::State>,
        role: Role,
        feed: Arc<Feed<S>>,
        mut stop: watch::Receiver<bool>,
        limits: Limits,
        opts: RunnerOptions,
    ) -> Result<(), ProjectionError> {
        let name = self.projection.name();
        let mut backoff = opts.restart_backoff_initial;
        let mut failures = 0u32;
        let mut last_failed_at = None;
        loop {
            self.set_phase(role, Phase::CatchingUp);
            let attempt = tokio::spawn(Arc::clone(&self).fold_loop(
                slot.clone(),
                role,
                Arc::clone(&feed),
                stop.clone(),
                limits,
                opts.clone(),
            ));
            let outcome = match attempt.await {
                Ok(outcome) => outcome,
                Err(join) => {
                    // A panic outside `apply` (or a cancelled task): the state may be stale.
                    self.reload(&slot);
                    let message = if join.is_panic() {
                        format!(
                            "worker panicked: {}",
                            panic_message(join.into_panic().as_ref())
                        )
                    } else {
                        format!("worker task ended: {join}")
                    };
                    Err(Failure {
                        position: slot.applied().next().unwrap_or_default(),
                        message,
                    })
                }
            };
            let failure = match outcome {
                Ok(()) => {
                    self.set_phase(role, Phase::Stopped);
                    return Ok(());
                }
                Err(failure) => failure,
            };
            failures += 1;
            warn!(projection = name, position = failure.position.0, message = %failure.message, "projection worker failed");
            {
                let mut rt = self.runtime();
                rt.restarts += 1;
                rt.last_error = Some(WorkerError {
                    position: failure.position,
                    message: failure.message.clone(),
                    at: Utc::now(),
                });
            }
            if limits.until.is_some() && failures > opts.bounded_restarts_max {
                self.set_phase(role, Phase::Failed);
                return Err(ProjectionError::Failed {
                    projection: name.to_owned(),
                    restarts: failures,
                    position: failure.position,
                    reason: failure.message,
                });
            }
            if last_failed_at != Some(failure.position) {
                backoff = opts.restart_backoff_initial;
            }
            last_failed_at = Some(failure.position);
            self.set_phase(role, Phase::Restarting);
            info!(
                projection = name,
                backoff_ms = backoff.as_millis(),
                "restarting projection worker"
            );
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() || stop.has_changed().is_err() {
                self.set_phase(role, Phase::Stopped);
                return Ok(());
            }
            backoff = backoff.saturating_mul(2).min(opts.restart_backoff_max);
        }
    }
}

/// Whether a worker that is not caught up saves a snapshot now.
///
/// A snapshot costs O(state), so the schedule is geometric: due once the unsaved events
/// number `snapshot_every_events` or as many as the checkpoint covers, whichever is more. A
/// catch-up from position 0 thus saves at 1, 2, 4, 8, ... times `snapshot_every_events`:
/// the states it serializes add up to less than twice the final one. A due save is skipped
/// while the head is nearer than the due count, since the worker saves there anyway (at the
/// end of a bounded run, or once caught up): a catch-up of fewer than twice
/// `snapshot_every_events` events serializes its state once, at the head, and a crash
/// redoes fewer than twice the due count. A worker kept short of the head by a steady stream
/// of appends still saves once its last save is `snapshot_idle_interval` old.
pub(crate) fn snapshot_due(
    opts: &RunnerOptions,
    unsaved: u64,
    checkpoint: Position,
    applied: Position,
    head: Position,
    since_last_save: Duration,
) -> bool {
    let due = opts.snapshot_every_events.max(checkpoint.0);
    let head_is_near = head.0.saturating_sub(applied.0) < due;
    unsaved >= due && (!head_is_near || since_last_save >= opts.snapshot_idle_interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(every: u64) -> RunnerOptions {
        RunnerOptions {
            snapshot_every_events: every,
            snapshot_idle_interval: Duration::from_secs(30),
            ..RunnerOptions::default()
        }
    }

    fn due(every: u64, unsaved: u64, checkpoint: u64, head: u64, since_s: u64) -> bool {
        snapshot_due(
            &opts(every),
            unsaved,
            Position(checkpoint),
            Position(checkpoint + unsaved),
            Position(head),
            Duration::from_secs(since_s),
        )
    }

    #[test]
    fn catch_up_snapshots_double_their_spacing() {
        // From 0 towards a far head: saves at positions 100, 200, 400, 800.
        assert!(!due(100, 99, 0, 10_000, 0));
        assert!(due(100, 100, 0, 10_000, 0));
        assert!(!due(100, 99, 100, 10_000, 0));
        assert!(due(100, 100, 100, 10_000, 0));
        assert!(!due(100, 199, 200, 10_000, 0));
        assert!(due(100, 200, 200, 10_000, 0));
        assert!(!due(100, 399, 400, 10_000, 0));
        assert!(due(100, 400, 400, 10_000, 0));
    }

    #[test]
    fn no_catch_up_snapshot_right_before_the_head() {
        // A million-event catch-up with the default spacing saves once, at the head.
        let every = RunnerOptions::default().snapshot_every_events;
        assert!(!due(every, every, 0, every + every / 2, 0));
        assert!(due(every, every, 0, 2 * every, 0));
        // Kept short of the head by appends, it still saves once the last save is old.
        assert!(!due(100, 1_000, 1_000, 2_000 + 500, 29));
        assert!(due(100, 1_000, 1_000, 2_000 + 500, 30));
    }
}
