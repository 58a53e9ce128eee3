//! `cargo xtask setup`: installs what building and testing impair needs, idempotently.
//!
//! Two routes build the eBPF crate (docs/toolchain.md); impair-user/build.rs
//! detects them the same way as [`detect_route`]:
//! - upstream: rustup's `nightly` with the `rust-src` component, bpf-linker on PATH;
//! - Debian: `/usr/bin/rustc` from `rustc-web` with `rust-web-src` (matching
//!   compiler and core source), and bpf-linker 0.13 built against LLVM 22.
//!
//! Everything is checked first; apt (one `apt-get update`, one `apt-get
//! install`) and `cargo install` run only for what is missing.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Result};

use crate::{
    apt::Apt,
    kernels,
    util::{self, find_all_on_path, find_on_path, probe, run_timed, section},
};

/// Debian's compiler + matching core source (the Debian route).
const DEBIAN_TOOLCHAIN: &[&str] = &["rustc-web", "cargo-web", "rust-web-src"];
/// What `cargo install bpf-linker --features llvm-22` links against: only the
/// `libLLVM.so` link in /usr/lib/llvm-22/lib (bpf-linker's default dynamic
/// linking; llvm-sys runs with `no-llvm-linking`, so no llvm-config, Polly,
/// zlib or zstd development files are needed; those are for `llvm-link-static`).
/// It pulls in libllvm22, which the built bpf-linker loads at run time.
const BPF_LINKER_BUILD_DEPS: &[&str] = &["llvm-22-dev"];
/// Tools the test tiers drive (netns/veth/qdiscs, offloads, the netem and
/// iptables comparisons) and the VM tier's qemu, initramfs and module tools.
const TEST_TOOLS: &[&str] = &[
    "iproute2",
    "ethtool",
    "iptables",
    "kmod",
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    // The agent's tests: HTTP(S) clients with client certificates, the
    // certificates themselves, and the venv for the PyPI tools below.
    "curl",
    "openssl",
    "python3-venv",
    // A container runtime for the agent's container target (runc: crun
    // fails on hybrid cgroups).
    "podman",
    "runc",
    "iperf3",
    // Reads the capture files in tests/tests/controller/capture.rs.
    "tshark",
    // examples/etcd-regions: a real three-node etcd cluster across three
    // namespaces (netns tier; the VM's initramfs carries both binaries).
    "etcd-server",
    "etcd-client",
];

/// Where the PyPI tools the tests drive live (a venv of their own, so the
/// system's Python stays untouched).
pub const PYTOOLS_VENV: &str = "/opt/impair-pytools";
/// PyPI tools, pinned: kubernetes-validate checks docs/fleet.md's manifests
/// offline; schemathesis tests the agent from its OpenAPI document;
/// Chaos Toolkit drives the three-agent fleet test.
const PYTOOLS: &[(&str, &str)] = &[
    ("kubernetes-validate", "1.37.0"),
    ("schemathesis", "4.32.5"),
    ("chaostoolkit", "1.19.0"),
];

const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Upstream,
    Debian,
}

impl Route {
    fn describe(self) -> &'static str {
        match self {
            Route::Upstream => "upstream (rustup nightly with rust-src)",
            Route::Debian => {
                "Debian (/usr/bin/rustc from rustc-web + rust-web-src, RUSTC_BOOTSTRAP=1)"
            }
        }
    }
}

#[derive(Debug)]
pub struct Options {
    /// Also fetch the VM tier's kernel images.
    pub kernels: bool,
}

