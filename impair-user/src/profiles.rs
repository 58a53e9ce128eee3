//! Built-in profiles: named rule sets for common links.
use crate::{
    input::{usage, UsageError},
    rules::{MatchSpec, RuleSpec},
};

#[derive(Debug)]
pub struct Profile {
    pub name: &'static str,
    pub summary: &'static str,
    pub rules: fn() -> Vec<RuleSpec>,
}

/// The built-in profiles.
pub const PROFILES: &[Profile] = &[Profile {
    name: "lossy",
    summary: "10% independent loss on every packet: a badly lossy link (the demo's default)",
    rules: || {
        vec![RuleSpec {
            matcher: MatchSpec::default(),
            loss: Some(0.10),
            ..Default::default()
        }]
    },
}];

pub fn find(name: &str) -> Result<&'static Profile, UsageError> {
    PROFILES.iter().find(|p| p.name == name).ok_or_else(|| {
        let known: Vec<&str> = PROFILES.iter().map(|p| p.name).collect();
        usage!(
            "unknown profile '{name}': built-in profiles are {}",
            known.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossy_compiles_and_unknown_is_named() {
        assert!(crate::rules::compile_all(&(find("lossy").unwrap().rules)()).is_ok());
        let e = find("nope").unwrap_err().0;
        assert!(e.contains("'nope'") && e.contains("lossy"));
    }
}
