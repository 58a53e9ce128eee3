//! Super-packets that `gso_max_segs` cannot split, decided per wire packet
//! through the instance's segmenter (impair-user/src/engine/segmenter.rs):
//! UDP GSO (`UDP_SEGMENT`: the application chooses the size, the kernel
//! splits after the tc hook) at a local sender and forwarded by the router
//! (the client's super-packets cross the veth whole), with the kernel's
//! default offloads. Each send carries 10 wire datagrams numbered in order:
//! decided whole, a send arrives all or nothing; decided per wire packet, a
//! 10% loss leaves a send partly delivered with probability 1 − 0.9¹⁰ −
//! 0.1¹⁰ ≈ 0.651. `--keep-offloads` (no segmenter) is the control: every
//! send all or nothing, each counted as a super-packet.
use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    time::Duration,
};

use impair::netns;
use impair_tests::{
    ns::{impair_in, stats_json_in, stdout_ok, Controller},
    stats::assert_inside_suite,
};
use impair_tools::lab::{self, Lab, LabOptions};

/// Wire datagrams per send, and their payload (bytes).
const SEGS: usize = 10;
const SEG_BYTES: usize = 1000;
/// Sends per test: 20,000 wire datagrams.
const SENDS: usize = 2_000;
const PORT: u16 = 40_777;
const LOSS: f64 = 0.10;

/// What the receiver got: wire datagrams, and sends partly delivered.
struct Received {
    datagrams: u64,
    partial_sends: u64,
}

/// `SENDS` UDP GSO sends client → server, each `SEGS` datagrams of
/// `SEG_BYTES` (a 4-byte sequence number first), paced at about 20,000
/// datagrams/s; what the server received.
fn send_gso(lab: &Lab) -> Received {
    let (src, dst) = (lab.client_v4(), lab.server_v4());
    let rx = netns::run_in(&lab.server, move || {
        UdpSocket::bind(SocketAddr::new(dst.into(), PORT))
    })
    .unwrap()
    .unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    set_int(&rx, libc::SOL_SOCKET, libc::SO_RCVBUF, 8 << 20);
    let tx = netns::run_in(&lab.client, move || {
        UdpSocket::bind(SocketAddr::new(src.into(), 0))
    })
    .unwrap()
    .unwrap();
    // UDP_SEGMENT (include/uapi/linux/udp.h): the kernel splits each send.
    set_int(&tx, libc::SOL_UDP, 103, SEG_BYTES as libc::c_int);
    let receiver = std::thread::spawn(move || {
        let mut per_send = vec![0u8; SENDS];
        let mut buf = [0u8; 65_536];
        let mut datagrams = 0;
        while let Ok(n) = rx.recv(&mut buf) {
            assert_eq!(n, SEG_BYTES, "a datagram of the size UDP_SEGMENT gave");
            let seq = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            per_send[seq / SEGS] += 1;
            datagrams += 1;
        }
        let partial_sends = per_send
            .iter()
            .filter(|&&k| k != 0 && k as usize != SEGS)
            .count() as u64;
        Received {
            datagrams,
            partial_sends,
        }
    });
    let to = SocketAddr::new(dst.into(), PORT);
    let mut payload = vec![b'g'; SEGS * SEG_BYTES];
    for send in 0..SENDS {
        for j in 0..SEGS {
            let seq = (send * SEGS + j) as u32;
            payload[j * SEG_BYTES..j * SEG_BYTES + 4].copy_from_slice(&seq.to_be_bytes());
        }
        assert_eq!(tx.send_to(&payload, to).unwrap(), payload.len());
        if send % 2 == 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    receiver.join().unwrap()
}

fn set_int(s: &UdpSocket, level: libc::c_int, name: libc::c_int, v: libc::c_int) {
    // SAFETY: setsockopt on a socket this function's caller owns, with a
    // pointer to a c_int that lives across the call and its size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt({level}, {name}): {}",
        std::io::Error::last_os_error()
    );
}

