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
    engine::{AttachMode, AttachOptions, Engine, IngressHook},
    model::fmt_duration_ns,
    observe::{
        metrics::{self, MetricsServer},
        snapshot::Snapshot,
    },
    profile::scenario,
};
use impair_tools::{player::Player, signals::stop_flag};

use crate::{
    args::AttachArgs,
    convert::{hooks_from, rules_from},
    usage,
};

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
    let hooks = hooks_from(&a)?;
    let scenario = match &a.scenario {
        Some(path) => {
            if a.impair.given() || a.matcher.given() {
                return Err(usage!(
                    "--scenario {path} sets the rules itself: drop the impairment and match flags"
                )
                .into());
            }
            let s = scenario::load(path)?;
            for st in &s.steps {
                hooks.check(&st.rules)?;
            }
            Some(s)
        }
        None => None,
    };
    let (rules, label) = match &scenario {
        Some(s) => (
            s.steps[0].rules.clone(),
            format!("scenario step 1: {}", s.steps[0].label),
        ),
        None => rules_from(a.profile.as_deref(), &a.impair, &a.matcher)?,
    };
    let duration = a.duration.map(Duration::from_nanos);
    if duration == Some(Duration::ZERO) {
        return Err(usage!("invalid duration '0': give a positive time such as 30s").into());
    }
    let mut mode = a.attach_mode;
    if a.pin {
        if hooks.direction.ingress() && hooks.ingress_hook == IngressHook::Xdp {
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
    let mut engine = Engine::attach_with(
        AttachOptions {
            iface: a.iface.clone(),
            mode,
            rules,
            seed: a.seed,
            label: label.clone(),
            duration,
        },
        hooks,
    )?;
    let started = Instant::now();
    // Before "attached" is said: what is impaired after it is recorded.
    let mut capture = match &a.capture {
        Some(file) => Some(crate::capture::start_own(
            engine.iface(),
            file,
            a.capture_max_pps,
        )?),
        None => None,
    };
    if a.pin {
        let (iface, hook, seed) = (engine.iface().to_owned(), engine.hook_name(), engine.seed());
        engine.persist()?;
        println!(
            "impair: pinned on {iface} {hook} (netlink, {label}, seed {seed}){}; `impair detach {iface}` removes it",
            duration.map_or(String::new(), |d| format!(
                ", until {} from now (then the next impair command removes it)",
                fmt_duration_ns(d.as_nanos() as u64)
            )),
        );
        return Ok(());
    }
    let how = if hooks.direction.ingress()
        && hooks.ingress_hook == IngressHook::Xdp
        && !hooks.direction.egress()
    {
        format!("XDP {:?}", hooks.xdp_mode)
    } else {
        format!("{:?}", engine.mode())
    };
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
        // The first line says what was attached; snapshots follow.
        let event = serde_json::json!({
            "event": "attached",
            "interface": engine.iface(),
            "hook": engine.hook_name(),
            "mode": how,
            "label": label,
            "seed": engine.seed(),
            "duration_ns": duration.map(|d| d.as_nanos() as u64),
            "metrics": metrics_url,
            "netns": netns,
        });
        println!("{event}");
    } else {
        println!(
            "impair: attached to {} {} ({how}, {label}, seed {}){}{}; Ctrl-C detaches",
            engine.iface(),
            engine.hook_name(),
            engine.seed(),
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
    }
    let tty = std::io::stdout().is_terminal() && !a.json;
    let interval = Duration::from_millis(a.interval_ms.max(50));
    let mut drawn = 0usize;
    let mut next = Instant::now();
    let mut player = scenario.map(Player::new);
    let mut generation = 1u64;
    let reason = loop {
        if stop.load(Ordering::Relaxed) {
            break "stopped";
        }
        if duration.is_some_and(|d| started.elapsed() >= d) {
            break "duration elapsed";
        }
        if let Some(p) = player.as_mut() {
            if let Some(st) = p.tick(&mut engine, started.elapsed())? {
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
            m.poll(|| match Snapshot::read(&engine.maps(), engine.iface()) {
                Ok(s) => metrics::render(&[s]),
                Err(e) => format!("# impair: reading counters: {e:#}\n"),
            });
        }
        if Instant::now() >= next {
            next += interval;
            let snap = Snapshot::read(&engine.maps(), engine.iface())?;
            if a.json {
                println!("{}", serde_json::to_string(&snap)?);
            } else {
                if snap.generation != generation && player.is_none() {
                    // `impair update` from another shell: say so above the
                    // view, whose header line above still names the old rules.
                    drawn = 0;
                    println!(
                        "impair: updated (generation {}): {}",
                        snap.generation, snap.owner.label
                    );
                }
                drawn = redraw(&snap.render(), tty, drawn)?;
            }
            generation = snap.generation;
        }
        if let Some(c) = capture.as_mut() {
            c.poll()?;
        }
        thread::sleep(Duration::from_millis(20));
    };
    if let (Some(c), Some(file)) = (capture.take(), &a.capture) {
        crate::capture::report(&c.finish()?, file, reason, a.json)?;
    }
    let iface = engine.iface().to_owned();
    engine.detach()?;
    if !a.json {
        println!("impair: {reason}: detached from {iface}; interface restored");
    }
    Ok(())
}
