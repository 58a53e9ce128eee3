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
    model::{units::parse_duration_ns, LinkRules, RuleSpec},
};
use serde::{Deserialize, Serialize};

use crate::{
    error::ApiError,
    link::{flip_error, link_of, sides_wanted, PairPlan},
    rule_json::{bad, RuleJson, Text},
};

/// Longest client-chosen id.
pub const MAX_ID_LEN: usize = 64;

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

/// Two-way links in requests (`link.rs`), through whole requests.
#[cfg(test)]
mod link_tests {
    use impair::engine::Direction;

    use crate::request::CreateRequest;

    fn two_way(extra: serde_json::Value) -> CreateRequest {
        let mut v = serde_json::json!({"id": "l", "target": {"interface": "lo"}});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_two_way_link_attaches_its_sides_and_flip_swaps_them() {
        let link = serde_json::json!({"uplink": [{"loss": "10%"}], "downlink": [{"loss": "20%"}]});
        let p = two_way(link.clone()).plan().unwrap();
        let pair = p.pair.unwrap();
        assert_eq!(pair.uplink.unwrap()[0].loss, Some(0.1));
        assert_eq!(pair.downlink.unwrap()[0].loss, Some(0.2));
        assert_eq!(p.direction, Direction::Both);
        let mut flipped = link.clone();
        flipped["flip"] = true.into();
        let pair = two_way(flipped).plan().unwrap().pair.unwrap();
        assert_eq!(pair.uplink.unwrap()[0].loss, Some(0.2));
        assert_eq!(pair.downlink.unwrap()[0].loss, Some(0.1));
        let mut down = link.clone();
        down["direction"] = "ingress".into();
        let pair = two_way(down).plan().unwrap().pair.unwrap();
        assert!(pair.uplink.is_none() && pair.downlink.is_some());
        // A two-way profile is a pair too; a one-way one is not.
        assert!(two_way(serde_json::json!({"profile": "lte"}))
            .plan()
            .unwrap()
            .pair
            .is_some());
        assert!(two_way(serde_json::json!({"profile": "lossy"}))
            .plan()
            .unwrap()
            .pair
            .is_none());
    }

    #[test]
    fn bad_two_way_combinations_name_their_field() {
        let field = |v: serde_json::Value| two_way(v).plan().unwrap_err().field;
        for (body, f) in [
            (
                serde_json::json!({"rules": [{"loss": 1}], "flip": true}),
                "flip",
            ),
            (
                serde_json::json!({"profile": "lossy", "flip": true}),
                "flip",
            ),
            (
                serde_json::json!({"uplink": [{"loss": 1}], "direction": "ingress"}),
                "direction",
            ),
            (
                serde_json::json!({"downlink": [{"loss": 1}], "direction": "egress"}),
                "direction",
            ),
            (
                serde_json::json!({"uplink": [{"loss": 1}], "rules": [{"loss": 1}]}),
                "uplink",
            ),
            (serde_json::json!({"uplink": [], "downlink": []}), "uplink"),
            (
                serde_json::json!({"downlink": [{"loss": "150%"}]}),
                "downlink[0].loss",
            ),
        ] {
            assert_eq!(field(body.clone()).as_deref(), Some(f), "{body}");
        }
    }
}
