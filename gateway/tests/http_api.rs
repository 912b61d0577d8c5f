//! The HTTP API end to end through the real `crm serve` binary: commands advance aggregates;
//! a stale `If-Match`, a rule violation, a malformed or oversized body are refused with problem
//! details and append nothing; an `Idempotency-Key` retry returns the original result; reads
//! are paged with a capped page size; `/openapi.json` lists every route; operations routes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;

use common::{assert_problem, change_segment, crm, open_account, open_opportunity, Server};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_advance_aggregates_and_a_stale_if_match_is_409() {
    let server = Server::start();
    let (status, headers, opened) = server.command("account", &open_account("acme"), &[]).await;
    assert_eq!(status, 200, "{opened}");
    assert_eq!(opened["stream_id"], "account-acme");
    assert_eq!(opened["stream_version"], 1);
    assert_eq!(opened["events"][0]["event_type"], "AccountOpened");
    assert_eq!(headers["etag"], "\"1\"");

    let (status, _, changed) = server
        .command(
            "account",
            &change_segment("acme", "enterprise"),
            &[("If-Match", "\"1\"")],
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["stream_version"], 2);
    assert_eq!(changed["first_position"], 2);
    assert_eq!(changed["events"][0]["event_type"], "AccountSegmentChanged");

    let (status, stream) = server.get("/v1/streams/account-acme").await;
    assert_eq!(status, 200);
    assert_eq!(stream["head"], 2);
    assert_eq!(stream["events"][1]["payload"]["to"], "enterprise");

    // Stale If-Match: 409, current version in the problem, nothing appended.
    let head = server.head().await;
    let (status, _, problem) = server
        .command(
            "account",
            &change_segment("acme", "smb"),
            &[("If-Match", "1")],
        )
        .await;
    let detail = assert_problem(status, &problem, 409, "version-conflict");
    assert!(detail.contains("version 2"), "{detail}");
    assert_eq!(problem["current_version"], 2);
    assert_eq!(server.head().await, head);
    let (_, stream) = server.get("/v1/streams/account-acme").await;
    assert_eq!(stream["head"], 2);

    // If-Match 0 on an existing stream is a conflict too; on a new stream it creates it.
    let (status, _, _) = server
        .command("account", &open_account("acme"), &[("If-Match", "0")])
        .await;
    assert_eq!(status, 409);
    let (status, _, created) = server
        .command("account", &open_account("globex"), &[("If-Match", "0")])
        .await;
    assert_eq!((status, &created["stream_version"]), (200, &json!(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_retry_returns_the_original_result_and_appends_nothing() {
    let server = Server::start();
    let key = [("Idempotency-Key", "5f0c1a2e-retry-1")];
    let (status, headers, first) = server.command("account", &open_account("acme"), &key).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(headers["idempotent-replayed"], "false");
    let head = server.head().await;

    let (status, headers, again) = server.command("account", &open_account("acme"), &key).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, first);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(server.head().await, head);

    // Still the original result after the stream moved on.
    let (status, _, _) = server
        .command("account", &change_segment("acme", "enterprise"), &[])
        .await;
    assert_eq!(status, 200);
    let head = server.head().await;
    let (status, _, late) = server.command("account", &open_account("acme"), &key).await;
    assert_eq!((status, &late), (200, &first));
    assert_eq!(server.head().await, head);

    // The same key for another request: 422, nothing appended.
    let (status, _, problem) = server
        .command("account", &change_segment("acme", "smb"), &key)
        .await;
    assert_problem(status, &problem, 422, "idempotency-key-reused");
    let (status, _, problem) = server
        .command("account", &open_account("other"), &key)
        .await;
    assert_problem(status, &problem, 422, "idempotency-key-reused");
    assert_eq!(server.head().await, head);

    // Event ids derive from the key: the recorded id is the one the response named.
    let (_, stream) = server.get("/v1/streams/account-acme").await;
    assert_eq!(
        stream["events"][0]["event_id"],
        first["events"][0]["event_id"]
    );
    assert_eq!(
        stream["events"][0]["metadata"]["request"]["idempotency_key"],
        "5f0c1a2e-retry-1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_problem_details_and_append_nothing() {
    let server = Server::start();
    assert_eq!(
        server
            .command("account", &open_account("acme"), &[])
            .await
            .0,
        200
    );
    let head = server.head().await;

    // A rule violation: 422 with the domain's message.
    let (status, _, problem) = server.command("account", &open_account("acme"), &[]).await;
    let detail = assert_problem(status, &problem, 422, "rule-violated");
    assert!(detail.contains("account `acme` already exists"), "{detail}");
    let (status, _, problem) = server
        .command("account", &change_segment("acme", "smb"), &[])
        .await;
    assert_problem(status, &problem, 422, "rule-violated");

    // Malformed JSON, an unknown command, a missing field, a wrong media type: 400 / 415.
    let post = |body: &'static str, content_type: &'static str| {
        server
            .client
            .post(server.url("/v1/aggregates/account/commands"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    for body in [
        r#"{"type": "OpenAccount", "account_id": "#,
        r#"{"type": "FlyToTheMoon", "account_id": "x"}"#,
        r#"{"type": "ChangeAccountSegment", "account_id": "acme"}"#,
        r#"{"account_id": "acme"}"#,
        "[1, 2]",
    ] {
        let response = post(body, "application/json").await.unwrap();
        let status = response.status().as_u16();
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert_problem(status, &problem, 400, "malformed-request");
    }
    let response = post("{}", "text/plain").await.unwrap();
    assert_eq!(response.status().as_u16(), 415);
    // No Content-Type at all is not taken as JSON either.
    let response = server
        .client
        .post(server.url("/v1/aggregates/account/commands"))
        .body(open_account("untyped").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);

    // A field the command does not have is refused and named, with the nearest real one;
    // nothing is appended.
    let before_typo = server.head().await;
    let mut typo = open_account("typo");
    typo["industy"] = Value::String("Retail".into());
    let (status, _, problem) = server.command("account", &typo, &[]).await;
    let detail = assert_problem(status, &problem, 400, "malformed-request");
    assert!(detail.contains("unknown field `industy`"), "{detail}");
    assert!(detail.contains("did you mean `industry`?"), "{detail}");
    assert_eq!(server.head().await, before_typo);

    // An oversized body: 413.
    let mut big = open_account("big");
    big["name"] = Value::String("x".repeat(100 * 1024));
    let (status, _, problem) = server.command("account", &big, &[]).await;
    assert_problem(status, &problem, 413, "too-large");

    // Unknown aggregate, unknown stream, unknown route: 404. A bad If-Match: 400.
    let (status, _, problem) = server.command("spaceship", &open_account("x"), &[]).await;
    assert_problem(status, &problem, 404, "not-found");
    let (status, problem) = server.get("/v1/streams/account-nobody").await;
    assert_problem(status, &problem, 404, "not-found");
    let (status, problem) = server.get("/v1/nothing-here").await;
    assert_problem(status, &problem, 404, "not-found");
    let (status, _, problem) = server
        .command(
            "account",
            &change_segment("acme", "mid"),
            &[("If-Match", "soon")],
        )
        .await;
    assert_problem(status, &problem, 400, "malformed-request");
    let (status, problem) = server.get("/v1/events?from=minus-one").await;
    assert_problem(status, &problem, 400, "malformed-request");

    assert_eq!(server.head().await, head);
}

/// 600 contracts → 1,200 events, imported with the generic CSV importer before serving.
fn imported_log() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("contracts.csv");
    let mut file = std::fs::File::create(&csv).unwrap();
    writeln!(
        file,
        "Vertrag;Kunde;Firma;Segment;Branche;Intern;Tarif;Betrag;Laufzeit;Beginn"
    )
    .unwrap();
    for i in 0..600 {
        writeln!(file, "V-{i};K-{i};Firma {i};K;;nein;Basis;99;12;01.02.2023").unwrap();
    }
    drop(file);
    let mapping =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/contracts.toml");
    let out = crm(dir.path())
        .args(["import", "csv"])
        .arg(&csv)
        .arg("--mapping")
        .arg(&mapping)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_reads_are_paged_with_a_capped_page_size() {
    let server = Server::start_in(imported_log());
    assert_eq!(server.head().await, 1_200);

    // A limit above the cap gets the cap.
    let (status, page) = server.get("/v1/events?from=1&limit=5000").await;
    assert_eq!(status, 200);
    assert_eq!(page["limit"], 1_000);
    assert_eq!(page["events"].as_array().unwrap().len(), 1_000);
    assert_eq!(page["next_from"], 1_001);

    // Walking pages visits every position once, in order.
    let mut from = 1u64;
    let mut seen = Vec::new();
    while let (200, page) = server
        .get(&format!("/v1/events?from={from}&limit=400"))
        .await
    {
        seen.extend(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["position"].as_u64().unwrap()),
        );
        match page["next_from"].as_u64() {
            Some(next) => from = next,
            None => break,
        }
    }
    assert_eq!(seen, (1..=1_200).collect::<Vec<_>>());

    // Filters: only subscriptions, paged.
    let (_, page) = server
        .get("/v1/events?category=subscription&limit=1000")
        .await;
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 600);
    assert!(events
        .iter()
        .all(|e| e["event_type"] == "SubscriptionStarted"));
    let (_, page) = server.get("/v1/events?type=AccountOpened&limit=10").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 10);
    let next = page["next_from"].as_u64().unwrap();
    assert!(next > page["events"][9]["position"].as_u64().unwrap());

    // Tracing one request: its correlation id selects exactly the events it wrote.
    let correlation = "0192f0a0-0000-7000-8000-00000000c0de";
    let (status, _, written) = server
        .command(
            "account",
            &open_account("traced"),
            &[("x-correlation-id", correlation)],
        )
        .await;
    assert_eq!(status, 200, "{written}");
    let (_, page) = server
        .get(&format!("/v1/events?correlation={correlation}"))
        .await;
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{page}");
    assert_eq!(events[0]["correlation_id"], correlation);
    assert_eq!(events[0]["stream_id"], "account-traced");
    let (status, problem) = server.get("/v1/events?correlation=nope").await;
    assert_eq!(status, 400, "{problem}");

    // Stream reads page by version.
    let (status, page) = server.get("/v1/streams/account-K-7?limit=5000").await;
    assert_eq!((status, &page["limit"]), (200, &json!(1_000)));
    assert_eq!(page["events"][0]["metadata"]["source"]["key"], "V-7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_route_and_operations_routes_answer() {
    let server = Server::start();
    let (status, doc) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    // The document parses as an OpenAPI 3.1 specification (typed model of the standard).
    let spec = oas3::from_json(doc.to_string())
        .expect("/openapi.json is not a valid OpenAPI 3.1 document");
    assert_eq!(
        spec.paths.as_ref().map_or(0, |p| p.len()),
        doc["paths"].as_object().unwrap().len()
    );
    let served = [
        ("post", "/v1/aggregates/{category}/commands"),
        ("get", "/v1/aggregates"),
        ("get", "/v1/streams/{stream_id}"),
        ("get", "/v1/events"),
        ("get", "/v1/feed"),
        ("get", "/v1/read-models"),
        ("get", "/v1/read-models/pipeline"),
        ("get", "/v1/read-models/churn"),
        ("get", "/v1/read-models/lifetime-value"),
        ("get", "/v1/read-models/sla"),
        ("get", "/v1/metrics"),
        ("post", "/v1/metrics"),
        ("get", "/v1/metrics/{id}"),
        ("get", "/v1/metrics/{id}/compare"),
        ("get", "/v1/metrics/{id}/explain"),
        ("get", "/v1/metrics/{id}/diff"),
        ("get", "/v1/auth/whoami"),
        ("get", "/v1/auth/tokens"),
        ("post", "/v1/auth/tokens"),
        ("delete", "/v1/auth/tokens/{token}"),
        ("post", "/v1/subjects/{subject}/erasure"),
        ("get", "/v1/schema"),
        ("get", "/v1/schema/{type}"),
        ("get", "/v1/scorecards"),
        ("post", "/v1/scorecards"),
        ("get", "/v1/scorecards/{id}"),
        ("get", "/v1/scorecards/{id}/explain"),
        ("get", "/v1/checkpoints"),
        ("post", "/v1/checkpoints"),
        ("get", "/"),
        ("get", "/cockpit/{asset}"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
    ];
    let paths = doc["paths"].as_object().unwrap();
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, served.len(), "{:?}", paths.keys());
    for (method, path) in served {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        let responses = operation["responses"].as_object().unwrap();
        assert!(
            responses.contains_key("200") || responses.contains_key("201"),
            "{method} {path}"
        );
    }
    // Every error of the command route is documented with the problem schema.
    let responses = &doc["paths"]["/v1/aggregates/{category}/commands"]["post"]["responses"];
    for status in ["400", "404", "409", "413", "415", "422", "503"] {
        let content = &responses[status]["content"]["application/problem+json"];
        assert!(content["schema"].is_object(), "{status}: {responses}");
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    // The cached analytics routes document their `Cache-Status` header.
    for path in [
        "/v1/read-models/pipeline",
        "/v1/read-models/churn",
        "/v1/read-models/lifetime-value",
        "/v1/read-models/sla",
        "/v1/metrics/{id}",
        "/v1/metrics/{id}/compare",
        "/v1/metrics/{id}/explain",
        "/v1/metrics/{id}/diff",
    ] {
        let header = &doc["paths"][path]["get"]["responses"]["200"]["headers"]["cache-status"];
        assert!(header.is_object(), "{path}: {header}");
    }
    assert!(doc["components"]["schemas"]["CommandResult"].is_object());
    assert!(doc["components"]["schemas"]["EventLine"].is_object());
    // Every documented GET path is served (no "no such route").
    for (method, path) in served {
        if method == "get" && !path.contains('{') && path != "/v1/feed" {
            let response = server.client.get(server.url(path)).send().await.unwrap();
            assert_eq!(response.status().as_u16(), 200, "{path}");
        }
    }

    // Instants as dates (midnight UTC) or RFC 3339; anything else is a 400 naming the forms.
    let (status, body) = server
        .get("/v1/read-models/pipeline?as_of=2026-01-01")
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .get("/v1/metrics/sales.win_rate?from=2017-01-01&to=2018-01-01")
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .get("/v1/metrics/sales.win_rate?where=nonsense")
        .await;
    let detail = assert_problem(status, &body, 400, "malformed-request");
    assert!(detail.contains("DIM=VALUE"), "{detail}");
    let (status, body) = server
        .get("/v1/read-models/pipeline?as_of=01/02/2026")
        .await;
    let detail = assert_problem(status, &body, 400, "malformed-request");
    assert!(detail.contains("YYYY-MM-DD"), "{detail}");

    // The schema of every command and event type, one by name, the nearest for a typo.
    let (status, types) = server.get("/v1/schema").await;
    assert_eq!(status, 200);
    let captured = types
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "LeadCaptured")
        .unwrap();
    assert_eq!(captured["kind"], "event");
    assert_eq!(captured["personal_fields"][0], "personal");
    let (status, one) = server.get("/v1/schema/CaptureLead").await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(
        one["schema"]["properties"]["channel"]["oneOf"]
            .as_array()
            .map(Vec::len),
        Some(9),
        "{one}"
    );
    let (status, missing) = server.get("/v1/schema/CaptureLaed").await;
    let detail = assert_problem(status, &missing, 404, "not-found");
    assert!(detail.contains("did you mean `CaptureLead`"), "{detail}");

    let (status, health) = server.get("/healthz").await;
    assert_eq!((status, &health["status"]), (200, &json!("ok")));
    assert_eq!(
        server.command("account", &open_account("m"), &[]).await.0,
        200
    );
    let (status, ready) = server.get("/readyz").await;
    assert_eq!((status, &ready["head_position"]), (200, &json!(1)));
    let (_, aggregates) = server.get("/v1/aggregates").await;
    let account = aggregates
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["category"] == "account")
        .unwrap();
    assert!(account["commands"]
        .as_array()
        .unwrap()
        .contains(&json!("OpenAccount")));

    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "crm_appends_total{outcome=\"ok\"} 1",
        "crm_appended_events_total 1",
        "crm_append_duration_seconds_bucket",
        "crm_http_request_duration_seconds_bucket{route=\"/v1/aggregates/{category}/commands\",method=\"POST\",status=\"200\"",
        "crm_store_size_bytes",
        "crm_store_head_position 1",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_follow_the_log_and_answer_as_of_any_instant() {
    let server = Server::start_in(imported_log());
    // The workers catch up in the background; wait (bounded) until none lags.
    let mut caught_up = false;
    for _ in 0..600 {
        let (status, workers) = server.get("/v1/read-models").await;
        assert_eq!(status, 200, "{workers}");
        let workers = workers.as_array().unwrap();
        assert_eq!(workers.len(), 4, "{workers:?}");
        if workers.iter().all(|w| w["applied_position"] == 1_200) {
            caught_up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(caught_up, "projections never reached the head");
    let (status, _) = server.get("/readyz").await;
    assert_eq!(status, 200);

    for model in ["pipeline", "churn", "lifetime-value", "sla"] {
        let (status, answer) = server
            .get(&format!(
                "/v1/read-models/{model}?as_of=2024-01-01T00:00:00Z&limit=5"
            ))
            .await;
        assert_eq!(status, 200, "{model}: {answer}");
        assert_eq!(answer["applied_position"], 1_200, "{model}");
        assert!(answer["report"].is_object(), "{model}: {answer}");
        let text = answer["report"].to_string();
        assert!(
            text.contains("2024-01-01T00:00:00Z"),
            "{model}: as_of not applied: {text}"
        );
    }
    // The same query again is answered from the answer cache, byte for byte.
    let cached_query = "/v1/read-models/pipeline?as_of=2024-01-01T00:00:00Z&limit=5";
    let (first_status, first) = raw_get(&server, cached_query).await;
    let (again_status, again) = raw_get(&server, cached_query).await;
    assert_eq!(first_status, "crm-answer-cache; hit", "{first}");
    assert_eq!(again_status, "crm-answer-cache; hit");
    assert_eq!(first, again);
    let (other_status, _) = raw_get(
        &server,
        "/v1/read-models/pipeline?as_of=2024-01-01T00:00:00Z&limit=6",
    )
    .await;
    assert_eq!(other_status, "crm-answer-cache; fwd=miss; stored");

    // The 600 contracts are in EUR, the reporting currency is USD: counted apart, not converted.
    let (_, answer) = server
        .get("/v1/read-models/lifetime-value?as_of=2024-01-01T00:00:00Z")
        .await;
    assert_eq!(answer["report"]["other_currency"], 600, "{answer}");

    // A bad parameter is a 400 problem; a new event reaches the read models.
    let (status, problem) = server.get("/v1/read-models/churn?as_of=yesterday").await;
    common::assert_problem(status, &problem, 400, "malformed-request");
    assert_eq!(
        server
            .command("account", &open_account("late"), &[])
            .await
            .0,
        200
    );
    let mut seen = false;
    for _ in 0..600 {
        let (_, answer) = server.get("/v1/read-models/pipeline").await;
        if answer["applied_position"] == 1_201 {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(seen, "the new event never reached the pipeline model");
    // The cached answer was for position 1,200: the new event makes the query compute anew.
    let (status, body) = raw_get(&server, cached_query).await;
    assert_eq!(status, "crm-answer-cache; fwd=miss; stored");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["applied_position"], 1_201, "{answer}");
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("crm_projection_lag_events{projection=\"pipeline\"}"),
        "{metrics}"
    );
    for result in ["hit", "miss"] {
        let counter =
            format!("crm_answer_cache_requests_total{{route=\"pipeline\",result=\"{result}\"}}");
        assert!(
            metrics.contains(&counter),
            "{counter} missing from\n{metrics}"
        );
    }
}

const WIN_RATE_V3: &str = r#"
id = "sales.win_rate"
version = 3
name = "Win rate, new deals only"
domain = "sales"
unit = "%"
kind = "flow"
formula = "won / decided, kind = new"
[dims]
owner = "stream.owner"
[facts]
events = ["OpportunityWon", "OpportunityLost"]
where = "stream.kind == 'new'"
[measure]
type = "simple"
agg = "share"
when = "event.type == 'OpportunityWon'"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_routes_list_define_evaluate_and_explain() {
    let server = Server::start();
    let post = |body: String, content_type: &'static str| {
        let request = server
            .client
            .post(server.url("/v1/metrics"))
            .header("content-type", content_type)
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };

    let (status, list) = server.get("/v1/metrics").await;
    assert_eq!(status, 200, "{list}");
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"sales.win_rate"), "{ids:?}");

    // The latest version, asked twice: the second answer comes from the answer cache.
    let latest = "/v1/metrics/sales.win_rate?period=all";
    let (_, before) = raw_get(&server, latest).await;
    let (cache_status, again) = raw_get(&server, latest).await;
    assert_eq!(cache_status, "crm-answer-cache; hit");
    assert_eq!(before, again);
    let before: Value = serde_json::from_str(&before).unwrap();

    // Define: 201, then the same text again 200, another spec for the same version 409.
    let (status, defined) = post(WIN_RATE_V3.to_owned(), "application/toml").await;
    assert_eq!(status, 201, "{defined}");
    assert_eq!(defined["version"], 3);
    assert_eq!(defined["outcome"], "appended");
    let (status, again) = post(WIN_RATE_V3.to_owned(), "text/plain").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["outcome"], "already_defined");
    let changed = WIN_RATE_V3.replace("stream.kind == 'new'", "stream.kind == 'expansion'");
    let (status, conflict) = post(changed, "application/toml").await;
    assert_problem(status, &conflict, 409, "version-conflict");
    let invalid = WIN_RATE_V3.replace("agg = \"share\"", "agg = \"sharing\"");
    let (status, refused) = post(
        invalid.replace("version = 3", "version = 4"),
        "application/toml",
    )
    .await;
    let detail = assert_problem(status, &refused, 422, "invalid-definition");
    assert!(detail.contains("agg"), "{detail}");
    let (status, json) = post("{}".to_owned(), "application/json").await;
    assert_problem(status, &json, 415, "unsupported-media-type");

    // The definition moved the log's head: the same question is computed again, at the
    // new head.
    let (cache_status, after) = raw_get(&server, latest).await;
    assert_eq!(cache_status, "crm-answer-cache; fwd=miss; stored");
    let after: Value = serde_json::from_str(&after).unwrap();
    assert!(
        after["log"]["position"].as_u64() > before["log"]["position"].as_u64(),
        "{before} then {after}"
    );

    // Evaluate on a log without deals: no data, never a zero.
    let (status, ev) = server
        .get("/v1/metrics/sales.win_rate?version=3&period=all")
        .await;
    assert_eq!(status, 200, "{ev}");
    assert_eq!(ev["metric"]["version"], 3);
    assert_eq!(ev["status"], "no_data", "{ev}");
    let (status, cmp) = server
        .get("/v1/metrics/sales.win_rate/compare?versions=1,3")
        .await;
    assert_eq!(status, 200, "{cmp}");
    assert_eq!(cmp["metrics"].as_array().unwrap().len(), 2);
    let (status, x) = server
        .get("/v1/metrics/sales.win_rate/explain?decision=included&limit=5")
        .await;
    assert_eq!(status, 200, "{x}");
    assert_eq!(x["total_rows"], 0);
    let csv = server
        .client
        .get(server.url("/v1/metrics/sales.win_rate/explain"))
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status().as_u16(), 200);
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert!(csv.text().await.unwrap().starts_with("position,"));
    // The same URI without `Accept: text/csv` is JSON, not the cached CSV.
    let (_, json_body) = raw_get(&server, "/v1/metrics/sales.win_rate/explain").await;
    let x: Value = serde_json::from_str(&json_body).unwrap();
    assert_eq!(x["total_rows"], 0, "{json_body}");
    let (status, d) = server
        .get("/v1/metrics/sales.win_rate/diff?known_at_1=0&known_at_2=2026-01-01T00:00:00Z")
        .await;
    assert_eq!(status, 200, "{d}");

    // Errors: unknown metric or version 404, bad query 400.
    let (status, body) = server.get("/v1/metrics/no.such_metric").await;
    assert_problem(status, &body, 404, "not-found");
    let (status, body) = server.get("/v1/metrics/sales.win_rate?version=99").await;
    assert_problem(status, &body, 404, "not-found");
    let (status, body) = server
        .get("/v1/metrics/sales.win_rate?period=fortnight")
        .await;
    assert_problem(status, &body, 400, "malformed-request");
    let (status, body) = server
        .get("/v1/metrics/sales.win_rate/compare?versions=one")
        .await;
    assert_problem(status, &body, 400, "malformed-request");
    let (status, body) = server
        .get("/v1/metrics/sales.win_rate/explain?format=xml")
        .await;
    assert_problem(status, &body, 400, "malformed-request");
}

/// GET `path`: the `Cache-Status` header and the body, asserting a 200.
async fn raw_get(server: &Server, path: &str) -> (String, String) {
    let response = server.client.get(server.url(path)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200, "{path}");
    let cache_status = response
        .headers()
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (cache_status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_questions_take_expressions_over_custom_attributes() {
    let server = Server::start();
    assert_eq!(
        server
            .command("account", &open_account("acme"), &[])
            .await
            .0,
        200
    );
    // Six deals: list "fair" (three, two won) and "web" (three, one won); sizes 1..6.
    for i in 1..=6_i64 {
        let id = format!("d{i}");
        let mut open = open_opportunity(&id, "acme", i * 100_000);
        open["attributes"] = json!({ "list": if i <= 3 { "fair" } else { "web" }, "size": i });
        let (status, _, body) = server.command("opportunity", &open, &[]).await;
        assert_eq!(status, 200, "{body}");
        let close = if matches!(i, 1 | 2 | 4) {
            json!({
                "type": "WinOpportunity", "opportunity_id": id,
                "amount": { "minor_units": i * 100_000, "currency": "USD" },
                "list_price": null, "discount": null, "competitor": null,
                "occurred_at": "2026-03-01T00:00:00Z",
            })
        } else {
            json!({
                "type": "LoseOpportunity", "opportunity_id": id, "reason": "price",
                "competitor": null, "occurred_at": "2026-03-01T00:00:00Z",
            })
        };
        let (status, _, body) = server.command("opportunity", &close, &[]).await;
        assert_eq!(status, 200, "{body}");
    }
    let cells = |ev: &Value, dim: &str| -> Vec<(String, Value, Value)> {
        ev["figures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["dims"][dim].as_str().unwrap_or("").to_owned(),
                    f["numerator"].clone(),
                    f["denominator"].clone(),
                )
            })
            .collect()
    };
    // By a custom attribute, no definition needed.
    let (status, by_list) = server.get("/v1/metrics/sales.win_rate?by=attr.list").await;
    assert_eq!(status, 200, "{by_list}");
    assert_eq!(
        cells(&by_list, "attr.list"),
        vec![
            ("fair".into(), json!(2), json!(3)),
            ("web".into(), json!(1), json!(3))
        ]
    );
    // An expression as the condition (URL-encoded), and a declared dimension as DIM=VALUE.
    let (status, big) = server
        .get("/v1/metrics/sales.win_rate?where=attr.size%20%3E%3D%203")
        .await;
    assert_eq!(status, 200, "{big}");
    assert_eq!(cells(&big, "-"), vec![(String::new(), json!(1), json!(4))]);
    let (status, both) = server
        .get("/v1/metrics/sales.win_rate?where=attr.size%20%3E%3D%203&where=kind=new&by=attr.list")
        .await;
    assert_eq!(status, 200, "{both}");
    assert_eq!(
        cells(&both, "attr.list"),
        vec![
            ("fair".into(), json!(0), json!(1)),
            ("web".into(), json!(1), json!(3))
        ]
    );
    // A field the facts do not have is refused with the nearest name.
    let (status, body) = server
        .get("/v1/metrics/sales.win_rate?where=payload.amonut%20%3E%200")
        .await;
    let detail = assert_problem(status, &body, 400, "malformed-request");
    assert!(detail.contains("amount"), "{detail}");
}
