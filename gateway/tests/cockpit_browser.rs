//! The cockpit page (`GET /` of `crm serve`, issue 15) in a real browser: headless Chromium
//! (the system's, `CRM_CHROMIUM`, default `/usr/bin/chromium`) driven by Python Playwright
//! (PyPI `playwright==1.65.3`, the interpreter `CRM_PLAYWRIGHT_PYTHON`, default `python3`;
//! `.ci/run` installs both; `playwright install` is never run) through the script
//! `tests/cockpit/drive.py`, against the real binary over the full Maven CRM and Telco data
//! with authentication on.
//!
//! What the script checks (see its docstring): the page shows the real figures (win rate
//! 63.15 % and churn 26.54 % at the enterprise, 62.56 %, 63.02 % and 63.94 % in the Central,
//! East and West offices reached through `nav#children`, by keyboard and by click, back and
//! forward); drill-down from the win rate to its explanation and on to one event; opportunities
//! won through the API change the open page's figure without a reload; an office's own token
//! (role `member`, a viewer of the East office in the bundled scorecard) sees that office and
//! below and is refused the enterprise; no request leaves the server; 1280×800 and 375×812
//! screenshots go to `target/test-artifacts/cockpit/`. Times are printed (`first_render_ms`,
//! `append_to_render_ms`, their p95), never asserted.
//!
//! Knobs: `CRM_COCKPIT_SCENARIOS` (comma-separated: figures, drill_down, live, person) runs
//! only those; `CRM_COCKPIT_APPENDS` (default 5) is how many wins are appended live.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{crm, run_ok, Server};
use serde_json::{json, Value};

/// The pinned version `.ci/run` installs.
const PLAYWRIGHT_VERSION: &str = "1.65.3";
/// The whole browser run, at most.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(600);
/// The bundled scorecard and the figures its nodes show over the bundled data.
const SCORECARD: &str = "cockpit";
const ENTERPRISE_WIN_RATE: &str = "63.15%";
const ENTERPRISE_CHURN: &str = "26.54%";
const OFFICE_WIN_RATES: [(&str, &str); 3] = [
    ("Central", "62.56%"),
    ("East", "63.02%"),
    ("West", "63.94%"),
];
/// The token of the East office's viewer (`viewers = ["token:office-{slug}"]`).
const EAST_OFFICE_TOKEN: &str = "office-east";

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

/// `target/test-artifacts/cockpit`, beside the binaries under test.
fn artifacts() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_crm"));
    let target = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    target.join("test-artifacts").join("cockpit")
}

fn python() -> String {
    std::env::var("CRM_PLAYWRIGHT_PYTHON")
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "python3".to_owned())
}

fn chromium() -> String {
    std::env::var("CRM_CHROMIUM")
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "/usr/bin/chromium".to_owned())
}

/// The Playwright version `python` imports; panics with how to install it when it cannot.
fn playwright_version(python: &str) -> String {
    let out = Command::new(python)
        .args([
            "-c",
            "import importlib.metadata as m, playwright.sync_api; print(m.version('playwright'))",
        ])
        .output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        other => panic!(
            "`{python}` cannot import playwright ({}): install it in a virtual environment with \
             `python3 -m venv VENV && VENV/bin/pip install playwright=={PLAYWRIGHT_VERSION}` and set \
             CRM_PLAYWRIGHT_PYTHON=VENV/bin/python (as .ci/run does); the browser is the system's \
             Chromium (`apt-get install chromium`, or CRM_CHROMIUM=PATH), never `playwright install`",
            match other {
                Ok(out) => String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .to_owned(),
                Err(e) => e.to_string(),
            }
        ),
    }
}

