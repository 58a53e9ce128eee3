//! Jitter tables (samples and netem .dist files) from arbitrary text: parsed
//! or refused in one line.
#![no_main]
use impair::model::dist::Distribution;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(e) = Distribution::parse_samples(text, "t.txt") {
        let m = e.to_string();
        assert!(!m.trim().is_empty() && !m.contains('\n'), "{text:?}: {m}");
    }
    if let Err(e) = Distribution::parse_netem_dist(text, "t.dist") {
        let m = e.to_string();
        assert!(!m.trim().is_empty() && !m.contains('\n'), "{text:?}: {m}");
    }
});
