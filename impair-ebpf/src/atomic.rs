//! 64-bit compare-and-swap on map values.
//!
//! Rust's BPF targets leave out compare-and-swap (`atomic_cas: false`, for
//! kernels and LLVM CPUs older than v3), so `AtomicU64::compare_exchange`
//! does not exist there. The intrinsic still lowers to the BPF_CMPXCHG
//! instruction, which every kernel impair supports (5.12+) accepts on map
//! values.
use core::intrinsics::{atomic_cxchg, AtomicOrdering};

/// Reads `*slot` atomically: an aligned 8-byte load is a single BPF
/// instruction (LLVM only selects `atomic_load` for CPU v4's load-acquire).
///
/// # Safety
/// `slot` points to a valid, 8-byte-aligned map value.
#[inline(always)]
pub unsafe fn load(slot: *mut u64) -> u64 {
    // SAFETY: the caller's contract.
    unsafe { core::ptr::read_volatile(slot) }
}

/// Replaces `*slot` with `new` if it still holds `old`; `Err(seen)` if
/// another CPU changed it first.
///
/// # Safety
/// As for [`load`].
#[inline(always)]
pub unsafe fn compare_exchange(slot: *mut u64, old: u64, new: u64) -> Result<u64, u64> {
    // SAFETY: the caller's contract.
    let (seen, ok) = unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::Relaxed }>(slot, old, new)
    };
    if ok {
        Ok(seen)
    } else {
        Err(seen)
    }
}

/// Compare-and-swap attempts before a contended update gives up. Each failure
/// means another CPU moved the value forward meanwhile; four in a row needs
/// four packets of the same flow or rule on other CPUs within a few
/// nanoseconds, and the verifier needs a bound.
pub const CAS_ATTEMPTS: u32 = 4;

/// Raises `*slot` to at least `t` with a compare-and-swap (several CPUs may
/// carry one flow: RPS, a migrating sender) and returns the departure time
/// this packet gets: `max(*slot, t)`. Two CPUs can never hand out departure
/// times that go backwards in the order of their successful swaps.
///
/// `slot` must be a valid, 8-byte-aligned map value that lives as long as the
/// program runs, accessed only atomically (a map value pointer from a lookup
/// is all of these).
#[inline(always)]
pub fn fetch_max(slot: *mut u64, t: u64) -> u64 {
    // SAFETY: `slot` is a map value as the contract above requires.
    let mut cur = unsafe { load(slot) };
    for _ in 0..CAS_ATTEMPTS {
        if cur >= t {
            return cur;
        }
        // SAFETY: as above.
        match unsafe { compare_exchange(slot, cur, t) } {
            Ok(_) => return t,
            Err(seen) => cur = seen,
        }
    }
    if cur > t {
        cur
    } else {
        t
    }
}
