//! `impair update`: replaces the rules of running instances atomically.
//! One instance, as named by IFACE and --direction; or both instances of a
//! two-way link (one controller's egress and ingress instances): a two-way
//! profile gives each its side, flags change both. Every target is checked
//! before any is written; each instance's swap is atomic.
use anyhow::Result;
use impair::{
    discover,
    engine::{hooks_of, pair::side_label},
    model::{LinkRules, RuleSpec},
    sys,
};

use crate::{
    args::{Side, UpdateArgs},
    convert::{profile_link, update_rules},
    instances::{link_pair, one_instance},
    render::engine_error,
    usage,
};

/// One instance to update, its new rules and label.
struct Target {
    inst: discover::Instance,
    rules: Vec<RuleSpec>,
    label: String,
}

pub(crate) fn update(a: UpdateArgs) -> Result<()> {
    if !sys::is_root() {
        return Err(usage!("permission denied: impair update needs root (CAP_BPF)").into());
    }
    let two_way = match &a.profile {
        Some(name) => {
            let (link, label) = profile_link(name, &a.impair, &a.matcher)?;
            link.two_way.then_some((link, label))
        }
        None => None,
    };
    if a.flip && two_way.is_none() {
        return Err(usage!(
            "--flip swaps the uplink and downlink of a two-way --profile; {} has one direction: choose the \
             instance with --direction instead",
            a.profile
                .as_deref()
                .map_or("the impairment flags".to_owned(), |p| format!("profile {p}"))
        )
        .into());
    }
    let targets = match two_way {
        Some((link, label)) => {
            let (link, label) = if a.flip {
                (link.flipped(), format!("{label} (flipped)"))
            } else {
                (link, label)
            };
            link_targets(&a, &link, &label)?
        }
        None => flag_targets(&a)?,
    };
    for t in &targets {
        if !t.inst.alive {
            return Err(usage!(
                "the instance on {} belongs to pid {}, which died (its traffic passes unimpaired): `impair detach {}` removes it",
                a.iface,
                t.inst.owner.pid,
                a.iface
            )
            .into());
        }
        hooks_of(&t.inst.owner).check(&t.rules).map_err(|e| {
            usage!(
                "{} {}: {}",
                a.iface,
                t.inst.owner.hook_name(),
                engine_error(&e)
            )
        })?;
    }
    for mut t in targets {
        let done = impair::engine::update_instance(&a.iface, &mut t.inst, &t.rules, &t.label)?;
        println!(
            "impair: updated {} {} (pid {}): {}",
            a.iface,
            t.inst.owner.hook_name(),
            t.inst.owner.pid,
            t.label
        );
        for change in done.offload_changes {
            println!("impair: {change}; restored on detach");
        }
        for note in done.notes {
            println!("impair: {note}");
        }
        // The whole rule set now in force, as the kernel holds it.
        let (_, header, now) = t.inst.maps.active_rules()?;
        for (i, r) in now.iter().enumerate() {
            let v = impair::model::RuleView::from_rule(r);
            println!(
                "  rule {} (generation {}): {}: {}",
                i + 1,
                header.generation,
                v.matches,
                v.impairments
            );
        }
    }
    for note in a.impair.unit_notes() {
        println!("impair: note: {note}");
    }
    Ok(())
}

/// Flags or a one-direction profile: the instance IFACE and --direction
/// name, or both of a two-way link (flags only: a one-direction profile is
/// one side, so the instance must be chosen).
fn flag_targets(a: &UpdateArgs) -> Result<Vec<Target>> {
    if a.direction.is_none() {
        if let Some(pair) = link_pair(&a.iface)? {
            if let Some(name) = &a.profile {
                return Err(usage!(
                    "{} runs a two-way link (egress and ingress instances of pid {}), and profile {name} has one \
                     direction: choose the instance with --direction egress or ingress, or give a two-way profile",
                    a.iface,
                    pair[0].owner.pid
                )
                .into());
            }
            return pair
                .into_iter()
                .map(|inst| {
                    let (rules, label) = update_rules(&running_rules(&inst)?, a)?;
                    let side = if inst.egress() { "uplink" } else { "downlink" };
                    Ok(Target {
                        inst,
                        rules,
                        label: side_label(&label, side, true),
                    })
                })
                .collect();
        }
    }
    let inst = one_instance(&a.iface, a.direction)?;
    let (rules, label) = update_rules(&running_rules(&inst)?, a)?;
    Ok(vec![Target { inst, rules, label }])
}

