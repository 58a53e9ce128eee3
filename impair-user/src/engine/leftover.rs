//! What dead controllers and expired pins leave behind, found and removed.
//!
//! A tcx or XDP link dies with its controller; a clsact filter does not. So a
//! controller killed with SIGKILL (or a pinned instance) leaves its filters
//! on the interface, with the clsact qdisc and the fq root it may have
//! added, and the ifb device of an instance that held received traffic
//! (`ifb.rs`; with tcx that device is all that remains). Its lease has
//! ended, so the data path passes everything; the next `impair` on the
//! interface removes the rest. Removing is idempotent: what
//! is already gone (another `impair` got there first) counts as removed.
use std::time::Duration;

use anyhow::{Context as _, Result};
use impair_common::owner_flags;

use super::{
    error::Error,
    fq::{self, FqState},
    hooks::Program,
    ifb,
    link::clsact,
    owner,
};
use crate::{discover, sys};

/// Before an attach at `hooks` (owner hook bits) on `iface`: refuses when a
/// live controller (or a pinned instance) impairs the same direction, and
/// removes the leftovers of dead ones there. The other direction's
/// instances are left alone: egress and ingress instances may coexist.
pub(crate) fn clear_for_attach(iface: &str, ifindex: u32, hooks: u32) -> Result<()> {
    remove_crash_leftovers(iface)?;
    for existing in discover::on_interface(ifindex)? {
        if !owner::overlaps(existing.owner.hooks(), hooks) {
            continue;
        }
        if existing.alive {
            let o = &existing.owner;
            return Err(Error::AlreadyImpaired {
                iface: iface.to_owned(),
                hook: o.hook_name(),
                pid: o.pid,
                pinned: existing.pinned(),
                label: o.label_str().to_owned(),
            }
            .into());
        }
        tracing::warn!(
            pid = existing.owner.pid,
            "removing a leftover from a controller that died"
        );
        remove_leftover(iface, &existing)?;
    }
    Ok(())
}

/// Removes what a controller killed mid-step left on `iface` that no
/// owner record describes: a clsact qdisc inside a journal window, an fq
/// root with impair's handle that no live instance holds. Returns whether
/// anything was removed.
pub fn remove_crash_leftovers(iface: &str) -> Result<bool> {
    let ifindex = crate::sys::ifindex(iface)?;
    let ifbs = ifb::recover()?;
    let segmenters = super::segmenter::recover()?;
    let clsact = super::journal::recover()?.contains(&ifindex);
    let offloads = super::offload::recover()?.contains(&ifindex);
    let fq = remove_orphan_fq(iface, ifindex)?;
    Ok(clsact || offloads || fq || !ifbs.is_empty() || !segmenters.is_empty())
}

/// Removes a root qdisc impair installed ([`fq::ROOT_HANDLE`]) that no live
/// instance on the interface holds: what a controller killed between
/// installing fq and recording it, or one attached with tcx (whose program
/// dies with it), leaves. Returns whether there was one.
pub fn remove_orphan_fq(iface: &str, ifindex: u32) -> Result<bool> {
    let Ok((kind, handle)) = fq::root_qdisc(iface) else {
        return Ok(false);
    };
    if !fq::is_impairs_root(&kind, &handle) {
        return Ok(false);
    }
    if discover::on_interface(ifindex)?
        .iter()
        .any(|i| i.alive && i.egress())
    {
        return Ok(false);
    }
    tracing::warn!(iface, "removing the fq root a killed impair left");
    fq::restore(iface, &FqState::Installed, Duration::from_secs(2))
        .with_context(|| format!("removing the fq root a killed impair left on {iface}"))?;
    Ok(true)
}

/// Removes what a controller that died (or a pinned instance) left: its
/// netlink filters (egress and ingress), the clsact qdisc if it had created
/// it and nothing else uses it, and the fq root it installed. Then clears
/// its owner record, so the program, until the kernel frees it, is no one's.
/// tcx and XDP links die with their controller, so nothing of theirs remains.
pub fn remove_leftover(iface: &str, inst: &discover::Instance) -> Result<()> {
    // The owner record as it is now, not as discovered: removing another
    // instance of this interface just before (the other side of a pinned
    // two-way link) may have handed this one the clsact qdisc to remove.
    let current = inst.maps.owner().unwrap_or(inst.owner);
    let ifb = ifb::of_owner(&inst.owner);
    if inst.netlink() {
        let hooks = inst.owner.hooks();
        let ingress = if ifb.is_some() {
            Program::Redirect
        } else {
            Program::TcIngress
        };
        for (bit, program) in [
            (owner_flags::HOOK_TC_EGRESS, Program::TcEgress),
            (owner_flags::HOOK_TC_INGRESS, ingress),
        ] {
            if hooks & bit != 0 {
                clsact::remove_filter(iface, program)?;
            }
        }
        if current.flags & owner_flags::CREATED_CLSACT != 0 {
            owner::release_clsact(iface, inst.owner.ifindex, Some(&inst.owner))?;
        }
    }
    if current.flags & owner_flags::INSTALLED_FQ != 0
        && fq::root_qdisc(iface).is_ok_and(|(k, _)| k == "fq" || k == "mq")
    {
        // Its delays ended with its lease; whatever fq still holds leaves
        // within the longest delay fq accepts (its horizon).
        fq::restore(iface, &FqState::Installed, Duration::from_secs(2))
            .with_context(|| format!("removing the fq root qdisc a dead impair left on {iface}"))?;
    }
    // The offloads dead controllers changed (their journals; a pin changes none).
    super::offload::recover()?;
    // Nothing goes to the segmenter any more: the pair goes, with its filter.
    if let Some(name) = super::segmenter::of_owner(&inst.owner) {
        super::segmenter::stop(inst);
        super::segmenter::delete_named(&name)?;
        super::segmenter::forget(inst.owner.ifindex, inst.owner.pid);
    }
    // Nothing redirects to the ifb any more: the device goes, and its
    // qdiscs and filters with it.
    if let Some(name) = ifb {
        ifb::stop_redirect(inst);
        ifb::delete_named(&name)?;
        ifb::forget(inst.owner.ifindex, inst.owner.pid);
    }
    // Best effort: the filters are gone, which is what matters; the program
    // leaves the kernel once the last reference to it does.
    if let Err(e) = owner::retire_instance(inst) {
        tracing::debug!(iface, "clearing the leftover's owner record: {e:#}");
    }
    Ok(())
}

/// Removes pinned instances in this network namespace whose `--duration`
/// has passed (their data path already passes everything: the lease ended).
/// Every `impair` invocation that touches instances runs this first: the
/// "next invocation" that enforces a pinned run's deadline. Returns what was
/// removed, as `IFACE HOOK` strings.
pub fn sweep_expired_pins() -> Result<Vec<String>> {
    // Dead controllers' ifb devices and segmenters go too (each logs a warning).
    ifb::recover()?;
    super::segmenter::recover()?;
    let here = sys::netns_ino()?;
    let now = sys::monotonic_ns();
    let mut removed = Vec::new();
    for inst in discover::instances()? {
        if !inst.pinned() || inst.owner.netns_ino != here {
            continue;
        }
        let deadline = inst.maps.lease_deadline_ns()?;
        if deadline == impair_common::LEASE_FOREVER || deadline > now {
            continue;
        }
        let Some(iface) = sys::ifname(inst.owner.ifindex) else {
            continue;
        };
        remove_leftover(&iface, &inst)?;
        removed.push(format!("{iface} {}", inst.owner.hook_name()));
    }
    Ok(removed)
}
