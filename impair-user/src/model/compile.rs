//! The model compiled to the map ABI: a [`RuleSpec`] becomes the kernel's
//! [`Rule`], a rule list a [`RuleSet`] with its jitter tables.
use impair_common::{
    delay_dist, edt, loss, loss_model, match_flags, prob, rule_flags, DelayTable, FlowMatch, Loss,
    Prefix, Rule,
};
use ipnet::IpNet;

use std::sync::Arc;

use super::{
    dist::Distribution,
    error::ModelError,
    matrix::Matrix,
    rule::{CorruptMode, MatchSpec, RuleSpec},
    series::Series,
    trace::{RateTrace, TRACE_DEFAULT_QUEUE_NS},
    units::{LossModelSpec, QueueLimit, QUEUE_PACKET_BYTES},
    validate,
};

/// A compiled rule set: map values, and the quantile tables of rules that
/// draw jitter from one.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub tables: Vec<Option<Box<DelayTable>>>,
    /// Each rule's latency matrix, if it has one (same order as `rules`).
    pub matrices: Vec<Option<Arc<Matrix>>>,
    /// The rule set's delay and loss series (one each, shared by the rules
    /// that have one).
    pub delay_series: Option<Arc<Series>>,
    pub loss_series: Option<Arc<Series>>,
    /// The rule set's rate trace (one, shared by the rules that have one).
    pub rate_trace: Option<Arc<RateTrace>>,
}

impl RuleSet {
    /// Whether any rule sets departure times (needs fq on the interface).
    pub fn needs_fq(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.delay_ns | r.jitter_ns | r.rate_ps_per_byte != 0)
            || self.delay_series.is_some()
            || self.rate_trace.is_some()
            || self.matrices.iter().flatten().any(|m| {
                m.dests
                    .iter()
                    .any(|d| d.delay_ns.is_some() || d.jitter_ns.is_some() || d.rate_bps.is_some())
            })
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
            .zip(self.matrices.iter().chain(std::iter::repeat(&None)))
            .map(|(hold, m)| {
                // The matrix's hold comes after the rule's.
                let extra = m.as_ref().map_or(0, |m| {
                    m.dests.iter().map(|d| d.max_hold_ns()).max().unwrap_or(0)
                });
                hold.saturating_add(extra)
                    .saturating_add(self.delay_series.as_ref().map_or(0, |s| s.max_delay_ns()))
            })
            .max()
            .unwrap_or(0)
    }
}

/// A prefix as the map's address and mask words (network byte order).
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
    pub fn compile(&self) -> Result<FlowMatch, ModelError> {
        validate::matcher(self)?;
        let mut m = FlowMatch::default();
        let family = |n: &IpNet| {
            if n.addr().is_ipv4() {
                match_flags::IPV4
            } else {
                match_flags::IPV6
            }
        };
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
    /// The map value; validates first ([`validate::rule`]).
    pub fn compile(&self) -> Result<Rule, ModelError> {
        validate::rule(self)?;
        let mut r = Rule {
            matcher: self.matcher.compile()?,
            ..Default::default()
        };
        let fraction = |p: Option<f64>| p.map_or(0, prob::from_fraction);
        match (self.loss, self.loss_model) {
            (Some(p), _) => {
                r.loss = Loss {
                    model: loss_model::BERNOULLI,
                    p: [fraction(Some(p)), 0, 0, 0, 0],
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
            r.flags |= rule_flags::ECN;
        }
        if self.blackhole {
            r.flags |= rule_flags::BLACKHOLE;
        }
        if let Some(mtu) = self.mtu_bytes {
            r.mtu_bytes = mtu;
        }
        r.corrupt_u32 = fraction(self.corrupt);
        if self.corrupt_mode == CorruptMode::Silent {
            r.flags |= rule_flags::CORRUPT_SILENT;
        }
        r.duplicate_u32 = fraction(self.duplicate);
        if let Some(d) = &self.delay {
            r.delay_ns = d.delay_ns;
            r.jitter_ns = d.jitter_ns;
            r.delay_dist = match (&d.distribution, d.jitter_ns) {
                (_, 0) => delay_dist::NONE,
                (None | Some(Distribution::Uniform), _) => delay_dist::UNIFORM,
                (Some(_), _) => delay_dist::TABLE,
            };
            r.delay_corr_u32 = fraction(d.correlation);
            if d.in_order {
                r.flags |= rule_flags::IN_ORDER;
            }
        }
        r.reorder_u32 = fraction(self.reorder);
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
        if self.matrix.is_some() {
            r.flags |= rule_flags::MATRIX;
        }
        if self.delay_series.is_some() {
            r.flags |= rule_flags::DELAY_SERIES;
        }
        if self.loss_series.is_some() {
            r.flags |= rule_flags::LOSS_SERIES;
        }
        if self.rate_trace.is_some() {
            r.flags |= rule_flags::RATE_TRACE;
            if r.queue_limit_ns == 0 {
                r.queue_limit_ns = TRACE_DEFAULT_QUEUE_NS;
            }
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
}

/// Compiles a rule list, validated as a whole ([`validate::rule_set`]).
pub fn compile_all(rules: &[RuleSpec]) -> Result<RuleSet, ModelError> {
    validate::rule_set(rules)?;
    let prefixes: usize = rules
        .iter()
        .filter_map(|r| r.matrix.as_ref())
        .map(|m| m.dests.len())
        .sum();
    if prefixes > impair_common::matrix::MATRIX_MAX_DESTS as usize {
        return Err(ModelError::OutOfRange {
            field: super::error::Field::Rules,
            value: format!("{prefixes} latency-matrix prefixes"),
            expected: format!(
                "at most {} over all rules of a set",
                impair_common::matrix::MATRIX_MAX_DESTS
            ),
        });
    }
    let one_series = |pick: fn(&RuleSpec) -> &Option<Arc<Series>>, what: &str| {
        let mut all = rules.iter().filter_map(|r| pick(r).clone());
        let first = all.next();
        match &first {
            Some(f) if all.any(|s| s != *f) => Err(ModelError::OutOfRange {
                field: super::error::Field::Rules,
                value: format!("rules with different {what} series"),
                expected: format!("one {what} series per rule set"),
            }),
            _ => Ok(first),
        }
    };
    let delay_series = one_series(|r| &r.delay_series, "delay")?;
    let loss_series = one_series(|r| &r.loss_series, "loss")?;
    let mut traces = rules.iter().filter_map(|r| r.rate_trace.clone());
    let rate_trace = traces.next();
    if let Some(first) = &rate_trace {
        if traces.any(|t| t != *first) {
            return Err(ModelError::OutOfRange {
                field: super::error::Field::Rules,
                value: "rules with different rate traces".into(),
                expected: "one rate trace per rule set".into(),
            });
        }
    }
    Ok(RuleSet {
        delay_series,
        loss_series,
        rate_trace,
        rules: rules
            .iter()
            .map(RuleSpec::compile)
            .collect::<Result<_, _>>()?,
        tables: rules.iter().map(RuleSpec::table).collect(),
        matrices: rules.iter().map(|r| r.matrix.clone()).collect(),
    })
}
