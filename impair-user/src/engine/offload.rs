//! Device offloads impair turns off while it is attached, each restored
//! exactly on detach and, after a crash, by the next impair command in the
//! namespace (journal files in `/run/impair`, like the clsact window's).
//!
//! Today one offload: **transmit checksumming** on the impaired device while
//! a rule corrupts in `detectable` mode at egress. A `CHECKSUM_PARTIAL` skb's
//! L4 check field holds only the pseudo-header seed when the program runs;
//! the data path perturbs it, so a checksum completed later over the segment
//! is wrong. But a receiver that trusts the sender's checksum state (a veth
//! peer, local delivery, many virtual NICs) never completes or verifies it,
//! and the damaged payload reaches the application. With transmit
//! checksumming off, `validate_xmit_skb` completes the checksum in software
//! (`skb_checksum_help`, after the tc hook) and the skb leaves as
//! `CHECKSUM_NONE`: every receiver verifies it and drops it
//! (`UdpInCsumErrors`/`TcpInCsumErrors`). netem completes the checksum
//! before it corrupts for the same reason.
//!
//! Why not TSO/GSO (per-wire-packet decisions): TCP builds GSO skbs whatever
//! the device's TSO/GSO flags say (it always uses GSO since Linux 4.17 and
//! segments in software after the tc hook), so turning them off does not
//! split what impair sees; see docs/impairments.md, "Super-packets".
//!
//! The legacy `SIOCETHTOOL` ioctl (`ETHTOOL_GTXCSUM`/`ETHTOOL_STXCSUM`, two
//! 8-byte structs through `libc`) is used rather than the ethtool netlink
//! family: no crate in the tree speaks ethtool netlink, and the ioctl sets
//! exactly the feature group `ethtool -K IFACE tx` does (`NETIF_F_CSUM_MASK`;
//! TSO drops while it is off and returns with it, as the kernel keeps the
//! wanted features).
use std::{fs, os::fd::AsRawFd as _, path::PathBuf};

use anyhow::{Context as _, Result};

use crate::sys;

