//! The report: markdown and SVG plots, the run and the machine.
#[allow(clippy::wildcard_imports)]
use crate::*;

/// Where and how a run measured: the same for the host and `--peers` runs.
#[derive(Serialize, serde::Deserialize, Clone)]
pub(crate) struct RunInfo {
    pub(crate) machine: String,
    pub(crate) kernel: String,
    pub(crate) cpus: usize,
    pub(crate) quick: bool,
    pub(crate) rounds: usize,
    pub(crate) seconds_per_arm: f64,
    /// /proc/loadavg when the run started: a loaded machine's ratios are
    /// noisier, and the report says so.
    #[serde(default)]
    pub(crate) load_at_start: String,
}

impl RunInfo {
    pub(crate) fn new(o: &Opts, cpus: usize) -> Self {
        RunInfo {
            machine: machine(),
            kernel: kernel_release(),
            cpus,
            quick: o.quick,
            rounds: o.rounds,
            seconds_per_arm: arm_duration(o).as_secs_f64(),
            load_at_start: load_average(),
        }
    }
}

/// The 1, 5 and 15 minute load averages (/proc/loadavg).
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// How long each arm sends in each round.
pub(crate) fn arm_duration(o: &Opts) -> Duration {
    Duration::from_millis(if o.quick { 300 } else { 1500 })
}

#[derive(Serialize)]
pub(crate) struct Report {
    #[serde(flatten)]
    pub(crate) run: RunInfo,
    pub(crate) micro: Vec<Micro>,
    pub(crate) arms: Vec<ArmSummary>,
    /// impair's arms as ratios to the same round's floor at the same hook.
    pub(crate) vs_floor: Vec<ArmSummary>,
    /// iperf3 over default offloads: bytes/s and CPU ns per byte (tcp.rs).
    pub(crate) tcp: Vec<ArmSummary>,
    pub(crate) scaling: Vec<ArmSummary>,
    pub(crate) not_run: Vec<(String, String)>,
    /// `--peers` runs from kernels that have netem, fq, tbf and htb.
    pub(crate) peers: Vec<PeersReport>,
}

pub(crate) fn bar_svg(
    title: &str,
    rows: &[(String, f64, (f64, f64))],
    target: Option<f64>,
) -> String {
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

pub(crate) fn rules_svg(points: &[(usize, f64)]) -> String {
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

pub(crate) fn markdown(r: &Report) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# Benchmarks\n");
    let _ = writeln!(m, "Generated by `cargo xtask bench` (method: ../shared/reference/measuring.md as summarised below). Machine: {}; kernel {}; {} CPUs; {} rounds of {:.1} s per arm{}.\n", r.run.machine, r.run.kernel, r.run.cpus, r.run.rounds, r.run.seconds_per_arm, if r.run.quick { " (--quick)" } else { "" });
    let _ = writeln!(m, "Load average when the run started: {} (with {} CPUs; other work on the machine widens the intervals and biases ratios between arms that ran at different moments).\n", r.run.load_at_start, r.run.cpus);
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
    floor_and_tcp(&mut m, r);
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
    let matrix: Vec<&Micro> = r
        .micro
        .iter()
        .filter(|x| x.case.starts_with("matrix, "))
        .collect();
    if let (Some(a), Some(b)) = (matrix.first(), matrix.last()) {
        let growth = b.ns_per_packet / a.ns_per_packet - 1.0;
        let _ = writeln!(m, "- latency-matrix lookup cost grows less than 10% from 1 to 100,000 prefixes ({}: {:.1} ns, {}: {:.1} ns): {:+.1}%: {}", a.case, a.ns_per_packet, b.case, b.ns_per_packet, growth * 100.0, verdict(growth < 0.10));
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
    line_rate_targets(&mut m, r);
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
pub(crate) fn peers_svg_name(p: &PeersReport) -> String {
    let series: Vec<&str> = p.run.kernel.split('.').take(2).collect();
    format!("peers-{}.svg", series.join("."))
}

pub(crate) fn peers_svg(p: &PeersReport) -> String {
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

pub(crate) fn peers_markdown(p: &PeersReport) -> String {
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
