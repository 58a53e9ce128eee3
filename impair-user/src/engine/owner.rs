//! The owner record (`IMPAIR_OWNER`, one entry per instance): who attached
//! (pid and process start time), where (netns, ifindex, hooks), how (tcx or
//! netlink, XDP mode) and what it changed that whoever removes the instance
//! must undo: the clsact qdisc it created (`CREATED_CLSACT`), the fq root
//! it installed (`INSTALLED_FQ`) and the ifb device it created (`IFB`). `discover` finds instances through it, so
//! the record is also how an instance stops existing: [`retire`] clears the
//! pid once everything is detached, and a program the kernel has not freed
//! yet is no longer anyone's instance (nor a dead controller's leftover).
use anyhow::{Context as _, Result};
use aya::maps::{Array, IterableMap as _, Map, MapData};
use impair_common::{owner_flags, Owner};

use super::{
    hooks::{AttachMode, Direction, HookOptions, IngressHook, Program, XdpMode},
    link::clsact::{self, Release},
};
use crate::{discover, maps::Maps, sys};

/// What an attach records about itself.
pub(crate) struct Attached<'a> {
    pub ifindex: u32,
    /// The resolved mode (never `Auto`).
    pub mode: AttachMode,
    pub hooks: HookOptions,
    pub created_clsact: bool,
    pub installed_fq: bool,
    /// Received traffic goes through an ifb this controller creates
    /// (`ifb::name_for(ifindex, pid)`), recorded before it is created.
    pub ifb: bool,
    /// Super-packets go through a segmenter this controller creates
    /// (`segmenter::name_for(ifindex, pid)`), recorded before it is created.
    pub segmenter: bool,
    pub seed: u64,
    pub label: &'a str,
}

/// The owner record of an attach this process has begun and not finished:
/// no attach time yet, so `impair status` and `stats` do not show it as
/// attached, while cleanup still finds it if the process dies.
pub(crate) fn attaching(a: &Attached<'_>) -> Result<Owner> {
    let mut owner = record(a)?;
    owner.attached_unix_ns = 0;
    Ok(owner)
}

/// The owner record of an attach made by this process now.
pub(crate) fn record(a: &Attached<'_>) -> Result<Owner> {
    let programs = a.hooks.programs();
    let uses_tc = programs.iter().any(|p| !matches!(p, Program::Xdp));
    let xdp = a.hooks.direction.ingress() && a.hooks.ingress_hook == IngressHook::Xdp;
    let mut flags = a.hooks.owner_hooks();
    if a.mode == AttachMode::Netlink && uses_tc {
        flags |= owner_flags::NETLINK;
    }
    if a.created_clsact {
        flags |= owner_flags::CREATED_CLSACT;
    }
    if a.installed_fq {
        flags |= owner_flags::INSTALLED_FQ;
    }
    if a.ifb {
        flags |= owner_flags::IFB;
    }
    if a.segmenter {
        flags |= owner_flags::SEGMENTER;
    }
    flags |= match (xdp, a.hooks.xdp_mode) {
        (true, XdpMode::Generic) => owner_flags::XDP_GENERIC,
        (true, XdpMode::Native) => owner_flags::XDP_NATIVE,
        _ => 0,
    };
    let mut owner = Owner {
        pid: std::process::id(),
        ifindex: a.ifindex,
        flags,
        abi_version: impair_common::ABI_VERSION,
        netns_ino: sys::netns_ino()?,
        pid_start_ticks: sys::process_start_ticks(std::process::id()).unwrap_or(0),
        attached_unix_ns: sys::unix_ns(),
        seed: a.seed,
        ..Default::default()
    };
    owner.set_label(a.label);
    Ok(owner)
}

/// Sets `flags` in the owner record of `maps`.
pub(crate) fn add_flags(maps: &mut Maps, flags: u32) -> Result<()> {
    let mut o = maps.owner()?;
    o.flags |= flags;
    maps.owner.set(0, o, 0)?;
    Ok(())
}

/// Clears `flags` in the owner record of `maps`.
pub(crate) fn clear_flags(maps: &mut Maps, flags: u32) -> Result<()> {
    let mut o = maps.owner()?;
    o.flags &= !flags;
    maps.owner.set(0, o, 0)?;
    Ok(())
}

