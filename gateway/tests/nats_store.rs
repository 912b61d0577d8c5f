//! The gateway and a projection worker as separate processes on one JetStream log:
//! `crm serve --store nats://...` takes commands, `crm project run pipeline --store
//! nats://...` (another process, another data directory) folds them, and both arrive at the
//! same read model. The nats-server is the test's own (see `crm_tests::nats`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write as _};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{crm, open_account, open_opportunity, run_ok, Server};
use crm_tests::nats::NatsCluster;
use serde_json::Value;

/// A child process killed when the test ends, also on a panic.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const AS_OF: &str = "2026-03-01T00:00:00Z";
const ACCOUNTS: usize = 5;
const DEALS_PER_ACCOUNT: usize = 4;

/// Polls `url` (Prometheus text) until `crm_projection_applied_position` reaches `head`.
async fn wait_applied(client: &reqwest::Client, url: &str, head: u64) -> u64 {
    let started = Instant::now();
    loop {
        let text = client.get(url).send().await.unwrap().text().await.unwrap();
        let applied = text
            .lines()
            .find(|l| l.starts_with("crm_projection_applied_position"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let applied = applied as u64;
        if applied >= head {
            return applied;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the worker stayed at {applied} of {head}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_and_a_worker_process_share_one_jetstream_log() {
    let nats = NatsCluster::single().await;
    let url = nats.url();
    let server = Server::start_with(tempfile::tempdir().unwrap(), &["--store", &url]);

    let worker_dir = tempfile::tempdir().unwrap();
    let worker = crm(worker_dir.path())
        .args(["project", "run", "pipeline", "--store", &url])
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut worker = KillOnDrop(worker);
    // Keep reading the worker's stdout: it prints a last line when it stops.
    let mut out = BufReader::new(worker.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let probes = line
        .split("probes on ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .unwrap_or_else(|| panic!("no probe address in {line:?}"))
        .to_owned();

    let mut acknowledged = 0;
    for a in 0..ACCOUNTS {
        let account = format!("acme-{a}");
        let (status, _, body) = server
            .command("account", &open_account(&account), &[])
            .await;
        assert_eq!(status, 200, "{body}");
        acknowledged += 1;
        for d in 0..DEALS_PER_ACCOUNT {
            let deal = open_opportunity(&format!("deal-{a}-{d}"), &account, 100_000);
            let (status, _, body) = server.command("opportunity", &deal, &[]).await;
            assert_eq!(status, 200, "{body}");
            acknowledged += 1;
        }
    }
    let head = server.head().await;
    assert_eq!(head, acknowledged, "one event per command");

    let client = reqwest::Client::new();
    let applied = wait_applied(&client, &format!("{probes}/metrics"), head).await;
    let (status, ready) = {
        let r = client.get(format!("{probes}/readyz")).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200, "{ready}");

    // The gateway's own projections and the worker process agree.
    let (status, served) = server
        .get(&format!("/v1/read-models/pipeline?as_of={AS_OF}"))
        .await;
    assert_eq!(status, 200, "{served}");
    assert_eq!(served["applied_position"].as_u64(), Some(head));

    // Stop the worker (final snapshot), then read its state back in its own data directory.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &worker.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let mut last = String::new();
    out.read_to_string(&mut last).unwrap();
    assert!(
        worker.0.wait().unwrap().success(),
        "the worker did not stop cleanly: {last}"
    );
    assert!(last.contains("final snapshot saved"), "{last}");
    let shown: Value = serde_json::from_str(&run_ok(crm(worker_dir.path()).args([
        "project", "show", "pipeline", "--json", "--as-of", AS_OF, "--store", &url,
    ])))
    .unwrap();
    assert_eq!(shown["applied_position"].as_u64(), Some(head));
    assert_eq!(
        shown["report"], served["report"],
        "the worker process and the gateway disagree on the pipeline"
    );
    let deals = u64::try_from(ACCOUNTS * DEALS_PER_ACCOUNT).unwrap();
    assert_eq!(
        served["report"]["open"]["count"].as_u64(),
        Some(deals),
        "{served}"
    );
    assert_eq!(
        served["report"]["open"]["value_minor"].as_u64(),
        Some(deals * 100_000),
        "{served}"
    );
    writeln!(
        std::io::stderr(),
        "JetStream store: {acknowledged} commands acknowledged by `crm serve`, head {head}; worker process applied {applied}; reports equal"
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_never_creates_the_log_on_jetstream() {
    let nats = NatsCluster::single().await;
    let url = nats.url();
    let dir = tempfile::tempdir().unwrap();
    for verb in [&["verify"][..], &["stats"], &["project", "status"]] {
        let out = crm(dir.path())
            .args(verb)
            .args(["--store", &url])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{verb:?} opened a log that does not exist"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("no JetStream stream `CRM_LOG`") && err.contains("stream_name"),
            "{verb:?}: {err}"
        );
    }
    // A writer creates it; then the readers open it.
    run_ok(
        crm(dir.path())
            .args(["import", "helpdesk"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/helpdesk/helpdesk.csv"))
            .args(["--store", &url]),
    );
    let report: Value = serde_json::from_str(&run_ok(
        crm(dir.path()).args(["verify", "--json", "--store", &url]),
    ))
    .unwrap();
    assert_eq!(report["ok"], true);
    assert!(report["checked"].as_u64().unwrap() > 15_000, "{report}");
}
