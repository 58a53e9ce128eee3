//! Fixtures for the BPF_PROG_TEST_RUN tier: load the real programs with a
//! rule set, run one of them (tc egress, tc ingress or XDP) on a crafted
//! frame, and read verdicts, rewritten frames, `skb->tstamp` and counters.
//! Verdicts are turned into "passed or not" so one test serves every hook,
//! whose verdict codes differ.
use aya::programs::{TestRun as _, TestRunOptions, TestRunResult};
use impair::{
    engine::{Loaded, Program},
    model::units::parse_cidr,
    model::{compile_all, MatchSpec, RuleSpec},
};
use impair_common::RuleCounters;

use crate::{
    packet::{tcp4_csum, tcp4_csum_ok, udp4_csum, udp4_csum_ok, udp6_csum, udp6_csum_ok},
    require_privileges, CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6,
};

/// Every hook, in the order the data path was written: egress first.
pub const ALL_HOOKS: [Program; 3] = Program::ALL;
/// The receive-side hooks (no delay, duplication or reordering there).
pub const RECEIVE: [Program; 2] = [Program::TcIngress, Program::Xdp];

pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
/// tc egress drops by redirecting to ifindex 0 (a network loss: the sender
/// is told the packet went out, and the kernel frees it).
pub const TC_ACT_REDIRECT: u32 = 7;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// The object with all three programs, `rules` active, seed 42.
pub fn load(rules: &[RuleSpec]) -> Loaded {
    load_seeded(rules, 42)
}

/// The object with all three programs, `rules` active, generators seeded.
pub fn load_seeded(rules: &[RuleSpec], seed: u64) -> Loaded {
    require_privileges();
    Loaded::new(&compile_all(rules).unwrap(), seed).unwrap()
}

/// One BPF_PROG_TEST_RUN of program `p`.
pub fn test_run(l: &mut Loaded, p: Program, opts: TestRunOptions<'_>) -> TestRunResult {
    try_test_run(l, p, opts).unwrap_or_else(|e| panic!("{p:?}: test run failed: {e}"))
}

/// One BPF_PROG_TEST_RUN of program `p`, or the kernel's refusal to run it
/// (the test harness rejects some frames before the program sees them, e.g.
/// one shorter than an Ethernet header).
pub fn try_test_run(
    l: &mut Loaded,
    p: Program,
    opts: TestRunOptions<'_>,
) -> Result<TestRunResult, aya::programs::ProgramError> {
    match p {
        Program::TcEgress => l.tc_egress().unwrap().test_run(opts),
        Program::TcIngress => l.tc_ingress().unwrap().test_run(opts),
        Program::Xdp => l.xdp().unwrap().test_run(opts),
        Program::Redirect => panic!("impair_redirect only redirects; it is not test-run"),
        Program::Segmented => panic!("impair_segmented only redirects; it is not test-run"),
    }
}

/// Whether the program passed the packet (and checks the return value is
/// one of the two the hook allows: a drop at tc egress is a redirect to
/// ifindex 0, never `TC_ACT_SHOT`, which would tell a local sender).
pub fn passed(p: Program, rv: u32) -> bool {
    match (p, rv) {
        (Program::Xdp, XDP_PASS) | (Program::TcEgress | Program::TcIngress, TC_ACT_OK) => true,
        (Program::Xdp, XDP_DROP)
        | (Program::TcEgress, TC_ACT_REDIRECT)
        | (Program::TcIngress, TC_ACT_SHOT) => false,
        _ => panic!("{p:?} returned {rv}"),
    }
}

/// Runs `frame` `repeat` times; whether the (last) run passed it.
pub fn run(l: &mut Loaded, p: Program, frame: &[u8], repeat: u32) -> bool {
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat,
        ..Default::default()
    };
    passed(p, test_run(l, p, opts).return_value)
}

/// Runs `frame` once; whether it passed, and the frame as the program left it.
pub fn run_out(l: &mut Loaded, p: Program, frame: &[u8]) -> (bool, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ..Default::default()
    };
    let r = test_run(l, p, opts);
    out.truncate(r.data_size_out as usize);
    (passed(p, r.return_value), out)
}

/// Offset of `tstamp` in `struct __sk_buff` (include/uapi/linux/bpf.h), and
/// the struct's size on every kernel since 5.16 (hwtstamp is its last field).
const SKB_TSTAMP_OFFSET: usize = 152;
const SKB_SIZE: usize = 192;

