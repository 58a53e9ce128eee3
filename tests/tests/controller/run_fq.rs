//! `impair run` impairs what CMD receives as well as what it sends (issue
//! 12, item 4), measured at CMD's receiving socket: the server sends probe
//! datagrams to a socket CMD opened and, at the same rate, to one the test
//! process opened in the same namespace (another process, outside the run's
//! cgroup). The data path finds each received packet's socket by a socket
//! lookup and tells CMD's apart by the mark impair's cgroup program gave it.
//!
//! Here: delay (received traffic held in the ifb, with sch_fq) where fq
//! exists and the kernel can redirect to an ifb (6.4+): the VM tier runs this
//! module with `controller fq::`. Elsewhere the test prints a NOTE, and on
//! kernels before 6.4 checks the one line `impair run` prints naming the
//! kernel feature. Loss on every kernel: `run_received`.
use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use impair::{netns, sys::monotonic_ns};
use impair_tests::{impair_bin, kernel::fq_or_note, note, ns::lab, stats::median, Scratch};
use impair_tools::{
    lab::{Lab, CLIENT_IF},
    probe::{self, decode, ProbeConfig, ProbeReport, Verdict},
};

/// The probe run id of the datagrams sent to CMD.
const RUN_ID: u32 = 0x5255_4e31;

/// Not a test of its own: `impair run` starts this test binary as CMD. With
/// `IMPAIR_TEST_RX_DIR=DIR` and `IMPAIR_TEST_RX_ADDR=IP` it binds a UDP
/// socket on IP, writes its port to DIR/port, and records every probe
/// datagram of run [`RUN_ID`] until DIR/done exists and 300 ms pass quietly;
/// then writes "SEQ DELAY_NS" lines (one per first copy) to DIR/result.
#[test]
#[ignore = "a helper that `impair run` starts as CMD"]
fn helper_probe_receiver() {
    let (Ok(dir), Ok(addr)) = (
        std::env::var("IMPAIR_TEST_RX_DIR"),
        std::env::var("IMPAIR_TEST_RX_ADDR"),
    ) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let ip: IpAddr = addr.parse().unwrap();
    let sock = UdpSocket::bind((ip, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    std::fs::write(dir.join("port.tmp"), port.to_string()).unwrap();
    std::fs::rename(dir.join("port.tmp"), dir.join("port")).unwrap();
    let mut seen = BTreeSet::new();
    let mut lines = String::new();
    let mut buf = vec![0u8; 2048];
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let now = monotonic_ns();
                if let Verdict::Valid { seq, send_ns } = decode(&buf[..n], RUN_ID) {
                    if seen.insert(seq) {
                        lines.push_str(&format!("{seq} {}\n", now.saturating_sub(send_ns)));
                    }
                }
            }
            Err(_) if dir.join("done").exists() => break,
            Err(_) => {}
        }
    }
    std::fs::write(dir.join("result"), lines).unwrap();
}

/// What one `impair run` saw: CMD's received (seq, one-way delay ns), the
/// other process's probe report, what was sent to CMD, and impair's stderr.
pub(crate) struct Received {
    pub cmd: Vec<(u64, u64)>,
    pub sent_to_cmd: u64,
    pub other: ProbeReport,
    pub stderr: String,
}

