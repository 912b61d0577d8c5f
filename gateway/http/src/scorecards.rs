//! Scorecards over HTTP: `GET /v1/scorecards`, `POST /v1/scorecards` (TOML),
//! `GET /v1/scorecards/{id}` (a node: measures, strategy map, children, status changes) and
//! `GET /v1/scorecards/{id}/explain` (the events behind a measure's figure at a node); and the
//! status watcher that records `ScorecardStatusChanged` when new events move a measure.
//!
//! **Who sees what:** a caller whose roles give `read_scorecards` sees every node; one with
//! only `read_own_scorecards` (role `member`) sees the nodes naming it a viewer and those
//! below them, and gets 404 for any other node, as if it did not exist.
//!
//! An assessment (the cascade and its evaluations over one view of the log) is kept per
//! (scorecard, version, log head, `as_of`, `known_at`) in [`AssessmentCache`]: the watcher
//! computes it when the head moves, so a page that reloads after an event finds it ready.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use crm_app::access::Principal;
use crm_domain::access::Permission;
use crm_eventstore::{AnyStore, EventStore};
use crm_metrics::scorecard::{self, Assessment, ScorecardError, StatusBoard};
use crm_metrics::{ExplainSelect, KnownAt, Registry, RegistryCache};
use quick_cache::sync::Cache;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use super::answer_cache::Rendered;
use super::problem::{ApiError, Problem};
use super::AppState;

/// Assessments kept at most.
pub const ASSESSMENTS_MAX: usize = 8;
/// The watcher waits this long after the head moves, so a burst of events is assessed once.
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(100);
/// The actor of status changes the server records.
pub const WATCHER_ACTOR: &str = "system:scorecard-watcher";

