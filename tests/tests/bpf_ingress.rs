//! BPF_PROG_TEST_RUN tier for the receive-side programs, `impair_ingress` (tc
//! ingress) and `impair_xdp`: the real programs, run by the kernel on crafted
//! frames. Every test runs against both, since they share the decision code
//! but reach the packet differently (skb helpers vs direct packet access with
//! incremental checksum updates). Checks loss, MTU, blackhole, ECN with valid
//! checksums, detectable and silent corruption, rate policing, that delay and
//! duplication never happen there, fail-open parsing, and verifier headroom.
//! Needs root and the real eBPF object.
use std::time::Duration;

use aya::programs::{TestRun as _, TestRunOptions, TestRunResult};
use impair::{
    engine::Loaded,
    model::{compile_all, CorruptMode, DelaySpec, MatchSpec, RateSpec, RuleSpec},
    model::{units::parse_cidr, QueueLimit},
};
use impair_common::RuleCounters;
use impair_tests::{
    packet::*, pin_to_cpu0, require_privileges, CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6,
};

/// The receive-side programs (and egress, to compare decisions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prog {
    Egress,
    Ingress,
    Xdp,
}

const RECEIVE: [Prog; 2] = [Prog::Ingress, Prog::Xdp];

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn load(rules: &[RuleSpec]) -> Loaded {
    require_privileges();
    Loaded::new(&compile_all(rules).unwrap(), 42).unwrap()
}

fn test_run(l: &mut Loaded, p: Prog, opts: TestRunOptions<'_>) -> TestRunResult {
    match p {
        Prog::Egress => l.tc_egress().unwrap().test_run(opts),
        Prog::Ingress => l.tc_ingress().unwrap().test_run(opts),
        Prog::Xdp => l.xdp().unwrap().test_run(opts),
    }
    .unwrap_or_else(|e| panic!("{p:?}: test run failed: {e}"))
}

/// Whether the program passed the packet (and checks the return value is
/// one of the two the hook allows).
fn passed(p: Prog, rv: u32) -> bool {
    match (p, rv) {
        (Prog::Xdp, XDP_PASS) | (Prog::Egress | Prog::Ingress, TC_ACT_OK) => true,
        (Prog::Xdp, XDP_DROP) | (Prog::Egress | Prog::Ingress, TC_ACT_SHOT) => false,
        _ => panic!("{p:?} returned {rv}"),
    }
}

/// Runs `frame` `repeat` times; whether the (last) run passed it.
fn run(l: &mut Loaded, p: Prog, frame: &[u8], repeat: u32) -> bool {
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat,
        ..Default::default()
    };
    passed(p, test_run(l, p, opts).return_value)
}

/// Runs `frame` once; whether it passed, and the frame as the program left it.
fn run_out(l: &mut Loaded, p: Prog, frame: &[u8]) -> (bool, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ..Default::default()
    };
    let r = test_run(l, p, opts);
    out.truncate(r.data_size_out as usize);
    (passed(p, r.return_value), out)
}

fn counters(l: &Loaded, rule: u32) -> RuleCounters {
    l.maps
        .rule_counters(l.maps.active_slot().unwrap(), rule)
        .unwrap()
}

fn dst(s: &str) -> MatchSpec {
    MatchSpec {
        dst: Some(parse_cidr("dst", s).unwrap()),
        ..Default::default()
    }
}

#[test]
fn loss_drops_and_counts_at_both_hooks() {
    for p in RECEIVE {
        let mut l = load(&[RuleSpec {
            loss: Some(1.0),
            matcher: dst("198.18.2.0/24"),
            ..Default::default()
        }]);
        let f = udp4(CLIENT_V4, SERVER_V4, 1000, 2000);
        assert!(!run(&mut l, p, &f, 5), "{p:?}");
        assert!(
            run(
                &mut l,
                p,
                &udp4(CLIENT_V4, "198.18.3.1".parse().unwrap(), 1, 2),
                1
            ),
            "{p:?}: unmatched passes"
        );
        let c = counters(&l, 0);
        assert_eq!(
            (c.packets, c.dropped_loss, c.passed, c.bytes),
            (5, 5, 0, 5 * f.len() as u64),
            "{p:?}"
        );
        let g = l.maps.global_counters().unwrap();
        assert_eq!((g.packets, g.unmatched, g.errors), (6, 1, 0), "{p:?}");
    }
}

