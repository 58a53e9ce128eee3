//! Property tests of every way text enters the model (issue 16: fuzzing
//! where the toolchain has no libFuzzer, proptest): value parsers, jitter
//! tables, profile and scenario TOML. For any input: no panic, and every
//! rejection is one clear line (no newline, names what is wrong). The
//! generators mix arbitrary text with text shaped like the real thing
//! (numbers with units, TOML tables with real keys), so both the
//! boundaries and the grammar get exercised. Cases per property are fixed
//! (PROPTEST_CASES raises them); failures print their minimal input.
use impair::{
    model::{
        compile_all,
        dist::{parse_distribution, Distribution},
        units::{
            parse_cell, parse_cidr, parse_duration_ns, parse_loss_model, parse_mtu, parse_percent,
            parse_port_range, parse_proto, parse_queue, parse_rate_bps,
        },
        Impairments, MatchLists,
    },
    profile::{self, scenario, Origin},
};
use proptest::prelude::*;

/// One line of text without line breaks (a flag's value or a TOML string).
fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^\n\r]{0,24}",
        // Shaped like values: a number, a unit, separators.
        "-?[0-9]{0,6}(\\.[0-9]{0,4})?(%|ms|s|us|ns|m|h|bit|kbit|mbit|gbit|bps|kbps|mbps|kb|b|p|kibit|/|,|:|-)?[0-9a-z%,:/.-]{0,8}",
        // Shaped like prefixes.
        "[0-9a-f:.]{0,20}(/[0-9]{0,3})?",
    ]
}