/// A measurement line on stderr (libtest shows it with `--nocapture`).
fn say(msg: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

/// `ip -o link` of namespace `ns`, one device name per line.
fn devices(ns: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// UDP GSO through `--loss 10%` at `iface` in `ns_of(lab)`; `extra`
/// attach options. Returns the rule's counters and what was received,
/// after checking what holds either way and that detach leaves the
/// namespace's devices as they were.
fn run(
    tag: &str,
    ns_of: fn(&Lab) -> &str,
    iface: &str,
    extra: &[&str],
) -> (serde_json::Value, Received) {
    impair_tests::require_privileges();
    let lab = Lab::create_with(tag, LabOptions { offloads: true }).unwrap();
    let ns = ns_of(&lab).to_owned();
    let before = devices(&ns);
    let port = PORT.to_string();
    let base = [
        "--loss", "10%", "--proto", "udp", "--dport", &port, "--seed", "11",
    ];
    let ctl = Controller::start_in(&ns, iface, &[&base[..], extra].concat());
    let during = devices(&ns);
    let got = send_gso(&lab);
    let stats = stats_json_in(&ns, iface, &[]);
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    assert_eq!(
        devices(&ns),
        before,
        "detach leaves the devices as they were"
    );
    let rule = stats["rules"][0].clone();
    let n = |k: &str| rule[k].as_u64().unwrap_or_else(|| panic!("{k}: {stats}"));
    say(format_args!(
        "{tag}: devices while attached {during:?}; sent {} datagrams in {SENDS} sends, received {} \
         ({} sends partly); engine skbs {}, wire packets {}, dropped {}, super-packets {}",
        SENDS * SEGS,
        got.datagrams,
        got.partial_sends,
        n("packets"),
        n("wire_packets"),
        n("dropped_wire_packets"),
        n("super_packets"),
    ));
    let sent = (SENDS * SEGS) as u64;
    assert_eq!(n("wire_packets"), sent, "{stats}");
    assert_eq!(
        n("dropped_wire_packets"),
        sent - got.datagrams,
        "engine drops == sent − received: {stats}"
    );
    assert_eq!(stats["errors"], 0, "{stats}");
    let segmenter = during
        .iter()
        .any(|d| d.starts_with("imp") && d.contains('s'));
    assert_eq!(segmenter, !extra.contains(&"--keep-offloads"), "{during:?}");
    (rule, got)
}

/// Per wire packet: no super-packet decided whole, the datagrams' loss
/// inside the suite's interval of 10%, and sends partly delivered as often
/// as independent decisions make them.
fn assert_per_wire(rule: &serde_json::Value, got: &Received) {
    let n = |k: &str| rule[k].as_u64().unwrap();
    assert_eq!(n("super_packets"), 0, "{rule}");
    assert_eq!(n("packets"), n("wire_packets"), "{rule}");
    let sent = (SENDS * SEGS) as u64;
    assert_inside_suite(LOSS, sent - got.datagrams, sent);
    let partial = 1.0 - (1.0 - LOSS).powi(SEGS as i32) - LOSS.powi(SEGS as i32);
    assert_inside_suite(partial, got.partial_sends, SENDS as u64);
}

#[test]
fn udp_gso_at_a_local_sender_is_decided_per_wire_packet() {
    let (rule, got) = run("gsoloc", |l| l.client.as_str(), lab::CLIENT_IF, &[]);
    assert_per_wire(&rule, &got);
}

#[test]
fn forwarded_udp_gso_is_decided_per_wire_packet() {
    let (rule, got) = run("gsortr", |l| l.router.as_str(), lab::ROUTER_EGRESS, &[]);
    assert_per_wire(&rule, &got);
}

/// The control: without the segmenter every send is one decision.
#[test]
fn udp_gso_with_offloads_kept_is_decided_whole() {
    let (rule, got) = run(
        "gsokeep",
        |l| l.client.as_str(),
        lab::CLIENT_IF,
        &["--keep-offloads"],
    );
    assert_eq!(rule["super_packets"], rule["packets"], "{rule}");
    assert_eq!(rule["packets"], SENDS as u64, "{rule}");
    assert_eq!(got.partial_sends, 0, "whole sends only");
    // Whole sends lost: the send loss inside the interval of 10%.
    let lost_sends = (SENDS * SEGS) as u64 - got.datagrams;
    assert_eq!(lost_sends % SEGS as u64, 0);
    assert_inside_suite(LOSS, lost_sends / SEGS as u64, SENDS as u64);
}

/// A controller killed with its segmenter in place (tcx: its links die with
/// it; netlink: its clsact filter outlives it until the lease ends): traffic
/// passes, super-packets included, and the next impair command in the
/// namespace removes the pair (its journal in /run/impair), so the
/// namespace has the devices it had before.
fn killed_controller_leaves_no_segmenter(tag: &str, extra: &[&str]) {
    impair_tests::require_privileges();
    let lab = Lab::create_with(tag, LabOptions { offloads: true }).unwrap();
    let ns = lab.router.clone();
    let before = devices(&ns);
    let args = [&["--loss", "10%", "--seed", "5"][..], extra].concat();
    let ctl = Controller::start_in(&ns, lab::ROUTER_EGRESS, &args);
    assert!(
        devices(&ns).len() == before.len() + 2,
        "the segmenter's two ends: {:?}",
        devices(&ns)
    );
    let _ = ctl.signal_and_wait(libc::SIGKILL);
    // The lease (2 s) ends whatever outlived the controller.
    std::thread::sleep(Duration::from_millis(2_500));
    let got = send_gso(&lab);
    assert_eq!(
        got.datagrams,
        (SENDS * SEGS) as u64,
        "after the kill every datagram passes"
    );
    stdout_ok(&impair_in(&ns, &["status"]));
    assert_eq!(
        devices(&ns),
        before,
        "the next impair command removed the pair"
    );
}

#[test]
fn a_killed_controller_leaves_no_segmenter_tcx() {
    if !impair_tests::kernel::has_tcx() {
        impair_tests::note("gso::a_killed_controller_leaves_no_segmenter_tcx: no tcx on this kernel: the netlink variant runs");
        return;
    }
    killed_controller_leaves_no_segmenter("gsokill", &[]);
}

#[test]
fn a_killed_controller_leaves_no_segmenter_netlink() {
    killed_controller_leaves_no_segmenter("gsokilln", &["--attach-mode", "netlink"]);
}

/// The first rules that decide per packet come with a scenario's second
/// step (the first, `--corrupt 0%`, decides nothing per packet): the owner's
/// update (`Engine::update`) adds the segmenter at the step, as an attach
/// with those rules would have, so UDP GSO sent during the step is decided
/// per wire packet. A SIGTERM removes the pair; after a SIGKILL the next
/// impair command does.
#[test]
fn a_scenario_step_that_decides_per_packet_adds_the_segmenter() {
    impair_tests::require_privileges();
    let dir = impair_tests::Scratch::new("gsoscn");
    let path = dir.file(
        "s.toml",
        &format!(
            "[[step]]\nduration = \"1s\"\n[[step.rule]]\nproto = \"udp\"\ndport = {PORT}\n\
             corrupt = \"0%\"\n[[step]]\nduration = \"300s\"\n[[step.rule]]\nproto = \"udp\"\n\
             dport = {PORT}\nloss = \"10%\"\n"
        ),
    );
    let lab = Lab::create_with("gsoscn", LabOptions { offloads: true }).unwrap();
    let ns = lab.client.clone();
    let before = devices(&ns);
    for kill in [libc::SIGTERM, libc::SIGKILL] {
        let ctl = Controller::start_in(&ns, lab::CLIENT_IF, &["--scenario", &path, "--seed", "11"]);
        assert_eq!(devices(&ns), before, "step 1 makes no segmenter");
        // Step 2 is in force once its rules are (the segmenter comes just
        // before them).
        let t = std::time::Instant::now();
        loop {
            let label = stats_json_in(&ns, lab::CLIENT_IF, &[])["owner"]["label"].clone();
            if label.as_str().is_some_and(|l| l.contains("step 2")) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "step 2 (10% loss) did not begin: {label}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            devices(&ns).len(),
            before.len() + 2,
            "step 2 added the segmenter: {:?}",
            devices(&ns)
        );
        let got = send_gso(&lab);
        let stats = stats_json_in(&ns, lab::CLIENT_IF, &[]);
        let rule = stats["rules"][0].clone();
        let n = |k: &str| rule[k].as_u64().unwrap_or_else(|| panic!("{k}: {stats}"));
        say(format_args!(
            "gsoscn: received {} of {} datagrams ({} sends partly); engine wire packets {}, \
             dropped {}, super-packets {}",
            got.datagrams,
            SENDS * SEGS,
            got.partial_sends,
            n("wire_packets"),
            n("dropped_wire_packets"),
            n("super_packets"),
        ));
        let sent = (SENDS * SEGS) as u64;
        assert_eq!(n("wire_packets"), sent, "{stats}");
        assert_eq!(n("dropped_wire_packets"), sent - got.datagrams, "{stats}");
        assert_per_wire(&rule, &got);
        let status = ctl.signal_and_wait(kill);
        if kill == libc::SIGKILL {
            assert!(!status.success());
            stdout_ok(&impair_in(&ns, &["status"]));
        } else {
            assert!(status.success());
        }
        assert_eq!(devices(&ns), before, "no segmenter after signal {kill}");
    }
}

/// An update from another process cannot add the segmenter (its return
/// link would die with that process): it says so in one line, and the
/// namespace's devices stay as they are.
#[test]
fn an_update_from_another_process_says_it_adds_no_segmenter() {
    impair_tests::require_privileges();
    let lab = Lab::create_with("gsoupd", LabOptions { offloads: true }).unwrap();
    let ns = lab.client.clone();
    let before = devices(&ns);
    let port = PORT.to_string();
    let ctl = Controller::start_in(
        &ns,
        lab::CLIENT_IF,
        &["--proto", "udp", "--dport", &port, "--corrupt", "0%"],
    );
    assert_eq!(devices(&ns), before);
    let out = stdout_ok(&impair_in(
        &ns,
        &["update", lab::CLIENT_IF, "--loss", "10%"],
    ));
    assert!(
        out.lines()
            .any(|l| l.contains("no segmenter") && l.contains("super_packets")),
        "{out}"
    );
    assert_eq!(devices(&ns), before, "no segmenter made by another process");
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    assert_eq!(devices(&ns), before);
}

// Received traffic at tc ingress, which runs after GRO. The lab's veths
// have TSO/GSO/GRO off (wire packets cross them: the client's TCP segments
// in software before its veth), and the server's `s0` has GRO on, which on
// a veth enables NAPI GRO: received TCP segments are merged into
// super-packets before tc ingress. With `--keep-offloads` (the control)
// impair decides those whole; by default GRO goes off on `s0` while a rule
// decides per packet (offload.rs), and is back on after detach or, after a
// SIGKILL, after the next impair command.

/// Bytes the client sends the server over one TCP connection.
const TCP_BYTES: usize = 16 << 20;
const TCP_PORT: u16 = 40_778;

/// `ethtool ARGS` in namespace `ns`, its stdout (it must succeed).
fn ethtool(ns: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "ethtool"])
        .args(args)
        .output()
        .expect("running ethtool");
    assert!(
        out.status.success(),
        "ethtool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `ethtool -k` reads generic-receive-offload on for `iface` in `ns`.
fn gro_on(ns: &str, iface: &str) -> bool {
    let k = ethtool(ns, &["-k", iface]);
    let line = k
        .lines()
        .find(|l| l.starts_with("generic-receive-offload:"))
        .unwrap_or_else(|| panic!("no generic-receive-offload line: {k}"));
    line.split_whitespace().nth(1) == Some("on")
}

/// A lab whose veths carry wire packets, with GRO on at the server's `s0`.
fn gro_lab(tag: &str) -> Lab {
    let lab = impair_tests::ns::lab(tag);
    ethtool(&lab.server, &["-K", lab::SERVER_IF, "gro", "on"]);
    assert!(gro_on(&lab.server, lab::SERVER_IF));
    lab
}

/// `TCP_BYTES` over one TCP connection client → server; returns the
/// bytes the server read.
fn send_tcp(lab: &Lab) -> usize {
    use std::io::{Read as _, Write as _};
    let dst = lab.server_v4();
    let listener = netns::run_in(&lab.server, move || {
        std::net::TcpListener::bind(SocketAddr::new(dst.into(), TCP_PORT))
    })
    .unwrap()
    .unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        loop {
            match s.read(&mut buf).unwrap() {
                0 => return got,
                n => got += n,
            }
        }
    });
    // The client's only address is its source.
    let mut tx = netns::run_in(&lab.client, move || {
        std::net::TcpStream::connect_timeout(
            &SocketAddr::new(dst.into(), TCP_PORT),
            Duration::from_secs(5),
        )
    })
    .unwrap()
    .unwrap();
    let chunk = vec![b't'; 1 << 16];
    for _ in 0..TCP_BYTES / chunk.len() {
        tx.write_all(&chunk).unwrap();
    }
    drop(tx);
    server.join().unwrap()
}

