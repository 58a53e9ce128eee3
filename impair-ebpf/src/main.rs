//! impair's data path. Each program is a thin entry that runs the shared
//! pipeline for its hook (`pipeline::decide`, which runs `try_decide`); any
//! error there passes the packet and is counted by cause (fail open).
//!
//! Three programs share one object and its maps: `impair_egress` does every
//! impairment; `impair_ingress` and `impair_xdp` see received packets, where
//! nothing can hold a packet back, so they do loss, ECN, corruption, MTU,
//! blackhole and rate policing, never delay, jitter, reordering, pacing or
//! duplication (see `hook`).
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
mod mutate;
mod parse;
mod pipeline;
mod pkt;
mod police;
mod rng;
mod timing;

use aya_ebpf::{
    bindings::{
        xdp_action::{XDP_DROP, XDP_PASS},
        TC_ACT_OK, TC_ACT_SHOT,
    },
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::hook::{TcEgress, TcIngress, Verdict, Xdp};

/// What every fallible step of the pipeline returns: the value, or why it
/// gave up (counted by cause; the packet passes).
type Result<T> = core::result::Result<T, impair_common::DataPathError>;

#[inline(always)]
fn tc_action(v: Verdict) -> i32 {
    match v {
        Verdict::Pass => TC_ACT_OK,
        Verdict::Drop => TC_ACT_SHOT,
    }
}

/// tc egress (tcx link, or a clsact filter on kernels before 6.6).
#[classifier]
pub fn impair_egress(ctx: TcContext) -> i32 {
    tc_action(pipeline::decide(&TcEgress(&ctx)))
}

/// tc ingress (tcx link, or a clsact filter on kernels before 6.6).
#[classifier]
pub fn impair_ingress(ctx: TcContext) -> i32 {
    tc_action(pipeline::decide(&TcIngress(&ctx)))
}

/// XDP, native or generic: the earliest receive hook.
#[xdp]
pub fn impair_xdp(ctx: XdpContext) -> u32 {
    match pipeline::decide(&Xdp(&ctx)) {
        Verdict::Pass => XDP_PASS,
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
