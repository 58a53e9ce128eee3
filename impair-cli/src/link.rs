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
    let opts = PairOptions {
        ingress_hook: a.hook,
        xdp_mode: a.xdp_mode.unwrap_or_default(),
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
            })?)))
        }
    }
}
