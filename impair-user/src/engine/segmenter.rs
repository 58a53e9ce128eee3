//! The segmenter: a veth pair an egress instance creates so that a
//! super-packet its rules decide per packet is decided per wire packet.
//!
//! Why: the kernel splits a GSO skb into wire packets only after the tc hook
//! (`validate_xmit_skb`), so `impair_egress` sees it whole. `gso_max_segs` 1
//! on the impaired device (offload.rs) makes a local TCP sender build one
//! segment per skb, but not UDP GSO (`UDP_SEGMENT`), TCP connections opened
//! before the attach, or what a veth carries in whole from a sender in
//! another namespace (a container behind a bridge, a lab's client). Those
//! go round through the segmenter: `impair_egress` redirects the
//! super-packet to the segmenter's first end (`imp<ifindex>s<pid>`), whose
//! `gso_max_segs` is 1, so the kernel segments it on the way out; each wire
//! packet arrives at the peer (`imp<ifindex>r<pid>`), whose tc ingress
//! (`impair_segmented`) sends it back to the device's egress, where
//! `impair_egress` decides it alone (impair-ebpf/src/segment.rs). The cost
//! falls on super-packets alone: one more trip through the stack per wire
//! packet (docs/architecture.md, "Wire packets and super-packets").
//!
//! The pair carries no addresses: IPv6 is off on both ends before they go
//! up, GRO is off on the peer (a veth with GRO on merges what it receives),
//! and `impair_segmented` drops whatever impair did not send there.
//!
//! Ownership is the ifb's (ifb.rs): created per instance with names derived
//! from the interface and the controller's pid, never taken over, journaled
//! in `/run/impair` (`seg-NETNS-IFINDEX-PID-TICKS`) before it is created,
//! deleted on detach, and by the next impair command in the namespace after
//! a crash ([`recover`]). Deleting one end of a veth deletes both.
use std::{fs, path::PathBuf};

use anyhow::{Context as _, Result};
use aya::maps::IterableMap as _;
use impair_common::{owner_flags, CONTROL_SEGMENTER};

use super::{ifb::device_name, link::netlink};
use crate::{discover, sys};

const DIR: &str = "/run/impair";

/// The segmenting end of the instance impairing `ifindex`, controlled by `pid`.
pub fn name_for(ifindex: u32, pid: u32) -> String {
    device_name('s', ifindex, pid)
}

/// The returning end (the peer whose tc ingress runs `impair_segmented`).
pub fn peer_name_for(ifindex: u32, pid: u32) -> String {
    device_name('r', ifindex, pid)
}

/// Whether `name` could be one end of a segmenter ([`name_for`],
/// [`peer_name_for`]): `imp<digits or hex>s|r<digits or hex>`, or `is`/`ir`
/// and base 36.
pub fn is_segmenter_name(name: &str) -> bool {
    let alnum = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    if let Some(rest) = name.strip_prefix("imp") {
        return rest
            .char_indices()
            .filter(|&(_, c)| c == 's' || c == 'r')
            .any(|(i, _)| {
                let (a, b) = (&rest[..i], &rest[i + 1..]);
                !a.is_empty()
                    && a.bytes().all(|c| c.is_ascii_hexdigit())
                    && !b.is_empty()
                    && b.bytes().all(|c| c.is_ascii_hexdigit())
            });
    }
    (name.starts_with("is") || name.starts_with("ir")) && alnum(&name[2..])
}

/// The segmenter an instance's owner record says it has, if any.
pub fn of_owner(o: &impair_common::Owner) -> Option<String> {
    (o.flags & owner_flags::SEGMENTER != 0).then(|| name_for(o.ifindex, o.pid))
}

/// `CONTROL[CONTROL_SEGMENTER]` for device `device` and segmenter `segmenter`.
pub fn control_value(device: u32, segmenter: u32) -> u64 {
    (u64::from(device) << 32) | u64::from(segmenter)
}

/// A segmenter this process created, with its journal file.
#[derive(Debug)]
pub(crate) struct Segmenter {
    pub name: String,
    pub peer: String,
    pub ifindex: u32,
    journal: PathBuf,
}

