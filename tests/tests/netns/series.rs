//! A loss series at the router's egress, measured at the receiver: each
//! step's loss inside the 99% Wilson interval of the step's value; `impair
//! stats` (JSON, text) and Prometheus say where in the series the link is
//! and which value is in force. (Delay series need sch_fq, which the host
//! lacks: the BPF tier checks their departure times step by step.)
use std::{
    io::{Read as _, Write as _},
    time::{Duration, Instant},
};

use impair_tests::{
    ns::{impair_in, lab, probe, stdout_ok, Site},
    stats::assert_inside_suite,
    Scratch,
};

/// GET /metrics from `addr` in namespace `ns`.
fn scrape(ns: &str, addr: &str) -> String {
    let addr = addr.to_owned();
    impair::netns::run_in(ns, move || {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        write!(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    })
    .unwrap()
}

/// The value of the sample of `body` whose line starts with `prefix`.
fn sample(body: &str, prefix: &str) -> f64 {
    let line = body
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {body}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn loss_series_steps_are_what_the_receiver_sees() {
    let lab = lab("series");
    let scratch = Scratch::new("series");
    // 40% for the first 6 s (attaching on a loaded machine takes seconds),
    // then 5%, held.
    let file = scratch.file("loss.csv", "time,value\n0,40%\n6000,5%\n");
    let site = Site::RouterEgress;
    let before = site.state(&lab);
    let t0 = Instant::now();
    let ctl = site.attach(
        &lab,
        &[
            "--loss-trace",
            &file,
            "--trace-end",
            "hold",
            "--seed",
            "7",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    // The series' time 0 is when the rule set was written: after t0, before t1.
    let t1 = Instant::now();
    assert!(ctl.first_line.contains("loss-trace"), "{}", ctl.first_line);
    let addr = ctl
        .first_line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap_or_else(|| panic!("no metrics address in {}", ctl.first_line))
        .to_owned();
    // Where the series is: in its first step, not held, 40% in force.
    let s0 = site.stats(&lab);
    let at0 = &s0["series"][0];
    assert_eq!(at0["kind"], "loss", "{s0}");
    assert_eq!(at0["looped"], false, "{s0}");
    assert_eq!(at0["held"], false, "{s0}");
    assert!(at0["length_ms"].as_u64().unwrap() >= 6_000, "{s0}");
    let p0 = at0["position_ms"].as_u64().unwrap();
    assert!(p0 < 6_000, "{s0}");
    assert!((at0["loss"].as_f64().unwrap() - 0.40).abs() < 1e-6, "{s0}");
    let first = probe(&lab, false, 0, 4_000, 200);
    let first_done = t0.elapsed();
    // It advanced with the clock (the probe took at least 200 ms).
    let s1 = site.stats(&lab);
    let p1 = s1["series"][0]["position_ms"].as_u64().unwrap();
    assert!(p1 >= p0 + 150, "{p0} then {s1}");
    assert!(
        first_done < Duration::from_millis(5_800),
        "the first step's probe ended {first_done:?} after the attach began: the series' \
         first step (6 s from the rule set's start, which comes after that) must hold it"
    );
    assert_inside_suite(0.40, first.lost, first.sent);
    std::thread::sleep(Duration::from_millis(6_200).saturating_sub(t1.elapsed()));
    let second = probe(&lab, false, 0, 10_000, 200);
    assert_inside_suite(0.05, second.lost, second.sent);
    let stats = site.stats(&lab);
    let rule = &stats["rules"][0];
    assert_eq!(
        rule["dropped_loss"],
        first.lost + second.lost,
        "engine drops == receiver losses: {stats}"
    );
    // Past its last time the series holds its last value, 5%.
    let at = &stats["series"][0];
    assert_eq!(at["held"], true, "{stats}");
    assert_eq!(at["position_ms"], at["length_ms"], "{stats}");
    assert!(
        (at["loss"].as_f64().unwrap() - 0.05).abs() < 1e-6,
        "{stats}"
    );
    let text = stdout_ok(&impair_in(&lab.router, &["stats", "r1"]));
    assert!(
        text.contains("loss series: ended after") && text.contains("holding its last value; now 5"),
        "{text}"
    );
    let body = scrape(&lab.router, &addr);
    assert_eq!(sample(&body, "impair_series_held{"), 1.0, "{body}");
    assert!(
        (sample(&body, "impair_series_loss_ratio{") - 0.05).abs() < 1e-6,
        "{body}"
    );
    assert!(
        body.contains("series=\"loss\"") && !body.contains("series=\"delay\""),
        "{body}"
    );
    let status = ctl.signal_and_wait(libc::SIGTERM);
    assert!(status.success(), "{status:?}");
    site.assert_restored(&lab, &before);
}
