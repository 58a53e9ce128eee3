//! Burst-loss models: Gilbert-Elliott and the 4-state Markov model of tc netem.
//!
//! netem's `loss random P CORR` "correlation" does not produce bursts (it only
//! shrinks the variance of the random number, see the reference notes), so real
//! burst loss is modelled with a Markov chain whose state lives in a map value
//! and advances once per packet. Both step functions here are branch-light,
//! loop-free, allocation-free and cannot panic, so the same code is inlined into
//! the eBPF program and unit-tested on the host.
//!
//! Parameters are u32 thresholds in the [`crate::prob`] encoding, five per model
//! so they fit `Loss::p` of the map ABI. The state is a `u32` owned by the
//! caller; a zeroed map value is always a valid start state.
//!
//! The host-only [`gilbert_elliott_expectation`] and [`four_state_expectation`]
//! give the long-run loss rate and mean loss-run and gap-run lengths that a
//! parameter set should produce, computed from the chain itself, so the
//! controller can report configured against measured behaviour.

use crate::prob;

/// Gilbert-Elliott state: packets are usually received (loss probability 1-k).
pub const GE_GOOD: u32 = 0;
/// Gilbert-Elliott state: packets are usually lost (loss probability 1-h).
pub const GE_BAD: u32 = 1;

/// Index of `p` (GOOD→BAD transition probability) in the GE parameters.
pub const GE_P: usize = 0;
/// Index of `r` (BAD→GOOD transition probability).
pub const GE_R: usize = 1;
/// Index of `1-h` (loss probability in BAD).
pub const GE_ONE_MINUS_H: usize = 2;
/// Index of `1-k` (loss probability in GOOD).
pub const GE_ONE_MINUS_K: usize = 3;

/// 4-state model: packet received, outside a burst.
pub const FS_GAP_RECEIVED: u32 = 1;
/// 4-state model: packet received inside a burst.
pub const FS_BURST_RECEIVED: u32 = 2;
/// 4-state model: packet lost inside a burst.
pub const FS_LOST_IN_BURST: u32 = 3;
/// 4-state model: isolated loss (always followed by a received packet).
pub const FS_ISOLATED_LOSS: u32 = 4;

/// Index of `p13` (gap-received → lost-in-burst) in the 4-state parameters.
pub const FS_P13: usize = 0;
/// Index of `p31` (lost-in-burst → gap-received).
pub const FS_P31: usize = 1;
/// Index of `p32` (lost-in-burst → burst-received).
pub const FS_P32: usize = 2;
/// Index of `p23` (burst-received → lost-in-burst).
pub const FS_P23: usize = 3;
/// Index of `p14` (gap-received → isolated loss).
pub const FS_P14: usize = 4;

/// One packet through the Gilbert-Elliott model (netem `gemodel p r 1-h 1-k`).
///
/// `p = [p, r, 1-h, 1-k, unused]` as thresholds; `state` is [`GE_GOOD`] or
/// [`GE_BAD`] (any other value is treated as GOOD, so a zeroed map value starts
/// the chain in GOOD). Returns whether the packet is lost.
///
/// The packet's fate is decided by the state it arrives in (GOOD: lost with
/// 1-k, BAD: lost with 1-h), then the chain moves (GOOD→BAD with p, BAD→GOOD
/// with r). netem does the same, drawing the transition before the loss, which
/// is equivalent because the two draws are independent. Here both come from one
/// 64-bit random: the low 32 bits decide the loss, the high 32 the transition.
#[inline(always)]
pub fn gilbert_elliott(p: &[u32; 5], state: &mut u32, r: u64) -> bool {
    let loss_rand = r as u32;
    let move_rand = (r >> 32) as u32;
    match *state {
        GE_BAD => {
            let lost = prob::fires(p[GE_ONE_MINUS_H], loss_rand);
            if prob::fires(p[GE_R], move_rand) {
                *state = GE_GOOD;
            }
            lost
        }
        _ => {
            let lost = prob::fires(p[GE_ONE_MINUS_K], loss_rand);
            *state = if prob::fires(p[GE_P], move_rand) {
                GE_BAD
            } else {
                GE_GOOD
            };
            lost
        }
    }
}

