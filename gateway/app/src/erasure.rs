//! Erasing a data subject's personal data: one operation behind `crm erase` and
//! `POST /v1/subjects/{subject}/erasure`. It sends the subject's erase command (the domain's
//! list, [`crm_domain::personal::SUBJECTS`]) through the command service, so the erasure is
//! an event of the log saying who erased whom, when and why; once that event is durable the
//! log's sealer destroys the subject's key (see [`crate::personal`]). Erasing an erased
//! subject records nothing new and makes sure the key is gone.

use chrono::{DateTime, Utc};
use crm_domain::personal::{is_erasure, subject_kind, SUBJECTS};
use crm_eventstore::{EventStore, ReadError, StreamId, StreamVersion};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::commands::{CommandError, CommandRequest, CommandService};
use crate::keys::KeyError;
use crate::personal::PersonalSealer;

/// Events of a subject's stream read per page when looking for an earlier erasure.
const STREAM_PAGE_EVENTS: usize = 1000;

/// Why an erasure was not done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EraseError {
    /// The id is not a stream id.
    #[error(
        "`{0}` is not a subject: give a stream id such as `contact-c1`, `lead-l7` or `agent-a3`"
    )]
    NotAStream(String),
    /// The stream's category holds no personal data.
    #[error("streams of `{category}` hold no personal data; the subjects are streams of {known}")]
    NotASubject {
        /// The category given.
        category: String,
        /// The subject categories.
        known: String,
    },
    /// No such subject in the log.
    #[error("there is no stream `{0}` in the log; check the id (`crm events --stream ID` lists a stream)")]
    NotFound(String),
    /// The log could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The erase command failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The key could not be destroyed.
    #[error("the erasure of `{subject}` is recorded, but its key could not be destroyed: {source}; run the erasure again")]
    Key {
        /// The subject.
        subject: String,
        /// Why.
        source: KeyError,
    },
}

/// What an erasure did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Erasure {
    /// The subject (its stream id).
    pub subject: String,
    /// The erasure event's type.
    pub event_type: String,
    /// The erasure event's position in the log.
    pub position: u64,
    /// Who asked for it (the erasure event's actor).
    pub actor: String,
    /// When the erasure was recorded.
    pub recorded_at: DateTime<Utc>,
    /// `true` when the subject had been erased before: nothing new was recorded.
    pub already_erased: bool,
}

/// Erases `subject` as `actor`, with `reason`, at `now`.
///
/// # Errors
/// [`EraseError`]; a refused erasure appends nothing.
pub async fn erase(
    service: &CommandService,
    subject: &str,
    reason: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Erasure, EraseError> {
    let stream = StreamId::new(subject.to_owned())
        .map_err(|_| EraseError::NotAStream(subject.to_owned()))?;
    let category = stream.category().to_owned();
    let kind = subject_kind(&category).ok_or_else(|| EraseError::NotASubject {
        category: category.clone(),
        known: SUBJECTS
            .iter()
            .map(|k| format!("`{}`", k.category))
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    let store = service.store();
    if store.stream_version(&stream).await?.0 == 0 {
        return Err(EraseError::NotFound(subject.to_owned()));
    }
    if let Some(earlier) = earlier_erasure(store, &stream).await? {
        if let Some(sealer) = PersonalSealer::of(store) {
            sealer.erase(subject).map_err(|source| EraseError::Key {
                subject: subject.to_owned(),
                source,
            })?;
        }
        return Ok(Erasure {
            already_erased: true,
            ..earlier
        });
    }
    let id = subject
        .strip_prefix(&format!("{category}-"))
        .unwrap_or(subject)
        .to_owned();
    let mut body = Map::new();
    body.insert("type".into(), Value::from(kind.erase_command));
    body.insert(kind.id_field.into(), Value::from(id));
    body.insert("reason".into(), Value::from(reason));
    body.insert("occurred_at".into(), Value::from(now.to_rfc3339()));
    let outcome = service
        .execute(CommandRequest {
            category,
            body,
            if_match: None,
            idempotency_key: None,
            actor: actor.to_owned(),
            on_behalf_of: None,
            correlation_id: None,
        })
        .await?;
    let event = outcome
        .result
        .events
        .into_iter()
        .find(|e| is_erasure(&e.event_type));
    Ok(Erasure {
        subject: subject.to_owned(),
        event_type: event
            .as_ref()
            .map_or_else(|| kind.erased_event.to_owned(), |e| e.event_type.clone()),
        position: event.map_or(0, |e| e.position),
        actor: actor.to_owned(),
        recorded_at: now,
        already_erased: false,
    })
}

/// The erasure already recorded in `stream`, if any.
async fn earlier_erasure<S: EventStore>(
    store: &S,
    stream: &StreamId,
) -> Result<Option<Erasure>, ReadError> {
    let mut from = StreamVersion(1);
    loop {
        let page = store.read_stream(stream, from, STREAM_PAGE_EVENTS).await?;
        let Some(last) = page.last() else {
            return Ok(None);
        };
        from = StreamVersion(last.stream_version.0.saturating_add(1));
        if let Some(event) = page.iter().find(|e| is_erasure(&e.event_type)) {
            return Ok(Some(Erasure {
                subject: stream.to_string(),
                event_type: event.event_type.clone(),
                position: event.position.0,
                actor: event.actor.clone(),
                recorded_at: event.recorded_at,
                already_erased: true,
            }));
        }
    }
}
