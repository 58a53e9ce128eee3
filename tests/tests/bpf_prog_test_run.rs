//! BPF_PROG_TEST_RUN tier: the real tc program, run by the kernel on crafted
//! frames. Checks verdicts and counters for every parse path, fail-open on
//! garbage, the lease, and the loss rate and seed reproducibility of the
//! in-kernel generator. Needs root and the real eBPF object.
use aya::programs::{TestRun as _, TestRunOptions};
use impair::{
    engine::Loaded,
    model::units::{parse_cidr, parse_proto},
    model::Distribution,
    model::QueueLimit,
    model::{compile_all, CorruptMode, DelaySpec, MatchSpec, RateSpec, RuleSpec},
};
use impair_common::{RuleCounters, MAX_RULES};
use impair_tests::{
    packet::*, pin_to_cpu0, require_privileges, CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6,
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

fn load(rules: &[RuleSpec]) -> Loaded {
    require_privileges();
    Loaded::new(&compile_all(rules).unwrap(), 42).unwrap()
}

fn run(l: &mut Loaded, frame: &[u8], repeat: u32) -> u32 {
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat,
        ..Default::default()
    };
    l.tc_egress().unwrap().test_run(opts).unwrap().return_value
}

fn counters(l: &Loaded, rule: u32) -> RuleCounters {
    l.maps
        .rule_counters(l.maps.active_slot().unwrap(), rule)
        .unwrap()
}

fn drop_all(m: MatchSpec) -> RuleSpec {
    RuleSpec {
        matcher: m,
        loss: Some(1.0),
        ..Default::default()
    }
}

fn dst(s: &str) -> MatchSpec {
    MatchSpec {
        dst: Some(parse_cidr("dst", s).unwrap()),
        ..Default::default()
    }
}

#[test]
fn matching_packet_is_dropped_and_counted() {
    let mut l = load(&[drop_all(dst("198.18.2.0/24"))]);
    let f = udp4(CLIENT_V4, SERVER_V4, 1000, 2000);
    assert_eq!(run(&mut l, &f, 1), TC_ACT_SHOT);
    let c = counters(&l, 0);
    assert_eq!((c.packets, c.dropped_loss, c.passed), (1, 1, 0));
    assert_eq!(c.bytes, f.len() as u64);
    let g = l.maps.global_counters().unwrap();
    assert_eq!((g.packets, g.unmatched, g.errors), (1, 0, 0));
}

#[test]
fn unmatched_packet_passes_untouched() {
    let mut l = load(&[drop_all(dst("198.18.3.0/24"))]);
    let f = udp4(CLIENT_V4, SERVER_V4, 1000, 2000);
    let mut out = vec![0u8; f.len() + 64];
    let opts = TestRunOptions {
        data_in: Some(&f),
        data_out: Some(&mut out),
        ..Default::default()
    };
    let r = l.tc_egress().unwrap().test_run(opts).unwrap();
    assert_eq!(r.return_value, TC_ACT_OK);
    assert_eq!(
        &out[..r.data_size_out as usize],
        &f[..],
        "the packet must not be modified"
    );
    assert_eq!(counters(&l, 0).packets, 0);
    assert_eq!(l.maps.global_counters().unwrap().unmatched, 1);
}

#[test]
fn no_impairment_passes_and_counts() {
    let mut l = load(&[RuleSpec::default()]);
    assert_eq!(
        run(&mut l, &udp4(CLIENT_V4, SERVER_V4, 1, 2), 10),
        TC_ACT_OK
    );
    let c = counters(&l, 0);
    assert_eq!((c.packets, c.passed, c.dropped_loss), (10, 10, 0));
}

