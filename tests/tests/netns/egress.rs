//! At the router's `r1` egress, alike on every kernel: tcx loss and SIGKILL,
//! one owner per interface, bad input, IPv6 prefix and port matching, the
//! MTU blackhole, duplicates, detectable vs silent corruption, ECN marks and
//! Gilbert-Elliott bursts — each as the receiver sees it.
use std::os::fd::AsRawFd as _;

use impair_tests::{
    ns::{
        assert_refused, impair_in, lab, probe, router_state, socket_pair, stats_json, stdout_ok,
        Controller, Site,
    },
    stats::{assert_inside_suite, Z_SUITE},
};
use impair_tools::{
    lab::Lab,
    probe::{run_pair_with_log, ProbeConfig, ProbeReport, Verdict},
};

use super::{loss_end_to_end, sigkill_leaves_traffic_unimpaired, tcx_or_refused};

#[test]
fn loss_10_percent_tcx_measured_at_receiver() {
    let test = "egress::loss_10_percent_tcx_measured_at_receiver";
    if tcx_or_refused("tcxno", Site::RouterEgress, test) {
        loss_end_to_end(
            "tcx",
            Site::RouterEgress,
            &["--attach-mode", "tcx"],
            "tc-egress",
            Some("tcx"),
        );
    }
}

#[test]
fn sigkill_tcx_leaves_traffic_unimpaired() {
    let test = "egress::sigkill_tcx_leaves_traffic_unimpaired";
    if tcx_or_refused("ktcxno", Site::RouterEgress, test) {
        sigkill_leaves_traffic_unimpaired("ktcx", Site::RouterEgress, "tcx");
    }
}

#[test]
fn second_attach_is_refused_naming_the_owner_and_detach_stops_it() {
    let lab = lab("twice");
    let before = router_state(&lab);
    let ctl = Controller::start(&lab, &["--loss", "1%"]);
    let out = impair_in(&lab.router, &["attach", "r1", "--loss", "2%"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("pid {}", ctl.pid())), "{err}");
    stdout_ok(&impair_in(&lab.router, &["detach", "r1"]));
    assert!(
        ctl.wait().success(),
        "the controller exits cleanly on detach"
    );
    Site::RouterEgress.assert_restored(&lab, &before);
}

#[test]
fn bad_input_is_one_clear_line_exit_2_and_changes_nothing() {
    let lab = lab("bad");
    let before = router_state(&lab);
    let cases: &[(&[&str], &str)] = &[
        (&["attach", "r1", "--loss", "150%"], "150%"),
        (&["attach", "r1", "--loss", "-1%"], "-1%"),
        (&["attach", "r1", "--loss", "lots"], "lots"),
        (
            &["attach", "r1", "--loss", "1%", "--dst", "198.18.0.0/40"],
            "198.18.0.0/40",
        ),
        (&["attach", "r1", "--loss", "1%", "--dport", "10-5"], "10-5"),
        (&["attach", "r1", "--loss", "1%", "--proto", "quic"], "quic"),
        (&["attach", "nosuch0", "--loss", "1%"], "nosuch0"),
        (&["attach", "r1", "--mtu", "20"], "20"),
        (&["attach", "r1", "--profile", "nope"], "nope"),
        (&["attach", "r1", "--ecn"], "--ecn"),
        (&["attach", "r1", "--loss-model", "ge:1%,200%"], "200%"),
        (&["attach", "r1"], "nothing to do"),
        (&["stats", "r1"], "not impaired"),
    ];
    for (args, needle) in cases {
        assert_refused(
            &format!("{args:?}"),
            &impair_in(&lab.router, args),
            &[needle],
        );
    }
    assert_eq!(router_state(&lab), before, "bad input changes nothing");
}

#[test]
fn rules_match_ipv6_prefixes_and_ports_at_the_receiver() {
    let lab = lab("match");
    let ctl = Controller::start(
        &lab,
        &[
            "--blackhole",
            "--dst",
            "2001:2:0:2::/64",
            "--proto",
            "udp",
            "--dport",
            "40000-40010",
        ],
    );
    assert_eq!(
        probe(&lab, true, 40_005, 300, 200).received,
        0,
        "matching IPv6 UDP port: blackholed"
    );
    assert_eq!(
        probe(&lab, true, 40_011, 300, 200).lost,
        0,
        "port outside the range passes"
    );
    assert_eq!(
        probe(&lab, false, 40_005, 300, 200).lost,
        0,
        "IPv4 never matches an IPv6 prefix"
    );
    let stats = stats_json(&lab);
    assert_eq!(stats["rules"][0]["dropped_loss"], 300);
    assert_eq!(stats["unmatched"], 600);
    drop(ctl);
}

#[test]
fn mtu_blackhole_drops_only_large_packets() {
    let lab = lab("mtu");
    let _ctl = Controller::start(&lab, &["--mtu", "1280"]);
    // IP length = 20 + 8 + payload.
    assert_eq!(probe(&lab, false, 0, 300, 1252).lost, 0);
    assert_eq!(probe(&lab, false, 0, 300, 1253).received, 0);
    assert_eq!(stats_json(&lab)["rules"][0]["dropped_mtu"], 300);
}

#[test]
fn duplicates_arrive_once_each_and_match_the_counter() {
    let lab = lab("dup");
    let _ctl = Controller::start(&lab, &["--duplicate", "10%", "--seed", "3"]);
    let report = probe(&lab, false, 0, 5_000, 200);
    let stats = stats_json(&lab);
    assert_eq!(report.lost, 0);
    assert_eq!(
        stats["rules"][0]["duplicated"], report.duplicated,
        "{stats}"
    );
    assert_inside_suite(0.10, report.duplicated, report.sent);
}

