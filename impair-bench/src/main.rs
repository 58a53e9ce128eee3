//! `impair-bench`: what `cargo xtask bench` runs (root, release build).
//!
//! 1. Per-program microbenchmarks with BPF_PROG_TEST_RUN (`repeat`): the
//!    kernel's own average ns per run of `impair_egress` on one crafted frame,
//!    for each path (unmatched, matched pass, loss, corrupt, delay, rate, all
//!    of them), against the number of rules (1 to 64, matching the last), and
//!    with many flows in the in-order table.
//! 2. Throughput arms over the 3-namespace lab, interleaved in random order
//!    over R rounds: baseline, impair attached with no matching rule, matched
//!    with zero impairment, 1% loss, and iptables `-m statistic` 1% loss (what
//!    comcast and pumba use). Each arm's packets/s is a ratio to the same
//!    round's baseline: median and bootstrap 95% interval, plus CPU time per
//!    packet from /proc/stat.
//! 3. Scaling: one sender vs one per core, for the baseline, impair 1% loss
//!    and a qdisc with a root lock (tbf at 10 Gbit/s).
//!
//! 4. `--peers`, for kernels with sch_fq, sch_netem, sch_tbf and sch_htb
//!    (the qemu tier: `cargo xtask bench` boots Linux 6.12 for it): the same
//!    interleaved rounds for baseline, impair 1% loss against netem 1% loss,
//!    and impair's EDT rate against tbf and htb at the same rate. It prints
//!    one `IMPAIR-BENCH-PEERS {json}` line, which `--peers-from FILE` (on the
//!    host run) renders into the report.
//!
//! Arms the kernel cannot run are reported as not run, with the reason.
use std::{
    fmt::Write as _,
    net::UdpSocket,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use aya::programs::{TestRun as _, TestRunOptions};
use impair::{
    engine::{AttachOptions, Engine, Loaded},
    model::{compile_all, CorruptMode, DelaySpec, MatchSpec, RateSpec, RuleSpec},
    netns,
    model::units::parse_cidr,
};
use impair_tests::{packet::udp4, pin_to_cpu0, CLIENT_V4, SERVER_V4};
use impair_tools::{
    lab::{self, Lab, LabOptions},
    svg::Svg,
};
use rand::{seq::SliceRandom as _, Rng as _, SeedableRng as _};
use serde::Serialize;

struct Opts {
    quick: bool,
    rounds: usize,
    out: PathBuf,
    docs: Option<PathBuf>,
    /// Run only the peer arms (netem, tbf, htb) and print their JSON line.
    peers: bool,
    /// `IMPAIR-BENCH-PEERS` results from VM runs, rendered into the report.
    peers_from: Vec<PathBuf>,
}

fn parse_args() -> Result<Opts> {
    let mut o = Opts {
        quick: false,
        rounds: 10,
        out: PathBuf::from("target/bench"),
        docs: None,
        peers: false,
        peers_from: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--rounds" => o.rounds = it.next().context("--rounds N")?.parse()?,
            "--out" => o.out = it.next().context("--out DIR")?.into(),
            "--docs" => o.docs = Some(it.next().context("--docs FILE")?.into()),
            "--peers" => o.peers = true,
            "--peers-from" => o
                .peers_from
                .push(it.next().context("--peers-from FILE")?.into()),
            other => bail!("unknown argument {other}: impair-bench [--quick] [--rounds N] [--out DIR] [--docs FILE] [--peers] [--peers-from FILE]..."),
        }
    }
    if o.quick && o.rounds == 10 {
        o.rounds = 3;
    }
    if o.rounds < 1 {
        bail!("--rounds must be at least 1");
    }
    Ok(o)
}

// ---------------------------------------------------------------- micro

#[derive(Serialize, Clone)]
struct Micro {
    case: String,
    rules: usize,
    ns_per_packet: f64,
}

fn nomatch() -> MatchSpec {
    MatchSpec {
        dst: Some(parse_cidr("dst", "198.19.0.0/16").unwrap()),
        ..Default::default()
    }
}

/// The kernel's average ns per run of `impair_egress` on `frame`: the median
/// of five BPF_PROG_TEST_RUN calls of `repeat` runs each.
fn time_prog(l: &mut Loaded, frame: &[u8], repeat: u32) -> Result<f64> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut samples = Vec::new();
    for _ in 0..5 {
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        };
        let r = l.tc_egress()?.test_run(opts)?;
        samples.push(r.duration.as_nanos() as f64);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[2])
}

