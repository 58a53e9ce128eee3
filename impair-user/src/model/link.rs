//! A whole link from the host's point of view: the **uplink** is what the
//! host sends (leaving the interface: egress), the **downlink** what it
//! receives (arriving: ingress). A profile or a scenario step gives rules for
//! one side or both; [`LinkRules::flipped`] is the same link seen from the
//! other end (a router or server feeding the client), where the client's
//! downlink is what leaves.
//!
//! A rule set written without directions (every profile before two-way
//! profiles existed) is the uplink: it applies where impair attached it,
//! by default the interface's egress, exactly as before.
use std::str::FromStr;

use super::{error::ValueError, rule::RuleSpec, validate};
use crate::model::ModelError;

/// Which side of the link a rule belongs to (a profile rule's `direction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkDirection {
    /// Traffic the host sends (egress).
    Uplink,
    /// Traffic the host receives (ingress).
    Downlink,
    /// The same rule on both sides (each side keeps its own state).
    Both,
}

impl LinkDirection {
    pub const NAMES: &'static [&'static str] = &["uplink", "downlink", "both"];

    pub fn name(self) -> &'static str {
        match self {
            LinkDirection::Uplink => "uplink",
            LinkDirection::Downlink => "downlink",
            LinkDirection::Both => "both",
        }
    }

    pub fn uplink(self) -> bool {
        matches!(self, LinkDirection::Uplink | LinkDirection::Both)
    }

    pub fn downlink(self) -> bool {
        matches!(self, LinkDirection::Downlink | LinkDirection::Both)
    }
}

impl FromStr for LinkDirection {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "uplink" => Ok(LinkDirection::Uplink),
            "downlink" => Ok(LinkDirection::Downlink),
            "both" => Ok(LinkDirection::Both),
            other => Err(ValueError(format!(
                "invalid value '{other}': expected uplink (sent, egress), downlink (received, ingress) or both"
            ))),
        }
    }
}

/// The rules of both sides of a link. `two_way` says whether they were
/// written with directions; a one-direction rule set has only `uplink`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkRules {
    /// What the host sends: the interface's egress.
    pub uplink: Vec<RuleSpec>,
    /// What the host receives: the interface's ingress.
    pub downlink: Vec<RuleSpec>,
    /// Written with directions (`[uplink]`/`[downlink]` tables or a
    /// `direction` per rule): only such a link can be flipped, and only its
    /// downlink is applied to received traffic.
    pub two_way: bool,
}

impl LinkRules {
    /// Rules written without directions: the uplink, as before two-way
    /// profiles.
    pub fn one_way(rules: Vec<RuleSpec>) -> Self {
        LinkRules {
            uplink: rules,
            downlink: Vec::new(),
            two_way: false,
        }
    }

    /// The link as seen from its other end: uplink and downlink swapped.
    pub fn flipped(&self) -> Self {
        LinkRules {
            uplink: self.downlink.clone(),
            downlink: self.uplink.clone(),
            two_way: self.two_way,
        }
    }

    /// The rules of one side.
    pub fn side(&self, d: LinkDirection) -> &[RuleSpec] {
        match d {
            LinkDirection::Uplink | LinkDirection::Both => &self.uplink,
            LinkDirection::Downlink => &self.downlink,
        }
    }

    /// Every rule of both sides, uplink first.
    pub fn all(&self) -> impl Iterator<Item = &RuleSpec> {
        self.uplink.iter().chain(&self.downlink)
    }

    pub fn is_empty(&self) -> bool {
        self.uplink.is_empty() && self.downlink.is_empty()
    }

    /// Each side is a rule set the data path can hold ([`validate::link`]).
    pub fn validate(&self) -> Result<(), ModelError> {
        validate::link(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_parse_and_say_their_sides() {
        assert_eq!(
            "uplink".parse::<LinkDirection>().unwrap(),
            LinkDirection::Uplink
        );
        assert!("both".parse::<LinkDirection>().unwrap().downlink());
        assert!("both".parse::<LinkDirection>().unwrap().uplink());
        let e = "egress".parse::<LinkDirection>().unwrap_err().0;
        assert!(e.contains("'egress'") && e.contains("uplink"), "{e}");
        for n in LinkDirection::NAMES {
            assert_eq!(n.parse::<LinkDirection>().unwrap().name(), *n);
        }
    }

    #[test]
    fn flipping_swaps_the_sides_and_twice_is_the_same_link() {
        let up = RuleSpec {
            loss: Some(0.1),
            ..RuleSpec::default()
        };
        let l = LinkRules {
            uplink: vec![up.clone()],
            downlink: vec![],
            two_way: true,
        };
        let f = l.flipped();
        assert_eq!((f.uplink.len(), f.downlink.len()), (0, 1));
        assert_eq!(f.downlink[0], up);
        assert_eq!(f.flipped(), l);
        assert_eq!(
            LinkRules::one_way(vec![up])
                .side(LinkDirection::Uplink)
                .len(),
            1
        );
    }
}
