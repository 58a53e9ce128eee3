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
    /// Wire bytes (with the rule's overhead and cells) the rule set's rate
    /// trace carried: those of packets that got their departure time from
    /// the trace and went on to fq (what the trace delivered; packets the
    /// trace's queue limit dropped, or a later stage did, are not in it).
    /// Map ABI version 2 reserved this word (always 0), so an instance of
    /// an older build reads 0 here.
    pub trace_bytes: u64,
    /// Wire packets that matched the rule: the segments a GSO/GRO
    /// super-packet becomes on the wire (`gso_segs`, 1 for a plain packet).
    /// `packets` counts skbs.
    pub wire_packets: u64,
    /// Wire bytes that matched: `bytes` plus the headers (L2 to L4) each
    /// further segment of a super-packet carries on the wire.
    pub wire_bytes: u64,
    /// Wire packets in the skbs dropped for any cause (loss, blackhole, MTU,
    /// queue limit): what a receiver misses and a TCP sender retransmits.
    pub dropped_wire_packets: u64,
    /// Super-packets (skbs of more than one wire packet) that matched and
    /// got one decision for all their wire packets (offloads kept on).
    pub super_packets: u64,
}

/// How many wire packets an skb is: `gso_segs`, where 0 means a plain
/// (non-GSO) packet, i.e. one.
#[inline(always)]
pub fn wire_segments(gso_segs: u32) -> u32 {
    if gso_segs == 0 {
        1
    } else {
        gso_segs
    }
}

/// Wire bytes of an skb of `len` bytes in `segs` wire packets whose headers
/// (L2 to L4) are `hdr_len` bytes: every segment after the first repeats them.
#[inline(always)]
pub fn wire_len(len: u32, segs: u32, hdr_len: u32) -> u64 {
    u64::from(len) + u64::from(segs.saturating_sub(1)) * u64::from(hdr_len)
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
        self.trace_bytes += o.trace_bytes;
        self.wire_packets += o.wire_packets;
        self.wire_bytes += o.wire_bytes;
        self.dropped_wire_packets += o.dropped_wire_packets;
        self.super_packets += o.super_packets;
    }

    /// Counts a matching skb of `len` bytes in `segs` wire packets
    /// ([`wire_segments`]) with `hdr_len` bytes of headers.
    #[inline(always)]
    pub fn count_match(&mut self, len: u32, segs: u32, hdr_len: u32) {
        self.packets += 1;
        self.bytes += u64::from(len);
        if segs > 1 {
            self.wire_packets += u64::from(segs);
            self.wire_bytes += wire_len(len, segs, hdr_len);
            self.super_packets += 1;
        } else {
            // One wire packet (almost every packet): no header arithmetic.
            self.wire_packets += 1;
            self.wire_bytes += u64::from(len);
        }
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
    assert!(core::mem::size_of::<RuleCounters>() == 96 + 32);
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
    fn wire_packets_and_bytes_of_plain_and_super_packets() {
        assert_eq!(wire_segments(0), 1);
        assert_eq!(wire_segments(1), 1);
        assert_eq!(wire_segments(44), 44);
        assert_eq!(wire_len(1514, 1, 66), 1514);
        assert_eq!(wire_len(66 + 3 * 1448, 3, 66), 3 * 1514);
        let mut c = RuleCounters::default();
        c.count_match(1514, 1, 66);
        c.count_match(66 + 3 * 1448, 3, 66);
        assert_eq!((c.packets, c.wire_packets, c.super_packets), (2, 4, 1));
        assert_eq!(c.bytes, 1514 + 66 + 3 * 1448);
        assert_eq!(c.wire_bytes, 4 * 1514);
        let mut sum = RuleCounters::default();
        sum.add(&c);
        sum.add(&c);
        assert_eq!(
            (sum.wire_packets, sum.wire_bytes, sum.super_packets),
            (8, 8 * 1514, 2)
        );
    }

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
