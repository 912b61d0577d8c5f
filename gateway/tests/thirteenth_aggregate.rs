//! A thirteenth aggregate, defined here and nowhere else, added to the domain's registry:
//! it appears in `GET /v1/aggregates` and in the OpenAPI document, takes commands on the
//! command route (decided by its own rules, refusals append nothing), and a CSV mapping can
//! import into it. Nothing in the command service, the HTTP API or the importer names an
//! aggregate: they all read the registry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use chrono::{DateTime, Utc};
use crm_domain::registry::{CommandEnum, EventEnum, FoldError, Kind};
use crm_domain::{Aggregate, CodecError, EncodedEvent, Registry};
use crm_eventstore::{AnyStore, EventStore, MemoryStore};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tower::ServiceExt;

/// A memo pinned to a board: the test-only aggregate.
#[derive(Debug, Clone, Default)]
struct Memo {
    written: bool,
}

/// Write the memo.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct WriteMemo {
    memo_id: String,
    text: String,
    occurred_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum MemoCommand {
    WriteMemo(WriteMemo),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MemoWritten {
    memo_id: String,
    text: String,
    occurred_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
enum MemoEvent {
    MemoWritten(MemoWritten),
}

#[derive(Debug, thiserror::Error)]
#[error("memo `{0}` is already written; write another memo id")]
struct AlreadyWritten(String);

impl Aggregate for Memo {
    const CATEGORY: &'static str = "memo";
    type Command = MemoCommand;
    type Event = MemoEvent;
    type Error = AlreadyWritten;

    fn handle(&self, command: &MemoCommand) -> Result<Vec<MemoEvent>, AlreadyWritten> {
        let MemoCommand::WriteMemo(c) = command;
        if self.written {
            return Err(AlreadyWritten(c.memo_id.clone()));
        }
        Ok(vec![MemoEvent::MemoWritten(MemoWritten {
            memo_id: c.memo_id.clone(),
            text: c.text.clone(),
            occurred_at: c.occurred_at,
        })])
    }

    fn apply(&mut self, event: &MemoEvent) {
        let MemoEvent::MemoWritten(_) = event;
        self.written = true;
    }
}

impl CommandEnum for MemoCommand {
    const COMMAND_TYPES: &'static [&'static str] = &["WriteMemo"];
    fn command_type(&self) -> &'static str {
        "WriteMemo"
    }
    fn target(&self) -> &str {
        let MemoCommand::WriteMemo(c) = self;
        &c.memo_id
    }
    fn command_schemas(
        generator: &mut schemars::SchemaGenerator,
    ) -> Vec<(&'static str, schemars::Schema)> {
        vec![("WriteMemo", WriteMemo::json_schema(generator))]
    }
}

impl EventEnum for MemoEvent {
    const CATEGORY: &'static str = "memo";
    const EVENT_TYPES: &'static [(&'static str, u16)] = &[("MemoWritten", 1)];

    fn to_encoded(&self) -> Result<EncodedEvent, CodecError> {
        let MemoEvent::MemoWritten(e) = self;
        Ok(EncodedEvent {
            stream_id: format!("memo-{}", e.memo_id),
            event_type: "MemoWritten",
            schema_version: 1,
            occurred_at: e.occurred_at,
            payload: serde_json::to_vec(e).expect("a memo serializes"),
            carries_personal_data: false,
        })
    }

    fn from_stored(
        event_type: &str,
        schema_version: u16,
        payload: &[u8],
    ) -> Result<Self, FoldError> {
        assert_eq!((event_type, schema_version), ("MemoWritten", 1));
        serde_json::from_slice(payload)
            .map(MemoEvent::MemoWritten)
            .map_err(|source| {
                FoldError::Codec(CodecError::InvalidPayload {
                    event_type: event_type.to_owned(),
                    schema_version,
                    source,
                })
            })
    }
}

static MEMO: Kind<Memo> = Kind::new();

fn registry() -> Registry {
    Registry::builtin().with(&MEMO)
}

