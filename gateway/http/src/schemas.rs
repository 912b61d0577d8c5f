//! The schemas of the OpenAPI document that come from the Rust types themselves (JSON Schema
//! 2020-12 by `schemars`, the dialect of OpenAPI 3.1): the command body (a `oneOf` over every
//! command of every aggregate of the registry, from the domain's command structs), the read
//! models' reports and the metric engine's answers. [`document`] puts them into the document
//! utoipa builds from the route annotations, and names this project in its `info`.
//!
//! **Invariant:** a schema from `schemars` goes into the document unchanged: its definitions
//! become `components.schemas` (the generator writes every `$ref` as
//! `#/components/schemas/<name>`), and each schema is carried as its own JSON keywords (see
//! [`raw`]), not re-read through utoipa's schema model, which drops keywords it has no field
//! for (`const`, `$ref` siblings, `prefixItems`).

use std::collections::BTreeMap;

use crm_domain::Registry;
use crm_metrics::{Comparison, DefineOutcome, Diff, Evaluation, Explanation, MetricSummary};
use crm_projections::read_models::{churn, lifetime_value, pipeline, sla};
use crm_projections::WorkerStatus;
use schemars::generate::{Contract, SchemaSettings};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{Object, SchemaType};
use utoipa::openapi::{Content, License, OpenApi, RefOr};

use crate::read_models::ReadModelAnswer;

/// The command route's path in the OpenAPI document.
pub const COMMAND_PATH: &str = "/v1/aggregates/{category}/commands";

/// Title of the document.
pub const TITLE: &str = "CRM event log API";

/// Where the generator puts definitions: `components.schemas` of the document.
const DEFINITIONS_PATH: &str = "/components/schemas";

/// A generator of schemas for the document: JSON Schema 2020-12, definitions under
/// `#/components/schemas/`, for what the server reads (`Contract::Deserialize`, the command
/// bodies) or writes (`Contract::Serialize`, the answers).
fn generator(contract: Contract) -> SchemaGenerator {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = DEFINITIONS_PATH.into();
    settings.meta_schema = None;
    settings.contract = contract;
    SchemaGenerator::new(settings)
}

/// A `schemars` schema as a utoipa schema that serializes to exactly the same JSON.
///
/// utoipa's [`Object`] flattens its `extensions` into the object it serializes and builds
/// them from any keys (only its `Deserialize` keeps `x-` keys alone), so an `Object` whose
/// only content is the schema's keywords as extensions renders as the schema itself.
#[must_use]
pub fn raw(schema: Schema) -> RefOr<utoipa::openapi::schema::Schema> {
    let keywords: Map<String, Value> = match schema.to_value() {
        Value::Object(map) => map,
        // `true`: any value; `false` cannot be a response or a body here.
        _ => Map::new(),
    };
    // `Object::new()` is typed `object`; the schema's own `type` (if any) is among its keywords.
    let mut object = Object::with_type(SchemaType::AnyValue);
    object.extensions = Some(Extensions::from_iter(keywords));
    RefOr::T(utoipa::openapi::schema::Schema::Object(object))
}

/// The body of the command route: `oneOf` the commands of every aggregate of `registry`,
/// each the command struct's fields plus `type` (the command name, `const`), nothing else.
#[must_use]
pub fn command_body(registry: &Registry, generator: &mut SchemaGenerator) -> Schema {
    let mut commands = Vec::new();
    for kind in registry.kinds() {
        for (name, mut schema) in kind.command_schemas(generator) {
            let mut properties = Map::new();
            properties.insert(
                "type".to_owned(),
                json!({
                    "description": format!("The command: `{name}` (aggregate `{}`)", kind.category()),
                    "type": "string",
                    "const": name,
                }),
            );
            if let Some(Value::Object(fields)) = schema.remove("properties") {
                properties.extend(fields);
            }
            let mut required = vec![Value::String("type".to_owned())];
            if let Some(Value::Array(fields)) = schema.remove("required") {
                required.extend(fields);
            }
            schema.insert("title".to_owned(), Value::String(name.to_owned()));
            schema.insert("type".to_owned(), Value::String("object".to_owned()));
            schema.insert("properties".to_owned(), Value::Object(properties));
            schema.insert("required".to_owned(), Value::Array(required));
            schema.insert("additionalProperties".to_owned(), Value::Bool(false));
            commands.push(schema.to_value());
        }
    }
    let mut body = Schema::default();
    body.insert(
        "description".to_owned(),
        Value::String(
            "A command: `type` names it (GET /v1/aggregates lists each aggregate's), the other \
             properties are its fields; unknown fields are refused"
                .to_owned(),
        ),
    );
    body.insert("oneOf".to_owned(), Value::Array(commands));
    body
}

