//! Delay and loss series: a value per time step, replayed in the kernel.
//! The controller expands a `time,value` series (stepped or linearly
//! interpolated) into at most [`SERIES_POINTS`] values, one per `step_ns`
//! (1 ms, or coarser for series longer than 65.536 s), in `IMPAIR_SERIES`;
//! the data path reads the value for `now` ([`series_index`]) and uses it
//! instead of the rule's delay or loss. One delay series and one loss series
//! per rule set, in the rule set's slot.

use crate::SLOTS;

/// Values per series (65,536 ms at 1 ms steps).
pub const SERIES_POINTS: u32 = 1 << 16;
/// The series kinds, each with its own header and values per slot.
pub const SERIES_KINDS: u32 = 2;
/// `kind` of a delay series: values are microseconds.
pub const SERIES_DELAY: u32 = 0;
/// `kind` of a loss series: values are u32 probability thresholds.
pub const SERIES_LOSS: u32 = 1;
/// Headers in `IMPAIR_SERIES_HDR`: `slot * SERIES_KINDS + kind`.
pub const SERIES_HEADERS: u32 = SLOTS * SERIES_KINDS;
/// Values in `IMPAIR_SERIES`: `(slot * SERIES_KINDS + kind) * SERIES_POINTS + i`.
pub const SERIES_ENTRIES: u32 = SERIES_HEADERS * SERIES_POINTS;

/// `SeriesHeader::flags` bits.
pub mod series_flags {
    /// After the last value, start again at the first (else hold the last).
    pub const LOOP: u32 = 1 << 0;
}

/// Where a series starts and how it is laid out (`IMPAIR_SERIES_HDR`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeriesHeader {
    /// CLOCK_MONOTONIC time of the series' time 0.
    pub start_ns: u64,
    /// Time per value, ns (at least 1).
    pub step_ns: u64,
    /// Values in use, 1..=[`SERIES_POINTS`]; 0: no series.
    pub len: u32,
    /// [`series_flags`] bits.
    pub flags: u32,
}

const _: () = assert!(core::mem::size_of::<SeriesHeader>() == 24);

/// The value index for time `now_ns`, or `None` when the header holds no
/// series. Before the start: the first value. Past the end: from the start
/// again ([`series_flags::LOOP`]) or the last value.
#[inline(always)]
pub fn series_index(h: &SeriesHeader, now_ns: u64) -> Option<u32> {
    if h.len == 0 || h.step_ns == 0 {
        return None;
    }
    let since = now_ns.saturating_sub(h.start_ns);
    let i = since / h.step_ns;
    let len = u64::from(h.len);
    let i = if i < len {
        i
    } else if h.flags & series_flags::LOOP != 0 {
        i % len
    } else {
        len - 1
    };
    Some(i as u32)
}

/// Index of value `i` of `kind` in `slot`'s series in `IMPAIR_SERIES`.
#[inline(always)]
pub fn series_slot_index(slot: u32, kind: u32, i: u32) -> u32 {
    (slot * SERIES_KINDS + kind) * SERIES_POINTS + (i & (SERIES_POINTS - 1))
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)], integers only, no padding (size assert above).
    unsafe impl aya::Pod for super::SeriesHeader {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(len: u32, flags: u32) -> SeriesHeader {
        SeriesHeader {
            start_ns: 1_000_000_000,
            step_ns: 1_000_000,
            len,
            flags,
        }
    }

    #[test]
    fn index_is_the_millisecond_since_the_start() {
        let s = h(100, 0);
        assert_eq!(series_index(&s, 1_000_000_000), Some(0));
        assert_eq!(series_index(&s, 1_000_999_999), Some(0));
        assert_eq!(series_index(&s, 1_001_000_000), Some(1));
        assert_eq!(series_index(&s, 1_099_500_000), Some(99));
        assert_eq!(series_index(&s, 0), Some(0), "before the start: the first");
    }

    #[test]
    fn past_the_end_loops_or_holds() {
        assert_eq!(series_index(&h(100, 0), 1_250_000_000), Some(99));
        assert_eq!(
            series_index(&h(100, series_flags::LOOP), 1_250_000_000),
            Some(50)
        );
        assert_eq!(series_index(&h(0, 0), 1_250_000_000), None);
    }

    #[test]
    fn slots_and_kinds_do_not_overlap() {
        assert_eq!(series_slot_index(0, SERIES_DELAY, 0), 0);
        assert_eq!(series_slot_index(0, SERIES_LOSS, 0), SERIES_POINTS);
        assert_eq!(
            series_slot_index(1, SERIES_LOSS, SERIES_POINTS - 1),
            SERIES_ENTRIES - 1
        );
    }
}
