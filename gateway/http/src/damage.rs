//! A damaged log, as the server answers it: the request that meets damage gets **500**
//! `log-damaged` (no `Retry-After`: reading a damaged record again does not heal it), and
//! the server remembers the first damage it met ([`DamageLatch`]), so that `/readyz`
//! answers **503** `log-damaged` from then on and a load balancer takes the server out of
//! rotation until the operator has restored the log and restarted it.
//!
//! **Invariant:** once latched, the state is never cleared in this process: the damage is in
//! the log's files, and only a restore (and a restart) removes it.
//!
//! A log whose open fails on damage is served by [`serve_open_damaged`] instead of the API:
//! alive (`/healthz` 200) and not ready (`/readyz` 503 `log-damaged` naming the positions),
//! every other route 503 `log-damaged`, none with `Retry-After`, until stopped; so an
//! orchestrator sees a server out of rotation rather than a crash loop.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use crm_app::damage::{LogDamage, RESTORE_REMEDY};
use crm_eventstore::ReadError;
use tokio::net::TcpListener;

use super::problem::{problem_response, Problem, PROBLEM_JSON};
use super::AppState;

/// The slug of the problem type (`urn:crm:problem:log-damaged`).
pub const LOG_DAMAGED: &str = "log-damaged";

/// Damage a request met: carried by its response (an extension) to [`latch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamageMet {
    /// The damaged record's position, when the store named one.
    pub position: Option<u64>,
    /// The problem's detail: what was found, where, and what to do.
    pub detail: String,
}

impl DamageMet {
    /// The damage of a read error: [`ReadError::Corrupt`] only.
    #[must_use]
    pub fn of_read(error: &ReadError) -> Option<DamageMet> {
        let damage = LogDamage::of_read(error)?;
        Some(DamageMet {
            position: damage.location.first_bad_position(),
            detail: format!("{error}; retrying will not help: the operator must {RESTORE_REMEDY}"),
        })
    }

    /// The damage that kept the log from opening ([`LogDamage::of_open`]): where it is, as
    /// far as the store named it, and the remedy. What the store found stays in the
    /// server's log, since it names the log's path on disk.
    #[must_use]
    pub fn of_open(damage: &LogDamage) -> DamageMet {
        DamageMet {
            position: damage.location.first_bad_position(),
            detail: format!(
                "the log could not be opened: it is damaged {}; retrying will not help: the operator must {RESTORE_REMEDY}",
                damage.location
            ),
        }
    }
}

/// The first damage this server met, kept for the life of the process.
#[derive(Debug, Default)]
pub struct DamageLatch {
    first: Mutex<Option<DamageMet>>,
}

impl DamageLatch {
    /// Records `met` unless damage was recorded before; whether this was the first.
    pub fn latch(&self, met: &DamageMet) -> bool {
        let mut first = self.first.lock().unwrap_or_else(PoisonError::into_inner);
        if first.is_some() {
            return false;
        }
        *first = Some(met.clone());
        drop(first);
        tracing::error!(
            position = met.position,
            detail = %met.detail,
            "the log is damaged: /readyz answers not ready from now on"
        );
        metrics::gauge!("crm_log_damaged").set(1.0);
        true
    }

