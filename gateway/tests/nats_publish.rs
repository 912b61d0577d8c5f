//! Event publication end to end: the real `crm serve --nats URL` binary, a real nats-server
//! (JetStream, `sync_interval: always`) started by the `crm-tests` harness, and a durable
//! JetStream pull consumer with explicit acknowledgement that de-duplicates by `crm-position`,
//! as `gateway/examples/consumer.rs` does.
//!
//! - Across a SIGKILL of the server and a restart, the subscriber receives every log position
//!   exactly once after de-duplication, none missing, in log order and, per stream, in
//!   stream-version order; each message's headers and body match the recorded event.
//! - While NATS is down appends still succeed and the lag shows on `/metrics`; when NATS
//!   returns the backlog drains in order; `crm tail` replays the same events.
//! - In process: a publisher refuses a stream that holds another log's events, and fills a
//!   deleted and recreated stream again from position 1 (stream sequence = log position).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use common::{crm, open_account, run_ok, spawn_serve};
use crm_publish::message::{
    CE_ID, CE_SOURCE, CE_SPECVERSION, CE_SUBJECT, CE_TIME, CE_TYPE, CONTENT_TYPE, CRM_POSITION,
    CRM_SCHEMA_VERSION, CRM_STREAM_VERSION, NATS_EXPECTED_LAST_SEQUENCE, NATS_MSG_ID,
};
use crm_tests::nats::NatsCluster;
use futures_util::StreamExt;
use serde_json::{json, Value};

/// How long any wait for the system to converge may take before the test fails.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(90);

