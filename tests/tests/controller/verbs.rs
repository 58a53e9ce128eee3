//! Every controller verb, alike on every kernel: `update` under traffic,
//! `--duration` ending by itself, repeated match flags, signals, profile
//! files, scenarios, `stats`/`status`/`detach --all`, Prometheus metrics,
//! `--netns` from outside, `doctor` against the truth, profiles, completions
//! and man pages, and bad input and not-root refusals.
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use impair_tests::{
    impair_bin,
    kernel::{has_qdisc, has_tcx},
    note,
    ns::{
        assert_refused, assert_restored, impair_in, lab, probe, router_state, socket_pair,
        stats_json, stdout_ok, Controller,
    },
    stats::assert_inside_suite,
    Scratch,
};
use impair_tools::{
    lab,
    probe::{run_pair, ProbeConfig},
};

#[test]
fn update_changes_the_rules_atomically_under_traffic() {
    let lab = lab("upd");
    let before = router_state(&lab);
    let ctl = Controller::start(&lab, &["--loss", "2%", "--seed", "7"]);
    let r = probe(&lab, false, 0, 10_000, 200);
    assert_inside_suite(0.02, r.lost, r.sent);

    // Updates while traffic flows: every packet is counted by exactly one
    // rule set, none is lost to the swap, and the data path never errs.
    let sender = {
        let (tx, rx, to) = socket_pair(&lab, false, 0);
        std::thread::spawn(move || {
            let cfg = ProbeConfig {
                count: 20_000,
                rate_pps: 10_000,
                ..Default::default()
            };
            run_pair(tx, rx, to, &cfg).unwrap()
        })
    };
    for loss in ["5%", "30%", "50%"] {
        std::thread::sleep(Duration::from_millis(300));
        stdout_ok(&impair_in(&lab.router, &["update", "r1", "--loss", loss]));
    }
    let during = sender.join().unwrap();
    let stats = stats_json(&lab);
    assert_eq!(stats["generation"], 4, "{stats}");
    assert_eq!(stats["errors"], 0, "{stats}");
    assert_eq!(stats["owner"]["label"], "loss 50%", "{stats}");
    assert!(during.lost > 0 && during.received > 0, "{during:?}");

    let r = probe(&lab, false, 0, 10_000, 200);
    assert_inside_suite(0.50, r.lost, r.sent);
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
    let ctl = Controller::start(&lab, &["--blackhole", "--duration", "2s"]);
    assert_eq!(probe(&lab, false, 0, 200, 200).received, 0, "blackholed");
    let t = Instant::now();
    let status = ctl.wait();
    assert!(status.success(), "{status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "exited at the deadline"
    );
    assert_restored(&lab, &before);
    assert_eq!(probe(&lab, false, 0, 500, 200).lost, 0);
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
    assert_inside_suite(0.10, r.lost, r.sent);
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
        serde_json::from_str(&stdout_ok(&impair_in(&lab.router, &["stats", "--json"]))).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    let status = stdout_ok(&impair_in(&lab.router, &["status"]));
    assert_eq!(status.lines().count(), 2, "{status}");
    assert!(
        status.contains(" ago)") && status.contains("loss 1%") && status.contains("loss 2%"),
        "{status}"
    );
    let out = stdout_ok(&impair_in(&lab.router, &["detach", "--all"]));
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
    assert!(
        body.contains("# TYPE impair_errors_by_cause_total counter")
            && body.contains("cause=\"clone_redirect\"} 0"),
        "errors by cause: {body}"
    );
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    assert_restored(&lab, &before);
}

/// `impair --netns NS ARGS`, run from this (the host's) namespace.
fn impair_netns(ns: &str, args: &[&str]) -> Output {
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
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !impair_netns(&lab.router, &["stats", "r1"]).status.success() {
        assert!(Instant::now() < deadline, "attach --netns never came up");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(probe(&lab, false, 0, 200, 200).received, 0);
    stdout_ok(&impair_netns(&lab.router, &["detach", "r1"]));
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
    let out = stdout_ok(&impair_in(&lab.router, &["doctor", "--json"]));
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
    let fq = has_qdisc(&lab, "fq");
    assert_eq!(get("sch_fq")["ok"], fq, "{checks}");
    assert_eq!(get("tcx")["ok"], has_tcx(), "{checks}");
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
    let list: serde_json::Value = serde_json::from_str(&stdout_ok(&out)).unwrap();
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
    let out = stdout_ok(
        &Command::new(impair_bin())
            .args(["profiles", "show", "flaky"])
            .output()
            .unwrap(),
    );
    assert!(
        out.contains("loss-model") && out.contains("# compiled:"),
        "{out}"
    );
    let out = stdout_ok(
        &Command::new(impair_bin())
            .args(["completions", "bash"])
            .output()
            .unwrap(),
    );
    assert!(
        out.contains("impair") && out.contains("--loss"),
        "{}",
        &out[..200.min(out.len())]
    );
    let out = stdout_ok(&Command::new(impair_bin()).arg("man").output().unwrap());
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
        // Received traffic is held through an ifb at tc ingress (issue 12);
        // one rule set on both directions, and XDP, still cannot hold it.
        (
            vec!["attach", "r1", "--direction", "both", "--delay", "10ms"],
            "--delay".into(),
        ),
        (
            vec![
                "attach",
                "r1",
                "--direction",
                "ingress",
                "--hook",
                "xdp",
                "--delay",
                "10ms",
            ],
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
        let err = assert_refused(
            &format!("{args:?}"),
            &impair_in(&lab.router, args),
            &[needle.as_str()],
        );
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
    }
    assert_eq!(router_state(&lab), before, "bad input changes nothing");
}

#[test]
fn not_root_is_one_clear_line_exit_2_and_changes_nothing() {
    let lab = lab("noroot");
    let util_linux_setpriv = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !util_linux_setpriv {
        note(
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
        vec!["status"],
        vec!["stats", "r1"],
        vec!["detach", "r1"],
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
