//! Attaching through a clsact qdisc: a direct-action `bpf` filter at its
//! ingress or egress hook (kernels before 6.6, or on request). The one place
//! where impair adds and deletes the clsact qdisc, both through netlink.
//!
//! Unlike a tcx link, a filter stays when its controller dies: the lease
//! stops it impairing, and the next `impair` on the interface removes it
//! ([`remove_filter`]). That is also what `--pin` relies on: the kernel
//! keeps the filter, and through it the program and maps, with no process.
use anyhow::{anyhow, Context as _, Result};
use aya::programs::{
    tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions},
    SchedClassifier, TcAttachType,
};

use super::netlink;
use crate::engine::{error::chain_has_errno, hooks::Program};

/// Adds a clsact qdisc to `iface` if it has none. Returns whether impair
/// created it (someone's existing clsact is used and never removed).
pub(crate) fn ensure_qdisc(iface: &str) -> Result<bool> {
    match tc::qdisc_add_clsact(iface) {
        Ok(()) => Ok(true),
        Err(tc::TcError::AlreadyAttached) => Ok(false),
        Err(e) if chain_has_errno(&e, libc::EEXIST) => Ok(false),
        Err(e) => Err(anyhow!(e).context(format!("adding a clsact qdisc to {iface}"))),
    }
}

/// Attaches `prog` as a filter at `attach_type` of `iface`'s clsact qdisc
/// (which must exist: [`ensure_qdisc`]).
pub(crate) fn attach(
    prog: &mut SchedClassifier,
    iface: &str,
    attach_type: TcAttachType,
) -> Result<SchedClassifierLink> {
    let id = prog
        .attach_with_options(
            iface,
            attach_type,
            TcAttachOptions::Netlink(NlOptions::default()),
        )
        .with_context(|| format!("attaching a clsact filter at {iface} {}", dir(attach_type)))?;
    Ok(prog.take_link(id)?)
}

fn dir(t: TcAttachType) -> &'static str {
    match t {
        TcAttachType::Egress => "egress",
        _ => "ingress",
    }
}

/// Removes every filter named after `program` from `iface`'s clsact qdisc:
/// what a dead controller or a pinned instance left (found by name: no
/// process holds the link). A filter that is already gone is done, not an
/// error: another `impair` may have removed it a moment before.
pub(crate) fn remove_filter(iface: &str, program: Program) -> Result<()> {
    let attach_type = match program {
        Program::TcEgress => TcAttachType::Egress,
        Program::TcIngress | Program::Redirect | Program::Segmented => TcAttachType::Ingress,
        Program::Xdp => return Ok(()),
    };
    let name = program.name();
    match tc::qdisc_detach_program(iface, attach_type, name) {
        Ok(()) => Ok(()),
        Err(e) if filter_gone(&e) => {
            tracing::debug!(iface, name, "the leftover clsact filter was already gone");
            Ok(())
        }
        Err(e) => Err(anyhow!(e).context(format!(
            "removing the leftover clsact filter {name} from {iface}"
        ))),
    }
}

/// Whether `e` says there was no such filter: aya's `NotFound` when none
/// has the name, `ENOENT` when it went between finding and deleting it.
/// (`TcError` is transparent, so its io error is not in the source chain.)
fn filter_gone(e: &tc::TcError) -> bool {
    match e {
        tc::TcError::IoError(io) => {
            io.kind() == std::io::ErrorKind::NotFound || io.raw_os_error() == Some(libc::ENOENT)
        }
        tc::TcError::NetlinkError(n) => n.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// What [`delete_qdisc_if_unused`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    /// The qdisc is deleted (or was already gone).
    Deleted,
    /// Filters remain on it (someone else's, or another impair instance's).
    InUse,
}

/// Deletes the clsact qdisc from `iface` unless filters remain on it: never
/// remove what others use. A qdisc that is already gone counts as deleted.
pub(crate) fn delete_qdisc_if_unused(iface: &str, ifindex: u32) -> Result<Release> {
    if netlink::clsact_has_filters(ifindex)
        .with_context(|| format!("listing the clsact filters of {iface}"))?
    {
        tracing::debug!(iface, "the clsact qdisc still has filters");
        return Ok(Release::InUse);
    }
    match netlink::delete_clsact(ifindex) {
        Ok(()) => Ok(Release::Deleted),
        // EINVAL ("Invalid handle") is what the kernel says when no clsact
        // is there any more, ENOENT when the device never had one: either
        // way it is gone, unless a clsact is still there.
        Err(e) if !netlink::clsact_present(ifindex).unwrap_or(true) => {
            tracing::debug!(iface, "the clsact qdisc was already gone ({e})");
            Ok(Release::Deleted)
        }
        Err(e) => Err(anyhow!(e).context(format!("deleting the clsact qdisc of {iface}"))),
    }
}

/// After a crash inside a clsact window (`engine::journal`): deletes the
/// clsact qdisc of `ifindex` if it is there and no filter uses it. Returns
/// whether it deleted one.
pub(crate) fn remove_if_unused_after_crash(ifindex: u32) -> Result<bool> {
    if !netlink::clsact_present(ifindex).context("looking for a clsact qdisc")? {
        return Ok(false);
    }
    if netlink::clsact_has_filters(ifindex).context("listing clsact filters")? {
        return Ok(false);
    }
    tracing::warn!(ifindex, "removing the clsact qdisc a killed impair left");
    match netlink::delete_clsact(ifindex) {
        Ok(()) => Ok(true),
        Err(_) if !netlink::clsact_present(ifindex).unwrap_or(true) => Ok(false),
        Err(e) => Err(anyhow!(e).context("deleting the clsact qdisc a killed impair left")),
    }
}
