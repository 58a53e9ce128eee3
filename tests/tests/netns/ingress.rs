//! On the receive side of the server's `s0`, alike on every kernel: tcx and
//! XDP (native and generic) loss, rate policing measured at the receiver,
//! refusals of what cannot happen at ingress, an egress and an ingress
//! instance side by side or one instance for both directions, and someone
//! else's XDP program left alone.
use impair::model::{compile_all, RuleSpec};
use impair_tests::ns::{
    assert_refused, impair_in, lab, probe, stats_json_in, stdout_ok, Controller, Site,
};
use impair_tools::lab;

use super::{loss_end_to_end, tcx_or_refused};

const S0: &str = lab::SERVER_IF;
const SITE: Site = Site::ServerIngress;

#[test]
fn loss_10_percent_tc_ingress_tcx_measured_at_receiver() {
    let test = "ingress::loss_10_percent_tc_ingress_tcx_measured_at_receiver";
    if tcx_or_refused("itcxno", SITE, test) {
        loss_end_to_end(
            "itcx",
            SITE,
            &["--attach-mode", "tcx"],
            "tc-ingress",
            Some("tcx"),
        );
    }
}

/// veth has native XDP, so auto attaches in the driver.
#[test]
fn loss_10_percent_xdp_measured_at_receiver() {
    loss_end_to_end("ixdp", SITE, &["--hook", "xdp"], "xdp", None);
}

#[test]
fn loss_10_percent_xdp_generic_measured_at_receiver() {
    loss_end_to_end(
        "ixdpg",
        SITE,
        &["--hook", "xdp", "--xdp-mode", "generic"],
        "xdp",
        None,
    );
}

/// Rate policing at 2 Mbit/s with 4 Mbit/s offered. Frames are 1242 bytes
/// on the wire as the hook counts them (1200 payload + UDP 8 + IPv4 20 +
/// Ethernet 14), 4.97 ms each at 2 Mbit/s; the sender offers one every
/// 2.5 ms. The policer accepts a packet when the emulated link's backlog is
/// at most the 10 ms default burst minus its own serialization, so under
/// sustained overload the link never idles and the accepted bytes in a 2 s
/// window are rate × 2 s within ± (burst + one frame): (2500 + 1242) B
/// against 500 kB, 0.75% (and 0.25% for counting whole frames); judged
/// within 3%, which leaves room for the sender's small delays (a 25 ms one
/// idles the link for about 15 ms past the burst: 0.75% of a window). A stall of the sender idles the
/// emulated link and lowers the rate of its window (a CI run saw two
/// windows of the host lose 5.5% that way, steal time of the virtual
/// machine): receive times are the kernel's, and windows in which this
/// machine stalled (a real-time watcher woke over 50 ms late,
/// `flood::StallWatch`) are shown, not judged; at least two are judged.
fn policing_end_to_end(tag: &str, args: &[&str]) {
    use std::time::Duration;

    use impair_tests::flood;

    let lab = lab(tag);
    let before = SITE.state(&lab);
    let all = [&["--rate", "2mbit"][..], args].concat();
    let ctl = SITE.attach(&lab, &all);
    const PAYLOAD: usize = 1200;
    const WINDOW: Duration = Duration::from_secs(2);
    let rate_bps = 2e6;
    let flood::Flow {
        sent,
        end_ns: end,
        arrivals,
        stalls,
    } = flood::client_to_server(&lab, PAYLOAD, 2.0 * rate_bps, Duration::from_secs(10));
    assert!(arrivals.len() > 100, "{} arrived of {sent}", arrivals.len());
    let from = arrivals[0].0 + 500_000_000;
    let windows = flood::windows_bps(&arrivals, PAYLOAD, from, end, WINDOW);
    let line = flood::assert_windows(
        &format!("policing {args:?}"),
        &windows,
        &stalls,
        WINDOW,
        rate_bps,
        0.03,
        2,
    );
    impair_tests::note(format!(
        "policing {args:?}: {} of {sent} received; per 2 s (bit/s): {line}",
        arrivals.len()
    ));

    let stats = SITE.stats(&lab);
    let rule = &stats["rules"][0];
    let received = arrivals.len() as u64;
    assert_eq!(
        rule["dropped_queue"],
        sent - received,
        "engine drops == sent − received: {stats}"
    );
    assert_eq!(rule["passed"], received, "{stats}");
    assert_eq!(rule["delayed"], 0, "nothing is held at ingress");
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    SITE.assert_restored(&lab, &before);
}

