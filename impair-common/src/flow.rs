//! A packet's flow hash for in-order delay (`IMPAIR_FLOWS`), computed from
//! the headers the parser already read (`PacketKey`): the same 5-tuple the
//! kernel's own flow hash covers (addresses, L4 protocol, ports), without
//! the helper call and the flow dissector run that `bpf_get_hash_recalc`
//! costs for every skb that arrives without a hash (forwarded packets, the
//! benchmark's test runs). Frames that are not IP have no 5-tuple: the data
//! path hashes those with the kernel's helper, as before.
//!
//! Two flows that collide only share their in-order state (one waits for
//! the other's departure times), so the hash needs to spread, not to be
//! cryptographic: each 64-bit word of the tuple is folded in with a
//! multiply and a shift (the finaliser of SplitMix64, `crate::rng`).
use crate::PacketKey;

/// Mixes `w` into `h`.
#[inline(always)]
fn fold(h: u64, w: u64) -> u64 {
    let mut z = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z ^= z >> 31;
    z
}

/// The flow hash of an IP packet's key (`k.ip_version` 4 or 6): addresses,
/// protocol and ports (0 when the packet has none, e.g. a later fragment).
#[inline(always)]
pub fn flow_hash(k: &PacketKey) -> u32 {
    let ports = (u64::from(k.sport) << 16) | u64::from(k.dport);
    let mut h = fold(
        u64::from(k.ip_version) << 40 | u64::from(k.l4_proto) << 32,
        ports,
    );
    h = fold(h, u64::from(k.src[0]) | u64::from(k.src[1]) << 32);
    h = fold(h, u64::from(k.src[2]) | u64::from(k.src[3]) << 32);
    h = fold(h, u64::from(k.dst[0]) | u64::from(k.dst[1]) << 32);
    h = fold(h, u64::from(k.dst[2]) | u64::from(k.dst[3]) << 32);
    (h ^ (h >> 32)) as u32
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::HashSet;

    use super::*;

    fn v4(src: u32, dst: u32, sport: u16, dport: u16) -> PacketKey {
        PacketKey {
            ip_version: 4,
            l4_proto: 17,
            has_ports: 1,
            sport,
            dport,
            src: [src.to_be(), 0, 0, 0],
            dst: [dst.to_be(), 0, 0, 0],
            ..Default::default()
        }
    }

    #[test]
    fn depends_on_every_field_of_the_tuple() {
        let base = v4(0xc612_0001, 0xc612_0102, 1000, 2000);
        let h = flow_hash(&base);
        assert_eq!(h, flow_hash(&base), "deterministic");
        let mut other = base;
        other.sport = 1001;
        assert_ne!(h, flow_hash(&other));
        other = base;
        other.dport = 2001;
        assert_ne!(h, flow_hash(&other));
        other = base;
        other.l4_proto = 6;
        assert_ne!(h, flow_hash(&other));
        other = base;
        other.src[0] = 0xc612_0003u32.to_be();
        assert_ne!(h, flow_hash(&other));
        other = base;
        other.dst[0] = 0xc612_0103u32.to_be();
        assert_ne!(h, flow_hash(&other));
        other = base;
        other.dst[3] = 1;
        assert_ne!(h, flow_hash(&other), "every IPv6 word counts");
        // Swapped ports are another flow (the other direction).
        assert_ne!(h, flow_hash(&v4(0xc612_0001, 0xc612_0102, 2000, 1000)));
        // Fields outside the tuple do not.
        other = base;
        other.ecn = 3;
        other.l3_offset = 18;
        other.payload_offset = 50;
        assert_eq!(h, flow_hash(&other));
    }

    /// 65,536 flows that differ in one port collide about as often as a
    /// random 32-bit hash would (expected about 0.5 pairs).
    #[test]
    fn spreads_neighbouring_flows() {
        let mut seen = HashSet::new();
        let mut collisions = 0;
        for sport in 0..=u16::MAX {
            if !seen.insert(flow_hash(&v4(0xc612_0001, 0xc612_0102, sport, 443))) {
                collisions += 1;
            }
        }
        assert!(collisions <= 4, "{collisions} collisions");
    }
}