/// Marks the instance of `maps` as no one's: everything it attached is
/// detached. Its program may linger in the kernel a moment longer (a
/// deleted clsact filter releases it after an RCU grace period; the last
/// descriptor closes when the process exits), and `discover` must not take
/// that for a live instance or a dead controller's leftover.
pub(crate) fn retire(maps: &mut Maps) -> Result<()> {
    let mut o = maps.owner()?;
    o.pid = 0;
    maps.owner
        .set(0, o, 0)
        .context("clearing the owner record")?;
    Ok(())
}

/// [`retire`] for an instance found by `discover` (another process's).
pub(crate) fn retire_instance(inst: &discover::Instance) -> Result<()> {
    let id = inst.maps.owner.map().info()?.id();
    let mut owner: Array<MapData, Owner> = Array::try_from(Map::Array(MapData::from_id(id)?))?;
    let mut o = owner.get(&0, 0)?;
    o.pid = 0;
    owner.set(0, o, 0).context("clearing the owner record")?;
    Ok(())
}

/// Whether two sets of owner hook bits impair the same direction.
pub(crate) fn overlaps(a: u32, b: u32) -> bool {
    let dirs = |h: u32| {
        (if h & owner_flags::HOOK_TC_EGRESS != 0 {
            1
        } else {
            0
        }) | (if h & (owner_flags::HOOK_TC_INGRESS | owner_flags::HOOK_XDP) != 0 {
            2
        } else {
            0
        })
    };
    dirs(a) & dirs(b) != 0
}

/// The hooks an instance's owner map records.
pub fn hooks_of(o: &Owner) -> HookOptions {
    let h = o.hooks();
    let egress = h & owner_flags::HOOK_TC_EGRESS != 0;
    let xdp = h & owner_flags::HOOK_XDP != 0;
    let ingress = xdp || h & owner_flags::HOOK_TC_INGRESS != 0;
    HookOptions {
        direction: match (egress, ingress) {
            (true, true) => Direction::Both,
            (false, true) => Direction::Ingress,
            _ => Direction::Egress,
        },
        ingress_hook: if xdp {
            IngressHook::Xdp
        } else {
            IngressHook::Tc
        },
        xdp_mode: if o.flags & owner_flags::XDP_GENERIC != 0 {
            XdpMode::Generic
        } else if o.flags & owner_flags::XDP_NATIVE != 0 {
            XdpMode::Native
        } else {
            XdpMode::Auto
        },
        // Not recorded: it only chooses at attach whether a rate takes the
        // ifb. An instance's updates follow what it has (an ifb or not:
        // `Engine::update`), so one without an ifb polices a rate.
        police: false,
    }
}

/// Gives up the clsact qdisc impair created on `iface` (`me` is the owner
/// that created it): deleted when no filter uses it any more; when filters
/// remain and another impair instance on the interface attached through
/// netlink uses it (egress and ingress instances may share one clsact),
/// that instance inherits the duty (its owner map gets `CREATED_CLSACT`),
/// so the last impair instance to leave removes it. Filters of anyone else
/// keep it in place for good: impair never removes what others use.
pub(crate) fn release_clsact(iface: &str, ifindex: u32, me: Option<&Owner>) -> Result<()> {
    if clsact::delete_qdisc_if_unused(iface, ifindex)? == Release::Deleted {
        return Ok(());
    }
    let heir = discover::on_interface(ifindex)?.into_iter().find(|i| {
        i.netlink()
            && me.is_none_or(|m| {
                (i.owner.pid, i.owner.attached_unix_ns) != (m.pid, m.attached_unix_ns)
            })
    });
    if let Some(mut heir) = heir {
        let mut o = heir.owner;
        o.flags |= owner_flags::CREATED_CLSACT;
        heir.maps
            .owner
            .set(0, o, 0)
            .context("handing the clsact qdisc over to the other impair instance")?;
        tracing::debug!(
            iface,
            pid = o.pid,
            "the other impair instance on this interface will remove the clsact qdisc"
        );
    } else {
        tracing::warn!(
            iface,
            "leaving the clsact qdisc in place: other filters use it"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_and_ingress_instances_may_share_an_interface() {
        use owner_flags::*;
        assert!(!overlaps(HOOK_TC_EGRESS, HOOK_TC_INGRESS));
        assert!(!overlaps(HOOK_TC_EGRESS, HOOK_XDP));
        assert!(overlaps(HOOK_TC_INGRESS, HOOK_XDP));
        assert!(overlaps(HOOK_TC_EGRESS | HOOK_XDP, HOOK_TC_EGRESS));
    }
}