const DIR: &str = "/run/impair";
/// `ETHTOOL_GTXCSUM` / `ETHTOOL_STXCSUM` (include/uapi/linux/ethtool.h).
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with its `ifr_data` member.
#[repr(C)]
struct IfreqData {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// One `SIOCETHTOOL` call of `cmd` on `iface` with `data`; returns the data
/// the kernel wrote back.
fn ethtool_value(iface: &str, cmd: u32, data: u32) -> std::io::Result<u32> {
    if iface.is_empty() || iface.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket this function just opened and nothing else owns.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut value = EthtoolValue { cmd, data };
    let mut req = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: (&mut value as *mut EthtoolValue).cast(),
        _pad: [0; 16],
    };
    for (d, s) in req.name.iter_mut().zip(iface.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCETHTOOL reads the ifreq (a NUL-terminated name, the name
    // is shorter than IFNAMSIZ) and reads/writes the 8-byte ethtool_value it
    // points to; both live across the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(value.data)
}

/// Whether `iface` checksums in hardware (or, for virtual devices, leaves
/// the checksum partial).
pub(crate) fn tx_checksum(iface: &str) -> Result<bool> {
    let v = ethtool_value(iface, ETHTOOL_GTXCSUM, 0)
        .with_context(|| format!("reading tx-checksumming of {iface}"))?;
    Ok(v != 0)
}

fn set_tx_checksum(iface: &str, on: bool) -> Result<()> {
    ethtool_value(iface, ETHTOOL_STXCSUM, u32::from(on))
        .with_context(|| format!("setting tx-checksumming of {iface} {}", onoff(on)))?;
    Ok(())
}

fn onoff(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

/// Transmit checksumming impair turned off on an interface; restored by
/// [`TxChecksumOff::restore`] (detach) or, if this process dies first, by
/// [`recover`] from its journal file.
#[derive(Debug)]
pub(crate) struct TxChecksumOff {
    iface: String,
    journal: PathBuf,
}

impl TxChecksumOff {
    /// Turns transmit checksumming off on `iface` (index `ifindex`) if it is
    /// on; `None` when it was already off (nothing to restore). The journal
    /// file is written before the change, so a crash at any point leaves a
    /// record the next impair command restores from.
    pub(crate) fn ensure_off(iface: &str, ifindex: u32) -> Result<Option<Self>> {
        if !tx_checksum(iface)? {
            return Ok(None);
        }
        fs::create_dir_all(DIR).with_context(|| format!("creating {DIR}"))?;
        let pid = std::process::id();
        let ticks = sys::process_start_ticks(pid).unwrap_or(0);
        let journal = PathBuf::from(DIR).join(format!(
            "offload-{}-{ifindex}-{pid}-{ticks}",
            sys::netns_ino()?
        ));
        fs::write(&journal, b"tx-checksum on\n")
            .with_context(|| format!("writing {}", journal.display()))?;
        let me = Self {
            iface: iface.to_owned(),
            journal,
        };
        if let Err(e) = set_tx_checksum(iface, false) {
            let _ = fs::remove_file(&me.journal);
            return Err(e);
        }
        tracing::info!("{iface}: tx-checksumming off while detectable corruption is attached");
        Ok(Some(me))
    }

    /// Turns transmit checksumming back on and removes the journal file.
    pub(crate) fn restore(self) -> Result<()> {
        set_tx_checksum(&self.iface, true)?;
        let _ = fs::remove_file(&self.journal);
        Ok(())
    }

    /// What was changed, for the attach message.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{}: tx-checksumming turned off while attached (detectable corruption)",
            self.iface
        )
    }
}

/// Restores the offloads dead processes turned off in this namespace (their
/// journal files); returns the interfaces (by index) restored. A journal
/// file whose interface is gone is removed.
pub(crate) fn recover() -> Result<Vec<u32>> {
    let Ok(entries) = fs::read_dir(DIR) else {
        return Ok(Vec::new());
    };
    let here = sys::netns_ino()?;
    let mut restored = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(j) = Journal::parse(&name) else {
            continue;
        };
        if j.netns != here || sys::process_alive(j.pid, j.ticks) {
            continue;
        }
        let content = fs::read_to_string(e.path()).unwrap_or_default();
        if let Some(iface) = sys::ifname(j.ifindex) {
            if content.trim() == "tx-checksum on" {
                set_tx_checksum(&iface, true)?;
                tracing::warn!("{iface}: restored tx-checksumming a dead impair turned off");
                restored.push(j.ifindex);
            }
        }
        let _ = fs::remove_file(e.path());
    }
    Ok(restored)
}

/// A journal file's name: `offload-NETNS-IFINDEX-PID-TICKS`.
#[derive(Debug, PartialEq, Eq)]
struct Journal {
    netns: u64,
    ifindex: u32,
    pid: u32,
    ticks: u64,
}

impl Journal {
    fn parse(name: &str) -> Option<Self> {
        let parts: Vec<&str> = name.split('-').collect();
        let ["offload", ns, ifindex, pid, ticks] = parts[..] else {
            return None;
        };
        Some(Self {
            netns: ns.parse().ok()?,
            ifindex: ifindex.parse().ok()?,
            pid: pid.parse().ok()?,
            ticks: ticks.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_names_parse_and_others_are_ignored() {
        assert_eq!(
            Journal::parse("offload-4026531840-7-1234-98765"),
            Some(Journal {
                netns: 4026531840,
                ifindex: 7,
                pid: 1234,
                ticks: 98765
            })
        );
        assert_eq!(Journal::parse("clsact-4026531840-7-1234-98765"), None);
        assert_eq!(Journal::parse("offload-x-7-1234-98765"), None);
        assert_eq!(Journal::parse("update-4026531840-7.lock"), None);
    }

    #[test]
    fn bad_interface_names_are_refused_before_any_ioctl() {
        assert!(ethtool_value("", ETHTOOL_GTXCSUM, 0).is_err());
        assert!(ethtool_value("a-name-far-too-long", ETHTOOL_GTXCSUM, 0).is_err());
    }
}