/// Offset of `gso_segs` in `struct __sk_buff`.
const SKB_GSO_SEGS_OFFSET: usize = 164;

/// Runs tc program `p` once with a `__sk_buff` context; returns whether it
/// passed the packet and `skb->tstamp` (the departure time, 0 for "now").
pub fn run_tstamp(l: &mut Loaded, p: Program, frame: &[u8]) -> (bool, u64) {
    run_skb(l, p, frame, 0, 0)
}

/// Runs tc program `p` once on an skb that arrives with `tstamp` (a departure
/// time its sender set, or a receive timestamp) and `gso_segs` (a GSO/GRO
/// super-packet of that many wire packets; 0 is a plain one); returns
/// whether it passed the packet and `skb->tstamp` after it.
pub fn run_skb(
    l: &mut Loaded,
    p: Program,
    frame: &[u8],
    tstamp: u64,
    gso_segs: u32,
) -> (bool, u64) {
    assert_ne!(p, Program::Xdp, "XDP has no skb");
    let mut ctx_in = [0u8; SKB_SIZE];
    ctx_in[SKB_TSTAMP_OFFSET..SKB_TSTAMP_OFFSET + 8].copy_from_slice(&tstamp.to_ne_bytes());
    ctx_in[SKB_GSO_SEGS_OFFSET..SKB_GSO_SEGS_OFFSET + 4].copy_from_slice(&gso_segs.to_ne_bytes());
    let mut ctx_out = [0u8; SKB_SIZE];
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: Some(&ctx_in),
        ctx_out: Some(&mut ctx_out),
        ..Default::default()
    };
    let r = test_run(l, p, opts);
    let ts = u64::from_ne_bytes(
        ctx_out[SKB_TSTAMP_OFFSET..SKB_TSTAMP_OFFSET + 8]
            .try_into()
            .unwrap(),
    );
    (passed(p, r.return_value), ts)
}

/// The counters of rule `rule` in the active slot.
pub fn counters(l: &Loaded, rule: u32) -> RuleCounters {
    l.maps
        .rule_counters(l.maps.active_slot().unwrap(), rule)
        .unwrap()
}

/// A rule that drops everything `m` matches.
pub fn drop_all(m: MatchSpec) -> RuleSpec {
    RuleSpec {
        matcher: m,
        loss: Some(1.0),
        ..Default::default()
    }
}

/// A match on destination prefix `s`.
pub fn dst(s: &str) -> MatchSpec {
    MatchSpec {
        dst: Some(parse_cidr("dst", s).unwrap()),
        ..Default::default()
    }
}

/// (offset, number of differing bits) of every byte where `a` and `b` differ.
pub fn bit_differences(a: &[u8], b: &[u8]) -> Vec<(usize, u32)> {
    a.iter()
        .zip(b)
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, (x, y))| (i, (x ^ y).count_ones()))
        .collect()
}

/// A frame with valid checksums, as [`checked_frame`] builds it.
pub struct Checked {
    pub frame: Vec<u8>,
    /// Offset of the L4 payload.
    pub payload_start: usize,
    /// Offset of the L4 checksum field (two bytes).
    pub csum_offset: usize,
    /// Whether a frame's L4 checksum verifies.
    pub csum_ok: fn(&[u8]) -> bool,
}

/// UDP/IPv4, TCP/IPv4 or UDP/IPv6 (by `i % 3`) with 64 payload bytes of `fill`.
pub fn checked_frame(i: u16, fill: u8) -> Checked {
    let payload = [fill; 64];
    let (frame, payload_start, csum_offset, csum_ok): (_, _, _, fn(&[u8]) -> bool) = match i % 3 {
        0 => (
            udp4_csum(CLIENT_V4, SERVER_V4, 1000 + i, 2, 0, &payload),
            42,
            14 + 20 + 6,
            udp4_csum_ok,
        ),
        1 => (
            tcp4_csum(CLIENT_V4, SERVER_V4, 1000 + i, 2, &payload),
            54,
            14 + 20 + 16,
            tcp4_csum_ok,
        ),
        _ => (
            udp6_csum(CLIENT_V6, SERVER_V6, 1000 + i, 2, 0, &payload),
            62,
            14 + 40 + 6,
            udp6_csum_ok,
        ),
    };
    Checked {
        frame,
        payload_start,
        csum_offset,
        csum_ok,
    }
}
