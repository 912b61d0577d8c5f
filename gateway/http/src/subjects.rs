//! `POST /v1/subjects/{subject}/erasure`: erase a data subject's personal data for good
//! (the HTTP face of [`crm_app::erasure`]). Admin only (permission `erase_personal_data`);
//! the erasure event records the authenticated caller as its actor.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use chrono::Utc;
use crm_app::access::Principal;
use crm_app::erasure::{self, EraseError, Erasure};
use serde::Deserialize;
use utoipa::ToSchema;

use super::problem::{ApiError, JsonObject, Problem};
use super::AppState;

/// Longest erasure reason, in bytes.
pub const REASON_SIZE_MAX_BYTES: usize = 500;

/// Why the subject is erased (kept in the erasure event; it must not repeat personal data).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErasureRequest {
    /// E.g. `GDPR Art. 17 request #4711`.
    pub reason: String,
}

impl From<EraseError> for ApiError {
    fn from(e: EraseError) -> Self {
        match e {
            EraseError::NotAStream(_) | EraseError::NotASubject { .. } => {
                ApiError::BadRequest(e.to_string())
            }
            EraseError::NotFound(_) => ApiError::NotFound(e.to_string()),
            EraseError::Read(read) => read.into(),
            EraseError::Command(command) => command.into(),
            e => ApiError::Unavailable(e.to_string()),
        }
    }
}

/// Erases the subject's personal data: records the erasure event (who, when, why) and
/// destroys the subject's key, after which every read shows `"[erased]"` in place of the
/// personal fields. Erasing an erased subject records nothing and answers the first erasure.
#[utoipa::path(
    post,
    path = "/v1/subjects/{subject}/erasure",
    tag = "personal data",
    params(("subject" = String, Path, description = "The subject's stream, e.g. `contact-c1`, `lead-l7`, `agent-a3`")),
    request_body(content = ErasureRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Erased (or erased before: `already_erased`)", body = Erasure),
        (status = 400, description = "Not a subject's stream id, or a malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller lacks permission `erase_personal_data` (role admin)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such stream", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body above the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The erase command was refused (the domain's message)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage or key store unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn erase(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(subject): Path<String>,
    body: JsonObject,
) -> Result<Json<Erasure>, ApiError> {
    let request: ErasureRequest =
        body.parse("the body must be {\"reason\": \"...\"} and nothing else")?;
    let reason = request.reason.trim();
    if reason.is_empty() || reason.len() > REASON_SIZE_MAX_BYTES {
        return Err(ApiError::BadRequest(format!(
            "reason must be 1..={REASON_SIZE_MAX_BYTES} bytes, e.g. the request's reference; do not repeat personal data in it"
        )));
    }
    let erased = erasure::erase(
        &state.commands,
        &subject,
        reason,
        &principal.name,
        Utc::now(),
    )
    .await?;
    Ok(Json(erased))
}
