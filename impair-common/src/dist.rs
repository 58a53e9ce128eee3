//! Delay jitter in the data path: sampling from a quantile table, and uniform
//! jitter without a table.
//!
//! A table holds [`TABLE_SIZE`] knots of a distribution's quantile function,
//! standardized (mean 0, standard deviation 1 for normal, pareto and
//! paretonormal) and scaled by [`TABLE_SCALE`]; the controller builds it
//! (impair-user's `dist` module). Knot `j` is the quantile at probability
//! `j / (TABLE_SIZE - 1)`, so the `TABLE_SIZE - 1` intervals between knots each
//! hold the same probability. A packet picks one interval uniformly and a
//! position inside it, and the value is interpolated linearly between the two
//! knots: the sampled distribution is continuous and its CDF equals the target
//! CDF at every knot. netem instead picks one of its (up to 16384) 16-bit
//! entries, so its delays take only that many distinct values.
//!
//! Everything here is integer-only, loop-free and overflow-free for all inputs
//! (i128 does not exist in BPF), so it is inlined into the eBPF program as is.

/// Knots per table (a power of two; `TABLE_SIZE - 1` intervals).
pub const TABLE_SIZE: u32 = 4096;
// The data path masks a table index with `TABLE_SIZE - 1` to show the
// verifier it is in bounds; that only keeps every index when it is a power of two.
const _: () = assert!(TABLE_SIZE.is_power_of_two());
// `sample_index_frac` multiplies a 48-bit fraction by `TABLE_SIZE - 1` in u64.
const _: () = assert!(TABLE_SIZE <= 1 << 16);

/// Table values are standardized quantiles × `TABLE_SCALE`, stored as i32: a
/// resolution of 1/65536 σ and a range of ±32768 σ. (netem: 8192 and ±4 σ in
/// 16 bits, which clamps its pareto tail.)
pub const TABLE_SCALE: i64 = 1 << 16;

/// Bits of the interpolation fraction returned by [`sample_index_frac`].
pub const FRAC_BITS: u32 = 16;

/// Largest jitter the controller accepts (2^40 ns ≈ 18 minutes). Larger values
/// reaching the functions here are clamped to it, so the arithmetic stays in
/// range whatever a map holds.
pub const MAX_JITTER_NS: u64 = 1 << 40;

/// Largest |q_scaled| (table values are i32, so |q| ≤ 2^31). Larger values are
/// clamped to it.
pub const MAX_Q_SCALED: u64 = 1 << 31;

/// Delays saturate here (u64::MAX / 2 ns ≈ 292 years): far beyond any horizon,
/// and a sum of a capped delay and another offset can never wrap.
pub const DELAY_CAP_NS: u64 = u64::MAX / 2;

/// Picks an interval of the table and a position inside it from one random.
///
/// Returns `(index, frac)` with `index` in `[0, TABLE_SIZE - 1)` and `frac` in
/// `[0, 2^16)`: the sample lies `frac / 2^16` of the way from knot `index` to
/// knot `index + 1`. The top 48 bits of `r` are read as a fixed-point fraction
/// u in [0, 1) and multiplied by `TABLE_SIZE - 1` (< 2^12, so the product fits
/// in 60 bits); the integer part is the index and the next 16 bits the
/// fraction. The mapping is monotone in `r`, every interval gets the same
/// number of 48-bit inputs to within one in 2^32/4095 ≈ 10^6 (relative bias
/// < 10^-6), and so does every (index, frac) cell.
#[inline(always)]
pub fn sample_index_frac(r: u64) -> (u32, u32) {
    let u48 = r >> 16;
    let pos = u48 * u64::from(TABLE_SIZE - 1);
    ((pos >> 48) as u32, ((pos >> 32) & 0xFFFF) as u32)
}

/// The value `frac / 2^16` of the way from `lo` to `hi`, rounded down, in table
/// units. `frac` is taken modulo 2^16. The result always lies between `lo` and
/// `hi`, and the arithmetic cannot overflow: |hi - lo| < 2^32 and frac < 2^16,
/// so the product is below 2^48.
#[inline(always)]
pub fn interpolate(lo: i32, hi: i32, frac: u32) -> i64 {
    let lo = i64::from(lo);
    let diff = i64::from(hi) - lo;
    lo + ((diff * i64::from(frac & 0xFFFF)) >> FRAC_BITS)
}

