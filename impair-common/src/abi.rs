//! The map ABI between the eBPF programs and the controller (the counters
//! are in [`crate::counters`]).
//!
//! Every type here is `#[repr(C)]`, has no implicit padding (each struct is
//! checked by a size assert), and is plain old data. The object embedded in the
//! `impair` binary and the controller are always built from the same commit, so
//! the ABI may change between versions; docs/map-abi.md describes it.

/// Rules per rule set. First match wins; a packet no rule matches passes.
pub const MAX_RULES: u32 = 64;
// Sets of rules are `u64` bit-vectors (bit n: rule n) in the index
// (`crate::index`) and in the data path's candidate walk, which also
// computes `(1 << rule_count) - 1` for counts below `MAX_RULES`.
const _: () = assert!(MAX_RULES <= u64::BITS);
/// Rule-set slots: the controller writes the inactive slot, then flips
/// [`CONTROL_ACTIVE_SLOT`] with one map write, so no packet sees a half-written set.
pub const SLOTS: u32 = 2;
// The data path reads the active slot as `CONTROL[CONTROL_ACTIVE_SLOT] & 1`.
const _: () = assert!(SLOTS == 2);
/// Entries of the per-slot rule arrays (`RULES`, `RULE_COUNTERS`).
pub const RULE_ENTRIES: u32 = MAX_RULES * SLOTS;

/// `CONTROL[0]`: the active rule-set slot (0 or 1).
pub const CONTROL_ACTIVE_SLOT: u32 = 0;
/// `CONTROL[1]`: the lease deadline in `bpf_ktime_get_ns()` nanoseconds
/// (CLOCK_MONOTONIC). Past it the programs pass every packet untouched: a
/// controller that dies without detaching (SIGKILL, power loss of the shell)
/// stops impairing within one lease, even where the attachment outlives it
/// (netlink clsact filters, pinned links). [`LEASE_FOREVER`] disables expiry.
pub const CONTROL_LEASE_DEADLINE_NS: u32 = 1;
/// `CONTROL[2]`: the ifindex of the ifb device `impair_redirect` sends
/// received packets to (an ingress instance that holds packets); 0: pass.
/// Read only while the lease runs, so an expired lease passes in place.
pub const CONTROL_REDIRECT_IFINDEX: u32 = 2;
/// `CONTROL[3]`: the packet capture's cost of one record in nanoseconds of
/// each CPU's budget (`1e9 / packets per second per CPU`); 0: capture is
/// off, and a matched packet pays one load and one branch for it
/// ([`crate::capture`]).
pub const CONTROL_CAPTURE_COST_NS: u32 = 3;
/// `CONTROL[4]`: the segmenter of an egress instance (map ABI version 3):
/// `(device ifindex << 32) | segmenter ifindex`. `impair_egress` sends a
/// super-packet (`gso_segs` > 1) that its rule decides per packet to the
/// segmenter, a veth whose `gso_max_segs` is 1, so the kernel splits it into
/// wire packets on the way out; `impair_segmented` at the veth peer's tc
/// ingress sends each one back to the device's egress (the high half),
/// where each is decided alone. 0: super-packets are decided whole.
pub const CONTROL_SEGMENTER: u32 = 4;
/// Entries of the `CONTROL` array map (`u64` values).
pub const CONTROL_ENTRIES: u32 = 5;
/// A lease that never expires (pinned attachments without `--duration`).
pub const LEASE_FOREVER: u64 = u64::MAX;
const _: () = assert!(
    CONTROL_ACTIVE_SLOT < CONTROL_ENTRIES
        && CONTROL_LEASE_DEADLINE_NS < CONTROL_ENTRIES
        && CONTROL_REDIRECT_IFINDEX < CONTROL_ENTRIES
        && CONTROL_CAPTURE_COST_NS < CONTROL_ENTRIES
        && CONTROL_SEGMENTER < CONTROL_ENTRIES
);

