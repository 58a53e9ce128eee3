//! The model's typed errors. Each names the [`Field`] at fault, so every front
//! end can say it in its own words: flag names on the command line
//! (`--loss-model`), keys with a file and line in TOML (`loss-model`), a JSON
//! field path in the API (`rules[0].loss_model`). The model itself knows none
//! of those spellings: `Display` uses the neutral key.
use std::fmt;

use ipnet::IpNet;

/// A field of a rule, as every front end has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Src,
    Dst,
    Proto,
    Sport,
    Dport,
    Loss,
    LossModel,
    Ecn,
    Blackhole,
    Mtu,
    Corrupt,
    CorruptMode,
    Duplicate,
    Delay,
    Jitter,
    Distribution,
    DelayCorr,
    InOrder,
    Reorder,
    Rate,
    Overhead,
    Cell,
    Queue,
    /// The rule list itself (its length).
    Rules,
}

impl Field {
    /// The neutral name: the TOML key, and the flag without its dashes.
    pub fn key(self) -> &'static str {
        match self {
            Field::Src => "src",
            Field::Dst => "dst",
            Field::Proto => "proto",
            Field::Sport => "sport",
            Field::Dport => "dport",
            Field::Loss => "loss",
            Field::LossModel => "loss-model",
            Field::Ecn => "ecn",
            Field::Blackhole => "blackhole",
            Field::Mtu => "mtu",
            Field::Corrupt => "corrupt",
            Field::CorruptMode => "corrupt-mode",
            Field::Duplicate => "duplicate",
            Field::Delay => "delay",
            Field::Jitter => "jitter",
            Field::Distribution => "distribution",
            Field::DelayCorr => "delay-corr",
            Field::InOrder => "in-order",
            Field::Reorder => "reorder",
            Field::Rate => "rate",
            Field::Overhead => "overhead",
            Field::Cell => "cell",
            Field::Queue => "queue",
            Field::Rules => "rules",
        }
    }

    /// The name in JSON documents (snake case).
    pub fn json_key(self) -> String {
        self.key().replace('-', "_")
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A value that does not parse: names the text and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

impl ValueError {
    /// The error `message` as one line: messages quote the value they
    /// refuse, and a value may hold a line break or another control
    /// character (argv can; the libFuzzer target `value_parsers` found
    /// `--loss $'g#e:\n,20%'` printing two lines), so those are escaped
    /// (`\n`, `\u{0}`).
    pub fn one_line(message: String) -> Self {
        if !message.chars().any(char::is_control) {
            return Self(message);
        }
        let mut out = String::with_capacity(message.len() + 8);
        for c in message.chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        Self(out)
    }
}

/// What is wrong with a rule or rule set.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelError {
    /// A value of `field` that does not parse.
    Value { field: Field, source: ValueError },
    /// Two fields that exclude each other (`loss` and `loss-model`).
    Conflict { field: Field, with: Field },
    /// `field` means nothing without `needs`.
    Requires { field: Field, needs: Field },
    /// `field` can never act beside `with` (a blackhole drops every packet).
    Redundant { field: Field, with: Field },
    /// A value outside its range.
    OutOfRange {
        field: Field,
        value: String,
        expected: String,
    },
    /// A source and a destination of different IP versions in one match.
    MixedFamilies { src: IpNet, dst: IpNet },
    /// Ports on a protocol that has none.
    PortsWithoutPorts { proto: String },
    /// Every source/destination combination mixes IP versions.
    NoFamilyPair,
    /// More rules than the data path holds.
    TooManyRules { given: usize, max: u32 },
}

impl ModelError {
    /// The field at fault, for a TOML line or a JSON path.
    pub fn field(&self) -> Field {
        match self {
            ModelError::Value { field, .. }
            | ModelError::Conflict { field, .. }
            | ModelError::Requires { field, .. }
            | ModelError::Redundant { field, .. }
            | ModelError::OutOfRange { field, .. } => *field,
            ModelError::MixedFamilies { .. } | ModelError::NoFamilyPair => Field::Dst,
            ModelError::PortsWithoutPorts { .. } => Field::Dport,
            ModelError::TooManyRules { .. } => Field::Rules,
        }
    }

