//! Rules as users write them, compiled to the map ABI's [`Rule`], and read back
//! from a running instance for display (so `impair stats` needs no side files).
use std::net::IpAddr;

use impair_common::{
    delay_dist, edt, loss, loss_model, match_flags, prob, rule_flags, DelayTable, FlowMatch, Loss,
    Prefix, Rule, MAX_RULES,
};
use ipnet::IpNet;
use serde::Serialize;

use crate::{
    dist::Distribution,
    input::{usage, LossModelSpec, Proto, QueueLimit, UsageError, QUEUE_PACKET_BYTES},
};

/// What a rule matches; every field `None` matches every packet (like netem).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchSpec {
    pub src: Option<IpNet>,
    pub dst: Option<IpNet>,
    pub proto: Option<Proto>,
    pub sport: Option<(u16, u16)>,
    pub dport: Option<(u16, u16)>,
    /// Only packets sent by sockets of this cgroup v2 (its id: the
    /// directory's inode); tc egress only (`impair run`).
    pub cgroup: Option<u64>,
}

/// How corruption treats the L4 checksum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CorruptMode {
    /// The receiver's checksum catches it and drops the packet (like netem).
    #[default]
    Detectable,
    /// The checksum is fixed up: the corrupted payload reaches the application.
    Silent,
}

/// One rule: a match and its impairments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleSpec {
    pub matcher: MatchSpec,
    /// Independent (Bernoulli) loss probability in [0, 1].
    pub loss: Option<f64>,
    /// A burst-loss model instead of independent loss.
    pub loss_model: Option<LossModelSpec>,
    /// CE-mark ECN-capable packets instead of dropping them.
    pub ecn: bool,
    /// Drop everything the rule matches.
    pub blackhole: bool,
    /// Drop IP packets longer than this many bytes.
    pub mtu_bytes: Option<u32>,
    /// Probability of flipping one payload bit.
    pub corrupt: Option<f64>,
    pub corrupt_mode: CorruptMode,
    /// Probability of one extra, clean copy.
    pub duplicate: Option<f64>,
    /// Delay and jitter; see [`DelaySpec`].
    pub delay: Option<DelaySpec>,
    /// Probability that a packet skips the delay (needs a delay).
    pub reorder: Option<f64>,
    /// Rate limit (EDT pacing); see [`RateSpec`].
    pub rate: Option<RateSpec>,
}

/// Delay added to every matching packet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DelaySpec {
    pub delay_ns: u64,
    pub jitter_ns: u64,
    /// How jitter is drawn; `None` with jitter means uniform (like netem).
    pub distribution: Option<Distribution>,
    /// Delay correlation in [0, 1] (see `Rule::delay_corr_u32`).
    pub correlation: Option<f64>,
    /// Keep each flow's packets in order despite jitter.
    pub in_order: bool,
}

/// A rate limit, paced with departure times.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateSpec {
    pub rate_bps: u64,
    pub overhead_bytes: i32,
    pub cell_bytes: u32,
    pub cell_overhead_bytes: i32,
    /// Drop beyond this backlog instead of queueing without bound.
    pub queue: Option<QueueLimit>,
}

/// A compiled rule set: map values, and the quantile tables of rules that
/// draw jitter from one.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub tables: Vec<Option<Box<DelayTable>>>,
}

impl RuleSet {
    /// Whether any rule sets departure times (needs fq on the interface).
    pub fn needs_fq(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.delay_ns | r.jitter_ns | r.rate_ps_per_byte != 0)
    }

    /// The longest time a packet may be held: delay + the jitter's reach +
    /// the queue limit (for sizing fq's horizon and limits).
    pub fn max_hold_ns(&self) -> u64 {
        self.rules
            .iter()
            .map(|r| {
                let jitter_reach = if r.delay_dist == delay_dist::TABLE {
                    r.jitter_ns.saturating_mul(48)
                } else {
                    r.jitter_ns
                };
                r.delay_ns
                    .saturating_add(jitter_reach)
                    .saturating_add(r.queue_limit_ns)
            })
            .max()
            .unwrap_or(0)
    }
}

/// The smallest MTU accepted (IPv4's minimum datagram a host must accept).
pub const MIN_MTU_BYTES: u32 = 68;