/// The schema of `T` as the server writes it (a `$ref` when `T` is a named type).
fn answer<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// The schema of `/openapi.json`'s own answer: an OpenAPI 3.1 document (its full schema is
/// the specification's; this names the fields every document has).
fn openapi_document() -> Schema {
    schemars::json_schema!({
        "description": "An OpenAPI 3.1 document",
        "type": "object",
        "required": ["openapi", "info", "paths"],
        "properties": {
            "openapi": {"type": "string", "pattern": "^3\\.1\\.\\d+$"},
            "info": {
                "type": "object",
                "required": ["title", "version"],
                "properties": {"title": {"type": "string"}, "version": {"type": "string"}},
            },
            "paths": {"type": "object", "additionalProperties": {"type": "object"}},
            "components": {"type": "object"},
        },
    })
}

/// One answer the route annotations leave as a bare object: path, method, status, media
/// type, and the schema of the Rust type the handler writes.
struct Answer {
    path: &'static str,
    method: &'static str,
    status: &'static str,
    media_type: &'static str,
    schema: Schema,
}

/// Every answer whose schema comes from the Rust type the handler serializes.
fn answers(generator: &mut SchemaGenerator) -> Vec<Answer> {
    let json = "application/json";
    let get = |path, schema| Answer {
        path,
        method: "get",
        status: "200",
        media_type: json,
        schema,
    };
    vec![
        get("/v1/read-models", answer::<Vec<WorkerStatus>>(generator)),
        get(
            "/v1/read-models/pipeline",
            answer::<ReadModelAnswer<pipeline::PipelineReport>>(generator),
        ),
        get(
            "/v1/read-models/churn",
            answer::<ReadModelAnswer<churn::ChurnReport>>(generator),
        ),
        get(
            "/v1/read-models/lifetime-value",
            answer::<ReadModelAnswer<lifetime_value::LifetimeValueReport>>(generator),
        ),
        get(
            "/v1/read-models/sla",
            answer::<ReadModelAnswer<sla::SlaReport>>(generator),
        ),
        get("/v1/metrics", answer::<Vec<MetricSummary>>(generator)),
        get("/v1/metrics/{id}", answer::<Evaluation>(generator)),
        get("/v1/metrics/{id}/compare", answer::<Comparison>(generator)),
        get("/v1/metrics/{id}/explain", answer::<Explanation>(generator)),
        get("/v1/metrics/{id}/diff", answer::<Diff>(generator)),
        Answer {
            path: "/v1/metrics",
            method: "post",
            status: "201",
            media_type: json,
            schema: answer::<DefineOutcome>(generator),
        },
        Answer {
            path: "/v1/metrics",
            method: "post",
            status: "200",
            media_type: json,
            schema: answer::<DefineOutcome>(generator),
        },
        get(
            "/v1/scorecards",
            answer::<crate::scorecards::ScorecardList>(generator),
        ),
        get(
            "/v1/scorecards/{id}",
            answer::<crm_metrics::scorecard::ScorecardReport>(generator),
        ),
        get(
            "/v1/scorecards/{id}/explain",
            answer::<Explanation>(generator),
        ),
        Answer {
            path: "/v1/scorecards",
            method: "post",
            status: "201",
            media_type: json,
            schema: answer::<crm_metrics::scorecard::ScorecardDefineOutcome>(generator),
        },
        Answer {
            path: "/v1/scorecards",
            method: "post",
            status: "200",
            media_type: json,
            schema: answer::<crm_metrics::scorecard::ScorecardDefineOutcome>(generator),
        },
        get("/openapi.json", openapi_document()),
    ]
}

/// What [`document`] could not place: a mistake in this module, which the tests look for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Misplaced {
    /// Answers (`METHOD path status media-type`) the document has no slot for.
    pub answers: Vec<String>,
    /// Definitions whose name the document already uses for another schema.
    pub definitions: Vec<String>,
}

