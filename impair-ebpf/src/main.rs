//! impair's data path. Each program is a thin entry that calls the shared
//! decision (`rules::decide`, which runs `try_decide`); any error there passes
//! the packet and is counted (fail open).
//!
//! Three programs share one object and its maps: `impair_egress` does every
//! impairment; `impair_ingress` and `impair_xdp` see received packets, where
//! nothing can hold a packet back, so they do loss, ECN, corruption, MTU,
//! blackhole and rate policing, never delay, jitter, reordering, pacing or
//! duplication (see `rules`).
#![no_std]
#![no_main]
// BPF has compare-and-swap, but Rust's BPF targets do not expose it (see `atomic`).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod atomic;
mod maps;
mod parse;
mod pkt;
mod rules;

use aya_ebpf::{
    bindings::{
        xdp_action::{XDP_DROP, XDP_PASS},
        TC_ACT_OK, TC_ACT_SHOT,
    },
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::rules::{TcEgress, TcIngress, Verdict, Xdp};

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
    tc_action(rules::decide(&TcEgress(&ctx)))
}

/// tc ingress (tcx link, or a clsact filter on kernels before 6.6).
#[classifier]
pub fn impair_ingress(ctx: TcContext) -> i32 {
    tc_action(rules::decide(&TcIngress(&ctx)))
}

/// XDP, native or generic: the earliest receive hook.
#[xdp]
pub fn impair_xdp(ctx: XdpContext) -> u32 {
    match rules::decide(&Xdp(&ctx)) {
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
