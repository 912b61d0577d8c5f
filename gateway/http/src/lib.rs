//! `crm-http`: the HTTP API that `crm serve` runs: JSON under `/v1`, errors as RFC 9457
//! problem details. Built on `crm-app` (the command service), `crm-projections` and
//! `crm-metrics`; it depends on no other edge (the publisher is stopped through a
//! [`BeforeClose`] future).
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/aggregates/{category}/commands` | a domain command; `If-Match`, `Idempotency-Key` |
//! | `GET /v1/aggregates` | aggregates, their commands and event types |
//! | `GET /v1/streams/{stream_id}` | one stream, paged by version |
//! | `GET /v1/events` | the global log, paged by position, filter by category / type |
//! | `GET /v1/feed` | Server-Sent Events from any position, live; `Last-Event-ID` resumes |
//! | `GET /v1/read-models`, `/v1/read-models/{pipeline,churn,lifetime-value,sla}` | projections |
//! | `GET /v1/metrics`, `POST /v1/metrics` (TOML) | the metric catalog; define a version |
//! | `GET /v1/metrics/{id}`, `/{id}/compare`, `/{id}/explain`, `/{id}/diff` | evaluate, compare versions, explain (JSON or CSV), diff two report dates |
//! | `GET /v1/scorecards`, `POST /v1/scorecards` (TOML), `GET /v1/scorecards/{id}`, `/{id}/explain` | scorecards: a node's measures, strategy map, cascade, the events behind a figure |
//! | `GET /`, `/cockpit/{asset}` | the cockpit web page (public; it reads the API with the caller's token) |
//! | `GET /healthz`, `/readyz`, `/metrics`, `/openapi.json` | operations |
//!
//! **Invariant:** every limit is a named constant here (body size, page size, request
//! timeout, requests in flight, open feeds) or in [`connections`] (header-read and idle time,
//! open connections, request-target and header sizes). A request over a limit gets a problem
//! document (413, 414, 415, 431, 503), never a partial effect, and the refusal is counted in
//! `crm_http_refused_total{reason}`. (The one exception, a request head beyond hyper's own
//! buffer, is described in [`connections`].)
//!
//! **TLS:** the server speaks plain HTTP unless [`ServeOptions::tls`] is set, then HTTPS
//! only (HTTP/1.1, rustls with the *ring* provider; [`tls::server_config`] loads a PEM
//! certificate chain and key). Either put a TLS-terminating proxy or load balancer in front
//! and keep `crm serve` on a private address, or give `crm serve` a certificate
//! (`[serve] tls_cert_file` and `tls_key_file`, `--tls-cert`/`--tls-key`). The handshake
//! shares the header-read timeout; failures are counted with reason `tls_handshake`.
//!
//! **Invariant:** a request that meets a damaged record gets 500 `log-damaged` (no
//! `Retry-After`), a feed sends it as one `error` event and ends, and `/readyz` answers 503
//! `log-damaged` from then on ([`damage`]). A log whose open fails on damage is served by
//! [`damage::serve_open_damaged`] instead: `/healthz` 200, every other route 503
//! `log-damaged`, until stopped.
//!
//! **Invariant:** shutdown (SIGTERM, Ctrl-C) stops accepting connections, ends the feeds,
//! lets in-flight requests (appends) finish, then closes the store.
//!
//! Where to start reading: [`router`], then [`write`] (the write path, over
//! [`crm_app::commands::CommandService`]).

pub mod aggregates;
pub mod answer_cache;
pub mod auth;
pub mod checkpoints;
pub mod cockpit;
pub mod connections;
pub mod damage;
pub mod feed;
pub mod metrics;
pub mod ops;
pub mod probes;
pub mod problem;
pub mod read_models;
pub mod reads;
pub mod schemas;
pub mod scorecards;
pub mod subjects;
pub mod tls;
pub mod type_schemas;
pub mod view_cache;
pub mod write;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{middleware, Router};
use crm_app::commands::CommandService;
use crm_domain::Registry;
use crm_eventstore::AnyStore;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::ServiceBuilder;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use problem::ApiError;

/// Largest request body, in bytes (a command, a definition).
pub const BODY_SIZE_MAX_BYTES: usize = 64 * 1024;
/// Page size of a read without `limit`.
pub const PAGE_SIZE_DEFAULT: usize = 100;
/// Largest page a read returns, whatever `limit` asks.
pub const PAGE_SIZE_MAX: usize = 1_000;
/// A request (other than the feed) that takes longer is cancelled with 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests handled at once; more are refused with 503 and `Retry-After`.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 512;
/// Server-Sent Event feeds open at once.
pub const FEEDS_MAX: usize = 256;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The log.
    pub store: AnyStore,
    /// The command service (and the aggregates it serves).
    pub commands: CommandService,
    /// Permits for open feeds.
    pub feeds: Arc<Semaphore>,
    /// Becomes `true` when shutdown starts.
    pub shutdown: watch::Receiver<bool>,
    /// The Prometheus recorder, if this process has one.
    pub metrics: Option<PrometheusHandle>,
    /// The rendered OpenAPI document.
    pub openapi: Arc<OnceLock<String>>,
    /// The read models, when projections run in this server.
    pub projections: Option<read_models::Projections>,
    /// Rendered answers of the read models and metrics (see [`answer_cache`]).
    pub answers: Arc<answer_cache::AnswerCache>,
    /// Metric views loaded at the current head (see [`view_cache`]).
    pub views: Arc<view_cache::ViewCache>,
    /// The metric registry, kept by the log head it covers.
    pub registries: Arc<crm_metrics::RegistryCache>,
    /// Who may call what (see [`auth`]).
    pub auth: auth::Authenticator,
    /// Scorecard assessments kept by log head (see [`scorecards`]).
    pub scorecards: Arc<scorecards::AssessmentCache>,
    /// Signed checkpoints, when the server has a signing key (see [`checkpoints`]).
    pub checkpoints: Option<Arc<crm_app::checkpoint::Checkpointing>>,
    /// The first damage a read of this server met (see [`damage`]).
    pub damage: Arc<damage::DamageLatch>,
}

/// What the router shares with work beside it (the scorecard status watcher).
#[derive(Clone, Default)]
pub struct Shared {
    /// The metric and scorecard registry by log head.
    pub registries: Arc<crm_metrics::RegistryCache>,
    /// Scorecard assessments by log head.
    pub scorecards: Arc<scorecards::AssessmentCache>,
    /// Signed checkpoints, when the server has a signing key.
    pub checkpoints: Option<Arc<crm_app::checkpoint::Checkpointing>>,
    /// The first damage met in the log, by a request or by work beside the router.
    pub damage: Arc<damage::DamageLatch>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "CRM event log API",
        description = "Commands for every aggregate, stream and log reads, a live feed of events. Errors are RFC 9457 problem details (`application/problem+json`)."
    ),
    components(schemas(problem::Problem)),
    tags(
        (name = "commands", description = "Write: domain commands"),
        (name = "log", description = "Read: streams, the global log, the live feed"),
        (name = "read models", description = "Read: pipeline, churn, lifetime value, SLA, as of any instant"),
        (name = "metrics", description = "Versioned metric definitions: evaluate, compare, explain, diff, define"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "access", description = "API tokens (admin) and who the caller is"),
        (name = "personal data", description = "Erasure of a data subject's personal data (admin)"),
        (name = "scorecards", description = "Scorecards: strategy map, measures against targets, the cascade to teams and people, status over time"),
        (name = "cockpit", description = "The cockpit web page and its assets"),
    )
)]
struct ApiDoc;

/// The API's router for the domain's aggregates, its OpenAPI document, and the sender that
/// starts its shutdown (ends the feeds, fails `/readyz`).
pub fn router(
    store: AnyStore,
    projections: Option<read_models::Projections>,
) -> (Router, utoipa::openapi::OpenApi, watch::Sender<bool>) {
    router_with(store, projections, Registry::builtin())
}

/// As [`router`], serving the aggregates of `registry`, without authentication (every caller
/// is [`auth::OPEN_PRINCIPAL`]).
pub fn router_with(
    store: AnyStore,
    projections: Option<read_models::Projections>,
    registry: Registry,
) -> (Router, utoipa::openapi::OpenApi, watch::Sender<bool>) {
    router_full(store, projections, registry, auth::AuthPolicy::open())
}

/// The API's router serving the aggregates of `registry` (the command route, `GET
/// /v1/aggregates` and the OpenAPI document all read it), authenticating callers by
/// `policy`.
pub fn router_full(
    store: AnyStore,
    projections: Option<read_models::Projections>,
    registry: Registry,
    policy: auth::AuthPolicy,
) -> (Router, utoipa::openapi::OpenApi, watch::Sender<bool>) {
    router_shared(store, projections, registry, policy, Shared::default())
}