/// A rejection is one line that says something.
fn one_clear_line(what: &str, input: &str, msg: &str) -> Result<(), TestCaseError> {
    prop_assert!(!msg.trim().is_empty(), "{what}({input:?}): an empty error");
    prop_assert!(
        !msg.contains('\n'),
        "{what}({input:?}): more than one line: {msg}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn value_parsers_never_panic_and_refuse_in_one_line(s in line()) {
        macro_rules! check {
            ($name:literal, $e:expr) => {
                if let Err(e) = $e {
                    one_clear_line($name, &s, &e.0)?;
                }
            };
        }
        check!("percent", parse_percent("percentage", &s));
        check!("duration", parse_duration_ns("time", &s));
        check!("rate", parse_rate_bps(&s));
        check!("queue", parse_queue(&s));
        check!("loss model", parse_loss_model(&s));
        check!("cidr", parse_cidr("prefix", &s));
        check!("proto", parse_proto(&s));
        check!("ports", parse_port_range("port", &s));
        check!("cell", parse_cell(&s));
        check!("mtu", parse_mtu(&s));
        if !s.contains('/') {
            check!("distribution", parse_distribution(&s));
        }
    }

    /// What the parsers accept, the model either builds and compiles or
    /// refuses with a typed error: never a panic, never an invalid map value.
    #[test]
    fn parsed_values_build_or_refuse_cleanly(
        loss in proptest::option::of(0.0f64..=1.0),
        delay in proptest::option::of(0u64..=3_600_000_000_000),
        jitter in proptest::option::of(0u64..=3_600_000_000_000),
        rate in proptest::option::of(1u64..=10_000_000_000_000),
        queue in proptest::option::of("[0-9]{1,6}(ms|p|kb)"),
        mtu in proptest::option::of(0u32..=100_000),
        blackhole in any::<bool>(),
        in_order in any::<bool>(),
        reorder in proptest::option::of(0.0f64..=1.0),
        dport in proptest::option::of((0u16..=65535, 0u16..=65535)),
        proto in proptest::option::of("tcp|udp|icmp|sctp|any|[0-9]{1,3}"),
    ) {
        let imp = Impairments {
            loss,
            delay_ns: delay,
            jitter_ns: jitter,
            rate_bps: rate,
            queue: queue.and_then(|q| parse_queue(&q).ok()),
            mtu_bytes: mtu,
            blackhole,
            in_order,
            reorder,
            ..Default::default()
        };
        let lists = MatchLists {
            dport: dport.map(|(a, b)| (a.min(b), a.max(b))).into_iter().collect(),
            proto: proto.and_then(|p| parse_proto(&p).ok()).into_iter().collect(),
            ..Default::default()
        };
        match lists.rules(&imp) {
            Ok(rules) => {
                prop_assert!(compile_all(&rules).is_ok(), "validated rules compile: {rules:?}");
            }
            Err(e) => one_clear_line("model", &format!("{imp:?}"), &e.to_string())?,
        }
    }

    #[test]
    fn jitter_tables_never_panic(text in "[-0-9 .\n#a-z]{0,200}") {
        if let Err(e) = Distribution::parse_samples(&text, "t.txt") {
            one_clear_line("samples", &text, &e.to_string())?;
        }
        if let Err(e) = Distribution::parse_netem_dist(&text, "t.dist") {
            one_clear_line("netem dist", &text, &e.to_string())?;
        }
    }

    /// Profiles from arbitrary text and from rules with real keys and
    /// arbitrary values: parsed, or refused as `t.toml:LINE: ...`.
    #[test]
    fn profiles_never_panic_and_refusals_name_the_line(
        rules in proptest::collection::vec(
            proptest::collection::vec(
                (
                    prop_oneof![
                        Just("loss"), Just("loss-model"), Just("delay"), Just("jitter"),
                        Just("rate"), Just("queue"), Just("mtu"), Just("dst"), Just("dport"),
                        Just("proto"), Just("corrupt"), Just("corrupt-mode"), Just("in-order"),
                        Just("blackhole"), Just("distribution"), Just("overhead"), Just("cell"),
                        Just("reorder"), Just("duplicate"), Just("ecn"), Just("los"),
                    ],
                    prop_oneof![
                        line().prop_map(|v| format!("{v:?}")),
                        any::<i32>().prop_map(|n| n.to_string()),
                        any::<bool>().prop_map(|b| b.to_string()),
                    ],
                ),
                0..5,
            ),
            0..4,
        ),
        junk in "[^\r]{0,40}",
        use_junk in any::<bool>(),
    ) {
        let text = if use_junk {
            junk
        } else {
            let mut t = String::from("summary = \"fuzz\"\n");
            for r in &rules {
                t.push_str("[[rule]]\n");
                let mut seen = std::collections::BTreeSet::new();
                for (k, v) in r {
                    if seen.insert(*k) {
                        t.push_str(&format!("{k} = {v}\n"));
                    }
                }
            }
            t
        };
        if let Err(e) = profile::parse("t", "t.toml", &text, Origin::Builtin, None) {
            one_clear_line("profile", &text, &e.0)?;
            prop_assert!(e.0.starts_with("t.toml:"), "names the file: {}", e.0);
        }
        let steps = text.replace("[[rule]]", "[[step]]\nduration = \"1s\"\n[[step.rule]]");
        if let Err(e) = scenario::parse("s.toml", &steps, None) {
            one_clear_line("scenario", &steps, &e.0)?;
            prop_assert!(e.0.starts_with("s.toml"), "names the file: {}", e.0);
        }
    }
}

/// Found by the libFuzzer target `value_parsers` (fuzz/regressions/): a value
/// with a line break or NUL (argv can carry both) was echoed raw, so its
/// refusal took two lines. Control characters are now escaped.
#[test]
fn a_value_with_control_characters_is_refused_in_one_line() {
    let s = "g#e:\n\0,20%";
    let e = parse_percent("percentage", s).unwrap_err();
    assert!(!e.0.contains('\n') && !e.0.contains('\0'), "{}", e.0);
    assert!(e.0.contains(r"g#e:\n\u{0},20%"), "{}", e.0);
    for e in [
        parse_duration_ns("time", s).unwrap_err(),
        parse_rate_bps(s).unwrap_err(),
        parse_loss_model(s).unwrap_err(),
        parse_cidr("prefix", s).unwrap_err(),
        parse_port_range("port", s).unwrap_err(),
    ] {
        assert!(!e.0.chars().any(char::is_control), "{}", e.0);
    }
}