/// Corruption as the receiver sees it. With the sender's checksum computed in
/// software (tx checksum offload off on the client), a detectable corruption
/// fails the server's UDP checksum and never reaches the socket; a silent one
/// arrives with a valid checksum and a damaged payload the probe detects.
#[test]
fn corruption_detectable_is_dropped_by_the_receiver_and_silent_reaches_it() {
    let lab = lab("corrupt");
    lab.exec(&lab.client, &["ethtool", "-K", "c0", "tx", "off"])
        .unwrap();
    {
        let _ctl = Controller::start(&lab, &["--corrupt", "5%", "--seed", "9"]);
        let r = probe(&lab, false, 0, 4_000, 200);
        let corrupted = stats_json(&lab)["rules"][0]["corrupted"].as_u64().unwrap();
        assert!(corrupted > 0);
        assert_eq!(r.corrupted, 0, "no damaged payload reaches the application");
        assert_eq!(
            r.lost, corrupted,
            "the receiver's checksum dropped exactly the corrupted packets"
        );
    }
    {
        let _ctl = Controller::start(
            &lab,
            &["--corrupt", "5%", "--corrupt-mode", "silent", "--seed", "9"],
        );
        let r = probe(&lab, false, 0, 4_000, 200);
        let corrupted = stats_json(&lab)["rules"][0]["corrupted"].as_u64().unwrap();
        assert!(corrupted > 0);
        assert_eq!(
            r.corrupted, corrupted,
            "every silent corruption reaches the application: {r:?}"
        );
    }
}

/// Sends `count` probe datagrams with the given IPv4 TOS byte (ECN bits in
/// the low two) and returns the report and the intact sequence numbers seen.
fn probe_tos(lab: &Lab, tos: u8, count: u64) -> (ProbeReport, Vec<u64>) {
    let (tx, rx, to) = socket_pair(lab, false, 0);
    let v = libc::c_int::from(tos);
    // SAFETY: setsockopt on an open socket with a valid int option value.
    let rc = unsafe {
        libc::setsockopt(
            tx.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_TOS,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    // A receive buffer that holds the whole burst (16 MiB; root may force
    // it): under a loaded CI machine the receiver can be descheduled long
    // enough for the default buffer to overflow, and those lab losses
    // would be taken for impair's (lengthening the burst runs).
    let rcvbuf: libc::c_int = 16 << 20;
    // SAFETY: setsockopt on an open socket with a valid int option value.
    let rc = unsafe {
        libc::setsockopt(
            rx.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &rcvbuf as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE");
    let cfg = ProbeConfig {
        count,
        rate_pps: 20_000,
        ..Default::default()
    };
    let (report, log) = run_pair_with_log(tx, rx, to, &cfg).unwrap();
    let seqs = log
        .receptions
        .iter()
        .filter_map(|r| match r.verdict {
            Verdict::Valid { seq, .. } => Some(seq),
            _ => None,
        })
        .collect();
    (report, seqs)
}

/// With --ecn, ECN-capable packets the loss process picks are delivered
/// (CE-marked; the mark itself is checked byte for byte in the BPF tier) and
/// counted as marks, while packets that are not ECN-capable are dropped.
#[test]
fn ecn_marks_capable_traffic_instead_of_dropping_it() {
    let lab = lab("ecn");
    let _ctl = Controller::start(&lab, &["--loss", "100%", "--ecn"]);
    let (ect, _) = probe_tos(&lab, 0b10, 1_000);
    assert_eq!(ect.lost, 0, "ECT(0) packets are marked, not dropped");
    let (not_ect, _) = probe_tos(&lab, 0, 1_000);
    assert_eq!(not_ect.received, 0, "Not-ECT packets are dropped");
    let stats = stats_json(&lab);
    assert_eq!(stats["rules"][0]["ecn_marked"], 1_000);
    assert_eq!(stats["rules"][0]["dropped_loss"], 1_000);
}

/// Gilbert-Elliott bursts as the receiver sees them: loss runs are geometric
/// with mean 1/r. The bound is the 99% normal interval of the mean of the
/// observed runs (geometric sd = sqrt(1-r)/r), and the engine's drop count
/// equals the receiver's losses exactly.
#[test]
fn gilbert_elliott_bursts_at_the_receiver() {
    let lab = lab("ge");
    let _ctl = Controller::start(&lab, &["--loss-model", "ge:5%,30%", "--seed", "21"]);
    let (report, seqs) = probe_tos(&lab, 0, 20_000);
    let mut got = vec![false; report.sent as usize];
    for s in seqs {
        got[s as usize] = true;
    }
    let mut runs = Vec::new();
    let mut cur = 0u64;
    for &g in &got {
        if g {
            if cur > 0 {
                runs.push(cur);
            }
            cur = 0;
        } else {
            cur += 1;
        }
    }
    // Every loss the receiver saw is one the engine counted (no lab loss
    // lengthens a run), before the runs are judged.
    assert_eq!(stats_json(&lab)["rules"][0]["dropped_loss"], report.lost);
    let n = runs.len() as f64;
    let mean = runs.iter().sum::<u64>() as f64 / n;
    let r = 0.30f64;
    let half = Z_SUITE * ((1.0 - r).sqrt() / r) / n.sqrt();
    assert!(
        (mean - 1.0 / r).abs() < half,
        "mean loss run {mean} vs 1/r = {} ± {half} over {n} runs",
        1.0 / r
    );
}
