//! Builds the eBPF object (crate `impair-ebpf`) and leaves it in `OUT_DIR` for
//! `include_bytes_aligned!`, so one `impair` binary carries its programs.
//!
//! The kernel-side build needs a Rust toolchain whose `core` source matches its
//! compiler (`-Z build-std=core`) and `bpf-linker`. Two routes are detected
//! (docs/toolchain.md):
//! - upstream: rustup's `nightly` with the `rust-src` component;
//! - Debian: `/usr/bin/rustc` (rustc-web) with `rust-web-src`, driven with
//!   `RUSTC_BOOTSTRAP=1`, and rustup's shims kept off the nested build's PATH.
//!
//! With neither, `IMPAIR_EBPF=auto` (the default) writes an empty stub so
//! host-only `cargo check/test/clippy` work anywhere; a binary built that way
//! refuses to attach and says why. `IMPAIR_EBPF=require` (CI, xtask) turns a
//! missing toolchain into a build error; `IMPAIR_EBPF=stub` always stubs.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

const PACKAGE: &str = "impair-ebpf";

enum Route {
    Upstream,
    Debian { linker: PathBuf },
}

fn main() -> Result<()> {
    println!("cargo:rerun-if-env-changed=IMPAIR_EBPF");
    println!("cargo:rerun-if-changed=../impair-common/src");
    println!("cargo::rustc-check-cfg=cfg(impair_ebpf_stub)");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let mode = env::var("IMPAIR_EBPF").unwrap_or_else(|_| "auto".into());
    if !matches!(mode.as_str(), "auto" | "require" | "stub") {
        bail!("IMPAIR_EBPF={mode} is not valid: use auto, require or stub");
    }
    let route = if mode == "stub" { None } else { detect() };
    let Some(route) = route else {
        if mode == "require" {
            bail!(
                "no eBPF toolchain found (need rustup nightly with rust-src, or Debian's \
                 rustc-web + rust-web-src, plus bpf-linker): run `cargo xtask setup`"
            );
        }
        if mode == "auto" {
            println!(
                "cargo:warning=no eBPF toolchain found; building impair without its data path \
                 (run `cargo xtask setup` for the real thing)"
            );
        }
        fs::write(out_dir.join(PACKAGE), b"").context("writing eBPF stub")?;
        println!("cargo:rustc-cfg=impair_ebpf_stub");
        return Ok(());
    };

    let toolchain = match &route {
        Route::Upstream => aya_build::Toolchain::Nightly,
        Route::Debian { linker } => {
            // aya-build runs `rustup run <toolchain> cargo` whenever it finds rustup;
            // hide rustup so it uses /usr/bin/cargo and /usr/bin/rustc directly.
            let path = env::var_os("PATH").unwrap_or_default();
            let kept: Vec<PathBuf> = env::split_paths(&path)
                .filter(|d| !d.join("rustup").exists())
                .collect();
            // aya-build warns "which(rustup)" when it finds none. A stand-in
            // `rustup` in OUT_DIR that runs `rustup run <toolchain> PROGRAM ...`
            // as plain `PROGRAM ...` keeps Debian's toolchain and that
            // build quiet.
            let shim_dir = out_dir.join("rustup-shim");
            fs::create_dir_all(&shim_dir).context("creating the rustup stand-in's directory")?;
            let shim = shim_dir.join("rustup");
            fs::write(&shim, "#!/bin/sh\n# impair's build.rs: `rustup run TOOLCHAIN PROGRAM ARGS` as `PROGRAM ARGS`\nshift 2\nexec \"$@\"\n")
                .context("writing the rustup stand-in")?;
            {
                use std::os::unix::fs::PermissionsExt as _;
                fs::set_permissions(&shim, fs::Permissions::from_mode(0o755))
                    .context("making the rustup stand-in executable")?;
            }
            let mut dirs = vec![shim_dir, PathBuf::from("/usr/bin")];
            dirs.extend(kept);
            // SAFETY: build scripts are single-threaded at this point; the values
            // are inherited by the nested cargo that aya-build spawns.
            unsafe {
                env::set_var("PATH", env::join_paths(dirs)?);
                env::set_var("RUSTC_BOOTSTRAP", "1");
                env::set_var("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", linker);
                env::set_var("CARGO_TARGET_BPFEB_UNKNOWN_NONE_LINKER", linker);
                env::remove_var("RUSTUP_TOOLCHAIN");
            }
            aya_build::Toolchain::Nightly
        }
    };
    // The nested build's progress lines would each become a
    // `warning: impair-user@...` line; only its errors should show.
    // SAFETY: build scripts are single-threaded here; the nested cargo
    // inherits it.
    unsafe {
        env::set_var("CARGO_TERM_QUIET", "true");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(PACKAGE);
    let root = root
        .canonicalize()
        .with_context(|| format!("{}", root.display()))?;
    let root = root.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: PACKAGE,
            root_dir: root,
            ..Default::default()
        }],
        toolchain,
    )
    .context("building the eBPF programs (crate impair-ebpf)")?;
    if fs::metadata(out_dir.join(PACKAGE))
        .map(|m| m.len())
        .unwrap_or(0)
        == 0
    {
        bail!("the eBPF build produced no object");
    }
    Ok(())
}

fn bpf_linker() -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&path).collect();
    if let Some(home) = env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("bpf-linker"))
        .find(|p| p.is_file())
}

fn has_core_source(sysroot: &Path) -> bool {
    sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .is_file()
}

fn sysroot_of(cmd: &mut Command) -> Option<PathBuf> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn detect() -> Option<Route> {
    let linker = bpf_linker()?;
    let upstream =
        sysroot_of(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]));
    if upstream.as_deref().is_some_and(has_core_source) && on_path("bpf-linker") {
        return Some(Route::Upstream);
    }
    let debian = sysroot_of(Command::new("/usr/bin/rustc").args(["--print", "sysroot"]));
    if debian.as_deref().is_some_and(has_core_source) {
        return Some(Route::Debian { linker });
    }
    None
}

fn on_path(bin: &str) -> bool {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path).any(|d| d.join(bin).is_file())
}
