//! Scenarios: a TOML timeline of steps (a profile, or rules written inline,
//! held for a duration), played once, a number of times, or looped, each step
//! applied with an atomic rule-set update (no detach between steps).
//!
//! ```toml
//! repeat = "loop"          # "once" (default), "loop", or a count: 3
//! [[step]]
//! profile = "lte"          # a built-in, or a file relative to this one
//! duration = "30s"
//! [[step]]
//! duration = "5s"
//! [[step.rule]]            # inline rules, same keys as a profile's [[rule]]
//! blackhole = true
//! direction = "both"       # sent and received (default: the uplink, sent)
//! ```
//!
//! A step has both sides of a link, like a profile (`[[step.uplink.rule]]`,
//! `[[step.downlink.rule]]`, or `direction` per rule): the player switches
//! both together, each side's swap atomic. A step without a downlink leaves
//! received traffic unimpaired while it lasts.
use std::{path::Path, time::Duration};

use serde::Deserialize;
use toml::Spanned;

use crate::{
    input::{usage, UsageError},
    model::{compile_all, units, LinkRules, RuleSpec},
    profile::{self as profiles, sides, RuleToml, SourceText},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Play the steps this many times (1: once), then keep the last step.
    Times(u32),
    /// Until stopped.
    Loop,
}

#[derive(Debug, Clone)]
pub struct Step {
    /// The profile name, or a summary of inline rules.
    pub label: String,
    /// The uplink (sent, egress): all the rules of a step written without
    /// directions.
    pub rules: Vec<RuleSpec>,
    /// The downlink (received, ingress); empty without directions.
    pub downlink: Vec<RuleSpec>,
    /// Written with directions (or a two-way profile).
    pub two_way: bool,
    pub duration: Duration,
}

