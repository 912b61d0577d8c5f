//! One recorded event as one NATS message: its subject, its headers (CloudEvents 1.0 binary
//! mode plus the log's own coordinates) and its JSON body. `gateway/asyncapi.json` describes
//! the same contract for subscribers; a test checks that the two agree.
//!
//! **Subjects** are `<prefix>.<category>.<stream id>` (default prefix `crm.events`), where the
//! category is the part of the stream id before its first `-` (the aggregate kind). Both
//! tokens are escaped with the log's subject rule
//! ([`crm_eventstore::jetstream::subject::escape_token`]): ASCII letters, digits, `-` and `_`
//! stay as they are, every other byte (`.`, `*`, `>`, whitespace, `=`, non-ASCII) becomes
//! `=XX` with two upper-case hex digits. So `opportunity-42` is published on
//! `crm.events.opportunity.opportunity-42` and `metric-sales.win_rate` on
//! `crm.events.metric.metric-sales=2Ewin_rate`; the escaping is injective, so two streams never
//! share a subject.

use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::SecondsFormat;
use crm_eventstore::jetstream::subject::escape_token;
use crm_eventstore::RecordedEvent;

use crm_app::envelope::EventLine;

/// CloudEvents specification version.
pub const CE_SPECVERSION: &str = "ce-specversion";
/// CloudEvents id: the event id (a UUID), unique in the log.
pub const CE_ID: &str = "ce-id";
/// CloudEvents source: the log that recorded the event (`[publish] source`).
pub const CE_SOURCE: &str = "ce-source";
/// CloudEvents type: `crm.<EventType>.v<schema version>`.
pub const CE_TYPE: &str = "ce-type";
/// CloudEvents time: the event's business time (`occurred_at`), RFC 3339.
pub const CE_TIME: &str = "ce-time";
/// CloudEvents subject: the stream id (unescaped).
pub const CE_SUBJECT: &str = "ce-subject";
/// The media type of the body (CloudEvents `datacontenttype` in binary mode).
pub const CONTENT_TYPE: &str = "content-type";
/// The event's global position in the log (decimal); the key subscribers de-duplicate by.
pub const CRM_POSITION: &str = "crm-position";
/// The event's version in its stream (decimal, from 1).
pub const CRM_STREAM_VERSION: &str = "crm-stream-version";
/// The schema version of the event type's payload (decimal).
pub const CRM_SCHEMA_VERSION: &str = "crm-schema-version";
/// JetStream de-duplication id: the event id, so a resent message is stored once.
pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
/// JetStream fence: the stream's sequence before this message (position − 1), so the stream
/// stores positions only in order and each once.
pub const NATS_EXPECTED_LAST_SEQUENCE: &str = "Nats-Expected-Last-Sequence";

/// Every header the publisher sets, in the order it sets them.
pub const HEADER_NAMES: [&str; 12] = [
    CE_SPECVERSION,
    CE_ID,
    CE_SOURCE,
    CE_TYPE,
    CE_TIME,
    CE_SUBJECT,
    CONTENT_TYPE,
    CRM_POSITION,
    CRM_STREAM_VERSION,
    CRM_SCHEMA_VERSION,
    NATS_MSG_ID,
    NATS_EXPECTED_LAST_SEQUENCE,
];

/// The CloudEvents version of the headers.
pub const SPECVERSION: &str = "1.0";
/// The body's media type.
pub const BODY_CONTENT_TYPE: &str = "application/json";

/// The subject `event` is published on under `prefix`.
#[must_use]
pub fn subject(prefix: &str, event: &RecordedEvent) -> String {
    format!(
        "{prefix}.{}.{}",
        escape_token(event.stream_id.category()),
        escape_token(event.stream_id.as_str())
    )
}

/// The CloudEvents type of `event`: `crm.<EventType>.v<schema version>`.
#[must_use]
pub fn cloud_event_type(event: &RecordedEvent) -> String {
    format!("crm.{}.v{}", event.event_type, event.schema_version)
}