/// `openapi` with this project's `info`, the command body of every command of `registry`,
/// and the schemas of the read models' and metrics' answers; what could not be placed is
/// listed in [`Misplaced`] (empty unless this module is wrong).
#[must_use]
pub fn document(mut openapi: OpenApi, registry: &Registry) -> (OpenApi, Misplaced) {
    let mut misplaced = Misplaced::default();
    openapi.info.title = TITLE.to_owned();
    openapi.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut license = License::new("MIT");
    license.identifier = Some("MIT".to_owned());
    openapi.info.license = Some(license);
    openapi.info.contact = None;

    let mut reads = generator(Contract::Deserialize);
    let body = command_body(registry, &mut reads);
    let command = openapi
        .paths
        .paths
        .get_mut(COMMAND_PATH)
        .and_then(|item| item.post.as_mut())
        .and_then(|op| op.request_body.as_mut())
        .and_then(|body| body.content.get_mut("application/json"));
    match command {
        Some(content) => content.schema = Some(raw(body)),
        None => misplaced
            .answers
            .push(format!("POST {COMMAND_PATH} request application/json")),
    }

    let mut writes = generator(Contract::Serialize);
    for a in answers(&mut writes) {
        let content = openapi
            .paths
            .paths
            .get_mut(a.path)
            .and_then(|item| operation(item, a.method))
            .and_then(|op| op.responses.responses.get_mut(a.status))
            .and_then(|response| match response {
                RefOr::T(response) => Some(response),
                RefOr::Ref(_) => None,
            })
            .and_then(|response| response.content.get_mut(a.media_type));
        match content {
            Some(content) => *content = Content::new(Some(raw(a.schema))),
            None => misplaced.answers.push(format!(
                "{} {} {} {}",
                a.method, a.path, a.status, a.media_type
            )),
        }
    }

    let mut definitions: BTreeMap<String, Value> = BTreeMap::new();
    for generator in [&mut reads, &mut writes] {
        for (name, schema) in generator.take_definitions(true) {
            match definitions.get(&name) {
                Some(existing) if *existing != schema => misplaced.definitions.push(name),
                _ => {
                    definitions.insert(name, schema);
                }
            }
        }
    }
    let components = openapi.components.get_or_insert_with(Default::default);
    for (name, schema) in definitions {
        let schema = raw(Schema::try_from(schema).unwrap_or_default());
        match components.schemas.get(&name) {
            // The same schema again (a document passed through twice) is no collision.
            Some(existing) if !same(existing, &schema) => misplaced.definitions.push(name),
            Some(_) => {}
            None => {
                components.schemas.insert(name, schema);
            }
        }
    }
    (openapi, misplaced)
}

/// Whether two schemas render the same JSON.
fn same(
    a: &RefOr<utoipa::openapi::schema::Schema>,
    b: &RefOr<utoipa::openapi::schema::Schema>,
) -> bool {
    matches!((serde_json::to_value(a), serde_json::to_value(b)), (Ok(a), Ok(b)) if a == b)
}

/// The operation of `item` for `method` (`get` or `post`, the methods of this API).
fn operation<'a>(
    item: &'a mut utoipa::openapi::PathItem,
    method: &str,
) -> Option<&'a mut utoipa::openapi::path::Operation> {
    match method {
        "get" => item.get.as_mut(),
        "post" => item.post.as_mut(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_eventstore::{AnyStore, MemoryStore};

    #[test]
    fn every_answer_and_definition_finds_its_place() {
        let registry = Registry::builtin();
        let (_, served, _stop) =
            crate::router_with(AnyStore::from(MemoryStore::new()), None, registry.clone());
        // Passing the served document through again places everything again, and finds
        // any definition whose name the document uses for another schema.
        let (again, misplaced) = document(served.clone(), &registry);
        assert_eq!(misplaced, Misplaced::default());
        assert_eq!(
            serde_json::to_value(&again).unwrap(),
            serde_json::to_value(&served).unwrap()
        );
    }

    #[test]
    fn a_schema_renders_unchanged() {
        let schema = schemars::json_schema!({
            "type": "object",
            "properties": {"type": {"const": "X"}, "n": {"prefixItems": [{"type": "integer"}]}},
            "required": ["type"],
            "additionalProperties": false,
            "$comment": "kept",
        });
        let rendered = serde_json::to_value(raw(schema.clone())).unwrap();
        assert_eq!(rendered, schema.to_value());
        let untyped = schemars::json_schema!({"oneOf": [{"const": "a"}, {"const": 1}]});
        let rendered = serde_json::to_value(raw(untyped.clone())).unwrap();
        assert_eq!(rendered, untyped.to_value());
    }
}
