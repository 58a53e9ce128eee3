//! Crafted frames for BPF_PROG_TEST_RUN: Ethernet, VLAN tags, IPv4 (with
//! fragments), IPv6 (with extension headers), UDP, TCP, ICMP, ARP.
use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;

/// Ethernet frame with optional VLAN tags (outermost first).
pub fn eth(vlans: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    for &(tpid, vid) in vlans {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn csum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// IPv4 packet; `frag_offset_units` is the fragment offset in 8-byte units.
pub fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    frag_offset_units: u16,
    payload: &[u8],
) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut h = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 1];
    h.extend_from_slice(&(frag_offset_units & 0x1fff).to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let c = csum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// IPv6 packet; `ext` are extension headers as (type, body) where the body
/// is padded to 8-byte units and given its next-header and length bytes here.
pub fn ipv6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ext: &[(u8, Vec<u8>)],
    l4_proto: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut chain = Vec::new();
    for (i, (_, body)) in ext.iter().enumerate() {
        let next = ext.get(i + 1).map(|e| e.0).unwrap_or(l4_proto);
        let mut b = vec![next, 0];
        b.extend_from_slice(body);
        while b.len() % 8 != 0 {
            b.push(0);
        }
        b[1] = (b.len() / 8 - 1) as u8;
        chain.extend_from_slice(&b);
    }
    let first = ext.first().map(|e| e.0).unwrap_or(l4_proto);
    let plen = chain.len() + payload.len();
    let mut h = vec![0x60, 0, 0, 0, (plen >> 8) as u8, plen as u8, first, 64];
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(&chain);
    h.extend_from_slice(payload);
    h
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut u = Vec::with_capacity(len);
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&(len as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

pub fn tcp(sport: u16, dport: u16) -> Vec<u8> {
    let mut t = Vec::with_capacity(20);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

pub fn icmp_echo() -> Vec<u8> {
    vec![8, 0, 0xf7, 0xff, 0, 0, 0, 0]
}

pub fn arp() -> Vec<u8> {
    let mut a = vec![
        0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 198, 18, 1, 1, 0, 0, 0, 0, 0, 0, 198, 18, 1, 254,
    ];
    a.resize(28, 0);
    a
}

pub fn udp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    eth(
        &[],
        ETH_P_IP,
        &ipv4(src, dst, 17, 0, &udp(sport, dport, &[0xab; 32])),
    )
}

pub fn udp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16) -> Vec<u8> {
    eth(
        &[],
        ETH_P_IPV6,
        &ipv6(src, dst, &[], 17, &udp(sport, dport, &[0xab; 32])),
    )
}

/// Ones'-complement sum of `data` folded to 16 bits (not complemented).
fn sum16(data: &[u8], mut sum: u32) -> u32 {
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

fn pseudo4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let mut p = Vec::new();
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    sum16(&p, 0)
}

/// A UDP datagram with its checksum over `pseudo(length)` (the folded sum of
/// the IP version's pseudo-header) and itself; a computed 0 is sent as
/// 0xffff, since 0 means "no checksum".
fn udp_checked(
    sport: u16,
    dport: u16,
    payload: &[u8],
    pseudo: impl FnOnce(usize) -> u32,
) -> Vec<u8> {
    let mut u = udp(sport, dport, payload);
    let c = !(sum16(&u, pseudo(u.len())) as u16);
    u[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    u
}

/// IPv4/UDP frame with correct IP and UDP checksums, and an ECN field.
pub fn udp4_csum(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    ecn: u8,
    payload: &[u8],
) -> Vec<u8> {
    let u = udp_checked(sport, dport, payload, |len| pseudo4(src, dst, 17, len));
    let mut ip = ipv4(src, dst, 17, 0, &u);
    ip[1] = ecn & 3;
    ip[10..12].copy_from_slice(&[0, 0]);
    let hc = csum(&ip[..20]);
    ip[10..12].copy_from_slice(&hc.to_be_bytes());
    eth(&[], ETH_P_IP, &ip)
}

/// Whether the IPv4 header checksum of an untagged frame verifies.
pub fn ipv4_header_ok(frame: &[u8]) -> bool {
    sum16(&frame[14..34], 0) == 0xffff
}

/// Whether the UDP checksum of an untagged IPv4 frame verifies.
pub fn udp4_csum_ok(frame: &[u8]) -> bool {
    let ip = &frame[14..];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let u = &ip[20..];
    sum16(u, pseudo4(src, dst, 17, u.len())) == 0xffff
}

fn pseudo6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, len: usize) -> u32 {
    let mut p = Vec::new();
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, proto]);
    sum16(&p, 0)
}

/// IPv4/TCP frame (20-byte TCP header, then `payload`) with correct IP and
/// TCP checksums.
pub fn tcp4_csum(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut t = tcp(sport, dport);
    t.extend_from_slice(payload);
    let c = !(sum16(&t, pseudo4(src, dst, 6, t.len())) as u16);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    eth(&[], ETH_P_IP, &ipv4(src, dst, 6, 0, &t))
}

/// Whether the TCP checksum of an untagged IPv4 frame (20-byte IP header) verifies.
pub fn tcp4_csum_ok(frame: &[u8]) -> bool {
    let ip = &frame[14..];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let t = &ip[20..];
    sum16(t, pseudo4(src, dst, 6, t.len())) == 0xffff
}

/// IPv6/UDP frame (no extension headers) with a correct UDP checksum and the
/// given ECN bits in the traffic class.
pub fn udp6_csum(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    ecn: u8,
    payload: &[u8],
) -> Vec<u8> {
    let u = udp_checked(sport, dport, payload, |len| pseudo6(src, dst, 17, len));
    let mut ip = ipv6(src, dst, &[], 17, &u);
    ip[1] |= (ecn & 3) << 4;
    eth(&[], ETH_P_IPV6, &ip)
}

/// Whether the UDP checksum of an untagged IPv6 frame without extension
/// headers verifies.
pub fn udp6_csum_ok(frame: &[u8]) -> bool {
    let ip = &frame[14..];
    let addr = |o: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&ip[o..o + 16]).unwrap_or([0; 16]));
    let u = &ip[40..];
    sum16(u, pseudo6(addr(8), addr(24), 17, u.len())) == 0xffff
}
