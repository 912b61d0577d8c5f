//! The store-independent control of a worker the runner keeps: start, stop, bounded runs
//! and the rebuild beside the serving state (with the switch).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crm_eventstore::{EventStore, Position};
use tokio::sync::watch;

use crate::error::ProjectionError;
use crate::feed::{Feed, PAGE_EVENTS};
use crate::projection::Projection;
use crate::runner::{RebuildReport, RunnerOptions};
use crate::snapshot;
use crate::status::{RebuildStatus, WorkerStatus};
use crate::worker::{Limits, Role, Served, Slot, Task, Worker};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The store-independent view of a worker the runner keeps.
pub(crate) trait AnyWorker<S: EventStore>: Send + Sync {
    fn name(&self) -> &'static str;
    fn local_status(&self) -> WorkerStatus;
    fn start(
        self: Arc<Self>,
        feed: Arc<Feed<S>>,
        opts: RunnerOptions,
    ) -> Result<(), ProjectionError>;
    fn stop(self: Arc<Self>) -> BoxFuture<'static, Result<bool, ProjectionError>>;
    fn run_bounded(
        self: Arc<Self>,
        feed: Arc<Feed<S>>,
        limits: Limits,
        opts: RunnerOptions,
    ) -> BoxFuture<'static, Result<(), ProjectionError>>;
    fn rebuild(
        self: Arc<Self>,
        feed: Arc<Feed<S>>,
        opts: RunnerOptions,
    ) -> BoxFuture<'static, Result<RebuildReport, ProjectionError>>;
    fn is_running(&self) -> bool;
    fn applied(&self) -> Position;
}

impl<P: Projection> Worker<P> {
    fn status_now(&self) -> WorkerStatus {
        let progress = self.serving.read().progress.clone();
        let rt = self.runtime().clone();
        WorkerStatus {
            name: self.projection.name().to_owned(),
            version: self.projection.version(),
            phase: rt.phase,
            applied_position: progress.position,
            checkpoint_position: self.serving.checkpoint(),
            head_position: Position::ZERO,
            lag_events: 0,
            lag_seconds: None,
            progress,
            restarts: rt.restarts,
            last_error: rt.last_error,
            rebuilt_because: rt.rebuilt_because,
            rebuild: rt.rebuild,
        }
    }

    fn take_task(&self) -> Option<Task> {
        self.task.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

async fn stop_task(name: &str, task: Option<Task>) -> Result<bool, ProjectionError> {
    let Some(task) = task else {
        return Ok(false);
    };
    task.stop.send_replace(true);
    task.handle.await.map_err(|e| ProjectionError::Task {
        projection: name.to_owned(),
        reason: e.to_string(),
    })??;
    Ok(true)
}

impl<P: Projection, S: EventStore> AnyWorker<S> for Worker<P> {
    fn name(&self) -> &'static str {
        self.projection.name()
    }

    fn local_status(&self) -> WorkerStatus {
        self.status_now()
    }

    fn start(
        self: Arc<Self>,
        feed: Arc<Feed<S>>,
        opts: RunnerOptions,
    ) -> Result<(), ProjectionError> {
        let mut task = self.task.lock().unwrap_or_else(|p| p.into_inner());
        if task.as_ref().is_some_and(|t| !t.handle.is_finished()) {
            return Err(ProjectionError::AlreadyRunning {
                name: self.projection.name().to_owned(),
            });
        }
        let (stop, stop_rx) = watch::channel(false);
        let limits = Limits {
            until: None,
            persist_on_exit: true,
        };
        let slot = self.serving.clone();
        let handle = tokio::spawn(Arc::clone(&self).supervise(
            slot,
            Role::Serving,
            feed,
            stop_rx,
            limits,
            opts,
        ));
        *task = Some(Task { stop, handle });
        Ok(())
    }

    fn stop(self: Arc<Self>) -> BoxFuture<'static, Result<bool, ProjectionError>> {
        Box::pin(async move {
            let task = self.take_task();
            stop_task(self.projection.name(), task).await
        })
    }

