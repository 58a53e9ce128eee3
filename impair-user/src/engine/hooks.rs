//! Where an attachment hooks in: the attach mode, the direction, the
//! receive-side hook and XDP mode, the programs they load, and which rules
//! can run there.
use impair_common::{owner_flags, prog_names};

use super::error::{EgressOnly, Error};
use crate::model::{compile_all, ModelError, RuleSet, RuleSpec};

/// How the tc program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// tcx where the kernel has it (6.6+), netlink clsact otherwise.
    #[default]
    Auto,
    /// A tcx link: the kernel drops it when the controller's descriptors close.
    Tcx,
    /// A clsact qdisc filter (kernels before 6.6); the lease covers a killed controller.
    Netlink,
}

/// Which traffic of the interface is impaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Leaving the interface (tc egress): every impairment.
    #[default]
    Egress,
    /// Arriving on the interface (tc ingress or XDP): loss, ECN, corruption,
    /// MTU and blackhole in place; with tc ingress, rules that hold or copy
    /// packets (delay, jitter, reordering, duplication, and a rate, which
    /// shapes unless [`HookOptions::police`]) send received traffic through
    /// an ifb device whose egress does everything egress does
    /// (`engine/ifb.rs`). XDP, and tc ingress with `police`, police a rate
    /// in place.
    Ingress,
    /// Both, with one rule set and one set of counters for the two directions.
    Both,
}

impl Direction {
    pub fn egress(self) -> bool {
        matches!(self, Direction::Egress | Direction::Both)
    }

    pub fn ingress(self) -> bool {
        matches!(self, Direction::Ingress | Direction::Both)
    }
}

/// The hook that sees received traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IngressHook {
    /// tc ingress (tcx or a clsact filter, as --attach-mode says).
    #[default]
    Tc,
    /// XDP: before the kernel allocates an skb (native) or right after (generic).
    Xdp,
}

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native where the driver supports it, generic otherwise (the kernel chooses).
    #[default]
    Auto,
    /// In the driver (fails where the driver has no XDP support).
    Native,
    /// In the core stack, on the skb (works on every device; slower).
    Generic,
}

/// Lower-case names for a fieldless enum, and parsing them back: how every
/// front end (flags, JSON) spells the engine's choices.
macro_rules! named {
    ($t:ident { $($v:ident => $n:literal),+ $(,)? }) => {
        impl $t {
            /// Every name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($n),+];

            pub fn name(self) -> &'static str {
                match self {
                    $($t::$v => $n),+
                }
            }
        }

        impl std::str::FromStr for $t {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($n => Ok($t::$v),)+
                    other => Err(format!(
                        "invalid value '{other}': expected {}",
                        Self::NAMES.join(", ")
                    )),
                }
            }
        }
    };
}

named!(AttachMode { Auto => "auto", Tcx => "tcx", Netlink => "netlink" });
named!(Direction { Egress => "egress", Ingress => "ingress", Both => "both" });
named!(IngressHook { Tc => "tc", Xdp => "xdp" });
named!(XdpMode { Auto => "auto", Native => "native", Generic => "generic" });

impl XdpMode {
    pub fn aya(self) -> aya::programs::XdpMode {
        match self {
            XdpMode::Auto => aya::programs::XdpMode::Default,
            XdpMode::Native => aya::programs::XdpMode::Driver,
            XdpMode::Generic => aya::programs::XdpMode::Skb,
        }
    }
}

/// Where an attachment hooks in; the default is tc egress, as before receive
/// hooks existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HookOptions {
    pub direction: Direction,
    /// The receive-side hook (with [`Direction::Ingress`] or [`Direction::Both`]).
    pub ingress_hook: IngressHook,
    pub xdp_mode: XdpMode,
    /// At tc ingress, a rate polices in place (drops what exceeds its
    /// burst, as tc's `police` action does; needs no fq and no ifb) instead
    /// of shaping through an ifb as at egress. XDP always polices: it has
    /// no queue.
    pub police: bool,
}

impl HookOptions {
    /// The programs this attachment loads and attaches.
    pub fn programs(&self) -> Vec<Program> {
        let mut p = Vec::with_capacity(2);
        if self.direction.egress() {
            p.push(Program::TcEgress);
        }
        if self.direction.ingress() {
            p.push(match self.ingress_hook {
                IngressHook::Tc => Program::TcIngress,
                IngressHook::Xdp => Program::Xdp,
            });
        }
        p
    }

    /// Whether received traffic is seen at tc ingress (after GRO), whether
    /// or not it is then redirected to an ifb; XDP runs before GRO.
    pub fn tc_ingress(&self) -> bool {
        self.direction.ingress() && self.ingress_hook == IngressHook::Tc
    }

    /// The owner-map hook bits of this attachment.
    pub fn owner_hooks(&self) -> u32 {
        self.programs()
            .iter()
            .fold(0, |acc, p| acc | p.owner_hook())
    }

