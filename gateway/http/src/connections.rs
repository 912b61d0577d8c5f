//! The connection layer under the router: accepts TCP connections and serves HTTP/1.1 on each,
//! with the limits a server facing hostile clients needs and `axum::serve` cannot set.
//!
//! - **Header-read timeout.** A client must send a request's headers within
//!   [`ConnectionLimits::header_read_timeout`]; the timer runs from the moment the server
//!   waits for a request, so a slow-header client and an idle keep-alive connection are both
//!   closed after that long (hyper's own timeout is off unless a timer is given, which
//!   `axum::serve` does not do).
//! - **Open connections are capped** at [`ConnectionLimits::connections_max`]. Above the cap a
//!   new connection gets an immediate `503` problem document and is closed (with TLS it is
//!   closed at once: no handshake, no answer), instead of exhausting the process's file
//!   descriptors.
//! - Every refusal and timeout is counted in `crm_http_refused_total{reason}`; accept errors
//!   (such as the descriptor limit) in `crm_http_accept_errors_total`, with a pause so the
//!   loop does not spin.
//! - **TLS** (when [`serve_connections`] is given a [`rustls::ServerConfig`], see
//!   [`crate::tls`]): each accepted connection first completes a TLS handshake, which must
//!   finish within the header-read timeout; a client that never finishes it, or whose
//!   handshake fails (plain HTTP sent to the TLS port, no shared cipher), is closed and
//!   counted with reason `tls_handshake`. The connection is then served exactly like a
//!   plain one.
//! - **Request heads are bounded:** a request-target longer than [`URI_SIZE_MAX_BYTES`] gets
//!   a `414` problem document, header fields larger than [`HEADERS_SIZE_MAX_BYTES`] in all a
//!   `431` problem document (reasons `uri_too_long`, `headers_too_large`), and the connection
//!   is closed. hyper reads a head into a buffer of at most [`HEAD_BUFFER_MAX_BYTES`], far
//!   above both limits; a head larger than that buffer, a request-target over hyper's own
//!   limit of 65,534 bytes, or more than 100 header fields, is answered by hyper itself
//!   with a bare `431`/`414` (no body) and counted with reason `head_too_large`.
//! - **Shutdown:** when `stopping` completes, the listener closes, every connection finishes
//!   its request in flight and closes, and [`serve_connections`] returns once all have.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::problem::{problem_response, ApiError, Problem, PROBLEM_JSON};

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
/// Longest request-target (the URI of the request line), in bytes; longer gets `414`.
pub const URI_SIZE_MAX_BYTES: usize = 8 * 1024;
/// Largest sum of a request's header fields (`name: value` plus line end, each), in bytes;
/// larger gets `431`.
pub const HEADERS_SIZE_MAX_BYTES: usize = 32 * 1024;
/// hyper's read buffer for a request head (its `max_buf_size`): four times the header
/// limit, so that a head over [`URI_SIZE_MAX_BYTES`] or [`HEADERS_SIZE_MAX_BYTES`] reaches
/// the limit check and gets a problem document. A head that does not fit in this buffer
/// (128 KiB) gets hyper's own bare `431` (no body), as does one with more than 100 header
/// fields (hyper's default count), and a request-target over 65,534 bytes hyper's bare
/// `414`.
pub const HEAD_BUFFER_MAX_BYTES: usize = 128 * 1024;

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

/// Bytes a header field takes on the wire: `name: value` and CRLF.
const HEADER_FIELD_OVERHEAD_BYTES: usize = 4;

/// A head-limit refusal: the problem document, `connection: close`, counted by `reason`.
fn head_refusal(status: StatusCode, slug: &str, reason: &'static str, detail: String) -> Response {
    refused(reason);
    let mut response = problem_response(&Problem::new(status, slug, detail));
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Refuses a request whose request-target or header fields are over the limits (414, 431)
/// before any route sees it.
async fn limit_head(request: Request, next: Next) -> Response {
    let uri = request.uri();
    let uri_bytes = [
        uri.scheme_str().map_or(0, |s| s.len() + "://".len()),
        uri.authority().map_or(0, |a| a.as_str().len()),
        uri.path_and_query().map_or(0, |p| p.as_str().len()),
    ]
    .iter()
    .sum::<usize>();
    if uri_bytes > URI_SIZE_MAX_BYTES {
        return head_refusal(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            "uri_too_long",
            format!(
                "the request-target is {uri_bytes} bytes, over the limit of {URI_SIZE_MAX_BYTES}; send long filters in fewer or shorter query parameters"
            ),
        );
    }
    let header_bytes = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + HEADER_FIELD_OVERHEAD_BYTES)
        .sum::<usize>();
    if header_bytes > HEADERS_SIZE_MAX_BYTES {
        return head_refusal(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            "headers_too_large",
            format!(
                "the header fields are {header_bytes} bytes in all, over the limit of {HEADERS_SIZE_MAX_BYTES}; send fewer or smaller headers (large cookies, long tokens)"
            ),
        );
    }
    next.run(request).await
}

/// Serves HTTP/1.1 on one connection, plain or TLS, until it closes or `closing` asks.
async fn serve_one<I>(
    io: I,
    app: Router,
    header_read_timeout: Duration,
    mut closing: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(HEAD_BUFFER_MAX_BYTES);
    let connection = builder
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app))
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
        } else if e.is_parse_too_large() {
            refused("head_too_large");
        } else {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// Completes the TLS handshake on `stream` within `header_read_timeout`, then serves it;
/// a failed or unfinished handshake closes the connection and is counted.
async fn serve_tls(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    app: Router,
    header_read_timeout: Duration,
    mut closing: watch::Receiver<bool>,
) {
    let handshake = tokio::select! {
        handshake = tokio::time::timeout(header_read_timeout, acceptor.accept(stream)) => handshake,
        _ = closing.wait_for(|closing| *closing) => return,
    };
    match handshake {
        Ok(Ok(stream)) => serve_one(stream, app, header_read_timeout, closing).await,
        Ok(Err(e)) => {
            refused("tls_handshake");
            tracing::debug!(error = %e, "TLS handshake failed");
        }
        Err(_) => {
            refused("tls_handshake");
            tracing::debug!("TLS handshake not finished within the header-read timeout");
        }
    }
}

/// Serves `app` on `listener` under `limits` until `stopping` completes, then lets every
/// open connection finish its request in flight and returns once all are closed. With
/// `tls`, every connection is TLS (see the module doc).
pub async fn serve_connections(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    stopping: impl Future<Output = ()>,
) {
    let app = app.layer(middleware::from_fn(limit_head));
    let acceptor = tls.map(TlsAcceptor::from);
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
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    let timeout = limits.header_read_timeout;
                    match acceptor {
                        Some(acceptor) => serve_tls(stream, acceptor, app, timeout, closing).await,
                        None => serve_one(stream, app, timeout, closing).await,
                    }
                    drop(permit);
                });
            }
            Err(_) => {
                refused("connections");
                // A TLS client cannot read a plain answer, and a handshake is the work the
                // cap saves: it is closed without one.
                if acceptor.is_none() {
                    connections.spawn(refuse(stream, limits.connections_max));
                }
            }
        }
    }
    drop(listener);
    let _ = close.send(true);
    while connections.join_next().await.is_some() {}
}
