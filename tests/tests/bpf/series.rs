//! Delay and loss series through the real programs. BPF_PROG_TEST_RUN runs
//! at real time, so each test moves the series' start (its header in
//! `IMPAIR_SERIES_H`) so that now falls in a known step, then checks the
//! value the kernel used: the departure time (delay) or the verdict (loss),
//! looped and held, and that a rule without a series keeps its own values.
use std::sync::Arc;

use impair::{
    engine::{Loaded, Program},
    model::series::{Series, SeriesKind, TraceEnd, TraceMode},
    model::{DelaySpec, RuleSpec},
    sys::monotonic_ns,
};
use impair_common::series::{SERIES_DELAY, SERIES_LOSS};
use impair_tests::{
    bpf::{counters, load, run, run_tstamp, ALL_HOOKS},
    packet::*,
    CLIENT_V4, SERVER_V4,
};

const EGRESS: Program = Program::TcEgress;

fn series(kind: SeriesKind, text: &str, end: TraceEnd) -> Arc<Series> {
    Arc::new(Series::parse("t.csv", text, kind, TraceMode::Step, end).unwrap())
}

/// Puts now at `at_ms` into the active slot's series `kind`.
fn now_at(l: &mut Loaded, kind: u32, at_ms: u64) {
    let slot = l.maps.active_slot().unwrap();
    let start = monotonic_ns() - at_ms * 1_000_000;
    l.maps.set_series_start(slot, kind, start).unwrap();
}

fn delay_now(l: &mut Loaded) -> (u64, u64) {
    let before = monotonic_ns();
    let (ok, ts) = run_tstamp(l, EGRESS, &udp4(CLIENT_V4, SERVER_V4, 1, 2));
    let after = monotonic_ns();
    assert!(ok);
    (ts.saturating_sub(after), ts.saturating_sub(before))
}

#[test]
fn delay_series_sets_the_delay_of_the_current_step() {
    let rule = RuleSpec {
        delay_series: Some(series(
            SeriesKind::Delay,
            "0,10ms\n1000,50ms\n2000,20ms\n3000,20ms\n",
            TraceEnd::Loop,
        )),
        ..Default::default()
    };
    let mut l = load(&[rule]);
    for (at_ms, want_ms) in [(500, 10), (1500, 50), (2500, 20), (3500, 10), (4500, 50)] {
        now_at(&mut l, SERIES_DELAY, at_ms);
        let (lo, hi) = delay_now(&mut l);
        let want = want_ms * 1_000_000;
        assert!(
            lo <= want && want <= hi,
            "at {at_ms} ms (looped): delay in [{lo}, {hi}], want {want_ms} ms"
        );
    }
    // Held: past the end, the last value.
    let rule = RuleSpec {
        delay_series: Some(series(
            SeriesKind::Delay,
            "0,10ms\n1000,50ms\n",
            TraceEnd::Hold,
        )),
        ..Default::default()
    };
    let mut l = load(&[rule]);
    now_at(&mut l, SERIES_DELAY, 9_000);
    let (lo, hi) = delay_now(&mut l);
    assert!(lo <= 50_000_000 && 50_000_000 <= hi, "held: [{lo}, {hi}]");
}

#[test]
fn delay_series_replaces_the_rules_delay_and_keeps_its_jitter_bounds() {
    let rule = RuleSpec {
        delay: Some(DelaySpec {
            delay_ns: 100_000_000,
            jitter_ns: 1_000_000,
            ..Default::default()
        }),
        delay_series: Some(series(SeriesKind::Delay, "0,30ms\n", TraceEnd::Loop)),
        ..Default::default()
    };
    let mut l = load(&[rule]);
    for _ in 0..50 {
        let (lo, hi) = delay_now(&mut l);
        assert!(
            hi >= 29_000_000 && lo <= 31_000_000,
            "30 ms ± 1 ms, not the rule's 100 ms: [{lo}, {hi}]"
        );
    }
}

#[test]
fn loss_series_drops_by_the_current_step_at_every_hook() {
    let rule = RuleSpec {
        loss: Some(0.0),
        loss_series: Some(series(
            SeriesKind::Loss,
            "0,0%\n1000,100%\n2000,0%\n",
            TraceEnd::Loop,
        )),
        ..Default::default()
    };
    let f = udp4(CLIENT_V4, SERVER_V4, 1, 2);
    for p in ALL_HOOKS {
        let mut l = load(std::slice::from_ref(&rule));
        now_at(&mut l, SERIES_LOSS, 500);
        assert!(run(&mut l, p, &f, 100), "{p:?}: 0% step passes");
        now_at(&mut l, SERIES_LOSS, 1500);
        for _ in 0..20 {
            assert!(!run(&mut l, p, &f, 1), "{p:?}: 100% step drops");
        }
        now_at(&mut l, SERIES_LOSS, 2500);
        assert!(run(&mut l, p, &f, 1), "{p:?}: looped to the 0% step");
        assert_eq!(counters(&l, 0).dropped_loss, 20, "{p:?}");
    }
}

#[test]
fn a_rule_without_the_series_flag_keeps_its_own_loss() {
    // Rule 0 (udp dport 9) has a 100% loss series; rule 1 has 0% loss.
    let rules = [
        RuleSpec {
            matcher: impair::model::MatchSpec {
                dport: Some((9, 9)),
                proto: Some(impair::model::Proto(17)),
                ..Default::default()
            },
            loss_series: Some(series(SeriesKind::Loss, "0,100%\n", TraceEnd::Hold)),
            ..Default::default()
        },
        RuleSpec {
            loss: Some(0.0),
            ..Default::default()
        },
    ];
    let mut l = load(&rules);
    assert!(!run(&mut l, EGRESS, &udp4(CLIENT_V4, SERVER_V4, 1, 9), 1));
    assert!(run(&mut l, EGRESS, &udp4(CLIENT_V4, SERVER_V4, 1, 2), 10));
}

#[test]
fn series_read_back_for_update() {
    let s = series(SeriesKind::Loss, "0,5%\n10,50%\n20,5%\n", TraceEnd::Loop);
    let l = load(&[RuleSpec {
        loss_series: Some(s.clone()),
        ..Default::default()
    }]);
    let slot = l.maps.active_slot().unwrap();
    let back = l.maps.series_of(slot, SERIES_LOSS).unwrap().unwrap();
    assert_eq!(back.expand().0.len, s.expand().0.len);
    assert!(l.maps.series_of(slot, SERIES_DELAY).unwrap().is_none());
}
