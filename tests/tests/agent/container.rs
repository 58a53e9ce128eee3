//! A container as the target, against a real runtime: Podman (Debian's,
//! with `--runtime runc`; crun fails on this kind of kernel's hybrid
//! cgroups), its API served on /run/podman/podman.sock. No image can be
//! pulled, so one is imported from a tarball holding busybox-static; the
//! container has `--network none` plus a veth this test wires to a
//! namespace of its own (198.18.7.0/24). The agent attaches by container
//! name, the probe measures at the receiver, the delete restores the
//! container's interface exactly, and the container, image, namespace and
//! service are removed.
use std::{
    net::UdpSocket,
    process::{Child, Command, Output},
    time::Duration,
};

use impair_tests::{note, require_privileges, stats::assert_inside_suite, Scratch};
use impair_tools::probe::{self, ProbeConfig};
use serde_json::json;

use crate::{assert_error, Agent};

const SOCKET: &str = "/run/podman/podman.sock";

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (install it: cargo xtask setup)"))
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Everything the test made, removed when it ends (also on failure).
struct Made {
    ns: String,
    container: String,
    image: String,
    service: Option<Child>,
}

impl Drop for Made {
    fn drop(&mut self) {
        let _ = run("podman", &["rm", "-f", "-t", "0", &self.container]);
        let _ = run("podman", &["rmi", "-f", &self.image]);
        let _ = run("ip", &["netns", "del", &self.ns]);
        if let Some(mut s) = self.service.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(s.id() as i32, libc::SIGTERM) };
            let _ = s.wait();
            let _ = std::fs::remove_file(SOCKET);
        }
    }
}

/// `ip ARGS` in the container's network namespace.
fn in_container(pid: &str, args: &[&str]) -> String {
    let net = format!("--net=/proc/{pid}/ns/net");
    ok("nsenter", &[&[net.as_str(), "ip"][..], args].concat())
}

fn tc_state(pid: &str) -> String {
    let net = format!("--net=/proc/{pid}/ns/net");
    let mut s = ok("nsenter", &[&net, "tc", "qdisc", "show", "dev", "eth1"]);
    s += &ok(
        "nsenter",
        &[&net, "tc", "filter", "show", "dev", "eth1", "egress"],
    );
    s
}

