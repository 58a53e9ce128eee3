//! `impair-bench`: what `cargo xtask bench` runs (root, release build).
//!
//! 1. Per-program microbenchmarks with BPF_PROG_TEST_RUN (`repeat`): the
//!    kernel's own average ns per run of `impair_egress` on one crafted frame,
//!    for each path (unmatched, matched pass, loss, corrupt, delay, rate, all
//!    of them), against the number of rules (1 to 64, matching the last), and
//!    with many flows in the in-order table; the empty tc and XDP programs
//!    test-run the same way (the floor each path's cost sits on), and the
//!    unmatched, matched, 1% loss and blackhole paths at tc ingress and XDP.
//! 2. Throughput arms over the 3-namespace lab, interleaved in random order
//!    over R rounds: baseline, impair attached with no matching rule, matched
//!    with zero impairment, 1% loss, and iptables `-m statistic` 1% loss (what
//!    comcast and pumba use). Each arm's packets/s is a ratio to the same
//!    round's baseline: median and bootstrap 95% interval, plus CPU time per
//!    packet from /proc/stat. The floor (floor.rs: an empty tc program at
//!    the same tcx hook) runs beside them, and impair's arms are also ratios
//!    to it; so does the ingress path (impair at tc ingress against a floor
//!    there).
//!    TCP arms (tcp.rs): iperf3 through a lab with default offloads, for
//!    the baseline, the floor, impair `--proto tcp` at 0% and 1% loss and
//!    iptables statistic 1%: bytes/s as ratios to the round's baseline and
//!    CPU ns per byte.
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
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the benchmark prints its report"
)]
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
    engine::{AttachOptions, Direction, Engine, HookOptions, Loaded},
    model::units::parse_cidr,
    model::{compile_all, CorruptMode, DelaySpec, MatchSpec, Proto, RateSpec, RuleSpec},
    netns,
};
use impair_tests::{packet::udp4, pin_to_cpu0, CLIENT_V4, SERVER_V4};
use impair_tools::{
    lab::{self, Lab, LabOptions},
    svg::Svg,
};
use rand::{seq::SliceRandom as _, Rng as _, SeedableRng as _};
use serde::Serialize;

pub(crate) struct Opts {
    pub(crate) quick: bool,
    pub(crate) rounds: usize,
    pub(crate) out: PathBuf,
    pub(crate) docs: Option<PathBuf>,
    /// Run only the peer arms (netem, tbf, htb) and print their JSON line.
    pub(crate) peers: bool,
    /// `IMPAIR-BENCH-PEERS` results from VM runs, rendered into the report.
    pub(crate) peers_from: Vec<PathBuf>,
    /// Run only the BPF_PROG_TEST_RUN microbenchmarks (printed to stderr).
    pub(crate) micro_only: bool,
}

/// `impair-bench --help`.
const USAGE: &str = "\
impair-bench: impair's benchmarks (root; `cargo xtask bench` builds and runs it)

usage: impair-bench [--quick] [--rounds N] [--out DIR] [--docs FILE]
                    [--peers] [--peers-from FILE]... [--micro-only]

  --quick            3 rounds of 0.3 s per arm, 20,000 test runs per call
  --rounds N         rounds of every arm (N >= 1; default 10, 3 with --quick)
  --out DIR          bench.json, benchmarks.md and the SVGs (default target/bench)
  --docs FILE        also write the report to FILE and its SVGs to FILE's
                     directory/bench/ (`cargo xtask bench`: docs/benchmarks.md)
  --peers            only netem, tbf and htb against impair (the VM tier); prints
                     one IMPAIR-BENCH-PEERS line
  --peers-from FILE  render a --peers run (its JSON or a console log) in the report
  --micro-only       only the BPF_PROG_TEST_RUN per-path costs, on stderr
  --help             this text";