/// A two-way profile: its uplink to the egress instance and its downlink to
/// the ingress instance (only one of them with --direction).
fn link_targets(a: &UpdateArgs, link: &LinkRules, label: &str) -> Result<Vec<Target>> {
    let all = crate::instances::instances_on(&a.iface, None)?;
    if let Some(both) = all.iter().find(|i| i.egress() && i.ingress()) {
        return Err(usage!(
            "the instance on {} (pid {}) impairs both directions with one rule set (--direction both); a two-way \
             profile needs an egress and an ingress instance: detach it and attach the profile",
            a.iface,
            both.owner.pid
        )
        .into());
    }
    let mut targets = Vec::new();
    let mut instances = all;
    for (side, wanted, rules, egress) in [
        (
            "uplink",
            a.direction != Some(Side::Ingress),
            &link.uplink,
            true,
        ),
        (
            "downlink",
            a.direction != Some(Side::Egress),
            &link.downlink,
            false,
        ),
    ] {
        if !wanted {
            continue;
        }
        let pos = instances.iter().position(|i| i.egress() == egress);
        match pos {
            Some(p) => {
                let inst = instances.swap_remove(p);
                targets.push(Target {
                    inst,
                    rules: rules.clone(),
                    label: side_label(label, side, true),
                });
            }
            None if rules.is_empty() => {}
            None => {
                let (hook, other, other_side) = if egress {
                    ("egress", "ingress", "downlink")
                } else {
                    ("ingress", "egress", "uplink")
                };
                return Err(usage!(
                    "{} has no {hook} instance for {label}'s {side}: attach the profile (both sides), or give \
                     --direction {other} to update the {other_side} only",
                    a.iface
                )
                .into());
            }
        }
    }
    if targets.is_empty() {
        return Err(usage!(
            "{} is not impaired: no impair instance is attached to it in this network namespace",
            a.iface
        )
        .into());
    }
    Ok(targets)
}

/// The running rules of `inst`, read back into the model.
pub(crate) fn running_rules(inst: &discover::Instance) -> Result<Vec<RuleSpec>> {
    let (slot, _, rules) = inst.maps.active_rules()?;
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let table = (r.delay_dist == impair_common::delay_dist::TABLE)
                .then(|| inst.maps.delay_table(slot, i as u32))
                .transpose()?;
            let mut spec = impair::model::view::spec_of(r, table.as_ref().map(|t| &t[..]));
            // A running latency matrix is kept unless --matrix replaces it.
            if r.flags & impair_common::rule_flags::MATRIX != 0 {
                spec.matrix = inst
                    .maps
                    .matrix_of(slot, i as u32)?
                    .map(std::sync::Arc::new);
            }
            // Running series are kept unless the flags replace them.
            if r.flags & impair_common::rule_flags::DELAY_SERIES != 0 {
                spec.delay_series = inst
                    .maps
                    .series_of(slot, impair_common::series::SERIES_DELAY)?
                    .map(std::sync::Arc::new);
            }
            if r.flags & impair_common::rule_flags::RATE_TRACE != 0 {
                spec.rate_trace = inst.maps.rate_trace_of(slot)?.map(std::sync::Arc::new);
            }
            if r.flags & impair_common::rule_flags::LOSS_SERIES != 0 {
                spec.loss_series = inst
                    .maps
                    .series_of(slot, impair_common::series::SERIES_LOSS)?
                    .map(std::sync::Arc::new);
            }
            Ok(spec)
        })
        .collect()
}
