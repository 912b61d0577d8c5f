//! Imports each bundled data set into a fresh store and checks the events against counts
//! computed here from the files themselves; a second import appends nothing; the chain
//! verifies; an export imported into another fresh store is the same history.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use crm_app::envelope::EventFilter;
use crm_app::inspect::{self as verbs, EventsQuery};
use crm_domain::aggregates::opportunity::OpportunityEvent;
use crm_domain::DomainEvent;
use crm_eventstore::{EventStore, Position, RecordedEvent, SledStore};
use crm_import::{self as import, ImportSummary, OnError, Plan, RunOptions};

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(path)
}

fn rows(path: &Path) -> Vec<HashMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

async fn import(store: &SledStore, plan: Plan) -> ImportSummary {
    let options = RunOptions {
        on_error: OnError::Stop,
        progress: false,
        ..RunOptions::default()
    };
    import::run(store, plan, options).await.unwrap()
}

async fn all_events(store: &SledStore) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    let mut next = Position::FIRST;
    loop {
        let page = store.read_all(next, 10_000).await.unwrap();
        let Some(last) = page.last() else { break };
        next = Position(last.position.0 + 1);
        out.extend(page);
    }
    out
}

fn count(events: &[RecordedEvent], event_type: &str) -> u64 {
    events.iter().filter(|e| e.event_type == event_type).count() as u64
}

/// Imports twice and verifies; returns the log's events and the first summary.
async fn import_twice(
    store: &SledStore,
    plan: impl Fn() -> Plan,
) -> (Vec<RecordedEvent>, ImportSummary) {
    let first = import(store, plan()).await;
    assert_eq!(first.already_present, 0);
    assert!(first.appended > 0);
    let second = import(store, plan()).await;
    assert_eq!(second.appended, 0, "a re-import must append nothing");
    assert_eq!(second.already_present, first.appended);
    let report = store.verify(Position::FIRST, None).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.first_bad);
    let events = all_events(store).await;
    assert_eq!(events.len() as u64, first.appended);
    (events, first)
}

