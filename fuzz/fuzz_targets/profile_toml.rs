//! Profile and scenario TOML from arbitrary text: parsed, or refused in one
//! line that names the file.
#![no_main]
use impair::profile::{self, scenario, Origin};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(e) = profile::parse("t", "t.toml", text, Origin::Builtin, None) {
        assert!(
            !e.0.contains('\n') && e.0.starts_with("t.toml"),
            "{text:?}: {}",
            e.0
        );
    }
    if let Err(e) = scenario::parse("s.toml", text, None) {
        assert!(
            !e.0.contains('\n') && e.0.starts_with("s.toml"),
            "{text:?}: {}",
            e.0
        );
    }
});
