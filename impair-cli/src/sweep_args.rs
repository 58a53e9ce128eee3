//! `impair sweep`'s own argument syntax (clap cannot tie each `--step` to
//! the axis before it): raw arguments → an [`impair_tools::sweep::Plan`].
use std::{net::IpAddr, path::PathBuf, time::Duration};

use impair::{engine::Direction, input::UsageError, model::units};
use impair_tools::sweep::{Axis, Knob, Plan, Target};

use crate::{
    args::{self, MatchArgs},
    render::flags,
    usage,
};

/// The most levels a grid may have.
const MAX_LEVELS: usize = 10_000;

/// Levels from `from` toward `to` by `step` (both ends included when the
/// step lands on them). Rates may go down (a slower link is the worse one);
/// every other axis must grow.
pub(crate) fn levels(knob: Knob, text: &str, step: Option<&str>) -> Result<Vec<f64>, UsageError> {
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
        matcher: Default::default(),
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
                plan.hold = Duration::from_nanos(units::parse_duration_ns("hold", v)?);
                hold_given = true;
            }
            "--timeout" => {
                let v = take_value(flag, inline, &mut it)?;
                let ns = units::parse_duration_ns("timeout", v)?;
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
                plan.min_success = units::parse_percent("min-success", take_value(flag, inline, &mut it)?)?
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
            "--src" => matcher.src.push(args::cidr(take_value(flag, inline, &mut it)?).map_err(UsageError)?),
            "--dst" => matcher.dst.push(args::cidr(take_value(flag, inline, &mut it)?).map_err(UsageError)?),
            "--proto" => matcher.proto.push(args::proto(take_value(flag, inline, &mut it)?).map_err(UsageError)?),
            "--sport" => matcher.sport.push(args::ports(take_value(flag, inline, &mut it)?).map_err(UsageError)?),
            "--dport" => matcher.dport.push(args::ports(take_value(flag, inline, &mut it)?).map_err(UsageError)?),
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
    matcher.lists().specs().map_err(flags)?;
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
    plan.matcher = matcher.lists();
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use impair_tools::sweep::{grid, plot_svg, EngineView, LevelResult, Report};

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
