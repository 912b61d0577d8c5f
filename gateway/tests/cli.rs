//! The real `crm` binary: malformed input is refused with file, line, column and reason and
//! leaves the store unchanged; `--on-error=skip` imports the rest; the generic CSV importer
//! with a mapping; `verify` names the position of a flipped byte.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crm_eventstore::Position;

fn crm(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crm"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("CRM_MASTER_KEY", common::TEST_MASTER_KEY)
        .env_remove("CRM_MASTER_KEY_FILE")
        .env_remove("CRM_CONFIG")
        .env_remove("CRM_DATA_DIR")
        .env_remove("CRM_ON_ERROR")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn bundled(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(path)
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A maven-crm directory with the bundled reference files and `pipeline` as the pipeline.
fn maven_dir(root: &Path, name: &str, pipeline: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["accounts.csv", "products.csv", "sales_teams.csv"] {
        std::fs::copy(bundled(&format!("maven-crm/{file}")), dir.join(file)).unwrap();
    }
    std::fs::write(dir.join("sales_pipeline.csv"), pipeline).unwrap();
    dir
}

const HEADER: &str =
    "opportunity_id,sales_agent,product,account,deal_stage,engage_date,close_date,close_value\n";
const GOOD: &str = "1C1I7A6R,Moses Frase,GTX Plus Basic,Cancity,Won,2016-10-20,2017-03-01,1054\n\
Z063OYW0,Darcel Schlecht,GTXPro,Isdom,Won,2016-10-25,2017-03-11,4514\n\
EC4QE1BX,Darcel Schlecht,MG Special,,Engaging,2016-10-25,,\n";

fn head(data_dir: &Path) -> String {
    let out = crm(data_dir, &["stats", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    format!("{}:{}", stats["head_position"], stats["head_hash"])
}

#[test]
fn malformed_rows_are_refused_with_their_place_and_the_store_is_unchanged() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let ok = crm(
        &data,
        &[
            "import",
            "telco-churn",
            bundled("telco-churn/Telco-Customer-Churn.csv")
                .to_str()
                .unwrap(),
        ],
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let before = head(&data);

    let cases = [
        (
            "bad-date",
            format!("{HEADER}{GOOD}Q1,Moses Frase,GTX Basic,Cancity,Won,2016-10-20,2017-02-30,500\n"),
            "sales_pipeline.csv:5: column 7 `close_date`: \"2017-02-30\" is not a date",
        ),
        (
            "bad-enum",
            format!("{HEADER}{GOOD}Q2,Moses Frase,GTX Basic,Cancity,Closed Won,2016-10-20,2017-03-01,500\n"),
            "sales_pipeline.csv:5: column 5 `deal_stage`: unknown deal stage `Closed Won`",
        ),
        (
            "ragged",
            format!("{HEADER}{GOOD}Q3,Moses Frase,GTX Basic,Cancity,Won,2016-10-20,2017-03-01\n"),
            "sales_pipeline.csv:5: column 8 `close_value`: the row has 7 fields but the header has 8",
        ),
        (
            "missing-column",
            "opportunity_id,sales_agent,product,account,deal_stage,engage_date,close_value\nQ4,Moses Frase,GTX Basic,Cancity,Won,2016-10-20,500\n".to_owned(),
            "sales_pipeline.csv:1: missing column `close_date`",
        ),
    ];
    for (name, pipeline, expected) in cases {
        let dir = maven_dir(root.path(), name, &pipeline);
        let out = crm(&data, &["import", "maven-crm", dir.to_str().unwrap()]);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{name}: the import must fail");
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert_eq!(head(&data), before, "{name}: the store changed");
    }

    // With --on-error=skip the bad row is reported and the good rows are imported.
    let dir = maven_dir(
        root.path(),
        "skip",
        &format!("{HEADER}{GOOD}Q5,Nobody Known,GTX Basic,Cancity,Won,2016-10-20,2017-03-01,500\n"),
    );
    let out = crm(
        &data,
        &[
            "import",
            "maven-crm",
            dir.to_str().unwrap(),
            "--on-error",
            "skip",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["skipped_rows"], 1);
    let bad = summary["bad_rows"][0].as_str().unwrap();
    assert!(bad.contains("sales_pipeline.csv:5: column 2 `sales_agent`: sales agent `Nobody Known` is not in sales_teams.csv"), "{bad}");
    assert_eq!(summary["events_by_type"]["OpportunityOpened"], 3);
    assert_eq!(summary["events_by_type"]["OpportunityWon"], 2);
}

#[test]
fn generic_csv_with_a_mapping_imports_a_foreign_export() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let csv = fixture("contracts.csv");
    let mapping = fixture("contracts.toml");
    let args = [
        "import",
        "csv",
        csv.to_str().unwrap(),
        "--mapping",
        mapping.to_str().unwrap(),
        "--json",
    ];
    let out = crm(&data, &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["appended"], 6);
    assert_eq!(summary["events_by_type"]["AccountOpened"], 3);
    assert_eq!(summary["events_by_type"]["SubscriptionStarted"], 3);

    let again = crm(&data, &args);
    let summary: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(summary["appended"], 0);
    assert_eq!(summary["already_present"], 6);

    let out = crm(
        &data,
        &["events", "--stream", "subscription-V-1001", "--json"],
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["event_type"], "SubscriptionStarted");
    assert_eq!(line["occurred_at"], "2023-02-01T00:00:00Z");
    assert_eq!(
        line["payload"]["monthly_amount"],
        serde_json::json!({"minor_units": 123_450, "currency": "EUR"})
    );
    assert_eq!(line["payload"]["term_months"], 12);
    assert_eq!(line["metadata"]["source"]["key"], "V-1001");
    assert_eq!(line["metadata"]["source"]["line"], 2);
    let out = crm(&data, &["events", "--stream", "account-K-3", "--json"]);
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["payload"]["segment"], "Mid-Market");
    assert_eq!(line["payload"]["is_internal"], true);

    // An unmapped enum value names its place and the values the mapping knows.
    let bad = root.path().join("bad.csv");
    let original = std::fs::read_to_string(&csv).unwrap();
    std::fs::write(&bad, original.replace(";K;;nein;", ";X;;nein;")).unwrap();
    let out = crm(
        root.path().join("other").as_path(),
        &[
            "import",
            "csv",
            bad.to_str().unwrap(),
            "--mapping",
            mapping.to_str().unwrap(),
        ],
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("bad.csv:3: column 4 `Segment`: unknown value `X`; the mapping of `segment` knows: G, K, M"), "{stderr}");
}

#[test]
fn verify_passes_after_import_and_names_a_flipped_record() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let csv = fixture("contracts.csv");
    let mapping = fixture("contracts.toml");
    let out = crm(
        &data,
        &[
            "import",
            "csv",
            csv.to_str().unwrap(),
            "--mapping",
            mapping.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = crm(&data, &["verify"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("verify ok: 6 records"));

    // Anchors: the head `stats` reports, and an earlier record's hash, hold; a wrong hash, a
    // position past the head and a malformed anchor do not.
    let stats: serde_json::Value =
        serde_json::from_slice(&crm(&data, &["stats", "--json"]).stdout).unwrap();
    let head_anchor = format!("6:{}", stats["head_hash"].as_str().unwrap());
    let text_stats = text(&crm(&data, &["stats"]).stdout);
    assert!(
        text_stats.contains(&format!("anchor {head_anchor} ")),
        "{text_stats}"
    );
    let events = crm(&data, &["events", "--json", "--from", "3", "--limit", "1"]);
    let third: serde_json::Value = serde_json::from_slice(&events.stdout).unwrap();
    let third_anchor = format!("3:{}", third["hash"].as_str().unwrap());
    // The import run's correlation id traces all 6 events; an unknown type matches none.
    let run = third["correlation_id"].as_str().unwrap();
    let traced = crm(&data, &["events", "--json", "--correlation", run]);
    assert_eq!(
        text(&traced.stdout).lines().count(),
        6,
        "{}",
        text(&traced.stderr)
    );
    let none = crm(&data, &["events", "--type", "NoSuchType"]);
    assert!(none.status.success() && none.stdout.is_empty());
    let out = crm(
        &data,
        &[
            "verify",
            "--anchor",
            &head_anchor,
            "--anchor",
            &third_anchor,
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("anchor 6 ok") && stdout.contains("anchor 3 ok"),
        "{stdout}"
    );
    let wrong = format!("4:{}", third["hash"].as_str().unwrap());
    let out = crm(&data, &["verify", "--anchor", &wrong]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("anchor 4 FAILED"),
        "{}",
        text(&out.stdout)
    );
    let beyond = format!("7:{}", third["hash"].as_str().unwrap());
    let out = crm(&data, &["verify", "--json", "--anchor", &beyond]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["anchors"][0]["ok"], false);
    assert_eq!(report["anchors"][0]["found_hash"], serde_json::Value::Null);
    let out = crm(&data, &["verify", "--anchor", "6-abc"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("POSITION:HASH"),
        "{}",
        text(&out.stderr)
    );

    crm_eventstore::sled_store::testing::flip_byte(&data.join("log"), Position(4)).unwrap();
    let out = crm(&data, &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("verify FAILED at position 4"), "{stdout}");
    let out = crm(&data, &["verify", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["first_bad_position"], 4);
    assert_eq!(report["checked"], 3);
}

#[test]
fn every_verb_has_help_and_reading_a_missing_log_fails_clearly() {
    let root = tempfile::tempdir().unwrap();
    for verb in [
        &["--help"][..],
        &["import", "--help"],
        &["import", "csv", "--help"],
        &["events", "--help"],
        &["verify", "--help"],
        &["stats", "--help"],
    ] {
        let out = crm(root.path(), verb);
        assert!(out.status.success(), "{verb:?}");
        assert!(text(&out.stdout).contains("Usage"), "{verb:?}");
    }
    let out = crm(&root.path().join("nothing"), &["stats"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("there is no log at"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_schema_and_a_definition_check_need_no_log() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("none");
    let out = crm(&dir, &["schema", "CaptureLead"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("CaptureLead (command) of aggregate `lead`")
            && shown.contains("one of phone, email")
            && shown.contains("personal data: sealed at rest, erasable"),
        "{shown}"
    );
    let out = crm(&dir, &["schema", "LeadCapture"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("did you mean `LeadCaptured`"),
        "{}",
        text(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&crm(&dir, &["schema", "--json"]).stdout).unwrap();
    assert_eq!(
        json["events"]["AgentRegistered"]["personal_fields"][0], "personal",
        "{}",
        json["events"]["AgentRegistered"]
    );

    let good = root.path().join("good.toml");
    std::fs::write(
        &good,
        r#"
id = "marketing.web_leads"
version = 1
name = "Web leads"
domain = "marketing"
unit = "count"
kind = "flow"
formula = "COUNT(LeadCaptured WHERE channel = web)"
[dims]
source = "payload.source"
[facts]
events = ["LeadCaptured"]
where = "payload.channel == 'web'"
[measure]
type = "simple"
agg = "count"
"#,
    )
    .unwrap();
    let out = crm(&dir, &["metrics", "check", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("marketing.web_leads v1 is valid"));
    let bad = root.path().join("bad.toml");
    let typo = std::fs::read_to_string(&good)
        .unwrap()
        .replace("payload.source", "payload.sourse");
    std::fs::write(&bad, typo).unwrap();
    let out = crm(&dir, &["metrics", "check", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("bad.toml")
            && stderr.contains("dims.source")
            && stderr.contains("did you mean `payload.source`"),
        "{stderr}"
    );
    // A mapping import checked: every row decided, nothing appended, no log created.
    let csv = fixture("contracts.csv");
    let mapping = fixture("contracts.toml");
    let out = crm(
        &dir,
        &[
            "import",
            "csv",
            csv.to_str().unwrap(),
            "--mapping",
            mapping.to_str().unwrap(),
            "--check",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&report["rows"], &report["rows_refused"], &report["events"]),
        (
            &serde_json::json!(3),
            &serde_json::json!(0),
            &serde_json::json!(6)
        ),
        "{report}"
    );
    let broken = root.path().join("broken.csv");
    let rows = std::fs::read_to_string(&csv).unwrap();
    let mut lines: Vec<&str> = rows.lines().collect();
    lines.push("only;three;cells");
    std::fs::write(&broken, lines.join("\n")).unwrap();
    let out = crm(
        &dir,
        &[
            "import",
            "csv",
            broken.to_str().unwrap(),
            "--mapping",
            mapping.to_str().unwrap(),
            "--check",
        ],
    );
    assert!(!out.status.success());
    let shown = text(&out.stdout);
    assert!(
        shown.contains("4 rows, 1 refused") && shown.contains("refused: broken.csv:5"),
        "{shown}"
    );
    assert!(!dir.exists(), "checking creates no log");
}

#[test]
fn a_second_mapping_import_continues_streams_the_first_began() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let write = |name: &str, text: &str| {
        let path = root.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let launches = write(
        "launches.csv",
        "campaign,name,channel,day\nspring,Spring mailing,email,2017-03-01\nfair,Trade fair,event,2017-04-01\n",
    );
    let launch_mapping = write(
        "launch.toml",
        r#"
[[commands]]
aggregate = "campaign"
command = "LaunchCampaign"
id = { column = "campaign" }
occurred_at = { column = "day", type = "datetime", format = "%Y-%m-%d" }
[commands.fields]
name = { column = "name" }
channel = { column = "channel" }
audience_size = { value = 1000 }
cost = { value = "0", type = "money", currency = "EUR" }
is_test = { value = false }
"#,
    );
    let costs = write(
        "costs.csv",
        "campaign,amount,day\nspring,120.50,2017-03-05\nfair,900.00,2017-04-02\nspring,30.00,2017-03-09\n",
    );
    let cost_mapping = write(
        "costs.toml",
        r#"
[[commands]]
aggregate = "campaign"
command = "RecordCampaignCost"
id = { column = "campaign" }
occurred_at = { column = "day", type = "datetime", format = "%Y-%m-%d" }
[commands.fields]
amount = { column = "amount", type = "money", currency = "EUR" }
category = { value = "media" }
"#,
    );
    let import = |csv: &PathBuf, mapping: &PathBuf| {
        crm(
            &data,
            &[
                "import",
                "csv",
                csv.to_str().unwrap(),
                "--mapping",
                mapping.to_str().unwrap(),
                "--json",
            ],
        )
    };
    let out = import(&launches, &launch_mapping);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The costs of campaigns an earlier import launched: decided against the log.
    let out = import(&costs, &cost_mapping);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["appended"], 3, "{summary}");
    assert!(
        summary["notes"]
            .to_string()
            .contains("2 streams continued from the log"),
        "{summary}"
    );
    // The same file again: the same decisions, nothing appended, nothing refused.
    let out = import(&costs, &cost_mapping);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            &again["appended"],
            &again["already_present"],
            &again["skipped_rows"]
        ),
        (
            &serde_json::json!(0),
            &serde_json::json!(3),
            &serde_json::json!(0)
        ),
        "{again}"
    );
    // Checked alone (no log), the costs file cannot know the campaigns: every row refused.
    let out = crm(
        &data,
        &[
            "import",
            "csv",
            costs.to_str().unwrap(),
            "--mapping",
            cost_mapping.to_str().unwrap(),
            "--check",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).contains("3 rows, 3 refused"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn infer_writes_a_mapping_skeleton_and_gzip_files_import() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let csv = fixture("contracts.csv");
    let out = crm(
        &dir,
        &[
            "import",
            "csv",
            csv.to_str().unwrap(),
            "--infer",
            "--command",
            "OpenAccount",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let skeleton = text(&out.stdout);
    assert!(
        skeleton.contains("delimiter = \";\"")
            && skeleton.contains("command = \"OpenAccount\"")
            && skeleton.contains("[commands.fields]"),
        "{skeleton}"
    );
    let out = crm(
        &dir,
        &[
            "import",
            "csv",
            csv.to_str().unwrap(),
            "--infer",
            "--command",
            "OpenAcount",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("did you mean `OpenAccount`"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.exists(), "inferring creates no log");

    // The same export gzip-compressed imports like the plain file.
    let gz = root.path().join("contracts.csv.gz");
    let status = std::process::Command::new("gzip")
        .args(["-c", csv.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(status.status.success());
    std::fs::write(&gz, status.stdout).unwrap();
    let mapping = fixture("contracts.toml");
    let out = crm(
        &dir,
        &[
            "import",
            "csv",
            gz.to_str().unwrap(),
            "--mapping",
            mapping.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["appended"], 6, "{summary}");
}

#[test]
fn questions_at_query_time_filter_order_limit_and_tidy_csv() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let out = crm(
        &data,
        &[
            "import",
            "maven-crm",
            bundled("maven-crm").to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = |args: &[&str]| {
        let out = crm(&data, args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    // The dimensions a query may name.
    let dims = run(&["metrics", "dimensions", "sales.win_rate", "--json"]);
    let dims: serde_json::Value = serde_json::from_str(&dims).unwrap();
    let dim = dims
        .as_object()
        .unwrap()
        .keys()
        .find(|k| k.contains("office") || k.contains("region"))
        .cloned()
        .unwrap_or_else(|| panic!("no regional dimension in {dims}"));
    // Broken down by it, one figure per value; filtered to one value, exactly that figure.
    let by: serde_json::Value =
        serde_json::from_str(&run(&["metric", "sales.win_rate", "--by", &dim, "--json"])).unwrap();
    let figures = by["figures"].as_array().unwrap();
    assert!(figures.len() >= 3, "{by}");
    let first = &figures[0];
    let value = first["dims"][&dim].as_str().unwrap();
    let filtered: serde_json::Value = serde_json::from_str(&run(&[
        "metric",
        "sales.win_rate",
        "--where",
        &format!("{dim}={value}"),
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        filtered["figures"][0]["value"], first["value"],
        "{filtered}"
    );
    assert_eq!(filtered["figures"][0]["included"], first["included"]);
    // Ordered largest first and cut to two, several metrics in one tidy CSV.
    let csv = run(&[
        "metric",
        "sales.win_rate",
        "sales.avg_deal_size",
        "--by",
        &dim,
        "--order",
        "-value",
        "--limit",
        "2",
        "--from",
        "2016-01-01",
        "--csv",
    ]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        format!("metric,version,spec_hash,period,period_start,period_end,{dim},value,display,numerator,denominator,included,excluded,log_position,chain_hash")
    );
    assert_eq!(lines.len(), 5, "{csv}");
    let values: Vec<f64> = lines[1..3]
        .iter()
        .map(|l| l.split(',').nth(7).unwrap().parse().unwrap())
        .collect();
    assert!(values[0] >= values[1], "{csv}");
    assert!(lines[3].starts_with("sales.avg_deal_size,"), "{csv}");
    // Money in currency units, as the display shows it: value, numerator (two decimals for
    // USD) and the count of deals below it.
    let deal: Vec<&str> = lines[3].split(',').collect();
    let (value, display, numerator, denominator) = (deal[7], deal[8], deal[9], deal[10]);
    let value: f64 = value.parse().unwrap();
    assert_eq!(format!("USD {value:.2}"), display, "{csv}");
    assert_eq!(numerator.split('.').nth(1).map(str::len), Some(2), "{csv}");
    let (n, d): (f64, f64) = (numerator.parse().unwrap(), denominator.parse().unwrap());
    assert!((n / d - value).abs() < 1e-6, "{csv}");
    // explain --csv says when it wrote one page only; --all writes every row.
    let out = crm(
        &data,
        &["explain", "sales.win_rate", "--csv", "--limit", "5"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 6);
    assert!(
        text(&out.stderr).contains("--offset 5 gives the next page"),
        "{}",
        text(&out.stderr)
    );
    let all = run(&[
        "explain",
        "sales.win_rate",
        "--csv",
        "--limit",
        "2000",
        "--all",
    ]);
    assert_eq!(
        all.lines().count(),
        6711 + 1,
        "every considered fact and the header"
    );
    // diff summarises in text; --json has everything.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let summary = run(&[
        "metric",
        "diff",
        "sales.win_rate",
        "--known-at",
        "2001-01-01",
        "--known-at",
        &later,
    ]);
    assert!(
        summary.contains("1 of 1 figures moved") && summary.contains("OpportunityWon"),
        "{summary}"
    );
    // An unknown dimension is refused with the ones the metric has.
    let out = crm(
        &data,
        &["metric", "sales.win_rate", "--where", "regoin=East"],
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains(&dim), "{}", text(&out.stderr));
}
