//! The per-path costs from before the issue-18 work
//! (`baselines/before-issue-18.json`, fixed data compiled in) and the
//! report's "Before and after" section: a table, a grouped bar chart and the
//! rules curve's earlier points.
#[allow(clippy::wildcard_imports)]
use crate::*;
use impair_tools::svg::{BarSeries, GroupedBars};
use std::collections::BTreeMap;

/// The baseline file, as checked in.
const BEFORE_JSON: &str = include_str!("../baselines/before-issue-18.json");

#[derive(serde::Deserialize)]
pub(crate) struct Baseline {
    pub(crate) sources: BTreeMap<String, String>,
    pub(crate) noise_ns: String,
    /// The CPU model the before column was measured on (a prefix of
    /// /proc/cpuinfo's model name).
    pub(crate) machine: String,
    pub(crate) paths: Vec<BeforePath>,
    pub(crate) rules: BeforeRules,
    pub(crate) changes: Vec<String>,
    pub(crate) verifier: String,
}

#[derive(serde::Deserialize)]
pub(crate) struct BeforePath {
    /// A `Micro::case` of this run.
    pub(crate) path: String,
    pub(crate) before_ns: Option<f64>,
    #[serde(default)]
    pub(crate) source: Option<String>,
    /// The issue's own figure, where it gives one.
    #[serde(default)]
    pub(crate) as_filed_ns: Option<f64>,
    #[serde(default)]
    pub(crate) note: Option<String>,
}

#[derive(serde::Deserialize)]
pub(crate) struct BeforeRules {
    pub(crate) before: RulePoints,
    pub(crate) as_filed: RulePoints,
}

#[derive(serde::Deserialize)]
pub(crate) struct RulePoints {
    pub(crate) source: String,
    pub(crate) points: Vec<(usize, f64)>,
}

/// The checked-in baseline; a malformed file fails the unit test below.
pub(crate) fn baseline() -> Result<Baseline> {
    serde_json::from_str(BEFORE_JSON).context("impair-bench/baselines/before-issue-18.json")
}

/// This run's ns per packet for `case`, if it ran.
fn after(r: &Report, case: &str) -> Option<f64> {
    r.micro
        .iter()
        .find(|x| x.case == case)
        .map(|x| x.ns_per_packet)
}

/// The target a path's bar chart marks (issue 18), if it has one.
pub(crate) fn path_target_ns(case: &str) -> Option<f64> {
    match case {
        "unmatched (1 rule)" => Some(50.0),
        "matched, no impairment" | "loss 1%" => Some(60.0),
        c if c.starts_with("full:") => Some(100.0),
        _ => None,
    }
}

