//! A whole link on one interface: two instances, an egress one with the
//! uplink's rules (what the host sends) and an ingress one with the
//! downlink's (what it receives), attached, updated and detached together.
//! Built on [`Engine`] alone ("egress and ingress instances may coexist"):
//! each side is an ordinary instance with its own owner record, lease,
//! counters and rule-set slots, so `impair status`, `stats` and `detach` see
//! two instances of one controller.
//!
//! Both sides are checked before anything changes; when the second attach
//! fails the first is detached again, so a refused pair changes nothing.
//! An update writes each side's rule set with its own atomic flip (uplink
//! first): each direction sees one rule set or the other, never a mix, and
//! the two flips are a few milliseconds apart.
use std::time::Duration;

use anyhow::Result;

use super::{AttachMode, AttachOptions, Direction, Engine, HookOptions, IngressHook, XdpMode};
use crate::model::RuleSpec;

/// One side's rules and the label `impair status` shows for it.
#[derive(Debug, Clone, Default)]
pub struct SideOptions {
    pub rules: Vec<RuleSpec>,
    pub label: String,
}

/// What [`EnginePair::attach`] attaches. A side that is `None` is not
/// attached (a profile with no downlink, or `--direction egress`).
#[derive(Debug, Clone, Default)]
pub struct PairOptions {
    pub iface: String,
    pub mode: AttachMode,
    /// The uplink's seed; the downlink uses `seed + 1` (wrapping), so the
    /// two sides draw independent losses and delays, reproducibly.
    pub seed: Option<u64>,
    pub duration: Option<Duration>,
    pub uplink: Option<SideOptions>,
    pub downlink: Option<SideOptions>,
    /// The receive-side hook of the downlink instance.
    pub ingress_hook: IngressHook,
    pub xdp_mode: XdpMode,
    /// The downlink's rate polices instead of shaping
    /// ([`HookOptions::police`]).
    pub police: bool,
    /// Leave the device's offloads alone (see [`AttachOptions::keep_offloads`]).
    pub keep_offloads: bool,
}

impl PairOptions {
    /// The uplink's hooks: tc egress.
    pub fn uplink_hooks(&self) -> HookOptions {
        HookOptions {
            direction: Direction::Egress,
            ..HookOptions::default()
        }
    }

    /// The downlink's hooks: the receive side.
    pub fn downlink_hooks(&self) -> HookOptions {
        HookOptions {
            direction: Direction::Ingress,
            ingress_hook: self.ingress_hook,
            xdp_mode: self.xdp_mode,
            police: self.police,
        }
    }
}

/// The downlink's seed for an uplink seed.
pub fn downlink_seed(seed: Option<u64>) -> Option<u64> {
    seed.map(|s| s.wrapping_add(1))
}

/// Two instances of one link (either may be absent).
pub struct EnginePair {
    pub uplink: Option<Engine>,
    pub downlink: Option<Engine>,
}

impl EnginePair {
    /// Checks both sides, then attaches the uplink and the downlink; if the
    /// downlink fails, the uplink is detached again and the downlink's error
    /// returned.
    pub fn attach(opts: PairOptions) -> Result<Self> {
        let (up_hooks, down_hooks) = (opts.uplink_hooks(), opts.downlink_hooks());
        if let Some(s) = &opts.uplink {
            up_hooks.check(&s.rules)?;
        }
        if let Some(s) = &opts.downlink {
            down_hooks.check(&s.rules)?;
        }
        let side = |s: &SideOptions, seed: Option<u64>| AttachOptions {
            iface: opts.iface.clone(),
            mode: opts.mode,
            rules: s.rules.clone(),
            seed,
            label: s.label.clone(),
            duration: opts.duration,
            keep_offloads: opts.keep_offloads,
        };
        let uplink = opts
            .uplink
            .as_ref()
            .map(|s| Engine::attach_with(side(s, opts.seed), up_hooks))
            .transpose()?;
        let downlink = match opts
            .downlink
            .as_ref()
            .map(|s| Engine::attach_with(side(s, downlink_seed(opts.seed)), down_hooks))
        {
            None => None,
            Some(Ok(e)) => Some(e),
            Some(Err(e)) => {
                if let Some(up) = uplink {
                    if let Err(undo) = up.detach() {
                        tracing::error!("undoing the uplink after the downlink failed: {undo:#}");
                    }
                }
                return Err(e);
            }
        };
        Ok(EnginePair { uplink, downlink })
    }

    /// The attached instances, uplink first.
    pub fn engines(&self) -> impl Iterator<Item = &Engine> {
        self.uplink.iter().chain(self.downlink.iter())
    }

    /// Replaces both sides' rules, each with its own atomic flip; both are
    /// checked against their hooks before either is written. A side not
    /// attached must be given no rules.
    pub fn update(&mut self, uplink: &[RuleSpec], downlink: &[RuleSpec]) -> Result<()> {
        for (engine, rules, side) in [
            (&self.uplink, uplink, "uplink"),
            (&self.downlink, downlink, "downlink"),
        ] {
            match engine {
                Some(e) => e.hooks().check(rules)?,
                None if rules.is_empty() => {}
                None => anyhow::bail!("this link has no {side} instance to give rules to"),
            }
        }
        if let Some(e) = self.uplink.as_mut() {
            e.update(uplink)?;
        }
        if let Some(e) = self.downlink.as_mut() {
            e.update(downlink)?;
        }
        Ok(())
    }

    /// Labels both sides (`label, uplink` / `label, downlink`).
    pub fn set_label(&self, label: &str) -> Result<()> {
        if let Some(e) = &self.uplink {
            e.set_label(&side_label(label, "uplink", self.downlink.is_some()))?;
        }
        if let Some(e) = &self.downlink {
            e.set_label(&side_label(label, "downlink", self.uplink.is_some()))?;
        }
        Ok(())
    }

    /// `--pin`: both sides stay attached after this process exits.
    pub fn persist(self) -> Result<()> {
        let EnginePair { uplink, downlink } = self;
        if let Some(e) = uplink {
            e.persist()?;
        }
        if let Some(e) = downlink {
            e.persist()?;
        }
        Ok(())
    }

    /// Detaches the downlink, then the uplink (the reverse of attaching);
    /// both are tried, the first error returned.
    pub fn detach(self) -> Result<()> {
        let EnginePair { uplink, downlink } = self;
        let down = downlink.map_or(Ok(()), Engine::detach);
        let up = uplink.map_or(Ok(()), Engine::detach);
        down.and(up)
    }
}

/// The label of one side of a two-sided link: `profile lte, downlink`.
pub fn side_label(label: &str, side: &str, both: bool) -> String {
    if both {
        format!("{label}, {side}")
    } else {
        format!("{label} ({side} only)")
    }
}