/// The number of u32 values for which `prob::fires(threshold, x)` is true:
/// 0 for 0, `threshold + 1` otherwise (at most 2^32, so it needs a u64).
/// Interval widths built from it give each single transition exactly the
/// probability `prob::fires` would.
#[inline(always)]
fn width(threshold: u32) -> u64 {
    if threshold == 0 {
        0
    } else {
        u64::from(threshold) + 1
    }
}

/// One packet through the 4-state Markov model (netem `state p13 p31 p32 p23 p14`).
///
/// `p = [p13, p31, p32, p23, p14]` as thresholds; `state` is 1..=4 (see the
/// `FS_*` constants; 0 and any other value count as 1, gap-received, so a zeroed
/// map value is a valid start). Every packet makes one transition and is lost
/// iff the destination state is 3 (lost in burst) or 4 (isolated loss).
///
/// One uniform `x` (the low 32 bits of `r`) picks the transition. The range of
/// `x`, [0, 2^32), is cut into half-open intervals with widths `w(t)` = 0 if
/// t = 0 else t + 1 (the count of values `prob::fires` accepts), added in u64 and
/// saturating at 2^32 simply because `x` never reaches 2^32:
///
/// | from | destination and interval of `x`                                  |
/// |------|------------------------------------------------------------------|
/// | 1    | 4 if `x < w(p14)`; 3 if `w(p14) <= x < w(p14)+w(p13)`; else 1     |
/// | 2    | 3 if `x < w(p23)`; else 2                                        |
/// | 3    | 2 if `x < w(p32)`; 1 if `w(p32) <= x < w(p32)+w(p31)`; else 3     |
/// | 4    | 1 always                                                         |
///
/// The intervals tile the range with no gap and no overlap, so P(1→4) is exactly
/// the probability of `p14` alone, and P(1→3) that of `p13` unless the two add up
/// to more than 1 (the controller forbids it), in which case 1→3 gets what is
/// left. netem compared `a4 < rnd && rnd < a1 + a4`, which skips `rnd == a4`.
#[inline(always)]
pub fn four_state(p: &[u32; 5], state: &mut u32, r: u64) -> bool {
    let x = u64::from(r as u32);
    let next = match *state {
        FS_BURST_RECEIVED => {
            if x < width(p[FS_P23]) {
                FS_LOST_IN_BURST
            } else {
                FS_BURST_RECEIVED
            }
        }
        FS_LOST_IN_BURST => {
            let to_2 = width(p[FS_P32]);
            if x < to_2 {
                FS_BURST_RECEIVED
            } else if x < to_2.saturating_add(width(p[FS_P31])) {
                FS_GAP_RECEIVED
            } else {
                FS_LOST_IN_BURST
            }
        }
        FS_ISOLATED_LOSS => FS_GAP_RECEIVED,
        _ => {
            let to_4 = width(p[FS_P14]);
            if x < to_4 {
                FS_ISOLATED_LOSS
            } else if x < to_4.saturating_add(width(p[FS_P13])) {
                FS_LOST_IN_BURST
            } else {
                FS_GAP_RECEIVED
            }
        }
    };
    *state = next;
    next == FS_LOST_IN_BURST || next == FS_ISOLATED_LOSS
}

#[cfg(not(target_arch = "bpf"))]
pub use host::*;

/// Host-only helpers: parameter construction and the models' expectations.
#[cfg(not(target_arch = "bpf"))]
mod host {
    use super::*;

    /// GE parameters from fractions in [0, 1]: `[p, r, 1-h, 1-k, 0]`.
    pub fn gilbert_elliott_params(p: f64, r: f64, one_minus_h: f64, one_minus_k: f64) -> [u32; 5] {
        [
            prob::from_fraction(p),
            prob::from_fraction(r),
            prob::from_fraction(one_minus_h),
            prob::from_fraction(one_minus_k),
            0,
        ]
    }

