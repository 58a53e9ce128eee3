//! Kernel images for the VM tier: Debian's cloud kernels, downloaded (never
//! installed), unpacked under `<workspace>/target/vm-kernels/<version>/`.
//!
//! Each kernel directory holds `root/` (the package unpacked with `dpkg-deb -x`,
//! plus the `modules.dep` that `depmod -b root <version>` writes: the package
//! ships none) and `manifest.json` ([`Manifest`]), written last, so a directory
//! without one is incomplete and gets redone.
//!
//! Series: bookworm's 6.1 (predates tcx: netlink clsact fallback) and 6.12
//! (the bookworm build of 6.12 if the configured apt sources have it, else
//! bookworm-backports through a download-only apt configuration kept under
//! `target/vm-kernels/.apt-*`, never in /etc/apt). Exact package names drift,
//! so they are resolved from the meta-packages, then by search.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::{
    apt::{apt_get, Apt},
    util::{self, output, probe, run_timed, section, workspace_root},
};

/// What the VM tier reads. Paths are absolute (rewritten if the workspace moves).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// "6.1" or "6.12".
    pub series: String,
    /// The kernel release (`uname -r` inside the VM), e.g. "6.1.0-56-cloud-amd64".
    pub version: String,
    /// The Debian package it came from and that package's version.
    pub package: String,
    pub package_version: String,
    /// "configured apt sources" or the download-only suite used.
    pub apt_source: String,
    /// The unpacked package: pass to `depmod -b` / `modprobe -d`.
    pub root: PathBuf,
    pub vmlinuz: PathBuf,
    /// `<root>/lib/modules/<version>`, with modules.dep.
    pub modules_dir: PathBuf,
    pub config: PathBuf,
}

#[derive(Debug)]
pub struct Kernel {
    pub series: String,
    pub version: String,
    pub dir: PathBuf,
    pub manifest: Manifest,
}

struct Series {
    name: &'static str,
    /// Meta-packages whose Depends name the current image package.
    metas: &'static [&'static str],
    /// Fall back to bookworm-backports when the configured sources lack it.
    backports: bool,
}

const SERIES: &[Series] = &[
    Series {
        name: "6.1",
        metas: &["linux-image-cloud-amd64"],
        backports: false,
    },
    Series {
        name: "6.12",
        metas: &["linux-image-6.12-cloud-amd64", "linux-image-cloud-amd64"],
        backports: true,
    },
];

pub fn kernels_dir() -> PathBuf {
    workspace_root().join("target").join("vm-kernels")
}

/// Kernels already unpacked, with a valid manifest.
pub fn available() -> Vec<Kernel> {
    let Ok(entries) = fs::read_dir(kernels_dir()) else {
        return Vec::new();
    };
    let mut found: Vec<Kernel> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .filter_map(|dir| load(&dir).ok())
        .collect();
    found.sort_by_key(|k| version_key(&k.version));
    found
}

fn load(dir: &Path) -> Result<Kernel> {
    let path = dir.join("manifest.json");
    let text = fs::read_to_string(&path)?;
    let mut m: Manifest =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let fresh = paths_for(dir, &m.version);
    if !fresh.vmlinuz.is_file() || !fresh.modules_dir.join("modules.dep").is_file() {
        bail!("{} is incomplete", dir.display());
    }
    if (&m.root, &m.vmlinuz, &m.modules_dir) != (&fresh.root, &fresh.vmlinuz, &fresh.modules_dir) {
        // The workspace moved: point the manifest at where things are now.
        (m.root, m.vmlinuz, m.modules_dir, m.config) =
            (fresh.root, fresh.vmlinuz, fresh.modules_dir, fresh.config);
        write_manifest(dir, &m)?;
    }
    Ok(Kernel {
        series: m.series.clone(),
        version: m.version.clone(),
        dir: dir.to_path_buf(),
        manifest: m,
    })
}

struct Paths {
    root: PathBuf,
    vmlinuz: PathBuf,
    modules_dir: PathBuf,
    config: PathBuf,
}

fn paths_for(dir: &Path, version: &str) -> Paths {
    let root = dir.join("root");
    Paths {
        vmlinuz: root.join("boot").join(format!("vmlinuz-{version}")),
        modules_dir: root.join("lib/modules").join(version),
        config: root.join("boot").join(format!("config-{version}")),
        root,
    }
}

