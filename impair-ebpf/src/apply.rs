//! Applying a packet's rule, in netem's order: the MTU blackhole, a
//! blackhole, the duplicate decision, loss (or an ECN mark), then at tc
//! egress the departure time (`timing`) and the clean duplicate
//! (`duplicate`), or on the receive side the rate policer (`police`), and
//! last corruption of the original (`mutate`).
use aya_ebpf::helpers::bpf_ktime_get_ns;
use impair_common::{
    loss, loss_model, prob, rule_flags, series::SERIES_LOSS, wire_segments, DataPathError,
    PacketKey, Rule,
};

use crate::{
    duplicate::send_duplicate,
    hook::{Hook, Verdict},
    maps::{LOSS_STATE, RULE_COUNTERS},
    matrix,
    mutate::{corrupt, mark_ce},
    pkt::Packet,
    police::police,
    rng::random_u64,
    series,
    timing::{schedule, set_departure, Schedule, Wire},
    Result,
};

/// What rule `idx` (`IMPAIR_RULES` index) does to a packet of `len` bytes
/// whose headers are `key`; counts it in the rule's counters, in skbs and in
/// wire packets (a GSO/GRO super-packet is `gso_segs` of them, each with its
/// own copy of the headers up to the L4 payload).
#[inline(always)]
pub fn apply<H: Hook>(h: &H, key: &PacketKey, rule: &Rule, idx: u32, len: u32) -> Result<Verdict> {
    let c = RULE_COUNTERS
        .get_ptr_mut(idx)
        .ok_or(DataPathError::MapLookup)?;
    // SAFETY: this CPU's per-CPU value; programs do not migrate while running.
    let c = unsafe { &mut *c };
    let pkt = h.packet();
    let wire = Wire {
        len,
        segs: wire_segments(pkt.gso_segs()),
        hdr_len: u32::from(key.payload_offset),
    };
    c.count_match(len, wire.segs, wire.hdr_len);
    let segs = u64::from(wire.segs);

    if rule.mtu_bytes != 0 && key.ip_version != 0 && len - u32::from(key.l3_offset) > rule.mtu_bytes
    {
        c.dropped_mtu += 1;
        c.dropped_wire_packets += segs;
        return Ok(Verdict::Drop);
    }
    if rule.flags & rule_flags::BLACKHOLE != 0 {
        c.dropped_loss += 1;
        c.dropped_wire_packets += segs;
        return Ok(Verdict::Drop);
    }
    // The packet's first random word, drawn only for a rule that decides
    // something with it (a rule with no loss and no duplicates draws
    // nothing). Whether it is drawn depends on the rule alone, never on the
    // hook: the duplicate decision reads the same word at every hook, so a
    // seed gives the same loss decisions wherever the rule runs.
    let r = if rule.loss.model != loss_model::NONE
        || rule.duplicate_u32 != 0
        || rule.flags & rule_flags::LOSS_SERIES != 0
    {
        random_u64()
    } else {
        0
    };
    let duplicate = H::EGRESS && prob::fires(rule.duplicate_u32, (r >> 32) as u32);
    let lost_now = if rule.flags & rule_flags::LOSS_SERIES != 0 {
        // The loss series' value for now replaces the rule's loss.
        match series::value(idx, SERIES_LOSS, clock_ns())? {
            Some(p) => prob::fires(p, r as u32),
            None => lost(rule, idx, r)?,
        }
    } else {
        lost(rule, idx, r)?
    };
    if lost_now {
        if rule.flags & rule_flags::ECN != 0 && key.ecn != 0 {
            mark_ce(pkt, key)?;
            c.ecn_marked += 1;
        } else if duplicate {
            // netem: when both fire, one copy goes out: this one, as the duplicate.
            c.dropped_loss += 1;
            c.duplicated += 1;
            return Ok(Verdict::Pass);
        } else {
            c.dropped_loss += 1;
            c.dropped_wire_packets += segs;
            return Ok(Verdict::Drop);
        }
    }
    // The destination's entry in the rule's latency matrix: looked up only
    // for rules that have one; its loss follows the rule's.
    let dest = if rule.flags & rule_flags::MATRIX != 0 {
        matrix::lookup(idx, key, len)
    } else {
        None
    };
    if let Some(e) = dest {
        if matrix::lost(e) {
            c.dropped_loss += 1;
            c.dropped_wire_packets += segs;
            return Ok(Verdict::Drop);
        }
    }
    // Whether fq will hold the packet (its departure is later than now).
    let mut held = false;
    if let Some(ctx) = h.skb() {
        // tc egress: a queue (fq) follows, so the packet gets a departure time.
        if rule.delay_ns | rule.jitter_ns | rule.rate_ps_per_byte != 0
            || dest.is_some()
            || rule.flags & (rule_flags::DELAY_SERIES | rule_flags::RATE_TRACE) != 0
        {
            let now = clock_ns();
            match schedule(ctx, key, rule, idx, wire, now)? {
                Schedule::Drop => {
                    c.dropped_queue += 1;
                    c.dropped_wire_packets += segs;
                    return Ok(Verdict::Drop);
                }
                Schedule::Now => c.reordered += 1,
                Schedule::At(t, trace_bytes) => {
                    let t = match dest {
                        Some(e) => match matrix::depart(e, rule, wire, t) {
                            Some(t) => t,
                            None => {
                                c.dropped_queue += 1;
                                c.dropped_wire_packets += segs;
                                return Ok(Verdict::Drop);
                            }
                        },
                        None => t,
                    };
                    set_departure(ctx, t)?;
                    if t > now {
                        c.delayed += 1;
                        held = true;
                    }
                    // What the rate trace delivered (0 without one).
                    c.trace_bytes += trace_bytes;
                }
            }
        }
        // The duplicate is cloned after the departure time is set, so it leaves
        // with the original.
        if duplicate {
            send_duplicate(ctx)?;
            c.duplicated += 1;
        }
    } else {
        // One clock read for both policers (the rule's and the
        // destination's), none for a rule without a rate or matrix entry.
        let now = if rule.rate_ps_per_byte != 0 || dest.is_some() {
            clock_ns()
        } else {
            0
        };
        if rule.rate_ps_per_byte != 0 && !police(rule, idx, wire, now)? {
            c.dropped_queue += 1;
            c.dropped_wire_packets += segs;
            return Ok(Verdict::Drop);
        }
        if let Some(e) = dest {
            // The destination's rate, in series behind the rule's.
            if !matrix::police(e, rule, wire, now) {
                c.dropped_queue += 1;
                c.dropped_wire_packets += segs;
                return Ok(Verdict::Drop);
            }
        }
    }
    // No draw for a rule that never corrupts (most rules): the generator's
    // state stays in place and the packet is spared a map access.
    if rule.corrupt_u32 != 0
        && prob::fires(rule.corrupt_u32, random_u64() as u32)
        && corrupt(pkt, key, len, rule.flags)?
    {
        c.corrupted += 1;
    }
    c.passed += 1;
    Ok(if held { Verdict::Held } else { Verdict::Pass })
}

