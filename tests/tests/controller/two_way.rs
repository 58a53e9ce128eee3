//! Two-way profiles on a host (issue 12, item 3 and 5): the server's `s0` is
//! the host; a profile's downlink is what it receives (client → server,
//! tc ingress), its uplink what it sends (server → client, tc egress). Each
//! direction is measured at its receiver with the probe, with impairments
//! the ingress hook has on every kernel (loss, blackhole), so this runs on
//! the host; delay and rate each way are the VM tier's (fq, ifb).
use std::time::{Duration, Instant};

use impair::netns;
use impair_tests::{
    ns::{assert_refused, impair_in, lab, probe, stats_json_in, stdout_ok, Controller, Site},
    stats::assert_inside_suite,
    Scratch,
};
use impair_tools::{
    lab::{Lab, SERVER_IF},
    probe::{run_pair, ProbeConfig, ProbeReport},
};

/// `count` probe datagrams server → client: what the host (server) sends.
pub(super) fn probe_uplink(lab: &Lab, count: u64) -> ProbeReport {
    let (src, dst) = (lab.server_v4(), lab.client_v4());
    let rx = netns::run_in(&lab.client, move || {
        std::net::UdpSocket::bind((std::net::IpAddr::from(dst), 0))
    })
    .unwrap()
    .unwrap();
    let tx = netns::run_in(&lab.server, move || {
        std::net::UdpSocket::bind((std::net::IpAddr::from(src), 0))
    })
    .unwrap()
    .unwrap();
    let to = rx.local_addr().unwrap();
    let cfg = ProbeConfig {
        count,
        rate_pps: 20_000,
        payload_len: 200,
        ..Default::default()
    };
    run_pair(tx, rx, to, &cfg).unwrap()
}

/// `count` probe datagrams client → server: what the host receives.
pub(super) fn probe_downlink(lab: &Lab, count: u64) -> ProbeReport {
    probe(lab, false, 0, count, 200)
}

const TWO_WAY: &str = "summary = \"test link\"\nsource = \"test\"\n\
     [[downlink.rule]]\nloss = \"30%\"\n\
     [[uplink.rule]]\nloss = \"10%\"\n";

/// `impair stats s0 --json` of a two-way link: both instances, uplink first.
pub(super) fn link_stats(lab: &Lab) -> Vec<serde_json::Value> {
    let v = stats_json_in(&lab.server, SERVER_IF, &[]);
    v.as_array()
        .unwrap_or_else(|| panic!("a two-way link shows both instances: {v}"))
        .clone()
}

#[test]
fn a_two_way_profile_impairs_each_direction_and_flip_swaps_them() {
    let lab = lab("2way");
    let dir = Scratch::new("2way");
    let path = dir.file("link.toml", TWO_WAY);
    let site = Site::ServerIngress;
    let before = site.state(&lab);

    for (flip, down, up) in [(false, 0.30, 0.10), (true, 0.10, 0.30)] {
        let mut args = vec!["--profile", path.as_str(), "--seed", "11"];
        if flip {
            args.push("--flip");
        }
        let ctl = Controller::start_in(&lab.server, SERVER_IF, &args);
        assert!(
            ctl.first_line.contains("uplink (sent) at tc-egress")
                && ctl.first_line.contains("downlink (received) at tc-ingress"),
            "{}",
            ctl.first_line
        );
        let d = probe_downlink(&lab, 10_000);
        assert_inside_suite(down, d.lost, d.sent);
        let u = probe_uplink(&lab, 10_000);
        assert_inside_suite(up, u.lost, u.sent);

        let stats = link_stats(&lab);
        assert_eq!(stats.len(), 2, "{stats:?}");
        assert_eq!(stats[0]["direction"], "egress");
        assert_eq!(stats[0]["hook"], "tc-egress");
        assert_eq!(stats[1]["direction"], "ingress");
        assert_eq!(stats[1]["hook"], "tc-ingress");
        assert!(
            stats[0]["owner"]["label"]
                .as_str()
                .unwrap()
                .ends_with(", uplink"),
            "{stats:?}"
        );
        assert_eq!(stats[0]["owner"]["pid"], stats[1]["owner"]["pid"]);
        // The downlink's seed is the uplink's + 1: independent draws.
        assert_eq!(stats[0]["owner"]["seed"], 11);
        assert_eq!(stats[1]["owner"]["seed"], 12);
        // Each instance counted its own direction's probes (and nothing
        // else of note: ARP and neighbour discovery are unmatched or few).
        assert!(stats[1]["rules"][0]["packets"].as_u64().unwrap() >= 10_000);
        assert!(stats[0]["rules"][0]["packets"].as_u64().unwrap() >= 10_000);
        let text = stdout_ok(&impair_in(&lab.server, &["status"]));
        assert_eq!(text.lines().count(), 2, "two instances: {text}");

        // `impair detach s0` stops the controller once and restores both.
        stdout_ok(&impair_in(&lab.server, &["detach", SERVER_IF]));
        assert!(ctl.wait().success());
        site.assert_restored(&lab, &before);
    }
}

