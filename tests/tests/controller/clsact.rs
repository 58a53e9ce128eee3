//! What differs by attach path and so by kernel: the lease that enforces
//! `--duration` in the kernel even while the controller is stopped, pinned
//! instances (always netlink clsact) outliving their process until `detach`
//! or their deadline and the next command's cleanup, and `impair run`, whose
//! attach and detach go through clsact before Linux 6.6.
use std::{
    collections::BTreeSet,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use impair_tests::{
    impair_bin,
    kernel::has_tcx,
    note,
    ns::{
        assert_restored, impair_in, lab, probe, router_state, socket_pair, stats_json, stdout_ok,
        Controller,
    },
    stats::assert_inside_suite,
    Scratch,
};
use impair_tools::lab;

/// Killed at every step (the VM runs these with `clsact::` on each kernel).
#[path = "crash.rs"]
mod crash;

#[test]
fn duration_is_enforced_by_the_kernel_even_when_the_controller_is_stopped() {
    let lab = lab("durstop");
    let before = router_state(&lab);
    let ctl = Controller::start(&lab, &["--blackhole", "--duration", "1500ms"]);
    let started = Instant::now();
    // Frozen, the controller cannot detach or renew; only the lease cap
    // (the duration's end) can stop the blackhole before the normal 2 s lease.
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(ctl.pid(), libc::SIGSTOP) };
    assert_eq!(probe(&lab, false, 0, 200, 200).received, 0, "blackholed");
    while started.elapsed() < Duration::from_millis(1700) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = stats_json(&lab);
    assert_eq!(stats["lease_valid"], false, "{stats}");
    let r = probe(&lab, false, 0, 500, 200);
    assert_eq!(r.lost, 0, "past --duration nothing is impaired: {r:?}");
    // SAFETY: as above.
    unsafe { libc::kill(ctl.pid(), libc::SIGCONT) };
    assert!(ctl.wait().success());
    assert_restored(&lab, &before);
}

