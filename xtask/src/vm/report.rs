//! From a boot's console to the PASS/FAIL summary: the init's markers frame
//! each run; libtest's own lines give the counts, the failed tests and the
//! tests' NOTE lines (a test that skips for want of a kernel feature says so).
use std::time::Duration;

use xtask::guest::Marker;

use super::{
    plan::GuestRun,
    qemu::{Boot, Lines},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail(String),
    /// The boot's budget ran out while this run was going.
    Timeout {
        budget_secs: u64,
    },
    /// Never started: the budget ran out before it.
    NotRun(String),
    /// The kernel is not unpacked.
    Missing,
}

impl Status {
    pub fn passed(&self) -> bool {
        matches!(self, Status::Pass)
    }

    pub fn word(&self) -> String {
        match self {
            Status::Pass => "PASS".into(),
            Status::Fail(why) => format!("FAIL ({why})"),
            Status::Timeout { budget_secs } => format!("TIMEOUT (budget {budget_secs} s)"),
            Status::NotRun(why) => format!("NOT RUN ({why})"),
            Status::Missing => "MISSING".into(),
        }
    }
}

pub struct RunOutcome {
    /// "bpf verifier::": the binary and its filters.
    pub label: String,
    pub status: Status,
    /// libtest's "test result:" line, shortened.
    pub counts: String,
    pub failed_tests: Vec<String>,
    /// The tests' `NOTE:` lines (skips for want of a kernel feature, ...).
    pub notes: Vec<String>,
    pub secs: Option<f64>,
}

pub struct KernelOutcome {
    pub label: String,
    pub runs: Vec<RunOutcome>,
    pub boot_secs: Option<f64>,
    pub total_secs: Option<f64>,
    pub notes: Vec<String>,
}

impl KernelOutcome {
    pub fn missing(series: &str, runs: &[GuestRun]) -> Self {
        KernelOutcome {
            label: format!("{series} (missing)"),
            runs: runs
                .iter()
                .map(|r| RunOutcome {
                    label: r.label(),
                    status: Status::Missing,
                    counts: "run `cargo xtask setup`".into(),
                    failed_tests: Vec::new(),
                    notes: Vec::new(),
                    secs: None,
                })
                .collect(),
            boot_secs: None,
            total_secs: None,
            notes: Vec::new(),
        }
    }

    /// "6.12... (6.12) netns fq::: TIMEOUT ..." for every run that did not pass.
    pub fn failures(&self) -> impl Iterator<Item = String> + '_ {
        self.runs
            .iter()
            .filter(|r| !r.status.passed())
            .map(|r| format!("{} {}: {}", self.label, r.label, r.status.word()))
    }
}

/// The failed tests libtest lists at the end of a run: the indented names
/// after the last `failures:` line (the `---- name stdout ----` headers are
/// no use: `--show-output` prints them for passing tests too).
fn failed_tests(body: &[(f64, String)]) -> Vec<String> {
    let Some(at) = body.iter().rposition(|(_, l)| l.trim_end() == "failures:") else {
        return Vec::new();
    };
    body[at + 1..]
        .iter()
        .map(|(_, l)| l)
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| l.starts_with("    ") && !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect()
}