/// Map names. The controller finds a running instance's maps by these names
/// through the program attached to an interface (no files are needed).
pub mod map_names {
    pub const CONTROL: &str = "IMPAIR_CONTROL";
    pub const RULESETS: &str = "IMPAIR_RULESETS";
    pub const RULES: &str = "IMPAIR_RULES";
    pub const RULE_COUNTERS: &str = "IMPAIR_RULE_CNT";
    pub const GLOBAL_COUNTERS: &str = "IMPAIR_GLOBAL";
    pub const RNG: &str = "IMPAIR_RNG";
    pub const LOSS_STATE: &str = "IMPAIR_LOSS_ST";
    pub const TABLES: &str = "IMPAIR_TABLES";
    pub const RATE_STATE: &str = "IMPAIR_RATE_ST";
    pub const DELAY_STATE: &str = "IMPAIR_DELAY_ST";
    pub const FLOWS: &str = "IMPAIR_FLOWS";
    pub const OWNER: &str = "IMPAIR_OWNER";
    pub const INDEX: &str = "IMPAIR_INDEX";
    /// Latency matrices (`crate::matrix`): an LPM trie.
    pub const MATRIX: &str = "IMPAIR_MATRIX";
    /// Delay and loss series (`crate::series`): headers and values.
    pub const SERIES_HDR: &str = "IMPAIR_SERIES_H";
    pub const SERIES: &str = "IMPAIR_SERIES";
    /// Rate traces (`crate::trace`): header, opportunity times, and per ms
    /// the opportunities before it.
    pub const TRACE_HDR: &str = "IMPAIR_TRACE_H";
    pub const TRACE_TIMES: &str = "IMPAIR_TRACE_T";
    pub const TRACE_BEFORE: &str = "IMPAIR_TRACE_B";
}

/// Program names (the kernel keeps the first 15 bytes). All three live in one
/// object and share its maps; the controller loads one object per attachment
/// and loads and attaches only the programs that attachment uses.
pub mod prog_names {
    /// tc egress: every impairment.
    pub const TC_EGRESS: &str = "impair_egress";
    /// tc ingress: loss, ECN, corruption, MTU, blackhole, rate policing.
    pub const TC_INGRESS: &str = "impair_ingress";
    /// XDP: the same impairments as tc ingress.
    pub const XDP: &str = "impair_xdp";
    /// tc ingress of an instance that holds received packets: sends them to
    /// its ifb device, whose egress runs `impair_egress`.
    pub const REDIRECT: &str = "impair_redirect";
    /// tc ingress of an egress instance's segmenter peer: sends each wire
    /// packet of a split super-packet back to the device's egress.
    pub const SEGMENTED: &str = "impair_segmented";
    /// Every program `impair stats/status/detach` look for (a dead
    /// controller's `impair_redirect` filter may outlive its ifb).
    pub const ALL: [&str; 5] = [TC_EGRESS, TC_INGRESS, XDP, REDIRECT, SEGMENTED];
}

/// Burst tolerance of the rate on the receive side (tc ingress, XDP) when the
/// rule sets no queue limit: there is no queue to hold packets, so the rate
/// is a policer, and a policer needs a burst. 10 ms is the latency budget of
/// a shallow router buffer; at 10 Mbit/s it is about eight 1500-byte frames.
/// The data path also never uses less than one packet's serialization time.
pub const POLICE_BURST_DEFAULT_NS: u64 = 10_000_000;

/// Header of one rule-set slot (`RULESETS[slot]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleSetHeader {
    /// Rules in use in this slot, at most [`MAX_RULES`].
    pub rule_count: u32,
    /// [`ruleset_flags`] bits: what the data path must look up for this set.
    pub flags: u32,
    /// Increases with every rule set the controller writes; shown in stats.
    pub generation: u64,
}

/// At tc ingress (and on an instance's ifb) a packet's `PacketKey::cgroup_id`
/// is this bit | the mark of the local socket it is for: tc cannot read a
/// looked-up socket's cgroup, so `impair run` marks its cgroup's sockets and
/// matches received packets on that mark (impair-ebpf/src/socket.rs). No
/// cgroup id (an inode number) has the bit set.
pub const SOCKET_MARK_ID_BIT: u64 = 1 << 63;

