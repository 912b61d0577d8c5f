//! A damaged log through the real `crm` binary: a small log is imported, closed, and the
//! record at position 4 damaged (one flipped bit, `flip_byte`). Then:
//!
//! - `crm verify --json` prints a report naming position 4 and the remedy, exit 1; it prints
//!   one also for a missing log; `crm verify`, `crm stats` and `crm events` name the
//!   position and say to restore from a replica or backup, never to retry;
//! - `crm serve`: a read that meets the damaged record is 500 `log-damaged` without
//!   `Retry-After`, `/readyz` answers 503 `log-damaged` from then on, `/v1/feed` from
//!   position 1 sends events 1 to 3, one `error` message carrying the problem, and ends;
//! - the NATS publisher publishes positions 1 to 3, reports the damage once and stops;
//! - `crm serve` on a log cut short, whose open fails on the damage: it stays up, `/healthz`
//!   200, `/readyz` and the API 503 `log-damaged` without `Retry-After`, exit 0 on SIGTERM;
//!   a log it cannot open for another reason (locked, a data directory that is a file)
//!   still exits 1 at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{crm, run_ok, Server};
use crm_eventstore::Position;
use futures_util::StreamExt;
use serde_json::Value;

/// The damaged record.
const DAMAGED: u64 = 4;
/// How long any wait of these tests may take before it fails.
const WAIT: Duration = Duration::from_secs(20);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A data directory whose log holds 6 events (3 accounts, 3 subscriptions), the one at
/// position 4 damaged.
fn damaged_log() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let csv = fixture("contracts.csv");
    let mapping = fixture("contracts.toml");
    run_ok(crm(dir.path()).args([
        "import",
        "csv",
        csv.to_str().unwrap(),
        "--mapping",
        mapping.to_str().unwrap(),
    ]));
    crm_eventstore::sled_store::testing::flip_byte(&dir.path().join("log"), Position(DAMAGED))
        .unwrap();
    dir
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A message of a damaged log: names the position and restoring, invites no retry.
fn assert_names_damage_and_restore(shown: &str) {
    assert!(shown.contains(&format!("position {DAMAGED}")), "{shown}");
    assert!(shown.contains("replica or backup"), "{shown}");
    for wrong in [
        "check the disk and retry",
        "check the path and its permissions",
    ] {
        assert!(!shown.contains(wrong), "{shown}");
    }
}

#[test]
fn verify_reports_the_damage_as_json_and_every_reading_verb_names_it() {
    let dir = damaged_log();

    let out = crm(dir.path()).args(["verify", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)));
    assert_eq!(report["status"], "damaged", "{report}");
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_bad_position"], DAMAGED, "{report}");
    assert_eq!(report["checked"], DAMAGED - 1, "{report}");
    assert_eq!(
        report["checked_positions"],
        serde_json::json!({"first": 1, "last": DAMAGED - 1})
    );
    assert_eq!(
        report["unchecked_positions"],
        serde_json::json!({"first": DAMAGED, "last": 6})
    );
    assert_eq!(
        report["damage"],
        serde_json::json!({"kind": "at", "position": DAMAGED})
    );
    assert!(report["reason"].as_str().unwrap().len() > 10, "{report}");
    assert_names_damage_and_restore(report["remedy"].as_str().unwrap());
    assert!(
        report["ops_guide"]
            .as_str()
            .unwrap()
            .contains("Restoring a damaged log"),
        "{report}"
    );

    let out = crm(dir.path()).arg("verify").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let shown = text(&out.stdout);
    assert!(shown.contains("verify FAILED at position 4"), "{shown}");
    assert_names_damage_and_restore(&shown);

    for verb in [&["stats"][..], &["events"], &["events", "--json"]] {
        let out = crm(dir.path()).args(verb).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{verb:?}");
        assert_names_damage_and_restore(&text(&out.stderr));
    }

    // No log at all: still a JSON report, status `error`, with what to do.
    let out = crm(&dir.path().join("nothing"))
        .args(["verify", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "error", "{report}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("there is no log at"),
        "{report}"
    );
    assert!(report["remedy"].is_string(), "{report}");

    // A flag that does not parse: the usage error (exit 2), and still the report.
    let out = crm(dir.path())
        .args(["verify", "--json", "--anchor", "6-abc"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("POSITION:HASH"),
        "{}",
        text(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "error", "{report}");
    assert!(
        report["reason"].as_str().unwrap().contains("--anchor"),
        "{report}"
    );
}

/// Every file under `dir` whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    common::files(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect()
}

/// A data directory whose log of 6 events was cut in the middle of its records (a truncated
/// copy, a full disk during a copy): its open fails on the damage.
fn log_cut_short() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let csv = fixture("contracts.csv");
    let mapping = fixture("contracts.toml");
    run_ok(crm(dir.path()).args([
        "import",
        "csv",
        csv.to_str().unwrap(),
        "--mapping",
        mapping.to_str().unwrap(),
    ]));
    // The embedded log keeps its records in segment files: cut the one holding them.
    let segments = files_ending(&dir.path().join("log"), ".seg");
    assert_eq!(segments.len(), 1, "{segments:?}");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segments[0])
        .unwrap();
    let size = file.metadata().unwrap().len();
    file.set_len(size / 2).unwrap();
    drop(file);
    dir
}

