//! Needs sch_fq (the VM tier runs it as part of `netns fq::`): delays of a
//! 1,000-prefix latency matrix per destination, a delay series' steps,
//! measured at the receiver, and what `impair stats` says a rate trace
//! offered and delivered against what the receiver got.
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use impair_tests::{
    kernel::fq_or_note,
    ns::{impair_in, lab, socket_pair, stdout_ok, Site},
    Scratch,
};
use impair_tools::lab::SERVER_IF;
use impair_tools::probe::{run_pair, ProbeConfig};

use crate::matrix::probe_to;

/// Sampled destinations and their one-way delays, ms.
const SAMPLE: [(u8, u64); 4] = [(10, 5), (11, 20), (12, 40), (13, 80)];

/// Slack for the receiver's median over the configured delay: scheduling in
/// an emulated (TCG) guest adds milliseconds.
const SLACK_MS: u64 = 20;

#[test]
fn matrix_delay_per_destination_at_the_receiver() {
    let lab = lab("fqmatrix");
    if !fq_or_note(
        &lab,
        "fq::traces::matrix_delay_per_destination_at_the_receiver",
        "delays need sch_fq: the VM tier runs this",
    ) {
        return;
    }
    for (host, _) in SAMPLE {
        lab.exec(
            &lab.server,
            &[
                "ip",
                "addr",
                "add",
                &format!("198.18.2.{host}/32"),
                "dev",
                SERVER_IF,
            ],
        )
        .unwrap();
    }
    let mut csv = String::from("prefix,delay,jitter,loss,rate\n");
    for host in 0..=255u8 {
        let delay = SAMPLE
            .iter()
            .find(|(h, _)| *h == host)
            .map_or(String::new(), |(_, ms)| format!("{ms}ms"));
        csv += &format!("198.18.2.{host}/32,{delay},,,\n");
    }
    for i in 0..744u32 {
        csv += &format!("198.19.{}.{}/32,{}ms,,,\n", i / 256, i % 256, 1 + i % 100);
    }
    let scratch = Scratch::new("fqmatrix");
    let file = scratch.file("m.csv", &csv);
    let site = Site::RouterEgress;
    let before = site.state(&lab);
    let ctl = site.attach(&lab, &["--matrix", &file]);
    for (host, ms) in SAMPLE {
        let r = probe_to(&lab, Ipv4Addr::new(198, 18, 2, host), 300);
        assert_eq!(r.lost, 0, "198.18.2.{host}: {r:?}");
        let d = r.delay.expect("delay stats");
        let want = ms * 1_000_000;
        assert!(
            d.min_ns >= want,
            "198.18.2.{host}: none before {ms} ms: {d:?}"
        );
        assert!(
            d.p50_ns < want + SLACK_MS * 1_000_000,
            "198.18.2.{host}: median near {ms} ms: {d:?}"
        );
    }
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    site.assert_restored(&lab, &before);
}

#[test]
fn delay_series_steps_at_the_receiver() {
    let lab = lab("fqseries");
    if !fq_or_note(
        &lab,
        "fq::traces::delay_series_steps_at_the_receiver",
        "delays need sch_fq: the VM tier runs this",
    ) {
        return;
    }
    let scratch = Scratch::new("fqseries");
    // 10 ms for the first 15 s (attaching in an emulated guest is slow),
    // then 60 ms, held.
    let file = scratch.file("d.csv", "0,10ms\n15000,60ms\n");
    let site = Site::RouterEgress;
    let before = site.state(&lab);
    let t0 = Instant::now();
    let ctl = site.attach(&lab, &["--delay-trace", &file, "--trace-end", "hold"]);
    let t1 = Instant::now();
    let first = probe_to(&lab, lab.server_v4(), 300);
    assert!(
        t0.elapsed() < Duration::from_millis(14_500),
        "the first probe ended within the first step"
    );
    let d = first.delay.expect("delay stats");
    assert!(
        d.min_ns >= 10_000_000 && d.p50_ns < (10 + SLACK_MS) * 1_000_000,
        "{d:?}"
    );
    // `impair stats` says where the series is and the delay in force.
    let s = site.stats(&lab);
    let at = &s["series"][0];
    assert_eq!(at["kind"], "delay", "{s}");
    assert_eq!(at["held"], false, "{s}");
    assert_eq!(at["delay_ns"], 10_000_000, "{s}");
    assert!(at["position_ms"].as_u64().unwrap() < 15_000, "{s}");
    std::thread::sleep(Duration::from_millis(15_300).saturating_sub(t1.elapsed()));
    let second = probe_to(&lab, lab.server_v4(), 300);
    let d = second.delay.expect("delay stats");
    assert!(
        d.min_ns >= 60_000_000 && d.p50_ns < (60 + SLACK_MS) * 1_000_000,
        "{d:?}"
    );
    let s = site.stats(&lab);
    let at = &s["series"][0];
    assert_eq!(at["held"], true, "{s}");
    assert_eq!(at["delay_ns"], 60_000_000, "{s}");
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    site.assert_restored(&lab, &before);
}