#[test]
fn update_switches_both_directions_of_a_link() {
    let lab = lab("2wayup");
    let dir = Scratch::new("2wayup");
    let path = dir.file("link.toml", TWO_WAY);
    let dark_down = dir.file(
        "dark.toml",
        "[[rule]]\ndirection = \"downlink\"\nblackhole = true\n\
         [[rule]]\ndirection = \"uplink\"\nloss = \"0%\"\n",
    );
    let site = Site::ServerIngress;
    let before = site.state(&lab);
    let ctl = Controller::start_in(&lab.server, SERVER_IF, &["--profile", &path]);

    let out = stdout_ok(&impair_in(
        &lab.server,
        &["update", SERVER_IF, "--profile", &dark_down],
    ));
    assert!(
        out.contains("tc-egress") && out.contains("tc-ingress"),
        "both instances updated: {out}"
    );
    assert_eq!(probe_downlink(&lab, 500).received, 0, "downlink dark");
    assert_eq!(probe_uplink(&lab, 2_000).lost, 0, "uplink clear");
    for s in link_stats(&lab) {
        assert_eq!(s["generation"], 2, "{s}");
    }
    // --flip: the blackhole is now on what the host sends.
    stdout_ok(&impair_in(
        &lab.server,
        &["update", SERVER_IF, "--profile", &dark_down, "--flip"],
    ));
    assert_eq!(probe_uplink(&lab, 500).received, 0, "uplink dark");
    assert_eq!(probe_downlink(&lab, 2_000).lost, 0, "downlink clear");
    // Flags change both sides of the link (here: the same whole rule).
    stdout_ok(&impair_in(
        &lab.server,
        &["update", SERVER_IF, "--replace", "--loss", "20%"],
    ));
    let d = probe_downlink(&lab, 10_000);
    assert_inside_suite(0.20, d.lost, d.sent);
    let u = probe_uplink(&lab, 10_000);
    assert_inside_suite(0.20, u.lost, u.sent);
    // One side only.
    stdout_ok(&impair_in(
        &lab.server,
        &[
            "update",
            SERVER_IF,
            "--direction",
            "ingress",
            "--replace",
            "--loss",
            "0%",
        ],
    ));
    assert_eq!(probe_downlink(&lab, 2_000).lost, 0);
    let stats = link_stats(&lab);
    assert_eq!(stats[0]["generation"], 4, "{stats:?}");
    assert_eq!(stats[1]["generation"], 5, "{stats:?}");
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    site.assert_restored(&lab, &before);
}

