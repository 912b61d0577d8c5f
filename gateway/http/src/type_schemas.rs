//! `GET /v1/schema` and `GET /v1/schema/{type}`: the schema of every command and event type
//! (see [`crm_app::schema`]), as `crm schema` prints it.

use axum::extract::{Path, State};
use axum::Json;
use crm_app::schema::{self, TypeSchema};

use super::problem::{ApiError, Problem};
use super::AppState;

/// Every command and event type of the served aggregates, with its JSON Schema (2020-12,
/// self-contained) and its personal fields.
#[utoipa::path(
    get,
    path = "/v1/schema",
    tag = "commands",
    responses(
        (status = 200, description = "Every command and event type", body = Vec<TypeSchema>),
    )
)]
pub async fn list(State(state): State<AppState>) -> Json<Vec<TypeSchema>> {
    Json(schema::catalog(state.commands.registry()))
}

/// One command or event type.
#[utoipa::path(
    get,
    path = "/v1/schema/{type}",
    tag = "commands",
    params(("type" = String, Path, description = "A command or event type, e.g. `CaptureLead`, `LeadCaptured`")),
    responses(
        (status = 200, description = "The type's schema", body = TypeSchema),
        (status = 404, description = "No such type; the detail names the nearest", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<TypeSchema>, ApiError> {
    schema::find(state.commands.registry(), &name)
        .map(Json)
        .map_err(|e| ApiError::NotFound(e.to_string()))
}
