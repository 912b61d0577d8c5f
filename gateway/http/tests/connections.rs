//! Hostile clients on loopback, against the real connection layer: a client that sends its
//! headers too slowly and an idle keep-alive connection are closed by the server, the
//! connection cap answers with a problem document, the server keeps answering meanwhile, and
//! every refusal is counted on `/metrics`. The bounds below only decide when to give up
//! waiting for the server to act; they measure nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use crm_eventstore::{AnyStore, MemoryStore};
use crm_http::connections::ConnectionLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// How long a test waits for the server to close a connection before it fails.
const GIVE_UP: Duration = Duration::from_secs(20);

async fn start(limits: ConnectionLimits) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let store = AnyStore::from(MemoryStore::new());
    tokio::spawn(async move {
        crm_http::serve_with(
            store,
            None,
            None,
            listener,
            crm_http::ServeOptions {
                limits,
                ..crm_http::ServeOptions::default()
            },
            async {
                let _ = stopped.await;
            },
        )
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
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    until_closed(&mut stream).await
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
    // Meanwhile the server answers.
    assert!(get(address, "/healthz").await.starts_with("HTTP/1.1 200"));
    for stream in &mut slow {
        let seen = until_closed(stream).await;
        assert!(!seen.contains("200 OK"), "{seen}");
    }

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