#[test]
fn a_two_way_scenario_switches_both_directions_together() {
    let lab = lab("2waysc");
    let dir = Scratch::new("2waysc");
    let path = dir.file(
        "s.toml",
        "[[step]]\nduration = \"2s\"\n[[step.rule]]\ndirection = \"both\"\nblackhole = true\n\
         [[step]]\nduration = \"60s\"\n[[step.uplink.rule]]\nloss = \"0%\"\n\
         [[step.downlink.rule]]\nloss = \"0%\"\n",
    );
    let site = Site::ServerIngress;
    let before = site.state(&lab);
    let ctl = Controller::start_in(&lab.server, SERVER_IF, &["--scenario", &path]);
    let t = Instant::now();
    assert_eq!(probe_downlink(&lab, 300).received, 0, "step 1: down dark");
    assert_eq!(probe_uplink(&lab, 300).received, 0, "step 1: up dark");
    while t.elapsed() < Duration::from_millis(2500) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(probe_downlink(&lab, 2_000).lost, 0, "step 2: down clear");
    assert_eq!(probe_uplink(&lab, 2_000).lost, 0, "step 2: up clear");
    for s in link_stats(&lab) {
        assert_eq!(s["generation"], 2, "{s}");
        assert!(
            s["owner"]["label"]
                .as_str()
                .unwrap()
                .starts_with("scenario step 2"),
            "{s}"
        );
    }
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    site.assert_restored(&lab, &before);
}

/// Bad combinations: one line, exit code 2, nothing changed.
#[test]
fn bad_two_way_combinations_are_refused_exit_2_and_change_nothing() {
    let lab = lab("2waybad");
    let dir = Scratch::new("2waybad");
    let link = dir.file("link.toml", TWO_WAY);
    let one_way = dir.file("one.toml", "[[rule]]\nloss = \"1%\"\n");
    let down_only = dir.file("down.toml", "[[downlink.rule]]\nloss = \"1%\"\n");
    let down_delay = dir.file(
        "dd.toml",
        "[[downlink.rule]]\ndelay = \"10ms\"\n[[uplink.rule]]\nloss = \"1%\"\n",
    );
    let bad_dir = dir.file("bd.toml", "[[rule]]\ndirection = \"down\"\nloss = \"1%\"\n");
    let site = Site::ServerIngress;
    let before = site.state(&lab);
    fn attach<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        [&["attach", SERVER_IF][..], extra].concat()
    }
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            attach(&["--loss", "1%", "--flip"]),
            vec!["--flip", "two-way"],
        ),
        (
            attach(&["--profile", &one_way, "--flip"]),
            vec!["--flip", "one direction"],
        ),
        (
            attach(&["--profile", &down_only, "--direction", "egress"]),
            vec!["no uplink rules"],
        ),
        (
            attach(&["--profile", &link, "--direction", "egress", "--hook", "xdp"]),
            vec!["--hook xdp"],
        ),
        // XDP cannot hold a received packet: a downlink delay there is refused
        // naming the side.
        (
            attach(&["--profile", &down_delay, "--hook", "xdp"]),
            vec!["downlink", "--delay"],
        ),
        (
            attach(&["--profile", &link, "--xdp-mode", "native"]),
            vec!["--xdp-mode"],
        ),
        (
            attach(&["--profile", &bad_dir]),
            vec!["bd.toml:2: direction"],
        ),
        (
            vec!["update", SERVER_IF, "--loss", "1%", "--flip"],
            vec!["--flip"],
        ),
    ];
    for (args, needles) in &cases {
        let err = assert_refused(&format!("{args:?}"), &impair_in(&lab.server, args), needles);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
    }
    assert_eq!(site.state(&lab), before, "bad input changes nothing");
}