#[test]
fn a_log_cut_short_is_named_at_open_and_verify_still_reports_as_json() {
    let dir = log_cut_short();

    let out = crm(dir.path()).args(["verify", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)));
    assert_eq!(report["status"], "damaged", "{report}");
    let first_bad = report["first_bad_position"].as_u64().unwrap();
    assert!((2..=6).contains(&first_bad), "{report}");
    let remedy = report["remedy"].as_str().unwrap();
    assert!(
        remedy.contains(&format!("position {first_bad}")),
        "{report}"
    );
    assert!(remedy.contains("replica or backup"), "{report}");
    // (`crm serve` stays up, not ready: see the test after this one.)
    for verb in ["stats", "events"] {
        let out = crm(dir.path()).args([verb]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{verb}");
        let shown = text(&out.stderr);
        assert!(
            shown.contains(&format!("position {first_bad}")),
            "{verb}: {shown}"
        );
        assert!(shown.contains("replica or backup"), "{verb}: {shown}");
    }
}

/// Waits at most [`WAIT`] for `child` to exit; its status (kills it and fails if it did
/// not).
fn wait_for_exit(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `/readyz`'s status and problem document, asserting it does not invite a retry.
async fn readyz_without_retry_after(server: &Server) -> (u16, Value) {
    let response = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("retry-after").is_none());
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_a_log_that_does_not_open_for_damage_stays_up_not_ready_until_stopped() {
    let mut server = Server::start_in(log_cut_short());
    let data_dir = server.dir.path().display().to_string();

    let (status, health) = server.get("/healthz").await;
    assert_eq!((status, &health["status"]), (200, &Value::from("ok")));

    // Not ready, naming the damage and the remedy, without an invitation to retry.
    let (status, problem) = readyz_without_retry_after(&server).await;
    let detail = common::assert_problem(status, &problem, 503, "log-damaged");
    let first_bad = problem["damaged_position"].as_u64().unwrap();
    assert!((2..=6).contains(&first_bad), "{problem}");
    assert!(
        detail.contains(&format!("position {first_bad}")),
        "{detail}"
    );
    assert!(detail.contains("replica or backup"), "{detail}");
    assert!(!detail.contains(&data_dir), "{detail}");

    // Every other route: the same 503, without positions or paths, whoever asks.
    let requests = [
        server.client.get(server.url("/v1/events?from=1")),
        server
            .client
            .post(server.url("/v1/aggregates/account/commands"))
            .json(&common::open_account("a-1")),
        server.client.get(server.url("/v1/feed")),
        server.client.get(server.url("/metrics")),
        server
            .client
            .get(server.url("/v1/auth/whoami"))
            .bearer_auth("crm_0000_not-a-token"),
    ];
    for request in requests {
        let response = request.send().await.unwrap();
        let url = response.url().clone();
        assert!(response.headers().get("retry-after").is_none(), "{url}");
        let status = response.status().as_u16();
        let problem: Value = response.json().await.unwrap();
        let detail = common::assert_problem(status, &problem, 503, "log-damaged");
        assert!(
            problem.get("damaged_position").is_none(),
            "{url}: {problem}"
        );
        assert!(!detail.contains("position"), "{url}: {detail}");
        assert!(!detail.contains(&data_dir), "{url}: {detail}");
    }

    // The damage and the remedy are logged once, at error level.
    let next_line = || {
        server
            .stderr
            .recv_timeout(WAIT)
            .expect("the server wrote no more to stderr")
    };
    let logged = std::iter::repeat_with(next_line)
        .find(|line| line.contains("could not be opened"))
        .unwrap();
    assert!(logged.contains("ERROR"), "{logged}");
    assert!(
        logged.contains(&format!("damaged at position {first_bad}")),
        "{logged}"
    );
    assert!(logged.contains("replica or backup"), "{logged}");
    // Stopped like the running server: SIGTERM, exit 0.
    server.terminate();
    let rest: Vec<String> = std::iter::repeat_with(next_line)
        .take_while(|line| line != "stopped: the log was not opened")
        .collect();
    assert!(
        !rest.iter().any(|l| l.contains("could not be opened")),
        "logged twice: {rest:?}"
    );
    let status = wait_for_exit(&mut server.child, "the not-ready server");
    assert_eq!(status.code(), Some(0), "{status}");
}

/// Runs `crm serve` on `data_dir` (a free loopback port) until it exits within [`WAIT`]:
/// its status and its output.
fn serve_until_exit(
    data_dir: &std::path::Path,
    what: &str,
) -> (std::process::ExitStatus, std::process::Output) {
    let mut serve = crm(data_dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for_exit(&mut serve, what);
    (status, serve.wait_with_output().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_a_log_it_cannot_open_for_another_reason_still_exits_1() {
    // Locked by a running server: the open waits for the lock a few seconds, then fails.
    let running = Server::start();
    let (status, out) = serve_until_exit(running.dir.path(), "crm serve on a locked log");
    assert_eq!(status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("in use"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !text(&out.stdout).contains("listening on"),
        "{}",
        text(&out.stdout)
    );
    let (status, _) = running.get("/readyz").await;
    assert_eq!(status, 200);

    // A data directory that is a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    std::fs::write(&file, "not a directory").unwrap();
    let (status, out) = serve_until_exit(&file, "crm serve on a file");
    assert_eq!(status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("log-damaged"),
        "{}",
        text(&out.stderr)
    );
}

/// One Server-Sent Events message.
#[derive(Debug)]
struct Message {
    id: Option<u64>,
    event: String,
    data: String,
}

/// Every message of a feed until the server ends it (fails after [`WAIT`]).
async fn read_feed_to_its_end(server: &Server, query: &str) -> Vec<Message> {
    let response = server
        .client
        .get(server.url(&format!("/v1/feed{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let read = async {
        while let Some(chunk) = body.next().await {
            buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the feed did not end after its error");
    buffer
        .split("\n\n")
        .filter_map(|block| {
            let mut message = Message {
                id: None,
                event: String::new(),
                data: String::new(),
            };
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    message.id = Some(v.trim().parse().unwrap());
                } else if let Some(v) = line.strip_prefix("event:") {
                    message.event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    message.data.push_str(v.trim_start());
                }
            }
            (!message.event.is_empty()).then_some(message)
        })
        .collect()
}

/// Asserts a `log-damaged` problem naming the damaged position; returns its detail.
fn assert_log_damaged(status: u16, problem: &Value, expected: u16) -> String {
    let detail = common::assert_problem(status, problem, expected, "log-damaged");
    assert_eq!(problem["damaged_position"], DAMAGED, "{problem}");
    assert_names_damage_and_restore(&detail);
    detail
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_log_damaged_turns_not_ready_and_ends_a_feed_after_one_error() {
    let server = Server::start_in(damaged_log());

    // The feed from position 1: the three intact events, one error, the end.
    let messages = read_feed_to_its_end(&server, "?from=1").await;
    let ids: Vec<Option<u64>> = messages.iter().map(|m| m.id).collect();
    assert_eq!(ids, [Some(1), Some(2), Some(3), None], "{messages:?}");
    let error = &messages[3];
    assert_eq!(error.event, "error");
    let problem: Value = serde_json::from_str(&error.data).unwrap();
    assert_log_damaged(500, &problem, 500);

    // Reads that meet the damaged record: 500, no Retry-After.
    for path in ["/v1/events?from=1", "/v1/streams/subscription-V-1002"] {
        let response = server.client.get(server.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        assert!(
            response.headers().get("retry-after").is_none(),
            "{path}: {:?}",
            response.headers()
        );
        let problem: Value = response.json().await.unwrap();
        assert_log_damaged(status, &problem, 500);
    }
    // Reads that do not meet it are served.
    let (status, page) = server.get("/v1/events?from=1&limit=3").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"].as_array().unwrap().len(), 3);

    // Not ready from now on, without an invitation to retry.
    let (status, problem) = readyz_without_retry_after(&server).await;
    assert_log_damaged(status, &problem, 503);

    // A feed that would start at the damaged record (an EventSource reconnecting with
    // `Last-Event-ID: 3`) is answered with the problem, not an event stream.
    let response = server
        .client
        .get(server.url("/v1/feed"))
        .header("Last-Event-ID", "3")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let problem: Value = response.json().await.unwrap();
    assert_log_damaged(status, &problem, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_publishes_up_to_the_damage_reports_it_once_and_stops() {
    use crm_eventstore::{EventStore, SledStore};
    use crm_publish::{PublishSettings, Publisher, PublisherOptions};
    use crm_tests::nats::NatsCluster;

    let dir = damaged_log();
    let nats = NatsCluster::single().await;
    let store = SledStore::open(dir.path().join("log")).unwrap();
    let intact: Vec<String> = store
        .read_all(Position(1), 3)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event_id.0.to_string())
        .collect();
    let options = PublisherOptions::new(&PublishSettings::default(), &nats.url(), dir.path());
    let publisher = Publisher::start(store.clone(), options).unwrap();
    let mut state = publisher.state();
    let reported = tokio::time::timeout(WAIT, state.wait_for(|s| s.last_error.is_some()))
        .await
        .expect("the publisher did not report the damage")
        .unwrap()
        .clone();
    let error = reported.last_error.unwrap();
    assert_names_damage_and_restore(&error);
    assert_eq!(reported.published_position, DAMAGED - 1, "{error}");
    // Stopped, not retrying: its state does not change again (a retry would within
    // milliseconds: the first backoff is 100 ms).
    assert!(
        tokio::time::timeout(Duration::from_secs(2), state.changed())
            .await
            .is_err(),
        "the publisher kept trying after the damage"
    );
    publisher.stop().await;
    store.close().await;

    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let mut stream = js.get_stream("CRM_EVENTS").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    assert_eq!(last, DAMAGED - 1);
    let mut published = Vec::new();
    for seq in 1..=last {
        let message = stream.get_raw_message(seq).await.unwrap();
        published.push(
            message
                .headers
                .get(crm_publish::message::NATS_MSG_ID)
                .unwrap()
                .as_str()
                .to_owned(),
        );
    }
    assert_eq!(published, intact);
}
