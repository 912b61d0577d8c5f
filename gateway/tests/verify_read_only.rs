//! `crm verify` checks a log another process holds open (as a running server does): it opens
//! it read-only, without writing or locking anything. (The store's own tests check that a
//! read-only open leaves every file as it was.)

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use crm_eventstore::{EventId, EventStore, ExpectedVersion, ProposedEvent, SledStore, StreamId};

fn verify_json(data: &Path) -> serde_json::Value {
    let stdout = common::run_ok(common::crm(data).args(["verify", "--json"]));
    serde_json::from_str(&stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_checks_a_log_held_open_elsewhere() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("log");
    let store = SledStore::open(&log).unwrap();
    let stream = StreamId::new("case-1").unwrap();
    for n in 1..=25u128 {
        let event = ProposedEvent {
            event_id: EventId(uuid::Uuid::from_u128(n)),
            event_type: "CaseOpened".into(),
            schema_version: 1,
            occurred_at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            causation_id: None,
            correlation_id: None,
            actor: "test".into(),
            metadata: Vec::new(),
            payload: b"{}".to_vec(),
        };
        store
            .append(&stream, ExpectedVersion::Any, vec![event])
            .await
            .unwrap();
    }
    // The store stays open (its directory locked) while the verb checks it.
    let report = verify_json(data.path());
    assert_eq!(report["status"], "ok", "{report}");
    assert_eq!(report["checked"], 25, "{report}");
    store.close().await;
    // Closed: verify opens it as usual and finds the same.
    let report = verify_json(data.path());
    assert_eq!(report["status"], "ok", "{report}");
    assert_eq!(report["checked"], 25, "{report}");
}
