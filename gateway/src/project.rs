//! `crm project ...`: the projection workers from the command line: status, catch up to the
//! head, rebuild one, print one's report, and run one as its own long-lived process
//! (`crm project run NAME`), with `/healthz`, `/readyz` and `/metrics` for probes.
//!
//! On the embedded sled log only one process can open the log, so these verbs do not run
//! beside `crm serve` there; on a JetStream store (`--store nats://...`) every worker is a
//! process of its own, on any host.

use std::fmt::Write as _;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use crm_eventstore::AnyStore;
use crm_projections::read_models::STANDARD_NAMES;
use crm_projections::read_models::{churn, lifetime_value, pipeline, sla};
use crm_projections::read_models::{
    ChurnProjection, LifetimeValueProjection, PipelineProjection, SlaProjection,
};
use crm_projections::{
    ProjectionError, ProjectionHandle, ProjectionRunner, ReadModelConfig, ReadModels,
    RebuildReport, RunnerOptions, WorkerStatus,
};
use tokio::net::TcpListener;

use crate::http::read_models::READY_LAG_EVENTS_MAX;

/// A runner with the four read models registered (snapshots loaded, nothing running).
///
/// # Errors
/// [`ProjectionError`] when a snapshot cannot be read.
pub fn runner(
    store: AnyStore,
    dir: &Path,
    config: &ReadModelConfig,
) -> Result<ProjectionRunner<AnyStore>, ProjectionError> {
    let mut runner = ProjectionRunner::new(store, dir, RunnerOptions::default());
    ReadModels::register(&mut runner, config)?;
    Ok(runner)
}

/// One read model's typed handle.
#[derive(Clone)]
pub enum OneModel {
    /// `pipeline`.
    Pipeline(ProjectionHandle<PipelineProjection>),
    /// `churn`.
    Churn(ProjectionHandle<ChurnProjection>),
    /// `lifetime-value`.
    LifetimeValue(ProjectionHandle<LifetimeValueProjection>),
    /// `sla`.
    Sla(ProjectionHandle<SlaProjection>),
}

/// A runner with only read model `name` registered under `options` (its snapshot loaded,
/// nothing running), and its handle: what `crm project run NAME` and `show NAME` work on.
///
/// # Errors
/// [`ProjectionError::Unknown`] for an unknown name; a snapshot that cannot be read.
pub fn single_runner(
    store: AnyStore,
    dir: &Path,
    config: &ReadModelConfig,
    options: RunnerOptions,
    name: &str,
) -> Result<(ProjectionRunner<AnyStore>, OneModel), ProjectionError> {
    check_name(name)?;
    let mut runner = ProjectionRunner::new(store, dir, options);
    let model = match name {
        pipeline::NAME => {
            OneModel::Pipeline(runner.register(PipelineProjection::new(config.pipeline.clone()))?)
        }
        churn::NAME => OneModel::Churn(runner.register(ChurnProjection::new(
            config.churn.clone(),
            config.sla.clone(),
        ))?),
        lifetime_value::NAME => OneModel::LifetimeValue(
            runner.register(LifetimeValueProjection::new(config.lifetime_value.clone()))?,
        ),
        _ => OneModel::Sla(runner.register(SlaProjection::new(config.sla.clone()))?),
    };
    Ok((runner, model))
}

/// Checks that `name` is one of the four read models, with a message listing them.
///
/// # Errors
/// [`ProjectionError::Unknown`] otherwise.
pub fn check_name(name: &str) -> Result<(), ProjectionError> {
    if STANDARD_NAMES.contains(&name) {
        Ok(())
    } else {
        Err(ProjectionError::Unknown {
            name: name.to_owned(),
            known: STANDARD_NAMES.join(", "),
        })
    }
}

/// What a worker process serves for its probes.
#[derive(Clone)]
struct Probe {
    runner: Arc<ProjectionRunner<AnyStore>>,
    name: String,
}

impl Probe {
    async fn status(&self) -> Option<WorkerStatus> {
        self.runner
            .status()
            .await
            .into_iter()
            .find(|s| s.name == self.name)
    }
}

