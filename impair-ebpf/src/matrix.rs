//! Latency matrices (`impair_common::matrix`): the destination's entry in
//! the rule's matrix, its loss, and its delay and rate after the rule's.
//! Only rules with `rule_flags::MATRIX` come here, so a rule set without a
//! matrix never touches the trie.
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::maps::lpm_trie::Key;
use impair_common::{
    dist, edt,
    matrix::{MatrixAddr, MatrixEntry, FULL_PREFIX_LEN},
    prob, PacketKey, Rule, POLICE_BURST_DEFAULT_NS,
};

use crate::{
    maps::MATRIX,
    rng::random_u64,
    timing::{reserve_departure, Wire},
};

/// The entry of the most specific prefix that holds the packet's
/// destination in rule `idx`'s matrix, counted (one packet of `len` bytes);
/// `None` when no prefix holds it (the packet gets the rule alone) or the
/// frame is not IP.
#[inline(always)]
pub fn lookup(idx: u32, key: &PacketKey, len: u32) -> Option<*mut MatrixEntry> {
    let data = MatrixAddr::of_packet(idx, key)?;
    let e = MATRIX.get(Key::new(FULL_PREFIX_LEN, data))?;
    // The value is shared by all CPUs and written only through atomics here
    // (the controller writes it before the slot becomes active).
    let e = (e as *const MatrixEntry).cast_mut();
    // SAFETY: `e` points at a live trie value (8-aligned u64 fields) for
    // the program's run; the counters are only ever added to atomically.
    unsafe {
        add(&raw mut (*e).packets, 1);
        add(&raw mut (*e).bytes, u64::from(len));
    }
    Some(e)
}

/// Whether the entry's loss drops the packet (counted in the entry).
#[inline(always)]
pub fn lost(e: *mut MatrixEntry) -> bool {
    // SAFETY: a live trie value from `lookup`; read-only field.
    let p = unsafe { (*e).loss_u32 };
    if p == 0 || !prob::fires(p, random_u64() as u32) {
        return false;
    }
    // SAFETY: as above; counters are added to atomically.
    unsafe { add(&raw mut (*e).dropped_loss, 1) };
    true
}

/// The departure after the entry's delay (uniform jitter) and rate, for a
/// packet the rule lets leave at `t`; `None`: over the entry's queue limit
/// (counted in the entry).
#[inline(always)]
pub fn depart(e: *mut MatrixEntry, rule: &Rule, wire: Wire, t: u64) -> Option<u64> {
    // SAFETY: a live trie value from `lookup`; parameters are read-only.
    let (delay, jitter, rate, limit) = unsafe {
        (
            (*e).delay_ns,
            (*e).jitter_ns,
            (*e).rate_ps_per_byte,
            (*e).queue_limit_ns,
        )
    };
    let t = t + dist::uniform_delay_ns(delay, jitter, random_u64());
    if rate == 0 {
        return Some(t);
    }
    let tx = edt::tx_time_ns(wire_bytes(rule, wire), rate);
    let d = reserve_departure(rate_state(e), t, tx, limit);
    if d.is_none() {
        // SAFETY: as above.
        unsafe { add(&raw mut (*e).dropped_queue, 1) };
    }
    d
}

/// Receive side: whether the entry's rate (a policer, like the rule's)
/// admits the packet at `now`.
#[inline(always)]
pub fn police(e: *mut MatrixEntry, rule: &Rule, wire: Wire, now: u64) -> bool {
    // SAFETY: a live trie value from `lookup`; parameters are read-only.
    let (rate, limit) = unsafe { ((*e).rate_ps_per_byte, (*e).queue_limit_ns) };
    if rate == 0 {
        return true;
    }
    let tx = edt::tx_time_ns(wire_bytes(rule, wire), rate);
    let configured = if limit == 0 {
        POLICE_BURST_DEFAULT_NS
    } else {
        limit
    };
    let burst = if configured < tx { tx } else { configured };
    let ok = reserve_departure(rate_state(e), now, tx, burst).is_some();
    if !ok {
        // SAFETY: as above.
        unsafe { add(&raw mut (*e).dropped_queue, 1) };
    }
    ok
}

/// The entry's rate state word.
#[inline(always)]
fn rate_state(e: *mut MatrixEntry) -> *mut u64 {
    // SAFETY: a field of a live trie value; no reference is formed.
    unsafe { &raw mut (*e).rate_state_ns }
}

/// The packet's bytes on the destination's link: the rule's framing
/// (overhead, cells) per wire packet.
#[inline(always)]
fn wire_bytes(rule: &Rule, wire: Wire) -> u64 {
    edt::gso_wire_bytes(
        wire.len,
        wire.segs,
        wire.hdr_len,
        rule.overhead_bytes,
        rule.cell_bytes,
        rule.cell_overhead_bytes,
    )
}

/// Adds `v` to `*p` atomically (BPF_ATOMIC add).
///
/// # Safety
/// `p` is a valid, 8-aligned `u64` in a map value.
#[inline(always)]
unsafe fn add(p: *mut u64, v: u64) {
    // SAFETY: the caller's contract.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}