#[test]
fn first_match_wins() {
    let pass_udp = RuleSpec {
        matcher: MatchSpec {
            proto: parse_proto("udp").unwrap(),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut l = load(&[pass_udp, drop_all(MatchSpec::default())]);
    assert_eq!(run(&mut l, &udp4(CLIENT_V4, SERVER_V4, 1, 2), 1), TC_ACT_OK);
    let tcp_frame = eth(&[], ETH_P_IP, &ipv4(CLIENT_V4, SERVER_V4, 6, 0, &tcp(1, 2)));
    assert_eq!(run(&mut l, &tcp_frame, 1), TC_ACT_SHOT);
    assert_eq!(counters(&l, 0).packets, 1);
    assert_eq!(counters(&l, 1).packets, 1);
}

#[test]
fn ipv6_prefix_protocol_and_port_range() {
    let m = MatchSpec {
        dst: Some(parse_cidr("dst", "2001:2:0:2::/64").unwrap()),
        proto: parse_proto("udp").unwrap(),
        dport: Some((5000, 5010)),
        ..Default::default()
    };
    let mut l = load(&[drop_all(m)]);
    assert_eq!(
        run(&mut l, &udp6(CLIENT_V6, SERVER_V6, 1, 5005), 1),
        TC_ACT_SHOT
    );
    assert_eq!(
        run(&mut l, &udp6(CLIENT_V6, SERVER_V6, 1, 5011), 1),
        TC_ACT_OK
    );
    assert_eq!(
        run(
            &mut l,
            &udp6(CLIENT_V6, "2001:2:0:3::1".parse().unwrap(), 1, 5005),
            1
        ),
        TC_ACT_OK
    );
    // An IPv4 packet never matches an IPv6 prefix.
    assert_eq!(
        run(&mut l, &udp4(CLIENT_V4, SERVER_V4, 1, 5005), 1),
        TC_ACT_OK
    );
    // Ports are found behind hop-by-hop and destination-options headers.
    let ext = ipv6(
        CLIENT_V6,
        SERVER_V6,
        &[(0, vec![1, 4, 0, 0, 0, 0]), (60, vec![1, 4, 0, 0, 0, 0])],
        17,
        &udp(9, 5000, &[1; 16]),
    );
    assert_eq!(run(&mut l, &eth(&[], ETH_P_IPV6, &ext), 1), TC_ACT_SHOT);
    assert_eq!(counters(&l, 0).dropped_loss, 2);
}

#[test]
fn tcp_source_ports_and_icmp_protocol() {
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
    let t80 = eth(
        &[],
        ETH_P_IP,
        &ipv4(SERVER_V4, CLIENT_V4, 6, 0, &tcp(80, 40000)),
    );
    let t81 = eth(
        &[],
        ETH_P_IP,
        &ipv4(SERVER_V4, CLIENT_V4, 6, 0, &tcp(81, 40000)),
    );
    let ping = eth(
        &[],
        ETH_P_IP,
        &ipv4(CLIENT_V4, SERVER_V4, 1, 0, &icmp_echo()),
    );
    assert_eq!(run(&mut l, &t80, 1), TC_ACT_SHOT);
    assert_eq!(run(&mut l, &t81, 1), TC_ACT_OK);
    assert_eq!(run(&mut l, &ping, 1), TC_ACT_SHOT);
    assert_eq!(counters(&l, 1).dropped_loss, 1);
}

#[test]
fn vlan_and_qinq_frames_are_parsed() {
    let m = MatchSpec {
        dport: Some((53, 53)),
        ..Default::default()
    };
    let mut l = load(&[drop_all(m)]);
    let ip = ipv4(CLIENT_V4, SERVER_V4, 17, 0, &udp(1, 53, &[0; 8]));
    assert_eq!(
        run(&mut l, &eth(&[(ETH_P_8021Q, 100)], ETH_P_IP, &ip), 1),
        TC_ACT_SHOT
    );
    assert_eq!(
        run(
            &mut l,
            &eth(&[(ETH_P_8021AD, 10), (ETH_P_8021Q, 100)], ETH_P_IP, &ip),
            1
        ),
        TC_ACT_SHOT
    );
    let ip6 = ipv6(CLIENT_V6, SERVER_V6, &[], 17, &udp(1, 53, &[0; 8]));
    assert_eq!(
        run(&mut l, &eth(&[(ETH_P_8021Q, 7)], ETH_P_IPV6, &ip6), 1),
        TC_ACT_SHOT
    );
    assert_eq!(counters(&l, 0).dropped_loss, 3);
}

#[test]
fn fragments_truncated_and_non_ip_frames_fail_open() {
    let port_rule = MatchSpec {
        dport: Some((2000, 2000)),
        ..Default::default()
    };
    let mut l = load(&[drop_all(port_rule)]);
    // A non-first IPv4 fragment carries no ports: it cannot match a port rule.
    let frag = eth(
        &[],
        ETH_P_IP,
        &ipv4(CLIENT_V4, SERVER_V4, 17, 100, &udp(1000, 2000, &[0; 8])),
    );
    assert_eq!(run(&mut l, &frag, 1), TC_ACT_OK);
    // Non-first IPv6 fragment.
    let frag6 = ipv6(
        CLIENT_V6,
        SERVER_V6,
        &[(44, vec![0, 0x08, 0, 0, 0, 1])],
        17,
        &udp(1000, 2000, &[0; 8]),
    );
    assert_eq!(run(&mut l, &eth(&[], ETH_P_IPV6, &frag6), 1), TC_ACT_OK);
    // IPv4 header cut short, UDP header cut short (behind a VLAN tag: the
    // kernel's test harness itself rejects a bare truncated IPv4 frame), ARP,
    // and garbage.
    let full = udp4(CLIENT_V4, SERVER_V4, 1000, 2000);
    let ip = ipv4(CLIENT_V4, SERVER_V4, 17, 0, &udp(1000, 2000, &[0; 8]));
    assert_eq!(
        run(&mut l, &eth(&[(ETH_P_8021Q, 5)], ETH_P_IP, &ip[..12]), 1),
        TC_ACT_OK
    );
    assert_eq!(
        run(
            &mut l,
            &eth(&[(ETH_P_8021Q, 5)], ETH_P_IP, &ip[..20 + 3]),
            1
        ),
        TC_ACT_OK
    );
    assert_eq!(run(&mut l, &eth(&[], ETH_P_ARP, &arp()), 1), TC_ACT_OK);
    let garbage: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37)).collect();
    assert_eq!(run(&mut l, &garbage, 1), TC_ACT_OK);
    // The full packet does match; nothing above was an error.
    assert_eq!(run(&mut l, &full, 1), TC_ACT_SHOT);
    let g = l.maps.global_counters().unwrap();
    assert_eq!(g.errors, 0);
    assert_eq!(g.unmatched, 6);
}

