//! `crm_export::export` over a small log built through the command service: the Parquet read
//! back with the parquet crate's reader against the log itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Int64Type, TimestampMicrosecondType, UInt64Type};
use arrow_array::{Array, RecordBatch};
use crm_app::commands::{CommandRequest, CommandService};
use crm_eventstore::limits::READ_PAGE_MAX;
use crm_eventstore::{
    AnyStore, EventId, EventStore, ExpectedVersion, MemoryStore, Position, ProposedEvent,
    RecordedEvent, StreamId,
};
use crm_export::{export, ExportError, ExportOptions, Manifest, MANIFEST_FILE};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{json, Value};

const PERSON: &str = "Zelda Quartermain";
const EMAIL: &str = "zelda@example.org";

async fn send(commands: &CommandService, category: &str, body: Value) {
    let Value::Object(body) = body else {
        panic!("a command body is an object")
    };
    commands
        .execute(CommandRequest {
            category: category.into(),
            body,
            if_match: None,
            idempotency_key: None,
            actor: "token:writer".into(),
            on_behalf_of: None,
            correlation_id: None,
        })
        .await
        .unwrap();
}

fn open_account(id: &str, region: &str) -> Value {
    json!({
        "type": "OpenAccount", "account_id": id, "name": format!("Account {id}"),
        "segment": "smb", "region": region, "industry": null, "owner": "agent-1",
        "is_internal": false, "is_test": false, "occurred_at": "2026-01-01T00:00:00Z",
    })
}

fn open_opportunity(id: &str, account: &str, cents: i64, day: &str) -> Value {
    json!({
        "type": "OpenOpportunity", "opportunity_id": id, "account_id": account,
        "owner": "agent-1", "product": "gtx-basic",
        "amount": { "minor_units": cents, "currency": "USD" },
        "expected_close": "2026-06-30", "kind": "new", "channel": "direct",
        "stage": "Prospecting", "probability": 10, "lead": null, "campaign": null,
        "is_test": false, "occurred_at": format!("{day}T00:00:00Z"),
    })
}

fn win(id: &str, cents: i64, day: &str) -> Value {
    json!({
        "type": "WinOpportunity", "opportunity_id": id,
        "amount": { "minor_units": cents, "currency": "USD" }, "list_price": null,
        "discount": null, "competitor": null, "occurred_at": format!("{day}T00:00:00Z"),
    })
}

fn capture_lead(id: &str) -> Value {
    json!({
        "type": "CaptureLead", "lead_id": id, "source": "web form", "channel": "email",
        "campaign": null, "product": null, "industry": null, "region": null,
        "referred_by": null, "personal": { "full_name": PERSON, "email": EMAIL, "phone": null },
        "is_test": false, "occurred_at": "2026-02-04T00:00:00Z",
    })
}

/// A log of accounts, opportunities over three months (some won), a lead with personal
/// data and an `OpportunityWon` stored in schema version 1.
async fn small_log() -> AnyStore {
    let store = AnyStore::from(MemoryStore::new());
    let commands = CommandService::new(store.clone(), crm_domain::Registry::builtin());
    send(&commands, "account", open_account("acme", "emea")).await;
    send(&commands, "account", open_account("globex", "amer")).await;
    let deals = [
        ("o1", "acme", 100_000, "2026-01-10"),
        ("o2", "acme", 250_000, "2026-01-20"),
        ("o3", "globex", 75_050, "2026-02-03"),
        ("o4", "globex", 990_000, "2026-03-15"),
    ];
    for (id, account, cents, day) in deals {
        send(
            &commands,
            "opportunity",
            open_opportunity(id, account, cents, day),
        )
        .await;
    }
    send(&commands, "opportunity", win("o1", 100_000, "2026-02-01")).await;
    send(&commands, "opportunity", win("o3", 80_000, "2026-03-20")).await;
    send(&commands, "lead", capture_lead("l1")).await;
    // An OpportunityWon as version 1 stored it: decimal amount and a currency field.
    let v1 = json!({
        "opportunity_id": "o2", "amount": "2600.25", "currency": "USD",
        "competitor": null, "occurred_at": "2026-03-01T00:00:00Z",
    });
    append_raw(
        &store,
        "opportunity-o2",
        "OpportunityWon",
        1,
        &v1,
        "2026-03-01",
    )
    .await;
    store
}