#[test]
fn a_container_is_targeted_by_name_through_podman() {
    require_privileges();
    let tag = std::process::id();
    let mut made = Made {
        ns: format!("imp-agt-ctr-{tag}"),
        container: format!("impair-agent-test-{tag}"),
        image: format!("localhost/impair-test-busybox:{tag}"),
        service: None,
    };
    ok("ip", &["netns", "add", &made.ns]);
    ok("ip", &["-n", &made.ns, "link", "set", "lo", "up"]);
    let agent = Agent::start(&made.ns, &[]);
    // The probe's datagrams only: ARP and IPv6 neighbour discovery pass,
    // so the counters are the probe's and resolution is never starved.
    let body = json!({"id": "ctr", "target": {"container": made.container, "interface": "eth1"},
        "rules": [{"dst": "198.18.7.1/32", "proto": "udp", "loss": "30%"}]});

    // No runtime listening: one clear error naming the field.
    if !std::path::Path::new(SOCKET).exists()
        && !std::path::Path::new("/var/run/docker.sock").exists()
    {
        let r = agent.req("POST", "/v1/impairments", Some(&body));
        assert_error(&r, 400, Some("target.container"));
        assert!(r.text.contains("runtime"), "{r:?}");
    } else {
        note("a container runtime socket exists already: the no-runtime error is not checked");
    }

    // An image from a tarball (nothing can be pulled), a container without a network.
    let dir = Scratch::new("agent-image");
    std::fs::create_dir_all(dir.path().join("rootfs/bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.path().join("rootfs/bin/busybox"))
        .expect("/bin/busybox (busybox-static: cargo xtask setup)");
    let tar = dir.path().join("rootfs.tar");
    ok(
        "tar",
        &[
            "-C",
            &dir.path().join("rootfs").to_string_lossy(),
            "-cf",
            &tar.to_string_lossy(),
            ".",
        ],
    );
    ok(
        "podman",
        &["import", "-q", &tar.to_string_lossy(), &made.image],
    );
    // runc: crun fails on hybrid cgroups; the limits are lowered because
    // raising them needs CAP_SYS_RESOURCE, which this machine's root lacks.
    ok(
        "podman",
        &[
            "--runtime",
            "runc",
            "run",
            "-d",
            "--name",
            &made.container,
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
            &made.image,
            "/bin/busybox",
            "sleep",
            "600",
        ],
    );
    let pid = ok(
        "podman",
        &["inspect", "--format", "{{.State.Pid}}", &made.container],
    );
    ok(
        "ip",
        &[
            "-n", &made.ns, "link", "add", "ctr0", "type", "veth", "peer", "name", "eth1", "netns",
            &pid,
        ],
    );
    ok(
        "ip",
        &[
            "-n",
            &made.ns,
            "addr",
            "add",
            "198.18.7.1/24",
            "dev",
            "ctr0",
        ],
    );
    ok("ip", &["-n", &made.ns, "link", "set", "ctr0", "up"]);
    in_container(&pid, &["addr", "add", "198.18.7.2/24", "dev", "eth1"]);
    in_container(&pid, &["link", "set", "eth1", "up"]);
    in_container(&pid, &["link", "set", "lo", "up"]);
    let before = tc_state(&pid);

    if !std::path::Path::new(SOCKET).exists() {
        std::fs::create_dir_all("/run/podman").unwrap();
        made.service = Some(
            Command::new("podman")
                .args(["system", "service", "--time=0", &format!("unix://{SOCKET}")])
                .spawn()
                .unwrap(),
        );
        for _ in 0..100 {
            if std::path::Path::new(SOCKET).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    let missing = json!({"id": "none", "target": {"container": "no-such-container-here", "interface": "eth1"},
        "rules": [{"loss": "30%"}]});
    assert_error(
        &agent.req("POST", "/v1/impairments", Some(&missing)),
        400,
        Some("target.container"),
    );
    let r = agent.req("POST", "/v1/impairments", Some(&body));
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body["status"]["interface"], "eth1", "{r:?}");

    // The container sends (a socket made in its namespace); the receiver
    // outside counts.
    let ctr_ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    let tx = std::thread::spawn(move || {
        impair::sys::setns_net(&ctr_ns).unwrap();
        UdpSocket::bind("198.18.7.2:0").unwrap()
    })
    .join()
    .unwrap();
    let rx = impair::netns::run_in(&made.ns, || UdpSocket::bind("198.18.7.1:0"))
        .unwrap()
        .unwrap();
    let to = rx.local_addr().unwrap();
    let cfg = ProbeConfig {
        count: 10_000,
        rate_pps: 20_000,
        ..Default::default()
    };
    let rep = probe::run_pair(tx, rx, to, &cfg).unwrap();
    assert_inside_suite(0.30, rep.lost, rep.sent);
    let got = agent.req("GET", "/v1/impairments/ctr", None);
    assert_eq!(
        got.body["status"]["rules"][0]["dropped_loss"].as_u64(),
        Some(rep.lost),
        "{got:?}"
    );

    let metrics = agent.req("GET", "/metrics", None).text;
    let series = format!(
        "impair_packets_total{{interface=\"eth1@{}\"",
        made.container
    );
    assert!(metrics.contains(&series), "{series} in {metrics}");
    assert_eq!(agent.req("DELETE", "/v1/impairments/ctr", None).status, 200);
    assert_eq!(
        tc_state(&pid),
        before,
        "the container's eth1 is exactly as before"
    );
}
