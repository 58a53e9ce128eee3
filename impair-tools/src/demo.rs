//! `impair demo`: the main job on the embedded default. Builds a client →
//! router → server namespace lab, attaches a profile on the router's egress
//! toward the server, sends probe traffic, prints what the engine counted
//! beside what the receiver saw, and removes everything.
use std::{
    net::{SocketAddr, UdpSocket},
    sync::atomic::Ordering,
};

use anyhow::{bail, Context as _, Result};
use impair::{
    engine::{ensure_real_object, AttachMode, AttachOptions, Engine},
    model::fmt_percent,
    netns,
    observe::snapshot::Snapshot,
    profile as profiles,
    statistics::{wilson_interval, Z99},
    sys,
};
use serde::Serialize;

use crate::{
    lab::{self, Lab, LabOptions},
    probe::{self, ProbeConfig, ProbeReport},
    signals::stop_flag,
    usage,
};

/// What the demo runs (the command line's `impair demo` flags).
#[derive(Debug, Clone)]
pub struct DemoArgs {
    /// Profile to attach on the router: a built-in or a TOML file.
    pub profile: String,
    /// Probe datagrams to send from the client to the server.
    pub count: u64,
    /// Probe send rate, packets per second.
    pub rate_pps: u64,
    /// Seed of the data path's generators (random if omitted).
    pub seed: Option<u64>,
    pub attach_mode: AttachMode,
    /// Print the result as JSON.
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct DemoResult {
    pub profile: String,
    pub engine: Snapshot,
    pub receiver: ProbeReport,
    /// Loss at the receiver and its 99% Wilson interval.
    pub receiver_loss: f64,
    pub receiver_loss_ci99: (f64, f64),
    /// Whether the engine's drop count equals sent − received.
    pub counters_agree: bool,
}

pub fn run(a: &DemoArgs) -> Result<()> {
    ensure_real_object()?;
    if !sys::is_root() {
        return Err(usage!(
            "impair demo needs root: it creates network namespaces and loads BPF programs"
        )
        .into());
    }
    let profile = profiles::load(&a.profile)?;
    if a.count == 0 {
        return Err(usage!("invalid --count 0: send at least one packet").into());
    }
    // Ctrl-C during the demo must not kill us before the lab is removed.
    let stop = stop_flag()?;

    let say = |s: String| {
        if !a.json {
            println!("{s}");
        }
    };
    say("impair demo: creating lab namespaces client → router → server (198.18.0.0/15) ...".into());
    let lab = Lab::create_with("demo", LabOptions { offloads: false })?;
    let result = run_in_lab(a, &lab, &profile, &say, &stop);
    let names = lab.namespaces().map(str::to_owned);
    drop(lab);
    let left: Vec<_> = names.iter().filter(|n| netns::exists(n)).collect();
    if !left.is_empty() {
        bail!("could not remove lab namespaces {left:?}");
    }
    let result = result?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!("impair demo: detached, lab removed; nothing left behind");
    }
    if !result.counters_agree {
        bail!("the engine's drop count does not equal sent − received (see above)");
    }
    Ok(())
}

