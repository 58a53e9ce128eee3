//! Real TCP (iperf3) through delay, which needs sch_fq (and netem for the
//! reference): the VM tier runs these as part of `netns fq::`; on a kernel
//! without sch_fq or sch_netem each prints a NOTE and checks nothing.
//!
//! The guest is emulated (TCG): absolute throughputs are low and vary with
//! the host's load, so every comparison runs its arms in the same lab, in
//! the same test, interleaved round by round, and is judged as a ratio.
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use impair_tests::{
    kernel::{fq_or_note, has_qdisc},
    note,
    ns::{lab, Controller},
};
use impair_tools::lab::{self as tlab, Lab};

/// The iperf3 port (the lab's namespaces are private).
const PORT: &str = "5202";

/// What one iperf3 run measured.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    /// Goodput at the receiver, bit/s (iperf3's `sum_received`).
    received_bps: f64,
    /// The sender's smallest RTT sample, s (tcp_info), the path's RTT.
    min_rtt_s: f64,
    /// The receiver's busiest interval after the first second, bit/s.
    max_interval_bps: f64,
    /// The sender's mean smoothed RTT over the run, s (iperf3's `mean_rtt`).
    mean_rtt_s: f64,
    /// Segments the sender retransmitted (iperf3's `retransmits`).
    retrans: u64,
    /// Segments the sender sent (TcpOutSegs in the client's namespace,
    /// before and after: the namespace carries only this flow).
    out_segs: u64,
    /// The sender's recoveries (TcpExtTCPSackRecovery: one per loss event
    /// TCP reacted to), retransmission timeouts, tail-loss probes and the
    /// DSACKs it received (a retransmission found spurious).
    recoveries: u64,
    timeouts: u64,
    probes: u64,
    dsacks: u64,
    /// Reorderings the sender detected (TcpExtTCPSACKReorder and
    /// TcpExtTCPTSReorder).
    reorders: u64,
    /// Packets the impairment dropped, of those offered to it (set by the
    /// caller).
    dropped: u64,
    offered: u64,
}

fn require_tools(lab: &Lab, test: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", "command -v iperf3"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "iperf3 is not installed: `cargo xtask setup` installs it (TEST_TOOLS); the VM packs it"
    );
    if !fq_or_note(
        lab,
        test,
        "TCP through delay needs sch_fq: the VM tier runs this",
    ) {
        return false;
    }
    if !has_qdisc(lab, "netem") {
        note(format!(
            "{test}: this kernel has no sch_netem: the VM tier runs this"
        ));
        return false;
    }
    true
}

