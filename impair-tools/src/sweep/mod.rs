//! `impair sweep`: find where a system breaks. Impairment levels are applied
//! one after another with atomic rule-set updates (one attach, no detach
//! between levels); at each level CMD runs N times (or the built-in probe
//! measures the link), and exit status, wall time and the engine's counters
//! are recorded. The result names the last passing and the first failing
//! level and the level where CMD starts to slow down, as text, JSON and an
//! SVG plot.
//!
//! Axes are written like the attach flags with a range and a step:
//! `--loss 0%..30% --step 2%`, `--delay 0ms..500ms --step 50ms`,
//! `--rate 10mbit..1mbit --step 1mbit`. Two ranged axes make a grid; a flag
//! without a range (`--delay 50ms`) holds at every level.
use std::{
    fmt::Write as _,
    io::{IsTerminal as _, Write as _},
    net::{IpAddr, SocketAddr, UdpSocket},
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde::Serialize;

use impair::{
    engine::{AttachOptions, Direction, Engine, HookOptions},
    input::UsageError,
    model::{
        compile_all, fmt_duration_ns, fmt_percent, fmt_rate_bps, units, Impairments, MatchLists,
        RuleSpec,
    },
    observe::snapshot::{RuleStats, Snapshot},
    statistics::{median, wilson_interval, Z95},
};

use crate::{
    probe::{self, ProbeConfig, ProbeReport},
    usage,
};

/// z for a two-sided 95% interval.
/// What an axis varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Knob {
    Loss,
    Corrupt,
    Duplicate,
    Reorder,
    Delay,
    Jitter,
    Rate,
}

impl Knob {
    pub fn from_flag(flag: &str) -> Option<Self> {
        Some(match flag {
            "--loss" => Knob::Loss,
            "--corrupt" => Knob::Corrupt,
            "--duplicate" => Knob::Duplicate,
            "--reorder" => Knob::Reorder,
            "--delay" => Knob::Delay,
            "--jitter" => Knob::Jitter,
            "--rate" => Knob::Rate,
            _ => return None,
        })
    }

    pub fn flag(self) -> &'static str {
        match self {
            Knob::Loss => "--loss",
            Knob::Corrupt => "--corrupt",
            Knob::Duplicate => "--duplicate",
            Knob::Reorder => "--reorder",
            Knob::Delay => "--delay",
            Knob::Jitter => "--jitter",
            Knob::Rate => "--rate",
        }
    }

    /// Parses one value: a fraction for percentages, ns, or bit/s.
    pub fn parse(self, s: &str) -> Result<f64, UsageError> {
        let what = &self.flag()[2..];
        match self {
            Knob::Loss | Knob::Corrupt | Knob::Duplicate | Knob::Reorder => {
                units::parse_percent(what, s).map_err(|e| UsageError(e.0))
            }
            Knob::Delay | Knob::Jitter => units::parse_duration_ns(what, s)
                .map(|v| v as f64)
                .map_err(|e| UsageError(e.0)),
            Knob::Rate => units::parse_rate_bps(s)
                .map(|v| v as f64)
                .map_err(|e| UsageError(e.0)),
        }
    }

    pub fn format(self, v: f64) -> String {
        match self {
            Knob::Loss | Knob::Corrupt | Knob::Duplicate | Knob::Reorder => fmt_percent(v),
            Knob::Delay | Knob::Jitter => fmt_duration_ns(v.round() as u64),
            Knob::Rate => fmt_rate_bps(v.round() as u64),
        }
    }

    fn set(self, a: &mut Impairments, v: f64) {
        match self {
            Knob::Loss => a.loss = Some(v),
            Knob::Corrupt => a.corrupt = Some(v),
            Knob::Duplicate => a.duplicate = Some(v),
            Knob::Reorder => a.reorder = Some(v),
            Knob::Delay => a.delay_ns = Some(v.round() as u64),
            Knob::Jitter => a.jitter_ns = Some(v.round() as u64),
            Knob::Rate => a.rate_bps = Some(v.round().max(1.0) as u64),
        }
    }
}

/// One swept (or held) impairment.
#[derive(Debug, Clone, Serialize)]
pub struct Axis {
    pub knob: Knob,
    /// The levels, in the order they are applied.
    pub values: Vec<f64>,
}

/// Everything `impair sweep` was asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub axes: Vec<Axis>,
    pub matcher: MatchLists,
    pub direction: Direction,
    pub hold: Duration,
    pub repeat: u32,
    pub stop_after: u32,
    pub timeout: Duration,
    pub min_success: f64,
    pub out: PathBuf,
    pub seed: Option<u64>,
    pub show_output: bool,
    pub target: Target,
}

