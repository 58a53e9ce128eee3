//! Earliest Departure Time arithmetic: when a packet may leave, given its
//! delay, the rule's rate and the rule's queue limit. Pure integer code
//! shared by the data path and host tests.
//!
//! The model is netem's: a packet becomes ready at `now + delay`; with a rate
//! it leaves at `max(ready, previous departure) + wire_bytes / rate` (the end
//! of its serialization on the emulated link); the queueing delay it sees is
//! `departure - ready`. fq releases it at that time (`skb->tstamp`).

/// How far ahead of `now` a departure time already on a packet may lie and
/// still be trusted: fq's default horizon (10 s). A larger value is no
/// CLOCK_MONOTONIC departure time: a receive timestamp is CLOCK_REALTIME
/// (about 1.7e18 ns), while the monotonic clock counts from boot.
pub const TRUSTED_TSTAMP_HORIZON_NS: u64 = 10_000_000_000;

/// When a packet's own schedule lets it leave: the departure time already on
/// it (`existing_ns`, `skb->tstamp`: TCP's pacing or an fq-paced socket set
/// it) if that is later than `now_ns` and plausible (within
/// [`TRUSTED_TSTAMP_HORIZON_NS`] of now), else `now_ns`. The delay and the
/// rate start from here (Cilium's `bpf/lib/edt.h` does the same), so impair
/// never undoes the sender's own pacing.
#[inline(always)]
pub fn start_ns(existing_ns: u64, now_ns: u64) -> u64 {
    if existing_ns > now_ns && existing_ns - now_ns <= TRUSTED_TSTAMP_HORIZON_NS {
        existing_ns
    } else {
        now_ns
    }
}

/// Bytes a GSO super-packet of `len` bytes (one header of `hdr_len` bytes)
/// in `segs` wire packets occupies on the emulated link: each wire packet
/// carries its own headers, overhead and cells ([`wire_bytes`]). The
/// segments' sizes are taken as equal but for the last (the skb does not say
/// gso_size here; this splits the wire length evenly, the last one taking
/// the remainder). `segs <= 1` is one ordinary packet.
#[inline(always)]
pub fn gso_wire_bytes(
    len: u32,
    segs: u32,
    hdr_len: u32,
    overhead: i32,
    cell_bytes: u32,
    cell_overhead: i32,
) -> u64 {
    if segs <= 1 {
        return wire_bytes(len, overhead, cell_bytes, cell_overhead);
    }
    let total = u64::from(len) + u64::from(segs - 1) * u64::from(hdr_len);
    let each = total / u64::from(segs);
    let last = total - each * u64::from(segs - 1);
    let each = each.min(u64::from(u32::MAX)) as u32;
    let last = last.min(u64::from(u32::MAX)) as u32;
    u64::from(segs - 1) * wire_bytes(each, overhead, cell_bytes, cell_overhead)
        + wire_bytes(last, overhead, cell_bytes, cell_overhead)
}

/// Bytes a packet occupies on the emulated link: its length plus a per-packet
/// overhead, rounded up to whole cells (each with its own overhead) when a
/// cell size is set — tc's `overhead`, `cell` and `cellpad`/ATM framing.
#[inline(always)]
pub fn wire_bytes(len: u32, overhead: i32, cell_bytes: u32, cell_overhead: i32) -> u64 {
    let with_overhead = i64::from(len) + i64::from(overhead);
    let bytes = if with_overhead < 1 {
        1
    } else {
        with_overhead as u64
    };
    if cell_bytes == 0 {
        return bytes;
    }
    let cell = u64::from(cell_bytes);
    let cells = bytes.div_ceil(cell);
    let per_cell = i64::from(cell_bytes) + i64::from(cell_overhead);
    cells * if per_cell < 1 { 1 } else { per_cell as u64 }
}

/// Serialization time of `bytes` at `ps_per_byte` picoseconds per byte.
/// The controller keeps `ps_per_byte <= 8e12` (1 bit/s) so this cannot overflow
/// for any packet (< 2^17 bytes after overhead).
#[inline(always)]
pub fn tx_time_ns(bytes: u64, ps_per_byte: u64) -> u64 {
    bytes * ps_per_byte / 1000
}

/// Picoseconds per byte for a rate in bits per second (the controller's side).
pub fn ps_per_byte(rate_bps: u64) -> u64 {
    8_000_000_000_000u64
        .checked_div(rate_bps)
        .map_or(0, |ps| ps.max(1))
}