/// A progress line on stderr (seen with `--nocapture` on the VM's console).
fn say(msg: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

fn json(text: &[u8], what: &str) -> serde_json::Value {
    serde_json::from_slice(text)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", String::from_utf8_lossy(text)))
}

/// One iperf3 flow client → server for `secs` seconds (`extra`: client
/// options), the server reporting every 0.5 s.
fn iperf3(lab: &Lab, secs: u32, extra: &[&str]) -> Run {
    let addr = lab.server_v4().to_string();
    // Bounded like the client: a client that never connected leaves a
    // one-off server waiting.
    // (`timeout` inside the namespace: busybox's, in the VM, would run its
    // own `ip` applet rather than iproute2's.)
    let server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.server,
            "timeout",
            &(secs + 60).to_string(),
        ])
        .args(["iperf3", "-s", "-1", "-J"])
        .args(["-i", "0.5", "-p", PORT, "-B", &addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting iperf3 -s");
    // The emulated guest starts programs slowly: wait until it listens.
    let listening = (0..200).any(|_| {
        // /proc/net/tcp of the server's namespace: local port in hex, state
        // 0A (LISTEN).
        let tcp = lab
            .exec(&lab.server, &["cat", "/proc/net/tcp"])
            .unwrap_or_default();
        let port = format!(":{:04X} ", PORT.parse::<u16>().unwrap());
        tcp.lines()
            .any(|l| l.contains(&port) && l.split_whitespace().nth(3) == Some("0A"))
            || {
                std::thread::sleep(Duration::from_millis(100));
                false
            }
    });
    if !listening {
        let mut server = server;
        let _ = server.kill();
        let out = server.wait_with_output().expect("iperf3 -s");
        panic!(
            "iperf3 -s never listened on {PORT}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let before = sender_counters(lab);
    say(format_args!("iperf3 -c {addr} -t {secs} {extra:?}"));
    let t = secs.to_string();
    let client = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client,
            "timeout",
            &(secs + 40).to_string(),
        ])
        .args(["iperf3", "-c", &addr, "-p", PORT, "-t", &t, "-J"])
        .args(extra)
        .output()
        .expect("running iperf3 -c");
    let mut server = server;
    if !client.status.success() {
        let _ = server.kill();
    }
    let server = server.wait_with_output().expect("iperf3 -s");
    assert!(
        client.status.success(),
        "iperf3 -c: {}{}",
        String::from_utf8_lossy(&client.stdout),
        String::from_utf8_lossy(&client.stderr)
    );
    let c = json(&client.stdout, "iperf3 -c -J");
    let s = json(&server.stdout, "iperf3 -s -J");
    let received_bps = c["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no sum_received: {c}"));
    let min_rtt_s = c["end"]["streams"][0]["sender"]["min_rtt"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e6;
    let sender = &c["end"]["streams"][0]["sender"];
    let mean_rtt_s = sender["mean_rtt"].as_f64().unwrap_or(0.0) / 1e6;
    let retrans = sender["retransmits"].as_u64().unwrap_or(0);
    let after = sender_counters(lab);
    let delta = |k: &str| after.get(k).unwrap_or(&0) - before.get(k).unwrap_or(&0);
    let max_interval_bps = s["intervals"]
        .as_array()
        .map(|iv| {
            iv.iter()
                .filter(|i| i["sum"]["start"].as_f64().unwrap_or(0.0) >= 1.0)
                .filter(|i| i["sum"]["seconds"].as_f64().unwrap_or(0.0) > 0.4)
                .filter_map(|i| i["sum"]["bits_per_second"].as_f64())
                .fold(0.0, f64::max)
        })
        .unwrap_or(0.0);
    Run {
        received_bps,
        min_rtt_s,
        max_interval_bps,
        mean_rtt_s,
        retrans,
        out_segs: delta("TcpOutSegs"),
        recoveries: delta("TcpExtTCPSackRecovery"),
        timeouts: delta("TcpExtTCPTimeouts"),
        probes: delta("TcpExtTCPLossProbes"),
        dsacks: delta("TcpExtTCPDSACKRecv"),
        reorders: delta("TcpExtTCPSACKReorder") + delta("TcpExtTCPTSReorder"),
        ..Run::default()
    }
}

/// The client's (the sender's) TCP counters (nstat: absolute, its history
/// neither read nor written; the namespace carries only this flow).
fn sender_counters(lab: &Lab) -> std::collections::HashMap<String, u64> {
    let out = lab.exec(&lab.client, &["nstat", "-asz"]).unwrap();
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.parse().ok()?))
        })
        .collect()
}

/// `tc ARGS` in `ns`.
fn tc(lab: &Lab, ns: &str, args: &[&str]) {
    lab.exec(ns, &[&["tc"][..], args].concat()).unwrap();
}

/// TSO/GSO/GRO on (`on`) or off on every veth of the lab.
fn offloads(lab: &Lab, on: bool) {
    let v = if on { "on" } else { "off" };
    for (ns, dev) in [
        (&lab.client, tlab::CLIENT_IF),
        (&lab.router, tlab::ROUTER_INGRESS),
        (&lab.router, tlab::ROUTER_EGRESS),
        (&lab.server, tlab::SERVER_IF),
    ] {
        lab.exec(ns, &["ethtool", "-K", dev, "tso", v, "gso", v, "gro", v])
            .unwrap();
    }
}

/// Mean of the runs' goodputs, bit/s.
fn mean_bps(runs: &[Run]) -> f64 {
    runs.iter().map(|r| r.received_bps).sum::<f64>() / runs.len() as f64
}

fn mbit(bps: f64) -> String {
    format!("{:.2} Mbit/s", bps / 1e6)
}