fn prefix(net: &IpNet) -> Prefix {
    let mut p = Prefix::default();
    match net {
        IpNet::V4(n) => {
            p.addr[0] = u32::from_ne_bytes(n.network().octets());
            p.mask[0] = u32::from_ne_bytes(n.netmask().octets());
        }
        IpNet::V6(n) => {
            let a = n.network().octets();
            let m = n.netmask().octets();
            for i in 0..4 {
                p.addr[i] =
                    u32::from_ne_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]]);
                p.mask[i] =
                    u32::from_ne_bytes([m[4 * i], m[4 * i + 1], m[4 * i + 2], m[4 * i + 3]]);
            }
        }
    }
    p
}

impl MatchSpec {
    pub fn compile(&self) -> Result<FlowMatch, UsageError> {
        let mut m = FlowMatch::default();
        let family = |n: &IpNet| {
            if n.addr().is_ipv4() {
                match_flags::IPV4
            } else {
                match_flags::IPV6
            }
        };
        if let (Some(s), Some(d)) = (&self.src, &self.dst) {
            if s.addr().is_ipv4() != d.addr().is_ipv4() {
                return Err(usage!(
                    "source {s} and destination {d} are of different IP versions: a packet cannot match both"
                ));
            }
        }
        if let Some(s) = &self.src {
            m.flags |= match_flags::SRC | family(s);
            m.src = prefix(s);
        }
        if let Some(d) = &self.dst {
            m.flags |= match_flags::DST | family(d);
            m.dst = prefix(d);
        }
        if let Some(p) = self.proto {
            m.flags |= match_flags::PROTO;
            m.l4_proto = p.0;
        }
        if self.sport.is_some() || self.dport.is_some() {
            match self.proto {
                Some(Proto(6 | 17 | 132 | 136)) | None => {}
                Some(p) => {
                    return Err(usage!(
                        "ports only apply to tcp, udp and sctp, not to {}",
                        p.name()
                    ))
                }
            }
        }
        if let Some((lo, hi)) = self.sport {
            m.flags |= match_flags::SPORT;
            (m.sport_min, m.sport_max) = (lo, hi);
        }
        if let Some((lo, hi)) = self.dport {
            m.flags |= match_flags::DPORT;
            (m.dport_min, m.dport_max) = (lo, hi);
        }
        if let Some(id) = self.cgroup {
            m.flags |= match_flags::CGROUP;
            m.cgroup_id = id;
        }
        Ok(m)
    }
}

