//! What needs sch_fq: delay at egress is paced by fq, which attach installs
//! as root and detach removes. Where the kernel has no sch_fq (this project's
//! host kernel), attach refuses clearly and changes nothing, and a NOTE says
//! the VM tier runs the real thing. Received traffic through impair's ifb
//! (`--direction ingress` with delay or jitter) needs fq on the ifb too.
use impair_tests::{
    kernel::fq_or_note,
    ns::{assert_refused, assert_restored, impair_in, lab, probe, router_state, Controller, Site},
};
use impair_tools::probe::ProbeReport;

/// Delay needs fq. Where the kernel has it, the receiver sees the delay and
/// detach gives the device its default qdisc back; where it does not, attach
/// refuses with a clear error and changes nothing — and the fidelity of
/// delay and rate is measured in the VM tier.
#[test]
fn delay_at_the_receiver_or_a_clear_refusal_without_sch_fq() {
    let lab = lab("delay");
    let before = router_state(&lab);
    if !fq_or_note(
        &lab,
        "fq::delay_at_the_receiver_or_a_clear_refusal_without_sch_fq",
        "checking the refusal only; delay and rate fidelity run in the VM tier (cargo xtask vm)",
    ) {
        let out = impair_in(&lab.router, &["attach", "r1", "--delay", "10ms"]);
        assert_refused("attach --delay", &out, &["sch_fq", "nothing was changed"]);
        assert_eq!(router_state(&lab), before);
        return;
    }
    let ctl = Controller::start(&lab, &["--delay", "20ms"]);
    assert!(
        router_state(&lab).contains("qdisc fq"),
        "fq installed as root"
    );
    let r = probe(&lab, false, 0, 500, 200);
    assert_eq!(r.lost, 0);
    let d = r.delay.expect("delay stats");
    assert!(
        d.min_ns >= 20_000_000,
        "no packet arrives before its delay: {d:?}"
    );
    assert!(d.p50_ns < 40_000_000, "median delay near 20 ms: {d:?}");
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    assert_restored(&lab, &before);
}

/// What the ifb path (`engine/ifb.rs`) does with fq on the receive side:
/// `--direction ingress` at the server's `s0` with `args`; `None` where the
/// kernel has no sch_fq (the host: `ifb::` checks the refusal there).
/// Returns the probe's report and the unimpaired median one-way delay
/// measured just before attaching.
fn ingress_with_fq(tag: &str, test: &str, args: &[&str]) -> Option<(ProbeReport, u64)> {
    if !super::ifb::ifb_path_or_refused(&format!("{tag}r"), test) {
        return None;
    }
    let lab = lab(tag);
    if !fq_or_note(&lab, test, "the ifb tests (netns ifb::) check the refusal") {
        return None;
    }
    let site = Site::ServerIngress;
    let before = site.state(&lab);
    // The emulator's own lateness under load (qemu TCG on a busy host can
    // add tens of ms): the delay is judged against this run's unimpaired
    // median, measured right before.
    let base_p50_ns = probe(&lab, false, 0, 200, 200)
        .delay
        .expect("baseline")
        .p50_ns;
    let ctl = site.attach(&lab, args);
    let ifbs = lab.exec(&lab.server, &["tc", "qdisc", "show"]).unwrap();
    assert!(
        ifbs.lines()
            .any(|l| l.contains("qdisc fq") && l.contains("dev imp")),
        "fq is the root of the instance's ifb: {ifbs}"
    );
    let r = probe(&lab, false, 0, 500, 200);
    let stats = site.stats(&lab);
    assert_eq!(stats["rules"][0]["packets"], r.sent, "{stats}");
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    site.assert_restored(&lab, &before);
    Some((r, base_p50_ns))
}

/// 30 ms on received traffic, measured at the receiver (one way).
#[test]
fn ingress_delay_30ms_through_the_ifb_at_the_receiver() {
    let test = "fq::ingress_delay_30ms_through_the_ifb_at_the_receiver";
    let Some((r, base_p50_ns)) = ingress_with_fq("idelay", test, &["--delay", "30ms"]) else {
        return;
    };
    assert_eq!(r.lost, 0, "{r:?}");
    let d = r.delay.expect("delay stats");
    assert!(
        d.min_ns >= 30_000_000,
        "no packet arrives before its delay: {d:?}"
    );
    assert!(
        d.p50_ns < base_p50_ns + 50_000_000,
        "median delay near 30 ms over the unimpaired {base_p50_ns} ns: {d:?}"
    );
}

