//! Latency matrices through the real programs: the most specific prefix
//! wins, IPv4 and IPv6 in one trie, a destination no prefix holds gets the
//! rule alone, a rule without a matrix never reads the trie, loss and rate
//! per destination with their own state and counters, the receive hooks
//! (loss, policing, never a delay), and the swap with the rule-set slots.
use std::{net::Ipv4Addr, sync::Arc};

use impair::{
    engine::Program,
    model::{compile_all, DelaySpec, Matrix, RuleSpec},
    sys::monotonic_ns,
};
use impair_tests::{
    bpf::{counters, dst, load, run, run_skb, run_tstamp, RECEIVE},
    packet::*,
    CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6,
};

const EGRESS: Program = Program::TcEgress;

fn matrix(csv: &str) -> Arc<Matrix> {
    Arc::new(Matrix::parse_csv("test.csv", csv).unwrap())
}

fn with_matrix(csv: &str) -> RuleSpec {
    RuleSpec {
        matrix: Some(matrix(csv)),
        ..Default::default()
    }
}

const REGIONS: &str = "\
prefix,delay,jitter,loss,rate
198.18.0.0/15,10ms,,,
198.18.2.0/24,20ms,,,
198.18.2.1/32,30ms,,,
198.18.3.0/24,,,100%,
2001:2::/48,40ms,,,
2001:2:0:2::/64,50ms,,,
";

/// The departure delay egress gives a packet to `to` (ns after now).
fn delay_to(l: &mut impair::engine::Loaded, frame: &[u8]) -> (bool, u64, u64) {
    let before = monotonic_ns();
    let (ok, ts) = run_tstamp(l, EGRESS, frame);
    let after = monotonic_ns();
    (ok, ts.saturating_sub(after), ts.saturating_sub(before))
}

fn assert_delay(l: &mut impair::engine::Loaded, frame: &[u8], want_ns: u64, what: &str) {
    let (ok, lo, hi) = delay_to(l, frame);
    assert!(ok, "{what}: passed");
    assert!(
        lo <= want_ns && want_ns <= hi,
        "{what}: delay in [{lo}, {hi}] ns, want {want_ns}"
    );
}

#[test]
fn most_specific_prefix_wins_for_both_families() {
    let mut l = load(&[with_matrix(REGIONS)]);
    let v4 = |a: Ipv4Addr| udp4(CLIENT_V4, a, 1, 2);
    assert_delay(&mut l, &v4(SERVER_V4), 30_000_000, "the /32");
    assert_delay(
        &mut l,
        &v4(Ipv4Addr::new(198, 18, 2, 9)),
        20_000_000,
        "the /24",
    );
    assert_delay(
        &mut l,
        &v4(Ipv4Addr::new(198, 19, 7, 7)),
        10_000_000,
        "the /15",
    );
    assert_delay(
        &mut l,
        &udp6(CLIENT_V6, SERVER_V6, 1, 2),
        50_000_000,
        "the IPv6 /64",
    );
    let other6 = "2001:2:0:9::1".parse().unwrap();
    assert_delay(
        &mut l,
        &udp6(CLIENT_V6, other6, 1, 2),
        40_000_000,
        "the IPv6 /48",
    );
    // No prefix holds it: the rule alone (which does nothing here).
    let (ok, ts) = run_tstamp(&mut l, EGRESS, &v4(Ipv4Addr::new(10, 1, 2, 3)));
    assert!(ok);
    assert!(
        ts <= monotonic_ns(),
        "no matrix entry: no delay, got tstamp {ts}"
    );
    // An IPv4 address is never taken for the IPv6 ::ffff:0:0/96 space's
    // neighbours, nor the reverse: ::c612:201 (not mapped) finds nothing.
    let unmapped = "::c612:201".parse().unwrap();
    let (ok, ts) = run_tstamp(&mut l, EGRESS, &udp6(CLIENT_V6, unmapped, 1, 2));
    assert!(ok && ts <= monotonic_ns());
    assert_eq!(counters(&l, 0).packets, 7);
}

#[test]
fn matrix_delay_adds_to_the_rules_and_loss_drops_per_destination() {
    let rule = RuleSpec {
        delay: Some(DelaySpec {
            delay_ns: 5_000_000,
            ..Default::default()
        }),
        ..with_matrix(REGIONS)
    };
    let mut l = load(&[rule]);
    assert_delay(
        &mut l,
        &udp4(CLIENT_V4, SERVER_V4, 1, 2),
        35_000_000,
        "rule 5 ms + destination 30 ms",
    );
    let lossy = udp4(CLIENT_V4, Ipv4Addr::new(198, 18, 3, 3), 1, 2);
    for _ in 0..20 {
        assert!(!run(&mut l, EGRESS, &lossy, 1), "100% to 198.18.3.0/24");
    }
    let c = counters(&l, 0);
    assert_eq!(c.dropped_loss, 20);
    let dests = l.maps.matrix_dests(l.maps.active_slot().unwrap()).unwrap();
    let lossy_entry = dests
        .iter()
        .find(|d| d.prefix.to_string() == "198.18.3.0/24")
        .unwrap();
    assert_eq!(lossy_entry.entry.packets, 20);
    assert_eq!(lossy_entry.entry.dropped_loss, 20);
    assert_eq!(lossy_entry.entry.bytes, 20 * lossy.len() as u64);
    let host = dests
        .iter()
        .find(|d| d.prefix.to_string() == "198.18.2.1/32")
        .unwrap();
    assert_eq!((host.entry.packets, host.entry.dropped_loss), (1, 0));
    // The /24 around the host saw nothing: only the most specific counts.
    let around = dests
        .iter()
        .find(|d| d.prefix.to_string() == "198.18.2.0/24")
        .unwrap();
    assert_eq!(around.entry.packets, 0);
}

