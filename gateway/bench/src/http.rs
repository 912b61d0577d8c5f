//! `crm-bench http`: a loopback load generator for the HTTP API, in one process and one run.
//!
//! It opens a scratch log, serves the API on an ephemeral loopback port and measures, with the
//! same number of concurrent clients:
//! 1. appends through the store alone (`EventStore::append`, one event each),
//! 2. commands in process (`CommandService::execute`: load, decide, append),
//! 3. commands through HTTP (`POST /v1/aggregates/account/commands`),
//! 4. stream reads through HTTP (`GET /v1/streams/{id}`),
//! 5. global log pages through HTTP (`GET /v1/events?from=..&limit=100`),
//! 6. a read-model query through HTTP (`GET /v1/read-models/pipeline`) over the bundled Maven
//!    CRM data set (imported into the scratch log first, when its directory is given), the
//!    same query repeated (served by the answer cache after the first) and
//! 7. a new query on every request (every report computed),
//! 8. a metric evaluation through HTTP (`GET /v1/metrics/sales.win_rate`), repeated, and
//! 9. a new one on every request (each computed from the view loaded for the head), with
//!    fewer requests.
//!
//! Each client works on its own streams, so no request conflicts. Latencies are per request;
//! the figures are percentiles, not averages.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use crm_eventstore::{
    AnyStore, EventId, EventStore, ExpectedVersion, ProposedEvent, SledStore, StreamId,
};
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::task::JoinSet;
use uuid::Uuid;

use crm_app::commands::{CommandRequest, CommandService};
use crm_http::read_models::Projections;

use crate::stats::quantile_ms;
use crm_projections::ReadModelConfig;

/// Concurrent clients at most.
pub const CLIENTS_MAX: usize = 256;
/// Requests per client per scenario at most.
pub const REQUESTS_PER_CLIENT_MAX: usize = 100_000;
/// Streams each client spreads its commands over.
pub const STREAMS_PER_CLIENT: usize = 16;

/// How to run the load.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Concurrent clients (default 16).
    pub clients: usize,
    /// Requests per client in each scenario.
    pub requests: usize,
    /// Scratch directory (created, then removed).
    pub scratch: PathBuf,
    /// The Maven CRM data set to import for the read-model scenario (skipped if `None`).
    pub maven_crm: Option<PathBuf>,
}

/// Why the load generator failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// Setting up the scratch log or server failed.
    #[error("could not set up the benchmark: {0}")]
    Setup(String),
    /// A request failed: the benchmark measures successes only.
    #[error("a request failed during the benchmark: {0}")]
    Request(String),
}

fn setup(e: impl fmt::Display) -> BenchError {
    BenchError::Setup(e.to_string())
}

fn request(e: impl fmt::Display) -> BenchError {
    BenchError::Request(e.to_string())
}

/// One scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// What was measured.
    pub name: String,
    /// Requests completed.
    pub requests: usize,
    /// Requests (or appends) per second.
    pub per_second: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

/// Every scenario of one run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Concurrent clients.
    pub clients: usize,
    /// The scenarios, in run order.
    pub scenarios: Vec<Scenario>,
    /// What authentication costs per request, measured in this run.
    pub authentication: Option<AuthCost>,
}

/// The cost of authentication: the same cheap route served without authentication and
/// with an API token checked on every request, in one run.
#[derive(Debug, Clone, Serialize)]
pub struct AuthCost {
    /// p50 with a token / p50 without.
    pub p50_ratio: f64,
    /// p99 with a token / p99 without.
    pub p99_ratio: f64,
    /// p50 with a token minus p50 without, ms.
    pub p50_added_ms: f64,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} concurrent clients, one event per append",
            self.clients
        )?;
        writeln!(
            f,
            "{:<60} {:>9} {:>10} {:>8} {:>8}",
            "scenario", "requests", "per s", "p50 ms", "p99 ms"
        )?;
        for s in &self.scenarios {
            writeln!(
                f,
                "{:<60} {:>9} {:>10.0} {:>8.3} {:>8.3}",
                s.name, s.requests, s.per_second, s.p50_ms, s.p99_ms
            )?;
        }
        if let Some(a) = &self.authentication {
            writeln!(
                f,
                "authentication (API token) per request: p50 x{:.2}, p99 x{:.2} ({:+.3} ms at p50)",
                a.p50_ratio, a.p99_ratio, a.p50_added_ms
            )?;
        }
        Ok(())
    }
}