async fn append_raw(
    store: &AnyStore,
    stream: &str,
    event_type: &str,
    version: u16,
    payload: &Value,
    day: &str,
) {
    let occurred_at = format!("{day}T00:00:00Z").parse().unwrap();
    let event = ProposedEvent {
        event_id: EventId(uuid::Uuid::now_v7()),
        event_type: event_type.into(),
        schema_version: version,
        occurred_at,
        causation_id: None,
        correlation_id: None,
        actor: "test".into(),
        metadata: Vec::new(),
        payload: serde_json::to_vec(payload).unwrap(),
    };
    store
        .append(
            &StreamId::new(stream).unwrap(),
            ExpectedVersion::Any,
            vec![event],
        )
        .await
        .unwrap();
}

async fn all_events(store: &AnyStore) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    let mut next = Position::FIRST;
    loop {
        let page = store.read_all(next, READ_PAGE_MAX).await.unwrap();
        let Some(last) = page.last() else { break };
        next = Position(last.position.0 + 1);
        out.extend(page);
    }
    out
}

fn options(out: &Path, work: &Path) -> ExportOptions {
    ExportOptions {
        out: out.to_owned(),
        projections_dir: work.join("projections"),
        read_models: crm_projections::ReadModelConfig::default(),
        as_of: "2026-04-01T00:00:00Z".parse().unwrap(),
        tables: true,
    }
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(parquet_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn read(path: &Path) -> Vec<RecordBatch> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    reader.map(Result::unwrap).collect()
}

fn rows(path: &Path) -> usize {
    read(path).iter().map(RecordBatch::num_rows).sum()
}

/// (event type, month) of a part file's folders.
fn partition_of(path: &Path) -> (String, String) {
    let month = path.parent().unwrap();
    let event_type = month.parent().unwrap();
    let value = |p: &Path, key: &str| {
        p.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .strip_prefix(key)
            .unwrap()
            .to_owned()
    };
    (value(event_type, "event_type="), value(month, "month="))
}

/// Rows per (event type, month).
type Counts = BTreeMap<(String, String), usize>;

/// Rows per (type, month) in the files, and in the log.
fn counts(out: &Path, log: &[RecordedEvent]) -> (Counts, Counts) {
    let mut files = BTreeMap::new();
    for file in parquet_files(&out.join("events")) {
        *files.entry(partition_of(&file)).or_default() += rows(&file);
    }
    let mut expected = BTreeMap::new();
    for e in log {
        let key = (
            e.event_type.clone(),
            e.occurred_at.format("%Y-%m").to_string(),
        );
        *expected.entry(key).or_default() += 1;
    }
    (files, expected)
}

/// The values of column `name` over every file of a partition folder.
fn column<T>(
    out: &Path,
    event_type: &str,
    name: &str,
    get: impl Fn(&dyn Array, usize) -> T,
) -> Vec<Option<T>> {
    let mut values = Vec::new();
    for file in parquet_files(&out.join("events").join(format!("event_type={event_type}"))) {
        for batch in read(&file) {
            let array = batch
                .column_by_name(name)
                .unwrap_or_else(|| panic!("{name} in {:?}", batch.schema()));
            for i in 0..array.len() {
                values.push(array.is_valid(i).then(|| get(array.as_ref(), i)));
            }
        }
    }
    values
}

fn int(a: &dyn Array, i: usize) -> i64 {
    a.as_primitive::<Int64Type>().value(i)
}

fn text(a: &dyn Array, i: usize) -> String {
    a.as_string::<i32>().value(i).to_owned()
}

#[tokio::test]
async fn the_files_hold_the_log_by_type_and_month_with_typed_payload_columns() {
    let store = small_log().await;
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let report = export(&store, &options(&out, work.path()), |_| {})
        .await
        .unwrap();
    let log = all_events(&store).await;
    assert_eq!(report.events, u64::try_from(log.len()).unwrap());
    assert_eq!(report.last_position, store.head().position.0);
    let (files, expected) = counts(&out, &log);
    assert_eq!(files, expected);
    assert!(expected.len() >= 5, "{expected:?}");

    // Money is flattened, dates typed, and the rows are in log order.
    let amounts = column(&out, "OpportunityOpened", "amount_minor_units", int);
    let mut amounts: Vec<i64> = amounts.into_iter().map(Option::unwrap).collect();
    amounts.sort_unstable();
    assert_eq!(amounts, [75_050, 100_000, 250_000, 990_000]);
    let currencies = column(&out, "OpportunityOpened", "amount_currency", text);
    assert!(currencies.iter().all(|c| c.as_deref() == Some("USD")));
    let close = column(&out, "OpportunityOpened", "expected_close", |a, i| {
        a.as_primitive::<Date32Type>().value(i)
    });
    let june_30 = i32::try_from(
        chrono::NaiveDate::from_ymd_opt(2026, 6, 30)
            .unwrap()
            .signed_duration_since(chrono::NaiveDate::default())
            .num_days(),
    )
    .unwrap();
    assert!(close.iter().all(|d| *d == Some(june_30)), "{close:?}");
    let occurred = column(&out, "OpportunityWon", "occurred_at", |a, i| {
        a.as_primitive::<TimestampMicrosecondType>().value(i)
    });
    let positions = column(&out, "OpportunityWon", "position", |a, i| {
        a.as_primitive::<UInt64Type>().value(i)
    });
    let won: Vec<&RecordedEvent> = log
        .iter()
        .filter(|e| e.event_type == "OpportunityWon")
        .collect();
    let mut by_position: Vec<(u64, i64)> = positions
        .iter()
        .zip(&occurred)
        .map(|(p, t)| (p.unwrap(), t.unwrap()))
        .collect();
    by_position.sort_unstable();
    let expected_won: Vec<(u64, i64)> = won
        .iter()
        .map(|e| (e.position.0, e.occurred_at.timestamp_micros()))
        .collect();
    assert_eq!(by_position, expected_won);

    // The version-1 win is upcast: its amount is in minor units like the others.
    let won_amounts = column(&out, "OpportunityWon", "amount_minor_units", int);
    let mut won_amounts: Vec<i64> = won_amounts.into_iter().map(Option::unwrap).collect();
    won_amounts.sort_unstable();
    assert_eq!(won_amounts, [80_000, 100_000, 260_025]);
    let versions = column(&out, "OpportunityWon", "schema_version", |a, i| {
        a.as_primitive::<arrow_array::types::UInt16Type>().value(i)
    });
    assert!(
        versions.contains(&Some(1)) && versions.contains(&Some(2)),
        "{versions:?}"
    );

    // The manifest lists every file and the head.
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(out.join(MANIFEST_FILE)).unwrap()).unwrap();
    assert_eq!(manifest.last_position, store.head().position.0);
    assert_eq!(manifest.last_hash, store.head().hash.to_hex());
    let listed: usize = manifest.partitions.values().map(|p| p.files.len()).sum();
    assert_eq!(listed, parquet_files(&out.join("events")).len());
    assert_eq!(manifest.events, u64::try_from(log.len()).unwrap());
}

