//! Duplicates (tc egress only): a clone of the packet is sent out of the same
//! device with `bpf_clone_redirect`. The clone passes through the program
//! again, synchronously and on this CPU; a per-CPU flag (`IMPAIR_DUP`) tells
//! that nested run to let it go untouched, so a duplicate is never
//! duplicated, dropped or corrupted again.
use aya_ebpf::programs::TcContext;
use impair_common::DataPathError;

use crate::{maps::DUPLICATING, Result};

/// Sends a clone of the packet out of the same device.
#[inline(always)]
pub fn send_duplicate(ctx: &TcContext) -> Result<()> {
    let flag = DUPLICATING.get_ptr_mut(0).ok_or(DataPathError::MapLookup)?;
    // SAFETY: this CPU's per-CPU value; the nested run reads it on this CPU.
    unsafe { *flag = 1 };
    // SAFETY: reading a field of the context the kernel passed us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let r = ctx.clone_redirect(ifindex, 0);
    // SAFETY: as above.
    unsafe { *flag = 0 };
    r.map(|_| ()).map_err(|_| DataPathError::CloneRedirect)
}

/// Whether this run is the clone `send_duplicate` just sent (and clears the
/// flag).
#[inline(always)]
pub fn is_duplicate() -> bool {
    let Some(flag) = DUPLICATING.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's per-CPU value; programs do not migrate while running.
    unsafe {
        let dup = *flag != 0;
        *flag = 0;
        dup
    }
}
