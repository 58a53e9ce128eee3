//! What a dead agent (or any dead impair controller) left, found and
//! removed when an agent starts. tcx links die with their process; clsact
//! filters, the clsact qdisc and fq roots do not (their lease has ended, so
//! they pass every packet, but they are still there). The engine knows how
//! to remove each (`engine::remove_leftover`, `remove_crash_leftovers`);
//! this finds them in the agent's network namespace and says what it
//! removed.
use anyhow::Result;
use impair::{discover, engine, sys};

/// Removes dead instances of this thread's network namespace; returns one
/// line per removal (`IFACE HOOK pid PID 'LABEL'`).
fn remove_here() -> Result<Vec<String>> {
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
            "{iface} {} pid {} '{}'",
            inst.owner.hook_name(),
            inst.owner.pid,
            inst.owner.label_str()
        ));
        ifaces.push(iface);
    }
    // A controller killed mid-attach or mid-detach leaves what no owner
    // record describes: a journaled clsact qdisc, an orphan fq root.
    // The agent's namespace's devices (netlink; /sys/class/net shows the
    // namespace sysfs was mounted in).
    for (_, iface) in sys::interfaces()? {
        if engine::remove_crash_leftovers(&iface).unwrap_or(false) {
            removed.push(format!("{iface} qdisc left mid-change"));
        }
    }
    Ok(removed)
}

/// Removes leftovers in the agent's network namespace: where a host agent
/// runs and impairs. Other namespaces are left to their own: several agents
/// (one per namespace, as in the tests' labs) must not remove each other's
/// leftovers as they start; a dead agent's impairments there passed
/// everything since its lease ended, and the next attach on that interface
/// removes them (the engine's `clear_for_attach`).
pub fn remove_leftovers() -> Result<Vec<String>> {
    remove_here()
}
