//! Property tests of two-way profile and scenario TOML: `[[uplink.rule]]`,
//! `[[downlink.rule]]` and `direction` keys in any mix, with real and junk
//! values. For any input: no panic; a rejection is one line naming the file;
//! an accepted profile validates on each side, flips to the same link twice,
//! and a profile written without directions is the uplink only.
use impair::{
    model::LinkRules,
    profile::{self, scenario, Origin},
};
use proptest::prelude::*;

/// Where a rule is written: a top-level `[[rule]]` (with or without a
/// direction) or a side's table.
fn header() -> impl Strategy<Value = (&'static str, Option<&'static str>)> {
    prop_oneof![
        Just(("[[rule]]", None)),
        Just(("[[rule]]", Some("\"uplink\""))),
        Just(("[[rule]]", Some("\"downlink\""))),
        Just(("[[rule]]", Some("\"both\""))),
        Just(("[[rule]]", Some("\"sideways\""))),
        Just(("[[rule]]", Some("3"))),
        Just(("[[uplink.rule]]", None)),
        Just(("[[downlink.rule]]", None)),
        Just(("[[downlink.rule]]", Some("\"downlink\""))),
    ]
}

fn body() -> impl Strategy<Value = (&'static str, String)> {
    (
        prop_oneof![
            Just("loss"),
            Just("delay"),
            Just("rate"),
            Just("queue"),
            Just("mtu"),
            Just("blackhole"),
            Just("ecn"),
            Just("dst"),
            Just("duplicate"),
        ],
        prop_oneof![
            Just("\"1%\"".to_owned()),
            Just("\"20ms\"".to_owned()),
            Just("\"10mbit\"".to_owned()),
            Just("\"50p\"".to_owned()),
            Just("1280".to_owned()),
            Just("true".to_owned()),
            Just("\"198.18.0.0/15\"".to_owned()),
            "[^\n\r\"\\\\]{0,10}".prop_map(|v| format!("\"{v}\"")),
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn two_way_profiles_parse_or_refuse_in_one_line(
        rules in proptest::collection::vec((header(), proptest::collection::vec(body(), 0..3)), 0..5),
        junk in "[^\r]{0,30}",
        use_junk in any::<bool>(),
    ) {
        let text = if use_junk {
            format!("[uplink]\n{junk}")
        } else {
            let mut t = String::from("summary = \"fuzz\"\n");
            for ((h, dir), fields) in &rules {
                t.push_str(h);
                t.push('\n');
                if let Some(d) = dir {
                    t.push_str(&format!("direction = {d}\n"));
                }
                let mut seen = std::collections::BTreeSet::new();
                for (k, v) in fields {
                    if seen.insert(*k) {
                        t.push_str(&format!("{k} = {v}\n"));
                    }
                }
            }
            t
        };
        match profile::parse("t", "t.toml", &text, Origin::Builtin, None) {
            Ok(p) => {
                let link = p.link();
                prop_assert!(link.validate().is_ok(), "{text}");
                prop_assert_eq!(link.flipped().flipped(), link.clone());
                let directions = text.contains("direction") || text.contains("link");
                prop_assert_eq!(p.two_way, directions, "{}", text);
                if !p.two_way {
                    prop_assert!(p.downlink.is_empty());
                    prop_assert_eq!(link, LinkRules::one_way(p.rules.clone()));
                }
            }
            Err(e) => {
                prop_assert!(!e.0.contains('\n'), "more than one line: {}", e.0);
                prop_assert!(e.0.starts_with("t.toml"), "names the file: {}", e.0);
            }
        }
        let steps = text
            .replace("[[rule]]", "[[step]]\nduration = \"1s\"\n[[step.rule]]")
            .replace("[[uplink.rule]]", "[[step]]\nduration = \"1s\"\n[[step.uplink.rule]]")
            .replace("[[downlink.rule]]", "[[step]]\nduration = \"1s\"\n[[step.downlink.rule]]");
        match scenario::parse("s.toml", &steps, None) {
            Ok(s) => {
                let f = s.flipped();
                for (a, b) in s.steps.iter().zip(&f.steps) {
                    prop_assert_eq!(a.link().flipped(), b.link());
                }
            }
            Err(e) => {
                prop_assert!(!e.0.contains('\n'), "more than one line: {}", e.0);
                prop_assert!(e.0.starts_with("s.toml"), "names the file: {}", e.0);
            }
        }
    }
}
