//! The domain model: a rule is what it matches and what it does to the
//! packets it matches, in unit-bearing types. Every front end (flags, TOML
//! profiles, scenarios, sweeps, the API) fills an [`Impairments`] and a
//! [`MatchSpec`], and [`Impairments::rule`] validates them in one place
//! ([`super::validate`]). No clap, no printing, no process exit here.
use std::{str::FromStr, sync::Arc};

use ipnet::IpNet;

use super::{
    dist::Distribution,
    error::{ModelError, ValueError},
    matrix::Matrix,
    series::Series,
    trace::RateTrace,
    units::{LossModelSpec, Proto, QueueLimit},
};

/// What a rule matches; every field `None` matches every packet (like netem).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchSpec {
    pub src: Option<IpNet>,
    pub dst: Option<IpNet>,
    pub proto: Option<Proto>,
    pub sport: Option<(u16, u16)>,
    pub dport: Option<(u16, u16)>,
    /// Only packets of sockets of this cgroup v2 (its id: the directory's
    /// inode): sent by them at tc egress, or, at tc ingress, for them (the
    /// data path looks up the receiving socket); not at XDP (`impair run`).
    pub cgroup: Option<u64>,
}

/// How corruption treats the L4 checksum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
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
    /// Per-destination delay, jitter, loss and rate after the rule's own
    /// (a latency matrix, [`super::matrix`]).
    pub matrix: Option<Arc<Matrix>>,
    /// A delay series: its value for now replaces the delay ([`super::series`]).
    pub delay_series: Option<Arc<Series>>,
    /// A loss series: its value for now replaces the loss.
    pub loss_series: Option<Arc<Series>>,
    /// A rate trace: packets leave when its capacity covers them
    /// ([`super::trace`]).
    pub rate_trace: Option<Arc<RateTrace>>,
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

impl FromStr for CorruptMode {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "detectable" => Ok(CorruptMode::Detectable),
            "silent" => Ok(CorruptMode::Silent),
            other => Err(ValueError::one_line(format!(
                "invalid value '{other}': expected detectable or silent"
            ))),
        }
    }
}

impl CorruptMode {
    pub fn name(self) -> &'static str {
        match self {
            CorruptMode::Detectable => "detectable",
            CorruptMode::Silent => "silent",
        }
    }
}

/// The queue limit of a paced rule that gives none, at egress: netem's
/// default limit (1000 packets), as a time at the rule's rate.
pub const DEFAULT_QUEUE_PACKETS: u64 = 1000;

impl RuleSpec {
    /// This rule with [`DEFAULT_QUEUE_PACKETS`] as its queue limit when it
    /// has a rate and no limit of its own.
    pub fn with_default_queue(&self) -> RuleSpec {
        let mut r = self.clone();
        if let Some(rate) = r.rate.as_mut() {
            rate.queue.get_or_insert(QueueLimit::Packets {
                packets: DEFAULT_QUEUE_PACKETS,
            });
        }
        r
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
            || self.matrix.is_some()
            || self.delay_series.is_some()
            || self.loss_series.is_some()
            || self.rate_trace.is_some()
    }
}

/// A rule's impairments as every front end gives them: one optional value
/// per field, in units. [`Impairments::rule`] checks how they combine and
/// builds the structured [`RuleSpec`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Impairments {
    pub loss: Option<f64>,
    pub loss_model: Option<LossModelSpec>,
    pub ecn: bool,
    pub blackhole: bool,
    pub mtu_bytes: Option<u32>,
    pub corrupt: Option<f64>,
    pub corrupt_mode: CorruptMode,
    pub duplicate: Option<f64>,
    pub delay_ns: Option<u64>,
    pub jitter_ns: Option<u64>,
    pub distribution: Option<Distribution>,
    pub delay_corr: Option<f64>,
    pub in_order: bool,
    pub reorder: Option<f64>,
    pub rate_bps: Option<u64>,
    pub overhead_bytes: Option<i32>,
    /// Cell size and per-cell overhead, in bytes.
    pub cell: Option<(u32, i32)>,
    pub queue: Option<QueueLimit>,
    /// A latency matrix ([`RuleSpec::matrix`]).
    pub matrix: Option<Arc<Matrix>>,
    /// Delay and loss series ([`RuleSpec::delay_series`]).
    pub delay_series: Option<Arc<Series>>,
    pub loss_series: Option<Arc<Series>>,
    /// A rate trace ([`RuleSpec::rate_trace`]).
    pub rate_trace: Option<Arc<RateTrace>>,
}

