//! Probabilities as u32 thresholds, the encoding tc netem uses.
//!
//! A probability `p` is stored as `round(p * u32::MAX)`; an event fires when the
//! threshold is non-zero and `rand_u32 <= threshold`. 0 never fires and
//! `u32::MAX` always fires; values round-trip with netem's own settings.

/// Whether an event with probability `threshold` fires for a uniform `rand`.
#[inline(always)]
pub fn fires(threshold: u32, rand: u32) -> bool {
    threshold != 0 && rand <= threshold
}

/// Encodes a probability in [0, 1] as a threshold; out-of-range input is clamped
/// (the controller rejects it before it gets here).
#[cfg(not(target_arch = "bpf"))]
pub fn from_fraction(p: f64) -> u32 {
    if p.is_nan() || p <= 0.0 {
        0
    } else if p >= 1.0 {
        u32::MAX
    } else {
        // Saturating float-to-int cast; +0.5 rounds to nearest.
        (p * f64::from(u32::MAX) + 0.5) as u32
    }
}

/// The exact probability a threshold fires with, for reporting and tests.
#[cfg(not(target_arch = "bpf"))]
pub fn to_fraction(threshold: u32) -> f64 {
    if threshold == 0 {
        0.0
    } else {
        (f64::from(threshold) + 1.0) / 4_294_967_296.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extremes() {
        assert!(!fires(0, 0));
        assert!(fires(u32::MAX, u32::MAX));
        assert_eq!(from_fraction(0.0), 0);
        assert_eq!(from_fraction(1.0), u32::MAX);
        assert_eq!(from_fraction(-1.0), 0);
        assert_eq!(from_fraction(f64::NAN), 0);
    }

    #[test]
    fn ten_percent_round_trips() {
        let t = from_fraction(0.10);
        assert_eq!(t, 429_496_730);
        assert!((to_fraction(t) - 0.10).abs() < 1e-9);
    }

    #[test]
    fn seeded_bernoulli_rate_inside_99_percent_interval() {
        // 200k draws at p = 0.1: the 99% normal interval is p ± 2.576 sqrt(p(1-p)/n).
        let n = 200_000u32;
        let t = from_fraction(0.1);
        let mut s = crate::rng::cpu_state(42, 0);
        let hits = (0..n)
            .filter(|_| fires(t, crate::rng::next_u64(&mut s) as u32))
            .count();
        let p_hat = hits as f64 / f64::from(n);
        let half = 2.576 * (0.1f64 * 0.9 / f64::from(n)).sqrt();
        assert!(
            (p_hat - 0.1).abs() < half,
            "p_hat = {p_hat}, allowed ± {half}"
        );
    }
}