/// 10% loss over 200,000 runs of each program: the configured rate lies
/// inside the 99% Wilson interval of the measured proportion.
#[test]
fn bernoulli_loss_rate_is_inside_the_99_percent_interval() {
    pin_to_cpu0();
    for p in RECEIVE {
        let mut l = load(&[RuleSpec {
            loss: Some(0.10),
            ..Default::default()
        }]);
        let n = 200_000u32;
        run(&mut l, p, &udp4(CLIENT_V4, SERVER_V4, 1, 2), n);
        let c = counters(&l, 0);
        assert_eq!(c.packets, u64::from(n), "{p:?}");
        assert_eq!(c.packets, c.dropped_loss + c.passed, "{p:?}");
        let (lo, hi) =
            impair::statistics::wilson_interval(c.dropped_loss, c.packets, 2.5758293035489);
        assert!(
            lo <= 0.10 && 0.10 <= hi,
            "{p:?}: {} of {} dropped: 99% interval {lo}..{hi}",
            c.dropped_loss,
            c.packets
        );
    }
}

/// Burst-loss models run at ingress too (their state is per rule and CPU).
#[test]
fn gilbert_elliott_loss_runs_at_both_hooks() {
    pin_to_cpu0();
    let ge = impair::model::units::parse_loss_model("ge:5%,20%").unwrap();
    for p in RECEIVE {
        let mut l = load(&[RuleSpec {
            loss_model: Some(ge),
            ..Default::default()
        }]);
        let f = udp4(CLIENT_V4, SERVER_V4, 1, 2);
        let pattern: Vec<bool> = (0..20_000).map(|_| run(&mut l, p, &f, 1)).collect();
        let lost = pattern.iter().filter(|&&ok| !ok).count();
        // Mean loss p/(p+r) = 20%; bursts make consecutive losses far more
        // common than independent 20% loss would (0.2 of losses followed by a loss).
        let pairs = pattern.windows(2).filter(|w| !w[0] && !w[1]).count();
        assert!(
            (3_000..5_000).contains(&lost),
            "{p:?}: {lost} of 20000 lost"
        );
        assert!(
            pairs as f64 / lost as f64 > 0.5,
            "{p:?}: losses come in bursts ({pairs} pairs of {lost})"
        );
        assert_eq!(counters(&l, 0).dropped_loss, lost as u64, "{p:?}");
    }
}