    /// netem's `gemodel p` with the other values omitted: r = 1-p, 1-h = 100%,
    /// 1-k = 0 (tc-netem(8)).
    pub fn gilbert_elliott_netem_defaults(p: f64) -> [u32; 5] {
        gilbert_elliott_params(p, 1.0 - p, 1.0, 0.0)
    }

    /// 4-state parameters from fractions in [0, 1]: `[p13, p31, p32, p23, p14]`.
    pub fn four_state_params(p13: f64, p31: f64, p32: f64, p23: f64, p14: f64) -> [u32; 5] {
        [
            prob::from_fraction(p13),
            prob::from_fraction(p31),
            prob::from_fraction(p32),
            prob::from_fraction(p23),
            prob::from_fraction(p14),
        ]
    }

    /// netem's `state p13` with the other values omitted: p31 = 1-p13, p32 = 0,
    /// p23 = 1, p14 = 0 (tc-netem(8)).
    pub fn four_state_netem_defaults(p13: f64) -> [u32; 5] {
        four_state_params(p13, 1.0 - p13, 0.0, 1.0, 0.0)
    }

    /// What a loss model should produce in the long run.
    #[derive(Clone, Copy, Debug, PartialEq)]
    pub struct LossExpectation {
        /// Long-run fraction of packets lost.
        pub loss_rate: f64,
        /// Mean length of a run of consecutive lost packets (a burst). 0 when
        /// nothing is ever lost; infinite when losses, once started, never end.
        pub mean_loss_run: f64,
        /// Mean length of a run of consecutive received packets. 0 when every
        /// packet is lost; infinite when nothing is lost.
        pub mean_gap_run: f64,
    }

    /// The exact probability of an interval `[lo, hi)` of u32 values, with `lo`
    /// and `hi` clamped to 2^32 as the step functions effectively do.
    fn interval(lo: u64, hi: u64) -> f64 {
        const FULL: u64 = 1 << 32;
        (hi.min(FULL) - lo.min(FULL)) as f64 / FULL as f64
    }

    /// The long-run state distribution of a finite chain started in state 0
    /// (row-stochastic matrix `t`), as the limit of the lazy chain (I + T)/2.
    ///
    /// The lazy chain has the same stationary distributions as T and is
    /// aperiodic, so its powers converge even for periodic chains (1→4→1→4…)
    /// and, for a chain that is not irreducible, row 0 of the limit is the
    /// long-run (Cesàro) distribution from the start state, which is what a
    /// zeroed map value experiences. 64 squarings are 2^64 steps: far past the
    /// mixing time of any chain with thresholds ≥ 2^-32.
    fn long_run<const N: usize>(t: &[[f64; N]; N]) -> [f64; N] {
        let mut m = [[0.0; N]; N];
        for (i, (row, t_row)) in m.iter_mut().zip(t).enumerate() {
            for (j, (v, &tv)) in row.iter_mut().zip(t_row).enumerate() {
                *v = 0.5 * tv + if i == j { 0.5 } else { 0.0 };
            }
        }
        for _ in 0..64 {
            let mut sq = [[0.0; N]; N];
            for (sq_row, m_row) in sq.iter_mut().zip(&m) {
                for (&mik, m_k) in m_row.iter().zip(&m) {
                    for (v, &mkj) in sq_row.iter_mut().zip(m_k) {
                        *v += mik * mkj;
                    }
                }
                // Renormalise each row so rounding cannot drift over 64 squarings.
                let s: f64 = sq_row.iter().sum();
                for v in sq_row.iter_mut() {
                    *v /= s;
                }
            }
            m = sq;
        }
        m[0]
    }

    /// Mean run lengths of a stationary binary process from P(lost) and
    /// P(received then lost) = P(lost then received): each loss run starts with
    /// exactly one received→lost step, so runs per packet = `p01` and the mean
    /// run is P(lost) / p01 (and P(received) / p01 for gaps).
    fn expectation(loss_rate: f64, p01: f64) -> LossExpectation {
        let run = |mass: f64| {
            if mass <= 0.0 {
                0.0
            } else if p01 <= 0.0 {
                f64::INFINITY
            } else {
                mass / p01
            }
        };
        LossExpectation {
            loss_rate,
            mean_loss_run: run(loss_rate),
            mean_gap_run: run(1.0 - loss_rate),
        }
    }