/// `delay_ns + jitter_ns × q_scaled / TABLE_SCALE`, rounded to the nearest
/// nanosecond (halves away from zero, so ±q give symmetric offsets), saturating
/// at 0 and at [`DELAY_CAP_NS`].
///
/// Bounds: the controller guarantees `jitter_ns ≤ 2^40` and `|q_scaled| ≤ 2^31`
/// (values beyond are clamped here). The product jitter·|q| can reach 2^71, so
/// jitter is split as `hi·2^16 + lo`: jitter·|q| / 2^16 = hi·|q| + lo·|q| / 2^16
/// with hi·|q| ≤ 2^24·2^31 = 2^55 and lo·|q| < 2^47. The offset is thus below
/// 2^56 and `delay (≤ 2^63) + offset` cannot wrap.
#[inline(always)]
pub fn jittered_delay_ns(delay_ns: u64, jitter_ns: u64, q_scaled: i64) -> u64 {
    let jitter = if jitter_ns > MAX_JITTER_NS {
        MAX_JITTER_NS
    } else {
        jitter_ns
    };
    let mag = q_scaled.unsigned_abs();
    let mag = if mag > MAX_Q_SCALED {
        MAX_Q_SCALED
    } else {
        mag
    };
    let hi = jitter >> FRAC_BITS;
    let lo = jitter & 0xFFFF;
    // (jitter·mag + 2^15) >> 16, exact: hi·mag·2^16 is a multiple of 2^16.
    let offset = hi * mag + ((lo * mag + (1 << (FRAC_BITS - 1))) >> FRAC_BITS);
    let delay = if delay_ns > DELAY_CAP_NS {
        DELAY_CAP_NS
    } else {
        delay_ns
    };
    if q_scaled < 0 {
        delay.saturating_sub(offset)
    } else {
        let d = delay.saturating_add(offset);
        if d > DELAY_CAP_NS {
            DELAY_CAP_NS
        } else {
            d
        }
    }
}

/// The high 64 bits of the 128-bit product `a × b`, from 32-bit halves (BPF
/// has no 128-bit multiply). No partial sum can overflow: each product is
/// below 2^64 and `mid` adds three values below 2^32.
#[inline(always)]
fn mul_hi_u64(a: u64, b: u64) -> u64 {
    const M: u64 = 0xFFFF_FFFF;
    let (a0, a1) = (a & M, a >> 32);
    let (b0, b1) = (b & M, b >> 32);
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 32) + (p01 & M) + (p10 & M);
    p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32)
}

