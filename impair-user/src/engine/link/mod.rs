//! The ways of attaching a program, behind one interface (as cilium/ebpf's
//! `link/` package): [`Link::attach`] makes one, [`Link::detach`] removes
//! it. Each way lives in its own file:
//!
//! - `tcx.rs`: tc through a tcx link (Linux 6.6+), gone with its controller;
//! - `clsact.rs`: tc through a clsact qdisc filter (older kernels, `--pin`),
//!   which outlives its controller, and the clsact qdisc itself;
//! - `xdp.rs`: the receive side at XDP.
//!
//! A [`Link`] owns its kernel attachment: dropped without [`Link::detach`]
//! (an attach failing half-way), it detaches itself, so every link of an
//! attach undoes itself on failure. `netlink.rs` holds the rtnetlink
//! requests aya does not make.
pub(crate) mod clsact;
pub(crate) mod netlink;
pub(crate) mod tcx;
pub(crate) mod xdp;

use anyhow::{Context as _, Result};
use aya::{
    programs::{tc::SchedClassifierLink, xdp::XdpLink, Link as _, TcAttachType},
    Ebpf,
};

use super::{
    hooks::{AttachMode, Program, XdpMode},
    load::{tc_program_mut, xdp_program_mut},
};

/// How a tc program is attached (XDP has one way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    Tcx,
    Clsact,
    Xdp,
}

impl Via {
    /// The way `program` is attached in (resolved, not `Auto`) `mode`.
    pub(crate) fn of(program: Program, mode: AttachMode) -> Via {
        match (program, mode) {
            (Program::Xdp, _) => Via::Xdp,
            (_, AttachMode::Netlink) => Via::Clsact,
            _ => Via::Tcx,
        }
    }
}

enum Inner {
    Tc(SchedClassifierLink),
    Xdp(XdpLink),
}

/// One program attached to one interface.
pub(crate) struct Link {
    program: Program,
    via: Via,
    /// `None` once detached.
    inner: Option<Inner>,
}

impl Link {
    /// Attaches `program` of `ebpf` to `iface` the way `via` says (a clsact
    /// filter needs the clsact qdisc: [`clsact::ensure_qdisc`] first).
    pub(crate) fn attach(
        ebpf: &mut Ebpf,
        iface: &str,
        program: Program,
        via: Via,
        xdp_mode: XdpMode,
    ) -> Result<Link> {
        let attach_type = match program {
            Program::TcEgress => TcAttachType::Egress,
            _ => TcAttachType::Ingress,
        };
        let inner = match via {
            Via::Tcx => Inner::Tc(tcx::attach(
                tc_program_mut(ebpf, program)?,
                iface,
                attach_type,
            )?),
            Via::Clsact => Inner::Tc(clsact::attach(
                tc_program_mut(ebpf, program)?,
                iface,
                attach_type,
            )?),
            Via::Xdp => Inner::Xdp(xdp::attach(xdp_program_mut(ebpf)?, iface, xdp_mode)?),
        };
        Ok(Link {
            program,
            via,
            inner: Some(inner),
        })
    }

    pub(crate) fn via(&self) -> Via {
        self.via
    }

    pub(crate) fn program(&self) -> Program {
        self.program
    }

    /// Detaches; the error says which hook.
    pub(crate) fn detach(mut self) -> Result<()> {
        self.detach_inner()
    }

    fn detach_inner(&mut self) -> Result<()> {
        match self.inner.take() {
            Some(Inner::Tc(l)) => l.detach(),
            Some(Inner::Xdp(l)) => l.detach(),
            None => Ok(()),
        }
        .with_context(|| format!("detaching {}", self.program.hook_name()))
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Err(e) = self.detach_inner() {
            tracing::warn!("undoing a partial attach: {e:#}");
        }
    }
}

/// Detaches every link in `links` (emptying it); keeps going after an error
/// and returns the first.
pub(crate) fn detach_all(links: &mut Vec<Link>) -> Result<()> {
    let mut result = Ok(());
    for link in links.drain(..) {
        if let Err(e) = link.detach() {
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    result
}
