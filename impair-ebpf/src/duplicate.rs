//! Clones sent out of the same device (tc egress only) with
//! `bpf_clone_redirect`: duplicates, and the unowned stand-in of a held
//! packet of a local socket (`release`). The clone passes through the
//! program again, synchronously and on this CPU; a per-CPU flag
//! (`IMPAIR_DUP`) tells that nested run to let it go untouched, so a clone
//! is never duplicated, dropped, delayed or corrupted again.
use aya_ebpf::{helpers::bpf_sk_fullsock, programs::TcContext};
use impair_common::DataPathError;

use crate::{
    hook::{Hook, Verdict},
    maps::DUPLICATING,
    Result,
};

/// `AF_INET` and `AF_INET6`: the families of the sockets whose held packets
/// are released.
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

/// A packet fq will hold (`Verdict::Held`) that a local socket sent: an
/// unowned clone goes to fq in its place and the original is consumed, as
/// netem's `skb_orphan_partial` does. The socket's send-buffer and TCP Small
/// Queues accounting charge an skb until it is freed; held in fq for the
/// delay, the original would keep the socket's bytes charged for that long
/// and cap a local TCP flow near two skbs per delay (0.9 Mbit/s through
/// 50 ms, against 150 Mbit/s through the router, measured on 6.12). The
/// clone (`skb_clone`: no socket, no destructor) keeps the departure time
/// (a monotonic delivery time, which the redirect keeps) and the data; the
/// sender sees its packet sent. Forwarded and received packets have no
/// socket and pass as they are. If the clone fails the original passes
/// (fail open, counted), charged as before.
#[inline(always)]
pub fn release<H: Hook>(h: &H) -> Result<Verdict> {
    let Some(ctx) = h.skb() else {
        return Ok(Verdict::Pass);
    };
    // SAFETY: reading a field of the context the kernel passed us; the
    // verifier allows `sk` at tc and checks it against null below.
    let sk = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return Ok(Verdict::Pass);
    }
    // SAFETY: bpf_sk_fullsock takes the context's non-null socket; it
    // returns null for request and time-wait sockets (control packets,
    // left as they are).
    let sk = unsafe { bpf_sk_fullsock(sk) };
    if sk.is_null() {
        return Ok(Verdict::Pass);
    }
    // SAFETY: a full socket from bpf_sk_fullsock; family and protocol are
    // fields a tc program may read. BPF_PROG_TEST_RUN's stand-in socket
    // (AF_INET for an IPv4 frame) has protocol 0, which no IP socket that
    // sends has: test runs keep their packet.
    let (family, protocol) = unsafe { ((*sk).family, (*sk).protocol) };
    if (family != AF_INET && family != AF_INET6) || protocol == 0 {
        return Ok(Verdict::Pass);
    }
    send_duplicate(ctx)?;
    Ok(Verdict::Replaced)
}

/// Sends a clone of the packet out of the same device.
#[inline(always)]
pub fn send_duplicate(ctx: &TcContext) -> Result<()> {
    let flag = DUPLICATING.get_ptr_mut(0).ok_or(DataPathError::MapLookup)?;
    // SAFETY: this CPU's per-CPU value; the nested run reads it on this CPU.
    unsafe { *flag = 1 };
    // SAFETY: reading a field of the context the kernel passed us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let r = ctx.clone_redirect(ifindex, 0);
    // SAFETY: as above.
    unsafe { *flag = 0 };
    r.map(|_| ()).map_err(|_| DataPathError::CloneRedirect)
}

/// Whether this run is the clone `send_duplicate` just sent (and clears the
/// flag).
#[inline(always)]
pub fn is_duplicate() -> bool {
    let Some(flag) = DUPLICATING.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's per-CPU value; programs do not migrate while running.
    unsafe {
        let dup = *flag != 0;
        *flag = 0;
        dup
    }
}
