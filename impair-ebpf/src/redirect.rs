//! `impair_redirect`: tc ingress of an instance that holds received packets
//! (delay, jitter, rate, duplication, reordering). Received packets have no
//! queue after tc ingress, so this program sends every one of them to the
//! instance's ifb device (`CONTROL[CONTROL_REDIRECT_IFINDEX]`), whose egress
//! runs `impair_egress` with the instance's rules and fq; ifb then hands each
//! packet back to the original device's receive path (without running its
//! tc ingress again).
//!
//! It decides nothing else and counts nothing: the one place that decides
//! and counts is `impair_egress` on the ifb. While the lease has run out, or
//! no ifb is set, it passes packets in place, so a killed controller whose
//! clsact filter outlives it never black-holes received traffic (and the
//! next impair command may delete the ifb once the lease is over).
use aya_ebpf::{
    bindings::TC_ACT_OK, helpers::bpf_redirect, macros::classifier, programs::TcContext,
};
use impair_common::CONTROL_REDIRECT_IFINDEX;

use crate::{maps::CONTROL, pipeline::lease_expired};

/// tc ingress (tcx link or clsact filter) of an instance with an ifb.
#[classifier]
pub fn impair_redirect(_ctx: TcContext) -> i32 {
    if lease_expired().unwrap_or(true) {
        return TC_ACT_OK as i32;
    }
    let Some(&ifb) = CONTROL.get(CONTROL_REDIRECT_IFINDEX) else {
        return TC_ACT_OK as i32;
    };
    if ifb == 0 || ifb > u64::from(u32::MAX) {
        return TC_ACT_OK as i32;
    }
    // SAFETY: bpf_redirect only records the target; the kernel sends the
    // packet to the ifb's egress when this program returns TC_ACT_REDIRECT
    // (and frees it if that device is gone: the controller clears the
    // index before deleting the device).
    unsafe { bpf_redirect(ifb as u32, 0) as i32 }
}
