//! Needs sch_fq (the VM tier runs it as part of `netns fq::`): delays of a
//! 1,000-prefix latency matrix per destination, and a delay series' steps,
//! measured at the receiver.
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use impair_tests::{
    kernel::fq_or_note,
    ns::{lab, Site},
    Scratch,
};
use impair_tools::lab::SERVER_IF;

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
    std::thread::sleep(Duration::from_millis(15_300).saturating_sub(t1.elapsed()));
    let second = probe_to(&lab, lab.server_v4(), 300);
    let d = second.delay.expect("delay stats");
    assert!(
        d.min_ns >= 60_000_000 && d.p50_ns < (60 + SLACK_MS) * 1_000_000,
        "{d:?}"
    );
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    site.assert_restored(&lab, &before);
}
