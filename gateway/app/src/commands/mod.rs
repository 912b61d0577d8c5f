//! The command service: load the aggregate's stream, fold it, let the aggregate decide the
//! command, append the events with `ExpectedVersion::Exact(version loaded)`; retry when a
//! concurrent writer moved the stream; answer a retried `Idempotency-Key` with its original
//! result. Free of HTTP: the API maps [`CommandError`] to problem documents, the CLI and the
//! load generator call [`CommandService::execute`] directly. The aggregates come from a
//! [`Registry`], so every aggregate of the domain is served without being named here.
//!
//! **Invariant:** a refused command (malformed, rule violated, stale `If-Match`, reused key)
//! appends nothing; every append expects the exact version the decision was made on.
//!
//! **Idempotency.** With an `Idempotency-Key`, event `i` of the command gets the id UUID v5 of
//! (key, i) and the metadata records the key and a hash of the request. A retry finds event 0
//! in the stream it loads and answers with the original result; two concurrent first tries
//! propose identical events and the store's idempotency lets only one land. A key reused for
//! another request (other body, other stream) is refused with 422.

mod error;

use std::time::Instant;

use crm_domain::registry::{AggregateKind, ErasedCommand};
use crm_domain::Registry;
use crm_eventstore::limits::READ_PAGE_MAX;
use crm_eventstore::{
    AnyStore, AppendError, EventId, EventStore, ExpectedVersion, ProposedEvent, RecordedEvent,
    StreamId, StreamVersion,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::propose::{proposed_event, Provenance};

pub use error::CommandError;

/// UUID namespace of event ids derived from idempotency keys.
pub const API_NAMESPACE: Uuid = Uuid::from_u128(0x2b7e_4c1d_9a6f_4e3b_8d2c_5f1a_7e9b_3c4d);

/// Longest stream a command loads; a longer stream refuses commands (503).
pub const STREAM_LOAD_EVENTS_MAX: usize = 100_000;

/// Tries of load-decide-append when a concurrent writer moved the stream and the client sent
/// no `If-Match` (with `If-Match`, the first conflict is the client's 409).
pub const COMMAND_ATTEMPTS_MAX: usize = 3;

/// Longest `Idempotency-Key`, in bytes.
pub const IDEMPOTENCY_KEY_SIZE_MAX_BYTES: usize = 128;

/// One command as a client sent it.
#[derive(Debug, Clone)]
pub struct CommandRequest {
    /// Stream category from the path (`account`).
    pub category: String,
    /// The body: `{"type": "OpenAccount", ...fields}`.
    pub body: Map<String, Value>,
    /// `If-Match`: the stream version the client expects.
    pub if_match: Option<u64>,
    /// `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// Who sends the command, the authenticated principal: recorded as the events' actor.
    pub actor: String,
    /// Whom the principal says it acts for (`X-Actor`), recorded in the events' metadata
    /// (`request.on_behalf_of`) beside the actor, never instead of it.
    pub on_behalf_of: Option<String>,
    /// `X-Correlation-Id`.
    pub correlation_id: Option<Uuid>,
}

/// An event a command appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppendedEvent {
    /// The event id.
    pub event_id: Uuid,
    /// The event type, e.g. `AccountOpened`.
    pub event_type: String,
    /// Global position.
    pub position: u64,
    /// Version of the stream after this event.
    pub stream_version: u64,
}

/// What a command did: the stream's new version and the events with their positions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CommandResult {
    /// The command's name.
    pub command: String,
    /// The aggregate's stream, e.g. `account-acme`.
    pub stream_id: String,
    /// The stream's version after the command (send it as `If-Match` next time).
    pub stream_version: u64,
    /// Position of the first event appended (none if the command decided no events).
    pub first_position: Option<u64>,
    /// Position of the last event appended.
    pub last_position: Option<u64>,
    /// The events, in order.
    pub events: Vec<AppendedEvent>,
}

/// A command's result, and whether it is the stored result of an earlier try of the same key.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The result.
    pub result: CommandResult,
    /// True when an `Idempotency-Key` retry found the original events.
    pub replayed: bool,
}

/// Runs commands against the log, for every aggregate of its registry.
#[derive(Clone, Debug)]
pub struct CommandService {
    store: AnyStore,
    registry: Registry,
}

