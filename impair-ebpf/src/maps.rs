//! The maps, named as in `impair_common::map_names` (docs/map-abi.md): their
//! definitions in the object. impair-user/src/maps.rs opens the same maps
//! from the controller's side.
use aya_ebpf::{
    macros::map,
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray},
};
use impair_common::{
    index::MatchIndex,
    matrix::{MatrixAddr, MatrixEntry, MATRIX_ENTRIES},
    series::{SeriesHeader, SERIES_ENTRIES, SERIES_HEADERS},
    trace::{RateTraceHeader, TRACE_BEFORE_ENTRIES, TRACE_MAX_OPPORTUNITIES},
    DelayTable, FlowKey, GlobalCounters, Owner, PacketKey, Rule, RuleCounters, RuleSetHeader,
    CONTROL_ENTRIES, RULE_ENTRIES, SLOTS,
};

#[map(name = "IMPAIR_CONTROL")]
pub static CONTROL: Array<u64> = Array::with_max_entries(CONTROL_ENTRIES, 0);

#[map(name = "IMPAIR_RULESETS")]
pub static RULESETS: Array<RuleSetHeader> = Array::with_max_entries(SLOTS, 0);

#[map(name = "IMPAIR_RULES")]
pub static RULES: Array<Rule> = Array::with_max_entries(RULE_ENTRIES, 0);

/// Per slot: which rules each field value admits (`impair_common::index`),
/// so finding a packet's rule does not walk every rule before it.
#[map(name = "IMPAIR_INDEX")]
pub static INDEX: Array<MatchIndex> = Array::with_max_entries(SLOTS, 0);

#[map(name = "IMPAIR_RULE_CNT")]
pub static RULE_COUNTERS: PerCpuArray<RuleCounters> =
    PerCpuArray::with_max_entries(RULE_ENTRIES, 0);

#[map(name = "IMPAIR_GLOBAL")]
pub static GLOBAL_COUNTERS: PerCpuArray<GlobalCounters> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "IMPAIR_RNG")]
pub static RNG: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Written once by the controller; never read by the programs. It lives here so
/// that another `impair` process finds the owner through the attached program.
#[map(name = "IMPAIR_OWNER")]
pub static OWNER: Array<Owner> = Array::with_max_entries(1, 0);

/// Loss-model state per rule (Gilbert-Elliott or 4-state), one chain per CPU
/// so a flow (which stays on one CPU) sees the model's bursts; zeroed by the
/// controller when it writes a rule set.
#[map(name = "IMPAIR_LOSS_ST")]
pub static LOSS_STATE: PerCpuArray<u32> = PerCpuArray::with_max_entries(RULE_ENTRIES, 0);

/// Per-rule quantile tables for jitter, written with the rule set.
#[map(name = "IMPAIR_TABLES")]
pub static TABLES: Array<DelayTable> = Array::with_max_entries(RULE_ENTRIES, 0);

/// Per-rule departure time of the last packet through the emulated link
/// (rate), shared by all CPUs like Cilium's EDT state, but advanced with a
/// compare-and-swap so concurrent packets never share a slot.
#[map(name = "IMPAIR_RATE_ST")]
pub static RATE_STATE: Array<u64> = Array::with_max_entries(RULE_ENTRIES, 0);

/// Per-rule, per-CPU random word of the last jitter draw (delay correlation).
#[map(name = "IMPAIR_DELAY_ST")]
pub static DELAY_STATE: PerCpuArray<u64> = PerCpuArray::with_max_entries(RULE_ENTRIES, 0);

/// Per-flow last departure time for in-order jitter, raised atomically (a
/// flow can be on several CPUs at once).
#[map(name = "IMPAIR_FLOWS")]
pub static FLOWS: LruHashMap<FlowKey, u64> = LruHashMap::with_max_entries(65_536, 0);

/// Set while `bpf_clone_redirect` sends a duplicate, so the nested run of the
/// program on the clone (same CPU, synchronous) lets it pass untouched.
#[map(name = "IMPAIR_DUP")]
pub static DUPLICATING: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Scratch: the parsed headers of the current packet (see `classify::parse_key`);
/// shared by the three programs, which never run nested on one CPU except
/// egress on its own duplicate, which returns before touching it.
#[map(name = "IMPAIR_KEY")]
pub static KEY: PerCpuArray<PacketKey> = PerCpuArray::with_max_entries(1, 0);

/// Scratch: the index of the rule that matched the current packet (see
/// `classify::first_match` for why it goes through a map).
#[map(name = "IMPAIR_MATCHED")]
pub static MATCHED: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Latency matrices (`impair_common::matrix`): per (rule, destination
/// prefix) parameters, rate state and counters. Not preallocated (an LPM
/// trie never is): it costs memory only for the prefixes written.
#[map(name = "IMPAIR_MATRIX")]
pub static MATRIX: LpmTrie<MatrixAddr, MatrixEntry> = LpmTrie::with_max_entries(MATRIX_ENTRIES, 0);

/// Delay and loss series (`impair_common::series`): where each of a slot's
/// series starts and its step, then its values.
#[map(name = "IMPAIR_SERIES_H")]
pub static SERIES_HDR: Array<SeriesHeader> = Array::with_max_entries(SERIES_HEADERS, 0);

#[map(name = "IMPAIR_SERIES")]
pub static SERIES: Array<u32> = Array::with_max_entries(SERIES_ENTRIES, 0);

/// Rate traces (`impair_common::trace`), per slot: header and cursor, each
/// opportunity's time (ms), and per ms of the period the opportunities
/// before it.
#[map(name = "IMPAIR_TRACE_H")]
pub static TRACE_HDR: Array<RateTraceHeader> = Array::with_max_entries(SLOTS, 0);

#[map(name = "IMPAIR_TRACE_T")]
pub static TRACE_TIMES: Array<u32> = Array::with_max_entries(SLOTS * TRACE_MAX_OPPORTUNITIES, 0);

#[map(name = "IMPAIR_TRACE_B")]
pub static TRACE_BEFORE: Array<u32> = Array::with_max_entries(SLOTS * TRACE_BEFORE_ENTRIES, 0);
