//! `cargo xtask vm`: the privileged test tiers (BPF_PROG_TEST_RUN, network
//! namespaces, and the fidelity tier that needs sch_fq/sch_netem) inside
//! qemu, on the Debian cloud kernels that `cargo xtask setup` unpacks under
//! `target/vm-kernels/` (docs/vm.md).
//!
//! Per kernel: an initramfs (newc cpio, written here) with busybox, the test
//! executables and `impair` (at `/t/deps/<test>` and `/t/impair`, where
//! `impair_tests::impair_bin()` looks), iproute2's `ip`/`tc`, `ethtool`, the
//! shared libraries `ldd` names, the kernel's qdisc/classifier/veth modules
//! (decompressed, with their dependencies) and a generated `/init`. qemu
//! boots it with TCG (no KVM here); the console is streamed to stdout and
//! `target/vm-logs/<version>.log`, and `/init` prints one marker line per test
//! binary with its exit code, which becomes the PASS/FAIL summary.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{BufRead as _, BufReader, BufWriter, Read, Write as _},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::ValueEnum;

use crate::{
    kernels::{self, Kernel},
    setup::{self, Options as SetupOptions},
    tasks,
    util::{self, describe, find_on_path, section, workspace_root},
};

/// The kernel series `cargo xtask setup` fetches; `--kernel all` reports a
/// missing one as a failure rather than skipping it.
const EXPECTED_SERIES: &[&str] = &["6.1", "6.12"];

/// Marker lines printed by `/init` (and only by it).
const M_BOOTED: &str = "IMPAIR-VM-BOOTED";
const M_START: &str = "IMPAIR-VM-START";
const M_RESULT: &str = "IMPAIR-VM-RESULT";
const M_DONE: &str = "IMPAIR-VM-DONE";
const M_MODULE_FAILED: &str = "IMPAIR-VM-MODULE-FAILED";

/// Modules the tiers need, and whether a kernel without them (neither a module
/// nor built in) is an error. sch_fq is for delay/EDT, sch_netem and sch_tbf
/// for the fidelity tier's comparisons; clsact lives in sch_ingress.
const MODULES: &[(&str, bool)] = &[
    ("veth", true),
    ("sch_ingress", true),
    ("cls_bpf", true),
    ("sch_fq", true),
    ("sch_netem", true),
    ("sch_tbf", true),
    ("sch_htb", false),
    ("act_bpf", false),
];

/// Tests that pass `--attach-mode tcx` explicitly and so cannot pass before
/// Linux 6.6 (no tcx there; impair refuses tcx with a usage error, by design).
/// Skipped on older kernels, loudly. `auto` falls back to clsact and is tested.
const NEEDS_TCX: &[(Tier, &str)] = &[
    (Tier::Netns, "loss_10_percent_tcx_measured_at_receiver"),
    (Tier::Netns, "sigkill_tcx_leaves_traffic_unimpaired"),
];
const TCX_SINCE: (u32, u32) = (6, 6);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum VmTier {
    /// BPF_PROG_TEST_RUN: the programs run in the guest kernel on crafted frames.
    Bpf,
    /// Network namespaces: veth labs, the real `impair` binary, real traffic.
    Netns,
    /// Delay, jitter, reordering and rate at the receiver, side by side with
    /// netem and tbf (tests/tests/fidelity.rs: `#[ignore]`d on hosts without
    /// sch_fq/sch_netem; run here with `--include-ignored`).
    Fidelity,
    /// `impair-bench --peers`: impair against netem, tbf and htb, which the
    /// host kernel lacks (ratios only: the guest CPU is emulated).
    Bench,
    /// All of the above (the benchmark in its `--quick` mode unless
    /// `cargo xtask bench` asks for more).
    All,
}

/// One test binary of impair-tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tier {
    Bpf,
    BpfIngress,
    Netns,
    NetnsIngress,
    Controller,
    Fidelity,
    /// Not a test binary: `impair-bench --peers` (release build).
    Bench,
}

impl Tier {
    fn name(self) -> &'static str {
        match self {
            Tier::Bpf => "bpf",
            Tier::BpfIngress => "bpf-ingress",
            Tier::Netns => "netns",
            Tier::NetnsIngress => "netns-ingress",
            Tier::Controller => "controller",
            Tier::Fidelity => "fidelity",
            Tier::Bench => "bench",
        }
    }

    /// The `[[test]]` target in impair-tests (for [`Tier::Bench`], the binary).
    fn target(self) -> &'static str {
        match self {
            Tier::Bpf => "bpf_prog_test_run",
            Tier::BpfIngress => "bpf_ingress",
            Tier::Netns => "netns",
            Tier::NetnsIngress => "netns_ingress",
            Tier::Controller => "controller",
            Tier::Fidelity => "fidelity",
            Tier::Bench => "impair-bench",
        }
    }

    /// Whether the binary is a libtest harness (takes `--test-threads`,
    /// filters and the user's extra arguments).
    fn libtest(self) -> bool {
        self != Tier::Bench
    }

    /// Arguments the tier always gets in the guest: the fidelity tests are
    /// `#[ignore]`d for hosts without sch_fq/sch_netem, and the VM has both;
    /// their `IMPAIR-FIDELITY {json}` lines go to the console log even when
    /// they pass (`--show-output`).
    fn default_args(self) -> &'static [&'static str] {
        match self {
            Tier::Fidelity => &["--include-ignored", "--show-output"],
            Tier::Bench => &["--peers"],
            Tier::Bpf | Tier::BpfIngress | Tier::Netns | Tier::NetnsIngress | Tier::Controller => {
                &[]
            }
        }
    }
}

