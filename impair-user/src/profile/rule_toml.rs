//! One `[[rule]]` of a profile or scenario step, as written, and its
//! conversion to the model. Keys are the `impair attach` flags without their
//! dashes and take the same values, parsed by the same
//! [`crate::model::units`] functions; the model's errors come back as
//! `FILE:LINE: key: message`.
use std::{ops::Range, path::Path};

use serde::Deserialize;
use toml::Spanned;

use crate::{
    input::{usage, UsageError},
    model::{
        dist::parse_distribution,
        units::{
            parse_cell, parse_cidr, parse_duration_ns, parse_loss_model, parse_percent,
            parse_port_range, parse_proto, parse_queue, parse_rate_bps,
        },
        CorruptMode, Field, Impairments, LinkDirection, MatchLists, ModelError, RuleSpec,
        ValueError,
    },
};

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
    ecn: Option<Spanned<bool>>,
    blackhole: Option<Spanned<bool>>,
    mtu: Option<Spanned<i64>>,
    corrupt: Option<Spanned<String>>,
    corrupt_mode: Option<Spanned<String>>,
    duplicate: Option<Spanned<String>>,
    delay: Option<Spanned<String>>,
    jitter: Option<Spanned<String>>,
    distribution: Option<Spanned<String>>,
    delay_corr: Option<Spanned<String>>,
    in_order: Option<Spanned<bool>>,
    reorder: Option<Spanned<String>>,
    rate: Option<Spanned<String>>,
    overhead: Option<Spanned<i64>>,
    cell: Option<Spanned<String>>,
    queue: Option<Spanned<String>>,
    /// Files (relative to the profile's directory): a latency matrix, delay
    /// and loss series and how they are read, a rate trace ([`files`]).
    matrix: Option<Spanned<String>>,
    delay_trace: Option<Spanned<String>>,
    loss_trace: Option<Spanned<String>>,
    trace_mode: Option<Spanned<String>>,
    trace_end: Option<Spanned<String>>,
    rate_trace: Option<Spanned<String>>,
    /// Which side of the link the rule is for: `uplink` (sent, egress),
    /// `downlink` (received, ingress) or `both` (see [`crate::model::link`]).
    pub(crate) direction: Option<Spanned<String>>,
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

    /// An error at `span`, in one line: the message quotes values from the
    /// file, whose control characters (a newline inside a TOML string) are
    /// written escaped (`\n`).
    pub fn at(&self, span: Range<usize>, field: &str, msg: impl std::fmt::Display) -> UsageError {
        let msg: String = msg
            .to_string()
            .chars()
            .flat_map(|c| {
                let escaped = c.is_control().then(|| c.escape_default());
                escaped
                    .into_iter()
                    .flatten()
                    .chain((!c.is_control()).then_some(c))
            })
            .collect();
        usage!(
            "{}:{}: {field}: {msg}",
            self.label,
            self.line_of(span.start)
        )
    }

    /// A TOML syntax or schema error, with its line; a value of the wrong
    /// type names its key and shows the value written right.
    pub fn toml_error(&self, e: &toml::de::Error) -> UsageError {
        let msg = e.message().trim_end();
        let Some(span) = e.span() else {
            return usage!("{}:1: {msg}", self.label);
        };
        let line = self.line_of(span.start);
        let key = self
            .text
            .lines()
            .nth(line - 1)
            .and_then(|l| l.split_once('='))
            .map(|(k, _)| k.trim().trim_matches('"'))
            .filter(|k| !k.is_empty() && !k.starts_with('['));
        match (key, key.and_then(example_of)) {
            (Some(key), Some(example)) if msg.starts_with("invalid type") => {
                usage!(
                    "{}:{line}: {key}: {msg}; write it as {key} = {example}",
                    self.label
                )
            }
            (Some(key), _) if msg.starts_with("invalid type") => {
                usage!("{}:{line}: {key}: {msg}", self.label)
            }
            _ => usage!("{}:{line}: {msg}", self.label),
        }
    }
}

/// Applies a value parser to a spanned field.
fn field<T>(
    src: &SourceText<'_>,
    name: Field,
    v: &Option<Spanned<String>>,
    parse: impl Fn(&str) -> Result<T, ValueError>,
) -> Result<Option<T>, UsageError> {
    match v {
        None => Ok(None),
        Some(s) => parse(s.get_ref())
            .map(Some)
            .map_err(|e| src.at(s.span(), name.key(), e)),
    }
}

