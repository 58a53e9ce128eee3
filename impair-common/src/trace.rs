//! Rate traces in Mahimahi's format: one line per 1500-byte delivery
//! opportunity, in ms from the trace's start (a repeated time is several
//! opportunities; the trace loops with the period of its last time). This is
//! the arithmetic the data path will run with EDT; the data path, the
//! controller and the CLI flag are not wired yet (docs/traces.md).
//!
//! The link is a byte cursor over the trace's cumulative capacity: a packet
//! ready at `t` starts at `max(cursor, capacity before t)` (capacity nobody
//! used before `t` is lost, as on a real link), occupies `len` bytes from
//! there, and departs at the time of the opportunity that carries its last
//! byte. The data path keeps the cursor in one word per link and advances it
//! with a compare-and-swap (like the rate state in `edt`), and reads two
//! tables: each opportunity's time, and per ms of the period the number of
//! opportunities before it.

/// Bytes one delivery opportunity carries (Mahimahi's MTU).
pub const OPPORTUNITY_BYTES: u64 = 1500;
/// Opportunities per period the kernel holds (per slot): 262,144, e.g.
/// 65 s at 48 Mbit/s.
pub const TRACE_MAX_OPPORTUNITIES: u32 = 1 << 18;
/// The longest period, ms (262 s); `IMPAIR_TRACE_BEFORE` holds one more
/// entry per slot (the period itself).
pub const TRACE_MAX_PERIOD_MS: u32 = (1 << 18) - 1;
/// Entries of `IMPAIR_TRACE_BEFORE` per slot.
pub const TRACE_BEFORE_ENTRIES: u32 = TRACE_MAX_PERIOD_MS + 1;

/// A slot's rate trace (`IMPAIR_TRACE_HDR[slot]`): where it starts, its
/// shape, and the link's byte cursor, which the data path advances with a
/// compare-and-swap. No trace: `period_ms == 0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateTraceHeader {
    /// CLOCK_MONOTONIC time of the trace's time 0.
    pub start_ns: u64,
    /// Bytes of the trace's cumulative capacity used or lost so far.
    pub cursor_bytes: u64,
    pub period_ms: u32,
    pub opportunities: u32,
}

const _: () = assert!(core::mem::size_of::<RateTraceHeader>() == 24);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], integers only, no padding (size assert above).
    unsafe impl aya::Pod for super::RateTraceHeader {}
}

/// The trace's tables, as the data path reads them (map lookups) and the
/// host tests hold them (slices).
pub trait TraceTables {
    /// Opportunities in one period.
    fn opportunities(&self) -> u32;
    /// The period, ms (the trace's last time; at least 1).
    fn period_ms(&self) -> u32;
    /// The time of opportunity `k` (`k < opportunities()`), ms.
    fn time_ms(&self, k: u32) -> Option<u32>;
    /// Opportunities whose time is before `ms` (`ms <= period_ms()`).
    fn before_ms(&self, ms: u32) -> Option<u32>;
}

/// Capacity of the trace, in bytes, strictly before `t_ms` (ms since the
/// trace's start, any number of periods in).
#[inline(always)]
pub fn capacity_before<T: TraceTables>(t: &T, t_ms: u64) -> Option<u64> {
    let period = u64::from(t.period_ms());
    let n = u64::from(t.opportunities());
    if period == 0 || n == 0 {
        return None;
    }
    let whole = t_ms / period;
    let rest = (t_ms % period) as u32;
    let mut count = whole * n + u64::from(t.before_ms(rest)?);
    if rest == 0 && whole > 0 {
        // The previous period's opportunities at its last time (the period)
        // fall at `t_ms` itself: not before it.
        count -= n - u64::from(t.before_ms(period as u32)?);
    }
    Some(count * OPPORTUNITY_BYTES)
}

/// The time (ms since the trace's start) of the opportunity that carries
/// byte `byte` of the cumulative capacity (0-based).
#[inline(always)]
pub fn time_of_byte<T: TraceTables>(t: &T, byte: u64) -> Option<u64> {
    let n = u64::from(t.opportunities());
    if n == 0 {
        return None;
    }
    let k = byte / OPPORTUNITY_BYTES;
    let whole = k / n;
    let within = (k % n) as u32;
    Some(whole * u64::from(t.period_ms()) + u64::from(t.time_ms(within)?))
}

