//! `POST /v1/aggregates/{category}/commands`: the HTTP face of the command service
//! ([`crm_app::commands`]): headers (`If-Match`, `Idempotency-Key`, `X-Actor`,
//! `X-Correlation-Id`) in, result and `ETag` out.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use crm_app::access::Principal;
use crm_domain::access::Permission;
use uuid::Uuid;

use super::problem::{ApiError, JsonObject, Problem};
use super::AppState;
use crm_app::commands::{CommandRequest, CommandResult};

/// Longest `X-Actor`, in bytes.
pub const ACTOR_SIZE_MAX_BYTES: usize = 128;

/// Response header: `true` when the result is the stored result of an earlier try.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map(str::trim)
                .map_err(|_| ApiError::BadRequest(format!("header {name} is not visible ASCII")))
        })
        .transpose()
}

/// `If-Match: 3` or `If-Match: "3"` (the `ETag` of a read).
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(text) = header_text(headers, "if-match")? else {
        return Ok(None);
    };
    text.trim_matches('"').parse::<u64>().map(Some).map_err(|_| {
        ApiError::BadRequest(format!(
            "If-Match `{text}` is not a stream version; send the version (e.g. `\"3\"`, the ETag of the stream), or `\"0\"` for a new stream"
        ))
    })
}

/// A command for one aggregate. The body is `{"type": "<Command>", ...fields}`; the fields are
/// those of the domain command (GET /v1/aggregates lists the command names).
#[utoipa::path(
    post,
    path = "/v1/aggregates/{category}/commands",
    tag = "commands",
    params(
        ("category" = String, Path, description = "Aggregate (stream category); GET /v1/aggregates lists them"),
        ("If-Match" = Option<String>, Header, description = "Expected stream version (the stream's ETag); 409 if the stream is elsewhere"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: a retry returns the original result and appends nothing"),
        ("X-Actor" = Option<String>, Header, description = "Whom the caller acts for: recorded in the events' metadata as `request.on_behalf_of`, beside the actor (always the authenticated caller). Needs permission `act_on_behalf`"),
        ("X-Correlation-Id" = Option<String>, Header, description = "UUID recorded as the events' correlation id"),
    ),
    request_body(content = Object, description = "`{\"type\": \"OpenAccount\", \"account_id\": \"acme\", ...}`: the command name and its fields", content_type = "application/json"),
    responses(
        (status = 200, description = "Decided and durable (or the original result of an Idempotency-Key retry; header `Idempotent-Replayed: true`). `ETag` is the new stream version", body = CommandResult),
        (status = 400, description = "Malformed JSON, unknown command, missing or invalid field or header", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller may not send commands, may not send `X-Actor`, or its token's scope does not cover the aggregate", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown aggregate", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "If-Match does not match the stream version; `current_version` says where it is", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body above the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A business rule refused the command (the domain's message), or the Idempotency-Key was used for another request", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage unavailable, server busy or request timed out", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn command(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(category): Path<String>,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    if !principal.covers(&category) {
        return Err(ApiError::Forbidden(format!(
            "{} is scoped to {}; it may not send commands to `{category}`",
            principal.name,
            principal.scope.join(", ")
        )));
    }
    let command = body
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or_default();
    if crm_domain::SUBJECTS
        .iter()
        .any(|k| k.erase_command == command)
        && !principal.can(Permission::ErasePersonalData)
    {
        return Err(ApiError::Forbidden(format!(
            "{} may not send {command}: erasing personal data needs permission `{}` (role admin); POST /v1/subjects/{{subject}}/erasure is the route for it",
            principal.name,
            Permission::ErasePersonalData
        )));
    }
    let on_behalf_of = header_text(&headers, "x-actor")?;
    if let Some(on_behalf_of) = on_behalf_of {
        if on_behalf_of.is_empty() || on_behalf_of.len() > ACTOR_SIZE_MAX_BYTES {
            return Err(ApiError::BadRequest(format!(
                "X-Actor must be 1..={ACTOR_SIZE_MAX_BYTES} bytes"
            )));
        }
        if !principal.can(Permission::ActOnBehalf) {
            return Err(ApiError::Forbidden(format!(
                "{} may not send X-Actor (it needs permission `{}`); leave the header out, the events record {} as their actor",
                principal.name,
                Permission::ActOnBehalf,
                principal.name
            )));
        }
    }
    let correlation_id = header_text(&headers, "x-correlation-id")?
        .map(|text| {
            Uuid::parse_str(text).map_err(|_| {
                ApiError::BadRequest(format!("X-Correlation-Id `{text}` is not a UUID"))
            })
        })
        .transpose()?;
    let request = CommandRequest {
        category,
        body,
        if_match: if_match(&headers)?,
        idempotency_key: header_text(&headers, "idempotency-key")?.map(str::to_owned),
        actor: principal.name.clone(),
        on_behalf_of: on_behalf_of.map(str::to_owned),
        correlation_id,
    };
    let outcome = state.commands.execute(request).await?;
    let version = outcome.result.stream_version;
    let mut response = Json(outcome.result).into_response();
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{version}\"")) {
        headers.insert(axum::http::header::ETAG, etag);
    }
    headers.insert(
        IDEMPOTENT_REPLAYED,
        HeaderValue::from_static(if outcome.replayed { "true" } else { "false" }),
    );
    Ok(response)
}