async fn probe_healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn probe_readyz(State(probe): State<Probe>) -> Response {
    match probe.status().await {
        Some(s) if s.phase.is_running() && s.lag_events <= READY_LAG_EVENTS_MAX => {
            Json(serde_json::json!({ "status": "ready", "projection": s.name, "applied_position": s.applied_position.0, "lag_events": s.lag_events })).into_response()
        }
        Some(s) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "status": "not ready",
                "projection": s.name,
                "phase": s.phase,
                "lag_events": s.lag_events,
                "detail": format!("the worker is {:?} and {} events behind the head (ready at most {READY_LAG_EVENTS_MAX}); wait for it to catch up", s.phase, s.lag_events),
            })),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "not ready", "detail": "the worker is not registered" })),
        )
            .into_response(),
    }
}

async fn probe_metrics(State(probe): State<Probe>) -> Response {
    let Some(handle) = crate::http::ops::metrics_handle() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no metrics recorder is installed in this process\n",
        )
            .into_response();
    };
    if let Some(s) = probe.status().await {
        #[allow(clippy::cast_precision_loss)] // a gauge; exact below 2^53 events
        metrics::gauge!("crm_store_head_position").set(s.head_position.0 as f64);
        crate::http::ops::record_projection_gauges(&s);
    }
    crate::http::ops::render_prometheus(&handle)
}

