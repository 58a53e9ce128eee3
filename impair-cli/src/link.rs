//! What one `impair attach` attaches: one instance (impairment flags, a
//! one-direction profile or scenario: where --direction says, egress by
//! default, as before two-way profiles), or a two-way link (a profile or
//! scenario with an uplink and a downlink: an egress instance with the
//! uplink, an ingress instance with the downlink, from the host's point of
//! view; --flip swaps them). Every refusal is decided here, before anything
//! is attached, in one line (exit code 2).
use anyhow::Result;
use impair::{
    engine::{
        pair::{EnginePair, PairOptions, SideOptions},
        Direction, Engine, Error as EngineError, HookOptions, IngressHook,
    },
    model::{LinkRules, RuleSpec},
    profile::scenario::{self, Scenario},
};

use crate::{
    args::AttachArgs,
    convert::{hooks_from, profile_link, rules_from},
    render::engine_error,
    usage,
};

/// The attachment `impair attach` makes.
pub(crate) enum Plan {
    /// One instance: `hooks` with `rules` (a scenario's first step).
    One {
        hooks: HookOptions,
        rules: Vec<RuleSpec>,
    },
    /// A two-way link: the sides to attach (`None`: not attached).
    Pair {
        uplink: Option<Vec<RuleSpec>>,
        downlink: Option<Vec<RuleSpec>>,
        ingress_hook: IngressHook,
        xdp_mode: impair::engine::XdpMode,
        /// The downlink's rate polices instead of shaping.
        police: bool,
    },
}

/// A plan, its label, and the scenario that drives it (if any).
pub(crate) struct Planned {
    pub plan: Plan,
    pub label: String,
    pub scenario: Option<Scenario>,
}

/// What the rules come from, for messages.
fn source_name(a: &AttachArgs) -> String {
    match (&a.profile, &a.scenario) {
        (Some(p), _) => format!("profile {p}"),
        (_, Some(s)) => format!("scenario {s}"),
        _ => "the impairment flags".into(),
    }
}

