//! `GET /v1/feed`: the log as Server-Sent Events, from any position, then live.
//!
//! Each event is one SSE message: `id` = global position, `event` = event type, `data` = the
//! event's JSON (as in `/v1/events`). A client that reconnects with `Last-Event-ID: N` resumes
//! at position N + 1: the store's catch-up subscription gives neither gap nor duplicate.
//! Filters (`category`, `type`, `correlation`, `causation`) only skip events; the ids stay
//! positions.
//!
//! A feed that meets a damaged record sends the intact events before it, then one `error`
//! message whose data is the problem document (`log-damaged`, naming the position), and
//! ends; the server latches the damage (see [`super::damage`]).
//!
//! **Invariant:** at most [`super::FEEDS_MAX`] feeds at once; every feed ends when the server
//! shuts down, so a graceful shutdown is not held open by followers, and after its first
//! error, so a damaged log is reported once, never in a loop.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use crm_eventstore::{AnyStore, EventStore, Position, RecordedEvent};
use futures_util::stream;
use serde::Deserialize;
use tokio::sync::{watch, OwnedSemaphorePermit};
use utoipa::IntoParams;
use uuid::Uuid;

use super::damage::DamageLatch;
use super::problem::{ApiError, Problem};
use super::{AppState, FEEDS_MAX};
use crm_app::access::Principal;
use crm_app::damage::UpToDamage;
use crm_app::envelope::{EventFilter, EventLine};
use crm_app::personal::{as_seen, Visibility};
use crm_domain::access::Permission;

/// Interval of SSE keep-alive comments on an idle feed.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// Where a feed starts and what it carries.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// First position (default: the next event after the head, i.e. live only).
    /// `Last-Event-ID` overrides it with its value + 1.
    pub from: Option<u64>,
    /// Only events of this stream category.
    pub category: Option<String>,
    /// Only events of this type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    /// Only events with this correlation id (e.g. one saga's commands).
    pub correlation: Option<Uuid>,
    /// Only events with this causation id.
    pub causation: Option<Uuid>,
}

struct Feed {
    /// The log from `from` on; at a damaged record, the intact events before it first.
    subscription: UpToDamage<AnyStore>,
    shutdown: watch::Receiver<bool>,
    filter: EventFilter,
    /// How the caller is shown personal fields.
    visibility: Visibility,
    /// The log, to show sealed personal fields with its key store.
    store: AnyStore,
    /// An error was sent: the feed ends.
    failed: bool,
    /// Where the server latches damage (`/readyz` turns not ready).
    damage: Arc<DamageLatch>,
    _permit: OwnedSemaphorePermit,
}

impl Feed {
    /// The feed's one error message: the problem document as data; the feed ends after it.
    fn error(&mut self, error: &ApiError) -> Event {
        self.failed = true;
        if let ApiError::LogDamaged(met) = error {
            self.damage.latch(met);
        }
        let data = serde_json::to_string(&error.problem()).unwrap_or_default();
        Event::default().event("error").data(data)
    }

    /// The next message, `None` at shutdown, store close or after an error. An error is sent
    /// once, as an `error` message carrying the problem document, and ends the feed: a
    /// damaged record or an unreadable sealed field does not heal by reading it again.
    async fn next(&mut self) -> Option<Event> {
        if self.failed {
            return None;
        }
        loop {
            let next = tokio::select! {
                _ = self.shutdown.wait_for(|stopping| *stopping) => return None,
                next = self.subscription.next() => next,
            };
            match next? {
                Ok(event) if self.filter.matches(&event) => {
                    return Some(match as_seen(&self.store, &event, self.visibility) {
                        Ok(shown) => message(&shown),
                        Err(e) => self.error(&e.into()),
                    });
                }
                Ok(_) => {}
                Err(e) => return Some(self.error(&e.into())),
            }
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        metrics::gauge!("crm_http_feeds_open").decrement(1.0);
    }
}

fn message(event: &RecordedEvent) -> Event {
    let data = serde_json::to_string(&EventLine::new(event)).unwrap_or_default();
    Event::default()
        .id(event.position.0.to_string())
        .event(event.event_type.clone())
        .data(data)
}

/// The live event feed (Server-Sent Events).
#[utoipa::path(
    get,
    path = "/v1/feed",
    tag = "log",
    params(
        FeedQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this position (the id of the last message received)"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: one message per event, `id` = position, `event` = type, `data` = the event's JSON", content_type = "text/event-stream", body = String),
        (status = 400, description = "Invalid Last-Event-ID or query", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "The log is damaged at `from` (`log-damaged`: a feed from there has nothing to send before the damage). A feed that meets damage later sends the events before it, then one `error` message whose `data` is the problem document, and ends", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many feeds open", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn feed(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    Query(query): Query<FeedQuery>,
) -> Result<Response, ApiError> {
    let resume = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "Last-Event-ID must be the position of the last event received".into(),
                    )
                })
        })
        .transpose()?;
    let from = match (resume, query.from) {
        (Some(last), _) => last.saturating_add(1),
        (None, Some(from)) => from.max(1),
        (None, None) => state.store.head().position.0 + 1,
    };
    // A feed that would start at the damaged record this server met has nothing to send but
    // the error: answer it as a problem, which also ends an `EventSource`'s reconnections
    // (a reconnect with `Last-Event-ID` lands exactly there).
    if let Some(met) = state.damage.get() {
        if met.position == Some(from) {
            return Err(ApiError::LogDamaged(met));
        }
    }
    let permit = state.feeds.clone().try_acquire_owned().map_err(|_| {
        ApiError::Busy(format!(
            "{FEEDS_MAX} feeds are open, the limit; retry later or read pages of /v1/events"
        ))
    })?;
    metrics::gauge!("crm_http_feeds_open").increment(1.0);
    let feed = Feed {
        subscription: UpToDamage::new(&state.store, Position(from)),
        shutdown: state.shutdown.clone(),
        filter: EventFilter {
            category: query.category,
            event_type: query.event_type,
            correlation_id: query.correlation,
            causation_id: query.causation,
        },
        visibility: Visibility::allowed(principal.can(Permission::ReadPersonalData)),
        store: state.store.clone(),
        failed: false,
        damage: Arc::clone(&state.damage),
        _permit: permit,
    };
    let events = stream::unfold(feed, |mut feed| async move {
        let next = feed.next().await;
        next.map(|event| (Ok::<Event, Infallible>(event), feed))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE_INTERVAL))
        .into_response())
}
