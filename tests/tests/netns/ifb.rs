//! Received traffic through impair's ifb device (`engine/ifb.rs`), on the
//! server's `s0`: an ingress instance whose rules hold or copy packets
//! creates its own ifb, and `impair_egress` on it decides every received
//! packet. Here with duplication (which needs no fq, so it runs on hosts
//! without sch_fq) together with loss, corruption and ECN, measured at the
//! receiver; the ifb exists only while the instance does; a SIGKILLed
//! controller leaves traffic flowing (tcx: at once; netlink: within the
//! lease) and the next impair command removes its ifb. Delay and rate on
//! received traffic need fq: the VM tier (`vm_ifb.rs`).
use std::time::Duration;

use impair_tests::{
    ns::{lab, probe, Site},
    stats::assert_inside_suite,
};
use impair_tools::lab::SERVER_IF;

use super::tcx_or_note;

const SITE: Site = Site::ServerIngress;

/// Whether this kernel takes received traffic through an ifb (Linux 6.4+:
/// `engine::ifb::REDIRECT_TO_IFB_SINCE`). Where it does not, checks that an
/// ingress attach that would need one is refused (exit 2, naming 6.4) and
/// changes nothing, and prints a NOTE naming `test`.
pub(super) fn ifb_path_or_refused(tag: &str, test: &str) -> bool {
    let release = impair::engine::ifb::kernel_release();
    if impair::engine::ifb::redirects_to_ifb(&release) {
        return true;
    }
    impair_tests::note(format!(
        "{test}: Linux {release} cannot bpf_redirect to an ifb (6.4+): checking the refusal"
    ));
    let lab = lab(tag);
    let before = SITE.state(&lab);
    let out = SITE.impair(
        &lab,
        &[
            "attach",
            SERVER_IF,
            "--direction",
            "ingress",
            "--duplicate",
            "1%",
        ],
    );
    impair_tests::ns::assert_refused("ingress duplicate before 6.4", &out, &["6.4"]);
    // A rate shapes through the ifb too, and says how to police instead.
    refuse_ingress(
        &lab,
        &["--rate", "2mbit"],
        "ingress rate before 6.4",
        &["6.4", "--police"],
    );
    assert_eq!(SITE.state(&lab), before, "a refusal changes nothing");
    false
}

/// `impair attach s0 --direction ingress ARGS` is refused (exit 2, one line
/// with each of `needles`).
fn refuse_ingress(lab: &impair_tools::lab::Lab, args: &[&str], what: &str, needles: &[&str]) {
    let all = [&["attach", SERVER_IF, "--direction", "ingress"][..], args].concat();
    impair_tests::ns::assert_refused(what, &SITE.impair(lab, &all), needles);
}

/// The ifb devices in the server's namespace, one per line.
fn ifbs(lab: &impair_tools::lab::Lab) -> String {
    lab.exec(&lab.server, &["ip", "-o", "link", "show", "type", "ifb"])
        .unwrap()
}