fn write_manifest(dir: &Path, m: &Manifest) -> Result<()> {
    let path = dir.join("manifest.json");
    fs::write(&path, serde_json::to_string_pretty(m)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// Makes sure one kernel of each series is unpacked. Failures are warnings:
/// the VM tier reports a missing kernel itself.
pub fn ensure(apt: &mut Apt) -> Vec<Kernel> {
    section("setup: VM kernels");
    for series in SERIES {
        if let Some(k) = available().into_iter().find(|k| k.series == series.name) {
            eprintln!("kernel {} present: {}", series.name, k.dir.display());
            continue;
        }
        if let Err(e) = fetch(series, apt) {
            util::warn_loudly(&format!(
                "could not fetch a {} kernel for the VM tier: {e:#}\n\
                 The VM tier will report it missing. Setup goes on.",
                series.name
            ));
        }
    }
    available()
}

/// Where apt looks: the host's configured sources, or a private download-only
/// configuration (extra `-o` options).
struct AptSource {
    label: String,
    opts: Vec<String>,
}

impl AptSource {
    fn host() -> Self {
        AptSource {
            label: "configured apt sources".into(),
            opts: Vec::new(),
        }
    }

    fn apt_get(&self) -> Command {
        let mut cmd = apt_get();
        cmd.args(&self.opts);
        if util::is_root() {
            // Downloads go to a root-owned directory that user _apt cannot write.
            cmd.args(["-o", "APT::Sandbox::User=root"]);
        }
        cmd
    }

    fn apt_cache(&self) -> Command {
        let mut cmd = Command::new("apt-cache");
        cmd.args(&self.opts);
        cmd
    }
}

fn fetch(series: &Series, apt: &mut Apt) -> Result<()> {
    if !apt.available {
        bail!("no apt on this system");
    }
    eprintln!("kernel {}: resolving the package name", series.name);
    let host = AptSource::host();
    let mut found = resolve(&host, series);
    if found.is_none() && apt.update_once()? {
        found = resolve(&host, series);
    }
    let (source, package) = match found {
        Some(p) => (host, p),
        None if series.backports => {
            eprintln!(
                "kernel {}: not in the configured apt sources; trying backports (download-only)",
                series.name
            );
            let bpo = backports_source()?;
            let p = resolve(&bpo, series).with_context(|| {
                format!(
                    "no linux-image-{}.*-cloud-amd64 in {}",
                    series.name, bpo.label
                )
            })?;
            (bpo, p)
        }
        None => bail!(
            "no linux-image-{}.*-cloud-amd64 in the configured apt sources",
            series.name
        ),
    };
    eprintln!("kernel {}: {package} from {}", series.name, source.label);
    let debs = kernels_dir().join(".debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let deb = match download(&source, &package, &debs) {
        Ok(deb) => deb,
        // Stale package lists name a file the mirror no longer has: refresh and re-resolve.
        Err(e) if source.opts.is_empty() && apt.update_once()? => {
            eprintln!("download failed ({e:#}); retrying with fresh package lists");
            let package =
                resolve(&source, series).context("package vanished after apt-get update")?;
            download(&source, &package, &debs)?
        }
        Err(e) => return Err(e),
    };
    unpack(series, &deb, &source.label)?;
    fs::remove_file(&deb).with_context(|| format!("removing {}", deb.display()))?;
    Ok(())
}

/// The exact image package for a series: from a meta-package's Depends, else
/// the highest version `apt-cache search` knows.
fn resolve(source: &AptSource, series: &Series) -> Option<String> {
    let prefix = format!("linux-image-{}.", series.name);
    let wanted = |name: &str| {
        name.starts_with(&prefix)
            && name.ends_with("-cloud-amd64")
            && name[prefix.len()..].starts_with(|c: char| c.is_ascii_digit())
    };
    for meta in series.metas {
        let Some(deps) = probe(source.apt_cache().args(["depends", meta])) else {
            continue;
        };
        let pick = deps
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .filter(|n| wanted(n))
            .max_by_key(|n| version_key(n));
        if let Some(p) = pick {
            return Some(p.to_string());
        }
    }
    let pattern = format!(
        "^linux-image-{}\\.[0-9].*-cloud-amd64$",
        series.name.replace('.', "\\.")
    );
    let list = probe(
        source
            .apt_cache()
            .args(["search", "--names-only", &pattern]),
    )?;
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| wanted(n))
        .max_by_key(|n| version_key(n))
        .map(str::to_string)
}

/// Orders "6.12.90+deb12-…" before "6.12.90+deb12.1-…" before "6.12.117+deb12-…".
fn version_key(s: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (num, tail) = rest.split_at(digits);
        let text_len = tail.len() - tail.trim_start_matches(|c: char| !c.is_ascii_digit()).len();
        let (text, tail) = tail.split_at(text_len);
        key.push((num.parse().unwrap_or(0), text.to_string()));
        rest = tail;
    }
    key
}

