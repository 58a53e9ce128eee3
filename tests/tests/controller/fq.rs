//! Updates that need sch_fq: a live update adding a delay installs fq, a
//! larger delay resizes it, and the controller removes it on exit. Where the
//! kernel has no sch_fq (this project's host kernel), the update is refused
//! clearly, changes nothing, and a NOTE says the VM tier runs the real thing.
use impair_tests::{
    kernel::fq_or_note,
    ns::{
        assert_refused, assert_restored, impair_in, lab, probe, router_state, stats_json,
        stdout_ok, Controller,
    },
};

/// A live update from another process that adds a delay installs fq (the
/// controller then removes it on exit, as if it had installed it), and one
/// that grows the delay resizes impair's fq in place. Without sch_fq (this
/// project's host) the update is refused clearly and changes nothing; the VM
/// tier runs the real thing.
#[test]
fn update_to_a_delay_installs_fq_and_the_controller_removes_it() {
    let lab = lab("updfq");
    let before = router_state(&lab);
    let ctl = Controller::start(&lab, &["--loss", "0%"]);
    let during = router_state(&lab);
    if !fq_or_note(
        &lab,
        "fq::update_to_a_delay_installs_fq_and_the_controller_removes_it",
        "checking the refusal only; the VM tier (cargo xtask vm) runs this test on kernels with fq",
    ) {
        let out = impair_in(&lab.router, &["update", "r1", "--delay", "30ms"]);
        assert_refused("update --delay", &out, &["sch_fq", "nothing was changed"]);
        assert_eq!(
            router_state(&lab),
            during,
            "a refused update changes nothing"
        );
        assert_eq!(stats_json(&lab)["generation"], 1);
    } else {
        stdout_ok(&impair_in(
            &lab.router,
            &["update", "r1", "--delay", "30ms"],
        ));
        assert!(
            router_state(&lab).contains("qdisc fq"),
            "fq installed as root"
        );
        let d = probe(&lab, false, 0, 300, 200).delay.expect("delay stats");
        assert!(d.min_ns >= 30_000_000, "{d:?}");
        stdout_ok(&impair_in(&lab.router, &["update", "r1", "--delay", "2s"]));
        let state = router_state(&lab);
        assert!(
            state.contains("horizon 3s"),
            "fq resized for 2 s (horizon = hold + 1 s): {state}"
        );
        stdout_ok(&impair_in(
            &lab.router,
            &["update", "r1", "--delay", "10ms"],
        ));
    }
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    assert_restored(&lab, &before);
}