impl CommandService {
    /// A service over `store` for the aggregates of `registry`.
    #[must_use]
    pub fn new(store: AnyStore, registry: Registry) -> Self {
        CommandService { store, registry }
    }

    /// The log it appends to.
    #[must_use]
    pub fn store(&self) -> &AnyStore {
        &self.store
    }

    /// The aggregates it serves.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Runs a command on the aggregate of `request.category`.
    ///
    /// # Errors
    /// [`CommandError`]: unknown aggregate, malformed command, stale `If-Match`, rule
    /// violated, key reused, stream too long, storage.
    pub async fn execute(&self, request: CommandRequest) -> Result<Outcome, CommandError> {
        let Some(kind) = self.registry.get(&request.category) else {
            return Err(CommandError::UnknownAggregate {
                category: request.category.clone(),
                known: self.registry.categories().join(", "),
            });
        };
        run(&self.store, kind, request).await
    }
}

/// Event id `index` of the command sent with `key`.
#[must_use]
pub fn idempotent_event_id(key: &str, index: usize) -> Uuid {
    Uuid::new_v5(
        &API_NAMESPACE,
        format!("idempotency\u{1f}{key}\u{1f}{index}").as_bytes(),
    )
}

/// The command a body (`{"type": "OpenAccount", ...fields}`) names.
fn parse_command(
    kind: &dyn AggregateKind,
    body: &Map<String, Value>,
) -> Result<Box<dyn ErasedCommand>, CommandError> {
    let category = kind.category();
    let mut fields = body.clone();
    let name = match fields.remove("type") {
        Some(Value::String(name)) => name,
        Some(_) => return Err(CommandError::TypeNotText),
        None => {
            return Err(CommandError::MissingType {
                category,
                commands: kind.command_types().join(", "),
            })
        }
    };
    Ok(kind.parse_command(&name, fields)?)
}

fn check_key(key: &str) -> Result<(), CommandError> {
    let ok = !key.is_empty()
        && key.len() <= IDEMPOTENCY_KEY_SIZE_MAX_BYTES
        && key.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(CommandError::InvalidIdempotencyKey)
    }
}

/// Reads a whole stream, oldest first, within [`STREAM_LOAD_EVENTS_MAX`].
///
/// # Errors
/// [`CommandError::Read`] when the stream cannot be read, [`CommandError::StreamTooLong`].
pub async fn load_stream(
    store: &AnyStore,
    stream: &StreamId,
) -> Result<Vec<RecordedEvent>, CommandError> {
    let mut events: Vec<RecordedEvent> = Vec::new();
    loop {
        let loaded = u64::try_from(events.len()).unwrap_or(u64::MAX);
        let from = StreamVersion(loaded.saturating_add(1));
        let page = store.read_stream(stream, from, READ_PAGE_MAX).await?;
        let full = page.len() == READ_PAGE_MAX;
        events.extend(page);
        if events.len() > STREAM_LOAD_EVENTS_MAX {
            return Err(CommandError::StreamTooLong {
                stream: stream.to_string(),
            });
        }
        if !full {
            return Ok(events);
        }
    }
}

/// The original result of `key` in `loaded`, if its first event is there.
fn find_original(
    command: &str,
    stream: &StreamId,
    key: &str,
    request_hash: &str,
    loaded: &[RecordedEvent],
) -> Result<Option<CommandResult>, CommandError> {
    let first_id = EventId(idempotent_event_id(key, 0));
    let Some(start) = loaded.iter().position(|e| e.event_id == first_id) else {
        return Ok(None);
    };
    let metadata: Value = serde_json::from_slice(&loaded[start].metadata).unwrap_or(Value::Null);
    if metadata["request"]["request_hash"].as_str() != Some(request_hash) {
        return Err(CommandError::IdempotencyKeyReused {
            key: key.to_owned(),
            stream: stream.to_string(),
        });
    }
    let events: Vec<&RecordedEvent> = loaded[start..]
        .iter()
        .enumerate()
        .take_while(|(i, e)| e.event_id == EventId(idempotent_event_id(key, *i)))
        .map(|(_, e)| e)
        .collect();
    Ok(Some(result_of(command, stream, &events)))
}

