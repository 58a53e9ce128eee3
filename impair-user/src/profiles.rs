//! Profiles: named rule sets in TOML, built in (`impair-user/profiles/*.toml`,
//! embedded in the binary) or read from a file. Built-ins and files go through
//! one parser, so every built-in is also an example of the file format
//! (docs/profiles.md).
//!
//! Keys are the `impair attach` flags without their dashes and take the same
//! values (`loss = "1%"`, `delay = "50ms"`, `rate = "10mbit"`), so a command
//! line becomes a profile by copying. Errors name the file, the line and the
//! field.
use std::{
    ops::Range,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use toml::Spanned;

use crate::{
    cli::{self, ImpairArgs, MatchArgs},
    input::{usage, UsageError},
    rules::{compile_all, CorruptMode, RuleSpec},
};

/// The built-in profiles: name and TOML text.
pub const BUILTIN: &[(&str, &str)] = &[
    ("lossy", include_str!("../profiles/lossy.toml")),
    ("wifi", include_str!("../profiles/wifi.toml")),
    ("lte", include_str!("../profiles/lte.toml")),
    ("3g", include_str!("../profiles/3g.toml")),
    ("edge", include_str!("../profiles/edge.toml")),
    ("dsl", include_str!("../profiles/dsl.toml")),
    ("satellite", include_str!("../profiles/satellite.toml")),
    (
        "very-bad-network",
        include_str!("../profiles/very-bad-network.toml"),
    ),
    ("flaky", include_str!("../profiles/flaky.toml")),
    ("slow-3g", include_str!("../profiles/slow-3g.toml")),
    ("fast-3g", include_str!("../profiles/fast-3g.toml")),
    ("gprs", include_str!("../profiles/gprs.toml")),
    ("blackhole", include_str!("../profiles/blackhole.toml")),
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
    pub rules: Vec<RuleSpec>,
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
}

/// One `[[rule]]` (also a scenario step's `[[step.rule]]`).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RuleToml {
    src: Option<Spanned<String>>,
    dst: Option<Spanned<String>>,
    proto: Option<Spanned<String>>,
    sport: Option<Spanned<PortValue>>,
    dport: Option<Spanned<PortValue>>,
    loss: Option<Spanned<String>>,
    loss_model: Option<Spanned<String>>,
    ecn: Option<bool>,
    blackhole: Option<bool>,
    mtu: Option<Spanned<i64>>,
    corrupt: Option<Spanned<String>>,
    corrupt_mode: Option<Spanned<String>>,
    duplicate: Option<Spanned<String>>,
    delay: Option<Spanned<String>>,
    jitter: Option<Spanned<String>>,
    distribution: Option<Spanned<String>>,
    delay_corr: Option<Spanned<String>>,
    in_order: Option<bool>,
    reorder: Option<Spanned<String>>,
    rate: Option<Spanned<String>>,
    overhead: Option<Spanned<i64>>,
    cell: Option<Spanned<String>>,
    queue: Option<Spanned<String>>,
}

/// A port is written `443` or `"1000-2000"`.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum PortValue {
    Number(i64),
    Text(String),
}

/// Turns spans into `FILE:LINE` for messages.
pub(crate) struct SourceText<'a> {
    pub label: &'a str,
    pub text: &'a str,
}

impl SourceText<'_> {
    pub fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    pub fn at(&self, span: Range<usize>, field: &str, msg: impl std::fmt::Display) -> UsageError {
        usage!(
            "{}:{}: {field}: {msg}",
            self.label,
            self.line_of(span.start)
        )
    }

    /// A TOML syntax or schema error, with its line.
    pub fn toml_error(&self, e: &toml::de::Error) -> UsageError {
        let msg = e.message().trim_end();
        match e.span() {
            Some(span) => usage!("{}:{}: {msg}", self.label, self.line_of(span.start)),
            None => usage!("{}: {msg}", self.label),
        }
    }
}