pub(crate) fn plan(a: &AttachArgs) -> Result<Planned> {
    let mut scenario = match &a.scenario {
        Some(path) => {
            if a.impair.given() || a.matcher.given() {
                return Err(usage!(
                    "--scenario {path} sets the rules itself: drop the impairment and match flags"
                )
                .into());
            }
            Some(scenario::load(path)?)
        }
        None => None,
    };
    let mut link = match (&a.profile, &scenario) {
        (Some(p), _) => Some(profile_link(p, &a.impair, &a.matcher)?),
        _ => None,
    };
    let two_way = scenario.as_ref().map_or_else(
        || link.as_ref().is_some_and(|(l, _)| l.two_way),
        Scenario::two_way,
    );
    if a.flip && !two_way {
        return Err(match (&a.profile, &a.scenario) {
            (None, None) => usage!(
                "--flip swaps the uplink and downlink of a two-way --profile or --scenario; impairment flags \
                 describe one direction: choose it with --direction egress or ingress"
            ),
            _ => usage!(
                "--flip swaps the uplink and downlink of a two-way profile or scenario, and {} has one direction \
                 (no [[uplink.rule]], [[downlink.rule]] or direction keys): attach it where its traffic leaves, or \
                 use --direction ingress for received traffic",
                source_name(a)
            ),
        }
        .into());
    }
    if a.flip {
        scenario = scenario.map(|s| s.flipped());
        link = link.map(|(l, label)| (l.flipped(), label));
    }
    let flipped = if a.flip { " (flipped)" } else { "" };
    if !two_way {
        let hooks = hooks_from(a)?;
        let (rules, label) = match &scenario {
            Some(s) => {
                for st in &s.steps {
                    hooks.check(&st.rules)?;
                }
                (
                    s.steps[0].rules.clone(),
                    format!("scenario step 1: {}", s.steps[0].label),
                )
            }
            None => rules_from(a.profile.as_deref(), &a.impair, &a.matcher)?,
        };
        return Ok(Planned {
            plan: Plan::One { hooks, rules },
            label,
            scenario,
        });
    }
    // A two-way link: which sides, and the hooks of each.
    let (want_up, want_down) = match a.direction {
        None | Some(Direction::Both) => (true, true),
        Some(Direction::Egress) => (true, false),
        Some(Direction::Ingress) => (false, true),
    };
    let sides: Vec<LinkRules> = match (&scenario, &link) {
        (Some(s), _) => s.steps.iter().map(|st| st.link()).collect(),
        (None, Some((l, _))) => vec![l.clone()],
        (None, None) => unreachable!("two-way rules come from a profile or a scenario"),
    };
    let has_up = sides.iter().any(|l| !l.uplink.is_empty());
    let has_down = sides.iter().any(|l| !l.downlink.is_empty());
    let (up, down) = (want_up && has_up, want_down && has_down);
    if !up && !down {
        let side = if want_up { "uplink" } else { "downlink" };
        return Err(usage!(
            "{}{flipped} has no {side} rules: nothing to impair {}",
            source_name(a),
            if want_up {
                "at egress (sent traffic)"
            } else {
                "at ingress (received traffic)"
            }
        )
        .into());
    }
    if a.hook == IngressHook::Xdp && !down {
        return Err(usage!(
            "--hook xdp chooses the receive-side hook, and {}{flipped} applies no downlink (received traffic) here: \
             drop --hook xdp{}",
            source_name(a),
            if a.direction == Some(Direction::Egress) {
                " or --direction egress"
            } else {
                ""
            }
        )
        .into());
    }
    if a.xdp_mode.is_some() && a.hook != IngressHook::Xdp {
        return Err(usage!(
            "--xdp-mode applies to the XDP hook: add --hook xdp (and --direction ingress or both)"
        )
        .into());
    }
    if a.police && !down {
        return Err(usage!(
            "--police makes a rate on received traffic drop instead of queue, and {}{flipped} applies no downlink \
             (received traffic) here: drop --police",
            source_name(a)
        )
        .into());
    }
    let opts = PairOptions {
        ingress_hook: a.hook,
        xdp_mode: a.xdp_mode.unwrap_or_default(),
        police: a.police,
        ..PairOptions::default()
    };
    for (i, l) in sides.iter().enumerate() {
        let at = if scenario.is_some() {
            format!(" (step {})", i + 1)
        } else {
            String::new()
        };
        let refuse = |side: &str, e: EngineError| {
            usage!(
                "{}{flipped}, {side}{at}: {}",
                source_name(a),
                engine_error(&e)
            )
        };
        if up {
            opts.uplink_hooks()
                .check(&l.uplink)
                .map_err(|e| refuse("uplink", e))?;
        }
        if down {
            opts.downlink_hooks()
                .check(&l.downlink)
                .map_err(|e| refuse("downlink", e))?;
        }
    }
    let (first, label) = match (&scenario, link) {
        (Some(s), _) => (
            s.steps[0].link(),
            format!("scenario step 1: {}", s.steps[0].label),
        ),
        (None, Some((l, label))) => (l, format!("{label}{flipped}")),
        (None, None) => unreachable!("two-way rules come from a profile or a scenario"),
    };
    Ok(Planned {
        plan: Plan::Pair {
            uplink: up.then_some(first.uplink),
            downlink: down.then_some(first.downlink),
            ingress_hook: opts.ingress_hook,
            xdp_mode: opts.xdp_mode,
            police: opts.police,
        },
        label,
        scenario,
    })
}

/// The instances of a running `impair attach`.
pub(crate) enum Running {
    One(Box<Engine>),
    Pair(Box<EnginePair>),
}

impl Running {
    pub fn engines(&self) -> Vec<&Engine> {
        match self {
            Running::One(e) => vec![&**e],
            Running::Pair(p) => p.engines().collect(),
        }
    }

    pub fn detach(self) -> Result<()> {
        match self {
            Running::One(e) => (*e).detach(),
            Running::Pair(p) => (*p).detach(),
        }
    }

