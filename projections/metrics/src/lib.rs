//! `crm-metrics`: the metric engine of the CRM. Metrics are versioned definitions (TOML),
//! evaluated by replaying the event log, with bitemporal queries (`as_of`: what had happened;
//! `known_at`: what the log knew), versions compared side by side, and every figure explained
//! by the facts that made it. The built-in definitions are documented in the metric catalog,
//! `projections/metrics/CATALOG.md`.
//!
//! **Architecture Invariant:** a figure is a function of (definition id, version, spec hash,
//! query, log position). No wall clock, no randomness, ordered maps: the same inputs give
//! byte-identical figures and explanations.
//!
//! **Architecture Invariant:** figures are honest. No data is reported as "no data: needs X",
//! never as 0; ratios are numerator ÷ denominator of the cell, never averages of child
//! ratios; money stays integer minor units of one currency.
//!
//! **Architecture Invariant:** the engine reads and appends only through the
//! `crm_eventstore::EventStore` trait: no HTTP, no command-line parsing, no files, no clock
//! ("now" and the business time of a definition arrive as arguments). It depends on
//! `crm-domain` and `crm-eventstore`, never on `crm-projections` or the gateway.
//!
//! **Architecture Invariant:** bounded. Periods, figures, rows, explain pages and kept events
//! have named limits.
//!
//! **Architecture Invariant:** errors are typed and describe the fault (the key, the
//! character, the position, what was found); which command or route to use instead is the
//! caller's to say.
//!
//! The pipeline, one step per module:
//!
//! 1. **Definition** ([`definition`]): the TOML of one metric version, in a small language as
//!    expressive as MetricFlow's metric types (simple aggregations, ratios, cumulative
//!    windows, derived formulas with offsets, conversions, durations on the calendar or
//!    business clock, stocks and semi-additive measures).
//!    [`MetricDefinition::spec_hash`] covers what can change a value. The built-in
//!    definitions are the [`catalog`]; [`registry`] merges them with the `MetricDefined`
//!    events of the log ([`define`] appends one; a version is never overwritten).
//! 2. **Compile** (`compile`): a definition validated into the form the engine runs:
//!    expressions parsed (`expr`), the business calendar (the domain's
//!    `crm_domain::calendar::BusinessCalendar`) read from the params, and what the metric
//!    reads from the log.
//! 3. **Replay view** ([`view`]): one replay of the log into a [`LogView`], keeping only the
//!    event types the metrics read, with `as_of` and `known_at` applied and the global
//!    exclusions resolved.
//! 4. **Measures** (`measures`): each measure type turns the facts of the view into
//!    derivation rows and cells, evaluating the definition's expressions against one fact at
//!    a time (`expr::eval`).
//! 5. **Derivation rows** (`derivation`): one row per fact considered for a cell (period ×
//!    dimension values), included with its contribution or excluded with the reason code of
//!    the first exclusion rule that matched.
//! 6. **Figures** (`derivation` reduces a cell's rows into its value; [`query`] answers a
//!    [`Query`]: [`evaluate()`] and [`compare`] return [`Figure`]s with numerator,
//!    denominator and counts included and excluded by reason).
//! 7. **Explain** ([`explain()`], [`diff`]): pages the same rows, and says why a figure moved
//!    between two report dates.
//!
//! Cost: one evaluation reads the whole log once (`read_all` pages), decodes only events of
//! the types the metric names (payloads cut to the fields it reads, kept as compact binary
//! JSON in columns: a few dozen bytes an event), and holds those in memory; figures fold
//! each fact into its cell as it is considered (only explain and diff keep the rows), so
//! beyond the kept events an evaluation holds its cells and the state its measure type
//! needs per entity (distinct keys, samples of a median, an entity's spells for stocks).
//! Time is linear in the log plus the kept events (stocks: periods × entities).
//!
//! Where to start reading: [`definition`] (what a metric is), then [`query`] (how a question
//! is answered), `derivation` (rows and figures) and [`explain`](mod@explain). The gateway
//! calls [`Registry::load`] (or, to keep the registry between requests,
//! [`RegistryCache::get`]), [`Registry::list`], [`define`], [`evaluate()`], [`compare`],
//! [`explain()`] with [`to_csv`], and [`diff`]; the metric catalog document is
//! [`catalog::document`].

pub mod adhoc;
pub mod catalog;
pub(crate) mod compile;
pub mod definition;
pub(crate) mod derivation;
pub mod error;
pub mod explain;
pub(crate) mod expr;
pub(crate) mod hashing;
pub(crate) mod measures;
pub mod period;
pub mod query;
pub mod registry;
pub mod scorecard;
pub mod sql;
pub mod view;

pub use crm_domain::definitions::METRIC_DEFINED;
pub use definition::{parse_catalog, parse_definition, MetricDefinition};
pub use derivation::Num;
pub use error::{DefinitionError, MetricError};
pub use explain::{diff, explain, explain_in, to_csv, Diff, ExplainSelect, Explanation};
pub use expr::ExprError;
pub use period::{Grain, Period};
pub use query::{
    compare, compare_in, evaluate, evaluate_in, load_view, Comparison, Evaluation, Figure,
    MetricRef, Query, Status, WhereClause,
};
pub use registry::{
    define, define_as, set_default, set_default_as, DefineOutcome, MetricSummary, RegisteredMetric,
    Registry, RegistryCache,
};
pub use view::{on_view_loaded, KnownAt, LogMark, LogView};

/// Functions of the expression language, with their arity and purpose (for `--help`).
pub use expr::FUNCTIONS;