fn wait_for(path: &Path, what: &str) {
    let t = Instant::now();
    while !path.exists() {
        assert!(t.elapsed() < Duration::from_secs(30), "no {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `impair run ARGS -- helper_probe_receiver` in the client namespace;
/// meanwhile the server sends `cfg.count` probe datagrams to CMD's socket
/// and as many to the test's own socket in the client namespace.
pub(crate) fn run_receiving(lab: &Lab, args: &[&str], cfg: &ProbeConfig) -> Received {
    let dir = Scratch::new("run-rx");
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(impair_bin())
        .args(["--netns", &lab.client, "run", "--iface", CLIENT_IF])
        .args(args)
        .arg("--")
        .arg(&exe)
        .args([
            "--exact",
            "run_fq::helper_probe_receiver",
            "--ignored",
            "--quiet",
        ])
        .env("IMPAIR_TEST_RX_DIR", dir.path())
        .env("IMPAIR_TEST_RX_ADDR", lab.client_v4().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&dir.path().join("port"), "port from CMD");
    let port: u16 = std::fs::read_to_string(dir.path().join("port"))
        .unwrap()
        .parse()
        .unwrap();
    let to_cmd = SocketAddr::new(lab.client_v4().into(), port);
    let (server, client) = (lab.server_v4(), lab.client_v4());
    let bind_in = |ns: &str, ip: std::net::Ipv4Addr| {
        netns::run_in(ns, move || UdpSocket::bind((IpAddr::from(ip), 0)))
            .unwrap()
            .unwrap()
    };
    let cmd_tx = bind_in(&lab.server, server);
    let cmd_cfg = ProbeConfig {
        run_id: RUN_ID,
        ..cfg.clone()
    };
    let to_cmd_thread = std::thread::spawn(move || probe::send(&cmd_tx, to_cmd, &cmd_cfg).unwrap());
    let (other_tx, other_rx) = (bind_in(&lab.server, server), bind_in(&lab.client, client));
    let other_addr = other_rx.local_addr().unwrap();
    let other = probe::run_pair(other_tx, other_rx, other_addr, cfg).unwrap();
    let sent_to_cmd = to_cmd_thread.join().unwrap().sent;
    std::fs::write(dir.path().join("done"), b"").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "impair run: {stderr}");
    let cmd = std::fs::read_to_string(dir.path().join("result"))
        .unwrap()
        .lines()
        .map(|l| {
            let (s, d) = l.split_once(' ').unwrap();
            (s.parse().unwrap(), d.parse().unwrap())
        })
        .collect();
    Received {
        cmd,
        sent_to_cmd,
        other,
        stderr,
    }
}

/// `--delay 30ms`: CMD's received datagrams arrive 30 ms late (received
/// traffic goes through the instance's ifb and fq), the other process's
/// (through the same ifb) on time.
#[test]
fn run_delays_what_cmd_receives_and_not_what_others_receive() {
    let test = "run_fq::run_delays_what_cmd_receives_and_not_what_others_receive";
    let lab = lab("runrxfq");
    if !fq_or_note(&lab, test, "skipped (the VM tier runs it)") {
        return;
    }
    let cfg = ProbeConfig {
        count: 300,
        rate_pps: 300,
        payload_len: 200,
        ..Default::default()
    };
    let r = run_receiving(&lab, &["--delay", "30ms"], &cfg);
    if r.stderr.contains("needs Linux 6.4") {
        assert!(
            r.stderr.contains(
                "what it receives is not impaired: delay on received traffic needs Linux 6.4"
            ),
            "{}",
            r.stderr
        );
        note(format!(
            "{test}: this kernel cannot hold received traffic (ifb redirect needs 6.4+): checked the line saying so"
        ));
        return;
    }
    assert_eq!(r.cmd.len() as u64, r.sent_to_cmd, "nothing lost");
    let delays: Vec<u64> = r.cmd.iter().map(|&(_, d)| d).collect();
    let min = delays.iter().copied().min().unwrap();
    let p50 = median(&delays);
    assert!(min >= 30_000_000, "CMD's datagrams early: min {min} ns");
    assert!(
        p50 < 45_000_000,
        "CMD's median delay {} ms, configured 30 ms",
        p50 / 1_000_000
    );
    let other = r.other.delay.as_ref().expect("the other socket received");
    assert_eq!(r.other.lost, 0, "{:?}", r.other);
    assert!(
        other.p50_ns < 15_000_000,
        "the other process's traffic is not delayed: {other:?}"
    );
}
