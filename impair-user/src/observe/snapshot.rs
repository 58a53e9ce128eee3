//! Counters read from the maps, with configured vs measured loss.
use anyhow::Result;
use impair_common::{owner_flags, Owner};
use serde::Serialize;

use crate::{
    maps::Maps,
    model::RuleView,
    statistics::{wilson_interval, Z95},
    sys,
};

#[derive(Debug, Clone, Serialize)]
pub struct RuleStats {
    pub index: u32,
    #[serde(flatten)]
    pub rule: RuleView,
    pub packets: u64,
    pub bytes: u64,
    pub passed: u64,
    pub dropped_loss: u64,
    pub dropped_mtu: u64,
    pub ecn_marked: u64,
    pub corrupted: u64,
    pub duplicated: u64,
    pub dropped_queue: u64,
    pub reordered: u64,
    pub delayed: u64,
    /// Wire bytes the rate trace delivered for this rule (0 without one).
    pub trace_bytes: u64,
    /// Wire packets matched: a GSO/GRO super-packet counts as its segments
    /// (`packets` above counts skbs).
    pub wire_packets: u64,
    /// Wire bytes matched: `bytes` plus the headers each further segment of
    /// a super-packet carries.
    pub wire_bytes: u64,
    /// Wire packets in the skbs dropped for any cause (loss, blackhole, MTU,
    /// queue limit): what the receiver misses.
    pub dropped_wire_packets: u64,
    /// Super-packets (more than one wire packet) that got one decision whole.
    pub super_packets: u64,
    /// dropped_loss / packets.
    pub measured_loss: Option<f64>,
    /// 95% Wilson score interval of the measured loss.
    pub measured_loss_ci95: Option<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OwnerView {
    pub pid: u32,
    pub alive: bool,
    pub pinned: bool,
    pub attach_mode: &'static str,
    pub label: String,
    pub seed: u64,
    pub attached_unix_ns: u64,
    /// The ifb device received traffic goes through (an ingress instance
    /// that holds packets: `engine/ifb.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifb: Option<String>,
    /// The veth pair that splits super-packets before they are decided (an
    /// egress instance whose rules decide per packet: `engine/segmenter.rs`),
    /// named by its segmenting end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segmenter: Option<String>,
}

impl OwnerView {
    pub fn new(o: &Owner) -> Self {
        Self {
            pid: o.pid,
            alive: o.flags & owner_flags::PINNED != 0
                || sys::process_alive(o.pid, o.pid_start_ticks),
            pinned: o.flags & owner_flags::PINNED != 0,
            attach_mode: if o.hooks() == owner_flags::HOOK_XDP {
                if o.flags & owner_flags::XDP_GENERIC != 0 {
                    "xdp-generic"
                } else if o.flags & owner_flags::XDP_NATIVE != 0 {
                    "xdp-native"
                } else {
                    "xdp"
                }
            } else if o.flags & owner_flags::NETLINK != 0 {
                "netlink"
            } else {
                "tcx"
            },
            label: o.label_str().to_owned(),
            seed: o.seed,
            attached_unix_ns: o.attached_unix_ns,
            ifb: crate::engine::ifb::of_owner(o),
            segmenter: crate::engine::segmenter::of_owner(o),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub interface: String,
    pub hook: &'static str,
    pub owner: OwnerView,
    /// Rule-set generation (1 for the first, +1 per live update).
    pub generation: u64,
    /// Whether the lease is current (false: the data path passes everything).
    pub lease_valid: bool,
    pub packets: u64,
    pub unmatched: u64,
    pub lease_expired: u64,
    pub errors: u64,
    /// `errors` by cause (`impair_common::ErrorCounters`); they sum to `errors`.
    pub error_causes: std::collections::BTreeMap<&'static str, u64>,
    pub rules: Vec<RuleStats>,
    /// Which traffic the instance impairs: `egress` (sent: a two-way
    /// link's uplink), `ingress` (received: its downlink) or `both` (one
    /// instance, one rule set on both hooks).
    pub direction: &'static str,
    /// The busiest destinations of the rules' latency matrices
    /// ([`super::matrix`]), and how many prefixes those hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matrix_top: Vec<super::matrix::MatrixDestStats>,
    #[serde(skip_serializing_if = "is_zero")]
    pub matrix_prefixes: usize,
    /// Where the rate trace is ([`super::trace`]), if the set has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_trace: Option<super::trace::TraceStats>,
    /// Where the delay and loss series are ([`super::series`]), if the set
    /// has any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<super::series::SeriesStats>,
    /// The record of impaired packets ([`super::capture::stats`]): present
    /// once a capture has run on the instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<super::capture::CaptureStats>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The direction an owner record's hooks impair (see [`Snapshot::direction`]).
pub fn direction_of(o: &Owner) -> &'static str {
    crate::engine::hooks_of(o).direction.name()
}

impl Snapshot {
    pub fn read(maps: &Maps, interface: &str) -> Result<Self> {
        let owner = maps.owner()?;
        let (slot, header, rules) = maps.active_rules()?;
        let g = maps.global_counters()?;
        let mut out = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let c = maps.rule_counters(slot, i as u32)?;
            // Loss as the receiver sees it: dropped by the loss process (ECN
            // marks are not losses).
            let measured = (c.packets > 0).then(|| c.dropped_loss as f64 / c.packets as f64);
            out.push(RuleStats {
                index: i as u32,
                rule: RuleView::from_rule(r),
                packets: c.packets,
                bytes: c.bytes,
                passed: c.passed,
                dropped_loss: c.dropped_loss,
                dropped_mtu: c.dropped_mtu,
                ecn_marked: c.ecn_marked,
                corrupted: c.corrupted,
                duplicated: c.duplicated,
                dropped_queue: c.dropped_queue,
                reordered: c.reordered,
                delayed: c.delayed,
                trace_bytes: c.trace_bytes,
                wire_packets: c.wire_packets,
                wire_bytes: c.wire_bytes,
                dropped_wire_packets: c.dropped_wire_packets,
                super_packets: c.super_packets,
                measured_loss: measured,
                measured_loss_ci95: (c.packets > 0)
                    .then(|| wilson_interval(c.dropped_loss, c.packets, Z95)),
            });
        }
        let (matrix_top, matrix_prefixes) = if rules
            .iter()
            .any(|r| r.flags & impair_common::rule_flags::MATRIX != 0)
        {
            super::matrix::top_dests(maps, slot, super::matrix::TOP_DESTS)?
        } else {
            (Vec::new(), 0)
        };
        let rate_trace = if rules
            .iter()
            .any(|r| r.flags & impair_common::rule_flags::RATE_TRACE != 0)
        {
            let load = rules
                .iter()
                .zip(&out)
                .filter(|(r, _)| r.flags & impair_common::rule_flags::RATE_TRACE != 0)
                .fold(super::trace::TraceLoad::default(), |l, (_, s)| {
                    super::trace::TraceLoad {
                        load_wire_bytes: l.load_wire_bytes + s.wire_bytes,
                        delivered_bytes: l.delivered_bytes + s.trace_bytes,
                        dropped_queue: l.dropped_queue + s.dropped_queue,
                    }
                });
            super::trace::read(maps, slot, load)?
        } else {
            None
        };
        Ok(Self {
            interface: interface.to_owned(),
            hook: owner.hook_name(),
            owner: OwnerView::new(&owner),
            generation: header.generation,
            lease_valid: maps.lease_deadline_ns()? >= sys::monotonic_ns(),
            packets: g.packets,
            unmatched: g.unmatched,
            lease_expired: g.lease_expired,
            errors: g.errors,
            error_causes: g.error_causes.each().into_iter().collect(),
            rules: out,
            direction: direction_of(&owner),
            matrix_top,
            matrix_prefixes,
            rate_trace,
            series: super::series::read(maps, slot)?,
            capture: super::capture::stats(maps)?,
        })
    }

    /// A few lines for people; the live view redraws them in place.
    pub fn render(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "{} {} ({})  mode {}  pid {}  seed {}  generation {}  packets {}  unmatched {}  errors {}{}{}",
            self.interface,
            self.hook,
            self.direction,
            self.owner.attach_mode,
            self.owner.pid,
            self.owner.seed,
            self.generation,
            self.packets,
            self.unmatched,
            self.errors,
            self.error_causes_text(),
            if self.lease_valid {
                ""
            } else {
                "  LEASE EXPIRED: passing all traffic"
            }
        )];
        for r in &self.rules {
            let mut extra = String::new();
            for (name, v) in [
                ("mtu-dropped", r.dropped_mtu),
                ("ecn-marked", r.ecn_marked),
                ("corrupted", r.corrupted),
                ("duplicated", r.duplicated),
                ("queue-dropped", r.dropped_queue),
                ("reordered", r.reordered),
                ("delayed", r.delayed),
                ("super-packets decided whole", r.super_packets),
            ] {
                if v > 0 {
                    extra.push_str(&format!("  {name} {v}"));
                }
            }
            let measured = match (r.measured_loss, r.measured_loss_ci95) {
                (Some(m), Some((lo, hi))) => format!(
                    "measured {} (95% {}..{})",
                    crate::model::fmt_percent(m),
                    crate::model::fmt_percent(lo),
                    crate::model::fmt_percent(hi)
                ),
                _ => "measured -".into(),
            };
            lines.push(format!(
                "  rule {} [{}] {}  packets {}  bytes {}  dropped {}{extra}  {}",
                r.index,
                r.rule.matches,
                r.rule.impairments,
                r.packets,
                r.bytes,
                r.dropped_loss,
                measured
            ));
            // The line above counts skbs; a GSO/GRO super-packet is many wire packets.
            lines.push(format!(
                "    wire packets {}  wire bytes {}  wire packets dropped {}  (packets above are skbs)",
                r.wire_packets, r.wire_bytes, r.dropped_wire_packets
            ));
        }
        lines.extend(super::matrix::render(
            &self.matrix_top,
            self.matrix_prefixes,
        ));
        if let Some(t) = &self.rate_trace {
            lines.push(super::trace::render(t));
        }
        lines.extend(self.series.iter().map(super::series::render));
        if let Some(c) = &self.capture {
            lines.push(super::capture::render(c));
        }
        lines
    }
}

