//! Who may call what, tested through the router as a client sees it: every route of the API
//! document declares a permission; the role × route matrix (allowed → neither 401 nor 403,
//! denied → 403 with a problem document, no credential → 401 with `WWW-Authenticate`);
//! the actor is the authenticated principal, never `X-Actor`; scopes; OIDC bearer tokens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use base64::Engine;
use chrono::Utc;
use crm_app::access::{local_principal, TokenRegister, TokenRequest};
use crm_app::config::OidcSettings;
use crm_domain::access::{Permission, Role};
use crm_domain::Registry;
use crm_eventstore::{AnyStore, EventStore, MemoryStore, Position};
use crm_http::auth::oidc::OidcVerifier;
use crm_http::auth::{Access, AuthPolicy, ROUTES};
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

fn app(store: &AnyStore, policy: AuthPolicy) -> Router {
    crm_http::router_full(store.clone(), None, Registry::builtin(), policy).0
}

async fn token(store: &AnyStore, name: &str, roles: &[Role], scope: &[&str]) -> String {
    TokenRegister::new(store.clone())
        .grant(
            TokenRequest {
                name: name.into(),
                roles: roles.to_vec(),
                scope: scope.iter().map(|s| (*s).to_owned()).collect(),
                expires_at: None,
            },
            &local_principal(),
            Utc::now(),
        )
        .await
        .unwrap()
        .token
}

/// A concrete request for a route template, with a body where the route takes one.
fn request(method: &str, template: &str, bearer: Option<&str>) -> Request<Body> {
    let path = template
        .replace("{category}", "account")
        .replace("{stream_id}", "account-acme")
        .replace("{id}", "sales.win_rate")
        .replace("{token}", "nobody")
        .replace("{asset}", "cockpit.js");
    let mut builder = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(path);
    if let Some(bearer) = bearer {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {bearer}"));
    }
    let body = match (method, template) {
        ("POST", "/v1/aggregates/{category}/commands") => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            json!({"type": "OpenAccount", "account_id": "acme", "name": "Acme", "segment": "smb", "region": "EU", "owner": "agent-1", "is_internal": false, "is_test": false, "occurred_at": "2026-01-01T00:00:00Z"}).to_string()
        }
        ("POST", "/v1/auth/tokens") => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            json!({"name": format!("made-{}", uuid::Uuid::now_v7().simple()), "roles": ["viewer"]})
                .to_string()
        }
        ("POST", "/v1/metrics") => {
            builder = builder.header(header::CONTENT_TYPE, "application/toml");
            "id = \"x\"".to_owned()
        }
        _ => String::new(),
    };
    builder.body(Body::from(body)).unwrap()
}

async fn json_body(response: axum::response::Response) -> Value {
    let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

#[test]
fn every_route_of_the_api_document_declares_a_permission_and_no_other_is_declared() {
    let store = AnyStore::from(MemoryStore::new());
    let (_, openapi, _stop) = crm_http::router(store, None);
    let mut documented = Vec::new();
    for (path, item) in &openapi.paths.paths {
        for (method, present) in [
            ("GET", item.get.is_some()),
            ("POST", item.post.is_some()),
            ("PUT", item.put.is_some()),
            ("DELETE", item.delete.is_some()),
            ("PATCH", item.patch.is_some()),
        ] {
            if present {
                documented.push((method.to_owned(), path.clone()));
            }
        }
    }
    assert!(documented.len() >= 20, "{documented:?}");
    for (method, path) in &documented {
        assert!(
            crm_http::auth::access(&Method::from_bytes(method.as_bytes()).unwrap(), path).is_some(),
            "{method} {path} declares no permission in crm_http::auth::ROUTES"
        );
    }
    for (method, path, _) in ROUTES {
        assert!(
            documented.contains(&((*method).to_owned(), (*path).to_owned())),
            "ROUTES lists {method} {path}, which the API document does not have"
        );
    }
    // The document says so too: a bearer scheme, required everywhere but the probes.
    let doc = serde_json::to_value(&openapi).unwrap();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([{}]));
    assert_eq!(
        doc["paths"]["/v1/events"]["get"]["security"],
        json!([{"bearer": []}])
    );
    assert!(doc["paths"]["/v1/events"]["get"]["responses"]["403"].is_object());
}

