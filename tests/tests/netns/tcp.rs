//! Real TCP: iperf3 from Debian (a client no one here wrote) through impair,
//! with the kernel's default offloads (TSO/GSO on the veths, so the sender's
//! skbs are GSO super-packets of up to ~45 wire segments), read back through
//! the kernel's own TCP counters (`nstat`).
//!
//! What these check: a drop at egress is a network loss (the sender's TCP
//! retransmits exactly the wire segments impair dropped; with `TC_ACT_SHOT`
//! the local stack was told and resent whole skbs at once, so the two
//! disagreed by an order of magnitude), and the engine's wire counters
//! (`wire_packets`, `dropped_wire_packets`) count what TCP counts; at the
//! receiver, the data connection's `data_segs_in` (per wire segment, read
//! from `ss -tinE` when the socket is destroyed) is what the sender's
//! `data_segs_out` was less what impair dropped.
//!
//! Both topologies: the client's own egress (`c0`, a local sender) and the
//! router's `r1` (forwarded traffic).
//!
//! Also with default offloads: `detectable` corruption of UDP is detected
//! although the sender leaves checksums partial (impair turns transmit
//! checksumming off on the impaired device while attached and restores it,
//! also after a crash); and `impair update` from another process to a rule
//! that decides per packet makes the offload changes the attach did not
//! (restored by detach, and after the owner's crash).
use std::{
    collections::HashMap,
    process::{Command, Stdio},
    time::Duration,
};

use impair_tests::{
    ns::{impair_in, probe, stats_json_in, stdout_ok, Controller},
    ss,
    stats::assert_inside_suite,
};
use impair_tools::lab::{self, Lab, LabOptions};

/// The iperf3 port (the lab's namespaces are private, so any port is free).
const PORT: &str = "5201";
/// Bytes the client sends: ≥ 100,000 full-size segments (1448 bytes each).
const BYTES: &str = "160M";
const MIN_SEGMENTS: u64 = 100_000;
/// iperf3's own pacing: a full-speed flow would take both of the machine's
/// CPUs from the timing-sensitive tests running beside these (rate and
/// policing tests measure their own sender's lateness); 500 Mbit/s sends
/// [`BYTES`] in under 3 s.
const RATE: &str = "500M";

/// A measurement line on stderr, seen in passing runs too (libtest captures
/// `eprintln!`; the numbers are the test's record).
fn say(msg: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

fn require_tools() {
    impair_tests::require_privileges();
    for tool in ["iperf3", "nstat"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} is not installed: `cargo xtask setup` installs it (TEST_TOOLS)"
        );
    }
}

/// A lab with the kernel's default offloads on every veth.
fn lab_with_offloads(tag: &str) -> Lab {
    require_tools();
    Lab::create_with(tag, LabOptions { offloads: true }).unwrap()
}

/// The namespace's absolute SNMP/netstat counters (`nstat -asz`: absolute,
/// zeros included, the history file left alone).
fn nstat(lab: &Lab, ns: &str) -> HashMap<String, u64> {
    lab.exec(ns, &["nstat", "-asz"])
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_owned(), w.next()?.parse().ok()?))
        })
        .collect()
}

/// `after[name] - before[name]`.
fn delta(before: &HashMap<String, u64>, after: &HashMap<String, u64>, name: &str) -> u64 {
    after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0)
}