/// A private apt configuration for `<codename>-backports`, under target/.
fn backports_source() -> Result<AptSource> {
    let os = fs::read_to_string("/etc/os-release").context("reading /etc/os-release")?;
    let codename = os
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim_matches('"').to_string())
        .filter(|c| !c.is_empty())
        .context("no VERSION_CODENAME in /etc/os-release")?;
    // Use the mirror the host already uses for its main suite.
    let mirror =
        probe(Command::new("apt-get").args(["indextargets", "--format", "$(SITE) $(RELEASE)"]))
            .and_then(|out| {
                out.lines().find_map(|l| {
                    let (site, release) = l.split_once(' ')?;
                    (release == codename).then(|| site.to_string())
                })
            })
            .unwrap_or_else(|| "http://deb.debian.org/debian".to_string());
    let suite = format!("{codename}-backports");
    let dir = kernels_dir().join(format!(".apt-{suite}"));
    for sub in ["lists/partial", "cache/archives/partial", "sources.list.d"] {
        fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    let list = dir.join("sources.list");
    let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    fs::write(
        &list,
        format!("deb [signed-by={keyring}] {mirror} {suite} main\n"),
    )
    .with_context(|| format!("writing {}", list.display()))?;
    let opt = |k: &str, v: &Path| vec!["-o".to_string(), format!("{k}={}", v.display())];
    let mut opts = Vec::new();
    opts.extend(opt("Dir::Etc::sourcelist", &list));
    opts.extend(opt("Dir::Etc::sourceparts", &dir.join("sources.list.d")));
    opts.extend(opt("Dir::State::Lists", &dir.join("lists")));
    opts.extend(opt("Dir::Cache", &dir.join("cache")));
    // Private lists: no need for the host's apt lock (and works without root).
    opts.extend(["-o".to_string(), "Debug::NoLocking=1".to_string()]);
    let source = AptSource {
        label: format!("{suite} ({mirror}, download-only)"),
        opts,
    };
    run_timed(source.apt_get().arg("update"))?;
    Ok(source)
}

fn download(source: &AptSource, package: &str, debs: &Path) -> Result<PathBuf> {
    let existing = |debs: &Path| -> Option<PathBuf> {
        fs::read_dir(debs)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with(&format!("{package}_")) && n.ends_with(".deb")
                })
            })
    };
    if let Some(deb) = existing(debs) {
        eprintln!("using the already downloaded {}", deb.display());
        return Ok(deb);
    }
    run_timed(
        source
            .apt_get()
            .arg("download")
            .arg(package)
            .current_dir(debs),
    )?;
    existing(debs).with_context(|| {
        format!(
            "apt-get download left no {package}_*.deb in {}",
            debs.display()
        )
    })
}

fn unpack(series: &Series, deb: &Path, source_label: &str) -> Result<()> {
    let package = output(Command::new("dpkg-deb").arg("-f").arg(deb).arg("Package"))?
        .trim()
        .to_string();
    let package_version = output(Command::new("dpkg-deb").arg("-f").arg(deb).arg("Version"))?
        .trim()
        .to_string();
    let version = package
        .strip_prefix("linux-image-")
        .with_context(|| format!("{} is not a linux-image package", deb.display()))?
        .to_string();
    let final_dir = kernels_dir().join(&version);
    let tmp = kernels_dir().join(format!(".{version}.partial"));
    for d in [&tmp, &final_dir] {
        if d.exists() {
            fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
        }
    }
    let root = tmp.join("root");
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    run_timed(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
    // depmod -b looks in <root>/lib/modules; a merged-/usr package has usr/lib/modules.
    if !root.join("lib").exists() && root.join("usr/lib/modules").is_dir() {
        std::os::unix::fs::symlink("usr/lib", root.join("lib"))
            .context("linking lib -> usr/lib")?;
    }
    let probe_paths = paths_for(&tmp, &version);
    if !probe_paths.vmlinuz.is_file() {
        bail!("{} has no boot/vmlinuz-{version}", deb.display());
    }
    if !probe_paths.modules_dir.is_dir() {
        bail!("{} has no lib/modules/{version}", deb.display());
    }
    run_timed(Command::new("depmod").arg("-b").arg(&root).arg(&version))?;
    fs::rename(&tmp, &final_dir)
        .with_context(|| format!("renaming {} to {}", tmp.display(), final_dir.display()))?;
    let p = paths_for(&final_dir, &version);
    let manifest = Manifest {
        series: series.name.to_string(),
        version,
        package,
        package_version,
        apt_source: source_label.to_string(),
        root: p.root,
        vmlinuz: p.vmlinuz,
        modules_dir: p.modules_dir,
        config: p.config,
    };
    write_manifest(&final_dir, &manifest)?;
    eprintln!(
        "kernel {}: unpacked in {}",
        series.name,
        final_dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::version_key;

    #[test]
    fn kernel_versions_order_numerically() {
        let mut v = vec![
            "linux-image-6.12.117+deb12-cloud-amd64",
            "linux-image-6.12.90+deb12.1-cloud-amd64",
            "linux-image-6.12.90+deb12-cloud-amd64",
            "linux-image-6.12.95+deb12-cloud-amd64",
        ];
        v.sort_by_key(|s| version_key(s));
        assert_eq!(
            v,
            [
                "linux-image-6.12.90+deb12-cloud-amd64",
                "linux-image-6.12.90+deb12.1-cloud-amd64",
                "linux-image-6.12.95+deb12-cloud-amd64",
                "linux-image-6.12.117+deb12-cloud-amd64",
            ]
        );
        assert!(
            version_key("linux-image-6.1.0-56-cloud-amd64")
                > version_key("linux-image-6.1.0-9-cloud-amd64")
        );
    }
}