/// `RuleSetHeader::flags` bits.
pub mod ruleset_flags {
    /// Some rule matches on the socket's cgroup: tc egress reads the
    /// packet's cgroup id (one helper call) only for such rule sets.
    pub const CGROUP: u32 = 1 << 0;
}

/// `FlowMatch::flags` bits. A rule with no bits set matches every packet.
pub mod match_flags {
    /// The packet must be IPv4 (set with any IPv4 prefix).
    pub const IPV4: u32 = 1 << 0;
    /// The packet must be IPv6 (set with any IPv6 prefix).
    pub const IPV6: u32 = 1 << 1;
    /// Compare the source address with `src`.
    pub const SRC: u32 = 1 << 2;
    /// Compare the destination address with `dst`.
    pub const DST: u32 = 1 << 3;
    /// Compare the L4 protocol with `l4_proto`.
    pub const PROTO: u32 = 1 << 4;
    /// The source port must lie in `sport_min..=sport_max` (TCP/UDP/SCTP only).
    pub const SPORT: u32 = 1 << 5;
    /// The destination port must lie in `dport_min..=dport_max`.
    pub const DPORT: u32 = 1 << 6;
    /// The sending socket's cgroup v2 id must be `cgroup_id` (tc egress of
    /// locally sent packets only: `impair run`).
    pub const CGROUP: u32 = 1 << 7;
}

/// An address prefix as four 32-bit words in network byte order, with its mask
/// precomputed by the controller: a packet address `a` matches when
/// `a[i] & mask[i] == addr[i]` for all four words. IPv4 uses word 0 only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prefix {
    pub addr: [u32; 4],
    pub mask: [u32; 4],
}

impl Prefix {
    #[inline(always)]
    pub fn contains(&self, a: &[u32; 4]) -> bool {
        (a[0] & self.mask[0]) == self.addr[0]
            && (a[1] & self.mask[1]) == self.addr[1]
            && (a[2] & self.mask[2]) == self.addr[2]
            && (a[3] & self.mask[3]) == self.addr[3]
    }
}

/// What a rule matches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowMatch {
    /// [`match_flags`] bits.
    pub flags: u32,
    /// IP protocol number (6 tcp, 17 udp, 1 icmp, 58 icmpv6).
    pub l4_proto: u8,
    pub _pad: [u8; 3],
    pub sport_min: u16,
    pub sport_max: u16,
    pub dport_min: u16,
    pub dport_max: u16,
    pub src: Prefix,
    pub dst: Prefix,
    /// cgroup v2 id (the cgroup directory's inode) for [`match_flags::CGROUP`].
    pub cgroup_id: u64,
}

/// The parts of a packet rules look at, filled in by the data-path parser.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketKey {
    /// 4 or 6; 0 for a frame that is not IP.
    pub ip_version: u8,
    /// IP protocol number (after IPv6 extension headers).
    pub l4_proto: u8,
    /// 1 when `sport`/`dport` were read (first fragment of TCP/UDP/SCTP).
    pub has_ports: u8,
    /// The two ECN bits of the IPv4 TOS or IPv6 traffic class.
    pub ecn: u8,
    pub sport: u16,
    pub dport: u16,
    /// Offset of the IP header from the start of the frame (0: not IP).
    pub l3_offset: u16,
    /// Offset of the L4 header (0: none found, e.g. a non-first fragment).
    pub l4_offset: u16,
    /// Offset of the L4 payload (after the TCP/UDP/ICMP header; 0: unknown).
    pub payload_offset: u16,
    pub _pad: u16,
    /// Addresses as network-order words; IPv4 in word 0, the rest 0.
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// The sending socket's cgroup v2 id (tc egress, only when the rule set
    /// matches on cgroups; else 0).
    pub cgroup_id: u64,
}