/// The "Before and after" section's markdown.
pub(crate) fn before_after_markdown(m: &mut String, r: &Report, b: &Baseline) {
    let _ = writeln!(m, "## Before and after issue 18 (per-path cost)\n");
    let _ = writeln!(m, "\"Before\" is fixed data checked in with the generator (`impair-bench/baselines/before-issue-18.json`); \"after\" is this run's BPF_PROG_TEST_RUN table above. Sources of the fixed columns:\n");
    for (id, what) in &b.sources {
        let _ = writeln!(m, "- `{id}`: {what}");
    }
    let _ = writeln!(m, "\nThe two measurements differ in method: the before column is the lowest of several runs on a loaded machine, the after column one run's median (of five calls) on the machine this report names. {} Differences smaller than that are not changes.\n", b.noise_ns);
    if !r.run.machine.starts_with(&b.machine) {
        let _ = writeln!(m, "**Different machines.** The before column was measured on an {} VM; this run's CPU is {}. The columns compare CPUs as well as code: only this run's column, its floors and its targets speak for this commit.\n", b.machine, r.run.machine);
    }
    let _ = writeln!(
        m,
        "| path | before ns | source | issue 18 as filed, ns | after ns (this run) | change |\n|---|---|---|---|---|---|"
    );
    for p in &b.paths {
        let now = after(r, &p.path);
        let before = p.before_ns.map_or_else(
            || format!("— ({})", p.note.as_deref().unwrap_or("not measured")),
            |v| format!("{v:.0}"),
        );
        let change = match (p.before_ns, now) {
            (Some(a), Some(n)) => format!("{:+.0} ns ({:+.0}%)", n - a, (n / a - 1.0) * 100.0),
            _ => "—".to_owned(),
        };
        let _ = writeln!(
            m,
            "| {} | {before} | {} | {} | {} | {change} |",
            p.path,
            p.source
                .as_deref()
                .map_or("—".to_owned(), |s| format!("`{s}`")),
            p.as_filed_ns.map_or("—".to_owned(), |v| format!("{v:.0}")),
            now.map_or("not run".to_owned(), |v| format!("{v:.1}")),
        );
    }
    let rules: Vec<&Micro> = r.micro.iter().filter(|x| x.case == "rules").collect();
    let ends = |pts: &[(usize, f64)]| match (pts.first(), pts.last()) {
        (Some(a), Some(z)) => format!("{:.0} → {:.0}", a.1, z.1),
        _ => "—".to_owned(),
    };
    if let (Some(a), Some(z)) = (rules.first(), rules.last()) {
        let _ = writeln!(
            m,
            "| {} → {} rules, last matches | {} | `{}` | {} | {:.1} → {:.1} | |",
            a.rules,
            z.rules,
            ends(&b.rules.before.points),
            b.rules.before.source,
            ends(&b.rules.as_filed.points),
            a.ns_per_packet,
            z.ns_per_packet
        );
    }
    let new: Vec<&str> = r
        .micro
        .iter()
        .filter(|x| {
            x.case.starts_with("tc ingress: ")
                || x.case.starts_with("XDP: ")
                || x.case == "tc egress: blackhole"
        })
        .map(|x| x.case.as_str())
        .collect();
    if !new.is_empty() {
        let _ = writeln!(m, "\nThe blackhole and receive-hook paths ({}) have no before column: the benchmark did not time them before issue 18.", new.join(", "));
    }
    let _ = writeln!(
        m,
        "\n![before and after, ns per packet](bench/before-after.svg)\n"
    );
    let _ = writeln!(m, "What changed in the data path between `0f4bbdd` and the after binary (fixed facts, from the issue-18 commits):\n");
    for c in &b.changes {
        let _ = writeln!(m, "- {c}");
    }
    let _ = writeln!(
        m,
        "\n{} (fixed facts: the VM tier measures them, not this run.)\n",
        b.verifier
    );
}

/// The grouped bar chart: before (fixed), as filed (fixed) and this run.
pub(crate) fn before_after_svg(r: &Report, b: &Baseline) -> String {
    let paths: Vec<&BeforePath> = b.paths.iter().collect();
    GroupedBars {
        title: "impair_egress ns per packet before and after issue 18 (BPF_PROG_TEST_RUN)".into(),
        x_label: "ns per packet (red: the issue's target)".into(),
        categories: paths.iter().map(|p| p.path.clone()).collect(),
        series: vec![
            BarSeries {
                name: "issue 18 as filed".into(),
                values: paths.iter().map(|p| p.as_filed_ns).collect(),
                color: "#d0d0d0",
            },
            BarSeries {
                name: "before (0f4bbdd)".into(),
                values: paths.iter().map(|p| p.before_ns).collect(),
                color: "#8c8c8c",
            },
            BarSeries {
                name: "after (this run)".into(),
                values: paths.iter().map(|p| after(r, &p.path)).collect(),
                color: "#1f6feb",
            },
        ],
        marks: paths.iter().map(|p| path_target_ns(&p.path)).collect(),
        mark_label: "target".into(),
    }
    .render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_parses_and_names_this_runs_paths() {
        let b = baseline().unwrap();
        assert!(b.paths.iter().any(|p| p.before_ns.is_some()));
        for p in &b.paths {
            if let Some(s) = &p.source {
                assert!(b.sources.contains_key(s), "{}: unknown source {s}", p.path);
            }
            assert!(
                p.before_ns.is_some() || p.note.is_some(),
                "{}: no number and no note",
                p.path
            );
        }
        // Every path is one this benchmark times (a case name in micro.rs),
        // or its row would read "not run" forever.
        let micro = include_str!("micro.rs");
        for p in &b.paths {
            assert!(
                micro.contains(&format!("\"{}\"", p.path)),
                "{}: not a case of micro.rs",
                p.path
            );
        }
        for s in [&b.rules.before.source, &b.rules.as_filed.source] {
            assert!(b.sources.contains_key(s), "rules: unknown source {s}");
        }
    }
}