/// Sends [`BYTES`] client → server with iperf3 (one TCP connection, kernel
/// defaults) and returns what the client's TCP counted meanwhile (and, named
/// as nstat names them, the server's TcpInCsumErrors and DSACKs sent), and
/// the data connection's own counters at its end, as `ss -tinE` shows each
/// side's socket when it is destroyed (named `sender_*` and `receiver_*`:
/// `sender_data_segs_out`, `sender_bytes_sent`, `sender_total_retrans`,
/// `receiver_data_segs_in`, `receiver_bytes_received`, ...).
fn iperf3(lab: &Lab) -> HashMap<String, u64> {
    let server_addr = lab.server_v4().to_string();
    let sender_end = ss::Destroyed::start(&lab.client);
    let receiver_end = ss::Destroyed::start(&lab.server);
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.server,
            "iperf3",
            "-s",
            "-1",
            "-p",
            PORT,
        ])
        .args(["-B", &server_addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting iperf3 -s");
    std::thread::sleep(Duration::from_millis(300));
    let before = nstat(lab, &lab.client);
    let server_before = nstat(lab, &lab.server);
    let out = Command::new("timeout")
        .args(["60", "ip", "netns", "exec", &lab.client, "iperf3", "-c"])
        .args([&server_addr, "-p", PORT, "-n", BYTES, "-b", RATE])
        .output()
        .expect("running iperf3 -c");
    let after = nstat(lab, &lab.client);
    let server_after = nstat(lab, &lab.server);
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        out.status.success(),
        "iperf3 -c: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let settle = Duration::from_millis(300);
    let (sent, received) = (sender_end.finish(settle), receiver_end.finish(settle));
    let mut m = HashMap::new();
    for name in ["TcpOutSegs", "TcpRetransSegs", "TcpExtTCPDSACKRecvSegs"] {
        m.insert(name.to_owned(), delta(&before, &after, name));
    }
    for name in [
        "TcpInCsumErrors",
        "TcpExtTCPDSACKOldSent",
        "TcpExtTCPDSACKOfoSent",
    ] {
        m.insert(name.to_owned(), delta(&server_before, &server_after, name));
    }
    // The data connection: of the server port's connections (iperf3's
    // control connection is the other), the one that received the most; the
    // client's socket of the same four-tuple.
    let port: u16 = PORT.parse().unwrap();
    let rx = received
        .iter()
        .filter(|s| s.local_port() == Some(port) && s.peer_port().is_some())
        .max_by_key(|s| s.n("data_segs_in"))
        .unwrap_or_else(|| panic!("no destroyed server socket on port {port}: {received:?}"));
    let tx = sent
        .iter()
        .find(|s| s.local == rx.peer && s.peer == rx.local)
        .unwrap_or_else(|| panic!("the client's end of {rx:?} not seen destroyed: {sent:?}"));
    for f in [
        "data_segs_out",
        "bytes_sent",
        "bytes_acked",
        "bytes_retrans",
        "mss",
    ] {
        m.insert(format!("sender_{f}"), tx.n(f));
    }
    // `retrans:CURRENT/TOTAL`: the segments retransmitted over the connection.
    let total_retrans = tx
        .fields
        .get("retrans")
        .and_then(|v| v.split('/').nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    m.insert("sender_total_retrans".to_owned(), total_retrans);
    for f in ["data_segs_in", "bytes_received"] {
        m.insert(format!("receiver_{f}"), rx.n(f));
    }
    let mut why: Vec<String> = after
        .keys()
        .filter(|k| k.starts_with("TcpExtTCP") && delta(&before, &after, k) > 0)
        .map(|k| format!("{k} {}", delta(&before, &after, k)))
        .collect();
    why.sort();
    say(format_args!("client TcpExt: {}", why.join(", ")));
    m
}

/// 1% loss on TCP to the server at `iface` in `ns` (the client's own egress
/// or the router's), over iperf3 with default offloads (`per_wire`: impair
/// made the sender build one wire packet per skb; else super-packets are
/// decided whole and counted so):
/// - the engine decides per skb, so its skb losses are Bernoulli(1%): inside
///   the 99% Wilson interval;
/// - the sender retransmits exactly the wire segments impair dropped (the
///   drop is a network loss), once its spurious retransmissions are taken
///   out: a segment resent though it had arrived (a spurious RTO when the
///   2-core machine is busy, a tail-loss probe) reaches the receiver twice,
///   which reports it in a DSACK (TcpExtTCPDSACKRecvSegs at the sender).
///   The receiver reports one DSACK range per ACK, so when several spurious
///   copies arrive between two ACKs some go unreported: up to 20% of the
///   drops plus 20 more retransmissions are allowed (seen: 0 to 3% on an
///   idle machine, 2.7% with tests running beside it). Fewer only by the
///   tail: iperf3 ends the test when the client has *written* everything
///   (its control connection says so, and the server closes), so the last
///   skb in flight may be lost and never resent — one super-packet, at most
///   [`MAX_SEGS_PER_SKB`] (seen: 0, 39, 44) — and a few dropped packets
///   need no retransmission (pure ACKs and the iperf3 control connection's
///   segments, at 1% of a few dozen): 5. With
///   `TC_ACT_SHOT` the sender resent far fewer segments than were dropped
///   (the issue measured 38 for 587 dropped skbs of ~40 segments).
/// - at least [`MIN_SEGMENTS`] data segments went out.
fn loss_is_repaired_by_the_sender(
    tag: &str,
    ns_of: fn(&Lab) -> &str,
    iface: &str,
    extra: &[&str],
    per_wire: bool,
) {
    let lab = lab_with_offloads(tag);
    let ns = ns_of(&lab).to_owned();
    let dst = format!("{}/32", lab.server_v4());
    let base = [
        "--loss", "1%", "--proto", "tcp", "--dst", &dst, "--seed", "7",
    ];
    let ctl = Controller::start_in(&ns, iface, &[&base[..], extra].concat());
    let tcp = iperf3(&lab);
    let stats = stats_json_in(&ns, iface, &[]);
    drop(ctl);
    if extra.contains(&"netlink") {
        assert_eq!(stats["owner"]["attach_mode"], "netlink", "{stats}");
    }
    assert_loss_repaired(tag, &stats, &tcp, per_wire);
}

/// The checks of [`loss_is_repaired_by_the_sender`] on one run's engine
/// counters (`impair stats --json`) and TCP counters ([`iperf3`]).
fn assert_loss_repaired(
    tag: &str,
    stats: &serde_json::Value,
    tcp: &HashMap<String, u64>,
    per_wire: bool,
) {
    let rule = &stats["rules"][0];
    let n = |k: &str| rule[k].as_u64().unwrap_or_else(|| panic!("{k}: {stats}"));
    let (out, retrans, spurious) = (
        tcp["TcpOutSegs"],
        tcp["TcpRetransSegs"],
        tcp["TcpExtTCPDSACKRecvSegs"],
    );
    say(format_args!(
        "{tag}: TcpOutSegs {out} TcpRetransSegs {retrans} (DSACKed {spurious}); engine skbs {} (dropped {}), wire \
         packets {} (dropped {}), super-packets decided whole {}",
        n("packets"),
        n("dropped_loss"),
        n("wire_packets"),
        n("dropped_wire_packets"),
        n("super_packets")
    ));
    assert!(out >= MIN_SEGMENTS, "{out} segments sent");
    assert_inside_suite(0.01, n("dropped_loss"), n("packets"));
    if per_wire {
        // One wire packet per skb: each decided alone, so the wire packets'
        // loss is Bernoulli(1%) too.
        assert_eq!(n("super_packets"), 0, "{stats}");
        assert_eq!(n("wire_packets"), n("packets"), "{stats}");
        assert_inside_suite(0.01, n("dropped_wire_packets"), n("wire_packets"));
    } else {
        assert!(
            n("super_packets") > 0,
            "offloads kept: super-packets decided whole: {stats}"
        );
    }
    let dropped = n("dropped_wire_packets");
    assert!(dropped > 0, "{stats}");
    let (lo, hi) = (
        dropped.saturating_sub(MAX_SEGS_PER_SKB + 5),
        dropped + dropped / 5 + 20,
    );
    let repaired = retrans - spurious.min(retrans);
    assert!(
        (lo..=hi).contains(&repaired),
        "TCP retransmitted {retrans} segments ({spurious} of them spurious); impair dropped \
         {dropped} wire packets (allowed {lo}..={hi}): {stats}"
    );
    // The engine saw every segment TCP sent (the rule matches the data and
    // the control connection, both to the server): wire packets count
    // segments, not skbs. TcpOutSegs leaves out retransmissions; the engine
    // sees those too.
    let wire = n("wire_packets");
    assert!(
        wire.abs_diff(out + retrans) <= 10,
        "engine wire packets {wire} vs TcpOutSegs + TcpRetransSegs {}: {stats}",
        out + retrans
    );
    receiver_counts_what_was_not_dropped(tag, tcp, wire, dropped);
}

/// At the receiver, the data connection's `data_segs_in` (per wire segment,
/// as `ss -ti` shows it; read when the socket is destroyed, so these are its
/// last values) is what the sender sent less what impair dropped.
///
/// Every data segment the sender transmitted on the data connection (its
/// `data_segs_out`, retransmissions included) was either dropped by impair,
/// counted by the receiver (`data_segs_in`, duplicates included), or still
/// on its way when the receiver's socket went (the tail: iperf3's server
/// closes the data connection with unread data once the client says it has
/// written everything, and the kernel resets it). So
/// `data_segs_in = data_segs_out − dropped_data − tail`, where:
/// - `dropped_data` is at most the engine's `dropped_wire_packets`, and
///   less by the drops that were no data segment of the data connection:
///   at most `other` = the rule's wire packets that were not (`wire_packets
///   − data_segs_out`: handshakes, FINs and resets, iperf3's control
///   connection; a few dozen). Nothing else drops: a veth has no loss of
///   its own.
/// - the tail is at most the segments of the stream the receiver had not
///   received in order when its socket went: `ceil((bytes_sent −
///   bytes_retrans − bytes_received) / mss) + 1` (the stream's length at
///   the sender less the receiver's in-order bytes, in segments: iperf3
///   writes 128 KB blocks back to back and TCP fills every segment to the
///   MSS, so only the stream's last segment may be shorter, the `+ 1`).
///   Each such segment has at most one copy on its way (a second one would
///   be a retransmission sent less than a round trip after the first).
///   Nothing else is on its way: a copy of data the receiver already had
///   arrives before the reset, in a few µs on a veth, unless it was sent in
///   the last of them; then this fails and says so.
///
/// Hence `out − dropped − tail_bound ≤ data_segs_in ≤ out − dropped +
/// other`: the engine's count of dropped wire packets is what the receiver
/// misses, to the packet up to these two few-dozen-segment terms.
fn receiver_counts_what_was_not_dropped(
    tag: &str,
    tcp: &HashMap<String, u64>,
    wire: u64,
    dropped: u64,
) {
    let out = tcp["sender_data_segs_out"];
    let data_in = tcp["receiver_data_segs_in"];
    let stream_bytes = tcp["sender_bytes_sent"] - tcp["sender_bytes_retrans"];
    let undelivered_bytes = stream_bytes.saturating_sub(tcp["receiver_bytes_received"]);
    let tail = undelivered_bytes.div_ceil(tcp["sender_mss"].max(1)) + 1;
    let other = wire.saturating_sub(out);
    let expected = out - dropped.min(out);
    say(format_args!(
        "{tag}: receiver data_segs_in {data_in}; sender data_segs_out {out} (retransmitted {}), engine \
         dropped {dropped} wire packets: expected {expected}, difference {} (allowed -{tail}..=+{other}; \
         {undelivered_bytes} bytes of the stream not received in order at the end)",
        tcp["sender_total_retrans"],
        data_in as i64 - expected as i64,
    ));
    assert!(out >= MIN_SEGMENTS, "{out} data segments sent: {tcp:?}");
    assert!(
        (expected.saturating_sub(tail)..=expected + other).contains(&data_in),
        "receiver data_segs_in {data_in}, sender data_segs_out {out} − impair's dropped wire packets {dropped} = \
         {expected} (allowed −{tail} (not yet delivered at the end) .. +{other} (drops of other packets)): {tcp:?}"
    );
}

/// The client's own egress: a local TCP sender, decided per wire packet
/// (impair sets `gso_max_segs` 1 on `c0` while attached).
#[test]
fn local_sender_retransmits_exactly_the_dropped_wire_packets() {
    loss_is_repaired_by_the_sender("tcploc", |l| l.client.as_str(), lab::CLIENT_IF, &[], true);
}

/// The same with `--keep-offloads`: super-packets of ~40 segments decided
/// whole, and still every dropped wire packet counted and retransmitted.
#[test]
fn local_sender_with_offloads_kept_counts_super_packets() {
    loss_is_repaired_by_the_sender(
        "tcpkeep",
        |l| l.client.as_str(),
        lab::CLIENT_IF,
        &["--keep-offloads"],
        false,
    );
}

/// The same through a clsact filter (netlink; every kernel before 6.6 uses
/// it): the redirect to ifindex 0 is a network loss there too.
#[test]
fn local_sender_retransmits_the_dropped_wire_packets_netlink_clsact() {
    loss_is_repaired_by_the_sender(
        "tcpcls",
        |l| l.client.as_str(),
        lab::CLIENT_IF,
        &["--attach-mode", "netlink"],
        true,
    );
}

/// The router's egress: forwarded TCP. The client's GSO skbs cross the veths
/// whole and are forwarded as they are (no GRO merged them, so turning GRO
/// off on the router changes nothing); the instance's segmenter splits each
/// before it is decided, so every wire packet is decided alone.
#[test]
fn forwarded_tcp_loss_is_retransmitted_exactly() {
    loss_is_repaired_by_the_sender(
        "tcprtr",
        |l| l.router.as_str(),
        lab::ROUTER_EGRESS,
        &[],
        true,
    );
}

/// The rule's counters after iperf3 through `impair attach c0 ARGS` (the
/// client's own egress, TCP to the server), and what TCP counted.
fn tcp_through_client(tag: &str, args: &[&str]) -> (serde_json::Value, HashMap<String, u64>) {
    let lab = lab_with_offloads(tag);
    let dst = format!("{}/32", lab.server_v4());
    let all = [&["--proto", "tcp", "--dst", &dst][..], args].concat();
    let ctl = Controller::start_in(&lab.client, lab::CLIENT_IF, &all);
    let tcp = iperf3(&lab);
    let stats = stats_json_in(&lab.client, lab::CLIENT_IF, &[]);
    drop(ctl);
    (stats["rules"][0].clone(), tcp)
}

/// The most wire packets one skb carries: a 64 KB GSO skb of 1448-byte segments.
const MAX_SEGS_PER_SKB: u64 = 46;

/// `--corrupt 1%` (detectable) on TCP with default offloads at a local
/// sender: impair makes it send one wire packet per skb and completes
/// checksums in software, so each corruption fails exactly one segment's
/// checksum at the server (TcpInCsumErrors = the engine's `corrupted`,
/// Bernoulli(1%) per wire packet) and the client retransmits them. (With
/// `--keep-offloads` a corrupted super-packet's segments would all carry the
/// perturbed seed — GSO copies it into each — and fail together.)
#[test]
fn tcp_corruption_is_detected_and_repaired() {
    let (rule, tcp) = tcp_through_client("tcpcor", &["--corrupt", "1%", "--seed", "5"]);
    let n = |k: &str| rule[k].as_u64().unwrap_or_else(|| panic!("{k}: {rule}"));
    let (corrupted, errors, retrans) = (
        n("corrupted"),
        tcp["TcpInCsumErrors"],
        tcp["TcpRetransSegs"],
    );
    say(format_args!(
        "tcpcor: engine skbs {} corrupted {corrupted}; server TcpInCsumErrors {errors}; client \
         TcpRetransSegs {retrans}",
        n("packets")
    ));
    assert!(tcp["TcpOutSegs"] >= MIN_SEGMENTS);
    assert_eq!(n("super_packets"), 0, "{rule}");
    assert_inside_suite(0.01, corrupted, n("wire_packets"));
    assert_eq!(
        errors, corrupted,
        "one checksum error per corruption: {rule}"
    );
    assert!(
        retrans + 5 >= errors,
        "the sender repaired them: {retrans} < {errors}"
    );
}

/// `--duplicate 5%` on TCP with default offloads at a local sender (one wire
/// packet per skb): the engine's duplicates are Bernoulli(5%) per wire
/// packet, and the server saw each: a duplicate arrives behind its original,
/// all old data, and the receiver answers it with a DSACK. More DSACKs come
/// only from the sender's spurious retransmissions (one-segment skbs on a
/// veth reach the receiver through two CPUs' backlogs and are reordered):
/// at most one per retransmitted segment.
#[test]
fn tcp_duplicates_reach_the_receiver() {
    let (rule, tcp) = tcp_through_client("tcpdup", &["--duplicate", "5%", "--seed", "5"]);
    let n = |k: &str| rule[k].as_u64().unwrap_or_else(|| panic!("{k}: {rule}"));
    let (dup, dsacks) = (
        n("duplicated"),
        tcp["TcpExtTCPDSACKOldSent"] + tcp["TcpExtTCPDSACKOfoSent"],
    );
    say(format_args!(
        "tcpdup: engine skbs {} duplicated {dup}; server DSACKs sent {dsacks}",
        n("packets")
    ));
    assert!(tcp["TcpOutSegs"] >= MIN_SEGMENTS);
    assert_eq!(n("super_packets"), 0, "{rule}");
    assert_inside_suite(0.05, dup, n("wire_packets"));
    let retrans = tcp["TcpRetransSegs"];
    assert!(
        dup > 0 && (dup..=dup + retrans + 5).contains(&dsacks),
        "{dsacks} DSACKs for {dup} duplicates and {retrans} retransmissions: {rule}"
    );
}

/// `ethtool -k IFACE` in `ns` (every offload feature and its state), then
/// the link's `gso_max_segs`/`gso_max_size` as `ip -d link` shows them.
fn features(lab: &Lab, ns: &str, iface: &str) -> String {
    let mut s = lab.exec(ns, &["ethtool", "-k", iface]).unwrap();
    let link = lab
        .exec(ns, &["ip", "-d", "link", "show", "dev", iface])
        .unwrap();
    for w in ["gso_max_segs", "gso_max_size"] {
        let v = link
            .split(&format!("{w} "))
            .nth(1)
            .and_then(|r| r.split_whitespace().next());
        s += &format!("{w} {}\n", v.unwrap_or("?"));
    }
    s
}

/// `detectable` UDP corruption (10%) at `iface` in `ns` with the kernel's
/// default offloads (the sender's UDP checksums are partial, and a veth
/// receiver trusts a partial checksum): impair turns transmit checksumming
/// off while attached, so the corrupted datagrams fail the server's UDP
/// checksum: none reaches the application, the server's UdpInCsumErrors
/// counts exactly the engine's corruptions, and detach restores every
/// feature exactly. A SIGKILLed controller's change is restored by the next
/// `impair detach IFACE` (its journal in /run/impair).
fn detectable_corruption_with_default_offloads(tag: &str, ns_of: fn(&Lab) -> &str, iface: &str) {
    let lab = lab_with_offloads(tag);
    let ns = ns_of(&lab).to_owned();
    let before = features(&lab, &ns, iface);
    assert!(before.contains("tx-checksumming: on"), "{before}");
    let server_before = nstat(&lab, &lab.server);
    let ctl = Controller::start_in(&ns, iface, &["--corrupt", "10%", "--seed", "9"]);
    let during = features(&lab, &ns, iface);
    assert!(
        during.contains("tx-checksumming: off"),
        "off while attached: {during}"
    );
    assert!(
        during.contains("gso_max_segs 1\n"),
        "one wire packet per skb: {during}"
    );
    let r = probe(&lab, false, 0, 4_000, 200);
    let stats = stats_json_in(&ns, iface, &[]);
    let corrupted = stats["rules"][0]["corrupted"].as_u64().unwrap();
    let csum_errors = delta(&server_before, &nstat(&lab, &lab.server), "UdpInCsumErrors");
    drop(ctl);
    assert_inside_suite(0.10, corrupted, r.sent);
    assert_eq!(
        r.corrupted, 0,
        "no damaged payload reaches the application: {r:?}"
    );
    assert_eq!(
        r.lost, corrupted,
        "the receiver dropped the corrupted ones: {stats}"
    );
    assert_eq!(
        csum_errors, corrupted,
        "UdpInCsumErrors counts them: {stats}"
    );
    assert_eq!(
        features(&lab, &ns, iface),
        before,
        "detach restores the offloads"
    );

    // A controller killed while attached: the next `impair detach` restores.
    let ctl = Controller::start_in(&ns, iface, &["--corrupt", "10%"]);
    assert!(!ctl.signal_and_wait(libc::SIGKILL).success());
    let left = features(&lab, &ns, iface);
    assert!(left.contains("tx-checksumming: off") && left.contains("gso_max_segs 1\n"));
    let out = stdout_ok(&impair_in(&ns, &["detach", iface]));
    assert!(out.contains("removed"), "{out}");
    assert_eq!(features(&lab, &ns, iface), before, "restored after a crash");

    // --keep-offloads changes nothing.
    let ctl = Controller::start_in(&ns, iface, &["--corrupt", "10%", "--keep-offloads"]);
    assert_eq!(features(&lab, &ns, iface), before, "--keep-offloads");
    drop(ctl);
}

#[test]
fn detectable_udp_corruption_with_default_offloads_local_sender() {
    detectable_corruption_with_default_offloads("csumloc", |l| l.client.as_str(), lab::CLIENT_IF);
}

#[test]
fn detectable_udp_corruption_with_default_offloads_forwarded() {
    detectable_corruption_with_default_offloads(
        "csumrtr",
        |l| l.router.as_str(),
        lab::ROUTER_EGRESS,
    );
}

/// `impair update` from another process turns a rule that decides nothing
/// per packet (`--corrupt 0%`: the attach changes no offload) into `--loss
/// 1%`: the update makes the local sender build one wire packet per skb
/// (`gso_max_segs` 1, journaled in the owner's journal file), so the loss
/// is decided per wire packet and repaired exactly as with `--loss` given
/// at attach, and the owner's detach restores every feature exactly. Then
/// the same update on a controller that is SIGKILLed afterwards: the next
/// `impair detach` restores what the update changed.
#[test]
fn update_to_loss_from_another_process_sets_and_restores_offloads() {
    let tag = "tcpupd";
    let lab = lab_with_offloads(tag);
    let (ns, iface) = (lab.client.clone(), lab::CLIENT_IF);
    let dst = format!("{}/32", lab.server_v4());
    let attach = [
        "--proto",
        "tcp",
        "--dst",
        &dst,
        "--corrupt",
        "0%",
        "--seed",
        "7",
    ];
    let update = ["update", iface, "--loss", "1%"];
    let before = features(&lab, &ns, iface);
    assert!(before.contains("gso_max_segs 65535\n"), "{before}");

    let ctl = Controller::start_in(&ns, iface, &attach);
    assert_eq!(
        features(&lab, &ns, iface),
        before,
        "--corrupt 0% changes no offload"
    );
    let out = stdout_ok(&impair_in(&ns, &update));
    assert!(
        out.contains(&format!("{iface}: gso_max_segs 1 (was 65535)")),
        "{out}"
    );
    let during = features(&lab, &ns, iface);
    assert!(during.contains("gso_max_segs 1\n"), "{during}");
    let tcp = iperf3(&lab);
    let stats = stats_json_in(&ns, iface, &[]);
    drop(ctl);
    assert_eq!(
        features(&lab, &ns, iface),
        before,
        "detach restores what the update changed"
    );
    assert_loss_repaired(tag, &stats, &tcp, true);

    // The owner killed after another process's update: the journal is the
    // owner's, so the next impair command restores it.
    let ctl = Controller::start_in(&ns, iface, &attach);
    let out = stdout_ok(&impair_in(&ns, &update));
    assert!(out.contains("gso_max_segs 1"), "{out}");
    assert!(!ctl.signal_and_wait(libc::SIGKILL).success());
    let left = features(&lab, &ns, iface);
    assert!(left.contains("gso_max_segs 1\n"), "{left}");
    let out = stdout_ok(&impair_in(&ns, &["detach", iface]));
    assert!(out.contains("removed"), "{out}");
    assert_eq!(
        features(&lab, &ns, iface),
        before,
        "restored after the owner's crash"
    );

    // --keep-offloads: an update changes nothing either.
    let ctl = Controller::start_in(&ns, iface, &[&attach[..], &["--keep-offloads"]].concat());
    let out = stdout_ok(&impair_in(&ns, &update));
    assert!(!out.contains("gso_max_segs"), "{out}");
    assert_eq!(features(&lab, &ns, iface), before, "--keep-offloads");
    drop(ctl);
}

/// The same change made by the owning process itself (`Engine::update`): a
/// scenario whose first step decides nothing per packet (`--corrupt 0%`)
/// and whose second loses 1% sets `gso_max_segs` 1 at the step, and a
/// SIGTERM restores it; a SIGKILL after the step leaves it to the next
/// `impair detach`, which restores it.
#[test]
fn scenario_step_to_loss_sets_and_restores_offloads() {
    let lab = lab_with_offloads("tcpscn");
    let dir = impair_tests::Scratch::new("tcpscn");
    let path = dir.file(
        "s.toml",
        "[[step]]\nduration = \"1s\"\n[[step.rule]]\nproto = \"tcp\"\ncorrupt = \"0%\"\n\
         [[step]]\nduration = \"60s\"\n[[step.rule]]\nproto = \"tcp\"\nloss = \"1%\"\n",
    );
    let (ns, iface) = (lab.client.clone(), lab::CLIENT_IF);
    let before = features(&lab, &ns, iface);
    let step_two = || {
        let t = std::time::Instant::now();
        loop {
            let now = features(&lab, &ns, iface);
            if now.contains("gso_max_segs 1\n") {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "step 2 (1% loss) did not set gso_max_segs 1: {now}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    for kill in [libc::SIGTERM, libc::SIGKILL] {
        let ctl = Controller::start_in(&ns, iface, &["--scenario", &path]);
        assert_eq!(
            features(&lab, &ns, iface),
            before,
            "step 1 changes no offload"
        );
        step_two();
        let status = ctl.signal_and_wait(kill);
        if kill == libc::SIGKILL {
            assert!(!status.success());
            let out = stdout_ok(&impair_in(&ns, &["detach", iface]));
            assert!(out.contains("removed"), "{out}");
        } else {
            assert!(status.success());
        }
        assert_eq!(
            features(&lab, &ns, iface),
            before,
            "restored after signal {kill}"
        );
    }
}

/// At a router (the namespace forwards), an update from another process to
/// `--loss 1%` also turns GRO off on the router's other device (`r0`, where
/// the client's segments arrive; a veth's GRO is off by default, so the
/// test turns it on first, as a NIC has it), journaled in the owner's file:
/// after a detach, and after a SIGKILL and `impair detach`, both devices'
/// features are exactly as before.
#[test]
fn update_at_a_router_turns_gro_off_and_detach_restores() {
    let lab = lab_with_offloads("updrtr");
    let (ns, iface) = (lab.router.clone(), lab::ROUTER_EGRESS);
    lab.exec(&ns, &["ethtool", "-K", lab::ROUTER_INGRESS, "gro", "on"])
        .unwrap();
    let both = || features(&lab, &ns, iface) + &features(&lab, &ns, lab::ROUTER_INGRESS);
    let before = both();
    assert!(
        features(&lab, &ns, lab::ROUTER_INGRESS).contains("generic-receive-offload: on"),
        "{before}"
    );
    for kill in [libc::SIGTERM, libc::SIGKILL] {
        let ctl = Controller::start_in(&ns, iface, &["--proto", "tcp", "--corrupt", "0%"]);
        assert_eq!(both(), before, "--corrupt 0% changes no offload");
        let out = stdout_ok(&impair_in(&ns, &["update", iface, "--loss", "1%"]));
        assert!(
            out.contains(&format!(
                "{}: generic-receive-offload off",
                lab::ROUTER_INGRESS
            )),
            "{out}"
        );
        let during = features(&lab, &ns, lab::ROUTER_INGRESS);
        assert!(during.contains("generic-receive-offload: off"), "{during}");
        let status = ctl.signal_and_wait(kill);
        if kill == libc::SIGKILL {
            assert!(!status.success());
            let out = stdout_ok(&impair_in(&ns, &["detach", iface]));
            assert!(out.contains("removed"), "{out}");
        } else {
            assert!(status.success());
        }
        assert_eq!(both(), before, "restored after signal {kill}");
    }
}
