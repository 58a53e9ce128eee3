//! Device offloads impair changes while it is attached at egress or tc
//! ingress, each restored exactly on detach and, after a crash, by the next
//! `impair attach` or `impair detach` in the namespace, or the agent's
//! cleanup (`leftover::remove_crash_leftovers`; a journal file per engine in `/run/impair`, like the
//! clsact window's, written before each change). What the rules need is
//! changed at attach, and by any later update that needs more: the owner's
//! (`Engine::update`) or another process's (`impair update`, through
//! [`apply_for_owner`]), all journaled in the owner's one file.
//!
//! **Transmit checksumming** off on the impaired device while a rule
//! corrupts in `detectable` mode. A `CHECKSUM_PARTIAL` skb's L4 check field
//! holds only the pseudo-header seed when the program runs; the data path
//! perturbs it, so a checksum completed later is wrong. But a receiver that
//! trusts the sender's checksum state (a veth peer, local delivery, many
//! virtual NICs) never completes or verifies it, and the damaged payload
//! reaches the application. With transmit checksumming off,
//! `validate_xmit_skb` completes the checksum in software
//! (`skb_checksum_help`, after the tc hook) and every receiver verifies it.
//! netem completes the checksum before it corrupts for the same reason.
//!
//! **One wire packet per skb** while a rule decides per packet (loss,
//! duplication, corruption, reordering, jitter, the MTU): the impaired
//! device's `gso_max_segs` goes to 1, so TCP connections opened from then on
//! build one-segment skbs (TCP always builds GSO skbs whatever the device's
//! TSO/GSO flags say, since Linux 4.17, and segments them in software after
//! the tc hook: turning TSO/GSO off would not split what impair sees); and
//! when the namespace forwards, GRO goes off on its other devices (never
//! `lo`), so received segments are not merged before they are forwarded.
//! Not split by these: connections already open at attach, UDP GSO
//! (`UDP_SEGMENT`), and super-packets a veth carries in from another
//! namespace (their sender built them); the instance's segmenter
//! (segmenter.rs) splits those, and `super_packets` counts what was decided
//! whole all the same.
//!
//! **One wire packet per received skb** at tc ingress (the ifb's path
//! included) while a rule decides per packet: tc ingress runs after GRO,
//! so GRO goes off on the impaired device itself (never `lo`). Not split by
//! this: super-packets a veth carries in from another namespace's sender
//! (it built them; the receiver's GRO never merged them), which
//! `super_packets` counts. XDP runs before GRO and needs nothing. A
//! receive-only instance keeps its own journal kind (`offloadrx`), so an
//! engine pair's uplink and downlink in one process keep a file each.
//!
//! The legacy `SIOCETHTOOL` ioctl (`ETHTOOL_[GS]TXCSUM`, `ETHTOOL_[GS]GRO`:
//! an 8-byte struct through `libc`) is used rather than the ethtool netlink
//! family: no crate in the tree speaks ethtool netlink, and the ioctl sets
//! exactly the feature groups `ethtool -K IFACE tx|gro` do (TSO drops while
//! tx checksumming is off and returns with it, as the kernel keeps the wanted
//! features). `gso_max_segs` is a link attribute: set with iproute2's `ip`,
//! as fq.rs uses `tc`.
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

/// One offload setting impair changed, and what it was.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    /// Transmit checksumming was on (`ETHTOOL_STXCSUM`).
    TxChecksum,
    /// `gso_max_segs` was this (`ip link set dev IFACE gso_max_segs N`).
    GsoMaxSegs(u32),
    /// Generic receive offload was on (`ETHTOOL_SGRO`).
    Gro,
}

impl Change {
    /// The journal line: `KIND IFINDEX [VALUE]`.
    fn line(&self, ifindex: u32) -> String {
        match self {
            Change::TxChecksum => format!("tx-checksum {ifindex}"),
            Change::GsoMaxSegs(old) => format!("gso_max_segs {ifindex} {old}"),
            Change::Gro => format!("gro {ifindex}"),
        }
    }

    fn parse(line: &str) -> Option<(u32, Change)> {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w[..] {
            ["tx-checksum", i] => Some((i.parse().ok()?, Change::TxChecksum)),
            ["gro", i] => Some((i.parse().ok()?, Change::Gro)),
            ["gso_max_segs", i, old] => {
                Some((i.parse().ok()?, Change::GsoMaxSegs(old.parse().ok()?)))
            }
            _ => None,
        }
    }

    /// Puts the setting back as it was on `iface`.
    fn undo(&self, iface: &str) -> Result<()> {
        match self {
            Change::TxChecksum => set_tx_checksum(iface, true),
            Change::GsoMaxSegs(old) => set_gso_max_segs(iface, *old),
            Change::Gro => set_gro(iface, true),
        }
    }