fn scenario(name: &str, mut latencies: Vec<Duration>, elapsed: Duration) -> Scenario {
    latencies.sort_unstable();
    #[allow(clippy::cast_precision_loss)]
    let per_second = latencies.len() as f64 / elapsed.as_secs_f64().max(f64::EPSILON);
    Scenario {
        name: name.to_owned(),
        requests: latencies.len(),
        per_second,
        p50_ms: quantile_ms(&latencies, 0.50),
        p99_ms: quantile_ms(&latencies, 0.99),
    }
}

fn account(client: usize, i: usize) -> String {
    format!("bench-{client}-{}", i % STREAMS_PER_CLIENT)
}

fn open_account(id: &str) -> Map<String, Value> {
    let body = json!({
        "type": "OpenAccount", "account_id": id, "name": "Bench Ltd", "segment": "smb",
        "region": "emea", "industry": null, "owner": "bench-owner", "is_internal": false,
        "is_test": true, "occurred_at": Utc::now(),
    });
    body.as_object().cloned().unwrap_or_default()
}

/// A segment change; the segment is unique per `i`, so every command changes something.
fn change_segment(id: &str, i: usize) -> Map<String, Value> {
    let body = json!({
        "type": "ChangeAccountSegment", "account_id": id, "to": format!("segment-{i}"),
        "occurred_at": Utc::now(),
    });
    body.as_object().cloned().unwrap_or_default()
}

fn command(body: Map<String, Value>) -> CommandRequest {
    CommandRequest {
        category: "account".to_owned(),
        body,
        if_match: None,
        idempotency_key: None,
        actor: "bench".to_owned(),
        on_behalf_of: None,
        correlation_id: None,
    }
}

/// Runs `clients` tasks of `requests` calls of `call(client, i)`; latencies and wall time.
/// Metric evaluations replay the log: this many times fewer requests than the other
/// scenarios.
const METRIC_REQUESTS_DIVISOR: usize = 50;
/// Requests per client in a metric scenario at most (`REQUESTS_PER_CLIENT_MAX` / the divisor).
const METRIC_REQUESTS_PER_CLIENT_MAX: usize = REQUESTS_PER_CLIENT_MAX / METRIC_REQUESTS_DIVISOR;

/// `minutes` before 2018-01-01T00:00:00Z, as RFC 3339 (distinct queries for the
/// uncached scenarios).
fn minutes_before_2018(minutes: usize) -> String {
    let end_of_2017 = chrono::DateTime::<Utc>::from_timestamp(1_514_764_800, 0).unwrap_or_default();
    let at = end_of_2017 - chrono::Duration::minutes(i64::try_from(minutes).unwrap_or(0));
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A load call that GETs the path `path(client, i)` and fails on a non-2xx answer.
fn get_ok(
    client: &reqwest::Client,
    base: &str,
    path: fn(usize, usize) -> String,
) -> impl Fn(
    usize,
    usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BenchError>> + Send>>
       + Clone
       + Send
       + 'static {
    let (client, base) = (client.clone(), base.to_owned());
    move |c, i| {
        let (client, url) = (client.clone(), format!("{base}{}", path(c, i)));
        Box::pin(async move {
            let response = client.get(&url).send().await.map_err(request)?;
            if !response.status().is_success() {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                return Err(request(format!("GET {url}: {status} {body}")));
            }
            response.bytes().await.map_err(request)?;
            Ok(())
        })
    }
}

async fn load<F, Fut>(
    clients: usize,
    requests: usize,
    call: F,
) -> Result<(Vec<Duration>, Duration), BenchError>
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), BenchError>> + Send,
{
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for client in 0..clients {
        let call = call.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(requests);
            for i in 0..requests {
                let t = Instant::now();
                call(client, i).await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, BenchError>(latencies)
        });
    }
    let mut all = Vec::with_capacity(clients * requests);
    while let Some(joined) = tasks.join_next().await {
        all.extend(joined.map_err(request)??);
    }
    Ok((all, started.elapsed()))
}

