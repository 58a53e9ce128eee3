//! The fuzz's frames: a fixed-seed generator, valid templates of every
//! shape the parser knows, the hand-made malformed seed corpus, and random
//! frames (structured headers, bit flips, random bytes).
use impair_tests::{packet::*, CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6};

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and fixed forever.
pub struct SplitMix(pub u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}

const NON_IP: [u16; 6] = [ETH_P_ARP, 0x88cc, 0x8847, 0x0000, 0x05dc, 0xffff];
const TAGS: [&[(u16, u16)]; 4] = [
    &[],
    &[(ETH_P_8021Q, 100)],
    &[(ETH_P_8021AD, 10), (ETH_P_8021Q, 100)],
    &[(ETH_P_8021AD, 10), (ETH_P_8021Q, 100), (ETH_P_8021Q, 7)],
];
/// IPv6 extension-header types: hop-by-hop, routing, fragment, destination
/// options, AH, ESP, no-next-header, mobility, HIP, shim6, experimental.
const EXT: [u8; 11] = [0, 43, 44, 60, 51, 50, 59, 135, 139, 140, 253];

/// An IPv4 header with options (`ihl` words) in front of `payload`.
fn ipv4_opts(ihl: u8, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut ip = ipv4(CLIENT_V4, SERVER_V4, proto, 0, &[]);
    ip[0] = 0x40 | (ihl & 0xf);
    ip.resize(usize::from(ihl) * 4, 1);
    let total = (ip.len() + payload.len()) as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(payload);
    ip
}

/// Valid frames of every shape the parser knows, tagged 0 to 3 times.
pub fn templates() -> Vec<Vec<u8>> {
    let ext = |n: usize| -> Vec<(u8, Vec<u8>)> {
        (0..n)
            .map(|i| ([0, 60, 43][i % 3], vec![1, 4, 0, 0, 0, 0]))
            .collect()
    };
    let mut t = Vec::new();
    for tags in TAGS {
        let ip4 = [
            ipv4(CLIENT_V4, SERVER_V4, 17, 0, &udp(1000, 53, &[7; 40])),
            ipv4(SERVER_V4, CLIENT_V4, 6, 0, &tcp(80, 40000)),
            ipv4(CLIENT_V4, SERVER_V4, 1, 0, &icmp_echo()),
            ipv4_opts(8, 17, &udp(5, 53, &[1; 20])),
        ];
        for ip in ip4 {
            t.push(eth(tags, ETH_P_IP, &ip));
        }
        for n in [0, 2, 6] {
            let ip = ipv6(CLIENT_V6, SERVER_V6, &ext(n), 17, &udp(9, 53, &[3; 24]));
            t.push(eth(tags, ETH_P_IPV6, &ip));
        }
        let first_frag = ipv6(
            CLIENT_V6,
            SERVER_V6,
            &[(44, vec![0, 0x01, 0, 0, 0, 1])],
            6,
            &tcp(443, 50000),
        );
        t.push(eth(tags, ETH_P_IPV6, &first_frag));
        t.push(eth(tags, ETH_P_ARP, &arp()));
    }
    t.push(udp4_csum(CLIENT_V4, SERVER_V4, 7, 9, 2, &[5; 33]));
    t.push(tcp4_csum(CLIENT_V4, SERVER_V4, 7, 9, &[5; 33]));
    t.push(udp6_csum(CLIENT_V6, SERVER_V6, 7, 9, 1, &[5; 33]));
    t
}