    /// What the attach message says; `impaired`: `iface` is the impaired
    /// device itself (its GRO goes off for received traffic, not forwarding).
    fn describe(&self, iface: &str, impaired: bool) -> String {
        match self {
            Change::TxChecksum => {
                format!("{iface}: tx-checksumming off (detectable corruption is completed in software)")
            }
            Change::GsoMaxSegs(old) => format!(
                "{iface}: gso_max_segs 1 (was {old}): TCP connections opened from now on send one wire packet per skb"
            ),
            Change::Gro if impaired => format!(
                "{iface}: generic-receive-offload off (received traffic is decided per wire packet)"
            ),
            Change::Gro => format!("{iface}: generic-receive-offload off (this namespace forwards)"),
        }
    }
}

/// The offloads of one instance: what was changed, each restored by
/// [`Offloads::restore`] (detach) or, if the owning process dies first, by
/// [`recover`] from its journal file. Every change is journaled before it
/// is made.
///
/// The journal file (`offload-NETNS-IFINDEX-PID-TICKS`, named by the owning
/// controller) exists for as long as the instance manages offloads (from
/// attach to detach; never with `--keep-offloads`), even with no change in
/// it: `impair update` from another process ([`apply_for_owner`]) finds it
/// through the owner record, adds the changes a new rule set needs to it and
/// makes them, and the owner's detach (or, after a crash, [`recover`])
/// restores them with its own. No file: the instance leaves offloads alone,
/// or it is detaching. Every reader and writer holds the instance's
/// `UpdateLock` (journal.rs), so the file is never written by two at once
/// and an update never adds to a journal the detach has already restored.
#[derive(Debug)]
pub(crate) struct Offloads {
    /// (interface index, what changed), in the order made.
    changes: Vec<(u32, Change)>,
    journal: PathBuf,
    /// The impaired device's index.
    ifindex: u32,
}

/// What to change at attach.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Wanted {
    /// Transmit checksumming off on the impaired device (detectable corruption).
    pub tx_checksum_off: bool,
    /// One wire packet per skb: the impaired device's `gso_max_segs` 1 (local
    /// TCP) and, when the namespace forwards, GRO off on its other devices.
    pub per_wire_packet: bool,
    /// One wire packet per received skb at tc ingress (which runs after
    /// GRO): GRO off on the impaired device itself (never `lo`).
    pub received_per_wire: bool,
}

/// The journal kind of an instance: `offload` for one that hooks egress
/// (or both directions), `offloadrx` for a receive-only one, so an egress
/// and a receive-only instance of one process on one device (an
/// `EnginePair`'s uplink and downlink) keep a file each.
pub(crate) fn journal_kind(egress: bool) -> &'static str {
    if egress {
        "offload"
    } else {
        "offloadrx"
    }
}

/// Every journal kind [`recover`] reads.
const KINDS: [&str; 2] = ["offload", "offloadrx"];

/// The journal file of kind `kind` ([`journal_kind`]) of the instance on
/// `ifindex` owned by (`pid`, `ticks`) in namespace `netns`.
fn journal_path(kind: &str, netns: u64, ifindex: u32, pid: u32, ticks: u64) -> PathBuf {
    PathBuf::from(DIR).join(format!("{kind}-{netns}-{ifindex}-{pid}-{ticks}"))
}

impl Offloads {
    /// Starts the journal of this process's instance on `ifindex` (in this
    /// namespace) and makes the `wanted` changes on `iface` and, for
    /// forwarding, the namespace's other devices; settings already as
    /// wanted are left alone. On an error, what was changed is undone and
    /// the journal removed. `kind`: [`journal_kind`]. The caller holds the
    /// instance's `UpdateLock`.
    pub(crate) fn apply(iface: &str, ifindex: u32, kind: &str, wanted: Wanted) -> Result<Self> {
        fs::create_dir_all(DIR).with_context(|| format!("creating {DIR}"))?;
        let pid = std::process::id();
        let ticks = sys::process_start_ticks(pid).unwrap_or(0);
        let mut me = Self {
            changes: Vec::new(),
            journal: journal_path(kind, super::journal::this_namespace()?, ifindex, pid, ticks),
            ifindex,
        };
        if let Err(e) = me
            .write_journal()
            .and_then(|()| me.apply_all(iface, ifindex, wanted))
        {
            if let Err(u) = me.restore_all() {
                tracing::warn!("undoing offload changes: {u:#}");
            }
            return Err(e);
        }
        Ok(me)
    }

    /// Makes the changes a new rule set wants beyond those made (by this
    /// process or, through the journal, another); returns what it changed,
    /// one line each. The caller holds the instance's `UpdateLock`.
    pub(crate) fn apply_more(
        &mut self,
        iface: &str,
        ifindex: u32,
        wanted: Wanted,
    ) -> Result<Vec<String>> {
        self.reload();
        let before = self.changes.len();
        self.apply_all(iface, ifindex, wanted)?;
        Ok(self.describe_from(before))
    }

