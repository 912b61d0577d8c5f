//! Bridge between [`DomainEvent`] and the event store's envelope.
//!
//! The envelope carries the type name and schema version; the payload is the JSON of the
//! event struct alone (no type tag). Decoding upcasts old versions first
//! ([`crate::upcast`]), then deserializes strictly (unknown fields are refused).

use chrono::{DateTime, Utc};

use crate::event::DomainEvent;
use crate::upcast::{UpcastError, UpcasterRegistry};

/// Largest payload accepted for decoding, in bytes.
pub const PAYLOAD_MAX_BYTES: usize = 1024 * 1024;

/// Why an event could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Serialization failed (should not happen for domain types).
    #[error("could not encode `{event_type}` as JSON: {source}")]
    Encode {
        /// The type name.
        event_type: &'static str,
        /// The serializer's error.
        source: serde_json::Error,
    },
    /// The payload is larger than [`PAYLOAD_MAX_BYTES`].
    #[error("payload of `{event_type}` is {size_bytes} bytes, above the limit of {PAYLOAD_MAX_BYTES}; the record is corrupt or not a domain event")]
    TooLarge {
        /// The type name.
        event_type: String,
        /// Size of the payload.
        size_bytes: usize,
    },
    /// The bytes are not JSON.
    #[error("payload of `{event_type}` v{schema_version} is not valid JSON: {source}")]
    InvalidJson {
        /// The type name.
        event_type: String,
        /// Version from the envelope.
        schema_version: u16,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// Upcasting failed (unknown type, future version, bad old payload…).
    #[error(transparent)]
    Upcast(#[from] UpcastError),
    /// The (upcast) JSON does not match the current event struct.
    #[error("payload of `{event_type}` (stored as v{schema_version}) does not match the current schema: {source}; the version in the envelope may be wrong or an upcaster is missing")]
    InvalidPayload {
        /// The type name.
        event_type: String,
        /// Version from the envelope.
        schema_version: u16,
        /// The deserializer's error.
        source: serde_json::Error,
    },
}

/// An event ready for the envelope: everything the store needs besides its own fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    /// Stream, e.g. `"opportunity-42"`.
    pub stream_id: String,
    /// Type name, e.g. `"OpportunityWon"`.
    pub event_type: &'static str,
    /// Current schema version of the type.
    pub schema_version: u16,
    /// Business time.
    pub occurred_at: DateTime<Utc>,
    /// JSON payload bytes.
    pub payload: Vec<u8>,
    /// Whether the payload holds a `personal` field to encrypt.
    pub carries_personal_data: bool,
}

impl DomainEvent {
    /// JSON bytes of the payload only; type and version travel in the envelope.
    ///
    /// # Errors
    /// [`CodecError::Encode`] if serialization fails.
    pub fn to_payload(&self) -> Result<Vec<u8>, CodecError> {
        self.encode_json().map_err(|source| CodecError::Encode {
            event_type: self.event_type(),
            source,
        })
    }

    /// Payload plus envelope metadata.
    ///
    /// # Errors
    /// As [`DomainEvent::to_payload`].
    pub fn encode(&self) -> Result<EncodedEvent, CodecError> {
        Ok(EncodedEvent {
            stream_id: self.stream_id(),
            event_type: self.event_type(),
            schema_version: self.schema_version(),
            occurred_at: self.occurred_at(),
            payload: self.to_payload()?,
            carries_personal_data: self.carries_personal_data(),
        })
    }

    /// Decodes a stored payload, upcasting it with the standard registry first.
    ///
    /// # Errors
    /// See [`CodecError`].
    pub fn from_payload(
        event_type: &str,
        schema_version: u16,
        payload: &[u8],
    ) -> Result<DomainEvent, CodecError> {
        Self::from_payload_with(
            UpcasterRegistry::standard(),
            event_type,
            schema_version,
            payload,
        )
    }