impl From<ScorecardError> for ApiError {
    fn from(e: ScorecardError) -> Self {
        match e {
            ScorecardError::Syntax { .. } | ScorecardError::Invalid { .. } => {
                ApiError::InvalidDefinition(e.to_string())
            }
            ScorecardError::UnknownScorecard { .. }
            | ScorecardError::UnknownVersion { .. }
            | ScorecardError::UnknownNode { .. }
            | ScorecardError::UnknownMeasure { .. }
            | ScorecardError::NothingVisible { .. } => ApiError::NotFound(e.to_string()),
            ScorecardError::VersionConflict { next, .. }
            | ScorecardError::VersionOutOfSequence { next, .. } => ApiError::VersionConflict {
                detail: e.to_string(),
                current_version: u64::from(next.saturating_sub(1)),
            },
            ScorecardError::Concurrent { .. } => ApiError::Conflict(e.to_string()),
            ScorecardError::TooManyNodes { .. } => ApiError::BadRequest(e.to_string()),
            ScorecardError::Metric(m) => ApiError::from(m),
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

/// (scorecard, version, head, `as_of`, `known_at`).
type Key = (String, Option<u32>, u64, String, String);

/// Records after an assessment's head that are read to tell whether it still holds.
pub const REUSE_SCAN_MAX: u64 = 1_000;

/// (scorecard, version, `as_of`, `known_at`).
type Question = (String, Option<u32>, String, String);

/// Assessments by scorecard, version, log head and bitemporal cut.
pub struct AssessmentCache {
    kept: Cache<Key, Arc<Assessment>>,
    /// The latest assessment of each question and the head it was computed at.
    latest: std::sync::Mutex<std::collections::BTreeMap<Question, (u64, Arc<Assessment>)>>,
}

impl Default for AssessmentCache {
    fn default() -> Self {
        AssessmentCache {
            kept: Cache::new(ASSESSMENTS_MAX),
            latest: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        }
    }
}

/// Whether every record after `since` up to `head` is a status change (which no measure
/// reads): then an assessment at `since` is the assessment at `head`. At most
/// [`REUSE_SCAN_MAX`] records are read.
async fn only_status_changes(store: &AnyStore, since: u64, head: u64) -> bool {
    if head <= since || head - since > REUSE_SCAN_MAX {
        return head == since;
    }
    let Some(from) = crm_eventstore::Position(since).next() else {
        return false;
    };
    let max = usize::try_from(head - since).unwrap_or(usize::MAX);
    match store.read_all(from, max).await {
        Ok(records) => records
            .iter()
            .filter(|r| r.position.0 <= head)
            .all(|r| r.stream_id.category() == crm_domain::definitions::SCORECARD_STATUS_CATEGORY),
        Err(_) => false,
    }
}

impl AssessmentCache {
    /// The assessment of `id` at the store's head now: kept, or computed on the blocking pool
    /// (concurrent callers wait for one computation).
    ///
    /// # Errors
    /// As [`scorecard::assess`].
    pub async fn get(
        &self,
        store: &AnyStore,
        registries: &Arc<RegistryCache>,
        id: &str,
        version: Option<u32>,
        as_of: Option<DateTime<Utc>>,
        known_at: Option<KnownAt>,
    ) -> Result<Arc<Assessment>, ApiError> {
        let head = store.head().position.0;
        let question: Question = (
            id.to_owned(),
            version,
            format!("{as_of:?}"),
            format!("{known_at:?}"),
        );
        let key: Key = (
            question.0.clone(),
            version,
            head,
            question.2.clone(),
            question.3.clone(),
        );
        match self.kept.get_value_or_guard_async(&key).await {
            Ok(a) => Ok(a),
            Err(guard) => {
                // The watcher's own status changes move the head but no figure.
                let previous = self
                    .latest
                    .lock()
                    .ok()
                    .and_then(|l| l.get(&question).cloned());
                if let Some((since, a)) = &previous {
                    if only_status_changes(store, *since, head).await {
                        let _ = guard.insert(Arc::clone(a));
                        return Ok(Arc::clone(a));
                    }
                }
                let store = store.clone();
                let registries = Arc::clone(registries);
                let id = id.to_owned();
                let runtime = tokio::runtime::Handle::current();
                let before = previous.map(|(_, a)| a);
                let a = tokio::task::spawn_blocking(move || {
                    runtime.block_on(async move {
                        let registry = registries.get(&store).await?;
                        // New events since the last assessment: read only those.
                        if let Some(before) = before {
                            let again = scorecard::reassess(
                                &before,
                                &store,
                                Arc::clone(&registry),
                                version,
                            )
                            .await?;
                            if let Some(a) = again {
                                return Ok(a);
                            }
                        }
                        scorecard::assess(&store, registry, &id, version, as_of, known_at).await
                    })
                })
                .await
                .map_err(|e| ApiError::Internal(format!("the scorecard task failed: {e}")))??;
                let a = Arc::new(a);
                let _ = guard.insert(Arc::clone(&a));
                if let Ok(mut latest) = self.latest.lock() {
                    if latest.len() >= ASSESSMENTS_MAX && !latest.contains_key(&question) {
                        latest.clear();
                    }
                    latest.insert(question, (head, Arc::clone(&a)));
                }
                Ok(a)
            }
        }
    }
}

/// The scorecards in the log.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ScorecardList {
    pub scorecards: Vec<scorecard::ScorecardSummary>,
}

/// Every scorecard version in the log, latest first per scorecard.
#[utoipa::path(get, path = "/v1/scorecards", tag = "scorecards",
    responses(
        (status = 200, description = "The scorecards", body = Object),
        (status = 503, description = "Storage unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let registry = state.registries.get(&state.store).await?;
    Ok(Json(ScorecardList {
        scorecards: registry.scorecards(),
    })
    .into_response())
}

/// Checks a scorecard (TOML) against the metric catalog and appends it as
/// `ScorecardDefined`. A published version is frozen: the same text again is 200, other
/// content under that version 409.
#[utoipa::path(post, path = "/v1/scorecards", tag = "scorecards",
    request_body(description = "The scorecard (TOML)", content(
        (String = "application/toml"),
        (String = "text/plain"),
    )),
    responses(
        (status = 201, description = "The scorecard version was appended", body = Object),
        (status = 200, description = "This version is already defined with this text; nothing written", body = Object),
        (status = 409, description = "The version exists with other content, or skips ahead", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not TOML", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The scorecard is invalid; the detail names the key", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn define(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if !(content_type.starts_with("application/toml") || content_type.starts_with("text/plain")) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the body has Content-Type `{content_type}`; send the scorecard as `application/toml` or `text/plain`"
        )));
    }
    let actor = request
        .extensions()
        .get::<Principal>()
        .map(|p| p.name.clone())
        .ok_or_else(|| {
            ApiError::Internal("the request reached the handler without a principal".to_owned())
        })?;
    let bytes = axum::body::Bytes::from_request(request, &state)
        .await
        .map_err(|e| ApiError::TooLarge(format!("the body could not be read: {e}")))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("the body is not UTF-8: {e}")))?;
    let registry = state.registries.get(&state.store).await?;
    let outcome =
        scorecard::define_scorecard_as(&state.store, &registry, text, Utc::now(), &actor).await?;
    let status = if outcome.outcome == "already_defined" {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(outcome)).into_response())
}