/// The tests' `NOTE: ...` lines (tests/src/lib.rs `note()`), once each.
fn test_notes(body: &[(f64, String)]) -> Vec<String> {
    let mut notes: Vec<String> = Vec::new();
    for (_, l) in body {
        if let Some(at) = l.find("NOTE: ") {
            let note = l[at..].trim().to_string();
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
    }
    notes
}

/// libtest's counts say that no test ran ("ok. 0 passed; 0 failed; ...").
fn ran_no_test(counts: &str) -> bool {
    counts.starts_with("ok. 0 passed; 0 failed;")
}

/// Where `marker` names run `name` first.
fn marker_at(lines: &Lines, marker: Marker, name: &str) -> Option<usize> {
    lines
        .iter()
        .position(|(_, l)| marker.fields(l).is_some_and(|f| f.first() == Some(&name)))
}

pub fn outcome(label: String, runs: &[GuestRun], boot: &Boot, budget_secs: u64) -> KernelOutcome {
    let lines = &boot.lines;
    let boot_secs = lines
        .iter()
        .find(|(_, l)| Marker::Booted.fields(l).is_some())
        .map(|(t, _)| *t);
    let mut notes = Vec::new();
    for (_, l) in lines {
        if let Some(rest) = Marker::ModuleFailed.fields(l) {
            notes.push(format!("module failed to load: {}", rest.join(" ")));
        }
        if let Some(rest) = Marker::InitFailed.fields(l) {
            notes.push(format!("the init failed: {}", rest.join(" ")));
        }
    }
    if boot_secs.is_none() {
        notes.push("the guest never reached its init's boot marker (see the console log)".into());
    }
    match &boot.timed_out {
        Some(Some(name)) => notes.push(format!(
            "TIMEOUT: the budget of {budget_secs} s ran out while `{name}` was running"
        )),
        Some(None) => notes.push(format!(
            "TIMEOUT: the budget of {budget_secs} s ran out outside any test binary"
        )),
        None if !lines.iter().any(|(_, l)| Marker::Done.fields(l).is_some()) => {
            notes.push(format!(
                "qemu exited ({}) before the init finished: a guest crash or panic?",
                boot.status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "?".into())
            ))
        }
        None => {}
    }
    let runs = runs
        .iter()
        .map(|run| {
            let name = run.binary.name();
            let start = marker_at(lines, Marker::Start, name);
            let result = marker_at(lines, Marker::Result, name);
            let code = result.and_then(|i| {
                Marker::Result
                    .fields(&lines[i].1)
                    .and_then(|f| f.get(1).and_then(|c| c.parse::<i32>().ok()))
            });
            let body = match (start, result) {
                (Some(s), Some(r)) if r > s => &lines[s..r],
                (Some(s), _) => &lines[s..],
                _ => &lines[0..0],
            };
            let counts = body
                .iter()
                .rev()
                .find_map(|(_, l)| {
                    l.find("test result:")
                        .map(|i| l[i + 12..].trim().to_string())
                })
                .map(|c| c.split("; finished").next().unwrap_or(&c).to_string())
                .unwrap_or_default();
            let status = match code {
                // A filter that matches nothing passes in libtest: here it
                // would hide that the tests moved or were renamed.
                Some(0) if !run.filters.is_empty() && ran_no_test(&counts) => Status::Fail(
                    format!("no test matched the filter {}", run.filters.join(" ")),
                ),
                Some(0) => Status::Pass,
                Some(c) => Status::Fail(format!("exit {c}")),
                None if boot.timed_out.is_some() && start.is_some() => {
                    Status::Timeout { budget_secs }
                }
                None if boot.timed_out.is_some() => {
                    Status::NotRun("the boot's budget ran out before it".into())
                }
                None if start.is_some() => Status::Fail("no result: the guest died".into()),
                None => Status::Fail("did not run".into()),
            };
            let secs = match (start, result) {
                (Some(s), Some(r)) => Some(lines[r].0 - lines[s].0),
                (Some(s), None) if boot.timed_out.is_some() => Some(boot.secs - lines[s].0),
                _ => None,
            };
            RunOutcome {
                label: run.label(),
                status,
                counts,
                failed_tests: failed_tests(body),
                notes: test_notes(body),
                secs,
            }
        })
        .collect();
    KernelOutcome {
        label,
        runs,
        boot_secs,
        total_secs: Some(boot.secs),
        notes,
    }
}

