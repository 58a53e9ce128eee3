//! Finding the instance a command names: by interface and direction, in
//! this network namespace.
use anyhow::Result;
use impair::{discover, sys};

use crate::{args::Side, usage};

/// The one instance `iface` (and `side`) names, or a usage error that says
/// why there is none or which to choose.
pub(crate) fn one_instance(iface: &str, side: Option<Side>) -> Result<discover::Instance> {
    let mut found = instances_on(iface, side)?;
    if found.is_empty() {
        return Err(usage!(
            "{iface} is not impaired{}: no impair instance is attached to it in this network namespace",
            at_side(side)
        )
        .into());
    }
    if found.len() > 1 {
        let list: Vec<String> = found
            .iter()
            .map(|i| format!("{} (pid {})", i.owner.hook_name(), i.owner.pid))
            .collect();
        return Err(usage!(
            "{iface} has {} impair instances ({}): choose one with --direction egress or --direction ingress",
            found.len(),
            list.join(", ")
        )
        .into());
    }
    found
        .pop()
        .ok_or_else(|| usage!("{iface} is not impaired").into())
}

/// The instances on `iface` in direction `side` (every one when `None`).
pub(crate) fn instances_on(iface: &str, side: Option<Side>) -> Result<Vec<discover::Instance>> {
    let ifindex = sys::ifindex(iface)?;
    Ok(discover::on_interface(ifindex)?
        .into_iter()
        .filter(|i| on_side(i, side) && !i.attaching())
        .collect())
}

/// Every instance in this network namespace, with its interface name.
pub(crate) fn instances_here() -> Result<Vec<(String, discover::Instance)>> {
    let here = sys::netns_ino()?;
    Ok(discover::instances()?
        .into_iter()
        .filter(|i| i.owner.netns_ino == here && !i.attaching())
        .map(|i| {
            let name = sys::ifname(i.owner.ifindex)
                .unwrap_or_else(|| format!("ifindex {}", i.owner.ifindex));
            (name, i)
        })
        .collect())
}

/// Whether `i` impairs direction `side` (any direction when `None`).
pub(crate) fn on_side(i: &discover::Instance, side: Option<Side>) -> bool {
    match side {
        None => true,
        Some(Side::Egress) => i.egress(),
        Some(Side::Ingress) => i.ingress(),
    }
}

/// " at egress", " at ingress" or nothing, for messages.
pub(crate) fn at_side(side: Option<Side>) -> &'static str {
    match side {
        None => "",
        Some(Side::Egress) => " at egress",
        Some(Side::Ingress) => " at ingress",
    }
}

/// The two instances of one two-way link on `iface`: an egress and an
/// ingress instance of the same live controller (one `impair attach` of a
/// two-way profile), uplink first; `None` when `iface` has anything else.
pub(crate) fn link_pair(iface: &str) -> Result<Option<Vec<discover::Instance>>> {
    let mut found = instances_on(iface, None)?;
    let one_side = |i: &discover::Instance| i.egress() != i.ingress();
    let same_owner = found.len() == 2
        && found.iter().all(|i| i.alive && one_side(i))
        && found[0].owner.pid == found[1].owner.pid
        && found[0].owner.pid_start_ticks == found[1].owner.pid_start_ticks
        && found[0].egress() != found[1].egress();
    if !same_owner {
        return Ok(None);
    }
    found.sort_by_key(|i| !i.egress());
    Ok(Some(found))
}
