//! Finds running impair instances through the kernel alone: every loaded
//! program named `impair_egress` whose owner map names an interface. No state
//! files exist that could go stale or be left behind.
use anyhow::Result;
use aya::programs::loaded_programs;
use impair_common::{owner_flags, prog_names, Owner};

use crate::{maps::Maps, sys};

pub struct Instance {
    pub prog_id: u32,
    pub owner: Owner,
    /// The owning controller still runs (or the attachment is pinned).
    pub alive: bool,
    pub maps: Maps,
}

impl Instance {
    pub fn pinned(&self) -> bool {
        self.owner.flags & owner_flags::PINNED != 0
    }

    pub fn netlink(&self) -> bool {
        self.owner.flags & owner_flags::NETLINK != 0
    }
}

/// All instances visible to this process (any network namespace).
pub fn instances() -> Result<Vec<Instance>> {
    let mut out = Vec::new();
    for info in loaded_programs() {
        let Ok(info) = info else { continue };
        if info.name_as_str() != Some(prog_names::TC_EGRESS) {
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
            continue; // loaded but never attached (tests, or an attach in progress)
        }
        let alive = owner.flags & owner_flags::PINNED != 0
            || sys::process_alive(owner.pid, owner.pid_start_ticks);
        out.push(Instance { prog_id: info.id(), owner, alive, maps });
    }
    Ok(out)
}

/// The instance attached to interface `ifindex` of this thread's namespace.
pub fn on_interface(ifindex: u32) -> Result<Option<Instance>> {
    let ino = sys::netns_ino()?;
    Ok(instances()?.into_iter().find(|i| i.owner.ifindex == ifindex && i.owner.netns_ino == ino))
}