#[tokio::test]
async fn the_role_by_route_matrix_holds() {
    let store = AnyStore::from(MemoryStore::new());
    let mut tokens = BTreeMap::new();
    for role in Role::ALL {
        tokens.insert(role, token(&store, role.name(), &[role], &[]).await);
    }
    let app = app(&store, AuthPolicy::tokens_required());
    let mut checked = 0;
    for (method, template, access) in ROUTES {
        // No credential: 401 with a challenge, except for public routes.
        let response = app
            .clone()
            .oneshot(request(method, template, None))
            .await
            .unwrap();
        match access {
            Access::Public => assert_eq!(response.status(), StatusCode::OK, "{method} {template}"),
            Access::Requires(_) => {
                assert_eq!(
                    response.status(),
                    StatusCode::UNAUTHORIZED,
                    "{method} {template} without a credential"
                );
                assert_eq!(
                    response.headers()[header::WWW_AUTHENTICATE],
                    "Bearer realm=\"crm\""
                );
                assert_eq!(
                    response.headers()[header::CONTENT_TYPE],
                    "application/problem+json"
                );
            }
        }
        let Access::Requires(permission) = access else {
            continue;
        };
        for role in Role::ALL {
            let response = app
                .clone()
                .oneshot(request(method, template, Some(&tokens[&role])))
                .await
                .unwrap();
            let status = response.status();
            if role.permissions().contains(permission) {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{role} may call {method} {template} but got {status}: {}",
                    json_body(response).await
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{role} on {method} {template}"
                );
                let problem = json_body(response).await;
                assert_eq!(problem["type"], "urn:crm:problem:forbidden");
                let detail = problem["detail"].as_str().unwrap();
                assert!(detail.contains(permission.name()), "{detail}");
                assert!(
                    detail.contains(&format!("token:{}", role.name())),
                    "{detail}"
                );
            }
            checked += 1;
        }
    }
    let public = ROUTES
        .iter()
        .filter(|(_, _, a)| *a == Access::Public)
        .count();
    assert_eq!(public, 4);
    assert_eq!(checked, (ROUTES.len() - public) * Role::ALL.len());
}

#[tokio::test]
async fn a_writer_cannot_forge_the_actor_x_actor_is_recorded_beside_it() {
    let store = AnyStore::from(MemoryStore::new());
    let writer = token(&store, "crm-sync", &[Role::Writer], &[]).await;
    let app = app(&store, AuthPolicy::tokens_required());
    let mut req = request("POST", "/v1/aggregates/{category}/commands", Some(&writer));
    req.headers_mut()
        .insert("x-actor", "import:maven-crm".parse().unwrap());
    let response = app.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let events = store.read_all(Position(1), 100).await.unwrap();
    let opened = events
        .iter()
        .find(|e| e.event_type == "AccountOpened")
        .unwrap();
    assert_eq!(opened.actor, "token:crm-sync");
    let metadata: Value = serde_json::from_slice(&opened.metadata).unwrap();
    assert_eq!(metadata["request"]["on_behalf_of"], "import:maven-crm");

    // A role without act_on_behalf may not send X-Actor at all (an admin may).
    assert!(!Role::Analyst
        .permissions()
        .contains(&Permission::ActOnBehalf));
    let who = app
        .clone()
        .oneshot(request("GET", "/v1/auth/whoami", Some(&writer)))
        .await
        .unwrap();
    assert_eq!(json_body(who).await["name"], "token:crm-sync");
}

#[tokio::test]
async fn a_scoped_token_writes_and_reads_only_its_categories() {
    let store = AnyStore::from(MemoryStore::new());
    let scoped = token(&store, "leads-only", &[Role::Writer], &["lead"]).await;
    let app = app(&store, AuthPolicy::tokens_required());
    let response = app
        .clone()
        .oneshot(request(
            "POST",
            "/v1/aggregates/{category}/commands",
            Some(&scoped),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(json_body(response).await["detail"]
        .as_str()
        .unwrap()
        .contains("scoped to lead"));
    for path in ["/v1/streams/account-acme", "/v1/events"] {
        let response = app
            .clone()
            .oneshot(request("GET", path, Some(&scoped)))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(
        store.head().position,
        Position(1),
        "only the grant is in the log"
    );
}

#[tokio::test]
async fn without_required_authentication_the_caller_is_the_loopback_principal() {
    let store = AnyStore::from(MemoryStore::new());
    let app = app(&store, AuthPolicy::open());
    let mut req = request("POST", "/v1/aggregates/{category}/commands", None);
    req.headers_mut()
        .insert("x-actor", "someone".parse().unwrap());
    assert_eq!(app.oneshot(req).await.unwrap().status(), StatusCode::OK);
    let events = store.read_all(Position(1), 10).await.unwrap();
    assert_eq!(events[0].actor, crm_http::auth::OPEN_PRINCIPAL);
}

// ---- OIDC ----

const ISSUER: &str = "https://id.example.test/realms/crm";
const AUDIENCE: &str = "crm-api";

/// An Ed25519 key: its PKCS#8 DER (to sign) and its JWK (to verify).
fn ed25519_key(seed: u8, kid: &str) -> (jsonwebtoken::EncodingKey, Value) {
    let secret = [seed; 32];
    let mut der = hex_bytes("302e020100300506032b657004220420");
    der.extend_from_slice(&secret);
    let public = ed25519_dalek::SigningKey::from_bytes(&secret)
        .verifying_key()
        .to_bytes();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public);
    (
        jsonwebtoken::EncodingKey::from_ed_der(&der),
        json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}),
    )
}

