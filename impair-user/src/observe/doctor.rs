//! `impair doctor`: probes this kernel for what impair needs and says what
//! will and will not work. The probes that change anything (qdiscs, links)
//! run in a private network namespace on a thread of their own, on a veth
//! pair made there, and vanish with it: the machine's interfaces are
//! never touched.
use std::{path::Path, process::Command};

use anyhow::{anyhow, Result};
use serde::Serialize;

use crate::{engine, sys};

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// What was found (a version, an error).
    pub detail: String,
    /// What it means for impair.
    pub consequence: &'static str,
}

fn check(name: &'static str, ok: bool, detail: String, consequence: &'static str) -> Check {
    Check {
        name,
        ok,
        detail,
        consequence,
    }
}

fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| anyhow!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(anyhow!(
            "{}",
            String::from_utf8_lossy(&out.stderr).trim().to_owned()
        ))
    }
}

/// A qdisc probe on the private namespace's dummy device.
fn qdisc_probe(kind_args: &[&str]) -> Result<()> {
    let mut args = vec!["qdisc", "add", "dev", "doc1", "root"];
    args.extend(kind_args);
    run("tc", &args)?;
    run("tc", &["qdisc", "del", "dev", "doc1", "root"])?;
    Ok(())
}

/// Every check, in the order they are printed.
pub fn checks() -> Vec<Check> {
    let mut out = Vec::new();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let version = aya::util::KernelVersion::current().ok();
    out.push(check(
        "kernel",
        version.is_some_and(|v| v >= aya::util::KernelVersion::new(5, 15, 0)),
        release,
        "impair needs Linux 5.15+ (BPF atomics, skb tstamp writes, BPF_PROG_BIND_MAP)",
    ));
    let root = sys::is_root();
    out.push(check(
        "root",
        root,
        format!("euid {}", unsafe_geteuid()),
        "attach, update, detach and doctor's own probes need root (CAP_BPF, CAP_NET_ADMIN)",
    ));
    out.push(check(
        "btf",
        Path::new("/sys/kernel/btf/vmlinux").exists(),
        "/sys/kernel/btf/vmlinux".into(),
        "kernel BTF; impair's programs do not need it (no CO-RE), bpftool and debugging do",
    ));
    let bpffs = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("bpf"));
    out.push(check(
        "bpffs",
        true,
        if bpffs {
            "mounted".into()
        } else {
            "not mounted (not needed)".into()
        },
        "informational: impair finds its instances through the kernel, not through pins",
    ));
    let tcx = version.is_some_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0));
    out.push(check(
        "tcx",
        tcx,
        if tcx {
            "Linux 6.6+".into()
        } else {
            "before 6.6".into()
        },
        "tc hooks attach as tcx links; without tcx impair uses netlink clsact filters (same impairments)",
    ));
    if engine::ensure_real_object().is_err() {
        out.push(check(
            "data path",
            false,
            "this binary was built without its eBPF programs".into(),
            "nothing can be attached: rebuild after `cargo xtask setup`",
        ));
        return out;
    }
    if !root {
        out.push(check(
            "probes",
            false,
            "skipped: not root".into(),
            "run `sudo impair doctor` to probe the verifier, qdiscs and hooks",
        ));
        return out;
    }
    let loaded = crate::engine::Loaded::new(&crate::model::RuleSet::default(), 1);
    out.push(check(
        "verifier",
        loaded.is_ok(),
        match &loaded {
            Ok(_) => "impair_egress, impair_ingress and impair_xdp load".into(),
            Err(e) => format!("{e:#}"),
        },
        "the kernel accepts impair's programs",
    ));
    drop(loaded);
    match std::thread::scope(|s| s.spawn(private_probes).join()) {
        Ok(Ok(mut v)) => out.append(&mut v),
        Ok(Err(e)) => out.push(check(
            "probes",
            false,
            format!("{e:#}"),
            "the namespace probes could not run",
        )),
        Err(_) => out.push(check(
            "probes",
            false,
            "panicked".into(),
            "the namespace probes could not run",
        )),
    }
    out
}

