//! Events for the crate's unit tests, appended to an in-memory log one stream each. Test
//! code only (declared under `cfg(test)` in `lib.rs`): a failure here is a broken test
//! fixture, so it panics with what was expected.

#![cfg(test)]

use crm_domain::aggregates::case::{CaseOpened, CasePriority};
use crm_domain::aggregates::CaseEvent;
use crm_domain::values::{CaseId, Channel, Label};
use crm_domain::DomainEvent;
use crm_eventstore::{EventId, EventStore, ExpectedVersion, MemoryStore, ProposedEvent, StreamId};

/// Case `c{i}` opened, at the epoch.
pub(crate) fn case_opened(i: u64) -> DomainEvent {
    CaseEvent::from(CaseOpened {
        case_id: CaseId::new(format!("c{i}")).expect("a valid case id"),
        account_id: None,
        contact_id: None,
        case_type: Label::new("ticket").expect("a valid label"),
        category: None,
        priority: CasePriority::Normal,
        channel: Channel::Web,
        sla_policy: None,
        is_complaint: false,
        is_test: false,
        occurred_at: chrono::DateTime::UNIX_EPOCH,
    })
    .into()
}

/// Appends each of `events` as the first event of its stream; event ids count from 1.
pub(crate) async fn append_each(
    store: &MemoryStore,
    events: impl IntoIterator<Item = DomainEvent>,
) {
    for (i, event) in (1u128..).zip(events) {
        let e = event.encode().expect("a domain event encodes");
        let proposed = ProposedEvent {
            event_id: EventId(uuid::Uuid::from_u128(i)),
            event_type: e.event_type.to_owned(),
            schema_version: e.schema_version,
            occurred_at: e.occurred_at,
            causation_id: None,
            correlation_id: None,
            actor: "test".into(),
            metadata: Vec::new(),
            payload: e.payload,
        };
        let stream = StreamId::new(e.stream_id).expect("a valid stream id");
        store
            .append(&stream, ExpectedVersion::NoStream, vec![proposed])
            .await
            .expect("a new stream accepts its first event");
    }
}