/// Prometheus: each instance's samples carry `direction`, and each counts
/// exactly its own direction's probes (`--proto udp` applies to both sides).
#[test]
fn prometheus_reports_each_direction_of_a_link() {
    use std::io::{Read as _, Write as _};
    let lab = lab("2wayprom");
    let dir = Scratch::new("2wayprom");
    let path = dir.file("link.toml", TWO_WAY);
    let site = Site::ServerIngress;
    let before = site.state(&lab);
    let ctl = Controller::start_in(
        &lab.server,
        SERVER_IF,
        &[
            "--profile",
            &path,
            "--proto",
            "udp",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let addr = ctl
        .first_line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap_or_else(|| panic!("no metrics address in {}", ctl.first_line))
        .to_owned();
    let d = probe_downlink(&lab, 2_000);
    let u = probe_uplink(&lab, 3_000);
    let body = netns::run_in(&lab.server, move || {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        write!(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    })
    .unwrap();
    let sample = |name: &str, direction: &str| -> u64 {
        let line = body
            .lines()
            .find(|l| {
                l.starts_with(&format!("{name}{{"))
                    && l.contains(&format!("direction=\"{direction}\""))
            })
            .unwrap_or_else(|| panic!("no {name} for {direction}: {body}"));
        line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64
    };
    assert_eq!(sample("impair_rule_packets_total", "ingress"), d.sent);
    assert_eq!(sample("impair_rule_dropped_loss_total", "ingress"), d.lost);
    assert_eq!(sample("impair_rule_packets_total", "egress"), u.sent);
    assert_eq!(sample("impair_rule_dropped_loss_total", "egress"), u.lost);
    assert!(
        body.contains("hook=\"tc-ingress\",direction=\"ingress\"")
            && body.contains("hook=\"tc-egress\",direction=\"egress\""),
        "{body}"
    );
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    site.assert_restored(&lab, &before);
}

/// `--pin` keeps both sides of a link after the command returns; `impair
/// detach` removes both and restores the interface.
#[test]
fn a_pinned_two_way_link_is_detached_whole() {
    let lab = lab("2waypin");
    let dir = Scratch::new("2waypin");
    let path = dir.file(
        "dark.toml",
        "[[rule]]\ndirection = \"both\"\nproto = \"udp\"\nblackhole = true\n",
    );
    let site = Site::ServerIngress;
    let before = site.state(&lab);
    let out = stdout_ok(&impair_in(
        &lab.server,
        &["attach", SERVER_IF, "--profile", &path, "--pin"],
    ));
    assert!(
        out.contains("pinned") && out.contains("tc-egress") && out.contains("tc-ingress"),
        "{out}"
    );
    assert_eq!(probe_downlink(&lab, 300).received, 0, "downlink dark");
    assert_eq!(probe_uplink(&lab, 300).received, 0, "uplink dark");
    let stats = link_stats(&lab);
    assert!(
        stats.iter().all(|s| s["owner"]["pinned"] == true),
        "{stats:?}"
    );
    stdout_ok(&impair_in(&lab.server, &["detach", SERVER_IF]));
    site.assert_restored(&lab, &before);
    assert_eq!(probe_downlink(&lab, 300).lost, 0);
    assert_eq!(probe_uplink(&lab, 300).lost, 0);

    // With --duration: the kernel ends both sides at the deadline, and the
    // next impair command removes both.
    stdout_ok(&impair_in(
        &lab.server,
        &[
            "attach",
            SERVER_IF,
            "--profile",
            &path,
            "--pin",
            "--duration",
            "1s",
        ],
    ));
    std::thread::sleep(Duration::from_millis(1_500));
    let status = impair_in(&lab.server, &["status"]);
    let err = String::from_utf8_lossy(&status.stderr).into_owned();
    assert!(
        err.matches("removed the pinned instance").count() == 2,
        "both sides removed: {err}"
    );
    site.assert_restored(&lab, &before);
}

/// When the second side cannot attach (here: another controller already
/// impairs received traffic), the first is undone: exit code 2 naming the
/// owner, and the interface exactly as it was with the other instance.
#[test]
fn a_link_whose_downlink_cannot_attach_undoes_its_uplink() {
    let lab = lab("2wayundo");
    let dir = Scratch::new("2wayundo");
    let path = dir.file("link.toml", TWO_WAY);
    let site = Site::ServerIngress;
    let before = site.state(&lab);
    let other = site.attach(&lab, &["--loss", "1%"]);
    let during = site.state(&lab);
    let out = impair_in(&lab.server, &["attach", SERVER_IF, "--profile", &path]);
    assert_refused(
        "a second ingress",
        &out,
        &["already impaired", &format!("pid {}", other.pid())],
    );
    assert_eq!(site.state(&lab), during, "the uplink was undone");
    let status = stdout_ok(&impair_in(&lab.server, &["status"]));
    assert_eq!(
        status.lines().count(),
        1,
        "only the other instance: {status}"
    );
    assert!(other.signal_and_wait(libc::SIGTERM).success());
    site.assert_restored(&lab, &before);
}