fn port_field(
    src: &SourceText<'_>,
    name: Field,
    v: &Option<Spanned<PortValue>>,
) -> Result<Option<(u16, u16)>, UsageError> {
    let Some(v) = v else { return Ok(None) };
    let text = match v.get_ref() {
        PortValue::Number(n) => n.to_string(),
        PortValue::Text(t) => t.clone(),
    };
    parse_port_range("port", &text)
        .map(Some)
        .map_err(|e| src.at(v.span(), name.key(), e))
}

/// An integer field converted to `T`; a value `T` cannot hold is out of range.
fn int<T: TryFrom<i64>>(
    src: &SourceText<'_>,
    name: Field,
    v: &Option<Spanned<i64>>,
    what: &str,
) -> Result<Option<T>, UsageError> {
    v.as_ref()
        .map(|s| {
            T::try_from(*s.get_ref()).map_err(|_| {
                src.at(
                    s.span(),
                    name.key(),
                    format!("{} is out of range: expected {what}", s.get_ref()),
                )
            })
        })
        .transpose()
}

fn flag(v: &Option<Spanned<bool>>) -> bool {
    v.as_ref().is_some_and(|b| *b.get_ref())
}

impl RuleToml {
    /// The rule's `direction`, if it gives one.
    pub(crate) fn direction(
        &self,
        src: &SourceText<'_>,
    ) -> Result<Option<LinkDirection>, UsageError> {
        self.direction
            .as_ref()
            .map(|d| {
                d.get_ref()
                    .parse::<LinkDirection>()
                    .map_err(|e| src.at(d.span(), "direction", e))
            })
            .transpose()
    }

    /// Where `f` is written, for an error's line.
    fn span_of(&self, f: Field) -> Range<usize> {
        fn sp<T>(v: &Option<Spanned<T>>) -> Option<Range<usize>> {
            v.as_ref().map(Spanned::span)
        }
        match f {
            Field::Src => sp(&self.src),
            Field::Dst => sp(&self.dst).or_else(|| sp(&self.src)),
            Field::Proto => sp(&self.proto),
            Field::Sport => sp(&self.sport),
            Field::Dport => sp(&self.dport).or_else(|| sp(&self.sport)),
            Field::Loss => sp(&self.loss),
            Field::LossModel => sp(&self.loss_model),
            Field::Ecn => sp(&self.ecn),
            Field::Blackhole => sp(&self.blackhole),
            Field::Mtu => sp(&self.mtu),
            Field::Corrupt => sp(&self.corrupt),
            Field::CorruptMode => sp(&self.corrupt_mode),
            Field::Duplicate => sp(&self.duplicate),
            Field::Delay => sp(&self.delay),
            Field::Jitter => sp(&self.jitter),
            Field::Distribution => sp(&self.distribution),
            Field::DelayCorr => sp(&self.delay_corr),
            Field::InOrder => sp(&self.in_order),
            Field::Reorder => sp(&self.reorder),
            Field::Rate => sp(&self.rate),
            Field::Overhead => sp(&self.overhead),
            Field::Cell => sp(&self.cell),
            Field::Queue => sp(&self.queue),
            Field::Rules => None,
        }
        .unwrap_or(0..0)
    }

    /// The files the rule names, read relative to `base` ([`super::files`]).
    fn files(
        &self,
        src: &SourceText<'_>,
        base: Option<&Path>,
    ) -> Result<super::files::RuleFiles, UsageError> {
        super::files::FileKeys {
            matrix: &self.matrix,
            delay_trace: &self.delay_trace,
            loss_trace: &self.loss_trace,
            trace_mode: &self.trace_mode,
            trace_end: &self.trace_end,
            rate_trace: &self.rate_trace,
        }
        .read(src, base)
    }

    /// A model error at the line of the field it names.
    fn model_error(&self, src: &SourceText<'_>, e: &ModelError) -> UsageError {
        let key = |f: Field| f.key().to_owned();
        src.at(self.span_of(e.field()), e.field().key(), e.predicate(&key))
    }

