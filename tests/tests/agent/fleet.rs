//! A three-host fleet driven by Chaos Toolkit (PyPI; a real experiment
//! engine no one here wrote): the lab's client, router and server
//! namespaces each run an agent on their own address with a bearer token;
//! the experiment, run from the client, checks its steady state (a UDP
//! round trip through all three loses nothing), impairs one interface per
//! host through each agent's API, measures during the method, and rolls
//! back with DELETEs. The round trip must see the three losses combined
//! during the method and none after the rollback, and every interface must
//! be exactly as before.
use std::{
    net::UdpSocket,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use impair_tests::{
    ns::{assert_iface_restored, iface_state, lab},
    stats::{assert_inside, Z_SUITE},
    Scratch,
};
use impair_tools::lab::{CLIENT_IF, ROUTER_EGRESS, SERVER_IF};
use serde_json::{json, Value};

use crate::Agent;

const ECHO_PORT: u16 = 7000;
const TOKEN: &str = "fleet-test-token";
const SENT: u64 = 1000;

/// The round-trip probe Chaos Toolkit runs (a process provider): sends
/// SENT datagrams to the echo server, counts the echoes, prints JSON; in
/// `steady` mode it fails unless every one came back.
const PROBE_PY: &str = r#"
import json, socket, sys, time
dst, n, mode = (sys.argv[1], int(sys.argv[2])), int(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
# SO_RCVBUFFORCE (root): no echo is lost to a full buffer on a busy machine.
s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)
got = set()
def drain():
    while True:
        try:
            data, _ = s.recvfrom(64)
        except BlockingIOError:
            return
        got.add(int(data.decode()))
for i in range(n):
    s.sendto(str(i).encode(), dst)
    drain()
    time.sleep(0.001)
end = time.time() + 1.0
while time.time() < end:
    drain()
    time.sleep(0.01)
print(json.dumps({"sent": n, "received": len(got)}))
sys.exit(0 if mode != "steady" or len(got) == n else 1)
"#;

/// An 8 MiB receive buffer (SO_RCVBUFFORCE, as root): on a busy machine
/// the echo thread may wait its turn; no datagram may be lost meanwhile.
fn force_rcvbuf(sock: &UdpSocket) {
    use std::os::fd::AsRawFd as _;
    let bytes: libc::c_int = 8 << 20;
    // SAFETY: setsockopt on an open socket with a valid int option value.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const bytes).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

/// A UDP echo server in the server namespace until `stop`.
fn echo(ns: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let sock = impair::netns::run_in(ns, || UdpSocket::bind(("198.18.2.1", ECHO_PORT)))
        .unwrap()
        .unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    force_rcvbuf(&sock);
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
            }
        }
    })
}

fn http(name: &str, method: &str, url: &str, body: Option<Value>, expect: u16) -> Value {
    let mut provider = json!({
        "type": "http", "url": url, "method": method, "timeout": 30, "expected_status": expect,
        "headers": {"Authorization": format!("Bearer {TOKEN}"), "Content-Type": "application/json"},
    });
    if let Some(b) = body {
        provider["arguments"] = b;
    }
    json!({"type": "action", "name": name, "provider": provider})
}

