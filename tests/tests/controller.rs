//! Namespace tier for the controller's verbs: update, duration, scenarios,
//! profile files, stats/status/detach --all, metrics, --netns, doctor,
//! signals, completions and man pages. The real `impair` binary runs in the
//! lab's router namespace; what matters is measured at the receiver with the
//! probe, and every test checks the router is restored exactly.
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::Command,
    time::{Duration, Instant},
};

use impair_tests::{
    impair_bin,
    ns::{
        assert_inside_99, assert_restored, impair_in, kernel_has_fq, lab, probe, router_state,
        stats_json, Controller,
    },
};
use impair_tools::lab::{self};

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A scratch directory for profile and scenario files, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("impair-test-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn update_changes_the_rules_atomically_under_traffic() {
    let lab = lab("upd");
    let before = router_state(&lab);
    let ctl = Controller::start(&lab, &["--loss", "2%", "--seed", "7"]);
    let r = probe(&lab, false, 0, 10_000, 200);
    assert_inside_99(0.02, r.lost, r.sent);

    // Updates while traffic flows: every packet is counted by exactly one
    // rule set, none is lost to the swap, and the data path never errs.
    let sender = {
        let (client, server) = (lab.client.clone(), lab.server.clone());
        let (c4, s4) = (lab.client_v4(), lab.server_v4());
        std::thread::spawn(move || {
            let rx = impair::netns::run_in(&server, move || std::net::UdpSocket::bind((s4, 0)))
                .unwrap()
                .unwrap();
            let tx = impair::netns::run_in(&client, move || std::net::UdpSocket::bind((c4, 0)))
                .unwrap()
                .unwrap();
            let to = rx.local_addr().unwrap();
            let cfg = impair_tools::probe::ProbeConfig {
                count: 20_000,
                rate_pps: 10_000,
                ..Default::default()
            };
            impair_tools::probe::run_pair(tx, rx, to, &cfg).unwrap()
        })
    };
    for loss in ["5%", "30%", "50%"] {
        std::thread::sleep(Duration::from_millis(300));
        ok(&impair_in(&lab.router, &["update", "r1", "--loss", loss]));
    }
    let during = sender.join().unwrap();
    let stats = stats_json(&lab);
    assert_eq!(stats["generation"], 4, "{stats}");
    assert_eq!(stats["errors"], 0, "{stats}");
    assert_eq!(stats["owner"]["label"], "loss 50%", "{stats}");
    assert!(during.lost > 0 && during.received > 0, "{during:?}");

    let r = probe(&lab, false, 0, 10_000, 200);
    assert_inside_99(0.50, r.lost, r.sent);
    let after = stats_json(&lab);
    let delta =
        |k: &str| after["rules"][0][k].as_u64().unwrap() - stats["rules"][0][k].as_u64().unwrap();
    assert_eq!(delta("packets"), r.sent, "{after}");
    assert_eq!(
        delta("dropped_loss"),
        r.sent - r.received,
        "engine drops == sent − received under the updated rules: {after}"
    );
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    assert_restored(&lab, &before);
}

#[test]
fn duration_reverts_by_itself() {
    let lab = lab("dur");
    let before = router_state(&lab);
    let mut ctl = Controller::start(&lab, &["--blackhole", "--duration", "2s"]);
    assert_eq!(probe(&lab, false, 0, 200, 200).received, 0, "blackholed");
    let t = Instant::now();
    let status = ctl.child.wait().unwrap();
    std::mem::forget(ctl);
    assert!(status.success(), "{status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "exited at the deadline"
    );
    assert_restored(&lab, &before);
    assert_eq!(probe(&lab, false, 0, 500, 200).lost, 0);
}

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
    let mut ctl = ctl;
    assert!(ctl.child.wait().unwrap().success());
    std::mem::forget(ctl);
    assert_restored(&lab, &before);
}

