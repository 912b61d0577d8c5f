//! The AsyncAPI document (`gateway/asyncapi.json`) against the publisher's code: the headers
//! it lists are exactly the headers the publisher sets, with the values it documents; the
//! body schema lists exactly the fields of the envelope the publisher sends; the channel
//! address is the subject the publisher uses. So the contract cannot drift silently.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use crm_eventstore::{ChainHash, EventId, Position, RecordedEvent, StreamId, StreamVersion};
use crm_publish::message::{self, HEADER_NAMES};
use crm_publish::SUBJECT_PREFIX_DEFAULT;
use serde_json::Value;

fn document() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/asyncapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn event(metadata: &[u8], payload: &[u8]) -> RecordedEvent {
    RecordedEvent {
        position: Position(12),
        stream_id: StreamId::new("opportunity-42").unwrap(),
        stream_version: StreamVersion(4),
        event_id: EventId(uuid::Uuid::now_v7()),
        event_type: "OpportunityWon".into(),
        schema_version: 1,
        occurred_at: "2026-02-03T04:05:06Z".parse().unwrap(),
        recorded_at: "2026-02-03T04:05:07Z".parse().unwrap(),
        causation_id: Some(uuid::Uuid::now_v7()),
        correlation_id: None,
        actor: "agent-7".into(),
        metadata: metadata.to_vec(),
        payload: payload.to_vec(),
        checksum: 99,
        prev_hash: ChainHash([2; 32]),
        hash: ChainHash([3; 32]),
    }
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

fn strings(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_documented_headers_are_the_headers_the_publisher_sets() {
    let doc = document();
    assert_eq!(doc["asyncapi"], "3.0.0");
    let message = &doc["components"]["messages"]["RecordedEvent"];
    let schema = &message["headers"];
    let documented = keys(&schema["properties"]);
    let set: BTreeSet<String> = HEADER_NAMES.iter().map(|h| (*h).to_owned()).collect();
    assert_eq!(documented, set, "asyncapi.json headers vs HEADER_NAMES");
    assert_eq!(strings(&schema["required"]), set);

    let event = event(br#"{"source":"test"}"#, br#"{"amount":1}"#);
    let headers = message::headers("crm://test/log", &event);
    let sent: BTreeSet<String> = headers.iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(sent, set, "headers the publisher builds vs HEADER_NAMES");
    // Constants and patterns the document states hold for what is sent.
    for (name, property) in schema["properties"].as_object().unwrap() {
        let value = headers.get(name.as_str()).unwrap().as_str();
        if let Some(constant) = property.get("const") {
            assert_eq!(constant.as_str().unwrap(), value, "header {name}");
        }
        if let Some(pattern) = property["pattern"].as_str() {
            let digits = pattern == "^[0-9]+$" || pattern == "^[1-9][0-9]*$";
            if digits {
                assert!(value.parse::<u64>().is_ok(), "header {name} = {value:?}");
            }
        }
    }
    assert_eq!(
        headers.get(message::CE_TYPE).unwrap().as_str(),
        "crm.OpportunityWon.v1"
    );
    assert_eq!(message["contentType"], message::BODY_CONTENT_TYPE);
}

#[test]
fn the_documented_body_is_the_envelope_the_publisher_sends() {
    let doc = document();
    let schema = &doc["components"]["schemas"]["EventEnvelope"];
    let documented = keys(&schema["properties"]);
    let required = strings(&schema["required"]);
    // JSON payload and metadata are embedded; other bytes come as hex; empty metadata is
    // omitted. Together the three bodies use every documented field.
    let mut seen = BTreeSet::new();
    for e in [
        event(br#"{"source":"test"}"#, br#"{"amount":1}"#),
        event(b"\x00\x01", b"\xff"),
        event(b"", br#"{"amount":1}"#),
    ] {
        let body: Value = serde_json::from_slice(&message::body(&e).unwrap()).unwrap();
        let fields = keys(&body);
        assert!(
            fields.is_subset(&documented),
            "undocumented: {:?}",
            fields.difference(&documented).collect::<Vec<_>>()
        );
        assert!(
            required.is_subset(&fields),
            "required but absent: {:?}",
            required.difference(&fields).collect::<Vec<_>>()
        );
        assert_eq!(body["position"], 12);
        seen.extend(fields);
    }
    assert_eq!(seen, documented);
}

#[test]
fn the_documented_channel_is_the_subject_the_publisher_uses() {
    let doc = document();
    let address = doc["channels"]["events"]["address"].as_str().unwrap();
    assert_eq!(
        address,
        format!("{SUBJECT_PREFIX_DEFAULT}.{{category}}.{{streamId}}")
    );
    let subject = message::subject(SUBJECT_PREFIX_DEFAULT, &event(b"", b"{}"));
    let expected = address
        .replace("{category}", "opportunity")
        .replace("{streamId}", "opportunity-42");
    assert_eq!(subject, expected);
    let parameters = keys(&doc["channels"]["events"]["parameters"]);
    assert_eq!(
        parameters,
        ["category", "streamId"].map(String::from).into()
    );
    assert_eq!(
        doc["operations"]["receiveEvents"]["channel"]["$ref"],
        "#/channels/events"
    );
}

/// The payload schemas the document should carry: one per event type, generated from the
/// domain's types (as `crm schema --json` gives them), and the envelope's `payload` as any of
/// them.
fn generated_payload_schemas() -> serde_json::Map<String, Value> {
    let types = crm_app::schema::catalog(&crm_domain::Registry::builtin());
    types
        .into_iter()
        .filter(|t| t.kind == crm_app::schema::TypeKind::Event)
        .map(|t| {
            let mut schema = t.schema.clone();
            if let Some(object) = schema.as_object_mut() {
                object.insert(
                    "x-schema-version".into(),
                    Value::from(t.schema_version.unwrap_or_default()),
                );
                object.insert("x-aggregate".into(), Value::from(t.aggregate.clone()));
                object.insert(
                    "x-personal-fields".into(),
                    Value::from(t.personal_fields.clone()),
                );
            }
            (format!("{}Payload", t.name), schema)
        })
        .collect()
}

#[test]
fn the_payload_schemas_are_generated_from_the_domain_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/asyncapi.json");
    let mut doc = document();
    let generated = generated_payload_schemas();
    let refs: Vec<Value> = generated
        .keys()
        .map(|name| serde_json::json!({ "$ref": format!("#/components/schemas/{name}") }))
        .collect();
    if std::env::var_os("CRM_REGENERATE_ASYNCAPI").is_some() {
        let schemas = doc["components"]["schemas"].as_object_mut().unwrap();
        schemas.retain(|name, _| !name.ends_with("Payload"));
        schemas.extend(generated.clone());
        doc["components"]["schemas"]["EventEnvelope"]["properties"]["payload"]["anyOf"] =
            Value::from(refs.clone());
        std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
    }
    let documented: serde_json::Map<String, Value> = doc["components"]["schemas"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| name.ends_with("Payload"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(
        documented.keys().collect::<Vec<_>>(),
        generated.keys().collect::<Vec<_>>(),
        "run the test with CRM_REGENERATE_ASYNCAPI=1 to regenerate"
    );
    for (name, schema) in &generated {
        assert_eq!(
            &documented[name], schema,
            "{name} differs from the domain type; run with CRM_REGENERATE_ASYNCAPI=1"
        );
    }
    assert_eq!(
        doc["components"]["schemas"]["EventEnvelope"]["properties"]["payload"]["anyOf"],
        Value::from(refs)
    );
    // The sealed form of personal data is what the payloads document.
    let lead = &generated["LeadCapturedPayload"];
    assert!(lead.to_string().contains("sealed_with"), "{lead}");
}