/// Usage errors: one line naming the value and what is allowed.
pub(crate) fn parse_args() -> std::result::Result<Option<Opts>, String> {
    let mut o = Opts {
        quick: false,
        rounds: 10,
        out: PathBuf::from("target/bench"),
        docs: None,
        peers: false,
        peers_from: Vec::new(),
        micro_only: false,
    };
    let mut rounds = None;
    let mut it = std::env::args().skip(1);
    let value = |it: &mut std::iter::Skip<std::env::Args>, flag: &str, what: &str| {
        it.next()
            .ok_or_else(|| format!("{flag} needs a value: {flag} {what}"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--help" | "-h" => return Ok(None),
            "--quick" => o.quick = true,
            "--rounds" => {
                let v = value(&mut it, "--rounds", "N")?;
                rounds = Some(v.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    format!("--rounds {v}: the number of rounds is a whole number, at least 1")
                })?);
            }
            "--out" => o.out = value(&mut it, "--out", "DIR")?.into(),
            "--docs" => o.docs = Some(value(&mut it, "--docs", "FILE")?.into()),
            "--peers" => o.peers = true,
            "--micro-only" => o.micro_only = true,
            "--peers-from" => o.peers_from.push(value(&mut it, "--peers-from", "FILE")?.into()),
            other => {
                return Err(format!(
                    "unknown argument {other}: allowed are --quick, --rounds N, --out DIR, --docs FILE, --peers, --peers-from FILE, --micro-only, --help"
                ))
            }
        }
    }
    o.rounds = rounds.unwrap_or(if o.quick { 3 } else { 10 });
    Ok(Some(o))
}

// ---------------------------------------------------------------- micro

mod arms;
mod baseline;
mod floor;
mod micro;
mod peers;
mod report;
mod targets;
mod tcp;

#[allow(unused_imports)]
use {arms::*, baseline::*, micro::*, peers::*, report::*, targets::*, tcp::*};

