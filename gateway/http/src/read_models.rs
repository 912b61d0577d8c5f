//! `/v1/read-models`: the projection workers' status and the four read models of
//! `crm-projections` (pipeline, churn, lifetime value, SLA), queried as of any instant.
//!
//! Every answer names the log position the served state covers (`applied_position`), so a
//! client that just wrote can tell whether its event is in the figure yet.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use crm_eventstore::{AnyStore, Position};
use crm_projections::read_models::{churn, lifetime_value, pipeline, sla};
use crm_projections::{
    ProjectionError, ProjectionRunner, ReadModelConfig, ReadModels, WorkerStatus,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::answer_cache::Rendered;
use super::problem::{ApiError, Problem};
use super::AppState;

/// The running projections the API reads.
#[derive(Clone)]
pub struct Projections {
    /// The runner (status, lag).
    pub runner: Arc<ProjectionRunner<AnyStore>>,
    /// Typed handles on the read models.
    pub models: ReadModels,
}

/// A read-model answer: the report and the log position its state covers.
#[derive(Debug, Serialize, ToSchema, schemars::JsonSchema)]
#[schemars(rename = "{R}Answer")]
pub struct ReadModelAnswer<R: Serialize> {
    /// Position of the last event folded into the state the report was computed from.
    pub applied_position: u64,
    /// The report (see `crm-projections` for its fields).
    #[schema(value_type = Object)]
    pub report: R,
}

/// Most events a projection may trail the head by while `/readyz` answers ready.
pub const READY_LAG_EVENTS_MAX: u64 = 1_000;

impl Projections {
    /// Registers the four read models (snapshots under `dir`) and starts their workers:
    /// each catches up from its snapshot, then follows the log live.
    ///
    /// # Errors
    /// [`ProjectionError`] when a snapshot cannot be read or a worker cannot start.
    pub fn start(
        store: AnyStore,
        dir: &std::path::Path,
        config: &ReadModelConfig,
    ) -> Result<Projections, ProjectionError> {
        let (runner, models) = crm_app::projections::standard(store, dir, config)?;
        runner.start()?;
        Ok(Projections {
            runner: Arc::new(runner),
            models,
        })
    }

    /// Stops the workers, each after a final snapshot.
    ///
    /// # Errors
    /// The first worker's error.
    pub async fn stop(&self) -> Result<(), ProjectionError> {
        self.runner.stop().await
    }
}

fn projections(state: &AppState) -> Result<&Projections, ApiError> {
    state.projections.as_ref().ok_or_else(|| {
        ApiError::Unavailable("projections are not running in this server".to_owned())
    })
}

/// The query's `as_of`, or the current time to the whole second: answers for "now" are
/// cached per second (see [`super::answer_cache`]).
fn now_or(as_of: Option<DateTime<Utc>>) -> DateTime<Utc> {
    as_of.unwrap_or_else(|| Utc::now().trunc_subsecs(0))
}

/// A read-model answer for `query` at the projection's `applied` position: from the answer
/// cache (keyed by the query's JSON form, with `as_of` resolved), or computed by `compute` on
/// the blocking pool (a report over a large state takes milliseconds of CPU, which must not
/// hold a runtime worker) and stored.
async fn report_answer<Q, R>(
    state: &AppState,
    model: &'static str,
    applied: Position,
    query: Q,
    compute: impl FnOnce(&Q) -> Result<(R, Position), ProjectionError> + Send + 'static,
) -> Result<Response, ApiError>
where
    Q: Serialize + Send + 'static,
    R: Serialize + Send + 'static,
{
    let key = serde_json::to_string(&query)
        .map_err(|e| ApiError::BadRequest(format!("the query cannot be used: {e}")))?;
    let rendered = async move {
        let (report, position) = tokio::task::spawn_blocking(move || compute(&query))
            .await
            .map_err(|e| {
                ApiError::Internal(format!("the {model} report could not be computed: {e}"))
            })?
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        Rendered::json(
            "report",
            &ReadModelAnswer {
                applied_position: position.0,
                report,
            },
        )
    };
    state.answers.answer(model, key, applied.0, rendered).await
}

/// Status of every projection worker: phase, applied position, lag, last error.
#[utoipa::path(get, path = "/v1/read-models", tag = "read models",
    responses(
        (status = 200, description = "One entry per projection worker", body = Vec<Object>),
        (status = 503, description = "Projections are not running", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn status(State(state): State<AppState>) -> Result<Json<Vec<WorkerStatus>>, ApiError> {
    Ok(Json(projections(&state)?.runner.status().await))
}

/// Parameters of the pipeline report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PipelineParams {
    /// "Now" (YYYY-MM-DD or RFC 3339; default the current time): open deals are those open then.
    #[serde(default, deserialize_with = "crm_app::instant::deserialize_opt")]
    pub as_of: Option<DateTime<Utc>>,
    /// Closes counted from this instant (default: all history).
    #[serde(default, deserialize_with = "crm_app::instant::deserialize_opt")]
    pub closed_from: Option<DateTime<Utc>>,
    /// Closes counted before this instant (default `as_of`).
    #[serde(default, deserialize_with = "crm_app::instant::deserialize_opt")]
    pub closed_to: Option<DateTime<Utc>>,
    /// Coverage target in minor units of the reporting currency.
    pub coverage_target_minor: Option<i64>,
    /// Coverage counts open deals expected to close from this date ...
    pub coverage_from: Option<NaiveDate>,
    /// ... to this date (both needed).
    pub coverage_to: Option<NaiveDate>,
    /// Most rows per breakdown (default 100, at most 10,000).
    pub limit: Option<usize>,
}

/// The sales pipeline: open pipeline, stage times, conversion, win/loss, coverage.
#[utoipa::path(get, path = "/v1/read-models/pipeline", tag = "read models", params(PipelineParams),
    responses(
        (status = 200, description = "The pipeline report", body = ReadModelAnswer<Object>, headers(("cache-status" = String, description = "`crm-answer-cache; hit` when served from the answer cache, `crm-answer-cache; fwd=miss; stored` when computed (RFC 9211)"))),
        (status = 400, description = "Invalid parameter", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Projections are not running, or the state or the report's rows could not be read back from disk", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn pipeline(
    State(state): State<AppState>,
    Query(p): Query<PipelineParams>,
) -> Result<Response, ApiError> {
    let handle = projections(&state)?.models.pipeline.clone();
    let query = pipeline::PipelineQuery {
        as_of: now_or(p.as_of),
        closed_from: p.closed_from,
        closed_to: p.closed_to,
        coverage_target_minor: p.coverage_target_minor,
        coverage_close_window: p.coverage_from.zip(p.coverage_to),
        limit: p.limit,
    };
    let applied = handle.applied_position();
    report_answer(&state, "pipeline", applied, query, move |query| {
        let config = handle.projection().config_ref();
        handle.read_checked(|s, progress| (pipeline::report(s, config, query), progress.position))
    })
    .await
}

/// Parameters of the churn report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChurnParams {
    /// "Now" (default the current time).
    #[serde(default, deserialize_with = "crm_app::instant::deserialize_opt")]
    pub as_of: Option<DateTime<Utc>>,
    /// Churn rates over `[period_from, period_to)` among customers active at `period_from`.
    #[serde(default, deserialize_with = "crm_app::instant::deserialize_opt")]
    pub period_from: Option<DateTime<Utc>>,
    /// End of the period (both needed).
    #[serde(default, deserialize_with = "crm_app::instant::deserialize_opt")]
    pub period_to: Option<DateTime<Utc>>,
    /// Most customers listed, highest risk first (default 100, at most 10,000).
    pub limit: Option<usize>,
}

/// Churn: rates by customers and revenue, and risk signals per customer.
#[utoipa::path(get, path = "/v1/read-models/churn", tag = "read models", params(ChurnParams),
    responses(
        (status = 200, description = "The churn report", body = ReadModelAnswer<Object>, headers(("cache-status" = String, description = "`crm-answer-cache; hit` when served from the answer cache, `crm-answer-cache; fwd=miss; stored` when computed (RFC 9211)"))),
        (status = 400, description = "Invalid parameter", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Projections are not running, or the state or the report's rows could not be read back from disk", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn churn(
    State(state): State<AppState>,
    Query(p): Query<ChurnParams>,
) -> Result<Response, ApiError> {
    let handle = projections(&state)?.models.churn.clone();
    let query = churn::ChurnQuery {
        as_of: now_or(p.as_of),
        period: p.period_from.zip(p.period_to),
        limit: p.limit,
    };
    let applied = handle.applied_position();
    report_answer(&state, "churn", applied, query, move |query| {
        let config = handle.projection().config_ref();
        handle.try_read_checked(|s, progress| {
            churn::report(s, config, query).map(|r| (r, progress.position))
        })
    })
    .await
}

/// Parameters of the lifetime-value report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LifetimeValueParams {
    /// "Now" (default the current time).
    #[serde(default, deserialize_with = "crm_app::instant::deserialize_opt")]
    pub as_of: Option<DateTime<Utc>>,
    /// Only this account id.
    pub account: Option<String>,
    /// Most customers listed, highest revenue first (default 100, at most 10,000).
    pub limit: Option<usize>,
}

/// Customer lifetime value: revenue, RFM, predicted value.
#[utoipa::path(get, path = "/v1/read-models/lifetime-value", tag = "read models",
    params(LifetimeValueParams),
    responses(
        (status = 200, description = "The lifetime-value report", body = ReadModelAnswer<Object>, headers(("cache-status" = String, description = "`crm-answer-cache; hit` when served from the answer cache, `crm-answer-cache; fwd=miss; stored` when computed (RFC 9211)"))),
        (status = 400, description = "Invalid parameter", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Projections are not running, or the state or the report's rows could not be read back from disk", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn lifetime_value(
    State(state): State<AppState>,
    Query(p): Query<LifetimeValueParams>,
) -> Result<Response, ApiError> {
    let handle = projections(&state)?.models.lifetime_value.clone();
    let query = lifetime_value::LifetimeValueQuery {
        as_of: now_or(p.as_of),
        account: p.account,
        limit: p.limit,
    };
    let applied = handle.applied_position();
    report_answer(&state, "lifetime-value", applied, query, move |query| {
        let config = handle.projection().config_ref();
        handle.try_read_checked(|s, progress| {
            lifetime_value::report(s, config, query).map(|r| (r, progress.position))
        })
    })
    .await
}

/// Parameters of the SLA report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SlaParams {
    /// "Now" (default the current time).
    #[serde(default, deserialize_with = "crm_app::instant::deserialize_opt")]
    pub as_of: Option<DateTime<Utc>>,
    /// Compliance counts cases decided from this instant (default all).
    #[serde(default, deserialize_with = "crm_app::instant::deserialize_opt")]
    pub decided_from: Option<DateTime<Utc>>,
    /// ... and before this one (default `as_of`).
    #[serde(default, deserialize_with = "crm_app::instant::deserialize_opt")]
    pub decided_to: Option<DateTime<Utc>>,
    /// Most rows per list (default 100, at most 10,000).
    pub limit: Option<usize>,
}

/// Service levels: compliance, breaches, backlog, first-contact resolution.
#[utoipa::path(get, path = "/v1/read-models/sla", tag = "read models", params(SlaParams),
    responses(
        (status = 200, description = "The SLA report", body = ReadModelAnswer<Object>, headers(("cache-status" = String, description = "`crm-answer-cache; hit` when served from the answer cache, `crm-answer-cache; fwd=miss; stored` when computed (RFC 9211)"))),
        (status = 400, description = "Invalid parameter", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Projections are not running, or the state or the report's rows could not be read back from disk", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn sla(
    State(state): State<AppState>,
    Query(p): Query<SlaParams>,
) -> Result<Response, ApiError> {
    let handle = projections(&state)?.models.sla.clone();
    let query = sla::SlaQuery {
        as_of: now_or(p.as_of),
        decided_from: p.decided_from,
        decided_to: p.decided_to,
        limit: p.limit,
    };
    let applied = handle.applied_position();
    report_answer(&state, "sla", applied, query, move |query| {
        let config = handle.projection().config_ref();
        handle.read_checked(|s, progress| (sla::report(s, config, query), progress.position))
    })
    .await
}