/// TCP client → server through a per-packet rule (`--loss 0%`: decided per
/// packet, dropping nothing) on received traffic at `s0`, with `extra`
/// attach options. Returns the rule's counters and whether GRO read on
/// while attached, after checking the data arrived, every wire packet was
/// seen, and detach put GRO back on.
fn received_tcp(tag: &str, extra: &[&str]) -> (serde_json::Value, bool) {
    let lab = gro_lab(tag);
    let ns = lab.server.clone();
    let port = TCP_PORT.to_string();
    let base = [
        "--direction",
        "ingress",
        "--loss",
        "0%",
        "--proto",
        "tcp",
        "--dport",
        &port,
    ];
    let ctl = Controller::start_in(&ns, lab::SERVER_IF, &[&base[..], extra].concat());
    let gro_during = gro_on(&ns, lab::SERVER_IF);
    let got = send_tcp(&lab);
    let stats = stats_json_in(&ns, lab::SERVER_IF, &[]);
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    assert!(gro_on(&ns, lab::SERVER_IF), "detach put s0's GRO back on");
    assert_eq!(got, TCP_BYTES, "every byte arrived");
    let rule = stats["rules"][0].clone();
    let n = |k: &str| rule[k].as_u64().unwrap_or_else(|| panic!("{k}: {stats}"));
    say(format_args!(
        "{tag}: GRO on s0 while attached: {gro_during}; {TCP_BYTES} bytes received; engine skbs {}, \
         wire packets {}, super-packets {}, dropped {}",
        n("packets"),
        n("wire_packets"),
        n("super_packets"),
        n("dropped_wire_packets"),
    ));
    assert_eq!(n("dropped_wire_packets"), 0, "{stats}");
    assert_eq!(stats["errors"], 0, "{stats}");
    // At most one MSS (1448 bytes with timestamps) per wire packet.
    assert!(
        n("wire_packets") >= (TCP_BYTES / 1448) as u64,
        "every data segment seen: {stats}"
    );
    (rule, gro_during)
}

