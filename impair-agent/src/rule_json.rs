//! One rule as the API's JSON gives it ([`RuleJson`]), its conversion to
//! the domain model, and the 400s that name a rule field's JSON path and what
//! it allows. Shared by whole requests (`request.rs`) and two-way links
//! (`link.rs`).
use impair::model::{
    dist::parse_distribution,
    units::{
        parse_cell, parse_cidr, parse_duration_ns, parse_loss_model, parse_percent,
        parse_port_range, parse_proto, parse_queue, parse_rate_bps,
    },
    CorruptMode, Field, Impairments, MatchSpec, ModelError, RuleSpec, ValueError,
};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Most rules one request may give (the data path holds 64).
pub const MAX_RULES: usize = 64;

/// A value written as a string or a number (`"10%"` or `10`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Text {
    Number(serde_json::Number),
    Text(String),
}

impl Text {
    pub(crate) fn as_string(&self) -> String {
        match self {
            Text::Number(n) => n.to_string(),
            Text::Text(s) => s.clone(),
        }
    }
}

/// One rule: what it matches and what it does, keys as in a profile's `[[rule]]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_model: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ecn: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blackhole: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrupt_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distribution: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_corr: Option<Text>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_order: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reorder: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overhead: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
}

pub(crate) fn bad(
    field: impl Into<String>,
    msg: impl Into<String>,
    allowed: Option<&str>,
) -> ApiError {
    ApiError::bad_request(msg, Some(field.into()), allowed.map(str::to_owned))
}

/// What is allowed for each rule field, for error messages.
pub fn allowed_for(f: Field) -> &'static str {
    match f {
        Field::Src | Field::Dst => "an IPv4 or IPv6 prefix such as 198.18.0.0/15 or an address",
        Field::Proto => "tcp, udp, sctp, udplite, icmp, icmpv6 or a protocol number",
        Field::Sport | Field::Dport => "a port (443) or a range (\"1000-2000\")",
        Field::Loss | Field::Corrupt | Field::Duplicate | Field::Reorder | Field::DelayCorr => {
            "a percentage from 0 to 100 (\"10%\" or 10)"
        }
        Field::LossModel => "gemodel:P[,R[,1-H[,1-K]]] or state:P13[,P31[,P32[,P23[,P14]]]]",
        Field::Delay | Field::Jitter => {
            "a time such as \"100ms\", \"1.5s\" or \"250us\" (at most 1 hour)"
        }
        Field::Distribution => "uniform, normal, pareto, paretonormal or experimental",
        Field::Rate => "a rate such as \"10mbit\" (bits/s) or \"1mbps\" (bytes/s)",
        Field::Mtu => "bytes from 68 to 65535",
        Field::Overhead => "bytes from -1024 to 1024",
        Field::Cell => "SIZE[:OVERHEAD] in bytes",
        Field::Queue => "a time (\"50ms\"), bytes (\"64kb\") or packets (\"100p\")",
        Field::CorruptMode => "detectable or silent",
        Field::Ecn | Field::Blackhole | Field::InOrder => "true or false",
        Field::Rules => "1 to 64 rules",
    }
}

/// A model error of rule `i` as an API error with its field path.
pub fn model_error(prefix: &str, e: &ModelError) -> ApiError {
    let f = e.field();
    let name = |x: Field| x.json_key();
    let path = if f == Field::Rules {
        "rules".to_owned()
    } else {
        format!("{prefix}.{}", f.json_key())
    };
    bad(path, e.render(&name), Some(allowed_for(f)))
}