/// Runs projection `name` as a long-lived worker until `shutdown` completes: catches up from
/// its checkpoint, follows the log live, restarts itself with backoff after a failure, and
/// saves a final snapshot when stopped. With `listener`, serves `/healthz`, `/readyz` (ready
/// once at most [`READY_LAG_EVENTS_MAX`] events behind) and `/metrics` meanwhile.
///
/// # Errors
/// [`ProjectionError::Unknown`] for an unknown name, or the worker's error when it stops.
pub async fn run_worker(
    runner: Arc<ProjectionRunner<AnyStore>>,
    name: &str,
    listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProjectionError> {
    check_name(name)?;
    let (stop_probe, probe_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = listener.map(|listener| {
        let app = Router::new()
            .route("/healthz", get(probe_healthz))
            .route("/readyz", get(probe_readyz))
            .route("/metrics", get(probe_metrics))
            .with_state(Probe {
                runner: Arc::clone(&runner),
                name: name.to_owned(),
            });
        tokio::spawn(async move {
            let stopped = async {
                let _ = probe_stopped.await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::warn!(error = %e, "the worker's probe server stopped");
            }
        })
    });
    let result = runner.run_worker(name, shutdown).await;
    let _ = stop_probe.send(());
    if let Some(server) = server {
        let _ = server.await;
    }
    result
}

/// The report of `model` as of `as_of`, as JSON, with the position it covers.
///
/// # Errors
/// A report that cannot be rendered as JSON.
pub fn report_json(
    model: &OneModel,
    as_of: DateTime<Utc>,
    limit: Option<usize>,
) -> Result<serde_json::Value, ProjectionError> {
    let (name, (report, applied)) = match model {
        OneModel::Pipeline(h) => {
            let query = pipeline::PipelineQuery {
                as_of,
                closed_from: None,
                closed_to: None,
                coverage_target_minor: None,
                coverage_close_window: None,
                limit,
            };
            let config = h.projection().config_ref();
            (
                pipeline::NAME,
                h.read(|s, p| {
                    (
                        serde_json::to_value(pipeline::report(s, config, &query)),
                        p.position,
                    )
                }),
            )
        }
        OneModel::Churn(h) => {
            let query = churn::ChurnQuery {
                as_of,
                period: None,
                limit,
            };
            let config = h.projection().config_ref();
            (
                churn::NAME,
                h.read(|s, p| {
                    (
                        serde_json::to_value(churn::report(s, config, &query)),
                        p.position,
                    )
                }),
            )
        }
        OneModel::LifetimeValue(h) => {
            let query = lifetime_value::LifetimeValueQuery {
                as_of,
                account: None,
                limit,
            };
            let config = h.projection().config_ref();
            (
                lifetime_value::NAME,
                h.read(|s, p| {
                    (
                        serde_json::to_value(lifetime_value::report(s, config, &query)),
                        p.position,
                    )
                }),
            )
        }
        OneModel::Sla(h) => {
            let query = sla::SlaQuery {
                limit,
                ..sla::SlaQuery::at(as_of)
            };
            let config = h.projection().config_ref();
            (
                sla::NAME,
                h.read(|s, p| {
                    (
                        serde_json::to_value(sla::report(s, config, &query)),
                        p.position,
                    )
                }),
            )
        }
    };
    let report = report.map_err(|e| ProjectionError::Serialize {
        projection: name.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(serde_json::json!({
        "projection": name,
        "applied_position": applied.0,
        "as_of": as_of,
        "report": report,
    }))
}

/// A JSON value as indented `key: value` lines, for reading in a terminal.
#[must_use]
pub fn render_text(value: &serde_json::Value) -> String {
    let mut out = String::new();
    render_into(&mut out, value, 0);
    out
}

fn render_into(out: &mut String, value: &serde_json::Value, depth: usize) {
    let pad = "  ".repeat(depth);
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match v {
                    serde_json::Value::Object(m) if !m.is_empty() => {
                        let _ = writeln!(out, "{pad}{k}:");
                        render_into(out, v, depth + 1);
                    }
                    serde_json::Value::Array(a) if !a.is_empty() => {
                        let _ = writeln!(out, "{pad}{k}: ({} rows)", a.len());
                        render_into(out, v, depth + 1);
                    }
                    _ => {
                        let _ = writeln!(out, "{pad}{k}: {}", scalar(v));
                    }
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                match item {
                    serde_json::Value::Object(m)
                        if m.values().all(|v| !v.is_object() && !v.is_array()) =>
                    {
                        let row: Vec<String> = m
                            .iter()
                            .map(|(k, v)| format!("{k}={}", scalar(v)))
                            .collect();
                        let _ = writeln!(out, "{pad}- {}", row.join("  "));
                    }
                    serde_json::Value::Object(_) | serde_json::Value::Array(_) => {
                        let _ = writeln!(out, "{pad}-");
                        render_into(out, item, depth + 1);
                    }
                    _ => {
                        let _ = writeln!(out, "{pad}- {}", scalar(item));
                    }
                }
            }
        }
        _ => {
            let _ = writeln!(out, "{pad}{}", scalar(value));
        }
    }
}

fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        serde_json::Value::Object(_) => "{}".into(),
        serde_json::Value::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}

/// Brings every read model to the log's head and saves its snapshot; the status after.
///
/// # Errors
/// [`ProjectionError`] when a projection keeps failing.
pub async fn catch_up(
    runner: &ProjectionRunner<AnyStore>,
) -> Result<Vec<WorkerStatus>, ProjectionError> {
    runner.run_until_head().await?;
    Ok(runner.status().await)
}

/// Rebuilds one projection from position 0.
///
/// # Errors
/// [`ProjectionError::Unknown`] for an unknown name, or the rebuild's failure.
pub async fn rebuild(
    runner: &ProjectionRunner<AnyStore>,
    name: &str,
) -> Result<RebuildReport, ProjectionError> {
    runner.rebuild(name).await
}

/// The status as a table: one line per projection.
#[must_use]
pub fn status_table(status: &[WorkerStatus]) -> String {
    let mut out = format!(
        "{:<16} {:>4} {:<12} {:>10} {:>10} {:>10} {:>9}\n",
        "projection", "ver", "phase", "applied", "checkpoint", "lag", "restarts"
    );
    for s in status {
        let _ = writeln!(
            out,
            "{:<16} {:>4} {:<12} {:>10} {:>10} {:>10} {:>9}",
            s.name,
            s.version,
            format!("{:?}", s.phase).to_lowercase(),
            s.applied_position.0,
            s.checkpoint_position.0,
            s.lag_events,
            s.restarts
        );
        if let Some(e) = &s.last_error {
            let _ = writeln!(out, "  last error at {}: {}", e.position.0, e.message);
        }
        if let Some(why) = &s.rebuilt_because {
            let _ = writeln!(out, "  rebuilt from 0 because {why}");
        }
    }
    out
}
