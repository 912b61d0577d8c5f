//! The one way a decided domain event becomes an event the log can append: the encoded
//! event (type, schema version, business time, payload) plus where it came from (event id,
//! correlation and causation, actor, metadata). The command service, the importers and the
//! JSON-lines import all go through [`proposed_event`].

use crm_domain::EncodedEvent;
use crm_eventstore::{EventId, ProposedEvent};
use uuid::Uuid;

/// Where a proposed event comes from: who or what asked for it, and in which context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// Who appended it: an authenticated principal, `import:<importer>`, ...
    pub actor: String,
    /// The request or import run it belongs to.
    pub correlation_id: Option<Uuid>,
    /// The event or command that caused it.
    pub causation_id: Option<Uuid>,
    /// JSON metadata bytes (source row, request, cleansing notes).
    pub metadata: Vec<u8>,
}

/// The event the log appends for `encoded`, with id `event_id` and `provenance`.
#[must_use]
pub fn proposed_event(
    encoded: EncodedEvent,
    event_id: EventId,
    provenance: &Provenance,
) -> ProposedEvent {
    ProposedEvent {
        event_id,
        event_type: encoded.event_type.to_owned(),
        schema_version: encoded.schema_version,
        occurred_at: encoded.occurred_at,
        causation_id: provenance.causation_id,
        correlation_id: provenance.correlation_id,
        actor: provenance.actor.clone(),
        metadata: provenance.metadata.clone(),
        payload: encoded.payload,
    }
}
