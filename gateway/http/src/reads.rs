//! Reads: one stream by version, the global log by position (filterable), the aggregate
//! catalog. Every read is one bounded page; `next_from` continues it.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use crm_app::access::Principal;
use crm_eventstore::{AnyStore, EventStore, Position, RecordedEvent, StreamId, StreamVersion};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::aggregates::{catalog, AggregateInfo};
use super::problem::{ApiError, Problem};
use super::{AppState, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX};
use std::borrow::Cow;

use crm_app::envelope::{EventFilter, EventLine};
use crm_app::personal::{as_seen, Visibility};
use crm_domain::access::Permission;

/// Records of the global log one filtered read looks at, at most.
pub const LOG_SCAN_MAX: usize = 10_000;

/// Paging of a stream read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// First stream version to return (default 1).
    pub from: Option<u64>,
    /// Most events to return (default 100, capped at 1000).
    pub limit: Option<usize>,
}

/// Paging and filters of a global log read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// First global position to return (default 1).
    pub from: Option<u64>,
    /// Most events to return (default 100, capped at 1000).
    pub limit: Option<usize>,
    /// Only events of this stream category, e.g. `opportunity`.
    pub category: Option<String>,
    /// Only events of this type, e.g. `OpportunityWon`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    /// Only events with this correlation id (one request's `X-Correlation-Id`, one import run).
    pub correlation: Option<Uuid>,
    /// Only events with this causation id.
    pub causation: Option<Uuid>,
}

impl LogQuery {
    fn filter(&self) -> EventFilter {
        EventFilter {
            category: self.category.clone(),
            event_type: self.event_type.clone(),
            correlation_id: self.correlation,
            causation_id: self.causation,
        }
    }
}

/// One page of events.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage<'a> {
    /// The events, oldest first.
    pub events: Vec<EventLine<'a>>,
    /// Where the next page starts (`from=`); absent at the end.
    pub next_from: Option<u64>,
    /// The page size applied (the request's `limit`, capped).
    pub limit: usize,
    /// Stream reads: the stream's version. Log reads: the head position.
    pub head: u64,
}

fn limit(requested: Option<usize>) -> usize {
    requested
        .unwrap_or(PAGE_SIZE_DEFAULT)
        .clamp(1, PAGE_SIZE_MAX)
}

/// Events of one stream.
#[utoipa::path(
    get,
    path = "/v1/streams/{stream_id}",
    tag = "log",
    params(("stream_id" = String, Path, description = "Stream, e.g. `account-acme`"), StreamQuery),
    responses(
        (status = 200, description = "A page of the stream; `ETag` is its version", body = EventPage),
        (status = 400, description = "Invalid stream id or paging", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The stream has no events", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn read_stream(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(stream_id): Path<String>,
    Query(query): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    let stream = StreamId::new(stream_id)
        .map_err(|e| ApiError::BadRequest(format!("invalid stream id: {e}")))?;
    if !principal.covers(stream.category()) {
        return Err(ApiError::Forbidden(format!(
            "{} is scoped to {}; it may not read stream `{stream}`",
            principal.name,
            principal.scope.join(", ")
        )));
    }
    let version = state.store.stream_version(&stream).await?;
    if version.0 == 0 {
        return Err(ApiError::NotFound(format!(
            "stream `{stream}` has no events; check the id (streams are `<category>-<id>`)"
        )));
    }
    let limit = limit(query.limit);
    let from = query.from.unwrap_or(1).max(1);
    let page = state
        .store
        .read_stream(&stream, StreamVersion(from), limit)
        .await?;
    let next_from = page
        .last()
        .filter(|last| last.stream_version < version)
        .map(|last| last.stream_version.0 + 1);
    let page = shown(&state.store, &page, &principal)?;
    let body = EventPage {
        events: page.iter().map(|e| EventLine::new(e)).collect(),
        next_from,
        limit,
        head: version.0,
    };
    let mut response = Json(body).into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", version.0)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

/// Events of the global log in position order, optionally filtered.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "log",
    params(LogQuery),
    responses(
        (status = 200, description = "A page of the log (a filtered page scans at most 10,000 records; continue at `next_from`)", body = EventPage),
        (status = 400, description = "Invalid paging", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn read_log(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let limit = limit(query.limit);
    let head = state.store.head().position;
    let from = Position(query.from.unwrap_or(1).max(1));
    let filter = query.filter();
    let scan = if filter.is_empty() {
        limit
    } else {
        LOG_SCAN_MAX
    };
    let page = state.store.read_all(from, scan).await?;
    let selected: Vec<_> = page
        .iter()
        .filter(|e| filter.matches(e))
        .take(limit)
        .collect();
    // Continue after the last event returned, or after the scanned range when the page is
    // not full (nothing more matched in it).
    let last_seen = if selected.len() == limit {
        selected.last().map(|e| e.position)
    } else {
        page.last().map(|e| e.position)
    };
    let next_from = last_seen
        .filter(|p| *p < head)
        .map(|p| p.0 + 1)
        .or_else(|| (page.is_empty() && from <= head).then_some(from.0));
    let selected = shown(&state.store, selected, &principal)?;
    let body = EventPage {
        events: selected.iter().map(|e| EventLine::new(e)).collect(),
        next_from,
        limit,
        head: head.0,
    };
    Ok(Json(body).into_response())
}

/// `events` as `principal` may see them: personal fields opened when its roles give
/// `read_personal_data` (or marked erased), masked otherwise. Events without personal data
/// are not copied.
///
/// # Errors
/// [`ApiError::PersonalDataUnreadable`] when a sealed field fails authentication or its key
/// is missing or damaged.
pub fn shown<'a>(
    store: &AnyStore,
    events: impl IntoIterator<Item = &'a RecordedEvent>,
    principal: &Principal,
) -> Result<Vec<Cow<'a, RecordedEvent>>, ApiError> {
    let visibility = Visibility::allowed(principal.can(Permission::ReadPersonalData));
    events
        .into_iter()
        .map(|e| as_seen(store, e, visibility).map_err(ApiError::from))
        .collect()
}

/// The aggregates: stream category, command names, event types.
#[utoipa::path(
    get,
    path = "/v1/aggregates",
    tag = "commands",
    responses((status = 200, description = "Every aggregate the API takes commands for", body = Vec<AggregateInfo>))
)]
pub async fn aggregates(State(state): State<AppState>) -> Json<Vec<AggregateInfo>> {
    Json(catalog(state.commands.registry()))
}