    /// Long-run behaviour of [`gilbert_elliott`] from a zeroed state.
    ///
    /// With probabilities p, r and per-state loss l_G = 1-k, l_B = 1-h (each the
    /// exact probability of its threshold), the chain G↔B has stationary
    /// π_B = p/(p+r), π_G = r/(p+r) (when p+r > 0; otherwise it stays in GOOD),
    /// so loss = π_G·l_G + π_B·l_B. Fates are independent given the states, so
    /// P(received, then lost) = Σ_s π_s (1-l_s) Σ_s' T(s,s') l_s', and the mean
    /// loss run is loss / that, the mean gap run (1-loss) / that. For simple
    /// Gilbert (1-h = 1, 1-k = 0) this reduces to loss = p/(p+r), mean burst
    /// 1/r, mean gap 1/p. With general h, k the runs are not geometric, but the
    /// means above are exact.
    pub fn gilbert_elliott_expectation(p: &[u32; 5]) -> LossExpectation {
        let pr = prob::to_fraction(p[GE_P]);
        let rr = prob::to_fraction(p[GE_R]);
        let loss = [
            prob::to_fraction(p[GE_ONE_MINUS_K]),
            prob::to_fraction(p[GE_ONE_MINUS_H]),
        ];
        let t = [[1.0 - pr, pr], [rr, 1.0 - rr]];
        let pi = long_run(&t);
        let loss_rate = pi[0] * loss[0] + pi[1] * loss[1];
        let mut p01 = 0.0;
        for s in 0..2 {
            let next_loss: f64 = (0..2).map(|s2| t[s][s2] * loss[s2]).sum();
            p01 += pi[s] * (1.0 - loss[s]) * next_loss;
        }
        expectation(loss_rate, p01)
    }

    /// The transition matrix [`four_state`] realises, states 1..=4 at indices
    /// 0..=3, with the exact interval probabilities (saturation included).
    pub fn four_state_matrix(p: &[u32; 5]) -> [[f64; 4]; 4] {
        let w14 = width(p[FS_P14]);
        let w13 = width(p[FS_P13]);
        let w32 = width(p[FS_P32]);
        let w31 = width(p[FS_P31]);
        let w23 = width(p[FS_P23]);
        let p14 = interval(0, w14);
        let p13 = interval(w14, w14 + w13);
        let p32 = interval(0, w32);
        let p31 = interval(w32, w32 + w31);
        let p23 = interval(0, w23);
        [
            [1.0 - p13 - p14, 0.0, p13, p14],
            [0.0, 1.0 - p23, p23, 0.0],
            [p31, p32, 1.0 - p31 - p32, 0.0],
            [1.0, 0.0, 0.0, 0.0],
        ]
    }

    /// Long-run behaviour of [`four_state`] from a zeroed state.
    ///
    /// For an irreducible chain the balance equations give, relative to π1:
    /// π4 = p14·π1, π3 = (p13/p31)·π1, π2 = (p13·p32/(p31·p23))·π1, normalised
    /// to sum to 1 (the code uses the general long-run limit, which equals this
    /// and also covers reducible parameter sets such as p31 = 0). A packet is
    /// lost iff the state it moves to is 3 or 4, so loss = π3 + π4, and the
    /// received→lost steps per packet are p01 = π1·(p13 + p14) + π2·p23, giving
    /// mean loss run (π3+π4)/p01 and mean gap run (π1+π2)/p01.
    pub fn four_state_expectation(p: &[u32; 5]) -> LossExpectation {
        let t = four_state_matrix(p);
        let pi = long_run(&t);
        let loss_rate = pi[2] + pi[3];
        let p01 = pi[0] * (t[0][2] + t[0][3]) + pi[1] * t[1][2];
        expectation(loss_rate, p01)
    }
}

#[cfg(test)]
#[path = "loss_tests.rs"]
mod tests;
