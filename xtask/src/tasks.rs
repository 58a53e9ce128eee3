//! `build`, `test`, `soak`, `clippy`, `demo` and `bench`: cargo with the eBPF object
//! required, and the VM tier for `test`.
use std::{path::PathBuf, process::Command, time::Instant};

use anyhow::{bail, Context as _, Result};
use clap::ValueEnum;

use crate::{
    cargo::{cargo_require, target_dir, BENCH_PACKAGE, EXCLUDE_EBPF},
    setup::{self, Options},
    util::{run_timed, section, workspace_root},
    vm,
};

pub fn build(release: bool) -> Result<PathBuf> {
    setup::setup(&Options { kernels: false })?;
    section(&format!(
        "build: impair ({})",
        if release { "release" } else { "debug" }
    ));
    let mut cmd = cargo_require();
    cmd.args(["build", "--bin", "impair"]);
    if release {
        cmd.arg("--release");
    }
    run_timed(&mut cmd)?;
    let bin = target_dir()
        .join(if release { "release" } else { "debug" })
        .join("impair");
    if !bin.is_file() {
        bail!("cargo build succeeded but {} does not exist", bin.display());
    }
    Ok(bin)
}

/// The VM tier on `kernel` ("all", a series or a release): one boot per
/// kernel that runs only what differs by kernel (`vm::VmTier::Selective`:
/// the verifier everywhere, the clsact fallback on 6.1, sch_fq, fidelity
/// and the benchmark's peers on 6.12), each within its own budget. The
/// fidelity tier on 6.1 is run by `cargo xtask accuracy`: its fq holds a
/// throttled flow until its earliest packet is due, which shifts heavy-tailed
/// jitter and delays some reordered packets (docs/accuracy.md), so it is
/// reported, not gated on. The full matrix is `cargo xtask vm`.
fn run_vm(kernel: &str, extra: &[String]) -> Result<()> {
    vm::vm(&vm::Options {
        kernel: kernel.to_owned(),
        tier: vm::VmTier::Selective,
        timeout_secs: None,
        release: false,
        extra: extra.to_vec(),
        bench_args: vm::Options::quick_bench(),
    })
}

/// Builds the binary and runs `impair demo` with `extra` arguments.
pub fn demo(extra: &[String]) -> Result<()> {
    let bin = build(false)?;
    section("impair demo");
    let status = Command::new(&bin)
        .arg("demo")
        .args(extra)
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    if !status.success() {
        bail!("impair demo failed ({status})");
    }
    Ok(())
}

/// `cargo xtask bench`: builds `impair-bench` (release, with the eBPF
/// object) and runs it; without `--quick` it rewrites docs/benchmarks.md and
/// docs/bench/*.svg. With `vm`, it first runs `impair-bench --peers` in qemu
/// on Linux 6.12 (netem, tbf and htb, which the host kernel lacks) and
/// renders those results too; a failed VM run is reported after the host run.
pub fn bench(quick: bool, rounds: Option<usize>, vm: bool) -> Result<()> {
    if !crate::util::is_root() {
        bail!("benchmarks load eBPF programs and create network namespaces: run as root");
    }
    // `vm::vm` sets up the VM kernels itself when it runs.
    setup::setup(&Options { kernels: false })?;
    let mut peers = None;
    let mut vm_result = Ok(());
    if vm {
        let mut bench_args: Vec<String> = Vec::new();
        if quick {
            bench_args.push("--quick".into());
        }
        if let Some(r) = rounds {
            bench_args.extend(["--rounds".into(), r.to_string()]);
        }
        vm_result = vm::vm(&vm::Options {
            kernel: PEERS_KERNEL.into(),
            tier: vm::VmTier::Bench,
            // Full rounds take longer than the quick run the plan's budget
            // is measured on: the 1,200 s they always had.
            timeout_secs: (!quick).then_some(1200),
            release: true,
            extra: Vec::new(),
            bench_args,
        });
        match &vm_result {
            Ok(()) => peers = Some(vm::console_log(PEERS_KERNEL)?),
            Err(e) => crate::util::warn_loudly(&format!(
                "the VM benchmark (netem, tbf, htb) failed: {e:#}; the host benchmark runs \
                 without it and this command fails at the end"
            )),
        }
    }
    section("bench: build impair-bench (release)");
    run_timed(cargo_require().args([
        "build",
        "--release",
        "-p",
        BENCH_PACKAGE,
        "--bin",
        "impair-bench",
    ]))?;
    let bin = target_dir().join("release/impair-bench");
    section(if quick { "bench --quick" } else { "bench" });
    let mut cmd = Command::new(&bin);
    cmd.current_dir(workspace_root())
        .args(["--out", &target_dir().join("bench").to_string_lossy()]);
    if quick {
        cmd.arg("--quick");
    } else {
        cmd.args(["--docs", "docs/benchmarks.md"]);
    }
    if let Some(r) = rounds {
        cmd.args(["--rounds", &r.to_string()]);
    }
    if let Some(log) = &peers {
        cmd.arg("--peers-from").arg(log);
    }
    let status = cmd
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    if !status.success() {
        bail!("impair-bench failed ({status})");
    }
    vm_result.context("the VM benchmark failed (see above)")
}

