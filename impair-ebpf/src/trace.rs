//! Rate traces (`impair_common::trace`): when the rule set's trace has
//! capacity for the packet. Only rules with `rule_flags::RATE_TRACE` come
//! here.
use impair_common::{
    trace::{departure, TraceTables, TRACE_BEFORE_ENTRIES, TRACE_MAX_OPPORTUNITIES},
    DataPathError, MAX_RULES,
};

use crate::{
    atomic,
    maps::{TRACE_BEFORE, TRACE_HDR, TRACE_TIMES},
    Result,
};

/// The slot's tables, read through the maps.
struct Tables {
    slot: u32,
    period_ms: u32,
    opportunities: u32,
}

impl TraceTables for Tables {
    #[inline(always)]
    fn opportunities(&self) -> u32 {
        self.opportunities
    }
    #[inline(always)]
    fn period_ms(&self) -> u32 {
        self.period_ms
    }
    #[inline(always)]
    fn time_ms(&self, k: u32) -> Option<u32> {
        if k >= TRACE_MAX_OPPORTUNITIES {
            return None;
        }
        TRACE_TIMES
            .get(self.slot * TRACE_MAX_OPPORTUNITIES + k)
            .copied()
    }
    #[inline(always)]
    fn before_ms(&self, ms: u32) -> Option<u32> {
        if ms >= TRACE_BEFORE_ENTRIES {
            return None;
        }
        TRACE_BEFORE
            .get(self.slot * TRACE_BEFORE_ENTRIES + ms)
            .copied()
    }
}

/// When a packet of `bytes` ready at `ready_ns` leaves the trace's link:
/// `Some(t)`, or `None` when it would wait longer than `limit_ns` (0: no
/// limit), the cursor left alone. A slot without a trace: `ready_ns`.
#[inline(always)]
pub fn depart(idx: u32, ready_ns: u64, bytes: u64, limit_ns: u64) -> Result<Option<u64>> {
    let slot = (idx / MAX_RULES) & 1;
    let h = TRACE_HDR
        .get_ptr_mut(slot)
        .ok_or(DataPathError::MapLookup)?;
    // SAFETY: a live array value; `cursor_bytes` is only accessed atomically,
    // the rest is written by the controller before the slot is active.
    let (start, period_ms, opportunities) =
        unsafe { ((*h).start_ns, (*h).period_ms, (*h).opportunities) };
    if period_ms == 0 || opportunities == 0 {
        return Ok(Some(ready_ns));
    }
    let t = Tables {
        slot,
        period_ms,
        opportunities,
    };
    // SAFETY: as above; a field of the value, 8-aligned.
    let cursor = unsafe { &raw mut (*h).cursor_bytes };
    let ready_ms = ready_ns.saturating_sub(start) / 1_000_000;
    let len = if bytes > u64::from(u32::MAX) {
        u32::MAX
    } else {
        bytes as u32
    };
    // SAFETY: `cursor` is valid for the program's run; all access is atomic.
    let mut cur = unsafe { atomic::load(cursor) };
    let mut d = ready_ns;
    // Fewer attempts than the rule's rate: each one walks the trace's tables,
    // and the verifier walks every attempt.
    for _ in 0..TRACE_CAS_ATTEMPTS {
        let Some((end, depart_ms)) = departure(&t, cur, ready_ms, len) else {
            return Err(DataPathError::MapLookup);
        };
        let at = start + depart_ms * 1_000_000;
        d = if at < ready_ns { ready_ns } else { at };
        if limit_ns != 0 && d - ready_ns > limit_ns {
            return Ok(None);
        }
        // SAFETY: as above.
        match unsafe { atomic::compare_exchange(cursor, cur, end) } {
            Ok(_) => return Ok(Some(d)),
            Err(seen) => cur = seen,
        }
    }
    // Still contended: leave at the last computed time without booking it
    // (at worst this packet shares capacity with another one).
    Ok(Some(d))
}

/// Compare-and-swap attempts on the trace's cursor.
const TRACE_CAS_ATTEMPTS: u32 = 2;