fn micro(quick: bool) -> Result<Vec<Micro>> {
    pin_to_cpu0();
    let repeat = if quick { 20_000 } else { 1_000_000 };
    let frame = udp4(CLIENT_V4, SERVER_V4, 1000, 2000);
    let full = RuleSpec {
        loss: Some(0.01),
        corrupt: Some(0.01),
        corrupt_mode: CorruptMode::Silent,
        delay: Some(DelaySpec {
            delay_ns: 10_000_000,
            jitter_ns: 2_000_000,
            distribution: Some("normal".parse().unwrap()),
            in_order: true,
            ..Default::default()
        }),
        rate: Some(RateSpec {
            rate_bps: 100_000_000_000,
            ..Default::default()
        }),
        ..Default::default()
    };
    let cases: Vec<(&str, Vec<RuleSpec>)> = vec![
        ("empty rule set", vec![]),
        (
            "unmatched (1 rule)",
            vec![RuleSpec {
                matcher: nomatch(),
                loss: Some(1.0),
                ..Default::default()
            }],
        ),
        ("matched, no impairment", vec![RuleSpec::default()]),
        (
            "loss 1%",
            vec![RuleSpec {
                loss: Some(0.01),
                ..Default::default()
            }],
        ),
        (
            "Gilbert-Elliott",
            vec![RuleSpec {
                loss_model: Some(impair::model::units::parse_loss_model("ge:1%,30%").unwrap()),
                ..Default::default()
            }],
        ),
        (
            "corrupt 100% (silent)",
            vec![RuleSpec {
                corrupt: Some(1.0),
                corrupt_mode: CorruptMode::Silent,
                ..Default::default()
            }],
        ),
        (
            "delay 10ms",
            vec![RuleSpec {
                delay: Some(DelaySpec {
                    delay_ns: 10_000_000,
                    ..Default::default()
                }),
                ..Default::default()
            }],
        ),
        (
            "rate 100gbit",
            vec![RuleSpec {
                rate: Some(RateSpec {
                    rate_bps: 100_000_000_000,
                    ..Default::default()
                }),
                ..Default::default()
            }],
        ),
        (
            "full: loss+corrupt+jitter in-order+rate",
            vec![full.clone()],
        ),
    ];
    let mut out = Vec::new();
    for (name, rules) in cases {
        let mut l = Loaded::new(&compile_all(&rules)?, 7)?;
        let ns = time_prog(&mut l, &frame, repeat)?;
        eprintln!("micro  {name:<42} {ns:7.1} ns/packet");
        out.push(Micro {
            case: name.into(),
            rules: rules.len(),
            ns_per_packet: ns,
        });
    }
    for n in [1usize, 2, 4, 8, 16, 32, 64] {
        // Distinct prefixes, so the index has as many intervals as the rules
        // can make: the walk it saves is the whole list.
        let mut rules: Vec<RuleSpec> = (0..n - 1)
            .map(|i| RuleSpec {
                matcher: MatchSpec {
                    dst: Some(parse_cidr("dst", &format!("198.19.{i}.0/24")).unwrap()),
                    ..Default::default()
                },
                loss: Some(1.0),
                ..Default::default()
            })
            .collect();
        rules.push(RuleSpec {
            loss: Some(0.01),
            ..Default::default()
        });
        let mut l = Loaded::new(&compile_all(&rules)?, 7)?;
        let ns = time_prog(&mut l, &frame, repeat)?;
        eprintln!(
            "micro  {:<42} {ns:7.1} ns/packet",
            format!("{n} rules, last matches")
        );
        out.push(Micro {
            case: "rules".into(),
            rules: n,
            ns_per_packet: ns,
        });
    }
    // Many flows: the in-order table holds 1 or 10 000 flows when timed.
    for flows in [1u16, 10_000] {
        let mut l = Loaded::new(&compile_all(std::slice::from_ref(&full))?, 7)?;
        for sport in 0..flows {
            let f = udp4(CLIENT_V4, SERVER_V4, 1024 + sport, 2000);
            time_prog(&mut l, &f, 1)?;
        }
        let ns = time_prog(&mut l, &frame, repeat)?;
        let name = format!("full, {flows} flows in the in-order table");
        eprintln!("micro  {name:<42} {ns:7.1} ns/packet");
        out.push(Micro {
            case: name,
            rules: 1,
            ns_per_packet: ns,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------- lab arms

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
enum Arm {
    Baseline,
    ImpairNoMatch,
    ImpairMatchZero,
    ImpairLoss1,
    IptablesLoss1,
    TbfRootLock,
    NetemLoss1,
    ImpairRate,
    TbfRate,
    HtbRate,
}

/// The rate of the rate arms: far above what the lab forwards with small
/// frames, so every arm passes every packet and packets/s is the shaper's
/// cost, not its limit (docs/accuracy.md has the rates they deliver).
const PEER_RATE_BPS: u64 = 1_000_000_000;
const PEER_RATE: &str = "1gbit";

/// The scaling comparison's root-locked qdisc: tbf far above the lab's rate.
const TBF_ROOT_LOCK: [&str; 7] = ["tbf", "rate", "10gbit", "burst", "1mb", "latency", "10ms"];

impl Arm {
    fn name(self) -> &'static str {
        match self {
            Arm::Baseline => "baseline (nothing attached)",
            Arm::ImpairNoMatch => "impair attached, no rule matches",
            Arm::ImpairMatchZero => "impair matching, zero impairment",
            Arm::ImpairLoss1 => "impair 1% loss",
            Arm::IptablesLoss1 => "iptables -m statistic 1% loss",
            Arm::TbfRootLock => "tbf 10gbit (root-locked qdisc)",
            Arm::NetemLoss1 => "netem 1% loss",
            Arm::ImpairRate => "impair rate 1gbit (EDT + fq)",
            Arm::TbfRate => "tbf rate 1gbit",
            Arm::HtbRate => "htb rate 1gbit",
        }
    }
}

/// What an arm leaves in place while it is measured.
enum Setup {
    None,
    Engine(Box<Engine>),
    Iptables,
    /// A root qdisc impair did not make: removed with `tc qdisc del root`.
    Qdisc,
}

fn setup(lab: &Lab, arm: Arm) -> Result<Setup> {
    let attach = |rules: Vec<RuleSpec>| -> Result<Setup> {
        let opts = AttachOptions {
            iface: lab::ROUTER_EGRESS.into(),
            rules,
            seed: Some(3),
            label: "bench".into(),
            ..Default::default()
        };
        let engine = netns::run_in(&lab.router, move || Engine::attach(opts))??;
        Ok(Setup::Engine(Box::new(engine)))
    };
    match arm {
        Arm::Baseline => Ok(Setup::None),
        Arm::ImpairNoMatch => attach(vec![RuleSpec {
            matcher: nomatch(),
            loss: Some(1.0),
            ..Default::default()
        }]),
        Arm::ImpairMatchZero => attach(vec![RuleSpec {
            loss: Some(0.0),
            ..Default::default()
        }]),
        Arm::ImpairLoss1 => attach(vec![RuleSpec {
            loss: Some(0.01),
            ..Default::default()
        }]),
        Arm::IptablesLoss1 => {
            lab.exec(&lab.router, &iptables("-A"))?;
            Ok(Setup::Iptables)
        }
        Arm::TbfRootLock => {
            tc_root(lab, &TBF_ROOT_LOCK)?;
            Ok(Setup::Qdisc)
        }
        Arm::NetemLoss1 => {
            tc_root(lab, &["netem", "loss", "1%"])?;
            Ok(Setup::Qdisc)
        }
        Arm::ImpairRate => attach(vec![RuleSpec {
            rate: Some(RateSpec {
                rate_bps: PEER_RATE_BPS,
                ..Default::default()
            }),
            ..Default::default()
        }]),
        Arm::TbfRate => {
            // burst ≥ rate / HZ (tc-tbf(8)); 1 MB covers HZ=100 at 1 Gbit/s.
            tc_root(
                lab,
                &["tbf", "rate", PEER_RATE, "burst", "1mb", "latency", "10ms"],
            )?;
            Ok(Setup::Qdisc)
        }
        Arm::HtbRate => {
            tc_root(lab, &["handle", "1:", "htb", "default", "10"])?;
            lab.exec(
                &lab.router,
                &[
                    "tc",
                    "class",
                    "add",
                    "dev",
                    lab::ROUTER_EGRESS,
                    "parent",
                    "1:",
                    "classid",
                    "1:10",
                    "htb",
                    "rate",
                    PEER_RATE,
                    "ceil",
                    PEER_RATE,
                ],
            )?;
            Ok(Setup::Qdisc)
        }
    }
}

/// `tc qdisc add dev <router egress> root <args>`.
fn tc_root(lab: &Lab, args: &[&str]) -> Result<()> {
    let mut cmd = vec!["tc", "qdisc", "add", "dev", lab::ROUTER_EGRESS, "root"];
    cmd.extend_from_slice(args);
    lab.exec(&lab.router, &cmd).map(|_| ())
}

/// `iptables -w -A FORWARD -m statistic ... -j DROP` (with `-D` to remove it).
fn iptables(op: &'static str) -> [&'static str; 12] {
    [
        "iptables",
        "-w",
        op,
        "FORWARD",
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
        "0.01",
        "-j",
        "DROP",
    ]
}

fn teardown(lab: &Lab, s: Setup) -> Result<()> {
    match s {
        Setup::None => Ok(()),
        Setup::Engine(e) => e.detach(),
        Setup::Iptables => lab.exec(&lab.router, &iptables("-D")).map(|_| ()),
        Setup::Qdisc => lab
            .exec(
                &lab.router,
                &["tc", "qdisc", "del", "dev", lab::ROUTER_EGRESS, "root"],
            )
            .map(|_| ()),
    }
}

/// Busy jiffies (user+nice+system+irq+softirq) summed over all CPUs.
fn busy_jiffies() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu = stat.lines().next().unwrap_or_default();
    let f: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    f.first().copied().unwrap_or(0)
        + f.get(1).copied().unwrap_or(0)
        + f.get(2).copied().unwrap_or(0)
        + f.get(5).copied().unwrap_or(0)
        + f.get(6).copied().unwrap_or(0)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}

/// Arrivals at the server's UDP layer (delivered or dropped for a full buffer).
fn server_udp_in(lab: &Lab) -> u64 {
    let snmp = lab
        .exec(&lab.server, &["cat", "/proc/net/snmp"])
        .unwrap_or_default();
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(h), Some(v)) = (lines.next(), lines.next()) else {
        return 0;
    };
    let hv: Vec<(&str, u64)> = h
        .split_whitespace()
        .zip(v.split_whitespace().map(|x| x.parse().unwrap_or(0)))
        .collect();
    hv.iter()
        .filter(|(k, _)| *k == "InDatagrams" || *k == "RcvbufErrors")
        .map(|(_, v)| *v)
        .sum()
}

#[derive(Serialize, Clone, Debug)]
struct Sample {
    arm: Arm,
    round: usize,
    senders: usize,
    sent_pps: f64,
    delivered_pps: f64,
    cpu_ns_per_packet: f64,
}

/// Sends minimum-size UDP datagrams client → server as fast as `senders`
/// threads (each pinned to its own CPU) can for `dur`.
fn blast(lab: &Lab, senders: usize, dur: Duration) -> Result<(f64, f64, f64)> {
    // A socket that is never read: arrivals count as InDatagrams or, once its
    // buffer is full, RcvbufErrors — both mean the packet got through.
    let server_ip = lab.server_v4();
    let sink = netns::run_in(&lab.server, move || UdpSocket::bind((server_ip, 0)))??;
    let server = sink.local_addr()?;
    let client = lab.client_v4();
    let sent = Arc::new(AtomicU64::new(0));
    let go = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let in0 = server_udp_in(lab);
    let mut handles = Vec::new();
    for cpu in 0..senders {
        let (sent, go, stop) = (sent.clone(), go.clone(), stop.clone());
        let sock = netns::run_in(&lab.client, move || UdpSocket::bind((client, 0)))??;
        handles.push(std::thread::spawn(move || {
            // SAFETY: zeroed cpu_set_t is valid; affects this thread only.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
            while !go.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            let buf = [0u8; 18];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    if sock.send_to(&buf, server).is_ok() {
                        n += 1;
                    }
                }
            }
            sent.fetch_add(n, Ordering::Relaxed);
        }));
    }
    let j0 = busy_jiffies();
    let t0 = Instant::now();
    go.store(true, Ordering::Release);
    std::thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    let secs = t0.elapsed().as_secs_f64();
    let j1 = busy_jiffies();
    std::thread::sleep(Duration::from_millis(50));
    let in1 = server_udp_in(lab);
    drop(sink);
    let n = sent.load(Ordering::Relaxed) as f64;
    let cpu_ns = (j1 - j0) as f64 / clock_ticks() * 1e9;
    Ok((n / secs, (in1 - in0) as f64 / secs, cpu_ns / n.max(1.0)))
}

