//! The ifb device that gives received traffic a queue: an ingress instance
//! whose rules hold or copy packets (delay, jitter, rate with its queue,
//! duplication, reordering) creates one, and its tc ingress program
//! (`impair_redirect`) sends every received packet to that device's egress,
//! where `impair_egress` runs with the instance's rules (and fq holds packets
//! until their departure time). ifb then hands each packet back to the
//! original device's receive path, without running its tc ingress again.
//!
//! Ownership: the device is created per instance with a name derived from
//! the impaired interface and the controller's pid ([`name_for`]),
//! exclusively (a device of that name that is already there is never taken
//! over), and deleted on detach. Before creating it the controller writes a
//! journal file in `/run/impair` (`ifb-NETNS-IFINDEX-PID-STARTTICKS`); the
//! file goes once the device is deleted. A file whose process died is a
//! controller killed with its ifb in place: the next impair command in that
//! namespace ([`recover`]) turns the dead instance's redirect off (if its
//! clsact filter outlived it) and deletes the device, which takes its qdiscs
//! and filters with it. Only a device of kind `ifb` with exactly the recorded
//! name is ever deleted.
use std::{fs, path::PathBuf};

use anyhow::{Context as _, Result};
use aya::maps::IterableMap as _;
use impair_common::{owner_flags, CONTROL_REDIRECT_IFINDEX};

use super::link::netlink;
use crate::{discover, sys};

const DIR: &str = "/run/impair";

/// The first release whose `bpf_redirect` marks a packet as redirected
/// (`__bpf_tx_skb` sets `skb->redirected`, Linux 6.4): ifb drops every
/// packet that lacks the mark, so before it the ifb path would black-hole
/// received traffic. Distribution kernels may carry the fix earlier; impair
/// goes by the release.
pub const REDIRECT_TO_IFB_SINCE: (u32, u32) = (6, 4);

/// This kernel's release (`6.12.117+deb12-cloud-amd64`).
pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Whether `release` can send received traffic through an ifb with
/// `bpf_redirect` ([`REDIRECT_TO_IFB_SINCE`]).
pub fn redirects_to_ifb(release: &str) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= REDIRECT_TO_IFB_SINCE,
        _ => false,
    }
}

/// The ifb's transmit queue length, which is also the limit of its default
/// qdisc (pfifo_fast) when no fq is needed: the kernel's 32 would drop
/// bursts that the real device received, and the ifb must never drop on
/// its own.
pub(crate) const TXQLEN: u32 = 10_000;

/// The ifb name of the instance impairing interface `ifindex`, controlled
/// by process `pid`: `imp<ifindex>i<pid>` in decimal (e.g. `imp3i4127`),
/// hexadecimal when that is too long for IFNAMSIZ, and base 36 of both
/// numbers together past that. Unique per (interface, controller) in a
/// namespace, which holds at most one ingress instance per interface.
pub fn name_for(ifindex: u32, pid: u32) -> String {
    device_name('i', ifindex, pid)
}

/// The name of a device of `kind` (a letter: `i` ifb, `s`/`r` the
/// segmenter's two ends) that the instance impairing `ifindex`, controlled
/// by `pid`, owns: `imp<ifindex><kind><pid>` in decimal, in hexadecimal when
/// that is too long for IFNAMSIZ, and `i<kind>` (`im` for an ifb) with base
/// 36 of both numbers past that.
pub(crate) fn device_name(kind: char, ifindex: u32, pid: u32) -> String {
    let max = libc::IFNAMSIZ - 1;
    let dec = format!("imp{ifindex}{kind}{pid}");
    if dec.len() <= max {
        return dec;
    }
    let hex = format!("imp{ifindex:x}{kind}{pid:x}");
    if hex.len() <= max {
        return hex;
    }
    // 32 + 32 bits in base 36: at most 13 digits.
    let mut n = (u64::from(ifindex) << 32) | u64::from(pid);
    let mut digits = Vec::new();
    while n > 0 {
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
    }
    digits.reverse();
    let prefix = if kind == 'i' { 'm' } else { kind };
    format!("i{prefix}{}", String::from_utf8_lossy(&digits))
}

/// An ifb device this process created, with its journal file.
#[derive(Debug)]
pub(crate) struct Ifb {
    pub name: String,
    pub ifindex: u32,
    journal: PathBuf,
}

fn journal_path(device_ifindex: u32, pid: u32, ticks: u64) -> Result<PathBuf> {
    Ok(PathBuf::from(DIR).join(format!(
        "ifb-{}-{device_ifindex}-{pid}-{ticks}",
        super::journal::this_namespace()?
    )))
}

impl Ifb {
    /// Creates the ifb of the instance impairing `device_ifindex` (up, with a
    /// [`TXQLEN`] queue), after writing its journal file.
    pub(crate) fn create(device_ifindex: u32) -> Result<Ifb> {
        let pid = std::process::id();
        let ticks = sys::process_start_ticks(pid).unwrap_or(0);
        let name = name_for(device_ifindex, pid);
        fs::create_dir_all(DIR).with_context(|| format!("creating {DIR}"))?;
        let journal = journal_path(device_ifindex, pid, ticks)?;
        fs::write(&journal, name.as_bytes())
            .with_context(|| format!("writing {}", journal.display()))?;
        if let Err(e) = netlink::create_ifb(&name, TXQLEN) {
            let _ = fs::remove_file(&journal);
            let exists = e_exists(&e);
            return Err(anyhow::Error::new(e).context(if exists {
                format!("creating the ifb device {name}: a device of that name already exists (not impair's to use)")
            } else {
                format!(
                    "creating the ifb device {name} (receive-side delay, rate, duplication and \
                     reordering need the kernel's ifb: CONFIG_IFB, module ifb)"
                )
            }));
        }
        let ifindex = match sys::ifindex(&name) {
            Ok(i) => i,
            Err(e) => {
                let _ = delete_named(&name);
                let _ = fs::remove_file(&journal);
                return Err(anyhow::anyhow!("{e}"))
                    .context(format!("finding the new ifb device {name}"));
            }
        };
        Ok(Ifb {
            name,
            ifindex,
            journal,
        })
    }

