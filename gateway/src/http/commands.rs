//! Running a command: load the aggregate's stream, fold it, let the aggregate `handle` the
//! command, append the events with `ExpectedVersion::Exact(version loaded)`.
//!
//! **Invariant:** a refused command (malformed, rule violated, stale `If-Match`, reused key)
//! appends nothing; every append expects the exact version the decision was made on.
//!
//! **Idempotency.** With an `Idempotency-Key`, event `i` of the command gets the id UUID v5 of
//! (key, i) and the metadata records the key and a hash of the request. A retry finds event 0
//! in the stream it loads and answers with the original result; two concurrent first tries
//! propose identical events and the store's idempotency lets only one land. A key reused for
//! another request (other body, other stream) is refused with 422.

use std::time::Instant;

use crm_domain::aggregates::{
    Account, Agent, Campaign, Case, Contact, Feedback, Interaction, Lead, Opportunity, Order,
    Product, Subscription,
};
use crm_domain::{Aggregate, DomainEvent};
use crm_eventstore::limits::READ_PAGE_MAX;
use crm_eventstore::{
    AnyStore, AppendError, EventId, EventStore, ExpectedVersion, ProposedEvent, RecordedEvent,
    StreamId, StreamVersion,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::aggregates::{categories, CommandOf};
use super::problem::ApiError;

/// UUID namespace of event ids derived from idempotency keys.
pub const API_NAMESPACE: Uuid = Uuid::from_u128(0x2b7e_4c1d_9a6f_4e3b_8d2c_5f1a_7e9b_3c4d);

/// Longest stream a command loads; a longer stream refuses commands (503).
pub const STREAM_LOAD_EVENTS_MAX: usize = 100_000;

/// Tries of load-decide-append when a concurrent writer moved the stream and the client sent
/// no `If-Match` (with `If-Match`, the first conflict is the client's 409).
pub const COMMAND_ATTEMPTS_MAX: usize = 3;

/// Longest `Idempotency-Key`, in bytes.
pub const IDEMPOTENCY_KEY_SIZE_MAX_BYTES: usize = 128;

/// One command as the HTTP layer received it.
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
    /// Who sends the command (`X-Actor`, default `api`).
    pub actor: String,
    /// `X-Correlation-Id`.
    pub correlation_id: Option<Uuid>,
}

/// An event a command appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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

/// Runs a command on the aggregate of `request.category`.
///
/// # Errors
/// [`ApiError`]: 400 malformed, 404 unknown category, 409 stale `If-Match`, 422 rule violated
/// or key reused, 503 storage.
pub async fn execute(store: &AnyStore, request: CommandRequest) -> Result<Outcome, ApiError> {
    match request.category.as_str() {
        "lead" => run::<Lead>(store, request).await,
        "account" => run::<Account>(store, request).await,
        "contact" => run::<Contact>(store, request).await,
        "opportunity" => run::<Opportunity>(store, request).await,
        "subscription" => run::<Subscription>(store, request).await,
        "order" => run::<Order>(store, request).await,
        "interaction" => run::<Interaction>(store, request).await,
        "case" => run::<Case>(store, request).await,
        "feedback" => run::<Feedback>(store, request).await,
        "campaign" => run::<Campaign>(store, request).await,
        "product" => run::<Product>(store, request).await,
        "agent" => run::<Agent>(store, request).await,
        other => Err(ApiError::NotFound(format!(
            "there is no aggregate `{other}`; the aggregates are: {}",
            categories()
        ))),
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

/// The command enum's JSON (`{"OpenAccount": {...}}`) from the body (`{"type": ...}`).
fn parse_command<C: CommandOf>(category: &str, body: &Map<String, Value>) -> Result<C, ApiError> {
    let mut fields = body.clone();
    let name = match fields.remove("type") {
        Some(Value::String(name)) => name,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "field `type` must be a string naming the command, e.g. \"OpenAccount\"".into(),
            ))
        }
        None => {
            return Err(ApiError::BadRequest(format!(
                "the body has no `type`; name the command of aggregate `{category}` (GET /v1/aggregates lists them)"
            )))
        }
    };
    let mut tagged = Map::new();
    tagged.insert(name.clone(), Value::Object(fields));
    serde_json::from_value(Value::Object(tagged)).map_err(|e| {
        ApiError::BadRequest(format!(
            "not a valid `{name}` command of aggregate `{category}`: {e}"
        ))
    })
}

fn check_key(key: &str) -> Result<(), ApiError> {
    let ok = !key.is_empty()
        && key.len() <= IDEMPOTENCY_KEY_SIZE_MAX_BYTES
        && key.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "Idempotency-Key must be 1..={IDEMPOTENCY_KEY_SIZE_MAX_BYTES} visible ASCII characters, e.g. a UUID"
        )))
    }
}

