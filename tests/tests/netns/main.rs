//! Namespace tier: the real `impair` binary attached in a client → router →
//! server lab — at the router's `r1` egress, or on the receive side of the
//! server's `s0` (tc ingress or XDP) — traffic from the project's probe, and
//! what the receiver saw compared with the configuration and the engine's
//! counters. Every test checks that detaching leaves the interface exactly as
//! it was: qdiscs, tc filters in both directions, `ip -d link` (no XDP
//! program) and `impair status`. Needs root and the real eBPF object.
//!
//! Modules: `egress` and `ingress` hold what every kernel does alike; what
//! differs by kernel is in `clsact` (the netlink clsact attach path and its
//! lifecycle — lease, SIGKILL, leftovers, a shared or foreign clsact — which
//! kernels before 6.6 use for everything) and `fq` (what needs sch_fq). The
//! VM tier runs `netns clsact::` and `netns fq::` (`cargo xtask vm`).
use std::time::Duration;

use impair_tests::{
    kernel::tcx_or_note,
    ns::{assert_refused, lab, probe, Site},
    stats::assert_inside_suite,
};

mod clsact;
mod egress;
mod fq;
mod gso;
mod ifb;
mod ingress;
mod journal;
mod matrix;
mod series;
mod tcp;

/// 10% loss at `site` over 20,000 probe packets: inside the 99% Wilson
/// interval at the receiver, the engine's drops exactly the packets that did
/// not arrive, `hook` named by attach, stats and status; with `mode`, the
/// attach mode stats reports. SIGTERM then restores the interface and
/// traffic passes unimpaired.
fn loss_end_to_end(tag: &str, site: Site, args: &[&str], hook: &str, mode: Option<&str>) {
    let lab = lab(tag);
    let (ns, iface) = (site.ns(&lab).to_owned(), site.iface());
    let before = site.state(&lab);
    let all = [&["--loss", "10%", "--seed", "42"][..], args].concat();
    let ctl = site.attach(&lab, &all);
    assert!(ctl.first_line.contains(hook), "{}", ctl.first_line);
    let link = || {
        lab.exec(&ns, &["ip", "-d", "link", "show", "dev", iface])
            .unwrap()
    };
    if hook == "xdp" {
        let link = link();
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
    assert_inside_suite(0.10, report.lost, report.sent);

    let stats = site.stats(&lab);
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
    let status = site.impair(&lab, &["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains(&format!("{iface} {hook}")),
        "status names the hook: {text}"
    );

    let status = ctl.signal_and_wait(libc::SIGTERM);
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
    site.assert_restored(&lab, &before);
    let link = link();
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

/// A blackhole at `site` (tc, `--attach-mode mode`) whose controller is
/// SIGKILLed: traffic passes again at once (tcx: the link dies with the
/// process) or once the lease runs out (netlink: the filter outlives it,
/// `status` names the dead leftover, and `detach` removes it and the clsact
/// qdisc impair created).
fn sigkill_leaves_traffic_unimpaired(tag: &str, site: Site, mode: &str) {
    let lab = lab(tag);
    let before = site.state(&lab);
    let ctl = site.attach(&lab, &["--blackhole", "--attach-mode", mode]);
    let netlink = mode == "netlink";
    if netlink {
        assert!(site.state(&lab).contains("clsact"));
    }
    assert_eq!(
        probe(&lab, false, 0, 500, 200).received,
        0,
        "blackholed while the controller runs"
    );
    let status = ctl.signal_and_wait(libc::SIGKILL);
    assert!(!status.success());
    if netlink {
        // The filter outlives the process; the lease runs out within 2 s.
        std::thread::sleep(impair::engine::LEASE + Duration::from_millis(500));
    }
    let after = probe(&lab, false, 0, 2_000, 200);
    assert_eq!(
        after.lost, 0,
        "a killed controller must not leave traffic impaired"
    );
    if netlink {
        let status = site.impair(&lab, &["status"]);
        let text = String::from_utf8_lossy(&status.stdout);
        let hook = match site {
            Site::RouterEgress => "tc-egress",
            Site::ServerIngress => "tc-ingress",
        };
        assert!(
            text.contains(hook) && text.contains("dead"),
            "status names the leftover: {text}"
        );
        let out = site.impair(&lab, &["detach", site.iface()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    site.assert_restored(&lab, &before);
}

/// Whether the kernel has tcx; where it has not (Linux < 6.6), checks that
/// `--attach-mode tcx` at `site` is refused with exit code 2 and changes
/// nothing, and says so in a NOTE naming `test`.
fn tcx_or_refused(tag: &str, site: Site, test: &str) -> bool {
    if tcx_or_note(
        test,
        "checking that --attach-mode tcx is refused and changes nothing; the netlink (clsact) \
         tests cover this kernel",
    ) {
        return true;
    }
    let lab = lab(tag);
    let before = site.state(&lab);
    let args = [
        &["attach", site.iface()][..],
        site.direction_args(),
        &["--loss", "1%", "--attach-mode", "tcx"],
    ]
    .concat();
    assert_refused(&format!("{args:?}"), &site.impair(&lab, &args), &[]);
    assert_eq!(site.state(&lab), before);
    false
}
