//! `crm-bench`: the load generators of the CRM event log and the statistics every benchmark
//! reports. Not part of the shipped `crm` binary: `cargo run --release -p crm-bench -- http`
//! measures the HTTP API, `-- nats-lag` the publication lag to NATS, `-- personal` what
//! sealing personal data costs.
//!
//! **Architecture Invariant:** benchmarks report measurements (latency quantiles by nearest
//! rank, [`stats::quantile_ms`], and rates) against a baseline measured in the same run; no
//! test asserts on wall-clock time.

pub mod http;
pub mod nats_lag;
pub mod personal;
pub mod stats;