/// The departure time of a packet ready at `ready_ns` on a link whose last
/// packet leaves at `last_departure_ns`, or `None` when the queueing delay it
/// would see exceeds `queue_limit_ns` (0: no limit): the packet is dropped and
/// the link state is left as it was.
#[inline(always)]
pub fn rate_departure(
    ready_ns: u64,
    last_departure_ns: u64,
    tx_ns: u64,
    queue_limit_ns: u64,
) -> Option<u64> {
    let start = if last_departure_ns > ready_ns {
        last_departure_ns
    } else {
        ready_ns
    };
    let departure = start + tx_ns;
    // A packet that finds the link idle always goes, even if its own
    // serialization takes longer than the limit (a full-size packet on a
    // slow link, a GSO super-packet): the limit bounds the queue, never one
    // packet.
    let limit = if queue_limit_ns > tx_ns {
        queue_limit_ns
    } else {
        tx_ns
    };
    if queue_limit_ns != 0 && departure - ready_ns > limit {
        return None;
    }
    Some(departure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_bytes_with_overhead_and_atm_cells() {
        assert_eq!(wire_bytes(1500, 0, 0, 0), 1500);
        assert_eq!(wire_bytes(1500, 24, 0, 0), 1524);
        assert_eq!(wire_bytes(10, -20, 0, 0), 1, "never below one byte");
        // ATM: 48-byte cell payload, 5 bytes of header per cell.
        assert_eq!(wire_bytes(100, 0, 48, 5), 3 * 53);
        assert_eq!(wire_bytes(96, 0, 48, 5), 2 * 53);
    }

    #[test]
    fn rate_spacing_is_exact() {
        let ps = ps_per_byte(10_000_000); // 10 Mbit/s: 800 ns per byte
        assert_eq!(ps, 800_000);
        assert_eq!(tx_time_ns(1250, ps), 1_000_000);
        // Back-to-back packets ready at the same time leave 1 ms apart.
        let mut last = 0;
        for i in 1..=5u64 {
            last = rate_departure(1_000, last, 1_000_000, 0).unwrap();
            assert_eq!(last, 1_000 + i * 1_000_000);
        }
    }

    #[test]
    fn idle_link_restarts_from_the_ready_time() {
        assert_eq!(rate_departure(10_000, 5_000, 100, 0), Some(10_100));
    }

    #[test]
    fn queue_limit_drops_and_keeps_state() {
        // 1 ms per packet, 2.5 ms queue: the third packet in a burst waits 3 ms.
        let mut last = 0;
        let mut sent = 0;
        for _ in 0..5 {
            if let Some(d) = rate_departure(0, last, 1_000_000, 2_500_000) {
                last = d;
                sent += 1;
            }
        }
        assert_eq!(sent, 2);
        assert_eq!(last, 2_000_000);
    }

    #[test]
    fn a_packet_longer_than_the_limit_still_goes_on_an_idle_link() {
        // 1514 bytes at 50 kbit/s take 242 ms; the queue holds 100 ms.
        let tx = tx_time_ns(1514, ps_per_byte(50_000));
        assert_eq!(tx, 242_240_000);
        assert_eq!(rate_departure(0, 0, tx, 100_000_000), Some(tx));
        // The next one, behind it, is over the limit.
        assert_eq!(rate_departure(0, tx, tx, 100_000_000), None);
    }

    #[test]
    fn start_keeps_a_plausible_departure_time_and_ignores_others() {
        let now = 5_000_000_000_000; // 5000 s after boot
        assert_eq!(start_ns(0, now), now, "no time on the packet");
        assert_eq!(start_ns(now - 1, now), now, "a past time: now");
        assert_eq!(start_ns(now + 3_000_000, now), now + 3_000_000, "paced");
        assert_eq!(
            start_ns(now + TRUSTED_TSTAMP_HORIZON_NS, now),
            now + TRUSTED_TSTAMP_HORIZON_NS
        );
        assert_eq!(start_ns(now + TRUSTED_TSTAMP_HORIZON_NS + 1, now), now);
        // A CLOCK_REALTIME receive timestamp (Nov 2023) is no departure time.
        assert_eq!(start_ns(1_700_000_000_000_000_000, now), now);
    }

    #[test]
    fn delay_and_rate_start_from_the_senders_departure_time() {
        // A paced packet due 2 ms from now, 10 ms delay: leaves at +12 ms.
        let now = 1_000_000_000;
        let ready = start_ns(now + 2_000_000, now) + 10_000_000;
        assert_eq!(ready, now + 12_000_000);
        // On an idle 10 Mbit/s link, 1250 bytes then take 1 ms from there.
        let tx = tx_time_ns(1250, ps_per_byte(10_000_000));
        assert_eq!(rate_departure(ready, 0, tx, 0), Some(now + 13_000_000));
    }

    #[test]
    fn super_packets_pay_headers_overhead_and_cells_per_wire_packet() {
        // One packet: as wire_bytes.
        assert_eq!(gso_wire_bytes(1514, 1, 66, 24, 0, 0), 1538);
        assert_eq!(gso_wire_bytes(1514, 0, 66, 24, 0, 0), 1538);
        // 3 x 1448 payload + 66 header bytes in one skb: 3 x 1514 on the wire.
        let len = 66 + 3 * 1448;
        assert_eq!(gso_wire_bytes(len, 3, 66, 0, 0, 0), 3 * 1514);
        assert_eq!(gso_wire_bytes(len, 3, 66, 24, 0, 0), 3 * 1538);
        // Uneven: the last segment is short; the total is still exact.
        let len = 66 + 2 * 1448 + 100;
        assert_eq!(gso_wire_bytes(len, 3, 66, 0, 0, 0), u64::from(len) + 2 * 66);
        // ATM cells per wire packet: 2 x 96 bytes = 2 x 2 cells.
        assert_eq!(gso_wire_bytes(40 + 2 * 56, 2, 40, 0, 48, 5), 4 * 53);
    }

    #[test]
    fn slowest_rate_cannot_overflow() {
        let ps = ps_per_byte(1);
        assert_eq!(ps, 8_000_000_000_000);
        assert_eq!(
            tx_time_ns(wire_bytes(65_535, 4096, 0, 0), ps),
            69_631 * 8_000_000_000
        );
    }
}
