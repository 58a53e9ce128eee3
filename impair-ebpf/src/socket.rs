//! Whose packet this is: the cgroup v2 id a rule with a cgroup match
//! (`impair run`) compares, read only when the active rule set has such a
//! rule (`ruleset_flags::CGROUP`).
//!
//! - At a real device's tc egress the packet carries its sending socket:
//!   `bpf_skb_cgroup_id` reads that socket's cgroup.
//! - A received packet has no socket yet at tc ingress (the stack finds it
//!   later, in `ip_rcv_finish`'s early demux or the protocol's receive), and
//!   none on the instance's ifb either (the redirect happens before that). So
//!   the socket the stack will deliver it to is looked up the way the stack
//!   will do it: `bpf_sk_lookup_tcp` / `bpf_sk_lookup_udp` with the packet's
//!   own addresses and ports (source = the peer), in the network namespace
//!   of the device (`BPF_F_CURRENT_NETNS`). A TCP request socket (a SYN
//!   being answered) resolves to its listener and a TIME_WAIT one to none
//!   (the helper's rules); UDP finds connected and bound sockets alike; the
//!   reference is released (`bpf_sk_release`) on every path, as the verifier
//!   demands.
//!
//!   tc programs cannot read a looked-up socket's cgroup
//!   (`bpf_sk_cgroup_id` exists for cgroup programs only, and SK_STORAGE maps
//!   need BTF map definitions aya-ebpf 0.2 cannot declare): they can read its
//!   `mark`. So `impair run` gives the sockets of its cgroup a mark of its own
//!   (a `cgroup/sock_create` program, `impair_tools::run`), and the id a
//!   received packet gets is [`MARK_ID_BIT`] | the mark of its socket, a
//!   value no cgroup id (an inode number) takes: a receive-side rule written
//!   for that mark matches exactly the packets for the cgroup's sockets.
//!
//! Packets that are not TCP or UDP over IPv4/IPv6 with ports (ICMP,
//! fragments after the first) have no socket to find: id 0, which no rule
//! matches. The lookup helpers exist at tc since Linux 4.20; XDP has them
//! too, but the controller keeps cgroup matches to tc.
use aya_ebpf::{
    bindings::{bpf_sock_tuple, BPF_F_CURRENT_NETNS},
    cty::c_void,
    helpers::{bpf_sk_lookup_tcp, bpf_sk_lookup_udp, bpf_sk_release, bpf_skb_cgroup_id},
    programs::TcContext,
};
use impair_common::{PacketKey, CONTROL_REDIRECT_IFINDEX, SOCKET_MARK_ID_BIT as MARK_ID_BIT};

use crate::maps::CONTROL;

/// `sizeof(bpf_sock_tuple.ipv4)`: the helper takes the family from the size.
const TUPLE_V4_BYTES: u32 = 12;
/// `sizeof(bpf_sock_tuple.ipv6)`.
const TUPLE_V6_BYTES: u32 = 36;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// The cgroup id of the packet's socket at tc (`egress`: the program runs
/// at a device's egress, which may be this instance's ifb); 0 when it has
/// none that can be found.
#[inline(always)]
pub fn cgroup_id(ctx: &TcContext, key: &PacketKey, egress: bool) -> u64 {
    if egress && !on_own_ifb(ctx) {
        // SAFETY: the helper reads the skb's socket (if any) and its cgroup.
        return unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    }
    receiver_cgroup_id(ctx, key)
}

/// Whether this egress run is on the instance's ifb (received traffic).
#[inline(always)]
fn on_own_ifb(ctx: &TcContext) -> bool {
    let Some(&ifb) = CONTROL.get(CONTROL_REDIRECT_IFINDEX) else {
        return false;
    };
    // SAFETY: reading a field of the context the kernel passed us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    ifb != 0 && ifb == u64::from(ifindex)
}

/// The id of the local socket a received packet is for ([`MARK_ID_BIT`] |
/// its mark; see the module's docs); 0 when there is none.
#[inline(always)]
fn receiver_cgroup_id(ctx: &TcContext, key: &PacketKey) -> u64 {
    if key.has_ports == 0 {
        return 0;
    }
    // SAFETY: an all-zero tuple is a valid value of this plain C union.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    let (sport, dport) = (key.sport.to_be(), key.dport.to_be());
    let size = if key.ip_version == 4 {
        // SAFETY: writing plain integer fields of the union's IPv4 member.
        unsafe {
            let t = &mut tuple.__bindgen_anon_1.ipv4;
            t.saddr = key.src[0];
            t.daddr = key.dst[0];
            t.sport = sport;
            t.dport = dport;
        }
        TUPLE_V4_BYTES
    } else if key.ip_version == 6 {
        // SAFETY: writing plain integer fields of the union's IPv6 member.
        unsafe {
            let t = &mut tuple.__bindgen_anon_1.ipv6;
            t.saddr = key.src;
            t.daddr = key.dst;
            t.sport = sport;
            t.dport = dport;
        }
        TUPLE_V6_BYTES
    } else {
        return 0;
    };
    let ctx_ptr = ctx.skb.skb.cast::<c_void>();
    let netns = BPF_F_CURRENT_NETNS as u64;
    // SAFETY: the tuple lives on this stack frame and `size` is one of its
    // two member sizes; the returned socket (if any) is released below.
    let sk = unsafe {
        match key.l4_proto {
            IPPROTO_TCP => bpf_sk_lookup_tcp(ctx_ptr, &mut tuple, size, netns, 0),
            IPPROTO_UDP => bpf_sk_lookup_udp(ctx_ptr, &mut tuple, size, netns, 0),
            _ => return 0,
        }
    };
    if sk.is_null() {
        return 0;
    }
    // SAFETY: `sk` is the full socket the lookup returned and holds a
    // reference; it is released once, right after reading its mark (a
    // `bpf_sock` field the verifier lets tc read).
    unsafe {
        let mark = (*sk).mark;
        bpf_sk_release(sk.cast::<c_void>());
        MARK_ID_BIT | u64::from(mark)
    }
}
