//! `impair_redirect`: tc ingress of an instance that holds received packets
//! (delay, jitter, rate, duplication, reordering). Received packets have no
//! queue after tc ingress, so this program sends every one of them to the
//! instance's ifb device (`CONTROL[CONTROL_REDIRECT_IFINDEX]`), whose egress
//! runs `impair_egress` with the instance's rules and fq; ifb then hands each
//! packet back to the original device's receive path (without running its
//! tc ingress again).
//!
//! It decides nothing else and counts nothing: the one place that decides
//! and counts is `impair_egress` on the ifb.
//!
//! Duplicates: `impair_egress` clones a packet to its own device's egress
//! (`duplicate`); on the ifb the kernel marks that clone as sent from
//! egress, so ifb would transmit it out of the original device. So the
//! clone's nested run on the ifb ([`ifb_duplicate`]) sends it to the original
//! device's receive path instead, marked in `tc_index` ([`DUP_MARK`]), and
//! this program lets the marked packet through in place (once): a duplicate
//! is delivered like the original and never impaired again. While the lease has run out, or
//! no ifb is set, it passes packets in place, so a killed controller whose
//! clsact filter outlives it never black-holes received traffic (and the
//! next impair command may delete the ifb once the lease is over).
use aya_ebpf::{
    bindings::{BPF_F_INGRESS, TC_ACT_OK},
    helpers::bpf_redirect,
    macros::classifier,
    programs::TcContext,
};
use impair_common::CONTROL_REDIRECT_IFINDEX;

use crate::{
    maps::{CONTROL, DUPLICATING},
    pipeline::lease_expired,
};

/// `skb->tc_index` of a duplicate made on the ifb, on its way back to the
/// original device's receive path ("IM"; tc_index is 16 bits in the skb and
/// read by no qdisc on the kernels impair supports).
const DUP_MARK: u32 = 0x494d;

/// tc ingress (tcx link or clsact filter) of an instance with an ifb.
#[classifier]
pub fn impair_redirect(ctx: TcContext) -> i32 {
    // SAFETY: reading and writing tc_index of the context the kernel passed
    // (writable for tc programs).
    unsafe {
        if (*ctx.skb.skb).tc_index == DUP_MARK {
            (*ctx.skb.skb).tc_index = 0;
            return TC_ACT_OK as i32;
        }
    }
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

/// In `impair_egress`, before the pipeline: the nested run of a duplicate
/// cloned on this instance's ifb (`duplicate::send_duplicate` set the flag
/// and the program runs on the ifb) goes to the original device's receive
/// path, marked; `None` for every other packet (the pipeline then sees the
/// flag itself for a duplicate at a real device's egress).
#[inline(always)]
pub fn ifb_duplicate(ctx: &TcContext) -> Option<i32> {
    let flag = DUPLICATING.get_ptr_mut(0)?;
    // SAFETY: this CPU's per-CPU value; programs do not migrate while running.
    if unsafe { *flag } == 0 {
        return None;
    }
    let ifb = *CONTROL.get(CONTROL_REDIRECT_IFINDEX)?;
    // SAFETY: reading fields of the context the kernel passed us.
    let (ifindex, received_on) =
        unsafe { ((*ctx.skb.skb).ifindex, (*ctx.skb.skb).ingress_ifindex) };
    if ifb == 0 || ifb != u64::from(ifindex) || received_on == 0 {
        return None;
    }
    // SAFETY: as above; tc_index is writable for tc programs.
    unsafe {
        *flag = 0;
        (*ctx.skb.skb).tc_index = DUP_MARK;
    }
    // SAFETY: bpf_redirect only records the target for TC_ACT_REDIRECT.
    Some(unsafe { bpf_redirect(received_on, u64::from(BPF_F_INGRESS)) as i32 })
}
