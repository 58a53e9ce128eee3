//! Packet access behind one small trait, so the code that rewrites packets
//! (ECN marking, corruption) is written once for every hook: tc programs go
//! through the skb helpers (which also handle non-linear data and the skb's
//! checksum state), XDP reads and writes the linear frame directly, with a
//! bounds check on every access and an incremental checksum update (RFC 1624).
//!
//! Offsets are from the start of the frame (the Ethernet header) at every
//! hook: tc ingress sees the MAC header pushed back in front of the data, as
//! tc egress and XDP do.
use aya_ebpf::programs::{TcContext, XdpContext};
use impair_common::DataPathError::{Csum, LoadBytes, StoreBytes};

use crate::Result;

/// What the impairment code needs from a packet. Each failure names its cause
/// (loads [`LoadBytes`], stores [`StoreBytes`], checksum updates [`Csum`]);
/// the pipeline passes the packet and counts it (fail open).
pub trait Packet {
    /// Frame length in bytes, L2 header included (skb->len at tc; the linear
    /// frame in XDP).
    fn frame_len(&self) -> u32;
    /// Start of the linear data the parser may read directly.
    fn data(&self) -> usize;
    /// End of the linear data.
    fn data_end(&self) -> usize;
    /// `gso_segs` as the skb says (0 or 1: a plain packet; more: a GSO/GRO
    /// super-packet of that many wire packets). XDP frames are one packet.
    fn gso_segs(&self) -> u32;
    /// Makes up to `bytes` header bytes linear where that is needed (tc);
    /// a failure only means the parser sees less.
    fn linearize(&self, bytes: u32);
    fn load_u8(&self, off: u32) -> Result<u8>;
    fn load_u16(&self, off: u32) -> Result<[u8; 2]>;
    fn store_u8(&self, off: u32, v: u8) -> Result<()>;
    fn store_u16(&self, off: u32, v: [u8; 2]) -> Result<()>;
    /// Stores a byte whose change no checksum field compensates (the IPv6
    /// traffic class). A received skb may carry the sum of its bytes
    /// (CHECKSUM_COMPLETE), which the stack uses to validate L4 checksums;
    /// every other change here is checksum-neutral (the IPv4 header or L4
    /// checksum moves with it) or meant to fail validation (detectable
    /// corruption), but this one must update that sum, or the stack reports
    /// a hardware checksum fault. XDP has no such sum.
    fn store_u8_update_sum(&self, off: u32, v: u8) -> Result<()>;
    /// Updates the IPv4 header checksum at `csum_off` for a 16-bit header
    /// word that changed from `old` to `new` (bytes in network order).
    fn l3_csum_replace(&self, csum_off: u32, old: [u8; 2], new: [u8; 2]) -> Result<()>;
    /// Updates the L4 checksum at `csum_off` for a 16-bit word of the segment
    /// that changed from `old` to `new`. A checksum of 0 (UDP: "none") stays
    /// 0 and a result of 0 is stored as 0xffff, like the kernel's
    /// `BPF_F_MARK_MANGLED_0`.
    fn l4_csum_replace(&self, csum_off: u32, old: [u8; 2], new: [u8; 2]) -> Result<()>;
}

/// `BPF_F_MARK_MANGLED_0` (include/uapi/linux/bpf.h).
const BPF_F_MARK_MANGLED_0: u64 = 1 << 5;
/// `BPF_F_RECOMPUTE_CSUM`: `bpf_skb_store_bytes` updates a CHECKSUM_COMPLETE
/// skb's sum (a no-op for any other skb, so harmless at egress).
const BPF_F_RECOMPUTE_CSUM: u64 = 1 << 0;

impl Packet for TcContext {
    #[inline(always)]
    fn frame_len(&self) -> u32 {
        self.len()
    }

