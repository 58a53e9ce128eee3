//! Helpers for namespace tests: run the real `impair` binary inside the lab's
//! router namespace, send probe traffic, and snapshot the router's tc state.
use std::{
    io::{BufRead as _, BufReader},
    net::{IpAddr, SocketAddr, UdpSocket},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

use impair::netns;
use impair_tools::{
    lab::{self, Lab},
    probe::{self, ProbeConfig, ProbeReport},
};

use crate::impair_bin;

/// `impair ARGS` run in namespace `ns`, to completion.
pub fn impair_in(ns: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(impair_bin())
        .args(args)
        .output()
        .expect("running impair")
}

/// A foreground `impair attach` running in the router namespace.
pub struct Controller {
    pub child: Child,
    pub first_line: String,
}

impl Controller {
    /// Starts `impair attach r1 ARGS` in the router and waits until it says
    /// it is attached.
    pub fn start(lab: &Lab, args: &[&str]) -> Controller {
        Controller::start_in(&lab.router, lab::ROUTER_EGRESS, args)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `sig` and waits for the process; returns its exit status.
    pub fn signal_and_wait(mut self, sig: i32) -> std::process::ExitStatus {
        // `ip netns exec` execs impair, so the child pid is impair itself.
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid(), sig) };
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child; errors (already gone) are fine.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Sends `count` probe datagrams client → server (IPv4 or IPv6) to `port`
/// (0 = any free port) and reports what the server received.
pub fn probe(lab: &Lab, v6: bool, port: u16, count: u64, payload_len: usize) -> ProbeReport {
    let (src, dst): (IpAddr, IpAddr) = if v6 {
        (lab.client_v6().into(), lab.server_v6().into())
    } else {
        (lab.client_v4().into(), lab.server_v4().into())
    };
    let rx = netns::run_in(&lab.server, move || {
        UdpSocket::bind(SocketAddr::new(dst, port))
    })
    .unwrap()
    .unwrap();
    let tx = netns::run_in(&lab.client, move || {
        UdpSocket::bind(SocketAddr::new(src, 0))
    })
    .unwrap()
    .unwrap();
    let to = rx.local_addr().unwrap();
    let cfg = ProbeConfig {
        count,
        rate_pps: 20_000,
        payload_len,
        ..Default::default()
    };
    probe::run_pair(tx, rx, to, &cfg).unwrap()
}

/// `impair stats r1 --json` from another process, parsed.
pub fn stats_json(lab: &Lab) -> serde_json::Value {
    let out = impair_in(&lab.router, &["stats", lab::ROUTER_EGRESS, "--json"]);
    assert!(
        out.status.success(),
        "impair stats failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Everything tc shows about the router's impaired interface, plus impair's
/// own view: equal before attach and after detach means nothing was left.
pub fn router_state(lab: &Lab) -> String {
    let iface = lab::ROUTER_EGRESS;
    let mut s = String::new();
    for args in [
        vec!["tc", "qdisc", "show", "dev", iface],
        vec!["tc", "filter", "show", "dev", iface, "egress"],
        vec!["tc", "filter", "show", "dev", iface, "ingress"],
    ] {
        s += &lab.exec(&lab.router, &args).unwrap();
    }
    let status = impair_in(&lab.router, &["status"]);
    s += &String::from_utf8_lossy(&status.stdout);
    s
}

/// Asserts the router is back to `before`. The kernel frees a detached
/// program after an RCU grace period, so its disappearance from the loaded
/// list can trail the controller's exit by a few milliseconds: poll briefly.
pub fn assert_restored(lab: &Lab, before: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let now = router_state(lab);
        if now == before {
            return;
        }
        if std::time::Instant::now() > deadline {
            assert_eq!(now, before, "the router was not restored exactly");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Controller {
    /// Starts `impair attach IFACE ARGS` in namespace `ns` (any of the lab's,
    /// e.g. the server's `s0` for receive-side hooks) and waits until it says
    /// it is attached.
    pub fn start_in(ns: &str, iface: &str, args: &[&str]) -> Controller {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(impair_bin())
            .args(["attach", iface, "--interval-ms", "200"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning impair attach");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for _ in lines {} // keep draining so the controller never blocks on stdout
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(first) if first.contains("attached") => Controller {
                child,
                first_line: first,
            },
            other => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "impair attach {iface} in {ns} did not come up: {other:?}\nstderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// `impair stats IFACE --json EXTRA` in namespace `ns`, parsed.
pub fn stats_json_in(ns: &str, iface: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["stats", iface, "--json"];
    args.extend_from_slice(extra);
    let out = impair_in(ns, &args);
    assert!(
        out.status.success(),
        "impair stats failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Everything that attaching at `iface` (in namespace `ns`) could change:
/// its qdiscs, tc filters in both directions, the link as `ip -d link`
/// shows it (an XDP program appears there as `prog/xdp`), and impair's own
/// view. Equal before attach and after detach means nothing was left.
pub fn iface_state(lab: &Lab, ns: &str, iface: &str) -> String {
    let mut s = String::new();
    for args in [
        vec!["tc", "qdisc", "show", "dev", iface],
        vec!["tc", "filter", "show", "dev", iface, "egress"],
        vec!["tc", "filter", "show", "dev", iface, "ingress"],
        vec!["ip", "-d", "link", "show", "dev", iface],
    ] {
        s += &lab.exec(ns, &args).unwrap();
    }
    let status = impair_in(ns, &["status"]);
    s += &String::from_utf8_lossy(&status.stdout);
    s
}

/// [`assert_restored`] for any interface: polls briefly for the kernel's
/// deferred program free, then requires `iface_state` to equal `before`.
pub fn assert_iface_restored(lab: &Lab, ns: &str, iface: &str, before: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let now = iface_state(lab, ns, iface);
        if now == before {
            return;
        }
        if std::time::Instant::now() > deadline {
            assert_eq!(now, before, "{iface} in {ns} was not restored exactly");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `cfg.count` probe datagrams client → server over IPv4 at
/// `cfg.rate_pps` and returns the report and every reception (arrival times).
pub fn probe_with_log(lab: &Lab, cfg: &ProbeConfig) -> (ProbeReport, probe::ReceiveLog) {
    let (src, dst): (IpAddr, IpAddr) = (lab.client_v4().into(), lab.server_v4().into());
    let rx = netns::run_in(&lab.server, move || {
        UdpSocket::bind(SocketAddr::new(dst, 0))
    })
    .unwrap()
    .unwrap();
    let tx = netns::run_in(&lab.client, move || {
        UdpSocket::bind(SocketAddr::new(src, 0))
    })
    .unwrap()
    .unwrap();
    let to = rx.local_addr().unwrap();
    probe::run_pair_with_log(tx, rx, to, cfg).unwrap()
}

/// z for a two-sided 99% interval.
pub const Z99: f64 = 2.575_829_303_548_901;

/// A fresh client → router → server lab (offloads off, so the probe's
/// checksums are real), after checking privileges.
pub fn lab(tag: &str) -> Lab {
    crate::require_privileges();
    Lab::create_with(tag, lab::LabOptions { offloads: false }).unwrap()
}

/// The measured loss `lost / sent` has `configured` inside its 99% Wilson interval.
pub fn assert_inside_99(configured: f64, lost: u64, sent: u64) {
    let (lo, hi) = impair::statistics::wilson_interval(lost, sent, Z99);
    assert!(
        lo <= configured && configured <= hi,
        "configured {configured}: measured {lost}/{sent}, 99% interval {lo}..{hi}"
    );
}

/// Whether the kernel has sch_fq (tried on the router's `r0`, then removed).
pub fn kernel_has_fq(lab: &Lab) -> bool {
    let ok = lab
        .exec(
            &lab.router,
            &["tc", "qdisc", "add", "dev", "r0", "root", "fq"],
        )
        .is_ok();
    if ok {
        lab.exec(&lab.router, &["tc", "qdisc", "del", "dev", "r0", "root"])
            .unwrap();
    }
    ok
}
