//! Finding a packet's rule: parse its headers into a key, narrow the rules
//! with the index (`impair_common::index`), and walk the candidates in order;
//! the first rule that matches in full wins.
use impair_common::{index::lowest_bit, ruleset_flags, DataPathError, PacketKey, MAX_RULES};

use crate::{
    hook::Hook,
    maps::{INDEX, KEY, MATCHED, RULES},
    parse::{parse_eth, Cursor},
    pkt::Packet,
    socket, Result,
};

/// Parses the packet into this CPU's key scratch (`IMPAIR_KEY`) and returns
/// it; at tc it also reads the packet's socket's cgroup (`socket`) when a
/// rule of the set (`set_flags`) matches on it.
///
/// The key lives in a per-CPU scratch map, not on the stack: the verifier
/// then forgets the per-path constants the parser wrote (IPv4 vs IPv6,
/// protocol, offsets), and the rule walk after it is verified once instead of
/// once per way through the parser.
#[inline(always)]
pub fn parse_key<H: Hook>(h: &H, set_flags: u32) -> Result<&'static PacketKey> {
    let key = KEY.get_ptr_mut(0).ok_or(DataPathError::MapLookup)?;
    // SAFETY: this CPU's per-CPU value; programs do not migrate while running,
    // and a nested run (a duplicate) returns before touching it.
    let key = unsafe { &mut *key };
    clear(key);
    let pkt = h.packet();
    parse_eth(Cursor::new(pkt.data(), pkt.data_end()), key);
    if set_flags & ruleset_flags::CGROUP != 0 {
        if let Some(ctx) = h.tc() {
            key.cgroup_id = socket::cgroup_id(ctx, key, H::EGRESS);
        }
    }
    Ok(key)
}

/// Zeroes the key with one store per word. `*key = PacketKey::default()`
/// compiles to a call of a byte-at-a-time `memset` (the BPF target has no
/// wider builtin), which cost more than parsing the packet.
#[inline(always)]
fn clear(key: &mut PacketKey) {
    const WORDS: usize = core::mem::size_of::<PacketKey>() / 8;
    const _: () = assert!(core::mem::size_of::<PacketKey>().is_multiple_of(8));
    const _: () = assert!(core::mem::align_of::<PacketKey>() == 8);
    let words = (key as *mut PacketKey).cast::<u64>();
    for i in 0..WORDS {
        // SAFETY: `key` is 8-aligned and WORDS * 8 bytes long (asserted
        // above), and every bit pattern is a valid PacketKey. Volatile keeps
        // LLVM from folding the stores back into a memset call.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
}

/// The `IMPAIR_RULES` index of the first of the slot's `count` rules that
/// matches the key [`parse_key`] returned, or `None`.
///
/// The index narrows the walk to the rules the packet's fields admit (a
/// superset of those that match, in rule order), and each is checked in
/// full, so the first that matches is the one a plain walk would find.
/// The rule's position travels through a per-CPU scratch slot
/// (`IMPAIR_MATCHED`): read back from a map it is an unknown scalar to the
/// verifier, so the 64 ways out of the loop merge into one state and the
/// (large) impairment code after it is verified once, not once per rule
/// position.
///
/// The key comes as a raw pointer, not a `&PacketKey`: a reference
/// parameter tells LLVM that nothing changes the key while this function
/// runs, so it would carry the values the parser stored (a constant per way
/// through the parser) past the map lookups below instead of reloading them,
/// and the verifier would walk the rules once per way through the parser
/// (more than twice the instructions).
#[inline(always)]
pub fn first_match(slot: u32, count: u32, key: *const PacketKey) -> Result<Option<u32>> {
    // SAFETY: `key` is this CPU's `IMPAIR_KEY` value from `parse_key`; programs
    // do not migrate while running and nothing else writes it meanwhile.
    let key = unsafe { &*key };
    let base = slot * MAX_RULES;
    let mut candidates = INDEX
        .get(slot)
        .ok_or(DataPathError::MapLookup)?
        .candidates(key);
    // The header's count bounds the walk whatever the index says: the index
    // is written with the same slot's rules, so this only matters if the two
    // ever disagree, and then the header (what `impair stats` reports) wins.
    if count < MAX_RULES {
        candidates &= (1u64 << count) - 1;
    }
    // No candidate (the common case for traffic the rules do not name): no
    // rule can match, and the walk's scratch is not touched.
    if candidates == 0 {
        return Ok(None);
    }
    let scratch = MATCHED.get_ptr_mut(0).ok_or(DataPathError::MapLookup)?;
    // SAFETY: this CPU's per-CPU value; programs do not migrate while running.
    unsafe { *scratch = MAX_RULES };
    for _ in 0..MAX_RULES {
        if candidates == 0 {
            break;
        }
        let i = lowest_bit(candidates);
        let rule = RULES.get(base + i).ok_or(DataPathError::MapLookup)?;
        if rule.matcher.matches(key) {
            // SAFETY: as above.
            unsafe { *scratch = i };
            break;
        }
        candidates &= candidates - 1;
    }
    // SAFETY: as above.
    let hit = unsafe { core::ptr::read_volatile(scratch) };
    if hit >= MAX_RULES {
        return Ok(None);
    }
    Ok(Some(base + hit))
}
