//! Rules read back from a running instance's map values, for display and
//! JSON (so `impair stats` needs no side files), and the formatting of the
//! units they carry.
use std::net::IpAddr;

use impair_common::{
    delay_dist, dist::TABLE_SCALE, loss, loss_model, match_flags, prob, rule_flags, Prefix, Rule,
};
use ipnet::IpNet;
use serde::Serialize;

use super::{
    dist::Distribution,
    rule::{CorruptMode, DelaySpec, MatchSpec, RateSpec, RuleSpec},
    units::{LossModelSpec, Proto, QueueLimit},
};

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

/// A probability read back from its u32 threshold, as it was given: the
/// threshold's step is 2^-32 (about 2.3e-10), so rounding to 1e-9 gives back
/// any percentage written with up to seven decimals (10% reads 0.1, not
/// 0.1000000003).
pub fn as_given(threshold: u32) -> f64 {
    (prob::to_fraction(threshold) * 1e9).round() / 1e9
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
            // Received traffic is matched by its socket's mark (`impair run`).
            let mark = m.cgroup_id & !impair_common::SOCKET_MARK_ID_BIT;
            parts.push(if m.cgroup_id & impair_common::SOCKET_MARK_ID_BIT != 0 {
                format!("socket mark {mark:#x}")
            } else {
                format!("cgroup {}", m.cgroup_id)
            });
        }
        let p = &r.loss.p;
        let pc = |i: usize| fmt_percent(as_given(p[i]));
        let (loss, loss_text) = match r.loss.model {
            loss_model::BERNOULLI => {
                let l = as_given(p[0]);
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
        let corrupt = (r.corrupt_u32 != 0).then(|| as_given(r.corrupt_u32));
        let corrupt_mode = if r.flags & rule_flags::CORRUPT_SILENT != 0 {
            CorruptMode::Silent
        } else {
            CorruptMode::Detectable
        };
        let duplicate = (r.duplicate_u32 != 0).then(|| as_given(r.duplicate_u32));
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
                d += &format!(" corr {}", fmt_percent(as_given(r.delay_corr_u32)));
            }
            if r.flags & rule_flags::IN_ORDER != 0 {
                d += " in-order";
            }
            imp.push(d);
        }
        let reorder = (r.reorder_u32 != 0).then(|| as_given(r.reorder_u32));
        if let Some(p) = reorder {
            imp.push(format!("reorder {}", fmt_percent(p)));
        }
        let rate_bps = (r.rate_ps_per_byte != 0).then(|| rate_of(r.rate_ps_per_byte));
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
        if r.flags & rule_flags::MATRIX != 0 {
            imp.push("matrix".into());
        }
        if r.flags & rule_flags::DELAY_SERIES != 0 {
            imp.push("delay-trace".into());
        }
        if r.flags & rule_flags::LOSS_SERIES != 0 {
            imp.push("loss-trace".into());
        }
        if r.flags & rule_flags::RATE_TRACE != 0 {
            imp.push("rate-trace".into());
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

/// The rate in bits per second that compiled to `ps_per_byte`.
fn rate_of(ps_per_byte: u64) -> u64 {
    (8e12 / ps_per_byte as f64).round() as u64
}

/// A running rule read back into the model, so that a live update can keep
/// what it was not told to change. `table` is the rule's jitter table when
/// it draws from one (it comes back as [`Distribution::Custom`], the same
/// table). Probabilities come back as given ([`as_given`]); a queue limit
/// comes back as the time it stands for at the rule's rate.
pub fn spec_of(r: &Rule, table: Option<&[i32]>) -> RuleSpec {
    let m = &r.matcher;
    let v6 = m.flags & match_flags::IPV6 != 0;
    let has = |f: u32| m.flags & f != 0;
    let matcher = MatchSpec {
        src: has(match_flags::SRC)
            .then(|| prefix_to_net(&m.src, v6))
            .flatten(),
        dst: has(match_flags::DST)
            .then(|| prefix_to_net(&m.dst, v6))
            .flatten(),
        proto: has(match_flags::PROTO).then_some(Proto(m.l4_proto)),
        sport: has(match_flags::SPORT).then_some((m.sport_min, m.sport_max)),
        dport: has(match_flags::DPORT).then_some((m.dport_min, m.dport_max)),
        cgroup: has(match_flags::CGROUP).then_some(m.cgroup_id),
    };
    let p = |i: usize| as_given(r.loss.p[i]);
    let (loss, loss_model) = match r.loss.model {
        loss_model::BERNOULLI => (Some(p(0)), None),
        loss_model::GILBERT_ELLIOTT => (
            None,
            Some(LossModelSpec::GilbertElliott {
                p: p(0),
                r: p(1),
                one_minus_h: p(2),
                one_minus_k: p(3),
            }),
        ),
        loss_model::FOUR_STATE => (
            None,
            Some(LossModelSpec::FourState {
                p13: p(0),
                p31: p(1),
                p32: p(2),
                p23: p(3),
                p14: p(4),
            }),
        ),
        _ => (None, None),
    };
    let given = |t: u32| (t != 0).then(|| as_given(t));
    let delay =
        (r.delay_ns != 0 || r.jitter_ns != 0 || r.flags & rule_flags::IN_ORDER != 0).then(|| {
            DelaySpec {
                delay_ns: r.delay_ns,
                jitter_ns: r.jitter_ns,
                distribution: match (r.delay_dist, table) {
                    (delay_dist::TABLE, Some(t)) => Some(Distribution::Custom(
                        t[..t.len().saturating_sub(1)]
                            .iter()
                            .map(|&v| f64::from(v) / TABLE_SCALE as f64)
                            .collect(),
                    )),
                    _ => None,
                },
                correlation: given(r.delay_corr_u32),
                in_order: r.flags & rule_flags::IN_ORDER != 0,
            }
        });
    let rate = (r.rate_ps_per_byte != 0).then(|| RateSpec {
        rate_bps: rate_of(r.rate_ps_per_byte),
        overhead_bytes: r.overhead_bytes,
        cell_bytes: r.cell_bytes,
        cell_overhead_bytes: r.cell_overhead_bytes,
        queue: (r.queue_limit_ns != 0).then_some(QueueLimit::Time {
            ns: r.queue_limit_ns,
        }),
    });
    RuleSpec {
        matcher,
        loss,
        loss_model,
        ecn: r.flags & rule_flags::ECN != 0,
        blackhole: r.flags & rule_flags::BLACKHOLE != 0,
        mtu_bytes: (r.mtu_bytes != 0).then_some(r.mtu_bytes),
        corrupt: given(r.corrupt_u32),
        corrupt_mode: if r.flags & rule_flags::CORRUPT_SILENT != 0 {
            CorruptMode::Silent
        } else {
            CorruptMode::Detectable
        },
        duplicate: given(r.duplicate_u32),
        delay,
        reorder: given(r.reorder_u32),
        rate,
        // The matrix lives in its own map: `Maps::matrix_of` reads it back.
        matrix: None,
        delay_series: None,
        loss_series: None,
        rate_trace: None,
    }
}
