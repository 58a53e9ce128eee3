//! Issue 12: "30 ms each way gives a round trip of 60 ms (probe echo), each
//! one-way delay measured separately". A two-way profile delays what the
//! client sends and what it receives by 30 ms each (one instance at tc
//! egress, one at tc ingress through its ifb); the probe's echo mode sends
//! from the client to an echo server on the server and splits each round
//! trip into its two one-way delays (the lab's namespaces share one clock).
//!
//! Needs sch_fq and delay on received traffic (Linux 6.4+): the VM tier runs
//! it with `controller fq::`; elsewhere it prints a NOTE.
use std::net::{IpAddr, UdpSocket};

use impair::{engine::ifb, netns};
use impair_tests::{
    kernel::fq_or_note,
    note,
    ns::{lab, Controller, Site},
    Scratch,
};
use impair_tools::{
    lab::SERVER_IF,
    probe::{run_echo, DelayStats, ProbeConfig},
};

/// Every sample at or above the configured delay (fq never sends early);
/// the least within 5 ms of it (the delay is the configured one, not more:
/// the quietest sample carries the least scheduling noise); the median
/// within `median_slack_ms` above it. The median's slack is the apparatus',
/// not the engine's: in the VM tier's emulated CPU the probe's threads wake
/// late (the first run measured one-way medians 36-39 ms and round-trip 85
/// ms, minima 30.2, 30.5 and 60.7 ms), and a round trip carries two wakeups.
fn assert_around_ms(what: &str, d: &DelayStats, ms: u64, median_slack_ms: u64) {
    let ns = ms * 1_000_000;
    assert!(d.min_ns >= ns, "{what}: early: {d:?}");
    assert!(
        d.min_ns < ns + 5_000_000,
        "{what}: least {:.1} ms, configured {ms} ms: {d:?}",
        d.min_ns as f64 / 1e6
    );
    assert!(
        d.p50_ns < ns + median_slack_ms * 1_000_000,
        "{what}: median {:.1} ms, configured {ms} ms: {d:?}",
        d.p50_ns as f64 / 1e6
    );
}

#[test]
fn thirty_ms_each_way_is_a_sixty_ms_round_trip_and_each_way_measures_thirty() {
    let test = "echo_fq::thirty_ms_each_way_is_a_sixty_ms_round_trip_and_each_way_measures_thirty";
    let lab = lab("echofq");
    if !fq_or_note(&lab, test, "skipped (the VM tier runs it)") {
        return;
    }
    let site = Site::ServerIngress;
    let before = site.state(&lab);
    let dir = Scratch::new("echo-fq");
    let profile = dir.file(
        "both30.toml",
        "summary = \"30 ms each way\"\n[[rule]]\ndirection = \"both\"\ndelay = \"30ms\"\n",
    );
    // Asked of the kernel's release, not by a trial attach: each attach
    // loads the programs, seconds of the VM tier's emulated CPU.
    let release = ifb::kernel_release();
    if !ifb::redirects_to_ifb(&release) {
        note(format!(
            "{test}: this kernel ({release}) cannot hold received traffic (ifb redirect needs 6.4+): skipped"
        ));
        return;
    }
    let ctl = Controller::start_in(&lab.server, SERVER_IF, &["--profile", &profile]);
    let (client_ip, server_ip) = (lab.client_v4(), lab.server_v4());
    let server = netns::run_in(&lab.server, move || {
        UdpSocket::bind((IpAddr::from(server_ip), 0))
    })
    .unwrap()
    .unwrap();
    let client = netns::run_in(&lab.client, move || {
        UdpSocket::bind((IpAddr::from(client_ip), 0))
    })
    .unwrap()
    .unwrap();
    let addr = server.local_addr().unwrap();
    // 300 round trips over 1.5 s: far below any queue, so only delay shows.
    let cfg = ProbeConfig {
        count: 300,
        rate_pps: 200,
        payload_len: 200,
        linger: std::time::Duration::from_millis(500),
        ..Default::default()
    };
    let r = run_echo(client, server, addr, &cfg).unwrap();
    eprintln!("{test}: {r:?}");
    assert_eq!((r.sent, r.returned, r.lost), (300, 300, 0), "{r:?}");
    assert_around_ms(
        "forward (client → server)",
        r.forward.as_ref().unwrap(),
        30,
        15,
    );
    assert_around_ms(
        "reverse (server → client)",
        r.reverse.as_ref().unwrap(),
        30,
        15,
    );
    assert_around_ms("round trip", r.round_trip.as_ref().unwrap(), 60, 30);
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    site.assert_restored(&lab, &before);
}
