//! Building on the host what the guest runs: the test binaries (not run),
//! `impair-bench`, `impair` and `vm-init`, copied without debug info to
//! `target/vm/bin/` (a fraction of the size, so the initramfs unpacks quickly
//! under TCG; symbols stay, so panic backtraces still name functions).
use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use super::plan::Binary;
use crate::{
    cargo::{cargo_require, executable, json_messages, BENCH_PACKAGE},
    util::{self, describe, find_on_path, section, workspace_root},
};

/// The staged programs.
#[derive(Debug)]
pub struct Built {
    programs: Vec<(Binary, PathBuf)>,
    pub impair: PathBuf,
    /// The guest's PID 1 (src/bin/vm-init.rs).
    pub init: PathBuf,
}

impl Built {
    pub fn program(&self, binary: Binary) -> Result<&Path> {
        self.programs
            .iter()
            .find(|(b, _)| *b == binary)
            .map(|(_, p)| p.as_path())
            .with_context(|| format!("{} was not built", binary.target()))
    }
}

/// Builds `binaries` (test targets in the `release` profile or not; the
/// benchmark always in release), `impair` and `vm-init`.
pub fn build(binaries: &BTreeSet<Binary>, release: bool, dir: &Path) -> Result<Built> {
    let profile = if release { "release" } else { "debug" };
    section(&format!(
        "vm: build the test binaries (not run), impair ({profile}) and vm-init"
    ));
    let mut programs = Vec::new();
    let libtest: Vec<Binary> = binaries.iter().copied().filter(|b| b.libtest()).collect();
    if !libtest.is_empty() {
        let mut cmd = cargo_require();
        cmd.args([
            "test",
            "-p",
            "impair-tests",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ]);
        for b in &libtest {
            cmd.args(["--test", b.target()]);
        }
        if release {
            cmd.arg("--release");
        }
        let json = json_messages(&mut cmd)?;
        for b in libtest {
            let exe = executable(&json, b.target(), "test").with_context(|| {
                format!("cargo built no executable for test target {}", b.target())
            })?;
            programs.push((b, exe));
        }
    }
    if binaries.contains(&Binary::Bench) {
        // Always release: the benchmark's sender loop is part of what it times.
        let mut cmd = cargo_require();
        cmd.args(["build", "--release", "-p", BENCH_PACKAGE, "--bin"])
            .arg(Binary::Bench.target())
            .arg("--message-format=json-render-diagnostics");
        let json = json_messages(&mut cmd)?;
        let exe = executable(&json, Binary::Bench.target(), "bin")
            .context("cargo built no impair-bench binary")?;
        programs.push((Binary::Bench, exe));
    }

    let mut cmd = cargo_require();
    cmd.args([
        "build",
        "--bin",
        "impair",
        "--message-format=json-render-diagnostics",
    ]);
    if release {
        cmd.arg("--release");
    }
    let json = json_messages(&mut cmd)?;
    let impair = executable(&json, "impair", "bin").context("cargo built no impair binary")?;

    // The init in the profile xtask itself is built in (its dependencies are
    // built already): it only mounts, loads and waits.
    let mut cmd = util::cargo();
    cmd.current_dir(workspace_root()).args([
        "build",
        "-p",
        "xtask",
        "--bin",
        "vm-init",
        "--message-format=json-render-diagnostics",
    ]);
    let json = json_messages(&mut cmd)?;
    let init = executable(&json, "vm-init", "bin").context("cargo built no vm-init binary")?;

    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
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
    let programs = programs
        .into_iter()
        .map(|(b, exe)| Ok((b, stage(&exe, b.target())?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Built {
        programs,
        impair: stage(&impair, "impair")?,
        init: stage(&init, "vm-init")?,
    })
}