#[test]
fn rate_policing_tc_ingress_2mbit() {
    policing_end_to_end("ipol", &["--police"]);
}

#[test]
fn rate_policing_xdp_2mbit() {
    policing_end_to_end("ipolx", &["--hook", "xdp"]);
}

/// Delay-type impairments at XDP or with `--direction both` (tc ingress
/// takes them through an ifb: `ifb.rs`), and hook combinations that make no
/// sense, are refused with one clear line, exit code 2, and change nothing.
#[test]
fn delay_at_ingress_is_refused_exit_2_and_changes_nothing() {
    let lab = lab("ibad");
    let before = SITE.state(&lab);
    let ingress = ["attach", S0, "--direction", "ingress"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> { [&ingress[..], extra].concat() };
    let cases: &[(Vec<&str>, &[&str])] = &[
        (
            with(&["--hook", "xdp", "--delay", "10ms"]),
            &["--delay", "ingress"],
        ),
        (with(&["--hook", "xdp", "--jitter", "1ms"]), &["--jitter"]),
        (
            with(&["--hook", "xdp", "--duplicate", "1%"]),
            &["--duplicate"],
        ),
        (
            with(&["--hook", "xdp", "--delay", "5ms", "--reorder", "10%"]),
            &["--delay"],
        ),
        (
            vec!["attach", S0, "--direction", "both", "--delay", "10ms"],
            &["--delay", "ingress"],
        ),
        (
            vec!["attach", S0, "--hook", "xdp", "--loss", "1%"],
            &["--hook xdp", "--direction"],
        ),
        (
            with(&["--xdp-mode", "native", "--loss", "1%"]),
            &["--xdp-mode", "--hook xdp"],
        ),
        (
            vec!["attach", S0, "--direction", "both", "--rate", "1mbit"],
            &["--rate", "both"],
        ),
        (
            vec!["attach", S0, "--police", "--rate", "1mbit"],
            &["--police", "--direction ingress"],
        ),
        (
            vec!["attach", S0, "--direction", "sideways", "--loss", "1%"],
            &["sideways"],
        ),
        (
            vec!["stats", S0, "--direction", "ingress"],
            &["not impaired at ingress"],
        ),
        (
            vec!["detach", S0, "--direction", "ingress"],
            &["not impaired at ingress"],
        ),
    ];
    for (args, needles) in cases {
        assert_refused(&format!("{args:?}"), &impair_in(&lab.server, args), needles);
    }
    assert_eq!(SITE.state(&lab), before, "bad input changes nothing");
}

/// An egress and an ingress instance may share an interface; a second one
/// in the same direction is refused naming the owner; stats and detach pick
/// an instance by direction.
#[test]
fn egress_and_ingress_coexist_and_a_second_ingress_is_refused() {
    let lab = lab("icoex");
    let before = SITE.state(&lab);
    let egress = Controller::start_in(&lab.server, S0, &["--loss", "1%"]);
    let ingress = SITE.attach(&lab, &["--blackhole", "--hook", "xdp"]);
    for args in [
        &["attach", S0, "--direction", "ingress", "--loss", "2%"][..],
        &["attach", S0, "--direction", "both", "--loss", "2%"][..],
        &["attach", S0, "--loss", "2%"][..],
    ] {
        let err = assert_refused(
            &format!("{args:?}"),
            &impair_in(&lab.server, args),
            &["already impaired"],
        );
        // `both` overlaps both instances; the refusal names one of them.
        let owners = match args.get(3) {
            Some(&"ingress") => vec![ingress.pid()],
            Some(&"both") => vec![ingress.pid(), egress.pid()],
            _ => vec![egress.pid()],
        };
        assert!(
            owners.iter().any(|o| err.contains(&format!("pid {o}"))),
            "{args:?}: names the owner: {err}"
        );
    }
    assert_eq!(
        probe(&lab, false, 0, 300, 200).received,
        0,
        "the XDP blackhole drops arriving traffic"
    );

    let out = impair_in(&lab.server, &["stats", S0]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "two instances: stats needs --direction"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--direction"));
    assert_eq!(
        stats_json_in(&lab.server, S0, &["--direction", "ingress"])["hook"],
        "xdp"
    );
    assert_eq!(
        stats_json_in(&lab.server, S0, &["--direction", "egress"])["hook"],
        "tc-egress"
    );
    let status = stdout_ok(&impair_in(&lab.server, &["status"]));
    assert!(
        status.contains("s0 xdp") && status.contains("s0 tc-egress"),
        "{status}"
    );

    stdout_ok(&impair_in(
        &lab.server,
        &["detach", S0, "--direction", "ingress"],
    ));
    assert!(
        ingress.wait().success(),
        "the ingress controller exits cleanly on detach"
    );
    assert_eq!(
        probe(&lab, false, 0, 300, 200).lost,
        0,
        "the blackhole is gone"
    );
    assert_eq!(
        SITE.stats(&lab)["hook"],
        "tc-egress",
        "the egress instance still runs"
    );
    stdout_ok(&impair_in(&lab.server, &["detach", S0]));
    assert!(egress.wait().success());
    SITE.assert_restored(&lab, &before);
}

/// One instance on both directions (tc ingress or XDP on the receive side):
/// one owner, hook `tc-egress+…`, arriving traffic impaired, listed once,
/// and everything removed on detach.
#[test]
fn both_directions_share_one_instance() {
    let lab = lab("iboth");
    let before = SITE.state(&lab);
    for (hook, name) in [("tc", "tc-egress+tc-ingress"), ("xdp", "tc-egress+xdp")] {
        let ctl = Controller::start_in(
            &lab.server,
            S0,
            &[
                "--direction",
                "both",
                "--hook",
                hook,
                "--blackhole",
                "--proto",
                "udp",
            ],
        );
        assert_eq!(
            probe(&lab, false, 0, 300, 200).received,
            0,
            "{hook}: arriving UDP is dropped"
        );
        let stats = SITE.stats(&lab);
        assert_eq!(stats["hook"], name, "{stats}");
        assert_eq!(stats["rules"][0]["dropped_loss"], 300, "{stats}");
        for direction in ["egress", "ingress"] {
            assert_eq!(
                stats_json_in(&lab.server, S0, &["--direction", direction])["owner"]["pid"],
                ctl.pid()
            );
        }
        let status =
            String::from_utf8_lossy(&impair_in(&lab.server, &["status"]).stdout).into_owned();
        assert_eq!(
            status.lines().count(),
            1,
            "one instance, listed once: {status}"
        );
        assert!(ctl.signal_and_wait(libc::SIGINT).success());
        SITE.assert_restored(&lab, &before);
    }
}

/// An XDP program that is not this impair's (here: impair's object loaded
/// and attached by the test itself, so no owner names it) is never replaced:
/// attach refuses with exit code 2 and changes nothing, also with
/// `--direction both`, whose tc egress link it undoes.
#[test]
fn someone_elses_xdp_program_is_not_replaced() {
    let lab = lab("ixbusy");
    let foreign = impair::netns::run_in(&lab.server, || {
        let rules = compile_all(&[RuleSpec::default()]).unwrap();
        let mut l = impair::engine::Loaded::new(&rules, 1).unwrap();
        l.xdp()
            .unwrap()
            .attach(S0, aya::programs::XdpMode::default())
            .unwrap();
        l
    })
    .unwrap();
    let before = SITE.state(&lab);
    assert!(before.contains("prog/xdp"));
    for direction in ["ingress", "both"] {
        let out = impair_in(
            &lab.server,
            &[
                "attach",
                S0,
                "--direction",
                direction,
                "--hook",
                "xdp",
                "--loss",
                "1%",
            ],
        );
        assert_refused(
            direction,
            &out,
            &["already has an XDP program", "nothing was changed"],
        );
        SITE.assert_restored(&lab, &before);
    }
    drop(foreign);
}