/// The kernel `cargo xtask bench` measures netem, tbf and htb on.
const PEERS_KERNEL: &str = "6.12";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Tier {
    /// Unit tests of every crate but impair-tests (no privileges).
    Unit,
    /// BPF_PROG_TEST_RUN: the programs run in the kernel on crafted frames,
    /// at every hook (root; tests/tests/bpf.rs).
    Bpf,
    /// Network-namespace tests: veth pairs, the real binary, real traffic
    /// (root; tests/tests/{netns,controller,sweep}.rs).
    Netns,
    /// Inside qemu on the Debian 6.1 and 6.12 kernels, only what differs by
    /// kernel: the verifier, the clsact fallback (6.1), sch_fq, the fidelity
    /// tier and netem/tbf/htb (6.12). `cargo xtask vm` runs the full matrix.
    Vm,
    /// Everything above.
    All,
}

impl Tier {
    fn name(self) -> &'static str {
        match self {
            Tier::Unit => "unit",
            Tier::Bpf => "bpf",
            Tier::Netns => "netns",
            Tier::All => "all",
            Tier::Vm => "vm",
        }
    }

    fn privileged(self) -> bool {
        !matches!(self, Tier::Unit)
    }

    fn cargo_args(self) -> Vec<&'static str> {
        // Run every test binary even after a failure, so one run shows them all.
        let mut args = vec!["test", "--no-fail-fast"];
        match self {
            Tier::Unit => {
                args.extend(["--workspace", "--exclude", "impair-tests"]);
                args.extend(EXCLUDE_EBPF);
            }
            Tier::Bpf => args.extend(["-p", "impair-tests", "--test", "bpf"]),
            Tier::Netns => args.extend([
                "-p",
                "impair-tests",
                "--test",
                "netns",
                "--test",
                "controller",
                "--test",
                "sweep",
                "--test",
                "agent",
            ]),
            Tier::All | Tier::Vm => {
                args.push("--workspace");
                args.extend(EXCLUDE_EBPF);
            }
        }
        args
    }
}

