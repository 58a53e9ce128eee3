//! Decisions per wire packet for super-packets (GSO skbs) at tc egress.
//!
//! A super-packet reaches tc egress whole: the kernel splits it into wire
//! packets only after the hook (`validate_xmit_skb`). impair lowers the
//! device's `gso_max_segs` so a local TCP sender builds one-segment skbs,
//! but some senders build super-packets anyway: UDP GSO (`UDP_SEGMENT`),
//! TCP connections opened before the attach, and senders in another
//! namespace whose veth carries their super-packets in whole. For those,
//! [`to_segmenter`] sends a super-packet that its rule decides per packet
//! to the instance's segmenter, a veth whose `gso_max_segs` is 1: the
//! kernel segments it on the way out of that veth, and [`impair_segmented`]
//! at the peer's tc ingress sends each wire packet back to the device's
//! egress, where `impair_egress` decides each one alone.
//!
//! Marks in `skb->tc_index` (16 bits, read by no qdisc on the kernels impair
//! supports; `skb_segment` copies it to every segment, a veth keeps it):
//! [`TO_SEGMENTER`] on what impair sent, so the peer forwards nothing else
//! (the veth's own packets are dropped), and [`DECIDE_WHOLE`] on a packet
//! the veth did not split, so it is decided whole rather than sent round
//! again.
use aya_ebpf::{
    bindings::TC_ACT_SHOT, helpers::bpf_redirect, macros::classifier, programs::TcContext,
};
use impair_common::{loss_model, Rule, CONTROL_SEGMENTER};

use crate::maps::CONTROL;

/// On a super-packet impair sent to its segmenter ("IS").
const TO_SEGMENTER: u32 = 0x4953;
/// On a packet that came back from the segmenter still whole ("IW").
const DECIDE_WHOLE: u32 = 0x4957;

/// Whether `rule` decides something per packet that a super-packet would
/// get once for all its wire packets (loss, duplication, corruption,
/// reordering, jitter, an MTU); a delay or rate alone acts per wire packet
/// already (EDT charges each one).
#[inline(always)]
fn decides_per_packet(rule: &Rule) -> bool {
    rule.loss.model != loss_model::NONE
        || rule.corrupt_u32 | rule.duplicate_u32 | rule.reorder_u32 | rule.mtu_bytes != 0
        || rule.jitter_ns != 0
}

/// At tc egress: sends a super-packet of `segs` wire packets that `rule`
/// decides per packet to the instance's segmenter and returns
/// `TC_ACT_REDIRECT` (from `bpf_redirect`); `None` when it is to be decided here (one wire packet,
/// no segmenter, a rule that decides nothing per packet, or it came back
/// whole).
#[inline(always)]
pub fn to_segmenter(ctx: &TcContext, rule: &Rule, segs: u32) -> Option<i32> {
    if segs <= 1 {
        return None;
    }
    let v = *CONTROL.get(CONTROL_SEGMENTER)?;
    let segmenter = v as u32;
    if segmenter == 0 || !decides_per_packet(rule) {
        return None;
    }
    // SAFETY: reading and writing fields of the context the kernel passed
    // (tc_index is writable for tc programs).
    unsafe {
        // Only the device's own egress: an instance's ifb runs the same
        // program, and what the segmenter splits goes back to the device.
        if (*ctx.skb.skb).ifindex != (v >> 32) as u32 {
            return None;
        }
        if (*ctx.skb.skb).tc_index == DECIDE_WHOLE {
            (*ctx.skb.skb).tc_index = 0;
            return None;
        }
        (*ctx.skb.skb).tc_index = TO_SEGMENTER;
    }
    // SAFETY: bpf_redirect only records the target; the kernel sends the
    // packet to the segmenter's egress when the program returns
    // TC_ACT_REDIRECT (the controller clears CONTROL_SEGMENTER before it
    // deletes the device).
    Some(unsafe { bpf_redirect(segmenter, 0) as i32 })
}

/// tc ingress of the segmenter's peer: each wire packet of a super-packet
/// impair sent goes back to the impaired device's egress; anything else
/// (the veth's own packets) is dropped, as the peer has no other use.
#[classifier]
pub fn impair_segmented(ctx: TcContext) -> i32 {
    // SAFETY: reading tc_index and gso_segs of the context the kernel passed.
    let (mark, segs) = unsafe { ((*ctx.skb.skb).tc_index, (*ctx.skb.skb).gso_segs) };
    if mark != TO_SEGMENTER {
        return TC_ACT_SHOT as i32;
    }
    let Some(&v) = CONTROL.get(CONTROL_SEGMENTER) else {
        return TC_ACT_SHOT as i32;
    };
    let device = (v >> 32) as u32;
    if device == 0 {
        return TC_ACT_SHOT as i32;
    }
    // SAFETY: tc_index is writable for tc programs.
    unsafe {
        (*ctx.skb.skb).tc_index = if segs > 1 { DECIDE_WHOLE } else { 0 };
    }
    // SAFETY: bpf_redirect only records the target for TC_ACT_REDIRECT.
    unsafe { bpf_redirect(device, 0) as i32 }
}