/// One seed gives the same loss decisions at every hook: the draws are the
/// same, only the hook's verdict codes differ.
#[test]
fn one_seed_gives_the_same_decisions_at_every_hook() {
    pin_to_cpu0();
    let rules = [RuleSpec {
        loss: Some(0.3),
        ..Default::default()
    }];
    let mut patterns = Vec::new();
    for p in [Prog::Egress, Prog::Ingress, Prog::Xdp] {
        let mut l = load(&rules);
        patterns.push(
            (0..300)
                .map(|_| run(&mut l, p, &udp4(CLIENT_V4, SERVER_V4, 1, 2), 1))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(
        patterns[0], patterns[1],
        "tc ingress decides as egress does"
    );
    assert_eq!(patterns[0], patterns[2], "XDP decides as egress does");
}

#[test]
fn mtu_blackhole_drops_only_larger_ip_packets() {
    for p in RECEIVE {
        let mut l = load(&[RuleSpec {
            mtu_bytes: Some(100),
            ..Default::default()
        }]);
        // IP length = 20 + 8 + payload.
        assert!(
            run_out(
                &mut l,
                p,
                &udp4_csum(CLIENT_V4, SERVER_V4, 1, 2, 0, &[0; 72])
            )
            .0,
            "{p:?}"
        );
        assert!(
            !run_out(
                &mut l,
                p,
                &udp4_csum(CLIENT_V4, SERVER_V4, 1, 2, 0, &[0; 73])
            )
            .0,
            "{p:?}"
        );
        let c = counters(&l, 0);
        assert_eq!((c.dropped_mtu, c.passed), (1, 1), "{p:?}");
    }
}

#[test]
fn blackhole_drops_everything_matched() {
    for p in RECEIVE {
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

#[test]
fn ecn_marks_capable_packets_with_a_valid_checksum_and_drops_the_rest() {
    for p in RECEIVE {
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
        assert!(
            !run_out(
                &mut l,
                p,
                &udp4_csum(CLIENT_V4, SERVER_V4, 1, 2, 0, &[7; 40])
            )
            .0,
            "{p:?}: not ECT: dropped"
        );
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

/// A frame with valid checksums, its payload offset, and its L4 checksum check.
type Checked = (Vec<u8>, usize, fn(&[u8]) -> bool);

/// UDP/IPv4, TCP/IPv4 or UDP/IPv6 (by `i % 3`) with 64 payload bytes of `fill`.
fn checked_frame(i: u16, fill: u8) -> Checked {
    let payload = [fill; 64];
    match i % 3 {
        0 => (
            udp4_csum(CLIENT_V4, SERVER_V4, 1000 + i, 2, 0, &payload),
            42,
            udp4_csum_ok,
        ),
        1 => (
            tcp4_csum(CLIENT_V4, SERVER_V4, 1000 + i, 2, &payload),
            54,
            tcp4_csum_ok,
        ),
        _ => (
            udp6_csum(CLIENT_V6, SERVER_V6, 1000 + i, 2, 0, &payload),
            62,
            udp6_csum_ok,
        ),
    }
}

fn bit_differences(a: &[u8], b: &[u8]) -> Vec<(usize, u32)> {
    a.iter()
        .zip(b)
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, (x, y))| (i, (x ^ y).count_ones()))
        .collect()
}

/// Detectable corruption, for UDP and TCP over IPv4 and UDP over IPv6: one
/// payload bit flipped, and the L4 checksum fails at the receiver.
#[test]
fn detectable_corruption_breaks_the_checksum() {
    for p in RECEIVE {
        let mut l = load(&[RuleSpec {
            corrupt: Some(1.0),
            ..Default::default()
        }]);
        for i in 0..200u8 {
            let (f, payload_start, csum_ok) = checked_frame(u16::from(i), i);
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
                !csum_ok(&out),
                "{p:?}: the receiver's checksum must catch it (iteration {i})"
            );
            if i % 3 != 2 {
                assert!(ipv4_header_ok(&out), "{p:?}");
            }
        }
        assert_eq!(counters(&l, 0).corrupted, 200, "{p:?}");
    }
}

/// Silent corruption keeps UDP (IPv4, IPv6) and TCP checksums valid: the XDP
/// program's incremental update (RFC 1624) must agree with the skb helpers.
#[test]
fn silent_corruption_keeps_the_checksum_valid() {
    for p in RECEIVE {
        let rule = RuleSpec {
            corrupt: Some(1.0),
            corrupt_mode: CorruptMode::Silent,
            ..Default::default()
        };
        let mut l = load(&[rule]);
        for i in 0..300u16 {
            let (f, payload_start, csum_ok) = checked_frame(i, (i % 251) as u8);
            let (_, out) = run_out(&mut l, p, &f);
            let payload_diffs = bit_differences(&f[payload_start..], &out[payload_start..]);
            assert_eq!(payload_diffs.len(), 1, "{p:?}");
            assert_eq!(payload_diffs[0].1, 1, "{p:?}");
            assert!(
                csum_ok(&out),
                "{p:?}: silent corruption must verify (iteration {i})"
            );
        }
        assert_eq!(counters(&l, 0).corrupted, 300, "{p:?}");
    }
}

/// Odd payload lengths: the last byte is the high half of a word the
/// checksum pads with zero. Silent corruption stays valid there too, and is
/// never an error, at every hook (egress included).
#[test]
fn silent_corruption_of_odd_length_payloads_stays_valid_at_every_hook() {
    for p in [Prog::Egress, Prog::Ingress, Prog::Xdp] {
        let rule = RuleSpec {
            corrupt: Some(1.0),
            corrupt_mode: CorruptMode::Silent,
            ..Default::default()
        };
        let mut l = load(&[rule]);
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
    for p in RECEIVE {
        let rule = RuleSpec {
            corrupt: Some(1.0),
            corrupt_mode: CorruptMode::Silent,
            ..Default::default()
        };
        let mut l = load(&[rule]);
        let f = udp4(CLIENT_V4, SERVER_V4, 1, 2); // built with checksum 0
        let (_, out) = run_out(&mut l, p, &f);
        assert_eq!(&out[40..42], &[0, 0], "{p:?}");
        assert_eq!(bit_differences(&f, &out).len(), 1, "{p:?}");
    }
}

fn rate(rate_bps: u64, queue: Option<QueueLimit>) -> RuleSpec {
    RuleSpec {
        rate: Some(RateSpec {
            rate_bps,
            queue,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Policing with a 500 ms burst tolerance at 10 kbit/s: a 74-byte frame
/// occupies the emulated link 59.2 ms, so 8 of a back-to-back burst fit
/// (473.6 ms) and the 9th would wait 532.8 ms; the burst itself takes far
/// less than the 32.8 ms of slack, even in an emulated VM.
#[test]
fn policing_drops_beyond_the_burst_and_counts_dropped_queue() {
    for p in RECEIVE {
        let mut l = load(&[rate(10_000, Some(QueueLimit::Time { ns: 500_000_000 }))]);
        let f = udp4(CLIENT_V4, SERVER_V4, 1, 2);
        let verdicts: Vec<bool> = (0..20).map(|_| run(&mut l, p, &f, 1)).collect();
        assert_eq!(
            verdicts.iter().filter(|&&v| v).count(),
            8,
            "{p:?}: {verdicts:?}"
        );
        assert!(
            verdicts[..8].iter().all(|&v| v),
            "{p:?}: the first 8 pass at once: {verdicts:?}"
        );
        let c = counters(&l, 0);
        assert_eq!(
            (c.packets, c.passed, c.dropped_queue, c.delayed),
            (20, 8, 12, 0),
            "{p:?}"
        );
    }
}

/// Without --queue the policer's burst is 10 ms: at 120 kbit/s a 74-byte
/// frame takes 4.93 ms, so two of a burst pass (9.87 ms) and a third would
/// finish 14.8 ms out; the 4.8 ms of slack is far more than six runs take,
/// even in an emulated VM. Drops leave the link state alone: 20 ms later the
/// link has drained and the next packet passes (it would not if the four
/// drops had advanced the state by 19.7 ms more).
#[test]
fn policing_defaults_to_a_10ms_burst_and_drops_do_not_consume_the_rate() {
    for p in RECEIVE {
        let mut l = load(&[rate(120_000, None)]);
        let f = udp4(CLIENT_V4, SERVER_V4, 1, 2);
        let verdicts: Vec<bool> = (0..6).map(|_| run(&mut l, p, &f, 1)).collect();
        assert_eq!(verdicts, [true, true, false, false, false, false], "{p:?}");
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            run(&mut l, p, &f, 1),
            "{p:?}: the link drained; dropped packets did not occupy it"
        );
        let c = counters(&l, 0);
        assert_eq!((c.passed, c.dropped_queue), (3, 4), "{p:?}");
    }
}

/// A tolerance shorter than one packet's serialization still lets a packet
/// through an idle link (as a token bucket must hold one MTU), rather than
/// dropping everything.
#[test]
fn policing_tolerance_is_never_below_one_packet() {
    for p in RECEIVE {
        let mut l = load(&[rate(10_000, Some(QueueLimit::Time { ns: 1_000_000 }))]);
        let f = udp4(CLIENT_V4, SERVER_V4, 1, 2);
        let verdicts: Vec<bool> = (0..5).map(|_| run(&mut l, p, &f, 1)).collect();
        assert_eq!(verdicts, [true, false, false, false, false], "{p:?}");
    }
}

/// Offset of `tstamp` in `struct __sk_buff` and the struct's size (see
/// bpf_prog_test_run.rs).
const SKB_TSTAMP_OFFSET: usize = 152;
const SKB_SIZE: usize = 192;

/// Delay, jitter, reorder and duplication are refused for ingress by the
/// controller; a rule that has them anyway (here loaded directly) never
/// holds, reorders or copies a packet at tc ingress: no departure time, no
/// counters but `passed`.
#[test]
fn delay_reorder_and_duplicate_never_happen_at_tc_ingress() {
    let rule = RuleSpec {
        delay: Some(DelaySpec {
            delay_ns: 50_000_000,
            jitter_ns: 10_000_000,
            ..Default::default()
        }),
        reorder: Some(0.5),
        duplicate: Some(1.0),
        ..Default::default()
    };
    let mut l = load(&[rule]);
    for _ in 0..50 {
        let ctx_in = [0u8; SKB_SIZE];
        let mut ctx_out = [0u8; SKB_SIZE];
        let f = udp4(CLIENT_V4, SERVER_V4, 1, 2);
        let mut out = vec![0u8; f.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(&f),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx_in),
            ctx_out: Some(&mut ctx_out),
            ..Default::default()
        };
        let r = test_run(&mut l, Prog::Ingress, opts);
        assert_eq!(r.return_value, TC_ACT_OK);
        let ts = u64::from_ne_bytes(
            ctx_out[SKB_TSTAMP_OFFSET..SKB_TSTAMP_OFFSET + 8]
                .try_into()
                .unwrap(),
        );
        assert_eq!(ts, 0, "no departure time at ingress");
    }
    let c = counters(&l, 0);
    assert_eq!(
        (c.passed, c.delayed, c.reordered, c.duplicated),
        (50, 0, 0, 0)
    );
    assert_eq!(l.maps.global_counters().unwrap().errors, 0);
}

#[test]
fn delay_and_duplicate_never_happen_at_xdp() {
    let rule = RuleSpec {
        delay: Some(DelaySpec {
            delay_ns: 50_000_000,
            ..Default::default()
        }),
        duplicate: Some(1.0),
        ..Default::default()
    };
    let mut l = load(&[rule]);
    assert!(run(
        &mut l,
        Prog::Xdp,
        &udp4(CLIENT_V4, SERVER_V4, 1, 2),
        50
    ));
    let c = counters(&l, 0);
    assert_eq!(
        (c.passed, c.delayed, c.reordered, c.duplicated),
        (50, 0, 0, 0)
    );
}

/// Fragments, truncated headers, non-IP frames and garbage pass (they cannot
/// match a port rule) and are not errors; a match-all rule still applies to
/// them, as netem's does.
#[test]
fn truncated_garbage_and_non_ip_frames_fail_open() {
    for p in RECEIVE {
        let mut l = load(&[RuleSpec {
            loss: Some(1.0),
            matcher: MatchSpec {
                dport: Some((2000, 2000)),
                ..Default::default()
            },
            ..Default::default()
        }]);
        let ip = ipv4(CLIENT_V4, SERVER_V4, 17, 0, &udp(1000, 2000, &[0; 8]));
        let frag = eth(
            &[],
            ETH_P_IP,
            &ipv4(CLIENT_V4, SERVER_V4, 17, 100, &udp(1000, 2000, &[0; 8])),
        );
        let frames: Vec<Vec<u8>> = vec![
            frag,
            eth(&[(ETH_P_8021Q, 5)], ETH_P_IP, &ip[..12]),
            eth(&[(ETH_P_8021Q, 5)], ETH_P_IP, &ip[..20 + 3]),
            eth(&[], ETH_P_ARP, &arp()),
            (0..64u8).map(|i| i.wrapping_mul(37)).collect(),
            // Behind a VLAN tag: the kernel's skb test harness itself rejects
            // a bare truncated IP frame.
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

        // Corruption of frames without a payload it may touch (no full IP
        // header, no L4 header, not IP) changes nothing and is not an error.
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
fn expired_lease_passes_everything() {
    for p in RECEIVE {
        let mut l = load(&[RuleSpec {
            blackhole: true,
            ..Default::default()
        }]);
        l.maps.set_lease_deadline_ns(1).unwrap();
        assert!(
            run(&mut l, p, &udp4(CLIENT_V4, SERVER_V4, 1, 2), 5),
            "{p:?}"
        );
        assert_eq!(l.maps.global_counters().unwrap().lease_expired, 5, "{p:?}");
        assert_eq!(counters(&l, 0).packets, 0, "{p:?}");
    }
}

/// All three programs stay far from the verifier's 1M-instruction limit.
#[test]
fn verifier_complexity_has_headroom() {
    let mut l = load(&[RuleSpec::default()]);
    for (name, info) in [
        ("impair_egress", l.tc_egress().unwrap().info().unwrap()),
        ("impair_ingress", l.tc_ingress().unwrap().info().unwrap()),
        ("impair_xdp", l.xdp().unwrap().info().unwrap()),
    ] {
        let processed = info
            .verified_instruction_count()
            .expect("kernel reports verified_insns");
        eprintln!("{name}: verifier processed {processed} instructions");
        assert!(
            processed < 150_000,
            "{name}: verifier processed {processed} instructions (limit 1,000,000)"
        );
    }
}