#[tokio::test]
async fn personal_fields_never_reach_a_file() {
    let store = small_log().await;
    // The log itself holds the name in plain text (no sealer on this store)...
    let log = all_events(&store).await;
    let lead = log.iter().find(|e| e.event_type == "LeadCaptured").unwrap();
    assert!(String::from_utf8_lossy(&lead.payload).contains(PERSON));
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    export(&store, &options(&out, work.path()), |_| {})
        .await
        .unwrap();
    // ...the export has no column of it, and no file holds it.
    let files = parquet_files(&out.join("events").join("event_type=LeadCaptured"));
    assert!(!files.is_empty());
    for file in &files {
        for batch in read(file) {
            let schema = batch.schema();
            assert!(
                schema
                    .fields()
                    .iter()
                    .all(|f| !f.name().starts_with("personal")),
                "{schema:?}"
            );
            assert!(schema.field_with_name("channel").is_ok(), "{schema:?}");
        }
    }
    for file in parquet_files(&out) {
        let bytes = std::fs::read(&file).unwrap();
        for needle in [PERSON, EMAIL] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} in {}",
                file.display()
            );
        }
    }
}

#[tokio::test]
async fn a_second_export_adds_only_what_is_new_and_moves_the_manifest() {
    let store = small_log().await;
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let first = export(&store, &options(&out, work.path()), |_| {})
        .await
        .unwrap();
    let before = parquet_files(&out.join("events"));
    let stamp = |files: &[PathBuf]| -> Vec<(PathBuf, Vec<u8>)> {
        files
            .iter()
            .map(|f| (f.clone(), std::fs::read(f).unwrap()))
            .collect()
    };
    let old = stamp(&before);

    // Nothing new: no event file.
    let idle = export(&store, &options(&out, work.path()), |_| {})
        .await
        .unwrap();
    assert_eq!(
        (idle.events, idle.event_files, idle.first_position),
        (0, 0, None)
    );
    assert!(idle.incremental);

    let commands = CommandService::new(store.clone(), crm_domain::Registry::builtin());
    send(
        &commands,
        "opportunity",
        open_opportunity("o5", "acme", 12_345, "2026-04-02"),
    )
    .await;
    send(&commands, "opportunity", win("o4", 990_000, "2026-04-03")).await;
    let second = export(&store, &options(&out, work.path()), |_| {})
        .await
        .unwrap();
    assert_eq!(second.events, 2);
    assert_eq!(second.first_position, Some(first.last_position + 1));
    assert_eq!(second.last_position, store.head().position.0);
    assert_eq!(second.event_files, 2);

    // The first files are untouched; the new ones start after the first export's end.
    assert_eq!(stamp(&before), old);
    let after = parquet_files(&out.join("events"));
    let new: Vec<&PathBuf> = after.iter().filter(|f| !before.contains(f)).collect();
    assert_eq!(new.len(), 2, "{new:?}");
    for file in &new {
        let positions: Vec<u64> = read(file)
            .iter()
            .flat_map(|b| {
                let a = b
                    .column_by_name("position")
                    .unwrap()
                    .as_primitive::<UInt64Type>()
                    .clone();
                a.values().to_vec()
            })
            .collect();
        assert!(
            positions.iter().all(|p| *p > first.last_position),
            "{positions:?}"
        );
    }
    let log = all_events(&store).await;
    let (files, expected) = counts(&out, &log);
    assert_eq!(files, expected);
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(out.join(MANIFEST_FILE)).unwrap()).unwrap();
    assert_eq!(manifest.last_position, store.head().position.0);
    assert_eq!(manifest.runs.len(), 3);
}

