//! The process's Prometheus recorder: installed once, on first use, by whichever part of the
//! process records first (the HTTP API, the publisher, a projection worker's probes), so every
//! counter and gauge lands in the one registry `/metrics` renders.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Histogram buckets of every latency, in seconds (100 µs .. 10 s).
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The process's Prometheus recorder, installed on first use; `None` if another recorder was
/// installed first (then `/metrics` answers 503).
#[must_use]
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS_SECONDS)
                .ok()?
                .install_recorder()
                .map_err(|e| tracing::warn!(error = %e, "no Prometheus recorder"))
                .ok()
        })
        .clone()
}