impl Step {
    /// Both sides of the step's link.
    pub fn link(&self) -> LinkRules {
        LinkRules {
            uplink: self.rules.clone(),
            downlink: self.downlink.clone(),
            two_way: self.two_way,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub steps: Vec<Step>,
    pub repeat: Repeat,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioToml {
    repeat: Option<Spanned<RepeatValue>>,
    #[serde(default)]
    step: Vec<StepToml>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RepeatValue {
    Count(i64),
    Word(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepToml {
    profile: Option<Spanned<String>>,
    duration: Spanned<String>,
    #[serde(default)]
    rule: Vec<RuleToml>,
    uplink: Option<sides::SideToml>,
    downlink: Option<sides::SideToml>,
}

impl Scenario {
    /// Whether any step has two sides: then a two-way attach (an egress and
    /// an ingress instance) plays it.
    pub fn two_way(&self) -> bool {
        self.steps.iter().any(|s| s.two_way)
    }

    /// The scenario seen from the other end of the link: every step's
    /// uplink and downlink swapped.
    pub fn flipped(&self) -> Scenario {
        Scenario {
            steps: self
                .steps
                .iter()
                .map(|s| {
                    let l = s.link().flipped();
                    Step {
                        label: s.label.clone(),
                        rules: l.uplink,
                        downlink: l.downlink,
                        two_way: l.two_way,
                        duration: s.duration,
                    }
                })
                .collect(),
            repeat: self.repeat,
        }
    }

    /// How long one pass over the steps takes.
    pub fn period(&self) -> Duration {
        self.steps.iter().map(|s| s.duration).sum()
    }

    /// The step active `elapsed` after the start, and whether the scenario
    /// is over (a finite repeat count played out: the last step stays).
    pub fn step_at(&self, elapsed: Duration) -> (usize, bool) {
        let period = self.period();
        let passes = (elapsed.as_nanos() / period.as_nanos().max(1)) as u64;
        if let Repeat::Times(n) = self.repeat {
            if passes >= u64::from(n) {
                return (self.steps.len() - 1, true);
            }
        }
        let mut t = Duration::from_nanos((elapsed.as_nanos() % period.as_nanos().max(1)) as u64);
        for (i, s) in self.steps.iter().enumerate() {
            if t < s.duration {
                return (i, false);
            }
            t -= s.duration;
        }
        (self.steps.len() - 1, false)
    }
}

pub fn load(path: &str) -> Result<Scenario, UsageError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage!("cannot read scenario file '{path}': {e}"))?;
    parse(path, &text, Path::new(path).parent())
}

pub fn parse(label: &str, text: &str, base: Option<&Path>) -> Result<Scenario, UsageError> {
    let src = SourceText { label, text };
    if let Ok(table) = text.parse::<toml::Table>() {
        let profile_keys = ["rule", "uplink", "downlink"];
        if profile_keys.iter().any(|k| table.contains_key(*k)) && !table.contains_key("step") {
            return Err(usage!(
                "{label}: this is a profile ([[rule]] tables, no [[step]]): give it to --profile, \
                 or wrap it in a scenario's [[step]] (see docs/profiles.md)"
            ));
        }
    }
    let raw: ScenarioToml = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
    let repeat = match &raw.repeat {
        None => Repeat::Times(1),
        Some(r) => match r.get_ref() {
            RepeatValue::Word(w) if w == "once" => Repeat::Times(1),
            RepeatValue::Word(w) if w == "loop" => Repeat::Loop,
            RepeatValue::Count(n) if (1..=1_000_000).contains(n) => Repeat::Times(*n as u32),
            RepeatValue::Count(n) => {
                return Err(src.at(
                    r.span(),
                    "repeat",
                    format!(
                    "{n} is out of range: expected a count from 1 to 1000000, \"once\" or \"loop\""
                ),
                ))
            }
            RepeatValue::Word(w) => {
                return Err(src.at(
                    r.span(),
                    "repeat",
                    format!("invalid value '{w}': expected \"once\", \"loop\" or a count"),
                ))
            }
        },
    };
    if raw.step.is_empty() {
        return Err(usage!(
            "{label}: no [[step]] tables: a scenario needs at least one step"
        ));
    }
    let mut steps = Vec::with_capacity(raw.step.len());
    for (i, st) in raw.step.iter().enumerate() {
        let duration_ns = units::parse_duration_ns("duration", st.duration.get_ref())
            .map_err(|e| src.at(st.duration.span(), "duration", e))?;
        if duration_ns < 10_000_000 {
            return Err(src.at(
                st.duration.span(),
                "duration",
                format!(
                    "'{}' is too short: a step lasts at least 10ms",
                    st.duration.get_ref()
                ),
            ));
        }
        let inline = !st.rule.is_empty() || st.uplink.is_some() || st.downlink.is_some();
        let (label, link) = match (&st.profile, inline) {
            (Some(p), false) => {
                let name = p.get_ref();
                let arg = match base {
                    Some(b) if profiles::is_file_arg(name) && Path::new(name).is_relative() => {
                        b.join(name).to_string_lossy().into_owned()
                    }
                    _ => name.clone(),
                };
                let prof = profiles::load(&arg).map_err(|e| src.at(p.span(), "profile", e))?;
                (name.clone(), prof.link())
            }
            (None, true) => {
                let link = sides::link_of(
                    &src,
                    "[[step.rule]]",
                    &st.rule,
                    st.uplink.as_ref(),
                    st.downlink.as_ref(),
                    base,
                )
                .map_err(|e| match e.0.strip_prefix(&format!("{label}: ")) {
                    // A side's rule-set error has no line: name the step.
                    Some(rest) => usage!("{label}: step {}: {rest}", i + 1),
                    None => e,
                })?;
                (step_label(&link)?, link)
            }
            (Some(p), true) => {
                return Err(src.at(
                    p.span(),
                    "profile",
                    "a step has either a profile or [[step.rule]] tables, not both",
                ))
            }
            (None, false) => {
                return Err(src.at(
                    st.duration.span(),
                    &format!("step {}", i + 1),
                    "needs a profile or [[step.rule]] tables",
                ))
            }
        };
        steps.push(Step {
            label,
            rules: link.uplink,
            downlink: link.downlink,
            two_way: link.two_way,
            duration: Duration::from_nanos(duration_ns),
        });
    }
    Ok(Scenario { steps, repeat })
}

/// A summary of inline rules: each rule's impairments; with directions,
/// `up: ...; down: ...`.
fn step_label(link: &LinkRules) -> Result<String, UsageError> {
    let views = |rules: &[RuleSpec]| -> Result<String, UsageError> {
        let set = compile_all(rules).map_err(|e| usage!("{e}"))?;
        let v: Vec<String> = set
            .rules
            .iter()
            .map(|r| crate::model::RuleView::from_rule(r).impairments)
            .collect();
        Ok(if v.is_empty() {
            "none".into()
        } else {
            v.join("; ")
        })
    };
    if !link.two_way {
        return views(&link.uplink);
    }
    Ok(format!(
        "up: {}; down: {}",
        views(&link.uplink)?,
        views(&link.downlink)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LTE_OUTAGE: &str = "repeat = \"loop\"\n\
        [[step]]\nprofile = \"lte\"\nduration = \"30s\"\n\
        [[step]]\nduration = \"5s\"\n[[step.rule]]\nblackhole = true\n\
        [[step]]\nprofile = \"lte\"\nduration = \"10s\"\n";

    #[test]
    fn steps_and_timeline() {
        let s = parse("s.toml", LTE_OUTAGE, None).unwrap();
        assert_eq!(s.steps.len(), 3);
        assert_eq!(s.repeat, Repeat::Loop);
        assert!(s.steps[1].rules[0].blackhole);
        assert_eq!(s.period(), Duration::from_secs(45));
        assert_eq!(s.step_at(Duration::from_secs(0)), (0, false));
        assert_eq!(s.step_at(Duration::from_secs(31)), (1, false));
        assert_eq!(s.step_at(Duration::from_secs(36)), (2, false));
        assert_eq!(s.step_at(Duration::from_secs(46)), (0, false), "loops");
    }

    /// A value with a newline (a TOML `\n` escape) is quoted escaped: the
    /// error stays one line (found by the profile_toml fuzz target).
    #[test]
    fn a_bad_value_with_a_newline_is_one_line() {
        let e = parse("s.toml", "repeat = \"l \\nx\"\n", None)
            .unwrap_err()
            .0;
        assert!(!e.contains('\n'), "{e}");
        assert!(
            e.starts_with("s.toml:1: repeat: invalid value 'l \\nx'"),
            "{e}"
        );
    }

    #[test]
    fn a_finite_repeat_ends_on_the_last_step() {
        let text = LTE_OUTAGE.replace("\"loop\"", "2");
        let s = parse("s.toml", &text, None).unwrap();
        assert_eq!(s.step_at(Duration::from_secs(50)), (0, false));
        assert_eq!(s.step_at(Duration::from_secs(90)), (2, true));
    }

    #[test]
    fn a_profile_given_as_a_scenario_is_named() {
        let e = parse("p.toml", "[[rule]]\nloss = \"1%\"\n", None)
            .unwrap_err()
            .0;
        assert!(
            e.contains("this is a profile") && e.contains("--profile"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let e = parse(
            "s.toml",
            "[[step]]\nprofile = \"nope\"\nduration = \"1s\"\n",
            None,
        )
        .unwrap_err()
        .0;
        assert!(
            e.starts_with("s.toml:2: profile: unknown profile 'nope'"),
            "{e}"
        );
        let e = parse(
            "s.toml",
            "[[step]]\nprofile = \"lte\"\nduration = \"soon\"\n",
            None,
        )
        .unwrap_err()
        .0;
        assert!(e.starts_with("s.toml:3: duration: "), "{e}");
        let e = parse(
            "s.toml",
            "repeat = 0\n[[step]]\nprofile = \"lte\"\nduration = \"1s\"\n",
            None,
        )
        .unwrap_err()
        .0;
        assert!(e.starts_with("s.toml:1: repeat: 0 is out of range"), "{e}");
        let e = parse("s.toml", "[[step]]\nduration = \"1s\"\n", None)
            .unwrap_err()
            .0;
        assert!(e.contains("needs a profile"), "{e}");
        let e = parse(
            "s.toml",
            "[[step]]\nduration = \"1s\"\n[[step.rule]]\nloss = \"x\"\n",
            None,
        )
        .unwrap_err()
        .0;
        assert!(e.starts_with("s.toml:4: loss: "), "{e}");
        assert!(parse("s.toml", "", None)
            .unwrap_err()
            .0
            .contains("no [[step]]"));
    }

    #[test]
    fn steps_have_both_sides_and_flip_together() {
        let s = parse("s.toml", LTE_OUTAGE, None).unwrap();
        assert!(s.two_way(), "lte is a two-way profile");
        assert_eq!(s.steps[0].rules[0].rate.unwrap().rate_bps, 10_000_000);
        assert_eq!(s.steps[0].downlink[0].rate.unwrap().rate_bps, 50_000_000);
        // An inline step without directions is the uplink only, as before.
        assert!(!s.steps[1].two_way && s.steps[1].downlink.is_empty());
        let f = s.flipped();
        assert_eq!(f.steps[0].rules[0].rate.unwrap().rate_bps, 50_000_000);
        assert_eq!(f.steps[0].downlink[0].rate.unwrap().rate_bps, 10_000_000);
        assert!(f.steps[1].rules.is_empty() && f.steps[1].downlink[0].blackhole);
        assert_eq!(f.period(), s.period());

        let text = "[[step]]\nduration = \"1s\"\n[[step.rule]]\ndirection = \"both\"\n\
                    blackhole = true\n[[step]]\nduration = \"1s\"\n\
                    [[step.downlink.rule]]\nloss = \"5%\"\n";
        let s = parse("s.toml", text, None).unwrap();
        assert!(s.steps[0].rules[0].blackhole && s.steps[0].downlink[0].blackhole);
        assert!(s.steps[1].rules.is_empty());
        assert_eq!(s.steps[1].label, "up: none; down: loss 5%");
        let e = parse(
            "s.toml",
            "[[step]]\nduration = \"1s\"\n[[step.rule]]\ndirection = \"down\"\nloss = \"1%\"\n",
            None,
        )
        .unwrap_err()
        .0;
        assert!(e.starts_with("s.toml:4: direction: "), "{e}");
        let e = parse("p.toml", "[[downlink.rule]]\nloss = \"1%\"\n", None)
            .unwrap_err()
            .0;
        assert!(e.contains("this is a profile"), "{e}");
    }
}
