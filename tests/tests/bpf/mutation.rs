//! What impairments do to the bytes, at every hook: ECN marks with a valid
//! IPv4 header checksum, the MTU blackhole, blackholes, and detectable and
//! silent corruption of UDP and TCP over IPv4 and UDP over IPv6 (the XDP
//! program's incremental checksum update, RFC 1624, must agree with the skb
//! helpers).
use impair::model::{CorruptMode, RuleSpec};
use impair_tests::{
    bpf::{bit_differences, checked_frame, counters, dst, load, run, run_out, Checked, ALL_HOOKS},
    packet::*,
    CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6,
};

fn corrupt_rule(mode: CorruptMode) -> RuleSpec {
    RuleSpec {
        corrupt: Some(1.0),
        corrupt_mode: mode,
        ..Default::default()
    }
}

#[test]
fn ecn_marks_capable_packets_with_a_valid_checksum_and_drops_the_rest() {
    for p in ALL_HOOKS {
        let mut l = load(&[RuleSpec {
            loss: Some(1.0),
            ecn: true,
            ..Default::default()
        }]);
        for ecn in [0b01, 0b10, 0b11] {
            let f = udp4_csum(CLIENT_V4, SERVER_V4, 1, 2, ecn, &[7; 40]);
            let (ok, out) = run_out(&mut l, p, &f);
            assert!(ok, "{p:?}");
            assert_eq!(out[15] & 3, 3, "{p:?}: CE set");
            assert!(
                ipv4_header_ok(&out),
                "{p:?}: IPv4 header checksum updated (ECN {ecn:#b})"
            );
            assert!(udp4_csum_ok(&out), "{p:?}: UDP untouched");
            let unchanged = |f: &[u8]| [&f[..15], &f[16..24], &f[26..]].concat();
            assert_eq!(
                unchanged(&out),
                unchanged(&f),
                "{p:?}: nothing but TOS and checksum changed"
            );
        }
        let not_ect = udp4_csum(CLIENT_V4, SERVER_V4, 1, 2, 0, &[7; 40]);
        assert!(!run_out(&mut l, p, &not_ect).0, "{p:?}: not ECT: dropped");
        // IPv6: ECN lives in bits 4-5 of the second byte; the UDP checksum
        // does not cover the traffic class.
        let v6 = udp6_csum(CLIENT_V6, SERVER_V6, 1, 2, 0b01, &[7; 40]);
        let (ok, out) = run_out(&mut l, p, &v6);
        assert!(ok, "{p:?}");
        assert_eq!((out[15] >> 4) & 3, 3, "{p:?}");
        assert!(udp6_csum_ok(&out), "{p:?}");
        let c = counters(&l, 0);
        assert_eq!((c.ecn_marked, c.dropped_loss, c.passed), (4, 1, 4), "{p:?}");
    }
}

#[test]
fn mtu_blackhole_drops_only_larger_ip_packets() {
    for p in ALL_HOOKS {
        let mut l = load(&[RuleSpec {
            mtu_bytes: Some(100),
            ..Default::default()
        }]);
        // IP length = 20 + 8 + payload.
        let fits = udp4_csum(CLIENT_V4, SERVER_V4, 1, 2, 0, &[0; 72]);
        assert!(run_out(&mut l, p, &fits).0, "{p:?}");
        let too_big = udp4_csum(CLIENT_V4, SERVER_V4, 1, 2, 0, &[0; 73]);
        assert!(!run_out(&mut l, p, &too_big).0, "{p:?}");
        let c = counters(&l, 0);
        assert_eq!((c.dropped_mtu, c.passed), (1, 1), "{p:?}");
    }
}

/// A blackhole drops everything its rule matches (IPv4 and IPv6 prefixes),
/// and nothing else.
#[test]
fn blackhole_drops_everything_matched() {
    for p in ALL_HOOKS {
        let mut l = load(&[RuleSpec {
            blackhole: true,
            matcher: dst("198.18.2.0/24"),
            ..Default::default()
        }]);
        assert!(
            !run(&mut l, p, &udp4(CLIENT_V4, SERVER_V4, 1, 2), 100),
            "{p:?}"
        );
        assert_eq!(counters(&l, 0).dropped_loss, 100, "{p:?}");
        let other = udp4(CLIENT_V4, "198.18.3.1".parse().unwrap(), 1, 2);
        assert!(run(&mut l, p, &other, 1), "{p:?}");

        let mut l = load(&[RuleSpec {
            blackhole: true,
            matcher: dst("2001:2:0:2::/64"),
            ..Default::default()
        }]);
        assert!(
            !run(&mut l, p, &udp6(CLIENT_V6, SERVER_V6, 1, 2), 100),
            "{p:?}"
        );
        assert_eq!(counters(&l, 0).dropped_loss, 100, "{p:?}");
        assert!(
            run(&mut l, p, &udp4(CLIENT_V4, SERVER_V4, 1, 2), 1),
            "{p:?}: IPv4 does not match an IPv6 prefix"
        );
    }
}