/// A running `crm serve --nats`; killed on drop.
struct Serve {
    child: Child,
    base: String,
    client: reqwest::Client,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    fn start(dir: &Path, nats_url: &str) -> Serve {
        let (mut child, base) = spawn_serve(dir, &["--nats", nats_url]);
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stderr);
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Serve {
            child,
            base,
            client: reqwest::Client::new(),
            stderr,
        }
    }

    /// POSTs a command; the append's positions when it was acknowledged (200).
    async fn command(&self, category: &str, body: &Value) -> Result<(u64, u64), String> {
        post_command(&self.client, &self.base, category, body).await
    }

    /// Every event of the log, by position, as `/v1/events` gives them.
    async fn events(&self) -> BTreeMap<u64, Value> {
        let mut all = BTreeMap::new();
        let mut from = 1;
        loop {
            let page: Value = self
                .client
                .get(format!("{}/v1/events?from={from}&limit=1000", self.base))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let events = page["events"].as_array().unwrap();
            for e in events {
                all.insert(e["position"].as_u64().unwrap(), e.clone());
            }
            match page["next_from"].as_u64() {
                Some(next) if !events.is_empty() => from = next,
                _ => return all,
            }
        }
    }

    /// The value of a Prometheus gauge on `/metrics`.
    async fn gauge(&self, name: &str) -> Option<f64> {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    fn terminate(&mut self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "crm serve exited with {status}");
    }

    fn stderr_tail(&self) -> String {
        let lines = self.stderr.lock().unwrap();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

/// POSTs a command to the server at `base`; the append's positions when acknowledged (200).
async fn post_command(
    client: &reqwest::Client,
    base: &str,
    category: &str,
    body: &Value,
) -> Result<(u64, u64), String> {
    let response = client
        .post(format!("{base}/v1/aggregates/{category}/commands"))
        .json(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    Ok((
        body["first_position"].as_u64().unwrap(),
        body["last_position"].as_u64().unwrap(),
    ))
}

/// One message the subscriber processed (after de-duplication).
#[derive(Debug, Clone)]
struct Received {
    position: u64,
    headers: HashMap<String, String>,
    body: Value,
}

/// What the subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    /// Processed messages, in arrival order.
    processed: Vec<Received>,
    /// Messages delivered again and dropped by the de-duplication.
    duplicates: u64,
    /// Messages delivered in all.
    delivered: u64,
}

/// A durable pull consumer on `CRM_EVENTS` with explicit acks that skips every message whose
/// `crm-position` is not above the last one processed.
async fn subscribe(url: &str) -> Arc<Mutex<Seen>> {
    let client = async_nats::ConnectOptions::new()
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connect(url)
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    // The publisher creates the stream when it first reaches NATS.
    let deadline = tokio::time::Instant::now() + CONVERGE_TIMEOUT;
    let stream = loop {
        match js.get_stream("CRM_EVENTS").await {
            Ok(s) => break s,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the publisher did not create CRM_EVENTS: {e}"),
        }
    };
    let consumer = stream
        .get_or_create_consumer(
            "test-subscriber",
            pull::Config {
                durable_name: Some("test-subscriber".into()),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(5),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = Arc::clone(&seen);
    tokio::spawn(async move {
        let mut last = 0u64;
        loop {
            let Ok(mut messages) = consumer.messages().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            while let Some(next) = messages.next().await {
                let Ok(message) = next else { continue };
                let headers: HashMap<String, String> = message
                    .headers
                    .iter()
                    .flat_map(|h| h.iter())
                    .map(|(k, v)| (k.to_string(), v[0].as_str().to_owned()))
                    .collect();
                let position: u64 = headers[CRM_POSITION].parse().unwrap();
                {
                    let mut seen = shared.lock().unwrap();
                    seen.delivered += 1;
                    if position <= last {
                        seen.duplicates += 1;
                    } else {
                        seen.processed.push(Received {
                            position,
                            headers,
                            body: serde_json::from_slice(&message.payload).unwrap(),
                        });
                        last = position;
                    }
                }
                // A lost ack only means a redelivery, which the de-duplication absorbs.
                let _ = message.ack().await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    seen
}

/// Polls `check` until it holds; panics with `what` and `context()` after the timeout.
async fn wait_until(
    what: &str,
    mut check: impl AsyncFnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = tokio::time::Instant::now() + CONVERGE_TIMEOUT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached within {CONVERGE_TIMEOUT:?}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn last_processed(seen: &Mutex<Seen>) -> u64 {
    seen.lock()
        .unwrap()
        .processed
        .last()
        .map_or(0, |r| r.position)
}

fn change_segment(id: &str, round: usize) -> Value {
    json!({
        "type": "ChangeAccountSegment", "account_id": id,
        "to": if round.is_multiple_of(2) { "enterprise" } else { "smb" },
        "occurred_at": format!("2026-02-{:02}T00:00:00Z", round + 1),
    })
}

/// Checks the processed messages against the log: positions 1..=head each once, in order;
/// per stream in version order; headers and body those of the recorded event. Returns the
/// number of positions checked.
fn check_against_log(seen: &Seen, log: &BTreeMap<u64, Value>) -> u64 {
    let head = log.keys().last().copied().unwrap_or(0);
    let positions: Vec<u64> = seen.processed.iter().map(|r| r.position).collect();
    let expected: Vec<u64> = (1..=head).collect();
    let missing: Vec<u64> = expected
        .iter()
        .filter(|p| !positions.contains(p))
        .copied()
        .collect();
    assert!(missing.is_empty(), "positions never received: {missing:?}");
    assert_eq!(positions, expected, "positions out of log order");
    let mut versions: HashMap<String, u64> = HashMap::new();
    for r in &seen.processed {
        let event = &log[&r.position];
        let h = &r.headers;
        let stream = event["stream_id"].as_str().unwrap();
        let version = event["stream_version"].as_u64().unwrap();
        let previous = versions.insert(stream.to_owned(), version).unwrap_or(0);
        assert_eq!(
            version,
            previous + 1,
            "{stream} out of version order at {}",
            r.position
        );
        assert_eq!(h[CE_SPECVERSION], "1.0");
        assert_eq!(h[CE_ID], event["event_id"].as_str().unwrap());
        assert_eq!(h[NATS_MSG_ID], h[CE_ID]);
        assert_eq!(h[CE_SOURCE], "crm://localhost/log");
        assert_eq!(
            h[CE_TYPE],
            format!(
                "crm.{}.v{}",
                event["event_type"].as_str().unwrap(),
                event["schema_version"]
            )
        );
        let time: chrono::DateTime<chrono::Utc> = h[CE_TIME].parse().unwrap();
        let occurred: chrono::DateTime<chrono::Utc> =
            event["occurred_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(time, occurred);
        assert_eq!(h[CE_SUBJECT], stream);
        assert_eq!(h[CONTENT_TYPE], "application/json");
        assert_eq!(h[CRM_POSITION], r.position.to_string());
        assert_eq!(h[CRM_STREAM_VERSION], version.to_string());
        assert_eq!(h[CRM_SCHEMA_VERSION], event["schema_version"].to_string());
        assert_eq!(h[NATS_EXPECTED_LAST_SEQUENCE], (r.position - 1).to_string());
        assert_eq!(&r.body, event, "body of position {}", r.position);
    }
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_receives_every_position_once_in_order_across_a_publisher_crash() {
    let nats = NatsCluster::single().await;
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(dir.path(), &nats.url());
    let seen = subscribe(&nats.url()).await;
    let mut attempted = 0u64;
    let mut acknowledged: Vec<(u64, u64)> = Vec::new();

    // Before the crash: 8 accounts, 4 segment changes each, one at a time.
    let accounts: Vec<String> = (0..8).map(|i| format!("before-{i}")).collect();
    for id in &accounts {
        attempted += 1;
        acknowledged.push(serve.command("account", &open_account(id)).await.unwrap());
    }
    for round in 0..4 {
        for id in &accounts {
            attempted += 1;
            acknowledged.push(
                serve
                    .command("account", &change_segment(id, round))
                    .await
                    .unwrap(),
            );
        }
    }

    // The crash: SIGKILL while 30 commands are in flight, after a few were acknowledged.
    let base = Arc::new(serve.base.clone());
    let mut burst = tokio::task::JoinSet::new();
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for i in 0..30 {
        let (base, done, client) = (Arc::clone(&base), Arc::clone(&done), serve.client.clone());
        burst.spawn(async move {
            let body = open_account(&format!("burst-{i}"));
            let probe = post_command(&client, &base, "account", &body).await;
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            probe
        });
    }
    attempted += 30;
    while done.load(std::sync::atomic::Ordering::SeqCst) < 5 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    serve.kill();
    let mut refused = 0;
    while let Some(result) = burst.join_next().await {
        match result.unwrap() {
            Ok(positions) => acknowledged.push(positions),
            Err(_) => refused += 1,
        }
    }
    let received_at_crash = last_processed(&seen);

    // After the restart: 8 new accounts with 2 changes each, and one more change of the
    // accounts from before (their 4 changes ended on `smb`).
    let mut serve = Serve::start(dir.path(), &nats.url());
    let fresh: Vec<String> = (0..8).map(|i| format!("after-{i}")).collect();
    for id in &fresh {
        attempted += 1;
        acknowledged.push(serve.command("account", &open_account(id)).await.unwrap());
    }
    for round in 0..2 {
        for id in &fresh {
            attempted += 1;
            acknowledged.push(
                serve
                    .command("account", &change_segment(id, round))
                    .await
                    .unwrap(),
            );
        }
    }
    for id in &accounts {
        attempted += 1;
        acknowledged.push(
            serve
                .command("account", &change_segment(id, 4))
                .await
                .unwrap(),
        );
    }

    let log = serve.events().await;
    let head = log.keys().last().copied().unwrap();
    wait_until(
        "the subscriber receives the head",
        async || last_processed(&seen) >= head,
        || {
            format!(
                "received up to {}; server stderr:\n{}",
                last_processed(&seen),
                serve.stderr_tail()
            )
        },
    )
    .await;
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let checked = check_against_log(&seen, &log);
    let mut lost = 0;
    for (first, last) in &acknowledged {
        for p in *first..=*last {
            if !seen.processed.iter().any(|r| r.position == p) {
                lost += 1;
            }
        }
    }
    assert_eq!(lost, 0, "acknowledged positions never received");
    let acknowledged_events: u64 = acknowledged.iter().map(|(f, l)| l - f + 1).sum();
    writeln!(
        std::io::stderr(),
        "nats publish test: sent {attempted} commands, acknowledged {} ({acknowledged_events} events; {refused} unanswered around the SIGKILL, {received_at_crash} positions received before it); appended {head} events (the log head); received {} positions ({} deliveries, {} duplicates delivered and dropped by the de-duplication); lost 0, duplicated 0, out of order 0; headers and bodies checked {checked}",
        acknowledged.len(),
        seen.processed.len(),
        seen.delivered,
        seen.duplicates,
    )
    .unwrap();

    // A graceful stop saves the checkpoint at the head; `crm project status` reports it.
    serve.terminate();
    let status: Value = serde_json::from_str(&run_ok(
        crm(dir.path()).args(["project", "status", "--json"]),
    ))
    .unwrap();
    let publisher = &status["publisher"];
    assert_eq!(publisher["published_position"], head, "{status}");
    assert_eq!(publisher["head_position"], head);
    assert_eq!(publisher["lag_events"], 0);
    assert_eq!(publisher["stream"], "CRM_EVENTS");
    assert!(status["projections"]
        .as_array()
        .is_some_and(|p| p.len() == 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_succeed_while_nats_is_down_and_the_backlog_drains_in_order() {
    let mut nats = NatsCluster::single().await;
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &nats.url());
    let seen = subscribe(&nats.url()).await;
    for i in 0..10 {
        serve
            .command("account", &open_account(&format!("up-{i}")))
            .await
            .unwrap();
    }
    wait_until(
        "the first 10 events are received",
        async || last_processed(&seen) >= 10,
        || serve.stderr_tail(),
    )
    .await;

    nats.kill(0);
    for i in 0..20 {
        let appended = serve
            .command("account", &open_account(&format!("down-{i}")))
            .await;
        assert!(
            appended.is_ok(),
            "an append failed while NATS was down: {appended:?}"
        );
    }
    wait_until(
        "/metrics shows the backlog and the lost connection",
        async || {
            serve
                .gauge("crm_publisher_lag_events")
                .await
                .is_some_and(|l| l >= 20.0)
                && serve.gauge("crm_publisher_connected").await == Some(0.0)
                && serve
                    .gauge("crm_publisher_lag_seconds")
                    .await
                    .is_some_and(|s| s > 0.0)
        },
        || serve.stderr_tail(),
    )
    .await;
    assert_eq!(
        last_processed(&seen),
        10,
        "nothing can be received while NATS is down"
    );

    nats.restart(0).await;
    let log = serve.events().await;
    assert_eq!(log.len(), 30);
    wait_until(
        "the backlog drains",
        async || last_processed(&seen) >= 30,
        || {
            format!(
                "received up to {}\n{}",
                last_processed(&seen),
                serve.stderr_tail()
            )
        },
    )
    .await;
    wait_until(
        "/metrics shows the publisher caught up",
        async || {
            serve.gauge("crm_publisher_lag_events").await == Some(0.0)
                && serve.gauge("crm_publisher_connected").await == Some(1.0)
                && serve.gauge("crm_publisher_published_position").await == Some(30.0)
        },
        || serve.stderr_tail(),
    )
    .await;
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    check_against_log(&seen, &log);

    // `crm tail` replays the same events from the stream, in order.
    let mut tail = crm(dir.path())
        .args([
            "tail",
            "--nats",
            &nats.url(),
            "--from",
            "1",
            "--limit",
            "30",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = tail.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(&l.unwrap()).unwrap())
            .collect::<Vec<_>>()
    });
    let deadline = std::time::Instant::now() + CONVERGE_TIMEOUT;
    while tail.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = tail.kill();
            panic!("crm tail --limit 30 did not finish");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(tail.wait().unwrap().success());
    let tailed = lines.join().unwrap();
    let bodies: Vec<&Value> = seen.processed.iter().map(|r| &r.body).collect();
    assert_eq!(tailed.iter().collect::<Vec<_>>(), bodies);
    let positions: BTreeSet<u64> = tailed
        .iter()
        .map(|b| b["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, (1..=30).collect());
    writeln!(
        std::io::stderr(),
        "nats outage test: 10 published, 20 appended while NATS was down (all acknowledged), after the restart received 30 positions in order ({} duplicates delivered and dropped), crm tail replayed 30",
        seen.duplicates
    )
    .unwrap();
}

/// `count` single-event appends to `store`, on streams `case-0`, `case-1`, ...
async fn append_cases(store: &crm_eventstore::MemoryStore, prefix: &str, count: u32) {
    use crm_eventstore::{EventId, EventStore, ExpectedVersion, ProposedEvent, StreamId};
    for i in 0..count {
        let event = ProposedEvent {
            event_id: EventId(uuid::Uuid::now_v7()),
            event_type: "CaseOpened".into(),
            schema_version: 1,
            occurred_at: chrono::Utc::now(),
            causation_id: None,
            correlation_id: None,
            actor: prefix.into(),
            metadata: Vec::new(),
            payload: format!(r#"{{"case":"{prefix}-{i}"}}"#).into_bytes(),
        };
        store
            .append(
                &StreamId::new(format!("case-{prefix}{i}")).unwrap(),
                ExpectedVersion::Any,
                vec![event],
            )
            .await
            .unwrap();
    }
}

/// The event ids the JetStream stream holds, by sequence.
async fn stream_ids(js: &async_nats::jetstream::Context) -> Vec<(u64, String)> {
    let mut stream = js.get_stream("CRM_EVENTS").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut ids = Vec::new();
    for seq in 1..=last {
        let message = stream.get_raw_message(seq).await.unwrap();
        ids.push((
            seq,
            message
                .headers
                .get(NATS_MSG_ID)
                .unwrap()
                .as_str()
                .to_owned(),
        ));
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_another_log_is_refused_and_a_recreated_stream_is_filled_again() {
    use crm_eventstore::{EventStore, MemoryStore, Position};
    use crm_publish::{PublishSettings, Publisher, PublisherOptions};

    let nats = NatsCluster::single().await;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let options = PublisherOptions::new(&PublishSettings::default(), &nats.url(), dir.path());
    let log = MemoryStore::new();
    append_cases(&log, "a", 3).await;
    let ids: Vec<(u64, String)> = log
        .read_all(Position(1), 10)
        .await
        .unwrap()
        .iter()
        .map(|e| (e.position.0, e.event_id.0.to_string()))
        .collect();

    let publisher = Publisher::start(log.clone(), options.clone()).unwrap();
    let mut state = publisher.state();
    state.wait_for(|s| s.published_position == 3).await.unwrap();
    publisher.stop().await;
    assert_eq!(
        stream_ids(&js).await,
        ids,
        "sequence = position, id = event id"
    );

    // Another log (other events, same positions) refuses to publish into that stream.
    let other = MemoryStore::new();
    append_cases(&other, "b", 4).await;
    let other_dir = tempfile::tempdir().unwrap();
    let other_options =
        PublisherOptions::new(&PublishSettings::default(), &nats.url(), other_dir.path());
    let publisher = Publisher::start(other.clone(), other_options).unwrap();
    let mut state = publisher.state();
    let refused = state
        .wait_for(|s| s.last_error.is_some())
        .await
        .unwrap()
        .clone();
    let error = refused.last_error.unwrap();
    assert!(error.contains("does not hold this log"), "{error}");
    assert!(!refused.connected);
    let status = publisher.status().await;
    assert_eq!((status.published_position, status.lag_events), (0, 4));
    publisher.stop().await;
    assert_eq!(
        stream_ids(&js).await,
        ids,
        "nothing of the other log was published"
    );

    // The stream is deleted and recreated: the publisher fills it again from position 1,
    // although its checkpoint says 3, then follows the log.
    js.delete_stream("CRM_EVENTS").await.unwrap();
    let publisher = Publisher::start(log.clone(), options).unwrap();
    let mut state = publisher.state();
    state.wait_for(|s| s.connected).await.unwrap();
    append_cases(&log, "c", 2).await;
    state.wait_for(|s| s.published_position == 5).await.unwrap();
    publisher.stop().await;
    let all: Vec<(u64, String)> = log
        .read_all(Position(1), 10)
        .await
        .unwrap()
        .iter()
        .map(|e| (e.position.0, e.event_id.0.to_string()))
        .collect();
    assert_eq!(stream_ids(&js).await, all);
    let saved = crm_publish::checkpoint::load(&crm_publish::checkpoint::path(dir.path()))
        .unwrap()
        .unwrap();
    assert_eq!(saved.position, 5);
}

#[tokio::test]
async fn published_events_carry_personal_data_only_sealed_and_the_broker_keeps_no_plaintext() {
    let nats = NatsCluster::single().await;
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(dir.path(), &nats.url());
    let seen = subscribe(&nats.url()).await;
    let (name, email) = ("Pia Brokermark-6604", "pia.broker6604@example.org");
    serve
        .command(
            "contact",
            &json!({
                "type": "AddContact", "contact_id": "p1", "account_id": "acme", "role": "user",
                "personal": { "full_name": name, "email": email, "phone": null },
                "is_test": false, "occurred_at": "2026-01-03T00:00:00Z",
            }),
        )
        .await
        .unwrap();
    serve
        .command(
            "contact",
            &json!({"type": "EraseContactPersonalData", "contact_id": "p1", "reason": "asked", "occurred_at": "2026-01-04T00:00:00Z"}),
        )
        .await
        .unwrap();
    wait_until(
        "both events are received",
        async || last_processed(&seen) >= 2,
        || serve.stderr_tail(),
    )
    .await;
    {
        let seen = seen.lock().unwrap();
        let added = &seen.processed[0].body;
        let personal = &added["payload"]["personal"];
        assert_eq!(personal["sealed_with"], "contact-p1", "{added}");
        assert!(
            personal["ciphertext"].as_str().unwrap().len() > 40,
            "{added}"
        );
        let text = added.to_string();
        assert!(!text.contains(name) && !text.contains(email), "{text}");
        assert_eq!(
            seen.processed[1].body["event_type"], "ContactPersonalDataErased",
            "{}",
            seen.processed[1].body
        );
    }
    // The log itself shows the erasure marker now; the broker's copy was never plaintext.
    let log = serve.events().await;
    assert_eq!(log[&1]["payload"]["personal"], "[erased]", "{}", log[&1]);
    serve.terminate();
    for file in common::files(nats.dir()) {
        let bytes = std::fs::read(&file).unwrap();
        for needle in [name, email] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} in {}",
                file.display()
            );
        }
    }
}