fn hex_bytes(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn jwt(key: &jsonwebtoken::EncodingKey, kid: &str, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn claims(sub: &str, roles: Value, exp_in_s: i64) -> Value {
    let now = Utc::now().timestamp();
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "exp": now + exp_in_s, "iat": now, "groups": roles})
}

fn settings(jwks_file: Option<std::path::PathBuf>, jwks_url: Option<String>) -> OidcSettings {
    OidcSettings {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        jwks_file,
        jwks_url,
        roles_claim: "groups".into(),
        algorithms: vec!["EdDSA".into()],
        role_map: BTreeMap::from([("crm-analysts".to_owned(), Role::Analyst)]),
    }
}

async fn status_and_detail(app: &Router, path: &str, bearer: &str) -> (StatusCode, Value) {
    let response = app
        .clone()
        .oneshot(request("GET", path, Some(bearer)))
        .await
        .unwrap();
    let status = response.status();
    (status, json_body(response).await)
}

#[tokio::test]
async fn oidc_tokens_are_verified_against_the_issuers_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (key, jwk) = ed25519_key(7, "k1");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [jwk]}).to_string()).unwrap();
    let oidc = OidcVerifier::start(settings(Some(jwks), None))
        .await
        .unwrap();
    let store = AnyStore::from(MemoryStore::new());
    let policy = AuthPolicy {
        required: true,
        oidc: Some(Arc::new(oidc)),
        ..AuthPolicy::default()
    };
    let app = app(&store, policy);

    // A good token: the mapped role, the subject as principal.
    let good = jwt(
        &key,
        "k1",
        &claims("alice", json!(["crm-analysts", "staff"]), 300),
    );
    let (status, who) = status_and_detail(&app, "/v1/auth/whoami", &good).await;
    assert_eq!(status, StatusCode::OK, "{who}");
    assert_eq!(who["name"], "oidc:alice");
    assert_eq!(who["roles"], json!(["analyst"]));
    assert_eq!(
        status_and_detail(&app, "/v1/metrics", &good).await.0,
        StatusCode::OK
    );
    assert_eq!(
        status_and_detail(&app, "/v1/events", &good).await.0,
        StatusCode::FORBIDDEN
    );

    // Refused: expired, wrong audience, wrong issuer, another key, tampered, HMAC, no role.
    let expired = jwt(&key, "k1", &claims("alice", json!(["analyst"]), -3600));
    let mut other_aud = claims("alice", json!(["analyst"]), 300);
    other_aud["aud"] = json!("someone-else");
    let mut other_iss = claims("alice", json!(["analyst"]), 300);
    other_iss["iss"] = json!("https://evil.example.test");
    let (stranger, _) = ed25519_key(9, "k1");
    let forged = jwt(&stranger, "k1", &claims("mallory", json!(["admin"]), 300));
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(claims("alice", json!(["admin"]), 300).to_string());
    let tampered = parts.join(".");
    let hmac = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims("alice", json!(["admin"]), 300),
        &jsonwebtoken::EncodingKey::from_secret(b"guessable").unwrap(),
    )
    .unwrap();
    for (what, bad) in [
        ("expired", expired),
        ("audience", jwt(&key, "k1", &other_aud)),
        ("issuer", jwt(&key, "k1", &other_iss)),
        ("another key", forged),
        ("tampered", tampered),
        ("HS256", hmac),
        (
            "unknown kid",
            jwt(&key, "k2", &claims("alice", json!(["admin"]), 300)),
        ),
        ("not a JWT", "abc.def".to_owned()),
    ] {
        let (status, problem) = status_and_detail(&app, "/v1/auth/whoami", &bad).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {problem}");
    }
    let no_role = jwt(&key, "k1", &claims("bob", json!(["staff"]), 300));
    let (status, problem) = status_and_detail(&app, "/v1/auth/whoami", &no_role).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("no role"));
}