#[tokio::test]
async fn a_log_that_no_longer_holds_the_exported_record_is_refused() {
    let store = small_log().await;
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let first = export(&store, &options(&out, work.path()), |_| {})
        .await
        .unwrap();
    let manifest_before = std::fs::read(out.join(MANIFEST_FILE)).unwrap();

    // Another log of the same length whose last record differs (restored elsewhere).
    let other = AnyStore::from(MemoryStore::new());
    for e in all_events(&store).await {
        let mut payload: Value = serde_json::from_slice(&e.payload).unwrap();
        if e.position.0 == first.last_position {
            payload["competitor"] = json!("Initech");
        }
        append_raw(
            &other,
            e.stream_id.as_str(),
            &e.event_type,
            e.schema_version,
            &payload,
            &e.occurred_at.format("%Y-%m-%d").to_string(),
        )
        .await;
    }
    let err = export(&other, &options(&out, work.path()), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ExportError::LogChanged { position, found: Some(_), .. } if *position == first.last_position),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&format!("position {}", first.last_position)),
        "{message}"
    );
    assert!(message.contains("new directory"), "{message}");

    // A shorter log: no record there at all.
    let short = AnyStore::from(MemoryStore::new());
    send(
        &CommandService::new(short.clone(), crm_domain::Registry::builtin()),
        "account",
        open_account("acme", "emea"),
    )
    .await;
    let err = export(&short, &options(&out, work.path()), |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExportError::LogChanged { found: None, .. }),
        "{err:?}"
    );
    // Refusals leave the manifest as it was.
    assert_eq!(
        std::fs::read(out.join(MANIFEST_FILE)).unwrap(),
        manifest_before
    );
}

