//! Multi-queue devices (issue 13 item 5): on a device with several transmit
//! queues impair installs `mq` with one fq per queue, and a rate holds for
//! the device as a whole when flows spread across queues and CPUs (the
//! rule's departure cursor is one shared word advanced by compare-and-swap,
//! so two CPUs never hand out the same slot).
//!
//! The lab's veths have one queue each, so the test wires a second link from
//! the router to the server with four transmit queues (`mq0` → `mq1`,
//! 198.18.250.0/30) and sends four UDP flows from four threads, each pinned
//! to a CPU in turn (transmit packet steering maps CPU n to queue n), through
//! `--rate` at `mq0`. Needs sch_fq (the VM tier).
use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use impair_tests::{
    flood::{self, Receiver, Senders, StallWatch},
    kernel::fq_or_note,
    note,
    ns::{assert_iface_restored, iface_state, lab, stats_json_in, Controller},
};

const SENDER_IF: &str = "mq0";
const RECEIVER_IF: &str = "mq1";
const SENDER_ADDR: &str = "198.18.250.1";
const RECEIVER_ADDR: &str = "198.18.250.2";
const TX_QUEUES: u32 = 4;
const FLOWS: usize = 4;
const PAYLOAD: usize = 1000;
const RATE_BPS: f64 = 8e6;
/// Offered load: 1.25 × the rate, split over the flows.
const OFFERED_BPS: f64 = RATE_BPS * 1.25;
const SEND_FOR: Duration = Duration::from_secs(12);
const WINDOW: Duration = Duration::from_secs(1);

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sent packets of each fq under impair's mq on `iface`.
fn fq_children_sent(lab: &impair_tools::lab::Lab, ns: &str, iface: &str) -> (String, Vec<u64>) {
    let json = lab
        .exec(ns, &["tc", "-j", "-s", "qdisc", "show", "dev", iface])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let qdiscs = v.as_array().cloned().unwrap_or_default();
    let root = qdiscs
        .iter()
        .find(|q| q["root"].as_bool() == Some(true))
        .and_then(|q| q["kind"].as_str())
        .unwrap_or("")
        .to_owned();
    let sent = qdiscs
        .iter()
        .filter(|q| q["kind"] == "fq")
        .map(|q| q["packets"].as_u64().unwrap_or(0))
        .collect();
    (root, sent)
}

#[test]
fn rate_holds_across_four_tx_queues_and_cpus() {
    let test = "fq::mq::rate_holds_across_four_tx_queues_and_cpus";
    let lab = lab("mq");
    if !fq_or_note(
        &lab,
        test,
        "mq with fq per queue needs sch_fq: the VM tier runs this",
    ) {
        return;
    }
    let (r, s) = (lab.router.as_str(), lab.server.as_str());
    let queues = TX_QUEUES.to_string();
    ip(&[
        "-n",
        r,
        "link",
        "add",
        SENDER_IF,
        "numtxqueues",
        &queues,
        "numrxqueues",
        &queues,
        "type",
        "veth",
        "peer",
        "name",
        RECEIVER_IF,
        "netns",
        s,
        "numtxqueues",
        &queues,
        "numrxqueues",
        &queues,
    ]);
    ip(&[
        "-n",
        r,
        "addr",
        "add",
        &format!("{SENDER_ADDR}/30"),
        "dev",
        SENDER_IF,
    ]);
    ip(&[
        "-n",
        s,
        "addr",
        "add",
        &format!("{RECEIVER_ADDR}/30"),
        "dev",
        RECEIVER_IF,
    ]);
    ip(&["-n", r, "link", "set", SENDER_IF, "up"]);
    ip(&["-n", s, "link", "set", RECEIVER_IF, "up"]);
    // Transmit packet steering: a datagram sent on CPU n leaves by queue n
    // (an unconnected UDP socket caches no queue, so each packet picks by
    // the CPU it is sent from). Without it the flows' hashes decide, and
    // four flows land in one queue one boot in 64.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for cpu in 0..cpus.min(TX_QUEUES as usize) {
        lab.exec(
            r,
            &[
                "sh",
                "-c",
                &format!(
                    "echo {:x} > /sys/class/net/{SENDER_IF}/queues/tx-{cpu}/xps_cpus",
                    1u64 << cpu
                ),
            ],
        )
        .unwrap();
    }
    let before = iface_state(&lab, r, SENDER_IF);

    let ctl = Controller::start_in(
        r,
        SENDER_IF,
        &["--rate", "8mbit", "--queue", "100ms", "--proto", "udp"],
    );
    let (root, children) = fq_children_sent(&lab, r, SENDER_IF);
    assert_eq!(root, "mq", "impair's root on a {TX_QUEUES}-queue device");
    assert_eq!(
        children.len(),
        TX_QUEUES as usize,
        "one fq per transmit queue"
    );

    let to: SocketAddr = format!("{RECEIVER_ADDR}:5300").parse().unwrap();
    let rx = impair::netns::run_in(s, move || UdpSocket::bind(to))
        .unwrap()
        .unwrap();
    let receiver = Receiver::start(rx);
    let watch = StallWatch::start(Duration::from_millis(50));
    let socks = (0..FLOWS)
        .map(|flow| {
            impair::netns::run_in(r, move || {
                UdpSocket::bind(format!("{SENDER_ADDR}:{}", 5400 + flow))
            })
            .unwrap()
            .unwrap()
        })
        .collect();
    let start = Instant::now() + Duration::from_millis(100);
    let start_ns = flood::realtime_ns() + 100_000_000;
    let (sent, last_send) =
        Senders::start(socks, to, PAYLOAD, OFFERED_BPS, start, SEND_FOR).finish();
    let arrivals = receiver.finish_when_quiet(Duration::from_millis(500));
    let stalls = watch.finish();
    let (_, children) = fq_children_sent(&lab, r, SENDER_IF);
    let stats = stats_json_in(r, SENDER_IF, &[]);
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    assert_iface_restored(&lab, r, SENDER_IF, &before);

    // Whole 1 s windows from half a second after the first arrival (fq's
    // queue has filled) until the first sender stopped.
    assert!(arrivals.len() > 100, "{} datagrams arrived", arrivals.len());
    let first = arrivals[0].0 + 500_000_000;
    let windows = flood::windows_bps(&arrivals, PAYLOAD, first, last_send, WINDOW);
    let busy_queues = children.iter().filter(|&&p| p > 0).count();
    let line = flood::describe_windows(&windows, &stalls, WINDOW);
    note(format!(
        "{test}: {sent} sent over {FLOWS} flows (the first stopped {:.2} s after the start), \
         {} received; per 1 s window (bit/s): {line}; packets per fq child: {children:?}; \
         rule counters: packets {}, dropped_queue {}",
        (last_send - start_ns) as f64 / 1e9,
        arrivals.len(),
        stats["rules"][0]["packets"],
        stats["rules"][0]["dropped_queue"],
    ));
    flood::assert_windows(test, &windows, &stalls, WINDOW, RATE_BPS, 0.01, 3);
    assert!(
        busy_queues >= cpus.min(2),
        "the flows used {busy_queues} of {TX_QUEUES} transmit queues from {cpus} CPUs: {children:?}"
    );
    let rule = &stats["rules"][0];
    assert_eq!(
        rule["packets"], sent,
        "the rule saw every datagram: {stats}"
    );
    assert_eq!(
        rule["dropped_queue"].as_u64().unwrap_or(0),
        sent - arrivals.len() as u64,
        "what did not arrive is what the queue limit dropped: {stats}"
    );
}
