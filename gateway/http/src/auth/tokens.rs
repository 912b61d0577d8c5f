//! Admin routes of the token register (`/v1/auth/tokens`) and `GET /v1/auth/whoami`.
//! Grants and revocations are events of the register's stream, written with the admin's
//! principal as actor.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use crm_app::access::{
    IssuedToken, Principal, RegisterError, TokenRegister, TokenRequest, TokenSummary,
};
use crm_domain::access::{AccessError, Role};
use crm_domain::registry::nearest_name;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::problem::{ApiError, JsonObject, Problem};
use crate::AppState;

/// A token to grant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    /// Name, unique among live tokens: recorded as `token:<name>` on every event it writes.
    pub name: String,
    /// Roles: admin, writer, analyst, auditor, subscriber, viewer, monitor, member.
    pub roles: Vec<String>,
    /// Aggregate categories it may write and read streams of; empty or absent means all.
    #[serde(default)]
    pub scope: Vec<String>,
    /// Expiry (RFC 3339).
    pub expires_at: Option<DateTime<Utc>>,
}

/// Every token of the register.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    /// The tokens, by id; never their secrets.
    pub tokens: Vec<TokenSummary>,
}

/// A revocation.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenRevokedAnswer {
    /// The token's id.
    pub token_id: String,
    /// Who revoked it.
    pub revoked_by: String,
    /// Why.
    pub reason: Option<String>,
}

/// Why a token is revoked.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RevokeQuery {
    /// Why (recorded in the revocation).
    pub reason: Option<String>,
}

impl From<RegisterError> for ApiError {
    fn from(e: RegisterError) -> Self {
        match e {
            RegisterError::Refused(AccessError::UnknownToken(_)) => {
                ApiError::NotFound(e.to_string())
            }
            RegisterError::Refused(
                AccessError::NameTaken { .. } | AccessError::AlreadyRevoked { .. },
            ) => ApiError::Conflict(e.to_string()),
            RegisterError::Refused(_) => ApiError::BadRequest(e.to_string()),
            RegisterError::Concurrent => ApiError::Conflict(e.to_string()),
            RegisterError::Read(read) => read.into(),
            RegisterError::Append(append) => append.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Parses role names, naming the nearest role for a misspelt one.
fn roles(names: &[String]) -> Result<Vec<Role>, ApiError> {
    names
        .iter()
        .map(|n| {
            n.parse::<Role>()
                .map_err(|e| ApiError::BadRequest(e.to_string()))
        })
        .collect()
}

/// Checks scope entries against the aggregates this server serves.
fn scope(state: &AppState, scope: Vec<String>) -> Result<Vec<String>, ApiError> {
    let known = state.commands.registry().categories();
    for entry in &scope {
        if !known.contains(&entry.as_str()) {
            let hint = nearest_name(entry, known.iter().copied())
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            return Err(ApiError::BadRequest(format!(
                "scope `{entry}` is not an aggregate category{hint}; GET /v1/aggregates lists them"
            )));
        }
    }
    Ok(scope)
}

/// Who am I: the caller as the server sees it.
#[utoipa::path(get, path = "/v1/auth/whoami", tag = "access",
    responses(
        (status = 200, description = "The authenticated caller: the name recorded as actor, roles, scope", body = Principal),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn whoami(Extension(principal): Extension<Principal>) -> Json<Principal> {
    Json(principal)
}

/// Every API token, live, expired and revoked (never a secret).
#[utoipa::path(get, path = "/v1/auth/tokens", tag = "access",
    responses(
        (status = 200, description = "The register", body = TokenList),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(State(state): State<AppState>) -> Result<Json<TokenList>, ApiError> {
    let tokens = TokenRegister::new(state.store.clone())
        .list(Utc::now())
        .await?;
    Ok(Json(TokenList { tokens }))
}

/// Grants a token. The answer holds the token text, this once: store it.
#[utoipa::path(post, path = "/v1/auth/tokens", tag = "access",
    request_body(content = TokenCreate, content_type = "application/json"),
    responses(
        (status = 201, description = "Granted; `token` is shown only now", body = IssuedToken),
        (status = 400, description = "Bad name, role, scope or field", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A live token has the name", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: JsonObject,
) -> Result<Response, ApiError> {
    let request: TokenCreate = body.parse("the token request is invalid")?;
    let request = TokenRequest {
        roles: roles(&request.roles)?,
        scope: scope(&state, request.scope)?,
        name: request.name,
        expires_at: request.expires_at,
    };
    let issued = TokenRegister::new(state.store.clone())
        .grant(request, &principal, Utc::now())
        .await?;
    state.auth.tokens.register(true).await?;
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

/// Revokes a token, by id or name.
#[utoipa::path(delete, path = "/v1/auth/tokens/{token}", tag = "access",
    params(("token" = String, Path, description = "The token's id or name"), RevokeQuery),
    responses(
        (status = 200, description = "Revoked: refused from now on", body = TokenRevokedAnswer),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already revoked", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(token): Path<String>,
    Query(query): Query<RevokeQuery>,
) -> Result<Json<TokenRevokedAnswer>, ApiError> {
    let revoked = TokenRegister::new(state.store.clone())
        .revoke(&token, query.reason, &principal, Utc::now())
        .await?;
    state.auth.tokens.register(true).await?;
    Ok(Json(TokenRevokedAnswer {
        token_id: revoked.token_id,
        revoked_by: revoked.revoked_by,
        reason: revoked.reason,
    }))
}
