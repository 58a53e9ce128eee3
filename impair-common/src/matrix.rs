//! Latency matrices: per-destination delay, jitter, loss and rate for up to
//! [`MATRIX_MAX_DESTS`] prefixes per rule set, in one BPF LPM trie
//! (`IMPAIR_MATRIX`) keyed by (rule, destination prefix).
//!
//! A rule with [`crate::rule_flags::MATRIX`] looks up its packet's
//! destination (one trie lookup, only for such rules); the most specific
//! prefix wins. What the entry sets acts as a link of its own after the
//! rule's impairments: its loss after the rule's loss, its delay (and
//! uniform jitter) added to the rule's departure time, its rate in series
//! behind the rule's rate, with its own rate state in the entry.
//!
//! The key's first word is the rule's `IMPAIR_RULES` index (which includes
//! the rule-set slot), always matched in full, so the two slots hold two
//! independent matrices and `impair update` swaps them with the slot flip.
//! IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`), so one trie
//! serves both families.

use crate::{PacketKey, SLOTS};

/// Destination prefixes per rule set (the sum over its rules' matrices).
pub const MATRIX_MAX_DESTS: u32 = 100_000;
/// Entries of the trie: both rule-set slots.
pub const MATRIX_ENTRIES: u32 = MATRIX_MAX_DESTS * SLOTS;

/// Bits of the key before the address: the rule index.
pub const MATRIX_RULE_BITS: u32 = 32;
/// Bits of an IPv4-mapped IPv6 address before the IPv4 address.
pub const V4_MAPPED_BITS: u32 = 96;

/// The trie key's data (the map key is `prefix_len: u32` followed by this):
/// the rule index (native order; always matched whole) and the destination
/// as four network-order words, IPv4 mapped into IPv6.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MatrixAddr {
    pub rule: u32,
    pub addr: [u32; 4],
}

/// `MatrixEntry::flags` bits: which parameters the entry sets.
pub mod matrix_flags {
    pub const DELAY: u32 = 1 << 0;
    pub const LOSS: u32 = 1 << 1;
    pub const RATE: u32 = 1 << 2;
}

/// One destination's parameters and state (the trie's value). The
/// controller writes the parameters and zeroes the rest; the data path
/// advances `rate_state_ns` with a compare-and-swap and adds to the counters
/// atomically (the value is shared by all CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MatrixEntry {
    /// Added delay, ns.
    pub delay_ns: u64,
    /// Uniform jitter half-width, ns.
    pub jitter_ns: u64,
    /// This destination's rate, picoseconds per wire byte; 0: none.
    pub rate_ps_per_byte: u64,
    /// Queue limit of this destination's rate, ns; 0: none.
    pub queue_limit_ns: u64,
    /// Loss probability as a u32 threshold ([`crate::prob`]).
    pub loss_u32: u32,
    /// [`matrix_flags`] bits.
    pub flags: u32,
    /// Departure time of the last packet on this destination's link.
    pub rate_state_ns: u64,
    /// Packets (skbs) that reached this entry.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Dropped by this entry's loss.
    pub dropped_loss: u64,
    /// Dropped by this entry's queue limit.
    pub dropped_queue: u64,
}

const _: () = {
    assert!(core::mem::size_of::<MatrixAddr>() == 20);
    assert!(core::mem::size_of::<MatrixEntry>() == 80);
};

/// `::ffff:0:0/96`'s third word, in network order.
const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

impl MatrixAddr {
    /// The key data for an IPv4 address (network-order bytes).
    pub fn v4(rule: u32, octets: [u8; 4]) -> Self {
        Self {
            rule,
            addr: [0, 0, V4_MAPPED_WORD, u32::from_ne_bytes(octets)],
        }
    }

    /// The key data for an IPv6 address.
    pub fn v6(rule: u32, octets: [u8; 16]) -> Self {
        let w = |i: usize| {
            u32::from_ne_bytes([
                octets[4 * i],
                octets[4 * i + 1],
                octets[4 * i + 2],
                octets[4 * i + 3],
            ])
        };
        Self {
            rule,
            addr: [w(0), w(1), w(2), w(3)],
        }
    }

    /// The key data for a parsed packet's destination, or `None` when the
    /// frame is not IP.
    #[inline(always)]
    pub fn of_packet(rule: u32, k: &PacketKey) -> Option<Self> {
        match k.ip_version {
            4 => Some(Self {
                rule,
                addr: [0, 0, V4_MAPPED_WORD, k.dst[0]],
            }),
            6 => Some(Self { rule, addr: k.dst }),
            _ => None,
        }
    }
}

/// The trie's `prefix_len` for an IPv4 prefix of `len` bits.
pub const fn v4_prefix_len(len: u8) -> u32 {
    MATRIX_RULE_BITS + V4_MAPPED_BITS + len as u32
}

/// The trie's `prefix_len` for an IPv6 prefix of `len` bits.
pub const fn v6_prefix_len(len: u8) -> u32 {
    MATRIX_RULE_BITS + len as u32
}

/// The trie's `prefix_len` of a packet's full address (the lookup key).
pub const FULL_PREFIX_LEN: u32 = MATRIX_RULE_BITS + 128;

impl MatrixEntry {
    /// Whether the entry sets a departure time (delay or rate).
    #[inline(always)]
    pub fn schedules(&self) -> bool {
        self.delay_ns | self.jitter_ns | self.rate_ps_per_byte != 0
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], integers only, no padding (size asserts above).
    unsafe impl aya::Pod for super::MatrixAddr {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MatrixEntry {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_packet_key_equals_mapped_prefix_key() {
        let k = PacketKey {
            ip_version: 4,
            dst: [u32::from_ne_bytes([198, 18, 3, 4]), 0, 0, 0],
            ..Default::default()
        };
        assert_eq!(
            MatrixAddr::of_packet(7, &k),
            Some(MatrixAddr::v4(7, [198, 18, 3, 4]))
        );
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12..].copy_from_slice(&[198, 18, 3, 4]);
        assert_eq!(
            MatrixAddr::v4(7, [198, 18, 3, 4]),
            MatrixAddr::v6(7, mapped)
        );
        assert_eq!(MatrixAddr::of_packet(7, &PacketKey::default()), None);
    }

    #[test]
    fn prefix_lengths_cover_rule_and_address() {
        assert_eq!(v4_prefix_len(32), FULL_PREFIX_LEN);
        assert_eq!(v6_prefix_len(128), FULL_PREFIX_LEN);
        assert_eq!(v4_prefix_len(0), 128);
        assert_eq!(v6_prefix_len(0), 32);
    }
}
