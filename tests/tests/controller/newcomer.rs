//! What a tc, comcast or Network Link Conditioner user trips over in their
//! first minute (issue 17): `update` keeps what it is not told to change,
//! units and syntax brought from elsewhere get a clear line and a hint, a
//! closed pipe ends quietly, and `status` answers honestly across
//! namespaces.
use std::process::Command;

use impair_tests::{
    impair_bin,
    ns::{
        assert_refused, assert_restored, impair_in, lab, router_state, stats_json, stdout_ok,
        Controller,
    },
};

/// Attached with a narrow match, `update --loss 25%` changes the loss and
/// keeps the match and the other impairments, and prints the rule set;
/// `--replace` replaces it all; match flags alone are refused.
#[test]
fn update_keeps_the_match_and_what_it_does_not_set() {
    let lab = lab("updkeep");
    let before = router_state(&lab);
    let ctl = Controller::start(
        &lab,
        &[
            "--dst",
            "198.19.20.2/32",
            "--proto",
            "udp",
            "--dport",
            "5000-5010",
            "--loss",
            "10%",
            "--corrupt",
            "1%",
        ],
    );
    let out = stdout_ok(&impair_in(&lab.router, &["update", "r1", "--loss", "25%"]));
    assert!(
        out.contains("dst 198.19.20.2/32 udp dport 5000-5010: loss 25% corrupt 1%"),
        "update prints the resulting rule set: {out}"
    );
    let s = stats_json(&lab);
    assert_eq!(s["generation"], 2, "{s}");
    assert_eq!(
        s["rules"][0]["matches"], "dst 198.19.20.2/32 udp dport 5000-5010",
        "{s}"
    );
    assert_eq!(s["rules"][0]["loss"], 0.25, "the loss as given: {s}");
    assert!(
        s["rules"][0]["impairments"]
            .as_str()
            .is_some_and(|i| i.contains("corrupt 1%")),
        "{s}"
    );
    let refused = impair_in(
        &lab.router,
        &["update", "r1", "--dst", "198.19.0.0/16", "--loss", "1%"],
    );
    assert_refused("match flags without --replace", &refused, &["--replace"]);
    assert_eq!(
        stats_json(&lab)["generation"],
        2,
        "a refused update changes nothing"
    );
    stdout_ok(&impair_in(
        &lab.router,
        &["update", "r1", "--replace", "--loss", "5%"],
    ));
    let s = stats_json(&lab);
    assert_eq!(s["rules"][0]["matches"], "all", "{s}");
    assert_eq!(s["rules"][0]["impairments"], "loss 5%", "{s}");
    drop(ctl);
    assert_restored(&lab, &before);
}

/// Units and syntax from tc netem, comcast and NLC: one line, exit 2, a hint
/// that says what to write, and nothing changed.
#[test]
fn foreign_syntax_and_ambiguous_units_get_a_hint() {
    let lab = lab("newcomer");
    let before = router_state(&lab);
    let cases: &[(&[&str], &[&str])] = &[
        (&["attach", "r1", "--rate", "1000"], &["1000kbit", "unit"]),
        (
            &["attach", "r1", "--rate", "1mbit", "--queue", "100"],
            &["100p", "64kb"],
        ),
        (&["attach", "r1", "--lose", "5%"], &["--loss"]),
        (&["atach", "r1"], &["tip", "'attach'"]),
        (&["attach", "r1", "delay", "100ms"], &["--delay 100ms"]),
        (&["attach", "r1", "--loss", "10%", "25%"], &["--loss-model"]),
        (
            &["attach", "r1", "--dport", "80,443", "--loss", "1%"],
            &["repeat"],
        ),
        (
            &["attach", "r1", "--dport", "5000:5010", "--loss", "1%"],
            &["5000-5010"],
        ),
        (
            &["attach", "r1", "--blackhole", "--loss", "5%"],
            &["--loss", "--blackhole"],
        ),
        (
            &["attach", "r1", "--delay", "10ms", "--in-order"],
            &["--in-order", "--jitter"],
        ),
        (
            &["attach", "r1", "--jitter", "10ms"],
            &["--jitter", "--delay"],
        ),
        (
            &["attach", "r1", "--loss", "1%", "--loss-model", "ge:1%"],
            &["--loss", "--loss-model"],
        ),
        (
            &["attach", "r1", "--loss", "1%", "--queue", "10p"],
            &["--queue", "--rate"],
        ),
    ];
    for (args, needles) in cases {
        let out = impair_in(&lab.router, args);
        let err = assert_refused(&format!("{args:?}"), &out, needles);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
    }
    assert_eq!(router_state(&lab), before, "bad input changes nothing");
}

