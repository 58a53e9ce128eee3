//! Parse paths and rule matching at every hook: IPv4/IPv6 prefixes,
//! protocols, port ranges behind extension headers and VLAN tags, first match
//! wins, all 64 rules reachable, and fail-open on fragments, truncated
//! headers, non-IP frames and garbage.
use aya::programs::TestRunOptions;
use impair::{
    model::units::{parse_cidr, parse_proto},
    model::{MatchSpec, RuleSpec},
};
use impair_common::MAX_RULES;
use impair_tests::{
    bpf::{counters, drop_all, dst, load, passed, run, run_out, test_run, ALL_HOOKS},
    packet::*,
    CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6,
};

#[test]
fn unmatched_packet_passes_untouched() {
    for p in ALL_HOOKS {
        let mut l = load(&[drop_all(dst("198.18.3.0/24"))]);
        let f = udp4(CLIENT_V4, SERVER_V4, 1000, 2000);
        let mut out = vec![0u8; f.len() + 64];
        let opts = TestRunOptions {
            data_in: Some(&f),
            data_out: Some(&mut out),
            ..Default::default()
        };
        let r = test_run(&mut l, p, opts);
        assert!(passed(p, r.return_value), "{p:?}");
        assert_eq!(
            &out[..r.data_size_out as usize],
            &f[..],
            "{p:?}: the packet must not be modified"
        );
        assert_eq!(counters(&l, 0).packets, 0, "{p:?}");
        assert_eq!(l.maps.global_counters().unwrap().unmatched, 1, "{p:?}");
    }
}

#[test]
fn no_impairment_passes_and_counts() {
    for p in ALL_HOOKS {
        let mut l = load(&[RuleSpec::default()]);
        assert!(
            run(&mut l, p, &udp4(CLIENT_V4, SERVER_V4, 1, 2), 10),
            "{p:?}"
        );
        let c = counters(&l, 0);
        assert_eq!((c.packets, c.passed, c.dropped_loss), (10, 10, 0), "{p:?}");
    }
}