pub fn print_summary(outcomes: &[KernelOutcome], total: Duration) {
    let width = outcomes
        .iter()
        .map(|o| o.label.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let run_width = outcomes
        .iter()
        .flat_map(|o| o.runs.iter().map(|r| r.label.len()))
        .max()
        .unwrap_or(3)
        .max(3);
    let result_width = outcomes
        .iter()
        .flat_map(|o| o.runs.iter().map(|r| r.status.word().len()))
        .max()
        .unwrap_or(6)
        .max(6);
    println!("\n=== vm: summary ===");
    println!(
        "{:<width$}  {:<run_width$}  {:<result_width$}  {:>7}  tests",
        "kernel", "run", "result", "time"
    );
    for o in outcomes {
        for r in &o.runs {
            let secs = r
                .secs
                .map(|s| format!("{s:.0} s"))
                .unwrap_or_else(|| "-".into());
            println!(
                "{:<width$}  {:<run_width$}  {:<result_width$}  {:>7}  {}",
                o.label,
                r.label,
                r.status.word(),
                secs,
                r.counts
            );
            for f in &r.failed_tests {
                println!("{:<width$}  {:<run_width$}    failed: {f}", "", "");
            }
            for n in &r.notes {
                println!("{:<width$}  {:<run_width$}    {n}", "", "");
            }
        }
        if let (Some(b), Some(tot)) = (o.boot_secs, o.total_secs) {
            println!(
                "{:<width$}  boot to init {b:.0} s, qemu total {tot:.0} s",
                ""
            );
        }
        for n in &o.notes {
            println!("{:<width$}  note: {n}", "");
        }
    }
    println!(
        "wall time (build, initramfs, all boots): {:.0} s",
        total.as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::plan::{plan, VmTier};

    fn lines(ls: &[&str]) -> Lines {
        ls.iter()
            .enumerate()
            .map(|(i, l)| (i as f64, l.to_string()))
            .collect()
    }

    #[test]
    fn failed_tests_come_from_the_final_list() {
        let body = lines(&[
            "---- passing stdout ----",
            "IMPAIR-FIDELITY {}",
            "failures:",
            "",
            "---- a stdout ----",
            "thread 'a' panicked",
            "",
            "failures:",
            "    a",
            "    b",
            "",
            "test result: FAILED. 1 passed; 2 failed",
        ]);
        assert_eq!(failed_tests(&body), ["a", "b"]);
        assert!(failed_tests(&body[..2]).is_empty());
    }

    #[test]
    fn a_filter_that_matches_nothing_fails() {
        let runs = plan(VmTier::Selective, "6.1", &[], &[]);
        let boot = Boot {
            lines: lines(&[
                "IMPAIR-VM-BOOTED 6.1.0 2 cpus, uptime 3.0 s",
                "IMPAIR-VM-START bpf uptime 4.0",
                "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 62 filtered out; finished in 0.00s",
                "IMPAIR-VM-RESULT bpf 0 uptime 4.1",
                "IMPAIR-VM-START netns uptime 4.2",
                "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 11 filtered out; finished in 60s",
                "IMPAIR-VM-RESULT netns 0 uptime 64.0",
                "IMPAIR-VM-DONE",
            ]),
            timed_out: None,
            status: None,
            secs: 70.0,
        };
        let o = outcome("6.1".into(), &runs, &boot, 900);
        assert_eq!(
            o.runs[0].status,
            Status::Fail("no test matched the filter verifier::".into())
        );
        assert_eq!(o.runs[1].status, Status::Pass);
    }

    #[test]
    fn a_timeout_names_the_running_binary_and_what_never_ran() {
        let runs = plan(VmTier::Selective, "6.1", &[], &[]);
        let boot = Boot {
            lines: lines(&[
                "IMPAIR-VM-BOOTED 6.1.0 2 cpus, uptime 3.0 s",
                "IMPAIR-VM-START bpf uptime 4.0",
                "test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 60 filtered out; finished in 9s",
                "IMPAIR-VM-RESULT bpf 0 uptime 14.0",
                "IMPAIR-VM-START netns uptime 14.1",
                "NOTE: tcx needs Linux 6.6: skipped",
            ]),
            timed_out: Some(Some("netns".into())),
            status: None,
            secs: 100.0,
        };
        let o = outcome("6.1 (6.1)".into(), &runs, &boot, 99);
        let words: Vec<String> = o.runs.iter().map(|r| r.status.word()).collect();
        assert_eq!(
            words,
            [
                "PASS",
                "TIMEOUT (budget 99 s)",
                "NOT RUN (the boot's budget ran out before it)"
            ]
        );
        assert_eq!(
            o.runs[0].counts,
            "ok. 2 passed; 0 failed; 0 ignored; 0 measured; 60 filtered out"
        );
        assert_eq!(o.runs[1].notes, ["NOTE: tcx needs Linux 6.6: skipped"]);
        assert!(o
            .notes
            .iter()
            .any(|n| n.contains("while `netns` was running")));
        assert_eq!(o.failures().count(), 2);
    }
}
