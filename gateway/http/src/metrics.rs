//! `/v1/metrics`: the metric engine of `crm-metrics` over HTTP — the catalog, evaluation,
//! comparison of versions, explanations (JSON or CSV), diffs between two report dates, and
//! definition of new versions (TOML bodies).
//!
//! The registry (built-in catalog plus `MetricDefined` events) is kept by the log head it
//! covers ([`crm_metrics::RegistryCache`]): a request at an unchanged head reads no log, a
//! request after new events reads only those, so a definition appended by `POST
//! /v1/metrics` is visible to the next request.
//! Figures are computed from a replay of the log, shared by the questions asked at one head
//! ([`super::view_cache`]); an answer is kept until the head moves ([`super::answer_cache`]).
//! Every answer names the position it read to.

use std::collections::BTreeMap;

use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use crm_eventstore::{AnyStore, EventStore};
use crm_metrics::{self as metrics, ExplainSelect, KnownAt, MetricError, MetricSummary, Registry};
use serde::Deserialize;
use std::future::Future;
use std::sync::Arc;
use utoipa::IntoParams;

use super::answer_cache::Rendered;
use super::problem::{ApiError, Body413, Problem};
use super::AppState;

/// Media type of an explanation as CSV.
pub const TEXT_CSV: &str = "text/csv";

