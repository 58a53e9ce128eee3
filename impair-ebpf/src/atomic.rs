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