#[test]
fn rate_trace_stats_follow_the_receiver() {
    let lab = lab("fqrtrace");
    if !fq_or_note(
        &lab,
        "fq::traces::rate_trace_stats_follow_the_receiver",
        "rate traces need sch_fq: the VM tier runs this",
    ) {
        return;
    }
    let scratch = Scratch::new("fqrtrace");
    // One opportunity per 4 ms (3 Mbit/s: 360 datagrams of 1,042 bytes a
    // second, which even an emulated guest's sender exceeds), a 100 ms period.
    let times: String = (1..=25).map(|k| format!("{}\n", 4 * k)).collect();
    let file = scratch.file("link.trace", &times);
    let site = Site::RouterEgress;
    let before = site.state(&lab);
    // UDP only: the trace carries the probe alone.
    let ctl = site.attach(&lab, &["--rate-trace", &file, "--proto", "udp"]);
    let s0 = site.stats(&lab);
    let t0 = s0["rate_trace"].clone();
    assert_eq!(t0["period_ms"], 100, "{s0}");
    assert_eq!(t0["opportunities"], 25, "{s0}");
    // 4,000 datagrams of 1,042 wire bytes at up to 20,000 per second: 4.2 MB
    // offered against 375 kB/s, so the 1 s queue limit drops most.
    let payload = 1_000;
    let frame = (payload + 8 + 20 + 14) as u64;
    let (tx, rx, to) = socket_pair(&lab, false, 0);
    let cfg = ProbeConfig {
        count: 4_000,
        rate_pps: 20_000,
        payload_len: payload,
        linger: Duration::from_secs(3),
        ..Default::default()
    };
    let r = run_pair(tx, rx, to, &cfg).unwrap();
    let s1 = site.stats(&lab);
    let t1 = &s1["rate_trace"];
    let u = |t: &serde_json::Value, k: &str| t[k].as_u64().unwrap_or_else(|| panic!("{k}: {t}"));
    let (offered, delivered) = (u(t1, "offered_bytes"), u(t1, "delivered_bytes"));
    // The trace never delivers more than it offered, and what it delivered
    // is what the receiver got, to the packet.
    assert!(delivered <= offered, "{s1}");
    assert_eq!(delivered % frame, 0, "whole datagrams: {s1}");
    assert_eq!(delivered / frame, r.received, "{r:?} {s1}");
    assert!(u(t1, "dropped_queue") > 0, "the queue limit dropped: {s1}");
    assert_eq!(u(t1, "dropped_queue") + r.received, r.sent, "{r:?} {s1}");
    assert_eq!(u(t1, "load_wire_bytes"), r.sent * frame, "{s1}");
    // Where in the trace: it advanced by the probe's time (over 3 s).
    let at = |t: &serde_json::Value| u(t, "loops") * 100 + u(t, "position_ms");
    assert!(at(t1) >= at(&t0) + 3_000, "{t0} then {t1}");
    assert!(u(t1, "position_ms") < 100, "{t1}");
    let text = stdout_ok(&impair_in(&lab.router, &["stats", "r1"]));
    assert!(
        text.contains("rate trace: at ") && text.contains(&format!("delivered {delivered} bytes")),
        "{text}"
    );
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    site.assert_restored(&lab, &before);
}
