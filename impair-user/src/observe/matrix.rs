//! Per-destination counters of a running latency matrix (`impair stats`):
//! the destinations that saw the most packets, with what their entry does
//! and what it dropped.
use anyhow::Result;
use impair_common::{matrix::matrix_flags, prob};
use serde::Serialize;

use crate::{
    maps::Maps,
    model::{fmt_duration_ns, fmt_percent, fmt_rate_bps},
};

/// How many destinations `impair stats` shows per instance.
pub const TOP_DESTS: usize = 10;

#[derive(Debug, Clone, Serialize)]
pub struct MatrixDestStats {
    /// The rule (position in its set) whose matrix holds the prefix.
    pub rule: u32,
    pub prefix: String,
    /// What the entry does, as `impair status` words it.
    pub impairments: String,
    pub packets: u64,
    pub bytes: u64,
    pub dropped_loss: u64,
    pub dropped_queue: u64,
}

/// The busiest `n` destinations of `slot`'s matrices (most packets first,
/// then prefix order), and how many prefixes the matrices hold.
pub fn top_dests(maps: &Maps, slot: u32, n: usize) -> Result<(Vec<MatrixDestStats>, usize)> {
    let mut all = maps.matrix_dests(slot)?;
    let total = all.len();
    all.sort_by(|a, b| {
        b.entry
            .packets
            .cmp(&a.entry.packets)
            .then(a.rule.cmp(&b.rule))
            .then(a.prefix.cmp(&b.prefix))
    });
    let top = all
        .into_iter()
        .take(n)
        .map(|d| {
            let e = &d.entry;
            let mut what = Vec::new();
            if e.flags & matrix_flags::DELAY != 0 {
                let mut t = format!("delay {}", fmt_duration_ns(e.delay_ns));
                if e.jitter_ns != 0 {
                    t += &format!(" jitter {}", fmt_duration_ns(e.jitter_ns));
                }
                what.push(t);
            }
            if e.flags & matrix_flags::LOSS != 0 {
                what.push(format!(
                    "loss {}",
                    fmt_percent(prob::to_fraction(e.loss_u32))
                ));
            }
            if e.flags & matrix_flags::RATE != 0 && e.rate_ps_per_byte != 0 {
                let bps = (8e12 / e.rate_ps_per_byte as f64).round() as u64;
                what.push(format!("rate {}", fmt_rate_bps(bps)));
            }
            MatrixDestStats {
                rule: d.rule,
                prefix: d.prefix.to_string(),
                impairments: if what.is_empty() {
                    "none".into()
                } else {
                    what.join(" ")
                },
                packets: e.packets,
                bytes: e.bytes,
                dropped_loss: e.dropped_loss,
                dropped_queue: e.dropped_queue,
            }
        })
        .collect();
    Ok((top, total))
}

/// The lines `impair stats` prints under the rules.
pub fn render(top: &[MatrixDestStats], total: usize) -> Vec<String> {
    if total == 0 {
        return Vec::new();
    }
    let mut lines = vec![format!(
        "  matrix: {total} prefixes; the {} busiest:",
        top.len()
    )];
    for d in top {
        lines.push(format!(
            "    rule {} dest {} [{}]  packets {}  bytes {}  dropped {}  queue-dropped {}",
            d.rule, d.prefix, d.impairments, d.packets, d.bytes, d.dropped_loss, d.dropped_queue
        ));
    }
    lines
}