#[test]
fn first_match_wins() {
    for p in ALL_HOOKS {
        let pass_udp = RuleSpec {
            matcher: MatchSpec {
                proto: parse_proto("udp").unwrap(),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut l = load(&[pass_udp, drop_all(MatchSpec::default())]);
        assert!(
            run(&mut l, p, &udp4(CLIENT_V4, SERVER_V4, 1, 2), 1),
            "{p:?}"
        );
        let tcp_frame = eth(&[], ETH_P_IP, &ipv4(CLIENT_V4, SERVER_V4, 6, 0, &tcp(1, 2)));
        assert!(!run(&mut l, p, &tcp_frame, 1), "{p:?}");
        assert_eq!(counters(&l, 0).packets, 1, "{p:?}");
        assert_eq!(counters(&l, 1).packets, 1, "{p:?}");
    }
}

#[test]
fn ipv6_prefix_protocol_and_port_range() {
    for p in ALL_HOOKS {
        let m = MatchSpec {
            dst: Some(parse_cidr("dst", "2001:2:0:2::/64").unwrap()),
            proto: parse_proto("udp").unwrap(),
            dport: Some((5000, 5010)),
            ..Default::default()
        };
        let mut l = load(&[drop_all(m)]);
        assert!(
            !run(&mut l, p, &udp6(CLIENT_V6, SERVER_V6, 1, 5005), 1),
            "{p:?}"
        );
        assert!(
            run(&mut l, p, &udp6(CLIENT_V6, SERVER_V6, 1, 5011), 1),
            "{p:?}"
        );
        let other: std::net::Ipv6Addr = "2001:2:0:3::1".parse().unwrap();
        assert!(run(&mut l, p, &udp6(CLIENT_V6, other, 1, 5005), 1), "{p:?}");
        // An IPv4 packet never matches an IPv6 prefix.
        assert!(
            run(&mut l, p, &udp4(CLIENT_V4, SERVER_V4, 1, 5005), 1),
            "{p:?}"
        );
        // Ports are found behind hop-by-hop and destination-options headers.
        let ext = ipv6(
            CLIENT_V6,
            SERVER_V6,
            &[(0, vec![1, 4, 0, 0, 0, 0]), (60, vec![1, 4, 0, 0, 0, 0])],
            17,
            &udp(9, 5000, &[1; 16]),
        );
        assert!(!run(&mut l, p, &eth(&[], ETH_P_IPV6, &ext), 1), "{p:?}");
        assert_eq!(counters(&l, 0).dropped_loss, 2, "{p:?}");
    }
}

#[test]
fn tcp_source_ports_and_icmp_protocol() {
    for p in ALL_HOOKS {
        let by_sport = MatchSpec {
            proto: parse_proto("tcp").unwrap(),
            sport: Some((80, 80)),
            ..Default::default()
        };
        let icmp = MatchSpec {
            proto: parse_proto("icmp").unwrap(),
            ..Default::default()
        };
        let mut l = load(&[drop_all(by_sport), drop_all(icmp)]);
        let tcp_from = |sport| {
            eth(
                &[],
                ETH_P_IP,
                &ipv4(SERVER_V4, CLIENT_V4, 6, 0, &tcp(sport, 40000)),
            )
        };
        let ping = eth(
            &[],
            ETH_P_IP,
            &ipv4(CLIENT_V4, SERVER_V4, 1, 0, &icmp_echo()),
        );
        assert!(!run(&mut l, p, &tcp_from(80), 1), "{p:?}");
        assert!(run(&mut l, p, &tcp_from(81), 1), "{p:?}");
        assert!(!run(&mut l, p, &ping, 1), "{p:?}");
        assert_eq!(counters(&l, 1).dropped_loss, 1, "{p:?}");
    }
}

#[test]
fn vlan_and_qinq_frames_are_parsed() {
    for p in ALL_HOOKS {
        let m = MatchSpec {
            dport: Some((53, 53)),
            ..Default::default()
        };
        let mut l = load(&[drop_all(m)]);
        let ip = ipv4(CLIENT_V4, SERVER_V4, 17, 0, &udp(1, 53, &[0; 8]));
        let tagged = eth(&[(ETH_P_8021Q, 100)], ETH_P_IP, &ip);
        assert!(!run(&mut l, p, &tagged, 1), "{p:?}");
        let qinq = eth(&[(ETH_P_8021AD, 10), (ETH_P_8021Q, 100)], ETH_P_IP, &ip);
        assert!(!run(&mut l, p, &qinq, 1), "{p:?}");
        let ip6 = ipv6(CLIENT_V6, SERVER_V6, &[], 17, &udp(1, 53, &[0; 8]));
        let tagged6 = eth(&[(ETH_P_8021Q, 7)], ETH_P_IPV6, &ip6);
        assert!(!run(&mut l, p, &tagged6, 1), "{p:?}");
        assert_eq!(counters(&l, 0).dropped_loss, 3, "{p:?}");
    }
}

/// Non-first fragments (no ports: they cannot match a port rule), truncated
/// headers, non-IP frames and garbage pass and are not errors, while the full
/// packet matches; corrupting frames without a payload it may touch (no full
/// IP header, no L4 header, not IP) changes nothing and is not an error.
#[test]
fn fragments_truncated_and_non_ip_frames_fail_open() {
    for p in ALL_HOOKS {
        let port_rule = MatchSpec {
            dport: Some((2000, 2000)),
            ..Default::default()
        };
        let mut l = load(&[drop_all(port_rule)]);
        let ip = ipv4(CLIENT_V4, SERVER_V4, 17, 0, &udp(1000, 2000, &[0; 8]));
        let frag = eth(
            &[],
            ETH_P_IP,
            &ipv4(CLIENT_V4, SERVER_V4, 17, 100, &udp(1000, 2000, &[0; 8])),
        );
        let frag6 = ipv6(
            CLIENT_V6,
            SERVER_V6,
            &[(44, vec![0, 0x08, 0, 0, 0, 1])],
            17,
            &udp(1000, 2000, &[0; 8]),
        );
        let frames: Vec<Vec<u8>> = vec![
            frag,
            eth(&[], ETH_P_IPV6, &frag6),
            // Truncated IPv4 and UDP headers behind a VLAN tag: the kernel's
            // skb test harness itself rejects a bare truncated IP frame.
            eth(&[(ETH_P_8021Q, 5)], ETH_P_IP, &ip[..12]),
            eth(&[(ETH_P_8021Q, 5)], ETH_P_IP, &ip[..20 + 3]),
            eth(&[], ETH_P_ARP, &arp()),
            (0..64u8).map(|i| i.wrapping_mul(37)).collect(),
            eth(&[(ETH_P_8021Q, 5)], ETH_P_IPV6, &[0x60, 0, 0, 0]),
        ];
        for f in &frames {
            assert!(run(&mut l, p, f, 1), "{p:?}: {f:02x?}");
        }
        assert!(
            !run(&mut l, p, &udp4(CLIENT_V4, SERVER_V4, 1000, 2000), 1),
            "{p:?}: the full packet matches"
        );
        let g = l.maps.global_counters().unwrap();
        assert_eq!((g.errors, g.unmatched), (0, frames.len() as u64), "{p:?}");

        let mut l = load(&[RuleSpec {
            corrupt: Some(1.0),
            ..Default::default()
        }]);
        for f in &frames {
            let (ok, out) = run_out(&mut l, p, f);
            assert!(ok, "{p:?}");
            assert_eq!(&out, f, "{p:?}: nothing to corrupt in {f:02x?}");
        }
        let c = counters(&l, 0);
        assert_eq!((c.passed, c.corrupted), (frames.len() as u64, 0), "{p:?}");
        assert_eq!(l.maps.global_counters().unwrap().errors, 0, "{p:?}");
    }
}

#[test]
fn match_all_rule_applies_to_non_ip_frames_like_netem() {
    for p in ALL_HOOKS {
        let mut l = load(&[drop_all(MatchSpec::default())]);
        assert!(!run(&mut l, p, &eth(&[], ETH_P_ARP, &arp()), 1), "{p:?}");
    }
}

#[test]
fn all_64_rules_are_reachable() {
    for p in ALL_HOOKS {
        let mut rules: Vec<RuleSpec> = (0..MAX_RULES - 1)
            .map(|i| {
                drop_all(MatchSpec {
                    dport: Some((i as u16, i as u16)),
                    ..Default::default()
                })
            })
            .collect();
        rules.push(drop_all(dst("198.18.2.1/32")));
        let mut l = load(&rules);
        assert!(
            !run(&mut l, p, &udp4(CLIENT_V4, SERVER_V4, 1, 9999), 1),
            "{p:?}"
        );
        assert_eq!(counters(&l, MAX_RULES - 1).dropped_loss, 1, "{p:?}");
    }
}
