//! The real `crm` binary importing with a mapping, which streams: a source is known by its
//! content as well as its name (a renamed or recompressed copy appends nothing, a changed file
//! only its new rows, and the content hash is in every new event's metadata); a long file is
//! appended batch by batch, a bad row stops it with what came before appended; a group key
//! that comes again after its group ended is refused with both places.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `crm import csv FILE --mapping MAPPING --json ARGS` on `data`.
fn import(data: &Path, file: &Path, mapping: &Path, args: &[&str]) -> Output {
    common::crm(data)
        .args(["import", "csv"])
        .arg(file)
        .arg("--mapping")
        .arg(mapping)
        .arg("--json")
        .args(args)
        .output()
        .unwrap()
}

/// The summary of an import that succeeded.
fn imported(data: &Path, file: &Path, mapping: &Path) -> Value {
    let out = import(data, file, mapping, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (appended, already present) of a summary.
fn counts(summary: &Value) -> (u64, u64) {
    (
        summary["appended"].as_u64().unwrap(),
        summary["already_present"].as_u64().unwrap(),
    )
}

/// The events of `stream`, as `crm events --json` prints them.
fn events(data: &Path, stream: &str) -> Vec<Value> {
    let out = common::run_ok(common::crm(data).args(["events", "--stream", stream, "--json"]));
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `sha256sum FILE`.
fn sha256(path: &Path) -> String {
    let out = common::run_ok(std::process::Command::new("sha256sum").arg(path));
    out.split_whitespace().next().unwrap().to_owned()
}

#[test]
fn a_copy_under_another_name_appends_nothing_and_a_changed_file_only_its_new_rows() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let mapping = fixture("campaign.toml");
    let calls = root.path().join("calls.csv");
    let original = std::fs::read_to_string(fixture("campaign.csv")).unwrap();
    std::fs::write(&calls, &original).unwrap();

    let first = imported(&data, &calls, &mapping);
    let (appended, present) = counts(&first);
    assert!(appended >= 4 && present == 0, "{first}");
    // The content hash is recorded in the source metadata (personal data sealed as usual).
    let lead = events(&data, "lead-bank-7");
    assert_eq!(lead[0]["metadata"]["source"]["file"], "calls.csv");
    assert_eq!(
        lead[0]["metadata"]["source"]["content_sha256"],
        sha256(&calls).as_str()
    );

    // The same file again, a renamed copy, a gzip copy: nothing new.
    let renamed = root.path().join("calls-2017-renamed.csv");
    std::fs::copy(&calls, &renamed).unwrap();
    let gz = root.path().join("calls-export.csv.gz");
    let zipped = std::process::Command::new("gzip")
        .arg("-c")
        .arg(&calls)
        .output()
        .unwrap();
    std::fs::write(&gz, zipped.stdout).unwrap();
    for file in [&calls, &renamed, &gz] {
        let again = imported(&data, file, &mapping);
        assert_eq!(counts(&again), (0, appended), "{file:?}: {again}");
        assert_eq!(again["skipped_rows"], 0, "{again}");
    }
    let copy = imported(&data, &renamed, &mapping);
    assert!(
        copy["notes"]
            .to_string()
            .contains("imported before as `calls.csv`"),
        "{copy}"
    );
    // The copies recorded nothing of their own.
    assert_eq!(events(&data, "lead-bank-7").len(), lead.len());

    // The file changed under its name (a row added; the mapping numbers phone numbers by
    // row, so it goes last): the new row is appended, the rows imported before are present.
    let changed = format!("{original}11;9;jun;no;email;Eve New;eve@example.org;1\n");
    std::fs::write(&calls, &changed).unwrap();
    let update = imported(&data, &calls, &mapping);
    let (new, present) = counts(&update);
    assert_eq!(
        (new, present),
        (2, appended),
        "captured and disqualified: {update}"
    );
    let eve = events(&data, "lead-bank-11");
    assert_eq!(eve.len(), 2);
    assert_eq!(eve[0]["metadata"]["source"]["line"], 6);
    assert_eq!(
        eve[0]["metadata"]["source"]["content_sha256"],
        sha256(&calls).as_str()
    );
    // Ana's events keep the line and hash of the import that recorded them.
    assert_eq!(events(&data, "lead-bank-7"), lead);
    // And the changed file again: nothing new.
    let again = imported(&data, &calls, &mapping);
    assert_eq!(counts(&again), (0, appended + new), "{again}");
}

/// A leads file of `rows` rows; the row numbered `blank` (1-based) has no id.
fn leads(rows: usize, blank: Option<usize>) -> String {
    let mut out = String::from("id,day\r\n");
    for i in 1..=rows {
        let id = if Some(i) == blank {
            String::new()
        } else {
            format!("L{i}")
        };
        let _ = write!(out, "{id},2017-05-{:02}\r\n", 1 + i % 28);
    }
    out
}

const LEADS_MAPPING: &str = r#"
[[commands]]
aggregate = "lead"
command = "CaptureLead"
id = { column = "id" }
occurred_at = { column = "day", type = "datetime", format = "%Y-%m-%d" }
[commands.fields]
source = { value = "web" }
channel = { value = "web" }
is_test = { value = false }
"#;

#[test]
fn a_long_file_is_appended_batch_by_batch_and_a_bad_row_stops_only_its_batch() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let mapping = root.path().join("leads.toml");
    std::fs::write(&mapping, LEADS_MAPPING).unwrap();
    let file = root.path().join("leads.csv");
    // 1,200 rows: batches of 500; row 1,101 (line 1,102, in the third batch) has no id.
    std::fs::write(&file, leads(1_200, Some(1_101))).unwrap();

    let out = import(&data, &file, &mapping, &[]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("import stopped at leads.csv:1102: column 1 `id`")
            && stderr.contains("1000 events appended by earlier batches"),
        "{stderr}"
    );
    assert_eq!(events(&data, "lead-L1000").len(), 1);
    assert!(
        events(&data, "lead-L1001").is_empty(),
        "its batch held back"
    );

    let out = import(&data, &file, &mapping, &["--on-error=skip"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(counts(&summary), (199, 1000), "{summary}");
    assert_eq!(summary["rows"], 1_200);
    assert_eq!(summary["skipped_rows"], 1);

    // The row fixed: only it is new.
    std::fs::write(&file, leads(1_200, None)).unwrap();
    let summary = imported(&data, &file, &mapping);
    assert_eq!(counts(&summary), (1, 1_199), "{summary}");
    // A row added first: every other row's line moves, yet they are found present.
    let mut first = leads(1_200, None);
    first.insert_str("id,day\r\n".len(), "L0,2017-04-30\r\n");
    std::fs::write(&file, first).unwrap();
    let summary = imported(&data, &file, &mapping);
    assert_eq!(counts(&summary), (1, 1_200), "{summary}");
    assert_eq!(events(&data, "lead-L0")[0]["metadata"]["source"]["line"], 2);
    assert_eq!(events(&data, "lead-L1")[0]["metadata"]["source"]["line"], 2);
    // A row that decides something else now is refused: the log keeps what it recorded.
    let position = events(&data, "lead-L7")[0]["position"].as_u64().unwrap();
    let moved = leads(1_200, None).replace("\r\nL7,2017-05-08\r\n", "\r\nL7,2017-06-08\r\n");
    std::fs::write(&file, moved).unwrap();
    let message = format!(
        "leads.csv: stream `lead-L7`: the event this source's earlier import recorded at position {position}"
    );
    let out = import(&data, &file, &mapping, &[]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&message) && stderr.contains("the row changed since it was imported"),
        "{stderr}"
    );
    // With --on-error=skip the changed row is counted and listed, the rest imported; the log
    // keeps what it recorded for L7.
    let out = import(&data, &file, &mapping, &["--on-error=skip"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["skipped_rows"], 1, "{summary}");
    assert!(
        summary["bad_rows"][0].as_str().unwrap().contains(&message),
        "{summary}"
    );
    assert_eq!(counts(&summary), (0, 1_199), "{summary}");
    let l7 = events(&data, "lead-L7");
    assert_eq!(l7.len(), 1);
    assert_eq!(l7[0]["position"].as_u64(), Some(position));
}

#[test]
fn a_group_that_comes_again_is_refused_and_checking_streams_too() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let mapping = fixture("invoices.toml");
    // The fixture's first line of invoice 536365 moved to the end, after 1,001 more
    // one-line invoices: more rows between two of its rows than a group may have.
    let sorted = std::fs::read_to_string(fixture("invoices.csv")).unwrap();
    let mut lines: Vec<String> = sorted.lines().map(str::to_owned).collect();
    let first_line_of_first_invoice = lines.remove(1);
    for i in 0..1_001 {
        lines.push(format!(
            "7{i:05},22633,HAND WARMER UNION JACK,6,12/1/2010 9:00,1.85,17850,United Kingdom"
        ));
    }
    lines.push(first_line_of_first_invoice);
    let unsorted = root.path().join("unsorted.csv");
    std::fs::write(&unsorted, lines.join("\n") + "\n").unwrap();

    let out = common::crm(&data)
        .args(["import", "csv"])
        .arg(&unsorted)
        .arg("--mapping")
        .arg(&mapping)
        .arg("--check")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let shown = text(&out.stdout);
    assert!(
        shown.contains("1009 rows, 1 refused")
            && shown.contains("refused: unsorted.csv:1010: column 1 `InvoiceNo`: `536365` comes again after its group ended: its rows were lines 2-4")
            && shown.contains("sort the file by `InvoiceNo`"),
        "{shown}"
    );
    assert!(!data.exists(), "checking creates no log");

    let out = import(&data, &unsorted, &mapping, &["--on-error=skip"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["skipped_rows"], 1, "{summary}");
    assert_eq!(summary["events_by_type"]["OrderPlaced"], 1_004, "{summary}");
}

#[test]
fn a_record_touched_again_long_after_is_decided_on_its_state_read_back_from_the_log() {
    // Lead L0 captured on the first row, 12,000 other leads, then L0 qualified (which needs
    // the lead to exist and be open):
    // more records than an import keeps states of, so L0's is let go and read back from the
    // log, with this import's own events, when the last row touches it.
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let mut csv = String::from("id,day,action\n");
    for i in 0..=12_000 {
        let _ = writeln!(csv, "L{i},2017-05-01,capture");
    }
    csv.push_str("L0,2017-06-01,qualify\n");
    let file = root.path().join("funnel.csv");
    std::fs::write(&file, csv).unwrap();
    let mapping = root.path().join("funnel.toml");
    let text_of = |command: &str, action: &str, fields: &str| {
        format!(
            "[[commands]]\naggregate = \"lead\"\ncommand = \"{command}\"\nid = {{ column = \"id\" }}\noccurred_at = {{ column = \"day\", type = \"datetime\", format = \"%Y-%m-%d\" }}\nwhen = {{ column = \"action\", equals = \"{action}\" }}\n[commands.fields]\n{fields}\n"
        )
    };
    let spec = [
        text_of(
            "CaptureLead",
            "capture",
            "source = { value = \"web\" }\nchannel = { value = \"web\" }\nis_test = { value = false }",
        ),
        text_of(
            "QualifyLead",
            "qualify",
            "budget = { value = true }\nauthority = { value = true }\nneed = { value = true }\ntimeline = { value = true }",
        ),
    ]
    .concat();
    std::fs::write(&mapping, spec).unwrap();
    let summary = imported(&data, &file, &mapping);
    assert_eq!(summary["skipped_rows"], 0, "{summary}");
    assert_eq!(counts(&summary), (12_002, 0), "{summary}");
    let types: Vec<String> = events(&data, "lead-L0")
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["LeadCaptured", "LeadQualified"]);
    // Importing it again appends nothing: every event is found recorded.
    let again = imported(&data, &file, &mapping);
    assert_eq!(counts(&again), (0, 12_002), "{again}");
}