/// The same one-way delay (20 ms on the data direction, at the router's
/// egress toward the server; ACKs return undelayed, so the RTT is 20 ms plus
/// the lab's own) and 1% random loss on every packet that way, through
/// impair, through netem with offloads off (the faithful reference: one
/// decision per wire packet) and through netem with offloads on (decisions
/// per GRO/GSO super-packet: one run, shown, not judged). Seven rounds of
/// 8 s, impair and netem interleaved in each.
///
/// What is judged, and why: the loss impair applied is 1% (its drops within
/// 3.3σ of 1% of the packets it saw), and TCP's goodput through impair is
/// within ±25% of netem's and of the Mathis estimate MSS/RTT·√(3/2)/√p,
/// each arm taken at its own mean RTT (tcp_info, iperf3's `mean_rtt`) and
/// its own applied loss p (impair's `dropped_loss`/`packets`, netem's qdisc
/// drops of what it was offered), i.e. goodput·RTT·√p compared. Both are
/// Bernoulli(1%) processes: over ~4,800 packets a run the applied loss
/// ranges 0.8-1.2% (σ 0.14%), which alone moves a run's goodput by ±7%
/// (goodput ∝ 1/√p), and which of the two arms drew more losses is chance,
/// not a difference between them. The raw ratio of the goodputs is printed
/// beside it. Measured on 6.12 (2026-12-03, quiet host): each run's goodput
/// against its own Mathis spreads with a coefficient of variation of about
/// 10% in both arms, so a mean of seven is known to about ±3.8% and the
/// ratio of two to about ±5.3% (1σ). (With three rounds the normalised
/// ratio of eight 6.12 runs spread 0.82-1.08, sd 0.095 about a mean of
/// 0.97: the bound was 2.3σ away; with five, 1.021 and, in CI under load,
/// 0.846.)
///
/// What was found (docs/accuracy.md has every run): not the RTT: the two
/// arms' mean RTTs were within 0.5 ms of each other in every run; not the
/// loss applied: both binomial about 1%, retransmissions equal to the drops
/// within a few. On 6.12 every run has been inside the bounds (0.84-1.08
/// normalised in eight runs, engines of 2026-12-02 and -03). On 6.1 two of
/// seven were over (1.25 and 1.33 normalised, both with the engine of early
/// 2026-12-03, before the segmenter; the segmenter itself is idle here, as
/// offloads are off); the two runs on main at 0edf723 gave 1.027 and
/// 1.062. What made those two runs fast is not established: their senders
/// saw more reordering through impair than through netem (4-11 against
/// 0-2 per 24 s), but reordering is not impair's alone: on main the senders
/// saw 8, 13 and 19 (impair) against 16, 5 and 36 (netem) on 6.12, and 20
/// and 5 against 4 and 3 on 6.1. CI's selective plan runs `netns fq::` on 6.12 only (6.1's fq is
/// reported, not gated: xtask/src/vm/plan.rs); on 6.1 run it with `cargo
/// xtask vm --kernel 6.1 --tier netns -- fq::tcp::tcp_goodput --nocapture`.
#[test]
fn tcp_goodput_at_1pct_loss_and_20ms_rtt_matches_netem_and_mathis() {
    let test = "fq::tcp::tcp_goodput_at_1pct_loss_and_20ms_rtt_matches_netem_and_mathis";
    let lab = lab("tcpmathis");
    if !require_tools(&lab, test) {
        return;
    }
    let (secs, rounds) = (8, 7);
    let r = &lab.router;
    let egress = tlab::ROUTER_EGRESS;
    let netem = ["netem", "delay", "20ms", "loss", "1%", "limit", "10000"];
    let add_netem = || {
        tc(
            &lab,
            r,
            &[&["qdisc", "add", "dev", egress, "root"][..], &netem].concat(),
        )
    };
    let (mut imp, mut ref_off) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let ctl = Controller::start(&lab, &["--delay", "20ms", "--loss", "1%"]);
        let mut run = iperf3(&lab, secs, &[]);
        let stats = impair_tests::ns::stats_json(&lab);
        let rule = &stats["rules"][0];
        run.dropped = rule["dropped_loss"].as_u64().unwrap_or(0);
        run.offered = rule["packets"].as_u64().unwrap_or(0);
        imp.push(run);
        assert!(ctl.signal_and_wait(libc::SIGTERM).success());

        add_netem();
        let mut run = iperf3(&lab, secs, &[]);
        (run.dropped, run.offered) = qdisc_drops(&lab, r, egress);
        ref_off.push(run);
        tc(&lab, r, &["qdisc", "del", "dev", egress, "root"]);
    }
    // netem with offloads on: once, shown beside the others, not judged.
    add_netem();
    offloads(&lab, true);
    let mut on = iperf3(&lab, 6, &[]);
    (on.dropped, on.offered) = qdisc_drops(&lab, r, egress);
    offloads(&lab, false);
    tc(&lab, r, &["qdisc", "del", "dev", egress, "root"]);

    let (i, off) = (Arm::of(&imp), Arm::of(&ref_off));
    let on = Arm::of(&[on]);
    let raw = i.bps / off.bps;
    let norm = i.vs_mathis() / off.vs_mathis();
    note(format!(
        "{test}: impair {}; netem offloads off {}; netem offloads on {}. impair/netem {raw:.3} \
         raw, {norm:.3} each against Mathis at its own mean RTT and loss; impair/Mathis {:.3}, \
         netem/Mathis {:.3} (raw, at 1% and impair's min RTT: impair {:.3}, netem {:.3})",
        i.describe(),
        off.describe(),
        on.describe(),
        i.vs_mathis(),
        off.vs_mathis(),
        i.bps / mathis_bps(i.min_rtt_s, 0.01),
        off.bps / mathis_bps(i.min_rtt_s, 0.01),
    ));
    // The loss applied is 1%: the engine's drops within the 99.9% binomial
    // interval (z = 3.3) of its packets.
    let n = i.offered as f64;
    let sigma = (0.01 * 0.99 / n).sqrt();
    assert!(
        (i.p() - 0.01).abs() <= 3.3 * sigma,
        "impair dropped {} of {} packets ({:.3}%): not 1% within 3.3 sigma ({:.3}%)",
        i.dropped,
        i.offered,
        i.p() * 100.0,
        3.3 * sigma * 100.0
    );
    assert!(
        (0.75..=1.25).contains(&norm),
        "impair/netem {norm:.3} at each arm's own RTT and loss (raw {raw:.3}): impair {}, netem {}",
        i.describe(),
        off.describe()
    );
    assert!(
        (0.75..=1.25).contains(&i.vs_mathis()),
        "impair at {:.3} of Mathis at its own RTT and loss: {}",
        i.vs_mathis(),
        i.describe()
    );
}

