//! Validation: the one place that says which rules make sense. Every front
//! end reaches it through [`super::Impairments::rule`] or
//! [`super::compile_all`], so a fact such as "loss and a loss model exclude
//! each other" is written once.
use impair_common::{dist::MAX_JITTER_NS, MAX_RULES};

use super::{
    error::{Field, ModelError},
    link::LinkRules,
    rule::{Impairments, MatchSpec, RuleSpec},
    units::Proto,
};

/// The smallest MTU accepted (IPv4's minimum datagram a host must accept).
pub const MIN_MTU_BYTES: u32 = 68;
/// The largest IP packet.
pub const MAX_MTU_BYTES: u32 = 65_535;
/// The framing overhead a rate may add or remove per packet, in bytes.
pub const MAX_OVERHEAD_BYTES: i32 = 1024;

/// What only the flat form can get wrong: modifiers given without what they
/// modify.
pub fn impairments(i: &Impairments) -> Result<(), ModelError> {
    if i.loss.is_some() && i.loss_model.is_some() {
        return Err(ModelError::Conflict {
            field: Field::LossModel,
            with: Field::Loss,
        });
    }
    if i.jitter_ns.is_some() && i.delay_ns.is_none() {
        return Err(ModelError::Requires {
            field: Field::Jitter,
            needs: Field::Delay,
        });
    }
    if i.rate_bps.is_none() {
        for (field, given) in [
            (Field::Overhead, i.overhead_bytes.is_some()),
            (Field::Cell, i.cell.is_some()),
            (Field::Queue, i.queue.is_some()),
        ] {
            if given {
                return Err(ModelError::Requires {
                    field,
                    needs: Field::Rate,
                });
            }
        }
    }
    Ok(())
}

fn fraction(field: Field, p: Option<f64>) -> Result<(), ModelError> {
    match p {
        Some(p) if !(0.0..=1.0).contains(&p) => Err(ModelError::OutOfRange {
            field,
            value: format!("{}%", p * 100.0),
            expected: "0% to 100%".into(),
        }),
        _ => Ok(()),
    }
}

/// A match that a packet can satisfy.
pub fn matcher(m: &MatchSpec) -> Result<(), ModelError> {
    if let (Some(s), Some(d)) = (&m.src, &m.dst) {
        if s.addr().is_ipv4() != d.addr().is_ipv4() {
            return Err(ModelError::MixedFamilies { src: *s, dst: *d });
        }
    }
    if m.sport.is_some() || m.dport.is_some() {
        match m.proto {
            Some(Proto(6 | 17 | 132 | 136)) | None => {}
            Some(p) => return Err(ModelError::PortsWithoutPorts { proto: p.name() }),
        }
    }
    Ok(())
}

/// One rule, however it was built.
pub fn rule(r: &RuleSpec) -> Result<(), ModelError> {
    matcher(&r.matcher)?;
    if r.loss.is_some() && r.loss_model.is_some() {
        return Err(ModelError::Conflict {
            field: Field::LossModel,
            with: Field::Loss,
        });
    }
    fraction(Field::Loss, r.loss)?;
    if r.blackhole {
        let others = [
            (Field::Loss, r.loss.is_some()),
            (Field::LossModel, r.loss_model.is_some()),
            (Field::Ecn, r.ecn),
            (Field::Mtu, r.mtu_bytes.is_some()),
            (Field::Corrupt, r.corrupt.is_some()),
            (Field::Duplicate, r.duplicate.is_some()),
            (Field::Delay, r.delay.is_some()),
            (Field::Reorder, r.reorder.is_some()),
            (Field::Rate, r.rate.is_some()),
        ];
        if let Some((field, _)) = others.into_iter().find(|(_, given)| *given) {
            return Err(ModelError::Redundant {
                field,
                with: Field::Blackhole,
            });
        }
    }
    if r.ecn && r.loss.is_none() && r.loss_model.is_none() {
        return Err(ModelError::Requires {
            field: Field::Ecn,
            needs: Field::Loss,
        });
    }
    if let Some(mtu) = r.mtu_bytes {
        if !(MIN_MTU_BYTES..=MAX_MTU_BYTES).contains(&mtu) {
            return Err(ModelError::OutOfRange {
                field: Field::Mtu,
                value: mtu.to_string(),
                expected: format!("an MTU in bytes from {MIN_MTU_BYTES} to {MAX_MTU_BYTES}"),
            });
        }
    }
    fraction(Field::Corrupt, r.corrupt)?;
    fraction(Field::Duplicate, r.duplicate)?;
    if let Some(d) = &r.delay {
        if d.jitter_ns > MAX_JITTER_NS {
            return Err(ModelError::OutOfRange {
                field: Field::Jitter,
                value: format!("{} ns", d.jitter_ns),
                expected: format!("at most {MAX_JITTER_NS} ns (about 18 minutes)"),
            });
        }
        if d.distribution.is_some() && d.jitter_ns == 0 {
            return Err(ModelError::Requires {
                field: Field::Distribution,
                needs: Field::Jitter,
            });
        }
        if d.correlation.is_some() && d.jitter_ns == 0 {
            return Err(ModelError::Requires {
                field: Field::DelayCorr,
                needs: Field::Jitter,
            });
        }
        fraction(Field::DelayCorr, d.correlation)?;
        if d.in_order && d.jitter_ns == 0 {
            return Err(ModelError::Requires {
                field: Field::InOrder,
                needs: Field::Jitter,
            });
        }
    }
    if r.reorder.is_some()
        && r.delay
            .as_ref()
            .is_none_or(|d| d.delay_ns == 0 && d.jitter_ns == 0)
    {
        return Err(ModelError::Requires {
            field: Field::Reorder,
            needs: Field::Delay,
        });
    }
    fraction(Field::Reorder, r.reorder)?;
    if let Some(rate) = &r.rate {
        if !(-MAX_OVERHEAD_BYTES..=MAX_OVERHEAD_BYTES).contains(&rate.overhead_bytes) {
            return Err(ModelError::OutOfRange {
                field: Field::Overhead,
                value: rate.overhead_bytes.to_string(),
                expected: format!("bytes from -{MAX_OVERHEAD_BYTES} to {MAX_OVERHEAD_BYTES}"),
            });
        }
    }
    Ok(())
}

/// A rule set the data path can hold.
pub fn rule_set(rules: &[RuleSpec]) -> Result<(), ModelError> {
    if rules.len() > MAX_RULES as usize {
        return Err(ModelError::TooManyRules {
            given: rules.len(),
            max: MAX_RULES,
        });
    }
    rules.iter().try_for_each(rule)
}

/// A link's two rule sets: each side on its own is a rule set the data path
/// can hold (each side is its own instance, with its own rule table).
pub fn link(l: &LinkRules) -> Result<(), ModelError> {
    rule_set(&l.uplink)?;
    rule_set(&l.downlink)
}