/// A data directory with the full Maven CRM and Telco data imported, the bundled scorecard
/// defined, and two tokens: an admin's and the East office's (role `member`).
fn seeded() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        crm(dir.path())
            .args(["import", "maven-crm"])
            .arg(data("maven-crm")),
    );
    run_ok(
        crm(dir.path())
            .args(["import", "telco-churn"])
            .arg(data("telco-churn/Telco-Customer-Churn.csv")),
    );
    run_ok(
        crm(dir.path())
            .args(["scorecard", "define"])
            .arg(data("scorecards/cockpit.toml")),
    );
    let token = |name: &str, role: &str| {
        let out = run_ok(
            crm(dir.path()).args(["auth", "token", "create", "--name", name, "--role", role]),
        );
        out.lines().next().unwrap().trim().to_owned()
    };
    let admin = token("cockpit-admin", "admin");
    let east = token(EAST_OFFICE_TOKEN, "member");
    (dir, admin, east)
}

/// `GET path` with `token`: status and JSON body.
async fn get(server: &Server, token: &str, path: &str) -> (u16, Value) {
    let response = server
        .client
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `GET path` with `token` until it is not 503 (the first assessment of a fresh server may
/// take longer than the request timeout in a debug build): status and JSON body.
async fn get_when_ready(server: &Server, token: &str, path: &str) -> (u16, Value) {
    let started = Instant::now();
    loop {
        let (status, body) = get(server, token, path).await;
        if status != 503 || started.elapsed() > Duration::from_secs(120) {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The id of the first measure of `view` reading `metric`.
fn measure_of(view: &Value, metric: &str) -> String {
    view["perspectives"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["objectives"].as_array().into_iter().flatten())
        .flat_map(|o| o["measures"].as_array().into_iter().flatten())
        .find(|m| m["metric"]["id"] == metric)
        .and_then(|m| m["id"].as_str())
        .unwrap_or_else(|| panic!("no measure of {metric} in {view}"))
        .to_owned()
}

/// The child of `view`'s node whose name contains `text`.
fn child_named(view: &Value, text: &str) -> String {
    view["node"]["children"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"].as_str().unwrap_or_default().contains(text))
        .and_then(|c| c["id"].as_str())
        .unwrap_or_else(|| panic!("no child named {text} in {}", view["node"]))
        .to_owned()
}

/// A won opportunity of an agent of the East office in the Maven data: its id.
fn east_won_opportunity() -> String {
    let mut teams = csv::Reader::from_path(data("maven-crm/sales_teams.csv")).unwrap();
    let east: Vec<String> = teams
        .records()
        .map(Result::unwrap)
        .filter(|r| &r[2] == "East")
        .map(|r| r[0].to_owned())
        .collect();
    let mut pipeline = csv::Reader::from_path(data("maven-crm/sales_pipeline.csv")).unwrap();
    pipeline
        .records()
        .map(Result::unwrap)
        .find(|r| east.iter().any(|a| a == &r[1]) && &r[4] == "Won" && !r[3].is_empty())
        .map(|r| r[0].to_owned())
        .expect("an East agent's won opportunity")
}

/// `count` new opportunities of the agent, account and product of opportunity `model`: the
/// commands that open them, and for each the command that wins it (one more won deal of the
/// East office).
async fn wins_like(
    server: &Server,
    token: &str,
    model: &str,
    count: usize,
) -> (Vec<Value>, Vec<Value>) {
    let (status, stream) = get(server, token, &format!("/v1/streams/opportunity-{model}")).await;
    assert_eq!(status, 200, "{stream}");
    let opened = &stream["events"][0]["payload"];
    assert_eq!(stream["events"][0]["event_type"], "OpportunityOpened");
    (1..=count)
        .map(|i| {
            let id = format!("cockpit-live-{i}");
            let open = json!({
                "category": "opportunity", "type": "OpenOpportunity", "opportunity_id": id,
                "account_id": opened["account_id"], "owner": opened["owner"],
                "product": opened["product"], "amount": opened["amount"],
                "expected_close": "2017-12-31", "kind": "new", "channel": "direct",
                "stage": "Prospecting", "probability": 10, "lead": null, "campaign": null,
                "is_test": false, "occurred_at": "2017-12-01T00:00:00Z",
            });
            let win = json!([{
                "category": "opportunity", "type": "WinOpportunity", "opportunity_id": id,
                "amount": opened["amount"], "list_price": null, "discount": null,
                "competitor": null, "occurred_at": "2017-12-15T00:00:00Z",
            }]);
            (open, win)
        })
        .unzip()
}

/// Runs the driver with `config`; its output, after it succeeded.
fn drive(config: &Value) -> String {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("config.json");
    std::fs::write(&file, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cockpit/drive.py");
    let mut child = Command::new(python())
        .arg(&script)
        .arg(&file)
        .current_dir(work.path())
        .env("CRM_CHROMIUM", chromium())
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DRIVER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the browser run took more than {DRIVER_TIMEOUT:?}:\n{}\n{}",
                out.join().unwrap(),
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    print!("{stdout}");
    assert!(
        status.success(),
        "the browser run failed ({status}):\n{stdout}\n{stderr}"
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cockpit_page_shows_live_figures_drills_down_and_keeps_a_person_to_their_nodes() {
    let python = python();
    let version = playwright_version(&python);
    let browser = chromium();
    assert!(
        Path::new(&browser).exists(),
        "no Chromium at {browser}: install it (`apt-get install --no-install-recommends chromium`, as .ci/run does) or set CRM_CHROMIUM"
    );
    println!("playwright {version} ({python}), chromium {browser}");

    let (dir, admin, east_token) = tokio::task::spawn_blocking(seeded).await.unwrap();
    let server = Server::start_in(dir);

    // What the page should show, from the API itself (ids of nodes and measures).
    let (status, list) = get(&server, &admin, "/v1/scorecards").await;
    assert_eq!(status, 200, "{list}");
    let (status, top) =
        get_when_ready(&server, &admin, &format!("/v1/scorecards/{SCORECARD}")).await;
    assert_eq!(status, 200, "{top}");
    let top_node = top["node"]["id"].as_str().unwrap().to_owned();
    let win_rate = measure_of(&top, "sales.win_rate");
    let churn = measure_of(&top, "customer.churn_rate");
    let children: BTreeMap<&str, &str> = OFFICE_WIN_RATES.into_iter().collect();
    let east = child_named(&top, "East");

    let appends: usize = std::env::var("CRM_COCKPIT_APPENDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let model = east_won_opportunity();
    let (opens, wins) = wins_like(&server, &admin, &model, appends).await;

    let artifacts = artifacts();
    // Screenshots of an earlier run must not pass for this one's.
    let _ = std::fs::remove_dir_all(&artifacts);
    let config = json!({
        "base": server.base,
        "artifacts": artifacts,
        "admin_token": admin,
        "scorecard": SCORECARD,
        "top_node": top_node,
        "top_figures": { win_rate.clone(): ENTERPRISE_WIN_RATE, churn: ENTERPRISE_CHURN },
        "children": children,
        "measure": win_rate,
        "metric": "sales.win_rate",
        "live": { "node": east, "setup": opens, "appends": wins },
        "member": { "token": east_token, "node": east, "refused": top_node },
    });
    let output = tokio::task::spawn_blocking(move || drive(&config))
        .await
        .unwrap();
    let measured: Vec<&str> = output.lines().filter(|l| l.contains("_ms=")).collect();
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(
        artifacts.join("measurements.txt"),
        measured.join("\n") + "\n",
    )
    .unwrap();
    if std::env::var_os("CRM_COCKPIT_SCENARIOS").is_none() {
        for name in [
            "cockpit-1280.png",
            "cockpit-375.png",
            "explain-1280.png",
            "event-375.png",
        ] {
            assert!(artifacts.join(name).exists(), "no screenshot {name}");
        }
    }
}