/// Runs setup and prints its summary.
pub fn setup(opts: &Options) -> Result<()> {
    let start = Instant::now();
    section("setup: toolchain and tools");
    let mut apt = Apt::new();

    let route = detect_route();
    match route {
        Some(Route::Upstream) => {
            eprintln!("rustup nightly has rust-src: using the upstream route; Debian's toolchain packages are not needed")
        }
        _ => eprintln!(
            "no rust-src for rustup nightly: using the Debian route (rustc-web + rust-web-src)"
        ),
    }
    let route = route.unwrap_or(Route::Debian);
    if route == Route::Debian && !apt.available {
        bail!(
            "neither eBPF toolchain route is available: rustup's nightly has no rust-src \
             (`rustup component add rust-src --toolchain nightly`), and this is not a \
             Debian system with apt for rustc-web + rust-web-src (docs/toolchain.md)"
        );
    }

    let linker_ok = bpf_linker_ok(route);
    let mut wanted: Vec<&str> = Vec::new();
    if route == Route::Debian {
        wanted.extend(DEBIAN_TOOLCHAIN);
        wanted.extend(BPF_LINKER_BUILD_DEPS);
    } else if linker_ok.is_none() {
        wanted.extend(BPF_LINKER_BUILD_DEPS);
    }
    wanted.extend(TEST_TOOLS);
    if apt.available {
        apt.ensure_installed(&wanted)?;
    } else {
        util::warn_loudly(&format!(
            "no dpkg/apt here: install the equivalents of these Debian packages yourself: {}",
            wanted.join(" ")
        ));
    }

    let linker = match linker_ok {
        Some(l) => l,
        None => install_bpf_linker(route)?,
    };

    if route == Route::Debian {
        let sysroot = util::output(Command::new("/usr/bin/rustc").args(["--print", "sysroot"]))?;
        let sysroot = PathBuf::from(sysroot.trim());
        if !has_core_source(&sysroot) {
            bail!(
                "/usr/bin/rustc's sysroot {} has no lib/rustlib/src/rust/library/core: \
                 is rust-web-src installed and matching rustc-web?",
                sysroot.display()
            );
        }
        if !Path::new("/usr/bin/cargo").is_file() {
            bail!("/usr/bin/cargo is missing (package cargo-web)");
        }
    }

    ensure_pytools()?;

    let kernels = if opts.kernels {
        kernels::ensure(&mut apt)
    } else {
        kernels::available()
    };

    section("setup: summary");
    eprintln!("route:      {}", route.describe());
    if route == Route::Debian {
        eprintln!(
            "compiler:   {}",
            probe(Command::new("/usr/bin/rustc").arg("--version"))
                .unwrap_or_default()
                .trim()
        );
    }
    eprintln!("bpf-linker: {} ({})", linker.version, linker.path.display());
    if kernels.is_empty() {
        eprintln!(
            "kernels:    none{}",
            if opts.kernels {
                " (see warnings above)"
            } else {
                " (run `cargo xtask setup` without --no-kernels)"
            }
        );
    }
    for k in &kernels {
        eprintln!("kernel:     {} ({})", k.version, k.dir.display());
    }
    eprintln!("setup done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// Installs [`PYTOOLS`] into [`PYTOOLS_VENV`] unless each is there at its
/// pinned version (idempotent: `pip show` first, `pip install` only for what
/// is missing or another version).
fn ensure_pytools() -> Result<()> {
    let venv = Path::new(PYTOOLS_VENV);
    let pip = venv.join("bin/pip");
    if !pip.is_file() {
        run_timed(Command::new("python3").args(["-m", "venv", PYTOOLS_VENV]))?;
    }
    let missing: Vec<String> = PYTOOLS
        .iter()
        .filter(|(name, version)| {
            let shown = probe(Command::new(&pip).args(["show", name])).unwrap_or_default();
            !shown
                .lines()
                .any(|l| l.trim() == format!("Version: {version}"))
        })
        .map(|(name, version)| format!("{name}=={version}"))
        .collect();
    if missing.is_empty() {
        eprintln!("PyPI tools: present in {PYTOOLS_VENV}");
        return Ok(());
    }
    run_timed(
        Command::new(&pip)
            .arg("install")
            .arg("--quiet")
            .args(&missing),
    )
}

/// Mirrors impair-user/build.rs: upstream wins when rustup's nightly has
/// rust-src; otherwise Debian if /usr/bin/rustc has its core source.
pub fn detect_route() -> Option<Route> {
    let upstream =
        probe(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]));
    if upstream.is_some_and(|s| has_core_source(Path::new(s.trim()))) {
        return Some(Route::Upstream);
    }
    let debian = probe(Command::new("/usr/bin/rustc").args(["--print", "sysroot"]));
    if debian.is_some_and(|s| has_core_source(Path::new(s.trim()))) {
        return Some(Route::Debian);
    }
    None
}

fn has_core_source(sysroot: &Path) -> bool {
    sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .is_file()
}

#[derive(Debug)]
pub struct Linker {
    path: PathBuf,
    version: String,
}

/// The bpf-linker that build.rs will pick (first on PATH, where xtask has
/// appended ~/.cargo/bin), if it runs and suits the route.
fn bpf_linker_ok(route: Route) -> Option<Linker> {
    let path = find_on_path("bpf-linker")?;
    let version = bpf_linker_version(&path);
    match (&version, route) {
        (None, _) => {
            eprintln!(
                "{} does not run (`--version` failed): will reinstall it",
                path.display()
            );
            None
        }
        (Some(v), Route::Debian) if !v.starts_with("0.13.") => {
            eprintln!(
                "{} is version {v}; the Debian route needs 0.13.x (built against LLVM 22)",
                path.display()
            );
            None
        }
        (Some(v), _) => Some(Linker {
            path,
            version: v.clone(),
        }),
    }
}

fn bpf_linker_version(path: &Path) -> Option<String> {
    let out = probe(Command::new(path).arg("--version"))?;
    // "bpf-linker 0.13.0"
    out.split_whitespace().nth(1).map(str::to_string)
}

fn install_bpf_linker(route: Route) -> Result<Linker> {
    if !Path::new(LLVM_PREFIX).join("lib/libLLVM.so").exists() {
        bail!(
            "cannot build bpf-linker: {LLVM_PREFIX}/lib/libLLVM.so is missing \
             (Debian package llvm-22-dev){}",
            if route == Route::Upstream {
                "; on a non-Debian system install a bpf-linker that matches your LLVM \
                 (see https://github.com/aya-rs/bpf-linker#installation)"
            } else {
                ""
            }
        );
    }
    let existing = util::cargo_bin_dir()
        .map(|d| d.join("bpf-linker"))
        .filter(|p| p.exists());
    let mut cmd = util::cargo();
    cmd.env("LLVM_PREFIX", LLVM_PREFIX).args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--no-default-features",
        "--features",
        "llvm-22",
    ]);
    if existing.is_some() {
        // Same version but not running (e.g. its libLLVM went away): rebuild it.
        cmd.arg("--force");
    }
    eprintln!("building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (one to two minutes)");
    run_timed(&mut cmd)?;
    match bpf_linker_ok(route) {
        Some(l) => Ok(l),
        None => {
            let all = find_all_on_path("bpf-linker");
            bail!(
                "bpf-linker {BPF_LINKER_VERSION} was installed, but the first bpf-linker on \
                 PATH still does not suit ({}); remove the other one or reorder PATH",
                all.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }
}