    /// Takes the journal as the record of what was changed: another process
    /// (`impair update`) may have added to it. Kept as it is when the file
    /// cannot be read.
    fn reload(&mut self) {
        if let Ok(text) = fs::read_to_string(&self.journal) {
            self.changes = text.lines().filter_map(Change::parse).collect();
        }
    }

    fn apply_all(&mut self, iface: &str, ifindex: u32, wanted: Wanted) -> Result<()> {
        if wanted.tx_checksum_off && tx_checksum(iface)? {
            self.change(ifindex, Change::TxChecksum, || {
                set_tx_checksum(iface, false)
            })?;
        }
        if wanted.per_wire_packet {
            let old = gso_max_segs(iface)?;
            if old > 1 {
                self.change(ifindex, Change::GsoMaxSegs(old), || {
                    set_gso_max_segs(iface, 1)
                })?;
            }
            if forwarding() {
                for (other, index) in other_devices(iface)? {
                    // Devices without GRO (or without ethtool) are left alone.
                    if gro(&other).unwrap_or(false) {
                        self.change(index, Change::Gro, || set_gro(&other, false))?;
                    }
                }
            }
        }
        // At tc ingress received segments are merged before impair sees
        // them: GRO off on the device itself (a device without GRO, or
        // without ethtool, has nothing to merge).
        if wanted.received_per_wire && iface != "lo" && gro(iface).unwrap_or(false) {
            self.change(ifindex, Change::Gro, || set_gro(iface, false))?;
        }
        Ok(())
    }

    /// Journals `c` on `ifindex`, then makes it with `make`.
    fn change(&mut self, ifindex: u32, c: Change, make: impl FnOnce() -> Result<()>) -> Result<()> {
        self.changes.push((ifindex, c));
        self.write_journal()?;
        if let Err(e) = make() {
            self.changes.pop();
            let _ = self.write_journal();
            return Err(e);
        }
        Ok(())
    }

    /// Replaces the journal file whole (a new file renamed over it, so a
    /// process killed while writing leaves the old one or the new one).
    fn write_journal(&self) -> Result<()> {
        let text: String = self
            .changes
            .iter()
            .map(|(i, c)| c.line(*i) + "\n")
            .collect();
        let mut tmp = self.journal.clone().into_os_string();
        tmp.push(".new");
        fs::write(&tmp, text)
            .and_then(|()| fs::rename(&tmp, &self.journal))
            .with_context(|| format!("writing {}", self.journal.display()))
    }

    /// Puts every setting back, last change first, and removes the journal:
    /// this process's changes and those `impair update` added. The caller
    /// holds the instance's `UpdateLock`.
    pub(crate) fn restore(mut self) -> Result<()> {
        self.reload();
        self.restore_all()
    }

    fn restore_all(&mut self) -> Result<()> {
        let mut result = Ok(());
        while let Some((ifindex, c)) = self.changes.pop() {
            // A device that is gone took its settings with it.
            let Some(iface) = sys::ifname(ifindex) else {
                continue;
            };
            if let Err(e) = c.undo(&iface) {
                result = result.and(Err(e));
            }
        }
        if result.is_ok() {
            let _ = fs::remove_file(&self.journal);
        }
        result
    }

    /// What was changed, one line each, for the attach message.
    pub(crate) fn describe(&self) -> Vec<String> {
        self.describe_from(0)
    }

    fn describe_from(&self, first: usize) -> Vec<String> {
        self.changes[first.min(self.changes.len())..]
            .iter()
            .map(|(i, c)| {
                let iface = sys::ifname(*i).unwrap_or_else(|| format!("ifindex {i}"));
                c.describe(&iface, *i == self.ifindex)
            })
            .collect()
    }
}

/// `impair update` from another process: makes the changes `wanted` needs
/// beyond those already made on the instance `owner` describes (on `iface`),
/// journaled in the owner's file, so the owner's detach or, if it dies, the
/// next attach or detach in the namespace restores them with its own. An instance without a
/// journal file leaves offloads alone (`--keep-offloads`, a pin, an impair
/// from before updates changed offloads) or is detaching: nothing is
/// changed, and `None` says so. Else returns what was changed, one line
/// each. The caller holds the instance's `UpdateLock`.
pub(crate) fn apply_for_owner(
    owner: &impair_common::Owner,
    iface: &str,
    wanted: Wanted,
) -> Result<Option<Vec<String>>> {
    let egress = super::owner::hooks_of(owner).direction.egress();
    let journal = journal_path(
        journal_kind(egress),
        owner.netns_ino,
        owner.ifindex,
        owner.pid,
        owner.pid_start_ticks,
    );
    if !journal.exists() {
        return Ok(None);
    }
    let mut theirs = Offloads {
        changes: Vec::new(),
        journal,
        ifindex: owner.ifindex,
    };
    theirs.apply_more(iface, owner.ifindex, wanted).map(Some)
}

