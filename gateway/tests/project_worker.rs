//! `crm project run NAME` as its own process, killed with SIGKILL in the middle of its
//! catch-up and started again, over and over: the state it ends with equals a clean rebuild
//! from position 0. The snapshot holds state and checkpoint together, so a kill at any
//! moment neither applies an event twice nor skips one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write as _;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{crm, run_ok};
use serde_json::Value;

const AS_OF: &str = "2030-01-01T00:00:00Z";

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

/// The checkpoint of `name`'s last snapshot (0 when it has none).
fn checkpoint(dir: &Path, name: &str) -> u64 {
    crm_projections::stored_status(&dir.join("projections"), name)
        .unwrap()
        .map_or(0, |h| h.progress.position.0)
}

fn show(dir: &Path, name: &str) -> Value {
    let text = run_ok(crm(dir).args(["project", "show", name, "--json", "--as-of", AS_OF]));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn a_worker_killed_mid_catch_up_resumes_to_the_state_of_a_clean_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run_ok(crm(d).args(["import", "maven-crm"]).arg(data("maven-crm")));
    run_ok(
        crm(d)
            .args(["import", "telco-churn"])
            .arg(data("telco-churn/Telco-Customer-Churn.csv")),
    );
    run_ok(
        crm(d)
            .args(["import", "helpdesk"])
            .arg(data("helpdesk/helpdesk.csv")),
    );
    let stats: Value = serde_json::from_str(&run_ok(crm(d).args(["stats", "--json"]))).unwrap();
    let head = stats["head_position"].as_u64().unwrap();
    assert!(head > 60_000, "the three data sets give {head} events");

    for name in ["pipeline", "churn", "lifetime-value", "sla"] {
        // Kill the worker after a delay that adapts until kills land mid-catch-up: a
        // checkpoint of 0 means it was killed too early, one at the head too late.
        let mut delay_ms: u64 = 150;
        let mut kills = Vec::new();
        let mut mid_catch_up = 0;
        for _ in 0..12 {
            let before = checkpoint(d, name);
            if before >= head {
                break;
            }
            let mut child = crm(d)
                .args(["project", "run", name, "--snapshot-every", "2000"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(delay_ms));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            let after = checkpoint(d, name);
            assert!(
                after >= before,
                "{name}: the checkpoint went back from {before} to {after}"
            );
            kills.push((delay_ms, after));
            if after > 0 && after < head {
                mid_catch_up += 1;
                if mid_catch_up >= 3 {
                    break;
                }
            } else if after == 0 {
                delay_ms = delay_ms * 3 / 2;
            } else {
                delay_ms = (delay_ms / 2).max(5);
            }
        }
        assert!(
            mid_catch_up > 0,
            "{name}: no kill landed mid-catch-up (delay ms, checkpoint after): {kills:?}"
        );
        // Start it again and let it finish the catch-up, then stop it politely.
        let resumed = show(d, name);
        assert_eq!(resumed["applied_position"].as_u64(), Some(head));
        // A clean rebuild from position 0 must reach the very same state.
        run_ok(crm(d).args(["project", "rebuild", name]));
        let rebuilt = show(d, name);
        assert_eq!(rebuilt["applied_position"].as_u64(), Some(head));
        assert_eq!(
            resumed, rebuilt,
            "{name}: the state after the kills differs from a clean rebuild"
        );
        writeln!(
            std::io::stderr(),
            "{name}: {} SIGKILLs (delay ms, checkpoint): {kills:?}; {mid_catch_up} mid-catch-up; resumed state = rebuilt state at position {head}",
            kills.len()
        )
        .unwrap();
    }
}

#[test]
fn run_refuses_an_unknown_projection_and_names_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        crm(dir.path())
            .args(["import", "helpdesk"])
            .arg(data("helpdesk/helpdesk.csv")),
    );
    let out = crm(dir.path())
        .args(["project", "run", "pipline"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pipline") && err.contains("lifetime-value"),
        "{err}"
    );
}