/// Runs the whole benchmark.
///
/// # Errors
/// [`BenchError`] when the scratch log or server cannot be set up or a request fails.
pub async fn http(options: &BenchOptions) -> Result<BenchReport, BenchError> {
    let clients = options.clients.clamp(1, CLIENTS_MAX);
    let requests = options
        .requests
        .clamp(STREAMS_PER_CLIENT, REQUESTS_PER_CLIENT_MAX);
    std::fs::create_dir_all(&options.scratch).map_err(setup)?;
    let store = AnyStore::from(SledStore::open(options.scratch.join("log")).map_err(setup)?);
    if let Some(dir) = &options.maven_crm {
        let plan = crm_import::maven::plan(dir).map_err(setup)?;
        crm_import::run(&store, plan, crm_import::RunOptions::default())
            .await
            .map_err(setup)?;
    }
    let projections = Projections::start(
        store.clone(),
        &options.scratch.join("projections"),
        &ReadModelConfig::default(),
    )
    .map_err(setup)?;
    let with_data = options.maven_crm.is_some();
    let result = run(&store, &projections, clients, requests, with_data).await;
    let _ = projections.stop().await;
    store.close().await;
    let _ = std::fs::remove_dir_all(&options.scratch);
    result
}

async fn run(
    store: &AnyStore,
    projections: &Projections,
    clients: usize,
    requests: usize,
    with_data: bool,
) -> Result<BenchReport, BenchError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(setup)?;
    let base = format!("http://{}", listener.local_addr().map_err(setup)?);
    let (app, _, stop) = crm_http::router(store.clone(), Some(projections.clone()));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients * 2)
        .build()
        .map_err(setup)?;
    let mut scenarios = Vec::new();

    // 1. The store alone.
    let raw = store.clone();
    let (lat, took) = load(clients, requests, move |c, i| {
        let store = raw.clone();
        async move {
            let stream = StreamId::new(format!("benchraw-{c}")).map_err(request)?;
            let event = ProposedEvent {
                event_id: EventId(Uuid::now_v7()),
                event_type: "AccountSegmentChanged".to_owned(),
                schema_version: 1,
                occurred_at: Utc::now(),
                causation_id: None,
                correlation_id: None,
                actor: "bench".to_owned(),
                metadata: br#"{"request":{"command":"ChangeAccountSegment"}}"#.to_vec(),
                payload: format!(r#"{{"account_id":"bench-{c}-{i}","from":"smb","to":"enterprise","occurred_at":"2026-01-01T00:00:00Z"}}"#).into_bytes(),
            };
            let expected = ExpectedVersion::Exact(crm_eventstore::StreamVersion(i as u64));
            store.append(&stream, expected, vec![event]).await.map_err(request)?;
            Ok(())
        }
    })
    .await?;
    scenarios.push(scenario(
        "append in process (EventStore::append)",
        lat,
        took,
    ));

    // Seed: every client's accounts, opened in process.
    let service = CommandService::new(store.clone(), crm_domain::Registry::builtin());
    for c in 0..clients {
        for s in 0..STREAMS_PER_CLIENT {
            service
                .execute(command(open_account(&account(c, s))))
                .await
                .map_err(request)?;
        }
    }

    // 2. Commands in process.
    let half = requests / 2;
    let (lat, took) = load(clients, half, move |c, i| {
        let service = service.clone();
        async move {
            service
                .execute(command(change_segment(&account(c, i), i)))
                .await
                .map_err(request)?;
            Ok(())
        }
    })
    .await?;
    scenarios.push(scenario(
        "command in process (load, decide, append)",
        lat,
        took,
    ));

    // 3. Commands through HTTP.
    let (http_client, url) = (
        client.clone(),
        format!("{base}/v1/aggregates/account/commands"),
    );
    let (lat, took) = load(clients, half, move |c, i| {
        let (client, url) = (http_client.clone(), url.clone());
        async move {
            let body = change_segment(&account(c, i), i + half);
            let response = client
                .post(&url)
                .json(&body)
                .send()
                .await
                .map_err(request)?;
            if !response.status().is_success() {
                return Err(request(response.text().await.unwrap_or_default()));
            }
            Ok(())
        }
    })
    .await?;
    scenarios.push(scenario("command via HTTP (POST .../commands)", lat, took));

    // 4. Stream reads through HTTP.
    let (read_client, read_base) = (client.clone(), base.clone());
    let (lat, took) = load(clients, requests, move |c, i| {
        let (client, base) = (read_client.clone(), read_base.clone());
        async move {
            let url = format!("{base}/v1/streams/account-{}?limit=100", account(c, i));
            let response = client.get(&url).send().await.map_err(request)?;
            if !response.status().is_success() {
                return Err(request(response.status()));
            }
            response.bytes().await.map_err(request)?;
            Ok(())
        }
    })
    .await?;
    scenarios.push(scenario(
        "stream read via HTTP (GET /v1/streams/{id})",
        lat,
        took,
    ));

    // 5. Global log pages through HTTP.
    let head = store.head().position.0.max(1);
    let (log_client, log_base) = (client.clone(), base.clone());
    let (lat, took) = load(clients, requests, move |c, i| {
        let (client, base) = (log_client.clone(), log_base.clone());
        async move {
            let from = ((c * 7919 + i * 104_729) as u64) % head + 1;
            let url = format!("{base}/v1/events?from={from}&limit=100");
            let response = client.get(&url).send().await.map_err(request)?;
            if !response.status().is_success() {
                return Err(request(response.status()));
            }
            response.bytes().await.map_err(request)?;
            Ok(())
        }
    })
    .await?;
    scenarios.push(scenario(
        "log page via HTTP (GET /v1/events, 100 events)",
        lat,
        took,
    ));

    // 6–9. Read-model queries and metric evaluations through HTTP, over the state at the head.
    if with_data {
        let head = store.head().position;
        projections.models.pipeline.wait_for(head).await;
        // 6. One query, repeated: after the first request, answered from the answer cache.
        let (lat, took) = load(
            clients,
            requests,
            get_ok(&client, &base, |_, _| {
                "/v1/read-models/pipeline?as_of=2017-12-31T00:00:00Z&limit=10".to_owned()
            }),
        )
        .await?;
        scenarios.push(scenario(
            "read model via HTTP, repeated query (pipeline, 8,800 deals)",
            lat,
            took,
        ));
        // 7. A different `as_of` on every request: each report is computed.
        let (lat, took) = load(
            clients,
            requests,
            get_ok(&client, &base, |c, i| {
                let as_of = minutes_before_2018(c * REQUESTS_PER_CLIENT_MAX + i);
                format!("/v1/read-models/pipeline?as_of={as_of}&limit=10")
            }),
        )
        .await?;
        scenarios.push(scenario(
            "read model via HTTP, a new query each time (computed)",
            lat,
            took,
        ));
        // 8. A metric evaluation, repeated: after the first, answered from the answer cache.
        let metric_requests = (requests / METRIC_REQUESTS_DIVISOR).max(1);
        let (lat, took) = load(
            clients,
            metric_requests,
            get_ok(&client, &base, |_, _| {
                "/v1/metrics/sales.win_rate?period=quarter".to_owned()
            }),
        )
        .await?;
        scenarios.push(scenario(
            "metric via HTTP, repeated query (win rate by quarter)",
            lat,
            took,
        ));
        // 9. A different `to` on every request: each answer is computed, from the view of
        //    the log loaded once for this head.
        let (lat, took) = load(
            clients,
            metric_requests,
            get_ok(&client, &base, |c, i| {
                // Distinct instants, all after the data's first quarter.
                let to = minutes_before_2018(
                    c * METRIC_REQUESTS_PER_CLIENT_MAX + i % METRIC_REQUESTS_PER_CLIENT_MAX,
                );
                format!("/v1/metrics/sales.win_rate?period=quarter&to={to}")
            }),
        )
        .await?;
        scenarios.push(scenario(
            "metric via HTTP, a new query each time (computed)",
            lat,
            took,
        ));
    }

    let authentication = auth_cost(
        store,
        projections,
        &client,
        &base,
        clients,
        requests,
        &mut scenarios,
    )
    .await?;
    let _ = stop.send(true);
    server.abort();
    Ok(BenchReport {
        clients,
        scenarios,
        authentication: Some(authentication),
    })
}

