//! This CPU's random generator: `impair_common::rng` (SplitMix64) over the
//! per-CPU state in `IMPAIR_RNG`, seeded by the controller.
use crate::maps::RNG;

/// The next 64 bits of this CPU's generator; 0 if the map is unreadable.
#[inline(always)]
pub fn random_u64() -> u64 {
    let Some(state) = RNG.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU array value of this CPU; programs do not migrate while
    // running, so nothing else touches it concurrently.
    let state = unsafe { &mut *state };
    impair_common::rng::next_u64(state)
}