fn journal_path(device_ifindex: u32, pid: u32, ticks: u64) -> Result<PathBuf> {
    Ok(PathBuf::from(DIR).join(format!(
        "seg-{}-{device_ifindex}-{pid}-{ticks}",
        super::journal::this_namespace()?
    )))
}

/// `ip ARGS` (offload.rs's), its output unused.
fn ip(args: &[&str]) -> Result<()> {
    super::offload::ip(args).map(drop)
}

/// IPv6 off on `iface` (no link-local address, no neighbour discovery): a
/// kernel without IPv6 has nothing to turn off.
fn ipv6_off(iface: &str) {
    let _ = fs::write(format!("/proc/sys/net/ipv6/conf/{iface}/disable_ipv6"), "1");
}

impl Segmenter {
    /// Creates the segmenter of the instance impairing `device` (index
    /// `device_ifindex`, MTU `mtu`), after writing its journal file: both
    /// ends up, with the device's MTU (each wire packet fits), IPv6 off,
    /// `gso_max_segs` 1 on the segmenting end and GRO off on the peer.
    pub(crate) fn create(device_ifindex: u32, mtu: u32) -> Result<Segmenter> {
        let pid = std::process::id();
        let ticks = sys::process_start_ticks(pid).unwrap_or(0);
        let name = name_for(device_ifindex, pid);
        let peer = peer_name_for(device_ifindex, pid);
        fs::create_dir_all(DIR).with_context(|| format!("creating {DIR}"))?;
        let journal = journal_path(device_ifindex, pid, ticks)?;
        fs::write(&journal, name.as_bytes())
            .with_context(|| format!("writing {}", journal.display()))?;
        let mtu = mtu.to_string();
        if let Err(e) = ip(&[
            "link", "add", &name, "mtu", &mtu, "type", "veth", "peer", "name", &peer, "mtu", &mtu,
        ]) {
            let _ = fs::remove_file(&journal);
            return Err(e.context(format!(
                "creating the segmenter (veth {name} and {peer}; per-wire-packet decisions for \
                 super-packets need the kernel's veth: CONFIG_VETH, or --keep-offloads)"
            )));
        }
        let mut seg = Segmenter {
            name,
            peer,
            ifindex: 0,
            journal,
        };
        // From here on, dropping `seg` deletes the pair.
        seg.ifindex = sys::ifindex(&seg.name)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("finding the new segmenter {}", seg.name))?;
        ipv6_off(&seg.name);
        ipv6_off(&seg.peer);
        ip(&["link", "set", "dev", &seg.name, "gso_max_segs", "1"])?;
        super::offload::set_gro(&seg.peer, false)?;
        ip(&["link", "set", "dev", &seg.peer, "up"])?;
        ip(&["link", "set", "dev", &seg.name, "up"])?;
        Ok(seg)
    }

    /// Deletes the pair (already gone counts as deleted) and its journal.
    pub(crate) fn delete(mut self) -> Result<()> {
        let r = self.delete_inner();
        self.ifindex = 0;
        r
    }

    fn delete_inner(&mut self) -> Result<()> {
        if self.ifindex != 0 {
            delete_if_ours(self.ifindex, &self.name)?;
        }
        let _ = fs::remove_file(&self.journal);
        Ok(())
    }
}

impl Drop for Segmenter {
    /// An attach failing half-way deletes the pair it created.
    fn drop(&mut self) {
        if self.ifindex == 0 {
            return;
        }
        if let Err(e) = self.delete_inner() {
            tracing::warn!("deleting the segmenter {}: {e:#}", self.name);
        }
        self.ifindex = 0;
    }
}

/// Deletes interface `ifindex` if it is a veth named `name`; a device that
/// is gone (or is something else now) is left alone.
fn delete_if_ours(ifindex: u32, name: &str) -> Result<()> {
    match netlink::link_kind(ifindex).context("looking up the segmenter")? {
        Some((kind, n)) if kind == "veth" && n == name => {}
        _ => return Ok(()),
    }
    match netlink::delete_link(ifindex) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("deleting the segmenter {name}"))),
    }
}

