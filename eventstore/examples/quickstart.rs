//! Append to a stream, read it back, follow the log and verify the chain.
//! Run with `cargo run -p crm-eventstore --example quickstart [DIR]`.

use chrono::Utc;
use crm_eventstore::{
    EventId, EventStore, ExpectedVersion, Position, ProposedEvent, SledStore, StreamId,
    StreamVersion,
};
use uuid::Uuid;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/quickstart-log".into());
    let store = SledStore::open(&dir)?;
    let stream = StreamId::new(format!("case-{}", Uuid::now_v7().simple()))?;

    let opened = ProposedEvent {
        event_id: EventId(Uuid::now_v7()),
        event_type: "CaseOpened".into(),
        schema_version: 1,
        occurred_at: Utc::now(),
        causation_id: None,
        correlation_id: None,
        actor: "quickstart".into(),
        metadata: br#"{"source":"example"}"#.to_vec(),
        payload: br#"{"priority":"high","channel":"email"}"#.to_vec(),
    };
    // Acknowledged only once durable; a retry with the same event id writes nothing.
    let first = store
        .append(&stream, ExpectedVersion::NoStream, vec![opened.clone()])
        .await?;
    let retry = store
        .append(&stream, ExpectedVersion::NoStream, vec![opened])
        .await?;
    assert!(retry.already_present && retry.first_position == first.first_position);

    for event in store.read_stream(&stream, StreamVersion(1), 100).await? {
        println!(
            "{} v{} at position {}: {}",
            event.stream_id, event.stream_version, event.position, event.event_type
        );
    }

    // A catch-up subscription: history from the position, then live events.
    let mut subscription = store.subscribe(first.first_position);
    if let Some(event) = subscription.next().await {
        println!("subscription saw {}", event?.event_id);
    }

    let report = store.verify(Position::FIRST, None).await?;
    println!(
        "verified {} records, head {} hash {}",
        report.checked, report.last_good.position, report.last_good.hash
    );
    store.close().await;
    Ok(())
}
