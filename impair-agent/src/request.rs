//! The API's request bodies, as JSON, and their conversion to the domain
//! model (`impair::model`). These are the agent's own serde types: a rule's
//! keys are the model's field names in snake case ([`Field::json_key`]) and
//! take the same values as a profile's `[[rule]]` (`"10%"`, `"20ms"`,
//! `"10mbit"`), parsed by the model's own unit parsers; numbers are accepted
//! where a profile takes a number. Every error names its JSON path
//! (`rules[0].loss`) and what is allowed.
use std::time::Duration;

use impair::{
    engine::{AttachMode, Direction},
    model::{
        dist::parse_distribution,
        units::{
            parse_cell, parse_cidr, parse_duration_ns, parse_loss_model, parse_percent,
            parse_port_range, parse_proto, parse_queue, parse_rate_bps,
        },
        CorruptMode, Field, Impairments, LinkRules, MatchSpec, ModelError, RuleSpec, ValueError,
    },
};
use serde::{Deserialize, Serialize};

use crate::{
    error::ApiError,
    link::{flip_error, link_of, sides_wanted, PairPlan},
};

/// Longest client-chosen id.
pub const MAX_ID_LEN: usize = 64;
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
    fn as_string(&self) -> String {
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

/// Where an impairment applies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The interface, in the agent's network namespace or in `netns`.
    pub interface: String,
    /// A named network namespace (`ip netns`) or a path to one
    /// (`/proc/PID/ns/net`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// A running Podman or Docker container (name or id): its network
    /// namespace, resolved through the runtime's API. Instead of `netns`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Only packets sent by sockets of this cgroup v2 (a directory under
    /// /sys/fs/cgroup, or a path relative to it); egress only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

/// `POST /v1/impairments`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// Chosen by the client: creating the same id with the same body again
    /// returns the existing instance.
    pub id: String,
    pub target: Target,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<RuleJson>>,
    /// A built-in profile's name (`impair profiles`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// A scenario, as the TOML text of a scenario file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    /// A two-way link's uplink: the rules of what the host sends (egress).
    /// With `downlink`, instead of rules, a profile or a scenario.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uplink: Option<Vec<RuleJson>>,
    /// A two-way link's downlink: the rules of what the host receives
    /// (ingress).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downlink: Option<Vec<RuleJson>>,
    /// Swaps a two-way link's uplink and downlink (the link seen from its
    /// other end, as `impair attach --flip`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flip: bool,
    /// Rules, a one-way profile or scenario: egress (default), ingress or
    /// both. A two-way link: both sides (default), egress (the uplink
    /// only) or ingress (the downlink only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// auto (default), tcx or netlink.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attach_mode: Option<String>,
    /// How long it impairs (`"30s"`); the kernel enforces it through the lease.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// `PUT`/`PATCH /v1/impairments/{id}`: the new rule set, replaced atomically.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<RuleJson>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uplink: Option<Vec<RuleJson>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downlink: Option<Vec<RuleJson>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flip: bool,
}