/// Reads a whole stream, oldest first, within [`STREAM_LOAD_EVENTS_MAX`].
///
/// # Errors
/// 503 when the stream cannot be read or is too long.
pub async fn load_stream(
    store: &AnyStore,
    stream: &StreamId,
) -> Result<Vec<RecordedEvent>, ApiError> {
    let mut events: Vec<RecordedEvent> = Vec::new();
    loop {
        let from = StreamVersion(events.len() as u64 + 1);
        let page = store.read_stream(stream, from, READ_PAGE_MAX).await?;
        let full = page.len() == READ_PAGE_MAX;
        events.extend(page);
        if events.len() > STREAM_LOAD_EVENTS_MAX {
            return Err(ApiError::Unavailable(format!(
                "stream `{stream}` has more than {STREAM_LOAD_EVENTS_MAX} events; commands on it are refused"
            )));
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
) -> Result<Option<CommandResult>, ApiError> {
    let first_id = EventId(idempotent_event_id(key, 0));
    let Some(start) = loaded.iter().position(|e| e.event_id == first_id) else {
        return Ok(None);
    };
    let metadata: Value = serde_json::from_slice(&loaded[start].metadata).unwrap_or(Value::Null);
    if metadata["request"]["request_hash"].as_str() != Some(request_hash) {
        return Err(ApiError::IdempotencyKeyReused(format!(
            "Idempotency-Key `{key}` was used for a different request to stream `{stream}`; send a new key for a new request"
        )));
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

/// The aggregate folded from its recorded events.
fn fold<A>(stream: &StreamId, loaded: &[RecordedEvent]) -> Result<A, ApiError>
where
    A: Aggregate,
    A::Event: TryFrom<DomainEvent>,
{
    let mut aggregate = A::default();
    for recorded in loaded {
        let event = DomainEvent::from_payload(
            &recorded.event_type,
            recorded.schema_version,
            &recorded.payload,
        )
        .map_err(|e| {
            ApiError::Internal(format!(
                "stream `{stream}` event {} cannot be decoded: {e}",
                recorded.stream_version
            ))
        })?;
        let event = A::Event::try_from(event).map_err(|_| {
            ApiError::Internal(format!(
                "stream `{stream}` holds event `{}` of another aggregate",
                recorded.event_type
            ))
        })?;
        aggregate.apply(&event);
    }
    Ok(aggregate)
}

struct Prepared {
    metadata: Vec<u8>,
    request_hash: Option<String>,
}

fn prepare(name: &str, request: &CommandRequest) -> Result<Prepared, ApiError> {
    let mut meta = serde_json::json!({ "request": { "command": name } });
    let mut request_hash = None;
    if let Some(key) = &request.idempotency_key {
        check_key(key)?;
        let body = serde_json::to_vec(&request.body)
            .map_err(|e| ApiError::Internal(format!("could not hash the request: {e}")))?;
        let mut hashed = request.category.as_bytes().to_vec();
        hashed.push(0x1f);
        hashed.extend_from_slice(&body);
        let hash = Uuid::new_v5(&API_NAMESPACE, &hashed).simple().to_string();
        meta["request"]["idempotency_key"] = Value::String(key.clone());
        meta["request"]["request_hash"] = Value::String(hash.clone());
        request_hash = Some(hash);
    }
    let metadata = serde_json::to_vec(&meta)
        .map_err(|e| ApiError::Internal(format!("could not encode metadata: {e}")))?;
    Ok(Prepared {
        metadata,
        request_hash,
    })
}

fn propose(
    events: Vec<DomainEvent>,
    request: &CommandRequest,
    metadata: &[u8],
) -> Result<Vec<ProposedEvent>, ApiError> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            let encoded = event
                .encode()
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            let id = match &request.idempotency_key {
                Some(key) => idempotent_event_id(key, i),
                None => Uuid::now_v7(),
            };
            Ok(ProposedEvent {
                event_id: EventId(id),
                event_type: encoded.event_type.to_owned(),
                schema_version: encoded.schema_version,
                occurred_at: encoded.occurred_at,
                causation_id: None,
                correlation_id: request.correlation_id,
                actor: request.actor.clone(),
                metadata: metadata.to_vec(),
                payload: encoded.payload,
            })
        })
        .collect()
}

async fn append_timed(
    store: &AnyStore,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<ProposedEvent>,
) -> Result<crm_eventstore::AppendResult, AppendError> {
    let count = events.len() as u64;
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

async fn run<A>(store: &AnyStore, request: CommandRequest) -> Result<Outcome, ApiError>
where
    A: Aggregate,
    A::Command: CommandOf,
    A::Event: Into<DomainEvent> + TryFrom<DomainEvent>,
{
    let command: A::Command = parse_command(&request.category, &request.body)?;
    let name = command.name();
    let stream = StreamId::new(crm_domain::stream_id(A::CATEGORY, command.target()))
        .map_err(|e| ApiError::BadRequest(format!("invalid aggregate id: {e}")))?;
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
                return Err(ApiError::VersionConflict {
                    detail: format!(
                        "stream `{stream}` is at version {version}, If-Match expected {expected}; reload the stream and retry with If-Match: {version}"
                    ),
                    current_version: version,
                });
            }
        }
        let aggregate: A = fold(&stream, &loaded)?;
        let decided = aggregate
            .handle(&command)
            .map_err(|e| ApiError::RuleViolated(e.to_string()))?;
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
        let events = propose(
            decided.into_iter().map(Into::into).collect(),
            &request,
            &prepared.metadata,
        )?;
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
    Err(ApiError::Busy(format!(
        "stream `{stream}` changed under {COMMAND_ATTEMPTS_MAX} tries of this command; retry"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_domain::aggregates::AccountCommand;

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn bodies_name_their_command_in_type() {
        let command: AccountCommand = parse_command(
            "account",
            &body(serde_json::json!({
                "type": "ChangeAccountSegment", "account_id": "acme", "to": "smb",
                "occurred_at": "2026-01-01T00:00:00Z",
            })),
        )
        .unwrap();
        assert_eq!(
            (command.name(), command.target()),
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
            let err = parse_command::<AccountCommand>("account", &body(bad)).unwrap_err();
            assert!(matches!(err, ApiError::BadRequest(_)), "{err}");
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
