//! Namespace tier for the receive-side hooks: the real `impair` binary
//! attached at the server's interface `s0` ingress (tc ingress or XDP) in a
//! client → router → server lab, traffic from the project's probe, and what
//! the receiver saw compared with the configuration and the engine's
//! counters. Every test checks that detaching leaves `s0` exactly as it was:
//! qdiscs, tc filters in both directions, and `ip -d link` (no XDP program).
//! Needs root and the real eBPF object.
use std::time::Duration;

use impair_tests::ns::{
    assert_iface_restored, assert_inside_99, iface_state, impair_in, lab, probe, probe_with_log,
    stats_json_in, Controller,
};
use impair_tools::{
    lab::{self, Lab},
    probe::ProbeConfig,
};

const S0: &str = lab::SERVER_IF;

/// Starts `impair attach s0 --direction ingress ARGS` in the server namespace.
fn attach_s0(lab: &Lab, args: &[&str]) -> Controller {
    let mut all = vec!["--direction", "ingress"];
    all.extend_from_slice(args);
    Controller::start_in(&lab.server, S0, &all)
}

fn stats_s0(lab: &Lab) -> serde_json::Value {
    stats_json_in(&lab.server, S0, &[])
}

/// 10% loss at s0's receive hook over 20,000 probe packets: inside the 99%
/// Wilson interval at the receiver, and the engine's drops are exactly the
/// packets that did not arrive.
fn loss_end_to_end(tag: &str, args: &[&str], hook: &str, mode: Option<&str>) {
    let lab = lab(tag);
    let before = iface_state(&lab, &lab.server, S0);
    let mut all = vec!["--loss", "10%", "--seed", "42"];
    all.extend_from_slice(args);
    let ctl = attach_s0(&lab, &all);
    assert!(ctl.first_line.contains(hook), "{}", ctl.first_line);
    if hook == "xdp" {
        let link = lab
            .exec(&lab.server, &["ip", "-d", "link", "show", "dev", S0])
            .unwrap();
        assert!(
            link.contains("prog/xdp"),
            "an XDP program is attached: {link}"
        );
        // veth has native XDP: auto attaches in the driver; generic on request.
        let generic = args.contains(&"generic");
        assert_eq!(link.contains(" xdpgeneric "), generic, "{link}");
        assert_eq!(link.contains(" xdp "), !generic, "{link}");
    }
    let report = probe(&lab, false, 0, 20_000, 200);
    assert_eq!(report.sent, 20_000);
    assert_eq!(report.corrupted + report.duplicated + report.reordered, 0);
    assert_inside_99(0.10, report.lost, report.sent);

    let stats = stats_s0(&lab);
    let rule = &stats["rules"][0];
    assert_eq!(stats["hook"], hook, "{stats}");
    if let Some(mode) = mode {
        assert_eq!(stats["owner"]["attach_mode"], mode, "{stats}");
    }
    assert_eq!(
        rule["packets"], report.sent,
        "the engine saw every probe packet: {stats}"
    );
    assert_eq!(
        rule["dropped_loss"],
        report.sent - report.received,
        "engine drops == sent − received: {stats}"
    );
    assert_eq!(rule["passed"], report.received, "{stats}");
    assert_eq!(stats["errors"], 0);
    let status = impair_in(&lab.server, &["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains(&format!("{S0} {hook}")),
        "status names the hook: {text}"
    );

    let status = ctl.signal_and_wait(libc::SIGTERM);
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
    assert_iface_restored(&lab, &lab.server, S0, &before);
    let link = lab
        .exec(&lab.server, &["ip", "-d", "link", "show", "dev", S0])
        .unwrap();
    assert!(
        !link.contains("prog/xdp") && !link.contains(" xdp"),
        "no XDP program remains: {link}"
    );
    assert_eq!(
        probe(&lab, false, 0, 2_000, 200).lost,
        0,
        "traffic is unimpaired after detach"
    );
}

/// tcx needs Linux 6.6; before it, `--attach-mode tcx` is refused with exit
/// code 2 and the netlink test covers tc ingress.
#[test]
fn loss_10_percent_tc_ingress_tcx_measured_at_receiver() {
    use aya::util::KernelVersion;
    if !KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0)) {
        impair_tests::note("this kernel has no tcx (Linux < 6.6): checking the refusal only");
        let lab = lab("itcxno");
        let before = iface_state(&lab, &lab.server, S0);
        let out = impair_in(
            &lab.server,
            &[
                "attach",
                S0,
                "--direction",
                "ingress",
                "--loss",
                "1%",
                "--attach-mode",
                "tcx",
            ],
        );
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(iface_state(&lab, &lab.server, S0), before);
        return;
    }
    loss_end_to_end("itcx", &["--attach-mode", "tcx"], "tc-ingress", Some("tcx"));
}

