//! The per-packet pipeline, top to bottom: a duplicate in flight passes; the
//! lease; the active rule set; parse the packet and find its rule
//! (`classify`); send a super-packet to be split (`segment`); apply the rule (`apply`, which calls `timing`, `police`,
//! `mutate` and `duplicate`). Every step that can fail returns its cause
//! ([`DataPathError`]); [`decide`] counts it and passes the packet (fail open).
use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use impair_common::{
    DataPathError, GlobalCounters, RuleSetHeader, CONTROL_ACTIVE_SLOT, CONTROL_LEASE_DEADLINE_NS,
    LEASE_FOREVER,
};

use crate::{
    apply::apply,
    capture::{self, Snap},
    classify::{first_match, parse_key},
    duplicate::{is_duplicate, release},
    hook::{Hook, Verdict},
    maps::{CONTROL, GLOBAL_COUNTERS, RULES, RULESETS},
    pkt::Packet,
    segment::to_segmenter,
    Result,
};

/// Headers the parser may need in linear data: Ethernet, two VLAN tags, IPv6
/// with a few extension headers, and the L4 ports.
const PARSE_BYTES: u32 = 128;

/// Decides what happens to one packet. Errors pass the packet (fail open)
/// and are counted in `GlobalCounters::errors` and by cause.
#[inline(always)]
pub fn decide<H: Hook + Snap>(h: &H) -> Verdict {
    // Only egress sends duplicates, and only its own nested run sees them.
    if H::EGRESS && is_duplicate() {
        return Verdict::Pass;
    }
    let Some(g) = GLOBAL_COUNTERS.get_ptr_mut(0) else {
        return Verdict::Pass;
    };
    // SAFETY: this CPU's per-CPU value; programs do not migrate while running.
    let g = unsafe { &mut *g };
    g.packets += 1;
    match try_decide(h, g) {
        Ok(v) => v,
        Err(e) => {
            g.count_error(e);
            Verdict::Pass
        }
    }
}

#[inline(always)]
fn try_decide<H: Hook + Snap>(h: &H, g: &mut GlobalCounters) -> Result<Verdict> {
    if lease_expired()? {
        g.lease_expired += 1;
        return Ok(Verdict::Pass);
    }
    let (slot, header) = active_rule_set()?;
    let (count, set_flags) = (header.rule_count, header.flags);
    if count == 0 {
        g.unmatched += 1;
        return Ok(Verdict::Pass);
    }

    let pkt = h.packet();
    pkt.linearize(PARSE_BYTES);
    let len = pkt.frame_len();
    let key = parse_key(h, set_flags)?;
    let Some(idx) = first_match(slot, count, key)? else {
        g.unmatched += 1;
        return Ok(Verdict::Pass);
    };
    let rule = RULES.get(idx).ok_or(DataPathError::MapLookup)?;
    // A super-packet its rule decides per packet: split first (`segment`);
    // its wire packets come back through this hook and are counted then.
    if let Some(ctx) = h.skb() {
        if let Some(action) = to_segmenter(ctx, rule, pkt.gso_segs()) {
            return Ok(Verdict::Redirected(action));
        }
    }
    // The record of impaired packets: off unless a reader set its cost.
    let capture = capture::Pending::start(idx);
    let verdict = apply(h, key, rule, idx, len)?;
    if let Some(p) = capture {
        p.record(h, idx, len);
    }
    match verdict {
        Verdict::Held => release(h),
        v => Ok(v),
    }
}

/// Whether the controller's lease has run out (then every packet passes).
#[inline(always)]
pub fn lease_expired() -> Result<bool> {
    let deadline = *CONTROL
        .get(CONTROL_LEASE_DEADLINE_NS)
        .ok_or(DataPathError::MapLookup)?;
    if deadline == LEASE_FOREVER {
        return Ok(false);
    }
    // The coarse clock is CLOCK_MONOTONIC as of the last tick (the
    // controller's deadline is in the same clock): a lease measured in
    // seconds may end a tick late, and every packet is spared a clock read.
    // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    Ok(now > deadline)
}

/// The active slot (0 or 1) and its header.
#[inline(always)]
fn active_rule_set() -> Result<(u32, &'static RuleSetHeader)> {
    let active = *CONTROL
        .get(CONTROL_ACTIVE_SLOT)
        .ok_or(DataPathError::MapLookup)?;
    let slot = (active as u32) & 1;
    let header = RULESETS.get(slot).ok_or(DataPathError::MapLookup)?;
    Ok((slot, header))
}