/// `impair completions bash | head` and `impair man | head`: the reader
/// closed the pipe early, which ends the output quietly (exit 0, no panic).
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let bin = impair_bin();
    for verb in ["completions bash", "man"] {
        let script = format!(
            "{} {verb} | head -c 1 >/dev/null; echo \"rc=${{PIPESTATUS[0]}}\"",
            bin.display()
        );
        let out = Command::new("bash").args(["-c", &script]).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stdout.contains("rc=0"), "{verb}: {stdout} {stderr}");
        assert!(!stderr.contains("panicked"), "{verb}: {stderr}");
    }
}

/// `detach --if-exists` with nothing attached is success, for cleanup
/// scripts; without it, still a usage error. `status` in another namespace
/// counts the instances elsewhere and, with --all-namespaces, names the
/// namespace and the interface.
#[test]
fn detach_if_exists_and_status_across_namespaces() {
    let lab = lab("honest");
    let out = impair_in(&lab.router, &["detach", "--all", "--if-exists"]);
    stdout_ok(&out);
    assert_refused(
        "detach without --if-exists",
        &impair_in(&lab.router, &["detach", "--all"]),
        &["nothing to detach"],
    );
    let ctl = Controller::start(&lab, &["--loss", "1%"]);
    let here = impair_in(&lab.client, &["status"]);
    assert!(
        String::from_utf8_lossy(&here.stderr).contains("more in other network namespaces"),
        "{}",
        String::from_utf8_lossy(&here.stderr)
    );
    let all = stdout_ok(&impair_in(&lab.client, &["status", "--all-namespaces"]));
    assert!(
        all.contains(&format!("r1 (netns {})", lab.router)),
        "the namespace and interface by name: {all}"
    );
    let missing = impair_in(&lab.client, &["attach", "r1", "--loss", "1%"]);
    assert_refused(
        "an interface of another namespace",
        &missing,
        &[&lab.router, "--netns"],
    );
    drop(ctl);
}

/// `attach --json` first says what it attached, with the metrics address
/// actually bound (`:0` picks the port) and the namespace it listens in.
#[test]
fn json_attach_says_where_its_metrics_listen() {
    let lab = lab("jsonmet");
    let before = router_state(&lab);
    let out = stdout_ok(&impair_in(
        &lab.router,
        &[
            "attach",
            "r1",
            "--loss",
            "1%",
            "--json",
            "--metrics",
            "127.0.0.1:0",
            "--duration",
            "1s",
            "--interval-ms",
            "200",
        ],
    ));
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["event"], "attached", "{first}");
    assert_eq!(first["interface"], "r1", "{first}");
    let url = first["metrics"].as_str().unwrap();
    let port: u16 = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/metrics")
        .parse()
        .unwrap();
    assert_ne!(port, 0, "the bound port, not 0: {url}");
    let snapshot: serde_json::Value = serde_json::from_str(out.lines().nth(1).unwrap()).unwrap();
    assert!(snapshot["rules"].is_array(), "then snapshots: {snapshot}");
    assert_restored(&lab, &before);
}

/// An update from another shell shows in the attach's live view (a line
/// with the new generation and rules) and in text `stats` (the generation).
#[test]
fn an_update_shows_in_the_live_view_and_in_stats() {
    let lab = lab("liveupd");
    let before = router_state(&lab);
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.router])
        .arg(impair_bin())
        .args([
            "attach",
            "r1",
            "--loss",
            "10%",
            "--interval-ms",
            "100",
            "--duration",
            "4s",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it is attached (its instance shows in status).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !stdout_ok(&impair_in(&lab.router, &["status"])).contains("r1 tc-egress") {
        assert!(std::time::Instant::now() < deadline, "never attached");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    stdout_ok(&impair_in(&lab.router, &["update", "r1", "--loss", "20%"]));
    let stats = stdout_ok(&impair_in(&lab.router, &["stats", "r1"]));
    assert!(
        stats.contains("generation 2"),
        "text stats shows the generation: {stats}"
    );
    let out = child.wait_with_output().unwrap();
    let view = String::from_utf8_lossy(&out.stdout);
    assert!(
        view.contains("impair: updated (generation 2): loss 20%"),
        "the live view announces the update: {view}"
    );
    assert_restored(&lab, &before);
}