impl FlowMatch {
    /// First-match-wins rule matching; pure so it is unit-tested on the host
    /// and inlined into the data path.
    #[inline(always)]
    pub fn matches(&self, k: &PacketKey) -> bool {
        let f = self.flags;
        if f == 0 {
            return true;
        }
        if f & match_flags::IPV4 != 0 && k.ip_version != 4 {
            return false;
        }
        if f & match_flags::IPV6 != 0 && k.ip_version != 6 {
            return false;
        }
        if f & (match_flags::SRC | match_flags::DST | match_flags::PROTO) != 0 && k.ip_version == 0
        {
            return false;
        }
        if f & match_flags::SRC != 0 && !self.src.contains(&k.src) {
            return false;
        }
        if f & match_flags::DST != 0 && !self.dst.contains(&k.dst) {
            return false;
        }
        if f & match_flags::PROTO != 0 && k.l4_proto != self.l4_proto {
            return false;
        }
        if f & match_flags::CGROUP != 0 && k.cgroup_id != self.cgroup_id {
            return false;
        }
        if f & (match_flags::SPORT | match_flags::DPORT) != 0 {
            if k.has_ports == 0 {
                return false;
            }
            if f & match_flags::SPORT != 0 && (k.sport < self.sport_min || k.sport > self.sport_max)
            {
                return false;
            }
            if f & match_flags::DPORT != 0 && (k.dport < self.dport_min || k.dport > self.dport_max)
            {
                return false;
            }
        }
        true
    }
}

/// `Loss::model` values.
pub mod loss_model {
    /// No loss.
    pub const NONE: u32 = 0;
    /// Independent loss: `p[0]` is the loss probability (u32 threshold).
    pub const BERNOULLI: u32 = 1;
    /// Gilbert-Elliott: `p = [p, r, 1-h, 1-k, 0]` (see `crate::loss`).
    pub const GILBERT_ELLIOTT: u32 = 2;
    /// 4-state Markov: `p = [p13, p31, p32, p23, p14]` (see `crate::loss`).
    pub const FOUR_STATE: u32 = 3;
}

/// A rule's loss process. Probabilities are u32 thresholds (see [`crate::prob`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loss {
    /// One of [`loss_model`].
    pub model: u32,
    pub _reserved: u32,
    /// Model parameters, as u32 thresholds.
    pub p: [u32; 5],
    pub _pad: u32,
}

/// `Rule::flags` bits.
pub mod rule_flags {
    /// Drop every matching packet (a partition); counted as `dropped_loss`.
    pub const BLACKHOLE: u32 = 1 << 0;
    /// When the loss process fires on an ECN-capable packet (ECT(0), ECT(1) or
    /// CE), set CE and send it instead of dropping it (`ecn_marked`).
    pub const ECN: u32 = 1 << 1;
    /// Corrupt silently: fix the L4 checksum after flipping the bit, so the
    /// corruption reaches the application. Without it corruption is made
    /// detectable by the receiver's checksum (docs/impairments.md).
    pub const CORRUPT_SILENT: u32 = 1 << 2;
    /// Keep each flow's departure times non-decreasing, so jitter delays
    /// packets without reordering them.
    pub const IN_ORDER: u32 = 1 << 3;
    /// Look the packet's destination up in the rule's latency matrix
    /// (`IMPAIR_MATRIX`, `crate::matrix`) and apply the entry found.
    pub const MATRIX: u32 = 1 << 4;
    /// The rule's base delay is the rule set's delay series' value for now
    /// (`crate::series`), not `delay_ns`.
    pub const DELAY_SERIES: u32 = 1 << 5;
    /// The rule's loss is the rule set's loss series' value for now
    /// (Bernoulli), not `loss`.
    pub const LOSS_SERIES: u32 = 1 << 6;
    /// The packet departs when the rule set's rate trace has capacity for
    /// it (`crate::trace`), after the delay.
    pub const RATE_TRACE: u32 = 1 << 7;
}