#[test]
fn match_all_rule_applies_to_non_ip_frames_like_netem() {
    let mut l = load(&[drop_all(MatchSpec::default())]);
    assert_eq!(run(&mut l, &eth(&[], ETH_P_ARP, &arp()), 1), TC_ACT_SHOT);
}

#[test]
fn expired_lease_passes_everything() {
    let mut l = load(&[drop_all(MatchSpec::default())]);
    l.maps.set_lease_deadline_ns(1).unwrap();
    assert_eq!(run(&mut l, &udp4(CLIENT_V4, SERVER_V4, 1, 2), 5), TC_ACT_OK);
    let g = l.maps.global_counters().unwrap();
    assert_eq!(g.lease_expired, 5);
    assert_eq!(counters(&l, 0).packets, 0);
}

#[test]
fn all_64_rules_are_reachable() {
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
    assert_eq!(
        run(&mut l, &udp4(CLIENT_V4, SERVER_V4, 1, 9999), 1),
        TC_ACT_SHOT
    );
    assert_eq!(counters(&l, MAX_RULES - 1).dropped_loss, 1);
}

#[test]
fn rule_set_swap_is_atomic_and_resets_counters() {
    let mut l = load(&[drop_all(MatchSpec::default())]);
    let f = udp4(CLIENT_V4, SERVER_V4, 1, 2);
    assert_eq!(run(&mut l, &f, 3), TC_ACT_SHOT);
    let pass = compile_all(&[RuleSpec::default()]).unwrap();
    l.maps.write_and_activate(1, &pass, 2).unwrap();
    assert_eq!(l.maps.active_slot().unwrap(), 1);
    assert_eq!(run(&mut l, &f, 4), TC_ACT_OK);
    let c = counters(&l, 0);
    assert_eq!((c.packets, c.passed), (4, 4));
}