/// One packet of `len` bytes ready at `ready_ms` on a link whose cursor is
/// `cursor` bytes: the new cursor and the departure time, ms since the
/// trace's start. `None` when the tables do not answer.
#[inline(always)]
pub fn departure<T: TraceTables>(
    t: &T,
    cursor: u64,
    ready_ms: u64,
    len: u32,
) -> Option<(u64, u64)> {
    let avail = capacity_before(t, ready_ms)?;
    let start = if cursor > avail { cursor } else { avail };
    let end = start + u64::from(len.max(1));
    let depart = time_of_byte(t, end - 1)?;
    Some((end, depart))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    /// Tables from a list of opportunity times (non-decreasing, ms).
    struct Slices {
        times: Vec<u32>,
        before: Vec<u32>,
        period: u32,
    }

    impl Slices {
        fn new(times: &[u32]) -> Self {
            let period = (*times.last().unwrap()).max(1);
            let before = (0..=period)
                .map(|ms| times.iter().filter(|&&o| o < ms).count() as u32)
                .collect();
            Slices {
                times: times.to_vec(),
                before,
                period,
            }
        }
    }

    impl TraceTables for Slices {
        fn opportunities(&self) -> u32 {
            self.times.len() as u32
        }
        fn period_ms(&self) -> u32 {
            self.period
        }
        fn time_ms(&self, k: u32) -> Option<u32> {
            self.times.get(k as usize).copied()
        }
        fn before_ms(&self, ms: u32) -> Option<u32> {
            self.before.get(ms as usize).copied()
        }
    }

    /// The straightforward model: walk the looped opportunities one by one,
    /// each carrying 1500 bytes of whatever is queued by its time; a packet
    /// leaves with the opportunity that carries its last byte.
    fn simulate(times: &[u32], packets: &[(u64, u32)]) -> Vec<u64> {
        let period = u64::from((*times.last().unwrap()).max(1));
        let opp = |k: u64| {
            (k / times.len() as u64) * period + u64::from(times[(k % times.len() as u64) as usize])
        };
        let mut out = Vec::new();
        let mut k = 0u64; // next opportunity
        let mut room = 0u64; // bytes left in opportunity k - 1
        let mut last_time = 0u64;
        for &(ready, len) in packets {
            let mut need = u64::from(len.max(1));
            // Capacity left over from before `ready` is lost.
            if room > 0 && last_time < ready {
                room = 0;
            }
            while opp(k) < ready && room == 0 {
                k += 1;
            }
            let mut depart = last_time;
            while need > 0 {
                if room == 0 {
                    last_time = opp(k);
                    k += 1;
                    room = OPPORTUNITY_BYTES;
                }
                let take = need.min(room);
                need -= take;
                room -= take;
                depart = last_time;
            }
            out.push(depart);
        }
        out
    }

    fn replay(times: &[u32], packets: &[(u64, u32)]) -> Vec<u64> {
        let t = Slices::new(times);
        let mut cursor = 0;
        packets
            .iter()
            .map(|&(ready, len)| {
                let (c, d) = departure(&t, cursor, ready, len).unwrap();
                cursor = c;
                d
            })
            .collect()
    }

    #[test]
    fn one_opportunity_per_ms_is_12_mbit() {
        let times: Vec<u32> = (1..=1000).collect();
        let t = Slices::new(&times);
        // 1000 opportunities of 1500 bytes per second.
        assert_eq!(capacity_before(&t, 1000).unwrap(), 999 * 1500);
        assert_eq!(capacity_before(&t, 2000).unwrap(), 1999 * 1500);
        // Back-to-back 1500-byte packets ready at 0: one per ms.
        let packets: Vec<(u64, u32)> = (0..5).map(|_| (0, 1500)).collect();
        assert_eq!(replay(&times, &packets), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn repeated_times_are_several_opportunities_and_the_trace_loops() {
        let times = [2, 2, 2, 10];
        let packets: Vec<(u64, u32)> = (0..6).map(|_| (0, 1500)).collect();
        assert_eq!(replay(&times, &packets), [2, 2, 2, 10, 12, 12]);
    }

    #[test]
    fn unused_capacity_is_lost_and_small_packets_share_an_opportunity() {
        let times = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        // Idle until 5.x ms: the opportunities before 5 are gone.
        assert_eq!(replay(&times, &[(5, 1500)]), [5]);
        // Three 500-byte packets share one opportunity.
        assert_eq!(
            replay(&times, &[(3, 500), (3, 500), (3, 500), (3, 500)]),
            [3, 3, 3, 4]
        );
    }

    #[test]
    fn matches_the_straightforward_simulation() {
        // A deterministic pseudo-random trace and packet stream.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..50 {
            let mut times = Vec::new();
            let mut t = 0u32;
            for _ in 0..(1 + next() % 200) {
                t += (next() % 4) as u32;
                times.push(t.max(1));
            }
            let mut packets = Vec::new();
            let mut ready = 0u64;
            for _ in 0..300 {
                ready += next() % 3;
                packets.push((ready, 40 + (next() % 1461) as u32));
            }
            assert_eq!(
                replay(&times, &packets),
                simulate(&times, &packets),
                "{times:?}"
            );
        }
    }
}