#[test]
fn a_pinned_attach_outlives_its_process_until_detach() {
    let lab = lab("pin");
    let before = router_state(&lab);
    let out = stdout_ok(&impair_in(
        &lab.router,
        &["attach", "r1", "--pin", "--loss", "50%", "--seed", "5"],
    ));
    assert!(out.contains("pinned"), "{out}");
    let r = probe(&lab, false, 0, 4_000, 200);
    assert_inside_suite(0.50, r.lost, r.sent);
    let status = stdout_ok(&impair_in(&lab.router, &["status"]));
    assert!(
        status.contains("(pinned)") && status.contains("netlink"),
        "{status}"
    );
    let again = impair_in(&lab.router, &["attach", "r1", "--loss", "1%"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("pinned"));
    stdout_ok(&impair_in(&lab.router, &["update", "r1", "--loss", "100%"]));
    assert_eq!(
        probe(&lab, false, 0, 300, 200).received,
        0,
        "a pinned instance updates too"
    );
    let out = stdout_ok(&impair_in(&lab.router, &["detach", "r1"]));
    assert!(out.contains("removed the pinned instance"), "{out}");
    assert_restored(&lab, &before);
    assert_eq!(probe(&lab, false, 0, 1_000, 200).lost, 0);
}

#[test]
fn a_pinned_duration_ends_in_the_kernel_and_the_next_command_cleans_up() {
    let lab = lab("pindur");
    let before = router_state(&lab);
    stdout_ok(&impair_in(
        &lab.router,
        &[
            "attach",
            "r1",
            "--pin",
            "--blackhole",
            "--duration",
            "1500ms",
        ],
    ));
    // The deadline was set before the command returned: at most 1.5 s from now.
    let t = Instant::now();
    assert_eq!(probe(&lab, false, 0, 200, 200).received, 0, "blackholed");
    while t.elapsed() < Duration::from_millis(1800) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // No process runs; the kernel's lease check alone ends the impairment.
    assert_eq!(probe(&lab, false, 0, 500, 200).lost, 0);
    let out = impair_in(&lab.router, &["status"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("removed the pinned instance on r1"), "{err}");
    assert_restored(&lab, &before);
}

#[test]
fn run_impairs_only_the_commands_traffic() {
    let lab = lab("run");
    let iface_before = lab
        .exec(&lab.client, &["tc", "qdisc", "show", "dev", lab::CLIENT_IF])
        .unwrap();
    let (tx, rx, to) = socket_pair(&lab, false, 0);
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    let rx = Arc::new(rx);
    let marks = Scratch::new("run-marks");
    let run = |loss: &str| {
        let (start, end) = (marks.path().join("start"), marks.path().join("end"));
        let _ = (std::fs::remove_file(&start), std::fs::remove_file(&end));
        // Count as they arrive: a socket buffer must not overflow meanwhile.
        let done = Arc::new(AtomicBool::new(false));
        let counter = {
            let (rx, done) = (rx.clone(), done.clone());
            std::thread::spawn(move || {
                let (mut cmd, mut test) = (0, BTreeSet::new());
                let mut buf = [0u8; 16];
                loop {
                    match rx.recv(&mut buf) {
                        Ok(n) if &buf[..n] == b"cmd" => cmd += 1,
                        Ok(n) => {
                            if let Some(seq) = std::str::from_utf8(&buf[..n])
                                .ok()
                                .and_then(|t| t.strip_prefix('t')?.parse::<u32>().ok())
                            {
                                test.insert(seq);
                            }
                        }
                        Err(_) if done.load(Ordering::Relaxed) => break,
                        Err(_) => {}
                    }
                }
                (cmd, test)
            })
        };
        let mut child = Command::new(impair_bin())
            .args([
                "--netns",
                &lab.client,
                "run",
                "--iface",
                lab::CLIENT_IF,
                "--loss",
                loss,
                "--quiet",
                "--",
            ])
            .arg(&exe)
            .args(["--exact", "helper_udp_sender", "--ignored", "--quiet"])
            .env("IMPAIR_TEST_SEND", format!("{to},200"))
            .env("IMPAIR_TEST_MARKS", marks.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // Meanwhile another process of the same namespace sends too, each
        // packet numbered and marked by whether CMD ran all the while it was
        // sent (impair fully attached), or not (around attach and detach).
        let mut sent: Vec<bool> = Vec::new();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            let started = start.exists();
            tx.send_to(format!("t{}", sent.len()).as_bytes(), to)
                .unwrap();
            sent.push(started && !end.exists());
            std::thread::sleep(Duration::from_millis(5));
        };
        done.store(true, Ordering::Relaxed);
        let (cmd, received) = counter.join().unwrap();
        let lost = |inside: bool| -> Vec<u32> {
            (0u32..)
                .zip(&sent)
                .filter(|&(seq, &s)| s == inside && !received.contains(&seq))
                .map(|(seq, _)| seq)
                .collect()
        };
        let inside = sent.iter().filter(|&&s| s).count();
        (status, cmd, inside, lost(true), lost(false))
    };
    let (status, cmd, inside, lost_inside, lost_outside) = run("100%");
    assert_eq!(status.code(), Some(3), "impair run exits with CMD's status");
    assert_eq!(cmd, 0, "CMD's (and its child's) traffic is dropped");
    assert!(inside > 50, "the other sender overlapped CMD: {inside}");
    assert!(
        lost_inside.is_empty(),
        "other processes' traffic is untouched while CMD runs: lost {lost_inside:?} of {inside}"
    );
    // Before tcx, attaching means adding the clsact qdisc and detaching
    // removing it, and the kernel deactivates the device's queues for that
    // instant (qdisc_graft → dev_deactivate): whatever it sends then is
    // dropped, by the kernel, as `tc qdisc add/del ... clsact` does. With tcx
    // no qdisc changes, so nothing may be lost at all.
    if has_tcx() {
        assert!(
            lost_outside.is_empty(),
            "tcx: attach and detach lose nothing of other traffic: lost {lost_outside:?}"
        );
    } else if !lost_outside.is_empty() {
        note(format!(
            "netlink (clsact) attachment: the kernel dropped {} packet(s) of other traffic \
             sent while the clsact qdisc was added or removed ({lost_outside:?}); see docs/architecture.md",
            lost_outside.len()
        ));
    }
    let (status, cmd, ..) = run("0%");
    assert_eq!(status.code(), Some(3));
    assert_eq!(
        cmd, 200,
        "the helper really sends: unimpaired, all 200 arrive"
    );
    assert_eq!(
        lab.exec(&lab.client, &["tc", "qdisc", "show", "dev", lab::CLIENT_IF])
            .unwrap(),
        iface_before
    );
    let status = impair_in(&lab.client, &["status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("no impair instances"));
    let left: Vec<_> = std::fs::read_dir("/sys/fs/cgroup/unified")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("impair-run-"))
        .collect();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
}

/// Issue 16: a netlink-mode controller that ended cleanly (exit 0, the
/// interface restored) is no leftover of a dead controller for the next
/// attach on the interface, even while its program is still in the kernel.
/// The kernel frees a deleted clsact filter's program only after an RCU
/// grace period, so on a busy machine the next `impair` sometimes found it,
/// took it for a dead controller's, and failed removing its (gone) filter.
/// Here the test holds the program open across the controller's exit, which
/// makes that window as long as it likes.
#[test]
fn a_cleanly_ended_netlink_instance_is_no_leftover_for_the_next_attach() {
    let lab = lab("clean");
    let before = router_state(&lab);
    for run in 1..=6 {
        let mut ctl = Controller::start(
            &lab,
            &[
                "--loss",
                "5%",
                "--attach-mode",
                "netlink",
                "--duration",
                "1s",
            ],
        );
        let held = impair::netns::run_in(&lab.router, || {
            let ifindex = impair::sys::ifindex(lab::ROUTER_EGRESS).unwrap();
            let ids: Vec<u32> = impair::discover::on_interface(ifindex)
                .unwrap()
                .iter()
                .map(|i| i.prog_id)
                .collect();
            aya::programs::loaded_programs()
                .filter_map(Result::ok)
                .filter(|p| ids.contains(&p.id()))
                .map(|p| p.fd().unwrap())
                .collect::<Vec<_>>()
        })
        .unwrap();
        assert_eq!(held.len(), 1, "run {run}: the controller's program");
        let status = ctl.child.wait().unwrap();
        std::mem::forget(ctl);
        assert!(status.success(), "run {run}: {status:?}");
        // auto: tcx where the kernel has it (as in the report), else netlink.
        let out = impair_in(
            &lab.router,
            &["attach", "r1", "--loss", "5%", "--duration", "1s"],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "run {run}: {err}");
        assert!(!err.contains("leftover"), "run {run}: {err}");
        drop(held);
        assert_restored(&lab, &before);
    }
}