    /// The first damage met, if any.
    #[must_use]
    pub fn get(&self) -> Option<DamageMet> {
        self.first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Middleware: latches the damage a response carries (see [`DamageMet`]).
pub async fn latch(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if let Some(met) = response.extensions().get::<DamageMet>() {
        state.damage.latch(met);
    }
    response
}

/// Documents the `log-damaged` answer (500) on every `/v1` operation: each authenticates
/// its caller against the token register in the log, and most read the log besides.
#[must_use]
pub fn document(mut openapi: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    for (path, item) in &mut openapi.paths.paths {
        if !path.starts_with("/v1/") {
            continue;
        }
        let operations = [
            item.get.as_mut(),
            item.post.as_mut(),
            item.put.as_mut(),
            item.delete.as_mut(),
            item.patch.as_mut(),
        ];
        for operation in operations.into_iter().flatten() {
            if operation.responses.responses.contains_key("500") {
                continue;
            }
            let response = ResponseBuilder::new()
                .description(
                    "The log is damaged where this request read it (`urn:crm:problem:log-damaged`; `damaged_position` names the record): retrying will not help, the operator restores the log from a replica or backup. No `Retry-After`; `/readyz` answers 503 from then on.",
                )
                .content(
                    PROBLEM_JSON,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build();
            operation
                .responses
                .responses
                .insert("500".to_owned(), response.into());
        }
    }
    openapi
}

/// The router of a server whose log did not open because it is damaged: `GET /healthz` 200
/// (the process is alive), `GET /readyz` 503 `log-damaged` with `met` (detail and
/// `damaged_position`: the same public probe answer as a running server's that met damage),
/// every other route and method 503 `log-damaged` without positions or paths (no caller can
/// be authenticated: the token register is in the log). No answer has `Retry-After`.
pub fn open_damaged_router(met: &DamageMet) -> Router {
    let mut ready = Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        LOG_DAMAGED,
        format!("not ready: {}", met.detail),
    );
    ready.damaged_position = met.position;
    let elsewhere = Arc::new(Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        LOG_DAMAGED,
        "the log is damaged, so this server serves nothing until the operator restores the log and restarts it; retrying will not help (GET /readyz names the damage)".to_owned(),
    ));
    let ready = Arc::new(ready);
    let not_served = move || {
        let problem = Arc::clone(&elsewhere);
        async move { problem_response(&problem) }
    };
    Router::new()
        .route("/healthz", get(super::ops::healthz))
        .route(
            "/readyz",
            get(move || {
                let problem = Arc::clone(&ready);
                async move { problem_response(&problem) }
            }),
        )
        .fallback(not_served.clone())
        .method_not_allowed_fallback(not_served)
}

/// Serves [`open_damaged_router`] on `listener` (HTTPS with `tls`) until `signal` completes,
/// with the connection layer's default limits.
pub async fn serve_open_damaged(
    listener: TcpListener,
    met: &DamageMet,
    tls: Option<Arc<rustls::ServerConfig>>,
    signal: impl Future<Output = ()>,
) {
    metrics::gauge!("crm_log_damaged").set(1.0);
    let stopping = async move {
        signal.await;
        eprintln!("shutting down");
    };
    super::connections::serve_connections(
        listener,
        open_damaged_router(met),
        super::connections::ConnectionLimits::default(),
        tls,
        stopping,
    )
    .await;
    eprintln!("stopped: the log was not opened");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_eventstore::{Corruption, Position};

    #[test]
    fn the_first_damage_is_kept_and_names_its_position_and_the_remedy() {
        let latch = DamageLatch::default();
        assert_eq!(latch.get(), None);
        let corrupt = |p| ReadError::Corrupt {
            position: Position(p),
            reason: Corruption::Missing,
        };
        let first = DamageMet::of_read(&corrupt(4)).unwrap();
        assert!(first.detail.contains("position 4"), "{}", first.detail);
        assert!(
            first.detail.contains("replica or backup"),
            "{}",
            first.detail
        );
        assert!(latch.latch(&first));
        assert!(!latch.latch(&DamageMet::of_read(&corrupt(9)).unwrap()));
        assert_eq!(latch.get().and_then(|m| m.position), Some(4));
        assert_eq!(DamageMet::of_read(&ReadError::Closed), None);
    }

    #[tokio::test]
    async fn a_log_that_did_not_open_is_alive_not_ready_and_serves_nothing_else() {
        use axum::body::{to_bytes, Body};
        use axum::http::{header, Method};
        use crm_app::damage::DamageLocation;
        use tower::ServiceExt;

        let damage = LogDamage {
            location: DamageLocation::At { position: 9 },
            reason: "the log at /secret/data/log is damaged: a frame".into(),
        };
        let met = DamageMet::of_open(&damage);
        assert_eq!(met.position, Some(9));
        assert!(met.detail.contains("at position 9"), "{}", met.detail);
        assert!(!met.detail.contains("/secret"), "{}", met.detail);
        let answer = |method: Method, path: &str| {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .unwrap();
            open_damaged_router(&met).oneshot(request)
        };
        let healthz = answer(Method::GET, "/healthz").await.unwrap();
        assert_eq!(healthz.status(), StatusCode::OK);
        for (method, path, position) in [
            (Method::GET, "/readyz", Some(9)),
            (Method::GET, "/v1/events", None),
            (Method::POST, "/v1/aggregates/account/commands", None),
            (Method::POST, "/healthz", None),
            (Method::GET, "/metrics", None),
        ] {
            let response = answer(method, path).await.unwrap();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
            assert!(response.headers().get(header::RETRY_AFTER).is_none());
            assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
            let body = to_bytes(response.into_body(), 64 * 1024).await.unwrap();
            let problem: Problem = serde_json::from_slice(&body).unwrap();
            assert_eq!(problem.type_uri, "urn:crm:problem:log-damaged", "{path}");
            assert_eq!(problem.damaged_position, position, "{path}");
            assert_eq!(problem.detail.contains("position 9"), position.is_some());
            assert!(problem.detail.contains("retrying will not help"));
        }
    }
}
