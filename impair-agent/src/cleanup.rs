//! What a dead agent (or any dead impair controller) left, found and
//! removed when an agent starts. tcx links die with their process; clsact
//! filters, the clsact qdisc and fq roots do not (their lease has ended, so
//! they pass every packet, but they are still there). The engine knows how
//! to remove each (`engine::remove_leftover`, `remove_crash_leftovers`);
//! this walks every network namespace that has some and says what it
//! removed.
use anyhow::Result;
use impair::{discover, engine, netns, sys};

/// Removes dead instances of this thread's network namespace; returns one
/// line per removal (`IFACE HOOK pid PID 'LABEL'`).
fn remove_here(ns: &str) -> Result<Vec<String>> {
    let here = sys::netns_ino()?;
    let mut removed = Vec::new();
    let mut ifaces = Vec::new();
    for inst in discover::instances()? {
        if inst.alive || inst.owner.netns_ino != here {
            continue;
        }
        let Some(iface) = sys::ifname(inst.owner.ifindex) else {
            continue;
        };
        engine::remove_leftover(&iface, &inst)?;
        removed.push(format!(
            "{ns}{iface} {} pid {} '{}'",
            inst.owner.hook_name(),
            inst.owner.pid,
            inst.owner.label_str()
        ));
        ifaces.push(iface);
    }
    // A controller killed mid-attach or mid-detach leaves what no owner
    // record describes: a journaled clsact qdisc, an orphan fq root.
    for entry in std::fs::read_dir("/sys/class/net")?.flatten() {
        let iface = entry.file_name().to_string_lossy().into_owned();
        if engine::remove_crash_leftovers(&iface).unwrap_or(false) {
            removed.push(format!("{ns}{iface} qdisc left mid-change"));
        }
    }
    Ok(removed)
}

/// Removes leftovers in the agent's namespace and in every named one (`ip
/// netns`) that holds dead instances.
pub fn remove_leftovers() -> Result<Vec<String>> {
    let here = sys::netns_ino()?;
    let mut removed = remove_here("")?;
    let dead_elsewhere: std::collections::BTreeSet<u64> = discover::instances()?
        .iter()
        .filter(|i| !i.alive && i.owner.netns_ino != here)
        .map(|i| i.owner.netns_ino)
        .collect();
    for (ino, name) in netns::names_by_ino() {
        if !dead_elsewhere.contains(&ino) {
            continue;
        }
        let prefix = format!("netns {name}: ");
        match netns::run_in(&name, move || remove_here(&prefix)) {
            Ok(Ok(r)) => removed.extend(r),
            Ok(Err(e)) | Err(e) => tracing::warn!(netns = name, "removing leftovers: {e:#}"),
        }
    }
    Ok(removed)
}
