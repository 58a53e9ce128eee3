//! When a packet may leave (tc egress only; fq releases it then): netem's
//! order — reorder (skip the delay), delay plus jitter (uniform or from the
//! rule's quantile table, optionally correlated, optionally kept in order per
//! flow), then the rate's serialization on the emulated link and its queue
//! limit. The link's booking ([`reserve_departure`]) is shared with the
//! receive-side policer (`police`).
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_hash_recalc, bpf_skb_set_tstamp},
    programs::TcContext,
};
use impair_common::{
    delay_dist, dist, edt, flow, prob, rule_flags, series::SERIES_DELAY, DataPathError, FlowKey,
    PacketKey, Rule,
};

use crate::{
    atomic::{self, fetch_max, CAS_ATTEMPTS},
    maps::{DELAY_STATE, FLOWS, RATE_STATE, TABLES},
    rng::random_u64,
    series, trace, Result,
};

/// `BPF_SKB_TSTAMP_DELIVERY_MONO` (an anonymous enum in the bindings): the
/// timestamp is a CLOCK_MONOTONIC delivery time, which fq honours, also for
/// forwarded packets that arrived with a receive timestamp.
const BPF_SKB_TSTAMP_DELIVERY_MONO: u32 = 1;

pub enum Schedule {
    /// Over the rate queue's limit.
    Drop,
    /// Skip the delay (reorder): leave at once.
    Now,
    /// Leave at this CLOCK_MONOTONIC time; the second value is the wire
    /// bytes the rate trace booked for the packet (0 without a trace), for
    /// `RuleCounters::trace_bytes` once the packet really goes on.
    At(u64, u64),
}

/// The wire shape of an skb: its length, how many wire packets it is and the
/// headers each of them carries (rates charge overhead per wire packet).
#[derive(Clone, Copy)]
pub struct Wire {
    pub len: u32,
    pub segs: u32,
    pub hdr_len: u32,
}

/// When the packet may leave, given the time `now`: the delay (and the rate)
/// start from the departure time already on the packet when that is later
/// than now and plausible (`edt::start_ns`), so a paced sender keeps its pacing.
#[inline(always)]
pub fn schedule(
    ctx: &TcContext,
    key: &PacketKey,
    rule: &Rule,
    idx: u32,
    wire: Wire,
    now: u64,
) -> Result<Schedule> {
    if rule.reorder_u32 != 0 && prob::fires(rule.reorder_u32, random_u64() as u32) {
        return Ok(Schedule::Now);
    }
    // A delay series' value for now replaces the rule's base delay.
    let base = if rule.flags & rule_flags::DELAY_SERIES != 0 {
        match series::value(idx, SERIES_DELAY, now)? {
            Some(us) => u64::from(us) * 1_000,
            None => rule.delay_ns,
        }
    } else {
        rule.delay_ns
    };
    let delay = match rule.delay_dist {
        delay_dist::UNIFORM => {
            dist::uniform_delay_ns(base, rule.jitter_ns, jitter_random(rule, idx)?)
        }
        delay_dist::TABLE => {
            let (i, frac) = dist::sample_index_frac(jitter_random(rule, idx)?);
            let table = TABLES.get(idx).ok_or(DataPathError::MapLookup)?;
            // sample_index_frac keeps i < TABLE_SIZE - 1; the mask only shows
            // the verifier that i and i + 1 are inside the (TABLE_SIZE + 1) table
            // (TABLE_SIZE is a power of two, asserted in impair_common::dist).
            let i = (i as usize) & (dist::TABLE_SIZE as usize - 1);
            let q = dist::interpolate(table[i], table[i + 1], frac);
            dist::jittered_delay_ns(base, rule.jitter_ns, q)
        }
        _ => base,
    };
    // SAFETY: the context's `__sk_buff`, valid while the program runs; tc
    // programs may read `tstamp`.
    let existing = unsafe { (*ctx.skb.skb).tstamp };
    let mut t = edt::start_ns(existing, now) + delay;
    if rule.flags & rule_flags::IN_ORDER != 0 {
        // The 5-tuple's hash from the parsed headers (`flow::flow_hash`):
        // no helper call, and no flow dissector run for an skb that arrives
        // without a hash. A frame that is not IP has no 5-tuple: the kernel's
        // hash, as for every packet before.
        let hash = if key.ip_version != 0 {
            flow::flow_hash(key)
        } else {
            // SAFETY: the helper only reads (and may compute) the skb's hash.
            unsafe { bpf_get_hash_recalc(ctx.skb.skb) }
        };
        let key = FlowKey { hash, rule: idx };
        // One hash lookup for a flow already in the table (every packet
        // but its first); a new flow's entry is created, then looked up.
        let last = match FLOWS.get_ptr_mut(key) {
            Some(last) => Some(last),
            None => {
                // BPF_NOEXIST: if another CPU created the entry first, keep
                // its time and fold ours in below.
                let _ = FLOWS.insert(key, 0u64, BPF_NOEXIST as u64);
                FLOWS.get_ptr_mut(key)
            }
        };
        if let Some(last) = last {
            t = fetch_max(last, t);
        }
    }
    let mut trace_bytes = 0;
    if rule.flags & rule_flags::RATE_TRACE != 0 {
        // The rate trace's link: the packet's wire bytes leave when the
        // trace has capacity for them.
        let bytes = edt::gso_wire_bytes(
            wire.len,
            wire.segs,
            wire.hdr_len,
            rule.overhead_bytes,
            rule.cell_bytes,
            rule.cell_overhead_bytes,
        );
        match trace::depart(idx, t, bytes, rule.queue_limit_ns)? {
            None => return Ok(Schedule::Drop),
            Some(d) => t = d,
        }
        trace_bytes = bytes;
    }
    if rule.rate_ps_per_byte != 0 {
        let st = RATE_STATE
            .get_ptr_mut(idx)
            .ok_or(DataPathError::MapLookup)?;
        let tx = serialization_ns(rule, wire);
        match reserve_departure(st, t, tx, rule.queue_limit_ns) {
            None => return Ok(Schedule::Drop),
            Some(d) => t = d,
        }
    }
    Ok(Schedule::At(t, trace_bytes))
}

