//! Rate traces through the real egress program: departure times at the
//! trace's delivery opportunities (1500 bytes each), capacity unused before
//! a packet is ready is lost, the trace loops, and the queue limit drops
//! what would wait too long. The trace's start is moved so that now falls
//! at a known time of it (BPF_PROG_TEST_RUN runs at real time).
use std::sync::Arc;

use impair::{
    engine::{Loaded, Program},
    model::{trace::RateTrace, RuleSpec},
    sys::monotonic_ns,
};
use impair_tests::{
    bpf::{counters, load, run_tstamp},
    packet::*,
    CLIENT_V4, SERVER_V4,
};

const EGRESS: Program = Program::TcEgress;

fn with_trace(text: &str) -> RuleSpec {
    RuleSpec {
        rate_trace: Some(Arc::new(RateTrace::parse("t", text).unwrap())),
        ..Default::default()
    }
}

/// Moves the trace so that now is `at_ms` into it; returns its start.
fn now_at(l: &mut Loaded, at_ms: u64) -> u64 {
    let slot = l.maps.active_slot().unwrap();
    let start = monotonic_ns() - at_ms * 1_000_000;
    l.maps.set_trace_start(slot, start).unwrap();
    start
}

#[test]
fn packets_leave_at_the_opportunities_that_carry_them() {
    // One opportunity every 100 ms; period 400 ms.
    let mut l = load(&[with_trace("100\n200\n300\n400\n")]);
    let start = now_at(&mut l, 50);
    let f = udp4(CLIENT_V4, SERVER_V4, 1, 2);
    let per_opportunity = 1500 / f.len();
    let mut times = Vec::new();
    for _ in 0..=per_opportunity {
        let (ok, ts) = run_tstamp(&mut l, EGRESS, &f);
        assert!(ok);
        times.push((ts - start) / 1_000_000);
    }
    assert!(
        times[..per_opportunity].iter().all(|&t| t == 100),
        "the first {per_opportunity} packets of {} bytes share the 100 ms opportunity: {times:?}",
        f.len()
    );
    assert_eq!(times[per_opportunity], 200, "the next one waits for 200 ms");
    let c = counters(&l, 0);
    assert_eq!(c.delayed, per_opportunity as u64 + 1);
}

#[test]
fn unused_capacity_is_lost_and_the_trace_loops() {
    let mut l = load(&[with_trace("100\n200\n300\n400\n")]);
    let f = udp4(CLIENT_V4, SERVER_V4, 1, 2);
    // Ready at 250 ms: the opportunities at 100 and 200 ms went unused.
    let start = now_at(&mut l, 250);
    let (_, ts) = run_tstamp(&mut l, EGRESS, &f);
    assert_eq!((ts - start) / 1_000_000, 300);
    // Ready at 450 ms: the second period's 100 ms opportunity, at 500 ms.
    let start = now_at(&mut l, 450);
    let (_, ts) = run_tstamp(&mut l, EGRESS, &f);
    assert_eq!((ts - start) / 1_000_000, 500);
}

#[test]
fn the_queue_limit_drops_what_would_wait_too_long() {
    // One opportunity per 2 s: the second 1500 bytes would wait over the
    // default 1 s limit.
    let mut l = load(&[with_trace("2000\n")]);
    now_at(&mut l, 1_500);
    let f = udp4(CLIENT_V4, SERVER_V4, 1, 2);
    let fits = 1500 / f.len();
    for _ in 0..fits {
        assert!(
            run_tstamp(&mut l, EGRESS, &f).0,
            "these share the opportunity at 2 s"
        );
    }
    assert!(
        !run_tstamp(&mut l, EGRESS, &f).0,
        "the next would wait until 4 s"
    );
    let c = counters(&l, 0);
    assert_eq!(c.dropped_queue, 1);
    // What the trace delivered: the packets it gave a departure time, not
    // the one its queue limit dropped.
    assert_eq!(c.trace_bytes, fits as u64 * f.len() as u64, "{c:?}");
}

#[test]
fn trace_read_back_for_update() {
    let l = load(&[with_trace("1\n1\n5\n")]);
    let slot = l.maps.active_slot().unwrap();
    let back = l.maps.rate_trace_of(slot).unwrap().unwrap();
    assert_eq!(back.times_ms, [1, 1, 5]);
    let h = l.maps.trace_header(slot).unwrap();
    assert_eq!((h.period_ms, h.opportunities), (5, 3));
    // What `impair stats` shows: 2 s into a 5 ms period, 400 periods of
    // 3 opportunities offered (the position within the period is whatever
    // now is).
    let mut l = l;
    let slot = l.maps.active_slot().unwrap();
    l.maps
        .set_trace_start(slot, monotonic_ns() - 2_000_000_000)
        .unwrap();
    let s = impair::observe::trace::read(&l.maps, slot, Default::default())
        .unwrap()
        .unwrap();
    assert_eq!((s.period_ms, s.opportunities), (5, 3));
    assert!(s.loops >= 400 && s.position_ms < 5, "{s:?}");
    assert!(s.offered_bytes >= 399 * 3 * 1500, "{s:?}");
}

#[test]
fn stats_show_what_the_trace_offered_and_delivered() {
    // One opportunity per ms (12 Mbit/s), 100 ms period.
    let times: String = (1..=100).map(|t| format!("{t}\n")).collect();
    let mut l = load(&[with_trace(&times)]);
    now_at(&mut l, 1_000);
    let f = udp4(CLIENT_V4, SERVER_V4, 1, 2);
    let sent = 20u64;
    for _ in 0..sent {
        assert!(run_tstamp(&mut l, EGRESS, &f).0);
    }
    let s = impair::observe::snapshot::Snapshot::read(&l.maps, "test").unwrap();
    let t = s.rate_trace.clone().expect("the set has a rate trace");
    // What the rules counted: the packets' wire bytes, all delivered.
    let bytes = sent * f.len() as u64;
    assert_eq!(t.delivered_bytes, bytes, "{t:?}");
    assert_eq!(t.load_wire_bytes, bytes, "{t:?}");
    assert_eq!(s.rules[0].trace_bytes, bytes);
    // A second in: ten loops of the period, about 1000 opportunities
    // offered, more than was delivered.
    assert!(t.loops >= 10 && t.position_ms < 100, "{t:?}");
    assert!(t.offered_bytes >= 999 * 1500, "{t:?}");
    assert!(t.delivered_bytes <= t.offered_bytes, "{t:?}");
    // Prometheus shows the same.
    let body = impair::observe::metrics::render(std::slice::from_ref(&s));
    assert!(
        body.lines().any(
            |l| l.starts_with("impair_rate_trace_delivered_bytes_total{")
                && l.ends_with(&format!(" {bytes}"))
        ),
        "{body}"
    );
    assert!(
        body.lines()
            .any(|l| l.starts_with("impair_rate_trace_offered_bytes_total{")
                && l.ends_with(&format!(" {}", t.offered_bytes))),
        "{body}"
    );
    assert!(body.contains("# TYPE impair_rate_trace_position_seconds gauge"));
    // The position advances with the clock.
    std::thread::sleep(std::time::Duration::from_millis(30));
    let t2 = impair::observe::snapshot::Snapshot::read(&l.maps, "test")
        .unwrap()
        .rate_trace
        .unwrap();
    let at = |t: &impair::observe::trace::TraceStats| t.loops * 100 + t.position_ms;
    assert!(at(&t2) >= at(&t) + 30, "{t:?} then {t2:?}");
    assert!(t2.offered_bytes > t.offered_bytes, "{t:?} then {t2:?}");
}