impl RuleSpec {
    pub fn compile(&self) -> Result<Rule, UsageError> {
        let mut r = Rule {
            matcher: self.matcher.compile()?,
            ..Default::default()
        };
        let fraction = |what: &str, p: Option<f64>| -> Result<u32, UsageError> {
            match p {
                None => Ok(0),
                Some(p) if (0.0..=1.0).contains(&p) => Ok(prob::from_fraction(p)),
                Some(p) => Err(usage!(
                    "invalid {what} {}%: must be between 0% and 100%",
                    p * 100.0
                )),
            }
        };
        match (self.loss, self.loss_model) {
            (Some(_), Some(_)) => {
                return Err(usage!(
                    "give either --loss (independent) or --loss-model (bursts), not both"
                ))
            }
            (Some(p), None) => {
                r.loss = Loss {
                    model: loss_model::BERNOULLI,
                    p: [fraction("loss", Some(p))?, 0, 0, 0, 0],
                    ..Default::default()
                };
            }
            (
                None,
                Some(LossModelSpec::GilbertElliott {
                    p,
                    r: rr,
                    one_minus_h,
                    one_minus_k,
                }),
            ) => {
                r.loss = Loss {
                    model: loss_model::GILBERT_ELLIOTT,
                    p: loss::gilbert_elliott_params(p, rr, one_minus_h, one_minus_k),
                    ..Default::default()
                };
            }
            (
                None,
                Some(LossModelSpec::FourState {
                    p13,
                    p31,
                    p32,
                    p23,
                    p14,
                }),
            ) => {
                r.loss = Loss {
                    model: loss_model::FOUR_STATE,
                    p: loss::four_state_params(p13, p31, p32, p23, p14),
                    ..Default::default()
                };
            }
            (None, None) => {}
        }
        if self.ecn {
            if self.loss.is_none() && self.loss_model.is_none() {
                return Err(usage!("--ecn marks packets instead of dropping them: it needs a loss (--loss PERCENT)"));
            }
            r.flags |= rule_flags::ECN;
        }
        if self.blackhole {
            r.flags |= rule_flags::BLACKHOLE;
        }
        if let Some(mtu) = self.mtu_bytes {
            if !(MIN_MTU_BYTES..=65535).contains(&mtu) {
                return Err(usage!(
                    "invalid MTU {mtu}: must be between {MIN_MTU_BYTES} and 65535 bytes"
                ));
            }
            r.mtu_bytes = mtu;
        }
        r.corrupt_u32 = fraction("corruption", self.corrupt)?;
        if self.corrupt_mode == CorruptMode::Silent {
            r.flags |= rule_flags::CORRUPT_SILENT;
        }
        r.duplicate_u32 = fraction("duplication", self.duplicate)?;
        if let Some(d) = &self.delay {
            if d.jitter_ns > impair_common::dist::MAX_JITTER_NS {
                return Err(usage!(
                    "invalid jitter {} ns: at most {} ns (about 18 minutes)",
                    d.jitter_ns,
                    impair_common::dist::MAX_JITTER_NS
                ));
            }
            r.delay_ns = d.delay_ns;
            r.jitter_ns = d.jitter_ns;
            r.delay_dist = match (&d.distribution, d.jitter_ns) {
                (_, 0) => delay_dist::NONE,
                (None | Some(Distribution::Uniform), _) => delay_dist::UNIFORM,
                (Some(_), _) => delay_dist::TABLE,
            };
            if d.distribution.is_some() && d.jitter_ns == 0 {
                return Err(usage!(
                    "--distribution shapes the jitter: it needs --jitter"
                ));
            }
            if let Some(c) = d.correlation {
                if d.jitter_ns == 0 {
                    return Err(usage!("delay correlation needs jitter (--jitter)"));
                }
                r.delay_corr_u32 = fraction("delay correlation", Some(c))?;
            }
            if d.in_order {
                r.flags |= rule_flags::IN_ORDER;
            }
        }
        if let Some(p) = self.reorder {
            if self
                .delay
                .as_ref()
                .is_none_or(|d| d.delay_ns == 0 && d.jitter_ns == 0)
            {
                return Err(usage!(
                    "--reorder makes packets skip the delay: it needs --delay (as in netem)"
                ));
            }
            r.reorder_u32 = fraction("reorder", Some(p))?;
        }
        if let Some(rate) = &self.rate {
            r.rate_ps_per_byte = edt::ps_per_byte(rate.rate_bps);
            r.overhead_bytes = rate.overhead_bytes;
            r.cell_bytes = rate.cell_bytes;
            r.cell_overhead_bytes = rate.cell_overhead_bytes;
            r.queue_limit_ns = match rate.queue {
                None => 0,
                Some(QueueLimit::Time { ns }) => ns,
                Some(QueueLimit::Bytes { bytes }) => {
                    edt::tx_time_ns(bytes, r.rate_ps_per_byte).max(1)
                }
                Some(QueueLimit::Packets { packets }) => edt::tx_time_ns(
                    packets.saturating_mul(QUEUE_PACKET_BYTES),
                    r.rate_ps_per_byte,
                )
                .max(1),
            };
        }
        Ok(r)
    }

    /// The rule's quantile table, when its jitter is drawn from one.
    pub fn table(&self) -> Option<Box<DelayTable>> {
        let d = self.delay.as_ref()?;
        match &d.distribution {
            Some(dist) if *dist != Distribution::Uniform && d.jitter_ns > 0 => {
                let knots = dist.table();
                let mut t: Box<DelayTable> =
                    Box::new([0; impair_common::dist::TABLE_SIZE as usize + 1]);
                t[..knots.len()].copy_from_slice(&knots);
                t[knots.len()] = knots[knots.len() - 1];
                Some(t)
            }
            _ => None,
        }
    }

    /// Whether the rule does anything to the packets it matches.
    pub fn impairs(&self) -> bool {
        self.loss.is_some()
            || self.loss_model.is_some()
            || self.delay.is_some()
            || self.rate.is_some()
            || self.blackhole
            || self.mtu_bytes.is_some()
            || self.corrupt.is_some()
            || self.duplicate.is_some()
    }
}

/// Compiles a rule list, checking the rule-count limit.
pub fn compile_all(rules: &[RuleSpec]) -> Result<RuleSet, UsageError> {
    if rules.len() > MAX_RULES as usize {
        return Err(usage!(
            "{} rules given; at most {MAX_RULES} are allowed",
            rules.len()
        ));
    }
    Ok(RuleSet {
        rules: rules
            .iter()
            .map(RuleSpec::compile)
            .collect::<Result<_, _>>()?,
        tables: rules.iter().map(RuleSpec::table).collect(),
    })
}

