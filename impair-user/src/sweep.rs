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

use crate::{
    cli::{ImpairArgs, MatchArgs},
    engine::{AttachOptions, Direction, Engine, HookOptions},
    input::{self, usage, UsageError},
    probe::{self, ProbeConfig, ProbeReport},
    rules::{fmt_duration_ns, fmt_percent, fmt_rate_bps, RuleSpec},
    stats::{wilson_interval, Snapshot},
};

/// z for a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;
/// Most levels one sweep may have (all axes multiplied).
const MAX_LEVELS: usize = 10_000;

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
    fn from_flag(flag: &str) -> Option<Self> {
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
    fn parse(self, s: &str) -> Result<f64, UsageError> {
        let what = &self.flag()[2..];
        match self {
            Knob::Loss | Knob::Corrupt | Knob::Duplicate | Knob::Reorder => {
                input::parse_percent(what, s)
            }
            Knob::Delay | Knob::Jitter => input::parse_duration_ns(what, s).map(|v| v as f64),
            Knob::Rate => input::parse_rate_bps(s).map(|v| v as f64),
        }
    }

    pub fn format(self, v: f64) -> String {
        match self {
            Knob::Loss | Knob::Corrupt | Knob::Duplicate | Knob::Reorder => fmt_percent(v),
            Knob::Delay | Knob::Jitter => fmt_duration_ns(v.round() as u64),
            Knob::Rate => fmt_rate_bps(v.round() as u64),
        }
    }

    fn set(self, a: &mut ImpairArgs, v: f64) {
        match self {
            Knob::Loss => a.loss = Some(v),
            Knob::Corrupt => a.corrupt = Some(v),
            Knob::Duplicate => a.duplicate = Some(v),
            Knob::Reorder => a.reorder = Some(v),
            Knob::Delay => a.delay = Some(v.round() as u64),
            Knob::Jitter => a.jitter = Some(v.round() as u64),
            Knob::Rate => a.rate = Some(v.round().max(1.0) as u64),
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

/// Levels from `from` toward `to` by `step` (both ends included when the
/// step lands on them). Rates may go down (a slower link is the worse one);
/// every other axis must grow.
fn levels(knob: Knob, text: &str, step: Option<&str>) -> Result<Vec<f64>, UsageError> {
    let flag = knob.flag();
    let Some((a, b)) = text.split_once("..") else {
        if let Some(s) = step {
            return Err(usage!(
                "--step {s} follows {flag} {text}, which is a single value: write a range such as {flag} {text}..X"
            ));
        }
        return Ok(vec![knob.parse(text)?]);
    };
    let (from, to) = (knob.parse(a)?, knob.parse(b)?);
    let Some(step) = step else {
        return Err(usage!(
            "{flag} {text} is a range: give its --step right after it, e.g. {flag} {text} --step {}",
            knob.format(((to - from).abs() / 10.0).max(f64::MIN_POSITIVE))
        ));
    };
    let st = knob
        .parse(step)
        .map_err(|e| usage!("invalid --step for {flag}: {e}"))?;
    if st <= 0.0 {
        return Err(usage!(
            "invalid --step '{step}' for {flag}: the step must be above zero"
        ));
    }
    if from > to && knob != Knob::Rate {
        return Err(usage!(
            "invalid range '{text}' for {flag}: it runs backwards; levels go from the lighter impairment to the heavier, e.g. {b}..{a}"
        ));
    }
    let span = (to - from).abs();
    let n = (span / st + 1e-9).floor() as usize + 1;
    if n > MAX_LEVELS {
        return Err(usage!(
            "{flag} {text} --step {step} makes {n} levels; at most {MAX_LEVELS} are allowed: use a larger step"
        ));
    }
    let dir = if to < from { -1.0 } else { 1.0 };
    Ok((0..n).map(|i| from + dir * st * i as f64).collect())
}

/// Everything `impair sweep` was asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub axes: Vec<Axis>,
    pub matcher: MatchArgs,
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

fn take_value<'a>(
    flag: &str,
    inline: Option<&'a str>,
    it: &mut std::iter::Peekable<std::slice::Iter<'a, String>>,
) -> Result<&'a str, UsageError> {
    if let Some(v) = inline {
        return Ok(v);
    }
    it.next()
        .map(String::as_str)
        .ok_or_else(|| usage!("{flag} needs a value"))
}

/// Parses the sweep's own syntax (clap cannot tie each `--step` to the axis
/// before it).
pub fn parse(raw: &[String]) -> Result<Plan, UsageError> {
    let mut axes: Vec<Axis> = Vec::new();
    let mut matcher = MatchArgs::default();
    let mut plan = Plan {
        axes: Vec::new(),
        matcher: MatchArgs::default(),
        direction: Direction::Egress,
        hold: Duration::ZERO,
        repeat: 1,
        stop_after: 0,
        timeout: Duration::from_secs(60),
        min_success: 1.0,
        out: PathBuf::from("impair-sweep"),
        seed: None,
        show_output: false,
        target: Target::Command(Vec::new()),
    };
    let mut hold_given = false;
    let mut probe = false;
    let (mut probe_dst, mut probe_src_ns, mut probe_dst_ns) = (None, None, None);
    let mut probe_rate = 1_000u64;
    let mut cmd: Vec<String> = Vec::new();
    let mut it = raw.iter().peekable();
    while let Some(tok) = it.next() {
        if tok == "--" {
            cmd = it.by_ref().cloned().collect();
            break;
        }
        let (flag, inline) = match tok.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v)),
            _ => (tok.as_str(), None),
        };
        if let Some(knob) = Knob::from_flag(flag) {
            let text = take_value(flag, inline, &mut it)?;
            let step = if it
                .peek()
                .is_some_and(|t| *t == "--step" || t.starts_with("--step="))
            {
                let t = it.next().map(String::as_str).unwrap_or_default();
                Some(match t.split_once('=') {
                    Some((_, v)) => v,
                    None => take_value("--step", None, &mut it)?,
                })
            } else {
                None
            };
            if axes.iter().any(|a| a.knob == knob) {
                return Err(usage!(
                    "{flag} is given twice: one range or value per impairment"
                ));
            }
            axes.push(Axis {
                knob,
                values: levels(knob, text, step)?,
            });
            continue;
        }
        let parse_u32 = |v: &str, what: &str, lo: u32| -> Result<u32, UsageError> {
            v.parse::<u32>().ok().filter(|n| *n >= lo).ok_or_else(|| {
                usage!("invalid {what} '{v}': expected a whole number of at least {lo}")
            })
        };
        match flag {
            "--step" => {
                return Err(usage!(
                    "--step must follow a range, e.g. --loss 0%..30% --step 2%"
                ))
            }
            "--hold" => {
                let v = take_value(flag, inline, &mut it)?;
                plan.hold = Duration::from_nanos(input::parse_duration_ns("hold", v)?);
                hold_given = true;
            }
            "--timeout" => {
                let v = take_value(flag, inline, &mut it)?;
                let ns = input::parse_duration_ns("timeout", v)?;
                if ns == 0 {
                    return Err(usage!("invalid --timeout '{v}': give a positive time such as 30s"));
                }
                plan.timeout = Duration::from_nanos(ns);
            }
            "--repeat" => plan.repeat = parse_u32(take_value(flag, inline, &mut it)?, "--repeat", 1)?,
            "--stop-after" => {
                plan.stop_after = parse_u32(take_value(flag, inline, &mut it)?, "--stop-after", 0)?
            }
            "--min-success" => {
                plan.min_success = input::parse_percent("min-success", take_value(flag, inline, &mut it)?)?
            }
            "--out" => plan.out = PathBuf::from(take_value(flag, inline, &mut it)?),
            "--seed" => {
                let v = take_value(flag, inline, &mut it)?;
                plan.seed = Some(v.parse().map_err(|_| usage!("invalid --seed '{v}': expected a number"))?);
            }
            "--show-output" => plan.show_output = true,
            "--direction" => {
                let v = take_value(flag, inline, &mut it)?;
                plan.direction = match v {
                    "egress" => Direction::Egress,
                    "ingress" => Direction::Ingress,
                    _ => return Err(usage!("invalid --direction '{v}': expected egress or ingress")),
                };
            }
            "--src" => matcher.src.push(crate::cli::cidr(take_value(flag, inline, &mut it)?).map_err(UsageError)?),
            "--dst" => matcher.dst.push(crate::cli::cidr(take_value(flag, inline, &mut it)?).map_err(UsageError)?),
            "--proto" => matcher.proto.push(crate::cli::proto(take_value(flag, inline, &mut it)?).map_err(UsageError)?),
            "--sport" => matcher.sport.push(crate::cli::ports(take_value(flag, inline, &mut it)?).map_err(UsageError)?),
            "--dport" => matcher.dport.push(crate::cli::ports(take_value(flag, inline, &mut it)?).map_err(UsageError)?),
            "--probe" => probe = true,
            "--probe-dst" => {
                let v = take_value(flag, inline, &mut it)?;
                probe_dst = Some(v.parse::<IpAddr>().map_err(|_| {
                    usage!("invalid --probe-dst '{v}': expected an IP address the receiver binds")
                })?);
            }
            "--probe-src-netns" => probe_src_ns = Some(take_value(flag, inline, &mut it)?.to_owned()),
            "--probe-dst-netns" => probe_dst_ns = Some(take_value(flag, inline, &mut it)?.to_owned()),
            "--probe-rate" => {
                probe_rate = u64::from(parse_u32(take_value(flag, inline, &mut it)?, "--probe-rate", 1)?)
            }
            other => {
                return Err(usage!(
                    "unknown sweep option '{other}': axes are --loss --corrupt --duplicate --reorder --delay --jitter --rate \
                     (A..B --step S, or one value); see impair sweep --help"
                ))
            }
        }
    }
    matcher.specs()?;
    if !axes.iter().any(|a| a.values.len() > 1) {
        return Err(usage!(
            "nothing to sweep: give at least one range, e.g. --loss 0%..30% --step 2%"
        ));
    }
    if axes.iter().filter(|a| a.values.len() > 1).count() > 2 {
        return Err(usage!(
            "at most two axes can be swept at once (a grid); hold the others at one value"
        ));
    }
    let total: usize = axes.iter().map(|a| a.values.len()).product();
    if total > MAX_LEVELS {
        return Err(usage!(
            "the grid has {total} levels; at most {MAX_LEVELS} are allowed"
        ));
    }
    plan.target = match (probe, cmd.is_empty()) {
        (true, false) => return Err(usage!("give either --probe or a command after `--`, not both")),
        (false, true) => {
            return Err(usage!(
                "nothing to run at each level: give a command after `--` (e.g. -- ./client --check) or --probe"
            ))
        }
        (false, false) => Target::Command(cmd),
        (true, true) => {
            let Some(dst) = probe_dst else {
                return Err(usage!(
                    "--probe needs --probe-dst IP: an address behind the impaired interface where the receiver binds \
                     (with --probe-dst-netns NS when it lives in another namespace)"
                ));
            };
            if !hold_given {
                plan.hold = Duration::from_secs(2);
            }
            Target::Probe {
                dst,
                src_netns: probe_src_ns,
                dst_netns: probe_dst_ns,
                rate_pps: probe_rate,
            }
        }
    };
    plan.axes = axes;
    plan.matcher = matcher;
    Ok(plan)
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

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The grid, first axis outermost; each entry one value per axis.
fn grid(axes: &[Axis]) -> Vec<Vec<f64>> {
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
    fn rules(&self, values: &[f64]) -> Vec<RuleSpec> {
        let mut a = ImpairArgs::default();
        for (axis, v) in self.axes.iter().zip(values) {
            axis.knob.set(&mut a, *v);
        }
        // parse() checked that the matches combine.
        self.matcher.rules(&a).unwrap_or_default()
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
            Some(n) => crate::netns::run_in(n, move || UdpSocket::bind(addr))?
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
    let g = |f: fn(&crate::stats::RuleStats) -> u64| s.rules.iter().map(f).sum::<u64>();
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
        let rules = plan.rules(p);
        hooks.check_rules(&rules)?;
        crate::rules::compile_all(&rules)?;
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
            rules: plan.rules(&points[0]),
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
            engine.update(&plan.rules(values))?;
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

/// An SVG plot of success rate (left axis) and median duration (right axis)
/// against the first swept axis; one pair of lines per value of a second
/// swept axis.
pub fn plot_svg(r: &Report) -> String {
    let (w, h) = (760.0, 420.0);
    let (left, right, top, bottom) = (70.0, 80.0, 40.0, 60.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let swept: Vec<usize> = r
        .axes
        .iter()
        .enumerate()
        .filter(|(_, a)| a.values.len() > 1)
        .map(|(i, _)| i)
        .collect();
    let xi = swept.first().copied().unwrap_or(0);
    let series_axis = swept.get(1).copied();
    let (xmin, xmax) = r.axes[xi]
        .values
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    let xspan = if xmax > xmin { xmax - xmin } else { 1.0 };
    let dmax = r
        .levels
        .iter()
        .filter_map(|l| l.median_duration_s)
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.1;
    let px = |x: f64| {
        let t = (x - xmin) / xspan;
        // Rates sweep downwards: draw them from high to low, left to right.
        let t = if r.axes[xi].values.first() > r.axes[xi].values.last() {
            1.0 - t
        } else {
            t
        };
        left + t * pw
    };
    let py_rate = |s: f64| top + (1.0 - s) * ph;
    let py_dur = |d: f64| top + (1.0 - d / dmax) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let title = format!(
        "impair sweep on {}: success rate and median duration vs {}",
        r.interface,
        &r.axes[xi].knob.flag()[2..]
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        w / 2.0,
        xml(&title)
    );
    // Axes and grid.
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    for k in 0..=4 {
        let f = k as f64 / 4.0;
        let y = py_rate(f);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y}" y2="{y}" stroke="#ddd"/>"##,
            left + pw
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}%</text>"#,
            left - 6.0,
            y + 4.0,
            (f * 100.0) as u32
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="start">{:.2}s</text>"#,
            left + pw + 6.0,
            y + 4.0,
            dmax * f
        );
    }
    let vals = &r.axes[xi].values;
    let every = vals.len().div_ceil(10).max(1);
    for (k, v) in vals.iter().enumerate() {
        if k % every != 0 && k != vals.len() - 1 {
            continue;
        }
        let x = px(*v);
        let _ = writeln!(
            s,
            r##"<line x1="{x}" x2="{x}" y1="{}" y2="{}" stroke="#444"/>"##,
            top + ph,
            top + ph + 4.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{x}" y="{}" text-anchor="middle">{}</text>"#,
            top + ph + 18.0,
            xml(&r.axes[xi].knob.format(*v))
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        left + pw / 2.0,
        h - 18.0,
        xml(&r.axes[xi].knob.flag()[2..])
    );
    let _ = writeln!(
        s,
        r##"<text x="18" y="{}" transform="rotate(-90 18 {})" text-anchor="middle" fill="#1f6feb">success rate</text>"##,
        top + ph / 2.0,
        top + ph / 2.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" transform="rotate(90 {} {})" text-anchor="middle" fill="#d9480f">median duration</text>"##,
        w - 14.0,
        top + ph / 2.0,
        w - 14.0,
        top + ph / 2.0
    );
    // First failing level.
    if let Some(f) = r.levels.iter().find(|l| !l.passed) {
        let x = px(f.values[xi]);
        let _ = writeln!(
            s,
            r##"<line x1="{x}" x2="{x}" y1="{top}" y2="{}" stroke="#c92a2a" stroke-dasharray="4 3"/>"##,
            top + ph
        );
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" fill="#c92a2a">first failing: {}</text>"##,
            x + 4.0,
            top + 14.0,
            xml(&f.label)
        );
    }
    // Series.
    let keys: Vec<Option<f64>> = match series_axis {
        None => vec![None],
        Some(si) => r.axes[si].values.iter().map(|v| Some(*v)).collect(),
    };
    let dashes = ["", "6 3", "2 3", "8 3 2 3"];
    for (k, key) in keys.iter().enumerate() {
        let pts: Vec<&LevelResult> = r
            .levels
            .iter()
            .filter(|l| match (key, series_axis) {
                (Some(v), Some(si)) => (l.values[si] - v).abs() < 1e-12,
                _ => true,
            })
            .collect();
        if pts.is_empty() {
            continue;
        }
        let dash = dashes[k % dashes.len()];
        let rate: Vec<String> = pts
            .iter()
            .map(|l| format!("{:.1},{:.1}", px(l.values[xi]), py_rate(l.success_rate)))
            .collect();
        let _ = writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#1f6feb" stroke-width="2" stroke-dasharray="{dash}"/>"##,
            rate.join(" ")
        );
        for l in &pts {
            let _ = writeln!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"/>"##,
                px(l.values[xi]),
                py_rate(l.success_rate),
                if l.passed { "#1f6feb" } else { "#c92a2a" }
            );
        }
        let dur: Vec<String> = pts
            .iter()
            .filter_map(|l| {
                l.median_duration_s
                    .map(|d| format!("{:.1},{:.1}", px(l.values[xi]), py_dur(d)))
            })
            .collect();
        if !dur.is_empty() {
            let _ = writeln!(
                s,
                r##"<polyline points="{}" fill="none" stroke="#d9480f" stroke-width="2" stroke-dasharray="{dash}"/>"##,
                dur.join(" ")
            );
        }
        if let (Some(v), Some(si)) = (key, series_axis) {
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" font-size="11">{} {} {}</text>"#,
                left + 8.0,
                top + 16.0 + 14.0 * k as f64,
                if dash.is_empty() { "solid" } else { "dashed" },
                &r.axes[si].knob.flag()[2..],
                xml(&r.axes[si].knob.format(*v))
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn xml(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Plan, UsageError> {
        let v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(&v)
    }

    #[test]
    fn ranges_make_levels_and_steps_bind_to_their_axis() {
        let plan = p(&[
            "--loss", "0%..30%", "--step", "2%", "--delay", "50ms", "--", "true",
        ])
        .unwrap();
        assert_eq!(plan.axes.len(), 2);
        assert_eq!(plan.axes[0].values.len(), 16);
        assert!((plan.axes[0].values[15] - 0.30).abs() < 1e-9);
        assert_eq!(plan.axes[1].values, vec![50_000_000.0]);
        let g = p(&[
            "--loss=0%..10%",
            "--step=5%",
            "--delay",
            "0ms..100ms",
            "--step",
            "50ms",
            "--",
            "x",
        ])
        .unwrap();
        assert_eq!(grid(&g.axes).len(), 9);
        let r = p(&["--rate", "10mbit..1mbit", "--step", "3mbit", "--", "x"]).unwrap();
        assert_eq!(r.axes[0].values, vec![10e6, 7e6, 4e6, 1e6]);
    }

    #[test]
    fn bad_ranges_get_clear_errors() {
        let e = p(&["--loss", "30%..0%", "--step", "2%", "--", "x"])
            .unwrap_err()
            .0;
        assert!(e.contains("'30%..0%'") && e.contains("backwards"), "{e}");
        let e = p(&["--loss", "0%..30%", "--step", "0%", "--", "x"])
            .unwrap_err()
            .0;
        assert!(e.contains("'0%'") && e.contains("above zero"), "{e}");
        let e = p(&["--loss", "0%..130%", "--step", "10%", "--", "x"])
            .unwrap_err()
            .0;
        assert!(e.contains("130%"), "{e}");
        let e = p(&["--loss", "0%..30%", "--", "x"]).unwrap_err().0;
        assert!(e.contains("--step"), "{e}");
        let e = p(&["--step", "2%", "--loss", "0%..3%", "--", "x"])
            .unwrap_err()
            .0;
        assert!(e.contains("must follow a range"), "{e}");
        let e = p(&["--loss", "1%", "--", "x"]).unwrap_err().0;
        assert!(e.contains("nothing to sweep"), "{e}");
        let e = p(&["--loss", "0%..3%", "--step", "1%"]).unwrap_err().0;
        assert!(e.contains("nothing to run"), "{e}");
        let e = p(&[
            "--loss", "0%..3%", "--step", "1%", "--repeat", "0", "--", "x",
        ])
        .unwrap_err()
        .0;
        assert!(e.contains("'0'"), "{e}");
        let e = p(&["--los", "0%..3%", "--", "x"]).unwrap_err().0;
        assert!(e.contains("'--los'"), "{e}");
        let e = p(&["--delay", "0ms..1s", "--step", "1us", "--", "x"])
            .unwrap_err()
            .0;
        assert!(e.contains("levels"), "{e}");
    }

    #[test]
    fn the_plot_is_well_formed_svg() {
        let plan = p(&["--loss", "0%..4%", "--step", "2%", "--", "x"]).unwrap();
        let mk = |i: usize, v: f64, ok: bool| LevelResult {
            index: i,
            values: vec![v],
            label: format!("loss {v}"),
            runs: vec![],
            success_rate: if ok { 1.0 } else { 0.2 },
            passed: ok,
            median_duration_s: Some(0.1 + v),
            engine: EngineView {
                packets: 0,
                dropped_loss: 0,
                dropped_queue: 0,
                corrupted: 0,
                duplicated: 0,
                reordered: 0,
                delayed: 0,
                measured_loss: None,
                measured_loss_ci95: None,
            },
            probe: None,
        };
        let r = Report {
            interface: "r1".into(),
            axes: plan.axes,
            repeat: 1,
            min_success: 1.0,
            levels: vec![mk(0, 0.0, true), mk(1, 0.02, true), mk(2, 0.04, false)],
            last_passing: None,
            first_failing: None,
            strain: None,
            stopped_early: false,
            interrupted: false,
        };
        let svg = plot_svg(&r);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("first failing: loss 0.04"));
    }
}