#[tokio::test]
async fn an_interrupted_exports_part_files_are_removed_and_a_bad_payload_names_its_position() {
    let store = small_log().await;
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    export(&store, &options(&out, work.path()), |_| {})
        .await
        .unwrap();
    // What an export interrupted before its manifest leaves: a renamed part and a temporary.
    let dir = out.join("events/event_type=AccountOpened/month=2026-05");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("part-00000000000000000099-00000000000000000099.parquet"),
        b"x",
    )
    .unwrap();
    std::fs::write(
        dir.join("part-00000000000000000100-00000000000000000100.parquet.tmp"),
        b"x",
    )
    .unwrap();
    let report = export(&store, &options(&out, work.path()), |_| {})
        .await
        .unwrap();
    assert_eq!(report.orphans_removed, 2);
    assert!(parquet_files(&dir).is_empty());

    // A payload with a field its type does not have.
    let bad = json!({
        "opportunity_id": "o4", "amount": {"minor_units": 1, "currency": "USD"},
        "list_price": null, "discount": null, "competitor": null,
        "occurred_at": "2026-05-01T00:00:00Z", "bonus": 5,
    });
    append_raw(
        &store,
        "opportunity-o4",
        "OpportunityWon",
        2,
        &bad,
        "2026-05-01",
    )
    .await;
    let position = store.head().position.0;
    let err = export(&store, &options(&out, work.path()), |_| {})
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&format!("position {position}")),
        "{message}"
    );
    assert!(message.contains("bonus"), "{message}");
}

#[tokio::test]
async fn read_models_and_metric_answers_are_written_from_the_engines() {
    let store = small_log().await;
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let report = export(&store, &options(&out, work.path()), |_| {})
        .await
        .unwrap();
    for name in ["pipeline", "churn", "lifetime-value", "sla"] {
        let file = out.join("read_models").join(format!("{name}.parquet"));
        assert!(rows(&file) > 0, "{name}");
    }
    // The pipeline's open count, as its report gives it.
    let batches = read(&out.join("read_models/pipeline.parquet"));
    let mut open_count = None;
    for b in &batches {
        let path = b.column_by_name("path").unwrap().as_string::<i32>();
        let value = b
            .column_by_name("value_int")
            .unwrap()
            .as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            if path.value(i) == "open.count" {
                open_count = Some(value.value(i));
            }
        }
    }
    // o2 (won as v1), o1 and o3 are won; o4 is open.
    assert_eq!(open_count, Some(1));

    // A metric's totals equal the engine's answer for the same query.
    let registry = crm_metrics::Registry::load(&store).await.unwrap();
    let id = "sales.win_rate";
    let version = registry.default_version(id).unwrap();
    let file = out
        .join("metrics")
        .join(id)
        .join(format!("v{version}.parquet"));
    assert!(file.exists(), "skipped: {:?}", report.metrics_skipped);
    let query = crm_metrics::Query {
        period: crm_metrics::Grain::Month,
        ..crm_metrics::Query::default()
    };
    let answer = crm_metrics::evaluate(&store, &registry, id, None, &query)
        .await
        .unwrap();
    let mut totals = Vec::new();
    for b in read(&file) {
        let breakdown = b.column_by_name("breakdown").unwrap();
        let period = b.column_by_name("period").unwrap().as_string::<i32>();
        let value = b
            .column_by_name("value")
            .unwrap()
            .as_primitive::<arrow_array::types::Float64Type>();
        let included = b
            .column_by_name("included")
            .unwrap()
            .as_primitive::<UInt64Type>();
        for i in 0..b.num_rows() {
            if breakdown.is_null(i) {
                totals.push((
                    period.value(i).to_owned(),
                    value.is_valid(i).then(|| value.value(i)),
                    included.value(i),
                ));
            }
        }
    }
    let expected: Vec<(String, Option<f64>, u64)> = answer
        .figures
        .iter()
        .map(|f| (f.period.label.clone(), f.value, f.included))
        .collect();
    assert_eq!(totals, expected);
    assert!(!expected.is_empty());
}
