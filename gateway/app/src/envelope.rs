//! The JSON form of a recorded event: one object per line, as `crm events --json` prints it and
//! `crm import jsonl` reads it back.
//!
//! `payload` and `metadata` are embedded as JSON, byte for byte, when they are single-line
//! JSON (domain payloads always are); other bytes travel as lower-case hex in `payload_hex` /
//! `metadata_hex`. Empty metadata is omitted. So an export imported into a fresh store yields
//! events with identical ids, payload and metadata bytes.

use chrono::{DateTime, Utc};
use crm_eventstore::RecordedEvent;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// One exported event (also the event form of the HTTP API).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventLine<'a> {
    pub position: u64,
    pub stream_id: &'a str,
    pub stream_version: u64,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub schema_version: u16,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub causation_id: Option<Uuid>,
    pub correlation_id: Option<Uuid>,
    pub actor: &'a str,
    /// Metadata as JSON (e.g. the source row of an import), when it is single-line JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata_hex: Option<String>,
    /// The domain event's JSON payload, when it is single-line JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_hex: Option<String>,
    pub checksum: u32,
    pub prev_hash: String,
    pub hash: String,
}

/// Bytes as embedded JSON when they are single-line JSON, else as hex (empty → neither).
fn body(bytes: &[u8]) -> (Option<&RawValue>, Option<String>) {
    if bytes.is_empty() {
        return (None, None);
    }
    match serde_json::from_slice::<&RawValue>(bytes) {
        Ok(raw) if !bytes.contains(&b'\n') && raw.get().len() == bytes.len() => (Some(raw), None),
        _ => (None, Some(hex(bytes))),
    }
}

/// Lower-case hex of `bytes`.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Text that is not hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HexError {
    /// A character other than `0-9a-fA-F`.
    #[error("{0:?} is not a hex digit")]
    NotADigit(char),
    /// An odd number of digits.
    #[error("hex text has an odd number of digits")]
    OddLength,
}

/// Bytes of a lower-case or upper-case hex string.
///
/// # Errors
/// [`HexError`] when the text is not an even number of hex digits.
pub fn unhex(text: &str) -> Result<Vec<u8>, HexError> {
    fn digit(c: u8) -> Result<u8, HexError> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(HexError::NotADigit(char::from(c))),
        }
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err(HexError::OddLength);
    }
    bytes
        .chunks(2)
        .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

impl<'a> EventLine<'a> {
    /// The JSON form of `event`.
    #[must_use]
    pub fn new(event: &'a RecordedEvent) -> Self {
        let (metadata, metadata_hex) = body(&event.metadata);
        let (payload, payload_hex) = body(&event.payload);
        Self {
            position: event.position.0,
            stream_id: event.stream_id.as_str(),
            stream_version: event.stream_version.0,
            event_id: event.event_id.0,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            occurred_at: event.occurred_at,
            recorded_at: event.recorded_at,
            causation_id: event.causation_id,
            correlation_id: event.correlation_id,
            actor: &event.actor,
            metadata,
            metadata_hex,
            payload,
            payload_hex,
            checksum: event.checksum,
            prev_hash: event.prev_hash.to_hex(),
            hash: event.hash.to_hex(),
        }
    }
}

/// One event read back from a JSON line; store-assigned fields (position, recorded_at,
/// checksum, hashes) are ignored.
#[derive(Debug, Deserialize)]
pub struct EventLineIn {
    pub stream_id: String,
    /// If present, the stream must be at `stream_version - 1` before the event.
    pub stream_version: Option<u64>,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u16,
    pub occurred_at: DateTime<Utc>,
    pub causation_id: Option<Uuid>,
    pub correlation_id: Option<Uuid>,
    pub actor: Option<String>,
    pub metadata: Option<Box<RawValue>>,
    pub metadata_hex: Option<String>,
    pub payload: Option<Box<RawValue>>,
    pub payload_hex: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let bytes = [0u8, 1, 0xab, 0xff, 0x10];
        assert_eq!(hex(&bytes), "0001abff10");
        assert_eq!(unhex("0001ABff10").unwrap(), bytes);
        assert!(unhex("abc").is_err());
        assert!(unhex("zz").is_err());
    }

    #[test]
    fn json_bodies_are_embedded_other_bytes_are_hex() {
        assert_eq!(body(br#"{"a":1}"#).0.map(RawValue::get), Some(r#"{"a":1}"#));
        assert_eq!(body(b"\x00\x01").1.as_deref(), Some("0001"));
        assert_eq!(body(b"{\n}").1.as_deref(), Some("7b0a7d"));
        let (json, hex) = body(b"");
        assert!(json.is_none() && hex.is_none());
    }
}

/// Which events of a log read to keep: all when every field is `None`. Used by
/// `GET /v1/events` and `crm events`, e.g. to trace every event one request or one import
/// run wrote (its correlation id) or that one event caused (its causation id).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Stream category, e.g. `opportunity`.
    pub category: Option<String>,
    /// Event type, e.g. `OpportunityWon`.
    pub event_type: Option<String>,
    /// Correlation id.
    pub correlation_id: Option<Uuid>,
    /// Causation id.
    pub causation_id: Option<Uuid>,
}

impl EventFilter {
    /// Whether the filter keeps every event.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == EventFilter::default()
    }

    /// Whether `event` passes every condition set.
    #[must_use]
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        self.category
            .as_deref()
            .is_none_or(|c| event.stream_id.category() == c)
            && self
                .event_type
                .as_deref()
                .is_none_or(|t| event.event_type == t)
            && self
                .correlation_id
                .is_none_or(|id| event.correlation_id == Some(id))
            && self
                .causation_id
                .is_none_or(|id| event.causation_id == Some(id))
    }
}
