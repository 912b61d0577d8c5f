//! Personal data through the real `crm` binary: sealed at rest, shown to whom may see it,
//! erased for good. Subjects are created with unique marker strings; after an erasure and
//! the server's exit, no file under the data directory holds the erased subject's strings
//! or its wrapped key, the other subjects still decrypt, every read path shows the marker,
//! and `crm verify` still passes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use crm_eventstore::Position;
use serde_json::{json, Value};

const ERASED: &str = "[erased]";

fn add_contact(id: &str, name: &str, email: &str, phone: &str) -> Value {
    json!({
        "type": "AddContact", "contact_id": id, "account_id": "acme", "role": "champion",
        "personal": { "full_name": name, "email": email, "phone": phone },
        "is_test": false, "occurred_at": "2026-01-03T00:00:00Z",
    })
}

fn capture_lead(id: &str, name: &str, email: &str) -> Value {
    json!({
        "type": "CaptureLead", "lead_id": id, "source": "web form", "channel": "email",
        "campaign": null, "product": null, "industry": null, "region": null,
        "referred_by": null, "personal": { "full_name": name, "email": email, "phone": null },
        "is_test": false, "occurred_at": "2026-01-04T00:00:00Z",
    })
}

fn register_agent(id: &str, name: &str) -> Value {
    json!({
        "type": "RegisterAgent", "agent_id": id,
        "personal": { "full_name": name, "email": null, "phone": null },
        "occurred_at": "2026-01-01T00:00:00Z",
    })
}

/// The files under `dir` holding `needle`.
fn holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|f| {
            std::fs::read(f)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
        })
        .collect()
}

/// The `personal` value of the first event of `stream` as GET /v1/streams shows it.
async fn personal_in_stream(server: &Server, stream: &str) -> Value {
    let (status, page) = server.get(&format!("/v1/streams/{stream}")).await;
    assert_eq!(status, 200, "{page}");
    page["events"][0]["payload"]["personal"].clone()
}