/// One arm's runs, summed.
#[derive(Debug, Clone, Default)]
struct Arm {
    /// Mean goodput, bit/s.
    bps: f64,
    /// Mean of the runs' mean RTTs, s.
    rtt_s: f64,
    /// The smallest RTT of any run, s.
    min_rtt_s: f64,
    /// Packets dropped by the impairment, of those offered to it.
    dropped: u64,
    offered: u64,
    /// Segments the sender retransmitted, of those it sent.
    retrans: u64,
    out_segs: u64,
    /// The sender's recoveries, timeouts, tail-loss probes, DSACKs received.
    recoveries: u64,
    timeouts: u64,
    probes: u64,
    dsacks: u64,
    reorders: u64,
    /// Each run: goodput, bit/s; mean RTT, s; loss applied.
    runs: Vec<(f64, f64, f64)>,
}

impl Arm {
    fn of(runs: &[Run]) -> Arm {
        let n = runs.len() as f64;
        Arm {
            bps: mean_bps(runs),
            rtt_s: runs.iter().map(|r| r.mean_rtt_s).sum::<f64>() / n,
            min_rtt_s: runs.iter().map(|r| r.min_rtt_s).fold(f64::MAX, f64::min),
            dropped: runs.iter().map(|r| r.dropped).sum(),
            offered: runs.iter().map(|r| r.offered).sum(),
            retrans: runs.iter().map(|r| r.retrans).sum(),
            out_segs: runs.iter().map(|r| r.out_segs).sum(),
            recoveries: runs.iter().map(|r| r.recoveries).sum(),
            timeouts: runs.iter().map(|r| r.timeouts).sum(),
            probes: runs.iter().map(|r| r.probes).sum(),
            dsacks: runs.iter().map(|r| r.dsacks).sum(),
            reorders: runs.iter().map(|r| r.reorders).sum(),
            runs: runs
                .iter()
                .map(|r| {
                    (
                        r.received_bps,
                        r.mean_rtt_s,
                        r.dropped as f64 / r.offered.max(1) as f64,
                    )
                })
                .collect(),
        }
    }