impl Impairments {
    /// The flat form of `spec`'s impairments.
    pub fn of(spec: &RuleSpec) -> Self {
        let d = spec.delay.as_ref();
        let r = spec.rate.as_ref();
        Impairments {
            loss: spec.loss,
            loss_model: spec.loss_model,
            ecn: spec.ecn,
            blackhole: spec.blackhole,
            mtu_bytes: spec.mtu_bytes,
            corrupt: spec.corrupt,
            corrupt_mode: spec.corrupt_mode,
            duplicate: spec.duplicate,
            delay_ns: d.map(|d| d.delay_ns),
            jitter_ns: d.and_then(|d| (d.jitter_ns != 0).then_some(d.jitter_ns)),
            distribution: d.and_then(|d| d.distribution.clone()),
            delay_corr: d.and_then(|d| d.correlation),
            in_order: d.is_some_and(|d| d.in_order),
            reorder: spec.reorder,
            rate_bps: r.map(|r| r.rate_bps),
            overhead_bytes: r.and_then(|r| (r.overhead_bytes != 0).then_some(r.overhead_bytes)),
            cell: r
                .and_then(|r| (r.cell_bytes != 0).then_some((r.cell_bytes, r.cell_overhead_bytes))),
            queue: r.and_then(|r| r.queue),
            matrix: spec.matrix.clone(),
            delay_series: spec.delay_series.clone(),
            loss_series: spec.loss_series.clone(),
            rate_trace: spec.rate_trace.clone(),
        }
    }

    /// These impairments with `given` laid over them: what `given` sets
    /// wins, the rest is kept. A loss replaces a loss model and the reverse;
    /// a blackhole and the other impairments replace each other (a blackhole
    /// drops everything, so nothing beside it could act).
    pub fn overlay(&self, given: &Impairments) -> Impairments {
        if given.blackhole {
            return Impairments {
                blackhole: true,
                ..Impairments::default()
            };
        }
        let mut out = if self.blackhole && given.given() {
            Impairments::default()
        } else {
            self.clone()
        };
        fn set<T: Clone>(slot: &mut Option<T>, v: &Option<T>) {
            if v.is_some() {
                slot.clone_from(v);
            }
        }
        if given.loss.is_some() {
            out.loss_model = None;
        }
        if given.loss_model.is_some() {
            out.loss = None;
        }
        set(&mut out.loss, &given.loss);
        set(&mut out.loss_model, &given.loss_model);
        out.ecn |= given.ecn;
        set(&mut out.mtu_bytes, &given.mtu_bytes);
        set(&mut out.corrupt, &given.corrupt);
        if given.corrupt.is_some() || given.corrupt_mode != CorruptMode::default() {
            out.corrupt_mode = given.corrupt_mode;
        }
        set(&mut out.duplicate, &given.duplicate);
        set(&mut out.delay_ns, &given.delay_ns);
        set(&mut out.jitter_ns, &given.jitter_ns);
        set(&mut out.distribution, &given.distribution);
        set(&mut out.delay_corr, &given.delay_corr);
        out.in_order |= given.in_order;
        set(&mut out.reorder, &given.reorder);
        set(&mut out.rate_bps, &given.rate_bps);
        set(&mut out.overhead_bytes, &given.overhead_bytes);
        set(&mut out.cell, &given.cell);
        set(&mut out.queue, &given.queue);
        set(&mut out.matrix, &given.matrix);
        set(&mut out.delay_series, &given.delay_series);
        set(&mut out.loss_series, &given.loss_series);
        set(&mut out.rate_trace, &given.rate_trace);
        out
    }

