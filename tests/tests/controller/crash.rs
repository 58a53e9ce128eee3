//! Crash consistency (issue 16): a controller killed with SIGKILL at every
//! step of attach, update and detach (`IMPAIR_FAULT_AT`, the engine's test
//! hook) leaves nothing that the next impair command does not remove, and a
//! killed update leaves the last committed rule set in force. The attach
//! path runs with clsact filters (what kernels before 6.6 use; this module
//! sits under `clsact::`, which the VM tier runs on 6.1) and, where the
//! kernel has it, tcx.
use std::{os::unix::process::ExitStatusExt as _, process::Output};

use impair_tests::{
    impair_bin,
    kernel::has_tcx,
    note,
    ns::{assert_restored, impair_in, lab, router_state, stats_json, stdout_ok, Controller},
};

/// `impair ARGS` in the router with `IMPAIR_FAULT_AT=step`.
fn impair_killed_at(lab: &impair_tools::lab::Lab, step: &str, args: &[&str]) -> Output {
    std::process::Command::new("ip")
        .args(["netns", "exec", &lab.router, "env"])
        .arg(format!("IMPAIR_FAULT_AT={step}"))
        .arg(impair_bin())
        .args(args)
        .output()
        .expect("running impair")
}

fn assert_killed(what: &str, out: &Output) {
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "{what}: killed by its fault point, got {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_controller_killed_at_any_step_leaves_nothing_behind() {
    let lab = lab("crash");
    let before = router_state(&lab);
    let mut modes = vec!["netlink"];
    if has_tcx() {
        modes.push("tcx");
    } else {
        note("no tcx on this kernel: the crash steps run with clsact filters only");
    }
    for mode in modes {
        for step in ["attach:recorded", "attach:clsact", "attach:linked"] {
            let what = format!("{mode} {step}");
            let out = impair_killed_at(
                &lab,
                step,
                &["attach", "r1", "--loss", "5%", "--attach-mode", mode],
            );
            assert_killed(&what, &out);
            // The next impair command cleans up whatever the step left.
            stdout_ok(&impair_in(&lab.router, &["detach", "r1", "--if-exists"]));
            assert_restored(&lab, &before);
        }
        // Killed inside detach: after the filters went, before the qdisc.
        let what = format!("{mode} detach:unlinked");
        let out = impair_killed_at(
            &lab,
            "detach:unlinked",
            &[
                "attach",
                "r1",
                "--loss",
                "5%",
                "--attach-mode",
                mode,
                "--duration",
                "1s",
            ],
        );
        assert_killed(&what, &out);
        stdout_ok(&impair_in(&lab.router, &["detach", "r1", "--if-exists"]));
        assert_restored(&lab, &before);
    }
}

#[test]
fn an_update_killed_midway_leaves_the_last_committed_rules() {
    let lab = lab("crashupd");
    let before = router_state(&lab);
    let ctl = Controller::start(&lab, &["--loss", "10%", "--attach-mode", "netlink"]);
    let out = impair_killed_at(&lab, "update:written", &["update", "r1", "--loss", "50%"]);
    assert_killed("update:written", &out);
    let s = stats_json(&lab);
    assert_eq!(
        s["generation"], 1,
        "the killed update committed nothing: {s}"
    );
    assert_eq!(s["rules"][0]["loss"], 0.1, "{s}");
    // The next update goes through and is what is in force.
    stdout_ok(&impair_in(&lab.router, &["update", "r1", "--loss", "20%"]));
    let s = stats_json(&lab);
    assert_eq!(s["rules"][0]["loss"], 0.2, "{s}");
    drop(ctl);
    assert_restored(&lab, &before);
}