/// Deletes the segmenter named `name` in this namespace if there is one.
pub(crate) fn delete_named(name: &str) -> Result<bool> {
    let Ok(ifindex) = sys::ifindex(name) else {
        return Ok(false);
    };
    delete_if_ours(ifindex, name)?;
    Ok(true)
}

/// Turns a dead or pinned instance's segmenter off before its pair goes (a
/// redirect to a device that is gone would drop).
pub(crate) fn stop(inst: &discover::Instance) {
    let Ok(id) = inst.maps.control.map().info().map(|i| i.id()) else {
        return;
    };
    let control = aya::maps::MapData::from_id(id)
        .map_err(anyhow::Error::new)
        .and_then(|m| {
            aya::maps::Array::<_, u64>::try_from(aya::maps::Map::Array(m))
                .map_err(anyhow::Error::new)
        });
    match control {
        Ok(mut c) => {
            if let Err(e) = c.set(CONTROL_SEGMENTER, 0, 0) {
                tracing::warn!("turning off a dead controller's segmenter: {e:#}");
            }
        }
        Err(e) => tracing::warn!("turning off a dead controller's segmenter: {e:#}"),
    }
}

/// Removes the segmenters of dead controllers in this namespace (journal
/// files whose process is gone): a dead instance whose clsact filter
/// outlived it stops redirecting first. Returns their names.
pub(crate) fn recover() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for e in super::journal::dead_entries("seg")? {
        let name = name_for(e.ifindex, e.pid);
        tracing::warn!(
            segmenter = name,
            "removing the segmenter a killed impair left"
        );
        if let Some(inst) = discover::on_interface(e.ifindex).ok().and_then(|all| {
            all.into_iter().find(|i| {
                i.owner.pid == e.pid && i.owner.flags & owner_flags::SEGMENTER != 0 && !i.alive
            })
        }) {
            stop(&inst);
        }
        if delete_named(&name)? {
            removed.push(name);
        }
        let _ = fs::remove_file(&e.path);
    }
    Ok(removed)
}

/// Deletes the journal file of controller `pid`'s segmenter on
/// `device_ifindex` (after its pair was removed by someone else).
pub(crate) fn forget(device_ifindex: u32, pid: u32) {
    let Ok(entries) = fs::read_dir(DIR) else {
        return;
    };
    let prefix = match sys::netns_ino() {
        Ok(ns) => format!("seg-{ns}-{device_ifindex}-{pid}-"),
        Err(_) => return,
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_ifnamsiz_and_differ_from_the_ifb_and_each_other() {
        assert_eq!(name_for(3, 4127), "imp3s4127");
        assert_eq!(peer_name_for(3, 4127), "imp3r4127");
        let mut seen = std::collections::HashSet::new();
        for ifindex in [1, 3, 99_999, 1 << 20, u32::MAX] {
            for pid in [1, 4127, 4_194_303, u32::MAX] {
                for n in [
                    name_for(ifindex, pid),
                    peer_name_for(ifindex, pid),
                    super::super::ifb::name_for(ifindex, pid),
                ] {
                    assert!(n.len() < libc::IFNAMSIZ, "{n}");
                    assert!(seen.insert(n.clone()), "{n} twice");
                }
            }
        }
    }

    #[test]
    fn segmenter_names_are_recognised_and_others_are_not() {
        for (ifindex, pid) in [(3, 4127), (1 << 20, u32::MAX), (u32::MAX, u32::MAX)] {
            assert!(is_segmenter_name(&name_for(ifindex, pid)));
            assert!(is_segmenter_name(&peer_name_for(ifindex, pid)));
            assert!(!is_segmenter_name(&super::super::ifb::name_for(
                ifindex, pid
            )));
        }
        for other in ["eth0", "r1", "imp", "veth12ab", "lo", "imp3i4127"] {
            assert!(!is_segmenter_name(other), "{other}");
        }
    }

    #[test]
    fn the_control_word_holds_both_indexes() {
        let v = control_value(7, 42);
        assert_eq!((v >> 32) as u32, 7);
        assert_eq!(v as u32, 42);
    }
}