#[test]
fn chaos_toolkit_impairs_three_hosts_and_rolls_back() {
    let lab = lab("agf");
    let hosts = [
        (lab.client.clone(), CLIENT_IF, "198.18.1.1"),
        (lab.router.clone(), ROUTER_EGRESS, "198.18.1.254"),
        (lab.server.clone(), SERVER_IF, "198.18.2.1"),
    ];
    let before: Vec<String> = hosts
        .iter()
        .map(|(ns, i, _)| iface_state(&lab, ns, i))
        .collect();
    let dir = Scratch::new("fleet");
    let token = dir.file("token", TOKEN);
    let mut agents: Vec<Agent> = hosts
        .iter()
        .map(|(ns, _, ip)| {
            Agent::start(
                ns,
                &["--listen", &format!("{ip}:7467"), "--token-file", &token],
            )
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let echo_thread = echo(&lab.server, Arc::clone(&stop));
    let probe = dir.file("probe.py", PROBE_PY);
    let python = "/opt/impair-pytools/bin/python3";
    let probe_args = |mode: &str| {
        json!([
            probe,
            "198.18.2.1",
            ECHO_PORT.to_string(),
            SENT.to_string(),
            mode
        ])
    };

    // Warm up: neighbours resolved on every hop before the steady state is judged.
    let warm = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client,
            python,
            &probe,
            "198.18.2.1",
            &ECHO_PORT.to_string(),
            "50",
            "measure",
        ])
        .output()
        .unwrap();
    assert!(warm.status.success(), "{warm:?}");

    let mut method = Vec::new();
    let mut rollbacks = Vec::new();
    for (i, (_, iface, ip)) in hosts.iter().enumerate() {
        let body = json!({"id": format!("fleet-{i}"), "target": {"interface": iface},
            "rules": [{"proto": "udp", "loss": "20%"}]});
        method.push(http(
            &format!("impair-{iface}"),
            "POST",
            &format!("http://{ip}:7467/v1/impairments"),
            Some(body),
            201,
        ));
        rollbacks.push(http(
            &format!("restore-{iface}"),
            "DELETE",
            &format!("http://{ip}:7467/v1/impairments/fleet-{i}"),
            None,
            200,
        ));
    }
    method.push(
        json!({"type": "probe", "name": "round-trip-during", "provider": {
        "type": "process", "path": python, "arguments": probe_args("measure"), "timeout": 60}}),
    );
    let experiment = json!({
        "version": "1.0.0",
        "title": "impair agents: 20% UDP loss on each of three hosts",
        "description": "Each agent impairs its host's interface on the client → server path (or the replies); the round trip loses all three.",
        "steady-state-hypothesis": {"title": "the round trip loses nothing", "probes": [{
            "type": "probe", "name": "round-trip-clean", "tolerance": 0,
            "provider": {"type": "process", "path": python, "arguments": probe_args("steady"), "timeout": 60}}]},
        "method": method,
        "rollbacks": rollbacks,
    });
    let exp = dir.file("experiment.json", &experiment.to_string());
    let journal = dir.path().join("journal.json");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client,
            "/opt/impair-pytools/bin/chaos",
            "--no-log-file",
            "run",
        ])
        .args([
            "--rollback-strategy",
            "always",
            "--hypothesis-strategy",
            "before-method-only",
        ])
        .arg("--journal-path")
        .arg(&journal)
        .arg(&exp)
        .current_dir(dir.path())
        .output()
        .expect("chaos (install it: cargo xtask setup)");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let j: Value = serde_json::from_str(&std::fs::read_to_string(&journal).unwrap_or_default())
        .unwrap_or(Value::Null);
    assert_eq!(j["status"], "completed", "chaos run: {log}\njournal: {j}");
    assert_eq!(
        j["steady_states"]["before"]["steady_state_met"], true,
        "{j}"
    );

    // During the method: the three independent 20% losses, combined.
    let during = j["run"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["activity"]["name"] == "round-trip-during")
        .expect("the method's probe ran");
    let m: Value =
        serde_json::from_str(during["output"]["stdout"].as_str().unwrap().trim()).unwrap();
    let received = m["received"].as_u64().unwrap();
    assert_inside(
        "round trip through three 20% losses",
        Z_SUITE,
        0.8f64.powi(3),
        received,
        SENT,
    );
    for r in j["run"].as_array().unwrap() {
        assert_eq!(r["status"], "succeeded", "{r}");
    }
    for r in j["rollbacks"].as_array().unwrap() {
        assert_eq!(r["status"], "succeeded", "{r}");
    }

    // After the rollback: nothing is lost, nothing is held, nothing is left.
    let after = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client,
            python,
            &probe,
            "198.18.2.1",
            &ECHO_PORT.to_string(),
            &SENT.to_string(),
            "steady",
        ])
        .output()
        .unwrap();
    assert!(
        after.status.success(),
        "the round trip after the rollback: {}",
        String::from_utf8_lossy(&after.stdout)
    );
    for (a, ((ns, iface, _), b)) in agents.iter_mut().zip(hosts.iter().zip(&before)) {
        a.curl_args = vec!["-H".into(), format!("Authorization: Bearer {TOKEN}")];
        assert_eq!(
            a.req("GET", "/v1/impairments", None).body,
            json!({"impairments": []})
        );
        assert_iface_restored(&lab, ns, iface, b);
    }
    stop.store(true, Ordering::Relaxed);
    echo_thread.join().unwrap();
}
