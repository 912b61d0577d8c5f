//! Errors of the HTTP API as RFC 9457 problem details (`application/problem+json`), the JSON
//! body extractor that turns malformed and oversized bodies into 400 and 413, and the
//! middleware that gives every other error response (unknown route, bad query string,
//! timeout) the same shape.

use axum::body::{to_bytes, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use crm_app::commands::CommandError;
use crm_domain::registry::DecideError;
use crm_eventstore::{AppendError, ReadError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::damage::{DamageMet, LOG_DAMAGED};

/// Media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Bytes of a plain error body the normalising middleware reads to build its `detail`.
const ERROR_BODY_READ_MAX_BYTES: usize = 4 * 1024;

/// A problem document (RFC 9457).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem, `urn:crm:problem:<slug>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What happened in this case and what to do about it.
    pub detail: String,
    /// For 409: the stream's current version (reload and retry with it in `If-Match`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
    /// For `log-damaged`: the position of the damaged record, when the store named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damaged_position: Option<u64>,
}

impl Problem {
    /// A problem of kind `urn:crm:problem:<slug>` with `status` and `detail`.
    #[must_use]
    pub fn new(status: StatusCode, slug: &str, detail: String) -> Problem {
        Problem {
            type_uri: format!("urn:crm:problem:{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            current_version: None,
            damaged_position: None,
        }
    }
}

/// Why a request failed; each variant maps to one status and problem type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request is malformed: bad JSON, a missing or invalid field, a bad header.
    #[error("{0}")]
    BadRequest(String),
    /// No valid credential: 401 with `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this: 403.
    #[error("{0}")]
    Forbidden(String),
    /// The addressed thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// `If-Match` does not match the stream's version.
    #[error("{detail}")]
    VersionConflict {
        /// What happened and what to do.
        detail: String,
        /// The stream's version now.
        current_version: u64,
    },
    /// The body is larger than the limit.
    #[error("{0}")]
    TooLarge(String),
    /// The body is not JSON (or TOML where that is expected).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A business rule refused the command; the domain's message.
    #[error("{0}")]
    RuleViolated(String),
    /// Another writer changed the target at the same time; reload and retry.
    #[error("{0}")]
    Conflict(String),
    /// A metric definition was refused; the message names the key at fault.
    #[error("{0}")]
    InvalidDefinition(String),
    /// An `Idempotency-Key` was reused for a different request.
    #[error("{0}")]
    IdempotencyKeyReused(String),
    /// The server is at its limit of concurrent requests or feeds.
    #[error("{0}")]
    Busy(String),
    /// The store cannot serve the request now (closed, storage failure, unreachable):
    /// 503 with `Retry-After`.
    #[error("{0}")]
    Unavailable(String),
    /// The request met a damaged record: 500 `log-damaged`, no `Retry-After` (reading it
    /// again will not heal it); the server latches the damage (see [`crate::damage`]).
    #[error("{}", .0.detail)]
    LogDamaged(DamageMet),
    /// `/readyz` of a server that met damage: 503 `log-damaged`, no `Retry-After`.
    #[error("not ready: a read of this server met damage in the log: {}", .0.detail)]
    NotReadyLogDamaged(DamageMet),
    /// A sealed personal field cannot be opened: altered bytes, or a missing or damaged key.
    #[error("{0}")]
    PersonalDataUnreadable(String),
    /// A bug: the detail is logged.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// Status code and problem slug of this error.
    #[must_use]
    pub fn status_and_slug(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "malformed-request"),
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found"),
            ApiError::VersionConflict { .. } => (StatusCode::CONFLICT, "version-conflict"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too-large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type")
            }
            ApiError::RuleViolated(_) => (StatusCode::UNPROCESSABLE_ENTITY, "rule-violated"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::InvalidDefinition(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid-definition")
            }
            ApiError::IdempotencyKeyReused(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused")
            }
            ApiError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage-unavailable"),
            ApiError::LogDamaged(_) => (StatusCode::INTERNAL_SERVER_ERROR, LOG_DAMAGED),
            ApiError::NotReadyLogDamaged(_) => (StatusCode::SERVICE_UNAVAILABLE, LOG_DAMAGED),
            ApiError::PersonalDataUnreadable(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "personal-data-unreadable",
            ),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The problem document of this error.
    #[must_use]
    pub fn problem(&self) -> Problem {
        let (status, slug) = self.status_and_slug();
        Problem {
            type_uri: format!("urn:crm:problem:{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: self.to_string(),
            current_version: match self {
                ApiError::VersionConflict {
                    current_version, ..
                } => Some(*current_version),
                _ => None,
            },
            damaged_position: match self {
                ApiError::LogDamaged(met) | ApiError::NotReadyLogDamaged(met) => met.position,
                _ => None,
            },
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        if let Some(met) = DamageMet::of_read(&e) {
            return ApiError::LogDamaged(met);
        }
        match e {
            ReadError::Closed => ApiError::Unavailable(format!(
                "{e}; the server is stopping, retry once it is back"
            )),
            _ => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl From<crm_app::personal::RevealError> for ApiError {
    fn from(e: crm_app::personal::RevealError) -> Self {
        ApiError::PersonalDataUnreadable(format!(
            "{e}; retrying will not help: the operator must restore the key store (or the log) from backup"
        ))
    }
}

impl From<AppendError> for ApiError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::WrongExpectedVersion { actual, .. } => ApiError::VersionConflict {
                detail: e.to_string(),
                current_version: actual.0,
            },
            AppendError::IdempotencyConflict { .. } => ApiError::IdempotencyKeyReused(format!(
                "{e}; the Idempotency-Key was used for another request: send a new key"
            )),
            AppendError::EventTooLarge { .. }
            | AppendError::AppendTooLarge { .. }
            | AppendError::TooManyEvents { .. } => ApiError::TooLarge(e.to_string()),
            AppendError::InvalidEvent { .. } | AppendError::Empty => {
                ApiError::BadRequest(e.to_string())
            }
            AppendError::StorageFailed(_) | AppendError::Closed | AppendError::LogFull(_) => {
                ApiError::Unavailable(e.to_string())
            }
            AppendError::Unavailable(_) => ApiError::Unavailable(format!(
                "{e}; the outcome is unknown: resend the request unchanged with the same Idempotency-Key"
            )),
            AppendError::Sealing(refusal) if refusal.retryable => {
                ApiError::Unavailable(refusal.message)
            }
            AppendError::Sealing(refusal) => ApiError::RuleViolated(refusal.message),
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::UnknownAggregate { .. } => ApiError::NotFound(e.to_string()),
            CommandError::VersionConflict { current, .. } => ApiError::VersionConflict {
                detail: e.to_string(),
                current_version: current,
            },
            CommandError::Rejected(DecideError::Rejected(_)) => {
                ApiError::RuleViolated(e.to_string())
            }
            CommandError::IdempotencyKeyReused { .. } => {
                ApiError::IdempotencyKeyReused(e.to_string())
            }
            CommandError::StreamTooLong { .. } => ApiError::Unavailable(e.to_string()),
            CommandError::Contended { .. } => ApiError::Busy(e.to_string()),
            CommandError::Read(read) => read.into(),
            CommandError::Append(append) => append.into(),
            e if e.is_malformed() => ApiError::BadRequest(e.to_string()),
            e => ApiError::Internal(e.to_string()),
        }
    }
}

/// A problem response: status, `application/problem+json`, the document.
#[must_use]
pub fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    // 503 invites a retry, except for a damaged log: reading it again will not heal it.
    if status == StatusCode::SERVICE_UNAVAILABLE && !problem.type_uri.ends_with(LOG_DAMAGED) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if matches!(self, ApiError::Internal(_)) {
            tracing::error!(error = %self, "internal error");
        }
        let mut response = problem_response(&self.problem());
        if let ApiError::LogDamaged(met) = self {
            // Latched by the server's middleware (`crate::damage::latch`).
            response.extensions_mut().insert(met);
            return response;
        }
        if matches!(self, ApiError::Unauthenticated(_)) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(WWW_AUTHENTICATE_BEARER),
            );
        }
        response
    }
}

