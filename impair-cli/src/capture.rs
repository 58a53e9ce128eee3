//! `impair capture IFACE -w FILE`: the packets a running instance impairs,
//! each with its decision, into a pcapng file (impair::observe::capture),
//! until Ctrl-C, --duration, or the instance's end. Also `attach --capture`.
//! A two-way link (two instances on IFACE, one `impair attach`) is captured
//! whole into one file unless --direction names one side.
use std::{
    io::Write as _,
    path::Path,
    sync::atomic::Ordering,
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;
use impair::{
    discover,
    observe::capture::{Capture, Summary},
    sys,
};
use impair_tools::signals::stop_flag;

use crate::{
    args::CaptureArgs,
    instances::{link_pair, one_instance},
    usage,
};

/// How often the ring is drained into the file.
const POLL: Duration = Duration::from_millis(10);

pub(crate) fn capture(a: CaptureArgs) -> Result<()> {
    if a.max_pps == 0 {
        return Err(usage!("invalid --max-pps '0': give at least 1 record per second").into());
    }
    if a.duration == Some(0) {
        return Err(usage!("invalid duration '0': give a positive time such as 10s").into());
    }
    // Both instances of a two-way link, or the one named.
    let insts = match a.direction {
        None => match link_pair(&a.iface)? {
            Some(pair) => pair,
            None => vec![one_instance(&a.iface, None)?],
        },
        side => vec![one_instance(&a.iface, side)?],
    };
    // The instances, as `discover` will find them again.
    let ifindex = insts[0].owner.ifindex;
    let who: Vec<(u32, u64)> = insts
        .iter()
        .map(|i| (i.owner.pid, i.owner.attached_unix_ns))
        .collect();
    let stop = stop_flag()?;
    let mut cap = Capture::start(
        &insts.iter().collect::<Vec<_>>(),
        &a.iface,
        &a.file,
        a.max_pps,
    )?;
    let hooks: Vec<&str> = insts.iter().map(|i| i.owner.hook_name()).collect();
    let started_line = format!(
        "impair: capturing what {} {} impairs to {} (at most {} per second per CPU); Ctrl-C stops",
        a.iface,
        hooks.join(" and "),
        a.file.display(),
        a.max_pps
    );
    // With --json, stdout is the summary alone.
    if a.json {
        eprintln!("{started_line}");
    } else {
        println!("{started_line}");
        std::io::stdout().flush()?;
    }
    drop(insts);
    let started = Instant::now();
    let mut checked = Instant::now();
    let reason = loop {
        cap.poll()?;
        if stop.load(Ordering::Relaxed) {
            break "stopped";
        }
        if a.duration
            .is_some_and(|d| started.elapsed() >= Duration::from_nanos(d))
        {
            break "duration elapsed";
        }
        if checked.elapsed() >= Duration::from_secs(1) {
            checked = Instant::now();
            let gone = !discover::on_interface(ifindex)?
                .iter()
                .any(|i| who.contains(&(i.owner.pid, i.owner.attached_unix_ns)));
            if gone {
                break "the instance ended";
            }
        }
        thread::sleep(POLL);
    };
    let s = cap.finish()?;
    report(&s, &a.file, reason, a.json)
}

/// The summary line (or JSON object) of a capture.
pub(crate) fn report(s: &Summary, file: &Path, reason: &str, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(s)?);
    } else {
        println!(
            "impair: capture {reason}: {} impaired packets written to {}; {} not recorded \
             (over the per-CPU budget: {}, ring full: {})",
            s.written,
            file.display(),
            s.not_recorded(),
            s.over_budget,
            s.ring_full
        );
    }
    Ok(())
}

/// `attach --capture FILE`: the capture of this process's own instances on
/// `iface` (both of a two-way link), started right after the attach.
pub(crate) fn start_own(iface: &str, file: &Path, max_pps: u64) -> Result<Capture> {
    let ifindex = sys::ifindex(iface)?;
    let me = std::process::id();
    let mut mine: Vec<_> = discover::on_interface(ifindex)?
        .into_iter()
        .filter(|i| i.owner.pid == me)
        .collect();
    if mine.is_empty() {
        anyhow::bail!("this controller's instance on {iface} was not found");
    }
    // The uplink (egress) first, as `impair stats` lists them.
    mine.sort_by_key(|i| !i.egress());
    Capture::start(&mine.iter().collect::<Vec<_>>(), iface, file, max_pps)
}