    /// Whether an attach with `rules` sends received traffic through an ifb:
    /// a tc ingress instance whose rules hold or copy packets, a rate (or a
    /// rate trace) included unless it polices.
    pub fn holds_at_ingress(&self, rules: &[RuleSpec]) -> bool {
        self.direction == Direction::Ingress
            && self.ingress_hook == IngressHook::Tc
            && self.first_holding(rules).is_some()
    }

    /// The first impairment among `rules` that needs a queue at these
    /// hooks: one that holds or copies packets, or a rate that shapes.
    pub fn first_holding(&self, rules: &[RuleSpec]) -> Option<EgressOnly> {
        rules.iter().find_map(|r| {
            egress_only(r).or_else(|| {
                let dests = || {
                    r.matrix
                        .iter()
                        .flat_map(|m| m.dests.iter().map(|d| d.entry()))
                };
                if r.delay_series.is_some() || dests().any(|e| e.delay_ns | e.jitter_ns != 0) {
                    return Some(EgressOnly::Delay);
                }
                let shapes = r.rate.is_some()
                    || r.rate_trace.is_some()
                    || dests().any(|e| e.rate_ps_per_byte != 0);
                (shapes && !self.police).then_some(EgressOnly::Shaping)
            })
        })
    }

    /// The programs an attach loads: with an ifb, `impair_redirect` at tc
    /// ingress and `impair_egress` on the ifb instead of `impair_ingress`.
    pub fn programs_to_load(&self, ifb: bool) -> Vec<Program> {
        if ifb {
            vec![Program::Redirect, Program::TcEgress]
        } else {
            self.programs()
        }
    }

    /// The rules compiled for these hooks. At egress a rate without a
    /// queue limit gets the default one
    /// ([`RuleSpec::with_default_queue`]): without it packets would wait up to
    /// fq's horizon and fq would drop them uncounted. At ingress the
    /// policer's own default burst applies instead.
    pub fn compile(&self, rules: &[RuleSpec]) -> Result<RuleSet, ModelError> {
        self.compile_at(rules, false)
    }

    /// [`HookOptions::compile`] for an instance with an ifb (`ifb`), whose
    /// rules run at the ifb's egress: compiled as egress rules.
    pub fn compile_at(&self, rules: &[RuleSpec], ifb: bool) -> Result<RuleSet, ModelError> {
        if self.direction == Direction::Egress || ifb {
            let rules: Vec<RuleSpec> = rules.iter().map(RuleSpec::with_default_queue).collect();
            compile_all(&rules)
        } else {
            compile_all(rules)
        }
    }

    /// Delay, jitter, reordering and duplication need a queue that holds
    /// packets (fq at egress); the receive path has none, so XDP and
    /// `--direction both` refuse them at ingress. tc ingress gets them
    /// through an ifb ([`HookOptions::holds_at_ingress`]), chosen at attach.
    pub fn check(&self, rules: &[RuleSpec]) -> Result<(), Error> {
        self.check_at(rules, self.holds_at_ingress(rules))
    }

    /// [`HookOptions::check`] for an instance that has an ifb (`ifb`) or
    /// not: an instance attached without one refuses rules that need it.
    pub fn check_at(&self, rules: &[RuleSpec], ifb: bool) -> Result<(), Error> {
        // tc finds a received packet's socket (and so its cgroup) by a
        // socket lookup; XDP has no helper that reads a socket's cgroup.
        if self.direction.ingress()
            && self.ingress_hook == IngressHook::Xdp
            && rules.iter().any(|r| r.matcher.cgroup.is_some())
        {
            return Err(Error::CgroupAtIngress);
        }
        if self.direction.ingress() && !ifb {
            if let Some(what) = rules.iter().find_map(egress_only) {
                return Err(Error::EgressOnlyAtIngress(what));
            }
        }
        if self.direction == Direction::Both && rules.iter().any(|r| r.rate.is_some()) {
            return Err(Error::RateInBothDirections);
        }
        Ok(())
    }
}

/// The first impairment of `r` that only tc egress can do, in the order the
/// user is told about them.
fn egress_only(r: &RuleSpec) -> Option<EgressOnly> {
    if let Some(d) = &r.delay {
        return Some(if d.delay_ns != 0 {
            EgressOnly::Delay
        } else if d.jitter_ns != 0 {
            EgressOnly::Jitter
        } else if d.distribution.is_some() {
            EgressOnly::Distribution
        } else if d.correlation.is_some() {
            EgressOnly::DelayCorrelation
        } else if d.in_order {
            EgressOnly::InOrder
        } else {
            EgressOnly::Delay
        });
    }
    if r.reorder.is_some() {
        return Some(EgressOnly::Reorder);
    }
    if r.duplicate.is_some() {
        return Some(EgressOnly::Duplicate);
    }
    None
}

