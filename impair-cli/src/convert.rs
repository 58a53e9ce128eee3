//! Flags → the model: the command line's one place that builds rules and
//! hooks, and renders the model's errors with flag names.
use anyhow::Result;
use impair::{
    engine::{HookOptions, IngressHook},
    model::{Impairments, LinkRules, MatchSpec, ModelError, RuleSpec, RuleView},
    profile as profiles,
};

use crate::{
    args::{AttachArgs, ImpairArgs, MatchArgs, UpdateArgs},
    render::flags,
    usage,
};

/// Rules from `--profile`, or from the impairment and match flags; with a
/// label for `impair status`. A two-way profile gives its uplink here (what
/// the host sends); [`profile_link`] has both sides.
pub(crate) fn rules_from(
    profile: Option<&str>,
    impair: &ImpairArgs,
    matcher: &MatchArgs,
) -> Result<(Vec<RuleSpec>, String)> {
    if let Some(name) = profile {
        let (link, label) = profile_link(name, impair, matcher)?;
        return Ok((link.uplink, label));
    }
    if !impair.given() {
        return Err(usage!(
            "nothing to do: give an impairment (--loss, --loss-model, --delay, --rate, --corrupt, --duplicate, --mtu, --blackhole), --profile NAME|FILE or --scenario FILE"
        )
        .into());
    }
    let rules = matcher
        .lists()
        .rules(&impair.impairments())
        .map_err(flags)?;
    let first = rules
        .first()
        .ok_or_else(|| flags(ModelError::NoFamilyPair))?;
    let label = RuleView::from_rule(&first.compile().map_err(flags)?).impairments;
    Ok((rules, label))
}

/// `--profile NAME|FILE`: both sides of its link, with the match flags
/// applied to every rule of each side; refuses impairment flags beside it.
pub(crate) fn profile_link(
    name: &str,
    impair: &ImpairArgs,
    matcher: &MatchArgs,
) -> Result<(LinkRules, String)> {
    if impair.given() {
        return Err(usage!("--profile {name} sets the impairments itself: drop the impairment flags, or drop --profile").into());
    }
    let p = profiles::load(name)?;
    let mut link = p.link();
    if matcher.given() {
        if link.all().any(|r| r.matcher != MatchSpec::default()) {
            return Err(usage!(
                "profile {name} has match fields of its own: drop --src/--dst/--proto/--sport/--dport, or edit the profile"
            )
            .into());
        }
        let specs = matcher.lists().specs().map_err(flags)?;
        let with_matches = |rules: Vec<RuleSpec>| -> Vec<RuleSpec> {
            rules
                .into_iter()
                .flat_map(|r| {
                    specs.iter().map(move |m| RuleSpec {
                        matcher: m.clone(),
                        ..r.clone()
                    })
                })
                .collect()
        };
        link.uplink = with_matches(link.uplink);
        link.downlink = with_matches(link.downlink);
    }
    Ok((link, format!("profile {name}")))
}

