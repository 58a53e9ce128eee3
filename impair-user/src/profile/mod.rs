//! Profiles: named rule sets in TOML, built in (`impair-user/profiles/*.toml`,
//! embedded in the binary) or read from a file. Built-ins and files go through
//! one parser, so every built-in is also an example of the file format
//! (docs/profiles.md).
//!
//! Keys are the `impair attach` flags without their dashes and take the same
//! values (`loss = "1%"`, `delay = "50ms"`, `rate = "10mbit"`), so a command
//! line becomes a profile by copying. Errors name the file, the line and the
//! field. The keys that name files (`rate-trace`, `delay-trace`,
//! `loss-trace`, `matrix`) read them relative to the profile's directory
//! ([`files`]); built-ins name none.
//!
//! A profile describes a link from the host's point of view ([`sides`]):
//! `[[uplink.rule]]` is what the host sends (egress), `[[downlink.rule]]`
//! what it receives (ingress); a `direction` key on a `[[rule]]` does the
//! same. A profile written without directions is the uplink, as before.
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{
    input::{usage, UsageError},
    model::{LinkRules, RuleSpec},
};

mod files;
#[cfg(test)]
mod files_tests;
pub mod rule_toml;
pub mod scenario;
mod sides;
#[cfg(test)]
mod two_way_tests;

pub(crate) use rule_toml::{RuleToml, SourceText};

/// The built-in profiles: name and TOML text.
pub const BUILTIN: &[(&str, &str)] = &[
    ("lossy", include_str!("../../profiles/lossy.toml")),
    ("wifi", include_str!("../../profiles/wifi.toml")),
    ("lte", include_str!("../../profiles/lte.toml")),
    ("3g", include_str!("../../profiles/3g.toml")),
    ("edge", include_str!("../../profiles/edge.toml")),
    ("dsl", include_str!("../../profiles/dsl.toml")),
    ("satellite", include_str!("../../profiles/satellite.toml")),
    (
        "very-bad-network",
        include_str!("../../profiles/very-bad-network.toml"),
    ),
    ("flaky", include_str!("../../profiles/flaky.toml")),
    ("slow-3g", include_str!("../../profiles/slow-3g.toml")),
    ("fast-3g", include_str!("../../profiles/fast-3g.toml")),
    ("gprs", include_str!("../../profiles/gprs.toml")),
    ("blackhole", include_str!("../../profiles/blackhole.toml")),
];

/// Where a profile came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Builtin,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Profile {
    /// The built-in's name, or the file's path as given.
    pub name: String,
    pub summary: String,
    /// Where the numbers come from.
    pub source: String,
    /// The uplink: what the host sends (egress). A profile written without
    /// directions has all its rules here.
    pub rules: Vec<RuleSpec>,
    /// The downlink: what the host receives (ingress); empty for a profile
    /// written without directions.
    pub downlink: Vec<RuleSpec>,
    /// Written with directions (see [`LinkRules::two_way`]).
    pub two_way: bool,
    /// The TOML text (what `impair profiles show` prints).
    pub text: String,
    pub origin: Origin,
}

/// A profile file as written. `deny_unknown_fields` turns a misspelt key
/// into an error that lists the allowed ones.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ProfileToml {
    summary: Option<String>,
    source: Option<String>,
    #[serde(default)]
    rule: Vec<RuleToml>,
    uplink: Option<sides::SideToml>,
    downlink: Option<sides::SideToml>,
}

impl Profile {
    /// Both sides of the link.
    pub fn link(&self) -> LinkRules {
        LinkRules {
            uplink: self.rules.clone(),
            downlink: self.downlink.clone(),
            two_way: self.two_way,
        }
    }
}

/// Reads a profile from TOML text; `label` names it in errors (a path or
/// `builtin:NAME`), `base` is the directory relative paths start from.
pub fn parse(
    name: &str,
    label: &str,
    text: &str,
    origin: Origin,
    base: Option<&Path>,
) -> Result<Profile, UsageError> {
    let src = SourceText { label, text };
    let raw: ProfileToml = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
    let link = sides::link_of(
        &src,
        "[[rule]]",
        &raw.rule,
        raw.uplink.as_ref(),
        raw.downlink.as_ref(),
        base,
    )?;
    if link.is_empty() {
        return Err(usage!(
            "{label}: no [[rule]] tables: a profile needs at least one rule (a [[rule]], \
             [[uplink.rule]] or [[downlink.rule]]; see docs/profiles.md)"
        ));
    }
    Ok(Profile {
        name: name.to_owned(),
        summary: raw.summary.unwrap_or_default(),
        source: raw.source.unwrap_or_default(),
        rules: link.uplink,
        downlink: link.downlink,
        two_way: link.two_way,
        text: text.to_owned(),
        origin,
    })
}

