//! `crm verify` reads the log without writing or locking anything: it checks a log another
//! process holds open (as a running server does), and leaves every file of the log as it
//! was, so a read-only copy or backup is checked as it is.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use crm_eventstore::{EventId, EventStore, ExpectedVersion, ProposedEvent, SledStore, StreamId};

fn files(dir: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            let m = std::fs::metadata(&p).unwrap();
            out.push((p, m.len(), m.modified().unwrap()));
        }
    }
    out.sort();
    out
}

fn verify_json(data: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_crm"))
        .arg("--data-dir")
        .arg(data)
        .args(["verify", "--json"])
        .env("CRM_MASTER_KEY", common::TEST_MASTER_KEY)
        .env_remove("CRM_MASTER_KEY_FILE")
        .env_remove("CRM_CONFIG")
        .env_remove("CRM_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_checks_a_log_held_open_elsewhere_and_writes_nothing() {
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
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let before = files(&log);
    let report = verify_json(data.path());
    assert_eq!(report["status"], "ok", "{report}");
    assert_eq!(files(&log), before, "verify changed the log's files");
}
