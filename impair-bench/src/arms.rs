//! The lab arms: set up each competitor, blast traffic, summarise rounds.
#[allow(clippy::wildcard_imports)]
use crate::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(crate) enum Arm {
    Baseline,
    /// An empty tc program (TC_ACT_OK) at impair's hook: the floor.
    Floor,
    ImpairNoMatch,
    ImpairMatchZero,
    ImpairLoss1,
    IptablesLoss1,
    TbfRootLock,
    NetemLoss1,
    ImpairRate,
    TbfRate,
    HtbRate,
    /// The floor at tcx ingress of the router's incoming veth.
    FloorIngress,
    /// `--direction ingress --loss 1%` at tc ingress of the same veth.
    ImpairIngressLoss1,
    /// The same through the ifb (a 0 ms delay holds packets, so tc ingress
    /// redirects to an ifb whose egress runs impair).
    ImpairIngressIfb,
    /// The hand-made recipe impair's ingress replaces: the router's incoming
    /// veth redirected by `mirred` to an ifb whose root is netem with 1% loss
    /// (`--peers`, where the kernel has sch_netem).
    NetemIngressIfb,
    /// TCP arms (iperf3): impair `--proto tcp --loss 0%` and `--loss 1%`.
    TcpImpairLoss0,
    TcpImpairLoss1,
    /// `--proto tcp --loss 0% --keep-offloads`: the same rule with the
    /// client's super-packets decided whole (no segmenter, offloads left
    /// alone), so the difference to [`Arm::TcpImpairLoss0`] is what deciding
    /// per wire packet costs.
    TcpImpairLoss0Whole,
    /// `--proto tcp --loss 1% --keep-offloads`: loss decided per
    /// super-packet, the unit iptables decides on (the like-for-like arm).
    TcpImpairLoss1Whole,
}

/// The rate of the rate arms: far above what the lab forwards with small
/// frames, so every arm passes every packet and packets/s is the shaper's
/// cost, not its limit (docs/accuracy.md has the rates they deliver).
pub(crate) const PEER_RATE_BPS: u64 = 1_000_000_000;
pub(crate) const PEER_RATE: &str = "1gbit";

/// The scaling comparison's root-locked qdisc: tbf far above the lab's rate.
pub(crate) const TBF_ROOT_LOCK: [&str; 7] =
    ["tbf", "rate", "10gbit", "burst", "1mb", "latency", "10ms"];

impl Arm {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Arm::Baseline => "baseline (nothing attached)",
            Arm::Floor => "floor: empty tc program, same hook",
            Arm::ImpairNoMatch => "impair attached, no rule matches",
            Arm::ImpairMatchZero => "impair matching, zero impairment",
            Arm::ImpairLoss1 => "impair 1% loss",
            Arm::IptablesLoss1 => "iptables -m statistic 1% loss",
            Arm::TbfRootLock => "tbf 10gbit (root-locked qdisc)",
            Arm::NetemLoss1 => "netem 1% loss",
            Arm::ImpairRate => "impair rate 1gbit (EDT + fq)",
            Arm::TbfRate => "tbf rate 1gbit",
            Arm::HtbRate => "htb rate 1gbit",
            Arm::FloorIngress => "floor at tc ingress",
            Arm::ImpairIngressLoss1 => "impair 1% loss at tc ingress",
            Arm::ImpairIngressIfb => "impair 1% loss + 0 ms delay at ingress (ifb)",
            Arm::NetemIngressIfb => "netem 1% loss on an ifb at ingress (mirred)",
            Arm::TcpImpairLoss0 => "impair --proto tcp, 0% loss",
            Arm::TcpImpairLoss1 => "impair --proto tcp, 1% loss",
            Arm::TcpImpairLoss0Whole => "impair --proto tcp, 0% loss, --keep-offloads",
            Arm::TcpImpairLoss1Whole => "impair --proto tcp, 1% loss, --keep-offloads",
        }
    }
}