/// As [`router_full`], with caches shared with work beside the router.
pub fn router_shared(
    store: AnyStore,
    projections: Option<read_models::Projections>,
    registry: Registry,
    policy: auth::AuthPolicy,
    shared: Shared,
) -> (Router, utoipa::openapi::OpenApi, watch::Sender<bool>) {
    let (stop, shutdown) = watch::channel(false);
    let tokens = crm_app::access::TokenVerifier::new(store.clone())
        .with_bootstrap(policy.settings.admin_token_sha256.as_deref());
    let state = AppState {
        commands: CommandService::new(store.clone(), registry),
        store,
        feeds: Arc::new(Semaphore::new(FEEDS_MAX)),
        shutdown,
        metrics: ops::metrics_handle(),
        openapi: Arc::new(OnceLock::new()),
        projections,
        answers: Arc::new(answer_cache::AnswerCache::default()),
        views: Arc::new(view_cache::ViewCache::default()),
        registries: shared.registries,
        auth: auth::Authenticator { policy, tokens },
        scorecards: shared.scorecards,
        checkpoints: shared.checkpoints,
        damage: shared.damage,
    };
    let timed = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(write::command))
        .routes(routes!(reads::aggregates))
        .routes(routes!(reads::read_stream))
        .routes(routes!(reads::read_log))
        .routes(routes!(read_models::status))
        .routes(routes!(read_models::pipeline))
        .routes(routes!(read_models::churn))
        .routes(routes!(read_models::lifetime_value))
        .routes(routes!(read_models::sla))
        .routes(routes!(metrics::list, metrics::define))
        .routes(routes!(metrics::evaluate))
        .routes(routes!(metrics::compare))
        .routes(routes!(metrics::explain))
        .routes(routes!(metrics::diff))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::prometheus))
        .routes(routes!(ops::openapi_json))
        .routes(routes!(auth::tokens::whoami))
        .routes(routes!(auth::tokens::list, auth::tokens::create))
        .routes(routes!(auth::tokens::revoke))
        .routes(routes!(subjects::erase))
        .routes(routes!(type_schemas::list))
        .routes(routes!(type_schemas::one))
        .routes(routes!(scorecards::list, scorecards::define))
        .routes(routes!(scorecards::show))
        .routes(routes!(scorecards::explain))
        .routes(routes!(checkpoints::list, checkpoints::sign))
        .routes(routes!(cockpit::index))
        .routes(routes!(cockpit::file))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ));
    let (router, mut openapi) = OpenApiRouter::new()
        .merge(timed)
        .routes(routes!(feed::feed))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .route_layer(middleware::from_fn(ops::track))
        .route_layer(middleware::from_fn_with_state(state.clone(), damage::latch))
        .split_for_parts();
    // `OpenApiRouter::new()` starts from utoipa-axum's own `info`; the document's is ours.
    openapi.info = ApiDoc::openapi().info;
    let openapi = aggregates::document_categories(openapi, state.commands.registry());
    // What could not be placed is a mistake of `schemas`, which its tests catch.
    let (openapi, _) = schemas::document(openapi, state.commands.registry());
    let openapi = auth::document_security(openapi, &state.auth.policy.settings);
    let openapi = damage::document(openapi);
    let limits = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
            connections::refused("overloaded");
            ApiError::Busy(format!(
                "{REQUESTS_IN_FLIGHT_MAX} requests are in flight, the limit; retry shortly"
            ))
            .into_response()
        }))
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::new(REQUESTS_IN_FLIGHT_MAX));
    let rendered = openapi.to_json().unwrap_or_default();
    let _ = state.openapi.set(rendered);
    let app = router
        .layer(DefaultBodyLimit::max(BODY_SIZE_MAX_BYTES))
        .layer(limits)
        .layer(middleware::from_fn(problem::normalise_errors))
        .with_state(state);
    (app, openapi, stop)
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The listener failed.
    #[error("the HTTP server failed: {0}; check that the address is free and reachable")]
    Io(#[from] std::io::Error),
}

