//! Property-based fuzzing of the served API against its own OpenAPI document: the real
//! `crm serve` binary over small imports of the three data sets (300 Maven CRM pipeline rows,
//! 400 helpdesk rows, 200 telco customers, so every read model and the metrics answer with
//! figures), and Schemathesis (PyPI, the version `.ci/run` installs)
//! generating requests from `/openapi.json` for every operation. The run fails on any server
//! error (5xx), any answer that does not match its documented schema, status code or content
//! type.
//!
//! Knobs (environment):
//! - `SCHEMATHESIS`: the executable (default `schemathesis` on `PATH`);
//! - `CRM_FUZZ_TOKEN`: sent as `Authorization: Bearer <token>` on every request instead of
//!   the admin token the run grants itself (`crm auth token create`), which turns
//!   authentication on, so the run goes through the authentication layer;
//! - `CRM_FUZZ_HEADERS`: more headers, one `Name: value` per line;
//! - `CRM_FUZZ_EXAMPLES`: most generated cases per operation and phase (default 25), which
//!   bounds the run (about a minute on two cores);
//! - `CRM_FUZZ_SEED`: a seed to replay a run (default: Schemathesis picks one and prints it).
//!
//! `GET /v1/feed` is left out: it is a Server-Sent Events stream that stays open until the
//! client leaves, which Schemathesis (reading whole bodies) cannot consume; its own tests are
//! in `http_feed.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{crm, run_ok, Server};

/// The pinned version `.ci/run` installs; the run reports which one it used.
const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// Pipeline rows of the Maven CRM data set imported for the run.
const PIPELINE_ROWS: usize = 300;
/// Rows of the helpdesk log imported for the run (cases for the SLA report).
const HELPDESK_ROWS: usize = 400;
/// Customers of the telco table imported for the run (subscriptions for churn).
const TELCO_ROWS: usize = 200;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

/// Writes the header and the first `rows` rows of data file `from` to `to`.
fn head(from: &Path, to: &Path, rows: usize) {
    let text = std::fs::read_to_string(from).unwrap();
    let lines: Vec<&str> = text.lines().take(rows + 1).collect();
    std::fs::write(to, lines.join("\n") + "\n").unwrap();
}

/// A data directory with the Maven CRM accounts, products, teams and the first
/// [`PIPELINE_ROWS`] opportunities, the first [`HELPDESK_ROWS`] helpdesk rows and the first
/// [`TELCO_ROWS`] telco customers imported.
fn seeded() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let maven = dir.path().join("maven-crm");
    std::fs::create_dir(&maven).unwrap();
    for file in ["accounts.csv", "products.csv", "sales_teams.csv"] {
        std::fs::copy(data("maven-crm").join(file), maven.join(file)).unwrap();
    }
    head(
        &data("maven-crm").join("sales_pipeline.csv"),
        &maven.join("sales_pipeline.csv"),
        PIPELINE_ROWS,
    );
    run_ok(crm(dir.path()).args(["import", "maven-crm"]).arg(&maven));
    let helpdesk = dir.path().join("helpdesk.csv");
    head(&data("helpdesk/helpdesk.csv"), &helpdesk, HELPDESK_ROWS);
    run_ok(crm(dir.path()).args(["import", "helpdesk"]).arg(&helpdesk));
    let telco = dir.path().join("Telco-Customer-Churn.csv");
    head(
        &data("telco-churn/Telco-Customer-Churn.csv"),
        &telco,
        TELCO_ROWS,
    );
    run_ok(crm(dir.path()).args(["import", "telco-churn"]).arg(&telco));
    dir
}

/// Grants an admin token in `dir` (authentication is then required) and returns it.
fn admin_token(dir: &Path) -> String {
    let name = format!("fuzz-{}", std::process::id());
    let out = run_ok(crm(dir).args([
        "auth", "token", "create", "--name", &name, "--role", "admin",
    ]));
    out.lines().next().unwrap().trim().to_owned()
}

