//! `crm-bench`: the load generators of the CRM event log and the statistics every benchmark
//! reports. Not part of the shipped `crm` binary: `cargo run --release -p crm-bench -- http`
//! measures the HTTP API, `-- nats-lag` the publication lag to NATS, `-- personal` what
//! sealing personal data costs, `-- metric-memory` the time and peak memory of metric
//! questions, a catch-up and a replay over a large generated log.
//!
//! **Architecture Invariant:** benchmarks report measurements (latency quantiles by nearest
//! rank, [`stats::quantile_ms`], and rates) against a baseline measured in the same run; no
//! test asserts on wall-clock time.

// The benchmark's customer stories, shared with the projections' tests and benches.
#[path = "../../../projections/tests/common/gen.rs"]
mod gen;
#[path = "../../../projections/tests/common/story.rs"]
mod story;

pub mod http;
pub mod metric_memory;
pub mod nats_lag;
pub mod personal;
pub mod stats;
