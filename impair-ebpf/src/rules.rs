//! Per-packet decision: lease check, rule lookup (first match wins),
//! impairments. One generic path serves every hook ([`Hook`]): tc egress
//! does everything; tc ingress and XDP do loss, ECN, corruption, the MTU
//! blackhole, blackholes and rate policing. Delay, jitter, reordering,
//! duplication and rate pacing need a queue that releases packets later, and
//! only tc egress has one (fq, a qdisc): received packets have no qdisc after
//! the hook, so those impairments never happen there.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_hash_recalc, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns, bpf_skb_cgroup_id,
        bpf_skb_set_tstamp,
    },
    programs::{TcContext, XdpContext},
};
use impair_common::{
    delay_dist, dist, edt, index::lowest_bit, loss, loss_model, prob, rule_flags, ruleset_flags,
    FlowKey, GlobalCounters, PacketKey, Rule, CONTROL_ACTIVE_SLOT, CONTROL_LEASE_DEADLINE_NS,
    LEASE_FOREVER, MAX_RULES, POLICE_BURST_DEFAULT_NS,
};

use crate::{
    atomic,
    maps::{
        random_u64, CONTROL, DELAY_STATE, DUPLICATING, FLOWS, GLOBAL_COUNTERS, INDEX, KEY,
        LOSS_STATE, MATCHED, RATE_STATE, RULES, RULESETS, RULE_COUNTERS, TABLES,
    },
    parse::{parse_eth, Cursor},
    pkt::Packet,
};

pub enum Verdict {
    Pass,
    Drop,
}

/// Where a program runs: how it reaches the packet, and whether a queue
/// follows it (so packets can be held, paced and duplicated).
pub trait Hook {
    type Pkt: Packet;
    /// tc egress: delay, jitter, reorder, EDT pacing and duplicates. Every
    /// other hook polices the rate instead and never holds or copies packets.
    const EGRESS: bool;
    fn packet(&self) -> &Self::Pkt;
    /// Only called when [`Hook::EGRESS`]: the skb the timing helpers work on.
    fn skb(&self) -> Option<&TcContext>;
}

/// tc egress (tcx link or clsact filter).
pub struct TcEgress<'a>(pub &'a TcContext);
/// tc ingress (tcx link or clsact filter).
pub struct TcIngress<'a>(pub &'a TcContext);
/// XDP (native or generic).
pub struct Xdp<'a>(pub &'a XdpContext);

impl Hook for TcEgress<'_> {
    type Pkt = TcContext;
    const EGRESS: bool = true;
    #[inline(always)]
    fn packet(&self) -> &TcContext {
        self.0
    }
    #[inline(always)]
    fn skb(&self) -> Option<&TcContext> {
        Some(self.0)
    }
}

impl Hook for TcIngress<'_> {
    type Pkt = TcContext;
    const EGRESS: bool = false;
    #[inline(always)]
    fn packet(&self) -> &TcContext {
        self.0
    }
    #[inline(always)]
    fn skb(&self) -> Option<&TcContext> {
        None
    }
}

impl Hook for Xdp<'_> {
    type Pkt = XdpContext;
    const EGRESS: bool = false;
    #[inline(always)]
    fn packet(&self) -> &XdpContext {
        self.0
    }
    #[inline(always)]
    fn skb(&self) -> Option<&TcContext> {
        None
    }
}

/// `BPF_SKB_TSTAMP_DELIVERY_MONO` (an anonymous enum in the bindings): the
/// timestamp is a CLOCK_MONOTONIC delivery time, which fq honours, also for
/// forwarded packets that arrived with a receive timestamp.
const BPF_SKB_TSTAMP_DELIVERY_MONO: u32 = 1;

/// Headers the parser may need in linear data: Ethernet, two VLAN tags, IPv6
/// with a few extension headers, and the L4 ports.
const PARSE_BYTES: u32 = 128;

#[inline(always)]
fn global() -> Option<*mut GlobalCounters> {
    GLOBAL_COUNTERS.get_ptr_mut(0)
}