impl From<MetricError> for ApiError {
    fn from(e: MetricError) -> Self {
        match e {
            MetricError::Definition(_)
            | MetricError::Cycle { .. }
            | MetricError::StreamName(_)
            | MetricError::Overflow(_) => ApiError::InvalidDefinition(e.to_string()),
            MetricError::UnknownMetric { .. } | MetricError::UnknownVersion { .. } => {
                ApiError::NotFound(e.to_string())
            }
            MetricError::VersionConflict { next, .. }
            | MetricError::VersionOutOfSequence { next, .. } => ApiError::VersionConflict {
                detail: e.to_string(),
                current_version: u64::from(next.saturating_sub(1)),
            },
            MetricError::Concurrent { .. } => ApiError::Conflict(e.to_string()),
            MetricError::Query(_) | MetricError::Limit { .. } => {
                ApiError::BadRequest(e.to_string())
            }
            MetricError::Read(r) => ApiError::from(r),
            MetricError::Append(a) => ApiError::from(a),
            MetricError::BadStoredDefinition { .. } | MetricError::Output(_) => {
                ApiError::Internal(e.to_string())
            }
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

/// What to compute: range, grain, breakdown, and the bitemporal cut.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricParams {
    /// Version of the definition (default: the metric's default version).
    pub version: Option<u32>,
    /// Start of the range, inclusive (YYYY-MM-DD or RFC 3339; default: the earliest fact).
    #[serde(default, deserialize_with = "crm_app::instant::deserialize_opt")]
    pub from: Option<DateTime<Utc>>,
    /// End of the range, exclusive (YYYY-MM-DD or RFC 3339; default: just after the latest
    /// fact).
    #[serde(default, deserialize_with = "crm_app::instant::deserialize_opt")]
    pub to: Option<DateTime<Utc>>,
    /// Period grain: `day`, `week`, `month`, `quarter`, `year` or `all` (default).
    pub period: Option<String>,
    /// Breakdown, comma-separated: declared dimensions (e.g. `regional_office`) or
    /// expressions of the definition language without a comma (e.g. `attr.job`).
    pub by: Option<String>,
    /// Count facts that occurred by this instant (YYYY-MM-DD or RFC 3339).
    #[serde(default, deserialize_with = "crm_app::instant::deserialize_opt")]
    pub as_of: Option<DateTime<Utc>>,
    /// Count only what the log had recorded by then: an RFC 3339 time or a log position.
    pub known_at: Option<String>,
    /// Only some facts, repeatable (all must hold): `DIM=VALUE`, several comma-separated,
    /// e.g. `regional_office=East`; or one expression of the definition language, e.g.
    /// `attr.origin == 'API' and payload.channel != 'web'`.
    #[serde(rename = "where", default)]
    #[param(rename = "where")]
    pub filter: Vec<String>,
}

fn parse_known_at(name: &str, text: &str) -> Result<KnownAt, ApiError> {
    let text = text.trim();
    if let Ok(position) = text.parse::<u64>() {
        return Ok(KnownAt::Position(position));
    }
    crm_app::instant::parse(text)
        .map(KnownAt::Time)
        .map_err(|e| {
            ApiError::BadRequest(format!(
                "`{name}` is neither an instant nor a log position: {e}"
            ))
        })
}

fn comma_list(text: Option<&str>) -> Vec<String> {
    text.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl MetricParams {
    fn query(&self) -> Result<metrics::Query, ApiError> {
        let period = match self.period.as_deref() {
            Some(p) => p.trim().parse().map_err(ApiError::from)?,
            None => metrics::Grain::default(),
        };
        let known_at = self
            .known_at
            .as_deref()
            .map(|t| parse_known_at("known_at", t))
            .transpose()?;
        let mut query = metrics::Query {
            from: self.from,
            to: self.to,
            period,
            by: comma_list(self.by.as_deref()),
            filter: BTreeMap::new(),
            conditions: Vec::new(),
            as_of: self.as_of,
            known_at,
        };
        // Each `where`: a list of DIM=VALUE pairs, or else the whole text is one expression
        // (which may hold commas of its own, as in `x in ['a', 'b']`).
        for text in &self.filter {
            let pairs = comma_list(Some(text));
            let all_pairs = pairs.iter().all(|p| {
                matches!(
                    metrics::WhereClause::parse(p),
                    metrics::WhereClause::Dimension(..)
                )
            });
            if all_pairs {
                pairs.iter().for_each(|p| query.add_where(p));
            } else {
                query.conditions.push(text.trim().to_owned());
            }
        }
        Ok(query)
    }
}

/// The versions to compare.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CompareParams {
    /// Versions, comma-separated, in display order (e.g. `1,2`; at most 8).
    #[param(example = "1")]
    pub versions: String,
}

/// Which cells and which page of the derivation record.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExplainParams {
    /// Only the period with this label (e.g. `2017-Q2`); default all periods.
    pub period_label: Option<String>,
    /// Only the cell with these values of the `by` dimensions: `dim=value`, comma-separated.
    pub cell: Option<String>,
    /// Only `included` or `excluded` rows (totals still cover both).
    pub decision: Option<String>,
    /// Rows to skip (default 0).
    pub offset: Option<usize>,
    /// Page size (default 100, at most 1,000, as every list of the API).
    pub limit: Option<usize>,
    /// `json` (default) or `csv`; `Accept: text/csv` also selects CSV.
    pub format: Option<String>,
}

impl ExplainParams {
    fn select(&self) -> Result<ExplainSelect, ApiError> {
        let mut dims = std::collections::BTreeMap::new();
        for pair in comma_list(self.cell.as_deref()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(ApiError::BadRequest(format!(
                    "`cell` entry {pair:?} is not `dimension=value`"
                )));
            };
            dims.insert(k.trim().to_owned(), v.trim().to_owned());
        }
        if let Some(d) = self.decision.as_deref() {
            if d != "included" && d != "excluded" {
                return Err(ApiError::BadRequest(format!(
                    "`decision` = {d:?}; use `included` or `excluded`"
                )));
            }
        }
        Ok(ExplainSelect {
            period: self.period_label.clone(),
            dims,
            decision: self.decision.clone(),
            offset: self.offset.unwrap_or(0),
            limit: self
                .limit
                .unwrap_or(crate::PAGE_SIZE_DEFAULT)
                .clamp(1, crate::PAGE_SIZE_MAX),
        })
    }

    fn wants_csv(&self, headers: &HeaderMap) -> Result<bool, ApiError> {
        match self.format.as_deref() {
            Some("csv") => Ok(true),
            Some("json") => Ok(false),
            Some(other) => Err(ApiError::BadRequest(format!(
                "`format` = {other:?}; use `json` or `csv`"
            ))),
            None => Ok(headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains(TEXT_CSV))),
        }
    }
}