#[derive(Serialize, Clone)]
struct ArmSummary {
    arm: Arm,
    name: &'static str,
    senders: usize,
    ratio_median: f64,
    ratio_ci95: (f64, f64),
    sent_pps_median: f64,
    delivered_pps_median: f64,
    cpu_ns_per_packet_median: f64,
}

/// The median of `v` (NaN when empty).
fn median(v: &[f64]) -> f64 {
    impair::statistics::median(&mut v.to_vec()).unwrap_or(f64::NAN)
}

/// Median and percentile-bootstrap 95% interval of the median.
fn bootstrap(v: &[f64], rng: &mut rand::rngs::StdRng) -> (f64, (f64, f64)) {
    let m = median(v);
    if v.len() < 2 {
        return (m, (m, m));
    }
    let mut meds: Vec<f64> = (0..2000)
        .map(|_| {
            let s: Vec<f64> = (0..v.len())
                .map(|_| v[rng.random_range(0..v.len())])
                .collect();
            median(&s)
        })
        .collect();
    meds.sort_by(f64::total_cmp);
    (m, (meds[50], meds[1949]))
}

fn summarize(
    samples: &[Sample],
    arms: &[Arm],
    senders: usize,
    rng: &mut rand::rngs::StdRng,
) -> Vec<ArmSummary> {
    let base: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.arm == Arm::Baseline && s.senders == senders)
        .collect();
    arms.iter()
        .map(|&arm| {
            let mine: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.arm == arm && s.senders == senders)
                .collect();
            let ratios: Vec<f64> = mine
                .iter()
                .filter_map(|s| {
                    base.iter()
                        .find(|b| b.round == s.round)
                        .map(|b| s.sent_pps / b.sent_pps)
                })
                .collect();
            let (m, ci) = bootstrap(&ratios, rng);
            ArmSummary {
                arm,
                name: arm.name(),
                senders,
                ratio_median: m,
                ratio_ci95: ci,
                sent_pps_median: median(&mine.iter().map(|s| s.sent_pps).collect::<Vec<_>>()),
                delivered_pps_median: median(
                    &mine.iter().map(|s| s.delivered_pps).collect::<Vec<_>>(),
                ),
                cpu_ns_per_packet_median: median(
                    &mine.iter().map(|s| s.cpu_ns_per_packet).collect::<Vec<_>>(),
                ),
            }
        })
        .collect()
}

