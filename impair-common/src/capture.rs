//! The record of impaired packets (`impair capture`, `attach --capture`):
//! while `CONTROL[CONTROL_CAPTURE_COST_NS]` is set, every packet a rule
//! dropped, marked, corrupted, duplicated, reordered or delayed is written to
//! the `IMPAIR_CAPTURE` ring buffer as a [`Record`] (its decision
//! and first [`SNAP_BYTES`] bytes), within a per-CPU budget of
//! records per second; what the budget or a full ring refuses is counted
//! ([`Counters`]), so the records and the counters always add up
//! to the rule counters' decisions.
//! docs/map-abi.md ("Capture") describes the layout and the budget.
use crate::RuleCounters;

/// The ring buffer of records (`BPF_MAP_TYPE_RINGBUF`, Linux 5.8).
pub const MAP_RING: &str = "IMPAIR_CAPTURE";
/// Per-CPU `u64`: the budget's theoretical arrival time (GCRA), in
/// `bpf_ktime_get_ns()` nanoseconds.
pub const MAP_BUDGET: &str = "IMPAIR_CAP_TAT";
/// Per-CPU [`Counters`].
pub const MAP_COUNTERS: &str = "IMPAIR_CAP_CNT";
/// Bytes of the ring (a power of two, a multiple of the page size):
/// 2,048 records of 176 bytes with their 8-byte headers; the reader
/// empties it every few milliseconds.
pub const RING_BYTES: u32 = 1 << 19;
/// Bytes of each packet recorded, from its first (Ethernet) byte.
pub const SNAP_BYTES: u32 = 128;
/// The burst the budget allows after an idle second: one second's worth.
pub const BURST_NS: u64 = 1_000_000_000;

/// [`Record::actions`] bits: what the rule did to the packet.
pub mod action {
    /// Dropped by the loss model (or a blackhole).
    pub const DROP_LOSS: u32 = 1 << 0;
    /// Dropped by the MTU blackhole.
    pub const DROP_MTU: u32 = 1 << 1;
    /// Dropped by the queue limit or the policer.
    pub const DROP_QUEUE: u32 = 1 << 2;
    /// ECN CE-marked (instead of a loss).
    pub const ECN: u32 = 1 << 3;
    /// Corrupted (the recorded bytes are the corrupted ones).
    pub const CORRUPT: u32 = 1 << 4;
    /// Duplicated (or, lost and duplicated, sent once as the duplicate).
    pub const DUPLICATE: u32 = 1 << 5;
    /// Sent ahead of the delayed packets (reorder).
    pub const REORDER: u32 = 1 << 6;
    /// Given a departure time in the future.
    pub const DELAY: u32 = 1 << 7;
    /// Names, in bit order, as the capture file's comments spell them.
    pub const NAMES: [&str; 8] = [
        "drop-loss",
        "drop-mtu",
        "drop-queue",
        "ecn",
        "corrupt",
        "duplicate",
        "reorder",
        "delay",
    ];
}

/// [`Record::hook`] values.
pub mod hook {
    pub const TC_EGRESS: u32 = 1;
    pub const TC_INGRESS: u32 = 2;
    pub const XDP: u32 = 3;
}

/// One impaired packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// When the rule decided (`bpf_ktime_get_ns()`, CLOCK_MONOTONIC).
    pub decided_ns: u64,
    /// The departure time tc egress gave the packet (`skb->tstamp`,
    /// CLOCK_MONOTONIC), 0 where none was set.
    pub departure_ns: u64,
    /// The rule's index in its rule set (0-based, first match).
    pub rule: u32,
    /// [`action`] bits.
    pub actions: u32,
    /// [`hook`] value.
    pub hook: u32,
    /// The packet's length on the wire, bytes.
    pub frame_len: u32,
    /// Bytes of `data` recorded: `min(frame_len, SNAP_BYTES)`, 0 if the
    /// packet could not be read.
    pub snap_len: u32,
    pub _pad: u32,
    pub data: [u8; SNAP_BYTES as usize],
}

