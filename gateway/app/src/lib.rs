//! `crm-app`: the application layer of the CRM event log, between the pure domain and the
//! edges (HTTP, CLI, importers, publication). It owns the command service ([`commands`]:
//! load the aggregate's stream, fold, decide, append with the exact version decided on,
//! retry on a concurrent writer, answer a retried idempotency key with its original result),
//! the one function that turns a decided domain event into an event the log appends
//! ([`propose`]), the configuration ([`config`]: defaults < file < `CRM_*` environment <
//! flags), opening the log the configuration names ([`store`]), the read models as the
//! application runs them ([`projections`]), deterministic ids ([`ids`]) and the JSON form of
//! a recorded event ([`envelope`]), how damage to the log is named and remedied
//! ([`damage`]), and the memory allocator our binaries name ([`allocator`]).
//!
//! **Architecture Invariant:** no HTTP and no command-line parsing here: the crate depends on
//! neither axum nor clap (`.ci/run` checks with `cargo tree`). Errors are typed
//! ([`commands::CommandError`], [`store::StoreOpenError`], [`config::ConfigError`]); the edges
//! turn them into problem documents or messages.
//!
//! **Architecture Invariant:** a command goes through the aggregate's `handle` and appends
//! with the exact stream version it was decided on; a refused command appends nothing. The
//! aggregates come from the domain's [`crm_domain::Registry`], never from a list kept here.
//!
//! Where to start reading: [`commands::CommandService::execute`], then [`propose`],
//! [`config::Config::resolve`] and [`store::open`].

pub mod access;
pub mod allocator;
pub mod checkpoint;
pub mod commands;
pub mod config;
pub mod damage;
pub mod envelope;
pub mod erasure;
pub mod ids;
pub mod inspect;
pub mod instant;
pub mod keys;
pub mod personal;
pub mod projections;
pub mod propose;
pub mod schema;
pub mod store;
pub mod telemetry;
