//! The aggregates the API takes commands for, as the domain's registry lists them: their
//! stream category, command names and event types (`GET /v1/aggregates`), and the
//! `category` parameter of the command route in the OpenAPI document.

use crm_domain::Registry;
use serde::Serialize;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::OpenApi;
use utoipa::ToSchema;

/// The command route's path in the OpenAPI document.
const COMMAND_PATH: &str = "/v1/aggregates/{category}/commands";

/// One aggregate in the catalog the API publishes.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AggregateInfo {
    /// Stream category, e.g. `opportunity`; streams are `"{category}-{id}"`.
    pub category: &'static str,
    /// Command names: the `type` of a command body.
    pub commands: Vec<&'static str>,
    /// Event types the aggregate records, with their current schema version.
    pub events: Vec<EventTypeInfo>,
}

/// An event type and its current schema version.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventTypeInfo {
    /// Stored type name, e.g. `OpportunityWon`.
    pub event_type: &'static str,
    /// Current schema version.
    pub schema_version: u16,
}

/// Every aggregate of `registry` with its commands and event types.
#[must_use]
pub fn catalog(registry: &Registry) -> Vec<AggregateInfo> {
    registry
        .kinds()
        .map(|kind| AggregateInfo {
            category: kind.category(),
            commands: kind.command_types().to_vec(),
            events: kind
                .event_types()
                .iter()
                .map(|(event_type, schema_version)| EventTypeInfo {
                    event_type,
                    schema_version: *schema_version,
                })
                .collect(),
        })
        .collect()
}

/// `openapi` with the command route's `category` parameter restricted to the categories of
/// `registry`.
#[must_use]
pub fn document_categories(mut openapi: OpenApi, registry: &Registry) -> OpenApi {
    let categories = registry.categories();
    let post = openapi
        .paths
        .paths
        .get_mut(COMMAND_PATH)
        .and_then(|item| item.post.as_mut());
    let parameters = post.and_then(|op| op.parameters.as_mut());
    for parameter in parameters.into_iter().flatten() {
        if parameter.name == "category" && parameter.parameter_in == ParameterIn::Path {
            parameter.schema = Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(categories.clone()))
                    .into(),
            );
        }
    }
    openapi
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_domain::EVENT_CATALOG;

    #[test]
    fn every_category_with_events_takes_commands() {
        let catalog = catalog(&Registry::builtin());
        let cats: Vec<_> = catalog.iter().map(|a| a.category).collect();
        for (category, _) in EVENT_CATALOG {
            assert!(cats.contains(category), "{category}");
        }
        assert!(catalog
            .iter()
            .all(|a| !a.events.is_empty() && !a.commands.is_empty()));
    }
}
