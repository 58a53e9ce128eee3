//! Issue 16's record of impaired packets: `impair capture IFACE -w FILE` and
//! `attach --capture FILE` write each packet a rule dropped, duplicated (...)
//! with its decision as the packet's pcapng comment. tshark (Debian's, from
//! `cargo xtask setup`) reads the file back; the decisions in it equal the
//! rule counters' changes over the capture, and over the per-CPU budget the
//! records plus the "not recorded" counts equal them exactly. `impair stats`
//! (text, JSON) and Prometheus show the same counts as the file holds; a
//! two-way link's capture holds both directions, each record saying which.
use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use impair_tests::{
    impair_bin, note,
    ns::{
        assert_restored, impair_in, lab, probe, router_state, stats_json, stats_json_in, stdout_ok,
        Controller, Site,
    },
    Scratch,
};
use impair_tools::{
    lab::{Lab, SERVER_IF},
    probe::{run_pair, ProbeConfig, ProbeReport},
};

/// The probe's destination port; the rules match it alone, so the lab's
/// own packets (neighbour discovery, router solicitations) are never
/// impaired, counted or recorded.
const PORT: u16 = 47_016;

/// Each packet of `file` as tshark reads it: its comment and UDP
/// destination port. Fails loudly if tshark is missing or cannot read it,
/// except in the VM guest, which carries no tshark: there the test's own
/// reader ([`read_pcapng`]) reads it, with a NOTE.
fn tshark(file: &Path) -> Vec<(String, String)> {
    let run = Command::new("tshark")
        .args(["-r"])
        .arg(file)
        .args(["-T", "fields", "-E", "separator=|"])
        .args(["-e", "frame.comment", "-e", "udp.dstport"])
        .output();
    let out = match run {
        Err(e) if std::env::var_os("IMPAIR_VM_GUEST").is_some() => {
            note(format!(
                "tshark is not in the VM guest ({e}): the capture is read by the test's own pcapng reader"
            ));
            return read_pcapng(file);
        }
        other => {
            other.expect("running tshark (installed by `cargo xtask setup`: Debian package tshark)")
        }
    };
    assert!(
        out.status.success(),
        "tshark could not read {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (c, p) = l.split_once('|').unwrap_or((l, ""));
            (c.to_owned(), p.to_owned())
        })
        .collect()
}

/// [`tshark`]'s fields, read without it: each enhanced packet block's
/// comment option and the UDP destination port of its IPv4 frame.
fn read_pcapng(file: &Path) -> Vec<(String, String)> {
    let b = std::fs::read(file).unwrap();
    let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]) as usize;
    let u32_at = |i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().unwrap()) as usize;
    let mut out = Vec::new();
    let mut at = 0;
    while at + 12 <= b.len() {
        let (kind, total) = (u32_at(at), u32_at(at + 4));
        assert!(
            total >= 12 && at + total <= b.len(),
            "a block overruns the file"
        );
        if kind == 6 {
            let caplen = u32_at(at + 20);
            let data = &b[at + 28..at + 28 + caplen];
            let mut opt = at + 28 + caplen.next_multiple_of(4);
            let mut comment = String::new();
            while opt + 4 <= at + total - 4 {
                let (code, len) = (u16_at(opt), u16_at(opt + 2));
                if code == 0 {
                    break;
                }
                if code == 1 {
                    comment = String::from_utf8_lossy(&b[opt + 4..opt + 4 + len]).into_owned();
                }
                opt += 4 + len.next_multiple_of(4);
            }
            // Ethernet, IPv4 (IHL words), UDP: the destination port.
            let l4 = 14 + usize::from(data[14] & 0x0f) * 4;
            let port = u16::from_be_bytes([data[l4 + 2], data[l4 + 3]]);
            out.push((comment, port.to_string()));
        }
        at += total;
    }
    out
}

/// How many of `comments` name each action (`actions=a,b` counts once for
/// each); also checks every comment's rule and hook.
fn actions(packets: &[(String, String)], hook: &str) -> BTreeMap<String, u64> {
    let mut n = BTreeMap::new();
    for (comment, port) in packets {
        assert_eq!(port, &PORT.to_string(), "a probe datagram: {comment}");
        assert!(
            comment.starts_with("impair rule=0 actions=")
                && comment.contains(&format!(" hook={hook}")),
            "{comment}"
        );
        let list = comment
            .split(' ')
            .find_map(|f| f.strip_prefix("actions="))
            .unwrap();
        for a in list.split(',') {
            *n.entry(a.to_owned()).or_default() += 1;
        }
    }
    n
}