/// Which node, version and cut.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ScorecardParams {
    /// The node of the cascade (default: the caller's first visible node, the root for
    /// readers of every node).
    pub node: Option<String>,
    /// The scorecard version (default: the latest).
    pub version: Option<u32>,
    /// Count facts that occurred by this instant (YYYY-MM-DD or RFC 3339).
    #[serde(default, deserialize_with = "crm_app::instant::deserialize_opt")]
    pub as_of: Option<DateTime<Utc>>,
    /// Count only what the log had recorded by this instant (YYYY-MM-DD or RFC 3339).
    #[serde(default, deserialize_with = "crm_app::instant::deserialize_opt")]
    pub known_at: Option<DateTime<Utc>>,
}

/// The assessment of scorecard `id` at the log's head, from the server's cache.
async fn assessment(
    state: &AppState,
    id: &str,
    version: Option<u32>,
    as_of: Option<DateTime<Utc>>,
    known_at: Option<KnownAt>,
) -> Result<Arc<Assessment>, ApiError> {
    state
        .scorecards
        .get(
            &state.store,
            &state.registries,
            id,
            version,
            as_of,
            known_at,
        )
        .await
}

fn visible(a: &Assessment, principal: &Principal) -> Result<BTreeSet<String>, ApiError> {
    let all = principal.can(Permission::ReadScorecards);
    let seen = a.visible(&principal.name, all);
    if seen.is_empty() {
        return Err(ApiError::from(ScorecardError::NothingVisible {
            id: a.def().id.clone(),
            principal: principal.name.clone(),
        }));
    }
    Ok(seen)
}

