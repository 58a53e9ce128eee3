//! The data path's random numbers: SplitMix64, one state per CPU.
//!
//! SplitMix64 is one add and two multiply-xorshift rounds: cheap enough for
//! every packet, statistically strong (it passes BigCrush), and its state is a
//! single u64 the controller seeds, so a run is reproducible from `--seed`.
//! `bpf_get_prandom_u32()` cannot be seeded, which is why it is not used.

/// The SplitMix64 increment (2^64 / golden ratio).
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Advances `state` and returns the next 64 random bits.
#[inline(always)]
pub fn next_u64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(GOLDEN_GAMMA);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The starting state for CPU `cpu` of a run seeded with `seed`: distinct,
/// decorrelated streams per CPU derived from one user-visible seed.
pub fn cpu_state(seed: u64, cpu: u32) -> u64 {
    let mut s = seed ^ (u64::from(cpu) + 1).wrapping_mul(GOLDEN_GAMMA);
    next_u64(&mut s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_reference_splitmix64_outputs() {
        // Reference values of SplitMix64 seeded with 1234567 (Vigna's splitmix64.c).
        let mut s = 1234567u64;
        let got = [next_u64(&mut s), next_u64(&mut s), next_u64(&mut s)];
        assert_eq!(
            got,
            [
                6457827717110365317,
                3203168211198807973,
                9817491932198370423
            ]
        );
    }

    #[test]
    fn cpu_streams_differ() {
        assert_ne!(cpu_state(7, 0), cpu_state(7, 1));
        assert_eq!(cpu_state(7, 3), cpu_state(7, 3));
    }
}
