//! An audit bundle of `sales.win_rate` over the Maven CRM data (its first 1,500 deals) checks with the public key
//! alone, and each kind of tampering fails with its reason: a changed amount (alone, or with
//! the chain recomputed after it), a dropped or reordered record, a dropped explain row, a
//! changed figure, another key, and a checkpoint re-signed by another key.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use crm_app::checkpoint::{CheckpointSigner, Checkpoints};
use crm_audit::{check_bundle, write_bundle, AuditError, Question, FORMAT_LINE};
use crm_eventstore::codec;
use crm_eventstore::{ChainHash, EventStore, Head, MemoryStore, Position, RecordedEvent};
use crm_import::{self as import, maven, OnError, RunOptions};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde_json::Value;

/// A bundle taken apart: its manifest and its records.
struct Parts {
    manifest: Value,
    records: Vec<RecordedEvent>,
}

fn open(bytes: &[u8]) -> Parts {
    let mut reader = BufReader::new(GzDecoder::new(bytes));
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line.trim_end(), FORMAT_LINE);
    line.clear();
    reader.read_line(&mut line).unwrap();
    let manifest: Value = serde_json::from_str(&line).unwrap();
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    let mut records = Vec::new();
    let mut at = 0;
    while at < rest.len() {
        let len = codec::frame_len(&rest[at..]).unwrap();
        records.push(codec::decode(&rest[at..at + len], None, true).unwrap());
        at += len;
    }
    Parts { manifest, records }
}

fn close(parts: &Parts) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    writeln!(gz, "{FORMAT_LINE}").unwrap();
    writeln!(gz, "{}", parts.manifest).unwrap();
    for r in &parts.records {
        gz.write_all(&codec::encode_recorded(r).unwrap()).unwrap();
    }
    gz.finish().unwrap()
}

/// Re-links every record from `from` on to its predecessor, as a forger would.
fn rechain(records: &mut [RecordedEvent], from: usize) {
    for i in from..records.len() {
        let prev = if i == 0 {
            ChainHash::GENESIS
        } else {
            records[i - 1].hash
        };
        records[i].prev_hash = prev;
        records[i].hash = codec::recompute_hash(&records[i]).unwrap();
    }
}

/// Adds 1 to the first `minor_units` of the record's payload.
fn raise_amount(record: &mut RecordedEvent) {
    let mut payload: Value = serde_json::from_slice(&record.payload).unwrap();
    let units = payload["amount"]["minor_units"].as_i64().unwrap();
    payload["amount"]["minor_units"] = (units + 100).into();
    record.payload = serde_json::to_vec(&payload).unwrap();
}

async fn check(
    bytes: &[u8],
    signer: &CheckpointSigner,
) -> Result<crm_audit::CheckReport, AuditError> {
    check_bundle(bytes, Some(signer.verifier())).await
}

/// Rows of the Maven pipeline the test imports.
const PIPELINE_ROWS: usize = 1_500;