// ---------------------------------------------------------------- report

/// Where and how a run measured: the same for the host and `--peers` runs.
#[derive(Serialize, serde::Deserialize, Clone)]
struct RunInfo {
    machine: String,
    kernel: String,
    cpus: usize,
    quick: bool,
    rounds: usize,
    seconds_per_arm: f64,
}

impl RunInfo {
    fn new(o: &Opts, cpus: usize) -> Self {
        RunInfo {
            machine: machine(),
            kernel: kernel_release(),
            cpus,
            quick: o.quick,
            rounds: o.rounds,
            seconds_per_arm: arm_duration(o).as_secs_f64(),
        }
    }
}

/// How long each arm sends in each round.
fn arm_duration(o: &Opts) -> Duration {
    Duration::from_millis(if o.quick { 300 } else { 1500 })
}

#[derive(Serialize)]
struct Report {
    #[serde(flatten)]
    run: RunInfo,
    micro: Vec<Micro>,
    arms: Vec<ArmSummary>,
    scaling: Vec<ArmSummary>,
    not_run: Vec<(String, String)>,
    /// `--peers` runs from kernels that have netem, fq, tbf and htb.
    peers: Vec<PeersReport>,
}

fn bar_svg(title: &str, rows: &[(String, f64, (f64, f64))], target: Option<f64>) -> String {
    let (w, row_h, left) = (760.0, 34.0, 290.0);
    let h = 60.0 + row_h * rows.len() as f64 + 30.0;
    let xmax = rows.iter().map(|r| r.2 .1.max(r.1)).fold(1.1f64, f64::max) * 1.05;
    let pw = w - left - 40.0;
    let x = |v: f64| left + v / xmax * pw;
    let mut doc = Svg::new(w, h);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{title}</text>"#,
        w / 2.0
    );
    for (i, (name, m, (lo, hi))) in rows.iter().enumerate() {
        let y = 44.0 + row_h * i as f64;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{name}</text>"#,
            left - 8.0,
            y + 16.0
        );
        let _ = writeln!(
            s,
            r##"<rect x="{left}" y="{y}" width="{:.1}" height="22" fill="#1f6feb"/>"##,
            x(*m) - left
        );
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" x2="{:.1}" y1="{}" y2="{}" stroke="#000" stroke-width="1.5"/>"##,
            x(*lo),
            x(*hi),
            y + 11.0,
            y + 11.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}">{m:.3}</text>"#,
            x(hi.max(*m)) + 6.0,
            y + 16.0
        );
    }
    let bottom = 44.0 + row_h * rows.len() as f64;
    for v in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" x2="{:.1}" y1="40" y2="{bottom}" stroke="#bbb" stroke-dasharray="2 3"/><text x="{:.1}" y="{}" text-anchor="middle">{v}</text>"##,
            x(v),
            x(v),
            x(v),
            bottom + 16.0
        );
    }
    if let Some(t) = target {
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" x2="{:.1}" y1="40" y2="{bottom}" stroke="#c92a2a"/><text x="{:.1}" y="38" fill="#c92a2a" text-anchor="middle">target {t}</text>"##,
            x(t),
            x(t),
            x(t)
        );
    }
    doc.raw(&s);
    doc.finish()
}

fn rules_svg(points: &[(usize, f64)]) -> String {
    let (w, h, left, top, pw, ph) = (640.0, 360.0, 60.0, 40.0, 540.0, 260.0);
    let ymax = points.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.25;
    let px = |n: usize| left + (n as f64).log2() / 6.0 * pw;
    let py = |v: f64| top + (1.0 - v / ymax) * ph;
    let mut doc = Svg::new(w, h);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">impair_egress ns per packet vs rules walked (BPF_PROG_TEST_RUN)</text>"#,
        w / 2.0
    );
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    for k in 0..=4 {
        let v = ymax * k as f64 / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{v:.0}</text>"##,
            left + pw,
            py(v),
            py(v),
            left - 6.0,
            py(v) + 4.0
        );
    }
    for (n, _) in points {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{n}</text>"#,
            px(*n),
            top + ph + 18.0
        );
    }
    let pts: Vec<String> = points
        .iter()
        .map(|(n, v)| format!("{:.1},{:.1}", px(*n), py(*v)))
        .collect();
    let _ = writeln!(
        s,
        r##"<polyline points="{}" fill="none" stroke="#1f6feb" stroke-width="2"/>"##,
        pts.join(" ")
    );
    for (n, v) in points {
        let _ = writeln!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="#1f6feb"/>"##,
            px(*n),
            py(*v)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">rules (the packet matches the last one)</text><text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">ns per packet</text>"#,
        left + pw / 2.0,
        h - 12.0,
        top + ph / 2.0,
        top + ph / 2.0
    );
    doc.raw(&s);
    doc.finish()
}