#[test]
fn a_pinned_attach_outlives_its_process_until_detach() {
    let lab = lab("pin");
    let before = router_state(&lab);
    let out = ok(&impair_in(
        &lab.router,
        &["attach", "r1", "--pin", "--loss", "50%", "--seed", "5"],
    ));
    assert!(out.contains("pinned"), "{out}");
    let r = probe(&lab, false, 0, 4_000, 200);
    assert_inside_99(0.50, r.lost, r.sent);
    let status = ok(&impair_in(&lab.router, &["status"]));
    assert!(
        status.contains("(pinned)") && status.contains("netlink"),
        "{status}"
    );
    let again = impair_in(&lab.router, &["attach", "r1", "--loss", "1%"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("pinned"));
    ok(&impair_in(&lab.router, &["update", "r1", "--loss", "100%"]));
    assert_eq!(
        probe(&lab, false, 0, 300, 200).received,
        0,
        "a pinned instance updates too"
    );
    let out = ok(&impair_in(&lab.router, &["detach", "r1"]));
    assert!(out.contains("removed the pinned instance"), "{out}");
    assert_restored(&lab, &before);
    assert_eq!(probe(&lab, false, 0, 1_000, 200).lost, 0);
}

#[test]
fn a_pinned_duration_ends_in_the_kernel_and_the_next_command_cleans_up() {
    let lab = lab("pindur");
    let before = router_state(&lab);
    ok(&impair_in(
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
fn repeated_match_flags_make_one_rule_per_combination() {
    let lab = lab("rep");
    let before = router_state(&lab);
    let ctl = Controller::start(
        &lab,
        &[
            "--blackhole",
            "--proto",
            "udp",
            "--dport",
            "40001",
            "--dport",
            "40003",
        ],
    );
    assert_eq!(probe(&lab, false, 40_001, 300, 200).received, 0);
    assert_eq!(probe(&lab, false, 40_002, 300, 200).lost, 0);
    assert_eq!(probe(&lab, false, 40_003, 300, 200).received, 0);
    let stats = stats_json(&lab);
    assert_eq!(stats["rules"].as_array().unwrap().len(), 2, "{stats}");
    assert_eq!(stats["rules"][0]["packets"], 300);
    assert_eq!(stats["rules"][1]["packets"], 300);
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    assert_restored(&lab, &before);
}

#[test]
fn sighup_and_sigint_revert_like_sigterm() {
    for sig in [libc::SIGHUP, libc::SIGINT] {
        let lab = lab(if sig == libc::SIGHUP { "hup" } else { "int" });
        let before = router_state(&lab);
        let ctl = Controller::start(&lab, &["--loss", "50%"]);
        assert!(ctl.signal_and_wait(sig).success(), "signal {sig}");
        assert_restored(&lab, &before);
        assert_eq!(probe(&lab, false, 0, 500, 200).lost, 0);
    }
}

#[test]
fn a_profile_file_with_several_rules_is_matched_in_order_at_the_receiver() {
    let lab = lab("pfile");
    let dir = Scratch::new("pfile");
    let path = dir.file(
        "two.toml",
        "summary = \"udp 40001 dark, the rest 10% loss\"\nsource = \"test\"\n\
         [[rule]]\nproto = \"udp\"\ndport = 40001\nblackhole = true\n\
         [[rule]]\nloss = \"10%\"\n",
    );
    let before = router_state(&lab);
    let ctl = Controller::start(&lab, &["--profile", &path, "--seed", "3"]);
    assert!(ctl.first_line.contains("two.toml"), "{}", ctl.first_line);
    assert_eq!(probe(&lab, false, 40_001, 500, 200).received, 0);
    let r = probe(&lab, false, 40_002, 10_000, 200);
    assert_inside_99(0.10, r.lost, r.sent);
    let stats = stats_json(&lab);
    assert_eq!(stats["rules"][0]["packets"], 500, "{stats}");
    assert_eq!(stats["rules"][1]["packets"], 10_000, "{stats}");
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    assert_restored(&lab, &before);
}

#[test]
fn a_scenario_steps_through_its_timeline_with_atomic_updates() {
    let lab = lab("scen");
    let dir = Scratch::new("scen");
    let path = dir.file(
        "outage.toml",
        "repeat = 1\n\
         [[step]]\nduration = \"2s\"\n[[step.rule]]\nblackhole = true\n\
         [[step]]\nduration = \"60s\"\n[[step.rule]]\nloss = \"0%\"\n",
    );
    let before = router_state(&lab);
    let ctl = Controller::start(&lab, &["--scenario", &path]);
    let t = Instant::now();
    assert_eq!(
        probe(&lab, false, 0, 300, 200).received,
        0,
        "step 1 is dark"
    );
    while t.elapsed() < Duration::from_millis(2500) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = probe(&lab, false, 0, 2_000, 200);
    assert_eq!(r.lost, 0, "step 2 passes everything: {r:?}");
    let stats = stats_json(&lab);
    assert_eq!(stats["generation"], 2, "{stats}");
    assert!(
        stats["owner"]["label"]
            .as_str()
            .unwrap()
            .starts_with("scenario step 2"),
        "{stats}"
    );
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    assert_restored(&lab, &before);
}

#[test]
fn stats_status_and_detach_all_cover_every_instance() {
    let lab = lab("all");
    let before = router_state(&lab);
    let before_r0 = lab
        .exec(
            &lab.router,
            &["tc", "qdisc", "show", "dev", lab::ROUTER_INGRESS],
        )
        .unwrap();
    let _egress = Controller::start(&lab, &["--loss", "1%"]);
    let _ingress = Controller::start_in(
        &lab.router,
        lab::ROUTER_INGRESS,
        &["--direction", "ingress", "--loss", "2%"],
    );
    let all: serde_json::Value =
        serde_json::from_str(&ok(&impair_in(&lab.router, &["stats", "--json"]))).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    let status = ok(&impair_in(&lab.router, &["status"]));
    assert_eq!(status.lines().count(), 2, "{status}");
    assert!(
        status.contains(" ago)") && status.contains("loss 1%") && status.contains("loss 2%"),
        "{status}"
    );
    let out = ok(&impair_in(&lab.router, &["detach", "--all"]));
    assert_eq!(out.lines().count(), 2, "{out}");
    assert_restored(&lab, &before);
    assert_eq!(
        lab.exec(
            &lab.router,
            &["tc", "qdisc", "show", "dev", lab::ROUTER_INGRESS]
        )
        .unwrap(),
        before_r0
    );
}

#[test]
fn metrics_are_served_in_prometheus_text() {
    let lab = lab("prom");
    let before = router_state(&lab);
    let ctl = Controller::start(&lab, &["--loss", "10%", "--metrics", "127.0.0.1:0"]);
    let addr = ctl
        .first_line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap_or_else(|| panic!("no metrics address in {}", ctl.first_line))
        .to_owned();
    let r = probe(&lab, false, 0, 1_000, 200);
    let body = impair::netns::run_in(&lab.router, move || {
        let mut c = TcpStream::connect(&addr).unwrap();
        write!(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    })
    .unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    let line = body
        .lines()
        .find(|l| l.starts_with("impair_rule_packets_total{"))
        .unwrap_or_else(|| panic!("{body}"));
    assert!(line.ends_with(&format!(" {}", r.sent)), "{line}");
    let dropped = body
        .lines()
        .find(|l| l.starts_with("impair_rule_dropped_loss_total{"))
        .unwrap();
    assert!(dropped.ends_with(&format!(" {}", r.lost)), "{dropped}");
    assert!(body.contains("# TYPE impair_rule_loss_measured_ratio gauge"));
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    assert_restored(&lab, &before);
}

/// `impair --netns NS ARGS`, run from this (the host's) namespace.
fn impair_netns(ns: &str, args: &[&str]) -> std::process::Output {
    Command::new(impair_bin())
        .args(["--netns", ns])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn netns_flag_works_from_outside_the_namespace() {
    let lab = lab("nsflag");
    let before = router_state(&lab);
    let mut child = Command::new(impair_bin())
        .args(["--netns", &lab.router, "attach", "r1", "--loss", "100%"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !impair_netns(&lab.router, &["stats", "r1"]).status.success() {
        assert!(Instant::now() < deadline, "attach --netns never came up");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(probe(&lab, false, 0, 200, 200).received, 0);
    ok(&impair_netns(&lab.router, &["detach", "r1"]));
    assert!(child.wait().unwrap().success());
    assert_restored(&lab, &before);
    let out = impair_netns("impair-no-such-ns", &["status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'impair-no-such-ns'"));
}

#[test]
fn doctor_reports_this_kernel_and_changes_nothing() {
    let lab = lab("doc");
    let before = router_state(&lab);
    let out = ok(&impair_in(&lab.router, &["doctor", "--json"]));
    let checks: serde_json::Value = serde_json::from_str(&out).unwrap();
    let get = |name: &str| {
        checks
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} check: {checks}"))
            .clone()
    };
    assert_eq!(get("verifier")["ok"], true, "{checks}");
    assert_eq!(get("clsact")["ok"], true, "{checks}");
    assert_eq!(get("xdp generic")["ok"], true, "{checks}");
    // The doctor's sch_fq answer must be the truth: try it on the lab.
    let fq = lab
        .exec(
            &lab.server,
            &["tc", "qdisc", "add", "dev", lab::SERVER_IF, "root", "fq"],
        )
        .is_ok();
    if fq {
        lab.exec(
            &lab.server,
            &["tc", "qdisc", "del", "dev", lab::SERVER_IF, "root"],
        )
        .unwrap();
    }
    assert_eq!(get("sch_fq")["ok"], fq, "{checks}");
    let tcx =
        aya::util::KernelVersion::current().unwrap() >= aya::util::KernelVersion::new(6, 6, 0);
    assert_eq!(get("tcx")["ok"], tcx);
    assert_eq!(router_state(&lab), before);
    let links = lab.exec(&lab.router, &["ip", "-o", "link"]).unwrap();
    assert!(
        !links.contains("doc0") && !links.contains("doc1"),
        "{links}"
    );
}

#[test]
fn profiles_list_show_completions_and_man() {
    let out = Command::new(impair_bin())
        .args(["profiles", "list", "--json"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for want in [
        "lossy",
        "wifi",
        "3g",
        "edge",
        "lte",
        "satellite",
        "dsl",
        "very-bad-network",
        "blackhole",
        "flaky",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|p| !p["source"].as_str().unwrap().is_empty()));
    let out = ok(&Command::new(impair_bin())
        .args(["profiles", "show", "flaky"])
        .output()
        .unwrap());
    assert!(
        out.contains("loss-model") && out.contains("# compiled:"),
        "{out}"
    );
    let out = ok(&Command::new(impair_bin())
        .args(["completions", "bash"])
        .output()
        .unwrap());
    assert!(
        out.contains("impair") && out.contains("--loss"),
        "{}",
        &out[..200.min(out.len())]
    );
    let out = ok(&Command::new(impair_bin()).arg("man").output().unwrap());
    assert!(
        out.starts_with(".ie") || out.contains(".TH impair"),
        "{}",
        &out[..200.min(out.len())]
    );
}

#[test]
fn bad_controller_input_is_one_clear_line_exit_2_and_changes_nothing() {
    let lab = lab("badctl");
    let dir = Scratch::new("badctl");
    let bad_toml = dir.file("bad.toml", "[[rule]]\nloss = \"1%\"\ndelay = \"fast\"\n");
    let bad_scen = dir.file(
        "s.toml",
        "[[step]]\nprofile = \"lossy\"\nduration = \"0s\"\n",
    );
    let before = router_state(&lab);
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["update", "r1", "--loss", "5%"], "not impaired".into()),
        (
            vec!["attach", "r1", "--loss", "1%", "--duration", "0"],
            "duration".into(),
        ),
        (
            vec!["attach", "r1", "--loss", "1%", "--duration", "soon"],
            "soon".into(),
        ),
        (
            vec!["attach", "r1", "--loss", "1%", "--metrics", "localhost"],
            "localhost".into(),
        ),
        (
            vec!["attach", "r1", "--profile", "/nonexistent/p.toml"],
            "/nonexistent/p.toml".into(),
        ),
        (
            vec!["attach", "r1", "--profile", &bad_toml],
            format!("{bad_toml}:3: delay:"),
        ),
        (
            vec!["attach", "r1", "--scenario", &bad_scen],
            format!("{bad_scen}:3: duration:"),
        ),
        (
            vec!["attach", "r1", "--profile", "lossy", "--loss", "2%"],
            "--profile".into(),
        ),
        (
            vec!["attach", "r1", "--direction", "ingress", "--delay", "10ms"],
            "--delay".into(),
        ),
        (vec!["detach", "--all"], "nothing to detach".into()),
        (
            vec![
                "attach",
                "r1",
                "--pin",
                "--loss",
                "1%",
                "--attach-mode",
                "tcx",
            ],
            "--pin".into(),
        ),
        (
            vec![
                "attach",
                "r1",
                "--pin",
                "--loss",
                "1%",
                "--direction",
                "ingress",
                "--hook",
                "xdp",
            ],
            "--pin".into(),
        ),
        (
            vec!["attach", "r1", "--netns", "impair-nope", "--loss", "1%"],
            "'impair-nope'".into(),
        ),
        (vec!["profiles", "show", "nope"], "'nope'".into()),
        (vec!["run", "--loss", "1%"], "CMD".into()),
        (
            vec!["run", "--iface", "nosuch0", "--loss", "1%", "--", "true"],
            "nosuch0".into(),
        ),
        (
            vec![
                "run",
                "--iface",
                "r1",
                "--loss",
                "1%",
                "--",
                "/nonexistent/cmd",
            ],
            "/nonexistent/cmd".into(),
        ),
    ];
    for (args, needle) in &cases {
        let out = impair_in(&lab.router, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(needle.as_str()),
            "{args:?}: the error must name '{needle}': {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    assert_eq!(router_state(&lab), before, "bad input changes nothing");
}

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
    if !kernel_has_fq(&lab) {
        impair_tests::note(
            "this kernel has no sch_fq: checking the refusal only; the VM tier (cargo xtask vm) \
             runs this test on kernels with fq",
        );
        let out = impair_in(&lab.router, &["update", "r1", "--delay", "30ms"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("sch_fq") && err.contains("nothing was changed"),
            "{err}"
        );
        assert_eq!(
            router_state(&lab),
            during,
            "a refused update changes nothing"
        );
        assert_eq!(stats_json(&lab)["generation"], 1);
    } else {
        ok(&impair_in(
            &lab.router,
            &["update", "r1", "--delay", "30ms"],
        ));
        assert!(
            router_state(&lab).contains("qdisc fq"),
            "fq installed as root"
        );
        let d = probe(&lab, false, 0, 300, 200).delay.expect("delay stats");
        assert!(d.min_ns >= 30_000_000, "{d:?}");
        ok(&impair_in(&lab.router, &["update", "r1", "--delay", "2s"]));
        let state = router_state(&lab);
        assert!(
            state.contains("horizon 3s"),
            "fq resized for 2 s (horizon = hold + 1 s): {state}"
        );
        ok(&impair_in(
            &lab.router,
            &["update", "r1", "--delay", "10ms"],
        ));
    }
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    assert_restored(&lab, &before);
}

/// Not a test of its own: `impair run` starts this test binary as CMD (see
/// `run_impairs_only_the_commands_traffic`). With `IMPAIR_TEST_SEND=ADDR,N`
/// it starts itself again as a child (children share the cgroup), which
/// sends N datagrams `cmd` to ADDR; the parent then exits with status 3.
#[test]
#[ignore = "a helper that `impair run` starts as CMD"]
fn helper_udp_sender() {
    let Ok(spec) = std::env::var("IMPAIR_TEST_SEND") else {
        return;
    };
    if std::env::var_os("IMPAIR_TEST_CHILD").is_none() {
        // CMD's lifetime, marked for the test: impair is attached throughout.
        let marks = std::env::var_os("IMPAIR_TEST_MARKS").map(std::path::PathBuf::from);
        if let Some(m) = &marks {
            std::fs::write(m.join("start"), b"").unwrap();
        }
        let st = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "helper_udp_sender", "--ignored", "--quiet"])
            .env("IMPAIR_TEST_CHILD", "1")
            .status()
            .unwrap();
        assert!(st.success());
        if let Some(m) = &marks {
            std::fs::write(m.join("end"), b"").unwrap();
        }
        std::process::exit(3);
    }
    let (addr, n) = spec.split_once(',').unwrap();
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..n.parse::<u32>().unwrap() {
        sock.send_to(b"cmd", addr).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn run_impairs_only_the_commands_traffic() {
    let lab = lab("run");
    let iface_before = lab
        .exec(&lab.client, &["tc", "qdisc", "show", "dev", lab::CLIENT_IF])
        .unwrap();
    let server = lab.server_v4();
    let rx = impair::netns::run_in(&lab.server, move || std::net::UdpSocket::bind((server, 0)))
        .unwrap()
        .unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let to = rx.local_addr().unwrap();
    let client = lab.client_v4();
    let tx = impair::netns::run_in(&lab.client, move || std::net::UdpSocket::bind((client, 0)))
        .unwrap()
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    let rx = std::sync::Arc::new(rx);
    let marks = Scratch::new("run-marks");
    let run = |loss: &str| {
        let (start, end) = (marks.0.join("start"), marks.0.join("end"));
        let _ = (std::fs::remove_file(&start), std::fs::remove_file(&end));
        // Count as they arrive: a socket buffer must not overflow meanwhile.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let counter = {
            let (rx, done) = (rx.clone(), done.clone());
            std::thread::spawn(move || {
                let (mut cmd, mut test) = (0, std::collections::BTreeSet::new());
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
                        Err(_) if done.load(std::sync::atomic::Ordering::Relaxed) => break,
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
            .env("IMPAIR_TEST_MARKS", &marks.0)
            .stdout(std::process::Stdio::null())
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
        done.store(true, std::sync::atomic::Ordering::Relaxed);
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
    let tcx =
        aya::util::KernelVersion::current().unwrap() >= aya::util::KernelVersion::new(6, 6, 0);
    if tcx {
        assert!(
            lost_outside.is_empty(),
            "tcx: attach and detach lose nothing of other traffic: lost {lost_outside:?}"
        );
    } else if !lost_outside.is_empty() {
        impair_tests::note(format!(
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

#[test]
fn not_root_is_one_clear_line_exit_2_and_changes_nothing() {
    let lab = lab("noroot");
    let util_linux_setpriv = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !util_linux_setpriv {
        impair_tests::note(
            "no util-linux setpriv(1) here (the VM has busybox's): the not-root refusals are checked on the host tier"
        );
        return;
    }
    let before = router_state(&lab);
    let bin = impair_bin();
    let bin = bin.to_str().unwrap();
    for args in [
        vec!["attach", "r1", "--loss", "1%"],
        vec!["update", "r1", "--loss", "1%"],
        vec!["run", "--iface", "r1", "--loss", "1%", "--", "true"],
    ] {
        let mut cmd = vec![
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            bin,
        ];
        cmd.extend(&args);
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.router])
            .args(&cmd)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("permission denied") && err.contains("root"),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    assert_eq!(router_state(&lab), before);
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