/// A node of a scorecard: its measures by perspective and objective (actual, baseline,
/// target, status, trend), the strategy map, its children with their status, roll-ups and
/// recent status changes.
#[utoipa::path(get, path = "/v1/scorecards/{id}", tag = "scorecards",
    params(("id" = String, Path, description = "Scorecard id", example = "cockpit"), ScorecardParams),
    responses(
        (status = 200, description = "The node", body = Object),
        (status = 400, description = "Invalid query (an unknown parameter, a bad date)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such scorecard, version or visible node", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn show(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    uri: Uri,
    Path(id): Path<String>,
    Query(params): Query<ScorecardParams>,
) -> Result<Response, ApiError> {
    let known_at = params.known_at.map(KnownAt::Time);
    let head = state.store.head().position.0;
    let who = if principal.can(Permission::ReadScorecards) {
        String::new()
    } else {
        principal.name.clone()
    };
    let key = format!("{who} {}", uri.path_and_query().map_or("", |p| p.as_str()));
    let compute = async {
        let a = assessment(&state, &id, params.version, params.as_of, known_at).await?;
        let seen = visible(&a, &principal)?;
        let a2 = Arc::clone(&a);
        let node = params.node.clone();
        let seen2 = seen.clone();
        let mut report =
            tokio::task::spawn_blocking(move || scorecard::report(&a2, node.as_deref(), &seen2))
                .await
                .map_err(|e| ApiError::Internal(format!("the scorecard task failed: {e}")))??;
        let below = a.subtree(&report.node.id);
        report.status_changes =
            scorecard::recent_changes(&state.store, &id, |n| below.contains(n)).await?;
        super::cockpit::decorate(&mut report, &a);
        Rendered::json("scorecard", &report)
    };
    state.answers.answer("scorecard", key, head, compute).await
}

/// Which measure at which node, and which page of its events.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExplainParams {
    /// The node (default: the caller's first visible node).
    pub node: Option<String>,
    /// The measure of the node.
    pub measure: String,
    /// The scorecard version (default: the latest).
    pub version: Option<u32>,
    /// Count facts that occurred by this instant.
    #[serde(default, deserialize_with = "crm_app::instant::deserialize_opt")]
    pub as_of: Option<DateTime<Utc>>,
    /// Count only what the log had recorded by this instant.
    #[serde(default, deserialize_with = "crm_app::instant::deserialize_opt")]
    pub known_at: Option<DateTime<Utc>>,
    /// Only `included` or `excluded` rows.
    pub decision: Option<String>,
    /// First row of the page.
    #[serde(default)]
    pub offset: usize,
    /// Rows of the page (default 100, at most 1,000).
    pub limit: Option<usize>,
}

/// The events behind a measure's figure at a node: every fact counted and left out (with
/// the rule), the definition version and spec hash, the log position and chain hash.
#[utoipa::path(get, path = "/v1/scorecards/{id}/explain", tag = "scorecards",
    params(("id" = String, Path, description = "Scorecard id", example = "cockpit"), ExplainParams),
    responses(
        (status = 200, description = "The explanation", body = Object),
        (status = 400, description = "Invalid page", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such scorecard, visible node or measure", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn explain(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Query(params): Query<ExplainParams>,
) -> Result<Response, ApiError> {
    let known_at = params.known_at.map(KnownAt::Time);
    let a = assessment(&state, &id, params.version, params.as_of, known_at).await?;
    let seen = visible(&a, &principal)?;
    let node = scorecard::node_of(&a, params.node.as_deref(), &seen)?.clone();
    if !node.measures.contains(&params.measure) {
        return Err(ApiError::from(ScorecardError::UnknownMeasure {
            node: node.id.clone(),
            nearest: crm_domain::registry::nearest_name(
                &params.measure,
                node.measures.iter().map(String::as_str),
            ),
            measure: params.measure,
        }));
    }
    let (Some(query), Some(metric)) = (
        a.actual_query(&node, &params.measure),
        a.metric_of(&params.measure),
    ) else {
        return Err(ApiError::Internal("the measure has no metric".to_owned()));
    };
    let select = ExplainSelect {
        period: None,
        dims: Default::default(),
        decision: params.decision,
        offset: params.offset,
        limit: params
            .limit
            .unwrap_or(super::PAGE_SIZE_DEFAULT)
            .clamp(1, super::PAGE_SIZE_MAX),
    };
    let a2 = Arc::clone(&a);
    let explanation = tokio::task::spawn_blocking(move || {
        crm_metrics::explain_in(a2.view(), a2.registry(), &metric, &query, &select)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the scorecard task failed: {e}")))?
    .map_err(ApiError::from)?;
    Ok(Json(explanation).into_response())
}

/// Records status changes: whenever the log's head moves (after [`WATCH_DEBOUNCE`]), each
/// scorecard's latest version is assessed at the head and every measure of every node
/// whose status differs from the last recorded one gets a `ScorecardStatusChanged` event
/// (published like any other event). Runs until `stop` turns true. Damage met in the log
/// is latched in `damage` (the server turns not ready) and reported once.
pub async fn watch_statuses(
    store: AnyStore,
    registries: Arc<RegistryCache>,
    cache: Arc<AssessmentCache>,
    damage: Arc<crate::damage::DamageLatch>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut heads = store.watch_head();
    let mut boards: std::collections::BTreeMap<String, StatusBoard> = Default::default();
    let mut seen_head = None;
    loop {
        let head = store.head().position.0;
        if seen_head != Some(head) {
            match assess_once(&store, &registries, &cache, &mut boards).await {
                Ok(()) => {}
                // Latching logs it once; the damage does not heal, so no warning per event.
                Err(ApiError::LogDamaged(met)) => {
                    damage.latch(&met);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scorecard status watcher: assessment failed; retrying at the next event");
                }
            }
            seen_head = Some(head);
        }
        tokio::select! {
            changed = heads.changed() => {
                if changed.is_err() {
                    return;
                }
                tokio::time::sleep(WATCH_DEBOUNCE).await;
            }
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

async fn assess_once(
    store: &AnyStore,
    registries: &Arc<RegistryCache>,
    cache: &Arc<AssessmentCache>,
    boards: &mut std::collections::BTreeMap<String, StatusBoard>,
) -> Result<(), ApiError> {
    let registry: Arc<Registry> = registries.get(store).await.map_err(ApiError::from)?;
    let ids: BTreeSet<String> = registry.scorecards().into_iter().map(|s| s.id).collect();
    for id in ids {
        let a = cache.get(store, registries, &id, None, None, None).await?;
        let board = boards.entry(id.clone()).or_default();
        scorecard::read_statuses(store, &id, board).await?;
        let a2 = Arc::clone(&a);
        let snapshot = board.clone();
        let changes = tokio::task::spawn_blocking(move || scorecard::changes(&a2, &snapshot))
            .await
            .map_err(|e| ApiError::Internal(format!("the scorecard task failed: {e}")))??;
        match scorecard::append_changes(store, board, changes, Utc::now(), WATCHER_ACTOR).await {
            Ok(_) => {}
            // Another server recorded first: read what it wrote at the next event.
            Err(ScorecardError::Concurrent { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
