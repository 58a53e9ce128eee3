//! What the guest runs on each kernel, and how long a boot may take.
//!
//! Emulation (TCG) is slow: a test binary that takes seconds on the host takes
//! minutes in the guest. So `cargo xtask test` (CI) runs in the VM only what
//! differs by kernel ([`VmTier::Selective`]); the host tiers cover the rest.
//! The full matrix (every binary, every test, every kernel) stays available
//! as `cargo xtask vm` (`--tier all`, the default).
//!
//! The selective plan names libtest filters: the test binaries group the
//! tests that the VM must run in modules named by why (tests/tests/*.rs):
//! - `verifier` (bpf): every program loaded at every hook, with the
//!   instruction-count guards: each kernel's verifier decides;
//! - `clsact` (netns, controller): the netlink clsact attach path and its
//!   lifecycle, which `--attach-mode auto` uses before Linux 6.6 (no tcx);
//! - `fq` (netns, controller): anything that needs sch_fq (delay, EDT rate,
//!   fq installed and removed), which the host kernel lacks.
use clap::ValueEnum;

/// Which test binaries run in the guest (`cargo xtask vm --tier`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VmTier {
    /// BPF_PROG_TEST_RUN: the programs run in the guest kernel on crafted
    /// frames, at every hook (tests/tests/bpf.rs).
    Bpf,
    /// Network namespaces: veth labs, the real `impair` binary, real traffic
    /// (tests/tests/netns.rs and controller.rs).
    Netns,
    /// Delay, jitter, reordering and rate at the receiver, side by side with
    /// netem and tbf (tests/tests/fidelity.rs: `#[ignore]`d on hosts without
    /// sch_fq/sch_netem; run here with `--include-ignored`).
    Fidelity,
    /// `impair-bench --peers`: impair against netem, tbf and htb, which the
    /// host kernel lacks (ratios only: the guest CPU is emulated).
    Bench,
    /// The full matrix: every binary above, unfiltered, on every kernel (the
    /// benchmark in its `--quick` mode unless `cargo xtask bench` asks for more).
    All,
    /// What CI runs (`cargo xtask test`): only what differs by kernel. Every
    /// kernel: `bpf verifier::`. Before tcx (6.1): `netns clsact::` and
    /// `controller clsact::`. With tcx (6.12): `netns fq::`, `controller
    /// fq::`, all of fidelity and the benchmark's peers (quick).
    Selective,
}

/// A program the guest runs: a `[[test]]` target of impair-tests, or the
/// benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Binary {
    Bpf,
    Netns,
    Controller,
    Fidelity,
    /// Not a test binary: `impair-bench --peers` (release build).
    Bench,
}

impl Binary {
    /// The name in markers and in the summary.
    pub fn name(self) -> &'static str {
        match self {
            Binary::Bpf => "bpf",
            Binary::Netns => "netns",
            Binary::Controller => "controller",
            Binary::Fidelity => "fidelity",
            Binary::Bench => "bench",
        }
    }

    /// The `[[test]]` target in impair-tests (for [`Binary::Bench`], the binary).
    pub fn target(self) -> &'static str {
        match self {
            Binary::Bpf => "bpf",
            Binary::Netns => "netns",
            Binary::Controller => "controller",
            Binary::Fidelity => "fidelity",
            Binary::Bench => "impair-bench",
        }
    }

    /// Whether the binary is a libtest harness (takes `--test-threads`,
    /// filters and the user's extra arguments).
    pub fn libtest(self) -> bool {
        self != Binary::Bench
    }

    /// Arguments the binary always gets in the guest: the fidelity tests are
    /// `#[ignore]`d for hosts without sch_fq/sch_netem, and the VM has both;
    /// their `IMPAIR-FIDELITY {json}` lines go to the console log even when
    /// they pass (`--show-output`).
    fn default_args(self) -> &'static [&'static str] {
        match self {
            Binary::Fidelity => &["--include-ignored", "--show-output"],
            Binary::Bench => &["--peers"],
            Binary::Bpf | Binary::Netns | Binary::Controller => &[],
        }
    }

    /// What the whole binary took in the guest on the project's 2-core
    /// machine, busy (TCG, `-smp 2`; docs/vm.md): the budget's basis for
    /// unfiltered runs. bpf, netns and controller: the 6.12 boot of a fresh
    /// machine on 2026-12-02 (bpf 183 s + bpf-ingress 211 s, netns 202 s +
    /// netns-ingress 290 s, controller 306 s, before the binaries merged).
    /// fidelity: 209 s on 6.12 at a load of 7 to 9 on 2 cores, up to 207 s
    /// on 6.1 before; with the ingress tests and both jitter KS tests (each
    /// about 130 s), 426 s on 6.12 on a quiet machine (load about 1,
    /// 2026-12-02), rounded up for a busy one; bench (`--peers --quick`): 29 s on 6.12, busy; 62 s with the TCP arms beside netem (quiet). netns
    /// gained 121 s with `fq::tcp::` and 276 s with `fq::rate_trace` and
    /// `fq::etcd` (measured filtered on 6.12).
    fn measured_whole_secs(self) -> u64 {
        match self {
            Binary::Bpf => 394,
            Binary::Netns => 889,
            Binary::Controller => 306,
            Binary::Fidelity => 480,
            Binary::Bench => 90,
        }
    }
}