/// 10% loss over 200,000 runs of the real program: the configured rate lies
/// inside the 99% Wilson interval of the measured proportion.
#[test]
fn bernoulli_loss_rate_in_kernel_is_inside_99_percent_interval() {
    pin_to_cpu0();
    let mut l = load(&[RuleSpec {
        loss: Some(0.10),
        ..Default::default()
    }]);
    let n = 200_000u32;
    run(&mut l, &udp4(CLIENT_V4, SERVER_V4, 1, 2), n);
    let c = counters(&l, 0);
    assert_eq!(c.packets, u64::from(n));
    assert_eq!(c.packets, c.dropped_loss + c.passed);
    let (lo, hi) = impair::statistics::wilson_interval(c.dropped_loss, c.packets, 2.5758293035489);
    assert!(
        lo <= 0.10 && 0.10 <= hi,
        "measured {} of {} dropped: 99% interval {lo}..{hi}",
        c.dropped_loss,
        c.packets
    );
}

/// The same seed on the same CPU gives exactly the same decisions.
#[test]
fn seeded_runs_are_reproducible() {
    pin_to_cpu0();
    let rules = [RuleSpec {
        loss: Some(0.3),
        ..Default::default()
    }];
    let mut drops = Vec::new();
    for seed in [7u64, 7, 8] {
        require_privileges();
        let mut l = Loaded::new(&compile_all(&rules).unwrap(), seed).unwrap();
        let mut pattern = Vec::new();
        for _ in 0..200 {
            pattern.push(run(&mut l, &udp4(CLIENT_V4, SERVER_V4, 1, 2), 1) == TC_ACT_SHOT);
        }
        drops.push(pattern);
    }
    assert_eq!(drops[0], drops[1], "same seed, same decisions");
    assert_ne!(drops[0], drops[2], "another seed, other decisions");
}

/// The verifier's work on the program stays far from its 1M-instruction
/// limit, so added impairments cannot silently push it over on some kernel.
#[test]
fn verifier_complexity_has_headroom() {
    let mut l = load(&[RuleSpec::default()]);
    let info = l.tc_egress().unwrap().info().unwrap();
    let processed = info
        .verified_instruction_count()
        .expect("kernel reports verified_insns");
    eprintln!("verifier processed {processed} instructions");
    assert!(
        processed < 150_000,
        "verifier processed {processed} instructions (limit 1,000,000)"
    );
}

fn run_out(l: &mut Loaded, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ..Default::default()
    };
    let r = l.tc_egress().unwrap().test_run(opts).unwrap();
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

#[test]
fn ecn_marks_capable_packets_with_a_valid_checksum_and_drops_the_rest() {
    let rule = RuleSpec {
        loss: Some(1.0),
        ecn: true,
        ..Default::default()
    };
    let mut l = load(&[rule]);
    let ect0 = udp4_csum(CLIENT_V4, SERVER_V4, 1, 2, 0b10, &[7; 40]);
    let (v, out) = run_out(&mut l, &ect0);
    assert_eq!(v, TC_ACT_OK);
    assert_eq!(out[15] & 3, 3, "CE set");
    assert!(ipv4_header_ok(&out), "IPv4 header checksum updated");
    let unchanged = |f: &[u8]| [&f[16..24], &f[26..]].concat();
    assert_eq!(
        unchanged(&out),
        unchanged(&ect0),
        "nothing but TOS and checksum changed"
    );
    let not_ect = udp4_csum(CLIENT_V4, SERVER_V4, 1, 2, 0, &[7; 40]);
    assert_eq!(run_out(&mut l, &not_ect).0, TC_ACT_SHOT);
    // IPv6: ECN lives in bits 4-5 of the second byte.
    let mut v6 = udp6(CLIENT_V6, SERVER_V6, 1, 2);
    v6[15] |= 0x10; // ECT(1)
    let (v, out) = run_out(&mut l, &v6);
    assert_eq!(v, TC_ACT_OK);
    assert_eq!((out[15] >> 4) & 3, 3);
    let c = counters(&l, 0);
    assert_eq!((c.ecn_marked, c.dropped_loss, c.passed), (2, 1, 2));
}