/// `Rule::delay_dist` values: how the jitter is drawn.
pub mod delay_dist {
    /// Constant delay (no jitter).
    pub const NONE: u32 = 0;
    /// Uniform over `[delay - jitter, delay + jitter)`, like netem without a table.
    pub const UNIFORM: u32 = 1;
    /// `delay + jitter * q` with `q` drawn from the rule's quantile table
    /// (`IMPAIR_TABLES`), standardized so jitter is one standard deviation.
    pub const TABLE: u32 = 2;
}

/// One rule: what it matches and what it does to matching packets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub matcher: FlowMatch,
    pub loss: Loss,
    /// [`rule_flags`] bits.
    pub flags: u32,
    /// Drop packets whose IP packet (L3 header and payload) is longer than this
    /// (an MTU blackhole: broken path-MTU discovery); 0 disables.
    pub mtu_bytes: u32,
    /// Probability of flipping one random bit of the L4 payload.
    pub corrupt_u32: u32,
    /// Probability of sending one clean extra copy (never of a copy).
    pub duplicate_u32: u32,
    /// Probability that a packet skips the delay (netem's `reorder`): it
    /// leaves at once, ahead of delayed packets of its flow.
    pub reorder_u32: u32,
    /// One of [`delay_dist`].
    pub delay_dist: u32,
    /// Base delay added to every packet, nanoseconds.
    pub delay_ns: u64,
    /// Jitter: half-width (uniform) or one standard deviation (tables), ns.
    pub jitter_ns: u64,
    /// Delay correlation: with this probability a packet reuses the previous
    /// packet's jitter draw (per CPU), so successive delays have lag-k
    /// correlation rho^k and the delay distribution is unchanged.
    pub delay_corr_u32: u32,
    /// Cell size for rate accounting (ATM/DSL framing), bytes; 0: none.
    pub cell_bytes: u32,
    /// Bytes added to every packet for rate accounting (may be negative).
    pub overhead_bytes: i32,
    /// Bytes added to every cell.
    pub cell_overhead_bytes: i32,
    /// Rate as picoseconds per byte on the wire (8e12 / rate_bps); 0: no rate.
    pub rate_ps_per_byte: u64,
    /// Drop instead of queueing a packet behind more than this much rate
    /// backlog, nanoseconds; 0: no limit (fq's horizon still applies).
    pub queue_limit_ns: u64,
}

/// `Owner::flags` bits.
pub mod owner_flags {
    /// The attachment is pinned in bpffs and outlives its controller.
    pub const PINNED: u32 = 1 << 0;
    /// Attached through a netlink clsact filter (not a tcx link).
    pub const NETLINK: u32 = 1 << 1;
    /// The controller created the clsact qdisc and removes it on detach.
    pub const CREATED_CLSACT: u32 = 1 << 2;
    /// `impair_egress` is attached at tc egress. An owner with none of the
    /// three hook bits is a tc egress attachment too (written before receive
    /// hooks existed).
    pub const HOOK_TC_EGRESS: u32 = 1 << 3;
    /// `impair_ingress` is attached at tc ingress.
    pub const HOOK_TC_INGRESS: u32 = 1 << 4;
    /// `impair_xdp` is attached (receive side).
    pub const HOOK_XDP: u32 = 1 << 5;
    /// The XDP program was attached in generic (skb) mode on request.
    pub const XDP_GENERIC: u32 = 1 << 6;
    /// The XDP program was attached in native (driver) mode on request.
    pub const XDP_NATIVE: u32 = 1 << 7;
    /// The controller replaced a kernel-default root qdisc with fq; whoever
    /// removes the instance (its controller, `impair detach`, a later
    /// attach cleaning a leftover) deletes that root again if it is still fq.
    /// Userspace only: no program reads the owner map.
    pub const INSTALLED_FQ: u32 = 1 << 8;
    /// Received traffic goes through an ifb device the controller created
    /// (`impair_redirect` at tc ingress, `impair_egress` on the ifb's egress);
    /// whoever removes the instance deletes that device. Userspace only.
    pub const IFB: u32 = 1 << 9;
    /// Super-packets go through a veth pair the controller created (the
    /// segmenter, [`crate::CONTROL_SEGMENTER`]); whoever removes the instance
    /// deletes it. Userspace only.
    pub const SEGMENTER: u32 = 1 << 10;
    /// All hook bits.
    pub const HOOKS: u32 = HOOK_TC_EGRESS | HOOK_TC_INGRESS | HOOK_XDP;
}