impl Snapshot {
    /// ` (clone-redirect 1, ...)`: the causes of errors, if there were any.
    fn error_causes_text(&self) -> String {
        let seen: Vec<String> = self
            .error_causes
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(name, v)| format!("{} {v}", name.replace('_', "-")))
            .collect();
        if seen.is_empty() {
            String::new()
        } else {
            format!(" ({})", seen.join(", "))
        }
    }

    /// Packet and bit rates since `before`, `dt` earlier, per rule.
    pub fn rates_line(&self, before: &Snapshot, dt: std::time::Duration) -> String {
        let secs = dt.as_secs_f64().max(1e-3);
        let mut parts = vec![format!(
            "  rates: {:.0} pkt/s",
            self.packets.saturating_sub(before.packets) as f64 / secs
        )];
        for r in &self.rules {
            let Some(o) = before.rules.iter().find(|o| o.index == r.index) else {
                continue;
            };
            let pps = r.packets.saturating_sub(o.packets) as f64 / secs;
            let bps = r.bytes.saturating_sub(o.bytes) as f64 * 8.0 / secs;
            let dps = r.dropped_loss.saturating_sub(o.dropped_loss) as f64 / secs;
            parts.push(format!(
                "rule {} {:.0} pkt/s {} dropped {:.0}/s",
                r.index,
                pps,
                crate::model::fmt_rate_bps(bps as u64),
                dps
            ));
        }
        parts.join("  ")
    }
}