#[test]
fn mtu_blackhole_drops_only_larger_ip_packets() {
    let mut l = load(&[RuleSpec {
        mtu_bytes: Some(100),
        ..Default::default()
    }]);
    // IP length = 20 + 8 + payload.
    assert_eq!(
        run_out(&mut l, &udp4_csum(CLIENT_V4, SERVER_V4, 1, 2, 0, &[0; 72])).0,
        TC_ACT_OK
    );
    assert_eq!(
        run_out(&mut l, &udp4_csum(CLIENT_V4, SERVER_V4, 1, 2, 0, &[0; 73])).0,
        TC_ACT_SHOT
    );
    let c = counters(&l, 0);
    assert_eq!((c.dropped_mtu, c.passed), (1, 1));
}

#[test]
fn blackhole_drops_everything_matched() {
    let mut l = load(&[RuleSpec {
        blackhole: true,
        matcher: dst("198.18.2.0/24"),
        ..Default::default()
    }]);
    assert_eq!(
        run(&mut l, &udp4(CLIENT_V4, SERVER_V4, 1, 2), 100),
        TC_ACT_SHOT
    );
    assert_eq!(counters(&l, 0).dropped_loss, 100);
    assert_eq!(
        run(
            &mut l,
            &udp4(CLIENT_V4, "198.18.3.1".parse().unwrap(), 1, 2),
            1
        ),
        TC_ACT_OK
    );
}

fn bit_differences(a: &[u8], b: &[u8]) -> Vec<(usize, u32)> {
    a.iter()
        .zip(b)
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, (x, y))| (i, (x ^ y).count_ones()))
        .collect()
}

#[test]
fn detectable_corruption_breaks_the_checksum() {
    let mut l = load(&[RuleSpec {
        corrupt: Some(1.0),
        ..Default::default()
    }]);
    let payload_start = 14 + 20 + 8;
    for i in 0..200u8 {
        let f = udp4_csum(CLIENT_V4, SERVER_V4, 1000 + u16::from(i), 2, 0, &[i; 64]);
        let (v, out) = run_out(&mut l, &f);
        assert_eq!(v, TC_ACT_OK);
        let diffs = bit_differences(&f, &out);
        let in_payload: Vec<_> = diffs.iter().filter(|(i, _)| *i >= payload_start).collect();
        assert_eq!(in_payload.len(), 1, "one payload byte changed: {diffs:?}");
        assert_eq!(in_payload[0].1, 1, "by one bit");
        assert!(
            diffs
                .iter()
                .all(|(i, _)| *i >= payload_start || *i == 14 + 26 || *i == 14 + 27),
            "only payload and UDP checksum: {diffs:?}"
        );
        assert!(
            !udp4_csum_ok(&out),
            "the receiver's checksum must catch it (iteration {i})"
        );
        assert!(ipv4_header_ok(&out));
    }
    assert_eq!(counters(&l, 0).corrupted, 200);
}

#[test]
fn silent_corruption_keeps_the_checksum_valid() {
    let rule = RuleSpec {
        corrupt: Some(1.0),
        corrupt_mode: CorruptMode::Silent,
        ..Default::default()
    };
    let mut l = load(&[rule]);
    for i in 0..200u8 {
        let f = udp4_csum(CLIENT_V4, SERVER_V4, 1000 + u16::from(i), 2, 0, &[i; 64]);
        let (_, out) = run_out(&mut l, &f);
        let payload_diffs = bit_differences(&f[42..], &out[42..]);
        assert_eq!(payload_diffs.len(), 1);
        assert_eq!(payload_diffs[0].1, 1);
        assert!(
            udp4_csum_ok(&out),
            "silent corruption must verify (iteration {i})"
        );
    }
}

#[test]
fn corruption_skips_packets_without_payload() {
    let mut l = load(&[RuleSpec {
        corrupt: Some(1.0),
        ..Default::default()
    }]);
    let f = udp4_csum(CLIENT_V4, SERVER_V4, 1, 2, 0, &[]);
    let (v, out) = run_out(&mut l, &f);
    assert_eq!((v, out), (TC_ACT_OK, f));
    assert_eq!(counters(&l, 0).corrupted, 0);
}