fn source_of(event: &RecordedEvent) -> serde_json::Value {
    let meta: serde_json::Value = serde_json::from_slice(&event.metadata).unwrap();
    meta["source"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maven_crm_counts_match_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let (events, summary) =
        import_twice(&store, || import::maven::plan(&data("maven-crm")).unwrap()).await;

    let pipeline = rows(&data("maven-crm/sales_pipeline.csv"));
    let stage_count = |s: &str| pipeline.iter().filter(|r| r["deal_stage"] == s).count() as u64;
    let won_total: i64 = pipeline
        .iter()
        .filter(|r| r["deal_stage"] == "Won")
        .map(|r| r["close_value"].parse::<i64>().unwrap())
        .sum();
    assert_eq!(stage_count("Won"), 4_238);
    assert_eq!(stage_count("Lost"), 2_473);
    assert_eq!(won_total, 10_005_534);

    assert_eq!(count(&events, "OpportunityOpened"), pipeline.len() as u64);
    assert_eq!(count(&events, "OpportunityWon"), stage_count("Won"));
    assert_eq!(count(&events, "OpportunityLost"), stage_count("Lost"));
    let engaged = pipeline
        .iter()
        .filter(|r| !r["engage_date"].is_empty())
        .count() as u64;
    assert_eq!(count(&events, "OpportunityStageChanged"), engaged);
    let accounts = rows(&data("maven-crm/accounts.csv")).len() as u64;
    assert_eq!(
        count(&events, "AccountOpened"),
        accounts + 1,
        "+ the `unknown` account"
    );
    assert_eq!(
        count(&events, "ProductListed"),
        rows(&data("maven-crm/products.csv")).len() as u64
    );
    let teams = rows(&data("maven-crm/sales_teams.csv"));
    let managers: HashSet<_> = teams.iter().map(|r| r["manager"].clone()).collect();
    assert_eq!(count(&events, "RepAssigned"), teams.len() as u64);
    assert_eq!(
        count(&events, "AgentRegistered"),
        (teams.len() + managers.len()) as u64
    );

    // Won amounts, decoded through the domain codec, add up to the file's total (in cents).
    let mut won_cents = 0i64;
    for e in events.iter().filter(|e| e.event_type == "OpportunityWon") {
        let decoded =
            DomainEvent::from_payload(&e.event_type, e.schema_version, &e.payload).unwrap();
        if let DomainEvent::Opportunity(OpportunityEvent::OpportunityWon(won)) = decoded {
            assert_eq!(won.amount.currency.as_str(), "USD");
            won_cents += won.amount.minor_units;
        }
    }
    assert_eq!(won_cents, won_total * 100);

    // The GTXPro spelling is cleansed visibly: in the summary and in the event's metadata.
    let gtxpro = pipeline.iter().filter(|r| r["product"] == "GTXPro").count();
    assert!(
        summary
            .notes
            .iter()
            .any(|n| n.contains("`GTXPro` read as `GTX Pro` in 1480 rows")),
        "{:?}",
        summary.notes
    );
    assert_eq!(gtxpro, 1_480);
    let opened = events
        .iter()
        .find(|e| {
            e.stream_id.as_str() == "opportunity-Z063OYW0" && e.event_type == "OpportunityOpened"
        })
        .unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&opened.metadata).unwrap();
    assert_eq!(meta["cleansing"][0], "product `GTXPro` read as `GTX Pro`");
    // An auditor goes from the event back to the row: file, line, key.
    assert_eq!(
        source_of(opened),
        serde_json::json!({"importer": "maven-crm", "file": "sales_pipeline.csv", "line": 3, "key": "Z063OYW0"})
    );
    // Agent names are personal data: never in stream names.
    assert!(events
        .iter()
        .all(|e| !e.stream_id.as_str().contains("Moses")));
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telco_churn_counts_match_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let file = data("telco-churn/Telco-Customer-Churn.csv");
    let (events, _) = import_twice(&store, || import::telco::plan(&file).unwrap()).await;

    let table = rows(&file);
    let churned = table.iter().filter(|r| r["Churn"] == "Yes").count() as u64;
    assert_eq!(table.len(), 7_043);
    assert_eq!(churned, 1_869);
    assert_eq!(count(&events, "SubscriptionStarted"), table.len() as u64);
    assert_eq!(count(&events, "AccountOpened"), table.len() as u64);
    assert_eq!(count(&events, "SubscriptionCancelled"), churned);

    // Monthly amounts in cents add up to the file's total of MonthlyCharges (456,116.60).
    let mut cents = 0i64;
    for e in events
        .iter()
        .filter(|e| e.event_type == "SubscriptionStarted")
    {
        let payload: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
        assert_eq!(payload["monthly_amount"]["currency"], "USD");
        cents += payload["monthly_amount"]["minor_units"].as_i64().unwrap();
    }
    assert_eq!(cents, 45_611_660);

    // Start = snapshot (2020-01-01) − tenure; the first row has tenure 1 and 29.85 a month.
    let start = events
        .iter()
        .find(|e| {
            e.stream_id.as_str() == "subscription-7590-VHVEG"
                && e.event_type == "SubscriptionStarted"
        })
        .unwrap();
    assert_eq!(start.occurred_at.to_rfc3339(), "2019-12-01T00:00:00+00:00");
    let payload: serde_json::Value = serde_json::from_slice(&start.payload).unwrap();
    assert_eq!(payload["monthly_amount"]["minor_units"], 2985);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helpdesk_counts_match_the_file_and_export_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let file = data("helpdesk/helpdesk.csv");
    let (events, summary) = import_twice(&store, || import::helpdesk::plan(&file).unwrap()).await;

    let log = rows(&file);
    let cases: HashSet<_> = log.iter().map(|r| r["CaseID"].clone()).collect();
    assert_eq!(cases.len(), 3_804);
    assert_eq!(summary.rows, log.len() as u64);
    assert_eq!(count(&events, "CaseOpened"), cases.len() as u64);
    // Every case ends with activity 6, so every case stream ends with a close step: its close,
    // or a close repeated on the case already closed.
    let mut last: BTreeMap<&str, &str> = BTreeMap::new();
    for e in &events {
        last.insert(e.stream_id.as_str(), e.event_type.as_str());
    }
    assert_eq!(last.len(), cases.len());
    assert!(last
        .values()
        .all(|t| *t == "CaseClosed" || *t == "CaseCloseRepeated"));
    // Every close row is in the log: as `CaseClosed`, or as `CaseCloseRepeated` when the case
    // is already closed.
    let close_rows = log.iter().filter(|r| r["ActivityID"] == "6").count() as u64;
    assert_eq!(
        count(&events, "CaseClosed") + count(&events, "CaseCloseRepeated"),
        close_rows
    );
    assert!(count(&events, "CaseCloseRepeated") > 0);
    assert_eq!(summary.skipped_rows, 0, "no case may be rejected");

    // Export as JSON lines, import into a fresh store: the same events, byte for byte.
    let mut jsonl = Vec::new();
    let query = EventsQuery {
        stream: None,
        from: 1,
        limit: 100_000,
        follow: false,
        json: true,
        filter: EventFilter::default(),
    };
    let printed = verbs::events(&store, &query, &verbs::as_stored, &mut jsonl)
        .await
        .unwrap();
    assert_eq!(printed, events.len() as u64);
    // Filters: one type; one import run's correlation id (every event of this import).
    let filtered = |filter: EventFilter| {
        let query = EventsQuery {
            filter,
            json: false,
            ..query.clone()
        };
        let store = store.clone();
        async move {
            let mut out = Vec::new();
            verbs::events(&store, &query, &verbs::as_stored, &mut out)
                .await
                .unwrap()
        }
    };
    let repeated = filtered(EventFilter {
        event_type: Some("CaseCloseRepeated".into()),
        ..EventFilter::default()
    })
    .await;
    assert_eq!(repeated, count(&events, "CaseCloseRepeated"));
    let run = events[0]
        .correlation_id
        .expect("imports set a correlation id");
    let traced = filtered(EventFilter {
        correlation_id: Some(run),
        ..EventFilter::default()
    })
    .await;
    assert_eq!(traced, events.len() as u64);
    let other_run = filtered(EventFilter {
        correlation_id: Some(uuid::Uuid::nil()),
        ..EventFilter::default()
    })
    .await;
    assert_eq!(other_run, 0);
    let export = dir.path().join("export.jsonl");
    std::fs::write(&export, &jsonl).unwrap();
    store.close().await;

    let other_dir = tempfile::tempdir().unwrap();
    let other = SledStore::open(other_dir.path()).unwrap();
    let (copied, _) = import_twice(&other, || import::jsonl::plan(&export).unwrap()).await;
    let key = |e: &RecordedEvent| {
        (
            e.event_id,
            e.stream_id.clone(),
            e.stream_version,
            e.event_type.clone(),
            e.occurred_at,
            e.correlation_id,
            e.actor.clone(),
            e.metadata.clone(),
            e.payload.clone(),
        )
    };
    let mut a: Vec<_> = events.iter().map(key).collect();
    let mut b: Vec<_> = copied.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    other.close().await;
}
