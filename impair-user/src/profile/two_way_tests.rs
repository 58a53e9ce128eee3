//! Two-way profiles: every built-in's two sides as its source gives them,
//! flipping, and the refusals of the new keys.
use super::*;
use crate::model::LinkDirection;

/// (rate bit/s, one-way delay ms, loss) of a side's single rule.
fn side(rules: &[RuleSpec]) -> Option<(u64, u64, Option<f64>)> {
    match rules {
        [] => None,
        [r] => Some((
            r.rate.map_or(0, |r| r.rate_bps),
            r.delay.as_ref().map_or(0, |d| d.delay_ns / 1_000_000),
            r.loss,
        )),
        more => panic!("expected one rule per side, got {}", more.len()),
    }
}

/// The numbers each built-in's comment cites, downlink and uplink.
#[test]
fn every_builtin_has_both_sides_from_its_source_and_flips() {
    type Side = Option<(u64, u64, Option<f64>)>;
    let expect: &[(&str, Side, Side)] = &[
        (
            "lte",
            Some((50_000_000, 50, None)),
            Some((10_000_000, 65, None)),
        ),
        ("3g", Some((780_000, 100, None)), Some((330_000, 100, None))),
        (
            "edge",
            Some((240_000, 400, None)),
            Some((200_000, 440, None)),
        ),
        ("dsl", Some((2_000_000, 5, None)), Some((256_000, 5, None))),
        (
            "fast-3g",
            Some((1_600_000, 75, None)),
            Some((750_000, 75, None)),
        ),
        (
            "slow-3g",
            Some((500_000, 200, None)),
            Some((500_000, 200, None)),
        ),
        (
            "very-bad-network",
            Some((1_000_000, 500, Some(0.10))),
            Some((1_000_000, 500, Some(0.10))),
        ),
        (
            "wifi",
            Some((30_000_000, 40, Some(0.002))),
            Some((30_000_000, 40, Some(0.002))),
        ),
        (
            "gprs",
            Some((50_000, 500, Some(0.02))),
            Some((20_000, 500, Some(0.02))),
        ),
        ("satellite", Some((0, 279, None)), Some((0, 279, None))),
        // One-direction profiles: the uplink only, as before.
        ("lossy", None, Some((0, 0, Some(0.10)))),
    ];
    for (name, down, up) in expect {
        let p = find(name).unwrap();
        assert_eq!(side(&p.downlink), *down, "{name} downlink");
        assert_eq!(side(&p.rules), *up, "{name} uplink");
        assert_eq!(p.two_way, down.is_some(), "{name}");
        let f = p.link().flipped();
        assert_eq!(side(&f.downlink), *up, "{name} flipped downlink");
        assert_eq!(side(&f.uplink), *down, "{name} flipped uplink");
        assert_eq!(f.flipped(), p.link(), "{name}: flipping twice");
    }
    // Every built-in, one-way or two-way, parses, validates per side, and
    // says in its summary what it does.
    for (name, _) in BUILTIN {
        let p = find(name).unwrap();
        p.link().validate().unwrap();
        if p.two_way {
            assert!(
                !p.downlink.is_empty() && !p.rules.is_empty(),
                "{name}: a two-way built-in gives both sides"
            );
        }
    }
    let b = find("blackhole").unwrap();
    assert!(b.two_way && b.rules[0].blackhole && b.downlink[0].blackhole);
    assert!(!find("flaky").unwrap().two_way);
}

fn parse_ok(text: &str) -> Profile {
    parse("t", "t.toml", text, Origin::Builtin, None).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    parse("t", "t.toml", text, Origin::Builtin, None)
        .unwrap_err()
        .0
}

#[test]
fn tables_and_direction_keys_build_the_same_link() {
    let tables = parse_ok(
        "[[downlink.rule]]\nrate = \"50mbit\"\n[[uplink.rule]]\nloss = \"1%\"\n\
         [[uplink.rule]]\ndelay = \"5ms\"\n",
    );
    let keys = parse_ok(
        "[[rule]]\ndirection = \"uplink\"\nloss = \"1%\"\n[[rule]]\ndirection = \"downlink\"\n\
         rate = \"50mbit\"\n[[rule]]\ndirection = \"uplink\"\ndelay = \"5ms\"\n",
    );
    assert_eq!(tables.link(), keys.link());
    assert_eq!(tables.rules.len(), 2);
    assert_eq!(tables.downlink.len(), 1);
    // `both` puts one rule on each side; table rules come first in a side.
    let p =
        parse_ok("[[uplink.rule]]\nloss = \"1%\"\n[[rule]]\ndirection = \"both\"\nmtu = 1280\n");
    assert_eq!((p.rules.len(), p.downlink.len()), (2, 1));
    assert_eq!(p.rules[0].loss, Some(0.01));
    assert_eq!(p.rules[1].mtu_bytes, Some(1280));
    assert_eq!(p.downlink[0].mtu_bytes, Some(1280));
    // A downlink only: nothing at egress.
    let p = parse_ok("[[downlink.rule]]\nloss = \"5%\"\n");
    assert!(p.two_way && p.rules.is_empty() && p.downlink.len() == 1);
    // No directions anywhere: the uplink, exactly as before.
    let p = parse_ok("[[rule]]\nloss = \"5%\"\n");
    assert!(!p.two_way && p.downlink.is_empty() && p.rules.len() == 1);
    assert_eq!(p.link(), crate::model::LinkRules::one_way(p.rules.clone()));
    assert!(LinkDirection::Both.uplink());
}

#[test]
fn bad_directions_are_refused_with_a_line() {
    let e = err("[[rule]]\nloss = \"1%\"\ndirection = \"sideways\"\n");
    assert!(
        e.starts_with("t.toml:3: direction: invalid value 'sideways'") && e.contains("downlink"),
        "{e}"
    );
    let e = err("[[rule]]\ndirection = \"downlink\"\nloss = \"1%\"\n[[rule]]\nloss = \"2%\"\n");
    assert!(
        e.starts_with("t.toml:4: direction: ") && e.contains("every [[rule]] needs one"),
        "{e}"
    );
    let e = err("[[downlink.rule]]\nloss = \"1%\"\n[[rule]]\nloss = \"2%\"\n");
    assert!(e.starts_with("t.toml:3: direction: "), "{e}");
    let e = err("[[uplink.rule]]\ndirection = \"downlink\"\nloss = \"1%\"\n");
    assert!(
        e.starts_with("t.toml:2: direction: not allowed in a [[uplink.rule]]"),
        "{e}"
    );
    let e = err("[[rule]]\ndirection = 1\nloss = \"1%\"\n");
    assert!(
        e.starts_with("t.toml:2: direction: ") && e.contains("direction = \"downlink\""),
        "{e}"
    );
    let e = err("[uplink]\nrule = []\nloss = \"1%\"\n");
    assert!(e.starts_with("t.toml:") && e.contains("loss"), "{e}");
    let e = err("[[downlink.rule]]\nloss = \"150%\"\n");
    assert!(e.starts_with("t.toml:2: loss: "), "{e}");
    let e = err("[downlink]\n[uplink]\n");
    assert!(e.contains("no [[rule]]"), "{e}");
    // A side's own validation names the side.
    let many: String = (0..=impair_common::MAX_RULES)
        .map(|_| "[[downlink.rule]]\nloss = \"1%\"\n")
        .collect();
    let e = err(&many);
    assert!(e.starts_with("t.toml: downlink: "), "{e}");
}