    #[inline(always)]
    fn gso_segs(&self) -> u32 {
        // SAFETY: the context's `__sk_buff`, valid while the program runs;
        // tc programs may read `gso_segs` (the verifier rewrites the load).
        unsafe { (*self.skb.skb).gso_segs }
    }

    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }

    #[inline(always)]
    fn linearize(&self, bytes: u32) {
        let len = self.len();
        let linear = TcContext::data_end(self) - TcContext::data(self);
        if (linear as u32) < bytes && len as usize > linear {
            // Headers may sit in paged data; a failed pull only means less to parse.
            let _ = self.pull_data(len.min(bytes));
        }
    }

    #[inline(always)]
    fn load_u8(&self, off: u32) -> Result<u8> {
        self.load(off as usize).map_err(|_| LoadBytes)
    }

    #[inline(always)]
    fn load_u16(&self, off: u32) -> Result<[u8; 2]> {
        self.load(off as usize).map_err(|_| LoadBytes)
    }

    #[inline(always)]
    fn store_u8(&self, off: u32, v: u8) -> Result<()> {
        self.store(off as usize, &v, 0).map_err(|_| StoreBytes)
    }

    #[inline(always)]
    fn store_u16(&self, off: u32, v: [u8; 2]) -> Result<()> {
        self.store(off as usize, &v, 0).map_err(|_| StoreBytes)
    }

    #[inline(always)]
    fn store_u8_update_sum(&self, off: u32, v: u8) -> Result<()> {
        self.store(off as usize, &v, BPF_F_RECOMPUTE_CSUM)
            .map_err(|_| StoreBytes)
    }

    #[inline(always)]
    fn l3_csum_replace(&self, csum_off: u32, old: [u8; 2], new: [u8; 2]) -> Result<()> {
        TcContext::l3_csum_replace(
            self,
            csum_off as usize,
            u64::from(u16::from_ne_bytes(old)),
            u64::from(u16::from_ne_bytes(new)),
            2,
        )
        .map_err(|_| Csum)
    }

    #[inline(always)]
    fn l4_csum_replace(&self, csum_off: u32, old: [u8; 2], new: [u8; 2]) -> Result<()> {
        TcContext::l4_csum_replace(
            self,
            csum_off as usize,
            u64::from(u16::from_ne_bytes(old)),
            u64::from(u16::from_ne_bytes(new)),
            2 | BPF_F_MARK_MANGLED_0,
        )
        .map_err(|_| Csum)
    }
}

/// Largest offset XDP code accesses. The verifier only accepts a packet
/// pointer plus a variable offset whose maximum it knows (and below 64 KiB);
/// an XDP frame is one page without multi-buffer support (this program does
/// not declare `xdp.frags`), so nothing real lies beyond.
const XDP_MAX_OFFSET: u32 = 0x3fff;

/// A pointer to `N` bytes at `off` of the XDP frame, if they lie inside it.
///
/// Two things keep LLVM from rewriting the check into one the verifier
/// cannot use. `data` and `data_end` are read afresh (volatile) for every
/// access, so LLVM cannot prove one access's check redundant from another's
/// (a byte inside a word it already checked) and drop it. And `N` goes
/// through a volatile read, so `p + 1 > end` is not folded into `p >= end`:
/// the verifier learns a range only from `p + N > end` with `p + N` a
/// separate register (the constant in its offset), not from `p >= end`.
#[inline(always)]
fn xdp_at<const N: usize>(ctx: &XdpContext, off: u32) -> Option<*mut [u8; N]> {
    if off > XDP_MAX_OFFSET {
        return None;
    }
    // The verifier must see the bound on the very register added to the
    // packet pointer: after the check LLVM may use another copy of `off`
    // (6.1 then saw 16..=65551 and refused the XDP program). A volatile
    // reload hides the check from LLVM, so the mask stays and bounds it.
    // SAFETY: `off` is a local.
    let off = unsafe { core::ptr::read_volatile(&off) } & XDP_MAX_OFFSET;
    let size = N;
    // SAFETY: `ctx.ctx` is the xdp_md the kernel passed to the program, and
    // `size` is a local.
    let (data, end, size) = unsafe {
        (
            core::ptr::read_volatile(&(*ctx.ctx).data) as usize,
            core::ptr::read_volatile(&(*ctx.ctx).data_end) as usize,
            core::ptr::read_volatile(&size),
        )
    };
    let p = data + off as usize;
    if p + size > end {
        return None;
    }
    Some(p as *mut [u8; N])
}