async fn call(app: &axum::Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = to_bytes(response.into_body(), 1 << 22).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn command(body: &Value) -> Request<Body> {
    Request::post("/v1/aggregates/memo/commands")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn an_aggregate_added_to_the_registry_is_served_by_the_api() {
    let store = AnyStore::from(MemoryStore::new());
    let (app, _, _stop) = crm_http::router_with(store.clone(), None, registry());

    let (status, aggregates) = call(&app, get("/v1/aggregates")).await;
    assert_eq!(status, 200);
    let all = aggregates.as_array().unwrap();
    assert_eq!(all.len(), 13, "{aggregates}");
    let memo = all.iter().find(|a| a["category"] == "memo").unwrap();
    assert_eq!(memo["commands"], json!(["WriteMemo"]));
    assert_eq!(memo["events"][0]["event_type"], "MemoWritten");

    let (status, openapi) = call(&app, get("/openapi.json")).await;
    assert_eq!(status, 200);
    let parameters = &openapi["paths"]["/v1/aggregates/{category}/commands"]["post"]["parameters"];
    let category = parameters
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "category")
        .unwrap();
    let categories = category["schema"]["enum"].as_array().unwrap();
    assert!(categories.contains(&json!("memo")), "{category}");
    assert!(categories.contains(&json!("opportunity")), "{category}");
    // Its command is one of the command body's alternatives, with its own fields.
    let body = &openapi["paths"]["/v1/aggregates/{category}/commands"]["post"]["requestBody"]
        ["content"]["application/json"]["schema"];
    let memo = body["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["properties"]["type"]["const"] == "WriteMemo")
        .unwrap_or_else(|| panic!("WriteMemo is not in the command body: {body}"));
    assert_eq!(
        memo["required"],
        json!(["type", "memo_id", "text", "occurred_at"])
    );
    assert_eq!(memo["additionalProperties"], json!(false));
    assert_eq!(memo["properties"]["text"]["type"], "string");

    let write = json!({
        "type": "WriteMemo", "memo_id": "m1", "text": "call Acme back",
        "occurred_at": "2026-12-01T09:00:00Z",
    });
    let (status, result) = call(&app, command(&write)).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["stream_id"], "memo-m1");
    assert_eq!(result["events"][0]["event_type"], "MemoWritten");
    let head = store.head().position;

    // The aggregate's own rule refuses a second write: 422, nothing appended.
    let (status, problem) = call(&app, command(&write)).await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("already written"),
        "{problem}"
    );
    assert_eq!(store.head().position, head);

    // The served router without the extension does not know it.
    let (plain, _, _stop) = crm_http::router(store.clone(), None);
    let (status, problem) = call(&plain, command(&write)).await;
    assert_eq!(status, 404, "{problem}");
}

#[tokio::test]
async fn a_csv_mapping_imports_into_an_aggregate_added_to_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("memos.csv");
    std::fs::write(
        &csv,
        "id,note,day\nm1,call Acme back,2026-12-01\nm2,send the offer,2026-12-02\n",
    )
    .unwrap();
    let mapping = dir.path().join("memos.toml");
    std::fs::write(
        &mapping,
        r#"
[[commands]]
aggregate = "memo"
command = "WriteMemo"
id = { column = "id" }
occurred_at = { column = "day", type = "datetime", format = "%Y-%m-%d" }

[commands.fields]
text = { column = "note" }
"#,
    )
    .unwrap();

    // The domain's own registry does not know `memo`: the mapping is refused by name.
    let err = crm_import::mapping::plan(&csv, &mapping).unwrap_err();
    assert!(err.to_string().contains("aggregate `memo`"), "{err}");

    let plan = crm_import::mapping::plan_with(&csv, &mapping, &registry()).unwrap();
    let store = AnyStore::from(MemoryStore::new());
    let summary = crm_import::run(&store, plan, crm_import::RunOptions::default())
        .await
        .unwrap();
    assert_eq!(summary.appended, 2, "{summary}");
    let events = store
        .read_all(crm_eventstore::Position::FIRST, 10)
        .await
        .unwrap();
    let streams: Vec<&str> = events.iter().map(|e| e.stream_id.as_str()).collect();
    assert_eq!(streams, ["memo-m1", "memo-m2"]);
    assert!(events.iter().all(|e| e.event_type == "MemoWritten"));
    // The actor is the local user who imported; the importer is in the metadata.
    assert!(events.iter().all(|e| e.actor.starts_with("local:")));
    for e in &events {
        let metadata: serde_json::Value = serde_json::from_slice(&e.metadata).unwrap();
        assert_eq!(metadata["source"]["importer"], "csv");
    }
}
