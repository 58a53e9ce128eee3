//! The domain model: a link's rules, each a match and its impairments, in
//! unit-bearing types; validated in one place ([`validate`]); compiled to the
//! map ABI ([`compile`]); read back for display ([`view`]). Every front end
//! (the command line, TOML profiles and scenarios, sweeps, the agent's API)
//! builds this model and renders its typed [`ModelError`] in its own words.
//! Nothing here knows clap, prints, or exits.
pub mod compile;
pub mod dist;
pub mod error;
pub mod link;
pub mod matrix;
pub mod rule;
pub mod series;
pub mod trace;
pub mod units;
pub mod validate;
pub mod view;

pub use compile::{compile_all, RuleSet};
pub use dist::Distribution;
pub use error::{Field, ModelError, ValueError};
pub use link::{LinkDirection, LinkRules};
pub use matrix::{Matrix, MatrixError};
pub use rule::{CorruptMode, DelaySpec, Impairments, MatchLists, MatchSpec, RateSpec, RuleSpec};
pub use units::{LossModelSpec, Proto, QueueLimit};
pub use view::{fmt_duration_ns, fmt_percent, fmt_rate_bps, RuleView};

#[cfg(test)]
mod tests;