    /// The error as a front end says it: `name` spells each field (`--loss`
    /// on the command line, `loss` in TOML).
    pub fn render(&self, name: &dyn Fn(Field) -> String) -> String {
        match self.subject(name) {
            Some(s) => format!("{s} {}", self.predicate(name)),
            None => self.predicate(name),
        }
    }

    /// The field the sentence starts with, when it has one. Front ends that
    /// name the field themselves (TOML's `file:line: key: `) print only the
    /// [`predicate`](Self::predicate).
    pub fn subject(&self, name: &dyn Fn(Field) -> String) -> Option<String> {
        match self {
            ModelError::Requires { field, .. } | ModelError::Redundant { field, .. } => {
                Some(name(*field))
            }
            ModelError::OutOfRange { field, .. } => Some(format!("{}:", name(*field))),
            _ => None,
        }
    }

    /// The sentence without its subject.
    pub fn predicate(&self, name: &dyn Fn(Field) -> String) -> String {
        match self {
            ModelError::Value { source, .. } => source.0.clone(),
            ModelError::Conflict { field, with } => format!(
                "give either {} (independent) or {} (bursts), not both",
                name(*with),
                name(*field)
            ),
            ModelError::Requires { field, needs } => match (field, needs) {
                (Field::Ecn, _) => format!(
                    "marks packets instead of dropping them: it needs a loss ({})",
                    name(*needs)
                ),
                (Field::Distribution, _) => {
                    format!("shapes the jitter: it needs {}", name(*needs))
                }
                (Field::Reorder, _) => format!(
                    "makes packets skip the delay: it needs {} (as in netem)",
                    name(*needs)
                ),
                (Field::Overhead | Field::Cell | Field::Queue, _) => {
                    format!("needs a rate in the same rule ({})", name(*needs))
                }
                (Field::Jitter, _) => format!(
                    "varies the delay around its mean: it needs {} (0ms for netem's jitter \
                     around no delay)",
                    name(*needs)
                ),
                (Field::InOrder, _) => format!(
                    "keeps jittered packets in order: without {} nothing reorders them",
                    name(*needs)
                ),
                (_, needs) => format!("needs {}", name(*needs)),
            },
            ModelError::Redundant { with, .. } => format!(
                "would never act: {} drops every packet the rule matches; drop one of the two",
                name(*with)
            ),
            ModelError::OutOfRange {
                value, expected, ..
            } => format!("{value} is out of range: expected {expected}"),
            ModelError::MixedFamilies { src, dst } => format!(
                "source {src} and destination {dst} are of different IP versions: a packet \
                 cannot match both"
            ),
            ModelError::PortsWithoutPorts { proto } => {
                format!("ports only apply to tcp, udp and sctp, not to {proto}")
            }
            ModelError::NoFamilyPair => format!(
                "no {}/{} pair has one IP version: every source is IPv4 and every destination \
                 IPv6, or the reverse",
                name(Field::Src),
                name(Field::Dst)
            ),
            ModelError::TooManyRules { given, max } => {
                format!("{given} rules given; at most {max} are allowed")
            }
        }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::Value { field, source } => write!(f, "{field}: {source}"),
            _ => f.write_str(&self.render(&|x: Field| x.key().to_owned())),
        }
    }
}

impl std::error::Error for ModelError {}

impl From<ValueError> for crate::input::UsageError {
    fn from(e: ValueError) -> Self {
        crate::input::UsageError(e.0)
    }
}

impl From<ModelError> for crate::input::UsageError {
    /// In neutral words (TOML keys); the command line renders with flags.
    fn from(e: ModelError) -> Self {
        crate::input::UsageError(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_front_end_names_fields_its_own_way() {
        let e = ModelError::Requires {
            field: Field::Queue,
            needs: Field::Rate,
        };
        let flags = e.render(&|f: Field| format!("--{}", f.key()));
        assert_eq!(flags, "--queue needs a rate in the same rule (--rate)");
        assert_eq!(
            e.predicate(&|f: Field| f.key().into()),
            "needs a rate in the same rule (rate)"
        );
        assert_eq!(e.field(), Field::Queue);
        assert_eq!(Field::LossModel.json_key(), "loss_model");
        let c = ModelError::Conflict {
            field: Field::LossModel,
            with: Field::Loss,
        };
        assert_eq!(
            c.to_string(),
            "give either loss (independent) or loss-model (bursts), not both"
        );
    }
}