    /// Deletes the device (already gone counts as deleted) and its journal.
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

impl Drop for Ifb {
    /// An attach failing half-way deletes the device it created.
    fn drop(&mut self) {
        if self.ifindex == 0 {
            return;
        }
        if let Err(e) = self.delete_inner() {
            tracing::warn!("deleting the ifb device {}: {e:#}", self.name);
        }
        self.ifindex = 0;
    }
}

fn e_exists(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EEXIST)
}

/// Deletes interface `ifindex` if it is an ifb named `name`; a device that
/// is gone (or is something else now) is left alone.
fn delete_if_ours(ifindex: u32, name: &str) -> Result<()> {
    match netlink::link_kind(ifindex).context("looking up the ifb device")? {
        Some((kind, n)) if kind == "ifb" && n == name => {}
        _ => return Ok(()),
    }
    match netlink::delete_link(ifindex) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("deleting the ifb device {name}"))),
    }
}

/// Deletes the ifb named `name` in this namespace if there is one.
pub(crate) fn delete_named(name: &str) -> Result<bool> {
    let Ok(ifindex) = sys::ifindex(name) else {
        return Ok(false);
    };
    delete_if_ours(ifindex, name)?;
    Ok(true)
}

/// The ifb an instance's owner record says it has, if any.
pub fn of_owner(o: &impair_common::Owner) -> Option<String> {
    (o.flags & owner_flags::IFB != 0).then(|| name_for(o.ifindex, o.pid))
}

/// Removes the ifb devices of dead controllers in this namespace (journal
/// files whose process is gone): first the dead instance's redirect is
/// turned off (its clsact filter may outlive it, and a redirect to a device
/// that is gone would drop), then the device goes. Returns their names.
pub(crate) fn recover() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for e in super::journal::dead_entries("ifb")? {
        let (ifindex, pid) = (e.ifindex, e.pid);
        let name = name_for(ifindex, pid);
        tracing::warn!(ifb = name, "removing the ifb device a killed impair left");
        // A clsact filter that outlived its controller: the whole leftover
        // goes (redirect off, filter, clsact qdisc, then the ifb).
        if let Some(inst) = dead_instance(ifindex, pid) {
            stop_redirect(&inst);
            if let Some(iface) = sys::ifname(ifindex) {
                super::leftover::remove_leftover(&iface, &inst)?;
            }
        }
        if delete_named(&name)? {
            removed.push(name);
        }
        let _ = fs::remove_file(&e.path);
    }
    Ok(removed)
}

/// The dead controller `pid`'s instance with an ifb on `ifindex`, if its
/// programs are still attached (a clsact filter outlives its controller).
fn dead_instance(ifindex: u32, pid: u32) -> Option<discover::Instance> {
    discover::on_interface(ifindex)
        .ok()?
        .into_iter()
        .find(|i| i.owner.pid == pid && i.owner.flags & owner_flags::IFB != 0 && !i.alive)
}

/// Turns off a dead instance's redirect before its ifb goes (a redirect to
/// a device that is gone would drop).
pub(crate) fn stop_redirect(inst: &discover::Instance) {
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
            if let Err(e) = c.set(CONTROL_REDIRECT_IFINDEX, 0, 0) {
                tracing::warn!("turning off a dead controller's redirect: {e:#}");
            }
        }
        Err(e) => tracing::warn!("turning off a dead controller's redirect: {e:#}"),
    }
}

/// Deletes the journal file of controller `pid`'s ifb on `device_ifindex`
/// (after its device was removed by someone else: `impair detach`).
pub(crate) fn forget(device_ifindex: u32, pid: u32) {
    let Ok(entries) = fs::read_dir(DIR) else {
        return;
    };
    let prefix = match sys::netns_ino() {
        Ok(ns) => format!("ifb-{ns}-{device_ifindex}-{pid}-"),
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
    fn bpf_redirect_reaches_ifb_from_6_4() {
        assert!(!redirects_to_ifb("6.1.0-28-cloud-amd64"));
        assert!(!redirects_to_ifb("5.15.0"));
        assert!(redirects_to_ifb("6.4.0"));
        assert!(redirects_to_ifb("6.12.117+deb12-cloud-amd64"));
        assert!(redirects_to_ifb("7.0"));
        assert!(!redirects_to_ifb(""));
    }

    #[test]
    fn names_fit_ifnamsiz_and_differ_per_interface_and_controller() {
        assert_eq!(name_for(3, 4127), "imp3i4127");
        let mut seen = std::collections::HashSet::new();
        for ifindex in [1, 3, 99_999, 1 << 20, u32::MAX] {
            for pid in [1, 4127, 4_194_303, u32::MAX] {
                let n = name_for(ifindex, pid);
                assert!(n.len() < libc::IFNAMSIZ, "{n}");
                assert!(!n.contains('/') && !n.contains(' '), "{n}");
                assert!(seen.insert(n.clone()), "{n} twice");
            }
        }
    }
}