/// Duplicates are sent with bpf_clone_redirect out of the test skb's device
/// (loopback): run in a private network namespace so nothing leaves it.
#[test]
fn duplicate_sends_a_clone_and_counts_it() {
    require_privileges();
    std::thread::spawn(|| {
        // SAFETY: unshare affects only this thread's network namespace.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
        // Loopback is down in a new namespace: the clone cannot be sent, and
        // that must fail open (packet passes, error counted).
        let mut l = load(&[RuleSpec {
            duplicate: Some(1.0),
            ..Default::default()
        }]);
        assert_eq!(run(&mut l, &udp4(CLIENT_V4, SERVER_V4, 1, 2), 1), TC_ACT_OK);
        assert_eq!(l.maps.global_counters().unwrap().errors, 1);
        impair_tests::set_loopback_up();
        let mut l = load(&[RuleSpec {
            duplicate: Some(1.0),
            ..Default::default()
        }]);
        assert_eq!(
            run(&mut l, &udp4(CLIENT_V4, SERVER_V4, 1, 2), 10),
            TC_ACT_OK
        );
        let c = counters(&l, 0);
        assert_eq!((c.packets, c.passed, c.duplicated), (10, 10, 10));
        // The flag that marks a clone in flight is cleared: a normal packet is processed.
        let mut l2 = load(&[drop_all(MatchSpec::default())]);
        assert_eq!(
            run(&mut l2, &udp4(CLIENT_V4, SERVER_V4, 1, 2), 1),
            TC_ACT_SHOT
        );
    })
    .join()
    .unwrap();
}

/// Offset of `tstamp` in `struct __sk_buff` (include/uapi/linux/bpf.h), and
/// the struct's size on every kernel since 5.16 (hwtstamp is its last field).
const SKB_TSTAMP_OFFSET: usize = 152;
const SKB_SIZE: usize = 192;

/// Runs once with a `__sk_buff` context and returns (verdict, skb->tstamp).
fn run_tstamp(l: &mut Loaded, frame: &[u8]) -> (u32, u64) {
    let ctx_in = [0u8; SKB_SIZE];
    let mut ctx_out = [0u8; SKB_SIZE];
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: Some(&ctx_in),
        ctx_out: Some(&mut ctx_out),
        ..Default::default()
    };
    let r = l.tc_egress().unwrap().test_run(opts).unwrap();
    let ts = u64::from_ne_bytes(
        ctx_out[SKB_TSTAMP_OFFSET..SKB_TSTAMP_OFFSET + 8]
            .try_into()
            .unwrap(),
    );
    (r.return_value, ts)
}