/// CLOCK_MONOTONIC now, in ns: the dearest step of the paths that need it
/// (a TSC read, about 60 ns in a virtual machine that traps it), so each
/// path reads it once (a rule with a loss series reads it once more for the
/// series: carrying that reading to the departure time cost the verifier
/// 14,000 more instructions at tc egress, for a rare kind of rule).
#[inline(always)]
fn clock_ns() -> u64 {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// Whether the rule's loss process drops this packet; `r` is the packet's
/// first random word (Bernoulli reads its low half).
#[inline(always)]
fn lost(rule: &Rule, idx: u32, r: u64) -> Result<bool> {
    Ok(match rule.loss.model {
        loss_model::BERNOULLI => prob::fires(rule.loss.p[0], r as u32),
        loss_model::GILBERT_ELLIOTT => {
            let st = LOSS_STATE
                .get_ptr_mut(idx)
                .ok_or(DataPathError::MapLookup)?;
            // SAFETY: this CPU's per-CPU value; programs do not migrate.
            let st = unsafe { &mut *st };
            loss::gilbert_elliott(&rule.loss.p, st, random_u64())
        }
        loss_model::FOUR_STATE => {
            let st = LOSS_STATE
                .get_ptr_mut(idx)
                .ok_or(DataPathError::MapLookup)?;
            // SAFETY: as above.
            let st = unsafe { &mut *st };
            loss::four_state(&rule.loss.p, st, random_u64())
        }
        _ => false,
    })
}