fn prefix_to_net(p: &Prefix, v6: bool) -> Option<IpNet> {
    if v6 {
        let mut a = [0u8; 16];
        let mut len = 0u32;
        for i in 0..4 {
            a[4 * i..4 * i + 4].copy_from_slice(&p.addr[i].to_ne_bytes());
            len += u32::from_be(p.mask[i]).count_ones();
        }
        IpNet::new(IpAddr::from(a), len as u8).ok()
    } else {
        let a = p.addr[0].to_ne_bytes();
        IpNet::new(IpAddr::from(a), u32::from_be(p.mask[0]).count_ones() as u8).ok()
    }
}

/// A rule read back from the kernel, for display and JSON.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleView {
    /// Human-readable match, e.g. `dst 198.18.2.0/24 udp dport 5000`; `all` for none.
    pub matches: String,
    /// Configured impairments, e.g. `loss 10%`.
    pub impairments: String,
    /// Configured loss rate (fraction): the probability for Bernoulli loss,
    /// the model's stationary loss rate for Gilbert-Elliott and 4-state.
    pub loss: Option<f64>,
    pub ecn: bool,
    pub blackhole: bool,
    pub mtu_bytes: Option<u32>,
    pub corrupt: Option<f64>,
    pub corrupt_mode: CorruptMode,
    pub duplicate: Option<f64>,
    pub delay_ns: u64,
    pub jitter_ns: u64,
    pub rate_bps: Option<u64>,
    pub reorder: Option<f64>,
}

/// Formats nanoseconds in the largest unit that keeps it readable.
pub fn fmt_duration_ns(ns: u64) -> String {
    if ns == 0 {
        "0".into()
    } else if ns.is_multiple_of(1_000_000_000) {
        format!("{}s", ns / 1_000_000_000)
    } else if ns >= 1_000_000 {
        format!("{}ms", trim_float(ns as f64 / 1e6))
    } else if ns >= 1_000 {
        format!("{}us", trim_float(ns as f64 / 1e3))
    } else {
        format!("{ns}ns")
    }
}

/// Formats a rate in bits per second with tc's units.
pub fn fmt_rate_bps(bps: u64) -> String {
    for (unit, scale) in [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)] {
        if bps as f64 >= scale {
            return format!("{}{unit}", trim_float(bps as f64 / scale));
        }
    }
    format!("{bps}bit")
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

