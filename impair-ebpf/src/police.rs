//! The rate on the receive side (tc ingress, XDP): a policer on the same
//! emulated link as egress pacing (`IMPAIR_RATE_ST`, booked with
//! `timing::reserve_departure`), but with nowhere to hold a packet.
use impair_common::{DataPathError, Rule, POLICE_BURST_DEFAULT_NS};

use crate::{
    maps::RATE_STATE,
    timing::{reserve_departure, serialization_ns, Wire},
    Result,
};

/// Whether rule `idx`'s policer accepts a packet (`wire`: its length and wire
/// packets) at `now` (CLOCK_MONOTONIC ns, the caller's one clock reading).
///
/// A packet that would wait more than the burst tolerance behind the link is
/// dropped (`dropped_queue`) and leaves the link state alone; an accepted one
/// passes at once and occupies the link for its serialization time. The
/// tolerance is the rule's queue limit ([`POLICE_BURST_DEFAULT_NS`] when
/// unset, so a policer always has a burst), and at least the packet's own
/// serialization time: a tolerance smaller than one packet would otherwise
/// drop every packet, as a token bucket smaller than the MTU does.
///
/// The link state is advanced with the same compare-and-swap as egress
/// pacing, so packets policed on several CPUs at once (RSS, RPS) never book
/// the same slot of the link.
#[inline(always)]
pub fn police(rule: &Rule, idx: u32, wire: Wire, now: u64) -> Result<bool> {
    let st = RATE_STATE
        .get_ptr_mut(idx)
        .ok_or(DataPathError::MapLookup)?;
    let tx = serialization_ns(rule, wire);
    let configured = if rule.queue_limit_ns == 0 {
        POLICE_BURST_DEFAULT_NS
    } else {
        rule.queue_limit_ns
    };
    let burst = if configured < tx { tx } else { configured };
    Ok(reserve_departure(st, now, tx, burst).is_some())
}