fn run_in_lab(
    a: &DemoArgs,
    lab: &Lab,
    profile: &profiles::Profile,
    say: &dyn Fn(String),
    stop: &std::sync::atomic::AtomicBool,
) -> Result<DemoResult> {
    let server = SocketAddr::from((lab.server_v4(), 0));
    let rx = netns::run_in(&lab.server, move || UdpSocket::bind(server))?
        .context("binding the receiver")?;
    let dst = rx.local_addr()?;
    let client = SocketAddr::from((lab.client_v4(), 0));
    let tx = netns::run_in(&lab.client, move || UdpSocket::bind(client))?
        .context("binding the sender")?;

    let opts = AttachOptions {
        iface: lab::ROUTER_EGRESS.into(),
        mode: a.attach_mode,
        rules: profile.rules.clone(),
        seed: a.seed,
        label: format!("profile {}", profile.name),
        ..Default::default()
    };
    let engine = netns::run_in(&lab.router, move || Engine::attach(opts))??;
    say(format!(
        "impair demo: attached profile '{}' ({}) to router {} egress ({:?}, seed {})",
        profile.name,
        profile.summary,
        lab::ROUTER_EGRESS,
        engine.mode(),
        engine.seed()
    ));
    if stop.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    say(format!(
        "impair demo: sending {} probe datagrams at {} pps client → server ...",
        a.count, a.rate_pps
    ));
    let cfg = ProbeConfig {
        count: a.count,
        rate_pps: a.rate_pps,
        ..Default::default()
    };
    let report = probe::run_pair(tx, rx, dst, &cfg)?;
    let snap = Snapshot::read(&engine.maps(), lab::ROUTER_EGRESS)?;
    engine.detach()?;

    let dropped: u64 = snap
        .rules
        .iter()
        .map(|r| r.dropped_loss + r.dropped_mtu)
        .sum();
    let agree = dropped == report.sent - report.received.min(report.sent) && report.corrupted == 0;
    let loss = report.loss_fraction();
    let ci = wilson_interval(report.lost, report.sent, Z99);
    let result = DemoResult {
        profile: profile.name.clone(),
        engine: snap,
        receiver: report,
        receiver_loss: loss,
        receiver_loss_ci99: ci,
        counters_agree: agree,
    };
    if !a.json {
        print_table(&result);
    }
    Ok(result)
}

fn print_table(r: &DemoResult) {
    let rep = &r.receiver;
    println!();
    println!(
        "  {:<28} {:>14} {:>14} {:>24}",
        "", "configured", "engine", "receiver (99% CI)"
    );
    for rule in &r.engine.rules {
        let configured = rule
            .rule
            .loss
            .map(fmt_percent)
            .unwrap_or_else(|| "-".into());
        let engine = rule
            .measured_loss
            .map(fmt_percent)
            .unwrap_or_else(|| "-".into());
        println!(
            "  {:<28} {:>14} {:>14} {:>24}",
            format!("loss [{}]", rule.rule.matches),
            configured,
            engine,
            format!(
                "{} ({}..{})",
                fmt_percent(r.receiver_loss),
                fmt_percent(r.receiver_loss_ci99.0),
                fmt_percent(r.receiver_loss_ci99.1)
            )
        );
    }
    // In wire packets: what a receiver counts (a GSO super-packet is many).
    let dropped: u64 = r.engine.rules.iter().map(|x| x.dropped_wire_packets).sum();
    let seen: u64 = r.engine.rules.iter().map(|x| x.wire_packets).sum();
    println!(
        "  {:<28} {:>14} {:>14} {:>24}",
        "wire packets", "", seen, rep.sent
    );
    println!(
        "  {:<28} {:>14} {:>14} {:>24}",
        "dropped / lost (wire)", "", dropped, rep.lost
    );
    println!(
        "  {:<28} {:>14} {:>14} {:>24}",
        "received", "", "", rep.received
    );
    println!(
        "  {:<28} {:>14} {:>14} {:>24}",
        "duplicated / reordered / corrupted",
        "",
        "",
        format!("{} / {} / {}", rep.duplicated, rep.reordered, rep.corrupted)
    );
    if let Some(d) = &rep.delay {
        println!(
            "  {:<28} {:>14} {:>14} {:>24}",
            "one-way delay p50 / p99",
            "",
            "",
            format!(
                "{:.1} / {:.1} µs",
                d.p50_ns as f64 / 1e3,
                d.p99_ns as f64 / 1e3
            )
        );
    }
    println!();
    println!(
        "  engine drops {} sent − received ({} − {} = {})",
        if r.counters_agree { "==" } else { "!=" },
        rep.sent,
        rep.received,
        rep.sent.saturating_sub(rep.received)
    );
    if let Some(conf) = r.engine.rules.first().and_then(|x| x.rule.loss) {
        let inside = r.receiver_loss_ci99.0 <= conf && conf <= r.receiver_loss_ci99.1;
        println!(
            "  configured loss {} is {} the receiver's 99% interval",
            fmt_percent(conf),
            if inside { "inside" } else { "OUTSIDE" }
        );
    }
    println!();
}