/// What a request asks the engine for, in the model's terms.
#[derive(Debug, Clone)]
pub struct Plan {
    /// A one-way instance's rules (empty for a two-way one).
    pub rules: Vec<RuleSpec>,
    /// A two-way link: an uplink (egress) and a downlink (ingress) instance.
    pub pair: Option<PairPlan>,
    pub label: String,
    pub scenario: Option<impair::profile::scenario::Scenario>,
    pub direction: Direction,
    pub attach_mode: AttachMode,
    pub duration: Option<Duration>,
    pub cgroup_id: Option<u64>,
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

/// A name or a path: letters, digits and `-_.`; no `..`.
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Checks an id: 1-64 of `A-Za-z0-9-_.`.
pub fn check_id(id: &str, field: &str) -> Result<(), ApiError> {
    if plain_name(id) && id != "." && id != ".." {
        Ok(())
    } else {
        Err(bad(
            field,
            format!("invalid id {id:?}"),
            Some("1 to 64 characters of A-Z, a-z, 0-9, '-', '_', '.'"),
        ))
    }
}

/// The cgroup's id (its directory's inode), as `impair run` matches it.
fn cgroup_id(path: &str) -> Result<u64, ApiError> {
    use std::os::unix::fs::MetadataExt as _;
    let allowed = "a cgroup v2 directory: /sys/fs/cgroup/... or a path relative to it";
    let full = if path.starts_with("/sys/fs/cgroup") {
        std::path::PathBuf::from(path)
    } else {
        std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'))
    };
    if path.split('/').any(|c| c == "..") {
        return Err(bad("target.cgroup", "'..' is not allowed", Some(allowed)));
    }
    match std::fs::metadata(&full) {
        Ok(m) if m.is_dir() => Ok(m.ino()),
        _ => Err(bad(
            "target.cgroup",
            format!("no cgroup directory {}", full.display()),
            Some(allowed),
        )),
    }
}

impl CreateRequest {
    /// Everything checked and converted; nothing has changed yet.
    pub fn plan(&self) -> Result<Plan, ApiError> {
        check_id(&self.id, "id")?;
        let t = &self.target;
        if t.interface.is_empty() || t.interface.len() >= 16 || t.interface.contains('/') {
            return Err(bad(
                "target.interface",
                format!("invalid interface name {:?}", t.interface),
                Some("an interface name of 1-15 characters, no '/'"),
            ));
        }
        if let Some(ns) = &t.netns {
            let ok = if ns.starts_with('/') {
                !ns.split('/').any(|c| c == "..")
            } else {
                plain_name(ns)
            };
            if !ok {
                return Err(bad(
                    "target.netns",
                    format!("invalid network namespace {ns:?}"),
                    Some(
                        "a name from `ip netns list` or an absolute path such as /proc/PID/ns/net",
                    ),
                ));
            }
        }
        if t.container.is_some() && t.netns.is_some() {
            return Err(bad(
                "target.container",
                "give either a container or a network namespace, not both",
                Some("a container name, or netns"),
            ));
        }
        if let Some(c) = &t.container {
            crate::container::check_name(c)?;
        }
        let direction: Option<Direction> = self
            .direction
            .as_ref()
            .map(|d| {
                d.parse()
                    .map_err(|e: String| bad("direction", e, Some("egress, ingress or both")))
            })
            .transpose()?;
        let attach_mode = match &self.attach_mode {
            None => AttachMode::Auto,
            Some(d) => d
                .parse()
                .map_err(|e: String| bad("attach_mode", e, Some("auto, tcx or netlink")))?,
        };
        let duration = match &self.duration {
            None => None,
            Some(d) => {
                let ns = parse_duration_ns("duration", &d.as_string()).map_err(|e| {
                    bad(
                        "duration",
                        e.0,
                        Some("a time such as \"30s\" (at most 1 hour)"),
                    )
                })?;
                if ns == 0 {
                    return Err(bad("duration", "0 would end at once", Some("more than 0")));
                }
                Some(Duration::from_nanos(ns))
            }
        };
        let cgroup_id = t.cgroup.as_deref().map(cgroup_id).transpose()?;
        let given = [
            self.rules.is_some(),
            self.profile.is_some(),
            self.scenario.is_some(),
            self.uplink.is_some() || self.downlink.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if given != 1 {
            // Several given: name a two-way side, the likelier slip.
            let field = match (given > 1, &self.uplink) {
                (true, Some(_)) => "uplink",
                (true, None) if self.downlink.is_some() => "downlink",
                _ => "rules",
            };
            return Err(bad(
                field,
                "give exactly one of rules, profile, uplink/downlink and scenario",
                Some("one of rules, profile, uplink/downlink, scenario"),
            ));
        }
        // Every step's link (a scenario) or the one link, flipped if asked.
        let (links, label, scenario) = if let Some(text) = &self.scenario {
            let sc = impair::profile::scenario::parse("scenario", text, None).map_err(|e| {
                bad(
                    "scenario",
                    e.0,
                    Some("a scenario file's TOML text (docs/profiles.md)"),
                )
            })?;
            let sc = match (self.flip, sc.two_way()) {
                (false, _) => sc,
                (true, true) => sc.flipped(),
                (true, false) => return Err(flip_error("this scenario")),
            };
            let links: Vec<LinkRules> = sc.steps.iter().map(|st| st.link()).collect();
            (links, format!("scenario {}", self.id), Some(sc))
        } else {
            let (link, label) = link_of(
                &self.rules,
                &self.profile,
                &self.uplink,
                &self.downlink,
                self.flip,
            )?
            .unwrap_or_default();
            (vec![link], label, None)
        };
        let two_way = links.iter().any(|l| l.two_way);
        let scope = |mut rules: Vec<RuleSpec>| {
            if let Some(id) = cgroup_id {
                for r in &mut rules {
                    r.matcher.cgroup = Some(id);
                }
            }
            rules
        };
        let (rules, pair) = if two_way {
            let (want_up, want_down) = sides_wanted(direction.unwrap_or(Direction::Both));
            let has_up = links.iter().any(|l| !l.uplink.is_empty());
            let has_down = links.iter().any(|l| !l.downlink.is_empty());
            let (up, down) = (want_up && has_up, want_down && has_down);
            if !up && !down {
                let (side, at) = if want_up {
                    ("uplink", "egress")
                } else {
                    ("downlink", "ingress")
                };
                return Err(bad(
                    "direction",
                    format!("{label} has no {side} rules: nothing to impair at {at}"),
                    Some(if has_up {
                        "egress or both (this link has an uplink only)"
                    } else {
                        "ingress or both (this link has a downlink only)"
                    }),
                ));
            }
            let first = links[0].clone();
            let pair = PairPlan {
                uplink: up.then(|| scope(first.uplink)),
                downlink: down.then(|| scope(first.downlink)),
            };
            (Vec::new(), Some(pair))
        } else {
            let first = links.into_iter().next().unwrap_or_default();
            (scope(first.uplink), None)
        };
        let direction = direction.unwrap_or(if two_way {
            Direction::Both
        } else {
            Direction::Egress
        });
        Ok(Plan {
            rules,
            pair,
            label,
            scenario,
            direction,
            attach_mode,
            duration,
            cgroup_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(v: serde_json::Value) -> RuleJson {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn rules_convert_with_the_models_units() {
        let r = rule(serde_json::json!({"dst": "198.18.2.0/24", "proto": "udp", "dport": 9000, "loss": "10%", "delay": "20ms"}))
            .to_spec("rules[0]")
            .unwrap();
        assert_eq!(r.loss, Some(0.1));
        assert_eq!(r.delay.unwrap().delay_ns, 20_000_000);
        assert_eq!(r.matcher.dport, Some((9000, 9000)));
        let n = rule(serde_json::json!({"loss": 25}))
            .to_spec("rules[0]")
            .unwrap();
        assert_eq!(n.loss, Some(0.25));
    }

    #[test]
    fn errors_name_the_json_path_and_what_is_allowed() {
        let e = rule(serde_json::json!({"loss": "150%"}))
            .to_spec("rules[1]")
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("rules[1].loss"));
        assert!(e.allowed.is_some());
        let e = rule(serde_json::json!({"queue": "100p"}))
            .to_spec("rules[0]")
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("rules[0].queue"), "{e:?}");
        assert!(e.message.contains("rate"), "{e:?}");
        let e = rule(serde_json::json!({"loss": "1%", "loss_model": "gemodel:1%"}))
            .to_spec("rules[0]")
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("rules[0].loss_model"), "{e:?}");
    }

    #[test]
    fn a_request_needs_exactly_one_source_of_rules() {
        let req = CreateRequest {
            id: "a".into(),
            target: Target {
                interface: "lo".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(req.plan().unwrap_err().field.as_deref(), Some("rules"));
        let bad_id = CreateRequest {
            id: "../x".into(),
            ..req.clone()
        };
        assert_eq!(bad_id.plan().unwrap_err().field.as_deref(), Some("id"));
    }
}