/// The two report dates of a diff.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffParams {
    /// The earlier report date: an RFC 3339 time or a log position.
    #[param(example = "1")]
    pub known_at_1: String,
    /// The later report date: an RFC 3339 time or a log position.
    #[param(example = "2017-06-30T00:00:00Z")]
    pub known_at_2: String,
}

/// The cache key of a metric request (its path and query string, and `variant` for what the
/// URI does not show, e.g. a format chosen by `Accept`) and the log head it is looked up at:
/// a metric answer is a function of the log up to its head.
fn cache_key(state: &AppState, uri: &Uri, variant: &str) -> (String, u64) {
    let path = uri.path_and_query().map_or("", |p| p.as_str());
    (format!("{variant} {path}"), state.store.head().position.0)
}

/// Runs a metric operation on the blocking pool: an evaluation replays the whole log and is
/// CPU-bound for seconds on a large log, which must not hold one of the runtime's workers
/// (the feeds, health checks and commands share them).
async fn offload<T, Fut>(
    state: &AppState,
    work: impl FnOnce(AnyStore, Arc<Registry>) -> Fut + Send + 'static,
) -> Result<T, ApiError>
where
    Fut: Future<Output = Result<T, MetricError>>,
    T: Send + 'static,
{
    let store = state.store.clone();
    let registries = Arc::clone(&state.registries);
    let runtime = tokio::runtime::Handle::current();
    let done = tokio::task::spawn_blocking(move || {
        runtime.block_on(async move {
            let registry = registries.get(&store).await?;
            work(store, registry).await
        })
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the metric task failed: {e}")))?;
    Ok(done?)
}

/// The metric catalog: every version of every metric, built-in or defined in the log.
#[utoipa::path(get, path = "/v1/metrics", tag = "metrics",
    responses(
        (status = 200, description = "One entry per metric version", body = Vec<Object>),
        (status = 503, description = "Storage unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<MetricSummary>>, ApiError> {
    Ok(Json(state.registries.get(&state.store).await?.list()))
}

/// Evaluates a metric over the log: figures per period and dimension values, each with its
/// numerator, denominator and the facts included and excluded by reason.
#[utoipa::path(get, path = "/v1/metrics/{id}", tag = "metrics",
    params(("id" = String, Path, description = "Metric id, e.g. `sales.win_rate`", example = "sales.win_rate"), MetricParams),
    responses(
        (status = 200, description = "The evaluation", body = Object, headers(("cache-status" = String, description = "`crm-answer-cache; hit` when served from the answer cache, `crm-answer-cache; fwd=miss; stored` when computed (RFC 9211)"))),
        (status = 400, description = "Invalid query (unknown dimension, bad period, bad time)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such metric or version", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn evaluate(
    State(state): State<AppState>,
    uri: Uri,
    Path(id): Path<String>,
    axum_extra::extract::Query(params): axum_extra::extract::Query<MetricParams>,
) -> Result<Response, ApiError> {
    let query = params.query()?;
    let version = params.version;
    let (key, head) = cache_key(&state, &uri, "");
    let compute = async {
        let views = Arc::clone(&state.views);
        let ev = offload(&state, move |store, reg| async move {
            let m = reg.get(&id, version)?;
            let view = views
                .view(&store, &reg, std::slice::from_ref(&m), &query)
                .await?;
            metrics::evaluate_in(&view, &reg, &m, &query)
        })
        .await?;
        Rendered::json("evaluation", &ev)
    };
    state.answers.answer("metric", key, head, compute).await
}

/// Several versions of a metric side by side over the same periods and log position.
#[utoipa::path(get, path = "/v1/metrics/{id}/compare", tag = "metrics",
    params(("id" = String, Path, description = "Metric id", example = "sales.win_rate"), CompareParams, MetricParams),
    responses(
        (status = 200, description = "The comparison", body = Object, headers(("cache-status" = String, description = "`crm-answer-cache; hit` when served from the answer cache, `crm-answer-cache; fwd=miss; stored` when computed (RFC 9211)"))),
        (status = 400, description = "Invalid query or version list", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such metric or version", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn compare(
    State(state): State<AppState>,
    uri: Uri,
    Path(id): Path<String>,
    Query(versions): Query<CompareParams>,
    axum_extra::extract::Query(params): axum_extra::extract::Query<MetricParams>,
) -> Result<Response, ApiError> {
    let versions = comma_list(Some(&versions.versions))
        .iter()
        .map(|v| {
            v.parse::<u32>().map_err(|_| {
                ApiError::BadRequest(format!(
                    "`versions` entry {v:?} is not a version number; write e.g. `versions=1,2`"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let query = params.query()?;
    let (key, head) = cache_key(&state, &uri, "");
    let compute = async {
        let views = Arc::clone(&state.views);
        let cmp = offload(&state, move |store, reg| async move {
            let defs = versions
                .iter()
                .map(|v| reg.get(&id, Some(*v)))
                .collect::<Result<Vec<_>, _>>()?;
            let view = views.view(&store, &reg, &defs, &query).await?;
            metrics::compare_in(&view, &reg, &defs, &query)
        })
        .await?;
        Rendered::json("comparison", &cmp)
    };
    state
        .answers
        .answer("metric-compare", key, head, compute)
        .await
}

/// The derivation record of a figure: one row per fact, included or excluded with the rule
/// that excluded it, paged. JSON, or CSV with `Accept: text/csv` or `format=csv`.
#[utoipa::path(get, path = "/v1/metrics/{id}/explain", tag = "metrics",
    params(("id" = String, Path, description = "Metric id", example = "sales.win_rate"), MetricParams, ExplainParams),
    responses(
        (status = 200, description = "A page of the derivation record (JSON, or CSV rows)", content(
            (Object = "application/json"),
            (String = "text/csv"),
        ), headers(("cache-status" = String, description = "`crm-answer-cache; hit` when served from the answer cache, `crm-answer-cache; fwd=miss; stored` when computed (RFC 9211)"))),
        (status = 400, description = "Invalid query or selection", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such metric or version", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn explain(
    State(state): State<AppState>,
    uri: Uri,
    Path(id): Path<String>,
    axum_extra::extract::Query(params): axum_extra::extract::Query<MetricParams>,
    Query(select): Query<ExplainParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = params.query()?;
    let sel = select.select()?;
    let csv = select.wants_csv(&headers)?;
    let version = params.version;
    let (key, head) = cache_key(&state, &uri, if csv { "csv" } else { "json" });
    let compute = async {
        let views = Arc::clone(&state.views);
        let x = offload(&state, move |store, reg| async move {
            let m = reg.get(&id, version)?;
            let view = views
                .view(&store, &reg, std::slice::from_ref(&m), &query)
                .await?;
            metrics::explain_in(&view, &reg, &m, &query, &sel)
        })
        .await?;
        if csv {
            Ok(Rendered {
                body: metrics::to_csv(&x).into(),
                content_type: "text/csv; charset=utf-8",
            })
        } else {
            Rendered::json("explanation", &x)
        }
    };
    state
        .answers
        .answer("metric-explain", key, head, compute)
        .await
}

/// Why a figure moved between two report dates: the cells before and after, the facts whose
/// part changed, and the events recorded in between that account for it.
#[utoipa::path(get, path = "/v1/metrics/{id}/diff", tag = "metrics",
    params(("id" = String, Path, description = "Metric id", example = "sales.win_rate"), DiffParams, MetricParams),
    responses(
        (status = 200, description = "The diff", body = Object, headers(("cache-status" = String, description = "`crm-answer-cache; hit` when served from the answer cache, `crm-answer-cache; fwd=miss; stored` when computed (RFC 9211)"))),
        (status = 400, description = "Invalid query or report date", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such metric or version", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn diff(
    State(state): State<AppState>,
    uri: Uri,
    Path(id): Path<String>,
    Query(dates): Query<DiffParams>,
    axum_extra::extract::Query(params): axum_extra::extract::Query<MetricParams>,
) -> Result<Response, ApiError> {
    let t1 = parse_known_at("known_at_1", &dates.known_at_1)?;
    let t2 = parse_known_at("known_at_2", &dates.known_at_2)?;
    let query = params.query()?;
    let version = params.version;
    let (key, head) = cache_key(&state, &uri, "");
    let compute = async {
        let d = offload(&state, move |store, reg| async move {
            metrics::diff(&store, &reg, &id, version, &query, t1, t2).await
        })
        .await?;
        Rendered::json("diff", &d)
    };
    state
        .answers
        .answer("metric-diff", key, head, compute)
        .await
}

/// Defines a metric version from a TOML definition (`application/toml` or `text/plain`).
/// A published version is frozen: the same text again is 200, another specification 409.
#[utoipa::path(post, path = "/v1/metrics", tag = "metrics",
    request_body(description = "The metric definition (TOML)", content(
        (String = "application/toml"),
        (String = "text/plain"),
    )),
    responses(
        (status = 201, description = "The definition was appended", body = Object),
        (status = 200, description = "This version is already defined with this text; nothing written", body = Object),
        (status = 409, description = "The version exists with another specification, or skips ahead", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not TOML", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The definition is invalid; the detail names the key", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn define(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let Some(content_type) = request.headers().get(header::CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType(
            "the request has no Content-Type; send the TOML definition as `application/toml` or `text/plain`".to_owned(),
        ));
    };
    let text = content_type.to_str().unwrap_or_default();
    if !(text.starts_with("application/toml") || text.starts_with("text/plain")) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the body has Content-Type `{text}`; send the TOML definition as `application/toml` or `text/plain`"
        )));
    }
    let actor = request
        .extensions()
        .get::<crm_app::access::Principal>()
        .map(|p| p.name.clone())
        .ok_or_else(|| {
            ApiError::Internal("the request reached the handler without a principal".to_owned())
        })?;
    let Body413(bytes) = Body413::from_request(request, &state).await?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("the body is not UTF-8: {e}")))?;
    let outcome = metrics::define_as(&state.store, text, Utc::now(), &actor).await?;
    let status = if outcome.outcome == "already_defined" {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(outcome)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_at_is_a_time_or_a_position() {
        assert_eq!(parse_known_at("k", "42").unwrap(), KnownAt::Position(42));
        assert!(matches!(
            parse_known_at("k", "2017-01-01T00:00:00Z").unwrap(),
            KnownAt::Time(_)
        ));
        assert_eq!(
            parse_known_at("k", "yesterday")
                .unwrap_err()
                .problem()
                .status,
            400
        );
    }

    #[test]
    fn metric_errors_map_to_statuses() {
        let unknown: ApiError = MetricError::UnknownMetric { id: "x".into() }.into();
        assert_eq!(unknown.problem().status, 404);
        let query: ApiError = MetricError::Query("bad".into()).into();
        assert_eq!(query.problem().status, 400);
        let conflict: ApiError = MetricError::VersionConflict {
            id: "x".into(),
            version: 1,
            existing: "a".into(),
            proposed: "b".into(),
            next: 3,
        }
        .into();
        assert_eq!(
            (
                conflict.problem().status,
                conflict.problem().current_version
            ),
            (409, Some(2))
        );
    }

    #[test]
    fn query_params_become_a_metric_query() {
        let p = MetricParams {
            period: Some("quarter".into()),
            by: Some("regional_office, sector,".into()),
            known_at: Some("7".into()),
            ..MetricParams::default()
        };
        let q = p.query().unwrap();
        assert_eq!(q.period, metrics::Grain::Quarter);
        assert_eq!(q.by, vec!["regional_office", "sector"]);
        assert_eq!(q.known_at, Some(KnownAt::Position(7)));
        let bad = MetricParams {
            period: Some("fortnight".into()),
            ..MetricParams::default()
        };
        assert_eq!(bad.query().unwrap_err().problem().status, 400);
    }
}