/// Hand-made malformed frames (the seed corpus).
pub fn corpus() -> Vec<Vec<u8>> {
    let udp53 = udp(1000, 53, &[0; 16]);
    let v4 = ipv4(CLIENT_V4, SERVER_V4, 17, 0, &udp53);
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut ip = v4.clone();
        f(&mut ip);
        ip
    };
    let mut c: Vec<Vec<u8>> = Vec::new();
    // IPv4: every IHL (0..4 invalid, 6..15 past the payload), bad total lengths.
    for ihl in 0..16u8 {
        c.push(eth(&[], ETH_P_IP, &with(&|ip| ip[0] = 0x40 | ihl)));
        c.push(eth(
            &[(ETH_P_8021Q, 1)],
            ETH_P_IP,
            &with(&|ip| ip[0] = 0x40 | ihl),
        ));
    }
    for total in [0u16, 1, 19, 20, 27, 28, 100, 0xffff] {
        c.push(eth(
            &[],
            ETH_P_IP,
            &with(&|ip| ip[2..4].copy_from_slice(&total.to_be_bytes())),
        ));
    }
    c.push(eth(&[], ETH_P_IP, &with(&|ip| ip[0] = 0x65))); // version 6 in an IPv4 ethertype
    c.push(eth(&[], ETH_P_IP, &with(&|ip| ip[6] = 0x20))); // more fragments, offset 0
    c.push(eth(
        &[],
        ETH_P_IP,
        &with(&|ip| ip[6..8].copy_from_slice(&[0x1f, 0xff])),
    ));
    c.push(eth(&[], ETH_P_IP, &ipv4_opts(15, 17, &udp53)));
    c.push(eth(&[], ETH_P_IP, &ipv4_opts(15, 6, &[0x50; 3])));
    // TCP data offsets 0 and 15; a UDP length of 0 and past the frame.
    let mut t = tcp(1, 2);
    t[12] = 0;
    c.push(eth(&[], ETH_P_IP, &ipv4(CLIENT_V4, SERVER_V4, 6, 0, &t)));
    t[12] = 0xf0;
    c.push(eth(&[], ETH_P_IP, &ipv4(CLIENT_V4, SERVER_V4, 6, 0, &t)));
    for ulen in [0u16, 7, 0xffff] {
        let mut u = udp53.clone();
        u[4..6].copy_from_slice(&ulen.to_be_bytes());
        c.push(eth(&[], ETH_P_IP, &ipv4(CLIENT_V4, SERVER_V4, 17, 0, &u)));
    }
    // IPv6: long chains, chains that look like loops (each header naming
    // the same type next), a length byte pointing 2 KiB past the frame,
    // no-next-header, ESP, a non-first fragment, bad payload lengths.
    let opts = |n: usize, ty: u8| -> Vec<(u8, Vec<u8>)> { vec![(ty, vec![1, 4, 0, 0, 0, 0]); n] };
    for (n, ty) in [(8, 0), (8, 60), (16, 60), (32, 43), (64, 60), (3, 51)] {
        let ip = ipv6(CLIENT_V6, SERVER_V6, &opts(n, ty), 17, &udp53);
        c.push(eth(&[], ETH_P_IPV6, &ip));
    }
    let mut looping = ipv6(
        CLIENT_V6,
        SERVER_V6,
        &opts(4, 60),
        60,
        &[60, 0, 1, 4, 0, 0, 0, 0],
    );
    c.push(eth(&[], ETH_P_IPV6, &looping));
    let hbh_len = 40 + 1;
    looping[hbh_len] = 255;
    c.push(eth(&[], ETH_P_IPV6, &looping));
    for next in [59u8, 50, 44, 255] {
        c.push(eth(
            &[],
            ETH_P_IPV6,
            &ipv6(CLIENT_V6, SERVER_V6, &[], next, &udp53),
        ));
    }
    let frag = ipv6(
        CLIENT_V6,
        SERVER_V6,
        &[(44, vec![0, 0x08, 0, 0, 0, 1])],
        17,
        &udp53,
    );
    c.push(eth(&[], ETH_P_IPV6, &frag));
    for plen in [0u16, 1, 0xffff] {
        let mut ip = ipv6(CLIENT_V6, SERVER_V6, &[], 17, &udp53);
        ip[4..6].copy_from_slice(&plen.to_be_bytes());
        c.push(eth(&[], ETH_P_IPV6, &ip));
    }
    let mut v4in6 = ipv6(CLIENT_V6, SERVER_V6, &[], 17, &udp53);
    v4in6[0] = 0x45;
    c.push(eth(&[], ETH_P_IPV6, &v4in6));
    // VLAN: a tag and nothing after it, five tags, a tag naming itself.
    c.push(eth(&[], ETH_P_8021Q, &[]));
    c.push(eth(&[], ETH_P_8021Q, &[0, 1]));
    let five = [
        (ETH_P_8021AD, 1),
        (ETH_P_8021Q, 2),
        (ETH_P_8021Q, 3),
        (ETH_P_8021Q, 4),
        (ETH_P_8021Q, 5),
    ];
    c.push(eth(&five, ETH_P_IP, &v4));
    c.push(eth(&[(ETH_P_8021Q, 1)], ETH_P_8021Q, &[0, 1, 0x81, 0]));
    // Non-IP and sizes at the harness's edges.
    for ty in NON_IP {
        c.push(eth(&[], ty, &[0xaa; 46]));
    }
    c.push(vec![0; 14]);
    c.push(vec![0xff; 60]);
    c.push(Vec::new());
    c
}