    pub fn persist(self) -> Result<()> {
        match self {
            Running::One(e) => (*e).persist(),
            Running::Pair(p) => (*p).persist(),
        }
    }
}

/// Attaches what `plan` says.
pub(crate) fn attach(
    plan: Plan,
    base: impair::engine::AttachOptions,
    label: &str,
) -> Result<Running> {
    match plan {
        Plan::One { hooks, rules } => Ok(Running::One(Box::new(Engine::attach_with(
            impair::engine::AttachOptions { rules, ..base },
            hooks,
        )?))),
        Plan::Pair {
            uplink,
            downlink,
            ingress_hook,
            xdp_mode,
            police,
        } => {
            let both = uplink.is_some() && downlink.is_some();
            let side = |rules: Vec<RuleSpec>, name: &str| SideOptions {
                rules,
                label: impair::engine::pair::side_label(label, name, both),
            };
            Ok(Running::Pair(Box::new(EnginePair::attach(PairOptions {
                iface: base.iface,
                mode: base.mode,
                seed: base.seed,
                duration: base.duration,
                uplink: uplink.map(|r| side(r, "uplink")),
                downlink: downlink.map(|r| side(r, "downlink")),
                ingress_hook,
                xdp_mode,
                police,
                keep_offloads: base.keep_offloads,
            })?)))
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::args::{Cli, Command};

    fn planned(args: &[&str]) -> Result<Planned> {
        let mut v = vec!["impair", "attach", "eth0"];
        v.extend(args);
        match Cli::try_parse_from(v).unwrap().command {
            Command::Attach(a) => plan(&a),
            _ => unreachable!(),
        }
    }

    /// (uplink rate, downlink rate) in bit/s of a two-way plan's sides
    /// (0: attached without a rate; None: not attached).
    fn rates(p: &Planned) -> (Option<u64>, Option<u64>) {
        let rate = |r: &Option<Vec<RuleSpec>>| {
            r.as_ref()
                .map(|rules| rules.first().and_then(|r| r.rate).map_or(0, |r| r.rate_bps))
        };
        match &p.plan {
            Plan::Pair {
                uplink, downlink, ..
            } => (rate(uplink), rate(downlink)),
            Plan::One { .. } => panic!("expected a two-way plan"),
        }
    }

    fn refused(args: &[&str]) -> String {
        match planned(args) {
            Ok(_) => panic!("{args:?} was accepted"),
            Err(e) => {
                crate::render::usage_line(&e).unwrap_or_else(|| panic!("not a usage error: {e:#}"))
            }
        }
    }

    #[test]
    fn a_two_way_profile_attaches_both_sides_from_the_hosts_view() {
        // Rates only: lte's numbers (planned, not attached).
        let dir = std::env::temp_dir().join(format!("impair-cli-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("link.toml");
        std::fs::write(
            &file,
            "[[downlink.rule]]\nrate = \"50mbit\"\n[[uplink.rule]]\nrate = \"10mbit\"\n",
        )
        .unwrap();
        let link = file.to_str().unwrap();
        let p = planned(&["--profile", link]).unwrap();
        assert_eq!(rates(&p), (Some(10_000_000), Some(50_000_000)));
        assert_eq!(p.label, format!("profile {link}"));
        let p = planned(&["--profile", link, "--flip"]).unwrap();
        assert_eq!(rates(&p), (Some(50_000_000), Some(10_000_000)));
        assert_eq!(p.label, format!("profile {link} (flipped)"));
        let p = planned(&["--profile", link, "--direction", "ingress", "--flip"]).unwrap();
        assert_eq!(rates(&p), (None, Some(10_000_000)));
        let p = planned(&["--profile", link, "--direction", "both"]).unwrap();
        assert_eq!(rates(&p), (Some(10_000_000), Some(50_000_000)));
        std::fs::remove_dir_all(&dir).unwrap();
        // A built-in's uplink alone (egress holds packets on every build).
        let p = planned(&["--profile", "lte", "--direction", "egress"]).unwrap();
        assert_eq!(rates(&p), (Some(10_000_000), None));
        let p = planned(&["--profile", "lte", "--direction", "egress", "--flip"]).unwrap();
        assert_eq!(rates(&p), (Some(50_000_000), None));
        // Match flags apply to both sides.
        let p = planned(&["--profile", "blackhole", "--proto", "udp"]).unwrap();
        match &p.plan {
            Plan::Pair {
                uplink: Some(u),
                downlink: Some(d),
                ..
            } => assert!(u[0].matcher.proto.is_some() && d[0].matcher.proto.is_some()),
            _ => panic!("blackhole is two-way"),
        }
    }

    #[test]
    fn flags_and_one_direction_profiles_are_one_instance_as_before() {
        for args in [
            &["--loss", "1%"][..],
            &["--profile", "lossy"],
            &["--profile", "flaky", "--direction", "ingress"],
            &["--loss", "1%", "--direction", "both"],
        ] {
            match planned(args).unwrap().plan {
                Plan::One { hooks, .. } => {
                    let want = args
                        .iter()
                        .position(|a| *a == "--direction")
                        .map_or(Direction::Egress, |i| args[i + 1].parse().unwrap());
                    assert_eq!(hooks.direction, want, "{args:?}");
                }
                Plan::Pair { .. } => panic!("{args:?}: one direction is one instance"),
            }
        }
    }

    #[test]
    fn bad_combinations_are_one_line() {
        for (args, needles) in [
            (
                &["--loss", "1%", "--flip"][..],
                &["--flip", "--direction"][..],
            ),
            (
                &["--profile", "lossy", "--flip"],
                &["--flip", "profile lossy", "one direction"],
            ),
            (
                &["--profile", "lte", "--loss", "1%"],
                &["--profile lte", "impairment flags"],
            ),
            (
                &["--profile", "lte", "--direction", "egress", "--hook", "xdp"],
                &["--hook xdp", "--direction egress"],
            ),
            (
                &["--profile", "lte", "--xdp-mode", "native"],
                &["--xdp-mode"],
            ),
            (
                &["--profile", "lossy", "--hook", "xdp"],
                &["--hook xdp", "--direction"],
            ),
            // Holding impairments on received traffic name the side (before
            // the ingress delay exists; XDP never holds packets).
            (
                &["--profile", "lte", "--hook", "xdp"],
                &["profile lte, downlink", "--delay", "ingress"],
            ),
        ] {
            let e = refused(args);
            assert!(!e.contains('\n'), "{args:?}: {e}");
            for n in needles {
                assert!(e.contains(n), "{args:?}: names '{n}': {e}");
            }
        }
    }
}

#[cfg(test)]
mod proptests {
    use clap::Parser as _;

    use crate::args::{Cli, Command};

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]

        /// Any mix of profile, --flip, --direction, hooks and flags: a plan
        /// or a one-line refusal, never a panic.
        #[test]
        fn any_two_way_combination_plans_or_refuses_in_one_line(
            picks in proptest::collection::vec(0usize..14, 0..6)
        ) {
            const ARGS: &[&[&str]] = &[
                &["--profile", "lte"], &["--profile", "lossy"], &["--profile", "blackhole"],
                &["--profile", "very-bad-network"], &["--flip"], &["--direction", "egress"],
                &["--direction", "ingress"], &["--direction", "both"], &["--hook", "xdp"],
                &["--xdp-mode", "generic"], &["--loss", "1%"], &["--delay", "10ms"],
                &["--proto", "udp"], &["--rate", "1mbit"],
            ];
            let mut argv = vec!["impair", "attach", "eth0"];
            for p in &picks {
                argv.extend_from_slice(ARGS[*p]);
            }
            if let Ok(Cli { command: Command::Attach(a), .. }) = Cli::try_parse_from(&argv) {
                if let Err(e) = super::plan(&a) {
                    let line = crate::render::usage_line(&e);
                    proptest::prop_assert!(line.is_some(), "{argv:?}: not a usage error: {e:#}");
                    proptest::prop_assert!(!line.unwrap().contains('\n'), "{argv:?}");
                }
            }
        }
    }
}
