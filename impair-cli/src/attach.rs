//! `impair attach`: attach, then the live view (or JSON lines), the
//! scenario player and the metrics endpoint until a stop signal or the
//! duration; then detach and restore.
use std::{
    io::{IsTerminal as _, Write as _},
    sync::atomic::Ordering,
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;
use impair::{
    engine::{AttachMode, AttachOptions, Direction, IngressHook},
    model::fmt_duration_ns,
    observe::{
        metrics::{self, MetricsServer},
        snapshot::Snapshot,
    },
};
use impair_tools::{player::Player, signals::stop_flag};

use crate::{
    args::AttachArgs,
    link::{self, Plan, Planned, Running},
    usage,
};

/// The counters of every instance of this attach (uplink first).
fn snapshots(running: &Running) -> Result<Vec<Snapshot>> {
    running
        .engines()
        .iter()
        .map(|e| Snapshot::read(&e.maps(), e.iface()))
        .collect()
}

/// Redraws `lines` in place on a terminal (moving up over the previous
/// block), or appends them otherwise; returns how many lines were drawn.
pub(crate) fn redraw(lines: &[String], tty: bool, drawn: usize) -> Result<usize> {
    let mut out = std::io::stdout().lock();
    if tty && drawn > 0 {
        write!(out, "\x1b[{drawn}F\x1b[J")?;
    }
    for l in lines {
        writeln!(out, "{l}")?;
    }
    out.flush()?;
    Ok(lines.len())
}

pub(crate) fn attach(a: AttachArgs, netns: Option<&str>) -> Result<()> {
    let Planned {
        mut plan,
        label,
        scenario,
    } = link::plan(&a)?;
    if let Some(cgroup) = a.cgroup_scope {
        match &mut plan {
            Plan::One { hooks, rules } if !hooks.direction.ingress() && scenario.is_none() => {
                for r in rules {
                    r.matcher.cgroup = Some(cgroup);
                }
            }
            _ => {
                return Err(usage!(
                    "a container on this namespace's network is scoped by its cgroup, which matches sent \
                     traffic only: impair its egress with flags or a one-way profile (no --scenario, \
                     --direction ingress or two-way profile)"
                )
                .into())
            }
        }
    }
    let duration = a.duration.map(Duration::from_nanos);
    if duration == Some(Duration::ZERO) {
        return Err(usage!("invalid duration '0': give a positive time such as 30s").into());
    }
    let mut mode = a.attach_mode;
    if a.pin {
        let xdp = match &plan {
            Plan::One { hooks, .. } => {
                hooks.direction.ingress() && hooks.ingress_hook == IngressHook::Xdp
            }
            Plan::Pair {
                downlink,
                ingress_hook,
                ..
            } => downlink.is_some() && *ingress_hook == IngressHook::Xdp,
        };
        if xdp {
            return Err(usage!("--pin works with the tc hooks only: an XDP attachment ends with its process; use --hook tc").into());
        }
        if mode == AttachMode::Tcx {
            return Err(usage!("--pin uses clsact filters, which outlive the process; a tcx link would not: drop --attach-mode tcx").into());
        }
        mode = AttachMode::Netlink;
    }
    // Bind first: a taken port refuses before anything is attached.
    let metrics = a.metrics.map(MetricsServer::bind).transpose()?;
    let stop = stop_flag()?;
    let mut running = link::attach(
        plan,
        AttachOptions {
            iface: a.iface.clone(),
            mode,
            rules: Vec::new(),
            seed: a.seed,
            label: label.clone(),
            duration,
            // A pinned instance outlives this process: its offload journal
            // would read as a crash's, so pins change no offload.
            keep_offloads: a.keep_offloads || a.pin,
        },
        &label,
    )?;
    let started = Instant::now();
    let iface = a.iface.clone();
    // One line per instance: where it hooks, how, and its seed.
    let hows: Vec<String> = running
        .engines()
        .iter()
        .map(|e| {
            if e.hooks().direction == Direction::Ingress
                && e.hooks().ingress_hook == IngressHook::Xdp
            {
                format!("XDP {:?}", e.hooks().xdp_mode)
            } else {
                format!("{:?}", e.mode())
            }
        })
        .collect();
    let parts: Vec<String> = running
        .engines()
        .iter()
        .zip(&hows)
        .map(|(e, how)| format!("{} ({how}, seed {})", e.hook_name(), e.seed()))
        .collect();
    let sides = match &running {
        Running::Pair(p) => [
            ("uplink", p.uplink.is_some()),
            ("downlink", p.downlink.is_some()),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(n, _)| *n)
        .collect::<Vec<_>>(),
        Running::One(_) => Vec::new(),
    };
    let instances: Vec<serde_json::Value> = running
        .engines()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            serde_json::json!({
                "direction": e.hooks().direction.name(),
                "side": sides.get(i),
                "hook": e.hook_name(),
                "mode": hows[i],
                "seed": e.seed(),
            })
        })
        .collect();
    let first = running.engines()[0];
    let (hook0, seed0) = (first.hook_name(), first.seed());
    // Before "attached" is said: what is impaired after it is recorded.
    let mut capture = match &a.capture {
        Some(file) => Some(crate::capture::start_own(&iface, file, a.capture_max_pps)?),
        None => None,
    };
    if a.pin {
        running.persist()?;
        println!(
            "impair: pinned on {iface} {} ({label}){}; `impair detach {iface}` removes it",
            parts.join(" and "),
            duration.map_or(String::new(), |d| format!(
                ", until {} from now (then the next impair command removes it)",
                fmt_duration_ns(d.as_nanos() as u64)
            )),
        );
        return Ok(());
    }
    let metrics_url = metrics
        .as_ref()
        .and_then(|m| m.local_addr().ok())
        .map(|m| format!("http://{m}/metrics"));
    // The address actually bound (`:0` picks a port), and where: a server
    // started under --netns listens inside that namespace.
    let metrics_where = netns.map_or(String::new(), |ns| {
        format!(" inside network namespace {ns}")
    });
    if a.json {
        // The first line says what was attached; snapshots follow (one line
        // per instance: a two-way link has two).
        let event = serde_json::json!({
            "event": "attached",
            "interface": iface,
            "hook": hook0,
            "mode": hows[0],
            "label": label,
            "seed": seed0,
            "instances": instances,
            "duration_ns": duration.map(|d| d.as_nanos() as u64),
            "metrics": metrics_url,
            "netns": netns,
        });
        println!("{event}");
    } else {
        let at = if sides.len() == 2 {
            format!(
                "uplink (sent) at {}, downlink (received) at {}",
                parts[0], parts[1]
            )
        } else if let [side] = sides.as_slice() {
            format!("{side} only, at {}", parts[0])
        } else {
            parts.join(", ")
        };
        println!(
            "impair: attached to {iface} {at}: {label}{}{}; Ctrl-C detaches",
            duration.map_or(String::new(), |d| format!(
                ", for {}",
                fmt_duration_ns(d.as_nanos() as u64)
            )),
            metrics_url.as_ref().map_or(String::new(), |m| format!(
                ", metrics on {m}{metrics_where}"
            )),
        );
        for note in a.impair.unit_notes() {
            println!("impair: note: {note}");
        }
        for change in running.engines().iter().flat_map(|e| e.offload_changes()) {
            println!("impair: {change}; restored on detach (--keep-offloads leaves it)");
        }
    }
    let tty = std::io::stdout().is_terminal() && !a.json;
    let interval = Duration::from_millis(a.interval_ms.max(50));
    let mut drawn = 0usize;
    let mut next = Instant::now();
    let mut player = scenario.map(Player::new);
    let mut generations: Vec<u64> = vec![1; running.engines().len()];
    let reason = loop {
        if stop.load(Ordering::Relaxed) {
            break "stopped";
        }
        if duration.is_some_and(|d| started.elapsed() >= d) {
            break "duration elapsed";
        }
        if let Some(p) = player.as_mut() {
            let changed = match &mut running {
                Running::One(engine) => p.tick(engine, started.elapsed())?,
                Running::Pair(pair) => p.tick_pair(pair, started.elapsed())?,
            };
            if let Some(st) = changed {
                if !a.json {
                    drawn = 0;
                    println!(
                        "impair: step {}/{}: {} for {}",
                        st.index + 1,
                        st.count,
                        st.label,
                        fmt_duration_ns(st.duration.as_nanos() as u64)
                    );
                }
            }
        }
        if let Some(m) = &metrics {
            m.poll(|| match snapshots(&running) {
                Ok(s) => metrics::render(&s),
                Err(e) => format!("# impair: reading counters: {e:#}\n"),
            });
        }
        if Instant::now() >= next {
            next += interval;
            let snaps = snapshots(&running)?;
            if a.json {
                for snap in &snaps {
                    println!("{}", serde_json::to_string(snap)?);
                }
            } else {
                let mut lines = Vec::new();
                for (snap, generation) in snaps.iter().zip(&generations) {
                    if snap.generation != *generation && player.is_none() {
                        // `impair update` from another shell: say so above the
                        // view, whose header line above still names the old rules.
                        drawn = 0;
                        // A two-way link names the instance that changed.
                        let which = if snaps.len() > 1 {
                            format!(" {}", snap.hook)
                        } else {
                            String::new()
                        };
                        println!(
                            "impair: updated{which} (generation {}): {}",
                            snap.generation, snap.owner.label
                        );
                    }
                    lines.extend(snap.render());
                }
                drawn = redraw(&lines, tty, drawn)?;
            }
            generations = snaps.iter().map(|s| s.generation).collect();
        }
        if let Some(c) = capture.as_mut() {
            c.poll()?;
        }
        thread::sleep(Duration::from_millis(20));
    };
    if let (Some(c), Some(file)) = (capture.take(), &a.capture) {
        crate::capture::report(&c.finish()?, file, reason, a.json)?;
    }
    running.detach()?;
    if !a.json {
        println!("impair: {reason}: detached from {iface}; interface restored");
    }
    Ok(())
}
