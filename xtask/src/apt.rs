//! apt, used only for what is missing: one `apt-get update` per run at most,
//! as root only. Shared by `setup` (packages) and `kernels` (downloads).
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::util::{self, find_on_path, run_timed};

/// apt, used only for what is missing; `apt-get update` at most once per run.
#[derive(Debug)]
pub struct Apt {
    pub available: bool,
    updated: bool,
}

impl Apt {
    pub fn new() -> Self {
        Apt {
            available: find_on_path("dpkg-query").is_some() && find_on_path("apt-get").is_some(),
            updated: false,
        }
    }

    /// `apt-get update`, once per run, as root only. Returns whether lists are
    /// (now) fresh.
    pub fn update_once(&mut self) -> Result<bool> {
        if self.updated {
            return Ok(true);
        }
        if !util::is_root() {
            return Ok(false);
        }
        run_timed(apt_get().arg("update"))?;
        self.updated = true;
        Ok(true)
    }

    pub fn ensure_installed(&mut self, wanted: &[&str]) -> Result<()> {
        let missing = missing_packages(wanted)?;
        if missing.is_empty() {
            eprintln!("apt packages present: {}", wanted.join(" "));
            return Ok(());
        }
        eprintln!("apt packages missing: {}", missing.join(" "));
        if !util::is_root() {
            bail!(
                "installing packages needs root; run:\n\n    sudo apt-get update && sudo \
                 DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}\n\n\
                 then `cargo xtask setup` again",
                missing.join(" ")
            );
        }
        self.update_once()?;
        run_timed(
            apt_get()
                .args(["install", "-y", "--no-install-recommends"])
                .args(&missing),
        )?;
        let still = missing_packages(wanted)?;
        if !still.is_empty() {
            bail!(
                "apt-get install succeeded but these are still not installed: {}",
                still.join(" ")
            );
        }
        Ok(())
    }
}

pub fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    // No dpkg progress bars in CI logs.
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-q", "-o", "Dpkg::Use-Pty=0"]);
    cmd
}

/// The subset of `wanted` that dpkg does not report as installed ("ii").
fn missing_packages(wanted: &[&str]) -> Result<Vec<String>> {
    // dpkg-query exits 1 when some name is unknown, but still prints the known ones.
    let mut cmd = Command::new("dpkg-query");
    cmd.args(["-W", "-f", "${Package}\t${db:Status-Abbrev}\n"])
        .args(wanted);
    let out = cmd
        .output()
        .with_context(|| format!("could not start `{}`", util::describe(&cmd)))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let installed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| {
            let (name, status) = l.split_once('\t')?;
            status
                .starts_with("ii")
                .then(|| name.split(':').next().unwrap_or(name))
        })
        .collect();
    Ok(wanted
        .iter()
        .filter(|w| !installed.contains(w))
        .map(|w| w.to_string())
        .collect())
}