fn unsafe_geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// The probes that need devices, in a private network namespace (this
/// thread only; it and everything in it go away when the thread ends).
fn private_probes() -> Result<Vec<Check>> {
    // SAFETY: unshare(CLONE_NEWNET) moves only this thread, which is ours.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(anyhow!(
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut out = Vec::new();
    run(
        "ip",
        &[
            "link", "add", "doc1", "type", "veth", "peer", "name", "doc2",
        ],
    )?;
    run("ip", &["link", "set", "doc1", "up"])?;
    run("ip", &["link", "set", "doc2", "up"])?;
    let fq = qdisc_probe(&["fq"]);
    out.push(check(
        "sch_fq",
        fq.is_ok(),
        fq.err().map_or("available".into(), |e| format!("{e:#}")),
        "delay, jitter, reorder and rate need fq to release packets at their departure time",
    ));
    // The segmenter (engine/segmenter.rs): a veth whose gso_max_segs is 1.
    let seg = run("ip", &["link", "set", "dev", "doc1", "gso_max_segs", "1"]);
    out.push(check(
        "segmenter",
        seg.is_ok(),
        seg.err().map_or(
            "veth with gso_max_segs: super-packets are decided per wire packet".into(),
            |e| format!("{e:#}: super-packets that gso_max_segs cannot split are decided whole"),
        ),
        "UDP GSO, connections opened before the attach and super-packets a veth carries in \
         from another namespace are split through a veth pair impair creates per instance",
    ));
    // The ifb path (engine/ifb.rs): the device, and fq as its root.
    let ifb = run("ip", &["link", "add", "doc3", "type", "ifb"]).and_then(|_| {
        let fq_on_ifb = run("tc", &["qdisc", "add", "dev", "doc3", "root", "fq"]);
        run("ip", &["link", "del", "doc3"])?;
        Ok(fq_on_ifb.is_ok())
    });
    let release = crate::engine::ifb::kernel_release();
    let (ifb_ok, ifb_detail) = match &ifb {
        Ok(_) if !crate::engine::ifb::redirects_to_ifb(&release) => (
            false,
            format!(
                "ifb exists, but before Linux 6.4 bpf_redirect does not reach it (this is \
                 {release}): delay, jitter, rate, duplication and reordering at ingress are refused"
            ),
        ),
        Ok(true) => (
            true,
            "ifb (module or built in) with fq: every impairment on received traffic".to_owned(),
        ),
        Ok(false) => (
            true,
            "ifb available but no fq: duplication and reordering of received traffic work; \
             delay, jitter and rate at ingress are refused"
                .to_owned(),
        ),
        Err(e) => (
            false,
            format!("no ifb device ({e:#}): CONFIG_IFB, module ifb"),
        ),
    };
    out.push(check(
        "ifb",
        ifb_ok,
        ifb_detail,
        "received traffic (--direction ingress) gets delay, jitter, rate, duplication and \
         reordering through an ifb device impair creates per instance",
    ));
    let netem = qdisc_probe(&["netem", "delay", "1ms"]);
    out.push(check(
        "sch_netem",
        netem.is_ok(),
        netem.err().map_or("available".into(), |e| format!("{e:#}")),
        "only for comparisons (the VM fidelity tier, benchmarks); impair does not use it",
    ));
    let tbf = qdisc_probe(&["tbf", "rate", "1mbit", "burst", "10kb", "latency", "50ms"]);
    out.push(check(
        "sch_tbf",
        tbf.is_ok(),
        tbf.err().map_or("available".into(), |e| format!("{e:#}")),
        "only for comparisons with impair's EDT rate",
    ));
    let clsact = run("tc", &["qdisc", "add", "dev", "doc1", "clsact"])
        .and_then(|_| run("tc", &["qdisc", "del", "dev", "doc1", "clsact"]));
    out.push(check(
        "clsact",
        clsact.is_ok(),
        clsact
            .err()
            .map_or("available".into(), |e| format!("{e:#}")),
        "netlink attach (kernels without tcx, --attach-mode netlink)",
    ));
    let mut xdp = |mode: crate::engine::XdpMode, name: &'static str, what: &'static str| {
        let r = crate::engine::Loaded::with_programs(
            &crate::model::RuleSet::default(),
            1,
            &[crate::engine::Program::Xdp],
        )
        .and_then(|mut l| {
            let id = l.xdp()?.attach("doc1", mode.aya())?;
            l.xdp()?.detach(id)?;
            Ok(())
        });
        out.push(check(
            name,
            r.is_ok(),
            r.err()
                .map_or("attached and detached on veth".into(), |e| format!("{e:#}")),
            what,
        ));
    };
    xdp(
        crate::engine::XdpMode::Generic,
        "xdp generic",
        "--hook xdp works on any device (skb mode)",
    );
    xdp(
        crate::engine::XdpMode::Native,
        "xdp native",
        "--xdp-mode native on drivers with XDP support (probed on veth)",
    );
    Ok(out)
}

/// Lines for people.
pub fn render(checks: &[Check]) -> Vec<String> {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    checks
        .iter()
        .map(|c| {
            format!(
                "{} {:width$}  {}\n  {:width$}    {}",
                if c.ok { "ok  " } else { "NO  " },
                c.name,
                c.detail,
                "",
                c.consequence
            )
        })
        .collect()
}
