//! Delay and loss series (`impair_common::series`): the value of the rule
//! set's series for now. Only rules with `rule_flags::DELAY_SERIES` or
//! `LOSS_SERIES` come here.
use impair_common::{
    series::{series_index, series_slot_index, SERIES_KINDS},
    DataPathError, MAX_RULES,
};

use crate::{
    maps::{SERIES, SERIES_HDR},
    Result,
};

/// The value of series `kind` of the slot rule `idx` belongs to, at `now_ns`;
/// `None` when the slot has no such series (the rule's own value applies).
#[inline(always)]
pub fn value(idx: u32, kind: u32, now_ns: u64) -> Result<Option<u32>> {
    let slot = (idx / MAX_RULES) & 1;
    let h = SERIES_HDR
        .get(slot * SERIES_KINDS + kind)
        .ok_or(DataPathError::MapLookup)?;
    let Some(i) = series_index(h, now_ns) else {
        return Ok(None);
    };
    let v = SERIES
        .get(series_slot_index(slot, kind, i))
        .ok_or(DataPathError::MapLookup)?;
    Ok(Some(*v))
}
