//! Attaching the receive side at XDP (native in the driver, or generic on
//! the skb). The link is the controller's, like tcx: it goes when the
//! controller exits. Someone else's XDP program is never replaced.
use anyhow::{anyhow, Result};
use aya::programs::{xdp::XdpLink, Xdp};

use crate::engine::{
    error::{chain_has_errno, Error},
    hooks::XdpMode,
};

/// Attaches `prog` to `iface` in `mode`.
pub(crate) fn attach(prog: &mut Xdp, iface: &str, mode: XdpMode) -> Result<XdpLink> {
    let id = prog.attach(iface, mode.aya()).map_err(|e| {
        let busy = chain_has_errno(&e, libc::EBUSY) || chain_has_errno(&e, libc::EEXIST);
        let unsupported = chain_has_errno(&e, libc::EOPNOTSUPP);
        if busy {
            anyhow!(Error::XdpBusy {
                iface: iface.to_owned()
            })
        } else if unsupported && mode == XdpMode::Native {
            anyhow!(Error::NoNativeXdp {
                iface: iface.to_owned()
            })
        } else {
            anyhow!(e).context(format!("attaching XDP to {iface}"))
        }
    })?;
    Ok(prog.take_link(id)?)
}