/// netem's uniform jitter: a delay uniform over `[delay − jitter, delay +
/// jitter)`, saturating at 0 and at [`DELAY_CAP_NS`], with no table.
///
/// The offset into the `2·jitter` wide range is `⌊r · 2·jitter / 2^64⌋`, exact
/// (a 64×64 high multiply), so every nanosecond of the range is equally likely
/// to within one part in 2^64/(2·jitter). `jitter_ns` is clamped to
/// [`MAX_JITTER_NS`]. Unlike netem, whose "correlation" for delay is reduced
/// modulo the range and has no effect, this draws each packet independently.
#[inline(always)]
pub fn uniform_delay_ns(delay_ns: u64, jitter_ns: u64, r: u64) -> u64 {
    let jitter = if jitter_ns > MAX_JITTER_NS {
        MAX_JITTER_NS
    } else {
        jitter_ns
    };
    let offset = mul_hi_u64(r, 2 * jitter);
    let delay = if delay_ns > DELAY_CAP_NS {
        DELAY_CAP_NS
    } else {
        delay_ns
    };
    if offset >= jitter {
        let d = delay.saturating_add(offset - jitter);
        if d > DELAY_CAP_NS {
            DELAY_CAP_NS
        } else {
            d
        }
    } else {
        delay.saturating_sub(jitter - offset)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::rng;
    use std::vec::Vec;

    /// The same computations in i128/u128 (host only) as the reference.
    fn jittered_reference(delay_ns: u64, jitter_ns: u64, q: i64) -> u64 {
        let j = i128::from(jitter_ns.min(MAX_JITTER_NS));
        let q = i128::from(q.clamp(-(MAX_Q_SCALED as i64), MAX_Q_SCALED as i64));
        let prod = j * q.abs();
        let off = (prod + (1 << 15)) >> 16;
        let off = if q < 0 { -off } else { off };
        let d = i128::from(delay_ns.min(DELAY_CAP_NS)) + off;
        d.clamp(0, i128::from(DELAY_CAP_NS)) as u64
    }

    #[test]
    fn index_and_fraction_cover_the_range() {
        assert_eq!(sample_index_frac(0), (0, 0));
        assert_eq!(sample_index_frac(u64::MAX), (TABLE_SIZE - 2, 0xFFFF));
        // The low 16 bits are ignored.
        assert_eq!(sample_index_frac(0xFFFF), (0, 0));
        // Exactly halfway: u = 1/2 → position 2047.5.
        assert_eq!(sample_index_frac(1 << 63), (2047, 0x8000));
    }

    #[test]
    fn sampling_position_is_monotone_in_r() {
        let mut s = rng::cpu_state(1, 0);
        let mut rs: Vec<u64> = (0..100_000).map(|_| rng::next_u64(&mut s)).collect();
        rs.sort_unstable();
        let mut last = 0u64;
        for r in rs {
            let (i, f) = sample_index_frac(r);
            assert!(i < TABLE_SIZE - 1 && f < 1 << 16);
            let pos = (u64::from(i) << 16) | u64::from(f);
            assert!(pos >= last);
            last = pos;
        }
    }

    #[test]
    fn intervals_are_uniform_chi_square_99() {
        // 4,095,000 draws over 4095 intervals, 1000 expected in each. Under
        // uniformity χ² has 4094 degrees of freedom: mean 4094, sd √8188 ≈ 90.5;
        // its 99% quantile is ≈ 4094 + 2.326·90.5 ≈ 4305 (normal approximation,
        // accurate at this many degrees of freedom).
        let cells = (TABLE_SIZE - 1) as usize;
        let n = cells * 1000;
        let mut counts = std::vec![0u32; cells];
        let mut frac_sum = 0u64;
        let mut s = rng::cpu_state(2, 0);
        for _ in 0..n {
            let (i, f) = sample_index_frac(rng::next_u64(&mut s));
            counts[i as usize] += 1;
            frac_sum += u64::from(f);
        }
        let chi2: f64 = counts
            .iter()
            .map(|&c| (f64::from(c) - 1000.0).powi(2) / 1000.0)
            .sum();
        assert!(chi2 < 4305.0, "chi2 = {chi2}");
        // The fraction is uniform on [0, 65535]: mean 32767.5, sd 18918.
        let mean = frac_sum as f64 / n as f64;
        let half = 2.576 * 18918.0 / (n as f64).sqrt();
        assert!((mean - 32767.5).abs() < half, "frac mean {mean}");
    }

    #[test]
    fn interpolation_is_exact_at_knots_and_bounded_between() {
        assert_eq!(interpolate(100, 200, 0), 100);
        assert_eq!(interpolate(100, 200, 0x8000), 150);
        assert_eq!(interpolate(100, 200, 0xFFFF), 199);
        assert_eq!(interpolate(200, 100, 0x8000), 150);
        assert_eq!(interpolate(-5, -5, 1234), -5);
        // Only the low 16 bits of frac count.
        assert_eq!(interpolate(0, 65536, 0x1_0000 | 3), 3);
        // Extreme knots: no overflow, result within [lo, hi].
        let (a, b) = (i32::MIN, i32::MAX);
        assert_eq!(interpolate(a, b, 0), i64::from(a));
        assert!(interpolate(a, b, 0xFFFF) <= i64::from(b));
        assert!(interpolate(b, a, 0xFFFF) >= i64::from(a));
        let mut s = rng::cpu_state(4, 0);
        for _ in 0..100_000 {
            let r = rng::next_u64(&mut s);
            let (lo, hi, f) = (r as i32, (r >> 32) as i32, (r >> 7) as u32 & 0xFFFF);
            let v = interpolate(lo, hi, f);
            assert!(v >= i64::from(lo.min(hi)) && v <= i64::from(lo.max(hi)));
            let exact =
                (i128::from(lo) * 65536 + (i128::from(hi) - i128::from(lo)) * i128::from(f)) >> 16;
            assert_eq!(i128::from(v), exact);
        }
    }

    #[test]
    fn jittered_delay_basic_values() {
        let ms = 1_000_000u64;
        assert_eq!(jittered_delay_ns(100 * ms, 10 * ms, 0), 100 * ms);
        assert_eq!(jittered_delay_ns(100 * ms, 10 * ms, TABLE_SCALE), 110 * ms);
        assert_eq!(jittered_delay_ns(100 * ms, 10 * ms, -TABLE_SCALE), 90 * ms);
        assert_eq!(
            jittered_delay_ns(100 * ms, 10 * ms, TABLE_SCALE / 2),
            105 * ms
        );
        assert_eq!(
            jittered_delay_ns(100 * ms, 0, i64::from(i32::MAX)),
            100 * ms
        );
        // Saturation at 0.
        assert_eq!(jittered_delay_ns(5 * ms, 10 * ms, -TABLE_SCALE), 0);
        // Rounding: 1 ns × 0.5 rounds away from zero, symmetrically.
        assert_eq!(jittered_delay_ns(10, 1, TABLE_SCALE / 2), 11);
        assert_eq!(jittered_delay_ns(10, 1, -TABLE_SCALE / 2), 9);
        assert_eq!(jittered_delay_ns(10, 1, TABLE_SCALE / 2 - 1), 10);
    }

    #[test]
    fn jittered_delay_extreme_bounds_do_not_overflow() {
        let q_max = MAX_Q_SCALED as i64;
        // The largest guaranteed inputs: offset exactly 2^40 · 2^31 / 2^16 = 2^55.
        assert_eq!(jittered_delay_ns(0, MAX_JITTER_NS, q_max), 1 << 55);
        assert_eq!(jittered_delay_ns(1 << 56, MAX_JITTER_NS, -q_max), 1 << 55);
        assert_eq!(
            jittered_delay_ns(DELAY_CAP_NS, MAX_JITTER_NS, q_max),
            DELAY_CAP_NS
        );
        assert_eq!(
            jittered_delay_ns(u64::MAX, u64::MAX, i64::MAX),
            DELAY_CAP_NS
        );
        assert_eq!(
            jittered_delay_ns(u64::MAX, u64::MAX, i64::MIN),
            DELAY_CAP_NS - (1 << 55)
        );
        assert_eq!(jittered_delay_ns(0, u64::MAX, i64::MIN), 0);
        // Out-of-contract inputs are clamped, not wrapped.
        assert_eq!(jittered_delay_ns(0, u64::MAX, q_max), 1 << 55);
        assert_eq!(jittered_delay_ns(0, MAX_JITTER_NS, i64::MAX), 1 << 55);
        // Random inputs across the whole range against an i128 reference.
        let mut s = rng::cpu_state(6, 0);
        for i in 0..200_000 {
            let (a, b, c) = (
                rng::next_u64(&mut s),
                rng::next_u64(&mut s),
                rng::next_u64(&mut s),
            );
            // Mix in-contract and out-of-contract magnitudes.
            let delay = a >> (c % 64);
            let jitter = if i % 2 == 0 { b >> 24 } else { b >> (c % 64) };
            let q = if i % 3 == 0 {
                c as i64
            } else {
                i64::from(c as i32)
            };
            assert_eq!(
                jittered_delay_ns(delay, jitter, q),
                jittered_reference(delay, jitter, q),
                "delay {delay} jitter {jitter} q {q}"
            );
        }
    }

    #[test]
    fn high_multiply_matches_u128() {
        let mut s = rng::cpu_state(7, 0);
        for _ in 0..100_000 {
            let (a, b) = (rng::next_u64(&mut s), rng::next_u64(&mut s));
            assert_eq!(
                mul_hi_u64(a, b),
                ((u128::from(a) * u128::from(b)) >> 64) as u64
            );
        }
        assert_eq!(mul_hi_u64(u64::MAX, u64::MAX), u64::MAX - 1);
        assert_eq!(mul_hi_u64(0, u64::MAX), 0);
    }

    #[test]
    fn uniform_delay_covers_half_open_range() {
        let ms = 1_000_000u64;
        let (delay, jitter) = (50 * ms, 10 * ms);
        assert_eq!(uniform_delay_ns(delay, jitter, 0), delay - jitter);
        assert_eq!(
            uniform_delay_ns(delay, jitter, u64::MAX),
            delay + jitter - 1
        );
        assert_eq!(uniform_delay_ns(delay, jitter, 1 << 63), delay);
        assert_eq!(uniform_delay_ns(delay, 0, 12345), delay);
        assert_eq!(uniform_delay_ns(3 * ms, jitter, 0), 0, "saturates at 0");
        assert_eq!(uniform_delay_ns(u64::MAX, u64::MAX, u64::MAX), DELAY_CAP_NS);
        assert_eq!(uniform_delay_ns(0, u64::MAX, u64::MAX), MAX_JITTER_NS - 1);
        // Mean and variance of 1M draws: U[d-j, d+j) has sd j/√3.
        let n = 1_000_000;
        let mut s = rng::cpu_state(8, 0);
        let (mut sum, mut sum2) = (0.0f64, 0.0f64);
        for _ in 0..n {
            let r = rng::next_u64(&mut s);
            let d = uniform_delay_ns(delay, jitter, r);
            assert!(d >= delay - jitter && d < delay + jitter);
            let expect = (i128::from(delay - jitter)
                + ((u128::from(r) * u128::from(2 * jitter)) >> 64) as i128)
                as u64;
            assert_eq!(d, expect);
            let x = (d as f64 - delay as f64) / jitter as f64;
            sum += x;
            sum2 += x * x;
        }
        let mean = sum / n as f64;
        let var = sum2 / n as f64 - mean * mean;
        // 99%: mean ± 2.576·(1/√3)/√n; variance 1/3 ± 2.576·√((1/5 − 1/9)/n).
        assert!(
            mean.abs() < 2.576 * (1.0f64 / 3.0).sqrt() / (n as f64).sqrt(),
            "mean {mean}"
        );
        assert!(
            (var - 1.0 / 3.0).abs() < 2.576 * ((0.2f64 - 1.0 / 9.0) / n as f64).sqrt(),
            "var {var}"
        );
    }
}
