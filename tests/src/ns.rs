//! Helpers for namespace tests: run the real `impair` binary inside one of
//! the lab's namespaces, send probe traffic, and snapshot what attaching could
//! change on an interface.
use std::{
    io::{BufRead as _, BufReader},
    net::{IpAddr, SocketAddr, UdpSocket},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use impair::netns;
use impair_tools::{
    lab::{self, Lab},
    probe::{self, ProbeConfig, ProbeReport},
};

use crate::impair_bin;

/// A fresh client → router → server lab (offloads off, so the probe's
/// checksums are real), after checking privileges.
pub fn lab(tag: &str) -> Lab {
    crate::require_privileges();
    Lab::create_with(tag, lab::LabOptions { offloads: false }).unwrap()
}

/// `impair ARGS` run in namespace `ns`, to completion.
pub fn impair_in(ns: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(impair_bin())
        .args(args)
        .output()
        .expect("running impair")
}

/// The stdout of a command that must have succeeded (else its exit code and
/// stderr are the failure).
pub fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts that `out` is impair's refusal of bad input: exit code 2, and a
/// stderr that names each of `needles` and is no panic (`what` says which
/// command it was). Returns the stderr.
pub fn assert_refused(what: &str, out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    for needle in needles {
        assert!(
            err.contains(needle),
            "{what}: the error must name '{needle}': {err}"
        );
    }
    assert!(!err.contains("panicked"), "{what}: {err}");
    err
}

/// Where a test attaches impair in the lab: the router's `r1` at egress (the
/// client's traffic leaves the router there), or the server's `s0` on the
/// receive side (`--direction ingress`, tc ingress or XDP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    RouterEgress,
    ServerIngress,
}

impl Site {
    pub const BOTH: [Site; 2] = [Site::RouterEgress, Site::ServerIngress];

    /// The namespace the interface lives in.
    pub fn ns(self, lab: &Lab) -> &str {
        match self {
            Site::RouterEgress => &lab.router,
            Site::ServerIngress => &lab.server,
        }
    }

    pub fn iface(self) -> &'static str {
        match self {
            Site::RouterEgress => lab::ROUTER_EGRESS,
            Site::ServerIngress => lab::SERVER_IF,
        }
    }

    /// The flags that pick the direction (none for egress, the default).
    pub fn direction_args(self) -> &'static [&'static str] {
        match self {
            Site::RouterEgress => &[],
            Site::ServerIngress => &["--direction", "ingress"],
        }
    }

    /// `impair attach IFACE [--direction ingress] ARGS`, attached.
    pub fn attach(self, lab: &Lab, args: &[&str]) -> Controller {
        let all = [self.direction_args(), args].concat();
        Controller::start_in(self.ns(lab), self.iface(), &all)
    }

    /// `impair ARGS` in this site's namespace.
    pub fn impair(self, lab: &Lab, args: &[&str]) -> Output {
        impair_in(self.ns(lab), args)
    }

    /// `impair stats IFACE --json`, parsed.
    pub fn stats(self, lab: &Lab) -> serde_json::Value {
        stats_json_in(self.ns(lab), self.iface(), &[])
    }

    /// [`iface_state`] of this site's interface.
    pub fn state(self, lab: &Lab) -> String {
        iface_state(lab, self.ns(lab), self.iface())
    }

    /// [`assert_iface_restored`] for this site's interface.
    pub fn assert_restored(self, lab: &Lab, before: &str) {
        assert_iface_restored(lab, self.ns(lab), self.iface(), before);
    }
}

/// A foreground `impair attach` running in a lab namespace.
pub struct Controller {
    pub child: Child,
    pub first_line: String,
}