#[test]
fn each_destination_has_its_own_rate_state() {
    // 10 kbit/s to each of two hosts (a packet occupies the link for tens
    // of ms, far longer than between two test runs, even in an emulated
    // VM): packets to one never wait behind the other's.
    let m = "prefix,delay,jitter,loss,rate\n198.18.2.1,,,,10kbit\n198.18.2.2,,,,10kbit\n";
    let mut l = load(&[with_matrix(m)]);
    let a = udp4(CLIENT_V4, SERVER_V4, 1, 2);
    let b = udp4(CLIENT_V4, Ipv4Addr::new(198, 18, 2, 2), 1, 2);
    let per_packet_ns = a.len() as u64 * 800_000;
    let (_, a1) = run_skb(&mut l, EGRESS, &a, 0, 0);
    let (_, a2) = run_skb(&mut l, EGRESS, &a, 0, 0);
    let (_, b1) = run_skb(&mut l, EGRESS, &b, 0, 0);
    assert_eq!(a2 - a1, per_packet_ns, "back to back on a's link");
    assert!(
        b1 < a2,
        "b's first packet does not queue behind a's ({b1} vs {a2})"
    );
}

#[test]
fn receive_hooks_take_the_loss_and_never_delay() {
    let m = "prefix,delay,jitter,loss,rate\n198.18.2.0/24,50ms,,100%,\n198.18.4.0/24,50ms,,,\n";
    for p in RECEIVE {
        let mut l = load(&[with_matrix(m)]);
        assert!(
            !run(&mut l, p, &udp4(CLIENT_V4, SERVER_V4, 1, 2), 1),
            "{p:?}: lost"
        );
        let far = udp4(CLIENT_V4, Ipv4Addr::new(198, 18, 4, 1), 1, 2);
        assert!(
            run(&mut l, p, &far, 1),
            "{p:?}: passes (no delay on receive)"
        );
        let c = counters(&l, 0);
        assert_eq!((c.dropped_loss, c.delayed), (1, 0), "{p:?}");
    }
}

#[test]
fn a_rule_without_a_matrix_never_reads_the_trie() {
    // Rule 0 (to 198.18.9.0/24) has no matrix; rule 1 has one covering everything.
    let rules = [
        RuleSpec {
            matcher: dst("198.18.9.0/24"),
            loss: Some(0.0),
            ..Default::default()
        },
        with_matrix("prefix,delay,jitter,loss,rate\n0.0.0.0/0,,,100%,\n"),
    ];
    let mut l = load(&rules);
    assert!(run(
        &mut l,
        EGRESS,
        &udp4(CLIENT_V4, Ipv4Addr::new(198, 18, 9, 1), 1, 2),
        10
    ));
    assert!(!run(&mut l, EGRESS, &udp4(CLIENT_V4, SERVER_V4, 1, 2), 1));
    let dests = l.maps.matrix_dests(l.maps.active_slot().unwrap()).unwrap();
    assert_eq!(dests.len(), 1);
    assert_eq!(dests[0].rule, 1);
    assert_eq!(
        dests[0].entry.packets, 1,
        "only rule 1's packet looked it up"
    );
}

#[test]
fn swap_replaces_the_matrix_with_the_slot() {
    let mut l = load(&[with_matrix(REGIONS)]);
    let f = udp4(CLIENT_V4, SERVER_V4, 1, 2);
    assert_delay(&mut l, &f, 30_000_000, "slot 0");
    let next = compile_all(&[with_matrix(
        "prefix,delay,jitter,loss,rate\n198.18.2.0/24,7ms,,,\n",
    )])
    .unwrap();
    l.maps.write_and_activate(1, &next, 2).unwrap();
    assert_delay(&mut l, &f, 7_000_000, "slot 1's matrix");
    assert_eq!(l.maps.matrix_dests(1).unwrap().len(), 1);
    assert_eq!(
        l.maps.matrix_dests(0).unwrap().len(),
        6,
        "slot 0 kept until rewritten"
    );
    // Back to slot 0 with no matrix at all: its entries are cleared.
    let plain = compile_all(&[RuleSpec {
        loss: Some(0.0),
        ..Default::default()
    }])
    .unwrap();
    l.maps.write_and_activate(0, &plain, 3).unwrap();
    assert!(l.maps.matrix_dests(0).unwrap().is_empty());
    let (ok, ts) = run_tstamp(&mut l, EGRESS, &f);
    assert!(ok && ts <= monotonic_ns());
    // Read back for `impair update`: slot 1's matrix as the model has it.
    let back = l.maps.matrix_of(1, 0).unwrap().unwrap();
    assert_eq!(back.dests.len(), 1);
    assert_eq!(back.dests[0].delay_ns, Some(7_000_000));
    assert_eq!(back.dests[0].prefix.to_string(), "198.18.2.0/24");
}