#[test]
fn loss_10_percent_tc_ingress_netlink_clsact_measured_at_receiver() {
    loss_end_to_end(
        "inl",
        &["--attach-mode", "netlink"],
        "tc-ingress",
        Some("netlink"),
    );
}

/// veth has native XDP, so auto attaches in the driver.
#[test]
fn loss_10_percent_xdp_measured_at_receiver() {
    loss_end_to_end("ixdp", &["--hook", "xdp"], "xdp", None);
}

#[test]
fn loss_10_percent_xdp_generic_measured_at_receiver() {
    loss_end_to_end(
        "ixdpg",
        &["--hook", "xdp", "--xdp-mode", "generic"],
        "xdp",
        None,
    );
}

/// Rate policing at 2 Mbit/s with 4 Mbit/s offered. Frames are 1242 bytes
/// on the wire as the hook counts them (1200 payload + UDP 8 + IPv4 20 +
/// Ethernet 14), 4.97 ms each at 2 Mbit/s; the probe offers one every 2.5 ms.
/// The policer accepts a packet when the emulated link's backlog is at most
/// the 10 ms default burst minus its own serialization, so under sustained
/// overload the link never idles and the accepted bytes over a span T are
/// rate × T within ± (burst + one frame): (2500 + 1242) B against 750 kB in
/// 3 s, 0.5%. The 3% tolerance leaves the rest for the sender: a scheduling
/// stall of the probe idles the emulated link and lowers the measured rate.
fn policing_end_to_end(tag: &str, args: &[&str]) {
    let lab = lab(tag);
    let before = iface_state(&lab, &lab.server, S0);
    let mut all = vec!["--rate", "2mbit"];
    all.extend_from_slice(args);
    let ctl = attach_s0(&lab, &all);
    let payload = 1200usize;
    let frame_bytes = (payload + 8 + 20 + 14) as f64;
    let rate_bps = 2e6;
    let cfg = ProbeConfig {
        count: 1200,
        rate_pps: 400,
        payload_len: payload,
        ..Default::default()
    };
    let (report, log) = probe_with_log(&lab, &cfg);
    assert_eq!(report.sent, 1200);
    let arrivals: Vec<u64> = log.receptions.iter().map(|r| r.recv_ns).collect();
    assert!(arrivals.len() > 100, "{report:?}");
    let span_s = (arrivals[arrivals.len() - 1] - arrivals[0]) as f64 / 1e9;
    let measured_bps = (arrivals.len() - 1) as f64 * frame_bytes * 8.0 / span_s;
    eprintln!(
        "policing {args:?}: received {measured_bps:.0} bit/s over {span_s:.3} s ({} of {})",
        report.received, report.sent
    );
    assert!(
        (measured_bps - rate_bps).abs() / rate_bps < 0.03,
        "received {measured_bps:.0} bit/s over {span_s:.3} s vs configured {rate_bps} (±3%): {report:?}"
    );
    assert_eq!(report.corrupted + report.duplicated, 0);

    let stats = stats_s0(&lab);
    let rule = &stats["rules"][0];
    assert_eq!(
        rule["dropped_queue"],
        report.sent - report.received,
        "engine drops == sent − received: {stats}"
    );
    assert_eq!(rule["passed"], report.received, "{stats}");
    assert_eq!(rule["delayed"], 0, "nothing is held at ingress");
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    assert_iface_restored(&lab, &lab.server, S0, &before);
}

#[test]
fn rate_policing_tc_ingress_2mbit() {
    policing_end_to_end("ipol", &[]);
}

#[test]
fn rate_policing_xdp_2mbit() {
    policing_end_to_end("ipolx", &["--hook", "xdp"]);
}