    /// The loss applied: dropped / offered.
    fn p(&self) -> f64 {
        self.dropped as f64 / self.offered.max(1) as f64
    }

    /// Mathis at this arm's mean RTT and loss applied.
    fn mathis_bps(&self) -> f64 {
        mathis_bps(self.rtt_s, self.p())
    }

    fn vs_mathis(&self) -> f64 {
        self.bps / self.mathis_bps()
    }

    fn describe(&self) -> String {
        format!(
            "{} (runs {:?}), mean RTT {:.1} ms (min {:.1} ms), dropped {} of {} packets \
             ({:.2}%), retransmitted {} of {} segments ({} recoveries, {} timeouts, {} loss \
             probes, {} DSACKs, {} reorderings seen), Mathis at these {}",
            mbit(self.bps),
            self.runs
                .iter()
                .map(|(bps, rtt, p)| format!(
                    "{:.2} Mbit/s at {:.1} ms and {:.2}%",
                    bps / 1e6,
                    rtt * 1e3,
                    p * 100.0
                ))
                .collect::<Vec<_>>(),
            self.rtt_s * 1e3,
            self.min_rtt_s * 1e3,
            self.dropped,
            self.offered,
            self.p() * 100.0,
            self.retrans,
            self.out_segs,
            self.recoveries,
            self.timeouts,
            self.probes,
            self.dsacks,
            self.reorders,
            mbit(self.mathis_bps()),
        )
    }
}

/// Mathis et al.: MSS/RTT·√(3/2)/√p, bit/s (MSS 1448 B).
fn mathis_bps(rtt_s: f64, p: f64) -> f64 {
    1448.0 * 8.0 / rtt_s * 1.5f64.sqrt() / p.sqrt()
}

/// (drops, drops + packets sent) of the root qdisc on `dev` in `ns` (`tc -s
/// -j`): what it dropped of what was offered to it.
fn qdisc_drops(lab: &Lab, ns: &str, dev: &str) -> (u64, u64) {
    let out = lab
        .exec(ns, &["tc", "-s", "-j", "qdisc", "show", "dev", dev])
        .unwrap();
    let q = json(out.as_bytes(), "tc -s -j qdisc show");
    let root = q
        .as_array()
        .and_then(|a| a.iter().find(|q| q["root"].as_bool() == Some(true)))
        .unwrap_or_else(|| panic!("no root qdisc on {dev}: {q}"));
    let drops = root["drops"].as_u64().unwrap_or(0);
    (drops, drops + root["packets"].as_u64().unwrap_or(0))
}

/// TCP Small Queues: a packet held in fq on the sender's own host would
/// keep the socket's bytes charged to it until fq lets it go, capping a
/// local TCP flow near two skbs per delay (0.88 Mbit/s through 50 ms,
/// against about 150 Mbit/s through the router, before impair released
/// them). impair sends an unowned clone of a held packet of a local socket
/// in its place (`impair-ebpf/src/duplicate.rs`, `release`), as netem
/// orphans what it holds, so a local sender through `--delay 50ms` at its
/// own egress (`c0`) reaches at least 80% of the same flow through the same
/// delay at the router (`r1`): three rounds interleaved in the same lab, the
/// ratio of the two means judged (TCG's throughput swings by 2× from one
/// 6 s run to the next on a busy host: per-round ratios of 0.60, 0.89 and
/// 1.67 on 6.1, means within 3%). Both arms pace the flow at 20 Mbit/s
/// (SO_MAX_PACING_RATE, iperf3 `--fq-rate`): unpaced, both are bound by the
/// emulated CPU, where the local arm also pays for the clone (0.81 of the
/// router's, 187 against 229 Mbit/s, on a quiet 6.12), which measures TCG
/// and not the cap; paced at 50 Mbit/s neither arm reached the pace (35 and
/// 40 Mbit/s); paced at 20, the cap this test is about would still hold the
/// local flow near 0.5 Mbit/s (two packets, or 1 ms of the pacing rate, per
/// round trip).
#[test]
fn local_sender_through_50ms_delay_against_the_router() {
    const PACED: [&str; 2] = ["--fq-rate", "20M"];
    let test = "fq::tcp::local_sender_through_50ms_delay_against_the_router";
    let lab = lab("tcptsq");
    if !require_tools(&lab, test) {
        return;
    }
    let (secs, rounds) = (6, 3);
    let (mut local, mut routed) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let ctl = Controller::start_in(&lab.client, tlab::CLIENT_IF, &["--delay", "50ms"]);
        local.push(iperf3(&lab, secs, &PACED));
        let out = ctl_stderr(ctl);
        assert!(
            !out.contains("Small Queues"),
            "no warning about TCP Small Queues any more: {out}"
        );
        let ctl = Controller::start(&lab, &["--delay", "50ms"]);
        routed.push(iperf3(&lab, secs, &PACED));
        assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    }
    let (l, r) = (mean_bps(&local), mean_bps(&routed));
    let ratios: Vec<f64> = local
        .iter()
        .zip(&routed)
        .map(|(l, r)| l.received_bps / r.received_bps)
        .collect();
    note(format!(
        "{test}: local sender {} (runs {:?}, min RTT {:.1} ms), through the router {} (runs \
         {:?}, min RTT {:.1} ms): ratio of the means {:.3}, per round {ratios:.3?}",
        mbit(l),
        local
            .iter()
            .map(|r| mbit(r.received_bps))
            .collect::<Vec<_>>(),
        local[0].min_rtt_s * 1e3,
        mbit(r),
        routed
            .iter()
            .map(|r| mbit(r.received_bps))
            .collect::<Vec<_>>(),
        routed[0].min_rtt_s * 1e3,
        l / r
    ));
    assert!(l > 0.0 && r > 0.0);
    assert!(
        l / r >= 0.8,
        "a local sender through 50 ms reaches {:.3} (ratio of the means; per round \
         {ratios:.3?}) of the same flow delayed at the router; at least 0.8 expected",
        l / r
    );
}