/// `GET /v1/aggregates` (a constant answer, so the route's own work is small) on the open
/// server at `open_base`, then on a second server over the same log that requires a
/// credential, with a viewer's API token: the difference is the authentication layer
/// (header parsing, token lookup, SHA-256 and constant-time comparison, permission check).
async fn auth_cost(
    store: &AnyStore,
    projections: &Projections,
    client: &reqwest::Client,
    open_base: &str,
    clients: usize,
    requests: usize,
    scenarios: &mut Vec<Scenario>,
) -> Result<AuthCost, BenchError> {
    let token = crm_app::access::TokenRegister::new(store.clone())
        .grant(
            crm_app::access::TokenRequest {
                name: format!("bench-{}", Uuid::now_v7().simple()),
                roles: vec![crm_domain::access::Role::Viewer],
                scope: Vec::new(),
                expires_at: None,
            },
            &crm_app::access::local_principal(),
            Utc::now(),
        )
        .await
        .map_err(setup)?
        .token;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(setup)?;
    let auth_base = format!("http://{}", listener.local_addr().map_err(setup)?);
    let (app, _, stop) = crm_http::router_full(
        store.clone(),
        Some(projections.clone()),
        crm_domain::Registry::builtin(),
        crm_http::auth::AuthPolicy::tokens_required(),
    );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut measured = Vec::new();
    for (name, base, bearer) in [
        (
            "GET /v1/aggregates, no authentication",
            open_base.to_owned(),
            None,
        ),
        (
            "GET /v1/aggregates, API token checked",
            auth_base,
            Some(token),
        ),
    ] {
        let (client, url) = (client.clone(), format!("{base}/v1/aggregates"));
        let (lat, took) = load(clients, requests, move |_, _| {
            let (client, url, bearer) = (client.clone(), url.clone(), bearer.clone());
            async move {
                let mut call = client.get(&url);
                if let Some(token) = &bearer {
                    call = call.bearer_auth(token);
                }
                let response = call.send().await.map_err(request)?;
                if !response.status().is_success() {
                    return Err(request(format!("GET {url}: {}", response.status())));
                }
                response.bytes().await.map_err(request)?;
                Ok(())
            }
        })
        .await?;
        let figures = scenario(name, lat, took);
        measured.push(figures.clone());
        scenarios.push(figures);
    }
    let _ = stop.send(true);
    server.abort();
    let (open, authed) = (&measured[0], &measured[1]);
    Ok(AuthCost {
        p50_ratio: authed.p50_ms / open.p50_ms.max(f64::EPSILON),
        p99_ratio: authed.p99_ms / open.p99_ms.max(f64::EPSILON),
        p50_added_ms: authed.p50_ms - open.p50_ms,
    })
}
