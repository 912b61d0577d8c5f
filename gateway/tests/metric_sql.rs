//! `crm metric sql` (issue 16): every catalog definition that has a SQL form, run in DuckDB
//! over the Parquet export of the bundled data, gives the engine's figures cell by cell.
//!
//! The log: the Maven CRM data set in full (the sales metrics), and the first rows of the
//! Telco churn, helpdesk, leads and online retail files (the customer, service and marketing
//! metrics; slices keep the run short, and both sides read the same log), and a few referred
//! leads and deals opened from leads (`tests/metric_sql/references.csv`), so `ref(..)` reads
//! values. `crm export
//! --events-only` writes the Parquet files; `crm metric sql --all --json` gives every
//! definition's SQL (or the construct without one, printed with its reason) for the whole
//! range and by month; `tests/metric_sql/run.py` runs them all in one DuckDB process (PyPI
//! `duckdb==2.0.1`, the interpreter `CRM_DUCKDB_PYTHON`, default `python3`; `.ci/run`
//! installs it in a virtual environment of its own) while `crm metric IDS --version V
//! --period P --json` evaluates the same definitions. Each period must have the same label,
//! value, numerator and denominator (within 1e-9, relative), currency, count included and
//! counts excluded by reason. A definition whose fact events are not in the log must give no
//! row, as the engine gives no figure. DuckDB's query times are printed, never asserted.
//! `CRM_METRIC_SQL_GRAINS` (comma-separated: all, month) runs only those grains.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{crm, run_ok};
use serde_json::Value;

/// The pinned version `.ci/run` installs.
const DUCKDB_VERSION: &str = "2.0.1";
/// Rows of each sliced data set (after the header).
const TELCO_ROWS: usize = 500;
const HELPDESK_ROWS: usize = 2_000;
const LEADS_ROWS: usize = 1_000;
const RETAIL_ROWS: usize = 5_000;
/// Relative tolerance of values, numerators and denominators.
const TOLERANCE: f64 = 1e-9;
/// The grains compared (`CRM_METRIC_SQL_GRAINS=all` narrows a local run).
const GRAINS: [&str; 2] = ["all", "month"];

fn grains() -> Vec<&'static str> {
    let wanted = std::env::var("CRM_METRIC_SQL_GRAINS").unwrap_or_default();
    GRAINS
        .into_iter()
        .filter(|g| wanted.trim().is_empty() || wanted.split(',').any(|w| w.trim() == *g))
        .collect()
}

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(path)
}

fn python() -> String {
    std::env::var("CRM_DUCKDB_PYTHON")
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "python3".to_owned())
}