/// Decides what happens to one packet. Errors pass the packet (fail open)
/// and are counted in `GlobalCounters::errors`.
#[inline(always)]
pub fn decide<H: Hook>(h: &H) -> Verdict {
    // Only egress sends duplicates, and only its own nested run sees them.
    if H::EGRESS && is_duplicate() {
        return Verdict::Pass;
    }
    let Some(g) = global() else {
        return Verdict::Pass;
    };
    // SAFETY: this CPU's per-CPU value; programs do not migrate while running.
    let g = unsafe { &mut *g };
    g.packets += 1;
    match try_decide(h, g) {
        Ok(v) => v,
        Err(()) => {
            g.errors += 1;
            Verdict::Pass
        }
    }
}

#[inline(always)]
fn try_decide<H: Hook>(h: &H, g: &mut GlobalCounters) -> Result<Verdict, ()> {
    let deadline = *CONTROL.get(CONTROL_LEASE_DEADLINE_NS).ok_or(())?;
    // The coarse clock is CLOCK_MONOTONIC as of the last tick (the
    // controller's deadline is in the same clock): a lease measured in
    // seconds may end a tick late, and every packet is spared a clock read.
    // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
    if deadline != LEASE_FOREVER && unsafe { bpf_ktime_get_coarse_ns() } > deadline {
        g.lease_expired += 1;
        return Ok(Verdict::Pass);
    }
    let slot = (*CONTROL.get(CONTROL_ACTIVE_SLOT).ok_or(())? as u32) & 1;
    let header = RULESETS.get(slot).ok_or(())?;
    let (count, set_flags) = (header.rule_count, header.flags);
    if count == 0 {
        g.unmatched += 1;
        return Ok(Verdict::Pass);
    }

    let pkt = h.packet();
    pkt.linearize(PARSE_BYTES);
    let len = pkt.frame_len();
    // The key lives in a per-CPU scratch map, not on the stack: the verifier
    // then forgets the per-path constants the parser wrote (IPv4 vs IPv6,
    // protocol, offsets), and the rule loop below is verified once instead of
    // once per way through the parser.
    let key = KEY.get_ptr_mut(0).ok_or(())?;
    // SAFETY: this CPU's per-CPU value; programs do not migrate while running,
    // and a nested run (a duplicate) returns before touching it.
    let key = unsafe { &mut *key };
    clear(key);
    parse_eth(Cursor::new(pkt.data(), pkt.data_end()), key);
    if H::EGRESS && set_flags & ruleset_flags::CGROUP != 0 {
        if let Some(ctx) = h.skb() {
            // SAFETY: the helper reads the skb's socket (if any) and its cgroup.
            key.cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
        }
    }

    // Find the first matching rule, then apply it once after the loop. The
    // index narrows the walk to the rules the packet's fields admit (a
    // superset of those that match, in rule order), and each is checked in
    // full, so the first that matches is the one a plain walk would find.
    // The rule's position travels through a per-CPU scratch slot: read back
    // from a map it is an unknown scalar to the verifier, so the 64 ways out
    // of the loop merge into one state and the (large) impairment code is
    // verified once, not once per rule position.
    let base = slot * MAX_RULES;
    let mut candidates = INDEX.get(slot).ok_or(())?.candidates(key);
    // The header's count bounds the walk whatever the index says: the index
    // is written with the same slot's rules, so this only matters if the two
    // ever disagree, and then the header (what `impair stats` reports) wins.
    if count < MAX_RULES {
        candidates &= (1u64 << count) - 1;
    }
    let scratch = MATCHED.get_ptr_mut(0).ok_or(())?;
    // SAFETY: this CPU's per-CPU value; programs do not migrate while running.
    unsafe { *scratch = MAX_RULES };
    for _ in 0..MAX_RULES {
        if candidates == 0 {
            break;
        }
        let i = lowest_bit(candidates);
        let rule = RULES.get(base + i).ok_or(())?;
        if rule.matcher.matches(key) {
            // SAFETY: as above.
            unsafe { *scratch = i };
            break;
        }
        candidates &= candidates - 1;
    }
    // SAFETY: as above.
    let hit = unsafe { core::ptr::read_volatile(scratch) };
    if hit >= MAX_RULES {
        g.unmatched += 1;
        return Ok(Verdict::Pass);
    }
    let idx = base + hit;
    let rule = RULES.get(idx).ok_or(())?;
    apply(h, key, rule, idx, len)
}