fn result_of(command: &str, stream: &StreamId, events: &[&RecordedEvent]) -> CommandResult {
    CommandResult {
        command: command.to_owned(),
        stream_id: stream.to_string(),
        stream_version: events.last().map_or(0, |e| e.stream_version.0),
        first_position: events.first().map(|e| e.position.0),
        last_position: events.last().map(|e| e.position.0),
        events: events
            .iter()
            .map(|e| AppendedEvent {
                event_id: e.event_id.0,
                event_type: e.event_type.clone(),
                position: e.position.0,
                stream_version: e.stream_version.0,
            })
            .collect(),
    }
}

/// The aggregate of `kind` folded from its recorded events.
fn fold(
    kind: &dyn AggregateKind,
    stream: &StreamId,
    loaded: &[RecordedEvent],
) -> Result<Box<dyn crm_domain::registry::ErasedState>, CommandError> {
    let mut state = kind.new_state();
    for recorded in loaded {
        state
            .fold(
                &recorded.event_type,
                recorded.schema_version,
                &recorded.payload,
            )
            .map_err(|source| CommandError::Undecodable {
                stream: stream.to_string(),
                version: recorded.stream_version.0,
                source,
            })?;
    }
    Ok(state)
}

struct Prepared {
    metadata: Vec<u8>,
    request_hash: Option<String>,
}

fn prepare(name: &str, request: &CommandRequest) -> Result<Prepared, CommandError> {
    let mut meta = serde_json::json!({ "request": { "command": name } });
    if let Some(on_behalf_of) = &request.on_behalf_of {
        meta["request"]["on_behalf_of"] = Value::String(on_behalf_of.clone());
    }
    let mut request_hash = None;
    if let Some(key) = &request.idempotency_key {
        check_key(key)?;
        let body = serde_json::to_vec(&request.body).map_err(CommandError::Metadata)?;
        let mut hashed = request.category.as_bytes().to_vec();
        hashed.push(0x1f);
        hashed.extend_from_slice(&body);
        let hash = Uuid::new_v5(&API_NAMESPACE, &hashed).simple().to_string();
        meta["request"]["idempotency_key"] = Value::String(key.clone());
        meta["request"]["request_hash"] = Value::String(hash.clone());
        request_hash = Some(hash);
    }
    let metadata = serde_json::to_vec(&meta).map_err(CommandError::Metadata)?;
    Ok(Prepared {
        metadata,
        request_hash,
    })
}

fn propose(
    events: Vec<crm_domain::EncodedEvent>,
    request: &CommandRequest,
    metadata: Vec<u8>,
) -> Vec<ProposedEvent> {
    let provenance = Provenance {
        actor: request.actor.clone(),
        correlation_id: request.correlation_id,
        causation_id: None,
        metadata,
    };
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            let id = match &request.idempotency_key {
                Some(key) => idempotent_event_id(key, i),
                None => Uuid::now_v7(),
            };
            proposed_event(event, EventId(id), &provenance)
        })
        .collect()
}