fn markdown(r: &Report) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# Benchmarks\n");
    let _ = writeln!(m, "Generated by `cargo xtask bench` (method: ../shared/reference/measuring.md as summarised below). Machine: {}; kernel {}; {} CPUs; {} rounds of {:.1} s per arm{}.\n", r.run.machine, r.run.kernel, r.run.cpus, r.run.rounds, r.run.seconds_per_arm, if r.run.quick { " (--quick)" } else { "" });
    let _ = writeln!(
        m,
        "## Per-packet cost of `impair_egress` (BPF_PROG_TEST_RUN)\n"
    );
    let _ = writeln!(m, "The kernel's own average run time over `repeat` runs of one 42-byte UDP frame (median of five calls), on CPU 0. It includes the program's map lookups and helpers, not the stack around it.\n");
    let _ = writeln!(m, "| path | rules | ns/packet |\n|---|---|---|");
    for x in r.micro.iter().filter(|x| x.case != "rules") {
        let _ = writeln!(m, "| {} | {} | {:.1} |", x.case, x.rules, x.ns_per_packet);
    }
    let rules: Vec<&Micro> = r.micro.iter().filter(|x| x.case == "rules").collect();
    let _ = writeln!(m, "\nCost against the number of rules walked (the packet matches the last rule; 1% loss):\n\n| rules | ns/packet |\n|---|---|");
    for x in &rules {
        let _ = writeln!(m, "| {} | {:.1} |", x.rules, x.ns_per_packet);
    }
    let _ = writeln!(m, "\n![ns per packet vs rules](bench/rules.svg)\n");
    let _ = writeln!(m, "## Throughput over the namespace lab\n");
    let _ = writeln!(m, "One sender thread sends 18-byte UDP datagrams client → router → server as fast as it can; the router's forwarding and impair's program run in the sender's softirq context, so packets/s is the cost of the whole path. Arms run in random order in every round; each arm's packets/s is divided by the same round's baseline. Median ratio with a bootstrap 95% interval over rounds; CPU time per packet from /proc/stat (all CPUs busy time / packets sent).\n");
    arms_table(&mut m, r.arms.iter().map(PeerArm::from));
    let _ = writeln!(m, "\n![ratio per arm](bench/arms.svg)\n");
    let _ = writeln!(m, "## Scaling: one sender per CPU\n\n| arm | senders | ratio to baseline (95% CI) | sent pkt/s |\n|---|---|---|---|");
    for a in &r.scaling {
        let _ = writeln!(
            m,
            "| {} | {} | {:.3} ({:.3}–{:.3}) | {:.0} |",
            a.name, a.senders, a.ratio_median, a.ratio_ci95.0, a.ratio_ci95.1, a.sent_pps_median
        );
    }
    let find = |arm: Arm, n: usize| {
        r.scaling
            .iter()
            .find(|a| a.arm == arm && a.senders == n)
            .map(|a| a.sent_pps_median)
    };
    let _ = writeln!(
        m,
        "\nScaling factor (pkt/s with {} senders ÷ with 1):",
        r.run.cpus.min(2)
    );
    for arm in [Arm::Baseline, Arm::ImpairLoss1, Arm::TbfRootLock] {
        if let (Some(one), Some(two)) = (find(arm, 1), find(arm, r.run.cpus.min(2))) {
            let _ = writeln!(m, "- {}: {:.2}", arm.name(), two / one);
        }
    }
    let _ = writeln!(m, "\n## Targets\n");
    let ratio = |arm: Arm| {
        r.arms
            .iter()
            .find(|a| a.arm == arm)
            .map(|a| (a.ratio_median, a.ratio_ci95))
    };
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    if let Some((m0, ci)) = ratio(Arm::ImpairNoMatch) {
        let _ = writeln!(
            m,
            "- pass-through (attached, no match) ≥ 0.97× baseline: {:.3} (95% {:.3}–{:.3}): {}",
            m0,
            ci.0,
            ci.1,
            verdict(m0 >= 0.97)
        );
    }
    if let Some((m0, ci)) = ratio(Arm::ImpairLoss1) {
        let _ = writeln!(
            m,
            "- matched with impairments (1% loss) ≥ 0.95×: {:.3} (95% {:.3}–{:.3}): {}",
            m0,
            ci.0,
            ci.1,
            verdict(m0 >= 0.95)
        );
    }
    if let Some(full) = r.micro.iter().find(|x| x.case.starts_with("full:")) {
        let _ = writeln!(
            m,
            "- full decision path ≤ 100 ns per packet: {:.1} ns: {}",
            full.ns_per_packet,
            verdict(full.ns_per_packet <= 100.0)
        );
    }
    if let (Some(a), Some(b)) = (rules.first(), rules.last()) {
        let growth = b.ns_per_packet / a.ns_per_packet - 1.0;
        let _ = writeln!(m, "- cost flat within ±10% from 1 to 64 rules (distinct prefixes, the last rule matches): {:+.0}%: {}", growth * 100.0, verdict(growth.abs() <= 0.10));
    }
    if let (Some((i, _)), Some((t, _))) = (ratio(Arm::ImpairLoss1), ratio(Arm::IptablesLoss1)) {
        let _ = writeln!(m, "- faster than iptables statistic at the same 1% loss: impair {:.3} vs iptables {:.3}: {}", i, t, verdict(i > t));
    }
    for p in &r.peers {
        let find = |arm: Arm| p.arms.iter().find(|a| a.name == arm.name());
        if let (Some(i), Some(n)) = (find(Arm::ImpairLoss1), find(Arm::NetemLoss1)) {
            let _ = writeln!(
                m,
                "- faster than netem at the same 1% loss (Linux {}, qemu): impair {:.3} ({:.3}–{:.3}) vs netem {:.3} ({:.3}–{:.3}): {}",
                p.run.kernel,
                i.ratio_median,
                i.ratio_ci95.0,
                i.ratio_ci95.1,
                n.ratio_median,
                n.ratio_ci95.0,
                n.ratio_ci95.1,
                verdict(i.ratio_median > n.ratio_median)
            );
        }
    }
    let _ = writeln!(m, "\n### Where a target is missed, why\n");
    let micro = |case: &str| {
        r.micro
            .iter()
            .find(|x| x.case == case)
            .map_or(f64::NAN, |x| x.ns_per_packet)
    };
    let (empty, unmatched) = (micro("empty rule set"), micro("unmatched (1 rule)"));
    let mut missed = 0;
    if ratio(Arm::ImpairNoMatch).is_some_and(|(x, _)| x < 0.97)
        || ratio(Arm::ImpairLoss1).is_some_and(|(x, _)| x < 0.95)
    {
        missed += 1;
        let _ = writeln!(m, "- **Pass-through and matched paths.** The program itself costs {empty:.0} ns with an empty rule set and {unmatched:.0} ns to find that one rule does not match (BPF_PROG_TEST_RUN: the lease, the active slot, parsing Ethernet, VLAN tags, IPv4/IPv6 and the ports into a per-CPU scratch key, the index). On the lab path, which costs about {:.1} µs per packet, each 1% of throughput is about {:.0} ns, so the remaining gap is mostly the hook around the program (tcx or the clsact classifier, its context, and the maps' cache lines on a path that touches many), not the decision.", 1e6 / r.arms.first().map_or(f64::NAN, |a| a.sent_pps_median), 1e7 / r.arms.first().map_or(f64::NAN, |a| a.sent_pps_median));
    }
    if r.micro
        .iter()
        .any(|x| x.case.starts_with("full:") && x.ns_per_packet > 100.0)
    {
        missed += 1;
        let _ = writeln!(m, "- **Full decision path.** Silent corruption rewrites a byte and fixes the L4 checksum through two helpers, table jitter interpolates a quantile, in-order looks the flow up in an LRU hash and advances it with compare-and-swap, and the rate advances the link with another compare-and-swap: each is tens of ns, so the path with all of them exceeds 100 ns, while single impairments stay near or under it (table above).");
    }
    if let (Some(a), Some(b)) = (rules.first(), rules.last()) {
        if (b.ns_per_packet / a.ns_per_packet - 1.0).abs() > 0.10 {
            missed += 1;
            let _ = writeln!(m, "- **Rules.** The index (docs/architecture.md) narrows the walk to the rules the packet's fields admit; what still grows is its eight-step interval search per indexed field and the rules left to check in full.");
        }
    }
    if let (Some((i, _)), Some((t, _))) = (ratio(Arm::ImpairLoss1), ratio(Arm::IptablesLoss1)) {
        if i <= t {
            missed += 1;
            let _ = writeln!(m, "- **iptables statistic.** The iptables arm runs one `prandom` in a FORWARD rule and parses nothing; impair parses the headers before it knows which rule applies, which is what lets it match per flow and keep counters per rule.");
        }
    }
    for p in &r.peers {
        let find = |arm: Arm| p.arms.iter().find(|a| a.name == arm.name());
        if let (Some(i), Some(n)) = (find(Arm::ImpairLoss1), find(Arm::NetemLoss1)) {
            if i.ratio_median <= n.ratio_median {
                missed += 1;
                let _ = writeln!(m, "- **netem (Linux {}).** Under emulation both arms are within a few percent of the baseline and the intervals say how far apart they are.", p.run.kernel);
            }
        }
    }
    if missed == 0 {
        let _ = writeln!(m, "None in this run.");
    }
    for p in &r.peers {
        let _ = writeln!(m, "\n{}", peers_markdown(p));
        let _ = writeln!(
            m,
            "![impair against netem, tbf and htb](bench/{})",
            peers_svg_name(p)
        );
    }
    if r.not_run.is_empty() {
        return m;
    }
    let _ = writeln!(m, "\n## Not run here\n");
    for (what, why) in &r.not_run {
        let _ = writeln!(m, "- {what}: {why}");
    }
    m
}

