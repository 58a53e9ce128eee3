//! Finds running impair instances through the kernel alone: every loaded
//! program named `impair_egress`, `impair_ingress` or `impair_xdp` whose owner
//! map names an interface. No state files exist that could go stale or be
//! left behind. One instance (one loaded object, one owner map) may have two
//! programs attached (`--direction both`); it is reported once.
//!
//! Each instance's owner record names the map ABI version of the impair
//! that attached it (`Owner::abi_version`). An instance of a version this
//! build does not know (a newer impair's) is read no further than the
//! fields every version keeps in place: it is never one of [`instances`],
//! and [`on_interface`] refuses its interface, so no command of this build
//! changes anything there (docs/map-abi.md, "Versions").
use std::os::fd::{AsFd as _, AsRawFd as _};

use anyhow::{bail, Context as _, Result};
use aya::{maps::MapInfo, programs::loaded_programs};
use impair_common::{map_names, owner_flags, prog_names, Owner, ABI_VERSIONS_KNOWN};

use crate::{engine::Error, maps::Maps, sys};

pub struct Instance {
    /// The first of the instance's programs found (any hook).
    pub prog_id: u32,
    pub owner: Owner,
    /// The owning controller still runs (or the attachment is pinned).
    pub alive: bool,
    pub maps: Maps,
}

impl Instance {
    /// A live controller still attaching: its record is written before its
    /// first change (for cleanup), its attach time only once it is attached.
    pub fn attaching(&self) -> bool {
        self.alive && self.owner.attached_unix_ns == 0
    }

    pub fn pinned(&self) -> bool {
        self.owner.flags & owner_flags::PINNED != 0
    }

    pub fn netlink(&self) -> bool {
        self.owner.flags & owner_flags::NETLINK != 0
    }

    /// Whether the instance impairs traffic leaving its interface.
    pub fn egress(&self) -> bool {
        self.owner.hooks() & owner_flags::HOOK_TC_EGRESS != 0
    }

    /// Whether the instance impairs traffic arriving on its interface.
    pub fn ingress(&self) -> bool {
        self.owner.hooks() & (owner_flags::HOOK_TC_INGRESS | owner_flags::HOOK_XDP) != 0
    }
}

/// The id of the owner map among a program's maps: one per loaded object, so
/// it tells two programs of one instance from two instances.
fn owner_map_id(info: &aya::programs::ProgramInfo) -> Option<u32> {
    let ids = info.map_ids().ok()??;
    ids.into_iter().find(|&id| {
        MapInfo::from_id(id)
            .ok()
            .and_then(|m| m.name_as_str().map(|n| n == map_names::OWNER))
            == Some(true)
    })
}

/// All instances visible to this process (any network namespace) whose
/// map ABI version this build knows. Instances of other versions are left
/// out ([`unknown_abi_here`] names them; [`on_interface`] refuses them).
pub fn instances() -> Result<Vec<Instance>> {
    let (known, unknown) = scan()?;
    for o in &unknown {
        tracing::debug!(
            ifindex = o.ifindex,
            pid = o.pid,
            abi = o.abi(),
            "an instance of an unknown map ABI version"
        );
    }
    Ok(known)
}

/// The instances in this network namespace of map ABI versions this build
/// does not know, each as the refusal a command on its interface gets.
pub fn unknown_abi_here() -> Result<Vec<Error>> {
    let ino = sys::netns_ino()?;
    Ok(scan()?
        .1
        .iter()
        .filter(|o| o.netns_ino == ino)
        .map(|o| {
            let iface = sys::ifname(o.ifindex).unwrap_or_else(|| format!("ifindex {}", o.ifindex));
            Error::unknown_abi(&iface, o)
        })
        .collect())
}

