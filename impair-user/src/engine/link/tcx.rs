//! Attaching through a tcx link (Linux 6.6+): a BPF link owned by the
//! controller's file descriptor, so the kernel removes it when the
//! controller exits for any reason, and no qdisc is added or changed.
use anyhow::{Context as _, Result};
use aya::{
    programs::{
        tc::{SchedClassifierLink, TcAttachOptions},
        LinkOrder, SchedClassifier, TcAttachType,
    },
    util::KernelVersion,
};

/// Whether this kernel has tcx.
pub(crate) fn supported() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

/// Attaches `prog` at `attach_type` of `iface` through a tcx link.
pub(crate) fn attach(
    prog: &mut SchedClassifier,
    iface: &str,
    attach_type: TcAttachType,
) -> Result<SchedClassifierLink> {
    let dir = match attach_type {
        TcAttachType::Egress => "egress",
        _ => "ingress",
    };
    let id = prog
        .attach_with_options(
            iface,
            attach_type,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .with_context(|| format!("attaching a tcx link at {iface} {dir}"))?;
    Ok(prog.take_link(id)?)
}