/// The plot of one peers run, under docs/bench/.
fn peers_svg_name(p: &PeersReport) -> String {
    let series: Vec<&str> = p.run.kernel.split('.').take(2).collect();
    format!("peers-{}.svg", series.join("."))
}

fn peers_svg(p: &PeersReport) -> String {
    let rows: Vec<(String, f64, (f64, f64))> = p
        .arms
        .iter()
        .map(|a| (a.name.clone(), a.ratio_median, a.ratio_ci95))
        .collect();
    bar_svg(
        &format!(
            "Linux {} (qemu): packets/s as a ratio to the same round's baseline",
            p.run.kernel
        ),
        &rows,
        None,
    )
}

fn peers_markdown(p: &PeersReport) -> String {
    let mut m = String::new();
    let _ = writeln!(
        m,
        "## impair against netem, tbf and htb (Linux {}, qemu)\n",
        p.run.kernel
    );
    let _ = writeln!(m, "The host kernel has neither sch_fq nor sch_netem, so these arms run in the VM tier: `cargo xtask bench` boots Linux {} under qemu ({}, {} vCPUs) and runs `impair-bench --peers` there, with the same lab, sender and interleaved rounds ({} rounds of {:.1} s per arm{}). qemu emulates the CPU (TCG: no KVM on this machine), so absolute packets/s are a small fraction of the host's and only ratios within a round mean anything: every arm runs the same emulated code paths around the part that differs. The rate arms shape at {PEER_RATE}, far above what the lab forwards with small frames: every arm passes every packet, so the ratio is the shaper's cost, not its limit (docs/accuracy.md shows the rates each delivers when the rate binds).\n", p.run.kernel, p.run.machine, p.run.cpus, p.run.rounds, p.run.seconds_per_arm, if p.run.quick { ", --quick" } else { "" });
    arms_table(&mut m, p.arms.iter().cloned());
    let find = |arm: Arm| p.arms.iter().find(|a| a.name == arm.name());
    if let (Some(i), Some(t)) = (find(Arm::ImpairRate), find(Arm::TbfRate)) {
        if i.ratio_median < t.ratio_median {
            let _ = writeln!(m, "\nimpair's rate costs more than tbf here: it gives every packet the departure time at the end of its own serialization (a packet arrives after its last bit, as netem models a link), so fq holds each packet briefly in its time-ordered queue and releases it from its watchdog timer, while tbf sends at once as long as it has tokens. The arm measures that machinery (fq plus a timer) at a rate that never binds; docs/accuracy.md shows what each delivers when it does.");
        }
    }
    for (what, why) in &p.not_run {
        let _ = writeln!(m, "\nNot run on this kernel: {what} ({why}).");
    }
    m
}

