//! Signed checkpoints end to end: `crm serve` signs the head on schedule and on
//! `POST /v1/checkpoints`, lists what it kept with the public key, and a note is checked with
//! that key alone (`crm checkpoint verify --key`), against the log (`--log`), and refused
//! with the reason when altered or checked with another key.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{crm, open_account, run_ok, Server};
use serde_json::Value;

/// How long the scheduled signer gets to sign a moved head (it ticks every second here).
const SCHEDULE_WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_signed_kept_listed_and_verified_with_the_public_key_alone() {
    let server = Server::start_with(tempfile::tempdir().unwrap(), &["--checkpoint-every", "1"]);
    // An empty log has nothing to sign.
    let empty = server
        .client
        .post(server.url("/v1/checkpoints"))
        .send()
        .await
        .unwrap();
    let status = empty.status().as_u16();
    common::assert_problem(status, &empty.json().await.unwrap(), 422, "rule-violated");

    let (status, _, body) = server.command("account", &open_account("a1"), &[]).await;
    assert_eq!(status, 200, "{body}");
    // The schedule signs the moved head.
    let started = Instant::now();
    let listed = loop {
        let (status, listed) = server.get("/v1/checkpoints").await;
        assert_eq!(status, 200, "{listed}");
        if !listed["checkpoints"].as_array().unwrap().is_empty() {
            break listed;
        }
        assert!(
            started.elapsed() < SCHEDULE_WAIT,
            "no scheduled checkpoint: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let head = server.head().await;
    assert_eq!(listed["checkpoints"][0]["position"], head);
    let key = listed["key"].as_str().unwrap().to_owned();

    // On demand: the same head gives the kept checkpoint (200), a moved head a new one (201).
    let again = server
        .client
        .post(server.url("/v1/checkpoints"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["new"], false);
    assert_eq!(again["checkpoint"]["position"], head);
    let (status, _, body) = server.command("account", &open_account("a2"), &[]).await;
    assert_eq!(status, 200, "{body}");
    let signed = server
        .client
        .post(server.url("/v1/checkpoints"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status().as_u16(), 201);
    let signed: Value = signed.json().await.unwrap();
    assert_eq!(signed["checkpoint"]["position"], head + 1);
    let note = signed["checkpoint"]["note"].as_str().unwrap().to_owned();
    let (_, listed) = server.get("/v1/checkpoints?limit=1").await;
    assert_eq!(listed["checkpoints"].as_array().unwrap().len(), 1);
    assert_eq!(listed["checkpoints"][0]["note"], note.as_str());

    server.terminate();
    let dir = server.dir.path().to_path_buf();
    let mut server = server;
    server.child.wait().unwrap();

    // The key the CLI shows is the one the server signed with.
    let shown = run_ok(crm(&dir).args(["keys", "show"]));
    assert_eq!(shown.trim(), key);
    let file = dir.join("signed.note");
    std::fs::write(&file, &note).unwrap();
    // With the public key alone: no data directory at all.
    let elsewhere = tempfile::tempdir().unwrap();
    let checked = run_ok(crm(elsewhere.path()).args([
        "checkpoint",
        "verify",
        file.to_str().unwrap(),
        "--key",
        &key,
        "--json",
    ]));
    let checked: Value = serde_json::from_str(&checked).unwrap();
    assert_eq!(checked["checkpoint"]["position"], head + 1);
    // Against the log: it holds that head.
    run_ok(crm(&dir).args(["checkpoint", "verify", file.to_str().unwrap(), "--log"]));
    let kept = run_ok(crm(&dir).args(["checkpoint", "list", "--json"]));
    let kept: Value = serde_json::from_str(&kept).unwrap();
    assert!(kept["checkpoints"].as_array().unwrap().len() >= 2, "{kept}");

    // Altered, or checked with another server's key: refused with the reason.
    let altered = dir.join("altered.note");
    std::fs::write(
        &altered,
        note.replacen(&format!("\n{}\n", head + 1), &format!("\n{head}\n"), 1),
    )
    .unwrap();
    let refused = crm(elsewhere.path())
        .args([
            "checkpoint",
            "verify",
            altered.to_str().unwrap(),
            "--key",
            &key,
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let reason = String::from_utf8_lossy(&refused.stderr);
    assert!(reason.contains("altered after it was signed"), "{reason}");
    let other = tempfile::tempdir().unwrap();
    let other_key = run_ok(
        crm(other.path())
            .env(
                "CRM_MASTER_KEY",
                "1111111111111111111111111111111111111111111111111111111111111111",
            )
            .args(["keys", "show"]),
    );
    assert_ne!(other_key.trim(), key);
    // The signing key is kept in the key store, and not counted as a data subject's.
    let status = run_ok(
        crm(other.path())
            .env(
                "CRM_MASTER_KEY",
                "1111111111111111111111111111111111111111111111111111111111111111",
            )
            .args(["keys", "status", "--json"]),
    );
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["subjects_with_key"], 0, "{status}");
    assert_eq!(common::files(&other.path().join("keys")).len(), 1);
    let refused = crm(elsewhere.path())
        .args([
            "checkpoint",
            "verify",
            file.to_str().unwrap(),
            "--key",
            other_key.trim(),
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let reason = String::from_utf8_lossy(&refused.stderr);
    assert!(reason.contains("no signature by key"), "{reason}");
}
