//! Loss at every hook: drops and their counters, the Bernoulli rate and
//! Gilbert-Elliott bursts of the in-kernel generator, reproducible seeds, the
//! lease, and atomic rule-set swaps.
use impair::{
    engine::Program,
    model::units::parse_loss_model,
    model::{compile_all, MatchSpec, RuleSpec},
};
use impair_tests::{
    bpf::{counters, drop_all, dst, load, load_seeded, run, run_skb, ALL_HOOKS},
    packet::*,
    pin_to_cpu0,
    stats::{assert_inside, Z_SUITE},
    CLIENT_V4, SERVER_V4,
};

/// A matching packet is dropped and counted (packets, bytes, drops, the
/// global totals); an unmatched one passes and counts as unmatched.
#[test]
fn matching_packet_is_dropped_and_counted() {
    for p in ALL_HOOKS {
        let mut l = load(&[drop_all(dst("198.18.2.0/24"))]);
        let f = udp4(CLIENT_V4, SERVER_V4, 1000, 2000);
        assert!(!run(&mut l, p, &f, 1), "{p:?}");
        let c = counters(&l, 0);
        assert_eq!((c.packets, c.dropped_loss, c.passed), (1, 1, 0), "{p:?}");
        assert_eq!(c.bytes, f.len() as u64, "{p:?}");
        let g = l.maps.global_counters().unwrap();
        assert_eq!((g.packets, g.unmatched, g.errors), (1, 0, 0), "{p:?}");

        assert!(!run(&mut l, p, &f, 4), "{p:?}");
        let other = udp4(CLIENT_V4, "198.18.3.1".parse().unwrap(), 1, 2);
        assert!(run(&mut l, p, &other, 1), "{p:?}: unmatched passes");
        let c = counters(&l, 0);
        assert_eq!(
            (c.packets, c.dropped_loss, c.passed, c.bytes),
            (5, 5, 0, 5 * f.len() as u64),
            "{p:?}"
        );
        let g = l.maps.global_counters().unwrap();
        assert_eq!((g.packets, g.unmatched, g.errors), (6, 1, 0), "{p:?}");
        // Plain packets: each skb is one wire packet.
        assert_eq!(
            (
                c.wire_packets,
                c.wire_bytes,
                c.dropped_wire_packets,
                c.super_packets
            ),
            (5, 5 * f.len() as u64, 5, 0),
            "{p:?}"
        );
    }
}

/// A GSO/GRO super-packet (an skb of `gso_segs` wire packets) counts as one
/// skb and as its wire packets, each with its own headers (Ethernet, IPv4,
/// TCP: 54 bytes), at both tc hooks; a drop drops all its wire packets, and
/// it counts as a super-packet decided whole. `gso_segs` 0 is one packet.
#[test]
fn super_packets_count_their_wire_packets_and_bytes() {
    for p in [Program::TcEgress, Program::TcIngress] {
        let mut l = load(&[drop_all(dst("198.18.2.0/24"))]);
        let f = tcp4_csum(CLIENT_V4, SERVER_V4, 1000, 2000, &[7u8; 4 * 500]);
        let hdr = 14 + 20 + 20;
        let (ok, _) = run_skb(&mut l, p, &f, 0, 4);
        assert!(!ok, "{p:?}");
        let (ok, _) = run_skb(&mut l, p, &f, 0, 0);
        assert!(!ok, "{p:?}");
        let c = counters(&l, 0);
        assert_eq!((c.packets, c.dropped_loss), (2, 2), "{p:?}: skbs as before");
        assert_eq!(c.bytes, 2 * f.len() as u64, "{p:?}");
        assert_eq!(
            (c.wire_packets, c.dropped_wire_packets, c.super_packets),
            (5, 5, 1),
            "{p:?}"
        );
        assert_eq!(c.wire_bytes, 2 * f.len() as u64 + 3 * hdr, "{p:?}");
    }
}

/// 10% loss over 200,000 runs of each program: the configured rate lies
/// inside the 99% Wilson interval of the measured proportion.
#[test]
fn bernoulli_loss_rate_is_inside_the_99_percent_interval() {
    pin_to_cpu0();
    for p in ALL_HOOKS {
        let mut l = load(&[RuleSpec {
            loss: Some(0.10),
            ..Default::default()
        }]);
        let n = 200_000u32;
        run(&mut l, p, &udp4(CLIENT_V4, SERVER_V4, 1, 2), n);
        let c = counters(&l, 0);
        assert_eq!(c.packets, u64::from(n), "{p:?}");
        assert_eq!(c.packets, c.dropped_loss + c.passed, "{p:?}");
        assert_inside(
            &format!("{p:?} drops"),
            Z_SUITE,
            0.10,
            c.dropped_loss,
            c.packets,
        );
    }
}

/// Burst-loss models run at every hook (their state is per rule and CPU).
#[test]
fn gilbert_elliott_loss_runs_at_every_hook() {
    pin_to_cpu0();
    let ge = parse_loss_model("ge:5%,20%").unwrap();
    for p in ALL_HOOKS {
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

/// The same seed on the same CPU gives exactly the same decisions, another
/// seed others.
#[test]
fn seeded_runs_are_reproducible() {
    pin_to_cpu0();
    let rules = [RuleSpec {
        loss: Some(0.3),
        ..Default::default()
    }];
    for p in ALL_HOOKS {
        let mut drops = Vec::new();
        for seed in [7u64, 7, 8] {
            let mut l = load_seeded(&rules, seed);
            let f = udp4(CLIENT_V4, SERVER_V4, 1, 2);
            drops.push((0..200).map(|_| run(&mut l, p, &f, 1)).collect::<Vec<_>>());
        }
        assert_eq!(drops[0], drops[1], "{p:?}: same seed, same decisions");
        assert_ne!(drops[0], drops[2], "{p:?}: another seed, other decisions");
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
    for p in ALL_HOOKS {
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

/// Past the lease's deadline every packet passes untouched and counts as
/// lease-expired, whatever the rule (loss or blackhole).
#[test]
fn expired_lease_passes_everything() {
    let blackhole = RuleSpec {
        blackhole: true,
        ..Default::default()
    };
    for p in ALL_HOOKS {
        for rule in [drop_all(MatchSpec::default()), blackhole.clone()] {
            let mut l = load(&[rule]);
            l.maps.set_lease_deadline_ns(1).unwrap();
            assert!(
                run(&mut l, p, &udp4(CLIENT_V4, SERVER_V4, 1, 2), 5),
                "{p:?}"
            );
            assert_eq!(l.maps.global_counters().unwrap().lease_expired, 5, "{p:?}");
            assert_eq!(counters(&l, 0).packets, 0, "{p:?}");
        }
    }
}

#[test]
fn rule_set_swap_is_atomic_and_resets_counters() {
    for p in ALL_HOOKS {
        let mut l = load(&[drop_all(MatchSpec::default())]);
        let f = udp4(CLIENT_V4, SERVER_V4, 1, 2);
        assert!(!run(&mut l, p, &f, 3), "{p:?}");
        let pass = compile_all(&[RuleSpec::default()]).unwrap();
        l.maps.write_and_activate(1, &pass, 2).unwrap();
        assert_eq!(l.maps.active_slot().unwrap(), 1, "{p:?}");
        assert!(run(&mut l, p, &f, 4), "{p:?}");
        let c = counters(&l, 0);
        assert_eq!((c.packets, c.passed), (4, 4), "{p:?}");
    }
}
