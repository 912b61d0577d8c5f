//! `crm-gateway`: the `crm` command. It owns the HTTP API ([`http`], `crm serve`),
//! configuration (file, `CRM_*` environment, flags), the importers that bring CRM exports into
//! the log as domain events, the verbs that read and check the log (`events`, `verify`,
//! `stats`) and the HTTP load generator ([`bench`]). `main.rs` is a thin clap front end over
//! this library.
//!
//! **Invariant:** every imported fact goes through a domain command and the aggregate's
//! `handle`, so the domain rules apply to imports exactly as to live traffic.
//!
//! **Invariant:** imports are idempotent and auditable: event ids are UUID v5 of (source, row
//! key, event kind) and every imported event names its source file, line and key in metadata.
//!
//! **Invariant:** an HTTP command goes through the same `handle` and appends with the exact
//! stream version it was decided on; a refused request appends nothing.
//!
//! Where to start reading: [`http`] (routes, limits, shutdown) and [`http::commands`] (the
//! write path); [`import`] (the framework and its invariants), then one importer
//! such as [`import::maven`]; [`config`] for settings; [`verbs`] for `events`, `verify` and
//! `stats`; [`envelope`] for the JSON form of a recorded event; [`publish`] for the
//! publication of committed events to NATS (`crm serve --nats`, `crm tail`).

pub mod bench;
pub mod config;
pub mod demo;
pub mod envelope;
pub mod http;
pub mod ids;
pub mod import;
pub mod metric_cli;
pub mod project;
pub mod publish;
pub mod store;
pub mod verbs;