/// Rule 0's counter `field` in a stats document.
fn rule0(stats: &serde_json::Value, field: &str) -> u64 {
    stats["rules"][0][field].as_u64().unwrap()
}

/// `impair capture r1 -w FILE --json EXTRA` in the router, started (it has
/// said so on stderr); `finish` stops it and returns its summary.
struct Capturing {
    child: std::process::Child,
}

impl Capturing {
    fn start(lab: &impair_tools::lab::Lab, file: &Path, extra: &[&str]) -> Self {
        Self::start_in(&lab.router, "r1", file, extra)
    }

    /// `impair capture IFACE -w FILE --json EXTRA` in namespace `ns`.
    fn start_in(ns: &str, iface: &str, file: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(impair_bin())
            .args(["capture", iface, "--json", "-w"])
            .arg(file)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning impair capture");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) if l.contains("capturing") => Self { child },
            other => {
                let _ = child.kill();
                panic!("impair capture did not start: {other:?}");
            }
        }
    }

    fn finish(mut self) -> serde_json::Value {
        // SAFETY: kill(2) on our own child (`ip netns exec` execs impair).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let out = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap())
            .wait_with_output()
            .unwrap();
        assert!(out.status.success(), "impair capture: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Capturing {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn capture_writes_each_decision_and_they_equal_the_counters() {
    let lab = lab("capture");
    let before = router_state(&lab);
    let port = PORT.to_string();
    let ctl = Controller::start(
        &lab,
        &[
            "--loss",
            "30%",
            "--duplicate",
            "10%",
            "--proto",
            "udp",
            "--dport",
            &port,
            "--seed",
            "16",
        ],
    );
    let scratch = Scratch::new("capture");
    let file = scratch.path().join("impaired.pcapng");
    let s0 = stats_json(&lab);
    let cap = Capturing::start(&lab, &file, &[]);
    let r = probe(&lab, false, PORT, 2_000, 200);
    let summary = cap.finish();
    let s1 = stats_json(&lab);
    let lost = rule0(&s1, "dropped_loss") - rule0(&s0, "dropped_loss");
    let duplicated = rule0(&s1, "duplicated") - rule0(&s0, "duplicated");
    assert!(lost > 400 && duplicated > 100, "{s1}");

    let packets = tshark(&file);
    let n = packets.len() as u64;
    assert_eq!(summary["written"], n, "{summary}");
    assert_eq!(summary["recorded"], n, "{summary}");
    assert_eq!(summary["over_budget"], 0, "under the budget: {summary}");
    assert_eq!(summary["ring_full"], 0, "{summary}");
    let by_action = actions(&packets, "tc-egress");
    assert_eq!(by_action.get("drop-loss").copied().unwrap_or(0), lost);
    assert_eq!(by_action.get("duplicate").copied().unwrap_or(0), duplicated);
    assert_eq!(by_action.len(), 2, "nothing else: {by_action:?}");
    // A datagram both lost and duplicated leaves once (as the duplicate):
    // the receiver misses exactly those recorded as lost alone.
    let lost_alone = packets
        .iter()
        .filter(|(c, _)| c.contains("actions=drop-loss "))
        .count() as u64;
    assert_eq!(r.lost, lost_alone, "{r:?}");

    assert!(ctl.signal_and_wait(libc::SIGINT).success());
    assert_restored(&lab, &before);
}

#[test]
fn over_the_budget_what_is_not_recorded_is_counted_exactly() {
    let lab = lab("capbudget");
    let port = PORT.to_string();
    let _ctl = Controller::start(
        &lab,
        &["--loss", "100%", "--proto", "udp", "--dport", &port],
    );
    let scratch = Scratch::new("capbudget");
    let file = scratch.path().join("impaired.pcapng");
    let s0 = stats_json(&lab);
    let cap = Capturing::start(&lab, &file, &["--max-pps", "20"]);
    probe(&lab, false, PORT, 3_000, 200);
    let during = stats_json(&lab);
    let summary = cap.finish();
    let s1 = stats_json(&lab);
    let lost = rule0(&s1, "dropped_loss") - rule0(&s0, "dropped_loss");
    assert_eq!(lost, 3_000);
    let n = tshark(&file).len() as u64;
    let u = |k: &str| summary[k].as_u64().unwrap();
    assert_eq!(u("written"), n, "{summary}");
    assert_eq!(u("recorded"), n, "{summary}");
    assert!(u("over_budget") > 0, "{summary}");
    assert_eq!(
        n + u("over_budget") + u("ring_full"),
        lost,
        "every decision is recorded or counted: {summary}"
    );
    // A second's burst plus 20 per second, per CPU.
    let cpus = std::thread::available_parallelism().unwrap().get() as u64;
    assert!(n <= cpus * 20 * 3, "{n} records on {cpus} CPUs: {summary}");
    // `impair stats` shows the same counts (the instance's first capture),
    // and whether a capture records: on while it ran, off after.
    let c = &during["capture"];
    assert_eq!(c["active"], true, "{during}");
    assert_eq!(c["max_per_cpu_per_sec"], 20, "{during}");
    let c = &s1["capture"];
    assert_eq!(c["active"], false, "{s1}");
    assert_eq!(c["recorded"], n, "{s1}");
    assert_eq!(c["over_budget"], summary["over_budget"], "{s1}");
    assert_eq!(c["ring_full"], summary["ring_full"], "{s1}");
}

/// GET /metrics from `addr` (the controller's, in namespace `ns`).
fn scrape(ns: &str, addr: &str) -> String {
    let addr = addr.to_owned();
    impair::netns::run_in(ns, move || {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        write!(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    })
    .unwrap()
}

/// The value of the one sample of `body` whose line starts with `prefix`.
fn sample(body: &str, prefix: &str) -> f64 {
    let line = body
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {body}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// The metrics address in a controller's first line.
fn metrics_addr(ctl: &Controller) -> String {
    ctl.first_line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap_or_else(|| panic!("no metrics address in {}", ctl.first_line))
        .to_owned()
}

#[test]
fn attach_capture_writes_what_the_controller_impairs_until_it_detaches() {
    let lab = lab("capattach");
    let before = router_state(&lab);
    let port = PORT.to_string();
    let scratch = Scratch::new("capattach");
    let file = scratch.path().join("attach.pcapng");
    let file_arg = file.to_str().unwrap();
    let ctl = Controller::start(
        &lab,
        &[
            "--loss",
            "100%",
            "--proto",
            "udp",
            "--dport",
            &port,
            "--capture",
            file_arg,
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let addr = metrics_addr(&ctl);
    probe(&lab, false, PORT, 500, 200);
    let stats = stats_json(&lab);
    let lost = rule0(&stats, "dropped_loss");
    assert_eq!(lost, 500);
    // What the capture recorded so far, as `impair stats` and Prometheus
    // show it: every decision (under the default budget), nothing skipped.
    let c = &stats["capture"];
    assert_eq!(c["active"], true, "{stats}");
    assert_eq!(c["max_per_cpu_per_sec"], 10_000, "{stats}");
    assert_eq!(c["recorded"], lost, "{stats}");
    assert_eq!(c["over_budget"], 0, "{stats}");
    assert_eq!(c["ring_full"], 0, "{stats}");
    let text = stdout_ok(&impair_in(&lab.router, &["stats", "r1"]));
    assert!(
        text.contains(&format!(
            "capture: on, at most 10000 per second per CPU; recorded {lost}  not recorded 0 \
             (over the per-CPU budget 0, ring full 0)"
        )),
        "{text}"
    );
    let body = scrape(&lab.router, &addr);
    assert_eq!(sample(&body, "impair_capture_active{"), 1.0, "{body}");
    assert_eq!(
        sample(&body, "impair_capture_recorded_total{"),
        lost as f64,
        "{body}"
    );
    for cause in ["over_budget", "ring_full"] {
        let line = body
            .lines()
            .find(|l| {
                l.starts_with("impair_capture_not_recorded_total{")
                    && l.contains(&format!("cause=\"{cause}\""))
            })
            .unwrap_or_else(|| panic!("{cause}: {body}"));
        assert!(line.ends_with(" 0"), "{line}");
    }
    assert!(ctl.signal_and_wait(libc::SIGINT).success());
    let packets = tshark(&file);
    assert_eq!(actions(&packets, "tc-egress").get("drop-loss"), Some(&lost));
    // The file holds what the counters said was recorded.
    assert_eq!(packets.len() as u64, c["recorded"].as_u64().unwrap());
    assert!(packets.iter().all(|(c, _)| c.contains(" direction=egress")));
    assert_restored(&lab, &before);
}

/// `count` probe datagrams server → client: what the host (server) sends.
fn probe_uplink(lab: &Lab, count: u64) -> ProbeReport {
    let (src, dst) = (lab.server_v4(), lab.client_v4());
    let rx = impair::netns::run_in(&lab.client, move || {
        std::net::UdpSocket::bind((std::net::IpAddr::from(dst), 0))
    })
    .unwrap()
    .unwrap();
    let tx = impair::netns::run_in(&lab.server, move || {
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

#[test]
fn a_two_way_link_records_both_directions_into_one_file() {
    let lab = lab("cap2way");
    let site = Site::ServerIngress;
    let before = site.state(&lab);
    let scratch = Scratch::new("cap2way");
    // UDP only: the lab's own packets (neighbour discovery) are not impaired.
    let profile = scratch.file(
        "link.toml",
        "summary = \"test link\"\nsource = \"test\"\n\
         [[downlink.rule]]\nproto = \"udp\"\nloss = \"30%\"\n\
         [[uplink.rule]]\nproto = \"udp\"\nloss = \"10%\"\n",
    );
    let file = scratch.path().join("link.pcapng");
    let ctl = Controller::start_in(
        &lab.server,
        SERVER_IF,
        &[
            "--profile",
            &profile,
            "--seed",
            "16",
            "--capture",
            file.to_str().unwrap(),
        ],
    );
    assert!(
        ctl.first_line.contains("uplink (sent) at tc-egress")
            && ctl.first_line.contains("downlink (received) at tc-ingress"),
        "{}",
        ctl.first_line
    );
    let down = probe(&lab, false, 0, 2_000, 200);
    let up = probe_uplink(&lab, 2_000);
    let v = stats_json_in(&lab.server, SERVER_IF, &[]);
    let link = v
        .as_array()
        .unwrap_or_else(|| panic!("both instances: {v}"));
    let (uplink, downlink) = (&link[0], &link[1]);
    assert_eq!(
        (uplink["direction"].as_str(), downlink["direction"].as_str()),
        (Some("egress"), Some("ingress")),
        "{v}"
    );
    let lost_up = rule0(uplink, "dropped_loss");
    let lost_down = rule0(downlink, "dropped_loss");
    assert_eq!((lost_up, lost_down), (up.lost, down.lost), "{v}");
    assert!(lost_up > 100 && lost_down > 400, "{v}");
    assert!(ctl.signal_and_wait(libc::SIGINT).success());

    let packets = tshark(&file);
    let count = |dir: &str, hook: &str| {
        packets
            .iter()
            .filter(|(c, _)| {
                assert!(
                    c.starts_with("impair rule=0 actions=drop-loss "),
                    "only losses: {c}"
                );
                c.contains(&format!(" direction={dir}")) && c.contains(&format!(" hook={hook} "))
            })
            .count() as u64
    };
    // Each direction's records are its instance's decisions, and its
    // counters of the record say so too.
    assert_eq!(count("egress", "tc-egress"), lost_up, "uplink");
    assert_eq!(count("ingress", "tc-ingress"), lost_down, "downlink");
    assert_eq!(packets.len() as u64, lost_up + lost_down);
    assert_eq!(uplink["capture"]["recorded"], lost_up, "{v}");
    assert_eq!(downlink["capture"]["recorded"], lost_down, "{v}");
    // One pcapng interface per direction (tshark names them; the VM
    // guest's own reader does not).
    if let Ok(out) = Command::new("tshark")
        .arg("-r")
        .arg(&file)
        .args([
            "-T",
            "fields",
            "-e",
            "frame.interface_id",
            "-e",
            "frame.comment",
        ])
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        for l in text.lines() {
            let (id, c) = l.split_once('\t').unwrap();
            let want = if c.contains("direction=egress") {
                "0"
            } else {
                "1"
            };
            assert_eq!(id, want, "{l}");
        }
    }
    site.assert_restored(&lab, &before);
}

#[test]
fn xdp_records_carry_the_received_frames() {
    let lab = lab("capxdp");
    let port = PORT.to_string();
    let scratch = Scratch::new("capxdp");
    let file = scratch.path().join("xdp.pcapng");
    let file_arg = file.to_str().unwrap();
    let ctl = Controller::start_in(
        &lab.server,
        "s0",
        &[
            "--direction",
            "ingress",
            "--hook",
            "xdp",
            "--loss",
            "50%",
            "--proto",
            "udp",
            "--dport",
            &port,
            "--seed",
            "16",
            "--capture",
            file_arg,
        ],
    );
    probe(&lab, false, PORT, 1_000, 200);
    let lost = rule0(&stats_json_in(&lab.server, "s0", &[]), "dropped_loss");
    assert!(lost > 350, "{lost}");
    assert!(ctl.signal_and_wait(libc::SIGINT).success());
    let packets = tshark(&file);
    assert_eq!(actions(&packets, "xdp").get("drop-loss"), Some(&lost));
    assert_eq!(packets.len() as u64, lost);
}

#[test]
fn impair_capture_of_a_two_way_link_records_both_directions() {
    let lab = lab("capcli2");
    let site = Site::ServerIngress;
    let before = site.state(&lab);
    let scratch = Scratch::new("capcli2");
    let profile = scratch.file(
        "link.toml",
        "summary = \"test link\"\nsource = \"test\"\n\
         [[downlink.rule]]\nproto = \"udp\"\nloss = \"100%\"\n\
         [[uplink.rule]]\nproto = \"udp\"\nloss = \"100%\"\n",
    );
    let ctl = Controller::start_in(&lab.server, SERVER_IF, &["--profile", &profile]);
    let file = scratch.path().join("cli.pcapng");
    // No --direction: the whole link, as `impair stats s0` shows it.
    let cap = Capturing::start_in(&lab.server, SERVER_IF, &file, &[]);
    let down = probe(&lab, false, 0, 300, 200);
    let up = probe_uplink(&lab, 200);
    let summary = cap.finish();
    assert_eq!((down.lost, up.lost), (300, 200));
    let packets = tshark(&file);
    let dir = |d: &str| {
        packets
            .iter()
            .filter(|(c, _)| c.contains(&format!(" direction={d}")))
            .count()
    };
    assert_eq!((dir("egress"), dir("ingress")), (200, 300), "{summary}");
    assert_eq!(summary["written"], 500, "{summary}");
    assert_eq!(summary["recorded"], 500, "{summary}");
    assert!(ctl.signal_and_wait(libc::SIGINT).success());
    site.assert_restored(&lab, &before);
}

/// Needs sch_fq (the VM tier's `fq::` filter selects it).
mod fq {
    use impair_tests::{
        kernel::fq_or_note,
        ns::{lab, probe, stats_json_in, Controller, Site},
        Scratch,
    };
    use impair_tools::lab::SERVER_IF;

    #[test]
    fn a_held_downlink_is_recorded_at_its_ifb_with_its_direction() {
        let lab = lab("capifb");
        if !fq_or_note(
            &lab,
            "capture::fq::a_held_downlink_is_recorded_at_its_ifb_with_its_direction",
            "a delayed downlink needs sch_fq on its ifb: the VM tier runs this",
        ) {
            return;
        }
        let site = Site::ServerIngress;
        let before = site.state(&lab);
        let scratch = Scratch::new("capifb");
        let profile = scratch.file(
            "link.toml",
            "summary = \"test link\"\nsource = \"test\"\n\
             [[downlink.rule]]\nproto = \"udp\"\nloss = \"30%\"\ndelay = \"20ms\"\n\
             [[uplink.rule]]\nproto = \"udp\"\nloss = \"10%\"\n",
        );
        let file = scratch.path().join("ifb.pcapng");
        let ctl = Controller::start_in(
            &lab.server,
            SERVER_IF,
            &[
                "--profile",
                &profile,
                "--seed",
                "16",
                "--capture",
                file.to_str().unwrap(),
            ],
        );
        let r = probe(&lab, false, 0, 1_000, 200);
        let v = stats_json_in(&lab.server, SERVER_IF, &[]);
        let down = &v.as_array().unwrap_or_else(|| panic!("both: {v}"))[1];
        assert_eq!(down["direction"], "ingress", "{v}");
        assert!(down["owner"]["ifb"].is_string(), "through an ifb: {v}");
        let n = |k: &str| super::rule0(down, k);
        let (lost, delayed) = (n("dropped_loss"), n("delayed"));
        assert_eq!(lost, r.lost, "{r:?} {v}");
        assert!(lost > 150 && delayed > 500, "{v}");
        assert!(ctl.signal_and_wait(libc::SIGINT).success());
        let packets = super::tshark(&file);
        let with = |action: &str| {
            packets
                .iter()
                .filter(|(c, _)| {
                    c.contains(" hook=ifb-egress direction=ingress")
                        && c.split(' ')
                            .find_map(|f| f.strip_prefix("actions="))
                            .is_some_and(|a| a.split(',').any(|x| x == action))
                })
                .count() as u64
        };
        assert_eq!(with("drop-loss"), lost, "{packets:?}");
        assert_eq!(with("delay"), delayed);
        // Only the downlink had traffic: every record is its.
        assert_eq!(packets.len() as u64, lost + delayed, "{packets:?}");
        assert_eq!(down["capture"]["recorded"], lost + delayed, "{v}");
        site.assert_restored(&lab, &before);
    }
}
