//! Signed checkpoints over HTTP: `GET /v1/checkpoints` lists the kept checkpoints with the
//! public key that verifies them, `POST /v1/checkpoints` signs the durable head now (see
//! [`crm_app::checkpoint`]). A server started without a signing key (no master key) answers
//! 503 with what to do.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use crm_app::checkpoint::{
    CheckpointError, Checkpointing, Signed, SignedCheckpoint, CHECKPOINTS_LISTED_MAX,
};
use crm_eventstore::EventStore;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::problem::{ApiError, Problem};
use super::AppState;

/// Checkpoints a listing returns without `limit`.
pub const CHECKPOINTS_LISTED_DEFAULT: usize = 20;

impl From<CheckpointError> for ApiError {
    fn from(e: CheckpointError) -> Self {
        match e {
            CheckpointError::EmptyLog => ApiError::RuleViolated(e.to_string()),
            CheckpointError::Read(r) => ApiError::from(r),
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

/// The kept checkpoints and the key that verifies them.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointList {
    /// The verifier key (NAME+KEYID+BASE64): all a checker needs besides a note.
    pub key: String,
    /// Newest first.
    pub checkpoints: Vec<SignedCheckpoint>,
}

/// `?limit=`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// At most this many (default 20, capped at 1,000).
    pub limit: Option<usize>,
}

fn checkpointing(state: &AppState) -> Result<&Arc<Checkpointing>, ApiError> {
    state.checkpoints.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "this server signs no checkpoints: it was started without a master key, where the signing key is kept; restart it with --master-key-file or CRM_MASTER_KEY (`crm keys init` creates one)".into(),
        )
    })
}

/// The kept checkpoints, newest first, with the public key that verifies them.
#[utoipa::path(get, path = "/v1/checkpoints", tag = "log",
    params(ListQuery),
    responses(
        (status = 200, description = "The checkpoints and the verifier key", body = CheckpointList),
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No signing key, or storage unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<CheckpointList>, ApiError> {
    let checkpoints = checkpointing(&state)?;
    let limit = query
        .limit
        .unwrap_or(CHECKPOINTS_LISTED_DEFAULT)
        .min(CHECKPOINTS_LISTED_MAX);
    Ok(Json(CheckpointList {
        key: checkpoints.signer.verifier().to_string(),
        checkpoints: checkpoints.list(limit).await?,
    }))
}

/// Signs the log's durable head now: 201 with the new checkpoint, or 200 with the one kept
/// when the head has not moved since.
#[utoipa::path(post, path = "/v1/checkpoints", tag = "log",
    responses(
        (status = 201, description = "The head was signed", body = Signed),
        (status = 200, description = "The head was signed already; that checkpoint", body = Signed),
        (status = 422, description = "The log is empty", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No signing key, or storage unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn sign(State(state): State<AppState>) -> Result<Response, ApiError> {
    let checkpoints = checkpointing(&state)?;
    let signed = checkpoints.sign(state.store.head()).await?;
    let status = if signed.new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(signed)).into_response())
}