/// Sets the packet's departure time (`t`, CLOCK_MONOTONIC) for fq.
#[inline(always)]
pub fn set_departure(ctx: &TcContext, t: u64) -> Result<()> {
    // SAFETY: the helper only writes the context's skb.
    let rc = unsafe { bpf_skb_set_tstamp(ctx.skb.skb, t, BPF_SKB_TSTAMP_DELIVERY_MONO) };
    if rc != 0 {
        return Err(DataPathError::SetTstamp);
    }
    Ok(())
}

/// How long an skb occupies the rule's emulated link: the wire bytes of each
/// of its wire packets (headers, overhead, cells) at the rule's rate.
#[inline(always)]
pub fn serialization_ns(rule: &Rule, wire: Wire) -> u64 {
    let bytes = edt::gso_wire_bytes(
        wire.len,
        wire.segs,
        wire.hdr_len,
        rule.overhead_bytes,
        rule.cell_bytes,
        rule.cell_overhead_bytes,
    );
    edt::tx_time_ns(bytes, rule.rate_ps_per_byte)
}

/// Books this packet's serialization on the emulated link (`slot`, the
/// rule's `IMPAIR_RATE_ST` value): the departure after the link's last one
/// (or `ready_ns` if idle), unless that exceeds the queue limit (`None`:
/// drop, the link state left alone). The link's state is shared by all CPUs
/// and advanced with a compare-and-swap, so two packets never get the same
/// slot.
#[inline(always)]
pub fn reserve_departure(
    slot: *mut u64,
    ready_ns: u64,
    tx_ns: u64,
    queue_limit_ns: u64,
) -> Option<u64> {
    // SAFETY: `slot` is a valid, 8-byte-aligned map value that lives as long
    // as the program runs; all access to it is atomic.
    let mut cur = unsafe { atomic::load(slot) };
    let mut d = edt::rate_departure(ready_ns, cur, tx_ns, queue_limit_ns)?;
    for _ in 0..CAS_ATTEMPTS {
        // SAFETY: as above.
        match unsafe { atomic::compare_exchange(slot, cur, d) } {
            Ok(_) => return Some(d),
            Err(seen) => {
                cur = seen;
                d = edt::rate_departure(ready_ns, cur, tx_ns, queue_limit_ns)?;
            }
        }
    }
    // Still contended: take the slot after the last value seen. At worst
    // this packet shares a slot with another one (Cilium's EDT race).
    Some(d)
}

/// The random word for this packet's jitter: with the rule's correlation
/// probability, the previous packet's word again (so the draw, and the delay,
/// repeats), else a fresh one.
#[inline(always)]
fn jitter_random(rule: &Rule, idx: u32) -> Result<u64> {
    if rule.delay_corr_u32 == 0 {
        return Ok(random_u64());
    }
    let st = DELAY_STATE
        .get_ptr_mut(idx)
        .ok_or(DataPathError::MapLookup)?;
    // SAFETY: this CPU's per-CPU value; programs do not migrate.
    let st = unsafe { &mut *st };
    if *st != 0 && prob::fires(rule.delay_corr_u32, random_u64() as u32) {
        return Ok(*st);
    }
    let r = random_u64() | 1;
    *st = r;
    Ok(r)
}
