//! impair's data path. Each program is a thin entry that runs the shared
//! pipeline for its hook (`pipeline::decide`, which runs `try_decide`); any
//! error there passes the packet and is counted by cause (fail open).
//!
//! Three programs share one object and its maps: `impair_egress` does every
//! impairment; `impair_ingress` and `impair_xdp` see received packets, where
//! nothing can hold a packet back, so they do loss, ECN, corruption, MTU,
//! blackhole and rate policing, never delay, jitter, reordering, pacing or
//! duplication (see `hook`). A fourth, `impair_redirect` (`redirect`), sends
//! received packets to an ifb device whose egress runs `impair_egress`: how
//! received traffic gets every impairment. A fifth, `impair_segmented`
//! (`segment`), brings the wire packets of a super-packet split by the
//! instance's segmenter veth back to the device's egress.
//!
//! Read top to bottom: `pipeline` (lease, active rule set) → `classify`
//! (`parse`, the index, the first-match walk) → `apply` (netem's order) →
//! `timing` (egress departure times), `police` (receive-side rate),
//! `duplicate`, `mutate` (ECN mark, corruption, over `pkt`). `maps` defines
//! the maps, `rng` and `atomic` are the primitives underneath.
#![no_std]
#![no_main]
// BPF has compare-and-swap, but Rust's BPF targets do not expose it (see `atomic`).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod apply;
mod atomic;
mod capture;
mod classify;
mod duplicate;
mod hook;
mod maps;
mod matrix;
mod mutate;
mod parse;
mod pipeline;
mod pkt;
mod police;
mod redirect;
mod rng;
mod segment;
mod series;
mod socket;
mod timing;
mod trace;

use aya_ebpf::{
    bindings::{
        xdp_action::{XDP_DROP, XDP_PASS},
        TC_ACT_OK, TC_ACT_SHOT,
    },
    helpers::bpf_redirect,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::hook::{TcEgress, TcIngress, Verdict, Xdp};

/// What every fallible step of the pipeline returns: the value, or why it
/// gave up (counted by cause; the packet passes).
type Result<T> = core::result::Result<T, impair_common::DataPathError>;

/// tc egress (tcx link, or a clsact filter on kernels before 6.6).
///
/// A drop here is a network loss: the sender must believe the packet went
/// out. `TC_ACT_SHOT` would hand `NET_XMIT_DROP` back to the local stack
/// (TCP then takes it as a local congestion signal and resends at once; the
/// receiver never sees a loss). A redirect to ifindex 0 instead: the kernel's
/// `sch_handle_egress` answers `NET_XMIT_SUCCESS` for every redirect, and
/// `skb_do_redirect` frees the skb because no device has ifindex 0. This is
/// the one way that works for both attachments (tcx maps anything but
/// pass/drop/redirect to "next program"; `TC_ACT_STOLEN` would work only for
/// clsact). See docs/architecture.md, "Drops at egress".
#[classifier]
pub fn impair_egress(ctx: TcContext) -> i32 {
    // A duplicate made on an ifb goes back to the receive path (`redirect`).
    if let Some(action) = redirect::ifb_duplicate(&ctx) {
        return action;
    }
    match pipeline::decide(&TcEgress(&ctx)) {
        Verdict::Pass | Verdict::Held => TC_ACT_OK,
        Verdict::Redirected(action) => action,
        // SAFETY: bpf_redirect only records the target in this CPU's redirect
        // state; with flags 0 it returns TC_ACT_REDIRECT. A replaced packet
        // (its clone already went to the queue) is consumed the same way.
        Verdict::Drop | Verdict::Replaced => unsafe { bpf_redirect(0, 0) as i32 },
    }
}

/// tc ingress (tcx link, or a clsact filter on kernels before 6.6). A drop is
/// `TC_ACT_SHOT`: on the receive side the sender never learns of it anyway.
#[classifier]
pub fn impair_ingress(ctx: TcContext) -> i32 {
    match pipeline::decide(&TcIngress(&ctx)) {
        // Held, Replaced and Redirected are tc egress's only.
        Verdict::Pass | Verdict::Held | Verdict::Replaced | Verdict::Redirected(_) => TC_ACT_OK,
        Verdict::Drop => TC_ACT_SHOT,
    }
}

/// XDP, native or generic: the earliest receive hook.
#[xdp]
pub fn impair_xdp(ctx: XdpContext) -> u32 {
    match pipeline::decide(&Xdp(&ctx)) {
        Verdict::Pass | Verdict::Held | Verdict::Replaced | Verdict::Redirected(_) => XDP_PASS,
        Verdict::Drop => XDP_DROP,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here; this is never run.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