    /// As [`DomainEvent::from_payload`] with an explicit registry.
    ///
    /// # Errors
    /// See [`CodecError`].
    pub fn from_payload_with(
        registry: &UpcasterRegistry,
        event_type: &str,
        schema_version: u16,
        payload: &[u8],
    ) -> Result<DomainEvent, CodecError> {
        let Some(current) = DomainEvent::current_schema_version(event_type) else {
            return Err(UpcastError::UnknownEventType {
                event_type: event_type.to_owned(),
            }
            .into());
        };
        if payload.len() > PAYLOAD_MAX_BYTES {
            return Err(CodecError::TooLarge {
                event_type: event_type.to_owned(),
                size_bytes: payload.len(),
            });
        }
        if schema_version == current {
            // Nothing to upcast: decode the typed event straight from the bytes.
            return match DomainEvent::decode_json_slice(event_type, payload) {
                Some(Ok(event)) => Ok(event),
                Some(Err(source)) if source.is_syntax() || source.is_eof() => {
                    Err(CodecError::InvalidJson {
                        event_type: event_type.to_owned(),
                        schema_version,
                        source,
                    })
                }
                Some(Err(source)) => Err(CodecError::InvalidPayload {
                    event_type: event_type.to_owned(),
                    schema_version,
                    source,
                }),
                None => Err(UpcastError::UnknownEventType {
                    event_type: event_type.to_owned(),
                }
                .into()),
            };
        }
        let value: serde_json::Value =
            serde_json::from_slice(payload).map_err(|source| CodecError::InvalidJson {
                event_type: event_type.to_owned(),
                schema_version,
                source,
            })?;
        let value = registry.upcast(event_type, schema_version, value)?;
        match DomainEvent::decode_json(event_type, value) {
            Some(Ok(event)) => Ok(event),
            Some(Err(source)) => Err(CodecError::InvalidPayload {
                event_type: event_type.to_owned(),
                schema_version,
                source,
            }),
            None => Err(UpcastError::UnknownEventType {
                event_type: event_type.to_owned(),
            }
            .into()),
        }
    }
}

/// Deserializes a payload's JSON. `serde_json` reading bytes checks the UTF-8 of each string
/// as it reads it; one check of the whole payload first (with SIMD instructions) is
/// cheaper, and its text reader then checks nothing again. Bytes that are not UTF-8 are read
/// as bytes, so the error is the one `serde_json` gives for them.
pub(crate) fn json_slice<T: serde::de::DeserializeOwned>(
    payload: &[u8],
) -> Result<T, serde_json::Error> {
    match simdutf8::basic::from_utf8(payload) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Probe {
        name: String,
        n: i64,
    }

    /// Text and bytes give the same value, and bytes that are not UTF-8 the error serde_json
    /// gives for them, at the same place.
    #[test]
    fn a_payload_reads_as_text_or_bytes_alike() {
        let escaped = br#"{"name":"caf\u00e9 \"x\" \u00fc","n":-7}"#;
        let raw = "{\"name\":\"Müller – 東京 🙂\",\"n\":0}".as_bytes();
        for ok in [&escaped[..], raw] {
            let read = json_slice::<Probe>(ok).unwrap();
            assert_eq!(read, serde_json::from_slice::<Probe>(ok).unwrap());
            assert!(!read.name.is_ascii());
        }
        let bad = b"{\"name\":\"a\xff\",\"n\":1}";
        let ours = json_slice::<Probe>(bad).unwrap_err();
        let theirs = serde_json::from_slice::<Probe>(bad).unwrap_err();
        assert_eq!(ours.to_string(), theirs.to_string());
        assert_eq!(
            (ours.line(), ours.column()),
            (theirs.line(), theirs.column())
        );
        let unknown = br#"{"name":"a","n":1,"extra":true}"#;
        assert_eq!(
            json_slice::<Probe>(unknown).unwrap_err().to_string(),
            serde_json::from_slice::<Probe>(unknown)
                .unwrap_err()
                .to_string()
        );
    }
}