/// In-order jitter on received traffic: packets keep their order.
#[test]
fn ingress_in_order_jitter_through_the_ifb_never_reorders() {
    let test = "fq::ingress_in_order_jitter_through_the_ifb_never_reorders";
    let args = ["--delay", "20ms", "--jitter", "10ms", "--in-order"];
    let Some((r, _)) = ingress_with_fq("ijit", test, &args) else {
        return;
    };
    assert_eq!(r.lost, 0, "{r:?}");
    assert_eq!(
        r.reordered, 0,
        "--in-order keeps received packets in order: {r:?}"
    );
    let d = r.delay.expect("delay stats");
    assert!(d.min_ns >= 10_000_000, "{d:?}");
}

/// Rate on received traffic through the ifb shapes like egress (EDT with
/// its queue limit) instead of policing: 2 Mbit/s with 4 Mbit/s offered
/// (1200-byte payloads, 1242-byte frames, one every 2.5 ms) arrives at
/// 2 Mbit/s within 3% at the receiver, and the engine's queue drops (over
/// a 50 ms queue limit) are exactly the packets that did not arrive.
#[test]
fn ingress_rate_through_the_ifb_shapes_at_the_receiver() {
    let test = "fq::ingress_rate_through_the_ifb_shapes_at_the_receiver";
    if !super::ifb::ifb_path_or_refused("irater", test) {
        return;
    }
    let lab = lab("irate");
    if !fq_or_note(&lab, test, "the ifb tests (netns ifb::) check the refusal") {
        return;
    }
    let site = Site::ServerIngress;
    let before = site.state(&lab);
    // A 50 ms queue: the default (netem's 1000 packets, 6 s here) would
    // hold the excess past the probe's linger instead of dropping it.
    let ctl = site.attach(&lab, &["--rate", "2mbit", "--queue", "50ms"]);
    let frame_bytes = (1200 + 8 + 20 + 14) as f64;
    let cfg = impair_tools::probe::ProbeConfig {
        count: 1200,
        rate_pps: 400,
        payload_len: 1200,
        ..Default::default()
    };
    let (report, log) = impair_tests::ns::probe_with_log(&lab, &cfg);
    let arrivals: Vec<u64> = log.receptions.iter().map(|r| r.recv_ns).collect();
    assert!(arrivals.len() > 100, "{report:?}");
    let span_s = (arrivals[arrivals.len() - 1] - arrivals[0]) as f64 / 1e9;
    let measured_bps = (arrivals.len() - 1) as f64 * frame_bytes * 8.0 / span_s;
    impair_tests::note(format!(
        "{test}: received {measured_bps:.0} bit/s over {span_s:.3} s ({} of {})",
        report.received, report.sent
    ));
    assert!(
        (measured_bps - 2e6).abs() / 2e6 < 0.03,
        "received {measured_bps:.0} bit/s vs 2 Mbit/s (±3%): {report:?}"
    );
    let stats = site.stats(&lab);
    let rule = &stats["rules"][0];
    assert_eq!(rule["packets"], report.sent, "{stats}");
    assert_eq!(
        rule["dropped_queue"],
        report.sent - report.received,
        "queue drops == sent − received: {stats}"
    );
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    site.assert_restored(&lab, &before);
}

/// Latency matrices and delay series with fq (the VM tier).
#[path = "fq_traces.rs"]
mod traces;

/// Real TCP (iperf3) through delay, beside netem and the Mathis estimate.
#[path = "tcp_fq.rs"]
mod tcp;

/// Multi-queue devices: mq with one fq per transmit queue, a rate across
/// queues and CPUs.
#[path = "fq_mq.rs"]
mod mq;

/// A rate trace's delivered throughput per 100 ms window (the VM tier).
#[path = "fq_rate_trace.rs"]
mod rate_trace;

/// examples/etcd-regions: etcd's write latency over a latency matrix (the
/// VM tier; the host runs the cluster and checks the refusal).
#[path = "fq_etcd.rs"]
mod etcd;