/// The programs of the eBPF object (one object serves every hook).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    TcEgress,
    TcIngress,
    Xdp,
    /// tc ingress of an instance with an ifb: sends received packets there.
    Redirect,
    /// tc ingress of an egress instance's segmenter peer (segmenter.rs):
    /// sends split super-packets' wire packets back to the device's egress.
    Segmented,
}

impl Program {
    pub const ALL: [Program; 3] = [Program::TcEgress, Program::TcIngress, Program::Xdp];

    pub fn name(self) -> &'static str {
        match self {
            Program::TcEgress => prog_names::TC_EGRESS,
            Program::TcIngress => prog_names::TC_INGRESS,
            Program::Xdp => prog_names::XDP,
            Program::Redirect => prog_names::REDIRECT,
            Program::Segmented => prog_names::SEGMENTED,
        }
    }

    pub(crate) fn owner_hook(self) -> u32 {
        match self {
            // The segmenter serves the egress hook (its own attachment is on
            // a device the instance owns).
            Program::TcEgress | Program::Segmented => owner_flags::HOOK_TC_EGRESS,
            Program::TcIngress | Program::Redirect => owner_flags::HOOK_TC_INGRESS,
            Program::Xdp => owner_flags::HOOK_XDP,
        }
    }

    /// The hook as `impair status` names it.
    pub fn hook_name(self) -> &'static str {
        match self {
            Program::TcEgress => "tc-egress",
            Program::TcIngress | Program::Redirect | Program::Segmented => "tc-ingress",
            Program::Xdp => "xdp",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dup() -> Vec<RuleSpec> {
        vec![RuleSpec {
            duplicate: Some(0.05),
            ..Default::default()
        }]
    }

    fn ingress(hook: IngressHook) -> HookOptions {
        HookOptions {
            direction: Direction::Ingress,
            ingress_hook: hook,
            ..Default::default()
        }
    }

    #[test]
    fn tc_ingress_holds_through_an_ifb_and_xdp_and_both_refuse() {
        let tc = ingress(IngressHook::Tc);
        assert!(tc.holds_at_ingress(&dup()));
        assert_eq!(tc.check(&dup()), Ok(()));
        assert_eq!(
            tc.programs_to_load(true),
            vec![Program::Redirect, Program::TcEgress]
        );
        // An instance attached without an ifb refuses an update needing one.
        assert_eq!(
            tc.check_at(&dup(), false),
            Err(Error::EgressOnlyAtIngress(EgressOnly::Duplicate))
        );
        assert!(!tc.holds_at_ingress(&[RuleSpec::default()]));
        let xdp = ingress(IngressHook::Xdp);
        assert!(!xdp.holds_at_ingress(&dup()));
        assert!(xdp.check(&dup()).is_err());
        let both = HookOptions {
            direction: Direction::Both,
            ..Default::default()
        };
        assert!(!both.holds_at_ingress(&dup()));
        assert!(both.check(&dup()).is_err());
        // A rate shapes through the ifb unless it polices; XDP polices.
        let rate = vec![RuleSpec {
            rate: Some(crate::model::RateSpec {
                rate_bps: 2_000_000,
                ..Default::default()
            }),
            ..Default::default()
        }];
        assert!(tc.holds_at_ingress(&rate));
        assert_eq!(tc.first_holding(&rate), Some(EgressOnly::Shaping));
        let police = HookOptions { police: true, ..tc };
        assert!(!police.holds_at_ingress(&rate));
        assert_eq!(police.check(&rate), Ok(()));
        assert!(police.holds_at_ingress(&dup()));
        assert!(!xdp.holds_at_ingress(&rate));
        assert_eq!(xdp.check(&rate), Ok(()));
        // A matrix that delays holds; one that only shapes shapes; one
        // with loss alone stays at the hook.
        let matrix = |row: &str| {
            let text = format!("prefix,delay,jitter,loss,rate\n{row}\n");
            vec![RuleSpec {
                matrix: Some(std::sync::Arc::new(
                    crate::model::Matrix::parse_csv("m.csv", &text).unwrap(),
                )),
                ..Default::default()
            }]
        };
        let delays = matrix("198.18.10.0/24,38ms,,,");
        assert_eq!(police.first_holding(&delays), Some(EgressOnly::Delay));
        let shapes = matrix("198.18.10.0/24,,,,10mbit");
        assert_eq!(tc.first_holding(&shapes), Some(EgressOnly::Shaping));
        assert_eq!(police.first_holding(&shapes), None);
        assert_eq!(tc.first_holding(&matrix("198.18.10.0/24,,,1%,")), None);
        // The redirect sits at tc ingress: the owner record says so.
        assert_eq!(Program::Redirect.owner_hook(), owner_flags::HOOK_TC_INGRESS);
    }
}
