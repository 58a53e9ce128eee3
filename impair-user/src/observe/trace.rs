//! Where a running rate trace is (`impair stats`): its position in the
//! period, how many periods have passed, the capacity it has offered since
//! it started, what it delivered (the wire bytes of the packets it gave a
//! departure time, `RuleCounters::trace_bytes`), and the load the rules
//! with the trace were offered (wire bytes matched) with the packets the
//! queue limit dropped. `delivered_bytes <= offered_bytes` always holds
//! (modulo one packet a contended update may let share capacity); the
//! rest of the offered capacity went unused (no packet was waiting).
use anyhow::Result;
use impair_common::trace::{
    capacity_before, TraceTables, TRACE_BEFORE_ENTRIES, TRACE_MAX_OPPORTUNITIES,
};
use serde::Serialize;

use crate::{maps::Maps, sys};

#[derive(Debug, Clone, Serialize)]
pub struct TraceStats {
    pub period_ms: u32,
    pub opportunities: u32,
    /// Ms into the current period.
    pub position_ms: u64,
    /// Whole periods since the trace started.
    pub loops: u64,
    /// The trace's capacity since it started, bytes.
    pub offered_bytes: u64,
    /// Wire bytes (with the rules' overhead) the trace carried: the packets
    /// it gave a departure time, which went on to fq. An instance of an
    /// impair before this counter reads 0.
    pub delivered_bytes: u64,
    /// Wire bytes the rules with the trace matched (the offered load).
    pub load_wire_bytes: u64,
    /// Packets (skbs) the trace's queue limit dropped.
    pub dropped_queue: u64,
    /// The trace's time 0, `CLOCK_MONOTONIC` ns (when its rule set was
    /// written): a receiver lines its own clock up with the trace by it.
    pub start_ns: u64,
}

/// The tables read from the maps (two lookups per question).
struct MapTables<'a> {
    maps: &'a Maps,
    slot: u32,
    period_ms: u32,
    opportunities: u32,
}

impl TraceTables for MapTables<'_> {
    fn opportunities(&self) -> u32 {
        self.opportunities
    }
    fn period_ms(&self) -> u32 {
        self.period_ms
    }
    fn time_ms(&self, k: u32) -> Option<u32> {
        self.maps
            .trace_times
            .get(&(self.slot * TRACE_MAX_OPPORTUNITIES + k), 0)
            .ok()
    }
    fn before_ms(&self, ms: u32) -> Option<u32> {
        self.maps
            .trace_before
            .get(&(self.slot * TRACE_BEFORE_ENTRIES + ms), 0)
            .ok()
    }
}

/// What the rules with the trace counted, summed: the load they were
/// offered, what the trace delivered and what its queue limit dropped.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLoad {
    pub load_wire_bytes: u64,
    pub delivered_bytes: u64,
    pub dropped_queue: u64,
}

/// `slot`'s trace, with the counts from the caller (the rules' counters);
/// `None` without one.
pub fn read(maps: &Maps, slot: u32, load: TraceLoad) -> Result<Option<TraceStats>> {
    let h = maps.trace_header(slot)?;
    if h.period_ms == 0 {
        return Ok(None);
    }
    let since_ms = sys::monotonic_ns().saturating_sub(h.start_ns) / 1_000_000;
    let t = MapTables {
        maps,
        slot,
        period_ms: h.period_ms,
        opportunities: h.opportunities,
    };
    Ok(Some(TraceStats {
        period_ms: h.period_ms,
        opportunities: h.opportunities,
        position_ms: since_ms % u64::from(h.period_ms),
        loops: since_ms / u64::from(h.period_ms),
        offered_bytes: capacity_before(&t, since_ms).unwrap_or(0),
        delivered_bytes: load.delivered_bytes,
        load_wire_bytes: load.load_wire_bytes,
        dropped_queue: load.dropped_queue,
        start_ns: h.start_ns,
    }))
}

/// The line `impair stats` prints for it.
pub fn render(t: &TraceStats) -> String {
    format!(
        "  rate trace: at {} ms of its {} ms period (loop {}), {} opportunities a period; capacity offered {} bytes, delivered {} bytes, load {} wire bytes, queue-dropped {}",
        t.position_ms,
        t.period_ms,
        t.loops,
        t.opportunities,
        t.offered_bytes,
        t.delivered_bytes,
        t.load_wire_bytes,
        t.dropped_queue
    )
}