/// The Maven CRM export in `dir`, its pipeline cut to its first rows.
fn maven_dir(dir: &Path) -> std::path::PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/maven-crm");
    let to = dir.join("maven-crm");
    std::fs::create_dir_all(&to).unwrap();
    for file in ["accounts.csv", "products.csv", "sales_teams.csv"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
    let pipeline = std::fs::read_to_string(from.join("sales_pipeline.csv")).unwrap();
    let head: Vec<&str> = pipeline.lines().take(PIPELINE_ROWS + 1).collect();
    std::fs::write(to.join("sales_pipeline.csv"), head.join("\n") + "\n").unwrap();
    to
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_checks_away_from_the_log_and_every_tampering_fails_with_its_reason() {
    let store = MemoryStore::new();
    let options = RunOptions {
        on_error: OnError::Stop,
        progress: false,
        recorded_at: None,
    };
    let dir = tempfile::tempdir().unwrap();
    import::run(
        &store,
        maven::plan(&maven_dir(dir.path())).unwrap(),
        options,
    )
    .await
    .unwrap();
    let kept = Checkpoints::in_data_dir(dir.path());
    let signer = CheckpointSigner::from_seed(&[3; 32]);
    let question = Question {
        metric: "sales.win_rate".into(),
        version: None,
        query: crm_metrics::Query::default(),
    };
    let mut bytes = Vec::new();
    let written = write_bundle(&store, question, "auditor", &kept, &signer, &mut bytes)
        .await
        .unwrap();
    assert_eq!(written.records, store.head().position.0);
    assert!(written.rows > 500, "{} rows", written.rows);

    // Round trip: the public key and the bytes are all it takes.
    let report = check(&bytes, &signer).await.unwrap();
    assert_eq!(report.metric, "sales.win_rate");
    assert_eq!(report.figures, written.figures);
    assert_eq!(report.rows, written.rows);
    assert_eq!(report.records, written.records);
    assert!(report.key_given);
    let named = check_bundle(bytes.as_slice(), None).await.unwrap();
    assert!(!named.key_given);

    let parts = open(&bytes);
    let won = parts
        .records
        .iter()
        .position(|r| r.event_type == "OpportunityWon")
        .unwrap();
    let at = u64::try_from(won).unwrap() + 1;

    // A changed amount: its record no longer links the next one to the chain.
    let mut tampered = open(&bytes);
    raise_amount(&mut tampered.records[won]);
    tampered.records[won].hash = codec::recompute_hash(&tampered.records[won]).unwrap();
    match check(&close(&tampered), &signer).await {
        Err(AuditError::Record { position, reason }) => {
            assert_eq!(position, at + 1);
            assert!(reason.contains("does not link"), "{reason}");
        }
        other => panic!("a changed amount passed: {other:?}"),
    }
    // ... and with the chain recomputed after it: the head is not the signed one.
    let mut forged = open(&bytes);
    raise_amount(&mut forged.records[won]);
    rechain(&mut forged.records, won);
    assert!(matches!(
        check(&close(&forged), &signer).await,
        Err(AuditError::Head { .. })
    ));

    // A dropped record: the next one sits at the wrong position.
    let mut dropped = open(&bytes);
    dropped.records.remove(won);
    match check(&close(&dropped), &signer).await {
        Err(AuditError::Record { position, .. }) => assert_eq!(position, at),
        other => panic!("a dropped record passed: {other:?}"),
    }
    // Two records swapped.
    let mut swapped = open(&bytes);
    swapped.records.swap(won, won + 1);
    match check(&close(&swapped), &signer).await {
        Err(AuditError::Record { position, .. }) => assert_eq!(position, at),
        other => panic!("reordered records passed: {other:?}"),
    }
    // The records cut short: fewer than the checkpoint covers.
    let mut short = open(&bytes);
    short.records.pop();
    assert!(matches!(
        check(&close(&short), &signer).await,
        Err(AuditError::Count { .. })
    ));

    // A dropped explain row, a changed figure.
    let mut fewer = open(&bytes);
    fewer.manifest["explanation"]["rows"]
        .as_array_mut()
        .unwrap()
        .remove(3);
    match check(&close(&fewer), &signer).await {
        Err(AuditError::Rows(reason)) => assert!(reason.contains("row 4"), "{reason}"),
        other => panic!("a dropped row passed: {other:?}"),
    }
    let mut figure = open(&bytes);
    figure.manifest["answer"]["figures"][0]["display"] = "99.99%".into();
    match check(&close(&figure), &signer).await {
        Err(AuditError::Answer(reason)) => assert!(reason.contains("99.99%"), "{reason}"),
        other => panic!("a changed figure passed: {other:?}"),
    }

    // Another key, and a forgery re-signed by another key.
    let other = CheckpointSigner::from_seed(&[4; 32]);
    assert!(matches!(
        check(&bytes, &other).await,
        Err(AuditError::Checkpoint(_))
    ));
    let mut resigned = open(&bytes);
    raise_amount(&mut resigned.records[won]);
    rechain(&mut resigned.records, won);
    let last = resigned.records.last().unwrap();
    let head = Head {
        position: Position(last.position.0),
        hash: last.hash,
    };
    resigned.manifest["checkpoint"] = other.sign(head, chrono::Utc::now()).note.into();
    resigned.manifest["key"] = other.verifier().to_string().into();
    let forged = close(&resigned);
    assert!(matches!(
        check(&forged, &signer).await,
        Err(AuditError::Checkpoint(_))
    ));
    // Checked with the key it names, the forgery's signature and chain hold; its answer still
    // names the chain hash of the log the figure was computed on.
    assert!(matches!(
        check_bundle(forged.as_slice(), None).await,
        Err(AuditError::Answer(_))
    ));
}