#[tokio::test]
async fn a_key_set_from_a_url_is_refreshed_when_an_unknown_key_appears() {
    let (key1, jwk1) = ed25519_key(1, "k1");
    let (key2, jwk2) = ed25519_key(2, "k2");
    let served = Arc::new(std::sync::Mutex::new(json!({"keys": [jwk1]})));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shared = Arc::clone(&served);
    let jwks_app = Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let shared = Arc::clone(&shared);
            async move { axum::Json(shared.lock().unwrap().clone()) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, jwks_app).await.unwrap() });
    let oidc = OidcVerifier::start_with(
        settings(None, Some(format!("http://{address}/jwks"))),
        Duration::ZERO,
    )
    .await
    .unwrap();
    let first = jwt(&key1, "k1", &claims("alice", json!(["viewer"]), 300));
    assert_eq!(oidc.verify(&first).await.unwrap().name, "oidc:alice");
    // The issuer rotates to k2: a token with the new kid makes the verifier re-read the set.
    *served.lock().unwrap() = json!({"keys": [jwk2]});
    let second = jwt(&key2, "k2", &claims("bob", json!(["viewer"]), 300));
    assert_eq!(oidc.verify(&second).await.unwrap().name, "oidc:bob");
}

#[tokio::test]
async fn oidc_settings_that_cannot_be_right_are_refused_at_start() {
    let mut hs = settings(Some("/nonexistent".into()), None);
    hs.algorithms = vec!["HS256".into()];
    let e = OidcVerifier::start(hs).await.unwrap_err().to_string();
    assert!(e.contains("HS256"), "{e}");
    let missing = OidcVerifier::start(settings(Some("/nonexistent/jwks.json".into()), None))
        .await
        .unwrap_err()
        .to_string();
    assert!(missing.contains("jwks_file"), "{missing}");
}

#[tokio::test]
async fn personal_fields_are_masked_for_roles_without_read_personal_data() {
    let store = AnyStore::from(MemoryStore::new());
    let writer = token(&store, "w", &[Role::Writer], &[]).await;
    let auditor = token(&store, "a", &[Role::Auditor], &[]).await;
    let app = app(&store, AuthPolicy::tokens_required());
    let open = app
        .clone()
        .oneshot(request(
            "POST",
            "/v1/aggregates/{category}/commands",
            Some(&writer),
        ))
        .await
        .unwrap();
    assert_eq!(open.status(), StatusCode::OK);
    let marker = "Zebulon Quimby-7f3a";
    let add = Request::builder()
        .method(Method::POST)
        .uri("/v1/aggregates/contact/commands")
        .header(header::AUTHORIZATION, format!("Bearer {writer}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"type": "AddContact", "contact_id": "c1", "account_id": "acme", "role": "champion",
                   "personal": {"full_name": marker, "email": "zq@example.test", "phone": null},
                   "is_test": false, "occurred_at": "2026-01-02T00:00:00Z"})
            .to_string(),
        ))
        .unwrap();
    let added = app.clone().oneshot(add).await.unwrap();
    assert_eq!(added.status(), StatusCode::OK, "{}", json_body(added).await);
    for (who, bearer, plain) in [("writer", &writer, true), ("auditor", &auditor, false)] {
        for path in ["/v1/streams/contact-c1", "/v1/events?category=contact"] {
            let response = app
                .clone()
                .oneshot(request("GET", path, Some(bearer)))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{who} {path}");
            let page = json_body(response).await;
            let personal = &page["events"][0]["payload"]["personal"];
            if plain {
                assert_eq!(personal["full_name"], marker, "{who} {path}");
            } else {
                assert_eq!(
                    personal,
                    &json!(crm_domain::personal::Marker::Masked.as_str()),
                    "{who} {path}"
                );
                assert!(!page.to_string().contains(marker), "{who} {path}");
                assert!(!page.to_string().contains("zq@example.test"));
            }
        }
    }
}

#[tokio::test]
async fn routes_made_public_by_configuration_answer_an_anonymous_caller() {
    let store = AnyStore::from(MemoryStore::new());
    let settings = crm_app::config::AuthSettings {
        required: Some(true),
        public: vec!["/metrics".into(), "/v1/events".into()],
        ..Default::default()
    };
    let policy = AuthPolicy::resolve(&settings, &store, "0.0.0.0:8080".parse().unwrap())
        .await
        .unwrap();
    let app = app(&store, policy);
    for path in ["/metrics", "/v1/events"] {
        let response = app
            .clone()
            .oneshot(request("GET", path, None))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    // Everything else still needs a credential.
    let response = app
        .clone()
        .oneshot(request("GET", "/v1/streams/{stream_id}", None))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // A path that is not a read route is refused at start, with the nearest name.
    for (bad, hint) in [
        ("/metric", Some("/metrics")),
        ("/v1/aggregates/{category}/commands", None),
    ] {
        let settings = crm_app::config::AuthSettings {
            public: vec![bad.into()],
            ..Default::default()
        };
        let e = AuthPolicy::resolve(&settings, &store, "127.0.0.1:8080".parse().unwrap())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(bad), "{e}");
        if let Some(hint) = hint {
            assert!(e.contains(&format!("did you mean `{hint}`")), "{e}");
        }
    }
}
