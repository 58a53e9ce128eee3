//! A bounds-checked header cursor (after xdp-tools' parsing-helpers) that fills
//! an `impair_common::PacketKey` from Ethernet, up to two VLAN tags, IPv4 or
//! IPv6 (with extension headers) and the first four bytes of TCP/UDP/SCTP.
//!
//! Anything it cannot read leaves the key partly filled: a frame that is not IP
//! keeps `ip_version == 0`, a fragment or a truncated L4 header keeps
//! `has_ports == 0`. Rules that need those fields then do not match, so such
//! packets pass: parsing never fails a packet.
use core::mem::size_of;

use impair_common::PacketKey;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    vlan::VlanHdr,
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_SCTP: u8 = 132;
const IPPROTO_UDPLITE: u8 = 136;

/// How many IPv6 extension headers are walked before giving up on the ports.
const MAX_EXT_HEADERS: u32 = 6;

/// Linear packet data `[pos, end)`; every read is checked against `end`.
pub struct Cursor {
    start: usize,
    pos: usize,
    end: usize,
}

impl Cursor {
    #[inline(always)]
    pub fn new(data: usize, end: usize) -> Self {
        Self {
            start: data,
            pos: data,
            end,
        }
    }

    /// Offset of the cursor from the start of the frame.
    #[inline(always)]
    fn offset(&self) -> u16 {
        (self.pos - self.start) as u16
    }

    /// A pointer to a `T` at the cursor, if it lies inside the packet.
    #[inline(always)]
    fn peek<T>(&self) -> Option<*const T> {
        if self.pos + size_of::<T>() > self.end {
            return None;
        }
        Some(self.pos as *const T)
    }

    #[inline(always)]
    fn take<T>(&mut self) -> Option<*const T> {
        let p = self.peek::<T>()?;
        self.pos += size_of::<T>();
        Some(p)
    }
}

#[inline(always)]
fn words4(a: &[u8; 4]) -> [u32; 4] {
    [u32::from_ne_bytes(*a), 0, 0, 0]
}

#[inline(always)]
fn words16(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

/// Parses from an Ethernet header at the cursor.
#[inline(always)]
pub fn parse_eth(mut c: Cursor, key: &mut PacketKey) {
    let Some(eth) = c.take::<EthHdr>() else {
        return;
    };
    // SAFETY: `take` checked that the header lies inside the packet.
    let mut proto = u16::from_be(unsafe { (*eth).ether_type });
    // Up to two tags (802.1ad outer, 802.1Q inner).
    for _ in 0..2 {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        let Some(vlan) = c.take::<VlanHdr>() else {
            return;
        };
        // SAFETY: bounds checked by `take`.
        proto = u16::from_be(unsafe { (*vlan).ether_type });
    }
    match proto {
        ETH_P_IP => parse_ipv4(c, key),
        ETH_P_IPV6 => parse_ipv6(c, key),
        _ => {}
    }
}

#[inline(always)]
fn parse_ipv4(mut c: Cursor, key: &mut PacketKey) {
    let Some(ip) = c.peek::<Ipv4Hdr>() else {
        return;
    };
    // SAFETY: bounds checked by `peek`.
    let ip = unsafe { &*ip };
    let ihl = usize::from(ip.vihl & 0x0f) * 4;
    if ip.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
        return;
    }
    key.ip_version = 4;
    key.l3_offset = c.offset();
    key.ecn = ip.tos & 3;
    key.l4_proto = ip.proto;
    key.src = words4(&ip.src_addr);
    key.dst = words4(&ip.dst_addr);
    let frag_off = u16::from_be_bytes(ip.frags) & 0x1fff;
    if frag_off != 0 {
        return; // not the first fragment: no L4 header here
    }
    c.pos += ihl;
    read_ports(&c, ip.proto, key);
}

#[inline(always)]
fn parse_ipv6(mut c: Cursor, key: &mut PacketKey) {
    let l3_offset = c.offset();
    let Some(ip) = c.take::<Ipv6Hdr>() else {
        return;
    };
    // SAFETY: bounds checked by `take`.
    let ip = unsafe { &*ip };
    if ip.vcf[0] >> 4 != 6 {
        return;
    }
    key.ip_version = 6;
    key.l3_offset = l3_offset;
    key.ecn = (ip.vcf[1] >> 4) & 3;
    key.src = words16(&ip.src_addr);
    key.dst = words16(&ip.dst_addr);
    let mut next = ip.next_hdr;
    for _ in 0..MAX_EXT_HEADERS {
        let len = match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT | IPPROTO_AH => {
                let Some(ext) = c.peek::<[u8; 4]>() else {
                    key.l4_proto = next;
                    return;
                };
                // SAFETY: bounds checked by `peek`.
                let ext = unsafe { &*ext };
                let len = if next == IPPROTO_FRAGMENT {
                    let frag_off = u16::from_be_bytes([ext[2], ext[3]]) & 0xfff8;
                    if frag_off != 0 {
                        key.l4_proto = ext[0];
                        return;
                    }
                    8
                } else if next == IPPROTO_AH {
                    (usize::from(ext[1]) + 2) * 4
                } else {
                    (usize::from(ext[1]) + 1) * 8
                };
                next = ext[0];
                len
            }
            _ => {
                key.l4_proto = next;
                read_ports(&c, next, key);
                return;
            }
        };
        c.pos += len;
    }
    key.l4_proto = next;
}

/// Records where L4 starts and, for TCP/UDP/SCTP, the ports and where the
/// payload starts (used to corrupt payload bytes, never headers).
#[inline(always)]
fn read_ports(c: &Cursor, proto: u8, key: &mut PacketKey) {
    key.l4_offset = c.offset();
    let hdr_len: u16 = match proto {
        IPPROTO_UDP | IPPROTO_UDPLITE | IPPROTO_ICMP | IPPROTO_ICMPV6 | IPPROTO_SCTP => 8,
        IPPROTO_TCP => {
            let Some(t) = c.peek::<[u8; 13]>() else {
                return;
            };
            // SAFETY: bounds checked by `peek`.
            let data_offset_words = unsafe { (*t)[12] } >> 4;
            // Below 5 words it is no TCP header: where its payload starts is
            // unknown, so nothing may be corrupted (0 = no payload).
            if data_offset_words < 5 {
                u16::MAX
            } else {
                u16::from(data_offset_words) * 4
            }
        }
        _ => 0,
    };
    key.payload_offset = if hdr_len == u16::MAX {
        0
    } else {
        key.l4_offset + hdr_len
    };
    if !matches!(
        proto,
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_UDPLITE
    ) {
        return;
    }
    let Some(ports) = c.peek::<[u8; 4]>() else {
        return;
    };
    // SAFETY: bounds checked by `peek`.
    let ports = unsafe { &*ports };
    key.sport = u16::from_be_bytes([ports[0], ports[1]]);
    key.dport = u16::from_be_bytes([ports[2], ports[3]]);
    key.has_ports = 1;
}
