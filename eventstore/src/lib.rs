//! `crm-eventstore`: the durable, append-only event log of the CRM core.
//!
//! The log stores opaque recorded events in streams (one per aggregate, e.g.
//! `opportunity-42`) and in one global order addressed by [`Position`]. It knows
//! nothing of the CRM domain: payloads are bytes.
//!
//! Every backend keeps these, and the conformance suite in `tests/` checks them:
//!
//! **Architecture Invariant:** an append is acknowledged only once it is durable; a refused
//! append writes nothing.
//!
//! **Architecture Invariant:** positions are dense (1, 2, 3, ...) and every record links to
//! its predecessor through a BLAKE3 hash chain; appends are idempotent by event id.
//!
//! **Architecture Invariant:** a record that fails its checksum is reported as corrupt with
//! its position ([`ReadError::Corrupt`] and its typed [`Corruption`]), never returned as data.
//! Errors describe the fault; the remedy in a program's own verbs is left to that program.
//!
//! **Architecture Invariant:** the crate never depends on the CRM domain (`.ci/run` checks).
//!
//! Start reading at [`EventStore`] (the contract), then [`codec`] (the frame
//! format), [`MemoryStore`] (the reference model) and [`SledStore`] (the
//! embedded default, with group commit); [`JetStreamStore`] keeps the same log
//! in a NATS JetStream stream for a replicated, multi-process deployment.

pub mod any;
pub mod codec;
pub mod error;
pub mod jetstream;
pub mod limits;
pub mod memory;
pub mod sled_store;
pub mod store;
pub mod types;

pub use any::{AnyStore, SealPlan, Sealer};
pub use error::{AppendError, Corruption, OpenError, ReadError, SealRefusal};
pub use jetstream::{JetStreamConfig, JetStreamStore};
pub use memory::MemoryStore;
pub use sled_store::{SledOptions, SledStore};
pub use store::{
    record_at, verify_with_progress, EventStore, SelectedPage, Selector, Subscription, VerifyReport,
};
pub use types::{
    AppendResult, ChainHash, ChainHashError, EventFieldError, EventId, ExpectedVersion, Head,
    Position, ProposedEvent, RecordView, RecordedAt, RecordedEvent, StreamAppend, StreamId,
    StreamIdError, StreamVersion,
};