    /// The rule, validated by the model like the same flags on the command
    /// line. `base` (the profile's directory; `None` for a profile that is
    /// no file) resolves a relative distribution-table path and the files
    /// of `matrix`, `delay-trace`, `loss-trace` and `rate-trace`.
    pub(crate) fn to_spec(
        &self,
        src: &SourceText<'_>,
        base: Option<&Path>,
    ) -> Result<RuleSpec, UsageError> {
        let cidr = |s: &str| parse_cidr("prefix", s);
        let percent = |s: &str| parse_percent("percentage", s);
        let time = |s: &str| parse_duration_ns("time", s);
        let matcher = MatchLists {
            src: field(src, Field::Src, &self.src, cidr)?
                .into_iter()
                .collect(),
            dst: field(src, Field::Dst, &self.dst, cidr)?
                .into_iter()
                .collect(),
            proto: field(src, Field::Proto, &self.proto, parse_proto)?
                .into_iter()
                .collect(),
            sport: port_field(src, Field::Sport, &self.sport)?
                .into_iter()
                .collect(),
            dport: port_field(src, Field::Dport, &self.dport)?
                .into_iter()
                .collect(),
        };
        let corrupt_mode = match &self.corrupt_mode {
            None => CorruptMode::Detectable,
            Some(s) => s
                .get_ref()
                .parse::<CorruptMode>()
                .map_err(|e| src.at(s.span(), Field::CorruptMode.key(), e))?,
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
                    parse_distribution(&resolved)
                        .map_err(|e| src.at(s.span(), Field::Distribution.key(), e))?,
                )
            }
        };
        let files = self.files(src, base)?;
        let impairments = Impairments {
            loss: field(src, Field::Loss, &self.loss, percent)?,
            loss_model: field(src, Field::LossModel, &self.loss_model, parse_loss_model)?,
            ecn: flag(&self.ecn),
            blackhole: flag(&self.blackhole),
            mtu_bytes: int(
                src,
                Field::Mtu,
                &self.mtu,
                "an MTU in bytes from 68 to 65535",
            )?,
            corrupt: field(src, Field::Corrupt, &self.corrupt, percent)?,
            corrupt_mode,
            duplicate: field(src, Field::Duplicate, &self.duplicate, percent)?,
            delay_ns: field(src, Field::Delay, &self.delay, time)?,
            jitter_ns: field(src, Field::Jitter, &self.jitter, time)?,
            distribution,
            delay_corr: field(src, Field::DelayCorr, &self.delay_corr, percent)?,
            in_order: flag(&self.in_order),
            reorder: field(src, Field::Reorder, &self.reorder, percent)?,
            rate_bps: field(src, Field::Rate, &self.rate, parse_rate_bps)?,
            overhead_bytes: int(
                src,
                Field::Overhead,
                &self.overhead,
                "bytes from -1024 to 1024",
            )?,
            cell: field(src, Field::Cell, &self.cell, parse_cell)?,
            queue: field(src, Field::Queue, &self.queue, parse_queue)?,
            matrix: files.matrix,
            delay_series: files.delay_series,
            loss_series: files.loss_series,
            rate_trace: files.rate_trace,
        };
        let mut rules = matcher
            .rules(&impairments)
            .map_err(|e| self.model_error(src, &e))?;
        Ok(rules.swap_remove(0))
    }
}

/// How a rule's key is written, for an error about its type.
fn example_of(key: &str) -> Option<&'static str> {
    Some(match key {
        "loss" | "corrupt" | "duplicate" | "reorder" | "delay-corr" => "\"10%\"",
        "loss-model" => "\"ge:1%,30%\"",
        "delay" | "jitter" => "\"100ms\"",
        "rate" => "\"10mbit\"",
        "queue" => "\"50ms\" (or \"64kb\", \"100p\")",
        "cell" => "\"48/5\"",
        "distribution" => "\"normal\"",
        "corrupt-mode" => "\"detectable\"",
        "src" | "dst" => "\"198.18.0.0/15\"",
        "proto" => "\"udp\"",
        "sport" | "dport" => "443 (or \"1000-2000\")",
        "mtu" => "1280",
        "overhead" => "14",
        "ecn" | "blackhole" | "in-order" => "true",
        "direction" => "\"downlink\" (or \"uplink\", \"both\")",
        "duration" => "\"30s\"",
        "profile" => "\"lte\"",
        "matrix" => "\"regions.csv\"",
        "delay-trace" | "loss-trace" => "\"series.csv\"",
        "rate-trace" => "\"uplink.trace\"",
        "trace-mode" => "\"step\" (or \"linear\")",
        "trace-end" => "\"loop\" (or \"hold\")",
        _ => return None,
    })
}
