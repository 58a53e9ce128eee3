//! Rules as users write them, compiled to the map ABI's [`Rule`], and read back
//! from a running instance for display (so `impair stats` needs no side files).
use std::net::IpAddr;

use impair_common::{loss_model, match_flags, prob, FlowMatch, Loss, Prefix, Rule, MAX_RULES};
use ipnet::IpNet;
use serde::Serialize;

use crate::input::{usage, Proto, UsageError};

/// What a rule matches; every field `None` matches every packet (like netem).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchSpec {
    pub src: Option<IpNet>,
    pub dst: Option<IpNet>,
    pub proto: Option<Proto>,
    pub sport: Option<(u16, u16)>,
    pub dport: Option<(u16, u16)>,
}

/// One rule: a match and its impairments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleSpec {
    pub matcher: MatchSpec,
    /// Independent (Bernoulli) loss probability in [0, 1].
    pub loss: Option<f64>,
}

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
                p.addr[i] = u32::from_ne_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]]);
                p.mask[i] = u32::from_ne_bytes([m[4 * i], m[4 * i + 1], m[4 * i + 2], m[4 * i + 3]]);
            }
        }
    }
    p
}

impl MatchSpec {
    pub fn compile(&self) -> Result<FlowMatch, UsageError> {
        let mut m = FlowMatch::default();
        let family = |n: &IpNet| if n.addr().is_ipv4() { match_flags::IPV4 } else { match_flags::IPV6 };
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
        Ok(m)
    }
}

impl RuleSpec {
    pub fn compile(&self) -> Result<Rule, UsageError> {
        let mut r = Rule { matcher: self.matcher.compile()?, ..Default::default() };
        if let Some(p) = self.loss {
            if !(0.0..=1.0).contains(&p) {
                return Err(usage!("invalid loss {}%: must be between 0% and 100%", p * 100.0));
            }
            r.loss = Loss { model: loss_model::BERNOULLI, p: [prob::from_fraction(p), 0, 0, 0, 0], ..Default::default() };
        }
        Ok(r)
    }
}

/// Compiles a rule list, checking the rule-count limit.
pub fn compile_all(rules: &[RuleSpec]) -> Result<Vec<Rule>, UsageError> {
    if rules.len() > MAX_RULES as usize {
        return Err(usage!("{} rules given; at most {MAX_RULES} are allowed", rules.len()));
    }
    rules.iter().map(RuleSpec::compile).collect()
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
    /// Configured loss probability (fraction), if the rule has Bernoulli loss.
    pub loss: Option<f64>,
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
        let range = |lo: u16, hi: u16| if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") };
        if m.flags & match_flags::SPORT != 0 {
            parts.push(format!("sport {}", range(m.sport_min, m.sport_max)));
        }
        if m.flags & match_flags::DPORT != 0 {
            parts.push(format!("dport {}", range(m.dport_min, m.dport_max)));
        }
        let loss = (r.loss.model == loss_model::BERNOULLI).then(|| prob::to_fraction(r.loss.p[0]));
        let impairments = match loss {
            Some(p) => format!("loss {}", fmt_percent(p)),
            None => "none".into(),
        };
        Self { matches: if parts.is_empty() { "all".into() } else { parts.join(" ") }, impairments, loss }
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
        let m = MatchSpec { proto: parse_proto("icmp").unwrap(), dport: Some((1, 2)), ..Default::default() };
        assert!(m.compile().unwrap_err().0.contains("icmp"));
    }

    #[test]
    fn percent_formatting() {
        assert_eq!(fmt_percent(0.1), "10%");
        assert_eq!(fmt_percent(0.005), "0.5%");
        assert_eq!(fmt_percent(0.0), "0%");
    }
}
