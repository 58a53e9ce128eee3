//! impair's data path. Each program is a thin entry that calls a `try_*`
//! function; any error there passes the packet and is counted (fail open).
#![no_std]
#![no_main]

mod maps;
mod parse;
mod rules;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};

use crate::rules::Verdict;

/// tc egress (tcx link, or a clsact filter on kernels before 6.6).
#[classifier]
pub fn impair_egress(ctx: TcContext) -> i32 {
    match rules::decide(&ctx) {
        Verdict::Pass => TC_ACT_OK,
        Verdict::Drop => TC_ACT_SHOT,
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