/// The control: GRO left on, received segments arrive merged and are
/// decided whole.
#[test]
fn received_tcp_with_offloads_kept_is_decided_whole_after_gro() {
    let (rule, gro_during) = received_tcp("grokeep", &["--keep-offloads"]);
    assert!(gro_during, "--keep-offloads leaves GRO on");
    let n = |k: &str| rule[k].as_u64().unwrap();
    assert!(n("super_packets") > 0, "GRO merged segments: {rule}");
    assert!(n("packets") < n("wire_packets"), "{rule}");
}

/// By default GRO is off on `s0` while attached: every received skb is one
/// wire packet.
#[test]
fn received_tcp_is_decided_per_wire_packet_at_tc_ingress() {
    let (rule, gro_during) = received_tcp("grooff", &[]);
    assert!(!gro_during, "GRO off on s0 while attached");
    assert_eq!(rule["super_packets"], 0, "{rule}");
    assert_eq!(rule["packets"], rule["wire_packets"], "{rule}");
}

/// The same through the ifb (a rule that holds packets: tc ingress
/// redirects to it, after GRO all the same).
#[test]
fn received_tcp_through_the_ifb_is_decided_per_wire_packet() {
    let test = "gso::received_tcp_through_the_ifb_is_decided_per_wire_packet";
    let probe = impair_tests::ns::lab("groifbk");
    if !impair_tests::kernel::fq_or_note(&probe, test, "the ifb path is not run") {
        return;
    }
    drop(probe);
    let (rule, gro_during) = received_tcp("groifb", &["--delay", "1ms"]);
    assert!(!gro_during, "GRO off on s0 while attached");
    assert_eq!(rule["super_packets"], 0, "{rule}");
    assert_eq!(rule["packets"], rule["wire_packets"], "{rule}");
}

/// A controller SIGKILLed with GRO off: the next `impair detach s0` in the
/// namespace puts it back on (its journal in /run/impair) and says so, as it
/// does a killed egress instance's offloads (tcp.rs); `impair status` does
/// not restore offloads.
#[test]
fn a_killed_controller_leaves_gro_as_it_was() {
    let lab = gro_lab("grokill");
    let ns = lab.server.clone();
    let ctl = Controller::start_in(
        &ns,
        lab::SERVER_IF,
        &["--direction", "ingress", "--loss", "10%"],
    );
    assert!(!gro_on(&ns, lab::SERVER_IF), "GRO off while attached");
    let _ = ctl.signal_and_wait(libc::SIGKILL);
    assert!(!gro_on(&ns, lab::SERVER_IF), "nothing restored it yet");
    let out = stdout_ok(&impair_in(&ns, &["detach", lab::SERVER_IF]));
    assert!(out.contains("removed what a killed impair left"), "{out}");
    assert!(
        gro_on(&ns, lab::SERVER_IF),
        "the next impair command restored GRO"
    );
}
