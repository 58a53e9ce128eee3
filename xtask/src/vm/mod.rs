//! `cargo xtask vm`: the privileged test binaries (BPF_PROG_TEST_RUN,
//! network namespaces, and the fidelity tier that needs sch_fq/sch_netem)
//! inside qemu, on the Debian cloud kernels that `cargo xtask setup` unpacks
//! under `target/vm-kernels/` (docs/vm.md).
//!
//! Per kernel, one boot: [`plan`] decides what runs (the full matrix, or
//! only what differs by kernel) and the boot's time budget; [`build`] builds
//! the programs on the host; [`initramfs`] packs them with their libraries,
//! the kernel's modules, the plan and the init (src/bin/vm-init.rs) into a
//! [`cpio`] archive; [`qemu`] boots it and streams the console; [`report`]
//! turns the init's markers into the PASS/FAIL summary.
mod build;
mod cpio;
mod initramfs;
mod plan;
mod qemu;
mod report;

use std::{
    collections::BTreeSet,
    fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

pub use self::plan::VmTier;
use self::{build::Built, plan::GuestRun, report::KernelOutcome};
use crate::{
    kernels::{self, Kernel},
    setup::{self, Options as SetupOptions},
    util::{self, section, workspace_root},
};

/// The kernel series `cargo xtask setup` fetches; `--kernel all` reports a
/// missing one as a failure rather than skipping it.
const EXPECTED_SERIES: &[&str] = &["6.1", "6.12"];

#[derive(Debug)]
pub struct Options {
    /// A kernel release, a series ("6.1", "6.12") or "all".
    pub kernel: String,
    pub tier: VmTier,
    /// Per boot, from qemu's start to its power-off; `None`: the plan's
    /// budget (at least twice the runs' measured time, [`plan::budget_secs`]).
    pub timeout_secs: Option<u64>,
    pub release: bool,
    /// Passed to every test binary (filters, `--nocapture`, ...).
    pub extra: Vec<String>,
    /// Passed to `impair-bench --peers` instead of `extra`
    /// ([`Options::quick_bench`] unless `cargo xtask bench` runs it).
    pub bench_args: Vec<String>,
}

impl Options {
    /// What the bench tier gets from the test suite: proof it runs, quickly.
    pub fn quick_bench() -> Vec<String> {
        vec!["--quick".into()]
    }
}

pub fn vm(opts: &Options) -> Result<()> {
    let start = Instant::now();
    setup::setup(&SetupOptions { kernels: true })?;
    let selection = select_kernels(&opts.kernel)?;
    let plans: Vec<(Selected, Vec<GuestRun>)> = selection
        .into_iter()
        .map(|sel| {
            let version = match &sel {
                Selected::Kernel(k) => k.version.clone(),
                Selected::Missing(series) => series.clone(),
            };
            let runs = plan::plan(opts.tier, &version, &opts.extra, &opts.bench_args);
            (sel, runs)
        })
        .collect();
    let binaries: BTreeSet<plan::Binary> = plans
        .iter()
        .filter(|(sel, _)| matches!(sel, Selected::Kernel(_)))
        .flat_map(|(_, runs)| runs.iter().map(|r| r.binary))
        .collect();
    let built = build::build(&binaries, opts.release, &vm_dir().join("bin"))?;

    let mut outcomes = Vec::new();
    for (sel, runs) in &plans {
        match sel {
            Selected::Missing(series) => {
                util::warn_loudly(&format!(
                    "no {series} kernel in {}: the VM tier cannot run on it.\n\
                     Run `cargo xtask setup` (it downloads the kernels with apt-get download; \
                     see its warnings), then `cargo xtask vm` again.",
                    kernels::kernels_dir().display()
                ));
                outcomes.push(KernelOutcome::missing(series, runs));
            }
            Selected::Kernel(k) => {
                outcomes.push(run_kernel(k, runs, &built, opts.timeout_secs)?);
            }
        }
    }
    report::print_summary(&outcomes, start.elapsed());
    let bad: Vec<String> = outcomes.iter().flat_map(KernelOutcome::failures).collect();
    if !bad.is_empty() {
        bail!("the VM tier failed: {}", bad.join("; "));
    }
    Ok(())
}

enum Selected {
    Kernel(Box<Kernel>),
    Missing(String),
}

fn select_kernels(which: &str) -> Result<Vec<Selected>> {
    let available = kernels::available(); // sorted by version, ascending
    let setup_hint = format!(
        "run `cargo xtask setup` (downloads the kernels into {})",
        kernels::kernels_dir().display()
    );
    if which == "all" {
        if available.is_empty() {
            bail!("no VM kernels are unpacked: {setup_hint}, and read its warnings");
        }
        let mut out: Vec<Selected> = Vec::new();
        for series in EXPECTED_SERIES {
            if !available.iter().any(|k| k.series == *series) {
                out.push(Selected::Missing(series.to_string()));
            }
        }
        out.extend(available.into_iter().map(|k| Selected::Kernel(Box::new(k))));
        return Ok(out);
    }
    let names = || {
        available
            .iter()
            .map(|k| format!("{} (series {})", k.version, k.series))
            .collect::<Vec<_>>()
    };
    let listed = if available.is_empty() {
        "none".to_string()
    } else {
        names().join(", ")
    };
    let pick = available
        .iter()
        .rposition(|k| k.version == which)
        .or_else(|| available.iter().rposition(|k| k.series == which));
    match pick {
        Some(i) => {
            let mut available = available;
            Ok(vec![Selected::Kernel(Box::new(available.swap_remove(i)))])
        }
        None => bail!(
            "kernel {which:?} is not unpacked (available: {listed}): {setup_hint}; \
             --kernel takes a release from that list, a series (6.1, 6.12) or `all`"
        ),
    }
}

/// Staging: stripped binaries and one initramfs per kernel.
fn vm_dir() -> PathBuf {
    workspace_root().join("target").join("vm")
}

/// The console log of the last VM run on `kernel` (a release or a series,
/// as `--kernel` takes it).
pub fn console_log(kernel: &str) -> Result<PathBuf> {
    for sel in select_kernels(kernel)? {
        if let Selected::Kernel(k) = sel {
            return Ok(logs_dir().join(format!("{}.log", k.version)));
        }
    }
    bail!("kernel {kernel} is not unpacked")
}

/// The console logs of the last runs, one per kernel release.
pub fn logs_dir() -> PathBuf {
    workspace_root().join("target").join("vm-logs")
}

/// One boot: the initramfs for `runs`, qemu, the outcome.
fn run_kernel(
    k: &Kernel,
    runs: &[GuestRun],
    built: &Built,
    timeout_secs: Option<u64>,
) -> Result<KernelOutcome> {
    let label = format!("{} ({})", k.version, k.series);
    section(&format!("vm: kernel {label}"));
    let budget_secs = timeout_secs.unwrap_or_else(|| plan::budget_secs(runs));
    for run in runs {
        eprintln!(
            "will run: {} (measured {} s on a busy 2-core machine)",
            run.label(),
            run.measured_secs
        );
    }

    let dir = vm_dir().join(&k.version);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let initrd = dir.join("initrd.cpio");
    let t = Instant::now();
    let size = initramfs::build(k, built, runs, &initrd)?;
    eprintln!(
        "initramfs: {} ({:.1} MiB, {:.1} s)",
        initrd.display(),
        size as f64 / (1024.0 * 1024.0),
        t.elapsed().as_secs_f64()
    );

    fs::create_dir_all(logs_dir())?;
    let log_path = logs_dir().join(format!("{}.log", k.version));
    let budget = Duration::from_secs(budget_secs);
    let mut boot = qemu::boot(k, &initrd, &log_path, budget)?;
    // A guest that died before its init ran (a TCG kernel panic in early
    // boot, seen once in CI: enqueue_timer at 1.2 s) ran none of impair's
    // code: boot once more, saying so, and keep the first console log.
    let reached_init = |b: &qemu::Boot| {
        b.lines
            .iter()
            .any(|(_, l)| xtask::guest::Marker::Booted.fields(l).is_some())
    };
    if !reached_init(&boot) && boot.timed_out.is_none() {
        let first = log_path.with_extension("first-boot.log");
        let _ = fs::rename(&log_path, &first);
        eprintln!(
            "kernel {}: the guest died before its init ran (console log: {}); booting it once more",
            k.version,
            first.display()
        );
        boot = qemu::boot(k, &initrd, &log_path, budget)?;
    }
    eprintln!(
        "kernel {}: qemu ran {:.1} s of its {budget_secs} s budget{}; console log: {}",
        k.version,
        boot.secs,
        if boot.timed_out.is_some() {
            " and was killed (TIMEOUT)"
        } else {
            ""
        },
        log_path.display()
    );
    Ok(report::outcome(label, runs, &boot, budget_secs))
}