#[derive(Debug, Clone)]
pub enum Target {
    Command(Vec<String>),
    /// The built-in probe: sender in `src_netns`, receiver bound to `dst` in
    /// `dst_netns` (both default to the current namespace).
    Probe {
        dst: IpAddr,
        src_netns: Option<String>,
        dst_netns: Option<String>,
        rate_pps: u64,
    },
}

/// One CMD run at one level.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub success: bool,
    /// CMD's exit code (`None` when killed by a signal or the timeout).
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub duration_s: f64,
}

/// The engine's counters for one level (each level's rule set starts at 0).
#[derive(Debug, Clone, Serialize)]
pub struct EngineView {
    pub packets: u64,
    pub dropped_loss: u64,
    pub dropped_queue: u64,
    pub corrupted: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub delayed: u64,
    pub measured_loss: Option<f64>,
    pub measured_loss_ci95: Option<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LevelResult {
    pub index: usize,
    /// Each axis's value at this level (fraction, ns or bit/s) and as text.
    pub values: Vec<f64>,
    pub label: String,
    pub runs: Vec<RunResult>,
    pub success_rate: f64,
    pub passed: bool,
    pub median_duration_s: Option<f64>,
    pub engine: EngineView,
    /// With --probe: what the receiver saw.
    pub probe: Option<ProbeReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub interface: String,
    pub axes: Vec<Axis>,
    pub repeat: u32,
    pub min_success: f64,
    pub levels: Vec<LevelResult>,
    /// The last level that passed before the first failing one.
    pub last_passing: Option<String>,
    pub first_failing: Option<String>,
    /// The first level whose median duration is 1.5× the first level's and
    /// at least 50 ms longer (or that fails): where it starts to strain.
    pub strain: Option<String>,
    pub stopped_early: bool,
    pub interrupted: bool,
}

/// The grid, first axis outermost; each entry one value per axis.
pub fn grid(axes: &[Axis]) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = vec![Vec::new()];
    for a in axes {
        let mut next = Vec::with_capacity(out.len() * a.values.len());
        for prefix in &out {
            for v in &a.values {
                let mut p = prefix.clone();
                p.push(*v);
                next.push(p);
            }
        }
        out = next;
    }
    out
}

fn label(axes: &[Axis], values: &[f64]) -> String {
    axes.iter()
        .zip(values)
        .map(|(a, v)| format!("{} {}", &a.knob.flag()[2..], a.knob.format(*v)))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Plan {
    /// The rules at one level (one value per axis).
    pub fn rules(&self, values: &[f64]) -> Result<Vec<RuleSpec>, UsageError> {
        let mut a = Impairments::default();
        for (axis, v) in self.axes.iter().zip(values) {
            axis.knob.set(&mut a, *v);
        }
        self.matcher
            .rules(&a)
            .map_err(|e| UsageError(e.render(&|f| format!("--{}", f.key()))))
    }
}

/// Runs CMD once in its own process group; kills the group on timeout or stop.
fn run_once(cmd: &[String], timeout: Duration, show: bool, stop: &AtomicBool) -> Result<RunResult> {
    let (prog, args) = cmd.split_first().context("empty command")?;
    let mut c = Command::new(prog);
    c.args(args).stdin(Stdio::null()).process_group(0);
    if !show {
        c.stdout(Stdio::null()).stderr(Stdio::null());
    }
    let start = Instant::now();
    let mut child = c
        .spawn()
        .map_err(|e| anyhow::anyhow!(UsageError(format!("cannot run '{prog}': {e}"))))?;
    let pgid = child.id() as i32;
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if start.elapsed() > timeout || stop.load(Ordering::Relaxed) {
            timed_out = !stop.load(Ordering::Relaxed);
            // SAFETY: kill(2) on the process group we created for CMD.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            break child.wait()?;
        }
        thread::sleep(Duration::from_millis(5));
    };
    // Whatever CMD left in its group goes too.
    // SAFETY: as above; ESRCH when the group is gone is fine.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    Ok(RunResult {
        success: status.success() && !timed_out,
        exit_code: status.code(),
        timed_out,
        duration_s: start.elapsed().as_secs_f64(),
    })
}

fn probe_once(t: &Target, hold: Duration, linger: Duration) -> Result<ProbeReport> {
    let Target::Probe {
        dst,
        src_netns,
        dst_netns,
        rate_pps,
    } = t
    else {
        unreachable!("probe_once on a command target")
    };
    let dst = *dst;
    let bind_in = |ns: &Option<String>, addr: SocketAddr| -> Result<UdpSocket> {
        match ns {
            Some(n) => impair::netns::run_in(n, move || UdpSocket::bind(addr))?
                .with_context(|| format!("binding {addr} in {n}")),
            None => UdpSocket::bind(addr).with_context(|| format!("binding {addr}")),
        }
    };
    let rx = bind_in(dst_netns, SocketAddr::new(dst, 0))?;
    let any: IpAddr = if dst.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let tx = bind_in(src_netns, SocketAddr::new(any, 0))?;
    let to = rx.local_addr()?;
    let count = ((hold.as_secs_f64() * *rate_pps as f64) as u64).max(1);
    let cfg = ProbeConfig {
        count,
        rate_pps: *rate_pps,
        linger,
        ..Default::default()
    };
    probe::run_pair(tx, rx, to, &cfg)
}