/// Delay-type impairments at ingress, and hook combinations that make no
/// sense, are refused with one clear line, exit code 2, and change nothing
/// (checked on s0 and on the router's r1, where `impair` runs as well).
#[test]
fn delay_at_ingress_is_refused_exit_2_and_changes_nothing() {
    let lab = lab("ibad");
    let before = iface_state(&lab, &lab.server, S0);
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["attach", S0, "--direction", "ingress", "--delay", "10ms"],
            &["--delay", "ingress", "qdisc", "ifb"],
        ),
        (
            &[
                "attach",
                S0,
                "--direction",
                "ingress",
                "--hook",
                "xdp",
                "--delay",
                "10ms",
            ],
            &["--delay", "ingress"],
        ),
        (
            &["attach", S0, "--direction", "both", "--delay", "10ms"],
            &["--delay", "ingress"],
        ),
        (
            &["attach", S0, "--direction", "ingress", "--jitter", "1ms"],
            &["--jitter"],
        ),
        (
            &["attach", S0, "--direction", "ingress", "--duplicate", "1%"],
            &["--duplicate"],
        ),
        (
            &[
                "attach",
                S0,
                "--direction",
                "ingress",
                "--delay",
                "5ms",
                "--reorder",
                "10%",
            ],
            &["--delay"],
        ),
        (
            &["attach", S0, "--hook", "xdp", "--loss", "1%"],
            &["--hook xdp", "--direction"],
        ),
        (
            &[
                "attach",
                S0,
                "--direction",
                "ingress",
                "--xdp-mode",
                "native",
                "--loss",
                "1%",
            ],
            &["--xdp-mode", "--hook xdp"],
        ),
        (
            &["attach", S0, "--direction", "both", "--rate", "1mbit"],
            &["--rate", "both"],
        ),
        (
            &["attach", S0, "--direction", "sideways", "--loss", "1%"],
            &["sideways"],
        ),
        (
            &["stats", S0, "--direction", "ingress"],
            &["not impaired at ingress"],
        ),
        (
            &["detach", S0, "--direction", "ingress"],
            &["not impaired at ingress"],
        ),
    ];
    for (args, needles) in cases {
        let out = impair_in(&lab.server, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        for needle in *needles {
            assert!(
                err.contains(needle),
                "{args:?}: the error must name '{needle}': {err}"
            );
        }
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    assert_eq!(
        iface_state(&lab, &lab.server, S0),
        before,
        "bad input changes nothing"
    );
}

/// An egress and an ingress instance may share an interface; a second one
/// in the same direction is refused naming the owner; stats and detach pick
/// an instance by direction.
#[test]
fn egress_and_ingress_coexist_and_a_second_ingress_is_refused() {
    let lab = lab("icoex");
    let before = iface_state(&lab, &lab.server, S0);
    let egress = Controller::start_in(&lab.server, S0, &["--loss", "1%"]);
    let ingress = attach_s0(&lab, &["--blackhole", "--hook", "xdp"]);
    for args in [
        &["attach", S0, "--direction", "ingress", "--loss", "2%"][..],
        &["attach", S0, "--direction", "both", "--loss", "2%"][..],
        &["attach", S0, "--loss", "2%"][..],
    ] {
        let out = impair_in(&lab.server, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("already impaired"), "{args:?}: {err}");
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
    let status = String::from_utf8_lossy(&impair_in(&lab.server, &["status"]).stdout).into_owned();
    assert!(
        status.contains("s0 xdp") && status.contains("s0 tc-egress"),
        "{status}"
    );

    let out = impair_in(&lab.server, &["detach", S0, "--direction", "ingress"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ingress = ingress;
    assert!(
        ingress.child.wait().unwrap().success(),
        "the ingress controller exits cleanly on detach"
    );
    std::mem::forget(ingress);
    assert_eq!(
        probe(&lab, false, 0, 300, 200).lost,
        0,
        "the blackhole is gone"
    );
    assert_eq!(
        stats_json_in(&lab.server, S0, &[])["hook"],
        "tc-egress",
        "the egress instance still runs"
    );
    let out = impair_in(&lab.server, &["detach", S0]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut egress = egress;
    assert!(egress.child.wait().unwrap().success());
    std::mem::forget(egress);
    assert_iface_restored(&lab, &lab.server, S0, &before);
}

/// One instance on both directions (tc ingress or XDP on the receive side):
/// one owner, hook `tc-egress+…`, arriving traffic impaired, listed once,
/// and everything removed on detach.
#[test]
fn both_directions_share_one_instance() {
    let lab = lab("iboth");
    let before = iface_state(&lab, &lab.server, S0);
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
        let stats = stats_s0(&lab);
        assert_eq!(stats["hook"], name, "{stats}");
        assert_eq!(stats["rules"][0]["dropped_loss"], 300, "{stats}");
        assert_eq!(
            stats_json_in(&lab.server, S0, &["--direction", "egress"])["owner"]["pid"],
            ctl.pid()
        );
        assert_eq!(
            stats_json_in(&lab.server, S0, &["--direction", "ingress"])["owner"]["pid"],
            ctl.pid()
        );
        let status =
            String::from_utf8_lossy(&impair_in(&lab.server, &["status"]).stdout).into_owned();
        assert_eq!(
            status.lines().count(),
            1,
            "one instance, listed once: {status}"
        );
        assert!(ctl.signal_and_wait(libc::SIGINT).success());
        assert_iface_restored(&lab, &lab.server, S0, &before);
    }
}

/// A SIGKILLed controller with a netlink ingress filter: the filter stays
/// but the lease runs out within 2 s and traffic passes; status names the
/// leftover and detach removes it (and the clsact qdisc impair created).
#[test]
fn sigkill_netlink_ingress_leaves_traffic_unimpaired_within_the_lease() {
    let lab = lab("iknl");
    let before = iface_state(&lab, &lab.server, S0);
    let ctl = attach_s0(&lab, &["--blackhole", "--attach-mode", "netlink"]);
    assert!(iface_state(&lab, &lab.server, S0).contains("clsact"));
    assert_eq!(
        probe(&lab, false, 0, 300, 200).received,
        0,
        "blackholed while the controller runs"
    );
    assert!(!ctl.signal_and_wait(libc::SIGKILL).success());
    std::thread::sleep(impair::engine::LEASE + Duration::from_millis(500));
    assert_eq!(
        probe(&lab, false, 0, 2_000, 200).lost,
        0,
        "a killed controller must not leave traffic impaired"
    );
    let text = String::from_utf8_lossy(&impair_in(&lab.server, &["status"]).stdout).into_owned();
    assert!(
        text.contains("tc-ingress") && text.contains("dead"),
        "status names the leftover: {text}"
    );
    let out = impair_in(&lab.server, &["detach", S0]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_iface_restored(&lab, &lab.server, S0, &before);
}

/// A leftover in the other direction does not block an attach, and a dead
/// leftover in the same direction is replaced (the next attach removes it).
#[test]
fn next_ingress_attach_removes_a_dead_netlink_leftover() {
    let lab = lab("ileft");
    let before = iface_state(&lab, &lab.server, S0);
    let ctl = attach_s0(&lab, &["--blackhole", "--attach-mode", "netlink"]);
    assert!(!ctl.signal_and_wait(libc::SIGKILL).success());
    let ctl = attach_s0(&lab, &["--loss", "100%", "--attach-mode", "netlink"]);
    assert_eq!(probe(&lab, false, 0, 200, 200).received, 0);
    let filters = lab
        .exec(&lab.server, &["tc", "filter", "show", "dev", S0, "ingress"])
        .unwrap();
    assert_eq!(
        filters.matches("name impair_ingress").count(),
        1,
        "the leftover filter was replaced: {filters}"
    );
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    assert_iface_restored(&lab, &lab.server, S0, &before);
}

/// netlink egress and ingress instances share one clsact qdisc: whichever
/// detaches last removes it (the first hands the duty over), so the
/// interface ends exactly as it was in either order.
#[test]
fn netlink_egress_and_ingress_share_clsact_and_the_last_one_removes_it() {
    let lab = lab("ishare");
    let before = iface_state(&lab, &lab.server, S0);
    for first in ["egress", "ingress"] {
        let egress = Controller::start_in(
            &lab.server,
            S0,
            &["--loss", "1%", "--attach-mode", "netlink"],
        );
        let ingress = attach_s0(&lab, &["--loss", "1%", "--attach-mode", "netlink"]);
        let (a, b) = if first == "egress" {
            (egress, ingress)
        } else {
            (ingress, egress)
        };
        assert!(a.signal_and_wait(libc::SIGTERM).success());
        assert!(
            iface_state(&lab, &lab.server, S0).contains("clsact"),
            "still used by the other instance"
        );
        assert!(b.signal_and_wait(libc::SIGTERM).success());
        assert_iface_restored(&lab, &lab.server, S0, &before);
    }
}

/// A clsact qdisc that was there before is used and left in place.
#[test]
fn netlink_ingress_detach_keeps_a_clsact_qdisc_it_did_not_create() {
    let lab = lab("ikeepq");
    lab.exec(&lab.server, &["tc", "qdisc", "add", "dev", S0, "clsact"])
        .unwrap();
    let before = iface_state(&lab, &lab.server, S0);
    let ctl = attach_s0(&lab, &["--loss", "50%", "--attach-mode", "netlink"]);
    assert!(ctl.signal_and_wait(libc::SIGINT).success());
    assert_iface_restored(&lab, &lab.server, S0, &before);
    assert!(before.contains("clsact"));
}

/// An XDP program that is not this impair's (here: impair's object loaded
/// and attached by the test itself, so no owner names it) is never replaced:
/// attach refuses with exit code 2 and changes nothing, also with
/// `--direction both`, whose tc egress link it undoes.
#[test]
fn someone_elses_xdp_program_is_not_replaced() {
    let lab = lab("ixbusy");
    let foreign = impair::netns::run_in(&lab.server, || {
        let rules = impair::model::compile_all(&[impair::model::RuleSpec::default()]).unwrap();
        let mut l = impair::engine::Loaded::new(&rules, 1).unwrap();
        l.xdp()
            .unwrap()
            .attach(S0, aya::programs::XdpMode::default())
            .unwrap();
        l
    })
    .unwrap();
    let before = iface_state(&lab, &lab.server, S0);
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
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{direction}: {err}");
        assert!(
            err.contains("already has an XDP program") && err.contains("nothing was changed"),
            "{err}"
        );
        assert_iface_restored(&lab, &lab.server, S0, &before);
    }
    drop(foreign);
}