impl RuleView {
    pub fn from_rule(r: &Rule) -> Self {
        let m = &r.matcher;
        let v6 = m.flags & match_flags::IPV6 != 0;
        let mut parts = Vec::new();
        if m.flags & match_flags::SRC != 0 {
            if let Some(n) = prefix_to_net(&m.src, v6) {
                parts.push(format!("src {n}"));
            }
        }
        if m.flags & match_flags::DST != 0 {
            if let Some(n) = prefix_to_net(&m.dst, v6) {
                parts.push(format!("dst {n}"));
            }
        }
        if m.flags & match_flags::PROTO != 0 {
            parts.push(Proto(m.l4_proto).name());
        }
        let range = |lo: u16, hi: u16| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        };
        if m.flags & match_flags::SPORT != 0 {
            parts.push(format!("sport {}", range(m.sport_min, m.sport_max)));
        }
        if m.flags & match_flags::DPORT != 0 {
            parts.push(format!("dport {}", range(m.dport_min, m.dport_max)));
        }
        if m.flags & match_flags::CGROUP != 0 {
            parts.push(format!("cgroup {}", m.cgroup_id));
        }
        let p = &r.loss.p;
        let pc = |i: usize| fmt_percent(prob::to_fraction(p[i]));
        let (loss, loss_text) = match r.loss.model {
            loss_model::BERNOULLI => {
                let l = prob::to_fraction(p[0]);
                (Some(l), format!("loss {}", fmt_percent(l)))
            }
            loss_model::GILBERT_ELLIOTT => {
                let l = loss::gilbert_elliott_expectation(p).loss_rate;
                (
                    Some(l),
                    format!(
                        "loss ge:{},{},{},{} (mean {})",
                        pc(0),
                        pc(1),
                        pc(2),
                        pc(3),
                        fmt_percent(l)
                    ),
                )
            }
            loss_model::FOUR_STATE => {
                let l = loss::four_state_expectation(p).loss_rate;
                (
                    Some(l),
                    format!(
                        "loss state:{},{},{},{},{} (mean {})",
                        pc(0),
                        pc(1),
                        pc(2),
                        pc(3),
                        pc(4),
                        fmt_percent(l)
                    ),
                )
            }
            _ => (None, String::new()),
        };
        let ecn = r.flags & rule_flags::ECN != 0;
        let blackhole = r.flags & rule_flags::BLACKHOLE != 0;
        let mtu_bytes = (r.mtu_bytes != 0).then_some(r.mtu_bytes);
        let corrupt = (r.corrupt_u32 != 0).then(|| prob::to_fraction(r.corrupt_u32));
        let corrupt_mode = if r.flags & rule_flags::CORRUPT_SILENT != 0 {
            CorruptMode::Silent
        } else {
            CorruptMode::Detectable
        };
        let duplicate = (r.duplicate_u32 != 0).then(|| prob::to_fraction(r.duplicate_u32));
        let mut imp = Vec::new();
        if blackhole {
            imp.push("blackhole".to_string());
        }
        if let Some(m) = mtu_bytes {
            imp.push(format!("mtu {m}"));
        }
        if loss.is_some() {
            imp.push(format!("{loss_text}{}", if ecn { " ecn" } else { "" }));
        }
        if let Some(p) = corrupt {
            let mode = if corrupt_mode == CorruptMode::Silent {
                " silent"
            } else {
                ""
            };
            imp.push(format!("corrupt {}{mode}", fmt_percent(p)));
        }
        if let Some(p) = duplicate {
            imp.push(format!("duplicate {}", fmt_percent(p)));
        }
        if r.delay_ns | r.jitter_ns != 0 {
            let mut d = format!("delay {}", fmt_duration_ns(r.delay_ns));
            if r.jitter_ns != 0 {
                let dist = if r.delay_dist == delay_dist::TABLE {
                    " table"
                } else {
                    " uniform"
                };
                d += &format!(" jitter {}{dist}", fmt_duration_ns(r.jitter_ns));
            }
            if r.delay_corr_u32 != 0 {
                d += &format!(" corr {}", fmt_percent(prob::to_fraction(r.delay_corr_u32)));
            }
            if r.flags & rule_flags::IN_ORDER != 0 {
                d += " in-order";
            }
            imp.push(d);
        }
        let reorder = (r.reorder_u32 != 0).then(|| prob::to_fraction(r.reorder_u32));
        if let Some(p) = reorder {
            imp.push(format!("reorder {}", fmt_percent(p)));
        }
        let rate_bps =
            (r.rate_ps_per_byte != 0).then(|| (8e12 / r.rate_ps_per_byte as f64).round() as u64);
        if let Some(bps) = rate_bps {
            let mut t = format!("rate {}", fmt_rate_bps(bps));
            if r.overhead_bytes != 0 {
                t += &format!(" overhead {}", r.overhead_bytes);
            }
            if r.cell_bytes != 0 {
                t += &format!(" cell {}/{}", r.cell_bytes, r.cell_overhead_bytes);
            }
            if r.queue_limit_ns != 0 {
                t += &format!(" queue {}", fmt_duration_ns(r.queue_limit_ns));
            }
            imp.push(t);
        }
        Self {
            matches: if parts.is_empty() {
                "all".into()
            } else {
                parts.join(" ")
            },
            impairments: if imp.is_empty() {
                "none".into()
            } else {
                imp.join(" ")
            },
            loss,
            ecn,
            blackhole,
            mtu_bytes,
            corrupt,
            corrupt_mode,
            duplicate,
            delay_ns: r.delay_ns,
            jitter_ns: r.jitter_ns,
            rate_bps,
            reorder,
        }
    }
}

