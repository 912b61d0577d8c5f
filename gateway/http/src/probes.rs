//! The probe server of a projection worker running as its own process
//! (`crm project run NAME`): `/healthz`, `/readyz` (ready once at most
//! [`READY_LAG_EVENTS_MAX`] events behind) and `/metrics`.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use crm_app::projections::check_name;
use crm_eventstore::AnyStore;
use crm_projections::{ProjectionError, ProjectionRunner, WorkerStatus};
use tokio::net::TcpListener;

use crate::read_models::READY_LAG_EVENTS_MAX;

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
    let Some(handle) = crate::ops::metrics_handle() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no metrics recorder is installed in this process\n",
        )
            .into_response();
    };
    if let Some(s) = probe.status().await {
        #[allow(clippy::cast_precision_loss)] // a gauge; exact below 2^53 events
        metrics::gauge!("crm_store_head_position").set(s.head_position.0 as f64);
        crate::ops::record_projection_gauges(&s);
    }
    crate::ops::render_prometheus(&handle)
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
