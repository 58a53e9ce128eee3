//! Per-packet decision: lease check, rule lookup (first match wins), impairments.
use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TcContext};
use impair_common::{
    loss_model, prob, GlobalCounters, PacketKey, Rule, CONTROL_ACTIVE_SLOT,
    CONTROL_LEASE_DEADLINE_NS, LEASE_FOREVER, MAX_RULES,
};

use crate::{
    maps::{random_u64, CONTROL, GLOBAL_COUNTERS, RULES, RULESETS, RULE_COUNTERS},
    parse::{parse_eth, Cursor},
};

pub enum Verdict {
    Pass,
    Drop,
}

/// Headers the parser may need in linear data: Ethernet, two VLAN tags, IPv6
/// with a few extension headers, and the L4 ports.
const PARSE_BYTES: u32 = 128;

#[inline(always)]
fn global() -> Option<*mut GlobalCounters> {
    GLOBAL_COUNTERS.get_ptr_mut(0)
}

/// Decides what happens to one packet at tc. Errors pass the packet (fail open)
/// and are counted in `GlobalCounters::errors`.
#[inline(always)]
pub fn decide(ctx: &TcContext) -> Verdict {
    let Some(g) = global() else { return Verdict::Pass };
    // SAFETY: this CPU's per-CPU value; programs do not migrate while running.
    let g = unsafe { &mut *g };
    g.packets += 1;
    match try_decide(ctx, g) {
        Ok(v) => v,
        Err(()) => {
            g.errors += 1;
            Verdict::Pass
        }
    }
}

#[inline(always)]
fn try_decide(ctx: &TcContext, g: &mut GlobalCounters) -> Result<Verdict, ()> {
    let deadline = *CONTROL.get(CONTROL_LEASE_DEADLINE_NS).ok_or(())?;
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    if deadline != LEASE_FOREVER && unsafe { bpf_ktime_get_ns() } > deadline {
        g.lease_expired += 1;
        return Ok(Verdict::Pass);
    }
    let slot = (*CONTROL.get(CONTROL_ACTIVE_SLOT).ok_or(())? as u32) & 1;
    let count = RULESETS.get(slot).ok_or(())?.rule_count;
    if count == 0 {
        g.unmatched += 1;
        return Ok(Verdict::Pass);
    }

    let len = ctx.len();
    let linear = ctx.data_end() - ctx.data();
    if (linear as u32) < PARSE_BYTES && len as usize > linear {
        // Headers may sit in paged data; a failed pull only means less to parse.
        let _ = ctx.pull_data(len.min(PARSE_BYTES));
    }
    let mut key = PacketKey::default();
    parse_eth(Cursor::new(ctx.data(), ctx.data_end()), &mut key);

    let base = slot * MAX_RULES;
    for i in 0..MAX_RULES {
        if i >= count {
            break;
        }
        let idx = base + i;
        let rule = RULES.get(idx).ok_or(())?;
        if rule.matcher.matches(&key) {
            return apply(rule, idx, len);
        }
    }
    g.unmatched += 1;
    Ok(Verdict::Pass)
}

#[inline(always)]
fn apply(rule: &Rule, idx: u32, len: u32) -> Result<Verdict, ()> {
    let c = RULE_COUNTERS.get_ptr_mut(idx).ok_or(())?;
    // SAFETY: this CPU's per-CPU value; programs do not migrate while running.
    let c = unsafe { &mut *c };
    c.packets += 1;
    c.bytes += u64::from(len);
    if rule.loss.model == loss_model::BERNOULLI
        && prob::fires(rule.loss.p[0], random_u64() as u32)
    {
        c.dropped_loss += 1;
        return Ok(Verdict::Drop);
    }
    c.passed += 1;
    Ok(Verdict::Pass)
}
