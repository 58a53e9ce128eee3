//! The counters the data path keeps (per CPU) and the controller sums: per
//! rule, and per program (packets, unmatched, lease, errors by cause). Part
//! of the map ABI (docs/map-abi.md), like [`crate::abi`].
use crate::abi::PERCPU_VALUE_MAX;

/// Per-rule, per-CPU counters (`RULE_COUNTERS[slot * MAX_RULES + rule]`).
/// The controller zeroes a slot's counters before it writes a rule set there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCounters {
    /// Packets that matched the rule.
    pub packets: u64,
    /// Bytes (skb->len, L2 included) that matched the rule.
    pub bytes: u64,
    /// Matching packets that went on (possibly modified or delayed).
    pub passed: u64,
    /// Dropped by the loss process or a blackhole.
    pub dropped_loss: u64,
    /// Dropped because the IP packet exceeded the rule's MTU.
    pub dropped_mtu: u64,
    /// CE-marked instead of dropped (ECN).
    pub ecn_marked: u64,
    /// Payload bit flipped.
    pub corrupted: u64,
    /// Extra copies sent.
    pub duplicated: u64,
    /// Dropped because the rate queue was over its limit.
    pub dropped_queue: u64,
    /// Sent at once, skipping the delay (reorder).
    pub reordered: u64,
    /// Given a departure time in the future.
    pub delayed: u64,
    pub _reserved: u64,
}

impl RuleCounters {
    /// Adds another CPU's counters (the controller sums per-CPU values).
    pub fn add(&mut self, o: &Self) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.passed += o.passed;
        self.dropped_loss += o.dropped_loss;
        self.dropped_mtu += o.dropped_mtu;
        self.ecn_marked += o.ecn_marked;
        self.corrupted += o.corrupted;
        self.duplicated += o.duplicated;
        self.dropped_queue += o.dropped_queue;
        self.reordered += o.reordered;
        self.delayed += o.delayed;
    }
}

/// Per-CPU counters not tied to a rule (`GLOBAL_COUNTERS[0]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalCounters {
    /// Every packet the program saw.
    pub packets: u64,
    /// Packets no rule matched (passed).
    pub unmatched: u64,
    /// Packets passed because the lease had expired (controller gone).
    pub lease_expired: u64,
    /// Data-path errors: the packet was passed untouched and counted here
    /// (all causes; `error_causes` splits them).
    pub errors: u64,
    /// The same errors by cause; the fields sum to `errors`.
    pub error_causes: ErrorCounters,
}

impl GlobalCounters {
    /// Adds another CPU's counters.
    pub fn add(&mut self, o: &Self) {
        self.packets += o.packets;
        self.unmatched += o.unmatched;
        self.lease_expired += o.lease_expired;
        self.errors += o.errors;
        self.error_causes.add(&o.error_causes);
    }

    /// Counts one data-path error (the packet passes: fail open).
    #[inline(always)]
    pub fn count_error(&mut self, e: DataPathError) {
        self.errors += 1;
        self.error_causes.count(e);
    }
}

/// Why the data path gave up on a packet and passed it untouched (fail open).
/// Each cause is counted in its own [`ErrorCounters`] field.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataPathError {
    /// A map lookup found nothing (arrays looked up in range cannot fail,
    /// but the verifier makes the programs handle it).
    MapLookup,
    /// `bpf_skb_set_tstamp` refused the departure time.
    SetTstamp,
    /// `bpf_clone_redirect` could not send a duplicate (e.g. the device is down).
    CloneRedirect,
    /// Reading packet bytes failed (`bpf_skb_load_bytes`; outside the XDP frame).
    LoadBytes,
    /// Writing packet bytes failed (`bpf_skb_store_bytes`; outside the XDP frame).
    StoreBytes,
    /// Updating a checksum failed (`bpf_l3_csum_replace`/`bpf_l4_csum_replace`;
    /// outside the XDP frame).
    Csum,
}

/// Data-path errors by cause ([`DataPathError`]), inside [`GlobalCounters`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrorCounters {
    pub map_lookup: u64,
    pub set_tstamp: u64,
    pub clone_redirect: u64,
    pub load_bytes: u64,
    pub store_bytes: u64,
    pub csum: u64,
}

impl ErrorCounters {
    /// Counts one error of cause `e`.
    #[inline(always)]
    pub fn count(&mut self, e: DataPathError) {
        let n = match e {
            DataPathError::MapLookup => &mut self.map_lookup,
            DataPathError::SetTstamp => &mut self.set_tstamp,
            DataPathError::CloneRedirect => &mut self.clone_redirect,
            DataPathError::LoadBytes => &mut self.load_bytes,
            DataPathError::StoreBytes => &mut self.store_bytes,
            DataPathError::Csum => &mut self.csum,
        };
        *n += 1;
    }

    /// Adds another CPU's counters.
    pub fn add(&mut self, o: &Self) {
        self.map_lookup += o.map_lookup;
        self.set_tstamp += o.set_tstamp;
        self.clone_redirect += o.clone_redirect;
        self.load_bytes += o.load_bytes;
        self.store_bytes += o.store_bytes;
        self.csum += o.csum;
    }

    /// Every cause with its count, named as `impair stats` shows them (JSON
    /// keys), in declaration order.
    pub fn each(&self) -> [(&'static str, u64); 6] {
        [
            ("map_lookup", self.map_lookup),
            ("set_tstamp", self.set_tstamp),
            ("clone_redirect", self.clone_redirect),
            ("load_bytes", self.load_bytes),
            ("store_bytes", self.store_bytes),
            ("csum", self.csum),
        ]
    }
}

const _: () = {
    assert!(core::mem::size_of::<RuleCounters>() == 96);
    assert!(core::mem::size_of::<ErrorCounters>() == 48);
    assert!(core::mem::size_of::<GlobalCounters>() == 32 + 48);
    assert!(core::mem::size_of::<RuleCounters>() <= PERCPU_VALUE_MAX);
    assert!(core::mem::size_of::<GlobalCounters>() <= PERCPU_VALUE_MAX);
    // The data path increments counters in place with 8-byte adds.
    assert!(core::mem::size_of::<RuleCounters>().is_multiple_of(8));
    assert!(core::mem::size_of::<GlobalCounters>().is_multiple_of(8));
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is #[repr(C)], made only of u64 fields (and a struct
    // of u64 fields), with no padding (the size asserts above pin the layout),
    // so every bit pattern is a valid value and it can be copied to and from maps.
    unsafe impl aya::Pod for super::RuleCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GlobalCounters {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_count_by_cause_and_sum_to_the_total() {
        let causes = [
            DataPathError::MapLookup,
            DataPathError::SetTstamp,
            DataPathError::CloneRedirect,
            DataPathError::LoadBytes,
            DataPathError::StoreBytes,
            DataPathError::Csum,
        ];
        let mut g = GlobalCounters::default();
        for (n, e) in causes.iter().enumerate() {
            for _ in 0..=n {
                g.count_error(*e);
            }
        }
        let mut sum = GlobalCounters::default();
        sum.add(&g);
        sum.add(&g);
        let each = sum.error_causes.each();
        for (n, (_, v)) in each.iter().enumerate() {
            assert_eq!(*v, 2 * (n as u64 + 1), "{each:?}");
        }
        assert_eq!(sum.errors, each.iter().map(|(_, v)| v).sum::<u64>());
    }
}
