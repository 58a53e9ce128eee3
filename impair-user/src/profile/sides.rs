//! The two sides of a link as a profile (or a scenario step) writes them:
//! `[[uplink.rule]]` / `[[downlink.rule]]` tables, and/or a `direction` on
//! each `[[rule]]`. Rules written without any direction are the uplink (what
//! the host sends: egress), which is what every profile meant before
//! profiles had two sides. Once a profile names a direction anywhere, every
//! `[[rule]]` must name one: a rule without it would be ambiguous.
//!
//! Order: within a side, the table's rules come first, then the `[[rule]]`s
//! for that side in file order (the first matching rule applies).
use std::path::Path;

use serde::Deserialize;

use super::{RuleToml, SourceText};
use crate::{
    input::{usage, UsageError},
    model::{compile_all, LinkDirection, LinkRules},
};

/// `[uplink]` or `[downlink]`: the rules of one side.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct SideToml {
    #[serde(default)]
    pub rule: Vec<RuleToml>,
}

/// The line of the `n`-th (0-based) line that reads `header` (`[[rule]]`),
/// for an error about a rule that has no field to point at.
fn header_line(text: &str, header: &str, n: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == header)
        .nth(n)
        .map_or(1, |(i, _)| i + 1)
}

/// The link `rules` (`header` names them in errors, e.g. `[[rule]]`) and
/// the side tables describe; each side validated and compiled as a rule set.
pub(crate) fn link_of(
    src: &SourceText<'_>,
    header: &str,
    rules: &[RuleToml],
    uplink: Option<&SideToml>,
    downlink: Option<&SideToml>,
    base: Option<&Path>,
) -> Result<LinkRules, UsageError> {
    let two_way =
        uplink.is_some() || downlink.is_some() || rules.iter().any(|r| r.direction.is_some());
    let mut link = LinkRules {
        two_way,
        ..LinkRules::default()
    };
    for (table, side) in [
        (uplink, LinkDirection::Uplink),
        (downlink, LinkDirection::Downlink),
    ] {
        let Some(table) = table else { continue };
        for r in &table.rule {
            if let Some(d) = &r.direction {
                return Err(src.at(
                    d.span(),
                    "direction",
                    format!(
                        "not allowed in a [[{0}.rule]]: the table already says {0}; move the rule to a top-level \
                         [[rule]] to give it a direction",
                        side.name()
                    ),
                ));
            }
            let spec = r.to_spec(src, base)?;
            match side {
                LinkDirection::Downlink => link.downlink.push(spec),
                _ => link.uplink.push(spec),
            }
        }
    }
    for (i, r) in rules.iter().enumerate() {
        let side = match r.direction(src)? {
            Some(d) => d,
            None if two_way => {
                return Err(usage!(
                    "{}:{}: direction: this profile gives directions elsewhere, so every {header} needs \
                     one: direction = \"uplink\" (sent, egress), \"downlink\" (received, ingress) or \"both\"",
                    src.label,
                    header_line(src.text, header, i)
                ))
            }
            None => LinkDirection::Uplink,
        };
        let spec = r.to_spec(src, base)?;
        if side.uplink() {
            link.uplink.push(spec.clone());
        }
        if side.downlink() {
            link.downlink.push(spec);
        }
    }
    for (side, rules) in [("uplink", &link.uplink), ("downlink", &link.downlink)] {
        compile_all(rules).map_err(|e| {
            if two_way {
                usage!("{}: {side}: {e}", src.label)
            } else {
                usage!("{}: {e}", src.label)
            }
        })?;
    }
    Ok(link)
}
