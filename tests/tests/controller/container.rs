//! `--container NAME|ID` against a real runtime: Podman (Debian's), with its
//! API served by `podman system service` on a socket of this test's own,
//! found through `IMPAIR_CONTAINER_SOCKET` as users would point impair at it.
//!
//! No image can be pulled here, so the test imports one holding only
//! busybox-static. The container gets `--network none` (never Podman's
//! default 10.88.0.0/16 network) and a veth the test wires: `eth0` inside it,
//! `ct0` in a namespace the test makes, both in 198.18.214.0/24. impair
//! attaches by the container's name (interface defaulted to its only one),
//! the probe sends from inside the container and counts at the receiver, and
//! `detach --container` restores eth0 exactly. A [`Podman`] guard removes the
//! container, image, namespace, service and socket, also on failure.
//! Docker and containerd daemons do not run on these machines: their replies
//! are unit-tested in impair-user/src/container/ (recorded Docker replies, a
//! fake containerd speaking gRPC).
use std::{
    fs::File,
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use impair::netns;
use impair_tests::{
    impair_bin,
    ns::{assert_refused, stdout_ok},
    require_privileges,
    stats::assert_inside_suite,
};
use impair_tools::probe::{self, ProbeConfig};

const HOST_ADDR: &str = "198.18.214.1";
const CONTAINER_ADDR: &str = "198.18.214.2";

/// Everything the test made in Podman and the kernel; removed on drop.
struct Podman {
    tag: String,
    socket: PathBuf,
    service: Option<Child>,
    image: String,
    scratch: PathBuf,
    bridges_before: Vec<String>,
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"))
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {}: exit {:?}: {}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The cni-podman* bridges present now.
fn podman_bridges() -> Vec<String> {
    let out = run("ip", &["-o", "link", "show"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| n.starts_with("cni-podman"))
        .collect()
}

impl Podman {
    fn new(test: &str) -> Podman {
        require_privileges();
        for tool in ["podman", "runc", "busybox", "nsenter"] {
            assert!(
                run("sh", &["-c", &format!("command -v {tool}")])
                    .status
                    .success(),
                "{tool} is missing: `cargo xtask setup` installs podman, runc and busybox-static"
            );
        }
        let tag = format!("impair-ct{test}-{}", std::process::id());
        let scratch = std::env::temp_dir().join(&tag);
        let mut p = Podman {
            socket: scratch.join("podman.sock"),
            image: format!("localhost/{tag}:1"),
            tag,
            service: None,
            scratch,
            bridges_before: podman_bridges(),
        };
        p.cleanup(); // what a killed earlier run with this pid left
        std::fs::create_dir_all(p.scratch.join("root/bin")).unwrap();
        std::fs::copy(
            ok("sh", &["-c", "command -v busybox"]),
            p.scratch.join("root/bin/busybox"),
        )
        .unwrap();
        let tar = p.scratch.join("image.tar");
        let root = p.scratch.join("root");
        ok(
            "tar",
            &[
                "-C",
                root.to_str().unwrap(),
                "-cf",
                tar.to_str().unwrap(),
                ".",
            ],
        );
        ok("podman", &["import", tar.to_str().unwrap(), &p.image]);
        let service = Command::new("podman")
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", p.socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting podman system service");
        p.service = Some(service);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !p.socket.exists() {
            assert!(
                Instant::now() < deadline,
                "podman system service did not create its socket"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    /// Starts a container NAME (busybox sleeping) with no network; its pid.
    fn container(&self, name: &str) -> u32 {
        ok(
            "podman",
            &[
                "run",
                "-d",
                "--name",
                name,
                "--runtime",
                "runc",
                "--network",
                "none",
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
                &self.image,
                "/bin/busybox",
                "sleep",
                "600",
            ],
        );
        ok("podman", &["inspect", "-f", "{{.State.Pid}}", name])
            .parse()
            .unwrap()
    }

    /// `impair ARGS` from the host's namespace, pointed at our Podman.
    fn impair(&self, args: &[&str]) -> Output {
        Command::new(impair_bin())
            .args(args)
            .env("IMPAIR_CONTAINER_SOCKET", &self.socket)
            .output()
            .expect("running impair")
    }

    fn cleanup(&mut self) {
        for name in [
            self.tag.clone(),
            format!("{}-stopped", self.tag),
            format!("{}-h", self.tag),
        ] {
            let _ = run("podman", &["rm", "-f", "-t", "0", &name]);
        }
        let _ = run("podman", &["rmi", "-f", &self.image]);
        for ns in [
            self.tag.clone(),
            format!("{}-h", self.tag),
            format!("{}-r", self.tag),
        ] {
            let _ = run("ip", &["netns", "del", &ns]);
        }
        if let Some(mut s) = self.service.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        for b in podman_bridges() {
            if !self.bridges_before.contains(&b) {
                let _ = run("ip", &["link", "del", &b]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// tc and link state of eth0 inside the container (what attach may change).
fn eth0_state(pid: u32) -> String {
    let net = format!("--net=/proc/{pid}/ns/net");
    let mut s = String::new();
    for args in [
        vec!["tc", "qdisc", "show", "dev", "eth0"],
        vec!["tc", "filter", "show", "dev", "eth0", "egress"],
        vec!["tc", "filter", "show", "dev", "eth0", "ingress"],
        vec!["ip", "-d", "link", "show", "dev", "eth0"],
    ] {
        s += &ok("nsenter", &[&[net.as_str()][..], &args].concat());
    }
    s
}

/// A UDP socket bound inside network namespace `path` (`/proc/PID/ns/net`).
fn bind_in(path: &Path, addr: SocketAddr) -> UdpSocket {
    let file = File::open(path).unwrap();
    std::thread::spawn(move || {
        impair::sys::setns_net(&file).unwrap();
        UdpSocket::bind(addr).unwrap()
    })
    .join()
    .unwrap()
}

/// Probe datagrams from inside the container to the test's namespace,
/// counted at the receiver: (lost, sent).
fn probe_out_of(pid: u32, ns: &str, count: u64) -> (u64, u64) {
    let rx = netns::run_in(ns, || UdpSocket::bind(format!("{HOST_ADDR}:0")))
        .unwrap()
        .unwrap();
    let tx = bind_in(
        Path::new(&format!("/proc/{pid}/ns/net")),
        format!("{CONTAINER_ADDR}:0").parse().unwrap(),
    );
    let to = rx.local_addr().unwrap();
    let cfg = ProbeConfig {
        count,
        rate_pps: 10_000,
        payload_len: 64,
        ..Default::default()
    };
    let r = probe::run_pair(tx, rx, to, &cfg).unwrap();
    (r.lost, r.sent)
}

#[test]
fn attach_by_container_name_impairs_its_traffic_and_detach_restores_it() {
    let podman = Podman::new("a");
    let name = podman.tag.clone();

    // Errors before any container exists: one line, exit 2.
    let out = podman.impair(&["--netns", &name, "attach", "--container", &name]);
    assert_refused(
        "--netns and --container",
        &out,
        &["--container and --netns", "give one"],
    );
    let out = podman.impair(&["attach", "--container", &name, "--loss", "5%"]);
    assert_refused("unknown container", &out, &["no container", &name]);
    let out = Command::new(impair_bin())
        .args(["attach", "--container", &name, "--loss", "5%"])
        .env("IMPAIR_CONTAINER_SOCKET", podman.scratch.join("none.sock"))
        .output()
        .unwrap();
    assert_refused(
        "no runtime",
        &out,
        &["no container runtime answered", "none.sock"],
    );

    let pid = podman.container(&name);
    // Only lo so far: nothing to default to.
    let out = podman.impair(&["attach", "--container", &name, "--loss", "5%"]);
    assert_refused("no interface", &out, &["no interface but lo"]);

    // Wire a veth: ct0 in our namespace, eth0 in the container.
    ok("ip", &["netns", "add", &name]);
    ok(
        "ip",
        &[
            "-n",
            &name,
            "link",
            "add",
            "ct0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &pid.to_string(),
        ],
    );
    ok(
        "ip",
        &[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{HOST_ADDR}/24"),
            "dev",
            "ct0",
        ],
    );
    ok("ip", &["-n", &name, "link", "set", "ct0", "up"]);
    ok("ip", &["-n", &name, "link", "set", "lo", "up"]);
    let net = format!("--net=/proc/{pid}/ns/net");
    ok(
        "nsenter",
        &[
            &net,
            "ip",
            "addr",
            "add",
            &format!("{CONTAINER_ADDR}/24"),
            "dev",
            "eth0",
        ],
    );
    ok("nsenter", &[&net, "ip", "link", "set", "eth0", "up"]);
    ok("nsenter", &[&net, "ip", "link", "set", "lo", "up"]);
    for dev in ["ct0", "eth0"] {
        let target = if dev == "ct0" {
            vec!["ip", "netns", "exec", &name]
        } else {
            vec!["nsenter", &net]
        };
        // Real checksums (the probe verifies them).
        let _ = run(
            target[0],
            &[
                &target[1..],
                &["ethtool", "-K", dev, "tx", "off", "rx", "off"],
            ]
            .concat(),
        );
    }
    let before = eth0_state(pid);
    let (lost, sent) = probe_out_of(pid, &name, 500);
    assert_eq!(
        (lost, sent),
        (0, 500),
        "the wire loses nothing before impair attaches"
    );

    // Attach by name; eth0 is the default interface.
    let mut controller = Command::new(impair_bin())
        .args([
            "attach",
            "--container",
            &name,
            "--loss",
            "30%",
            "--seed",
            "7",
            "--json",
        ])
        .env("IMPAIR_CONTAINER_SOCKET", &podman.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = {
        use std::io::BufRead as _;
        let stdout = controller.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {}
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(e) => {
                let _ = controller.kill();
                let out = controller.wait_with_output().unwrap();
                panic!(
                    "attach did not come up ({e}): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    };
    let guard = KillOnDrop(controller);
    let event: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(event["event"], "attached", "{first}");
    assert_eq!(event["interface"], "eth0", "{first}");
    assert_eq!(event["netns"], format!("/proc/{pid}/ns/net"), "{first}");

    let (lost, sent) = probe_out_of(pid, &name, 4000);
    assert_eq!(sent, 4000);
    assert_inside_suite(0.30, lost, sent);

    // status and stats find it through the container too.
    let status = stdout_ok(&podman.impair(&["status", "--container", &name]));
    assert!(status.contains("eth0"), "{status}");
    let stats: serde_json::Value = serde_json::from_str(&stdout_ok(&podman.impair(&[
        "stats",
        "--container",
        &name,
        "eth0",
        "--json",
    ])))
    .unwrap();
    assert!(stats.to_string().contains("eth0"), "{stats}");

    // detach without IFACE: the container's only interface.
    stdout_ok(&podman.impair(&["detach", "--container", &name]));
    let mut guard = guard;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(st) = guard.0.try_wait().unwrap() {
            assert!(st.success(), "the controller exits 0 on detach: {st:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the controller did not exit after detach"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while eth0_state(pid) != before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(eth0_state(pid), before, "eth0 was not restored exactly");
    let (lost, sent) = probe_out_of(pid, &name, 500);
    assert_eq!((lost, sent), (0, 500), "nothing is lost after detach");

    // A stopped container: one line, exit 2, nothing attached.
    let stopped = format!("{name}-stopped");
    podman.container(&stopped);
    ok("podman", &["stop", "-t", "0", &stopped]);
    let out = podman.impair(&["attach", "--container", &stopped, "--loss", "5%"]);
    assert_refused("stopped container", &out, &["is not running", &stopped]);
    assert_eq!(eth0_state(pid), before);
}

/// Datagrams arriving on `rx` while `during` runs, and until a second
/// passes without one after it; read as they come (a small socket buffer
/// would otherwise drop some, which would look like impairment).
fn count_while(rx: &UdpSocket, during: impl FnOnce()) -> u64 {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };
    let sock = rx.try_clone().unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let (mut n, mut quiet_since) = (0u64, None::<Instant>);
            loop {
                if sock.recv(&mut buf).is_ok() {
                    n += 1;
                    quiet_since = None;
                } else if done.load(Ordering::Relaxed)
                    && quiet_since.get_or_insert_with(Instant::now).elapsed()
                        > Duration::from_secs(1)
                {
                    return n;
                }
            }
        })
    };
    during();
    done.store(true, Ordering::Relaxed);
    reader.join().unwrap()
}

/// A container on a network namespace it shares with impair (Podman's
/// `--network ns:PATH`, as `--network host` shares the host's): its
/// interfaces carry other processes' traffic too, so `attach --container`
/// on a named interface matches the container's cgroup only. The
/// container's own syslogd forwards each `logger` line as one UDP datagram
/// (busybox has no UDP client otherwise), counted at the receiver; the
/// test's probe, sent from the same namespace outside the container, passes
/// untouched at the same time.
#[test]
fn a_container_sharing_the_namespace_is_scoped_by_its_cgroup() {
    let podman = Podman::new("c");
    let name = format!("{}-h", podman.tag);
    let (hns, rns) = (name.clone(), format!("{}-r", podman.tag));
    ok("ip", &["netns", "add", &hns]);
    ok("ip", &["netns", "add", &rns]);
    ok(
        "ip",
        &[
            "-n", &hns, "link", "add", "ct0", "type", "veth", "peer", "name", "cr0", "netns", &rns,
        ],
    );
    for (ns, dev, addr) in [
        (&hns, "ct0", "198.18.215.1/24"),
        (&rns, "cr0", "198.18.215.2/24"),
    ] {
        ok("ip", &["-n", ns, "addr", "add", addr, "dev", dev]);
        ok("ip", &["-n", ns, "link", "set", dev, "up"]);
        ok("ip", &["-n", ns, "link", "set", "lo", "up"]);
        let _ = run(
            "ip",
            &[
                "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off", "rx", "off",
            ],
        );
    }
    ok(
        "podman",
        &[
            "run",
            "-d",
            "--name",
            &name,
            "--runtime",
            "runc",
            "--network",
            &format!("ns:/run/netns/{hns}"),
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            &podman.image,
            "/bin/busybox",
            "syslogd",
            "-n",
            "-R",
            "198.18.215.2:5140",
        ],
    );
    let rx = netns::run_in(&rns, || UdpSocket::bind("198.18.215.2:5140"))
        .unwrap()
        .unwrap();
    let impair_h = |args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", &hns])
            .arg(impair_bin())
            .args(args)
            .env("IMPAIR_CONTAINER_SOCKET", &podman.socket)
            .output()
            .unwrap()
    };
    // Without an interface there is nothing to default to: the namespace's
    // interfaces are not the container's alone.
    let out = impair_h(&["attach", "--container", &name, "--loss", "30%"]);
    assert_refused(
        "shared namespace, no IFACE",
        &out,
        &["shares this network namespace", "name the interface"],
    );

    let mut controller = Command::new("ip")
        .args(["netns", "exec", &hns])
        .arg(impair_bin())
        .args([
            "attach",
            "--container",
            &name,
            "ct0",
            "--loss",
            "30%",
            "--seed",
            "3",
            "--json",
        ])
        .env("IMPAIR_CONTAINER_SOCKET", &podman.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = {
        use std::io::BufRead as _;
        let stdout = controller.stdout.take().unwrap();
        let (tx, rxl) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {}
        });
        match rxl.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(e) => {
                let _ = controller.kill();
                let out = controller.wait_with_output().unwrap();
                panic!(
                    "attach did not come up ({e}): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    };
    let guard = KillOnDrop(controller);
    assert!(first.contains("\"attached\""), "{first}");

    // The container's datagrams: 30% lost (syslogd's own start-up line,
    // if it came late, is drained first).
    count_while(&rx, || ());
    let sent = 1000u64;
    let received = count_while(&rx, || {
        ok(
            "podman",
            &[
                "exec",
                &name,
                "/bin/busybox",
                "sh",
                "-c",
                &format!(
                    "i=0; while [ $i -lt {sent} ]; do /bin/busybox logger m$i; i=$((i+1)); done"
                ),
            ],
        );
    });
    assert_inside_suite(0.30, sent - received, sent);

    // The same namespace's other traffic: untouched.
    let tx = netns::run_in(&hns, || UdpSocket::bind("198.18.215.1:0"))
        .unwrap()
        .unwrap();
    let received = count_while(&rx, || {
        for i in 0..sent {
            tx.send_to(format!("host {i}").as_bytes(), "198.18.215.2:5140")
                .unwrap();
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    assert_eq!(
        received, sent,
        "traffic outside the container is not impaired"
    );
    drop(guard);
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child; an error (already gone) is fine.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}