/// A rule's quantile table (`IMPAIR_TABLES[slot * MAX_RULES + rule]`): the
/// `TABLE_SIZE` knots plus the last one repeated, so the data path reads
/// entries `i` and `i + 1` for any masked `i` without a second bounds check.
pub type DelayTable = [i32; crate::dist::TABLE_SIZE as usize + 1];

/// Key of `IMPAIR_FLOWS` (in-order delay): the flow hash (`crate::flow` for
/// IP packets, the skb's hash for other frames) and the rule.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowKey {
    pub hash: u32,
    pub rule: u32,
}

/// Who attached this instance (`OWNER[0]`), so another `impair` process can
/// name the owner of an interface and tell a live controller from a dead one.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Controller process id.
    pub pid: u32,
    /// Interface index, in the network namespace the controller attached in.
    pub ifindex: u32,
    /// [`owner_flags`] bits.
    pub flags: u32,
    /// The map ABI version of the impair that attached ([`ABI_VERSION`]);
    /// 0 in records written before versions were recorded, which are
    /// version 1 ([`Owner::abi`]). `pid`, `ifindex`, `flags`, this field
    /// and `netns_ino` keep their offsets in every version: they are how an
    /// older impair recognises an instance of a newer one and refuses it.
    pub abi_version: u32,
    /// Inode of the controller's network namespace (/proc/self/ns/net): with
    /// `ifindex` it names the interface across namespaces.
    pub netns_ino: u64,
    /// The controller's start time (field 22 of /proc/PID/stat, clock ticks
    /// since boot): with `pid` it identifies the process across pid reuse.
    pub pid_start_ticks: u64,
    /// Wall-clock attach time, nanoseconds since the Unix epoch.
    pub attached_unix_ns: u64,
    /// The seed the per-CPU generators were derived from.
    pub seed: u64,
    /// Profile or summary, NUL-padded UTF-8.
    pub label: [u8; 64],
}

const _: () = {
    assert!(core::mem::size_of::<RuleSetHeader>() == 16);
    assert!(core::mem::size_of::<Prefix>() == 32);
    assert!(core::mem::size_of::<FlowMatch>() == 88);
    assert!(core::mem::size_of::<PacketKey>() == 56);
    assert!(core::mem::size_of::<Loss>() == 32);
    assert!(core::mem::size_of::<Rule>() == 192);
    assert!(core::mem::size_of::<Owner>() == 112);
    assert!(core::mem::size_of::<FlowKey>() == 8);
};

/// Largest value of a per-CPU array map (`PCPU_MIN_UNIT_SIZE`; larger values
/// fail map creation, kernel/bpf/arraymap.c).
pub(crate) const PERCPU_VALUE_MAX: usize = 32 << 10;
const _: () = assert!(core::mem::size_of::<PacketKey>() <= PERCPU_VALUE_MAX);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is #[repr(C)], made only of integers and arrays of
    // integers, and has no padding (the size asserts above pin the layout), so
    // every bit pattern is a valid value and it can be copied to and from maps.
    unsafe impl aya::Pod for super::RuleSetHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Rule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Owner {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above (its own size asserts are in `index`).
    unsafe impl aya::Pod for crate::index::MatchIndex {}
}

impl Default for Owner {
    fn default() -> Self {
        Self {
            pid: 0,
            ifindex: 0,
            flags: 0,
            abi_version: 0,
            netns_ino: 0,
            pid_start_ticks: 0,
            attached_unix_ns: 0,
            seed: 0,
            label: [0; 64],
        }
    }
}