impl Controller {
    /// Starts `impair attach r1 ARGS` in the router and waits until it says
    /// it is attached.
    pub fn start(lab: &Lab, args: &[&str]) -> Controller {
        Site::RouterEgress.attach(lab, args)
    }

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

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits for the controller to exit by itself (detach from elsewhere,
    /// `--duration`); returns its exit status.
    pub fn wait(mut self) -> ExitStatus {
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }

    /// Sends `sig` and waits for the process; returns its exit status.
    pub fn signal_and_wait(self, sig: i32) -> ExitStatus {
        // `ip netns exec` execs impair, so the child pid is impair itself.
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid(), sig) };
        self.wait()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child; errors (already gone) are fine.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// A sending socket in the client namespace and a receiving one in the
/// server namespace (IPv4 or IPv6; the server's on `port`, 0 = any free),
/// and the receiver's address.
pub fn socket_pair(lab: &Lab, v6: bool, port: u16) -> (UdpSocket, UdpSocket, SocketAddr) {
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
    (tx, rx, to)
}

/// Sends `count` probe datagrams client → server (IPv4 or IPv6) to `port`
/// (0 = any free port) and reports what the server received.
pub fn probe(lab: &Lab, v6: bool, port: u16, count: u64, payload_len: usize) -> ProbeReport {
    let (tx, rx, to) = socket_pair(lab, v6, port);
    let cfg = ProbeConfig {
        count,
        rate_pps: 20_000,
        payload_len,
        ..Default::default()
    };
    probe::run_pair(tx, rx, to, &cfg).unwrap()
}

/// Sends `cfg.count` probe datagrams client → server over IPv4 at
/// `cfg.rate_pps` and returns the report and every reception (arrival times).
pub fn probe_with_log(lab: &Lab, cfg: &ProbeConfig) -> (ProbeReport, probe::ReceiveLog) {
    let (tx, rx, to) = socket_pair(lab, false, 0);
    probe::run_pair_with_log(tx, rx, to, cfg).unwrap()
}

/// `impair stats r1 --json` from another process, parsed.
pub fn stats_json(lab: &Lab) -> serde_json::Value {
    Site::RouterEgress.stats(lab)
}

/// `impair stats IFACE --json EXTRA` in namespace `ns`, parsed.
pub fn stats_json_in(ns: &str, iface: &str, extra: &[&str]) -> serde_json::Value {
    let args = [&["stats", iface, "--json"][..], extra].concat();
    serde_json::from_str(&stdout_ok(&impair_in(ns, &args))).unwrap()
}

/// Everything that attaching at `iface` (in namespace `ns`) could change:
/// its qdiscs, tc filters in both directions, the link as `ip -d link`
/// shows it (an XDP program appears there as `prog/xdp`), the namespace's
/// ifb devices (an ingress instance that holds packets creates one), and
/// impair's own view. Equal before attach and after detach means nothing was left.
pub fn iface_state(lab: &Lab, ns: &str, iface: &str) -> String {
    let mut s = String::new();
    for args in [
        vec!["tc", "qdisc", "show", "dev", iface],
        vec!["tc", "filter", "show", "dev", iface, "egress"],
        vec!["tc", "filter", "show", "dev", iface, "ingress"],
        vec!["ip", "-d", "link", "show", "dev", iface],
        vec!["ip", "-o", "link", "show", "type", "ifb"],
    ] {
        s += &lab.exec(ns, &args).unwrap();
    }
    let status = impair_in(ns, &["status"]);
    // Without its age ("(3s ago)"), which changes between two snapshots of
    // the same state.
    for line in String::from_utf8_lossy(&status.stdout).lines() {
        s += &strip_age(line);
        s.push('\n');
    }
    s
}

/// `line` without a status line's "(N ago)" part.
fn strip_age(line: &str) -> String {
    let Some(b) = line.find(" ago)") else {
        return line.to_owned();
    };
    match line[..b].rfind(" (") {
        Some(a) => format!("{}{}", &line[..a], &line[b + " ago)".len()..]),
        None => line.to_owned(),
    }
}

/// [`iface_state`] of the router's impaired interface `r1`.
pub fn router_state(lab: &Lab) -> String {
    Site::RouterEgress.state(lab)
}

/// Asserts `iface` in `ns` is back to `before`. The kernel frees a detached
/// program after an RCU grace period, so its disappearance from the loaded
/// list can trail the controller's exit by a few milliseconds: poll briefly.
pub fn assert_iface_restored(lab: &Lab, ns: &str, iface: &str, before: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let now = iface_state(lab, ns, iface);
        if now == before {
            return;
        }
        if Instant::now() > deadline {
            assert_eq!(now, before, "{iface} in {ns} was not restored exactly");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`assert_iface_restored`] for the router's `r1`.
pub fn assert_restored(lab: &Lab, before: &str) {
    Site::RouterEgress.assert_restored(lab, before);
}
