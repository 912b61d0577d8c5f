//! Imports are reproducible: the bundled exports (their first rows) imported into an empty log give the same
//! records at the same positions with the same chain hashes, run after run. Every record of
//! one import carries one recording time (the import's start), and stating that time again
//! repeats the import byte for byte; the order of the records is the source's, whatever the
//! timing of the appends.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use crm_eventstore::limits::READ_PAGE_MAX;
use crm_eventstore::{EventStore, Position, RecordedEvent, SledStore};
use crm_import::{self as import, helpdesk, mapping, maven, telco, OnError, Plan, RunOptions};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data")
}

/// The first `lines` lines of `file` under `dir` (the header and `lines - 1` rows): enough
/// rows for several batches of each import, in a fraction of the time.
fn head_of(file: &Path, dir: &Path, lines: usize) -> PathBuf {
    let text = std::fs::read_to_string(file).unwrap();
    let kept: Vec<&str> = text.lines().take(lines).collect();
    let out = dir.join(file.file_name().unwrap());
    std::fs::write(&out, kept.join("\n") + "\n").unwrap();
    out
}

/// Rows of each export the test imports (each import appends in batches of 500 rows).
const ROWS: usize = 2_000;

/// The bundled exports, cut to their first rows in `dir`, in the order the demo imports them.
fn plans(dir: &Path) -> Vec<(&'static str, Plan)> {
    let d = data();
    let maven = dir.join("maven-crm");
    std::fs::create_dir_all(&maven).unwrap();
    for file in ["accounts.csv", "products.csv", "sales_teams.csv"] {
        std::fs::copy(d.join("maven-crm").join(file), maven.join(file)).unwrap();
    }
    head_of(&d.join("maven-crm/sales_pipeline.csv"), &maven, ROWS);
    vec![
        ("maven-crm", maven::plan(&maven).unwrap()),
        (
            "telco-churn",
            telco::plan(&head_of(
                &d.join("telco-churn/Telco-Customer-Churn.csv"),
                dir,
                ROWS,
            ))
            .unwrap(),
        ),
        (
            "helpdesk",
            helpdesk::plan(&head_of(&d.join("helpdesk/helpdesk.csv"), dir, ROWS)).unwrap(),
        ),
        (
            "leads",
            mapping::plan(
                &head_of(&d.join("leads/Leads.csv"), dir, ROWS),
                &d.join("leads/mapping.toml"),
            )
            .unwrap(),
        ),
    ]
}

async fn everything(store: &SledStore) -> Vec<RecordedEvent> {
    let mut out: Vec<RecordedEvent> = Vec::new();
    loop {
        let from = Position(u64::try_from(out.len()).unwrap() + 1);
        let page = store.read_all(from, READ_PAGE_MAX).await.unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// Imports every bundled export into `store`, each at its stated time (or its start, when
/// `None`); returns each import's recording time and the positions it ends at.
async fn import_all(
    store: &SledStore,
    times: &[Option<DateTime<Utc>>],
) -> Vec<(DateTime<Utc>, Position)> {
    let files = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    for ((name, plan), time) in plans(files.path()).into_iter().zip(times) {
        let before = store.head().position;
        let options = RunOptions {
            on_error: OnError::Stop,
            progress: false,
            recorded_at: *time,
        };
        let summary = import::run(store, plan, options).await.unwrap();
        assert!(summary.appended > 0, "{name} appended nothing");
        let head = store.head().position;
        let records = store
            .read_all(Position(before.0 + 1), READ_PAGE_MAX)
            .await
            .unwrap();
        let at = records[0].recorded_at;
        if let Some(time) = time {
            assert_eq!(at, *time, "{name}: the stated time");
        }
        out.push((at, head));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_files_give_the_same_log_record_for_record() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = SledStore::open(a_dir.path()).unwrap();
    let first = import_all(&a, &[None, None, None, None]).await;
    let log_a = everything(&a).await;
    // One recording time per import, never decreasing from one import to the next.
    let mut from = 0usize;
    for (i, (at, head)) in first.iter().enumerate() {
        let end = usize::try_from(head.0).unwrap();
        assert!(
            log_a[from..end].iter().all(|r| r.recorded_at == *at),
            "import {i} holds records with other recording times"
        );
        from = end;
    }
    assert!(first.windows(2).all(|w| w[0].0 <= w[1].0));

    // Again, into another empty log, stating the first run's times.
    let b = SledStore::open(b_dir.path()).unwrap();
    let stated: Vec<Option<DateTime<Utc>>> = first.iter().map(|(at, _)| Some(*at)).collect();
    let second = import_all(&b, &stated).await;
    assert_eq!(first, second);
    assert_eq!(a.head(), b.head(), "the same files, another chain");
    let log_b = everything(&b).await;
    assert_eq!(log_a.len(), log_b.len());
    let differing = log_a.iter().zip(&log_b).filter(|(x, y)| x != y).count();
    assert_eq!(differing, 0, "records differ at {differing} positions");
    assert!(b.verify(Position::FIRST, None).await.unwrap().is_ok());
    a.close().await;
    b.close().await;
}