fn engine_view(s: &Snapshot) -> EngineView {
    // Summed over the rules (one per combination of match flags).
    let g = |f: fn(&RuleStats) -> u64| s.rules.iter().map(f).sum::<u64>();
    let packets = g(|r| r.packets);
    let dropped = g(|r| r.dropped_loss);
    EngineView {
        packets,
        dropped_loss: dropped,
        dropped_queue: g(|r| r.dropped_queue),
        corrupted: g(|r| r.corrupted),
        duplicated: g(|r| r.duplicated),
        reordered: g(|r| r.reordered),
        delayed: g(|r| r.delayed),
        measured_loss: (packets > 0).then(|| dropped as f64 / packets as f64),
        measured_loss_ci95: (packets > 0).then(|| wilson_interval(dropped, packets, Z95)),
    }
}

/// The progress line for a finished level.
fn level_line(l: &LevelResult, plan: &Plan) -> String {
    let mut s = format!(
        "{:>4}  {:<28} {}  {}/{} ok",
        l.index + 1,
        l.label,
        if l.passed { "PASS" } else { "FAIL" },
        l.runs.iter().filter(|r| r.success).count(),
        l.runs.len()
    );
    if let Some(m) = l.median_duration_s {
        let _ = write!(s, "  median {m:.3}s");
    }
    if l.runs.iter().any(|r| r.timed_out) {
        let _ = write!(
            s,
            "  ({} timed out)",
            l.runs.iter().filter(|r| r.timed_out).count()
        );
    }
    if let Some(p) = &l.probe {
        let _ = write!(
            s,
            "  probe: sent {} lost {} ({})",
            p.sent,
            p.lost,
            fmt_percent(p.loss_fraction())
        );
        if let Some(d) = &p.delay {
            let _ = write!(s, " p50 {}", fmt_duration_ns(d.p50_ns));
        }
    }
    if let (Some(m), Some((lo, hi))) = (l.engine.measured_loss, l.engine.measured_loss_ci95) {
        if plan.axes.iter().any(|a| a.knob == Knob::Loss) {
            let _ = write!(
                s,
                "  engine loss {} (95% {}..{})",
                fmt_percent(m),
                fmt_percent(lo),
                fmt_percent(hi)
            );
        }
    }
    let _ = write!(s, "  pkts {}", l.engine.packets);
    s
}

