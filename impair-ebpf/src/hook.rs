//! Where a program runs: how it reaches the packet, and whether a queue
//! follows it. One generic pipeline (`pipeline::decide`) serves every hook;
//! the hook decides at compile time which impairments exist there.
use aya_ebpf::programs::{TcContext, XdpContext};

use crate::pkt::Packet;

/// What happens to the packet; each program turns it into its hook's action.
pub enum Verdict {
    Pass,
    Drop,
    /// Passes with a departure time in the future: fq holds it (tc egress
    /// only; `pipeline` turns it into `Pass` or `Replaced`).
    Held,
    /// An unowned clone took the packet's place (tc egress, a held packet of
    /// a local socket: `duplicate::release`); the original is consumed as a
    /// drop is, which the sender sees as sent.
    Replaced,
    /// Sent elsewhere with `bpf_redirect`, whose action this is (tc egress, a
    /// super-packet on its way to the segmenter: `segment`).
    Redirected(i32),
}

/// A hook: tc egress does every impairment; tc ingress and XDP see received
/// packets, which have no queue after the hook, so they do loss, ECN,
/// corruption, the MTU blackhole, blackholes and rate policing, never delay,
/// jitter, reordering, pacing or duplication.
pub trait Hook {
    type Pkt: Packet;
    /// tc egress: delay, jitter, reorder, EDT pacing and duplicates. Every
    /// other hook polices the rate instead and never holds or copies packets.
    const EGRESS: bool;
    fn packet(&self) -> &Self::Pkt;
    /// The skb the timing and duplicate helpers work on: `Some` exactly when
    /// [`Hook::EGRESS`].
    fn skb(&self) -> Option<&TcContext>;
    /// The skb at either tc hook (`socket` looks up a received packet's
    /// socket there); `None` at XDP.
    fn tc(&self) -> Option<&TcContext> {
        None
    }
}

/// tc egress (tcx link or clsact filter).
pub struct TcEgress<'a>(pub &'a TcContext);
/// tc ingress (tcx link or clsact filter).
pub struct TcIngress<'a>(pub &'a TcContext);
/// XDP (native or generic).
pub struct Xdp<'a>(pub &'a XdpContext);

impl Hook for TcEgress<'_> {
    type Pkt = TcContext;
    const EGRESS: bool = true;
    #[inline(always)]
    fn packet(&self) -> &TcContext {
        self.0
    }
    #[inline(always)]
    fn skb(&self) -> Option<&TcContext> {
        Some(self.0)
    }
    #[inline(always)]
    fn tc(&self) -> Option<&TcContext> {
        Some(self.0)
    }
}

impl Hook for TcIngress<'_> {
    type Pkt = TcContext;
    const EGRESS: bool = false;
    #[inline(always)]
    fn packet(&self) -> &TcContext {
        self.0
    }
    #[inline(always)]
    fn skb(&self) -> Option<&TcContext> {
        None
    }
    #[inline(always)]
    fn tc(&self) -> Option<&TcContext> {
        Some(self.0)
    }
}

impl Hook for Xdp<'_> {
    type Pkt = XdpContext;
    const EGRESS: bool = false;
    #[inline(always)]
    fn packet(&self) -> &XdpContext {
        self.0
    }
    #[inline(always)]
    fn skb(&self) -> Option<&TcContext> {
        None
    }
}