/// Incremental update of a ones'-complement checksum (RFC 1624, eqn. 3):
/// `HC' = ~(~HC + ~m + m')` for a 16-bit word `m` that became `m'`. All
/// three are big-endian words as they are in the packet.
#[inline(always)]
fn csum_replace(csum: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!csum) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

impl Packet for XdpContext {
    #[inline(always)]
    fn frame_len(&self) -> u32 {
        (XdpContext::data_end(self) - XdpContext::data(self)) as u32
    }

    #[inline(always)]
    fn gso_segs(&self) -> u32 {
        1
    }

    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }

    #[inline(always)]
    fn linearize(&self, _bytes: u32) {
        // An XDP frame is linear.
    }

    #[inline(always)]
    fn load_u8(&self, off: u32) -> Result<u8> {
        let p = xdp_at::<1>(self, off).ok_or(LoadBytes)?;
        // SAFETY: `xdp_at` checked that the byte lies inside the frame.
        let v = unsafe { (*p)[0] };
        Ok(v)
    }

    #[inline(always)]
    fn load_u16(&self, off: u32) -> Result<[u8; 2]> {
        let p = xdp_at::<2>(self, off).ok_or(LoadBytes)?;
        // SAFETY: `xdp_at` checked that both bytes lie inside the frame.
        let v = unsafe { *p };
        Ok(v)
    }

    #[inline(always)]
    fn store_u8(&self, off: u32, v: u8) -> Result<()> {
        let p = xdp_at::<1>(self, off).ok_or(StoreBytes)?;
        // SAFETY: inside the frame (checked by `xdp_at`); XDP frames are writable.
        unsafe { (*p)[0] = v };
        Ok(())
    }

    #[inline(always)]
    fn store_u16(&self, off: u32, v: [u8; 2]) -> Result<()> {
        let p = xdp_at::<2>(self, off).ok_or(StoreBytes)?;
        // SAFETY: as in `store_u8`.
        unsafe { *p = v };
        Ok(())
    }

    #[inline(always)]
    fn store_u8_update_sum(&self, off: u32, v: u8) -> Result<()> {
        self.store_u8(off, v)
    }

    #[inline(always)]
    fn l3_csum_replace(&self, csum_off: u32, old: [u8; 2], new: [u8; 2]) -> Result<()> {
        let p = xdp_at::<2>(self, csum_off).ok_or(Csum)?;
        // SAFETY: inside the frame (checked by `xdp_at`); XDP frames are writable.
        unsafe {
            let c = csum_replace(
                u16::from_be_bytes(*p),
                u16::from_be_bytes(old),
                u16::from_be_bytes(new),
            );
            *p = c.to_be_bytes();
        }
        Ok(())
    }

    #[inline(always)]
    fn l4_csum_replace(&self, csum_off: u32, old: [u8; 2], new: [u8; 2]) -> Result<()> {
        let p = xdp_at::<2>(self, csum_off).ok_or(Csum)?;
        // SAFETY: inside the frame (checked by `xdp_at`); XDP frames are writable.
        unsafe {
            let c = u16::from_be_bytes(*p);
            if c == 0 {
                return Ok(()); // UDP without a checksum: nothing to keep consistent
            }
            let n = csum_replace(c, u16::from_be_bytes(old), u16::from_be_bytes(new));
            *p = if n == 0 { 0xffff_u16 } else { n }.to_be_bytes();
        }
        Ok(())
    }
}