/// Work that must end after the server and before the store closes (a publisher reading the
/// log saves its checkpoint). Not started until awaited.
pub type BeforeClose = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How [`serve_with`] runs: the connection layer's limits, the authentication policy and
/// TLS.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Header-read time, idle time, open connections.
    pub limits: connections::ConnectionLimits,
    /// Who may call what.
    pub auth: auth::AuthPolicy,
    /// Terminate TLS with this configuration (see [`tls::server_config`]); `None` serves
    /// plain HTTP (behind a TLS-terminating proxy, or on loopback).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Sign checkpoints (on schedule, and on `POST /v1/checkpoints`); `None` serves 503 there.
    pub checkpoints: Option<Arc<crm_app::checkpoint::Checkpointing>>,
}

/// Serves the API on `listener` until `signal` completes, then shuts down gracefully: stops
/// accepting, ends the feeds, waits for in-flight requests, stops the projections (final
/// snapshots), runs `before_close` (the publisher stops, checkpoint saved), closes the store.
/// Connections get the default [`connections::ConnectionLimits`]; no authentication.
///
/// # Errors
/// [`ServeError`] when the server fails.
pub async fn serve(
    store: AnyStore,
    projections: Option<read_models::Projections>,
    before_close: Option<BeforeClose>,
    listener: TcpListener,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with(
        store,
        projections,
        before_close,
        listener,
        ServeOptions::default(),
        signal,
    )
    .await
}