/// The SSE messages of `/v1/feed?from=1` until `count` events arrived.
async fn feed_events(server: &Server, count: usize) -> Vec<Value> {
    let mut response = server
        .client
        .get(server.url("/v1/feed?from=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut text = String::new();
    let mut events = Vec::new();
    while events.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("the feed sends the history")
            .unwrap()
            .expect("the feed stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let message: String = text.drain(..end + 2).collect();
            if let Some(data) = message.lines().find_map(|l| l.strip_prefix("data:")) {
                events.push(serde_json::from_str(data.trim()).unwrap());
            }
        }
    }
    events
}

#[tokio::test]
async fn an_erased_subject_leaves_no_trace_in_any_file_and_every_read_shows_the_marker() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let server = Server::start_in(tempfile::TempDir::new_in(&data).unwrap());
    let dir = server.dir.path().to_owned();

    let erased = [
        "Zyx Erasemark-8841",
        "zyx.erase8841@example.org",
        "+44 8841 0001",
    ];
    let kept = [
        "Qwv Keepmark-5523",
        "qwv.keep5523@example.org",
        "+44 5523 0002",
    ];
    let lead = ["Lum Leadmark-3390", "lum.lead3390@example.org"];
    let agent = "Ona Agentmark-7102";
    for (category, body) in [
        (
            "contact",
            add_contact("c1", erased[0], erased[1], erased[2]),
        ),
        ("contact", add_contact("c2", kept[0], kept[1], kept[2])),
        ("lead", capture_lead("l1", lead[0], lead[1])),
        ("agent", register_agent("a1", agent)),
    ] {
        let (status, _, answer) = server.command(category, &body, &[]).await;
        assert_eq!(status, 200, "{answer}");
    }
    // Sealed at rest from the first write: no marker string in any file, even before erasure.
    for needle in erased.iter().chain(&kept).chain(&lead).chain([&agent]) {
        assert_eq!(
            holding(&dir, needle.as_bytes()),
            Vec::<PathBuf>::new(),
            "{needle}"
        );
    }
    // Shown in the clear to a caller allowed to see it (the loopback caller is admin).
    assert_eq!(
        personal_in_stream(&server, "contact-c1").await["full_name"],
        erased[0]
    );
    let key_file = files(&dir.join("keys"))
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "key"))
        .find(|f| {
            std::fs::read(f)
                .unwrap()
                .windows(10)
                .any(|w| w == b"contact-c1")
        })
        .expect("contact-c1 has a key file");
    let wrapped_key = std::fs::read(&key_file).unwrap();
    // An anchor taken before the erasure: the log is not rewritten, so it still holds after.
    let (_, page) = server.get("/v1/events?from=4&limit=1").await;
    let anchor = format!("4:{}", page["events"][0]["hash"].as_str().unwrap());

    // Erase the contact on the admin route, the lead with its domain command.
    let response = server
        .client
        .post(server.url("/v1/subjects/contact-c1/erasure"))
        .json(&json!({"reason": "GDPR Art. 17 request 2026-17"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let erasure: Value = response.json().await.unwrap();
    assert_eq!(
        erasure["event_type"], "ContactPersonalDataErased",
        "{erasure}"
    );
    assert_eq!(erasure["already_erased"], false, "{erasure}");
    assert_eq!(erasure["actor"], "local:loopback", "{erasure}");
    let again: Value = server
        .client
        .post(server.url("/v1/subjects/contact-c1/erasure"))
        .json(&json!({"reason": "resent"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["already_erased"], true, "{again}");
    assert_eq!(again["position"], erasure["position"], "{again}");
    let (status, _, answer) = server
        .command(
            "lead",
            &json!({"type": "EraseLeadPersonalData", "lead_id": "l1", "reason": "asked", "occurred_at": "2026-02-01T00:00:00Z"}),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    // Not a subject, no such subject.
    let (status, body) = (
        server
            .client
            .post(server.url("/v1/subjects/account-acme/erasure"))
            .json(&json!({"reason": "x"}))
            .send()
            .await
            .unwrap(),
        (),
    );
    assert_eq!(status.status(), 400, "{body:?}");
    let missing = server
        .client
        .post(server.url("/v1/subjects/contact-nobody/erasure"))
        .json(&json!({"reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // Streams.
    assert_eq!(personal_in_stream(&server, "contact-c1").await, ERASED);
    assert_eq!(personal_in_stream(&server, "lead-l1").await, ERASED);
    assert_eq!(
        personal_in_stream(&server, "contact-c2").await["email"],
        kept[1]
    );
    assert_eq!(
        personal_in_stream(&server, "agent-a1").await["full_name"],
        agent
    );
    // Log pages.
    let (status, page) = server.get("/v1/events?category=contact").await;
    assert_eq!(status, 200, "{page}");
    let shown: Vec<&Value> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == "ContactAdded")
        .map(|e| &e["payload"]["personal"])
        .collect();
    assert_eq!(shown.len(), 2, "{page}");
    assert_eq!(shown[0], ERASED);
    assert_eq!(shown[1]["full_name"], kept[0]);
    // The live feed, from the start.
    let feed = feed_events(&server, 4).await;
    assert_eq!(feed[0]["payload"]["personal"], ERASED, "{:?}", feed[0]);
    assert_eq!(feed[1]["payload"]["personal"]["full_name"], kept[0]);
    assert_eq!(feed[2]["payload"]["personal"], ERASED);
    // Explain rows, read models and the answer caches never carry personal fields.
    for path in [
        "/v1/metrics/marketing.new_leads/explain",
        "/v1/read-models/pipeline",
        "/v1/metrics/marketing.new_leads",
    ] {
        let text = server
            .client
            .get(server.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for needle in erased.iter().chain(&lead) {
            assert!(!text.contains(needle), "{path}: {text}");
        }
    }

    // Close the store, then scan every file: log, key store, snapshots, caches.
    server.terminate();
    let mut server = server;
    assert!(server.child.wait().unwrap().success());
    let stored = files(&dir);
    assert!(
        stored.iter().any(|f| f.starts_with(dir.join("log"))),
        "{stored:?}"
    );
    for needle in erased.iter().chain(&lead) {
        assert_eq!(
            holding(parent.path(), needle.as_bytes()),
            Vec::<PathBuf>::new(),
            "{needle}"
        );
    }
    let sealed_part = &wrapped_key[wrapped_key.len() - 48..];
    assert_eq!(
        holding(parent.path(), sealed_part),
        Vec::<PathBuf>::new(),
        "the wrapped key"
    );
    assert!(!key_file.exists());

    // The log still verifies; the other subjects still decrypt; the CLI shows the marker.
    let verified = run_ok(crm(&dir).args(["verify", "--anchor", &anchor]));
    assert!(verified.contains("anchor 4 ok"), "{verified}");
    let c2 = run_ok(crm(&dir).args(["events", "--stream", "contact-c2", "--json"]));
    assert!(c2.contains(kept[0]) && c2.contains(kept[2]), "{c2}");
    let c1 = run_ok(crm(&dir).args(["events", "--stream", "contact-c1", "--json"]));
    assert!(c1.contains(r#""personal":"[erased]""#), "{c1}");
    let status = run_ok(crm(&dir).args(["keys", "status", "--json"]));
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["subjects_erased"], 2, "{status}");
    assert_eq!(status["subjects_with_key"], 2, "{status}");

    // The CLI erases too, recording the local user.
    let out = run_ok(crm(&dir).args(["erase", "agent-a1", "--reason", "left", "--json"]));
    let erased_agent: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        erased_agent["event_type"], "AgentPersonalDataErased",
        "{out}"
    );
    assert!(
        erased_agent["actor"]
            .as_str()
            .unwrap()
            .starts_with("local:"),
        "{out}"
    );
    let a1 = run_ok(crm(&dir).args(["events", "--stream", "agent-a1", "--json"]));
    assert!(a1.contains(r#""personal":"[erased]""#), "{a1}");
    assert_eq!(
        holding(parent.path(), agent.as_bytes()),
        Vec::<PathBuf>::new()
    );

    // A lost key (no erasure recorded) is an error naming the subject, never "[erased]".
    for file in files(&dir.join("keys")) {
        if std::fs::read(&file)
            .unwrap()
            .windows(10)
            .any(|w| w == b"contact-c2")
        {
            std::fs::remove_file(&file).unwrap();
        }
    }
    let out = crm(&dir)
        .args(["events", "--stream", "contact-c2", "--json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("contact-c2")
            && stderr.contains("missing")
            && stderr.contains("position 2"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(ERASED));
}

#[tokio::test]
async fn without_the_master_key_the_server_refuses_to_start_and_says_how() {
    let dir = tempfile::tempdir().unwrap();
    let out = crm(dir.path())
        .env_remove("CRM_MASTER_KEY")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no master key")
            && stderr.contains("CRM_MASTER_KEY")
            && stderr.contains("crm keys init"),
        "{stderr}"
    );
    assert!(!dir.path().join("log").exists(), "nothing was created");
    // `crm keys init` creates the default key beside the data directory; then it starts.
    let data = dir.path().join("data");
    let init = run_ok(
        crm(&data)
            .env_remove("CRM_MASTER_KEY")
            .args(["keys", "init"]),
    );
    assert!(init.contains("data.master-key"), "{init}");
    let out = crm(&data)
        .env_remove("CRM_MASTER_KEY")
        .args(["import", "jsonl", "/dev/null"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_ciphertext_altered_on_disk_is_reported_at_its_position_never_shown_as_text() {
    let server = Server::start();
    let (status, _, answer) = server
        .command(
            "contact",
            &add_contact("t1", "Tam Pered", "tam@example.org", "+1 555"),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    server.terminate();
    let mut server = server;
    assert!(server.child.wait().unwrap().success());
    let dir = server.dir.path().to_owned();
    // Alter one character of the sealed value where the log stores it.
    let needle = b"\"ciphertext\":\"";
    let mut altered = false;
    crm_eventstore::sled_store::testing::alter_frame(&dir.join("log"), Position(1), |frame| {
        if let Some(at) = frame.windows(needle.len()).position(|w| w == needle) {
            let at = at + needle.len() + 30;
            frame[at] = if frame[at] == b'A' { b'B' } else { b'A' };
            altered = true;
        }
    })
    .unwrap();
    assert!(altered, "the sealed value is in the record");
    let out = crm(&dir)
        .args(["events", "--stream", "contact-t1", "--json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("Tam Pered"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("position 1"), "{stderr}");
    let verify = crm(&dir).args(["verify"]).output().unwrap();
    assert!(!verify.status.success());
}
