//! Two-way links in requests: the rules a request gives as both sides of a
//! link (a list is one way; a built-in profile as written; `uplink` and
//! `downlink` lists are two ways), `flip`, and which sides `direction`
//! attaches. Mirrors `impair attach --profile ... [--flip] [--direction]`.
use impair::{
    engine::Direction,
    model::{Field, LinkRules, RuleSpec},
};

use crate::{
    error::ApiError,
    rule_json::{allowed_for, bad, model_error, RuleJson, MAX_RULES},
};

/// The sides of a two-way link an instance attaches: `Some` rules for each
/// side it has (an empty list leaves that side's traffic unimpaired, as a
/// scenario step without it does).
#[derive(Debug, Clone, Default)]
pub struct PairPlan {
    pub uplink: Option<Vec<RuleSpec>>,
    pub downlink: Option<Vec<RuleSpec>>,
}

/// One list of rules (`field` names it in errors: rules, uplink, downlink),
/// each rule checked and the set compiled as the data path holds it.
fn rule_list(
    field: &str,
    list: &[RuleJson],
    may_be_empty: bool,
) -> Result<Vec<RuleSpec>, ApiError> {
    if (list.is_empty() && !may_be_empty) || list.len() > MAX_RULES {
        return Err(bad(
            field,
            format!("{} rules given", list.len()),
            Some(allowed_for(Field::Rules)),
        ));
    }
    let specs = list
        .iter()
        .enumerate()
        .map(|(i, r)| r.to_spec(&format!("{field}[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    impair::model::compile_all(&specs).map_err(|e| {
        let mut err = model_error(field, &e);
        if e.field() == Field::Rules {
            err.field = Some(field.to_owned());
        }
        err
    })?;
    Ok(specs)
}

/// The rules a request gives: a list (one way), a built-in profile (one or
/// two ways, as written), `uplink`/`downlink` lists (two ways) or nothing;
/// `flip` swaps a two-way link's sides. Errors name the field.
pub fn link_of(
    rules: &Option<Vec<RuleJson>>,
    profile: &Option<String>,
    uplink: &Option<Vec<RuleJson>>,
    downlink: &Option<Vec<RuleJson>>,
    flip: bool,
) -> Result<Option<(LinkRules, String)>, ApiError> {
    let sides = uplink.is_some() || downlink.is_some();
    let one_of = Some("one of rules, profile, uplink/downlink, scenario");
    if rules.is_some() && profile.is_some() {
        return Err(bad(
            "profile",
            "give either rules or a profile, not both",
            one_of,
        ));
    }
    if sides && (rules.is_some() || profile.is_some()) {
        let field = if uplink.is_some() {
            "uplink"
        } else {
            "downlink"
        };
        return Err(bad(
            field,
            "uplink and downlink are a two-way link's rules: give them instead of rules or a profile",
            one_of,
        ));
    }
    let (link, label) = if let Some(list) = rules {
        (
            LinkRules::one_way(rule_list("rules", list, false)?),
            "api rules".to_owned(),
        )
    } else if let Some(name) = profile {
        let p = impair::profile::find(name).map_err(|e| {
            bad(
                "profile",
                e.0,
                Some("a built-in profile name (GET /v1/profiles)"),
            )
        })?;
        let link = LinkRules {
            uplink: p.rules,
            downlink: p.downlink,
            two_way: p.two_way,
        };
        (link, format!("profile {name}"))
    } else if sides {
        let up = uplink
            .as_deref()
            .map_or(Ok(Vec::new()), |l| rule_list("uplink", l, true))?;
        let down = downlink
            .as_deref()
            .map_or(Ok(Vec::new()), |l| rule_list("downlink", l, true))?;
        if up.is_empty() && down.is_empty() {
            return Err(bad(
                "uplink",
                "neither side has a rule",
                Some("1 to 64 rules in uplink, downlink or both"),
            ));
        }
        let link = LinkRules {
            uplink: up,
            downlink: down,
            two_way: true,
        };
        (link, "api link".to_owned())
    } else {
        if flip {
            return Err(flip_error("nothing"));
        }
        return Ok(None);
    };
    if !flip {
        return Ok(Some((link, label)));
    }
    if !link.two_way {
        return Err(flip_error(&label));
    }
    Ok(Some((link.flipped(), format!("{label} (flipped)"))))
}

/// `flip` given for what has one direction.
pub(crate) fn flip_error(what: &str) -> ApiError {
    bad(
        "flip",
        format!(
            "flip swaps the uplink and downlink of a two-way link, and {what} has one direction"
        ),
        Some("flip with a two-way profile, uplink/downlink rules or a two-way scenario"),
    )
}

/// Which sides of a two-way link `direction` asks for: both (default),
/// egress (the uplink) or ingress (the downlink).
pub fn sides_wanted(direction: Direction) -> (bool, bool) {
    match direction {
        Direction::Both => (true, true),
        Direction::Egress => (true, false),
        Direction::Ingress => (false, true),
    }
}
