//! Finds running impair instances through the kernel alone: every loaded
//! program named `impair_egress`, `impair_ingress` or `impair_xdp` whose owner
//! map names an interface. No state files exist that could go stale or be
//! left behind. One instance (one loaded object, one owner map) may have two
//! programs attached (`--direction both`); it is reported once.
use anyhow::Result;
use aya::{maps::MapInfo, programs::loaded_programs};
use impair_common::{map_names, owner_flags, prog_names, Owner};

use crate::{maps::Maps, sys};

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

/// All instances visible to this process (any network namespace).
pub fn instances() -> Result<Vec<Instance>> {
    let mut out = Vec::new();
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
        let maps = match Maps::of_program(&info) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(prog_id = info.id(), "skipping program: {e:#}");
                continue;
            }
        };
        let Ok(owner) = maps.owner() else { continue };
        if owner.pid == 0 {
            continue; // loaded but never attached (tests, an attach in progress) or detached (engine/owner.rs `retire`)
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
    Ok(out)
}

/// The instances attached to interface `ifindex` of this thread's namespace
/// (at most one per direction, unless leftovers of dead controllers remain).
pub fn on_interface(ifindex: u32) -> Result<Vec<Instance>> {
    let ino = sys::netns_ino()?;
    Ok(instances()?
        .into_iter()
        .filter(|i| i.owner.ifindex == ifindex && i.owner.netns_ino == ino)
        .collect())
}
