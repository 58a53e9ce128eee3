//! The statistics the test tiers assert with, defined once: normal quantiles
//! for two-sided intervals, Wilson intervals of a measured proportion (the
//! engine's own [`impair::statistics::wilson_interval`]), order statistics and the
//! binomial CDF. Every bound a test uses comes from here, never a bare
//! threshold (docs/testing.md).

pub use impair::statistics::{binomial_cdf, Z99, Z999};

/// How many proportion checks (Wilson intervals) one CI run makes across the
/// tiers, rounded up: the family the suite-wide error rate is spread over.
pub const SUITE_PROPORTION_CHECKS: u32 = 100;

/// The suite's family-wise false-alarm rate: a correct engine fails one CI
/// run in a hundred at most. At 99% per check, 60 checks failed a correct
/// engine in about 45% of runs (one did: 5142/10000 against 0.5).
pub const SUITE_FALSE_ALARM: f64 = 0.01;

/// z of each proportion check, Bonferroni-corrected over the suite:
/// two-sided `SUITE_FALSE_ALARM / SUITE_PROPORTION_CHECKS` = 10⁻⁴, so z ≈ 3.89.
/// At 10,000 packets and 50% this is ±1.9 points, still far inside any
/// mistake worth catching (a rule off by a tenth of its rate).
pub const Z_SUITE: f64 = 3.890_591_886_413_094;

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

/// The measured proportion `k / n` has `configured` inside its Wilson
/// interval at [`Z_SUITE`] (99.99% each, 99% family-wise over the suite).
pub fn assert_inside_suite(configured: f64, k: u64, n: u64) {
    assert_inside(
        "99.99% Wilson interval (99% suite-wide)",
        Z_SUITE,
        configured,
        k,
        n,
    );
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
        let alpha = SUITE_FALSE_ALARM / f64::from(SUITE_PROPORTION_CHECKS);
        assert!((impair::statistics::normal_quantile(1.0 - alpha / 2.0) - Z_SUITE).abs() < 1e-9);
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
