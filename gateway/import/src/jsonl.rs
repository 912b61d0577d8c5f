//! `crm import jsonl FILE`: events in the JSON-lines form `crm events --json` prints
//! ([`crm_app::envelope`]). Ids, business time, actor, causation, correlation, metadata and
//! payload bytes are kept, so an export imported into a fresh store is the same history (and a
//! second import appends nothing).
//!
//! Every event type must be one the domain knows and its payload must decode under that
//! type's schema (upcasting old versions); a line with `stream_version` must land at exactly
//! that version of its stream.

use crm_domain::attributes::ATTRIBUTES_SET;
use std::path::Path;

use crm_app::envelope::{unhex, EventLineIn};
use crm_app::propose::{proposed_event, Provenance};
use crm_domain::{DomainEvent, EncodedEvent};
use crm_eventstore::{EventId, StreamId};

use super::source::file_name;
use super::{ColumnRef, Expect, ImportError, Plan, RowError, Staged, Unit};

/// Importer name.
pub const NAME: &str = "jsonl";

/// Most lines one file may hold.
pub const JSONL_LINES_MAX: usize = 10_000_000;

/// Reads `path` and plans the import: one unit per line.
///
/// # Errors
/// [`ImportError::Io`] if the file cannot be read.
pub fn plan(path: &Path) -> Result<Plan, ImportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let file = file_name(path);
    let mut plan = Plan {
        importer: NAME,
        files: vec![file.clone()],
        ..Plan::default()
    };
    for (index, line) in text.lines().enumerate() {
        if index >= JSONL_LINES_MAX {
            return Err(ImportError::TooLarge {
                file,
                limit: JSONL_LINES_MAX,
            });
        }
        if line.trim().is_empty() {
            continue;
        }
        let number = u64::try_from(index).unwrap_or(u64::MAX).saturating_add(1);
        plan.units
            .push(event(line).map_err(|(field, reason)| RowError {
                file: file.clone(),
                line: number,
                column: field.map(|name| ColumnRef { index: 0, name }),
                reason,
            }));
    }
    Ok(plan)
}

type LineError = (Option<String>, String);

fn field(name: &str, reason: impl Into<String>) -> LineError {
    (Some(name.to_owned()), reason.into())
}

fn bytes(
    name: &str,
    json: Option<Box<serde_json::value::RawValue>>,
    hex: Option<String>,
) -> Result<Vec<u8>, LineError> {
    match (json, hex) {
        (Some(raw), None) => Ok(raw.get().as_bytes().to_vec()),
        (None, Some(hex)) => unhex(&hex).map_err(|e| field(&format!("{name}_hex"), e.to_string())),
        (None, None) => Ok(Vec::new()),
        (Some(_), Some(_)) => Err(field(
            name,
            format!("give either `{name}` or `{name}_hex`, not both"),
        )),
    }
}

fn event(line: &str) -> Result<Unit, LineError> {
    let parsed: EventLineIn = serde_json::from_str(line).map_err(|e| {
        (
            None,
            format!("not an event in the `crm events --json` form: {e}"),
        )
    })?;
    let stream = StreamId::new(parsed.stream_id).map_err(|e| field("stream_id", e.to_string()))?;
    let payload = bytes("payload", parsed.payload, parsed.payload_hex)?;
    let metadata = bytes("metadata", parsed.metadata, parsed.metadata_hex)?;
    let (event_type, carries_personal_data) = if parsed.event_type == ATTRIBUTES_SET {
        // Custom attributes belong to any aggregate's stream.
        crm_domain::attributes::decode(parsed.schema_version, &payload)
            .map_err(|e| field("payload", e.to_string()))?;
        let category = stream.as_str().split('-').next().unwrap_or_default();
        if crm_domain::Registry::builtin().get(category).is_none() {
            return Err(field(
                "stream_id",
                format!("`{ATTRIBUTES_SET}` belongs to an aggregate's stream, and `{category}` is no aggregate"),
            ));
        }
        (ATTRIBUTES_SET, false)
    } else {
        let decoded =
            DomainEvent::from_payload(&parsed.event_type, parsed.schema_version, &payload)
                .map_err(|e| field("payload", e.to_string()))?;
        if decoded.stream_id() != stream.as_str() {
            return Err(field(
                "stream_id",
                format!(
                    "a `{}` event of `{}` belongs to stream `{}`, not `{stream}`",
                    parsed.event_type,
                    decoded.aggregate_id(),
                    decoded.stream_id()
                ),
            ));
        }
        (decoded.event_type(), decoded.carries_personal_data())
    };
    let expect = match parsed.stream_version {
        Some(0) => return Err(field("stream_version", "stream versions start at 1")),
        Some(v) => Expect::Exact(v - 1),
        None => Expect::Any,
    };
    Ok(Unit {
        rows: 1,
        events: vec![Staged {
            stream: stream.clone(),
            // The stored event as it was: its own type, schema version and payload bytes.
            event: proposed_event(
                EncodedEvent {
                    stream_id: stream.to_string(),
                    event_type,
                    schema_version: parsed.schema_version,
                    occurred_at: parsed.occurred_at,
                    payload,
                    carries_personal_data,
                },
                EventId(parsed.event_id),
                &Provenance {
                    actor: parsed.actor.unwrap_or_else(|| format!("import:{NAME}")),
                    correlation_id: parsed.correlation_id,
                    causation_id: parsed.causation_id,
                    metadata,
                },
            ),
            expect,
        }],
    })
}
