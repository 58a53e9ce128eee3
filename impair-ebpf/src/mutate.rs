//! Rewriting packets: the ECN congestion mark and payload corruption, written
//! once for every hook over `pkt::Packet`.
use impair_common::{rule_flags, PacketKey};

use crate::{pkt::Packet, rng::random_u64, Result};

/// Sets CE in the IP header (the caller checked the packet is ECN-capable).
#[inline(always)]
pub fn mark_ce<P: Packet>(pkt: &P, key: &PacketKey) -> Result<()> {
    let l3 = u32::from(key.l3_offset);
    if key.ip_version == 4 {
        // The first 16-bit word holds version/IHL and TOS; the checksum covers it.
        let old = pkt.load_u16(l3)?;
        let new = [old[0], old[1] | 3];
        pkt.l3_csum_replace(l3 + 10, old, new)?;
        pkt.store_u16(l3, new)?;
    } else {
        // IPv6: ECN is bits 4-5 of the second byte; there is no header
        // checksum to compensate, so a received packet's sum must follow.
        let old = pkt.load_u8(l3 + 1)?;
        pkt.store_u8_update_sum(l3 + 1, old | 0x30)?;
    }
    Ok(())
}

/// L4 checksum field offset from the L4 header, for protocols that have one.
#[inline(always)]
fn l4_csum_offset(proto: u8) -> Option<u32> {
    match proto {
        6 => Some(16),
        17 | 136 => Some(6),
        1 | 58 => Some(2),
        _ => None,
    }
}

/// Flips one random bit of the L4 payload. Detectable (default): the L4
/// checksum is left inconsistent; a second bit is also flipped in the checksum
/// field itself, at a different position within the 16-bit word, so the
/// corruption stays detectable even when the checksum is completed after us
/// (checksum offload) and can never cancel out. Silent: the checksum is
/// updated to match, so the corrupted payload reaches the application.
/// Returns false when the packet has no payload to corrupt.
#[inline(always)]
pub fn corrupt<P: Packet>(pkt: &P, key: &PacketKey, len: u32, flags: u32) -> Result<bool> {
    let start = u32::from(key.payload_offset);
    if key.ip_version == 0 || key.l4_offset == 0 || start == 0 || start >= len {
        return Ok(false);
    }
    let r = random_u64();
    let off = start + ((r & 0xffff_ffff) % u64::from(len - start)) as u32;
    let bit = ((r >> 32) & 7) as u32;
    // Position of the flipped bit inside its 16-bit word of the L4 segment
    // (even offsets from the L4 header are the high byte in network order).
    let high = (off - u32::from(key.l4_offset)) & 1 == 0;
    let word_bit = if high { bit + 8 } else { bit };
    let old = pkt.load_u8(off)?;
    let new = old ^ (1u8 << bit);
    pkt.store_u8(off, new)?;
    let Some(csum_rel) = l4_csum_offset(key.l4_proto) else {
        return Ok(true);
    };
    let csum_off = u32::from(key.l4_offset) + csum_rel;
    if flags & rule_flags::CORRUPT_SILENT != 0 {
        // The checksum change depends only on the byte that changed, so the
        // word's other byte is taken as 0 on both sides: no second read, and
        // a last odd byte (padded with 0 by the checksum) needs no case.
        let (old_word, new_word) = if high {
            ([old, 0], [new, 0])
        } else {
            ([0, old], [0, new])
        };
        pkt.l4_csum_replace(csum_off, old_word, new_word)?;
    } else {
        let csum = pkt.load_u16(csum_off)?;
        let flip = 1u16 << ((word_bit + 8) % 16);
        pkt.store_u16(csum_off, (u16::from_be_bytes(csum) ^ flip).to_be_bytes())?;
    }
    Ok(true)
}