fn main() -> Result<()> {
    let o = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return Ok(());
        }
        Err(e) => {
            eprintln!("impair-bench: {e}");
            std::process::exit(2);
        }
    };
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
    let (load_at_start, commit, date_utc) = (load_average(), git_commit(), utc_now());
    let peer_runs = load_peers(&o.peers_from)?;
    // BPF_PROG_TEST_RUN pins its thread to CPU 0; the lab arms must not be.
    let quick = o.quick;
    let (micro, clock) = std::thread::spawn(move || -> Result<_> {
        let m = micro(quick)?;
        Ok((m, clock_cost(quick)))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the microbenchmark thread panicked"))??;
    if o.micro_only {
        return Ok(());
    }
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
    // The floors: an empty tc program at impair's hooks (tcx, Linux 6.6+).
    let floor = match setup(&lab, Arm::Floor) {
        Ok(s) => {
            teardown(&lab, s)?;
            arms.insert(1, Arm::Floor);
            arms.extend([Arm::FloorIngress, Arm::ImpairIngressLoss1]);
            match setup(&lab, Arm::ImpairIngressIfb) {
                Ok(s) => {
                    teardown(&lab, s)?;
                    arms.push(Arm::ImpairIngressIfb);
                }
                Err(e) => not_run.push((Arm::ImpairIngressIfb.name().to_owned(), format!("{e:#}"))),
            }
            true
        }
        Err(e) => {
            not_run.push((
                "the floor (an empty tc program at the same hook) and the ingress arms".to_owned(),
                format!("{e:#}"),
            ));
            false
        }
    };
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
    let tcp_samples = tcp_arms(&o, floor, &mut not_run, &mut rng)?;
    let summary = summarize(&samples, &arms, 1, &mut rng);
    let mut vs_floor = Vec::new();
    if floor {
        vs_floor = summarize_vs(
            &samples,
            &[Arm::ImpairNoMatch, Arm::ImpairMatchZero, Arm::ImpairLoss1],
            1,
            Arm::Floor,
            &mut rng,
        );
        vs_floor.extend(summarize_vs(
            &samples,
            &[Arm::ImpairIngressLoss1, Arm::ImpairIngressIfb]
                .into_iter()
                .filter(|a| arms.contains(a))
                .collect::<Vec<_>>(),
            1,
            Arm::FloorIngress,
            &mut rng,
        ));
    }
    let tcp_arms: Vec<Arm> = TCP_ARMS
        .iter()
        .copied()
        .filter(|a| tcp_samples.iter().any(|s| s.arm == *a))
        .collect();
    let tcp = summarize(&tcp_samples, &tcp_arms, 1, &mut rng);
    let mut scaling = Vec::new();
    for n in [1, senders_max] {
        scaling.extend(summarize(&samples, &scale_arms, n, &mut rng));
        if senders_max == 1 {
            break;
        }
    }
    let report = Report {
        run: RunInfo {
            load_at_start,
            commit,
            date_utc,
            ..RunInfo::new(&o, cpus)
        },
        micro,
        clock,
        arms: summary,
        vs_floor,
        tcp,
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
    let base = baseline()?;
    let rsvg = rules_svg(&[
        RulesCurve {
            name: "this run".into(),
            points: &pts,
            color: "#1f6feb",
            dashed: false,
        },
        RulesCurve {
            name: format!("before ({})", base.rules.before.source),
            points: &base.rules.before.points,
            color: "#8c8c8c",
            dashed: true,
        },
        RulesCurve {
            name: format!("{} as filed", base.rules.as_filed.source),
            points: &base.rules.as_filed.points,
            color: "#c0c0c0",
            dashed: true,
        },
    ]);
    let ba_svg = before_after_svg(&report, &base);
    std::fs::write(o.out.join("arms.svg"), &arms_svg)?;
    std::fs::write(o.out.join("rules.svg"), &rsvg)?;
    std::fs::write(o.out.join("before-after.svg"), &ba_svg)?;
    for p in &report.peers {
        std::fs::write(o.out.join(peers_svg_name(p)), peers_svg(p))?;
    }
    let md = markdown(&report, &base);
    std::fs::write(o.out.join("benchmarks.md"), &md)?;
    if let Some(docs) = &o.docs {
        let dir = docs
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("bench");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("arms.svg"), &arms_svg)?;
        std::fs::write(dir.join("rules.svg"), &rsvg)?;
        std::fs::write(dir.join("before-after.svg"), &ba_svg)?;
        for p in &report.peers {
            std::fs::write(dir.join(peers_svg_name(p)), peers_svg(p))?;
        }
        std::fs::write(docs, &md)?;
    }
    println!("{md}");
    Ok(())
}

/// The TCP arms' order of report (those that ran).
const TCP_ARMS: [Arm; 7] = [
    Arm::Baseline,
    Arm::Floor,
    Arm::TcpImpairLoss0Whole,
    Arm::TcpImpairLoss0,
    Arm::TcpImpairLoss1Whole,
    Arm::TcpImpairLoss1,
    Arm::IptablesLoss1,
];

/// iperf3 through a lab with the kernel's default offloads (tcp.rs).
fn tcp_arms(
    o: &Opts,
    floor: bool,
    not_run: &mut Vec<(String, String)>,
    rng: &mut rand::rngs::StdRng,
) -> Result<Vec<Sample>> {
    let Some(lab) = tcp_lab(
        not_run,
        "TCP arms (iperf3)",
        "iperf3 is not installed: `cargo xtask setup` installs it",
    )?
    else {
        return Ok(Vec::new());
    };
    let mut arms = vec![
        Arm::Baseline,
        Arm::TcpImpairLoss0Whole,
        Arm::TcpImpairLoss0,
        Arm::TcpImpairLoss1Whole,
        Arm::TcpImpairLoss1,
    ];
    if floor {
        arms.push(Arm::Floor);
    }
    if lab.exec(&lab.router, &iptables("-A")).is_ok() {
        lab.exec(&lab.router, &iptables("-D"))?;
        arms.push(Arm::IptablesLoss1);
    }
    // --quick keeps CI's added time near 20 s: 1 s per arm.
    let secs = if o.quick { 1 } else { 3 };
    run_tcp_rounds(&lab, &arms, o.rounds, secs, rng)
}
