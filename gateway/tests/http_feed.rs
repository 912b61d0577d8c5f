//! The live feed (Server-Sent Events) and graceful shutdown, through the real `crm serve`:
//! events arrive in order as they are appended; a reconnect with `Last-Event-ID` resumes with
//! neither gap nor duplicate; filters skip; SIGTERM lets an in-flight append finish.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{change_segment, open_account, Server};
use crm_eventstore::{EventStore, Position, SledStore};
use futures_util::StreamExt;
use serde_json::Value;

/// One SSE message.
#[derive(Debug)]
struct Message {
    id: u64,
    event: String,
    data: Value,
}

/// Reads SSE messages from a response body.
struct Feed {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<axum::body::Bytes>>,
    buffer: String,
}

impl Feed {
    async fn open(server: &Server, query: &str, last_event_id: Option<u64>) -> Feed {
        let mut request = server.client.get(server.url(&format!("/v1/feed{query}")));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        Feed {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next message (keep-alive comments skipped); `None` when the server ends the feed.
    async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if let Some(id) = id {
                    let data = serde_json::from_str(&data).unwrap();
                    return Some(Message { id, event, data });
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.body.next())
                .await
                .expect("no SSE message within 30 s")?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_delivers_new_events_in_order_and_resumes_without_gap_or_duplicate() {
    let server = Server::start();
    assert_eq!(
        server
            .command("account", &open_account("acme"), &[])
            .await
            .0,
        200
    );
    // Live only (no `from`): the existing event is not replayed.
    let mut live = Feed::open(&server, "", None).await;
    // From the start: history first.
    let mut all = Feed::open(&server, "?from=1", None).await;
    let first = all.next().await.unwrap();
    assert_eq!((first.id, first.event.as_str()), (1, "AccountOpened"));
    assert_eq!(first.data["stream_id"], "account-acme");

    for to in ["enterprise", "smb", "mid"] {
        let (status, _, _) = server
            .command("account", &change_segment("acme", to), &[])
            .await;
        assert_eq!(status, 200);
    }
    for (feed, name) in [(&mut live, "live"), (&mut all, "all")] {
        for (position, to) in [(2, "enterprise"), (3, "smb"), (4, "mid")] {
            let message = feed.next().await.unwrap();
            assert_eq!(message.id, position, "{name}");
            assert_eq!(message.event, "AccountSegmentChanged");
            assert_eq!(message.data["payload"]["to"], to);
        }
    }
    drop(all);

    // Disconnected after position 2 was received; two more events land while away.
    assert_eq!(
        server
            .command("account", &open_account("globex"), &[])
            .await
            .0,
        200
    );
    assert_eq!(
        server
            .command("account", &open_account("initech"), &[])
            .await
            .0,
        200
    );
    let mut resumed = Feed::open(&server, "?from=1", Some(2)).await;
    let ids: Vec<u64> = [
        resumed.next().await.unwrap(),
        resumed.next().await.unwrap(),
        resumed.next().await.unwrap(),
        resumed.next().await.unwrap(),
    ]
    .iter()
    .map(|m| m.id)
    .collect();
    assert_eq!(ids, [3, 4, 5, 6]);

    // Filters: only AccountOpened, ids stay positions.
    let mut opened = Feed::open(&server, "?from=1&type=AccountOpened", None).await;
    let ids: Vec<u64> = [
        opened.next().await.unwrap(),
        opened.next().await.unwrap(),
        opened.next().await.unwrap(),
    ]
    .iter()
    .map(|m| m.id)
    .collect();
    assert_eq!(ids, [1, 5, 6]);
    let mut cases = Feed::open(&server, "?from=1&category=case", None).await;
    let correlation = "0192f0a0-0000-7000-8000-0000000fee0d";
    let mut traced = Feed::open(&server, &format!("?from=1&correlation={correlation}"), None).await;
    assert_eq!(
        server
            .command(
                "case",
                &serde_json::json!({
                    "type": "OpenCase", "case_id": "c-1", "account_id": "acme",
                    "contact_id": null, "case_type": "question", "category": "billing",
                    "priority": "high", "channel": "email", "sla_policy": null,
                    "is_complaint": false, "is_test": false,
                    "occurred_at": "2026-03-01T00:00:00Z",
                }),
                &[("x-correlation-id", correlation)],
            )
            .await
            .0,
        200,
        "OpenCase fields changed? see domain/src/aggregates/case/commands.rs"
    );
    let case = cases.next().await.unwrap();
    assert_eq!((case.id, case.event.as_str()), (7, "CaseOpened"));
    // Events 1..=6 carry no correlation id: the traced feed's first message is 7.
    let first_traced = traced.next().await.unwrap();
    assert_eq!(
        (first_traced.id, first_traced.event.as_str()),
        (7, "CaseOpened")
    );

    // The live feed has 5, 6 and 7 to send; shutdown ends it (and every open feed) after
    // them. Read first: a feed may not have sent 7 yet when the signal arrives.
    let mut rest = Vec::new();
    for _ in 0..3 {
        rest.push(live.next().await.unwrap().id);
    }
    assert_eq!(rest, [5, 6, 7]);
    server.terminate();
    let end = tokio::time::timeout(std::time::Duration::from_secs(30), live.next())
        .await
        .expect("shutdown did not end the open feed");
    assert!(
        end.is_none(),
        "a message after shutdown: {:?}",
        end.map(|m| m.id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_append_finish() {
    let server = Server::start();
    assert_eq!(
        server
            .command("account", &open_account("acme"), &[])
            .await
            .0,
        200
    );
    // A command whose body arrives in two parts: the request is in flight when SIGTERM comes.
    let body = serde_json::to_vec(&change_segment("acme", "enterprise")).unwrap();
    let (first, rest) = body.split_at(10);
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
    tx.send(first.to_vec()).await.unwrap();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(chunk), rx))
    });
    let request = server
        .client
        .post(server.url("/v1/aggregates/account/commands"))
        .header("content-type", "application/json")
        .header("content-length", body.len().to_string())
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    let pending = tokio::spawn(request);
    // Wait until the server holds the request (its handler is reading the body).
    let mut ready = false;
    for _ in 0..300 {
        let metrics = server
            .client
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // Two requests in flight at the HTTP layer: the command and this scrape.
        if metrics.contains("crm_http_requests_in_flight 2") {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ready, "the command never reached the server");

    server.terminate();
    server.wait_for_stderr("shutting down");
    tx.send(rest.to_vec()).await.unwrap();
    drop(tx);
    let response = pending.await.unwrap().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let result: Value = response.json().await.unwrap();
    assert_eq!(result["stream_version"], 2);
    server.wait_for_stderr("store closed");

    // The append is durable: the log, reopened after the process exits, holds it.
    let mut server = server;
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
    let store = SledStore::open(server.dir.path().join("log")).unwrap();
    assert_eq!(store.head().position, Position(2));
    let events = store.read_all(Position(2), 1).await.unwrap();
    assert_eq!(events[0].event_type, "AccountSegmentChanged");
    store.close().await;
}