/// The device's `gso_max_segs` (`ip -d -j link show`).
fn gso_max_segs(iface: &str) -> Result<u32> {
    let out = ip(&["-d", "-j", "link", "show", "dev", iface])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parsing ip -j link")?;
    v[0]["gso_max_segs"]
        .as_u64()
        .map(|n| n as u32)
        .with_context(|| format!("{iface}: ip link shows no gso_max_segs"))
}

fn set_gso_max_segs(iface: &str, n: u32) -> Result<()> {
    ip(&["link", "set", "dev", iface, "gso_max_segs", &n.to_string()]).map(drop)
}

/// `ip ARGS` (iproute2, as fq.rs uses `tc`): its stdout, or its stderr as the error.
pub(crate) fn ip(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        anyhow::bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether this namespace forwards IPv4 or IPv6.
fn forwarding() -> bool {
    [
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/net/ipv6/conf/all/forwarding",
    ]
    .iter()
    .any(|p| fs::read_to_string(p).is_ok_and(|v| v.trim() == "1"))
}

/// This namespace's devices other than `iface` and `lo`, with their
/// indexes: this thread's namespace (`if_nameindex`, over netlink), not
/// the one /sys was mounted in (an engine attached from a thread that
/// entered a namespace sees the process's /sys), and never a device impair
/// created for an instance (a segmenter's ends are impair's to configure).
fn other_devices(iface: &str) -> Result<Vec<(String, u32)>> {
    let mut out = Vec::new();
    for (index, name) in sys::interfaces().context("listing this namespace's devices")? {
        if name == iface || name == "lo" || is_impairs(&name) {
            continue;
        }
        out.push((name, index));
    }
    Ok(out)
}

/// Whether `name` is a device impair creates per instance (ifb.rs
/// `device_name`: `imp<n><kind><n>` or `i<kind><base 36>`); only its
/// segmenter's ends matter here, whose GRO impair sets itself.
fn is_impairs(name: &str) -> bool {
    super::segmenter::is_segmenter_name(name)
}

/// `ETHTOOL_GGRO` / `ETHTOOL_SGRO`.
const ETHTOOL_GGRO: u32 = 0x2b;
const ETHTOOL_SGRO: u32 = 0x2c;

fn gro(iface: &str) -> Result<bool> {
    let v = ethtool_value(iface, ETHTOOL_GGRO, 0)
        .with_context(|| format!("reading generic-receive-offload of {iface}"))?;
    Ok(v != 0)
}

pub(crate) fn set_gro(iface: &str, on: bool) -> Result<()> {
    ethtool_value(iface, ETHTOOL_SGRO, u32::from(on))
        .with_context(|| format!("setting generic-receive-offload of {iface} {}", onoff(on)))?;
    Ok(())
}

/// Restores the offloads dead processes changed in this namespace (their
/// journal files); returns the interfaces (by index) restored. A change whose
/// interface is gone is dropped with its file.
pub(crate) fn recover() -> Result<Vec<u32>> {
    let mut restored = Vec::new();
    for e in KINDS
        .iter()
        .map(|k| super::journal::dead_entries(k))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
    {
        // Not while an `impair update` (which found the instance alive a
        // moment ago) is adding to the file.
        let _lock = super::journal::UpdateLock::take(e.ifindex)?;
        let Ok(content) = fs::read_to_string(&e.path) else {
            continue;
        };
        let changes: Vec<(u32, Change)> = content.lines().filter_map(Change::parse).collect();
        for (ifindex, c) in changes.iter().rev() {
            if let Some(iface) = sys::ifname(*ifindex) {
                c.undo(&iface)?;
                tracing::warn!(
                    "{iface}: restored {} a dead impair changed",
                    c.line(*ifindex)
                );
                restored.push(*ifindex);
            }
        }
        let _ = fs::remove_file(&e.path);
    }
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_lines_round_trip() {
        for c in [Change::TxChecksum, Change::GsoMaxSegs(65535), Change::Gro] {
            assert_eq!(Change::parse(&c.line(7)), Some((7, c.clone())), "{c:?}");
        }
        assert_eq!(Change::parse("gso_max_segs 7"), None);
        assert_eq!(Change::parse("tso 7"), None);
    }

    #[test]
    fn bad_interface_names_are_refused_before_any_ioctl() {
        assert!(ethtool_value("", ETHTOOL_GTXCSUM, 0).is_err());
        assert!(ethtool_value("a-name-far-too-long", ETHTOOL_GTXCSUM, 0).is_err());
    }
}