impl Owner {
    /// The map ABI version of the instance: a record without one (written
    /// before versions were recorded) is version 1.
    pub fn abi(&self) -> u32 {
        match self.abi_version {
            0 => 1,
            v => v,
        }
    }

    /// The label as a string, up to its first NUL.
    pub fn label_str(&self) -> &str {
        let end = self
            .label
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.label.len());
        match core::str::from_utf8(&self.label[..end]) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&self.label[..e.valid_up_to()]).unwrap_or(""),
        }
    }

    /// The hooks this instance is attached at ([`owner_flags`] `HOOK_*` bits);
    /// an owner that names none is a tc egress attachment.
    pub fn hooks(&self) -> u32 {
        match self.flags & owner_flags::HOOKS {
            0 => owner_flags::HOOK_TC_EGRESS,
            h => h,
        }
    }

    /// The hooks as `impair status` shows them: `tc-egress`, `tc-ingress`,
    /// `xdp`, or two of them joined by `+` (one instance serving both
    /// directions).
    pub fn hook_name(&self) -> &'static str {
        use owner_flags::{HOOK_TC_EGRESS as E, HOOK_TC_INGRESS as I, HOOK_XDP as X};
        match self.hooks() {
            E => "tc-egress",
            I => "tc-ingress",
            X => "xdp",
            h if h == E | I => "tc-egress+tc-ingress",
            h if h == E | X => "tc-egress+xdp",
            _ => "unknown",
        }
    }

    /// Stores `s` as the label, cut at a character boundary to fit.
    pub fn set_label(&mut self, s: &str) {
        self.label = [0; 64];
        let mut n = s.len().min(self.label.len());
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.label[..n].copy_from_slice(&s.as_bytes()[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> [u32; 4] {
        [u32::from_ne_bytes(a), 0, 0, 0]
    }

    fn prefix_v4(a: [u8; 4], len: u32) -> Prefix {
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) }.to_be();
        Prefix {
            addr: [u32::from_ne_bytes(a) & mask, 0, 0, 0],
            mask: [mask, 0, 0, 0],
        }
    }

    #[test]
    fn empty_match_matches_everything_including_non_ip() {
        let m = FlowMatch::default();
        assert!(m.matches(&PacketKey::default()));
    }

    #[test]
    fn v4_prefix_and_ports() {
        let m = FlowMatch {
            flags: match_flags::IPV4 | match_flags::DST | match_flags::PROTO | match_flags::DPORT,
            l4_proto: 17,
            dport_min: 5000,
            dport_max: 5010,
            dst: prefix_v4([198, 18, 2, 0], 24),
            ..Default::default()
        };
        let mut k = PacketKey {
            ip_version: 4,
            l4_proto: 17,
            has_ports: 1,
            sport: 1234,
            dport: 5005,
            src: v4([198, 18, 1, 1]),
            dst: v4([198, 18, 2, 2]),
            ..Default::default()
        };
        assert!(m.matches(&k));
        k.dport = 5011;
        assert!(!m.matches(&k));
        k.dport = 5010;
        k.dst = v4([198, 18, 3, 2]);
        assert!(!m.matches(&k));
        k.dst = v4([198, 18, 2, 200]);
        k.l4_proto = 6;
        assert!(!m.matches(&k));
        k.l4_proto = 17;
        k.has_ports = 0;
        assert!(
            !m.matches(&k),
            "a fragment without ports never matches a port rule"
        );
        k.has_ports = 1;
        k.ip_version = 6;
        assert!(!m.matches(&k));
    }

    #[test]
    fn hook_names_default_to_tc_egress() {
        let mut o = Owner::default();
        assert_eq!(o.hook_name(), "tc-egress");
        o.flags = owner_flags::NETLINK | owner_flags::HOOK_TC_INGRESS;
        assert_eq!(o.hook_name(), "tc-ingress");
        o.flags = owner_flags::HOOK_XDP | owner_flags::XDP_GENERIC;
        assert_eq!(o.hook_name(), "xdp");
        o.flags = owner_flags::HOOK_TC_EGRESS | owner_flags::HOOK_XDP;
        assert_eq!(o.hook_name(), "tc-egress+xdp");
    }

    #[test]
    fn label_round_trips_and_truncates_on_char_boundary() {
        let mut o = Owner::default();
        o.set_label("lossy");
        assert_eq!(o.label_str(), "lossy");
        let long = "é".repeat(40);
        o.set_label(&long);
        assert_eq!(o.label_str(), "é".repeat(32));
    }
}