    /// Whether any impairment (or a modifier of one) is given.
    pub fn given(&self) -> bool {
        *self != Impairments::default()
    }

    /// The rule under `matcher`, validated.
    pub fn rule(&self, matcher: MatchSpec) -> Result<RuleSpec, ModelError> {
        super::validate::impairments(self)?;
        let spec = RuleSpec {
            matcher,
            loss: self.loss,
            loss_model: self.loss_model,
            ecn: self.ecn,
            blackhole: self.blackhole,
            mtu_bytes: self.mtu_bytes,
            corrupt: self.corrupt,
            corrupt_mode: self.corrupt_mode,
            duplicate: self.duplicate,
            delay: (self.delay_ns.is_some()
                || self.jitter_ns.is_some()
                || self.distribution.is_some()
                || self.in_order)
                .then(|| DelaySpec {
                    delay_ns: self.delay_ns.unwrap_or(0),
                    jitter_ns: self.jitter_ns.unwrap_or(0),
                    distribution: self.distribution.clone(),
                    correlation: self.delay_corr,
                    in_order: self.in_order,
                }),
            reorder: self.reorder,
            rate: self.rate_bps.map(|rate_bps| RateSpec {
                rate_bps,
                overhead_bytes: self.overhead_bytes.unwrap_or(0),
                cell_bytes: self.cell.map_or(0, |c| c.0),
                cell_overhead_bytes: self.cell.map_or(0, |c| c.1),
                queue: self.queue,
            }),
            matrix: self.matrix.clone(),
            delay_series: self.delay_series.clone(),
            loss_series: self.loss_series.clone(),
            rate_trace: self.rate_trace.clone(),
        };
        super::validate::rule(&spec)?;
        Ok(spec)
    }
}

/// Matches from lists of values, one per combination, in the order given
/// (source outermost): `--dst A --dst B --dport 53 --dport 853` is four
/// matches. Source/destination pairs of different IP versions cannot match a
/// packet and are left out; if nothing is left, that is an error.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MatchLists {
    pub src: Vec<IpNet>,
    pub dst: Vec<IpNet>,
    /// `None` is any protocol.
    pub proto: Vec<Option<Proto>>,
    pub sport: Vec<(u16, u16)>,
    pub dport: Vec<(u16, u16)>,
}

/// `v` as options: `[None]` when empty, so a product over it keeps one slot.
fn each<T: Clone>(v: &[T]) -> Vec<Option<T>> {
    if v.is_empty() {
        vec![None]
    } else {
        v.iter().cloned().map(Some).collect()
    }
}

impl MatchLists {
    /// Whether any match value is given.
    pub fn given(&self) -> bool {
        *self != MatchLists::default()
    }

    pub fn specs(&self) -> Result<Vec<MatchSpec>, ModelError> {
        let mut out = Vec::new();
        for src in each(&self.src) {
            for dst in each(&self.dst) {
                if let (Some(s), Some(d)) = (src, dst) {
                    if s.addr().is_ipv4() != d.addr().is_ipv4() {
                        continue;
                    }
                }
                for proto in each(&self.proto) {
                    for sport in each(&self.sport) {
                        for dport in each(&self.dport) {
                            out.push(MatchSpec {
                                src,
                                dst,
                                proto: proto.flatten(),
                                sport,
                                dport,
                                cgroup: None,
                            });
                        }
                    }
                }
            }
        }
        if out.is_empty() {
            return Err(ModelError::NoFamilyPair);
        }
        Ok(out)
    }

    /// The rules for `impairments` under every match.
    pub fn rules(&self, impairments: &Impairments) -> Result<Vec<RuleSpec>, ModelError> {
        self.specs()?
            .into_iter()
            .map(|m| impairments.rule(m))
            .collect()
    }
}