/// A frame with random IPv4 or IPv6 headers: IHL, total/payload length,
/// protocol, fragment bits and extension-header chains drawn at random.
fn structured(r: &mut SplitMix) -> Vec<u8> {
    let tags = r.pick(&TAGS);
    let payload = {
        let n = r.below(48);
        match r.below(3) {
            0 => udp(
                r.next() as u16,
                r.pick(&[53u16, 80, 443, 5000]),
                &r.bytes(n),
            ),
            1 => {
                let mut t = tcp(r.pick(&[80u16, 40000]), r.next() as u16);
                t[12] = r.byte();
                t
            }
            _ => r.bytes(n),
        }
    };
    let proto = r.pick(&[6u8, 17, 1, 58, 132, 0, 255]);
    if r.below(2) == 0 {
        let mut ip = ipv4(CLIENT_V4, SERVER_V4, proto, 0, &payload);
        ip[0] = 0x40 | r.pick(&[0u8, 3, 4, 5, 5, 5, 6, 7, 15]);
        if r.below(3) == 0 {
            ip[2..4].copy_from_slice(&(r.next() as u16).to_be_bytes());
        }
        if r.below(4) == 0 {
            ip[6] = r.byte();
        }
        eth(tags, ETH_P_IP, &ip)
    } else {
        let n = r.below(12);
        let ext: Vec<(u8, Vec<u8>)> = (0..n)
            .map(|_| {
                let len = r.below(24);
                (r.pick(&EXT), r.bytes(len))
            })
            .collect();
        let mut ip = ipv6(CLIENT_V6, SERVER_V6, &ext, proto, &payload);
        if n > 0 && r.below(4) == 0 {
            // A random length byte in a random extension header.
            let at = 40 + 1 + 8 * r.below(n);
            if at < ip.len() {
                ip[at] = r.byte();
            }
        }
        if r.below(4) == 0 {
            ip[4..6].copy_from_slice(&(r.next() as u16).to_be_bytes());
        }
        eth(tags, ETH_P_IPV6, &ip)
    }
}

/// A random frame: structured headers, a valid frame with 1 to 8 bits
/// flipped (mostly in the headers), or random bytes behind a random or IP
/// ethertype.
pub fn random_frame(r: &mut SplitMix, valid: &[Vec<u8>]) -> Vec<u8> {
    match r.below(3) {
        0 => structured(r),
        1 => {
            let mut f = r.pick_ref(valid).clone();
            for _ in 0..=r.below(8) {
                let span = if r.below(4) == 0 {
                    f.len()
                } else {
                    f.len().min(80)
                };
                let at = r.below(span);
                f[at] ^= 1 << r.below(8);
            }
            f
        }
        _ => {
            let n = r.below(200);
            let mut f = r.bytes(n);
            if f.len() >= 14 && r.below(2) == 0 {
                let ty = r.pick(&[ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD, ETH_P_ARP]);
                f[12..14].copy_from_slice(&ty.to_be_bytes());
            }
            f
        }
    }
}

impl SplitMix {
    fn pick_ref<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}