/// Interleaved rounds: every round runs each (arm, senders) once, in a
/// fresh random order, as a sample numbered `first_round + round`.
fn run_rounds(
    lab: &Lab,
    arms: &[(Arm, usize)],
    rounds: usize,
    first_round: usize,
    dur: Duration,
    rng: &mut rand::rngs::StdRng,
) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for round in 0..rounds {
        let mut order = arms.to_vec();
        order.shuffle(rng);
        for (arm, senders) in order {
            let s = setup(lab, arm)?;
            let measured = blast(lab, senders, dur);
            teardown(lab, s)?;
            let (sent_pps, delivered_pps, cpu) = measured?;
            eprintln!("round {round} {:<36} x{senders} {sent_pps:>10.0} pkt/s sent {delivered_pps:>10.0} delivered {cpu:>6.0} CPU ns/pkt", arm.name());
            samples.push(Sample {
                arm,
                round: first_round + round,
                senders,
                sent_pps,
                delivered_pps,
                cpu_ns_per_packet: cpu,
            });
        }
    }
    Ok(samples)
}

/// Whether the kernel takes `tc qdisc add ... root <q>` (tried on the
/// router's ingress-side veth, which no arm uses).
fn kernel_has_qdisc(lab: &Lab, q: &[&str]) -> bool {
    let mut args = vec!["tc", "qdisc", "add", "dev", lab::ROUTER_INGRESS, "root"];
    args.extend_from_slice(q);
    let ok = lab.exec(&lab.router, &args).is_ok();
    if ok {
        let _ = lab.exec(
            &lab.router,
            &["tc", "qdisc", "del", "dev", lab::ROUTER_INGRESS, "root"],
        );
    }
    ok
}

fn machine() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_owned()
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Marks the one line of JSON a `--peers` run prints for the host to render.
const PEERS_MARKER: &str = "IMPAIR-BENCH-PEERS ";

/// What `--peers` measured on one kernel.
#[derive(Serialize, serde::Deserialize, Clone)]
struct PeersReport {
    #[serde(flatten)]
    run: RunInfo,
    arms: Vec<PeerArm>,
    not_run: Vec<(String, String)>,
}

/// One arm of a peers run (an [`ArmSummary`] with an owned name, so it
/// deserializes on the host).
#[derive(Serialize, serde::Deserialize, Clone)]
struct PeerArm {
    name: String,
    ratio_median: f64,
    ratio_ci95: (f64, f64),
    sent_pps_median: f64,
    delivered_pps_median: f64,
    cpu_ns_per_packet_median: f64,
}

impl From<&ArmSummary> for PeerArm {
    fn from(a: &ArmSummary) -> Self {
        PeerArm {
            name: a.name.to_owned(),
            ratio_median: a.ratio_median,
            ratio_ci95: a.ratio_ci95,
            sent_pps_median: a.sent_pps_median,
            delivered_pps_median: a.delivered_pps_median,
            cpu_ns_per_packet_median: a.cpu_ns_per_packet_median,
        }
    }
}

/// The per-arm table of a throughput run.
fn arms_table(m: &mut String, arms: impl Iterator<Item = PeerArm>) {
    let _ = writeln!(m, "| arm | ratio to baseline (95% CI) | sent pkt/s | delivered pkt/s | CPU ns/packet |\n|---|---|---|---|---|");
    for a in arms {
        let _ = writeln!(
            m,
            "| {} | {:.3} ({:.3}–{:.3}) | {:.0} | {:.0} | {:.0} |",
            a.name,
            a.ratio_median,
            a.ratio_ci95.0,
            a.ratio_ci95.1,
            a.sent_pps_median,
            a.delivered_pps_median,
            a.cpu_ns_per_packet_median
        );
    }
}

/// `--peers`: impair against netem, tbf and htb on a kernel that has them.
fn peers(o: &Opts, cpus: usize) -> Result<()> {
    let dur = arm_duration(o);
    let lab = Lab::create_with("bench", LabOptions { offloads: false })?;
    let mut arms = vec![Arm::Baseline, Arm::ImpairLoss1];
    let mut not_run = Vec::new();
    if kernel_has_qdisc(&lab, &["netem", "loss", "1%"]) {
        arms.push(Arm::NetemLoss1);
    } else {
        not_run.push((
            "netem 1% loss".into(),
            "this kernel has no sch_netem".into(),
        ));
    }
    if kernel_has_qdisc(&lab, &["fq"]) {
        arms.push(Arm::ImpairRate);
        if kernel_has_qdisc(&lab, &TBF_ROOT_LOCK) {
            arms.push(Arm::TbfRate);
        } else {
            not_run.push((
                Arm::TbfRate.name().into(),
                "this kernel has no sch_tbf".into(),
            ));
        }
        if kernel_has_qdisc(&lab, &["htb"]) {
            arms.push(Arm::HtbRate);
        } else {
            not_run.push((
                Arm::HtbRate.name().into(),
                "this kernel has no sch_htb".into(),
            ));
        }
    } else {
        not_run.push((
            "rate arms (impair EDT, tbf, htb)".into(),
            "this kernel has no sch_fq, which impair's rate needs".into(),
        ));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261124);
    let _ = blast(&lab, 1, Duration::from_millis(200))?;
    let pairs: Vec<(Arm, usize)> = arms.iter().map(|&a| (a, 1)).collect();
    let samples = run_rounds(&lab, &pairs, o.rounds, 0, dur, &mut rng)?;
    drop(lab);
    let report = PeersReport {
        run: RunInfo::new(o, cpus),
        arms: summarize(&samples, &arms, 1, &mut rng)
            .iter()
            .map(PeerArm::from)
            .collect(),
        not_run,
    };
    let json = serde_json::to_string(&report)?;
    std::fs::write(o.out.join("peers.json"), &json)?;
    println!("{}", peers_markdown(&report));
    println!("{PEERS_MARKER}{json}");
    Ok(())
}