fn delay(delay_ns: u64, jitter_ns: u64, distribution: Option<Distribution>) -> RuleSpec {
    RuleSpec {
        delay: Some(DelaySpec {
            delay_ns,
            jitter_ns,
            distribution,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn constant_delay_sets_a_delivery_time() {
    let mut l = load(&[delay(10_000_000, 0, None)]);
    let before = impair::sys::monotonic_ns();
    let (v, ts) = run_tstamp(&mut l, &udp4(CLIENT_V4, SERVER_V4, 1, 2));
    let after = impair::sys::monotonic_ns();
    assert_eq!(v, TC_ACT_OK);
    assert!(
        before + 10_000_000 <= ts && ts <= after + 10_000_000,
        "tstamp {ts} not in [{before}, {after}] + 10 ms"
    );
    assert_eq!(counters(&l, 0).delayed, 1);
}

#[test]
fn uniform_jitter_stays_within_bounds() {
    let mut l = load(&[delay(50_000_000, 10_000_000, None)]);
    for _ in 0..500 {
        let before = impair::sys::monotonic_ns();
        let (_, ts) = run_tstamp(&mut l, &udp4(CLIENT_V4, SERVER_V4, 1, 2));
        let after = impair::sys::monotonic_ns();
        assert!(
            ts >= before + 40_000_000 && ts < after + 60_000_000,
            "{}",
            ts - before
        );
    }
}

/// Jitter drawn from the normal table through the kernel's path: the delays
/// (with a 1 s base, so the few µs between reading the clock and the program
/// running are negligible against the 100 ms standard deviation) pass a
/// Kolmogorov–Smirnov test against N(1 s, 100 ms) at 99%.
#[test]
fn normal_jitter_in_kernel_passes_a_ks_test() {
    pin_to_cpu0();
    let mut l = load(&[delay(
        1_000_000_000,
        100_000_000,
        Some(Distribution::Normal),
    )]);
    let mut z = Vec::new();
    for _ in 0..4_000 {
        let before = impair::sys::monotonic_ns();
        let (_, ts) = run_tstamp(&mut l, &udp4(CLIENT_V4, SERVER_V4, 1, 2));
        z.push(((ts - before) as f64 - 1e9) / 1e8);
    }
    let d = impair::statistics::ks_statistic(&mut z, impair::statistics::normal_cdf);
    let crit = impair::statistics::ks_critical_99(z.len());
    assert!(d < crit, "KS D = {d}, 99% critical value {crit}");
}

#[test]
fn rate_spaces_departures_by_serialization_time() {
    // 100 kbit/s: a 74-byte frame takes 5.92 ms, far longer than the time
    // between two test runs even under emulation (~0.4 ms in a TCG VM), so
    // the emulated link stays backlogged.
    let rule = RuleSpec {
        rate: Some(RateSpec {
            rate_bps: 100_000,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut l = load(&[rule]);
    let f = udp4(CLIENT_V4, SERVER_V4, 1, 2);
    let tx = f.len() as u64 * 80_000;
    let mut last = 0;
    for i in 0..20 {
        let (_, ts) = run_tstamp(&mut l, &f);
        if i > 0 {
            assert_eq!(
                ts - last,
                tx,
                "back-to-back packets leave one serialization apart"
            );
        }
        last = ts;
    }
}

#[test]
fn rate_queue_limit_drops_and_counts() {
    let rule = RuleSpec {
        rate: Some(RateSpec {
            rate_bps: 10_000,
            queue: Some(QueueLimit::Time { ns: 500_000_000 }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut l = load(&[rule]);
    // 74 bytes at 10 kbit/s = 59.2 ms; a 500 ms queue holds 8 of a burst
    // (the burst itself takes a few ms even in an emulated VM).
    let f = udp4(CLIENT_V4, SERVER_V4, 1, 2);
    let verdicts: Vec<u32> = (0..20).map(|_| run_tstamp(&mut l, &f).0).collect();
    let passed = verdicts.iter().filter(|&&v| v == TC_ACT_OK).count();
    assert_eq!(passed, 8, "{verdicts:?}");
    let c = counters(&l, 0);
    assert_eq!((c.dropped_queue, c.passed), (12, 8));
}

#[test]
fn reorder_skips_the_delay() {
    let rule = RuleSpec {
        reorder: Some(1.0),
        ..delay(20_000_000, 0, None)
    };
    let mut l = load(&[rule]);
    let (v, ts) = run_tstamp(&mut l, &udp4(CLIENT_V4, SERVER_V4, 1, 2));
    assert_eq!((v, ts), (TC_ACT_OK, 0), "no departure time: leaves at once");
    let c = counters(&l, 0);
    assert_eq!((c.reordered, c.delayed), (1, 0));
}

#[test]
fn in_order_keeps_departures_non_decreasing_per_flow() {
    let jittery = delay(10_000_000, 10_000_000, None);
    let mut plain = load(std::slice::from_ref(&jittery));
    let f = udp4(CLIENT_V4, SERVER_V4, 1, 2);
    let ts: Vec<u64> = (0..200).map(|_| run_tstamp(&mut plain, &f).1).collect();
    assert!(
        ts.windows(2).any(|w| w[1] < w[0]),
        "without --in-order jitter reorders"
    );
    let mut ordered_rule = jittery;
    ordered_rule.delay.as_mut().unwrap().in_order = true;
    let mut ordered = load(&[ordered_rule]);
    let ts: Vec<u64> = (0..200).map(|_| run_tstamp(&mut ordered, &f).1).collect();
    assert!(
        ts.windows(2).all(|w| w[1] >= w[0]),
        "with --in-order departures never go back"
    );
}
