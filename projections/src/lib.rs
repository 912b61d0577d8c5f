//! `crm-projections`: projection workers over the event log, and the CRM read models built
//! with them (pipeline, churn signals, lifetime value, SLA compliance). The metric engine is
//! its own crate, `crm-metrics` (`projections/metrics/`).
//!
//! A projection ([`Projection`]) is a named, versioned, pure fold over recorded events. The
//! [`ProjectionRunner`] runs each registered projection as its own tokio task: it catches up
//! from the projection's checkpoint, then follows the log live; a failing worker is restarted
//! with backoff without disturbing the others; [`ProjectionRunner::status`] reports phase,
//! lag and errors; [`ProjectionRunner::rebuild`] folds a new state from position 0 beside the
//! serving one and switches when it has caught up.
//!
//! **Architecture Invariant:** deterministic folds. `apply` reads only the state and the
//! event; "now" is a query parameter. Rebuilding from position 0 yields exactly the
//! incrementally reached state (property-tested in `tests/rebuild.rs`).
//!
//! **Architecture Invariant:** state and checkpoint together. A snapshot holds both and
//! replaces the previous one atomically ([`snapshot`]), so after a crash a worker resumes
//! right after the last saved event: nothing applied twice, nothing skipped.
//!
//! **Architecture Invariant:** versioned. A snapshot written by another code version or
//! configuration is never loaded; the projection rebuilds from position 0.
//!
//! **Architecture Invariant:** bounded. Pages, caches and query result lists have named
//! limits.
//!
//! **Architecture Invariant:** errors describe the fault (position, what was found); the
//! remedy, such as which command to run, is the caller's to give.
//!
//! Where to start reading: [`projection`] (the contract), [`worker`] (the fold loop and its
//! supervision), [`runner`] (the API the gateway calls), then one read model such as
//! [`read_models::pipeline`]. Business-time helpers shared by every read model are in
//! [`calendar`] (the domain's business calendar and clock, re-exported) and [`shared`]
//! (customer spells, statistics).

pub mod calendar;
mod control;
pub mod error;
mod feed;
mod instants;
pub mod projection;
pub mod read_models;
pub mod runner;
pub mod shared;
pub mod snapshot;
pub mod status;
pub mod table;
#[cfg(test)]
mod test_events;
pub mod worker;

pub use error::ProjectionError;
pub use feed::{CACHE_PAGES_MAX, PAGE_EVENTS};
pub use projection::{fold_all, fold_recorded, EventContext, Progress, Projection, SkipNote};
pub use read_models::{ReadModelConfig, ReadModels};
pub use runner::{stored_status, ProjectionHandle, ProjectionRunner, RebuildReport, RunnerOptions};
pub use status::{Phase, RebuildStatus, WorkerError, WorkerStatus};
