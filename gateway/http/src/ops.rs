//! Operations routes (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`) and the middleware
//! that measures every request.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use crm_eventstore::EventStore;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use utoipa::ToSchema;

use super::damage::DamageMet;
use super::problem::{ApiError, Problem};
use super::AppState;

pub use crm_app::telemetry::{metrics_handle, LATENCY_BUCKETS_SECONDS};

/// Counts a request in `crm_http_requests_in_flight` while it lives (also when cancelled).
struct InFlight;

impl InFlight {
    fn start() -> InFlight {
        metrics::gauge!("crm_http_requests_in_flight").increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("crm_http_requests_in_flight").decrement(1.0);
    }
}

/// Middleware: requests in flight; request count and latency by route, method and status.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let in_flight = InFlight::start();
    let response = next.run(request).await;
    drop(in_flight);
    let status = response.status().as_u16().to_string();
    metrics::histogram!(
        "crm_http_request_duration_seconds",
        "route" => route, "method" => method, "status" => status
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// Liveness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
}

/// Readiness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`.
    pub status: &'static str,
    /// The log's head position.
    pub head_position: u64,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The store is open and its head readable, no read of this server met a damaged record,
/// projections are caught up within a bound, the server is not stopping.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready: the store is open and readable", body = Readiness),
        (status = 503, description = "Not ready: shutting down, the store is not readable, a projection is more than 1,000 events behind the head (`storage-unavailable`, with `Retry-After`), or a read of this server met a damaged record (`log-damaged`, without `Retry-After`: not ready until the log is restored and the server restarted)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    if *state.shutdown.borrow() {
        return Err(ApiError::Unavailable(
            "the server is shutting down".to_owned(),
        ));
    }
    if let Some(met) = state.damage.get() {
        return Err(ApiError::NotReadyLogDamaged(met));
    }
    let head = state.store.head().position;
    if head.0 > 0 {
        if let Err(e) = state.store.read_all(head, 1).await {
            return Err(match DamageMet::of_read(&e) {
                Some(met) => {
                    state.damage.latch(&met);
                    ApiError::NotReadyLogDamaged(met)
                }
                None => e.into(),
            });
        }
    }
    if let Some(projections) = &state.projections {
        let max = super::read_models::READY_LAG_EVENTS_MAX;
        let behind: Vec<String> = projections
            .runner
            .status()
            .await
            .into_iter()
            .filter(|s| s.lag_events > max)
            .map(|s| format!("{} ({} events behind)", s.name, s.lag_events))
            .collect();
        if !behind.is_empty() {
            return Err(ApiError::Unavailable(format!(
                "projections are more than {max} events behind the head: {}; wait for them to catch up",
                behind.join(", ")
            )));
        }
    }
    Ok(Json(Readiness {
        status: "ready",
        head_position: head.0,
    }))
}

/// Prometheus metrics: appends (count, events, latency), HTTP requests (latency by route and
/// status), open feeds, store size and head, projection lag per worker.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String),
        (status = 503, description = "No metrics recorder in this process", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn prometheus(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Some(handle) = &state.metrics else {
        return Err(ApiError::Unavailable(
            "no metrics recorder is installed in this process".to_owned(),
        ));
    };
    if let Some(size) = state.store.local_size_bytes() {
        #[allow(clippy::cast_precision_loss)] // a gauge; exact below 2^53 bytes
        metrics::gauge!("crm_store_size_bytes").set(size as f64);
    }
    #[allow(clippy::cast_precision_loss)]
    metrics::gauge!("crm_store_head_position").set(state.store.head().position.0 as f64);
    if let Some(projections) = &state.projections {
        for s in projections.runner.status().await {
            record_projection_gauges(&s);
        }
    }
    Ok(render_prometheus(handle))
}

/// Sets the gauges of one projection worker: lag in events and seconds, applied position,
/// restarts (`/metrics` of `crm serve` and of `crm project run`).
pub fn record_projection_gauges(s: &crm_projections::WorkerStatus) {
    #[allow(clippy::cast_precision_loss)] // gauges; exact below 2^53 events
    {
        metrics::gauge!("crm_projection_lag_events", "projection" => s.name.clone())
            .set(s.lag_events as f64);
        metrics::gauge!("crm_projection_applied_position", "projection" => s.name.clone())
            .set(s.applied_position.0 as f64);
    }
    metrics::gauge!("crm_projection_restarts", "projection" => s.name.clone())
        .set(f64::from(s.restarts));
    if let Some(seconds) = s.lag_seconds {
        metrics::gauge!("crm_projection_lag_seconds", "projection" => s.name.clone()).set(seconds);
    }
}

/// The recorder's text exposition with its content type.
pub fn render_prometheus(handle: &PrometheusHandle) -> Response {
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// This document: the OpenAPI 3.1 description of every route, schema and error.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI document", content_type = "application/json", body = Object)))]
pub async fn openapi_json(State(state): State<AppState>) -> Response {
    let text = state.openapi.get().cloned().unwrap_or_default();
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
