//! Harness for the HTTP tests: the real `crm serve` binary on a free loopback port over a
//! temporary data directory, and helpers to talk to it as a client would.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

/// A running `crm serve`; killed on drop if still running.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub client: reqwest::Client,
    /// Lines the server writes to stderr.
    pub stderr: mpsc::Receiver<String>,
    pub dir: tempfile::TempDir,
}

/// The master key the tests give `crm` (`CRM_MASTER_KEY`): personal data is sealed with
/// keys it wraps. Not a secret: test data only.
pub const TEST_MASTER_KEY: &str =
    "7e57000000000000000000000000000000000000000000000000000000007e57";

/// `crm` with a clean environment, `--data-dir` and the tests' master key.
pub fn crm(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crm"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .env("CRM_MASTER_KEY", TEST_MASTER_KEY)
        .env_remove("CRM_MASTER_KEY_FILE")
        .env_remove("CRM_CONFIG")
        .env_remove("CRM_DATA_DIR")
        .env_remove("CRM_LISTEN")
        .env_remove("CRM_STORE")
        .env_remove("CRM_NATS_URL")
        .env_remove("CRM_TLS_CERT_FILE")
        .env_remove("CRM_TLS_KEY_FILE")
        .env_remove("RUST_LOG");
    for scope in ["CRM_NATS_", "CRM_PUBLISH_NATS_"] {
        for key in ["USER", "PASSWORD", "TOKEN", "CREDS_FILE"] {
            command.env_remove(format!("{scope}{key}"));
        }
    }
    command
}

/// Runs `command`, asserts that it succeeded (showing its stderr if not), returns its stdout.
pub fn run_ok(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Spawns `crm serve --listen 127.0.0.1:0 ARGS` on `dir` with stdout and stderr piped; the
/// child (stderr left for the caller to read) and the API's base URL, read from the first
/// line the server prints.
pub fn spawn_serve(dir: &Path, args: &[&str]) -> (Child, String) {
    let mut child = crm(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    (child, base)
}

impl Server {
    /// Starts `crm serve --listen 127.0.0.1:0` on a fresh data directory.
    pub fn start() -> Server {
        Server::start_in(tempfile::tempdir().unwrap())
    }

    /// Starts `crm serve` on `dir` (which may hold an imported log).
    pub fn start_in(dir: tempfile::TempDir) -> Server {
        Server::start_with(dir, &[])
    }

    /// Starts `crm serve` on `dir` with more arguments (e.g. `--store nats://...`).
    pub fn start_with(dir: tempfile::TempDir, args: &[&str]) -> Server {
        let (mut child, address) = spawn_serve(dir.path(), args);
        let (tx, stderr) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Server {
            child,
            base: address,
            client: reqwest::Client::new(),
            stderr,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs a command with optional headers; status, headers and JSON body.
    pub async fn command(
        &self,
        category: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .client
            .post(self.url(&format!("/v1/aggregates/{category}/commands")))
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, headers, body)
    }

    /// GETs a JSON document; status and body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The log's head position.
    pub async fn head(&self) -> u64 {
        let (status, page) = self.get("/v1/events?limit=1").await;
        assert_eq!(status, 200, "{page}");
        page["head"].as_u64().unwrap()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for a stderr line containing `text` (the server's own progress messages).
    pub fn wait_for_stderr(&self, text: &str) {
        loop {
            let line = self
                .stderr
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("no stderr line with {text:?}: {e}"));
            if line.contains(text) {
                return;
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `OpenAccount` command body.
pub fn open_account(id: &str) -> Value {
    json!({
        "type": "OpenAccount", "account_id": id, "name": "Acme", "segment": "smb",
        "region": "emea", "industry": null, "owner": "agent-1", "is_internal": false,
        "is_test": false, "occurred_at": "2026-01-01T00:00:00Z",
    })
}

/// An `OpenOpportunity` command body for account `account` (amount in cents, USD).
pub fn open_opportunity(id: &str, account: &str, cents: i64) -> Value {
    json!({
        "type": "OpenOpportunity", "opportunity_id": id, "account_id": account,
        "owner": "agent-1", "product": "gtx-basic",
        "amount": { "minor_units": cents, "currency": "USD" },
        "expected_close": "2026-06-30", "kind": "new", "channel": "direct",
        "stage": "Prospecting", "probability": 10, "lead": null, "campaign": null,
        "is_test": false, "occurred_at": "2026-01-02T00:00:00Z",
    })
}

/// A `ChangeAccountSegment` command body.
pub fn change_segment(id: &str, to: &str) -> Value {
    json!({
        "type": "ChangeAccountSegment", "account_id": id, "to": to,
        "occurred_at": "2026-02-01T00:00:00Z",
    })
}

/// Asserts a problem document with `status` and `slug`; returns its detail.
pub fn assert_problem(status: u16, body: &Value, expected: u16, slug: &str) -> String {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["status"], expected, "{body}");
    assert_eq!(body["type"], format!("urn:crm:problem:{slug}"), "{body}");
    body["detail"].as_str().unwrap().to_owned()
}

/// Every file under `dir`, recursively (to scan a data directory's files).
pub fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}