/// 10% loss and 5% duplication of received traffic through the ifb. In
/// netem's order a packet both lost and duplicated still arrives once, so
/// the receiver misses 10% × 95% = 9.5% (inside the 99% Wilson interval) and
/// sees 5% × 90% = 4.5% extra copies; the engine's counters (one place
/// decides) account for the receiver's numbers exactly: both-fired packets
/// are `dropped_loss − lost` = `duplicated − extra copies`. Detach removes
/// the ifb and restores `s0`.
#[test]
fn loss_and_duplicate_of_received_traffic_through_the_ifb() {
    if !ifb_path_or_refused(
        "ifbldr",
        "ifb::loss_and_duplicate_of_received_traffic_through_the_ifb",
    ) {
        return;
    }
    let lab = lab("ifbld");
    let before = SITE.state(&lab);
    assert_eq!(ifbs(&lab), "", "no ifb before");
    let ctl = SITE.attach(
        &lab,
        &["--loss", "10%", "--duplicate", "5%", "--seed", "42"],
    );
    let devices = ifbs(&lab);
    assert!(
        devices.contains(": imp") && devices.contains("UP"),
        "the instance's ifb is up: {devices}"
    );
    let report = probe(&lab, false, 0, 20_000, 200);
    assert_eq!(report.sent, 20_000);
    assert_inside_suite(0.095, report.lost, report.sent);
    assert_inside_suite(0.045, report.duplicated, report.sent);
    assert_eq!(report.corrupted + report.foreign, 0, "{report:?}");

    let stats = SITE.stats(&lab);
    let rule = &stats["rules"][0];
    assert_eq!(stats["hook"], "tc-ingress", "{stats}");
    assert_eq!(rule["packets"], report.sent, "one place counts: {stats}");
    let (dropped, duplicated) = (
        rule["dropped_loss"].as_u64().unwrap(),
        rule["duplicated"].as_u64().unwrap(),
    );
    assert!(
        dropped >= report.lost && duplicated >= report.duplicated,
        "{stats}"
    );
    assert_eq!(
        dropped - report.lost,
        duplicated - report.duplicated,
        "the packets both lost and duplicated arrived once: {stats} {report:?}"
    );
    assert_eq!(
        rule["passed"].as_u64().unwrap() + dropped,
        report.sent,
        "{stats}"
    );
    assert_eq!(stats["errors"], 0, "{stats}");
    let ifb = stats["owner"]["ifb"].as_str().expect("stats names the ifb");
    assert!(devices.contains(&format!(": {ifb}:")), "{devices}");
    let status = SITE.impair(&lab, &["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains(&format!("s0 tc-ingress via ifb {ifb}")),
        "status shows the ifb: {text}"
    );

    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    SITE.assert_restored(&lab, &before);
    assert_eq!(ifbs(&lab), "", "detach deletes the ifb");
    let after = probe(&lab, false, 0, 2_000, 200);
    assert_eq!(after.lost + after.duplicated, 0, "unimpaired after detach");
}

/// Corruption of received traffic through the ifb (duplication puts it on
/// the ifb path): the engine corrupts 10% of the packets and the receiver
/// sees corrupted datagrams.
#[test]
fn corruption_of_received_traffic_through_the_ifb() {
    if !ifb_path_or_refused(
        "ifbcor",
        "ifb::corruption_of_received_traffic_through_the_ifb",
    ) {
        return;
    }
    let lab = lab("ifbco");
    let before = SITE.state(&lab);
    let ctl = SITE.attach(
        &lab,
        &["--corrupt", "10%", "--duplicate", "100%", "--seed", "7"],
    );
    let report = probe(&lab, false, 0, 10_000, 200);
    let stats = SITE.stats(&lab);
    let rule = &stats["rules"][0];
    assert_eq!(rule["packets"], report.sent, "{stats}");
    // Each corrupted original is duplicated too (netem's order: corruption
    // acts on the packet the copy is made of), so the receiver sees two
    // corrupted datagrams per corrupted packet.
    assert!(report.corrupted > 0, "{report:?}");
    assert_inside_suite(0.10, rule["corrupted"].as_u64().unwrap(), report.sent);
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    SITE.assert_restored(&lab, &before);
}

/// A controller holding received traffic (an MTU blackhole for the probe's
/// 228-byte packets, through its ifb) is
/// SIGKILLed: traffic flows again (tcx at once, netlink once the lease has
/// run out), and the next impair command leaves no ifb, qdisc or filter.
fn sigkill_with_ifb(tag: &str, mode: &str) {
    let lab = lab(tag);
    let before = SITE.state(&lab);
    let ctl = SITE.attach(
        &lab,
        &["--mtu", "100", "--duplicate", "1%", "--attach-mode", mode],
    );
    assert_eq!(probe(&lab, false, 0, 300, 200).received, 0, "held and lost");
    assert!(!ctl.signal_and_wait(libc::SIGKILL).success());
    if mode == "netlink" {
        std::thread::sleep(impair::engine::LEASE + Duration::from_millis(500));
    }
    let after = probe(&lab, false, 0, 2_000, 200);
    assert_eq!(
        after.lost + after.duplicated,
        0,
        "a killed controller never black-holes received traffic: {after:?}"
    );
    // The next impair command (any: here `status`) removes the dead
    // controller's ifb and, for netlink, its filter and clsact qdisc.
    let _ = SITE.impair(&lab, &["status"]);
    assert_eq!(ifbs(&lab), "", "the next impair command deletes the ifb");
    assert_eq!(
        SITE.state(&lab),
        before,
        "the next impair command leaves no device, qdisc or filter"
    );
    assert_eq!(probe(&lab, false, 0, 1_000, 200).lost, 0);
}

#[test]
fn sigkill_with_ifb_netlink_passes_after_the_lease_and_leaves_nothing() {
    if !ifb_path_or_refused(
        "ifbknr",
        "ifb::sigkill_with_ifb_netlink_passes_after_the_lease_and_leaves_nothing",
    ) {
        return;
    }
    sigkill_with_ifb("ifbkn", "netlink");
}

#[test]
fn sigkill_with_ifb_tcx_passes_at_once_and_leaves_nothing() {
    if tcx_or_note(
        "ifb::sigkill_with_ifb_tcx_passes_at_once_and_leaves_nothing",
        "the netlink variant covers this kernel",
    ) && ifb_path_or_refused(
        "ifbktr",
        "ifb::sigkill_with_ifb_tcx_passes_at_once_and_leaves_nothing",
    ) {
        sigkill_with_ifb("ifbkt", "tcx");
    }
}

/// Without sch_fq, delay on received traffic is refused (exit 2, naming
/// fq) and changes nothing: the ifb it created on the way is gone again.
/// With fq the VM tier measures the delay instead.
#[test]
fn ingress_delay_without_fq_is_refused_and_leaves_no_ifb() {
    if !ifb_path_or_refused(
        "ifbnfr",
        "ifb::ingress_delay_without_fq_is_refused_and_leaves_no_ifb",
    ) {
        return;
    }
    let lab = lab("ifbnofq");
    if impair_tests::kernel::has_qdisc(&lab, "fq") {
        impair_tests::note(
            "ifb::ingress_delay_without_fq_is_refused_and_leaves_no_ifb: this kernel has fq; \
             the VM tier measures ingress delay",
        );
        return;
    }
    let before = SITE.state(&lab);
    let out = SITE.impair(
        &lab,
        &[
            "attach",
            SERVER_IF,
            "--direction",
            "ingress",
            "--delay",
            "30ms",
        ],
    );
    impair_tests::ns::assert_refused("ingress delay without fq", &out, &["fq"]);
    assert_eq!(SITE.state(&lab), before, "a refusal changes nothing");
    assert_eq!(ifbs(&lab), "");
    // A rate on received traffic shapes (through the ifb, with fq) unless
    // it polices: without fq the refusal names the way that needs none.
    refuse_ingress(
        &lab,
        &["--rate", "2mbit"],
        "ingress rate without fq",
        &["fq", "--police"],
    );
    assert_eq!(SITE.state(&lab), before, "a refusal changes nothing");
    assert_eq!(ifbs(&lab), "");
}