/// As [`serve`], with `options`.
///
/// # Errors
/// [`ServeError`] when the server fails.
pub async fn serve_with(
    store: AnyStore,
    projections: Option<read_models::Projections>,
    before_close: Option<BeforeClose>,
    listener: TcpListener,
    options: ServeOptions,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let shared = Shared {
        checkpoints: options.checkpoints.clone(),
        ..Shared::default()
    };
    // 0 until a read meets a damaged record (see [`damage`]): an alert can watch for 1.
    ::metrics::gauge!("crm_log_damaged").set(0.0);
    let (app, _, stop) = router_shared(
        store.clone(),
        projections.clone(),
        Registry::builtin(),
        options.auth,
        shared.clone(),
    );
    let signer = options
        .checkpoints
        .map(|c| tokio::spawn(c.run_schedule(store.clone(), stop.subscribe())));
    let watcher = tokio::spawn(scorecards::watch_statuses(
        store.clone(),
        shared.registries,
        shared.scorecards,
        shared.damage,
        stop.subscribe(),
    ));
    let stopping = async move {
        signal.await;
        eprintln!("shutting down: finishing in-flight requests");
        let _ = stop.send(true);
    };
    connections::serve_connections(listener, app, options.limits, options.tls, stopping).await;
    // The watcher appends status changes: it ends before the store closes.
    if let Err(e) = watcher.await {
        eprintln!("warning: the scorecard status watcher did not stop cleanly: {e}");
    }
    if let Some(Err(e)) = match signer {
        Some(task) => Some(task.await),
        None => None,
    } {
        eprintln!("warning: the checkpoint signer did not stop cleanly: {e}");
    }
    if let Some(projections) = projections {
        if let Err(e) = projections.stop().await {
            eprintln!("warning: a projection did not stop cleanly: {e}");
        }
    }
    // The publisher reads the log: stop it (checkpoint saved) before the store closes.
    if let Some(before_close) = before_close {
        before_close.await;
    }
    store.close().await;
    eprintln!("stopped: store closed");
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
