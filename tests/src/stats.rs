//! The statistics the test tiers assert with, defined once: normal quantiles
//! for two-sided intervals, Wilson intervals of a measured proportion (the
//! engine's own [`impair::statistics::wilson_interval`]), order statistics and the
//! binomial CDF. Every bound a test uses comes from here, never a bare
//! threshold (docs/testing.md).

pub use impair::statistics::{binomial_cdf, Z99, Z999};

/// The Wilson score interval of `k` successes in `n` trials at `z`.
pub fn wilson(k: u64, n: u64, z: f64) -> (f64, f64) {
    impair::statistics::wilson_interval(k, n, z)
}

/// Asserts that `configured` lies inside the two-sided Wilson interval at `z`
/// of the measured proportion `k / n`; `what` names the measurement.
pub fn assert_inside(what: &str, z: f64, configured: f64, k: u64, n: u64) {
    let (lo, hi) = wilson(k, n, z);
    assert!(
        lo <= configured && configured <= hi,
        "{what}: configured {configured}: measured {k}/{n}, z = {z} interval {lo}..{hi}"
    );
}

/// The measured loss `lost / sent` has `configured` inside its 99% Wilson interval.
pub fn assert_inside_99(configured: f64, lost: u64, sent: u64) {
    assert_inside("99% Wilson interval", Z99, configured, lost, sent);
}

/// The `q` quantile (0..=1) of `sorted` (ascending, not empty), by the
/// nearest rank.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// The median of `values` (not empty), by [`quantile`].
pub fn median(values: &[u64]) -> u64 {
    let mut s = values.to_vec();
    s.sort_unstable();
    quantile(&s, 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_the_normal_ones() {
        // Φ(z) by the complementary error function's series is not in std;
        // the tabulated values to 6 places are enough to catch a typo.
        assert!((Z99 - 2.575_829).abs() < 1e-6);
        assert!((Z999 - 3.290_527).abs() < 1e-6);
    }

    #[test]
    fn binomial_cdf_sums_to_one_and_matches_a_small_case() {
        assert!((binomial_cdf(10, 10, 0.3) - 1.0).abs() < 1e-12);
        // P(X <= 1), n = 2, p = 0.5: 3/4.
        assert!((binomial_cdf(1, 2, 0.5) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn median_and_quantiles_by_nearest_rank() {
        assert_eq!(median(&[5, 1, 3]), 3);
        assert_eq!(quantile(&[1, 2, 3, 4, 5], 0.0), 1);
        assert_eq!(quantile(&[1, 2, 3, 4, 5], 1.0), 5);
    }
}