/// Reads `--peers-from` files: a peers JSON, or a console log holding
/// `IMPAIR-BENCH-PEERS` lines (the last one counts).
fn load_peers(files: &[PathBuf]) -> Result<Vec<PeersReport>> {
    let mut out = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let json = text
            .lines()
            .filter_map(|l| l.split(PEERS_MARKER).nth(1))
            .next_back()
            .unwrap_or(text.trim());
        out.push(
            serde_json::from_str(json.trim())
                .with_context(|| format!("{}: not a peers report", f.display()))?,
        );
    }
    Ok(out)
}

fn main() -> Result<()> {
    let o = parse_args()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("impair-bench needs root (BPF, network namespaces)");
    }
    std::fs::create_dir_all(&o.out)?;
    // Before anything pins a thread: the machine's CPUs, not this thread's.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if o.peers {
        return peers(&o, cpus);
    }
    let peer_runs = load_peers(&o.peers_from)?;
    // BPF_PROG_TEST_RUN pins its thread to CPU 0; the lab arms must not be.
    let quick = o.quick;
    let micro = std::thread::spawn(move || micro(quick))
        .join()
        .map_err(|_| anyhow::anyhow!("the microbenchmark thread panicked"))??;
    let dur = arm_duration(&o);
    let lab = Lab::create_with("bench", LabOptions { offloads: false })?;
    let mut not_run = Vec::new();
    if peer_runs.is_empty()
        && (!kernel_has_qdisc(&lab, &["fq"]) || !kernel_has_qdisc(&lab, &["netem"]))
    {
        not_run.push((
            "netem 1% loss; tbf and htb against impair's EDT rate".to_owned(),
            "this kernel lacks sch_fq or sch_netem, and no `--peers-from` results were given: \
             `cargo xtask bench` measures them in qemu on Linux 6.12"
                .to_owned(),
        ));
    }
    let mut arms = vec![
        Arm::Baseline,
        Arm::ImpairNoMatch,
        Arm::ImpairMatchZero,
        Arm::ImpairLoss1,
    ];
    if lab.exec(&lab.router, &iptables("-A")).is_ok() {
        lab.exec(&lab.router, &iptables("-D"))?;
        arms.push(Arm::IptablesLoss1);
    } else {
        not_run.push((
            "iptables -m statistic".to_owned(),
            "iptables or xt_statistic is missing here".to_owned(),
        ));
    }
    let tbf = kernel_has_qdisc(&lab, &TBF_ROOT_LOCK);
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261123);
    // Warm-up: one unmeasured baseline.
    let _ = blast(&lab, 1, Duration::from_millis(200))?;
    let pairs: Vec<(Arm, usize)> = arms.iter().map(|&a| (a, 1)).collect();
    let mut samples = run_rounds(&lab, &pairs, o.rounds, 0, dur, &mut rng)?;
    let mut scale_arms = vec![Arm::Baseline, Arm::ImpairLoss1];
    if tbf {
        scale_arms.push(Arm::TbfRootLock);
    }
    let senders_max = cpus.min(2);
    let pairs: Vec<(Arm, usize)> = scale_arms
        .iter()
        .flat_map(|&a| [(a, 1), (a, senders_max)])
        .collect();
    samples.extend(run_rounds(
        &lab,
        &pairs,
        o.rounds.min(5),
        1000,
        dur,
        &mut rng,
    )?);
    drop(lab);
    let summary = summarize(&samples, &arms, 1, &mut rng);
    let mut scaling = Vec::new();
    for n in [1, senders_max] {
        scaling.extend(summarize(&samples, &scale_arms, n, &mut rng));
        if senders_max == 1 {
            break;
        }
    }
    let report = Report {
        run: RunInfo::new(&o, cpus),
        micro,
        arms: summary,
        scaling,
        not_run,
        peers: peer_runs,
    };
    std::fs::write(
        o.out.join("bench.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let rows: Vec<(String, f64, (f64, f64))> = report
        .arms
        .iter()
        .map(|a| (a.name.to_owned(), a.ratio_median, a.ratio_ci95))
        .collect();
    let arms_svg = bar_svg(
        "packets/s as a ratio to the same round's baseline (median, 95% CI)",
        &rows,
        Some(0.97),
    );
    let pts: Vec<(usize, f64)> = report
        .micro
        .iter()
        .filter(|x| x.case == "rules")
        .map(|x| (x.rules, x.ns_per_packet))
        .collect();
    let rsvg = rules_svg(&pts);
    std::fs::write(o.out.join("arms.svg"), &arms_svg)?;
    std::fs::write(o.out.join("rules.svg"), &rsvg)?;
    for p in &report.peers {
        std::fs::write(o.out.join(peers_svg_name(p)), peers_svg(p))?;
    }
    let md = markdown(&report);
    std::fs::write(o.out.join("benchmarks.md"), &md)?;
    if let Some(docs) = &o.docs {
        let dir = docs
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("bench");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("arms.svg"), &arms_svg)?;
        std::fs::write(dir.join("rules.svg"), &rsvg)?;
        for p in &report.peers {
            std::fs::write(dir.join(peers_svg_name(p)), peers_svg(p))?;
        }
        std::fs::write(docs, &md)?;
    }
    println!("{md}");
    Ok(())
}
