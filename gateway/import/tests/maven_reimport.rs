//! A re-import of the unchanged Maven CRM files appends nothing, whatever the log it meets:
//! one whose streams an earlier import wrote in another order (products after opportunities,
//! after an unrelated stream), and one whose metadata an earlier build of `crm` wrote with its
//! JSON keys in another order (sorted: a build without serde_json's `preserve_order` feature).
//! The metadata of an imported event has one byte form, whatever the build's features.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crm_eventstore::{
    EventId, EventStore, ExpectedVersion, Position, ProposedEvent, SledStore, StreamId,
};
use crm_import::{self as import, maven, ImportSummary, OnError, RunOptions};
use serde_json::Value;

fn maven_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/maven-crm")
}

async fn import(store: &SledStore) -> ImportSummary {
    let options = RunOptions {
        on_error: OnError::Stop,
        progress: false,
        ..RunOptions::default()
    };
    import::run(store, maven::plan(&maven_dir()).unwrap(), options)
        .await
        .unwrap()
}

/// How an earlier build ordered the members of a JSON object.
#[derive(Clone, Copy)]
enum KeyOrder {
    /// By key (serde_json's `Map` without `preserve_order`).
    Sorted,
    /// By key, backwards: an order no build of the importer writes.
    Reversed,
}

/// JSON text of `value` with each object's members in `order`.
fn encode(value: &Value, order: KeyOrder) -> String {
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| match order {
                KeyOrder::Sorted => a.0.cmp(b.0),
                KeyOrder::Reversed => b.0.cmp(a.0),
            });
            let inner: Vec<String> = members
                .into_iter()
                .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), encode(v, order)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(|v| encode(v, order)).collect();
            format!("[{}]", inner.join(","))
        }
        other => serde_json::to_string(other).unwrap(),
    }
}

/// A stream of another source, so that no Maven event is at position 1.
async fn write_other_stream(store: &SledStore) {
    let note = ProposedEvent {
        event_id: EventId(uuid::Uuid::from_u128(7)),
        event_type: "Noted".into(),
        schema_version: 1,
        occurred_at: chrono::DateTime::UNIX_EPOCH,
        causation_id: None,
        correlation_id: None,
        actor: "test".into(),
        metadata: br#"{"b":1,"a":2}"#.to_vec(),
        payload: b"{}".to_vec(),
    };
    let stream = StreamId::new("note-elsewhere").unwrap();
    store
        .append(&stream, ExpectedVersion::NoStream, vec![note])
        .await
        .unwrap();
}

/// Writes the Maven import as an earlier run could have: the same events, each stream in one
/// append, opportunities first and products last, after a stream of another source, every
/// metadata re-encoded with `order`. Returns the events written.
async fn write_earlier_import(store: &SledStore, order: KeyOrder) -> u64 {
    write_other_stream(store).await;
    let plan = maven::plan(&maven_dir()).unwrap();
    let mut streams: Vec<(StreamId, Vec<ProposedEvent>)> = Vec::new();
    let mut index: HashMap<StreamId, usize> = HashMap::new();
    for staged in plan.units.into_iter().flat_map(|u| u.unwrap().events) {
        let i = *index.entry(staged.stream.clone()).or_insert_with(|| {
            streams.push((staged.stream.clone(), Vec::new()));
            streams.len() - 1
        });
        let mut event = staged.event;
        let meta: Value = serde_json::from_slice(&event.metadata).unwrap();
        event.metadata = encode(&meta, order).into_bytes();
        streams[i].1.push(event);
    }
    // Category by category, each category's streams concurrently (as the runner appends).
    let rank = |s: &StreamId| match s.category() {
        "opportunity" => 0,
        "account" => 1,
        "agent" => 2,
        "product" => 4,
        _ => 3,
    };
    streams.sort_by_key(|(s, _)| rank(s));
    assert_eq!(streams.last().unwrap().0.category(), "product");
    let mut written = 0;
    let mut streams = streams.into_iter().peekable();
    while let Some((first, _)) = streams.peek() {
        let category = rank(first);
        let mut tasks = tokio::task::JoinSet::new();
        while let Some((stream, events)) = streams.next_if(|(s, _)| rank(s) == category) {
            written += events.len() as u64;
            let store = store.clone();
            tasks.spawn(async move {
                store
                    .append(&stream, ExpectedVersion::NoStream, events)
                    .await
                    .unwrap();
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    }
    written
}

async fn reimport_appends_nothing(order: KeyOrder) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let written = write_earlier_import(&store, order).await;
    let head = store.head();

    let again = import(&store).await;
    assert_eq!(again.appended, 0, "a re-import must append nothing");
    assert_eq!(again.already_present, written);
    assert_eq!(store.head(), head);
    assert!(store.verify(Position::FIRST, None).await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn reimport_over_streams_written_in_another_order_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    // Another source's stream first, then the Maven import twice.
    write_other_stream(&store).await;
    let first = import(&store).await;
    assert!(first.appended > 0);
    let again = import(&store).await;
    assert_eq!(again.appended, 0, "a re-import must append nothing");
    assert_eq!(again.already_present, first.appended);
}

#[tokio::test(flavor = "multi_thread")]
async fn reimport_over_metadata_with_sorted_keys_appends_nothing() {
    // What a build without serde_json's `preserve_order` wrote (the log of the bug report).
    reimport_appends_nothing(KeyOrder::Sorted).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reimport_over_metadata_with_keys_in_another_order_appends_nothing() {
    reimport_appends_nothing(KeyOrder::Reversed).await;
}

#[test]
fn metadata_has_one_byte_form_whatever_the_serde_json_features() {
    let plan = maven::plan(&maven_dir()).unwrap();
    let events: Vec<ProposedEvent> = plan
        .units
        .into_iter()
        .flat_map(|u| u.unwrap().events)
        .map(|s| s.event)
        .collect();
    let metadata = |key: &str, file: &str| -> String {
        let e = events
            .iter()
            .find(|e| {
                let m: Value = serde_json::from_slice(&e.metadata).unwrap();
                m["source"]["key"] == key && m["source"]["file"] == file
            })
            .unwrap();
        String::from_utf8(e.metadata.clone()).unwrap()
    };
    assert_eq!(
        metadata("GTX Basic", "products.csv"),
        r#"{"source":{"importer":"maven-crm","file":"products.csv","line":2,"key":"GTX Basic"}}"#
    );
    // An account whose sector the import corrects: the cleansing note follows the source.
    let cleansed = events
        .iter()
        .find(|e| String::from_utf8_lossy(&e.metadata).contains("cleansing"))
        .unwrap();
    let text = String::from_utf8(cleansed.metadata.clone()).unwrap();
    assert!(
        text.starts_with(r#"{"source":{"importer":"maven-crm","file":"accounts.csv","line":"#),
        "{text}"
    );
    assert!(text.contains(r#","key":"#), "{text}");
    assert!(text.contains(r#"},"cleansing":[""#), "{text}");
}