/// The DuckDB version `python` imports; panics with how to install it when it cannot.
fn duckdb_version(python: &str) -> String {
    let out = Command::new(python)
        .args(["-c", "import duckdb; print(duckdb.__version__)"])
        .output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        other => panic!(
            "`{python}` cannot import duckdb ({}): install it in a virtual environment with \
             `python3 -m venv VENV && VENV/bin/pip install duckdb=={DUCKDB_VERSION}` and set \
             CRM_DUCKDB_PYTHON=VENV/bin/python (as .ci/run does)",
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

/// The header and the first `rows` lines of a CSV (gzipped or not), written to `out`.
fn slice(source: &Path, rows: usize, out: &Path) {
    let file = std::fs::File::open(source).unwrap();
    let reader: Box<dyn BufRead> = if source.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(flate2::read::GzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let kept: Vec<String> = reader
        .lines()
        .take(rows + 1)
        .collect::<Result<_, _>>()
        .unwrap();
    std::fs::write(out, kept.join("\n") + "\n").unwrap();
}

/// A log of the bundled data (Maven CRM whole, the others sliced) and its Parquet export.
fn log_and_export(dir: &Path) -> PathBuf {
    run_ok(
        crm(dir)
            .args(["import", "maven-crm"])
            .arg(data("maven-crm")),
    );
    let telco = dir.join("telco.csv");
    slice(
        &data("telco-churn/Telco-Customer-Churn.csv"),
        TELCO_ROWS,
        &telco,
    );
    run_ok(crm(dir).args(["import", "telco-churn"]).arg(&telco));
    let helpdesk = dir.join("helpdesk.csv");
    slice(&data("helpdesk/helpdesk.csv"), HELPDESK_ROWS, &helpdesk);
    run_ok(crm(dir).args(["import", "helpdesk"]).arg(&helpdesk));
    for (name, file, rows) in [
        ("leads", "leads/Leads.csv", LEADS_ROWS),
        (
            "online-retail",
            "online-retail/online_retail.csv.gz",
            RETAIL_ROWS,
        ),
    ] {
        let sliced = dir.join(format!("{name}.csv"));
        slice(&data(file), rows, &sliced);
        run_ok(
            crm(dir)
                .args(["import", "csv"])
                .arg(&sliced)
                .arg("--mapping")
                .arg(data(&format!("{name}/mapping.toml"))),
        );
    }
    // Referrals and deals opened from leads, which the bundled data sets lack: `ref(..)`
    // reads values.
    run_ok(
        crm(dir)
            .args(["import", "csv"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/metric_sql/references.csv"))
            .arg("--mapping")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/metric_sql/references.toml")),
    );
    let export = dir.join("export");
    run_ok(
        crm(dir)
            .args(["export", "--events-only", "--out"])
            .arg(&export),
    );
    export
}

/// One definition of `crm metric sql --all --json`.
#[derive(Debug, Clone)]
struct Definition {
    id: String,
    version: u64,
    needs: Vec<String>,
    sql: Option<String>,
    reason: Option<String>,
}

fn listing(dir: &Path, export: &Path, grain: &str) -> Vec<Definition> {
    let text = run_ok(
        crm(dir)
            .args(["metric", "sql", "--all", "--json", "--period", grain])
            .arg("--export-dir")
            .arg(export),
    );
    let listing: Value = serde_json::from_str(&text).unwrap();
    listing["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Definition {
            id: m["id"].as_str().unwrap().to_owned(),
            version: m["version"].as_u64().unwrap(),
            needs: m["needs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect(),
            sql: m["sql"].as_str().map(str::to_owned),
            reason: m["reason"].as_str().map(str::to_owned),
        })
        .collect()
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => (x - y).abs() <= TOLERANCE * x.abs().max(y.abs()).max(1.0),
        _ => false,
    }
}

/// The differences between DuckDB's answer and the engine's figures (none when they agree).
fn differences(answer: &Value, figures: &[Value]) -> Vec<String> {
    let columns: Vec<&str> = answer["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let rows = answer["rows"].as_array().unwrap();
    let mut out = Vec::new();
    if rows.len() != figures.len() {
        out.push(format!(
            "{} rows from DuckDB, {} figures from the engine",
            rows.len(),
            figures.len()
        ));
    }
    for (row, figure) in rows.iter().zip(figures) {
        let cell: BTreeMap<&str, &Value> = columns
            .iter()
            .copied()
            .zip(row.as_array().unwrap().iter())
            .collect();
        let label = figure["period"]["label"].as_str().unwrap();
        let mut differ = |what: &str, sql: String, engine: String| {
            out.push(format!("{label} {what}: DuckDB {sql}, engine {engine}"));
        };
        if cell["period"].as_str() != Some(label) {
            differ("period", cell["period"].to_string(), label.to_owned());
        }
        for (column, field) in [
            ("value", "value"),
            ("numerator", "numerator"),
            ("denominator", "denominator"),
        ] {
            let (sql, engine) = (cell[column].as_f64(), figure[field].as_f64());
            if !close(sql, engine) {
                differ(column, format!("{sql:?}"), format!("{engine:?}"));
            }
        }
        if cell["currency"].as_str() != figure["currency"].as_str() {
            differ(
                "currency",
                cell["currency"].to_string(),
                figure["currency"].to_string(),
            );
        }
        if cell["included"].as_u64() != figure["included"].as_u64() {
            differ(
                "included",
                cell["included"].to_string(),
                figure["included"].to_string(),
            );
        }
        let excluded: BTreeMap<String, u64> = cell
            .iter()
            .filter_map(|(c, v)| Some((c.strip_prefix("excluded_")?.to_owned(), v.as_u64()?)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let engine: BTreeMap<String, u64> = figure["excluded"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect();
        if excluded != engine {
            differ("excluded", format!("{excluded:?}"), format!("{engine:?}"));
        }
    }
    out
}

#[test]
fn every_metric_with_a_sql_form_gives_the_engines_figures_in_duckdb() {
    let python = python();
    let version = duckdb_version(&python);
    let dir = tempfile::tempdir().unwrap();
    let export = log_and_export(dir.path());
    let stats: Value =
        serde_json::from_str(&run_ok(crm(dir.path()).args(["stats", "--json"]))).unwrap();
    let present: BTreeSet<String> = stats["by_type"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
        .map(|(t, _)| t.clone())
        .collect();

    // Every definition's SQL for both grains (one grain when its facts are not in the log),
    // run in one DuckDB process while the engine evaluates the same definitions.
    let has_data = |d: &Definition| d.needs.iter().any(|t| present.contains(t));
    let mut queries = serde_json::Map::new();
    let mut listings = BTreeMap::new();
    for grain in grains() {
        let defs = listing(dir.path(), &export, grain);
        for d in &defs {
            if let (Some(sql), true) = (&d.sql, grain == grains()[0] || has_data(d)) {
                queries.insert(
                    format!("{}@{}/{grain}", d.id, d.version),
                    Value::String(sql.clone()),
                );
            }
        }
        listings.insert(grain, defs);
    }
    let queries_file = dir.path().join("queries.json");
    std::fs::write(&queries_file, Value::Object(queries.clone()).to_string()).unwrap();
    let duckdb = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/metric_sql/run.py"))
        .arg(&queries_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let defs = listings.values().next().unwrap();
    let with_sql: Vec<&Definition> = defs.iter().filter(|d| d.sql.is_some()).collect();
    let without: Vec<&Definition> = defs.iter().filter(|d| d.sql.is_none()).collect();
    println!(
        "{} definitions with a SQL form, {} without:",
        with_sql.len(),
        without.len()
    );
    for d in &without {
        let reason = d.reason.as_deref().unwrap_or_default();
        assert!(!reason.is_empty(), "{}@{} has no reason", d.id, d.version);
        println!("  {}@{}: {reason}", d.id, d.version);
    }
    for must in [
        "sales.win_rate",
        "sales.new_revenue",
        "service.time_to_resolution",
        "customer.active_customers",
        "sales.new_revenue_growth",
        "marketing.customer_referrals",
    ] {
        assert!(
            with_sql.iter().any(|d| d.id == must),
            "{must} must have a SQL form"
        );
    }

    // The engine's figures of each definition whose facts are in the log.
    let mut engine: BTreeMap<String, Value> = BTreeMap::new();
    for grain in grains() {
        let mut by_version: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
        for d in with_sql.iter().filter(|d| has_data(d)) {
            by_version.entry(d.version).or_default().push(&d.id);
        }
        for (v, ids) in by_version {
            let text = run_ok(crm(dir.path()).arg("metric").args(&ids).args([
                "--version",
                &v.to_string(),
                "--period",
                grain,
                "--json",
            ]));
            let parsed: Value = serde_json::from_str(&text).unwrap();
            let evaluations = match parsed {
                Value::Array(items) => items,
                one => vec![one],
            };
            for e in evaluations {
                let key = format!(
                    "{}@{}/{grain}",
                    e["metric"]["id"].as_str().unwrap(),
                    e["metric"]["version"]
                );
                engine.insert(key, e);
            }
        }
    }

    let out = duckdb.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "run.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answers["duckdb"].as_str(), Some(version.as_str()));
    let mut failures = Vec::new();
    let (mut compared, mut figures_compared, mut empty) = (0usize, 0usize, 0usize);
    let mut times: Vec<(f64, String)> = Vec::new();
    for (key, _) in &queries {
        let answer = &answers["answers"][key];
        if let Some(error) = answer["error"].as_str() {
            failures.push(format!("{key}: DuckDB refused the SQL: {error}"));
            continue;
        }
        times.push((answer["elapsed_ms"].as_f64().unwrap_or(0.0), key.clone()));
        match engine.get(key) {
            Some(e) => {
                let figures = e["figures"].as_array().unwrap();
                let diff = differences(answer, figures);
                if diff.is_empty() {
                    compared += 1;
                    figures_compared += figures.len();
                } else {
                    failures.push(format!(
                        "{key} ({} figures): {}",
                        figures.len(),
                        diff.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
                    ));
                }
            }
            None => {
                // No fact event in the log: the engine says "no data", DuckDB gives no row.
                let rows = answer["rows"].as_array().unwrap().len();
                if rows == 0 {
                    empty += 1;
                } else {
                    failures.push(format!("{key}: no fact event in the log, yet {rows} rows"));
                }
            }
        }
    }
    times.sort_by(|a, b| b.0.total_cmp(&a.0));
    let total: f64 = times.iter().map(|(t, _)| t).sum();
    println!(
        "DuckDB {version}: {} queries in {total:.0} ms; slowest: {}",
        times.len(),
        times
            .iter()
            .take(3)
            .map(|(t, k)| format!("{k} {t:.0} ms"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{compared} answers equal to the engine's ({figures_compared} figures), {empty} without data on both sides"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The comparison is not vacuous: most definitions with a SQL form have data here.
    let floor = 50 * grains().len();
    assert!(compared >= floor, "only {compared} answers compared");
    assert!(figures_compared >= 50, "only {figures_compared} figures");
}

#[test]
fn the_comparison_sees_every_kind_of_difference() {
    let figure = serde_json::json!({
        "period": {"label": "2017-03"},
        "value": 0.5, "numerator": 1, "denominator": 2,
        "included": 2, "excluded": {"VOIDED": 1}
    });
    let columns = serde_json::json!([
        "period",
        "value",
        "numerator",
        "denominator",
        "currency",
        "included",
        "excluded_TEST",
        "excluded_VOIDED"
    ]);
    let answer = |row: Value| serde_json::json!({"columns": columns, "rows": [row]});
    let same = answer(serde_json::json!(["2017-03", 0.5, 1, 2, null, 2, 0, 1]));
    assert!(differences(&same, std::slice::from_ref(&figure)).is_empty());
    for (row, what) in [
        (
            serde_json::json!(["2017-04", 0.5, 1, 2, null, 2, 0, 1]),
            "period",
        ),
        (
            serde_json::json!(["2017-03", 0.5000001, 1, 2, null, 2, 0, 1]),
            "value",
        ),
        (
            serde_json::json!(["2017-03", 0.5, 2, 2, null, 2, 0, 1]),
            "numerator",
        ),
        (
            serde_json::json!(["2017-03", 0.5, 1, null, null, 2, 0, 1]),
            "denominator",
        ),
        (
            serde_json::json!(["2017-03", 0.5, 1, 2, "USD", 2, 0, 1]),
            "currency",
        ),
        (
            serde_json::json!(["2017-03", 0.5, 1, 2, null, 3, 0, 1]),
            "included",
        ),
        (
            serde_json::json!(["2017-03", 0.5, 1, 2, null, 2, 1, 1]),
            "excluded",
        ),
    ] {
        let diff = differences(&answer(row), std::slice::from_ref(&figure));
        assert!(diff.iter().any(|d| d.contains(what)), "{what}: {diff:?}");
    }
    let none = serde_json::json!({"columns": columns, "rows": []});
    assert!(!differences(&none, std::slice::from_ref(&figure)).is_empty());
}
