//! The netlink clsact attach path and its lifecycle, which kernels before
//! 6.6 (no tcx) use for every tc attach: loss through a clsact filter at both
//! tc hooks, the lease making a SIGKILLed controller harmless, the dead
//! leftover named by `status` and removed by `detach` or the next attach, a
//! clsact qdisc shared by egress and ingress or owned by someone else.
use impair_tests::ns::{lab, probe, Site};

use super::{loss_end_to_end, sigkill_leaves_traffic_unimpaired};

#[test]
fn loss_10_percent_netlink_clsact_measured_at_receiver() {
    loss_end_to_end(
        "nl",
        Site::RouterEgress,
        &["--attach-mode", "netlink"],
        "tc-egress",
        Some("netlink"),
    );
}

#[test]
fn loss_10_percent_tc_ingress_netlink_clsact_measured_at_receiver() {
    loss_end_to_end(
        "inl",
        Site::ServerIngress,
        &["--attach-mode", "netlink"],
        "tc-ingress",
        Some("netlink"),
    );
}

#[test]
fn sigkill_netlink_leaves_traffic_unimpaired_within_the_lease() {
    sigkill_leaves_traffic_unimpaired("knl", Site::RouterEgress, "netlink");
}

#[test]
fn sigkill_netlink_ingress_leaves_traffic_unimpaired_within_the_lease() {
    sigkill_leaves_traffic_unimpaired("iknl", Site::ServerIngress, "netlink");
}

/// A clsact qdisc that was there before is used and left in place, at
/// either tc hook.
#[test]
fn netlink_detach_keeps_a_clsact_qdisc_it_did_not_create() {
    for site in Site::BOTH {
        let lab = lab("keepq");
        lab.exec(
            site.ns(&lab),
            &["tc", "qdisc", "add", "dev", site.iface(), "clsact"],
        )
        .unwrap();
        let before = site.state(&lab);
        let ctl = site.attach(&lab, &["--loss", "50%", "--attach-mode", "netlink"]);
        assert!(ctl.signal_and_wait(libc::SIGINT).success(), "{site:?}");
        site.assert_restored(&lab, &before);
        assert!(before.contains("clsact"), "{site:?}");
    }
}

/// A dead leftover in the same direction is replaced (the next attach
/// removes it).
#[test]
fn next_ingress_attach_removes_a_dead_netlink_leftover() {
    let site = Site::ServerIngress;
    let lab = lab("ileft");
    let before = site.state(&lab);
    let ctl = site.attach(&lab, &["--blackhole", "--attach-mode", "netlink"]);
    assert!(!ctl.signal_and_wait(libc::SIGKILL).success());
    let ctl = site.attach(&lab, &["--loss", "100%", "--attach-mode", "netlink"]);
    assert_eq!(probe(&lab, false, 0, 200, 200).received, 0);
    let filters = lab
        .exec(
            &lab.server,
            &["tc", "filter", "show", "dev", site.iface(), "ingress"],
        )
        .unwrap();
    assert_eq!(
        filters.matches("name impair_ingress").count(),
        1,
        "the leftover filter was replaced: {filters}"
    );
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    site.assert_restored(&lab, &before);
}

/// netlink egress and ingress instances share one clsact qdisc: whichever
/// detaches last removes it (the first hands the duty over), so the
/// interface ends exactly as it was in either order.
#[test]
fn netlink_egress_and_ingress_share_clsact_and_the_last_one_removes_it() {
    let site = Site::ServerIngress;
    let lab = lab("ishare");
    let before = site.state(&lab);
    for first in ["egress", "ingress"] {
        let egress = impair_tests::ns::Controller::start_in(
            &lab.server,
            site.iface(),
            &["--loss", "1%", "--attach-mode", "netlink"],
        );
        let ingress = site.attach(&lab, &["--loss", "1%", "--attach-mode", "netlink"]);
        let (a, b) = if first == "egress" {
            (egress, ingress)
        } else {
            (ingress, egress)
        };
        assert!(a.signal_and_wait(libc::SIGTERM).success());
        assert!(
            site.state(&lab).contains("clsact"),
            "still used by the other instance"
        );
        assert!(b.signal_and_wait(libc::SIGTERM).success());
        site.assert_restored(&lab, &before);
    }
}