    fn run_bounded(
        self: Arc<Self>,
        feed: Arc<Feed<S>>,
        limits: Limits,
        opts: RunnerOptions,
    ) -> BoxFuture<'static, Result<(), ProjectionError>> {
        Box::pin(async move {
            let (_stop, stop_rx) = watch::channel(false);
            let slot = self.serving.clone();
            self.supervise(slot, Role::Serving, feed, stop_rx, limits, opts)
                .await
        })
    }

    fn rebuild(
        self: Arc<Self>,
        feed: Arc<Feed<S>>,
        opts: RunnerOptions,
    ) -> BoxFuture<'static, Result<RebuildReport, ProjectionError>> {
        Box::pin(async move {
            let name = self.projection.name();
            let path = self.dir.join(snapshot::REBUILD_FILE);
            snapshot::remove(name, &path)?;
            let shadow = Slot::new(Served::default(), path.clone(), Position::ZERO);
            self.runtime().rebuild = Some(RebuildStatus {
                position: Position::ZERO,
                reason: "requested".into(),
            });
            let result = async {
                // Phase 1: fold from 0 beside the serving state until close to the head.
                let (_stop, stop_rx) = watch::channel(false);
                loop {
                    let head = feed.store().head().position;
                    let limits = Limits {
                        until: Some(head),
                        persist_on_exit: false,
                    };
                    Arc::clone(&self)
                        .supervise(
                            shadow.clone(),
                            Role::Rebuild,
                            Arc::clone(&feed),
                            stop_rx.clone(),
                            limits,
                            opts.clone(),
                        )
                        .await?;
                    if feed
                        .store()
                        .head()
                        .position
                        .0
                        .saturating_sub(shadow.applied().0)
                        <= PAGE_EVENTS
                    {
                        break;
                    }
                }
                // Phase 2: pause the serving worker, finish to the exact head, switch.
                let task = self.take_task();
                let was_running = stop_task(name, task).await?;
                let head = feed.store().head().position;
                let limits = Limits {
                    until: Some(head),
                    persist_on_exit: true,
                };
                Arc::clone(&self)
                    .supervise(
                        shadow.clone(),
                        Role::Rebuild,
                        Arc::clone(&feed),
                        stop_rx,
                        limits,
                        opts.clone(),
                    )
                    .await?;
                if shadow.checkpoint() != shadow.applied() || shadow.applied() == Position::ZERO {
                    // Nothing folded (empty log) or nothing saved yet: save now.
                    let served = shadow.read();
                    snapshot::save(&self.projection, &served.state, &served.progress, &path)?;
                }
                snapshot::replace(name, &path, &self.serving.path)?;
                // Moved, not copied: a state can be larger than memory (spilled tables).
                let new =
                    std::mem::take(&mut *shadow.served.write().unwrap_or_else(|p| p.into_inner()));
                let switched_at = new.progress.position;
                let progress = new.progress.clone();
                {
                    let mut served = self
                        .serving
                        .served
                        .write()
                        .unwrap_or_else(|p| p.into_inner());
                    *served = new;
                }
                self.serving.applied.send_replace(switched_at);
                self.serving
                    .checkpoint
                    .store(switched_at.0, std::sync::atomic::Ordering::Release);
                if was_running {
                    Arc::clone(&self).start(feed, opts)?;
                }
                Ok(RebuildReport {
                    name: name.to_owned(),
                    switched_at,
                    progress,
                })
            }
            .await;
            self.runtime().rebuild = None;
            if result.is_ok() {
                self.runtime().rebuilt_because = None;
            }
            result
        })
    }

    fn is_running(&self) -> bool {
        self.task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|t| !t.handle.is_finished())
    }

    fn applied(&self) -> Position {
        self.serving.applied()
    }
}