/// A built-in profile by name.
pub fn find(name: &str) -> Result<Profile, UsageError> {
    match BUILTIN.iter().find(|(n, _)| *n == name) {
        Some((n, text)) => parse(n, &format!("builtin:{n}"), text, Origin::Builtin, None),
        None => Err(usage!(
            "unknown profile '{name}': built-in profiles are {} (or give a .toml file)",
            names().join(", ")
        )),
    }
}

/// Every built-in profile name.
pub fn names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

/// Whether `arg` names a file rather than a built-in: it has a path
/// separator or a `.toml` suffix, or such a file exists.
pub fn is_file_arg(arg: &str) -> bool {
    arg.contains('/') || arg.ends_with(".toml") || Path::new(arg).is_file()
}

/// `--profile NAME|FILE`.
pub fn load(arg: &str) -> Result<Profile, UsageError> {
    if !is_file_arg(arg) {
        return find(arg);
    }
    let path = Path::new(arg);
    let text = std::fs::read_to_string(path).map_err(|e| {
        usage!(
            "cannot read profile file '{arg}': {e} (built-in profiles are {})",
            names().join(", ")
        )
    })?;
    parse(
        arg,
        arg,
        &text,
        Origin::File(path.to_owned()),
        path.parent(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses_compiles_and_cites_a_source() {
        for (name, _) in BUILTIN {
            let p = find(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!p.summary.is_empty(), "{name} has no summary");
            assert!(!p.source.is_empty(), "{name} has no source");
            assert!(!p.rules.is_empty());
        }
        assert!(names().len() >= 10);
    }

    #[test]
    fn lossy_is_ten_percent_and_unknown_is_named() {
        assert_eq!(find("lossy").unwrap().rules[0].loss, Some(0.10));
        let e = find("nope").unwrap_err().0;
        assert!(e.contains("'nope'") && e.contains("lossy") && e.contains("flaky"));
    }

    fn err(text: &str) -> String {
        parse("t", "t.toml", text, Origin::Builtin, None)
            .unwrap_err()
            .0
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = err("summary = \"x\"\n[[rule]]\nloss = \"150%\"\n");
        assert!(e.starts_with("t.toml:3: loss: "), "{e}");
        assert!(e.contains("150%"), "{e}");
        let e = err("[[rule]]\ndelay = \"5 parsecs\"\n");
        assert!(e.starts_with("t.toml:2: delay: "), "{e}");
        let e = err("[[rule]]\n\ndst = \"10.0.0.0/33\"\n");
        assert!(e.starts_with("t.toml:3: dst: "), "{e}");
        let e = err("[[rule]]\ndport = \"90-80\"\n");
        assert!(e.starts_with("t.toml:2: dport: "), "{e}");
        let e = err("[[rule]]\nmtu = 10\n");
        assert!(e.starts_with("t.toml:2: mtu: 10 is out of range"), "{e}");
        let e = err("[[rule]]\nqueue = \"50ms\"\n");
        assert!(e.contains("queue: needs a rate"), "{e}");
        let e = err("[[rule]]\ncorrupt = \"1%\"\ncorrupt-mode = \"loud\"\n");
        assert!(
            e.starts_with("t.toml:3: corrupt-mode: ") && e.contains("silent"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_toml_are_refused_with_a_line() {
        let e = err("[[rule]]\nlos = \"1%\"\n");
        assert!(e.starts_with("t.toml:2: ") && e.contains("los"), "{e}");
        assert!(e.contains("loss"), "lists the allowed keys: {e}");
        let e = err("[[rule]\nloss = 1\n");
        assert!(e.starts_with("t.toml:1: "), "{e}");
        let e = err("[[rule]]\nloss = 1\n");
        assert!(
            e.starts_with("t.toml:2: loss: ") && e.contains(r#"loss = "10%""#),
            "a number where a string is due names the key and the right form: {e}"
        );
        let e = err("summary = \"nothing\"\n");
        assert!(e.contains("no [[rule]]"), "{e}");
    }

    #[test]
    fn several_rules_in_order_with_matches() {
        let p = parse(
            "t",
            "t.toml",
            "[[rule]]\nproto = \"udp\"\ndport = 53\nloss = \"50%\"\n\
             [[rule]]\ndst = \"2001:2::/48\"\ndelay = \"20ms\"\njitter = \"5ms\"\n\
             distribution = \"normal\"\nin-order = true\n\
             [[rule]]\nrate = \"10mbit\"\nqueue = \"50ms\"\n",
            Origin::Builtin,
            None,
        )
        .unwrap();
        assert_eq!(p.rules.len(), 3);
        assert_eq!(p.rules[0].matcher.dport, Some((53, 53)));
        assert_eq!(p.rules[0].loss, Some(0.5));
        let d = p.rules[1].delay.as_ref().unwrap();
        assert_eq!(
            (d.delay_ns, d.jitter_ns, d.in_order),
            (20_000_000, 5_000_000, true)
        );
        assert_eq!(p.rules[2].rate.unwrap().rate_bps, 10_000_000);
    }

    /// The examples in docs/profiles.md are real: the first TOML block is a
    /// profile, the second a two-way profile, the third the shipped
    /// `examples/traced-cell.toml` (naming trace files), the fourth a
    /// scenario.
    #[test]
    fn the_documented_examples_parse() {
        let doc = include_str!("../../../docs/profiles.md");
        let blocks: Vec<&str> = doc
            .split("```toml\n")
            .skip(1)
            .map(|b| b.split("```").next().unwrap())
            .collect();
        assert_eq!(blocks.len(), 4);
        let p = parse("vpn", "vpn.toml", blocks[0], Origin::Builtin, None).unwrap();
        assert_eq!(p.rules.len(), 3);
        assert!(!p.two_way);
        let p = parse("cell", "cell.toml", blocks[1], Origin::Builtin, None).unwrap();
        assert!(p.two_way);
        assert_eq!((p.rules.len(), p.downlink.len()), (2, 2));
        assert_eq!(p.rules[0].matcher.dport, Some((53, 53)));
        assert_eq!(p.downlink[0].matcher.dport, Some((53, 53)));
        assert_eq!(p.downlink[1].rate.unwrap().rate_bps, 20_000_000);
        assert_eq!(p.rules[1].rate.unwrap().rate_bps, 5_000_000);
        let traced = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/traced-cell.toml");
        assert_eq!(
            blocks[2],
            std::fs::read_to_string(traced).unwrap(),
            "docs/profiles.md shows examples/traced-cell.toml as it is"
        );
        let s = crate::profile::scenario::parse("outage.toml", blocks[3], None).unwrap();
        assert_eq!(s.steps.len(), 3);
        assert_eq!(s.repeat, crate::profile::scenario::Repeat::Loop);
        assert!(s.steps[1].rules[0].blackhole && s.steps[1].downlink[0].blackhole);
    }

    /// The files the README's tour uses are shipped and load as they are.
    #[test]
    fn the_shipped_examples_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let office = dir.join("office.toml");
        let p = load(office.to_str().unwrap()).unwrap();
        assert_eq!(p.rules.len(), 3);
        assert!(p.rules[1].delay.as_ref().is_some_and(|d| d.in_order));
        let outage = dir.join("outage.toml");
        let s = crate::profile::scenario::load(outage.to_str().unwrap()).unwrap();
        assert_eq!(s.steps.len(), 3);
        assert_eq!(s.repeat, crate::profile::scenario::Repeat::Loop);
        assert!(s.steps[1].rules[0].blackhole);
        // Each side its own rate trace, read from examples/traces/.
        let traced = dir.join("traced-cell.toml");
        let p = load(traced.to_str().unwrap()).unwrap();
        assert!(p.two_way);
        let (up, down) = (
            p.rules[0].rate_trace.as_ref().unwrap(),
            p.downlink[0].rate_trace.as_ref().unwrap(),
        );
        assert_eq!((up.mean_rate_bps(), up.period_ms()), (2_400_000, 1_000));
        assert_eq!(down.period_ms(), 1_000);
        assert_eq!(down.before_table()[501], 500, "12 Mbit/s for 0.5 s");
        assert_eq!(down.times_ms.len(), 500 + 167, "then 4 Mbit/s");
        let handover = p.rules[0].loss_series.as_ref().unwrap();
        assert_eq!(handover.at(4_200_000_000), 0.20);
        assert_eq!(handover.at(4_600_000_000), 0.0);
        p.link().validate().unwrap();
    }

    #[test]
    fn a_missing_file_is_a_usage_error() {
        let e = load("/nonexistent/x.toml").unwrap_err().0;
        assert!(e.contains("/nonexistent/x.toml"), "{e}");
    }
}
