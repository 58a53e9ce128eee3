//! netem, tbf and htb beside impair inside qemu (`--peers`), and the rounds loop.
#[allow(clippy::wildcard_imports)]
use crate::*;

/// Interleaved rounds: every round runs each (arm, senders) once, in a
/// fresh random order, as a sample numbered `first_round + round`.
pub(crate) fn run_rounds(
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
pub(crate) fn kernel_has_qdisc(lab: &Lab, q: &[&str]) -> bool {
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

pub(crate) fn machine() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_owned()
}

pub(crate) fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Marks the one line of JSON a `--peers` run prints for the host to render.
pub(crate) const PEERS_MARKER: &str = "IMPAIR-BENCH-PEERS ";

/// What `--peers` measured on one kernel.
#[derive(Serialize, serde::Deserialize, Clone)]
pub(crate) struct PeersReport {
    #[serde(flatten)]
    pub(crate) run: RunInfo,
    pub(crate) arms: Vec<PeerArm>,
    /// iperf3 through a lab with default offloads: the baseline, impair
    /// `--proto tcp` 1% loss and netem 1% loss (issue 13's netem TCP arm).
    /// Empty in reports from before it existed.
    #[serde(default)]
    pub(crate) tcp: Vec<PeerArm>,
    pub(crate) not_run: Vec<(String, String)>,
}

/// One arm of a peers run (an [`ArmSummary`] with an owned name, so it
/// deserializes on the host).
#[derive(Serialize, serde::Deserialize, Clone)]
pub(crate) struct PeerArm {
    pub(crate) name: String,
    pub(crate) ratio_median: f64,
    pub(crate) ratio_ci95: (f64, f64),
    pub(crate) sent_pps_median: f64,
    pub(crate) delivered_pps_median: f64,
    pub(crate) cpu_ns_per_packet_median: f64,
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
pub(crate) fn arms_table(m: &mut String, arms: impl Iterator<Item = PeerArm>) {
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
pub(crate) fn peers(o: &Opts, cpus: usize) -> Result<()> {
    let dur = arm_duration(o);
    let lab = Lab::create_with("bench", LabOptions { offloads: false })?;
    let mut arms = vec![Arm::Baseline, Arm::ImpairLoss1];
    let mut not_run = Vec::new();
    let ifb_path = impair::engine::ifb::redirects_to_ifb(&impair::engine::ifb::kernel_release());
    if kernel_has_qdisc(&lab, &["netem", "loss", "1%"]) {
        arms.push(Arm::NetemLoss1);
        // Received traffic: impair through the ifb it owns beside netem on
        // an ifb fed by mirred (issue 12), each against the same baseline.
        if ifb_path {
            arms.extend([Arm::ImpairIngressIfb, Arm::NetemIngressIfb]);
        } else {
            not_run.push((
                "ingress arms through an ifb (impair, netem)".into(),
                "this kernel cannot bpf_redirect to an ifb (Linux 6.4+)".into(),
            ));
        }
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
    let tcp = peer_tcp(o, &arms, &mut not_run, &mut rng)?;
    let report = PeersReport {
        run: RunInfo::new(o, cpus),
        arms: summarize(&samples, &arms, 1, &mut rng)
            .iter()
            .map(PeerArm::from)
            .collect(),
        tcp,
        not_run,
    };
    let json = serde_json::to_string(&report)?;
    std::fs::write(o.out.join("peers.json"), &json)?;
    println!("{}", peers_markdown(&report));
    println!("{PEERS_MARKER}{json}");
    Ok(())
}

/// TCP (iperf3, default offloads) beside netem: the baseline, impair
/// `--proto tcp` at 1% loss and netem 1% loss on the router's egress, in
/// interleaved rounds like the host's TCP arms (tcp.rs). netem decides per
/// skb, so with GRO on the router it drops whole super-packets; impair
/// decides per wire packet (engine/offload.rs), as on the host.
fn peer_tcp(
    o: &Opts,
    udp_arms: &[Arm],
    not_run: &mut Vec<(String, String)>,
    rng: &mut rand::rngs::StdRng,
) -> Result<Vec<PeerArm>> {
    if !udp_arms.contains(&Arm::NetemLoss1) {
        return Ok(Vec::new()); // its absence is reported with the UDP arms
    }
    let Some(lab) = tcp_lab(
        not_run,
        "TCP arms (iperf3) beside netem",
        "iperf3 is not in this image",
    )?
    else {
        return Ok(Vec::new());
    };
    let arms = [Arm::Baseline, Arm::TcpImpairLoss1, Arm::NetemLoss1];
    // Under emulation a connection needs a few seconds to leave slow start
    // at these rates; --quick keeps CI's VM run short.
    let secs = if o.quick { 2 } else { 4 };
    let samples = run_tcp_rounds(&lab, &arms, o.rounds, secs, rng)?;
    drop(lab);
    Ok(summarize(&samples, &arms, 1, rng)
        .iter()
        .map(PeerArm::from)
        .collect())
}

/// Reads `--peers-from` files: a peers JSON, or a console log holding
/// `IMPAIR-BENCH-PEERS` lines (the last one counts).
pub(crate) fn load_peers(files: &[PathBuf]) -> Result<Vec<PeersReport>> {
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