/// Per-CPU counts of impaired packets while capture was on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Written to the ring.
    pub recorded: u64,
    /// Not written: the per-CPU budget was spent.
    pub over_budget: u64,
    /// Not written: the ring was full (the reader fell behind).
    pub ring_full: u64,
}

impl Counters {
    /// Adds another CPU's counters.
    pub fn add(&mut self, o: &Self) {
        self.recorded += o.recorded;
        self.over_budget += o.over_budget;
        self.ring_full += o.ring_full;
    }

    /// Impaired packets not recorded, for whatever reason.
    pub fn not_recorded(&self) -> u64 {
        self.over_budget + self.ring_full
    }
}

const _: () = {
    assert!(core::mem::size_of::<Record>() == 40 + SNAP_BYTES as usize);
    assert!(core::mem::size_of::<Counters>() == 24);
    assert!(RING_BYTES.is_power_of_two() && RING_BYTES & 4095 == 0);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], integers and an array of bytes, no padding
    // (the size asserts above pin the layout).
    unsafe impl aya::Pod for super::Counters {}
}

/// What a rule did to a packet, from its counters before and after
/// (the data path snapshots them only while capture is on).
#[inline(always)]
pub fn actions_between(before: &RuleCounters, after: &RuleCounters) -> u32 {
    let mut a = 0;
    if after.dropped_loss != before.dropped_loss {
        a |= action::DROP_LOSS;
    }
    if after.dropped_mtu != before.dropped_mtu {
        a |= action::DROP_MTU;
    }
    if after.dropped_queue != before.dropped_queue {
        a |= action::DROP_QUEUE;
    }
    if after.ecn_marked != before.ecn_marked {
        a |= action::ECN;
    }
    if after.corrupted != before.corrupted {
        a |= action::CORRUPT;
    }
    if after.duplicated != before.duplicated {
        a |= action::DUPLICATE;
    }
    if after.reordered != before.reordered {
        a |= action::REORDER;
    }
    if after.delayed != before.delayed {
        a |= action::DELAY;
    }
    a
}

/// The budget (GCRA): whether a record may be written at `now_ns`, given
/// the CPU's theoretical arrival time `tat_ns` (updated when it may) and
/// the cost of a record. At most `BURST_NS / cost_ns` records at once,
/// then one per `cost_ns`.
#[inline(always)]
pub fn take_budget(tat_ns: &mut u64, now_ns: u64, cost_ns: u64) -> bool {
    let floor = now_ns.saturating_sub(BURST_NS);
    let t = if *tat_ns < floor { floor } else { *tat_ns };
    let next = t.saturating_add(cost_ns);
    if next > now_ns {
        return false;
    }
    *tat_ns = next;
    true
}

/// The cost of one record for a cap of `per_sec` records per second per
/// CPU (at least 1 ns; 0 records per second is "off", which is cost 0).
pub fn cost_ns(per_sec: u64) -> u64 {
    1_000_000_000u64
        .checked_div(per_sec)
        .map_or(0, |cost| cost.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_a_seconds_worth_at_once_then_the_rate() {
        let cost = cost_ns(100);
        let mut tat = 0;
        let now = 10_000_000_000;
        let burst = (0..1000)
            .filter(|_| take_budget(&mut tat, now, cost))
            .count();
        assert_eq!(burst, 100);
        assert!(!take_budget(&mut tat, now + cost - 1, cost));
        assert!(take_budget(&mut tat, now + cost, cost));
        assert!(!take_budget(&mut tat, now + cost, cost));
    }

    #[test]
    fn actions_are_the_counters_that_moved() {
        let b = RuleCounters::default();
        let a = RuleCounters {
            dropped_loss: 1,
            duplicated: 1,
            passed: 1,
            ..b
        };
        assert_eq!(
            actions_between(&b, &a),
            action::DROP_LOSS | action::DUPLICATE
        );
        assert_eq!(actions_between(&b, &b), 0);
    }
}