pub fn test(tier: Tier, vm_kernel: &str, extra: &[String]) -> Result<()> {
    if tier == Tier::Vm {
        return run_vm(vm_kernel, extra);
    }
    let start = Instant::now();
    if tier.privileged() && !crate::util::is_root() {
        bail!(
            "the {} tier loads eBPF programs and creates network namespaces: it needs \
             root. Run it as root (e.g. `sudo -E env \"PATH=$PATH\" cargo xtask test`), or run \
             `cargo xtask test --tier unit` for the unprivileged tests only",
            tier.name()
        );
    }
    // No tier needs the VM kernels yet; a `vm` tier will set kernels: true.
    setup::setup(&Options { kernels: false })?;

    section("test: build the impair binary (the tests run target/debug/impair)");
    // The controller tier's upgrade tests also run a second build one map
    // ABI version ahead; it is built first, so the ordinary one is last.
    let next_abi = if matches!(tier, Tier::Netns | Tier::All) {
        Some(build_next_abi()?)
    } else {
        run_timed(cargo_require().args(["build", "--bin", "impair"]))?;
        None
    };

    section(&format!("test: tier {}", tier.name()));
    let mut cmd = cargo_require();
    cmd.args(tier.cargo_args()).args(extra);
    if let Some(bin) = &next_abi {
        cmd.env_remove(ABI_VERSION_ENV).env(NEXT_ABI_BIN_ENV, bin);
    }
    run_timed(&mut cmd)?;
    if tier == Tier::All {
        // The benchmarks' quick mode: it proves they run; numbers from a
        // busy CI machine are not the ones docs/benchmarks.md reports.
        // The VM tier below runs the peers benchmark (--quick) on 6.12,
        // and only what differs by kernel (`cargo xtask vm` runs it all).
        bench(true, None, false)?;
        // Issue 16: every libFuzzer target for a bounded time (the full
        // form is `cargo xtask fuzz --secs N`).
        if has_nightly() {
            fuzz(FUZZ_SECS_IN_TEST)?;
        } else {
            eprintln!(
                "\n######## NOTE: no rustup nightly toolchain: the libFuzzer targets (fuzz/) did NOT \
                 run; their proptest forms ran in the unit tier. `rustup toolchain install nightly` \
                 and `cargo xtask fuzz` run them\n"
            );
        }
        run_vm(vm_kernel, &[])?;
    }
    eprintln!(
        "\nxtask test --tier {}: passed in {:.1} s",
        tier.name(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Issue 16's soak: builds target/debug/impair and runs the controller
/// tier's `soak` tests with `cycles` attach/update/detach cycles and as many
/// updates of one controller (tests/tests/controller/soak.rs), one test at a
/// time so the RSS samples are not shared with the cycles' load.
pub fn soak(cycles: usize) -> Result<()> {
    let start = Instant::now();
    if !crate::util::is_root() {
        bail!(
            "the soak attaches BPF programs in network namespaces: it needs root \
             (e.g. `sudo -E env \"PATH=$PATH\" cargo xtask soak`)"
        );
    }
    setup::setup(&Options { kernels: false })?;
    section("soak: build the impair binary (the tests run target/debug/impair)");
    run_timed(cargo_require().args(["build", "--bin", "impair"]))?;
    section(&format!("soak: {cycles} cycles, {cycles} updates"));
    run_timed(
        cargo_require()
            .args([
                "test",
                "-p",
                "impair-tests",
                "--test",
                "controller",
                "soak::",
            ])
            .args(["--", "--nocapture", "--test-threads", "1"])
            .env("IMPAIR_SOAK_CYCLES", cycles.to_string())
            .env("IMPAIR_SOAK_UPDATES", cycles.to_string()),
    )?;
    eprintln!(
        "\nxtask soak --cycles {cycles}: passed in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What names the map ABI version at build time (impair-common/src/abi.rs).
const ABI_VERSION_ENV: &str = "IMPAIR_ABI_VERSION";
/// What tells the controller tier's `upgrade::` tests where the second
/// build is.
const NEXT_ABI_BIN_ENV: &str = "IMPAIR_NEXT_ABI_BIN";

/// Builds `impair` with the map ABI version one ahead of this tree's into
/// target/abi-next/impair, then the ordinary build again, and returns the
/// first. Both share target/: `IMPAIR_ABI_VERSION` recompiles impair-common
/// and what depends on it (rustc tracks the variable), and the second build
/// recompiles them back; the dependencies and the eBPF object (which does
/// not read the version) stay built, so the pair costs two recompiles of
/// the workspace's own host crates (about 4 s each on the CI machine).
fn build_next_abi() -> Result<PathBuf> {
    let next = impair_common::ABI_VERSION + 1;
    section(&format!(
        "build: impair with map ABI version {next} (the upgrade tests' newer build)"
    ));
    run_timed(
        cargo_require()
            .args(["build", "--bin", "impair"])
            .env(ABI_VERSION_ENV, next.to_string()),
    )?;
    let dir = target_dir().join("abi-next");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let next_bin = dir.join("impair");
    std::fs::copy(target_dir().join("debug").join("impair"), &next_bin)
        .with_context(|| format!("copying the second build to {}", next_bin.display()))?;
    section(&format!(
        "build: impair with map ABI version {}",
        impair_common::ABI_VERSION
    ));
    run_timed(
        cargo_require()
            .args(["build", "--bin", "impair"])
            .env_remove(ABI_VERSION_ENV),
    )?;
    Ok(next_bin)
}

/// Issue 16's upgrades with two builds (see `Cmd::Upgrade`); the netns
/// tier runs them too.
pub fn upgrade() -> Result<()> {
    let start = Instant::now();
    if !crate::util::is_root() {
        bail!(
            "the upgrade tests pin instances in network namespaces: they need root \
             (e.g. `sudo -E env \"PATH=$PATH\" cargo xtask upgrade`)"
        );
    }
    setup::setup(&Options { kernels: false })?;
    let next_bin = build_next_abi()?;
    section("upgrade: controller tier upgrade:: with both builds");
    run_timed(
        cargo_require()
            .args([
                "test",
                "-p",
                "impair-tests",
                "--test",
                "controller",
                "upgrade::",
            ])
            .args(["--", "--nocapture"])
            .env_remove(ABI_VERSION_ENV)
            .env(NEXT_ABI_BIN_ENV, &next_bin),
    )?;
    eprintln!(
        "\nxtask upgrade: passed in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The libFuzzer targets of fuzz/Cargo.toml.
const FUZZ_TARGETS: [&str; 3] = ["value_parsers", "profile_toml", "jitter_tables"];
/// The cargo-fuzz `cargo xtask fuzz` installs when it is missing.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Runs each libFuzzer target for `secs` seconds (see `Cmd::Fuzz`).
/// How long `cargo xtask test` runs each fuzz target.
const FUZZ_SECS_IN_TEST: u64 = 15;

/// Whether rustup has a nightly toolchain (cargo fuzz needs -Zsanitizer).
fn has_nightly() -> bool {
    Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn fuzz(secs: u64) -> Result<()> {
    let start = Instant::now();
    if !has_nightly() {
        bail!(
            "cargo fuzz needs rustup's nightly toolchain (-Zsanitizer): `rustup toolchain install \
             nightly`; without it the proptest form (impair-user/tests/fuzz_inputs.rs, unit tier) \
             is what runs"
        );
    }
    let has_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_fuzz {
        section(&format!("fuzz: install cargo-fuzz {CARGO_FUZZ_VERSION}"));
        run_timed(Command::new("cargo").args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ]))?;
    }
    let root = workspace_root();
    let mut failed = Vec::new();
    for t in FUZZ_TARGETS {
        section(&format!("fuzz: {t} for {secs} s"));
        let fresh = target_dir().join("fuzz-corpus").join(t);
        std::fs::create_dir_all(&fresh).with_context(|| format!("creating {}", fresh.display()))?;
        let run = run_timed(
            Command::new("cargo")
                .current_dir(&root)
                // The data path is not what these targets fuzz.
                .env("IMPAIR_EBPF", "stub")
                .args(["+nightly", "fuzz", "run", t])
                .arg(&fresh)
                .arg(root.join("fuzz").join("corpus").join(t))
                // Inputs that once failed (each fixed), kept to stay fixed.
                .args(Some(root.join("fuzz").join("regressions").join(t)).filter(|d| d.is_dir()))
                .args(["--", &format!("-max_total_time={secs}")]),
        );
        // Every target runs, whatever an earlier one found.
        if let Err(e) = run {
            eprintln!("xtask: fuzz target {t} failed (its input is in fuzz/artifacts/{t}/): {e:#}");
            failed.push(t);
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzz targets that found a failing input: {} (see above; fuzz/artifacts/ keeps the inputs)",
            failed.join(", ")
        );
    }
    eprintln!(
        "\nxtask fuzz: {} targets, {secs} s each, no failure, in {:.1} s",
        FUZZ_TARGETS.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

pub fn clippy() -> Result<()> {
    setup::setup(&Options { kernels: false })?;
    section("clippy: workspace (host crates), all targets, -D warnings");
    // The eBPF crate itself is not linted here (it would need the bpf target).
    run_timed(
        cargo_require()
            .args(["clippy", "--workspace"])
            .args(EXCLUDE_EBPF)
            .args(["--all-targets", "--", "-D", "warnings"]),
    )
}
