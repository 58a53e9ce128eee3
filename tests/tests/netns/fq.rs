//! What needs sch_fq: delay at egress is paced by fq, which attach installs
//! as root and detach removes. Where the kernel has no sch_fq (this project's
//! host kernel), attach refuses clearly and changes nothing, and a NOTE says
//! the VM tier runs the real thing.
use impair_tests::{
    kernel::fq_or_note,
    ns::{assert_refused, assert_restored, impair_in, lab, probe, router_state, Controller},
};

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

/// Latency matrices and delay series with fq (the VM tier).
#[path = "fq_traces.rs"]
mod traces;