/// Formats a fraction as a percentage with as many digits as it needs.
pub fn fmt_percent(p: f64) -> String {
    let pct = p * 100.0;
    let s = format!("{pct:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{parse_cidr, parse_proto};

    #[test]
    fn compile_and_read_back() {
        let spec = RuleSpec {
            matcher: MatchSpec {
                dst: Some(parse_cidr("dst", "2001:2:0:2::/64").unwrap()),
                proto: parse_proto("udp").unwrap(),
                dport: Some((5000, 5010)),
                ..Default::default()
            },
            loss: Some(0.1),
            ..Default::default()
        };
        let r = spec.compile().unwrap();
        let v = RuleView::from_rule(&r);
        assert_eq!(v.matches, "dst 2001:2:0:2::/64 udp dport 5000-5010");
        assert_eq!(v.impairments, "loss 10%");
        assert!((v.loss.unwrap() - 0.1).abs() < 1e-9);
    }

    #[test]
    fn rejects_mixed_families_and_ports_on_icmp() {
        let m = MatchSpec {
            src: Some(parse_cidr("src", "198.18.0.0/15").unwrap()),
            dst: Some(parse_cidr("dst", "2001:2::/48").unwrap()),
            ..Default::default()
        };
        assert!(m.compile().unwrap_err().0.contains("different IP versions"));
        let m = MatchSpec {
            proto: parse_proto("icmp").unwrap(),
            dport: Some((1, 2)),
            ..Default::default()
        };
        assert!(m.compile().unwrap_err().0.contains("icmp"));
    }

    #[test]
    fn every_impairment_round_trips_through_the_map_value() {
        let spec = RuleSpec {
            loss: Some(0.02),
            ecn: true,
            mtu_bytes: Some(1280),
            corrupt: Some(0.001),
            corrupt_mode: CorruptMode::Silent,
            duplicate: Some(0.05),
            ..Default::default()
        };
        let v = RuleView::from_rule(&spec.compile().unwrap());
        assert_eq!(
            v.impairments,
            "mtu 1280 loss 2% ecn corrupt 0.1% silent duplicate 5%"
        );
        assert_eq!(v.mtu_bytes, Some(1280));
        assert_eq!(v.corrupt_mode, CorruptMode::Silent);
    }

    #[test]
    fn burst_models_report_their_mean_loss() {
        let spec = RuleSpec {
            loss_model: Some(crate::input::parse_loss_model("ge:1%,30%").unwrap()),
            ..Default::default()
        };
        let v = RuleView::from_rule(&spec.compile().unwrap());
        // Simple Gilbert: p / (p + r) = 0.01 / 0.31.
        assert!((v.loss.unwrap() - 0.01 / 0.31).abs() < 1e-6, "{v:?}");
        assert!(
            v.impairments.starts_with("loss ge:1%,30%,100%,0%"),
            "{}",
            v.impairments
        );
        let both = RuleSpec {
            loss: Some(0.1),
            ..spec
        };
        assert!(both.compile().unwrap_err().0.contains("not both"));
    }

    #[test]
    fn invalid_impairments_name_the_value() {
        let e = RuleSpec {
            mtu_bytes: Some(20),
            ..Default::default()
        }
        .compile()
        .unwrap_err()
        .0;
        assert!(e.contains("MTU 20") && e.contains("68"), "{e}");
        let e = RuleSpec {
            ecn: true,
            ..Default::default()
        }
        .compile()
        .unwrap_err()
        .0;
        assert!(e.contains("--ecn"), "{e}");
        let e = RuleSpec {
            duplicate: Some(1.5),
            ..Default::default()
        }
        .compile()
        .unwrap_err()
        .0;
        assert!(e.contains("150%"), "{e}");
    }

    #[test]
    fn delay_and_rate_compile_and_read_back() {
        let spec = RuleSpec {
            delay: Some(DelaySpec {
                delay_ns: 100_000_000,
                jitter_ns: 20_000_000,
                distribution: Some(Distribution::Normal),
                correlation: Some(0.25),
                in_order: true,
            }),
            rate: Some(RateSpec {
                rate_bps: 10_000_000,
                queue: Some(QueueLimit::Bytes { bytes: 12_500 }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let set = compile_all(std::slice::from_ref(&spec)).unwrap();
        assert!(set.needs_fq());
        let t = set.tables[0].as_ref().expect("a normal table");
        assert_eq!(t[4095], t[4096], "last knot repeated");
        assert!(t[0] < 0 && t[4095] > 0);
        let r = &set.rules[0];
        assert_eq!(
            r.queue_limit_ns, 10_000_000,
            "12500 bytes drain in 10 ms at 10 Mbit/s"
        );
        let v = RuleView::from_rule(r);
        assert_eq!(
            v.impairments,
            "delay 100ms jitter 20ms table corr 25% in-order rate 10mbit queue 10ms"
        );
        assert_eq!(v.rate_bps, Some(10_000_000));
        let no_delay = RuleSpec {
            reorder: Some(0.1),
            ..Default::default()
        };
        assert!(no_delay.compile().unwrap_err().0.contains("--delay"));
    }

    #[test]
    fn percent_formatting() {
        assert_eq!(fmt_percent(0.1), "10%");
        assert_eq!(fmt_percent(0.005), "0.5%");
        assert_eq!(fmt_percent(0.0), "0%");
    }
}