/// Detectable corruption, for UDP and TCP over IPv4 and UDP over IPv6 (200
/// frames of each): one payload bit flipped, one bit of the L4 checksum field
/// too and nothing else, and the L4 checksum fails at the receiver.
#[test]
fn detectable_corruption_breaks_the_checksum() {
    for p in ALL_HOOKS {
        let mut l = load(&[corrupt_rule(CorruptMode::Detectable)]);
        for i in 0..600u16 {
            let Checked {
                frame: f,
                payload_start,
                csum_offset,
                csum_ok,
            } = checked_frame(i, (i % 251) as u8);
            let (ok, out) = run_out(&mut l, p, &f);
            assert!(ok, "{p:?}");
            let diffs = bit_differences(&f, &out);
            let in_payload: Vec<_> = diffs.iter().filter(|(o, _)| *o >= payload_start).collect();
            assert_eq!(
                in_payload.len(),
                1,
                "{p:?}: one payload byte changed: {diffs:?}"
            );
            assert_eq!(in_payload[0].1, 1, "{p:?}: by one bit");
            assert_eq!(
                diffs.len(),
                2,
                "{p:?}: the payload byte and one checksum byte: {diffs:?}"
            );
            assert!(
                diffs
                    .iter()
                    .all(|(o, _)| *o >= payload_start || (csum_offset..csum_offset + 2).contains(o)),
                "{p:?}: only payload and L4 checksum: {diffs:?}"
            );
            assert!(
                !csum_ok(&out),
                "{p:?}: the receiver's checksum must catch it (iteration {i})"
            );
            if i % 3 != 2 {
                assert!(ipv4_header_ok(&out), "{p:?}");
            }
        }
        assert_eq!(counters(&l, 0).corrupted, 600, "{p:?}");
    }
}

/// Silent corruption keeps UDP (IPv4, IPv6) and TCP checksums valid (200
/// frames of each).
#[test]
fn silent_corruption_keeps_the_checksum_valid() {
    for p in ALL_HOOKS {
        let mut l = load(&[corrupt_rule(CorruptMode::Silent)]);
        for i in 0..600u16 {
            let Checked {
                frame: f,
                payload_start,
                csum_ok,
                ..
            } = checked_frame(i, (i % 251) as u8);
            let (_, out) = run_out(&mut l, p, &f);
            let payload_diffs = bit_differences(&f[payload_start..], &out[payload_start..]);
            assert_eq!(payload_diffs.len(), 1, "{p:?}");
            assert_eq!(payload_diffs[0].1, 1, "{p:?}");
            assert!(
                csum_ok(&out),
                "{p:?}: silent corruption must verify (iteration {i})"
            );
        }
        assert_eq!(counters(&l, 0).corrupted, 600, "{p:?}");
    }
}

/// Odd payload lengths: the last byte is the high half of a word the
/// checksum pads with zero. Silent corruption stays valid there too, and is
/// never an error.
#[test]
fn silent_corruption_of_odd_length_payloads_stays_valid_at_every_hook() {
    for p in ALL_HOOKS {
        let mut l = load(&[corrupt_rule(CorruptMode::Silent)]);
        for i in 0..300u16 {
            // 1 to 5 payload bytes: the last (odd) byte is often the one hit.
            let payload: Vec<u8> = (0..(i % 5 + 1))
                .map(|b| (i as u8).wrapping_add(b as u8))
                .collect();
            let f = udp4_csum(CLIENT_V4, SERVER_V4, 1000 + i, 2, 0, &payload);
            let (_, out) = run_out(&mut l, p, &f);
            assert_eq!(bit_differences(&f[42..], &out[42..]).len(), 1, "{p:?}");
            assert!(
                udp4_csum_ok(&out),
                "{p:?}: iteration {i}, {} payload bytes",
                payload.len()
            );
        }
        assert_eq!(counters(&l, 0).corrupted, 300, "{p:?}");
        assert_eq!(l.maps.global_counters().unwrap().errors, 0, "{p:?}");
    }
}

/// A UDP/IPv4 checksum of 0 means "none": silent corruption leaves it 0
/// (as BPF_F_MARK_MANGLED_0 does at tc).
#[test]
fn silent_corruption_leaves_a_missing_udp_checksum_missing() {
    for p in ALL_HOOKS {
        let mut l = load(&[corrupt_rule(CorruptMode::Silent)]);
        let f = udp4(CLIENT_V4, SERVER_V4, 1, 2); // built with checksum 0
        let (_, out) = run_out(&mut l, p, &f);
        assert_eq!(&out[40..42], &[0, 0], "{p:?}");
        assert_eq!(bit_differences(&f, &out).len(), 1, "{p:?}");
    }
}

#[test]
fn corruption_skips_packets_without_payload() {
    for p in ALL_HOOKS {
        let mut l = load(&[corrupt_rule(CorruptMode::Detectable)]);
        let f = udp4_csum(CLIENT_V4, SERVER_V4, 1, 2, 0, &[]);
        let (ok, out) = run_out(&mut l, p, &f);
        assert!(ok, "{p:?}");
        assert_eq!(out, f, "{p:?}");
        assert_eq!(counters(&l, 0).corrupted, 0, "{p:?}");
    }
}
