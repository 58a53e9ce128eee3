//! Where a running delay or loss series is (`impair stats`): its position in
//! the series, how many times it has looped (or whether it now holds its
//! last value), and the value in force, as the data path reads it
//! (`impair_common::series::series_index`).
use anyhow::Result;
use impair_common::{
    prob,
    series::{
        series_flags, series_index, series_slot_index, SeriesHeader, SERIES_DELAY, SERIES_KINDS,
        SERIES_LOSS,
    },
};
use serde::Serialize;

use crate::{
    maps::Maps,
    model::{fmt_duration_ns, fmt_percent},
    sys,
};

#[derive(Debug, Clone, Serialize)]
pub struct SeriesStats {
    /// `delay` or `loss`.
    pub kind: &'static str,
    /// The series' length (its values × its step), ms.
    pub length_ms: u64,
    /// Time per value, ns (1 ms, or coarser for long series).
    pub step_ns: u64,
    /// After its end the series starts again (else it holds its last value).
    pub looped: bool,
    /// Ms into the current pass (the length itself once a held series ended).
    pub position_ms: u64,
    /// Whole passes since the series started (0 for a held series).
    pub loops: u64,
    /// The series has ended and holds its last value.
    pub held: bool,
    /// The value in force: its index in the series.
    pub index: u32,
    /// A delay series' value in force, ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ns: Option<u64>,
    /// A loss series' value in force, a ratio.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
}

/// Where series `h` is at `now_ns`: (ns into the current pass, whole
/// passes, held at its end). `None` without a series.
pub fn position(h: &SeriesHeader, now_ns: u64) -> Option<(u64, u64, bool)> {
    if h.len == 0 || h.step_ns == 0 {
        return None;
    }
    let length = u64::from(h.len).saturating_mul(h.step_ns);
    let since = now_ns.saturating_sub(h.start_ns);
    Some(if since < length {
        (since, 0, false)
    } else if h.flags & series_flags::LOOP != 0 {
        (since % length, since / length, false)
    } else {
        (length, 0, true)
    })
}

/// The series of `slot` (delay first, then loss) at this moment.
pub fn read(maps: &Maps, slot: u32) -> Result<Vec<SeriesStats>> {
    let mut out = Vec::new();
    for kind in [SERIES_DELAY, SERIES_LOSS] {
        let h = maps.series_hdr.get(&(slot * SERIES_KINDS + kind), 0)?;
        let now = sys::monotonic_ns();
        let (Some((pos_ns, loops, held)), Some(index)) = (position(&h, now), series_index(&h, now))
        else {
            continue;
        };
        let v = maps.series.get(&series_slot_index(slot, kind, index), 0)?;
        let delay = kind == SERIES_DELAY;
        out.push(SeriesStats {
            kind: if delay { "delay" } else { "loss" },
            length_ms: u64::from(h.len).saturating_mul(h.step_ns) / 1_000_000,
            step_ns: h.step_ns,
            looped: h.flags & series_flags::LOOP != 0,
            position_ms: pos_ns / 1_000_000,
            loops,
            held,
            index,
            // Delay values are µs, loss values probability thresholds.
            delay_ns: delay.then(|| u64::from(v) * 1_000),
            loss: (!delay).then(|| prob::to_fraction(v)),
        });
    }
    Ok(out)
}

/// The line `impair stats` prints for one.
pub fn render(s: &SeriesStats) -> String {
    let value = match (s.delay_ns, s.loss) {
        (Some(d), _) => fmt_duration_ns(d),
        (_, Some(l)) => fmt_percent(l),
        _ => "-".into(),
    };
    let at = if s.held {
        format!("ended after {} ms, holding its last value", s.length_ms)
    } else if s.looped {
        format!(
            "at {} ms of {} ms (loop {})",
            s.position_ms, s.length_ms, s.loops
        )
    } else {
        format!("at {} ms of {} ms (then held)", s.position_ms, s.length_ms)
    };
    format!("  {} series: {at}; now {value} (value {})", s.kind, s.index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_loop_or_hold() {
        let h = SeriesHeader {
            start_ns: 1_000,
            step_ns: 1_000_000,
            len: 100,
            flags: series_flags::LOOP,
        };
        assert_eq!(position(&h, 0), Some((0, 0, false)), "before the start");
        assert_eq!(
            position(&h, 1_000 + 42_000_000),
            Some((42_000_000, 0, false))
        );
        assert_eq!(
            position(&h, 1_000 + 250_000_000),
            Some((50_000_000, 2, false))
        );
        let held = SeriesHeader { flags: 0, ..h };
        assert_eq!(
            position(&held, 1_000 + 250_000_000),
            Some((100_000_000, 0, true))
        );
        assert_eq!(position(&SeriesHeader::default(), 5), None);
    }
}
