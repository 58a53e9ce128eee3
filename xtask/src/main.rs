//! Project tasks: `cargo xtask <command>` (alias in .cargo/config.toml).
//!
//! - `setup`: install/check the eBPF toolchain, test tools and VM kernels;
//! - `build`: the `impair` binary with its eBPF object (never the stub);
//! - `test`: the whole test suite, or one tier of it;
//! - `clippy`: the workspace, warnings denied;
//! - `demo`: build and run `impair demo`;
//! - `vm`: the privileged test tiers inside qemu on the kernels in
//!   target/vm-kernels (docs/vm.md).
//!
//! Modules import only downwards, never in a cycle: `tasks`, `accuracy` →
//! `vm` → `setup` → `kernels` → `apt` → `util`; `tasks`, `vm` → `cargo` →
//! `util`. The guest's init (src/bin/vm-init.rs) shares only `guest`
//! (src/lib.rs) with them.
//!
//! See docs/toolchain.md for the two toolchain routes.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a developer tool: it reports progress and results on the terminal"
)]
mod accuracy;
mod apt;
mod cargo;
mod kernels;
mod layers;
mod setup;
mod tasks;
mod util;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "impair's build, setup and test tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install what is missing (apt packages, bpf-linker) and fetch the VM
    /// kernels; fast when everything is present.
    Setup {
        /// Skip downloading the VM tier's kernel images.
        #[arg(long)]
        no_kernels: bool,
    },
    /// Build the `impair` binary with its eBPF programs (IMPAIR_EBPF=require).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Run the test suite: setup, build target/debug/impair, then cargo test.
    Test {
        /// Which tests: unit (unprivileged), bpf and netns (root), vm (in qemu:
        /// only what differs by kernel), or all.
        #[arg(long, value_enum, default_value = "all")]
        tier: tasks::Tier,
        /// Kernels for the VM tier (part of `all`): all, a series (6.1, 6.12) or a release.
        #[arg(long, default_value = "all")]
        vm_kernel: String,
        /// Passed to `cargo test` as is (filters; `-- --nocapture` for the test binaries).
        #[arg(last = true)]
        extra: Vec<String>,
    },
    /// cargo clippy on the workspace, all targets, -D warnings.
    Clippy,
    /// Issue 16's soak in full: the controller tier's `soak` tests with
    /// 10,000 attach/update/detach cycles (tcx and clsact, egress and
    /// ingress, under traffic and concurrent `impair stats`) and as many
    /// updates of one long-running controller, whose RSS must stay flat.
    /// Needs root. CI runs the quick form (`cargo xtask test --tier netns`).
    Soak {
        /// Attach/update/detach cycles, and updates of the RSS test.
        #[arg(long, default_value_t = 10_000)]
        cycles: usize,
    },
    /// Issue 16's upgrades with two builds: builds `impair` a second time
    /// with the map ABI version one ahead (IMPAIR_ABI_VERSION, into
    /// target/abi-next/), then the ordinary build, and runs the controller
    /// tier's `upgrade::` tests with both (older pins, newer detaches; newer
    /// pins, older refuses). Needs root. The netns tier (`cargo xtask test
    /// --tier netns`) runs them too; this runs only them.
    Upgrade,
    /// Issue 16's libFuzzer targets (fuzz/, cargo-fuzz): every command-line
    /// value parser, profile and scenario TOML, jitter tables; each for a
    /// bounded time from the seed corpora in fuzz/corpus/ (new inputs go to
    /// target/fuzz-corpus/). Needs rustup's nightly; installs cargo-fuzz.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 30)]
        secs: u64,
    },
    /// Run the fidelity tier in the VM and regenerate docs/accuracy.md.
    Accuracy {
        /// A kernel release, a series (6.1, 6.12), or all.
        #[arg(long, default_value = "all")]
        kernel: String,
        /// Only re-render from the logs of the last VM runs (target/vm-logs).
        #[arg(long)]
        from_logs: bool,
    },
    /// The main job: set up, build, and run `impair demo` (a self-made
    /// namespace lab, impaired, measured and removed). Needs root.
    Demo {
        /// Passed to `impair demo` as is (e.g. `-- --seed 1 --json`).
        #[arg(last = true)]
        extra: Vec<String>,
    },
    /// The bpf, netns, fidelity and bench tiers inside qemu (TCG) on the Debian
    /// cloud kernels that setup unpacks (6.1: clsact fallback; 6.12: tcx).
    /// By default the full matrix; `--tier selective` is what CI runs.
    /// No root needed. See docs/vm.md.
    Vm {
        /// A kernel release (as in target/vm-kernels), a series (6.1, 6.12), or all.
        #[arg(long, default_value = "all")]
        kernel: String,
        /// Which test binaries run in the guest (all: every one, unfiltered).
        #[arg(long, value_enum, default_value = "all")]
        tier: vm::VmTier,
        /// Per boot, from qemu's start to its power-off; then qemu is killed
        /// (TIMEOUT). Default: 2.5 times what the boot's runs measured.
        #[arg(long)]
        timeout_secs: Option<u64>,
        /// Build and test the release profile.
        #[arg(long)]
        release: bool,
        /// Passed to every test binary in the guest (filters, `--nocapture`, ...).
        #[arg(last = true)]
        extra: Vec<String>,
    },
    /// Benchmarks: BPF_PROG_TEST_RUN per-path costs and rule scaling,
    /// interleaved throughput arms over the namespace lab (baseline, impair,
    /// iptables statistic), scaling over cores, and netem, tbf and htb
    /// against impair inside qemu on Linux 6.12; ratios, bootstrap intervals,
    /// SVG plots. Writes docs/benchmarks.md unless --quick. Needs root.
    Bench {
        /// Few rounds, short arms, small repeats (what CI runs); writes only
        /// target/bench, not docs/.
        #[arg(long)]
        quick: bool,
        /// Rounds of interleaved arms (default 10; 3 with --quick).
        #[arg(long)]
        rounds: Option<usize>,
        /// Skip the arms that run in qemu on Linux 6.12 (netem, tbf and htb
        /// against impair), which the host kernel cannot run.
        #[arg(long)]
        no_vm: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    util::ensure_cargo_bin_on_path();
    let result = match cli.command {
        Cmd::Setup { no_kernels } => setup::setup(&setup::Options {
            kernels: !no_kernels,
        }),
        Cmd::Build { release } => tasks::build(release).map(|bin| println!("{}", bin.display())),
        Cmd::Test {
            tier,
            vm_kernel,
            extra,
        } => tasks::test(tier, &vm_kernel, &extra),
        Cmd::Clippy => tasks::clippy(),
        Cmd::Soak { cycles } => tasks::soak(cycles),
        Cmd::Upgrade => tasks::upgrade(),
        Cmd::Fuzz { secs } => tasks::fuzz(secs),
        Cmd::Demo { extra } => tasks::demo(&extra),
        Cmd::Bench {
            quick,
            rounds,
            no_vm,
        } => tasks::bench(quick, rounds, !no_vm),
        Cmd::Accuracy { kernel, from_logs } => accuracy::accuracy(&kernel, from_logs),
        Cmd::Vm {
            kernel,
            tier,
            timeout_secs,
            release,
            extra,
        } => vm::vm(&vm::Options {
            kernel,
            tier,
            timeout_secs,
            release,
            extra,
            bench_args: vm::Options::quick_bench(),
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nxtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
