//! Two-way profiles with delay (the VM tier: `controller fq::` selects these
//! too, as `two_way_fq::`). On a client host, `--profile lte` delays what it
//! receives by the downlink's 50 ms and what it sends by the uplink's 65 ms;
//! `--flip` swaps them. Each one-way delay is measured at its receiver with
//! the probe (the lab's namespaces share one clock).
//!
//! This needs sch_fq (egress) and delay on received traffic (issue 12's ifb
//! ingress). Where either is missing the test checks the refusal instead (one
//! line, exit code 2, nothing changed) and prints a NOTE saying what it
//! skipped.
use impair::netns;
use impair_tests::{
    kernel::fq_or_note,
    note,
    ns::{assert_refused, impair_in, lab, Controller, Site},
};
use impair_tools::{
    lab::{Lab, SERVER_IF},
    probe::{run_pair, ProbeConfig, ProbeReport},
};

/// Probe datagrams from namespace `from` to `to` (IPv4): a few hundred at a
/// rate far below either side's rate limit, so only the delay shows.
fn one_way(lab: &Lab, uplink: bool) -> ProbeReport {
    let (from, to, src, dst) = if uplink {
        (&lab.server, &lab.client, lab.server_v4(), lab.client_v4())
    } else {
        (&lab.client, &lab.server, lab.client_v4(), lab.server_v4())
    };
    let rx = netns::run_in(to, move || {
        std::net::UdpSocket::bind((std::net::IpAddr::from(dst), 0))
    })
    .unwrap()
    .unwrap();
    let tx = netns::run_in(from, move || {
        std::net::UdpSocket::bind((std::net::IpAddr::from(src), 0))
    })
    .unwrap()
    .unwrap();
    let addr = rx.local_addr().unwrap();
    let cfg = ProbeConfig {
        count: 400,
        rate_pps: 200,
        payload_len: 200,
        ..Default::default()
    };
    run_pair(tx, rx, addr, &cfg).unwrap()
}

/// The median one-way delay is the configured one, plus at most 15 ms of
/// scheduling; none arrives early.
fn assert_delay_ms(what: &str, r: &ProbeReport, ms: u64) {
    let d = r
        .delay
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: nothing arrived: {r:?}"));
    assert_eq!(r.lost, 0, "{what}: {r:?}");
    assert!(d.min_ns >= ms * 1_000_000, "{what}: early: {d:?}");
    assert!(
        d.p50_ns < (ms + 15) * 1_000_000,
        "{what}: median {} ms, configured {ms} ms",
        d.p50_ns / 1_000_000
    );
}

#[test]
fn lte_delays_downloads_50ms_and_uploads_65ms_and_flip_swaps_them() {
    let test = "two_way_fq::lte_delays_downloads_50ms_and_uploads_65ms_and_flip_swaps_them";
    let lab = lab("2wayfq");
    let site = Site::ServerIngress;
    let before = site.state(&lab);
    if !fq_or_note(
        &lab,
        test,
        "checking the refusal only; the VM tier runs the delays",
    ) {
        let out = impair_in(&lab.server, &["attach", SERVER_IF, "--profile", "lte"]);
        assert_refused("--profile lte without fq", &out, &[]);
        assert_eq!(site.state(&lab), before, "a refusal changes nothing");
        return;
    }
    for (flip, down_ms, up_ms) in [(false, 50, 65), (true, 65, 50)] {
        let mut args = vec!["attach", SERVER_IF, "--profile", "lte"];
        if flip {
            args.push("--flip");
        }
        // Received traffic is held through an ifb, which needs Linux 6.4+:
        // older kernels refuse the downlink in one line, changing nothing.
        let probe_attach = impair_in(&lab.server, &[&args[..], &["--duration", "1ms"]].concat());
        let err = String::from_utf8_lossy(&probe_attach.stderr).into_owned();
        if err.contains("needs Linux 6.4") {
            assert_refused("lte downlink", &probe_attach, &["6.4"]);
            assert_eq!(site.state(&lab), before, "a refusal changes nothing");
            note(format!(
                "{test}: this kernel cannot hold received traffic (ifb redirect needs 6.4+): checked the refusal only"
            ));
            return;
        }
        assert!(probe_attach.status.success(), "attach --profile lte: {err}");
        let ctl = Controller::start_in(&lab.server, SERVER_IF, &args[2..]);
        assert_delay_ms("downlink", &one_way(&lab, false), down_ms);
        assert_delay_ms("uplink", &one_way(&lab, true), up_ms);
        assert!(ctl.signal_and_wait(libc::SIGTERM).success());
        site.assert_restored(&lab, &before);
    }
}