/// The controller's stderr after SIGTERM (where attach prints its notes).
fn ctl_stderr(mut ctl: Controller) -> String {
    use std::io::Read as _;
    let mut stderr = ctl.child.stderr.take().expect("piped stderr");
    assert!(ctl.signal_and_wait(libc::SIGTERM).success());
    let mut s = String::new();
    let _ = stderr.read_to_string(&mut s);
    s
}

/// A flow paced by its socket (SO_MAX_PACING_RATE 1 Mbit/s, iperf3
/// `--fq-rate`) through `--delay 20ms` at its own host's egress: fq there
/// makes TCP stamp each skb with its departure time (EDT), and impair
/// departs at max(that time, now) + delay, so the pacing survives: the
/// receiver sees ≤ 1 Mbit/s (5% slack) in every 0.5 s interval after the
/// first second (goodput is 1448/1514 of the frame rate; 5% slack for the
/// interval edges), and close to it on average. Overwriting the departure
/// time with now + delay would let fq release the window in bursts (fq
/// paces by the socket's rate only packets without a departure time). The
/// rate is below TCP Small Queues' cap at this delay (about 2.2 Mbit/s: two
/// skbs per 20 ms; 20 Mbit/s measured 2.08 on 6.12), so an unpaced flow
/// would reach that cap, twice the pacing rate.
#[test]
fn paced_local_flow_keeps_its_pacing_through_20ms_delay() {
    let test = "fq::tcp::paced_local_flow_keeps_its_pacing_through_20ms_delay";
    let lab = lab("tcppace");
    if !require_tools(&lab, test) {
        return;
    }
    let rate_bps = 1e6;
    let ctl = Controller::start_in(&lab.client, tlab::CLIENT_IF, &["--delay", "20ms"]);
    let run = iperf3(&lab, 6, &["--fq-rate", "1M"]);
    let _ = ctl_stderr(ctl);
    note(format!(
        "{test}: paced at {}: received {} on average, busiest 0.5 s interval {} (min RTT {:.1} ms)",
        mbit(rate_bps),
        mbit(run.received_bps),
        mbit(run.max_interval_bps),
        run.min_rtt_s * 1e3
    ));
    assert!(run.min_rtt_s >= 0.020, "the delay applied: {run:?}");
    assert!(
        run.max_interval_bps <= rate_bps * 1.05,
        "pacing kept in every interval: {run:?}"
    );
    assert!(
        run.received_bps >= rate_bps * 1448.0 / 1514.0 * 0.85,
        "the flow reached its pacing rate: {run:?}"
    );
}