/// `attached_unix_ns` as UTC `YYYY-MM-DD HH:MM:SS`.
pub fn fmt_unix_time(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// An age in seconds as `42s`, `12m`, `3h05m` or `2d04h`.
pub fn fmt_age_secs(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_ages_format() {
        assert_eq!(fmt_unix_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            fmt_unix_time(1_795_000_000 * 1_000_000_000),
            "2026-11-18 11:06:40 UTC"
        );
        assert_eq!(
            fmt_unix_time(951_782_400 * 1_000_000_000),
            "2000-02-29 00:00:00 UTC"
        );
        assert_eq!(fmt_age_secs(42), "42s");
        assert_eq!(fmt_age_secs(3 * 3600 + 5 * 60), "3h05m");
        assert_eq!(fmt_age_secs(2 * 86_400 + 4 * 3600), "2d04h");
    }

    #[test]
    fn directions_follow_the_hooks() {
        let with = |flags| Owner {
            flags,
            ..Default::default()
        };
        let o = with(owner_flags::HOOK_TC_EGRESS);
        assert_eq!(direction_of(&o), "egress");
        let o = with(owner_flags::HOOK_TC_INGRESS | owner_flags::NETLINK);
        assert_eq!(direction_of(&o), "ingress");
        let o = with(owner_flags::HOOK_XDP);
        assert_eq!(direction_of(&o), "ingress");
        let o = with(owner_flags::HOOK_TC_EGRESS | owner_flags::HOOK_XDP);
        assert_eq!(direction_of(&o), "both");
    }
}