/// Zeroes the key with one store per word. `*key = PacketKey::default()`
/// compiles to a call of a byte-at-a-time `memset` (the BPF target has no
/// wider builtin), which cost more than parsing the packet.
#[inline(always)]
fn clear(key: &mut PacketKey) {
    const WORDS: usize = core::mem::size_of::<PacketKey>() / 8;
    const _: () = assert!(core::mem::size_of::<PacketKey>() % 8 == 0);
    const _: () = assert!(core::mem::align_of::<PacketKey>() == 8);
    let words = (key as *mut PacketKey).cast::<u64>();
    for i in 0..WORDS {
        // SAFETY: `key` is 8-aligned and WORDS * 8 bytes long (asserted
        // above), and every bit pattern is a valid PacketKey. Volatile keeps
        // LLVM from folding the stores back into a memset call.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
}

/// What one rule does to a packet, in netem's order: MTU, blackhole, the
/// duplicate decision, loss (or an ECN mark), then (egress) the departure
/// time and the clean duplicate, or (receive) the rate policer, then
/// corruption of the original.
#[inline(always)]
fn apply<H: Hook>(h: &H, key: &PacketKey, rule: &Rule, idx: u32, len: u32) -> Result<Verdict, ()> {
    let c = RULE_COUNTERS.get_ptr_mut(idx).ok_or(())?;
    // SAFETY: this CPU's per-CPU value; programs do not migrate while running.
    let c = unsafe { &mut *c };
    c.packets += 1;
    c.bytes += u64::from(len);
    let pkt = h.packet();

    if rule.mtu_bytes != 0 && key.ip_version != 0 && len - u32::from(key.l3_offset) > rule.mtu_bytes
    {
        c.dropped_mtu += 1;
        return Ok(Verdict::Drop);
    }
    if rule.flags & rule_flags::BLACKHOLE != 0 {
        c.dropped_loss += 1;
        return Ok(Verdict::Drop);
    }
    let r = random_u64();
    // The duplicate decision draws from the same word at every hook, so a
    // seed gives the same loss decisions wherever the rule runs.
    let duplicate = H::EGRESS && prob::fires(rule.duplicate_u32, (r >> 32) as u32);
    if lost(rule, idx, r)? {
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
            return Ok(Verdict::Drop);
        }
    }
    if H::EGRESS {
        let ctx = h.skb().ok_or(())?;
        if rule.delay_ns | rule.jitter_ns | rule.rate_ps_per_byte != 0 {
            // SAFETY: bpf_ktime_get_ns has no preconditions.
            let now = unsafe { bpf_ktime_get_ns() };
            match schedule(ctx, rule, idx, len, now)? {
                Schedule::Drop => {
                    c.dropped_queue += 1;
                    return Ok(Verdict::Drop);
                }
                Schedule::Now => c.reordered += 1,
                Schedule::At(t) => {
                    // SAFETY: the helper only writes the context's skb.
                    let rc =
                        unsafe { bpf_skb_set_tstamp(ctx.skb.skb, t, BPF_SKB_TSTAMP_DELIVERY_MONO) };
                    if rc != 0 {
                        return Err(());
                    }
                    if t > now {
                        c.delayed += 1;
                    }
                }
            }
        }
        // The duplicate is cloned after the departure time is set, so it leaves
        // with the original.
        if duplicate {
            send_duplicate(ctx)?;
            c.duplicated += 1;
        }
    } else if rule.rate_ps_per_byte != 0 && !police(rule, idx, len)? {
        c.dropped_queue += 1;
        return Ok(Verdict::Drop);
    }
    if prob::fires(rule.corrupt_u32, random_u64() as u32) && corrupt(pkt, key, len, rule.flags)? {
        c.corrupted += 1;
    }
    c.passed += 1;
    Ok(Verdict::Pass)
}

