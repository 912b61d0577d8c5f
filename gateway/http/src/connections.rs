//! The connection layer under the router: accepts TCP connections and serves HTTP/1.1 on each,
//! with the limits a server facing hostile clients needs and `axum::serve` cannot set.
//!
//! - **Header-read timeout.** A client must send a request's headers within
//!   [`ConnectionLimits::header_read_timeout`]; the timer runs from the moment the server
//!   waits for a request, so a slow-header client and an idle keep-alive connection are both
//!   closed after that long (hyper's own timeout is off unless a timer is given, which
//!   `axum::serve` does not do).
//! - **Open connections are capped** at [`ConnectionLimits::connections_max`]. Above the cap a
//!   new connection gets an immediate `503` problem document and is closed, instead of
//!   exhausting the process's file descriptors.
//! - Every refusal and timeout is counted in `crm_http_refused_total{reason}`; accept errors
//!   (such as the descriptor limit) in `crm_http_accept_errors_total`, with a pause so the
//!   loop does not spin.
//! - **Shutdown:** when `stopping` completes, the listener closes, every connection finishes
//!   its request in flight and closes, and [`serve_connections`] returns once all have.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::problem::{ApiError, PROBLEM_JSON};

/// Default time a client has to send a request's headers (and an idle keep-alive connection
/// may stay open).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default most connections open at once: below the common soft limit of 1,024 file
/// descriptors, so the cap answers before the descriptors run out.
pub const CONNECTIONS_MAX: usize = 1_000;
/// Pause after a failed accept (e.g. the descriptor limit), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// Longest time spent telling a refused connection why.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The limits of the connection layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time a client has to send a request's headers; also the idle keep-alive limit.
    pub header_read_timeout: Duration,
    /// Most connections open at once.
    pub connections_max: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            connections_max: CONNECTIONS_MAX,
        }
    }
}

/// Counts a request or connection refused before a route answered, by `reason`.
pub(crate) fn refused(reason: &'static str) {
    metrics::counter!("crm_http_refused_total", "reason" => reason).increment(1);
}

/// The answer to a connection above the cap: the API's problem document, then close.
fn over_capacity_response(connections_max: usize) -> Vec<u8> {
    let problem = ApiError::Busy(format!(
        "the server has {connections_max} connections open, its limit; retry shortly"
    ))
    .problem();
    let body = serde_json::to_string(&problem).unwrap_or_default();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {PROBLEM_JSON}\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        problem.status,
        problem.title,
        body.len()
    )
    .into_bytes()
}

async fn refuse(mut stream: TcpStream, connections_max: usize) {
    let answer = over_capacity_response(connections_max);
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        let _ = stream.write_all(&answer).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

async fn serve_one(
    stream: TcpStream,
    app: Router,
    header_read_timeout: Duration,
    mut closing: watch::Receiver<bool>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let connection = builder
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = async { let _ = closing.wait_for(|closing| *closing).await; } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            refused("header_timeout");
        } else {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// Serves `app` on `listener` under `limits` until `stopping` completes, then lets every
/// open connection finish its request in flight and returns once all are closed.
pub async fn serve_connections(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    stopping: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.connections_max));
    let (close, closing) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(stopping);
    loop {
        let stream = tokio::select! {
            () = &mut stopping => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    metrics::counter!("crm_http_accept_errors_total").increment(1);
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => {
                let (app, closing) = (app.clone(), closing.clone());
                connections.spawn(async move {
                    serve_one(stream, app, limits.header_read_timeout, closing).await;
                    drop(permit);
                });
            }
            Err(_) => {
                refused("connections");
                connections.spawn(refuse(stream, limits.connections_max));
            }
        }
    }
    drop(listener);
    let _ = close.send(true);
    while connections.join_next().await.is_some() {}
}