/// The challenge of every 401.
pub const WWW_AUTHENTICATE_BEARER: &str = "Bearer realm=\"crm\"";

/// A request body read whole within the body limit: 413 above it, 400 if it cannot be read.
#[derive(Debug)]
pub struct Body413(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body413 {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(Body413(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::TooLarge(format!(
                    "the request body is larger than {} bytes; send a smaller body",
                    super::BODY_SIZE_MAX_BYTES
                )))
            }
            Err(rejection) => Err(ApiError::BadRequest(format!(
                "could not read the request body: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// A JSON object body: 415 for another media type, 413 above the limit, 400 for bad JSON.
#[derive(Debug)]
pub struct JsonObject(pub serde_json::Map<String, serde_json::Value>);

impl JsonObject {
    /// The object as a typed request; a field it lacks or does not know is a 400 whose
    /// detail starts with `what`.
    ///
    /// # Errors
    /// [`ApiError::BadRequest`].
    pub fn parse<T: serde::de::DeserializeOwned>(self, what: &str) -> Result<T, ApiError> {
        serde_json::from_value(serde_json::Value::Object(self.0))
            .map_err(|e| ApiError::BadRequest(format!("{what}: {e}")))
    }
}

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match req.headers().get(header::CONTENT_TYPE) {
            None => {
                return Err(ApiError::UnsupportedMediaType(
                    "the request has no Content-Type; send the body as `application/json`"
                        .to_owned(),
                ))
            }
            Some(content_type) => {
                let text = content_type.to_str().unwrap_or_default();
                if !text.starts_with("application/json") {
                    return Err(ApiError::UnsupportedMediaType(format!(
                        "the body has Content-Type `{text}`; send `application/json`"
                    )));
                }
            }
        }
        let Body413(bytes) = Body413::from_request(req, state).await?;
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(serde_json::Value::Object(map)) => Ok(JsonObject(map)),
            Ok(_) => Err(ApiError::BadRequest(
                "the body must be a JSON object".to_owned(),
            )),
            Err(e) => Err(ApiError::BadRequest(format!(
                "the body is not valid JSON: {e}"
            ))),
        }
    }
}

/// Middleware: turns every error response that is not yet a problem document (axum's own
/// rejections, unknown routes, wrong methods, timeouts) into one, keeping its status.
pub async fn normalise_errors(request: Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = to_bytes(body, ERROR_BODY_READ_MAX_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let (slug, detail) = match status {
        StatusCode::NOT_FOUND => (
            "not-found",
            "no such route; GET /openapi.json lists every route".to_owned(),
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method-not-allowed",
            "this route does not take that method; see /openapi.json".to_owned(),
        ),
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE if text.is_empty() => (
            "timeout",
            format!(
                "the request took longer than {} s and was cancelled; retry (with the same Idempotency-Key for a command)",
                super::REQUEST_TIMEOUT.as_secs()
            ),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "too-large",
            format!(
                "the request body is larger than {} bytes; send a smaller body",
                super::BODY_SIZE_MAX_BYTES
            ),
        ),
        _ if status.is_client_error() => ("malformed-request", text),
        _ => ("internal", text),
    };
    let problem = Problem::new(status, slug, detail);
    let mut out = problem_response(&problem);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    *out.status_mut() = status;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_statuses_and_problem_types() {
        let p = ApiError::RuleViolated("account `a` already exists".into()).problem();
        assert_eq!(p.status, 422);
        assert_eq!(p.type_uri, "urn:crm:problem:rule-violated");
        assert_eq!(p.detail, "account `a` already exists");
        let c = ApiError::VersionConflict {
            detail: "x".into(),
            current_version: 7,
        }
        .problem();
        assert_eq!((c.status, c.current_version), (409, Some(7)));
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["type"], "urn:crm:problem:version-conflict");
        assert_eq!(ApiError::Busy("b".into()).problem().status, 503);
        assert_eq!(ApiError::TooLarge("t".into()).problem().status, 413);
    }

    #[test]
    fn a_damaged_record_is_log_damaged_without_retry_after_and_carries_its_position() {
        let corrupt = ReadError::Corrupt {
            position: crm_eventstore::Position(4),
            reason: crm_eventstore::Corruption::Missing,
        };
        let error = ApiError::from(corrupt);
        let problem = error.problem();
        assert_eq!(problem.status, 500);
        assert_eq!(problem.type_uri, "urn:crm:problem:log-damaged");
        assert_eq!(problem.damaged_position, Some(4));
        assert!(
            problem.detail.contains("retrying will not help"),
            "{problem:?}"
        );
        let response = error.into_response();
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
        let met = response.extensions().get::<DamageMet>().cloned().unwrap();
        assert_eq!(met.position, Some(4));

        let not_ready = ApiError::NotReadyLogDamaged(met).into_response();
        assert_eq!(not_ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(not_ready.headers().get(header::RETRY_AFTER).is_none());
        let unavailable = ApiError::Unavailable("closed".into()).into_response();
        assert!(unavailable.headers().get(header::RETRY_AFTER).is_some());
    }
}
