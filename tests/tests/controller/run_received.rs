//! `impair run --loss 30%` loses 30% of what CMD receives and nothing of
//! what another process of the same namespace receives (issue 12, item 4),
//! measured at the receiving sockets; the host runs it (the delay case is
//! `run_fq`, for the VM tier). The scaffolding (CMD, its socket, the other
//! socket, the senders) is `run_fq::run_receiving`.
use impair_tests::{ns::lab, stats::assert_inside_suite};
use impair_tools::{lab::CLIENT_IF, probe::ProbeConfig};

use crate::run_fq::run_receiving;

/// `--loss 30%`: CMD's received datagrams lose 30% (inside the 99% Wilson
/// interval), the other process's none; nothing is left behind.
#[test]
fn run_loses_30_percent_of_what_cmd_receives_and_nothing_of_others() {
    let lab = lab("runrx");
    let qdisc_before = lab
        .exec(&lab.client, &["tc", "qdisc", "show", "dev", CLIENT_IF])
        .unwrap();
    let cfg = ProbeConfig {
        count: 2000,
        rate_pps: 2000,
        payload_len: 200,
        ..Default::default()
    };
    let r = run_receiving(&lab, &["--loss", "30%", "--seed", "7"], &cfg);
    assert_eq!(r.sent_to_cmd, cfg.count);
    assert!(
        r.stderr.contains("sends and receives"),
        "the start line says received traffic is impaired: {}",
        r.stderr
    );
    let lost = r.sent_to_cmd - r.cmd.len() as u64;
    assert_inside_suite(0.30, lost, r.sent_to_cmd);
    assert_eq!(
        (r.other.lost, r.other.received),
        (0, cfg.count),
        "another process's received traffic is untouched: {:?}",
        r.other
    );
    assert_eq!(
        lab.exec(&lab.client, &["tc", "qdisc", "show", "dev", CLIENT_IF])
            .unwrap(),
        qdisc_before
    );
    let links = lab.exec(&lab.client, &["ip", "-o", "link"]).unwrap();
    assert!(!links.contains("ifb"), "no ifb is left: {links}");
}