/// The headers of `event`'s message; `source` is the `ce-source` of this log.
#[must_use]
pub fn headers(source: &str, event: &RecordedEvent) -> HeaderMap {
    let id = event.event_id.0.to_string();
    let mut h = HeaderMap::new();
    h.insert(CE_SPECVERSION, SPECVERSION);
    h.insert(CE_ID, id.as_str());
    h.insert(CE_SOURCE, source);
    h.insert(CE_TYPE, cloud_event_type(event));
    h.insert(
        CE_TIME,
        event
            .occurred_at
            .to_rfc3339_opts(SecondsFormat::AutoSi, true),
    );
    h.insert(CE_SUBJECT, event.stream_id.as_str());
    h.insert(CONTENT_TYPE, BODY_CONTENT_TYPE);
    h.insert(CRM_POSITION, event.position.0.to_string());
    h.insert(CRM_STREAM_VERSION, event.stream_version.0.to_string());
    h.insert(CRM_SCHEMA_VERSION, event.schema_version.to_string());
    h.insert(NATS_MSG_ID, id);
    h.insert(
        NATS_EXPECTED_LAST_SEQUENCE,
        event.position.0.saturating_sub(1).to_string(),
    );
    h
}

/// The body of `event`'s message: its JSON envelope, exactly as `GET /v1/events` and
/// `crm events --json` give it (the domain payload under `payload`).
///
/// # Errors
/// The serializer's error (not expected: the envelope is plain data).
pub fn body(event: &RecordedEvent) -> Result<Bytes, serde_json::Error> {
    serde_json::to_vec(&EventLine::new(event)).map(Bytes::from)
}

/// The `crm-position` of a received message, if it carries a valid one.
#[must_use]
pub fn position_of(headers: Option<&HeaderMap>) -> Option<u64> {
    headers?.get(CRM_POSITION)?.as_str().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_eventstore::{ChainHash, EventId, Position, StreamId, StreamVersion};

    pub(crate) fn sample(stream: &str, position: u64) -> RecordedEvent {
        RecordedEvent {
            position: Position(position),
            stream_id: StreamId::new(stream).unwrap(),
            stream_version: StreamVersion(3),
            event_id: EventId(uuid::Uuid::from_u128(
                0x0190_0000_0000_7000_8000_0000_0000_0042,
            )),
            event_type: "OpportunityWon".into(),
            schema_version: 2,
            occurred_at: "2026-03-01T09:30:00Z".parse().unwrap(),
            recorded_at: "2026-03-01T09:30:01.250Z".parse().unwrap(),
            causation_id: None,
            correlation_id: None,
            actor: "agent-1".into(),
            metadata: Vec::new(),
            payload: br#"{"amount":{"minor_units":1000,"currency":"EUR"}}"#.to_vec(),
            checksum: 7,
            prev_hash: ChainHash::GENESIS,
            hash: ChainHash([1; 32]),
        }
    }

    #[test]
    fn subjects_escape_what_a_token_cannot_hold() {
        assert_eq!(
            subject("crm.events", &sample("opportunity-42", 1)),
            "crm.events.opportunity.opportunity-42"
        );
        assert_eq!(
            subject("crm.events", &sample("metric-sales.win_rate", 1)),
            "crm.events.metric.metric-sales=2Ewin_rate"
        );
        assert_eq!(
            subject("crm.events", &sample("a*b>c", 1)),
            "crm.events.a=2Ab=3Ec.a=2Ab=3Ec"
        );
    }

    #[test]
    fn headers_carry_the_event_coordinates() {
        let event = sample("opportunity-42", 17);
        let h = headers("crm://test/log", &event);
        let get = |name: &str| h.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(get(CE_SPECVERSION).as_deref(), Some("1.0"));
        assert_eq!(get(CE_ID), Some(event.event_id.0.to_string()));
        assert_eq!(get(NATS_MSG_ID), get(CE_ID));
        assert_eq!(get(CE_SOURCE).as_deref(), Some("crm://test/log"));
        assert_eq!(get(CE_TYPE).as_deref(), Some("crm.OpportunityWon.v2"));
        assert_eq!(get(CE_TIME).as_deref(), Some("2026-03-01T09:30:00Z"));
        assert_eq!(get(CE_SUBJECT).as_deref(), Some("opportunity-42"));
        assert_eq!(get(CRM_POSITION).as_deref(), Some("17"));
        assert_eq!(get(CRM_STREAM_VERSION).as_deref(), Some("3"));
        assert_eq!(get(CRM_SCHEMA_VERSION).as_deref(), Some("2"));
        assert_eq!(get(NATS_EXPECTED_LAST_SEQUENCE).as_deref(), Some("16"));
        assert_eq!(position_of(Some(&h)), Some(17));
        assert_eq!(h.iter().count(), HEADER_NAMES.len());
        let body: serde_json::Value = serde_json::from_slice(&body(&event).unwrap()).unwrap();
        assert_eq!(body["position"], 17);
        assert_eq!(body["payload"]["amount"]["currency"], "EUR");
    }
}
