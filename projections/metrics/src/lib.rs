//! The metric engine: versioned metric definitions evaluated by replaying the log, with
//! bitemporal queries and explanations for auditors (METRICS.md §1, issue 6).
//!
//! - **Definitions** ([`definition`]) are TOML in a small language as expressive as
//!   MetricFlow's metric types: simple aggregations, ratios, cumulative windows, derived
//!   formulas with offsets, conversions, durations (calendar or business clock), stocks and
//!   semi-additive measures. A definition's [`MetricDefinition::spec_hash`] covers what can
//!   change a value.
//! - **Definitions are events** ([`registry`]): [`define`] appends `MetricDefined` to the
//!   stream `metric-<id>`; a version is never overwritten. [`Registry::load`] merges the
//!   built-in [`catalog`] with the log.
//! - **Evaluation** ([`evaluate()`]) replays the log once into a [`LogView`] (only the events
//!   the metric reads; `as_of` and `known_at` applied), turns facts into a derivation record
//!   of rows (included with contribution, or excluded with the reason code of the first
//!   matching rule), and reduces rows into figures per period and dimension values.
//! - **Explain and diff** ([`explain()`], [`diff`]) read the same rows.
//!
//! Invariants:
//! - **Deterministic.** No wall clock, no randomness, ordered maps: the same metric and query
//!   at the same log position give byte-identical output.
//! - **Honest figures.** No data is reported as "no data: needs X", never as 0; ratios are
//!   numerator ÷ denominator; money stays integer minor units of one currency.
//! - **Bounded.** Periods, figures, rows, explain pages and kept events have named limits.
//!
//! Cost: one evaluation reads the whole log once (`read_all` pages), decodes only events of
//! the types the metric names (payloads cut to the fields it reads), and holds those in
//! memory; time is linear in the log plus the kept events (stocks: periods × entities).
//!
//! The gateway calls: [`Registry::load`] then [`Registry::list`] (`crm metrics list`),
//! [`define`] (`crm metrics define FILE`), [`evaluate()`] (`crm metric ID`), [`compare`],
//! [`explain()`] + [`to_csv`] (`crm explain`), [`diff`] (`crm metric diff`).

pub mod bizclock;
pub mod catalog;
pub(crate) mod compile;
pub mod definition;
pub(crate) mod engine;
pub mod error;
pub(crate) mod eval;
pub mod evaluate;
pub mod explain;
pub(crate) mod expr;
pub(crate) mod measures;
pub mod period;
pub mod registry;
pub(crate) mod stock;
pub mod view;

pub use definition::{parse_catalog, parse_definition, MetricDefinition};
pub use engine::Num;
pub use error::{DefinitionError, MetricError};
pub use evaluate::{
    compare, compare_in, evaluate, evaluate_in, load_view, Comparison, Evaluation, Figure,
    MetricRef, Query, Status,
};
pub use explain::{diff, explain, explain_in, to_csv, Diff, ExplainSelect, Explanation};
pub use period::{Grain, Period};
pub use registry::{
    define, set_default, DefineOutcome, MetricSummary, RegisteredMetric, Registry, METRIC_DEFINED,
};
pub use view::{KnownAt, LogMark, LogView};

/// Functions of the expression language, with their arity and purpose (for `--help`).
pub use expr::FUNCTIONS;
