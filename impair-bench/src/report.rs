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
    /// `git rev-parse --short HEAD` of the working directory, with
    /// "+ uncommitted changes" when tracked files differ from it.
    #[serde(default)]
    pub(crate) commit: String,
    /// When the run started (`YYYY-MM-DD HH:MM UTC`).
    #[serde(default)]
    pub(crate) date_utc: String,
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
            commit: git_commit(),
            date_utc: utc_now(),
        }
    }
}

/// The commit the run measured: the short hash, and whether tracked files
/// differ from it (the report itself, rewritten by the run, is written after
/// this is read). "unknown" outside a git checkout (the VM guest).
pub(crate) fn git_commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(hash) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown (not a git checkout)".to_owned();
    };
    match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(s) if s.is_empty() => format!("{hash} (clean tree)"),
        Some(_) => format!("{hash} + uncommitted changes"),
        None => format!("{hash} (tree state unknown)"),
    }
}

/// Now, as `YYYY-MM-DD HH:MM UTC`.
pub(crate) fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc_date(secs)
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM UTC` (the proleptic
/// Gregorian calendar; H. Hinnant's days-to-civil algorithm).
pub(crate) fn utc_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (hour, minute) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
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
    /// What a clock read costs on this machine (every timed path pays one).
    pub(crate) clock: ClockCost,
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

/// One curve of the rules plot: its legend, points (rules, ns), colour,
/// and whether it is fixed data (dashed).
pub(crate) struct RulesCurve<'a> {
    pub(crate) name: String,
    pub(crate) points: &'a [(usize, f64)],
    pub(crate) color: &'static str,
    pub(crate) dashed: bool,
}

/// ns per packet against the rules walked (log₂ x axis, 1 to 64), one
/// curve per run: this run's, and the fixed earlier ones.
pub(crate) fn rules_svg(curves: &[RulesCurve<'_>]) -> String {
    let (w, h, left, top, pw, ph) = (760.0, 360.0, 60.0, 40.0, 500.0, 260.0);
    let ymax = curves
        .iter()
        .flat_map(|c| c.points.iter())
        .map(|p| p.1)
        .fold(1.0f64, f64::max)
        * 1.25;
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
    for n in [1usize, 2, 4, 8, 16, 32, 64] {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{n}</text>"#,
            px(n),
            top + ph + 18.0
        );
    }
    for (i, c) in curves.iter().enumerate() {
        let dash = if c.dashed {
            r#" stroke-dasharray="6 3""#
        } else {
            ""
        };
        let pts: Vec<String> = c
            .points
            .iter()
            .map(|(n, v)| format!("{:.1},{:.1}", px(*n), py(*v)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
            pts.join(" "),
            c.color
        );
        for (n, v) in c.points {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"/>"#,
                px(*n),
                py(*v),
                c.color
            );
        }
        let ly = top + 10.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            left + pw + 8.0,
            left + pw + 30.0,
            c.color,
            left + pw + 34.0,
            ly + 4.0,
            impair_tools::svg::escape(&c.name)
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

pub(crate) fn markdown(r: &Report, b: &Baseline) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# Benchmarks\n");
    let _ = writeln!(m, "Generated by `cargo xtask bench` (`impair-bench`, impair-bench/src/report.rs; method: ../shared/reference/measuring.md as summarised below); every number in this file comes from the run below unless it is labelled as fixed data.\n");
    let _ = writeln!(m, "| run | |\n|---|---|");
    let _ = writeln!(m, "| machine | {} ({} CPUs) |", r.run.machine, r.run.cpus);
    let _ = writeln!(m, "| kernel | {} |", r.run.kernel);
    let _ = writeln!(m, "| commit | {} |", r.run.commit);
    let _ = writeln!(m, "| date | {} |", r.run.date_utc);
    let _ = writeln!(
        m,
        "| load average at start (1, 5, 15 min) | {} |",
        r.run.load_at_start
    );
    let _ = writeln!(
        m,
        "| rounds | {} of {:.1} s per arm{} |",
        r.run.rounds,
        r.run.seconds_per_arm,
        if r.run.quick {
            " (--quick: fewer rounds, shorter arms, 20,000 test runs per call)"
        } else {
            ""
        }
    );
    let _ = writeln!(m, "| clock read | `lfence; rdtsc` {}, `clock_gettime(CLOCK_MONOTONIC)` {:.1} ns (clocksource {}) |\n", r.clock.rdtsc_ns.map_or("n/a".to_owned(), |v| format!("{v:.1} ns")), r.clock.clock_gettime_ns, r.clock.clocksource);
    let _ = writeln!(m, "Other work on the machine (the load average above, with {} CPUs) widens the intervals and biases ratios between arms that ran at different moments.\n", r.run.cpus);
    let _ = writeln!(
        m,
        "## Per-packet cost of impair's programs (BPF_PROG_TEST_RUN)\n"
    );
    let _ = writeln!(m, "The kernel's own average run time over `repeat` runs of one 42-byte UDP frame (median of five calls), on CPU 0. It includes the program's map lookups and helpers, not the stack around it. `impair_egress` unless the path names tc ingress or XDP. The floor rows test-run an empty program (two instructions, `return TC_ACT_OK` or `XDP_PASS`) the same way: the harness's loop and the packet's context, which every path pays; \"above the floor\" is impair's own share.\n");
    let _ = writeln!(
        m,
        "| path | rules | ns/packet | above the floor |\n|---|---|---|---|"
    );
    for x in r.micro.iter().filter(|x| x.case != "rules") {
        let above = match floor_of(r, &x.case) {
            Some(f) if !x.case.starts_with("floor:") => format!("{:.1}", x.ns_per_packet - f),
            _ => "—".to_owned(),
        };
        let _ = writeln!(
            m,
            "| {} | {} | {:.1} | {above} |",
            x.case, x.rules, x.ns_per_packet
        );
    }
    let rules: Vec<&Micro> = r.micro.iter().filter(|x| x.case == "rules").collect();
    let _ = writeln!(m, "\nCost against the number of rules walked (the packet matches the last rule; 1% loss):\n\n| rules | ns/packet |\n|---|---|");
    for x in &rules {
        let _ = writeln!(m, "| {} | {:.1} |", x.rules, x.ns_per_packet);
    }
    let _ = writeln!(
        m,
        "\n![ns per packet vs rules, before and after issue 18](bench/rules.svg)\n"
    );
    before_after_markdown(&mut m, r, b);
    let _ = writeln!(m, "## Throughput over the namespace lab\n");
    let _ = writeln!(m, "One sender thread sends 18-byte UDP datagrams client → router → server as fast as it can; the router's forwarding and impair's program run in the sender's softirq context, so packets/s is the cost of the whole path. Arms run in random order in every round; each arm's packets/s is divided by the same round's baseline. Median ratio with a bootstrap 95% interval over rounds; CPU time per packet from /proc/stat (all CPUs busy time / packets sent).\n");
    arms_table(&mut m, r.arms.iter().map(PeerArm::from));
    let _ = writeln!(m, "\n![ratio per arm](bench/arms.svg)\n");
    floor_and_tcp(&mut m, r);
    let _ = writeln!(m, "\n## Scaling: one sender per CPU\n\n| arm | senders | ratio to baseline (95% CI) | sent pkt/s |\n|---|---|---|---|");
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
    targets_markdown(&mut m, r);
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
    if !p.tcp.is_empty() {
        let _ = writeln!(m, "\n### TCP beside netem (iperf3, default offloads)\n\nOne unpaced iperf3 connection client → router → server through a lab whose veths keep the kernel's default TSO/GSO/GRO, arms interleaved per round as on the host; bytes/s received as a ratio to the same round's baseline, CPU ns per byte from /proc/stat. impair attaches `--proto tcp --loss 1%` at the router's egress and decides per wire packet (it sets `gso_max_segs` 1 there and turns GRO off on the router's other devices while attached); netem (`loss 1%` as the router's root qdisc) decides per skb, so with GRO on it drops whole super-packets, which TCP repairs as one loss event. Under TCG the absolute rates are the emulator's.\n");
        let _ = writeln!(m, "| arm | ratio to baseline (95% CI) | Mbit/s received | CPU ns/byte |\n|---|---|---|---|");
        for a in &p.tcp {
            let _ = writeln!(
                m,
                "| {} | {:.3} ({:.3}–{:.3}) | {:.1} | {:.3} |",
                a.name,
                a.ratio_median,
                a.ratio_ci95.0,
                a.ratio_ci95.1,
                a.delivered_pps_median * 8.0 / 1e6,
                a.cpu_ns_per_packet_median
            );
        }
    }
    for (what, why) in &p.not_run {
        let _ = writeln!(m, "\nNot run on this kernel: {what} ({why}).");
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_follow_the_calendar() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(951_868_800), "2000-03-01 00:00 UTC");
        assert_eq!(utc_date(1_709_210_040), "2024-02-29 12:34 UTC");
        assert_eq!(utc_date(1_796_219_699), "2026-12-02 13:54 UTC");
    }
}