/// The rule set an `impair update` leaves running: with `--profile` or
/// `--replace`, what the flags or the profile say; otherwise each running
/// rule keeps its match and every impairment the flags do not set
/// ([`Impairments::overlay`]).
pub(crate) fn update_rules(
    current: &[RuleSpec],
    a: &UpdateArgs,
) -> Result<(Vec<RuleSpec>, String)> {
    if a.replace || a.profile.is_some() {
        return rules_from(a.profile.as_deref(), &a.impair, &a.matcher);
    }
    if a.matcher.given() {
        return Err(usage!(
            "update keeps each running rule's match: to change what is matched, give --replace \
             with the whole rule (impairments and matches) or --profile"
        )
        .into());
    }
    let given = a.impair.impairments();
    if !given.given() {
        return Err(usage!(
            "nothing to update: give the impairments to change (e.g. --loss 20%), --replace with a \
             whole rule, or --profile NAME|FILE"
        )
        .into());
    }
    let rules = current
        .iter()
        .map(|r| Impairments::of(r).overlay(&given).rule(r.matcher.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(flags)?;
    let first = rules
        .first()
        .ok_or_else(|| usage!("the running rule set is empty"))?;
    let label = RuleView::from_rule(&first.compile().map_err(flags)?).impairments;
    Ok((rules, label))
}

/// The hooks `a` asks for; refuses combinations that make no sense.
pub(crate) fn hooks_from(a: &AttachArgs) -> Result<HookOptions> {
    let direction = a.direction.unwrap_or_default();
    if a.hook == IngressHook::Xdp && !direction.ingress() {
        return Err(usage!(
            "--hook xdp chooses the receive-side hook: XDP sees only arriving traffic, so it needs --direction \
             ingress or both"
        )
        .into());
    }
    if a.xdp_mode.is_some() && a.hook != IngressHook::Xdp {
        return Err(usage!(
            "--xdp-mode applies to the XDP hook: add --hook xdp (and --direction ingress or both)"
        )
        .into());
    }
    if a.police && !direction.ingress() {
        return Err(usage!(
            "--police makes a rate on received traffic drop instead of queue: it needs --direction ingress \
             (a rate at egress always shapes)"
        )
        .into());
    }
    Ok(HookOptions {
        direction,
        ingress_hook: a.hook,
        xdp_mode: a.xdp_mode.unwrap_or_default(),
        police: a.police,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use impair::input::UsageError;

    use super::*;
    use crate::args::{Cli, Command};

    fn m(args: &[&str]) -> Result<Vec<MatchSpec>, UsageError> {
        let mut v = vec!["impair", "attach", "x", "--loss", "1%"];
        v.extend(args);
        match Cli::try_parse_from(v).unwrap().command {
            Command::Attach(a) => a.matcher.lists().specs().map_err(flags),
            _ => unreachable!(),
        }
    }

    #[test]
    fn repeated_match_flags_make_one_match_per_combination_in_order() {
        assert_eq!(m(&[]).unwrap(), vec![MatchSpec::default()]);
        let s = m(&[
            "--dst",
            "198.18.2.0/24",
            "--dst",
            "2001:2::/48",
            "--dport",
            "53",
            "--dport",
            "853",
        ])
        .unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].dport, Some((53, 53)));
        assert_eq!(s[1].dport, Some((853, 853)));
        assert!(s[2].dst.unwrap().addr().is_ipv6());
        // Mixed-version pairs are skipped; none left is an error.
        let s = m(&[
            "--src",
            "198.18.1.0/24",
            "--dst",
            "198.18.2.0/24",
            "--dst",
            "2001:2::/48",
        ])
        .unwrap();
        assert_eq!(s.len(), 1);
        let e = m(&["--src", "198.18.1.0/24", "--dst", "2001:2::/48"])
            .unwrap_err()
            .0;
        assert!(e.contains("IP version") && e.contains("--src/--dst"), "{e}");
    }

    #[test]
    fn a_rate_in_bytes_per_second_is_echoed_in_bits() {
        let a = match Cli::try_parse_from(["impair", "attach", "x", "--rate", "1mbps"])
            .unwrap()
            .command
        {
            Command::Attach(a) => a,
            _ => unreachable!(),
        };
        let notes = a.impair.unit_notes();
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains("bytes per second") && notes[0].contains("8 Mbit/s"),
            "{notes:?}"
        );
        assert_eq!(a.impair.impairments().rate_bps, Some(8_000_000));
        let bits = match Cli::try_parse_from(["impair", "attach", "x", "--rate", "8mbit"])
            .unwrap()
            .command
        {
            Command::Attach(a) => a,
            _ => unreachable!(),
        };
        assert!(bits.impair.unit_notes().is_empty());
    }

    #[test]
    fn model_errors_name_flags() {
        let parse = |v: &[&str]| {
            let mut args = vec!["impair", "attach", "x"];
            args.extend(v);
            match Cli::try_parse_from(args).unwrap().command {
                Command::Attach(a) => rules_from(None, &a.impair, &a.matcher)
                    .unwrap_err()
                    .to_string(),
                _ => unreachable!(),
            }
        };
        let e = parse(&["--loss", "1%", "--loss-model", "ge:1%"]);
        assert_eq!(
            e,
            "give either --loss (independent) or --loss-model (bursts), not both"
        );
        let e = parse(&["--loss", "1%", "--queue", "10p"]);
        assert_eq!(e, "--queue needs a rate in the same rule (--rate)");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]

        /// Any flags and values: parsed into the model or refused in one
        /// line, never a panic.
        #[test]
        fn any_attach_flags_parse_or_refuse_in_one_line(
            args in proptest::collection::vec(
                (
                    proptest::prelude::prop_oneof![
                        proptest::prelude::Just("--loss"), proptest::prelude::Just("--loss-model"),
                        proptest::prelude::Just("--delay"), proptest::prelude::Just("--jitter"),
                        proptest::prelude::Just("--rate"), proptest::prelude::Just("--queue"),
                        proptest::prelude::Just("--mtu"), proptest::prelude::Just("--dst"),
                        proptest::prelude::Just("--dport"), proptest::prelude::Just("--proto"),
                        proptest::prelude::Just("--corrupt"), proptest::prelude::Just("--cell"),
                        proptest::prelude::Just("--overhead"), proptest::prelude::Just("--distribution"),
                        proptest::prelude::Just("--reorder"), proptest::prelude::Just("--blackhole"),
                        proptest::prelude::Just("--in-order"), proptest::prelude::Just("delay"),
                    ],
                    "[^\n\r]{0,12}",
                ),
                0..6,
            )
        ) {
            let mut argv = vec!["impair".to_owned(), "attach".to_owned(), "x".to_owned()];
            for (flag, value) in &args {
                argv.push((*flag).to_owned());
                if !matches!(*flag, "--blackhole" | "--in-order") {
                    argv.push(value.clone());
                }
            }
            match Cli::try_parse_from(&argv) {
                Ok(cli) => {
                    if let Command::Attach(a) = cli.command {
                        if let Err(e) = rules_from(None, &a.impair, &a.matcher) {
                            let line = crate::render::usage_line(&e).unwrap_or_else(|| e.to_string());
                            proptest::prop_assert!(!line.contains('\n'), "{argv:?}: {line}");
                        }
                    }
                }
                Err(e) => {
                    // clap's own errors are folded into one line by main.
                    proptest::prop_assert!(!e.render().to_string().is_empty());
                }
            }
        }
    }
}