/// Applies a CLI value parser to a spanned field.
fn field<T>(
    src: &SourceText<'_>,
    name: &str,
    v: &Option<Spanned<String>>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, UsageError> {
    match v {
        None => Ok(None),
        Some(s) => parse(s.get_ref())
            .map(Some)
            .map_err(|e| src.at(s.span(), name, e)),
    }
}

fn port_field(
    src: &SourceText<'_>,
    name: &str,
    v: &Option<Spanned<PortValue>>,
) -> Result<Option<(u16, u16)>, UsageError> {
    let Some(v) = v else { return Ok(None) };
    let text = match v.get_ref() {
        PortValue::Number(n) => n.to_string(),
        PortValue::Text(t) => t.clone(),
    };
    cli::ports(&text)
        .map(Some)
        .map_err(|e| src.at(v.span(), name, e))
}

impl RuleToml {
    /// The rule, validated like the same flags on the command line.
    /// `base` resolves a relative distribution-table path.
    pub(crate) fn to_spec(
        &self,
        src: &SourceText<'_>,
        base: Option<&Path>,
    ) -> Result<RuleSpec, UsageError> {
        let matcher = MatchArgs {
            src: field(src, "src", &self.src, cli::cidr)?
                .into_iter()
                .collect(),
            dst: field(src, "dst", &self.dst, cli::cidr)?
                .into_iter()
                .collect(),
            proto: field(src, "proto", &self.proto, cli::proto)?
                .into_iter()
                .collect(),
            sport: port_field(src, "sport", &self.sport)?.into_iter().collect(),
            dport: port_field(src, "dport", &self.dport)?.into_iter().collect(),
        };
        let int = |v: &Option<Spanned<i64>>, name: &str, lo: i64, hi: i64, what: &str| {
            v.as_ref()
                .map(|s| {
                    let n = *s.get_ref();
                    if (lo..=hi).contains(&n) {
                        Ok(n)
                    } else {
                        Err(src.at(
                            s.span(),
                            name,
                            format!("{n} is out of range: expected {what} from {lo} to {hi}"),
                        ))
                    }
                })
                .transpose()
        };
        let corrupt_mode = match &self.corrupt_mode {
            None => CorruptMode::Detectable,
            Some(s) => match s.get_ref().as_str() {
                "detectable" => CorruptMode::Detectable,
                "silent" => CorruptMode::Silent,
                other => {
                    return Err(src.at(
                        s.span(),
                        "corrupt-mode",
                        format!("invalid value '{other}': expected detectable or silent"),
                    ))
                }
            },
        };
        let distribution = match &self.distribution {
            None => None,
            Some(s) => {
                let name = s.get_ref();
                let resolved = match base {
                    Some(b) if name.contains('/') && Path::new(name).is_relative() => {
                        b.join(name).to_string_lossy().into_owned()
                    }
                    _ => name.clone(),
                };
                Some(
                    cli::distribution(&resolved)
                        .map_err(|e| src.at(s.span(), "distribution", e))?,
                )
            }
        };
        let args = ImpairArgs {
            loss: field(src, "loss", &self.loss, cli::percent)?,
            loss_model: field(src, "loss-model", &self.loss_model, cli::loss_model)?,
            ecn: self.ecn.unwrap_or(false),
            blackhole: self.blackhole.unwrap_or(false),
            mtu: int(&self.mtu, "mtu", 68, 65_535, "an MTU in bytes")?.map(|n| n as u32),
            corrupt: field(src, "corrupt", &self.corrupt, cli::percent)?,
            corrupt_mode,
            duplicate: field(src, "duplicate", &self.duplicate, cli::percent)?,
            delay: field(src, "delay", &self.delay, cli::delay)?,
            jitter: field(src, "jitter", &self.jitter, cli::delay)?,
            distribution,
            delay_corr: field(src, "delay-corr", &self.delay_corr, cli::percent)?,
            in_order: self.in_order.unwrap_or(false),
            reorder: field(src, "reorder", &self.reorder, cli::percent)?,
            rate: field(src, "rate", &self.rate, cli::rate)?,
            overhead: int(&self.overhead, "overhead", -1024, 1024, "bytes")?.map(|n| n as i32),
            cell: field(src, "cell", &self.cell, cli::cell)?,
            queue: field(src, "queue", &self.queue, cli::queue)?,
        };
        if args.loss.is_some() && args.loss_model.is_some() {
            let s = self.loss_model.as_ref().map_or(0..0, |s| s.span());
            return Err(src.at(
                s,
                "loss-model",
                "give either loss (independent) or loss-model (bursts), not both",
            ));
        }
        for (name, given) in [
            ("overhead", self.overhead.as_ref().map(|s| s.span())),
            ("cell", self.cell.as_ref().map(|s| s.span())),
            ("queue", self.queue.as_ref().map(|s| s.span())),
        ] {
            if let (Some(span), None) = (given, args.rate) {
                return Err(src.at(span, name, "needs a rate in the same rule"));
            }
        }
        let m = matcher
            .specs()
            .map_err(|e| src.at(self.dst.as_ref().map_or(0..0, |d| d.span()), "dst", e))?;
        Ok(args.rule(m.into_iter().next().unwrap_or_default()))
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
    if raw.rule.is_empty() {
        return Err(usage!(
            "{label}: no [[rule]] tables: a profile needs at least one rule (see docs/profiles.md)"
        ));
    }
    let mut rules = Vec::with_capacity(raw.rule.len());
    for r in &raw.rule {
        rules.push(r.to_spec(&src, base)?);
    }
    compile_all(&rules).map_err(|e| usage!("{label}: {e}"))?;
    Ok(Profile {
        name: name.to_owned(),
        summary: raw.summary.unwrap_or_default(),
        source: raw.source.unwrap_or_default(),
        rules,
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
            e.starts_with("t.toml:2: "),
            "a number where a string is due: {e}"
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
    /// profile, the second a scenario.
    #[test]
    fn the_documented_examples_parse() {
        let doc = include_str!("../../docs/profiles.md");
        let blocks: Vec<&str> = doc
            .split("```toml\n")
            .skip(1)
            .map(|b| b.split("```").next().unwrap())
            .collect();
        assert_eq!(blocks.len(), 2);
        let p = parse("vpn", "vpn.toml", blocks[0], Origin::Builtin, None).unwrap();
        assert_eq!(p.rules.len(), 3);
        let s = crate::scenario::parse("outage.toml", blocks[1], None).unwrap();
        assert_eq!(s.steps.len(), 3);
        assert_eq!(s.repeat, crate::scenario::Repeat::Loop);
    }

    #[test]
    fn a_missing_file_is_a_usage_error() {
        let e = load("/nonexistent/x.toml").unwrap_err().0;
        assert!(e.contains("/nonexistent/x.toml"), "{e}");
    }
}