/// One program run in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRun {
    pub binary: Binary,
    /// libtest filters: only tests whose names contain one of them run
    /// (none: every test).
    pub filters: Vec<&'static str>,
    /// Tests left out (libtest `--skip`): [`SELECTIVE_FIDELITY_SKIP`].
    pub skip: Vec<&'static str>,
    /// The user's `-- ARGS` (for the benchmark: its own arguments).
    pub extra: Vec<String>,
    /// What this run took on the project's machine, busy (docs/vm.md).
    pub measured_secs: u64,
}

impl GuestRun {
    /// "netns fq::", or just "netns" when unfiltered.
    pub fn label(&self) -> String {
        let mut label = self.binary.name().to_string();
        for f in &self.filters {
            label.push(' ');
            label.push_str(f);
        }
        for s in &self.skip {
            label.push_str(" --skip ");
            label.push_str(s);
        }
        label
    }

    /// The command line after the program: `--test-threads=1` (the tests
    /// build namespaces and interfaces with fixed names), the binary's own
    /// arguments, the filters, then the user's (libtest rejects a flag given
    /// twice: the user's copy wins).
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        let given = |flag: &str| match flag {
            "--include-ignored" => self.extra.iter().any(|a| a == "--ignored" || a == flag),
            "--test-threads=1" => self.extra.iter().any(|a| a.starts_with("--test-threads")),
            _ => self.extra.iter().any(|a| a == flag),
        };
        let threads: &[&str] = if self.binary.libtest() {
            &["--test-threads=1"]
        } else {
            &[]
        };
        args.extend(
            threads
                .iter()
                .chain(self.binary.default_args())
                .filter(|a| !given(a))
                .map(|a| a.to_string()),
        );
        args.extend(self.filters.iter().map(|f| f.to_string()));
        for s in &self.skip {
            args.extend(["--skip".to_string(), s.to_string()]);
        }
        args.extend(self.extra.iter().cloned());
        args
    }
}

/// Kernels from this release on have tcx; before it, impair's auto mode
/// attaches through a netlink clsact filter.
const TCX_SINCE: (u32, u32) = (6, 6);

/// (major, minor) of a kernel release such as "6.12.117+deb12-cloud-amd64"
/// (or of a series, "6.1").
pub fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn has_tcx(version: &str) -> bool {
    major_minor(version).is_some_and(|v| v >= TCX_SINCE)
}