/// The rate on the receive side: a policer on the same emulated link as
/// egress pacing (`edt::rate_departure`, `RATE_STATE`), but with nowhere to
/// hold a packet. A packet that would wait more than the burst tolerance
/// behind the link is dropped (`dropped_queue`) and leaves the link state
/// alone; an accepted one passes at once and occupies the link for its
/// serialization time. The tolerance is the rule's queue limit
/// ([`POLICE_BURST_DEFAULT_NS`] when unset, so a policer always has a burst),
/// and at least the packet's own serialization time: a tolerance smaller than
/// one packet would otherwise drop every packet, as a token bucket smaller
/// than the MTU does. Returns whether the packet is accepted.
#[inline(always)]
fn police(rule: &Rule, idx: u32, len: u32) -> Result<bool, ()> {
    let st = RATE_STATE.get_ptr_mut(idx).ok_or(())?;
    let bytes = edt::wire_bytes(
        len,
        rule.overhead_bytes,
        rule.cell_bytes,
        rule.cell_overhead_bytes,
    );
    let tx = edt::tx_time_ns(bytes, rule.rate_ps_per_byte);
    let configured = if rule.queue_limit_ns == 0 {
        POLICE_BURST_DEFAULT_NS
    } else {
        rule.queue_limit_ns
    };
    let burst = if configured < tx { tx } else { configured };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a valid map value shared by CPUs; see RATE_STATE.
    let last = unsafe { core::ptr::read_volatile(st) };
    match edt::rate_departure(now, last, tx, burst) {
        None => Ok(false),
        Some(d) => {
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(st, d) };
            Ok(true)
        }
    }
}

enum Schedule {
    /// Over the rate queue's limit.
    Drop,
    /// Skip the delay (reorder): leave at once.
    Now,
    /// Leave at this CLOCK_MONOTONIC time.
    At(u64),
}

/// When the packet may leave: netem's order — reorder (skip the delay), delay
/// plus jitter (optionally correlated, optionally kept in order per flow),
/// then the rate's serialization and queue limit.
#[inline(always)]
fn schedule(ctx: &TcContext, rule: &Rule, idx: u32, len: u32, now: u64) -> Result<Schedule, ()> {
    if rule.reorder_u32 != 0 && prob::fires(rule.reorder_u32, random_u64() as u32) {
        return Ok(Schedule::Now);
    }
    let delay = match rule.delay_dist {
        delay_dist::UNIFORM => {
            dist::uniform_delay_ns(rule.delay_ns, rule.jitter_ns, jitter_random(rule, idx)?)
        }
        delay_dist::TABLE => {
            let (i, frac) = dist::sample_index_frac(jitter_random(rule, idx)?);
            let table = TABLES.get(idx).ok_or(())?;
            // sample_index_frac keeps i < TABLE_SIZE - 1; the mask only shows
            // the verifier that i and i + 1 are inside the (TABLE_SIZE + 1) table.
            let i = (i as usize) & (dist::TABLE_SIZE as usize - 1);
            let q = dist::interpolate(table[i], table[i + 1], frac);
            dist::jittered_delay_ns(rule.delay_ns, rule.jitter_ns, q)
        }
        _ => rule.delay_ns,
    };
    let mut t = now + delay;
    if rule.flags & rule_flags::IN_ORDER != 0 {
        // SAFETY: the helper only reads (and may compute) the skb's hash.
        let hash = unsafe { bpf_get_hash_recalc(ctx.skb.skb) };
        let key = FlowKey { hash, rule: idx };
        if FLOWS.get_ptr_mut(&key).is_none() {
            // BPF_NOEXIST: if another CPU created the entry first, keep its
            // time and fold ours in below.
            let _ = FLOWS.insert(&key, &0, BPF_NOEXIST as u64);
        }
        if let Some(last) = FLOWS.get_ptr_mut(&key) {
            t = fetch_max(last, t);
        }
    }
    if rule.rate_ps_per_byte != 0 {
        let st = RATE_STATE.get_ptr_mut(idx).ok_or(())?;
        let bytes = edt::wire_bytes(
            len,
            rule.overhead_bytes,
            rule.cell_bytes,
            rule.cell_overhead_bytes,
        );
        let tx = edt::tx_time_ns(bytes, rule.rate_ps_per_byte);
        match reserve_departure(st, t, tx, rule.queue_limit_ns) {
            None => return Ok(Schedule::Drop),
            Some(d) => t = d,
        }
    }
    Ok(Schedule::At(t))
}