async fn append_timed(
    store: &AnyStore,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<ProposedEvent>,
) -> Result<crm_eventstore::AppendResult, AppendError> {
    let count = u64::try_from(events.len()).unwrap_or(u64::MAX);
    let started = Instant::now();
    let result = store.append(stream, expected, events).await;
    let outcome = if result.is_ok() { "ok" } else { "refused" };
    metrics::histogram!("crm_append_duration_seconds", "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("crm_appends_total", "outcome" => outcome).increment(1);
    if matches!(&result, Ok(r) if !r.already_present) {
        metrics::counter!("crm_appended_events_total").increment(count);
    }
    result
}

async fn run(
    store: &AnyStore,
    kind: &dyn AggregateKind,
    request: CommandRequest,
) -> Result<Outcome, CommandError> {
    let command = parse_command(kind, &request.body)?;
    let name = command.command_type();
    let stream = StreamId::new(crm_domain::stream_id(kind.category(), command.target()))
        .map_err(|e| CommandError::InvalidAggregateId(e.to_string()))?;
    let prepared = prepare(name, &request)?;
    for attempt in 1..=COMMAND_ATTEMPTS_MAX {
        let loaded = load_stream(store, &stream).await?;
        if let (Some(key), Some(hash)) = (&request.idempotency_key, &prepared.request_hash) {
            if let Some(result) = find_original(name, &stream, key, hash, &loaded)? {
                return Ok(Outcome {
                    result,
                    replayed: true,
                });
            }
        }
        let version = loaded.last().map_or(0, |e| e.stream_version.0);
        if let Some(expected) = request.if_match {
            if expected != version {
                return Err(CommandError::VersionConflict {
                    stream: stream.to_string(),
                    current: version,
                    expected,
                });
            }
        }
        let state = fold(kind, &stream, &loaded)?;
        let decided = state.decide(command.as_ref())?;
        if decided.is_empty() {
            return Ok(Outcome {
                result: CommandResult {
                    command: name.to_owned(),
                    stream_id: stream.to_string(),
                    stream_version: version,
                    first_position: None,
                    last_position: None,
                    events: Vec::new(),
                },
                replayed: false,
            });
        }
        let events = propose(decided, &request, prepared.metadata.clone());
        let summary: Vec<(Uuid, String)> = events
            .iter()
            .map(|e| (e.event_id.0, e.event_type.clone()))
            .collect();
        let expected = ExpectedVersion::Exact(StreamVersion(version));
        match append_timed(store, &stream, expected, events).await {
            Ok(appended) => {
                let first = appended.first_position.0;
                let result = CommandResult {
                    command: name.to_owned(),
                    stream_id: stream.to_string(),
                    stream_version: appended.stream_version.0,
                    first_position: Some(first),
                    last_position: Some(appended.last_position.0),
                    events: summary
                        .into_iter()
                        .zip(0u64..)
                        .map(|((event_id, event_type), i)| AppendedEvent {
                            event_id,
                            event_type,
                            position: first + i,
                            stream_version: version + 1 + i,
                        })
                        .collect(),
                };
                return Ok(Outcome {
                    result,
                    replayed: appended.already_present,
                });
            }
            // Someone appended between load and append: decide again on the new state.
            Err(AppendError::WrongExpectedVersion { .. })
                if request.if_match.is_none() && attempt < COMMAND_ATTEMPTS_MAX => {}
            // A concurrent try of the same key may have landed: the next load finds it.
            Err(AppendError::IdempotencyConflict { .. })
                if request.idempotency_key.is_some() && attempt < COMMAND_ATTEMPTS_MAX => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(CommandError::Contended {
        stream: stream.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn bodies_name_their_command_in_type() {
        let registry = Registry::builtin();
        let account = registry.get("account").unwrap();
        let command = parse_command(
            account,
            &body(serde_json::json!({
                "type": "ChangeAccountSegment", "account_id": "acme", "to": "smb",
                "occurred_at": "2026-01-01T00:00:00Z",
            })),
        )
        .unwrap();
        assert_eq!(
            (command.command_type(), command.target()),
            ("ChangeAccountSegment", "acme")
        );
        for (bad, hint) in [
            (serde_json::json!({"account_id": "acme"}), "no `type`"),
            (serde_json::json!({"type": 7}), "must be a string"),
            (serde_json::json!({"type": "Nope"}), "not a valid `Nope`"),
            (
                serde_json::json!({"type": "ChangeAccountSegment", "account_id": "acme"}),
                "missing field",
            ),
        ] {
            let err = parse_command(account, &body(bad)).unwrap_err();
            assert!(err.is_malformed(), "{err}");
            assert!(err.to_string().contains(hint), "{err}");
        }
    }

    #[test]
    fn idempotency_keys_give_stable_distinct_ids_and_are_checked() {
        assert_eq!(idempotent_event_id("k", 0), idempotent_event_id("k", 0));
        assert_ne!(idempotent_event_id("k", 0), idempotent_event_id("k", 1));
        assert_ne!(idempotent_event_id("k", 0), idempotent_event_id("l", 0));
        assert!(check_key("5f0c1a2e-retry-1").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("has space").is_err());
        assert!(check_key(&"k".repeat(IDEMPOTENCY_KEY_SIZE_MAX_BYTES + 1)).is_err());
    }
}
