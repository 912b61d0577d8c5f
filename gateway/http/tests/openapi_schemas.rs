//! The OpenAPI document names this project and describes what every route reads and writes
//! with real schemas: no success answer or request body is a bare `{"type": "object"}`, the
//! command body lists every command of the domain's registry with its fields, every `$ref`
//! resolves, and the schemas the document carries validate the answers the API gives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use axum::body::{to_bytes, Body};
use axum::http::Request;
use crm_domain::Registry;
use crm_eventstore::{AnyStore, MemoryStore};
use serde_json::{json, Value};
use tower::ServiceExt;

async fn served_document() -> Value {
    let (app, _, _stop) = crm_http::router(AnyStore::from(MemoryStore::new()), None);
    let response = app
        .oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = to_bytes(response.into_body(), 1 << 24).await.unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// A schema that says nothing but "an object".
fn is_bare_object(schema: &Value) -> bool {
    match schema.as_object() {
        Some(map) => {
            map.keys().all(|k| k == "type" || k == "description") && schema["type"] == "object"
        }
        None => true,
    }
}

/// Every `$ref` in `value`.
fn refs(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        out.insert(r.clone());
                    }
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn info_names_this_project_not_the_generator() {
    let doc = served_document().await;
    let info = &doc["info"];
    assert_eq!(info["title"], "CRM event log API");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["license"], json!({"name": "MIT", "identifier": "MIT"}));
    let text = info.to_string().to_lowercase();
    assert!(!text.contains("utoipa"), "{info}");
    assert!(
        !text.contains("crm-http") && !text.contains("axum"),
        "{info}"
    );
    assert!(info["description"]
        .as_str()
        .unwrap()
        .contains("problem details"));
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
}

#[tokio::test]
async fn every_body_and_success_answer_has_a_real_schema() {
    let doc = served_document().await;
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if let Some(content) = operation["requestBody"]["content"].as_object() {
                for (media, c) in content {
                    assert!(
                        !is_bare_object(&c["schema"]),
                        "{method} {path} request {media}: {}",
                        c["schema"]
                    );
                    checked += 1;
                }
            }
            for (status, response) in operation["responses"].as_object().unwrap() {
                let Some(content) = response["content"].as_object() else {
                    continue;
                };
                for (media, c) in content {
                    assert!(
                        !is_bare_object(&c["schema"]),
                        "{method} {path} {status} {media}: {}",
                        c["schema"]
                    );
                    if status.starts_with('4') || status.starts_with('5') {
                        assert_eq!(
                            media, "application/problem+json",
                            "{method} {path} {status}"
                        );
                        assert_eq!(c["schema"]["$ref"], "#/components/schemas/Problem");
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 60, "{checked}");
    // Every reference resolves to a component.
    let mut all = BTreeSet::new();
    refs(&doc, &mut all);
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for r in &all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r} is not a component reference"));
        assert!(schemas.contains_key(name), "{r} does not resolve");
    }
    // The read models and metric answers name their own types.
    let ok = |path: &str| {
        doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            .clone()
    };
    assert_eq!(ok("/v1/read-models")["type"], "array");
    for (path, name) in [
        ("/v1/metrics/{id}", "Evaluation"),
        ("/v1/metrics/{id}/compare", "Comparison"),
        ("/v1/metrics/{id}/explain", "Explanation"),
        ("/v1/metrics/{id}/diff", "Diff"),
    ] {
        assert_eq!(
            ok(path)["$ref"],
            format!("#/components/schemas/{name}"),
            "{path}"
        );
    }
    for (path, report) in [
        ("/v1/read-models/pipeline", "PipelineReport"),
        ("/v1/read-models/churn", "ChurnReport"),
        ("/v1/read-models/lifetime-value", "LifetimeValueReport"),
        ("/v1/read-models/sla", "SlaReport"),
    ] {
        let answer = format!("{report}Answer");
        assert_eq!(
            ok(path)["$ref"],
            format!("#/components/schemas/{answer}"),
            "{path}"
        );
        let schema = &schemas[&answer];
        assert_eq!(
            schema["required"],
            json!(["applied_position", "report"]),
            "{schema}"
        );
        assert_eq!(
            schema["properties"]["report"]["$ref"],
            format!("#/components/schemas/{report}"),
            "{schema}"
        );
        assert!(
            schemas[report]["properties"].as_object().unwrap().len() > 2,
            "{report}"
        );
    }
}

#[tokio::test]
async fn the_command_body_lists_every_command_with_its_fields() {
    let doc = served_document().await;
    let body = &doc["paths"]["/v1/aggregates/{category}/commands"]["post"]["requestBody"]
        ["content"]["application/json"]["schema"];
    let alternatives = body["oneOf"].as_array().unwrap();
    let documented: Vec<&str> = alternatives
        .iter()
        .map(|c| c["properties"]["type"]["const"].as_str().unwrap())
        .collect();
    let registry = Registry::builtin();
    let commands: Vec<&str> = registry
        .kinds()
        .flat_map(|k| k.command_types().iter().copied())
        .collect();
    assert_eq!(documented, commands);
    for c in alternatives {
        assert_eq!(c["type"], "object", "{c}");
        assert_eq!(c["additionalProperties"], false, "{c}");
        let required = c["required"].as_array().unwrap();
        assert_eq!(required[0], "type", "{c}");
        for field in required {
            assert!(
                c["properties"][field.as_str().unwrap()].is_object(),
                "{field}: {c}"
            );
        }
        assert!(required.contains(&json!("occurred_at")), "{c}");
    }
    let open = alternatives
        .iter()
        .find(|c| c["properties"]["type"]["const"] == "OpenAccount")
        .unwrap();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        open["properties"]["account_id"]["$ref"],
        "#/components/schemas/AccountId"
    );
    assert_eq!(schemas["AccountId"]["maxLength"], 128);
    assert_eq!(open["properties"]["is_internal"]["type"], "boolean");
    assert_eq!(open["properties"]["occurred_at"]["format"], "date-time");
    assert!(!open["required"]
        .as_array()
        .unwrap()
        .contains(&json!("industry")));
    // Closed vocabularies are listed.
    let channels: Vec<&Value> = schemas["Channel"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["const"])
        .collect();
    assert!(
        channels.contains(&&json!("in_person")),
        "{}",
        schemas["Channel"]
    );
}

/// The document says of every command of the registry what the command route accepts: a
/// body built from the schema (every required field, valid values) is a command the domain
/// parses, and a body with one more property is refused.
#[test]
fn a_body_built_from_the_schema_parses_and_an_extra_field_is_refused() {
    let registry = Registry::builtin();
    let mut generator =
        schemars::SchemaGenerator::new(schemars::generate::SchemaSettings::draft2020_12());
    let account = registry.get("account").unwrap();
    let schemas = account.command_schemas(&mut generator);
    let (_, change) = schemas
        .iter()
        .find(|(n, _)| *n == "ChangeAccountSegment")
        .unwrap();
    assert_eq!(change.get("additionalProperties"), Some(&json!(false)));
    let mut fields = serde_json::Map::new();
    for field in change.get("required").unwrap().as_array().unwrap() {
        let value = match field.as_str().unwrap() {
            "occurred_at" => json!("2026-01-01T00:00:00Z"),
            _ => json!("acme"),
        };
        fields.insert(field.as_str().unwrap().to_owned(), value);
    }
    assert!(account
        .parse_command("ChangeAccountSegment", fields.clone())
        .is_ok());
    fields.insert("colour".to_owned(), json!("red"));
    assert!(account
        .parse_command("ChangeAccountSegment", fields)
        .is_err());
}