/// What one filtered run takes on the project's machine, busy (load 7 to 9
/// on 2 cores, 2026-12-02), measured with the binaries of the time filtered
/// to the tests that move into these modules (docs/vm.md), rounded up:
/// - `verifier::`: each of bpf_prog_test_run's and bpf_ingress's verifier
///   test took 4 to 6 s (6.1 and 6.12);
/// - netns `clsact::`: netns's three netlink tests took 60 s on 6.1;
///   netns_ingress adds five more of the same kind;
/// - controller `clsact::`: two lease/pin lifecycle tests took 42 s on 6.1;
/// - `fq::`: netns's delay test took 22 s and controller's fq update-and-
///   removal test 24 s on 6.12; a few EDT rate tests join them; netns's
///   three ingress tests through the ifb (delay, in-order jitter, rate)
///   took 57 s together on 6.12; the three real-TCP tests of `fq::tcp::`
///   (iperf3, tests/tests/netns/tcp_fq.rs) took 121 s together on 6.12
///   (2026-12-02, load ~6); `fq::rate_trace` (8 s of traffic) and
///   `fq::etcd` (examples/etcd-regions' cluster, 84 timed requests) took
///   276 s together; `fq::mq` about 40 s; controller's `run_fq::`,
///   `echo_fq::` and `two_way_fq::` rates add about 90 s (busy host).
fn measured_filtered_secs(binary: Binary, filter: &str) -> u64 {
    match (binary, filter) {
        (Binary::Bpf, "verifier::") => 15,
        (Binary::Netns, "clsact::") => 180,
        (Binary::Controller, "clsact::") => 120,
        // With the TCP goodput test against netem (seven rounds: 155 s on
        // 6.12, 2026-12-03).
        (Binary::Netns, "fq::") => 745,
        (Binary::Netns, GSO_THROUGH_THE_IFB) => 20,
        (Binary::Controller, "fq::") => 180,
        // Not yet measured in the guest: the host's quick form takes ~25 s
        // with half its cycles; TCG is several times slower.
        (Binary::Controller, SOAK_CYCLES) => 150,
        // A filter without a measurement: the whole binary's time.
        (b, _) => b.measured_whole_secs(),
    }
}

/// The netns test of received TCP through the ifb with GRO on the
/// impaired device (tests/tests/netns/gso.rs; 18 s on 6.12, 2026-12-03).
const GSO_THROUGH_THE_IFB: &str = "gso::received_tcp_through_the_ifb";

/// The soak's cycles test (tests/tests/controller/soak.rs), by a filter
/// that leaves out its memory test.
const SOAK_CYCLES: &str = "soak::soak_attach_update_detach";

/// The selective plan for a kernel release: only what differs by kernel.
/// Fidelity tests CI's selective plan leaves out (`cargo xtask accuracy`
/// and the full matrix would still run them): none now. The KS tests of
/// jitter on received traffic were left out while their reference lateness
/// came from a separate run before each distribution (paretonormal failed
/// once on 6.12, D 0.057 against 0.053); the reference flow now runs
/// beside the jittered one through the same attach, fq and ifb, and on
/// 6.12 every D was 0.017 to 0.021 against 0.047 (docs/vm.md).
pub const SELECTIVE_FIDELITY_SKIP: &[&str] = &[];

fn selective(version: &str) -> Vec<(Binary, Vec<&'static str>)> {
    // Every kernel's verifier judges the programs anew.
    let mut runs = vec![(Binary::Bpf, vec!["verifier::"])];
    if has_tcx(version) {
        // tcx as on the host: what this kernel adds is sch_fq and sch_netem,
        // which the host lacks. 6.1's fq holds a throttled flow until its
        // earliest packet is due (docs/accuracy.md): its fidelity is reported
        // by `cargo xtask accuracy`, not gated on.
        runs.extend([
            // The ifb path needs sch_fq: received GRO'd TCP per wire packet.
            (Binary::Netns, vec!["fq::", GSO_THROUGH_THE_IFB]),
            // The soak's quick cycles again, now with their sch_fq kinds (a
            // delay at egress, and ingress through an ifb with a delay); the
            // memory test stays on the host (an update takes ~1 s here).
            (Binary::Controller, vec!["fq::", SOAK_CYCLES]),
            (Binary::Fidelity, vec![]),
            (Binary::Bench, vec![]),
        ]);
    } else {
        // No tcx: auto mode attaches with netlink clsact, the host never does.
        runs.extend([
            (Binary::Netns, vec!["clsact::"]),
            (Binary::Controller, vec!["clsact::"]),
        ]);
    }
    runs
}

/// The runs of `tier` on kernel `version` (a release or a series).
/// `extra` goes to every libtest binary, `bench_args` to the benchmark.
pub fn plan(tier: VmTier, version: &str, extra: &[String], bench_args: &[String]) -> Vec<GuestRun> {
    let whole = |bs: &[Binary]| bs.iter().map(|b| (*b, Vec::new())).collect::<Vec<_>>();
    let runs = match tier {
        VmTier::Bpf => whole(&[Binary::Bpf]),
        VmTier::Netns => whole(&[Binary::Netns, Binary::Controller]),
        VmTier::Fidelity => whole(&[Binary::Fidelity]),
        VmTier::Bench => whole(&[Binary::Bench]),
        VmTier::All => whole(&[
            Binary::Bpf,
            Binary::Netns,
            Binary::Controller,
            Binary::Fidelity,
            Binary::Bench,
        ]),
        VmTier::Selective => selective(version),
    };
    runs.into_iter()
        .map(|(binary, filters)| GuestRun {
            skip: if tier == VmTier::Selective && binary == Binary::Fidelity {
                SELECTIVE_FIDELITY_SKIP.to_vec()
            } else {
                Vec::new()
            },
            binary,
            measured_secs: match filters.as_slice() {
                [] => binary.measured_whole_secs(),
                fs => fs.iter().map(|f| measured_filtered_secs(binary, f)).sum(),
            },
            filters,
            extra: if binary.libtest() {
                extra.to_vec()
            } else {
                bench_args.to_vec()
            },
        })
        .collect()
}