/// Runs the sweep on `iface` (foreground; Ctrl-C stops it, detaches and
/// still writes the report of the levels done).
pub fn run(iface: &str, plan: &Plan, stop: &AtomicBool) -> Result<Report> {
    let points = grid(&plan.axes);
    let hooks = HookOptions {
        direction: plan.direction,
        ..Default::default()
    };
    for p in &points {
        let rules = plan.rules(p)?;
        hooks.check(&rules)?;
        compile_all(&rules).map_err(|e| UsageError(e.render(&|f| format!("--{}", f.key()))))?;
    }
    std::fs::create_dir_all(&plan.out).map_err(|e| {
        usage!(
            "cannot create the output directory {}: {e}",
            plan.out.display()
        )
    })?;
    let mut engine = Engine::attach_with(
        AttachOptions {
            iface: iface.to_owned(),
            rules: plan.rules(&points[0])?,
            seed: plan.seed,
            label: format!("sweep: {}", label(&plan.axes, &points[0])),
            ..Default::default()
        },
        hooks,
    )?;
    let tty = std::io::stdout().is_terminal();
    println!(
        "impair sweep on {iface} ({} levels, {} run{} each, pass at ≥ {} success); Ctrl-C stops",
        points.len(),
        plan.repeat,
        if plan.repeat == 1 { "" } else { "s" },
        fmt_percent(plan.min_success)
    );
    let mut results: Vec<LevelResult> = Vec::new();
    let mut consecutive_fail = 0u32;
    let mut stopped_early = false;
    for (i, values) in points.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let lab = label(&plan.axes, values);
        if i > 0 {
            engine.update(&plan.rules(values)?)?;
            engine.set_label(&format!("sweep: {lab}"))?;
        }
        let started = Instant::now();
        let mut runs = Vec::new();
        let mut probe_report = None;
        match &plan.target {
            Target::Command(cmd) => {
                for n in 0..plan.repeat {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if tty {
                        print!(
                            "\r\x1b[K{:>4}  {lab}: run {}/{} ...",
                            i + 1,
                            n + 1,
                            plan.repeat
                        );
                        let _ = std::io::stdout().flush();
                    }
                    runs.push(run_once(cmd, plan.timeout, plan.show_output, stop)?);
                }
                while started.elapsed() < plan.hold && !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(20));
                }
            }
            Target::Probe { .. } => {
                if tty {
                    print!(
                        "\r\x1b[K{:>4}  {lab}: probing for {} ...",
                        i + 1,
                        fmt_duration_ns(plan.hold.as_nanos() as u64)
                    );
                    let _ = std::io::stdout().flush();
                }
                // Wait for the most delayed packet before counting it lost.
                let max_delay_ns = plan
                    .axes
                    .iter()
                    .filter(|a| matches!(a.knob, Knob::Delay | Knob::Jitter))
                    .flat_map(|a| a.values.iter())
                    .fold(0.0f64, |m, v| m.max(*v));
                let linger =
                    Duration::from_millis(500) + Duration::from_nanos(2 * max_delay_ns as u64);
                let p = probe_once(&plan.target, plan.hold, linger)?;
                // The probe "passes" a level when the receiver's loss stays
                // within min-success: one run, its delivery ratio.
                let delivered = 1.0 - p.loss_fraction();
                runs.push(RunResult {
                    success: delivered >= plan.min_success,
                    exit_code: None,
                    timed_out: false,
                    duration_s: started.elapsed().as_secs_f64(),
                });
                probe_report = Some(p);
            }
        }
        if stop.load(Ordering::Relaxed)
            && runs.len() < plan.repeat as usize
            && probe_report.is_none()
        {
            break; // an interrupted level is not a result
        }
        let snap = Snapshot::read(&engine.maps(), iface)?;
        let ok = runs.iter().filter(|r| r.success).count();
        let success_rate = if runs.is_empty() {
            0.0
        } else {
            ok as f64 / runs.len() as f64
        };
        let passed = match &probe_report {
            Some(_) => ok == 1,
            None => success_rate + 1e-12 >= plan.min_success,
        };
        let mut durations: Vec<f64> = runs
            .iter()
            .filter(|r| r.success)
            .map(|r| r.duration_s)
            .collect();
        let level = LevelResult {
            index: i,
            values: values.clone(),
            label: lab,
            median_duration_s: median(&mut durations),
            runs,
            success_rate,
            passed,
            engine: engine_view(&snap),
            probe: probe_report,
        };
        if tty {
            print!("\r\x1b[K");
        }
        println!("{}", level_line(&level, plan));
        consecutive_fail = if passed { 0 } else { consecutive_fail + 1 };
        results.push(level);
        if plan.stop_after > 0 && consecutive_fail >= plan.stop_after {
            stopped_early = i + 1 < points.len();
            break;
        }
    }
    let interrupted = stop.load(Ordering::Relaxed);
    engine.detach()?;
    let first_fail = results.iter().position(|l| !l.passed);
    let last_pass = match first_fail {
        Some(0) => None,
        Some(f) => Some(results[f - 1].label.clone()),
        None => results.last().map(|l| l.label.clone()),
    };
    let base = results.first().and_then(|l| l.median_duration_s);
    let strain = base.and_then(|b| {
        results
            .iter()
            .find(|l| l.median_duration_s.is_some_and(|m| slowed(b, m)) || !l.passed)
            .map(|l| l.label.clone())
    });
    let report = Report {
        interface: iface.to_owned(),
        axes: plan.axes.clone(),
        repeat: plan.repeat,
        min_success: plan.min_success,
        first_failing: first_fail.map(|f| results[f].label.clone()),
        last_passing: last_pass,
        strain,
        levels: results,
        stopped_early,
        interrupted,
    };
    let json_path = plan.out.join("report.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let svg_path = plan.out.join("plot.svg");
    std::fs::write(&svg_path, plot_svg(&report))
        .with_context(|| format!("writing {}", svg_path.display()))?;
    println!(
        "\nlast passing: {}\nfirst failing: {}\nstarts to slow (median ≥ 1.5× and ≥ 50 ms over the first level's): {}{}",
        report.last_passing.as_deref().unwrap_or("none (the first level already fails)"),
        report.first_failing.as_deref().unwrap_or("none (every level passed)"),
        report.strain.as_deref().unwrap_or("never"),
        if report.interrupted { "\n(interrupted: the report covers the levels done)" } else { "" }
    );
    println!(
        "report: {}\nplot:   {}",
        json_path.display(),
        svg_path.display()
    );
    Ok(report)
}

/// Whether a level's median duration `m` is a slowdown from the first
/// level's `base`: 1.5× as long and at least 50 ms longer (so jitter in a
/// command that takes milliseconds is not called strain).
fn slowed(base: f64, m: f64) -> bool {
    m >= 1.5 * base && m - base >= 0.05
}

mod plot;
pub use plot::plot_svg;
