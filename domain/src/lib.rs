//! `crm-domain`: the pure business rules of the event-sourced CRM core — value types,
//! commands, events, aggregates and their errors, plus the bridge that turns events into
//! versioned JSON payloads for the event store and back (with upcasting).
//!
//! **Architecture Invariant:** this crate is pure and synchronous. No I/O, no clock, no random
//! or time-based ids: business time (`occurred_at`) and ids arrive in commands. It depends on
//! neither `crm-eventstore` nor any runtime; only on chrono, schemars (the JSON Schema of
//! commands and values, for the API's document), serde, serde_json, strsim (nearest names in
//! error messages), thiserror and uuid.
//!
//! **Architecture Invariant:** an aggregate decides with `handle(&self, &Command) ->
//! Result<Vec<Event>, Error>` and folds with `apply(&mut self, &Event)`, which cannot fail.
//! Events are past-tense facts whose type name (`"OpportunityWon"`) is stable forever; a
//! payload change bumps the event's schema version and adds an upcaster.
//!
//! **Architecture Invariant:** personal data (names, emails, phones) lives only in the
//! `personal` field of an event so it can be crypto-shredded; see [`personal`].
//!
//! Where to start reading: [`aggregate::Aggregate`] (the contract), then one aggregate such
//! as [`aggregates::opportunity`], then [`event::DomainEvent`] (metadata for the envelope),
//! [`codec`] (payload bytes) and [`upcast`] (old versions). Value types are in [`values`];
//! the business calendar and clock the read models and the metric engine share are in
//! [`calendar`]; the events that define metrics (not aggregates: no command decides them
//! here) are in [`definitions`].
//! The event vocabulary is the one the metric catalog, `projections/metrics/CATALOG.md`,
//! reads its facts from.

#[macro_use]
mod macros;

pub mod access;
pub mod aggregate;
pub mod aggregates;
pub mod attributes;
pub mod calendar;
pub mod codec;
pub mod definitions;
pub mod event;
pub mod personal;
pub mod registry;
pub mod upcast;
pub mod values;

pub use aggregate::{replay, stream_id, Aggregate};
pub use codec::{CodecError, EncodedEvent, PAYLOAD_MAX_BYTES};
pub use event::{DomainEvent, WrongCategory, EVENT_CATALOG};
pub use personal::{
    is_erasure, subject_kind, Marker, PersonalData, PersonalDataError, SealedPersonalData,
    StoredPersonalData, SubjectKind, PERSONAL_DATA_FIELD, SUBJECTS,
};
pub use registry::{AggregateKind, Registry};
pub use upcast::{UpcastError, UpcastFn, UpcasterRegistry};