impl VmTier {
    fn tiers(self) -> Vec<Tier> {
        match self {
            VmTier::Bpf => vec![Tier::Bpf, Tier::BpfIngress],
            VmTier::Netns => vec![Tier::Netns, Tier::NetnsIngress, Tier::Controller],
            VmTier::Fidelity => vec![Tier::Fidelity],
            VmTier::Bench => vec![Tier::Bench],
            VmTier::All => vec![
                Tier::Bpf,
                Tier::BpfIngress,
                Tier::Netns,
                Tier::NetnsIngress,
                Tier::Controller,
                Tier::Fidelity,
                Tier::Bench,
            ],
        }
    }
}

#[derive(Debug)]
pub struct Options {
    /// A kernel release, a series ("6.1", "6.12") or "all".
    pub kernel: String,
    pub tier: VmTier,
    /// Per kernel, boot to power-off.
    pub timeout_secs: u64,
    pub release: bool,
    /// Run the tests that cannot pass on this kernel too (see [`NEEDS_TCX`]).
    pub no_skip: bool,
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

/// A test binary or `impair`, built on the host, copied (debug info
/// stripped) to `target/vm/bin/`.
#[derive(Debug)]
struct Built {
    tests: Vec<(Tier, PathBuf)>,
    impair: PathBuf,
}

pub fn vm(opts: &Options) -> Result<()> {
    let start = Instant::now();
    setup::setup(&SetupOptions { kernels: true })?;
    let selection = select_kernels(&opts.kernel)?;
    let tiers = opts.tier.tiers();
    let built = build(&tiers, opts.release)?;
    check_skip_names(&built);

    let mut outcomes = Vec::new();
    for sel in &selection {
        match sel {
            Selected::Missing(series) => {
                util::warn_loudly(&format!(
                    "no {series} kernel in {}: the VM tier cannot run on it.\n\
                     Run `cargo xtask setup` (it downloads the kernels with apt-get download; \
                     see its warnings), then `cargo xtask vm` again.",
                    kernels::kernels_dir().display()
                ));
                outcomes.push(KernelOutcome::missing(series, &tiers));
            }
            Selected::Kernel(k) => outcomes.push(run_kernel(k, &tiers, &built, opts)?),
        }
    }
    print_summary(&outcomes, start.elapsed());
    let bad: Vec<String> = outcomes
        .iter()
        .flat_map(|o| {
            o.tiers
                .iter()
                .filter(|t| !t.status.passed())
                .map(move |t| (o, t))
        })
        .map(|(o, t)| format!("{} {}: {}", o.label, t.tier, t.status.word()))
        .collect();
    if !bad.is_empty() {
        bail!("the VM tier failed: {}", bad.join("; "));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Kernel selection

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

/// (major, minor) of a kernel release such as "6.12.117+deb12-cloud-amd64".
fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Tests to skip on this kernel, with the reason.
fn skips_for(version: &str, tier: Tier) -> Vec<(&'static str, String)> {
    let has_tcx = major_minor(version).is_some_and(|v| v >= TCX_SINCE);
    if has_tcx {
        return Vec::new();
    }
    NEEDS_TCX
        .iter()
        .filter(|(t, _)| *t == tier)
        .map(|(_, name)| {
            (
                *name,
                format!(
                    "passes --attach-mode tcx; tcx needs Linux {}.{}+ and this kernel is {version} \
                     (impair's auto mode uses netlink clsact here, which the *netlink* tests cover)",
                    TCX_SINCE.0, TCX_SINCE.1
                ),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Building on the host

fn build(tiers: &[Tier], release: bool) -> Result<Built> {
    let profile = if release { "release" } else { "debug" };
    section(&format!(
        "vm: build the test binaries (not run) and impair ({profile})"
    ));
    let mut cmd = tasks::cargo_ebpf_required();
    cmd.args([
        "test",
        "-p",
        "impair-tests",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    let libtest: Vec<Tier> = tiers.iter().copied().filter(|t| t.libtest()).collect();
    for t in &libtest {
        cmd.args(["--test", t.target()]);
    }
    if release {
        cmd.arg("--release");
    }
    let mut tests = Vec::new();
    if !libtest.is_empty() {
        let json = cargo_json(&mut cmd)?;
        for t in libtest {
            let exe = executable(&json, t.target(), "test").with_context(|| {
                format!("cargo built no executable for test target {}", t.target())
            })?;
            tests.push((t, exe));
        }
    }
    if tiers.contains(&Tier::Bench) {
        // Always release: the benchmark's sender loop is part of what it times.
        let mut cmd = tasks::cargo_ebpf_required();
        cmd.args([
            "build",
            "--release",
            "-p",
            "impair-bench",
            "--bin",
            Tier::Bench.target(),
            "--message-format=json-render-diagnostics",
        ]);
        let json = cargo_json(&mut cmd)?;
        let exe = executable(&json, Tier::Bench.target(), "bin")
            .context("cargo built no impair-bench binary")?;
        tests.push((Tier::Bench, exe));
    }

    let mut cmd = tasks::cargo_ebpf_required();
    cmd.args([
        "build",
        "--bin",
        "impair",
        "--message-format=json-render-diagnostics",
    ]);
    if release {
        cmd.arg("--release");
    }
    let json = cargo_json(&mut cmd)?;
    let impair = executable(&json, "impair", "bin").context("cargo built no impair binary")?;

    // Copies without debug info: a fraction of the size, so the initramfs
    // unpacks quickly under TCG. Symbols stay (panic backtraces name functions).
    let dir = vm_dir().join("bin");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let strip = find_on_path("strip");
    if strip.is_none() {
        eprintln!("note: no `strip` (binutils): the initramfs gets the binaries with debug info");
    }
    let stage = |src: &Path, name: &str| -> Result<PathBuf> {
        let dst = dir.join(name);
        let _ = fs::remove_file(&dst);
        if let Some(strip) = &strip {
            let mut cmd = Command::new(strip);
            cmd.arg("--strip-debug").arg("-o").arg(&dst).arg(src);
            if util::probe(&mut cmd).is_some() && dst.is_file() {
                return Ok(dst);
            }
            eprintln!(
                "note: `{}` failed; using the unstripped binary",
                describe(&cmd)
            );
        }
        fs::copy(src, &dst)
            .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        Ok(dst)
    };
    let tests = tests
        .into_iter()
        .map(|(t, exe)| Ok((t, stage(&exe, t.target())?)))
        .collect::<Result<Vec<_>>>()?;
    let impair = stage(&impair, "impair")?;
    Ok(Built { tests, impair })
}

/// Runs cargo with JSON messages on stdout (diagnostics rendered on stderr).
fn cargo_json(cmd: &mut Command) -> Result<Vec<serde_json::Value>> {
    let line = describe(cmd);
    eprintln!("+ {line}");
    let started = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    eprintln!("  ({:.1} s)", started.elapsed().as_secs_f64());
    if !out.status.success() {
        bail!("`{line}` failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// The executable cargo reported for target `name` of kind `kind`.
fn executable(messages: &[serde_json::Value], name: &str, kind: &str) -> Option<PathBuf> {
    messages
        .iter()
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| m["target"]["name"] == name)
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == kind))
        })
        .filter_map(|m| m["executable"].as_str())
        .map(PathBuf::from)
        .next_back()
}

/// Warns when a name in [`NEEDS_TCX`] is no longer a test: `--skip` would
/// then skip nothing, and the renamed test would fail on old kernels.
fn check_skip_names(built: &Built) {
    for (tier, exe) in &built.tests {
        let Some(list) = util::probe(Command::new(exe).args(["--list", "--format", "terse"]))
        else {
            continue;
        };
        let names: BTreeSet<&str> = list
            .lines()
            .filter_map(|l| l.strip_suffix(": test"))
            .collect();
        for (t, name) in NEEDS_TCX {
            if t == tier && !names.contains(name) {
                util::warn_loudly(&format!(
                    "xtask/src/vm.rs skips `{name}` on kernels without tcx, but the {} \
                     tier has no such test any more: update NEEDS_TCX",
                    tier.name()
                ));
            }
        }
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

fn logs_dir() -> PathBuf {
    workspace_root().join("target").join("vm-logs")
}

// ---------------------------------------------------------------------------
// The initramfs

/// What goes into the archive at one path.
enum Node {
    Dir,
    File { src: Source, mode: u32 },
    Symlink(String),
    CharDev { major: u32, minor: u32, perm: u32 },
}

enum Source {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

/// A newc ("070701") cpio archive, built in memory as a path → node map.
/// BTreeMap order puts every directory before its contents.
#[derive(Default)]
struct Cpio {
    nodes: BTreeMap<String, Node>,
}

impl Cpio {
    fn norm(path: &str) -> String {
        path.trim_start_matches('/')
            .trim_end_matches('/')
            .to_string()
    }

    fn dir(&mut self, path: &str) {
        let path = Self::norm(path);
        let mut at = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            self.nodes.entry(at.clone()).or_insert(Node::Dir);
        }
    }

    fn parent(&mut self, path: &str) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
    }

    fn file(&mut self, path: &str, src: Source, mode: u32) {
        let path = Self::norm(path);
        self.parent(&path);
        self.nodes.insert(path, Node::File { src, mode });
    }

    /// A host file at the same path, unless it is already there.
    fn host_file(&mut self, host: &Path, mode: u32) {
        let path = Self::norm(&host.to_string_lossy());
        if !self.nodes.contains_key(&path) {
            self.file(&path, Source::Path(host.to_path_buf()), mode);
        }
    }

    fn symlink(&mut self, path: &str, target: &str) {
        let path = Self::norm(path);
        self.parent(&path);
        self.nodes.insert(path, Node::Symlink(target.to_string()));
    }

    fn chardev(&mut self, path: &str, major: u32, minor: u32, perm: u32) {
        let path = Self::norm(path);
        self.parent(&path);
        self.nodes
            .insert(path, Node::CharDev { major, minor, perm });
    }

    /// Writes the archive; returns its size in bytes.
    fn write(&self, out: &Path) -> Result<u64> {
        let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut w = CountingWriter {
            inner: BufWriter::new(file),
            written: 0,
        };
        for (ino, (path, node)) in self.nodes.iter().enumerate() {
            let (mode, data, rdev): (u32, std::borrow::Cow<'_, [u8]>, (u32, u32)) = match node {
                Node::Dir => (0o040_755, (&[][..]).into(), (0, 0)),
                Node::File { src, mode } => {
                    let data = match src {
                        Source::Bytes(b) => b.as_slice().into(),
                        Source::Path(p) => fs::read(p)
                            .with_context(|| format!("reading {}", p.display()))?
                            .into(),
                    };
                    (0o100_000 | mode, data, (0, 0))
                }
                Node::Symlink(target) => (0o120_777, target.as_bytes().into(), (0, 0)),
                Node::CharDev { major, minor, perm } => {
                    (0o020_000 | perm, (&[][..]).into(), (*major, *minor))
                }
            };
            let nlink = if matches!(node, Node::Dir) { 2 } else { 1 };
            write_entry(&mut w, ino as u32 + 1, mode, nlink, rdev, path, &data)?;
        }
        write_entry(&mut w, 0, 0, 1, (0, 0), "TRAILER!!!", &[])?;
        w.inner.flush()?;
        Ok(w.written)
    }
}

struct CountingWriter<W> {
    inner: W,
    written: u64,
}

impl<W: std::io::Write> CountingWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.inner.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad4(&mut self) -> Result<()> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..pad])
    }
}

fn write_entry<W: std::io::Write>(
    w: &mut CountingWriter<W>,
    ino: u32,
    mode: u32,
    nlink: u32,
    (rmajor, rminor): (u32, u32),
    name: &str,
    data: &[u8],
) -> Result<()> {
    let size = u32::try_from(data.len()).context("file too large for newc cpio")?;
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        size,
        0,
        0,
        rmajor,
        rminor,
        name.len() as u32 + 1,
        0,
    ];
    let mut header = String::from("070701");
    for f in fields {
        header.push_str(&format!("{f:08x}"));
    }
    w.put(header.as_bytes())?;
    w.put(name.as_bytes())?;
    w.put(&[0])?;
    w.pad4()?;
    w.put(data)?;
    w.pad4()
}

/// A module to load in the guest, in dependency order.
struct Module {
    /// Path relative to lib/modules/<version>, decompressed (`.ko`).
    rel: String,
}

/// The wanted modules and their dependencies from the kernel's modules.dep,
/// dependencies first; copied into `cpio` decompressed (busybox insmod/modprobe
/// cannot be relied on for .ko.xz, even where the kernel has
/// CONFIG_MODULE_DECOMPRESS), with a matching modules.dep.
fn add_modules(cpio: &mut Cpio, k: &Kernel) -> Result<Vec<Module>> {
    let dir = &k.manifest.modules_dir;
    let dep_path = dir.join("modules.dep");
    let dep_text =
        fs::read_to_string(&dep_path).with_context(|| format!("reading {}", dep_path.display()))?;
    let builtin: BTreeSet<String> = fs::read_to_string(dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .map(module_name)
        .collect();
    // name → (path, dependency paths)
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    let mut by_path: BTreeMap<String, String> = BTreeMap::new();
    for line in dep_text.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        let name = module_name(path);
        by_path.insert(path.to_string(), name.clone());
        deps.insert(
            name,
            (
                path.to_string(),
                rest.split_whitespace().map(str::to_string).collect(),
            ),
        );
    }
    let mut order: Vec<String> = Vec::new();
    fn visit(
        name: &str,
        deps: &BTreeMap<String, (String, Vec<String>)>,
        by_path: &BTreeMap<String, String>,
        order: &mut Vec<String>,
        stack: &mut Vec<String>,
    ) -> Result<()> {
        if order.iter().any(|n| n == name) || stack.iter().any(|n| n == name) {
            return Ok(());
        }
        let (_, ds) = deps
            .get(name)
            .with_context(|| format!("module {name} not in modules.dep"))?;
        stack.push(name.to_string());
        for d in ds {
            let dn = by_path.get(d).cloned().unwrap_or_else(|| module_name(d));
            visit(&dn, deps, by_path, order, stack)?;
        }
        stack.pop();
        order.push(name.to_string());
        Ok(())
    }
    for (name, required) in MODULES {
        if deps.contains_key(*name) {
            visit(name, &deps, &by_path, &mut order, &mut Vec::new())?;
        } else if builtin.contains(*name) {
            eprintln!("module {name}: built into {}", k.version);
        } else if *required {
            bail!(
                "kernel {} has no {name} module (neither in modules.dep nor modules.builtin of {})",
                k.version,
                dir.display()
            );
        } else {
            eprintln!("module {name}: not in {} (optional; skipped)", k.version);
        }
    }
    let base = format!("lib/modules/{}", k.version);
    let mut modules = Vec::new();
    let mut dep_out = String::new();
    for name in &order {
        let (path, ds) = &deps[name];
        let (rel, data) = decompressed(&dir.join(path), path)?;
        cpio.file(&format!("{base}/{rel}"), Source::Bytes(data), 0o644);
        let ds: Vec<String> = ds
            .iter()
            .map(|d| strip_compression(d).to_string())
            .collect();
        dep_out.push_str(&format!("{rel}: {}\n", ds.join(" ")));
        modules.push(Module { rel });
    }
    cpio.file(
        &format!("{base}/modules.dep"),
        Source::Bytes(dep_out.into_bytes()),
        0o644,
    );
    for f in ["modules.builtin", "modules.order"] {
        if dir.join(f).is_file() {
            cpio.file(&format!("{base}/{f}"), Source::Path(dir.join(f)), 0o644);
        }
    }
    Ok(modules)
}

/// "kernel/net/sched/sch_fq.ko.xz" → "sch_fq" (dashes become underscores).
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let file = strip_compression(file);
    file.strip_suffix(".ko").unwrap_or(file).replace('-', "_")
}

fn strip_compression(path: &str) -> &str {
    [".xz", ".zst", ".gz"]
        .iter()
        .find_map(|s| path.strip_suffix(s))
        .unwrap_or(path)
}

/// The module's bytes, decompressed with the matching tool if needed.
fn decompressed(file: &Path, rel: &str) -> Result<(String, Vec<u8>)> {
    let tool = match rel.rsplit('.').next() {
        Some("xz") => Some(("xz", "xz-utils")),
        Some("zst") => Some(("zstd", "zstd")),
        Some("gz") => Some(("gzip", "gzip")),
        _ => None,
    };
    let data = match tool {
        None => fs::read(file).with_context(|| format!("reading {}", file.display()))?,
        Some((tool, package)) => {
            let mut cmd = Command::new(tool);
            cmd.arg("-dc").arg(file);
            let out = cmd.stdin(Stdio::null()).output().with_context(|| {
                format!(
                    "running `{tool}` to decompress {} (Debian package {package})",
                    file.display()
                )
            })?;
            if !out.status.success() {
                bail!(
                    "`{}` failed ({}): {}",
                    describe(&cmd),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            out.stdout
        }
    };
    Ok((strip_compression(rel).to_string(), data))
}

/// Adds `bin` and every shared library `ldd` lists for it (at the same paths,
/// the dynamic loader included).
fn add_libraries(cpio: &mut Cpio, bin: &Path) -> Result<()> {
    let out = Command::new("ldd")
        .arg(bin)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running ldd on {} (Debian package libc-bin)", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            return Ok(());
        }
        bail!(
            "ldd {} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    for line in text.lines() {
        let line = line.trim();
        if line.contains("=> not found") {
            bail!("{}: {line}", bin.display());
        }
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            cpio.host_file(Path::new(path), 0o755);
        }
    }
    Ok(())
}

/// A host tool by name: PATH first, then the sbin directories a non-root
/// PATH often lacks.
fn host_tool(name: &str, package: &str) -> Result<PathBuf> {
    find_on_path(name)
        .or_else(|| {
            ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .map(|d| Path::new(d).join(name))
                .find(|p| p.is_file())
        })
        .with_context(|| {
            format!(
                "`{name}` not found (Debian package {package}; `cargo xtask setup` installs it)"
            )
        })
}

fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The guest's PID 1.
fn init_script(k: &Kernel, modules: &[Module], runs: &[TierRun]) -> String {
    let mut s = String::new();
    let v = &k.version;
    s.push_str(&format!(
        r#"#!/bin/busybox sh
# /init generated by `cargo xtask vm` (xtask/src/vm.rs) for {v}.
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /root
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp RUST_BACKTRACE=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t bpf bpffs /sys/fs/bpf || echo "vm: could not mount bpffs"
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/netns
echo /sbin/modprobe > /proc/sys/kernel/modprobe
hostname impair-vm
ip link set lo up
echo "{M_BOOTED} $(uname -r) $(nproc) cpus, uptime $(cut -d' ' -f1 /proc/uptime) s"
"#
    ));
    for m in modules {
        s.push_str(&format!(
            "insmod /lib/modules/{v}/{rel} || echo \"{M_MODULE_FAILED} {rel}\"\n",
            rel = m.rel
        ));
    }
    s.push_str("echo \"vm: modules loaded: $(cut -d' ' -f1 /proc/modules | tr '\\n' ' ')\"\n");
    s.push_str("failed=0\ncd /tmp\n");
    for run in runs {
        let name = run.tier.name();
        let mut args: Vec<String> = Vec::new();
        if run.tier.libtest() && !run.extra.iter().any(|a| a.starts_with("--test-threads")) {
            args.push("--test-threads=1".into());
        }
        // libtest rejects a flag given twice: the user's copy wins.
        let given = |flag: &str| match flag {
            "--include-ignored" => run.extra.iter().any(|a| a == "--ignored" || a == flag),
            _ => run.extra.iter().any(|a| a == flag),
        };
        args.extend(
            run.tier
                .default_args()
                .iter()
                .filter(|a| !given(a))
                .map(|a| a.to_string()),
        );
        for (test, why) in &run.skips {
            s.push_str(&format!(
                "echo {}\n",
                sh_quote(&format!("vm: SKIPPED {test}: {why}"))
            ));
            args.push("--skip".into());
            args.push(test.to_string());
        }
        args.extend(run.extra.iter().cloned());
        let args: Vec<String> = args.iter().map(|a| sh_quote(a)).collect();
        s.push_str(&format!(
            "echo \"{M_START} {name} uptime $(cut -d' ' -f1 /proc/uptime)\"\n\
             /t/deps/{target} {args}\n\
             rc=$?\n\
             [ $rc -eq 0 ] || failed=1\n\
             echo \"{M_RESULT} {name} $rc uptime $(cut -d' ' -f1 /proc/uptime)\"\n",
            target = run.tier.target(),
            args = args.join(" "),
        ));
    }
    // `quiet` hides kernel warnings (WARN splats, verifier noise) from the
    // console: after a failure, show the whole kernel log.
    s.push_str(
        "if [ \"$failed\" = 1 ]; then\n\
         \x20 echo 'vm: a test binary failed; the kernel log (dmesg) follows'\n\
         \x20 dmesg\n\
         \x20 echo 'vm: end of the kernel log'\n\
         fi\n",
    );
    s.push_str(&format!("echo {M_DONE}\nsync\npoweroff -f\n"));
    s
}

struct TierRun {
    tier: Tier,
    skips: Vec<(&'static str, String)>,
    extra: Vec<String>,
}

fn build_initramfs(k: &Kernel, built: &Built, runs: &[TierRun], out: &Path) -> Result<u64> {
    let mut cpio = Cpio::default();
    for d in [
        "dev", "proc", "sys", "run", "tmp", "root", "etc", "usr/bin", "usr/sbin", "bin",
    ] {
        cpio.dir(d);
    }
    // The kernel opens /dev/console for /init before anything is mounted.
    cpio.chardev("dev/console", 5, 1, 0o600);
    cpio.chardev("dev/null", 1, 3, 0o666);
    cpio.symlink("sbin", "bin");
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        bail!("/bin/busybox is missing (Debian package busybox-static; `cargo xtask setup` installs it)");
    }
    cpio.file("bin/busybox", Source::Path(busybox.to_path_buf()), 0o755);
    add_libraries(&mut cpio, busybox)?; // a no-op for busybox-static

    for (tier, exe) in &built.tests {
        if runs.iter().any(|r| r.tier == *tier) {
            cpio.file(
                &format!("t/deps/{}", tier.target()),
                Source::Path(exe.clone()),
                0o755,
            );
            add_libraries(&mut cpio, exe)?;
        }
    }
    cpio.file("t/impair", Source::Path(built.impair.clone()), 0o755);
    add_libraries(&mut cpio, &built.impair)?;

    for (tool, package) in [
        ("ip", "iproute2"),
        ("tc", "iproute2"),
        ("ethtool", "ethtool"),
    ] {
        let host = host_tool(tool, package)?;
        cpio.file(
            &format!("usr/sbin/{tool}"),
            Source::Path(host.clone()),
            0o755,
        );
        add_libraries(&mut cpio, &host)?;
    }
    // iproute2's tables (rt_tables, protocol names) and tc's netem distributions.
    for dir in [
        "/etc/iproute2",
        "/usr/share/iproute2",
        "/usr/lib/x86_64-linux-gnu/tc",
        "/usr/lib/tc",
    ] {
        add_tree(&mut cpio, Path::new(dir))?;
    }
    cpio.file(
        "etc/passwd",
        Source::Bytes(b"root:x:0:0:root:/root:/bin/sh\n".to_vec()),
        0o644,
    );
    cpio.file("etc/group", Source::Bytes(b"root:x:0:\n".to_vec()), 0o644);

    let modules = add_modules(&mut cpio, k)?;
    cpio.file(
        "init",
        Source::Bytes(init_script(k, &modules, runs).into_bytes()),
        0o755,
    );
    cpio.write(out)
}

/// Regular files under `dir` (if it exists), at the same paths; not tc's
/// plugins (`*.so`, for iptables actions the tests never use).
fn add_tree(cpio: &mut Cpio, dir: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            add_tree(cpio, &p)?;
        } else if p.is_file() && p.extension().is_none_or(|x| x != "so") {
            cpio.host_file(&p, 0o644);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Booting and reading the console

#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Pass,
    Fail(String),
    Timeout,
    Missing,
}

impl Status {
    fn passed(&self) -> bool {
        matches!(self, Status::Pass)
    }

    fn word(&self) -> String {
        match self {
            Status::Pass => "PASS".into(),
            Status::Fail(why) => format!("FAIL ({why})"),
            Status::Timeout => "TIMEOUT".into(),
            Status::Missing => "MISSING".into(),
        }
    }
}

struct TierOutcome {
    tier: &'static str,
    status: Status,
    /// libtest's "test result:" line, shortened.
    counts: String,
    failed_tests: Vec<String>,
    skipped: Vec<&'static str>,
    secs: Option<f64>,
}

struct KernelOutcome {
    label: String,
    tiers: Vec<TierOutcome>,
    boot_secs: Option<f64>,
    total_secs: Option<f64>,
    notes: Vec<String>,
}

impl KernelOutcome {
    fn missing(series: &str, tiers: &[Tier]) -> Self {
        KernelOutcome {
            label: format!("{series} (missing)"),
            tiers: tiers
                .iter()
                .map(|t| TierOutcome {
                    tier: t.name(),
                    status: Status::Missing,
                    counts: "run `cargo xtask setup`".into(),
                    failed_tests: Vec::new(),
                    skipped: Vec::new(),
                    secs: None,
                })
                .collect(),
            boot_secs: None,
            total_secs: None,
            notes: Vec::new(),
        }
    }
}

/// A console line and when (since qemu started) it arrived.
type Lines = Vec<(f64, String)>;

fn run_kernel(k: &Kernel, tiers: &[Tier], built: &Built, opts: &Options) -> Result<KernelOutcome> {
    let label = format!("{} ({})", k.version, k.series);
    section(&format!("vm: kernel {label}"));
    let runs: Vec<TierRun> = tiers
        .iter()
        .map(|t| TierRun {
            tier: *t,
            skips: if opts.no_skip {
                Vec::new()
            } else {
                skips_for(&k.version, *t)
            },
            extra: if t.libtest() {
                opts.extra.clone()
            } else {
                opts.bench_args.clone()
            },
        })
        .collect();
    if opts.no_skip && tiers.iter().any(|t| !skips_for(&k.version, *t).is_empty()) {
        util::warn_loudly(&format!(
            "--no-skip: running the tcx tests on {} too; they are expected to FAIL there",
            k.version
        ));
    }
    for run in &runs {
        for (test, why) in &run.skips {
            util::warn_loudly(&format!(
                "kernel {}: SKIPPING {} test `{test}`: {why}",
                k.version,
                run.tier.name()
            ));
        }
    }

    let dir = vm_dir().join(&k.version);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let initrd = dir.join("initrd.cpio");
    let t = Instant::now();
    let size = build_initramfs(k, built, &runs, &initrd)?;
    eprintln!(
        "initramfs: {} ({:.1} MiB, {:.1} s)",
        initrd.display(),
        size as f64 / (1024.0 * 1024.0),
        t.elapsed().as_secs_f64()
    );

    fs::create_dir_all(logs_dir())?;
    let log_path = logs_dir().join(format!("{}.log", k.version));
    let timeout = Duration::from_secs(opts.timeout_secs);
    let boot = boot(k, &initrd, &log_path, timeout)?;
    eprintln!(
        "kernel {}: qemu ran {:.1} s{}; console log: {}",
        k.version,
        boot.secs,
        if boot.timed_out {
            " and was killed (TIMEOUT)"
        } else {
            ""
        },
        log_path.display()
    );
    Ok(outcome(label, &runs, &boot))
}

struct Boot {
    lines: Lines,
    timed_out: bool,
    status: Option<ExitStatus>,
    secs: f64,
}

fn boot(k: &Kernel, initrd: &Path, log_path: &Path, timeout: Duration) -> Result<Boot> {
    let qemu = host_tool("qemu-system-x86_64", "qemu-system-x86")?;
    let mut cmd = Command::new(qemu);
    cmd.args(["-accel", "tcg", "-cpu", "max", "-m", "2048", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(&k.manifest.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        // panic=-1: reboot at once on a panic, which -no-reboot turns into exit.
        .arg("console=ttyS0 quiet panic=-1 rdinit=/init random.trust_cpu=on")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("+ {} (timeout {} s)", describe(&cmd), timeout.as_secs());
    let log = Arc::new(Mutex::new(
        fs::File::create(log_path).with_context(|| format!("creating {}", log_path.display()))?,
    ));
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    let done = Arc::new(AtomicBool::new(false));
    let prefix = format!("[{}]", k.series);
    let stdout = child.stdout.take().context("qemu stdout")?;
    let stderr = child.stderr.take().context("qemu stderr")?;
    let reader = {
        let (log, done, prefix) = (log.clone(), done.clone(), prefix.clone());
        thread::spawn(move || stream(stdout, &prefix, &log, &done, started))
    };
    let err_reader = {
        let (log, done, prefix) = (
            log.clone(),
            Arc::new(AtomicBool::new(false)),
            prefix.clone(),
        );
        thread::spawn(move || stream(stderr, &format!("{prefix} qemu:"), &log, &done, started))
    };

    let mut timed_out = false;
    let mut done_at: Option<Instant> = None;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if done.load(Ordering::Relaxed) {
            // /init finished and powers off; give it a moment, then stop waiting.
            let at = *done_at.get_or_insert_with(Instant::now);
            if at.elapsed() > Duration::from_secs(30) {
                eprintln!("qemu did not power off 30 s after {M_DONE}: killing it");
                let _ = child.kill();
                break child.wait().ok();
            }
        }
        if started.elapsed() > timeout {
            timed_out = true;
            eprintln!(
                "\n{prefix} TIMEOUT after {} s: killing qemu (raise --timeout-secs if the guest \
                 is just slow)",
                timeout.as_secs()
            );
            let _ = child.kill();
            break child.wait().ok();
        }
        thread::sleep(Duration::from_millis(100));
    };
    let lines = reader
        .join()
        .map_err(|_| anyhow::anyhow!("console reader panicked"))?;
    let _ = err_reader.join();
    Ok(Boot {
        lines,
        timed_out,
        status,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// Copies a stream to the log and to stdout (prefixed) line by line, and
/// returns the lines with their arrival times.
fn stream(
    from: impl Read,
    prefix: &str,
    log: &Mutex<fs::File>,
    done: &AtomicBool,
    started: Instant,
) -> Lines {
    let mut lines = Vec::new();
    let mut reader = BufReader::new(from);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        // The serial console ends lines with \r\n and may carry terminal escapes.
        let line = strip_escapes(line.trim_end_matches(['\r', '\n']));
        if let Ok(mut f) = log.lock() {
            let _ = writeln!(f, "{line}");
        }
        println!("{prefix} {line}");
        if line.contains(M_DONE) {
            done.store(true, Ordering::Relaxed);
        }
        lines.push((started.elapsed().as_secs_f64(), line));
    }
    lines
}

/// Drops terminal control sequences (SeaBIOS clears the screen) and stray
/// carriage returns, so logs and markers are plain text.
fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // CSI: parameters, then one final byte in @..~.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
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

/// The tokens after `marker` on a line.
fn after<'a>(line: &'a str, marker: &str) -> Option<Vec<&'a str>> {
    let at = line.find(marker)?;
    Some(line[at + marker.len()..].split_whitespace().collect())
}

fn outcome(label: String, runs: &[TierRun], boot: &Boot) -> KernelOutcome {
    let lines = &boot.lines;
    let boot_secs = lines
        .iter()
        .find(|(_, l)| l.contains(M_BOOTED))
        .map(|(t, _)| *t);
    let mut notes = Vec::new();
    for (_, l) in lines {
        if let Some(rest) = after(l, M_MODULE_FAILED) {
            notes.push(format!("module failed to load: {}", rest.join(" ")));
        }
    }
    if boot_secs.is_none() {
        notes.push("the guest never reached /init's boot marker (see the console log)".into());
    }
    if !boot.timed_out && !lines.iter().any(|(_, l)| l.contains(M_DONE)) {
        notes.push(format!(
            "qemu exited ({}) before /init finished: a guest crash or panic?",
            boot.status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "?".into())
        ));
    }
    let tiers = runs
        .iter()
        .map(|run| {
            let name = run.tier.name();
            let start = lines
                .iter()
                .position(|(_, l)| after(l, M_START).is_some_and(|t| t.first() == Some(&name)));
            let result = lines
                .iter()
                .position(|(_, l)| after(l, M_RESULT).is_some_and(|t| t.first() == Some(&name)));
            let code = result.and_then(|i| {
                after(&lines[i].1, M_RESULT)
                    .and_then(|t| t.get(1).and_then(|c| c.parse::<i32>().ok()))
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
            let failed_tests = failed_tests(body);
            let status = match code {
                Some(0) => Status::Pass,
                Some(c) => Status::Fail(format!("exit {c}")),
                None if boot.timed_out => Status::Timeout,
                None if start.is_some() => Status::Fail("no result: the guest died".into()),
                None => Status::Fail("did not run".into()),
            };
            let secs = match (start, result) {
                (Some(s), Some(r)) => Some(lines[r].0 - lines[s].0),
                _ => None,
            };
            TierOutcome {
                tier: name,
                status,
                counts,
                failed_tests,
                skipped: run.skips.iter().map(|(n, _)| *n).collect(),
                secs,
            }
        })
        .collect();
    KernelOutcome {
        label,
        tiers,
        boot_secs,
        total_secs: Some(boot.secs),
        notes,
    }
}

fn print_summary(outcomes: &[KernelOutcome], total: Duration) {
    let width = outcomes
        .iter()
        .map(|o| o.label.len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!("\n=== vm: summary ===");
    println!(
        "{:<width$}  {:<8}  {:<16}  {:>7}  tests",
        "kernel", "tier", "result", "time"
    );
    for o in outcomes {
        for t in &o.tiers {
            let secs = t
                .secs
                .map(|s| format!("{s:.0} s"))
                .unwrap_or_else(|| "-".into());
            println!(
                "{:<width$}  {:<8}  {:<16}  {:>7}  {}",
                o.label,
                t.tier,
                t.status.word(),
                secs,
                t.counts
            );
            for f in &t.failed_tests {
                println!("{:<width$}  {:<8}    failed: {f}", "", "");
            }
            for s in &t.skipped {
                println!(
                    "{:<width$}  {:<8}    SKIPPED (needs tcx, Linux 6.6+): {s}",
                    "", ""
                );
            }
        }
        if let (Some(b), Some(tot)) = (o.boot_secs, o.total_secs) {
            println!(
                "{:<width$}  boot to /init {b:.0} s, qemu total {tot:.0} s",
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

    #[test]
    fn versions_and_tcx_skips() {
        assert_eq!(major_minor("6.1.0-56-cloud-amd64"), Some((6, 1)));
        assert_eq!(major_minor("6.12.117+deb12-cloud-amd64"), Some((6, 12)));
        assert_eq!(
            skips_for("6.1.0-56-cloud-amd64", Tier::Netns).len(),
            NEEDS_TCX.len()
        );
        assert!(skips_for("6.1.0-56-cloud-amd64", Tier::Bpf).is_empty());
        assert!(skips_for("6.12.117+deb12-cloud-amd64", Tier::Netns).is_empty());
    }

    #[test]
    fn module_names() {
        assert_eq!(module_name("kernel/net/sched/sch_fq.ko.xz"), "sch_fq");
        assert_eq!(module_name("kernel/drivers/net/veth.ko"), "veth");
        assert_eq!(module_name("kernel/foo/nf-bar.ko.zst"), "nf_bar");
        assert_eq!(strip_compression("a/b.ko.xz"), "a/b.ko");
    }

    #[test]
    fn cpio_is_newc_and_aligned() {
        let mut c = Cpio::default();
        c.file("/bin/x", Source::Bytes(b"hello".to_vec()), 0o755);
        c.symlink("sbin", "bin");
        let dir = std::env::temp_dir().join(format!("xtask-cpio-{}", std::process::id()));
        let size = c.write(&dir).unwrap();
        let data = fs::read(&dir).unwrap();
        let _ = fs::remove_file(&dir);
        assert_eq!(size as usize, data.len());
        assert_eq!(size % 4, 0);
        assert!(data.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&data);
        assert!(text.contains("bin\0"));
        assert!(text.contains("bin/x\0"));
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!\0"));
        // "bin" comes before "bin/x".
        assert!(text.find("bin\0").unwrap() < text.find("bin/x\0").unwrap());
    }

    #[test]
    fn escapes_are_stripped() {
        assert_eq!(
            strip_escapes("\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS\r"),
            "SeaBIOS"
        );
        assert_eq!(strip_escapes("plain"), "plain");
    }

    #[test]
    fn failed_tests_come_from_the_final_list() {
        let body: Vec<(f64, String)> = [
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
        ]
        .iter()
        .map(|l| (0.0, l.to_string()))
        .collect();
        assert_eq!(failed_tests(&body), ["a", "b"]);
        assert!(failed_tests(&body[..2]).is_empty());
    }

    #[test]
    fn markers_parse() {
        let line = "[  12.3] IMPAIR-VM-RESULT bpf 101 uptime 40.2";
        assert_eq!(after(line, M_RESULT).unwrap()[..2], ["bpf", "101"]);
    }
}