impl RuleJson {
    /// The rule, validated by the model; errors name `prefix.field`.
    pub fn to_spec(&self, prefix: &str) -> Result<RuleSpec, ApiError> {
        fn opt<T>(
            prefix: &str,
            f: Field,
            v: Option<String>,
            parse: impl Fn(&str) -> Result<T, ValueError>,
        ) -> Result<Option<T>, ApiError> {
            v.map(|s| parse(&s)).transpose().map_err(|e| {
                bad(
                    format!("{prefix}.{}", f.json_key()),
                    e.0,
                    Some(allowed_for(f)),
                )
            })
        }
        let t = |v: &Option<Text>| v.as_ref().map(Text::as_string);
        let percent = |s: &str| parse_percent("percentage", s);
        let time = |s: &str| parse_duration_ns("time", s);
        let cidr = |s: &str| parse_cidr("prefix", s);
        let port = |s: &str| parse_port_range("port", s);
        let int = |f: Field, v: Option<i64>, lo: i64, hi: i64| -> Result<Option<i64>, ApiError> {
            match v {
                Some(n) if !(lo..=hi).contains(&n) => Err(bad(
                    format!("{prefix}.{}", f.json_key()),
                    format!("{n} is out of range"),
                    Some(allowed_for(f)),
                )),
                other => Ok(other),
            }
        };
        if let Some(d) = &self.distribution {
            if d.contains('/') {
                return Err(bad(
                    format!("{prefix}.distribution"),
                    "distribution tables from files are not read through the API",
                    Some(allowed_for(Field::Distribution)),
                ));
            }
        }
        let matcher = MatchSpec {
            src: opt(prefix, Field::Src, self.src.clone(), cidr)?,
            dst: opt(prefix, Field::Dst, self.dst.clone(), cidr)?,
            proto: opt(prefix, Field::Proto, self.proto.clone(), parse_proto)?.flatten(),
            sport: opt(prefix, Field::Sport, t(&self.sport), port)?,
            dport: opt(prefix, Field::Dport, t(&self.dport), port)?,
            cgroup: None,
        };
        let imp = Impairments {
            loss: opt(prefix, Field::Loss, t(&self.loss), percent)?,
            loss_model: opt(
                prefix,
                Field::LossModel,
                self.loss_model.clone(),
                parse_loss_model,
            )?,
            ecn: self.ecn,
            blackhole: self.blackhole,
            mtu_bytes: int(Field::Mtu, self.mtu, 68, 65535)?.map(|n| n as u32),
            corrupt: opt(prefix, Field::Corrupt, t(&self.corrupt), percent)?,
            corrupt_mode: opt(prefix, Field::CorruptMode, self.corrupt_mode.clone(), |s| {
                s.parse::<CorruptMode>()
            })?
            .unwrap_or_default(),
            duplicate: opt(prefix, Field::Duplicate, t(&self.duplicate), percent)?,
            delay_ns: opt(prefix, Field::Delay, t(&self.delay), time)?,
            jitter_ns: opt(prefix, Field::Jitter, t(&self.jitter), time)?,
            distribution: opt(
                prefix,
                Field::Distribution,
                self.distribution.clone(),
                parse_distribution,
            )?,
            delay_corr: opt(prefix, Field::DelayCorr, t(&self.delay_corr), percent)?,
            in_order: self.in_order,
            reorder: opt(prefix, Field::Reorder, t(&self.reorder), percent)?,
            rate_bps: opt(prefix, Field::Rate, t(&self.rate), parse_rate_bps)?,
            overhead_bytes: int(Field::Overhead, self.overhead, -1024, 1024)?.map(|n| n as i32),
            cell: opt(prefix, Field::Cell, self.cell.clone(), parse_cell)?,
            queue: opt(prefix, Field::Queue, self.queue.clone(), parse_queue)?,
            // Matrices, series and rate traces are files on the command
            // line; the API does not take them yet.
            matrix: None,
            delay_series: None,
            loss_series: None,
            rate_trace: None,
        };
        if let (Some(s), Some(d)) = (matcher.src, matcher.dst) {
            if s.addr().is_ipv4() != d.addr().is_ipv4() {
                return Err(bad(
                    format!("{prefix}.dst"),
                    format!("source {s} and destination {d} are of different IP versions"),
                    Some("a destination of the source's IP version"),
                ));
            }
        }
        imp.rule(matcher).map_err(|e| model_error(prefix, &e))
    }
}