/// What an arm leaves in place while it is measured.
pub(crate) enum Setup {
    None,
    Engine(Box<Engine>),
    Floor(crate::floor::Floor),
    Iptables,
    /// A root qdisc impair did not make: removed with `tc qdisc del root`.
    Qdisc,
    /// The ingress qdisc and ifb of [`Arm::NetemIngressIfb`].
    IngressIfb,
}

/// The ifb of [`Arm::NetemIngressIfb`], in the router's namespace.
const NETEM_IFB: &str = "ifbbench";

pub(crate) fn setup(lab: &Lab, arm: Arm) -> Result<Setup> {
    let attach_with = |rules: Vec<RuleSpec>, ingress: bool, keep_offloads: bool| -> Result<Setup> {
        let opts = AttachOptions {
            keep_offloads,
            iface: if ingress {
                lab::ROUTER_INGRESS
            } else {
                lab::ROUTER_EGRESS
            }
            .into(),
            rules,
            seed: Some(3),
            label: "bench".into(),
            ..Default::default()
        };
        let hooks = HookOptions {
            direction: if ingress {
                Direction::Ingress
            } else {
                Direction::Egress
            },
            ..Default::default()
        };
        let engine = netns::run_in(&lab.router, move || Engine::attach_with(opts, hooks))??;
        Ok(Setup::Engine(Box::new(engine)))
    };
    let attach_at = |rules: Vec<RuleSpec>, ingress: bool| attach_with(rules, ingress, false);
    let attach = |rules: Vec<RuleSpec>| attach_at(rules, false);
    let floor = |ingress: bool| -> Result<Setup> {
        let iface = if ingress {
            lab::ROUTER_INGRESS
        } else {
            lab::ROUTER_EGRESS
        };
        let f = netns::run_in(&lab.router, move || {
            crate::floor::attach_floor(iface, ingress)
        })??;
        Ok(Setup::Floor(f))
    };
    let tcp = |loss: f64| RuleSpec {
        matcher: MatchSpec {
            proto: Some(Proto(6)),
            ..Default::default()
        },
        loss: Some(loss),
        ..Default::default()
    };
    match arm {
        Arm::Baseline => Ok(Setup::None),
        Arm::Floor => floor(false),
        Arm::FloorIngress => floor(true),
        Arm::ImpairIngressLoss1 => attach_at(
            vec![RuleSpec {
                loss: Some(0.01),
                ..Default::default()
            }],
            true,
        ),
        Arm::ImpairIngressIfb => attach_at(
            vec![RuleSpec {
                loss: Some(0.01),
                delay: Some(DelaySpec::default()),
                ..Default::default()
            }],
            true,
        ),
        Arm::NetemIngressIfb => {
            let setup = [
                &["ip", "link", "add", NETEM_IFB, "type", "ifb"][..],
                &["ip", "link", "set", NETEM_IFB, "up"],
                &[
                    "tc",
                    "qdisc",
                    "add",
                    "dev",
                    lab::ROUTER_INGRESS,
                    "handle",
                    "ffff:",
                    "ingress",
                ],
                &[
                    "tc",
                    "filter",
                    "add",
                    "dev",
                    lab::ROUTER_INGRESS,
                    "parent",
                    "ffff:",
                    "matchall",
                    "action",
                    "mirred",
                    "egress",
                    "redirect",
                    "dev",
                    NETEM_IFB,
                ],
                &[
                    "tc", "qdisc", "add", "dev", NETEM_IFB, "root", "netem", "loss", "1%", "limit",
                    "100000",
                ],
            ];
            for args in setup {
                if let Err(e) = lab.exec(&lab.router, args) {
                    teardown(lab, Setup::IngressIfb)?;
                    return Err(e);
                }
            }
            Ok(Setup::IngressIfb)
        }
        Arm::TcpImpairLoss0 => attach(vec![tcp(0.0)]),
        Arm::TcpImpairLoss1 => attach(vec![tcp(0.01)]),
        Arm::TcpImpairLoss0Whole => attach_with(vec![tcp(0.0)], false, true),
        Arm::TcpImpairLoss1Whole => attach_with(vec![tcp(0.01)], false, true),
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
pub(crate) fn tc_root(lab: &Lab, args: &[&str]) -> Result<()> {
    let mut cmd = vec!["tc", "qdisc", "add", "dev", lab::ROUTER_EGRESS, "root"];
    cmd.extend_from_slice(args);
    lab.exec(&lab.router, &cmd).map(|_| ())
}

/// `iptables -w -A FORWARD -m statistic ... -j DROP` (with `-D` to remove it).
pub(crate) fn iptables(op: &'static str) -> [&'static str; 12] {
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

pub(crate) fn teardown(lab: &Lab, s: Setup) -> Result<()> {
    match s {
        Setup::None => Ok(()),
        Setup::Engine(e) => e.detach(),
        Setup::Floor(f) => {
            drop(f);
            Ok(())
        }
        Setup::Iptables => lab.exec(&lab.router, &iptables("-D")).map(|_| ()),
        Setup::Qdisc => lab
            .exec(
                &lab.router,
                &["tc", "qdisc", "del", "dev", lab::ROUTER_EGRESS, "root"],
            )
            .map(|_| ()),
        Setup::IngressIfb => {
            // Each may be missing after a partial setup: remove what is there.
            let qdisc = lab.exec(
                &lab.router,
                &["tc", "qdisc", "del", "dev", lab::ROUTER_INGRESS, "ingress"],
            );
            let ifb = lab.exec(&lab.router, &["ip", "link", "del", NETEM_IFB]);
            let gone = |r: Result<String>| match r {
                Err(e)
                    if format!("{e:#}").contains("Cannot find device")
                        || format!("{e:#}").contains("Invalid handle")
                        || format!("{e:#}").contains("No such file") =>
                {
                    Ok(())
                }
                r => r.map(|_| ()),
            };
            gone(qdisc).and(gone(ifb))
        }
    }
}

/// Busy jiffies (user+nice+system+irq+softirq) summed over all CPUs.
pub(crate) fn busy_jiffies() -> u64 {
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

pub(crate) fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}

/// Arrivals at the server's UDP layer (delivered or dropped for a full buffer).
pub(crate) fn server_udp_in(lab: &Lab) -> u64 {
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
pub(crate) struct Sample {
    pub(crate) arm: Arm,
    pub(crate) round: usize,
    pub(crate) senders: usize,
    pub(crate) sent_pps: f64,
    pub(crate) delivered_pps: f64,
    pub(crate) cpu_ns_per_packet: f64,
}

/// Sends minimum-size UDP datagrams client → server as fast as `senders`
/// threads (each pinned to its own CPU) can for `dur`.
pub(crate) fn blast(lab: &Lab, senders: usize, dur: Duration) -> Result<(f64, f64, f64)> {
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
pub(crate) struct ArmSummary {
    pub(crate) arm: Arm,
    pub(crate) name: &'static str,
    pub(crate) senders: usize,
    pub(crate) ratio_median: f64,
    pub(crate) ratio_ci95: (f64, f64),
    pub(crate) sent_pps_median: f64,
    pub(crate) delivered_pps_median: f64,
    pub(crate) cpu_ns_per_packet_median: f64,
}

/// The median of `v` (NaN when empty).
pub(crate) fn median(v: &[f64]) -> f64 {
    impair::statistics::median(&mut v.to_vec()).unwrap_or(f64::NAN)
}

/// Median and percentile-bootstrap 95% interval of the median.
pub(crate) fn bootstrap(v: &[f64], rng: &mut rand::rngs::StdRng) -> (f64, (f64, f64)) {
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

pub(crate) fn summarize(
    samples: &[Sample],
    arms: &[Arm],
    senders: usize,
    rng: &mut rand::rngs::StdRng,
) -> Vec<ArmSummary> {
    summarize_vs(samples, arms, senders, Arm::Baseline, rng)
}

/// Like [`summarize`], with ratios to the same round's `reference` arm (the
/// baseline, or the floor: an empty program at the same hook).
pub(crate) fn summarize_vs(
    samples: &[Sample],
    arms: &[Arm],
    senders: usize,
    reference: Arm,
    rng: &mut rand::rngs::StdRng,
) -> Vec<ArmSummary> {
    let base: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.arm == reference && s.senders == senders)
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
