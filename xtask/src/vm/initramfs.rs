//! What goes into the guest: busybox, the programs the plan runs and
//! `impair`, iproute2 (with nstat and ss), ethtool and iperf3, etcd and
//! etcdctl (when the host has them), every shared library they load, the
//! kernel's modules (decompressed, with their dependencies), the plan
//! (src/guest.rs) and the init that follows it (src/bin/vm-init.rs).
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};
use xtask::guest;

use super::{
    build::Built,
    cpio::{Cpio, Source},
    plan::GuestRun,
};
use crate::{
    kernels::Kernel,
    util::{self, describe},
};

/// Modules the tiers need, and whether a kernel without them (neither a module
/// nor built in) is an error. sch_fq is for delay/EDT, sch_netem and sch_tbf
/// for the fidelity tier's comparisons; clsact lives in sch_ingress; ifb
/// gives received traffic a queue (an ingress instance that holds packets);
/// cls_matchall and act_mirred feed netem on an ifb by hand, the recipe the
/// fidelity tier and the benchmark's peers compare impair's ingress with.
const MODULES: &[(&str, bool)] = &[
    ("veth", true),
    ("ifb", true),
    ("sch_ingress", true),
    ("cls_bpf", true),
    ("sch_fq", true),
    ("sch_netem", true),
    ("sch_tbf", true),
    ("sch_htb", false),
    ("act_bpf", false),
    ("cls_matchall", true),
    ("act_mirred", true),
];

/// Writes the initramfs for kernel `k` that runs `runs` to `out`; returns its
/// size in bytes.
pub fn build(k: &Kernel, built: &Built, runs: &[GuestRun], out: &Path) -> Result<u64> {
    let mut cpio = Cpio::default();
    for d in [
        "dev", "proc", "sys", "run", "tmp", "root", "etc", "usr/bin", "usr/sbin", "bin",
    ] {
        cpio.dir(d);
    }
    // The kernel opens /dev/console for the init before anything is mounted.
    cpio.chardev("dev/console", 5, 1, 0o600);
    cpio.chardev("dev/null", 1, 3, 0o666);
    cpio.symlink("sbin", "bin");
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        bail!("/bin/busybox is missing (Debian package busybox-static; `cargo xtask setup` installs it)");
    }
    cpio.file("bin/busybox", Source::Path(busybox.to_path_buf()), 0o755);
    add_libraries(&mut cpio, busybox)?; // a no-op for busybox-static

    let mut plan_runs = Vec::new();
    for run in runs {
        let exe = built.program(run.binary)?;
        let program = format!("/t/deps/{}", run.binary.target());
        cpio.file(&program, Source::Path(exe.to_path_buf()), 0o755);
        add_libraries(&mut cpio, exe)?;
        plan_runs.push(guest::Run {
            name: run.binary.name().to_string(),
            program,
            args: run.args(),
        });
    }
    cpio.file("t/impair", Source::Path(built.impair.clone()), 0o755);
    add_libraries(&mut cpio, &built.impair)?;

    for (tool, package) in [
        ("ip", "iproute2"),
        ("tc", "iproute2"),
        ("ethtool", "ethtool"),
        // Real TCP in the fq tests (tests/tests/netns/tcp_fq.rs): iperf3,
        // and the kernel's TCP counters and socket state.
        ("iperf3", "iperf3"),
        ("nstat", "iproute2"),
        ("ss", "iproute2"),
    ] {
        let host = util::host_tool(tool, package)?;
        cpio.file(
            &format!("usr/sbin/{tool}"),
            Source::Path(host.clone()),
            0o755,
        );
        add_libraries(&mut cpio, &host)?;
    }
    // examples/etcd-regions (netns `fq::etcd`): a real etcd cluster in the
    // guest. Optional here (36 MB); the test itself fails loudly without them.
    for (tool, package) in [("etcd", "etcd-server"), ("etcdctl", "etcd-client")] {
        let host = Path::new("/usr/bin").join(tool);
        if host.is_file() {
            cpio.file(
                &format!("usr/bin/{tool}"),
                Source::Path(host.clone()),
                0o755,
            );
            add_libraries(&mut cpio, &host)?;
        } else {
            eprintln!("{tool}: not on this host (Debian package {package}); the guest has none");
        }
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

    let plan = guest::Plan {
        kernel: k.version.clone(),
        modules: add_modules(&mut cpio, k)?,
        runs: plan_runs,
    };
    let plan = serde_json::to_vec_pretty(&plan).context("serializing the guest's plan")?;
    cpio.file(guest::PLAN_PATH, Source::Bytes(plan), 0o644);
    // PID 1: src/bin/vm-init.rs, with its libraries like every program here.
    cpio.file("init", Source::Path(built.init.clone()), 0o755);
    add_libraries(&mut cpio, &built.init)?;
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

/// The wanted modules and their dependencies from the kernel's modules.dep,
/// dependencies first (their paths in the guest); copied into `cpio`
/// decompressed (the init's finit_module(2) gets no decompression flag, and
/// busybox's insmod/modprobe cannot be relied on for .ko.xz even where the
/// kernel has CONFIG_MODULE_DECOMPRESS), with a matching modules.dep for
/// busybox's modprobe when the kernel asks for a module itself.
fn add_modules(cpio: &mut Cpio, k: &Kernel) -> Result<Vec<String>> {
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
        let guest_path = format!("/{base}/{rel}");
        cpio.file(&guest_path, Source::Bytes(data), 0o644);
        let ds: Vec<String> = ds
            .iter()
            .map(|d| strip_compression(d).to_string())
            .collect();
        dep_out.push_str(&format!("{rel}: {}\n", ds.join(" ")));
        modules.push(guest_path);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names() {
        assert_eq!(module_name("kernel/net/sched/sch_fq.ko.xz"), "sch_fq");
        assert_eq!(module_name("kernel/drivers/net/veth.ko"), "veth");
        assert_eq!(module_name("kernel/foo/nf-bar.ko.zst"), "nf_bar");
        assert_eq!(strip_compression("a/b.ko.xz"), "a/b.ko");
    }
}