/// The instances of known map ABI versions, and the owner records (the
/// version-independent fields only) of the others.
fn scan() -> Result<(Vec<Instance>, Vec<Owner>)> {
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    let mut seen_owner_maps = Vec::new();
    for info in loaded_programs() {
        let Ok(info) = info else { continue };
        if !info
            .name_as_str()
            .is_some_and(|n| prog_names::ALL.contains(&n))
        {
            continue;
        }
        // Programs without the owner map are loaded but not attached (tests
        // bind it too, but never write an owner; see below).
        let Some(owner_map) = owner_map_id(&info) else {
            continue;
        };
        if seen_owner_maps.contains(&owner_map) {
            continue; // the other program of a `--direction both` instance
        }
        // The fields every version keeps in place, before anything else is
        // read with this build's layouts.
        let Ok(peek) = peek_owner(owner_map) else {
            continue;
        };
        if peek.pid == 0 {
            continue; // loaded but never attached (tests, an attach in progress) or detached (engine/owner.rs `retire`)
        }
        if !ABI_VERSIONS_KNOWN.contains(&peek.abi()) {
            seen_owner_maps.push(owner_map);
            unknown.push(peek);
            continue;
        }
        let maps = match Maps::of_program(&info) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(prog_id = info.id(), "skipping program: {e:#}");
                continue;
            }
        };
        let Ok(owner) = maps.owner() else { continue };
        if owner.pid == 0 {
            continue; // retired between the two reads
        }
        seen_owner_maps.push(owner_map);
        let alive = owner.flags & owner_flags::PINNED != 0
            || sys::process_alive(owner.pid, owner.pid_start_ticks);
        out.push(Instance {
            prog_id: info.id(),
            owner,
            alive,
            maps,
        });
    }
    Ok((out, unknown))
}

/// Size of the owner-record prefix every map ABI version keeps: `pid`,
/// `ifindex`, `flags`, `abi_version` and `netns_ino` (abi.rs pins their
/// offsets).
const OWNER_PREFIX: usize = 24;

/// Reads the version-independent fields of the owner record in map `id`,
/// whatever the size of the record in the version that wrote it; the rest
/// of the returned `Owner` is zero.
fn peek_owner(id: u32) -> Result<Owner> {
    let info = MapInfo::from_id(id).context("reading the owner map's info")?;
    let size = info.value_size() as usize;
    if size < OWNER_PREFIX {
        bail!("owner map {id} has {size}-byte values");
    }
    let fd = info.fd().context("opening the owner map")?;
    let key: u32 = 0;
    let mut value = vec![0u8; size];
    // `union bpf_attr` as BPF_MAP_LOOKUP_ELEM reads it.
    #[repr(C)]
    struct LookupAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let attr = LookupAttr {
        map_fd: fd.as_fd().as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: value.as_mut_ptr() as u64,
        flags: 0,
    };
    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    // SAFETY: `attr` is a valid BPF_MAP_LOOKUP_ELEM attribute for the
    // whole call: the key points at a u32 (the array's key size) and the
    // value at a buffer of the map's value size, both alive until it returns.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_ELEM,
            &attr as *const LookupAttr,
            std::mem::size_of::<LookupAttr>(),
        )
    };
    if r != 0 {
        bail!(
            "reading owner map {id}: {}",
            std::io::Error::last_os_error()
        );
    }
    let u32_at =
        |i: usize| u32::from_ne_bytes([value[i], value[i + 1], value[i + 2], value[i + 3]]);
    let mut ino = [0u8; 8];
    ino.copy_from_slice(&value[16..24]);
    Ok(Owner {
        pid: u32_at(0),
        ifindex: u32_at(4),
        flags: u32_at(8),
        abi_version: u32_at(12),
        netns_ino: u64::from_ne_bytes(ino),
        ..Owner::default()
    })
}

/// The instances attached to interface `ifindex` of this thread's namespace
/// (at most one per direction, unless leftovers of dead controllers remain).
///
/// Refuses ([`Error::UnknownAbi`]) when an instance of a map ABI version
/// this build does not know is attached there: whatever the caller meant
/// to do next (attach, detach, clean up leftovers) could misread it.
pub fn on_interface(ifindex: u32) -> Result<Vec<Instance>> {
    let ino = sys::netns_ino()?;
    let (known, unknown) = scan()?;
    if let Some(o) = unknown
        .iter()
        .find(|o| o.ifindex == ifindex && o.netns_ino == ino)
    {
        let iface = sys::ifname(ifindex).unwrap_or_else(|| format!("ifindex {ifindex}"));
        return Err(Error::unknown_abi(&iface, o).into());
    }
    Ok(known
        .into_iter()
        .filter(|i| i.owner.ifindex == ifindex && i.owner.netns_ino == ino)
        .collect())
}
