//! Hostile clients on loopback, against the real connection layer: a client that sends its
//! headers too slowly and an idle keep-alive connection are closed by the server, the
//! connection cap answers with a problem document, an over-long request-target or oversized
//! headers get 414/431 problem documents, the server keeps answering meanwhile, and every
//! refusal is counted on `/metrics`. With TLS: HTTPS is served, plain HTTP and a client that
//! never starts the handshake are closed and counted. The bounds below only decide when to
//! give up waiting for the server to act; they measure nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crm_eventstore::{AnyStore, MemoryStore};
use crm_http::connections::ConnectionLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// How long a test waits for the server to close a connection before it fails.
const GIVE_UP: Duration = Duration::from_secs(20);

async fn start(limits: ConnectionLimits) -> (SocketAddr, oneshot::Sender<()>) {
    start_with(crm_http::ServeOptions {
        limits,
        ..crm_http::ServeOptions::default()
    })
    .await
}

async fn start_with(options: crm_http::ServeOptions) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let store = AnyStore::from(MemoryStore::new());
    tokio::spawn(async move {
        crm_http::serve_with(store, None, None, listener, options, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (address, stop)
}

/// Reads until the server closes the connection; what it sent.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(GIVE_UP, stream.read_to_end(&mut seen)).await;
    assert!(read.is_ok(), "the server did not close the connection");
    String::from_utf8_lossy(&seen).into_owned()
}

/// One request on its own connection; the whole response.
async fn get(address: SocketAddr, path: &str) -> String {
    send(
        address,
        &format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n"),
    )
    .await
}

/// `request` on its own connection; all the server sent before it closed.
async fn send(address: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    until_closed(&mut stream).await
}

/// The value of `crm_http_refused_total{reason}` in a `/metrics` answer (0 when absent).
fn refused_count(metrics: &str, reason: &str) -> f64 {
    let prefix = format!("crm_http_refused_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0.0, |n| n.parse().unwrap())
}

/// The problem document at the end of a raw response, after checking its media type.
fn problem_of(response: &str) -> serde_json::Value {
    assert!(
        response.contains("content-type: application/problem+json"),
        "{response}"
    );
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_idle_keep_alive_connections_are_closed_and_counted() {
    let limits = ConnectionLimits {
        header_read_timeout: Duration::from_millis(300),
        connections_max: 64,
    };
    let (address, _stop) = start(limits).await;

    // Slow headers: the request line, then nothing.
    let mut slow = Vec::new();
    for _ in 0..5 {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    // Meanwhile the server answers. The latencies are reported (`--nocapture`), not
    // asserted: tests never assert on wall-clock time.
    let asked = std::time::Instant::now();
    assert!(get(address, "/healthz").await.starts_with("HTTP/1.1 200"));
    println!(
        "/healthz answered in {:?} with 5 slow-header connections open",
        asked.elapsed()
    );
    for stream in &mut slow {
        let seen = until_closed(stream).await;
        assert!(!seen.contains("200 OK"), "{seen}");
    }
    println!(
        "the 5 slow-header connections were closed {:?} after they started (limit {:?})",
        asked.elapsed(),
        limits.header_read_timeout
    );

    // Idle keep-alive: one answered request, then silence.
    let mut idle = TcpStream::connect(address).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let seen = until_closed(&mut idle).await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");

    let metrics = get(address, "/metrics").await;
    let timeouts = metrics
        .lines()
        .find(|l| l.starts_with("crm_http_refused_total{reason=\"header_timeout\"}"))
        .unwrap_or_else(|| panic!("no header_timeout count in {metrics}"));
    let count: f64 = timeouts.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 6.0, "{timeouts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_above_the_cap_get_a_problem_document() {
    let limits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(30),
        connections_max: 2,
    };
    let (address, stop) = start(limits).await;
    // Two connections hold the two places (each has sent part of a request).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    // The server accepts in arrival order: the third connection finds both places taken.
    let refused = get(address, "/healthz").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("application/problem+json"), "{refused}");
    assert!(
        refused.contains("2 connections open, its limit"),
        "{refused}"
    );

    // A place freed is a place taken again: once the server has seen the close, the next
    // request is served.
    drop(held.pop());
    let served = tokio::time::timeout(GIVE_UP, async {
        loop {
            let answer = get(address, "/healthz").await;
            if answer.starts_with("HTTP/1.1 200") {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(served.is_ok(), "the freed place was never taken again");
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_uri_and_oversized_headers_get_problem_documents_and_are_counted() {
    let (address, stop) = start(ConnectionLimits::default()).await;
    let before = get(address, "/metrics").await;

    let long_uri = format!("/v1/events?category={}", "a".repeat(20 * 1024));
    let answer = get(address, &long_uri).await;
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");
    let problem = problem_of(&answer);
    assert_eq!(problem["type"], "urn:crm:problem:uri-too-long");
    assert_eq!(problem["status"], 414);
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("limit of 8192"), "{detail}");

    let headers: String = (0..64)
        .map(|i| format!("x-filler-{i}: {}\r\n", "h".repeat(1024)))
        .collect();
    let answer = send(
        address,
        &format!("GET /healthz HTTP/1.1\r\nhost: test\r\n{headers}\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let problem = problem_of(&answer);
    assert_eq!(problem["type"], "urn:crm:problem:headers-too-large");
    assert_eq!(problem["status"], 431);
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("limit of 32768"), "{detail}");

    // Just under the limits is served.
    let answer = get(address, &format!("/healthz?{}", "a".repeat(7 * 1024))).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let after = get(address, "/metrics").await;
    for reason in ["uri_too_long", "headers_too_large"] {
        assert!(
            refused_count(&after, reason) >= refused_count(&before, reason) + 1.0,
            "{reason}: {after}"
        );
    }
    let _ = stop.send(());
}

mod tls {
    use super::*;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::client::TlsStream;

    /// A server with a fresh self-signed certificate for `localhost`, and a client
    /// configuration trusting it.
    async fn start_tls(
        limits: ConnectionLimits,
    ) -> (
        SocketAddr,
        oneshot::Sender<()>,
        tokio_rustls::TlsConnector,
        tempfile::TempDir,
    ) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let (address, stop) = start_with(crm_http::ServeOptions {
            limits,
            tls: Some(crm_http::tls::server_config(&cert, &key).unwrap()),
            ..crm_http::ServeOptions::default()
        })
        .await;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(certified.cert.der().to_vec()))
            .unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        (address, stop, connector, dir)
    }

    async fn connect(
        connector: &tokio_rustls::TlsConnector,
        address: SocketAddr,
    ) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(address).await.unwrap();
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// One request over TLS on its own connection; the whole response.
    async fn get_tls(
        connector: &tokio_rustls::TlsConnector,
        address: SocketAddr,
        path: &str,
    ) -> String {
        let mut stream = connect(connector, address).await;
        let request =
            format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        let read = tokio::time::timeout(GIVE_UP, stream.read_to_end(&mut seen)).await;
        assert!(read.is_ok(), "the server did not close the connection");
        String::from_utf8_lossy(&seen).into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn https_is_served_and_plain_http_and_silent_clients_are_closed_and_counted() {
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_millis(300),
            connections_max: 64,
        };
        let (address, stop, connector, _dir) = start_tls(limits).await;
        let before = get_tls(&connector, address, "/metrics").await;

        // The client offers h2 and HTTP/1.1; the server picks the one it speaks.
        let stream = connect(&connector, address).await;
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        drop(stream);
        let answer = get_tls(&connector, address, "/healthz").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

        // Plain HTTP to the TLS port: no HTTP answer, the connection is closed.
        let answer = get(address, "/healthz").await;
        assert!(!answer.contains("HTTP/1.1"), "{answer}");

        // A client that opens TCP and never sends a ClientHello is closed by the server.
        let mut silent = TcpStream::connect(address).await.unwrap();
        let seen = until_closed(&mut silent).await;
        assert!(seen.is_empty(), "{seen}");

        // The server answers meanwhile; both refusals are counted.
        let after = get_tls(&connector, address, "/metrics").await;
        assert!(after.starts_with("HTTP/1.1 200"), "{after}");
        assert!(
            refused_count(&after, "tls_handshake") >= refused_count(&before, "tls_handshake") + 2.0,
            "{after}"
        );
        let _ = stop.send(());
    }
}