/// Booting to init, unpacking the initramfs and loading the modules: 3-5 s
/// measured; more on a busy machine.
const BOOT_SECS: u64 = 30;

/// The budget over the measured time: at least 2x (the same runs took 3x as
/// long on a busy fresh machine as on a quiet one).
const HEADROOM: f64 = 2.5;

/// How long one boot may take, from qemu's start to its power-off, before
/// qemu is killed: [`HEADROOM`] times what its runs measured.
pub fn budget_secs(runs: &[GuestRun]) -> u64 {
    let measured: u64 = BOOT_SECS + runs.iter().map(|r| r.measured_secs).sum::<u64>();
    (measured as f64 * HEADROOM).ceil() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(tier: VmTier, version: &str) -> Vec<String> {
        plan(tier, version, &[], &[])
            .iter()
            .map(GuestRun::label)
            .collect()
    }

    #[test]
    fn versions() {
        assert_eq!(major_minor("6.1.0-56-cloud-amd64"), Some((6, 1)));
        assert_eq!(major_minor("6.12.117+deb12-cloud-amd64"), Some((6, 12)));
        assert_eq!(major_minor("6.12"), Some((6, 12)));
        assert!(!has_tcx("6.1.0-57-cloud-amd64"));
        assert!(has_tcx("6.12.117+deb12-cloud-amd64"));
    }

    #[test]
    fn the_selective_plan_runs_what_differs_by_kernel() {
        assert_eq!(
            labels(VmTier::Selective, "6.1.0-57-cloud-amd64"),
            ["bpf verifier::", "netns clsact::", "controller clsact::"]
        );
        assert_eq!(
            labels(VmTier::Selective, "6.12.117+deb12-cloud-amd64"),
            [
                "bpf verifier::",
                "netns fq:: gso::received_tcp_through_the_ifb",
                "controller fq:: soak::soak_attach_update_detach",
                "fidelity",
                "bench"
            ]
        );
    }

    #[test]
    fn the_full_matrix_runs_every_binary_unfiltered() {
        for version in ["6.1.0-57-cloud-amd64", "6.12.117+deb12-cloud-amd64"] {
            assert_eq!(
                labels(VmTier::All, version),
                ["bpf", "netns", "controller", "fidelity", "bench"]
            );
        }
    }

    #[test]
    fn arguments_in_order_and_the_users_copy_wins() {
        let extra = vec!["--nocapture".to_string()];
        let runs = plan(VmTier::Selective, "6.12", &extra, &["--quick".into()]);
        assert_eq!(
            runs[0].args(),
            ["--test-threads=1", "verifier::", "--nocapture"]
        );
        assert_eq!(
            runs[3].args(),
            [
                "--test-threads=1",
                "--include-ignored",
                "--show-output",
                "--nocapture"
            ]
        );
        assert_eq!(runs[4].args(), ["--peers", "--quick"]);
        let mine = vec!["--ignored".to_string(), "--test-threads=2".to_string()];
        let run = &plan(VmTier::Fidelity, "6.12", &mine, &[])[0];
        assert_eq!(
            run.args(),
            ["--show-output", "--ignored", "--test-threads=2"]
        );
    }

    #[test]
    fn budgets_have_at_least_twice_the_measured_time() {
        for tier in [VmTier::Selective, VmTier::All, VmTier::Bpf] {
            for version in ["6.1", "6.12"] {
                let runs = plan(tier, version, &[], &[]);
                let measured: u64 = runs.iter().map(|r| r.measured_secs).sum();
                assert!(budget_secs(&runs) >= 2 * (BOOT_SECS + measured));
            }
        }
    }
}