/// The headers every request carries: the token (`CRM_FUZZ_TOKEN`, else `granted`), then
/// `CRM_FUZZ_HEADERS`.
fn headers(granted: &str) -> Vec<String> {
    let mut headers = Vec::new();
    let token = std::env::var("CRM_FUZZ_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .unwrap_or_else(|| granted.to_owned());
    headers.push(format!("Authorization: Bearer {}", token.trim()));
    if let Ok(more) = std::env::var("CRM_FUZZ_HEADERS") {
        headers.extend(
            more.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
    }
    headers
}

/// The status of `GET path` sent to `base` (`http://host:port`) with no credential
/// (retried while the server is still starting).
fn status_without_credential(base: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let address = base.trim_start_matches("http://");
    let attempt = || -> std::io::Result<u16> {
        let mut stream = std::net::TcpStream::connect(address)?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        )?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        Ok(String::from_utf8_lossy(&answer)
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_default())
    };
    for _ in 0..50 {
        match attempt() {
            Ok(status) if status != 0 => return status,
            other => {
                eprintln!("GET {path}: {other:?}");
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
    }
    panic!("{base} did not answer GET {path}");
}

/// `N generated` from Schemathesis's summary (`Test cases:` / `  5520 generated, ...`).
fn cases_generated(output: &str) -> Option<u64> {
    output
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("Test cases:"))
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[test]
fn schemathesis_finds_no_server_error_and_no_schema_mismatch() {
    let program = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".to_owned());
    let version = Command::new(&program).arg("--version").output();
    let version = match version {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => panic!(
            "`{program}` does not run: install it with `pip install schemathesis=={SCHEMATHESIS_VERSION}` (as .ci/run does) or point SCHEMATHESIS at it"
        ),
    };
    let dir = seeded();
    let token = admin_token(dir.path());
    let server = Server::start_in(dir);
    // Authentication is on: without the token the API answers 401.
    let anonymous = status_without_credential(&server.base, "/v1/aggregates");
    assert_eq!(anonymous, 401);
    // Schemathesis keeps a cache (`.schemathesis/`) in its working directory: not the tree.
    let work = tempfile::tempdir().unwrap();
    let examples = std::env::var("CRM_FUZZ_EXAMPLES").unwrap_or_else(|_| "25".to_owned());
    let mut command = Command::new(&program);
    command
        .current_dir(work.path())
        .arg("run")
        .arg(server.url("/openapi.json"))
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
            "--exclude-path",
            "/v1/feed",
            "--max-examples",
            &examples,
            // One worker: with two, CPython 3.11's `ast.parse` (which Hypothesis calls to
            // describe filters) races across threads and fails the run with "AST constructor
            // recursion depth mismatch", an error of the fuzzer, not of the API.
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--no-color",
        ])
        .env(
            "SCHEMATHESIS_HOOKS",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis/hooks.py"),
        );
    if let Ok(seed) = std::env::var("CRM_FUZZ_SEED") {
        command.args(["--seed", &seed]);
    }
    for header in headers(&token) {
        command.args(["--header", &header]);
    }
    let out = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let cases = cases_generated(&stdout);
    println!(
        "{version}: {} cases",
        cases.map_or("?".to_owned(), |n| n.to_string())
    );
    assert!(
        out.status.success(),
        "Schemathesis found failures:\n{stdout}\n{stderr}"
    );
    let cases = cases.unwrap_or_else(|| panic!("no case count in:\n{stdout}"));
    assert!(cases > 100, "only {cases} cases ran:\n{stdout}");
    let summary = stdout
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .collect::<Vec<_>>()
        .join("\n");
    println!("{summary}");
    // Every selected operation was tested (none skipped for want of a usable schema).
    let field = |name: &str| {
        summary
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().split('/').next().unwrap_or_default().to_owned())
    };
    let selected = field("Selected:").unwrap_or_else(|| panic!("{summary}"));
    assert_eq!(field("Tested:"), Some(selected), "{summary}");
}
