//! The record of impaired packets (`impair_common::capture`): while the
//! controller has set a record cost in `CONTROL`, the pipeline snapshots the
//! matched rule's counters before `apply`, and [`record`] writes what moved
//! (the rule's decision) with the packet's first bytes to the ring buffer,
//! within a per-CPU budget. Everything here runs only for matched packets
//! while capture is on; otherwise the pipeline pays one map load and one
//! branch ([`Pending::start`]).
use core::ptr::addr_of_mut;

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_skb_load_bytes, bpf_xdp_load_bytes},
    macros::map,
    maps::{PerCpuArray, RingBuf},
    programs::{TcContext, XdpContext},
};
use impair_common::{
    capture::{self, Counters, Record, RING_BYTES, SNAP_BYTES},
    RuleCounters, CONTROL_CAPTURE_COST_NS,
};

use crate::{
    hook::{TcEgress, TcIngress, Xdp},
    maps::{CONTROL, RULE_COUNTERS},
};

#[map(name = "IMPAIR_CAPTURE")]
pub static RING: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Per-CPU theoretical arrival time of the budget (`capture::take_budget`).
#[map(name = "IMPAIR_CAP_TAT")]
pub static BUDGET: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "IMPAIR_CAP_CNT")]
pub static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);

/// What a packet's record needs from before `apply`: the matched rule's
/// counters (this CPU's), the time of the decision and the budget's cost.
pub struct Pending {
    before: RuleCounters,
    decided_ns: u64,
    cost_ns: u64,
}

impl Pending {
    /// `None` while capture is off (`CONTROL[CONTROL_CAPTURE_COST_NS]` is 0):
    /// all a matched packet pays then is this load and branch.
    #[inline(always)]
    pub fn start(idx: u32) -> Option<Self> {
        let cost_ns = *CONTROL.get(CONTROL_CAPTURE_COST_NS)?;
        if cost_ns == 0 {
            return None;
        }
        let before = *RULE_COUNTERS.get(idx)?;
        // SAFETY: bpf_ktime_get_ns has no preconditions.
        let decided_ns = unsafe { bpf_ktime_get_ns() };
        Some(Self {
            before,
            decided_ns,
            cost_ns,
        })
    }

    /// Records what rule `idx` did to the packet of `len` bytes, if it
    /// impaired it.
    #[inline(always)]
    pub fn record<H: Snap>(self, h: &H, idx: u32, len: u32) {
        record(h, idx, &self.before, len, self.decided_ns, self.cost_ns);
    }
}

/// Where a hook's packet bytes are copied from, and its [`capture::hook`] value.
pub trait Snap {
    const HOOK: u32;
    /// Copies the first `n` bytes (1..=SNAP_BYTES) of the packet to `dst`.
    /// Returns whether it could.
    fn snap(&self, dst: *mut u8, n: u32) -> bool;
    /// The departure time set on the packet (tc egress), else 0.
    fn departure_ns(&self) -> u64 {
        0
    }
}

#[inline(always)]
fn skb_snap(ctx: &TcContext, dst: *mut u8, n: u32) -> bool {
    // SAFETY: `dst` points at `n` writable bytes of a reserved ring record
    // (`n` is at most SNAP_BYTES, the record's data array).
    unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), 0, dst.cast(), n) == 0 }
}

impl Snap for TcEgress<'_> {
    const HOOK: u32 = capture::hook::TC_EGRESS;
    #[inline(always)]
    fn snap(&self, dst: *mut u8, n: u32) -> bool {
        skb_snap(self.0, dst, n)
    }
    #[inline(always)]
    fn departure_ns(&self) -> u64 {
        // SAFETY: reading a field of the program's own context.
        unsafe { (*self.0.skb.skb).tstamp }
    }
}

impl Snap for TcIngress<'_> {
    const HOOK: u32 = capture::hook::TC_INGRESS;
    #[inline(always)]
    fn snap(&self, dst: *mut u8, n: u32) -> bool {
        skb_snap(self.0, dst, n)
    }
}

impl Snap for Xdp<'_> {
    const HOOK: u32 = capture::hook::XDP;
    #[inline(always)]
    fn snap(&self, dst: *mut u8, n: u32) -> bool {
        let ctx: &XdpContext = self.0;
        // SAFETY: as in `skb_snap`; bpf_xdp_load_bytes (Linux 5.18) checks
        // the frame's bounds itself.
        unsafe { bpf_xdp_load_bytes(ctx.ctx, 0, dst.cast(), n) == 0 }
    }
}

/// Records the decision rule `idx` (`IMPAIR_RULES` index) made on a packet
/// of `len` bytes, decided at `decided_ns`, if it impaired it: `before` is
/// the rule's counters before `apply`, `cost_ns` the budget's cost.
#[inline(always)]
fn record<H: Snap>(
    h: &H,
    idx: u32,
    before: &RuleCounters,
    len: u32,
    decided_ns: u64,
    cost_ns: u64,
) {
    let Some(after) = RULE_COUNTERS.get(idx) else {
        return;
    };
    let actions = capture::actions_between(before, after);
    if actions == 0 {
        return;
    }
    let Some(c) = COUNTERS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's per-CPU value; programs do not migrate while running.
    let c = unsafe { &mut *c };
    let Some(tat) = BUDGET.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: as above.
    let tat = unsafe { &mut *tat };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if !capture::take_budget(tat, now, cost_ns) {
        c.over_budget += 1;
        return;
    }
    let Some(mut entry) = RING.reserve::<Record>(0) else {
        c.ring_full += 1;
        return;
    };
    let r = entry.as_mut_ptr();
    // 1..=SNAP_BYTES, in a form every verifier bounds: the helper's size
    // must be provably at least 1. Through a volatile stack slot, LLVM
    // cannot fold the mask and the +1 away (it did, and 6.1's verifier then
    // saw a size that might be 0); the verifier bounds what follows.
    let m = len.min(SNAP_BYTES).max(1) - 1;
    // SAFETY: a read of a local we own.
    let m = unsafe { core::ptr::read_volatile(&m) };
    let n = (m & (SNAP_BYTES - 1)) + 1;
    // SAFETY: `r` is the reserved record, valid for writes until submitted;
    // each field is written through a raw pointer (the memory is uninit).
    unsafe {
        let ok = h.snap(addr_of_mut!((*r).data).cast(), n);
        addr_of_mut!((*r).decided_ns).write(decided_ns);
        addr_of_mut!((*r).departure_ns).write(h.departure_ns());
        addr_of_mut!((*r).rule).write(idx % impair_common::MAX_RULES);
        addr_of_mut!((*r).actions).write(actions);
        addr_of_mut!((*r).hook).write(H::HOOK);
        addr_of_mut!((*r).frame_len).write(len);
        addr_of_mut!((*r).snap_len).write(if ok { n.min(len) } else { 0 });
        addr_of_mut!((*r)._pad).write(0);
    }
    entry.submit(0);
    c.recorded += 1;
}
