//! Running cargo for other tasks: with the eBPF object required, where the
//! artifacts go, and the executables cargo reports. Shared by `tasks` and
//! `vm`, so neither imports the other for it.
use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::util::{cargo, describe, workspace_root};

/// cargo in the workspace root with `IMPAIR_EBPF=require`: never build, test
/// or lint against the empty stub object; a missing toolchain must be an
/// error here (impair-user/build.rs).
pub fn cargo_require() -> Command {
    let mut cmd = cargo();
    cmd.env("IMPAIR_EBPF", "require")
        .current_dir(workspace_root());
    cmd
}

/// `--workspace` selects every member, default-members or not; the eBPF crate
/// only builds for bpfel-unknown-none (through impair-user's build script).
pub const EXCLUDE_EBPF: [&str; 2] = ["--exclude", "impair-ebpf"];

/// cargo's target directory: `$CARGO_TARGET_DIR` (relative to the workspace
/// root) or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                workspace_root().join(p)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Runs cargo with JSON messages on stdout (diagnostics rendered on stderr;
/// pass `--message-format=json-render-diagnostics`) and returns the messages.
pub fn json_messages(cmd: &mut Command) -> Result<Vec<serde_json::Value>> {
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

/// The executable cargo reported for target `name` of kind `kind` ("test",
/// "bin").
pub fn executable(messages: &[serde_json::Value], name: &str, kind: &str) -> Option<PathBuf> {
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

/// The package of the `impair-bench` binary.
pub const BENCH_PACKAGE: &str = "impair-bench";
