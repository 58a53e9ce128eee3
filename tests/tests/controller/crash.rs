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

/// `impair update ARGS` in the router, started (not waited for).
fn spawn_update(lab: &impair_tools::lab::Lab, args: &[&str]) -> std::process::Child {
    std::process::Command::new("ip")
        .args(["netns", "exec", &lab.router])
        .arg(impair_bin())
        .arg("update")
        .arg("r1")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning impair update")
}

/// Two updates racing from two processes: the rule set in force is one of
/// them, whole (never a mix of both), with its own counters and generation.
#[test]
fn racing_updates_leave_one_of_them_whole() {
    let lab = lab("race");
    let before = router_state(&lab);
    let ctl = Controller::start(&lab, &["--loss", "1%", "--attach-mode", "netlink"]);
    let a: &[&str] = &[
        "--replace",
        "--loss",
        "10%",
        "--dport",
        "1000",
        "--dport",
        "1001",
        "--dport",
        "1002",
    ];
    let b: &[&str] = &[
        "--replace",
        "--loss",
        "20%",
        "--dport",
        "2000",
        "--dport",
        "2001",
        "--dport",
        "2002",
        "--dport",
        "2003",
        "--dport",
        "2004",
    ];
    let mut generation = 1;
    for round in 0..8 {
        let (x, y) = if round % 2 == 0 { (a, b) } else { (b, a) };
        let first = spawn_update(&lab, x);
        let second = spawn_update(&lab, y);
        for child in [first, second] {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        generation += 2;
        let s = stats_json(&lab);
        assert_eq!(
            s["generation"], generation,
            "round {round}: one generation per update: {s}"
        );
        let rules = s["rules"].as_array().unwrap();
        let matches: Vec<&str> = rules
            .iter()
            .map(|r| r["matches"].as_str().unwrap())
            .collect();
        let losses: Vec<f64> = rules.iter().map(|r| r["loss"].as_f64().unwrap()).collect();
        let whole_a = rules.len() == 3
            && matches.iter().all(|m| m.contains("dport 100"))
            && losses.iter().all(|l| *l == 0.1);
        let whole_b = rules.len() == 5
            && matches.iter().all(|m| m.contains("dport 200"))
            && losses.iter().all(|l| *l == 0.2);
        assert!(
            whole_a || whole_b,
            "round {round}: a mix of both updates: {matches:?} {losses:?}"
        );
    }
    drop(ctl);
    assert_restored(&lab, &before);
}

/// A controller stopped while an update from another process is writing:
/// whatever the order, the next impair command leaves nothing behind.
#[test]
fn a_detach_during_an_update_leaves_nothing_behind() {
    let lab = lab("detupd");
    let before = router_state(&lab);
    for round in 0..4 {
        let ctl = Controller::start(&lab, &["--loss", "1%", "--attach-mode", "netlink"]);
        let update = spawn_update(&lab, &["--loss", "30%"]);
        if round % 2 == 1 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            ctl.signal_and_wait(libc::SIGTERM).success(),
            "round {round}"
        );
        // The update either went through or found the instance gone.
        let out = update.wait_with_output().unwrap();
        let code = out.status.code();
        assert!(
            matches!(code, Some(0..=2)),
            "round {round}: the update ended normally: {out:?}"
        );
        stdout_ok(&impair_in(&lab.router, &["detach", "r1", "--if-exists"]));
        assert_restored(&lab, &before);
    }
}