/// The version of the map ABI this source tree defines (the maps, their
/// value layouts and the owner record; docs/map-abi.md keeps the history).
/// Every attach records it in its owner record (`Owner::abi_version`), so a
/// later impair that finds the instance pinned, or left by a dead
/// controller, knows whose layout its maps have: it removes instances of
/// the versions it knows ([`ABI_VERSIONS_KNOWN`]) exactly, and refuses
/// newer ones in one line naming the version to use. Bump it with any
/// change an older or newer binary would misread, and keep the reading of
/// the previous layouts that detaching needs.
///
/// `IMPAIR_ABI_VERSION` at build time overrides it: the upgrade tests build
/// a second binary one version ahead (`cargo xtask upgrade`), so a real
/// "newer" impair meets a real "older" instance and the other way round.
pub const ABI_VERSION: u32 = match option_env!("IMPAIR_ABI_VERSION") {
    Some(v) => parse_abi_version(v),
    None => 3,
};

/// The oldest map ABI version whose instances this build can detach (the
/// newest is [`ABI_VERSION`]). Version 1 (impair before wire counters,
/// ifb, matrices, series, traces and capture: `RuleCounters` of 96 B, a
/// two-entry control map, none of those maps) is not among them: this build
/// opens an instance through all of its maps, which a version-1 instance
/// lacks, so it refuses it in one line naming version 1 instead of
/// misreading it.
pub const ABI_VERSION_OLDEST: u32 = 2;

/// The map ABI versions this build can detach.
pub const ABI_VERSIONS_KNOWN: core::ops::RangeInclusive<u32> = ABI_VERSION_OLDEST..=ABI_VERSION;

/// `IMPAIR_ABI_VERSION`'s decimal digits; anything else stops the build.
const fn parse_abi_version(s: &str) -> u32 {
    let b = s.as_bytes();
    assert!(!b.is_empty(), "IMPAIR_ABI_VERSION is empty");
    let mut v: u32 = 0;
    let mut i = 0;
    while i < b.len() {
        assert!(
            b[i].is_ascii_digit(),
            "IMPAIR_ABI_VERSION must be a decimal number"
        );
        v = v * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    assert!(v >= 1, "IMPAIR_ABI_VERSION starts at 1");
    v
}

#[cfg(test)]
mod abi_version_tests {
    use super::*;

    #[test]
    fn a_record_without_a_version_is_version_1() {
        let o = Owner::default();
        assert_eq!(o.abi(), 1);
        // Version 1's maps are not this build's (ABI_VERSION_OLDEST).
        assert!(!ABI_VERSIONS_KNOWN.contains(&o.abi()));
        assert!(ABI_VERSIONS_KNOWN.contains(&ABI_VERSION));
        let o = Owner {
            abi_version: ABI_VERSION + 1,
            ..Owner::default()
        };
        assert!(!ABI_VERSIONS_KNOWN.contains(&o.abi()));
    }

    #[test]
    fn the_fields_that_recognise_a_newer_instance_keep_their_offsets() {
        assert_eq!(core::mem::offset_of!(Owner, pid), 0);
        assert_eq!(core::mem::offset_of!(Owner, ifindex), 4);
        assert_eq!(core::mem::offset_of!(Owner, flags), 8);
        assert_eq!(core::mem::offset_of!(Owner, abi_version), 12);
        assert_eq!(core::mem::offset_of!(Owner, netns_ino), 16);
    }

    #[test]
    fn version_parsing() {
        assert_eq!(parse_abi_version("1"), 1);
        assert_eq!(parse_abi_version("12"), 12);
    }
}
