//! The statistics every benchmark of the workspace reports: one quantile function.

use std::time::Duration;

/// The `q`-quantile of `sorted` latencies in milliseconds, by nearest rank (the smallest
/// latency with at least a `q` share of the samples at or below it); 0 for no samples.
pub fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let ms =
            |v: &[u64]| -> Vec<Duration> { v.iter().map(|&m| Duration::from_millis(m)).collect() };
        let sorted = ms(&(1..=100).collect::<Vec<_>>());
        assert!((quantile_ms(&sorted, 0.50) - 50.0).abs() < 1e-9);
        assert!((quantile_ms(&sorted, 0.99) - 99.0).abs() < 1e-9);
        assert!((quantile_ms(&sorted, 1.0) - 100.0).abs() < 1e-9);
        // Few samples: p99 of three is the largest, p50 the middle one.
        let three = ms(&[1, 2, 30]);
        assert!((quantile_ms(&three, 0.99) - 30.0).abs() < 1e-9);
        assert!((quantile_ms(&three, 0.50) - 2.0).abs() < 1e-9);
        assert!(quantile_ms(&[], 0.99).abs() < 1e-9);
    }
}