/// Compare-and-swap attempts before a contended update gives up. Each failure
/// means another CPU moved the value forward meanwhile; four in a row needs
/// four packets of the same flow or rule on other CPUs within a few
/// nanoseconds, and the verifier needs a bound.
const CAS_ATTEMPTS: u32 = 4;

/// Raises `*slot` to at least `t` with a compare-and-swap (several CPUs may
/// carry one flow: RPS, a migrating sender) and returns the departure time
/// this packet gets: `max(*slot, t)`. Two CPUs can never hand out departure
/// times that go backwards in the order of their successful swaps.
#[inline(always)]
fn fetch_max(slot: *mut u64, t: u64) -> u64 {
    // SAFETY: `slot` is a valid, 8-byte-aligned map value that lives as long
    // as the program runs; all access to it is atomic.
    let mut cur = unsafe { atomic::load(slot) };
    for _ in 0..CAS_ATTEMPTS {
        if cur >= t {
            return cur;
        }
        // SAFETY: as above.
        match unsafe { atomic::compare_exchange(slot, cur, t) } {
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

/// Books this packet's serialization on the emulated link: the departure
/// after the link's last one (or `ready_ns` if idle), unless that exceeds the
/// queue limit (`None`: drop). The link's state is shared by all CPUs and
/// advanced with a compare-and-swap, so two packets never get the same slot.
#[inline(always)]
fn reserve_departure(
    slot: *mut u64,
    ready_ns: u64,
    tx_ns: u64,
    queue_limit_ns: u64,
) -> Option<u64> {
    // SAFETY: as in `fetch_max`.
    let mut cur = unsafe { atomic::load(slot) };
    let mut d = edt::rate_departure(ready_ns, cur, tx_ns, queue_limit_ns)?;
    for _ in 0..CAS_ATTEMPTS {
        // SAFETY: as in `fetch_max`.
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
fn jitter_random(rule: &Rule, idx: u32) -> Result<u64, ()> {
    if rule.delay_corr_u32 == 0 {
        return Ok(random_u64());
    }
    let st = DELAY_STATE.get_ptr_mut(idx).ok_or(())?;
    // SAFETY: this CPU's per-CPU value; programs do not migrate.
    let st = unsafe { &mut *st };
    if *st != 0 && prob::fires(rule.delay_corr_u32, random_u64() as u32) {
        return Ok(*st);
    }
    let r = random_u64() | 1;
    *st = r;
    Ok(r)
}

/// Whether the rule's loss process drops this packet.
#[inline(always)]
fn lost(rule: &Rule, idx: u32, r: u64) -> Result<bool, ()> {
    Ok(match rule.loss.model {
        loss_model::BERNOULLI => prob::fires(rule.loss.p[0], r as u32),
        loss_model::GILBERT_ELLIOTT => {
            let st = LOSS_STATE.get_ptr_mut(idx).ok_or(())?;
            // SAFETY: this CPU's per-CPU value; programs do not migrate.
            loss::gilbert_elliott(&rule.loss.p, unsafe { &mut *st }, random_u64())
        }
        loss_model::FOUR_STATE => {
            let st = LOSS_STATE.get_ptr_mut(idx).ok_or(())?;
            // SAFETY: as above.
            loss::four_state(&rule.loss.p, unsafe { &mut *st }, random_u64())
        }
        _ => false,
    })
}

/// Sets CE in the IP header (the caller checked the packet is ECN-capable).
#[inline(always)]
fn mark_ce<P: Packet>(pkt: &P, key: &PacketKey) -> Result<(), ()> {
    let l3 = u32::from(key.l3_offset);
    if key.ip_version == 4 {
        // The first 16-bit word holds version/IHL and TOS; the checksum covers it.
        let old = pkt.load_u16(l3)?;
        let new = [old[0], old[1] | 3];
        pkt.l3_csum_replace(l3 + 10, old, new)?;
        pkt.store_u16(l3, new)?;
    } else {
        // IPv6: ECN is bits 4-5 of the second byte; there is no header
        // checksum to compensate, so a received packet's sum must follow.
        let old = pkt.load_u8(l3 + 1)?;
        pkt.store_u8_update_sum(l3 + 1, old | 0x30)?;
    }
    Ok(())
}

/// Sends a clone of the packet out of the same device. The clone passes
/// through this program again, synchronously and on this CPU; the per-CPU
/// flag tells that run to let it go untouched (a duplicate is never
/// duplicated, dropped or corrupted again).
#[inline(always)]
fn send_duplicate(ctx: &TcContext) -> Result<(), ()> {
    let flag = DUPLICATING.get_ptr_mut(0).ok_or(())?;
    // SAFETY: this CPU's per-CPU value; the nested run reads it on this CPU.
    unsafe { *flag = 1 };
    // SAFETY: reading a field of the context the kernel passed us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let r = ctx.clone_redirect(ifindex, 0);
    // SAFETY: as above.
    unsafe { *flag = 0 };
    r.map(|_| ()).map_err(|_| ())
}

/// Whether this run is the clone `send_duplicate` just sent.
#[inline(always)]
pub fn is_duplicate() -> bool {
    match DUPLICATING.get_ptr_mut(0) {
        // SAFETY: this CPU's per-CPU value.
        Some(flag) => unsafe {
            let dup = *flag != 0;
            *flag = 0;
            dup
        },
        None => false,
    }
}

/// L4 checksum field offset from the L4 header, for protocols that have one.
#[inline(always)]
fn l4_csum_offset(proto: u8) -> Option<u32> {
    match proto {
        6 => Some(16),
        17 | 136 => Some(6),
        1 | 58 => Some(2),
        _ => None,
    }
}

/// Flips one random bit of the L4 payload. Detectable (default): the L4
/// checksum is left inconsistent; a second bit is also flipped in the checksum
/// field itself, at a different position within the 16-bit word, so the
/// corruption stays detectable even when the checksum is completed after us
/// (checksum offload) and can never cancel out. Silent: the checksum is
/// updated to match, so the corrupted payload reaches the application.
/// Returns false when the packet has no payload to corrupt.
#[inline(always)]
fn corrupt<P: Packet>(pkt: &P, key: &PacketKey, len: u32, flags: u32) -> Result<bool, ()> {
    let start = u32::from(key.payload_offset);
    if key.ip_version == 0 || key.l4_offset == 0 || start == 0 || start >= len {
        return Ok(false);
    }
    let r = random_u64();
    let off = start + ((r & 0xffff_ffff) % u64::from(len - start)) as u32;
    let bit = ((r >> 32) & 7) as u32;
    // Position of the flipped bit inside its 16-bit word of the L4 segment
    // (even offsets from the L4 header are the high byte in network order).
    let high = (off - u32::from(key.l4_offset)) & 1 == 0;
    let word_bit = if high { bit + 8 } else { bit };
    let old = pkt.load_u8(off)?;
    let new = old ^ (1u8 << bit);
    pkt.store_u8(off, new)?;
    let Some(csum_rel) = l4_csum_offset(key.l4_proto) else {
        return Ok(true);
    };
    let csum_off = u32::from(key.l4_offset) + csum_rel;
    if flags & rule_flags::CORRUPT_SILENT != 0 {
        // The checksum change depends only on the byte that changed, so the
        // word's other byte is taken as 0 on both sides: no second read, and
        // a last odd byte (padded with 0 by the checksum) needs no case.
        let (old_word, new_word) = if high {
            ([old, 0], [new, 0])
        } else {
            ([0, old], [0, new])
        };
        pkt.l4_csum_replace(csum_off, old_word, new_word)?;
    } else {
        let csum = pkt.load_u16(csum_off)?;
        let flip = 1u16 << ((word_bit + 8) % 16);
        pkt.store_u16(csum_off, (u16::from_be_bytes(csum) ^ flip).to_be_bytes())?;
    }
    Ok(true)
}
